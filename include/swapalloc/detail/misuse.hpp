/**
 * @file detail/misuse.hpp
 * @brief How the allocator explains a call that misuses it (allocator.hpp): a free with
 *        the wrong size or stream, and a pointer that is not a live block's start (unknown,
 *        freed already, inside a block, or on another device). Each builds the message out
 *        of line (the hot path only compares), counts the error in `usage_counters`
 *        (errors.hpp), and returns or throws the `usage_error`.
 *
 * Thread safety: `diagnose` takes each device's mutex in turn, never two at once; the
 * caller holds none. The others touch only what they are given.
 */
#pragma once

#include <swapalloc/block.hpp>
#include <swapalloc/device_state.hpp>
#include <swapalloc/errors.hpp>
#include <swapalloc/pool.hpp>
#include <swapalloc/stream_events.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace swapalloc::detail {

/// Throws the usage error for a free of `freed` (at `ptr`) with a `bytes` or `stream`
/// other than its allocation's (wrong_size first). Cold: the hot path only compares.
[[noreturn]] __attribute__((noinline, cold)) inline void throw_bad_free(usage_counters const& usage,
                                                                        CUdeviceptr ptr,
                                                                        std::size_t bytes,
                                                                        CUstream stream,
                                                                        block const& freed)
{
  if (freed.requested != bytes) {
    throw usage.raise(usage_error_kind::wrong_size,
                      "deallocate(ptr=" + hex(ptr) + ", bytes=" + std::to_string(bytes) +
                        "): the block was allocated with bytes=" + std::to_string(freed.requested));
  }
  throw usage.raise(usage_error_kind::wrong_stream,
                    "deallocate(ptr=" + hex(ptr) +
                      ", stream=" + hex(reinterpret_cast<std::uintptr_t>(stream)) +
                      "): the block was allocated on stream=" +
                      hex(reinterpret_cast<std::uintptr_t>(stream_of(freed.tag))));
}

/// Explains why `ptr`, inside `pool`'s range, is not a live block's start: a double free,
/// or an interior pointer. `call` names the call. @pre the pool's device is locked.
[[nodiscard]] inline usage_error diagnose_in(usage_counters const& usage, device_pool const& pool,
                                             CUdeviceptr ptr, std::string const& call)
{
  block const* const around = pool.blocks().block_at(ptr - pool.base());
  std::string message       = call;
  usage_error_kind kind     = usage_error_kind::double_free;
  if (around != nullptr && around->state == block_state::allocated) {
    kind = usage_error_kind::interior_pointer;
    message += ": the address is " + std::to_string(ptr - pool.address(*around)) +
               " bytes inside the block at " + hex(pool.address(*around));
  } else if (around != nullptr && pool.address(*around) == ptr) {
    message += ": the block is already free";
  } else {
    message += ": no live block starts there (freed already?)";
  }
  return usage.raise(kind, message + " in pool '" + pool.name() + "'");
}

/**
 * @brief Explains why `ptr` is not a live block on device `device` (of `devices`, whose
 *        pools have ids below `pools`): allocated on another device, inside one of its
 *        pools' ranges (diagnose_in), or unknown. Counts it and returns the error.
 * @pre no device's mutex is held by the caller; `device` is a valid ordinal.
 */
[[nodiscard]] inline usage_error diagnose(std::vector<std::unique_ptr<device_state>> const& devices,
                                          std::size_t pools, usage_counters const& usage,
                                          CUdeviceptr ptr, int device, std::string const& call)
{
  for (auto const& other : devices) {
    if (other->ordinal() == device) { continue; }
    std::lock_guard const lock(other->mutex());
    if (other->live().find(ptr) != nullptr) {
      return usage.raise(
        usage_error_kind::wrong_device,
        call + ": the block was allocated on device " + std::to_string(other->ordinal()));
    }
  }
  device_state const& state = *devices[static_cast<std::size_t>(device)];
  std::lock_guard const lock(state.mutex());
  for (std::size_t id = 0; id < pools; ++id) {
    pool_residency const* const residency = state.pool(static_cast<pool_id>(id));
    if (residency == nullptr || !residency->pool().contains(ptr)) { continue; }
    return diagnose_in(usage, residency->pool(), ptr, call);
  }
  return usage.raise(
    usage_error_kind::unknown_pointer,
    call + ": not an address this allocator handed out on device " + std::to_string(device));
}

}  // namespace swapalloc::detail
