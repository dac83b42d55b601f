/**
 * @file entry_points.hpp
 * @brief Every driver entry point the seam resolves (driver.hpp), by its bare cuda.h name:
 *        what tests sum call counts over, or inject a failure into one by one.
 */
#pragma once

#include <array>

namespace swapalloc::testing {

inline constexpr std::array<char const*, 55> driver_entry_points{"cuInit",
                                                                 "cuDriverGetVersion",
                                                                 "cuGetErrorName",
                                                                 "cuGetErrorString",
                                                                 "cuDeviceGetCount",
                                                                 "cuDeviceGet",
                                                                 "cuDeviceGetName",
                                                                 "cuDeviceGetAttribute",
                                                                 "cuDeviceTotalMem",
                                                                 "cuDevicePrimaryCtxRetain",
                                                                 "cuDevicePrimaryCtxRelease",
                                                                 "cuDevicePrimaryCtxReset",
                                                                 "cuCtxGetCurrent",
                                                                 "cuCtxSetCurrent",
                                                                 "cuCtxGetDevice",
                                                                 "cuCtxSynchronize",
                                                                 "cuMemGetInfo",
                                                                 "cuMemGetAllocationGranularity",
                                                                 "cuMemAddressReserve",
                                                                 "cuMemAddressFree",
                                                                 "cuMemCreate",
                                                                 "cuMemRelease",
                                                                 "cuMemMap",
                                                                 "cuMemUnmap",
                                                                 "cuMemSetAccess",
                                                                 "cuMemGetAccess",
                                                                 "cuMemRetainAllocationHandle",
                                                                 "cuMemHostAlloc",
                                                                 "cuMemAllocHost",
                                                                 "cuMemFreeHost",
                                                                 "cuMemHostRegister",
                                                                 "cuMemHostUnregister",
                                                                 "cuMemcpyHtoD",
                                                                 "cuMemcpyDtoH",
                                                                 "cuMemcpyDtoD",
                                                                 "cuMemcpyHtoDAsync",
                                                                 "cuMemcpyDtoHAsync",
                                                                 "cuMemcpyDtoDAsync",
                                                                 "cuMemsetD8",
                                                                 "cuMemsetD32",
                                                                 "cuMemsetD8Async",
                                                                 "cuMemsetD32Async",
                                                                 "cuStreamCreate",
                                                                 "cuStreamDestroy",
                                                                 "cuStreamSynchronize",
                                                                 "cuStreamQuery",
                                                                 "cuStreamWaitEvent",
                                                                 "cuEventCreate",
                                                                 "cuEventDestroy",
                                                                 "cuEventRecord",
                                                                 "cuEventQuery",
                                                                 "cuEventSynchronize",
                                                                 "cuEventElapsedTime",
                                                                 "cuLaunchHostFunc",
                                                                 "cuMemcpyBatchAsync"};

}  // namespace swapalloc::testing
