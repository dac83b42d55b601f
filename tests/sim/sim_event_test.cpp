// Conformance: events.
// Spec: tools/cudasim/README.md "Streams, events, host functions" (cuEventRecord,
// cuEventQuery, cuEventSynchronize, cuEventElapsedTime_v2, cuEventDestroy_v2). cuda.h
// docs checked: cuEventCreate, cuEventRecord, cuEventQuery, cuEventSynchronize,
// cuEventElapsedTime, cuEventDestroy.
#include <atomic>
#include <cstdint>
#include <thread>

#include <gtest/gtest.h>

#include "driver_fixture.hpp"

namespace swapalloc::testing {
namespace {

class SimEvent : public DriverTest {};

TEST_F(SimEvent, NeverRecordedEventIsComplete)
{
  scoped_event event(drv());
  EXPECT_CU(CUDA_SUCCESS, table().cuEventQuery(event));
  EXPECT_CU(CUDA_SUCCESS, table().cuEventSynchronize(event));
}

TEST_F(SimEvent, QueryIsNotReadyUntilTheRecordCompletes)
{
  scoped_stream stream(drv());
  scoped_event event(drv(), CU_EVENT_DISABLE_TIMING);
  host_gate gate;
  gate.enqueue(drv(), stream);
  drv().event_record(event, stream);
  EXPECT_CU(CUDA_ERROR_NOT_READY, table().cuEventQuery(event));
  gate.open();
  EXPECT_CU(CUDA_SUCCESS, table().cuEventSynchronize(event));
  EXPECT_CU(CUDA_SUCCESS, table().cuEventQuery(event));
}

TEST_F(SimEvent, RecordOnTheLegacyStream)
{
  context_drain drain(drv());
  scoped_event event(drv());
  host_gate gate;
  gate.enqueue(drv(), nullptr);
  drv().event_record(event, nullptr);
  EXPECT_CU(CUDA_ERROR_NOT_READY, table().cuEventQuery(event));
  gate.open();
  EXPECT_CU(CUDA_SUCCESS, table().cuEventSynchronize(event));
  EXPECT_CU(CUDA_SUCCESS, table().cuEventQuery(event));
}

TEST_F(SimEvent, SynchronizeWaitsForTheLastRecordOnly)
{
  scoped_stream blocked(drv());
  scoped_stream idle(drv());
  scoped_event event(drv());
  {
    host_gate gate(5s);
    gate.enqueue(drv(), blocked);
    drv().event_record(event, blocked);
    drv().event_record(event, idle);  // the last record: on an idle stream
    EXPECT_CU(CUDA_SUCCESS, table().cuEventSynchronize(event));
    EXPECT_FALSE(gate.opened_by_watchdog()) << "cuEventSynchronize waited for an earlier record";
  }
  {
    host_gate gate(50ms);
    drv().event_record(event, idle);
    gate.enqueue(drv(), blocked);
    drv().event_record(event, blocked);  // the last record: behind the gate
    EXPECT_CU(CUDA_SUCCESS, table().cuEventSynchronize(event));
    EXPECT_TRUE(gate.opened_by_watchdog())
      << "cuEventSynchronize returned before the last record completed";
  }
}

TEST_F(SimEvent, ElapsedTimeErrors)
{
  scoped_stream stream(drv());
  scoped_event timed_a(drv(), CU_EVENT_DEFAULT);
  scoped_event timed_b(drv(), CU_EVENT_DEFAULT);
  scoped_event untimed(drv(), CU_EVENT_DISABLE_TIMING);
  float ms = -1.0f;
  // Never recorded: CUDA_ERROR_INVALID_HANDLE.
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, table().cuEventElapsedTime(&ms, timed_a, timed_b));
  // Created with CU_EVENT_DISABLE_TIMING: CUDA_ERROR_INVALID_HANDLE, even when complete.
  drv().event_record(timed_a, stream);
  drv().event_record(untimed, stream);
  drv().stream_synchronize(stream);
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, table().cuEventElapsedTime(&ms, timed_a, untimed));
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, table().cuEventElapsedTime(&ms, untimed, timed_a));
  // One of them pending: CUDA_ERROR_NOT_READY.
  host_gate gate;
  gate.enqueue(drv(), stream);
  drv().event_record(timed_b, stream);
  EXPECT_CU(CUDA_ERROR_NOT_READY, table().cuEventElapsedTime(&ms, timed_a, timed_b));
  gate.open();
  drv().event_synchronize(timed_b);
  EXPECT_CU(CUDA_SUCCESS, table().cuEventElapsedTime(&ms, timed_a, timed_b));
}

TEST_F(SimEvent, ElapsedTimeMeasuresTheWorkBetweenRecords)
{
  scoped_stream stream(drv());
  scoped_event start(drv(), CU_EVENT_DEFAULT);
  scoped_event stop(drv(), CU_EVENT_DEFAULT);
  drv().event_record(start, stream);
  drv().launch_host_func(stream, sleep_20ms, nullptr);
  drv().event_record(stop, stream);
  drv().event_synchronize(stop);
  float ms = -1.0f;
  ASSERT_CU(CUDA_SUCCESS, table().cuEventElapsedTime(&ms, start, stop));
  EXPECT_GE(ms, 0.0f);
  EXPECT_GE(ms, 15.0f) << "a 20 ms host function ran between the two records";
  EXPECT_LT(ms, 10000.0f);
}

TEST_F(SimEvent, DestroyingAPendingEventReturnsAtOnce)
{
  std::atomic<bool> done{false};
  scoped_stream stream(drv());
  scoped_event event(drv());
  host_gate gate(5s);
  gate.enqueue(drv(), stream);
  drv().event_record(event, stream);
  drv().launch_host_func(stream, set_flag, &done);
  ASSERT_CU(CUDA_SUCCESS, event.destroy());
  EXPECT_FALSE(gate.opened_by_watchdog()) << "cuEventDestroy waited for the pending record";
  EXPECT_FALSE(done.load());
  gate.open();
  drv().stream_synchronize(stream);
  EXPECT_TRUE(done.load())
    << "the stream's work after the destroyed event's record did not complete";
}

TEST_F(SimEvent, RecordOnADestroyedStreamStillCompletes)
{
  // cuda.h (cuStreamDestroy): the work of a destroyed stream still completes.
  scoped_stream stream(drv());
  scoped_event event(drv());
  host_gate gate(50ms);  // opens by itself, from another thread
  gate.enqueue(drv(), stream);
  drv().event_record(event, stream);
  ASSERT_CU(CUDA_SUCCESS, stream.destroy());
  EXPECT_CU(CUDA_SUCCESS, table().cuEventSynchronize(event));
  EXPECT_TRUE(gate.opened_by_watchdog())
    << "cuEventSynchronize returned before the record completed";
  EXPECT_CU(CUDA_SUCCESS, table().cuEventQuery(event));
}

TEST_F(SimEvent, DestroyedEventHandleIsInvalid)
{
  SIM_ONLY(sim(), "a destroyed handle is a dangling pointer on a real driver");
  CUevent event = nullptr;
  ASSERT_CU(CUDA_SUCCESS, table().cuEventCreate(&event, CU_EVENT_DEFAULT));
  ASSERT_CU(CUDA_SUCCESS, table().cuEventDestroy(event));
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, table().cuEventQuery(event));
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, table().cuEventSynchronize(event));
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, table().cuEventRecord(event, nullptr));
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, table().cuEventDestroy(event));
}

}  // namespace
}  // namespace swapalloc::testing
