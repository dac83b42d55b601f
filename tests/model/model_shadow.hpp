/**
 * @file model_shadow.hpp
 * @brief The model's host-side shadow of device memory: what each live block must hold
 *        (a cheap, reproducible description rendered on demand), and which 2 MiB pages the
 *        live blocks touch (for the device and address-range budgets).
 *
 * Contract:
 * - A `content` is a pure description: `render(c, out)` writes the same bytes for the same
 *   (content, size) every time. Four kinds, so that every codec path runs: incompressible
 *   words, words with a zero tail (zero chunks), bf16-like 16-bit lanes (shuffle codecs),
 *   and a repeated word. A memset of the block's whole 32-bit words on a stream (record_stream)
 *   is recorded as `filled`: the words take `fill_word`, a tail of 1-3 bytes keeps the base.
 * - `page_ledger` counts, per page address (address / page size; the simulator aligns
 *   every reservation to 2 MiB), the live blocks touching it. `pages()` is the number of
 *   distinct pages live data occupies: what restoring everything needs on the device.
 *
 * Cost: rendering is two multiplies per 8 bytes. Thread safety: values.
 */
#pragma once

#include "model_ops.hpp"

#include <cuda.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <unordered_map>

namespace swapalloc::testing::model {

/// SplitMix64's output function: a cheap, well-mixed hash of a 64-bit counter.
[[nodiscard]] constexpr std::uint64_t mix64(std::uint64_t x) noexcept
{
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

enum class content_kind : std::uint8_t { random_words, zero_tail, bf16_lanes, repeated };

/// What a block must hold. See the file comment.
struct content {
  std::uint64_t seed{0};
  content_kind kind{content_kind::random_words};
  bool filled{false};
  std::uint32_t fill_word{0};
};

[[nodiscard]] constexpr char const* to_string(content_kind kind) noexcept
{
  switch (kind) {
    case content_kind::random_words:
      return "random_words";
    case content_kind::zero_tail:
      return "zero_tail";
    case content_kind::bf16_lanes:
      return "bf16_lanes";
    case content_kind::repeated:
      return "repeated";
  }
  return "unknown";
}

/// A cheap 64-bit hash of a word index (two multiplies): enough to make every word of a
/// block, and every block, differ.
[[nodiscard]] constexpr std::uint64_t word_hash(std::uint64_t seed, std::uint64_t index) noexcept
{
  std::uint64_t x = (seed ^ index) * 0x9E3779B97F4A7C15ULL;
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ULL;
  return x ^ (x >> 32);
}

/// Four bf16 values from 64 random bits: each lane keeps its
/// sign and a random 7-bit mantissa, and its exponent lies in a band of 32 (what shuffle
/// codecs compress well). The lanes' sums cannot carry into each other.
[[nodiscard]] constexpr std::uint64_t bf16_lanes(std::uint64_t r) noexcept
{
  return (r & 0x807F807F807F807FULL) + ((r & 0x0F800F800F800F80ULL) + 0x3C003C003C003C00ULL);
}

/// Word `index` (8 bytes) of a content of `kind`.
[[nodiscard]] constexpr std::uint64_t content_word(content_kind kind, std::uint64_t seed,
                                                   std::uint64_t index) noexcept
{
  switch (kind) {
    case content_kind::random_words:
      return word_hash(seed, index);
    case content_kind::zero_tail:
      return index < 512 ? word_hash(seed, index) : 0;  // 4 KiB
    case content_kind::bf16_lanes:
      return bf16_lanes(word_hash(seed, index));
    case content_kind::repeated:
      return mix64(seed);
  }
  return 0;
}

namespace detail {
/// Words [0, count) of `kind`: one loop per kind, so that the compiler unrolls it.
template <content_kind Kind>
void render_words(std::uint64_t seed, std::byte* out, std::size_t count) noexcept
{
  for (std::size_t w = 0; w < count; ++w) {
    std::uint64_t const word = content_word(Kind, seed, w);
    std::memcpy(out + 8 * w, &word, 8);
  }
}
}  // namespace detail

/// Writes the bytes of `c` for a block of out.size() bytes.
inline void render(content const& c, std::span<std::byte> out)
{
  std::size_t const full = out.size() / 8;
  switch (c.kind) {
    case content_kind::random_words:
      detail::render_words<content_kind::random_words>(c.seed, out.data(), full);
      break;
    case content_kind::zero_tail: {
      std::size_t const data = full < 512 ? full : 512;
      detail::render_words<content_kind::random_words>(c.seed, out.data(), data);
      std::memset(out.data() + 8 * data, 0, 8 * (full - data));
      break;
    }
    case content_kind::bf16_lanes:
      detail::render_words<content_kind::bf16_lanes>(c.seed, out.data(), full);
      break;
    case content_kind::repeated:
      detail::render_words<content_kind::repeated>(c.seed, out.data(), full);
      break;
  }
  if (std::size_t const rest = out.size() % 8; rest != 0) {
    std::uint64_t const word = content_word(c.kind, c.seed, full);
    std::memcpy(out.data() + 8 * full, &word, rest);
  }
  if (c.filled) {
    for (std::size_t at = 0; at + 4 <= out.size(); at += 4) {
      std::memcpy(out.data() + at, &c.fill_word, 4);
    }
  }
}

/// Distinct pages touched by live blocks. See the file comment.
class page_ledger {
 public:
  explicit page_ledger(std::size_t page_size) : page_size_(page_size) {}

  void add(CUdeviceptr ptr, std::size_t bytes) { change(ptr, bytes, +1); }
  void remove(CUdeviceptr ptr, std::size_t bytes) { change(ptr, bytes, -1); }

  /// Distinct pages with at least one live block.
  [[nodiscard]] std::size_t pages() const noexcept { return users_.size(); }
  /// Pages from the lowest to the highest live page (0 when none). Cost: a walk.
  [[nodiscard]] std::size_t span() const noexcept
  {
    if (users_.empty()) { return 0; }
    std::uint64_t low  = UINT64_MAX;
    std::uint64_t high = 0;
    for (auto const& [page, count] : users_) {
      low  = std::min(low, page);
      high = std::max(high, page);
    }
    return high - low + 1;
  }
  [[nodiscard]] std::size_t page_size() const noexcept { return page_size_; }

  /// Pages a block of `bytes` may touch wherever it lands: its whole pages, plus one where
  /// it straddles a boundary.
  [[nodiscard]] std::size_t worst_case_pages(std::size_t bytes) const noexcept
  {
    return (bytes + page_size_ - 1) / page_size_ + 1;
  }

 private:
  void change(CUdeviceptr ptr, std::size_t bytes, int delta)
  {
    if (bytes == 0) { return; }
    std::uint64_t const first = ptr / page_size_;
    std::uint64_t const last  = (ptr + bytes - 1) / page_size_;
    for (std::uint64_t page = first; page <= last; ++page) {
      auto& count = users_[page];
      count += delta;
      if (count == 0) { users_.erase(page); }
    }
  }

  std::size_t page_size_;
  std::unordered_map<std::uint64_t, int> users_;
};

/// One live block as the model knows it.
struct shadow_block {
  CUdeviceptr ptr{0};
  std::size_t bytes{0};
  CUstream stream{nullptr};  ///< its allocation stream (deallocate needs it)
  std::uint64_t epoch{0};    ///< its pool's evict epoch when it was allocated
  content data;
};

}  // namespace swapalloc::testing::model
