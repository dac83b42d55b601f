// Tests of include/swapalloc/compression_policy.hpp: when evicted copies are compressed, as
// pure functions. Table tests, no driver: given a host store's use and limit and the pools'
// raw copies, the exact timing of an eviction and the pools a plan chooses, in order. Every
// expected figure is written out by hand.
#include <swapalloc/compression_policy.hpp>

#include "byte_units.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

namespace swapalloc {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

using testing::units::GiB;
using testing::units::MiB;
constexpr milliseconds never = milliseconds::max();  // a pool never used

constexpr compression_timing behind   = compression_timing::behind;
constexpr compression_timing deferred = compression_timing::deferred;

struct timing_row {
  char const* name;
  host_budget host;
  std::size_t raw_bytes;
  milliseconds idle_delay;
  compression_timing expected;
};

TEST(CompressionPolicy, AnEvictionDefersWhileTheStoreHoldsItsCopiesRawBelowItsHighWatermark)
{
  // The double nearest 0.85 is 0.84999999999999997780, so its share of 10 GiB is
  // floor(0.8499...978 * 10737418240) = 9126805503 bytes (exact rational arithmetic).
  constexpr std::size_t high_of_10GiB = 9126805503;
  timing_row const rows[]             = {
                {"empty store, 1 GiB copy", {0, 10 * GiB}, GiB, seconds(30), deferred},
                {"lands exactly at the high watermark",
                 {high_of_10GiB - GiB, 10 * GiB},
                 GiB,
                 seconds(30),
                 deferred},
                {"one byte past it", {high_of_10GiB - GiB + 1, 10 * GiB}, GiB, seconds(30), behind},
                {"already past it, nothing copied", {high_of_10GiB + 1, 10 * GiB}, 0, seconds(30), behind},
                {"nothing copied below it", {GiB, 10 * GiB}, 0, seconds(30), deferred},
                {"idle delay 0: always behind", {0, 10 * GiB}, MiB, milliseconds(0), behind},
                {"idle delay 1 ms still defers", {0, 10 * GiB}, MiB, milliseconds(1), deferred},
                {"limit unknown (0): behind", {0, 0}, MiB, seconds(30), behind},
                {"copy larger than the address space: behind",
                 {GiB, 10 * GiB},
                 std::numeric_limits<std::size_t>::max(),
                 seconds(30),
                 behind},
  };
  for (timing_row const& row : rows) {
    compression_settings settings;
    settings.idle_delay = row.idle_delay;
    EXPECT_EQ(eviction_timing(row.host, row.raw_bytes, settings), row.expected) << row.name;
  }
}

TEST(CompressionPolicy, TheTimingFollowsConfiguredHostWatermarks)
{
  compression_settings settings;
  settings.host_marks = watermarks{0.25, 0.5};
  EXPECT_EQ(eviction_timing({0, 100 * MiB}, 50 * MiB, settings), deferred);
  EXPECT_EQ(eviction_timing({1, 100 * MiB}, 50 * MiB, settings), behind);
}

raw_copies_view raw(pool_id id, std::size_t bytes, milliseconds idle, bool read_only = false)
{
  return raw_copies_view{id, bytes, idle, read_only};
}

struct compression_row {
  char const* name;
  host_budget host;
  std::vector<raw_copies_view> pools;
  std::vector<pool_id> expected;
};

TEST(CompressionPolicy,
     APlanChoosesIdlePoolsAndUnderBudgetPressureTheColdestUntilTheExcessIsCovered)
{
  // Limit 100 MiB: high 0.85 -> 89128959 bytes (the double below 0.85 times 104857600,
  // floored), low 0.75 -> 78643200 (75 MiB, exact). One byte past high, the excess over
  // low is 89128960 - 78643200 = 10 MiB.
  constexpr std::size_t limit      = 100 * MiB;
  constexpr std::size_t high_bytes = 89128959;
  compression_row const rows[]     = {
        {"nothing raw", {90 * MiB, limit}, {raw(1, 0, never), raw(2, 0, never)}, {}},
        {"below the watermark, none idle", {50 * MiB, limit}, {raw(1, 10 * MiB, seconds(29))}, {}},
        {"an idle pool, coldest first",
         {50 * MiB, limit},
         {raw(1, 10 * MiB, seconds(30)), raw(2, 10 * MiB, seconds(29)), raw(3, MiB, seconds(60))},
         {3, 1}},
        {"a never used pool counts as idle", {0, limit}, {raw(4, MiB, never)}, {4}},
        {"read-only pools stay raw however idle",
         {50 * MiB, limit},
         {raw(1, 10 * MiB, never, true)},
         {}},
        {"at the high watermark exactly: no pressure",
         {high_bytes, limit},
         {raw(1, 10 * MiB, seconds(1))},
         {}},
        // One byte past it: the excess is 10 MiB. Pool 2 (colder, 6 MiB) then pool 1 (5 MiB)
        // cover it; pool 3 (hot, 4 MiB) is not needed.
        {"pressure: coldest first until covered",
         {high_bytes + 1, limit},
         {raw(1, 5 * MiB, seconds(2)), raw(2, 6 * MiB, seconds(5)), raw(3, 4 * MiB, seconds(1))},
         {2, 1}},
        // An excess of 10 MiB + 1 is more than pool 2's 10 MiB: pool 1 is chosen too; an
        // excess of exactly 10 MiB is covered by pool 2 alone.
        {"a plan never chooses fewer bytes than the excess",
         {high_bytes + 2, limit},
         {raw(1, 5 * MiB, seconds(2)), raw(2, 10 * MiB, seconds(5))},
         {2, 1}},
        {"an excess covered exactly stops the plan",
         {high_bytes + 1, limit},
         {raw(1, 5 * MiB, seconds(2)), raw(2, 10 * MiB, seconds(5))},
         {2}},
        {"pressure: read-only pools last, even when colder",
         {95 * MiB, limit},
         {raw(1, 30 * MiB, never, true), raw(2, 8 * MiB, seconds(1)), raw(3, 8 * MiB, seconds(2))},
         {3, 2, 1}},
        {"pressure: an idle pool is chosen past the excess",
         {86 * MiB, limit},
         {raw(1, 20 * MiB, seconds(40)), raw(2, 5 * MiB, seconds(35)), raw(3, 5 * MiB, seconds(3))},
         {1, 2}},
        {"equal idle times: lower id first",
         {0, limit},
         {raw(7, MiB, never), raw(5, MiB, never)},
         {5, 7}},
        {"limit unknown (0): idle pools only",
         {GiB, 0},
         {raw(1, MiB, seconds(31)), raw(2, MiB, seconds(1))},
         {1}},
  };
  for (compression_row const& row : rows) {
    EXPECT_EQ(plan_compression(row.host, row.pools, compression_settings{}), row.expected)
      << row.name;
  }
}

TEST(CompressionPolicy, AnIdleDelayOfZeroChoosesEveryPoolButReadOnlyOnes)
{
  compression_settings settings;
  settings.idle_delay = milliseconds(0);
  std::vector<raw_copies_view> const pools{raw(1, MiB, milliseconds(0)),
                                           raw(2, MiB, milliseconds(0), true)};
  EXPECT_EQ(plan_compression({0, GiB}, pools, settings), (std::vector<pool_id>{1}));
}

}  // namespace
}  // namespace swapalloc
