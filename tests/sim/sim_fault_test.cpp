// Conformance: fault injection and the census (simulator only: the real driver has
// neither, so every test here skips on a GPU).
// Spec: tools/cudasim/README.md "Failures, leaks" and tools/cudasim/cudasim.h
// (cudasimFailCall, cudasimClearFaults, cudasimCallCount, cudasimGetCensus). cuda.h docs
// checked: the error lists of cuMemCreate, cuMemHostAlloc, cuMemUnmap, cuMemMap,
// cuMemRelease, cuStreamCreate, and of the entry points outside the seam
// (cuDevicePrimaryCtxGetState, cuMemGetAddressRange, cuMemRetainAllocationHandle,
// cuMemGetAllocationPropertiesFromHandle, cuMemExport/ImportFromShareableHandle,
// cuStreamWriteValue32, cuMemcpyBatchAsync) (the "documented error" a fault defaults to).
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "batch_copy.hpp"
#include "driver_fixture.hpp"
#include "unwrapped_entry_points.hpp"

namespace swapalloc::testing {
namespace {

class SimFault : public DriverTest {
 protected:
  void SetUp() override
  {
    DriverTest::SetUp();
    SIM_ONLY(sim(), "fault injection is the simulator's");
  }
  CUresult create(std::size_t size) const
  {
    CUmemGenericAllocationHandle handle{};
    auto const prop       = driver::device_allocation(device());
    CUresult const result = table().cuMemCreate(&handle, size, &prop, 0);
    if (result == CUDA_SUCCESS) { table().cuMemRelease(handle); }
    return result;
  }
};

TEST_F(SimFault, NthCallFailsWithTheGivenError)
{
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemCreate", 2, CUDA_ERROR_INVALID_DEVICE));
  EXPECT_CU(CUDA_SUCCESS, create(gran())) << "first call";
  EXPECT_CU(CUDA_ERROR_INVALID_DEVICE, create(gran())) << "second call: the injected fault";
  EXPECT_CU(CUDA_SUCCESS, create(gran())) << "third call: a fault fires once";
}

TEST_F(SimFault, DefaultErrorIsTheDocumentedOne)
{
  // Calls that acquire memory fail with CUDA_ERROR_OUT_OF_MEMORY ...
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemCreate", 1, CUDA_SUCCESS));
  EXPECT_CU(CUDA_ERROR_OUT_OF_MEMORY, create(gran()));
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemHostAlloc", 1, CUDA_SUCCESS));
  void* pointer = nullptr;
  EXPECT_CU(CUDA_ERROR_OUT_OF_MEMORY, table().cuMemHostAlloc(&pointer, 4096, 0));
  // ... VMM calls, copies and memsets with CUDA_ERROR_INVALID_VALUE ...
  auto range = make_range();
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemUnmap", 1, CUDA_SUCCESS));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemUnmap(range.ptr(), range.size()));
  // ... waits and queries with the asynchronous fault they surface on a GPU ...
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuCtxSynchronize", 1, CUDA_SUCCESS));
  EXPECT_CU(CUDA_ERROR_ILLEGAL_ADDRESS, table().cuCtxSynchronize());
  EXPECT_CU(CUDA_SUCCESS, table().cuCtxSynchronize()) << "an injected fault is not sticky";
  // ... and calls on a stream or event with CUDA_ERROR_INVALID_HANDLE.
  CUhostFn const nothing = [](void*) {};
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuLaunchHostFunc", 1, CUDA_SUCCESS));
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, table().cuLaunchHostFunc(nullptr, nothing, nullptr));
  EXPECT_CU(CUDA_SUCCESS, table().cuLaunchHostFunc(nullptr, nothing, nullptr));
  EXPECT_CU(CUDA_SUCCESS, table().cuCtxSynchronize());
}

TEST_F(SimFault, FailedCallHasNoSideEffect)
{
  // cuMemCreate: no memory taken, no handle made, the call still counted.
  std::size_t const free_before  = free_bytes();
  auto const census_before       = sim().census();
  unsigned long long const calls = sim().call_count("cuMemCreate");
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemCreate", 1, CUDA_SUCCESS));
  EXPECT_CU(CUDA_ERROR_OUT_OF_MEMORY, create(4 * gran()));
  EXPECT_EQ(free_bytes(), free_before);
  EXPECT_EQ(sim().census().handles, census_before.handles);
  EXPECT_EQ(sim().census().physical_bytes, census_before.physical_bytes);
  EXPECT_EQ(sim().call_count("cuMemCreate"), calls + 1);

  // cuMemMap: nothing mapped, so the same map succeeds next.
  scoped_reservation reservation(drv(), gran());
  scoped_handle handle(drv(), gran(), device());
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemMap", 1, CUDA_SUCCESS));
  EXPECT_NE(table().cuMemMap(reservation.ptr(), gran(), 0, handle.get(), 0), CUDA_SUCCESS);
  EXPECT_EQ(sim().census().mappings, census_before.mappings);
  {
    scoped_mapping mapped(drv(), reservation.ptr(), gran(), handle.get());
    EXPECT_EQ(sim().census().mappings, census_before.mappings + 1);
  }

  // cuMemRelease: the handle stays live, so releasing it again works.
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemRelease", 1, CUDA_ERROR_INVALID_VALUE));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemRelease(handle.get()));
  EXPECT_CU(CUDA_SUCCESS, handle.release());

  // cuMemsetD32Async: nothing queued, so the memory keeps its contents.
  {
    auto range = make_range();
    drv().memset_d32(range.ptr(), 0x11111111, 256);
    scoped_stream memset_stream(drv());
    ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemsetD32Async", 1, CUDA_SUCCESS));
    EXPECT_NE(table().cuMemsetD32Async(range.ptr(), 0x22222222, 256, memset_stream), CUDA_SUCCESS);
    drv().stream_synchronize(memset_stream);
    EXPECT_EQ(first_not(read_words(drv(), range.ptr(), 256), 0x11111111), 256u);
  }

  // cuStreamCreate: no stream made.
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuStreamCreate", 1, CUDA_SUCCESS));
  CUstream stream = nullptr;
  EXPECT_NE(table().cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
  EXPECT_EQ(sim().census().streams, census_before.streams);
}

TEST_F(SimFault, EntryPointsOutsideTheSeamFailToo)
{
  // The entry points PyTorch resolves besides driver_table fail like every other one:
  // first, with their default error, before any effect, once.
  unwrapped_entry_points const entry(drv());
  ASSERT_TRUE(entry.complete());
  unsigned int flags = 0;
  int active         = 0;
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuDevicePrimaryCtxGetState", 1, CUDA_SUCCESS));
  EXPECT_CU(CUDA_ERROR_INVALID_DEVICE, entry.primary_ctx_get_state(device(), &flags, &active));
  EXPECT_CU(CUDA_SUCCESS, entry.primary_ctx_get_state(device(), &flags, &active));

  auto range       = make_range();
  CUdeviceptr base = 0;
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemGetAddressRange_v2", 1, CUDA_SUCCESS));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, entry.mem_get_address_range(&base, nullptr, range.ptr()));
  EXPECT_CU(CUDA_SUCCESS, entry.mem_get_address_range(&base, nullptr, range.ptr()));

  CUmemAllocationProp prop{};
  ASSERT_CU(CUDA_SUCCESS,
            sim().fail_call("cuMemGetAllocationPropertiesFromHandle", 1, CUDA_SUCCESS));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, entry.mem_get_allocation_properties(&prop, range.handle()));
  EXPECT_CU(CUDA_SUCCESS, entry.mem_get_allocation_properties(&prop, range.handle()));

  // A failed retain takes no reference: the released handle stays released.
  ASSERT_CU(CUDA_SUCCESS, range.physical().release());
  auto const released = sim().census().handles;
  CUmemGenericAllocationHandle handle{};
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemRetainAllocationHandle", 1, CUDA_SUCCESS));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE,
            entry.mem_retain_allocation_handle(&handle, reinterpret_cast<void*>(range.ptr())));
  EXPECT_EQ(sim().census().handles, released);

  // Export and import answer CUDA_ERROR_NOT_SUPPORTED when not failed (no IPC).
  int fd = -1;
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemExportToShareableHandle", 1, CUDA_SUCCESS));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE,
            entry.mem_export_to_shareable_handle(&fd, range.handle(),
                                                 CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemImportFromShareableHandle", 1, CUDA_SUCCESS));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE,
            entry.mem_import_from_shareable_handle(&handle, nullptr,
                                                   CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));

  // A failed write writes nothing.
  drv().memset_d32(range.ptr(), 0x33333333, 4);
  unsigned long long const writes = sim().call_count("cuStreamWriteValue32");
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuStreamWriteValue32", 1, CUDA_SUCCESS));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, entry.stream_write_value32(nullptr, range.ptr(), 7, 0));
  EXPECT_EQ(first_not(read_words(drv(), range.ptr(), 4), 0x33333333), 4u);
  EXPECT_EQ(sim().call_count("cuStreamWriteValue32_v2"), writes + 1) << "counted all the same";
}

TEST_F(SimFault, BatchedCopyFailsWithNothingQueued)
{
  // cuMemcpyBatchAsync (cuMemcpyBatchAsync_v2) fails like the other copies: the nth call,
  // with CUDA_ERROR_INVALID_VALUE by default, before queueing any of its copies.
  memcpy_batch_fn const batch = find_memcpy_batch(drv());
  ASSERT_NE(batch, nullptr) << "the simulator does not export cuMemcpyBatchAsync_v2";
  pinned_buffer source(drv(), 4096);
  std::memset(source.data(), 0x5a, source.bytes());
  auto range = make_range();
  drv().memset_d32(range.ptr(), 0x11111111, std::size_t{3} * 1024);
  drv().synchronize_context();  // the memset runs on the legacy stream, the batches not
  scoped_stream stream(drv());
  CUdeviceptr const host         = address_of(source.data());
  unsigned long long const calls = sim().call_count("cuMemcpyBatchAsync");
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemcpyBatchAsync", 2, CUDA_SUCCESS));
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemcpyBatchAsync_v2", 3, CUDA_ERROR_OUT_OF_MEMORY));
  EXPECT_CU(CUDA_SUCCESS, memcpy_batch(batch, {{range.ptr(), host, 4096}}, stream)) << "first";
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE,
            memcpy_batch(batch, {{range.ptr() + 4096, host, 4096}}, stream))
    << "second call: the injected fault, the default error of copies";
  EXPECT_CU(CUDA_ERROR_OUT_OF_MEMORY,
            memcpy_batch(batch, {{range.ptr() + 8192, host, 4096}}, stream))
    << "third call: the given error, set by the versioned name";
  drv().stream_synchronize(stream);
  auto const words = read_words(drv(), range.ptr(), std::size_t{3} * 1024);
  EXPECT_EQ(first_not(words, 0x5a5a5a5a), 1024u) << "the first batch copied";
  EXPECT_EQ(first_not({words.begin() + 1024, words.end()}, 0x11111111), 2 * 1024u)
    << "a failed batch copied";
  EXPECT_EQ(sim().call_count("cuMemcpyBatchAsync_v2"), calls + 3) << "every call counted";
}

TEST_F(SimFault, BareAndVersionedNamesAreOneEntryPoint)
{
  (void)free_bytes();
  unsigned long long const bare      = sim().call_count("cuMemGetInfo");
  unsigned long long const versioned = sim().call_count("cuMemGetInfo_v2");
  EXPECT_EQ(bare, versioned);
  EXPECT_GT(versioned, 0u) << "free_bytes() called cuMemGetInfo_v2";
  (void)free_bytes();
  EXPECT_EQ(sim().call_count("cuMemGetInfo"), bare + 1);
  EXPECT_EQ(sim().call_count("cuMemGetInfo_v2"), versioned + 1);
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemGetInfo", 1, CUDA_ERROR_INVALID_CONTEXT));
  std::size_t free  = 0;
  std::size_t total = 0;
  EXPECT_CU(CUDA_ERROR_INVALID_CONTEXT, table().cuMemGetInfo(&free, &total))
    << "fault set by the bare name";
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuStreamDestroy_v2", 1, CUDA_ERROR_INVALID_HANDLE));
  scoped_stream stream(drv());
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, table().cuStreamDestroy(stream))
    << "fault set by the versioned name";
}

TEST_F(SimFault, UnknownEntryPointOrZeroNthIsInvalid)
{
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, sim().fail_call("cuNoSuchCall", 1, CUDA_SUCCESS));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, sim().fail_call("cuMemCreate", 0, CUDA_SUCCESS));
  EXPECT_EQ(sim().call_count("cuNoSuchCall"), 0u);
  EXPECT_CU(CUDA_SUCCESS, create(gran())) << "the rejected requests injected nothing";
}

TEST_F(SimFault, ClearFaultsForgetsPendingFaults)
{
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemCreate", 1, CUDA_SUCCESS));
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemCreate", 3, CUDA_SUCCESS));
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuStreamQuery", 1, CUDA_SUCCESS));
  sim().clear_faults();
  for (int i = 0; i < 3; ++i) {
    EXPECT_CU(CUDA_SUCCESS, create(gran())) << "call " << i + 1;
  }
  EXPECT_CU(CUDA_SUCCESS, table().cuStreamQuery(nullptr));
}

TEST_F(SimFault, CheckedWrapperReportsTheInjectedFailure)
{
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemCreate", 1, CUDA_SUCCESS));
  try {
    scoped_handle handle(drv(), 2 * gran(), device());
    FAIL() << "the injected cuMemCreate failure did not throw";
  } catch (cuda_error const& error) {
    std::string const what = error.what();
    EXPECT_EQ(error.code(), CUDA_ERROR_OUT_OF_MEMORY);
    EXPECT_EQ(error.call(), "cuMemCreate");
    EXPECT_NE(what.find("CUDA_ERROR_OUT_OF_MEMORY"), std::string::npos) << what;
    EXPECT_NE(what.find("size=" + std::to_string(2 * gran())), std::string::npos) << what;
  }
}

// ---- Census ---------------------------------------------------------------------------

class SimCensus : public DriverTest {};

TEST_F(SimCensus, ReflectsObjectsCreatedAndDestroyed)
{
  SIM_ONLY(sim(), "the census is the simulator's");
  auto const before = sim().census();
  {
    scoped_reservation reservation(drv(), 4 * gran());
    scoped_handle handle(drv(), 2 * gran(), device());
    pinned_buffer host(drv(), 1 << 16);
    scoped_stream stream(drv());
    scoped_event event(drv());
    auto now = sim().census();
    EXPECT_EQ(now.reservations, before.reservations + 1);
    EXPECT_EQ(now.handles, before.handles + 1);
    EXPECT_EQ(now.physical_bytes, before.physical_bytes + 2 * gran());
    EXPECT_EQ(now.mappings, before.mappings);
    EXPECT_EQ(now.host_allocations, before.host_allocations + 1);
    EXPECT_EQ(now.host_bytes, before.host_bytes + (1 << 16));
    EXPECT_EQ(now.streams, before.streams + 1);
    EXPECT_EQ(now.events, before.events + 1);
    {
      scoped_mapping a(drv(), reservation.ptr(), 2 * gran(), handle.get());
      scoped_mapping b(drv(), reservation.ptr() + 2 * gran(), 2 * gran(), handle.get());
      EXPECT_EQ(sim().census().mappings, before.mappings + 2);
      ASSERT_CU(CUDA_SUCCESS, handle.release());
      now = sim().census();
      EXPECT_EQ(now.handles, before.handles) << "the handle is released";
      EXPECT_EQ(now.physical_bytes, before.physical_bytes + 2 * gran())
        << "but its memory is still mapped";
    }
    now = sim().census();
    EXPECT_EQ(now.mappings, before.mappings);
    EXPECT_EQ(now.physical_bytes, before.physical_bytes);
  }
  auto const after = sim().census();
  EXPECT_EQ(after.reservations, before.reservations);
  EXPECT_EQ(after.handles, before.handles);
  EXPECT_EQ(after.host_allocations, before.host_allocations);
  EXPECT_EQ(after.host_bytes, before.host_bytes);
  EXPECT_TRUE(wait_until([&] {
    auto const c = sim().census();
    return c.streams == before.streams && c.events == before.events;
  }));
}

}  // namespace
}  // namespace swapalloc::testing
