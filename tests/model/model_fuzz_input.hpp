/**
 * @file model_fuzz_input.hpp
 * @brief How the fuzz target reads an input, shared with model_shrink --bytes so that both
 *        run an input alike: at most `max_fuzz_ops` ops (byte_ops), and the seed of the block
 *        contents and the allocator's options, FNV-1a of the input's bytes.
 *
 * Thread safety: constants and a pure function.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace swapalloc::testing::model {

/// Ops an input may hold: enough for every interplay of a few pools, few enough to keep an
/// execution in tens of milliseconds.
inline constexpr std::size_t max_fuzz_ops = 64;

[[nodiscard]] inline std::uint64_t seed_of(std::span<std::uint8_t const> input) noexcept
{
  std::uint64_t hash = 0xCBF29CE484222325ULL;
  for (std::uint8_t const b : input) {
    hash = (hash ^ b) * 0x100000001B3ULL;
  }
  return hash;
}

}  // namespace swapalloc::testing::model
