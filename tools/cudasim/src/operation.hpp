/**
 * @file operation.hpp
 * @brief The work a stream runs: the device side of copies (single or batched), memsets,
 *        host functions, event records and event waits.
 *
 * An operation is a small value queued on a stream; its worker runs it in order. The
 * only per-operation allocation is the queue node (and, for a copy from pageable
 * memory, the staging buffer the CUDA docs require).
 */
#pragma once

#include "cuda_api.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <variant>
#include <vector>

namespace cudasim {

enum class copy_kind : std::uint8_t { host_to_device, device_to_host, device_to_device };

struct copy_op {
  std::uintptr_t dst;
  std::uintptr_t src;
  std::size_t bytes;
  copy_kind kind;
  /// The source bytes read at the call: a cuMemcpyHtoDAsync from pageable memory, or a
  /// batched copy whose source access order is CU_MEMCPY_SRC_ACCESS_ORDER_DURING_API_CALL.
  /// The copy reads them instead of its source, which it then no longer checks.
  std::unique_ptr<std::byte[]> staging;
  /// When the copy was issued: it cannot use the link sooner (link.hpp).
  std::chrono::steady_clock::time_point issued{std::chrono::steady_clock::now()};
};

/// The copies of one cuMemcpyBatchAsync, one stream operation: the batch as a whole runs
/// in stream order, its copies in no guaranteed order (copy.cpp runs them in reverse).
struct batch_op {
  std::vector<copy_op> copies;
};

struct memset_op {
  std::uintptr_t dst;
  std::size_t count;  ///< elements of `width` bytes
  std::uint32_t value;
  std::uint8_t width;  ///< 1 (cuMemsetD8) or 4 (cuMemsetD32)
};

struct host_function_op {
  CUhostFn function;
  void* user_data;
};

/// Completes record `generation` of `event` (its timestamp).
struct record_op {
  std::shared_ptr<CUevent_st> event;
  std::uint64_t generation;
};

/// Blocks the stream until `stream` has completed `sequence` operations.
struct wait_op {
  std::shared_ptr<CUstream_st> stream;
  std::uint64_t sequence;
};

using operation = std::variant<copy_op, memset_op, host_function_op, record_op, wait_op, batch_op>;

// Executors, each next to the state it touches. Called on the stream's worker; a result
// other than CUDA_SUCCESS is a device fault, which the worker makes sticky.
/// `ready` is when the stream's previous operation ended (on the link's clock, for a
/// copy); on return it is when this copy ended.
[[nodiscard]] CUresult execute(copy_op& op, CUctx_st& context,
                               std::chrono::steady_clock::time_point& ready);  // copy.cpp
/// Runs the copies of a batch; `ready` as for a single copy (on return: when the last ended).
[[nodiscard]] CUresult execute(batch_op& op, CUctx_st& context,
                               std::chrono::steady_clock::time_point& ready);  // copy.cpp
[[nodiscard]] CUresult execute(memset_op& op, CUctx_st& context);              // copy.cpp
[[nodiscard]] CUresult execute(record_op& op, CUctx_st& context);              // event.cpp

}  // namespace cudasim
