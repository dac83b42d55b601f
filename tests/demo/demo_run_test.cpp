// Tests of tools/demo/demo_run.hpp (suite DemoRun): seed 001 at 1/512 of its size (a 44 MiB
// limit on a 256 MiB simulated device), two requests per mode, generated weights in model
// files: keep runs out of memory at step 3 of request 1 with the report's pool table;
// auto_unload and swapalloc give the same outputs, auto_unload reading every model at every
// step, swapalloc restoring from the host store in request 2 and staying under the high
// watermark; the timelines hold ticks, step samples and marks.
#include "demo_run.hpp"
#include "scenario_fixture.hpp"
#include "temp_files.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace swapalloc::testing {
namespace {

using demo::demo_mode;
using demo::mode_result;

constexpr std::size_t scale       = 512;
constexpr std::size_t requests    = 2;
int const demo_run_sim_memory_set = set_sim_memory(256 * MiB);

class DemoRunTest : public ScenarioTest {
 protected:
  void SetUp() override
  {
    ScenarioTest::SetUp();
    ASSERT_EQ(demo_run_sim_memory_set, 0);
    setup_.drv                = &drv();
    setup_.sizes              = scenarios::seed001_sizes::scaled_by(scale);
    setup_.requests           = requests;
    setup_.device_total_bytes = drv().mem_get_info().total;
    setup_.files              = &files_;
    // The files are prepared by a pipeline on a throwaway allocator, as the demo does.
    allocator scratch(drv());
    scenarios::scenario_context context;
    context.owner  = &scratch;
    context.drv    = &drv();
    context.filler = files_.filler();
    scenarios::seed001_pipeline pipeline(context, setup_.sizes);
    for (scenarios::model const* m : pipeline.models()) {
      (void)files_.prepare(*m);
    }
  }

  /// How many of `r`'s marks are of `kind`.
  static std::size_t marks_of_kind(mode_result const& r, std::string const& kind)
  {
    return static_cast<std::size_t>(
      std::count_if(r.timeline.marks.begin(), r.timeline.marks.end(),
                    [&](demo::timeline_mark const& m) { return m.kind == kind; }));
  }

  scenarios::testing::temp_dir const dir_;
  demo::model_file_store files_{dir_.path(), scenarios::weight_source::generated(7)};
  demo::demo_setup setup_;
};

TEST_F(DemoRunTest, KeepRunsOutOfMemoryAtStep3OfRequest1WithThePoolTable)
{
  std::size_t steps   = 0;
  mode_result const r = demo::run_mode(demo_mode::keep, setup_, [&](demo::step_view const& v) {
    ++steps;
    EXPECT_EQ(v.request, 1U);
    EXPECT_EQ(v.step, steps);
    EXPECT_EQ(v.requests, requests);
  });
  EXPECT_FALSE(r.completed);
  EXPECT_TRUE(r.out_of_memory);
  EXPECT_EQ(r.failed_request, 1U);
  EXPECT_EQ(r.failed_step, 3U);
  EXPECT_EQ(r.failed_model, "flux-inpaint");
  EXPECT_EQ(steps, 2U);
  EXPECT_EQ(r.outputs.size(), 2U) << "steps 1 and 2 gave outputs";
  EXPECT_NE(r.failure.find("pool 'flux-inpaint'"), std::string::npos) << r.failure;
  EXPECT_NE(r.failure.find("to make room"), std::string::npos) << r.failure;
  EXPECT_EQ(r.evicted_bytes, 0U) << "no policy, no eviction";
  EXPECT_EQ(marks_of_kind(r, "out_of_memory"), 1U);
  EXPECT_EQ(r.timeline.mode, "keep");
  EXPECT_FALSE(r.timeline.completed);
}

TEST_F(DemoRunTest, SwapallocGivesAutoUnloadsOutputsRestoringFromTheHostStore)
{
  mode_result const unloading = demo::run_mode(demo_mode::auto_unload, setup_);
  mode_result const swapping  = demo::run_mode(demo_mode::swapalloc, setup_);
  ASSERT_TRUE(unloading.completed) << unloading.failure;
  ASSERT_TRUE(swapping.completed) << swapping.failure;
  EXPECT_EQ(unloading.outputs.size(), 3 * requests);
  EXPECT_EQ(swapping.outputs, unloading.outputs) << "the seed's test 4";
  EXPECT_EQ(unloading.disk.loads, 3 * requests) << "every step reads its model";
  EXPECT_EQ(unloading.evicted_bytes, 0U);
  EXPECT_EQ(swapping.disk.loads, 3U) << "each model read once";
  EXPECT_GT(swapping.evicted_bytes, 0U);
  EXPECT_EQ(swapping.repeated_restoring, requests - 1) << "request 2 restored from the host";
  ASSERT_TRUE(swapping.weights_intact.has_value());
  EXPECT_TRUE(*swapping.weights_intact);
  EXPECT_EQ(swapping.request_seconds.size(), requests);
  EXPECT_GT(swapping.host_bytes, 0U);
  EXPECT_GT(swapping.compression_ratio(), 1.0) << "bf16 weights compress";
  std::size_t const bound =
    static_cast<std::size_t>(0.85 * static_cast<double>(swapping.limit_bytes)) + gran();
  EXPECT_LE(swapping.peak_bytes, bound) << "sampled peak past the high watermark";
  EXPECT_GT(swapping.peak_bytes, 0U);
}

TEST_F(DemoRunTest, TimelinesHoldTicksStepSamplesAndMarks)
{
  setup_.sample_period         = std::chrono::milliseconds(1);
  mode_result const r          = demo::run_mode(demo_mode::swapalloc, setup_);
  demo::mode_timeline const& t = r.timeline;
  EXPECT_EQ(t.pools, (std::vector<std::string>{"sdxl", "birefnet", "flux-inpaint"}));
  EXPECT_EQ(t.limit_bytes, setup_.sizes.device_bytes);
  EXPECT_DOUBLE_EQ(t.high_watermark, 0.85);
  EXPECT_DOUBLE_EQ(t.low_watermark, 0.75);
  EXPECT_EQ(t.steps.size(), 3 * requests + 1) << "and 'verify weights'";
  std::size_t ticks = 0;
  std::size_t after = 0;
  for (std::size_t i = 0; i < t.samples.size(); ++i) {
    (t.samples[i].after_step ? after : ticks) += 1;
    EXPECT_EQ(t.samples[i].pools.size(), 3U);
    if (i > 0) { EXPECT_LE(t.samples[i - 1].time_s, t.samples[i].time_s) << "sorted"; }
  }
  EXPECT_EQ(after, t.steps.size());
  EXPECT_GT(ticks, 0U) << "the sampler ran";
  EXPECT_TRUE(r.sampler_error.empty()) << r.sampler_error;
  EXPECT_GT(marks_of_kind(r, "evict"), 0U);
  EXPECT_GT(marks_of_kind(r, "restore"), 0U);
  EXPECT_EQ(marks_of_kind(r, "load"), 3U);
  EXPECT_GE(t.samples.front().time_s, 0.0);
}

}  // namespace
}  // namespace swapalloc::testing
