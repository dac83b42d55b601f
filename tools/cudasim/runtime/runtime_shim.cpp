// libcudasim_runtime.so: the public CUDA runtime calls that PyTorch's allocation and copy
// paths make, implemented on the simulator's driver API, so that torch's CUDA tensors live
// in simulated device memory on a machine without a GPU. Loaded with LD_PRELOAD: an
// unversioned definition here wins over torch's versioned imports of libcudart.so.13
// (../shared/notes/torch-2.15.md §5-6). What is not defined here still goes to the real
// libcudart, which finds no usable driver: kernels do not run, and cudaLaunchKernel is
// defined here to fail loudly rather than let a result be garbage.
//
// Model: one simulated device context per device (the primary context, retained at the
// first call that needs it and made current on each calling thread); cudaStream_t and
// cudaEvent_t are the driver's CUstream and CUevent; device memory from cudaMalloc is a VMM
// mapping (the simulator has no cuMemAlloc). Errors: each failing call sets the calling
// thread's last error, as the runtime does (cudaGetLastError returns and clears it).
// Thread safety: every function may be called from any thread.
#include "runtime_state.hpp"

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>

using cudasim_runtime::device_count;
using cudasim_runtime::failed;
using cudasim_runtime::in_context;
using cudasim_runtime::to_runtime;

extern "C" {

// ---- Errors ---------------------------------------------------------------------------------

cudaError_t CUDARTAPI cudaGetLastError(void) { return cudasim_runtime::take_last_error(); }
cudaError_t CUDARTAPI cudaPeekAtLastError(void) { return cudasim_runtime::peek_last_error(); }

char const* CUDARTAPI cudaGetErrorName(cudaError_t error)
{
  return cudasim_runtime::error_name(error);
}

char const* CUDARTAPI cudaGetErrorString(cudaError_t error)
{
  return cudasim_runtime::error_string(error);
}

// ---- Versions and devices -------------------------------------------------------------------

cudaError_t CUDARTAPI cudaDriverGetVersion(int* version)
{
  if (version == nullptr) { return failed(cudaErrorInvalidValue); }
  return to_runtime(cuDriverGetVersion(version));
}

cudaError_t CUDARTAPI cudaRuntimeGetVersion(int* version)
{
  if (version == nullptr) { return failed(cudaErrorInvalidValue); }
  *version = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGetDeviceCount(int* count)
{
  if (count == nullptr) { return failed(cudaErrorInvalidValue); }
  return device_count(count);
}

cudaError_t CUDARTAPI cudaGetDevice(int* device)
{
  if (device == nullptr) { return failed(cudaErrorInvalidValue); }
  *device = cudasim_runtime::current_device();
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaSetDevice(int device) { return cudasim_runtime::set_device(device); }

cudaError_t CUDARTAPI cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device)
{
  if (value == nullptr) { return failed(cudaErrorInvalidValue); }
  return cudasim_runtime::device_attribute(value, attribute, device);
}

cudaError_t CUDARTAPI cudaGetDeviceProperties(cudaDeviceProp* prop, int device)
{
  if (prop == nullptr) { return failed(cudaErrorInvalidValue); }
  return cudasim_runtime::device_properties(prop, device);
}

cudaError_t CUDARTAPI cudaDeviceGetStreamPriorityRange(int* least, int* greatest)
{
  if (least != nullptr) { *least = 0; }  // one priority: the simulator does not schedule
  if (greatest != nullptr) { *greatest = 0; }
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaDeviceCanAccessPeer(int* can, int device, int peer)
{
  if (can == nullptr) { return failed(cudaErrorInvalidValue); }
  int count = 0;
  if (cudaError_t const e = device_count(&count); e != cudaSuccess) { return e; }
  if (device < 0 || device >= count || peer < 0 || peer >= count) {
    return failed(cudaErrorInvalidDevice);
  }
  *can = 0;  // no peer access between simulated devices
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaDeviceSynchronize(void)
{
  return in_context([] { return cuCtxSynchronize(); });
}

cudaError_t CUDARTAPI cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes)
{
  return in_context([&] { return cuMemGetInfo(free_bytes, total_bytes); });
}

// ---- Streams and events (the driver's objects) ------------------------------------------------

cudaError_t CUDARTAPI cudaStreamCreate(cudaStream_t* stream)
{
  return in_context([&] { return cuStreamCreate(stream, CU_STREAM_DEFAULT); });
}

cudaError_t CUDARTAPI cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags)
{
  return in_context([&] { return cuStreamCreate(stream, flags); });
}

cudaError_t CUDARTAPI cudaStreamCreateWithPriority(cudaStream_t* stream, unsigned int flags,
                                                   int /*priority: one level here*/)
{
  return in_context([&] { return cuStreamCreate(stream, flags); });
}

cudaError_t CUDARTAPI cudaStreamGetPriority(cudaStream_t /*stream*/, int* priority)
{
  if (priority == nullptr) { return failed(cudaErrorInvalidValue); }
  *priority = 0;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamDestroy(cudaStream_t stream)
{
  return in_context([&] { return cuStreamDestroy(stream); });
}

cudaError_t CUDARTAPI cudaStreamSynchronize(cudaStream_t stream)
{
  return in_context([&] { return cuStreamSynchronize(stream); });
}

cudaError_t CUDARTAPI cudaStreamQuery(cudaStream_t stream)
{
  return cudasim_runtime::query([&] { return cuStreamQuery(stream); });
}

cudaError_t CUDARTAPI cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event,
                                          unsigned int flags)
{
  return in_context([&] { return cuStreamWaitEvent(stream, event, flags); });
}

cudaError_t CUDARTAPI cudaStreamIsCapturing(cudaStream_t /*stream*/,
                                            cudaStreamCaptureStatus* status)
{
  if (status == nullptr) { return failed(cudaErrorInvalidValue); }
  *status = cudaStreamCaptureStatusNone;  // graphs are not simulated
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamGetCaptureInfo(cudaStream_t /*stream*/,
                                               cudaStreamCaptureStatus* status,
                                               unsigned long long* id, cudaGraph_t* graph,
                                               cudaGraphNode_t const** dependencies,
                                               cudaGraphEdgeData const** edges, size_t* count)
{
  if (status == nullptr) { return failed(cudaErrorInvalidValue); }
  *status = cudaStreamCaptureStatusNone;
  if (id != nullptr) { *id = 0; }
  if (graph != nullptr) { *graph = nullptr; }
  if (dependencies != nullptr) { *dependencies = nullptr; }
  if (edges != nullptr) { *edges = nullptr; }
  if (count != nullptr) { *count = 0; }
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode* mode)
{
  if (mode == nullptr) { return failed(cudaErrorInvalidValue); }
  thread_local cudaStreamCaptureMode current = cudaStreamCaptureModeGlobal;
  cudaStreamCaptureMode const previous       = current;
  current                                    = *mode;
  *mode                                      = previous;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void* data)
{
  return in_context([&] { return cuLaunchHostFunc(stream, fn, data); });
}

cudaError_t CUDARTAPI cudaEventCreate(cudaEvent_t* event)
{
  return in_context([&] { return cuEventCreate(event, CU_EVENT_DEFAULT); });
}

cudaError_t CUDARTAPI cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags)
{
  return in_context([&] { return cuEventCreate(event, flags); });
}

cudaError_t CUDARTAPI cudaEventDestroy(cudaEvent_t event)
{
  return in_context([&] { return cuEventDestroy(event); });
}

cudaError_t CUDARTAPI cudaEventRecord(cudaEvent_t event, cudaStream_t stream)
{
  return in_context([&] { return cuEventRecord(event, stream); });
}

cudaError_t CUDARTAPI cudaEventRecordWithFlags(cudaEvent_t event, cudaStream_t stream,
                                               unsigned int /*flags: external only*/)
{
  return in_context([&] { return cuEventRecord(event, stream); });
}

cudaError_t CUDARTAPI cudaEventSynchronize(cudaEvent_t event)
{
  return in_context([&] { return cuEventSynchronize(event); });
}

cudaError_t CUDARTAPI cudaEventQuery(cudaEvent_t event)
{
  return cudasim_runtime::query([&] { return cuEventQuery(event); });
}

cudaError_t CUDARTAPI cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end)
{
  return in_context([&] { return cuEventElapsedTime(ms, start, end); });
}

// ---- Memory ---------------------------------------------------------------------------------

cudaError_t CUDARTAPI cudaMalloc(void** ptr, size_t size)
{
  if (ptr == nullptr) { return failed(cudaErrorInvalidValue); }
  return cudasim_runtime::device_malloc(ptr, size);
}

cudaError_t CUDARTAPI cudaFree(void* ptr) { return cudasim_runtime::device_free(ptr); }

// Stream-ordered allocation: the block may be used on `stream` as soon as the call returns
// when it is allocated at once, and freeing after the stream's work (device_free also waits
// for the device) is a stronger order than the runtime's, never a weaker one.
cudaError_t CUDARTAPI cudaMallocAsync(void** ptr, size_t size, cudaStream_t /*stream*/)
{
  if (ptr == nullptr) { return failed(cudaErrorInvalidValue); }
  return cudasim_runtime::device_malloc(ptr, size);
}

cudaError_t CUDARTAPI cudaFreeAsync(void* ptr, cudaStream_t stream)
{
  if (cudaError_t const e = in_context([&] { return cuStreamSynchronize(stream); });
      e != cudaSuccess) {
    return e;
  }
  return cudasim_runtime::device_free(ptr);
}

cudaError_t CUDARTAPI cudaMallocHost(void** ptr, size_t size)
{
  return cudaHostAlloc(ptr, size, cudaHostAllocDefault);
}

cudaError_t CUDARTAPI cudaHostAlloc(void** ptr, size_t size, unsigned int flags)
{
  if (ptr == nullptr) { return failed(cudaErrorInvalidValue); }
  cudaError_t const e = in_context([&] { return cuMemHostAlloc(ptr, size, flags); });
  if (e == cudaSuccess) { cudasim_runtime::note_pinned(*ptr, size); }
  return e;
}

cudaError_t CUDARTAPI cudaFreeHost(void* ptr)
{
  cudasim_runtime::forget_pinned(ptr);
  return in_context([&] { return cuMemFreeHost(ptr); });
}

cudaError_t CUDARTAPI cudaPointerGetAttributes(cudaPointerAttributes* attributes, void const* ptr)
{
  if (attributes == nullptr) { return failed(cudaErrorInvalidValue); }
  return cudasim_runtime::pointer_attributes(attributes, ptr);
}

cudaError_t CUDARTAPI cudaMemcpy(void* dst, void const* src, size_t count, cudaMemcpyKind kind)
{
  return cudasim_runtime::copy(dst, src, count, kind, nullptr, false);
}

cudaError_t CUDARTAPI cudaMemcpyAsync(void* dst, void const* src, size_t count, cudaMemcpyKind kind,
                                      cudaStream_t stream)
{
  return cudasim_runtime::copy(dst, src, count, kind, stream, true);
}

cudaError_t CUDARTAPI cudaMemset(void* ptr, int value, size_t count)
{
  return in_context([&] {
    return cuMemsetD8(reinterpret_cast<CUdeviceptr>(ptr), static_cast<unsigned char>(value), count);
  });
}

cudaError_t CUDARTAPI cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream)
{
  return in_context([&] {
    return cuMemsetD8Async(reinterpret_cast<CUdeviceptr>(ptr), static_cast<unsigned char>(value),
                           count, stream);
  });
}

// ---- The driver's entry points, and what does not run here ------------------------------------

cudaError_t CUDARTAPI cudaGetDriverEntryPointByVersion(char const* symbol, void** function,
                                                       unsigned int version,
                                                       unsigned long long flags,
                                                       cudaDriverEntryPointQueryResult* status)
{
  return cudasim_runtime::driver_entry_point(symbol, function, version, flags, status);
}

cudaError_t CUDARTAPI cudaFuncGetAttributes(cudaFuncAttributes* attributes, void const* /*func*/)
{
  if (attributes == nullptr) { return failed(cudaErrorInvalidValue); }
  std::memset(attributes, 0, sizeof(*attributes));
  attributes->maxThreadsPerBlock = 1024;  // what a query before a launch needs to see
  attributes->numRegs            = 32;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaLaunchKernel(void const* /*func*/, dim3 /*grid*/, dim3 /*block*/,
                                       void** /*args*/, size_t /*shared*/, cudaStream_t /*stream*/)
{
  static bool const said = [] {
    std::fputs(
      "cudasim runtime: a kernel launch was refused: kernels do not run on the "
      "simulator (use copies only: copy_, clone, .to())\n",
      stderr);
    return true;
  }();
  (void)said;
  return failed(cudaErrorNotSupported);
}

}  // extern "C"
