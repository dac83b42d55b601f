/**
 * @file cuda_api.hpp
 * @brief How every simulator source includes cuda.h and cudasim.h.
 *
 * The library builds with -fvisibility=hidden so that it exports nothing but the
 * driver's entry points and the cudasim* control API. cuda.h's declarations carry no
 * visibility attribute, so they are given default visibility here: a cuda.h function
 * that this library defines is exported under the name cuda.h gives it. For a name
 * that cuda.h maps with a macro (cuMemGetInfo -> cuMemGetInfo_v2) that is the
 * versioned symbol, which is exactly what swapalloc::driver resolves. Everything else
 * the library defines stays hidden.
 *
 * It also has the one helper every entry point needs to read cuda.h enums safely.
 */
#pragma once

#pragma GCC visibility push(default)
#include <cuda.h>

#include "cudasim.h"
#pragma GCC visibility pop

#include <cstring>
#include <type_traits>

namespace cudasim {

/// The integer value of a cuda.h enum argument, read as bytes. Callers may pass any
/// integer (a test of CUDA_ERROR_INVALID_VALUE does), and loading a value outside the
/// enumeration's range as the enum type is undefined behaviour (UBSan: -fsanitize=enum).
template <class Enum>
[[nodiscard]] std::underlying_type_t<Enum> enum_value(Enum const& argument) noexcept
{
  std::underlying_type_t<Enum> value{};
  std::memcpy(&value, &argument, sizeof(value));
  return value;
}

}  // namespace cudasim
