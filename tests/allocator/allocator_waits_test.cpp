// Tests of the allocator's long waits leaving the device's lock (issue 10 §1): empty_cache
// waits for the device, and destroy_pool for the pool's last use, while other threads'
// allocations and frees on the device go on. A closed host gate holds the waited-for work;
// each test checks the other thread's calls complete while it is still closed (the gate's
// watchdog would open it after 10 s, so a call that waited for the lock is seen as the
// watchdog having opened it).
#include "allocator_fixture.hpp"
#include "host_gate.hpp"
#include "scoped_objects.hpp"

#include <chrono>
#include <future>
#include <thread>

namespace swapalloc::testing {
namespace {

using namespace std::chrono_literals;

/// Waits until `entry_point` has been called more than `before` times (the other thread
/// is inside it); false after 10 s.
[[nodiscard]] bool called_since(sim_control const& sim, char const* entry_point,
                                unsigned long long before)
{
  auto const until = std::chrono::steady_clock::now() + 10s;
  while (sim.call_count(entry_point) <= before) {
    if (std::chrono::steady_clock::now() > until) { return false; }
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

TEST_F(AllocatorTest, EmptyCacheWaitsForTheDeviceWithoutHoldingItsLock)
{
  SIM_ONLY(sim(), "sees the call to cuCtxSynchronize begin");
  scoped_stream const s(drv());
  scoped_stream const busy(drv());
  host_gate const gate;  // the device's work waits for it
  CUdeviceptr const cached = alloc().allocate(4 * MiB, 0, s);
  alloc().deallocate(cached, 4 * MiB, 0, s);
  CUdeviceptr const hot = alloc().allocate(4096, 0, s);
  alloc().deallocate(hot, 4096, 0, s);  // cached on s: its next allocation is the hot path
  gate.enqueue(drv(), busy);
  auto const syncs = sim().call_count("cuCtxSynchronize");
  std::future<std::size_t> released =
    std::async(std::launch::async, [&] { return alloc().empty_cache(); });
  ASSERT_TRUE(called_since(sim(), "cuCtxSynchronize", syncs));
  // Meanwhile: a hot-path pair, a block that maps pages, and a free that cannot record its
  // event (held for a synchronization: the one in progress began before it, so it stays).
  CUdeviceptr const again = alloc().allocate(4096, 0, s);
  EXPECT_EQ(again, hot);
  alloc().deallocate(again, 4096, 0, s);
  pool_id const other = alloc().create_pool("other");
  CUdeviceptr mapped  = 0;
  {
    pool_scope const scope(alloc(), other);
    mapped = alloc().allocate(6 * MiB, 0, s);
  }
  alloc().record_stream(mapped, 0, busy);
  ASSERT_EQ(sim().fail_call("cuEventRecord", 1, CUDA_SUCCESS), CUDA_SUCCESS);
  EXPECT_THROW(alloc().deallocate(mapped, 6 * MiB, 0, s), cuda_error);
  EXPECT_FALSE(gate.is_open()) << "the calls waited for empty_cache's synchronization";
  gate.open();
  EXPECT_GE(released.get(), 4 * MiB) << "the cached block's pages";
  EXPECT_EQ(alloc().stats(other, 0).live_blocks, 1U)
    << "a free made during the synchronization is held for the next one";
  EXPECT_GE(alloc().empty_cache(), 6 * MiB);
  EXPECT_EQ(alloc().stats(other, 0).live_blocks, 0U);
  EXPECT_EQ(alloc().stats(other, 0).reserved_bytes, 0U);
  alloc().destroy_pool(other);
}

TEST_F(AllocatorTest, DestroyPoolWaitsForThePoolsLastUseWithoutHoldingTheLock)
{
  SIM_ONLY(sim(), "sees the call to cuEventSynchronize begin");
  scoped_stream const s(drv());
  scoped_stream const model(drv());
  pool_id const pool = alloc().create_pool("model");
  CUdeviceptr block  = 0;
  {
    pool_scope const scope(alloc(), pool);
    block = alloc().allocate(4 * MiB, 0, model);
  }
  host_gate const gate;
  alloc().activate(pool, 0, model);
  gate.enqueue(drv(), model);  // the pool's work, still running
  fill(block, 4 * MiB, 0xC0FFEE, model);
  alloc().deallocate(block, 4 * MiB, 0, model);
  alloc().deactivate(pool, 0, model);  // its last use: an event behind the gate
  auto const waits            = sim().call_count("cuEventSynchronize");
  std::future<void> destroyed = std::async(std::launch::async, [&] { alloc().destroy_pool(pool); });
  ASSERT_TRUE(called_since(sim(), "cuEventSynchronize", waits));
  CUdeviceptr const other = alloc().allocate(2 * MiB, 0, s);  // the default pool: maps
  alloc().deallocate(other, 2 * MiB, 0, s);
  EXPECT_FALSE(gate.is_open()) << "the allocation waited for destroy_pool's wait";
  gate.open();
  destroyed.get();
  EXPECT_THROW((void)alloc().find_pool("model"), usage_error) << "destroyed";
}

}  // namespace
}  // namespace swapalloc::testing
