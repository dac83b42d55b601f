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
 * - **Pins, activations and moving marks** (pool_controls.hpp) live here, under the device
 *   mutex, so that "is the pool pinned?" and the eviction that depends on the answer
 *   happen in one critical section (a pin check under another lock, before this one, let
 *   an eviction race an activation).
 * - **The swap tier** (host store and transfer engine) is created at the device's first
 *   eviction; the compression workers are the allocator's, shared by every device. When
 *   an eviction's copies are compressed, behind it or later (`compress_raw_copies`), is
 *   compression_policy.hpp's decision.
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
#include <swapalloc/compression_policy.hpp>
#include <swapalloc/config.hpp>
#include <swapalloc/driver.hpp>
#include <swapalloc/handle_cache.hpp>
#include <swapalloc/host_store.hpp>
#include <swapalloc/policy.hpp>
#include <swapalloc/pool_controls.hpp>
#include <swapalloc/pool_registry.hpp>
#include <swapalloc/report.hpp>
#include <swapalloc/residency.hpp>
#include <swapalloc/stream_events.hpp>
#include <swapalloc/transfer.hpp>
#include <swapalloc/worker_pool.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
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

/// Raw host copies of one pool handed to compression (device_state::compress_raw_copies).
struct compression_handed {
  pool_id pool{0};
  std::size_t bytes{0};              ///< host bytes of the raw copies handed over
  std::chrono::milliseconds idle{};  ///< how long the pool had idled (compression_policy.hpp)
  double host_use{0};                ///< the host store's use / its limit when planned
};

/// What happened on a device that PyTorch's memory_stats counts (num_alloc_retries,
/// num_ooms): atomics, so that the const paths that fail an allocation can count it.
struct device_counters {
  std::atomic<std::uint64_t> alloc_retries{0};  ///< cache released and the request retried
  std::atomic<std::uint64_t> ooms{0};           ///< out_of_memory thrown
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

  /// @param handle_cache_bytes bound of the device's handle_cache (0: off).
  device_state(driver const& drv, int ordinal, CUdevice device, std::size_t handle_cache_bytes = 0)
    : driver_(&drv),
      ordinal_(ordinal),
      device_(device),
      events_(drv),
      frees_(drv),
      handles_(drv, handle_cache_bytes)
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
      controls_.for_each_event([&](CUevent event) { events_.give_back(event); });
      pools_.clear();                // waits for compression jobs, gives host memory back, unmaps
      (void)handles_.release_all();  // empty outside an operation; before the context goes
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

  /// The device's counters. Thread safety: any thread (atomics).
  [[nodiscard]] device_counters& counters() const noexcept { return counters_; }

  /// The limit set on this device at run time (allocator::set_device_limit), which replaces
  /// allocator_options::device_limit here; unset: none was. @pre locked.
  [[nodiscard]] std::optional<device_limit> const& limit_override() const noexcept
  {
    return limit_override_;
  }
  /// @pre locked.
  void set_limit_override(device_limit limit) noexcept { limit_override_ = limit; }

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
                                                  page_size, entry.options.read_only, &handles_);
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

  /**
   * @brief Waits for the device's work (cuCtxSynchronize), with `gate`'s lock released,
   *        then returns to their caches the freed blocks whose waits that covers: every
   *        pending event (recorded before, so complete) and the untracked waits recorded
   *        before it began; frees made meanwhile wait on. @pre locked, context current.
   */
  void synchronize(wait_gate gate = {})
  {
    std::uint64_t const mark = frees_.synchronize_mark();
    gate.outside([&] { driver_->synchronize_context(); });
    frees_.harvest(events_, finisher());
    frees_.synchronized(mark, finisher());
  }

  /**
   * @brief Releases the idle pages of every pool (or of `*only`) after the device's work up
   *        to now (torch.cuda.empty_cache). It waits with `lock` released, for the device
   *        and for the compression of copies a release would drop (cancelled meanwhile:
   *        empty_cache waits for no codec), under an engine lease so that no pool starts
   *        moving; the pools it waits for are marked moving meanwhile. For every pool
   *        (`only` null) it also frees the transfer engine's codec scratch buffers.
   *        A pool moving when it is called is skipped.
   * @return bytes released. @throws cuda_error for the first failure, after releasing
   *         all it could. @pre `lock` holds the mutex, context current, no lease held.
   */
  std::size_t release_cache(std::unique_lock<std::mutex>& lock, pool_id const* only)
  {
    pool_controls::engine_lease const lease(controls_, lock);
    settle_compression(
      lock, only, [&] { synchronize(wait_gate(lock)); }, true);
    if (only == nullptr && engine_ != nullptr) { engine_->release_scratch(); }
    std::size_t released = 0;
    std::exception_ptr first_error;
    for (std::size_t id = 0; id < pools_.size(); ++id) {
      if (!selected(static_cast<pool_id>(id), only)) { continue; }
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
  std::size_t release_for_retry(std::unique_lock<std::mutex>& lock) noexcept
  {
    std::size_t released = 0;
    try {
      released = release_cache(lock, nullptr);
    } catch (...) {  // NOLINT(bugprone-empty-catch): see above
    }
    // Unmapped pages of another page size would stay in the way of the retry's maps.
    (void)handles_.release_all();
    return released;
  }

  /// Waits, with `lock` released, until no compression job of pool `*only` (null: of any
  /// pool) is in flight; such pools are marked moving meanwhile, under an engine lease.
  /// @pre `lock` holds the mutex, no lease held.
  void wait_for_compression(std::unique_lock<std::mutex>& lock, pool_id const* only)
  {
    pool_controls::engine_lease const lease(controls_, lock);
    settle_compression(lock, only, [] {});
  }

  // ---------------------------------------------------------------- pins and activation

  /// Pins, activations, the LRU clock, the prefetched and moving marks, the engine lease
  /// (pool_controls.hpp). @pre locked, for every use.
  [[nodiscard]] pool_controls& controls() noexcept { return controls_; }
  [[nodiscard]] pool_controls const& controls() const noexcept { return controls_; }
  /// Whether pool `id` is being evicted or restored. Hot path: a compare and a load.
  [[nodiscard]] bool moving(pool_id id) const noexcept { return controls_.moving(id); }
  /// Waits, releasing `lock`, until pool `id` is not moving. @pre `lock` holds the mutex.
  void wait_while_moving(std::unique_lock<std::mutex>& lock, pool_id id)
  {
    controls_.wait_while_moving(lock, id);
  }

  /**
   * @brief Records pool `id`'s last use on `stream`, re-recording that stream's event if
   *        the pool has one: its next eviction waits for it, not for the device.
   * @throws cuda_error if the event cannot be created or recorded; then call
   *         `controls().forget_last_use`. @pre locked, context current.
   */
  void record_last_use(pool_id id, CUstream stream)
  {
    pool_controls::last_use_events& events = controls_.events(id);
    for (auto& [known, event] : events) {
      if (known == stream) {
        driver_->event_record(event, stream);
        return;
      }
    }
    CUevent const event = events_.take();
    try {
      driver_->event_record(event, stream);
      events.emplace_back(stream, event);
    } catch (...) {
      events_.give_back(event);
      throw;
    }
  }

  /**
   * @brief Waits until no GPU work can still touch pool `id`: for its last-use events and
   *        its blocks' record_stream events when it has been used through activations
   *        (DESIGN §6), else for the whole device; and for the compression of its copies,
   *        which the move may drop. Each wait runs with `gate`'s lock released.
   * @pre locked, context current, the pool marked moving.
   */
  void wait_for_pool(pool_id id, wait_gate gate = {})
  {
    pool_residency* const residency = pool(id);
    task_group* const jobs = residency != nullptr ? residency->compression_in_flight() : nullptr;
    std::optional<pool_residency::compression_pause> pause;  // moving copies waits not for a codec
    if (jobs != nullptr) { pause.emplace(*residency); }
    if (!controls_.activated(id)) {
      gate.outside([&] {
        driver_->synchronize_context();
        if (jobs != nullptr) { jobs->wait(); }
      });
    } else {
      // Copied: a deactivation may add an event while the lock is released. An event it
      // records again meanwhile is waited for at its new record; the pool is moving, so
      // only a use that began before the wait (and is waited for) can have recorded it.
      std::vector<CUevent> waits = frees_.events_of(id);
      for (auto const& [stream, event] : controls_.events(id)) {
        waits.push_back(event);
      }
      gate.outside([&] {
        for (CUevent const event : waits) {
          driver_->event_synchronize(event);
        }
        if (jobs != nullptr) { jobs->wait(); }
      });
    }
    settle_frees(id, gate);
  }

  /**
   * @brief Completes the waits of pool `id`'s freed blocks (record_stream events, or a
   *        synchronization for an untracked one), so that nothing returns a block to its
   *        cache while the pool moves: a moving pool holds no waiting block, and gets no
   *        new one (its frees wait). @pre locked, context current.
   */
  void settle_frees(pool_id id, wait_gate gate = {})
  {
    if (!frees_.wait_for_pool(events_, id, finisher())) { synchronize(gate); }
  }

  // ---------------------------------------------------------------- transfers

  // ---------------------------------------------------------------- swap tier

  /// The host store, nullptr before the first eviction. @pre locked to read it; the store
  /// lives as long as this state and is thread-safe, so it may be used after unlocking.
  [[nodiscard]] host_store* store() const noexcept { return store_.get(); }

  /// The device's cache of unmapped page handles, which its pools' unmaps fill and maps
  /// take from while a handle_cache::armed scope is open (the room maker's operations).
  [[nodiscard]] handle_cache& handles() noexcept { return handles_; }
  [[nodiscard]] handle_cache const& handles() const noexcept { return handles_; }

  /// Creates the host store and transfer engine at the first eviction; `compression` says
  /// when copies are compressed. @pre locked, context current.
  void ensure_swap_tier(worker_pool& workers, host_store_options const& host,
                        transfer_options const& transfer, compression_settings compression)
  {
    if (store_ != nullptr) { return; }
    compression_ = compression;
    auto store   = std::make_unique<host_store>(*driver_, host);
    engine_      = std::make_unique<transfer_engine>(*driver_, *store, workers, events_, transfer);
    store_       = std::move(store);
  }

  /**
   * @brief Makes the transfer engine ready ahead of the first eviction
   *        (transfer_engine::prepare), under an engine lease and with `lock` released
   *        meanwhile, so that pinning its staging ring blocks no other caller of the device.
   * @return true when it made the engine ready now; false without a swap tier or when
   *         the engine was ready.
   * @pre `lock` holds the mutex, the context current, no engine lease held by the caller.
   * @throws cuda_error from the engine (it stays not ready and usable); `lock` is held again.
   * Cost once ready: a flag read (the engine itself is read only under a lease, since
   * `prepare` writes it without the mutex).
   */
  bool prepare_engine(std::unique_lock<std::mutex>& lock)
  {
    if (engine_ == nullptr || engine_prepared_) { return false; }
    pool_controls::engine_lease const lease(controls_, lock);  // no transfer meanwhile
    bool const made = !engine_->ready();                       // else a transfer made it
    if (made) {
      lock.unlock();
      try {
        engine_->prepare();
      } catch (...) {
        lock.lock();
        throw;
      }
      lock.lock();
    }
    engine_prepared_ = true;
    return made;
  }

  /**
   * @brief Evicts pool `id`'s pages until at least `bytes` are released (SIZE_MAX: all),
   *        in the policy's page order (policy.hpp plan_pages): pages that need no copy
   *        first. Their copies are compressed behind, or deferred when the host store
   *        holds them raw (compression_policy.hpp eviction_timing; `choice.defer` is
   *        decided here). @pre locked, context current, the swap tier exists, the
   *        device's work that used the pool is complete, an engine lease, the pool marked
   *        moving. `gate` releases the lock around each wait (transfer.hpp).
   */
  evict_result evict(pool_residency& pool, std::size_t bytes, codec_choice choice,
                     wait_gate gate = {})
  {
    if (task_group* const jobs = pool.compression_in_flight()) {  // dropping copies waits not
      pool_residency::compression_pause const pause(pool);        // for a codec
      gate.outside([&] { jobs->wait(); });
    }
    pool.prepare_swap();
    device_pool const& pages_of = pool.pool();
    std::vector<page_view> candidates;
    for (std::size_t page = 0; page < pages_of.page_count(); ++page) {
      page_state const at = pages_of.page(page);
      if (at != page_state::resident && at != page_state::restoring) { continue; }
      bool const no_copy = pages_of.page_users(page) == 0 || pool.copy(page) == copy_state::current;
      candidates.push_back(page_view{page, !no_copy});
    }
    std::vector<std::size_t> const pages = plan_pages(candidates, bytes, pages_of.page_size());
    std::size_t copied                   = 0;  // at most: whole pages
    for (std::size_t const page : pages) {
      if (pages_of.page_users(page) != 0 && pool.copy(page) != copy_state::current) {
        copied += pages_of.page_size();
      }
    }
    choice.defer = eviction_timing(host_budget{store_->used_bytes(), store_->limit_bytes()}, copied,
                                   compression_) == compression_timing::deferred;
    return engine_->evict(pool, pages, choice, gate);
  }

  /// Whether any pool holds a copy whose compression was deferred (pool_image::
  /// has_deferred): compress_raw_copies has nothing to do otherwise. Cost: O(pools).
  /// @pre locked.
  [[nodiscard]] bool any_deferred() const
  {
    return std::any_of(pools_.begin(), pools_.end(), [](auto const& pool) {
      return pool != nullptr && pool->image() != nullptr && pool->image()->has_deferred();
    });
  }

  /**
   * @brief Hands raw host copies to compression as compression_policy.hpp plans it: those
   *        of pools idle for the delay (since their latest eviction or last use, whichever
   *        came later), and, while the host store holds more than its high
   *        watermark, those of the coldest pools (transfer_engine::compress_deferred).
   *        Moving pools are skipped. Cost: a walk over every pool's pages; no driver call,
   *        no wait. @return each pool whose raw copies were handed over, in the plan's
   *        order (none before the first eviction). @pre locked, an engine lease.
   *        @throws std::bad_alloc (what was handed over is compressed; the rest stays raw).
   */
  template <typename EntryOf>
  std::vector<compression_handed> compress_raw_copies(EntryOf&& entry_of)
  {
    if (store_ == nullptr) { return {}; }
    auto const now = std::chrono::steady_clock::now();
    std::vector<raw_copies_view> views;
    for (std::size_t index = 0; index < pools_.size(); ++index) {
      auto const id = static_cast<pool_id>(index);
      if (pools_[index] == nullptr || moving(id)) { continue; }
      std::size_t const raw = pools_[index]->deferred_bytes();
      if (raw == 0) { continue; }
      // Idle since its copies were made or it was last used, whichever came later.
      auto since = pools_[index]->image()->evicted_at();
      if (auto const used = controls_.used_at(id)) { since = std::max(since, *used); }
      views.push_back(
        raw_copies_view{id, raw, std::chrono::duration_cast<std::chrono::milliseconds>(now - since),
                        pools_[index]->keeps_copies()});
    }
    if (views.empty()) { return {}; }
    host_budget const host{store_->used_bytes(), store_->limit_bytes()};
    double const use =
      host.limit_bytes == 0 ? 0.0 : detail::share(host.used_bytes, host.limit_bytes);
    std::vector<compression_handed> handed;
    for (pool_id const id : plan_compression(host, views, compression_)) {
      pool_entry const entry  = entry_of(id);
      std::size_t const bytes = engine_->compress_deferred(
        *pools_[id], codec_choice{entry.options.dtype, entry.options.codec});
      auto const view = std::find_if(views.begin(), views.end(),
                                     [id](raw_copies_view const& v) { return v.id == id; });
      if (bytes != 0) { handed.push_back(compression_handed{id, bytes, view->idle, use}); }
    }
    return handed;
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
    out.pinned         = controls_.pins(id) != 0 || moving(id);
    out.prefetched     = controls_.prefetched(id);
    out.last_use       = controls_.last_use(id);
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
          pool_controls::moving_pool const mark(controls_, step.pool);
          wait_for_pool(step.pool, wait_gate(lock));
          std::size_t const released = pool->release_idle_pages();
          out.released_bytes += released;
          out.steps.push_back(room_step_done{step.pool, step.what, released, took(), {}});
          continue;
        }
        pool_entry const entry = entry_of(step.pool);
        if (refusal_of(view(step.pool, entry), reason) != refusal::none) { continue; }
        pool_controls::moving_pool const mark(controls_, step.pool);
        wait_for_pool(step.pool, wait_gate(lock));
        evict_result const done =
          evict(*pool, step.bytes, codec_choice{entry.options.dtype, entry.options.codec},
                wait_gate(lock));
        out.evicted_bytes += done.released_bytes;
        controls_.set_prefetched(step.pool, false);  // out of memory took it: not a prefetch
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

  /**
   * @brief Whether pool `id` has allocated blocks here, once its freed blocks' waits are
   *        over (record_stream events, waited for with `lock` released; the device's work
   *        only for a free whose event could not be recorded): a block freed with a wait
   *        pending is not allocated. A move of the pool is waited for.
   * @pre `lock` holds the mutex, context current.
   */
  [[nodiscard]] bool holds_blocks(std::unique_lock<std::mutex>& lock, pool_id id)
  {
    std::vector<CUevent> const waits = frees_.events_of(id);
    wait_gate(lock).outside([&] {
      for (CUevent const event : waits) {
        driver_->event_synchronize(event);
      }
    });
    settle_frees(id, wait_gate(lock));
    wait_while_moving(lock, id);
    return pool(id) != nullptr && pools_[id]->pool().live_blocks() != 0;
  }

  /**
   * @brief Gives back every page and host copy of pool `id` and forgets it, after the GPU
   *        work that used it (`wait_for_pool`, with `lock` released, under an engine lease).
   * @return false, with nothing changed, if the pool holds allocated blocks by then.
   * @throws cuda_error if a page cannot be unmapped: the pool stays, to destroy again.
   * @pre `lock` holds the mutex, context current, no lease held.
   */
  [[nodiscard]] bool destroy(std::unique_lock<std::mutex>& lock, pool_id id)
  {
    pool_controls::engine_lease const lease(controls_, lock);  // a move of the pool ends first
    if (pool(id) == nullptr) { return true; }
    {
      pool_controls::moving_pool const mark(controls_, id);
      wait_for_pool(id, wait_gate(lock));
    }
    if (pools_[id]->pool().live_blocks() != 0) { return false; }
    pools_[id]->release_all();
    pools_[id].reset();
    for (auto const& [stream, event] : controls_.forget(id)) {
      events_.give_back(event);
    }
    return true;
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
  /// Whether `release_cache` takes pool `id`: it exists, is not moving, and is `*only`
  /// when `only` is set.
  [[nodiscard]] bool selected(pool_id id, pool_id const* only) const noexcept
  {
    return id < pools_.size() && pools_[id] != nullptr && !moving(id) &&
           (only == nullptr || *only == id);
  }

  /// Runs `also()`, then waits for the compression jobs in flight of the pools `selected`
  /// picks with `lock` released; those pools are marked moving from before `also` until
  /// the wait ends. With `cancel`, their compression is cancelled meanwhile (a release
  /// waits for checksums, not for a codec; copies cut short stay raw, deferred).
  /// @pre `lock` holds the mutex, an engine lease.
  template <typename Also>
  void settle_compression(std::unique_lock<std::mutex>& lock, pool_id const* only, Also&& also,
                          bool cancel = false)
  {
    std::vector<std::unique_ptr<pool_controls::moving_pool>> marks;
    std::vector<std::unique_ptr<pool_residency::compression_pause>> pauses;
    std::vector<task_group*> jobs;
    for (std::size_t id = 0; id < pools_.size(); ++id) {
      if (!selected(static_cast<pool_id>(id), only)) { continue; }
      if (task_group* const group = pools_[id]->compression_in_flight()) {
        marks.push_back(
          std::make_unique<pool_controls::moving_pool>(controls_, static_cast<pool_id>(id)));
        if (cancel) {
          pauses.push_back(std::make_unique<pool_residency::compression_pause>(*pools_[id]));
        }
        jobs.push_back(group);
      }
    }
    also();
    wait_gate(lock).outside([&] {
      for (task_group* const group : jobs) {
        group->wait();
      }
    });
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
  std::optional<device_limit> limit_override_;
  mutable device_counters counters_;
  address_map<live_block> live_;
  pool_controls controls_;
  struct memory_reading {
    bool known{false};
    std::size_t used{0};  // device-wide, at read_at
    std::size_t total{0};
    std::size_t own{0};  // own_bytes() at read_at
    unsigned calls{0};   // usage() calls since the clock was last read
    std::chrono::steady_clock::time_point read_at{};
  } info_;
  pressure_level level_{pressure_level::safe};  // the last level seen (exchange_level)
  event_pool events_;
  deferred_frees frees_;
  handle_cache handles_;  // outlives the pools, whose unmaps give to it
  // The swap tier, created at the device's first eviction.
  std::unique_ptr<host_store> store_;
  std::unique_ptr<transfer_engine> engine_;
  compression_settings compression_;  // set with the swap tier
  bool engine_prepared_{false};       // engine_ is ready (prepare_engine saw it so under a lease)
  // Declared last, destroyed first: their host copies go back to `store_`.
  std::vector<std::unique_ptr<pool_residency>> pools_;  // by pool_id
};

}  // namespace swapalloc
