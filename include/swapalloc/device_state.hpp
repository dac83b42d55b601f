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

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace swapalloc {

/// A live block and the pool that owns it.
struct live_block {
  block* freed{nullptr};  ///< the block, named for its use at free
  pool_id pool{0};
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

  /// Retains the primary context at the first use. @pre locked.
  void ensure_context()
  {
    if (context_ == nullptr) { context_ = driver_->retain_primary_context(device_); }
  }

  /// Pool `id`'s residency here, or null before its first allocation here. @pre locked.
  [[nodiscard]] pool_residency* pool(pool_id id) const noexcept
  {
    return id < pools_.size() ? pools_[id].get() : nullptr;
  }

  /**
   * @brief Pool `id`'s residency, created (its range reserved) at the first call.
   * @throws std::invalid_argument for sizes that are not multiples of the granularity;
   *         cuda_error if the range cannot be reserved. @pre locked, context current.
   */
  pool_residency& pool_for(pool_id id, pool_entry const& entry, pool_defaults defaults)
  {
    if (pool_residency* const existing = pool(id); existing != nullptr) { return *existing; }
    std::size_t page_size =
      entry.options.page_size != 0 ? entry.options.page_size : defaults.page_size;
    if (page_size == 0) { page_size = driver_->allocation_granularity(device_); }
    std::size_t capacity = entry.options.capacity != 0 ? entry.options.capacity : defaults.capacity;
    if (capacity == 0) {
      capacity = default_capacity_per_device_byte * driver_->device_total_memory(device_);
    }
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
      if (pools_[id] == nullptr || (only != nullptr && *only != id)) { continue; }
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

  // ---------------------------------------------------------------- pins

  /// Pins pool `id` here: eviction refuses it until as many `unpin`. @pre locked.
  void pin(pool_id id)
  {
    if (pins_.size() <= id) { pins_.resize(id + 1, 0); }
    ++pins_[id];
  }
  /// Undoes one `pin`; false if the pool was not pinned here. @pre locked.
  [[nodiscard]] bool unpin(pool_id id) noexcept
  {
    if (pins(id) == 0) { return false; }
    --pins_[id];
    return true;
  }
  /// Pins of pool `id` here. @pre locked.
  [[nodiscard]] std::size_t pins(pool_id id) const noexcept
  {
    return id < pins_.size() ? pins_[id] : 0;
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
   *        that used the pool is complete.
   */
  evict_result evict(pool_residency& pool, std::size_t bytes, codec_choice const& choice)
  {
    pool.prepare_swap();
    device_pool const& pages_of = pool.pool();
    std::vector<page_view> candidates;
    for (std::size_t page = 0; page < pages_of.page_count(); ++page) {
      page_state const at = pages_of.page(page);
      if (at != page_state::resident && at != page_state::restoring) { continue; }
      bool const no_copy = pages_of.page_users(page) == 0 || pool.copy(page) == copy_state::current;
      candidates.push_back(page_view{page, !no_copy});
    }
    return engine_->evict(pool, plan_pages(candidates, bytes, pages_of.page_size()), choice);
  }

  /// Restores every page of `pool` whose data is in host memory; `stream` (if not null)
  /// waits for the copies. @pre locked, context current, the pool has such pages.
  restore_result restore(pool_residency& pool, CUstream stream)
  {
    std::vector<std::size_t> pages;
    for (std::size_t page = 0; page < pool.pool().page_count(); ++page) {
      if (data_on_host(pool.pool().page(page))) { pages.push_back(page); }
    }
    return engine_->restore(pool, pages, stream);
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

  /// Gives back every page and host copy of pool `id` and forgets it.
  /// @throws cuda_error if a page cannot be unmapped: the pool stays, to destroy again.
  /// @pre locked, context current, the device synchronized, no live block in the pool.
  void destroy(pool_id id)
  {
    if (pool(id) == nullptr) { return; }
    pools_[id]->release_all();
    pools_[id].reset();
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
  address_map<live_block> live_;
  std::vector<std::size_t> pins_;  // by pool_id
  event_pool events_;
  deferred_frees frees_;
  // The swap tier, created at the device's first eviction.
  std::unique_ptr<host_store> store_;
  std::unique_ptr<transfer_engine> engine_;
  // Declared last, destroyed first: their host copies go back to `store_`.
  std::vector<std::unique_ptr<pool_residency>> pools_;  // by pool_id
};

}  // namespace swapalloc
