/**
 * @file device_state.hpp
 * @brief One device of the allocator: its context, its pools' residencies, the live-block
 *        map, its events and deferred frees, its swap tier, and each pool's pins. It
 *        carries out what the facade asks (allocate, free, release cached pages, evict
 *        these pages, restore), and decides nothing about *whether* to.
 *
 * One mutex (`mutex()`) guards everything but the constants. The facade takes it; every
 * member below that says "@pre locked" expects it held, and the device's context current
 * where it calls the driver. Lock order: this mutex, then the registry's
 * (pool_registry.hpp); never two devices' mutexes at once.
 *
 * - **Pins** live here, under the device mutex, so that "is the pool pinned?" and the
 *   eviction that depends on the answer happen in one critical section (a pin check under
 *   another lock, before this one, let an eviction race an activation).
 * - **The swap tier** (host store and transfer engine) is created at the device's first
 *   eviction; the compression workers are the allocator's, shared by every device.
 * - **Transfers leave the lock while they wait** (transfer.hpp wait_gate): for a copy,
 *   for compression, for the pool's last use. An `engine_lease` keeps every other
 *   transfer off the engine meanwhile, and a `moving_pool` mark keeps every call that
 *   would touch the moving pool's pages waiting (`wait_while_moving`): allocations and
 *   frees in it, its eviction, restore, activation, pins and destruction. Other pools'
 *   calls, the hot path above all, go on. A planner (the facade's make-room step) takes
 *   the lease before it reads the use it plans from, so no two plans race, and every
 *   eviction checks its victim's eligibility again under the lock, after the last wait.
 * - **Destruction** synchronizes the device, then gives back every page, host copy,
 *   event and stream, best effort, and releases the primary context.
 *
 * Thread safety: as above; the constants (`ordinal`, `device`) may be read by any thread.
 */
#pragma once

#include <swapalloc/address_map.hpp>
#include <swapalloc/block.hpp>
#include <swapalloc/driver.hpp>
#include <swapalloc/host_store.hpp>
#include <swapalloc/policy.hpp>
#include <swapalloc/pool_registry.hpp>
#include <swapalloc/report.hpp>
#include <swapalloc/residency.hpp>
#include <swapalloc/stream_events.hpp>
#include <swapalloc/transfer.hpp>
#include <swapalloc/worker_pool.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace swapalloc {

/// A live block and the pool that owns it.
struct live_block {
  block* freed{nullptr};  ///< the block, named for its use at free
  pool_id pool{0};
};

/// One step of a room plan as it was carried out.
struct room_step_done {
  pool_id pool{0};
  room_step::action what{room_step::action::release_cached};
  std::size_t bytes{0};  ///< released (cached pages) or given back by the eviction
  double seconds{0};     ///< how long the step took, waits included
  evict_result evicted;  ///< an eviction's outcome
};

/// What making room did.
struct room_result {
  std::size_t released_bytes{0};      ///< cached pages released (no copy)
  std::size_t evicted_bytes{0};       ///< pages evicted (copied out or unmapped)
  std::vector<pool_id> evicted;       ///< the pools evicted from, in order
  std::string refused;                ///< why the host budget kept pages, if it did
  std::exception_ptr error;           ///< the first failed step's error (cuda_error), if any
  std::vector<room_step_done> steps;  ///< the steps that ran, in order

  [[nodiscard]] std::size_t freed_bytes() const noexcept { return released_bytes + evicted_bytes; }
};

/// A pool's live blocks on a device, for the leak report (report.hpp leak_text).
struct pool_leak {
  pool_id pool{0};
  std::string name;
  std::size_t blocks{0};
  std::size_t bytes{0};              ///< requested bytes
  std::vector<std::size_t> largest;  ///< requested sizes, largest first
};

/// The sizes a pool gets on a device when its options leave them 0.
struct pool_defaults {
  std::size_t capacity{0};   ///< 0: default_capacity_per_device_byte × the device's memory
  std::size_t page_size{0};  ///< 0: the device's allocation granularity
};

/// One device's allocator state. See the file comment.
class device_state {
 public:
  /// The default reservation of a pool: twice the device's memory. Address space is cheap
  /// and a pool's pages are placed in it for good, so small pages left between freed
  /// large runs must not exhaust it while the device still has memory (issue 9: a
  /// reservation the size of the device ran out with three quarters of it free). PyTorch
  /// reserves 1 1/8 of the device per expandable segment, and keeps one segment per
  /// stream and size class (c10/cuda/CUDACachingAllocator.cpp, ExpandableSegment); one
  /// range per pool serves every stream and both size classes here.
  static constexpr std::size_t default_capacity_per_device_byte = 2;

  /// How long a cuMemGetInfo reading serves `usage` (DESIGN §8: "refreshed at a bounded
  /// rate"); own maps and unmaps correct it in between.
  static constexpr std::chrono::milliseconds info_refresh{10};
  /// `usage` reads the clock on every this many calls only.
  static constexpr unsigned info_check_calls = 32;

  device_state(driver const& drv, int ordinal, CUdevice device)
    : driver_(&drv), ordinal_(ordinal), device_(device), events_(drv), frees_(drv)
  {
  }
  device_state(device_state const&)            = delete;
  device_state& operator=(device_state const&) = delete;

  /// Waits for the device's work, then gives back every page, copy, event and stream,
  /// best effort, and releases the primary context. Live blocks become invalid.
  ~device_state()
  {
    if (context_ == nullptr) { return; }
    try {
      context_scope const current(*driver_, context_);
      (void)driver_->table().cuCtxSynchronize();
      frees_.destroy_all();
      for (pool_control& pool : control_) {
        for (auto const& [stream, event] : pool.last_use_events) {
          events_.give_back(event);
        }
      }
      pools_.clear();  // waits for compression jobs, gives host memory back, unmaps
      engine_.reset();
      store_.reset();
      events_.destroy_all();
    } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor reports nothing
    }
    (void)driver_->table().cuDevicePrimaryCtxRelease(device_);
  }

  [[nodiscard]] int ordinal() const noexcept { return ordinal_; }
  [[nodiscard]] CUdevice device() const noexcept { return device_; }
  [[nodiscard]] std::mutex& mutex() const noexcept { return mutex_; }
  /// The primary context, or null before the device's first use. @pre locked.
  [[nodiscard]] CUcontext context() const noexcept { return context_; }

  /// Reads the device's memory size and retains the primary context at the first use.
  /// @throws cuda_error if either fails (nothing is retained then). @pre locked.
  void ensure_context()
  {
    if (context_ != nullptr) { return; }
    std::size_t const total = driver_->device_total_memory(device_);
    context_                = driver_->retain_primary_context(device_);
    total_bytes_            = total;
  }

  /// The device's memory (cuDeviceTotalMem), read once. @pre ensure_context() was called.
  [[nodiscard]] std::size_t total_bytes() const noexcept { return total_bytes_; }

  /// Pool `id`'s residency here, or null before its first allocation here. @pre locked.
  [[nodiscard]] pool_residency* pool(pool_id id) const noexcept
  {
    return id < pools_.size() ? pools_[id].get() : nullptr;
  }

  /**
   * @brief Pool `id`'s residency, created (its range reserved) at the first call, from
   *        the registry entry `entry_of(id)` gives: asked for only then, so that the slow
   *        path of an existing pool takes no registry lock.
   * @throws std::invalid_argument for sizes that are not multiples of the granularity;
   *         cuda_error if the range cannot be reserved; what `entry_of` throws.
   * @pre locked, context current.
   */
  template <typename EntryOf>
  pool_residency& pool_for(pool_id id, EntryOf&& entry_of, pool_defaults defaults)
  {
    if (pool_residency* const existing = pool(id); existing != nullptr) { return *existing; }
    pool_entry const entry = entry_of(id);
    std::size_t page_size =
      entry.options.page_size != 0 ? entry.options.page_size : defaults.page_size;
    if (page_size == 0) { page_size = driver_->allocation_granularity(device_); }
    std::size_t capacity = entry.options.capacity != 0 ? entry.options.capacity : defaults.capacity;
    if (capacity == 0) { capacity = default_capacity_per_device_byte * total_bytes_; }
    capacity = (capacity + page_size - 1) / page_size * page_size;
    if (pools_.size() <= id) { pools_.resize(id + 1); }
    pools_[id] = std::make_unique<pool_residency>(*driver_, device_, entry.name, capacity,
                                                  page_size, entry.options.read_only);
    return *pools_[id];
  }

  /// The live blocks by address. @pre locked.
  [[nodiscard]] address_map<live_block>& live() noexcept { return live_; }
  [[nodiscard]] address_map<live_block> const& live() const noexcept { return live_; }

  // ---------------------------------------------------------------- frees and events

  /// Returns the blocks whose events completed to their caches; never waits. Cost: one
  /// branch when nothing is pending (the hot path). @pre locked.
  void harvest()
  {
    if (frees_.any_pending()) { frees_.harvest(events_, finisher()); }
  }

  /// Frees `freed` of pool `owner` after the work of the streams recorded on it.
  /// @throws cuda_error if an event cannot be recorded (the block then waits for the next
  ///         synchronization). @pre locked, context current.
  void free_after_events(pool_residency& pool, pool_id owner, block* freed)
  {
    frees_.record(events_, freed, owner,
                  [&](block* held, std::uint32_t waits) { pool.hold(held, waits); });
  }

  /// Waits for the pending events and the device's work; held blocks become reusable.
  /// @pre locked, context current.
  void synchronize()
  {
    frees_.wait_all(events_, finisher());
    driver_->synchronize_context();
    frees_.synchronized(finisher());
  }

  /// Synchronizes, then releases the idle pages of every pool (or of `*only`).
  /// @return bytes released. @throws cuda_error for the first failure, after releasing
  ///         all it could. @pre locked, context current.
  std::size_t release_cache(pool_id const* only)
  {
    synchronize();
    std::size_t released = 0;
    std::exception_ptr first_error;
    for (std::size_t id = 0; id < pools_.size(); ++id) {
      if (pools_[id] == nullptr || moving(static_cast<pool_id>(id)) ||
          (only != nullptr && *only != id)) {
        continue;
      }
      try {
        released += pools_[id]->release_idle_pages();
      } catch (cuda_error const&) {
        if (!first_error) { first_error = std::current_exception(); }
      }
    }
    if (first_error) { std::rethrow_exception(first_error); }
    return released;
  }

  /// Out of memory: releases every pool's cached pages before one retry. Returns the bytes
  /// released; a failure is not an error here (the retry decides). @pre as release_cache.
  std::size_t release_for_retry() noexcept
  {
    try {
      return release_cache(nullptr);
    } catch (...) {  // NOLINT(bugprone-empty-catch): see above
      return 0;
    }
  }

  // ---------------------------------------------------------------- pins and activation

  /// Pins pool `id` here: no eviction takes it until as many `unpin`. @pre locked.
  void pin(pool_id id) { ++control(id).pins; }
  /// Undoes one `pin`; false if the pool was not pinned here. @pre locked.
  [[nodiscard]] bool unpin(pool_id id) noexcept
  {
    if (pins(id) == 0) { return false; }
    --control_[id].pins;
    return true;
  }
  /// Pins of pool `id` here (explicit pins and activations). @pre locked.
  [[nodiscard]] std::size_t pins(pool_id id) const noexcept
  {
    return id < control_.size() ? control_[id].pins + control_[id].active : 0;
  }

  /// Pool `id` is in use from now (DESIGN §6): pinned, and the most recently used.
  /// @pre locked.
  void activate(pool_id id)
  {
    pool_control& pool = control(id);
    ++pool.active;
    pool.activated  = true;
    pool.prefetched = false;
    pool.last_use   = ++clock_;
  }

  /// Undoes an `activate` whose restore failed: no last use is recorded. @pre locked.
  void cancel_activation(pool_id id) noexcept
  {
    if (id < control_.size() && control_[id].active != 0) { --control_[id].active; }
  }

  /// Ends one activation of pool `id` (no driver call): unpinned, most recently used.
  /// @return false if the pool is not active here (nothing changes). @pre locked.
  [[nodiscard]] bool end_activation(pool_id id) noexcept
  {
    if (id >= control_.size() || control_[id].active == 0) { return false; }
    --control_[id].active;
    control_[id].last_use = ++clock_;
    return true;
  }

  /**
   * @brief Records pool `id`'s last use on `stream`, re-recording that stream's event if
   *        the pool has one: its next eviction waits for it, not for the device.
   * @throws cuda_error if the event cannot be created or recorded; then call
   *         `forget_last_use`. @pre locked, context current.
   */
  void record_last_use(pool_id id, CUstream stream) { record_last_use(control(id), stream); }

  /// Pool `id`'s last use is unknown (its recording failed): its next eviction waits for
  /// the whole device. @pre locked.
  void forget_last_use(pool_id id) noexcept
  {
    if (id < control_.size()) { control_[id].activated = false; }
  }

  /// Pool `id` was restored by a prefetch (true), or activated since (false): the policy
  /// evicts a prefetched pool only on out-of-memory. @pre locked.
  void set_prefetched(pool_id id, bool value) { control(id).prefetched = value; }
  [[nodiscard]] bool prefetched(pool_id id) const noexcept
  {
    return id < control_.size() && control_[id].prefetched;
  }

  /// When pool `id` was last activated or deactivated (a logical clock). @pre locked.
  [[nodiscard]] std::uint64_t last_use(pool_id id) const noexcept
  {
    return id < control_.size() ? control_[id].last_use : 0;
  }

  /**
   * @brief Waits until no GPU work can still touch pool `id`: for its last-use events and
   *        its blocks' record_stream events when it has been used through activations
   *        (DESIGN §6), else for the whole device. @pre locked, context current.
   */
  void wait_for_pool(pool_id id, wait_gate gate = {})
  {
    if (id >= control_.size() || !control_[id].activated) {
      gate.outside([&] { driver_->synchronize_context(); });
    } else {
      // Copied: a deactivation may add an event while the lock is released. An event it
      // records again meanwhile is waited for at its new record; the pool is moving, so
      // only a use that began before the wait (and is waited for) can have recorded it.
      std::vector<CUevent> last_uses;
      for (auto const& [stream, event] : control_[id].last_use_events) {
        last_uses.push_back(event);
      }
      gate.outside([&] {
        for (CUevent const event : last_uses) {
          driver_->event_synchronize(event);
        }
      });
    }
    settle_frees(id);
  }

  /**
   * @brief Completes the waits of pool `id`'s freed blocks (record_stream events, or a
   *        synchronization for an untracked one), so that nothing returns a block to its
   *        cache while the pool moves: a moving pool holds no waiting block, and gets no
   *        new one (its frees wait). @pre locked, context current.
   */
  void settle_frees(pool_id id)
  {
    if (!frees_.wait_for_pool(events_, id, finisher())) { synchronize(); }
  }

  // ---------------------------------------------------------------- transfers

  /**
   * @brief Holds this device's transfer engine for one caller: the constructor waits,
   *        releasing `lock`, until no other lease lives. @pre `lock` holds the device's
   *        mutex. Thread safety: the lease must end on the thread that holds the lock.
   */
  class engine_lease {
   public:
    engine_lease(device_state& state, std::unique_lock<std::mutex>& lock) : state_(&state)
    {
      state.transfer_changed_.wait(lock, [&] { return !state.engine_busy_; });
      state.engine_busy_ = true;
    }
    engine_lease(engine_lease const&)            = delete;
    engine_lease& operator=(engine_lease const&) = delete;
    ~engine_lease()
    {
      state_->engine_busy_ = false;
      state_->transfer_changed_.notify_all();
    }

   private:
    device_state* state_;
  };

  /// Marks pool `id` moving for its lifetime (see the file comment). @pre locked, the
  /// pool not moving; ends under the lock.
  class moving_pool {
   public:
    moving_pool(device_state& state, pool_id id) : state_(&state), id_(id)
    {
      state.control(id).moving = true;
    }
    moving_pool(moving_pool const&)            = delete;
    moving_pool& operator=(moving_pool const&) = delete;
    ~moving_pool()
    {
      state_->control_[id_].moving = false;
      state_->transfer_changed_.notify_all();
    }

   private:
    device_state* state_;
    pool_id id_;
  };

  /// Whether pool `id` is being evicted or restored. Hot path: a compare and a load.
  /// @pre locked.
  [[nodiscard]] bool moving(pool_id id) const noexcept
  {
    return id < control_.size() && control_[id].moving;
  }

  /// Waits, releasing `lock`, until pool `id` is not moving. @pre `lock` holds the mutex.
  void wait_while_moving(std::unique_lock<std::mutex>& lock, pool_id id)
  {
    transfer_changed_.wait(lock, [&] { return !moving(id); });
  }

  // ---------------------------------------------------------------- swap tier

  /// Creates the host store and transfer engine at the first eviction.
  /// @pre locked, context current.
  void ensure_swap_tier(worker_pool& workers, host_store_options const& host,
                        transfer_options const& transfer)
  {
    if (store_ != nullptr) { return; }
    auto store = std::make_unique<host_store>(*driver_, host);
    engine_    = std::make_unique<transfer_engine>(*driver_, *store, workers, events_, transfer);
    store_     = std::move(store);
  }

  /**
   * @brief Evicts pool `id`'s pages until at least `bytes` are released (SIZE_MAX: all),
   *        in the policy's page order (policy.hpp plan_pages): pages that need no copy
   *        first. @pre locked, context current, the swap tier exists, the device's work
   *        that used the pool is complete, an engine lease, the pool marked moving.
   *        `gate` releases the lock around each wait (transfer.hpp).
   */
  evict_result evict(pool_residency& pool, std::size_t bytes, codec_choice const& choice,
                     wait_gate gate = {})
  {
    gate.outside([&] { pool.wait_for_compression(); });  // so that dropping copies waits not
    pool.prepare_swap();
    device_pool const& pages_of = pool.pool();
    std::vector<page_view> candidates;
    for (std::size_t page = 0; page < pages_of.page_count(); ++page) {
      page_state const at = pages_of.page(page);
      if (at != page_state::resident && at != page_state::restoring) { continue; }
      bool const no_copy = pages_of.page_users(page) == 0 || pool.copy(page) == copy_state::current;
      candidates.push_back(page_view{page, !no_copy});
    }
    return engine_->evict(pool, plan_pages(candidates, bytes, pages_of.page_size()), choice, gate);
  }

  /// Restores every page of `pool` whose data is in host memory; `stream` (if not null)
  /// waits for the copies. @pre locked, context current, the pool has such pages, an
  /// engine lease, the pool marked moving. `gate` releases the lock around each wait.
  restore_result restore(pool_residency& pool, CUstream stream, wait_gate gate = {})
  {
    std::vector<std::size_t> pages;
    for (std::size_t page = 0; page < pool.pool().page_count(); ++page) {
      if (data_on_host(pool.pool().page(page))) { pages.push_back(page); }
    }
    return engine_->restore(pool, pages, stream, gate);
  }

  // ---------------------------------------------------------------- room (policy.hpp)

  /// Device memory this process holds here: every pool's mapped pages. @pre locked.
  [[nodiscard]] std::size_t own_bytes() const noexcept
  {
    std::size_t own = 0;
    for (auto const& pool : pools_) {
      if (pool != nullptr) { own += pool->pool().mapped_bytes(); }
    }
    return own;
  }

  /**
   * @brief The use the policy compares with its watermarks: this process's bytes against
   *        `limit`, and the device-wide use (cuMemGetInfo: other processes and contexts
   *        count) against the device's total. cuMemGetInfo is read at most every
   *        `info_refresh` (the clock is looked at every `info_check_calls` calls); in
   *        between, the last reading is corrected by this process's own
   *        change since. A failed reading leaves the device-wide side unknown (0).
   * @pre locked, context current.
   */
  [[nodiscard]] device_usage usage(std::size_t limit)
  {
    std::size_t const own = own_bytes();
    // The clock itself costs (a vDSO call, 4% of a replay of recorded allocations): it is
    // read on every info_check_calls-th call only.
    bool const check_clock = !info_.known || ++info_.calls >= info_check_calls;
    auto const now         = check_clock ? std::chrono::steady_clock::now() : info_.read_at;
    if (check_clock) { info_.calls = 0; }
    if (check_clock && (!info_.known || now - info_.read_at >= info_refresh)) {
      std::size_t free_bytes = 0;
      std::size_t total      = 0;
      info_.known            = driver_->table().cuMemGetInfo(&free_bytes, &total) == CUDA_SUCCESS;
      info_.used             = info_.known ? total - std::min(total, free_bytes) : 0;
      info_.total            = info_.known ? total : 0;
      info_.own              = own;
      info_.read_at          = now;
    }
    std::size_t const used = own >= info_.own ? info_.used + (own - info_.own)
                                              : info_.used - std::min(info_.used, info_.own - own);
    return device_usage{own, limit, info_.known ? used : 0, info_.total};
  }

  /// Makes the next `usage` read cuMemGetInfo (the monitor's pass: another process's
  /// change must be seen at the monitor's rate, not at `info_refresh` × calls).
  /// @pre locked.
  void forget_usage_reading() noexcept { info_.known = false; }

  /// Records `level` as the device's pressure level; returns the one it replaces.
  /// @pre locked.
  pressure_level exchange_level(pressure_level level) noexcept
  {
    return std::exchange(level_, level);
  }

  /// The policy's snapshot of pool `id` here, without the walk that splits its mapped
  /// bytes into cached and resident ones (all count as resident). @pre locked.
  [[nodiscard]] pool_view view(pool_id id, pool_entry const& entry) const noexcept
  {
    pool_view out;
    out.id             = id;
    out.priority       = entry.options.priority;
    out.evictable      = id != default_pool && entry.options.evictable;
    out.pinned         = pins(id) != 0 || moving(id);
    out.prefetched     = prefetched(id);
    out.last_use       = last_use(id);
    out.resident_bytes = pool(id) != nullptr ? pool(id)->pool().mapped_bytes() : 0;
    out.page_size      = pool(id) != nullptr ? pool(id)->pool().page_size() : 1;
    return out;
  }

  /// The policy's snapshot of each pool here; `entry_of(id)` gives its registry entry.
  /// Cost: a walk over each pool's pages. @pre locked.
  template <typename EntryOf>
  [[nodiscard]] std::vector<pool_view> views(EntryOf&& entry_of) const
  {
    std::vector<pool_view> out;
    for (std::size_t index = 0; index < pools_.size(); ++index) {
      if (pools_[index] == nullptr) { continue; }
      auto const id          = static_cast<pool_id>(index);
      pool_view view         = this->view(id, entry_of(id));
      std::size_t const idle = pools_[index]->pool().idle_page_bytes();
      view.cached_bytes      = idle;
      view.resident_bytes -= std::min(view.resident_bytes, idle);
      out.push_back(view);
    }
    return out;
  }

  /**
   * @brief Carries out `plan` (policy.hpp plan_room): releases the named pools' cached
   *        pages and evicts the victims, each after waiting for its own last use only.
   *        A failing step does not stop the others: its pages stay as its own rollback
   *        left them (nothing is lost), and the first error is returned for the caller's
   *        report. `entry_of(id)` gives a pool's registry entry (its codec choice).
   *        Each step first checks its pool again (`refusal_of` for `reason`): the lock is
   *        released while a step waits, and a pool activated meanwhile is skipped.
   * @pre `lock` holds the device's mutex, context current, the swap tier exists if the
   *      plan evicts, an engine lease taken before the plan was made.
   */
  template <typename EntryOf>
  room_result make_room(room_plan const& plan, EntryOf&& entry_of, room_reason reason,
                        std::unique_lock<std::mutex>& lock)
  {
    room_result out;
    for (room_step const& step : plan.steps) {
      pool_residency* const pool = this->pool(step.pool);
      if (pool == nullptr || moving(step.pool)) { continue; }
      auto const start = std::chrono::steady_clock::now();
      auto const took  = [&] {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      };
      try {
        if (step.what == room_step::action::release_cached) {
          // A freed block's page may still be in use by work queued before its free.
          moving_pool const mark(*this, step.pool);
          wait_for_pool(step.pool, wait_gate(lock));
          std::size_t const released = pool->release_idle_pages();
          out.released_bytes += released;
          out.steps.push_back(room_step_done{step.pool, step.what, released, took(), {}});
          continue;
        }
        pool_entry const entry = entry_of(step.pool);
        if (refusal_of(view(step.pool, entry), reason) != refusal::none) { continue; }
        moving_pool const mark(*this, step.pool);
        wait_for_pool(step.pool, wait_gate(lock));
        evict_result const done =
          evict(*pool, step.bytes, codec_choice{entry.options.dtype, entry.options.codec},
                wait_gate(lock));
        out.evicted_bytes += done.released_bytes;
        control(step.pool).prefetched = false;  // out of memory took it: no longer a prefetch
        if (done.released_bytes != 0) { out.evicted.push_back(step.pool); }
        if (!done.refused.empty() && out.refused.empty()) { out.refused = done.refused; }
        out.steps.push_back(
          room_step_done{step.pool, step.what, done.released_bytes, took(), done});
      } catch (cuda_error const&) {
        if (!out.error) { out.error = std::current_exception(); }
      }
    }
    return out;
  }

  // ---------------------------------------------------------------- reports

  /// The device's memory as cuMemGetInfo reports it. @pre context current.
  [[nodiscard]] device_memory memory() const
  {
    device_memory out;
    CUresult const info = driver_->table().cuMemGetInfo(&out.free_bytes, &out.total_bytes);
    out.known           = info == CUDA_SUCCESS;
    if (!out.known) { out.unknown_why = driver_->describe(info); }
    return out;
  }

  /// A row per pool present here; `eviction(id)` says whether it can be evicted.
  /// @pre locked.
  template <typename Eviction>
  [[nodiscard]] std::vector<pool_row> rows(Eviction&& eviction) const
  {
    std::vector<pool_row> out;
    for (std::size_t id = 0; id < pools_.size(); ++id) {
      if (pools_[id] == nullptr) { continue; }
      out.push_back(pool_row{static_cast<pool_id>(id), pools_[id]->pool().name(),
                             pools_[id]->stats(), eviction(static_cast<pool_id>(id))});
    }
    return out;
  }

  /// The live blocks of each pool here: count, bytes and the largest sizes (requested
  /// bytes, largest first, at most `largest`), for pools that have any. @pre locked.
  [[nodiscard]] std::vector<pool_leak> leaks(std::size_t largest) const
  {
    std::vector<pool_leak> out;
    live_.for_each([&](std::uint64_t, live_block const& entry) {
      auto found = std::find_if(out.begin(), out.end(),
                                [&](pool_leak const& leak) { return leak.pool == entry.pool; });
      if (found == out.end()) {
        out.push_back(pool_leak{entry.pool, pools_[entry.pool]->pool().name(), 0, 0, {}});
        found = std::prev(out.end());
      }
      std::size_t const bytes = entry.freed->requested;
      ++found->blocks;
      found->bytes += bytes;
      auto& sizes = found->largest;
      sizes.insert(std::upper_bound(sizes.begin(), sizes.end(), bytes, std::greater<>()), bytes);
      if (sizes.size() > largest) { sizes.pop_back(); }
    });
    return out;
  }

  /// Gives back every page and host copy of pool `id` and forgets it.
  /// @throws cuda_error if a page cannot be unmapped: the pool stays, to destroy again.
  /// @pre locked, context current, the device synchronized, no live block in the pool.
  void destroy(pool_id id)
  {
    if (pool(id) == nullptr) { return; }
    pools_[id]->release_all();
    pools_[id].reset();
    if (id < control_.size()) {
      for (auto const& [stream, event] : control_[id].last_use_events) {
        events_.give_back(event);
      }
      control_[id] = pool_control{};
    }
  }

  /// Structural check (tests): empty when consistent, else the first problem. @pre locked.
  [[nodiscard]] std::string check() const
  {
    for (auto const& pool : pools_) {
      if (pool == nullptr) { continue; }
      if (std::string problem = pool->check(); !problem.empty()) {
        return pool->pool().name() + ": " + problem;
      }
    }
    std::size_t live = 0;
    live_.for_each([&](std::uint64_t, live_block const& entry) {
      live += entry.freed->state == block_state::allocated ? 1 : 0;
    });
    if (live != live_.size()) { return "a live pointer maps to a block that is not allocated"; }
    return {};
  }

 private:
  /// Pins, activations and last use of one pool here.
  struct pool_control {
    std::size_t pins{0};    // pin_pool
    std::size_t active{0};  // activate - deactivate
    std::uint64_t last_use{0};
    bool activated{false};   // used through activations: its last-use events are known
    bool moving{false};      // being evicted or restored (moving_pool)
    bool prefetched{false};  // restored by a prefetch and not activated since
    std::vector<std::pair<CUstream, CUevent>> last_use_events;  // one per stream
  };

  [[nodiscard]] pool_control& control(pool_id id)
  {
    if (control_.size() <= id) { control_.resize(id + 1); }
    return control_[id];
  }

  /// Records `pool`'s last use on `stream`, re-recording the stream's event if it has one.
  void record_last_use(pool_control& pool, CUstream stream)
  {
    for (auto& [known, event] : pool.last_use_events) {
      if (known == stream) {
        driver_->event_record(event, stream);
        return;
      }
    }
    CUevent const event = events_.take();
    try {
      driver_->event_record(event, stream);
      pool.last_use_events.emplace_back(stream, event);
    } catch (...) {
      events_.give_back(event);
      throw;
    }
  }

  /// The callback that ends one of a held block's waits; the last one makes it reusable.
  struct wait_finisher {
    device_state* state;
    void operator()(block* held, pool_id owner) const
    {
      if (--held->pending_events == 0) { state->pools_[owner]->finish_waiting(held); }
    }
  };
  [[nodiscard]] wait_finisher finisher() noexcept { return wait_finisher{this}; }

  driver const* driver_;
  int const ordinal_;
  CUdevice const device_;
  mutable std::mutex mutex_;
  CUcontext context_{nullptr};
  std::size_t total_bytes_{0};  // cuDeviceTotalMem, read with the context
  address_map<live_block> live_;
  std::vector<pool_control> control_;  // by pool_id
  struct memory_reading {
    bool known{false};
    std::size_t used{0};  // device-wide, at read_at
    std::size_t total{0};
    std::size_t own{0};  // own_bytes() at read_at
    unsigned calls{0};   // usage() calls since the clock was last read
    std::chrono::steady_clock::time_point read_at{};
  } info_;
  std::uint64_t clock_{0};                      // last_use's clock
  bool engine_busy_{false};                     // an engine_lease lives
  pressure_level level_{pressure_level::safe};  // the last level seen (exchange_level)
  std::condition_variable transfer_changed_;    // a lease or a moving mark ended
  event_pool events_;
  deferred_frees frees_;
  // The swap tier, created at the device's first eviction.
  std::unique_ptr<host_store> store_;
  std::unique_ptr<transfer_engine> engine_;
  // Declared last, destroyed first: their host copies go back to `store_`.
  std::vector<std::unique_ptr<pool_residency>> pools_;  // by pool_id
};

}  // namespace swapalloc
