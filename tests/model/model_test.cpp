// The model-based randomized test of the swap tier (issue 9): random ops (model_ops.hpp)
// against one allocator on a 64 MiB simulated device, every live block shadowed on the
// host (model_runner.hpp), check() after every op, single and double driver faults.
//
//   ModelTest.SingleThreaded  one thread, four pools; exactly the same ops for a seed.
//   ModelTest.MultiThreaded   SWAPALLOC_MODEL_THREADS threads (default 3), two pools each,
//                             sharing one allocator; empty_cache() reaches every pool.
//
// Environment (tests/model/CMakeLists.txt registers disjoint seed ranges):
//   SWAPALLOC_MODEL_SEEDS=first:count  the seeds to run (default 0:2)
//   SWAPALLOC_MODEL_SEED=s             replay seed s only (what a failure prints)
//   SWAPALLOC_MODEL_OPS=n              ops per seed (default 2000, 500 in sanitizer builds)
//   SWAPALLOC_MODEL_THREADS=t          threads of MultiThreaded
#include "allocator_fixture.hpp"
#include "model_session.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace swapalloc::testing::model {
namespace {

// Before any test initializes the driver: a small device, so that the cache fills it
// and out-of-memory recovery runs (the simulator reads this at cuInit).
int const small_device = ::setenv("SWAPALLOC_SIM_MEMORY", "64M", 0);

#if defined(SWAPALLOC_MODEL_SANITIZED)
constexpr std::uint64_t default_ops = 500;
#else
constexpr std::uint64_t default_ops = 2000;
#endif

[[nodiscard]] std::uint64_t env_number(char const* name, std::uint64_t fallback)
{
  char const* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::strtoull(value, nullptr, 0) : fallback;
}

/// The seeds to run: SWAPALLOC_MODEL_SEED alone, else the range SWAPALLOC_MODEL_SEEDS.
[[nodiscard]] std::vector<std::uint64_t> seeds_to_run()
{
  if (char const* one = std::getenv("SWAPALLOC_MODEL_SEED"); one != nullptr && *one != '\0') {
    return {std::strtoull(one, nullptr, 0)};
  }
  std::uint64_t first = 0;
  std::uint64_t count = 2;
  if (char const* range = std::getenv("SWAPALLOC_MODEL_SEEDS"); range != nullptr) {
    char* end = nullptr;
    first     = std::strtoull(range, &end, 0);
    count     = (end != nullptr && *end == ':') ? std::strtoull(end + 1, nullptr, 0) : 1;
  }
  std::vector<std::uint64_t> seeds;
  for (std::uint64_t s = first; s < first + count; ++s) {
    seeds.push_back(s);
  }
  return seeds;
}

constexpr std::size_t checkpoint_every = 200;

class ModelTest : public AllocatorTest {
 protected:
  void SetUp() override
  {
    AllocatorTest::SetUp();
    if (!sim().available()) {
      GTEST_SKIP() << "the model test injects driver faults: simulator only";
    }
    ASSERT_EQ(small_device, 0);
  }

  /// Prints the totals of a test: what ran, how fast.
  static void report(char const* mode, runner_counters const& total, std::uint64_t faults,
                     std::chrono::steady_clock::duration elapsed)
  {
    double const seconds = std::chrono::duration<double>(elapsed).count();
    std::uint64_t ops    = 0;
    for (std::uint64_t const n : total.ops) {
      ops += n;
    }
    std::printf("[model] %s: %s\n[model] %s: %.0f ops/s over %.1f s\n", mode,
                summary(total, faults).c_str(), mode, static_cast<double>(ops) / seconds, seconds);
    std::fflush(stdout);
  }
};

TEST_F(ModelTest, SingleThreaded)
{
  std::uint64_t const ops = env_number("SWAPALLOC_MODEL_OPS", default_ops);
  runner_counters total;
  std::uint64_t faults = 0;
  auto const start     = std::chrono::steady_clock::now();
  for (std::uint64_t const seed : seeds_to_run()) {
    scheduled_ops<random_ops> source(random_ops(seed), checkpoint_every);
    single_run const run = run_single(
      drv(), sim(), seed, [&] { return source.next(); }, ops);
    total += run.counters;
    faults += run.faults_armed;
    if (auto const& failure = run.failure; failure) {
      ADD_FAILURE() << "seed " << seed << " failed at op #" << failure->index << " of " << ops
                    << ": " << failure->message << "\nlast ops:\n"
                    << failure->history << "replay: SWAPALLOC_MODEL_SEED=" << seed
                    << " SWAPALLOC_MODEL_OPS=" << failure->index + 1
                    << " build/bin/model_tests --gtest_filter=ModelTest.SingleThreaded"
                    << "\nshrink: build/bin/model_shrink " << seed << " " << failure->index + 1;
      break;
    }
  }
  report("single-threaded", total, faults, std::chrono::steady_clock::now() - start);
}

/// One thread of MultiThreaded: its own runner (pools, streams), the shared allocator.
struct thread_run {
  std::uint64_t seed{0};
  std::optional<session_failure> failure;
  runner_counters counters;
};

TEST_F(ModelTest, MultiThreaded)
{
  std::uint64_t const ops   = env_number("SWAPALLOC_MODEL_OPS", default_ops);
  std::size_t const threads = env_number("SWAPALLOC_MODEL_THREADS", 3);
  std::size_t const budget  = page_budget(drv(), threads);
  runner_counters total;
  std::uint64_t faults = 0;
  auto const start     = std::chrono::steady_clock::now();
  for (std::uint64_t const seed : seeds_to_run()) {
    auto const under_test = std::make_unique<allocator>(drv(), allocator_options_for(seed));
    fault_gate gate(sim());
    std::atomic<bool> stop{false};
    std::vector<thread_run> runs(threads);
    std::vector<std::thread> workers;
    for (std::size_t t = 0; t < threads; ++t) {
      runs[t].seed = mix64(seed * 1000 + t);
      workers.emplace_back([&, t] {
        try {
          drv().set_current_context(context());
          model_runner runner(
            *under_test, drv(), gate,
            runner_config{"t" + std::to_string(t) + "-", 2, 2, budget, runs[t].seed});
          scheduled_ops<random_ops> source(random_ops(runs[t].seed), checkpoint_every);
          runs[t].failure = run_session(
            runner, [&] { return source.next(); }, ops, &stop);
          runs[t].counters = runner.counters();
        } catch (std::exception const& e) {  // setting up the thread's runner failed
          runs[t].failure = session_failure{0, "setup", e.what(), ""};
        }
        if (runs[t].failure) { stop = true; }
      });
    }
    for (std::thread& w : workers) {
      w.join();
    }
    faults += gate.faults_armed();
    bool failed = false;
    for (std::size_t t = 0; t < threads; ++t) {
      total += runs[t].counters;
      if (!runs[t].failure) { continue; }
      failed = true;
      ADD_FAILURE() << "seed " << seed << ", thread " << t << " (thread seed " << runs[t].seed
                    << ") failed at op #" << runs[t].failure->index << ": "
                    << runs[t].failure->message << "\nlast ops of that thread:\n"
                    << runs[t].failure->history << "replay: SWAPALLOC_MODEL_SEED=" << seed
                    << " SWAPALLOC_MODEL_THREADS=" << threads
                    << " build/bin/model_tests --gtest_filter=ModelTest.MultiThreaded"
                    << " (the same ops per thread; the threads interleave differently)";
    }
    if (failed) { break; }
  }
  report("multi-threaded", total, faults, std::chrono::steady_clock::now() - start);
}

}  // namespace
}  // namespace swapalloc::testing::model
