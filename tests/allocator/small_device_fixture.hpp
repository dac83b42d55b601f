/**
 * @file small_device_fixture.hpp
 * @brief The fixture of the policy's test programs (policy, prefetch, events, monitor): the
 *        allocator on a 64 MiB simulated device, with the default watermarks (0.85, 0.75)
 *        and no SWAPALLOC_* variable read, and the helpers those tests share.
 *
 * The simulator reads its device size once, at cuInit: each program that includes this
 * header sets SWAPALLOC_SIM_MEMORY=64M during static initialization, before any test
 * initializes the driver (an explicit setting in the environment wins).
 *
 * On any other device (a real GPU under tools/gpu-check, or the simulator with another
 * SWAPALLOC_SIM_MEMORY) the 64 MiB device is emulated with a device limit of 64 MiB
 * (SWAPALLOC_DEVICE_LIMIT's option): the policy then keeps this process's own bytes under
 * the watermarks, and `used_bytes()` counts those (another process's use of a large GPU
 * does not move the tests). Tests of device-wide pressure are simulator-only.
 */
#pragma once

#include "swap_fixture.hpp"

#include <cstdlib>
#include <string>
#include <vector>

namespace swapalloc::testing {

/// 0 once SWAPALLOC_SIM_MEMORY is set (setenv's result), before main.
inline int const small_device_set = ::setenv("SWAPALLOC_SIM_MEMORY", "64M", 0);

/// The device's size, and its allocation granularity (the simulator's 2 MiB).
inline constexpr std::size_t small_device_bytes = 64 * MiB;
inline constexpr std::size_t small_device_page  = 2 * MiB;

class SmallDeviceTest : public SwapTest {
 public:
  using SwapTest::alloc;

 protected:
  [[nodiscard]] allocator_options options() const override
  {
    allocator_options o = SwapTest::options();
    o.read_environment  = false;  // the defaults: 0.85 and 0.75 of the device
    if (emulated()) { o.device_limit = device_limit{small_device_bytes, 1.0}; }
    return o;
  }

  void SetUp() override
  {
    ASSERT_EQ(small_device_set, 0);
    SwapTest::SetUp();
  }

  /// Whether the 64 MiB device is emulated by a limit on a larger device (file comment).
  [[nodiscard]] bool emulated() const { return drv().mem_get_info().total != small_device_bytes; }

  /// The use the watermarks are checked against: device-wide (cuMemGetInfo) on the 64 MiB
  /// simulated device, this allocator's mapped bytes where the device is emulated.
  [[nodiscard]] std::size_t used_bytes() const
  {
    if (emulated()) {
      pool_stats const own = alloc_->device_stats(0);
      return own.reserved_bytes + own.restoring_bytes + own.stray_bytes;
    }
    auto const info = drv().mem_get_info();
    return info.total - info.free;
  }

  /// A block of `bytes` in `pool`, filled through a host copy, inside one activation on
  /// the default stream (so that the pools' order of last use is the order of the calls).
  filled_block use(pool_id pool, std::size_t bytes, std::uint64_t seed)
  {
    activation const active(alloc(), pool, 0, nullptr);
    return fill_new(pool, bytes, seed);
  }

  /// Activates `pool` (restoring what of it is evicted) and deactivates it.
  void touch(pool_id pool) { activation const active(alloc(), pool, 0, nullptr); }

  /// Frees `blocks` on device 0 and the default stream.
  void free_blocks(std::vector<filled_block> const& blocks)
  {
    for (filled_block const& block : blocks) {
      alloc().deallocate(block.ptr, block.bytes, 0, nullptr);
    }
  }
};

}  // namespace swapalloc::testing

/// Skips the current test unless it runs on the 64 MiB simulated device itself: a test of
/// device-wide pressure (other processes' use, through the simulator's control).
#define SMALL_SIMULATED_DEVICE_ONLY(reason)                                                \
  do {                                                                                     \
    SIM_ONLY(sim(), reason);                                                               \
    if (emulated()) { GTEST_SKIP() << "needs the 64 MiB simulated device: " << (reason); } \
  } while (0)
