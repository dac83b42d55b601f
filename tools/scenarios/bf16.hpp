/**
 * @file bf16.hpp
 * @brief float -> bf16 conversion as frameworks cast: the one definition that the scenarios'
 *        weights (weights.hpp) and the tests' data generators (tests/support/data_kinds.hpp)
 *        share, so that both write the same bytes for the same values.
 * Thread safety: pure functions.
 */
#pragma once

#include <bit>
#include <cstdint>

namespace swapalloc::scenarios {

/// float -> bf16 bits, round to nearest even (ties to the even mantissa; values past bf16's
/// largest round to infinity); a NaN stays a NaN (quiet, sign kept). Thread safety: pure.
[[nodiscard]] constexpr std::uint16_t to_bf16(float value) noexcept
{
  auto const bits = std::bit_cast<std::uint32_t>(value);
  if ((bits & 0x7FFFFFFFU) > 0x7F800000U) {  // NaN: truncating could leave an infinity
    return static_cast<std::uint16_t>((bits >> 16) | 0x40U);
  }
  std::uint32_t const rounding = 0x7FFFU + ((bits >> 16) & 1U);
  return static_cast<std::uint16_t>((bits + rounding) >> 16);
}

}  // namespace swapalloc::scenarios
