/**
 * @file timeline.hpp
 * @brief The demo's timeline: how each mode used the device over time. Samples come from a
 *        sampler thread (every few milliseconds, so that a step that loads and frees a model
 *        shows) and from the step records (after every step); marks are the evictions,
 *        restores, prefetches and out-of-memory errors the allocator reported, and the model
 *        loads read from disk. tools/demo/plot_timeline.py draws it.
 *
 * JSON (`timeline_json`), version 1; times in seconds since the mode's first step began,
 * sizes in bytes, fractions of the limit:
 *
 *     {"format": "swapalloc-demo-timeline", "version": 1, <the run's fields>,
 *      "modes": [{"mode", "completed", "result", "pools": [names, in step order],
 *                 "limit_bytes", "high_watermark", "low_watermark",
 *                 "steps":   [{"name", "start_s", "end_s"}],
 *                 "samples": [{"time_s", "step", "after_step", "own_bytes",
 *                              "device_used_bytes", "device_total_bytes", "limit_bytes",
 *                              "high_watermark", "low_watermark", "level",
 *                              "pools": {name: {"resident_bytes", "evicted_bytes",
 *                                               "compressed_bytes"}}}],
 *                 "marks":   [{"kind", "time_s", "pool", "bytes", "duration_s"}]}]}
 *
 * `kind` is evict, restore, prefetch, out_of_memory (pool: the pool that asked) or load (a
 * model file read: pool, bytes, duration). `step` is the step running at a tick, or the
 * step that just ended (`after_step` true). `level` is SAFE, WARNING, CRITICAL or EMERGENCY.
 *
 * Thread safety: the sampler's members from the thread that made it; the rest pure.
 */
#pragma once

#include <swapalloc/allocator.hpp>
#include <swapalloc/driver.hpp>
#include <swapalloc/event_log.hpp>
#include <swapalloc/policy.hpp>

#include "model.hpp"
#include "runner.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace swapalloc::demo {

/// The device at one instant. Bytes; fractions of the limit.
struct timeline_sample {
  double time_s{0.0};
  std::string step;
  bool after_step{false};  ///< taken after `step` ended (a step record), else during it
  std::vector<scenarios::pool_sample> pools;
  std::size_t own_bytes{0};  ///< this process's resident pages
  std::size_t device_used_bytes{0};
  std::size_t device_total_bytes{0};
  std::size_t limit_bytes{0};
  double high_watermark{0.0};
  double low_watermark{0.0};
  pressure_level level{pressure_level::safe};
};

/// Something that happened at one instant: an allocator event or a model load.
struct timeline_mark {
  std::string kind;  ///< evict, restore, prefetch, out_of_memory, load
  double time_s{0.0};
  std::string pool;
  std::size_t bytes{0};
  double duration_s{0.0};
};

/// One step's span.
struct step_span {
  std::string name;
  double start_s{0.0};
  double end_s{0.0};
};

/// One mode's timeline. `origin_s` is the recorder's time of the mode's start: every time
/// stored is relative to it.
struct mode_timeline {
  std::string mode;
  bool completed{false};
  std::string result;  ///< "10 of 10 requests", "out of memory at request 1, step 3 (...)"
  std::vector<std::string> pools;
  std::size_t limit_bytes{0};
  double high_watermark{0.0};
  double low_watermark{0.0};
  double origin_s{0.0};
  std::vector<step_span> steps;
  std::vector<timeline_sample> samples;
  std::vector<timeline_mark> marks;
};

/// The marks of `events` that the plot shows (evict, restore, prefetch, out_of_memory), at
/// their time minus `origin_s`. Pure.
[[nodiscard]] inline std::vector<timeline_mark> marks_of(std::span<swap_event const> events,
                                                         double origin_s)
{
  std::vector<timeline_mark> marks;
  for (swap_event const& event : events) {
    bool const shown = event.kind == event_kind::evict || event.kind == event_kind::restore ||
                       event.kind == event_kind::prefetch ||
                       event.kind == event_kind::out_of_memory;
    if (shown) {
      marks.push_back({to_string(event.kind), event.time_s - origin_s, event.pool_name, event.bytes,
                       event.duration_s});
    }
  }
  return marks;
}

/// The sample a step record holds, at its time minus `origin_s`. Pure.
[[nodiscard]] inline timeline_sample sample_of(scenarios::step_record const& record,
                                               double origin_s)
{
  timeline_sample s;
  s.time_s             = record.time_s - origin_s;
  s.step               = record.name;
  s.after_step         = true;
  s.pools              = record.pools;
  s.own_bytes          = record.own_bytes;
  s.device_used_bytes  = record.device_used_bytes;
  s.device_total_bytes = record.device_total_bytes;
  s.limit_bytes        = record.limit_bytes;
  s.high_watermark     = record.high_watermark;
  s.low_watermark      = record.low_watermark;
  s.level              = record.pressure;
  return s;
}

/// Adds `record` to `timeline`: its span, its sample and its events' marks.
inline void add_step(mode_timeline& timeline, scenarios::step_record const& record)
{
  timeline.steps.push_back(
    {record.name, record.start_s - timeline.origin_s, record.time_s - timeline.origin_s});
  timeline.samples.push_back(sample_of(record, timeline.origin_s));
  std::vector<timeline_mark> marks = marks_of(record.events, timeline.origin_s);
  timeline.marks.insert(timeline.marks.end(), marks.begin(), marks.end());
}

/// Sorts `timeline`'s samples and marks by time (ticks and step samples interleave).
inline void sort_by_time(mode_timeline& timeline)
{
  auto const earlier = [](auto const& a, auto const& b) { return a.time_s < b.time_s; };
  std::stable_sort(timeline.samples.begin(), timeline.samples.end(), earlier);
  std::stable_sort(timeline.marks.begin(), timeline.marks.end(), earlier);
}

/// A sample as JSON (see the file comment). Pure.
[[nodiscard]] inline nlohmann::json to_json(timeline_sample const& s)
{
  nlohmann::json pools = nlohmann::json::object();
  for (scenarios::pool_sample const& p : s.pools) {
    pools[p.name] = {{"resident_bytes", p.resident_bytes},
                     {"evicted_bytes", p.evicted_bytes},
                     {"compressed_bytes", p.compressed_bytes}};
  }
  return {{"time_s", s.time_s},
          {"step", s.step},
          {"after_step", s.after_step},
          {"own_bytes", s.own_bytes},
          {"device_used_bytes", s.device_used_bytes},
          {"device_total_bytes", s.device_total_bytes},
          {"limit_bytes", s.limit_bytes},
          {"high_watermark", s.high_watermark},
          {"low_watermark", s.low_watermark},
          {"level", to_string(s.level)},
          {"pools", std::move(pools)}};
}

/// A mark as JSON. Pure.
[[nodiscard]] inline nlohmann::json to_json(timeline_mark const& m)
{
  return {{"kind", m.kind},
          {"time_s", m.time_s},
          {"pool", m.pool},
          {"bytes", m.bytes},
          {"duration_s", m.duration_s}};
}

/// A mode's timeline as JSON. Pure.
[[nodiscard]] inline nlohmann::json to_json(mode_timeline const& t)
{
  nlohmann::json steps   = nlohmann::json::array();
  nlohmann::json samples = nlohmann::json::array();
  nlohmann::json marks   = nlohmann::json::array();
  for (step_span const& s : t.steps) {
    steps.push_back({{"name", s.name}, {"start_s", s.start_s}, {"end_s", s.end_s}});
  }
  for (timeline_sample const& s : t.samples) {
    samples.push_back(to_json(s));
  }
  for (timeline_mark const& m : t.marks) {
    marks.push_back(to_json(m));
  }
  return {{"mode", t.mode},
          {"completed", t.completed},
          {"result", t.result},
          {"pools", t.pools},
          {"limit_bytes", t.limit_bytes},
          {"high_watermark", t.high_watermark},
          {"low_watermark", t.low_watermark},
          {"steps", std::move(steps)},
          {"samples", std::move(samples)},
          {"marks", std::move(marks)}};
}

/// The whole timeline: `run` (an object of the run's fields: scale, requests, weights...)
/// with "format", "version" and "modes" added. Pure.
[[nodiscard]] inline nlohmann::json timeline_json(nlohmann::json run,
                                                  std::span<mode_timeline const> modes)
{
  run["format"]  = "swapalloc-demo-timeline";
  run["version"] = 1;
  run["modes"]   = nlohmann::json::array();
  for (mode_timeline const& mode : modes) {
    run["modes"].push_back(to_json(mode));
  }
  return run;
}

/**
 * @brief A thread that samples the watched pools and the device every `period` while a mode
 *        runs: each pool's resident, evicted and compressed bytes (allocator::stats), this
 *        process's resident bytes, the device-wide use (cuMemGetInfo) and the level they
 *        make against the limit and watermarks (policy.hpp pressure_of, the allocator's
 *        rule; computed here, so that sampling records no event).
 * A failure to sample stops the sampling (`error` says why); the mode goes on.
 */
class timeline_sampler {
 public:
  /// What the sampler needs: the allocator, its driver and device, the pools, the budget.
  struct setup {
    allocator const* owner{nullptr};
    driver const* drv{nullptr};
    int device{0};
    std::vector<scenarios::model const*> models;
    std::size_t limit_bytes{0};
    watermarks marks;
    scenarios::event_recorder const* clock{nullptr};  ///< times: clock->now() - origin_s
    double origin_s{0.0};
    std::chrono::milliseconds period{5};
    std::string first_step;  ///< the ticks' `step` until set_step
  };

  /// Starts sampling. @throws cuda_error if the device's context cannot be retained.
  explicit timeline_sampler(setup what)
    : setup_(std::move(what)),
      cu_device_(setup_.drv->device(setup_.device)),
      context_(setup_.drv->retain_primary_context(cu_device_)),
      step_(setup_.first_step),
      thread_([this] { run(); })
  {
  }
  timeline_sampler(timeline_sampler const&)            = delete;
  timeline_sampler& operator=(timeline_sampler const&) = delete;
  ~timeline_sampler()
  {
    stop();
    (void)setup_.drv->table().cuDevicePrimaryCtxRelease(cu_device_);
  }

  /// Names the step now running (the ticks' `step`).
  void set_step(std::string name)
  {
    std::lock_guard const lock(mutex_);
    step_ = std::move(name);
  }

  /// Stops the thread (idempotent) and returns the samples taken, oldest first.
  [[nodiscard]] std::vector<timeline_sample> finish()
  {
    stop();
    std::lock_guard const lock(mutex_);
    return std::exchange(samples_, {});
  }

  /// Why sampling stopped early; empty when it did not.
  [[nodiscard]] std::string error() const
  {
    std::lock_guard const lock(mutex_);
    return error_;
  }

 private:
  void stop()
  {
    {
      std::lock_guard const lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) { thread_.join(); }
  }

  void run()
  {
    try {
      context_scope const current(*setup_.drv, context_);
      std::unique_lock lock(mutex_);
      while (!stopping_) {
        lock.unlock();
        timeline_sample s = take();
        lock.lock();
        s.step = step_;
        samples_.push_back(std::move(s));
        wake_.wait_for(lock, setup_.period, [&] { return stopping_; });
      }
    } catch (std::exception const& failure) {
      std::lock_guard const lock(mutex_);
      error_ = failure.what();
    }
  }

  /// One sample, without its step's name.
  [[nodiscard]] timeline_sample take() const
  {
    timeline_sample s;
    for (scenarios::model const* m : setup_.models) {
      pool_stats const st = setup_.owner->stats(m->pool(), setup_.device);
      s.pools.push_back({m->pool(), m->name(), m->priority(), st.reserved_bytes, st.allocated_bytes,
                         st.evicted_bytes, st.host_bytes});
      s.own_bytes += st.reserved_bytes;
    }
    driver::memory_info const info = setup_.drv->mem_get_info();
    s.time_s                       = setup_.clock->now() - setup_.origin_s;
    s.device_total_bytes           = info.total;
    s.device_used_bytes            = info.total - info.free;
    s.limit_bytes                  = setup_.limit_bytes;
    s.high_watermark               = setup_.marks.high;
    s.low_watermark                = setup_.marks.low;
    s.level                        = pressure_of(
                             device_usage{s.own_bytes, s.limit_bytes, s.device_used_bytes, s.device_total_bytes},
                             setup_.marks);
    return s;
  }

  setup setup_;
  CUdevice cu_device_;
  CUcontext context_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_{false};                  // guarded by mutex_
  std::string step_;                      // guarded by mutex_
  std::vector<timeline_sample> samples_;  // guarded by mutex_
  std::string error_;                     // guarded by mutex_
  std::thread thread_;                    // last: starts once the rest is made
};

}  // namespace swapalloc::demo
