// A user of the installed header-only library (tests Consumer.CMake.<type> and
// Consumer.PkgConfig): it allocates in a pool, evicts the pool to host memory, restores it at
// the same address and checks every byte through driver copies. Runs on the driver that
// SWAPALLOC_CUDA_DRIVER names (the simulator in CI) or on libcuda.so.1. Exit status 0 when the
// bytes come back and the statistics show the eviction; 1 otherwise, saying what differed.
#include <swapalloc/allocator.hpp>
#include <swapalloc/pool_scope.hpp>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <numeric>
#include <vector>

namespace {

int evict_and_restore(swapalloc::driver& cuda, swapalloc::allocator& alloc)
{
  auto const weights          = alloc.create_pool("weights");
  constexpr std::size_t bytes = std::size_t{8} << 20;
  std::vector<std::uint32_t> written(bytes / sizeof(std::uint32_t));
  std::iota(written.begin(), written.end(), 0x5a110c00U);
  CUdeviceptr block = 0;
  {
    swapalloc::pool_scope const scope(alloc, weights);
    block = alloc.allocate(bytes, 0, nullptr);
  }
  cuda.memcpy_htod(block, written.data(), bytes);
  swapalloc::evict_result const evicted = alloc.evict(weights, 0);
  if (evicted.live_bytes != bytes || alloc.stats(weights, 0).evicted_bytes == 0) {
    std::fprintf(stderr, "evict moved %zu live bytes of %zu\n", evicted.live_bytes, bytes);
    return 1;
  }
  (void)alloc.restore(weights, 0, nullptr);
  std::vector<std::uint32_t> read(written.size());
  cuda.memcpy_dtoh(read.data(), block, bytes);
  if (read != written) {
    std::fprintf(stderr, "the restored block differs from what was written\n");
    return 1;
  }
  alloc.deallocate(block, bytes, 0, nullptr);
  std::printf("header-only consumer: ok (%zu bytes evicted and restored at 0x%llx)\n", bytes,
              static_cast<unsigned long long>(block));
  return 0;
}

int check(swapalloc::driver& cuda)
{
  CUdevice const device = cuda.device(0);
  cuda.set_current_context(cuda.retain_primary_context(device));
  int status = 1;
  {
    swapalloc::allocator alloc(cuda);
    status = evict_and_restore(cuda, alloc);
  }
  cuda.release_primary_context(device);  // nothing held at exit (the simulator's strict mode)
  return status;
}

}  // namespace

int main()
{
  try {
    swapalloc::driver cuda;
    return check(cuda);
  } catch (std::exception const& error) {
    std::fprintf(stderr, "header-only consumer: %s\n", error.what());
    return 1;
  }
}
