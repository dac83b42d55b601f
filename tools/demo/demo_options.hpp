/**
 * @file demo_options.hpp
 * @brief The command line of swapalloc_demo (tools/run-demo, the README's main job): which
 *        modes of seed 001's pipeline to run, how many requests, how far to scale the 22 GiB
 *        device down, where the weights and the timeline are, and the simulator's link.
 *
 * Every option takes its value as `--name VALUE` or `--name=VALUE`. A mistake throws
 * `demo_usage_error` naming the option, the value and what is accepted; the program exits
 * with status 64 (EX_USAGE). `--sim` and `--gpu` are tools/run-demo's (it picks the driver
 * before the demo starts) and are refused here with a message saying so.
 *
 * Thread safety: pure functions and plain data.
 */
#pragma once

#include <swapalloc/codec.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace swapalloc::demo {

/// How the pipeline's models are kept between steps.
enum class demo_mode : std::uint8_t {
  keep,         ///< every model stays loaded (the seed's auto_unload=False), no policy
  auto_unload,  ///< each step loads its model from its file and frees it after (the seed's fix)
  swapalloc     ///< every model stays allocated; the 85/75 policy evicts and restores
};

/// "keep", "auto_unload" or "swapalloc". Pure.
[[nodiscard]] constexpr char const* to_string(demo_mode mode) noexcept
{
  switch (mode) {
    case demo_mode::keep:
      return "keep";
    case demo_mode::auto_unload:
      return "auto_unload";
    case demo_mode::swapalloc:
      return "swapalloc";
  }
  return "?";
}

/// The default scale: 22 GiB / 64 = 352 MiB, which runs the three modes' ten requests in
/// well under a minute on the simulator of a 2-core machine.
inline constexpr std::size_t default_scale = 64;
/// Bounds of --scale: 1 is the seed's full size (a real GPU); past 1024 the models are a few
/// pages each and the 2 MiB pages, not the models, decide what fits.
inline constexpr std::size_t max_scale    = 1024;
inline constexpr std::size_t max_requests = 1000;

/// What the command line asked for.
struct demo_options {
  std::vector<demo_mode> modes{demo_mode::keep, demo_mode::auto_unload, demo_mode::swapalloc};
  std::size_t requests{10};
  std::size_t scale{default_scale};
  std::filesystem::path weights_dir;  ///< empty: weight_source::find's search
  std::optional<double> link_gbps;    ///< 10^9 bytes/s; 0: unthrottled; unset: as it is
  std::filesystem::path timeline;     ///< empty: <build>/demo/timeline.json
  std::filesystem::path model_dir;    ///< empty: <build>/demo/models
  std::optional<codec_id> codec;      ///< the model pools' codec; unset: the library's choice
  bool help{false};
};

/// A command-line mistake; what() names the option, the value and what is accepted.
class demo_usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The text of --help.
inline constexpr char const* demo_usage_text =
  "usage: swapalloc_demo [--mode MODE] [--requests N] [--scale N] [--weights DIR]\n"
  "                      [--link-gbps X] [--codec NAME] [--timeline FILE]\n"
  "                      [--model-dir DIR]\n"
  "Runs seed 001's pipeline (SDXL -> BiRefNet -> Flux inpaint on a 22 GiB device, scaled\n"
  "down) for N requests in each mode, with the same requests, and compares them.\n"
  "  --mode MODE      keep, auto_unload, swapalloc or all (default all)\n"
  "                   keep: every model stays loaded (fails: out of memory at step 3)\n"
  "                   auto_unload: each step reads its model from disk and frees it after\n"
  "                   swapalloc: every model stays allocated; the policy evicts and restores\n"
  "  --requests N     requests per mode, 1 to 1000 (default 10)\n"
  "  --scale N        divide the seed's sizes by N, 1 to 1024 (default 64: 352 MiB)\n"
  "  --weights DIR    real weights (*.safetensors, *.fp32.bin) to tile into the models\n"
  "                   (default: what tools/fetch-weights fetched, else generated)\n"
  "  --link-gbps X    the simulator's host<->device link, 10^9 bytes/s (0: unthrottled);\n"
  "                   ignored on a real GPU\n"
  "  --codec NAME     the host store's codec for the model pools: auto (default: the\n"
  "                   library's choice for bf16, shuffle2+lz4), raw (no compression),\n"
  "                   lz4, shuffle2+lz4, shuffle4+lz4, zstd, shuffle2+zstd, shuffle4+zstd\n"
  "  --timeline FILE  where the timeline JSON goes (default build/demo/timeline.json)\n"
  "  --model-dir DIR  where the model files are written once and read back\n"
  "                   (default build/demo/models)\n"
  "The driver is libcuda.so.1, or the library named by SWAPALLOC_CUDA_DRIVER\n"
  "(tools/run-demo picks it: --sim, --gpu). Exit status: 0 done, outputs identical;\n"
  "1 a failure or a difference; 2 no usable driver; 64 a bad option.\n";

namespace detail {

/// A whole number in [low, high], or nullopt.
[[nodiscard]] inline std::optional<std::size_t> parse_count(std::string_view text, std::size_t low,
                                                            std::size_t high)
{
  std::size_t value       = 0;
  char const* const last  = text.data() + text.size();
  auto const [end, error] = std::from_chars(text.data(), last, value);
  if (text.empty() || error != std::errc{} || end != last || value < low || value > high) {
    return std::nullopt;
  }
  return value;
}

/// A finite number ≥ 0 in fixed notation ("12", "12.5", ".5"), or nullopt.
[[nodiscard]] inline std::optional<double> parse_rate(std::string_view text)
{
  double value            = 0;
  char const* const last  = text.data() + text.size();
  auto const [end, error] = std::from_chars(text.data(), last, value, std::chars_format::fixed);
  if (text.empty() || text.front() == '-' || error != std::errc{} || end != last ||
      !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

/// The modes --mode `value` names, or nullopt.
[[nodiscard]] inline std::optional<std::vector<demo_mode>> parse_modes(std::string_view value)
{
  if (value == "all") { return demo_options{}.modes; }
  for (demo_mode const mode : {demo_mode::keep, demo_mode::auto_unload, demo_mode::swapalloc}) {
    if (value == to_string(mode)) { return std::vector<demo_mode>{mode}; }
  }
  return std::nullopt;
}

/// `--name 'value': expected <accepted>`.
[[nodiscard]] inline demo_usage_error bad_value(std::string_view name, std::string_view value,
                                                std::string_view accepted)
{
  return demo_usage_error(std::string(name) + " '" + std::string(value) + "': expected " +
                          std::string(accepted));
}

/// Sets the option `name` of `out` from `value`. @throws demo_usage_error.
inline void apply_option(demo_options& out, std::string_view name, std::string_view value)
{
  if (name == "--mode") {
    auto modes = parse_modes(value);
    if (!modes) { throw bad_value(name, value, "keep, auto_unload, swapalloc or all"); }
    out.modes = std::move(*modes);
  } else if (name == "--requests") {
    auto const n = parse_count(value, 1, max_requests);
    if (!n) { throw bad_value(name, value, "a whole number from 1 to 1000"); }
    out.requests = *n;
  } else if (name == "--scale") {
    auto const n = parse_count(value, 1, max_scale);
    if (!n) { throw bad_value(name, value, "a whole number from 1 (full size) to 1024"); }
    out.scale = *n;
  } else if (name == "--link-gbps") {
    auto const rate = parse_rate(value);
    if (!rate) { throw bad_value(name, value, "a number >= 0 of 10^9 bytes/s, e.g. 12.5"); }
    out.link_gbps = *rate;
  } else if (name == "--codec") {
    std::optional<codec_id> const codec = parse_codec(value);
    if (value != "auto" && (!codec || *codec == codec_id::zero || !codec_available(*codec))) {
      throw bad_value(name, value,
                      std::string("auto, raw, lz4, shuffle2+lz4 or shuffle4+lz4") +
                        (have_zstd ? ", zstd, shuffle2+zstd or shuffle4+zstd" : ""));
    }
    out.codec = value == "auto" ? std::nullopt : codec;
  } else if (name == "--weights") {
    if (value.empty()) { throw bad_value(name, value, "a directory"); }
    out.weights_dir = value;
  } else if (name == "--timeline") {
    if (value.empty()) { throw bad_value(name, value, "a file name"); }
    out.timeline = value;
  } else if (name == "--model-dir") {
    if (value.empty()) { throw bad_value(name, value, "a directory"); }
    out.model_dir = value;
  }
}

}  // namespace detail

/// The options that take a value.
inline constexpr std::array<std::string_view, 8> demo_value_options{
  "--mode",      "--requests", "--scale",    "--weights",
  "--link-gbps", "--codec",    "--timeline", "--model-dir"};

/**
 * @brief Parses the arguments after the program's name.
 * @throws demo_usage_error naming the option and the value: an unknown option, a missing
 *         value, a value out of range, an option given twice, --sim/--gpu (run-demo's).
 */
[[nodiscard]] inline demo_options parse_demo_options(std::span<char const* const> args)
{
  demo_options out;
  std::vector<std::string_view> seen;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view const argument = args[i];
    if (argument == "--help" || argument == "-h") {
      out.help = true;
      continue;
    }
    if (argument == "--sim" || argument == "--gpu") {
      throw demo_usage_error(std::string(argument) +
                             " is tools/run-demo's option (it picks the driver); run the demo "
                             "through it, or set SWAPALLOC_CUDA_DRIVER");
    }
    std::size_t const equals    = argument.find('=');
    std::string_view const name = argument.substr(0, equals);
    if (std::find(demo_value_options.begin(), demo_value_options.end(), name) ==
        demo_value_options.end()) {
      throw demo_usage_error("unknown option '" + std::string(argument) +
                             "' (accepted: --mode, --requests, --scale, --weights, --link-gbps, "
                             "--codec, --timeline, --model-dir, --help)");
    }
    if (std::find(seen.begin(), seen.end(), name) != seen.end()) {
      throw demo_usage_error(std::string(name) + " is given twice");
    }
    seen.push_back(name);
    std::string_view value;
    if (equals != std::string_view::npos) {
      value = argument.substr(equals + 1);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      throw demo_usage_error(std::string(name) + " needs a value (see --help)");
    }
    detail::apply_option(out, name, value);
  }
  return out;
}

}  // namespace swapalloc::demo
