// Tests of tools/scenarios/runner.hpp (suite RunnerTest): a step's record holds its
// outputs, the device's use and the limit, each watched pool's bytes and the events since
// the step before with the bytes they moved; records can be dropped for a soak while the
// peaks are kept; the recorder's totals and its forwarding sink; a failed step records
// nothing.
#include "scenario_fixture.hpp"

#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

namespace swapalloc::testing {
namespace {

int const runner_sim_memory_set = set_sim_memory(256 * MiB);

class RunnerTest : public ScenarioTest {
 protected:
  void SetUp() override
  {
    ScenarioTest::SetUp();
    ASSERT_EQ(runner_sim_memory_set, 0);
  }
};

TEST_F(RunnerTest, AStepRecordsItsOutputsTheDeviceThePoolsAndWhatMoved)
{
  auto const s = start(64 * MiB);
  auto const m = context(*s).make_model("m", pool_priority::normal, 8 * MiB, 4);
  s->run->watch(*m);
  scenarios::step_record const loaded = s->run->step("load", [&] { m->load(); });
  EXPECT_EQ(loaded.index, 0U);
  EXPECT_EQ(loaded.name, "load");
  EXPECT_TRUE(loaded.outputs.empty());
  EXPECT_EQ(loaded.limit_bytes, 64 * MiB);
  EXPECT_EQ(loaded.high_watermark, 0.85);
  EXPECT_EQ(loaded.low_watermark, 0.75);
  EXPECT_EQ(loaded.device_total_bytes, 256 * MiB);
  ASSERT_EQ(loaded.pools.size(), 1U);
  EXPECT_EQ(loaded.pools[0].name, "m");
  EXPECT_EQ(loaded.pools[0].resident_bytes, loaded.own_bytes);
  EXPECT_EQ(loaded.own_bytes, loaded.device_used_bytes);
  EXPECT_GE(loaded.own_bytes, m->footprint_bytes());
  EXPECT_LE(loaded.start_s, loaded.time_s);

  scenarios::step_record const moved =
    s->run->step("evict", [&] { (void)s->owner->evict(m->pool(), 0); });
  EXPECT_EQ(moved.index, 1U);
  EXPECT_EQ(moved.pools[0].resident_bytes, 0U);
  EXPECT_EQ(moved.pools[0].evicted_bytes, s->owner->stats(m->pool(), 0).evicted_bytes);
  EXPECT_GT(moved.evicted_bytes, 0U);
  EXPECT_EQ(moved.evicted_bytes, moved.pools[0].evicted_bytes);
  EXPECT_EQ(moved.moved_bytes(), moved.evicted_bytes);
  ASSERT_FALSE(moved.events.empty());
  EXPECT_GE(moved.events.front().time_s, loaded.time_s) << "one clock: the recorder's";

  scenarios::step_record const ran =
    s->run->step("infer", [&] { return std::vector<std::uint64_t>{m->infer(1)}; });
  EXPECT_EQ(ran.outputs.size(), 1U);
  EXPECT_EQ(ran.restored_bytes, moved.evicted_bytes);
  EXPECT_EQ(ran.pools[0].evicted_bytes, 0U);
  EXPECT_EQ(s->run->records().size(), 3U);
  EXPECT_EQ(s->run->peak_own_bytes(), loaded.own_bytes);
}

TEST_F(RunnerTest, WithoutRecordsTheCallbackSeesEveryStepAndThePeaksAreKept)
{
  auto const s = start(std::nullopt);
  std::vector<std::string> seen;
  std::mutex seen_mutex;
  scenarios::scenario_runner run(
    *s->owner, drv(), 0, s->events,
    [&](scenarios::step_record const& r) {
      std::lock_guard const lock(seen_mutex);
      seen.push_back(r.name);
    },
    /*keep_records=*/false);
  auto const m = context(*s).make_model("m", pool_priority::normal, 8 * MiB, 4);
  run.step("load", [&] { m->load(); });
  run.step("unload", [&] { m->unload(); });
  EXPECT_TRUE(run.records().empty());
  EXPECT_EQ(run.steps(), 2U);
  EXPECT_EQ(seen, (std::vector<std::string>{"load", "unload"}));
  EXPECT_GE(run.peak_own_bytes(), m->footprint_bytes());
  EXPECT_EQ(run.peak_step(), "load");
}

TEST_F(RunnerTest, AFailedStepRecordsNothing)
{
  auto const s = start(std::nullopt);
  EXPECT_THROW(s->run->step("fails", [] { throw std::runtime_error("no"); }), std::runtime_error);
  EXPECT_EQ(s->run->steps(), 0U);
}

TEST_F(RunnerTest, TheRecorderTotalsEachPoolsBytesAndForwardsOnlyFromItsLevel)
{
  scenarios::event_recorder recorder;
  std::vector<swap_event> forwarded;
  std::mutex forwarded_mutex;
  allocator_options o;
  o.read_environment = false;
  recorder.install(o, [&](swap_event const& event) {
    std::lock_guard const lock(forwarded_mutex);
    forwarded.push_back(event);
  });
  {
    allocator owner(drv(), o);
    scenarios::scenario_context made;
    made.owner   = &owner;
    made.drv     = &drv();
    made.filler  = scenario_bf16_weights();
    auto const m = made.make_model("m", pool_priority::normal, 8 * MiB, 4);
    m->load();
    evict_result const done              = owner.evict(m->pool(), 0);
    scenarios::event_totals const totals = recorder.totals(m->pool());
    EXPECT_EQ(totals.evicted_bytes, done.pages_copied * gran());
    EXPECT_EQ(totals.evict_events, 1U);
    EXPECT_EQ(recorder.count(event_kind::evict, m->pool()), 1U);
    EXPECT_EQ(recorder.take().size(), recorder.count(event_kind::evict) +
                                        recorder.count(event_kind::release_cached) +
                                        recorder.count(event_kind::level_change));
    EXPECT_TRUE(recorder.take().empty()) << "taken once";
    owner.pin_pool(m->pool());
    EXPECT_THROW((void)owner.evict(m->pool(), 0), usage_error);  // a refusal, at warn
    owner.unpin_pool(m->pool());
  }
  std::lock_guard const lock(forwarded_mutex);
  ASSERT_FALSE(forwarded.empty());
  for (swap_event const& event : forwarded) {
    EXPECT_TRUE(passes(event.level, log_level::warn)) << event_line(event);
  }
  EXPECT_EQ(forwarded.front().kind, event_kind::refusal);
}

}  // namespace
}  // namespace swapalloc::testing
