// Conformance: faults. Touching device addresses from the host, and device work that
// touches unmapped or inaccessible memory (error 700, sticky for the context).
// Spec: tools/cudasim/README.md "Virtual memory management" (host touch faults) and
// "Device accesses: copies and memsets" (execution faults, sticky
// CUDA_ERROR_ILLEGAL_ADDRESS, sglang issue 31073), "Streams, events, host functions"
// (host functions are not called after a sticky error). cuda.h docs checked: the
// CUresult CUDA_ERROR_ILLEGAL_ADDRESS ("the context cannot be used, so it must be
// destroyed"), cuLaunchHostFunc, cuDevicePrimaryCtxReset, cuMemcpyBatchAsync.
//
// A copy or memset into memory that is inaccessible *when it is queued* does not fault:
// the real driver refuses the call with CUDA_ERROR_INVALID_VALUE (H100, driver
// 580.159.04; these were death tests until it did), see SimCopy's
// CopyIntoMappingWithoutAccessIsInvalidValue, WriteIntoReadOnlyRangeIsInvalidValueAtTheCall
// and ReadAfterAccessIsRevokedIsInvalidValue. Only an access that becomes invalid while
// the work is pending faults.
//
// Every test runs its fault in a child process (threadsafe death tests re-execute the
// binary, so the child initializes CUDA itself, as a real GPU requires). A child that
// must report a CUresult exits with it modulo 256: CUDA_ERROR_ILLEGAL_ADDRESS (700) is 188.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "batch_copy.hpp"
#include "driver_fixture.hpp"

namespace swapalloc::testing {
namespace {

constexpr int kIllegalAddressExit = CUDA_ERROR_ILLEGAL_ADDRESS % 256;
static_assert(kIllegalAddressExit == 188);

class SimDeathTest : public DriverDeathTest {
 protected:
  /**
   * The sglang 31073 bug, in a child: a stream is held by a host function, an async
   * memset into a mapped range is queued behind it, the range is unmapped and its
   * handle released while the memset is still pending, then the stream is let go. The
   * memset then touches an unmapped range. `behind_the_fault(stream)` runs while the
   * memset is still held, to queue work after it. Returns the stream (the objects made
   * here are deliberately left behind: the child ends with child_exit).
   */
  template <class Queue = void (*)(CUstream)>
  CUstream provoke_illegal_address(Queue&& behind_the_fault = [](CUstream) {}) const
  {
    CUstream const stream = drv().stream_create();
    CUdeviceptr const ptr = drv().address_reserve(gran());
    auto const handle     = drv().mem_create(gran(), device());
    drv().mem_map(ptr, gran(), handle);
    drv().mem_set_access(ptr, gran(), device());
    host_gate gate(3s);
    gate.enqueue(drv(), stream);
    drv().memset_d32_async(ptr, 0xdeadbeef, gran() / 4, stream);
    behind_the_fault(stream);
    drv().mem_unmap(ptr, gran());
    drv().mem_release(handle);
    gate.open();
    return stream;
  }
};

// ---- Host touches of device addresses -------------------------------------------------

TEST_F(SimDeathTest, HostTouchOfUnmappedReservedAddressDies)
{
  // The one sanctioned dereference of a device address: one with no memory behind it.
  scoped_reservation reservation(drv(), 2 * gran());
  auto* const address = reinterpret_cast<char volatile*>(reservation.ptr() + gran());
  EXPECT_DEATH({ *address = 1; }, "");
  EXPECT_DEATH({ [[maybe_unused]] char const value = *address; }, "");
}

TEST_F(SimDeathTest, HostTouchAfterUnmapDies)
{
  auto range          = make_range();
  auto* const address = reinterpret_cast<char volatile*>(range.ptr());
  EXPECT_DEATH(
    {
      if (range.mapping().unmap() != CUDA_SUCCESS) { child_exit(0); }  // exit 0 is not a death
      *address = 1;
    },
    "");
}

// ---- Device work that faults: CUDA_ERROR_ILLEGAL_ADDRESS, sticky ----------------------

TEST_F(SimDeathTest, UnmapWhileWorkIsPendingFaultsTheStream)
{
  EXPECT_EXIT(
    {
      CUstream const stream = provoke_illegal_address();
      child_exit_with(table().cuStreamSynchronize(stream), "cuStreamSynchronize");
    },
    ::testing::ExitedWithCode(kIllegalAddressExit), "CUDA_ERROR_ILLEGAL_ADDRESS");
}

TEST_F(SimDeathTest, IllegalAddressIsStickyForTheContext)
{
  // After the fault, every call that uses the context returns 700.
  auto const fault_then = [this](auto&& later_call, char const* what) {
    std::vector<std::uint32_t> host(64, 1);
    auto range            = make_range();  // made before the fault: a valid target
    CUstream const stream = provoke_illegal_address();
    CUresult const first  = table().cuStreamSynchronize(stream);
    if (first != CUDA_ERROR_ILLEGAL_ADDRESS) { child_exit_with(first, "the fault itself"); }
    child_exit_with(later_call(range.ptr(), host.data()), what);
  };
  auto const t = &table();
  EXPECT_EXIT(
    fault_then([t](CUdeviceptr, void*) { return t->cuCtxSynchronize(); }, "cuCtxSynchronize"),
    ::testing::ExitedWithCode(kIllegalAddressExit), "CUDA_ERROR_ILLEGAL_ADDRESS");
  EXPECT_EXIT(
    fault_then([t](CUdeviceptr ptr, void* host) { return t->cuMemcpyHtoD(ptr, host, 256); },
               "cuMemcpyHtoD_v2 into a valid range"),
    ::testing::ExitedWithCode(kIllegalAddressExit), "CUDA_ERROR_ILLEGAL_ADDRESS");
  EXPECT_EXIT(
    fault_then([t](CUdeviceptr ptr, void* host) { return t->cuMemcpyDtoH(host, ptr, 256); },
               "cuMemcpyDtoH_v2 from a valid range"),
    ::testing::ExitedWithCode(kIllegalAddressExit), "CUDA_ERROR_ILLEGAL_ADDRESS");
  EXPECT_EXIT(fault_then(
                [t](CUdeviceptr, void*) {
                  std::size_t free  = 0;
                  std::size_t total = 0;
                  return t->cuMemGetInfo(&free, &total);
                },
                "cuMemGetInfo_v2"),
              ::testing::ExitedWithCode(kIllegalAddressExit), "CUDA_ERROR_ILLEGAL_ADDRESS");
}

TEST_F(SimDeathTest, HostFunctionIsNotCalledAfterTheFault)
{
  // cuda.h (cuLaunchHostFunc): "the function will not be called in the event of an
  // error in the CUDA context".
  static std::atomic<bool> ran_after{false};
  EXPECT_EXIT(
    {
      CUstream const stream = provoke_illegal_address(
        [this](CUstream s) { drv().launch_host_func(s, set_flag, &ran_after); });
      CUresult const result = table().cuStreamSynchronize(stream);
      std::this_thread::sleep_for(50ms);  // a wrongly scheduled host function would have run
      if (ran_after.load()) {
        child_exit_with(CUDA_SUCCESS, "the host function ran after the fault");
      }
      child_exit_with(result, "cuStreamSynchronize");
    },
    ::testing::ExitedWithCode(kIllegalAddressExit), "CUDA_ERROR_ILLEGAL_ADDRESS");
}

TEST_F(SimDeathTest, AnotherStreamsWorkOrderedAfterTheFaultDoesNotRun)
{
  // Another stream waits (cuStreamWaitEvent) for an event recorded behind the faulting
  // memset, then has a host function: it is never called (cuda.h, cuLaunchHostFunc: "the
  // function will not be called in the event of an error in the CUDA context"), and
  // that stream reports the sticky error too.
  //
  // This replaces a test that gated another stream with a host function of its own and
  // expected that stream's next host function not to run once the context had faulted.
  // On the real driver it ran (H100, driver 580.159.04), but that says nothing about
  // "after": the driver calls the host functions of a context one at a time, so the
  // faulting stream's own gate waited behind the other stream's, and the other stream's
  // host function became due at the same moment as the faulting memset -- it most likely
  // ran before the fault was noticed. Work of another stream that is not ordered after
  // the fault is therefore not asserted on here.
  static std::atomic<bool> ran_after{false};
  EXPECT_EXIT(
    {
      CUstream const other  = drv().stream_create();
      CUevent const event   = drv().event_create();
      CUstream const stream = provoke_illegal_address([&](CUstream s) {
        drv().event_record(event, s);
        drv().stream_wait_event(other, event);
        drv().launch_host_func(other, set_flag, &ran_after);
      });
      CUresult const result = table().cuStreamSynchronize(stream);
      if (result != CUDA_ERROR_ILLEGAL_ADDRESS) { child_exit_with(result, "the fault itself"); }
      CUresult const other_result = table().cuStreamSynchronize(other);
      std::this_thread::sleep_for(50ms);  // a wrongly scheduled host function would have run
      if (ran_after.load()) {
        std::fprintf(stderr, "another stream's host function ran after the fault\n");
        child_exit(1);
      }
      child_exit_with(other_result, "cuStreamSynchronize of the other stream");
    },
    ::testing::ExitedWithCode(kIllegalAddressExit), "CUDA_ERROR_ILLEGAL_ADDRESS");
}

TEST_F(SimDeathTest, BatchedCopyFaultsWhenItsRangeGoesAwayBeforeItRuns)
{
  // A batch's copy is checked at the call and again when it runs, as a single copy: its
  // target unmapped while the batch waits behind a gate faults the context (700, sticky),
  // and a later batch into a valid range is refused with it.
  memcpy_batch_fn const batch = find_memcpy_batch(drv());
  if (batch == nullptr) { GTEST_SKIP() << "the driver has no cuMemcpyBatchAsync_v2"; }
  auto const child = [&](bool batch_again) {
    void* const host      = drv().host_alloc(4096);
    auto valid            = make_range();  // made before the fault: a valid target
    CUstream const stream = drv().stream_create();
    CUdeviceptr const ptr = drv().address_reserve(gran());
    auto const handle     = drv().mem_create(gran(), device());
    drv().mem_map(ptr, gran(), handle);
    drv().mem_set_access(ptr, gran(), device());
    host_gate gate(3s);
    gate.enqueue(drv(), stream);
    CUresult const queued = memcpy_batch(batch, {{ptr, address_of(host), 4096}}, stream);
    if (queued != CUDA_SUCCESS) { child_exit_with(queued, "the batch"); }
    drv().mem_unmap(ptr, gran());
    drv().mem_release(handle);
    gate.open();
    CUresult const fault = table().cuStreamSynchronize(stream);
    if (!batch_again) { child_exit_with(fault, "cuStreamSynchronize"); }
    if (fault != CUDA_ERROR_ILLEGAL_ADDRESS) { child_exit_with(fault, "the fault itself"); }
    child_exit_with(memcpy_batch(batch, {{valid.ptr(), address_of(host), 4096}}, stream),
                    "a later batch into a valid range");
  };
  EXPECT_EXIT(child(false), ::testing::ExitedWithCode(kIllegalAddressExit),
              "CUDA_ERROR_ILLEGAL_ADDRESS");
  EXPECT_EXIT(child(true), ::testing::ExitedWithCode(kIllegalAddressExit),
              "CUDA_ERROR_ILLEGAL_ADDRESS");
}

TEST_F(SimDeathTest, PrimaryContextResetClearsTheStickyError)
{
  SIM_ONLY(sim(), "after error 700 a real process must be restarted (CUDA Programming Guide)");
  EXPECT_EXIT(
    {
      CUstream const stream = provoke_illegal_address();
      CUresult const fault  = table().cuStreamSynchronize(stream);
      if (fault != CUDA_ERROR_ILLEGAL_ADDRESS) { child_exit_with(fault, "the fault itself"); }
      CUresult const reset = table().cuDevicePrimaryCtxReset(device());
      if (reset != CUDA_SUCCESS) { child_exit_with(reset, "cuDevicePrimaryCtxReset_v2"); }
      CUcontext context = nullptr;
      CUresult result   = table().cuDevicePrimaryCtxRetain(&context, device());
      if (result == CUDA_SUCCESS) { result = table().cuCtxSetCurrent(context); }
      std::size_t free  = 0;
      std::size_t total = 0;
      if (result == CUDA_SUCCESS) { result = table().cuMemGetInfo(&free, &total); }
      if (result == CUDA_SUCCESS) {
        auto range = make_range();
        drv().memset_d32(range.ptr(), 0x12, 16);
        result = first_not(read_words(drv(), range.ptr(), 16), 0x12) == 16 ? CUDA_SUCCESS
                                                                           : CUDA_ERROR_UNKNOWN;
      }
      child_exit_with(result, "work after the reset");
    },
    ::testing::ExitedWithCode(0), "CUDA_SUCCESS");
}

}  // namespace
}  // namespace swapalloc::testing
