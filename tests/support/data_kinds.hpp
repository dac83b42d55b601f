/**
 * @file data_kinds.hpp
 * @brief Test and benchmark data for the host tier's codecs: deterministic generators of
 *        the memory a pool holds (zeros, bf16/fp16/fp32 weights, ReLU activations, random
 *        bytes) and loaders of real trained weights (Silero VAD v5, tests/../shared/data).
 *
 * Every generator is a pure function of (kind, bytes, seed) on one platform: a
 * std::mt19937_64 and our own Box–Muller transform (std::normal_distribution's algorithm
 * differs between standard libraries; std::log/std::cos may differ in the last bit across
 * libms, so bytes are stable per platform, not across them). Costs: a few ns per element.
 * Thread safety: pure functions.
 */
#pragma once

#include "../../tools/scenarios/bf16.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <numbers>
#include <optional>
#include <random>
#include <string_view>
#include <vector>

namespace swapalloc::testing {

/// What a chunk holds.
enum class data_kind : std::uint8_t {
  zeros,             ///< all zero bytes (freshly cached memory, padding)
  bf16_weights,      ///< bf16 N(0, 0.02), the usual initialisation of transformer weights
  fp16_weights,      ///< fp16 N(0, 0.02)
  fp32_weights,      ///< fp32 N(0, 0.02)
  bf16_activations,  ///< bf16 ReLU(N(0, 1)): half exactly zero, half |N(0, 1)|
  random_bytes,      ///< uniform bytes: incompressible
};

inline constexpr std::array<data_kind, 6> all_data_kinds{
  data_kind::zeros,        data_kind::bf16_weights,     data_kind::fp16_weights,
  data_kind::fp32_weights, data_kind::bf16_activations, data_kind::random_bytes};

/// The kind's name, usable in test and benchmark names: "zeros", "bf16_weights", ...
[[nodiscard]] constexpr std::string_view to_string(data_kind kind) noexcept
{
  constexpr std::array<std::string_view, all_data_kinds.size()> names{
    "zeros", "bf16_weights", "fp16_weights", "fp32_weights", "bf16_activations", "random_bytes"};
  auto const index = static_cast<std::size_t>(kind);
  return index < names.size() ? names[index] : std::string_view{"unknown"};
}

/// float -> bf16, round to nearest even: the scenarios' conversion (tools/scenarios/bf16.hpp).
using swapalloc::scenarios::to_bf16;

/// float -> IEEE fp16, round to nearest even, subnormals kept.
[[nodiscard]] inline std::uint16_t to_fp16(float value) noexcept
{
  auto const bits               = std::bit_cast<std::uint32_t>(value);
  auto const sign               = static_cast<std::uint16_t>((bits >> 16) & 0x8000U);
  std::uint32_t const magnitude = bits & 0x7FFFFFFFU;
  if (magnitude >= 0x47800000U) {  // >= 65536 (or inf, NaN): inf, or a quiet NaN
    return static_cast<std::uint16_t>(sign | (magnitude > 0x7F800000U ? 0x7E00U : 0x7C00U));
  }
  if (magnitude < 0x38800000U) {  // below 2^-14: a subnormal in units of 2^-24 (exact scaling)
    float const units = std::bit_cast<float>(magnitude) * 16777216.0F;
    return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(std::nearbyint(units)));
  }
  // Rebias the exponent (127 -> 15) and round the mantissa's 13 dropped bits to even; a
  // carry into the exponent is the correct rounding (up to inf above 65504).
  std::uint32_t rebiased = magnitude - 0x38000000U;
  rebiased += 0x0FFFU + ((rebiased >> 13) & 1U);
  return static_cast<std::uint16_t>(sign | (rebiased >> 13));
}

/// Standard normal samples from a std::mt19937_64, two per Box–Muller step.
class normal_source {
 public:
  explicit normal_source(std::uint64_t seed) : engine_(seed) {}

  [[nodiscard]] double operator()()
  {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    // u1 in (0, 1] so that log(u1) is finite; u2 in [0, 1).
    double const u1     = 1.0 - uniform();
    double const u2     = uniform();
    double const radius = std::sqrt(-2.0 * std::log(u1));
    double const angle  = 2.0 * std::numbers::pi * u2;
    spare_              = radius * std::sin(angle);
    has_spare_          = true;
    return radius * std::cos(angle);
  }

 private:
  [[nodiscard]] double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

  std::mt19937_64 engine_;
  double spare_{0};
  bool has_spare_{false};
};

namespace detail {
/// `bytes` bytes of elements made by `element(normal)`, each `sizeof` its result; the last
/// element is cut when `bytes` is not a multiple of its size.
template <typename Element>
[[nodiscard]] std::vector<std::byte> make_elements(std::size_t bytes, std::uint64_t seed,
                                                   Element (*element)(normal_source&))
{
  std::vector<std::byte> data(bytes);
  normal_source normal(seed);
  for (std::size_t offset = 0; offset < bytes; offset += sizeof(Element)) {
    Element const value = element(normal);
    std::memcpy(data.data() + offset, &value, std::min(sizeof(Element), bytes - offset));
  }
  return data;
}
}  // namespace detail

/**
 * @brief `bytes` bytes of `kind`, the same for the same (kind, bytes, seed) on a platform.
 *        A prefix of a longer result for the same seed is the shorter one's result.
 */
[[nodiscard]] inline std::vector<std::byte> make_data(data_kind kind, std::size_t bytes,
                                                      std::uint64_t seed)
{
  switch (kind) {
    case data_kind::zeros:
      return std::vector<std::byte>(bytes);
    case data_kind::bf16_weights:
      return detail::make_elements<std::uint16_t>(
        bytes, seed, [](normal_source& n) { return to_bf16(static_cast<float>(0.02 * n())); });
    case data_kind::fp16_weights:
      return detail::make_elements<std::uint16_t>(
        bytes, seed, [](normal_source& n) { return to_fp16(static_cast<float>(0.02 * n())); });
    case data_kind::fp32_weights:
      return detail::make_elements<float>(
        bytes, seed, [](normal_source& n) { return static_cast<float>(0.02 * n()); });
    case data_kind::bf16_activations:
      return detail::make_elements<std::uint16_t>(bytes, seed, [](normal_source& n) {
        return to_bf16(static_cast<float>(std::max(0.0, n())));
      });
    case data_kind::random_bytes: {
      std::vector<std::byte> data(bytes);
      std::mt19937_64 engine(seed);
      for (std::size_t offset = 0; offset < bytes; offset += 8) {
        std::uint64_t const word = engine();
        std::memcpy(data.data() + offset, &word, std::min<std::size_t>(8, bytes - offset));
      }
      return data;
    }
  }
  return {};
}

/// The Silero VAD v5 weights (545,280 little-endian fp32 values), or nullopt when the file
/// named by SWAPALLOC_REAL_DATA is absent or unreadable (tests skip then).
[[nodiscard]] inline std::optional<std::vector<std::byte>> load_real_weights_fp32()
{
#if defined(SWAPALLOC_REAL_DATA)
  std::ifstream file(SWAPALLOC_REAL_DATA, std::ios::binary | std::ios::ate);
  if (!file) { return std::nullopt; }
  auto const size = static_cast<std::size_t>(file.tellg());
  if (size == 0 || size % 4 != 0) { return std::nullopt; }
  std::vector<std::byte> data(size);
  file.seekg(0);
  if (!file.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(size))) {
    return std::nullopt;
  }
  return data;
#else
  return std::nullopt;
#endif
}

/// The same weights rounded to bf16 (to nearest even), or nullopt as above.
[[nodiscard]] inline std::optional<std::vector<std::byte>> load_real_weights_bf16()
{
  std::optional<std::vector<std::byte>> const fp32 = load_real_weights_fp32();
  if (!fp32) { return std::nullopt; }
  std::vector<std::byte> data(fp32->size() / 2);
  for (std::size_t i = 0; i < fp32->size() / 4; ++i) {
    float value = 0;
    std::memcpy(&value, fp32->data() + 4 * i, 4);
    std::uint16_t const half = to_bf16(value);
    std::memcpy(data.data() + 2 * i, &half, 2);
  }
  return data;
}

/// Where the real weights are looked for ("" when the build names no file), for messages.
[[nodiscard]] constexpr std::string_view real_weights_path() noexcept
{
#if defined(SWAPALLOC_REAL_DATA)
  return SWAPALLOC_REAL_DATA;
#else
  return "";
#endif
}

}  // namespace swapalloc::testing
