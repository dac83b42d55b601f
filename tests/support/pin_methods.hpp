/**
 * @file pin_methods.hpp
 * @brief Ways of pinning a host slab (config.hpp pin_method) in tests: what a
 *        parameterized instance is named, and which driver entry points pin and unpin.
 */
#pragma once

#include <swapalloc/config.hpp>

#include <gtest/gtest.h>

#include <string>

namespace swapalloc::testing {

inline auto const pin_methods =
  ::testing::Values(pin_method::host_alloc, pin_method::host_register);

/// "alloc" or "register": the instance's name.
inline std::string pin_method_name(::testing::TestParamInfo<pin_method> const& info)
{
  return to_string(info.param);
}

/// The entry point that pins a slab by `method`.
[[nodiscard]] inline char const* pin_entry_of(pin_method method) noexcept
{
  return method == pin_method::host_register ? "cuMemHostRegister" : "cuMemHostAlloc";
}

/// The entry point that gives a slab pinned by `method` back.
[[nodiscard]] inline char const* unpin_entry_of(pin_method method) noexcept
{
  return method == pin_method::host_register ? "cuMemHostUnregister" : "cuMemFreeHost";
}

}  // namespace swapalloc::testing
