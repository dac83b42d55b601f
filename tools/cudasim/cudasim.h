/*
 * cudasim.h: the control API of libcudasim.so, the CUDA driver simulator.
 *
 * libcudasim.so exports the CUDA driver entry points swapalloc uses, with cuda.h's own
 * prototypes, plus the functions below. None of them exists in the real libcuda.so.1:
 * code reaches them with dlsym (swapalloc::driver::find_symbol) and skips what needs
 * them when they are absent, so the same tests run on a real GPU.
 *
 * Configuration read once, at the first cuInit (sizes accept K/M/G/T suffixes, powers
 * of 1024; a malformed value makes cuInit fail with CUDA_ERROR_INVALID_VALUE and a
 * message on stderr naming the variable, the value and what is accepted):
 *   SWAPALLOC_SIM_MEMORY     device capacity in bytes (default 8G: the seeds' RTX 2070)
 *   SWAPALLOC_SIM_DEVICES    number of devices (default 1, at most 16)
 *   SWAPALLOC_SIM_EXTERNAL   bytes used on every device by "other processes" (default 0)
 *   SWAPALLOC_SIM_LINK_GBPS  host<->device link bandwidth per direction, in 10^9 bytes
 *                            per second; 0 or unset: unthrottled
 *   SWAPALLOC_SIM_FAIL       faults to inject: "entry:nth[:error],..." e.g.
 *                            "cuMemCreate:3,cuMemMap:1:CUDA_ERROR_INVALID_VALUE"; the nth
 *                            call of entry (counted from process start) fails
 *   SWAPALLOC_SIM_STRICT     1: at exit, objects still held (handles, reservations,
 *                            mappings, host allocations and registrations, streams,
 *                            events) make the process exit with status 3 after the
 *                            report
 *   SWAPALLOC_SIM_QUIET      1: no report at exit unless something leaked
 *   SWAPALLOC_SIM_PROFILE    a cost profile: "h100" (built in) or a profile file's path;
 *                            each entry point's cost and the link's speed are charged,
 *                            time-scaled, so that wall time / scale predicts that GPU's
 *                            (README.md, "Cost profiles"). Not with SWAPALLOC_SIM_LINK_GBPS
 *   SWAPALLOC_SIM_TIME_SCALE the profile's time scale k > 0 (default 50): costs are slept
 *                            k times over and the link runs k times slower
 *
 * Thread safety: every function here is safe to call from any thread.
 */
#ifndef SWAPALLOC_CUDASIM_H
#define SWAPALLOC_CUDASIM_H

#include <cuda.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Makes the nth call from now (1: the very next one) of `entry_point` fail with
 * `error`, before it has any effect (a one-shot failure, never sticky). `error` 0
 * picks the call's most plausible failure: CUDA_ERROR_OUT_OF_MEMORY for calls that
 * acquire memory or resources (cuMemHostRegister too), CUDA_ERROR_ILLEGAL_ADDRESS for
 * calls that wait for or query device work, CUDA_ERROR_INVALID_VALUE for VMM calls,
 * copies, memsets and the calls that give host memory back (cuMemFreeHost,
 * cuMemHostUnregister), and
 * CUDA_ERROR_INVALID_HANDLE / _CONTEXT / _DEVICE for calls taking a stream or event, a
 * context, or a device. `entry_point` is a cuda.h name, bare or versioned
 * ("cuMemGetInfo" and "cuMemGetInfo_v2" are the same entry point).
 * Returns CUDA_ERROR_INVALID_VALUE for an unknown entry point, nth == 0, or an `error`
 * that is not a CUresult of cuda.h. */
CUresult cudasimFailCall(const char* entry_point, unsigned long long nth, CUresult error);

/* Forgets every pending injected fault (from the API and from SWAPALLOC_SIM_FAIL). */
void cudasimClearFaults(void);

/* Number of calls made so far to `entry_point` (bare or versioned name); 0 if unknown. */
unsigned long long cudasimCallCount(const char* entry_point);

/* Sets the bytes used by "other processes" on `device`. Returns
 * CUDA_ERROR_INVALID_DEVICE for a bad ordinal, CUDA_ERROR_NOT_INITIALIZED before cuInit. */
CUresult cudasimSetExternalUsage(int device, size_t bytes);

/* Sets the link bandwidth in 10^9 bytes per second per direction (0: unthrottled). */
void cudasimSetLinkBandwidth(double gigabytes_per_second);

/* Bytes moved so far over every device's link in one direction (0: host to device, 1:
 * device to host; anything else: 0), counted as each copy completes. Device-to-device
 * copies and memsets are not counted. */
unsigned long long cudasimLinkBytes(int direction);

/* The active cost profile (SWAPALLOC_SIM_PROFILE). */
typedef struct cudasim_profile_info {
  const char* name;  /* "h100" or the file's path; NULL when no profile is active */
  double time_scale; /* k: the profiled GPU's time = wall time / k; 0 when none */
} cudasim_profile_info;
/* Fills `out` (if not NULL); returns 1 when a profile is active, else 0. The name lives as
 * long as the process. */
int cudasimGetProfile(cudasim_profile_info* out);

/* What the simulator holds now, the figures of the exit report. */
typedef struct cudasim_census {
  size_t handles;          /* memory handles with a reference (cuMemCreate, cuMemRetain-
                              AllocationHandle) not yet released, each counted once */
  size_t physical_bytes;   /* device bytes still allocated (all devices) */
  size_t reservations;     /* cuMemAddressReserve ranges not freed */
  size_t mappings;         /* live cuMemMap mappings */
  size_t host_allocations; /* cuMemHostAlloc / cuMemAllocHost blocks not freed */
  size_t host_bytes;
  size_t streams;               /* streams created and not destroyed */
  size_t events;                /* events created and not destroyed */
  size_t host_registrations;    /* cuMemHostRegister ranges not unregistered (nor dropped
                                   with their context by cuDevicePrimaryCtxReset) */
  size_t host_registered_bytes; /* their bytes, as registered */
} cudasim_census;
void cudasimGetCensus(cudasim_census* out);

#ifdef __cplusplus
}
#endif

#endif /* SWAPALLOC_CUDASIM_H */
