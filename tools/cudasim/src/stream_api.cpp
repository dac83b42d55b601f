/**
 * @file stream_api.cpp
 * @brief The stream entry points: create, destroy, synchronize, query, wait for an
 *        event, launch a host function.
 *
 * The legacy default stream (0 or CU_STREAM_LEGACY) also stands for the blocking
 * streams of its context when synchronized or queried: its next operation would wait
 * for their earlier work, so "the legacy stream is idle" means they are too.
 */
#include "state.hpp"

namespace cudasim {
namespace {

/// The streams whose work `stream` stands for when synchronized or queried.
[[nodiscard]] std::vector<std::shared_ptr<CUstream_st>> covered_streams(
  std::shared_ptr<CUstream_st> stream)
{
  if (stream->legacy()) { return stream->context().legacy_and_blocking_streams(); }
  return {std::move(stream)};
}

}  // namespace
}  // namespace cudasim

using cudasim::api;
using cudasim::entry;

CUresult CUDAAPI cuStreamCreate(CUstream* phStream, unsigned int Flags)
{
  return api(entry::stream_create, [&] {
    // cuda.h: "Valid values for Flags are: CU_STREAM_DEFAULT ... CU_STREAM_NON_BLOCKING".
    if (phStream == nullptr || (Flags != CU_STREAM_DEFAULT && Flags != CU_STREAM_NON_BLOCKING)) {
      return CUDA_ERROR_INVALID_VALUE;
    }
    CUctx_st* context = nullptr;
    if (CUresult const bad = cudasim::use_current_context(context); bad != CUDA_SUCCESS) {
      return bad;
    }
    cudasim::simulator& sim = cudasim::simulator::get();
    sim.graveyard().reap();
    auto stream = std::make_shared<CUstream_st>(*context, Flags, false);
    stream->start();
    sim.streams().add(stream);
    context->add_stream(stream);
    *phStream = stream.get();
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuStreamDestroy(CUstream hStream)
{
  return api(entry::stream_destroy, [&] {
    cudasim::simulator& sim             = cudasim::simulator::get();
    std::shared_ptr<CUstream_st> stream = sim.streams().find(hStream);
    if (!stream) { return CUDA_ERROR_INVALID_HANDLE; }  // also 0 and CU_STREAM_LEGACY
    if (CUresult const bad = cudasim::use_context(stream->context()); bad != CUDA_SUCCESS) {
      return bad;
    }
    if (!sim.streams().remove(hStream)) {
      return CUDA_ERROR_INVALID_HANDLE;
    }  // destroyed meanwhile
    stream->context().remove_stream(hStream);
    // cuda.h: "the function will return immediately and the resources associated with
    // hStream will be released automatically once the device has completed all work".
    sim.graveyard().bury(std::move(stream));
    sim.graveyard().reap();
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuStreamSynchronize(CUstream hStream)
{
  return api(entry::stream_synchronize, [&] {
    std::shared_ptr<CUstream_st> stream;
    if (CUresult const bad = cudasim::resolve_stream(hStream, stream); bad != CUDA_SUCCESS) {
      return bad;
    }
    for (auto const& s : cudasim::covered_streams(stream)) {
      s->wait(s->submitted());
    }
    return stream->context().sticky_error();
  });
}

CUresult CUDAAPI cuStreamQuery(CUstream hStream)
{
  return api(entry::stream_query, [&] {
    std::shared_ptr<CUstream_st> stream;
    if (CUresult const bad = cudasim::resolve_stream(hStream, stream); bad != CUDA_SUCCESS) {
      return bad;
    }
    for (auto const& s : cudasim::covered_streams(stream)) {
      if (!s->reached(s->submitted())) { return CUDA_ERROR_NOT_READY; }
    }
    return stream->context().sticky_error();
  });
}

CUresult CUDAAPI cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags)
{
  return api(entry::stream_wait_event, [&] {
    // CU_EVENT_WAIT_EXTERNAL: "This flag is invalid outside of stream capture."
    if (Flags != CU_EVENT_WAIT_DEFAULT) { return CUDA_ERROR_INVALID_VALUE; }
    std::shared_ptr<CUstream_st> stream;
    if (CUresult const bad = cudasim::resolve_stream(hStream, stream); bad != CUDA_SUCCESS) {
      return bad;
    }
    std::shared_ptr<CUevent_st> const event = cudasim::simulator::get().events().find(hEvent);
    if (!event) { return CUDA_ERROR_INVALID_HANDLE; }  // "hEvent ... (may not be NULL)"
    // cuda.h, cuEventRecord: cuStreamWaitEvent uses "the most recently captured state at
    // the time of the API call"; an event never recorded is "an empty set of work".
    auto capture = event->last_record();
    if (!capture || capture->stream == stream) { return CUDA_SUCCESS; }
    cudasim::submit(*stream, cudasim::wait_op{std::move(capture->stream), capture->sequence});
    return CUDA_SUCCESS;
  });
}

CUresult CUDAAPI cuLaunchHostFunc(CUstream hStream, CUhostFn fn, void* userData)
{
  return api(entry::launch_host_func, [&] {
    if (fn == nullptr) { return CUDA_ERROR_INVALID_VALUE; }
    std::shared_ptr<CUstream_st> stream;
    if (CUresult const bad = cudasim::resolve_stream(hStream, stream); bad != CUDA_SUCCESS) {
      return bad;
    }
    // "The function will be called after currently enqueued work and will block work
    // added after it": an ordinary in-order operation on the stream's worker.
    cudasim::submit(*stream, cudasim::host_function_op{fn, userData});
    return CUDA_SUCCESS;
  });
}
