// Tests of transfer.hpp's copy batches (detail/copy_batch.hpp): a pool whose live bytes
// are scattered (blocks with free gaps over transfer_options::gap_bytes between them) is
// evicted and restored with one cuMemcpyBatchAsync per up to 64 copies where one
// cuMemcpy*Async per range was made; with batch_copies off each range is its own call
// again; a batch call that fails leaves the pool as a failed single copy does: every page
// resident (evict) or evicted with its copy (restore), every byte intact, and the next
// transfer succeeds, and copies a failed transfer had gathered are never issued.
#include <swapalloc/transfer.hpp>

#include "driver_fixture.hpp"
#include "sim_control.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace swapalloc::testing {
namespace {

// 32 live ranges per 2 MiB page: a batch (64 copies) is not full at a page's end, so the
// event behind the page must come after the batch is issued.
constexpr std::size_t block_bytes = 32 * std::size_t{1024};  // and as many free after each

/// A pool of `pages` pages of which every other 32 KiB block is live (each holding its
/// own numbered words) and the others free, and an engine for it.
class TransferBatchTest : public DriverTest {
 protected:
  static constexpr std::size_t pages = 2;

  void start(transfer_options transfer = {})
  {
    store_.emplace(drv());
    workers_.emplace(1);
    events_.emplace(drv());
    pool_.emplace(drv(), device(), "scattered", pages * gran(), gran(), false);
    std::vector<block*> all;
    for (std::size_t at = 0; at < pages * gran(); at += block_bytes) {
      all.push_back(pool_->allocate(block_bytes, block_bytes, tag_of(nullptr)));
      ASSERT_NE(all.back(), nullptr);
    }
    for (std::size_t i = 0; i < all.size(); ++i) {
      if (i % 2 == 1) {
        pool_->deallocate(all[i]);
        continue;
      }
      std::vector<std::uint32_t> words(block_bytes / sizeof(std::uint32_t));
      for (std::size_t w = 0; w < words.size(); ++w) {
        words[w] = static_cast<std::uint32_t>((i * words.size() + w) * 2654435761U + 1);
      }
      drv().memcpy_htod(pool_->pool().address(*all[i]), words.data(), block_bytes);
      live_.push_back(all[i]);
      words_.push_back(std::move(words));
    }
    engine_.emplace(drv(), *store_, *workers_, *events_, transfer);
    engine_->prepare();
    pool_->prepare_swap();
  }
  void TearDown() override
  {
    for (block* b : live_) {
      pool_->deallocate(b);
    }
    engine_.reset();
    pool_.reset();
    events_.reset();
    workers_.reset();
    store_.reset();
    DriverTest::TearDown();
  }
  [[nodiscard]] static std::vector<std::size_t> every_page() { return {0, 1}; }
  evict_result evict()
  {
    return engine_->evict(*pool_, every_page(), codec_choice{{}, codec_id::raw});
  }
  /// Every live block reads back as it was written.
  void expect_intact()
  {
    for (std::size_t i = 0; i < live_.size(); ++i) {
      std::vector<std::uint32_t> read(words_[i].size());
      drv().memcpy_dtoh(read.data(), pool_->pool().address(*live_[i]), block_bytes);
      ASSERT_EQ(read, words_[i]) << "live block " << i;
    }
  }
  /// Every page of the pool is in `state`.
  void expect_pages(page_state state)
  {
    for (std::size_t page = 0; page < pages; ++page) {
      EXPECT_EQ(pool_->pool().page(page), state) << "page " << page;
    }
  }
  /// Calls of `entry` made by `action`.
  template <typename Action>
  unsigned long long calls_of(char const* entry, Action&& action)
  {
    unsigned long long const before = sim().call_count(entry);
    action();
    return sim().call_count(entry) - before;
  }

  std::optional<host_store> store_;
  std::optional<worker_pool> workers_;
  std::optional<event_pool> events_;
  std::optional<pool_residency> pool_;
  std::optional<transfer_engine> engine_;
  std::vector<block*> live_;
  std::vector<std::vector<std::uint32_t>> words_;
};

TEST_F(TransferBatchTest, ScatteredLiveRangesGoOutAndComeBackInBatches)
{
  SIM_ONLY(sim(), "counts driver calls");
  ASSERT_TRUE(drv().has_memcpy_batch()) << "the simulator exports cuMemcpyBatchAsync_v2";
  start();
  std::size_t const ranges = live_.size();
  evict_result out;
  unsigned long long singles       = 0;
  unsigned long long const batches = calls_of(
    "cuMemcpyBatchAsync", [&] { singles = calls_of("cuMemcpyDtoHAsync", [&] { out = evict(); }); });
  EXPECT_EQ(out.pages_copied, pages);
  EXPECT_EQ(out.bytes_copied, ranges * block_bytes) << "the free gaps stay behind";
  EXPECT_EQ(out.copies, ranges) << "no two live ranges continue each other";
  EXPECT_EQ(out.copy_calls, batches + singles);
  EXPECT_GE(batches, 1U);
  // 32 ranges per 2 MiB page: a batch per page (issued before the event behind the page),
  // where each range was a call.
  EXPECT_LE(out.copy_calls,
            (ranges + detail::copy_batch::capacity - 1) / detail::copy_batch::capacity + pages);
  expect_pages(page_state::evicted);

  restore_result back;
  unsigned long long const restore_batches = calls_of("cuMemcpyBatchAsync", [&] {
    singles = calls_of("cuMemcpyHtoDAsync",
                       [&] { back = engine_->restore(*pool_, every_page(), nullptr); });
  });
  EXPECT_EQ(back.raw_copies, ranges) << "each range goes back to its own address";
  EXPECT_EQ(back.raw_copy_calls, restore_batches + singles);
  EXPECT_GE(restore_batches, 1U);
  EXPECT_LE(back.raw_copy_calls, out.copy_calls + pages);
  expect_pages(page_state::resident);
  expect_intact();
  EXPECT_EQ(pool_->check(), "");
}

TEST_F(TransferBatchTest, WithoutBatchCopiesEveryRangeIsACallOfItsOwn)
{
  SIM_ONLY(sim(), "counts driver calls");
  start(transfer_options{.batch_copies = false});
  std::size_t const ranges = live_.size();
  evict_result out;
  restore_result back;
  unsigned long long const batches = calls_of("cuMemcpyBatchAsync", [&] {
    out  = evict();
    back = engine_->restore(*pool_, every_page(), nullptr);
  });
  EXPECT_EQ(batches, 0U);
  EXPECT_EQ(out.copies, ranges);
  EXPECT_EQ(out.copy_calls, ranges);
  EXPECT_EQ(back.raw_copies, ranges);
  EXPECT_EQ(back.raw_copy_calls, ranges);
  expect_intact();
}

TEST_F(TransferBatchTest, AFailedBatchInAnEvictionLeavesEveryPageResidentAndTheNextOneSucceeds)
{
  SIM_ONLY(sim(), "injects a driver fault");
  start();
  ASSERT_EQ(sim().fail_call("cuMemcpyBatchAsync", 1, CUDA_ERROR_INVALID_VALUE), CUDA_SUCCESS);
  EXPECT_THROW((void)evict(), cuda_error);
  expect_pages(page_state::resident);
  EXPECT_EQ(pool_->check(), "");
  expect_intact();

  pool_->prepare_swap();
  evict_result const out = evict();
  EXPECT_EQ(out.pages_copied, pages);
  (void)engine_->restore(*pool_, every_page(), nullptr);
  expect_intact();
}

TEST_F(TransferBatchTest, CopiesStillGatheredWhenAnEvictionFailsAreNeverIssued)
{
  SIM_ONLY(sim(), "injects a driver fault");
  start();
  // Page 1 keeps no live block: the eviction releases it after gathering page 0's copies,
  // and that release's unmap fails with page 0's copies in the batch, unissued.
  std::size_t const in_page_0 = live_.size() / pages;
  for (std::size_t i = in_page_0; i < live_.size(); ++i) {
    pool_->deallocate(live_[i]);
  }
  live_.resize(in_page_0);
  words_.resize(in_page_0);
  pool_->prepare_swap();
  ASSERT_EQ(sim().fail_call("cuMemUnmap", 1, CUDA_ERROR_INVALID_VALUE), CUDA_SUCCESS);
  unsigned long long const failed_batches =
    calls_of("cuMemcpyBatchAsync", [&] { EXPECT_THROW((void)evict(), cuda_error); });
  EXPECT_EQ(failed_batches, 0U) << "page 0's copies were still gathered when it failed";
  EXPECT_EQ(pool_->pool().page(0), page_state::resident);
  expect_intact();

  // The next transfer starts with an empty batch: the failed one's copies, whose host
  // extents went back, are not issued into them.
  pool_->prepare_swap();
  evict_result const out = evict();
  EXPECT_EQ(out.copies, in_page_0) << "this eviction's copies only";
  EXPECT_EQ(out.pages_copied, 1U);
  (void)engine_->restore(*pool_, {0}, nullptr);
  expect_intact();
}

TEST_F(TransferBatchTest, AFailedBatchInARestoreLeavesThePagesEvictedAndALaterRestoreFillsThem)
{
  SIM_ONLY(sim(), "injects a driver fault");
  start();
  (void)evict();
  ASSERT_EQ(sim().fail_call("cuMemcpyBatchAsync", 1, CUDA_ERROR_INVALID_VALUE), CUDA_SUCCESS);
  EXPECT_THROW((void)engine_->restore(*pool_, every_page(), nullptr), cuda_error);
  expect_pages(page_state::evicted);
  EXPECT_EQ(pool_->check(), "");

  restore_result const back = engine_->restore(*pool_, every_page(), nullptr);
  EXPECT_EQ(back.pages, pages);
  expect_intact();
}

}  // namespace
}  // namespace swapalloc::testing
