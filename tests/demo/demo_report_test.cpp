// Tests of tools/demo/demo_report.hpp (suite DemoReport): the step line shows the step's
// device use, pools and moves; the outputs' verdict compares every pair of modes over the
// steps both ran; the summary table has a column per mode and the verdict.
#include "demo_report.hpp"
#include "byte_units.hpp"
#include "demo_test_support.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace swapalloc::demo {
namespace {

using test_support::contains;
using testing::units::MiB;

/// A completed mode with `outputs` (three per request) and a request time per request.
mode_result completed(demo_mode mode, std::vector<std::uint64_t> outputs)
{
  mode_result r;
  r.mode          = mode;
  r.completed     = true;
  r.requests_done = outputs.size() / steps_per_request;
  r.outputs       = std::move(outputs);
  r.request_seconds.assign(r.requests_done, 0.5);
  r.request_seconds.front() = 1.0;
  r.limit_bytes             = 100 * MiB;
  r.peak_bytes              = 80 * MiB;
  return r;
}

/// keep, out of memory at request 1, step 3, after two outputs.
mode_result keep_out_of_memory(std::vector<std::uint64_t> outputs)
{
  mode_result r;
  r.mode           = demo_mode::keep;
  r.out_of_memory  = true;
  r.failure        = "swapalloc: out of memory on device 0: ...";
  r.failed_request = 1;
  r.failed_step    = 3;
  r.failed_model   = "flux-inpaint";
  r.outputs        = std::move(outputs);
  return r;
}

TEST(DemoReport, StepLineShowsUseLevelPoolsAndWhatMoved)
{
  scenarios::step_record record;
  record.name        = "request 2: sdxl";
  record.start_s     = 1.0;
  record.time_s      = 1.25;
  record.own_bytes   = 85 * MiB;
  record.limit_bytes = 100 * MiB;
  record.pressure    = pressure_level::critical;
  record.pools.push_back({1, "sdxl", pool_priority::normal, 64 * MiB, 0, 0, 0});
  record.pools.push_back(
    {2, "flux-inpaint", pool_priority::normal, 21 * MiB, 0, 32 * MiB, 20 * MiB});
  swap_event evict;
  evict.kind         = event_kind::evict;
  evict.bytes        = 32 * MiB;
  evict.duration_s   = 0.01;
  swap_event restore = evict;
  restore.kind       = event_kind::restore;
  record.events      = {evict, restore};
  read_totals disk{1, 8 * MiB, 0.004};
  std::string const line = step_line({demo_mode::swapalloc, 2, 10, 1, &record, disk});
  EXPECT_TRUE(contains(line, "swapalloc")) << line;
  EXPECT_TRUE(contains(line, "2/10 1")) << line;
  EXPECT_TRUE(contains(line, "sdxl")) << line;
  EXPECT_TRUE(contains(line, "0.250 s")) << line;
  EXPECT_TRUE(contains(line, "85.0/100.0 MiB  85% CRITICAL")) << line;
  EXPECT_TRUE(contains(line, "sdxl 64.0|0.0|0.0 flux-inpaint 21.0|32.0|20.0")) << line;
  EXPECT_TRUE(contains(line, "evicted 32.0 MiB 3.36 GB/s")) << line;
  EXPECT_TRUE(contains(line, "restored 32.0 MiB 3.36 GB/s")) << line;
  EXPECT_TRUE(contains(line, "read 8.0 MiB 2.10 GB/s")) << line;
}

TEST(DemoReport, OutputsAreIdenticalOverTheStepsEveryPairRan)
{
  std::vector<mode_result> const results{keep_out_of_memory({1, 2}),
                                         completed(demo_mode::auto_unload, {1, 2, 3, 4, 5, 6}),
                                         completed(demo_mode::swapalloc, {1, 2, 3, 4, 5, 6})};
  outputs_verdict const v = compare_outputs(results);
  EXPECT_TRUE(v.compared);
  EXPECT_TRUE(v.identical);
  EXPECT_EQ(v.steps, 6U);
  EXPECT_TRUE(contains(v.text, "yes")) << v.text;
}

TEST(DemoReport, ADifferenceNamesTheModesRequestAndStep)
{
  std::vector<mode_result> const results{completed(demo_mode::auto_unload, {1, 2, 3, 4, 5, 6}),
                                         completed(demo_mode::swapalloc, {1, 2, 3, 4, 9, 6})};
  outputs_verdict const v = compare_outputs(results);
  EXPECT_FALSE(v.identical);
  EXPECT_EQ(v.text, "NO (auto_unload and swapalloc differ at request 2, step 2)");
  std::vector<mode_result> const keep_differs{keep_out_of_memory({1, 7}), results[0]};
  EXPECT_FALSE(compare_outputs(keep_differs).identical) << "keep's steps before its failure count";
}

TEST(DemoReport, OneModeHasNothingToCompare)
{
  std::vector<mode_result> const results{completed(demo_mode::swapalloc, {1, 2, 3})};
  outputs_verdict const v = compare_outputs(results);
  EXPECT_FALSE(v.compared);
  EXPECT_TRUE(v.identical) << "nothing differs";
  EXPECT_TRUE(contains(v.text, "n/a")) << v.text;
}

TEST(DemoReport, ResultTextSaysHowTheRequestsEnded)
{
  EXPECT_EQ(result_text(keep_out_of_memory({}), 10),
            "out of memory at request 1, step 3 (flux-inpaint)");
  EXPECT_EQ(result_text(completed(demo_mode::swapalloc, {1, 2, 3, 4, 5, 6}), 2), "2 of 2 requests");
  mode_result failed   = keep_out_of_memory({});
  failed.out_of_memory = false;
  EXPECT_EQ(result_text(failed, 10), "failed at request 1, step 3 (flux-inpaint)");
}

TEST(DemoReport, SummaryHasAColumnPerModeEveryRowAndTheVerdict)
{
  mode_result swapped     = completed(demo_mode::swapalloc, {1, 2, 3, 4, 5, 6});
  swapped.evicted_bytes   = 64 * MiB;
  swapped.evict_seconds   = 0.02;
  swapped.restored_bytes  = 32 * MiB;
  swapped.restore_seconds = 0.02;
  swapped.stored_bytes    = 30 * MiB;
  swapped.host_bytes      = 20 * MiB;
  swapped.evictions       = 7;
  swapped.weights_intact  = true;
  swapped.disk            = {3, 40 * MiB, 0.02};
  std::vector<mode_result> const results{
    keep_out_of_memory({1, 2}), completed(demo_mode::auto_unload, {1, 2, 3, 4, 5, 6}), swapped};
  std::string const table = summary_table(results, 2);
  for (char const* row : summary_rows) {
    EXPECT_TRUE(contains(table, row)) << row << "\n" << table;
  }
  for (char const* cell :
       {"keep", "auto_unload", "swapalloc", "OOM at request 1, step 3", "2 of 2 requests",
        "1.000 s", "0.500 s", "limit reached (OOM)", "80.00 MiB (80%)", "40.00 MiB, 3 loads",
        "64.00 MiB, 3.36 GB/s", "32.00 MiB, 1.68 GB/s", "1.50x (30.00 MiB in 20.00 MiB)",
        "yes, after 7 evictions", "outputs identical across modes: yes"}) {
    EXPECT_TRUE(contains(table, cell)) << cell << "\n" << table;
  }
}

}  // namespace
}  // namespace swapalloc::demo
