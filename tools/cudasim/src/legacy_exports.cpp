/**
 * @file legacy_exports.cpp
 * @brief The bare cuEventElapsedTime of drivers older than CUDA 12.8, for
 *        libcudasim_r550.so.
 *
 * cuda.h maps cuEventElapsedTime to cuEventElapsedTime_v2, which drivers export from
 * CUDA 12.8 (R570) on; R535 and R550 drivers export only the bare symbol, with the same
 * prototype. libcudasim_r550.so is the simulator as such a driver: it adds this symbol and
 * hides the _v2 one (exports_r550.map), so that swapalloc::driver's fallback is tested.
 * libcudasim.so leaves it out: it exports only the names cuda.h maps to, so a seam that
 * resolved a bare (old-ABI) name by mistake fails against it.
 */
#include "cuda_api.hpp"

#undef cuEventElapsedTime

extern "C" __attribute__((visibility("default"))) CUresult CUDAAPI
cuEventElapsedTime(float* pMilliseconds, CUevent hStart, CUevent hEnd)
{
  return cuEventElapsedTime_v2(pMilliseconds, hStart, hEnd);
}
