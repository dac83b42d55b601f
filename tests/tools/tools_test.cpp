/**
 * @file tools_test.cpp
 * @brief The project's programs, checked from the outside as a user runs them: exit status
 *        and what they print.
 *
 * - No driver: every program exits with status 2 and the seam's message (naming
 *   SWAPALLOC_CUDA_DRIVER and what was tried), never a crash.
 * - The demo's round trip succeeds, bit-exact, against the driver of the environment (the
 *   simulator in strict mode under ctest; libcuda.so.1 under tools/gpu-check).
 * - The benchmarks' short runs complete and print their rows (bench_policy: and its goal
 *   ratios), under ctest on the strict simulator, so a benchmark that leaks fails.
 * - The simulator's leak report: a leaking program fails with status 3 in strict mode, and
 *   still gets a report without it.
 *
 * Paths of the programs come from CMake ($<TARGET_FILE:...>) as SWAPALLOC_*_PATH.
 */
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "child_process.hpp"
#include "sim_control.hpp"

namespace {

using swapalloc::testing::child_result;
using swapalloc::testing::run_child;

constexpr char const* demo_path      = SWAPALLOC_DEMO_PATH;
constexpr char const* leaker_path    = SWAPALLOC_LEAKER_PATH;
constexpr char const* bench_sim_path = SWAPALLOC_BENCH_SIM_PATH;  // "" without benchmarks
// bench/CMakeLists.txt defines it when the benchmarks are built.
#ifdef SWAPALLOC_BENCH_ALLOC_PATH
constexpr char const* bench_alloc_path = SWAPALLOC_BENCH_ALLOC_PATH;
#else
constexpr char const* bench_alloc_path  = "";
#endif
#ifdef SWAPALLOC_BENCH_POLICY_PATH
constexpr char const* bench_policy_path = SWAPALLOC_BENCH_POLICY_PATH;
#else
constexpr char const* bench_policy_path = "";
#endif

constexpr char const* missing_driver = "/nonexistent/libcuda.so.1";

bool contains(std::string const& text, std::string const& part)
{
  return text.find(part) != std::string::npos;
}

/// Runs `program` with SWAPALLOC_CUDA_DRIVER naming a library that does not exist and checks
/// the clear failure: status 2, a message naming the variable and the path tried.
void expect_clear_no_driver_error(std::string const& program,
                                  std::vector<std::string> const& arguments = {})
{
  child_result const result =
    run_child(program, arguments, {{"SWAPALLOC_CUDA_DRIVER", missing_driver}});
  EXPECT_EQ(result.exit_status, 2) << result.describe();
  std::string const said = result.out + result.err;
  EXPECT_TRUE(contains(said, "SWAPALLOC_CUDA_DRIVER")) << result.describe();
  EXPECT_TRUE(contains(said, missing_driver)) << result.describe();
}

TEST(ToolsNoDriver, DemoExitsWithClearError) { expect_clear_no_driver_error(demo_path); }

TEST(ToolsNoDriver, LeakerExitsWithClearError) { expect_clear_no_driver_error(leaker_path); }

TEST(ToolsNoDriver, BenchSimExitsWithClearError)
{
  if (*bench_sim_path == '\0') {
    GTEST_SKIP() << "benchmarks not built (SWAPALLOC_BUILD_BENCHMARKS=OFF)";
  }
  expect_clear_no_driver_error(bench_sim_path);
}

TEST(ToolsDemo, RoundTripIsBitExact)
{
  child_result const result = run_child(demo_path, {"--size=8M"});
  ASSERT_EQ(result.exit_status, 0) << result.describe();
  EXPECT_TRUE(contains(result.out, "bit-exact")) << result.describe();
  EXPECT_TRUE(contains(result.out, "round trip verified: 8 MiB")) << result.describe();
}

TEST(ToolsDemo, RoundsUpToWholePages)
{
  child_result const result = run_child(demo_path, {"--size=3M", "--page=2M"});
  ASSERT_EQ(result.exit_status, 0) << result.describe();
  EXPECT_TRUE(contains(result.out, "rounded up to whole pages")) << result.describe();
  EXPECT_TRUE(contains(result.out, "round trip verified: 4 MiB")) << result.describe();
}

TEST(ToolsDemo, RejectsBadOptionsNamingOptionAndValue)
{
  struct bad_case {
    std::string argument;
    std::string expected;  // part of the message
  };
  for (auto const& [argument, expected] : {
         bad_case{"--size=12Q", "--size='12Q': expected a positive byte count"},
         bad_case{"--size=0", "--size='0': expected a positive byte count"},
         bad_case{"--device=-1", "--device='-1': expected a device ordinal"},
         bad_case{"--frobnicate", "unknown option '--frobnicate'"},
         bad_case{"--page=3M", "expected a multiple of the allocation granularity"},
       }) {
    child_result const result = run_child(demo_path, {argument});
    EXPECT_EQ(result.exit_status, 64) << argument << ": " << result.describe();
    EXPECT_TRUE(contains(result.err, expected)) << argument << ": " << result.describe();
  }
}

TEST(ToolsBench, ShortRunCompletes)
{
  if (*bench_sim_path == '\0') {
    GTEST_SKIP() << "benchmarks not built (SWAPALLOC_BUILD_BENCHMARKS=OFF)";
  }
  child_result const result = run_child(
    bench_sim_path, {"--benchmark_filter=/(65536|2097152)/", "--benchmark_min_time=0.001"});
  ASSERT_EQ(result.exit_status, 0) << result.describe();
  for (char const* name : {"BM_MapUnmap/2097152", "BM_CopyHtoD/65536", "BM_CopyDtoHAsync/65536",
                           "BM_Memcpy/65536", "vs_memcpy"}) {
    EXPECT_TRUE(contains(result.out, name)) << name << ": " << result.describe();
  }
}

TEST(ToolsBench, AllocShortRunCompletes)
{
  if (*bench_alloc_path == '\0') {
    GTEST_SKIP() << "benchmarks not built (SWAPALLOC_BUILD_BENCHMARKS=OFF)";
  }
  child_result const result = run_child(
    bench_alloc_path,
    {"--benchmark_filter=^BM_HotPath/4096$|^BM_Replay/cnn_infer$", "--benchmark_min_time=0.01"});
  ASSERT_EQ(result.exit_status, 0) << result.describe();
  for (char const* name : {"BM_HotPath/4096", "BM_Replay/cnn_infer", "reserved_over_live"}) {
    EXPECT_TRUE(contains(result.out, name)) << name << ": " << result.describe();
  }
}

TEST(ToolsNoDriver, BenchPolicyExitsWithClearError)
{
  if (*bench_policy_path == '\0') {
    GTEST_SKIP() << "benchmarks not built (SWAPALLOC_BUILD_BENCHMARKS=OFF)";
  }
  expect_clear_no_driver_error(bench_policy_path);
}

TEST(ToolsBench, PolicyShortRunCompletes)
{
  if (*bench_policy_path == '\0') {
    GTEST_SKIP() << "benchmarks not built (SWAPALLOC_BUILD_BENCHMARKS=OFF)";
  }
  // Every benchmark, briefly (BM_HotPathDuringEvict keeps its 2 s minimum), with a 4 MiB
  // background pool and a 4 MiB BM_RepeatRequest model: the ratios are printed.
  child_result const result =
    run_child(bench_policy_path, {"--benchmark_min_time=0.01"},
              {{"SWAPALLOC_BENCH_POLICY_MIB", "4"}, {"SWAPALLOC_BENCH_REPEAT_MIB", "4"}});
  ASSERT_EQ(result.exit_status, 0) << result.describe();
  for (char const* name :
       {"BM_HotPath/4096", "BM_HotPathDuringEvict/4096", "cycles", "BM_AllocateUnderPressure",
        "BM_ExplicitEvictAllocate", "evicted_MiB=8", "BM_ActivateResident",
        "ratio BM_HotPathDuringEvict / BM_HotPath = ",
        "ratio BM_AllocateUnderPressure / BM_ExplicitEvictAllocate = ", "BM_ActivateResident = ",
        "BM_RepeatRequest", "disk_read_GBps=", "BM_RepeatRequest restore_speedup = "}) {
    EXPECT_TRUE(contains(result.out, name)) << name << ": " << result.describe();
  }
}

/// The leak tests need the simulator's exit report: skipped on a real driver.
class ToolsSimLeakCheck : public ::testing::Test {
 protected:
  void SetUp() override
  {
    if (!swapalloc::testing::simulator_library_present()) {
      GTEST_SKIP() << "simulator only: the driver in SWAPALLOC_CUDA_DRIVER is not cudasim";
    }
  }

  /// Checks that the simulator's exit report names the leaked reservation: its kind and its
  /// size, as the leaker printed it ("reserved 0x... <bytes>"). (No std::regex: GCC 12 warns
  /// inside <regex> under ASan, and warnings are errors.)
  static void expect_reported(child_result const& result)
  {
    std::istringstream line(result.out);
    std::string word, address;
    std::size_t bytes = 0;
    ASSERT_TRUE(line >> word >> address >> bytes && word == "reserved") << result.describe();
    EXPECT_TRUE(contains(result.err, "1 address reservation")) << result.describe();
    EXPECT_TRUE(contains(result.err, std::to_string(bytes) + " bytes")) << result.describe();
  }
};

TEST_F(ToolsSimLeakCheck, StrictModeFailsTheLeakingProcess)
{
  child_result const result = run_child(leaker_path, {}, {{"SWAPALLOC_SIM_STRICT", "1"}});
  EXPECT_EQ(result.exit_status, 3) << result.describe();
  expect_reported(result);
}

TEST_F(ToolsSimLeakCheck, ReportsTheLeakWithoutStrictMode)
{
  child_result const result = run_child(leaker_path, {}, {{"SWAPALLOC_SIM_STRICT", "0"}});
  EXPECT_EQ(result.exit_status, 0) << result.describe();
  expect_reported(result);
}

}  // namespace
