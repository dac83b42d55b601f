// A program that only uses the CUDA runtime, run under libswapalloc_preload.so (test
// Preload.CudaProgram): it is built with the toolkit's runtime header and linked to the runtime
// shim over the simulator, which plays libcudart here as torch's libcudart.so.13 does on a GPU
// machine. It allocates with cudaMalloc and cudaMallocAsync, fills the blocks with cudaMemcpy,
// and checks, through swapalloc's C ABI found at run time (dlsym: the program does not link
// it), that:
//   - every block lies in the pool SWAPALLOC_POOL names (default "preload"), with its bytes;
//   - a second thread can deactivate that pool, evict it and activate it again, and every
//     byte reads back the same at the same address;
//   - cudaFree and cudaFreeAsync give the bytes back, and a pointer that is not swapalloc's
//     goes to the runtime (which refuses it) without harm.
// Exit status 0 when all hold; 1 with a message otherwise.
#include <cuda_runtime_api.h>
#include <swapalloc/swapalloc.h>  // the functions' types only: they are found with dlsym

#include "../stats_json.hpp"

#include <nlohmann/json.hpp>

#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

namespace {

/// The C ABI functions the check needs, from libswapalloc.so as the interposer loaded it,
/// with the header's exact types (a call through another function type is undefined:
/// clang's -fsanitize=function reports it).
struct swapalloc_abi {
  decltype(&::swapalloc_stats_json) stats_json;
  decltype(&::swapalloc_pool_find) pool_find;
  decltype(&::swapalloc_activate) activate;
  decltype(&::swapalloc_deactivate) deactivate;
  decltype(&::swapalloc_evict) evict;

  template <class F>
  static F find(char const* name)
  {
    auto const f = reinterpret_cast<F>(::dlsym(RTLD_DEFAULT, name));
    if (f == nullptr) {
      std::fprintf(stderr, "%s not found: is libswapalloc_preload.so preloaded?\n", name);
      std::exit(1);
    }
    return f;
  }
  static swapalloc_abi load()
  {
    return {find<decltype(&::swapalloc_stats_json)>("swapalloc_stats_json"),
            find<decltype(&::swapalloc_pool_find)>("swapalloc_pool_find"),
            find<decltype(&::swapalloc_activate)>("swapalloc_activate"),
            find<decltype(&::swapalloc_deactivate)>("swapalloc_deactivate"),
            find<decltype(&::swapalloc_evict)>("swapalloc_evict")};
  }
};

[[noreturn]] void fail(std::string const& what)
{
  std::fprintf(stderr, "cuda program: %s\n", what.c_str());
  std::exit(1);
}

void require(cudaError_t e, char const* what)
{
  if (e != cudaSuccess) { fail(std::string(what) + " failed: " + cudaGetErrorString(e)); }
}

/// The pool named `name` on device 0 in swapalloc's statistics.
nlohmann::json pool_stats(swapalloc_abi const& abi, std::string const& name)
{
  char const* text = nullptr;
  if (abi.stats_json(&text) != SWAPALLOC_SUCCESS) { fail("swapalloc_stats_json failed"); }
  nlohmann::json pool = swapalloc_test::pool_entry(text, name);
  if (pool.empty()) { fail("no pool '" + name + "' in " + text); }
  return pool;
}

struct filled_block {
  void* ptr{nullptr};
  std::vector<std::uint32_t> words;
};

filled_block fill(void* ptr, std::size_t bytes, std::uint32_t seed)
{
  filled_block b{ptr, std::vector<std::uint32_t>(bytes / sizeof(std::uint32_t))};
  std::iota(b.words.begin(), b.words.end(), seed);
  require(cudaMemcpy(ptr, b.words.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy to device");
  return b;
}

void expect_intact(filled_block const& b, char const* when)
{
  std::vector<std::uint32_t> read(b.words.size());
  require(
    cudaMemcpy(read.data(), b.ptr, read.size() * sizeof(std::uint32_t), cudaMemcpyDeviceToHost),
    "cudaMemcpy to host");
  if (read != b.words) { fail(std::string("a block's bytes changed ") + when); }
}

/// Deactivates, evicts and activates `pool` on a thread of its own, as a controller would;
/// returns the bytes evicted, 0 when a call failed.
std::size_t swap_out_and_back(swapalloc_abi const& abi, std::string const& pool)
{
  std::size_t evicted = 0;
  std::thread controller([&] {
    swapalloc_pool_id id = 0;
    if (abi.pool_find(pool.c_str(), &id) != SWAPALLOC_SUCCESS ||
        abi.deactivate(id, 0, nullptr) != SWAPALLOC_SUCCESS ||
        abi.evict(id, 0, &evicted) != SWAPALLOC_SUCCESS ||
        abi.activate(id, 0, nullptr) != SWAPALLOC_SUCCESS) {
      evicted = 0;
    }
  });
  controller.join();
  return evicted;
}

int run()
{
  char const* configured = std::getenv("SWAPALLOC_POOL");
  std::string const pool = configured != nullptr && *configured != '\0' ? configured : "preload";
  constexpr std::size_t sizes[]     = {std::size_t{1} << 20, std::size_t{6} << 20,
                                       std::size_t{20} << 20};
  constexpr std::size_t async_bytes = std::size_t{4} << 20;

  std::vector<filled_block> blocks;
  for (std::size_t i = 0; i < std::size(sizes); ++i) {
    void* ptr = nullptr;
    require(cudaMalloc(&ptr, sizes[i]), "cudaMalloc");
    blocks.push_back(fill(ptr, sizes[i], 0x1000U * static_cast<std::uint32_t>(i + 1)));
  }
  cudaStream_t stream = nullptr;
  require(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  void* async_ptr = nullptr;
  require(cudaMallocAsync(&async_ptr, async_bytes, stream), "cudaMallocAsync");
  require(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  blocks.push_back(fill(async_ptr, async_bytes, 0xa5000000U));

  swapalloc_abi const abi       = swapalloc_abi::load();
  std::size_t const total       = std::accumulate(std::begin(sizes), std::end(sizes), async_bytes);
  std::uint64_t const allocated = pool_stats(abi, pool).at("allocated_bytes");
  if (allocated != total) {
    fail("pool '" + pool + "' holds " + std::to_string(allocated) + " bytes, not " +
         std::to_string(total));
  }

  // The program is idle: a controller thread swaps the pool out and back.
  std::size_t const evicted = swap_out_and_back(abi, pool);
  if (evicted < total) { fail("the controller evicted " + std::to_string(evicted) + " bytes"); }
  for (auto const& b : blocks) {
    expect_intact(b, "after an eviction and a restore");
  }

  for (std::size_t i = 0; i < std::size(sizes); ++i) {
    require(cudaFree(blocks[i].ptr), "cudaFree");
  }
  require(cudaFreeAsync(async_ptr, stream), "cudaFreeAsync");
  require(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  if (std::uint64_t const left = pool_stats(abi, pool).at("allocated_bytes"); left != 0) {
    fail("pool '" + pool + "' still holds " + std::to_string(left) + " bytes after the frees");
  }
  int not_device_memory = 0;
  if (cudaFree(&not_device_memory) == cudaSuccess) {
    fail("cudaFree of a host address succeeded: it should reach the runtime, which refuses it");
  }
  (void)cudaGetLastError();
  require(cudaStreamDestroy(stream), "cudaStreamDestroy");
  std::printf("cuda program: ok (%zu bytes in pool '%s', evicted and restored intact)\n", total,
              pool.c_str());
  return 0;
}

}  // namespace

int main()
{
  try {
    return run();
  } catch (std::exception const& error) {  // the stats' JSON, or no host memory
    fail(error.what());
  }
}
