/**
 * @file allocator_errors.hpp
 * @brief The allocator's own exceptions: `out_of_memory` (the device or a pool cannot
 *        hold a request) and `usage_error` (a caller's misuse, by kind).
 *
 * Driver failures are `cuda_error` (driver.hpp). None of these leaves the allocator in a
 * changed state unless its thrower says so.
 */
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace swapalloc {

/// A request the device (or the pool's range) cannot hold even after releasing every
/// cached page. The message shows the request, the device's memory and the pools.
class out_of_memory : public std::runtime_error {
 public:
  out_of_memory(std::string const& message, std::size_t requested, int device)
    : std::runtime_error(message), requested_(requested), device_(device)
  {
  }
  [[nodiscard]] std::size_t requested_bytes() const noexcept { return requested_; }
  [[nodiscard]] int device() const noexcept { return device_; }

 private:
  std::size_t requested_;
  int device_;
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

}  // namespace swapalloc
