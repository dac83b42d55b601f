/**
 * @file plugin_instance.hpp
 * @brief The one process-wide allocator of libswapalloc.so: the driver, the allocator, the
 *        private pools PyTorch routes into, the background pressure monitor and the stats
 *        file for `python -m swapalloc ps`, made by swapalloc_init and destroyed by
 *        swapalloc_shutdown.
 *
 * Only this library holds an instance (DESIGN: no process-wide singleton in a header). The
 * C ABI reaches it through `current_instance()`, an acquire load of an atomic pointer: the
 * hot path takes no lock to find it. Lifecycle calls (init, shutdown, configure) serialise
 * on `lifecycle_mutex()`.
 *
 * Thread safety: the members are thread-safe as their types document; `allocate` and
 * `deallocate` may run on any thread.
 */
#pragma once

#include "graph_pools.hpp"
#include "plugin_settings.hpp"
#include "stats_publisher.hpp"

#include <swapalloc/allocator.hpp>
#include <swapalloc/driver.hpp>
#include <swapalloc/pool_scope.hpp>
#include <swapalloc/pressure_monitor.hpp>

#include <cstddef>
#include <memory>
#include <mutex>

namespace swapalloc::plugin {

class plugin_instance {
 public:
  /// Loads the driver and makes the allocator and its monitor from `settings`.
  /// @throws driver_unavailable, config_error, cuda_error.
  explicit plugin_instance(plugin_settings const& settings)
    : driver_(settings.driver_library ? driver(*settings.driver_library) : driver()),
      cache_(driver_, settings.options),
      monitor_(cache_, settings.monitor)
  {
    if (settings.stats_interval.count() > 0) {
      publisher_ = std::make_unique<stats_publisher>(cache_, settings.stats_interval);
    }
  }
  plugin_instance(plugin_instance const&)            = delete;
  plugin_instance& operator=(plugin_instance const&) = delete;
  ~plugin_instance() { stop_background(); }  // its threads walk the allocator: first

  /// Stops the background threads (the stats file's, which removes the file, and the
  /// monitor's): at shutdown, or at process exit when the allocator is never shut down, so
  /// that no thread of ours runs while the process's static objects are destroyed.
  /// Idempotent; the allocator stays usable without them.
  void stop_background() noexcept
  {
    if (publisher_) { publisher_->stop(); }
    monitor_.stop();
  }

  [[nodiscard]] allocator& cache() noexcept { return cache_; }
  [[nodiscard]] graph_pools& graphs() noexcept { return graphs_; }

  /// swapalloc_malloc: `bytes` on `device` for `stream`, in the private pool whose route
  /// accepts the stream, else in the thread's current pool. Cost on the hot path: the
  /// allocator's, plus one relaxed load (no route open).
  [[nodiscard]] CUdeviceptr allocate(std::size_t bytes, int device, CUstream stream)
  {
    if (graphs_.routing()) [[unlikely]] {
      if (auto const pool = graphs_.pool_for(device, stream)) {
        pool_scope const scope(cache_, *pool);
        return cache_.allocate(bytes, device, stream);
      }
    }
    return cache_.allocate(bytes, device, stream);
  }

 private:
  driver driver_;
  allocator cache_;
  graph_pools graphs_;
  pressure_monitor monitor_;  // starts once the allocator exists
  std::unique_ptr<stats_publisher> publisher_;
};

/// The instance, or null outside init..shutdown. Cost: one acquire load.
[[nodiscard]] plugin_instance* current_instance() noexcept;

/// The instance; @throws abi_error (NOT_INITIALIZED) naming `function` when there is none.
[[nodiscard]] plugin_instance& require_instance(char const* function);

/// Serialises init, shutdown and configure.
[[nodiscard]] std::mutex& lifecycle_mutex() noexcept;

}  // namespace swapalloc::plugin
