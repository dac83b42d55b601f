// Conformance: cost profiles (SWAPALLOC_SIM_PROFILE, SWAPALLOC_SIM_TIME_SCALE), simulator
// only. Each test runs in a child process that sets the variables before its own cuInit.
// Spec: tools/cudasim/cudasim.h (the variables, cudasimGetProfile),
// tools/cudasim/src/profile.hpp (the text form, charging) and tools/cudasim/README.md
// "Cost profiles" (the h100 values and their sources).
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "batch_copy.hpp"
#include "configured_child.hpp"
#include "driver_fixture.hpp"
#include "scoped_objects.hpp"
#include "sim_control.hpp"
#include "sim_test_units.hpp"

namespace swapalloc::testing {
namespace {

class SimProfile : public ::testing::Test {
 protected:
  void SetUp() override
  {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    if (!simulator_library_present()) {
      GTEST_SKIP() << "simulator only: a cost profile is how the simulator predicts a GPU";
    }
  }

  /// Runs `body(drv, check)` in a death-test child whose simulator has the cost profile
  /// `profile` (a built-in name or a file's path) at time scale `scale`; the test fails
  /// unless the child passes every check.
  template <typename Body>
  static void expect_profiled(char const* profile, char const* scale, Body&& body)
  {
    auto const child = [&] {
      configured_child({{"SWAPALLOC_SIM_PROFILE", profile}, {"SWAPALLOC_SIM_TIME_SCALE", scale}},
                       std::forward<Body>(body));
    };
    EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
  }
};

TEST_F(SimProfile, BuiltInProfileAndScaleAreReported)
{
  auto const child = [](char const* scale, double expected) {
    configured_child({{"SWAPALLOC_SIM_PROFILE", "h100"}, {"SWAPALLOC_SIM_TIME_SCALE", scale}},
                     [&](driver const& drv, child_checks& check) {
                       sim_control const sim(drv);
                       cudasim_profile_info info{};
                       check(sim.get_profile != nullptr && sim.get_profile(&info) == 1,
                             "cudasimGetProfile reports a profile");
                       check(info.name != nullptr && std::strcmp(info.name, "h100") == 0,
                             "its name is h100");
                       check(info.time_scale == expected, "its scale");
                     });
  };
  EXPECT_EXIT(child("10", 10.0), ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(child("2.5", 2.5), ::testing::ExitedWithCode(0), "");
  auto const without = [] {
    configured_child({}, [](driver const& drv, child_checks& check) {
      sim_control const sim(drv);
      cudasim_profile_info info{nullptr, 7.0};
      check(sim.get_profile(&info) == 0, "no profile without SWAPALLOC_SIM_PROFILE");
      check(info.name == nullptr && info.time_scale == 0.0, "an empty report");
    });
  };
  EXPECT_EXIT(without(), ::testing::ExitedWithCode(0), "");
}

TEST_F(SimProfile, MalformedProfileFailsInitNamingTheLine)
{
  // cudasim.h: a malformed value makes cuInit fail with CUDA_ERROR_INVALID_VALUE and a
  // message naming the variable; for a profile, the line and the word too.
  auto const child = [](std::initializer_list<env_setting> settings) {
    configure(settings);
    try {
      driver drv(driver_library_path());
      std::fprintf(stderr, "the driver loaded\n");
      child_exit(1);
    } catch (driver_unavailable const& error) {
      child_exit(std::strstr(error.what(), "CUDA_ERROR_INVALID_VALUE") != nullptr ? 0 : 1);
    }
  };
  profile_file const unknown("# fine\ncuMemCreate fixed_us=1\ncuMemFly fixed_us=1\n");
  EXPECT_EXIT(child({{"SWAPALLOC_SIM_PROFILE", unknown.path()}}), ::testing::ExitedWithCode(0),
              "line 3: 'cuMemFly' is neither 'link' nor an entry point");
  profile_file const negative("cuMemMap fixed_us=-2\n");
  EXPECT_EXIT(child({{"SWAPALLOC_SIM_PROFILE", negative.path()}}), ::testing::ExitedWithCode(0),
              "line 1: 'fixed_us=-2' is not valid: expected fixed_us=");
  profile_file const duplex("link h2d_gbps=10 duplex_d2h=1.5\n");
  EXPECT_EXIT(child({{"SWAPALLOC_SIM_PROFILE", duplex.path()}}), ::testing::ExitedWithCode(0),
              "'duplex_d2h=1.5' is not valid");
  EXPECT_EXIT(child({{"SWAPALLOC_SIM_PROFILE", "/nonexistent/profile"}}),
              ::testing::ExitedWithCode(0), "expected a built-in profile \\(h100\\)");
  EXPECT_EXIT(child({{"SWAPALLOC_SIM_PROFILE", "h100"}, {"SWAPALLOC_SIM_TIME_SCALE", "0"}}),
              ::testing::ExitedWithCode(0), "SWAPALLOC_SIM_TIME_SCALE='0'");
  EXPECT_EXIT(child({{"SWAPALLOC_SIM_PROFILE", "h100"}, {"SWAPALLOC_SIM_LINK_GBPS", "5"}}),
              ::testing::ExitedWithCode(0), "both set");
}

TEST_F(SimProfile, CostsAreSleptScaledPerCallAndPerMiB)
{
  // 4 MiB at 2500 us/MiB, scale 2: at least 20 ms; 8 calls of 1500 us, scale 2: 24 ms.
  // Less at most the 0.2 ms of an earlier oversleep the simulator credits (profile.cpp
  // sleep_owed, owed_threshold): 24 ms measured as 23.98 failed 2 of 5 runs.
  profile_file const profile("cuMemHostAlloc per_mib_us=2500\ncuEventQuery fixed_us=1500\n");
  expect_profiled(profile.path(), "2", [](driver const& drv, child_checks& check) {
    auto start = clock_type::now();
    pinned_buffer const host(drv, 4 * kMiB);
    double const pinning = ms_since(start);
    check(pinning >= 19.8, "cuMemHostAlloc of 4 MiB took 20 ms, less the credit");
    CUevent const event = drv.event_create();
    start               = clock_type::now();
    for (int i = 0; i < 8; ++i) {
      (void)drv.table().cuEventQuery(event);
    }
    double const queries = ms_since(start);
    check(queries >= 23.8, "8 cuEventQuery took 24 ms, less the credit");
    start = clock_type::now();
    (void)drv.table().cuEventRecord(event, nullptr);
    check(ms_since(start) < 15.0, "an entry point not named costs nothing");
    drv.event_destroy(event);
    if (pinning < 19.8 || queries < 23.8) {
      std::fprintf(stderr, "pinning %.1f ms, queries %.1f ms\n", pinning, queries);
    }
  });
}

TEST_F(SimProfile, HostRegistrationIsChargedPerMiBByTheH100Profile)
{
  // The built-in h100 profile: cuMemHostRegister 110 us/MiB, cuMemHostUnregister 95 us/MiB
  // (README.md, "The h100 profile"). 8 MiB at scale 10: 8.8 ms and 7.6 ms, less the credit.
  expect_profiled("h100", "10", [](driver const& drv, child_checks& check) {
    std::vector<char> memory(8 * kMiB);
    auto start                 = clock_type::now();
    CUresult const pinned      = drv.table().cuMemHostRegister(memory.data(), memory.size(), 0);
    double const register_ms   = ms_since(start);
    start                      = clock_type::now();
    CUresult const pageable    = drv.table().cuMemHostUnregister(memory.data());
    double const unregister_ms = ms_since(start);
    check.result(pinned, CUDA_SUCCESS, "cuMemHostRegister");
    check.result(pageable, CUDA_SUCCESS, "cuMemHostUnregister");
    check(register_ms >= 8.6, "cuMemHostRegister of 8 MiB: 8 x 110 us x 10");
    check(unregister_ms >= 7.4, "cuMemHostUnregister of 8 MiB: 8 x 95 us x 10");
    std::fprintf(stderr, "register %.1f ms, unregister %.1f ms\n", register_ms, unregister_ms);
  });
}

TEST_F(SimProfile, BatchCostsFixedPlusPerCopy)
{
  // per_copy_us: a batch of 4 copies at scale 1 costs 1 ms + 4 x 20 ms = 81 ms, less at most
  // the 0.2 ms credit; a batch refused by its arguments costs the fixed 1 ms only.
  profile_file const profile("cuMemcpyBatchAsync fixed_us=1000 per_copy_us=20000\n");
  expect_profiled(profile.path(), "1", [](driver const& drv, child_checks& check) {
    memcpy_batch_fn const batch = find_memcpy_batch(drv);
    check(batch != nullptr, "the simulator exports cuMemcpyBatchAsync_v2");
    if (batch == nullptr) { return; }
    pinned_buffer host(drv, std::size_t{4} * 4096);
    device_range const range(drv, drv.device(0), 2 * kMiB);
    CUstream const stream = drv.stream_create();
    CUdeviceptr const in  = address_of(host.data());
    std::vector<batch_entry> copies;
    for (std::size_t i = 0; i < 4; ++i) {
      copies.push_back({range.ptr() + i * 4096, in + i * 4096, 4096});
    }
    auto start             = clock_type::now();
    CUresult const result  = memcpy_batch(batch, copies, stream);
    double const charged   = ms_since(start);
    start                  = clock_type::now();
    CUresult const refused = memcpy_batch(batch, copies, nullptr);  // the legacy stream
    double const fixed     = ms_since(start);
    drv.stream_synchronize(stream);
    drv.stream_destroy(stream);
    check.result(result, CUDA_SUCCESS, "the batch");
    check.result(refused, CUDA_ERROR_INVALID_VALUE, "the batch on the legacy stream");
    check(charged >= 80.8, "4 copies: 1 ms + 4 x 20 ms, less the credit");
    check(fixed >= 0.8 && fixed < 40.0, "a refused batch: the fixed 1 ms only");
    std::fprintf(stderr, "batch %.1f ms, refused %.1f ms\n", charged, fixed);
  });
}

TEST_F(SimProfile, PerCopyCostIsForBatchesOnlyAndANumber)
{
  auto const child = [](char const* path) {
    configure({{"SWAPALLOC_SIM_PROFILE", path}});
    try {
      driver drv(driver_library_path());
      std::fprintf(stderr, "the driver loaded\n");
      child_exit(1);
    } catch (driver_unavailable const& error) {
      child_exit(std::strstr(error.what(), "CUDA_ERROR_INVALID_VALUE") != nullptr ? 0 : 1);
    }
  };
  profile_file const elsewhere("cuMemcpyHtoDAsync fixed_us=2 per_copy_us=1\n");
  EXPECT_EXIT(child(elsewhere.path()), ::testing::ExitedWithCode(0),
              "line 1: 'per_copy_us=1' is not valid: expected .*cuMemcpyBatchAsync only");
  profile_file const negative("cuMemcpyBatchAsync per_copy_us=-0.5\n");
  EXPECT_EXIT(child(negative.path()), ::testing::ExitedWithCode(0),
              "line 1: 'per_copy_us=-0.5' is not valid");
  profile_file const words("# batches\ncuMemcpyBatchAsync_v2 per_copy_us=lots\n");
  EXPECT_EXIT(child(words.path()), ::testing::ExitedWithCode(0),
              "line 2: 'per_copy_us=lots' is not valid");
  profile_file const fine("cuMemcpyBatchAsync_v2 fixed_us=2.5 per_copy_us=0.5\n");
  auto const accepted = [&] {
    configured_child({{"SWAPALLOC_SIM_PROFILE", fine.path()}}, [](driver const&, child_checks&) {});
  };
  EXPECT_EXIT(accepted(), ::testing::ExitedWithCode(0), "");
}

TEST_F(SimProfile, DriverLockHoldersBlockOtherChargedCalls)
{
  // Thread A pins 8 MiB at 10 ms/MiB (80 ms) holding the driver lock; thread B's
  // cuEventQuery (1 us) starts 20 ms in and must wait for the lock: >= 50 ms. An
  // entry point with no cost takes no lock and is not held up.
  profile_file const profile(
    "cuMemHostAlloc per_mib_us=10000 driver_lock\ncuEventQuery fixed_us=1\n");
  expect_profiled(profile.path(), "1", [](driver const& drv, child_checks& check) {
    CUevent const event     = drv.event_create();
    CUcontext const context = drv.current_context();
    double blocked          = 0;
    double free_call        = 0;
    std::thread other([&] {
      drv.set_current_context(context);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      auto start = clock_type::now();
      (void)drv.table().cuEventRecord(event, nullptr);
      free_call = ms_since(start);
      start     = clock_type::now();
      (void)drv.table().cuEventQuery(event);
      blocked = ms_since(start);
    });
    {
      pinned_buffer const host(drv, 8 * kMiB);
    }
    other.join();
    drv.event_destroy(event);
    check(blocked >= 50.0, "a charged call waited for the lock holder");
    check(free_call < 30.0, "a call without cost did not wait");
    std::fprintf(stderr, "blocked %.1f ms, free call %.1f ms\n", blocked, free_call);
  });
}

TEST_F(SimProfile, SyncFlagWaitsForQueuedCopies)
{
  // The link runs at 0.05 GB/s (2 MiB: 42 ms). cuStreamQuery marked `sync` waits for the
  // copy first, so it answers CUDA_SUCCESS where it would answer CUDA_ERROR_NOT_READY.
  profile_file const profile("cuStreamQuery sync\nlink h2d_gbps=0.05 d2h_gbps=0.05\n");
  expect_profiled(profile.path(), "1", [](driver const& drv, child_checks& check) {
    pinned_buffer host(drv, 2 * kMiB);
    device_range const range(drv, drv.device(0), 2 * kMiB);
    CUstream const stream = drv.stream_create();
    drv.memcpy_htod_async(range.ptr(), host.data(), 2 * kMiB, stream);
    check.result(drv.table().cuStreamQuery(stream), CUDA_SUCCESS, "cuStreamQuery (sync)");
    drv.stream_destroy(stream);
  });
}

TEST_F(SimProfile, LinkLineSetsBandwidthPerDirectionGapAndDuplex)
{
  // h2d 0.05 GB/s: 2 MiB = 41.9 ms; d2h 0.1 GB/s: 21 ms; plus a 20 ms gap per copy. With
  // duplex_d2h = 0.5, a device-to-host copy that starts while a host-to-device one runs
  // gets 0.05 GB/s: 41.9 ms + the gap.
  profile_file const profile("link h2d_gbps=0.05 d2h_gbps=0.1 gap_us=20000 duplex_d2h=0.5\n");
  expect_profiled(profile.path(), "1", [](driver const& drv, child_checks& check) {
    pinned_buffer host(drv, 2 * kMiB);
    pinned_buffer back(drv, 2 * kMiB);
    device_range const range(drv, drv.device(0), 2 * kMiB);
    device_range const other(drv, drv.device(0), 2 * kMiB);
    auto start = clock_type::now();
    drv.memcpy_htod(range.ptr(), host.data(), 2 * kMiB);
    double const htod = ms_since(start);
    start             = clock_type::now();
    drv.memcpy_dtoh(back.data(), range.ptr(), 2 * kMiB);
    double const dtoh = ms_since(start);
    check(htod >= 0.95 * 61.9 && htod < 61.9 + 40, "host to device: 41.9 + 20 ms");
    check(dtoh >= 0.95 * 41.0 && dtoh < 41.0 + 30, "device to host: 21 + 20 ms");
    CUstream const in  = drv.stream_create();
    CUstream const out = drv.stream_create();
    drv.memcpy_htod_async(other.ptr(), host.data(), 2 * kMiB, in);
    // Let the host-to-device copy take its slot (its stream's thread starts it), then
    // queue the other direction well inside its 62 ms.
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    start = clock_type::now();
    drv.memcpy_dtoh_async(back.data(), range.ptr(), 2 * kMiB, out);
    drv.stream_synchronize(out);
    double const shared = ms_since(start);
    drv.stream_synchronize(in);
    check(shared >= 0.95 * 61.9, "device to host beside host to device: half speed");
    std::fprintf(stderr, "htod %.1f, dtoh %.1f, shared dtoh %.1f ms\n", htod, dtoh, shared);
    drv.stream_destroy(in);
    drv.stream_destroy(out);
  });
}

}  // namespace
}  // namespace swapalloc::testing
