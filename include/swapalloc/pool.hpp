/**
 * @file pool.hpp
 * @brief One model's memory on one device: a reserved virtual range, the pages that back
 *        it, the blocks inside it, and its statistics.
 *
 * A `device_pool` reserves `capacity` bytes of virtual addresses once, at construction,
 * and maps physical pages into that range only where blocks need them (`vmm.hpp`), so a
 * block's address never changes and a page can later be evicted and restored in place
 * (DESIGN §4). Pages stay mapped while free: they are the cache. `release_idle_pages`
 * gives back every resident page that no block uses.
 *
 * The swap tier's primitives (`map_for_restore`, `settle`, `unmap_page`,
 * `deallocate_parked`) change one page's residency each, checked against the table of
 * page_table.hpp before any driver call; which host copy goes with which page is the
 * business of their one caller, `pool_residency` (residency.hpp), which owns this pool.
 *
 * Costs: `allocate_cached` and `deallocate` are the hot path (no driver call, no
 * allocation, a few counters); `allocate` maps pages (driver calls) when its block lies
 * on pages that are not resident.
 *
 * Preconditions of every driver-touching call: the device's context is current on the
 * calling thread. Thread safety: none; the allocator serializes calls per device.
 */
#pragma once

#include <swapalloc/block_cache.hpp>
#include <swapalloc/driver.hpp>
#include <swapalloc/handle_cache.hpp>
#include <swapalloc/vmm.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace swapalloc {

/// Counters of one pool on one device (or their sum). Bytes are block bytes (rounded).
struct pool_stats {
  std::size_t allocated_bytes{0};  ///< in live blocks (and blocks awaiting events)
  std::size_t requested_bytes{0};  ///< asked for by the live blocks' callers
  std::size_t reserved_bytes{0};   ///< resident pages
  std::size_t peak_allocated_bytes{0};
  std::size_t peak_reserved_bytes{0};
  std::size_t live_blocks{0};
  std::size_t allocations{0};
  std::size_t frees{0};
  std::size_t cached_free_bytes{0};   ///< reserved but not allocated
  std::size_t largest_free_block{0};  ///< largest free run on resident pages
  std::size_t stray_bytes{0};         ///< device memory a failed rollback could not give
                                      ///< back yet (vmm.hpp stray_pages; retried)
  std::size_t evicted_bytes{0};       ///< pages whose live bytes are in host memory
                                      ///< (evicted, or mapped again but not yet restored)
  std::size_t restoring_bytes{0};     ///< of those, pages mapped again (device memory
                                      ///< held; a restore in progress or rolled back)
  std::size_t host_bytes{0};          ///< host memory holding the pool's pages (stored)
  std::size_t evictions{0};           ///< pages evicted (copied out, or unmapped only)
  std::size_t restores{0};            ///< pages restored

  /// Adds `other` field by field (peaks add too: a bound for the total).
  pool_stats& operator+=(pool_stats const& other) noexcept
  {
    allocated_bytes += other.allocated_bytes;
    requested_bytes += other.requested_bytes;
    reserved_bytes += other.reserved_bytes;
    peak_allocated_bytes += other.peak_allocated_bytes;
    peak_reserved_bytes += other.peak_reserved_bytes;
    live_blocks += other.live_blocks;
    allocations += other.allocations;
    frees += other.frees;
    cached_free_bytes += other.cached_free_bytes;
    largest_free_block = std::max(largest_free_block, other.largest_free_block);
    stray_bytes += other.stray_bytes;
    evicted_bytes += other.evicted_bytes;
    restoring_bytes += other.restoring_bytes;
    host_bytes += other.host_bytes;
    evictions += other.evictions;
    restores += other.restores;
    return *this;
  }
};

/// A pool's memory on one device. See the file comment.
class device_pool {
 public:
  /**
   * @brief Reserves `capacity` bytes of addresses for the pool `name` on `device`.
   * @param page_size bytes per page: a multiple of the device's allocation granularity.
   * @param handles `device`'s cache of unmapped page handles, which the pool's unmaps fill
   *        and its maps take from (vmm.hpp), or nullptr; it must outlive the pool.
   * @throws std::invalid_argument for a capacity or page size that is not a positive
   *         multiple of the granularity.
   * @throws cuda_error if the reservation fails.
   */
  device_pool(driver const& drv, CUdevice device, std::string name, std::size_t capacity,
              std::size_t page_size, handle_cache* handles = nullptr)
    : driver_(&drv),
      device_(device),
      name_(std::move(name)),
      blocks_(checked_capacity(drv, device, capacity, page_size), page_size),
      range_(drv, capacity),
      handles_(handles)
  {
  }

  device_pool(device_pool const&)            = delete;
  device_pool& operator=(device_pool const&) = delete;

  /// Unmaps every mapped page (resident or restoring), best effort (a destructor reports
  /// nothing), then the reservation frees the range. @pre no work on the device still
  /// uses the pool.
  ~device_pool()
  {
    (void)stray_.retry(*driver_);
    for (std::size_t page = 0; page < blocks_.page_count(); ++page) {
      page_state const state = blocks_.page(page);
      if (state != page_state::resident && state != page_state::restoring) { continue; }
      (void)driver_->table().cuMemUnmap(page_address(page), blocks_.page_size());
    }
  }

  [[nodiscard]] std::string const& name() const noexcept { return name_; }
  [[nodiscard]] CUdevice device() const noexcept { return device_; }
  [[nodiscard]] CUdeviceptr base() const noexcept { return range_.base(); }
  [[nodiscard]] std::size_t capacity() const noexcept { return blocks_.capacity(); }
  [[nodiscard]] std::size_t page_size() const noexcept { return blocks_.page_size(); }
  [[nodiscard]] block_cache const& blocks() const noexcept { return blocks_; }
  /// The device address of `b`.
  [[nodiscard]] CUdeviceptr address(block const& b) const noexcept
  {
    return range_.base() + b.offset;
  }
  /// True when `address` lies in the pool's range.
  [[nodiscard]] bool contains(CUdeviceptr address) const noexcept
  {
    return range_.contains(address, 1);
  }

  /**
   * @brief Hot path: a cached block of exactly `rounded` bytes for `tag`, or nullptr.
   * Cost: a bin lookup and six counter updates; no driver call, no allocation.
   */
  [[nodiscard]] block* allocate_cached(std::size_t rounded, std::size_t requested,
                                       stream_tag tag) noexcept
  {
    block* const found = blocks_.take_cached(rounded, tag);
    if (found != nullptr) { count_allocation(*found, requested); }
    return found;
  }

  /**
   * @brief Slow path: a block of `rounded` bytes for `tag`, mapping the pages it needs.
   *        Only unmapped pages are ever mapped: a block placed on a page whose data is in
   *        host memory would be a bug, reported before any driver call.
   * @return the block, or nullptr if the range has no room for it (after coalescing).
   * @throws cuda_error if mapping fails (CUDA_ERROR_OUT_OF_MEMORY from cuMemCreate when
   *         the device is full); the block is then free again and the pages mapped before
   *         the failure stay resident and cached. `last_map_bytes` says what it needed.
   * @throws std::logic_error if the block lies on a page that is not resident or unmapped.
   */
  [[nodiscard]] block* allocate(std::size_t rounded, std::size_t requested, stream_tag tag)
  {
    block* const found = blocks_.take(rounded, tag);
    if (found == nullptr) { return nullptr; }
    try {
      runs_.clear();
      last_map_bytes_ = 0;
      blocks_.for_each_missing_run(*found, [&](std::size_t first, std::size_t count) {
        blocks_.require_change(first, count, page_state::resident);
        runs_.emplace_back(first, count);
        last_map_bytes_ += count * blocks_.page_size();
      });
      if (!stray_.empty()) { (void)stray_.retry(*driver_); }  // a mapping may be in the way
      for (auto const& [first, count] : runs_) {
        map_pages(*driver_, page_address(first), blocks_.page_size(), count, device_, stray_,
                  handles_);
        blocks_.change_pages(first, count, page_state::resident);
        note_reserved();
      }
    } catch (...) {
      blocks_.release(found);
      throw;
    }
    count_allocation(*found, requested);
    return found;
  }

  /// Hot path: returns a freed block to its stream's cache. Cost: a bin push, 3 counters.
  void deallocate(block* freed)
  {
    count_free(*freed);
    blocks_.cache(freed);
  }

  /// Frees `freed` but keeps it out of reuse until `events` events complete
  /// (`finish_waiting` then caches it). Counted allocated meanwhile, as PyTorch does.
  void hold(block* freed, std::uint32_t events) noexcept { blocks_.hold(freed, events); }

  /// The events of a held block have completed: it becomes reusable on its stream.
  void finish_waiting(block* waited)
  {
    count_free(*waited);
    blocks_.cache(waited);
  }

  /// Bytes of new pages the last `allocate` had to map (what an out-of-memory needed).
  [[nodiscard]] std::size_t last_map_bytes() const noexcept { return last_map_bytes_; }

  /**
   * @brief Gives back every resident page that no block uses; returns the bytes released.
   * Flushes the caches and forgets stream ownership first, so it frees all the pool's
   * cached memory: every resident page with no allocated or waiting block, which
   * `idle_page_bytes` reports beforehand. Calls `released(page)` after each page is
   * unmapped (the residency drops a host copy the page may have kept). @pre all work on
   * the device has completed (the caller synchronized).
   * @throws cuda_error for the first page whose cuMemUnmap failed, after unmapping every
   *         other page it could; a page that failed stays resident and cached.
   */
  template <typename Released>
  std::size_t release_idle_pages(Released&& on_released)
  {
    if (!stray_.empty()) { (void)stray_.retry(*driver_); }
    blocks_.flush_bins();
    blocks_.forget_streams();
    runs_.clear();
    // The runs idle_page_bytes counts: after the flush, exactly the pages without users.
    blocks_.for_each_releasable_run(
      [&](std::size_t first, std::size_t count) { runs_.emplace_back(first, count); });
    std::size_t released = 0;
    CUresult first_error = CUDA_SUCCESS;
    CUdeviceptr failed   = 0;
    std::size_t pages    = 0;
    for (auto const& run : runs_) {
      pages += run.second;
    }
    stray_.reserve(pages);  // each unmap may leave one stray handle
    for (auto const& [first, count] : runs_) {
      for (std::size_t page = first; page < first + count; ++page) {
        blocks_.require_change(page, 1, page_state::unmapped);
        CUresult const result = swapalloc::unmap_page(*driver_, page_address(page),
                                                      blocks_.page_size(), handles_, stray_);
        if (result != CUDA_SUCCESS) {
          if (first_error == CUDA_SUCCESS) {
            first_error = result;
            failed      = page_address(page);
          }
          continue;
        }
        blocks_.change_pages(page, 1, page_state::unmapped);
        on_released(page);
        released += blocks_.page_size();
      }
    }
    blocks_.trim_end();
    driver_->check(first_error, "cuMemUnmap", [&] {
      return "ptr=" + hex(failed) + ", size=" + std::to_string(blocks_.page_size()) + " (pool '" +
             name_ + "'); that page stays resident";
    });
    return released;
  }

  /**
   * @brief Before the pool is destroyed: gives back every page (none may be in use) and
   *        every stray page, so that the range can be freed.
   * @throws cuda_error for the first driver call that failed; what it could not give back
   *         stays the pool's, and a later call can finish.
   * @throws std::logic_error if a block is still live. @pre the device was synchronized.
   */
  void release_all()
  {
    if (stats_.live_blocks != 0) {
      throw std::logic_error("swapalloc: release_all(pool '" + name_ + "'): " +
                             std::to_string(stats_.live_blocks) + " blocks are still live");
    }
    (void)release_idle_pages();
    stray_pages::failure const stray = stray_.retry(*driver_);
    driver_->check(stray.code, stray.call, [&] {
      return "pool '" + name_ + "': " + std::to_string(stray_.bytes()) +
             " bytes that a failed rollback could not give back";
    });
  }

  /// As above, for a pool whose pages keep no host copies.
  std::size_t release_idle_pages()
  {
    return release_idle_pages([](std::size_t) noexcept {});
  }

  // ------------------------------------------------------------ swap tier (residency.hpp)

  /// Pages whose data is in host memory (evicted or restoring). Cost: two loads (the
  /// deallocate path tests it).
  [[nodiscard]] std::size_t parked_pages() const noexcept { return blocks_.parked_pages(); }
  [[nodiscard]] std::size_t page_count() const noexcept { return blocks_.page_count(); }
  [[nodiscard]] page_state page(std::size_t index) const noexcept { return blocks_.page(index); }

  /// Device memory this pool holds: resident and restoring pages, and stray ones. Cost: a
  /// few loads.
  [[nodiscard]] std::size_t mapped_bytes() const noexcept
  {
    return (blocks_.resident_pages() + blocks_.pages().count(page_state::restoring)) * page_size() +
           stray_.bytes();
  }

  /**
   * @brief Bytes that `release_idle_pages` would give back now: resident pages on which
   *        no block is allocated or waiting for events. Free space counts whether it is in
   *        the best-fit index or still in a stream's bin (release flushes the bins first),
   *        so the policy sees a pool's freed memory as cached, not as live data to evict.
   *        Both walk the same runs (block_cache::for_each_releasable_run), so they agree
   *        unless an unmap fails. Changes nothing, allocates nothing, no driver call.
   * Cost: a walk over the pages, and over the blocks on pages that have users (pages +
   * blocks steps). @pre the caller serializes calls (the device lock).
   */
  [[nodiscard]] std::size_t idle_page_bytes() const noexcept
  {
    std::size_t idle = 0;
    blocks_.for_each_releasable_run(
      [&idle](std::size_t, std::size_t count) noexcept { idle += count; });
    return idle * page_size();
  }
  [[nodiscard]] std::uint32_t page_users(std::size_t index) const noexcept
  {
    return blocks_.page_users(index);
  }
  /// The device address of page `index`.
  [[nodiscard]] CUdeviceptr page_address(std::size_t index) const noexcept
  {
    return range_.base() + index * blocks_.page_size();
  }

  /// Makes every free block reusable by any stream and coalesces, so that the free space
  /// of the pages about to be evicted can be parked. @pre the device was synchronized.
  void prepare_swap()
  {
    blocks_.flush_bins();
    blocks_.forget_streams();
  }

  /// Calls `visit(page, offset, bytes)` for each live byte range on pages [first, first +
  /// count): the parts of allocated blocks, in address order, split at page boundaries.
  template <typename Visitor>
  void for_each_live_range(std::size_t first, std::size_t count, Visitor&& visit) const
  {
    blocks_.for_each_live_range(first, count, std::forward<Visitor>(visit));
  }

  /**
   * @brief Maps the `count` evicted pages from `index` again at their addresses, with one
   *        cuMemSetAccess for the run (vmm.hpp map_pages): they become `restoring` (mapped,
   *        their data still in the host copy) until `settle`.
   * @throws std::logic_error if a page is not evicted; cuda_error from map_pages (the
   *         pages stay evicted, nothing mapped).
   */
  void map_for_restore(std::size_t index, std::size_t count = 1)
  {
    blocks_.require_change(index, count, page_state::restoring);
    if (!stray_.empty()) { (void)stray_.retry(*driver_); }
    map_pages(*driver_, page_address(index), blocks_.page_size(), count, device_, stray_, handles_);
    blocks_.change_pages(index, count, page_state::restoring);
  }

  /// Restoring page `index` holds its data (a restore filled it), or no block uses it any
  /// more: it becomes resident. No driver call. @throws std::logic_error if not restoring.
  void settle(std::size_t index)
  {
    blocks_.change_pages(index, 1, page_state::resident);
    note_reserved();
  }

  /**
   * @brief Unmaps page `index` (freeing its memory): a resident page becomes `after`
   *        (`evicted` when its live bytes are in host memory, `unmapped` when it has no
   *        block); a restoring page becomes `evicted` again.
   * @pre the work that used the page has completed.
   * @throws std::logic_error for a change page_table.hpp does not allow (before the
   *         driver call); cuda_error if cuMemUnmap fails: the page keeps its state then.
   */
  void unmap_page(std::size_t index, page_state after)
  {
    blocks_.require_change(index, 1, after);
    stray_.reserve(1);
    driver_->check(
      swapalloc::unmap_page(*driver_, page_address(index), blocks_.page_size(), handles_, stray_),
      "cuMemUnmap", [&] {
        return "ptr=" + hex(page_address(index)) + ", size=" + std::to_string(blocks_.page_size()) +
               " (pool '" + name_ + "'); that page keeps its state (" +
               to_string(blocks_.page(index)) + ")";
      });
    blocks_.change_pages(index, 1, after);
  }

  /**
   * @brief Unmaps the `count` pages from `index` with one cuMemUnmap (vmm.hpp unmap_run):
   *        each becomes `after`, as unmap_page would make it.
   * @return false if that call failed: no page changed state, and the caller unmaps them
   *         one by one with unmap_page (some may be unmapped already; that unmap succeeds).
   * @pre as unmap_page, for every page of the run.
   * @throws std::logic_error as unmap_page, before any driver call; std::bad_alloc.
   */
  [[nodiscard]] bool unmap_run(std::size_t index, std::size_t count, page_state after)
  {
    blocks_.require_change(index, count, after);
    stray_.reserve(count);
    if (swapalloc::unmap_run(*driver_, page_address(index), blocks_.page_size(), count, handles_,
                             stray_) != CUDA_SUCCESS) {
      return false;
    }
    blocks_.change_pages(index, count, after);
    return true;
  }

  /**
   * @brief Frees a block of which some page holds its data in host memory: its bytes
   *        there become parked free space. A page left without any block holds no data
   *        any more: an evicted one becomes `unmapped`, a restoring one (mapped) resident,
   *        and `lost_data(page)` is called for it, so that the caller drops its host copy.
   *        No driver call.
   */
  template <typename LostData>
  void deallocate_parked(block* freed, LostData&& lost_data)
  {
    std::size_t const first = blocks_.first_page(*freed);
    std::size_t const last  = blocks_.last_page(*freed);
    count_free(*freed);
    blocks_.release(freed);  // `freed` may merge away: nothing reads it after this
    for (std::size_t index = first; index <= last; ++index) {
      page_state const state = blocks_.page(index);
      if (!data_on_host(state) || blocks_.page_users(index) != 0) { continue; }
      blocks_.change_pages(
        index, 1, state == page_state::evicted ? page_state::unmapped : page_state::resident);
      lost_data(index);
    }
    blocks_.trim_end();
  }

  /// True when `b` touches a page whose data is in host memory. Cost: a loop over its pages.
  [[nodiscard]] bool touches_parked(block const& b) const noexcept
  {
    return blocks_.touches_parked(b);
  }

  /// Counts `pages` evicted, or restored. Cost: an add.
  void count_evictions(std::size_t pages) noexcept { stats_.evictions += pages; }
  void count_restores(std::size_t pages) noexcept { stats_.restores += pages; }

  /// The pool's counters, with the derived fields filled in. Cost: a walk over its blocks.
  [[nodiscard]] pool_stats stats() const
  {
    pool_stats out         = stats_;
    out.reserved_bytes     = reserved_bytes();
    out.cached_free_bytes  = out.reserved_bytes - std::min(out.reserved_bytes, out.allocated_bytes);
    out.largest_free_block = blocks_.largest_free_resident();
    out.evicted_bytes      = blocks_.parked_pages() * blocks_.page_size();
    out.restoring_bytes    = blocks_.pages().count(page_state::restoring) * blocks_.page_size();
    out.stray_bytes        = stray_.bytes();
    return out;
  }

  /// Blocks allocated and not yet reusable (held ones included). Cost: a load.
  [[nodiscard]] std::size_t live_blocks() const noexcept { return stats_.live_blocks; }

  /// Structural check of the blocks (tests): empty string when consistent.
  [[nodiscard]] std::string check() const { return blocks_.check(); }

 private:
  [[nodiscard]] static std::size_t checked_capacity(driver const& drv, CUdevice device,
                                                    std::size_t capacity, std::size_t page_size)
  {
    std::size_t const granularity = drv.allocation_granularity(device);
    if (page_size == 0 || page_size % granularity != 0) {
      throw std::invalid_argument("swapalloc: pool page_size=" + std::to_string(page_size) +
                                  ": expected a positive multiple of the allocation granularity, " +
                                  std::to_string(granularity) + " bytes");
    }
    if (capacity == 0 || capacity % page_size != 0) {
      throw std::invalid_argument(
        "swapalloc: pool capacity=" + std::to_string(capacity) +
        ": expected a positive multiple of page_size=" + std::to_string(page_size));
    }
    return capacity;
  }

  void count_allocation(block& b, std::size_t requested) noexcept
  {
    b.requested = requested;
    stats_.allocated_bytes += b.size;
    stats_.requested_bytes += requested;
    stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
    ++stats_.live_blocks;
    ++stats_.allocations;
  }

  void count_free(block const& b) noexcept
  {
    stats_.allocated_bytes -= b.size;
    stats_.requested_bytes -= b.requested;
    --stats_.live_blocks;
    ++stats_.frees;
  }

  [[nodiscard]] std::size_t reserved_bytes() const noexcept
  {
    return blocks_.resident_pages() * blocks_.page_size();
  }

  void note_reserved() noexcept
  {
    stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, reserved_bytes());
  }

  driver const* driver_;
  CUdevice device_;
  std::string name_;
  block_cache blocks_;
  address_reservation range_;
  pool_stats stats_;  // reserved_bytes, cached_free_bytes, largest_free_block: derived
  std::vector<std::pair<std::size_t, std::size_t>> runs_;  // scratch: page runs
  std::size_t last_map_bytes_{0};
  stray_pages stray_;  // what failed rollbacks could not give back: retried before mapping
  handle_cache* handles_{nullptr};  // the device's, shared by its pools; may be null
};

}  // namespace swapalloc
