// Tests of include/swapalloc/pool.hpp: a pool's range is reserved once, pages are mapped
// on demand and given back by release_idle_pages, and a failing driver call leaves the
// pool consistent and usable. Device memory is read and written only through the driver.
#include <swapalloc/pool.hpp>

#include "driver_fixture.hpp"

#include <cstddef>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace swapalloc::testing {
namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;

class PoolTest : public DriverTest {
 protected:
  [[nodiscard]] device_pool make_pool(std::size_t pages = 32) const
  {
    return device_pool(drv(), device(), "test", pages * gran(), gran());
  }
};

TEST_F(PoolTest, ReservesOnceAndMapsPagesOnlyWhereBlocksLie)
{
  std::size_t const before = free_bytes();
  device_pool pool         = make_pool();
  EXPECT_EQ(free_bytes(), before) << "a reservation takes no memory";
  block* b = pool.allocate(round_request(3 * MiB), 3 * MiB, tag_of(nullptr));
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(free_bytes(), before - 2 * gran()) << "3 MiB needs two 2 MiB pages";
  EXPECT_TRUE(pool.contains(pool.address(*b)));
  EXPECT_EQ(pool.address(*b), pool.base());
  pool_stats const s = pool.stats();
  EXPECT_EQ(s.reserved_bytes, 2 * gran());
  EXPECT_EQ(s.allocated_bytes, 3 * MiB);
  EXPECT_EQ(s.requested_bytes, 3 * MiB);
  EXPECT_EQ(s.live_blocks, 1U);
  EXPECT_EQ(s.cached_free_bytes, 4 * MiB - 3 * MiB);
  pool.deallocate(b);
  EXPECT_EQ(pool.check(), "");
}

TEST_F(PoolTest, BlocksAreUsableDeviceMemory)
{
  device_pool pool = make_pool();
  block* b         = pool.allocate(round_request(5 * MiB), 5 * MiB, tag_of(nullptr));
  ASSERT_NE(b, nullptr);
  std::size_t const words = 5 * MiB / 4;
  auto const written      = pattern(words, 0xB10C);
  drv().memcpy_htod(pool.address(*b), written.data(), 5 * MiB);
  EXPECT_EQ(read_words(drv(), pool.address(*b), words), written);
  pool.deallocate(b);
}

TEST_F(PoolTest, CachedBlockComesBackWithoutDriverCalls)
{
  SIM_ONLY(sim(), "counts driver calls");
  device_pool pool = make_pool();
  block* b         = pool.allocate(round_request(4096), 4096, tag_of(nullptr));
  ASSERT_NE(b, nullptr);
  pool.deallocate(b);
  auto const creates = sim().call_count("cuMemCreate");
  auto const maps    = sim().call_count("cuMemMap");
  block* again       = pool.allocate_cached(round_request(4096), 4096, tag_of(nullptr));
  EXPECT_EQ(again, b);
  EXPECT_EQ(sim().call_count("cuMemCreate"), creates);
  EXPECT_EQ(sim().call_count("cuMemMap"), maps);
  pool.deallocate(again);
}

TEST_F(PoolTest, ReleaseIdlePagesGivesMemoryBackAndKeepsLiveBlocks)
{
  std::size_t const before = free_bytes();
  device_pool pool         = make_pool();
  block* keep              = pool.allocate(round_request(MiB + 512), MiB + 512, tag_of(nullptr));
  block* drop              = pool.allocate(round_request(8 * MiB), 8 * MiB, tag_of(nullptr));
  ASSERT_TRUE(keep && drop);
  auto const kept = pattern(256, 7);
  drv().memcpy_htod(pool.address(*keep), kept.data(), kept.size() * 4);
  pool.deallocate(drop);
  drv().synchronize_context();
  std::size_t const released = pool.release_idle_pages();
  EXPECT_GE(released, 3 * gran()) << "pages 2-4 hold nothing but the freed block";
  EXPECT_EQ(pool.stats().reserved_bytes, gran()) << "page 0 holds the live block";
  EXPECT_EQ(free_bytes(), before - gran());
  EXPECT_EQ(read_words(drv(), pool.address(*keep), kept.size()), kept)
    << "a live block was touched";
  pool.deallocate(keep);
  drv().synchronize_context();
  (void)pool.release_idle_pages();
  EXPECT_EQ(free_bytes(), before);
  EXPECT_EQ(pool.stats().reserved_bytes, 0U);
  EXPECT_EQ(pool.stats().peak_reserved_bytes, 5 * gran());
  EXPECT_EQ(pool.check(), "");
}

/// One row of the idle-bytes table: blocks set up in a fresh pool, the pages
/// idle_page_bytes must report, and the blocks to free afterwards (live or held).
struct idle_case {
  char const* name;
  std::size_t idle_pages;
  /// Sets the pool up; returns the blocks still allocated (`held`: waiting for events).
  std::function<void(device_pool&, std::size_t page, std::vector<block*>& live,
                     std::vector<block*>& held)>
    setup;
};

/// A block of `bytes` on the default stream; fails the test if there is none.
block* take(device_pool& pool, std::size_t bytes)
{
  block* const b = pool.allocate(round_request(bytes), bytes, tag_of(nullptr));
  EXPECT_NE(b, nullptr) << bytes << " bytes";
  return b;
}

// A table: one entry per case, read top to bottom.
// NOLINTNEXTLINE(readability-function-size)
std::vector<idle_case> idle_cases()
{
  using blocks = std::vector<block*>;
  return {
    {"free space in a stream bin", 3,
     [](device_pool& pool, std::size_t page, blocks&, blocks&) {
       pool.deallocate(take(pool, 3 * page));
       EXPECT_EQ(pool.blocks().cached_blocks(), 1U) << "binned, not flushed";
     }},
    {"cached free space, flushed into the index", 3,
     [](device_pool& pool, std::size_t page, blocks&, blocks&) {
       pool.deallocate(take(pool, 3 * page));
       pool.prepare_swap();  // flushes the bins
       EXPECT_EQ(pool.blocks().cached_blocks(), 0U);
     }},
    {"a page with one live block", 0,
     [](device_pool& pool, std::size_t page, blocks& live, blocks&) {
       live.push_back(take(pool, page));
     }},
    {"a small page with one live small block and binned ones", 0,
     [](device_pool& pool, std::size_t, blocks& live, blocks&) {
       live.push_back(take(pool, 4096));
       pool.deallocate(take(pool, 8192));
       pool.deallocate(take(pool, 4096));
     }},
    {"a small page with binned small blocks only", 1,
     [](device_pool& pool, std::size_t, blocks&, blocks&) {
       block* const first = take(pool, 4096);
       pool.deallocate(take(pool, 8192));
       pool.deallocate(first);
     }},
    {"a block held for events", 0,
     [](device_pool& pool, std::size_t page, blocks&, blocks& held) {
       block* const b = take(pool, 2 * page);
       pool.hold(b, 1);
       held.push_back(b);
     }},
    {"a held block whose events completed", 2,
     [](device_pool& pool, std::size_t page, blocks&, blocks&) {
       block* const b = take(pool, 2 * page);
       pool.hold(b, 1);
       pool.finish_waiting(b);  // binned now
     }},
    {"pages shared by a live block and a binned one", 1,  // pages 0-1 live, 1-2 binned
     [](device_pool& pool, std::size_t page, blocks& live, blocks&) {
       live.push_back(take(pool, page + page / 2));
       pool.deallocate(take(pool, page + page / 2));
     }},
    {"pages shared by a live block and a flushed one", 1,
     [](device_pool& pool, std::size_t page, blocks& live, blocks&) {
       live.push_back(take(pool, page + page / 2));
       pool.deallocate(take(pool, page + page / 2));
       pool.prepare_swap();
     }},
    {"pages shared by a held block and a binned one", 1,
     [](device_pool& pool, std::size_t page, blocks&, blocks& held) {
       block* const b = take(pool, page + page / 2);
       pool.deallocate(take(pool, page + page / 2));
       pool.hold(b, 2);
       held.push_back(b);
     }},
    {"live, binned, flushed and held blocks side by side", 4,
     [](device_pool& pool, std::size_t page, blocks& live, blocks& held) {
       block* const flushed = take(pool, 2 * page);  // pages 0-1: idle
       live.push_back(take(pool, page));             // page 2
       block* const binned = take(pool, 2 * page);   // pages 3-4: idle
       block* const waits  = take(pool, page / 2);   // page 5 (small)
       pool.deallocate(flushed);
       pool.prepare_swap();
       pool.deallocate(binned);
       pool.hold(waits, 1);
       held.push_back(waits);
     }},
  };
}

TEST_F(PoolTest, IdlePageBytesIsWhatReleaseIdlePagesThenReleases)
{
  for (idle_case const& row : idle_cases()) {
    SCOPED_TRACE(row.name);
    device_pool pool = make_pool();
    std::vector<block*> live;
    std::vector<block*> held;
    row.setup(pool, gran(), live, held);
    ASSERT_EQ(pool.check(), "");
    std::size_t const reserved = pool.stats().reserved_bytes;
    std::size_t const idle     = pool.idle_page_bytes();
    EXPECT_EQ(idle, row.idle_pages * gran());
    EXPECT_EQ(pool.check(), "") << "the query changed nothing";
    EXPECT_EQ(pool.stats().reserved_bytes, reserved);
    drv().synchronize_context();
    EXPECT_EQ(pool.release_idle_pages(), idle) << "released what was reported";
    EXPECT_EQ(pool.stats().reserved_bytes, reserved - idle);
    EXPECT_EQ(pool.idle_page_bytes(), 0U) << "nothing is left to release";
    for (block* b : live) {
      pool.deallocate(b);
    }
    for (block* b : held) {
      pool.finish_waiting(b);
    }
    EXPECT_EQ(pool.idle_page_bytes(), reserved - idle) << "every page is free now";
    EXPECT_EQ(pool.release_idle_pages(), reserved - idle);
    EXPECT_EQ(pool.stats().reserved_bytes, 0U);
    EXPECT_EQ(pool.check(), "");
  }
}

TEST_F(PoolTest, ReturnsNullWhenTheRangeIsFull)
{
  device_pool pool = make_pool(4);
  block* all       = pool.allocate(4 * gran(), 4 * gran(), tag_of(nullptr));
  ASSERT_NE(all, nullptr);
  EXPECT_EQ(pool.allocate(512, 1, tag_of(nullptr)), nullptr);
  pool.deallocate(all);
}

TEST_F(PoolTest, RejectsPageSizeAndCapacityThatAreNotGranularityMultiples)
{
  EXPECT_THROW(device_pool(drv(), device(), "bad", 32 * gran(), gran() / 2), std::invalid_argument);
  EXPECT_THROW(device_pool(drv(), device(), "bad", 3 * gran() / 2, gran()), std::invalid_argument);
  try {
    device_pool bad(drv(), device(), "bad", 0, gran());
    FAIL() << "capacity 0 was accepted";
  } catch (std::invalid_argument const& error) {
    EXPECT_NE(std::string(error.what()).find("capacity=0"), std::string::npos) << error.what();
  }
}

TEST_F(PoolTest, LargerPagesAreMappedWhole)
{
  device_pool pool(drv(), device(), "big pages", std::size_t{24} * gran(), std::size_t{3} * gran());
  std::size_t const before = free_bytes();
  block* b                 = pool.allocate(round_request(4096), 4096, tag_of(nullptr));
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(before - free_bytes(), 3 * gran());
  pool.deallocate(b);
}

/// A failure injected into each driver call that mapping makes.
class PoolMapFault : public PoolTest, public ::testing::WithParamInterface<char const*> {};

TEST_P(PoolMapFault, FailedMappingLeavesThePoolUsable)
{
  SIM_ONLY(sim(), "injects driver failures");
  device_pool pool = make_pool();
  block* first     = pool.allocate(round_request(MiB), MiB, tag_of(nullptr));
  ASSERT_NE(first, nullptr);
  pool_stats const before = pool.stats();
  // A 7 MiB block needs four new pages: fail the call on the third page (or the one
  // cuMemSetAccess), so that the pool has pages mapped when the failure comes.
  unsigned long long const nth = std::string(GetParam()) == "cuMemSetAccess" ? 1 : 3;
  sim().fail_call(GetParam(), nth, CUDA_SUCCESS);
  EXPECT_THROW((void)pool.allocate(round_request(7 * MiB), 7 * MiB, tag_of(nullptr)), cuda_error);
  sim().clear_faults();
  EXPECT_EQ(pool.check(), "");
  pool_stats const after = pool.stats();
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_EQ(after.live_blocks, 1U);
  block* retry = pool.allocate(round_request(7 * MiB), 7 * MiB, tag_of(nullptr));
  ASSERT_NE(retry, nullptr);
  auto const written = pattern(7 * MiB / 4, 3);
  drv().memcpy_htod(pool.address(*retry), written.data(), 7 * MiB);
  EXPECT_EQ(read_words(drv(), pool.address(*retry), written.size()), written);
  pool.deallocate(retry);
  pool.deallocate(first);
  EXPECT_EQ(pool.check(), "");
}

INSTANTIATE_TEST_SUITE_P(EveryMappingCall, PoolMapFault,
                         ::testing::Values("cuMemCreate", "cuMemMap", "cuMemRelease",
                                           "cuMemSetAccess"));

TEST_F(PoolTest, FailedUnmapKeepsThatPageResidentAndCached)
{
  SIM_ONLY(sim(), "injects driver failures");
  device_pool pool = make_pool();
  block* b         = pool.allocate(round_request(6 * MiB), 6 * MiB, tag_of(nullptr));
  ASSERT_NE(b, nullptr);
  pool.deallocate(b);
  drv().synchronize_context();
  sim().fail_call("cuMemUnmap", 2, CUDA_SUCCESS);
  EXPECT_THROW((void)pool.release_idle_pages(), cuda_error);
  sim().clear_faults();
  EXPECT_EQ(pool.stats().reserved_bytes, gran()) << "the page whose unmap failed stays resident";
  EXPECT_EQ(pool.check(), "");
  EXPECT_EQ(pool.release_idle_pages(), gran());
  EXPECT_EQ(pool.stats().reserved_bytes, 0U);
}

TEST_F(PoolTest, AChangeThePageTableRefusesFailsBeforeAnyDriverCall)
{
  // Issue 9: a fresh page mapped over an evicted one hid its data. Every swap-tier
  // primitive checks the page's change against page_table.hpp first.
  device_pool pool = make_pool(4);
  block* b         = pool.allocate(round_request(gran()), gran(), tag_of(nullptr));
  ASSERT_NE(b, nullptr);
  drv().synchronize_context();
  pool.unmap_page(0, page_state::evicted);  // as an eviction leaves it (no copy here)
  ASSERT_EQ(pool.page(0), page_state::evicted);
  auto const maps   = sim().available() ? sim().call_count("cuMemMap") : 0;
  auto const unmaps = sim().available() ? sim().call_count("cuMemUnmap") : 0;
  EXPECT_THROW(pool.settle(0), std::logic_error) << "evicted -> resident";
  EXPECT_THROW(pool.unmap_page(0, page_state::evicted), std::logic_error) << "not mapped";
  EXPECT_THROW(pool.unmap_page(1, page_state::evicted), std::logic_error)
    << "an unmapped page has no data to evict";
  EXPECT_THROW(pool.map_for_restore(1), std::logic_error) << "an unmapped page is not evicted";
  if (sim().available()) {
    EXPECT_EQ(sim().call_count("cuMemMap"), maps);
    EXPECT_EQ(sim().call_count("cuMemUnmap"), unmaps);
  }
  EXPECT_EQ(pool.page(0), page_state::evicted);
  EXPECT_EQ(pool.check(), "");
  pool.map_for_restore(0);  // the allowed way back
  EXPECT_EQ(pool.page(0), page_state::restoring);
  EXPECT_EQ(pool.stats().reserved_bytes, 0U) << "restoring is not resident";
  pool.settle(0);
  EXPECT_EQ(pool.page(0), page_state::resident);
  pool.deallocate(b);
  EXPECT_EQ(pool.check(), "");
}

}  // namespace
}  // namespace swapalloc::testing
