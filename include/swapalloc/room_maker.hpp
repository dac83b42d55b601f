/**
 * @file room_maker.hpp
 * @brief Carries the policy out on one device (DESIGN §8): room made before every map, the
 *        out-of-memory ladder of an allocation and of a restore, `ensure_free`, the
 *        monitor's step, and the out-of-memory report with its advice. The decisions are
 *        policy.hpp's pure functions; the moves are device_state.hpp's; this file orders
 *        them, and the facade (allocator.hpp) only routes to it.
 *
 * - **Making room** takes the device's engine lease first (device_state.hpp), then reads
 *   the use and plans (policy.hpp plan_room), then carries the plan out. The device's
 *   lock is released while a step waits, so other pools' calls go on; the lease keeps a
 *   second planner from planning from the same use.
 * - **Out of memory** (cuMemCreate's, or this process's device limit): every pool's cached
 *   pages are released, everything the policy allows is evicted, then one retry; then
 *   `out_of_memory` with the device's pool table and what would have fit.
 * - **The compression workers** are one set for every device, started at the first
 *   eviction, owned here.
 * - **Events** (device_events.hpp): every step carried out (release, eviction, refusal),
 *   every restore and prefetch, every out-of-memory failure and every change of the
 *   device's pressure level is recorded, with its pool, bytes of device memory and duration.
 *
 * Thread safety: every member expects the device's mutex held through the `lock` it is
 * given (and may release it while waiting, as above); the registry's lock is taken
 * after it. The workers are started once, from any thread.
 */
#pragma once

#include <swapalloc/compression_policy.hpp>
#include <swapalloc/config.hpp>
#include <swapalloc/device_events.hpp>
#include <swapalloc/device_state.hpp>
#include <swapalloc/errors.hpp>
#include <swapalloc/event_log.hpp>
#include <swapalloc/policy.hpp>
#include <swapalloc/pool_registry.hpp>
#include <swapalloc/report.hpp>
#include <swapalloc/transfer.hpp>
#include <swapalloc/worker_pool.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace swapalloc {

/// What the room maker needs of the allocator's settings (allocator_options, resolved).
struct room_settings {
  watermarks marks;
  std::optional<swapalloc::device_limit> device_limit;  ///< unset: the device's total
  bool automatic_eviction{true};  ///< false: room only for ensure_free and the monitor
  pool_defaults defaults;
  host_store_options host;
  transfer_options transfer;
  std::size_t workers{1};            ///< compression threads, started at the first eviction
  compression_settings compression;  ///< when copies are compressed
};

/// Carries the policy out on a device. See the file comment.
class room_maker {
 public:
  /// @pre `registry` and `events` outlive the room maker.
  room_maker(driver const& drv, pool_registry const& registry, device_events& events,
             room_settings settings)
    : driver_(&drv), registry_(&registry), events_(&events), settings_(settings)
  {
  }

  [[nodiscard]] watermarks marks() const noexcept { return settings_.marks; }

  /// The limit on `state`'s device: the one set there at run time, else the configured
  /// one; unset: none. @pre locked.
  [[nodiscard]] std::optional<device_limit> const& limit_setting(device_state const& state) const
  {
    return state.limit_override() ? state.limit_override() : settings_.device_limit;
  }

  /// What this process may hold on `state`'s device: its limit (limit_setting), else the
  /// device's total. @pre locked, state's context was ensured.
  [[nodiscard]] std::size_t limit_of(device_state const& state) const
  {
    std::size_t const total                  = state.total_bytes();
    std::optional<device_limit> const& limit = limit_setting(state);
    return limit ? limit->resolve(total) : total;
  }

  /// The compression workers, shared by every device, started at the first call.
  [[nodiscard]] worker_pool& workers()
  {
    std::call_once(workers_started_,
                   [&] { workers_ = std::make_unique<worker_pool>(settings_.workers); });
    return *workers_;
  }

  /// Creates `state`'s swap tier if it has none. @pre locked, context current.
  void ensure_swap_tier(device_state& state)
  {
    state.ensure_swap_tier(workers(), settings_.host, settings_.transfer, settings_.compression);
  }

  /**
   * @brief The free pinned host room `state` should hold for its next eviction
   *        (policy.hpp pinned_reserve_bytes, the host taken as not short of memory: the
   *        caller asks). When it is not 0, creates the swap tier, so that the room can be
   *        pinned before the device's first eviction. Cost below the low watermark: a
   *        usage reading (at most one cuMemGetInfo per 10 ms); from it, a walk over every
   *        pool's pages. @pre locked. @throws cuda_error (usage reading, context);
   *        std::bad_alloc.
   */
  [[nodiscard]] std::size_t host_reserve(device_state& state)
  {
    if (state.context() == nullptr) { return 0; }  // nothing allocated here yet
    context_scope const current(*driver_, state.context());
    device_usage const usage = state.usage(limit_of(state));
    if (pressure_of(usage, settings_.marks) == pressure_level::safe) { return 0; }  // no walk
    auto const entry_of = [&](pool_id pool) { return registry_->entry(pool, "host_reserve"); };
    std::vector<pool_view> const views = state.views(entry_of);
    std::size_t const bytes            = pinned_reserve_bytes(usage, views, settings_.marks, false);
    if (bytes != 0) { ensure_swap_tier(state); }
    return bytes;
  }

  /**
   * @brief Makes room for `bytes` about to be mapped on `state`, as the policy plans it
   *        for `reason`: cached pages first, then the coldest eligible pools. Pool
   *        `requester` (being allocated into, activated or restored) is never a victim.
   * @return what was done; a failed step is in `error`, the others still ran.
   * @pre `lock` holds state's mutex, context current, no engine lease held by the caller.
   */
  room_result make_room(device_state& state, std::unique_lock<std::mutex>& lock, pool_id requester,
                        std::size_t bytes, room_reason reason)
  {
    return make_room_for(
      state, lock, requester, [bytes] { return bytes; }, reason);
  }

  /**
   * @brief As `make_room`, for the bytes `needed()` returns: read before the lease and
   *        again after its wait, because the lease may wait for a transfer that changed
   *        them (a restore of the same pool by another thread, which then needs nothing).
   */
  template <typename Needed>
  room_result make_room_for(device_state& state, std::unique_lock<std::mutex>& lock,
                            pool_id requester, Needed&& needed, room_reason reason)
  {
    if (!settings_.automatic_eviction && reason != room_reason::ensure_free &&
        reason != room_reason::monitor) {
      return {};
    }
    // Cheap test first: most maps need no room, and take no lease.
    device_usage const before = state.usage(limit_of(state));
    events_->note_level(state, before);
    if (bytes_to_free(before, needed(), settings_.marks, reason) == 0) { return {}; }
    pool_controls::engine_lease const lease(state.controls(), lock);
    device_usage const usage = state.usage(limit_of(state));  // again: the lease may wait
    std::size_t const bytes  = needed();
    if (bytes_to_free(usage, bytes, settings_.marks, reason) == 0) { return {}; }
    auto const entry_of = [&](pool_id pool) { return registry_->entry(pool, "make_room"); };
    std::vector<pool_view> views = state.views(entry_of);
    for (pool_view& view : views) {
      view.pinned = view.pinned || view.id == requester;
    }
    room_plan const plan = plan_room(usage, views, bytes, settings_.marks, reason);
    if (std::any_of(plan.steps.begin(), plan.steps.end(),
                    [](room_step step) { return step.what == room_step::action::evict; })) {
      ensure_swap_tier(state);
    }
    room_result done = state.make_room(plan, entry_of, reason, lock);
    if (!done.evicted.empty()) { compress_raw_copies(state); }
    events_->note_steps(state, done, reason);
    note_level_now(state);
    return done;
  }

  /**
   * @brief Hands `state`'s raw host copies to compression as the compression policy plans
   *        (device_state::compress_raw_copies), under an engine lease: the pressure
   *        monitor's step. @return host bytes of raw copies handed over.
   * @pre `lock` holds state's mutex, no engine lease held by the caller.
   * @throws std::bad_alloc (what was handed over is compressed; the rest stays raw).
   */
  std::size_t compress_host(device_state& state, std::unique_lock<std::mutex>& lock)
  {
    // Cheap test first, as make_room's: most passes find nothing raw and take no lease.
    if (state.store() == nullptr || !state.any_deferred()) { return 0; }
    pool_controls::engine_lease const lease(state.controls(), lock);
    return compress_and_note(state);
  }

  /**
   * @brief A block of `rounded` bytes (`bytes` asked) in pool `id` on `state`, room made
   *        first; on out-of-memory, the ladder of the file comment.
   * @throws out_of_memory with the pool table; cuda_error from a failing driver call
   *         (nothing allocated); what pool_for throws.
   * @pre `lock` holds state's mutex; pool `id` is not moving.
   */
  block* allocate(device_state& state, std::unique_lock<std::mutex>& lock, pool_id id,
                  std::size_t bytes, std::size_t rounded, stream_tag tag)
  {
    handle_cache::armed const reuse(state.handles());  // evicted pages feed the map
    state.ensure_context();
    context_scope const current(*driver_, state.context());
    pool_residency& pool = state.pool_for(
      id, [&](pool_id fresh) { return registry_->entry(fresh, "allocate"); }, settings_.defaults);
    std::size_t const range = pool.pool().capacity();
    if (rounded == 0 || rounded > range) {
      fail(state, id, bytes, asked(bytes, pool),
           "the request exceeds the pool's capacity of " + bytes_text(range) +
             " (its reserved address range); nothing can be freed to make it fit");
    }
    std::size_t const page = pool.pool().page_size();
    room_result const first =
      make_room(state, lock, id, (rounded + page - 1) / page * page, room_reason::map);
    state.wait_while_moving(lock, id);  // never evicted (requester), but maybe being restored
    bool device_full = false;
    if (block* const found = try_allocate(state, pool, rounded, bytes, tag, device_full)) {
      note_level_now(state);  // a map may move the level
      return found;
    }
    std::size_t const released = release_for_retry(state, lock);
    room_result const room     = make_room(state, lock, id, rounded, room_reason::out_of_memory);
    state.wait_while_moving(lock, id);
    if (block* const found = try_allocate(state, pool, rounded, bytes, tag, device_full)) {
      note_level_now(state);  // a map may move the level
      return found;
    }
    std::size_t const cached = first.released_bytes + released + room.released_bytes;
    std::string const why =
      device_full
        ? "its block needs " + bytes_text(pool.pool().last_map_bytes()) + " of new pages" +
            limit_text(state) +
            free_after_text(state.memory(), cached, first.evicted_bytes + room.evicted_bytes)
        : "the pool's address range of " + bytes_text(range) + " has no free run of " +
            bytes_text(rounded) + " (released " + bytes_text(cached) +
            " of cached pages and retried)";
    fail(state, id, bytes, asked(bytes, pool), why);
  }

  /**
   * @brief Restores pool `id` (`pool`) on `state`: room first; when the device is full
   *        even so, every pool's cached pages are released and what the policy allows is
   *        evicted, and the restore retried once. `stream` (if not null) waits for it.
   * @throws out_of_memory with the pool table; cuda_error, restore_error (the pool stays
   *         evicted, every host copy intact).
   * @pre `lock` holds state's mutex, context current, no engine lease held by the caller.
   */
  restore_result restore(device_state& state, std::unique_lock<std::mutex>& lock, pool_id id,
                         pool_residency& pool, CUstream stream,
                         event_kind kind = event_kind::restore)
  {
    handle_cache::armed const reuse(state.handles());  // evicted pages feed the restore
    std::size_t const needed = evicted_bytes(pool);    // restoring pages are mapped already
    auto const still_needed  = [&] { return evicted_bytes(pool); };  // after the lease's wait
    room_result const first  = make_room_for(state, lock, id, still_needed, room_reason::map);
    if (auto done = restore_unless_full(state, lock, id, pool, stream, kind)) {
      note_level_now(state);
      return *done;
    }
    std::size_t const released = release_for_retry(state, lock);
    room_result const room =
      make_room_for(state, lock, id, still_needed, room_reason::out_of_memory);
    if (auto done = restore_unless_full(state, lock, id, pool, stream, kind)) {
      note_level_now(state);
      return *done;
    }
    fail(
      state, id, needed,
      "restoring pool '" + pool.pool().name() + "' (" + bytes_text(needed) + " of evicted pages)",
      "its pages need " + bytes_text(needed) + " of device memory" + limit_text(state) +
        free_after_text(state.memory(), first.released_bytes + released + room.released_bytes,
                        first.evicted_bytes + room.evicted_bytes));
  }

  /**
   * @brief `ensure_free`: makes room so that `bytes` can be mapped on `state` without
   *        passing the high watermark. @throws out_of_memory with the table if it cannot;
   *        cuda_error from a failed step, after the others ran.
   * @pre `lock` holds state's mutex, context current.
   */
  room_result ensure_free(device_state& state, std::unique_lock<std::mutex>& lock,
                          std::size_t bytes)
  {
    room_result done = make_room(state, lock, default_pool, bytes, room_reason::ensure_free);
    if (done.error) { std::rethrow_exception(done.error); }
    device_usage const after = state.usage(limit_of(state));
    if (bytes_to_free(after, bytes, settings_.marks, room_reason::ensure_free) == 0) {
      return done;
    }
    fail(state, std::nullopt, bytes, "ensure_free(" + bytes_text(bytes) + ")",
         "freed " + bytes_text(done.freed_bytes()) + ", and mapping " + bytes_text(bytes) +
           " more would still pass the high watermark of " +
           detail::fraction_text(settings_.marks.high) + limit_text(state) +
           "; what remains is pinned, active, critical or not evictable");
  }

  /// note_level with the device's use now. @pre state locked, context current.
  void note_level_now(device_state& state) const
  {
    events_->note_level(state, state.usage(limit_of(state)));
  }

  /// An explicit eviction's outcome: what was done, or why it was refused.
  struct explicit_eviction {
    evict_result done;
    std::string refused;  ///< non-empty: the end of "refused, ..." (nothing was done)
  };

  /**
   * @brief allocator::evict: pool `id` (`entry`) on `state`, page by page until `bytes` are
   *        released, after its last use, under an engine lease; noted as an `evict` event,
   *        or as a `refusal` when the pool is critical, pinned, active or not evictable
   *        (checked under the lease). A prefetched pool goes too: it was asked for by name.
   * @throws cuda_error as device_state::evict. @pre `lock` holds state's mutex, no lease.
   */
  explicit_eviction evict(device_state& state, std::unique_lock<std::mutex>& lock, pool_id id,
                          pool_entry const& entry, std::size_t bytes)
  {
    pool_controls::engine_lease const lease(state.controls(), lock);  // then nothing moves
    if (refusal const why = eviction_refusal(state, id, entry);
        why != refusal::none && why != refusal::prefetched) {
      std::string sentence = refusal_sentence(id, why, state.controls().pins(id));
      events_->note(event_kind::refusal, state, id, 0, 0, "evict refused: " + sentence);
      return {{}, std::move(sentence)};
    }
    pool_residency* const pool = state.pool(id);
    if (pool == nullptr || state.context() == nullptr) { return {}; }
    context_scope const current(*driver_, state.context());
    std::optional<pool_controls::moving_pool> mark;
    mark.emplace(state.controls(), id);
    auto const start = std::chrono::steady_clock::now();
    state.wait_for_pool(id, wait_gate(lock));  // its own last use, else the device's work
    ensure_swap_tier(state);
    evict_result done = state.evict(
      *pool, bytes, codec_choice{entry.options.dtype, entry.options.codec}, wait_gate(lock));
    mark.reset();  // the pool is no longer moving: its own copies may be chosen too
    if (done.pages_copied != 0) { compress_raw_copies(state); }
    state.controls().set_prefetched(id, false);
    events_->note_eviction(state, id, done, seconds_since(start), "explicit");
    return {std::move(done), {}};
  }

  /**
   * @brief The prefetch thread's task: restores pool `id` on `state` as `restore` does
   *        (a `prefetch` event); if no activation came meanwhile and it restored pages,
   *        marks the pool prefetched. A failure is a warn event: the pool stays evicted
   *        with its copies, for `activate` to restore and report.
   * @pre `lock` holds state's mutex, context current, no engine lease held.
   */
  void prefetch(device_state& state, std::unique_lock<std::mutex>& lock, pool_id id)
  {
    pool_residency* const pool = state.pool(id);
    if (pool == nullptr || pool->pool().parked_pages() == 0) { return; }
    std::uint64_t const used = state.controls().last_use(id);
    try {
      restore_result const done = restore(state, lock, id, *pool, nullptr, event_kind::prefetch);
      if (done.pages != 0 && state.controls().last_use(id) == used &&
          state.controls().pins(id) == 0) {
        state.controls().set_prefetched(id, true);
      }
    } catch (std::exception const& error) {
      events_->note(event_kind::prefetch, state, id, 0, 0,
                    std::string("failed (activate will restore it): ") + error.what(),
                    log_level::warn);
    }
  }

  /// Why pool `id` cannot be evicted on `state` now (policy.hpp refusal_of), or
  /// refusal::none. Having nothing resident is no refusal here. @pre locked.
  [[nodiscard]] static refusal eviction_refusal(device_state const& state, pool_id id,
                                                pool_entry const& entry) noexcept
  {
    refusal const why = refusal_of(state.view(id, entry), room_reason::map);
    return why == refusal::nothing_resident ? refusal::none : why;
  }

  /// `why` as the end of a sentence about pool `id`, with its `pins`.
  [[nodiscard]] static std::string refusal_sentence(pool_id id, refusal why, std::size_t pins)
  {
    switch (why) {
      case refusal::pinned_or_active:
        return "it is pinned or active (" + std::to_string(pins) + " pins: it is in use)";
      case refusal::critical:
        return "its priority is critical";
      case refusal::not_evictable:
        return id == default_pool ? "it is the default pool"
                                  : "it was created with evictable = false";
      default:
        return to_string(why);
    }
  }

 private:
  /// compress_host's step after an eviction, under its lease: what the budget or idle
  /// pools need now, so that no monitor is needed for it. Out of memory skips it (the
  /// copies stay raw, restorable).
  void compress_raw_copies(device_state& state) const noexcept
  {
    try {
      (void)compress_and_note(state);
    } catch (...) {  // NOLINT(bugprone-empty-catch): the copies stay raw; a later step retries
    }
  }

  /// Hands raw copies to compression (device_state::compress_raw_copies) and notes a
  /// `compress` event per pool. @return the bytes handed over. @pre locked, a lease.
  std::size_t compress_and_note(device_state& state) const
  {
    auto const entry_of = [&](pool_id pool) { return registry_->entry(pool, "compress_host"); };
    std::size_t total   = 0;
    for (compression_handed const& done : state.compress_raw_copies(entry_of)) {
      total += done.bytes;
      long const percent = std::lround(100.0 * done.host_use);
      events_->note(event_kind::compress, state, done.pool, done.bytes, 0,
                    "raw host copies handed to compression (idle " +
                      duration_text(std::chrono::duration<double>(done.idle).count()) +
                      ", host store at " + std::to_string(percent) + "% of its limit)");
    }
    return total;
  }

  [[nodiscard]] static double seconds_since(std::chrono::steady_clock::time_point start) noexcept
  {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  /// Records the out-of-memory and throws it, with the report of `state`.
  [[noreturn]] void fail(device_state const& state, std::optional<pool_id> id, std::size_t bytes,
                         std::string const& request, std::string const& why) const
  {
    events_->note(event_kind::out_of_memory, state, id, bytes, 0, request + ": " + why);
    state.counters().ooms.fetch_add(1, std::memory_order_relaxed);
    throw out_of_memory(oom_text(state, request, why), bytes, state.ordinal());
  }

  /// Out of memory: releases every pool's cached pages before the one retry (noted).
  std::size_t release_for_retry(device_state& state, std::unique_lock<std::mutex>& lock) const
  {
    std::size_t const released = state.release_for_retry(lock);
    state.counters().alloc_retries.fetch_add(1, std::memory_order_relaxed);
    if (released != 0) {
      events_->note(event_kind::release_cached, state, std::nullopt, released, 0,
                    "every pool's cached pages, before the out-of-memory retry");
    }
    return released;
  }

  [[nodiscard]] static std::string asked(std::size_t bytes, pool_residency const& pool)
  {
    return "allocating " + bytes_text(bytes) + " (" + std::to_string(bytes) + " bytes) in pool '" +
           pool.pool().name() + "'";
  }

  [[nodiscard]] static std::size_t evicted_bytes(pool_residency const& pool) noexcept
  {
    device_pool const& pages = pool.pool();
    return pages.page_size() * pages.blocks().pages().count(page_state::evicted);
  }

  /// The restore under an engine lease, or nothing when the device was out of memory.
  /// A pool restored meanwhile (another caller's restore or prefetch) gives a no-op.
  [[nodiscard]] std::optional<restore_result> restore_unless_full(
    device_state& state, std::unique_lock<std::mutex>& lock, pool_id id, pool_residency& pool,
    CUstream stream, event_kind kind)
  {
    pool_controls::engine_lease const lease(state.controls(), lock);
    if (pool.pool().parked_pages() == 0) { return restore_result{}; }
    pool_controls::moving_pool const mark(state.controls(), id);
    try {
      auto const start = std::chrono::steady_clock::now();
      state.settle_frees(id);
      restore_result const done = state.restore(pool, stream, wait_gate(lock));
      events_->note(
        kind, state, id, done.pages * pool.pool().page_size(), seconds_since(start),
        std::to_string(done.pages) + " pages, " + bytes_text(done.bytes_copied) + " over the link");
      return done;
    } catch (cuda_error const& error) {
      if (error.code() != CUDA_ERROR_OUT_OF_MEMORY) { throw; }
      return std::nullopt;
    }
  }

  /// A block, or nullptr when the device or this process's limit (`device_full` set) or
  /// the pool's range (not set) is out of memory. A block that took the process past its
  /// limit is given back with the pages it mapped.
  block* try_allocate(device_state& state, pool_residency& pool, std::size_t rounded,
                      std::size_t bytes, stream_tag tag, bool& device_full)
  {
    block* found = nullptr;
    try {
      device_full = false;
      found       = pool.allocate(rounded, bytes, tag);
    } catch (cuda_error const& error) {
      if (error.code() != CUDA_ERROR_OUT_OF_MEMORY) { throw; }
      device_full = true;
      return nullptr;
    }
    if (found != nullptr && limit_setting(state) && state.own_bytes() > limit_of(state)) {
      pool.deallocate(found);
      (void)pool.release_idle_pages();
      device_full = true;
      return nullptr;
    }
    return found;
  }

  /// " (this process may hold L of the device: ...)" when a limit is set.
  [[nodiscard]] std::string limit_text(device_state const& state) const
  {
    if (!limit_setting(state)) { return {}; }
    return " (this process may hold " + bytes_text(limit_of(state)) +
           " of the device: allocator_options::device_limit, SWAPALLOC_DEVICE_LIMIT or "
           "allocator::set_device_limit)";
  }

 public:
  /// The out-of-memory report of `state` for `request`, failed because `why`.
  /// @pre locked (takes the registry's lock per pool).
  [[nodiscard]] std::string oom_text(device_state const& state, std::string const& request,
                                     std::string const& why) const
  {
    std::vector<pool_row> const rows = state.rows([&](pool_id id) {
      refusal const refused = eviction_refusal(state, id, registry_->entry(id, "report"));
      if (refused == refusal::none) { return std::string("possible"); }
      return "no (" + std::string(id == default_pool ? "default pool" : to_string(refused)) + ")";
    });
    return oom_report(state.ordinal(), request, why, rows, state.memory());
  }

 private:
  driver const* driver_;
  pool_registry const* registry_;
  device_events* events_;
  room_settings settings_;
  std::once_flag workers_started_;
  std::unique_ptr<worker_pool> workers_;  // outlives every device_state (see allocator)
};

}  // namespace swapalloc
