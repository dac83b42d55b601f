/**
 * @file device_events.hpp
 * @brief Records what happens on a device in the event log (event_log.hpp), as events with
 *        their pool, device memory in bytes, duration and detail: evictions (with the pages
 *        given back without data as a separate release), releases of cached pages, the
 *        steps of a room plan, restores and prefetches, refusals, out-of-memory failures,
 *        changes of the pressure level, and the leak report. Formatting is report.hpp's;
 *        deciding when to record is the caller's (room_maker.hpp, allocator.hpp).
 *
 * Thread safety: every member that reads a device expects its mutex held; the event log
 * has its own lock.
 */
#pragma once

#include <swapalloc/device_state.hpp>
#include <swapalloc/event_log.hpp>
#include <swapalloc/policy.hpp>
#include <swapalloc/report.hpp>

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>

namespace swapalloc {

/// The events of every device of one allocator. See the file comment.
class device_events {
 public:
  /// @pre `log` outlives this. `marks`: the watermarks the pressure levels are taken at.
  device_events(event_log& log, watermarks marks) noexcept : log_(&log), marks_(marks) {}

  /**
   * @brief Records an event of `kind` about pool `id` (none: the device) on `state`, at
   *        the kind's default level (event_log.hpp). `bytes`: device memory; `seconds`:
   *        how long it took (0: not timed); `level` overrides the kind's (a failure).
   *        @pre state locked.
   */
  void note(event_kind kind, device_state const& state, std::optional<pool_id> id,
            std::size_t bytes, double seconds, std::string detail,
            std::optional<log_level> level = std::nullopt) const
  {
    swap_event event;
    event.kind  = kind;
    event.level = level.value_or(default_level(kind));
    event.pool  = id;
    if (pool_residency const* const pool = id ? state.pool(*id) : nullptr; pool != nullptr) {
      event.pool_name = pool->pool().name();
    }
    event.device     = state.ordinal();
    event.bytes      = bytes;
    event.duration_s = seconds;
    event.detail     = std::move(detail);
    log_->record(std::move(event));
  }

  /**
   * @brief Records what an eviction of pool `id` did: an `evict` event with the bytes
   *        whose data went to the host (they come back at restore), a `release_cached`
   *        one for the pages it gave back without data, a `refusal` if the host budget
   *        kept pages. `detail` says who asked. @pre state locked.
   */
  void note_eviction(device_state const& state, pool_id id, evict_result const& done,
                     double seconds, std::string const& detail) const
  {
    pool_residency const* const pool = state.pool(id);
    std::size_t const page           = pool != nullptr ? pool->pool().page_size() : 0;
    std::size_t const released       = done.pages_released * page;
    note(event_kind::evict, state, id,
         done.released_bytes - std::min(released, done.released_bytes), seconds,
         detail + ": " + bytes_text(done.bytes_copied) + " over the link");
    if (released != 0) {
      note(event_kind::release_cached, state, id, released, 0, detail + ": pages without data");
    }
    if (!done.refused.empty()) { note(event_kind::refusal, state, id, 0, 0, done.refused); }
  }

  /// Records the steps of a plan carried out for `reason`.
  void note_steps(device_state const& state, room_result const& done, room_reason reason) const
  {
    std::string const why = std::string("policy: ") + to_string(reason);
    for (room_step_done const& step : done.steps) {
      if (step.what == room_step::action::evict) {
        note_eviction(state, step.pool, step.evicted, step.seconds, why);
      } else if (step.bytes != 0) {
        note(event_kind::release_cached, state, step.pool, step.bytes, step.seconds, why);
      }
    }
  }

  /// Records a level_change event if `usage` puts `state` at another pressure level than
  /// the last one seen. Cost: a compare, unless it changed. @pre state locked.
  void note_level(device_state& state, device_usage usage) const
  {
    pressure_level const now = pressure_of(usage, marks_);
    pressure_level const was = state.exchange_level(now);
    if (now == was) { return; }
    swap_event event;
    event.kind   = event_kind::level_change;
    event.level  = default_level(event_kind::level_change, now);
    event.device = state.ordinal();
    event.bytes  = usage.own_bytes;
    event.detail = std::string(to_string(was)) + " -> " + to_string(now) + " (" +
                   detail::fraction_text(use_fraction(usage)) + " of the limit in use)";
    log_->record(std::move(event));
  }

  /// Records a `leak` event for each pool with live blocks on `state` (the allocator's
  /// destruction). @pre state locked.
  void note_leaks(device_state const& state) const
  {
    for (pool_leak const& leak : state.leaks(leak_sizes_shown)) {
      note(event_kind::leak, state, leak.pool, leak.bytes, 0,
           "allocator destroyed with " + leak_detail(leak.blocks, leak.largest));
    }
  }

  /// Pool `id`'s live blocks on `state` as one line (report.hpp leak_text). @pre locked.
  [[nodiscard]] static std::string leak_line(device_state const& state, pool_id id)
  {
    for (pool_leak const& leak : state.leaks(leak_sizes_shown)) {
      if (leak.pool == id) {
        return leak_text(leak.name, state.ordinal(), leak.blocks, leak.bytes, leak.largest);
      }
    }
    return "none";
  }

  /// The watermarks the pressure levels are taken at.
  [[nodiscard]] watermarks marks() const noexcept { return marks_; }

 private:
  event_log* log_;
  watermarks marks_;
};

}  // namespace swapalloc
