/**
 * @file swap_fixture.hpp
 * @brief The fixture of the swap-tier tests: an allocator with two compression workers,
 *        pools filled with generated data through driver copies, and a bit-exact check of
 *        every live block read back through driver copies (never a dereference).
 */
#pragma once

#include "allocator_fixture.hpp"
#include "data_kinds.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace swapalloc::testing {

/// One live block and the bytes it must hold.
struct filled_block {
  CUdeviceptr ptr{0};
  std::size_t bytes{0};
  std::vector<std::byte> data;
};

class SwapTest : public AllocatorTest {
 protected:
  [[nodiscard]] allocator_options options() const override
  {
    allocator_options o;
    o.workers = 2;
    return o;
  }

  /// Pinned host bytes the transfer engine keeps for good: its staging ring.
  [[nodiscard]] std::size_t staging_ring_bytes() const
  {
    return resolve_options(options()).transfer.staging_slots * max_chunk_bytes;
  }

  /// A pool named `name`, with `codec` forced when given.
  pool_id make_pool(std::string const& name, std::optional<codec_id> codec = {},
                    dtype_hint dtype = dtype_hint::none)
  {
    pool_options o;
    o.codec = codec;
    o.dtype = dtype;
    return alloc().create_pool(name, o);
  }

  /**
   * @brief Allocates blocks in `pool` until `total` bytes (sizes from 512 B to 5 MiB, some
   *        across page boundaries), fills each with `kind` data from the host, then frees
   *        about `1 - keep` of them at random: partial liveness. Returns the live blocks.
   */
  std::vector<filled_block> populate(pool_id pool, data_kind kind, std::size_t total,
                                     std::uint64_t seed, double keep = 0.7)
  {
    std::mt19937_64 random(seed);
    std::vector<std::size_t> const sizes{512,       3000,    64 * KiB, 300 * KiB,
                                         MiB + 512, 3 * MiB, 5 * MiB,  MiB};
    std::vector<filled_block> blocks;
    pool_scope const scope(alloc(), pool);
    std::size_t used = 0;
    while (used < total) {
      std::size_t const bytes = sizes[random() % sizes.size()];
      filled_block b;
      b.ptr   = alloc().allocate(bytes, 0, nullptr);
      b.bytes = bytes;
      b.data  = make_data(kind, bytes, random());
      drv().memcpy_htod(b.ptr, b.data.data(), bytes);
      used += bytes;
      blocks.push_back(std::move(b));
    }
    std::vector<filled_block> live;
    std::bernoulli_distribution kept(keep);
    for (auto& b : blocks) {
      if (kept(random)) {
        live.push_back(std::move(b));
      } else {
        alloc().deallocate(b.ptr, b.bytes, 0, nullptr);
      }
    }
    return live;
  }

  /// A new block of `bytes` in `pool`, filled with `kind` data (random bytes by default)
  /// from `seed` (a host copy).
  filled_block fill_new(pool_id pool, std::size_t bytes, std::uint64_t seed,
                        data_kind kind = data_kind::random_bytes)
  {
    filled_block b;
    {
      pool_scope const scope(alloc(), pool);
      b.ptr = alloc().allocate(bytes, 0, nullptr);
    }
    b.bytes = bytes;
    b.data  = make_data(kind, bytes, seed);
    drv().memcpy_htod(b.ptr, b.data.data(), bytes);
    return b;
  }

  /// Reads every block back and compares it with its bytes; names the first difference.
  void expect_intact(std::vector<filled_block> const& blocks, std::string const& when) const
  {
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      std::vector<std::byte> back(blocks[i].bytes);
      drv().memcpy_dtoh(back.data(), blocks[i].ptr, back.size());
      auto const diff = std::mismatch(back.begin(), back.end(), blocks[i].data.begin());
      ASSERT_TRUE(diff.first == back.end())
        << when << ": block " << i << " (" << blocks[i].bytes << " bytes at " << hex(blocks[i].ptr)
        << ") differs at byte " << (diff.first - back.begin());
    }
  }

  /// Frees every block of `blocks`.
  void free_all(std::vector<filled_block>& blocks)
  {
    for (auto const& b : blocks) {
      alloc().deallocate(b.ptr, b.bytes, 0, nullptr);
    }
    blocks.clear();
  }

  [[nodiscard]] std::size_t live_bytes(std::vector<filled_block> const& blocks) const
  {
    std::size_t total = 0;
    for (auto const& b : blocks) {
      total += b.bytes;
    }
    return total;
  }
};

/// Every eviction compresses behind its copies (compress_after 0, the behaviour before
/// lazy compression): for the tests that check compressed copies. The default, lazy
/// compression (compression_policy.hpp), has its own tests (SwapLazyTest).
class SwapBehindTest : public SwapTest {
 protected:
  [[nodiscard]] allocator_options options() const override
  {
    allocator_options o = SwapTest::options();
    o.compress_after    = std::chrono::milliseconds(0);
    return o;
  }
};

}  // namespace swapalloc::testing
