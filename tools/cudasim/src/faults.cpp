/**
 * @file faults.cpp
 * @brief Call counters and fault injection (SWAPALLOC_SIM_FAIL, cudasimFailCall).
 *
 * A fault with no error fails the way the call most plausibly fails on a GPU (cudasim.h):
 * CUDA_ERROR_OUT_OF_MEMORY for calls that acquire memory or resources;
 * CUDA_ERROR_ILLEGAL_ADDRESS for calls that wait for or query device work, where an
 * earlier asynchronous fault surfaces; CUDA_ERROR_INVALID_VALUE for VMM calls, copies,
 * memsets and the calls that give memory back (cuMemFreeHost, cuMemHostUnregister: both
 * list it); CUDA_ERROR_INVALID_HANDLE, _CONTEXT or _DEVICE for calls whose argument
 * is a stream or event, a context, or a device. Each is in the call's cuda.h list or is
 * the asynchronous error cuda.h says such calls may return.
 */
#include "faults.hpp"

#include "errors.hpp"

#include <algorithm>
#include <charconv>
#include <cstdlib>

namespace cudasim {
namespace {

constexpr CUresult oom     = CUDA_ERROR_OUT_OF_MEMORY;
constexpr CUresult invalid = CUDA_ERROR_INVALID_VALUE;
constexpr CUresult handle  = CUDA_ERROR_INVALID_HANDLE;
constexpr CUresult context = CUDA_ERROR_INVALID_CONTEXT;
constexpr CUresult device  = CUDA_ERROR_INVALID_DEVICE;
constexpr CUresult fault   = CUDA_ERROR_ILLEGAL_ADDRESS;

constexpr std::array<entry_info, entry_count> entries{{
  {entry::init, "cuInit", nullptr, invalid},
  {entry::driver_get_version, "cuDriverGetVersion", nullptr, invalid},
  {entry::get_error_name, "cuGetErrorName", nullptr, invalid},
  {entry::get_error_string, "cuGetErrorString", nullptr, invalid},
  {entry::device_get_count, "cuDeviceGetCount", nullptr, invalid},
  {entry::device_get, "cuDeviceGet", nullptr, device},
  {entry::device_get_name, "cuDeviceGetName", nullptr, device},
  {entry::device_get_attribute, "cuDeviceGetAttribute", nullptr, device},
  {entry::device_total_mem, "cuDeviceTotalMem", "cuDeviceTotalMem_v2", device},
  {entry::primary_ctx_retain, "cuDevicePrimaryCtxRetain", nullptr, oom},
  {entry::primary_ctx_release, "cuDevicePrimaryCtxRelease", "cuDevicePrimaryCtxRelease_v2",
   context},
  {entry::primary_ctx_reset, "cuDevicePrimaryCtxReset", "cuDevicePrimaryCtxReset_v2", context},
  {entry::ctx_get_current, "cuCtxGetCurrent", nullptr, context},
  {entry::ctx_set_current, "cuCtxSetCurrent", nullptr, context},
  {entry::ctx_get_device, "cuCtxGetDevice", nullptr, context},
  {entry::ctx_synchronize, "cuCtxSynchronize", nullptr, fault},
  {entry::mem_get_info, "cuMemGetInfo", "cuMemGetInfo_v2", context},
  {entry::mem_get_allocation_granularity, "cuMemGetAllocationGranularity", nullptr, invalid},
  {entry::mem_address_reserve, "cuMemAddressReserve", nullptr, oom},
  {entry::mem_address_free, "cuMemAddressFree", nullptr, invalid},
  {entry::mem_create, "cuMemCreate", nullptr, oom},
  {entry::mem_release, "cuMemRelease", nullptr, invalid},
  {entry::mem_map, "cuMemMap", nullptr, invalid},
  {entry::mem_unmap, "cuMemUnmap", nullptr, invalid},
  {entry::mem_set_access, "cuMemSetAccess", nullptr, invalid},
  {entry::mem_get_access, "cuMemGetAccess", nullptr, invalid},
  {entry::mem_host_alloc, "cuMemHostAlloc", nullptr, oom},
  {entry::mem_alloc_host, "cuMemAllocHost", "cuMemAllocHost_v2", oom},
  {entry::mem_free_host, "cuMemFreeHost", nullptr, invalid},
  // cuda.h maps cuMemHostRegister to cuMemHostRegister_v2 (the bare symbol is CUDA 4.0's).
  {entry::mem_host_register, "cuMemHostRegister", "cuMemHostRegister_v2", oom},
  {entry::mem_host_unregister, "cuMemHostUnregister", nullptr, invalid},
  {entry::memcpy_htod, "cuMemcpyHtoD", "cuMemcpyHtoD_v2", invalid},
  {entry::memcpy_dtoh, "cuMemcpyDtoH", "cuMemcpyDtoH_v2", invalid},
  {entry::memcpy_dtod, "cuMemcpyDtoD", "cuMemcpyDtoD_v2", invalid},
  {entry::memcpy_htod_async, "cuMemcpyHtoDAsync", "cuMemcpyHtoDAsync_v2", invalid},
  {entry::memcpy_dtoh_async, "cuMemcpyDtoHAsync", "cuMemcpyDtoHAsync_v2", invalid},
  {entry::memcpy_dtod_async, "cuMemcpyDtoDAsync", "cuMemcpyDtoDAsync_v2", invalid},
  {entry::memset_d8, "cuMemsetD8", "cuMemsetD8_v2", invalid},
  {entry::memset_d32, "cuMemsetD32", "cuMemsetD32_v2", invalid},
  {entry::memset_d8_async, "cuMemsetD8Async", nullptr, invalid},
  {entry::memset_d32_async, "cuMemsetD32Async", nullptr, invalid},
  {entry::stream_create, "cuStreamCreate", nullptr, oom},
  {entry::stream_destroy, "cuStreamDestroy", "cuStreamDestroy_v2", handle},
  {entry::stream_synchronize, "cuStreamSynchronize", nullptr, fault},
  {entry::stream_query, "cuStreamQuery", nullptr, fault},
  {entry::stream_wait_event, "cuStreamWaitEvent", nullptr, handle},
  {entry::event_create, "cuEventCreate", nullptr, oom},
  {entry::event_destroy, "cuEventDestroy", "cuEventDestroy_v2", handle},
  {entry::event_record, "cuEventRecord", nullptr, handle},
  {entry::event_query, "cuEventQuery", nullptr, fault},
  {entry::event_synchronize, "cuEventSynchronize", nullptr, fault},
  {entry::event_elapsed_time, "cuEventElapsedTime", "cuEventElapsedTime_v2", handle},
  {entry::launch_host_func, "cuLaunchHostFunc", nullptr, handle},
  {entry::primary_ctx_get_state, "cuDevicePrimaryCtxGetState", nullptr, device},
  {entry::mem_get_address_range, "cuMemGetAddressRange", "cuMemGetAddressRange_v2", invalid},
  {entry::mem_retain_allocation_handle, "cuMemRetainAllocationHandle", nullptr, invalid},
  {entry::mem_get_allocation_properties_from_handle, "cuMemGetAllocationPropertiesFromHandle",
   nullptr, invalid},
  {entry::mem_export_to_shareable_handle, "cuMemExportToShareableHandle", nullptr, invalid},
  {entry::mem_import_from_shareable_handle, "cuMemImportFromShareableHandle", nullptr, invalid},
  {entry::stream_write_value32, "cuStreamWriteValue32", "cuStreamWriteValue32_v2", invalid},
  // cuda.h maps cuMemcpyBatchAsync to cuMemcpyBatchAsync_v2 (CUDA 13.0). The bare symbol of
  // CUDA 12.8/12.9 drivers takes an extra failIdx: another ABI, which the simulator lacks.
  {entry::memcpy_batch_async, "cuMemcpyBatchAsync", "cuMemcpyBatchAsync_v2", invalid},
}};

// The table is indexed by entry: every row must sit at its own enumerator.
constexpr bool table_in_order()
{
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (static_cast<std::size_t>(entries[i].id) != i) { return false; }
  }
  return true;
}
static_assert(table_in_order(), "entries[] must list every entry in enum order");

[[nodiscard]] std::size_t index(entry e) noexcept { return static_cast<std::size_t>(e); }

[[nodiscard]] std::string_view trim(std::string_view text) noexcept
{
  auto const first = text.find_first_not_of(" \t");
  if (first == std::string_view::npos) { return {}; }
  return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

[[nodiscard]] std::optional<std::uint64_t> parse_count(std::string_view text) noexcept
{
  std::uint64_t value      = 0;
  auto const [end, status] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (status != std::errc{} || end != text.data() + text.size()) { return std::nullopt; }
  return value;
}

/// An error given by name ("CUDA_ERROR_INVALID_VALUE") or number ("1"); 0 is the default.
[[nodiscard]] std::optional<CUresult> parse_error(std::string_view text) noexcept
{
  if (auto const named = error_from_name(text)) { return named; }
  auto const number = parse_count(text);
  if (!number) { return std::nullopt; }
  return error_from_code(*number);  // 0 is CUDA_SUCCESS: the default error
}

}  // namespace

std::optional<entry> find_entry(std::string_view name) noexcept
{
  for (entry_info const& info : entries) {
    if (name == info.name || (info.versioned != nullptr && name == info.versioned)) {
      return info.id;
    }
  }
  return std::nullopt;
}

char const* symbol_name(entry e) noexcept
{
  entry_info const& info = entries[index(e)];
  return info.versioned != nullptr ? info.versioned : info.name;
}

fault_injector::fault_injector()
{
  char const* const text = std::getenv("SWAPALLOC_SIM_FAIL");
  if (text != nullptr) { parse_environment(text); }
}

void fault_injector::parse_environment(std::string_view text)
{
  std::vector<fault> parsed;
  while (!text.empty()) {
    auto const comma            = text.find(',');
    std::string_view const item = trim(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    if (item.empty()) { continue; }
    std::optional<fault> const f = parse_fault(item);
    if (!f) {
      environment_error_ =
        "cudasim: SWAPALLOC_SIM_FAIL='" + std::string(item) +
        "' is not a fault: expected entry:nth[:error], where entry is a cuda.h entry point "
        "name (bare or versioned, e.g. cuMemCreate or cuMemGetInfo_v2), nth the call number "
        "counted from 1 at process start, and error a CUresult name (CUDA_ERROR_INVALID_VALUE) "
        "or number; several faults are separated by commas";
      return;
    }
    parsed.push_back(*f);
  }
  for (fault const& f : parsed) {
    add(f.id, f.call, f.error);
  }
}

std::optional<fault_injector::fault> fault_injector::parse_fault(std::string_view item)
{
  auto const colon = item.find(':');
  if (colon == std::string_view::npos) { return std::nullopt; }
  auto const id     = find_entry(trim(item.substr(0, colon)));
  item              = item.substr(colon + 1);
  auto const colon2 = item.find(':');
  auto const nth    = parse_count(trim(item.substr(0, colon2)));
  auto const error  = colon2 == std::string_view::npos ? std::optional<CUresult>(CUDA_SUCCESS)
                                                       : parse_error(trim(item.substr(colon2 + 1)));
  if (!id.has_value() || !nth.has_value() || nth.value() == 0 || !error.has_value()) {
    return std::nullopt;
  }
  return fault{id.value(), nth.value(), error.value()};
}

void fault_injector::add(entry e, std::uint64_t call, CUresult error)
{
  if (error == CUDA_SUCCESS) { error = entries[index(e)].default_error; }
  std::lock_guard lock(mutex_);
  faults_.push_back({e, call, error});
  pending_[index(e)].fetch_add(1, std::memory_order_release);
}

CUresult fault_injector::on_call(entry e) noexcept
{
  std::uint64_t const call = calls_[index(e)].fetch_add(1, std::memory_order_relaxed) + 1;
  if (pending_[index(e)].load(std::memory_order_acquire) == 0) [[likely]] { return CUDA_SUCCESS; }
  std::lock_guard lock(mutex_);
  auto const found = std::find_if(faults_.begin(), faults_.end(),
                                  [&](fault const& f) { return f.id == e && f.call == call; });
  if (found == faults_.end()) { return CUDA_SUCCESS; }
  CUresult const error = found->error;
  faults_.erase(found);
  pending_[index(e)].fetch_sub(1, std::memory_order_relaxed);
  return error;
}

void fault_injector::fail_after(entry e, std::uint64_t nth, CUresult error)
{
  add(e, calls(e) + nth, error);
}

void fault_injector::clear() noexcept
{
  std::lock_guard lock(mutex_);
  faults_.clear();
  for (auto& count : pending_) {
    count.store(0, std::memory_order_relaxed);
  }
}

std::uint64_t fault_injector::calls(entry e) const noexcept
{
  return calls_[index(e)].load(std::memory_order_relaxed);
}

fault_injector& faults()
{
  // Never destroyed: entry points may be called from threads that outlive static
  // destruction (and the exit report runs during it).
  static fault_injector* const injector = new fault_injector();
  return *injector;
}

}  // namespace cudasim

CUresult cudasimFailCall(char const* entry_point, unsigned long long nth, CUresult error)
{
  if (entry_point == nullptr || nth == 0) { return CUDA_ERROR_INVALID_VALUE; }
  auto const id = cudasim::find_entry(entry_point);
  // `error` may hold any integer; only a CUresult that cuda.h names is injected.
  auto const known = cudasim::error_from_code(cudasim::error_code(error));
  if (!id || !known) { return CUDA_ERROR_INVALID_VALUE; }
  try {
    cudasim::faults().fail_after(*id, nth, *known);
  } catch (...) {
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  return CUDA_SUCCESS;
}

void cudasimClearFaults(void) { cudasim::faults().clear(); }

unsigned long long cudasimCallCount(char const* entry_point)
{
  if (entry_point == nullptr) { return 0; }
  auto const id = cudasim::find_entry(entry_point);
  return id ? cudasim::faults().calls(*id) : 0;
}
