/**
 * @file bench_main.hpp
 * @brief What every bench_* program does around its benchmarks: load the driver before any
 *        benchmark runs (so a machine without one gets the seam's message and exit status
 *        2, not a crash), name the driver and device at the top of the report, and map
 *        failures to exit statuses (0 done, 1 a CUDA call failed outside a benchmark,
 *        2 no usable driver, 1 an unrecognized option).
 */
#pragma once

#include <swapalloc/driver.hpp>

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>

namespace swapalloc::bench {

/// The positive number in environment variable `name`, else `fallback` when it is unset
/// or empty. @throws std::invalid_argument naming the variable and its value otherwise.
inline double env_number(char const* name, double fallback)
{
  char const* const text = std::getenv(name);
  if (text == nullptr || *text == '\0') { return fallback; }
  char* end          = nullptr;
  double const value = std::strtod(text, &end);
  if (end == text || *end != '\0' || value <= 0) {
    throw std::invalid_argument(std::string(name) + "='" + text + "': expected a positive number");
  }
  return value;
}

/// Context lines at the top of the report: which driver and device. Returns whether the
/// loaded driver is the simulator (its control API is present).
inline bool add_driver_context(driver const& cuda, CUdevice device, std::size_t granularity)
{
  benchmark::AddCustomContext("driver", cuda.library());
  bool const simulated = cuda.find_symbol("cudasimGetCensus") != nullptr;
  benchmark::AddCustomContext("driver_kind", simulated ? "cudasim simulator" : "CUDA driver");
  benchmark::AddCustomContext("device", cuda.device_name(device));
  benchmark::AddCustomContext("granularity", std::to_string(granularity));
  return simulated;
}

/// Runs a benchmark body; an exception (a failing driver call, a bad setting) ends that
/// benchmark with its message instead of escaping through Google Benchmark's runner.
template <class Body>
void guarded(benchmark::State& state, Body&& body)
{
  try {
    std::forward<Body>(body)();
  } catch (std::exception const& error) {
    state.SkipWithError(error.what());
  }
}

/**
 * @brief Calls `body(device, context)` with device 0's primary context retained and
 *        current; afterwards no context is current and the context is released, also
 *        (best effort) when `body` throws, which is then rethrown.
 */
template <typename Body>
void with_primary_context(driver const& cuda, Body&& body)
{
  CUdevice const device   = cuda.device(0);
  CUcontext const context = cuda.retain_primary_context(device);
  try {
    cuda.set_current_context(context);
    std::forward<Body>(body)(device, context);
    cuda.set_current_context(nullptr);
  } catch (...) {
    (void)cuda.table().cuCtxSetCurrent(nullptr);
    (void)cuda.table().cuDevicePrimaryCtxRelease(device);
    throw;
  }
  cuda.release_primary_context(device);
}

/// Runs the specified benchmarks with `shared` (what they read) pointing at `loaded`, and
/// null again afterwards, however they end. `display` (when not null) replaces the
/// reporter --benchmark_format chooses, for a program that reads the results afterwards.
template <typename Shared>
void run_benchmarks_with(Shared const*& shared, Shared const& loaded,
                         benchmark::BenchmarkReporter* display = nullptr)
{
  struct reset {
    Shared const*& slot;
    ~reset() { slot = nullptr; }
  } const guard{shared};
  shared = &loaded;
  if (display == nullptr) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    benchmark::RunSpecifiedBenchmarks(display);
  }
}

/**
 * @brief The body of a bench program's main: parses the options, loads the driver, calls
 *        `run(cuda)` (which sets up what the benchmarks share and runs them), and reports a
 *        failure on stderr under `program`'s name. @return the exit status.
 */
template <typename Run>
int run_main(char const* program, int argc, char** argv, Run&& run)
{
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) { return 1; }
  try {
    driver const cuda;
    run(cuda);
  } catch (driver_unavailable const& error) {
    std::fprintf(stderr, "%s: %s\n", program, error.what());
    return 2;
  } catch (std::exception const& error) {
    std::fprintf(stderr, "%s: %s\n", program, error.what());
    return 1;
  }
  benchmark::Shutdown();
  return 0;
}

}  // namespace swapalloc::bench
