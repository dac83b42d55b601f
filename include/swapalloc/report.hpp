/**
 * @file report.hpp
 * @brief What the allocator says about memory: byte counts as text, the statistics as
 *        JSON, the out-of-memory report with its advice (DESIGN §8), the event log's
 *        events as lines and JSON, and the leak report's lines.
 *
 * Formatting over snapshots the allocator takes under its locks: no driver call. Every
 * function is pure except `events_json`, which takes the event log's (leaf) mutex for its
 * snapshot, and `log_to_stderr`, which writes to stderr. It is the only header that
 * includes nlohmann/json.
 *
 * Thread safety: any thread.
 */
#pragma once

#include <swapalloc/errors.hpp>
#include <swapalloc/event_log.hpp>
#include <swapalloc/pool.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
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

/**
 * @brief A device's use and pressure level (policy.hpp pressure_of) against `marks`:
 *   {"level": "WARNING", "use_fraction": 0.8, "own_bytes", "limit_bytes",
 *    "device_used_bytes", "device_total_bytes", "low_watermark", "high_watermark"}.
 */
[[nodiscard]] inline nlohmann::json pressure_json(device_usage usage, watermarks marks)
{
  return nlohmann::json{{"level", to_string(pressure_of(usage, marks))},
                        {"use_fraction", use_fraction(usage)},
                        {"own_bytes", usage.own_bytes},
                        {"limit_bytes", usage.limit_bytes},
                        {"device_used_bytes", usage.device_used},
                        {"device_total_bytes", usage.device_total},
                        {"low_watermark", marks.low},
                        {"high_watermark", marks.high}};
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

/// ", and the device has F free after releasing R of cached pages[, evicting E of pools,]
/// and retrying": what the out-of-memory ladder did before it gave up (bytes).
[[nodiscard]] inline std::string free_after_text(device_memory const& memory, std::size_t released,
                                                 std::size_t evicted = 0)
{
  std::string const freed =
    "releasing " + bytes_text(released) + " of cached pages" +
    (evicted != 0 ? ", evicting " + bytes_text(evicted) + " of pools," : "") + " and retrying";
  if (!memory.known) { return " (after " + freed + ")"; }
  return ", and the device has " + bytes_text(memory.free_bytes) + " free after " + freed;
}

/**
 * @brief The out-of-memory report (DESIGN §8): "swapalloc: out of memory on device D:
 *        <request>; <why>.", a table of the device's pools (allocated, resident,
 *        cached-free, largest-free, evicted and host bytes, and whether eviction can free
 *        them), the device's memory, what would fit now (free plus evictable), and what
 *        the user can do.
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
    message += "  would fit now: up to " + bytes_text(memory.free_bytes + evictable) +
               " (the free " + bytes_text(memory.free_bytes) +
               " plus what evicting every evictable pool would free)\n";
  } else {
    message += "  device memory: unknown (" + memory.unknown_why + ")\n";
  }
  message +=
    "  to make room: evict pools not in use now (allocator::evict: " + bytes_text(evictable) +
    " resident in evictable pools), free tensors, " + "or free memory outside swapalloc; " +
    bytes_text(unevictable) + " resident in pinned or non-evictable pools cannot be evicted\n";
  return message;
}

// ------------------------------------------------------------------ events

/// "850.0 us", "12.3 ms" or "2.50 s" for a duration in seconds (≥ 0). Pure; any thread.
[[nodiscard]] inline std::string duration_text(double seconds)
{
  std::array<char, 32> text{};
  if (seconds < 1e-3) {
    std::snprintf(text.data(), text.size(), "%.1f us", seconds * 1e6);
  } else if (seconds < 1.0) {
    std::snprintf(text.data(), text.size(), "%.1f ms", seconds * 1e3);
  } else {
    std::snprintf(text.data(), text.size(), "%.2f s", seconds);
  }
  return text.data();
}

/// "41.6 GB/s"-style text for bytes per second (powers of 1000, as link speeds are
/// quoted; one decimal; whole bytes below 1 KB/s). Pure; any thread.
[[nodiscard]] inline std::string rate_text(double bytes_per_s)
{
  constexpr std::array<char const*, 5> units{"B/s", "KB/s", "MB/s", "GB/s", "TB/s"};
  std::size_t unit = 0;
  while (bytes_per_s >= 1000.0 && unit + 1 < units.size()) {
    bytes_per_s /= 1000.0;
    ++unit;
  }
  std::array<char, 32> text{};
  std::snprintf(text.data(), text.size(), unit == 0 ? "%.0f %s" : "%.1f %s", bytes_per_s,
                units[unit]);
  return text.data();
}

/**
 * @brief One line for `event`, without a newline: "swapalloc: [info] evict pool 'sdxl' on
 *        device 0: 512.00 MiB in 12.3 ms (43.6 GB/s)". The pool is left out for
 *        device-wide events (shown as "pool #id" when it has no name); the bytes when 0;
 *        the duration when the event was not timed, and the throughput also when no bytes
 *        moved; the detail, when there is one, follows after "; ".
 * Pure; any thread.
 */
[[nodiscard]] inline std::string event_line(swap_event const& event)
{
  std::string line =
    std::string("swapalloc: [") + to_string(event.level) + "] " + to_string(event.kind);
  if (event.pool) {
    line += event.pool_name.empty() ? " pool #" + std::to_string(*event.pool)
                                    : " pool '" + event.pool_name + "'";
  }
  line += " on device " + std::to_string(event.device);
  std::string body;
  if (event.bytes > 0) { body = bytes_text(event.bytes); }
  if (event.duration_s > 0.0) {
    body += (body.empty() ? "took " : " in ") + duration_text(event.duration_s);
    if (event.bytes > 0) { body += " (" + rate_text(event.throughput()) + ")"; }
  }
  if (!event.detail.empty()) { body += (body.empty() ? "" : "; ") + event.detail; }
  if (!body.empty()) { line += ": " + body; }
  return line;
}

/// {"kind", "level", "time_s", "pool" (id, or null for device-wide events), "pool_name",
/// "device", "bytes", "duration_s", "throughput_bytes_per_s", "detail"}; kind and level
/// by their to_string names. Pure; any thread.
[[nodiscard]] inline nlohmann::json to_json(swap_event const& event)
{
  return {{"kind", to_string(event.kind)},
          {"level", to_string(event.level)},
          {"time_s", event.time_s},
          {"pool", event.pool ? nlohmann::json(*event.pool) : nlohmann::json(nullptr)},
          {"pool_name", event.pool_name},
          {"device", event.device},
          {"bytes", event.bytes},
          {"duration_s", event.duration_s},
          {"throughput_bytes_per_s", event.throughput()},
          {"detail", event.detail}};
}

/// {"capacity", "recorded", "dropped" (recorded but overwritten), "events": [oldest
/// first]}, from one snapshot of `log`. Takes the log's mutex. Thread safety: any thread.
[[nodiscard]] inline nlohmann::json events_json(event_log const& log)
{
  event_snapshot const snapshot = log.snapshot();
  nlohmann::json events         = nlohmann::json::array();
  for (swap_event const& event : snapshot.events) {
    events.push_back(to_json(event));
  }
  return {{"capacity", log.capacity()},
          {"recorded", snapshot.recorded},
          {"dropped", snapshot.recorded - snapshot.events.size()},
          {"events", std::move(events)}};
}

/// Writes `event_line(event)` and a newline to stderr in one fputs call, so that lines
/// from several threads do not interleave (stdio locks the stream per call). The sink the
/// allocator installs by default. Errors writing are ignored. Thread safety: any thread.
inline void log_to_stderr(swap_event const& event)
{
  std::string line = event_line(event);
  line += '\n';
  std::fputs(line.c_str(), stderr);
}

// ------------------------------------------------------------------ leaks

/// The most block sizes a leak line lists.
inline constexpr std::size_t leak_sizes_shown = 5;

namespace detail {

/// " (largest 8.00 MiB, 2.00 MiB)" for the first `leak_sizes_shown` sizes; "" for none.
[[nodiscard]] inline std::string largest_text(std::span<std::size_t const> largest)
{
  std::size_t const shown = std::min(largest.size(), leak_sizes_shown);
  std::string text;
  for (std::size_t i = 0; i < shown; ++i) {
    text += (i == 0 ? " (largest " : ", ") + bytes_text(largest[i]);
  }
  if (shown > 0) { text += ")"; }
  return text;
}

}  // namespace detail

/**
 * @brief "3 live blocks (largest 8.00 MiB, 2.00 MiB, 2.00 MiB)": a pool's live blocks at
 *        shutdown with the first `leak_sizes_shown` of `largest` (block sizes in bytes,
 *        largest first; more are not shown; none: no parenthesis). The `detail` of a leak
 *        event, whose `bytes` are the live bytes. Pure; any thread.
 */
[[nodiscard]] inline std::string leak_detail(std::size_t live_blocks,
                                             std::span<std::size_t const> largest)
{
  std::string text =
    std::to_string(live_blocks) + (live_blocks == 1 ? " live block" : " live blocks");
  return text + detail::largest_text(largest);
}

/**
 * @brief The leak report's line for one pool of one device: "pool 'sdxl' on device 0:
 *        3 live blocks, 12.00 MiB (largest 8.00 MiB, 2.00 MiB, 2.00 MiB)". `live_bytes`
 *        is the pool's allocated bytes; `largest` as for `leak_detail`. Pure; any thread.
 */
[[nodiscard]] inline std::string leak_text(std::string_view pool_name, int device,
                                           std::size_t live_blocks, std::size_t live_bytes,
                                           std::span<std::size_t const> largest)
{
  std::string text = "pool '" + std::string(pool_name) + "' on device " + std::to_string(device) +
                     ": " + std::to_string(live_blocks) +
                     (live_blocks == 1 ? " live block, " : " live blocks, ") +
                     bytes_text(live_bytes);
  return text + detail::largest_text(largest);
}

}  // namespace swapalloc
