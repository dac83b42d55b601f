// Conformance: the simulator's configuration and its exit-time leak check (simulator
// only). Each test runs in a child process that sets SWAPALLOC_SIM_* before its own
// cuInit, since the configuration is read once, at the first cuInit.
// Spec: tools/cudasim/cudasim.h (the environment variables), tools/cudasim/README.md
// "Devices, contexts, initialization" and "Failures, leaks". cuda.h docs checked:
// cuInit, cuDeviceGetCount, cuDeviceTotalMem, cuMemGetInfo.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>

#include <gtest/gtest.h>

#include "configured_child.hpp"
#include "driver_fixture.hpp"
#include "sim_control.hpp"
#include "sim_test_units.hpp"
#include "unwrapped_entry_points.hpp"

namespace swapalloc::testing {
namespace {

class SimConfig : public ::testing::Test {
 protected:
  void SetUp() override
  {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    if (!simulator_library_present()) {
      GTEST_SKIP() << "simulator only: its configuration variables and its exit check";
    }
  }
};

TEST_F(SimConfig, MemoryCapacity)
{
  auto const expect_capacity = [](char const* value, std::size_t bytes) {
    configured_child(
      {{"SWAPALLOC_SIM_MEMORY", value}}, [&](driver const& drv, child_checks& check) {
        auto const info   = drv.mem_get_info();
        std::size_t total = 0;
        check.result(drv.table().cuDeviceTotalMem(&total, drv.device(0)), CUDA_SUCCESS,
                     "cuDeviceTotalMem_v2");
        check(info.total == bytes, "cuMemGetInfo_v2 total is the configured capacity");
        check(info.free == bytes, "cuMemGetInfo_v2 free is the whole capacity");
        check(total == bytes, "cuDeviceTotalMem_v2 is the configured capacity");
      });
  };
  EXPECT_EXIT(expect_capacity("1G", kGiB), ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(expect_capacity("512M", 512 * kMiB), ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(expect_capacity("1073741824", kGiB), ::testing::ExitedWithCode(0), "");
}

TEST_F(SimConfig, DeviceCount)
{
  auto const child = [] {
    configured_child(
      {{"SWAPALLOC_SIM_DEVICES", "3"}, {"SWAPALLOC_SIM_MEMORY", "1G"}},
      [](driver const& drv, child_checks& check) {
        check(drv.device_count() == 3, "three devices");
        CUdevice device{};
        check.result(drv.table().cuDeviceGet(&device, 2), CUDA_SUCCESS, "cuDeviceGet(2)");
        check.result(drv.table().cuDeviceGet(&device, 3), CUDA_ERROR_INVALID_DEVICE,
                     "cuDeviceGet(3)");
        CUcontext second = nullptr;
        check.result(drv.table().cuDevicePrimaryCtxRetain(&second, drv.device(2)), CUDA_SUCCESS,
                     "cuDevicePrimaryCtxRetain(2)");
        CUcontext first = nullptr;
        drv.table().cuCtxGetCurrent(&first);
        check(second != nullptr && second != first, "each device has its own primary context");
        drv.set_current_context(second);
        CUdevice current = -1;
        check.result(drv.table().cuCtxGetDevice(&current), CUDA_SUCCESS, "cuCtxGetDevice");
        check(current == drv.device(2), "the current context's device");
        check(drv.mem_get_info().total == kGiB, "each device has the configured capacity");
        // Memory is accounted per device: a handle on device 2 leaves device 0 alone.
        std::size_t const granularity = drv.allocation_granularity(drv.device(2));
        auto handle                   = drv.mem_create(4 * granularity, drv.device(2));
        check(drv.mem_get_info().free == kGiB - 4 * granularity, "device 2's free memory drops");
        drv.set_current_context(first);
        check(drv.mem_get_info().free == kGiB, "device 0's free memory does not");
        drv.mem_release(handle);
      });
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
}

TEST_F(SimConfig, ExternalUsage)
{
  auto const child = [] {
    configured_child(
      {{"SWAPALLOC_SIM_MEMORY", "2G"}, {"SWAPALLOC_SIM_EXTERNAL", "512M"}},
      [](driver const& drv, child_checks& check) {
        auto info = drv.mem_get_info();
        check(info.total == 2 * kGiB, "total is the capacity");
        check(info.free == 2 * kGiB - 512 * kMiB, "free = capacity - external usage");
        sim_control const sim(drv);
        check.result(sim.set_external_usage(0, 0), CUDA_SUCCESS, "cudasimSetExternalUsage(0, 0)");
        check(drv.mem_get_info().free == 2 * kGiB, "free follows cudasimSetExternalUsage");
        check.result(sim.set_external_usage(1, 0), CUDA_ERROR_INVALID_DEVICE,
                     "cudasimSetExternalUsage on a device that does not exist");
      });
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
}

TEST_F(SimConfig, MalformedValueFailsInit)
{
  // cudasim.h: "a malformed value makes cuInit fail with CUDA_ERROR_INVALID_VALUE and a
  // message on stderr naming the variable". The seam turns that into driver_unavailable.
  auto const child = [](char const* name, char const* value) {
    configure({{name, value}});
    try {
      driver drv(driver_library_path());
      std::fprintf(stderr, "the driver loaded with %s=%s\n", name, value);
      child_exit(1);
    } catch (driver_unavailable const& error) {
      bool const named = std::strstr(error.what(), "CUDA_ERROR_INVALID_VALUE") != nullptr &&
                         std::strstr(error.what(), "cuInit") != nullptr;
      std::fprintf(stderr, "driver_unavailable: %s\n", error.what());
      child_exit(named ? 0 : 1);
    }
  };
  EXPECT_EXIT(child("SWAPALLOC_SIM_MEMORY", "lots"), ::testing::ExitedWithCode(0),
              "SWAPALLOC_SIM_MEMORY");
  EXPECT_EXIT(child("SWAPALLOC_SIM_MEMORY", "12Q"), ::testing::ExitedWithCode(0),
              "SWAPALLOC_SIM_MEMORY");
  EXPECT_EXIT(child("SWAPALLOC_SIM_DEVICES", "17"), ::testing::ExitedWithCode(0),
              "SWAPALLOC_SIM_DEVICES");
  EXPECT_EXIT(child("SWAPALLOC_SIM_EXTERNAL", "-5"), ::testing::ExitedWithCode(0),
              "SWAPALLOC_SIM_EXTERNAL");
  EXPECT_EXIT(child("SWAPALLOC_SIM_LINK_GBPS", "fast"), ::testing::ExitedWithCode(0),
              "SWAPALLOC_SIM_LINK_GBPS");
  EXPECT_EXIT(child("SWAPALLOC_SIM_FAIL", "cuMemCreate"), ::testing::ExitedWithCode(0),
              "SWAPALLOC_SIM_FAIL");
}

TEST_F(SimConfig, FaultsFromEnvironment)
{
  auto const child = [] {
    configured_child(
      {{"SWAPALLOC_SIM_FAIL", "cuMemCreate:2:CUDA_ERROR_INVALID_VALUE,cuMemHostAlloc:1"}},
      [](driver const& drv, child_checks& check) {
        auto const prop        = driver::device_allocation(drv.device(0));
        std::size_t const size = drv.allocation_granularity(drv.device(0));
        CUresult results[3]    = {};
        for (auto& result : results) {
          CUmemGenericAllocationHandle handle{};
          result = drv.table().cuMemCreate(&handle, size, &prop, 0);
          if (result == CUDA_SUCCESS) { drv.table().cuMemRelease(handle); }
        }
        check.result(results[0], CUDA_SUCCESS, "first cuMemCreate");
        check.result(results[1], CUDA_ERROR_INVALID_VALUE, "second cuMemCreate (injected)");
        check.result(results[2], CUDA_SUCCESS, "third cuMemCreate");
        void* pointer = nullptr;
        check.result(drv.table().cuMemHostAlloc(&pointer, 4096, 0), CUDA_ERROR_OUT_OF_MEMORY,
                     "first cuMemHostAlloc (injected, default error)");
        check.result(drv.table().cuMemHostAlloc(&pointer, 4096, 0), CUDA_SUCCESS,
                     "second cuMemHostAlloc");
      });
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
}

TEST_F(SimConfig, LinkBandwidthFromEnvironment)
{
  auto const child = [] {
    configured_child({{"SWAPALLOC_SIM_LINK_GBPS", "1"}},
                     [](driver const& drv, child_checks& check) {
                       std::size_t const bytes = 32 * kMiB;  // 33.5 ms at 1 GB/s
                       void* host              = drv.host_alloc(bytes);
                       std::memset(host, 1, bytes);
                       CUdeviceptr ptr = drv.address_reserve(bytes);
                       auto handle     = drv.mem_create(bytes, drv.device(0));
                       drv.mem_map(ptr, bytes, handle);
                       drv.mem_set_access(ptr, bytes, drv.device(0));
                       auto const start = std::chrono::steady_clock::now();
                       drv.memcpy_htod(ptr, host, bytes);
                       auto const elapsed = std::chrono::steady_clock::now() - start;
                       check(elapsed >= std::chrono::milliseconds(30),
                             "a 32 MiB copy over a 1 GB/s link takes >= 30 ms");
                     });
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
}

// ---- The exit-time leak check -----------------------------------------------------------

/// The leak check runs in children, like the configuration tests.
class SimLeakCheck : public SimConfig {};

TEST_F(SimLeakCheck, StrictModeFailsTheProcessOnALeak)
{
  EXPECT_EXIT(strict_child([](driver const& drv, CUdevice) { (void)drv.stream_create(); }),
              ::testing::ExitedWithCode(3), "stream");
}

TEST_F(SimLeakCheck, StrictModeCountsARetainedHandleNotReleased)
{
  // cuda.h (cuMemRetainAllocationHandle): "The returned handle must be released with
  // corresponding number of calls to cuMemRelease." Here the reference cuMemCreate gave
  // is released, but not the retained one.
  EXPECT_EXIT(
    strict_child([](driver const& drv, CUdevice device) {
      auto const retain      = unwrapped_entry_points(drv).mem_retain_allocation_handle;
      std::size_t const size = drv.allocation_granularity(device);
      CUdeviceptr const ptr  = drv.address_reserve(size);
      auto const handle      = drv.mem_create(size, device);
      CUmemGenericAllocationHandle retained{};
      drv.mem_map(ptr, size, handle);
      if (retain == nullptr || retain(&retained, reinterpret_cast<void*>(ptr)) != CUDA_SUCCESS) {
        child_exit(1);
      }
      drv.mem_release(handle);
      drv.mem_unmap(ptr, size);
      drv.address_free(ptr, size);
      drv.release_primary_context(device);
    }),
    ::testing::ExitedWithCode(3), "1 memory handle not released");
}

TEST_F(SimLeakCheck, StrictModePassesWhenEverythingIsGivenBack)
{
  EXPECT_EXIT(strict_child([](driver const& drv, CUdevice device) {
                drv.stream_destroy(drv.stream_create());
                drv.host_free(drv.host_alloc(4096));
                drv.release_primary_context(device);
              }),
              ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace swapalloc::testing
