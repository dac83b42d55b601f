/**
 * @file graph_pools.hpp
 * @brief PyTorch's private memory pools (CUDA graphs, torch.cuda.MemPool under a pluggable
 *        allocator) as swapalloc pools: the begin/end-allocate-to-pool and release-pool
 *        hooks' state.
 *
 * PyTorch names such a pool by a MempoolId_t (a pair of unsigned long long), and, while a
 * capture or a `use_mem_pool` block runs, routes the allocations whose stream its filter
 * accepts into it (c10/cuda/CUDACachingAllocator.cpp, beginAllocateToPool). Here each id
 * gets a swapalloc pool "torch_pool_<a>_<b>", created at its first begin and not evictable
 * (a graph replays into its addresses at any time, so its memory must stay resident). An
 * allocation consults the routes only while one is open (`routing`, one relaxed load on
 * the hot path). release_pool destroys the pool once it holds no block; until then it is
 * kept and destroyed at a later release or empty_cache (`destroy_released`), as PyTorch
 * frees a released pool's blocks when its last tensor dies.
 *
 * Thread safety: any thread; one mutex guards the routes and pools. A filter runs under it
 * (PyTorch's filters compare capture ids and never call back into the allocator).
 */
#pragma once

#include <swapalloc/allocator.hpp>

#include <atomic>
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace swapalloc::plugin {

/// c10::cuda::MempoolId_t.
using mempool_id = std::pair<unsigned long long, unsigned long long>;

/// Whether an allocation on a stream belongs to a private pool (PyTorch's filter).
using stream_filter = std::function<bool(CUstream)>;

class graph_pools {
 public:
  /// Whether any route is open. Cost: one relaxed load.
  [[nodiscard]] bool routing() const noexcept
  {
    return open_routes_.load(std::memory_order_relaxed) != 0;
  }

  /// The pool whose open route on `device` accepts `stream`, if any.
  [[nodiscard]] std::optional<pool_id> pool_for(int device, CUstream stream) const
  {
    std::lock_guard const lock(mutex_);
    for (route const& r : routes_) {
      if (r.device == device && r.filter(stream)) { return r.pool; }
    }
    return std::nullopt;
  }

  /// Opens a route on `device` into `id`'s pool (created now if new) for the streams
  /// `filter` accepts. @throws what allocator::create_pool throws.
  void begin(allocator& cache, int device, mempool_id id, stream_filter filter)
  {
    std::lock_guard const lock(mutex_);
    pool_id pool = 0;
    if (auto const found = pools_.find(id); found != pools_.end()) {
      pool = found->second;
    } else {
      pool_options options;
      options.evictable = false;
      pool              = cache.create_pool(name_of(id), options);
      pools_.emplace(id, pool);
    }
    released_.erase(id);
    routes_.push_back(route{device, id, std::move(filter), pool});
    open_routes_.store(routes_.size(), std::memory_order_relaxed);
  }

  /// Closes the routes on `device` into `id`'s pool. Returns whether one was open.
  bool end(int device, mempool_id id)
  {
    std::lock_guard const lock(mutex_);
    std::size_t const before = routes_.size();
    std::erase_if(routes_, [&](route const& r) { return r.device == device && r.id == id; });
    open_routes_.store(routes_.size(), std::memory_order_relaxed);
    return routes_.size() != before;
  }

  /// Marks `id`'s pool released (its routes closed) and destroys the released pools that
  /// hold no block. Returns whether `id` named a pool.
  bool release(allocator& cache, int device, mempool_id id)
  {
    std::lock_guard const lock(mutex_);
    if (!pools_.contains(id)) { return false; }
    std::erase_if(routes_, [&](route const& r) { return r.device == device && r.id == id; });
    open_routes_.store(routes_.size(), std::memory_order_relaxed);
    released_.insert(id);
    destroy_empty(cache);
    return true;
  }

  /// Destroys the released pools that hold no block any more (empty_cache).
  void destroy_released(allocator& cache)
  {
    std::lock_guard const lock(mutex_);
    destroy_empty(cache);
  }

  /// The pool name of `id`: "torch_pool_<first>_<second>".
  [[nodiscard]] static std::string name_of(mempool_id id)
  {
    return "torch_pool_" + std::to_string(id.first) + "_" + std::to_string(id.second);
  }

 private:
  struct route {
    int device;
    mempool_id id;
    stream_filter filter;
    pool_id pool;
  };

  /// @pre mutex_ held.
  void destroy_empty(allocator& cache)
  {
    for (auto it = released_.begin(); it != released_.end();) {
      pool_id const pool = pools_.at(*it);
      if (holds_blocks(cache, pool)) {
        ++it;
        continue;
      }
      cache.destroy_pool(pool);
      pools_.erase(*it);
      it = released_.erase(it);
    }
  }

  [[nodiscard]] static bool holds_blocks(allocator const& cache, pool_id pool)
  {
    for (int device = 0; device < cache.device_count(); ++device) {
      if (cache.stats(pool, device).allocated_bytes != 0) { return true; }
    }
    return false;
  }

  mutable std::mutex mutex_;
  std::atomic<std::size_t> open_routes_{0};
  std::vector<route> routes_;
  std::map<mempool_id, pool_id> pools_;
  std::set<mempool_id> released_;
};

}  // namespace swapalloc::plugin
