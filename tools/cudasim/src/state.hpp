/**
 * @file state.hpp
 * @brief The simulated driver: configuration, devices, the tables of live objects, and
 *        the prologue every entry point runs.
 *
 * One `simulator` per process, created at the first call and never destroyed: worker
 * threads and the exit report use it while static objects are being destroyed.
 *
 * Every entry point is written `return api(entry::x, [&] { ... });`. The prologue
 * (`enter`) does, in this order: count the call and apply an injected fault (so a
 * failing call has no effect); refuse calls made from a host function (cuda.h,
 * cuLaunchHostFunc: "Attempting to use a CUDA API may result in
 * CUDA_ERROR_NOT_PERMITTED"); refuse calls after the exit handler ran
 * (CUDA_ERROR_DEINITIALIZED: "the CUDA driver is in the process of shutting down");
 * refuse calls before cuInit (CUDA_ERROR_NOT_INITIALIZED). Exceptions never cross the
 * C ABI: running out of memory or threads is CUDA_ERROR_OUT_OF_MEMORY.
 */
#pragma once

#include "config.hpp"
#include "context.hpp"
#include "cuda_api.hpp"
#include "event.hpp"
#include "faults.hpp"
#include "host_memory.hpp"
#include "link.hpp"
#include "stream.hpp"
#include "vmm.hpp"

#include <array>
#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

namespace cudasim {

/// One simulated GPU.
struct device {
  device(int ordinal_, std::size_t capacity_, std::size_t external_) noexcept
    : ordinal(ordinal_), capacity(capacity_), external(external_), context(ordinal_)
  {
  }

  int const ordinal;
  std::size_t const capacity;          ///< SWAPALLOC_SIM_MEMORY
  std::atomic<std::size_t> external;   ///< used by "other processes"
  std::atomic<std::size_t> used{0};    ///< bytes of live physical allocations
  std::array<link_throttle, 2> links;  ///< [0] host to device, [1] device to host
  CUctx_st context;                    ///< the primary context

  /// Free bytes as cuMemGetInfo_v2 reports them.
  [[nodiscard]] std::size_t free_bytes() const noexcept;
};

class simulator {
 public:
  [[nodiscard]] static simulator& get();

  /// cuInit(0): reads the configuration on the first success.
  [[nodiscard]] CUresult initialize();
  [[nodiscard]] bool initialized() const noexcept
  {
    return initialized_.load(std::memory_order_acquire);
  }
  [[nodiscard]] bool shut_down() const noexcept
  {
    return shut_down_.load(std::memory_order_acquire);
  }
  /// Marks the driver shut down (every later call is CUDA_ERROR_DEINITIALIZED).
  void begin_shutdown() noexcept { shut_down_.store(true, std::memory_order_release); }

  [[nodiscard]] config const& settings() const noexcept { return config_; }
  [[nodiscard]] int device_count() const noexcept { return static_cast<int>(devices_.size()); }
  /// The device of ordinal `ordinal`, nullptr when there is none.
  [[nodiscard]] device* find_device(CUdevice ordinal) noexcept;
  /// The primary context `handle` points to, nullptr when it is not one.
  [[nodiscard]] CUctx_st* find_context(CUcontext handle) noexcept;

  [[nodiscard]] vmm_table& vmm() noexcept { return vmm_; }
  [[nodiscard]] host_registry& host() noexcept { return host_; }
  [[nodiscard]] stream_registry& streams() noexcept { return streams_; }
  [[nodiscard]] stream_graveyard& graveyard() noexcept { return graveyard_; }
  [[nodiscard]] event_registry& events() noexcept { return events_; }

 private:
  simulator() = default;

  std::mutex init_mutex_;
  std::atomic<bool> initialized_{false};
  std::atomic<bool> shut_down_{false};
  config config_;                                 // written once, before initialized_
  std::vector<std::unique_ptr<device>> devices_;  // written once, before initialized_
  vmm_table vmm_;
  host_registry host_;
  stream_registry streams_;
  stream_graveyard graveyard_;
  event_registry events_;
};

/// True on a stream worker while it runs a cuLaunchHostFunc function.
extern thread_local bool in_host_function;

/// The prologue of every entry point (see the file comment).
[[nodiscard]] CUresult enter(entry e, bool requires_init) noexcept;

/// Registers the exit report (report.cpp); called at the first successful cuInit.
void install_exit_handler() noexcept;

template <class Body>
[[nodiscard]] CUresult guarded(Body&& body) noexcept
{
  try {
    return body();
  } catch (std::bad_alloc const&) {
    return CUDA_ERROR_OUT_OF_MEMORY;
  } catch (std::system_error const&) {  // no thread could be started
    return CUDA_ERROR_OUT_OF_MEMORY;
  } catch (...) {
    return CUDA_ERROR_UNKNOWN;
  }
}

/// Runs an entry point's body after the prologue.
template <class Body>
[[nodiscard]] CUresult api(entry e, Body&& body) noexcept
{
  if (CUresult const refused = enter(e, true); refused != CUDA_SUCCESS) { return refused; }
  return guarded(std::forward<Body>(body));
}

/// For the entry points that work before cuInit (cuda.h: cuGetErrorName,
/// cuGetErrorString, cuDriverGetVersion, and cuInit itself).
template <class Body>
[[nodiscard]] CUresult api_before_init(entry e, Body&& body) noexcept
{
  if (CUresult const refused = enter(e, false); refused != CUDA_SUCCESS) { return refused; }
  return guarded(std::forward<Body>(body));
}

/// The calling thread's current context (cuCtxSetCurrent); nullptr when none.
[[nodiscard]] CUctx_st*& current_context() noexcept;

/// Checks that `context` may be used: CUDA_ERROR_INVALID_CONTEXT when it is not
/// retained, its sticky error when a device access faulted.
[[nodiscard]] CUresult use_context(CUctx_st const& context) noexcept;

/// The current context, checked with use_context; CUDA_ERROR_INVALID_CONTEXT when none.
[[nodiscard]] CUresult use_current_context(CUctx_st*& out) noexcept;

/// The device of `context`.
[[nodiscard]] device& device_of(CUctx_st const& context) noexcept;

/// The value cuDeviceGetAttribute gives `attribute` (every device alike), nullopt for an
/// attribute the simulator does not answer (context.cpp).
[[nodiscard]] std::optional<int> attribute_value(CUdevice_attribute const& attribute) noexcept;

}  // namespace cudasim
