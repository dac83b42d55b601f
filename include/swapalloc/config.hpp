/**
 * @file config.hpp
 * @brief Every `SWAPALLOC_*` setting of the library: its name, its parser, and the one
 *        function that reads them all from the environment (`read_environment`).
 *
 * | variable                | accepted                                     | default        |
 * |-------------------------|----------------------------------------------|----------------|
 * | SWAPALLOC_CUDA_DRIVER   | a library path                               | libcuda.so.1   |
 * | SWAPALLOC_HIGH          | a fraction in (0, 1]                         | 0.85           |
 * | SWAPALLOC_LOW           | a fraction in (0, 1), below SWAPALLOC_HIGH   | 0.75           |
 * | SWAPALLOC_DEVICE_LIMIT  | bytes (6GiB, 512M, 1073741824) or a fraction | device's total |
 * | SWAPALLOC_HOST_LIMIT    | bytes, a fraction or percentage of RAM       | half of RAM    |
 * | SWAPALLOC_WORKERS       | a whole number from 1 to 256                 | cores - 1, ≤ 48|
 * | SWAPALLOC_LOG           | off, error, warn, info, debug                | warn           |
 * | SWAPALLOC_COMPRESS_AFTER| seconds from 0 to 86400 (30, 2.5)            | 30             |
 * | SWAPALLOC_HOST_PIN      | register, alloc                              | register (1)   |
 *
 * (1) where the device supports registering host memory, else alloc (host_store.hpp).
 *
 * An unset or empty variable takes the default. A value that is not accepted throws
 * `config_error` naming the variable, the value and what is accepted, before anything
 * is set up. The simulator's own `SWAPALLOC_SIM_*` variables belong to tools/cudasim.
 *
 * The library reads the environment in two places only, both through this header: the
 * driver's library path when a `driver` is default-constructed, and the rest when an
 * `allocator` is constructed (`allocator_options`, whose explicit values win).
 *
 * Thread safety: the parsers are pure. `read_environment` calls `std::getenv`, which is
 * safe unless another thread changes the environment at the same time.
 */
#pragma once

#include <swapalloc/errors.hpp>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>

namespace swapalloc {

inline constexpr char const* driver_variable         = "SWAPALLOC_CUDA_DRIVER";
inline constexpr char const* high_variable           = "SWAPALLOC_HIGH";
inline constexpr char const* low_variable            = "SWAPALLOC_LOW";
inline constexpr char const* device_limit_variable   = "SWAPALLOC_DEVICE_LIMIT";
inline constexpr char const* host_limit_variable     = "SWAPALLOC_HOST_LIMIT";
inline constexpr char const* workers_variable        = "SWAPALLOC_WORKERS";
inline constexpr char const* log_variable            = "SWAPALLOC_LOG";
inline constexpr char const* compress_after_variable = "SWAPALLOC_COMPRESS_AFTER";
inline constexpr char const* host_pin_variable       = "SWAPALLOC_HOST_PIN";

/// The driver library loaded when SWAPALLOC_CUDA_DRIVER is unset or empty.
inline constexpr char const* default_driver_library = "libcuda.so.1";

/// Bytes of physical RAM (sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGE_SIZE)); 0 when the
/// OS does not say. Thread safety: any thread.
[[nodiscard]] inline std::size_t physical_memory_bytes()
{
  long const pages     = ::sysconf(_SC_PHYS_PAGES);
  long const page_size = ::sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page_size <= 0) { return 0; }
  return static_cast<std::size_t>(pages) * static_cast<std::size_t>(page_size);
}

/// Bytes of memory the host can still give without swapping: /proc/meminfo's MemAvailable,
/// else the free pages (sysconf), else 0 when neither can be read.
[[nodiscard]] inline std::size_t available_memory_bytes()
{
  if (std::FILE* const file = std::fopen("/proc/meminfo", "r")) {
    char line[128];
    unsigned long long kib = 0;
    bool found             = false;
    while (!found && std::fgets(line, sizeof(line), file) != nullptr) {
      found = std::sscanf(line, "MemAvailable: %llu kB", &kib) == 1;
    }
    std::fclose(file);
    if (found) { return static_cast<std::size_t>(kib) * 1024; }
  }
  long const pages     = ::sysconf(_SC_AVPHYS_PAGES);
  long const page_size = ::sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page_size <= 0) { return 0; }
  return static_cast<std::size_t>(pages) * static_cast<std::size_t>(page_size);
}

/// How much a log line must matter to be written; `off` writes none.
enum class log_level : std::uint8_t { off, error, warn, info, debug };

[[nodiscard]] constexpr char const* to_string(log_level level) noexcept
{
  constexpr std::array<char const*, 5> names{"off", "error", "warn", "info", "debug"};
  return names[static_cast<std::size_t>(level)];
}

/**
 * How the host store pins a slab (host_store.hpp). Registering is the faster route:
 * 8 GiB pinned in 1.09 s (8 touch threads) against 2.74 s by cuMemHostAlloc on an H100
 * host (ai-dynamo/dynamo#13710; ../shared/notes/gpu-speed.md §3.1), and PyTorch's host
 * allocator offers it (`pinned_use_cuda_host_register`) to avoid cudaHostAlloc's lock.
 */
enum class pin_method : std::uint8_t {
  automatic,      ///< host_register where the device supports it, else host_alloc
  host_alloc,     ///< cuMemHostAlloc of each slab
  host_register,  ///< mmap, a first touch of every page by several threads, cuMemHostRegister
};

[[nodiscard]] constexpr char const* to_string(pin_method method) noexcept
{
  constexpr std::array<char const*, 3> names{"automatic", "alloc", "register"};
  return names[static_cast<std::size_t>(method)];
}

namespace detail {

[[noreturn]] inline void reject(std::string_view what, std::string_view text,
                                std::string_view problem, std::string_view accepted)
{
  throw config_error(std::string(what), "swapalloc: " + std::string(what) + "=\"" +
                                          std::string(text) + "\" " + std::string(problem) +
                                          ": accepted " + std::string(accepted));
}

inline constexpr std::string_view host_limit_accepted =
  "are a byte count with an optional K, M, G or T suffix (powers of 1024, e.g. 1073741824, 512M, "
  "8G), a fraction of physical RAM in (0, 1] (e.g. 0.5), a percentage in (0, 100] (e.g. 50%), or "
  "0 or empty for the default (half of physical RAM)";

inline constexpr std::string_view device_limit_accepted =
  "are a byte count with an optional K, M, G or T suffix, also as KiB, MiB, GiB or TiB (powers "
  "of 1024, e.g. 6GiB, 512M, 1073741824), a fraction of the device's memory in (0, 1] (e.g. "
  "0.5), or empty for the device's total";

/// A number written with a decimal point, digits first ("0.5", not ".5", "-1", "nan").
[[nodiscard]] inline std::optional<double> decimal(std::string_view text) noexcept
{
  if (text.empty() || text.front() < '0' || text.front() > '9') { return std::nullopt; }
  double value = 0.0;
  auto const [p, e] =
    std::from_chars(text.data(), text.data() + text.size(), value, std::chars_format::fixed);
  if (e != std::errc() || p != text.data() + text.size()) { return std::nullopt; }
  return value;
}

/// Bytes with an optional K/M/G/T suffix (also KiB..TiB when `long_units`); nullopt when
/// malformed; SIZE_MAX when too large.
[[nodiscard]] inline std::optional<std::size_t> byte_count(std::string_view text, bool long_units)
{
  if (long_units && text.size() > 3 && (text.ends_with("iB") || text.ends_with("ib"))) {
    text.remove_suffix(2);
  }
  constexpr std::string_view suffixes = "KMGT";  // 2^10, 2^20, 2^30, 2^40
  unsigned shift                      = 0;
  if (!text.empty()) {
    char const upper = static_cast<char>(text.back() & ~0x20);
    if (auto const at = suffixes.find(upper); at != std::string_view::npos) {
      shift = 10 * static_cast<unsigned>(at + 1);
    }
  }
  if (shift != 0) { text.remove_suffix(1); }
  std::size_t value = 0;
  auto const [p, e] = std::from_chars(text.data(), text.data() + text.size(), value, 10);
  if (e == std::errc::result_out_of_range) { return std::numeric_limits<std::size_t>::max(); }
  if (e != std::errc() || p != text.data() + text.size() || text.empty()) { return std::nullopt; }
  if (value > (std::numeric_limits<std::size_t>::max() >> shift)) {
    return std::numeric_limits<std::size_t>::max();
  }
  return value << shift;
}

}  // namespace detail

/**
 * @brief Parses a host memory budget. "0" or "" give 0 (the caller's default). A whole
 *        number with an optional suffix K, M, G or T (either case; powers of 1024) is
 *        bytes; a number with a decimal point is a fraction of `ram_bytes` in (0, 1]; a
 *        number followed by '%' is a percentage of `ram_bytes` in (0, 100]. Fractions are
 *        rounded down to whole bytes. No spaces.
 * @throws config_error naming the variable `what`, the text, and what is accepted.
 * Thread safety: pure.
 */
[[nodiscard]] inline std::size_t parse_host_limit(std::string_view text, std::size_t ram_bytes,
                                                  std::string_view what = host_limit_variable)
{
  if (text.empty()) { return 0; }
  bool const percent = text.back() == '%';
  if (percent || text.find('.') != std::string_view::npos) {
    auto const value = detail::decimal(percent ? text.substr(0, text.size() - 1) : text);
    if (!value) { detail::reject(what, text, "is not a number", detail::host_limit_accepted); }
    double const share = percent ? *value / 100.0 : *value;
    if (!(share > 0.0 && share <= 1.0)) {
      detail::reject(what, text,
                     percent ? "is not a percentage in (0, 100]" : "is not a fraction in (0, 1]",
                     detail::host_limit_accepted);
    }
    return static_cast<std::size_t>(static_cast<double>(ram_bytes) * share);
  }
  auto const bytes = detail::byte_count(text, false);
  if (!bytes) { detail::reject(what, text, "is not a byte count", detail::host_limit_accepted); }
  if (*bytes == std::numeric_limits<std::size_t>::max()) {
    detail::reject(what, text, "is too large", detail::host_limit_accepted);
  }
  return *bytes;
}

/**
 * @brief Parses a worker count: a whole number in 1..256.
 * @throws config_error naming the variable `what`, the text and what is accepted.
 */
[[nodiscard]] inline std::size_t parse_worker_count(std::string_view text,
                                                    std::string_view what = workers_variable)
{
  std::size_t value       = 0;
  auto const [end, error] = std::from_chars(text.data(), text.data() + text.size(), value, 10);
  if (error != std::errc() || end != text.data() + text.size() || text.empty() || value < 1 ||
      value > 256) {
    detail::reject(what, text, "is not a worker count",
                   "is a whole number from 1 to 256, or unset for the default");
  }
  return value;
}

/// Past this many workers, decoding outruns the link: a PCIe Gen5 link's 54.9 GB/s over
/// shuffle2+zstd's 1.1-1.3 GB/s of decode per core is 42-50 cores, and shuffle2+lz4's
/// 2-2.5 GB/s needs 22-27 (../shared/notes/gpu-speed.md §3.5).
inline constexpr std::size_t max_default_workers = 48;

/**
 * @brief The worker count when none is set, on a host with `cores` hardware threads (0:
 *        unknown): cores - 1, at least 1, at most max_default_workers. One core is left to
 *        the thread that drives the GPU, which helps decode a restore (transfer.hpp), so a
 *        restore's decoding uses every core (issue 14). Pure; any thread.
 */
[[nodiscard]] constexpr std::size_t default_worker_count(std::size_t cores) noexcept
{
  return std::clamp<std::size_t>(cores > 1 ? cores - 1 : 1, 1, max_default_workers);
}

/// default_worker_count of this host (std::thread::hardware_concurrency).
[[nodiscard]] inline std::size_t default_worker_count() noexcept
{
  return default_worker_count(std::thread::hardware_concurrency());
}

/**
 * @brief Parses a watermark: a fraction in (0, 1] written with a decimal point ("0.85").
 * @throws config_error naming `what`, the text, and what is accepted.
 */
[[nodiscard]] inline double parse_watermark(std::string_view text, std::string_view what)
{
  auto const value = detail::decimal(text);
  if (!value || !(*value > 0.0 && *value <= 1.0)) {
    detail::reject(what, text, "is not a fraction of the device's memory",
                   "is a number in (0, 1] with a decimal point, e.g. 0.85");
  }
  return *value;
}

/// A device limit: `bytes`, or `fraction` of the device's memory when bytes is 0.
struct device_limit {
  std::size_t bytes{0};
  double fraction{1.0};

  /// The limit on a device of `total_bytes`: never above the device's total.
  [[nodiscard]] std::size_t resolve(std::size_t total_bytes) const noexcept
  {
    if (bytes != 0) { return std::min(bytes, total_bytes); }
    return static_cast<std::size_t>(static_cast<long double>(total_bytes) * fraction);
  }
};

/**
 * @brief Parses a device limit: bytes ("6GiB", "6G", "512M", "1073741824") or a fraction of
 *        the device's memory in (0, 1] ("0.5").
 * @throws config_error naming `what`, the text, and what is accepted.
 */
[[nodiscard]] inline device_limit parse_device_limit(std::string_view text,
                                                     std::string_view what = device_limit_variable)
{
  if (text.find('.') != std::string_view::npos) {
    auto const value = detail::decimal(text);
    if (!value || !(*value > 0.0 && *value <= 1.0)) {
      detail::reject(what, text, "is not a fraction in (0, 1]", detail::device_limit_accepted);
    }
    return device_limit{0, *value};
  }
  auto const bytes = detail::byte_count(text, true);
  if (!bytes || *bytes == 0 || *bytes == std::numeric_limits<std::size_t>::max()) {
    detail::reject(what, text, !bytes ? "is not a byte count" : "is out of range",
                   detail::device_limit_accepted);
  }
  return device_limit{*bytes, 1.0};
}

/**
 * @brief Parses a period in whole milliseconds, 1 to 3600000 (one hour): the background
 *        monitor's interval (pressure_monitor.hpp).
 * @throws config_error naming `what`, the text, and what is accepted.
 */
[[nodiscard]] inline std::chrono::milliseconds parse_interval_ms(std::string_view text,
                                                                 std::string_view what)
{
  std::int64_t value      = 0;
  auto const [end, error] = std::from_chars(text.data(), text.data() + text.size(), value, 10);
  if (error != std::errc() || end != text.data() + text.size() || text.empty() || value < 1 ||
      value > 3'600'000) {
    detail::reject(what, text, "is not a period in milliseconds",
                   "is a whole number of milliseconds from 1 to 3600000");
  }
  return std::chrono::milliseconds(value);
}

/**
 * @brief Parses the idle delay after which a pool's raw host copies are compressed
 *        (compression_policy.hpp): seconds from 0 to 86400 (one day), whole or with a
 *        decimal point ("30", "2.5"), rounded to whole milliseconds; 0 compresses behind
 *        every eviction.
 * @throws config_error naming `what`, the text, and what is accepted.
 */
[[nodiscard]] inline std::chrono::milliseconds parse_compress_after(
  std::string_view text, std::string_view what = compress_after_variable)
{
  auto const value = detail::decimal(text);
  if (!value || !(*value >= 0.0 && *value <= 86400.0)) {
    detail::reject(what, text, "is not a delay in seconds",
                   "is a number of seconds from 0 to 86400 (e.g. 30 or 2.5); 0 compresses "
                   "every eviction's copies behind it");
  }
  return std::chrono::milliseconds(std::llround(*value * 1000.0));
}

/// Parses a log level: off, error, warn, info or debug. @throws config_error.
[[nodiscard]] inline log_level parse_log_level(std::string_view text,
                                               std::string_view what = log_variable)
{
  for (auto level :
       {log_level::off, log_level::error, log_level::warn, log_level::info, log_level::debug}) {
    if (text == to_string(level)) { return level; }
  }
  detail::reject(what, text, "is not a log level", "are off, error, warn, info and debug");
}

/**
 * @brief Parses SWAPALLOC_HOST_PIN: "register" (mmap, parallel first touch,
 *        cuMemHostRegister) or "alloc" (cuMemHostAlloc).
 * @throws config_error naming `what`, the text, and what is accepted.
 */
[[nodiscard]] inline pin_method parse_pin_method(std::string_view text,
                                                 std::string_view what = host_pin_variable)
{
  if (text == to_string(pin_method::host_register)) { return pin_method::host_register; }
  if (text == to_string(pin_method::host_alloc)) { return pin_method::host_alloc; }
  detail::reject(what, text, "is not a way to pin host memory",
                 "are register (mmap, touch, cuMemHostRegister) and alloc (cuMemHostAlloc)");
}

/// The driver library to load: SWAPALLOC_CUDA_DRIVER when set and not empty, else
/// libcuda.so.1.
[[nodiscard]] inline std::string driver_library_from_environment()
{
  char const* const value = std::getenv(driver_variable);
  return (value != nullptr && *value != '\0') ? std::string(value)
                                              : std::string(default_driver_library);
}

/// The library's settings found in the environment; unset or empty variables are empty.
struct environment_settings {
  std::optional<double> high;
  std::optional<double> low;
  std::optional<device_limit> device;
  std::optional<std::size_t> host_limit_bytes;
  std::optional<std::size_t> workers;
  std::optional<log_level> log;
  std::optional<std::chrono::milliseconds> compress_after;
  std::optional<pin_method> host_pin;
};

/**
 * @brief Reads and checks every allocator setting of the environment (all but the driver
 *        path, which `driver` reads): SWAPALLOC_HIGH, _LOW, _DEVICE_LIMIT, _HOST_LIMIT,
 *        _WORKERS, _LOG, _COMPRESS_AFTER and _HOST_PIN. A host limit of 0 is unset.
 * @throws config_error for the first value not accepted, naming it; also when both
 *         watermarks are set and low is not below high.
 */
[[nodiscard]] inline environment_settings read_environment()
{
  auto const value = [](char const* name) -> std::optional<std::string_view> {
    char const* const text = std::getenv(name);
    if (text == nullptr || *text == '\0') { return std::nullopt; }
    return std::string_view(text);
  };
  environment_settings out;
  if (auto text = value(high_variable)) { out.high = parse_watermark(*text, high_variable); }
  if (auto text = value(low_variable)) { out.low = parse_watermark(*text, low_variable); }
  if (out.high && out.low && !(*out.low < *out.high)) {
    detail::reject(low_variable, *value(low_variable), "is not below SWAPALLOC_HIGH",
                   "is a low watermark below the high one (defaults 0.75 and 0.85)");
  }
  if (auto text = value(device_limit_variable)) { out.device = parse_device_limit(*text); }
  if (auto text = value(host_limit_variable)) {
    if (std::size_t const bytes = parse_host_limit(*text, physical_memory_bytes()); bytes != 0) {
      out.host_limit_bytes = bytes;
    }
  }
  if (auto text = value(workers_variable)) { out.workers = parse_worker_count(*text); }
  if (auto text = value(log_variable)) { out.log = parse_log_level(*text); }
  if (auto text = value(compress_after_variable)) {
    out.compress_after = parse_compress_after(*text);
  }
  if (auto text = value(host_pin_variable)) { out.host_pin = parse_pin_method(*text); }
  return out;
}

}  // namespace swapalloc
