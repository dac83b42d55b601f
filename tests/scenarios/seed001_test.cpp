// Seed 001 (../shared/seeds/001): SDXL (7 GiB) → BiRefNet (0.9 GiB) → Flux inpaint
// (12 GiB) on a 22 GiB device, scaled down by `scale`, ten requests in a row. The device
// is emulated by a process limit (allocator_options::device_limit) on a simulated device of
// 32 GiB / scale, large enough for a reference run without the limit that never evicts:
// the seed's test 4 ("the same seed and parameters give the same result whatever
// auto_unload is") becomes "every output equals the reference run's".
#include "scenario_fixture.hpp"

#include <array>
#include <vector>

namespace swapalloc::testing {
namespace {

constexpr std::size_t scale          = 128;  // 22 GiB -> 176 MiB
constexpr std::size_t requests       = 10;
scenarios::seed001_sizes const sizes = scenarios::seed001_sizes::scaled_by(scale);
int const sim_memory_set             = set_sim_memory(scenarios::scaled(32 * GiB, scale));

using outputs = std::vector<scenarios::seed001_outputs>;

class Seed001Test : public ScenarioTest {
 protected:
  void SetUp() override
  {
    ScenarioTest::SetUp();
    ASSERT_EQ(sim_memory_set, 0);
    if (sim().available()) {  // on a GPU, the limit emulates the device
      ASSERT_EQ(drv().mem_get_info().total, scenarios::scaled(32 * GiB, scale))
        << "SWAPALLOC_SIM_MEMORY was set";
    }
  }

  /// The ten requests (ids 1 to 10) through `pipeline`.
  static outputs run_requests(scenario_run const& s, scenarios::seed001_pipeline& pipeline)
  {
    outputs out;
    for (std::uint64_t request = 1; request <= requests; ++request) {
      out.push_back(pipeline.run_request(*s.run, request));
    }
    return out;
  }

  /// The outputs of a run without the limit: nothing is ever evicted (checked).
  outputs reference_outputs()
  {
    auto const s = start(std::nullopt);
    scenarios::seed001_pipeline pipeline(context(*s), sizes);
    outputs out = run_requests(*s, pipeline);
    EXPECT_EQ(s->events.count(event_kind::evict), 0U) << "the reference run evicted";
    return out;
  }

  /// The three models, mutable.
  static std::vector<scenarios::model*> models_of(scenarios::seed001_pipeline& pipeline)
  {
    return {&pipeline.step_model(0), &pipeline.step_model(1), &pipeline.step_model(2)};
  }
};

TEST_F(Seed001Test, TenRequestsUnderThePolicyGiveTheOutputsOfARunThatNeverEvicts)
{
  outputs const reference = reference_outputs();
  auto const s            = start(sizes.device_bytes);
  scenarios::seed001_pipeline pipeline(context(*s), sizes);
  s->watch(pipeline.models());
  outputs const got = run_requests(*s, pipeline);
  EXPECT_EQ(got, reference) << "every step's output equals the run that never evicted";
  // Flux's load passes 85% of the limit with SDXL and BiRefNet resident (the seed's
  // out-of-memory at step 3); every request after the first restores what it uses.
  EXPECT_GT(s->events.totals(pipeline.step_model(0).pool()).evicted_bytes, 0U);
  std::vector<scenarios::step_record> const records = s->run->records();
  ASSERT_EQ(records.size(), 3 * requests);
  for (std::size_t request = 2; request <= requests; ++request) {
    std::size_t restored = 0;
    for (std::size_t step = 0; step < 3; ++step) {
      restored += records[(request - 1) * 3 + step].restored_bytes;
    }
    EXPECT_GT(restored, 0U) << "request " << request << " restored from the host store";
  }
  s->run->step("verify weights", [&] { expect_weights_intact(models_of(pipeline)); });
  expect_within_watermark(*s);
  expect_critical_never_evicted(*s, pipeline.models());
  EXPECT_GT(expect_accounted(*s, pipeline.models()), 0U);
}

TEST_F(Seed001Test, AutoUnloadGivesTheSameOutputsAsTheReference)
{
  outputs const reference = reference_outputs();
  auto const s            = start(sizes.device_bytes);
  scenarios::seed001_pipeline pipeline(context(*s), sizes, /*auto_unload=*/true);
  s->watch(pipeline.models());
  EXPECT_EQ(run_requests(*s, pipeline), reference) << "the seed's test 4";
  EXPECT_EQ(s->events.count(event_kind::evict), 0U) << "each step unloads its model";
  expect_within_watermark(*s);
}

TEST_F(Seed001Test, KeepingEveryModelWithoutThePolicyRunsOutOfMemoryAtStep3)
{
  // The seed's test 1: auto_unload=False with nothing evicting (automatic_eviction off)
  // fails when Flux loads, with the report's pool table and advice.
  auto const s =
    start(sizes.device_bytes, false, [](allocator_options& o) { o.automatic_eviction = false; });
  scenarios::seed001_pipeline pipeline(context(*s), sizes);
  s->watch(pipeline.models());
  try {
    (void)pipeline.run_request(*s->run, 1);
    FAIL() << "request 1 ran to its end without the policy";
  } catch (out_of_memory const& error) {
    std::string const message = error.what();
    EXPECT_NE(message.find("pool 'flux-inpaint'"), std::string::npos) << message;
    EXPECT_NE(message.find("sdxl"), std::string::npos) << message;
    EXPECT_NE(message.find("to make room: evict pools not in use now"), std::string::npos)
      << message;
  }
  EXPECT_EQ(s->run->steps(), 2U) << "steps 1 and 2 ran, step 3 failed";
  EXPECT_EQ(s->events.count(event_kind::out_of_memory), 1U);
  EXPECT_FALSE(pipeline.step_model(2).loaded());
  EXPECT_TRUE(pipeline.step_model(0).loaded());
}

}  // namespace
}  // namespace swapalloc::testing
