/**
 * @file event_log.hpp
 * @brief The allocator's event log: a bounded ring of what it did to memory (evictions,
 *        restores, prefetches, cache releases, out-of-memory failures, pressure level
 *        changes, refusals, leaks), each with its time, pool, device, bytes and duration,
 *        and an optional sink that is told of the events at or above a configured level.
 *
 * The ring keeps the last `capacity` events; when it is full the oldest is overwritten and
 * counted as dropped (`recorded() - events().size()`). The stats JSON reads the ring
 * (`events_json` in report.hpp); the sink is how events reach a log (report.hpp's
 * `log_to_stderr` writes one line per event, which is what the allocator installs when the
 * user gives no sink).
 *
 * Levels: every event carries the `log_level` it matters at, set by the recorder, normally
 * to `default_level(kind, new_level)` (a level_change's level depends on the pressure level
 * it moves to, which only the recorder knows; the log does not second-guess it). All events
 * are stored, whatever their level; only the sink is filtered (`passes`): with verbosity
 * `warn`, the sink sees `error` and `warn` events.
 *
 * **Lock order**: the log's mutex is a leaf. A recording thread may hold a device's mutex
 * and the registry's (pool_registry.hpp); the log takes its own after them and calls out to
 * nothing while holding it. While holding it, `record` only reads the clock and swaps the
 * event into a slot of the ring sized at construction: no allocation, no free.
 *
 * **Sinks** are called outside the log's mutex, on the recording thread, which may hold a
 * device's mutex: a sink must be short, must not call into the allocator (that would
 * deadlock or recurse), and must be safe to call from several threads at once. A sink that
 * throws loses that one call: the exception is caught and counted (`sink_failures`), the
 * event is stored all the same, and recording goes on.
 *
 * Thread safety: every member of `event_log` may be called from any thread.
 */
#pragma once

#include <swapalloc/config.hpp>
#include <swapalloc/policy.hpp>       // pressure_level
#include <swapalloc/scope_stack.hpp>  // pool_id

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace swapalloc {

/// What happened. `leak` is a pool's live blocks at shutdown (one event per pool and device).
enum class event_kind : std::uint8_t {
  evict,
  restore,
  prefetch,
  release_cached,
  out_of_memory,
  level_change,
  refusal,
  leak,
  compress
};

/// "evict", "restore", "prefetch", "release_cached", "out_of_memory", "level_change",
/// "refusal", "leak" or "compress". Pure; any thread.
[[nodiscard]] constexpr char const* to_string(event_kind kind) noexcept
{
  constexpr std::array<char const*, 9> names{"evict",          "restore",       "prefetch",
                                             "release_cached", "out_of_memory", "level_change",
                                             "refusal",        "leak",          "compress"};
  auto const index = static_cast<std::size_t>(kind);
  return index < names.size() ? names[index] : "?";
}

/**
 * @brief The level an event of `kind` matters at: `info` for evict, restore, prefetch,
 *        release_cached and compress (the allocator doing its job); `warn` for refusal and leak;
 * `error` for out_of_memory; for level_change, `warn` when the device moves to `new_level` critical
 * or emergency, `info` when it moves to safe or warning.
 * @param new_level the pressure level a level_change moves to; ignored for other kinds.
 * Pure; any thread.
 */
[[nodiscard]] constexpr log_level default_level(
  event_kind kind, pressure_level new_level = pressure_level::safe) noexcept
{
  switch (kind) {
    case event_kind::evict:
    case event_kind::restore:
    case event_kind::prefetch:
    case event_kind::release_cached:
    case event_kind::compress:
      return log_level::info;
    case event_kind::out_of_memory:
      return log_level::error;
    case event_kind::refusal:
    case event_kind::leak:
      return log_level::warn;
    case event_kind::level_change:
      return new_level >= pressure_level::critical ? log_level::warn : log_level::info;
  }
  return log_level::info;
}

/**
 * @brief Whether an event at `event_level` reaches a sink configured at `verbosity`: it does
 *        when `event_level` is at or above the verbosity (error > warn > info > debug).
 *        Verbosity `off` passes nothing, and an event at level `off` never passes.
 * Pure; any thread.
 */
[[nodiscard]] constexpr bool passes(log_level event_level, log_level verbosity) noexcept
{
  return event_level != log_level::off && event_level <= verbosity;
}

/// One event. Units: seconds, bytes, bytes per second.
struct swap_event {
  event_kind kind{event_kind::evict};
  log_level level{log_level::info};  ///< see default_level
  double time_s{-1.0};          ///< seconds since the log was created; negative: `record` stamps it
  std::optional<pool_id> pool;  ///< none for device-wide events (level_change, out_of_memory)
  std::string pool_name;        ///< empty when `pool` is none
  int device{0};                ///< the device's ordinal
  std::size_t bytes{0};         ///< bytes moved, released, refused or leaked; 0 when none
  double duration_s{0.0};       ///< how long it took; 0 when not timed
  std::string detail;           ///< free text: "WARNING -> CRITICAL", a refusal's reason, ...

  /// Bytes per second over the duration; 0 when the event was not timed (duration ≤ 0).
  [[nodiscard]] double throughput() const noexcept
  {
    return duration_s > 0.0 ? static_cast<double>(bytes) / duration_s : 0.0;
  }
};

/// Told of each event that passes the log's level; see the file comment for its contract.
using event_sink = std::function<void(swap_event const&)>;

/// How an event_log is set up.
struct event_log_options {
  std::size_t capacity{1024};        ///< events kept (≥ 1); older ones are overwritten
  log_level level{log_level::warn};  ///< the sink's verbosity (see `passes`)
  event_sink sink;                   ///< empty: no sink, events are only stored
};

/// The events in a log at one instant: `events` oldest first, and how many were ever
/// recorded (those not in `events` were overwritten).
struct event_snapshot {
  std::vector<swap_event> events;
  std::uint64_t recorded{0};
};

/// The allocator's bounded event ring. See the file comment.
class event_log {
 public:
  /**
   * @brief A log keeping the last `options.capacity` events, its clock started now.
   * @throws std::invalid_argument naming event_log_options::capacity when it is 0;
   *         std::bad_alloc if the ring cannot be allocated.
   */
  explicit event_log(event_log_options options = {})
    : ring_(checked_capacity(options.capacity)),
      level_(options.level),
      sink_(std::move(options.sink)),
      start_(std::chrono::steady_clock::now())
  {
  }

  event_log(event_log const&)            = delete;
  event_log& operator=(event_log const&) = delete;

  /**
   * @brief Stores `event`, overwriting the oldest when the ring is full, and then hands it
   *        to the sink when its level passes the log's (`passes`). An event whose time_s is
   *        negative is stamped with `now()` under the log's mutex, so stamped events are
   *        stored in time order; a non-negative time_s is kept as given.
   * @throws std::bad_alloc only when the event passes to a sink and cannot be copied for it
   *         (the copy is made before the event is stored; nothing is stored then). Whatever
   *         the sink throws is caught, counted in `sink_failures`, and dropped.
   * Thread safety: any thread; see the file comment on sinks and the lock order.
   */
  void record(swap_event event)
  {
    bool const to_sink = sink_ && passes(event.level, level_);
    std::optional<swap_event> told;
    if (to_sink) { told.emplace(event); }  // copied here: nothing allocates under the mutex
    {
      std::lock_guard const lock(mutex_);
      if (event.time_s < 0.0) { event.time_s = now(); }
      if (told) { told->time_s = event.time_s; }
      using std::swap;
      swap(ring_[static_cast<std::size_t>(recorded_ % ring_.size())], event);
      ++recorded_;
    }  // `event` now holds the overwritten one, freed here, outside the mutex
    if (!told) { return; }
    try {
      sink_(*told);
    } catch (...) {  // a failing log must not fail the allocator's work: drop and count
      sink_failures_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  /// The stored events, oldest first, with the count ever recorded, taken at one instant.
  /// Allocates the copy under the mutex (readers are rare). Thread safety: any thread.
  [[nodiscard]] event_snapshot snapshot() const
  {
    std::lock_guard const lock(mutex_);
    event_snapshot result;
    std::size_t const kept =
      recorded_ < ring_.size() ? static_cast<std::size_t>(recorded_) : ring_.size();
    result.events.reserve(kept);
    for (std::uint64_t at = recorded_ - kept; at < recorded_; ++at) {
      result.events.push_back(ring_[static_cast<std::size_t>(at % ring_.size())]);
    }
    result.recorded = recorded_;
    return result;
  }

  /// The stored events, oldest first (at most `capacity()`). Thread safety: any thread.
  [[nodiscard]] std::vector<swap_event> events() const { return snapshot().events; }

  /// Events ever recorded; those beyond `capacity()` were overwritten. Any thread.
  [[nodiscard]] std::uint64_t recorded() const
  {
    std::lock_guard const lock(mutex_);
    return recorded_;
  }

  /// Sink calls that threw (their exceptions were dropped). Any thread.
  [[nodiscard]] std::uint64_t sink_failures() const noexcept
  {
    return sink_failures_.load(std::memory_order_relaxed);
  }

  /// Seconds since the log was created (steady clock), for callers that time durations on
  /// the log's clock. Any thread.
  [[nodiscard]] double now() const noexcept
  {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

  /// The sink's verbosity. Any thread.
  [[nodiscard]] log_level level() const noexcept { return level_; }

  /// Events the ring keeps. Any thread.
  [[nodiscard]] std::size_t capacity() const noexcept { return ring_.size(); }

 private:
  [[nodiscard]] static std::size_t checked_capacity(std::size_t capacity)
  {
    if (capacity == 0) {
      throw std::invalid_argument(
        "swapalloc: event_log_options::capacity=0: expected a whole number of events >= 1");
    }
    return capacity;
  }

  mutable std::mutex mutex_;
  std::vector<swap_event> ring_;  // slot recorded_ % size is the next written; guarded
  std::uint64_t recorded_{0};     // guarded by mutex_
  std::atomic<std::uint64_t> sink_failures_{0};
  log_level const level_;
  event_sink const sink_;
  std::chrono::steady_clock::time_point const start_;
};

}  // namespace swapalloc
