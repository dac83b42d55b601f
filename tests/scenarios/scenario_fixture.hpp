/**
 * @file scenario_fixture.hpp
 * @brief The fixture of the seed scenario tests (tests/scenarios): an allocator over the
 *        shared driver with the event recorder installed, the scenario context with the
 *        real (or generated) bf16 weights, and the checks every scenario makes (issue 11):
 *        - no out-of-memory (no out_of_memory event);
 *        - peak device use ≤ high watermark × limit + one page, after every step, for this
 *          process against its limit and device-wide (other processes included) against
 *          the device's memory;
 *        - every model's weights bit-identical to their first load (verify_weights);
 *        - critical pools never evicted (no evict event, no evicted page in the stats);
 *        - the event log accounts for every byte moved: per pool, the evict events' bytes
 *          are the pages the stats count evicted, the restore and prefetch events' bytes
 *          the pages they count restored, and their difference the bytes evicted now; and
 *          the runner's records saw all of it.
 *
 * Each program sets the simulator's capacity before cuInit (`set_sim_memory`, at static
 * initialization, as small_device_fixture.hpp does): the simulator reads it once.
 */
#pragma once

#include "driver_fixture.hpp"
#include "pipeline.hpp"
#include "runner.hpp"
#include "sanitizer_build.hpp"
#include "weights.hpp"

#include <swapalloc/activation.hpp>
#include <swapalloc/allocator.hpp>
#include <swapalloc/pool_scope.hpp>

#include <gtest/gtest.h>
#include <malloc.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace swapalloc::testing {

using scenarios::GiB;
using scenarios::KiB;
using scenarios::MiB;

/// Sets SWAPALLOC_SIM_MEMORY to `bytes` unless the environment sets it (before main);
/// returns setenv's result.
[[nodiscard]] inline int set_sim_memory(std::size_t bytes)
{
  return ::setenv("SWAPALLOC_SIM_MEMORY", std::to_string(bytes).c_str(), 0);
}

/// What the fixture's step callback saw of every step, kept or not: the bytes moved and
/// the steps past the watermark bound (high × capacity + one page). Thread safety: any.
class step_tally {
 public:
  explicit step_tally(std::size_t page) : page_(page) {}

  void add(scenarios::step_record const& r)
  {
    auto const bound = [&](std::size_t capacity) {
      return static_cast<std::size_t>(r.high_watermark * static_cast<double>(capacity)) + page_;
    };
    std::lock_guard const lock(mutex_);
    ++steps_;
    evicted_ += r.evicted_bytes;
    restored_ += r.restored_bytes;
    if (r.limit_bytes == 0 || r.own_bytes > bound(r.limit_bytes) ||
        r.device_used_bytes > bound(r.device_total_bytes)) {
      if (over_.size() < 10) {
        over_.push_back(
          "after step '" + r.name + "': this process holds " + std::to_string(r.own_bytes) +
          " of a limit of " + std::to_string(r.limit_bytes) + ", the device has " +
          std::to_string(r.device_used_bytes) + " of " + std::to_string(r.device_total_bytes) +
          " in use (high watermark " + std::to_string(r.high_watermark) + ")");
      }
      ++over_count_;
    }
  }
  [[nodiscard]] std::size_t steps() const
  {
    std::lock_guard const lock(mutex_);
    return steps_;
  }
  [[nodiscard]] std::size_t evicted_bytes() const
  {
    std::lock_guard const lock(mutex_);
    return evicted_;
  }
  [[nodiscard]] std::size_t restored_bytes() const
  {
    std::lock_guard const lock(mutex_);
    return restored_;
  }
  /// Steps past the bound, and the first ten of them described.
  [[nodiscard]] std::pair<std::size_t, std::vector<std::string>> over() const
  {
    std::lock_guard const lock(mutex_);
    return {over_count_, over_};
  }

 private:
  std::size_t page_;
  mutable std::mutex mutex_;
  std::size_t steps_{0};
  std::size_t evicted_{0};
  std::size_t restored_{0};
  std::size_t over_count_{0};
  std::vector<std::string> over_;
};

/// One scenario's allocator, event recorder and runner (destroyed runner first, then the
/// allocator, then the recorder its sink shares state with).
struct scenario_run {
  scenarios::event_recorder events;
  std::unique_ptr<step_tally> tally;
  std::unique_ptr<allocator> owner;
  std::unique_ptr<scenarios::scenario_runner> run;

  /// Watches every model of `models`.
  void watch(std::vector<scenarios::model const*> const& models) const
  {
    for (scenarios::model const* m : models) {
      run->watch(*m);
    }
  }
};

#if defined(SWAPALLOC_TEST_ASAN) || defined(SWAPALLOC_TEST_TSAN)
// sanitizer_common's allocator statistics (sanitizer/allocator_interface.h, which GCC 12
// does not ship): bytes in live heap blocks, without the quarantine or the shadow.
extern "C" std::size_t
__sanitizer_get_current_allocated_bytes();  // NOLINT(bugprone-reserved-identifier)
#endif

/**
 * @brief The host memory this process holds, for flatness checks over a long run: the
 *        bytes in live heap blocks (glibc's mallinfo2, every arena; the sanitizers' own
 *        allocator statistics in their builds) plus the simulator's pinned host bytes
 *        (census). Not the resident set: memory free in ten threads' malloc arenas varies
 *        by megabytes with the scheduling (seen under load), and a sanitizer's quarantine
 *        and shadow grow on their own; neither is a leak.
 */
[[nodiscard]] inline std::size_t host_memory_in_use(sim_control const& sim)
{
#if defined(SWAPALLOC_TEST_ASAN) || defined(SWAPALLOC_TEST_TSAN)
  return __sanitizer_get_current_allocated_bytes() +
         (sim.available() ? sim.pinned_host_bytes() : 0);
#else
  struct mallinfo2 const heap = ::mallinfo2();  // every arena's live blocks, mmapped ones too
  return heap.uordblks + heap.hblkhd + (sim.available() ? sim.pinned_host_bytes() : 0);
#endif
}

/**
 * @brief The scenarios' weights (issue 11), found once per program and named on stderr:
 *        the real ones tools/fetch-weights fetched into the build directory, else the
 *        project's real data (../shared/data), else generated N(0, 0.02) values
 *        (weights.hpp weight_source::find, SWAPALLOC_WEIGHTS first). Thread safety: any.
 */
[[nodiscard]] inline scenarios::weight_source const& scenario_weights()
{
  static scenarios::weight_source const source = [] {
    scenarios::weight_source found =
      scenarios::weight_source::find({}, std::filesystem::path(SWAPALLOC_SCENARIO_SEARCH_ROOT));
    std::fprintf(stderr, "scenario weights: %s\n", found.description().c_str());
    return found;
  }();
  return source;
}

/// A weight_filler (model.hpp) of bf16 values of `scenario_weights()`: the same bytes for
/// the same (size, salt).
[[nodiscard]] inline scenarios::weight_filler scenario_bf16_weights()
{
  return [](std::span<std::byte> out, std::uint64_t salt) {
    scenario_weights().fill(out, scenarios::weight_dtype::bf16, salt);
  };
}

class ScenarioTest : public DriverTest {
 protected:
  /// Expects the program's SWAPALLOC_SIM_MEMORY setting (`sim_memory_set`, set_sim_memory's
  /// result) to have taken effect: on the simulator the device has `device_bytes`; on a GPU
  /// the scenario's limit emulates the device instead.
  void expect_scenario_device(int sim_memory_set, std::size_t device_bytes) const
  {
    ASSERT_EQ(sim_memory_set, 0);
    if (sim().available()) {
      ASSERT_EQ(drv().mem_get_info().total, device_bytes) << "SWAPALLOC_SIM_MEMORY was set";
    }
  }

  /**
   * @brief A scenario's allocator: no SWAPALLOC_* variable read (unless
   *        `read_environment`), two compression workers, `limit` bytes for this process
   *        (none: the device's memory), every event to the run's recorder; and its runner
   *        on device 0, keeping its records unless told not to (a soak). `adjust` changes
   *        the options last.
   */
  [[nodiscard]] std::unique_ptr<scenario_run> start(
    std::optional<std::size_t> limit, bool read_environment = false,
    std::function<void(allocator_options&)> const& adjust = {}, bool keep_records = true) const
  {
    auto made   = std::make_unique<scenario_run>();
    made->tally = std::make_unique<step_tally>(gran());
    allocator_options o;
    o.read_environment = read_environment;
    o.workers          = 2;
    if (limit) { o.device_limit = device_limit{*limit, 1.0}; }
    if (adjust) { adjust(o); }
    made->events.install(o);
    made->owner = std::make_unique<allocator>(drv(), std::move(o));
    made->run   = std::make_unique<scenarios::scenario_runner>(
      *made->owner, drv(), 0, made->events,
      [tally = made->tally.get(), trace = trace_sink()](scenarios::step_record const& r) {
        tally->add(r);
        if (trace) { trace(r); }
      },
      keep_records);
    return made;
  }

  /// With SWAPALLOC_SCENARIO_TRACE=1, one line per step on stderr, then its events (for
  /// debugging a scenario); else nothing.
  [[nodiscard]] static scenarios::step_callback trace_sink()
  {
    char const* trace = std::getenv("SWAPALLOC_SCENARIO_TRACE");
    if (trace == nullptr || std::string(trace) != "1") { return {}; }
    return [](scenarios::step_record const& r) {
      std::string line = "step " + std::to_string(r.index) + " '" + r.name + "': own " +
                         bytes_text(r.own_bytes) + ", device " + bytes_text(r.device_used_bytes) +
                         " of " + bytes_text(r.device_total_bytes) + ", " + to_string(r.pressure) +
                         ", evicted " + bytes_text(r.evicted_bytes) + ", restored " +
                         bytes_text(r.restored_bytes) + " |";
      for (scenarios::pool_sample const& p : r.pools) {
        line +=
          " " + p.name + " " + bytes_text(p.resident_bytes) + "/" + bytes_text(p.evicted_bytes);
      }
      std::fprintf(stderr, "%s\n", line.c_str());
      for (swap_event const& event : r.events) {
        std::fprintf(stderr, "    %.6f %s\n", event.time_s, event_line(event).c_str());
      }
      for (swap_event const& event : r.events) {
        std::fprintf(stderr, "    %.6f %s\n", event.time_s, event_line(event).c_str());
      }
    };
  }

  /// The scenario context on device 0 of `owner`, weights from scenario_bf16_weights.
  [[nodiscard]] scenarios::scenario_context context(scenario_run const& s) const
  {
    scenarios::scenario_context made;
    made.owner  = s.owner.get();
    made.drv    = &drv();
    made.filler = scenario_bf16_weights();
    return made;
  }

  /// Expects no out-of-memory event, and no step past high × limit + one page.
  static void expect_within_watermark(scenario_run const& s)
  {
    EXPECT_EQ(s.events.count(event_kind::out_of_memory), 0U) << "an out-of-memory event";
    ASSERT_GT(s.tally->steps(), 0U);
    auto const [count, described] = s.tally->over();
    EXPECT_EQ(count, 0U) << "steps past the high watermark, the first: "
                         << (described.empty() ? "" : described.front());
  }

  /// Expects every loaded model's weights to be their first load's (a restore if evicted).
  static void expect_weights_intact(std::vector<scenarios::model*> const& models)
  {
    for (scenarios::model* m : models) {
      if (!m->loaded()) { continue; }
      std::vector<std::string> const differing = m->verify_weights();
      EXPECT_TRUE(differing.empty())
        << "model '" << m->name() << "': " << differing.size() << " tensors differ from the "
        << "first load, the first '" << (differing.empty() ? "" : differing.front()) << "'";
    }
  }

  /// Expects no critical model's pool ever evicted (events and statistics).
  static void expect_critical_never_evicted(scenario_run const& s,
                                            std::vector<scenarios::model const*> const& models)
  {
    for (scenarios::model const* m : models) {
      if (m->priority() != pool_priority::critical) { continue; }
      pool_stats const st = s.owner->stats(m->pool(), 0);
      EXPECT_EQ(s.events.count(event_kind::evict, m->pool()), 0U) << m->name();
      EXPECT_EQ(st.evictions, 0U) << m->name();
      EXPECT_EQ(st.evicted_bytes, 0U) << m->name();
    }
  }

  /**
   * @brief Expects the events to account for every byte moved, per model's pool (see the
   *        file comment), and the runner's records to have seen every evict, restore and
   *        prefetch event. @return the bytes evicted over all the models' pools.
   */
  std::size_t expect_accounted(scenario_run const& s,
                               std::vector<scenarios::model const*> const& models) const
  {
    std::size_t evicted  = 0;
    std::size_t returned = 0;
    for (scenarios::model const* m : models) {
      pool_stats const st             = s.owner->stats(m->pool(), 0);
      scenarios::event_totals const t = s.events.totals(m->pool());
      EXPECT_EQ(t.evicted_bytes, st.evictions * gran()) << m->name() << ": evict events' bytes";
      EXPECT_EQ(t.returned_bytes(), st.restores * gran()) << m->name() << ": restore events' bytes";
      EXPECT_EQ(t.evicted_bytes - t.returned_bytes(), st.evicted_bytes)
        << m->name() << ": evicted minus restored is what is evicted now";
      evicted += t.evicted_bytes;
      returned += t.returned_bytes();
    }
    EXPECT_EQ(s.tally->evicted_bytes(), evicted) << "the runner's records saw every eviction";
    EXPECT_EQ(s.tally->restored_bytes(), returned) << "the runner's records saw every restore";
    return evicted;
  }
};

/// A ScenarioTest whose run (`s_`: no limit, the whole simulated device) starts in SetUp,
/// after checking the program's SWAPALLOC_SIM_MEMORY setting (`sim_memory_set`,
/// set_sim_memory's result), and ends in TearDown.
class StartedScenarioTest : public ScenarioTest {
 protected:
  explicit StartedScenarioTest(int sim_memory_set) : sim_memory_set_(sim_memory_set) {}

  void SetUp() override
  {
    ScenarioTest::SetUp();
    ASSERT_EQ(sim_memory_set_, 0);
    s_ = start(std::nullopt);
  }
  void TearDown() override
  {
    s_.reset();
    ScenarioTest::TearDown();
  }

  std::unique_ptr<scenario_run> s_;

 private:
  int sim_memory_set_;
};

}  // namespace swapalloc::testing
