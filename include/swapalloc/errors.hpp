/**
 * @file errors.hpp
 * @brief Every exception swapalloc throws, and the address formatting their messages use.
 *
 * - `cuda_error`: a driver call failed; carries the CUresult and the call's name.
 * - `driver_unavailable`: no usable driver (library, symbol, or cuInit).
 * - `config_error`: a bad setting (an environment variable or an option); names it, the
 *   value, and what is accepted.
 * - `usage_error`: a caller's misuse of the allocator, by kind; nothing changed.
 * - `out_of_memory`: the device, a limit or a pool's range cannot hold a request; derives
 *   from `std::bad_alloc`, as `rmm::out_of_memory` does (rapidsai/rmm, error.hpp), so
 *   code that catches allocation failure catches it.
 * - `restore_error`: a host copy that cannot be trusted (checksum mismatch, malformed).
 *
 * Every message starts with "swapalloc: " and says what was asked, with which values,
 * and why it failed. None of these leaves state changed unless its thrower says so.
 * This header depends on nothing of swapalloc's: every other header may include it.
 */
#pragma once

#include <cuda.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

namespace swapalloc {

/// Formats a device or host address as 0x-prefixed hex, for error messages.
[[nodiscard]] inline std::string hex(std::uintptr_t value)
{
  std::array<char, 2 + (2 * sizeof(value)) + 1> buffer{};
  std::snprintf(buffer.data(), buffer.size(), "0x%llx", static_cast<unsigned long long>(value));
  return buffer.data();
}

/// Raised when a CUDA driver call fails. Carries the CUresult and the failing call.
class cuda_error : public std::runtime_error {
 public:
  cuda_error(CUresult code, std::string call, std::string const& message)
    : std::runtime_error(message), code_(code), call_(std::move(call))
  {
  }

  /// The CUresult the driver returned.
  [[nodiscard]] CUresult code() const noexcept { return code_; }
  /// The entry point that failed, e.g. "cuMemMap".
  [[nodiscard]] std::string const& call() const noexcept { return call_; }

 private:
  CUresult code_;
  std::string call_;
};

/// Raised when no usable CUDA driver can be loaded (library, symbol or cuInit).
class driver_unavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A setting that is not accepted: the message names the variable or option, the value,
/// and what is accepted. Raised when settings are read (config.hpp), before any effect.
class config_error : public std::invalid_argument {
 public:
  config_error(std::string setting, std::string const& message)
    : std::invalid_argument(message), setting_(std::move(setting))
  {
  }
  /// The variable or option, e.g. "SWAPALLOC_HIGH".
  [[nodiscard]] std::string const& setting() const noexcept { return setting_; }

 private:
  std::string setting_;
};

/// The ways a caller can misuse the allocator; each is counted in the statistics.
enum class usage_error_kind : std::uint8_t {
  unknown_pointer,   ///< not an address this allocator handed out
  double_free,       ///< the block is already free
  interior_pointer,  ///< inside a live block, not its start
  wrong_size,        ///< freed with a size other than the one allocated
  wrong_device,      ///< freed or recorded with another device than its own
  wrong_stream,      ///< freed with a stream other than its allocation stream
  bad_device,        ///< a device ordinal out of range
  bad_pool,          ///< a pool id or name that does not exist, or a pool still in use
  not_evictable,     ///< evict of the default pool, a non-evictable pool, or a pinned one
};
inline constexpr std::size_t usage_error_kinds = 9;

[[nodiscard]] constexpr char const* to_string(usage_error_kind kind) noexcept
{
  constexpr std::array<char const*, usage_error_kinds> names{
    "unknown_pointer", "double_free", "interior_pointer", "wrong_size",   "wrong_device",
    "wrong_stream",    "bad_device",  "bad_pool",         "not_evictable"};
  return names[static_cast<std::size_t>(kind)];
}

/// A misuse of the allocator; the allocator's state is unchanged.
class usage_error : public std::invalid_argument {
 public:
  usage_error(usage_error_kind kind, std::string const& message)
    : std::invalid_argument(message), kind_(kind)
  {
  }
  [[nodiscard]] usage_error_kind kind() const noexcept { return kind_; }

 private:
  usage_error_kind kind_;
};

/// Counts of usage errors by kind (statistics). Thread safety: any thread (relaxed atomics).
class usage_counters {
 public:
  /// Counts one misuse of `kind` and returns its exception, "swapalloc: " + `what`.
  [[nodiscard]] usage_error raise(usage_error_kind kind, std::string const& what) const
  {
    counts_[static_cast<std::size_t>(kind)].fetch_add(1, std::memory_order_relaxed);
    return usage_error(kind, "swapalloc: " + what);
  }
  /// Misuses of `kind` so far.
  [[nodiscard]] std::size_t count(usage_error_kind kind) const noexcept
  {
    return counts_[static_cast<std::size_t>(kind)].load(std::memory_order_relaxed);
  }

 private:
  mutable std::array<std::atomic<std::size_t>, usage_error_kinds> counts_{};
};

/// A request the device, the process's limit or the pool's range cannot hold even after
/// the policy made all the room it may. The message shows the request, the device's
/// memory, a table of the pools and what the user can do (report.hpp).
class out_of_memory : public std::bad_alloc {
 public:
  out_of_memory(std::string message, std::size_t requested, int device)
    : message_(std::move(message)), requested_(requested), device_(device)
  {
  }
  [[nodiscard]] char const* what() const noexcept override { return message_.c_str(); }
  /// The bytes asked for.
  [[nodiscard]] std::size_t requested_bytes() const noexcept { return requested_; }
  /// The device's ordinal.
  [[nodiscard]] int device() const noexcept { return device_; }

 private:
  std::string message_;
  std::size_t requested_;
  int device_;
};

/// A restore that found a chunk it cannot trust (checksum mismatch, malformed data): names
/// the pool, page and chunk. The pool stays evicted with its copies.
class restore_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace swapalloc
