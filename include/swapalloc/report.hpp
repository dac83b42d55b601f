/**
 * @file report.hpp
 * @brief What the allocator says about memory: byte counts as text, the statistics as
 *        JSON, and the out-of-memory report with its advice (DESIGN §8).
 *
 * Pure formatting over snapshots the allocator takes under its locks: no driver call, no
 * lock. It is the only header that includes nlohmann/json.
 *
 * Thread safety: pure; any thread.
 */
#pragma once

#include <swapalloc/errors.hpp>
#include <swapalloc/pool.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdio>
#include <span>
#include <string>
#include <utility>

namespace swapalloc {

/// "1.50 GiB"-style text (powers of 1024, two decimals; whole bytes below 1 KiB).
[[nodiscard]] inline std::string bytes_text(std::size_t bytes)
{
  constexpr std::array<char const*, 5> units{"B", "KiB", "MiB", "GiB", "TiB"};
  double value     = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < units.size()) {
    value /= 1024.0;
    ++unit;
  }
  std::array<char, 32> text{};
  std::snprintf(text.data(), text.size(), unit == 0 ? "%.0f %s" : "%.2f %s", value, units[unit]);
  return text.data();
}

/// One pool of one device, as the reports show it.
struct pool_row {
  pool_id id{0};
  std::string name;
  pool_stats stats;
  std::string eviction;  ///< "possible", or why not: "no (pinned)", "no (default pool)", ...
};

/// A device's memory as cuMemGetInfo reported it, or why it could not.
struct device_memory {
  bool known{false};
  std::size_t free_bytes{0};
  std::size_t total_bytes{0};
  std::string unknown_why;  ///< the failed call's CUresult, when !known
};

/// Every counter of `s`, by its pool_stats name.
[[nodiscard]] inline nlohmann::json to_json(pool_stats const& s)
{
  return {{"allocated_bytes", s.allocated_bytes},
          {"requested_bytes", s.requested_bytes},
          {"reserved_bytes", s.reserved_bytes},
          {"peak_allocated_bytes", s.peak_allocated_bytes},
          {"peak_reserved_bytes", s.peak_reserved_bytes},
          {"live_blocks", s.live_blocks},
          {"allocations", s.allocations},
          {"frees", s.frees},
          {"cached_free_bytes", s.cached_free_bytes},
          {"largest_free_block", s.largest_free_block},
          {"evicted_bytes", s.evicted_bytes},
          {"restoring_bytes", s.restoring_bytes},
          {"stray_bytes", s.stray_bytes},
          {"host_bytes", s.host_bytes},
          {"evictions", s.evictions},
          {"restores", s.restores}};
}

/// {"device": n, "pools": [{"id", "name", counters...}], "total": {...}}; adds the
/// device's total to `everything`.
[[nodiscard]] inline nlohmann::json device_json(int ordinal, std::span<pool_row const> rows,
                                                pool_stats& everything)
{
  nlohmann::json pools = nlohmann::json::array();
  pool_stats total;
  for (pool_row const& row : rows) {
    nlohmann::json entry = to_json(row.stats);
    entry["id"]          = row.id;
    entry["name"]        = row.name;
    pools.push_back(std::move(entry));
    total += row.stats;
  }
  everything += total;
  return {{"device", ordinal}, {"pools", std::move(pools)}, {"total", to_json(total)}};
}

/// {"total": n, "<kind>": n, ...} of the usage errors counted in `usage`.
[[nodiscard]] inline nlohmann::json usage_json(usage_counters const& usage)
{
  nlohmann::json errors  = nlohmann::json::object();
  std::size_t all_errors = 0;
  for (std::size_t kind = 0; kind < usage_error_kinds; ++kind) {
    std::size_t const count = usage.count(static_cast<usage_error_kind>(kind));
    errors[to_string(static_cast<usage_error_kind>(kind))] = count;
    all_errors += count;
  }
  errors["total"] = all_errors;
  return errors;
}

/// ", and the device has F free after releasing R of cached pages and retrying".
[[nodiscard]] inline std::string free_after_text(device_memory const& memory, std::size_t released)
{
  std::string const freed = "releasing " + bytes_text(released) + " of cached pages and retrying";
  if (!memory.known) { return " (after " + freed + ")"; }
  return ", and the device has " + bytes_text(memory.free_bytes) + " free after " + freed;
}

/**
 * @brief The out-of-memory report (DESIGN §8): "swapalloc: out of memory on device D:
 *        <request>; <why>.", a table of the device's pools (allocated, resident,
 *        cached-free, largest-free, evicted and host bytes, and whether eviction can free
 *        them), the device's memory, and what the user can do.
 */
[[nodiscard]] inline std::string oom_report(int device, std::string const& request,
                                            std::string const& why, std::span<pool_row const> rows,
                                            device_memory const& memory)
{
  std::string message = "swapalloc: out of memory on device " + std::to_string(device) + ": " +
                        request + "; " + why + ".\n";
  std::array<char, 200> line{};
  std::snprintf(line.data(), line.size(), "  %-16s %11s %11s %11s %12s %11s %11s  %s\n", "pool",
                "allocated", "resident", "cached-free", "largest-free", "evicted", "host",
                "eviction");
  message += line.data();
  std::size_t resident    = 0;
  std::size_t evictable   = 0;
  std::size_t unevictable = 0;
  for (pool_row const& row : rows) {
    pool_stats const& counters = row.stats;
    resident += counters.reserved_bytes;
    (row.eviction == "possible" ? evictable : unevictable) += counters.reserved_bytes;
    std::snprintf(
      line.data(), line.size(), "  %-16s %11s %11s %11s %12s %11s %11s  %s\n", row.name.c_str(),
      bytes_text(counters.allocated_bytes).c_str(), bytes_text(counters.reserved_bytes).c_str(),
      bytes_text(counters.cached_free_bytes).c_str(),
      bytes_text(counters.largest_free_block).c_str(), bytes_text(counters.evicted_bytes).c_str(),
      bytes_text(counters.host_bytes).c_str(), row.eviction.c_str());
    message += line.data();
  }
  if (memory.known) {
    std::size_t const used = memory.total_bytes - std::min(memory.total_bytes, memory.free_bytes);
    message += "  device memory: total " + bytes_text(memory.total_bytes) + ", free " +
               bytes_text(memory.free_bytes) + ", resident in these pools " + bytes_text(resident) +
               ", used outside them (other processes, contexts, streams) " +
               bytes_text(used - std::min(used, resident)) + "\n";
  } else {
    message += "  device memory: unknown (" + memory.unknown_why + ")\n";
  }
  message +=
    "  to make room: evict pools not in use now (allocator::evict: " + bytes_text(evictable) +
    " resident in evictable pools), free tensors, " + "or free memory outside swapalloc; " +
    bytes_text(unevictable) + " resident in pinned or non-evictable pools cannot be evicted\n";
  return message;
}

}  // namespace swapalloc
