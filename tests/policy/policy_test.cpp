// Tests of include/swapalloc/policy.hpp: the 85/75 policy as pure functions. Table tests,
// no driver: given usage, limits and pools, the exact levels, byte counts and steps (action,
// pool, bytes, order). Every expected figure is written out by hand (computed with exact
// rational arithmetic where it is large), never by the code under test.
#include <swapalloc/policy.hpp>

#include "byte_units.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace swapalloc {

// GoogleTest prints steps this way when a comparison fails (found by ADL).
void PrintTo(room_step const& step, std::ostream* out)
{
  *out << "{" << to_string(step.what) << ", pool " << step.pool << ", " << step.bytes << " B}";
}

namespace {

using testing::units::GiB;
using testing::units::MiB;
constexpr std::size_t page = 2 * MiB;
constexpr std::size_t all  = std::numeric_limits<std::size_t>::max();
constexpr double nan       = std::numeric_limits<double>::quiet_NaN();
constexpr double inf       = std::numeric_limits<double>::infinity();

using action = room_step::action;
using namespace std::string_view_literals;

constexpr room_step release(pool_id pool, std::size_t bytes)
{
  return {action::release_cached, pool, bytes};
}
constexpr room_step evict(pool_id pool, std::size_t bytes) { return {action::evict, pool, bytes}; }

/// An evictable, unpinned pool of 2 MiB pages.
constexpr pool_view pool(pool_id id, pool_priority priority, std::uint64_t last_use,
                         std::size_t resident, std::size_t cached = 0)
{
  return pool_view{.id             = id,
                   .priority       = priority,
                   .last_use       = last_use,
                   .resident_bytes = resident,
                   .cached_bytes   = cached,
                   .page_size      = page};
}
constexpr pool_view pinned(pool_view view)
{
  view.pinned = true;
  return view;
}
constexpr pool_view prefetched(pool_view view)
{
  view.prefetched = true;
  return view;
}
constexpr pool_view not_evictable(pool_view view)
{
  view.evictable = false;
  return view;
}

/// The process alone on a device of `total` bytes, limited to `limit`, `own` bytes mapped.
constexpr device_usage alone(std::size_t own, std::size_t limit, std::size_t total)
{
  return {.own_bytes = own, .limit_bytes = limit, .device_used = own, .device_total = total};
}

constexpr pool_priority low      = pool_priority::low;
constexpr pool_priority normal   = pool_priority::normal;
constexpr pool_priority high     = pool_priority::high;
constexpr pool_priority critical = pool_priority::critical;

// ------------------------------------------------------------------ names

TEST(PolicyNames, PrioritiesReadBackTheirNamesAndNothingElse)
{
  struct row {
    pool_priority priority;
    char const* name;
  };
  for (row const& r :
       {row{low, "low"}, row{normal, "normal"}, row{high, "high"}, row{critical, "critical"}}) {
    EXPECT_STREQ(to_string(r.priority), r.name);
    EXPECT_EQ(parse_priority(r.name), std::optional<pool_priority>(r.priority)) << r.name;
  }
  for (std::string_view bad :
       {""sv, "Low"sv, "CRITICAL"sv, " low"sv, "low "sv, "lo"sv, "urgent"sv, "normal\0"sv}) {
    EXPECT_EQ(parse_priority(bad), std::nullopt) << '"' << bad << '"';
  }
  static_assert(parse_priority("high") == pool_priority::high);
}

TEST(PolicyNames, LevelsRefusalsAndActionsHaveTheirNames)
{
  EXPECT_STREQ(to_string(pressure_level::safe), "SAFE");
  EXPECT_STREQ(to_string(pressure_level::warning), "WARNING");
  EXPECT_STREQ(to_string(pressure_level::critical), "CRITICAL");
  EXPECT_STREQ(to_string(pressure_level::emergency), "EMERGENCY");
  EXPECT_STREQ(to_string(refusal::none), "none");
  EXPECT_STREQ(to_string(refusal::not_evictable), "not evictable");
  EXPECT_STREQ(to_string(refusal::critical), "critical");
  EXPECT_STREQ(to_string(refusal::pinned_or_active), "pinned or active");
  EXPECT_STREQ(to_string(refusal::prefetched), "prefetched and not used yet");
  EXPECT_STREQ(to_string(refusal::nothing_resident), "nothing resident");
  EXPECT_STREQ(to_string(action::release_cached), "release_cached");
  EXPECT_STREQ(to_string(action::evict), "evict");
}

// ------------------------------------------------------------------ watermarks

TEST(PolicyWatermarks, AcceptsOnlyZeroBelowLowBelowHighAtMostOne)
{
  struct row {
    watermarks marks;
    std::string problem;
  };
  std::string const accepted = " (accepted: 0 < low < high <= 1)";
  row const rows[]           = {
              {{0.75, 0.85}, ""},
              {{0.5, 1.0}, ""},
              {{1e-9, 0.01}, ""},
              {{0.85, 0.85}, "low watermark 0.85 must be below the high watermark 0.85" + accepted},
              {{0.9, 0.85}, "low watermark 0.9 must be below the high watermark 0.85" + accepted},
              {{0.0, 0.85}, "low watermark 0 must be a fraction above 0 and below 1" + accepted},
              {{-0.1, 0.85}, "low watermark -0.1 must be a fraction above 0 and below 1" + accepted},
              {{1.0, 1.0}, "low watermark 1 must be a fraction above 0 and below 1" + accepted},
              {{0.75, 1.5}, "high watermark 1.5 must be a fraction above 0 and at most 1" + accepted},
              {{0.75, 0.0}, "high watermark 0 must be a fraction above 0 and at most 1" + accepted},
              {{nan, 0.85}, "low watermark nan must be a fraction above 0 and below 1" + accepted},
              {{0.75, nan}, "high watermark nan must be a fraction above 0 and at most 1" + accepted},
              {{0.75, inf}, "high watermark inf must be a fraction above 0 and at most 1" + accepted},
              {{nan, 2.0},
               "low watermark nan must be a fraction above 0 and below 1; high watermark 2 must be a "
                         "fraction above 0 and at most 1" +
                 accepted},
  };
  for (row const& r : rows) {
    EXPECT_EQ(watermark_problem(r.marks), r.problem) << r.marks.low << " / " << r.marks.high;
  }
  watermarks const defaults;
  EXPECT_EQ(defaults.low, 0.75);
  EXPECT_EQ(defaults.high, 0.85);
  EXPECT_EQ(emergency_fraction, 0.95);
}

TEST(PolicyHostMemory, ShortExactlyBelowATenthOfTheHostAndNeverWhenItsSizeIsUnknown)
{
  struct row {
    std::size_t available;
    std::size_t total;
    bool short_of_memory;
  };
  constexpr std::size_t GiB = std::size_t{1} << 30;
  row const rows[]          = {
             {100 * GiB, 100 * GiB, false},
             {11 * GiB, 100 * GiB, false},
             {10 * GiB, 100 * GiB, false},
             {10 * GiB - 1, 100 * GiB, true},
             {0, 100 * GiB, true},
             {0, 0, false},
             {5, 0, false},
             {99, 1000, true},
             {100, 1000, false},
  };
  for (row const& r : rows) {
    EXPECT_EQ(host_memory_short(r.available, r.total), r.short_of_memory)
      << r.available << " available of " << r.total;
  }
}

TEST(PolicyFraction, FractionOfIsTheExactFloorUpTo2To64)
{
  struct row {
    double fraction;
    std::size_t bytes;
    std::size_t expected;  // floor of the double's exact value times bytes (Python Fraction)
  };
  row const rows[] = {
    {0.75, 8 * GiB, 6 * GiB},
    {0.85, 8 * GiB, 7'301'444'403},  // 7301444403.2
    {0.85, 100, 84},                 // the double 0.85 is 0.84999999999999997780...
    {0.75, 100 * MiB, 75 * MiB},
    {0.5, all, 9'223'372'036'854'775'807},
    {0.75, all, 13'835'058'055'282'163'711U},
    // 3·2^62 - 2.25: a long double product (64-bit mantissa) rounds it up to ...710.
    {0.75, all - 2, 13'835'058'055'282'163'709U},
    {0.95, all, 17'524'406'870'024'073'215U},
    {0.85, all, 15'679'732'462'653'118'463U},
    {0.1, all, 1'844'674'407'370'955'263},
    {1.0, all, all},
    {0.9999999999999999, all, 18'446'744'073'709'549'567U},  // 1 - 2^-53
    {2.0, (all >> 1), all - 1},
    {2.0, (all >> 1) + 1, all},  // 2^64: saturates
    {4096.0, (std::size_t{1} << 52) - 1, 18'446'744'073'709'547'520U},
    {4096.0, std::size_t{1} << 52, all},
    {1e300, 1, all},
    {inf, 1, all},
    {5e-324, all, 0},  // the smallest subnormal
    {0.0, all, 0},
    {-0.0, all, 0},
    {-0.5, 100, 0},
    {nan, 100, 0},
    {0.5, 0, 0},
    {inf, 0, 0},
  };
  for (row const& r : rows) {
    EXPECT_EQ(fraction_of(r.fraction, r.bytes), r.expected) << r.fraction << " of " << r.bytes;
  }
  static_assert(fraction_of(0.75, 400) == 300);
}

// ------------------------------------------------------------------ pressure

TEST(PolicyPressure, LevelsChangeExactlyAtTheirBoundaries)
{
  struct row {
    std::size_t own;
    double fraction;
    pressure_level level;
  };
  constexpr std::size_t limit = 100 * MiB;  // x MiB of it is x% exactly
  row const rows[]            = {
               {0, 0.0, pressure_level::safe},
               {75 * MiB - 1, 0.7499999904632568, pressure_level::safe},
               {75 * MiB, 0.75, pressure_level::warning},
               {85 * MiB - 1, 0.8499999904632568, pressure_level::warning},
               {85 * MiB, 0.85, pressure_level::critical},
               {95 * MiB - 1, 0.9499999904632568, pressure_level::critical},
               {95 * MiB, 0.95, pressure_level::emergency},
               {100 * MiB, 1.0, pressure_level::emergency},
               {150 * MiB, 1.5, pressure_level::emergency},
  };
  for (row const& r : rows) {
    // Own bytes against the limit, the device idle; then the device full of others' bytes.
    device_usage const own{.own_bytes = r.own, .limit_bytes = limit, .device_total = 10 * limit};
    device_usage const device{.limit_bytes = limit, .device_used = r.own, .device_total = limit};
    EXPECT_EQ(use_fraction(own), r.fraction) << r.own;
    EXPECT_EQ(pressure_of(own, watermarks{}), r.level) << "own " << r.own;
    EXPECT_EQ(use_fraction(device), r.fraction) << r.own;
    EXPECT_EQ(pressure_of(device, watermarks{}), r.level) << "device-wide " << r.own;
  }
}

TEST(PolicyPressure, TheFullerCapacityDecidesAndAnUnknownOneCountsAsEmpty)
{
  // Own: 50 of 100 (0.5); device: 150 of 200 (0.75).
  device_usage const both{.own_bytes    = 50 * MiB,
                          .limit_bytes  = 100 * MiB,
                          .device_used  = 150 * MiB,
                          .device_total = 200 * MiB};
  EXPECT_EQ(use_fraction(both), 0.75);
  EXPECT_EQ(pressure_of(both, watermarks{}), pressure_level::warning);
  device_usage const unknown{.own_bytes = 90 * MiB, .device_used = 90 * MiB};
  EXPECT_EQ(use_fraction(unknown), 0.0);
  EXPECT_EQ(pressure_of(unknown, watermarks{}), pressure_level::safe);
  // Configured watermarks move WARNING and CRITICAL; EMERGENCY stays at 0.95, and wins
  // over a high watermark set above it.
  device_usage const at_55 = alone(55 * MiB, 100 * MiB, 100 * MiB);
  EXPECT_EQ(pressure_of(at_55, watermarks{0.5, 0.6}), pressure_level::warning);
  EXPECT_EQ(pressure_of(at_55, watermarks{0.5, 0.55}), pressure_level::critical);
  EXPECT_EQ(pressure_of(at_55, watermarks{0.6, 0.7}), pressure_level::safe);
  device_usage const at_96 = alone(96 * MiB, 100 * MiB, 100 * MiB);
  EXPECT_EQ(pressure_of(at_96, watermarks{0.5, 0.99}), pressure_level::emergency);
}

// ------------------------------------------------------------------ bytes to free

TEST(PolicyBytesToFree, PastHighFreesDownToLowOnEitherCapacity)
{
  struct row {
    char const* what;
    device_usage usage;
    std::size_t request;
    room_reason reason;
    watermarks marks;
    std::size_t expected;
  };
  constexpr std::size_t limit = 100 * MiB;
  constexpr auto map          = room_reason::map;
  constexpr auto monitor      = room_reason::monitor;
  row const rows[]            = {
               {"map to 84%", alone(80 * MiB, limit, GiB), 4 * MiB, map, {}, 0},
               {"map to exactly 85%: not past it", alone(80 * MiB, limit, GiB), 5 * MiB, map, {}, 0},
               {"map one byte past 85%", alone(80 * MiB, limit, GiB), 5 * MiB + 1, map, {}, 10 * MiB + 1},
               {"map to 86%: pre-evict to 75%", alone(80 * MiB, limit, GiB), 6 * MiB, map, {}, 11 * MiB},
               {"ensure_free like map",
                alone(80 * MiB, limit, GiB),
                6 * MiB,
                room_reason::ensure_free,
                {},
                11 * MiB},
               {"monitor ignores the request", alone(80 * MiB, limit, GiB), 50 * MiB, monitor, {}, 0},
               {"monitor past 85%", alone(90 * MiB, limit, GiB), 50 * MiB, monitor, {}, 15 * MiB},
               {"monitor at exactly 85%", alone(85 * MiB, limit, GiB), 0, monitor, {}, 0},
               // Other processes fill the device: own 10 of 100, device 860 of 1000.
               {"device-wide, own fine",
                {.own_bytes    = 10 * MiB,
                 .limit_bytes  = limit,
                 .device_used  = 860 * MiB,
                 .device_total = 1000 * MiB},
                0,
                monitor,
                {},
                110 * MiB},
               {"own past high, device fine",
                {.own_bytes    = 90 * MiB,
                 .limit_bytes  = limit,
                 .device_used  = 90 * MiB,
                 .device_total = 1000 * MiB},
                0,
                monitor,
                {},
                15 * MiB},
               // Own past high (90 of 100), the device between the watermarks (800 of 1000): both
               // come down to low, so the device's 50 wins over own's 15.
               {"both to low",
                {.own_bytes    = 90 * MiB,
                 .limit_bytes  = limit,
                 .device_used  = 800 * MiB,
                 .device_total = 1000 * MiB},
                0,
                monitor,
                {},
                50 * MiB},
               {"the request counts on the device too",
                {.own_bytes    = 10 * MiB,
                 .limit_bytes  = limit,
                 .device_used  = 840 * MiB,
                 .device_total = 1000 * MiB},
                20 * MiB,
                map,
                {},
                110 * MiB},
               {"a request larger than the device",
                {.own_bytes    = 0,
                 .limit_bytes  = 1000 * MiB,
                 .device_used  = 100 * MiB,
                 .device_total = 1000 * MiB},
                2000 * MiB,
                map,
                {},
                1350 * MiB},
               {"a request of SIZE_MAX saturates",
                alone(10 * MiB, limit, 1000 * MiB),
                all,
                map,
                {},
                all - 75 * MiB},
               {"capacities unknown", alone(90 * MiB, 0, 0), 10 * MiB, map, {}, 0},
               {"configured 0.5 / 0.6", alone(61 * MiB, limit, GiB), 0, monitor, {0.5, 0.6}, 11 * MiB},
               // 0.7 is stored as 0.69999...: 69 bytes is the most at or below it (documented).
               {"a decimal low below its double", alone(90, 100, 1000), 0, monitor, {0.7, 0.85}, 21},
               {"out of memory: everything", alone(0, limit, GiB), 0, room_reason::out_of_memory, {}, all},
  };
  for (row const& r : rows) {
    EXPECT_EQ(bytes_to_free(r.usage, r.request, r.marks, r.reason), r.expected) << r.what;
  }
}

// ------------------------------------------------------------------ refusals

TEST(PolicyRefusal, TheFirstMatchingReasonInTheDocumentedOrder)
{
  struct row {
    char const* what;
    pool_view view;
    char const* on_map;  // nullptr: may be evicted
    char const* on_oom;
  };
  pool_view const plain = pool(3, normal, 1, 10 * MiB);
  pool_view empty       = plain;
  empty.resident_bytes  = 0;
  pool_view critical_p  = pool(3, critical, 1, 10 * MiB);
  pool_view default_p   = plain;
  default_p.id          = default_pool;
  row const rows[]      = {
         {"plain", plain, nullptr, nullptr},
         {"default pool, flag true", default_p, "not evictable", "not evictable"},
         {"evictable=false", not_evictable(plain), "not evictable", "not evictable"},
         {"critical", critical_p, "critical", "critical"},
         {"critical, pinned, not evictable", not_evictable(pinned(critical_p)), "not evictable",
          "not evictable"},
         {"critical and pinned", pinned(critical_p), "critical", "critical"},
         {"critical and prefetched", prefetched(critical_p), "critical", "critical"},
         {"pinned", pinned(plain), "pinned or active", "pinned or active"},
         {"pinned and prefetched", pinned(prefetched(plain)), "pinned or active", "pinned or active"},
         {"prefetched", prefetched(plain), "prefetched and not used yet", nullptr},
         {"prefetched, nothing resident", prefetched(empty), "prefetched and not used yet",
          "nothing resident"},
         {"nothing resident", empty, "nothing resident", "nothing resident"},
         {"low priority", pool(3, low, 0, page), nullptr, nullptr},
         {"high priority", pool(3, high, 0, page), nullptr, nullptr},
  };
  for (row const& r : rows) {
    for (room_reason reason : {room_reason::map, room_reason::ensure_free, room_reason::monitor}) {
      char const* const got = eviction_refusal(r.view, reason);
      if (r.on_map == nullptr) {
        EXPECT_EQ(got, nullptr) << r.what << ": " << got;
      } else {
        EXPECT_STREQ(got, r.on_map) << r.what;
      }
    }
    char const* const got = eviction_refusal(r.view, room_reason::out_of_memory);
    if (r.on_oom == nullptr) {
      EXPECT_EQ(got, nullptr) << r.what << " (out of memory): " << got;
    } else {
      EXPECT_STREQ(got, r.on_oom) << r.what << " (out of memory)";
    }
  }
}

// ------------------------------------------------------------------ plans

struct plan_row {
  char const* what;
  device_usage usage;
  std::size_t request;
  room_reason reason;
  std::vector<pool_view> pools;
  std::size_t needed;
  std::vector<room_step> steps;
  std::size_t planned;
  bool enough;
};

void check(plan_row const& r)
{
  room_plan const plan = plan_room(r.usage, r.pools, r.request, watermarks{}, r.reason);
  EXPECT_EQ(plan.needed, r.needed) << r.what;
  EXPECT_EQ(plan.steps, r.steps) << r.what;
  EXPECT_EQ(plan.planned, r.planned) << r.what;
  EXPECT_EQ(plan.enough(), r.enough) << r.what;
}

/// A process alone with a 1000 MiB limit on a 1000 MiB device; `monitor` at `own` MiB
/// needs own - 750 MiB once past 850.
constexpr device_usage mapped(std::size_t own_mib)
{
  return alone(own_mib * MiB, 1000 * MiB, 1000 * MiB);
}

TEST(PolicyPlan, NothingNeededGivesAnEmptyPlan)
{
  check({"at 85%, pools to spare",
         mapped(850),
         0,
         room_reason::monitor,
         {pool(1, low, 0, 400 * MiB, 50 * MiB), pool(2, low, 1, 400 * MiB)},
         0,
         {},
         0,
         true});
}

TEST(PolicyPlan, CachedPagesGoBeforeAnyEvictionProtectedPoolsLast)
{
  // 900 MiB mapped: 150 MiB to free. Cached: pool 2 (low) before pool 1 (normal) before the
  // protected pools 3 (pinned) and 4 (critical); the evictable resident bytes stay.
  std::vector<pool_view> const pools{
    pool(1, normal, 5, 200 * MiB, 100 * MiB), pool(2, low, 9, 300 * MiB, 20 * MiB),
    pinned(pool(3, normal, 1, 100 * MiB, 40 * MiB)), pool(4, critical, 0, 100 * MiB, 40 * MiB)};
  check({"150 MiB from cached pages",
         mapped(900),
         0,
         room_reason::monitor,
         pools,
         150 * MiB,
         {release(2, 20 * MiB), release(1, 100 * MiB), release(3, 30 * MiB)},
         150 * MiB,
         true});
  check({"200 MiB: every cached byte, nothing evicted",
         mapped(950),
         0,
         room_reason::monitor,
         pools,
         200 * MiB,
         {release(2, 20 * MiB), release(1, 100 * MiB), release(3, 40 * MiB), release(4, 40 * MiB)},
         200 * MiB,
         true});
  check({"210 MiB: every cached byte, then the lowest priority evicted",
         mapped(960),
         0,
         room_reason::monitor,
         pools,
         210 * MiB,
         {release(2, 20 * MiB), release(1, 100 * MiB), release(3, 40 * MiB), release(4, 40 * MiB),
          evict(2, 10 * MiB)},
         210 * MiB,
         true});
}

TEST(PolicyPlan, PriorityBeatsRecencyAndRecencyBeatsId)
{
  // Pool 1 is the oldest but normal; pool 2 the newest but low; pool 3 the oldest of all
  // but high. 900 MiB mapped needs 150; 1000 needs 250; with 1200 MiB, 450.
  std::vector<pool_view> const pools{pool(1, normal, 1, 200 * MiB), pool(2, low, 100, 200 * MiB),
                                     pool(3, high, 0, 200 * MiB)};
  check({"150 MiB",
         mapped(900),
         0,
         room_reason::monitor,
         pools,
         150 * MiB,
         {evict(2, 150 * MiB)},
         150 * MiB,
         true});
  check({"450 MiB",
         alone(1200 * MiB, 1000 * MiB, 2000 * MiB),
         0,
         room_reason::monitor,
         pools,
         450 * MiB,
         {evict(2, 200 * MiB), evict(1, 200 * MiB), evict(3, 50 * MiB)},
         450 * MiB,
         true});
  // Within one priority: least recently used first (last_use 10, 20, 30 = pools 2, 3, 1).
  std::vector<pool_view> const same{pool(1, normal, 30, 100 * MiB), pool(2, normal, 10, 100 * MiB),
                                    pool(3, normal, 20, 100 * MiB)};
  check({"LRU within a priority",
         mapped(1000),
         0,
         room_reason::monitor,
         same,
         250 * MiB,
         {evict(2, 100 * MiB), evict(3, 100 * MiB), evict(1, 50 * MiB)},
         250 * MiB,
         true});
}

TEST(PolicyPlan, TiesInPriorityAndRecencyGoByPoolId)
{
  std::vector<pool_view> const tied{pool(7, normal, 4, 100 * MiB, 2 * MiB),
                                    pool(3, normal, 4, 100 * MiB, 2 * MiB),
                                    pool(5, normal, 4, 100 * MiB, 2 * MiB)};
  check({"ids 3, 5, 7",
         mapped(1000),
         0,
         room_reason::monitor,
         tied,
         250 * MiB,
         {release(3, 2 * MiB), release(5, 2 * MiB), release(7, 2 * MiB), evict(3, 100 * MiB),
          evict(5, 100 * MiB), evict(7, 44 * MiB)},
         250 * MiB,
         true});
}

TEST(PolicyPlan, ThePartialLastVictimIsRoundedUpToItsPages)
{
  // Mapping 5 MiB + 1 at 80 MiB of 100 MiB passes 85%: 10 MiB + 1 to free, to 75%.
  device_usage const usage = alone(80 * MiB, 100 * MiB, GiB);
  pool_view four_mib_pages = pool(2, normal, 2, 40 * MiB);
  four_mib_pages.page_size = 4 * MiB;
  check({"one pool: 6 pages",
         usage,
         5 * MiB + 1,
         room_reason::map,
         {pool(1, low, 1, 40 * MiB)},
         10 * MiB + 1,
         {evict(1, 12 * MiB)},
         12 * MiB,
         true});
  // Pool 1 gives all its 6 MiB; the 4 MiB + 1 left is two of pool 2's 4 MiB pages.
  check({"two pools",
         usage,
         5 * MiB + 1,
         room_reason::map,
         {pool(1, low, 1, 6 * MiB), four_mib_pages},
         10 * MiB + 1,
         {evict(1, 6 * MiB), evict(2, 8 * MiB)},
         14 * MiB,
         true});
  // Cached pages are rounded alike, and a step takes what is left after the ones before:
  // all 4 MiB cached, then 6 MiB + 1 evicted as 8 MiB.
  check({"cached rounded; the overshoot takes nothing more",
         usage,
         5 * MiB + 1,
         room_reason::map,
         {pool(1, low, 1, 40 * MiB, 40 * MiB), pool(2, normal, 2, 40 * MiB, 40 * MiB)},
         10 * MiB + 1,
         {release(1, 12 * MiB)},
         12 * MiB,
         true});
  check({"cached, then evicted rounded",
         usage,
         5 * MiB + 1,
         room_reason::map,
         {pool(1, low, 1, 40 * MiB, 4 * MiB)},
         10 * MiB + 1,
         {release(1, 4 * MiB), evict(1, 8 * MiB)},
         12 * MiB,
         true});
}

TEST(PolicyPlan, PreEvictionBeforeAMapTargetsTheLowWatermarkExactly)
{
  // 80 MiB + 6 MiB of 100 MiB = 86%: down to 75 MiB with the request, 11 MiB, 6 pages.
  check({"map 6 MiB at 80%",
         alone(80 * MiB, 100 * MiB, GiB),
         6 * MiB,
         room_reason::map,
         {pool(1, normal, 1, 80 * MiB)},
         11 * MiB,
         {evict(1, 12 * MiB)},
         12 * MiB,
         true});
  check({"map 5 MiB at 80%: exactly 85%, nothing",
         alone(80 * MiB, 100 * MiB, GiB),
         5 * MiB,
         room_reason::map,
         {pool(1, normal, 1, 80 * MiB)},
         0,
         {},
         0,
         true});
}

TEST(PolicyPlan, EitherCapacityMakesAPlan)
{
  std::vector<pool_view> const pools{pool(1, low, 1, 60 * MiB, 10 * MiB),
                                     pool(2, normal, 1, 30 * MiB)};
  // Own 100 of a 100 MiB limit, the device (1000 MiB) nearly idle: 25 MiB.
  check({"own limit",
         alone(100 * MiB, 100 * MiB, 1000 * MiB),
         0,
         room_reason::monitor,
         pools,
         25 * MiB,
         {release(1, 10 * MiB), evict(1, 16 * MiB)},
         26 * MiB,
         true});
  // Own 100 of 1000 MiB, but others use 780 more: 880 of 1000, 130 MiB, more than we have.
  device_usage const crowded{.own_bytes    = 100 * MiB,
                             .limit_bytes  = 1000 * MiB,
                             .device_used  = 880 * MiB,
                             .device_total = 1000 * MiB};
  check({"device crowded by others",
         crowded,
         0,
         room_reason::monitor,
         pools,
         130 * MiB,
         {release(1, 10 * MiB), evict(1, 60 * MiB), evict(2, 30 * MiB)},
         100 * MiB,
         false});
}

TEST(PolicyPlan, EverythingPinnedGivesOnlyCachedPagesAndTheCensusSaysWhy)
{
  std::vector<pool_view> const pools{pinned(pool(1, low, 1, 300 * MiB, 10 * MiB)),
                                     pinned(pool(2, normal, 2, 600 * MiB))};
  check({"pinned",
         mapped(910),
         0,
         room_reason::monitor,
         pools,
         160 * MiB,
         {release(1, 10 * MiB)},
         10 * MiB,
         false});
  check({"pinned, out of memory",
         mapped(910),
         0,
         room_reason::out_of_memory,
         pools,
         all,
         {release(1, 10 * MiB)},
         10 * MiB,
         false});
  room_census const census = census_of(pools, room_reason::out_of_memory);
  EXPECT_EQ(census.pinned, 900 * MiB);
  EXPECT_EQ(census.cached, 10 * MiB);
  EXPECT_EQ(census.evictable, 0U);
  EXPECT_EQ(census.freeable(), 10 * MiB);
}

TEST(PolicyPlan, CriticalPoolsAreNeverEvictedNotEvenOnOutOfMemory)
{
  std::vector<pool_view> const pools{pool(1, critical, 0, 400 * MiB, 4 * MiB),
                                     pool(2, critical, 1, 500 * MiB)};
  for (room_reason reason : {room_reason::monitor, room_reason::out_of_memory}) {
    room_plan const plan = plan_room(mapped(904), pools, 0, watermarks{}, reason);
    EXPECT_EQ(plan.steps, std::vector<room_step>{release(1, 4 * MiB)}) << static_cast<int>(reason);
    EXPECT_EQ(plan.planned, 4 * MiB);
    EXPECT_FALSE(plan.enough());
    room_census const census = census_of(pools, reason);
    EXPECT_EQ(census.critical, 900 * MiB);
    EXPECT_EQ(census.freeable(), 4 * MiB);
  }
}

TEST(PolicyPlan, PrefetchedPoolsAreSkippedExceptOnOutOfMemory)
{
  // Pool 1 would be first (low, oldest) but was prefetched and not used yet.
  std::vector<pool_view> const pools{prefetched(pool(1, low, 0, 100 * MiB, 6 * MiB)),
                                     pool(2, normal, 50, 100 * MiB, 2 * MiB)};
  // Its cached pages are released last, like a pinned pool's.
  check({"monitor",
         mapped(900),
         0,
         room_reason::monitor,
         pools,
         150 * MiB,
         {release(2, 2 * MiB), release(1, 6 * MiB), evict(2, 100 * MiB)},
         108 * MiB,
         false});
  check({"out of memory",
         mapped(900),
         0,
         room_reason::out_of_memory,
         pools,
         all,
         {release(1, 6 * MiB), release(2, 2 * MiB), evict(1, 100 * MiB), evict(2, 100 * MiB)},
         208 * MiB,
         false});
  room_census const refused = census_of(pools, room_reason::map);
  EXPECT_EQ(refused.prefetched, 100 * MiB);
  EXPECT_EQ(refused.evictable, 100 * MiB);
  room_census const allowed = census_of(pools, room_reason::out_of_memory);
  EXPECT_EQ(allowed.prefetched, 0U);
  EXPECT_EQ(allowed.evictable, 200 * MiB);
}

TEST(PolicyPlan, ARequestLargerThanTheDeviceIsNotEnough)
{
  std::vector<pool_view> const pools{pool(1, normal, 1, 60 * MiB, 40 * MiB)};
  device_usage const usage = alone(100 * MiB, 1000 * MiB, 1000 * MiB);
  room_plan const plan     = plan_room(usage, pools, 2000 * MiB, watermarks{}, room_reason::map);
  EXPECT_EQ(plan.needed, 1350 * MiB);  // 100 + 2000 - 750
  EXPECT_EQ(plan.steps, (std::vector<room_step>{release(1, 40 * MiB), evict(1, 60 * MiB)}));
  EXPECT_EQ(plan.planned, 100 * MiB);
  EXPECT_FALSE(plan.enough());
  EXPECT_GT(plan.needed, census_of(pools, room_reason::map).freeable());
}

TEST(PolicyPlan, TheDefaultPoolIsNeverAVictim)
{
  // The default pool is the coldest, lowest pool, and says it is evictable: still never.
  pool_view const fallback = pool(default_pool, low, 0, 500 * MiB, 20 * MiB);
  std::vector<pool_view> const pools{fallback, pool(4, high, 9, 100 * MiB, 2 * MiB)};
  for (room_reason reason : {room_reason::monitor, room_reason::out_of_memory}) {
    room_plan const plan = plan_room(mapped(950), pools, 0, watermarks{}, reason);
    EXPECT_EQ(plan.steps, (std::vector<room_step>{release(4, 2 * MiB), release(0, 20 * MiB),
                                                  evict(4, 100 * MiB)}))
      << static_cast<int>(reason);
    EXPECT_EQ(plan.planned, 122 * MiB);
    EXPECT_EQ(census_of(pools, reason).not_evictable, 500 * MiB);
  }
}

TEST(PolicyPlan, OutOfMemoryPlansEverythingAllowed)
{
  std::vector<pool_view> const pools{
    pool(1, normal, 8, 100 * MiB, 2 * MiB),
    pool(2, low, 9, 50 * MiB),
    pinned(pool(3, low, 1, 70 * MiB, 4 * MiB)),
    not_evictable(pool(4, low, 0, 30 * MiB, 6 * MiB)),
    pool(5, critical, 0, 40 * MiB, 8 * MiB),
    pool(6, high, 3, 0, 10 * MiB),  // nothing resident: released, never evicted
    pool(7, high, 2, 20 * MiB),
  };
  // Cached: pools that may be evicted or have nothing resident (2, 1, 7, 6 by priority and
  // recency; 2 and 7 have none cached), then the protected ones (4, 3 by recency; 5).
  // Evicted: 2 (low), 1 (normal), 7 (high); 3, 4, 5 refused, 6 has nothing resident.
  check({"out of memory",
         mapped(10),
         0,
         room_reason::out_of_memory,
         pools,
         all,
         {release(1, 2 * MiB), release(6, 10 * MiB), release(4, 6 * MiB), release(3, 4 * MiB),
          release(5, 8 * MiB), evict(2, 50 * MiB), evict(1, 100 * MiB), evict(7, 20 * MiB)},
         200 * MiB,
         false});
  room_census const census = census_of(pools, room_reason::out_of_memory);
  EXPECT_EQ(census.cached, 30 * MiB);
  EXPECT_EQ(census.evictable, 170 * MiB);
  EXPECT_EQ(census.pinned, 70 * MiB);
  EXPECT_EQ(census.not_evictable, 30 * MiB);
  EXPECT_EQ(census.critical, 40 * MiB);
  EXPECT_EQ(census.prefetched, 0U);
  EXPECT_EQ(census.freeable(), 200 * MiB);
}

// ------------------------------------------------------------------ pages

// ------------------------------------------------------------------ pinned reserve

TEST(PolicyPinnedReserve, TheFirstVictimsResidentBytesFromTheLowWatermarkOn)
{
  // 1 GiB alone; watermarks 0.75/0.85. Pool 2 is the first victim (low priority), then 1.
  std::vector<pool_view> const pools{pool(1, normal, 1, 300 * MiB, 10 * MiB),
                                     pool(2, low, 100, 200 * MiB, 4 * MiB),
                                     pool(3, high, 0, 100 * MiB)};
  std::vector<pool_view> const first_taken{pinned(pools[1]), pools[0], pools[2]};
  std::vector<pool_view> const none_evictable{pinned(pools[0]), prefetched(pools[1]),
                                              pool(3, critical, 0, 100 * MiB)};
  std::vector<pool_view> const default_only{not_evictable(pool(0, low, 0, 600 * MiB))};
  struct row {
    std::size_t own;  // of 1 GiB
    std::span<pool_view const> pools;
    bool host_short;
    std::size_t reserve;
  };
  std::size_t const low_mark = fraction_of(0.75, GiB);
  row const rows[]           = {
              {low_mark - 1, pools, false, 0},            // SAFE: no eviction near
              {low_mark, pools, false, 200 * MiB},        // WARNING: pool 2 goes first
              {GiB, pools, false, 200 * MiB},             // EMERGENCY alike
              {low_mark, pools, true, 0},                 // the host is short of memory
              {low_mark, first_taken, false, 300 * MiB},  // pool 2 pinned: pool 1 is next
              {low_mark, none_evictable, false, 0},       // pinned, prefetched, critical
              {low_mark, default_only, false, 0},         // the default pool is never a victim
              {low_mark, std::span<pool_view const>{}, false, 0},
  };
  for (row const& r : rows) {
    EXPECT_EQ(pinned_reserve_bytes(alone(r.own, GiB, GiB), r.pools, {}, r.host_short), r.reserve)
      << r.own << " of 1 GiB, " << r.pools.size() << " pools, host short " << r.host_short;
  }
}

TEST(PolicyPages, PagesWithoutACopyFirstThenAddressOrderTruncated)
{
  // Unordered input: 2, 7, 9 need no copy; 1, 5 do.
  std::vector<page_view> const pages{{5, true}, {2, false}, {9, false}, {1, true}, {7, false}};
  struct row {
    std::size_t bytes;
    std::size_t page_size;
    std::vector<std::size_t> expected;
  };
  row const rows[] = {
    {0, page, {}},
    {1, page, {2}},
    {page, page, {2}},
    {page + 1, page, {2, 7}},
    {3 * page, page, {2, 7, 9}},
    {3 * page + 1, page, {2, 7, 9, 1}},
    {5 * page, page, {2, 7, 9, 1, 5}},
    {100 * page, page, {2, 7, 9, 1, 5}},
    {all, page, {2, 7, 9, 1, 5}},
    {all, 1, {2, 7, 9, 1, 5}},
    {all, 3 * MiB, {2, 7, 9, 1, 5}},
    {3, 0, {2, 7, 9}},  // a page size of 0 counts as 1 byte
  };
  for (row const& r : rows) {
    EXPECT_EQ(plan_pages(pages, r.bytes, r.page_size), r.expected)
      << r.bytes << " bytes, pages of " << r.page_size;
  }
  EXPECT_TRUE(plan_pages({}, all, page).empty());
  std::vector<page_view> const copies{{3, true}, {0, true}};
  EXPECT_EQ(plan_pages(copies, page, page), std::vector<std::size_t>{0});
}

}  // namespace
}  // namespace swapalloc
