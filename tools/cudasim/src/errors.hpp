/**
 * @file errors.hpp
 * @brief The CUresult names of cuda.h, for cuGetErrorName and SWAPALLOC_SIM_FAIL.
 */
#pragma once

#include "cuda_api.hpp"

#include <optional>
#include <string_view>

namespace cudasim {

/// cuda.h's name of `result` ("CUDA_ERROR_INVALID_VALUE"), nullptr when cuda.h has none.
[[nodiscard]] char const* error_name(CUresult result) noexcept;

/// The value of a CUresult argument, read as bytes: callers may pass any integer.
[[nodiscard]] unsigned long long error_code(CUresult const& argument) noexcept;

/// The CUresult whose value is `code`, if cuda.h names one. Codes come in as integers:
/// a value outside the enumeration must never be loaded as a CUresult (UBSan: enum).
[[nodiscard]] std::optional<CUresult> error_from_code(unsigned long long code) noexcept;

/// The CUresult cuda.h names `name`, if any.
[[nodiscard]] std::optional<CUresult> error_from_name(std::string_view name) noexcept;

}  // namespace cudasim
