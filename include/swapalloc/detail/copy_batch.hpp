/**
 * @file detail/copy_batch.hpp
 * @brief Copies of one direction gathered to be issued together: with one
 *        cuMemcpyBatchAsync where the driver has it, else one call each.
 *
 * Issue 14: "where the driver has cuMemcpyBatchAsync (CUDA >= 12.8, an optional symbol),
 * use it for many small ranges". An eviction of a page with many live ranges (free gaps
 * of more than transfer_options::gap_bytes between them) made a cuMemcpyDtoHAsync per
 * range, and its restore a cuMemcpyHtoDAsync per raw part; each costs the calling thread
 * the driver's issue cost (a few microseconds: tools/cudasim/README.md's profile). A batch
 * costs one call for up to `capacity` copies.
 *
 * The transfer engine adds its copies here instead of issuing them, and issues the batch
 * before anything that takes this thread's time or needs the copies queued: an event
 * recorded behind them, a wait, a map. It also issues it once it holds `issue_bytes`, so
 * the link never waits for more than that to be gathered. Copies within one batch run in
 * no particular order (the CUDA Driver API), so a batch must never hold two copies of
 * which one reads what the other writes: the engine's copies of one transfer move
 * disjoint ranges.
 *
 * Cost: `add` stores three words (no allocation, no driver call) until the batch is full;
 * `issue` is one driver call, or one per copy without the batch entry point.
 * Thread safety: none; a batch belongs to one transfer.
 */
#pragma once

#include <swapalloc/driver.hpp>

#include <array>
#include <cstddef>
#include <cstdint>

namespace swapalloc::detail {

/// Which way a batch's copies go: the fallback's single calls depend on it.
enum class copy_direction : std::uint8_t { device_to_host, host_to_device };

/// Copies gathered for one batch. See the file comment.
class copy_batch {
 public:
  /// Copies per batch at most: 64 copies of 4 KiB to 8 MiB each (the engine's copies).
  static constexpr std::size_t capacity = 64;

  /**
   * @param direction    the copies' direction (all of them).
   * @param batch_call   use cuMemcpyBatchAsync when the driver has it; false issues one
   *                     call per copy (for comparison: bench_swap's batch benchmarks).
   * @param issue_bytes  bytes gathered after which `add` issues the batch (> 0).
   */
  copy_batch(copy_direction direction, bool batch_call, std::size_t issue_bytes) noexcept
    : issue_bytes_(issue_bytes), direction_(direction), batch_call_(batch_call)
  {
  }

  [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
  /// Driver calls that issued copies so far (a batch counts once).
  [[nodiscard]] std::size_t calls() const noexcept { return calls_; }
  /// Copies issued so far.
  [[nodiscard]] std::size_t copies() const noexcept { return copies_; }

  /**
   * @brief Adds a copy of `bytes` (> 0) from `source` to `target` (a host address as an
   *        integer on the host side), and issues the batch when it is full or holds
   *        `issue_bytes`.
   * @throws cuda_error from the issue (see `issue`).
   */
  void add(driver const& drv, CUstream stream, CUdeviceptr target, CUdeviceptr source,
           std::size_t bytes)
  {
    targets_[count_] = target;
    sources_[count_] = source;
    sizes_[count_]   = bytes;
    ++count_;
    bytes_ += bytes;
    if (count_ == capacity || bytes_ >= issue_bytes_) { issue(drv, stream); }
  }

  /**
   * @brief Queues the gathered copies on `stream`: one cuMemcpyBatchAsync for two or more
   *        where the driver has it (and `batch_call`), else one cuMemcpyDtoHAsync or
   *        cuMemcpyHtoDAsync each. Nothing gathered: nothing. The batch is empty after,
   *        also when a call throws.
   * @throws cuda_error from the failing call; copies issued before it stay queued (the
   *         caller's rollback waits for the stream before it frees their memory).
   */
  void issue(driver const& drv, CUstream stream)
  {
    std::size_t const count = count_;
    count_                  = 0;
    bytes_                  = 0;
    if (count == 0) { return; }
    if (count >= 2 && batch_call_ && drv.has_memcpy_batch()) {
      drv.memcpy_batch_async(targets_.data(), sources_.data(), sizes_.data(), count, stream);
      ++calls_;
      copies_ += count;
      return;
    }
    for (std::size_t i = 0; i < count; ++i) {
      if (direction_ == copy_direction::device_to_host) {
        drv.memcpy_dtoh_async(to_host(targets_[i]), sources_[i], sizes_[i], stream);
      } else {
        drv.memcpy_htod_async(targets_[i], to_host(sources_[i]), sizes_[i], stream);
      }
      ++calls_;
      ++copies_;
    }
  }

  /// Forgets the copies not issued (a failed transfer's) and zeroes the counts: the
  /// start of a transfer.
  void reset() noexcept
  {
    count_  = 0;
    bytes_  = 0;
    calls_  = 0;
    copies_ = 0;
  }

 private:
  [[nodiscard]] static void* to_host(CUdeviceptr address) noexcept
  {
    return reinterpret_cast<void*>(static_cast<std::uintptr_t>(address));
  }

  std::array<CUdeviceptr, capacity> targets_{};
  std::array<CUdeviceptr, capacity> sources_{};
  std::array<std::size_t, capacity> sizes_{};
  std::size_t count_{0};
  std::size_t bytes_{0};
  std::size_t issue_bytes_;
  std::size_t calls_{0};
  std::size_t copies_{0};
  copy_direction direction_;
  bool batch_call_;
};

}  // namespace swapalloc::detail
