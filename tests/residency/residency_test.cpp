// Tests of include/swapalloc/residency.hpp: the transitions of a page's residency and of
// its host copy, driven through transfer_engine, with check() after each. The kept copies
// of a read-only pool go stale when a block lands on their page and are dropped at the
// next sweep; a page left mapped by a failed rollback is neither resident nor lost.
#include <swapalloc/transfer.hpp>

#include "driver_fixture.hpp"
#include "sim_control.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace swapalloc::testing {
namespace {

constexpr std::size_t KiB = 1024;

class ResidencyTest : public DriverTest {
 protected:
  void SetUp() override
  {
    DriverTest::SetUp();
    store_.emplace(drv());
    workers_.emplace(1);
    events_.emplace(drv());
  }
  void TearDown() override
  {
    engine_.reset();  // before the store: its unsettled extents go back to it
    store_.reset();
    events_.reset();
    DriverTest::TearDown();
  }

  /// A residency of 8 pages over the test's store; `keep`: keeps the copies of restored pages.
  [[nodiscard]] std::unique_ptr<pool_residency> make(bool keep) const
  {
    return std::make_unique<pool_residency>(drv(), device(), "model", 8 * gran(), gran(), keep);
  }
  transfer_engine& engine()
  {
    if (!engine_) { engine_.emplace(drv(), *store_, *workers_, *events_); }
    return *engine_;
  }
  /// A block of `bytes` in `pool`, filled with `value` words through the driver.
  block* filled(pool_residency& pool, std::size_t bytes, std::uint32_t value) const
  {
    block* const b = pool.allocate(round_request(bytes), bytes, tag_of(nullptr));
    EXPECT_NE(b, nullptr);
    drv().memset_d32(pool.pool().address(*b), value, bytes / 4);
    return b;
  }
  [[nodiscard]] std::uint32_t first_word(pool_residency const& pool, block const& b) const
  {
    std::uint32_t word = 0;
    drv().memcpy_dtoh(&word, pool.pool().address(b), sizeof word);
    return word;
  }
  /// Evicts every resident or restoring page, after the device's work (the precondition
  /// the allocator meets with a synchronization: a memset is asynchronous to the host).
  void evict_all(pool_residency& pool)
  {
    drv().synchronize_context();
    pool.prepare_swap();
    std::vector<std::size_t> pages;
    for (std::size_t p = 0; p < pool.pool().page_count(); ++p) {
      page_state const state = pool.pool().page(p);
      if (state == page_state::resident || state == page_state::restoring) { pages.push_back(p); }
    }
    (void)engine().evict(pool, pages, codec_choice{{}, codec_id::lz4});
  }
  void restore_all(pool_residency& pool)
  {
    std::vector<std::size_t> pages;
    for (std::size_t p = 0; p < pool.pool().page_count(); ++p) {
      if (data_on_host(pool.pool().page(p))) { pages.push_back(p); }
    }
    (void)engine().restore(pool, pages, nullptr);
  }

  std::optional<host_store> store_;
  std::optional<worker_pool> workers_;
  std::optional<event_pool> events_;
  std::optional<transfer_engine> engine_;
};

TEST_F(ResidencyTest, KeptCopiesGoStaleWhenABlockLandsOnTheirPageAndAreDroppedAtTheSweep)
{
  auto pool      = make(true);
  block* const a = filled(*pool, 64 * KiB, 0xA1);
  block* const b = filled(*pool, 3 * gran(), 0xB2);  // pages 1-3, large
  evict_all(*pool);
  restore_all(*pool);
  ASSERT_EQ(pool->check(), "");
  EXPECT_EQ(pool->copy(0), copy_state::current) << "the small page's copy is kept";
  EXPECT_EQ(pool->copy(2), copy_state::current);
  pool->wait_for_compression();
  std::size_t const kept_bytes = pool->stats().host_bytes;
  EXPECT_GT(kept_bytes, 0U);
  block* const c = filled(*pool, 4 * KiB, 0xC3);  // lands on the small page 0
  EXPECT_EQ(pool->copy(0), copy_state::stale) << "new data on the page";
  EXPECT_EQ(pool->copy(2), copy_state::current) << "other pages keep theirs";
  EXPECT_EQ(pool->check(), "");
  pool->prepare_swap();  // the sweep
  EXPECT_EQ(pool->copy(0), copy_state::none);
  EXPECT_LT(pool->stats().host_bytes, kept_bytes);
  EXPECT_EQ(pool->check(), "");
  auto const copies_before = sim().available() ? sim().call_count("cuMemcpyDtoHAsync") : 0;
  evict_all(*pool);
  if (sim().available()) {
    EXPECT_EQ(sim().call_count("cuMemcpyDtoHAsync") - copies_before, 1U)
      << "page 0 is copied again (a and c, adjacent: one range); pages 1-3 only unmapped";
  }
  restore_all(*pool);
  EXPECT_EQ(first_word(*pool, *a), 0xA1U);
  EXPECT_EQ(first_word(*pool, *b), 0xB2U);
  EXPECT_EQ(first_word(*pool, *c), 0xC3U);
  for (block* freed : {a, b, c}) {
    pool->deallocate(freed);
  }
  EXPECT_EQ(pool->check(), "");
}

TEST_F(ResidencyTest, NotKeepingCopiesAnyMoreDropsTheKeptOnesAtOnce)
{
  auto pool      = make(true);
  block* const a = filled(*pool, 5 * gran() / 2, 0xA1);
  evict_all(*pool);
  restore_all(*pool);
  EXPECT_EQ(pool->copy(0), copy_state::current);
  pool->set_keep_copies(false);
  EXPECT_EQ(pool->copy(0), copy_state::none);
  EXPECT_EQ(pool->copy(1), copy_state::none);
  EXPECT_EQ(pool->stats().host_bytes, 0U);
  EXPECT_EQ(pool->check(), "");
  pool->deallocate(a);
}

/// Copies of pages [first, first + count) of `pool` into extents of `store`, as an
/// evict's completed copies: the whole page live.
std::vector<std::unique_ptr<page_copy>> copy_out(driver const& drv, host_store& store,
                                                 pool_residency const& pool, std::size_t first,
                                                 std::size_t count)
{
  std::size_t const page_size = pool.pool().page_size();
  std::vector<std::unique_ptr<page_copy>> copies;
  for (std::size_t page = first; page < first + count; ++page) {
    auto copy        = std::make_unique<page_copy>();
    copy->ranges     = {live_range{0, page_size}};
    copy->live_bytes = page_size;
    copy->data_bytes = page_size;
    copy->packed     = store.allocate(page_size);
    drv.memcpy_dtoh(copy->packed.data, pool.pool().page_address(page), page_size);
    copies.push_back(std::move(copy));
  }
  return copies;
}

TEST_F(ResidencyTest, ARunIsEvictedWithOneUnmapAndEachPageGetsItsCopy)
{
  auto pool      = make(false);
  block* const a = filled(*pool, 3 * gran(), 0xC3);
  drv().synchronize_context();
  pool->prepare_swap();
  (void)pool->image_for(*store_);
  auto copies        = copy_out(drv(), *store_, *pool, 0, 3);
  auto const unmaps  = sim().available() ? sim().call_count("cuMemUnmap") : 0;
  auto const evicted = pool->evict_copied_run(0, copies);
  if (sim().available()) { EXPECT_EQ(sim().call_count("cuMemUnmap"), unmaps + 1); }
  EXPECT_FALSE(evicted.error);
  ASSERT_EQ(evicted.installed.size(), 3U);
  for (std::size_t page = 0; page < 3; ++page) {
    EXPECT_NE(evicted.installed[page], nullptr);
    EXPECT_EQ(pool->pool().page(page), page_state::evicted);
    EXPECT_EQ(pool->copy(page), copy_state::current);
  }
  EXPECT_EQ(pool->check(), "");
  std::vector<std::unique_ptr<page_copy>> for_evicted;
  for_evicted.push_back(std::make_unique<page_copy>());
  EXPECT_THROW((void)pool->evict_copied_run(1, for_evicted), std::logic_error)
    << "page 1 has a copy already";
  EXPECT_NE(for_evicted[0], nullptr) << "a refused copy stays with the caller";
  EXPECT_EQ(pool->stats().host_bytes, 3 * gran()) << "the three copies, installed";
  pool->deallocate_parked(a);  // a block whose pages are evicted: their copies go
  EXPECT_EQ(pool->copy(0), copy_state::none);
  EXPECT_EQ(pool->stats().host_bytes, 0U);
  EXPECT_EQ(pool->check(), "");
}

/// Evicts a pool holding one 2-page block, waits for its compression, then fails its
/// restore's second copy and the rollback's first unmap: page 0 is left restoring (mapped,
/// not filled).
class RestoringPageTest : public ResidencyTest {
 protected:
  void SetUp() override
  {
    ResidencyTest::SetUp();
    if (!sim().available()) { GTEST_SKIP() << "injects driver failures"; }
    pool_  = make(false);
    block_ = filled(*pool_, 2 * gran(), 0x5A5A5A5A);
    evict_all(*pool_);
    // Compressed first (lz4, a chunk per 1 MiB, each its own copy), so that the second
    // copy is page 0's second chunk. A restore that cancels a compression still running
    // (TSan's pace) gathers the raw chunks into one copy, and fails none.
    if (task_group* const jobs = pool_->compression_in_flight()) { jobs->wait(); }
    ASSERT_EQ(sim().fail_call("cuMemcpyHtoDAsync", 2, CUDA_SUCCESS), CUDA_SUCCESS);
    ASSERT_EQ(sim().fail_call("cuMemUnmap", 1, CUDA_SUCCESS), CUDA_SUCCESS);
    EXPECT_THROW(restore_all(*pool_), cuda_error);
    sim().clear_faults();
    ASSERT_EQ(pool_->pool().page(0), page_state::restoring);
    ASSERT_EQ(pool_->pool().page(1), page_state::evicted);
    ASSERT_EQ(pool_->check(), "");
  }
  void TearDown() override
  {
    pool_.reset();
    ResidencyTest::TearDown();
  }
  std::unique_ptr<pool_residency> pool_;
  block* block_{nullptr};
};

TEST_F(RestoringPageTest, ItIsNotCountedResidentAndTheNextRestoreFillsIt)
{
  EXPECT_EQ(pool_->stats().reserved_bytes, 0U);
  EXPECT_EQ(pool_->stats().evicted_bytes, 2 * gran());
  EXPECT_EQ(pool_->copy(0), copy_state::current) << "its data is still the host copy";
  restore_all(*pool_);
  EXPECT_EQ(pool_->pool().page(0), page_state::resident);
  EXPECT_EQ(first_word(*pool_, *block_), 0x5A5A5A5AU);
  std::uint32_t last = 0;
  drv().memcpy_dtoh(&last, pool_->pool().address(*block_) + 2 * gran() - 4, sizeof last);
  EXPECT_EQ(last, 0x5A5A5A5AU);
  EXPECT_EQ(pool_->check(), "");
  pool_->deallocate(block_);
}

TEST_F(RestoringPageTest, EvictingItOnlyUnmapsIt)
{
  auto const copies_before = sim().call_count("cuMemcpyDtoHAsync");
  evict_all(*pool_);
  EXPECT_EQ(sim().call_count("cuMemcpyDtoHAsync"), copies_before) << "its copy is current";
  EXPECT_EQ(pool_->pool().page(0), page_state::evicted);
  EXPECT_EQ(pool_->check(), "");
  restore_all(*pool_);
  EXPECT_EQ(first_word(*pool_, *block_), 0x5A5A5A5AU);
  pool_->deallocate(block_);
}

TEST_F(RestoringPageTest, FreeingItsBlockDropsTheCopiesAndLeavesNothingParked)
{
  pool_->deallocate_parked(block_);
  EXPECT_EQ(pool_->pool().page(0), page_state::resident) << "mapped, and without data now";
  EXPECT_EQ(pool_->pool().page(1), page_state::unmapped);
  EXPECT_EQ(pool_->copy(0), copy_state::none);
  EXPECT_EQ(pool_->copy(1), copy_state::none);
  EXPECT_EQ(pool_->check(), "");
  drv().synchronize_context();
  EXPECT_EQ(pool_->release_idle_pages(), gran()) << "the page left mapped is given back";
  EXPECT_EQ(pool_->stats().host_bytes, 0U);
  EXPECT_EQ(pool_->check(), "");
}

}  // namespace
}  // namespace swapalloc::testing
