/**
 * @file tools_test.cpp
 * @brief The project's programs, checked from the outside as a user runs them: exit status
 *        and what they print.
 *
 * - No driver: every program exits with status 2 and the seam's message (naming
 *   SWAPALLOC_CUDA_DRIVER and what was tried), never a crash.
 * - The demo (seed 001's pipeline in three modes) against the driver of the environment
 *   (the simulator in strict mode under ctest; libcuda.so.1 under tools/gpu-check), small
 *   (1/512 of the seed's sizes, two requests): keep runs out of memory at step 3 of request 1
 *   and the report's pool table is printed, the outputs are identical across modes, the
 *   timeline JSON has the fields the plot reads, and plot_timeline.py turns it into a PNG
 *   (skipped when python3 or matplotlib is missing). A bad option: status 64 and a message
 *   naming it and what is accepted.
 * - The benchmarks' short runs complete and print their rows (bench_policy: and its goal
 *   ratios), under ctest on the strict simulator, so a benchmark that leaks fails.
 * - The simulator's leak report: a leaking program fails with status 3 in strict mode, and
 *   still gets a report without it.
 *
 * Paths of the programs come from CMake ($<TARGET_FILE:...>) as SWAPALLOC_*_PATH.
 */
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "child_process.hpp"
#include "sim_control.hpp"

namespace {

using swapalloc::testing::child_result;
using swapalloc::testing::run_child;

constexpr char const* demo_path      = SWAPALLOC_DEMO_PATH;
constexpr char const* leaker_path    = SWAPALLOC_LEAKER_PATH;
constexpr char const* plot_script    = SWAPALLOC_PLOT_SCRIPT;
constexpr char const* python_path    = SWAPALLOC_PYTHON;          // "" when CMake found no python3
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

/// A fresh directory for one test's files, removed with them at the end.
class scratch_dir {
 public:
  scratch_dir()
  {
    std::string pattern =
      (std::filesystem::temp_directory_path() / "swapalloc_tools_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) { throw std::runtime_error("mkdtemp failed"); }
    path_ = pattern;
  }
  scratch_dir(scratch_dir const&)            = delete;
  scratch_dir& operator=(scratch_dir const&) = delete;
  ~scratch_dir()
  {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  [[nodiscard]] std::filesystem::path const& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

/// Runs the demo small: 1/512 of seed 001's sizes, `requests` requests, files in `dir`.
child_result run_small_demo(scratch_dir const& dir, std::string const& requests,
                            std::vector<std::string> extra = {})
{
  std::vector<std::string> arguments{"--scale=512", "--requests=" + requests,
                                     "--timeline=" + (dir.path() / "timeline.json").string(),
                                     "--model-dir=" + (dir.path() / "models").string()};
  arguments.insert(arguments.end(), extra.begin(), extra.end());
  return run_child(demo_path, arguments);
}

TEST(ToolsDemo, AllThreeModesRunKeepRunsOutOfMemoryAndTheOutputsAreIdentical)
{
  scratch_dir const dir;
  child_result const result = run_small_demo(dir, "2");
  ASSERT_EQ(result.exit_status, 0) << result.describe();
  for (char const* part :
       {"seed 001", "== keep:", "== auto_unload:", "== swapalloc:",
        "keep: out of memory at request 1, step 3 (flux-inpaint).",
        "swapalloc's out-of-memory report:", "pool 'flux-inpaint'",
        "to make room: evict pools not in use now", "== summary", "OOM at request 1, step 3",
        "2 of 2 requests", "restored from the host store", "weights bit-identical", "yes, after",
        "outputs identical across modes: yes", "timeline: "}) {
    EXPECT_TRUE(contains(result.out, part)) << part << ": " << result.describe();
  }
  EXPECT_TRUE(contains(result.out, "weights  real: ") ||
              contains(result.out, "weights  generated N(0, 0.02)"))
    << "says which weights it used: " << result.describe();
  EXPECT_TRUE(contains(result.out, "swapalloc   2/2 1     sdxl")) << "a line per step";
}

TEST(ToolsDemo, TimelineHasEveryModesSamplesAndMarks)
{
  scratch_dir const dir;
  child_result const result = run_small_demo(dir, "2");
  ASSERT_EQ(result.exit_status, 0) << result.describe();
  std::ifstream in(dir.path() / "timeline.json");
  nlohmann::json const timeline = nlohmann::json::parse(in);  // throws if malformed
  EXPECT_EQ(timeline.at("format"), "swapalloc-demo-timeline");
  EXPECT_EQ(timeline.at("version"), 1);
  EXPECT_EQ(timeline.at("scale"), 512);
  EXPECT_EQ(timeline.at("requests"), 2);
  nlohmann::json const& modes = timeline.at("modes");
  ASSERT_EQ(modes.size(), 3U);
  std::array<char const*, 3> const names{"keep", "auto_unload", "swapalloc"};
  for (std::size_t i = 0; i < names.size(); ++i) {
    nlohmann::json const& mode = modes.at(i);
    EXPECT_EQ(mode.at("mode"), names[i]);
    EXPECT_EQ(mode.at("pools"), (nlohmann::json{"sdxl", "birefnet", "flux-inpaint"}));
    EXPECT_DOUBLE_EQ(mode.at("high_watermark").get<double>(), 0.85);
    EXPECT_DOUBLE_EQ(mode.at("low_watermark").get<double>(), 0.75);
    ASSERT_FALSE(mode.at("samples").empty()) << names[i];
    nlohmann::json const& sample = mode.at("samples").at(0);
    for (char const* field : {"time_s", "step", "own_bytes", "device_used_bytes", "limit_bytes",
                              "high_watermark", "low_watermark", "level", "pools"}) {
      EXPECT_TRUE(sample.contains(field)) << names[i] << ": " << field;
    }
    EXPECT_TRUE(sample.at("pools").contains("sdxl")) << names[i];
  }
  EXPECT_FALSE(modes.at(0).at("completed"));
  EXPECT_TRUE(modes.at(2).at("completed"));
  std::vector<std::string> kinds;
  for (nlohmann::json const& mark : modes.at(2).at("marks")) {
    kinds.push_back(mark.at("kind").get<std::string>());
  }
  for (char const* kind : {"evict", "restore", "load"}) {
    EXPECT_NE(std::find(kinds.begin(), kinds.end(), kind), kinds.end()) << kind;
  }
  EXPECT_EQ(modes.at(0).at("marks").back().at("kind"), "out_of_memory");
}

TEST(ToolsDemo, PlotScriptRendersTheTimelineAsAPng)
{
  if (*python_path == '\0') { GTEST_SKIP() << "CMake found no python3"; }
  child_result const probe = run_child(python_path, {"-c", "import matplotlib"});
  if (probe.exit_status != 0) {
    GTEST_SKIP() << "matplotlib is not installed (tools/install-deps installs it)";
  }
  scratch_dir const dir;
  child_result const demo = run_small_demo(dir, "1");
  ASSERT_EQ(demo.exit_status, 0) << demo.describe();
  std::filesystem::path const png = dir.path() / "plot.png";
  child_result const plot =
    run_child(python_path, {plot_script, (dir.path() / "timeline.json").string(), png.string()});
  ASSERT_EQ(plot.exit_status, 0) << plot.describe();
  EXPECT_TRUE(contains(plot.out, png.string())) << "prints the PNG's path: " << plot.describe();
  std::ifstream in(png, std::ios::binary);
  std::array<char, 8> signature{};
  ASSERT_TRUE(in.read(signature.data(), signature.size())) << png;
  EXPECT_EQ(std::string(signature.data(), signature.size()), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_GT(std::filesystem::file_size(png), 10'000U) << "a plot, not an empty image";
}

TEST(ToolsDemo, PlotScriptRefusesWhatIsNotATimeline)
{
  if (*python_path == '\0') { GTEST_SKIP() << "CMake found no python3"; }
  scratch_dir const dir;
  std::ofstream(dir.path() / "other.json") << R"({"format": "something else"})";
  child_result const result =
    run_child(python_path, {plot_script, (dir.path() / "other.json").string()});
  EXPECT_EQ(result.exit_status, 1) << result.describe();
  EXPECT_TRUE(contains(result.err, "not a swapalloc demo timeline")) << result.describe();
  EXPECT_EQ(run_child(python_path, {plot_script}).exit_status, 64);
}

TEST(ToolsDemo, RejectsBadOptionsWithStatus64NamingOptionAndValue)
{
  struct bad_case {
    std::string argument;
    std::string expected;  // part of the message
  };
  for (auto const& [argument, expected] : {
         bad_case{"--mode=fast", "--mode 'fast': expected keep, auto_unload, swapalloc or all"},
         bad_case{"--requests=0", "--requests '0': expected a whole number from 1 to 1000"},
         bad_case{"--scale=huge", "--scale 'huge': expected a whole number from 1"},
         bad_case{"--link-gbps=-3", "--link-gbps '-3': expected a number >= 0"},
         bad_case{"--codec=gzip", "--codec 'gzip': expected auto, raw"},
         bad_case{"--frobnicate", "unknown option '--frobnicate'"},
         bad_case{"--requests", "--requests needs a value"},
         bad_case{"--sim", "--sim is tools/run-demo's option"},
         bad_case{"--weights=/nonexistent/weights",
                  "--weights '/nonexistent/weights': expected a "
                  "directory of *.safetensors or *.fp32.bin"},
       }) {
    child_result const result = run_child(demo_path, {argument});
    EXPECT_EQ(result.exit_status, 64) << argument << ": " << result.describe();
    EXPECT_TRUE(contains(result.err, expected)) << argument << ": " << result.describe();
  }
}

TEST(ToolsDemo, HelpListsTheOptions)
{
  child_result const result = run_child(demo_path, {"--help"});
  ASSERT_EQ(result.exit_status, 0) << result.describe();
  for (char const* option : {"--mode", "--requests", "--scale", "--weights", "--link-gbps",
                             "--codec", "--timeline", "--model-dir"}) {
    EXPECT_TRUE(contains(result.out, option)) << option << ": " << result.describe();
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
