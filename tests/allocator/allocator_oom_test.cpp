// Tests of out-of-memory handling: the simulated device is small (256 MiB unless the
// environment says otherwise), so real exhaustion is cheap; fault injection covers every
// driver call of the allocation path. After each failure the allocator stays usable.
#include "allocator_fixture.hpp"

#include <cstdlib>
#include <string>

namespace swapalloc::testing {
namespace {

// Before any test initializes the driver: the simulator reads this at cuInit.
int const small_device = ::setenv("SWAPALLOC_SIM_MEMORY", "256M", 0);

class AllocatorOomTest : public AllocatorTest {
 protected:
  void SetUp() override
  {
    AllocatorTest::SetUp();
    if (!sim().available()) {
      GTEST_SKIP() << "needs the simulator's 256 MiB device and fault injection";
    }
    ASSERT_EQ(small_device, 0);
    ASSERT_EQ(drv().mem_get_info().total, 256 * MiB)
      << "SWAPALLOC_SIM_MEMORY was set by the environment";
  }
};

TEST_F(AllocatorOomTest, FullDeviceThrowsOutOfMemoryWithThePoolTable)
{
  pool_id const sdxl = alloc().create_pool("sdxl");
  CUdeviceptr big    = 0;
  {
    pool_scope const scope(alloc(), sdxl);
    big = alloc().allocate(200 * MiB, 0, nullptr);
  }
  CUdeviceptr const small = alloc().allocate(MiB, 0, nullptr);
  alloc().pin_pool(sdxl);  // in use: the policy may not evict it to make room
  pool_stats const before = alloc().device_stats(0);
  try {
    (void)alloc().allocate(100 * MiB, 0, nullptr);
    FAIL() << "100 MiB fit beside 202 MiB on a 256 MiB device";
  } catch (out_of_memory const& error) {
    std::string const what = error.what();
    EXPECT_EQ(error.requested_bytes(), 100 * MiB);
    EXPECT_EQ(error.device(), 0);
    for (std::string const needle :
         {"out of memory on device 0", "allocating 100.00 MiB (104857600 bytes) in pool 'default'",
          "its block needs 100.00 MiB of new pages, and the device has", "MiB free after releasing",
          "total 256.00 MiB", "allocated", "resident", "evicted", "eviction", "cached-free", "sdxl",
          "200.00 MiB", "default", "no (pinned or active)", "no (default pool)"}) {
      EXPECT_NE(what.find(needle), std::string::npos) << "missing '" << needle << "' in:\n" << what;
    }
  }
  pool_stats const after = alloc().device_stats(0);
  EXPECT_EQ(after.live_blocks, before.live_blocks);
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_EQ(after.evicted_bytes, 0U) << "pinned and default pools are never evicted";
  alloc().unpin_pool(sdxl);
  alloc().deallocate(big, 200 * MiB, 0, nullptr);
  CUdeviceptr const retry = alloc().allocate(100 * MiB, 0, nullptr);  // now it fits
  alloc().deallocate(retry, 100 * MiB, 0, nullptr);
  alloc().deallocate(small, MiB, 0, nullptr);
}

TEST_F(AllocatorOomTest, CachedPagesOfEveryPoolAreReleasedBeforeGivingUp)
{
  pool_id const first  = alloc().create_pool("first");
  pool_id const second = alloc().create_pool("second");
  {
    pool_scope const scope(alloc(), first);
    CUdeviceptr const p = alloc().allocate(200 * MiB, 0, nullptr);
    alloc().deallocate(p, 200 * MiB, 0, nullptr);  // cached in "first"
  }
  EXPECT_EQ(alloc().stats(first, 0).reserved_bytes, 200 * MiB);
  pool_scope const scope(alloc(), second);
  CUdeviceptr const q = alloc().allocate(200 * MiB, 0, nullptr);
  EXPECT_EQ(alloc().stats(first, 0).reserved_bytes, 0U) << "first's cache was released for second";
  EXPECT_EQ(alloc().stats(second, 0).reserved_bytes, 200 * MiB);
  alloc().deallocate(q, 200 * MiB, 0, nullptr);
}

TEST_F(AllocatorOomTest, RequestBeyondThePoolsCapacityFailsClearly)
{
  pool_options small_range;
  small_range.capacity = 16 * MiB;
  pool_id const tiny   = alloc().create_pool("tiny", small_range);
  pool_scope const scope(alloc(), tiny);
  try {
    (void)alloc().allocate(17 * MiB, 0, nullptr);
    FAIL() << "17 MiB fit in a 16 MiB pool";
  } catch (out_of_memory const& error) {
    EXPECT_NE(std::string(error.what()).find("exceeds the pool's capacity of 16.00 MiB"),
              std::string::npos)
      << error.what();
  }
  CUdeviceptr const fits = alloc().allocate(16 * MiB, 0, nullptr);
  try {
    (void)alloc().allocate(512, 0, nullptr);
    ADD_FAILURE() << "512 bytes fit in a full pool";
  } catch (out_of_memory const& error) {
    EXPECT_NE(
      std::string(error.what()).find("the pool's address range of 16.00 MiB has no free run"),
      std::string::npos)
      << error.what();
  }
  alloc().deallocate(fits, 16 * MiB, 0, nullptr);
}

TEST_F(AllocatorOomTest, MemoryTakenByOtherProcessesIsReported)
{
  ASSERT_EQ(sim().set_external_usage(0, 250 * MiB), CUDA_SUCCESS);
  try {
    (void)alloc().allocate(8 * MiB, 0, nullptr);
    ADD_FAILURE() << "8 MiB fit in 6 MiB";
  } catch (out_of_memory const& error) {
    EXPECT_NE(std::string(error.what()).find("free 6.00 MiB"), std::string::npos) << error.what();
  }
  ASSERT_EQ(sim().set_external_usage(0, 0), CUDA_SUCCESS);
  CUdeviceptr const p = alloc().allocate(8 * MiB, 0, nullptr);
  alloc().deallocate(p, 8 * MiB, 0, nullptr);
}

TEST_F(AllocatorOomTest, InjectedOutOfMemoryIsRetriedOnce)
{
  CUdeviceptr const warm = alloc().allocate(MiB, 0, nullptr);  // the pool exists
  ASSERT_EQ(sim().fail_call("cuMemCreate", 1, CUDA_ERROR_OUT_OF_MEMORY), CUDA_SUCCESS);
  auto const syncs    = sim().call_count("cuCtxSynchronize");
  CUdeviceptr const p = alloc().allocate(4 * MiB, 0, nullptr);
  EXPECT_NE(p, 0U);
  EXPECT_EQ(sim().call_count("cuCtxSynchronize"), syncs + 1)
    << "the cache release before the retry";
  alloc().deallocate(p, 4 * MiB, 0, nullptr);
  alloc().deallocate(warm, MiB, 0, nullptr);
}

/// A failure injected at each driver call of a first allocation (which creates the pool).
struct slow_path_fault {
  char const* entry;
  bool recovers;  // an out-of-memory that the retry absorbs
};

/// Names the parameter in test output.
inline void PrintTo(slow_path_fault const& fault, std::ostream* os) { *os << fault.entry; }

class AllocatorSlowPathFault : public AllocatorOomTest,
                               public ::testing::WithParamInterface<slow_path_fault> {};

TEST_P(AllocatorSlowPathFault, FailureLeavesTheAllocatorUsable)
{
  slow_path_fault const fault = GetParam();
  ASSERT_EQ(sim().fail_call(fault.entry, 1, CUDA_SUCCESS), CUDA_SUCCESS);
  CUdeviceptr first = 0;
  if (fault.recovers) {
    first = alloc().allocate(5 * MiB, 0, nullptr);
  } else {
    EXPECT_THROW(first = alloc().allocate(5 * MiB, 0, nullptr), cuda_error);
  }
  sim().clear_faults();
  EXPECT_EQ(alloc().check(), "");
  std::size_t const expected_live = first != 0 ? 1 : 0;
  EXPECT_EQ(alloc().device_stats(0).live_blocks, expected_live);
  CUdeviceptr const second = alloc().allocate(5 * MiB, 0, nullptr);
  fill(second, 5 * MiB, 0xC0FFEE);
  EXPECT_EQ(word_at(second, 5 * MiB - 4), 0xC0FFEEU);
  alloc().deallocate(second, 5 * MiB, 0, nullptr);
  if (first != 0) { alloc().deallocate(first, 5 * MiB, 0, nullptr); }
}

INSTANTIATE_TEST_SUITE_P(EveryCall, AllocatorSlowPathFault,
                         ::testing::Values(slow_path_fault{"cuDevicePrimaryCtxRetain", false},
                                           slow_path_fault{"cuCtxGetCurrent", false},
                                           slow_path_fault{"cuMemGetAllocationGranularity", false},
                                           slow_path_fault{"cuDeviceTotalMem", false},
                                           slow_path_fault{"cuMemAddressReserve", false},
                                           slow_path_fault{"cuMemCreate", true},
                                           slow_path_fault{"cuMemMap", false},
                                           slow_path_fault{"cuMemRelease", false},
                                           slow_path_fault{"cuMemSetAccess", false}),
                         [](auto const& info) { return std::string(info.param.entry); });

}  // namespace
}  // namespace swapalloc::testing
