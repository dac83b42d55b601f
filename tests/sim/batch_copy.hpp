/**
 * @file batch_copy.hpp
 * @brief cuMemcpyBatchAsync for the conformance tests, looked up in the loaded driver.
 *
 * cuda.h (CUDA 13.0) maps cuMemcpyBatchAsync to cuMemcpyBatchAsync_v2; drivers before
 * CUDA 12.8 lack it, and those of 12.8 and 12.9 export only a bare cuMemcpyBatchAsync of
 * another prototype (an extra failIdx). The tests find the _v2 symbol with
 * `driver::find_symbol`, typed with cuda.h's own prototype (a changed prototype is a compile
 * error, a missing export a null pointer), so they depend on nothing but the driver itself.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <cuda.h>

#include <swapalloc/driver.hpp>

#include "unwrapped_entry_points.hpp"

namespace swapalloc::testing {

/// cuMemcpyBatchAsync, CUDA 13.0's prototype (cuMemcpyBatchAsync_v2).
using memcpy_batch_fn = decltype(&::cuMemcpyBatchAsync);

/// cuMemcpyBatchAsync_v2 of `drv`; null when the driver lacks it.
[[nodiscard]] inline memcpy_batch_fn find_memcpy_batch(driver const& drv)
{
  return reinterpret_cast<memcpy_batch_fn>(drv.find_symbol(SIM_UNWRAPPED_NAME(cuMemcpyBatchAsync)));
}

/// One copy of a batch. A host buffer is given by its address (unified addressing).
struct batch_entry {
  CUdeviceptr dst;
  CUdeviceptr src;
  std::size_t bytes;
};

/// The address of a host buffer, as a batch takes it.
[[nodiscard]] inline CUdeviceptr address_of(void const* host)
{
  return reinterpret_cast<CUdeviceptr>(host);
}

/// Copy attributes: source access order `order`, `flags`, no location hints.
[[nodiscard]] inline CUmemcpyAttributes batch_attributes(
  CUmemcpySrcAccessOrder order = CU_MEMCPY_SRC_ACCESS_ORDER_STREAM, unsigned int flags = 0)
{
  CUmemcpyAttributes attributes{};
  attributes.srcAccessOrder = order;
  attributes.flags          = flags;
  return attributes;
}

/// cuMemcpyBatchAsync of `copies` on `stream`, every copy with source access order `order`.
[[nodiscard]] inline CUresult memcpy_batch(
  memcpy_batch_fn batch, std::vector<batch_entry> const& copies, CUstream stream,
  CUmemcpySrcAccessOrder order = CU_MEMCPY_SRC_ACCESS_ORDER_STREAM)
{
  std::vector<CUdeviceptr> dsts;
  std::vector<CUdeviceptr> srcs;
  std::vector<std::size_t> sizes;
  for (batch_entry const& copy : copies) {
    dsts.push_back(copy.dst);
    srcs.push_back(copy.src);
    sizes.push_back(copy.bytes);
  }
  CUmemcpyAttributes attributes = batch_attributes(order);
  std::size_t first             = 0;
  return batch(dsts.data(), srcs.data(), sizes.data(), copies.size(), &attributes, &first, 1,
               stream);
}

}  // namespace swapalloc::testing
