/**
 * @file plugin_settings.hpp
 * @brief What swapalloc_configure sets before swapalloc_init: allocator options, the
 *        monitor's interval and the driver library, each parsed by config.hpp's parsers so
 *        that a value means the same as in its SWAPALLOC_* variable.
 *
 * Precedence at init: a configured value, else the SWAPALLOC_* variable, else the default
 * (allocator_options.hpp resolve_options: an option left unset is read from the
 * environment).
 *
 * Thread safety: none; the plugin guards its one plugin_settings with its lifecycle mutex.
 */
#pragma once

#include "abi_status.hpp"

#include <swapalloc/allocator_options.hpp>
#include <swapalloc/config.hpp>
#include <swapalloc/pressure_monitor.hpp>

#include <array>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace swapalloc::plugin {

/// The settings of the next swapalloc_init.
struct plugin_settings {
  allocator_options options;  ///< unset fields: the environment's, else the defaults
  monitor_options monitor;
  std::optional<std::string> driver_library;  ///< unset: SWAPALLOC_CUDA_DRIVER, else libcuda.so.1
  /// The stats file's period for `python -m swapalloc ps` (stats_publisher.hpp); 0: none.
  std::chrono::milliseconds stats_interval{1000};
};

/// The keys swapalloc_configure accepts, in the order its error message lists them.
inline constexpr std::array<std::string_view, 9> setting_keys{
  "high_watermark", "low_watermark",       "device_limit",      "host_limit", "workers",
  "log_level",      "monitor_interval_ms", "stats_interval_ms", "driver"};

/// @throws abi_error (INVALID_VALUE) naming `key` and listing the accepted keys.
[[noreturn]] inline void throw_unknown_key(std::string_view key)
{
  std::string known;
  for (std::string_view const name : setting_keys) {
    known += (known.empty() ? "" : ", ") + std::string(name);
  }
  throw abi_error(
    SWAPALLOC_ERROR_INVALID_VALUE,
    "swapalloc_configure: unknown key \"" + std::string(key) + "\" (accepted: " + known + ")");
}

/// Unsets `key` in `settings`: the SWAPALLOC_* variable, else the default, applies again.
/// @throws abi_error (INVALID_VALUE) for an unknown key.
inline void reset_setting(plugin_settings& settings, std::string_view key)
{
  allocator_options& o = settings.options;
  if (key == "high_watermark") {
    o.high_watermark = 0;
  } else if (key == "low_watermark") {
    o.low_watermark = 0;
  } else if (key == "device_limit") {
    o.device_limit.reset();
  } else if (key == "host_limit") {
    o.host.limit_bytes = 0;
  } else if (key == "workers") {
    o.workers = 0;
  } else if (key == "log_level") {
    o.log_level.reset();
  } else if (key == "monitor_interval_ms") {
    settings.monitor.interval = monitor_options{}.interval;
  } else if (key == "stats_interval_ms") {
    settings.stats_interval = plugin_settings{}.stats_interval;
  } else if (key == "driver") {
    settings.driver_library.reset();
  } else {
    throw_unknown_key(key);
  }
}

/**
 * @brief Sets `key` to `value` in `settings` (an empty value unsets it: reset_setting).
 * @throws abi_error (INVALID_VALUE) for an unknown key, listing the keys; config_error
 *         (mapped to INVALID_VALUE) for a value its parser refuses, naming key and value.
 */
inline void apply_setting(plugin_settings& settings, std::string_view key, std::string_view value)
{
  allocator_options& o = settings.options;
  if (value.empty()) {
    reset_setting(settings, key);
  } else if (key == "high_watermark") {
    o.high_watermark = parse_watermark(value, key);
  } else if (key == "low_watermark") {
    o.low_watermark = parse_watermark(value, key);
  } else if (key == "device_limit") {
    o.device_limit = parse_device_limit(value, key);
  } else if (key == "host_limit") {
    o.host.limit_bytes = parse_host_limit(value, physical_memory_bytes(), key);
  } else if (key == "workers") {
    o.workers = parse_worker_count(value, key);
  } else if (key == "log_level") {
    o.log_level = parse_log_level(value, key);
  } else if (key == "monitor_interval_ms") {
    settings.monitor.interval = parse_interval_ms(value, key);
  } else if (key == "stats_interval_ms") {
    settings.stats_interval =
      value == "0" ? std::chrono::milliseconds(0) : parse_interval_ms(value, key);
  } else if (key == "driver") {
    settings.driver_library = std::string(value);
  } else {
    throw_unknown_key(key);
  }
}

}  // namespace swapalloc::plugin
