/**
 * @file stream_events.hpp
 * @brief A device's reusable CUDA events (`event_pool`) and the frees that wait for them
 *        (`deferred_frees`): PyTorch's record_stream semantics.
 *
 * - `event_pool` hands out events created with default flags and takes them back once
 *   recorded work is known to be complete; creating an event costs a driver call, reusing
 *   one costs a vector pop. The allocator and the device's transfer engine share one.
 * - `deferred_frees` holds blocks freed while other streams used them (`record_stream`).
 *   At the free, an event is recorded on each such stream; the block becomes reusable
 *   when all have completed. `harvest` polls them in record order with `cuEventQuery`,
 *   never waiting (the allocation path calls it). A free whose event could not be created
 *   or recorded cannot be tracked: its block waits for the next synchronization of the
 *   device (`synchronized`), which empty_cache and out-of-memory recovery perform. This
 *   follows c10/cuda/CUDACachingAllocator.cpp (insert_events, process_events).
 *
 * The callback `finish(block*, pool_id)` given to the members that complete waits is the
 * owner's: it returns the block to its pool's cache.
 *
 * Thread safety: none of its own; the device's mutex guards both. The device's context
 * must be current for every member that calls the driver.
 */
#pragma once

#include <swapalloc/block.hpp>
#include <swapalloc/driver.hpp>
#include <swapalloc/scope_stack.hpp>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <vector>

namespace swapalloc {

/// Reusable events of one device. See the file comment.
class event_pool {
 public:
  explicit event_pool(driver const& drv) noexcept : driver_(&drv) {}
  event_pool(event_pool const&)            = delete;
  event_pool& operator=(event_pool const&) = delete;
  /// Destroys the idle events, best effort. @pre the device's context is current (or no
  /// event was ever created).
  ~event_pool() { destroy_all(); }

  /// An idle event, created if none is. @throws cuda_error if cuEventCreate fails.
  [[nodiscard]] CUevent take()
  {
    if (idle_.empty()) { return driver_->event_create(); }
    CUevent const event = idle_.back();
    idle_.pop_back();
    return event;
  }

  /// Gives back an event whose recorded work has completed (or that was never recorded).
  /// If the vector cannot grow, the event is destroyed instead: nothing is lost.
  void give_back(CUevent event) noexcept
  {
    try {
      idle_.push_back(event);
    } catch (...) {  // std::bad_alloc: a new event will be created when one is needed
      (void)driver_->table().cuEventDestroy(event);
    }
  }

  /// Destroys every idle event, best effort. @pre the device's context is current.
  void destroy_all() noexcept
  {
    for (CUevent event : idle_) {
      (void)driver_->table().cuEventDestroy(event);
    }
    idle_.clear();
  }

  /// Idle events held.
  [[nodiscard]] std::size_t idle() const noexcept { return idle_.size(); }

 private:
  driver const* driver_;
  std::vector<CUevent> idle_;
};

/// Blocks freed while other streams still use them. See the file comment.
class deferred_frees {
 public:
  explicit deferred_frees(driver const& drv) noexcept : driver_(&drv) {}

  /**
   * @brief Records an event on each stream of `freed->used_by` and holds `freed` until
   *        all complete. Returns the number of waits to pass to the pool's `hold`.
   * @throws cuda_error if an event cannot be created or recorded: the block then also
   *         waits for the next `synchronized` (it is held, not lost).
   */
  template <typename Hold>
  void record(event_pool& events, block* freed, pool_id owner, Hold&& hold)
  {
    std::uint32_t recorded = 0;
    try {
      for (CUstream user : freed->used_by) {
        CUevent const event = events.take();
        try {
          driver_->event_record(event, user);
        } catch (...) {
          events.give_back(event);
          throw;
        }
        pending_.push_back(waiting_event{event, freed, owner});
        ++recorded;
      }
    } catch (...) {
      hold(freed, recorded + 1);
      unsynced_.push_back(held_block{freed, owner, unsynced_recorded_++});
      throw;
    }
    hold(freed, recorded);
  }

  /// Completes the waits whose events have completed, in record order, without waiting.
  /// Cost: one cuEventQuery per completed event, and one for the first that is not.
  template <typename Finish>
  void harvest(event_pool& events, Finish&& finish)
  {
    while (!pending_.empty()) {
      if (!driver_->event_query(pending_.front().event)) { return; }
      complete_front(events, finish);
    }
  }

  /// Waits for every pending event and completes its wait.
  /// @throws cuda_error if a wait fails; the waits before it are completed.
  template <typename Finish>
  void wait_all(event_pool& events, Finish&& finish)
  {
    while (!pending_.empty()) {
      driver_->event_synchronize(pending_.front().event);
      complete_front(events, finish);
    }
  }

  /// Waits for the pending events of `owner`'s blocks only, and completes their waits.
  /// @return false if a block of `owner` waits for a synchronization of the device
  ///         (its event could not be recorded): only `synchronized` can complete it.
  /// @throws cuda_error if a wait fails; the waits before it are completed.
  template <typename Finish>
  [[nodiscard]] bool wait_for_pool(event_pool& events, pool_id owner, Finish&& finish)
  {
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->pool != owner) {
        ++it;
        continue;
      }
      driver_->event_synchronize(it->event);
      waiting_event const done = *it;
      it                       = pending_.erase(it);
      events.give_back(done.event);
      finish(done.waiting, done.pool);
    }
    return std::none_of(unsynced_.begin(), unsynced_.end(),
                        [&](held_block const& held) { return held.pool == owner; });
  }

  /// The pending events of `owner`'s blocks (to wait for without the owner's lock; the
  /// waits complete under it, with `wait_for_pool` or `harvest`).
  [[nodiscard]] std::vector<CUevent> events_of(pool_id owner) const
  {
    std::vector<CUevent> out;
    for (waiting_event const& waiting : pending_) {
      if (waiting.pool == owner) { out.push_back(waiting.event); }
    }
    return out;
  }

  /// The device was synchronized: the untracked waits are over.
  template <typename Finish>
  void synchronized(Finish&& finish)
  {
    synchronized(unsynced_recorded_, finish);
  }

  /// Taken just before a synchronization of the device that runs without the owner's lock:
  /// `synchronized(mark, finish)` then completes only the untracked waits recorded before.
  [[nodiscard]] std::uint64_t synchronize_mark() const noexcept { return unsynced_recorded_; }

  /// A synchronization begun at `mark` (`synchronize_mark`) has completed: the untracked
  /// waits recorded before it are over; later ones still wait.
  template <typename Finish>
  void synchronized(std::uint64_t mark, Finish&& finish)
  {
    auto const over = std::partition_point(  // in record order: the ones before form a prefix
      unsynced_.begin(), unsynced_.end(),
      [&](held_block const& held) { return held.order < mark; });
    for (auto it = unsynced_.begin(); it != over; ++it) {
      finish(it->freed, it->pool);
    }
    unsynced_.erase(unsynced_.begin(), over);
  }

  /// Destroys the pending events, best effort. @pre the context is current and the
  /// device synchronized (the owner is shutting down).
  void destroy_all() noexcept
  {
    for (waiting_event const& waiting : pending_) {
      (void)driver_->table().cuEventDestroy(waiting.event);
    }
    pending_.clear();
    unsynced_.clear();
  }

  /// Whether any event is pending (the hot path's one check).
  [[nodiscard]] bool any_pending() const noexcept { return !pending_.empty(); }

 private:
  struct waiting_event {
    CUevent event;
    block* waiting;
    pool_id pool;
  };
  struct held_block {
    block* freed;
    pool_id pool;
    std::uint64_t order;  // its place among every untracked wait recorded
  };

  template <typename Finish>
  void complete_front(event_pool& events, Finish& finish)
  {
    waiting_event const done = pending_.front();
    pending_.pop_front();
    events.give_back(done.event);
    finish(done.waiting, done.pool);
  }

  driver const* driver_;
  std::deque<waiting_event> pending_;  // in record order
  std::vector<held_block> unsynced_;   // freed blocks waiting for a synchronization
  std::uint64_t unsynced_recorded_{0};
};

}  // namespace swapalloc
