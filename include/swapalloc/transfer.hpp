/**
 * @file transfer.hpp
 * @brief Moves a pool's pages between the device and the host store, pipelined: evict
 *        (copy live bytes out, unmap) and restore (map, copy back, verify).
 *
 * One `transfer_engine` per device owns two copy streams (device-to-host, host-to-device,
 * both non-blocking so that they never wait for the legacy stream), a ring of pinned
 * staging buffers of one chunk each, and uses the device's event pool; compression and
 * decompression run on a shared `worker_pool`. Workers never call the driver: the calling
 * thread issues every copy and map, so no worker needs a context.
 *
 * - **Evict.** For each page: the live byte ranges (parts of allocated blocks; free gaps
 *   of at most `gap_bytes` between them are copied along, which costs less than another
 *   copy call) are copied raw into one host extent at link speed, up to `window_pages`
 *   pages in flight. Ranges that continue each other on both sides (adjacent pages whose
 *   extents are adjacent too, as first fit makes them) are gathered into copies of up to
 *   8 MiB, with one event per copy. When the window is full, the engine waits for its
 *   oldest copy and unmaps every page whose copy has completed, adjacent pages with one
 *   cuMemUnmap (pool_residency::evict_copied_run); a worker then compresses their chunks
 *   behind the copies (`pool_image::publish`). So device memory is freed at link speed,
 *   and compression costs host time only. With `codec_choice::defer` (the caller's
 *   compression policy: compression_policy.hpp) the worker only checksums the chunks and
 *   publishes the copy raw, marked deferred; `compress_deferred` later hands such copies
 *   to the workers to encode. When the host budget cannot hold the raw copy, the engine
 *   stops deferring, hands this pool's deferred copies to compression, waits for its
 *   compression jobs (which give raw bytes back), and then compresses synchronously
 *   through a staging buffer; if even the compressed page does not fit, the page and
 *   those after it stay resident and the outcome says why. A copy's compression takes
 *   effect whole or not at all: if a chunk stays raw in `packed` (it does not gain, or
 *   the budget has no room), the copy's encoded chunks go back to raw (back_to_raw),
 *   since `packed` stays anyway and they would only add to it.
 * - **Restore.** First the pool's pending compression is cancelled: jobs not yet done store
 *   their remaining chunks raw instead of encoding them, so the restore waits for
 *   checksums, not for a codec (`compressions_cut_short` counts such pages); its jobs no
 *   worker has started run on the calling thread (worker_pool::run_queued), so a restore
 *   never waits behind other pools' compression, and its decoding jobs are urgent: they
 *   run before any compression queued.
 *   Then for each chunk of each page, in order: a worker decompresses it into a
 *   staging buffer and verifies its XXH64 (a chunk stored raw is copied straight from the
 *   store at once, and verified in place beside its copy, not ahead of it: issue 14's
 *   "raw chunks are verified alongside the DMA"; a page counts as restored only once every
 *   check passed; a zero chunk becomes a device memset, issued at once too), while the
 *   calling thread maps the page at its old address and copies the previous chunks in
 *   (and, rather than wait for a chunk, decompresses one itself). The ring of staging
 *   buffers bounds how far decompression runs ahead; a buffer is reused once the copy out
 *   of it has completed, which the calling thread checks without blocking while copies
 *   are still queued, so the link stays busy. Pages are mapped in runs of up to 16, one
 *   cuMemSetAccess each, by the calling thread after it has issued the batched copies so
 *   far (the copy still being gathered, up to 8 MiB, goes out after the map), so each
 *   run's map after the first overlaps copies queued before it. No thread can hide the
 *   first run's map, nothing being queued before it; so no mapper thread: on the h100
 *   profile, VMM calls made free shorten a restore by 0.4 ms of 5.8, and a map-bound
 *   restore would stay map-bound on any thread (tools/cudasim/README.md, "What-if
 *   profiles"). Should a GPU show maps waiting for queued copies (tools/gpu-profile M1),
 *   each run is better mapped before any of its copies is issued.
 *
 * Every change of a page's residency and of its host copy is one of `pool_residency`'s
 * transitions (residency.hpp); the engine only decides their order and moves the bytes.
 * Failures lose nothing (DESIGN §6): an evict that fails leaves every page it had not yet
 * unmapped resident, and the pages it unmapped evicted with their copies; a restore that
 * fails unmaps the pages it mapped, so the pool stays evicted with every copy intact (a
 * page whose unmap fails too stays `restoring`: mapped, not resident, its copy intact),
 * and a later restore fills them all.
 *
 * Preconditions of `evict` and `restore`: the device's context is current; the caller
 * holds the device's lock, has synchronized the device and called
 * `pool_residency::prepare_swap` (evict), and no GPU work uses the pool meanwhile.
 *
 * **Waits outside the device's lock.** Every wait of a transfer (a copy's event, the copy
 * streams, the compression jobs the host budget waits for, the decoders of a restore,
 * which the calling thread helps) goes through the caller's `wait_gate`, which releases
 * the device's lock for its duration: other pools' allocations and frees go on while a
 * pool moves. Every change of the pool's state, and every driver call, is made with the
 * lock held. The caller keeps everyone else off the engine and the moving pool meanwhile
 * (device_state.hpp's transfer lease).
 *
 * Thread safety: one transfer at a time per engine.
 */
#pragma once

#include <swapalloc/codec.hpp>
#include <swapalloc/detail/copy_batch.hpp>
#include <swapalloc/driver.hpp>
#include <swapalloc/host_store.hpp>
#include <swapalloc/pool.hpp>
#include <swapalloc/pool_image.hpp>
#include <swapalloc/residency.hpp>
#include <swapalloc/stream_events.hpp>
#include <swapalloc/worker_pool.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <deque>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace swapalloc {

/**
 * @brief What a transfer calls around each of its waits: releases the caller's lock (the
 *        device's) for the wait and takes it again after, also when the wait throws.
 *        Default-constructed, it holds nothing and the waits run under the caller's lock.
 * Thread safety: used by the one thread that owns `lock`.
 */
class wait_gate {
 public:
  wait_gate() = default;
  explicit wait_gate(std::unique_lock<std::mutex>& lock) noexcept : lock_(&lock) {}

  /// Runs `wait()` with the lock released. @pre the lock is held.
  template <typename Wait>
  void outside(Wait&& wait) const
  {
    if (lock_ == nullptr) {
      wait();
      return;
    }
    lock_->unlock();
    struct relock {
      std::unique_lock<std::mutex>* lock;
      ~relock() { lock->lock(); }
    } const again{lock_};
    wait();
  }

 private:
  std::unique_lock<std::mutex>* lock_{nullptr};
};

/// Settings of a transfer engine.
struct transfer_options {
  std::size_t staging_slots{16};  ///< pinned staging buffers of max_chunk_bytes each
  std::size_t window_pages{16};   ///< eviction: pages with copies in flight (or gathered)
  std::size_t gap_bytes{4096};    ///< free gaps up to this size are copied with live bytes
  /// Copies that cannot be gathered into one (an evict's scattered live ranges, a
  /// restore's raw parts) go out up to 64 at a time with one cuMemcpyBatchAsync where the
  /// driver has it (detail/copy_batch.hpp); false: one call per copy.
  bool batch_copies{true};
};

/// How a pool's chunks are encoded: a forced codec, else its dtype hint, else sampled.
struct codec_choice {
  dtype_hint hint{dtype_hint::none};
  std::optional<codec_id> forced;
  /// An eviction's copies are only checksummed and published raw, marked deferred, until
  /// `compress_deferred` hands them to the workers (compression_policy.hpp decides when).
  bool defer{false};
};

/**
 * @brief Where a transfer's calling thread spent its time, in seconds (steady clock), so
 *        that a GPU run and a cost-profiled simulator run say where the time goes
 *        (../shared/notes/gpu-speed.md §4). The phases do not overlap; what is left of the
 *        wall time is bookkeeping and the codec choice. `pin` is the time of the host
 *        store's pins made meanwhile, by any thread.
 */
struct transfer_times {
  double pin{0};    ///< pinning host slabs (host_store.hpp): a cold host store
  double vmm{0};    ///< mapping and unmapping pages (cuMemCreate/Map/SetAccess/Unmap/Release)
  double issue{0};  ///< issuing copies, memsets and event records
  double wait{0};   ///< waiting for the link (events, streams) and for compression jobs
  double codec{0};  ///< encoding or decoding on the calling thread

  /// Adds `more`, phase by phase (sums over several transfers).
  transfer_times& operator+=(transfer_times const& more) noexcept
  {
    pin += more.pin;
    vmm += more.vmm;
    issue += more.issue;
    wait += more.wait;
    codec += more.codec;
    return *this;
  }
};

namespace detail {

/// Adds the seconds between its construction and its destruction to `into`. Cost: two
/// steady_clock reads (about 25 ns each on Linux's vDSO).
class phase_timer {
 public:
  explicit phase_timer(double& into) noexcept
    : into_(&into), start_(std::chrono::steady_clock::now())
  {
  }
  phase_timer(phase_timer const&)            = delete;
  phase_timer& operator=(phase_timer const&) = delete;
  ~phase_timer()
  {
    *into_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  double* into_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace detail

/// What one eviction did.
struct evict_result {
  std::size_t released_bytes{0};  ///< device memory given back (whole pages)
  std::size_t pages_copied{0};    ///< pages whose live bytes were copied out and unmapped
  std::size_t pages_unmapped{0};  ///< pages unmapped without a copy (no live bytes, or clean)
  std::size_t pages_released{0};  ///< of those, pages without live bytes (nothing to restore)
  std::size_t pages_kept{0};      ///< pages left resident because the host budget was short
  std::size_t live_bytes{0};      ///< live bytes of the copied pages
  std::size_t bytes_copied{0};    ///< bytes moved over the link (live bytes and small gaps)
  std::string refused;            ///< why pages were kept, or empty
  std::size_t slabs_pinned{0};    ///< host slabs pinned meanwhile (0 once the store is warm)
  /// The copies' compression was deferred (codec_choice::defer), to the end: they are
  /// stored raw until compress_deferred; false when they were compressed behind.
  bool compression_deferred{false};
  /// Device-to-host copies of live bytes into their host extents (gathered ones count once;
  /// the staging copies of a page compressed synchronously, short of budget, are not).
  std::size_t copies{0};
  std::size_t copy_calls{0};  ///< driver calls that issued them (a batch counts once)
  transfer_times times;       ///< where the calling thread's time went
};

/// What one restore did.
struct restore_result {
  std::size_t pages{0};                   ///< pages mapped and filled again
  std::size_t bytes_copied{0};            ///< bytes moved over the link
  std::size_t compressions_cut_short{0};  ///< pages whose pending compression it cancelled
  std::size_t raw_copies{0};      ///< host-to-device copies of raw parts (gathered ones count once)
  std::size_t raw_copy_calls{0};  ///< driver calls that issued them (a batch counts once)
  transfer_times times;           ///< where the calling thread's time went
};

/// Per-device transfer machinery. See the file comment.
class transfer_engine {
 public:
  /// Creates nothing on the device until the first evict or restore.
  /// `events` is the device's event pool (stream_events.hpp), shared with the allocator.
  transfer_engine(driver const& drv, host_store& store, worker_pool& workers, event_pool& events,
                  transfer_options options = {})
    : driver_(&drv),
      store_(&store),
      workers_(&workers),
      events_(&events),
      options_(options),
      to_host_batch_(detail::copy_direction::device_to_host, options.batch_copies, gather_bytes),
      to_device_batch_(detail::copy_direction::host_to_device, options.batch_copies, gather_bytes)
  {
    if (options_.staging_slots == 0 || options_.window_pages == 0) {
      throw std::invalid_argument(
        "swapalloc: transfer_options: staging_slots=" + std::to_string(options_.staging_slots) +
        ", window_pages=" + std::to_string(options_.window_pages) + ": both must be at least 1");
    }
  }

  transfer_engine(transfer_engine const&)            = delete;
  transfer_engine& operator=(transfer_engine const&) = delete;

  /// Frees the streams, staging events and buffers, best effort (pooled events go back to
  /// the event pool, which outlives the engine).
  /// @pre the device's context is current, no transfer is running, and the store outlives
  ///      the engine.
  ~transfer_engine()
  {
    driver_table const& table = driver_->table();
    if (to_host_ != nullptr && table.cuStreamSynchronize(to_host_) == CUDA_SUCCESS) {
      give_back_unsettled();
    }
    if (to_device_ != nullptr) { (void)table.cuStreamSynchronize(to_device_); }
    for (CUevent event : slot_events_) {
      (void)table.cuEventDestroy(event);
    }
    if (staging_ != nullptr) { (void)table.cuMemFreeHost(staging_); }
    if (to_host_ != nullptr) { (void)table.cuStreamDestroy(to_host_); }
    if (to_device_ != nullptr) { (void)table.cuStreamDestroy(to_device_); }
  }

  /// Scratch buffers kept for the next codec job: one per job that ran at once (the
  /// workers and the calling threads), each about max_chunk_bytes of pageable memory.
  /// Thread safety: any thread.
  [[nodiscard]] std::size_t scratch_buffers() const
  {
    std::lock_guard const lock(scratch_mutex_);
    return scratch_.size();
  }

  /// Frees the scratch buffers kept for reuse (empty_cache gives back what is cached); a
  /// job running meanwhile keeps its own and puts it back when it ends. Thread safety: any
  /// thread.
  void release_scratch() noexcept
  {
    std::vector<std::unique_ptr<job_scratch>> freed;
    std::lock_guard const lock(scratch_mutex_);
    freed.swap(scratch_);
  }

  /// True once the streams, staging ring and events exist (the first transfer, or
  /// `prepare`, made them). @pre the caller holds the engine (an engine lease): `prepare`
  /// writes them without the device's mutex.
  [[nodiscard]] bool ready() const noexcept { return to_host_ != nullptr; }

  /**
   * @brief Creates the streams, the staging ring (staging_slots x max_chunk_bytes of
   *        pinned memory) and the slot events now, as the first transfer otherwise would
   *        inside its evict: so that pinning ahead of need (allocator::prepin_host) leaves
   *        the first eviction nothing to pin. Does nothing once ready.
   *
   * Cost: two cuStreamCreate, one cuMemHostAlloc of the ring (16 MiB by default: 5.4 ms at
   * the h100 profile's 0.34 ms/MiB, under the driver's lock), staging_slots events.
   * @pre the caller holds the engine (an engine lease) and the device's context is
   *      current; no lock is needed (it touches only the engine's own members).
   * @throws cuda_error from the failing call; the engine is unchanged, not ready, usable.
   */
  void prepare()
  {
    if (to_host_ == nullptr) { ensure_ready(); }
  }

  /**
   * @brief Evicts `pages` of `residency` (ascending; resident, or restoring) into its
   *        image: a page whose copy is current is only unmapped, a page without blocks
   *        only released, the others copied out and unmapped.
   * @return what was done; pages kept for the host budget are named in `refused`.
   * @throws cuda_error from the first failing driver call, after the rollback described in
   *         the file comment; the pool is usable and consistent.
   * @pre residency.prepare_swap() since the last allocation in the pool. `gate` releases
   *      the caller's lock around each wait (see the file comment).
   */
  evict_result evict(pool_residency& residency, std::vector<std::size_t> const& pages,
                     codec_choice const& choice, wait_gate gate = {})
  {
    ensure_ready();
    to_host_batch_.reset();
    evict_pass pass{residency, residency.image_for(*store_), choice, gate, {}, {}, {}, {}};
    pass.image.note_eviction(std::chrono::steady_clock::now());  // the copies' age
    std::size_t const pins_before = store_->pins();
    double const pin_before       = store_->pin_seconds();
    transfer_times& times         = pass.out.times;
    try {
      for (std::size_t i = 0; i < pages.size(); ++i) {
        std::size_t const page = pages[i];
        auto copy              = std::make_unique<page_copy>();
        copy->ranges           = live_ranges(residency.pool(), page, copy->data_bytes);
        if (copy->ranges.empty()) {  // free bytes only: nothing to keep (a kept copy goes)
          detail::phase_timer const vmm(times.vmm);
          residency.release_page(page);
          ++pass.out.pages_unmapped;
          ++pass.out.pages_released;
          continue;
        }
        if (residency.copy(page) == copy_state::current) {  // kept, or a restoring page
          detail::phase_timer const vmm(times.vmm);
          residency.evict_kept(page);
          ++pass.out.pages_unmapped;
          continue;
        }
        for (live_range const& range : copy->ranges) {
          copy->live_bytes += range.bytes;
        }
        if (!start_copy(pass, page, std::move(copy))) {
          pass.out.pages_kept = pages.size() - i;
          pass.out.refused    = refusal(residency.pool(), pages.size() - i);
          break;
        }
      }
      while (!pass.window.empty()) {
        retire(pass);
      }
    } catch (...) {
      abandon(pass);
      throw;
    }
    if (pass.unmap_error) { std::rethrow_exception(pass.unmap_error); }
    pass.out.compression_deferred = pass.choice.defer;
    pass.out.copies               = to_host_batch_.copies();
    pass.out.copy_calls           = to_host_batch_.calls();
    pass.out.slabs_pinned         = store_->pins() - pins_before;
    times.pin                     = store_->pin_seconds() - pin_before;
    pass.out.released_bytes =
      (pass.out.pages_copied + pass.out.pages_unmapped) * residency.pool().page_size();
    return pass.out;
  }

  /**
   * @brief Hands the copies of `residency`'s evicted pages whose compression was deferred
   *        (codec_choice::defer) to the workers, which encode their raw chunks with the
   *        pool's codec (chosen with `choice` at its first compression) and give the raw
   *        extents back once no chunk lies in them. A restore cancels them as it cancels
   *        compression behind an eviction. Cost on the calling thread: a walk over the
   *        pool's pages and one queued job per copy; no driver call, no wait.
   * @return the host bytes of the raw copies handed over (what compression may save).
   * @pre the device's lock, and no transfer of the pool running (an engine lease).
   * @throws std::bad_alloc; the copies not handed over stay deferred.
   */
  std::size_t compress_deferred(pool_residency& residency, codec_choice const& choice)
  {
    std::vector<page_copy*> const copies = residency.take_deferred();
    if (copies.empty()) { return 0; }
    pool_image& image = residency.image_for(*store_);
    std::size_t bytes = 0;
    std::size_t i     = 0;
    try {
      for (; i < copies.size(); ++i) {
        page_copy* const copy = copies[i];
        bytes += copy->packed.bytes;  // before the job may give it back
        workers_->submit(image.jobs(), [this, &image, copy, choice] {
          compress_raw_chunks(image, *copy, choice);
        });
      }
    } catch (...) {
      for (; i < copies.size(); ++i) {
        image.defer(*copies[i]);
      }
      throw;
    }
    return bytes;
  }

  /**
   * @brief Restores `pages` of `residency` (ascending; evicted, or restoring after a
   *        restore whose rollback could not unmap them) from its host copies at their
   *        addresses, then makes `stream` wait for the copies. Copies are kept if the
   *        pool keeps copies (residency.hpp).
   * @throws cuda_error from a failing driver call, restore_error for a chunk that fails
   *         its checksum or does not decode: every page is unmapped again (evicted) with
   *         its copy; a page whose unmap fails too stays restoring, and a later restore
   *         fills it. A restore never returns with a page it did not fill.
   * `gate` releases the caller's lock around each wait (see the file comment).
   */
  restore_result restore(pool_residency& residency, std::vector<std::size_t> const& pages,
                         CUstream stream, wait_gate gate = {})
  {
    ensure_ready();
    to_device_batch_.reset();
    restore_result out;
    pool_image& image = residency.image_for(*store_);
    settle_compression(image, gate, out);
    std::vector<piece> const pieces = restore_pieces(residency.pool(), image, pages);
    restore_pass pass(residency, pages, pieces, gate, out);
    try {
      for (std::size_t i = 0; i < pieces.size(); ++i) {
        restore_piece(pass, i);
      }
      await_copies(pass, stream);
    } catch (...) {
      abandon_restore(residency, pages, pass.run);
      throw;
    }
    std::fill(slot_busy_.begin(), slot_busy_.end(), false);
    {
      detail::phase_timer const vmm(out.times.vmm);
      for (std::size_t const page : pages) {
        residency.finish_restore(page);
      }
    }
    residency.count_restores(pages.size());
    out.pages          = pages.size();
    out.raw_copies     = to_device_batch_.copies();
    out.raw_copy_calls = to_device_batch_.calls();
    return out;
  }

 private:
  /// An evicted page whose copy is issued, or gathered to be. Copies run in order on one
  /// stream, so a page without an event (null) is copied once the next event after it in
  /// the window has completed; the newest page always gets one before a wait.
  struct in_flight {
    std::size_t page;
    std::unique_ptr<page_copy> copy;
    CUevent event;
  };

  /// A copy gathered from parts that are contiguous on both sides, up to gather_bytes: an
  /// evict's live ranges (device to host: adjacent pages whose host extents are adjacent
  /// too) and a restore's raw parts (host to device).
  template <typename Target, typename Source>
  struct gathered_copy {
    Target target{};
    Source source{};
    std::size_t bytes{0};

    /// Extends the copy by `count` bytes from `from` to `to` if they continue it on both
    /// sides within gather_bytes; false (unchanged) otherwise, or when it is empty.
    bool extend(Target to, Source from, std::size_t count) noexcept
    {
      if (bytes == 0 || target + bytes != to || source + bytes != from ||
          bytes + count > gather_bytes) {
        return false;
      }
      bytes += count;
      return true;
    }
  };
  using pending_evict_copy = gathered_copy<std::byte*, CUdeviceptr>;
  using pending_copy       = gathered_copy<CUdeviceptr, std::byte const*>;

  /// One chunk of one page's copy, in restore order.
  struct piece {
    std::size_t page;  // index into the restored pages
    std::size_t chunk;
    page_copy const* copy;
    stored_chunk const* stored;
  };

  /// The decoding of one restore's pieces: each is claimed once, by a worker or by the
  /// calling thread (which decodes instead of idling while it waits), then finished.
  struct run_state {
    explicit run_state(std::size_t pieces) : started(pieces, 0), done(pieces, 0)
    {
      errors.resize(pieces);
    }
    /// True once piece `index` is decoded (or verified).
    bool is_done(std::size_t index)
    {
      std::lock_guard const lock(mutex);
      return done[index] != 0;
    }
    /// True if `index` was not started yet: the caller of this now decodes it.
    bool claim(std::size_t index)
    {
      std::lock_guard const lock(mutex);
      if (started[index] != 0) { return false; }
      started[index] = 1;
      return true;
    }
    /// Blocks until piece `needed` is decoded, returning `submitted`; or claims and returns
    /// an unstarted piece among the first `submitted` (`needed` first) for the caller to
    /// decode meanwhile. Cost: a scan of at most staging_slots flags per wake-up.
    std::size_t claim_or_wait(std::size_t needed, std::size_t submitted)
    {
      std::unique_lock lock(mutex);
      for (;;) {
        if (done[needed] != 0) { return submitted; }
        for (std::size_t index = needed; index < submitted; ++index) {
          if (started[index] == 0) {
            started[index] = 1;
            return index;
          }
        }
        changed.wait(lock);
      }
    }
    void finish(std::size_t index, std::exception_ptr error)
    {
      {
        std::lock_guard const lock(mutex);
        errors[index] = std::move(error);
        done[index]   = 1;
      }
      changed.notify_all();
    }
    std::mutex mutex;
    std::condition_variable changed;
    std::vector<std::uint8_t> started;
    std::vector<std::uint8_t> done;
    std::vector<std::exception_ptr> errors;
    task_group group;
  };

  /// One restore's state, for its steps (restore_piece, await_copies).
  struct restore_pass {
    restore_pass(pool_residency& residency_, std::vector<std::size_t> const& pages_,
                 std::vector<piece> const& pieces_, wait_gate gate_, restore_result& out_)
      : residency(residency_),
        pages(pages_),
        pieces(pieces_),
        gate(gate_),
        out(out_),
        begun(pages_.size(), 0),
        run(pieces_.size())
    {
    }
    pool_residency& residency;
    std::vector<std::size_t> const& pages;
    std::vector<piece> const& pieces;
    wait_gate gate;
    restore_result& out;
    std::vector<std::uint8_t> begun;  // pages this restore mapped (restoring)
    run_state run;
    pending_copy pending;  // raw parts gathered into one copy
    std::size_t submitted{0};
  };

  /// Cancels `image`'s pending compression and waits for its jobs, so that every copy's
  /// chunks are published (the jobs still pending store the rest raw). Its jobs no worker
  /// has started run on this thread, cancelled: the restore never waits behind other
  /// pools' compression queued before them.
  void settle_compression(pool_image& image, wait_gate gate, restore_result& out)
  {
    detail::phase_timer const wait(out.times.wait);
    std::size_t const cut_before = image.cancelled_pages();
    image.cancel_compression();
    struct resume {
      pool_image& image;
      ~resume() { image.resume_compression(); }
    } const again{image};
    gate.outside([&] {
      (void)workers_->run_queued(image.jobs());
      image.jobs().wait();
    });
    out.compressions_cut_short = image.cancelled_pages() - cut_before;
  }

  /// Waits for piece `i` if its copy reads its staging slot (decoding others meanwhile),
  /// maps the run of pages it starts if they are not mapped yet, and issues its copies (raw
  /// parts gathered in pass.pending). A raw piece is copied at once and a zero piece's
  /// memset issued at once, each verified beside its copy (await_copies checks the outcome
  /// before any page counts as restored), so checksums never hold the link up. A
  /// compressed piece is decoded into its slot, so it is waited for.
  void restore_piece(restore_pass& pass, std::size_t i)
  {
    transfer_times& times = pass.out.times;
    top_up(pass.pieces, pass.run, pass.submitted, i, pass.gate, times, pass.pending);
    piece const& current    = pass.pieces[i];
    device_pool const& pool = pass.residency.pool();
    if (staged(*current.stored)) {  // its copy reads what the decode writes
      wait_for_piece(pass, i);
      if (pass.run.errors[i]) {
        throw_chunk_error(pool, pass.pages[current.page], current, pass.run.errors[i]);
      }
    }
    if (pass.begun[current.page] == 0) {
      issue_before_mapping(times);  // the link works while the pages are mapped
      detail::phase_timer const vmm(times.vmm);
      std::size_t const run = evicted_run(pool, pass.pages, current.page, pass.begun);
      pass.residency.begin_restore(pass.pages[current.page], run);
      std::fill_n(pass.begun.begin() + static_cast<std::ptrdiff_t>(current.page), run, 1);
    }
    std::size_t const slot = i % options_.staging_slots;
    detail::phase_timer const issue(times.issue);
    pass.out.bytes_copied += copy_piece(pool, current, staging_slot(slot), pass.pending);
    if (staged(*current.stored)) {  // the copy reads the slot: busy until it completes
      driver_->event_record(slot_events_[slot], to_device_);
      slot_busy_[slot] = true;
    }
  }

  /// Waits for piece `i` to be decoded, decoding unstarted ones meanwhile (the gathered
  /// copy is issued first, so that the link does not idle during the wait).
  void wait_for_piece(restore_pass& pass, std::size_t i)
  {
    transfer_times& times = pass.out.times;
    if (!pass.run.is_done(i)) { issue_raw_copies(pass.pending, times); }
    double decoding = 0;
    {
      detail::phase_timer const wait(times.wait);
      pass.gate.outside([&] {  // waits for piece i, decoding others meanwhile
        for (std::size_t help = 0;
             (help = pass.run.claim_or_wait(i, pass.submitted)) != pass.submitted;) {
          detail::phase_timer const decode(decoding);
          decode_piece(pass.pieces, pass.run, help);
        }
      });
    }
    times.wait -= decoding;
    times.codec += decoding;
  }

  /// Issues the raw copies still gathered, maps the pages no piece was copied to, makes
  /// `stream` (if not null) wait for every
  /// copy, waits for the copies and the decoders (verifying unstarted raw pieces on this
  /// thread meanwhile), and throws the first piece's failure (restore_error), if any.
  void await_copies(restore_pass& pass, CUstream stream)
  {
    transfer_times& times = pass.out.times;
    issue_raw_copies(pass.pending, times);
    for (std::size_t i = 0; i < pass.pages.size(); ++i) {  // pages with no piece to copy
      detail::phase_timer const vmm(times.vmm);
      if (pass.begun[i] == 0) { pass.residency.begin_restore(pass.pages[i]); }
    }
    // Back in the pool only after the wait: the lock is released during it, and another
    // thread taking the event then would record it again (a stream's wait holds the
    // record it was given, so giving it back after that is safe).
    CUevent const done = events_->take();
    try {
      driver_->event_record(done, to_device_);
      if (stream != nullptr) { driver_->stream_wait_event(stream, done); }
      double verifying = 0;
      {
        detail::phase_timer const wait(times.wait);
        pass.gate.outside([&] {
          for (std::size_t index = 0; index < pass.submitted; ++index) {  // while copies run
            if (!pass.run.claim(index)) { continue; }
            detail::phase_timer const verify(verifying);
            decode_piece(pass.pieces, pass.run, index);
          }
          driver_->event_synchronize(done);  // the copies are in: their sources may be freed
          (void)workers_->run_queued(pass.run.group);  // claimed here already: no-ops
          pass.run.group.wait();                       // no worker touches `run` any more
        });
      }
      times.wait -= verifying;
      times.codec += verifying;
    } catch (...) {
      events_->give_back(done);
      throw;
    }
    events_->give_back(done);
    for (std::size_t index = 0; index < pass.pieces.size(); ++index) {  // raw pieces' checks
      if (!pass.run.errors[index]) { continue; }
      piece const& failed = pass.pieces[index];
      throw_chunk_error(pass.residency.pool(), pass.pages[failed.page], failed,
                        pass.run.errors[index]);
    }
  }

  /// One eviction's state: the pages with copies in flight, and what was done.
  /// `window` comes before `out`: a deque's construction allocates and may throw, and
  /// built first it leaves nothing to destroy when it does (GCC 12 -O3 reports the string
  /// in `out` "may be used uninitialized" in that cleanup when `out` is built first).
  struct evict_pass {
    pool_residency& residency;
    pool_image& image;
    codec_choice choice;  // `defer` ends when the budget runs short (allocate_waiting)
    wait_gate gate;
    std::deque<in_flight> window;
    evict_result out;
    std::exception_ptr unmap_error;  // the first unmap that failed (reported at the end)
    pending_evict_copy pending;      // live ranges gathered into one copy, not issued yet
  };

  /// Scratch of one compression or decompression job, reused across jobs.
  struct job_scratch {
    codec_scratch codec;
    std::vector<std::byte> out;
  };

  /// Makes the engine ready: creates its streams, staging ring and events on first use,
  /// and waits for copies a failed evict or restore left behind before their memory (store
  /// extents, staging slots) is reused.
  void ensure_ready()
  {
    if (to_host_unsettled_) {
      driver_->stream_synchronize(to_host_);
      give_back_unsettled();
    }
    if (to_device_unsettled_) {
      driver_->stream_synchronize(to_device_);
      std::fill(slot_busy_.begin(), slot_busy_.end(), false);
      to_device_unsettled_ = false;
    }
    if (to_host_ != nullptr) { return; }
    CUstream const to_host = driver_->stream_create(CU_STREAM_NON_BLOCKING);
    CUstream to_device     = nullptr;
    try {
      to_device = driver_->stream_create(CU_STREAM_NON_BLOCKING);
      staging_  = driver_->host_alloc(options_.staging_slots * max_chunk_bytes);
      while (slot_events_.size() < options_.staging_slots) {
        slot_events_.push_back(driver_->event_create());
      }
      unsettled_.reserve(options_.window_pages);
    } catch (...) {
      for (CUevent event : slot_events_) {
        (void)driver_->table().cuEventDestroy(event);
      }
      slot_events_.clear();
      if (staging_ != nullptr) { (void)driver_->table().cuMemFreeHost(staging_); }
      staging_ = nullptr;
      if (to_device != nullptr) { (void)driver_->table().cuStreamDestroy(to_device); }
      (void)driver_->table().cuStreamDestroy(to_host);
      throw;
    }
    slot_busy_.assign(options_.staging_slots, false);
    to_host_   = to_host;
    to_device_ = to_device;
  }

  /// The copy stream's earlier copies are known to be done: their extents go back.
  void give_back_unsettled() noexcept
  {
    for (host_extent const& extent : unsettled_) {
      store_->deallocate(extent);
    }
    unsettled_.clear();
    to_host_unsettled_ = false;
  }

  [[nodiscard]] std::byte* staging_slot(std::size_t slot) const noexcept
  {
    return static_cast<std::byte*>(staging_) + slot * max_chunk_bytes;
  }

  [[nodiscard]] std::unique_ptr<job_scratch> take_scratch()
  {
    {
      std::lock_guard const lock(scratch_mutex_);
      if (!scratch_.empty()) {
        auto reused = std::move(scratch_.back());
        scratch_.pop_back();
        return reused;
      }
    }
    auto fresh = std::make_unique<job_scratch>();
    fresh->out.resize(max_stored_bytes(max_chunk_bytes));
    return fresh;
  }

  void give_scratch(std::unique_ptr<job_scratch> used) noexcept
  {
    std::lock_guard const lock(scratch_mutex_);
    try {
      scratch_.push_back(std::move(used));
    } catch (...) {  // NOLINT(bugprone-empty-catch): dropping a scratch loses nothing
    }
  }

  /// The live ranges of `page`, with free gaps of at most gap_bytes merged in; `data`
  /// gets the live bytes proper.
  [[nodiscard]] std::vector<live_range> live_ranges(device_pool const& pool, std::size_t page,
                                                    std::size_t& data) const
  {
    std::vector<live_range> ranges;
    pool.for_each_live_range(page, 1, [&](std::size_t, std::size_t offset, std::size_t bytes) {
      data += bytes;
      if (!ranges.empty() &&
          offset - (ranges.back().offset + ranges.back().bytes) <= options_.gap_bytes) {
        ranges.back().bytes = offset + bytes - ranges.back().offset;
        return;
      }
      ranges.push_back(live_range{offset, bytes});
    });
    return ranges;
  }

  /// An extent of `bytes`, waiting for this image's compression jobs (which give raw bytes
  /// back) while the budget is short. A deferring eviction stops deferring then: the
  /// budget needs compression, so this pool's raw copies are handed to it, each as its
  /// checksum job publishes it, and the rest of the eviction compresses behind. Empty when
  /// it cannot be had.
  [[nodiscard]] host_extent allocate_waiting(evict_pass& pass, std::size_t bytes)
  {
    for (;;) {
      host_extent extent = store_->allocate(bytes);
      if (extent) { return extent; }
      pass.choice.defer = false;
      (void)compress_deferred(pass.residency, pass.choice);
      std::size_t const pending = pass.image.jobs().pending();
      if (pending == 0) { return {}; }
      {
        detail::phase_timer const issue(pass.out.times.issue);
        issue_gathered(pass);  // the link copies while the jobs run
        to_host_batch_.issue(*driver_, to_host_);
      }
      detail::phase_timer const wait(pass.out.times.wait);
      pass.gate.outside([&] { pass.image.jobs().wait_until_at_most(pending - 1); });
    }
  }

  /**
   * Starts copying `copy`'s live bytes of `page` into a host extent, or, when the budget
   * cannot hold them raw, compresses them synchronously. Returns false (nothing stored,
   * the page stays resident) if even the compressed page does not fit.
   */
  bool start_copy(evict_pass& pass, std::size_t page, std::unique_ptr<page_copy> copy)
  {
    copy->packed = allocate_waiting(pass, copy->live_bytes);
    if (!copy->packed) {
      while (!pass.window.empty()) {
        retire(pass);
      }  // their raw bytes may yet be compressed
      detail::phase_timer const wait(pass.out.times.wait);
      pass.gate.outside([&] { pass.image.jobs().wait_until_at_most(0); });
      copy->packed = store_->allocate(copy->live_bytes);
    }
    if (!copy->packed) { return evict_compressed_now(pass, page, std::move(copy)); }
    try {
      pass.window.push_back(in_flight{page, std::move(copy), nullptr});
    } catch (...) {  // no copy was issued: the extent goes straight back
      if (copy) { store_->deallocate(copy->packed); }
      throw;
    }
    page_copy const& issued = *pass.window.back().copy;  // from here the rollback frees it
    {
      detail::phase_timer const issue(pass.out.times.issue);
      std::size_t packed_at = 0;
      for (live_range const& range : issued.ranges) {
        gather(pass, issued.packed.data + packed_at, pass.residency.pool().base() + range.offset,
               range.bytes);
        packed_at += range.bytes;
      }
    }
    while (pass.window.size() >= options_.window_pages) {
      retire(pass);
    }
    return true;
  }

  /// Adds a live range of the newest page to the gathered copy when it continues it on
  /// both sides within gather_bytes; else issues the gathered copy, with an event behind it
  /// on the page before the newest (gathered whole), and starts another with the range.
  /// Issue 14: "evict copies coalesced runs of >= 8 MiB where the live ranges allow": one
  /// call per 8 MiB, and an event per copy, instead of both per 2 MiB page.
  void gather(evict_pass& pass, std::byte* target, CUdeviceptr source, std::size_t bytes)
  {
    pending_evict_copy& pending = pass.pending;
    if (pending.extend(target, source, bytes)) { return; }
    if (pending.bytes != 0) {
      issue_gathered(pass);
      if (pass.window.size() >= 2) { mark_copied(pass.window[pass.window.size() - 2]); }
    }
    pending = pending_evict_copy{target, source, bytes};
  }

  /// Issues the gathered copy (if any).
  void issue_gathered(evict_pass& pass)
  {
    pending_evict_copy const pending = std::exchange(pass.pending, pending_evict_copy{});
    if (pending.bytes != 0) {
      to_host_batch_.add(*driver_, to_host_, reinterpret_cast<std::uintptr_t>(pending.target),
                         pending.source, pending.bytes);
    }
  }

  /// Records an event behind the copies issued so far on `entry`, whose copies are all
  /// issued, unless it has one. On a throw, abandon gives the event back. Its caller
  /// times it (issue).
  void mark_copied(in_flight& entry)
  {
    if (entry.event != nullptr) { return; }
    to_host_batch_.issue(*driver_, to_host_);  // the event comes after every copy issued
    entry.event = events_->take();
    driver_->event_record(entry.event, to_host_);
  }

  /// Waits for the copies of the oldest pages, then finishes the eviction of every page
  /// whose copy has completed, adjacent pages with one unmap (finish_run). Between pages
  /// only: the newest page is gathered whole.
  void retire(evict_pass& pass)
  {
    std::deque<in_flight>& window = pass.window;
    auto first                    = std::find_if(window.begin(), window.end(),
                                                 [](in_flight const& entry) { return entry.event != nullptr; });
    {
      detail::phase_timer const issue(pass.out.times.issue);
      if (first == window.end()) {
        issue_gathered(pass);
        mark_copied(window.back());
        first = std::prev(window.end());
      }
      to_host_batch_.issue(*driver_, to_host_);  // later pages' copies run during the wait
    }
    {
      detail::phase_timer const wait(pass.out.times.wait);
      pass.gate.outside([&] { driver_->event_synchronize(first->event); });
    }
    auto done = static_cast<std::size_t>(first - window.begin()) + 1;
    for (std::size_t later = done; later < window.size(); ++later) {  // completed meanwhile
      if (window[later].event == nullptr) { continue; }
      if (!driver_->event_query(window[later].event)) { break; }
      done = later + 1;
    }
    while (done > 0) {
      std::size_t run = 1;
      while (run < done && window[run].page == window[run - 1].page + 1) {
        ++run;
      }
      finish_run(pass, run);
      done -= run;
    }
  }

  /// The copies of the window's `run` oldest pages, adjacent, have completed: the pages
  /// are unmapped and evicted with them (pool_residency::evict_copied_run), and a worker
  /// compresses each behind. A page whose unmap fails stays resident, its copy freed, and
  /// the failure is reported at the end of the eviction.
  void finish_run(evict_pass& pass, std::size_t run)
  {
    std::deque<in_flight>& window = pass.window;
    std::vector<std::unique_ptr<page_copy>> copies;
    copies.reserve(run);
    for (std::size_t i = 0; i < run; ++i) {
      copies.push_back(std::move(window[i].copy));
    }
    pool_residency::run_eviction evicted;
    try {
      detail::phase_timer const vmm(pass.out.times.vmm);
      evicted = pass.residency.evict_copied_run(window.front().page, copies);
    } catch (...) {  // nothing changed: the copies go back to the window, which abandon frees
      for (std::size_t i = 0; i < run; ++i) {
        window[i].copy = std::move(copies[i]);
      }
      throw;
    }
    for (std::size_t i = 0; i < run; ++i) {
      if (window.front().event != nullptr) { events_->give_back(window.front().event); }
      window.pop_front();
    }
    if (evicted.error && !pass.unmap_error) { pass.unmap_error = evicted.error; }
    for (page_copy* installed : evicted.installed) {
      if (installed != nullptr) { compress_behind(pass, *installed); }
    }
  }

  /// A failed eviction: the extents of the copies still in flight go back once the copy
  /// stream is known to be idle, now or, if this wait fails too, at the start of the next
  /// transfer (ensure_ready). Their pages stay resident.
  void abandon(evict_pass& pass) noexcept
  {
    bool const idle = driver_->table().cuStreamSynchronize(to_host_) == CUDA_SUCCESS;
    for (in_flight& pending : pass.window) {
      if (idle) {
        store_->deallocate(pending.copy->packed);
      } else {
        unsettled_.push_back(pending.copy->packed);  // capacity reserved: no throw
      }
      if (pending.event != nullptr) { events_->give_back(pending.event); }
    }
    pass.window.clear();
    to_host_unsettled_ = !idle;
  }

  /// `installed`, a page's copy, was installed as it was evicted: counted, and a worker
  /// compresses it behind, or with the choice's `defer` only checksums it.
  void compress_behind(evict_pass& pass, page_copy& installed)
  {
    ++pass.out.pages_copied;
    pass.out.live_bytes += installed.data_bytes;
    pass.out.bytes_copied += installed.live_bytes;
    pass.residency.count_evictions(1);
    pool_image& image     = pass.image;
    page_copy* const copy = &installed;
    std::optional<codec_id> codec;  // none: checksums only, compressed later
    if (!pass.choice.defer) {
      codec = image.codec_or([&] { return pick_codec(installed, pass.choice); });
    }
    workers_->submit(image.jobs(), [this, &image, copy, codec] { compress(image, *copy, codec); });
  }

  /// The pool's codec, from the choice or by sampling `copy`'s packed bytes.
  [[nodiscard]] codec_id pick_codec(page_copy const& copy, codec_choice const& choice)
  {
    if (choice.forced) { return *choice.forced; }
    std::vector<std::span<std::byte const>> samples;
    for (std::size_t at = 0; at < copy.live_bytes && samples.size() < 4; at += max_chunk_bytes) {
      samples.push_back(packed_chunk(copy, at));
    }
    auto scratch       = take_scratch();
    codec_id const won = choose_codec(choice.hint, samples, scratch->codec);
    give_scratch(std::move(scratch));
    return won;
  }

  /// Worker: compresses `copy`'s packed bytes chunk by chunk into their own extents, or,
  /// without a `codec`, checksums them and publishes the copy raw, deferred. A chunk that
  /// does not gain, or does not fit in the budget, stays raw inside `packed`.
  void compress(pool_image& image, page_copy& copy, std::optional<codec_id> codec) noexcept
  {
    auto scratch = codec ? take_scratch_noexcept() : nullptr;
    std::vector<stored_chunk> chunks;
    bool cut_short = false;               // by a restore's cancel
    bool raw_left  = scratch == nullptr;  // chunks left to compress later
    try {
      chunks = chunk_packed(copy, codec.value_or(codec_id::raw), scratch.get(), &image, cut_short);
    } catch (...) {  // out of host memory for the chunk list: every chunk raw, checksummed
      release_chunks(chunks);
      raw_left = true;
      try {
        chunks = chunk_packed(copy, codec_id::raw, nullptr, nullptr, cut_short);
      } catch (...) {  // NOLINT(bugprone-empty-catch): restore refuses a copy without chunks
        chunks.clear();
      }
    }
    if (cut_short) { image.count_cancelled_page(); }
    bool const later = raw_left || cut_short;
    if (scratch != nullptr) { give_scratch(std::move(scratch)); }
    bool const packed_needed = needs_packed(chunks);
    if (packed_needed) { back_to_raw(copy, chunks); }
    bool const deferred = later && !chunks.empty();
    image.publish(copy, std::move(chunks), packed_needed, deferred);
  }

  /// A copy whose `packed` extent stays (a chunk lies in it) gains nothing from its other
  /// chunks' encoded extents, which only add to it: they go back, and those chunks are
  /// raw in `packed` again (zero chunks hold nothing and stay). So compression takes
  /// effect for a whole copy or not at all, and a copy never holds more than its raw bytes.
  void back_to_raw(page_copy const& copy, std::vector<stored_chunk>& chunks) noexcept
  {
    for (stored_chunk& chunk : chunks) {
      if (!chunk.owned) { continue; }
      store_->deallocate(std::exchange(chunk.owned, host_extent{}));
      std::span<std::byte const> const raw(copy.packed.data + chunk.packed_offset,
                                           chunk.header.raw_bytes);
      chunk.header = raw_header(raw, chunk.header.checksum);
      chunk.data   = raw.data();
    }
  }

  /// Whether a copy with `chunks` still needs its `packed` extent: while a chunk lies in
  /// it, or when there are no chunks to replace it.
  [[nodiscard]] static bool needs_packed(std::vector<stored_chunk> const& chunks) noexcept
  {
    return chunks.empty() ||
           std::any_of(chunks.begin(), chunks.end(), [](stored_chunk const& chunk) {
             return chunk.header.codec == codec_id::raw;
           });
  }

  /// Worker: encodes the raw chunks of `copy` (published deferred) with the pool's codec,
  /// chosen here at its first compression, and publishes the copy again; `packed` goes
  /// back. A chunk whose bytes no longer match its checksum stays raw with it (the
  /// restore reports it), as does one that does not gain or fit; then the whole copy stays
  /// raw (back_to_raw). When a restore cancels compression meanwhile, the copy stays raw
  /// and deferred, for a later plan. Out of memory for the codec's choice or the scratch
  /// leaves it raw and not deferred: no plan retries it in a loop.
  void compress_raw_chunks(pool_image& image, page_copy& copy, codec_choice const& choice) noexcept
  {
    auto scratch = take_scratch_noexcept();
    std::vector<stored_chunk> chunks;
    codec_id codec = codec_id::raw;
    try {
      if (scratch == nullptr) { throw std::bad_alloc(); }
      codec  = image.codec_or([&] { return pick_codec(copy, choice); });
      chunks = copy.chunks;
    } catch (...) {  // NOLINT(bugprone-empty-catch): the copy stays raw, restorable
      if (scratch != nullptr) { give_scratch(std::move(scratch)); }
      return;
    }
    bool cut_short = false;
    for (stored_chunk& chunk : chunks) {
      if (chunk.header.codec != codec_id::raw || codec == codec_id::raw) { continue; }
      if (image.compression_cancelled()) {
        cut_short = true;
        break;
      }
      encode_raw_chunk(chunk, codec, *scratch);
    }
    give_scratch(std::move(scratch));
    if (cut_short) { image.count_cancelled_page(); }
    bool const packed_needed = needs_packed(chunks);
    if (packed_needed) { back_to_raw(copy, chunks); }
    image.publish(copy, std::move(chunks), packed_needed, cut_short);
  }

  /// `chunk` (raw, in `packed`) encoded with `codec`, when the encoding gains, its bytes
  /// still match its checksum, and the budget holds it; else unchanged.
  void encode_raw_chunk(stored_chunk& chunk, codec_id codec, job_scratch& scratch) noexcept
  {
    std::span<std::byte const> const raw(chunk.data, chunk.header.raw_bytes);
    try {
      chunk_header const encoded = encode_chunk(codec, raw, scratch.out, scratch.codec);
      if (encoded.checksum != chunk.header.checksum || encoded.codec == codec_id::raw) { return; }
      (void)store_encoded(chunk, encoded, scratch.out);
    } catch (...) {  // NOLINT(bugprone-empty-catch): a codec or host failure keeps it raw
    }
  }

  /// `chunk` becomes `encoded`, whose bytes are in `out`: a zero chunk holds none, another
  /// gets a pageable extent of its own (only the CPU reads it: host_store.hpp tiers).
  /// Returns false, `chunk` unchanged, when the budget has no room.
  /// @throws std::bad_alloc, cuda_error (host_store::allocate), `chunk` unchanged.
  bool store_encoded(stored_chunk& chunk, chunk_header const& encoded,
                     std::span<std::byte const> out)
  {
    host_extent owned;
    if (encoded.codec != codec_id::zero) {
      owned = store_->allocate(encoded.stored_bytes, host_tier::pageable);
      if (!owned) { return false; }
      std::memcpy(owned.data, out.data(), encoded.stored_bytes);
    }
    chunk.header = encoded;
    chunk.owned  = owned;
    chunk.data   = owned.data;
    return true;
  }

  /// The chunks of `copy`'s packed bytes: encoded with `codec` into extents of their own
  /// (with `scratch`), or without it, all raw in place. A chunk that does not gain, or does
  /// not fit in the budget, stays raw inside `packed`; so does every chunk after `image`'s
  /// compression is cancelled (then `cut_short` is set). @throws std::bad_alloc.
  [[nodiscard]] std::vector<stored_chunk> chunk_packed(page_copy const& copy, codec_id codec,
                                                       job_scratch* scratch,
                                                       pool_image const* image, bool& cut_short)
  {
    std::vector<stored_chunk> chunks;
    try {
      for (std::size_t at = 0; at < copy.live_bytes; at += max_chunk_bytes) {
        if (scratch != nullptr && image != nullptr && image->compression_cancelled()) {
          scratch   = nullptr;  // a restore waits: the rest stays raw
          cut_short = true;
        }
        std::span<std::byte const> const raw = packed_chunk(copy, at);
        stored_chunk chunk;
        chunk.packed_offset = at;
        chunk.data          = raw.data();
        if (scratch == nullptr) {
          chunk.header = raw_header(raw);
        } else {  // raw where it already is unless the encoding gains and fits the budget
          chunk_header const encoded = encode_chunk(codec, raw, scratch->out, scratch->codec);
          chunk.header               = raw_header(raw, encoded.checksum);
          if (encoded.codec != codec_id::raw) { (void)store_encoded(chunk, encoded, scratch->out); }
        }
        chunks.push_back(chunk);
      }
    } catch (...) {
      release_chunks(chunks);
      throw;
    }
    return chunks;
  }

  /// The raw bytes of the chunk of `copy` that starts at packed offset `at`.
  [[nodiscard]] static std::span<std::byte const> packed_chunk(page_copy const& copy,
                                                               std::size_t at) noexcept
  {
    return {copy.packed.data + at, std::min(max_chunk_bytes, copy.live_bytes - at)};
  }

  [[nodiscard]] std::unique_ptr<job_scratch> take_scratch_noexcept() noexcept
  {
    try {
      return take_scratch();
    } catch (...) {
      return nullptr;
    }
  }

  [[nodiscard]] static chunk_header raw_header(std::span<std::byte const> raw)
  {
    return raw_header(raw, checksum(raw));
  }
  [[nodiscard]] static chunk_header raw_header(std::span<std::byte const> raw, std::uint64_t sum)
  {
    return chunk_header{codec_id::raw, static_cast<std::uint32_t>(raw.size()),
                        static_cast<std::uint32_t>(raw.size()), sum};
  }

  /**
   * The host budget cannot hold `copy`'s raw bytes: copies them chunk by chunk through a
   * staging buffer and compresses each at once. Returns false (the page stays resident,
   * nothing stored) if the compressed page does not fit either.
   */
  bool evict_compressed_now(evict_pass& pass, std::size_t page, std::unique_ptr<page_copy> copy)
  {
    bool const stored_all = compress_now(pass, *copy);
    if (!stored_all) {
      release_chunks(copy->chunks);
      return false;
    }
    std::size_t const data_bytes = copy->data_bytes;
    std::size_t const live_bytes = copy->live_bytes;
    {
      detail::phase_timer const vmm(pass.out.times.vmm);
      pass.residency.evict_copied(page, std::move(copy));  // frees the chunks if it throws
    }
    pass.out.live_bytes += data_bytes;
    pass.out.bytes_copied += live_bytes;
    ++pass.out.pages_copied;
    pass.residency.count_evictions(1);
    return true;
  }

  /// evict_compressed_now's chunks: false as soon as one does not fit in the budget.
  bool compress_now(evict_pass& pass, page_copy& copy)
  {
    auto scratch = take_scratch();
    try {
      for (std::size_t at = 0; at < copy.live_bytes; at += max_chunk_bytes) {
        std::size_t const length = std::min(max_chunk_bytes, copy.live_bytes - at);
        transfer_times& times    = pass.out.times;
        {
          detail::phase_timer const issue(times.issue);
          for_each_part(
            copy, at, length, [&](std::size_t offset, std::size_t into, std::size_t bytes) {
              driver_->memcpy_dtoh_async(staging_slot(0) + into,
                                         pass.residency.pool().base() + offset, bytes, to_host_);
            });
        }
        {
          detail::phase_timer const wait(times.wait);
          pass.gate.outside([&] { driver_->stream_synchronize(to_host_); });
        }
        std::span<std::byte const> const raw(staging_slot(0), length);
        codec_id const codec = pass.image.codec_or([&] {
          return pass.choice.forced
                   ? *pass.choice.forced
                   : choose_codec(pass.choice.hint, std::span(&raw, 1), scratch->codec);
        });
        stored_chunk chunk;
        chunk.packed_offset = at;
        {
          detail::phase_timer const encode(times.codec);
          chunk.header = encode_chunk(codec, raw, scratch->out, scratch->codec);
        }
        std::byte const* source =
          chunk.header.codec == codec_id::raw ? raw.data() : scratch->out.data();
        if (chunk.header.codec != codec_id::zero) {
          // A raw chunk is copied to the device from where it lies: pinned; an encoded one
          // is decoded by the CPU first: pageable.
          host_tier const tier =
            chunk.header.codec == codec_id::raw ? host_tier::pinned : host_tier::pageable;
          chunk.owned = store_->allocate(chunk.header.stored_bytes, tier);
          if (!chunk.owned) {
            give_scratch(std::move(scratch));
            return false;
          }
          std::memcpy(chunk.owned.data, source, chunk.header.stored_bytes);
          chunk.data = chunk.owned.data;
        }
        copy.chunks.push_back(chunk);
      }
    } catch (...) {
      release_chunks(copy.chunks);
      throw;
    }
    give_scratch(std::move(scratch));
    return true;
  }

  /// The pieces of a restore of `pages` from `image`: every chunk of every page, in order.
  /// @throws restore_error for a page whose chunks do not cover its bytes (the pool stays
  ///         evicted); std::logic_error for a page without a copy (a bug).
  [[nodiscard]] static std::vector<piece> restore_pieces(device_pool const& pool, pool_image& image,
                                                         std::vector<std::size_t> const& pages)
  {
    std::vector<piece> pieces;
    for (std::size_t i = 0; i < pages.size(); ++i) {
      page_copy const* const copy = image.find(pages[i]);
      if (copy == nullptr) {
        throw std::logic_error("swapalloc: restore: page " + std::to_string(pages[i]) +
                               " of pool '" + pool.name() + "' has no host copy");
      }
      std::size_t covered = 0;
      for (std::size_t c = 0; c < copy->chunks.size(); ++c) {
        if (copy->chunks[c].packed_offset != covered) { break; }
        covered += copy->chunks[c].header.raw_bytes;
        pieces.push_back(piece{i, c, copy, &copy->chunks[c]});
      }
      if (covered != copy->live_bytes) {
        throw restore_error(
          "swapalloc: restore(pool '" + pool.name() + "'): page " + std::to_string(pages[i]) +
          " has chunks for " + std::to_string(covered) + " of its " +
          std::to_string(copy->live_bytes) + " bytes; the pool stays evicted with its host copies");
      }
    }
    return pieces;
  }

  /**
   * Submits decodes up to staging_slots pieces ahead of the copies. A piece's slot is free
   * again once the copy out of it (staging_slots pieces earlier) has completed: only
   * queried, and waited for only when the very piece the copies need next (`needed`) is
   * still unsubmitted, so copies stay queued back to back on the link.
   */
  void top_up(std::vector<piece> const& pieces, run_state& run, std::size_t& submitted,
              std::size_t needed, wait_gate gate, transfer_times& times, pending_copy& pending)
  {
    while (submitted < pieces.size() && submitted < needed + options_.staging_slots) {
      std::size_t const index = submitted;
      std::size_t const slot  = index % options_.staging_slots;
      if (slot_busy_[slot]) {
        if (index > needed && !driver_->event_query(slot_events_[slot])) { return; }
        if (index == needed) {
          issue_raw_copies(pending, times);
          detail::phase_timer const wait(times.wait);
          gate.outside([&] { driver_->event_synchronize(slot_events_[slot]); });
        }
        slot_busy_[slot] = false;
      }
      workers_->submit(
        run.group,
        [this, &run, &pieces, index] {
          if (run.claim(index)) { decode_piece(pieces, run, index); }
        },
        task_priority::urgent);  // the restore waits for it: before background compression
      ++submitted;
    }
  }

  /// How many pages to map at once from index `first` of `pages`: the run of consecutive,
  /// evicted, not yet begun pages there, at most map_run_pages (1 if the first is not
  /// evicted). One cuMemSetAccess per run instead of per page (PyTorch's expandable segments
  /// map the same way), and the run is short enough that its copies still follow soon.
  [[nodiscard]] static std::size_t evicted_run(device_pool const& pool,
                                               std::vector<std::size_t> const& pages,
                                               std::size_t first,
                                               std::vector<std::uint8_t> const& begun) noexcept
  {
    std::size_t run = 1;
    if (pool.page(pages[first]) != page_state::evicted) { return run; }
    while (run < map_run_pages && first + run < pages.size() &&
           pages[first + run] == pages[first] + run && begun[first + run] == 0 &&
           pool.page(pages[first + run]) == page_state::evicted) {
      ++run;
    }
    return run;
  }

  /// Pages a restore maps together (evicted_run).
  static constexpr std::size_t map_run_pages = 16;

  /// A failed restore: waits for the decoders and the copy stream, then unmaps every page
  /// of `pages` that is mapped but not filled (restoring) again. If the stream cannot be
  /// waited for, its copies may still be writing into those pages: they stay mapped (and
  /// restoring, their copies intact) and the staging slots busy, until the next transfer
  /// has waited for the stream (ensure_ready); the next restore fills them.
  void abandon_restore(pool_residency& residency, std::vector<std::size_t> const& pages,
                       run_state& run) noexcept
  {
    try {
      run.group.wait();
    } catch (...) {  // NOLINT(bugprone-empty-catch): the first error is the one rethrown
    }
    to_device_unsettled_ = driver_->table().cuStreamSynchronize(to_device_) != CUDA_SUCCESS;
    if (to_device_unsettled_) { return; }
    std::fill(slot_busy_.begin(), slot_busy_.end(), false);
    for (std::size_t const page : pages) {
      if (residency.pool().page(page) == page_state::restoring) {
        (void)residency.abort_restore(page);
      }
    }
  }

  /// Gives the chunks' own extents back to the store and forgets the chunks.
  void release_chunks(std::vector<stored_chunk>& chunks) noexcept
  {
    for (stored_chunk const& chunk : chunks) {
      if (chunk.owned) { store_->deallocate(chunk.owned); }
    }
    chunks.clear();
  }

  [[nodiscard]] std::string refusal(device_pool const& pool, std::size_t kept) const
  {
    std::string text =
      "swapalloc: evict(pool '" + pool.name() + "'): the host budget of " +
      std::to_string(store_->limit_bytes()) + " bytes is exhausted (" +
      std::to_string(store_->used_bytes()) + " in use); " + std::to_string(kept) +
      " pages stay resident, nothing stored was dropped (raise SWAPALLOC_HOST_LIMIT)";
    return text;  // the caller logs it (the allocator's event log: a refusal event)
  }

  /// Calls `visit(pool_offset, packed_into_chunk, bytes)` for each part of the live ranges
  /// of `copy` that falls in the packed bytes [at, at + length).
  template <typename Visitor>
  static void for_each_part(page_copy const& copy, std::size_t at, std::size_t length,
                            Visitor&& visit)
  {
    std::size_t packed = 0;
    for (live_range const& range : copy.ranges) {
      std::size_t const start = std::max(packed, at);
      std::size_t const stop  = std::min(packed + range.bytes, at + length);
      if (start < stop) { visit(range.offset + (start - packed), start - at, stop - start); }
      packed += range.bytes;
      if (packed >= at + length) { return; }
    }
  }

  /// Worker (or the restoring thread): decodes piece `index` into its staging slot (or
  /// verifies a raw chunk in place), and finishes it in `run`. @pre the caller claimed it.
  void decode_piece(std::vector<piece> const& pieces, run_state& run, std::size_t index) noexcept
  {
    piece const& work     = pieces[index];
    std::byte* const slot = staging_slot(index % options_.staging_slots);
    std::exception_ptr error;
    auto scratch = take_scratch_noexcept();
    try {
      stored_chunk const& chunk = *work.stored;
      if (scratch == nullptr) { throw std::bad_alloc(); }
      if (chunk.header.codec == codec_id::raw) {
        std::span<std::byte const> const stored(chunk.data, chunk.header.raw_bytes);
        if (checksum(stored) != chunk.header.checksum) {
          throw codec_error("raw chunk: checksum mismatch (the stored bytes changed)");
        }
      } else {  // a zero chunk's copy is a device memset: it decodes (and is verified) in
                // the job's scratch, never in a slot another piece's copy may still read
        std::span<std::byte const> const stored(chunk.data, chunk.header.stored_bytes);
        std::span<std::byte> const target =
          staged(chunk) ? std::span(slot, max_chunk_bytes) : std::span(scratch->out);
        decode_chunk(chunk.header, stored, target, scratch->codec);
      }
    } catch (...) {
      error = std::current_exception();
    }
    if (scratch != nullptr) { give_scratch(std::move(scratch)); }
    run.finish(index, error);
  }

  /// Copies are gathered up to this size, an evict's live ranges and a restore's raw parts:
  /// one call and one per-copy gap per 8 MiB instead of per page or chunk
  /// (../shared/notes/gpu-speed.md §3.3).
  static constexpr std::size_t gather_bytes = std::size_t{8} << 20;

  /// Adds `pending`, if it holds bytes, to the restore's batch (issued once it holds
  /// gather_bytes, and before each map and wait: issue_before_mapping, issue_raw_copies).
  void flush(pending_copy& pending)
  {
    if (pending.bytes == 0) { return; }
    to_device_batch_.add(*driver_, to_device_, pending.target,
                         reinterpret_cast<std::uintptr_t>(pending.source), pending.bytes);
    pending.bytes = 0;
  }

  /// Issues the restore's batch of raw copies before the calling thread maps pages, so
  /// that the link has them meanwhile; the gathered copy (`pending`) may still grow.
  void issue_before_mapping(transfer_times& times)
  {
    detail::phase_timer const issue(times.issue);
    to_device_batch_.issue(*driver_, to_device_);
  }

  /// Issues every raw copy of the restore so far, the gathered one (`pending`) included,
  /// before the calling thread waits: the link has them meanwhile.
  void issue_raw_copies(pending_copy& pending, transfer_times& times)
  {
    detail::phase_timer const issue(times.issue);
    flush(pending);
    to_device_batch_.issue(*driver_, to_device_);
  }

  /// True when a piece's copy reads its staging slot (it was decoded into it).
  [[nodiscard]] static bool staged(stored_chunk const& chunk) noexcept
  {
    return chunk.header.codec != codec_id::raw && chunk.header.codec != codec_id::zero;
  }

  /// Enqueues the device writes of one decoded piece, gathering raw parts into `pending`
  /// (issued by `flush`); returns the bytes moved over the link.
  std::size_t copy_piece(device_pool const& pool, piece const& work, std::byte const* slot,
                         pending_copy& pending)
  {
    stored_chunk const& chunk = *work.stored;
    std::size_t moved         = 0;
    for_each_part(*work.copy, chunk.packed_offset, chunk.header.raw_bytes,
                  [&](std::size_t offset, std::size_t into, std::size_t bytes) {
                    CUdeviceptr const target = pool.base() + offset;
                    moved += chunk.header.codec == codec_id::zero ? 0 : bytes;
                    if (chunk.header.codec == codec_id::zero) {
                      driver_->memset_d8_async(target, 0, bytes, to_device_);
                    } else if (chunk.header.codec != codec_id::raw) {
                      driver_->memcpy_htod_async(target, slot + into, bytes, to_device_);
                    } else if (!pending.extend(target, chunk.data + into, bytes)) {
                      flush(pending);
                      pending = {target, chunk.data + into, bytes};
                    }
                  });
    return moved;
  }

  [[noreturn]] static void throw_chunk_error(device_pool const& pool, std::size_t page,
                                             piece const& work, std::exception_ptr const& error)
  {
    std::string why;
    try {
      std::rethrow_exception(error);
    } catch (std::exception const& caught) {
      why = caught.what();
    } catch (...) {
      why = "unknown error";
    }
    throw restore_error("swapalloc: restore(pool '" + pool.name() + "'): page " +
                        std::to_string(page) + " (address " + hex(pool.page_address(page)) +
                        "), chunk " + std::to_string(work.chunk) + " (" +
                        std::string(to_string(work.stored->header.codec)) + ", " +
                        std::to_string(work.stored->header.raw_bytes) + " raw bytes): " + why +
                        "; the page stays evicted with its host copy");
  }

  driver const* driver_;
  host_store* store_;
  worker_pool* workers_;
  event_pool* events_;
  transfer_options options_;
  CUstream to_host_{nullptr};
  CUstream to_device_{nullptr};
  detail::copy_batch to_host_batch_;    // an eviction's copies not issued yet
  detail::copy_batch to_device_batch_;  // a restore's raw copies not issued yet
  void* staging_{nullptr};
  std::vector<CUevent> slot_events_;
  std::vector<bool> slot_busy_;
  // Extents of a failed evict whose stream could not be waited for (see ensure_ready).
  std::vector<host_extent> unsettled_;
  bool to_host_unsettled_{false};
  bool to_device_unsettled_{false};  // a failed restore could not wait for its copies
  mutable std::mutex scratch_mutex_;
  std::vector<std::unique_ptr<job_scratch>> scratch_;
};

}  // namespace swapalloc
