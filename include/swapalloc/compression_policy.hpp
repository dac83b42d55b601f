/**
 * @file compression_policy.hpp
 * @brief When evicted copies are compressed, as pure functions: lazily, only when the host
 *        budget needs it or for a pool idle past a delay (issue 14;
 *        ../shared/notes/gpu-speed.md §3.4). Hot pools and clean read-only pools stay raw,
 *        so that restoring them runs at link speed and decodes nothing.
 *
 * - **At an eviction** (`eviction_timing`): its copies stay raw, checksummed only, to be
 *   compressed later, when the host store can hold them raw without passing its high
 *   watermark; otherwise the budget needs it, and each is compressed behind its copy as
 *   soon as the copy lands (transfer.hpp). An idle delay of 0 compresses behind every
 *   eviction (the behaviour before lazy compression).
 * - **Later** (`plan_compression`: the pressure monitor's pass, and the end of every room
 *   made by eviction): the raw copies of every pool idle for at least the delay, read-only
 *   pools excepted; and while the store holds more than its high watermark, those of the
 *   coldest pools, read-only ones last, until the raw bytes chosen cover the excess over
 *   the low watermark (a limit of 0 is unknown: never past it). A copy's compression saves at most
 * its raw bytes, so a plan never chooses fewer than the excess needs; what compression did not save
 * shows in the next plan's use.
 *
 * Sources: the watermarks 0.85/0.75 are the device's (seed 000, DESIGN §8), taken for the
 * host store's budget too; the idle delay of 30 s is the upper end of the 10–30 s idle
 * time after which gpu-speed.md §3.1 gives warm slabs back (a pool idle that long is not
 * part of a loop that swaps it every few seconds).
 *
 * Thread safety: every function here is pure; call it from any thread.
 */
#pragma once

#include <swapalloc/policy.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <span>
#include <tuple>
#include <vector>

namespace swapalloc {

/// When copies are compressed (see the file comment).
struct compression_settings {
  /// A pool idle this long has its raw copies compressed; 0: every eviction compresses
  /// behind its copies. Accepted: 0 to 24 hours (allocator_options, SWAPALLOC_COMPRESS_AFTER).
  std::chrono::milliseconds idle_delay{std::chrono::seconds(30)};
  /// Fractions of the host store's limit: an eviction that would take the store past
  /// `high` raw compresses behind; past `high`, raw copies are compressed down to `low`.
  watermarks host_marks{0.75, 0.85};
};

/// The longest idle delay accepted.
inline constexpr std::chrono::milliseconds max_idle_delay{std::chrono::hours(24)};

/// What the policy knows of a host store: bytes handed out, and its limit (0: unknown,
/// never past anything).
struct host_budget {
  std::size_t used_bytes{0};
  std::size_t limit_bytes{0};
};

/// How an eviction's copies are encoded.
enum class compression_timing : std::uint8_t {
  behind,    ///< compressed by a worker as soon as each copy lands
  deferred,  ///< stored raw and checksummed; compressed when a plan chooses the pool
};

/**
 * @brief The timing of an eviction that copies up to `raw_bytes` into `host`: deferred
 *        when the store then holds at most its high watermark and the idle delay is not
 *        0; behind otherwise (and with a limit of 0). Pure; any thread.
 */
[[nodiscard]] constexpr compression_timing eviction_timing(
  host_budget host, std::size_t raw_bytes, compression_settings const& settings) noexcept
{
  if (settings.idle_delay.count() <= 0) { return compression_timing::behind; }
  std::size_t const high = fraction_of(settings.host_marks.high, host.limit_bytes);
  return detail::saturating_add(host.used_bytes, raw_bytes) <= high ? compression_timing::deferred
                                                                    : compression_timing::behind;
}

/// What the policy knows of one pool's raw copies (a snapshot taken under the device mutex).
struct raw_copies_view {
  pool_id id{0};
  std::size_t raw_bytes{0};  ///< host bytes of copies whose compression was deferred
  std::chrono::milliseconds idle{std::chrono::milliseconds::max()};  ///< since its last use
  bool read_only{false};  ///< it keeps copies of restored pages (DESIGN §6)
};

/**
 * @brief The pools whose raw copies to compress now, in order: coldest first, read-only
 *        pools after the others (see the file comment). Pools without raw bytes are never
 *        chosen. @throws std::bad_alloc. Pure; any thread.
 */
[[nodiscard]] inline std::vector<pool_id> plan_compression(host_budget host,
                                                           std::span<raw_copies_view const> pools,
                                                           compression_settings const& settings)
{
  std::vector<raw_copies_view> order;
  std::copy_if(pools.begin(), pools.end(), std::back_inserter(order),
               [](raw_copies_view const& pool) { return pool.raw_bytes != 0; });
  std::sort(order.begin(), order.end(), [](raw_copies_view const& a, raw_copies_view const& b) {
    return std::tuple(a.read_only, b.idle, a.id) < std::tuple(b.read_only, a.idle, b.id);
  });
  std::size_t const high = fraction_of(settings.host_marks.high, host.limit_bytes);
  std::size_t excess     = host.limit_bytes != 0 && host.used_bytes > high
                             ? host.used_bytes - fraction_of(settings.host_marks.low, host.limit_bytes)
                             : 0;
  std::vector<pool_id> chosen;
  for (raw_copies_view const& pool : order) {
    bool const idle = !pool.read_only && pool.idle >= settings.idle_delay;
    if (!idle && excess == 0) { continue; }
    chosen.push_back(pool.id);
    excess -= std::min(excess, pool.raw_bytes);
  }
  return chosen;
}

}  // namespace swapalloc
