/**
 * @file cudasim_leaker.cpp
 * @brief A program that leaks on purpose: it reserves one address range and exits without
 *        freeing it, so the tools tests can check the simulator's exit report and its strict
 *        mode (SWAPALLOC_SIM_STRICT=1: exit status 3).
 *
 * Prints "reserved <address> <bytes>" on stdout, for the test to find in the report.
 * Exit status: 0 (or the simulator's 3 in strict mode); 1 a CUDA call failed; 2 no driver.
 */
#include <swapalloc/driver.hpp>

#include <cstdio>

int main()
{
  try {
    swapalloc::driver const cuda;
    CUdevice const device = cuda.device(0);
    cuda.set_current_context(cuda.retain_primary_context(device));
    std::size_t const bytes   = cuda.allocation_granularity(device);
    CUdeviceptr const address = cuda.address_reserve(bytes);
    std::printf("reserved %s %zu\n", swapalloc::hex(address).c_str(), bytes);
    std::fflush(stdout);
    cuda.set_current_context(nullptr);
    cuda.release_primary_context(device);
    return 0;  // the reservation stays behind on purpose
  } catch (swapalloc::driver_unavailable const& error) {
    std::fprintf(stderr, "cudasim_leaker: %s\n", error.what());
    return 2;
  } catch (swapalloc::cuda_error const& error) {
    std::fprintf(stderr, "cudasim_leaker: %s\n", error.what());
    return 1;
  }
}
