/**
 * @file block.hpp
 * @brief The vocabulary of the block cache: request rounding, the small/large boundary,
 *        block states, stream tags, and the block descriptor itself. (Page states are in
 *        page_table.hpp.)
 *
 * Thread safety: plain values; a `block` is owned and serialized by its `block_cache`.
 */
#pragma once

#include <cuda.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace swapalloc {

/// Requests of at most this many bytes are small (DESIGN §5; PyTorch's kSmallSize).
inline constexpr std::size_t small_request_limit = std::size_t{1} << 20;
/// Every block size and offset is a multiple of this (PyTorch's kMinBlockSize).
inline constexpr std::size_t block_granule = 512;

/// The block size serving a request of `bytes`: at least 512, rounded up to 512.
/// @pre bytes <= SIZE_MAX - 511 (callers reject requests beyond a pool's capacity first).
[[nodiscard]] constexpr std::size_t round_request(std::size_t bytes) noexcept
{
  return bytes <= block_granule ? block_granule
                                : (bytes + block_granule - 1) & ~(block_granule - 1);
}

enum class block_kind : std::uint8_t { small, large };
enum class block_state : std::uint8_t { free, cached, allocated, awaiting_events };

/// Which stream's order makes a free block safe to reuse. `any_stream`: every stream.
using stream_tag                       = std::uintptr_t;
inline constexpr stream_tag any_stream = 0;
/// The tag of `stream` (the legacy default stream, 0, is a stream like the others).
[[nodiscard]] inline stream_tag tag_of(CUstream stream) noexcept
{
  return reinterpret_cast<std::uintptr_t>(stream) + 1;
}
/// The tag of free blocks on pages whose data is in host memory (evicted or restoring): no
/// request carries it, so they are never handed out. Such a page's free bytes wait for its
/// restore, and allocating in an evicted pool maps fresh pages instead (DESIGN §6). No
/// stream has this address plus one.
inline constexpr stream_tag parked_tag = ~stream_tag{0};
/// The stream of a tag other than `any_stream` and `parked_tag`.
[[nodiscard]] inline CUstream stream_of(stream_tag tag) noexcept
{
  return reinterpret_cast<CUstream>(tag - 1);  // NOLINT(performance-no-int-to-ptr)
}

/// One block of a pool's address space. Owned by its `block_cache`.
struct block {
  std::size_t offset{0};     ///< first byte, from the pool's base
  std::size_t size{0};       ///< bytes; a multiple of block_granule
  std::size_t requested{0};  ///< bytes asked for, while allocated
  block* prev{nullptr};      ///< address-order neighbours (every state)
  block* next{nullptr};
  block* bin_next{nullptr};  ///< next block of the same bin, while cached
  stream_tag tag{any_stream};
  block_kind kind{block_kind::large};
  block_state state{block_state::free};
  std::uint32_t pending_events{0};  ///< events still to complete, while awaiting_events
  std::vector<CUstream> used_by;    ///< streams added by record_stream, while allocated

  [[nodiscard]] std::size_t end() const noexcept { return offset + size; }
};

}  // namespace swapalloc
