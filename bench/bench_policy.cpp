/**
 * @file bench_policy.cpp
 * @brief What the eviction policy (policy.hpp, carried out by allocator.hpp) costs the
 *        calls around it: the hot path while another pool is being swapped, an allocation
 *        that makes the policy evict, and activating a resident pool.
 *
 * Reading the results (times are wall-clock: a thread waiting for the device's mutex
 * sleeps, so CPU time would hide exactly what is measured here):
 *   BM_HotPath/<bytes>             one allocate + deallocate of a cached size in the default
 *                                  pool on one thread (bench_alloc's BM_HotPath), next to a
 *                                  filled, resident, idle pool "background": the baseline.
 *   BM_HotPathDuringEvict/<bytes>  the same while a second thread, started once the hot
 *                                  path is warm and stopped after the timed loop, evicts and
 *                                  restores pool "background" back to back.
 *                                  Goal: <= 2 x BM_HotPath.
 *     cycles                       evict + restore cycles the background thread completed
 *                                  during the timed loop (0 would mean no background work).
 *                                  Runs for at least 2 s, whatever --benchmark_min_time says.
 *     background_MiB               live bytes of pool "background", copied by each cycle.
 *   BM_AllocateUnderPressure       one allocation of 48 MiB in pool "b" under a 64 MiB
 *                                  device_limit while pool "a" (8 MiB, cold, resident) holds
 *                                  the rest: past the 85% high watermark, so the policy
 *                                  evicts all of "a" before mapping. Goal: <= 1.1 x
 *                                  BM_ExplicitEvictAllocate.
 *   BM_ExplicitEvictAllocate       the same work asked for explicitly: evict("a") + the same
 *                                  allocation, with automatic_eviction = false.
 *     evicted_MiB                  bytes of "a" evicted per iteration (8: the policy and the
 *                                  explicit call move the same bytes).
 *     Each iteration starts from the same state, reset untimed: the block freed, pool "b"'s
 *     pages released (empty_cache), "a"'s compression awaited and "a" restored.
 *   BM_ActivateResident            activate + deactivate of a resident pool on a stream (no
 *                                  restore: the policy's bookkeeping, the pin and the
 *                                  last-use event). Goal: <= 1 us on the simulator.
 *
 * After the table, the ratios of the goals are printed ("ratio A / B = x (goal <= g): met"),
 * from the real times (the means, with --benchmark_repetitions) that the console reporter
 * saw; --benchmark_format is therefore not honoured. The machine's load moves the
 * under-pressure pair by ±10%: repeat before reading a ratio near its goal.
 *
 * Swapped pools use the raw codec and one compression worker, so that the host work of an
 * eviction is a copy (on a 2-core machine a compressing worker would compete with the hot
 * path for a core, which is not what is measured). On the simulator the link is throttled
 * (cudasimSetLinkBandwidth) to SWAPALLOC_BENCH_LINK_GBPS (10^9 bytes/s, default 1);
 * SWAPALLOC_BENCH_POLICY_MIB sets pool "background"'s live data (default 64).
 *
 * Exit status: 0 done; 1 a CUDA call failed outside a benchmark; 2 no usable driver.
 */
#include <swapalloc/activation.hpp>
#include <swapalloc/allocator.hpp>
#include <swapalloc/pool_scope.hpp>
#include <swapalloc/driver.hpp>

#include "bench_main.hpp"

#include <benchmark/benchmark.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using swapalloc::driver;
constexpr std::size_t MiB = std::size_t{1} << 20;

/// What the benchmarks share, set by main for the duration of RunSpecifiedBenchmarks.
struct bench_device {
  driver const& cuda;
  std::size_t background_bytes;  // pool "background"'s live bytes
};
bench_device const* shared = nullptr;

/// The options every benchmark here uses: no SWAPALLOC_* variable (the default 85/75
/// watermarks), one compression worker.
swapalloc::allocator_options bench_options()
{
  swapalloc::allocator_options options;
  options.read_environment = false;
  options.workers          = 1;
  return options;
}

/// Pool options of a swapped pool: the raw codec (see the file comment).
swapalloc::pool_options raw_pool()
{
  swapalloc::pool_options options;
  options.codec = swapalloc::codec_id::raw;
  return options;
}

/// `bytes` of live data in pool `pool`, in blocks of at most 16 MiB, each written from the
/// host (a driver copy), so that an eviction copies bytes. Freed at destruction.
class filled_blocks {
 public:
  filled_blocks(swapalloc::allocator& cache, swapalloc::pool_id pool, std::size_t bytes)
    : cache_(&cache)
  {
    std::size_t const largest = 16 * MiB;
    std::vector<unsigned char> data(std::min(bytes, largest));
    for (std::size_t i = 0; i < data.size(); ++i) {
      data[i] = static_cast<unsigned char>((i * 2654435761U) >> 13U);
    }
    swapalloc::pool_scope const scope(cache, pool);
    for (std::size_t filled = 0; filled < bytes;) {
      std::size_t const size = std::min(largest, bytes - filled);
      CUdeviceptr const ptr  = cache.allocate(size, 0, nullptr);
      blocks_.emplace_back(ptr, size);
      shared->cuda.memcpy_htod(ptr, data.data(), size);
      filled += size;
    }
  }
  ~filled_blocks()
  {
    for (auto const& [ptr, size] : blocks_) {
      try {
        cache_->deallocate(ptr, size, 0, nullptr);
      } catch (...) {  // NOLINT(bugprone-empty-catch): the allocator's destructor frees it
      }
    }
  }
  filled_blocks(filled_blocks const&)            = delete;
  filled_blocks& operator=(filled_blocks const&) = delete;

 private:
  swapalloc::allocator* cache_;
  std::vector<std::pair<CUdeviceptr, std::size_t>> blocks_;
};

/// A thread that evicts and restores one pool back to back until stopped, counting the
/// cycles it completes. A failure stops it; `rethrow` reports it on the caller's thread.
class swap_loop {
 public:
  swap_loop(swapalloc::allocator& cache, swapalloc::pool_id pool)
    : thread_([this, &cache, pool] { run(cache, pool); })
  {
  }
  ~swap_loop() { stop(); }
  swap_loop(swap_loop const&)            = delete;
  swap_loop& operator=(swap_loop const&) = delete;

  [[nodiscard]] std::uint64_t cycles() const noexcept
  {
    return cycles_.load(std::memory_order_relaxed);
  }
  /// Stops the loop after its current evict or restore, and joins the thread.
  void stop()
  {
    stopping_.store(true, std::memory_order_relaxed);
    if (thread_.joinable()) { thread_.join(); }
  }
  void rethrow() const
  {
    if (error_) { std::rethrow_exception(error_); }
  }

 private:
  void run(swapalloc::allocator& cache, swapalloc::pool_id pool) noexcept
  {
    try {
      while (!stopping_.load(std::memory_order_relaxed)) {
        (void)cache.evict(pool, 0);
        (void)cache.restore(pool, 0);
        cycles_.fetch_add(1, std::memory_order_relaxed);
      }
    } catch (...) {
      error_ = std::current_exception();
    }
  }

  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> cycles_{0};
  std::exception_ptr error_;
  std::thread thread_;  // last: starts once the members it uses exist
};

/// The hot path of `state.range(0)` bytes in the default pool, beside a filled pool
/// "background"; with `swapping`, while a swap_loop evicts and restores that pool.
void hot_path(benchmark::State& state, bool swapping)
{
  auto const bytes = static_cast<std::size_t>(state.range(0));
  swapalloc::bench::guarded(state, [&] {
    swapalloc::allocator cache(shared->cuda, bench_options());
    swapalloc::pool_id const background = cache.create_pool("background", raw_pool());
    filled_blocks const data(cache, background, shared->background_bytes);
    (void)cache.evict(background, 0);  // one untimed cycle: the swap tier exists in both
    (void)cache.restore(background, 0);
    cache.deallocate(cache.allocate(bytes, 0, nullptr), bytes, 0, nullptr);  // warm
    std::optional<swap_loop> loop;
    if (swapping) { loop.emplace(cache, background); }
    std::uint64_t const before = loop ? loop->cycles() : 0;
    for (auto _ : state) {
      CUdeviceptr const address = cache.allocate(bytes, 0, nullptr);
      benchmark::DoNotOptimize(address);
      cache.deallocate(address, bytes, 0, nullptr);
    }
    std::uint64_t const during = loop ? loop->cycles() - before : 0;
    if (loop) {
      loop->stop();
      loop->rethrow();
      state.counters["cycles"] = static_cast<double>(during);
    }
    state.counters["background_MiB"] =
      static_cast<double>(shared->background_bytes) / static_cast<double>(MiB);
  });
}

void BM_HotPath(benchmark::State& state) { hot_path(state, false); }

void BM_HotPathDuringEvict(benchmark::State& state) { hot_path(state, true); }

// BM_AllocateUnderPressure's sizes: 8 + 48 = 56 MiB of a 64 MiB limit passes the high
// watermark (54.4 MiB); down to the low one (48 MiB) takes 8 MiB, all of pool "a".
constexpr std::size_t pressure_limit = 64 * MiB;
constexpr std::size_t cold_bytes     = 8 * MiB;
constexpr std::size_t request_bytes  = 48 * MiB;

/**
 * One allocation of request_bytes in pool "b" beside a cold, resident pool "a": with
 * `automatic`, the policy evicts "a" before mapping; without, an explicit evict("a") comes
 * first. Each iteration's reset is untimed. Throws if "a" is not wholly evicted.
 */
void pressure_cycles(benchmark::State& state, bool automatic)
{
  swapalloc::bench::guarded(state, [&] {
    swapalloc::allocator_options options = bench_options();
    options.automatic_eviction           = automatic;
    options.device_limit                 = swapalloc::device_limit{pressure_limit, 1.0};
    swapalloc::allocator cache(shared->cuda, options);
    swapalloc::pool_id const a = cache.create_pool("a", raw_pool());
    swapalloc::pool_id const b = cache.create_pool("b", raw_pool());
    filled_blocks const cold(cache, a, cold_bytes);
    swapalloc::pool_scope const scope(cache, b);
    std::size_t evicted = 0;
    auto const step     = [&] {  // the measured work
      if (!automatic) { (void)cache.evict(a, 0); }
      return cache.allocate(request_bytes, 0, nullptr);
    };
    auto const reset = [&](CUdeviceptr block) {  // back to "a" resident, "b" empty
      std::size_t const moved = cache.stats(a, 0).evicted_bytes;
      if (moved != cold_bytes) {
        throw std::logic_error("pool 'a' was not wholly evicted: " + std::to_string(moved) +
                               " of " + std::to_string(cold_bytes) + " bytes");
      }
      evicted += moved;
      cache.deallocate(block, request_bytes, 0, nullptr);
      (void)cache.empty_cache(b);
      cache.wait_for_compression(a);
      (void)cache.restore(a, 0);
    };
    reset(step());  // untimed: the swap tier's workers and staging buffers exist
    evicted = 0;
    for (auto _ : state) {
      CUdeviceptr const block = step();
      state.PauseTiming();
      reset(block);
      state.ResumeTiming();
    }
    state.counters["evicted_MiB"] = static_cast<double>(evicted) /
                                    static_cast<double>(state.iterations()) /
                                    static_cast<double>(MiB);
  });
}

void BM_AllocateUnderPressure(benchmark::State& state) { pressure_cycles(state, true); }

void BM_ExplicitEvictAllocate(benchmark::State& state) { pressure_cycles(state, false); }

void BM_ActivateResident(benchmark::State& state)
{
  swapalloc::bench::guarded(state, [&] {
    CUstream const stream = shared->cuda.stream_create();
    try {
      swapalloc::allocator cache(shared->cuda, bench_options());
      swapalloc::pool_id const pool = cache.create_pool("model", raw_pool());
      filled_blocks const data(cache, pool, 2 * MiB);
      for (auto _ : state) {
        (void)cache.activate(pool, 0, stream);
        cache.deactivate(pool, 0, stream);
      }
      shared->cuda.stream_synchronize(stream);
    } catch (...) {
      (void)shared->cuda.table().cuStreamDestroy(stream);
      throw;
    }
    shared->cuda.stream_destroy(stream);
  });
}

BENCHMARK(BM_HotPath)->Arg(4096)->UseRealTime();
// At least 2 s: its time is a few long waits (each a whole evict or restore) spread over
// many fast pairs, so a run must span several cycles to be stable.
BENCHMARK(BM_HotPathDuringEvict)->Arg(4096)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_AllocateUnderPressure)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ExplicitEvictAllocate)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ActivateResident)->UseRealTime();

/// The console reporter, keeping each benchmark's real time per iteration (seconds) for
/// the ratios printed after the table. With repetitions, the mean's (reported last).
class ratio_reporter : public benchmark::ConsoleReporter {
 public:
  /// Colours on a terminal only, as the default reporter's --benchmark_color=auto.
  ratio_reporter() : ConsoleReporter(::isatty(STDOUT_FILENO) != 0 ? OO_Color : OO_None) {}

  void ReportRuns(std::vector<Run> const& reports) override
  {
    for (Run const& run : reports) {
      bool const kept = run.run_type == Run::RT_Iteration || run.aggregate_name == "mean";
      if (kept && !run.error_occurred) {
        seconds_[run.run_name.function_name] =
          run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit);
      }
    }
    ConsoleReporter::ReportRuns(reports);
  }

  /// "ratio <a> / <b> = x (goal <= g)", or a line saying which one did not run.
  void print_ratio(char const* a, char const* b, double goal) const
  {
    auto const found_a = seconds_.find(a);
    auto const found_b = seconds_.find(b);
    if (found_a == seconds_.end() || found_b == seconds_.end() || found_b->second <= 0) {
      std::printf("ratio %s / %s: not measured in this run\n", a, b);
      return;
    }
    double const ratio = found_a->second / found_b->second;
    std::printf("ratio %s / %s = %.3g (goal <= %g): %s\n", a, b, ratio, goal,
                ratio <= goal ? "met" : "missed");
  }

  /// "<name> = x us (goal <= g us)", or nothing when it did not run.
  void print_time(char const* name, double goal_us) const
  {
    auto const found = seconds_.find(name);
    if (found == seconds_.end()) { return; }
    double const us = found->second * 1e6;
    std::printf("%s = %.3g us (goal <= %g us): %s\n", name, us, goal_us,
                us <= goal_us ? "met" : "missed");
  }

 private:
  std::map<std::string, double> seconds_;
};

}  // namespace

// A custom main (bench_main.hpp): the driver is loaded before any benchmark runs.
int main(int argc, char** argv)
{
  return swapalloc::bench::run_main("bench_policy", argc, argv, [](driver const& cuda) {
    swapalloc::bench::with_primary_context(cuda, [&](CUdevice device, CUcontext) {
      bool const simulated =
        swapalloc::bench::add_driver_context(cuda, device, cuda.allocation_granularity(device));
      if (simulated) {
        double const gbps = swapalloc::bench::env_number("SWAPALLOC_BENCH_LINK_GBPS", 1.0);
        using set_link    = void (*)(double);
        reinterpret_cast<set_link>(cuda.find_symbol("cudasimSetLinkBandwidth"))(gbps);
        benchmark::AddCustomContext("link_GBps", std::to_string(gbps));
      }
      auto const background =
        static_cast<std::size_t>(swapalloc::bench::env_number("SWAPALLOC_BENCH_POLICY_MIB", 64)) *
        MiB;
      bench_device const loaded{cuda, background};
      ratio_reporter reporter;
      swapalloc::bench::run_benchmarks_with(shared, loaded, &reporter);
      reporter.print_ratio("BM_HotPathDuringEvict", "BM_HotPath", 2.0);
      reporter.print_ratio("BM_AllocateUnderPressure", "BM_ExplicitEvictAllocate", 1.1);
      reporter.print_time("BM_ActivateResident", 1.0);
    });
  });
}
