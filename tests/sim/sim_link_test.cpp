// Conformance: the simulated host<->device link (simulator only: a real GPU's link is
// what it is, so every test here skips on a GPU).
// Spec: tools/cudasim/README.md "Device accesses: copies and memsets"
// (SWAPALLOC_SIM_LINK_GBPS) and tools/cudasim/cudasim.h (cudasimSetLinkBandwidth).
// cuda.h docs checked: cuMemcpyHtoDAsync, cuMemcpyDtoHAsync, cuMemcpyDtoD (copy engines
// per direction: CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT), cuMemcpyBatchAsync.
#include <chrono>
#include <cstring>

#include <gtest/gtest.h>

#include "batch_copy.hpp"
#include "driver_fixture.hpp"
#include "sim_test_units.hpp"

namespace swapalloc::testing {
namespace {

class SimLink : public DriverTest {
 protected:
  void SetUp() override
  {
    DriverTest::SetUp();
    SIM_ONLY(sim(), "the link model is the simulator's");
  }
  void TearDown() override
  {
    if (sim().available()) { sim().set_link_bandwidth(0.0); }
    DriverTest::TearDown();
  }
  // A slow link and small copies, so that the link time (84 ms a copy) dwarfs the time
  // memcpy takes even in sanitizer builds on a loaded machine.
  static constexpr std::size_t kBytes = std::size_t{2} << 20;  // 2 MiB
  static constexpr double kGBps       = 0.025;                 // 83.9 ms per copy
  static constexpr double kNominalMs  = kBytes / (kGBps * 1e9) * 1e3;
  /// A range of at least `bytes`, in whole granules.
  [[nodiscard]] device_range range_for(std::size_t bytes) const
  {
    return make_range((bytes + gran() - 1) / gran());
  }
};

TEST_F(SimLink, CopiesTakeBytesOverBandwidth)
{
  pinned_buffer host(drv(), kBytes);
  std::memset(host.data(), 3, kBytes);
  auto range = range_for(kBytes);
  drv().memset_d8(range.ptr(), 0, kBytes);  // touch every page now, not inside the timing
  drv().synchronize_context();
  sim().set_link_bandwidth(kGBps);
  auto start = clock_type::now();
  drv().memcpy_htod(range.ptr(), host.data(), kBytes);
  double const htod = ms_since(start);
  EXPECT_GE(htod, 0.9 * kNominalMs) << "2 MiB host-to-device at 0.025 GB/s";
  start = clock_type::now();
  drv().memcpy_dtoh(host.data(), range.ptr(), kBytes);
  double const dtoh = ms_since(start);
  EXPECT_GE(dtoh, 0.9 * kNominalMs) << "2 MiB device-to-host at 0.025 GB/s";
}

TEST_F(SimLink, CopiesInOneDirectionShareTheLink)
{
  pinned_buffer host(drv(), kBytes);
  std::memset(host.data(), 4, kBytes);
  auto first  = range_for(kBytes);
  auto second = range_for(kBytes);
  auto third  = range_for(kBytes);
  pinned_buffer back(drv(), kBytes);
  std::memset(back.data(), 0, kBytes);  // touch every page now, not inside the timing
  for (auto const* range : {&first, &second, &third}) {
    drv().memset_d8(range->ptr(), 0, kBytes);
  }
  drv().synchronize_context();
  scoped_stream a(drv());
  scoped_stream b(drv());
  sim().set_link_bandwidth(kGBps);
  // Two host-to-device copies on two streams: serialized on the one link.
  auto start = clock_type::now();
  drv().memcpy_htod_async(first.ptr(), host.data(), kBytes, a);
  drv().memcpy_htod_async(second.ptr(), host.data(), kBytes, b);
  drv().stream_synchronize(a);
  drv().stream_synchronize(b);
  double const same_direction = ms_since(start);
  EXPECT_GE(same_direction, 2 * 0.9 * kNominalMs) << "two copies in one direction overlapped";
  // One copy each way: the two directions are separate links and overlap.
  start = clock_type::now();
  drv().memcpy_htod_async(third.ptr(), host.data(), kBytes, a);
  drv().memcpy_dtoh_async(back.data(), first.ptr(), kBytes, b);
  drv().stream_synchronize(a);
  drv().stream_synchronize(b);
  double const both_directions = ms_since(start);
  EXPECT_GE(both_directions, 0.9 * kNominalMs);
  EXPECT_LT(both_directions, 0.75 * same_direction)
    << "copies in opposite directions did not overlap";
}

TEST_F(SimLink, BatchedCopiesUseTheLinkOfTheirDirection)
{
  // A batch's copies go over the links as single copies do: two host-to-device copies
  // take consecutive slots of one link; a device-to-host copy beside a host-to-device one
  // overlaps it on the other link (the batch's copies are in no order among themselves).
  memcpy_batch_fn const batch = find_memcpy_batch(drv());
  ASSERT_NE(batch, nullptr) << "the simulator does not export cuMemcpyBatchAsync_v2";
  pinned_buffer host(drv(), 2 * kBytes);
  pinned_buffer back(drv(), kBytes);
  std::memset(host.data(), 6, 2 * kBytes);
  std::memset(back.data(), 0, kBytes);  // touch every page now, not inside the timing
  auto first  = range_for(kBytes);
  auto second = range_for(kBytes);
  auto third  = range_for(kBytes);
  for (auto const* range : {&first, &second, &third}) {
    drv().memset_d8(range->ptr(), 0, kBytes);
  }
  drv().synchronize_context();
  scoped_stream stream(drv());
  CUdeviceptr const in  = address_of(host.data());
  CUdeviceptr const out = address_of(back.data());
  sim().set_link_bandwidth(kGBps);
  auto start = clock_type::now();
  ASSERT_CU(
    CUDA_SUCCESS,
    memcpy_batch(batch, {{first.ptr(), in, kBytes}, {second.ptr(), in + kBytes, kBytes}}, stream));
  drv().stream_synchronize(stream);
  double const same_direction = ms_since(start);
  EXPECT_GE(same_direction, 2 * 0.9 * kNominalMs) << "two copies in one direction overlapped";
  start = clock_type::now();
  ASSERT_CU(CUDA_SUCCESS,
            memcpy_batch(batch, {{third.ptr(), in, kBytes}, {out, first.ptr(), kBytes}}, stream));
  drv().stream_synchronize(stream);
  double const both_directions = ms_since(start);
  EXPECT_GE(both_directions, 0.9 * kNominalMs);
  EXPECT_LT(both_directions, 0.75 * same_direction)
    << "a batch's copies in opposite directions did not overlap";
}

TEST_F(SimLink, DeviceToDeviceIsNotThrottled)
{
  std::size_t const bytes = 2u << 20;
  double const gbps       = 0.002;  // 2 MiB would take 1 s over the link
  auto source             = range_for(bytes);
  auto target             = range_for(bytes);
  drv().memset_d8(source.ptr(), 9, bytes);
  drv().memset_d8(target.ptr(), 0, bytes);  // touch every page now, not inside the timing
  drv().synchronize_context();
  sim().set_link_bandwidth(gbps);
  auto const start = clock_type::now();
  drv().memcpy_dtod(target.ptr(), source.ptr(), bytes);
  drv().synchronize_context();
  double const elapsed = ms_since(start);
  EXPECT_LT(elapsed, 0.5 * bytes / (gbps * 1e9) * 1e3)
    << "a device-to-device copy went over the link";
  EXPECT_EQ(read_words(drv(), target.ptr() + bytes - 4, 1)[0], 0x09090909u);
}

TEST_F(SimLink, LinkBytesCountEachDirectionAndNotDeviceToDevice)
{
  // cudasim.h cudasimLinkBytes: bytes over the links, per direction, as copies complete.
  ASSERT_NE(sim().link_bytes, nullptr);
  std::size_t const bytes = 3u << 20;
  pinned_buffer host(drv(), bytes);
  std::memset(host.data(), 4, bytes);
  auto source                  = range_for(bytes);
  auto target                  = range_for(bytes);
  unsigned long long const in  = sim().link_bytes(0);
  unsigned long long const out = sim().link_bytes(1);
  drv().memcpy_htod(source.ptr(), host.data(), bytes);
  drv().memcpy_dtod(target.ptr(), source.ptr(), bytes);
  drv().memcpy_dtoh(host.data(), target.ptr(), bytes / 3);
  drv().synchronize_context();
  EXPECT_EQ(sim().link_bytes(0) - in, bytes);
  EXPECT_EQ(sim().link_bytes(1) - out, bytes / 3) << "the device-to-device copy is not counted";
  EXPECT_EQ(sim().link_bytes(2), 0U) << "no third direction";
  EXPECT_EQ(sim().link_bytes(-1), 0U);
}

TEST_F(SimLink, ZeroMeansUnthrottled)
{
  std::size_t const bytes = 2u << 20;  // 1 s at 0.002 GB/s
  pinned_buffer host(drv(), bytes);
  std::memset(host.data(), 5, bytes);
  auto range = range_for(bytes);
  drv().memset_d8(range.ptr(), 0, bytes);  // touch every page now, not inside the timing
  drv().synchronize_context();
  sim().set_link_bandwidth(0.002);
  sim().set_link_bandwidth(0.0);
  auto const start = clock_type::now();
  drv().memcpy_htod(range.ptr(), host.data(), bytes);
  EXPECT_LT(ms_since(start), 0.5 * bytes / (0.002 * 1e9) * 1e3)
    << "bandwidth 0 still throttled the copy";
}

}  // namespace
}  // namespace swapalloc::testing
