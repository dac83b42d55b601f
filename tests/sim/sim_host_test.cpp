// Conformance: page-locked host memory.
// Spec: tools/cudasim/README.md "Device accesses: copies and memsets" (what counts as
// pinned) and "Failures, leaks" (host allocations are tracked). cuda.h docs checked:
// cuMemHostAlloc, cuMemAllocHost, cuMemFreeHost.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "driver_fixture.hpp"

namespace swapalloc::testing {
namespace {

class SimHost : public DriverTest {};

TEST_F(SimHost, HostAllocIsUsableFromHostAndForCopies)
{
  std::size_t const words = std::size_t{64} * 1024;
  pinned_buffer source(drv(), words * 4);
  pinned_buffer target(drv(), words * 4);
  ASSERT_NE(source.data(), nullptr);
  auto const data = pattern(words, 0x600d);
  std::memcpy(source.data(), data.data(), words * 4);  // host memory: the host may touch it
  std::memset(target.data(), 0, words * 4);
  auto range = make_range();
  drv().memcpy_htod(range.ptr(), source.data(), words * 4);
  drv().memcpy_dtoh(target.data(), range.ptr(), words * 4);
  EXPECT_EQ(std::memcmp(target.data(), data.data(), words * 4), 0);
}

TEST_F(SimHost, HostAllocAcceptsItsDocumentedFlags)
{
  for (unsigned int const flags :
       {0u, unsigned{CU_MEMHOSTALLOC_PORTABLE}, unsigned{CU_MEMHOSTALLOC_DEVICEMAP},
        unsigned{CU_MEMHOSTALLOC_WRITECOMBINED},
        unsigned{CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP}}) {
    void* pointer = nullptr;
    ASSERT_CU(CUDA_SUCCESS, table().cuMemHostAlloc(&pointer, 1 << 16, flags)) << "flags " << flags;
    EXPECT_NE(pointer, nullptr);
    EXPECT_CU(CUDA_SUCCESS, table().cuMemFreeHost(pointer));
  }
}

TEST_F(SimHost, AllocHostIsFreedByFreeHost)
{
  void* pointer = nullptr;
  ASSERT_CU(CUDA_SUCCESS, table().cuMemAllocHost(&pointer, 1 << 20));
  ASSERT_NE(pointer, nullptr);
  std::memset(pointer, 0x42, 1 << 20);
  EXPECT_EQ(static_cast<unsigned char*>(pointer)[(1 << 20) - 1], 0x42);
  EXPECT_CU(CUDA_SUCCESS, table().cuMemFreeHost(pointer));
}

TEST_F(SimHost, AllocHostMemoryIsPinned)
{
  // A copy into pinned memory is fully asynchronous: it returns while its stream is blocked.
  void* pointer = nullptr;
  ASSERT_CU(CUDA_SUCCESS, table().cuMemAllocHost(&pointer, 1 << 16));
  {
    auto range = make_range();
    scoped_stream stream(drv());
    host_gate gate(2s);
    gate.enqueue(drv(), stream);
    drv().memcpy_dtoh_async(pointer, range.ptr(), 1 << 16, stream);
    EXPECT_FALSE(gate.opened_by_watchdog())
      << "a copy into cuMemAllocHost memory waited for its stream, as if it were pageable";
  }
  EXPECT_CU(CUDA_SUCCESS, table().cuMemFreeHost(pointer));
}

TEST_F(SimHost, FreeingANonBasePointerIsInvalid)
{
  void* pointer = nullptr;
  ASSERT_CU(CUDA_SUCCESS, table().cuMemHostAlloc(&pointer, 1 << 20, 0));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemFreeHost(static_cast<char*>(pointer) + 4096));
  EXPECT_CU(CUDA_SUCCESS, table().cuMemFreeHost(pointer))
    << "the block is still live after the failed free";
}

TEST_F(SimHost, FreeingNullDoesNothing)
{
  // free(NULL) semantics, observed on driver 590.48.01 (lupinemachines/lupine issue 850).
  std::size_t const before = sim().available() ? sim().census().host_allocations : 0;
  EXPECT_CU(CUDA_SUCCESS, table().cuMemFreeHost(nullptr));
  if (sim().available()) { EXPECT_EQ(sim().census().host_allocations, before); }
}

TEST_F(SimHost, FreeingPageableMemoryIsInvalid)
{
  std::vector<std::uint32_t> pageable(1024);
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemFreeHost(pageable.data()));
}

TEST_F(SimHost, FreeingTwiceIsInvalid)
{
  SIM_ONLY(sim(), "a second free of pinned memory is undefined on a real driver");
  void* pointer = nullptr;
  ASSERT_CU(CUDA_SUCCESS, table().cuMemHostAlloc(&pointer, 1 << 16, 0));
  EXPECT_CU(CUDA_SUCCESS, table().cuMemFreeHost(pointer));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemFreeHost(pointer));
}

TEST_F(SimHost, CensusCountsHostAllocations)
{
  SIM_ONLY(sim(), "the census is the simulator's");
  auto const before = sim().census();
  {
    pinned_buffer a(drv(), 1 << 20);
    void* b = nullptr;
    ASSERT_CU(CUDA_SUCCESS, table().cuMemAllocHost(&b, 1 << 16));
    auto const during = sim().census();
    EXPECT_EQ(during.host_allocations, before.host_allocations + 2);
    EXPECT_EQ(during.host_bytes, before.host_bytes + (1 << 20) + (1 << 16));
    EXPECT_CU(CUDA_SUCCESS, table().cuMemFreeHost(b));
  }
  auto const after = sim().census();
  EXPECT_EQ(after.host_allocations, before.host_allocations);
  EXPECT_EQ(after.host_bytes, before.host_bytes);
}

}  // namespace
}  // namespace swapalloc::testing
