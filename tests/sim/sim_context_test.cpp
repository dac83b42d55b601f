// Conformance: devices and contexts.
// Spec: tools/cudasim/README.md "Devices, contexts, initialization". cuda.h docs
// checked: cuDeviceGetCount, cuDeviceGet, cuDeviceGetName, cuDeviceTotalMem,
// cuDeviceGetAttribute, cuDevicePrimaryCtxRetain/Release, cuDevicePrimaryCtxGetState,
// cuCtxSetCurrent/GetCurrent, cuCtxGetDevice, cuCtxSynchronize, cuMemGetInfo.
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "driver_fixture.hpp"
#include "unwrapped_entry_points.hpp"

namespace swapalloc::testing {
namespace {

class SimDevice : public DriverTest {};

TEST_F(SimDevice, CountAndOrdinals)
{
  int count = 0;
  ASSERT_CU(CUDA_SUCCESS, table().cuDeviceGetCount(&count));
  EXPECT_GE(count, 1);
  CUdevice device{};
  EXPECT_CU(CUDA_SUCCESS, table().cuDeviceGet(&device, 0));
  EXPECT_CU(CUDA_ERROR_INVALID_DEVICE, table().cuDeviceGet(&device, count));
  EXPECT_CU(CUDA_ERROR_INVALID_DEVICE, table().cuDeviceGet(&device, -1));
  if (sim().available() && std::getenv("SWAPALLOC_SIM_DEVICES") == nullptr) {
    EXPECT_EQ(count, 1) << "cudasim has one device unless SWAPALLOC_SIM_DEVICES says otherwise";
  }
}

TEST_F(SimDevice, SimulatedDeviceName)
{
  SIM_ONLY(sim(), "the name of a real GPU is its marketing name");
  EXPECT_EQ(drv().device_name(device()), "cudasim simulated GPU");
}

TEST_F(SimDevice, TotalMemoryMatchesMemGetInfo)
{
  std::size_t total = 0;
  ASSERT_CU(CUDA_SUCCESS, table().cuDeviceTotalMem(&total, device()));
  auto const info = drv().mem_get_info();
  EXPECT_EQ(info.total, total);
  EXPECT_LE(info.free, info.total);
  EXPECT_GT(info.free, 0u);
}

TEST_F(SimDevice, DefaultSimulatedCapacityIsEightGiB)
{
  SIM_ONLY(sim(), "capacity is the GPU's own");
  if (std::getenv("SWAPALLOC_SIM_MEMORY") != nullptr ||
      std::getenv("SWAPALLOC_SIM_EXTERNAL") != nullptr) {
    GTEST_SKIP() << "SWAPALLOC_SIM_MEMORY or SWAPALLOC_SIM_EXTERNAL is set in this environment";
  }
  auto const info = drv().mem_get_info();
  EXPECT_EQ(info.total, std::size_t{8} << 30);
  // free = capacity - external usage (0) - live physical allocations (none here).
  EXPECT_EQ(info.free, info.total);
}

TEST_F(SimDevice, AttributesSwapallocReads)
{
  EXPECT_EQ(
    drv().device_attribute(device(), CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED), 1);
  EXPECT_EQ(drv().device_attribute(device(), CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING), 1);
  EXPECT_EQ(drv().device_attribute(device(), CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY), 1);
  EXPECT_GE(drv().device_attribute(device(), CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT), 1);
  EXPECT_GE(drv().device_attribute(device(), CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT), 1);
  int const major = drv().device_attribute(device(), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
  int const minor = drv().device_attribute(device(), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
  EXPECT_GE(major, 5);
  if (sim().available()) {
    EXPECT_EQ(major, 7) << "cudasim models compute capability 7.5 (RTX 2070)";
    EXPECT_EQ(minor, 5) << "cudasim models compute capability 7.5 (RTX 2070)";
    EXPECT_EQ(drv().device_attribute(device(), CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT), 2);
  }
}

TEST_F(SimDevice, AttributeErrors)
{
  int value = 0;
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE,
            table().cuDeviceGetAttribute(&value, CU_DEVICE_ATTRIBUTE_MAX, device()));
  int count = 0;
  ASSERT_CU(CUDA_SUCCESS, table().cuDeviceGetCount(&count));
  EXPECT_CU(CUDA_ERROR_INVALID_DEVICE,
            table().cuDeviceGetAttribute(&value, CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING, count));
}

TEST_F(SimDevice, UnmodelledAttributeIsInvalidValue)
{
  SIM_ONLY(sim(), "a real GPU answers every attribute");
  int value = 0;
  EXPECT_CU(
    CUDA_ERROR_INVALID_VALUE,
    table().cuDeviceGetAttribute(&value, CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_WIDTH, device()));
}

// ---- Contexts -------------------------------------------------------------------------

class SimContext : public DriverTest {};

TEST_F(SimContext, PrimaryContextIsSharedAndRefcounted)
{
  CUcontext again = nullptr;
  ASSERT_CU(CUDA_SUCCESS, table().cuDevicePrimaryCtxRetain(&again, device()));
  EXPECT_EQ(again, context()) << "one primary context per device";
  EXPECT_CU(CUDA_SUCCESS, table().cuDevicePrimaryCtxRelease(device()));
  // The fixture's own reference keeps the context alive and usable.
  EXPECT_CU(CUDA_SUCCESS, table().cuCtxSynchronize());
  CUcontext current = nullptr;
  EXPECT_CU(CUDA_SUCCESS, table().cuCtxGetCurrent(&current));
  EXPECT_EQ(current, context());
}

TEST(SimContextRefcount, ReleasingMoreThanRetainedIsInvalidContext)
{
  // cuda.h: "Releasing a primary context that has not been previously retained will
  // fail with CUDA_ERROR_INVALID_CONTEXT".
  driver const& drv     = shared_driver();
  CUdevice const device = drv.device(0);
  CUcontext context     = nullptr;
  ASSERT_CU(CUDA_SUCCESS, drv.table().cuDevicePrimaryCtxRetain(&context, device));
  EXPECT_CU(CUDA_SUCCESS, drv.table().cuDevicePrimaryCtxRelease(device));
  EXPECT_CU(CUDA_ERROR_INVALID_CONTEXT, drv.table().cuDevicePrimaryCtxRelease(device));
}

TEST_F(SimContext, CurrentContextIsPerThread)
{
  CUcontext seen_fresh   = reinterpret_cast<CUcontext>(0x1);
  CUcontext seen_set     = nullptr;
  CUcontext seen_cleared = reinterpret_cast<CUcontext>(0x1);
  CUresult results[4]    = {};
  std::thread([&] {
    results[0] = table().cuCtxGetCurrent(&seen_fresh);
    results[1] = table().cuCtxSetCurrent(context());
    table().cuCtxGetCurrent(&seen_set);
    results[2] = table().cuCtxSetCurrent(nullptr);
    results[3] = table().cuCtxGetCurrent(&seen_cleared);
  }).join();
  for (CUresult const result : results) {
    EXPECT_CU(CUDA_SUCCESS, result);
  }
  EXPECT_EQ(seen_fresh, nullptr) << "a new thread has no current context";
  EXPECT_EQ(seen_set, context());
  EXPECT_EQ(seen_cleared, nullptr);
  // The other thread's changes leave this thread's current context alone.
  CUcontext mine = nullptr;
  EXPECT_CU(CUDA_SUCCESS, table().cuCtxGetCurrent(&mine));
  EXPECT_EQ(mine, context());
}

TEST_F(SimContext, CallsWithoutCurrentContextAreInvalidContext)
{
  auto range = make_range();
  std::vector<std::uint32_t> host(16, 0);
  struct outcome {
    char const* call;
    CUresult result;
  };
  std::vector<outcome> outcomes;
  void* pinned    = nullptr;
  void* pinned2   = nullptr;
  CUstream stream = nullptr;
  CUevent event   = nullptr;
  std::thread([&] {
    auto const& t     = table();
    std::size_t free  = 0;
    std::size_t total = 0;
    CUdevice dev      = -1;
    outcomes.push_back({"cuMemGetInfo_v2", t.cuMemGetInfo(&free, &total)});
    outcomes.push_back({"cuMemHostAlloc", t.cuMemHostAlloc(&pinned, 4096, 0)});
    outcomes.push_back({"cuMemAllocHost_v2", t.cuMemAllocHost(&pinned2, 4096)});
    outcomes.push_back({"cuMemcpyHtoD_v2", t.cuMemcpyHtoD(range.ptr(), host.data(), 64)});
    outcomes.push_back({"cuMemcpyDtoH_v2", t.cuMemcpyDtoH(host.data(), range.ptr(), 64)});
    outcomes.push_back({"cuMemsetD8_v2", t.cuMemsetD8(range.ptr(), 1, 64)});
    outcomes.push_back({"cuMemsetD32_v2", t.cuMemsetD32(range.ptr(), 1, 16)});
    outcomes.push_back({"cuStreamCreate", t.cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING)});
    outcomes.push_back({"cuEventCreate", t.cuEventCreate(&event, CU_EVENT_DEFAULT)});
    outcomes.push_back({"cuCtxSynchronize", t.cuCtxSynchronize()});
    outcomes.push_back({"cuCtxGetDevice", t.cuCtxGetDevice(&dev)});
  }).join();
  // A wrongly successful call must not also leak into the strict exit check.
  if (pinned != nullptr) { table().cuMemFreeHost(pinned); }
  if (pinned2 != nullptr) { table().cuMemFreeHost(pinned2); }
  if (stream != nullptr) { table().cuStreamDestroy(stream); }
  if (event != nullptr) { table().cuEventDestroy(event); }
  for (auto const& o : outcomes) {
    EXPECT_EQ(o.result, CUDA_ERROR_INVALID_CONTEXT)
      << o.call << " on a thread without a current context returned " << cu_name(o.result);
  }
}

TEST_F(SimContext, GetDeviceAndSynchronize)
{
  CUdevice current = -1;
  ASSERT_CU(CUDA_SUCCESS, table().cuCtxGetDevice(&current));
  EXPECT_EQ(current, device());
  EXPECT_CU(CUDA_SUCCESS, table().cuCtxSynchronize());
}

// ---- cuDevicePrimaryCtxGetState (not in swapalloc::driver's table; ATen calls it) -----

TEST(SimContextState, ActiveExactlyWhileRetained)
{
  // cuda.h: "active - Pointer to store context state; 0 = inactive, 1 = active". No test
  // holds device 0's primary context outside its fixture (SimContextRefcount relies on
  // that too), so here it starts inactive.
  driver const& drv    = shared_driver();
  auto const get_state = unwrapped_entry_points(drv).primary_ctx_get_state;
  ASSERT_NE(get_state, nullptr) << "the driver does not export cuDevicePrimaryCtxGetState";
  CUdevice const device = drv.device(0);
  unsigned int flags    = 0xdead;
  int active            = -1;
  ASSERT_CU(CUDA_SUCCESS, get_state(device, &flags, &active));
  EXPECT_EQ(active, 0) << "not retained";
  unsigned int const idle_flags = flags;
  CUcontext context             = nullptr;
  ASSERT_CU(CUDA_SUCCESS, drv.table().cuDevicePrimaryCtxRetain(&context, device));
  ASSERT_CU(CUDA_SUCCESS, drv.table().cuDevicePrimaryCtxRetain(&context, device));
  EXPECT_CU(CUDA_SUCCESS, get_state(device, &flags, &active));
  EXPECT_EQ(active, 1) << "retained twice";
  EXPECT_EQ(flags, idle_flags) << "retaining does not change the flags";
  EXPECT_CU(CUDA_SUCCESS, drv.table().cuDevicePrimaryCtxRelease(device));
  EXPECT_CU(CUDA_SUCCESS, get_state(device, &flags, &active));
  EXPECT_EQ(active, 1) << "one reference is left";
  EXPECT_CU(CUDA_SUCCESS, drv.table().cuDevicePrimaryCtxRelease(device));
  EXPECT_CU(CUDA_SUCCESS, get_state(device, &flags, &active));
  EXPECT_EQ(active, 0) << "the last reference is released";
  if (sim_control(drv).available()) {
    // cuDevicePrimaryCtxSetFlags is not modelled: the flags are the default, 0.
    EXPECT_EQ(flags, 0u);
  }
}

TEST_F(SimContext, GetStateRejectsABadDeviceAndMissingOutputs)
{
  auto const get_state = unwrapped_entry_points(drv()).primary_ctx_get_state;
  ASSERT_NE(get_state, nullptr) << "the driver does not export cuDevicePrimaryCtxGetState";
  int count = 0;
  ASSERT_CU(CUDA_SUCCESS, table().cuDeviceGetCount(&count));
  unsigned int flags = 0;
  int active         = 0;
  EXPECT_CU(CUDA_ERROR_INVALID_DEVICE, get_state(count, &flags, &active)) << "ordinal = count";
  EXPECT_CU(CUDA_ERROR_INVALID_DEVICE, get_state(-1, &flags, &active)) << "ordinal -1";
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, get_state(device(), nullptr, &active)) << "null flags";
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, get_state(device(), &flags, nullptr)) << "null active";
  EXPECT_CU(CUDA_SUCCESS, get_state(device(), &flags, &active));
  EXPECT_EQ(active, 1) << "the fixture retains the primary context";
}

}  // namespace
}  // namespace swapalloc::testing
