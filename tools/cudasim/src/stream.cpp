/**
 * @file stream.cpp
 * @brief Stream workers, the legacy default stream's implicit ordering, and the
 *        graveyard of destroyed streams (see stream.hpp).
 *
 * Implicit ordering ("Asynchronous Concurrent Execution", legacy default stream): work
 * on the legacy stream waits for all earlier work on the context's blocking streams,
 * and work on a blocking stream waits for all earlier legacy-stream work. Both are
 * queued as ordinary wait operations. Each side reads the other's submitted count
 * before queueing its own work, so the waits can never form a cycle.
 */
#include "stream.hpp"

#include "state.hpp"

#include <algorithm>
#include <iterator>
#include <type_traits>
#include <utility>
#include <variant>

// ---- CUstream_st ----------------------------------------------------------------------

CUstream_st::CUstream_st(CUctx_st& context, unsigned flags, bool legacy) noexcept
  : context_(context), flags_(flags), legacy_(legacy)
{
}

CUstream_st::~CUstream_st()
{
  // Every path that drops the last reference joins first (graveyard, exit handler); this
  // only guards a stream whose start() was never followed by retire().
  if (worker_.joinable()) {
    retire(true);
    if (worker_.get_id() == std::this_thread::get_id()) {
      worker_.detach();
    } else {
      worker_.join();
    }
  }
}

void CUstream_st::start()
{
  worker_ = std::thread([this] { run(); });
}

std::uint64_t CUstream_st::push(cudasim::operation&& work)
{
  std::lock_guard lock(mutex_);
  queue_.push_back(std::move(work));
  work_ready_.notify_one();
  return ++submitted_;
}

std::uint64_t CUstream_st::push_after_legacy(std::shared_ptr<CUstream_st> legacy,
                                             std::uint64_t legacy_sequence,
                                             cudasim::operation&& work)
{
  std::lock_guard lock(mutex_);
  if (legacy_sequence > waits_for_legacy_) {
    queue_.emplace_back(cudasim::wait_op{std::move(legacy), legacy_sequence});
    ++submitted_;
    waits_for_legacy_ = legacy_sequence;
  }
  queue_.push_back(std::move(work));
  work_ready_.notify_one();
  return ++submitted_;
}

std::uint64_t CUstream_st::submitted() const
{
  std::lock_guard lock(mutex_);
  return submitted_;
}

bool CUstream_st::reached(std::uint64_t sequence) const
{
  std::lock_guard lock(mutex_);
  return completed_ >= sequence;
}

void CUstream_st::wait(std::uint64_t sequence) const
{
  std::unique_lock lock(mutex_);
  progress_.wait(lock, [&] { return completed_ >= sequence; });
}

void CUstream_st::retire(bool abandon)
{
  std::lock_guard lock(mutex_);
  stopping_ = true;
  abandon_  = abandon_ || abandon;
  work_ready_.notify_one();
}

bool CUstream_st::finished() const
{
  std::lock_guard lock(mutex_);
  return finished_;
}

void CUstream_st::join()
{
  if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id()) { worker_.join(); }
}

void CUstream_st::run()
{
  std::unique_lock lock(mutex_);
  for (;;) {
    work_ready_.wait(lock, [&] { return !queue_.empty() || stopping_; });
    if (queue_.empty()) { break; }  // stopping, and drained
    cudasim::operation work = std::move(queue_.front());
    queue_.pop_front();
    bool const skip = abandon_;
    lock.unlock();
    if (!skip) { execute(work); }
    work = cudasim::host_function_op{};  // drop captured references outside the lock
    lock.lock();
    ++completed_;
    progress_.notify_all();
  }
  finished_ = true;
}

void CUstream_st::execute(cudasim::operation& work)
{
  // After a fault nothing more runs on the context (sticky error), but it completes.
  if (context_.sticky_error() != CUDA_SUCCESS) { return; }
  CUresult const result = std::visit(
    [this](auto& op) -> CUresult {
      using op_type = std::decay_t<decltype(op)>;
      if constexpr (std::is_same_v<op_type, cudasim::wait_op>) {
        op.stream->wait(op.sequence);
        return CUDA_SUCCESS;
      } else if constexpr (std::is_same_v<op_type, cudasim::host_function_op>) {
        context_.run_host_function(op);
        return CUDA_SUCCESS;
      } else if constexpr (std::is_same_v<op_type, cudasim::copy_op> ||
                           std::is_same_v<op_type, cudasim::batch_op>) {
        return cudasim::execute(op, context_, ready_);  // sets ready_
      } else {
        return cudasim::execute(op, context_);
      }
    },
    work);
  if (!std::holds_alternative<cudasim::copy_op>(work) &&
      !std::holds_alternative<cudasim::batch_op>(work)) {
    ready_ = std::chrono::steady_clock::now();
  }
  if (result != CUDA_SUCCESS) { context_.fault(result); }
}

// ---- CUctx_st: its streams ------------------------------------------------------------

std::shared_ptr<CUstream_st> CUctx_st::legacy_stream()
{
  std::lock_guard lock(mutex_);
  if (!legacy_) {
    auto stream = std::make_shared<CUstream_st>(*this, CU_STREAM_DEFAULT, true);
    stream->start();
    legacy_ = std::move(stream);
  }
  return legacy_;
}

std::shared_ptr<CUstream_st> CUctx_st::started_legacy_stream()
{
  std::lock_guard lock(mutex_);
  return legacy_;
}

void CUctx_st::add_stream(std::shared_ptr<CUstream_st> stream)
{
  std::lock_guard lock(mutex_);
  streams_.push_back(std::move(stream));
}

void CUctx_st::remove_stream(CUstream_st const* stream) noexcept
{
  std::lock_guard lock(mutex_);
  std::erase_if(streams_, [stream](auto const& s) { return s.get() == stream; });
}

std::vector<std::shared_ptr<CUstream_st>> CUctx_st::take_streams()
{
  std::lock_guard lock(mutex_);
  return std::exchange(streams_, {});
}

std::vector<std::shared_ptr<CUstream_st>> CUctx_st::all_streams()
{
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<CUstream_st>> all(streams_);
  if (legacy_) { all.push_back(legacy_); }
  return all;
}

std::vector<std::shared_ptr<CUstream_st>> CUctx_st::legacy_and_blocking_streams()
{
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<CUstream_st>> selected;
  std::copy_if(streams_.begin(), streams_.end(), std::back_inserter(selected),
               [](auto const& s) { return s->blocking(); });
  if (legacy_) { selected.push_back(legacy_); }
  return selected;
}

std::uint64_t CUctx_st::submit_legacy(cudasim::operation&& work)
{
  std::shared_ptr<CUstream_st> const legacy = legacy_stream();
  std::lock_guard lock(mutex_);  // keeps the implicit waits and `work` together
  for (auto const& stream : streams_) {
    if (!stream->blocking()) { continue; }
    std::uint64_t const sequence = stream->submitted();
    if (sequence > stream->legacy_waits_for_) {
      legacy->push(cudasim::wait_op{stream, sequence});
      stream->legacy_waits_for_ = sequence;
    }
  }
  return legacy->push(std::move(work));
}

void CUctx_st::run_host_function(cudasim::host_function_op const& op)
{
  std::unique_lock lock(host_function_mutex_);
  std::uint64_t const turn = host_functions_reached_++;
  host_function_done_.wait(lock, [&] { return host_functions_done_ == turn; });
  lock.unlock();
  if (sticky_error() == CUDA_SUCCESS) {  // a fault while it waited: not called
    cudasim::in_host_function = true;
    op.function(op.user_data);
    cudasim::in_host_function = false;
  }
  lock.lock();
  ++host_functions_done_;
  host_function_done_.notify_all();
}

// ---- Submission, resolution, synchronization, graveyard -------------------------------

namespace cudasim {

std::uint64_t submit(CUstream_st& stream, operation&& work)
{
  if (stream.legacy()) { return stream.context().submit_legacy(std::move(work)); }
  if (stream.blocking()) {
    if (auto legacy = stream.context().started_legacy_stream()) {
      std::uint64_t const sequence = legacy->submitted();
      return stream.push_after_legacy(std::move(legacy), sequence, std::move(work));
    }
  }
  return stream.push(std::move(work));
}

CUresult resolve_stream(CUstream handle, std::shared_ptr<CUstream_st>& out)
{
  if (handle == CU_STREAM_PER_THREAD) { return CUDA_ERROR_NOT_SUPPORTED; }
  if (handle == nullptr || handle == CU_STREAM_LEGACY) {
    CUctx_st* context = nullptr;
    if (CUresult const bad = use_current_context(context); bad != CUDA_SUCCESS) { return bad; }
    out = context->legacy_stream();
    return CUDA_SUCCESS;
  }
  out = simulator::get().streams().find(handle);
  if (!out) { return CUDA_ERROR_INVALID_HANDLE; }
  return use_context(out->context());
}

void synchronize_context(CUctx_st& context)
{
  // cuda.h, cuCtxSynchronize: "blocks until the device has completed all preceding
  // requested tasks" -- the work of streams destroyed while it was pending included.
  std::vector<std::shared_ptr<CUstream_st>> streams = context.all_streams();
  for (auto& buried : simulator::get().graveyard().streams_of(context)) {
    streams.push_back(std::move(buried));
  }
  for (auto const& stream : streams) {
    stream->wait(stream->submitted());
  }
}

std::vector<std::shared_ptr<CUstream_st>> stream_graveyard::streams_of(CUctx_st const& context)
{
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<CUstream_st>> selected;
  std::copy_if(streams_.begin(), streams_.end(), std::back_inserter(selected),
               [&](auto const& s) { return &s->context() == &context; });
  return selected;
}

void stream_graveyard::bury(std::shared_ptr<CUstream_st> stream)
{
  stream->retire(false);
  std::lock_guard lock(mutex_);
  streams_.push_back(std::move(stream));
}

void stream_graveyard::reap()
{
  std::vector<std::shared_ptr<CUstream_st>> done;
  {
    std::lock_guard lock(mutex_);
    auto const split = std::partition(streams_.begin(), streams_.end(),
                                      [](auto const& s) { return !s->finished(); });
    std::move(split, streams_.end(), std::back_inserter(done));
    streams_.erase(split, streams_.end());
  }
  for (auto const& stream : done) {
    stream->join();
  }
}

void stream_graveyard::join_all()
{
  std::vector<std::shared_ptr<CUstream_st>> all;
  {
    std::lock_guard lock(mutex_);
    all.swap(streams_);
  }
  for (auto const& stream : all) {
    stream->retire(true);
  }
  for (auto const& stream : all) {
    stream->join();
  }
}

}  // namespace cudasim
