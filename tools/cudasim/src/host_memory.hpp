/**
 * @file host_memory.hpp
 * @brief Page-locked ("pinned") host memory: cuMemHostAlloc, cuMemAllocHost, cuMemFreeHost.
 *
 * Pinned memory matters to copies: cuda.h, cuMemHostAlloc: "The driver tracks the
 * virtual memory ranges allocated with this function and automatically accelerates
 * calls to functions such as cuMemcpyHtoD()". Async copies from and to it are fully
 * asynchronous, while pageable memory makes them (partly) synchronous. The registry
 * answers "is this host range pinned?" for every copy.
 */
#pragma once

#include "census.hpp"
#include "cuda_api.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <shared_mutex>

namespace cudasim {

class host_registry {
 public:
  [[nodiscard]] CUresult allocate(void** out, std::size_t bytes);
  /// Frees the block that starts at `pointer`; CUDA_ERROR_INVALID_VALUE for anything else.
  [[nodiscard]] CUresult free(void* pointer);
  /// True when [ptr, ptr + bytes) lies inside one live block.
  [[nodiscard]] bool pinned(std::uintptr_t ptr, std::size_t bytes) const;
  /// The size of the live block that starts at `pointer`; 0 when there is none.
  [[nodiscard]] std::size_t block_bytes(void const* pointer) const;

  /// The live blocks, by address.
  [[nodiscard]] held census() const;

 private:
  mutable std::shared_mutex mutex_;
  std::map<std::uintptr_t, std::size_t> blocks_;  // base -> requested size; guarded by mutex_
};

}  // namespace cudasim
