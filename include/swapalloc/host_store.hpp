/**
 * @file host_store.hpp
 * @brief The host tier's memory (DESIGN §7): a budgeted arena of host slabs, pinned for
 *        what the link reads and writes and pageable for what only the CPU reads, cut into
 *        256-byte-aligned extents for evicted pages and their compressed chunks.
 *
 * A `host_store` takes host memory in slabs and hands out extents inside them. Two tiers:
 * - **pinned** slabs hold what DMA touches: raw page copies. They are pinned by
 *   `host_store_options::pin` (detail/host_pinning.hpp): registered (mmap, a first touch
 *   of every page by `touch_threads` threads, cuMemHostRegister) where the device
 *   supports it (CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED), else cuMemHostAlloc. Flags
 *   0 either way: one store serves one device, so PORTABLE is not needed. A register the
 *   driver refuses as not supported or not permitted switches the store to cuMemHostAlloc
 *   for good (`pinning()` says which).
 * - **pageable** slabs (page-aligned operator new) hold compressed chunks, which only the
 *   CPU decodes, so the pinned footprint is the raw working set only. A pageable request
 *   falls back to room in pinned slabs when the budget has no room for a pageable slab.
 * With `pinned` false (tests, no driver) every slab is pageable.
 *
 * **Warm slabs.** Pinning is slow (cuMemHostAlloc 0.34 ms/MiB on an H100 host, registering
 * about a third of that: ../shared/notes/gpu-speed.md [DYN]; the driver locks and maps every
 * page) and freeing pinned memory synchronizes the device (cudaFreeHost and
 * cudaHostUnregister; torch/cutorch#618). So an emptied pinned slab is kept *warm*, up
 * to `warm_bytes` of them, for the next eviction to fill without a driver call; it is
 * given back by `trim` once idle for `idle_release`, by `release_empty` (empty_cache, host
 * memory pressure) and at destruction, never by deallocate. Past `warm_bytes`, or with
 * `warm_bytes` 0, an emptied slab is freed at once, inside the deallocate that empties it.
 * An emptied pageable slab is always freed at once (no sync, cheap).
 *
 * **Pinned ahead of need.** `prepin` pins warm slabs until a given amount of pinned room
 * is free, from a thread that issues no copies (the pressure monitor's, through
 * allocator::prepin_host, once the device nears its watermark), so that an eviction finds
 * its room pinned; `trim` then keeps that reserve. An allocate that needs a new pinned
 * slab while another thread pins one waits for that pin and tries its slab first, rather
 * than pinning a second: it would have waited as long for a pin of its own.
 *
 * Held memory that the store no longer needs must go back to the system
 * (torch_memory_saver issue 90 is what happens when it does not): warm slabs count
 * against the budget like any other.
 *
 * The budget: `limit_bytes` bounds the memory the store *holds* (slabs), not only what
 * it hands out, because held pinned memory is what hurts the host. So the invariant is
 *   used_bytes() <= slab_bytes_held() <= limit_bytes()
 * and a request that fits in no slab gets a new slab only if the slab fits under the
 * limit. A new slab is `slab_bytes` (a request larger than that: its size rounded up to
 * 2 MiB), trimmed to what the limit has left but never below the request; past that the
 * request is refused: `allocate` returns an empty extent and counts a refusal. Refusing
 * is not an error: at the budget, eviction is refused and nothing stored is dropped.
 *
 * Contexts: the real driver needs a current context for cuMemHostAlloc, cuMemFreeHost and
 * cuMemHostRegister.
 * In pinned mode the constructing thread must have the device's context current; the
 * store remembers it and makes it current around its own driver calls on threads that
 * have another or none (compression workers free extents, and the last free of a slab
 * may unpin it), restoring the thread's previous context afterwards.
 *
 * Costs: allocate is first-fit over the slabs of its tier in slab order, each a free list
 * ordered by offset (std::map<offset, size>, coalesced): O(free ranges) per call. First
 * fit at the lowest address keeps later slabs empty, so they can be given back. deallocate
 * and shrink are O(log free ranges). A new pinned slab is pinned with the store's mutex
 * *released* (its budget and slot reserved first), so other threads' allocate and
 * deallocate are not held up by a pin; a free of a slab happens under the mutex, only at
 * trim, release_empty, destruction, or past the warm reserve.
 *
 * Thread safety: every member may be called from any thread concurrently (one mutex).
 */
#pragma once

#include <swapalloc/config.hpp>
#include <swapalloc/detail/host_pinning.hpp>
#include <swapalloc/driver.hpp>

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace swapalloc {

/// How a `host_store` is set up.
struct host_store_options {
  /// 0: half of physical RAM. (The allocator sets it from SWAPALLOC_HOST_LIMIT: config.hpp.)
  std::size_t limit_bytes{0};
  /// Slab size (rounded up to 256 bytes; in a pinned store, to whole host pages); a request
  /// larger than a slab gets a slab of its own, its size rounded up to 2 MiB.
  std::size_t slab_bytes{std::size_t{64} << 20};
  /// false: pageable memory from the C++ heap (page-aligned operator new), no driver call.
  bool pinned{true};
  /// Bytes of empty pinned slabs kept warm for the next eviction (the budget still bounds
  /// all that is held). 0: an emptied slab is freed at once. The allocator keeps every one.
  std::size_t warm_bytes{0};
  /// `trim` frees a warm slab once it has been empty this long.
  std::chrono::milliseconds idle_release{std::chrono::seconds(10)};
  /// How pinned slabs are pinned (config.hpp pin_method); automatic: registered where the
  /// device supports it. (The allocator takes SWAPALLOC_HOST_PIN for automatic.)
  pin_method pin{pin_method::automatic};
  /// Threads that first-touch a slab to be registered; 0: the cores, at most 8. Larger
  /// values are clamped to 64 (detail::max_touch_threads).
  unsigned touch_threads{0};
};

/// A host store's counters at one moment (host_store::stats, allocator::host_stats).
struct host_store_stats {
  std::size_t limit_bytes{0};   ///< the budget
  std::size_t used_bytes{0};    ///< handed out, by rounded sizes
  std::size_t held_bytes{0};    ///< slabs held, warm ones included
  std::size_t pinned_bytes{0};  ///< of those, pinned
  std::size_t warm_bytes{0};    ///< of those, empty and kept warm
  std::size_t pins{0};          ///< slabs pinned so far
  double pin_seconds{0};        ///< seconds spent pinning them (mmap and touch included)
  std::size_t refusals{0};      ///< requests refused
  /// How the next slab is pinned: host_register or host_alloc (pageable mode: host_alloc)
  pin_method pinning{pin_method::host_alloc};
};

/// Which memory an extent must be. Ignored by a store whose `pinned` option is false.
enum class host_tier : std::uint8_t {
  pinned,    ///< page-locked: the link reads or writes it (raw copies)
  pageable,  ///< ordinary memory: only the CPU touches it (compressed chunks)
};

/// A piece of host memory handed out by the store. A plain value; the store owns the
/// memory. `bytes` is the size asked for (the store holds it rounded up to 256).
struct host_extent {
  std::byte* data{nullptr};
  std::size_t bytes{0};
  std::uint32_t slab{0};  ///< internal: which slab (for deallocate)
  [[nodiscard]] explicit operator bool() const noexcept { return data != nullptr; }
};

/**
 * @brief A budgeted arena of pinned (or pageable) host memory for one device.
 *
 * See the file comment for the budget, the slab rule, costs and contexts.
 */
class host_store {
 public:
  using clock = std::chrono::steady_clock;

  /// Every extent starts at a multiple of this, and is held rounded up to it.
  static constexpr std::size_t alignment = 256;
  /// A request larger than a slab gets a slab of its size rounded up to this.
  static constexpr std::size_t oversize_granularity = std::size_t{2} << 20;

  /**
   * @brief Sets up an empty store; no memory is taken until the first allocate.
   * @pre pinned mode: the device's context is current on the calling thread.
   * @throws std::invalid_argument for a slab_bytes of 0 or a negative idle_release;
   *         std::logic_error in pinned mode when no context is current; cuda_error if the
   *         current context, its device or (to register) the device's
   *         CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED cannot be read.
   */
  explicit host_store(driver const& drv, host_store_options options = {})
    : drv_(&drv),
      pinned_(options.pinned),
      warm_limit_(options.warm_bytes),
      idle_release_(options.idle_release),
      touch_threads_(options.touch_threads != 0
                       ? std::min(options.touch_threads, detail::max_touch_threads)
                       : detail::default_touch_threads())
  {
    if (options.slab_bytes == 0) {
      throw std::invalid_argument("swapalloc: host_store slab_bytes=0: a slab must hold bytes");
    }
    if (options.idle_release.count() < 0) {
      throw std::invalid_argument(
        "swapalloc: host_store idle_release=" + std::to_string(options.idle_release.count()) +
        " ms: expected 0 or more milliseconds");
    }
    slab_bytes_ = round_up(options.slab_bytes, slab_granule());
    limit_      = options.limit_bytes;
    if (limit_ == 0) { limit_ = physical_memory_bytes() / 2; }
    if (pinned_) {
      context_ = drv_->current_context();
      if (context_ == nullptr) {
        throw std::logic_error(
          "swapalloc: host_store(pinned) needs the device's context current on the constructing "
          "thread: pinned memory belongs to a context (cuMemHostAlloc, cuMemHostRegister)");
      }
      method_ = resolve_pin_method(options.pin);
    }
  }

  host_store(host_store const&)            = delete;
  host_store& operator=(host_store const&) = delete;
  host_store(host_store&&)                 = delete;
  host_store& operator=(host_store&&)      = delete;

  /// Frees every slab, best effort (a failing free is ignored: nothing else can be done).
  /// @pre no extent is still used by a pending copy; no other thread uses the store.
  ~host_store()
  {
    for (slab_record& s : slabs_) {
      if (s.base != nullptr) { (void)free_slab({s.base, s.bytes, s.pinned_by}); }
    }
    for (held_slab const& h : pending_frees_) {
      (void)free_slab(h);
    }
  }

  /**
   * @brief `bytes` (> 0) of host memory of `tier`, 256-byte aligned, counted against the
   *        budget by its rounded size.
   *
   * Returns an empty extent, and counts a refusal, when the budget cannot hold it, when
   * the driver reports CUDA_ERROR_OUT_OF_MEMORY, or (pageable) when the heap is out of
   * memory: the caller decides (eviction is refused, not failed). A pageable request the
   * budget has no pageable slab for is placed in a pinned slab's room instead.
   * @pre pinned mode: none about contexts (the store's own is made current if needed).
   * @throws std::invalid_argument for 0 bytes; cuda_error if cuMemHostAlloc or
   *         cuMemHostRegister fails for another reason (the store is unchanged and usable);
   *         std::bad_alloc.
   */
  [[nodiscard]] host_extent allocate(std::size_t bytes, host_tier tier = host_tier::pinned)
  {
    if (bytes == 0) {
      throw std::invalid_argument("swapalloc: host_store::allocate(0): an extent holds bytes");
    }
    bool const want_pinned = pinned_ && tier == host_tier::pinned;
    std::unique_lock lock(mutex_);
    retry_pending_frees();
    if (bytes > limit_ - used_) { return refuse(); }
    std::size_t const rounded = round_up(bytes, alignment);  // <= limit_ - used_ + 255: no wrap
    if (rounded > limit_ - used_) { return refuse(); }
    if (host_extent found = first_fit(bytes, rounded, want_pinned)) { return found; }
    if (want_pinned) {
      if (host_extent found = wait_for_pins(lock, bytes, rounded)) { return found; }
    }
    if (host_extent made = allocate_in_new_slab(lock, bytes, rounded, want_pinned)) { return made; }
    if (!want_pinned && pinned_) {  // no budget for a pageable slab: room in a pinned one
      if (host_extent found = first_fit(bytes, rounded, true)) { return found; }
    }
    return refuse();
  }

  /**
   * @brief Gives `extent` back. A pinned slab that becomes empty is kept warm (see the file
   *        comment) or, past the warm reserve, freed at once; a pageable one is freed.
   *
   * A failing cuMemFreeHost (or cuMemHostUnregister) is remembered (the bytes stay counted as held)
   * and retried at the next allocate, deallocate, shrink, trim or release_empty and at destruction;
   * it is never thrown. An empty extent is ignored.
   * @pre `extent` came from this store's allocate or shrink and is live. A foreign or
   *      already freed extent is reported on stderr and aborts the process: the free
   *      lists would otherwise hand the same memory out twice.
   * @note Out of memory for a free-list node (only when the range has no free neighbour)
   *       terminates the process (noexcept).
   */
  void deallocate(host_extent extent) noexcept
  {
    if (!extent) { return; }
    std::lock_guard lock(mutex_);
    retry_pending_frees();
    std::size_t const rounded = round_up(extent.bytes, alignment);
    slab_record& s            = live_slab(extent, rounded, "deallocate");
    release_range(s.free, offset_in(s, extent), rounded);
    s.used -= rounded;
    used_ -= rounded;
    if (s.used == 0) { emptied(s); }
  }

  /**
   * @brief Shrinks a live extent in place to `bytes` (<= extent.bytes), returning its
   *        rounded tail to the store. `bytes` 0 frees the extent and returns an empty one.
   * @pre as for deallocate; `bytes` <= extent.bytes (else reported, and the process aborts).
   */
  [[nodiscard]] host_extent shrink(host_extent extent, std::size_t bytes) noexcept
  {
    if (!extent) { return extent; }
    if (bytes == 0) {
      deallocate(extent);
      return {};
    }
    std::lock_guard lock(mutex_);
    retry_pending_frees();
    std::size_t const old_rounded = round_up(extent.bytes, alignment);
    slab_record& s                = live_slab(extent, old_rounded, "shrink");
    if (bytes > extent.bytes) {
      contract_violation("shrink", extent,
                         "asks to grow it to " + std::to_string(bytes) + " bytes");
    }
    std::size_t const new_rounded = round_up(bytes, alignment);
    std::size_t const tail        = old_rounded - new_rounded;
    if (tail != 0) {
      release_range(s.free, offset_in(s, extent) + new_rounded, tail);
      s.used -= tail;
      used_ -= tail;
    }
    extent.bytes = bytes;
    return extent;
  }

  /**
   * @brief Pins slabs ahead of need, kept warm, until at least `bytes` of pinned room is
   *        free (the room of live and warm pinned slabs not handed out, plus the slabs
   *        being pinned), as far as the budget and the warm reserve allow. Slabs are
   *        `slab_bytes` each; a slab made here is given back by trim, release_empty and
   *        destruction like any other warm slab.
   *
   * Each pin runs with the store's mutex released, as in allocate. Call it off
   * the copy path (allocator::prepin_host does, from the pressure monitor's thread): a pin
   * holds the driver's lock ("cudaHostAlloc ... global lock in driver": PyTorch's
   * CachingHostAllocator.cpp), so copies issued meanwhile may wait behind it.
   * @return bytes pinned by this call: 0 in pageable mode, within `idle_release` of a
   *         release_empty, or when the room is free already, or the budget, the warm
   *         reserve, or the driver (out of memory) has no room for another slab.
   * @throws cuda_error if the pin fails for another reason (what this call pinned
   *         before stays warm; the store is usable); std::bad_alloc.
   */
  std::size_t prepin(std::size_t bytes)
  {
    if (!pinned_) { return 0; }
    std::unique_lock lock(mutex_);
    retry_pending_frees();
    if (clock::now() < prepin_after_) { return 0; }  // release_empty gave room back
    std::size_t made = 0;
    while (pinned_room() < bytes && slab_bytes_ <= limit_ - held_ &&
           slab_bytes_ <= warm_limit_ - std::min(warm_limit_, warm_held_)) {
      std::optional<std::size_t> const index = vacant_slot();
      if (!index) { break; }
      std::map<std::size_t, std::size_t> free{{0, slab_bytes_}};
      pending_frees_.reserve(pending_frees_.size() + live_slabs_ + pinning_ + freeing_ + 1);
      held_slab const pinned = pin_unlocked(lock, *index, slab_bytes_);
      if (pinned.base == nullptr) { break; }
      slab_record& s = install(*index, pinned, std::move(free));
      s.warm         = true;
      s.emptied      = clock::now();
      warm_held_ += s.bytes;
      made += s.bytes;
    }
    return made;
  }

  /**
   * @brief Frees the warm slabs that have been empty for `idle_release` or longer at `now`,
   *        except those needed to keep `keep_bytes` of pinned room free (the reserve
   *        prepin pins to). Call it off the transfer path (the pressure monitor does):
   *        each free synchronizes the device.
   * @return bytes freed (a free that fails is retried later and not counted).
   */
  std::size_t trim(clock::time_point now = clock::now(), std::size_t keep_bytes = 0) noexcept
  {
    return free_warm_if([&](slab_record const& s) {
      // pinned_room() counts `s` itself (warm: whole)
      return now - s.emptied >= idle_release_ && pinned_room() - s.bytes >= keep_bytes;
    });
  }

  /// @brief Frees every warm slab now (empty_cache; host memory pressure), and holds
  ///        prepin off for `idle_release`, so that room given back on purpose is not
  ///        pinned again at once. Each free synchronizes the device. @return bytes freed.
  std::size_t release_empty() noexcept
  {
    {
      std::lock_guard const lock(mutex_);
      prepin_after_ = clock::now() + idle_release_;
    }
    return free_warm_if([](slab_record const&) { return true; });
  }

  /// The budget: bytes of slabs the store may hold.
  [[nodiscard]] std::size_t limit_bytes() const noexcept { return limit_; }

  /// Bytes handed out, by their rounded sizes.
  [[nodiscard]] std::size_t used_bytes() const noexcept
  {
    std::lock_guard lock(mutex_);
    return used_;
  }

  /// Bytes of slabs held from the driver or the heap, including warm slabs, slabs being
  /// pinned, and slabs whose free failed and is still to be retried.
  [[nodiscard]] std::size_t slab_bytes_held() const noexcept
  {
    std::lock_guard lock(mutex_);
    return held_;
  }

  /// Bytes of pinned slabs held (a part of slab_bytes_held).
  [[nodiscard]] std::size_t pinned_bytes_held() const noexcept
  {
    std::lock_guard lock(mutex_);
    return pinned_held_;
  }

  /// Bytes of empty pinned slabs kept warm.
  [[nodiscard]] std::size_t warm_bytes_held() const noexcept
  {
    std::lock_guard lock(mutex_);
    return warm_held_;
  }

  /// The most bytes ever handed out at once.
  [[nodiscard]] std::size_t peak_used_bytes() const noexcept
  {
    std::lock_guard lock(mutex_);
    return peak_used_;
  }

  /// Allocate calls refused (budget, or out of memory in the driver or heap).
  [[nodiscard]] std::size_t refusals() const noexcept
  {
    std::lock_guard lock(mutex_);
    return refusals_;
  }

  /// Slabs pinned so far, and the seconds spent pinning them (all threads; a registered
  /// slab's mmap and first touch included).
  [[nodiscard]] std::size_t pins() const noexcept
  {
    std::lock_guard lock(mutex_);
    return pins_;
  }
  [[nodiscard]] double pin_seconds() const noexcept
  {
    std::lock_guard lock(mutex_);
    return pin_seconds_;
  }

  /// Every counter, read under one lock.
  [[nodiscard]] host_store_stats stats() const noexcept
  {
    std::lock_guard lock(mutex_);
    return {limit_, used_,        held_,     pinned_held_, warm_held_,
            pins_,  pin_seconds_, refusals_, method_};
  }

  /// True when slabs are pinned, false when pageable.
  [[nodiscard]] bool pinned() const noexcept { return pinned_; }

  /// How the next slab will be pinned: host_register or host_alloc (never automatic;
  /// host_alloc in pageable mode).
  [[nodiscard]] pin_method pinning() const noexcept
  {
    std::lock_guard lock(mutex_);
    return method_;
  }

  /// limit - used: an upper bound of what allocate can still give (slab trimming and
  /// fragmentation may give less).
  [[nodiscard]] std::size_t available_bytes() const noexcept
  {
    std::lock_guard lock(mutex_);
    return limit_ - used_;
  }

 private:
  // One slab. State per slab: a pointer, three sizes, an optional method, two flags, a time and
  // one map node per free range.
  struct slab_record {
    std::byte* base{nullptr};  // nullptr: a vacant slot (or one being pinned: `reserved`)
    std::size_t bytes{0};
    std::size_t used{0};                      // rounded bytes handed out from here
    std::optional<pin_method> pinned_by;      // how it was pinned; empty: pageable
    bool reserved{false};                     // the slot of a slab being pinned, unlocked
    bool warm{false};                         // empty and kept for the next eviction
    clock::time_point emptied{};              // when `used` last became 0 (warm slabs)
    std::map<std::size_t, std::size_t> free;  // offset -> size, coalesced, ordered by offset
  };
  struct held_slab {
    std::byte* base{nullptr};
    std::size_t bytes{0};
    std::optional<pin_method> pinned_by;  // how to give it back; empty: operator delete
  };

  [[nodiscard]] static constexpr std::size_t round_up(std::size_t value,
                                                      std::size_t multiple) noexcept
  {
    std::size_t const max = std::numeric_limits<std::size_t>::max() / multiple * multiple;
    return value > max ? max : (value + multiple - 1) / multiple * multiple;
  }

  host_extent refuse() noexcept
  {
    ++refusals_;
    return {};
  }

  host_extent hand_out(slab_record& s, std::size_t index, std::size_t offset, std::size_t bytes,
                       std::size_t rounded) noexcept
  {
    if (s.warm) {
      s.warm = false;
      warm_held_ -= s.bytes;
    }
    s.used += rounded;
    used_ += rounded;
    peak_used_ = std::max(peak_used_, used_);
    return {s.base + offset, bytes, static_cast<std::uint32_t>(index)};
  }

  // First fit over the live slabs of one tier. Lock held. Cost: O(free ranges).
  host_extent first_fit(std::size_t bytes, std::size_t rounded, bool in_pinned) noexcept
  {
    for (std::size_t index = 0; index < slabs_.size(); ++index) {
      slab_record& s = slabs_[index];
      if (s.base == nullptr || s.pinned_by.has_value() != in_pinned) { continue; }
      for (auto it = s.free.begin(); it != s.free.end(); ++it) {
        if (it->second < rounded) { continue; }
        std::size_t const offset = it->first;
        if (it->second == rounded) {
          s.free.erase(it);
        } else {
          // Re-key the node rather than erase and insert: no allocation, nothing can throw.
          auto node = s.free.extract(it);
          node.key() += rounded;
          node.mapped() -= rounded;
          s.free.insert(std::move(node));
        }
        return hand_out(s, index, offset, bytes, rounded);
      }
    }
    return {};
  }

  // Called with the lock held, when no slab of the tier has room for `rounded`; empty when
  // the budget, the heap or the driver has no room. Pinning runs with the lock released:
  // the slot and the budget are reserved first.
  host_extent allocate_in_new_slab(std::unique_lock<std::mutex>& lock, std::size_t bytes,
                                   std::size_t rounded, bool pin)
  {
    std::size_t const room = (limit_ - held_) / slab_granule() * slab_granule();
    std::size_t const desired =
      rounded > slab_bytes_ ? round_up(rounded, oversize_granularity) : slab_bytes_;
    std::size_t const size = std::min(desired, room);
    if (size < rounded) { return {}; }

    // Everything that can throw std::bad_alloc happens before memory is taken, so a
    // failure leaves nothing behind: the slot, the free-list node, and a place in
    // pending_frees_ for this slab should its free ever fail (deallocate is noexcept).
    std::optional<std::size_t> const index = vacant_slot();
    if (!index) { return {}; }
    std::map<std::size_t, std::size_t> free;
    if (size > rounded) { free.emplace(rounded, size - rounded); }
    // Slabs other threads are pinning or freeing meanwhile count: each may (again) fail its
    // free, and the push_back that remembers it must not allocate.
    pending_frees_.reserve(pending_frees_.size() + live_slabs_ + pinning_ + freeing_ + 1);

    held_slab const taken =
      pin ? pin_unlocked(lock, *index, size) : held_slab{take_pageable(size), size, std::nullopt};
    if (taken.base == nullptr) { return {}; }
    if (!pin) { held_ += size; }  // a pinned slab's bytes were reserved before pinning
    slab_record& s = install(*index, taken, std::move(free));
    return hand_out(s, *index, 0, bytes, rounded);
  }

  // The first slot free for a new slab, appended when there is none; nullopt past the
  // indices an extent can name. Lock held. @throws std::bad_alloc (nothing changed then).
  [[nodiscard]] std::optional<std::size_t> vacant_slot()
  {
    std::size_t index = 0;
    while (index < slabs_.size() && (slabs_[index].base != nullptr || slabs_[index].reserved)) {
      ++index;
    }
    if (index > std::numeric_limits<std::uint32_t>::max()) { return std::nullopt; }
    if (index == slabs_.size()) { slabs_.emplace_back(); }
    return index;
  }

  // Records a slab just taken (its bytes already counted as held) in slot `index`, with
  // the free ranges `free`. Lock held.
  slab_record& install(std::size_t index, held_slab taken,
                       std::map<std::size_t, std::size_t> free) noexcept
  {
    slab_record& s = slabs_[index];
    s.base         = taken.base;
    s.bytes        = taken.bytes;
    s.used         = 0;
    s.pinned_by    = taken.pinned_by;
    s.warm         = false;
    s.free         = std::move(free);
    ++live_slabs_;
    return s;
  }

  // Pinned room not handed out: the free ranges of live pinned slabs (warm ones whole) and
  // the slabs being pinned (of which an allocate pinning one takes a part). Lock held.
  // Cost: O(slabs).
  [[nodiscard]] std::size_t pinned_room() const noexcept
  {
    std::size_t room = pinning_bytes_;
    for (slab_record const& s : slabs_) {
      if (s.base != nullptr && s.pinned_by) { room += s.bytes - s.used; }
    }
    return room;
  }

  // While other threads pin slabs (prepin, or allocates), waits for them and tries each
  // new slab before pinning one more: the wait is at most the pin this call would make.
  // Lock held (released while waiting). Empty when no slab pinned meanwhile has room.
  host_extent wait_for_pins(std::unique_lock<std::mutex>& lock, std::size_t bytes,
                            std::size_t rounded) noexcept
  {
    while (pinning_ > 0) {
      pin_done_.wait(lock);
      if (host_extent found = first_fit(bytes, rounded, true)) { return found; }
    }
    return {};
  }

  // Pins `size` bytes for slot `index` with the lock released (its budget and slot held
  // meanwhile); base nullptr when the host or the driver is out of memory. Relocks before
  // returning.
  held_slab pin_unlocked(std::unique_lock<std::mutex>& lock, std::size_t index, std::size_t size)
  {
    slabs_[index].reserved = true;
    held_ += size;
    pinned_held_ += size;
    ++pinning_;
    pinning_bytes_ += size;
    pin_method method = method_;
    lock.unlock();
    auto const before         = clock::now();
    detail::pinned_slab taken = pin_with(method, size);
    if (method == pin_method::host_register &&
        (taken.result == CUDA_ERROR_NOT_SUPPORTED || taken.result == CUDA_ERROR_NOT_PERMITTED)) {
      method = pin_method::host_alloc;  // this host cannot register: allocate, from now on
      taken  = pin_with(method, size);
    }
    std::chrono::duration<double> const took = clock::now() - before;
    lock.lock();
    if (method == pin_method::host_alloc) { method_ = method; }
    slabs_[index].reserved = false;
    --pinning_;
    pinning_bytes_ -= size;
    pin_done_.notify_all();  // allocates waiting for a slab (wait_for_pins) look again
    if (taken.result == CUDA_SUCCESS) {
      ++pins_;
      pin_seconds_ += took.count();
      return {taken.base, size, method};
    }
    held_ -= size;
    pinned_held_ -= size;
    if (taken.result == CUDA_ERROR_OUT_OF_MEMORY) { return {}; }
    drv_->check(taken.result,
                method == pin_method::host_alloc ? "cuMemHostAlloc" : "cuMemHostRegister",
                [&] { return "size=" + std::to_string(size) + ", flags=0"; });
    return {};
  }

  // One pin by `method` in the store's context. No lock held.
  [[nodiscard]] detail::pinned_slab pin_with(pin_method method, std::size_t size) const noexcept
  {
    context_scope const scope(*drv_, context_, std::nothrow);
    return detail::pin_slab(drv_->table(), size, method, touch_threads_);
  }

  // `wanted` made concrete for this store's device: registered only where the device can
  // (detail::registers_host_memory).
  // Constructor, the device's context current. @throws cuda_error if it cannot be read.
  [[nodiscard]] pin_method resolve_pin_method(pin_method wanted) const
  {
    if (wanted == pin_method::host_alloc) { return wanted; }
    CUdevice device = 0;
    drv_->check(drv_->table().cuCtxGetDevice(&device), "cuCtxGetDevice",
                [] { return std::string(); });
    return detail::registers_host_memory(*drv_, device) ? pin_method::host_register
                                                        : pin_method::host_alloc;
  }

  // What every slab's size is a multiple of: whole host pages in a pinned store (the driver
  // pins, and a registered slab maps, whole pages: the budget counts them all), else 256.
  [[nodiscard]] std::size_t slab_granule() const noexcept
  {
    return pinned_ ? std::max(detail::host_page_bytes(), alignment) : alignment;
  }

  [[nodiscard]] static std::byte* take_pageable(std::size_t size) noexcept
  {
    return static_cast<std::byte*>(
      ::operator new (size, std::align_val_t{page_alignment}, std::nothrow));
  }

  // Frees one slab's memory; false if the driver refused.
  [[nodiscard]] bool free_slab(held_slab slab) const noexcept
  {
    if (!slab.pinned_by) {
      ::operator delete (slab.base, std::align_val_t{page_alignment});
      return true;
    }
    context_scope const scope(*drv_, context_, std::nothrow);
    return detail::unpin_slab(drv_->table(), slab.base, slab.bytes, *slab.pinned_by);
  }

  // A slab's last extent came back. Lock held.
  void emptied(slab_record& s) noexcept
  {
    if (s.pinned_by && s.bytes <= warm_limit_ - std::min(warm_limit_, warm_held_)) {
      warm_held_ += s.bytes;
      s.warm    = true;
      s.emptied = clock::now();
      return;
    }
    retire(s);
  }

  // Frees the warm slabs that `due` selects, one at a time with the lock released during
  // each free (cuMemFreeHost and cuMemHostUnregister synchronize the device: allocate and
  // deallocate must not wait behind it). The slab's slot stays `reserved` meanwhile, so nothing
  // reuses it.
  template <class Due>
  std::size_t free_warm_if(Due const& due) noexcept
  {
    std::size_t freed = 0;
    std::unique_lock lock(mutex_);
    retry_pending_frees();
    for (std::size_t index = 0; index < slabs_.size(); ++index) {
      slab_record& s = slabs_[index];
      if (!s.warm || !due(s)) { continue; }
      s.warm = false;
      warm_held_ -= s.bytes;
      s.reserved           = true;
      held_slab const slab = detach(s);
      ++freeing_;
      lock.unlock();
      bool const ok = free_slab(slab);
      lock.lock();
      --freeing_;
      slabs_[index].reserved = false;  // `s` may dangle: slabs_ can grow meanwhile
      freed += settle_free(slab, ok);
    }
    return freed;
  }

  // Empties slot `s`: its memory becomes the caller's to free (settle_free). Lock held.
  held_slab detach(slab_record& s) noexcept
  {
    held_slab const slab{std::exchange(s.base, nullptr), std::exchange(s.bytes, 0), s.pinned_by};
    s.free.clear();
    --live_slabs_;
    return slab;
  }

  // Counts the free of a detached slab: done (its bytes are no longer held; returns them)
  // or failed (queued for a retry, in capacity reserved when the slab was made; returns 0).
  // Lock held.
  std::size_t settle_free(held_slab slab, bool freed) noexcept
  {
    if (!freed) {
      pending_frees_.push_back(slab);
      return 0;
    }
    return count_freed(slab);
  }

  // A detached slab's memory is given back: its bytes are no longer held. Returns them.
  // Lock held.
  std::size_t count_freed(held_slab const& slab) noexcept
  {
    held_ -= slab.bytes;
    if (slab.pinned_by) { pinned_held_ -= slab.bytes; }
    return slab.bytes;
  }

  // Gives an empty slab's memory back, or queues it for a retry. Lock held.
  void retire(slab_record& s) noexcept
  {
    held_slab const slab = detach(s);
    (void)settle_free(slab, free_slab(slab));
  }

  // Retries frees that failed before (pinned slabs only: a pageable free cannot fail).
  // Lock held.
  void retry_pending_frees() noexcept
  {
    if (pending_frees_.empty()) [[likely]] { return; }
    auto const kept =
      std::remove_if(pending_frees_.begin(), pending_frees_.end(), [&](held_slab const& h) {
        if (!free_slab(h)) { return false; }
        (void)count_freed(h);
        return true;
      });
    pending_frees_.erase(kept, pending_frees_.end());
  }

  [[nodiscard]] static std::size_t offset_in(slab_record const& s, host_extent extent) noexcept
  {
    return static_cast<std::size_t>(extent.data - s.base);
  }

  // The slab of `extent`, after checking that the extent is one the store handed out and
  // has not taken back: inside a live slab, aligned, and overlapping no free range.
  slab_record& live_slab(host_extent extent, std::size_t rounded, char const* call) noexcept
  {
    if (extent.slab >= slabs_.size() || slabs_[extent.slab].base == nullptr) {
      contract_violation(call, extent, "names no live slab");
    }
    slab_record& s     = slabs_[extent.slab];
    auto const address = reinterpret_cast<std::uintptr_t>(extent.data);
    auto const base    = reinterpret_cast<std::uintptr_t>(s.base);
    if (address < base || address - base >= s.bytes || (address - base) % alignment != 0 ||
        rounded > s.bytes - (address - base)) {
      contract_violation(call, extent, "is not inside its slab");
    }
    std::size_t const offset = address - base;
    auto next                = s.free.lower_bound(offset);
    bool const overlaps_next = next != s.free.end() && next->first < offset + rounded;
    bool const overlaps_prev =
      next != s.free.begin() && std::prev(next)->first + std::prev(next)->second > offset;
    if (overlaps_next || overlaps_prev) {
      contract_violation(call, extent, "is (partly) free already: a double free?");
    }
    return s;
  }

  [[noreturn]] static void contract_violation(char const* call, host_extent extent,
                                              std::string const& problem) noexcept
  {
    std::fprintf(stderr, "swapalloc: host_store::%s: extent {data=%s, bytes=%zu, slab=%u} %s\n",
                 call, hex(reinterpret_cast<std::uintptr_t>(extent.data)).c_str(), extent.bytes,
                 static_cast<unsigned>(extent.slab), problem.c_str());
    std::abort();
  }

  // Returns [offset, offset + size) to `free`, merging it with free neighbours. Allocates a
  // node only when it has none (and then may throw std::bad_alloc).
  static void release_range(std::map<std::size_t, std::size_t>& free, std::size_t offset,
                            std::size_t size)
  {
    auto next = free.lower_bound(offset);
    if (next != free.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == offset) {
        prev->second += size;
        if (next != free.end() && prev->first + prev->second == next->first) {
          prev->second += next->second;
          free.erase(next);
        }
        return;
      }
    }
    if (next != free.end() && offset + size == next->first) {
      auto node  = free.extract(next);
      node.key() = offset;
      node.mapped() += size;
      free.insert(std::move(node));
      return;
    }
    free.emplace(offset, size);
  }

  static constexpr std::size_t page_alignment = 4096;  // pageable slabs: whole pages

  driver const* drv_;
  bool pinned_;
  std::size_t warm_limit_;
  std::chrono::milliseconds idle_release_;
  unsigned touch_threads_;
  CUcontext context_{nullptr};
  std::size_t slab_bytes_{0};
  std::size_t limit_{0};

  mutable std::mutex mutex_;                   // guards everything below
  pin_method method_{pin_method::host_alloc};  // how the next slab is pinned (never automatic)
  std::vector<slab_record> slabs_;
  std::vector<held_slab> pending_frees_;  // emptied slabs whose free failed, to retry
  std::size_t live_slabs_{0};
  std::size_t pinning_{0};            // slabs being pinned with the lock released
  std::size_t pinning_bytes_{0};      // their bytes
  std::condition_variable pin_done_;  // notified when a pin ends (wait_for_pins)
  std::size_t freeing_{0};            // warm slabs being freed with the lock released
  std::size_t used_{0};
  std::size_t held_{0};
  std::size_t pinned_held_{0};
  std::size_t warm_held_{0};
  std::size_t pins_{0};
  double pin_seconds_{0};
  std::size_t peak_used_{0};
  std::size_t refusals_{0};
  clock::time_point prepin_after_{};  // release_empty holds prepin off until then
};

}  // namespace swapalloc
