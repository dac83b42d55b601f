/**
 * @file allocator.hpp
 * @brief The facade: per-model pools, PyTorch's malloc/free/record_stream/empty_cache
 *        semantics, eviction to host memory and restore, statistics. It routes each call
 *        to the device it concerns (device_state.hpp) under that device's mutex; the
 *        policy is decided in policy.hpp and carried out in room_maker.hpp, the pools'
 *        names and options live in the registry (pool_registry.hpp), events are recorded
 *        by device_events.hpp into the event log (event_log.hpp), reports are formatted in
 *        report.hpp, settings resolved in allocator_options.hpp (config.hpp reads the
 *        environment). Its RAII guards are activation.hpp and pool_scope.hpp.
 *
 * - **Pools.** `create_pool(name)` registers a pool; a thread's allocations go to the pool
 *   of its innermost `pool_scope` (or `push_pool`), else to the default pool. A pool's
 *   memory on a device is reserved at its first allocation there.
 * - **Streams** (PyTorch's semantics). A freed block is reusable at once on its allocation
 *   stream. `record_stream(ptr, stream)` adds a stream that uses the block: at free, an
 *   event is recorded on each such stream and the block is reused only after all have
 *   completed (stream_events.hpp).
 * - **The policy** (DESIGN §8, room_maker.hpp). Before every map, room is made down to
 *   the low watermark when the map would pass the high one; on a real out-of-memory the
 *   cached pages of every pool are released, everything the policy allows is evicted,
 *   and the request retried once; then `out_of_memory` is thrown with the device's
 *   memory, a table of its pools and what would fit. `activate`/`deactivate` pin a pool
 *   while GPU work uses it; `prefetch` restores one in the background.
 * - **Misuse** (unknown pointer, double free, wrong size, device or stream) throws
 *   `usage_error` naming the pointer and what it is, counts it, and changes nothing.
 * - **Swap tier.** `evict(pool, device)` moves a pool's live bytes to the host store
 *   (transfer.hpp) and frees its device pages; `restore` brings them back at the same
 *   addresses. An evicted pool stays usable: a free drops the host copy of pages left
 *   without data, an allocation maps fresh pages, destroying it frees its host memory.
 *   GPU work must not touch a pool while it is evicted (DESIGN §6).
 *
 * Costs: the hot path — `allocate` of a size freed before on the same stream and pool,
 * and `deallocate` of a block without `record_stream` — makes no driver call and no
 * allocation and holds the device's mutex for a bin lookup and a hash-map update. The
 * slow path holds it across driver calls (mapping pages), as PyTorch's allocator does.
 * An eviction or restore holds it for its driver calls and state changes only, never
 * while it waits for copies, compression or a pool's last use (transfer.hpp wait_gate):
 * calls on other pools go on meanwhile, calls on the pool that moves wait for it.
 *
 * Thread safety: every member may be called from any thread. Calls on different devices
 * do not contend. Lock order: a device's mutex, then the registry's (pool_registry.hpp).
 */
#pragma once

#include <swapalloc/allocator_options.hpp>
#include <swapalloc/config.hpp>
#include <swapalloc/detail/misuse.hpp>
#include <swapalloc/device_events.hpp>
#include <swapalloc/device_state.hpp>
#include <swapalloc/errors.hpp>
#include <swapalloc/pool_registry.hpp>
#include <swapalloc/report.hpp>
#include <swapalloc/room_maker.hpp>
#include <swapalloc/scope_stack.hpp>
#include <swapalloc/worker_pool.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace swapalloc {

namespace detail {
struct allocator_access;  // tests only: reaches a device's state (tests/allocator)
}  // namespace detail

/// The caching allocator. See the file comment.
class allocator {
 public:
  /**
   * @brief An allocator on every device `drv` reports, with only the default pool.
   *        Reads the environment's settings once (config.hpp) unless told not to. Makes
   *        no allocation on any device until the first request there.
   * @throws config_error for a SWAPALLOC_* value that is not accepted, naming it.
   * @throws cuda_error if the devices cannot be enumerated.
   */
  explicit allocator(driver const& drv, allocator_options options = {})
    : driver_(&drv),
      options_(resolve_options(std::move(options))),
      registry_(usage_),
      log_(log_options_of(options_)),
      notes_(log_, room_settings_of(options_).marks),
      room_(drv, registry_, notes_, room_settings_of(options_))
  {
    int const count = drv.device_count();
    for (int ordinal = 0; ordinal < count; ++ordinal) {
      devices_.push_back(std::make_unique<device_state>(drv, ordinal, drv.device(ordinal),
                                                        options_.handle_cache_bytes));
    }
  }

  allocator(allocator const&)            = delete;
  allocator& operator=(allocator const&) = delete;
  /// Reports the blocks still live (the leak report: a `leak` event per pool and device,
  /// at warn), runs the prefetches queued, waits for each device's work, then gives back
  /// every page, range, copy, event and context reference, best effort. Live blocks
  /// become invalid.
  ~allocator() { report_leaks(); }

  /// The devices the driver reported at construction; ordinals are 0 to this, exclusive.
  [[nodiscard]] int device_count() const noexcept { return static_cast<int>(devices_.size()); }

  // ---------------------------------------------------------------- pools

  /**
   * @brief Registers a pool named `name`; memory is reserved per device at first use.
   * @throws usage_error (bad_pool) if a live pool has that name or the name is empty.
   * @throws std::invalid_argument for a page size or capacity that is not a multiple of
   *         the granularity (checked at the pool's first allocation on a device).
   */
  pool_id create_pool(std::string name, pool_options options = {})
  {
    return registry_.create(std::move(name), options);
  }
  /// The id of the live pool named `name`. @throws usage_error (bad_pool) if none.
  [[nodiscard]] pool_id find_pool(std::string_view name) const { return registry_.find(name); }
  /// The id of the live pool named `name`, if any: a query, not a misuse when there is none.
  [[nodiscard]] std::optional<pool_id> lookup_pool(std::string_view name) const
  {
    return registry_.lookup(name);
  }
  /// Whether pool `id` exists (created, not destroyed): a query, not a misuse when not.
  [[nodiscard]] bool has_pool(pool_id id) const { return registry_.alive(id); }
  /// The device holding the live block at `ptr`, if any: a query, not a misuse when none.
  /// Cost: one lock and lookup per device until found.
  [[nodiscard]] std::optional<int> device_of(CUdeviceptr ptr) const
  {
    for (auto const& state : devices_) {
      std::lock_guard const lock(state->mutex());
      if (state->live().find(ptr) != nullptr) { return state->ordinal(); }
    }
    return std::nullopt;
  }
  /// The name of pool `id`. @throws usage_error (bad_pool) if it does not exist.
  [[nodiscard]] std::string pool_name(pool_id id) const
  {
    return registry_.entry(id, "pool_name").name;
  }

  /**
   * @brief Destroys pool `id` on every device: waits for the GPU work that used it (its
   *        last-use events, else the device's work) without holding the device's lock,
   *        then unmaps its pages, frees its range and its host copies. Its name becomes free.
   * @throws usage_error (bad_pool) for the default pool, an unknown id, or a pool that
   *         still has live blocks (nothing is destroyed then).
   * @throws cuda_error if a page cannot be unmapped: the pool stays, with what could not
   *         be given back, and destroying it again can finish.
   * @pre no thread is inside a scope of the pool.
   */
  void destroy_pool(pool_id id)
  {
    std::string const name = registry_.entry(id, "destroy_pool").name;
    if (id == default_pool) {
      throw usage_.raise(usage_error_kind::bad_pool,
                         "destroy_pool: the default pool lives as long as the allocator");
    }
    prefetches_.wait();             // no prefetch holds the pool's residency
    for (auto& state : devices_) {  // first pass: refuse while in use, change nothing
      std::unique_lock lock(state->mutex());
      if (state->context() == nullptr) { continue; }
      context_scope const current(*driver_, state->context());
      if (state->holds_blocks(lock, id)) { refuse_destroy(*state, id, name); }
    }
    for (auto& state : devices_) {
      std::unique_lock lock(state->mutex());
      if (state->context() == nullptr) { continue; }
      context_scope const current(*driver_, state->context());
      // A failure leaves the pool to destroy again; blocks allocated since the first pass
      // (a race of the caller's) refuse it, as there.
      if (!state->destroy(lock, id)) { refuse_destroy(*state, id, name); }
    }
    registry_.retire(id);
  }

  /// Makes `id` the calling thread's current pool until `pop_pool`.
  /// @throws usage_error (bad_pool) for an unknown id; std::length_error past 64 levels.
  void push_pool(pool_id id)
  {
    registry_.require(id, "push_pool");
    scopes_.push(id);
  }
  /// Ends the calling thread's innermost pool scope. @throws std::logic_error if none.
  void pop_pool() { scopes_.pop(); }
  /// The calling thread's current pool. Cost: one relaxed load outside any scope.
  [[nodiscard]] pool_id current_pool() const noexcept { return scopes_.current(); }

  // ---------------------------------------------------------------- memory

  /**
   * @brief `bytes` of device memory on `device`, usable in `stream` order at once, from
   *        the calling thread's current pool. 0 bytes gives address 0.
   * @throws usage_error (bad_device, bad_pool) for a bad ordinal or a destroyed pool.
   * @throws out_of_memory if the device or the pool's range cannot hold it.
   * @throws cuda_error if a driver call other than cuMemCreate's out-of-memory fails;
   *         nothing is allocated then, and the allocator stays usable.
   */
  [[nodiscard]] CUdeviceptr allocate(std::size_t bytes, int device, CUstream stream)
  {
    if (bytes == 0) { return 0; }
    device_state& state = state_of(device, "allocate");
    pool_id const id    = scopes_.current();
    std::size_t const rounded =
      bytes > std::numeric_limits<std::size_t>::max() - block_granule ? 0 : round_request(bytes);
    stream_tag const tag = tag_of(stream);
    std::unique_lock lock(state.mutex());
    state.harvest();
    pool_residency* const pool = state.pool(id);
    if (pool != nullptr && rounded != 0 && !state.moving(id)) {  // hot path
      if (block* const found = pool->allocate_cached(rounded, bytes, tag); found != nullptr) {
        CUdeviceptr const address = pool->pool().address(*found);
        state.live().insert(address, live_block{found, id});
        return address;
      }
    }
    block* const found        = room_.allocate(state, lock, id, bytes, rounded, tag);
    CUdeviceptr const address = state.pool(id)->pool().address(*found);
    state.live().insert(address, live_block{found, id});
    return address;
  }

  /**
   * @brief Frees `ptr`, allocated with `bytes` on `device` and `stream` (PyTorch's
   *        pluggable free). The block is reusable at once on `stream`; if other streams
   *        were recorded with `record_stream`, only after their work at this point.
   * @throws usage_error for an address that is not a live block's start, or a size,
   *         device or stream other than the allocation's; nothing changes then.
   * @throws cuda_error if recording an event fails; the block is then freed and returns
   *         to the cache at the next `empty_cache` or out-of-memory recovery.
   */
  void deallocate(CUdeviceptr ptr, std::size_t bytes, int device, CUstream stream)
  {
    if (ptr == 0) { return; }
    device_state& state = state_of(device, "deallocate");
    std::unique_lock lock(state.mutex());
    auto const call = [&] {
      return "deallocate(ptr=" + hex(ptr) + ", bytes=" + std::to_string(bytes) +
             ", device=" + std::to_string(device) + ")";
    };
    live_block const found = settled_block(state, lock, ptr, device, call);
    check_free(ptr, bytes, stream, *found.freed);
    state.live().erase(ptr);
    pool_residency& pool = *state.pool(found.pool);
    if (pool.on_parked_pages(*found.freed)) [[unlikely]] {  // no restore: GPU work cannot use it
      pool.deallocate_parked(found.freed);
      return;
    }
    if (found.freed->used_by.empty()) {  // hot path
      pool.deallocate(found.freed);
      return;
    }
    state.ensure_context();
    context_scope const current(*driver_, state.context());
    state.free_after_events(pool, found.pool, found.freed);
  }

  /**
   * @brief Marks the block at `ptr` as used by `stream` (torch.Tensor.record_stream): at
   *        its free, it is reused only after `stream`'s work up to that point completes.
   * @throws usage_error if `ptr` is not a live block's start on `device`.
   */
  void record_stream(CUdeviceptr ptr, int device, CUstream stream)
  {
    device_state& state = state_of(device, "record_stream");
    std::unique_lock lock(state.mutex());
    block* const used =
      live_or_throw(state, lock, ptr, device, [&] {
        return "record_stream(ptr=" + hex(ptr) + ", device=" + std::to_string(device) + ")";
      }).freed;
    if (tag_of(stream) == used->tag) { return; }  // its own stream orders it already
    for (CUstream known : used->used_by) {
      if (known == stream) { return; }
    }
    used->used_by.push_back(stream);
  }

  /**
   * @brief Releases every cached page of every pool (torch.cuda.empty_cache): waits for
   *        pending events and for each device's work, then unmaps pages no block uses.
   *        Live blocks are untouched. @return bytes released.
   * @throws cuda_error for the first failed driver call, after releasing all it could.
   */
  std::size_t empty_cache() { return release_cached(nullptr); }

  /// As `empty_cache()`, for the pages of pool `id` only.
  std::size_t empty_cache(pool_id id)
  {
    registry_.require(id, "empty_cache");
    return release_cached(&id);
  }

  // ---------------------------------------------------------------- swap tier

  /**
   * @brief Evicts pool `id` on `device`: waits for the pool's last use (its last-use
   *        events when it was used through `activate`, else the device's work), copies the live
   *        bytes of its pages to the host store, and unmaps them. Pages without live bytes
   *        (or whose kept copy is current) are only unmapped, and go first. Page by page
   *        until at least `bytes` are released (default: every page).
   * @return what was done. Pages the host budget cannot hold stay resident; `refused`
   *         says so (also a refusal event in the log, on stderr by default), and nothing already
   * stored is dropped.
   * @throws usage_error (not_evictable) for the default pool, a pool created with
   *         `evictable = false` or `priority = critical`, or a pinned pool (checked under
   *         the device's lock, with the eviction); (bad_pool, bad_device) for bad ids.
   * @throws cuda_error from a failing driver call: pages not yet released stay resident
   *         and usable, the released ones are evicted and restorable.
   * A prefetched pool is evicted too (the policy alone spares it until its use).
   * @pre no GPU work will touch the pool until it is restored (DESIGN §6).
   */
  evict_result evict(pool_id id, int device, std::size_t bytes = SIZE_MAX)
  {
    pool_entry const entry = registry_.entry(id, "evict");
    device_state& state    = state_of(device, "evict");
    std::unique_lock lock(state.mutex());
    room_maker::explicit_eviction outcome = room_.evict(state, lock, id, entry, bytes);
    if (!outcome.refused.empty()) {
      throw usage_.raise(usage_error_kind::not_evictable,
                         "evict(pool '" + entry.name + "'): refused, " + outcome.refused);
    }
    return std::move(outcome.done);
  }

  /**
   * @brief Restores every page of pool `id` on `device` whose data is in host memory, at
   *        its address, verifying each chunk's checksum, and makes `stream` (if not null)
   *        wait for the copies. The copies are complete when it returns. A read-only pool
   *        keeps its host copy. Room is made first as for an allocation (policy.hpp); when
   *        the device is full even so, every pool's cached pages are released and what the
   *        policy allows is evicted, and the restore retried once, as `allocate` does.
   * @throws usage_error (bad_pool, bad_device) for bad ids.
   * @throws out_of_memory if the pages do not fit even then, with the pool table.
   * @throws cuda_error or restore_error (a checksum mismatch, naming the pool and chunk):
   *         the pool stays evicted, every host copy intact, and a later restore can
   *         succeed. A restore never returns with a page it did not fill.
   */
  restore_result restore(pool_id id, int device, CUstream stream = nullptr)
  {
    registry_.require(id, "restore");
    device_state& state = state_of(device, "restore");
    std::unique_lock lock(state.mutex());
    state.wait_while_moving(lock, id);
    pool_residency* const pool = state.pool(id);
    if (pool == nullptr || pool->pool().parked_pages() == 0) { return {}; }
    context_scope const current(*driver_, state.context());
    return room_.restore(state, lock, id, *pool, stream);
  }

  /**
   * @brief Starts restoring pool `id` on `device` and returns at once (DESIGN §6): the
   *        restore runs on the allocator's prefetch thread, on the transfer engine's
   *        streams and workers, room made first as for `restore`. A later `activate`
   *        waits only for what is left. Until its next activation the pool is evicted
   *        again only on out-of-memory (policy.hpp refusal::prefetched). A prefetch that
   *        fails loses nothing: the pool stays evicted, and `activate` restores it and
   *        reports the error.
   * @return false if the pool had nothing in host memory (nothing was started).
   * @throws usage_error (bad_pool, bad_device).
   */
  bool prefetch(pool_id id, int device)
  {
    registry_.require(id, "prefetch");
    device_state& state = state_of(device, "prefetch");
    {
      std::lock_guard const lock(state.mutex());
      pool_residency const* const pool = state.pool(id);
      if (pool == nullptr || pool->pool().parked_pages() == 0) { return false; }
    }
    std::call_once(prefetcher_started_, [&] { prefetcher_ = std::make_unique<worker_pool>(1); });
    prefetcher_->submit(prefetches_, [this, id, &state] { run_prefetch(state, id); });
    return true;
  }

  /// Waits until every prefetch started so far has finished (tests, shutdown).
  void wait_for_prefetches() { prefetches_.wait(); }

  /**
   * @brief Activates pool `id` on `device` for work on `stream` (DESIGN §6): restores what
   *        of it is evicted (making room first, as an allocation does), makes `stream`
   *        wait for the restore (an event, not a host wait), pins the pool and marks it
   *        the most recently used. Activations nest; each needs a `deactivate`.
   * @return what the restore did.
   * @throws usage_error (bad_pool, bad_device); out_of_memory, cuda_error or restore_error
   *         as `restore`: the pool is then not activated, its data intact.
   * Thread safety: any thread; the activation and the restore are one critical section, so
   * no eviction can come between them.
   */
  restore_result activate(pool_id id, int device, CUstream stream)
  {
    registry_.require(id, "activate");
    device_state& state = state_of(device, "activate");
    std::unique_lock lock(state.mutex());
    state.controls().activate(id);  // pinned from here: no eviction starts on it
    try {
      state.wait_while_moving(lock, id);  // an eviction begun before, or a prefetch
      pool_residency* const pool = state.pool(id);
      if (pool == nullptr || pool->pool().parked_pages() == 0) { return {}; }
      context_scope const current(*driver_, state.context());
      return room_.restore(state, lock, id, *pool, stream);
    } catch (...) {
      state.controls().cancel_activation(id);
      throw;
    }
  }

  /**
   * @brief Ends one activation of pool `id` on `device`: records its last use on `stream`
   *        (an eviction waits for that event, never for the whole device) and unpins it.
   * @throws usage_error (bad_pool) if the pool is not active on `device`.
   * @throws cuda_error if the event cannot be recorded: the activation ends anyway, and the
   *         pool's next eviction waits for the device instead.
   */
  void deactivate(pool_id id, int device, CUstream stream)
  {
    std::string const name = registry_.entry(id, "deactivate").name;
    device_state& state    = state_of(device, "deactivate");
    std::lock_guard const lock(state.mutex());
    if (!state.controls().end_activation(
          id)) {  // first, so that a driver failure below cannot keep it
      throw usage_.raise(usage_error_kind::bad_pool, "deactivate('" + name + "', device=" +
                                                       std::to_string(device) + "): not active");
    }
    try {
      state.ensure_context();
      context_scope const current(*driver_, state.context());
      state.record_last_use(id, stream);
    } catch (...) {
      state.controls().forget_last_use(id);
      throw;
    }
  }

  /**
   * @brief Makes room on `device` so that `bytes` can be mapped without passing the high
   *        watermark (the seeds' memory_guard): releases cached pages, then evicts the
   *        coldest eligible pools (policy.hpp).
   * @return what was done (nothing when there is room already).
   * @throws out_of_memory with the pool table if the room cannot be made: only pinned,
   *         active, critical or non-evictable pools hold the rest; nothing is undone.
   * @throws cuda_error from a failed step, after the other steps ran.
   */
  room_result ensure_free(std::size_t bytes, int device)
  {
    device_state& state = state_of(device, "ensure_free");
    std::unique_lock lock(state.mutex());
    state.ensure_context();
    context_scope const current(*driver_, state.context());
    return room_.ensure_free(state, lock, bytes);
  }

  /**
   * @brief The background monitor's step (pressure_monitor.hpp): when this process's use
   *        or the device-wide use on `device` (other processes count) is past the high
   *        watermark, releases cached pages and evicts the coldest eligible pools until
   *        both are back at the low watermark (policy.hpp, room_reason::monitor). Acts
   *        even with `automatic_eviction` off: starting a monitor asks for it.
   * @return what was done (nothing before the device's first use, or below the mark).
   * @throws usage_error (bad_device); cuda_error from a failed step, after the others ran.
   */
  room_result relieve_pressure(int device)
  {
    device_state& state = state_of(device, "relieve_pressure");
    std::unique_lock lock(state.mutex());
    if (state.context() == nullptr) { return {}; }
    context_scope const current(*driver_, state.context());
    state.forget_usage_reading();  // another process's change is seen at the monitor's rate
    room_result done = room_.make_room(state, lock, default_pool, 0, room_reason::monitor);
    if (done.error) { std::rethrow_exception(done.error); }
    return done;
  }

  /**
   * @brief `device`'s handle_cache counters: how many maps took an unmapped page's memory
   *        instead of creating it (its bytes are held only while an allocation or a
   *        restore runs). @throws usage_error (bad_device).
   */
  [[nodiscard]] handle_cache_stats handle_stats(int device) const
  {
    return state_of(device, "handle_stats").handles().stats();
  }

  /**
   * @brief Hands `device`'s raw host copies to the compression workers as
   *        compression_policy.hpp plans: those of pools idle for
   *        allocator_options::compress_after (read-only pools excepted), and, while the
   *        host store holds more than 85% of its limit, those of the coldest pools until
   *        the plan covers the excess over 75%. Every eviction takes this step too; the
   *        pressure monitor takes it each pass, so that a pool that idles is compressed
   *        without another eviction. Cost: a walk over the device's pools' pages under
   *        its lock; the compression runs on the workers, and a restore cancels it.
   * @return host bytes of the raw copies handed over (what compression may save; 0
   *         before the device's first eviction).
   * @throws usage_error (bad_device); std::bad_alloc (the copies not handed over stay raw).
   */
  std::size_t compress_host(int device)
  {
    device_state& state = state_of(device, "compress_host");
    std::unique_lock lock(state.mutex());
    return room_.compress_host(state, lock);
  }

  /**
   * @brief Gives back `device`'s warm pinned host slabs (host_store.hpp): those idle for
   *        allocator_options::host.idle_release, except those that keep the pinned room
   *        the next eviction needs (policy.hpp pinned_reserve_bytes), or every one when
   *        the host is short of memory (policy.hpp host_memory_short). The pressure monitor
   *        calls it each pass. Each free synchronizes the device; it runs with no lock of
   *        the allocator held.
   * @return bytes of host memory given back (0 before the device's first eviction).
   * @throws usage_error (bad_device); cuda_error (the usage reading).
   */
  std::size_t trim_host(int device)
  {
    device_state& state = state_of(device, "trim_host");
    host_store* store   = nullptr;
    {
      std::lock_guard const lock(state.mutex());
      store = state.store();
    }
    if (store == nullptr) { return 0; }
    // Nothing warm: trim only retries failed frees; neither /proc/meminfo nor the reserve
    // (a usage reading, and from the low watermark a walk over the pools' pages) is read.
    if (store->warm_bytes_held() == 0) { return store->trim(); }
    if (host_memory_short(available_memory_bytes(), physical_memory_bytes())) {
      return store->release_empty();
    }
    std::size_t reserve = 0;
    {
      std::lock_guard const lock(state.mutex());
      reserve = room_.host_reserve(state);
    }
    return store->trim(host_store::clock::now(), reserve);
  }

  /**
   * @brief Pins host memory for `device`'s next eviction ahead of need, with no lock of
   *        the allocator held: free pinned room up to policy.hpp pinned_reserve_bytes (the
   *        resident bytes of the pool the monitor would evict first, once use has reached
   *        the low watermark; none when the host is short of memory). Creates the device's
   *        swap tier for it if needed, and makes its transfer engine ready (streams and
   *        pinned staging ring: transfer_engine::prepare). What it pins is kept warm;
   *        trim_host keeps it while the reserve asks for it and gives it back once idle
   *        after; after empty_cache nothing is pinned for allocator_options::host.idle_release.
   *        The pressure monitor calls it each pass, after trim_host.
   *
   * Call it from a thread that issues no copies: a pin holds the driver's lock
   * (host_store::prepin), and it takes as long as its pins (cuMemHostAlloc: 0.34 ms/MiB on
   * an H100 host; registering about a third of that, gpu-speed.md [DYN]).
   * @return bytes pinned (0 below the low watermark, or with the room free already).
   * @throws usage_error (bad_device); cuda_error when a pin fails other than out
   *         of memory (what was pinned before stays warm), from the engine's preparation
   *         (nothing pinned then; the next eviction prepares it), or from the usage reading.
   */
  std::size_t prepin_host(int device)
  {
    device_state& state = state_of(device, "prepin_host");
    std::unique_lock lock(state.mutex());
    std::size_t const reserve = room_.host_reserve(state);  // creates the swap tier when not 0
    host_store* const store   = state.store();              // lives as long as the device state
    if (store == nullptr || reserve == 0) { return 0; }
    lock.unlock();
    if (host_memory_short(available_memory_bytes(), physical_memory_bytes())) { return 0; }
    lock.lock();
    {
      context_scope const current(*driver_, state.context());
      (void)state.prepare_engine(lock);  // the staging ring, pinned with the lock released
    }
    lock.unlock();
    return store->prepin(reserve);
  }

  /**
   * @brief Sets what this process may hold on `device` from now on, replacing
   *        allocator_options::device_limit there (PyTorch's set_per_process_memory_fraction
   *        through the plugin). Blocks already allocated stay: an allocation past the new
   *        limit makes room first, and the background monitor, when running, brings use
   *        back under the new watermarks.
   * @throws usage_error (bad_device); config_error ("device_limit") for a fraction outside
   *         (0, 1] with no byte count.
   */
  void set_device_limit(int device, device_limit limit)
  {
    if (limit.bytes == 0 && !(limit.fraction > 0.0 && limit.fraction <= 1.0)) {
      throw config_error("device_limit",
                         "swapalloc: set_device_limit(device=" + std::to_string(device) +
                           "): fraction " + std::to_string(limit.fraction) +
                           " is outside (0, 1] (accepted: a fraction of the "
                           "device's memory in (0, 1], or a byte count)");
    }
    device_state& state = state_of(device, "set_device_limit");
    std::lock_guard const lock(state.mutex());
    state.set_limit_override(limit);
  }

  /// The pressure level of `device` (policy.hpp pressure_of): SAFE below the low watermark,
  /// WARNING below the high one, CRITICAL below 0.95, EMERGENCY above.
  [[nodiscard]] pressure_level pressure(int device)
  {
    device_state& state = state_of(device, "pressure");
    std::lock_guard const lock(state.mutex());
    if (state.context() == nullptr) { return pressure_level::safe; }
    context_scope const current(*driver_, state.context());
    device_usage const usage = state.usage(room_.limit_of(state));
    notes_.note_level(state, usage);
    return pressure_of(usage, room_.marks());
  }

  /**
   * @brief Declares pool `id`'s data read-only (weights after loading) or not. A read-only
   *        pool keeps its host copy after a restore, so evicting an unchanged page again is
   *        an unmap only; an allocation on a page ends that for the page. Making it
   *        writable drops the kept copies at once: the next eviction copies every page.
   * @pre while read-only, no GPU work writes into the pool's live blocks.
   * @throws usage_error (bad_pool) for a bad id.
   */
  void set_read_only(pool_id id, bool read_only)
  {
    registry_.set_read_only(id, read_only);
    for (auto& state : devices_) {
      std::unique_lock lock(state->mutex());
      if (!read_only) { state->wait_for_compression(lock, &id); }  // dropping copies waits not
      state->wait_while_moving(lock, id);
      if (pool_residency* const pool = state->pool(id); pool != nullptr) {
        context_scope const current(*driver_, state->context());  // host frees may call it
        pool->set_keep_copies(read_only);
      }
    }
  }

  /// Pins pool `id` on every device: evict refuses it until as many `unpin_pool` calls
  /// (DESIGN §6). @throws usage_error (bad_pool) for a bad id.
  void pin_pool(pool_id id)
  {
    registry_.require(id, "pin_pool");
    for (auto& state : devices_) {
      std::unique_lock lock(state->mutex());
      state->wait_while_moving(lock, id);  // an eviction begun before the pin completes
      state->controls().pin(id);
    }
  }
  /// Undoes one `pin_pool`. @throws usage_error (bad_pool) if the pool is not pinned.
  void unpin_pool(pool_id id)
  {
    std::string const name = registry_.entry(id, "unpin_pool").name;
    for (auto& state : devices_) {
      std::lock_guard const lock(state->mutex());
      if (!state->controls().unpin(id)) {
        throw usage_.raise(usage_error_kind::bad_pool, "unpin_pool('" + name + "'): not pinned");
      }
    }
  }

  /// Waits until the compression behind the evictions of pool `id` has finished (the
  /// statistics' host bytes are then final). Thread safety: any thread.
  void wait_for_compression(pool_id id)
  {
    registry_.require(id, "wait_for_compression");
    for (auto& state : devices_) {
      std::unique_lock lock(state->mutex());
      state->wait_for_compression(lock, &id);  // with the lock released
    }
  }

  // ---------------------------------------------------------------- statistics

  /// Counters of pool `id` on `device`. @throws usage_error for a bad id or device.
  [[nodiscard]] pool_stats stats(pool_id id, int device) const
  {
    registry_.require(id, "stats");
    device_state& state = state_of(device, "stats");
    std::lock_guard const lock(state.mutex());
    pool_residency const* const pool = state.pool(id);
    return pool != nullptr ? pool->stats() : pool_stats{};
  }

  /// Counters of every pool on `device`, summed; `stray_bytes` also counts the handles
  /// the device's handle cache could not release (handle_cache.hpp), so that resident,
  /// restoring and stray bytes together are all the device memory the allocator holds
  /// outside an operation. @throws usage_error for a bad device.
  [[nodiscard]] pool_stats device_stats(int device) const
  {
    device_state& state = state_of(device, "device_stats");
    std::lock_guard const lock(state.mutex());
    pool_stats total;
    for (pool_row const& row : state.rows([](pool_id) { return std::string(); })) {
      total += row.stats;
    }
    total.stray_bytes += state.handles().stray_bytes();
    return total;
  }

  /// The counters of `device`'s host store (host_store.hpp); all 0 before its first
  /// eviction. @throws usage_error for a bad device.
  [[nodiscard]] host_store_stats host_stats(int device) const
  {
    device_state& state = state_of(device, "host_stats");
    std::lock_guard const lock(state.mutex());
    host_store const* const store = state.store();
    return store != nullptr ? store->stats() : host_store_stats{};
  }

  /// Usage errors of `kind` so far (each also threw).
  [[nodiscard]] std::size_t usage_errors(usage_error_kind kind) const noexcept
  {
    return usage_.count(kind);
  }

  /**
   * @brief Every counter, per device and pool and in total, plus the usage errors:
   *   {"devices": [{"device": 0, "pools": [{"id", "name", "allocated_bytes", ...}],
   *     "total": {...}, "pressure": {...}, "counters": {"alloc_retries", "ooms"}}],
   *   where each pool also has "active", "last_use_s_ago" (seconds; null if never
   *   activated), "priority" and "evictable";
   *    "total": {...}, "usage_errors": {"total": n, "<kind>": n}, "events": {...}}
   */
  [[nodiscard]] nlohmann::json stats_json() const
  {
    nlohmann::json out{{"devices", nlohmann::json::array()}};
    pool_stats everything;
    for (auto const& state : devices_) {
      std::lock_guard const lock(state->mutex());
      std::vector<pool_row> const rows = state->rows([](pool_id) { return std::string(); });
      nlohmann::json device            = device_json(state->ordinal(), rows, everything);
      auto const now                   = std::chrono::steady_clock::now();
      for (nlohmann::json& pool : device["pools"]) {
        auto const id   = pool["id"].get<pool_id>();
        auto const used = state->controls().used_at(id);
        pool["active"]  = state->controls().active(id);
        pool["last_use_s_ago"] =
          used ? nlohmann::json(std::chrono::duration<double>(now - *used).count()) : nullptr;
      }
      if (state->context() != nullptr) {
        context_scope const current(*driver_, state->context());
        device_memory const memory = state->memory();
        device_usage const usage{state->own_bytes(), room_.limit_of(*state),
                                 memory.known ? memory.total_bytes - memory.free_bytes : 0,
                                 memory.known ? memory.total_bytes : 0};
        device["pressure"] = pressure_json(usage, room_.marks());
      }
      device["counters"] = {
        {"alloc_retries", state->counters().alloc_retries.load(std::memory_order_relaxed)},
        {"ooms", state->counters().ooms.load(std::memory_order_relaxed)}};
      out["devices"].push_back(std::move(device));
    }
    for (nlohmann::json& device : out["devices"]) {  // the registry's lock after the devices'
      for (nlohmann::json& pool : device["pools"]) {
        if (auto const options = registry_.options_of(pool["id"].get<pool_id>())) {
          pool["priority"]  = to_string(options->priority);
          pool["evictable"] = options->evictable;
        }
      }
    }
    out["total"]        = to_json(everything);
    out["usage_errors"] = usage_json(usage_);
    out["events"]       = events_json(log_);
    return out;
  }

  /// The event log's ring (event_log.hpp), oldest first. Thread safety: any thread.
  [[nodiscard]] std::vector<swap_event> events() const { return log_.events(); }

  /// Structural check of every pool (tests): empty when consistent, else the first problem.
  [[nodiscard]] std::string check() const
  {
    for (auto const& state : devices_) {
      std::lock_guard const lock(state->mutex());
      if (std::string problem = state->check(); !problem.empty()) { return problem; }
    }
    return {};
  }

 private:
  friend struct detail::allocator_access;

  /// Hot path: one compare (a negative ordinal wraps to a huge index) and a load.
  [[nodiscard]] device_state& state_of(int device, char const* function) const
  {
    if (static_cast<std::size_t>(device) >= devices_.size()) [[unlikely]] {
      throw_bad_device(device, function);
    }
    return *devices_[static_cast<std::size_t>(device)];
  }

  [[noreturn]] __attribute__((noinline, cold)) void throw_bad_device(int device,
                                                                     char const* function) const
  {
    throw usage_.raise(usage_error_kind::bad_device,
                       std::string(function) + "(device=" + std::to_string(device) +
                         "): expected 0 to " + std::to_string(devices_.size()) +
                         " (exclusive), the devices the driver reports");
  }

  /// The leak report: a `leak` event for each pool with live blocks on each device.
  void report_leaks() noexcept
  {
    try {
      for (auto const& state : devices_) {
        std::lock_guard const lock(state->mutex());
        notes_.note_leaks(*state);
      }
    } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor reports what it can
    }
  }

  [[noreturn]] void refuse_destroy(device_state const& state, pool_id id, std::string const& name)
  {
    throw usage_.raise(usage_error_kind::bad_pool, "destroy_pool('" + name +
                                                     "'): refused, blocks are still allocated: " +
                                                     device_events::leak_line(state, id));
  }

  /// The prefetch thread's task (room_maker::prefetch). Reports nothing: a failure is an
  /// event, and leaves the pool evicted with its copies for `activate` to restore.
  void run_prefetch(device_state& state, pool_id id) noexcept
  {
    try {
      std::unique_lock lock(state.mutex());
      if (state.context() == nullptr) { return; }
      context_scope const current(*driver_, state.context());
      room_.prefetch(state, lock, id);
    } catch (...) {  // NOLINT(bugprone-empty-catch): nothing was changed; activate restores
    }
  }

  /// Throws usage_error unless `freed` was allocated with `bytes` on `stream`.
  /// Hot path: two compares; the message is built out of line, on failure only.
  void check_free(CUdeviceptr ptr, std::size_t bytes, CUstream stream, block const& freed) const
  {
    if (freed.requested != bytes || tag_of(stream) != freed.tag) [[unlikely]] {
      detail::throw_bad_free(usage_, ptr, bytes, stream, freed);
    }
  }

  std::size_t release_cached(pool_id const* only)
  {
    std::size_t released = 0;
    for (auto& state : devices_) {
      std::unique_lock lock(state->mutex());
      if (state->context() == nullptr) { continue; }
      context_scope const current(*driver_, state->context());
      std::size_t const here = state->release_cache(lock, only);  // waits without the lock
      if (here != 0) {
        notes_.note(event_kind::release_cached, *state,
                    only != nullptr ? std::optional(*only) : std::nullopt, here, 0, "empty_cache");
      }
      released += here;
      if (host_store* const store = state->store(); store != nullptr && only == nullptr) {
        lock.unlock();  // each free synchronizes the device: not under the device's lock
        (void)store->release_empty();
      }
    }
    return released;
  }

  /**
   * @brief The live block at `ptr` (as `live_or_throw`), once it can be freed: its pool is
   *        not moving, and when the block lies on evicted pages (a free drops their copies)
   *        no compression of the pool is in flight. Both waits release `lock`; the block
   *        is looked up again after each. Hot path: a lookup and two compares.
   */
  template <typename CallText>
  [[nodiscard]] live_block settled_block(device_state& state, std::unique_lock<std::mutex>& lock,
                                         CUdeviceptr ptr, int device, CallText const& call) const
  {
    for (;;) {
      live_block const found = live_or_throw(state, lock, ptr, device, call);
      if (state.moving(found.pool)) [[unlikely]] {  // its pages may be in flight
        state.wait_while_moving(lock, found.pool);
        continue;
      }
      pool_residency& pool = *state.pool(found.pool);
      if (!pool.on_parked_pages(*found.freed)) [[likely]] { return found; }
      task_group* const jobs = pool.compression_in_flight();
      if (jobs == nullptr) { return found; }
      // The pool lives on: a live block refuses destroy_pool.
      pool_residency::compression_pause const pause(pool);  // the jobs end soon
      wait_gate(lock).outside([&] { jobs->wait(); });
    }
  }

  /// The live block at `ptr`. If there is none, unlocks `lock` (the diagnosis locks every
  /// device in turn) and throws the usage error that explains why; `call` names the call.
  template <typename CallText>
  [[nodiscard]] live_block live_or_throw(device_state& state, std::unique_lock<std::mutex>& lock,
                                         CUdeviceptr ptr, int device, CallText&& call) const
  {
    if (live_block const* const found = state.live().find(ptr); found != nullptr) { return *found; }
    lock.unlock();
    throw detail::diagnose(devices_, registry_.size(), usage_, ptr, device, call());
  }

  driver const* driver_;
  allocator_options options_;
  usage_counters usage_;
  pool_registry registry_;
  scope_stack scopes_;
  event_log log_;
  device_events notes_;  // records into log_
  room_maker room_;      // owns the compression workers: outlives devices_
  std::vector<std::unique_ptr<device_state>> devices_;
  // The prefetch thread, started at the first prefetch; destroyed first, after it has run
  // every queued prefetch (worker_pool.hpp), so its tasks find every device alive. Its one
  // thread makes a device's context current for each task.
  task_group prefetches_;
  std::once_flag prefetcher_started_;
  std::unique_ptr<worker_pool> prefetcher_;
};

}  // namespace swapalloc
