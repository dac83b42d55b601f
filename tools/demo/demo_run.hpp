/**
 * @file demo_run.hpp
 * @brief One mode of the demo: seed 001's pipeline (tools/scenarios/pipeline.hpp) for a
 *        number of requests on an allocator of its own, with what the mode needs:
 *
 * | mode | allocator | pipeline |
 * |---|---|---|
 * | keep | no automatic eviction (a caching allocator as PyTorch's) | models kept loaded |
 * | auto_unload | no automatic eviction | each step loads its model and unloads it after |
 * | swapalloc | the 85/75 policy | models kept loaded: the policy evicts and restores |
 *
 * Every mode loads its models from the same model files (model_files.hpp), on a device of
 * `sizes.device_bytes` (a device limit: on a larger device, the limit emulates the seed's);
 * the environment's SWAPALLOC_* settings apply except the limit. The steps are recorded by a
 * scenario_runner and sampled by a timeline_sampler; `on_step` is told of each step as it
 * ends (the demo prints its line). An out-of-memory error ends the mode's requests (keep's
 * expected end); any other error is the mode's failure. swapalloc's run ends with a step
 * "verify weights" that reads every model's weights back (restoring them) and compares them
 * with their first load.
 *
 * Thread safety: run_mode uses the driver and the store from the calling thread and its
 * sampler's; one mode at a time.
 */
#pragma once

#include <swapalloc/allocator.hpp>
#include <swapalloc/allocator_options.hpp>
#include <swapalloc/driver.hpp>
#include <swapalloc/errors.hpp>

#include "demo_options.hpp"
#include "model_files.hpp"
#include "pipeline.hpp"
#include "runner.hpp"
#include "timeline.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace swapalloc::demo {

/// The steps of one request, in order: the pipeline's models.
inline constexpr std::size_t steps_per_request = 3;

/// What one step did, for the line the demo prints.
struct step_view {
  demo_mode mode{demo_mode::keep};
  std::size_t request{0};   ///< 1-based; 0 for a step outside the requests
  std::size_t requests{0};  ///< of the mode
  std::size_t step{0};      ///< 1-based within the request; 0 outside the requests
  scenarios::step_record const* record{nullptr};
  read_totals disk;  ///< what the step read from the model files
};

/// Told of each step as it ends, on the mode's thread.
using step_observer = std::function<void(step_view const&)>;

/// What every mode shares.
struct demo_setup {
  driver const* drv{nullptr};
  int device{0};
  scenarios::seed001_sizes sizes;
  std::size_t requests{10};
  std::size_t device_total_bytes{0};  ///< the device's memory (cuMemGetInfo)
  model_file_store* files{nullptr};
  std::optional<codec_id> codec;  ///< the model pools' codec; unset: the library's choice
  std::chrono::milliseconds sample_period{5};
};

/// How a mode went. Bytes, seconds.
struct mode_result {
  demo_mode mode{demo_mode::keep};
  bool completed{false};          ///< every request ran
  bool out_of_memory{false};      ///< the requests ended with out_of_memory
  std::string failure;            ///< what() of the error that ended the requests, if any
  std::size_t failed_request{0};  ///< 1-based, when not completed
  std::size_t failed_step{0};     ///< 1-based
  std::string failed_model;
  std::size_t requests_done{0};
  std::vector<std::uint64_t> outputs;   ///< every step's output, in step order
  std::vector<double> request_seconds;  ///< per completed request
  std::size_t peak_bytes{0};            ///< this process's highest resident bytes sampled
  std::size_t limit_bytes{0};
  std::size_t evicted_bytes{0};        ///< evict events' bytes
  std::size_t restored_bytes{0};       ///< restore and prefetch events' bytes
  std::size_t evictions{0};            ///< evict events
  double evict_seconds{0.0};           ///< evict events' durations, summed
  double restore_seconds{0.0};         ///< restore and prefetch events' durations, summed
  std::size_t repeated_restoring{0};   ///< requests after the first that restored from the host
  read_totals disk;                    ///< what the mode read from the model files
  std::size_t stored_bytes{0};         ///< evicted bytes at the end, compression finished
  std::size_t host_bytes{0};           ///< host memory holding them
  std::optional<bool> weights_intact;  ///< swapalloc: the final verification
  std::string sampler_error;           ///< why the timeline's ticks stopped early, if they did
  mode_timeline timeline;

  /// stored_bytes / host_bytes; 0 when nothing is stored.
  [[nodiscard]] double compression_ratio() const noexcept
  {
    return host_bytes == 0 ? 0.0
                           : static_cast<double>(stored_bytes) / static_cast<double>(host_bytes);
  }
};

/// `after` minus `before`, field by field.
[[nodiscard]] inline read_totals difference(read_totals const& after, read_totals const& before)
{
  return {after.loads - before.loads, after.bytes - before.bytes, after.seconds - before.seconds};
}

/// The allocator options of `mode`: the seed's device as a limit, the policy only for
/// swapalloc.
[[nodiscard]] inline allocator_options mode_options(demo_mode mode, demo_setup const& setup)
{
  allocator_options options;
  options.device_limit       = device_limit{setup.sizes.device_bytes, 1.0};
  options.automatic_eviction = mode == demo_mode::swapalloc;
  return options;
}

namespace detail {

/// A mode in progress: its allocator, pipeline, runner and sampler, and the result so far.
/// Members in construction order: the sampler and runner go before the pipeline, which goes
/// before the allocator, whose sink shares the recorder's state.
class mode_run {
 public:
  mode_run(demo_mode mode, demo_setup const& setup, step_observer observe)
    : setup_(setup),
      observe_(std::move(observe)),
      options_(mode_options(mode, setup)),
      marks_(resolved_marks(options_)),
      owner_(*setup.drv, installed(options_)),
      pipeline_(context(), setup.sizes, mode == demo_mode::auto_unload),
      disk_before_(setup.files->totals())
  {
    result_.mode        = mode;
    result_.limit_bytes = std::min(setup.sizes.device_bytes, setup.device_total_bytes);
    mode_timeline& t    = result_.timeline;
    t.mode              = to_string(mode);
    t.limit_bytes       = result_.limit_bytes;
    t.high_watermark    = marks_.high;
    t.low_watermark     = marks_.low;
    for (scenarios::model const* m : pipeline_.models()) {
      t.pools.push_back(m->name());
    }
    t.origin_s = events_.now();
    sampler_.emplace(timeline_sampler::setup{&owner_, setup.drv, setup.device, pipeline_.models(),
                                             result_.limit_bytes, marks_, &events_, t.origin_s,
                                             setup.sample_period, step_name(1, 0)});
    runner_.emplace(
      owner_, *setup.drv, setup.device, events_,
      [this](scenarios::step_record const& r) { on_step(r); }, false);
    for (scenarios::model const* m : pipeline_.models()) {
      runner_->watch(*m);
    }
  }

  /// Runs the requests (and swapalloc's verification), then gathers the result.
  mode_result run() &&
  {
    run_requests();
    if (result_.completed && result_.mode == demo_mode::swapalloc) { verify(); }
    finish();
    return std::move(result_);
  }

 private:
  [[nodiscard]] static watermarks resolved_marks(allocator_options const& options)
  {
    allocator_options const resolved = resolve_options(options);
    return {resolved.low_watermark, resolved.high_watermark};
  }
  allocator_options installed(allocator_options options) const
  {
    events_.install(options);
    return options;
  }
  [[nodiscard]] scenarios::scenario_context context()
  {
    scenarios::scenario_context made;
    made.owner  = &owner_;
    made.drv    = setup_.drv;
    made.device = setup_.device;
    made.filler = setup_.files->filler();
    made.codec  = setup_.codec;
    return made;
  }

  /// The name run_request gives step `step` (0-based) of request `request`.
  [[nodiscard]] std::string step_name(std::size_t request, std::size_t step)
  {
    return "request " + std::to_string(request) + ": " + pipeline_.step_model(step).name();
  }

  void run_requests()
  {
    for (std::size_t request = 1; request <= setup_.requests; ++request) {
      current_request_ = request;
      current_step_    = 0;
      sampler_->set_step(step_name(request, 0));
      auto const start = std::chrono::steady_clock::now();
      try {
        (void)pipeline_.run_request(*runner_, request);
      } catch (out_of_memory const& error) {
        stopped(error, true);
        return;
      } catch (std::exception const& error) {
        stopped(error, false);
        return;
      }
      result_.request_seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      result_.requests_done = request;
      result_.repeated_restoring += request > 1 && restored_in_request_ > 0 ? 1 : 0;
      restored_in_request_ = 0;
    }
    result_.completed = true;
  }

  /// Notes the error that ended the requests at the current step.
  void stopped(std::exception const& error, bool out_of_memory)
  {
    result_.out_of_memory  = out_of_memory;
    result_.failure        = error.what();
    result_.failed_request = current_request_;
    result_.failed_step    = current_step_ + 1;
    result_.failed_model   = pipeline_.step_model(current_step_).name();
  }

  void on_step(scenarios::step_record const& record)
  {
    read_totals const now  = setup_.files->totals();
    read_totals const read = difference(now, disk_step_);
    disk_step_             = now;
    add_step(result_.timeline, record);
    if (read.bytes != 0) {
      std::string const model = record.name.substr(record.name.rfind(": ") + 2);
      result_.timeline.marks.push_back(
        {"load", record.start_s - result_.timeline.origin_s, model, read.bytes, read.seconds});
    }
    result_.outputs.insert(result_.outputs.end(), record.outputs.begin(), record.outputs.end());
    result_.evicted_bytes += record.evicted_bytes;
    result_.restored_bytes += record.restored_bytes;
    for (swap_event const& event : record.events) {
      bool const evict   = event.kind == event_kind::evict;
      bool const restore = event.kind == event_kind::restore || event.kind == event_kind::prefetch;
      result_.evictions += evict ? 1 : 0;
      result_.evict_seconds += evict ? event.duration_s : 0.0;
      result_.restore_seconds += restore ? event.duration_s : 0.0;
    }
    restored_in_request_ += record.restored_bytes;
    bool const in_request = current_request_ != 0;
    if (observe_) {
      observe_({result_.mode, in_request ? current_request_ : 0, setup_.requests,
                in_request ? current_step_ + 1 : 0, &record, read});
    }
    if (in_request && ++current_step_ < steps_per_request) {
      sampler_->set_step(step_name(current_request_, current_step_));
    }
  }

  /// Reads every model's weights back and compares them with their first load.
  void verify()
  {
    current_request_ = 0;
    sampler_->set_step("verify weights");
    bool intact = true;
    try {
      (void)runner_->step("verify weights", [&] {
        for (std::size_t i = 0; i < steps_per_request; ++i) {
          intact = pipeline_.step_model(i).verify_weights().empty() && intact;
        }
      });
    } catch (std::exception const& error) {
      intact          = false;
      result_.failure = std::string("verify weights: ") + error.what();
    }
    result_.weights_intact = intact;
  }

  /// The timeline's ticks, the OOM mark, the disk totals and the host store's ratio.
  void finish()
  {
    std::vector<timeline_sample> ticks = sampler_->finish();
    result_.sampler_error              = sampler_->error();
    mode_timeline& t                   = result_.timeline;
    t.samples.insert(t.samples.end(), ticks.begin(), ticks.end());
    std::vector<timeline_mark> const late = marks_of(events_.take(), t.origin_s);
    t.marks.insert(t.marks.end(), late.begin(), late.end());
    sort_by_time(t);
    for (timeline_sample const& s : t.samples) {
      result_.peak_bytes = std::max(result_.peak_bytes, s.own_bytes);
    }
    t.completed  = result_.completed;
    result_.disk = difference(setup_.files->totals(), disk_before_);
    for (scenarios::model const* m : pipeline_.models()) {
      owner_.wait_for_compression(m->pool());
      pool_stats const s = owner_.stats(m->pool(), setup_.device);
      result_.stored_bytes += s.evicted_bytes;
      result_.host_bytes += s.host_bytes;
    }
  }

  demo_setup setup_;
  step_observer observe_;
  scenarios::event_recorder events_;
  allocator_options options_;
  watermarks marks_;
  allocator owner_;
  scenarios::seed001_pipeline pipeline_;
  read_totals disk_before_;
  read_totals disk_step_{disk_before_};
  mode_result result_;
  std::optional<timeline_sampler> sampler_;
  std::optional<scenarios::scenario_runner> runner_;
  std::size_t current_request_{0};
  std::size_t current_step_{0};
  std::size_t restored_in_request_{0};
};

}  // namespace detail

/**
 * @brief Runs `mode` for setup.requests requests (see the file comment).
 * @return how it went; an out-of-memory or another error ending the requests is in the
 *         result, not thrown.
 * @throws cuda_error, usage_error, std::runtime_error from setting the mode up (allocator,
 *         models, sampler) or from its end (statistics).
 */
[[nodiscard]] inline mode_result run_mode(demo_mode mode, demo_setup const& setup,
                                          step_observer observe = {})
{
  return detail::mode_run(mode, setup, std::move(observe)).run();
}

}  // namespace swapalloc::demo
