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
 *   BM_RepeatRequest               seed 001's repeated request: a model of
 *                                  SWAPALLOC_BENCH_REPEAT_MIB (default 256) MiB of real bf16
 *                                  weights (weights.hpp: what tools/fetch-weights fetched
 *                                  into <build>/weights, else ../shared/data, else generated;
 *                                  the label names it) in a pool with dtype hint bf16, brought
 *                                  back two ways each iteration: (a) restore from the host
 *                                  store after an untimed evict (the time column), and (b)
 *                                  what auto_unload=True costs: read the same bytes from a
 *                                  file (written once, its pages dropped from the page cache
 *                                  before each read) into a host buffer, then cuMemcpyHtoD
 *                                  into the pool's blocks. Goal: restore_speedup >= 5.
 *     restore_speedup              (b)'s time / (a)'s time, summed over the iterations.
 *     speedup_bound                (b)'s time / (b)'s copy time = 1 + read / copy:
 *                                  restore_speedup if the restore ran at the speed of a
 *                                  plain copy over the same link. A restore's bytes cross
 *                                  the link uncompressed, so this bounds restore_speedup,
 *                                  and the goal of 5 needs read >= 4 × copy: a disk at most
 *                                  a quarter as fast as the link. Printed after the goal.
 *     restore_GBps, disk_read_GBps, htod_GBps   pool bytes per second of (a), of (b)'s read
 *                                  and of (b)'s copy (10^9 bytes/s).
 *     ratio                        pool bytes / host bytes once compressed.
 *     page_cache_left              fraction of the file's pages still cached after the drop
 *                                  (mincore), averaged: 0 when the reads really hit the disk.
 *     real_weights                 1 for real trained weights, 0 for generated ones.
 *     The file lies in SWAPALLOC_BENCH_FILE_DIR (default: the build directory; /tmp may be
 *     a RAM disk). The allocator uses the default compression workers (cores - 1) here: what
 *     a user gets. The restore is checked bit-identical once, and every read's bytes.
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
 * SWAPALLOC_BENCH_POLICY_MIB sets pool "background"'s live data (default 64),
 * SWAPALLOC_BENCH_REPEAT_MIB BM_RepeatRequest's model (default 256).
 *
 * Exit status: 0 done; 1 a CUDA call failed outside a benchmark; 2 no usable driver.
 */
#include <swapalloc/activation.hpp>
#include <swapalloc/allocator.hpp>
#include <swapalloc/driver.hpp>
#include <swapalloc/pool_scope.hpp>

#include "bench_main.hpp"
#include "weights.hpp"

#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
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
  std::size_t repeat_bytes;      // BM_RepeatRequest's model
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

// ------------------------------------------------------------------ BM_RepeatRequest

/// Seconds `work()` takes (wall clock).
template <class Work>
double seconds_of(Work&& work)
{
  auto const start = std::chrono::steady_clock::now();
  std::forward<Work>(work)();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// A std::runtime_error naming `what` and errno's message.
std::runtime_error system_error(std::string const& what)
{
  return std::runtime_error(what + ": " + std::strerror(errno));
}

/**
 * A file of bytes on disk, the model file auto_unload=True reads back at each request:
 * written and fdatasync'd once, removed at destruction. Thread safety: none needed.
 */
class disk_file {
 public:
  disk_file(std::filesystem::path path, std::span<std::byte const> bytes) : path_(std::move(path))
  {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd_ < 0) { throw system_error(path_.string() + ": cannot create"); }
    for (std::size_t done = 0; done < bytes.size();) {
      ssize_t const wrote = ::write(fd_, bytes.data() + done, bytes.size() - done);
      if (wrote <= 0) { throw system_error(path_.string() + ": cannot write"); }
      done += static_cast<std::size_t>(wrote);
    }
    if (::fdatasync(fd_) != 0) { throw system_error(path_.string() + ": fdatasync"); }
  }
  ~disk_file()
  {
    ::close(fd_);
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  disk_file(disk_file const&)            = delete;
  disk_file& operator=(disk_file const&) = delete;

  [[nodiscard]] std::filesystem::path const& path() const noexcept { return path_; }

  /// Asks the kernel to drop the file's pages from the page cache (they are clean: written
  /// back by fdatasync first), so that the next read goes to the disk. Linux honours
  /// POSIX_FADV_DONTNEED for clean, unmapped pages; `cached_fraction` checks that it did.
  void drop_cache() const
  {
    if (::fdatasync(fd_) != 0) { throw system_error(path_.string() + ": fdatasync"); }
    int const error = ::posix_fadvise(fd_, 0, 0, POSIX_FADV_DONTNEED);
    if (error != 0) {
      throw std::runtime_error(path_.string() + ": posix_fadvise: " + std::strerror(error));
    }
  }

  /// The fraction of the file's pages in the page cache now (mincore on a mapping, which
  /// reads nothing in).
  [[nodiscard]] double cached_fraction() const
  {
    auto const size = static_cast<std::size_t>(::lseek(fd_, 0, SEEK_END));
    if (size == 0) { return 0; }
    void* const mapped = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd_, 0);
    if (mapped == MAP_FAILED) { throw system_error(path_.string() + ": mmap"); }
    auto const page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> resident((size + page - 1) / page);
    int const status = ::mincore(mapped, size, resident.data());
    ::munmap(mapped, size);
    if (status != 0) { throw system_error(path_.string() + ": mincore"); }
    auto const cached = std::count_if(resident.begin(), resident.end(),
                                      [](unsigned char flags) { return (flags & 1U) != 0; });
    return static_cast<double>(cached) / static_cast<double>(resident.size());
  }

  /// Reads the whole file into `out` (its size) through a descriptor of its own, as a
  /// loader does.
  void read_into(std::span<std::byte> out) const
  {
    int const fd = ::open(path_.c_str(), O_RDONLY);
    if (fd < 0) { throw system_error(path_.string() + ": cannot open"); }
    std::size_t done = 0;
    while (done < out.size()) {
      ssize_t const got = ::read(fd, out.data() + done, out.size() - done);
      if (got <= 0) { break; }
      done += static_cast<std::size_t>(got);
    }
    ::close(fd);
    if (done != out.size()) {
      throw std::runtime_error(path_.string() + ": read " + std::to_string(done) + " of " +
                               std::to_string(out.size()) + " bytes");
    }
  }

 private:
  std::filesystem::path path_;
  int fd_{-1};
};

/// BM_RepeatRequest's model: `image` in blocks of at most 64 MiB of pool "model" (dtype
/// hint bf16, the codec the library picks for bf16 weights), on an allocator with the
/// default compression workers.
struct repeat_model {
  explicit repeat_model(std::span<std::byte const> image)
    : cache(shared->cuda, [] {
        swapalloc::allocator_options options = bench_options();
        options.workers                      = 0;  // the library's default: cores - 1
        return options;
      }())
  {
    swapalloc::pool_options options;
    options.dtype = swapalloc::dtype_hint::bf16;
    pool          = cache.create_pool("model", options);
    swapalloc::pool_scope const scope(cache, pool);
    for (std::size_t done = 0; done < image.size();) {
      std::size_t const size = std::min(64 * MiB, image.size() - done);
      blocks.emplace_back(cache.allocate(size, 0, nullptr), size);
      done += size;
    }
    upload(image);
  }
  ~repeat_model()
  {
    for (auto const& [ptr, size] : blocks) {
      try {
        cache.deallocate(ptr, size, 0, nullptr);
      } catch (...) {  // NOLINT(bugprone-empty-catch): the allocator's destructor frees it
      }
    }
  }
  repeat_model(repeat_model const&)            = delete;
  repeat_model& operator=(repeat_model const&) = delete;

  /// Copies `image` into the blocks (cuMemcpyHtoD, from pageable memory).
  void upload(std::span<std::byte const> image) const
  {
    std::size_t done = 0;
    for (auto const& [ptr, size] : blocks) {
      shared->cuda.memcpy_htod(ptr, image.data() + done, size);
      done += size;
    }
  }

  /// Whether the blocks hold `image` (cuMemcpyDtoH, block by block).
  [[nodiscard]] bool holds(std::span<std::byte const> image) const
  {
    std::vector<std::byte> back(64 * MiB);
    std::size_t done = 0;
    for (auto const& [ptr, size] : blocks) {
      shared->cuda.memcpy_dtoh(back.data(), ptr, size);
      if (std::memcmp(back.data(), image.data() + done, size) != 0) { return false; }
      done += size;
    }
    return true;
  }

  swapalloc::allocator cache;
  swapalloc::pool_id pool{};
  std::vector<std::pair<CUdeviceptr, std::size_t>> blocks;
};

/// Where BM_RepeatRequest's file goes: SWAPALLOC_BENCH_FILE_DIR, else the build directory.
std::filesystem::path repeat_file_dir()
{
  char const* const named = std::getenv("SWAPALLOC_BENCH_FILE_DIR");
  return named != nullptr && *named != '\0' ? std::filesystem::path(named)
                                            : std::filesystem::path(SWAPALLOC_BUILD_DIR);
}

/// Seconds summed over BM_RepeatRequest's iterations.
struct repeat_totals {
  double restore{0};
  double read{0};
  double copy{0};
  double cached{0};  // page_cache_left, summed
  std::size_t host_bytes{0};
};

/// BM_RepeatRequest's counters from its totals over `iterations` of `bytes`.
void set_repeat_counters(benchmark::State& state, repeat_totals const& totals, std::size_t bytes,
                         bool real)
{
  auto const moved = static_cast<double>(bytes) * static_cast<double>(state.iterations());
  state.counters["restore_speedup"] = (totals.read + totals.copy) / totals.restore;
  state.counters["speedup_bound"]   = (totals.read + totals.copy) / totals.copy;
  state.counters["restore_GBps"]    = moved / totals.restore / 1e9;
  state.counters["disk_read_GBps"]  = moved / totals.read / 1e9;
  state.counters["htod_GBps"]       = moved / totals.copy / 1e9;
  state.counters["ratio"]           = moved / static_cast<double>(totals.host_bytes);
  state.counters["page_cache_left"] = totals.cached / static_cast<double>(state.iterations());
  state.counters["real_weights"]    = real ? 1.0 : 0.0;
}

/// Seed 001's repeated request: restore from the host store against reloading from disk.
/// See the file comment. Throws if a restore or a read does not give the model's bytes back.
void BM_RepeatRequest(benchmark::State& state)
{
  swapalloc::bench::guarded(state, [&] {
    std::size_t const bytes = shared->repeat_bytes;
    auto const weights =
      swapalloc::scenarios::weight_source::find({}, std::filesystem::path(SWAPALLOC_BUILD_DIR));
    std::vector<std::byte> image(bytes);
    weights.fill(image, swapalloc::scenarios::weight_dtype::bf16, 1);
    disk_file const file(repeat_file_dir() / "bench_policy_repeat_request.bin", image);
    repeat_model model(image);
    std::vector<std::byte> loaded(bytes, std::byte{1});  // the reload's buffer, touched once
    repeat_totals totals;
    for (auto _ : state) {
      (void)model.cache.evict(model.pool, 0);
      model.cache.wait_for_compression(model.pool);
      totals.host_bytes += model.cache.stats(model.pool, 0).host_bytes;
      double const restore = seconds_of([&] { (void)model.cache.restore(model.pool, 0); });
      if (totals.restore == 0 && !model.holds(image)) {
        throw std::logic_error("the restored pool differs from the model's bytes");
      }
      file.drop_cache();
      totals.cached += file.cached_fraction();
      totals.read += seconds_of([&] { file.read_into(loaded); });
      totals.copy += seconds_of([&] { model.upload(loaded); });
      if (loaded != image) { throw std::logic_error(file.path().string() + ": read back wrong"); }
      totals.restore += restore;
      state.SetIterationTime(restore);
    }
    set_repeat_counters(state, totals, bytes, weights.real());
    state.SetLabel(weights.description() + "; file " + file.path().string());
  });
}

BENCHMARK(BM_HotPath)->Arg(4096)->UseRealTime();
// At least 2 s: its time is a few long waits (each a whole evict or restore) spread over
// many fast pairs, so a run must span several cycles to be stable.
BENCHMARK(BM_HotPathDuringEvict)->Arg(4096)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_AllocateUnderPressure)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ExplicitEvictAllocate)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ActivateResident)->UseRealTime();
// Three iterations of a few seconds each (evict, restore, read, copy of 256 MiB), as
// bench_swap's; the time column is the restore's.
BENCHMARK(BM_RepeatRequest)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);

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
        for (auto const& [name, counter] : run.counters) {
          counters_[run.run_name.function_name + "." + name] = counter.value;
        }
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

  /// "<name> <counter> = x (goal >= g)", or nothing when it did not run.
  void print_counter_at_least(char const* name, char const* counter, double goal) const
  {
    auto const found = counters_.find(std::string(name) + "." + counter);
    if (found == counters_.end()) { return; }
    std::printf("%s %s = %.3g (goal >= %g): %s\n", name, counter, found->second, goal,
                found->second >= goal ? "met" : "missed");
  }

  /// "<name> <counter> = x: <meaning>", or nothing when it did not run.
  void print_counter(char const* name, char const* counter, char const* meaning) const
  {
    auto const found = counters_.find(std::string(name) + "." + counter);
    if (found == counters_.end()) { return; }
    std::printf("%s %s = %.3g: %s\n", name, counter, found->second, meaning);
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
  std::map<std::string, double> counters_;  // "<function name>.<counter>"
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
      auto const repeat =
        static_cast<std::size_t>(swapalloc::bench::env_number("SWAPALLOC_BENCH_REPEAT_MIB", 256)) *
        MiB;
      bench_device const loaded{cuda, background, repeat};
      ratio_reporter reporter;
      swapalloc::bench::run_benchmarks_with(shared, loaded, &reporter);
      reporter.print_ratio("BM_HotPathDuringEvict", "BM_HotPath", 2.0);
      reporter.print_ratio("BM_AllocateUnderPressure", "BM_ExplicitEvictAllocate", 1.1);
      reporter.print_time("BM_ActivateResident", 1.0);
      reporter.print_counter_at_least("BM_RepeatRequest", "restore_speedup", 5.0);
      reporter.print_counter(
        "BM_RepeatRequest", "speedup_bound",
        "the most a restore at the link's speed reaches with this disk and "
        "link (1 + read / copy); 5 needs a disk a quarter as fast as the link");
    });
  });
}
