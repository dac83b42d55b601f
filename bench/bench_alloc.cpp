/**
 * @file bench_alloc.cpp
 * @brief What swapalloc::allocator costs per allocation, next to mapping fresh memory per
 *        allocation, and how much memory it reserves on recorded PyTorch traces.
 *
 * Against the simulator (SWAPALLOC_CUDA_DRIVER=build/lib/libcudasim.so) the driver calls
 * cost what the simulator charges, so only the hot path, which makes none, reads as it
 * would on a GPU. Against libcuda.so.1 (tools/gpu-check) all of it is real.
 *
 * Reading the results:
 *   BM_HotPath/<bytes>          one allocate + deallocate of a cached size, on one thread,
 *                               on the legacy stream: the time column is per pair.
 *   BM_HotPathThreads/<bytes>   the same from 2 threads sharing one allocator; wall time
 *                               divided by the pairs of both threads (perfect scaling would
 *                               halve BM_HotPath's figure; one contended mutex does not).
 *   BM_VmmPerAllocation/<bytes> what an allocator that maps memory per allocation pays
 *                               (torch_memory_saver, vLLM's sleep mode): cuMemAddressReserve
 *                               + cuMemCreate + cuMemMap + cuMemSetAccess + cuMemUnmap +
 *                               cuMemRelease + cuMemAddressFree of <bytes> rounded up to the
 *                               granularity. Its time / BM_HotPath's: what caching saves.
 *   BM_Replay/<trace>           a fresh allocator replays tests/data/traces/<trace>.trace
 *                               (its destruction is not timed); items_per_second: events.
 *     events                    events (allocations + frees) in the trace.
 *     reserved_over_live        peak reserved bytes / the trace's peak live bytes (1.0:
 *                               no fragmentation, no rounding, no cache overhead).
 *
 * Exit status: 0 done; 1 a CUDA call failed outside a benchmark; 2 no usable driver.
 */
#include <swapalloc/allocator.hpp>
#include <swapalloc/driver.hpp>

#include <replay/alloc_trace.hpp>

#include "bench_main.hpp"

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

using swapalloc::driver;

/// What the benchmarks share, set by main for the duration of RunSpecifiedBenchmarks: the
/// driver, device 0 and its primary context (current on the main thread).
struct bench_device {
  driver const& cuda;
  CUdevice device;
  CUcontext context;
  std::size_t granularity;
};
bench_device const* shared = nullptr;

void BM_HotPath(benchmark::State& state)
{
  auto const bytes = static_cast<std::size_t>(state.range(0));
  swapalloc::bench::guarded(state, [&] {
    swapalloc::allocator cache(shared->cuda);
    cache.deallocate(cache.allocate(bytes, 0, nullptr), bytes, 0, nullptr);  // warm
    for (auto _ : state) {
      CUdeviceptr const address = cache.allocate(bytes, 0, nullptr);
      benchmark::DoNotOptimize(address);
      cache.deallocate(address, bytes, 0, nullptr);
    }
  });
}

// BM_HotPathThreads' allocator: made by hot_path_setup before the threads start, destroyed
// by hot_path_teardown after they are joined (so nothing is left for the leak check).
std::optional<swapalloc::allocator> threads_allocator;
std::string threads_setup_error;

void hot_path_setup(benchmark::State const& state)
{
  auto const bytes = static_cast<std::size_t>(state.range(0));
  threads_setup_error.clear();
  try {
    threads_allocator.emplace(shared->cuda);
    std::vector<CUdeviceptr> warm(static_cast<std::size_t>(state.threads()));  // one per thread
    for (CUdeviceptr& address : warm) {
      address = threads_allocator->allocate(bytes, 0, nullptr);
    }
    for (CUdeviceptr address : warm) {
      threads_allocator->deallocate(address, bytes, 0, nullptr);
    }
  } catch (std::exception const& error) {
    threads_setup_error = error.what();
  }
}

void hot_path_teardown(benchmark::State const&) { threads_allocator.reset(); }

void BM_HotPathThreads(benchmark::State& state)
{
  if (!threads_setup_error.empty() || !threads_allocator) {
    state.SkipWithError(threads_setup_error.c_str());
    return;
  }
  auto const bytes = static_cast<std::size_t>(state.range(0));
  swapalloc::bench::guarded(state, [&] {
    for (auto _ : state) {
      CUdeviceptr const address = threads_allocator->allocate(bytes, 0, nullptr);
      benchmark::DoNotOptimize(address);
      threads_allocator->deallocate(address, bytes, 0, nullptr);
    }
  });
}

void BM_VmmPerAllocation(benchmark::State& state)
{
  auto const& device     = *shared;
  auto const granularity = device.granularity;
  auto const bytes =
    (static_cast<std::size_t>(state.range(0)) + granularity - 1) / granularity * granularity;
  swapalloc::bench::guarded(state, [&] {
    device.cuda.set_current_context(device.context);
    for (auto _ : state) {
      CUdeviceptr const address = device.cuda.address_reserve(bytes);
      CUmemGenericAllocationHandle handle{};
      bool mapped = false;
      try {
        handle = device.cuda.mem_create(bytes, device.device);
        device.cuda.mem_map(address, bytes, handle);
        mapped = true;
        device.cuda.mem_set_access(address, bytes, device.device);
        benchmark::DoNotOptimize(address);
        device.cuda.mem_unmap(address, bytes);
        mapped = false;
        device.cuda.mem_release(std::exchange(handle, 0));
        device.cuda.address_free(address, bytes);
      } catch (...) {  // undo best effort, so a failure leaks nothing
        if (mapped) { (void)device.cuda.table().cuMemUnmap(address, bytes); }
        if (handle != 0) { (void)device.cuda.table().cuMemRelease(handle); }
        (void)device.cuda.table().cuMemAddressFree(address, bytes);
        throw;
      }
    }
  });
}

/// The trace `name` of tests/data/traces, loaded once per process.
/// Takes `char const*` so that no temporary string is bound at the call: GCC 13's
/// -Wdangling-reference would flag one.
swapalloc::replay::trace const& recorded_trace(char const* name)
{
  static std::map<std::string, swapalloc::replay::trace> loaded;
  auto found = loaded.find(name);
  if (found == loaded.end()) {
    std::string const path = std::string(SWAPALLOC_TRACE_DIR) + "/" + name + ".trace";
    found                  = loaded.emplace(name, swapalloc::replay::trace(path)).first;
  }
  return found->second;
}

void BM_Replay(benchmark::State& state, char const* name)
{
  swapalloc::bench::guarded(state, [&] {
    auto const& recorded = recorded_trace(name);
    std::size_t peak     = 0;
    std::optional<swapalloc::allocator> fresh;
    for (auto _ : state) {
      fresh.emplace(shared->cuda);
      peak = swapalloc::replay::replay(*fresh, recorded, 0, {});
      state.PauseTiming();
      fresh.reset();
      state.ResumeTiming();
    }
    auto const events = static_cast<std::int64_t>(recorded.events().size());
    state.SetItemsProcessed(events * state.iterations());
    state.counters["events"] = static_cast<double>(events);
    state.counters["reserved_over_live"] =
      static_cast<double>(peak) / static_cast<double>(recorded.peak_live_bytes());
  });
}

// Sizes: PyTorch's 512 B minimum, small blocks, the 1 MiB small/large boundary, a large one.
void sizes(benchmark::internal::Benchmark* b)
{
  for (std::int64_t bytes : {512, 4096, 65536, 1 << 20, 16 << 20}) {
    b->Arg(bytes);
  }
}

BENCHMARK(BM_HotPath)->Apply(sizes);
BENCHMARK(BM_HotPathThreads)
  ->Apply(sizes)
  ->Threads(2)
  ->Setup(hot_path_setup)
  ->Teardown(hot_path_teardown)
  ->UseRealTime();
BENCHMARK(BM_VmmPerAllocation)->Apply(sizes);
BENCHMARK_CAPTURE(BM_Replay, gpt_train_step, "gpt_train_step")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Replay, gpt_generate, "gpt_generate")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Replay, cnn_infer, "cnn_infer")->Unit(benchmark::kMillisecond);

}  // namespace

// A custom main (bench_main.hpp): the driver is loaded before any benchmark runs.
int main(int argc, char** argv)
{
  return swapalloc::bench::run_main("bench_alloc", argc, argv, [](driver const& cuda) {
    swapalloc::bench::with_primary_context(cuda, [&](CUdevice device, CUcontext context) {
      bench_device const loaded{cuda, device, context, cuda.allocation_granularity(device)};
      swapalloc::bench::add_driver_context(cuda, device, loaded.granularity);
      swapalloc::bench::run_benchmarks_with(shared, loaded);
    });
  });
}
