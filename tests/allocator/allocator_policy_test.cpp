// Tests of the 85/75 policy carried out by the allocator (allocator.hpp, device_state.hpp,
// policy.hpp) on a 64 MiB simulated device: pre-eviction on a map takes the least recently
// used eligible pool down to the low watermark and keeps the device under the high one;
// critical and active pools are never evicted; ensure_free makes room or says why not;
// activate restores; evicting a pool waits for its own last use, not for other streams.
#include "fault_sweep.hpp"
#include "scoped_env.hpp"
#include "small_device_fixture.hpp"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace swapalloc::testing {
namespace {

/// 0.85 × 64 MiB, the high watermark's bytes, plus one page: the bound on device use.
constexpr std::size_t use_bound = (small_device_bytes / 100 * 85) + small_device_page;

class PolicyAllocatorTest : public SmallDeviceTest {
 public:
  using SwapTest::alloc;

 protected:
  /// A block of `bytes` in `pool`, filled, inside one activation on the default stream.
  filled_block use(pool_id pool, std::size_t bytes, std::uint64_t seed)
  {
    activation const active(alloc(), pool, 0, nullptr);
    filled_block b = fill_new(pool, bytes, seed);
    EXPECT_LE(used_bytes(), use_bound) << "after allocating in pool " << pool;
    return b;
  }

  /// Activates `pool`, checks `blocks` read back intact, deactivates.
  void expect_intact_when_active(pool_id pool, std::vector<filled_block> const& blocks,
                                 std::string const& when)
  {
    activation const active(alloc(), pool, 0, nullptr);
    EXPECT_LE(used_bytes(), use_bound) << when;
    EXPECT_EQ(alloc().stats(pool, 0).evicted_bytes, 0U) << when;
    expect_intact(blocks, when);
  }
};

TEST_F(PolicyAllocatorTest, AllocatingPastTheHighWatermarkEvictsTheLeastRecentlyUsedPool)
{
  pool_id const a = make_pool("a");
  pool_id const b = make_pool("b");
  pool_id const c = make_pool("c");
  std::vector<filled_block> const in_a{use(a, 14 * MiB, 1)};
  std::vector<filled_block> const in_b{use(b, 14 * MiB, 2)};
  std::vector<filled_block> const in_c{use(c, 14 * MiB, 3)};
  EXPECT_EQ(alloc().pressure(0), pressure_level::safe) << "42 of 64 MiB";
  // 56 MiB would pass 0.85 × 64 = 54.4 MiB: the policy frees down to 0.75 × 64 = 48 MiB,
  // 8 MiB, from the least recently used pool, a.
  pool_id const d = make_pool("d");
  std::vector<filled_block> const in_d{use(d, 14 * MiB, 4)};
  EXPECT_EQ(alloc().stats(a, 0).evicted_bytes, 8 * MiB);
  EXPECT_EQ(alloc().stats(b, 0).evicted_bytes, 0U);
  EXPECT_EQ(alloc().stats(c, 0).evicted_bytes, 0U);
  EXPECT_EQ(alloc().pressure(0), pressure_level::warning) << "48 of 64 MiB";
  // Using a again restores it, and makes room first: from b, now the coldest.
  expect_intact_when_active(a, in_a, "a after its eviction");
  EXPECT_EQ(alloc().stats(b, 0).evicted_bytes, 8 * MiB);
  EXPECT_EQ(alloc().stats(c, 0).evicted_bytes, 0U);
  expect_intact_when_active(b, in_b, "b after its eviction");
  expect_intact_when_active(c, in_c, "c");
  expect_intact_when_active(d, in_d, "d");
  for (auto const* blocks : {&in_a, &in_b, &in_c, &in_d}) {
    for (filled_block const& block : *blocks) {
      alloc().deallocate(block.ptr, block.bytes, 0, nullptr);
    }
  }
}

TEST_F(PolicyAllocatorTest, FreedMemoryInAStreamBinIsReleasedBeforeLiveDataIsEvicted)
{
  // A pool whose free space sits in a stream's bin once showed no cached bytes to the
  // policy, which then evicted 8 MiB of a's live data and released nothing of c.
  pool_id const a = make_pool("a");
  pool_id const b = make_pool("b");
  pool_id const c = make_pool("c");
  std::vector<filled_block> const in_a{use(a, 14 * MiB, 16)};
  std::vector<filled_block> const in_b{use(b, 14 * MiB, 17)};
  {
    activation const active(alloc(), c, 0, nullptr);
    filled_block const freed = fill_new(c, 14 * MiB, 18);
    alloc().deallocate(freed.ptr, freed.bytes, 0, nullptr);  // into the default stream's bin
  }
  pool_stats const c_before = alloc().stats(c, 0);
  ASSERT_EQ(c_before.allocated_bytes, 0U);
  ASSERT_EQ(c_before.reserved_bytes, 14 * MiB) << "the freed block's pages stay cached";
  // 42 + 14 MiB would pass 0.85 × 64 = 54.4 MiB: releasing c's 14 cached MiB makes the
  // room, down past 0.75 × 64 = 48 MiB, without evicting anything.
  pool_id const d = make_pool("d");
  std::vector<filled_block> const in_d{use(d, 14 * MiB, 19)};
  EXPECT_EQ(alloc().stats(c, 0).reserved_bytes, 0U) << "c's cached pages were released";
  EXPECT_EQ(alloc().stats(a, 0).evicted_bytes, 0U) << "a's live data was evicted";
  EXPECT_EQ(alloc().stats(b, 0).evicted_bytes, 0U);
  EXPECT_EQ(alloc().stats(a, 0).evictions, 0U);
  EXPECT_EQ(used_bytes(), 42 * MiB) << "a, b and d, nothing else";
  expect_intact(in_a, "a");
  expect_intact(in_b, "b");
  expect_intact(in_d, "d");
  for (auto const* blocks : {&in_a, &in_b, &in_d}) {
    for (filled_block const& block : *blocks) {
      alloc().deallocate(block.ptr, block.bytes, 0, nullptr);
    }
  }
}

TEST_F(PolicyAllocatorTest, CriticalAndActivePoolsAreNeverEvicted)
{
  pool_options critical;
  critical.priority    = pool_priority::critical;
  pool_id const weight = alloc().create_pool("backbone", critical);
  pool_id const head   = make_pool("head");
  pool_id const other  = make_pool("other");
  std::vector<filled_block> const in_weight{use(weight, 20 * MiB, 5)};
  activation const busy(alloc(), head, 0, nullptr);
  filled_block const in_head = fill_new(head, 20 * MiB, 6);
  // 60 MiB passes the high watermark, but nothing may be evicted: it still fits.
  filled_block const more = fill_new(other, 20 * MiB, 7);
  EXPECT_EQ(alloc().stats(weight, 0).evicted_bytes, 0U);
  EXPECT_EQ(alloc().stats(head, 0).evicted_bytes, 0U);
  EXPECT_EQ(alloc().pressure(0), pressure_level::critical) << "60 of 64 MiB";
  std::string report;
  {
    pool_scope const scope(alloc(), other);
    try {
      (void)alloc().allocate(8 * MiB, 0, nullptr);
      ADD_FAILURE() << "8 MiB more fit on a full device";
    } catch (out_of_memory const& error) {
      report = error.what();
    }
  }
  EXPECT_NE(report.find("no (critical)"), std::string::npos) << report;
  EXPECT_NE(report.find("no (pinned or active)"), std::string::npos) << report;
  EXPECT_EQ(alloc().stats(weight, 0).evicted_bytes, 0U);
  EXPECT_EQ(alloc().stats(head, 0).evicted_bytes, 0U);
  expect_intact(in_weight, "the critical pool");
  expect_intact({in_head}, "the active pool");
  EXPECT_THROW((void)alloc().evict(weight, 0), usage_error) << "critical: refused";
  alloc().deallocate(more.ptr, more.bytes, 0, nullptr);
  alloc().deallocate(in_head.ptr, in_head.bytes, 0, nullptr);
  alloc().deallocate(in_weight[0].ptr, in_weight[0].bytes, 0, nullptr);
}

TEST_F(PolicyAllocatorTest, EnsureFreeMakesRoomOrSaysWhatIsPinned)
{
  pool_id const a = make_pool("a");
  pool_id const b = make_pool("b");
  std::vector<filled_block> const in_a{use(a, 16 * MiB, 8)};
  std::vector<filled_block> const in_b{use(b, 16 * MiB, 9)};
  room_result const nothing = alloc().ensure_free(8 * MiB, 0);
  EXPECT_EQ(nothing.freed_bytes(), 0U) << "32 + 8 MiB stays under 54.4 MiB";
  // 32 + 24 = 56 MiB: down to 48 MiB, 8 MiB out of a, the colder.
  room_result const made = alloc().ensure_free(24 * MiB, 0);
  EXPECT_EQ(made.evicted_bytes, 8 * MiB);
  ASSERT_EQ(made.evicted.size(), 1U);
  EXPECT_EQ(made.evicted[0], a);
  EXPECT_EQ(alloc().stats(a, 0).evicted_bytes, 8 * MiB);
  alloc().pin_pool(a);
  alloc().pin_pool(b);
  try {
    (void)alloc().ensure_free(40 * MiB, 0);
    ADD_FAILURE() << "room was made from pinned pools";
  } catch (out_of_memory const& error) {
    std::string const report = error.what();
    EXPECT_NE(report.find("ensure_free(40.00 MiB)"), std::string::npos) << report;
    EXPECT_NE(report.find("no (pinned or active)"), std::string::npos) << report;
    EXPECT_NE(report.find("high watermark of 0.85"), std::string::npos) << report;
  }
  EXPECT_EQ(alloc().stats(b, 0).evicted_bytes, 0U);
  alloc().unpin_pool(a);
  alloc().unpin_pool(b);
  expect_intact_when_active(a, in_a, "a");
  expect_intact_when_active(b, in_b, "b");
  alloc().deallocate(in_a[0].ptr, in_a[0].bytes, 0, nullptr);
  alloc().deallocate(in_b[0].ptr, in_b[0].bytes, 0, nullptr);
}

void sleep_half_a_second(void* done)
{
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  static_cast<std::atomic<bool>*>(done)->store(true);
}

TEST_F(PolicyAllocatorTest, EvictingAPoolWaitsForItsOwnLastUseNotForOtherStreams)
{
  pool_id const a     = make_pool("a");
  CUstream const mine = drv().stream_create();
  CUstream const busy = drv().stream_create();
  filled_block in_a;
  {
    activation const active(alloc(), a, 0, mine);
    in_a = fill_new(a, 4 * MiB, 10);
  }
  std::atomic<bool> other_done{false};
  drv().launch_host_func(busy, sleep_half_a_second, &other_done);  // pool b's long work
  evict_result const out = alloc().evict(a, 0);
  EXPECT_EQ(out.released_bytes, 4 * MiB);
  EXPECT_FALSE(other_done.load()) << "evict waited for another stream's work";
  EXPECT_FALSE(drv().stream_query(busy));
  drv().stream_synchronize(busy);
  EXPECT_TRUE(other_done.load());
  expect_intact_when_active(a, {in_a}, "a");
  alloc().deallocate(in_a.ptr, in_a.bytes, 0, nullptr);
  drv().stream_destroy(mine);
  drv().stream_destroy(busy);
}

/// Runs `action` once per fault of `faults_for(calls)` with that call failing: `action`
/// succeeds or throws cuda_error or out_of_memory, and after `settle` (which undoes what
/// the action did, faults cleared) every block of `pools` reads back intact.
template <typename Action, typename Settle>
std::size_t sweep(PolicyAllocatorTest& test, sim_control const& sim,
                  std::vector<std::pair<char const*, unsigned long long>> const& calls,
                  Action&& action, Settle&& settle)
{
  std::size_t injected = 0;
  for (auto const& [entry, nth] : faults_for(calls)) {
    SCOPED_TRACE(std::string(entry) + " call " + std::to_string(nth));
    EXPECT_EQ(sim.fail_call(entry, nth, CUDA_SUCCESS), CUDA_SUCCESS);
    bool done = false;
    try {
      action();
      done = true;
    } catch (cuda_error const&) {     // a clear error: the failed call, named
    } catch (out_of_memory const&) {  // the policy could not make the room
    }
    sim.clear_faults();
    EXPECT_EQ(test.alloc().check(), "");
    settle(done);
    ++injected;
  }
  return injected;
}

TEST_F(PolicyAllocatorTest, AFaultInAPressureEvictionInsideAllocateLosesNothing)
{
  SIM_ONLY(sim(), "injects driver failures");
  pool_id const a = make_pool("a");
  pool_id const b = make_pool("b");
  pool_id const c = make_pool("c");
  std::vector<filled_block> const in_a{use(a, 16 * MiB, 11)};
  std::vector<filled_block> const in_b{use(b, 16 * MiB, 12)};
  CUdeviceptr taken = 0;
  auto const action = [&] {  // 32 + 24 MiB passes 54.4 MiB: a is evicted first
    activation const active(alloc(), c, 0, nullptr);
    pool_scope const scope(alloc(), c);
    taken = alloc().allocate(24 * MiB, 0, nullptr);
  };
  auto const settle = [&](bool done) {
    if (done) { alloc().deallocate(taken, 24 * MiB, 0, nullptr); }
    EXPECT_EQ(alloc().stats(c, 0).allocated_bytes, 0U) << "done " << done;
    (void)alloc().empty_cache();
    expect_intact_when_active(a, in_a, "a");
    expect_intact_when_active(b, in_b, "b");
  };
  auto const calls = calls_made(sim(), action);
  EXPECT_GT(alloc().stats(a, 0).evicted_bytes, 0U) << "the clean run evicted a";
  settle(true);
  EXPECT_GT(sweep(*this, sim(), calls, action, settle), 10U);
  action();  // usable after all of them
  settle(true);
  alloc().deallocate(in_a[0].ptr, in_a[0].bytes, 0, nullptr);
  alloc().deallocate(in_b[0].ptr, in_b[0].bytes, 0, nullptr);
}

TEST_F(PolicyAllocatorTest, AFaultInAPressureEvictionInsideActivateLosesNothing)
{
  SIM_ONLY(sim(), "injects driver failures");
  pool_id const a = make_pool("a");
  pool_id const b = make_pool("b");
  pool_id const c = make_pool("c");
  std::vector<filled_block> const in_a{use(a, 16 * MiB, 13)};
  (void)alloc().evict(a, 0);
  std::vector<filled_block> const in_b{use(b, 20 * MiB, 14)};
  std::vector<filled_block> const in_c{use(c, 20 * MiB, 15)};
  auto const action = [&] {  // 40 + 16 MiB passes 54.4 MiB: b is evicted, a restored
    activation const active(alloc(), a, 0, nullptr);
  };
  auto const settle = [&](bool) {  // back to: a evicted, b and c resident
    expect_intact_when_active(b, in_b, "b");
    expect_intact_when_active(c, in_c, "c");
    expect_intact_when_active(a, in_a, "a");
    (void)alloc().evict(a, 0);
    expect_intact_when_active(b, in_b, "b, again");
  };
  auto const calls = calls_made(sim(), action);
  EXPECT_GT(alloc().stats(b, 0).evicted_bytes, 0U) << "the clean run evicted b";
  settle(true);
  EXPECT_GT(sweep(*this, sim(), calls, action, settle), 10U);
  for (auto const* blocks : {&in_a, &in_b, &in_c}) {
    alloc().deallocate((*blocks)[0].ptr, (*blocks)[0].bytes, 0, nullptr);
  }
}

TEST_F(PolicyAllocatorTest, ARestoreMapsThePagesItsRoomMakingEvictionUnmapped)
{
  // Issue 14: evicting A to restore B. Restoring a (16 MiB) passes the high watermark by
  // 8 MiB: b loses 4 pages, whose memory a's restore maps again instead of creating
  // pages; what no map took is released when the restore ends.
  SIM_ONLY(sim(), "counts cuMemCreate calls and reads the census");
  pool_id const a = make_pool("a");
  pool_id const b = make_pool("b");
  pool_id const c = make_pool("c");
  std::vector<filled_block> const in_a{use(a, 16 * MiB, 21)};
  (void)alloc().evict(a, 0);
  EXPECT_EQ(alloc().handle_stats(0).held_bytes, 0U) << "an explicit evict keeps nothing";
  std::vector<filled_block> const in_b{use(b, 20 * MiB, 22)};
  std::vector<filled_block> const in_c{use(c, 20 * MiB, 23)};
  handle_cache_stats const before = alloc().handle_stats(0);
  auto const creates              = sim().call_count("cuMemCreate");
  {
    activation const active(alloc(), a, 0, nullptr);
    expect_intact(in_a, "a, restored");
  }
  handle_cache_stats const after = alloc().handle_stats(0);
  std::size_t const hits         = after.hits - before.hits;
  std::size_t const created      = sim().call_count("cuMemCreate") - creates;
  EXPECT_EQ(alloc().stats(b, 0).evicted_bytes, 8 * MiB);
  EXPECT_EQ(hits, 4U) << "b's 4 evicted pages went to a";
  EXPECT_EQ(created, 4U) << "a's other 4 pages were created";
  EXPECT_EQ(after.held_bytes, 0U) << "nothing is held after the restore";
  EXPECT_EQ(sim().census().physical_bytes, used_bytes()) << "no device memory unaccounted for";
  expect_intact_when_active(b, in_b, "b");
  expect_intact_when_active(c, in_c, "c");
  for (auto const* blocks : {&in_a, &in_b, &in_c}) {
    alloc().deallocate((*blocks)[0].ptr, (*blocks)[0].bytes, 0, nullptr);
  }
}

TEST_F(PolicyAllocatorTest, WithTheHandleCacheOffEveryRestoredPageIsCreated)
{
  SIM_ONLY(sim(), "counts cuMemCreate calls");
  allocator_options options  = this->options();
  options.handle_cache_bytes = 0;
  allocator off(drv(), options);
  auto const retains = sim().call_count("cuMemRetainAllocationHandle");
  pool_id const a    = off.create_pool("a");
  pool_id const b    = off.create_pool("b");
  std::vector<CUdeviceptr> blocks;
  for (pool_id const pool : {a, b}) {
    pool_scope const scope(off, pool);
    blocks.push_back(off.allocate(24 * MiB, 0, nullptr));
  }
  (void)off.evict(a, 0);
  {
    pool_scope const scope(off, b);
    blocks.push_back(off.allocate(16 * MiB, 0, nullptr));  // 40 MiB resident
  }
  auto const creates = sim().call_count("cuMemCreate");
  {
    activation const active(off, a, 0, nullptr);  // 64 > 54.4 MiB: b is evicted
  }
  EXPECT_GT(off.stats(b, 0).evicted_bytes, 0U);
  EXPECT_EQ(sim().call_count("cuMemCreate") - creates, 12U) << "a's 12 pages, all created";
  EXPECT_EQ(off.handle_stats(0).hits, 0U);
  EXPECT_EQ(sim().call_count("cuMemRetainAllocationHandle"), retains);
  off.deallocate(blocks[0], 24 * MiB, 0, nullptr);
  off.deallocate(blocks[1], 24 * MiB, 0, nullptr);
  off.deallocate(blocks[2], 16 * MiB, 0, nullptr);
}

TEST_F(PolicyAllocatorTest, DeactivateWithoutActivateIsAMisuse)
{
  pool_id const a = make_pool("a");
  EXPECT_THROW(alloc().deactivate(a, 0, nullptr), usage_error);
  {
    activation const nested(alloc(), a, 0, nullptr);
  }
  EXPECT_THROW(alloc().deactivate(a, 0, nullptr), usage_error) << "one deactivate per activate";
}

TEST_F(PolicyAllocatorTest, ALimitSetAtRunTimeMovesTheWatermarksAndBoundsTheDefaultPool)
{
  pool_id const a = make_pool("a");
  pool_id const b = make_pool("b");
  std::vector<filled_block> const in_a{use(a, 14 * MiB, 1)};
  alloc().set_device_limit(0, device_limit{32 * MiB, 1.0});
  // 28 MiB passes 0.85 × 32 = 27.2 MiB: room is made down to 0.75 × 32 = 24 MiB, from a.
  std::vector<filled_block> const in_b{use(b, 14 * MiB, 2)};
  EXPECT_GT(alloc().stats(a, 0).evicted_bytes, 0U) << "the limit of 32 MiB applies";
  EXPECT_EQ(alloc().stats(b, 0).evicted_bytes, 0U);
  pool_stats const own = alloc().device_stats(0);
  EXPECT_LE(own.reserved_bytes, (32 * MiB / 100 * 85) + small_device_page);
  std::string report;
  try {  // more than the limit itself, whatever is evicted
    (void)alloc().allocate(34 * MiB, 0, nullptr);
    ADD_FAILURE() << "34 MiB fit under a limit of 32 MiB";
  } catch (out_of_memory const& error) {
    report = error.what();
  }
  EXPECT_NE(report.find("set_device_limit"), std::string::npos) << report;
  EXPECT_THROW(alloc().set_device_limit(0, device_limit{0, 0.0}), config_error);
  EXPECT_THROW(alloc().set_device_limit(0, device_limit{0, 1.5}), config_error);
  EXPECT_THROW(alloc().set_device_limit(7, device_limit{0, 0.5}), usage_error);
  expect_intact_when_active(a, in_a, "a after the limit evicted it");
  free_blocks(in_a);
  free_blocks(in_b);
}

TEST(PolicyOptions, ALowWatermarkNotBelowTheHighOneIsRejected)
{
  driver const drv;
  allocator_options o;
  o.read_environment = false;
  o.high_watermark   = 0.7;
  o.low_watermark    = 0.8;
  try {
    allocator const rejected(drv, o);
    ADD_FAILURE() << "low 0.8 >= high 0.7 accepted";
  } catch (config_error const& error) {
    std::string const message = error.what();
    EXPECT_NE(message.find("0.8"), std::string::npos) << message;
    EXPECT_NE(message.find("0.7"), std::string::npos) << message;
  }
}

TEST(PolicyOptions, ACompressAfterOutsideZeroToOneDayIsRejected)
{
  driver const drv;
  for (std::chrono::milliseconds const bad :
       {std::chrono::milliseconds(-1), std::chrono::milliseconds(86'400'001)}) {
    allocator_options o;
    o.read_environment = false;
    o.compress_after   = bad;
    try {
      allocator const rejected(drv, o);
      ADD_FAILURE() << "compress_after " << bad.count() << " ms accepted";
    } catch (config_error const& error) {
      std::string const message = error.what();
      EXPECT_EQ(error.setting(), "compress_after");
      EXPECT_NE(message.find("compress_after=" + std::to_string(bad.count()) + " ms"),
                std::string::npos)
        << message;
      EXPECT_NE(message.find("0 to 86400000 ms"), std::string::npos) << message;
    }
  }
  allocator_options zero;
  zero.read_environment = false;
  zero.compress_after   = std::chrono::milliseconds(0);
  EXPECT_NO_THROW(allocator(drv, zero)) << "0 compresses behind every eviction";
}

TEST(PolicyOptions, CompressAfterComesFromTheEnvironmentUnlessSet)
{
  {
    scoped_env const seven(compress_after_variable, "7");
    EXPECT_EQ(resolve_options({}).compress_after, std::chrono::milliseconds(7000));
    allocator_options o;
    o.compress_after = std::chrono::milliseconds(5);
    EXPECT_EQ(resolve_options(o).compress_after, std::chrono::milliseconds(5)) << "explicit wins";
  }
  scoped_env const unset(compress_after_variable, nullptr);
  EXPECT_EQ(resolve_options({}).compress_after, std::chrono::seconds(30)) << "the default";
}

TEST(PolicyOptions, HostPinComesFromTheEnvironmentUnlessSet)
{
  {
    scoped_env const alloc(host_pin_variable, "alloc");
    EXPECT_EQ(resolve_options({}).host.pin, pin_method::host_alloc);
    allocator_options o;
    o.host.pin = pin_method::host_register;
    EXPECT_EQ(resolve_options(o).host.pin, pin_method::host_register) << "explicit wins";
    o.read_environment = false;
    o.host.pin         = pin_method::automatic;
    EXPECT_EQ(resolve_options(o).host.pin, pin_method::automatic) << "environment ignored";
  }
  scoped_env const unset(host_pin_variable, nullptr);
  EXPECT_EQ(resolve_options({}).host.pin, pin_method::automatic)
    << "the default: the store registers where the device supports it";
}

TEST(PolicyOptions, TheStagingRingHoldsTwoSlotsPerWorkerFromSixteenToSixtyFourUnlessSet)
{
  struct row {
    std::size_t workers;
    std::size_t staging_slots;  // set; 0: the default
    std::size_t expected;
  };
  for (row const r : {row{1, 0, 16}, row{8, 0, 16}, row{9, 0, 18}, row{32, 0, 64}, row{47, 0, 64},
                      row{47, 2, 2}, row{1, 40, 40}}) {
    allocator_options o;
    o.read_environment       = false;
    o.workers                = r.workers;
    o.transfer.staging_slots = r.staging_slots;
    EXPECT_EQ(resolve_options(o).transfer.staging_slots, r.expected)
      << r.workers << " workers, " << r.staging_slots << " set";
  }
}

}  // namespace
}  // namespace swapalloc::testing
