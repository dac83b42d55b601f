/**
 * @file vmm.hpp
 * @brief Virtual address reservations, and runs of physical pages mapped into them.
 *
 * A pool reserves one large virtual range once (`address_reservation`) and backs it with
 * physical pages on demand (`map_pages`): one cuMemCreate handle per page, so that a page
 * can later be evicted alone and restored at the same address (DESIGN §4).
 *
 * Each page's handle is released right after it is mapped: the mapping then owns the
 * memory, which the driver frees at the page's unmap (cuda.h, cuMemRelease: "freed when all
 * outstanding mappings to the memory are unmapped and when all outstanding references to
 * the handle ... are also released"). So no handle outlives these calls, and there is no
 * handle to release twice (torch_memory_saver issue 92). With a `handle_cache`, `unmap_page`
 * retains the page's handle before unmapping and gives it to the cache, and `map_pages`
 * takes a cached handle of the page size before it creates one (handle_cache.hpp).
 *
 * Cost (reported A100 figures, DESIGN §4): cuMemCreate 8-190 us, cuMemMap ~1 us,
 * cuMemSetAccess 20-40 us, cuMemUnmap 10-30 us per page. map_pages grants access to a whole
 * run with one cuMemSetAccess (it may span mappings). None of this is on a hot path.
 *
 * A rollback can fail too (the simulator makes any call fail; a real driver rarely does).
 * What a failed `map_pages` could not undo (a handle it could not release, a page it could
 * not unmap) is kept in the caller's `stray_pages`, counted, and given back by its
 * `retry`, which the owner calls before mapping again and before freeing the range: a
 * failure never leaks device memory for good, nor leaves a mapping the owner forgot.
 *
 * Thread safety: an `address_reservation` is not synchronized; the pages of one range are
 * mapped and unmapped by one owner at a time (the pool serializes them).
 */
#pragma once

#include <swapalloc/driver.hpp>
#include <swapalloc/handle_cache.hpp>

#include <cassert>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace swapalloc {

/// A range of virtual addresses reserved with cuMemAddressReserve, freed on destruction.
/// Move-only. The owner unmaps every page of the range before it is destroyed.
class address_reservation {
 public:
  /**
   * @brief Reserves `size` bytes of virtual address space aligned to `alignment`.
   * @param alignment a power of two, or 0 for the driver's default (the granularity).
   * @throws std::invalid_argument if `size` is 0.
   * @throws cuda_error if the driver refuses (e.g. CUDA_ERROR_OUT_OF_MEMORY).
   */
  address_reservation(driver const& drv, std::size_t size, std::size_t alignment = 0)
    : driver_(&drv), size_(size)
  {
    if (size == 0) {
      throw std::invalid_argument(
        "swapalloc: address_reservation size=0: expected a positive "
        "multiple of the host page size");
    }
    base_ = drv.address_reserve(size, alignment);
  }

  address_reservation(address_reservation const&)            = delete;
  address_reservation& operator=(address_reservation const&) = delete;
  address_reservation(address_reservation&& other) noexcept
    : driver_(other.driver_),
      base_(std::exchange(other.base_, CUdeviceptr{0})),
      size_(std::exchange(other.size_, std::size_t{0}))
  {
  }
  address_reservation& operator=(address_reservation&&) = delete;

  /// Frees the range. A destructor cannot report failure; the only cause is pages still
  /// mapped, a contract violation of the owner, caught by the assertion in debug builds.
  ~address_reservation()
  {
    if (base_ == 0) { return; }
    [[maybe_unused]] CUresult const result = driver_->table().cuMemAddressFree(base_, size_);
    assert(result == CUDA_SUCCESS && "address_reservation destroyed with pages still mapped");
  }

  /// The first address of the range.
  [[nodiscard]] CUdeviceptr base() const noexcept { return base_; }
  /// Bytes in the range.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// True when [address, address + bytes) lies inside the range.
  [[nodiscard]] bool contains(CUdeviceptr address, std::size_t bytes) const noexcept
  {
    return address >= base_ && bytes <= size_ && address - base_ <= size_ - bytes;
  }

 private:
  driver const* driver_;
  CUdeviceptr base_{0};
  std::size_t size_;
};

/**
 * @brief Device memory a failed `map_pages` could not give back: handles whose release
 *        failed and pages whose unmap failed. Nothing is lost track of: `bytes` counts it
 *        and `retry` gives it back.
 * Thread safety: none; it belongs to the owner of the range (one pool).
 */
class stray_pages {
 public:
  [[nodiscard]] bool empty() const noexcept { return handles_.empty() && mappings_.empty(); }
  /// Device bytes held by stray handles and mappings (a page both mapped and held counts
  /// once).
  [[nodiscard]] std::size_t bytes() const noexcept
  {
    std::size_t total = 0;
    for (auto const& held : handles_) {
      total += held.mapped_at != 0 && overlaps(held.mapped_at, held.bytes) ? 0 : held.bytes;
    }
    for (auto const& mapping : mappings_) {
      total += mapping.second;
    }
    return total;
  }
  /// True when a stray mapping overlaps [address, address + bytes).
  [[nodiscard]] bool overlaps(CUdeviceptr address, std::size_t bytes) const noexcept
  {
    for (auto const& [start, size] : mappings_) {
      if (start < address + bytes && address < start + size) { return true; }
    }
    return false;
  }

  /// The first call that failed in a `retry`, if any.
  struct failure {
    CUresult code{CUDA_SUCCESS};
    char const* call{""};
  };

  /**
   * @brief Unmaps the stray mappings, then releases the stray handles; keeps what fails
   *        again. No GPU work can use them: they never belonged to a block.
   * @return the first failure (code CUDA_SUCCESS when nothing is left).
   */
  failure retry(driver const& drv) noexcept
  {
    failure first;
    auto const note = [&](CUresult result, char const* call) {
      if (result != CUDA_SUCCESS && first.code == CUDA_SUCCESS) { first = {result, call}; }
      return result == CUDA_SUCCESS;
    };
    std::erase_if(mappings_, [&](auto const& mapping) {
      return note(drv.table().cuMemUnmap(mapping.first, mapping.second), "cuMemUnmap");
    });
    std::erase_if(handles_, [&](stray_handle const& held) {
      return note(drv.table().cuMemRelease(held.handle), "cuMemRelease");
    });
    return first;
  }

  /// Makes room to record `pages` more of each kind without allocating (rollbacks record
  /// into it and must not throw). @throws std::bad_alloc.
  void reserve(std::size_t pages)
  {
    handles_.reserve(handles_.size() + pages);
    mappings_.reserve(mappings_.size() + pages);
  }
  /// Releases `handle` (`bytes` of memory, mapped at `mapped_at`, or 0), or keeps it if
  /// that fails. @pre reserve.
  void release(driver const& drv, CUmemGenericAllocationHandle handle, std::size_t bytes,
               CUdeviceptr mapped_at) noexcept
  {
    if (drv.table().cuMemRelease(handle) != CUDA_SUCCESS) {
      handles_.push_back(stray_handle{handle, bytes, mapped_at});
    }
  }
  /// Unmaps [address, address + bytes), or keeps it if that fails. @pre reserve.
  void unmap(driver const& drv, CUdeviceptr address, std::size_t bytes) noexcept
  {
    if (drv.table().cuMemUnmap(address, bytes) != CUDA_SUCCESS) {
      mappings_.emplace_back(address, bytes);
    }
  }

 private:
  struct stray_handle {
    CUmemGenericAllocationHandle handle;
    std::size_t bytes;
    CUdeviceptr mapped_at;  // 0: never mapped
  };
  std::vector<stray_handle> handles_;
  std::vector<std::pair<CUdeviceptr, std::size_t>> mappings_;
};

namespace detail {

/// Checks the arguments common to map_pages and unmap_pages.
inline void check_page_run(driver const& drv, char const* function, CUdeviceptr address,
                           std::size_t page_size, std::size_t count, CUdevice device)
{
  std::size_t const granularity = drv.allocation_granularity(device);
  auto const fail               = [&](std::string const& what) {
    throw std::invalid_argument(std::string("swapalloc: ") + function + ": " + what);
  };
  if (page_size == 0 || page_size % granularity != 0) {
    fail("page_size=" + std::to_string(page_size) + ": expected a positive multiple of the " +
         "allocation granularity, " + std::to_string(granularity) + " bytes");
  }
  if (address % granularity != 0) {
    fail("address=" + hex(address) + ": expected a multiple of the allocation granularity, " +
         std::to_string(granularity) + " bytes");
  }
  if (count == 0) { fail("count=0: expected at least one page"); }
}

}  // namespace detail

/**
 * @brief Backs [address, address + count * page_size) with `count` fresh physical pages
 *        on `device`, readable and writable by `device`: handles taken from `cache` (when
 *        given; it must be `device`'s) where it has some of the page size, else created.
 *
 * All or nothing: if any driver call fails, the pages already created are unmapped (which
 * frees them) and their handles released before the `cuda_error` propagates, so the range
 * is unmapped as before; what that rollback cannot undo goes to `stray` (see the file
 * comment). New pages hold undefined bytes.
 *
 * @pre the range lies in a reservation and none of it is mapped.
 * @throws std::invalid_argument if page_size or address is not a multiple of the
 *         granularity, or count is 0.
 * @throws cuda_error naming the failing call (CUDA_ERROR_OUT_OF_MEMORY from cuMemCreate
 *         when the device is full).
 */
inline void map_pages(driver const& drv, CUdeviceptr address, std::size_t page_size,
                      std::size_t count, CUdevice device, stray_pages& stray,
                      handle_cache* cache = nullptr)
{
  detail::check_page_run(drv, "map_pages", address, page_size, count, device);
  stray.reserve(count);
  std::size_t mapped = 0;  // pages [0, mapped) are mapped; their handles released, or stray
  try {
    for (; mapped < count; ++mapped) {
      CUdeviceptr const page_address      = address + mapped * page_size;
      CUmemGenericAllocationHandle handle = cache != nullptr ? cache->take(page_size) : 0;
      if (handle == 0) { handle = drv.mem_create(page_size, device); }
      try {
        drv.mem_map(page_address, page_size, handle);
      } catch (...) {
        stray.release(drv, handle, page_size, 0);
        throw;
      }
      if (CUresult const result = drv.table().cuMemRelease(handle); result != CUDA_SUCCESS) {
        ++mapped;  // mapped, its handle still held: the rollback unmaps it, stray releases it
        stray.release(drv, handle, page_size, page_address);
        drv.check(result, "cuMemRelease",
                  [&] { return "handle of the page at " + hex(page_address); });
      }
    }
    drv.mem_set_access(address, count * page_size, device);
  } catch (...) {
    for (std::size_t page = 0; page < mapped; ++page) {
      stray.unmap(drv, address + page * page_size, page_size);
    }
    throw;
  }
}

/**
 * @brief Unmaps the page of `page_size` bytes at `address`. With a `cache` that has room,
 *        the page's memory is kept there for a later map_pages (cuMemRetainAllocationHandle
 *        first; a retain that fails just frees the memory at the unmap); otherwise the
 *        unmap frees it.
 * @pre the work that used the page has completed; the page is one mapping of map_pages.
 * @return cuMemUnmap's result: on failure the page stays mapped, and a retained handle is
 *         released again (or, should that fail too, kept in `stray`). @pre stray.reserve(1).
 */
[[nodiscard]] inline CUresult unmap_page(driver const& drv, CUdeviceptr address,
                                         std::size_t page_size, handle_cache* cache,
                                         stray_pages& stray) noexcept
{
  CUmemGenericAllocationHandle handle = 0;
  bool const keep                     = cache != nullptr && cache->has_room(page_size) &&
                    drv.table().cuMemRetainAllocationHandle(
                      &handle, reinterpret_cast<void*>(address)) == CUDA_SUCCESS;
  CUresult const result = drv.table().cuMemUnmap(address, page_size);
  if (!keep) { return result; }
  if (result != CUDA_SUCCESS) {
    stray.release(drv, handle, page_size, address);  // still mapped: counted once
    return result;
  }
  cache->give(handle, page_size);
  return CUDA_SUCCESS;
}

/**
 * @brief Unmaps the `count` adjacent pages of `page_size` bytes at `address` (each one
 *        mapping of map_pages) with one cuMemUnmap over the run, keeping the memory of as
 *        many of them as `cache` has room for, as unmap_page does page by page.
 *
 * Issue 14 ("evict unmaps runs of pages together"): one call where unmap_page makes
 * `count` (10-30 us each, vmm.hpp's figures). The real driver unmaps several whole
 * mappings in one call (cuda.h forbids only a sub-range of one mapping; tried on an H100,
 * driver 580.159.04: tools/cudasim/src/vmm_table.cpp).
 * @pre the work that used the pages has completed; stray.reserve(count).
 * @return cuMemUnmap's result. On failure the caller must unmap the pages one by one
 *         (unmap_page): the call may have unmapped some of them, and cuMemUnmap of a range
 *         with nothing mapped succeeds (same source), so that pass leaves mapped only the
 *         pages it could not unmap. The references retained here are released again (or
 *         kept in `stray`), so no handle is held twice.
 * @throws std::bad_alloc before any driver call.
 */
[[nodiscard]] inline CUresult unmap_run(driver const& drv, CUdeviceptr address,
                                        std::size_t page_size, std::size_t count,
                                        handle_cache* cache, stray_pages& stray)
{
  std::vector<CUmemGenericAllocationHandle> kept;
  kept.reserve(cache != nullptr ? count : 0);
  for (std::size_t page = 0; page < kept.capacity(); ++page) {
    CUmemGenericAllocationHandle handle = 0;
    if (!cache->has_room((page + 1) * page_size) ||
        drv.table().cuMemRetainAllocationHandle(
          &handle, reinterpret_cast<void*>(address + page * page_size)) != CUDA_SUCCESS) {
      break;  // the pages after it are freed by the unmap
    }
    kept.push_back(handle);
  }
  CUresult const result = drv.table().cuMemUnmap(address, count * page_size);
  for (std::size_t page = 0; page < kept.size(); ++page) {
    if (result == CUDA_SUCCESS) {
      cache->give(kept[page], page_size);
    } else {  // possibly still mapped: its mapping alone holds it, as before the retain
      stray.release(drv, kept[page], page_size, address + page * page_size);
    }
  }
  return result;
}

/**
 * @brief Unmaps `count` pages mapped by `map_pages` at `address`, which frees them.
 *
 * Unmaps every page it can: if one unmap fails, the others are still unmapped, and then a
 * `cuda_error` names the first page that failed; pages whose unmap failed stay mapped
 * (and usable), so the caller can retry them.
 *
 * @pre the work that used the pages has completed (DESIGN §4: unmap only after it).
 * @throws std::invalid_argument as `map_pages`.
 * @throws cuda_error for the first page whose cuMemUnmap failed.
 */
inline void unmap_pages(driver const& drv, CUdeviceptr address, std::size_t page_size,
                        std::size_t count, CUdevice device)
{
  detail::check_page_run(drv, "unmap_pages", address, page_size, count, device);
  CUresult first_error     = CUDA_SUCCESS;
  CUdeviceptr failed_page  = 0;
  std::size_t failed_count = 0;
  for (std::size_t page = 0; page < count; ++page) {
    CUdeviceptr const page_address = address + page * page_size;
    CUresult const result          = drv.table().cuMemUnmap(page_address, page_size);
    if (result == CUDA_SUCCESS) { continue; }
    if (failed_count++ == 0) {
      first_error = result;
      failed_page = page_address;
    }
  }
  drv.check(first_error, "cuMemUnmap", [&] {
    return "ptr=" + hex(failed_page) + ", size=" + std::to_string(page_size) + "; " +
           std::to_string(failed_count) + " of " + std::to_string(count) + " pages stay mapped";
  });
}

}  // namespace swapalloc
