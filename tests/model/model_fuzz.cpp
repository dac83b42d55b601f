// The model test's fuzz harness (libFuzzer's entry points; model_fuzz_replay.cpp drives it
// without libFuzzer). Each input is decoded into ops (byte_ops, model_ops.hpp: 10 bytes an
// op, at most 64 ops) and run single-threaded through the model runner on a fresh
// allocator, with a final checkpoint and clean-up (run_single, model_session.hpp). Any
// broken rule (wrong bytes, check() not empty, a failure no fault explains, the driver's
// census off the allocator's count), or any driver object left behind once the allocator
// is destroyed, prints the ops and aborts.
//
// The simulator is loaded from the build (SWAPALLOC_CUDA_DRIVER, unless set) with a
// 64 MiB device (SWAPALLOC_SIM_MEMORY, unless set), as model_tests runs.
#include "model_fuzz_input.hpp"
#include "model_session.hpp"

#include "driver_support.hpp"
#include "sim_control.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

namespace {

using namespace swapalloc::testing::model;

/// The process's driver with device 0's primary context current, made once.
struct fuzz_process {
  fuzz_process() : drv(swapalloc::testing::shared_driver()), sim(drv)
  {
    drv.set_current_context(drv.retain_primary_context(drv.device(0)));
    if (!sim.available()) {
      std::fprintf(stderr, "model_fuzz: %s is not the simulator\n", drv.library().c_str());
      std::abort();
    }
  }
  swapalloc::driver& drv;
  swapalloc::testing::sim_control sim;
};

fuzz_process& process()
{
  static fuzz_process instance;
  return instance;
}

/// Aborts unless the driver holds what it held before the input (streams and events are
/// reclaimed by their workers shortly after destruction: waited for).
void expect_nothing_left(cudasim_census const& before, std::span<std::uint8_t const> input)
{
  auto const same = [&] {
    cudasim_census const now = process().sim.census();
    return now.handles == before.handles && now.reservations == before.reservations &&
           now.mappings == before.mappings && now.host_allocations == before.host_allocations &&
           now.host_registrations == before.host_registrations && now.streams == before.streams &&
           now.events == before.events;
  };
  if (swapalloc::testing::wait_until(same, std::chrono::seconds(2))) { return; }
  cudasim_census const now = process().sim.census();
  std::fprintf(stderr,
               "model_fuzz: the destroyed allocator left driver objects behind (input of %zu "
               "bytes): handles %zu (was %zu), reservations %zu (%zu), mappings %zu (%zu), host "
               "allocations %zu (%zu), host registrations %zu (%zu), streams %zu (%zu), events "
               "%zu (%zu)\n",
               input.size(), now.handles, before.handles, now.reservations, before.reservations,
               now.mappings, before.mappings, now.host_allocations, before.host_allocations,
               now.host_registrations, before.host_registrations, now.streams, before.streams,
               now.events, before.events);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***)
{
  ::setenv("SWAPALLOC_CUDA_DRIVER", SWAPALLOC_MODEL_CUDASIM, 0);
  ::setenv("SWAPALLOC_SIM_MEMORY", "64M", 0);
  ::setenv("SWAPALLOC_SIM_QUIET", "1", 0);
  (void)process();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
  if (size < op_bytes) { return 0; }
  (void)LLVMFuzzerInitialize(nullptr, nullptr);  // a no-op after the first call
  std::span<std::uint8_t const> const input(data, size);
  byte_ops source(input);
  std::size_t const count     = std::min(size / op_bytes, max_fuzz_ops);
  cudasim_census const before = process().sim.census();
  single_run const run        = run_single(
           process().drv, process().sim, seed_of(input),
           [&] {
      op o;
      (void)source.next(o);
      return o;
    },
           count, max_fuzz_ops);
  if (run.failure) {
    std::fprintf(stderr, "model_fuzz: failed at op #%zu of %zu: %s\nops:\n%s", run.failure->index,
                 count, run.failure->message.c_str(), run.failure->history.c_str());
    std::abort();
  }
  expect_nothing_left(before, input);
  return 0;
}
