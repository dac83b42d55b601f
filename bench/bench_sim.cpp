/**
 * @file bench_sim.cpp
 * @brief What the loaded driver charges for the operations eviction is made of: VMM
 *        map/unmap latency and host<->device copy throughput, next to a plain host memcpy.
 *
 * Against the simulator (SWAPALLOC_CUDA_DRIVER=build/lib/libcudasim.so) it measures the
 * simulator itself, and with SWAPALLOC_SIM_LINK_GBPS the simulated link, so that later
 * benchmarks can quote their ratios against it. Against libcuda.so.1 (tools/gpu-check) it
 * measures the real driver and PCIe link.
 *
 * Reading the results:
 *   BM_MapUnmap/<bytes>         one cuMemCreate + cuMemMap + cuMemSetAccess + cuMemUnmap +
 *                               cuMemRelease of <bytes> (a single handle): the time column.
 *   BM_VmmCall/<call>/<bytes>/<idle|queued>  the same cycle, timing one of its calls only
 *                               (create, map, access, retain, unmap, release; retain:
 *                               cuMemRetainAllocationHandle, what an unmap into a
 *                               handle_cache adds); `queued`: 64 x 1 MiB
 *                               device-to-host copies are queued on another stream first,
 *                               and copies_pending_after (0..1) says how often they were
 *                               still running when the call returned: a call that waits
 *                               for the DMA takes the copies' time and leaves none pending.
 *   BM_Copy{HtoD,DtoH}/<bytes>  synchronous copy between pinned host memory and device pages.
 *   BM_Copy{HtoD,DtoH}Async/<bytes>  the same on a stream, plus cuStreamSynchronize.
 *   BM_CopyDtoHQueued/<bytes>   64 MiB as back-to-back async copies of <bytes>, then one
 *                               cuStreamSynchronize: what a pipeline of chunk copies gets
 *                               (per-copy overhead; on the simulator, gaps in the link).
 *   BM_Memcpy/<bytes>           std::memcpy between two pinned host buffers: the baseline.
 *   bytes_per_second            throughput over wall-clock time (copies run off-thread).
 *   vs_memcpy                   throughput / memcpy throughput of the same size, measured in
 *                               the same process just before (1.0 = as fast as memcpy).
 *
 * Exit status: 0 done; 1 a CUDA call failed outside a benchmark; 2 no usable driver.
 */
#include <swapalloc/driver.hpp>

#include "bench_main.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace {

using swapalloc::driver;

constexpr std::size_t max_bytes = std::size_t{64} << 20;

/**
 * Everything the benchmarks share, acquired once: the context, a fully mapped device range
 * of `max_bytes`, two pinned host buffers and a stream. Released in reverse order at exit,
 * so the simulator's strict mode finds nothing left.
 */
class bench_device {
 public:
  explicit bench_device(driver const& loaded)
    : cuda(loaded), device(loaded.device(0)), context(loaded.retain_primary_context(device))
  {
    try {
      cuda.set_current_context(context);
      granularity = cuda.allocation_granularity(device);
      stream      = cuda.stream_create();
      source      = cuda.host_alloc(max_bytes);
      target      = cuda.host_alloc(max_bytes);
      // Copy sizes below the granularity still need whole pages behind them.
      mapped_bytes = (max_bytes + granularity - 1) / granularity * granularity;
      range        = cuda.address_reserve(mapped_bytes + map_bench_bytes(), granularity);
      handle       = cuda.mem_create(mapped_bytes, device);
      cuda.mem_map(range, mapped_bytes, handle);
      mapped = true;
      cuda.mem_set_access(range, mapped_bytes, device);
      // Touch every byte once, so no benchmark pays for first-touch page faults.
      std::memset(source, 0x5A, max_bytes);
      std::memset(target, 0, max_bytes);
      cuda.memset_d8(range, 0, mapped_bytes);
      cuda.synchronize_context();
    } catch (...) {
      release();
      throw;
    }
  }
  bench_device(bench_device const&)            = delete;
  bench_device& operator=(bench_device const&) = delete;
  ~bench_device() { release(); }

  /// Where BM_MapUnmap maps: the part of the reservation after the copy buffer.
  [[nodiscard]] CUdeviceptr map_area() const noexcept { return range + mapped_bytes; }
  [[nodiscard]] static std::size_t map_bench_bytes() noexcept { return max_bytes; }

  driver const& cuda;
  CUdevice device;
  CUcontext context;
  std::size_t granularity  = 0;
  std::size_t mapped_bytes = 0;
  CUstream stream{};
  void* source = nullptr;
  void* target = nullptr;
  CUdeviceptr range{};
  CUmemGenericAllocationHandle handle{};
  bool mapped = false;

 private:
  /// Releases whatever was acquired; a failure is reported, not thrown (destructor path).
  void release() noexcept
  {
    auto const attempt = [](auto&& step) {
      try {
        step();
      } catch (std::exception const& error) {
        std::fprintf(stderr, "bench_sim: cleanup failed: %s\n", error.what());
      }
    };
    if (mapped) {
      attempt([&] { cuda.mem_unmap(range, mapped_bytes); });
    }
    if (handle != 0) {
      attempt([&] { cuda.mem_release(handle); });
    }
    if (range != 0) {
      attempt([&] { cuda.address_free(range, mapped_bytes + map_bench_bytes()); });
    }
    if (target != nullptr) {
      attempt([&] { cuda.host_free(target); });
    }
    if (source != nullptr) {
      attempt([&] { cuda.host_free(source); });
    }
    if (stream != nullptr) {
      attempt([&] { cuda.stream_destroy(stream); });
    }
    attempt([&] { cuda.set_current_context(nullptr); });
    attempt([&] { cuda.release_primary_context(device); });
  }
};

/// The shared state, set by main for the duration of RunSpecifiedBenchmarks.
bench_device* shared = nullptr;

/// Host memcpy throughput for `bytes`, measured once per size (median of 7 runs) and cached,
/// so each copy benchmark's vs_memcpy divides by a baseline taken in the same process.
double memcpy_bytes_per_second(std::size_t bytes)
{
  static std::map<std::size_t, double> cache;
  if (auto const found = cache.find(bytes); found != cache.end()) { return found->second; }
  std::vector<double> seconds;
  for (int run = 0; run < 7; ++run) {
    auto const start = std::chrono::steady_clock::now();
    std::memcpy(shared->target, shared->source, bytes);
    benchmark::ClobberMemory();
    seconds.push_back(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::nth_element(seconds.begin(), seconds.begin() + 3, seconds.end());
  double const rate = static_cast<double>(bytes) / std::max(seconds[3], 1e-9);
  cache.emplace(bytes, rate);
  return rate;
}

/**
 * Runs `copy(bytes)` once per iteration and reports bytes_per_second and vs_memcpy, the
 * throughput as a multiple of memcpy's for the same size. The loop is also timed here (wall
 * clock, like the benchmark's real time) because a benchmark cannot read its own timings.
 */
template <class Copy>
void copy_benchmark(benchmark::State& state, Copy&& copy)
{
  auto const bytes      = static_cast<std::size_t>(state.range(0));
  double const baseline = memcpy_bytes_per_second(bytes);  // measured before the timed loop
  auto const start      = std::chrono::steady_clock::now();
  swapalloc::bench::guarded(state, [&] {
    for (auto _ : state) {
      copy(bytes);
    }
  });
  double const seconds =
    std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  auto const total = static_cast<std::int64_t>(bytes) * state.iterations();
  state.SetBytesProcessed(total);
  if (total > 0 && seconds > 0) {
    state.counters["vs_memcpy"] = static_cast<double>(total) / seconds / baseline;
  }
}

void BM_MapUnmap(benchmark::State& state)
{
  auto const bytes   = static_cast<std::size_t>(state.range(0));
  auto const& device = *shared;
  if (bytes % device.granularity != 0) {
    state.SkipWithError("size is not a multiple of the allocation granularity");
    return;
  }
  swapalloc::bench::guarded(state, [&] {
    for (auto _ : state) {
      auto const handle = device.cuda.mem_create(bytes, device.device);
      device.cuda.mem_map(device.map_area(), bytes, handle);
      device.cuda.mem_set_access(device.map_area(), bytes, device.device);
      device.cuda.mem_unmap(device.map_area(), bytes);
      device.cuda.mem_release(handle);
    }
  });
}

/// One call of BM_VmmCall's create/map/access/retain/unmap/release cycle (retain: what an
/// unmap into a handle_cache adds, cuMemRetainAllocationHandle).
enum class vmm_call : std::uint8_t { create, map, access, retain, unmap, release };

/// Queues 64 MiB of device-to-host copies, 1 MiB each, on the shared stream.
void queue_copies()
{
  auto* const host = static_cast<std::byte*>(shared->target);
  for (std::size_t at = 0; at + (std::size_t{1} << 20) <= max_bytes; at += std::size_t{1} << 20) {
    shared->cuda.memcpy_dtoh_async(host + at, shared->range + at, std::size_t{1} << 20,
                                   shared->stream);
  }
}

void BM_VmmCall(benchmark::State& state, vmm_call timed, std::size_t bytes, bool queued)
{
  auto const& device       = *shared;
  std::size_t still_queued = 0;
  swapalloc::bench::guarded(state, [&] {
    for (auto _ : state) {
      if (queued) { queue_copies(); }
      double seconds  = 0;
      auto const step = [&](vmm_call call, auto&& body) {
        if (call != timed) {
          body();
          return;
        }
        auto const start = std::chrono::steady_clock::now();
        body();
        seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (queued && !device.cuda.stream_query(device.stream)) { ++still_queued; }
      };
      CUmemGenericAllocationHandle handle{};
      CUdeviceptr const at = device.map_area();
      step(vmm_call::create, [&] { handle = device.cuda.mem_create(bytes, device.device); });
      step(vmm_call::map, [&] { device.cuda.mem_map(at, bytes, handle); });
      step(vmm_call::access, [&] { device.cuda.mem_set_access(at, bytes, device.device); });
      CUmemGenericAllocationHandle retained{};
      step(vmm_call::retain, [&] { retained = device.cuda.mem_retain(at); });
      step(vmm_call::unmap, [&] { device.cuda.mem_unmap(at, bytes); });
      step(vmm_call::release, [&] { device.cuda.mem_release(handle); });
      device.cuda.mem_release(retained);
      device.cuda.stream_synchronize(device.stream);
      state.SetIterationTime(seconds);
    }
  });
  if (queued && state.iterations() > 0) {
    state.counters["copies_pending_after"] =
      static_cast<double>(still_queued) / static_cast<double>(state.iterations());
  }
}

/// BM_VmmCall for each call, at 2 and 32 MiB, idle and behind queued copies.
void register_vmm_calls()
{
  std::pair<vmm_call, char const*> const calls[] = {
    {vmm_call::create, "create"}, {vmm_call::map, "map"},     {vmm_call::access, "access"},
    {vmm_call::retain, "retain"}, {vmm_call::unmap, "unmap"}, {vmm_call::release, "release"}};
  for (auto const& [call, name] : calls) {
    for (std::size_t const bytes : {std::size_t{2} << 20, std::size_t{32} << 20}) {
      for (bool const queued : {false, true}) {
        std::string const label = std::string("BM_VmmCall/") + name + "/" + std::to_string(bytes) +
                                  (queued ? "/queued" : "/idle");
        benchmark::RegisterBenchmark(label.c_str(), BM_VmmCall, call, bytes, queued)
          ->UseManualTime()
          ->Iterations(20)
          ->Unit(benchmark::kMicrosecond);
      }
    }
  }
}

void BM_CopyHtoD(benchmark::State& state)
{
  copy_benchmark(state, [](std::size_t bytes) {
    shared->cuda.memcpy_htod(shared->range, shared->source, bytes);
  });
}

void BM_CopyHtoDAsync(benchmark::State& state)
{
  copy_benchmark(state, [](std::size_t bytes) {
    shared->cuda.memcpy_htod_async(shared->range, shared->source, bytes, shared->stream);
    shared->cuda.stream_synchronize(shared->stream);
  });
}

void BM_CopyDtoH(benchmark::State& state)
{
  copy_benchmark(state, [](std::size_t bytes) {
    shared->cuda.memcpy_dtoh(shared->target, shared->range, bytes);
  });
}

void BM_CopyDtoHAsync(benchmark::State& state)
{
  copy_benchmark(state, [](std::size_t bytes) {
    shared->cuda.memcpy_dtoh_async(shared->target, shared->range, bytes, shared->stream);
    shared->cuda.stream_synchronize(shared->stream);
  });
}

void BM_CopyDtoHQueued(benchmark::State& state)
{
  auto const bytes = static_cast<std::size_t>(state.range(0));
  auto* const host = static_cast<std::byte*>(shared->target);
  swapalloc::bench::guarded(state, [&] {
    for (auto _ : state) {
      for (std::size_t at = 0; at + bytes <= max_bytes; at += bytes) {
        shared->cuda.memcpy_dtoh_async(host + at, shared->range + at, bytes, shared->stream);
      }
      shared->cuda.stream_synchronize(shared->stream);
    }
  });
  state.SetBytesProcessed(static_cast<std::int64_t>(max_bytes / bytes * bytes) *
                          state.iterations());
}

void BM_Memcpy(benchmark::State& state)
{
  auto const bytes = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    std::memcpy(shared->target, shared->source, bytes);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes) * state.iterations());
}

// Copies from 64 KiB (latency-bound) to 64 MiB (bandwidth-bound); maps in 2 MiB pages and
// up. Real time throughout: the work runs on the simulator's stream threads or the GPU.
BENCHMARK(BM_MapUnmap)->RangeMultiplier(4)->Range(2 << 20, max_bytes)->UseRealTime();
BENCHMARK(BM_CopyHtoD)->RangeMultiplier(16)->Range(64 << 10, max_bytes)->UseRealTime();
BENCHMARK(BM_CopyHtoDAsync)->RangeMultiplier(16)->Range(64 << 10, max_bytes)->UseRealTime();
BENCHMARK(BM_CopyDtoH)->RangeMultiplier(16)->Range(64 << 10, max_bytes)->UseRealTime();
BENCHMARK(BM_CopyDtoHAsync)->RangeMultiplier(16)->Range(64 << 10, max_bytes)->UseRealTime();
BENCHMARK(BM_CopyDtoHQueued)->RangeMultiplier(4)->Range(64 << 10, 4 << 20)->UseRealTime();
BENCHMARK(BM_Memcpy)->RangeMultiplier(16)->Range(64 << 10, max_bytes)->UseRealTime();

/// Context lines at the top of the report: which driver and device, which link.
void add_context(bench_device const& device)
{
  bool const simulated =
    swapalloc::bench::add_driver_context(device.cuda, device.device, device.granularity);
  if (simulated) {
    char const* link = std::getenv("SWAPALLOC_SIM_LINK_GBPS");
    benchmark::AddCustomContext("sim_link_gbps",
                                link != nullptr && *link != '\0' ? link : "unthrottled");
  }
}

}  // namespace

// A custom main (bench_main.hpp): the driver is loaded before any benchmark runs.
int main(int argc, char** argv)
{
  register_vmm_calls();
  return swapalloc::bench::run_main("bench_sim", argc, argv, [](driver const& cuda) {
    bench_device device(cuda);
    add_context(device);
    shared = &device;
    benchmark::RunSpecifiedBenchmarks();
    shared = nullptr;
  });
}
