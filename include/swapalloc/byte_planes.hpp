/**
 * @file byte_planes.hpp
 * @brief Byte-plane shuffle of 2- or 4-byte elements, the transform in front of the
 *        `shuffle*` codecs (codec.hpp).
 *
 * For an element width `w`, plane `j` holds byte `j` of every element, planes one after
 * another: bf16 weights become a plane of sign+exponent bytes (few distinct values, which
 * LZ4 and zstd find) and a plane of mantissa bytes (close to random). A length that is not
 * a multiple of `w` keeps its last `length % w` bytes unshuffled, at the end.
 *
 * Costs: one read and one write pass over the bytes, no allocation. Blocks of 64 elements
 * go through locals so that the compiler vectorizes the loops (no aliasing, constant trip
 * counts). Measured on 1 MiB, one core of the development machine: GCC 12 -O2 splits and
 * joins 2-byte planes at ~5.5-6.5 GB/s, 4-byte planes at ~1.2 (split) and ~2.4 GB/s
 * (join); at -O3 all four run at ~6 GB/s; clang 14 -O2 at 2.8-6.5 GB/s. Against LZ4's
 * ~0.5-1 GB/s compression the transform is a small part of a shuffle codec's cost; 4-byte
 * joins at -O2 are comparable to LZ4 decompression (bench_codec shows the codecs' figures).
 * It is byte order preserving on little-endian hosts (the only ones CUDA runs on).
 *
 * Thread safety: pure functions of their arguments.
 */
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>

namespace swapalloc {

namespace detail {
/// The unsigned integer of one element: its bytes are taken apart with shifts, which the
/// vectorizer handles better than strided byte copies.
template <std::size_t Width>
using plane_word = std::conditional_t<Width == 2, std::uint16_t, std::uint32_t>;
/// Elements per block: a block's words and planes live in locals, so the loops over them
/// have constant trip counts and nothing aliases (GCC's -O2 cost model vectorizes only then).
///
/// The element loops run over [0, whole) in blocks, then over [whole, elements) one at a
/// time, with `whole = elements - elements % plane_block` computed up front. The tail must
/// not start from the block loop's exit value: when the size is a constant (codec.hpp's
/// 1 MiB chunks, after inlining or IPA constant propagation), GCC 12 -O3 learns that value
/// only after it has turned the tail into a do-while, and then counts 2^64 - 1 iterations
/// of the dead tail, in which `e * Width` wraps: -Waggressive-loop-optimizations ("iteration
/// 2^62 invokes undefined behavior", an error under -Werror). From `whole` the tail's count
/// is `elements % plane_block`, at most 63, a constant 0 that removes it for such sizes.
inline constexpr std::size_t plane_block = 64;
}  // namespace detail

/**
 * @brief Writes the byte planes of `in` (elements of `Width` bytes, little-endian byte
 *        order as in memory) to `out[0, in.size())`.
 * @pre `out.size() >= in.size()`, and `in` and `out` do not overlap.
 */
template <std::size_t Width>
void split_byte_planes(std::span<std::byte const> in, std::span<std::byte> out) noexcept
{
  static_assert(Width == 2 || Width == 4, "the shuffle codecs use 2- and 4-byte elements");
  using word                 = detail::plane_word<Width>;
  constexpr std::size_t B    = detail::plane_block;
  std::size_t const elements = in.size() / Width;
  std::size_t const whole    = elements - elements % B;  // elements in whole blocks
  std::byte const* source    = in.data();
  std::byte* planes          = out.data();
  for (std::size_t e = 0; e < whole; e += B) {
    std::array<word, B> words{};
    std::memcpy(words.data(), source + e * Width, B * Width);
    std::array<std::array<std::uint8_t, B>, Width> block{};
    for (std::size_t k = 0; k < B; ++k) {
      for (std::size_t j = 0; j < Width; ++j) {
        block[j][k] = static_cast<std::uint8_t>(words[k] >> (8 * j));
      }
    }
    for (std::size_t j = 0; j < Width; ++j) {
      std::memcpy(planes + j * elements + e, block[j].data(), B);
    }
  }
  // The last elements % B, one at a time (see detail::plane_block on why this loop starts
  // at `whole` rather than where the block loop stopped).
  for (std::size_t e = whole; e < elements; ++e) {
    for (std::size_t j = 0; j < Width; ++j) {
      planes[j * elements + e] = source[e * Width + j];
    }
  }
  // The tail (not a whole element) stays as it is, after the planes.
  std::copy(in.begin() + static_cast<std::ptrdiff_t>(elements * Width), in.end(),
            out.begin() + static_cast<std::ptrdiff_t>(elements * Width));
}

/**
 * @brief Inverse of `split_byte_planes<Width>`: writes the elements whose planes are `in`
 *        to `out[0, in.size())`.
 * @pre `out.size() >= in.size()`, and `in` and `out` do not overlap.
 */
template <std::size_t Width>
void join_byte_planes(std::span<std::byte const> in, std::span<std::byte> out) noexcept
{
  static_assert(Width == 2 || Width == 4, "the shuffle codecs use 2- and 4-byte elements");
  using word                 = detail::plane_word<Width>;
  constexpr std::size_t B    = detail::plane_block;
  std::size_t const elements = in.size() / Width;
  std::size_t const whole    = elements - elements % B;  // elements in whole blocks
  std::byte const* planes    = in.data();
  std::byte* target          = out.data();
  for (std::size_t e = 0; e < whole; e += B) {
    std::array<std::array<std::uint8_t, B>, Width> block{};
    for (std::size_t j = 0; j < Width; ++j) {
      std::memcpy(block[j].data(), planes + j * elements + e, B);
    }
    std::array<word, B> words{};
    for (std::size_t k = 0; k < B; ++k) {
      word w = 0;
      for (std::size_t j = 0; j < Width; ++j) {
        w = static_cast<word>(w | static_cast<word>(word{block[j][k]} << (8 * j)));
      }
      words[k] = w;
    }
    std::memcpy(target + e * Width, words.data(), B * Width);
  }
  for (std::size_t e = whole; e < elements; ++e) {
    for (std::size_t j = 0; j < Width; ++j) {
      target[e * Width + j] = planes[j * elements + e];
    }
  }
  std::copy(in.begin() + static_cast<std::ptrdiff_t>(elements * Width), in.end(),
            out.begin() + static_cast<std::ptrdiff_t>(elements * Width));
}

}  // namespace swapalloc
