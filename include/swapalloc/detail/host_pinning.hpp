/**
 * @file host_pinning.hpp
 * @brief How the host store takes and gives back one pinned slab: cuMemHostAlloc and
 *        cuMemFreeHost, or mmap + a parallel first touch + cuMemHostRegister and
 *        cuMemHostUnregister + munmap. Mechanism only: host_store decides when.
 *
 * Why two routes (../shared/notes/gpu-speed.md §3.1): cuMemHostAlloc both faults in and
 * locks every page on the calling thread under the driver's global lock (PyTorch's
 * CachingHostAllocator.cpp: "cudaHostAlloc ... global lock in driver"), 0.34 ms/MiB on an
 * H100 host. Registering splits the work: the pages are faulted in by `touch_threads`
 * threads first, with no driver lock held, and cuMemHostRegister then only locks pages
 * that are present (8 GiB: 2.74 s by cuMemHostAlloc, 1.09 s registered with 8 threads,
 * ai-dynamo/dynamo#13710). The mapping does not ask for transparent huge pages
 * (MADV_HUGEPAGE): they cut the faults 512-fold once the kernel has free huge pages
 * (256 MiB touched by 2 threads in 9-15 ms against 60-63 ms, on the 2-core CI machine),
 * but the first such touch of a process stalled 418 ms in direct compaction there
 * (defrag "madvise"), and a cold eviction would pay it. The mapping is left out of a fork
 * (MADV_DONTFORK): a child (a DataLoader worker) would otherwise copy every pinned page at
 * fork (Linux 5.9 and later copy DMA-pinned anonymous pages), or share pages the device
 * writes; cuMemHostAlloc's memory is kept out of a fork by the driver itself.
 *
 * Contexts: both pin calls need the store's context current; the caller makes it so.
 * Thread safety: the functions share no state; any thread.
 */
#pragma once

#include <swapalloc/config.hpp>
#include <swapalloc/driver.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <thread>
#include <vector>

namespace swapalloc::detail {

/// Threads that first-touch a slab to be registered when the option says 0: the host's
/// cores, at most 8 (8 threads did 8 GiB in 1.09 s, 32 in 0.92 s: dynamo#13710).
[[nodiscard]] inline unsigned default_touch_threads() noexcept
{
  return std::clamp(std::thread::hardware_concurrency(), 1U, 8U);
}

/// The most threads that touch one slab (an option above is clamped to it).
inline constexpr unsigned max_touch_threads = 64;

/// One slab's pinning: its memory and what the driver said. `base` is null unless
/// `result` is CUDA_SUCCESS.
struct pinned_slab {
  std::byte* base{nullptr};
  CUresult result{CUDA_SUCCESS};
};

/// The host's page size (sysconf), 4096 when it does not say.
[[nodiscard]] inline std::size_t host_page_bytes() noexcept
{
  long const page = ::sysconf(_SC_PAGESIZE);
  return page > 0 ? static_cast<std::size_t>(page) : 4096;
}

/// The bytes a registered slab of `bytes` maps: whole host pages.
[[nodiscard]] inline std::size_t registered_length(std::size_t bytes) noexcept
{
  std::size_t const page = host_page_bytes();
  return (bytes + page - 1) / page * page;
}

/**
 * @brief Writes one byte of each host page of [base, base + bytes) from `threads` threads
 *        (first touch: the kernel faults the page in on the toucher's NUMA node).
 *
 * A thread that cannot be started leaves its share to the calling thread. Cost: one page
 * fault per host page, spread over the threads, plus starting them (tens of µs each,
 * against 15-18 ms of faults per 64 MiB on 2 threads of the CI machine).
 */
inline void touch_pages(std::byte* base, std::size_t bytes, unsigned threads) noexcept
{
  std::size_t const page  = host_page_bytes();
  std::size_t const pages = (bytes + page - 1) / page;
  std::size_t const count = std::clamp<std::size_t>(threads, 1, std::max<std::size_t>(pages, 1));
  std::size_t const share = (pages + count - 1) / count;
  auto const touch        = [=](std::size_t first, std::size_t last) {
    for (std::size_t at = first; at < last; ++at) {
      reinterpret_cast<volatile char*>(base)[at * page] = 0;
    }
  };
  std::vector<std::thread> helpers;
  std::size_t done = 0;  // pages [share, done) were handed to helpers
  try {
    helpers.reserve(count - 1);
    for (done = share; done < pages; done += share) {
      helpers.emplace_back(touch, done, std::min(pages, done + share));
    }
  } catch (...) {  // no thread (std::system_error) or no room for one: touch the rest here
    touch(done, pages);
  }
  touch(0, std::min(pages, share));
  for (std::thread& helper : helpers) {
    helper.join();
  }
}

/**
 * @brief True when a store on `device` can register host memory: the device supports it
 *        (cuda_runtime_api.h, cudaHostRegister: "supported only on I/O coherent devices
 *        that have a non-zero value for ...HostRegisterSupported") and the register locks
 *        pages (cuda.h, cuMemHostRegister: where PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES
 *        is true it "will not page-lock the memory range ... but only populate unpopulated
 *        pages").
 * @throws cuda_error if an attribute cannot be read.
 */
[[nodiscard]] inline bool registers_host_memory(driver const& drv, CUdevice device)
{
  return drv.device_attribute(device, CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED) != 0 &&
         drv.device_attribute(
           device, CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES) == 0;
}

/**
 * @brief The memory a slab to be registered takes: an anonymous private mmap of
 *        registered_length(bytes), kept out of a fork (MADV_DONTFORK), every page touched
 *        by `touch_threads` threads. Not registered yet.
 * @return the memory, or CUDA_ERROR_OUT_OF_MEMORY when mmap has no room and
 *         CUDA_ERROR_NOT_SUPPORTED where the kernel refuses MADV_DONTFORK (nothing is held).
 */
[[nodiscard]] inline pinned_slab map_touched(std::size_t bytes, unsigned touch_threads) noexcept
{
  std::size_t const length = registered_length(bytes);
  void* const base =
    ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) { return {nullptr, CUDA_ERROR_OUT_OF_MEMORY}; }
  if (::madvise(base, length, MADV_DONTFORK) != 0) {  // not on this kernel: do not register
    (void)::munmap(base, length);
    return {nullptr, CUDA_ERROR_NOT_SUPPORTED};
  }
  touch_pages(static_cast<std::byte*>(base), length, touch_threads);
  return {static_cast<std::byte*>(base), CUDA_SUCCESS};
}

/**
 * @brief Pins `bytes` of new host memory by `method` (host_alloc or host_register).
 *
 * host_register: map_touched, then cuMemHostRegister(flags 0) of its whole pages. A failed
 * register unmaps the memory again.
 * @pre the store's context is current; `bytes` > 0; `method` is not automatic.
 * @return the slab, or the failing result: CUDA_ERROR_OUT_OF_MEMORY also when mmap has
 *         no room. Nothing is held after a failure.
 */
[[nodiscard]] inline pinned_slab pin_slab(driver_table const& table, std::size_t bytes,
                                          pin_method method, unsigned touch_threads) noexcept
{
  if (method == pin_method::host_alloc) {
    void* base            = nullptr;
    CUresult const result = table.cuMemHostAlloc(&base, bytes, 0);
    return {result == CUDA_SUCCESS ? static_cast<std::byte*>(base) : nullptr, result};
  }
  pinned_slab const mapped = map_touched(bytes, touch_threads);
  if (mapped.result != CUDA_SUCCESS) { return mapped; }
  std::size_t const length = registered_length(bytes);
  CUresult const result    = table.cuMemHostRegister(mapped.base, length, 0);
  if (result != CUDA_SUCCESS) {
    (void)::munmap(mapped.base, length);
    return {nullptr, result};
  }
  return mapped;
}

/**
 * @brief Gives back a slab that pin_slab pinned by `method` with `bytes`: cuMemFreeHost,
 *        or cuMemHostUnregister then munmap. Both synchronize the device (torch/cutorch#618).
 * @pre no pending copy reads or writes the slab; for host_alloc, the store's context is
 *      current (cuMemHostUnregister needs none).
 * A registration the driver no longer has (CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED: its
 * context was reset or destroyed, which drops it) counts as undone: the memory is unmapped.
 * @return false when the driver refused otherwise: the slab is still pinned and mapped, to
 *         retry.
 */
[[nodiscard]] inline bool unpin_slab(driver_table const& table, std::byte* base, std::size_t bytes,
                                     pin_method method) noexcept
{
  if (method == pin_method::host_alloc) { return table.cuMemFreeHost(base) == CUDA_SUCCESS; }
  CUresult const result = table.cuMemHostUnregister(base);
  if (result != CUDA_SUCCESS && result != CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED) { return false; }
  (void)::munmap(base, registered_length(bytes));  // fails only for arguments never given
  return true;
}

}  // namespace swapalloc::detail
