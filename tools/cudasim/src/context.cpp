/**
 * @file context.cpp
 * @brief Initialization, devices, primary contexts and the current context.
 *
 * The simulated device is the seeds' RTX 2070 (compute capability 7.5, 36 SMs, two
 * copy engines) with the capacity SWAPALLOC_SIM_MEMORY. cuMemGetInfo_v2 reports
 * free = capacity - external usage - live physical allocations of the device.
 */
#include "state.hpp"

#include <cstdio>
#include <optional>
#include <utility>

// ---- CUctx_st: retain count and sticky error (its streams: stream.cpp) -------------

bool CUctx_st::release() noexcept
{
  int count = retained_.load(std::memory_order_relaxed);
  do {
    if (count <= 0) { return false; }
  } while (!retained_.compare_exchange_weak(count, count - 1, std::memory_order_relaxed));
  return true;
}

void CUctx_st::fault(CUresult error) noexcept
{
  CUresult expected = CUDA_SUCCESS;  // the first fault is the one reported
  sticky_.compare_exchange_strong(expected, error, std::memory_order_acq_rel);
}

// ---- Entry points --------------------------------------------------------------------

namespace cudasim {
namespace {

struct attribute_entry {
  CUdevice_attribute attribute;
  int value;
};

/// The attributes swapalloc (and PyTorch) read, with an RTX 2070's values. What the
/// simulator does not model (managed memory, memory pools, shareable handles) reads 0.
/// Host registration is modelled (host_register.cpp) as on Linux x86: supported, but not
/// read-only registration (cuMemHostRegister refuses CU_MEMHOSTREGISTER_READ_ONLY with
/// CUDA_ERROR_NOT_SUPPORTED, as cuda.h says it does where this attribute is 0), and pages
/// are not accessed through the host's page tables.
constexpr attribute_entry attributes[] = {
  {CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, 1},
  {CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING, 1},
  {CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY, 1},
  {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 7},
  {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, 5},
  {CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT, 2},
  {CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 36},
  {CU_DEVICE_ATTRIBUTE_WARP_SIZE, 32},
  {CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, 1024},
  {CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR, 1024},
  {CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK, 48 << 10},
  {CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, 64 << 10},
  {CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK, 64 << 10},
  {CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY, 64 << 10},
  {CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, 4 << 20},
  {CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH, 256},
  {CU_DEVICE_ATTRIBUTE_CLOCK_RATE, 1620000},
  {CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE, 7001000},
  {CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS, 1},
  {CU_DEVICE_ATTRIBUTE_INTEGRATED, 0},
  {CU_DEVICE_ATTRIBUTE_TCC_DRIVER, 0},
  {CU_DEVICE_ATTRIBUTE_ECC_ENABLED, 0},
  {CU_DEVICE_ATTRIBUTE_COMPUTE_MODE, CU_COMPUTEMODE_DEFAULT},
  {CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, 0},
  {CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID, 0},
  {CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY, 0},
  {CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS, 0},
  {CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS, 0},
  {CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED, 0},
  {CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED, 0},
  {CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED, 0},
  {CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED, 1},
  {CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED, 0},
  {CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES, 0},
};

[[nodiscard]] simulator& sim() { return simulator::get(); }

/// Reset of a primary context (cuda.h: "Destroy all allocations and reset all state on
/// the primary context"): its streams and events are destroyed once their work has
/// drained, its host registrations that are not CU_MEMHOSTREGISTER_PORTABLE are dropped
/// (host_register.cpp), and the sticky error is cleared. Other memory is process-wide
/// here and survives.
void reset(CUctx_st& context)
{
  std::vector<std::shared_ptr<CUstream_st>> streams = context.take_streams();
  for (auto const& stream : streams) {
    (void)sim().streams().remove(stream.get());
    stream->retire(false);
  }
  for (auto const& stream : streams) {
    stream->join();
  }
  (void)sim().events().remove_if(
    [&context](CUevent_st const& event) { return &event.context() == &context; });
  synchronize_context(context);  // the legacy stream
  sim().host().drop_registrations(context);
  context.clear_fault();
}

}  // namespace

std::optional<int> attribute_value(CUdevice_attribute const& attribute) noexcept
{
  for (attribute_entry const& entry : attributes) {
    if (enum_value(entry.attribute) == enum_value(attribute)) { return entry.value; }
  }
  return std::nullopt;
}

}  // namespace cudasim

using cudasim::api;
using cudasim::entry;

CUresult CUDAAPI cuInit(unsigned int Flags)
{
  return cudasim::api_before_init(entry::init, [&] {
    if (Flags != 0) { return CUDA_ERROR_INVALID_VALUE; }  // cuda.h: "Flags ... must be 0"
    return cudasim::sim().initialize();
  });
}

CUresult CUDAAPI cuDriverGetVersion(int* driverVersion)
{
  return cudasim::api_before_init(entry::driver_get_version, [&] {
    if (driverVersion == nullptr) { return CUDA_ERROR_INVALID_VALUE; }
    *driverVersion = 13000;  // CUDA 13.0, the cuda.h this library is built against
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuDeviceGetCount(int* count)
{
  return api(entry::device_get_count, [&] {
    if (count == nullptr) { return CUDA_ERROR_INVALID_VALUE; }
    *count = cudasim::sim().device_count();
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuDeviceGet(CUdevice* device, int ordinal)
{
  return api(entry::device_get, [&] {
    if (device == nullptr) { return CUDA_ERROR_INVALID_VALUE; }
    if (cudasim::sim().find_device(ordinal) == nullptr) { return CUDA_ERROR_INVALID_DEVICE; }
    *device = ordinal;
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuDeviceGetName(char* name, int len, CUdevice dev)
{
  return api(entry::device_get_name, [&] {
    if (name == nullptr || len <= 0) { return CUDA_ERROR_INVALID_VALUE; }
    if (cudasim::sim().find_device(dev) == nullptr) { return CUDA_ERROR_INVALID_DEVICE; }
    std::snprintf(name, static_cast<std::size_t>(len), "%s", "cudasim simulated GPU");
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuDeviceGetAttribute(int* pi, CUdevice_attribute attrib, CUdevice dev)
{
  return api(entry::device_get_attribute, [&] {
    if (pi == nullptr) { return CUDA_ERROR_INVALID_VALUE; }
    cudasim::device const* const device = cudasim::sim().find_device(dev);
    if (device == nullptr) { return CUDA_ERROR_INVALID_DEVICE; }
    if (cudasim::enum_value(attrib) == cudasim::enum_value(CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)) {
      *pi = device->ordinal + 1;  // distinct per device, as real bus ids are
      return CUDA_SUCCESS;
    }
    std::optional<int> const value = cudasim::attribute_value(attrib);
    if (!value) { return CUDA_ERROR_INVALID_VALUE; }
    *pi = *value;
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuDeviceTotalMem(size_t* bytes, CUdevice dev)
{
  return api(entry::device_total_mem, [&] {
    if (bytes == nullptr) { return CUDA_ERROR_INVALID_VALUE; }
    cudasim::device const* const device = cudasim::sim().find_device(dev);
    if (device == nullptr) { return CUDA_ERROR_INVALID_DEVICE; }
    *bytes = device->capacity;
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuDevicePrimaryCtxRetain(CUcontext* pctx, CUdevice dev)
{
  return api(entry::primary_ctx_retain, [&] {
    if (pctx == nullptr) { return CUDA_ERROR_INVALID_VALUE; }
    cudasim::device* const device = cudasim::sim().find_device(dev);
    if (device == nullptr) { return CUDA_ERROR_INVALID_DEVICE; }
    device->context.retain();
    *pctx = &device->context;
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuDevicePrimaryCtxRelease(CUdevice dev)
{
  return api(entry::primary_ctx_release, [&] {
    cudasim::device* const device = cudasim::sim().find_device(dev);
    if (device == nullptr) { return CUDA_ERROR_INVALID_DEVICE; }
    // "Releasing a primary context that has not been previously retained will fail with
    // CUDA_ERROR_INVALID_CONTEXT."
    return device->context.release() ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
  });
}

CUresult CUDAAPI cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int* flags, int* active)
{
  return api(entry::primary_ctx_get_state, [&] {
    if (flags == nullptr || active == nullptr) { return CUDA_ERROR_INVALID_VALUE; }
    cudasim::device const* const device = cudasim::sim().find_device(dev);
    if (device == nullptr) { return CUDA_ERROR_INVALID_DEVICE; }
    // cuDevicePrimaryCtxSetFlags is not modelled, so the flags are the default ones (0:
    // CU_CTX_SCHED_AUTO). Active: "0 = inactive, 1 = active"; the context is active while
    // retained.
    *flags  = 0;
    *active = device->context.active() ? 1 : 0;
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuDevicePrimaryCtxReset(CUdevice dev)
{
  return api(entry::primary_ctx_reset, [&] {
    cudasim::device* const device = cudasim::sim().find_device(dev);
    if (device == nullptr) { return CUDA_ERROR_INVALID_DEVICE; }
    cudasim::reset(device->context);
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuCtxGetCurrent(CUcontext* pctx)
{
  return api(entry::ctx_get_current, [&] {
    if (pctx == nullptr) { return CUDA_ERROR_INVALID_VALUE; }
    *pctx = cudasim::current_context();
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuCtxSetCurrent(CUcontext ctx)
{
  return api(entry::ctx_set_current, [&] {
    // "If ctx is NULL then the CUDA context previously bound to the calling CPU thread is
    // unbound and CUDA_SUCCESS is returned."
    if (ctx == nullptr) {
      cudasim::current_context() = nullptr;
      return CUDA_SUCCESS;
    }
    CUctx_st* const context = cudasim::sim().find_context(ctx);
    if (context == nullptr) { return CUDA_ERROR_INVALID_CONTEXT; }
    cudasim::current_context() = context;
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuCtxGetDevice(CUdevice* device)
{
  return api(entry::ctx_get_device, [&] {
    if (device == nullptr) { return CUDA_ERROR_INVALID_VALUE; }
    CUctx_st* context = nullptr;
    if (CUresult const bad = cudasim::use_current_context(context); bad != CUDA_SUCCESS) {
      return bad;
    }
    *device = context->device();
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuCtxSynchronize(void)
{
  return api(entry::ctx_synchronize, [&] {
    CUctx_st* context = nullptr;
    if (CUresult const bad = cudasim::use_current_context(context); bad != CUDA_SUCCESS) {
      return bad;
    }
    cudasim::synchronize_context(*context);
    return context->sticky_error();
  });
}

CUresult CUDAAPI cuMemGetInfo(size_t* free, size_t* total)
{
  return api(entry::mem_get_info, [&] {
    if (free == nullptr || total == nullptr) { return CUDA_ERROR_INVALID_VALUE; }
    CUctx_st* context = nullptr;
    if (CUresult const bad = cudasim::use_current_context(context); bad != CUDA_SUCCESS) {
      return bad;
    }
    cudasim::device const& device = cudasim::device_of(*context);
    *free                         = device.free_bytes();
    *total                        = device.capacity;
    return CUDA_SUCCESS;
  });
}

CUresult cudasimSetExternalUsage(int device, size_t bytes)
{
  cudasim::simulator& sim = cudasim::sim();
  if (!sim.initialized()) { return CUDA_ERROR_NOT_INITIALIZED; }
  cudasim::device* const target = sim.find_device(device);
  if (target == nullptr) { return CUDA_ERROR_INVALID_DEVICE; }
  target->external.store(bytes, std::memory_order_relaxed);
  return CUDA_SUCCESS;
}
