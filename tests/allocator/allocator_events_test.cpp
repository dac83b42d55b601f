// Tests of the allocator's event log (event_log.hpp, report.hpp, room_maker.hpp and the
// facade, allocator.hpp) on a 64 MiB simulated device: policy evictions, explicit
// evictions and restores, out-of-memory failures, refusals, pressure level changes and
// the leak report are recorded with their pool, device, bytes, duration and detail; the
// sink sees exactly the events at or above its level (allocator_options::log_level, else
// SWAPALLOC_LOG); stats_json shows the ring and each device's pressure; log_capacity
// bounds the ring.
#include "small_device_fixture.hpp"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

namespace swapalloc::testing {
namespace {

/// The events a sink was told of, in order. Outlives the allocator (shared with the sink).
class event_capture {
 public:
  void add(swap_event const& event)
  {
    std::lock_guard const lock(mutex_);
    events_.push_back(event);
  }
  [[nodiscard]] std::vector<swap_event> events() const
  {
    std::lock_guard const lock(mutex_);
    return events_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<swap_event> events_;
};

/// A sink that appends to `capture`.
[[nodiscard]] event_sink sink_into(std::shared_ptr<event_capture> const& capture)
{
  return [capture](swap_event const& event) { capture->add(event); };
}

/// The events of `events` of `kind`, about pool `pool` when given.
[[nodiscard]] std::vector<swap_event> of_kind(std::vector<swap_event> const& events,
                                              event_kind kind,
                                              std::optional<pool_id> pool = std::nullopt)
{
  std::vector<swap_event> out;
  std::copy_if(events.begin(), events.end(), std::back_inserter(out), [&](swap_event const& event) {
    return event.kind == kind && (!pool || event.pool == pool);
  });
  return out;
}

[[nodiscard]] std::size_t bytes_of(std::vector<swap_event> const& events)
{
  return std::accumulate(
    events.begin(), events.end(), std::size_t{0},
    [](std::size_t sum, swap_event const& event) { return sum + event.bytes; });
}

/// Whether `a` and `b` are the same recorded event (the sink's copy is stamped as stored).
[[nodiscard]] bool same_event(swap_event const& a, swap_event const& b)
{
  return a.kind == b.kind && a.level == b.level && a.time_s == b.time_s && a.pool == b.pool &&
         a.pool_name == b.pool_name && a.device == b.device && a.bytes == b.bytes &&
         a.duration_s == b.duration_s && a.detail == b.detail;
}

/// Expects `told` to be exactly the events of `stored` whose level passes `verbosity`.
void expect_sink_saw_exactly(std::vector<swap_event> const& stored,
                             std::vector<swap_event> const& told, log_level verbosity)
{
  std::vector<swap_event> passing;
  std::copy_if(stored.begin(), stored.end(), std::back_inserter(passing),
               [&](swap_event const& event) { return passes(event.level, verbosity); });
  ASSERT_EQ(told.size(), passing.size()) << "verbosity " << to_string(verbosity);
  for (std::size_t i = 0; i < told.size(); ++i) {
    EXPECT_TRUE(same_event(told[i], passing[i]))
      << "event " << i << ": the sink saw '" << event_line(told[i]) << "', the log stored '"
      << event_line(passing[i]) << "'";
  }
}

/// Sets an environment variable for its lifetime; unsets it after.
class scoped_env {
 public:
  scoped_env(char const* name, char const* value) : name_(name) { ::setenv(name, value, 1); }
  scoped_env(scoped_env const&)            = delete;
  scoped_env& operator=(scoped_env const&) = delete;
  ~scoped_env() { ::unsetenv(name_); }

 private:
  char const* name_;
};

class EventsTest : public SmallDeviceTest {
 protected:
  [[nodiscard]] allocator_options options() const override
  {
    allocator_options o = SmallDeviceTest::options();
    o.read_environment  = false;  // the defaults: 0.85 and 0.75 of the device
    o.log_level         = verbosity();
    o.log_capacity      = log_capacity();
    o.log_sink          = sink_into(capture_);
    return o;
  }
  /// The sink's level; info sees every event the allocator records.
  [[nodiscard]] virtual log_level verbosity() const { return log_level::info; }
  /// The ring's capacity; 0: the default.
  [[nodiscard]] virtual std::size_t log_capacity() const { return 0; }

  [[nodiscard]] std::vector<swap_event> told() const { return capture_->events(); }

  std::shared_ptr<event_capture> capture_ = std::make_shared<event_capture>();
};

/// The same allocator, its sink at warn.
class WarnEventsTest : public EventsTest {
 protected:
  [[nodiscard]] log_level verbosity() const override { return log_level::warn; }
};

/// The same allocator, its ring 4 events long.
class SmallLogEventsTest : public EventsTest {
 protected:
  [[nodiscard]] std::size_t log_capacity() const override { return 4; }
};

TEST_F(EventsTest, APolicyEvictionAndTheLevelChangesAreRecordedAndAllReachAnInfoSink)
{
  pool_id const a = make_pool("a");
  pool_id const b = make_pool("b");
  pool_id const c = make_pool("c");
  std::vector<filled_block> const blocks{use(a, 14 * MiB, 1), use(b, 14 * MiB, 2),
                                         use(c, 14 * MiB, 3)};
  EXPECT_TRUE(alloc().events().empty()) << "42 of 64 MiB: nothing to record";
  // 56 MiB would pass 0.85 × 64 = 54.4 MiB: the policy evicts 8 MiB of a, the coldest.
  pool_id const d           = make_pool("d");
  filled_block const in_d   = use(d, 14 * MiB, 4);
  std::size_t const evicted = alloc().stats(a, 0).evicted_bytes;
  ASSERT_EQ(evicted, 8 * MiB);
  std::vector<swap_event> const evictions = of_kind(alloc().events(), event_kind::evict);
  ASSERT_EQ(evictions.size(), 1U);
  swap_event const& out = evictions[0];
  EXPECT_EQ(out.pool, std::optional<pool_id>(a));
  EXPECT_EQ(out.pool_name, "a");
  EXPECT_EQ(out.device, 0);
  EXPECT_EQ(out.bytes, evicted) << "the event's bytes are those stats() reports evicted";
  EXPECT_GT(out.duration_s, 0.0);
  EXPECT_EQ(out.detail, "policy: map: 8.00 MiB over the link");
  EXPECT_EQ(out.level, log_level::info);
  // d's map took the device from 34 to 48 MiB, 0.75 of it: WARNING, noted after the map.
  std::vector<swap_event> const first = of_kind(alloc().events(), event_kind::level_change);
  ASSERT_EQ(first.size(), 1U);
  EXPECT_EQ(first[0].detail, "SAFE -> WARNING (0.75 of the limit in use)");
  EXPECT_EQ(first[0].level, log_level::info);
  EXPECT_EQ(first[0].bytes, 48 * MiB);
  EXPECT_EQ(first[0].pool, std::nullopt) << "device-wide";
  EXPECT_EQ(first[0].device, 0);
  // Restoring a makes room first: 8 MiB of b go (40 MiB, SAFE); a's 8 MiB come back
  // (48 MiB, WARNING again).
  {
    activation const active(alloc(), a, 0, nullptr);
    expect_intact({blocks[0]}, "a after its eviction");
  }
  std::vector<swap_event> const changes = of_kind(alloc().events(), event_kind::level_change);
  ASSERT_EQ(changes.size(), 3U);
  EXPECT_EQ(changes[1].detail, "WARNING -> SAFE (0.625 of the limit in use)");
  EXPECT_EQ(changes[1].bytes, 40 * MiB);
  EXPECT_EQ(changes[2].detail, "SAFE -> WARNING (0.75 of the limit in use)");
  EXPECT_EQ(changes[2].bytes, 48 * MiB);
  std::vector<swap_event> const of_b = of_kind(alloc().events(), event_kind::evict, b);
  ASSERT_EQ(of_b.size(), 1U);
  EXPECT_EQ(of_b[0].bytes, alloc().stats(b, 0).evicted_bytes);
  EXPECT_EQ(of_b[0].detail, "policy: map: 8.00 MiB over the link");
  std::vector<swap_event> const restored = of_kind(alloc().events(), event_kind::restore, a);
  ASSERT_EQ(restored.size(), 1U);
  EXPECT_EQ(restored[0].bytes, 8 * MiB);
  expect_sink_saw_exactly(alloc().events(), told(), log_level::info);
  EXPECT_EQ(told().size(), alloc().events().size()) << "info: the sink sees every event";
  touch(b);
  free_blocks(blocks);
  free_blocks({in_d});
}

TEST_F(WarnEventsTest, AWarnSinkSeesOnlyWarnAndErrorEventsAndTheMoveToCritical)
{
  // Info events first: an explicit eviction and its restore.
  pool_id const x         = make_pool("x");
  filled_block const in_x = use(x, 4 * MiB, 5);
  (void)alloc().evict(x, 0);
  touch(x);
  alloc().deallocate(in_x.ptr, in_x.bytes, 0, nullptr);
  (void)alloc().empty_cache();
  // Then 60 of 64 MiB that nothing may evict: a critical pool, an active one and a
  // pinned one.
  pool_options critical;
  critical.priority            = pool_priority::critical;
  pool_id const weight         = alloc().create_pool("backbone", critical);
  pool_id const head           = make_pool("head");
  pool_id const other          = make_pool("other");
  filled_block const in_weight = use(weight, 20 * MiB, 6);
  std::optional<activation> busy(std::in_place, alloc(), head, 0, nullptr);
  filled_block const in_head  = fill_new(head, 20 * MiB, 7);
  filled_block const in_other = fill_new(other, 20 * MiB, 8);
  EXPECT_EQ(alloc().pressure(0), pressure_level::critical);
  alloc().pin_pool(other);  // else ensure_free would evict it
  EXPECT_THROW((void)alloc().ensure_free(8 * MiB, 0), out_of_memory);
  std::vector<swap_event> const stored  = alloc().events();
  std::vector<swap_event> const changes = of_kind(stored, event_kind::level_change);
  ASSERT_FALSE(changes.empty());
  EXPECT_EQ(changes.back().detail, "SAFE -> CRITICAL (0.9375 of the limit in use)");
  EXPECT_EQ(changes.back().level, log_level::warn) << "a move to CRITICAL matters at warn";
  EXPECT_EQ(changes.back().bytes, 60 * MiB);
  std::vector<swap_event> const failures = of_kind(stored, event_kind::out_of_memory);
  ASSERT_EQ(failures.size(), 1U);
  EXPECT_EQ(failures[0].level, log_level::error);
  EXPECT_EQ(failures[0].bytes, 8 * MiB);
  EXPECT_EQ(failures[0].detail.rfind("ensure_free(8.00 MiB): ", 0), 0U) << failures[0].detail;
  ASSERT_EQ(of_kind(stored, event_kind::evict, x).size(), 1U) << "the info events are stored";
  ASSERT_EQ(of_kind(stored, event_kind::restore, x).size(), 1U);
  std::vector<swap_event> const seen = told();
  expect_sink_saw_exactly(stored, seen, log_level::warn);
  EXPECT_TRUE(std::none_of(seen.begin(), seen.end(),
                           [](swap_event const& event) { return event.level == log_level::info; }));
  EXPECT_FALSE(of_kind(seen, event_kind::level_change).empty());
  EXPECT_EQ(of_kind(seen, event_kind::out_of_memory).size(), 1U);
  busy.reset();
  alloc().unpin_pool(other);
  free_blocks({in_weight, in_head, in_other});
}

TEST_F(EventsTest, ExplicitEvictionsAndRestoresAccountForEveryByteMoved)
{
  pool_id const a = make_pool("a");
  std::vector<filled_block> const blocks{use(a, 8 * MiB, 9), use(a, 4 * MiB, 10)};
  std::size_t const mapped = alloc().stats(a, 0).reserved_bytes;
  ASSERT_EQ(mapped, 12 * MiB) << "six pages, every one live";
  evict_result const all = alloc().evict(a, 0);
  EXPECT_EQ(all.released_bytes, mapped);
  EXPECT_EQ(alloc().stats(a, 0).evicted_bytes, mapped);
  touch(a);
  EXPECT_EQ(alloc().stats(a, 0).evicted_bytes, 0U);
  // A partial eviction: page by page until at least 4 MiB.
  evict_result const part      = alloc().evict(a, 0, 4 * MiB);
  std::size_t const part_bytes = alloc().stats(a, 0).evicted_bytes;
  EXPECT_EQ(part.released_bytes, part_bytes);
  EXPECT_GE(part_bytes, 4 * MiB);
  EXPECT_LT(part_bytes, mapped);
  touch(a);
  std::vector<swap_event> const stored   = alloc().events();
  std::vector<swap_event> const evicts   = of_kind(stored, event_kind::evict);
  std::vector<swap_event> const restores = of_kind(stored, event_kind::restore);
  ASSERT_EQ(evicts.size(), 2U);
  ASSERT_EQ(restores.size(), 2U);
  EXPECT_EQ(evicts[0].bytes, mapped);
  EXPECT_EQ(evicts[1].bytes, part_bytes);
  EXPECT_EQ(restores[0].bytes, mapped);
  EXPECT_EQ(restores[1].bytes, part_bytes);
  EXPECT_EQ(bytes_of(evicts), bytes_of(restores)) << "every byte evicted came back";
  EXPECT_EQ(bytes_of(evicts), mapped + part_bytes);
  for (swap_event const& event : evicts) {
    EXPECT_EQ(event.pool, std::optional<pool_id>(a));
    EXPECT_EQ(event.device, 0);
    EXPECT_GT(event.duration_s, 0.0);
    EXPECT_EQ(event.detail.rfind("explicit: ", 0), 0U) << event.detail;
  }
  for (swap_event const& event : restores) {
    EXPECT_EQ(event.pool, std::optional<pool_id>(a));
    EXPECT_GT(event.duration_s, 0.0);
    EXPECT_GT(event.throughput(), 0.0);
  }
  EXPECT_EQ(restores[0].detail.rfind("6 pages, ", 0), 0U) << restores[0].detail;
  expect_intact(blocks, "a after two evictions");
  expect_sink_saw_exactly(stored, told(), log_level::info);
  free_blocks(blocks);
}

TEST_F(EventsTest, PagesWithoutDataAreAReleaseNotAnEviction)
{
  // 8 MiB live and 4 MiB freed (cached) in a: evicting a copies the 8 MiB out and only
  // gives the 4 MiB back. The evict event says 8 MiB (what the restore brings back), a
  // release_cached event the other 4.
  pool_id const a         = make_pool("a");
  filled_block const live = use(a, 8 * MiB, 11);
  {
    filled_block const gone = use(a, 4 * MiB, 12);
    alloc().deallocate(gone.ptr, gone.bytes, 0, nullptr);
  }
  ASSERT_EQ(alloc().stats(a, 0).reserved_bytes, 12 * MiB);
  evict_result const done = alloc().evict(a, 0);
  EXPECT_EQ(done.released_bytes, 12 * MiB);
  EXPECT_EQ(done.pages_released, 2U);
  touch(a);
  std::vector<swap_event> const stored = alloc().events();
  std::vector<swap_event> const evicts = of_kind(stored, event_kind::evict, a);
  std::vector<swap_event> const frees  = of_kind(stored, event_kind::release_cached, a);
  std::vector<swap_event> const backs  = of_kind(stored, event_kind::restore, a);
  ASSERT_EQ(evicts.size(), 1U);
  ASSERT_EQ(frees.size(), 1U);
  ASSERT_EQ(backs.size(), 1U);
  EXPECT_EQ(evicts[0].bytes, 8 * MiB);
  EXPECT_EQ(frees[0].bytes, 4 * MiB);
  EXPECT_EQ(frees[0].detail, "explicit: pages without data");
  EXPECT_EQ(backs[0].bytes, evicts[0].bytes) << "the log adds up";
  expect_intact({live}, "a after its eviction");
  free_blocks({live});
}

TEST_F(EventsTest, AnOutOfMemoryIsRecordedAtErrorBeforeItIsThrown)
{
  pool_id const big          = make_pool("big");
  std::size_t const too_much = 100 * MiB;
  std::string report;
  std::size_t told_at_throw = 0;
  {
    pool_scope const scope(alloc(), big);
    try {
      (void)alloc().allocate(too_much, 0, nullptr);
      ADD_FAILURE() << "100 MiB fit on a 64 MiB device";
    } catch (out_of_memory const& error) {
      report        = error.what();
      told_at_throw = of_kind(told(), event_kind::out_of_memory).size();
      EXPECT_EQ(error.requested_bytes(), too_much);
    }
  }
  EXPECT_EQ(told_at_throw, 1U) << "the sink had the event when the exception arrived";
  std::vector<swap_event> const failures = of_kind(alloc().events(), event_kind::out_of_memory);
  ASSERT_EQ(failures.size(), 1U);
  swap_event const& failure = failures[0];
  EXPECT_EQ(failure.level, log_level::error);
  EXPECT_EQ(failure.pool, std::optional<pool_id>(big));
  EXPECT_EQ(failure.pool_name, "big");
  EXPECT_EQ(failure.device, 0);
  EXPECT_EQ(failure.bytes, too_much);
  std::string const request = "allocating 100.00 MiB (104857600 bytes) in pool 'big'";
  EXPECT_EQ(failure.detail.rfind(request + ": ", 0), 0U) << failure.detail;
  EXPECT_NE(report.find(request + "; "), std::string::npos) << report;
  // The detail is the report's first sentence: request, then why.
  std::string const why = failure.detail.substr(request.size() + 2);
  EXPECT_NE(report.find(why), std::string::npos) << report;
  EXPECT_TRUE(same_event(of_kind(told(), event_kind::out_of_memory).at(0), failure));
}

TEST_F(EventsTest, AnExplicitEvictOfACriticalPinnedOrActivePoolIsARecordedRefusal)
{
  pool_options critical;
  critical.priority    = pool_priority::critical;
  pool_id const weight = alloc().create_pool("backbone", critical);
  pool_id const pinned = make_pool("pinned");
  pool_id const active = make_pool("active");
  std::vector<filled_block> const blocks{use(weight, 4 * MiB, 11), use(pinned, 4 * MiB, 12)};
  alloc().pin_pool(pinned);
  EXPECT_THROW((void)alloc().evict(weight, 0), usage_error);
  EXPECT_THROW((void)alloc().evict(pinned, 0), usage_error);
  filled_block in_active;
  {
    activation const busy(alloc(), active, 0, nullptr);
    in_active = fill_new(active, 4 * MiB, 13);
    EXPECT_THROW((void)alloc().evict(active, 0), usage_error);
  }
  std::vector<swap_event> const refusals = of_kind(alloc().events(), event_kind::refusal);
  ASSERT_EQ(refusals.size(), 3U);
  EXPECT_EQ(refusals[0].pool, std::optional<pool_id>(weight));
  EXPECT_EQ(refusals[0].pool_name, "backbone");
  EXPECT_EQ(refusals[0].detail, "evict refused: its priority is critical");
  EXPECT_EQ(refusals[1].pool, std::optional<pool_id>(pinned));
  EXPECT_EQ(refusals[1].detail, "evict refused: it is pinned or active (1 pins: it is in use)");
  EXPECT_EQ(refusals[2].pool, std::optional<pool_id>(active));
  EXPECT_EQ(refusals[2].detail, "evict refused: it is pinned or active (1 pins: it is in use)");
  for (swap_event const& refusal : refusals) {
    EXPECT_EQ(refusal.level, log_level::warn);
    EXPECT_EQ(refusal.device, 0);
    EXPECT_EQ(refusal.bytes, 0U);
  }
  EXPECT_TRUE(of_kind(alloc().events(), event_kind::evict).empty()) << "nothing was evicted";
  EXPECT_EQ(alloc().stats(weight, 0).evicted_bytes, 0U);
  EXPECT_EQ(alloc().stats(pinned, 0).evicted_bytes, 0U);
  EXPECT_EQ(alloc().usage_errors(usage_error_kind::not_evictable), 3U);
  expect_sink_saw_exactly(alloc().events(), told(), log_level::info);
  alloc().unpin_pool(pinned);
  free_blocks(blocks);
  free_blocks({in_active});
}

TEST_F(EventsTest, AnAllocatorDestroyedWithLiveBlocksReportsOneLeakPerPool)
{
  pool_id const a         = make_pool("a");
  pool_id const b         = make_pool("b");
  filled_block const gone = use(a, 2 * MiB, 14);
  std::vector<filled_block> const in_a{use(a, 3 * MiB, 15), use(a, MiB, 16), use(a, 512, 17)};
  filled_block const in_b = use(b, 5 * MiB, 18);
  alloc().deallocate(gone.ptr, gone.bytes, 0, nullptr);  // freed: no leak
  EXPECT_TRUE(of_kind(told(), event_kind::leak).empty());
  alloc_.reset();  // the sink's capture outlives it
  std::vector<swap_event> const leaks = of_kind(told(), event_kind::leak);
  ASSERT_EQ(leaks.size(), 2U);
  auto const of_pool = [&](pool_id id) {
    return std::find_if(leaks.begin(), leaks.end(),
                        [&](swap_event const& leak) { return leak.pool == id; });
  };
  auto const leak_a = of_pool(a);
  auto const leak_b = of_pool(b);
  ASSERT_NE(leak_a, leaks.end());
  ASSERT_NE(leak_b, leaks.end());
  EXPECT_EQ(leak_a->bytes, 3 * MiB + MiB + 512) << "the requested bytes still live";
  EXPECT_EQ(leak_a->pool_name, "a");
  EXPECT_EQ(leak_a->detail,
            "allocator destroyed with 3 live blocks (largest 3.00 MiB, 1.00 MiB, "
            "512 B)");
  EXPECT_EQ(leak_b->bytes, 5 * MiB);
  EXPECT_EQ(leak_b->detail, "allocator destroyed with 1 live block (largest 5.00 MiB)");
  for (swap_event const& leak : leaks) {
    EXPECT_EQ(leak.level, log_level::warn);
    EXPECT_EQ(leak.device, 0);
  }
}

TEST_F(EventsTest, DestroyPoolWithALiveBlockNamesItAndTheSize)
{
  pool_id const c         = make_pool("c");
  filled_block const in_c = use(c, 3 * MiB, 19);
  try {
    alloc().destroy_pool(c);
    ADD_FAILURE() << "a pool with a live block was destroyed";
  } catch (usage_error const& error) {
    std::string const message = error.what();
    EXPECT_EQ(error.kind(), usage_error_kind::bad_pool);
    EXPECT_NE(message.find("destroy_pool('c')"), std::string::npos) << message;
    EXPECT_NE(message.find("1 live block, 3.00 MiB"), std::string::npos) << message;
    EXPECT_NE(message.find("(largest 3.00 MiB)"), std::string::npos) << message;
  }
  EXPECT_EQ(alloc().find_pool("c"), c) << "nothing was destroyed";
  expect_intact({in_c}, "c after the refusal");
  alloc().deallocate(in_c.ptr, in_c.bytes, 0, nullptr);
  alloc().destroy_pool(c);
  EXPECT_THROW((void)alloc().find_pool("c"), usage_error);
}

TEST_F(EventsTest, StatsJsonShowsTheRingAndEachUsedDevicesPressure)
{
  pool_id const a         = make_pool("a");
  filled_block const in_a = use(a, 50 * MiB, 20);  // 50 of 64 MiB: WARNING
  (void)alloc().evict(a, 0, 2 * MiB);
  touch(a);
  nlohmann::json const stats           = alloc().stats_json();
  std::vector<swap_event> const stored = alloc().events();
  ASSERT_FALSE(stored.empty());
  ASSERT_TRUE(stats.contains("events"));
  nlohmann::json const& events = stats["events"];
  EXPECT_EQ(events["capacity"].get<std::size_t>(), default_log_capacity);
  EXPECT_EQ(events["recorded"].get<std::size_t>(), stored.size());
  EXPECT_EQ(events["dropped"].get<std::size_t>(), 0U);
  ASSERT_TRUE(events["events"].is_array());
  ASSERT_EQ(events["events"].size(), stored.size());
  nlohmann::json const& last = events["events"].back();
  EXPECT_EQ(last["kind"], to_string(stored.back().kind));
  EXPECT_EQ(last["level"], to_string(stored.back().level));
  EXPECT_EQ(last["time_s"].get<double>(), stored.back().time_s);
  EXPECT_EQ(last["pool"].get<pool_id>(), a);
  EXPECT_EQ(last["pool_name"], "a");
  EXPECT_EQ(last["device"].get<int>(), 0);
  EXPECT_EQ(last["bytes"].get<std::size_t>(), stored.back().bytes);
  EXPECT_EQ(last["detail"], stored.back().detail);
  EXPECT_EQ(last["kind"], "restore") << "the last thing done: a's restore";
  ASSERT_EQ(stats["devices"].size(), static_cast<std::size_t>(alloc().device_count()));
  nlohmann::json const& device = stats["devices"][0];
  EXPECT_EQ(device["device"].get<int>(), 0);
  ASSERT_TRUE(device.contains("pressure")) << device.dump();
  nlohmann::json const& pressure = device["pressure"];
  EXPECT_EQ(pressure["level"], to_string(alloc().pressure(0)));
  EXPECT_EQ(pressure["level"], "WARNING");
  double const fraction = pressure["use_fraction"].get<double>();
  EXPECT_GE(fraction, 0.0);
  EXPECT_LE(fraction, 1.0);
  EXPECT_DOUBLE_EQ(fraction, 50.0 / 64.0);
  EXPECT_EQ(pressure["own_bytes"].get<std::size_t>(), 50 * MiB);
  EXPECT_EQ(pressure["limit_bytes"].get<std::size_t>(), small_device_bytes);
  EXPECT_DOUBLE_EQ(pressure["high_watermark"].get<double>(), 0.85);
  EXPECT_DOUBLE_EQ(pressure["low_watermark"].get<double>(), 0.75);
  alloc().deallocate(in_a.ptr, in_a.bytes, 0, nullptr);
}

TEST_F(SmallLogEventsTest, LogCapacityBoundsTheRingAndCountsWhatWasDropped)
{
  pool_id const a         = make_pool("a");
  filled_block const in_a = use(a, 2 * MiB, 21);
  for (int round = 0; round < 3; ++round) {
    (void)alloc().evict(a, 0);
    touch(a);
  }
  std::vector<swap_event> const seen   = told();
  std::vector<swap_event> const stored = alloc().events();
  ASSERT_GE(seen.size(), 6U) << "three evictions and three restores";
  ASSERT_EQ(stored.size(), 4U);
  for (std::size_t i = 0; i < stored.size(); ++i) {
    EXPECT_TRUE(same_event(stored[i], seen[seen.size() - stored.size() + i]))
      << "the ring keeps the last four, oldest first: " << i;
  }
  nlohmann::json const events = alloc().stats_json()["events"];
  EXPECT_EQ(events["capacity"].get<std::size_t>(), 4U);
  EXPECT_EQ(events["recorded"].get<std::size_t>(), seen.size());
  EXPECT_EQ(events["dropped"].get<std::size_t>(), seen.size() - 4);
  EXPECT_GT(events["dropped"].get<std::size_t>(), 0U);
  EXPECT_EQ(events["events"].size(), 4U);
  expect_intact({in_a}, "a after three evictions");
  alloc().deallocate(in_a.ptr, in_a.bytes, 0, nullptr);
}

/// Options read from the environment, into `capture`, the level left to SWAPALLOC_LOG.
/// `emulated`: the 64 MiB device is emulated with a limit (small_device_fixture.hpp).
[[nodiscard]] allocator_options environment_options(std::shared_ptr<event_capture> const& capture,
                                                    bool emulated)
{
  allocator_options o;
  o.workers          = 2;
  o.read_environment = true;
  o.log_sink         = sink_into(capture);
  if (emulated) { o.device_limit = device_limit{small_device_bytes, 1.0}; }
  return o;
}

/// An explicit eviction and its restore (info), a refused eviction (warn) and an
/// out-of-memory failure (error) on `subject`.
void record_each_level(allocator& subject, driver const& drv)
{
  pool_id const a     = subject.create_pool("a");
  pool_id const fixed = subject.create_pool("fixed");
  CUdeviceptr in_a    = 0;
  CUdeviceptr pinned  = 0;
  {
    pool_scope const scope(subject, a);
    in_a = subject.allocate(4 * MiB, 0, nullptr);
  }
  {
    pool_scope const scope(subject, fixed);
    pinned = subject.allocate(2 * MiB, 0, nullptr);
  }
  drv.memset_d32_async(in_a, 7, MiB, nullptr);
  (void)subject.evict(a, 0);
  {
    activation const active(subject, a, 0, nullptr);
  }
  subject.pin_pool(fixed);
  EXPECT_THROW((void)subject.evict(fixed, 0), usage_error);
  {
    pool_scope const scope(subject, a);
    EXPECT_THROW((void)subject.allocate(100 * MiB, 0, nullptr), out_of_memory);
  }
  subject.unpin_pool(fixed);
  subject.deallocate(in_a, 4 * MiB, 0, nullptr);
  subject.deallocate(pinned, 2 * MiB, 0, nullptr);
}

TEST_F(EventsTest, SwapallocLogErrorLetsOnlyErrorEventsReachTheSink)
{
  auto const capture = std::make_shared<event_capture>();
  std::vector<swap_event> stored;
  {
    scoped_env const level("SWAPALLOC_LOG", "error");
    allocator subject(drv(), environment_options(capture, emulated()));
    record_each_level(subject, drv());
    stored = subject.events();
  }
  ASSERT_EQ(of_kind(stored, event_kind::evict).size(), 1U) << "info: stored";
  ASSERT_EQ(of_kind(stored, event_kind::refusal).size(), 1U) << "warn: stored";
  ASSERT_EQ(of_kind(stored, event_kind::out_of_memory).size(), 1U) << "error: stored";
  std::vector<swap_event> const seen = capture->events();
  ASSERT_EQ(seen.size(), 1U) << "only the out-of-memory failure reaches the sink";
  EXPECT_EQ(seen[0].kind, event_kind::out_of_memory);
  expect_sink_saw_exactly(stored, seen, log_level::error);
  EXPECT_EQ(std::getenv("SWAPALLOC_LOG"), nullptr) << "unset after";
}

TEST_F(EventsTest, AnExplicitLogLevelWinsOverSwapallocLog)
{
  auto const capture = std::make_shared<event_capture>();
  std::vector<swap_event> stored;
  {
    scoped_env const level("SWAPALLOC_LOG", "error");
    allocator_options o = environment_options(capture, emulated());
    o.log_level         = log_level::info;
    allocator subject(drv(), o);
    record_each_level(subject, drv());
    stored = subject.events();
  }
  EXPECT_EQ(capture->events().size(), stored.size()) << "info: the sink sees every event";
  expect_sink_saw_exactly(stored, capture->events(), log_level::info);
}

TEST_F(EventsTest, AnInvalidSwapallocLogIsAConfigErrorNamingIt)
{
  scoped_env const level("SWAPALLOC_LOG", "verbose");
  try {
    allocator const rejected(drv(),
                             environment_options(std::make_shared<event_capture>(), emulated()));
    ADD_FAILURE() << "SWAPALLOC_LOG=verbose accepted";
  } catch (config_error const& error) {
    std::string const message = error.what();
    EXPECT_EQ(error.setting(), "SWAPALLOC_LOG");
    EXPECT_NE(message.find("SWAPALLOC_LOG"), std::string::npos) << message;
    EXPECT_NE(message.find("verbose"), std::string::npos) << message;
  }
  allocator_options ignored = environment_options(std::make_shared<event_capture>(), emulated());
  ignored.read_environment  = false;
  EXPECT_NO_THROW(allocator const fine(drv(), ignored)) << "the environment was not read";
}

}  // namespace
}  // namespace swapalloc::testing
