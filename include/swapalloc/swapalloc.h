/**
 * @file swapalloc.h
 * @brief The C ABI of libswapalloc.so: the one process-wide swapalloc allocator, for C, C++,
 *        Python (ctypes) and PyTorch's CUDAPluggableAllocator.
 *
 * The library holds one allocator (include/swapalloc/allocator.hpp) with its background
 * pressure monitor (pressure_monitor.hpp). It loads the CUDA driver at run time through
 * swapalloc::driver (SWAPALLOC_CUDA_DRIVER, else libcuda.so.1) and links neither libcuda nor
 * libcudart, so no CUDA runtime header is needed: streams are `void*` (a CUstream, which is
 * also what a cudaStream_t is).
 *
 * **Lifetime.** `swapalloc_init` creates the allocator (configuration from
 * `swapalloc_configure`, then the SWAPALLOC_* variables, then defaults); every other call but
 * `swapalloc_configure`, `swapalloc_pool_options_init`, `swapalloc_last_error` and
 * `swapalloc_abi_version` fails with SWAPALLOC_ERROR_NOT_INITIALIZED before it.
 * `swapalloc_shutdown` destroys it (tests, or a program that is done with the GPU).
 *
 * **Errors.** No C++ exception crosses this ABI. Each function returns a swapalloc_status
 * and, on failure, sets the calling thread's message (`swapalloc_last_error`), which names
 * the argument, its value and what is accepted, or carries the allocator's own report (an
 * out-of-memory message holds the pool table and advice). The functions that PyTorch calls
 * and that return no status (`swapalloc_malloc`, `swapalloc_free` and the hooks) set the
 * message too; `swapalloc_malloc` returns NULL on failure. A failed call leaves the
 * allocator usable and loses no data (DESIGN §6).
 *
 * **Threads.** Every function may be called from any thread at any time, except
 * `swapalloc_shutdown` (no other call may be in flight) and `swapalloc_init` concurrently
 * with `swapalloc_shutdown`. A thread with no current CUDA context gets the device's primary
 * context made current on its first call that needs one (PyTorch calls from its own
 * threads); a thread that has one keeps it.
 *
 * **Pools.** A pool is named; its handle (swapalloc_pool_id) stays valid until the pool is
 * destroyed. SWAPALLOC_DEFAULT_POOL ("default") always exists and is never evicted.
 * Allocations go to the calling thread's current pool (`swapalloc_pool_push`).
 */
#ifndef SWAPALLOC_SWAPALLOC_H
#define SWAPALLOC_SWAPALLOC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h> /* ssize_t: PyTorch's pluggable signatures use it */

#ifdef __cplusplus
extern "C" {
#endif

/** Marks what libswapalloc.so exports (it is built with hidden visibility). */
#if defined(__GNUC__)
#define SWAPALLOC_API __attribute__((visibility("default")))
#else
#define SWAPALLOC_API
#endif

/** The version of this ABI: a change that breaks a caller increments it. */
#define SWAPALLOC_ABI_VERSION 1

/** What a call did. Messages: swapalloc_last_error. */
typedef enum swapalloc_status {
  SWAPALLOC_SUCCESS               = 0,
  SWAPALLOC_ERROR_INVALID_VALUE   = 1, /**< a null pointer, a bad number, name or option */
  SWAPALLOC_ERROR_NOT_INITIALIZED = 2, /**< swapalloc_init has not run, or shutdown did */
  SWAPALLOC_ERROR_UNKNOWN_POOL    = 3, /**< no live pool has this handle or name */
  /** a foreign or double free, an unbalanced pop, a pool in use or not evictable, a bad
      device */
  SWAPALLOC_ERROR_MISUSE        = 4,
  SWAPALLOC_ERROR_OUT_OF_MEMORY = 5, /**< device memory: the message has the pool table */
  SWAPALLOC_ERROR_CUDA          = 6, /**< a driver call failed (named in the message) */
  SWAPALLOC_ERROR_NO_DRIVER     = 7, /**< the CUDA driver could not be loaded */
  /** a host copy failed its checksum; the pool stays evicted with its copy */
  SWAPALLOC_ERROR_CORRUPT_COPY = 8,
  SWAPALLOC_ERROR_INTERNAL     = 9 /**< anything else; the message says what */
} swapalloc_status;

/** A pool's handle. */
typedef uint32_t swapalloc_pool_id;
#define SWAPALLOC_DEFAULT_POOL ((swapalloc_pool_id)0)

/** Eviction order (policy.hpp pool_priority): low goes first; critical is never evicted. */
enum {
  SWAPALLOC_PRIORITY_LOW      = 0,
  SWAPALLOC_PRIORITY_NORMAL   = 1,
  SWAPALLOC_PRIORITY_HIGH     = 2,
  SWAPALLOC_PRIORITY_CRITICAL = 3
};

/** What a pool holds, to pick its host codec (codec.hpp dtype_hint). */
enum {
  SWAPALLOC_DTYPE_NONE = 0, /**< unknown: sampled at eviction */
  SWAPALLOC_DTYPE_BF16 = 1,
  SWAPALLOC_DTYPE_FP16 = 2,
  SWAPALLOC_DTYPE_FP32 = 3,
  SWAPALLOC_DTYPE_INT8 = 4
};

/** A new pool's options. Fill with swapalloc_pool_options_init, then change fields. */
typedef struct swapalloc_pool_options {
  int priority;    /**< SWAPALLOC_PRIORITY_* (default NORMAL) */
  int evictable;   /**< nonzero: the policy may evict it (default 1) */
  int read_only;   /**< nonzero: its bytes do not change while resident, so an unchanged
                        host copy is kept and a later evict moves nothing (default 0) */
  int dtype;       /**< SWAPALLOC_DTYPE_* (default NONE) */
  size_t capacity; /**< bytes of addresses reserved per device; 0: the allocator's default */
} swapalloc_pool_options;

/** The ABI version of the loaded library (SWAPALLOC_ABI_VERSION it was built with). */
SWAPALLOC_API int swapalloc_abi_version(void);

/**
 * The calling thread's most recent failure message ("" if none): valid until the thread's
 * next call into the library. Successful calls leave it as it was.
 */
SWAPALLOC_API const char* swapalloc_last_error(void);

/**
 * The status of the calling thread's most recent failure (SWAPALLOC_SUCCESS if none), the
 * one swapalloc_last_error describes: what a caller of swapalloc_malloc, which returns only
 * NULL, reads to tell out-of-memory from other failures. Successful calls leave it as it was.
 */
SWAPALLOC_API swapalloc_status swapalloc_last_status(void);

/**
 * Sets one configuration value, read at swapalloc_init (before the SWAPALLOC_* variables,
 * which it overrides). Keys and values (config.hpp parses them):
 *   "high_watermark", "low_watermark"  fractions of the limit in (0, 1], low < high
 *   "device_limit"     bytes ("6GiB", "512M") or a fraction in (0, 1] of each device
 *   "host_limit"       bytes ("8G"), a fraction of RAM ("0.5") or a percentage ("50%")
 *   "workers"          compression threads, 1 to 256
 *   "log_level"        "off", "error", "warn", "info" or "debug"
 *   "monitor_interval_ms"  the background monitor's period, 1 to 3600000
 *   "stats_interval_ms"    the period of the stats file `python -m swapalloc ps` reads,
 *                      1000 to 3600000 (shorter is raised to 1000), or 0: no file
 *   "driver"           the driver library to load (e.g. a simulator)
 * An empty value unsets the key: its SWAPALLOC_* variable, else the default, applies again.
 * Errors: INVALID_VALUE (unknown key, null, or a value outside what is accepted: the
 * message says what is), MISUSE after swapalloc_init.
 */
SWAPALLOC_API swapalloc_status swapalloc_configure(const char* key, const char* value);

/**
 * Loads the driver, makes each device's primary context available, creates the allocator
 * and starts its background monitor. Calling it again while initialized does nothing.
 * Errors: NO_DRIVER, CUDA (cuInit or the contexts), INVALID_VALUE (a bad SWAPALLOC_*
 * variable or configured value: the message names it).
 */
SWAPALLOC_API swapalloc_status swapalloc_init(void);

/** Nonzero while initialized. */
SWAPALLOC_API int swapalloc_is_initialized(void);

/**
 * Stops the monitor, destroys the allocator (reporting blocks still allocated as leaks on
 * stderr), and releases the primary contexts it retained. Afterwards swapalloc_init may run
 * again. Precondition: no other call into the library is in flight, and no pointer it gave
 * out is used again. Errors: NOT_INITIALIZED.
 */
SWAPALLOC_API swapalloc_status swapalloc_shutdown(void);

/* ---- PyTorch's CUDAPluggableAllocator entry points --------------------------------------- */

/**
 * Allocates `size` bytes on `device` for use on `stream`, in the calling thread's current
 * pool (or the CUDA-graph pool that claims `stream`, see the pool hooks). Returns NULL for
 * size 0, and on failure (the message says why; out of memory after the policy tried).
 * Cost: a cached size of a block seen before makes no driver call (allocator.hpp).
 */
SWAPALLOC_API void* swapalloc_malloc(ssize_t size, int device, void* stream);

/**
 * Frees a pointer from swapalloc_malloc with the size, device and stream it was allocated
 * with (PyTorch passes them back). NULL does nothing; a foreign pointer or a wrong size
 * changes nothing and sets the message.
 */
SWAPALLOC_API void swapalloc_free(void* ptr, ssize_t size, int device, void* stream);

/** The init hook: initializes (swapalloc_init) if not yet; checks a `device_count` above 0
 *  against the driver's (torch passes 0 when it creates the allocator, before its CUDA init). */
SWAPALLOC_API void swapalloc_hook_init(int device_count);

/** The reset hook (torch.cuda.empty_cache): releases every cached page (swapalloc_empty_cache). */
SWAPALLOC_API void swapalloc_hook_reset(void);

/**
 * The memory-fraction hook (torch.cuda.set_per_process_memory_fraction): limits what this
 * process may hold on `device` to `fraction` (0, 1] of its memory; the policy's watermarks
 * apply to that limit.
 */
SWAPALLOC_API void swapalloc_hook_memory_fraction(double fraction, int device);

/** The record-stream hook (Tensor.record_stream): `ptr`'s reuse waits for `stream`'s work. */
SWAPALLOC_API void swapalloc_hook_record_stream(void* ptr, void* stream);

/* ---- Pools -------------------------------------------------------------------------------- */

/** Fills `options` with the defaults. Does nothing for NULL. */
SWAPALLOC_API void swapalloc_pool_options_init(swapalloc_pool_options* options);

/**
 * Creates a pool named `name` (NULL options: the defaults) and stores its handle in `*pool`.
 * Errors: INVALID_VALUE (null name or pool, empty name, a field out of range), MISUSE (a live
 * pool already has the name).
 */
SWAPALLOC_API swapalloc_status swapalloc_pool_create(const char* name,
                                                     const swapalloc_pool_options* options,
                                                     swapalloc_pool_id* pool);

/** The handle of the live pool named `name`. Errors: INVALID_VALUE, UNKNOWN_POOL. */
SWAPALLOC_API swapalloc_status swapalloc_pool_find(const char* name, swapalloc_pool_id* pool);

/**
 * The name of `pool` in `*name`: valid until the calling thread's next call to this
 * function. Errors: INVALID_VALUE, UNKNOWN_POOL.
 */
SWAPALLOC_API swapalloc_status swapalloc_pool_name(swapalloc_pool_id pool, const char** name);

/**
 * Destroys `pool`, which must hold no allocated block on any device; its cached pages are
 * released. Errors: UNKNOWN_POOL, MISUSE (blocks still allocated, the default pool).
 */
SWAPALLOC_API swapalloc_status swapalloc_pool_destroy(swapalloc_pool_id pool);

/** Makes `pool` the calling thread's current pool until the matching pop. */
SWAPALLOC_API swapalloc_status swapalloc_pool_push(swapalloc_pool_id pool);

/** Ends the calling thread's innermost push. Errors: MISUSE (nothing pushed). */
SWAPALLOC_API swapalloc_status swapalloc_pool_pop(void);

/** The calling thread's current pool (SWAPALLOC_DEFAULT_POOL outside every push). */
SWAPALLOC_API swapalloc_status swapalloc_pool_current(swapalloc_pool_id* pool);

/** Marks `pool` read-only (nonzero) or writable; see swapalloc_pool_options::read_only. */
SWAPALLOC_API swapalloc_status swapalloc_pool_set_read_only(swapalloc_pool_id pool, int read_only);

/* ---- Residency ---------------------------------------------------------------------------- */

/**
 * Marks `pool` in use on `device` until the matching deactivate: it is restored first if
 * evicted (at its addresses; `stream` waits for the copies), and the policy never evicts it
 * while active. Activations nest. Errors: UNKNOWN_POOL, MISUSE (bad device), OUT_OF_MEMORY
 * (no room even after evicting others), CUDA, CORRUPT_COPY.
 */
SWAPALLOC_API swapalloc_status swapalloc_activate(swapalloc_pool_id pool, int device, void* stream);

/** Ends one activation of `pool`; its last use is recorded on `stream` (LRU order). */
SWAPALLOC_API swapalloc_status swapalloc_deactivate(swapalloc_pool_id pool, int device,
                                                    void* stream);

/**
 * Evicts `pool`'s pages on `device` to the host store now. `*evicted_bytes` (may be NULL)
 * receives the device bytes freed. Errors: UNKNOWN_POOL, MISUSE (default, non-evictable,
 * critical, active or pinned pool), CUDA.
 */
SWAPALLOC_API swapalloc_status swapalloc_evict(swapalloc_pool_id pool, int device,
                                               size_t* evicted_bytes);

/**
 * Starts restoring `pool` on `device` in the background, if it is evicted and there is room
 * without evicting an active pool. Returns at once. Errors: UNKNOWN_POOL, MISUSE.
 */
SWAPALLOC_API swapalloc_status swapalloc_prefetch(swapalloc_pool_id pool, int device);

/**
 * Makes `bytes` of `device` free for this process (the seeds' memory_guard): releases
 * cached pages, then evicts the coldest eligible pools. `*freed_bytes` (may be NULL)
 * receives the bytes it freed. Errors: OUT_OF_MEMORY (only critical or active pools are
 * left: the message has the advice), MISUSE, CUDA.
 */
SWAPALLOC_API swapalloc_status swapalloc_ensure_free(size_t bytes, int device, size_t* freed_bytes);

/** Releases every cached (free) page of every pool. `*released_bytes` may be NULL. */
SWAPALLOC_API swapalloc_status swapalloc_empty_cache(size_t* released_bytes);

/**
 * The allocator's statistics as a JSON object (report.hpp: devices, pools with resident,
 * evicted, compressed and pinned bytes, priority, last use; usage errors), in `*json`:
 * valid until the calling thread's next call to this function.
 */
SWAPALLOC_API swapalloc_status swapalloc_stats_json(const char** json);

#ifdef __cplusplus
} /* extern "C" */

/* ---- PyTorch's private-pool hooks (C++ only) ---------------------------------------------
 * PyTorch casts these by address to its hook types (torch/csrc/cuda/Module.cpp), whose
 * parameters are C++ types: c10::cuda::MempoolId_t (a pair of unsigned long long) and a
 * stream filter std::function<bool(cudaStream_t)> (cudaStream_t is CUstream_st*). They have
 * C linkage, so their names are plain, and need a caller built with the same C++ standard
 * library ABI (libstdc++'s cxx11 ABI, which torch 2.15 wheels use). A private pool (a CUDA
 * graph's, or a torch.cuda.MemPool's) is a swapalloc pool "torch_pool_<a>_<b>" that is never
 * evicted. Errors set the thread's message. */
#include <functional>
#include <utility>

struct CUstream_st;

extern "C" {
/** PyTorch's allocation entry point (what swapalloc.install() gives CUDAPluggableAllocator):
 *  swapalloc_malloc, except that a failure throws a std::runtime_error carrying the message
 *  instead of returning NULL. PyTorch's CUDAPluggableAllocator::malloc does not check for
 *  NULL: a NULL from a failed allocation would become a tensor without memory. Called from
 *  C++ only (torch's std::function), so the exception reaches torch, which raises it in
 *  Python as a RuntimeError. */
SWAPALLOC_API void* swapalloc_torch_malloc(ssize_t size, int device, CUstream_st* stream);
/** Routes the allocations on `device` whose stream `filter` accepts into pool `id`. */
SWAPALLOC_API void swapalloc_hook_begin_allocate_to_pool(
  int device, std::pair<unsigned long long, unsigned long long> id,
  std::function<bool(CUstream_st*)> filter);
/** Ends the routing into pool `id` on `device`. */
SWAPALLOC_API void swapalloc_hook_end_allocate_to_pool(
  int device, std::pair<unsigned long long, unsigned long long> id);
/** Releases pool `id`: destroyed once it holds no block (at once, or at a later free's
 *  empty_cache or release). */
SWAPALLOC_API void swapalloc_hook_release_pool(
  int device, std::pair<unsigned long long, unsigned long long> id);
}
#endif

#endif /* SWAPALLOC_SWAPALLOC_H */
