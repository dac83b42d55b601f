/**
 * @file stream.hpp
 * @brief Streams: in-order queues of device work, each run by its own worker thread.
 *
 * A stream counts the operations submitted to it and the operations completed; the
 * n-th operation is complete when `completed >= n`. That pair (stream, n) is all an
 * event record or a stream wait needs to capture, as on a GPU where an event captures
 * "the contents of hStream at the time of this call" (cuda.h, cuEventRecord).
 *
 * Copies, memsets, event records and waits of different streams run concurrently. Host
 * functions do not: the worker that reaches one waits for its context's turn
 * (CUctx_st::run_host_function), so the host functions of one context run one at a time,
 * as on the real driver, and a blocked host function holds back every other stream's
 * host functions (but not their other work).
 *
 * Once the stream's context has a sticky error, the worker skips its work (cuda.h,
 * cuLaunchHostFunc: "the function will not be called in the event of an error in the
 * CUDA context") but still counts it complete, so nothing waits forever.
 */
#pragma once

#include "context.hpp"
#include "cuda_api.hpp"
#include "operation.hpp"
#include "registry.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

struct CUstream_st {
 public:
  /// A stream of `context`; `legacy` for the context's legacy default stream.
  CUstream_st(CUctx_st& context, unsigned flags, bool legacy) noexcept;
  ~CUstream_st();
  CUstream_st(CUstream_st const&)            = delete;
  CUstream_st& operator=(CUstream_st const&) = delete;

  /// Starts the worker thread. Throws std::system_error when no thread can be made.
  void start();

  [[nodiscard]] CUctx_st& context() const noexcept { return context_; }
  [[nodiscard]] bool legacy() const noexcept { return legacy_; }
  /// A CU_STREAM_DEFAULT stream, which synchronizes with the legacy stream.
  [[nodiscard]] bool blocking() const noexcept { return !legacy_ && flags_ == CU_STREAM_DEFAULT; }

  /// Queues `work` (no implicit ordering; see cudasim::submit); returns its sequence number.
  std::uint64_t push(cudasim::operation&& work);
  /// Queues a wait for the legacy stream's first `legacy_sequence` operations, unless
  /// an earlier one covers it, then `work`; returns the sequence number of `work`.
  std::uint64_t push_after_legacy(std::shared_ptr<CUstream_st> legacy,
                                  std::uint64_t legacy_sequence, cudasim::operation&& work);

  /// Number of operations submitted so far.
  [[nodiscard]] std::uint64_t submitted() const;
  /// True when the first `sequence` operations have completed.
  [[nodiscard]] bool reached(std::uint64_t sequence) const;
  /// Blocks until the first `sequence` operations have completed.
  void wait(std::uint64_t sequence) const;

  /// Stops the worker once its queue is empty; with `abandon`, queued work is skipped.
  void retire(bool abandon);
  /// True once a retired worker has finished (joining it will not block).
  [[nodiscard]] bool finished() const;
  /// Joins a retired worker. Not from the worker itself.
  void join();

 private:
  friend struct CUctx_st;  // submit_legacy() keeps legacy_waits_for_

  void run();
  void execute(cudasim::operation& work);

  CUctx_st& context_;
  unsigned const flags_;
  bool const legacy_;

  mutable std::mutex mutex_;
  mutable std::condition_variable work_ready_;  // queue_ not empty or stopping_
  mutable std::condition_variable progress_;    // completed_ advanced
  std::deque<cudasim::operation> queue_;
  std::uint64_t submitted_        = 0;
  std::uint64_t completed_        = 0;
  std::uint64_t waits_for_legacy_ = 0;  // legacy operations this stream already waits for
  bool stopping_                  = false;
  bool abandon_                   = false;
  bool finished_                  = false;
  std::thread worker_;
  // When the last operation ended (a copy: on its link's clock). Worker thread only.
  std::chrono::steady_clock::time_point ready_{};

  // Operations of this (blocking) stream that the legacy stream already waits for.
  // Guarded by the context's mutex, not by mutex_.
  std::uint64_t legacy_waits_for_ = 0;
};

namespace cudasim {

/// Queues `work` on `stream` with the implicit ordering of the legacy default stream:
/// work on a CU_STREAM_DEFAULT stream waits for earlier legacy-stream work, and work on
/// the legacy stream waits for earlier work on every blocking stream of its context.
/// CU_STREAM_NON_BLOCKING streams do neither. Returns the sequence number of `work`.
std::uint64_t submit(CUstream_st& stream, operation&& work);

/// Resolves a CUstream argument: 0 and CU_STREAM_LEGACY are the calling thread's
/// current context's legacy stream; CU_STREAM_PER_THREAD is not modelled. Checks the
/// stream's context for use (sticky error, CUDA_ERROR_ILLEGAL_ADDRESS).
[[nodiscard]] CUresult resolve_stream(CUstream handle, std::shared_ptr<CUstream_st>& out);

/// Waits for all work of `context` submitted so far (cuCtxSynchronize).
void synchronize_context(CUctx_st& context);

/// Destroyed streams whose workers are still draining; joined once done, or at exit.
class stream_graveyard {
 public:
  void bury(std::shared_ptr<CUstream_st> stream);
  /// Joins the workers that have finished.
  void reap();
  /// The buried streams of `context` whose workers may still be draining.
  [[nodiscard]] std::vector<std::shared_ptr<CUstream_st>> streams_of(CUctx_st const& context);
  /// Joins every worker, skipping the work still queued (at exit).
  void join_all();

 private:
  std::mutex mutex_;
  std::vector<std::shared_ptr<CUstream_st>> streams_;
};

using stream_registry = handle_registry<CUstream_st>;

}  // namespace cudasim
