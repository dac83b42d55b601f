/**
 * @file link.hpp
 * @brief The host<->device link model (SWAPALLOC_SIM_LINK_GBPS, cudasimSetLinkBandwidth).
 *
 * Each device has one link per direction, like a GPU's copy engines: copies in one
 * direction are serialized and each takes bytes / bandwidth. A copy reserves the next
 * free time slot on its link, waits for the slot, moves its bytes at memcpy speed, and
 * sleeps out the rest of the slot. The sleeping happens with no lock held (least of all
 * the mapping table's), so unmaps and other streams are not held up by the model.
 *
 * A slot starts at the later of the link's last slot end and the moment the copy was
 * ready (issued, and the stream's previous operation done), not when the stream's thread
 * got to it: a thread that wakes late (timer slack, a busy host) must not leave the link
 * idle, since a copy engine runs queued copies back to back. The link is never faster
 * than its bandwidth: slots never overlap.
 */
#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>

namespace cudasim {

/// Sets the bandwidth of every link, in 10^9 bytes per second; 0 (or less): unthrottled.
void set_link_bandwidth(double gigabytes_per_second) noexcept;
/// The current bandwidth; 0: unthrottled.
[[nodiscard]] double link_bandwidth() noexcept;

/// One direction of one device's link.
class link_throttle {
 public:
  using clock = std::chrono::steady_clock;

  /// The time a transfer owns the link: it may start at `start` and ends at `end`.
  struct slot {
    clock::time_point start;
    clock::time_point end;
  };

  /// Reserves the link for `bytes` at `gigabytes_per_second` after every earlier slot,
  /// starting no sooner than `ready` (which may lie in the past: see the file comment).
  [[nodiscard]] slot reserve(std::size_t bytes, double gigabytes_per_second,
                             clock::time_point ready);

 private:
  std::mutex mutex_;
  clock::time_point busy_until_{};  // guarded by mutex_
};

}  // namespace cudasim
