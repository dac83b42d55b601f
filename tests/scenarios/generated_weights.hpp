/**
 * @file generated_weights.hpp
 * @brief The scenario tests' weight filler (model.hpp weight_filler): bf16 values drawn
 *        from N(0, 0.02), the usual initialization of transformer weights, deterministic
 *        in the salt. Fast enough for hundreds of MiB per test under the sanitizers: each
 *        value is looked up in a table of 4096 bf16 samples of N(0, 0.02) (made once per
 *        filler with data_kinds.hpp's normal source) by 12 bits of a splitmix64 stream,
 *        five values per 64-bit draw. The bytes compress as real bf16 weights do (the
 *        exponent byte carries little entropy; DESIGN §7's 1.19× with byte planes).
 *
 * Thread safety: the filler is immutable after construction; call it from any thread.
 */
#pragma once

#include "data_kinds.hpp"
#include "model.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>

namespace swapalloc::testing {

/// A weight_filler of bf16 N(0, 0.02) values; the same bytes for the same (size, salt).
[[nodiscard]] inline scenarios::weight_filler generated_bf16_weights()
{
  auto table = std::make_shared<std::array<std::uint16_t, 4096>>();
  normal_source normal(0x5EED0000F111E5ULL);
  for (std::uint16_t& value : *table) {
    value = to_bf16(static_cast<float>(0.02 * normal()));
  }
  return [table](std::span<std::byte> out, std::uint64_t salt) {
    std::uint64_t state = salt;
    std::size_t at      = 0;
    while (at < out.size()) {
      std::uint64_t bits = scenarios::mix64(state++);
      for (int i = 0; i < 5 && at < out.size(); ++i, bits >>= 12U) {
        std::uint16_t const value = (*table)[bits & 0xFFFU];
        std::size_t const n       = std::min<std::size_t>(2, out.size() - at);
        std::memcpy(out.data() + at, &value, n);
        at += n;
      }
    }
  };
}

}  // namespace swapalloc::testing
