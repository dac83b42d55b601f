// Tests of include/swapalloc/allocator.hpp (and scope_stack.hpp): pools and scopes,
// caching without driver calls, empty_cache, statistics as JSON, several devices.
#include "allocator_fixture.hpp"
#include "entry_points.hpp"

#include <array>
#include <string>
#include <thread>

namespace swapalloc::testing {
namespace {

TEST_F(AllocatorTest, ZeroBytesGiveAddressZeroAndFreeingZeroIsANoOp)
{
  EXPECT_EQ(alloc().allocate(0, 0, nullptr), 0U);
  alloc().deallocate(0, 0, 0, nullptr);
  EXPECT_EQ(alloc().device_stats(0).allocations, 0U);
}

TEST_F(AllocatorTest, AllocationsOutsideAnyScopeGoToTheDefaultPool)
{
  EXPECT_EQ(alloc().current_pool(), default_pool);
  CUdeviceptr const p = alloc().allocate(4096, 0, nullptr);
  EXPECT_EQ(alloc().stats(default_pool, 0).live_blocks, 1U);
  alloc().deallocate(p, 4096, 0, nullptr);
  EXPECT_EQ(alloc().stats(default_pool, 0).live_blocks, 0U);
  EXPECT_EQ(alloc().pool_name(default_pool), "default");
}

TEST_F(AllocatorTest, ScopesSelectThePoolAndNest)
{
  pool_id const unet  = alloc().create_pool("unet");
  pool_id const vae   = alloc().create_pool("vae");
  CUdeviceptr in_unet = 0;
  CUdeviceptr in_vae  = 0;
  {
    pool_scope const outer(alloc(), unet);
    EXPECT_EQ(alloc().current_pool(), unet);
    in_unet = alloc().allocate(MiB, 0, nullptr);
    {
      pool_scope const inner(alloc(), vae);
      in_vae = alloc().allocate(MiB, 0, nullptr);
    }
    EXPECT_EQ(alloc().current_pool(), unet);
  }
  EXPECT_EQ(alloc().current_pool(), default_pool);
  EXPECT_EQ(alloc().stats(unet, 0).live_blocks, 1U);
  EXPECT_EQ(alloc().stats(vae, 0).live_blocks, 1U);
  EXPECT_EQ(alloc().stats(default_pool, 0).live_blocks, 0U);
  // Each pool has its own range: the two blocks are far apart.
  CUdeviceptr const distance = in_unet > in_vae ? in_unet - in_vae : in_vae - in_unet;
  EXPECT_GE(distance, gran());
  alloc().deallocate(in_unet, MiB, 0, nullptr);  // freeing needs no scope
  alloc().deallocate(in_vae, MiB, 0, nullptr);
}

TEST_F(AllocatorTest, ScopesArePerThread)
{
  pool_id const mine = alloc().create_pool("mine");
  pool_scope const scope(alloc(), mine);
  pool_id seen_there = 12345;
  std::thread other([&] { seen_there = alloc().current_pool(); });
  other.join();
  EXPECT_EQ(seen_there, default_pool);
  EXPECT_EQ(alloc().current_pool(), mine);
}

TEST_F(AllocatorTest, PopWithoutPushAndPushOfUnknownPoolAreErrors)
{
  EXPECT_THROW(alloc().pop_pool(), std::logic_error);
  EXPECT_THROW(alloc().push_pool(77), usage_error);
  EXPECT_EQ(alloc().usage_errors(usage_error_kind::bad_pool), 1U);
}

TEST_F(AllocatorTest, PoolNamesAreUniqueAndFindable)
{
  pool_id const a = alloc().create_pool("llm-3b");
  EXPECT_EQ(alloc().find_pool("llm-3b"), a);
  EXPECT_THROW((void)alloc().create_pool("llm-3b"), usage_error);
  EXPECT_THROW((void)alloc().create_pool(""), usage_error);
  EXPECT_THROW((void)alloc().find_pool("nope"), usage_error);
}

TEST_F(AllocatorTest, DestroyPoolRefusesWhileBlocksLiveThenFreesEverything)
{
  std::size_t const before = free_bytes();
  pool_id const p          = alloc().create_pool("heads");
  CUdeviceptr ptr          = 0;
  {
    pool_scope const scope(alloc(), p);
    ptr = alloc().allocate(6 * MiB, 0, nullptr);
  }
  try {
    alloc().destroy_pool(p);
    FAIL() << "a pool with a live block was destroyed";
  } catch (usage_error const& error) {
    EXPECT_NE(std::string(error.what()).find("1 live block, 6.00 MiB (largest 6.00 MiB)"),
              std::string::npos)
      << error.what();
  }
  alloc().deallocate(ptr, 6 * MiB, 0, nullptr);
  EXPECT_LT(free_bytes(), before) << "freed pages stay cached until the pool goes";
  alloc().destroy_pool(p);
  EXPECT_EQ(free_bytes(), before);
  EXPECT_THROW((void)alloc().stats(p, 0), usage_error);
  EXPECT_EQ(alloc().create_pool("heads"), p + 1) << "the name is free again; ids are not reused";
  EXPECT_THROW(alloc().destroy_pool(default_pool), usage_error);
}

TEST_F(AllocatorTest, HotPathReusesTheBlockWithoutDriverCalls)
{
  SIM_ONLY(sim(), "counts driver calls");
  CUdeviceptr const first = alloc().allocate(300 * KiB, 0, nullptr);
  alloc().deallocate(first, 300 * KiB, 0, nullptr);
  // Every entry point the driver seam resolves (driver.hpp, resolve_all): none may be
  // called on the hot path. The simulator rejects a fault for a name it does not know,
  // which checks the list itself (the far-off fault is cleared at teardown).
  auto const& entry_points = driver_entry_points;
  for (char const* entry : entry_points) {
    ASSERT_EQ(sim().fail_call(entry, ~0ULL, CUDA_SUCCESS), CUDA_SUCCESS)
      << "unknown entry " << entry;
  }
  auto const calls_before = [&] {
    unsigned long long total = 0;
    for (char const* entry : entry_points) {
      total += sim().call_count(entry);
    }
    return total;
  };
  unsigned long long const before = calls_before();
  EXPECT_GT(before, 0U) << "the call counts are not being read";
  for (int i = 0; i < 1000; ++i) {
    CUdeviceptr const again = alloc().allocate(300 * KiB, 0, nullptr);
    ASSERT_EQ(again, first);
    alloc().deallocate(again, 300 * KiB, 0, nullptr);
  }
  EXPECT_EQ(calls_before(), before) << "the hot path made driver calls";
}

TEST_F(AllocatorTest, LiveBlocksNeverOverlapAndHoldTheirData)
{
  std::vector<std::pair<CUdeviceptr, std::size_t>> blocks;
  for (std::size_t bytes : {512UL, 3000UL, MiB, MiB + 1, 5 * MiB, 700UL, 2 * MiB, 64 * KiB}) {
    blocks.emplace_back(alloc().allocate(bytes, 0, nullptr), bytes);
  }
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    fill(blocks[i].first, blocks[i].second / 4 * 4, 0xA000 + static_cast<std::uint32_t>(i));
  }
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    auto const [ptr, bytes] = blocks[i];
    EXPECT_EQ(word_at(ptr, 0), 0xA000 + i);
    EXPECT_EQ(word_at(ptr, bytes / 4 * 4 - 4), 0xA000 + i) << "block " << i << " was overwritten";
    for (std::size_t j = 0; j < blocks.size(); ++j) {
      if (i == j) { continue; }
      bool const disjoint =
        ptr + bytes <= blocks[j].first || blocks[j].first + blocks[j].second <= ptr;
      EXPECT_TRUE(disjoint) << "blocks " << i << " and " << j << " overlap";
    }
  }
  for (auto const& [ptr, bytes] : blocks) {
    alloc().deallocate(ptr, bytes, 0, nullptr);
  }
}

TEST_F(AllocatorTest, EmptyCacheReleasesFreePagesAndKeepsLiveOnes)
{
  std::size_t const before = free_bytes();
  CUdeviceptr const keep   = alloc().allocate(MiB, 0, nullptr);
  CUdeviceptr const drop   = alloc().allocate(64 * MiB, 0, nullptr);
  fill(keep, MiB, 0x5EED);
  alloc().deallocate(drop, 64 * MiB, 0, nullptr);
  EXPECT_LE(free_bytes(), before - 66 * MiB) << "freed memory stays cached";
  std::size_t const released = alloc().empty_cache();
  EXPECT_EQ(released, 64 * MiB);
  EXPECT_EQ(free_bytes(), before - gran());
  EXPECT_EQ(word_at(keep, MiB - 4), 0x5EEDU);
  pool_stats const s = alloc().stats(default_pool, 0);
  EXPECT_EQ(s.reserved_bytes, gran());
  EXPECT_EQ(s.peak_reserved_bytes, 66 * MiB);
  alloc().deallocate(keep, MiB, 0, nullptr);
  EXPECT_EQ(alloc().empty_cache(), gran());
  EXPECT_EQ(free_bytes(), before);
}

TEST_F(AllocatorTest, EmptyCacheOfOnePoolLeavesTheOthersCached)
{
  pool_id const a = alloc().create_pool("a");
  pool_id const b = alloc().create_pool("b");
  for (pool_id id : {a, b}) {
    pool_scope const scope(alloc(), id);
    CUdeviceptr const p = alloc().allocate(8 * MiB, 0, nullptr);
    alloc().deallocate(p, 8 * MiB, 0, nullptr);
  }
  EXPECT_EQ(alloc().empty_cache(a), 8 * MiB);
  EXPECT_EQ(alloc().stats(a, 0).reserved_bytes, 0U);
  EXPECT_EQ(alloc().stats(b, 0).reserved_bytes, 8 * MiB);
}

TEST_F(AllocatorTest, StatsJsonHasEveryCounterPerPoolAndInTotal)
{
  pool_id const p = alloc().create_pool("backbone");
  CUdeviceptr a   = 0;
  {
    pool_scope const scope(alloc(), p);
    a                   = alloc().allocate(3 * MiB, 0, nullptr);
    CUdeviceptr const b = alloc().allocate(1000, 0, nullptr);
    alloc().deallocate(b, 1000, 0, nullptr);
  }
  nlohmann::json const stats = alloc().stats_json();
  ASSERT_EQ(stats["devices"].size(), static_cast<std::size_t>(drv().device_count()));
  nlohmann::json const& pools = stats["devices"][0]["pools"];
  ASSERT_EQ(pools.size(), 1U) << "only pools that allocated on the device appear: " << stats.dump();
  nlohmann::json const& backbone = pools[0];
  EXPECT_EQ(backbone["name"], "backbone");
  EXPECT_EQ(backbone["id"], p);
  EXPECT_EQ(backbone["allocated_bytes"], 3 * MiB);
  EXPECT_EQ(backbone["requested_bytes"], 3 * MiB);
  EXPECT_EQ(backbone["reserved_bytes"], 6 * MiB) << "2 pages of large blocks, 1 small page";
  EXPECT_EQ(backbone["peak_allocated_bytes"], 3 * MiB + 1024);
  EXPECT_EQ(backbone["peak_reserved_bytes"], 6 * MiB);
  EXPECT_EQ(backbone["live_blocks"], 1);
  EXPECT_EQ(backbone["allocations"], 2);
  EXPECT_EQ(backbone["frees"], 1);
  EXPECT_EQ(backbone["cached_free_bytes"], 3 * MiB);
  EXPECT_EQ(backbone["largest_free_block"], 2 * MiB) << "the small page: its one block is cached";
  EXPECT_EQ(stats["total"]["allocated_bytes"], 3 * MiB);
  EXPECT_EQ(stats["usage_errors"]["total"], 0);
  EXPECT_EQ(backbone["priority"], "normal");
  EXPECT_EQ(backbone["evictable"], true);
  EXPECT_EQ(backbone["active"], false);
  EXPECT_TRUE(backbone["last_use_s_ago"].is_null()) << "never activated";
  {
    activation const used(alloc(), p, 0, nullptr);
    nlohmann::json const during = alloc().stats_json()["devices"][0]["pools"][0];
    EXPECT_EQ(during["active"], true);
    EXPECT_GE(during["last_use_s_ago"].get<double>(), 0.0);
  }
  nlohmann::json const after = alloc().stats_json()["devices"][0]["pools"][0];
  EXPECT_EQ(after["active"], false);
  EXPECT_LT(after["last_use_s_ago"].get<double>(), 60.0) << "just used";
  alloc().deallocate(a, 3 * MiB, 0, nullptr);
}

}  // namespace
}  // namespace swapalloc::testing
