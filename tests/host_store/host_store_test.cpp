// Tests of include/swapalloc/host_store.hpp: extents are aligned and never overlap, the
// budget bounds the slabs held and refuses past it, empty slabs go back to the driver at
// once, shrink returns tails, driver failures leave the store usable, and the store is
// safe from several threads. Host extents are host memory: the tests write and read them.
#include <swapalloc/host_store.hpp>

#include "byte_units.hpp"
#include "driver_fixture.hpp"
#include "pin_method_fixture.hpp"
#include "scoped_env.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace swapalloc::testing {
namespace {

using units::KiB;
using units::MiB;

[[nodiscard]] std::size_t rounded(std::size_t bytes)
{
  return (bytes + host_store::alignment - 1) / host_store::alignment * host_store::alignment;
}

/// Fills an extent with a byte derived from `id`, so that a neighbour's write shows.
void fill(host_extent e, std::uint32_t id)
{
  std::memset(e.data, static_cast<int>(id % 251 + 1), e.bytes);
}

/// True when the extent still holds what fill(e, id) wrote.
[[nodiscard]] bool holds(host_extent e, std::uint32_t id)
{
  auto const value = static_cast<std::byte>(id % 251 + 1);
  return std::all_of(e.data, e.data + e.bytes, [&](std::byte b) { return b == value; });
}

class HostStoreTest : public PinMethodTest {
 protected:
  [[nodiscard]] unsigned long long pin_calls() const { return sim().call_count(pin_entry()); }
};

INSTANTIATE_TEST_SUITE_P(Pin, HostStoreTest, pin_methods, pin_method_name);

using HostStoreDeathTest = DriverDeathTest;

// ---- Layout ------------------------------------------------------------------------------

TEST_P(HostStoreTest, RandomAllocFreeKeepsExtentsAlignedDisjointAndIntact)
{
  host_store_options options;
  options.limit_bytes = 48 * MiB;
  options.slab_bytes  = 4 * MiB;
  host_store store(drv(), pinned_by(options));

  struct live {
    host_extent extent;
    std::uint32_t id;
  };
  std::vector<live> extents;
  std::map<std::uintptr_t, std::uintptr_t> ranges;  // shadow model: start -> end, live only
  std::mt19937_64 rng(20240611);
  std::size_t expected_used = 0;
  std::size_t refused       = 0;
  for (std::uint32_t op = 0; op < 10000; ++op) {
    bool const grow = extents.empty() || rng() % 100 < 55;
    if (grow) {
      std::size_t const bytes =
        rng() % 100 == 0 ? 1 + rng() % (6 * MiB) : 1 + rng() % (rng() % 2 == 0 ? 700 : 64 * KiB);
      host_extent const e = store.allocate(bytes);
      if (!e) {
        ++refused;
        continue;
      }
      ASSERT_EQ(e.bytes, bytes);
      auto const start = reinterpret_cast<std::uintptr_t>(e.data);
      ASSERT_EQ(start % host_store::alignment, 0U) << "op " << op;
      auto const end = start + rounded(bytes);
      auto next      = ranges.lower_bound(start);
      ASSERT_TRUE(next == ranges.end() || next->first >= end) << "overlaps the next extent";
      ASSERT_TRUE(next == ranges.begin() || std::prev(next)->second <= start)
        << "overlaps the previous extent";
      ranges.emplace(start, end);
      fill(e, op);
      extents.push_back({e, op});
      expected_used += rounded(bytes);
    } else {
      std::size_t const index = rng() % extents.size();
      live const victim       = extents[index];
      ASSERT_TRUE(holds(victim.extent, victim.id))
        << "extent of op " << victim.id << " was overwritten";
      ranges.erase(reinterpret_cast<std::uintptr_t>(victim.extent.data));
      extents[index] = extents.back();
      extents.pop_back();
      store.deallocate(victim.extent);
      expected_used -= rounded(victim.extent.bytes);
    }
    ASSERT_EQ(store.used_bytes(), expected_used);
    ASSERT_LE(store.used_bytes(), store.slab_bytes_held());
    ASSERT_LE(store.slab_bytes_held(), store.limit_bytes());
  }
  EXPECT_EQ(store.refusals(), refused);
  EXPECT_GT(store.peak_used_bytes(), 16 * MiB) << "the run should have filled several slabs";
  for (live const& l : extents) {
    EXPECT_TRUE(holds(l.extent, l.id)) << "extent of op " << l.id << " was overwritten";
    store.deallocate(l.extent);
  }
  EXPECT_EQ(store.used_bytes(), 0U);
  EXPECT_EQ(store.slab_bytes_held(), 0U) << "every slab is freed once empty";
}

TEST_P(HostStoreTest, OversizeRequestGetsASlabOfItsOwnRoundedTo2MiB)
{
  host_store_options options;
  options.limit_bytes = 64 * MiB;
  options.slab_bytes  = 1 * MiB;
  host_store store(drv(), pinned_by(options));
  host_extent const small = store.allocate(1000);
  ASSERT_TRUE(small);
  EXPECT_EQ(store.slab_bytes_held(), 1 * MiB);
  host_extent const big = store.allocate(3 * MiB + 1);
  ASSERT_TRUE(big);
  EXPECT_NE(big.slab, small.slab);
  EXPECT_EQ(store.slab_bytes_held(), 1 * MiB + 4 * MiB);
  EXPECT_EQ(store.used_bytes(), 1024 + rounded(3 * MiB + 1));
  store.deallocate(big);
  EXPECT_EQ(store.slab_bytes_held(), 1 * MiB);
  store.deallocate(small);
  EXPECT_EQ(store.slab_bytes_held(), 0U);
}

// ---- Budget ------------------------------------------------------------------------------

TEST_P(HostStoreTest, BudgetRefusesWithAnEmptyExtentAndCountsIt)
{
  host_store_options options;
  options.limit_bytes = 4 * MiB;
  options.slab_bytes  = 1 * MiB;
  host_store store(drv(), pinned_by(options));
  EXPECT_EQ(store.limit_bytes(), 4 * MiB);
  std::vector<host_extent> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(store.allocate(1 * MiB));
    ASSERT_TRUE(held.back()) << "allocation " << i << " fits the budget";
  }
  EXPECT_EQ(store.available_bytes(), 0U);
  EXPECT_EQ(store.refusals(), 0U);
  host_extent const refused = store.allocate(1);
  EXPECT_FALSE(refused);
  EXPECT_EQ(refused.data, nullptr);
  EXPECT_EQ(store.refusals(), 1U);
  EXPECT_FALSE(store.allocate(5 * MiB)) << "larger than the whole budget";
  EXPECT_EQ(store.refusals(), 2U);
  EXPECT_EQ(store.slab_bytes_held(), 4 * MiB);

  store.deallocate(held.back());
  held.pop_back();
  host_extent const again = store.allocate(1 * MiB);
  EXPECT_TRUE(again) << "freed room is usable again";
  held.push_back(again);
  for (host_extent const& e : held) {
    store.deallocate(e);
  }
  EXPECT_EQ(store.peak_used_bytes(), 4 * MiB);
}

TEST_P(HostStoreTest, BudgetBoundsHeldSlabsNotJustHandedOutBytes)
{
  // 1.5 MiB of budget and 1 MiB slabs: the second slab is trimmed to the 0.5 MiB left,
  // and then nothing more is pinned, although the handed-out bytes are below the limit.
  host_store_options options;
  options.limit_bytes = 3 * MiB / 2;
  options.slab_bytes  = 1 * MiB;
  host_store store(drv(), pinned_by(options));
  host_extent const a = store.allocate(1 * MiB - 64 * KiB);  // slab 0 keeps a 64 KiB tail
  host_extent const b = store.allocate(128 * KiB);           // no room in slab 0: slab 1
  ASSERT_TRUE(a);
  ASSERT_TRUE(b);
  EXPECT_NE(a.slab, b.slab);
  EXPECT_EQ(store.slab_bytes_held(), 3 * MiB / 2) << "slab 1 trimmed to what the budget left";
  EXPECT_EQ(store.available_bytes(), 448 * KiB);
  host_extent const c = store.allocate(400 * KiB);
  EXPECT_FALSE(c) << "384 KiB left in slab 1, 64 KiB in slab 0, no budget for a new slab";
  EXPECT_EQ(store.refusals(), 1U) << "refused for the held slabs, not the handed-out bytes";
  EXPECT_EQ(store.slab_bytes_held(), 3 * MiB / 2);
  host_extent const d = store.allocate(64 * KiB);
  EXPECT_TRUE(d) << "slab 0's tail still serves a small request";
  EXPECT_EQ(d.slab, a.slab);
  store.deallocate(a);
  store.deallocate(b);
  store.deallocate(d);
  EXPECT_EQ(store.slab_bytes_held(), 0U);
}

TEST_P(HostStoreTest, LimitIsTheOptionOrHalfOfRam)
{
  host_store_options options;
  options.pinned = false;
  {
    scoped_env env(host_limit_variable, "5G");
    EXPECT_EQ(host_store(drv(), pinned_by(options)).limit_bytes(), physical_memory_bytes() / 2)
      << "the store reads no environment: the allocator passes SWAPALLOC_HOST_LIMIT on";
  }
  options.limit_bytes = 7 * MiB;
  EXPECT_EQ(host_store(drv(), pinned_by(options)).limit_bytes(), 7 * MiB);
}

TEST_P(HostStoreTest, ConstructorRejectsAZeroSlabAndPinnedWithoutContext)
{
  host_store_options options;
  options.limit_bytes = 8 * MiB;
  options.slab_bytes  = 0;
  EXPECT_THROW({ host_store store(drv(), pinned_by(options)); }, std::invalid_argument);
  options.slab_bytes = 1 * MiB;
  bool threw         = false;
  std::thread([&] {
    try {
      host_store store(drv(), pinned_by(options));  // this thread has no current context
    } catch (std::logic_error const& error) {
      threw = std::string(error.what()).find("context") != std::string::npos;
    }
  }).join();
  EXPECT_TRUE(threw) << "pinned mode needs a current context at construction";
}

TEST_P(HostStoreTest, AllocateZeroBytesIsAnError)
{
  host_store store(drv(),
                   pinned_by({.limit_bytes = 8 * MiB, .slab_bytes = 1 * MiB, .pinned = true}));
  EXPECT_THROW((void)store.allocate(0), std::invalid_argument);
  EXPECT_EQ(store.slab_bytes_held(), 0U);
}

TEST_P(HostStoreTest, PinnedSlabsAreWholeHostPagesAndTheBudgetCountsThem)
{
  std::size_t const page   = detail::host_page_bytes();
  std::size_t const before = sim().available() ? sim().pinned_host_bytes() : 0;
  host_store store(drv(), pinned_by({.limit_bytes = 3 * MiB + 1000, .slab_bytes = 1 * MiB + 256}));
  host_extent const a = store.allocate(1 * MiB);
  ASSERT_TRUE(a);
  EXPECT_EQ(store.slab_bytes_held(), 1 * MiB + page) << "the slab size rounded up to a page";
  if (sim().available()) { EXPECT_EQ(sim().pinned_host_bytes(), before + 1 * MiB + page); }
  host_extent const b = store.allocate(1 * MiB);
  host_extent const c = store.allocate(1 * MiB - 2 * page);  // the room left, to a page
  ASSERT_TRUE(b && c);
  std::size_t const last = 3 * MiB + 1000 - 2 * (1 * MiB + page);
  EXPECT_EQ(store.slab_bytes_held(), 2 * (1 * MiB + page) + last / page * page)
    << "a slab trimmed to the budget is rounded down to whole pages";
  if (sim().available()) { EXPECT_EQ(sim().pinned_host_bytes(), before + store.slab_bytes_held()); }
  EXPECT_LE(store.slab_bytes_held(), store.limit_bytes());
  store.deallocate(a);
  store.deallocate(b);
  store.deallocate(c);
}

// ---- Slabs go back -------------------------------------------------------------------

TEST_P(HostStoreTest, EmptySlabsAreFreedAtOnce)
{
  std::size_t const before = sim().available() ? host_allocations() : 0;
  std::size_t const bytes  = sim().available() ? sim().pinned_host_bytes() : 0;
  host_store store(drv(),
                   pinned_by({.limit_bytes = 16 * MiB, .slab_bytes = 2 * MiB, .pinned = true}));
  EXPECT_TRUE(store.pinned());
  host_extent const a1 = store.allocate(1 * MiB);
  host_extent const a2 = store.allocate(1 * MiB);
  host_extent const b1 = store.allocate(1 * MiB);  // slab 0 is full: slab 1
  ASSERT_TRUE(a1 && a2 && b1);
  EXPECT_EQ(a1.slab, a2.slab);
  EXPECT_NE(a1.slab, b1.slab);
  EXPECT_EQ(store.slab_bytes_held(), 4 * MiB);
  if (sim().available()) {
    EXPECT_EQ(host_allocations(), before + 2);
    EXPECT_EQ(sim().pinned_host_bytes(), bytes + 4 * MiB);
  }
  store.deallocate(a1);
  EXPECT_EQ(store.slab_bytes_held(), 4 * MiB) << "slab 0 still holds a2";
  store.deallocate(a2);
  EXPECT_EQ(store.slab_bytes_held(), 2 * MiB) << "slab 0 is empty: freed";
  if (sim().available()) { EXPECT_EQ(host_allocations(), before + 1); }
  store.deallocate(b1);
  EXPECT_EQ(store.slab_bytes_held(), 0U);
  if (sim().available()) {
    EXPECT_EQ(host_allocations(), before) << "the pinned memory went back to the driver";
    EXPECT_EQ(sim().pinned_host_bytes(), bytes);
  }
}

TEST_P(HostStoreTest, DestructionFreesEverySlab)
{
  SIM_ONLY(sim(), "counts host allocations");
  std::size_t const before = host_allocations();
  {
    host_store store(drv(),
                     pinned_by({.limit_bytes = 16 * MiB, .slab_bytes = 1 * MiB, .pinned = true}));
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(store.allocate(700 * KiB));
    }
    EXPECT_EQ(host_allocations(), before + 3);
  }
  EXPECT_EQ(host_allocations(), before);
}

TEST_P(HostStoreTest, DeallocateOnAThreadWithoutContextStillFreesTheSlab)
{
  SIM_ONLY(sim(), "counts host allocations");
  std::size_t const before = host_allocations();
  host_store store(drv(),
                   pinned_by({.limit_bytes = 16 * MiB, .slab_bytes = 1 * MiB, .pinned = true}));
  host_extent const e = store.allocate(4 * KiB);
  ASSERT_TRUE(e);
  CUcontext after = reinterpret_cast<CUcontext>(1);
  std::thread([&] {
    store.deallocate(e);  // a compression worker: no context of its own
    (void)table().cuCtxGetCurrent(&after);
  }).join();
  EXPECT_EQ(host_allocations(), before) << "the slab was given back in the store's context";
  EXPECT_EQ(after, nullptr) << "the worker's (absent) context is put back";
  EXPECT_EQ(store.slab_bytes_held(), 0U);
}

// ---- Shrink --------------------------------------------------------------------------

TEST_P(HostStoreTest, ShrinkReturnsTheTail)
{
  host_store store(drv(),
                   pinned_by({.limit_bytes = 16 * MiB, .slab_bytes = 1 * MiB, .pinned = true}));
  host_extent const whole = store.allocate(1 * MiB);
  ASSERT_TRUE(whole);
  std::memset(whole.data, 0x5A, 1000);
  unsigned long long const calls = sim().available() ? pin_calls() : 0;
  host_extent const kept         = store.shrink(whole, 1000);
  EXPECT_EQ(kept.data, whole.data);
  EXPECT_EQ(kept.bytes, 1000U);
  EXPECT_EQ(kept.slab, whole.slab);
  EXPECT_EQ(store.used_bytes(), 1024U);
  EXPECT_EQ(kept.data[999], std::byte{0x5A}) << "shrinking keeps the contents";

  host_extent const tail = store.allocate(1 * MiB - 1024);
  ASSERT_TRUE(tail);
  EXPECT_EQ(tail.data, whole.data + 1024) << "the tail went back to the same slab";
  EXPECT_EQ(store.slab_bytes_held(), 1 * MiB);
  if (sim().available()) { EXPECT_EQ(pin_calls(), calls) << "no new slab was needed"; }

  // A tail freed next to a free range coalesces with it: shrink `tail` to 256 bytes,
  // free it, and the whole tail region is one range again.
  host_extent const small = store.shrink(tail, 256);
  EXPECT_EQ(store.used_bytes(), 1024U + 256U);
  store.deallocate(small);
  host_extent const again = store.allocate(1 * MiB - 1024);
  EXPECT_EQ(again.data, whole.data + 1024) << "the freed ranges were coalesced";
  store.deallocate(again);

  host_extent const same = store.shrink(kept, 1000);
  EXPECT_EQ(same.bytes, 1000U);
  EXPECT_FALSE(store.shrink(same, 0)) << "shrinking to 0 frees the extent";
  EXPECT_EQ(store.used_bytes(), 0U);
  EXPECT_EQ(store.slab_bytes_held(), 0U);
  EXPECT_FALSE(store.shrink(host_extent{}, 10)) << "an empty extent stays empty";
}

// ---- Pageable mode -------------------------------------------------------------------

TEST_P(HostStoreTest, PageableModeMakesNoDriverCall)
{
  SIM_ONLY(sim(), "counts driver calls");
  unsigned long long const allocs = pin_calls();
  unsigned long long const frees  = sim().call_count(unpin_entry());
  std::size_t const before        = host_allocations();
  {
    host_store store(drv(),
                     pinned_by({.limit_bytes = 8 * MiB, .slab_bytes = 1 * MiB, .pinned = false}));
    EXPECT_FALSE(store.pinned());
    std::vector<host_extent> extents;
    for (std::uint32_t i = 0; i < 20; ++i) {
      extents.push_back(store.allocate(100 * KiB + i));
      ASSERT_TRUE(extents.back());
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(extents.back().data) % host_store::alignment, 0U);
      fill(extents.back(), i);
    }
    EXPECT_EQ(host_allocations(), before);
    for (std::uint32_t i = 0; i < 20; ++i) {
      EXPECT_TRUE(holds(extents[i], i));
      store.deallocate(extents[i]);
    }
    EXPECT_EQ(store.slab_bytes_held(), 0U);
    ASSERT_TRUE(store.allocate(300 * KiB)) << "left for the destructor";
  }
  EXPECT_EQ(pin_calls(), allocs);
  EXPECT_EQ(sim().call_count(unpin_entry()), frees);
}

// ---- Driver failures -----------------------------------------------------------------

TEST_P(HostStoreTest, OutOfMemoryFromTheDriverIsARefusal)
{
  SIM_ONLY(sim(), "injects a pin failure");
  host_store store(drv(),
                   pinned_by({.limit_bytes = 16 * MiB, .slab_bytes = 1 * MiB, .pinned = true}));
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call(pin_entry(), 1, CUDA_ERROR_OUT_OF_MEMORY));
  host_extent refused{};
  EXPECT_NO_THROW(refused = store.allocate(4 * KiB));
  EXPECT_FALSE(refused);
  EXPECT_EQ(store.refusals(), 1U);
  EXPECT_EQ(store.used_bytes(), 0U);
  EXPECT_EQ(store.slab_bytes_held(), 0U);
  host_extent const e = store.allocate(4 * KiB);
  EXPECT_TRUE(e) << "the store is usable after the refusal";
  EXPECT_EQ(store.slab_bytes_held(), 1 * MiB);
  store.deallocate(e);
}

TEST_P(HostStoreTest, AnotherDriverErrorThrowsAndLeavesTheStoreUsable)
{
  SIM_ONLY(sim(), "injects a pin failure");
  host_store store(drv(),
                   pinned_by({.limit_bytes = 16 * MiB, .slab_bytes = 1 * MiB, .pinned = true}));
  host_extent const first = store.allocate(1 * MiB);  // fills slab 0
  ASSERT_TRUE(first);
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call(pin_entry(), 1, CUDA_ERROR_INVALID_VALUE));
  try {
    (void)store.allocate(4 * KiB);
    ADD_FAILURE() << "an injected CUDA_ERROR_INVALID_VALUE was not reported";
  } catch (cuda_error const& error) {
    EXPECT_EQ(error.code(), CUDA_ERROR_INVALID_VALUE);
    EXPECT_EQ(error.call(), pin_entry());
  }
  EXPECT_EQ(store.refusals(), 0U) << "an error is not a refusal";
  EXPECT_EQ(store.used_bytes(), 1 * MiB);
  EXPECT_EQ(store.slab_bytes_held(), 1 * MiB);
  host_extent const second = store.allocate(4 * KiB);
  ASSERT_TRUE(second);
  EXPECT_NE(second.slab, first.slab);
  store.deallocate(first);
  store.deallocate(second);
  EXPECT_EQ(store.slab_bytes_held(), 0U);
}

TEST_P(HostStoreTest, FailedFreeIsRetriedAtTheNextCall)
{
  SIM_ONLY(sim(), "injects an unpin failure");
  std::size_t const before = host_allocations();
  host_store store(drv(),
                   pinned_by({.limit_bytes = 16 * MiB, .slab_bytes = 1 * MiB, .pinned = true}));
  host_extent const e = store.allocate(4 * KiB);
  ASSERT_TRUE(e);
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call(unpin_entry(), 1, CUDA_ERROR_INVALID_VALUE));
  EXPECT_NO_THROW(store.deallocate(e));
  EXPECT_EQ(store.used_bytes(), 0U);
  EXPECT_EQ(store.slab_bytes_held(), 1 * MiB) << "the slab is still held until freed";
  EXPECT_EQ(host_allocations(), before + 1);

  host_extent const next = store.allocate(4 * KiB);  // retries the free first
  ASSERT_TRUE(next);
  EXPECT_EQ(store.slab_bytes_held(), 1 * MiB) << "old slab freed, a new one made";
  EXPECT_EQ(host_allocations(), before + 1);
  store.deallocate(next);
  EXPECT_EQ(host_allocations(), before);
}

TEST_P(HostStoreTest, FailedFreeIsRetriedAtDestruction)
{
  SIM_ONLY(sim(), "injects an unpin failure");
  std::size_t const before = host_allocations();
  {
    host_store store(drv(),
                     pinned_by({.limit_bytes = 16 * MiB, .slab_bytes = 1 * MiB, .pinned = true}));
    host_extent const e = store.allocate(4 * KiB);
    ASSERT_TRUE(e);
    ASSERT_CU(CUDA_SUCCESS, sim().fail_call(unpin_entry(), 1, CUDA_ERROR_INVALID_VALUE));
    store.deallocate(e);
    EXPECT_EQ(host_allocations(), before + 1);
  }
  EXPECT_EQ(host_allocations(), before);
}

// ---- Contract violations -------------------------------------------------------------

TEST_F(HostStoreDeathTest, DoubleFreeAbortsWithAMessage)
{
  EXPECT_DEATH(
    {
      host_store store(drv(), {.limit_bytes = 16 * MiB, .slab_bytes = 1 * MiB, .pinned = false});
      host_extent const keep = store.allocate(4 * KiB);  // keeps the slab alive
      host_extent const e    = store.allocate(4 * KiB);
      store.deallocate(e);
      store.deallocate(e);
      (void)keep;
    },
    "host_store::deallocate: extent .* double free");
}

// ---- Threads -------------------------------------------------------------------------

TEST_P(HostStoreTest, ConcurrentAllocateAndDeallocateFromFourThreads)
{
  host_store store(drv(),
                   pinned_by({.limit_bytes = 32 * MiB, .slab_bytes = 2 * MiB, .pinned = true}));
  constexpr int threads = 4;
  std::vector<std::string> failures(threads);
  std::vector<std::thread> workers;
  workers.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&store, &failures, t] {
      std::mt19937 rng(static_cast<unsigned>(t) * 7919U + 1U);
      std::vector<std::pair<host_extent, std::uint32_t>> mine;
      for (std::uint32_t op = 0; op < 2000; ++op) {
        if (mine.empty() || rng() % 100 < 55) {
          host_extent const e = store.allocate(1 + rng() % (32 * KiB));
          if (!e) { continue; }
          std::uint32_t const id = op * threads + static_cast<std::uint32_t>(t);
          fill(e, id);
          mine.emplace_back(e, id);
        } else {
          std::size_t const index = rng() % mine.size();
          auto const [e, id]      = mine[index];
          if (!holds(e, id) && failures[t].empty()) {
            failures[t] =
              "thread " + std::to_string(t) + ": extent " + std::to_string(id) + " was overwritten";
          }
          mine[index] = mine.back();
          mine.pop_back();
          store.deallocate(e);
        }
      }
      for (auto const& [e, id] : mine) {
        if (!holds(e, id) && failures[t].empty()) { failures[t] = "overwritten at the end"; }
        store.deallocate(e);
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
  EXPECT_EQ(store.slab_bytes_held(), 0U);
  EXPECT_GT(store.peak_used_bytes(), 0U);
}

}  // namespace
}  // namespace swapalloc::testing
