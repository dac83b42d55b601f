/**
 * @file event.hpp
 * @brief Events: the last record of a stream's work, with its completion time.
 *
 * cuda.h, cuEventRecord: "Captures in hEvent the contents of hStream at the time of
 * this call ... can be called multiple times on the same event and will overwrite the
 * previously captured state. Other APIs such as cuStreamWaitEvent() use the most
 * recently captured state at the time of the API call". A record is therefore the pair
 * (stream, sequence number), numbered by a generation so that an older record that
 * completes late never stamps a newer one.
 */
#pragma once

#include "context.hpp"
#include "cuda_api.hpp"
#include "registry.hpp"
#include "stream.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>

struct CUevent_st : std::enable_shared_from_this<CUevent_st> {
 public:
  using clock = std::chrono::steady_clock;

  /// What a record captured: the stream and how many of its operations.
  struct capture {
    std::shared_ptr<CUstream_st> stream;
    std::uint64_t sequence;
  };

  CUevent_st(CUctx_st& context, unsigned flags) noexcept : context_(context), flags_(flags) {}

  [[nodiscard]] CUctx_st& context() const noexcept { return context_; }
  /// False for CU_EVENT_DISABLE_TIMING events.
  [[nodiscard]] bool timed() const noexcept { return (flags_ & CU_EVENT_DISABLE_TIMING) == 0; }

  /// Records the work submitted to `stream` so far (cuEventRecord).
  void record(std::shared_ptr<CUstream_st> const& stream);
  /// The last record; empty when never recorded.
  [[nodiscard]] std::optional<capture> last_record() const;
  /// True when never recorded or the last record's work has completed.
  [[nodiscard]] bool complete() const;
  /// Blocks until the last record's work has completed.
  void synchronize() const;
  /// When the last record completed: empty while pending, never recorded, or untimed.
  [[nodiscard]] std::optional<clock::time_point> completion_time() const;

  /// The worker's side of a record: stamps `generation` with the current time.
  void complete_record(std::uint64_t generation) noexcept;

 private:
  CUctx_st& context_;
  unsigned const flags_;
  mutable std::mutex mutex_;
  std::optional<capture> record_;       // guarded by mutex_
  std::uint64_t generation_       = 0;  // records made
  std::uint64_t timed_generation_ = 0;  // the record `time_` belongs to
  clock::time_point time_{};
};

namespace cudasim {
using event_registry = handle_registry<CUevent_st>;
}  // namespace cudasim
