/**
 * @file runner.hpp
 * @brief Runs a seed scenario step by step and records what the device did: after every
 *        step, the device's use and pressure level, each watched pool's resident, evicted
 *        and compressed bytes, and the allocator's events since the step before (the bytes
 *        evicted, restored and released). The records are data (`step_record`): the demo
 *        prints them and writes them as a timeline; the tests check them. Nothing here
 *        prints.
 *
 * - `event_recorder` is the allocator's event sink (allocator_options::log_sink, at level
 *   info so that it sees every event): it keeps the events until the runner takes them,
 *   and per-pool totals of the bytes each kind of event moved, for the whole run.
 * - `scenario_runner::step(name, work)` runs `work`, then samples the device
 *   (cuMemGetInfo for the device-wide use, the allocator's statistics for its own) and
 *   keeps the peak. Steps may run on several threads at once: each sample is then taken
 *   after its own step, and the events of a step are those recorded since the sample
 *   before, whichever thread's step caused them.
 *
 * One clock: `time_s` of records and of the events in them is seconds since the recorder
 * was made (the recorder re-stamps each event when it receives it; the sink runs on the
 * recording thread right after the event is stored, so the two clocks differ by the
 * sink's call only).
 *
 * Thread safety: every member of both classes may be called from any thread.
 */
#pragma once

#include <swapalloc/allocator.hpp>
#include <swapalloc/driver.hpp>
#include <swapalloc/event_log.hpp>

#include "model.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace swapalloc::scenarios {

/// Bytes each kind of event moved for one pool (or, for `pool` none, the device), summed.
struct event_totals {
  std::size_t evicted_bytes{0};     ///< evict events: pages whose data went to the host
  std::size_t restored_bytes{0};    ///< restore events
  std::size_t prefetched_bytes{0};  ///< prefetch events (restores started ahead of use)
  std::size_t released_bytes{0};    ///< release_cached events: pages given back without data
  std::size_t evict_events{0};
  std::size_t restore_events{0};  ///< restore and prefetch events

  /// Restored and prefetched bytes: everything that came back to the device.
  [[nodiscard]] std::size_t returned_bytes() const noexcept
  {
    return restored_bytes + prefetched_bytes;
  }
};

/// The allocator's event sink for a scenario. See the file comment.
class event_recorder {
 public:
  event_recorder() : state_(std::make_shared<shared>()) {}

  /**
   * @brief Makes `options` send every event to this recorder (log_level info). Events at
   *        or above `forward_level` also go on to `forward` (none when empty), so that a
   *        program can keep the usual stderr lines (report.hpp log_to_stderr).
   * The sink shares the recorder's state: it stays valid if the recorder goes first.
   */
  void install(allocator_options& options, event_sink forward = {},
               log_level forward_level = log_level::warn) const
  {
    options.log_level = log_level::info;
    options.log_sink  = [state = state_, forward = std::move(forward),
                        forward_level](swap_event const& event) {
      state->add(event);
      if (forward && passes(event.level, forward_level)) { forward(event); }
    };
  }

  /// Seconds since the recorder was made: the clock of the records.
  [[nodiscard]] double now() const noexcept { return state_->now(); }

  /// The events received since the last call (oldest first), with time_s re-stamped.
  [[nodiscard]] std::vector<swap_event> take()
  {
    std::lock_guard const lock(state_->mutex);
    return std::exchange(state_->pending, {});
  }

  /// Totals for pool `pool` since the recorder was made (device-wide events: nullopt).
  [[nodiscard]] event_totals totals(std::optional<pool_id> pool) const
  {
    std::lock_guard const lock(state_->mutex);
    auto const found = state_->totals.find(pool);
    return found != state_->totals.end() ? found->second : event_totals{};
  }

  /// Events received of `kind`, for pool `pool` (nullopt: any pool and the device's).
  [[nodiscard]] std::size_t count(event_kind kind, std::optional<pool_id> pool = std::nullopt) const
  {
    std::lock_guard const lock(state_->mutex);
    auto const& counts = state_->counts;
    std::size_t total  = 0;
    for (auto const& [key, n] : counts) {
      if (key.first == kind && (!pool || key.second == pool)) { total += n; }
    }
    return total;
  }

 private:
  struct shared {
    std::chrono::steady_clock::time_point const start = std::chrono::steady_clock::now();
    std::mutex mutex;
    std::vector<swap_event> pending;                        // guarded by mutex
    std::map<std::optional<pool_id>, event_totals> totals;  // guarded by mutex
    std::map<std::pair<event_kind, std::optional<pool_id>>, std::size_t> counts;  // guarded

    [[nodiscard]] double now() const noexcept
    {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }

    void add(swap_event event)
    {
      event.time_s = now();
      std::lock_guard const lock(mutex);
      event_totals& sum = totals[event.pool];
      switch (event.kind) {
        case event_kind::evict:
          sum.evicted_bytes += event.bytes;
          ++sum.evict_events;
          break;
        case event_kind::restore:
          sum.restored_bytes += event.bytes;
          ++sum.restore_events;
          break;
        case event_kind::prefetch:
          sum.prefetched_bytes += event.bytes;
          ++sum.restore_events;
          break;
        case event_kind::release_cached:
          sum.released_bytes += event.bytes;
          break;
        default:
          break;
      }
      ++counts[{event.kind, event.pool}];
      pending.push_back(std::move(event));
    }
  };

  std::shared_ptr<shared> state_;
};

/// One watched pool at the end of a step. Bytes.
struct pool_sample {
  pool_id pool{0};
  std::string name;
  pool_priority priority{pool_priority::normal};
  std::size_t resident_bytes{0};    ///< pages on the device (stats reserved_bytes)
  std::size_t allocated_bytes{0};   ///< in live blocks
  std::size_t evicted_bytes{0};     ///< pages whose data is in host memory
  std::size_t compressed_bytes{0};  ///< host memory holding them (stats host_bytes)
};

/**
 * @brief What one step did and how the device stood after it. Units: seconds (on the
 *        recorder's clock), bytes. The record type the demo prints and writes as a
 *        timeline.
 */
struct step_record {
  std::size_t index{0};              ///< 0 for the first step of the runner, in order of completion
  std::string name;                  ///< the step, e.g. "request 3: flux-inpaint"
  double start_s{0.0};               ///< when the step began
  double time_s{0.0};                ///< when it ended (the sample's time)
  std::size_t device_used_bytes{0};  ///< device-wide, other processes included (cuMemGetInfo)
  std::size_t device_total_bytes{0};  ///< the device's memory
  std::size_t own_bytes{0};           ///< this allocator's resident pages, every pool
  std::size_t limit_bytes{0};         ///< what the policy lets this process hold
  double high_watermark{0.0};         ///< fractions of the limit
  double low_watermark{0.0};
  pressure_level pressure{pressure_level::safe};  ///< allocator::pressure after the step
  std::vector<pool_sample> pools;                 ///< the watched pools, in watch order
  std::size_t evicted_bytes{0};                   ///< since the previous sample: evict events
  std::size_t restored_bytes{0};                  ///< restore and prefetch events
  std::size_t released_bytes{0};                  ///< release_cached events
  std::vector<swap_event> events;                 ///< the events since the previous sample
  std::vector<std::uint64_t> outputs;  ///< the step's output hashes, as `work` returned them

  /// Bytes moved over the link since the previous sample, both directions.
  [[nodiscard]] std::size_t moved_bytes() const noexcept { return evicted_bytes + restored_bytes; }
  /// Seconds the step took.
  [[nodiscard]] double duration_s() const noexcept { return time_s - start_s; }
};

/// Told of each record as soon as it is made (on the step's thread, outside the runner's
/// lock): a demo prints a line. Must be safe to call from several threads at once.
using step_callback = std::function<void(step_record const&)>;

/// Runs steps and samples the device after each one. See the file comment.
class scenario_runner {
 public:
  /**
   * @param keep_records false: records go to `on_step` only (a long soak keeps its host
   *        memory flat); the peaks are kept either way.
   * @pre `owner`, `drv` and `events` (installed in `owner`'s options) outlive the runner.
   * @throws cuda_error if the device's primary context cannot be retained (the runner reads
   *         cuMemGetInfo in it, on whichever thread a step ends).
   */
  scenario_runner(allocator& owner, driver const& drv, int device, event_recorder& events,
                  step_callback on_step = {}, bool keep_records = true)
    : owner_(&owner),
      driver_(&drv),
      device_(device),
      events_(&events),
      on_step_(std::move(on_step)),
      keep_(keep_records),
      cu_device_(drv.device(device)),
      context_(drv.retain_primary_context(cu_device_))
  {
  }
  scenario_runner(scenario_runner const&)            = delete;
  scenario_runner& operator=(scenario_runner const&) = delete;
  ~scenario_runner() { (void)driver_->table().cuDevicePrimaryCtxRelease(cu_device_); }

  /// Samples pool `pool` after every step from now on, under `name` and `priority`.
  void watch(pool_id pool, std::string name, pool_priority priority)
  {
    std::lock_guard const lock(mutex_);
    watched_.push_back({pool, std::move(name), priority});
  }
  /// Samples `m`'s pool after every step from now on.
  void watch(model const& m) { watch(m.pool(), m.name(), m.priority()); }
  /// Stops sampling pool `pool` (before it is destroyed).
  void unwatch(pool_id pool)
  {
    std::lock_guard const lock(mutex_);
    std::erase_if(watched_, [&](watched const& w) { return w.pool == pool; });
  }

  /**
   * @brief Runs `work` (which returns the step's output hashes, possibly none), then
   *        samples the device and records the step.
   * @return the step's record (a copy: other threads may be adding theirs).
   * @throws what `work` throws (nothing is recorded then); cuda_error, usage_error from
   *         sampling.
   */
  template <class Work>
  step_record step(std::string name, Work&& work)
  {
    double const start = events_->now();
    std::vector<std::uint64_t> outputs;
    if constexpr (std::is_void_v<decltype(work())>) {
      std::forward<Work>(work)();
    } else {
      outputs = std::forward<Work>(work)();
    }
    step_record record;
    record.name    = std::move(name);
    record.start_s = start;
    record.outputs = std::move(outputs);
    sample(record);
    {
      std::lock_guard const lock(mutex_);
      record.index = count_++;
      if (keep_) { records_.push_back(record); }
    }
    if (on_step_) { on_step_(record); }
    return record;
  }

  /// The records kept, in order of completion (empty with keep_records false).
  [[nodiscard]] std::vector<step_record> records() const
  {
    std::lock_guard const lock(mutex_);
    return records_;
  }
  /// Steps recorded so far.
  [[nodiscard]] std::size_t steps() const
  {
    std::lock_guard const lock(mutex_);
    return count_;
  }
  /// The highest device-wide use seen after a step (other processes included), bytes.
  [[nodiscard]] std::size_t peak_device_used_bytes() const
  {
    std::lock_guard const lock(mutex_);
    return peak_used_;
  }
  /// The highest use of this allocator seen after a step, bytes.
  [[nodiscard]] std::size_t peak_own_bytes() const
  {
    std::lock_guard const lock(mutex_);
    return peak_own_;
  }
  /// The name of the step after which the device-wide peak was seen.
  [[nodiscard]] std::string peak_step() const
  {
    std::lock_guard const lock(mutex_);
    return peak_step_;
  }

 private:
  struct watched {
    pool_id pool;
    std::string name;
    pool_priority priority;
  };

  /// Fills `record` with the device and the watched pools now, and the events since the
  /// last sample; notes the peaks.
  void sample(step_record& record)
  {
    std::vector<watched> pools;
    {
      std::lock_guard const lock(mutex_);
      pools = watched_;
    }
    for (watched const& w : pools) {
      pool_stats const s = owner_->stats(w.pool, device_);
      record.pools.push_back({w.pool, w.name, w.priority, s.reserved_bytes, s.allocated_bytes,
                              s.evicted_bytes, s.host_bytes});
    }
    record.pressure  = owner_->pressure(device_);
    record.own_bytes = owner_->device_stats(device_).reserved_bytes;
    context_scope const current(*driver_, context_);
    driver::memory_info const info = driver_->mem_get_info();
    record.device_total_bytes      = info.total;
    record.device_used_bytes       = info.total - info.free;
    read_budget(record);
    record.events = events_->take();
    for (swap_event const& event : record.events) {
      if (event.kind == event_kind::evict) { record.evicted_bytes += event.bytes; }
      if (event.kind == event_kind::restore || event.kind == event_kind::prefetch) {
        record.restored_bytes += event.bytes;
      }
      if (event.kind == event_kind::release_cached) { record.released_bytes += event.bytes; }
    }
    record.time_s = events_->now();
    note_peak(record);
  }

  /// The limit and watermarks the allocator applies (stats_json's "pressure"), read once,
  /// after the device's first use.
  void read_budget(step_record& record)
  {
    {
      std::lock_guard const lock(mutex_);
      if (budget_read_) {
        record.limit_bytes    = limit_;
        record.high_watermark = high_;
        record.low_watermark  = low_;
        return;
      }
    }
    nlohmann::json const stats   = owner_->stats_json();
    nlohmann::json const& device = stats.at("devices").at(static_cast<std::size_t>(device_));
    if (!device.contains("pressure")) { return; }
    nlohmann::json const& pressure = device.at("pressure");
    std::lock_guard const lock(mutex_);
    limit_                = pressure.at("limit_bytes").get<std::size_t>();
    high_                 = pressure.at("high_watermark").get<double>();
    low_                  = pressure.at("low_watermark").get<double>();
    budget_read_          = true;
    record.limit_bytes    = limit_;
    record.high_watermark = high_;
    record.low_watermark  = low_;
  }

  void note_peak(step_record const& record)
  {
    std::lock_guard const lock(mutex_);
    peak_own_ = std::max(peak_own_, record.own_bytes);
    if (record.device_used_bytes > peak_used_) {
      peak_used_ = record.device_used_bytes;
      peak_step_ = record.name;
    }
  }

  allocator* owner_;
  driver const* driver_;
  int device_;
  event_recorder* events_;
  step_callback on_step_;
  bool keep_;
  CUdevice cu_device_;
  CUcontext context_;
  mutable std::mutex mutex_;
  std::vector<watched> watched_;      // guarded by mutex_
  std::vector<step_record> records_;  // guarded by mutex_
  std::size_t count_{0};              // guarded by mutex_
  std::size_t peak_used_{0};          // guarded by mutex_
  std::size_t peak_own_{0};           // guarded by mutex_
  std::string peak_step_;             // guarded by mutex_
  bool budget_read_{false};           // guarded by mutex_
  std::size_t limit_{0};              // guarded by mutex_
  double high_{0.0};                  // guarded by mutex_
  double low_{0.0};                   // guarded by mutex_
};

}  // namespace swapalloc::scenarios
