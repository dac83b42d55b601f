/**
 * @file pool_registry.hpp
 * @brief The allocator's pools by id: name, options (priority, evictable, read-only,
 *        hints) and whether each is alive. Device-independent; per-device state lives in
 *        `device_state` (device_state.hpp).
 *
 * Pool ids are indexes, never reused: a destroyed pool's id stays dead, its name free.
 * Pool 0 is the default pool ("default"): not evictable, never destroyed (DESIGN §6).
 *
 * **Lock order** (the allocator's, written down here because the registry is the lock
 * every other one may take): a device's mutex, then the registry's mutex. The registry
 * calls out to nothing while it holds its mutex, and a thread holding the registry's
 * mutex takes no device mutex. Two device mutexes are never held at once.
 *
 * Thread safety: every member may be called from any thread; each takes the registry's
 * mutex for a short, allocation-light section (copies of an entry are returned).
 */
#pragma once

#include <swapalloc/codec.hpp>
#include <swapalloc/errors.hpp>
#include <swapalloc/policy.hpp>
#include <swapalloc/scope_stack.hpp>

#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace swapalloc {

/// Per-pool settings; 0 takes the allocator's default.
struct pool_options {
  std::size_t capacity{0};   ///< bytes of addresses reserved per device
  std::size_t page_size{0};  ///< bytes per page: a multiple of the allocation granularity
  bool evictable{true};      ///< false: never evicted (the default pool never is)
  pool_priority priority{pool_priority::normal};  ///< eviction order; critical: never evicted
  dtype_hint dtype{dtype_hint::none};             ///< picks the codec; none: sampled at eviction
  std::optional<codec_id> codec;                  ///< forces a codec (tests, benchmarks)
  bool read_only{false};                          ///< see allocator::set_read_only
};

/// One pool's registry entry.
struct pool_entry {
  std::string name;
  pool_options options;
  bool alive{true};
};

/// The allocator's pools. See the file comment.
class pool_registry {
 public:
  /// A registry holding the default pool; misuse is counted in `usage`.
  explicit pool_registry(usage_counters const& usage) : usage_(&usage)
  {
    pool_options never_evicted;
    never_evicted.evictable = false;  // DESIGN §6: the default pool is not evictable
    pools_.push_back(pool_entry{"default", never_evicted, true});
  }

  /**
   * @brief Registers a pool named `name` with `options`.
   * @throws usage_error (bad_pool) if the name is empty or a live pool has it.
   */
  [[nodiscard]] pool_id create(std::string name, pool_options const& options)
  {
    std::lock_guard const lock(mutex_);
    if (name.empty()) {
      throw usage_->raise(usage_error_kind::bad_pool,
                          "create_pool(name=\"\"): a pool needs a name");
    }
    for (pool_entry const& entry : pools_) {
      if (entry.alive && entry.name == name) {
        throw usage_->raise(usage_error_kind::bad_pool,
                            "create_pool(name=\"" + name + "\"): a pool of that name exists");
      }
    }
    pools_.push_back(pool_entry{std::move(name), options, true});
    return static_cast<pool_id>(pools_.size() - 1);
  }

  /// The id of the live pool named `name`. @throws usage_error (bad_pool) if none.
  [[nodiscard]] pool_id find(std::string_view name) const
  {
    if (std::optional<pool_id> const found = lookup(name)) { return *found; }
    throw usage_->raise(usage_error_kind::bad_pool,
                        "find_pool(\"" + std::string(name) + "\"): no such pool");
  }

  /// The id of the live pool named `name`, if any (not a misuse when none).
  [[nodiscard]] std::optional<pool_id> lookup(std::string_view name) const
  {
    std::lock_guard const lock(mutex_);
    for (std::size_t id = 0; id < pools_.size(); ++id) {
      if (pools_[id].alive && pools_[id].name == name) { return static_cast<pool_id>(id); }
    }
    return std::nullopt;
  }

  /// The options of live pool `id`, if it is alive (not a misuse when not).
  [[nodiscard]] std::optional<pool_options> options_of(pool_id id) const
  {
    std::lock_guard const lock(mutex_);
    if (id >= pools_.size() || !pools_[id].alive) { return std::nullopt; }
    return pools_[id].options;
  }

  /// Whether pool `id` was created and not destroyed (not a misuse when not).
  [[nodiscard]] bool alive(pool_id id) const
  {
    std::lock_guard const lock(mutex_);
    return id < pools_.size() && pools_[id].alive;
  }

  /// A copy of live pool `id`'s entry; `function` names the caller in the error.
  /// @throws usage_error (bad_pool) if it was never created or is destroyed.
  [[nodiscard]] pool_entry entry(pool_id id, char const* function) const
  {
    std::lock_guard const lock(mutex_);
    return live(id, function);
  }

  /// Throws usage_error (bad_pool) unless pool `id` is alive.
  void require(pool_id id, char const* function) const { (void)entry(id, function); }

  /// Sets pool `id`'s read-only option. @throws usage_error (bad_pool).
  void set_read_only(pool_id id, bool read_only)
  {
    std::lock_guard const lock(mutex_);
    (void)live(id, "set_read_only");  // throws for a bad id
    pools_[id].options.read_only = read_only;
  }

  /// Marks pool `id` destroyed; its name becomes free. @pre it is alive.
  void retire(pool_id id)
  {
    std::lock_guard const lock(mutex_);
    pools_[id].alive = false;
  }

  /// Ids handed out so far (alive or not): every id is below it.
  [[nodiscard]] std::size_t size() const
  {
    std::lock_guard const lock(mutex_);
    return pools_.size();
  }

 private:
  /// @pre mutex_ is held.
  [[nodiscard]] pool_entry const& live(pool_id id, char const* function) const
  {
    if (id >= pools_.size() || !pools_[id].alive) {
      throw usage_->raise(usage_error_kind::bad_pool,
                          std::string(function) + "(pool=" + std::to_string(id) +
                            "): no such pool (never created, or destroyed)");
    }
    return pools_[id];
  }

  usage_counters const* usage_;
  mutable std::mutex mutex_;
  std::vector<pool_entry> pools_;  // by pool_id
};

}  // namespace swapalloc
