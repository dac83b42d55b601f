// bench_swap: the swap tier's eviction and restore of a pool of 256 MiB of live data,
// through swapalloc::driver (the simulator, or a GPU under tools/gpu-check).
//
//   BM_Evict/<kind>/<codec>    evict(pool): copy the live bytes out, unmap. Timed until
//                              evict returns (device memory free); compression runs behind
//                              it (compress_after 0) and is awaited untimed, before `ratio`
//                              is read.
//   BM_Restore/<kind>/<codec>  restore(pool): map, decompress, verify, copy back.
//   BM_Evict/bf16_weights/<codec>/pinned_ahead  as BM_Evict, with the device between its
//                              watermarks and allocator::prepin_host run untimed before
//                              each evict (the pressure monitor's pass): cold_evict_ms then
//                              is a first evict into room pinned ahead.
//   BM_Evict/bf16_weights/shuffle2+lz4/pinned_ahead/deferred  as pinned_ahead, with the
//                              library's default lazy compression (compression_policy.hpp):
//                              the copies stay raw (checksummed behind), ratio about 1.
//   BM_Evict/bf16_weights/raw/scattered/<batch|no_batch>, BM_Restore/...  the live data in
//                              64 KiB blocks with a free 64 KiB block after each (a cache of
//                              many small tensors): every block is a copy of its own, which
//                              go out up to 64 per cuMemcpyBatchAsync (batch) or one call
//                              each (no_batch: transfer_options::batch_copies off).
//   BM_SwapPools/<kind>/raw/<handle_cache|no_handle_cache>  restore one of two pools that
//                              do not fit together: its room-making evicts the other first,
//                              whose pages the restore maps again with the handle cache.
//
// Counters: link_fraction (bytes moved over the link per second / the link's bytes per
// second, measured by a plain pinned async copy of 64 MiB in the same direction, in the
// same process), moved_over_live (bytes moved / live bytes), ratio (live bytes / host
// bytes once compressed); pin_ms, vmm_ms, issue_ms, wait_ms, codec_ms (the timed phase's
// transfer_times per iteration, transfer.hpp), slabs_pinned (host slabs the evicts pinned,
// per iteration), copies and copy_calls (the timed phase's copies over the link per
// iteration, and the driver calls that issued them: a batch counts once); cold_evict_ms (the first
// evict of a fresh allocator, untimed, which pins the host store's slabs: the timed iterations run
// warm).
//
// On the simulator the link is throttled (cudasimSetLinkBandwidth) to SWAPALLOC_BENCH_LINK_GBPS
// (10^9 bytes/s, default 0.5: what a 2-core machine sustains beside one compression
// worker and the simulator's copy thread), unless a cost profile is active
// (SWAPALLOC_SIM_PROFILE=h100: tools/cudasim/README.md, "Cost profiles"): then the profile
// sets the link, and `predicted_ms` (the mean timed phase / the profile's time scale) is
// the profiled GPU's predicted time. SWAPALLOC_BENCH_SWAP_MIB sets the live data (default
// 256), SWAPALLOC_BENCH_PAGE_MIB the pools' page size (default: the allocation granularity,
// 2 MiB; issue 14 asks whether 32 MiB pages suit large pools).
#include "bench_main.hpp"
#include "cudasim.h"
#include "data_kinds.hpp"

#include <swapalloc/activation.hpp>
#include <swapalloc/allocator.hpp>
#include <swapalloc/pool_scope.hpp>

#include <benchmark/benchmark.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace {

using swapalloc::driver;
using swapalloc::testing::data_kind;
constexpr std::size_t MiB = std::size_t{1} << 20;

struct bench_device {
  driver const& cuda;
  CUdevice device;
  std::size_t live_bytes;
  std::size_t page_bytes;  ///< the pools' page size; 0: the allocation granularity
  double to_host_bytes_per_second;
  double to_device_bytes_per_second;
  double time_scale;  ///< the simulator's cost profile's scale; 0 when none is active
};
bench_device const* shared = nullptr;

/// Bytes per second of one 64 MiB pinned async copy in each direction (best of 3).
std::pair<double, double> measure_link(driver const& cuda)
{
  std::size_t const bytes = 64 * MiB;
  void* const host        = cuda.host_alloc(bytes);
  swapalloc::allocator scratch(cuda);
  CUdeviceptr const device = scratch.allocate(bytes, 0, nullptr);
  CUstream const stream    = cuda.stream_create();
  double best_out          = 0;
  double best_in           = 0;
  for (int round = 0; round < 3; ++round) {
    auto start = std::chrono::steady_clock::now();
    cuda.memcpy_dtoh_async(host, device, bytes, stream);
    cuda.stream_synchronize(stream);
    std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    best_out = std::max(best_out, static_cast<double>(bytes) / took.count());
    start    = std::chrono::steady_clock::now();
    cuda.memcpy_htod_async(device, host, bytes, stream);
    cuda.stream_synchronize(stream);
    took    = std::chrono::steady_clock::now() - start;
    best_in = std::max(best_in, static_cast<double>(bytes) / took.count());
  }
  cuda.stream_destroy(stream);
  scratch.deallocate(device, bytes, 0, nullptr);
  cuda.host_free(host);
  return {best_out, best_in};
}

/// The simulator's cost profile's time scale, named in the context; 0 when none is active.
double profile_time_scale(driver const& cuda)
{
  using get_profile = int (*)(cudasim_profile_info*);
  auto* const query = reinterpret_cast<get_profile>(cuda.find_symbol("cudasimGetProfile"));
  cudasim_profile_info info{};
  if (query == nullptr || query(&info) == 0) { return 0.0; }
  benchmark::AddCustomContext("sim_profile",
                              std::string(info.name) + " x" + std::to_string(info.time_scale));
  return info.time_scale;
}

/// Fills `pool` of `cache` with `live_bytes` of `kind` data, in blocks of 1 to 16 MiB and
/// some small ones (a model's tensors), written from the host; returns the blocks.
std::vector<std::pair<CUdeviceptr, std::size_t>> fill_pool(swapalloc::allocator& cache,
                                                           swapalloc::pool_id pool, data_kind kind)
{
  std::vector<std::pair<CUdeviceptr, std::size_t>> blocks;
  std::vector<std::byte> const data = swapalloc::testing::make_data(kind, 16 * MiB, 1);
  swapalloc::pool_scope const scope(cache, pool);
  std::vector<std::size_t> const sizes{16 * MiB, 4 * MiB, MiB / 16, 9 * MiB, 1 * MiB, 3000};
  std::size_t filled = 0;
  for (std::size_t i = 0; filled < shared->live_bytes; ++i) {
    std::size_t const bytes = std::min(sizes[i % sizes.size()], shared->live_bytes - filled);
    CUdeviceptr const ptr   = cache.allocate(bytes, 0, nullptr);
    shared->cuda.memcpy_htod(ptr, data.data() + (i * 4096) % (data.size() - bytes + 1), bytes);
    blocks.emplace_back(ptr, bytes);
    filled += bytes;
  }
  return blocks;
}

/// Fills `pool` of `cache` with `live_bytes` of `kind` data in 64 KiB blocks, each followed
/// by a 64 KiB block freed again (so the live ranges lie apart); returns the live blocks.
std::vector<std::pair<CUdeviceptr, std::size_t>> fill_scattered(swapalloc::allocator& cache,
                                                                swapalloc::pool_id pool,
                                                                data_kind kind)
{
  constexpr std::size_t block = 64 * std::size_t{1024};
  std::vector<std::pair<CUdeviceptr, std::size_t>> blocks;
  std::vector<CUdeviceptr> gaps;  // freed once all are allocated: else reused at once
  std::vector<std::byte> const data = swapalloc::testing::make_data(kind, 16 * MiB, 1);
  swapalloc::pool_scope const scope(cache, pool);
  for (std::size_t filled = 0; filled < shared->live_bytes; filled += block) {
    CUdeviceptr const ptr = cache.allocate(block, 0, nullptr);
    gaps.push_back(cache.allocate(block, 0, nullptr));
    shared->cuda.memcpy_htod(ptr, data.data() + filled % (data.size() - block + 1), block);
    blocks.emplace_back(ptr, block);
  }
  for (CUdeviceptr const gap : gaps) {
    cache.deallocate(gap, block, 0, nullptr);
  }
  return blocks;
}

/// Restores `pool` and frees `blocks`, best effort (a destructor's cleanup: the
/// allocator's destructor frees the rest).
void empty_pool(swapalloc::allocator& cache, swapalloc::pool_id pool,
                std::vector<std::pair<CUdeviceptr, std::size_t>> const& blocks) noexcept
{
  try {
    (void)cache.restore(pool, 0);
    for (auto const& [ptr, bytes] : blocks) {
      cache.deallocate(ptr, bytes, 0, nullptr);
    }
  } catch (...) {  // NOLINT(bugprone-empty-catch): see above
  }
}

/// How a benchmark's pool is laid out and swapped.
struct cycle_setup {
  bool pinned_ahead{false};  ///< between the watermarks, allocator::prepin_host before evicts
  bool deferred{false};      ///< lazy compression (the default), else compression behind
  bool scattered{false};     ///< fill_scattered's layout, else fill_pool's
  bool batch_copies{true};   ///< transfer_options::batch_copies
};

/// Allocator options compressing behind every eviction (`deferred` false), or lazily
/// with the default idle delay, with `setup`'s copy batches.
swapalloc::allocator_options allocator_options_for(cycle_setup const& setup)
{
  swapalloc::allocator_options options;
  options.compress_after =
    setup.deferred ? swapalloc::compression_settings{}.idle_delay : std::chrono::milliseconds(0);
  options.transfer.batch_copies = setup.batch_copies;
  return options;
}

/// An allocator holding `live_bytes` of `kind` data in pool "model" (fill_pool, or
/// fill_scattered).
struct filled_pool {
  filled_pool(data_kind kind, swapalloc::codec_id codec, cycle_setup const& setup)
    : cache(shared->cuda, allocator_options_for(setup))
  {
    swapalloc::pool_options options;
    options.codec     = codec;
    options.page_size = shared->page_bytes;
    pool              = cache.create_pool("model", options);
    blocks = setup.scattered ? fill_scattered(cache, pool, kind) : fill_pool(cache, pool, kind);
  }
  ~filled_pool() { empty_pool(cache, pool, blocks); }

  /// Sets the device limit so that the pool's pages are 80% of it: between the watermarks,
  /// where allocator::prepin_host pins the next eviction's room ahead.
  void between_the_watermarks()
  {
    std::size_t const mapped = cache.stats(pool, 0).reserved_bytes;
    cache.set_device_limit(0, swapalloc::device_limit{.bytes = mapped / 4 * 5});
  }
  filled_pool(filled_pool const&)            = delete;
  filled_pool& operator=(filled_pool const&) = delete;

  swapalloc::allocator cache;
  swapalloc::pool_id pool{};
  std::vector<std::pair<CUdeviceptr, std::size_t>> blocks;
};

/// A transfer's copies over the link and the driver calls that issued them.
std::pair<std::size_t, std::size_t> copy_counts(swapalloc::evict_result const& done)
{
  return {done.copies, done.copy_calls};
}
std::pair<std::size_t, std::size_t> copy_counts(swapalloc::restore_result const& done)
{
  return {done.raw_copies, done.raw_copy_calls};
}

/// Which half of an evict + restore cycle a benchmark times.
enum class timed_phase { evict, restore };

/// predicted_ms (under a cost profile), cold_evict_ms and the phases' milliseconds per
/// iteration, of the profiled GPU when a cost profile is active.
void set_time_counters(benchmark::State& state, double timed_seconds, double cold_seconds,
                       swapalloc::transfer_times const& phases)
{
  double const iterations = static_cast<double>(state.iterations());
  double const to_ms      = 1e3 / (shared->time_scale > 0 ? shared->time_scale : 1.0) / iterations;
  if (shared->time_scale > 0) { state.counters["predicted_ms"] = timed_seconds * to_ms; }
  state.counters["cold_evict_ms"] = cold_seconds * to_ms * iterations;
  state.counters["pin_ms"]        = phases.pin * to_ms;
  state.counters["vmm_ms"]        = phases.vmm * to_ms;
  state.counters["issue_ms"]      = phases.issue * to_ms;
  state.counters["wait_ms"]       = phases.wait * to_ms;
  state.counters["codec_ms"]      = phases.codec * to_ms;
}

/// What swap_cycles sums over its timed iterations.
struct cycle_sums {
  std::size_t moved{0};  ///< bytes over the link, in the timed phase
  std::size_t live{0};   ///< live bytes evicted
  std::size_t host{0};   ///< host bytes held once compressed
  std::size_t slabs{0};  ///< host slabs pinned by the evicts
  std::size_t copies{0};
  std::size_t copy_calls{0};
  double seconds{0};
  swapalloc::transfer_times phases;
};

/// swap_cycles' counters but the times: link_fraction, moved_over_live, ratio, link_GBps,
/// slabs_pinned, copies and copy_calls.
void set_cycle_counters(benchmark::State& state, timed_phase phase, cycle_sums const& sums)
{
  double const link = phase == timed_phase::evict ? shared->to_host_bytes_per_second
                                                  : shared->to_device_bytes_per_second;
  auto const per = [](std::size_t part, double whole) { return static_cast<double>(part) / whole; };
  double const iterations           = static_cast<double>(state.iterations());
  state.counters["link_fraction"]   = per(sums.moved, sums.seconds) / link;
  state.counters["moved_over_live"] = per(sums.moved, static_cast<double>(sums.live));
  state.counters["ratio"] = sums.host == 0 ? 0.0 : per(sums.live, static_cast<double>(sums.host));
  state.counters["link_GBps"]    = link / 1e9;
  state.counters["slabs_pinned"] = per(sums.slabs, iterations);
  state.counters["copies"]       = per(sums.copies, iterations);
  state.counters["copy_calls"]   = per(sums.copy_calls, iterations);
}

/**
 * Runs one untimed (cold) cycle, then evict + restore cycles of a filled pool, timing
 * `phase` only. Compression behind the eviction is awaited untimed before the host bytes
 * (`ratio`) are read. Counters: link_fraction (bytes moved in the timed phase per timed
 * second / the link's rate in that direction), moved_over_live, ratio, the phases of
 * transfer_times and cold_evict_ms (file comment); bytes_per_second counts live bytes.
 */
void swap_cycles(benchmark::State& state, data_kind kind, swapalloc::codec_id codec,
                 timed_phase phase, cycle_setup const& setup = {})
{
  swapalloc::bench::guarded(state, [&] {
    if (!swapalloc::codec_available(codec)) {
      state.SkipWithError("codec not built in");
      return;
    }
    filled_pool filled(kind, codec, setup);
    if (setup.pinned_ahead) { filled.between_the_watermarks(); }
    auto const pin_ahead = [&] {  // untimed, before each evict: the monitor's pass
      if (setup.pinned_ahead) { (void)filled.cache.prepin_host(0); }
    };
    cycle_sums sums;
    auto const timed = [&](auto&& step) {
      auto const start                         = std::chrono::steady_clock::now();
      auto done                                = step();
      std::chrono::duration<double> const took = std::chrono::steady_clock::now() - start;
      state.SetIterationTime(took.count());
      sums.seconds += took.count();
      sums.moved += done.bytes_copied;
      sums.phases += done.times;
      auto const [count, calls] = copy_counts(done);
      sums.copies += count;
      sums.copy_calls += calls;
      return done;
    };
    auto const evict   = [&] { return filled.cache.evict(filled.pool, 0); };
    auto const restore = [&] { return filled.cache.restore(filled.pool, 0); };
    pin_ahead();
    auto const start = std::chrono::steady_clock::now();
    (void)evict();  // cold: the host store pins its slabs, unless they were pinned ahead
    std::chrono::duration<double> const cold = std::chrono::steady_clock::now() - start;
    filled.cache.wait_for_compression(filled.pool);
    (void)restore();
    for (auto _ : state) {
      pin_ahead();
      swapalloc::evict_result const out = phase == timed_phase::evict ? timed(evict) : evict();
      sums.live += out.live_bytes;
      sums.slabs += out.slabs_pinned;
      filled.cache.wait_for_compression(filled.pool);
      sums.host += filled.cache.stats(filled.pool, 0).host_bytes;
      if (phase == timed_phase::restore) {
        (void)timed(restore);
      } else {
        (void)restore();
      }
    }
    set_cycle_counters(state, phase, sums);
    set_time_counters(state, sums.seconds, cold.count(), sums.phases);
    state.SetBytesProcessed(static_cast<std::int64_t>(sums.live));  // over the iterations
  });
}

void BM_Evict(benchmark::State& state, data_kind kind, swapalloc::codec_id codec)
{
  swap_cycles(state, kind, codec, timed_phase::evict);
}

/// BM_Evict with the device between the watermarks and allocator::prepin_host called
/// (untimed) before each evict, the cold one included, as the pressure monitor does.
void BM_EvictPinnedAhead(benchmark::State& state, data_kind kind, swapalloc::codec_id codec)
{
  swap_cycles(state, kind, codec, timed_phase::evict, cycle_setup{.pinned_ahead = true});
}

/// BM_EvictPinnedAhead with lazy compression: the copies stay raw, checksummed behind.
void BM_EvictPinnedAheadDeferred(benchmark::State& state, data_kind kind, swapalloc::codec_id codec)
{
  swap_cycles(state, kind, codec, timed_phase::evict,
              cycle_setup{.pinned_ahead = true, .deferred = true});
}

void BM_Restore(benchmark::State& state, data_kind kind, swapalloc::codec_id codec)
{
  swap_cycles(state, kind, codec, timed_phase::restore);
}

/// BM_Evict or BM_Restore (`phase`) of raw bf16 weights laid out by fill_scattered, with
/// copy batches or without.
void BM_Scattered(benchmark::State& state, timed_phase phase, bool batch_copies)
{
  swap_cycles(state, data_kind::bf16_weights, swapalloc::codec_id::raw, phase,
              cycle_setup{.scattered = true, .batch_copies = batch_copies});
}

/**
 * BM_SwapPools/<kind>/raw/<handle_cache|no_handle_cache>: two pools of `live_bytes` raw
 * data under a device limit of 1.5 × live_bytes, so that only one fits; each iteration
 * restores the evicted pool, whose room-making evicts 7/8 of the other first (issue 14:
 * evicting A to restore B). The restore is timed (both transfers). Counters: predicted_ms
 * (under a cost profile), handle_hits (pages the restore mapped from the evicted ones,
 * per iteration; 0 without the cache), link_fraction (bytes restored plus the bytes of
 * the other pool's pages evicted, per timed second / the host-to-device link).
 */
void BM_SwapPools(benchmark::State& state, data_kind kind, bool handle_cache)
{
  swapalloc::bench::guarded(state, [&] {
    swapalloc::allocator_options options;
    options.device_limit       = swapalloc::device_limit{shared->live_bytes / 2 * 3, 1.0};
    options.handle_cache_bytes = handle_cache ? std::numeric_limits<std::size_t>::max() : 0;
    swapalloc::allocator cache(shared->cuda, options);
    swapalloc::pool_options raw;
    raw.codec     = swapalloc::codec_id::raw;
    raw.page_size = shared->page_bytes;
    std::array<swapalloc::pool_id, 2> const pools{cache.create_pool("a", raw),
                                                  cache.create_pool("b", raw)};
    auto const a_blocks = fill_pool(cache, pools[0], kind);
    (void)cache.evict(pools[0], 0);
    auto const b_blocks = fill_pool(cache, pools[1], kind);
    std::size_t turn    = 0;
    (void)cache.restore(pools[turn++ % 2], 0);  // untimed: the host store is warm after it
    std::size_t const hits_before = cache.handle_stats(0).hits;
    double seconds                = 0;
    std::size_t moved             = 0;
    for (auto _ : state) {
      swapalloc::pool_id const other           = pools[(turn + 1) % 2];
      std::size_t const out_before             = cache.stats(other, 0).evicted_bytes;
      auto const start                         = std::chrono::steady_clock::now();
      swapalloc::restore_result const done     = cache.restore(pools[turn++ % 2], 0);
      std::chrono::duration<double> const took = std::chrono::steady_clock::now() - start;
      state.SetIterationTime(took.count());
      seconds += took.count();
      moved += done.bytes_copied + (cache.stats(other, 0).evicted_bytes - out_before);
    }
    double const per_iteration = 1.0 / static_cast<double>(state.iterations());
    state.counters["handle_hits"] =
      static_cast<double>(cache.handle_stats(0).hits - hits_before) * per_iteration;
    state.counters["link_fraction"] =
      static_cast<double>(moved) / seconds / shared->to_device_bytes_per_second;
    if (shared->time_scale > 0) {
      state.counters["predicted_ms"] = seconds * 1e3 / shared->time_scale * per_iteration;
    }
    cache.wait_for_compression(pools[0]);
    empty_pool(cache, pools[0], a_blocks);
    empty_pool(cache, pools[1], b_blocks);
  });
}

/// BM_Evict and BM_Restore of bf16_weights/raw/scattered, with copy batches and without.
void register_scattered()
{
  for (bool const batch : {true, false}) {
    for (timed_phase const phase : {timed_phase::evict, timed_phase::restore}) {
      std::string const name =
        std::string(phase == timed_phase::evict ? "BM_Evict" : "BM_Restore") +
        "/bf16_weights/raw/scattered/" + (batch ? "batch" : "no_batch");
      benchmark::RegisterBenchmark(name.c_str(), BM_Scattered, phase, batch)
        ->UseManualTime()
        ->Iterations(3)
        ->Unit(benchmark::kMillisecond);
    }
  }
}

void register_all()
{
  using swapalloc::codec_id;
  struct combination {
    data_kind kind;
    std::vector<codec_id> codecs;
  };
  std::vector<combination> const matrix{
    {data_kind::bf16_weights,
     {codec_id::raw, codec_id::lz4, codec_id::shuffle2_lz4, codec_id::zstd,
      codec_id::shuffle2_zstd}},
    {data_kind::fp32_weights, {codec_id::shuffle4_lz4, codec_id::shuffle4_zstd}},
    {data_kind::bf16_activations, {codec_id::lz4, codec_id::shuffle2_lz4}},
    {data_kind::zeros, {codec_id::lz4}},
    {data_kind::random_bytes, {codec_id::lz4}},
  };
  for (bool const cache : {true, false}) {
    std::string const name =
      std::string("BM_SwapPools/bf16_weights/raw/") + (cache ? "handle_cache" : "no_handle_cache");
    benchmark::RegisterBenchmark(name.c_str(), BM_SwapPools, data_kind::bf16_weights, cache)
      ->UseManualTime()
      ->Iterations(4)
      ->Unit(benchmark::kMillisecond);
  }
  for (codec_id const codec : {codec_id::raw, codec_id::shuffle2_lz4}) {
    std::string const name =
      "BM_Evict/bf16_weights/" + std::string(to_string(codec)) + "/pinned_ahead";
    benchmark::RegisterBenchmark(name.c_str(), BM_EvictPinnedAhead, data_kind::bf16_weights, codec)
      ->UseManualTime()
      ->Iterations(3)
      ->Unit(benchmark::kMillisecond);
  }
  std::string const deferred = "BM_Evict/bf16_weights/" +
                               std::string(to_string(codec_id::shuffle2_lz4)) +
                               "/pinned_ahead/deferred";
  benchmark::RegisterBenchmark(deferred.c_str(), BM_EvictPinnedAheadDeferred,
                               data_kind::bf16_weights, codec_id::shuffle2_lz4)
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);
  register_scattered();
  for (auto const& [kind, codecs] : matrix) {
    for (codec_id codec : codecs) {
      std::string const suffix =
        std::string(swapalloc::testing::to_string(kind)) + "/" + std::string(to_string(codec));
      benchmark::RegisterBenchmark(("BM_Evict/" + suffix).c_str(), BM_Evict, kind, codec)
        ->UseManualTime()
        ->Iterations(3)
        ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("BM_Restore/" + suffix).c_str(), BM_Restore, kind, codec)
        ->UseManualTime()
        ->Iterations(3)
        ->Unit(benchmark::kMillisecond);
    }
  }
}

}  // namespace

int main(int argc, char** argv)
{
  register_all();
  return swapalloc::bench::run_main("bench_swap", argc, argv, [](driver const& cuda) {
    swapalloc::bench::with_primary_context(cuda, [&](CUdevice device, CUcontext) {
      bool const simulated =
        swapalloc::bench::add_driver_context(cuda, device, cuda.allocation_granularity(device));
      double const time_scale = simulated ? profile_time_scale(cuda) : 0.0;
      if (simulated && time_scale == 0) {
        double const gbps = swapalloc::bench::env_number("SWAPALLOC_BENCH_LINK_GBPS", 0.5);
        using set_link    = void (*)(double);
        reinterpret_cast<set_link>(cuda.find_symbol("cudasimSetLinkBandwidth"))(gbps);
      }
      std::size_t const live =
        static_cast<std::size_t>(swapalloc::bench::env_number("SWAPALLOC_BENCH_SWAP_MIB", 256)) *
        MiB;
      std::size_t const page =
        static_cast<std::size_t>(swapalloc::bench::env_number("SWAPALLOC_BENCH_PAGE_MIB", 0)) * MiB;
      auto const [out, in] = measure_link(cuda);
      benchmark::AddCustomContext("link_to_host_GBps", std::to_string(out / 1e9));
      benchmark::AddCustomContext("link_to_device_GBps", std::to_string(in / 1e9));
      benchmark::AddCustomContext("live_MiB", std::to_string(live / MiB));
      benchmark::AddCustomContext("page_MiB", std::to_string(page / MiB));
      bench_device const loaded{cuda, device, live, page, out, in, time_scale};
      swapalloc::bench::run_benchmarks_with(shared, loaded);
    });
  });
}
