// Tests of include/swapalloc/handle_cache.hpp: a handle given after its page's unmap keeps
// the memory (and its bytes) alive for a map elsewhere while a scope is open; the bound,
// the closing of the last scope and release_all give memory back; a failed cuMemRelease
// loses nothing. Device memory is read
// and written only through driver calls; the DriverTest fixture fails a test that leaves a
// handle or mapping behind (on the simulator).
#include <swapalloc/handle_cache.hpp>
#include <swapalloc/vmm.hpp>

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

#include "driver_fixture.hpp"
#include "sim_control.hpp"

namespace swapalloc::testing {
namespace {

class HandleCacheTest : public DriverTest {
 protected:
  /// A handle of one granule, created and not mapped (as a page's handle is in the cache).
  [[nodiscard]] CUmemGenericAllocationHandle fresh_handle() const
  {
    return drv().mem_create(gran(), device());
  }
  /// Maps `handle` at `address`, makes it accessible, and drops the caller's reference
  /// (vmm.hpp's order: the mapping owns the memory).
  void map_and_release(CUdeviceptr address, CUmemGenericAllocationHandle handle) const
  {
    drv().mem_map(address, gran(), handle);
    drv().mem_set_access(address, gran(), device());
    drv().mem_release(handle);
  }
  /// Unmaps the page at `address`, keeping a reference to its memory (what evict gives).
  [[nodiscard]] CUmemGenericAllocationHandle retain_and_unmap(CUdeviceptr address) const
  {
    CUmemGenericAllocationHandle const handle = drv().mem_retain(address);
    drv().mem_unmap(address, gran());
    return handle;
  }
};

TEST_F(HandleCacheTest, AGivenHandleKeepsItsMemoryForAMapElsewhere)
{
  address_reservation range(drv(), 2 * gran());
  CUdeviceptr const first  = range.base();
  CUdeviceptr const second = range.base() + gran();
  handle_cache cache(drv(), 4 * gran());
  handle_cache::armed const scope(cache);
  map_and_release(first, fresh_handle());
  std::vector<std::uint32_t> written(gran() / sizeof(std::uint32_t));
  for (std::size_t i = 0; i < written.size(); ++i) {
    written[i] = static_cast<std::uint32_t>(i * 2654435761U);
  }
  drv().memcpy_htod(first, written.data(), gran());
  std::size_t const free_while_mapped = free_bytes();

  cache.give(retain_and_unmap(first), gran());
  EXPECT_EQ(cache.held_bytes(), gran());
  EXPECT_EQ(free_bytes(), free_while_mapped) << "the cached handle still holds the memory";

  auto const creates = sim().available() ? sim().call_count("cuMemCreate") : 0;
  CUmemGenericAllocationHandle const reused = cache.take(gran());
  ASSERT_NE(reused, 0U);
  EXPECT_EQ(cache.held_bytes(), 0U);
  map_and_release(second, reused);
  std::vector<std::uint32_t> read(written.size());
  drv().memcpy_dtoh(read.data(), second, gran());
  EXPECT_EQ(read, written) << "the same physical memory, now at the second page";
  if (sim().available()) { EXPECT_EQ(sim().call_count("cuMemCreate"), creates); }
  drv().mem_unmap(second, gran());
  EXPECT_EQ(free_bytes(), free_while_mapped + gran()) << "the unmap freed the memory";
  handle_cache_stats const stats = cache.stats();
  EXPECT_EQ(stats.hits, 1U);
  EXPECT_EQ(stats.misses, 0U);
}

TEST_F(HandleCacheTest, TakeFindsOnlyTheSameSizeAndTheNewestFirst)
{
  handle_cache cache(drv(), 8 * gran());
  handle_cache::armed const scope(cache);
  CUmemGenericAllocationHandle const older = fresh_handle();
  CUmemGenericAllocationHandle const newer = fresh_handle();
  CUmemGenericAllocationHandle const twice = drv().mem_create(2 * gran(), device());
  cache.give(older, gran());
  cache.give(twice, 2 * gran());
  cache.give(newer, gran());
  EXPECT_EQ(cache.take(4 * gran()), 0U) << "no handle of that size";
  EXPECT_EQ(cache.take(gran()), newer);
  EXPECT_EQ(cache.take(gran()), older);
  EXPECT_EQ(cache.take(gran()), 0U);
  EXPECT_EQ(cache.take(2 * gran()), twice);
  handle_cache_stats const stats = cache.stats();
  EXPECT_EQ(stats.hits, 3U);
  EXPECT_EQ(stats.misses, 2U);
  EXPECT_EQ(stats.handles, 0U);
  for (CUmemGenericAllocationHandle const h : {older, newer, twice}) {
    drv().mem_release(h);
  }
}

TEST_F(HandleCacheTest, PastMaxBytesAHandleIsReleasedAtOnce)
{
  std::size_t const free_before = free_bytes();
  handle_cache cache(drv(), 2 * gran());
  handle_cache::armed const scope(cache);
  for (int i = 0; i < 3; ++i) {
    cache.give(fresh_handle(), gran());
  }
  EXPECT_EQ(cache.held_bytes(), 2 * gran());
  EXPECT_EQ(cache.stats().released_bytes, gran());
  EXPECT_EQ(free_bytes(), free_before - 2 * gran()) << "the third one's memory is free";
  EXPECT_EQ(cache.release_all(), 2 * gran());
  EXPECT_EQ(free_bytes(), free_before);
}

TEST_F(HandleCacheTest, ZeroMaxBytesCachesNothing)
{
  std::size_t const free_before = free_bytes();
  handle_cache cache(drv(), 0);
  handle_cache::armed const scope(cache);
  cache.give(fresh_handle(), gran());
  EXPECT_EQ(cache.held_bytes(), 0U);
  EXPECT_EQ(cache.take(gran()), 0U);
  EXPECT_EQ(free_bytes(), free_before);
}

TEST_F(HandleCacheTest, OutsideAScopeNothingIsKeptAndTheLastScopeToCloseReleasesAll)
{
  std::size_t const free_before = free_bytes();
  handle_cache cache(drv(), 8 * gran());
  EXPECT_FALSE(cache.has_room(gran())) << "no scope open";
  cache.give(fresh_handle(), gran());
  EXPECT_EQ(cache.held_bytes(), 0U);
  EXPECT_EQ(free_bytes(), free_before);
  {
    handle_cache::armed const outer(cache);
    EXPECT_TRUE(cache.has_room(gran()));
    {
      handle_cache::armed const inner(cache);
      cache.give(fresh_handle(), gran());
    }
    EXPECT_EQ(cache.held_bytes(), gran()) << "the outer scope is still open";
    cache.give(fresh_handle(), gran());
    EXPECT_EQ(cache.held_bytes(), 2 * gran());
    EXPECT_EQ(free_bytes(), free_before - 2 * gran());
  }
  EXPECT_EQ(cache.held_bytes(), 0U);
  EXPECT_EQ(free_bytes(), free_before) << "closing the last scope released everything";
  handle_cache_stats const stats = cache.stats();
  EXPECT_EQ(stats.kept, 2U);
  EXPECT_EQ(stats.released_bytes, 3 * gran());
}

TEST_F(HandleCacheTest, AFailedReleaseKeepsTheHandleAndTheNextReleaseReleasesIt)
{
  SIM_ONLY(sim(), "injects cuMemRelease failures");
  std::size_t const free_before = free_bytes();
  handle_cache cache(drv(), gran());
  {
    handle_cache::armed const scope(cache);
    cache.give(fresh_handle(), gran());
    EXPECT_EQ(cache.stray_bytes(), 0U) << "a kept handle is not a stray one";
    ASSERT_EQ(sim().fail_call("cuMemRelease", 1, CUDA_SUCCESS), CUDA_SUCCESS);
    cache.give(fresh_handle(), gran());  // past the bound; its release fails: kept
    EXPECT_EQ(cache.held_bytes(), 2 * gran()) << "nothing is lost track of";
    EXPECT_EQ(cache.stray_bytes(), gran());
    EXPECT_EQ(cache.stats().handles, 2U);
    ASSERT_EQ(sim().fail_call("cuMemRelease", 1, CUDA_SUCCESS), CUDA_SUCCESS);
    EXPECT_EQ(cache.release_all(), gran()) << "one release failed, the other did not";
    EXPECT_EQ(cache.held_bytes(), gran());
    EXPECT_EQ(cache.stray_bytes(), gran()) << "the one left is counted once";
    ASSERT_EQ(sim().fail_call("cuMemRelease", 1, CUDA_SUCCESS), CUDA_SUCCESS);
  }  // the scope's release fails too
  EXPECT_EQ(cache.held_bytes(), gran());
  EXPECT_EQ(cache.stats().stray_bytes, gran());
  CUmemGenericAllocationHandle const still = cache.take(gran());
  EXPECT_NE(still, 0U) << "a handle whose release failed is still a valid one";
  EXPECT_EQ(cache.stray_bytes(), 0U) << "taken: the caller's now";
  drv().mem_release(still);
  EXPECT_EQ(free_bytes(), free_before);
}

TEST_F(HandleCacheTest, ThreadsGivingAndTakingKeepEveryByteAccountedFor)
{
  constexpr std::size_t threads = 4;
  constexpr std::size_t rounds  = 50;
  std::size_t const free_before = free_bytes();
  handle_cache cache(drv(), 3 * gran());
  handle_cache::armed const scope(cache);
  std::vector<std::thread> workers;
  workers.reserve(threads);
  for (std::size_t t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      drv().set_current_context(context());
      for (std::size_t r = 0; r < rounds; ++r) {
        CUmemGenericAllocationHandle handle = cache.take(gran());
        if (handle == 0) { handle = fresh_handle(); }
        cache.give(handle, gran());
      }
    });
  }
  for (std::thread& w : workers) {
    w.join();
  }
  handle_cache_stats const stats = cache.stats();
  EXPECT_LE(stats.held_bytes, 3 * gran());
  EXPECT_EQ(stats.hits + stats.misses, threads * rounds);
  EXPECT_EQ(free_bytes(), free_before - stats.held_bytes);
  (void)cache.release_all();
  EXPECT_EQ(free_bytes(), free_before);
}

}  // namespace
}  // namespace swapalloc::testing
