/**
 * @file runtime_state.hpp
 * @brief What the runtime shim (runtime_shim.cpp) keeps between calls: the calling thread's
 *        last error and current device, each device's primary context, the device memory
 *        cudaMalloc mapped and the pinned host memory cudaHostAlloc gave; and the calls that
 *        need more than one driver call (copies by kind, pointer attributes, properties).
 *
 * Thread safety: every function may be called from any thread; the maps are guarded by one
 * mutex each, the last error and the current device are thread-local.
 */
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

namespace cudasim_runtime {

/// Keeps `error` as the thread's last error and returns it.
cudaError_t failed(cudaError_t error) noexcept;
/// The thread's last error, cleared (cudaGetLastError) or kept (cudaPeekAtLastError).
cudaError_t take_last_error() noexcept;
cudaError_t peek_last_error() noexcept;
/// "cudaErrorInvalidValue", ...; and the sentence cudaGetErrorString gives.
char const* error_name(cudaError_t error) noexcept;
char const* error_string(cudaError_t error) noexcept;

/// The runtime's code for a driver result; a failure also becomes the last error.
cudaError_t to_runtime(CUresult result) noexcept;

/// Runs `call` (returning a CUresult) with the current device's primary context current on
/// this thread, and gives its result as a runtime code (to_runtime).
cudaError_t ensure_context() noexcept;
template <typename Call>
cudaError_t in_context(Call&& call) noexcept
{
  if (cudaError_t const e = ensure_context(); e != cudaSuccess) { return e; }
  return to_runtime(call());
}

/// A query (cuStreamQuery, cuEventQuery) in context: its CUDA_ERROR_NOT_READY is a status,
/// cudaErrorNotReady, and does not become the last error.
template <typename Call>
cudaError_t query(Call&& call) noexcept
{
  CUresult result     = CUDA_SUCCESS;
  cudaError_t const e = in_context([&] {
    result = call();
    return result == CUDA_ERROR_NOT_READY ? CUDA_SUCCESS : result;
  });
  return e == cudaSuccess && result == CUDA_ERROR_NOT_READY ? cudaErrorNotReady : e;
}

cudaError_t device_count(int* count) noexcept;
/// The thread's current device (cudaSetDevice; 0 at first).
int current_device() noexcept;
cudaError_t set_device(int device) noexcept;
cudaError_t device_attribute(int* value, cudaDeviceAttr attribute, int device) noexcept;
cudaError_t device_properties(cudaDeviceProp* prop, int device) noexcept;

/// cudaMalloc / cudaFree on VMM: reserve, create, map, set access; and the reverse.
cudaError_t device_malloc(void** ptr, size_t size) noexcept;
cudaError_t device_free(void* ptr) noexcept;
/// Device memory (mapped), pinned host memory (from cudaHostAlloc/cudaMallocHost) or
/// other host memory.
cudaError_t pointer_attributes(cudaPointerAttributes* attributes, void const* ptr) noexcept;
/// cudaMemcpy (`async` false: the copy is complete on return) and cudaMemcpyAsync.
cudaError_t copy(void* dst, void const* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream,
                 bool async) noexcept;
/// Records or forgets pinned host memory (cudaHostAlloc, cudaMallocHost, cudaFreeHost) for
/// pointer_attributes.
void note_pinned(void* ptr, size_t size) noexcept;
void forget_pinned(void* ptr) noexcept;
/// cudaGetDriverEntryPointByVersion: the simulator's symbol.
cudaError_t driver_entry_point(char const* symbol, void** function, unsigned int version,
                               unsigned long long flags,
                               cudaDriverEntryPointQueryResult* status) noexcept;

}  // namespace cudasim_runtime
