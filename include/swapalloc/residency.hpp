/**
 * @file residency.hpp
 * @brief One pool on one device across both tiers: its device pages (`device_pool`) and
 *        the host copies of their data (`pool_image`), with the one owner of every page's
 *        residency and of the validity of its host copy.
 *
 * Issue 9 found data lost because the state of a page and the validity of its host copy
 * were kept consistent by hand in three files. Here they have one owner, and every change
 * of either goes through one of the transitions below, each of which either completes or
 * leaves both as they were. A page's copy is in one of three states:
 *
 * - `none`: no host copy.
 * - `current`: a host copy equal to the page's data. Every `evicted` and `restoring` page
 *   has one (it *is* the data); a resident page keeps one only while the pool keeps
 *   copies (`keep_copies`: read-only weights, DESIGN §6), so that evicting it again
 *   unchanged is an unmap only.
 * - `stale`: a kept copy of a resident page that a new block has since landed on. It is
 *   never used again, and is dropped at the next sweep (prepare_swap, release_idle_pages,
 *   restore): marking it is all the allocation hot path can afford (no lock, no free).
 *
 * Invariants (`check`, after every operation in the tests): unmapped pages have no copy;
 * evicted and restoring pages have a current one; a resident page has a current copy
 * only while the pool keeps copies; a copy state other than `none` exactly where the
 * image holds a copy; and the block cache's own invariants (block_cache.hpp).
 *
 * | transition        | page                     | copy                            | driver |
 * |-------------------|--------------------------|---------------------------------|--------|
 * | allocate          | unmapped → resident      | current → stale on its pages    | map    |
 * | release_page,     | resident, no block →     | dropped                         | unmap  |
 * | release_idle_pages| unmapped                 |                                 |        |
 * | evict_copied,     | resident → evicted       | none → current (installed)      | unmap  |
 * | evict_copied_run  | (a run: one unmap)       |                                 |        |
 * | evict_kept        | resident/restoring →     | current stays                   | unmap  |
 * |                   | evicted                  |                                 |        |
 * | begin_restore     | evicted → restoring      | current stays                   | map    |
 * | finish_restore    | restoring → resident     | current kept, or dropped        |        |
 * | abort_restore     | restoring → evicted      | current stays                   | unmap  |
 * | deallocate_parked | last block gone: evicted | dropped                         |        |
 * |                   | → unmapped, restoring →  |                                 |        |
 * |                   | resident                 |                                 |        |
 * | set_keep_copies   | —                        | kept copies of resident pages   |        |
 * | (false)           |                          | dropped                         |        |
 *
 * Costs: `allocate_cached` and `deallocate` are the hot path: the device pool's, plus
 * one load (are any copies kept?). Everything else is off it.
 *
 * Preconditions of every driver-touching call: the device's context is current.
 * Thread safety: none; the allocator serializes calls per device. Compression workers
 * touch the image's copies only through `pool_image::publish`.
 */
#pragma once

#include <swapalloc/driver.hpp>
#include <swapalloc/handle_cache.hpp>
#include <swapalloc/host_store.hpp>
#include <swapalloc/pool.hpp>
#include <swapalloc/pool_image.hpp>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace swapalloc {

/// Whether a page's host copy is its data. See the file comment.
enum class copy_state : std::uint8_t { none, current, stale };

[[nodiscard]] constexpr char const* to_string(copy_state state) noexcept
{
  switch (state) {
    case copy_state::none:
      return "none";
    case copy_state::current:
      return "current";
    case copy_state::stale:
      return "stale";
  }
  return "?";
}

/// One pool on one device, both tiers. See the file comment.
class pool_residency {
 public:
  /**
   * @brief Reserves the pool's range (device_pool); no host copy yet.
   * @param keep_copies keep the host copies of restored pages (a read-only pool).
   * @param handles the device's handle_cache (device_pool), or nullptr.
   * @throws as device_pool's constructor.
   */
  pool_residency(driver const& drv, CUdevice device, std::string name, std::size_t capacity,
                 std::size_t page_size, bool keep_copies, handle_cache* handles = nullptr)
    : pool_(drv, device, std::move(name), capacity, page_size, handles),
      copies_(pool_.page_count(), copy_state::none),
      keep_copies_(keep_copies)
  {
  }

  pool_residency(pool_residency const&)            = delete;
  pool_residency& operator=(pool_residency const&) = delete;

  /// Waits for the compression jobs and frees the host copies (the image goes first),
  /// then unmaps the pages (device_pool). @pre no work on the device uses the pool.
  ~pool_residency() { image_.reset(); }

  /// The device side, for queries.
  [[nodiscard]] device_pool const& pool() const noexcept { return pool_; }
  /// The host copies, or nullptr before the pool's first eviction.
  [[nodiscard]] pool_image* image() noexcept { return image_.get(); }
  [[nodiscard]] copy_state copy(std::size_t page) const noexcept { return copies_[page]; }
  [[nodiscard]] bool keeps_copies() const noexcept { return keep_copies_; }

  // ------------------------------------------------------------------ blocks

  /// Hot path: a cached block (device_pool::allocate_cached). Cost: that, plus one load.
  [[nodiscard]] block* allocate_cached(std::size_t rounded, std::size_t requested,
                                       stream_tag tag) noexcept
  {
    block* const found = pool_.allocate_cached(rounded, requested, tag);
    if (found != nullptr && kept_copies_ != 0) [[unlikely]] { mark_stale(*found); }
    return found;
  }

  /// Slow path: device_pool::allocate; the kept copies of the pages it lands on go stale.
  [[nodiscard]] block* allocate(std::size_t rounded, std::size_t requested, stream_tag tag)
  {
    block* const found = pool_.allocate(rounded, requested, tag);
    if (found != nullptr && kept_copies_ != 0) [[unlikely]] { mark_stale(*found); }
    return found;
  }

  /// True when `b` lies partly on a page whose data is in host memory: it must be freed
  /// with `deallocate_parked`. Cost: a load, and a loop over its pages only then.
  [[nodiscard]] bool on_parked_pages(block const& b) const noexcept
  {
    return pool_.parked_pages() != 0 && pool_.touches_parked(b);
  }

  /// Hot path: device_pool::deallocate. @pre !on_parked_pages(*freed).
  void deallocate(block* freed) { pool_.deallocate(freed); }
  /// device_pool::hold and finish_waiting. @pre as deallocate.
  void hold(block* freed, std::uint32_t events) noexcept { pool_.hold(freed, events); }
  void finish_waiting(block* waited) { pool_.finish_waiting(waited); }

  /**
   * @brief Frees a block lying partly on pages whose data is in host memory: no restore.
   *        Its bytes there are parked; a page left without any block drops its copy.
   *        Waits for the pool's compression jobs first if a copy is to be dropped.
   */
  void deallocate_parked(block* freed)
  {
    // A page that lost its last block had its data on the host: its copy was not kept.
    pool_.deallocate_parked(freed,
                            [this](std::size_t page) { drop_copy(page, page_state::evicted); });
  }

  // ------------------------------------------------------------------ pages

  /**
   * @brief Gives back every resident page no block uses, dropping any copy it kept, and
   *        sweeps stale copies. @pre the device was synchronized.
   * @return bytes released. @throws cuda_error as device_pool::release_idle_pages.
   */
  std::size_t release_idle_pages()
  {
    drop_stale_copies();
    return pool_.release_idle_pages(
      [this](std::size_t page) { drop_copy(page, page_state::resident); });
  }

  /// Before the pool is destroyed: gives back every page and copy (device_pool::
  /// release_all). @throws as that; what failed stays, and a later call can finish.
  void release_all()
  {
    (void)release_idle_pages();
    pool_.release_all();
  }

  /// Before an eviction: flushes the caches, forgets streams (device_pool::prepare_swap)
  /// and drops stale copies. @pre the device was synchronized.
  void prepare_swap()
  {
    pool_.prepare_swap();
    drop_stale_copies();
  }

  /**
   * @brief Keeps the copies of restored pages (true), or stops trusting them (false): the
   *        kept copies of resident pages are dropped at once, so the next eviction copies
   *        the pages again (issue 9: an RL weight update after `set_read_only(false)`).
   */
  void set_keep_copies(bool keep) noexcept
  {
    keep_copies_ = keep;
    if (keep) { return; }
    drop_stale_copies();
    for (std::size_t page = 0; page < copies_.size() && kept_copies_ != 0; ++page) {
      if (copies_[page] == copy_state::current && pool_.page(page) == page_state::resident) {
        drop_copy(page, page_state::resident);
      }
    }
  }

  /// The image, created at the first eviction with `store` for its host memory.
  pool_image& image_for(host_store& store)
  {
    if (image_ == nullptr) { image_ = std::make_unique<pool_image>(store, pool_.page_count()); }
    return *image_;
  }

  /// Waits for the compression jobs of the pool's copies.
  void wait_for_compression()
  {
    if (image_ != nullptr) { image_->jobs().wait(); }
  }

  /// The compression jobs of the pool's copies when any is in flight, else null: a caller
  /// that would drop a copy waits for them first, with its lock released (a drop waits
  /// for them otherwise). The group lives as long as the pool.
  [[nodiscard]] task_group* compression_in_flight() noexcept
  {
    return image_ != nullptr && image_->jobs().pending() != 0 ? &image_->jobs() : nullptr;
  }

  /**
   * @brief Cancels the pool's pending compression for its lifetime (pool_image::
   *        cancel_compression): a caller that waits for the jobs only to drop or move
   *        copies does not wait for a codec; a copy cut short stays raw, deferred.
   *        Nothing without an image. Thread safety: as the image's cancel.
   */
  class compression_pause {
   public:
    explicit compression_pause(pool_residency& pool) noexcept : image_(pool.image_.get())
    {
      if (image_ != nullptr) { image_->cancel_compression(); }
    }
    compression_pause(compression_pause const&)            = delete;
    compression_pause& operator=(compression_pause const&) = delete;
    ~compression_pause()
    {
      if (image_ != nullptr) { image_->resume_compression(); }
    }

   private:
    pool_image* image_;
  };

  /// Host bytes of the copies of evicted pages whose compression was deferred
  /// (pool_image::deferred_bytes): what compressing the pool could save. Kept copies of
  /// resident pages do not count: a job on them would make a free or allocation wait.
  /// Cost: O(pages). @throws nothing but std::system_error (the image's mutex).
  [[nodiscard]] std::size_t deferred_bytes() const
  {
    if (image_ == nullptr) { return 0; }
    return image_->deferred_bytes(
      [&](std::size_t page) { return pool_.page(page) == page_state::evicted; });
  }

  /// Those copies, unmarked, for compression jobs (pool_image::take_deferred).
  /// @pre an engine lease: no transfer of the pool runs. @throws std::bad_alloc.
  [[nodiscard]] std::vector<page_copy*> take_deferred()
  {
    if (image_ == nullptr) { return {}; }
    return image_->take_deferred(
      [&](std::size_t page) { return pool_.page(page) == page_state::evicted; });
  }

  // ------------------------------------------------- transitions (transfer_engine)

  /// Resident page `page` without blocks: unmapped, its copy (if kept) dropped.
  /// @throws std::logic_error if a block uses it; cuda_error (nothing changes).
  void release_page(std::size_t page)
  {
    pool_.unmap_page(page, page_state::unmapped);
    drop_copy(page, page_state::resident);
  }

  /// A page whose copy is current (a kept copy, or a restoring page): unmapped, evicted.
  /// @throws std::logic_error without a current copy; cuda_error (nothing changes).
  void evict_kept(std::size_t page)
  {
    require_copy(page, copy_state::current, "evict_kept");
    bool const kept = pool_.page(page) == page_state::resident;
    pool_.unmap_page(page, page_state::evicted);
    kept_copies_ -= kept ? 1 : 0;
  }

  /**
   * @brief Resident page `page`, whose live bytes `copy` holds (the copies into it have
   *        completed): unmapped, evicted, `copy` installed as its current copy.
   * @return the installed copy (for its compression job).
   * @throws std::logic_error if the page has a copy; cuda_error if the unmap fails: the
   *         page stays resident and `copy`'s host memory goes back to the store.
   */
  page_copy& evict_copied(std::size_t page, std::unique_ptr<page_copy> copy)
  {
    require_copy(page, copy_state::none, "evict_copied");
    require_image("evict_copied");
    try {
      pool_.unmap_page(page, page_state::evicted);
    } catch (...) {
      image_->release(*copy);
      throw;
    }
    copies_[page] = copy_state::current;
    return image_->install(page, std::move(copy));
  }

  /// What evict_copied_run did: `installed[i]` is the copy installed for its i-th page, or
  /// null where that page's unmap failed (it stays resident, its copy's host memory given
  /// back); `error` is the first such failure.
  struct run_eviction {
    std::vector<page_copy*> installed;
    std::exception_ptr error;
  };

  /**
   * @brief Resident pages [first, first + copies.size()), whose live bytes `copies` hold
   *        (the copies into them have completed): unmapped with one cuMemUnmap (pool.hpp
   *        unmap_run), each evicted with its copy installed, as evict_copied would do page
   *        by page; if that call fails, page by page with evict_copied, so that only the
   *        pages whose own unmap fails stay resident.
   * @throws std::logic_error (before any change) if a page has a copy or is not resident;
   *         std::bad_alloc. A failed unmap is no throw: see run_eviction.
   */
  run_eviction evict_copied_run(std::size_t first, std::span<std::unique_ptr<page_copy>> copies)
  {
    run_eviction out;
    out.installed.assign(copies.size(), nullptr);
    for (std::size_t i = 0; i < copies.size(); ++i) {
      require_copy(first + i, copy_state::none, "evict_copied_run");
    }
    require_image("evict_copied_run");
    if (copies.size() > 1 && pool_.unmap_run(first, copies.size(), page_state::evicted)) {
      for (std::size_t i = 0; i < copies.size(); ++i) {
        copies_[first + i] = copy_state::current;
        out.installed[i]   = &image_->install(first + i, std::move(copies[i]));
      }
      return out;
    }
    for (std::size_t i = 0; i < copies.size(); ++i) {
      try {  // a failure gives this page's copy back; the pages after it are still tried
        out.installed[i] = &evict_copied(first + i, std::move(copies[i]));
      } catch (...) {
        if (!out.error) { out.error = std::current_exception(); }
      }
    }
    return out;
  }

  /// Evicted page `page` (and the `count` - 1 after it, all evicted) is mapped again
  /// (restoring), with one cuMemSetAccess; a restoring `page` is left as it is (count 1).
  /// @throws cuda_error from the map (the pages stay evicted); std::logic_error when a page
  ///         of a run is not evicted.
  void begin_restore(std::size_t page, std::size_t count = 1)
  {
    if (pool_.page(page) == page_state::evicted) { pool_.map_for_restore(page, count); }
  }

  /// Restoring page `page` holds its data again: resident; its copy kept (current) if the
  /// pool keeps copies, else dropped. @pre its copies have completed.
  void finish_restore(std::size_t page)
  {
    pool_.settle(page);
    if (keep_copies_) {
      ++kept_copies_;
    } else {
      drop_copy(page, page_state::restoring);
    }
  }

  /// Restoring page `page` is unmapped again: evicted, its copy untouched. Returns false
  /// if the unmap failed: the page stays restoring (mapped, never counted resident), and
  /// the next restore fills it or the next evict unmaps it. @pre its copies have completed.
  bool abort_restore(std::size_t page) noexcept
  {
    try {
      pool_.unmap_page(page, page_state::evicted);
      return true;
    } catch (...) {
      return false;
    }
  }

  /// The pool's counters, with the host bytes of its copies.
  [[nodiscard]] pool_stats stats() const
  {
    pool_stats out = pool_.stats();
    if (image_ != nullptr) { out.host_bytes = image_->host_bytes(); }
    return out;
  }

  /// Counts `pages` evicted, or restored.
  void count_evictions(std::size_t pages) noexcept { pool_.count_evictions(pages); }
  void count_restores(std::size_t pages) noexcept { pool_.count_restores(pages); }

  /// Every invariant of the file comment: empty when they hold, else the first broken one.
  /// Cost: a walk over the blocks and pages (tests).
  [[nodiscard]] std::string check() const
  {
    if (std::string problem = pool_.check(); !problem.empty()) { return problem; }
    std::size_t kept  = 0;
    std::size_t stale = 0;
    for (std::size_t page = 0; page < copies_.size(); ++page) {
      copy_state const copy  = copies_[page];
      page_state const state = pool_.page(page);
      bool const held        = image_ != nullptr && image_->find(page) != nullptr;
      bool const right       = state == page_state::unmapped ? copy == copy_state::none
                               : data_on_host(state)         ? copy == copy_state::current
                                                     : (copy != copy_state::current || keep_copies_);
      if (!right || held != (copy != copy_state::none)) {
        return "page " + std::to_string(page) + " is " + to_string(state) + " with a " +
               to_string(copy) + " copy state, and the image " +
               (held ? "holds" : "does not hold") + " a copy of it";
      }
      kept += state == page_state::resident && copy == copy_state::current ? 1 : 0;
      stale += copy == copy_state::stale ? 1 : 0;
    }
    if (kept != kept_copies_ || stale != stale_copies_) { return "counts of kept or stale copies"; }
    return {};
  }

 private:
  void require_copy(std::size_t page, copy_state wanted, char const* transition) const
  {
    if (copies_[page] != wanted) {
      throw std::logic_error(std::string("swapalloc: ") + transition + "(page " +
                             std::to_string(page) + " of pool '" + pool_.name() +
                             "'): its copy is " + to_string(copies_[page]) + ", expected " +
                             to_string(wanted));
    }
  }

  /// @throws std::logic_error before image_for made the pool's image.
  void require_image(char const* transition) const
  {
    if (image_ == nullptr) {
      throw std::logic_error(std::string("swapalloc: ") + transition + " before image_for (pool '" +
                             pool_.name() + "')");
    }
  }

  /// A block landed on `b`'s pages: their kept copies are stale. Off the hot path: only
  /// while copies are kept. No allocation.
  void mark_stale(block const& b) noexcept
  {
    std::size_t const page_size = pool_.page_size();
    for (std::size_t page = b.offset / page_size; page <= (b.end() - 1) / page_size; ++page) {
      if (copies_[page] != copy_state::current) { continue; }
      copies_[page] = copy_state::stale;
      --kept_copies_;
      ++stale_copies_;
    }
  }

  /// Drops the copy of `page` (if any), waiting for compression jobs that may use it.
  /// `was`: the page's state while the copy was counted (a page whose data just left the
  /// host is resident or unmapped now, but its copy was never a kept one).
  void drop_copy(std::size_t page, page_state was) noexcept
  {
    copy_state const copy = copies_[page];
    if (copy == copy_state::none) { return; }
    if (copy == copy_state::stale) { --stale_copies_; }
    if (copy == copy_state::current && was == page_state::resident) { --kept_copies_; }
    if (image_->jobs().pending() != 0) { wait_for_jobs(); }
    image_->drop(page);
    copies_[page] = copy_state::none;
  }

  void wait_for_jobs() noexcept
  {
    try {
      image_->jobs().wait();
    } catch (...) {  // NOLINT(bugprone-empty-catch): compression jobs never throw
    }
  }

  void drop_stale_copies() noexcept
  {
    for (std::size_t page = 0; page < copies_.size() && stale_copies_ != 0; ++page) {
      if (copies_[page] == copy_state::stale) { drop_copy(page, page_state::resident); }
    }
  }

  device_pool pool_;
  std::vector<copy_state> copies_;  // by page
  std::unique_ptr<pool_image> image_;
  bool keep_copies_;
  std::size_t kept_copies_{0};   // resident pages with a current copy: tested on allocation
  std::size_t stale_copies_{0};  // pages with a stale copy
};

}  // namespace swapalloc
