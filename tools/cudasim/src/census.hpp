/**
 * @file census.hpp
 * @brief A count of live objects of one kind, for cudasimGetCensus and the exit report.
 *
 * Besides the count and the bytes it keeps the first few addresses (or handles), so a
 * leak report says which objects leaked, not only how many.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace cudasim {

struct held {
  static constexpr std::size_t examples_kept = 4;

  std::size_t count = 0;
  std::size_t bytes = 0;
  std::vector<std::uint64_t> examples;  ///< the first `examples_kept` addresses or handles

  void add(std::uint64_t id, std::size_t size)
  {
    ++count;
    bytes += size;
    if (examples.size() < examples_kept) { examples.push_back(id); }
  }
};

}  // namespace cudasim
