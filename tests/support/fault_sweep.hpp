/**
 * @file fault_sweep.hpp
 * @brief Fault sweeps over driver calls: count the calls of each entry point an action
 *        makes (through the simulator), then list the calls to fail in turn.
 */
#pragma once

#include "entry_points.hpp"
#include "sanitizer_build.hpp"
#include "sim_control.hpp"

#include <cstddef>
#include <utility>
#include <vector>

namespace swapalloc::testing {

/// Calls of each entry point made by `action`, counted through the simulator.
template <typename Action>
inline std::vector<std::pair<char const*, unsigned long long>> calls_made(sim_control const& sim,
                                                                          Action&& action)
{
  std::vector<unsigned long long> before;
  before.reserve(driver_entry_points.size());
  for (char const* entry : driver_entry_points) {
    before.push_back(sim.call_count(entry));
  }
  action();
  std::vector<std::pair<char const*, unsigned long long>> made;
  for (std::size_t i = 0; i < driver_entry_points.size(); ++i) {
    unsigned long long const count = sim.call_count(driver_entry_points[i]) - before[i];
    if (count != 0) { made.emplace_back(driver_entry_points[i], count); }
  }
  return made;
}

/**
 * @brief The calls to fail: the first, the second and the last of each entry point; in a
 *        TSan build, the first of each only.
 *
 * Why TSan sweeps less: its stage hunts data races, and a sweep's iterations are the same
 * single-threaded fault paths run again, 10-30 times slower (each reads back every block
 * through the simulator's copies). The Release and ASan+UBSan builds sweep every fault.
 * Measured in CI's TSan stage on 2 cores: PolicyAllocatorTest's two sweeps took 184 s and
 * 92 s of its 793 s of test time.
 */
inline std::vector<std::pair<char const*, unsigned long long>> faults_for(
  std::vector<std::pair<char const*, unsigned long long>> const& made)
{
  std::vector<std::pair<char const*, unsigned long long>> faults;
  for (auto const& [entry, count] : made) {
    for (unsigned long long nth : {1ULL, 2ULL, count}) {
      if (thread_sanitizer_build && nth != 1) { continue; }
      if (nth <= count && (faults.empty() || faults.back() != std::pair{entry, nth})) {
        faults.emplace_back(entry, nth);
      }
    }
  }
  return faults;
}

}  // namespace swapalloc::testing
