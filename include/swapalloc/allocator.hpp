/**
 * @file allocator.hpp
 * @brief The facade: per-model pools, PyTorch's malloc/free/record_stream/empty_cache
 *        semantics, out-of-memory recovery and reporting, usage checks, statistics.
 *
 * - **Pools.** `create_pool(name)` registers a pool; a thread's allocations go to the pool
 *   of its innermost `pool_scope` (or `push_pool`), else to the default pool. A pool's
 *   memory on a device is a `device_pool` (pool.hpp), created at its first allocation there.
 * - **Streams** (PyTorch's semantics). A freed block is reusable at once on its allocation
 *   stream. `record_stream(ptr, stream)` adds a stream that uses the block: at free, an
 *   event is recorded on each such stream and the block is reused only after all have
 *   completed. Events come from a per-device pool of reusable events; completed ones are
 *   harvested by `cuEventQuery` (never a wait) at the next allocation on the device.
 * - **Out of memory.** When cuMemCreate reports out of memory, or a pool's range has no
 *   room, the cached pages of every pool on the device are released (after waiting for
 *   the device's work) and the request is retried once; then `out_of_memory` is thrown
 *   with the device's memory and a table of its pools.
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
 *
 * Thread safety: every member may be called from any thread. One state (mutex, pools,
 * live blocks, events) per device; calls on different devices do not contend.
 */
#pragma once

#include <swapalloc/address_map.hpp>
#include <swapalloc/allocator_errors.hpp>
#include <swapalloc/block_cache.hpp>
#include <swapalloc/driver.hpp>
#include <swapalloc/pool.hpp>
#include <swapalloc/pool_image.hpp>
#include <swapalloc/residency.hpp>
#include <swapalloc/scope_stack.hpp>
#include <swapalloc/transfer.hpp>

#include <nlohmann/json.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace swapalloc {

/// Per-pool settings; 0 takes the allocator's default.
struct pool_options {
  std::size_t capacity{0};             ///< bytes of addresses reserved per device
  std::size_t page_size{0};            ///< bytes per page: a multiple of the allocation granularity
  bool evictable{true};                ///< false: evict refuses it (the default pool never is)
  dtype_hint dtype{dtype_hint::none};  ///< picks the codec; none: sampled at first eviction
  std::optional<codec_id> codec;       ///< forces a codec (tests, benchmarks)
  bool read_only{false};               ///< see allocator::set_read_only
};

/// Allocator-wide defaults; 0: capacity = the device's memory, page size = granularity.
struct allocator_options {
  std::size_t capacity{0};
  std::size_t page_size{0};
  host_store_options host;  ///< the host store of each device (SWAPALLOC_HOST_LIMIT)
  std::size_t workers{0};   ///< compression threads; 0: default_worker_count()
  transfer_options transfer;
};

namespace detail {

/// "1.50 GiB (1610612736 bytes)"-style text for messages.
[[nodiscard]] inline std::string bytes_text(std::size_t bytes)
{
  constexpr std::array<char const*, 5> units{"B", "KiB", "MiB", "GiB", "TiB"};
  double value     = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < units.size()) {
    value /= 1024.0;
    ++unit;
  }
  std::array<char, 32> text{};
  std::snprintf(text.data(), text.size(), unit == 0 ? "%.0f %s" : "%.2f %s", value, units[unit]);
  return text.data();
}

}  // namespace detail

/// The caching allocator. See the file comment.
class allocator {
 public:
  /**
   * @brief An allocator on every device `drv` reports, with only the default pool.
   * Makes no allocation on any device until the first request there.
   * @throws cuda_error if the devices cannot be enumerated.
   */
  explicit allocator(driver const& drv, allocator_options options = {})
    : driver_(&drv), options_(options)
  {
    int const count = drv.device_count();
    for (int ordinal = 0; ordinal < count; ++ordinal) {
      devices_.push_back(std::make_unique<device_state>(ordinal, drv.device(ordinal)));
    }
    pool_options never_evicted;
    never_evicted.evictable = false;  // DESIGN §6: the default pool is not evictable
    pools_.push_back(pool_entry{"default", never_evicted, true});
  }

  allocator(allocator const&)            = delete;
  allocator& operator=(allocator const&) = delete;

  /// Waits for each device's work, then unmaps every page and frees every range, event
  /// and context reference, best effort. Live blocks become invalid.
  ~allocator()
  {
    for (auto& state : devices_) {
      if (state->context == nullptr) { continue; }
      try {
        context_scope const current(*driver_, state->context);
        (void)driver_->table().cuCtxSynchronize();
        for (auto const& waiting : state->pending) {
          (void)driver_->table().cuEventDestroy(waiting.event);
        }
        for (CUevent event : state->idle_events) {
          (void)driver_->table().cuEventDestroy(event);
        }
        state->pools.clear();  // waits for compression jobs, gives host memory back, unmaps
        state->engine.reset();
        state->store.reset();
      } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor reports nothing
      }
      (void)driver_->table().cuDevicePrimaryCtxRelease(state->device);
    }
  }

  // ---------------------------------------------------------------- pools

  /**
   * @brief Registers a pool named `name`; memory is reserved per device at first use.
   * @throws usage_error (bad_pool) if a live pool has that name or the name is empty.
   * @throws std::invalid_argument for a page size or capacity that is not a multiple of
   *         the granularity (checked at the pool's first allocation on a device).
   */
  pool_id create_pool(std::string name, pool_options options = {})
  {
    std::lock_guard const lock(registry_mutex_);
    if (name.empty()) {
      throw misuse(usage_error_kind::bad_pool, "create_pool(name=\"\"): a pool needs a name");
    }
    for (pool_entry const& entry : pools_) {
      if (entry.alive && entry.name == name) {
        throw misuse(usage_error_kind::bad_pool,
                     "create_pool(name=\"" + name + "\"): a pool of that name exists");
      }
    }
    pools_.push_back(pool_entry{std::move(name), options, true});
    return static_cast<pool_id>(pools_.size() - 1);
  }

  /// The id of the live pool named `name`. @throws usage_error (bad_pool) if none.
  [[nodiscard]] pool_id find_pool(std::string_view name) const
  {
    std::lock_guard const lock(registry_mutex_);
    for (std::size_t id = 0; id < pools_.size(); ++id) {
      if (pools_[id].alive && pools_[id].name == name) { return static_cast<pool_id>(id); }
    }
    throw misuse(usage_error_kind::bad_pool,
                 "find_pool(\"" + std::string(name) + "\"): no such pool");
  }

  /// The name of pool `id`. @throws usage_error (bad_pool) if it does not exist.
  [[nodiscard]] std::string pool_name(pool_id id) const
  {
    std::lock_guard const lock(registry_mutex_);
    return live_entry_of(id, "pool_name").name;
  }

  /**
   * @brief Destroys pool `id` on every device: waits for the device's work, then unmaps
   *        its pages and frees its range. Its name becomes free.
   * @throws usage_error (bad_pool) for the default pool, an unknown id, or a pool that
   *         still has live blocks (nothing is destroyed then).
   * @throws cuda_error if a page cannot be unmapped: the pool stays, with what could not
   *         be given back, and destroying it again can finish.
   * @pre no thread is inside a scope of the pool.
   */
  void destroy_pool(pool_id id)
  {
    std::string name;
    {
      std::lock_guard const lock(registry_mutex_);
      name = live_entry_of(id, "destroy_pool").name;
    }
    if (id == default_pool) {
      throw misuse(usage_error_kind::bad_pool,
                   "destroy_pool: the default pool lives as long as the allocator");
    }
    for (auto& state : devices_) {  // first pass: refuse while in use, change nothing
      std::lock_guard const lock(state->mutex);
      pool_residency const* const pool = state->pool(id);
      if (pool == nullptr) { continue; }
      context_scope const current(*driver_, state->context);
      // Freed blocks still waiting for events, or for a synchronization (a free whose event
      // could not be recorded), are not live: after this, only allocated blocks count.
      synchronize_device(*state);
      if (std::size_t const live = pool->pool().live_blocks(); live != 0) {
        throw misuse(usage_error_kind::bad_pool,
                     "destroy_pool('" + name + "'): " + std::to_string(live) +
                       " blocks are still allocated on device " + std::to_string(state->ordinal));
      }
    }
    for (auto& state : devices_) {
      std::lock_guard const lock(state->mutex);
      if (state->pool(id) == nullptr) { continue; }
      context_scope const current(*driver_, state->context);
      driver_->synchronize_context();
      state->pools[id]->release_all();  // a failure here leaves the pool to destroy again
      state->pools[id].reset();         // its host copies too
    }
    std::lock_guard const lock(registry_mutex_);
    pools_[id].alive = false;
  }

  /// Makes `id` the calling thread's current pool until `pop_pool`.
  /// @throws usage_error (bad_pool) for an unknown id; std::length_error past 64 levels.
  void push_pool(pool_id id)
  {
    require_pool(id, "push_pool");
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
    std::lock_guard const lock(state.mutex);
    if (!state.pending.empty()) { harvest_events(state); }
    pool_residency* const pool = state.pool(id);
    if (pool != nullptr && rounded != 0) {  // hot path
      if (block* const found = pool->allocate_cached(rounded, bytes, tag); found != nullptr) {
        CUdeviceptr const address = pool->pool().address(*found);
        state.live.insert(address, live_block{found, id});
        return address;
      }
    }
    return allocate_slow(state, id, bytes, rounded, tag);
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
    std::unique_lock lock(state.mutex);
    live_block const found = live_or_throw(state, lock, ptr, device, [&] {
      return "deallocate(ptr=" + hex(ptr) + ", bytes=" + std::to_string(bytes) +
             ", device=" + std::to_string(device) + ")";
    });
    block* const freed     = found.freed;
    pool_id const owner    = found.pool;
    if (freed->requested != bytes) {
      throw misuse(usage_error_kind::wrong_size,
                   "deallocate(ptr=" + hex(ptr) + ", bytes=" + std::to_string(bytes) +
                     "): the block was allocated with bytes=" + std::to_string(freed->requested));
    }
    if (tag_of(stream) != freed->tag) {
      throw misuse(usage_error_kind::wrong_stream,
                   "deallocate(ptr=" + hex(ptr) +
                     ", stream=" + hex(reinterpret_cast<std::uintptr_t>(stream)) +
                     "): the block was allocated on stream=" +
                     hex(reinterpret_cast<std::uintptr_t>(stream_of(freed->tag))));
    }
    state.live.erase(ptr);
    pool_residency& pool = *state.pools[owner];
    if (pool.on_parked_pages(*freed)) [[unlikely]] {  // no restore: GPU work cannot use it
      pool.deallocate_parked(freed);
      return;
    }
    if (freed->used_by.empty()) {  // hot path
      pool.deallocate(freed);
      return;
    }
    free_after_events(state, pool, owner, freed);
  }

  /**
   * @brief Marks the block at `ptr` as used by `stream` (torch.Tensor.record_stream): at
   *        its free, it is reused only after `stream`'s work up to that point completes.
   * @throws usage_error if `ptr` is not a live block's start on `device`.
   */
  void record_stream(CUdeviceptr ptr, int device, CUstream stream)
  {
    device_state& state = state_of(device, "record_stream");
    std::unique_lock lock(state.mutex);
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
    require_pool(id, "empty_cache");
    return release_cached(&id);
  }

  // ---------------------------------------------------------------- swap tier

  /**
   * @brief Evicts pool `id` on `device`: waits for the device's work, copies the live
   *        bytes of its pages to the host store, and unmaps them. Pages without live bytes
   *        are only unmapped. Page by page, from the pages without data, until at least
   *        `bytes` are released (default: every page).
   * @return what was done. Pages the host budget cannot hold stay resident; `refused`
   *         says so (also logged to stderr), and nothing already stored is dropped.
   * @throws usage_error (not_evictable) for the default pool, a pool created with
   *         `evictable = false`, or a pinned pool; (bad_pool, bad_device) for bad ids.
   * @throws cuda_error from a failing driver call: pages not yet released stay resident
   *         and usable, the released ones are evicted and restorable.
   * @pre no GPU work will touch the pool until it is restored (DESIGN §6).
   */
  evict_result evict(pool_id id, int device, std::size_t bytes = SIZE_MAX)
  {
    pool_entry const entry = entry_of(id, "evict");
    std::string const why =
      id == default_pool         ? "it is the default pool"
      : !entry.options.evictable ? "it was created with evictable = false"
      : entry.pins != 0 ? "it is pinned (" + std::to_string(entry.pins) + " pins: it is in use)"
                        : std::string();
    if (!why.empty()) {
      throw misuse(usage_error_kind::not_evictable,
                   "evict(pool '" + entry.name + "'): refused, " + why);
    }
    device_state& state = state_of(device, "evict");
    std::lock_guard const lock(state.mutex);
    pool_residency* const pool = state.pool(id);
    if (pool == nullptr || state.context == nullptr) { return {}; }
    context_scope const current(*driver_, state.context);
    synchronize_device(state);
    ensure_swap_tier(state);
    pool->prepare_swap();
    device_pool const& pages_of = pool->pool();
    std::vector<std::size_t> pages;
    for (int pass = 0; pass < 2; ++pass) {  // pages without data first: no copy to make
      for (std::size_t page = 0; page < pages_of.page_count(); ++page) {
        page_state const at = pages_of.page(page);
        bool const no_copy  = at == page_state::restoring || pages_of.page_users(page) == 0;
        if ((at == page_state::resident || at == page_state::restoring) && no_copy == (pass == 0)) {
          pages.push_back(page);
        }
      }
    }
    std::size_t const page_size = pages_of.page_size();
    std::size_t const wanted    = (bytes / page_size) + (bytes % page_size != 0);
    if (pages.size() > wanted) { pages.resize(wanted); }
    return state.engine->evict(*pool, pages,
                               codec_choice{entry.options.dtype, entry.options.codec});
  }

  /**
   * @brief Restores every page of pool `id` on `device` whose data is in host memory, at
   *        its address, verifying each chunk's checksum, and makes `stream` (if not null)
   *        wait for the copies. The copies are complete when it returns. A read-only pool
   *        keeps its host copy. When the device is full, the cached pages of every pool
   *        are released and the restore retried once, as `allocate` does.
   * @throws usage_error (bad_pool, bad_device) for bad ids.
   * @throws out_of_memory if the pages do not fit even then, with the pool table.
   * @throws cuda_error or restore_error (a checksum mismatch, naming the pool and chunk):
   *         the pool stays evicted, every host copy intact, and a later restore can
   *         succeed. A restore never returns with a page it did not fill.
   */
  restore_result restore(pool_id id, int device, CUstream stream = nullptr)
  {
    require_pool(id, "restore");
    device_state& state = state_of(device, "restore");
    std::lock_guard const lock(state.mutex);
    pool_residency* const pool = state.pool(id);
    if (pool == nullptr || pool->pool().parked_pages() == 0) { return {}; }
    context_scope const current(*driver_, state.context);
    try {
      return restore_parked(state, *pool, stream);
    } catch (cuda_error const& error) {
      if (error.code() != CUDA_ERROR_OUT_OF_MEMORY) { throw; }
    }
    std::size_t const released = release_for_retry(state);
    try {
      return restore_parked(state, *pool, stream);
    } catch (cuda_error const& error) {
      if (error.code() != CUDA_ERROR_OUT_OF_MEMORY) { throw; }
      device_pool const& pages_of = pool->pool();
      std::size_t const needed =
        pages_of.page_size() * pages_of.blocks().pages().count(page_state::evicted);
      throw out_of_memory(oom_message(state,
                                      "restoring pool '" + pages_of.name() + "' (" +
                                        detail::bytes_text(needed) + " of evicted pages)",
                                      "its pages need " + detail::bytes_text(needed) +
                                        " of device memory" + free_text(released)),
                          needed, state.ordinal);
    }
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
    {
      std::lock_guard const lock(registry_mutex_);
      live_entry_of(id, "set_read_only").options.read_only = read_only;
    }
    for (auto& state : devices_) {  // the registry's lock is released: see pool_for
      std::lock_guard const lock(state->mutex);
      if (pool_residency* const pool = state->pool(id); pool != nullptr) {
        context_scope const current(*driver_, state->context);  // host frees may call it
        pool->set_keep_copies(read_only);
      }
    }
  }

  /// Pins pool `id`: evict refuses it until as many `unpin_pool` calls (DESIGN §6).
  void pin_pool(pool_id id)
  {
    std::lock_guard const lock(registry_mutex_);
    ++live_entry_of(id, "pin_pool").pins;
  }
  /// Undoes one `pin_pool`. @throws usage_error (bad_pool) if the pool is not pinned.
  void unpin_pool(pool_id id)
  {
    std::lock_guard const lock(registry_mutex_);
    pool_entry& entry = live_entry_of(id, "unpin_pool");
    if (entry.pins == 0) {
      throw misuse(usage_error_kind::bad_pool, "unpin_pool('" + entry.name + "'): not pinned");
    }
    --entry.pins;
  }

  /// Waits until the compression behind the evictions of pool `id` has finished (the
  /// statistics' host bytes are then final). Thread safety: any thread.
  void wait_for_compression(pool_id id)
  {
    require_pool(id, "wait_for_compression");
    for (auto& state : devices_) {
      std::lock_guard const lock(state->mutex);
      if (pool_residency* const pool = state->pool(id); pool != nullptr) {
        pool->wait_for_compression();
      }
    }
  }

  // ---------------------------------------------------------------- statistics

  /// Counters of pool `id` on `device`. @throws usage_error for a bad id or device.
  [[nodiscard]] pool_stats stats(pool_id id, int device) const
  {
    require_pool(id, "stats");
    device_state& state = state_of(device, "stats");
    std::lock_guard const lock(state.mutex);
    pool_residency const* const pool = state.pool(id);
    return pool != nullptr ? pool->stats() : pool_stats{};
  }

  /// Counters of every pool on `device`, summed.
  [[nodiscard]] pool_stats device_stats(int device) const
  {
    device_state& state = state_of(device, "device_stats");
    std::lock_guard const lock(state.mutex);
    pool_stats total;
    for (auto const& pool : state.pools) {
      if (pool != nullptr) { total += pool->stats(); }
    }
    return total;
  }

  /// Usage errors of `kind` so far (each also threw).
  [[nodiscard]] std::size_t usage_errors(usage_error_kind kind) const noexcept
  {
    return usage_errors_[static_cast<std::size_t>(kind)].load(std::memory_order_relaxed);
  }

  /**
   * @brief Every counter, per device and pool and in total, plus the usage errors:
   *   {"devices": [{"device": 0, "pools": [{"id", "name", "allocated_bytes", ...}],
   *     "total": {...}}], "total": {...}, "usage_errors": {"total": n, "<kind>": n}}
   */
  [[nodiscard]] nlohmann::json stats_json() const
  {
    nlohmann::json out{{"devices", nlohmann::json::array()}};
    pool_stats everything;
    for (auto const& state : devices_) {
      std::lock_guard const lock(state->mutex);
      nlohmann::json pools = nlohmann::json::array();
      pool_stats total;
      for (std::size_t id = 0; id < state->pools.size(); ++id) {
        if (state->pools[id] == nullptr) { continue; }
        pool_stats const counters = state->pools[id]->stats();
        nlohmann::json entry      = to_json(counters);
        entry["id"]               = id;
        entry["name"]             = state->pools[id]->pool().name();
        pools.push_back(std::move(entry));
        total += counters;
      }
      everything += total;
      out["devices"].push_back(
        {{"device", state->ordinal}, {"pools", std::move(pools)}, {"total", to_json(total)}});
    }
    out["total"]           = to_json(everything);
    nlohmann::json errors  = nlohmann::json::object();
    std::size_t all_errors = 0;
    for (std::size_t kind = 0; kind < usage_error_kinds; ++kind) {
      std::size_t const count = usage_errors_[kind].load(std::memory_order_relaxed);
      errors[to_string(static_cast<usage_error_kind>(kind))] = count;
      all_errors += count;
    }
    errors["total"]     = all_errors;
    out["usage_errors"] = std::move(errors);
    return out;
  }

  /// Structural check of every pool (tests): empty when consistent, else the first problem.
  [[nodiscard]] std::string check() const
  {
    for (auto const& state : devices_) {
      std::lock_guard const lock(state->mutex);
      std::size_t live = 0;
      for (auto const& pool : state->pools) {
        if (pool == nullptr) { continue; }
        if (std::string problem = pool->check(); !problem.empty()) {
          return pool->pool().name() + ": " + problem;
        }
      }
      state->live.for_each([&](std::uint64_t, live_block const& entry) {
        live += entry.freed->state == block_state::allocated ? 1 : 0;
      });
      if (live != state->live.size()) {
        return "a live pointer maps to a block that is not allocated";
      }
    }
    return {};
  }

 private:
  struct pool_entry {
    std::string name;
    pool_options options;
    bool alive;
    std::size_t pins{0};
  };
  struct live_block {
    block* freed{nullptr};  // the block, named for its use at free
    pool_id pool{0};
  };
  struct waiting_event {
    CUevent event;
    block* waiting;
    pool_id pool;
  };

  /// One device's allocator state. `mutex` guards everything but the constants.
  struct device_state {
    device_state(int ordinal_, CUdevice device_) : ordinal(ordinal_), device(device_) {}
    [[nodiscard]] pool_residency* pool(pool_id id) const noexcept
    {
      return id < pools.size() ? pools[id].get() : nullptr;
    }
    int const ordinal;
    CUdevice const device;
    mutable std::mutex mutex;
    CUcontext context{nullptr};  // the primary context, retained at first use
    address_map<live_block> live;
    std::vector<CUevent> idle_events;
    std::deque<waiting_event> pending;  // in record order
    std::vector<live_block> unsynced;   // freed blocks waiting for a synchronization
    // The swap tier, created at the device's first eviction.
    std::unique_ptr<host_store> store;
    std::unique_ptr<transfer_engine> engine;
    // Declared last, destroyed first: their host copies go back to `store`.
    std::vector<std::unique_ptr<pool_residency>> pools;  // by pool_id
  };

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
    throw misuse(usage_error_kind::bad_device,
                 std::string(function) + "(device=" + std::to_string(device) + "): expected 0 to " +
                   std::to_string(devices_.size()) +
                   " (exclusive), the devices the driver reports");
  }

  /// A copy of pool `id`'s registry entry. @throws usage_error (bad_pool) if none.
  [[nodiscard]] pool_entry entry_of(pool_id id, char const* function) const
  {
    std::lock_guard const lock(registry_mutex_);
    return live_entry_of(id, function);
  }

  /// The device's swap machinery (host store, transfer engine, and the process's worker
  /// pool), created at its first eviction. @pre state.mutex is held, the context current.
  void ensure_swap_tier(device_state& state)
  {
    if (state.store != nullptr) { return; }
    {
      std::lock_guard const lock(registry_mutex_);
      if (workers_ == nullptr) {
        workers_ = std::make_unique<worker_pool>(options_.workers != 0 ? options_.workers
                                                                       : default_worker_count());
      }
    }
    auto store = std::make_unique<host_store>(*driver_, options_.host);
    state.engine =
      std::make_unique<transfer_engine>(*driver_, *store, *workers_, options_.transfer);
    state.store = std::move(store);
  }

  /// Restores every page of `pool` whose data is in host memory. @pre state.mutex is held,
  /// the context current, the pool has such pages (so the swap tier exists).
  restore_result restore_parked(device_state& state, pool_residency& pool, CUstream stream)
  {
    std::vector<std::size_t> pages;
    for (std::size_t page = 0; page < pool.pool().page_count(); ++page) {
      if (data_on_host(pool.pool().page(page))) { pages.push_back(page); }
    }
    return state.engine->restore(pool, pages, stream);
  }

  /// Throws usage_error (bad_pool) unless pool `id` exists; `function` names the caller.
  void require_pool(pool_id id, char const* function) const
  {
    std::lock_guard const lock(registry_mutex_);
    (void)live_entry_of(id, function);
  }

  /// @pre registry_mutex_ is held.
  [[nodiscard]] pool_entry const& live_entry_of(pool_id id, char const* function) const
  {
    if (id >= pools_.size() || !pools_[id].alive) {
      throw misuse(usage_error_kind::bad_pool, std::string(function) +
                                                 "(pool=" + std::to_string(id) +
                                                 "): no such pool (never created, or destroyed)");
    }
    return pools_[id];
  }
  /// @pre registry_mutex_ is held.
  [[nodiscard]] pool_entry& live_entry_of(pool_id id, char const* function)
  {
    (void)std::as_const(*this).live_entry_of(id, function);  // throws for a bad id
    return pools_[id];
  }

  /// Counts a usage error and builds its exception.
  [[nodiscard]] usage_error misuse(usage_error_kind kind, std::string const& what) const
  {
    usage_errors_[static_cast<std::size_t>(kind)].fetch_add(1, std::memory_order_relaxed);
    return usage_error(kind, "swapalloc: " + what);
  }

  /// @pre state.mutex is held.
  void ensure_context(device_state& state)
  {
    if (state.context == nullptr) { state.context = driver_->retain_primary_context(state.device); }
  }

  /// The default reservation of a pool: twice the device's memory. Address space is cheap
  /// and a pool's pages are placed in it for good, so small pages left between freed
  /// large runs must not exhaust it while the device still has memory (issue 9: a
  /// reservation the size of the device ran out with three quarters of it free). PyTorch
  /// reserves 1 1/8 of the device per expandable segment, and keeps one segment per
  /// stream and size class (c10/cuda/CUDACachingAllocator.cpp, ExpandableSegment); one
  /// range per pool serves every stream and both size classes here.
  static constexpr std::size_t default_capacity_per_device_byte = 2;

  /// @pre state.mutex is held. (It takes the registry's lock: device before registry.)
  pool_residency& pool_for(device_state& state, pool_id id)
  {
    if (pool_residency* const existing = state.pool(id); existing != nullptr) { return *existing; }
    pool_entry entry;
    {
      std::lock_guard const lock(registry_mutex_);
      entry = live_entry_of(id, "allocate");
    }
    std::size_t page_size =
      entry.options.page_size != 0 ? entry.options.page_size : options_.page_size;
    if (page_size == 0) { page_size = driver_->allocation_granularity(state.device); }
    std::size_t capacity = entry.options.capacity != 0 ? entry.options.capacity : options_.capacity;
    if (capacity == 0) {
      capacity = default_capacity_per_device_byte * driver_->device_total_memory(state.device);
    }
    capacity = (capacity + page_size - 1) / page_size * page_size;
    if (state.pools.size() <= id) { state.pools.resize(id + 1); }
    state.pools[id] = std::make_unique<pool_residency>(*driver_, state.device, entry.name, capacity,
                                                       page_size, entry.options.read_only);
    return *state.pools[id];
  }

  /// @pre state.mutex is held.
  CUdeviceptr allocate_slow(device_state& state, pool_id id, std::size_t bytes, std::size_t rounded,
                            stream_tag tag)
  {
    ensure_context(state);
    context_scope const current(*driver_, state.context);
    pool_residency& pool    = pool_for(state, id);
    std::size_t const range = pool.pool().capacity();
    auto const asked        = [&] {  // built on failure only: bytes_text formats floats
      return "allocating " + detail::bytes_text(bytes) + " (" + std::to_string(bytes) +
             " bytes) in pool '" + pool.pool().name() + "'";
    };
    if (rounded == 0 || rounded > range) {
      throw out_of_memory(
        oom_message(state, asked(),
                    "the request exceeds the pool's capacity of " + detail::bytes_text(range) +
                      " (its reserved address range); nothing can be freed to make it fit"),
        bytes, state.ordinal);
    }
    bool device_full = false;
    block* found     = try_allocate(pool, rounded, bytes, tag, device_full);
    if (found == nullptr) {  // release every pool's cached pages on this device, retry once
      std::size_t const released = release_for_retry(state);
      found                      = try_allocate(pool, rounded, bytes, tag, device_full);
      if (found == nullptr) {
        std::string const why =
          device_full ? "its block needs " + detail::bytes_text(pool.pool().last_map_bytes()) +
                          " of new pages" + free_text(released)
                      : "the pool's address range of " + detail::bytes_text(range) +
                          " has no free run of " + detail::bytes_text(rounded) + " (released " +
                          detail::bytes_text(released) + " of cached pages and retried)";
        throw out_of_memory(oom_message(state, asked(), why), bytes, state.ordinal);
      }
    }
    CUdeviceptr const address = pool.pool().address(*found);
    state.live.insert(address, live_block{found, id});
    return address;
  }

  /// A block, or nullptr when the device (`device_full` set) or the pool's range (not
  /// set) is out of memory.
  static block* try_allocate(pool_residency& pool, std::size_t rounded, std::size_t bytes,
                             stream_tag tag, bool& device_full)
  {
    try {
      device_full = false;
      return pool.allocate(rounded, bytes, tag);
    } catch (cuda_error const& error) {
      if (error.code() != CUDA_ERROR_OUT_OF_MEMORY) { throw; }
      device_full = true;
      return nullptr;
    }
  }

  /// Out of memory: releases every pool's cached pages on the device before one retry.
  /// Returns the bytes released; a page whose unmap fails stays cached (no error: the
  /// retry decides). @pre state.mutex is held, the context current.
  std::size_t release_for_retry(device_state& state)
  {
    try {
      return release_device_cache(state, nullptr);
    } catch (cuda_error const&) {  // NOLINT(bugprone-empty-catch): see above
      return 0;
    }
  }

  /// ", and the device has F free (after releasing R of cached pages and retrying)".
  [[nodiscard]] std::string free_text(std::size_t released) const
  {
    std::size_t free_bytes  = 0;
    std::size_t total_bytes = 0;
    std::string const freed =
      "releasing " + detail::bytes_text(released) + " of cached pages and retrying";
    if (driver_->table().cuMemGetInfo(&free_bytes, &total_bytes) != CUDA_SUCCESS) {
      return " (after " + freed + ")";
    }
    return ", and the device has " + detail::bytes_text(free_bytes) + " free after " + freed;
  }

  /**
   * The out-of-memory report (DESIGN §8): what was asked for and why it failed, the
   * device's memory, a table of the device's pools (resident, evicted and host bytes, and
   * whether eviction can free them), and what the user can do. @pre state.mutex is held.
   */
  [[nodiscard]] std::string oom_message(device_state& state, std::string const& request,
                                        std::string const& why) const
  {
    std::string message = "swapalloc: out of memory on device " + std::to_string(state.ordinal) +
                          ": " + request + "; " + why + ".\n";
    std::array<char, 200> line{};
    std::snprintf(line.data(), line.size(), "  %-16s %11s %11s %11s %12s %11s %11s  %s\n", "pool",
                  "allocated", "resident", "cached-free", "largest-free", "evicted", "host",
                  "eviction");
    message += line.data();
    std::size_t resident    = 0;
    std::size_t evictable   = 0;
    std::size_t unevictable = 0;
    for (std::size_t id = 0; id < state.pools.size(); ++id) {
      if (state.pools[id] == nullptr) { continue; }
      pool_stats const counters = state.pools[id]->stats();
      char const* const status  = eviction_status(static_cast<pool_id>(id));
      bool const can_evict      = std::string_view(status) == "possible";
      resident += counters.reserved_bytes;
      (can_evict ? evictable : unevictable) += counters.reserved_bytes;
      std::snprintf(line.data(), line.size(), "  %-16s %11s %11s %11s %12s %11s %11s  %s\n",
                    state.pools[id]->pool().name().c_str(),
                    detail::bytes_text(counters.allocated_bytes).c_str(),
                    detail::bytes_text(counters.reserved_bytes).c_str(),
                    detail::bytes_text(counters.cached_free_bytes).c_str(),
                    detail::bytes_text(counters.largest_free_block).c_str(),
                    detail::bytes_text(counters.evicted_bytes).c_str(),
                    detail::bytes_text(counters.host_bytes).c_str(), status);
      message += line.data();
    }
    std::size_t free_bytes  = 0;
    std::size_t total_bytes = 0;
    if (CUresult const info = driver_->table().cuMemGetInfo(&free_bytes, &total_bytes);
        info == CUDA_SUCCESS) {
      std::size_t const used = total_bytes - std::min(total_bytes, free_bytes);
      message += "  device memory: total " + detail::bytes_text(total_bytes) + ", free " +
                 detail::bytes_text(free_bytes) + ", resident in these pools " +
                 detail::bytes_text(resident) + ", used outside them (other processes, " +
                 "contexts, streams) " + detail::bytes_text(used - std::min(used, resident)) + "\n";
    } else {
      message += "  device memory: unknown (" + driver_->describe(info) + ")\n";
    }
    message += "  to make room: evict pools not in use now (allocator::evict: " +
               detail::bytes_text(evictable) + " resident in evictable pools), free tensors, " +
               "or free memory outside swapalloc; " + detail::bytes_text(unevictable) +
               " resident in pinned or non-evictable pools cannot be evicted\n";
    return message;
  }

  /// "possible", or why pool `id` cannot be evicted now. Takes the registry's lock.
  [[nodiscard]] char const* eviction_status(pool_id id) const
  {
    std::lock_guard const lock(registry_mutex_);
    pool_entry const& entry = pools_[id];
    if (id == default_pool) { return "no (default pool)"; }
    if (!entry.options.evictable) { return "no (not evictable)"; }
    if (entry.pins != 0) { return "no (pinned)"; }
    return "possible";
  }

  /// @pre state.mutex is held.
  void free_after_events(device_state& state, pool_residency& pool, pool_id owner, block* freed)
  {
    ensure_context(state);
    context_scope const current(*driver_, state.context);
    std::uint32_t recorded = 0;
    try {
      for (CUstream user : freed->used_by) {
        CUevent event = nullptr;
        if (state.idle_events.empty()) {
          event = driver_->event_create();
        } else {
          event = state.idle_events.back();
          state.idle_events.pop_back();
        }
        try {
          driver_->event_record(event, user);
        } catch (...) {
          state.idle_events.push_back(event);
          throw;
        }
        state.pending.push_back(waiting_event{event, freed, owner});
        ++recorded;
      }
    } catch (...) {
      // A stream without an event cannot be tracked: the block also waits for the next
      // synchronization of the device (empty_cache, out-of-memory recovery).
      pool.hold(freed, recorded + 1);
      state.unsynced.push_back(live_block{freed, owner});
      throw;
    }
    pool.hold(freed, recorded);
  }

  /// Returns the blocks whose events have completed to their caches. Never waits.
  /// @pre state.mutex is held and state.pending is not empty.
  void harvest_events(device_state& state)
  {
    while (!state.pending.empty()) {
      waiting_event const& front = state.pending.front();
      if (!driver_->event_query(front.event)) { return; }
      finish_event(state, front);
      state.pending.pop_front();
    }
  }

  void finish_event(device_state& state, waiting_event const& done)
  {
    state.idle_events.push_back(done.event);
    finish_one_wait(state, done.waiting, done.pool);
  }

  /// One of a held block's waits is over; the last one makes it reusable.
  static void finish_one_wait(device_state& state, block* held, pool_id owner)
  {
    if (--held->pending_events == 0) { state.pools[owner]->finish_waiting(held); }
  }

  /// Waits for every pending event of the device. @pre state.mutex is held, context current.
  void wait_for_events(device_state& state)
  {
    while (!state.pending.empty()) {
      driver_->event_synchronize(state.pending.front().event);
      finish_event(state, state.pending.front());
      state.pending.pop_front();
    }
  }

  std::size_t release_cached(pool_id const* only)
  {
    std::size_t released = 0;
    for (auto& state : devices_) {
      std::lock_guard const lock(state->mutex);
      if (state->context == nullptr) { continue; }
      context_scope const current(*driver_, state->context);
      released += release_device_cache(*state, only);
    }
    return released;
  }

  /// Waits for the device, then releases the idle pages of its pools (or of `*only`).
  /// @pre state.mutex is held and the device's context is current.
  std::size_t release_device_cache(device_state& state, pool_id const* only)
  {
    synchronize_device(state);
    std::size_t released = 0;
    std::exception_ptr first_error;
    for (std::size_t id = 0; id < state.pools.size(); ++id) {
      if (state.pools[id] == nullptr || (only != nullptr && *only != id)) { continue; }
      try {
        released += state.pools[id]->release_idle_pages();
      } catch (cuda_error const&) {
        if (!first_error) { first_error = std::current_exception(); }
      }
    }
    if (first_error) { std::rethrow_exception(first_error); }
    return released;
  }

  /// Waits for the pending events and the device's work; held blocks become reusable.
  /// @pre state.mutex is held and the device's context is current.
  void synchronize_device(device_state& state)
  {
    wait_for_events(state);
    driver_->synchronize_context();
    for (live_block const& parked : state.unsynced) {
      finish_one_wait(state, parked.freed, parked.pool);
    }
    state.unsynced.clear();
  }

  /// The live block at `ptr`. If there is none, unlocks `lock` (the diagnosis locks every
  /// device in turn) and throws the usage error that explains why; `call` names the call.
  template <typename CallText>
  [[nodiscard]] live_block live_or_throw(device_state& state, std::unique_lock<std::mutex>& lock,
                                         CUdeviceptr ptr, int device, CallText&& call) const
  {
    if (live_block const* const found = state.live.find(ptr); found != nullptr) { return *found; }
    lock.unlock();
    throw diagnose(ptr, device, call());
  }

  /// Explains why `ptr` is not a live block on `device`, counts it, returns the error.
  [[nodiscard]] usage_error diagnose(CUdeviceptr ptr, int device, std::string const& call) const
  {
    for (auto const& other : devices_) {
      if (other->ordinal == device) { continue; }
      std::lock_guard const lock(other->mutex);
      if (other->live.find(ptr) != nullptr) {
        return misuse(
          usage_error_kind::wrong_device,
          call + ": the block was allocated on device " + std::to_string(other->ordinal));
      }
    }
    device_state const& state = *devices_[static_cast<std::size_t>(device)];
    std::lock_guard const lock(state.mutex);
    for (auto const& residency : state.pools) {
      if (residency == nullptr || !residency->pool().contains(ptr)) { continue; }
      device_pool const* const pool = &residency->pool();
      block const* const around     = pool->blocks().block_at(ptr - pool->base());
      std::string message           = call;
      usage_error_kind kind         = usage_error_kind::double_free;
      if (around != nullptr && around->state == block_state::allocated) {
        kind = usage_error_kind::interior_pointer;
        message += ": the address is ";
        message += std::to_string(ptr - pool->address(*around));
        message += " bytes inside the block at ";
        message += hex(pool->address(*around));
      } else if (around != nullptr && pool->address(*around) == ptr) {
        message += ": the block is already free";
      } else {
        message += ": no live block starts there (freed already?)";
      }
      message += " in pool '";
      message += pool->name();
      message += "'";
      return misuse(kind, message);
    }
    return misuse(
      usage_error_kind::unknown_pointer,
      call + ": not an address this allocator handed out on device " + std::to_string(device));
  }

  [[nodiscard]] static nlohmann::json to_json(pool_stats const& s)
  {
    return {{"allocated_bytes", s.allocated_bytes},
            {"requested_bytes", s.requested_bytes},
            {"reserved_bytes", s.reserved_bytes},
            {"peak_allocated_bytes", s.peak_allocated_bytes},
            {"peak_reserved_bytes", s.peak_reserved_bytes},
            {"live_blocks", s.live_blocks},
            {"allocations", s.allocations},
            {"frees", s.frees},
            {"cached_free_bytes", s.cached_free_bytes},
            {"largest_free_block", s.largest_free_block},
            {"evicted_bytes", s.evicted_bytes},
            {"restoring_bytes", s.restoring_bytes},
            {"stray_bytes", s.stray_bytes},
            {"host_bytes", s.host_bytes},
            {"evictions", s.evictions},
            {"restores", s.restores}};
  }

  driver const* driver_;
  allocator_options options_;
  std::unique_ptr<worker_pool> workers_;  // created at the first eviction; outlives devices_
  std::vector<std::unique_ptr<device_state>> devices_;
  mutable std::mutex registry_mutex_;
  std::vector<pool_entry> pools_;  // by pool_id; guarded by registry_mutex_
  scope_stack scopes_;
  mutable std::array<std::atomic<std::size_t>, usage_error_kinds> usage_errors_{};
};

/// Makes a pool current on the calling thread for the guard's lifetime.
class pool_scope {
 public:
  pool_scope(allocator& owner, pool_id id) : owner_(&owner) { owner.push_pool(id); }
  pool_scope(pool_scope const&)            = delete;
  pool_scope& operator=(pool_scope const&) = delete;
  // pop_pool throws only if this thread has no scope left, i.e. someone popped this
  // guard's scope: a bug that terminating names best.
  ~pool_scope() { owner_->pop_pool(); }  // NOLINT(bugprone-exception-escape)

 private:
  allocator* owner_;
};

}  // namespace swapalloc
