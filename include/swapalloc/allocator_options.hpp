/**
 * @file allocator_options.hpp
 * @brief The allocator's settings (`allocator_options`) and how they resolve: a value left
 *        0 (or unset) takes the environment's (config.hpp reads every SWAPALLOC_* variable
 *        once), else the default. Explicit values win over the environment.
 *
 * Thread safety: plain data and pure functions (resolve_options reads the environment).
 */
#pragma once

#include <swapalloc/compression_policy.hpp>
#include <swapalloc/config.hpp>
#include <swapalloc/errors.hpp>
#include <swapalloc/event_log.hpp>
#include <swapalloc/host_store.hpp>
#include <swapalloc/policy.hpp>
#include <swapalloc/report.hpp>
#include <swapalloc/room_maker.hpp>
#include <swapalloc/transfer.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <limits>
#include <optional>
#include <string>

namespace swapalloc {

/// Allocator-wide settings; 0 takes the default. Explicit values win over the environment.
struct allocator_options {
  std::size_t capacity{0};   ///< bytes reserved per pool and device; 0: 2 × the device's memory
  std::size_t page_size{0};  ///< bytes per page; 0: the allocation granularity
  /// Each device's host store; limit 0: SWAPALLOC_HOST_LIMIT, else ½ RAM. Emptied pinned
  /// slabs are all kept warm (bounded by the limit) and given back after
  /// `host.idle_release` idle (by a running pressure_monitor), at empty_cache, or when the
  /// host runs short of memory. `host.pin` automatic: SWAPALLOC_HOST_PIN, else registered
  /// where the device supports it.
  host_store_options host{.warm_bytes = std::numeric_limits<std::size_t>::max()};
  /// Compression and decompression threads; 0: SWAPALLOC_WORKERS, else cores − 1 (≤ 48:
  /// config.hpp default_worker_count).
  std::size_t workers{0};
  /// Bound of each device's handle_cache: unmapped pages an allocation's or a restore's
  /// evictions hand to its own maps (handle_cache.hpp), held for that operation only.
  /// 0 turns it off.
  std::size_t handle_cache_bytes{std::numeric_limits<std::size_t>::max()};
  /// The transfer engines' settings; staging_slots 0: 2 × workers, at least 16 and at most
  /// 64, so that every worker can decode a restore's chunk into a slot while the link
  /// copies out of the others (issue 14: restore decoding may use every core). Each slot
  /// is 1 MiB of pinned memory per device, outside the host budget.
  transfer_options transfer{.staging_slots = 0};
  /// How long a pool idles before its raw host copies are compressed (an eviction that
  /// the host budget cannot hold raw compresses behind at once: compression_policy.hpp);
  /// unset: SWAPALLOC_COMPRESS_AFTER, else 30 s. 0: every eviction compresses behind its
  /// copies. Accepted: 0 to 24 hours.
  std::optional<std::chrono::milliseconds> compress_after;
  /// The policy's watermarks, fractions of the limit (DESIGN §8); 0: SWAPALLOC_HIGH and
  /// SWAPALLOC_LOW, else 0.85 and 0.75. Accepted: 0 < low < high <= 1.
  double high_watermark{0};
  double low_watermark{0};
  /// What this process may hold per device; unset: SWAPALLOC_DEVICE_LIMIT, else the total.
  std::optional<swapalloc::device_limit> device_limit;
  /// false: pools are evicted only when asked (`evict`, `ensure_free`, a pressure
  /// monitor), and an allocation or restore that finds the device full only releases
  /// cached pages before its retry (the behaviour before the policy; the swap tier's model
  /// test runs so).
  bool automatic_eviction{true};
  /// Events kept in the event log's ring (event_log.hpp); 0: 1024.
  std::size_t log_capacity{0};
  /// The level at which events reach `log_sink`; unset: SWAPALLOC_LOG, else warn.
  std::optional<swapalloc::log_level> log_level;
  /// Where events at `log_level` or above go; empty: one line each on stderr (report.hpp
  /// log_to_stderr). It runs on the thread that caused the event, possibly under a
  /// device's lock: it must be short and must not call the allocator.
  event_sink log_sink;
  bool read_environment{true};  ///< false: ignore every SWAPALLOC_* variable (config.hpp)
};

/// The default capacity of the event log's ring, in events.
inline constexpr std::size_t default_log_capacity = 1024;

/**
 * @brief `options` with the environment's settings (unless `read_environment` is false)
 *        and then the defaults where it leaves them 0 or unset.
 * @throws config_error for a SWAPALLOC_* value that is not accepted, naming it.
 */
[[nodiscard]] inline allocator_options resolve_options(allocator_options options)
{
  environment_settings const env =
    options.read_environment ? read_environment() : environment_settings{};
  if (options.host.limit_bytes == 0 && env.host_limit_bytes) {
    options.host.limit_bytes = *env.host_limit_bytes;
  }
  if (options.host.pin == pin_method::automatic && env.host_pin) {
    options.host.pin = *env.host_pin;
  }
  if (options.workers == 0) { options.workers = env.workers.value_or(default_worker_count()); }
  if (options.transfer.staging_slots == 0) {
    options.transfer.staging_slots = std::clamp<std::size_t>(2 * options.workers, 16, 64);
  }
  if (options.high_watermark == 0) { options.high_watermark = env.high.value_or(0.85); }
  if (options.low_watermark == 0) { options.low_watermark = env.low.value_or(0.75); }
  if (!options.device_limit) { options.device_limit = env.device; }
  if (options.log_capacity == 0) { options.log_capacity = default_log_capacity; }
  if (!options.log_level) { options.log_level = env.log.value_or(log_level::warn); }
  if (!options.compress_after) {
    options.compress_after = env.compress_after.value_or(compression_settings{}.idle_delay);
  }
  return options;
}

/// The event log's options out of resolved allocator options: stderr when no sink.
[[nodiscard]] inline event_log_options log_options_of(allocator_options const& options)
{
  event_log_options out;
  out.capacity = options.log_capacity;
  out.level    = options.log_level.value_or(log_level::warn);
  out.sink     = options.log_sink ? options.log_sink : event_sink(log_to_stderr);
  return out;
}

/**
 * @brief The room maker's settings out of resolved options.
 * @throws config_error ("watermarks") unless 0 < low < high <= 1; ("compress_after")
 *         unless it is 0 to 24 hours.
 */
[[nodiscard]] inline room_settings room_settings_of(allocator_options const& options)
{
  watermarks const marks{options.low_watermark, options.high_watermark};
  if (std::string const problem = watermark_problem(marks); !problem.empty()) {
    throw config_error("watermarks", "swapalloc: allocator_options: " + problem);
  }
  compression_settings compression;
  compression.idle_delay = options.compress_after.value_or(compression.idle_delay);
  if (compression.idle_delay.count() < 0 || compression.idle_delay > max_idle_delay) {
    throw config_error("compress_after", "swapalloc: allocator_options: compress_after=" +
                                           std::to_string(compression.idle_delay.count()) +
                                           " ms is out of range: accepted 0 to " +
                                           std::to_string(max_idle_delay.count()) +
                                           " ms (24 hours)");
  }
  return room_settings{marks,
                       options.device_limit,
                       options.automatic_eviction,
                       pool_defaults{options.capacity, options.page_size},
                       options.host,
                       options.transfer,
                       options.workers,
                       compression};
}

}  // namespace swapalloc
