/**
 * @file link.cpp
 * @brief Time slots on the simulated host<->device links (see link.hpp).
 */
#include "link.hpp"

#include "cuda_api.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>

namespace cudasim {
namespace {

// Fields are read one by one: a copy that overlaps a change may mix old and new values,
// which is harmless (the change applies from the next copy).
std::atomic<double> h2d_bandwidth{0.0};
std::atomic<double> d2h_bandwidth{0.0};
std::atomic<double> gap_us{0.0};
std::atomic<double> duplex_d2h{1.0};
std::array<std::atomic<unsigned long long>, 2> moved_bytes{};  // [0] to device, [1] to host

[[nodiscard]] double valid_bandwidth(double gigabytes_per_second) noexcept
{
  return std::isfinite(gigabytes_per_second) && gigabytes_per_second > 0 ? gigabytes_per_second
                                                                         : 0.0;
}

}  // namespace

void set_link_bandwidth(double gigabytes_per_second) noexcept
{
  h2d_bandwidth.store(valid_bandwidth(gigabytes_per_second), std::memory_order_relaxed);
  d2h_bandwidth.store(valid_bandwidth(gigabytes_per_second), std::memory_order_relaxed);
}

void set_link_model(link_model model) noexcept
{
  h2d_bandwidth.store(valid_bandwidth(model.h2d_gbps), std::memory_order_relaxed);
  d2h_bandwidth.store(valid_bandwidth(model.d2h_gbps), std::memory_order_relaxed);
  gap_us.store(std::isfinite(model.gap_us) ? std::max(model.gap_us, 0.0) : 0.0,
               std::memory_order_relaxed);
  bool const duplex_valid = model.duplex_d2h > 0 && model.duplex_d2h <= 1;
  duplex_d2h.store(duplex_valid ? model.duplex_d2h : 1.0, std::memory_order_relaxed);
}

link_model current_link_model() noexcept
{
  return {h2d_bandwidth.load(std::memory_order_relaxed),
          d2h_bandwidth.load(std::memory_order_relaxed), gap_us.load(std::memory_order_relaxed),
          duplex_d2h.load(std::memory_order_relaxed)};
}

void count_link_bytes(bool to_device, std::size_t bytes) noexcept
{
  moved_bytes[to_device ? 0 : 1].fetch_add(bytes, std::memory_order_relaxed);
}

link_throttle::slot link_throttle::reserve(std::size_t bytes, double gigabytes_per_second,
                                           double gap, clock::time_point ready)
{
  // bytes / (GB/s * 10^9) seconds = bytes / GB/s nanoseconds.
  double const nanoseconds = static_cast<double>(bytes) / gigabytes_per_second + gap * 1e3;
  auto const duration      = std::chrono::duration_cast<clock::duration>(
    std::chrono::duration<double, std::nano>(nanoseconds));
  std::lock_guard lock(mutex_);
  clock::time_point const start = std::max(ready, busy_until_);
  busy_until_                   = start + duration;
  return {start, busy_until_};
}

link_throttle::clock::time_point link_throttle::busy_until()
{
  std::lock_guard lock(mutex_);
  return busy_until_;
}

}  // namespace cudasim

unsigned long long cudasimLinkBytes(int direction)
{
  if (direction != 0 && direction != 1) { return 0; }
  return cudasim::moved_bytes[static_cast<std::size_t>(direction)].load(std::memory_order_relaxed);
}

void cudasimSetLinkBandwidth(double gigabytes_per_second)
{
  cudasim::set_link_bandwidth(gigabytes_per_second);
}
