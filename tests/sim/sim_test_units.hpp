// Units and a wall-clock reading shared by the simulator's tests (one definition, so that a
// unity build of sim_tests compiles: SWAPALLOC_UNITY_TESTS).
#pragma once

#include <chrono>
#include <cstddef>

namespace swapalloc::testing {

inline constexpr std::size_t kMiB = std::size_t{1} << 20;
inline constexpr std::size_t kGiB = std::size_t{1} << 30;

using clock_type = std::chrono::steady_clock;

/// Milliseconds of wall time since `start`.
[[nodiscard]] inline double ms_since(clock_type::time_point start)
{
  return std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
}

}  // namespace swapalloc::testing
