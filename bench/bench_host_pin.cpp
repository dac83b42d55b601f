/**
 * @file bench_host_pin.cpp
 * @brief What pinning host memory costs, two ways (../shared/notes/gpu-speed.md §3.1, M2):
 *        cuMemHostAlloc against mmap + a parallel first touch + cuMemHostRegister, and what
 *        giving it back costs (cuMemFreeHost; cuMemHostUnregister + munmap).
 *
 * Reading the results (manual time: only the named step; bytes_per_second over it):
 *   BM_PinHostAlloc/<MiB>   one cuMemHostAlloc of <MiB> (the host store's slab today).
 *   BM_FreeHost/<MiB>       one cuMemFreeHost of it (it also synchronizes the device).
 *   BM_PinRegister/<MiB>    mmap + touch of every page by `touch_threads` threads +
 *                           cuMemHostRegister; counters touch_ms and register_ms split it.
 *   BM_Unregister/<MiB>     cuMemHostUnregister + munmap.
 * The touch is the host store's own (detail/host_pinning.hpp: touch_pages with
 * default_touch_threads). On a GPU, tools/gpu-profile runs this program; on the simulator
 * with SWAPALLOC_SIM_PROFILE=h100, the driver calls cost what that profile says.
 *
 * Exit status: 0 done; 1 a CUDA call failed outside a benchmark; 2 no usable driver.
 */
#include <swapalloc/detail/host_pinning.hpp>
#include <swapalloc/driver.hpp>

#include "bench_main.hpp"

#include <benchmark/benchmark.h>

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using swapalloc::driver;
using clock_type          = std::chrono::steady_clock;
constexpr std::size_t MiB = std::size_t{1} << 20;

driver const* shared = nullptr;

[[nodiscard]] double seconds_since(clock_type::time_point start)
{
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

void BM_PinHostAlloc(benchmark::State& state)
{
  std::size_t const bytes = static_cast<std::size_t>(state.range(0)) * MiB;
  swapalloc::bench::guarded(state, [&] {
    for (auto _ : state) {
      auto const start = clock_type::now();
      void* const host = shared->host_alloc(bytes);
      state.SetIterationTime(seconds_since(start));
      shared->host_free(host);
    }
  });
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes) * state.iterations());
}

void BM_FreeHost(benchmark::State& state)
{
  std::size_t const bytes = static_cast<std::size_t>(state.range(0)) * MiB;
  swapalloc::bench::guarded(state, [&] {
    for (auto _ : state) {
      void* const host = shared->host_alloc(bytes);
      std::memset(host, 1, bytes);
      auto const start = clock_type::now();
      shared->host_free(host);
      state.SetIterationTime(seconds_since(start));
    }
  });
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes) * state.iterations());
}

/// A slab of `bytes` pinned as the host store registers one: detail::map_touched (mmap,
/// MADV_DONTFORK, the parallel touch), then cuMemHostRegister; adds the phases to the sums.
std::byte* pin_by_register(std::size_t bytes, double& touch, double& registering)
{
  auto const start = clock_type::now();
  swapalloc::detail::pinned_slab const mapped =
    swapalloc::detail::map_touched(bytes, swapalloc::detail::default_touch_threads());
  if (mapped.result != CUDA_SUCCESS) {
    throw std::runtime_error("mmap (or MADV_DONTFORK) of the pinned buffer failed");
  }
  touch += seconds_since(start);
  auto const registered = clock_type::now();
  CUresult const result = shared->table().cuMemHostRegister(mapped.base, bytes, 0);
  registering += seconds_since(registered);
  if (result != CUDA_SUCCESS) {
    ::munmap(mapped.base, bytes);
    shared->check(result, "cuMemHostRegister", [&] { return std::to_string(bytes); });
  }
  return mapped.base;
}

void unpin_registered(std::byte* base, std::size_t bytes)
{
  CUresult const result = shared->table().cuMemHostUnregister(base);
  ::munmap(base, bytes);
  shared->check(result, "cuMemHostUnregister", [] { return std::string(); });
}

void BM_PinRegister(benchmark::State& state)
{
  std::size_t const bytes = static_cast<std::size_t>(state.range(0)) * MiB;
  double touch            = 0;
  double registering      = 0;
  swapalloc::bench::guarded(state, [&] {
    for (auto _ : state) {
      double const before   = touch + registering;
      std::byte* const base = pin_by_register(bytes, touch, registering);
      state.SetIterationTime(touch + registering - before);
      unpin_registered(base, bytes);
    }
  });
  auto const iterations =
    static_cast<double>(std::max<benchmark::IterationCount>(1, state.iterations()));
  state.counters["touch_ms"]      = touch / iterations * 1e3;
  state.counters["register_ms"]   = registering / iterations * 1e3;
  state.counters["touch_threads"] = swapalloc::detail::default_touch_threads();
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes) * state.iterations());
}

void BM_Unregister(benchmark::State& state)
{
  std::size_t const bytes = static_cast<std::size_t>(state.range(0)) * MiB;
  swapalloc::bench::guarded(state, [&] {
    double unused = 0;
    for (auto _ : state) {
      std::byte* const base = pin_by_register(bytes, unused, unused);
      auto const start      = clock_type::now();
      unpin_registered(base, bytes);
      state.SetIterationTime(seconds_since(start));
    }
  });
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes) * state.iterations());
}

// 64 MiB (the host store's slab) and 256 MiB (bench_swap's pool); few iterations: a pin of
// 256 MiB takes about 90 ms on an H100 host.
BENCHMARK(BM_PinHostAlloc)
  ->Arg(64)
  ->Arg(256)
  ->UseManualTime()
  ->Iterations(4)
  ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FreeHost)
  ->Arg(64)
  ->Arg(256)
  ->UseManualTime()
  ->Iterations(4)
  ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_PinRegister)
  ->Arg(64)
  ->Arg(256)
  ->UseManualTime()
  ->Iterations(4)
  ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Unregister)
  ->Arg(64)
  ->Arg(256)
  ->UseManualTime()
  ->Iterations(4)
  ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv)
{
  return swapalloc::bench::run_main("bench_host_pin", argc, argv, [](driver const& cuda) {
    swapalloc::bench::with_primary_context(cuda, [&](CUdevice device, CUcontext) {
      (void)swapalloc::bench::add_driver_context(cuda, device, cuda.allocation_granularity(device));
      swapalloc::bench::run_benchmarks_with(shared, cuda);
    });
  });
}
