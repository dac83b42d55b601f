/**
 * @file unwrapped_entry_points.hpp
 * @brief The driver entry points that PyTorch's ATen resolves besides those of
 *        swapalloc::driver's table (c10/cuda/driver_api.h's required list, and the
 *        cuDevicePrimaryCtxGetState of its CUDA generator), for the conformance tests.
 *
 * swapalloc::driver does not wrap them, so the tests look each up in the loaded driver
 * (`driver::find_symbol`) under the symbol cuda.h maps its name to, typed with cuda.h's
 * own prototype: a changed prototype is a compile error, a missing export a null pointer.
 */
#pragma once

#include <cuda.h>

#include <swapalloc/driver.hpp>

// Two-level stringize: the argument is macro-expanded first, so
// SIM_UNWRAPPED_NAME(cuMemGetAddressRange) is "cuMemGetAddressRange_v2", the symbol
// cuda.h maps the name to.
#define SIM_UNWRAPPED_STRINGIZE(x) #x
#define SIM_UNWRAPPED_NAME(x)      SIM_UNWRAPPED_STRINGIZE(x)

namespace swapalloc::testing {

struct unwrapped_entry_points {
  decltype(&::cuDevicePrimaryCtxGetState) primary_ctx_get_state{};
  decltype(&::cuMemGetAddressRange) mem_get_address_range{};
  decltype(&::cuMemRetainAllocationHandle) mem_retain_allocation_handle{};
  decltype(&::cuMemGetAllocationPropertiesFromHandle) mem_get_allocation_properties{};
  decltype(&::cuMemExportToShareableHandle) mem_export_to_shareable_handle{};
  decltype(&::cuMemImportFromShareableHandle) mem_import_from_shareable_handle{};
  decltype(&::cuStreamWriteValue32) stream_write_value32{};

  unwrapped_entry_points() = default;
  /// Looks every entry point up in `drv`; an absent one stays null.
  explicit unwrapped_entry_points(driver const& drv)
  {
#define SIM_UNWRAPPED_LOOKUP(slot, name) \
  slot = reinterpret_cast<decltype(slot)>(drv.find_symbol(SIM_UNWRAPPED_NAME(name)))
    SIM_UNWRAPPED_LOOKUP(primary_ctx_get_state, cuDevicePrimaryCtxGetState);
    SIM_UNWRAPPED_LOOKUP(mem_get_address_range, cuMemGetAddressRange);
    SIM_UNWRAPPED_LOOKUP(mem_retain_allocation_handle, cuMemRetainAllocationHandle);
    SIM_UNWRAPPED_LOOKUP(mem_get_allocation_properties, cuMemGetAllocationPropertiesFromHandle);
    SIM_UNWRAPPED_LOOKUP(mem_export_to_shareable_handle, cuMemExportToShareableHandle);
    SIM_UNWRAPPED_LOOKUP(mem_import_from_shareable_handle, cuMemImportFromShareableHandle);
    SIM_UNWRAPPED_LOOKUP(stream_write_value32, cuStreamWriteValue32);
#undef SIM_UNWRAPPED_LOOKUP
  }

  /// True when the driver exports every one of them.
  [[nodiscard]] bool complete() const noexcept
  {
    return primary_ctx_get_state != nullptr && mem_get_address_range != nullptr &&
           mem_retain_allocation_handle != nullptr && mem_get_allocation_properties != nullptr &&
           mem_export_to_shareable_handle != nullptr &&
           mem_import_from_shareable_handle != nullptr && stream_write_value32 != nullptr;
  }
};

}  // namespace swapalloc::testing
