/**
 * @file vmm.cpp
 * @brief The VMM entry points: granularity, reserve/free, create/release, map/unmap,
 *        set/get access, retain, properties, address range, export/import. The table
 *        itself is vmm_table.cpp.
 *
 * The property swapalloc passes, and the only one modelled, is pinned device memory:
 * CU_MEM_ALLOCATION_TYPE_PINNED on CU_MEM_LOCATION_TYPE_DEVICE. Requested shareable
 * handle types are accepted and kept (cuMemGetAllocationPropertiesFromHandle returns
 * them), but there is no IPC: export and import check their arguments, then answer
 * CUDA_ERROR_NOT_SUPPORTED.
 *
 * Error codes follow what a real driver returned (H100, driver 580.159.04, CUDA 13.0)
 * where cuda.h is silent or lists several: cuMemGetAllocationGranularity does not check
 * the allocation or location type; cuMemMap answers CUDA_ERROR_NOT_SUPPORTED for a
 * non-zero offset or a size other than the handle's; cuMemSetAccess answers
 * CUDA_ERROR_INVALID_VALUE (not _INVALID_DEVICE) for a descriptor naming no device.
 */
#include "profile.hpp"
#include "state.hpp"

#include <cstdint>

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

/// Checks access descriptors: a valid device each, and a flag cuda.h defines. A device
/// that does not exist is CUDA_ERROR_INVALID_VALUE, as on the real driver (H100, driver
/// 580.159.04), although cuda.h also lists CUDA_ERROR_INVALID_DEVICE.
[[nodiscard]] CUresult check_access(CUmemAccessDesc const* desc, std::size_t count) noexcept
{
  if (desc == nullptr || count == 0) { return CUDA_ERROR_INVALID_VALUE; }
  for (std::size_t i = 0; i < count; ++i) {
    if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE ||
        simulator::get().find_device(desc[i].location.id) == nullptr) {
      return CUDA_ERROR_INVALID_VALUE;
    }
    if (desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_NONE &&
        desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_READ &&
        desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE) {
      return CUDA_ERROR_INVALID_VALUE;
    }
  }
  return CUDA_SUCCESS;
}

/// A shareable handle type cuda.h defines (CUmemAllocationHandleType, one type).
[[nodiscard]] bool shareable_type(CUmemAllocationHandleType const& type) noexcept
{
  auto const value = enum_value(type);
  return value == enum_value(CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) ||
         value == enum_value(CU_MEM_HANDLE_TYPE_WIN32) ||
         value == enum_value(CU_MEM_HANDLE_TYPE_WIN32_KMT) ||
         value == enum_value(CU_MEM_HANDLE_TYPE_FABRIC);
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
    if (granularity == nullptr || prop == nullptr ||
        (choice != cudasim::enum_value(CU_MEM_ALLOC_GRANULARITY_MINIMUM) &&
         choice != cudasim::enum_value(CU_MEM_ALLOC_GRANULARITY_RECOMMENDED))) {
      return CUDA_ERROR_INVALID_VALUE;
    }
    // Lenient like the real driver (H100, driver 580.159.04 returned CUDA_SUCCESS for
    // CU_MEM_ALLOCATION_TYPE_INVALID and for CU_MEM_LOCATION_TYPE_INVALID): the type and
    // the location type are not checked; cuMemCreate checks them. A device location
    // must still name a device (the simulator's choice; cuda.h does not say).
    if (prop->location.type == CU_MEM_LOCATION_TYPE_DEVICE &&
        cudasim::simulator::get().find_device(prop->location.id) == nullptr) {
      return CUDA_ERROR_INVALID_DEVICE;
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
    cudasim::charge(entry::mem_create, size);
    if (flags != 0) {
      return CUDA_ERROR_INVALID_VALUE;
    }  // "flags for future use, must be zero now"
    cudasim::device* device = nullptr;
    if (CUresult const bad = cudasim::check_property(prop, device); bad != CUDA_SUCCESS) {
      return bad;
    }
    std::size_t const external = device->external.load(std::memory_order_relaxed);
    std::size_t const limit    = external >= device->capacity ? 0 : device->capacity - external;
    return cudasim::vmm().create(handle, size, *prop, device->used, limit);
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
    cudasim::charge(entry::mem_map, size);
    if (flags != 0) { return CUDA_ERROR_INVALID_VALUE; }  // "must be zero now"
    // offset: "Note: currently must be zero" -- CUDA_ERROR_NOT_SUPPORTED on the real
    // driver (H100, driver 580.159.04), checked with the size in vmm_table::map.
    return cudasim::vmm().map(ptr, size, offset, handle);
  });
}

CUresult CUDAAPI cuMemUnmap(CUdeviceptr ptr, size_t size)
{
  return api(entry::mem_unmap, [&] {
    cudasim::charge(entry::mem_unmap, size);
    return cudasim::vmm().unmap(ptr, size);
  });
}

CUresult CUDAAPI cuMemSetAccess(CUdeviceptr ptr, size_t size, CUmemAccessDesc const* desc,
                                size_t count)
{
  return api(entry::mem_set_access, [&] {
    cudasim::charge(entry::mem_set_access, size);
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

CUresult CUDAAPI cuMemRetainAllocationHandle(CUmemGenericAllocationHandle* handle, void* addr)
{
  return api(entry::mem_retain_allocation_handle,
             [&] { return cudasim::vmm().retain(handle, reinterpret_cast<std::uintptr_t>(addr)); });
}

CUresult CUDAAPI cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp* prop,
                                                        CUmemGenericAllocationHandle handle)
{
  return api(entry::mem_get_allocation_properties_from_handle,
             [&] { return cudasim::vmm().properties(prop, handle); });
}

CUresult CUDAAPI cuMemGetAddressRange(CUdeviceptr* pbase, size_t* psize, CUdeviceptr dptr)
{
  return api(entry::mem_get_address_range, [&] {
    // cuda.h lists CUDA_ERROR_INVALID_CONTEXT: like cuMemGetInfo, it needs a current
    // context (VMM calls do not).
    CUctx_st* context = nullptr;
    if (CUresult const bad = cudasim::use_current_context(context); bad != CUDA_SUCCESS) {
      return bad;
    }
    // "Both parameters pbase and psize are optional. If one of them is NULL, it is ignored."
    return cudasim::vmm().address_range(pbase, psize, dptr);
  });
}

CUresult CUDAAPI cuMemExportToShareableHandle(void* shareableHandle,
                                              CUmemGenericAllocationHandle handle,
                                              CUmemAllocationHandleType handleType,
                                              unsigned long long flags)
{
  return api(entry::mem_export_to_shareable_handle, [&] {
    // flags: "Reserved, must be zero".
    if (shareableHandle == nullptr || flags != 0 || !cudasim::shareable_type(handleType) ||
        !cudasim::vmm().live(handle)) {
      return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_ERROR_NOT_SUPPORTED;  // no IPC in the simulator (README)
  });
}

CUresult CUDAAPI cuMemImportFromShareableHandle(CUmemGenericAllocationHandle* handle,
                                                void* osHandle,
                                                CUmemAllocationHandleType shHandleType)
{
  return api(entry::mem_import_from_shareable_handle, [&] {
    // A POSIX file descriptor is passed as the value of osHandle, so null is descriptor
    // 0; for the other types osHandle points to (or is) the OS handle.
    bool const by_value = cudasim::enum_value(shHandleType) ==
                          cudasim::enum_value(CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
    if (handle == nullptr || !cudasim::shareable_type(shHandleType) ||
        (osHandle == nullptr && !by_value)) {
      return CUDA_ERROR_INVALID_VALUE;
    }
    // cuda.h: "If the current process cannot support the memory described by this
    // shareable handle, this API will error as CUDA_ERROR_NOT_SUPPORTED."
    return CUDA_ERROR_NOT_SUPPORTED;
  });
}
