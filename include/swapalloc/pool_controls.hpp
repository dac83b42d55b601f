/**
 * @file pool_controls.hpp
 * @brief What one device knows of each pool's use, beside its memory: pins, activations,
 *        the least-recently-used clock, the prefetched mark, the last-use events, the
 *        moving mark, and the lease of the device's transfer engine (DESIGN §6, §8).
 *        Bookkeeping only: no driver call, no decision (policy.hpp reads it through
 *        device_state's views).
 *
 * - **Pins** (`pin_pool`) and **activations** (`activate`) both keep a pool from eviction.
 *   They live under the device's mutex with the eviction that checks them, so "is it
 *   pinned?" and the eviction are one critical section.
 * - **Moving** (`moving_pool`): a pool being evicted or restored. Every call that would
 *   touch its pages waits (`wait_while_moving`); the lock is released while it waits.
 * - **The engine lease** (`engine_lease`): one transfer (or one planned set of them) on
 *   the device at a time. A holder may mark pools moving; a pool is marked moving only
 *   under a lease, so a new lease holder finds no pool moving.
 *
 * Thread safety: none of its own; the device's mutex (the `lock` the waits take) guards
 * every member. The marks and leases end under that mutex.
 */
#pragma once

#include <swapalloc/driver.hpp>
#include <swapalloc/pool_registry.hpp>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace swapalloc {

/// The per-pool controls of one device. See the file comment.
class pool_controls {
 public:
  /// One event per stream on which a pool's use ended (`deactivate`).
  using last_use_events = std::vector<std::pair<CUstream, CUevent>>;

  /// Pins pool `id`: no eviction takes it until as many `unpin`.
  void pin(pool_id id) { ++control(id).pins; }
  /// Undoes one `pin`; false if the pool was not pinned.
  [[nodiscard]] bool unpin(pool_id id) noexcept
  {
    if (id >= pools_.size() || pools_[id].pins == 0) { return false; }
    --pools_[id].pins;
    return true;
  }
  /// Pins of pool `id` (explicit pins and activations).
  [[nodiscard]] std::size_t pins(pool_id id) const noexcept
  {
    return id < pools_.size() ? pools_[id].pins + pools_[id].active : 0;
  }

  /// Pool `id` is in use from now: pinned, no longer a prefetch, the most recently used.
  void activate(pool_id id)
  {
    pool_control& pool = control(id);
    ++pool.active;
    pool.activated  = true;
    pool.prefetched = false;
    pool.last_use   = ++clock_;
    pool.used_at    = std::chrono::steady_clock::now();
  }
  /// Undoes an `activate` whose restore failed: no last use is recorded.
  void cancel_activation(pool_id id) noexcept
  {
    if (id < pools_.size() && pools_[id].active != 0) { --pools_[id].active; }
  }
  /// Ends one activation of pool `id`: unpinned, the most recently used.
  /// @return false if the pool is not active (nothing changes).
  [[nodiscard]] bool end_activation(pool_id id) noexcept
  {
    if (id >= pools_.size() || pools_[id].active == 0) { return false; }
    --pools_[id].active;
    pools_[id].last_use = ++clock_;
    pools_[id].used_at  = std::chrono::steady_clock::now();
    return true;
  }
  /// When pool `id` was last activated or deactivated, if ever (for reports: the policy
  /// orders by `last_use`).
  [[nodiscard]] std::optional<std::chrono::steady_clock::time_point> used_at(
    pool_id id) const noexcept
  {
    if (id >= pools_.size() || pools_[id].last_use == 0) { return std::nullopt; }
    return pools_[id].used_at;
  }
  /// Whether pool `id` is active (between activate and deactivate).
  [[nodiscard]] bool active(pool_id id) const noexcept
  {
    return id < pools_.size() && pools_[id].active != 0;
  }
  /// When pool `id` was last activated or deactivated (a logical clock; 0: never).
  [[nodiscard]] std::uint64_t last_use(pool_id id) const noexcept
  {
    return id < pools_.size() ? pools_[id].last_use : 0;
  }

  /// Whether pool `id` has been used through activations with its last uses recorded: its
  /// eviction then waits for `events(id)`, else for the whole device.
  [[nodiscard]] bool activated(pool_id id) const noexcept
  {
    return id < pools_.size() && pools_[id].activated;
  }
  /// Pool `id`'s last use could not be recorded: its next eviction waits for the device.
  void forget_last_use(pool_id id) noexcept
  {
    if (id < pools_.size()) { pools_[id].activated = false; }
  }
  /// The events of pool `id`'s last uses, one per stream (device_state records them).
  [[nodiscard]] last_use_events& events(pool_id id) { return control(id).events; }

  /// Pool `id` was restored by a prefetch (true), or used or evicted since (false): the
  /// policy evicts a prefetched pool only on out-of-memory.
  void set_prefetched(pool_id id, bool value) { control(id).prefetched = value; }
  [[nodiscard]] bool prefetched(pool_id id) const noexcept
  {
    return id < pools_.size() && pools_[id].prefetched;
  }

  /// Whether pool `id` is being evicted or restored. Hot path: a compare and a load.
  [[nodiscard]] bool moving(pool_id id) const noexcept
  {
    return id < pools_.size() && pools_[id].moving;
  }
  /// Waits, releasing `lock`, until pool `id` is not moving. @pre `lock` holds the mutex.
  void wait_while_moving(std::unique_lock<std::mutex>& lock, pool_id id)
  {
    changed_.wait(lock, [&] { return !moving(id); });
  }

  /// Forgets pool `id` (destroyed); returns its last-use events for the caller to give back.
  [[nodiscard]] last_use_events forget(pool_id id) noexcept
  {
    if (id >= pools_.size()) { return {}; }
    last_use_events events = std::move(pools_[id].events);
    pools_[id]             = pool_control{};
    return events;
  }

  /// Calls `give_back(event)` for every pool's last-use events (the device shuts down).
  template <typename GiveBack>
  void for_each_event(GiveBack&& give_back) const
  {
    for (pool_control const& pool : pools_) {
      for (auto const& [stream, event] : pool.events) {
        give_back(event);
      }
    }
  }

  /**
   * @brief Holds the device's transfer engine for one caller: the constructor waits,
   *        releasing `lock`, until no other lease lives. @pre `lock` holds the device's
   *        mutex. Thread safety: the lease ends on the thread that holds the lock.
   */
  class engine_lease {
   public:
    engine_lease(pool_controls& controls, std::unique_lock<std::mutex>& lock) : owner_(&controls)
    {
      controls.changed_.wait(lock, [&] { return !controls.engine_busy_; });
      controls.engine_busy_ = true;
    }
    engine_lease(engine_lease const&)            = delete;
    engine_lease& operator=(engine_lease const&) = delete;
    ~engine_lease()
    {
      owner_->engine_busy_ = false;
      owner_->changed_.notify_all();
    }

   private:
    pool_controls* owner_;
  };

  /// Marks pool `id` moving for its lifetime (see the file comment). @pre the device's
  /// mutex held, a lease, the pool not moving; ends under the mutex.
  class moving_pool {
   public:
    moving_pool(pool_controls& controls, pool_id id) : owner_(&controls), id_(id)
    {
      controls.control(id).moving = true;
    }
    moving_pool(moving_pool const&)            = delete;
    moving_pool& operator=(moving_pool const&) = delete;
    ~moving_pool()
    {
      owner_->pools_[id_].moving = false;
      owner_->changed_.notify_all();
    }

   private:
    pool_controls* owner_;
    pool_id id_;
  };

 private:
  struct pool_control {
    std::size_t pins{0};    // pin_pool
    std::size_t active{0};  // activate - deactivate
    std::uint64_t last_use{0};
    std::chrono::steady_clock::time_point used_at{};  // with last_use, for reports
    bool activated{false};   // used through activations: its last-use events are known
    bool moving{false};      // being evicted or restored (moving_pool)
    bool prefetched{false};  // restored by a prefetch and not activated since
    last_use_events events;
  };

  [[nodiscard]] pool_control& control(pool_id id)
  {
    if (pools_.size() <= id) { pools_.resize(id + 1); }
    return pools_[id];
  }

  std::vector<pool_control> pools_;  // by pool_id
  std::uint64_t clock_{0};           // last_use's clock
  bool engine_busy_{false};          // an engine_lease lives
  std::condition_variable changed_;  // a lease or a moving mark ended
};

}  // namespace swapalloc
