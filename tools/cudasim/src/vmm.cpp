/**
 * @file vmm.cpp
 * @brief The VMM entry points: granularity, reserve/free, create/release, map/unmap,
 *        set/get access. The table itself is vmm_table.cpp.
 *
 * The property swapalloc passes, and the only one modelled, is pinned device memory:
 * CU_MEM_ALLOCATION_TYPE_PINNED on CU_MEM_LOCATION_TYPE_DEVICE. Requested shareable
 * handle types are accepted and ignored (no export entry point is modelled).
 */
#include "state.hpp"

namespace cudasim {
namespace {

/// Checks a CUmemAllocationProp for device memory; `out` is its device.
[[nodiscard]] CUresult check_property(CUmemAllocationProp const* prop, device*& out) noexcept
{
  if (prop == nullptr || prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
      prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  out = simulator::get().find_device(prop->location.id);
  return out == nullptr ? CUDA_ERROR_INVALID_DEVICE : CUDA_SUCCESS;
}

/// Checks access descriptors: a valid device each, and a flag cuda.h defines.
[[nodiscard]] CUresult check_access(CUmemAccessDesc const* desc, std::size_t count) noexcept
{
  if (desc == nullptr || count == 0) { return CUDA_ERROR_INVALID_VALUE; }
  for (std::size_t i = 0; i < count; ++i) {
    if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE) { return CUDA_ERROR_INVALID_VALUE; }
    if (simulator::get().find_device(desc[i].location.id) == nullptr) {
      return CUDA_ERROR_INVALID_DEVICE;
    }
    if (desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_NONE &&
        desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_READ &&
        desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE) {
      return CUDA_ERROR_INVALID_VALUE;
    }
  }
  return CUDA_SUCCESS;
}

[[nodiscard]] vmm_table& vmm() noexcept { return simulator::get().vmm(); }

}  // namespace
}  // namespace cudasim

using cudasim::api;
using cudasim::entry;

CUresult CUDAAPI cuMemGetAllocationGranularity(size_t* granularity, CUmemAllocationProp const* prop,
                                               CUmemAllocationGranularity_flags option)
{
  return api(entry::mem_get_allocation_granularity, [&] {
    auto const choice = cudasim::enum_value(option);
    if (granularity == nullptr ||
        (choice != cudasim::enum_value(CU_MEM_ALLOC_GRANULARITY_MINIMUM) &&
         choice != cudasim::enum_value(CU_MEM_ALLOC_GRANULARITY_RECOMMENDED))) {
      return CUDA_ERROR_INVALID_VALUE;
    }
    cudasim::device* device = nullptr;
    if (CUresult const bad = cudasim::check_property(prop, device); bad != CUDA_SUCCESS) {
      return bad;
    }
    *granularity = cudasim::granularity;
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuMemAddressReserve(CUdeviceptr* ptr, size_t size, size_t alignment,
                                     CUdeviceptr addr, unsigned long long flags)
{
  return api(entry::mem_address_reserve, [&] {
    if (flags != 0) { return CUDA_ERROR_INVALID_VALUE; }  // "Currently unused, must be zero"
    return cudasim::vmm().reserve(ptr, size, alignment, addr);
  });
}

CUresult CUDAAPI cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
  return api(entry::mem_address_free, [&] { return cudasim::vmm().free_reservation(ptr, size); });
}

CUresult CUDAAPI cuMemCreate(CUmemGenericAllocationHandle* handle, size_t size,
                             CUmemAllocationProp const* prop, unsigned long long flags)
{
  return api(entry::mem_create, [&] {
    if (flags != 0) {
      return CUDA_ERROR_INVALID_VALUE;
    }  // "flags for future use, must be zero now"
    cudasim::device* device = nullptr;
    if (CUresult const bad = cudasim::check_property(prop, device); bad != CUDA_SUCCESS) {
      return bad;
    }
    std::size_t const external = device->external.load(std::memory_order_relaxed);
    std::size_t const limit    = external >= device->capacity ? 0 : device->capacity - external;
    return cudasim::vmm().create(handle, size, device->used, limit);
  });
}

CUresult CUDAAPI cuMemRelease(CUmemGenericAllocationHandle handle)
{
  return api(entry::mem_release, [&] { return cudasim::vmm().release(handle); });
}

CUresult CUDAAPI cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                          CUmemGenericAllocationHandle handle, unsigned long long flags)
{
  return api(entry::mem_map, [&] {
    // offset: "Note: currently must be zero."; flags: "must be zero now".
    if (offset != 0 || flags != 0) { return CUDA_ERROR_INVALID_VALUE; }
    return cudasim::vmm().map(ptr, size, handle);
  });
}

CUresult CUDAAPI cuMemUnmap(CUdeviceptr ptr, size_t size)
{
  return api(entry::mem_unmap, [&] { return cudasim::vmm().unmap(ptr, size); });
}

CUresult CUDAAPI cuMemSetAccess(CUdeviceptr ptr, size_t size, CUmemAccessDesc const* desc,
                                size_t count)
{
  return api(entry::mem_set_access, [&] {
    if (CUresult const bad = cudasim::check_access(desc, count); bad != CUDA_SUCCESS) {
      return bad;
    }
    return cudasim::vmm().set_access(ptr, size, desc, count);
  });
}

CUresult CUDAAPI cuMemGetAccess(unsigned long long* flags, CUmemLocation const* location,
                                CUdeviceptr ptr)
{
  return api(entry::mem_get_access, [&] {
    if (flags == nullptr || location == nullptr || location->type != CU_MEM_LOCATION_TYPE_DEVICE) {
      return CUDA_ERROR_INVALID_VALUE;
    }
    if (cudasim::simulator::get().find_device(location->id) == nullptr) {
      return CUDA_ERROR_INVALID_DEVICE;
    }
    return cudasim::vmm().get_access(flags, location->id, ptr);
  });
}
