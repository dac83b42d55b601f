/**
 * @file vmm.hpp
 * @brief Virtual memory management on host memory: reservations, physical handles,
 *        mappings and access, with the rules of cuda.h's VMM calls (DESIGN §4).
 *
 * A reservation is a PROT_NONE, MAP_NORESERVE anonymous mapping; physical memory is a
 * memfd; cuMemMap is an mmap(MAP_FIXED | MAP_SHARED) of the memfd, PROT_NONE until
 * cuMemSetAccess, whose flags become the host protection. So a stray host access to
 * device memory faults, as it does on a GPU system.
 *
 * Locking: the table of reservations and mappings is a std::shared_mutex. A copy holds
 * it shared while it moves each slice, so the mapping it checked cannot disappear under it;
 * map, unmap, set-access and address-free hold it exclusive. Handles have their own
 * mutex, so cuMemCreate never waits for a copy.
 */
#pragma once

#include "census.hpp"
#include "cuda_api.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <vector>

namespace cudasim {

/// cuMemGetAllocationGranularity, minimum and recommended.
inline constexpr std::size_t granularity = std::size_t{2} << 20;

/// Memfds of released handles, kept (up to `max_bytes`) for creates of the same size, so
/// that a create after a release skips memfd_create and the kernel's zeroing of each page
/// on first touch. cuda.h does not promise what a new allocation holds, and code that
/// assumed zeros was a bug (NVIDIA/nccl#1962: fixed by an explicit memset): a recycled
/// handle holds what its last owner left, which a GPU may do too.
/// Thread safety: every member locks.
class memory_bin {
 public:
  /// The most bytes kept: a model test's working set of 2 MiB handles, host memory that
  /// stays committed until the process ends.
  static constexpr std::size_t max_bytes = std::size_t{256} << 20;

  memory_bin() = default;
  ~memory_bin();
  memory_bin(memory_bin const&)            = delete;
  memory_bin& operator=(memory_bin const&) = delete;

  /// A kept memfd of exactly `size` bytes, taken out of the bin, or -1 if none is kept.
  [[nodiscard]] int take(std::size_t size) noexcept;
  /// Keeps `fd` (`size` bytes), or closes it when the bin has no room for it.
  void give(int fd, std::size_t size) noexcept;

 private:
  struct kept {
    int fd;
    std::size_t size;
  };
  std::mutex mutex_;
  std::vector<kept> kept_;  // guarded by mutex_
  std::size_t bytes_{0};    // guarded by mutex_
};

/// The memory of one cuMemCreate. Owned by its handle and by each of its mappings; the
/// last owner to go frees it (cuda.h, cuMemRelease: "The memory allocation will be freed
/// when all outstanding mappings to the memory are unmapped and when all outstanding
/// references to the handle ... are also released"). It keeps its handle's value, which
/// cuMemRetainAllocationHandle gives back for a mapping ("guaranteed to be the same
/// handle value used to map the memory"), and the properties it was created with.
class physical_memory {
 public:
  /// Takes ownership of `fd`, whose `size` bytes are counted in `used`; gives it to `bin`
  /// when the last owner goes.
  physical_memory(int fd, std::size_t size, std::atomic<std::size_t>& used, memory_bin& bin,
                  CUmemGenericAllocationHandle handle, CUmemAllocationProp const& prop) noexcept
    : fd_(fd), size_(size), used_(used), bin_(bin), handle_(handle), prop_(prop)
  {
  }
  ~physical_memory();
  physical_memory(physical_memory const&)            = delete;
  physical_memory& operator=(physical_memory const&) = delete;

  [[nodiscard]] int fd() const noexcept { return fd_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] CUmemGenericAllocationHandle handle() const noexcept { return handle_; }
  [[nodiscard]] CUmemAllocationProp const& properties() const noexcept { return prop_; }

 private:
  int const fd_;
  std::size_t const size_;
  std::atomic<std::size_t>& used_;
  memory_bin& bin_;
  CUmemGenericAllocationHandle const handle_;
  CUmemAllocationProp const prop_;
};

/// What the exit report and cudasimGetCensus count.
struct vmm_census {
  held handles;       ///< handles with a reference not released (cuMemCreate, retain), by handle
  held reservations;  ///< by base address
  held mappings;      ///< by base address
};

class vmm_table {
 public:
  /// A shared hold on the mapping table, for one slice of a copy (or a whole memset).
  using shared_hold = std::shared_lock<std::shared_mutex>;

  [[nodiscard]] CUresult reserve(CUdeviceptr* out, std::size_t size, std::size_t alignment,
                                 CUdeviceptr hint);
  [[nodiscard]] CUresult free_reservation(CUdeviceptr ptr, std::size_t size);
  /// Creates `size` bytes with properties `prop` on a device whose counters are `used`
  /// and free bytes `available`.
  [[nodiscard]] CUresult create(CUmemGenericAllocationHandle* out, std::size_t size,
                                CUmemAllocationProp const& prop, std::atomic<std::size_t>& used,
                                std::size_t available);
  /// Drops one reference to `handle`; the handle is gone after its last one.
  [[nodiscard]] CUresult release(CUmemGenericAllocationHandle handle);
  /// Adds a reference to the handle of the mapping containing `address`, making the
  /// handle live again (same value) if it was released while the mapping stayed.
  [[nodiscard]] CUresult retain(CUmemGenericAllocationHandle* out, std::uintptr_t address);
  /// The properties `handle` was created with; CUDA_ERROR_INVALID_VALUE if it is not live.
  [[nodiscard]] CUresult properties(CUmemAllocationProp* out,
                                    CUmemGenericAllocationHandle handle) const;
  /// True while `handle` has an unreleased reference.
  [[nodiscard]] bool live(CUmemGenericAllocationHandle handle) const;
  /// The base and size of the mapping containing `address` (either output may be null);
  /// CUDA_ERROR_NOT_FOUND when no mapping contains it.
  [[nodiscard]] CUresult address_range(CUdeviceptr* base, std::size_t* size,
                                       std::uintptr_t address) const;
  /// Maps the whole of `handle` (offset 0, size its size) at [ptr, ptr + size).
  [[nodiscard]] CUresult map(CUdeviceptr ptr, std::size_t size, std::size_t offset,
                             CUmemGenericAllocationHandle handle);
  /// Unmaps every mapping in [ptr, ptr + size); each must lie wholly inside it.
  [[nodiscard]] CUresult unmap(CUdeviceptr ptr, std::size_t size);
  /// Sets device `device`'s access to the mapped granules of [ptr, ptr + size) for each
  /// descriptor; the first and the last granule must be mapped.
  [[nodiscard]] CUresult set_access(CUdeviceptr ptr, std::size_t size, CUmemAccessDesc const* desc,
                                    std::size_t count);
  [[nodiscard]] CUresult get_access(unsigned long long* flags, int device, CUdeviceptr ptr) const;

  /// Holds the mapping table shared (see the file comment).
  [[nodiscard]] shared_hold hold() const { return shared_hold(mutex_); }
  /// With the table held: [ptr, ptr + bytes) lies in one reservation and is mapped.
  [[nodiscard]] bool mapped(std::uintptr_t ptr, std::size_t bytes) const;
  /// With the table held: `device` may read (or, with `write`, write) every byte.
  [[nodiscard]] bool accessible(std::uintptr_t ptr, std::size_t bytes, int device,
                                bool write) const;
  /// With the table held: [ptr, ptr + bytes) overlaps a reservation.
  [[nodiscard]] bool overlaps_reservation(std::uintptr_t ptr, std::size_t bytes) const;

  [[nodiscard]] vmm_census census() const;

 private:
  struct mapping {
    std::size_t size;
    std::shared_ptr<physical_memory> memory;
    // Per granule, one bit per device: which devices may read, which may write.
    std::vector<std::uint32_t> readers;
    std::vector<std::uint32_t> writers;
  };
  using mapping_map = std::map<std::uintptr_t, mapping>;

  /// The mapping containing `address`, or end().
  [[nodiscard]] mapping_map::const_iterator mapping_at(std::uintptr_t address) const;
  mapping_map::iterator mapping_at(std::uintptr_t address);
  /// The reservation containing [ptr, ptr + bytes) entirely, or end().
  [[nodiscard]] std::map<std::uintptr_t, std::size_t>::const_iterator reservation_of(
    std::uintptr_t ptr, std::size_t bytes) const;
  /// Makes the host protection of `m` follow its access bits, granule run by granule run.
  static void apply_protection(std::uintptr_t base, mapping const& m);

  memory_bin bin_;  // first: destroyed after every physical_memory that gives to it
  mutable std::shared_mutex mutex_;
  std::map<std::uintptr_t, std::size_t> reservations_;  // base -> size; guarded by mutex_
  mapping_map mappings_;                                // base -> mapping; guarded by mutex_

  /// A live handle: its memory and its unreleased references (cuMemCreate gives one,
  /// each cuMemRetainAllocationHandle one more; cuMemRelease takes one).
  struct handle_entry {
    std::shared_ptr<physical_memory> memory;
    std::size_t references;
  };

  // Lock order: mutex_ before handles_mutex_ (retain holds both).
  mutable std::mutex handles_mutex_;
  std::unordered_map<CUmemGenericAllocationHandle, handle_entry> handles_;
  CUmemGenericAllocationHandle next_handle_ = 1;  // never reused
};

}  // namespace cudasim
