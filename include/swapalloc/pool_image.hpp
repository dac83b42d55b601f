/**
 * @file pool_image.hpp
 * @brief The host copies of one pool's pages on one device: for each page, where its live
 *        bytes lie on the device and the chunks that hold them in the host store.
 *
 * A page's live byte ranges (the parts of allocated blocks on it, in address order) are
 * *packed*: concatenated into one stream, which is cut into chunks of at most
 * `max_chunk_bytes` (codec.hpp). Eviction first copies the packed stream raw into one host
 * extent (`page_copy::packed`) at link speed; a worker later compresses it chunk by chunk
 * and publishes the chunks (`publish`). A chunk stored raw points into `packed`, which then
 * stays; a compressed or zero chunk does not. Every chunk carries its codec, sizes and the
 * XXH64 of its raw bytes, checked at restore.
 *
 * Costs: bookkeeping only, no driver call; host memory comes from the `host_store`.
 *
 * Which pages have a copy, and whether it is still the page's data, is decided by the
 * image's one owner, `pool_residency` (residency.hpp): only it installs and drops copies.
 *
 * Thread safety: the allocator serializes every call on its device's mutex, except
 * `publish` and `host_bytes`, which compression workers and statistics readers call
 * concurrently; they take the image's own mutex. A page's copy is not touched by its owner
 * while a job for it is pending: restore, drop and destruction wait for `jobs()` first.
 */
#pragma once

#include <swapalloc/codec.hpp>
#include <swapalloc/host_store.hpp>
#include <swapalloc/worker_pool.hpp>

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace swapalloc {

/// `bytes` of live data at `offset` from the pool's base.
struct live_range {
  std::size_t offset{0};
  std::size_t bytes{0};
};

/// One chunk of a page's packed live bytes, as the host store holds it.
struct stored_chunk {
  chunk_header header;
  std::size_t packed_offset{0};    ///< where its raw bytes start in the packed stream
  std::byte const* data{nullptr};  ///< header.stored_bytes bytes; nullptr for `zero`
  host_extent owned;               ///< the extent `data` lies in, unless it lies in `packed`
};

/// The host copy of one page.
struct page_copy {
  std::vector<live_range> ranges;    ///< address order; packed in that order
  std::size_t live_bytes{0};         ///< sum of the ranges' bytes (packed bytes)
  std::size_t data_bytes{0};         ///< live bytes proper (ranges include small free gaps)
  host_extent packed;                ///< the raw packed bytes, while anything points into it
  std::vector<stored_chunk> chunks;  ///< empty until a worker publishes them

  /// Host bytes this copy holds.
  [[nodiscard]] std::size_t host_bytes() const noexcept
  {
    std::size_t total = packed.bytes;
    for (stored_chunk const& chunk : chunks) {
      total += chunk.owned.bytes;
    }
    return total;
  }
};

/// The host copies of one pool's pages on one device. See the file comment.
class pool_image {
 public:
  /// An image with room for `pages` pages, holding none, storing into `store`.
  pool_image(host_store& store, std::size_t pages) : store_(&store), pages_(pages) {}

  pool_image(pool_image const&)            = delete;
  pool_image& operator=(pool_image const&) = delete;

  /// Waits for the pending compression jobs, then frees every copy's host memory.
  ~pool_image()
  {
    try {
      jobs_.wait();
    } catch (...) {  // NOLINT(bugprone-empty-catch): jobs never throw; nothing to report
    }
    for (std::size_t page = 0; page < pages_.size(); ++page) {
      drop(page);
    }
  }

  /// The copy of `page`, or nullptr.
  [[nodiscard]] page_copy* find(std::size_t page) noexcept { return pages_[page].get(); }
  [[nodiscard]] page_copy const* find(std::size_t page) const noexcept
  {
    return pages_[page].get();
  }

  /**
   * @brief A worker's result for `copy`: its chunks, and whether `packed` is still needed
   *        (some chunk is stored raw in it). If not, `packed` goes back to the store.
   * Thread safety: called by workers; takes the image's mutex.
   */
  void publish(page_copy& copy, std::vector<stored_chunk> chunks, bool packed_needed) noexcept
  {
    host_extent unneeded;
    {
      std::lock_guard const lock(mutex_);
      host_bytes_ -= copy.host_bytes();
      copy.chunks = std::move(chunks);
      if (!packed_needed) { unneeded = std::exchange(copy.packed, host_extent{}); }
      host_bytes_ += copy.host_bytes();
    }
    if (unneeded) { store_->deallocate(unneeded); }
  }

  /// Host bytes held by the copies. Thread safety: any thread.
  [[nodiscard]] std::size_t host_bytes() const
  {
    std::lock_guard const lock(mutex_);
    return host_bytes_;
  }
  /// Pages that have a copy.
  [[nodiscard]] std::size_t copies() const noexcept { return copies_; }
  [[nodiscard]] std::size_t page_count() const noexcept { return pages_.size(); }

  /// The compression jobs of this image (restore and drop wait for them first).
  [[nodiscard]] task_group& jobs() noexcept { return jobs_; }

  /**
   * @brief While cancelled, compression jobs store the chunks they have not encoded yet
   *        raw (checksummed, in place): a restore that needs the pages now does not wait
   *        for a codec (../shared/notes/gpu-speed.md §3.4). Thread safety: any thread.
   */
  void cancel_compression() noexcept { cancelled_.store(true, std::memory_order_relaxed); }
  void resume_compression() noexcept { cancelled_.store(false, std::memory_order_relaxed); }
  [[nodiscard]] bool compression_cancelled() const noexcept
  {
    return cancelled_.load(std::memory_order_relaxed);
  }
  /// Counts a page whose compression a cancel cut short. Thread safety: any thread.
  void count_cancelled_page() noexcept { cancelled_pages_.fetch_add(1, std::memory_order_relaxed); }
  /// Pages whose compression was cut short so far.
  [[nodiscard]] std::size_t cancelled_pages() const noexcept
  {
    return cancelled_pages_.load(std::memory_order_relaxed);
  }

  /// The codec chosen for this pool, once chosen (at its first eviction).
  [[nodiscard]] bool codec_chosen() const noexcept { return codec_chosen_; }
  [[nodiscard]] codec_id codec() const noexcept { return codec_; }
  void choose(codec_id codec) noexcept
  {
    codec_        = codec;
    codec_chosen_ = true;
  }

 private:
  friend class pool_residency;  // the one owner of which pages have copies

  /// Installs `copy` as the copy of `page`. @pre `page` has none.
  page_copy& install(std::size_t page, std::unique_ptr<page_copy> copy) noexcept
  {
    std::lock_guard const lock(mutex_);
    host_bytes_ += copy->host_bytes();
    pages_[page] = std::move(copy);
    ++copies_;
    return *pages_[page];
  }

  /// Frees the copy of `page` (if any) and its host memory. @pre no job for it is pending.
  void drop(std::size_t page) noexcept
  {
    std::unique_ptr<page_copy> copy;
    {
      std::lock_guard const lock(mutex_);
      copy = std::move(pages_[page]);
      if (copy == nullptr) { return; }
      host_bytes_ -= copy->host_bytes();
      --copies_;
    }
    release(*copy);
  }

  /// Gives the host memory of `copy` (not installed) back to the store.
  void release(page_copy& copy) noexcept
  {
    for (stored_chunk const& chunk : copy.chunks) {
      if (chunk.owned) { store_->deallocate(chunk.owned); }
    }
    copy.chunks.clear();
    if (copy.packed) { store_->deallocate(std::exchange(copy.packed, host_extent{})); }
  }

  host_store* store_;
  std::vector<std::unique_ptr<page_copy>> pages_;  // by page index
  mutable std::mutex mutex_;                       // host_bytes_ and the chunks of a copy
  std::size_t host_bytes_{0};
  std::size_t copies_{0};
  task_group jobs_;
  std::atomic<bool> cancelled_{false};
  std::atomic<std::size_t> cancelled_pages_{0};
  codec_id codec_{codec_id::raw};
  bool codec_chosen_{false};
};

}  // namespace swapalloc
