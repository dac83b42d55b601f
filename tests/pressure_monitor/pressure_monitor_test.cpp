// Tests of the background pressure monitor (pressure_monitor.hpp) on a 64 MiB simulated
// device: pressure from "another process" (the simulator's external usage) past the high
// watermark makes the monitor release cached pages, then evict the least recently used
// eligible pool down to the low watermark; critical and active pools are never taken;
// evicted data is intact after its restore; nothing happens below the high watermark; a
// bad interval is rejected; stop and destruction end the thread at once; a failing step
// is counted and the thread keeps going. Waits poll (up to 10 s) and assert no timing.
#include <swapalloc/pressure_monitor.hpp>

#include "small_device_fixture.hpp"

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

namespace swapalloc::testing {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t device_bytes = small_device_bytes;
constexpr std::size_t page_bytes   = 2 * MiB;
/// 0.75 × 64 MiB, the low watermark's bytes.
constexpr std::size_t low_bytes = device_bytes / 100 * 75;
/// How long a wait for the monitor may take before the test fails (never a timing claim).
constexpr std::chrono::milliseconds patience = 10s;
/// A fast monitor, so that the waits are short.
constexpr monitor_options fast{5ms};

class PressureMonitorTest : public SmallDeviceTest {
 protected:
  void TearDown() override
  {
    if (sim().available()) { EXPECT_EQ(sim().set_external_usage(0, 0), CUDA_SUCCESS); }
    SwapTest::TearDown();
  }

  /// Makes the simulator report `bytes` of device 0 used by other processes.
  void set_external(std::size_t bytes) const
  {
    ASSERT_EQ(sim().set_external_usage(0, bytes), CUDA_SUCCESS);
  }

  /// Activates `pool` (restoring what is evicted), checks `blocks` read back intact.
  void expect_intact_when_active(pool_id pool, std::vector<filled_block> const& blocks,
                                 std::string const& when)
  {
    activation const active(alloc(), pool, 0, nullptr);
    EXPECT_EQ(alloc().stats(pool, 0).evicted_bytes, 0U) << when;
    expect_intact(blocks, when);
  }

  /// Waits until `monitor` has completed `more` passes after this call.
  static void wait_for_passes(pressure_monitor const& monitor, std::uint64_t more)
  {
    std::uint64_t const target = monitor.passes() + more;
    ASSERT_TRUE(wait_until([&] { return monitor.passes() >= target; }, patience))
      << "the monitor completed " << monitor.passes() << " passes, waited for " << target;
  }

  /// Three pools of 14 MiB each, used in the order a, b, c (a is the coldest): 42 MiB.
  struct three_pools {
    pool_id a{}, b{}, c{};
    std::vector<filled_block> in_a, in_b, in_c;
  };
  three_pools make_three()
  {
    three_pools out;
    out.a    = make_pool("a");
    out.b    = make_pool("b");
    out.c    = make_pool("c");
    out.in_a = {use(out.a, 14 * MiB, 1)};
    out.in_b = {use(out.b, 14 * MiB, 2)};
    out.in_c = {use(out.c, 14 * MiB, 3)};
    return out;
  }
  /// Checks each pool's data after restoring it, then frees the blocks.
  void check_and_free(three_pools& pools)
  {
    expect_intact_when_active(pools.a, pools.in_a, "a");
    expect_intact_when_active(pools.b, pools.in_b, "b");
    expect_intact_when_active(pools.c, pools.in_c, "c");
    free_all(pools.in_a);
    free_all(pools.in_b);
    free_all(pools.in_c);
  }
};

TEST_F(PressureMonitorTest, ExternalPressureEvictsTheLeastRecentlyUsedPoolToTheLowWatermark)
{
  SMALL_SIMULATED_DEVICE_ONLY("sets the device memory other processes use");
  three_pools pools = make_three();
  pressure_monitor monitor(alloc(), fast);
  // 42 + 14 = 56 MiB passes 0.85 × 64 = 54.4 MiB: down to 0.75 × 64 = 48 MiB, 8 MiB out of
  // the least recently used pool, a.
  set_external(14 * MiB);
  ASSERT_TRUE(wait_until([&] { return monitor.evicted_bytes() >= 8 * MiB; }, patience))
    << "evicted " << monitor.evicted_bytes() << " bytes; errors: " << monitor.last_error();
  wait_for_passes(monitor, 3);  // more passes see the device at the low watermark
  EXPECT_EQ(monitor.evicted_bytes(), 8 * MiB);
  EXPECT_EQ(alloc().stats(pools.a, 0).evicted_bytes, 8 * MiB);
  EXPECT_EQ(alloc().stats(pools.b, 0).evicted_bytes, 0U);
  EXPECT_EQ(alloc().stats(pools.c, 0).evicted_bytes, 0U);
  EXPECT_LE(used_bytes(), low_bytes + page_bytes);
  EXPECT_EQ(monitor.errors(), 0U) << monitor.last_error();
  monitor.stop();
  set_external(0);
  check_and_free(pools);
}

TEST_F(PressureMonitorTest, CachedPagesAreReleasedBeforeAnyPoolIsEvicted)
{
  SMALL_SIMULATED_DEVICE_ONLY("sets the device memory other processes use");
  pool_id const a = make_pool("a");
  pool_id const b = make_pool("b");
  pool_id const c = make_pool("c");
  std::vector<filled_block> in_a{use(a, 14 * MiB, 4)};
  std::vector<filled_block> in_b{use(b, 14 * MiB, 5)};
  std::vector<filled_block> freed{use(c, 14 * MiB, 6)};
  free_all(freed);
  // A freed block waits in its stream's bin, where the policy's view counts it as a user
  // of its pages; a request the bins cannot serve moves it to the free index. c then holds
  // 4 MiB live and 10 MiB of cached pages.
  std::vector<filled_block> in_c{use(c, 4 * MiB, 7)};
  ASSERT_EQ(alloc().stats(c, 0).reserved_bytes, 14 * MiB);
  pressure_monitor monitor(alloc(), fast);
  set_external(14 * MiB);  // 56 MiB: 8 MiB to free, all of it cached in c
  ASSERT_TRUE(wait_until([&] { return monitor.released_bytes() >= 8 * MiB; }, patience))
    << "released " << monitor.released_bytes() << " bytes; errors: " << monitor.last_error();
  wait_for_passes(monitor, 3);
  EXPECT_EQ(monitor.evicted_bytes(), 0U);
  EXPECT_EQ(alloc().stats(a, 0).evicted_bytes, 0U);
  EXPECT_EQ(alloc().stats(b, 0).evicted_bytes, 0U);
  EXPECT_EQ(alloc().stats(c, 0).evicted_bytes, 0U);
  // A release step gives back all of the pool's idle pages, not only the bytes planned.
  EXPECT_EQ(alloc().stats(c, 0).reserved_bytes, 4 * MiB) << "c's idle pages are released";
  EXPECT_LE(used_bytes(), low_bytes + page_bytes);
  monitor.stop();
  set_external(0);
  expect_intact_when_active(a, in_a, "a");
  expect_intact_when_active(b, in_b, "b");
  expect_intact_when_active(c, in_c, "c");
  free_all(in_a);
  free_all(in_b);
  free_all(in_c);
}

TEST_F(PressureMonitorTest, CriticalAndActivePoolsAreNeverEvicted)
{
  SMALL_SIMULATED_DEVICE_ONLY("sets the device memory other processes use");
  pool_id const spare = make_pool("spare");  // the only eligible pool, and the coldest
  pool_options critical;
  critical.priority    = pool_priority::critical;
  pool_id const weight = alloc().create_pool("backbone", critical);
  pool_id const head   = make_pool("head");
  std::vector<filled_block> in_spare{use(spare, 6 * MiB, 8)};
  std::vector<filled_block> in_weight{use(weight, 20 * MiB, 9)};
  std::vector<filled_block> in_head;
  {
    activation const busy(alloc(), head, 0, nullptr);
    in_head.push_back(fill_new(head, 20 * MiB, 10));
    pressure_monitor monitor(alloc(), fast);
    // 46 + 18 = 64 MiB: the spare pool goes, 58 MiB stay past the high watermark, and
    // every pass from then on finds only the critical and the active pool.
    set_external(18 * MiB);
    ASSERT_TRUE(wait_until([&] { return monitor.evicted_bytes() >= 6 * MiB; }, patience))
      << "evicted " << monitor.evicted_bytes() << " bytes; errors: " << monitor.last_error();
    wait_for_passes(monitor, 10);
    EXPECT_EQ(monitor.evicted_bytes(), 6 * MiB);
    EXPECT_EQ(alloc().stats(spare, 0).evicted_bytes, 6 * MiB);
    EXPECT_EQ(alloc().stats(weight, 0).evicted_bytes, 0U);
    EXPECT_EQ(alloc().stats(head, 0).evicted_bytes, 0U);
    EXPECT_EQ(monitor.errors(), 0U) << monitor.last_error();
    expect_intact(in_head, "the active pool, under pressure");
    monitor.stop();
    set_external(0);
  }
  expect_intact_when_active(spare, in_spare, "the spare pool");
  expect_intact_when_active(weight, in_weight, "the critical pool");
  free_all(in_spare);
  free_all(in_weight);
  free_all(in_head);
}

TEST_F(PressureMonitorTest, NothingHappensBelowTheHighWatermark)
{
  SMALL_SIMULATED_DEVICE_ONLY("sets the device memory other processes use");
  three_pools pools = make_three();
  set_external(10 * MiB);  // 52 MiB: past the low watermark, not the high one
  pressure_monitor monitor(alloc(), fast);
  wait_for_passes(monitor, 20);
  EXPECT_EQ(monitor.evicted_bytes(), 0U);
  EXPECT_EQ(monitor.released_bytes(), 0U);
  EXPECT_EQ(monitor.errors(), 0U) << monitor.last_error();
  for (pool_id const pool : {pools.a, pools.b, pools.c}) {
    EXPECT_EQ(alloc().stats(pool, 0).evicted_bytes, 0U) << "pool " << pool;
  }
  monitor.stop();
  set_external(0);
  check_and_free(pools);
}

TEST_F(PressureMonitorTest, AnIntervalOutsideOneMillisecondToOneHourIsRejected)
{
  for (std::chrono::milliseconds const bad : {0ms, -5ms, std::chrono::milliseconds(3600001)}) {
    SCOPED_TRACE(std::to_string(bad.count()) + " ms");
    try {
      pressure_monitor const rejected(alloc(), monitor_options{bad});
      ADD_FAILURE() << "accepted";
    } catch (config_error const& error) {
      std::string const message = error.what();
      EXPECT_EQ(error.setting(), "monitor_options::interval");
      EXPECT_NE(message.find("monitor_options::interval=" + std::to_string(bad.count()) + " ms"),
                std::string::npos)
        << message;
      EXPECT_NE(message.find("accepted 1 ms to 3600000 ms"), std::string::npos) << message;
    }
  }
  for (std::chrono::milliseconds const good : {1ms, std::chrono::milliseconds(1h)}) {
    pressure_monitor const accepted(alloc(), monitor_options{good});
    EXPECT_EQ(accepted.interval(), good);
  }
}

TEST_F(PressureMonitorTest, DestructionInterruptsTheWaitBetweenPasses)
{
  // An hour between passes: only the first pass can happen during the test, and the
  // destructor must end the wait rather than sleep it out (or the test times out).
  pressure_monitor monitor(alloc(), monitor_options{1h});
  ASSERT_TRUE(wait_until([&] { return monitor.passes() >= 1; }, patience));
  EXPECT_EQ(monitor.passes(), 1U);
  EXPECT_EQ(monitor.errors(), 0U) << monitor.last_error();
}

TEST_F(PressureMonitorTest, StopIsIdempotentAndEndsThePasses)
{
  SMALL_SIMULATED_DEVICE_ONLY("sets the device memory other processes use");
  three_pools pools = make_three();
  pressure_monitor monitor(alloc(), fast);
  wait_for_passes(monitor, 2);
  monitor.stop();
  monitor.stop();
  std::uint64_t const passes = monitor.passes();
  // Pressure now would be relieved by a running monitor; the stopped one leaves it.
  set_external(14 * MiB);
  (void)alloc().pressure(0);  // the allocator stays usable, and reads the new use
  EXPECT_EQ(monitor.passes(), passes);
  EXPECT_EQ(monitor.evicted_bytes(), 0U);
  EXPECT_EQ(alloc().stats(pools.a, 0).evicted_bytes, 0U);
  set_external(0);
  check_and_free(pools);
}

TEST_F(PressureMonitorTest, AFailingStepIsCountedAndTheThreadKeepsGoing)
{
  SMALL_SIMULATED_DEVICE_ONLY("injects a driver failure, sets other processes' use");
  three_pools pools = make_three();
  // The eviction's first device-to-host copy fails (the test's own copies are
  // synchronous: only the monitor's eviction makes this call).
  ASSERT_EQ(sim().fail_call("cuMemcpyDtoHAsync", 1, CUDA_SUCCESS), CUDA_SUCCESS);
  set_external(14 * MiB);
  pressure_monitor monitor(alloc(), fast);
  ASSERT_TRUE(wait_until([&] { return monitor.errors() >= 1; }, patience));
  std::string const error = monitor.last_error();
  EXPECT_NE(error.find("device 0: "), std::string::npos) << error;
  EXPECT_NE(error.find("cuMemcpyDtoHAsync"), std::string::npos) << error;
  // A later pass evicts what the failed one could not.
  ASSERT_TRUE(wait_until([&] { return monitor.evicted_bytes() >= 8 * MiB; }, patience))
    << "evicted " << monitor.evicted_bytes() << " bytes after the failure";
  wait_for_passes(monitor, 2);
  EXPECT_EQ(monitor.errors(), 1U) << monitor.last_error();
  EXPECT_EQ(alloc().stats(pools.a, 0).evicted_bytes, 8 * MiB);
  EXPECT_EQ(alloc().check(), "");
  monitor.stop();
  set_external(0);
  check_and_free(pools);
}

}  // namespace
}  // namespace swapalloc::testing
