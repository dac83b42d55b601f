// Tests of include/swapalloc/host_store.hpp's warm slabs and tiers: emptied pinned slabs
// are kept up to warm_bytes and refilled without pinning, given back by trim (idle past
// idle_release) and release_empty only; prepin pins room ahead, within the budget and the
// warm reserve, under faults, and trim keeps the reserve asked; pageable extents take no
// pinned memory and fall back to pinned room at the budget; a failed free under trim loses
// nothing; pinning runs without the store's mutex, and an allocate takes the slab another
// thread pins; several threads mixing tiers keep extents intact.
#include <swapalloc/host_store.hpp>

#include "byte_units.hpp"
#include "configured_child.hpp"
#include "driver_fixture.hpp"
#include "pin_method_fixture.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace swapalloc::testing {
namespace {

using std::chrono::hours;
using units::KiB;
using units::MiB;

/// A pinned store of `limit` bytes in `slab`-byte slabs keeping `warm` bytes warm.
[[nodiscard]] host_store_options warm_options(std::size_t limit, std::size_t slab, std::size_t warm,
                                              std::chrono::milliseconds idle)
{
  return {.limit_bytes  = limit,
          .slab_bytes   = slab,
          .pinned       = true,
          .warm_bytes   = warm,
          .idle_release = idle};
}

class HostStoreWarmTest : public PinMethodTest {
 protected:
  [[nodiscard]] unsigned long long calls(char const* entry) const
  {
    return sim().call_count(entry);
  }
};

INSTANTIATE_TEST_SUITE_P(Pin, HostStoreWarmTest, pin_methods, pin_method_name);

TEST_P(HostStoreWarmTest, EmptiedSlabsAreKeptAndRefilledWithoutPinning)
{
  SIM_ONLY(sim(), "counts pin and unpin calls");
  host_store store(drv(), pinned_by(warm_options(16 * MiB, 2 * MiB, 4 * MiB, hours(1))));
  host_extent a = store.allocate(2 * MiB);
  host_extent b = store.allocate(2 * MiB);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(store.pins(), 2U);
  auto const pins_before  = calls(pin_entry());
  auto const frees_before = calls(unpin_entry());
  store.deallocate(a);
  store.deallocate(b);
  EXPECT_EQ(calls(unpin_entry()), frees_before) << "no free inside deallocate";
  EXPECT_EQ(store.slab_bytes_held(), 4 * MiB);
  EXPECT_EQ(store.warm_bytes_held(), 4 * MiB);
  EXPECT_EQ(store.used_bytes(), 0U);

  a = store.allocate(2 * MiB);
  b = store.allocate(1 * MiB);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(calls(pin_entry()), pins_before) << "the warm slabs were refilled";
  EXPECT_EQ(store.warm_bytes_held(), 0U) << "both slabs are in use again";
  EXPECT_EQ(store.pinned_bytes_held(), 4 * MiB);
  store.deallocate(a);
  store.deallocate(b);
}

TEST_P(HostStoreWarmTest, WarmReserveIsBoundedAndTheRestIsFreedAtOnce)
{
  SIM_ONLY(sim(), "counts host allocations");
  std::size_t const before = host_allocations();
  host_store store(drv(), pinned_by(warm_options(16 * MiB, 2 * MiB, 3 * MiB, hours(1))));
  host_extent const a = store.allocate(2 * MiB);
  host_extent const b = store.allocate(2 * MiB);
  ASSERT_TRUE(a && b);
  store.deallocate(a);  // kept: 2 of 3 MiB
  store.deallocate(b);  // another 2 MiB would pass the reserve: freed at once
  EXPECT_EQ(store.warm_bytes_held(), 2 * MiB);
  EXPECT_EQ(store.slab_bytes_held(), 2 * MiB);
  EXPECT_EQ(host_allocations(), before + 1);
}

TEST_P(HostStoreWarmTest, TrimFreesOnlySlabsIdlePastTheDelay)
{
  SIM_ONLY(sim(), "counts host allocations");
  std::size_t const before = host_allocations();
  host_store store(drv(), pinned_by(warm_options(16 * MiB, 2 * MiB, 16 * MiB, hours(1))));
  host_extent const a = store.allocate(2 * MiB);
  host_extent const b = store.allocate(2 * MiB);
  ASSERT_TRUE(a && b);
  store.deallocate(a);
  auto const now = host_store::clock::now();
  EXPECT_EQ(store.trim(now), 0U) << "emptied just now";
  EXPECT_EQ(store.trim(now + std::chrono::minutes(59)), 0U) << "not idle for an hour yet";
  EXPECT_EQ(store.trim(now + hours(2)), 2 * MiB) << "idle past the delay";
  EXPECT_EQ(store.warm_bytes_held(), 0U);
  EXPECT_EQ(host_allocations(), before + 1) << "the slab in use stays";
  EXPECT_EQ(store.trim(now + hours(3)), 0U) << "a slab in use is never trimmed";
  store.deallocate(b);
  EXPECT_EQ(store.release_empty(), 2 * MiB);
  EXPECT_EQ(host_allocations(), before);
  EXPECT_EQ(store.slab_bytes_held(), 0U);
}

TEST_P(HostStoreWarmTest, PrepinPinsWarmSlabsUntilTheRoomAskedIsFree)
{
  SIM_ONLY(sim(), "counts pin calls");
  host_store store(drv(), pinned_by(warm_options(16 * MiB, 2 * MiB, 16 * MiB, hours(1))));
  host_extent const a = store.allocate(1 * MiB);  // slab 0, with 1 MiB of room left
  ASSERT_TRUE(a);
  EXPECT_EQ(store.prepin(5 * MiB), 4 * MiB) << "two more slabs: 1 + 4 MiB of room";
  EXPECT_EQ(store.pins(), 3U);
  EXPECT_EQ(store.warm_bytes_held(), 4 * MiB);
  EXPECT_EQ(store.used_bytes(), 1 * MiB) << "room pinned ahead is not handed out";
  auto const pins_before = calls(pin_entry());
  EXPECT_EQ(store.prepin(5 * MiB), 0U) << "the room is free already";
  host_extent const b = store.allocate(2 * MiB);
  host_extent const c = store.allocate(2 * MiB);
  ASSERT_TRUE(b && c);
  EXPECT_EQ(calls(pin_entry()), pins_before) << "the room was pinned ahead";
  EXPECT_EQ(store.warm_bytes_held(), 0U);
  store.deallocate(a);
  store.deallocate(b);
  store.deallocate(c);
}

TEST_P(HostStoreWarmTest, PrepinStopsAtTheBudgetAndTheWarmReserve)
{
  SIM_ONLY(sim(), "counts pin calls");
  host_store budget(drv(), pinned_by(warm_options(6 * MiB, 2 * MiB, 16 * MiB, hours(1))));
  EXPECT_EQ(budget.prepin(100 * MiB), 6 * MiB) << "three slabs fill the 6 MiB budget";
  EXPECT_EQ(budget.slab_bytes_held(), 6 * MiB);
  host_store reserve(drv(), pinned_by(warm_options(16 * MiB, 2 * MiB, 3 * MiB, hours(1))));
  EXPECT_EQ(reserve.prepin(100 * MiB), 2 * MiB) << "a second slab would pass the warm 3 MiB";
  auto const pins_before = calls(pin_entry());
  host_store pageable(drv(),
                      pinned_by({.limit_bytes = 16 * MiB, .slab_bytes = 2 * MiB, .pinned = false}));
  EXPECT_EQ(pageable.prepin(4 * MiB), 0U) << "a pageable store pins nothing";
  EXPECT_EQ(calls(pin_entry()), pins_before);
}

TEST_P(HostStoreWarmTest, TrimKeepsTheReserveAskedAndGivesBackTheRest)
{
  SIM_ONLY(sim(), "counts host allocations");
  std::size_t const before = host_allocations();
  host_store store(drv(), pinned_by(warm_options(16 * MiB, 2 * MiB, 16 * MiB, hours(1))));
  ASSERT_EQ(store.prepin(6 * MiB), 6 * MiB);
  auto const later = host_store::clock::now() + hours(2);
  EXPECT_EQ(store.trim(later, 4 * MiB), 2 * MiB) << "only the slab past a 4 MiB reserve";
  EXPECT_EQ(store.trim(later, 4 * MiB), 0U);
  EXPECT_EQ(store.warm_bytes_held(), 4 * MiB);
  EXPECT_EQ(store.trim(later), 4 * MiB) << "no reserve asked: every idle slab goes";
  EXPECT_EQ(host_allocations(), before);
}

TEST_P(HostStoreWarmTest, ReleaseEmptyHoldsPrepinOffForTheIdleDelay)
{
  SIM_ONLY(sim(), "counts host allocations");
  std::size_t const before = host_allocations();
  host_store held(drv(), pinned_by(warm_options(16 * MiB, 2 * MiB, 16 * MiB, hours(1))));
  ASSERT_EQ(held.prepin(4 * MiB), 4 * MiB);
  EXPECT_EQ(held.release_empty(), 4 * MiB) << "empty_cache gives the reserve back";
  EXPECT_EQ(held.prepin(4 * MiB), 0U) << "and it is not pinned again within the hour";
  EXPECT_EQ(host_allocations(), before);
  host_store at_once(
    drv(), pinned_by(warm_options(16 * MiB, 2 * MiB, 16 * MiB, std::chrono::milliseconds(0))));
  ASSERT_EQ(at_once.prepin(2 * MiB), 2 * MiB);
  EXPECT_EQ(at_once.release_empty(), 2 * MiB);
  EXPECT_EQ(at_once.prepin(2 * MiB), 2 * MiB) << "with no idle delay, at once";
}

TEST_P(HostStoreWarmTest, PrepinUnderFaultsKeepsWhatItPinnedAndStaysUsable)
{
  SIM_ONLY(sim(), "injects pin failures");
  host_store store(drv(), pinned_by(warm_options(16 * MiB, 2 * MiB, 16 * MiB, hours(1))));
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call(pin_entry(), 2, CUDA_ERROR_OUT_OF_MEMORY));
  EXPECT_EQ(store.prepin(6 * MiB), 2 * MiB) << "out of memory at the second pin ends it quietly";
  EXPECT_EQ(store.slab_bytes_held(), 2 * MiB);
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call(pin_entry(), 1, CUDA_ERROR_INVALID_VALUE));
  try {
    (void)store.prepin(6 * MiB);
    ADD_FAILURE() << "an injected CUDA_ERROR_INVALID_VALUE was not reported";
  } catch (cuda_error const& error) {
    EXPECT_EQ(error.code(), CUDA_ERROR_INVALID_VALUE);
    EXPECT_EQ(error.call(), pin_entry());
  }
  EXPECT_EQ(store.slab_bytes_held(), 2 * MiB) << "the slab pinned before stays; no half slab";
  EXPECT_EQ(store.warm_bytes_held(), 2 * MiB);
  EXPECT_EQ(store.prepin(6 * MiB), 4 * MiB) << "usable after both failures";
  host_extent const e = store.allocate(2 * MiB);
  ASSERT_TRUE(e);
  store.deallocate(e);
  EXPECT_EQ(store.release_empty(), 6 * MiB);
  EXPECT_EQ(store.slab_bytes_held(), 0U);
}

TEST_P(HostStoreWarmTest, PageableExtentsTakeNoPinnedMemoryAndGoBackAtOnce)
{
  SIM_ONLY(sim(), "counts pin calls");
  host_store store(drv(), pinned_by(warm_options(16 * MiB, 2 * MiB, 16 * MiB, hours(1))));
  auto const pins_before = calls(pin_entry());
  host_extent const p    = store.allocate(300 * KiB, host_tier::pageable);
  host_extent const q    = store.allocate(300 * KiB, host_tier::pageable);
  ASSERT_TRUE(p && q);
  EXPECT_EQ(p.slab, q.slab) << "one pageable slab";
  std::memset(p.data, 7, p.bytes);  // host memory: writable
  EXPECT_EQ(calls(pin_entry()), pins_before);
  EXPECT_EQ(store.pinned_bytes_held(), 0U);
  EXPECT_EQ(store.slab_bytes_held(), 2 * MiB);
  host_extent const r = store.allocate(300 * KiB);  // pinned: a slab of its own tier
  ASSERT_TRUE(r);
  EXPECT_NE(r.slab, p.slab);
  EXPECT_EQ(store.pinned_bytes_held(), 2 * MiB);
  store.deallocate(p);
  store.deallocate(q);
  EXPECT_EQ(store.slab_bytes_held(), 2 * MiB) << "the emptied pageable slab went at once";
  store.deallocate(r);
  EXPECT_EQ(store.warm_bytes_held(), 2 * MiB) << "the pinned one is kept warm";
}

TEST_P(HostStoreWarmTest, PageableFallsBackToPinnedRoomAtTheBudget)
{
  host_store store(drv(), pinned_by(warm_options(4 * MiB, 2 * MiB, 4 * MiB, hours(1))));
  host_extent const a = store.allocate(2 * MiB);
  host_extent const b = store.allocate(2 * MiB);
  ASSERT_TRUE(a && b);
  store.deallocate(b);  // 2 MiB warm; the budget (4 MiB) is all held
  host_extent const p = store.allocate(1 * MiB, host_tier::pageable);
  ASSERT_TRUE(p) << "no budget for a pageable slab: placed in the warm pinned slab";
  EXPECT_EQ(store.slab_bytes_held(), 4 * MiB);
  EXPECT_EQ(store.pinned_bytes_held(), 4 * MiB);
  EXPECT_EQ(store.refusals(), 0U);
  host_extent const full = store.allocate(2 * MiB, host_tier::pageable);
  EXPECT_FALSE(full) << "no room anywhere: refused";
  EXPECT_EQ(store.refusals(), 1U);
  store.deallocate(p);
  store.deallocate(a);
}

TEST_P(HostStoreWarmTest, AFailedFreeUnderTrimLosesNothingAndIsRetried)
{
  SIM_ONLY(sim(), "injects an unpin failure");
  std::size_t const before = host_allocations();
  host_store store(
    drv(), pinned_by(warm_options(16 * MiB, 2 * MiB, 16 * MiB, std::chrono::milliseconds(0))));
  host_extent const a = store.allocate(2 * MiB);
  host_extent const b = store.allocate(64 * KiB);
  ASSERT_TRUE(a && b);
  std::memset(b.data, 9, b.bytes);
  store.deallocate(a);
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call(unpin_entry(), 1, CUDA_ERROR_INVALID_VALUE));
  EXPECT_EQ(store.trim(), 0U) << "the free failed: nothing counted as given back";
  EXPECT_EQ(store.slab_bytes_held(), 4 * MiB) << "still held until its free succeeds";
  EXPECT_EQ(store.warm_bytes_held(), 0U) << "no longer warm: it is not handed out again";
  EXPECT_EQ(host_allocations(), before + 2);
  EXPECT_EQ(static_cast<int>(b.data[b.bytes - 1]), 9) << "the other slab's extent is intact";
  EXPECT_EQ(store.trim(), 0U) << "retried first, then nothing left to trim";
  EXPECT_EQ(store.slab_bytes_held(), 2 * MiB);
  EXPECT_EQ(host_allocations(), before + 1);
  store.deallocate(b);
}

TEST_P(HostStoreWarmTest, ThreadsMixingTiersKeepExtentsIntact)
{
  host_store store(
    drv(), pinned_by(warm_options(24 * MiB, 1 * MiB, 4 * MiB, std::chrono::milliseconds(0))));
  constexpr int threads = 4;
  std::vector<std::string> failures(threads);
  std::vector<std::thread> workers;
  workers.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t) * 104729U + 3U);
      std::vector<std::pair<host_extent, std::byte>> mine;
      for (int op = 0; op < 1500; ++op) {
        if (op % 200 == 199) { (void)store.trim(); }  // frees warm slabs meanwhile
        if (mine.empty() || rng() % 100 < 55) {
          host_tier const tier = rng() % 2 == 0 ? host_tier::pinned : host_tier::pageable;
          host_extent const e  = store.allocate(1 + rng() % (96 * KiB), tier);
          if (!e) { continue; }
          auto const value = static_cast<std::byte>(1 + (op * threads + t) % 250);
          std::memset(e.data, static_cast<int>(value), e.bytes);
          mine.emplace_back(e, value);
          continue;
        }
        std::size_t const index = rng() % mine.size();
        auto const [e, value]   = mine[index];
        for (std::size_t i = 0; i < e.bytes && failures[t].empty(); ++i) {
          if (e.data[i] != value) { failures[t] = "an extent was overwritten"; }
        }
        mine[index] = mine.back();
        mine.pop_back();
        store.deallocate(e);
      }
      for (auto const& entry : mine) {
        store.deallocate(entry.first);
      }
    });
  }
  for (std::thread& w : workers) {
    w.join();
  }
  for (std::string const& f : failures) {
    EXPECT_EQ(f, "");
  }
  EXPECT_EQ(store.used_bytes(), 0U);
  EXPECT_LE(store.slab_bytes_held(), 4 * MiB) << "only warm slabs are left";
  (void)store.release_empty();
  EXPECT_EQ(store.slab_bytes_held(), 0U);
}

// Not a DriverTest: the child must configure the simulator before anything calls cuInit.
class HostStorePinningTest : public ::testing::TestWithParam<pin_method> {
 protected:
  void SetUp() override
  {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    if (!simulator_library_present()) {
      GTEST_SKIP() << "simulator only: a cost profile makes pinning slow";
    }
  }
  /// A profile line charging `costs` to this method's pin (or, `unpin`, its free).
  [[nodiscard]] std::string profile_line(char const* costs, bool unpin = false) const
  {
    return std::string(unpin ? unpin_entry_of(GetParam()) : pin_entry_of(GetParam())) + " " +
           costs + "\n";
  }
};

INSTANTIATE_TEST_SUITE_P(Pin, HostStorePinningTest, pin_methods, pin_method_name);

// Runs `body` in a child whose simulator charges the costs of `profile` (a profile file's
// text) at time scale 1, and expects the child to exit cleanly.
template <class Body>
void expect_child_with_profile(std::string const& profile, Body const& body)
{
  profile_file const file(profile.c_str());
  auto const child = [&] {
    configured_child({{"SWAPALLOC_SIM_PROFILE", file.path()}, {"SWAPALLOC_SIM_TIME_SCALE", "1"}},
                     body);
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
}

// Milliseconds that 100 allocate/deallocate pairs of 4 KiB take in `store`'s existing slab.
double hundred_small_pairs_ms(host_store& store)
{
  using clock_type = std::chrono::steady_clock;
  auto const start = clock_type::now();
  for (int i = 0; i < 100; ++i) {
    host_extent const e = store.allocate(4 * KiB);
    store.deallocate(e);
  }
  return std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
}

TEST_P(HostStorePinningTest, PinningRunsWithoutTheStoresMutex)
{
  // Pinning made slow (64 MiB at 2 ms/MiB: 128 ms, and no driver lock): while one thread
  // pins a new slab, another allocates and frees in an existing slab at once.
  expect_child_with_profile(
    profile_line("per_mib_us=2000"), [method = GetParam()](driver const& drv, child_checks& check) {
      host_store store(drv, {.limit_bytes = 256 * MiB, .slab_bytes = 64 * MiB, .pin = method});
      host_extent const first = store.allocate(1 * MiB);  // slab 0 (128 ms)
      std::thread pinner([&] {
        host_extent const big = store.allocate(64 * MiB);  // a new slab: 128 ms
        store.deallocate(big);
      });
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      double const others_ms = hundred_small_pairs_ms(store);
      pinner.join();
      store.deallocate(first);
      check(others_ms < 60.0, "allocate/deallocate went on while another thread pinned");
      check(store.pins() == 2, "two slabs pinned");
      check(store.pin_seconds() >= 0.2, "pin_seconds counts both pins (256 ms)");
      std::fprintf(stderr, "others %.1f ms, pins %.3f s\n", others_ms, store.pin_seconds());
    });
}

TEST_P(HostStorePinningTest, AnAllocateTakesTheSlabBeingPinnedRatherThanPinAnother)
{
  // Pinning made slow (64 MiB at 2 ms/MiB: 128 ms). While prepin pins a slab, an
  // allocate that finds no room waits for that slab instead of pinning a second one.
  expect_child_with_profile(
    profile_line("per_mib_us=2000"), [method = GetParam()](driver const& drv, child_checks& check) {
      host_store store(drv, {.limit_bytes  = 256 * MiB,
                             .slab_bytes   = 64 * MiB,
                             .warm_bytes   = 256 * MiB,
                             .idle_release = std::chrono::hours(1),
                             .pin          = method});
      std::size_t pinned = 0;
      std::thread pinner([&] { pinned = store.prepin(64 * MiB); });
      auto const deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (store.pinned_bytes_held() == 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::yield();  // until the pin has its slot (its bytes count as held)
      }
      host_extent const e = store.allocate(1 * MiB);
      pinner.join();
      check(static_cast<bool>(e), "the allocate was served");
      check(pinned == 64 * MiB, "prepin pinned one slab");
      check(store.pins() == 1, "one pin: the allocate took room in the slab being pinned");
      check(store.pinned_bytes_held() == 64 * MiB, "one slab held");
      store.deallocate(e);
    });
}

TEST_P(HostStorePinningTest, TrimFreesWithoutTheStoresMutex)
{
  // The free made slow (150 ms; it synchronizes the device on a real GPU): while one
  // thread gives a warm slab back, another allocates and frees in a live slab at once, and
  // the slab being freed is neither reused nor counted twice.
  expect_child_with_profile(
    profile_line("fixed_us=150000", true),
    [method = GetParam()](driver const& drv, child_checks& check) {
      host_store store(
        drv,
        {.limit_bytes = 256 * MiB, .slab_bytes = 64 * MiB, .warm_bytes = 64 * MiB, .pin = method});
      host_extent const live = store.allocate(1 * MiB);  // slab 0 stays live
      store.deallocate(store.allocate(64 * MiB));        // slab 1: emptied, kept warm
      check(store.warm_bytes_held() == 64 * MiB, "the emptied slab is warm");
      std::size_t released = 0;
      std::thread trimmer([&] { released = store.release_empty(); });
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      double const others_ms = hundred_small_pairs_ms(store);
      check(store.slab_bytes_held() == 128 * MiB, "the slab being freed is still held");
      trimmer.join();
      check(others_ms < 60.0, "allocate/deallocate went on while another thread freed");
      check(released == 64 * MiB, "release_empty reports the warm slab's bytes");
      check(store.slab_bytes_held() == 64 * MiB && store.warm_bytes_held() == 0,
            "only the live slab is held afterwards");
      check(store.pins() == 2, "the small pairs fitted the live slab: nothing pinned");
      store.deallocate(live);
      std::fprintf(stderr, "others %.1f ms\n", others_ms);
    });
}

}  // namespace
}  // namespace swapalloc::testing
