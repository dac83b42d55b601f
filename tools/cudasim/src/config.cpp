/**
 * @file config.cpp
 * @brief Parsing of the SWAPALLOC_SIM_* environment variables (cudasim.h).
 *
 * Sizes accept a K, M, G or T suffix in powers of 1024 ("8G"), as cudasim.h says.
 */
#include "config.hpp"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string_view>

namespace cudasim {
namespace {

[[nodiscard]] std::optional<std::size_t> parse_size(std::string_view text) noexcept
{
  unsigned shift = 0;
  if (!text.empty()) {
    switch (text.back()) {
      case 'K':
      case 'k':
        shift = 10;
        break;
      case 'M':
      case 'm':
        shift = 20;
        break;
      case 'G':
      case 'g':
        shift = 30;
        break;
      case 'T':
      case 't':
        shift = 40;
        break;
      default:
        break;
    }
  }
  if (shift != 0) { text.remove_suffix(1); }
  std::uint64_t value      = 0;
  auto const [end, status] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || status != std::errc{} || end != text.data() + text.size()) {
    return std::nullopt;
  }
  if (value > (std::numeric_limits<std::size_t>::max() >> shift)) { return std::nullopt; }
  return static_cast<std::size_t>(value << shift);
}

[[nodiscard]] std::string rejected(char const* variable, char const* value, char const* accepted)
{
  return std::string("cudasim: ") + variable + "='" + value + "' is not valid: expected " +
         accepted;
}

/// Reads one variable into `out` with `parse`; returns the message when malformed.
template <class T, class Parse>
[[nodiscard]] std::optional<std::string> read(char const* variable, char const* accepted, T& out,
                                              Parse parse)
{
  char const* const value = std::getenv(variable);
  if (value == nullptr) { return std::nullopt; }
  auto const parsed = parse(std::string_view(value));
  if (!parsed) { return rejected(variable, value, accepted); }
  out = *parsed;
  return std::nullopt;
}

constexpr char const* size_syntax =
  "a byte count with an optional K, M, G or T suffix (powers of 1024), e.g. 8G";

}  // namespace

std::variant<config, std::string> read_config()
{
  config c;
  auto const device_count = [](std::string_view text) -> std::optional<int> {
    int value                = 0;
    auto const [end, status] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (status != std::errc{} || end != text.data() + text.size()) { return std::nullopt; }
    if (value < 1 || value > config::max_devices) { return std::nullopt; }
    return value;
  };
  auto const bandwidth = [](std::string_view text) -> std::optional<double> {
    double value             = 0;
    auto const [end, status] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (status != std::errc{} || end != text.data() + text.size() || !std::isfinite(value) ||
        value < 0) {
      return std::nullopt;
    }
    return value;
  };
  auto const flag = [](std::string_view text) -> std::optional<bool> {
    if (text == "1") { return true; }
    if (text == "0" || text.empty()) { return false; }
    return std::nullopt;
  };
  std::optional<std::string> error;
  if (!error) { error = read("SWAPALLOC_SIM_MEMORY", size_syntax, c.memory, parse_size); }
  if (!error && c.memory == 0) { error = rejected("SWAPALLOC_SIM_MEMORY", "0", "a size above 0"); }
  if (!error) {
    error = read("SWAPALLOC_SIM_DEVICES", "an integer from 1 to 16", c.devices, device_count);
  }
  if (!error) { error = read("SWAPALLOC_SIM_EXTERNAL", size_syntax, c.external, parse_size); }
  if (!error) {
    error = read("SWAPALLOC_SIM_LINK_GBPS",
                 "a non-negative number of 10^9 bytes per second, e.g. 25 (0: unthrottled)",
                 c.link_gbps, bandwidth);
  }
  if (!error) { error = read("SWAPALLOC_SIM_STRICT", "1 or 0", c.strict, flag); }
  if (!error) { error = read("SWAPALLOC_SIM_QUIET", "1 or 0", c.quiet, flag); }
  if (!error) {
    auto const name = [](std::string_view text) -> std::optional<std::string> {
      if (text.empty()) { return std::nullopt; }
      return std::string(text);
    };
    error = read("SWAPALLOC_SIM_PROFILE", "h100 or the path of a profile file", c.profile, name);
  }
  if (!error) {
    auto const scale = [&](std::string_view text) -> std::optional<double> {
      auto const value = bandwidth(text);
      if (!value || *value <= 0) { return std::nullopt; }
      return value;
    };
    error = read("SWAPALLOC_SIM_TIME_SCALE", "a number above 0, e.g. 50", c.time_scale, scale);
  }
  if (!error && !c.profile.empty() && c.link_gbps > 0) {
    error =
      "cudasim: SWAPALLOC_SIM_LINK_GBPS and SWAPALLOC_SIM_PROFILE are both set: the "
      "profile's link line sets the link; unset one of them";
  }
  if (error) { return *error; }
  return c;
}

}  // namespace cudasim
