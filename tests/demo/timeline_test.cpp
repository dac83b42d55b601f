// Tests of tools/demo/timeline.hpp's data and JSON (suite DemoTimeline): a step record
// becomes a span, a sample and marks, at times relative to the mode's origin; only the
// events the plot shows become marks; the JSON has the fields plot_timeline.py reads.
#include "timeline.hpp"
#include "byte_units.hpp"
#include "demo_test_support.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace swapalloc::demo {
namespace {

using testing::units::MiB;

swap_event event_of(event_kind kind, double time_s, std::string pool, std::size_t bytes)
{
  swap_event e;
  e.kind       = kind;
  e.time_s     = time_s;
  e.pool_name  = std::move(pool);
  e.bytes      = bytes;
  e.duration_s = 0.01;
  return e;
}

scenarios::step_record record_of()
{
  scenarios::step_record r;
  r.name           = "request 1: flux-inpaint";
  r.start_s        = 10.5;
  r.time_s         = 11.0;
  r.own_bytes      = 90 * MiB;
  r.limit_bytes    = 100 * MiB;
  r.high_watermark = 0.85;
  r.low_watermark  = 0.75;
  r.pressure       = pressure_level::critical;
  r.pools.push_back({1, "sdxl", pool_priority::normal, 10 * MiB, 0, 20 * MiB, 15 * MiB});
  r.pools.push_back({2, "flux-inpaint", pool_priority::normal, 80 * MiB, 0, 0, 0});
  r.events = {event_of(event_kind::evict, 10.6, "sdxl", 20 * MiB),
              event_of(event_kind::level_change, 10.7, "", 0),
              event_of(event_kind::restore, 10.8, "sdxl", 2 * MiB),
              event_of(event_kind::release_cached, 10.8, "sdxl", 2 * MiB),
              event_of(event_kind::prefetch, 10.9, "sdxl", 2 * MiB),
              event_of(event_kind::out_of_memory, 10.95, "flux-inpaint", MiB)};
  return r;
}

TEST(DemoTimeline, AStepBecomesASpanASampleAndMarksRelativeToTheOrigin)
{
  mode_timeline t;
  t.origin_s = 10.0;
  add_step(t, record_of());
  ASSERT_EQ(t.steps.size(), 1U);
  EXPECT_DOUBLE_EQ(t.steps[0].start_s, 0.5);
  EXPECT_DOUBLE_EQ(t.steps[0].end_s, 1.0);
  ASSERT_EQ(t.samples.size(), 1U);
  EXPECT_TRUE(t.samples[0].after_step);
  EXPECT_DOUBLE_EQ(t.samples[0].time_s, 1.0);
  EXPECT_EQ(t.samples[0].own_bytes, 90 * MiB);
  EXPECT_EQ(t.samples[0].level, pressure_level::critical);
  std::vector<std::string> kinds;
  for (timeline_mark const& m : t.marks) {
    kinds.push_back(m.kind);
  }
  EXPECT_EQ(kinds, (std::vector<std::string>{"evict", "restore", "prefetch", "out_of_memory"}))
    << "level changes and cache releases are not marks";
  EXPECT_NEAR(t.marks[0].time_s, 0.6, 1e-12);
  EXPECT_EQ(t.marks[0].pool, "sdxl");
  EXPECT_EQ(t.marks[0].bytes, 20 * MiB);
}

TEST(DemoTimeline, SortingInterleavesTicksAndStepSamples)
{
  mode_timeline t;
  t.samples.resize(3);
  t.samples[0].time_s = 2.0;
  t.samples[1].time_s = 1.0;
  t.samples[2].time_s = 3.0;
  t.marks.resize(2);
  t.marks[0].time_s = 5.0;
  t.marks[1].time_s = 4.0;
  sort_by_time(t);
  EXPECT_DOUBLE_EQ(t.samples[0].time_s, 1.0);
  EXPECT_DOUBLE_EQ(t.samples[2].time_s, 3.0);
  EXPECT_DOUBLE_EQ(t.marks[0].time_s, 4.0);
}

TEST(DemoTimeline, JsonHasTheFieldsThePlotReads)
{
  mode_timeline t;
  t.mode           = "swapalloc";
  t.completed      = true;
  t.result         = "1 of 1 requests";
  t.pools          = {"sdxl", "flux-inpaint"};
  t.limit_bytes    = 100 * MiB;
  t.high_watermark = 0.85;
  t.low_watermark  = 0.75;
  t.origin_s       = 10.0;
  add_step(t, record_of());
  std::vector<mode_timeline> const modes{t};
  nlohmann::json const j = timeline_json({{"scale", 64}}, modes);
  EXPECT_EQ(j.at("format"), "swapalloc-demo-timeline");
  EXPECT_EQ(j.at("version"), 1);
  EXPECT_EQ(j.at("scale"), 64);
  nlohmann::json const& mode = j.at("modes").at(0);
  for (char const* field : {"mode", "completed", "result", "pools", "limit_bytes", "high_watermark",
                            "low_watermark", "steps", "samples", "marks"}) {
    EXPECT_TRUE(mode.contains(field)) << field;
  }
  nlohmann::json const& sample = mode.at("samples").at(0);
  for (char const* field :
       {"time_s", "step", "after_step", "own_bytes", "device_used_bytes", "device_total_bytes",
        "limit_bytes", "high_watermark", "low_watermark", "level", "pools"}) {
    EXPECT_TRUE(sample.contains(field)) << field;
  }
  EXPECT_EQ(sample.at("level"), "CRITICAL");
  EXPECT_EQ(sample.at("step"), "request 1: flux-inpaint");
  EXPECT_EQ(sample.at("pools").at("sdxl").at("evicted_bytes"), 20 * MiB);
  EXPECT_EQ(sample.at("pools").at("sdxl").at("compressed_bytes"), 15 * MiB);
  EXPECT_EQ(sample.at("pools").at("flux-inpaint").at("resident_bytes"), 80 * MiB);
  nlohmann::json const& mark = mode.at("marks").at(0);
  for (char const* field : {"kind", "time_s", "pool", "bytes", "duration_s"}) {
    EXPECT_TRUE(mark.contains(field)) << field;
  }
  EXPECT_EQ(mode.at("steps").at(0).at("name"), "request 1: flux-inpaint");
}

}  // namespace
}  // namespace swapalloc::demo
