// Conformance: streams, stream waits, the legacy default stream, host functions.
// Spec: tools/cudasim/README.md "Streams, events, host functions". cuda.h docs checked:
// cuStreamCreate, cuStreamQuery, cuStreamSynchronize, cuStreamWaitEvent, cuEventRecord
// (what a wait captures), cuStreamDestroy, cuLaunchHostFunc, cuCtxSynchronize, and the
// CUDA Programming Guide's "Default Stream" / "Implicit Synchronization" sections.
//
// A host_gate blocks its stream with a host function, and the host functions of one
// context run one at a time (SimHostFunc.HostFunctionsOfAContextRunOneAtATime), so while
// a gate is closed no other stream's host function runs either. Tests that show another
// stream making progress past a closed gate therefore use memsets and copies on it and
// poll cuStreamQuery (idle_within), never a host function.
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "driver_fixture.hpp"

namespace swapalloc::testing {
namespace {

constexpr std::size_t kStreamWords = 4096;

class SimStream : public DriverTest {
 protected:
  /// The words of a pinned buffer, copied out on the host.
  static std::vector<std::uint32_t> words_of(pinned_buffer const& buffer)
  {
    std::vector<std::uint32_t> words(buffer.bytes() / 4);
    std::memcpy(words.data(), buffer.data(), buffer.bytes());
    return words;
  }
};

TEST_F(SimStream, WorkRunsAsynchronouslyAndInOrder)
{
  std::atomic<bool> done{false};
  pinned_buffer seen(drv(), kStreamWords * 4);
  std::memset(seen.data(), 0xee, seen.bytes());
  auto range = make_range();
  scoped_stream stream(drv());
  host_gate gate;
  gate.enqueue(drv(), stream);
  drv().memset_d32_async(range.ptr(), 1, kStreamWords, stream);
  drv().memset_d32_async(range.ptr(), 2, kStreamWords, stream);
  drv().memcpy_dtoh_async(seen.data(), range.ptr(), seen.bytes(), stream);
  drv().launch_host_func(stream, set_flag, &done);
  // Every call returned although the stream is blocked: the work is asynchronous.
  EXPECT_CU(CUDA_ERROR_NOT_READY, table().cuStreamQuery(stream));
  EXPECT_FALSE(done.load());
  EXPECT_EQ(first_not(words_of(seen), 0xeeeeeeee), kStreamWords)
    << "work behind the blocked host function ran";
  gate.open();
  drv().stream_synchronize(stream);
  EXPECT_TRUE(done.load());
  EXPECT_EQ(first_not(words_of(seen), 2), kStreamWords) << "the two memsets did not run in order";
  EXPECT_CU(CUDA_SUCCESS, table().cuStreamQuery(stream));
  EXPECT_FALSE(gate.opened_by_watchdog());
}

TEST_F(SimStream, SynchronizeWaitsForAllWork)
{
  std::atomic<bool> done{false};
  scoped_stream stream(drv());
  host_gate gate(50ms);
  gate.enqueue(drv(), stream);
  drv().launch_host_func(stream, set_flag, &done);
  drv().stream_synchronize(stream);
  EXPECT_TRUE(done.load());
  EXPECT_TRUE(gate.opened_by_watchdog());
}

TEST_F(SimStream, WaitEventOrdersWorkAcrossStreams)
{
  std::atomic<bool> done{false};
  pinned_buffer seen(drv(), kStreamWords * 4);
  std::memset(seen.data(), 0xee, seen.bytes());
  auto range = make_range();
  drv().memset_d32(range.ptr(), 0, kStreamWords);
  drv().synchronize_context();
  scoped_stream a(drv());
  scoped_stream b(drv());
  scoped_event event(drv());
  host_gate gate;
  gate.enqueue(drv(), a);
  drv().event_record(event, a);
  drv().stream_wait_event(b, event);
  drv().memset_d32_async(range.ptr(), 0x42, kStreamWords, b);
  drv().memcpy_dtoh_async(seen.data(), range.ptr(), seen.bytes(), b);
  drv().launch_host_func(b, set_flag, &done);
  std::this_thread::sleep_for(20ms);
  EXPECT_CU(CUDA_ERROR_NOT_READY, table().cuStreamQuery(b))
    << "stream B did not wait for the event of A";
  EXPECT_FALSE(done.load());
  EXPECT_EQ(first_not(words_of(seen), 0xeeeeeeee), kStreamWords);
  gate.open();
  drv().stream_synchronize(b);
  EXPECT_TRUE(done.load());
  EXPECT_EQ(first_not(words_of(seen), 0x42), kStreamWords);
}

TEST_F(SimStream, WaitUsesTheRecordAtTheTimeOfTheCall)
{
  // cuda.h (cuEventRecord): cuStreamWaitEvent "will wait for the most recent call to
  // cuEventRecord() before the wait call"; a later re-record does not change it.
  std::atomic<bool> done{false};
  scoped_stream a(drv());
  scoped_stream b(drv());
  scoped_stream c(drv());
  scoped_event event(drv());
  host_gate gate;
  gate.enqueue(drv(), a);
  drv().event_record(event, a);
  drv().stream_wait_event(b, event);
  drv().event_record(event, c);  // c is idle: this record completes at once
  drv().event_synchronize(event);
  EXPECT_TRUE(drv().event_query(event));
  drv().launch_host_func(b, set_flag, &done);
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(done.load()) << "the re-record on an idle stream released the earlier wait";
  EXPECT_CU(CUDA_ERROR_NOT_READY, table().cuStreamQuery(b));
  gate.open();
  drv().stream_synchronize(b);
  EXPECT_TRUE(done.load());
}

TEST_F(SimStream, WaitOnANeverRecordedEventIsANoOp)
{
  std::atomic<bool> done{false};
  scoped_stream stream(drv());
  scoped_event event(drv());
  drv().stream_wait_event(stream, event);
  drv().launch_host_func(stream, set_flag, &done);
  EXPECT_TRUE(wait_until([&] { return done.load(); }))
    << "the stream waits on an event that was never recorded";
}

TEST_F(SimStream, WaitEventRejectsUnknownFlags)
{
  SIM_ONLY(sim(), "cuda.h documents no error for bad flags of cuStreamWaitEvent");
  scoped_stream stream(drv());
  scoped_event event(drv());
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuStreamWaitEvent(stream, event, 0x80));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE,
            table().cuStreamWaitEvent(stream, event, CU_EVENT_WAIT_EXTERNAL));
  EXPECT_CU(CUDA_SUCCESS, table().cuStreamWaitEvent(stream, event, CU_EVENT_WAIT_DEFAULT));
}

TEST_F(SimStream, DestroyWithPendingWorkReturnsAndTheWorkCompletes)
{
  // cuda.h: "the function will return immediately and the resources associated with
  // hStream will be released automatically once the device has completed all work".
  std::atomic<bool> done{false};
  pinned_buffer seen(drv(), kStreamWords * 4);
  std::memset(seen.data(), 0xee, seen.bytes());
  auto range = make_range();
  context_drain drain(drv());
  scoped_stream stream(drv());
  host_gate gate(5s);
  gate.enqueue(drv(), stream);
  drv().memset_d32_async(range.ptr(), 0x0d0d0d0d, kStreamWords, stream);
  drv().memcpy_dtoh_async(seen.data(), range.ptr(), seen.bytes(), stream);
  drv().launch_host_func(stream, set_flag, &done);
  ASSERT_CU(CUDA_SUCCESS, stream.destroy());
  EXPECT_FALSE(gate.opened_by_watchdog()) << "cuStreamDestroy waited for the pending work";
  EXPECT_FALSE(done.load());
  gate.open();
  ASSERT_TRUE(wait_until([&] { return done.load(); }))
    << "the destroyed stream's work never completed";
  EXPECT_EQ(first_not(words_of(seen), 0x0d0d0d0d), kStreamWords);
}

TEST_F(SimStream, ContextSynchronizeWaitsForADestroyedStreamsWork)
{
  std::atomic<bool> done{false};
  scoped_stream stream(drv());
  host_gate gate(50ms);  // opens by itself, from another thread
  gate.enqueue(drv(), stream);
  drv().launch_host_func(stream, set_flag, &done);
  ASSERT_CU(CUDA_SUCCESS, stream.destroy());
  drv().synchronize_context();
  EXPECT_TRUE(done.load())
    << "cuCtxSynchronize returned before a destroyed stream's work completed";
  EXPECT_TRUE(gate.opened_by_watchdog());
  // Whatever the driver did, the host function must be done before `done` goes away.
  EXPECT_TRUE(wait_until([&] { return done.load(); }));
}

TEST_F(SimStream, ManyStreamsEachRunTheirWork)
{
  constexpr std::size_t kStreams = 32;
  constexpr std::size_t kSlice   = 1024;  // words per stream
  auto range                     = make_range();
  std::vector<std::unique_ptr<scoped_stream>> streams;
  for (std::size_t i = 0; i < kStreams; ++i) {
    streams.push_back(std::make_unique<scoped_stream>(drv()));
    drv().memset_d32_async(range.ptr() + i * kSlice * 4, static_cast<unsigned int>(i + 1), kSlice,
                           *streams.back());
  }
  for (auto const& stream : streams) {
    drv().stream_synchronize(*stream);
  }
  auto const words = read_words(drv(), range.ptr(), kStreams * kSlice);
  for (std::size_t i = 0; i < kStreams; ++i) {
    EXPECT_EQ(words[i * kSlice], i + 1) << "stream " << i;
    EXPECT_EQ(words[(i + 1) * kSlice - 1], i + 1) << "stream " << i;
  }
}

TEST_F(SimStream, DestroyedStreamHandleIsInvalid)
{
  SIM_ONLY(sim(), "a destroyed handle is a dangling pointer on a real driver");
  CUstream stream = nullptr;
  ASSERT_CU(CUDA_SUCCESS, table().cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  ASSERT_CU(CUDA_SUCCESS, table().cuStreamDestroy(stream));
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, table().cuStreamQuery(stream));
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, table().cuStreamSynchronize(stream));
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, table().cuStreamDestroy(stream));
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, table().cuLaunchHostFunc(stream, set_flag, nullptr));
  auto* const unknown = reinterpret_cast<CUstream>(std::uintptr_t{0x7654320});
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, table().cuStreamQuery(unknown));
}

TEST_F(SimStream, PerThreadDefaultStreamIsNotSupported)
{
  SIM_ONLY(sim(), "CU_STREAM_PER_THREAD is not modelled by the simulator");
  auto range = make_range();
  EXPECT_CU(CUDA_ERROR_NOT_SUPPORTED,
            table().cuMemsetD8Async(range.ptr(), 0, 64, CU_STREAM_PER_THREAD));
  EXPECT_CU(CUDA_ERROR_NOT_SUPPORTED, table().cuStreamSynchronize(CU_STREAM_PER_THREAD));
}

// ---- The legacy default stream --------------------------------------------------------

TEST_F(SimStream, LegacyStreamWaitsForBlockingStreams)
{
  std::atomic<bool> done{false};
  context_drain drain(drv());
  scoped_stream blocking(drv(), CU_STREAM_DEFAULT);
  host_gate gate;
  gate.enqueue(drv(), blocking);
  drv().launch_host_func(nullptr, set_flag, &done);  // stream 0: the legacy stream
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(done.load()) << "legacy-stream work ran before earlier work of a blocking stream";
  EXPECT_CU(CUDA_ERROR_NOT_READY, table().cuStreamQuery(nullptr));
  gate.open();
  drv().stream_synchronize(nullptr);
  EXPECT_TRUE(done.load());
}

TEST_F(SimStream, BlockingStreamWaitsForLegacyStream)
{
  std::atomic<bool> done{false};
  context_drain drain(drv());
  scoped_stream blocking(drv(), CU_STREAM_DEFAULT);
  host_gate gate;
  gate.enqueue(drv(), CU_STREAM_LEGACY);
  drv().launch_host_func(blocking, set_flag, &done);
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(done.load()) << "blocking-stream work ran before earlier legacy-stream work";
  EXPECT_CU(CUDA_ERROR_NOT_READY, table().cuStreamQuery(blocking));
  gate.open();
  drv().stream_synchronize(blocking);
  EXPECT_TRUE(done.load());
}

TEST_F(SimStream, NonBlockingStreamIgnoresLegacyStream)
{
  // H100, driver 580.159.04: a host function on the non-blocking stream waited for the
  // gate on the legacy stream (host functions are serialized), so the independence of
  // the streams is shown with a memset and a copy, which did not have to wait.
  pinned_buffer seen(drv(), kStreamWords * 4);
  std::memset(seen.data(), 0xee, seen.bytes());
  auto range = make_range();
  context_drain drain(drv());
  scoped_stream independent(drv(), CU_STREAM_NON_BLOCKING);
  host_gate gate(5s);
  gate.enqueue(drv(), nullptr);
  drv().memset_d32_async(range.ptr(), 0x31, kStreamWords, independent);
  drv().memcpy_dtoh_async(seen.data(), range.ptr(), seen.bytes(), independent);
  EXPECT_TRUE(idle_within(independent, 2s))
    << "the non-blocking stream waited for the blocked legacy stream";
  EXPECT_FALSE(gate.is_open());
  EXPECT_EQ(first_not(words_of(seen), 0x31), kStreamWords);
  EXPECT_CU(CUDA_ERROR_NOT_READY, table().cuStreamQuery(nullptr));
  gate.open();
}

TEST_F(SimStream, LegacyStreamIgnoresNonBlockingStreams)
{
  // H100, driver 580.159.04: a host function on the legacy stream waited for the gate on
  // the non-blocking stream (host functions are serialized); a memset and a copy do not.
  pinned_buffer seen(drv(), kStreamWords * 4);
  std::memset(seen.data(), 0xee, seen.bytes());
  auto range = make_range();
  context_drain drain(drv());
  scoped_stream independent(drv(), CU_STREAM_NON_BLOCKING);
  host_gate gate(5s);
  gate.enqueue(drv(), independent);
  drv().memset_d32_async(range.ptr(), 0x32, kStreamWords, nullptr);
  drv().memcpy_dtoh_async(seen.data(), range.ptr(), seen.bytes(), nullptr);
  EXPECT_TRUE(idle_within(nullptr, 2s))
    << "the legacy stream waited for a blocked non-blocking stream";
  EXPECT_FALSE(gate.is_open());
  EXPECT_EQ(first_not(words_of(seen), 0x32), kStreamWords);
  EXPECT_CU(CUDA_ERROR_NOT_READY, table().cuStreamQuery(independent));
  gate.open();
}

TEST_F(SimStream, EventOnTheLegacyStreamWaitsForBlockingStreams)
{
  context_drain drain(drv());
  scoped_stream blocking(drv(), CU_STREAM_DEFAULT);
  scoped_event event(drv());
  host_gate gate;
  gate.enqueue(drv(), blocking);
  drv().event_record(event, nullptr);
  std::this_thread::sleep_for(20ms);
  EXPECT_CU(CUDA_ERROR_NOT_READY, table().cuEventQuery(event))
    << "a legacy-stream record completed before earlier work of a blocking stream";
  gate.open();
  drv().event_synchronize(event);
  EXPECT_CU(CUDA_SUCCESS, table().cuEventQuery(event));
}

TEST_F(SimStream, LegacyStreamCanWaitForAnEvent)
{
  std::atomic<bool> done{false};
  context_drain drain(drv());
  scoped_stream independent(drv(), CU_STREAM_NON_BLOCKING);
  scoped_event event(drv());
  host_gate gate;
  gate.enqueue(drv(), independent);
  drv().event_record(event, independent);
  drv().stream_wait_event(nullptr, event);
  drv().launch_host_func(nullptr, set_flag, &done);
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(done.load()) << "the legacy stream did not wait for the event";
  gate.open();
  drv().stream_synchronize(nullptr);
  EXPECT_TRUE(done.load());
}

TEST_F(SimStream, StreamsRunConcurrently)
{
  // Created streams do not wait for one another, blocking (CU_STREAM_DEFAULT) ones
  // included: only the legacy stream synchronizes with those. H100, driver 580.159.04:
  // a host function on the other stream waited for the gate (host functions are
  // serialized), so the other stream's progress is a memset and a copy.
  for (unsigned int const flags : {CU_STREAM_NON_BLOCKING, CU_STREAM_DEFAULT}) {
    std::uint32_t const value = 0x50 + flags;
    pinned_buffer seen(drv(), kStreamWords * 4);
    std::memset(seen.data(), 0xee, seen.bytes());
    auto range = make_range();
    scoped_stream blocked(drv(), flags);
    scoped_stream other(drv(), flags);
    host_gate gate(5s);
    gate.enqueue(drv(), blocked);
    drv().memset_d32_async(range.ptr(), value, kStreamWords, other);
    drv().memcpy_dtoh_async(seen.data(), range.ptr(), seen.bytes(), other);
    EXPECT_TRUE(idle_within(other, 2s))
      << "a stream waited for another blocked stream (flags " << flags << ")";
    EXPECT_FALSE(gate.is_open());
    EXPECT_EQ(first_not(words_of(seen), value), kStreamWords) << "flags " << flags;
    EXPECT_CU(CUDA_ERROR_NOT_READY, table().cuStreamQuery(blocked)) << "flags " << flags;
    gate.open();
  }
}

TEST_F(SimStream, SynchronousCopyWaitsForBlockingStreams)
{
  // cuMemcpyDtoH runs on the legacy stream, so it comes after the blocking stream's memset.
  auto range = make_range();
  drv().memset_d32(range.ptr(), 0, kStreamWords);
  scoped_stream blocking(drv(), CU_STREAM_DEFAULT);
  host_gate gate(100ms);
  gate.enqueue(drv(), blocking);
  drv().memset_d32_async(range.ptr(), 0x99, kStreamWords, blocking);
  auto const words = read_words(drv(), range.ptr(), kStreamWords);
  EXPECT_EQ(first_not(words, 0x99), kStreamWords)
    << "the synchronous copy did not wait for the blocking stream";
  EXPECT_TRUE(gate.opened_by_watchdog());
}

TEST_F(SimStream, ContextSynchronizeWaitsForEveryStream)
{
  std::atomic<bool> first{false};
  std::atomic<bool> second{false};
  scoped_stream a(drv());
  scoped_stream b(drv());
  host_gate gate_a(40ms);
  host_gate gate_b(80ms);
  gate_a.enqueue(drv(), a);
  gate_b.enqueue(drv(), b);
  drv().launch_host_func(a, set_flag, &first);
  drv().launch_host_func(b, set_flag, &second);
  drv().synchronize_context();
  EXPECT_TRUE(first.load());
  EXPECT_TRUE(second.load());
}

// ---- Host functions -------------------------------------------------------------------

struct order_log {
  std::mutex mutex;
  std::vector<int> ids;
};
struct log_entry {
  order_log* log;
  int id;
};
void CUDA_CB append_id(void* user_data)
{
  auto* entry = static_cast<log_entry*>(user_data);
  if (entry->id == 0) { std::this_thread::sleep_for(10ms); }  // a slow first one
  std::lock_guard lock(entry->log->mutex);
  entry->log->ids.push_back(entry->id);
}

class SimHostFunc : public DriverTest {};

TEST_F(SimHostFunc, RunInOrderEachAfterTheLastReturned)
{
  order_log log;
  std::vector<log_entry> entries;
  entries.reserve(16);
  for (int i = 0; i < 16; ++i) {
    entries.push_back({&log, i});
  }
  scoped_stream stream(drv());
  for (auto& entry : entries) {
    drv().launch_host_func(stream, append_id, &entry);
  }
  drv().stream_synchronize(stream);
  std::vector<int> expected(16);
  for (int i = 0; i < 16; ++i) {
    expected[i] = i;
  }
  std::lock_guard lock(log.mutex);
  EXPECT_EQ(log.ids, expected);
}

TEST_F(SimHostFunc, HostFunctionsOfAContextRunOneAtATime)
{
  // cuda.h (cuLaunchHostFunc): "Host functions without a mandated order (such as in
  // independent streams) execute in undefined order and may be serialized." The real
  // driver serializes them: H100, driver 580.159.04, a host function on one stream did
  // not run while a host function on another stream was blocked, for non-blocking and
  // for blocking streams and the legacy stream, until the blocked one returned.
  for (unsigned int const flags : {CU_STREAM_NON_BLOCKING, CU_STREAM_DEFAULT}) {
    std::atomic<bool> done{false};
    scoped_stream blocked(drv(), flags);
    scoped_stream other(drv(), flags);
    host_gate gate(300ms);  // opens by itself
    gate.enqueue(drv(), blocked);
    ASSERT_TRUE(wait_until([&] { return gate.entered() == 1; })) << "the gate never ran";
    drv().launch_host_func(other, set_flag, &done);
    std::this_thread::sleep_for(50ms);
    EXPECT_FALSE(done.load()) << "a host function ran while another one was blocked (flags "
                              << flags << ")";
    EXPECT_CU(CUDA_ERROR_NOT_READY, table().cuStreamQuery(other)) << "flags " << flags;
    drv().stream_synchronize(other);
    EXPECT_TRUE(done.load());
    EXPECT_EQ(gate.passed(), 1) << "the second host function ran before the first returned";
    EXPECT_TRUE(gate.opened_by_watchdog());
  }
}

struct api_probe {
  driver_table const* table;
  CUstream stream;
  CUresult mem_get_info{CUDA_SUCCESS};
  CUresult stream_query{CUDA_SUCCESS};
  CUresult memset{CUDA_SUCCESS};
  CUdeviceptr target{};
};
void CUDA_CB call_the_api(void* user_data)
{
  auto* probe         = static_cast<api_probe*>(user_data);
  std::size_t free    = 0;
  std::size_t total   = 0;
  probe->mem_get_info = probe->table->cuMemGetInfo(&free, &total);
  probe->stream_query = probe->table->cuStreamQuery(probe->stream);
  probe->memset       = probe->table->cuMemsetD8Async(probe->target, 0, 64, probe->stream);
}

TEST_F(SimHostFunc, CudaCallFromAHostFunctionIsNotPermitted)
{
  SIM_ONLY(sim(), "cuda.h: a CUDA call from a host function *may* return CUDA_ERROR_NOT_PERMITTED");
  auto range = make_range();
  scoped_stream stream(drv());
  api_probe probe{&table(), stream, CUDA_SUCCESS, CUDA_SUCCESS, CUDA_SUCCESS, range.ptr()};
  drv().launch_host_func(stream, call_the_api, &probe);
  drv().stream_synchronize(stream);
  EXPECT_CU(CUDA_ERROR_NOT_PERMITTED, probe.mem_get_info);
  EXPECT_CU(CUDA_ERROR_NOT_PERMITTED, probe.stream_query);
  EXPECT_CU(CUDA_ERROR_NOT_PERMITTED, probe.memset);
}

}  // namespace
}  // namespace swapalloc::testing
