/**
 * @file policy.hpp
 * @brief The 85/75 eviction policy as pure functions: the pressure level, how many bytes
 *        to free, which pools give them up and in what order, and which pages of a pool
 *        go first. Data in, data out: no driver, no lock, no thread, no I/O, no global.
 *        The allocator takes a snapshot of its pools (`pool_view`) under the device
 *        mutex, asks for a plan, and carries it out (release cached pages, evict).
 *
 * Borrowed figures and their sources:
 * - The watermarks: past 85% of the capacity, make room down to 75% (seed 000:
 *   MEMORY_THRESHOLD = 85, TARGET_CLEANUP_USAGE = 75, its "predictive pre-swap" before a
 *   load; DESIGN §8). Both are configurable (`watermarks`).
 * - The pressure levels SAFE < low ≤ WARNING < high ≤ CRITICAL < 95% ≤ EMERGENCY (seed
 *   003's risk levels, DESIGN §8's boundaries).
 * - The order of a plan (DESIGN §8): cached pages first (a release, no copy), then cold
 *   pools, lower priority first, least recently used first within a priority.
 * - Who may be evicted (DESIGN §6): evictable, not critical, not pinned (or active) pools;
 *   never the default pool.
 *
 * Two capacities are checked alike (DESIGN §8): the process's own mapped bytes against
 * its limit, and the device-wide used bytes (other processes count) against the device's
 * total. Either one past the high watermark makes a plan, and a plan brings both down to
 * the low watermark. A capacity of 0 (unknown) is never past anything.
 *
 * Fractions and bytes: a use is compared with a watermark as the fraction bytes/capacity
 * (`use_fraction`, a correctly rounded division, so 85 MiB of 100 MiB is exactly at
 * 0.85), and a target in bytes is the exact floor of the watermark's double value times
 * the capacity (`fraction_of`). Where a decimal watermark times the capacity is a whole
 * number, the double can lie just below it (0.7 is 0.69999…): a plan then frees one byte
 * more than the decimal asks, never less.
 *
 * Thread safety: every function here is pure; call it from any thread.
 */
#pragma once

#include <swapalloc/scope_stack.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace swapalloc {

// ------------------------------------------------------------------ names

/// A pool's priority (DESIGN §6): lower priorities are evicted first, `critical` never.
enum class pool_priority : std::uint8_t { low, normal, high, critical };

/// "low", "normal", "high" or "critical": the names `parse_priority` reads. Pure; any thread.
[[nodiscard]] constexpr char const* to_string(pool_priority priority) noexcept
{
  switch (priority) {
    case pool_priority::low:
      return "low";
    case pool_priority::normal:
      return "normal";
    case pool_priority::high:
      return "high";
    case pool_priority::critical:
      return "critical";
  }
  return "?";
}

/// The priority whose name (`to_string`, lower case, exactly) is `name`; nullopt for any
/// other text, "Low" and " low" included. Pure; any thread.
[[nodiscard]] constexpr std::optional<pool_priority> parse_priority(std::string_view name) noexcept
{
  for (pool_priority const priority :
       {pool_priority::low, pool_priority::normal, pool_priority::high, pool_priority::critical}) {
    if (name == to_string(priority)) { return priority; }
  }
  return std::nullopt;
}

/// How full the device is, for stats and logs (seed 003's risk levels). See `pressure_of`.
enum class pressure_level : std::uint8_t { safe, warning, critical, emergency };

/// "SAFE", "WARNING", "CRITICAL" or "EMERGENCY". Pure; any thread.
[[nodiscard]] constexpr char const* to_string(pressure_level level) noexcept
{
  switch (level) {
    case pressure_level::safe:
      return "SAFE";
    case pressure_level::warning:
      return "WARNING";
    case pressure_level::critical:
      return "CRITICAL";
    case pressure_level::emergency:
      return "EMERGENCY";
  }
  return "?";
}

// ------------------------------------------------------------------ watermarks

/// Fractions of a capacity: past `high`, make room down to `low` (seed 000, DESIGN §8).
struct watermarks {
  double low{0.75};
  double high{0.85};
};

/// Use at or above this fraction is EMERGENCY (DESIGN §8). Not configurable.
inline constexpr double emergency_fraction = 0.95;

/// The host is short of memory when less than this fraction of it is available; warm
/// pinned slabs (host_store.hpp) are then given back at once. Linux's own low watermarks
/// sit far lower; a tenth leaves the page cache room before pinned memory hurts it.
inline constexpr double host_short_fraction = 0.10;

/**
 * @brief True when `available_bytes` (MemAvailable) is below host_short_fraction of
 *        `total_bytes`; false when the total is unknown (0). Pure; any thread.
 */
[[nodiscard]] constexpr bool host_memory_short(std::size_t available_bytes,
                                               std::size_t total_bytes) noexcept
{
  return total_bytes != 0 && static_cast<double>(available_bytes) <
                               host_short_fraction * static_cast<double>(total_bytes);
}

namespace detail {

/// `value` in the shortest form that reads back the same ("0.85", "nan", "inf").
[[nodiscard]] inline std::string fraction_text(double value)
{
  std::array<char, 32> text{};
  auto const result = std::to_chars(text.data(), text.data() + text.size(), value);
  return std::string(text.data(), result.ptr);
}

}  // namespace detail

/**
 * @brief Empty when 0 < low < high <= 1, both finite; else a message naming each bad value
 *        and what is accepted, e.g. "low watermark 0.9 must be below the high watermark
 *        0.85 (accepted: 0 < low < high <= 1)". Two problems are joined by "; ".
 * @throws std::bad_alloc only. Pure; any thread.
 */
[[nodiscard]] inline std::string watermark_problem(watermarks marks)
{
  std::string const accepted = " (accepted: 0 < low < high <= 1)";
  std::string problem;
  bool const low_ok  = std::isfinite(marks.low) && marks.low > 0.0 && marks.low < 1.0;
  bool const high_ok = std::isfinite(marks.high) && marks.high > 0.0 && marks.high <= 1.0;
  if (!low_ok) {
    problem = "low watermark " + detail::fraction_text(marks.low) +
              " must be a fraction above 0 and below 1";
  }
  if (!high_ok) {
    problem += (problem.empty() ? "" : "; ") + std::string("high watermark ") +
               detail::fraction_text(marks.high) + " must be a fraction above 0 and at most 1";
  }
  if (low_ok && high_ok && !(marks.low < marks.high)) {
    problem = "low watermark " + detail::fraction_text(marks.low) +
              " must be below the high watermark " + detail::fraction_text(marks.high);
  }
  return problem.empty() ? problem : problem + accepted;
}

namespace detail {

/// The 128-bit product a * b as {high 64 bits, low 64 bits}.
[[nodiscard]] constexpr std::array<std::uint64_t, 2> multiply(std::uint64_t a,
                                                              std::uint64_t b) noexcept
{
  constexpr std::uint64_t half = 0xffff'ffffU;
  std::uint64_t const low_low  = (a & half) * (b & half);
  std::uint64_t const high_low = (a >> 32) * (b & half);
  std::uint64_t const low_high = (a & half) * (b >> 32);
  std::uint64_t const middle   = (low_low >> 32) + (high_low & half) + (low_high & half);
  std::uint64_t const high =
    (a >> 32) * (b >> 32) + (high_low >> 32) + (low_high >> 32) + (middle >> 32);
  return {high, (middle << 32) | (low_low & half)};
}

/// a + b, SIZE_MAX when it does not fit.
[[nodiscard]] constexpr std::size_t saturating_add(std::size_t a, std::size_t b) noexcept
{
  return a > std::numeric_limits<std::size_t>::max() - b ? std::numeric_limits<std::size_t>::max()
                                                         : a + b;
}

/// `bytes` rounded up to a multiple of `page_size` (0 counts as 1), saturating.
[[nodiscard]] constexpr std::size_t round_up(std::size_t bytes, std::size_t page_size) noexcept
{
  std::size_t const page = std::max<std::size_t>(page_size, 1);
  std::size_t const rest = bytes % page;
  return rest == 0 ? bytes : saturating_add(bytes - rest, page);
}

}  // namespace detail

/**
 * @brief floor(fraction × bytes), exact for every `bytes` up to 2^64 - 1: the double's
 *        exact value times `bytes`, in 128-bit integer arithmetic. SIZE_MAX when the
 *        product does not fit (fraction > 1, +inf); 0 for a fraction that is NaN or ≤ 0.
 *        fraction_of(0.75, 8 GiB) is 6 GiB; fraction_of(0.85, 100) is 84, since the double
 *        nearest 0.85 is 0.84999999999999997780. Pure; any thread.
 */
[[nodiscard]] constexpr std::size_t fraction_of(double fraction, std::size_t bytes) noexcept
{
  static_assert(sizeof(std::size_t) == sizeof(std::uint64_t) && sizeof(double) == 8);
  constexpr std::size_t all = std::numeric_limits<std::size_t>::max();
  if (!(fraction > 0.0) || bytes == 0) { return 0; }  // NaN, negative, zero
  auto const bits   = std::bit_cast<std::uint64_t>(fraction);
  auto const biased = static_cast<int>((bits >> 52) & 0x7ffU);
  if (biased == 0x7ff) { return all; }  // +inf
  std::uint64_t mantissa = bits & ((std::uint64_t{1} << 52) - 1);
  if (biased != 0) { mantissa |= std::uint64_t{1} << 52; }
  int const exponent     = (biased == 0 ? 1 : biased) - 1075;  // fraction = mantissa·2^exponent
  auto const [high, low] = detail::multiply(mantissa, bytes);
  if (exponent >= 0) {
    bool const fits =
      high == 0 && exponent < 64 && (exponent == 0 || (low >> (64 - exponent)) == 0);
    return fits ? low << exponent : all;
  }
  int const shift = -exponent;
  if (shift >= 128) { return 0; }
  if (shift >= 64) { return high >> (shift - 64); }
  if ((high >> shift) != 0) { return all; }
  return (low >> shift) | (high << (64 - shift));
}

// ------------------------------------------------------------------ pressure

/// What the policy knows of one device's memory.
struct device_usage {
  std::size_t own_bytes{0};     // bytes this process has mapped on the device (all pools' pages)
  std::size_t limit_bytes{0};   // the process's cap (SWAPALLOC_DEVICE_LIMIT; default the total)
  std::size_t device_used{0};   // device-wide used bytes (cuMemGetInfo total - free, corrected by
                                // our own map/unmap deltas)
  std::size_t device_total{0};  // the device's memory
};

namespace detail {

/// bytes / capacity as a correctly rounded double; 0 when capacity is 0.
[[nodiscard]] constexpr double share(std::size_t bytes, std::size_t capacity) noexcept
{
  return capacity == 0 ? 0.0 : static_cast<double>(bytes) / static_cast<double>(capacity);
}

/// Bytes to free from `bytes` to bring it to at most `fraction` of `capacity`; 0 when the
/// capacity is 0 or it is there already.
[[nodiscard]] constexpr std::size_t excess(std::size_t bytes, std::size_t capacity,
                                           double fraction) noexcept
{
  std::size_t const target = fraction_of(fraction, capacity);
  return capacity == 0 || bytes <= target ? 0 : bytes - target;
}

}  // namespace detail

/// max(own / limit, used / total): the fuller of the two capacities, as a fraction (may
/// pass 1). A term whose capacity is 0 (unknown) counts as 0. Pure; any thread.
[[nodiscard]] constexpr double use_fraction(device_usage usage) noexcept
{
  return std::max(detail::share(usage.own_bytes, usage.limit_bytes),
                  detail::share(usage.device_used, usage.device_total));
}

/**
 * @brief The level of `use_fraction(usage)`: SAFE below `marks.low`, WARNING from it,
 *        CRITICAL from `marks.high`, EMERGENCY from `emergency_fraction` (0.95, DESIGN §8).
 *        EMERGENCY wins when a high watermark is set above 0.95.
 * @pre watermark_problem(marks) is empty. Pure; any thread.
 */
[[nodiscard]] constexpr pressure_level pressure_of(device_usage usage, watermarks marks) noexcept
{
  double const used = use_fraction(usage);
  if (used >= emergency_fraction) { return pressure_level::emergency; }
  if (used >= marks.high) { return pressure_level::critical; }
  if (used >= marks.low) { return pressure_level::warning; }
  return pressure_level::safe;
}

// ------------------------------------------------------------------ pools

/// What the policy knows of one pool on one device (a snapshot taken under the device mutex).
struct pool_view {
  pool_id id{0};
  pool_priority priority{pool_priority::normal};
  bool evictable{true};           // false for the default pool and pools created evictable=false
  bool pinned{false};             // pinned or active (activate count > 0)
  bool prefetched{false};         // restored by prefetch, not activated since
  std::uint64_t last_use{0};      // logical clock: larger = used more recently
  std::size_t resident_bytes{0};  // mapped pages that hold live blocks (freed only by evicting)
  std::size_t cached_bytes{0};    // mapped pages with no block (released without a copy)
  std::size_t page_size{0};       // bytes per page, > 0 (plan_room counts 0 as 1)
};

/// Why a plan is being made.
enum class room_reason : std::uint8_t {
  map,            // before mapping `request` new bytes (DESIGN §8's predictive pre-swap)
  ensure_free,    // ensure_free(request): the seeds' memory_guard(required_gb)
  monitor,        // the background thread: use as it is
  out_of_memory,  // a real out-of-memory: everything allowed, then one retry
};

/// "map", "ensure_free", "monitor" or "out_of_memory".
[[nodiscard]] constexpr char const* to_string(room_reason reason) noexcept
{
  switch (reason) {
    case room_reason::map:
      return "map";
    case room_reason::ensure_free:
      return "ensure_free";
    case room_reason::monitor:
      return "monitor";
    case room_reason::out_of_memory:
      return "out_of_memory";
  }
  return "?";
}

/**
 * @brief Bytes to free, for `reason`:
 *        - map, ensure_free (`request`: the bytes about to be mapped): 0 unless own + request
 *          passes high·limit or device_used + request passes high·total; then enough to
 *          bring both to at most low·capacity: max(own + request - low·limit, used +
 *          request - low·total), each clamped at 0, low·capacity being `fraction_of`.
 *        - monitor: the same with `request` ignored (0).
 *        - out_of_memory: SIZE_MAX (everything allowed).
 *        "Passes" compares the fraction (`use_fraction`'s division): strictly above high.
 *        The result may exceed all a process has (a request larger than the device).
 * @pre watermark_problem(marks) is empty. Sums saturate. Pure; any thread.
 */
[[nodiscard]] constexpr std::size_t bytes_to_free(device_usage usage, std::size_t request,
                                                  watermarks marks, room_reason reason) noexcept
{
  if (reason == room_reason::out_of_memory) { return std::numeric_limits<std::size_t>::max(); }
  if (reason == room_reason::monitor) { request = 0; }
  std::size_t const own  = detail::saturating_add(usage.own_bytes, request);
  std::size_t const used = detail::saturating_add(usage.device_used, request);
  if (!(detail::share(own, usage.limit_bytes) > marks.high) &&
      !(detail::share(used, usage.device_total) > marks.high)) {
    return 0;
  }
  return std::max(detail::excess(own, usage.limit_bytes, marks.low),
                  detail::excess(used, usage.device_total, marks.low));
}

/// Why a pool may not be evicted, first match in this order (the precedence when several
/// hold: a critical pinned pool is `critical`).
enum class refusal : std::uint8_t {
  none,              // it may be evicted
  not_evictable,     // created evictable=false, or the default pool
  critical,          // priority critical: never evicted, not even on out_of_memory
  pinned_or_active,  // pinned, or activated and not deactivated
  prefetched,        // restored by prefetch and not used yet (any reason but out_of_memory)
  nothing_resident,  // no resident bytes to evict
};

/// "none", "not evictable", "critical", "pinned or active", "prefetched and not used yet",
/// "nothing resident". Pure; any thread.
[[nodiscard]] constexpr char const* to_string(refusal why) noexcept
{
  switch (why) {
    case refusal::none:
      return "none";
    case refusal::not_evictable:
      return "not evictable";
    case refusal::critical:
      return "critical";
    case refusal::pinned_or_active:
      return "pinned or active";
    case refusal::prefetched:
      return "prefetched and not used yet";
    case refusal::nothing_resident:
      return "nothing resident";
  }
  return "?";
}

/// The first reason, in `refusal`'s order, why `pool` may not be evicted for `reason`;
/// `refusal::none` when it may. The default pool is never evictable, whatever its flag
/// says. Pure; any thread.
[[nodiscard]] constexpr refusal refusal_of(pool_view const& pool, room_reason reason) noexcept
{
  if (!pool.evictable || pool.id == default_pool) { return refusal::not_evictable; }
  if (pool.priority == pool_priority::critical) { return refusal::critical; }
  if (pool.pinned) { return refusal::pinned_or_active; }
  if (pool.prefetched && reason != room_reason::out_of_memory) { return refusal::prefetched; }
  if (pool.resident_bytes == 0) { return refusal::nothing_resident; }
  return refusal::none;
}

/// nullptr when `pool` may be evicted for `reason`, else why not: `to_string(refusal_of)`.
/// Pure; any thread.
[[nodiscard]] constexpr char const* eviction_refusal(pool_view const& pool,
                                                     room_reason reason) noexcept
{
  refusal const why = refusal_of(pool, reason);
  return why == refusal::none ? nullptr : to_string(why);
}

/// True when `a` is a victim before `b` (DESIGN §8): lower priority first, then least
/// recently used (smaller last_use), then the smaller pool id. Pure; any thread.
[[nodiscard]] constexpr bool victim_before(pool_view const& a, pool_view const& b) noexcept
{
  if (a.priority != b.priority) { return a.priority < b.priority; }
  if (a.last_use != b.last_use) { return a.last_use < b.last_use; }
  return a.id < b.id;
}

// ------------------------------------------------------------------ plans

/**
 * @brief Bytes of free pinned host room to hold ready for the next eviction on a device
 *        (host_store::prepin pins up to it; host_store::trim keeps it): the resident bytes
 *        of the first pool the monitor would evict (victim order, `victim_before`, among
 *        pools with no `refusal_of` for room_reason::monitor), once use has reached the
 *        low watermark (pressure WARNING or above); 0 below it, when no pool may be
 *        evicted, or when the host is short of memory (`host_short`: host_memory_short).
 *
 * Why: an eviction's raw copies need pinned room as fast as the link fills it, and a
 * first (cold) eviction that pins on its copy path runs at pinning speed: 0.34 ms/MiB
 * by cuMemHostAlloc, about 0.13 registered, against 0.018 ms/MiB of link on an H100
 * (../shared/notes/gpu-speed.md, "pin ahead of need ... when the policy crosses its watermark").
 * From the low watermark on, the next eviction is near and its victim known. The bound is the
 * victim's raw size: compression behind the copies gives room back only later, so a fast eviction
 * needs all of it.
 * @pre watermark_problem(marks) is empty. Pure; any thread.
 */
[[nodiscard]] constexpr std::size_t pinned_reserve_bytes(device_usage usage,
                                                         std::span<pool_view const> pools,
                                                         watermarks marks, bool host_short) noexcept
{
  if (host_short || pressure_of(usage, marks) == pressure_level::safe) { return 0; }
  pool_view const* victim = nullptr;
  for (pool_view const& pool : pools) {
    if (refusal_of(pool, room_reason::monitor) != refusal::none) { continue; }
    if (victim == nullptr || victim_before(pool, *victim)) { victim = &pool; }
  }
  return victim == nullptr ? 0 : victim->resident_bytes;
}

/// One thing to do to one pool.
struct room_step {
  enum class action : std::uint8_t { release_cached, evict };
  action what{action::release_cached};
  pool_id pool{0};
  std::size_t bytes{0};  // a whole number of the pool's pages (rounded up, capped at what it has)

  [[nodiscard]] bool operator==(room_step const&) const noexcept = default;
};

/// "release_cached" or "evict". Pure; any thread.
[[nodiscard]] constexpr char const* to_string(room_step::action what) noexcept
{
  return what == room_step::action::evict ? "evict" : "release_cached";
}

/// Steps to carry out in order. See `plan_room`.
struct room_plan {
  std::size_t needed{0};   // bytes_to_free
  std::size_t planned{0};  // sum of the steps' bytes (saturating)
  std::vector<room_step> steps;
  /// The steps free what is needed. False for out_of_memory (needed is SIZE_MAX): that plan
  /// is everything allowed, and the allocation's one retry tells whether it was enough.
  [[nodiscard]] bool enough() const noexcept { return planned >= needed; }
};

namespace detail {

/// Appends a step of `what` on `pool` taking at most `available` bytes, rounded up to the
/// pool's pages, of what `plan` still needs; none when it would be empty or is not needed.
inline void add_step(room_plan& plan, room_step::action what, pool_view const& pool,
                     std::size_t available)
{
  if (plan.enough()) { return; }  // a rounded-up step may have passed `needed`
  std::size_t const wanted = round_up(plan.needed - plan.planned, pool.page_size);
  std::size_t const bytes  = std::min(wanted, available);
  if (bytes == 0) { return; }
  plan.steps.push_back(room_step{what, pool.id, bytes});
  plan.planned = saturating_add(plan.planned, bytes);
}

/// Cached pages of a pool that may not be evicted (for a reason other than having nothing
/// resident) are likely reused by it soon: they are released last.
[[nodiscard]] constexpr bool release_last(pool_view const& pool, room_reason reason) noexcept
{
  refusal const why = refusal_of(pool, reason);
  return why != refusal::none && why != refusal::nothing_resident;
}

}  // namespace detail

/**
 * @brief What to do to free `bytes_to_free(usage, request, marks, reason)` bytes, in order
 *        (DESIGN §8):
 *        1. release cached pages (no copy), from every pool, pinned and critical ones
 *           included, in victim order (`victim_before`), with the pools that may not be
 *           evicted (`refusal_of` other than none and nothing_resident) last;
 *        2. evict the pools that may be evicted (`refusal_of` is none), in victim order.
 *        Each step takes only what is still needed, rounded up to the pool's page size
 *        and capped at the pool's cached (1) or resident (2) bytes; planning stops once
 *        planned >= needed. needed == 0 gives no step. For out_of_memory every cached byte
 *        and every resident byte of an evictable pool is planned. A pool may get one step
 *        of each kind.
 * @param pools one view per pool of the device, ids distinct, in any order.
 * @pre watermark_problem(marks) is empty.
 * @throws std::bad_alloc only. Pure; any thread.
 */
[[nodiscard]] inline room_plan plan_room(device_usage usage, std::span<pool_view const> pools,
                                         std::size_t request, watermarks marks, room_reason reason)
{
  room_plan plan;
  plan.needed = bytes_to_free(usage, request, marks, reason);
  if (plan.needed == 0) { return plan; }
  std::vector<pool_view const*> order;
  order.reserve(pools.size());
  for (pool_view const& pool : pools) {
    order.push_back(&pool);
  }
  std::sort(order.begin(), order.end(), [reason](pool_view const* a, pool_view const* b) {
    bool const a_last = detail::release_last(*a, reason);
    bool const b_last = detail::release_last(*b, reason);
    return a_last != b_last ? b_last : victim_before(*a, *b);
  });
  for (pool_view const* pool : order) {
    if (plan.enough()) { return plan; }
    detail::add_step(plan, room_step::action::release_cached, *pool, pool->cached_bytes);
  }
  std::sort(order.begin(), order.end(),
            [](pool_view const* a, pool_view const* b) { return victim_before(*a, *b); });
  for (pool_view const* pool : order) {
    if (plan.enough()) { return plan; }
    if (refusal_of(*pool, reason) != refusal::none) { continue; }
    detail::add_step(plan, room_step::action::evict, *pool, pool->resident_bytes);
  }
  return plan;
}

/// What could be freed, by category: the out-of-memory advice's figures.
struct room_census {
  std::size_t cached{0};         // cached bytes of all pools
  std::size_t evictable{0};      // resident bytes of pools that may be evicted
  std::size_t pinned{0};         // resident bytes of pinned or active pools
  std::size_t critical{0};       // ... of critical pools
  std::size_t not_evictable{0};  // ... of non-evictable pools (the default pool included)
  std::size_t prefetched{0};     // ... of prefetched pools not used yet (when refused)
  /// Bytes a plan for the same reason can free: cached + evictable (saturating).
  [[nodiscard]] std::size_t freeable() const noexcept
  {
    return detail::saturating_add(cached, evictable);
  }
};

/**
 * @brief Sums `pools` by category for `reason`: every pool's cached bytes, and each pool's
 *        resident bytes under its `refusal_of` (a critical pinned pool counts as critical
 *        only). Sums saturate. Pure; any thread.
 */
[[nodiscard]] constexpr room_census census_of(std::span<pool_view const> pools,
                                              room_reason reason) noexcept
{
  room_census census;
  for (pool_view const& pool : pools) {
    census.cached         = detail::saturating_add(census.cached, pool.cached_bytes);
    std::size_t* category = nullptr;
    switch (refusal_of(pool, reason)) {
      case refusal::none:
        category = &census.evictable;
        break;
      case refusal::not_evictable:
        category = &census.not_evictable;
        break;
      case refusal::critical:
        category = &census.critical;
        break;
      case refusal::pinned_or_active:
        category = &census.pinned;
        break;
      case refusal::prefetched:
        category = &census.prefetched;
        break;
      case refusal::nothing_resident:
        continue;
    }
    if (category != nullptr) { *category = detail::saturating_add(*category, pool.resident_bytes); }
  }
  return census;
}

// ------------------------------------------------------------------ pages

/// What page choice knows of one page of a pool.
struct page_view {
  std::size_t index{0};   // the page's index in the pool's range (its address order)
  bool needs_copy{true};  // false: no live bytes, or a current host copy kept (DESIGN §6)
};

/**
 * @brief The pages of one pool to evict for `bytes`: those that need no copy first, then
 *        the others, each group in index (address) order; at most ceil(bytes / page_size)
 *        of them (all of them for bytes = SIZE_MAX, none for 0). A page_size of 0 counts
 *        as 1.
 * @param pages the candidates, indices distinct, in any order.
 * @return their indices. @throws std::bad_alloc only. Pure; any thread.
 */
[[nodiscard]] inline std::vector<std::size_t> plan_pages(std::span<page_view const> pages,
                                                         std::size_t bytes, std::size_t page_size)
{
  std::size_t const page  = std::max<std::size_t>(page_size, 1);
  std::size_t const count = std::min(pages.size(), bytes / page + (bytes % page != 0 ? 1 : 0));
  std::vector<page_view> order(pages.begin(), pages.end());
  auto const before = [](page_view const& a, page_view const& b) {
    return a.needs_copy != b.needs_copy ? b.needs_copy : a.index < b.index;
  };
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(count), order.end(),
                    before);
  std::vector<std::size_t> chosen;
  chosen.reserve(count);
  for (std::size_t at = 0; at < count; ++at) {
    chosen.push_back(order[at].index);
  }
  return chosen;
}

}  // namespace swapalloc
