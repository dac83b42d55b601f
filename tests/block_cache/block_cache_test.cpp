// Tests of include/swapalloc/block_cache.hpp: placement, splitting, coalescing, stream
// ownership and page bookkeeping. Pure bookkeeping, so no driver is involved; pages are
// marked resident by hand where a pool would map them.
#include <swapalloc/block_cache.hpp>

#include <gtest/gtest.h>

#include <cstddef>
#include <random>
#include <stdexcept>
#include <utility>
#include <vector>

namespace swapalloc {
namespace {

constexpr std::size_t MiB  = std::size_t{1} << 20;
constexpr std::size_t page = 2 * MiB;

CUstream stream_n(std::uintptr_t n) { return reinterpret_cast<CUstream>(n * 16); }  // NOLINT

/// A cache whose taken blocks get their pages marked resident, as a pool would map them.
class BlockCacheTest : public ::testing::Test {
 protected:
  block* take(std::size_t bytes, CUstream stream = nullptr)
  {
    block* const b = cache_.take(round_request(bytes), tag_of(stream));
    if (b != nullptr) {
      cache_.for_each_missing_run(*b, [&](std::size_t first, std::size_t count) {
        cache_.change_pages(first, count, page_state::resident);
      });
    }
    return b;
  }
  void expect_consistent() { EXPECT_EQ(cache_.check(), "") << "structure broken"; }

  block_cache cache_{64 * page, page};
};

TEST(BlockCacheRounding, RoundsToMultiplesOf512WithAMinimumOf512)
{
  EXPECT_EQ(round_request(1), 512U);
  EXPECT_EQ(round_request(512), 512U);
  EXPECT_EQ(round_request(513), 1024U);
  EXPECT_EQ(round_request(MiB + 1), MiB + 512);
}

TEST(BlockCacheConstruction, RejectsBadPageSizeAndCapacityNamingThem)
{
  try {
    block_cache bad(64 * page, 4096);
    FAIL() << "a 4 KiB page was accepted";
  } catch (std::invalid_argument const& error) {
    EXPECT_NE(std::string(error.what()).find("page_size=4096"), std::string::npos) << error.what();
  }
  try {
    block_cache bad(3 * MiB, page);
    FAIL() << "a capacity that is not a page multiple was accepted";
  } catch (std::invalid_argument const& error) {
    EXPECT_NE(std::string(error.what()).find("capacity=3145728"), std::string::npos)
      << error.what();
  }
}

TEST_F(BlockCacheTest, SmallBlocksArePackedIntoOneSmallPage)
{
  block* a = take(1000);
  block* b = take(3000);
  block* c = take(512);
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(a->kind, block_kind::small);
  EXPECT_EQ(a->offset, 0U);
  EXPECT_EQ(b->offset, 1024U);
  EXPECT_EQ(c->offset, 1024U + 3072U);
  EXPECT_EQ(cache_.resident_pages(), 1U);
  EXPECT_EQ(cache_.end(), page);
  expect_consistent();
}

TEST_F(BlockCacheTest, LargeBlocksStayContiguousAcrossPages)
{
  block* a = take(5 * MiB);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->kind, block_kind::large);
  EXPECT_EQ(a->size, 5 * MiB);
  EXPECT_EQ(cache_.resident_pages(), 3U) << "5 MiB from offset 0 touches pages 0, 1 and 2";
  block* b = take(3 * MiB);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->offset, 5 * MiB) << "the next large block follows without a gap";
  EXPECT_EQ(cache_.resident_pages(), 4U) << "page 2 is shared, page 3 is new";
  expect_consistent();
}

TEST_F(BlockCacheTest, SmallAndLargeNeverSharePage)
{
  block* large = take(5 * MiB / 2);  // ends in the middle of page 1
  block* small = take(4096);
  ASSERT_TRUE(large && small);
  EXPECT_EQ(small->offset % page, 0U) << "small blocks get a page of their own";
  EXPECT_GE(small->offset, 4 * MiB);
  block* large2 = take(MiB + 512);
  ASSERT_NE(large2, nullptr);
  EXPECT_EQ(large2->offset, 5 * MiB / 2)
    << "the padding below the small page serves large requests";
  expect_consistent();
}

TEST_F(BlockCacheTest, CachedBlockIsReusedAtOnceOnItsStreamOnly)
{
  block* a = take(4096, stream_n(1));
  ASSERT_NE(a, nullptr);
  cache_.cache(a);
  EXPECT_EQ(cache_.take_cached(4096, tag_of(stream_n(2))), nullptr) << "another stream must wait";
  EXPECT_EQ(cache_.take_cached(4608, tag_of(stream_n(1))), nullptr) << "bins are exact-size";
  EXPECT_EQ(cache_.take_cached(4096, tag_of(stream_n(1))), a);
  EXPECT_EQ(a->state, block_state::allocated);
  expect_consistent();
}

TEST_F(BlockCacheTest, FreeBlocksOfAnotherStreamAreNotReusedUntilStreamsAreForgotten)
{
  block* a = take(8 * MiB, stream_n(1));
  ASSERT_NE(a, nullptr);
  std::size_t const first_offset = a->offset;
  cache_.cache(a);
  block* b = take(8 * MiB, stream_n(2));
  ASSERT_NE(b, nullptr);
  EXPECT_NE(b->offset, first_offset) << "stream 2 reused stream 1's block without synchronization";
  cache_.cache(b);
  cache_.flush_bins();
  cache_.forget_streams();  // what a pool does after synchronizing the device
  block* c = take(16 * MiB, stream_n(3));
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->offset, first_offset) << "after forgetting streams both blocks merge for any stream";
  expect_consistent();
}

TEST_F(BlockCacheTest, FreedNeighboursCoalesceWhenFlushed)
{
  block* a = take(3 * MiB);
  block* b = take(3 * MiB);
  block* c = take(3 * MiB);
  ASSERT_TRUE(a && b && c);
  cache_.cache(a);
  cache_.cache(c);
  cache_.cache(b);
  EXPECT_EQ(cache_.cached_blocks(), 3U);
  cache_.flush_bins();
  EXPECT_EQ(cache_.cached_blocks(), 0U);
  std::size_t free_blocks = 0;
  cache_.for_each_block(
    [&](block const& each) { free_blocks += each.state == block_state::free ? 1 : 0; });
  EXPECT_EQ(free_blocks, 1U);
  EXPECT_EQ(cache_.largest_free_resident(), 9 * MiB);
  block* whole = take(9 * MiB);
  ASSERT_NE(whole, nullptr);
  EXPECT_EQ(whole->offset, 0U);
  EXPECT_EQ(cache_.end(), 9 * MiB) << "coalesced space is reused before the range grows";
  expect_consistent();
}

TEST_F(BlockCacheTest, MissFlushesBinsBeforeGrowing)
{
  block* a = take(4 * MiB);
  block* b = take(4 * MiB);
  ASSERT_TRUE(a && b);
  cache_.cache(a);
  cache_.cache(b);
  block* c = take(6 * MiB);  // no 6 MiB bin; the two cached 4 MiB blocks coalesce to 8
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->offset, 0U);
  EXPECT_EQ(cache_.end(), 8 * MiB);
  expect_consistent();
}

TEST_F(BlockCacheTest, WhollyFreeSmallPageReturnsToLargeSpace)
{
  std::vector<block*> smalls;
  smalls.reserve(4);
  for (int i = 0; i < 4; ++i) {
    smalls.push_back(take(MiB / 2));
  }
  ASSERT_EQ(cache_.end(), page);
  for (block* b : smalls) {
    cache_.cache(b);
  }
  block* large = take(page);  // misses, flushes: the small page merges back, whole
  ASSERT_NE(large, nullptr);
  EXPECT_EQ(large->offset, 0U);
  EXPECT_EQ(large->kind, block_kind::large);
  EXPECT_EQ(cache_.end(), page) << "the small page's memory served the large request";
  expect_consistent();
}

TEST_F(BlockCacheTest, SmallPageIsCarvedFromResidentFreeSpaceFirst)
{
  block* a = take(8 * MiB);  // pages 0-3 resident
  ASSERT_NE(a, nullptr);
  cache_.release(a);                                // free, indexed, still resident
  cache_.change_pages(0, 2, page_state::unmapped);  // as if pages 0-1 were given back
  block* small = take(4096);
  ASSERT_NE(small, nullptr);
  EXPECT_EQ(small->offset, 2 * page) << "the first resident page inside the free block";
  EXPECT_EQ(cache_.resident_pages(), 2U) << "no page had to be mapped";
  expect_consistent();
}

TEST_F(BlockCacheTest, MissingRunsNameExactlyTheNonResidentPages)
{
  block* a = take(8 * MiB);
  ASSERT_NE(a, nullptr);
  cache_.release(a);
  cache_.change_pages(1, 2, page_state::unmapped);
  block* b = cache_.take(8 * MiB, tag_of(nullptr));
  ASSERT_EQ(b, a);
  std::vector<std::pair<std::size_t, std::size_t>> runs;
  cache_.for_each_missing_run(
    *b, [&](std::size_t first, std::size_t count) { runs.emplace_back(first, count); });
  ASSERT_EQ(runs.size(), 1U);
  EXPECT_EQ(runs[0], std::make_pair(std::size_t{1}, std::size_t{2}));
}

TEST_F(BlockCacheTest, IdleRunsAreResidentPagesWithoutUsers)
{
  block* a = take(3 * MiB);  // pages 0-1
  block* b = take(3 * MiB);  // pages 1-2
  ASSERT_TRUE(a && b);
  std::vector<std::pair<std::size_t, std::size_t>> idle;
  auto collect = [&] {
    idle.clear();
    cache_.for_each_idle_run(
      [&](std::size_t first, std::size_t count) { idle.emplace_back(first, count); });
  };
  collect();
  EXPECT_TRUE(idle.empty());
  cache_.release(a);
  collect();
  ASSERT_EQ(idle.size(), 1U) << "page 1 is still used by b";
  EXPECT_EQ(idle[0], std::make_pair(std::size_t{0}, std::size_t{1}));
  cache_.cache(b);
  collect();
  EXPECT_EQ(idle.size(), 1U) << "a cached block keeps its pages";
  cache_.flush_bins();
  collect();
  ASSERT_EQ(idle.size(), 1U);
  EXPECT_EQ(idle[0], std::make_pair(std::size_t{0}, std::size_t{3}));
}

/// The runs `for_each_releasable_run` names, or `for_each_idle_run` (`idle`).
using page_runs = std::vector<std::pair<std::size_t, std::size_t>>;
page_runs releasable_runs(block_cache const& cache)
{
  page_runs runs;
  cache.for_each_releasable_run(
    [&](std::size_t first, std::size_t count) { runs.emplace_back(first, count); });
  return runs;
}
page_runs idle_runs(block_cache const& cache)
{
  page_runs runs;
  cache.for_each_idle_run(
    [&](std::size_t first, std::size_t count) { runs.emplace_back(first, count); });
  return runs;
}

TEST_F(BlockCacheTest, ReleasableRunsSkipOnlyPagesWithAllocatedOrWaitingBlocks)
{
  block* a    = take(3 * MiB);  // pages 0-1
  block* b    = take(3 * MiB);  // pages 1-2
  block* c    = take(4 * MiB);  // pages 3-4
  block* d    = take(4 * MiB);  // pages 5-6
  block* tiny = take(4096);     // page 7, small
  ASSERT_TRUE(a && b && c && d && tiny);
  EXPECT_TRUE(releasable_runs(cache_).empty());
  cache_.cache(b);
  cache_.cache(d);
  cache_.cache(tiny);
  EXPECT_EQ(releasable_runs(cache_), (page_runs{{2, 1}, {5, 3}}))
    << "cached blocks hold no data; page 1 still holds a's";
  EXPECT_TRUE(idle_runs(cache_).empty()) << "but they are users until a flush";
  cache_.hold(c, 1);
  EXPECT_EQ(releasable_runs(cache_), (page_runs{{2, 1}, {5, 3}})) << "a waiting block keeps c's";
  cache_.cache(c);
  cache_.release(a);
  page_runs const before = releasable_runs(cache_);
  EXPECT_EQ(before, (page_runs{{0, 8}}));
  cache_.flush_bins();
  EXPECT_EQ(releasable_runs(cache_), before) << "a flush changes no page";
  EXPECT_EQ(idle_runs(cache_), before);
  expect_consistent();
}

TEST_F(BlockCacheTest, TrimEndLowersTheHighWaterMarkOverUnmappedPages)
{
  block* a = take(4 * MiB);
  block* b = take(6 * MiB);
  ASSERT_TRUE(a && b);
  cache_.release(b);
  cache_.trim_end();
  EXPECT_EQ(cache_.end(), 10 * MiB) << "its pages are still resident: nothing to trim";
  cache_.change_pages(2, 3, page_state::unmapped);
  cache_.trim_end();
  EXPECT_EQ(cache_.end(), 4 * MiB);
  expect_consistent();
}

TEST_F(BlockCacheTest, FullRangeReturnsNullAndStaysConsistent)
{
  block* all = take(64 * page);
  ASSERT_NE(all, nullptr);
  EXPECT_EQ(take(512), nullptr);
  EXPECT_EQ(take(page), nullptr);
  cache_.cache(all);
  EXPECT_EQ(take(65 * page), nullptr);
  EXPECT_NE(take(page), nullptr) << "after flushing, the cached range serves smaller requests";
  expect_consistent();
}

TEST_F(BlockCacheTest, HeldBlockKeepsItsPagesUntilCached)
{
  block* a = take(4 * MiB);
  ASSERT_NE(a, nullptr);
  cache_.hold(a, 2);
  EXPECT_EQ(a->state, block_state::awaiting_events);
  EXPECT_EQ(cache_.page_users(0), 1U);
  EXPECT_EQ(take(4 * MiB)->offset, 4 * MiB) << "a held block is not reused";
  cache_.cache(a);
  EXPECT_EQ(cache_.take_cached(4 * MiB, tag_of(nullptr)), a);
  expect_consistent();
}

TEST(BlockCacheRandom, RandomOperationsKeepEveryInvariant)
{
  block_cache cache(256 * page, page);
  std::mt19937_64 random(20261122);
  std::vector<block*> live;
  std::uniform_int_distribution<int> action(0, 99);
  std::size_t taken = 0;
  for (int step = 0; step < 20000; ++step) {
    int const what = action(random);
    if (what < 55 || live.empty()) {
      std::size_t const bytes =
        (random() % 4 == 0) ? 1 + random() % (12 * MiB) : 1 + random() % (MiB / 4);
      CUstream const stream     = stream_n(1 + random() % 3);
      std::size_t const rounded = round_request(bytes);
      block* b                  = cache.take_cached(rounded, tag_of(stream));
      if (b == nullptr) { b = cache.take(rounded, tag_of(stream)); }
      if (b == nullptr) { continue; }
      cache.for_each_missing_run(*b, [&](std::size_t first, std::size_t count) {
        cache.change_pages(first, count, page_state::resident);
      });
      ASSERT_EQ(b->size, rounded);
      ASSERT_EQ(b->tag, tag_of(stream));
      live.push_back(b);
      ++taken;
    } else if (what < 95) {
      std::size_t const index = random() % live.size();
      block* const b          = live[index];
      live[index]             = live.back();
      live.pop_back();
      if (random() % 5 == 0) {
        cache.release(b);
      } else {
        cache.cache(b);
      }
    } else if (what < 98) {
      cache.flush_bins();
    } else {
      // A pool's empty_cache: flush, forget streams, give back idle pages, trim. What it
      // gives back is what the releasable runs named before the flush.
      page_runs const releasable = releasable_runs(cache);
      cache.flush_bins();
      cache.forget_streams();
      ASSERT_EQ(idle_runs(cache), releasable) << "after step " << step;
      cache.for_each_idle_run([&](std::size_t first, std::size_t count) {
        cache.change_pages(first, count, page_state::unmapped);
      });
      cache.trim_end();
    }
    if (step % 97 == 0) { ASSERT_EQ(cache.check(), "") << "after step " << step; }
  }
  EXPECT_GT(taken, 5000U);
  ASSERT_EQ(cache.check(), "");
}

// The swap tier: free space on evicted pages is parked, so no request lands there, and it
// serves requests again once the page is resident. Random liveness, random evicted pages.
TEST_F(BlockCacheTest, FreeSpaceOnEvictedPagesIsParkedAndNeverHandedOut)
{
  std::mt19937 random(5);
  std::vector<block*> live;
  for (int i = 0; i < 200; ++i) {
    std::size_t const bytes =
      random() % 4 == 0 ? (1 + random() % 6) * MiB : 512 + random() % 200000;
    if (block* const b = take(bytes); b != nullptr) { live.push_back(b); }
  }
  for (std::size_t i = 0; i < live.size(); i += 3) {
    cache_.release(live[i]);
  }  // gaps
  cache_.flush_bins();
  std::vector<bool> evicted(cache_.page_count(), false);
  for (std::size_t p = 0; p < cache_.page_count(); ++p) {
    if (cache_.page(p) == page_state::resident && cache_.page_users(p) != 0 && random() % 2 == 0) {
      cache_.change_pages(p, 1, page_state::evicted);
      evicted[p] = true;
    }
  }
  expect_consistent();
  ASSERT_GT(cache_.parked_pages(), 0U);
  for (int i = 0; i < 300; ++i) {  // nothing new may touch an evicted page
    std::size_t const bytes =
      random() % 4 == 0 ? (1 + random() % 3) * MiB : 512 + random() % 100000;
    block* const b = take(bytes);
    if (b == nullptr) { break; }
    for (std::size_t p = b->offset / page; p <= (b->end() - 1) / page; ++p) {
      ASSERT_FALSE(evicted[p]) << "a new block of " << bytes << " bytes lies on evicted page " << p;
    }
  }
  expect_consistent();
  for (std::size_t p = 0; p < cache_.page_count(); ++p) {  // restored: parking ends
    if (evicted[p]) {
      cache_.change_pages(p, 1, page_state::restoring);
      cache_.change_pages(p, 1, page_state::resident);
    }
  }
  expect_consistent();
  EXPECT_EQ(cache_.parked_pages(), 0U);
}

}  // namespace
}  // namespace swapalloc
