/**
 * @file event.cpp
 * @brief Event records, queries and timing (see event.hpp), and the event entry points.
 *
 * Timestamps are taken by the stream's worker when it reaches the record, so elapsed
 * times measure host time spent on the stream's work (and the link model's sleeps).
 */
#include "event.hpp"

#include "state.hpp"

#include <chrono>

// ---- CUevent_st -----------------------------------------------------------------------

void CUevent_st::record(std::shared_ptr<CUstream_st> const& stream)
{
  // Under the event's lock, so that two records of one event capture in one order.
  std::lock_guard lock(mutex_);
  std::uint64_t const generation = ++generation_;
  std::uint64_t const sequence =
    cudasim::submit(*stream, cudasim::record_op{shared_from_this(), generation});
  record_ = capture{stream, sequence};
}

std::optional<CUevent_st::capture> CUevent_st::last_record() const
{
  std::lock_guard lock(mutex_);
  return record_;
}

bool CUevent_st::complete() const
{
  std::optional<capture> const last = last_record();
  return !last || last->stream->reached(last->sequence);
}

void CUevent_st::synchronize() const
{
  if (std::optional<capture> const last = last_record()) { last->stream->wait(last->sequence); }
}

std::optional<CUevent_st::clock::time_point> CUevent_st::completion_time() const
{
  std::lock_guard lock(mutex_);
  if (!timed() || !record_ || timed_generation_ != generation_) { return std::nullopt; }
  return time_;
}

void CUevent_st::complete_record(std::uint64_t generation) noexcept
{
  clock::time_point const now = clock::now();
  std::lock_guard lock(mutex_);
  if (generation != generation_) { return; }  // re-recorded since: that record will stamp
  time_             = now;
  timed_generation_ = generation;
}

namespace cudasim {

CUresult execute(record_op& op, CUctx_st& /*context*/)
{
  op.event->complete_record(op.generation);
  return CUDA_SUCCESS;
}

namespace {

/// The live event `handle`, checked for use; `out` is empty on failure.
[[nodiscard]] CUresult find_event(CUevent handle, std::shared_ptr<CUevent_st>& out)
{
  out = simulator::get().events().find(handle);
  if (!out) { return CUDA_ERROR_INVALID_HANDLE; }
  return use_context(out->context());
}

}  // namespace
}  // namespace cudasim

using cudasim::api;
using cudasim::entry;

CUresult CUDAAPI cuEventCreate(CUevent* phEvent, unsigned int Flags)
{
  return api(entry::event_create, [&] {
    constexpr unsigned known =
      CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS;
    // cuda.h: "CU_EVENT_INTERPROCESS must be specified along with CU_EVENT_DISABLE_TIMING".
    bool const interprocess_timed =
      (Flags & CU_EVENT_INTERPROCESS) != 0 && (Flags & CU_EVENT_DISABLE_TIMING) == 0;
    if (phEvent == nullptr || (Flags & ~known) != 0 || interprocess_timed) {
      return CUDA_ERROR_INVALID_VALUE;
    }
    CUctx_st* context = nullptr;
    if (CUresult const bad = cudasim::use_current_context(context); bad != CUDA_SUCCESS) {
      return bad;
    }
    auto event = std::make_shared<CUevent_st>(*context, Flags);
    *phEvent   = event.get();
    cudasim::simulator::get().events().add(std::move(event));
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuEventDestroy(CUevent hEvent)
{
  return api(entry::event_destroy, [&] {
    std::shared_ptr<CUevent_st> event;
    if (CUresult const bad = cudasim::find_event(hEvent, event); bad != CUDA_SUCCESS) {
      return bad;
    }
    // cuda.h: "the call does not block on completion of the event, and any associated
    // resources will automatically be released asynchronously at completion" (a queued
    // record holds its own reference).
    return cudasim::simulator::get().events().remove(hEvent) ? CUDA_SUCCESS
                                                             : CUDA_ERROR_INVALID_HANDLE;
  });
}

CUresult CUDAAPI cuEventRecord(CUevent hEvent, CUstream hStream)
{
  return api(entry::event_record, [&] {
    std::shared_ptr<CUevent_st> event;
    if (CUresult const bad = cudasim::find_event(hEvent, event); bad != CUDA_SUCCESS) {
      return bad;
    }
    std::shared_ptr<CUstream_st> stream;
    if (CUresult const bad = cudasim::resolve_stream(hStream, stream); bad != CUDA_SUCCESS) {
      return bad;
    }
    // cuda.h: "hEvent and hStream must be from the same context otherwise
    // CUDA_ERROR_INVALID_HANDLE is returned."
    if (&stream->context() != &event->context()) { return CUDA_ERROR_INVALID_HANDLE; }
    event->record(stream);
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuEventQuery(CUevent hEvent)
{
  return api(entry::event_query, [&] {
    std::shared_ptr<CUevent_st> event;
    if (CUresult const bad = cudasim::find_event(hEvent, event); bad != CUDA_SUCCESS) {
      return bad;
    }
    return event->complete() ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
  });
}

CUresult CUDAAPI cuEventSynchronize(CUevent hEvent)
{
  return api(entry::event_synchronize, [&] {
    std::shared_ptr<CUevent_st> event;
    if (CUresult const bad = cudasim::find_event(hEvent, event); bad != CUDA_SUCCESS) {
      return bad;
    }
    event->synchronize();
    return event->context().sticky_error();
  });
}

CUresult CUDAAPI cuEventElapsedTime(float* pMilliseconds, CUevent hStart, CUevent hEnd)
{
  return api(entry::event_elapsed_time, [&] {
    if (pMilliseconds == nullptr) { return CUDA_ERROR_INVALID_VALUE; }
    std::shared_ptr<CUevent_st> start;
    std::shared_ptr<CUevent_st> end;
    if (CUresult const bad = cudasim::find_event(hStart, start); bad != CUDA_SUCCESS) {
      return bad;
    }
    if (CUresult const bad = cudasim::find_event(hEnd, end); bad != CUDA_SUCCESS) { return bad; }
    // cuda.h: "If cuEventRecord() has not been called on either event then
    // CUDA_ERROR_INVALID_HANDLE is returned ... If either event was created with the
    // CU_EVENT_DISABLE_TIMING flag, then this function will return CUDA_ERROR_INVALID_HANDLE."
    if (!start->timed() || !end->timed() || !start->last_record() || !end->last_record()) {
      return CUDA_ERROR_INVALID_HANDLE;
    }
    // "... one or both of them has not yet been completed ... CUDA_ERROR_NOT_READY".
    if (!start->complete() || !end->complete()) { return CUDA_ERROR_NOT_READY; }
    auto const from = start->completion_time();
    auto const to   = end->completion_time();
    if (!from || !to) { return CUDA_ERROR_NOT_READY; }  // re-recorded meanwhile
    *pMilliseconds = std::chrono::duration<float, std::milli>(*to - *from).count();
    return CUDA_SUCCESS;
  });
}
