/**
 * @file fault_sweep.hpp
 * @brief Fault sweeps over driver calls: count the calls of each entry point an action
 *        makes (through the simulator), then list the calls to fail in turn.
 */
#pragma once

#include "entry_points.hpp"
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

/// The calls to fail: the first, the second and the last of each entry point.
inline std::vector<std::pair<char const*, unsigned long long>> faults_for(
  std::vector<std::pair<char const*, unsigned long long>> const& made)
{
  std::vector<std::pair<char const*, unsigned long long>> faults;
  for (auto const& [entry, count] : made) {
    for (unsigned long long nth : {1ULL, 2ULL, count}) {
      if (nth <= count && (faults.empty() || faults.back() != std::pair{entry, nth})) {
        faults.emplace_back(entry, nth);
      }
    }
  }
  return faults;
}

}  // namespace swapalloc::testing
