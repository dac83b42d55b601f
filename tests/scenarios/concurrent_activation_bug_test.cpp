// The regression test of an allocator bug found by the seed 002/004 scenario (ten threads,
// two models), reduced to two threads and three pools; fixed by room_maker::make_room_for,
// which reads the bytes a restore needs again after the engine lease's wait.
//
// The bug: room_maker::restore computed `needed` (the pool's evicted bytes) before make_room waits
// for the device's engine lease. When a second thread activates a pool that a first thread is
// already restoring (the second passed wait_while_moving while the first was still making
// room, before the pool was marked moving), the second thread's make_room gets the lease only
// after the first thread's restore, re-reads the device's use (which now includes the
// restored pages) and adds the stale `needed` on top: it makes room for the pool a second
// time and evicts other pools for nothing. Its restore_unless_full then finds nothing parked.
// No data is lost and the watermark holds, but innocent pools are evicted (and restored later
// over the link): in the seed 002 scenario's trace, most chat turns began with the second
// chat request evicting the code model's last 12 MiB this way (48 MiB device).
#include "scenario_fixture.hpp"

#include <chrono>
#include <thread>

namespace swapalloc::testing {
namespace {

class ConcurrentActivationBugTest : public DriverTest {};

TEST_F(ConcurrentActivationBugTest,
       ASecondActivationOfAPoolBeingRestoredDoesNotEvictOtherPoolsForItAgain)
{
  SIM_ONLY(sim(), "the link is slowed through the simulator");
  allocator_options o;
  o.read_environment = false;
  o.workers          = 2;
  o.device_limit     = device_limit{64 * MiB, 1.0};  // high 54.4 MiB, low 48 MiB
  scenarios::event_recorder events;
  events.install(o);
  allocator owner(drv(), o);
  auto const filled = [&](char const* name, std::size_t bytes) {
    pool_id const pool = owner.create_pool(name);
    activation const active(owner, pool, 0, nullptr);
    pool_scope const scope(owner, pool);
    CUdeviceptr const ptr = owner.allocate(bytes, 0, nullptr);
    drv().memset_d32(ptr, 0xA5A5A5A5U, bytes / 4);
    return std::pair{pool, ptr};
  };
  auto const filled_a = filled("a", 24 * MiB);
  auto const filled_b = filled("b", 20 * MiB);  // b is used before c: the first victim
  auto const filled_c = filled("c", 20 * MiB);
  pool_id const a     = filled_a.first;
  pool_id const b     = filled_b.first;
  pool_id const c     = filled_c.first;
  (void)owner.evict(a, 0);  // 40 MiB resident
  sim().set_link_bandwidth(0.05);
  scope_exit const unthrottled([&] { sim().set_link_bandwidth(0.0); });
  // Thread 1: restoring a's 24 MiB passes the high watermark (64 MiB): room is made down to
  // the low one by evicting 16 MiB of b, over the slowed link, then a is restored.
  std::thread first([&] { activation const active(owner, a, 0, nullptr); });
  ASSERT_TRUE(wait_until([&] { return owner.stats(b, 0).evicted_bytes >= 2 * MiB; }, 10s));
  // Thread 2, while b is being evicted: a is not moving yet, so it plans a restore of a too
  // and waits for the engine's lease, which it gets after thread 1 has restored a.
  std::thread second([&] { activation const active(owner, a, 0, nullptr); });
  first.join();
  second.join();
  EXPECT_EQ(owner.stats(b, 0).evicted_bytes, 16 * MiB) << "what a's restore needed";
  EXPECT_EQ(owner.stats(c, 0).evicted_bytes, 0U)
    << "c was evicted after a had been restored: room made twice for one restore";
  EXPECT_EQ(events.totals(c).evicted_bytes, 0U);
  owner.deallocate(filled_a.second, 24 * MiB, 0, nullptr);
  owner.deallocate(filled_b.second, 20 * MiB, 0, nullptr);
  owner.deallocate(filled_c.second, 20 * MiB, 0, nullptr);
}

}  // namespace
}  // namespace swapalloc::testing
