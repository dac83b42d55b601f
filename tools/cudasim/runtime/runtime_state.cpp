// The runtime shim's state and its multi-call operations (runtime_state.hpp).
#include "runtime_state.hpp"

#include <dlfcn.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace cudasim_runtime {
namespace {

thread_local cudaError_t last_error = cudaSuccess;
thread_local int thread_device      = 0;

constexpr int max_devices = 16;

/// The primary context of each device, retained once for the process (the runtime keeps
/// it until exit, as the real runtime does).
struct primary_contexts {
  std::mutex mutex;
  std::array<CUcontext, max_devices> context{};
};
primary_contexts& primaries()
{
  static primary_contexts instance;
  return instance;
}

/// A cudaMalloc: its reservation size and physical handle.
struct device_allocation {
  std::size_t size;
  CUmemGenericAllocationHandle handle;
};

struct memory_registry {
  std::mutex mutex;
  std::map<std::uintptr_t, device_allocation> device;  // cudaMalloc'd, by base
  std::map<std::uintptr_t, std::size_t> pinned;        // cudaHostAlloc'd, by base
};
memory_registry& registry()
{
  static memory_registry instance;
  return instance;
}

struct error_text {
  cudaError_t error;
  char const* name;
  char const* text;
};
// The errors the shim gives or passes on from the simulator; cuda_runtime_api.h's wording.
constexpr std::array<error_text, 13> error_texts{{
  {cudaSuccess, "cudaSuccess", "no error"},
  {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
  {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
  {cudaErrorInitializationError, "cudaErrorInitializationError", "initialization error"},
  {cudaErrorCudartUnloading, "cudaErrorCudartUnloading", "driver shutting down"},
  {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
  {cudaErrorDeviceUninitialized, "cudaErrorDeviceUninitialized", "invalid device context"},
  {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle", "invalid resource handle"},
  {cudaErrorSymbolNotFound, "cudaErrorSymbolNotFound", "named symbol not found"},
  {cudaErrorNotReady, "cudaErrorNotReady", "device not ready"},
  {cudaErrorIllegalAddress, "cudaErrorIllegalAddress", "an illegal memory access was encountered"},
  {cudaErrorNotSupported, "cudaErrorNotSupported", "operation not supported"},
  {cudaErrorUnknown, "cudaErrorUnknown", "unknown error"},
}};

error_text const* find_text(cudaError_t error) noexcept
{
  for (error_text const& entry : error_texts) {
    if (entry.error == error) { return &entry; }
  }
  return nullptr;
}

/// The allocation properties of pinned device memory on `device`.
CUmemAllocationProp device_prop(int device) noexcept
{
  CUmemAllocationProp prop{};
  prop.type          = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id   = device;
  return prop;
}

/// Whether `ptr` is mapped device memory (cuMemGetAccess answers for mapped addresses only).
bool is_device_pointer(void const* ptr, int* device) noexcept
{
  int count = 0;
  if (ptr == nullptr || cuDeviceGetCount(&count) != CUDA_SUCCESS) { return false; }
  for (int d = 0; d < count; ++d) {
    CUmemLocation location{CU_MEM_LOCATION_TYPE_DEVICE, d};
    unsigned long long flags = 0;
    if (cuMemGetAccess(&flags, &location, reinterpret_cast<CUdeviceptr>(ptr)) == CUDA_SUCCESS &&
        flags != 0) {
      *device = d;
      return true;
    }
  }
  return false;
}

}  // namespace

cudaError_t failed(cudaError_t error) noexcept
{
  last_error = error;
  return error;
}

cudaError_t take_last_error() noexcept { return std::exchange(last_error, cudaSuccess); }
cudaError_t peek_last_error() noexcept { return last_error; }

char const* error_name(cudaError_t error) noexcept
{
  error_text const* found = find_text(error);
  return found != nullptr ? found->name : "cudaErrorUnknown";
}

char const* error_string(cudaError_t error) noexcept
{
  error_text const* found = find_text(error);
  return found != nullptr ? found->text : "unrecognized error code";
}

cudaError_t to_runtime(CUresult result) noexcept
{
  // The runtime's codes equal the driver's for every result the simulator gives, except
  // these (cuda_runtime_api.h / cuda.h).
  switch (result) {
    case CUDA_SUCCESS:
      return cudaSuccess;
    case CUDA_ERROR_OUT_OF_MEMORY:
      return failed(cudaErrorMemoryAllocation);
    case CUDA_ERROR_NOT_INITIALIZED:
      return failed(cudaErrorInitializationError);
    case CUDA_ERROR_INVALID_CONTEXT:
      return failed(cudaErrorDeviceUninitialized);
    case CUDA_ERROR_INVALID_HANDLE:
      return failed(cudaErrorInvalidResourceHandle);
    case CUDA_ERROR_NOT_FOUND:
      return failed(cudaErrorSymbolNotFound);
    default:
      return failed(find_text(static_cast<cudaError_t>(result)) != nullptr
                      ? static_cast<cudaError_t>(result)
                      : cudaErrorUnknown);
  }
}

cudaError_t device_count(int* count) noexcept
{
  if (CUresult const init = cuInit(0); init != CUDA_SUCCESS) { return to_runtime(init); }
  return to_runtime(cuDeviceGetCount(count));
}

int current_device() noexcept { return thread_device; }

cudaError_t set_device(int device) noexcept
{
  int count = 0;
  if (cudaError_t const e = device_count(&count); e != cudaSuccess) { return e; }
  if (device < 0 || device >= count || device >= max_devices) {
    return failed(cudaErrorInvalidDevice);
  }
  thread_device = device;
  return ensure_context();
}

cudaError_t ensure_context() noexcept
{
  thread_local int made_current_for = -1;
  int const device                  = thread_device;
  CUcontext current                 = nullptr;
  primary_contexts& all             = primaries();
  {
    std::lock_guard const lock(all.mutex);
    if (all.context[device] == nullptr) {
      int count = 0;
      if (cudaError_t const e = device_count(&count); e != cudaSuccess) { return e; }
      CUdevice handle = 0;
      if (CUresult const r = cuDeviceGet(&handle, device); r != CUDA_SUCCESS) {
        return to_runtime(r);
      }
      if (CUresult const r = cuDevicePrimaryCtxRetain(&all.context[device], handle);
          r != CUDA_SUCCESS) {
        return to_runtime(r);
      }
    }
    current = all.context[device];
  }
  CUcontext now = nullptr;
  if (made_current_for == device && cuCtxGetCurrent(&now) == CUDA_SUCCESS && now == current) {
    return cudaSuccess;
  }
  made_current_for = device;
  return to_runtime(cuCtxSetCurrent(current));
}

cudaError_t device_attribute(int* value, cudaDeviceAttr attribute, int device) noexcept
{
  CUdevice handle = 0;
  if (CUresult const r = cuDeviceGet(&handle, device); r != CUDA_SUCCESS) { return to_runtime(r); }
  // The runtime's attribute numbers are the driver's. One the simulator does not model
  // reads 0, as a feature the device lacks.
  CUresult const r =
    cuDeviceGetAttribute(value, static_cast<CUdevice_attribute>(attribute), handle);
  if (r == CUDA_ERROR_INVALID_VALUE && static_cast<int>(attribute) > 0 &&
      static_cast<int>(attribute) < static_cast<int>(CU_DEVICE_ATTRIBUTE_MAX)) {
    *value = 0;
    return cudaSuccess;
  }
  return to_runtime(r);
}

cudaError_t device_properties(cudaDeviceProp* prop, int device) noexcept
{
  CUdevice handle = 0;
  if (CUresult const r = cuDeviceGet(&handle, device); r != CUDA_SUCCESS) { return to_runtime(r); }
  std::memset(prop, 0, sizeof(*prop));
  std::size_t total = 0;
  if (CUresult const r = cuDeviceTotalMem(&total, handle); r != CUDA_SUCCESS) {
    return to_runtime(r);
  }
  if (CUresult const r = cuDeviceGetName(prop->name, sizeof(prop->name), handle);
      r != CUDA_SUCCESS) {
    return to_runtime(r);
  }
  prop->totalGlobalMem = total;
  auto const read      = [&](int& field, cudaDeviceAttr attribute) {
    (void)device_attribute(&field, attribute, device);
  };
  read(prop->major, cudaDevAttrComputeCapabilityMajor);
  read(prop->minor, cudaDevAttrComputeCapabilityMinor);
  read(prop->multiProcessorCount, cudaDevAttrMultiProcessorCount);
  read(prop->warpSize, cudaDevAttrWarpSize);
  read(prop->maxThreadsPerBlock, cudaDevAttrMaxThreadsPerBlock);
  read(prop->maxThreadsPerMultiProcessor, cudaDevAttrMaxThreadsPerMultiProcessor);
  read(prop->regsPerBlock, cudaDevAttrMaxRegistersPerBlock);
  read(prop->l2CacheSize, cudaDevAttrL2CacheSize);
  read(prop->memoryBusWidth, cudaDevAttrGlobalMemoryBusWidth);
  read(prop->asyncEngineCount, cudaDevAttrAsyncEngineCount);
  read(prop->unifiedAddressing, cudaDevAttrUnifiedAddressing);
  read(prop->canMapHostMemory, cudaDevAttrCanMapHostMemory);
  read(prop->concurrentKernels, cudaDevAttrConcurrentKernels);
  read(prop->integrated, cudaDevAttrIntegrated);
  int shared = 0;
  read(shared, cudaDevAttrMaxSharedMemoryPerBlock);
  prop->sharedMemPerBlock = static_cast<std::size_t>(shared);
  read(shared, cudaDevAttrMaxSharedMemoryPerBlockOptin);
  prop->sharedMemPerBlockOptin = static_cast<std::size_t>(shared);
  prop->maxThreadsDim[0]       = 1024;
  prop->maxThreadsDim[1]       = 1024;
  prop->maxThreadsDim[2]       = 64;
  prop->maxGridSize[0]         = 0x7FFFFFFF;
  prop->maxGridSize[1]         = 65535;
  prop->maxGridSize[2]         = 65535;
  return cudaSuccess;
}

cudaError_t device_malloc(void** ptr, size_t size) noexcept
{
  *ptr = nullptr;
  if (size == 0) { return cudaSuccess; }
  if (cudaError_t const e = ensure_context(); e != cudaSuccess) { return e; }
  CUmemAllocationProp const prop = device_prop(thread_device);
  std::size_t granularity        = 0;
  CUresult r = cuMemGetAllocationGranularity(&granularity, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
  if (r != CUDA_SUCCESS) { return to_runtime(r); }
  std::size_t const rounded = (size + granularity - 1) / granularity * granularity;
  CUdeviceptr base          = 0;
  if (r = cuMemAddressReserve(&base, rounded, granularity, 0, 0); r != CUDA_SUCCESS) {
    return to_runtime(r);
  }
  CUmemGenericAllocationHandle handle = 0;
  CUmemAccessDesc const access{prop.location, CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
  if (r = cuMemCreate(&handle, rounded, &prop, 0); r == CUDA_SUCCESS) {
    if (r = cuMemMap(base, rounded, 0, handle, 0); r == CUDA_SUCCESS) {
      if (r = cuMemSetAccess(base, rounded, &access, 1); r != CUDA_SUCCESS) {
        (void)cuMemUnmap(base, rounded);
      }
    }
    if (r != CUDA_SUCCESS) { (void)cuMemRelease(handle); }
  }
  if (r != CUDA_SUCCESS) {
    (void)cuMemAddressFree(base, rounded);
    return to_runtime(r);
  }
  memory_registry& all = registry();
  std::lock_guard const lock(all.mutex);
  all.device.emplace(static_cast<std::uintptr_t>(base), device_allocation{rounded, handle});
  *ptr = reinterpret_cast<void*>(base);
  return cudaSuccess;
}

cudaError_t device_free(void* ptr) noexcept
{
  if (ptr == nullptr) { return cudaSuccess; }
  device_allocation freed{};
  {
    memory_registry& all = registry();
    std::lock_guard const lock(all.mutex);
    auto const found = all.device.find(reinterpret_cast<std::uintptr_t>(ptr));
    if (found == all.device.end()) { return failed(cudaErrorInvalidValue); }
    freed = found->second;
    all.device.erase(found);
  }
  auto const base = reinterpret_cast<CUdeviceptr>(ptr);
  // cudaFree synchronizes the device first (the real runtime's implicit synchronization).
  return in_context([&] {
    CUresult r = cuCtxSynchronize();
    if (CUresult const u = cuMemUnmap(base, freed.size); r == CUDA_SUCCESS) { r = u; }
    if (CUresult const u = cuMemRelease(freed.handle); r == CUDA_SUCCESS) { r = u; }
    if (CUresult const u = cuMemAddressFree(base, freed.size); r == CUDA_SUCCESS) { r = u; }
    return r;
  });
}

cudaError_t pointer_attributes(cudaPointerAttributes* attributes, void const* ptr) noexcept
{
  std::memset(attributes, 0, sizeof(*attributes));
  int device = 0;
  if (is_device_pointer(ptr, &device)) {
    attributes->type          = cudaMemoryTypeDevice;
    attributes->device        = device;
    attributes->devicePointer = const_cast<void*>(ptr);  // NOLINT: the API's field type
    return cudaSuccess;
  }
  memory_registry& all = registry();
  std::lock_guard const lock(all.mutex);
  auto const address = reinterpret_cast<std::uintptr_t>(ptr);
  auto const after   = all.pinned.upper_bound(address);
  if (after != all.pinned.begin() && address < std::prev(after)->first + std::prev(after)->second) {
    attributes->type          = cudaMemoryTypeHost;
    attributes->device        = thread_device;
    attributes->hostPointer   = const_cast<void*>(ptr);  // NOLINT: the API's field type
    attributes->devicePointer = const_cast<void*>(ptr);  // NOLINT: unified addressing
    return cudaSuccess;
  }
  attributes->type   = cudaMemoryTypeUnregistered;
  attributes->device = -1;
  return cudaSuccess;
}

namespace {

/// `kind` with cudaMemcpyDefault resolved from where the pointers are.
cudaMemcpyKind resolve_kind(void* dst, void const* src, cudaMemcpyKind kind) noexcept
{
  if (kind != cudaMemcpyDefault) { return kind; }
  int device          = 0;
  bool const to_dev   = is_device_pointer(dst, &device);
  bool const from_dev = is_device_pointer(src, &device);
  if (to_dev) { return from_dev ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice; }
  return from_dev ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost;
}

}  // namespace

cudaError_t copy(void* dst, void const* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream,
                 bool async) noexcept
{
  if (count == 0) { return cudaSuccess; }
  if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault) {
    return failed(cudaErrorInvalidMemcpyDirection);
  }
  auto const to   = reinterpret_cast<CUdeviceptr>(dst);
  auto const from = reinterpret_cast<CUdeviceptr>(src);
  return in_context([&]() -> CUresult {
    switch (resolve_kind(dst, src, kind)) {
      case cudaMemcpyHostToDevice:
        return async ? cuMemcpyHtoDAsync(to, src, count, stream) : cuMemcpyHtoD(to, src, count);
      case cudaMemcpyDeviceToHost:
        return async ? cuMemcpyDtoHAsync(dst, from, count, stream) : cuMemcpyDtoH(dst, from, count);
      case cudaMemcpyDeviceToDevice:
        return async ? cuMemcpyDtoDAsync(to, from, count, stream) : cuMemcpyDtoD(to, from, count);
      default:  // host to host: in stream order
        if (CUresult const r = cuStreamSynchronize(async ? stream : nullptr); r != CUDA_SUCCESS) {
          return r;
        }
        std::memmove(dst, src, count);
        return CUDA_SUCCESS;
    }
  });
}

void note_pinned(void* ptr, std::size_t size) noexcept
{
  memory_registry& all = registry();
  std::lock_guard const lock(all.mutex);
  all.pinned[reinterpret_cast<std::uintptr_t>(ptr)] = size;
}

void forget_pinned(void* ptr) noexcept
{
  memory_registry& all = registry();
  std::lock_guard const lock(all.mutex);
  all.pinned.erase(reinterpret_cast<std::uintptr_t>(ptr));
}

cudaError_t driver_entry_point(char const* symbol, void** function, unsigned int /*version*/,
                               unsigned long long /*flags*/,
                               cudaDriverEntryPointQueryResult* status) noexcept
{
  if (symbol == nullptr || function == nullptr) { return failed(cudaErrorInvalidValue); }
  // The simulator's own handle: the library that defines cuInit.
  Dl_info where{};
  if (dladdr(reinterpret_cast<void*>(&cuInit), &where) == 0 || where.dli_fname == nullptr) {
    return failed(cudaErrorInitializationError);
  }
  void* const library = dlopen(where.dli_fname, RTLD_NOW | RTLD_NOLOAD);
  if (library == nullptr) { return failed(cudaErrorInitializationError); }
  // cuda.h maps some names to a versioned symbol (cuMemGetInfo -> cuMemGetInfo_v2): the
  // versioned one is the current ABI of that name.
  std::string const versioned = std::string(symbol) + "_v2";
  void* found                 = dlsym(library, versioned.c_str());
  if (found == nullptr) { found = dlsym(library, symbol); }
  dlclose(library);  // RTLD_NOLOAD took a reference: give it back
  *function = found;
  if (status != nullptr) {
    *status = found != nullptr ? cudaDriverEntryPointSuccess : cudaDriverEntryPointSymbolNotFound;
  }
  return cudaSuccess;
}

}  // namespace cudasim_runtime
