// Tests of allocator::prefetch (allocator.hpp, room_maker.hpp, device_state.hpp's moving
// mark, policy.hpp refusal::prefetched) on a 64 MiB simulated device: a prefetch and the
// activation after it move each page once; the prefetch runs while the host works (timed
// through the simulator's link); an activation during a prefetch waits for it; the policy
// spares a prefetched pool until its use, except on out-of-memory; misuse; a failed
// prefetch loses nothing; destroying a pool or the allocator with prefetches queued.
#include "fault_sweep.hpp"
#include "small_device_fixture.hpp"

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

namespace swapalloc::testing {
namespace {

constexpr std::size_t pool_bytes = 16 * MiB;  // the prefetched pool's data
constexpr std::size_t pool_pages = pool_bytes / small_device_page;

using clock_type = std::chrono::steady_clock;

[[nodiscard]] double ms_since(clock_type::time_point start)
{
  return std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
}

/// The link speed the simulator was configured with (SWAPALLOC_SIM_LINK_GBPS; unset or
/// empty: 0, unthrottled), to put back after a test slowed the link.
[[nodiscard]] double configured_link_gbps()
{
  char const* value = std::getenv("SWAPALLOC_SIM_LINK_GBPS");
  return value != nullptr && *value != '\0' ? std::strtod(value, nullptr) : 0.0;
}

/// What restoring moved, counted through the simulator and the pool's statistics.
struct moves {
  unsigned long long bytes{0};  // over the link to the device (cudasimLinkBytes): copies
                                // are gathered, so their count depends on the host layout
  unsigned long long maps{0};   // cuMemMap: pages mapped again
  std::size_t pages{0};         // pool_stats::restores: pages restored

  friend moves operator-(moves const& a, moves const& b)
  {
    return moves{a.bytes - b.bytes, a.maps - b.maps, a.pages - b.pages};
  }
  friend bool operator==(moves const&, moves const&) = default;
  friend std::ostream& operator<<(std::ostream& os, moves const& m)
  {
    return os << "{bytes " << m.bytes << ", maps " << m.maps << ", pages " << m.pages << "}";
  }
};

class PrefetchTest : public SmallDeviceTest {
 public:
  using SwapTest::alloc;

 protected:
  /// Evicts every page of `pool` and waits for the compression behind it, so that each
  /// restore finds the same host copies (the copy calls of a restore depend on whether a
  /// chunk is still raw).
  void evict_all(pool_id pool, std::size_t expected_bytes = pool_bytes)
  {
    EXPECT_EQ(alloc().evict(pool, 0).released_bytes, expected_bytes);
    alloc().wait_for_compression(pool);
    EXPECT_EQ(alloc().stats(pool, 0).evicted_bytes, expected_bytes);
  }

  [[nodiscard]] moves counted(pool_id pool) const
  {
    return moves{sim().link_bytes(0), sim().call_count("cuMemMap"),
                 alloc_->stats(pool, 0).restores};
  }

  /// What a plain `restore` of `pool` (evicted) moves; evicts it again after.
  moves plain_restore(pool_id pool, filled_block const& data)
  {
    moves const before         = counted(pool);
    restore_result const plain = alloc().restore(pool, 0);
    moves const by_restore     = counted(pool) - before;
    EXPECT_EQ(plain.pages, pool_pages);
    EXPECT_EQ(by_restore.pages, pool_pages);
    EXPECT_EQ(by_restore.maps, pool_pages);
    EXPECT_GE(by_restore.bytes, data.bytes) << "random bytes: copied, not memset";
    expect_intact({data}, "after a plain restore");
    evict_all(pool);
    return by_restore;
  }

  /// Activates `pool`, checks `blocks` intact and nothing evicted, deactivates.
  void expect_intact_when_active(pool_id pool, std::vector<filled_block> const& blocks,
                                 std::string const& when)
  {
    activation const active(alloc(), pool, 0, nullptr);
    EXPECT_EQ(alloc().stats(pool, 0).evicted_bytes, 0U) << when;
    expect_intact(blocks, when);
  }

  /// Sets the simulator's link to `gbps` until the returned guard ends.
  [[nodiscard]] auto slow_link(double gbps) const
  {
    sim().set_link_bandwidth(gbps);
    return scope_exit([this] { sim().set_link_bandwidth(configured_link_gbps()); });
  }
};

TEST_F(PrefetchTest, PrefetchThenActivateMovesNothingTwice)
{
  SIM_ONLY(sim(), "counts the simulator's calls");
  pool_id const a         = make_pool("a");
  filled_block const data = use(a, pool_bytes, 1);
  evict_all(a);
  moves const by_restore = plain_restore(a, data);

  moves const before = counted(a);
  ASSERT_TRUE(alloc().prefetch(a, 0));
  alloc().wait_for_prefetches();
  EXPECT_EQ(alloc().stats(a, 0).evicted_bytes, 0U) << "the prefetch restored every page";
  EXPECT_EQ(counted(a) - before, by_restore) << "the prefetch alone moved what a restore does";
  restore_result const rest = alloc().activate(a, 0, nullptr);
  EXPECT_EQ(rest.pages, 0U) << "activate found nothing left to restore";
  EXPECT_EQ(rest.bytes_copied, 0U);
  EXPECT_EQ(counted(a) - before, by_restore) << "prefetch + activate moved each page once";
  expect_intact({data}, "after prefetch and activate");
  alloc().deactivate(a, 0, nullptr);
  alloc().deallocate(data.ptr, data.bytes, 0, nullptr);
}

// Timed, through the simulator's link: at 0.1 GB/s the 16 MiB of the pool take 168 ms on
// the link whatever the host does (the link is never faster than its bandwidth), so a
// restore's time T is dominated by the link, not by host load. The bounds are fractions
// of T measured in the same process a moment before, so a slow machine or a sanitizer
// build slows both sides: a prefetch returns in microseconds against T / 4 (42 ms at
// least), and after T of host work the activation waits for little against T / 2.
TEST_F(PrefetchTest, PrefetchOverlapsHostWork)
{
  SIM_ONLY(sim(), "times restores through the simulator's link");
  constexpr double link_gbps = 0.1;
  double const link_ms       = static_cast<double>(pool_bytes) / (link_gbps * 1e9) * 1e3;
  pool_id const a            = make_pool("a");
  filled_block const data    = use(a, pool_bytes, 2);  // at full speed: no link time
  evict_all(a);
  auto const unthrottle = slow_link(link_gbps);

  auto start                 = clock_type::now();
  restore_result const plain = alloc().restore(a, 0);
  double const restore_ms    = ms_since(start);
  EXPECT_EQ(plain.pages, pool_pages);
  EXPECT_GE(restore_ms, 0.95 * link_ms) << "the link throttles the restore";
  evict_all(a);

  start = clock_type::now();
  ASSERT_TRUE(alloc().prefetch(a, 0));
  double const prefetch_ms = ms_since(start);
  std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(restore_ms));  // host work
  start                     = clock_type::now();
  restore_result const rest = alloc().activate(a, 0, nullptr);
  double const activate_ms  = ms_since(start);
  std::cout << "[ timings  ] restore " << restore_ms << " ms (link alone " << link_ms
            << " ms), prefetch returned in " << prefetch_ms << " ms, activate after " << restore_ms
            << " ms of host work took " << activate_ms << " ms (" << rest.pages << " pages left)\n";
  EXPECT_LT(prefetch_ms, restore_ms / 4) << "prefetch returns at once";
  EXPECT_LT(activate_ms, restore_ms / 2) << "activate waited only for what was left";
  expect_intact({data}, "after prefetch and activate");
  alloc().deactivate(a, 0, nullptr);
  alloc().deallocate(data.ptr, data.bytes, 0, nullptr);
}

TEST_F(PrefetchTest, ActivateDuringAPrefetchWaitsForItAndRestoresTheRest)
{
  SIM_ONLY(sim(), "counts the simulator's calls, slows its link");
  pool_id const a         = make_pool("a");
  filled_block const data = use(a, pool_bytes, 3);
  evict_all(a);
  moves const by_restore = plain_restore(a, data);
  // A slow link keeps the prefetch in flight for 67 ms of copies (8 ms a page).
  auto const unthrottle = slow_link(0.25);

  // At once: activate races the prefetch thread's start; whichever comes first restores,
  // the other finds nothing left.
  moves before = counted(a);
  ASSERT_TRUE(alloc().prefetch(a, 0));
  restore_result rest = alloc().activate(a, 0, nullptr);
  EXPECT_EQ(alloc().stats(a, 0).evicted_bytes, 0U) << "activate returned with all of it back";
  EXPECT_EQ(alloc().stats(a, 0).restoring_bytes, 0U);
  EXPECT_EQ(counted(a) - before, by_restore) << "restored once, activate did " << rest.pages;
  expect_intact({data}, "during the activation");
  alloc().deactivate(a, 0, nullptr);
  alloc().wait_for_prefetches();
  EXPECT_EQ(counted(a) - before, by_restore) << "the prefetch found nothing more to do";
  // The activation came: the pool is no longer spared as prefetched.
  evict_all(a);

  // Once the prefetch has restored a page, the pool is moving: activate waits for it and
  // finds nothing left.
  before = counted(a);
  ASSERT_TRUE(alloc().prefetch(a, 0));
  ASSERT_TRUE(wait_until([&] { return alloc().stats(a, 0).evicted_bytes < pool_bytes; }))
    << "the prefetch never restored a page";
  rest = alloc().activate(a, 0, nullptr);
  EXPECT_EQ(rest.pages, 0U) << "activate restored pages the prefetch was moving";
  EXPECT_EQ(alloc().stats(a, 0).evicted_bytes, 0U) << "activate returned before the prefetch";
  EXPECT_EQ(counted(a) - before, by_restore) << "restored once";
  expect_intact({data}, "during the second activation");
  alloc().deactivate(a, 0, nullptr);
  alloc().deallocate(data.ptr, data.bytes, 0, nullptr);
}

TEST_F(PrefetchTest, APrefetchedPoolIsNotEvictedByThePolicyBeforeItsUse)
{
  pool_id const a = make_pool("a");
  pool_id const b = make_pool("b");
  pool_id const c = make_pool("c");
  pool_id const d = make_pool("d");
  std::vector<filled_block> const in_a{use(a, pool_bytes, 4)};  // the least recently used
  evict_all(a);
  std::vector<filled_block> const in_b{use(b, 16 * MiB, 5)};
  std::vector<filled_block> const in_c{use(c, 12 * MiB, 6)};
  ASSERT_TRUE(alloc().prefetch(a, 0));  // 28 + 16 = 44 MiB: no room to make
  alloc().wait_for_prefetches();
  ASSERT_EQ(alloc().stats(a, 0).evicted_bytes, 0U);
  // 44 + 12 = 56 MiB passes 0.85 × 64 = 54.4 MiB: 8 MiB go, to 48 MiB. a is the coldest
  // but prefetched and not used yet: b, the next coldest, goes.
  std::vector<filled_block> const in_d{use(d, 12 * MiB, 7)};
  EXPECT_EQ(alloc().stats(a, 0).evicted_bytes, 0U) << "the prefetched pool was evicted";
  EXPECT_EQ(alloc().stats(b, 0).evicted_bytes, 8 * MiB);
  EXPECT_EQ(alloc().stats(c, 0).evicted_bytes, 0U);
  // With every other pool pinned, room would have to come from a: refused, and said so.
  for (pool_id const other : {b, c, d}) {
    alloc().pin_pool(other);
  }
  try {
    (void)alloc().ensure_free(8 * MiB, 0);
    ADD_FAILURE() << "room was made from the prefetched pool";
  } catch (out_of_memory const& error) {
    std::string const report = error.what();
    EXPECT_NE(report.find("no (prefetched and not used yet)"), std::string::npos) << report;
  }
  EXPECT_EQ(alloc().stats(a, 0).evicted_bytes, 0U);
  // Used once, a is an ordinary pool again: the same request evicts from it.
  {
    activation const active(alloc(), a, 0, nullptr);
  }
  room_result const made = alloc().ensure_free(8 * MiB, 0);
  ASSERT_EQ(made.evicted.size(), 1U);
  EXPECT_EQ(made.evicted[0], a);
  EXPECT_EQ(alloc().stats(a, 0).evicted_bytes, 8 * MiB);
  for (pool_id const other : {b, c, d}) {
    alloc().unpin_pool(other);
  }
  expect_intact_when_active(a, in_a, "a");
  expect_intact_when_active(b, in_b, "b");
  expect_intact_when_active(c, in_c, "c");
  expect_intact_when_active(d, in_d, "d");
  for (auto const* blocks : {&in_a, &in_b, &in_c, &in_d}) {
    alloc().deallocate((*blocks)[0].ptr, (*blocks)[0].bytes, 0, nullptr);
  }
}

TEST_F(PrefetchTest, APrefetchedPoolIsEvictedOnOutOfMemory)
{
  pool_id const a = make_pool("a");
  pool_id const b = make_pool("b");
  std::vector<filled_block> const in_a{use(a, pool_bytes, 8)};
  evict_all(a);
  std::vector<filled_block> const in_b{use(b, 24 * MiB, 9)};
  ASSERT_TRUE(alloc().prefetch(a, 0));
  alloc().wait_for_prefetches();
  ASSERT_EQ(alloc().stats(a, 0).evicted_bytes, 0U);
  // 40 + 28 MiB does not fit in 64: b is active, so only the prefetched a can give way,
  // and a real out-of-memory may take it.
  filled_block more;
  {
    activation const active(alloc(), b, 0, nullptr);
    more = fill_new(b, 28 * MiB, 10);
  }
  EXPECT_EQ(alloc().stats(a, 0).evicted_bytes, pool_bytes);
  expect_intact({more}, "the allocation that needed the room");
  alloc().deallocate(more.ptr, more.bytes, 0, nullptr);
  expect_intact_when_active(a, in_a, "a");
  expect_intact_when_active(b, in_b, "b");
  alloc().deallocate(in_a[0].ptr, in_a[0].bytes, 0, nullptr);
  alloc().deallocate(in_b[0].ptr, in_b[0].bytes, 0, nullptr);
}

TEST_F(PrefetchTest, PrefetchOfAResidentOrUnknownPool)
{
  pool_id const a     = make_pool("a");
  pool_id const never = make_pool("never used");
  EXPECT_FALSE(alloc().prefetch(never, 0)) << "no memory on the device yet";
  filled_block const data = use(a, 4 * MiB, 11);
  EXPECT_FALSE(alloc().prefetch(a, 0)) << "resident: nothing in host memory";
  evict_all(a, 4 * MiB);
  (void)alloc().restore(a, 0);
  EXPECT_FALSE(alloc().prefetch(a, 0)) << "restored already";
  alloc().wait_for_prefetches();  // none started: returns at once
  EXPECT_EQ(alloc().stats(a, 0).restores, 2U) << "only the explicit restore moved pages";

  std::size_t const bad_pools = alloc().usage_errors(usage_error_kind::bad_pool);
  std::size_t const bad_devs  = alloc().usage_errors(usage_error_kind::bad_device);
  auto const kind_of          = [&](auto&& call) {
    try {
      (void)call();
    } catch (usage_error const& error) {
      return error.kind();
    }
    ADD_FAILURE() << "no usage_error";
    return usage_error_kind{};
  };
  EXPECT_EQ(kind_of([&] { return alloc().prefetch(pool_id{999}, 0); }), usage_error_kind::bad_pool);
  EXPECT_EQ(kind_of([&] { return alloc().prefetch(a, 1); }), usage_error_kind::bad_device);
  EXPECT_EQ(kind_of([&] { return alloc().prefetch(a, -1); }), usage_error_kind::bad_device);
  alloc().destroy_pool(never);
  EXPECT_EQ(kind_of([&] { return alloc().prefetch(never, 0); }), usage_error_kind::bad_pool)
    << "a destroyed pool";
  EXPECT_EQ(alloc().usage_errors(usage_error_kind::bad_pool), bad_pools + 2);
  EXPECT_EQ(alloc().usage_errors(usage_error_kind::bad_device), bad_devs + 2);
  expect_intact({data}, "after the misuses");
  alloc().deallocate(data.ptr, data.bytes, 0, nullptr);
}

TEST_F(PrefetchTest, AFailedPrefetchLosesNothing)
{
  SIM_ONLY(sim(), "injects driver failures");
  pool_id const a         = make_pool("a");
  filled_block const data = use(a, pool_bytes, 12);
  evict_all(a);
  auto const prefetch = [&] {
    ASSERT_TRUE(alloc().prefetch(a, 0));
    alloc().wait_for_prefetches();  // the prefetch thread alone calls the driver meanwhile
  };
  auto const calls = calls_made(sim(), prefetch);
  ASSERT_EQ(alloc().stats(a, 0).evicted_bytes, 0U) << "the clean run restored a";
  std::size_t failed = 0;
  for (auto const& [entry, nth] : faults_for(calls)) {
    SCOPED_TRACE(std::string(entry) + " call " + std::to_string(nth));
    {  // used: no longer spared as prefetched
      activation const used(alloc(), a, 0, nullptr);
    }
    evict_all(a);
    ASSERT_EQ(sim().fail_call(entry, nth, CUDA_SUCCESS), CUDA_SUCCESS);
    prefetch();
    sim().clear_faults();
    EXPECT_EQ(alloc().check(), "");
    // All or nothing: a failed prefetch leaves every page evicted, with its copy.
    pool_stats const after = alloc().stats(a, 0);
    EXPECT_TRUE(after.evicted_bytes == 0 || after.evicted_bytes == pool_bytes)
      << after.evicted_bytes << " bytes evicted";
    EXPECT_EQ(after.restoring_bytes, 0U);
    failed += after.evicted_bytes != 0 ? 1 : 0;
    expect_intact_when_active(a, {data}, "activated after the prefetch");
  }
  EXPECT_GE(failed, 3U) << "faults that made the prefetch fail";
  alloc().deallocate(data.ptr, data.bytes, 0, nullptr);
}

TEST_F(PrefetchTest, DestroyingAPoolWithAPrefetchQueuedIsSafe)
{
  SIM_ONLY(sim(), "slows the simulator's link");
  pool_id const a         = make_pool("a");
  filled_block const data = use(a, pool_bytes, 13);
  evict_all(a);
  auto const unthrottle = slow_link(0.25);  // the prefetch is still running below
  ASSERT_TRUE(alloc().prefetch(a, 0));
  alloc().deallocate(data.ptr, data.bytes, 0, nullptr);  // waits if the pool is moving
  alloc().destroy_pool(a);                               // waits for the prefetch
  EXPECT_THROW((void)alloc().find_pool("a"), usage_error);
  EXPECT_FALSE(alloc().prefetch(make_pool("a"), 0)) << "the name's new pool has nothing";
  EXPECT_EQ(alloc().check(), "");
}

TEST_F(PrefetchTest, DestroyingTheAllocatorWithPrefetchesInFlightIsClean)
{
  SIM_ONLY(sim(), "slows the simulator's link, reads its census");
  cudasim_census const before = sim().census();
  pool_id const a             = make_pool("a");
  pool_id const b             = make_pool("b");
  (void)use(a, 8 * MiB, 14);  // live blocks: the allocator's end invalidates them
  (void)use(b, 8 * MiB, 15);
  evict_all(a, 8 * MiB);
  evict_all(b, 8 * MiB);
  auto const unthrottle = slow_link(0.25);  // 34 ms a pool: the second one still queued
  ASSERT_TRUE(alloc().prefetch(a, 0));
  ASSERT_TRUE(alloc().prefetch(b, 0));
  alloc_.reset();  // runs the queued prefetches, then gives everything back
  cudasim_census const after = sim().census();
  EXPECT_EQ(after.handles, before.handles);
  EXPECT_EQ(after.mappings, before.mappings);
  EXPECT_EQ(after.reservations, before.reservations);
  EXPECT_EQ(after.host_allocations, before.host_allocations);
  EXPECT_EQ(after.host_registrations, before.host_registrations);
  // Streams and events are checked by the fixture's teardown (reclaimed asynchronously).
}

TEST_F(PrefetchTest, PrefetchesAndActivationsFromSeveralThreadsKeepEveryPoolIntact)
{
  // Each thread cycles its own pool through evict, prefetch and activate; the threads
  // share the device's engine, its lock and the one prefetch thread, whose tasks may run
  // late (after the activation they were meant for, or after the next eviction).
  constexpr std::size_t threads = 3;
  constexpr int rounds          = 20;
  std::vector<pool_id> pools;
  std::vector<filled_block> data;
  for (std::size_t i = 0; i < threads; ++i) {
    pools.push_back(make_pool("p" + std::to_string(i)));
    data.push_back(use(pools.back(), 4 * MiB, 20 + i));
  }
  std::vector<std::thread> workers;
  for (std::size_t i = 0; i < threads; ++i) {
    workers.emplace_back([&, i] {
      drv().set_current_context(context());  // for the driver copies that check the data
      for (int round = 0; round < rounds; ++round) {
        (void)alloc().evict(pools[i], 0);  // last activated: never spared as prefetched
        (void)alloc().prefetch(pools[i], 0);
        activation const active(alloc(), pools[i], 0, nullptr);
        EXPECT_EQ(alloc().stats(pools[i], 0).evicted_bytes, 0U)
          << "pool " << i << " round " << round;
        expect_intact({data[i]}, "pool " + std::to_string(i) + " round " + std::to_string(round));
      }
    });
  }
  for (std::thread& worker : workers) {
    worker.join();
  }
  alloc().wait_for_prefetches();
  EXPECT_EQ(alloc().check(), "");
  for (std::size_t i = 0; i < threads; ++i) {
    expect_intact_when_active(pools[i], {data[i]}, "pool " + std::to_string(i) + " at the end");
  }
  free_all(data);
}

}  // namespace
}  // namespace swapalloc::testing
