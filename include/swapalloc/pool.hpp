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

  /// The pool's counters, with the derived fields filled in. Cost: a walk over its blocks.
  [[nodiscard]] pool_stats stats() const
  {
    pool_stats out         = stats_;
    out.reserved_bytes     = reserved_bytes();
    out.cached_free_bytes  = out.reserved_bytes - std::min(out.reserved_bytes, out.allocated_bytes);
    out.largest_free_block = blocks_.largest_free_resident();
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

  [[nodiscard]] CUdeviceptr page_address(std::size_t page) const noexcept
  {
    return range_.base() + page * blocks_.page_size();
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
};

}  // namespace swapalloc
