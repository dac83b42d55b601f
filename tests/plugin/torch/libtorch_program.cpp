// A libtorch program using swapalloc through plugin/torch/swapalloc_torch.hpp (test
// PluginTorch.LibtorchProgram), on the simulator through the CUDA runtime shim: kernels do not
// run there, so tensors move with copies only (.to, copy_), and results are compared on the
// CPU. It checks that:
//   - install() makes swapalloc torch's allocator: a CUDA tensor lands in the default pool;
//   - a use_pool scope puts the thread's tensors in pool "unet", visible in the stats, and
//     the pool switch ends with the scope;
//   - the bytes round-trip, also after the pool is evicted and activated again;
//   - an allocation over the memory fraction raises c10::OutOfMemoryError with swapalloc's
//     report.
// Exit status 0 when all hold; 1 with a message otherwise.
#include <swapalloc_torch.hpp>

#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>

#include "../stats_json.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace {

constexpr std::int64_t MiB = std::int64_t{1} << 20;

[[noreturn]] void fail(std::string const& what)
{
  std::fprintf(stderr, "libtorch program: %s\n", what.c_str());
  std::exit(1);
}

std::int64_t allocated_in(std::string const& pool)
{
  char const* text = nullptr;
  if (swapalloc_stats_json(&text) != SWAPALLOC_SUCCESS) { fail(swapalloc_last_error()); }
  nlohmann::json const entry = swapalloc_test::pool_entry(text, pool);
  return entry.empty() ? -1 : entry.at("allocated_bytes").get<std::int64_t>();
}

void expect(bool condition, std::string const& what)
{
  if (!condition) { fail(what); }
}

int run()
{
  expect(!torch::cuda::CUDAPluggableAllocator::getCurrentAllocator(),
         "a pluggable allocator before");
  auto const installed = swapalloc::libtorch::install();
  expect(installed == torch::cuda::CUDAPluggableAllocator::getCurrentAllocator(), "not current");
  expect(swapalloc::libtorch::install() == installed, "a second install changed the allocator");
  at::Tensor const host       = at::arange(4 * MiB / 4, at::kInt);  // 4 MiB on the CPU
  at::Tensor const in_default = host.to(at::kCUDA);
  expect(allocated_in("default") == 4 * MiB, "the first tensor is not in the default pool");

  at::Tensor weights;
  {
    auto const scope = swapalloc::libtorch::use_pool("unet");
    weights          = (host + 1).to(at::kCUDA);  // the addition runs on the CPU
  }
  at::Tensor const after_scope = host.to(at::kCUDA);
  expect(allocated_in("unet") == 4 * MiB, "the scoped tensor is not in pool 'unet'");
  expect(allocated_in("default") == 8 * MiB, "the tensor after the scope is not in default");
  expect(at::equal(weights.cpu(), host + 1), "pool 'unet' did not round-trip its bytes");

  swapalloc_pool_id unet = 0;
  std::size_t evicted    = 0;
  expect(swapalloc_pool_find("unet", &unet) == SWAPALLOC_SUCCESS, "no pool 'unet'");
  expect(swapalloc_evict(unet, 0, &evicted) == SWAPALLOC_SUCCESS && evicted >= 4 * MiB,
         std::string("evicting 'unet': ") + swapalloc_last_error());
  expect(swapalloc_activate(unet, 0, nullptr) == SWAPALLOC_SUCCESS, swapalloc_last_error());
  expect(at::equal(weights.cpu(), host + 1), "pool 'unet' changed over an eviction");
  expect(swapalloc_deactivate(unet, 0, nullptr) == SWAPALLOC_SUCCESS, swapalloc_last_error());

  c10::cuda::CUDACachingAllocator::setMemoryFraction(0.25, 0);  // the fraction hook
  try {
    at::Tensor const too_big =
      at::empty({80 * MiB}, at::TensorOptions(at::kByte).device(at::kCUDA));
    fail("80 MiB over a 25% fraction of the device was allocated");
  } catch (c10::OutOfMemoryError const& error) {
    expect(std::string(error.what()).find("out of memory") != std::string::npos,
           std::string("the out-of-memory error lacks swapalloc's report: ") + error.what());
  }
  std::printf("libtorch program: ok (default and 'unet' pools, eviction, OutOfMemoryError)\n");
  return 0;
}

}  // namespace

int main()
{
  try {
    return run();
  } catch (std::exception const& error) {  // c10::Error from a torch call, or the stats' JSON
    fail(error.what());
  }
}
