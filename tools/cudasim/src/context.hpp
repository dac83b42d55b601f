/**
 * @file context.hpp
 * @brief A device's primary context: retain count, sticky error, its streams, and the
 *        one-at-a-time order of its host functions.
 *
 * The simulator has primary contexts only, one per device, as the CUDA runtime and
 * PyTorch use them. A CUcontext is a pointer to one of these; they live as long as
 * the process, so a CUcontext is validated by comparing it with the devices' contexts.
 */
#pragma once

#include "cuda_api.hpp"
#include "operation.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

struct CUctx_st {
 public:
  explicit CUctx_st(int device) noexcept : device_(device) {}
  CUctx_st(CUctx_st const&)            = delete;
  CUctx_st& operator=(CUctx_st const&) = delete;

  [[nodiscard]] int device() const noexcept { return device_; }

  /// cuDevicePrimaryCtxRetain.
  void retain() noexcept { retained_.fetch_add(1, std::memory_order_relaxed); }
  /// cuDevicePrimaryCtxRelease_v2; false when the context is not retained (cuda.h:
  /// "Releasing a primary context that has not been previously retained will fail").
  [[nodiscard]] bool release() noexcept;
  /// A context is usable while retained.
  [[nodiscard]] bool active() const noexcept
  {
    return retained_.load(std::memory_order_relaxed) > 0;
  }

  /// CUDA_ERROR_ILLEGAL_ADDRESS once a device access faulted, until reset; else success.
  [[nodiscard]] CUresult sticky_error() const noexcept
  {
    return sticky_.load(std::memory_order_acquire);
  }
  void fault(CUresult error) noexcept;
  void clear_fault() noexcept { sticky_.store(CUDA_SUCCESS, std::memory_order_release); }

  // ---- Streams (defined in stream.cpp, which models the legacy-stream ordering). ----

  /// The legacy default stream (0 or CU_STREAM_LEGACY), started on first use.
  [[nodiscard]] std::shared_ptr<CUstream_st> legacy_stream();
  /// The legacy stream if it has been started, else nullptr.
  [[nodiscard]] std::shared_ptr<CUstream_st> started_legacy_stream();
  void add_stream(std::shared_ptr<CUstream_st> stream);
  void remove_stream(CUstream_st const* stream) noexcept;
  /// Every created stream (legacy excluded), removing them from the context.
  [[nodiscard]] std::vector<std::shared_ptr<CUstream_st>> take_streams();
  /// The legacy stream (if started) and every created stream.
  [[nodiscard]] std::vector<std::shared_ptr<CUstream_st>> all_streams();
  /// The legacy stream (if started) and the blocking (CU_STREAM_DEFAULT) streams.
  [[nodiscard]] std::vector<std::shared_ptr<CUstream_st>> legacy_and_blocking_streams();

  /// Queues `work` on the legacy stream behind implicit waits for the earlier work of
  /// every blocking stream; returns its sequence number on the legacy stream.
  std::uint64_t submit_legacy(cudasim::operation&& work);

  /// Calls a cuLaunchHostFunc function on the calling stream worker once every host
  /// function of this context that a stream reached earlier has returned: host functions
  /// of one context run one at a time, in the order their streams reach them, as on the
  /// real driver, which calls them from one thread per context (cuda.h: "Host functions
  /// without a mandated order (such as in independent streams) execute in undefined
  /// order and may be serialized"). Not called when the context has a sticky error by
  /// the time its turn comes (cuda.h: "will not be called in the event of an error").
  void run_host_function(cudasim::host_function_op const& op);

 private:
  int const device_;
  std::atomic<int> retained_{0};
  std::atomic<CUresult> sticky_{CUDA_SUCCESS};
  std::mutex mutex_;                                   // guards the two below
  std::shared_ptr<CUstream_st> legacy_;                // started on first use
  std::vector<std::shared_ptr<CUstream_st>> streams_;  // created, not destroyed

  std::mutex host_function_mutex_;              // guards the two counters below
  std::condition_variable host_function_done_;  // host_functions_done_ advanced
  std::uint64_t host_functions_reached_ = 0;    // turns handed out, in order of arrival
  std::uint64_t host_functions_done_    = 0;    // turns finished
};
