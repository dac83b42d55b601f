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
 * A copy whose compression was deferred (compression_policy.hpp) is published raw, with
 * its checksums, and marked `deferred`; `take_deferred` later hands such copies to
 * compression jobs, which publish them again.
 *
 * Costs: bookkeeping only, no driver call; host memory comes from the `host_store`.
 *
 * Which pages have a copy, and whether it is still the page's data, is decided by the
 * image's one owner, `pool_residency` (residency.hpp): only it installs and drops copies.
 *
 * Thread safety: the allocator serializes every call on its device's mutex, except
 * `publish`, `defer`, `codec_or`, `host_bytes` and the deferred queries, which compression
 * workers and statistics readers call concurrently; they take the image's own mutexes. A
 * page's copy is not touched by its owner while a job for it is pending: restore, drop and
 * destruction wait for `jobs()` first.
 */
#pragma once

#include <swapalloc/codec.hpp>
#include <swapalloc/host_store.hpp>
#include <swapalloc/worker_pool.hpp>

#include <atomic>
#include <chrono>
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
  bool deferred{false};  ///< published with chunks left raw, to be compressed later (image mutex)

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
   *        `deferred`: the raw chunks are to be compressed later (take_deferred); ignored
   *        once `packed` goes.
   * Thread safety: called by workers; takes the image's mutex.
   */
  void publish(page_copy& copy, std::vector<stored_chunk> chunks, bool packed_needed,
               bool deferred = false) noexcept
  {
    host_extent unneeded;
    {
      std::lock_guard const lock(mutex_);
      host_bytes_ -= copy.host_bytes();
      set_deferred(copy, false);
      copy.chunks = std::move(chunks);
      if (!packed_needed) { unneeded = std::exchange(copy.packed, host_extent{}); }
      set_deferred(copy, deferred && copy.packed);
      host_bytes_ += copy.host_bytes();
    }
    if (unneeded) { store_->deallocate(unneeded); }
  }

  /**
   * @brief The copies marked deferred of the pages `chosen(page)` accepts, unmarked: the
   *        caller hands each to a compression job, which publishes it again (or marks it
   *        again with `defer`). Cost: O(pages) under the image's mutex.
   * @pre no job for a returned copy is pending (a marked copy has none: its job published
   *      it). Thread safety: any thread; the owner's serialization keeps copies alive.
   * @throws std::bad_alloc (nothing unmarked then).
   */
  template <typename Chosen>
  [[nodiscard]] std::vector<page_copy*> take_deferred(Chosen&& chosen)
  {
    std::lock_guard const lock(mutex_);
    std::vector<page_copy*> taken;
    for (std::size_t page = 0; page < pages_.size() && deferred_bytes_ != 0; ++page) {
      page_copy* const copy = pages_[page].get();
      if (copy != nullptr && copy->deferred && chosen(page)) { taken.push_back(copy); }
    }
    for (page_copy* const copy : taken) {
      set_deferred(*copy, false);
    }
    return taken;
  }

  /// Marks `copy` (installed, published) deferred again: a job could not be started for
  /// it. Thread safety: any thread.
  void defer(page_copy& copy) noexcept
  {
    std::lock_guard const lock(mutex_);
    set_deferred(copy, static_cast<bool>(copy.packed));
  }

  /// Whether any copy is marked deferred. Thread safety: any thread.
  [[nodiscard]] bool has_deferred() const
  {
    std::lock_guard const lock(mutex_);
    return deferred_bytes_ != 0;
  }

  /// Host bytes of the copies marked deferred of the pages `chosen(page)` accepts (their
  /// raw `packed` extents). Cost: O(pages) under the image's mutex. Thread safety: any.
  template <typename Chosen>
  [[nodiscard]] std::size_t deferred_bytes(Chosen&& chosen) const
  {
    std::lock_guard const lock(mutex_);
    std::size_t bytes = 0;
    for (std::size_t page = 0; page < pages_.size() && bytes < deferred_bytes_; ++page) {
      page_copy const* const copy = pages_[page].get();
      if (copy != nullptr && copy->deferred && chosen(page)) { bytes += copy->packed.bytes; }
    }
    return bytes;
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

  /// When the latest eviction into this image began (the copies' age, for the compression
  /// policy's idle delay: a pool evicted in parts ages from its latest part); the epoch
  /// before the first. @pre the device's lock.
  [[nodiscard]] std::chrono::steady_clock::time_point evicted_at() const noexcept
  {
    return evicted_at_;
  }
  /// Records an eviction into this image beginning at `when`. @pre the device's lock.
  void note_eviction(std::chrono::steady_clock::time_point when) noexcept { evicted_at_ = when; }

  /// The compression jobs of this image (restore and drop wait for them first).
  [[nodiscard]] task_group& jobs() noexcept { return jobs_; }

  /**
   * @brief While cancelled, compression jobs store the chunks they have not encoded yet
   *        raw (checksummed, in place): a restore that needs the pages now does not wait
   *        for a codec (../shared/notes/gpu-speed.md §3.4). Cancels nest: compression
   *        resumes when every cancel has been resumed. Thread safety: any thread.
   */
  void cancel_compression() noexcept { cancels_.fetch_add(1, std::memory_order_relaxed); }
  void resume_compression() noexcept { cancels_.fetch_sub(1, std::memory_order_relaxed); }
  [[nodiscard]] bool compression_cancelled() const noexcept
  {
    return cancels_.load(std::memory_order_relaxed) != 0;
  }
  /// Counts a page whose compression a cancel cut short. Thread safety: any thread.
  void count_cancelled_page() noexcept { cancelled_pages_.fetch_add(1, std::memory_order_relaxed); }
  /// Pages whose compression was cut short so far.
  [[nodiscard]] std::size_t cancelled_pages() const noexcept
  {
    return cancelled_pages_.load(std::memory_order_relaxed);
  }

  /**
   * @brief The codec of this pool's chunks: chosen once, by the first caller's `pick()`
   *        (at its first compression), then the same for every copy. Other callers wait
   *        while it picks. Thread safety: any thread (evicting thread, workers).
   * @throws what `pick` throws (nothing is chosen then).
   */
  template <typename Pick>
  [[nodiscard]] codec_id codec_or(Pick&& pick)
  {
    std::lock_guard const lock(codec_mutex_);
    if (!codec_chosen_) {
      codec_        = pick();
      codec_chosen_ = true;
    }
    return codec_;
  }

 private:
  friend class pool_residency;  // the one owner of which pages have copies

  /// Installs `copy` as the copy of `page`. @pre `page` has none.
  page_copy& install(std::size_t page, std::unique_ptr<page_copy> copy) noexcept
  {
    std::lock_guard const lock(mutex_);
    host_bytes_ += copy->host_bytes();
    if (copy->deferred) { deferred_bytes_ += copy->packed.bytes; }
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
      set_deferred(*copy, false);
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

  /// Sets `copy.deferred`, keeping deferred_bytes_. @pre mutex_ held.
  void set_deferred(page_copy& copy, bool deferred) noexcept
  {
    if (copy.deferred == deferred) { return; }
    copy.deferred = deferred;
    if (deferred) {
      deferred_bytes_ += copy.packed.bytes;
    } else {
      deferred_bytes_ -= copy.packed.bytes;
    }
  }

  host_store* store_;
  std::vector<std::unique_ptr<page_copy>> pages_;  // by page index
  mutable std::mutex mutex_;  // host_bytes_, deferred_bytes_, a copy's chunks and `deferred`
  std::size_t host_bytes_{0};
  std::size_t deferred_bytes_{0};  // packed bytes of the copies marked deferred
  std::size_t copies_{0};
  std::chrono::steady_clock::time_point evicted_at_{};
  task_group jobs_;
  std::atomic<unsigned> cancels_{0};  // cancel_compression calls not yet resumed
  std::atomic<std::size_t> cancelled_pages_{0};
  std::mutex codec_mutex_;  // codec_ and codec_chosen_
  codec_id codec_{codec_id::raw};
  bool codec_chosen_{false};
};

}  // namespace swapalloc
