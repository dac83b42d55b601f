/**
 * @file link.hpp
 * @brief The host<->device link model (SWAPALLOC_SIM_LINK_GBPS, cudasimSetLinkBandwidth, a
 *        cost profile's `link` line: profile.hpp).
 *
 * Each device has one link per direction, like a GPU's copy engines: copies in one
 * direction are serialized and each takes bytes / bandwidth + the per-copy gap (what a
 * copy engine spends between back-to-back copies). While host-to-device copies run, a
 * device-to-host copy gets `duplex_d2h` of its bandwidth: the two directions share the
 * PCIe link's request credits (nvbandwidth on an H800 measured 52.8 + 34.4 GB/s together
 * against 55 each alone). A copy reserves the next
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

/// How every link behaves. A bandwidth of 0: that direction is unthrottled.
struct link_model {
  double h2d_gbps{0};    ///< 10^9 bytes per second, host to device
  double d2h_gbps{0};    ///< 10^9 bytes per second, device to host
  double gap_us{0};      ///< link time per copy beyond its bytes, microseconds
  double duplex_d2h{1};  ///< device-to-host bandwidth factor while host-to-device is busy
};

/// Sets the bandwidth of both directions, in 10^9 bytes per second; 0 (or less, or not
/// finite): unthrottled. The gap and duplex factor are kept.
void set_link_bandwidth(double gigabytes_per_second) noexcept;
/// Sets the whole model (a cost profile's link, time-scaled); invalid bandwidths are 0.
void set_link_model(link_model model) noexcept;
/// The current model.
[[nodiscard]] link_model current_link_model() noexcept;

/// Counts `bytes` moved over a link (cudasimLinkBytes); `to_device` picks the direction.
void count_link_bytes(bool to_device, std::size_t bytes) noexcept;

/// One direction of one device's link.
class link_throttle {
 public:
  using clock = std::chrono::steady_clock;

  /// The time a transfer owns the link: it may start at `start` and ends at `end`.
  struct slot {
    clock::time_point start;
    clock::time_point end;
  };

  /// Reserves the link for `bytes` at `gigabytes_per_second` plus `gap_us` after every
  /// earlier slot, starting no sooner than `ready` (which may lie in the past: see the
  /// file comment).
  [[nodiscard]] slot reserve(std::size_t bytes, double gigabytes_per_second, double gap_us,
                             clock::time_point ready);

  /// When the last reserved slot ends.
  [[nodiscard]] clock::time_point busy_until();

 private:
  std::mutex mutex_;
  clock::time_point busy_until_{};  // guarded by mutex_
};

}  // namespace cudasim
