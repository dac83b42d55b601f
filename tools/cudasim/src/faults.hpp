/**
 * @file faults.hpp
 * @brief The entry points the simulator exports, their call counters, and injected faults.
 *
 * Every entry point counts its calls and consults the injected faults before anything
 * else (before even the CUDA_ERROR_NOT_INITIALIZED check), so a failing call has no
 * effect at all: state is exactly as before the call (cudasim.h). Faults come from
 * SWAPALLOC_SIM_FAIL ("entry:nth[:error],...", nth counted from process start) and from
 * cudasimFailCall (nth counted from now). An entry point is named by its bare cuda.h
 * name or its versioned symbol: "cuMemGetInfo" and "cuMemGetInfo_v2" are one entry.
 */
#pragma once

#include "cuda_api.hpp"

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cudasim {

/// The entry points of swapalloc::driver_table, in its order, then those that PyTorch's
/// ATen resolves besides (c10/cuda/driver_api.h, and its CUDA generator's
/// cuDevicePrimaryCtxGetState), which swapalloc::driver does not wrap, then the entry points
/// of CUDA 12.8 and later (cuMemcpyBatchAsync_v2), which drivers before it lack.
enum class entry : std::uint8_t {
  init,
  driver_get_version,
  get_error_name,
  get_error_string,
  device_get_count,
  device_get,
  device_get_name,
  device_get_attribute,
  device_total_mem,
  primary_ctx_retain,
  primary_ctx_release,
  primary_ctx_reset,
  ctx_get_current,
  ctx_set_current,
  ctx_get_device,
  ctx_synchronize,
  mem_get_info,
  mem_get_allocation_granularity,
  mem_address_reserve,
  mem_address_free,
  mem_create,
  mem_release,
  mem_map,
  mem_unmap,
  mem_set_access,
  mem_get_access,
  mem_host_alloc,
  mem_alloc_host,
  mem_free_host,
  mem_host_register,
  mem_host_unregister,
  memcpy_htod,
  memcpy_dtoh,
  memcpy_dtod,
  memcpy_htod_async,
  memcpy_dtoh_async,
  memcpy_dtod_async,
  memset_d8,
  memset_d32,
  memset_d8_async,
  memset_d32_async,
  stream_create,
  stream_destroy,
  stream_synchronize,
  stream_query,
  stream_wait_event,
  event_create,
  event_destroy,
  event_record,
  event_query,
  event_synchronize,
  event_elapsed_time,
  launch_host_func,
  // Not in swapalloc::driver_table.
  primary_ctx_get_state,
  mem_get_address_range,
  mem_retain_allocation_handle,
  mem_get_allocation_properties_from_handle,
  mem_export_to_shareable_handle,
  mem_import_from_shareable_handle,
  stream_write_value32,
  // CUDA 12.8 and later; CUDA 13.0's ABI (libcudasim_r550.so does not export it).
  memcpy_batch_async,
  count_
};

inline constexpr std::size_t entry_count = static_cast<std::size_t>(entry::count_);

/// How an entry point is named, and how it fails when a fault names no error.
struct entry_info {
  entry id;
  char const* name;       ///< cuda.h's bare name, "cuMemGetInfo"
  char const* versioned;  ///< the exported symbol when cuda.h maps the name, else nullptr
  CUresult default_error;
};

/// The entry with cuda.h name or versioned symbol `name`.
[[nodiscard]] std::optional<entry> find_entry(std::string_view name) noexcept;

/// The exported symbol of `e` ("cuMemGetInfo_v2").
[[nodiscard]] char const* symbol_name(entry e) noexcept;

/// Call counters and pending faults of every entry point. Thread-safe.
class fault_injector {
 public:
  /// Reads SWAPALLOC_SIM_FAIL; a malformed value is kept for cuInit to report.
  fault_injector();

  /// Counts one call of `e`; returns the error injected for this call, else CUDA_SUCCESS.
  [[nodiscard]] CUresult on_call(entry e) noexcept;

  /// Makes the `nth` call of `e` from now fail with `error` (0: its default error).
  void fail_after(entry e, std::uint64_t nth, CUresult error);

  /// Forgets every pending fault.
  void clear() noexcept;

  /// Calls of `e` so far.
  [[nodiscard]] std::uint64_t calls(entry e) const noexcept;

  /// Why SWAPALLOC_SIM_FAIL was rejected; empty when it was accepted or unset.
  [[nodiscard]] std::string const& environment_error() const noexcept { return environment_error_; }

 private:
  struct fault {
    entry id;
    std::uint64_t call;  ///< the absolute call number that fails
    CUresult error;
  };

  void add(entry e, std::uint64_t call, CUresult error);
  void parse_environment(std::string_view text);
  [[nodiscard]] static std::optional<fault> parse_fault(std::string_view item);

  std::array<std::atomic<std::uint64_t>, entry_count> calls_{};
  // Faults pending per entry, so that a call with none takes no lock.
  std::array<std::atomic<std::uint32_t>, entry_count> pending_{};
  std::mutex mutex_;
  std::vector<fault> faults_;  // guarded by mutex_
  std::string environment_error_;
};

/// The process-wide injector, created (and SWAPALLOC_SIM_FAIL read) at the first call.
[[nodiscard]] fault_injector& faults();

}  // namespace cudasim
