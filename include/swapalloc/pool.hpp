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
  std::size_t evicted_bytes{0};       ///< pages whose live bytes are in host memory
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
    evicted_bytes += other.evicted_bytes;
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
   * @throws std::invalid_argument for a capacity or page size that is not a positive
   *         multiple of the granularity.
   * @throws cuda_error if the reservation fails.
   */
  device_pool(driver const& drv, CUdevice device, std::string name, std::size_t capacity,
              std::size_t page_size)
    : driver_(&drv),
      device_(device),
      name_(std::move(name)),
      blocks_(checked_capacity(drv, device, capacity, page_size), page_size),
      range_(drv, capacity)
  {
  }

  device_pool(device_pool const&)            = delete;
  device_pool& operator=(device_pool const&) = delete;

  /// Unmaps every resident page, best effort (a destructor reports nothing), then the
  /// reservation frees the range. @pre no work on the device still uses the pool.
  ~device_pool()
  {
    for (std::size_t page = 0; page < blocks_.page_count(); ++page) {
      if (blocks_.page(page) != page_state::resident) { continue; }
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
   * @return the block, or nullptr if the range has no room for it (after coalescing).
   * @throws cuda_error if mapping fails (CUDA_ERROR_OUT_OF_MEMORY from cuMemCreate when
   *         the device is full); the block is then free again and the pages mapped before
   *         the failure stay resident and cached.
   */
  [[nodiscard]] block* allocate(std::size_t rounded, std::size_t requested, stream_tag tag)
  {
    block* const found = blocks_.take(rounded, tag);
    if (found == nullptr) { return nullptr; }
    try {
      runs_.clear();
      blocks_.for_each_missing_run(
        *found, [&](std::size_t first, std::size_t count) { runs_.emplace_back(first, count); });
      for (auto const& [first, count] : runs_) {
        map_pages(*driver_, page_address(first), blocks_.page_size(), count, device_);
        blocks_.set_pages(first, count, page_state::resident);
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

  /**
   * @brief Gives back every resident page that no block uses; returns the bytes released.
   * Flushes the caches and forgets stream ownership first, so it frees all the pool's
   * cached memory. @pre all work on the device has completed (the caller synchronized).
   * @throws cuda_error for the first page whose cuMemUnmap failed, after unmapping every
   *         other page it could; a page that failed stays resident and cached.
   */
  std::size_t release_idle_pages()
  {
    blocks_.flush_bins();
    blocks_.forget_streams();
    runs_.clear();
    blocks_.for_each_idle_run(
      [&](std::size_t first, std::size_t count) { runs_.emplace_back(first, count); });
    std::size_t released = 0;
    CUresult first_error = CUDA_SUCCESS;
    CUdeviceptr failed   = 0;
    for (auto const& [first, count] : runs_) {
      for (std::size_t page = first; page < first + count; ++page) {
        CUresult const result =
          driver_->table().cuMemUnmap(page_address(page), blocks_.page_size());
        if (result != CUDA_SUCCESS) {
          if (first_error == CUDA_SUCCESS) {
            first_error = result;
            failed      = page_address(page);
          }
          continue;
        }
        blocks_.set_pages(page, 1, page_state::unmapped);
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

  // ------------------------------------------------------------ swap tier (transfer.hpp)

  /// Pages in state `evicted`. Cost: a load (the deallocate path tests it).
  [[nodiscard]] std::size_t evicted_pages() const noexcept { return blocks_.evicted_pages(); }
  [[nodiscard]] std::size_t page_count() const noexcept { return blocks_.page_count(); }
  [[nodiscard]] page_state page(std::size_t index) const noexcept { return blocks_.page(index); }
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
   * @brief Maps a fresh page at page `index` (state `unmapped` or `evicted`) and makes it
   *        resident. Follow with `repark` once the pages of an operation are done.
   * @throws cuda_error from map_pages; the page keeps its state then.
   */
  void map_page(std::size_t index)
  {
    map_pages(*driver_, page_address(index), blocks_.page_size(), 1, device_);
    blocks_.set_pages(index, 1, page_state::resident);
    note_reserved();
  }

  /**
   * @brief Unmaps resident page `index` (freeing its memory) and gives it state `after`
   *        (`evicted` when its live bytes are in host memory, else `unmapped`). Follow with
   *        `repark`. @pre the work that used the page has completed.
   * @throws cuda_error if cuMemUnmap fails; the page stays resident then.
   */
  void unmap_page(std::size_t index, page_state after)
  {
    driver_->check(
      driver_->table().cuMemUnmap(page_address(index), blocks_.page_size()), "cuMemUnmap", [&] {
        return "ptr=" + hex(page_address(index)) + ", size=" + std::to_string(blocks_.page_size()) +
               " (pool '" + name_ + "'); that page stays resident";
      });
    blocks_.set_pages(index, 1, after);
  }

  /// Parks the free space of evicted pages, un-parks the rest (block_cache::repark).
  void repark() { blocks_.repark(); }

  /**
   * @brief Frees a block of which some page is evicted: it becomes free space there (parked
   *        until the page is restored). An evicted page left without any live block holds
   *        no data any more: it becomes `unmapped` and its index is appended to `dropped`,
   *        so that the caller frees its host copy. No driver call.
   */
  void deallocate_evicted(block* freed, std::vector<std::size_t>& dropped)
  {
    count_free(*freed);
    std::size_t const first = blocks_.first_page(*freed);
    std::size_t const last  = blocks_.last_page(*freed);
    block* const merged     = blocks_.release(freed);
    for (std::size_t index = first; index <= last; ++index) {
      if (blocks_.page(index) == page_state::evicted && blocks_.page_users(index) == 0) {
        blocks_.set_pages(index, 1, page_state::unmapped);
        dropped.push_back(index);
      }
    }
    blocks_.repark_pages(merged, first, last);  // only these pages changed
    blocks_.trim_end();
  }

  /// True when `b` touches an evicted page. Cost: a division and a loop over its pages.
  [[nodiscard]] bool touches_evicted(block const& b) const noexcept
  {
    for (std::size_t index = blocks_.first_page(b); index <= blocks_.last_page(b); ++index) {
      if (blocks_.page(index) == page_state::evicted) { return true; }
    }
    return false;
  }

  /// Marks resident page `index` as equal to its host copy (a read-only pool keeps the
  /// copy after a restore): evicting it again is an unmap only. An allocation on the page
  /// (new data) ends that; see `take_dirtied`.
  void mark_clean(std::size_t index)
  {
    if (clean_.empty()) { clean_.assign(blocks_.page_count(), 0); }
    clean_pages_ += clean_[index] == 0 ? 1 : 0;
    clean_[index] = 1;
  }
  /// Forgets that page `index` equals its host copy (the copy is being dropped, or used).
  void clear_clean(std::size_t index) noexcept
  {
    if (clean_.empty() || clean_[index] == 0) { return; }
    clean_[index] = 0;
    --clean_pages_;
  }
  [[nodiscard]] bool clean(std::size_t index) const noexcept
  {
    return !clean_.empty() && clean_[index] != 0;
  }
  /// Pages that stopped being clean since the last call: their host copies are stale.
  [[nodiscard]] std::vector<std::size_t> take_dirtied() { return std::exchange(dirtied_, {}); }
  [[nodiscard]] bool has_dirtied() const noexcept { return !dirtied_.empty(); }

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
    out.evicted_bytes      = blocks_.evicted_pages() * blocks_.page_size();
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
    if (clean_pages_ != 0) [[unlikely]] { dirty(b); }
    b.requested = requested;
    stats_.allocated_bytes += b.size;
    stats_.requested_bytes += requested;
    stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
    ++stats_.live_blocks;
    ++stats_.allocations;
  }

  /// An allocation lands on clean pages: they hold new data now. Off the hot path: only
  /// while a read-only pool keeps host copies of resident pages. May allocate.
  void dirty(block const& b) noexcept
  {
    for (std::size_t index = blocks_.first_page(b); index <= blocks_.last_page(b); ++index) {
      if (clean_[index] == 0) { continue; }
      clear_clean(index);
      try {
        dirtied_.push_back(index);
      } catch (...) {  // NOLINT(bugprone-empty-catch): see below
        // Out of host memory: the copy stays, but it is no longer clean, so the next
        // eviction copies the page again and replaces it. Nothing is lost.
      }
    }
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
  std::vector<std::uint8_t> clean_;  // per page, sized at the first mark_clean
  std::size_t clean_pages_{0};       // tested on every allocation: one load
  std::vector<std::size_t> dirtied_;
};

}  // namespace swapalloc
