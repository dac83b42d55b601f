/**
 * @file handle_cache.hpp
 * @brief A per-device cache of physical page handles that no mapping uses, so that a page
 *        mapped in one pool takes the memory a page of another pool gave up moments
 *        before, instead of a cuMemCreate after a cuMemRelease (issue 14: "evicting A to
 *        restore B is the common case in every seed").
 *
 * How a handle gets here: before a page is unmapped, cuMemRetainAllocationHandle takes a
 * reference to its memory (cuda.h: "the returned handle must be released with
 * corresponding number of calls to cuMemRelease"; the memory lives while a mapping or a
 * reference does); after the unmap, `give` keeps that reference. `take` hands one back,
 * to be mapped and then released as a fresh cuMemCreate handle would be (vmm.hpp).
 *
 * Bounded in time by operations: the cache keeps handles only while an `armed` scope is
 * open (the room maker opens one around an allocation or a restore, whose room-making
 * evictions feed the maps that follow), and the last scope to close releases what is
 * left. Outside a scope nothing is kept, so an explicit evict, empty_cache or the
 * monitor's eviction gives device memory back to the driver at once, where another
 * process and cuMemGetInfo see it. Bounded in bytes by `max_bytes`: past it, `give`
 * releases at once.
 *
 * Cost (reported A100 figures, vmm.hpp): a hit saves cuMemCreate (8-190 us) and
 * cuMemRelease, for one cuMemRetainAllocationHandle at the unmap; `take` and `give` are
 * a mutex and a scan of the handles held. A handle whose cuMemRelease fails stays cached
 * (still valid: `take` may hand it out) and is released again by the next release_all,
 * the next last scope to close, or at destruction; until then it counts in `stray_bytes`,
 * which the allocator adds to the device's stray bytes, so no device memory is lost track
 * of. Only such handles may make the cache hold more than max_bytes.
 *
 * Thread safety: every member may be called from any thread. cuMemRelease runs under the
 * cache's mutex (it does not synchronize the device); the allocator's hot path never takes
 * that mutex (only map and unmap paths do).
 */
#pragma once

#include <swapalloc/driver.hpp>

#include <algorithm>
#include <cstddef>
#include <mutex>
#include <new>
#include <vector>

namespace swapalloc {

/// A handle_cache's counters, read under one lock.
struct handle_cache_stats {
  std::size_t held_bytes{0};      ///< device memory held by cached handles
  std::size_t handles{0};         ///< handles cached now
  std::size_t hits{0};            ///< `take` calls answered with a handle
  std::size_t misses{0};          ///< `take` calls that found none of the size
  std::size_t kept{0};            ///< handles `give` kept
  std::size_t released_bytes{0};  ///< given back to the driver so far
  std::size_t stray_bytes{0};     ///< held because cuMemRelease failed (part of held_bytes)
};

/// Physical page handles kept for reuse on one device. See the file comment.
class handle_cache {
 public:
  /// @param drv the driver the handles come from; it must outlive the cache.
  /// @param max_bytes bytes of unmapped memory the cache may hold; 0 turns it off.
  handle_cache(driver const& drv, std::size_t max_bytes) noexcept
    : drv_(&drv), max_bytes_(max_bytes)
  {
  }

  handle_cache(handle_cache const&)            = delete;
  handle_cache& operator=(handle_cache const&) = delete;
  handle_cache(handle_cache&&)                 = delete;
  handle_cache& operator=(handle_cache&&)      = delete;

  /// Releases every handle, best effort (a failure is ignored: nothing else can be done).
  ~handle_cache()
  {
    for (cached const& c : cached_) {
      (void)drv_->table().cuMemRelease(c.handle);
    }
  }

  /// While one lives, `give` keeps handles (up to max_bytes); when the last one of the
  /// cache closes, every cached handle is released. Scopes nest and may overlap across
  /// threads.
  class armed {
   public:
    explicit armed(handle_cache& cache) noexcept : cache_(&cache)
    {
      std::lock_guard const lock(cache.mutex_);
      ++cache.armed_;
    }
    armed(armed const&)            = delete;
    armed& operator=(armed const&) = delete;
    ~armed()
    {
      std::lock_guard const lock(cache_->mutex_);
      if (--cache_->armed_ == 0) { cache_->release_unlocked(); }
    }

   private:
    handle_cache* cache_;
  };

  /**
   * @brief A cached handle of exactly `bytes` (the most recently cached one), now the
   *        caller's to map and release; 0 when there is none.
   */
  [[nodiscard]] CUmemGenericAllocationHandle take(std::size_t bytes) noexcept
  {
    std::lock_guard const lock(mutex_);
    for (std::size_t i = cached_.size(); i-- > 0;) {
      if (cached_[i].bytes != bytes) { continue; }
      CUmemGenericAllocationHandle const handle = cached_[i].handle;
      stray_ -= cached_[i].stray ? bytes : 0;
      cached_.erase(cached_.begin() + static_cast<std::ptrdiff_t>(i));
      held_ -= bytes;
      ++hits_;
      return handle;
    }
    ++misses_;
    return 0;
  }

  /// True when `give` would keep a handle of `bytes` now: a scope is open and max_bytes
  /// has room (a hint: another thread may fill the room first). An unmap skips
  /// cuMemRetainAllocationHandle when it is false.
  [[nodiscard]] bool has_room(std::size_t bytes) const noexcept
  {
    std::lock_guard const lock(mutex_);
    return room_for(bytes);
  }

  /**
   * @brief Takes over `handle` (a reference to `bytes` of unmapped physical memory): keeps
   *        it while a scope is open and max_bytes has room, else releases it at once.
   * @pre no mapping uses the memory any more, and no queued work will (it may be mapped
   *      elsewhere at once).
   */
  void give(CUmemGenericAllocationHandle handle, std::size_t bytes) noexcept
  {
    std::lock_guard const lock(mutex_);
    bool const room = room_for(bytes);
    if (!room && drv_->table().cuMemRelease(handle) == CUDA_SUCCESS) {
      released_ += bytes;
      return;
    }
    try {
      cached_.push_back({handle, bytes, !room});  // kept, or its release failed: retried
      held_ += bytes;
      kept_ += room ? 1 : 0;
      stray_ += room ? 0 : bytes;
    } catch (std::bad_alloc const&) {
      if (room && drv_->table().cuMemRelease(handle) == CUDA_SUCCESS) {
        released_ += bytes;
        return;
      }
      held_ += bytes;  // neither remembered nor released: its bytes stay reported as held
      stray_ += bytes;
    }
  }

  /// @brief Releases every cached handle now (a map ran out of memory: handles of other
  ///        sizes may be in the way). @return bytes released; a handle whose release fails
  ///        stays.
  std::size_t release_all() noexcept
  {
    std::lock_guard const lock(mutex_);
    return release_unlocked();
  }

  /// Bytes of device memory the cache holds.
  [[nodiscard]] std::size_t held_bytes() const noexcept
  {
    std::lock_guard const lock(mutex_);
    return held_;
  }

  /// Bytes of device memory held by handles whose cuMemRelease failed (part of
  /// held_bytes): retried by release_all and when the last scope closes.
  [[nodiscard]] std::size_t stray_bytes() const noexcept
  {
    std::lock_guard const lock(mutex_);
    return stray_;
  }

  /// The bound on cached bytes.
  [[nodiscard]] std::size_t max_bytes() const noexcept { return max_bytes_; }

  /// Every counter, read under one lock.
  [[nodiscard]] handle_cache_stats stats() const noexcept
  {
    std::lock_guard const lock(mutex_);
    return {held_, cached_.size(), hits_, misses_, kept_, released_, stray_};
  }

 private:
  struct cached {
    CUmemGenericAllocationHandle handle{0};
    std::size_t bytes{0};
    bool stray{false};  // its cuMemRelease failed: counted in stray_
  };

  [[nodiscard]] bool room_for(std::size_t bytes) const noexcept
  {
    return armed_ != 0 && bytes <= max_bytes_ - std::min(max_bytes_, held_);
  }

  std::size_t release_unlocked() noexcept
  {
    std::size_t const before = released_;
    std::erase_if(cached_, [&](cached& c) {
      if (drv_->table().cuMemRelease(c.handle) != CUDA_SUCCESS) {
        stray_ += c.stray ? 0 : c.bytes;
        c.stray = true;
        return false;
      }
      held_ -= c.bytes;
      released_ += c.bytes;
      stray_ -= c.stray ? c.bytes : 0;
      return true;
    });
    return released_ - before;
  }

  driver const* drv_;
  std::size_t max_bytes_;

  mutable std::mutex mutex_;    // guards everything below
  std::vector<cached> cached_;  // oldest first
  std::size_t armed_{0};        // open scopes
  std::size_t held_{0};
  std::size_t hits_{0};
  std::size_t misses_{0};
  std::size_t kept_{0};
  std::size_t released_{0};
  std::size_t stray_{0};  // part of held_: handles whose cuMemRelease failed
};

}  // namespace swapalloc
