// Tests of the allocator on two simulated devices: one state per device, a block freed
// with the wrong device is a usage error naming its own device.
#include "allocator_fixture.hpp"

#include <cstdlib>
#include <string>

namespace swapalloc::testing {
namespace {

// Before the driver initializes: the simulator reads this at cuInit.
int const two_devices = ::setenv("SWAPALLOC_SIM_DEVICES", "2", 0);

TEST(AllocatorDevices, EachDeviceHasItsOwnStateAndMemory)
{
  if (!simulator_library_present()) {
    GTEST_SKIP() << "needs the simulator (two simulated devices)";
  }
  ASSERT_EQ(two_devices, 0);
  driver& drv = shared_driver();
  ASSERT_EQ(drv.device_count(), 2);
  {
    allocator alloc(drv);
    CUdeviceptr const on0 = alloc.allocate(4 * MiB, 0, nullptr);
    CUdeviceptr const on1 = alloc.allocate(4 * MiB, 1, nullptr);
    EXPECT_NE(on0, on1);
    EXPECT_EQ(alloc.device_stats(0).live_blocks, 1U);
    EXPECT_EQ(alloc.device_stats(1).live_blocks, 1U);
    try {
      alloc.deallocate(on1, 4 * MiB, 0, nullptr);
      FAIL() << "freeing device 1's block as device 0's was accepted";
    } catch (usage_error const& error) {
      EXPECT_EQ(error.kind(), usage_error_kind::wrong_device);
      EXPECT_NE(std::string(error.what()).find("allocated on device 1"), std::string::npos)
        << error.what();
    }
    EXPECT_THROW((void)alloc.allocate(4, 2, nullptr), usage_error);
    alloc.deallocate(on0, 4 * MiB, 0, nullptr);
    alloc.deallocate(on1, 4 * MiB, 1, nullptr);
    EXPECT_EQ(alloc.check(), "");
    nlohmann::json const stats = alloc.stats_json();
    EXPECT_EQ(stats["devices"].size(), 2U);
    EXPECT_EQ(stats["usage_errors"]["wrong_device"], 1);
    EXPECT_EQ(stats["usage_errors"]["bad_device"], 1);
  }
}

}  // namespace
}  // namespace swapalloc::testing
