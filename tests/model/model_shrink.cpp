// model_shrink: shrinks a failing single-threaded model run to a minimal op sequence.
//
//   model_shrink SEED OPS     replays the first OPS ops of ModelTest.SingleThreaded's seed
//                             SEED (checkpoints included, as the test schedules them), then
//                             drops ops while the failure keeps its signature (delta
//                             debugging: halves, quarters, ... single ops), then drops the
//                             faults of the ops that remain where it can, and prints the
//                             minimal sequence with what each op did.
//   model_shrink --bytes FILE shrinks a fuzzer input (model_fuzz) the same way.
//
// A tool, not a test: each candidate runs on a fresh allocator in this process; a sticky
// driver error left by a failed candidate is cleared with a primary context reset. The
// minimal sequences become named tests in model_regression_test.cpp, written by hand.
#include "model_fuzz_input.hpp"
#include "model_session.hpp"

#include "driver_support.hpp"
#include "sim_control.hpp"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

namespace {

using namespace swapalloc::testing::model;
using swapalloc::testing::sim_control;

/// Runs `ops` on a fresh allocator; keeps the context usable for the next candidate.
std::optional<session_failure> replay(swapalloc::driver const& drv, sim_control const& sim,
                                      CUdevice device, std::uint64_t seed,
                                      std::vector<op> const& ops, std::size_t history)
{
  std::size_t at       = 0;
  single_run const run = run_single(
    drv, sim, seed, [&] { return ops[at++]; }, ops.size(), history);
  if (drv.table().cuCtxSynchronize() != CUDA_SUCCESS) {  // a sticky error: start afresh
    (void)drv.table().cuDevicePrimaryCtxReset(device);
  }
  return run.failure;
}

/// The ops up to the failure, if `ops` fails with `signature`.
std::optional<std::vector<op>> fails_alike(swapalloc::driver const& drv, sim_control const& sim,
                                           CUdevice device, std::uint64_t seed, std::vector<op> ops,
                                           std::string const& signature)
{
  std::optional<session_failure> const failure = replay(drv, sim, device, seed, ops, 0);
  if (!failure || failure->signature != signature) { return std::nullopt; }
  if (failure->index < ops.size()) { ops.resize(failure->index + 1); }
  return ops;
}

/// Delta debugging over the ops: drops chunks, halving the chunk size when none can go.
std::vector<op> shrink_ops(swapalloc::driver const& drv, sim_control const& sim, CUdevice device,
                           std::uint64_t seed, std::vector<op> ops, std::string const& signature)
{
  for (std::size_t chunk = ops.size() / 2; chunk >= 1; chunk /= 2) {
    for (std::size_t start = 0; start < ops.size();) {
      std::vector<op> candidate;
      candidate.reserve(ops.size());
      for (std::size_t i = 0; i < ops.size(); ++i) {
        if (i < start || i >= start + chunk) { candidate.push_back(ops[i]); }
      }
      if (auto kept = fails_alike(drv, sim, device, seed, candidate, signature)) {
        ops = std::move(*kept);
        std::fprintf(stderr, "model_shrink: %zu ops\n", ops.size());
      } else {
        start += chunk;
      }
    }
  }
  return ops;
}

/// Drops each op's faults where the failure does not need them.
std::vector<op> drop_faults(swapalloc::driver const& drv, sim_control const& sim, CUdevice device,
                            std::uint64_t seed, std::vector<op> ops, std::string const& signature)
{
  for (std::size_t i = 0; i < ops.size(); ++i) {
    for (std::size_t f = 0; f < 2; ++f) {
      if (!ops[i].faults[f].armed()) { continue; }
      std::vector<op> candidate = ops;
      candidate[i].faults[f]    = fault_spec{};
      if (auto kept = fails_alike(drv, sim, device, seed, candidate, signature)) {
        ops = std::move(*kept);
      }
    }
  }
  return ops;
}

std::vector<op> ops_of_seed(std::uint64_t seed, std::size_t count)
{
  scheduled_ops<random_ops> source(random_ops(seed), 200);  // as ModelTest.SingleThreaded
  std::vector<op> ops;
  for (std::size_t i = 0; i < count; ++i) {
    ops.push_back(source.next());
  }
  return ops;
}

std::vector<std::uint8_t> bytes_of_file(char const* path)
{
  std::ifstream file(path, std::ios::binary);
  return std::vector<std::uint8_t>{std::istreambuf_iterator<char>(file), {}};
}

/// The ops of a fuzzer input, as model_fuzz decodes them (at most max_fuzz_ops).
std::vector<op> ops_of_bytes(std::vector<std::uint8_t> const& bytes)
{
  byte_ops source(bytes);
  std::vector<op> ops;
  for (op o; ops.size() < max_fuzz_ops && source.next(o);) {
    ops.push_back(o);
  }
  return ops;
}

/// The shrinker proper; main() adds only the report of an exception.
int shrink(int argc, char** argv)
{
  if (argc != 3) {
    std::fprintf(stderr, "usage: model_shrink SEED OPS | model_shrink --bytes FILE\n");
    return 64;
  }
  ::setenv("SWAPALLOC_SIM_MEMORY", "64M", 0);
  ::setenv("SWAPALLOC_CUDA_DRIVER", SWAPALLOC_MODEL_CUDASIM, 0);
  bool const from_file = std::string(argv[1]) == "--bytes";
  std::vector<std::uint8_t> const bytes =
    from_file ? bytes_of_file(argv[2]) : std::vector<std::uint8_t>{};
  // A fuzzer input's seed is its hash (model_fuzz.cpp), kept while ops are dropped.
  std::uint64_t const seed = from_file ? seed_of(bytes) : std::strtoull(argv[1], nullptr, 0);
  std::vector<op> ops =
    from_file ? ops_of_bytes(bytes) : ops_of_seed(seed, std::strtoull(argv[2], nullptr, 0));
  swapalloc::driver const& drv = swapalloc::testing::shared_driver();
  sim_control const sim(drv);
  CUdevice const device = drv.device(0);
  drv.set_current_context(drv.retain_primary_context(device));

  std::optional<session_failure> const first = replay(drv, sim, device, seed, ops, 40);
  if (!first) {
    std::printf("model_shrink: %zu ops of seed %llu pass: nothing to shrink\n", ops.size(),
                static_cast<unsigned long long>(seed));
    return 1;
  }
  std::printf("model_shrink: failure at op #%zu: %s\n", first->index, first->message.c_str());
  if (first->index < ops.size()) { ops.resize(first->index + 1); }
  ops = shrink_ops(drv, sim, device, seed, std::move(ops), first->signature);
  ops = drop_faults(drv, sim, device, seed, std::move(ops), first->signature);
  std::optional<session_failure> const last = replay(drv, sim, device, seed, ops, ops.size());
  if (!last) {
    std::printf("model_shrink: the shrunk sequence no longer fails (timing-dependent)\n");
    return 1;
  }
  std::printf("model_shrink: seed %llu, signature %s, %zu ops:\n%s%s\n",
              static_cast<unsigned long long>(seed), last->signature.c_str(), ops.size(),
              last->history.c_str(), last->message.c_str());
  return 0;
}
}  // namespace

int main(int argc, char** argv)
{
  try {
    return shrink(argc, argv);
  } catch (std::exception const& e) {
    std::fprintf(stderr, "model_shrink: %s\n", e.what());
    return 2;
  }
}
