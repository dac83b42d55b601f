/**
 * @file link.cpp
 * @brief Time slots on the simulated host<->device links (see link.hpp).
 */
#include "link.hpp"

#include "cuda_api.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>

namespace cudasim {
namespace {

std::atomic<double> bandwidth{0.0};

}  // namespace

void set_link_bandwidth(double gigabytes_per_second) noexcept
{
  bool const valid = std::isfinite(gigabytes_per_second) && gigabytes_per_second > 0;
  bandwidth.store(valid ? gigabytes_per_second : 0.0, std::memory_order_relaxed);
}

double link_bandwidth() noexcept { return bandwidth.load(std::memory_order_relaxed); }

link_throttle::slot link_throttle::reserve(std::size_t bytes, double gigabytes_per_second,
                                           clock::time_point ready)
{
  // bytes / (GB/s * 10^9) seconds = bytes / GB/s nanoseconds.
  auto const duration = std::chrono::duration_cast<clock::duration>(
    std::chrono::duration<double, std::nano>(static_cast<double>(bytes) / gigabytes_per_second));
  std::lock_guard lock(mutex_);
  clock::time_point const start = std::max(ready, busy_until_);
  busy_until_                   = start + duration;
  return {start, busy_until_};
}

}  // namespace cudasim

void cudasimSetLinkBandwidth(double gigabytes_per_second)
{
  cudasim::set_link_bandwidth(gigabytes_per_second);
}
