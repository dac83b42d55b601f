/**
 * @file byte_units.hpp
 * @brief KiB, MiB and GiB for tests whose sources are compiled as one unit (UNITY), where
 *        each source's own constant would be a redefinition: such a source writes
 *        `using units::MiB;` in its namespace instead (a using-declaration may repeat).
 */
#pragma once

#include <cstddef>

namespace swapalloc::testing::units {

inline constexpr std::size_t KiB = std::size_t{1} << 10;
inline constexpr std::size_t MiB = std::size_t{1} << 20;
inline constexpr std::size_t GiB = std::size_t{1} << 30;

}  // namespace swapalloc::testing::units
