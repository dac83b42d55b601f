/**
 * @file profile.hpp
 * @brief Cost profiles (SWAPALLOC_SIM_PROFILE): what each entry point and the link cost on
 *        a real GPU, charged time-scaled so that the simulator predicts that GPU's times.
 *
 * A profile gives every entry point a fixed cost and a cost per MiB (cuMemcpyBatchAsync:
 * also a cost per copy of the batch), in microseconds of the real GPU's host thread, and
 * two flags: `driver_lock` (the call holds the driver's
 * global lock while its cost elapses, so every other charged call waits for it: PyTorch's
 * CachingHostAllocator.cpp on cudaHostAlloc, "global lock in driver") and `sync` (the call
 * waits for every stream of every context first, as cudaFreeHost does). It also gives the
 * link: bandwidth per direction, a gap per copy, and the factor by which device-to-host
 * bandwidth drops while host-to-device copies run.
 *
 * Time scaling (SWAPALLOC_SIM_TIME_SCALE = k, default 50): every cost is slept k times
 * over, and the link runs at its bandwidth / k with each gap k times over, so a program's
 * wall time divided by k predicts the GPU's. k must be large enough that the simulator's
 * own work (a memmove into pages touched for the first time runs at about 1.5 GB/s on a
 * 2-core machine) fits inside the scaled link's slots; 50 puts an H100's link at 1.1 GB/s.
 * What it gets wrong: the program's own CPU work (codecs, checksums, bookkeeping) is not
 * slowed, so it weighs k times too little; only paths bound by driver calls and the link
 * (raw evict and restore) are predicted. tools/cudasim/README.md compares this with
 * virtual per-thread clocks.
 *
 * The text form, one directive per line, `#` to the end of a line is a comment:
 *   <entry point> [fixed_us=<x>] [per_mib_us=<x>] [per_copy_us=<x>] [driver_lock] [sync]
 *   link [h2d_gbps=<x>] [d2h_gbps=<x>] [gap_us=<x>] [duplex_d2h=<fraction>]
 * An entry point is a cuda.h name, bare or versioned; an entry point not named costs
 * nothing. Numbers are finite and >= 0 (duplex_d2h in (0, 1]); gbps in 10^9 bytes/s.
 * per_copy_us is only accepted on cuMemcpyBatchAsync, the one call with a number of copies.
 */
#pragma once

#include "faults.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <variant>

namespace cudasim {

/// What one entry point costs on the profiled GPU's host thread.
struct entry_cost {
  double fixed_us{0};             ///< microseconds per call
  double per_mib_us{0};           ///< microseconds per MiB the call takes or gives
  double per_copy_us{0};          ///< microseconds per copy of a batch (cuMemcpyBatchAsync)
  bool holds_driver_lock{false};  ///< other charged calls wait while this one's cost elapses
  bool syncs_device{false};       ///< waits for every stream of every context first
};

/// The profiled GPU's host<->device link.
struct link_cost {
  double h2d_gbps{0};    ///< 10^9 bytes/s host to device; 0: unthrottled
  double d2h_gbps{0};    ///< 10^9 bytes/s device to host; 0: unthrottled
  double gap_us{0};      ///< link time per copy beyond its bytes (back-to-back copies)
  double duplex_d2h{1};  ///< device-to-host bandwidth factor while host-to-device runs
};

/// A parsed profile.
struct cost_profile {
  std::string name;
  std::array<entry_cost, entry_count> entries{};
  link_cost link;
};

/// The built-in profiles' names and texts ("h100").
[[nodiscard]] std::string_view builtin_profile_text(std::string_view name) noexcept;

/// Parses the text form (file comment); the error names `origin` and the line.
[[nodiscard]] std::variant<cost_profile, std::string> parse_profile(std::string_view text,
                                                                    std::string const& origin);

/// The built-in profile `name_or_path`, or the profile in that file.
[[nodiscard]] std::variant<cost_profile, std::string> load_profile(std::string const& name_or_path);

/// Makes `profile` charged at time scale `scale` (> 0); called once at cuInit, before any
/// charge. Sets the link's bandwidths and gap.
void activate_profile(cost_profile const& profile, double scale);

/// True once a profile is active.
[[nodiscard]] bool profile_active() noexcept;

/// True for the entry points whose cost depends on a size (cuMemcpyBatchAsync: on its
/// number of copies), which their bodies charge with it (the prologue charges every other
/// entry point).
[[nodiscard]] constexpr bool charged_by_size(entry e) noexcept
{
  switch (e) {
    case entry::mem_host_alloc:
    case entry::mem_alloc_host:
    case entry::mem_free_host:
    case entry::mem_host_register:
    case entry::mem_host_unregister:
    case entry::mem_create:
    case entry::mem_map:
    case entry::mem_unmap:
    case entry::mem_set_access:
    case entry::memcpy_batch_async:
      return true;
    default:
      return false;
  }
}

/// Charges one call of `e` that takes or gives `bytes` and makes `copies` copies (a batch):
/// syncs if the profile says so, then sleeps its scaled cost, fixed + per MiB + per copy
/// (under the driver lock if it holds it; after waiting for the lock if not). Sleeps
/// shorter than 200 us are owed per thread and slept together, so timer slack does not
/// inflate many small costs. No-op without a profile.
void charge(entry e, std::size_t bytes, std::size_t copies = 0) noexcept;

/// The active profile's name and scale, for cudasimGetProfile; empty name when none.
[[nodiscard]] std::string_view active_profile_name() noexcept;
[[nodiscard]] double active_time_scale() noexcept;

/// Charged seconds (scaled back: the profiled GPU's time) and calls per entry point.
struct charged_totals {
  std::array<double, entry_count> seconds{};
  std::array<unsigned long long, entry_count> calls{};
};
[[nodiscard]] charged_totals charged() noexcept;

}  // namespace cudasim
