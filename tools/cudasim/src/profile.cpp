/**
 * @file profile.cpp
 * @brief Cost profiles: the built-in h100 text, the parser, and time-scaled charging
 *        (see profile.hpp; the values' sources are in tools/cudasim/README.md).
 */
#include "profile.hpp"

#include "link.hpp"
#include "state.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <utility>

namespace cudasim {
namespace {

// An H100 80GB HBM3 (PCIe Gen5) on an x86 host: tools/cudasim/README.md, "Cost profiles",
// gives the source of every value; "assumed" ones await tools/gpu-profile.
constexpr std::string_view h100_text = R"(# cudasim cost profile: h100
cuMemHostAlloc     per_mib_us=340 driver_lock   # 0.34 ms/MiB pinning, 8xH100 host
cuMemAllocHost     per_mib_us=340 driver_lock
cuMemFreeHost      per_mib_us=95  driver_lock sync  # 0.08-0.11 ms/MiB, synchronizes
cuMemHostRegister  per_mib_us=110 driver_lock   # pre-faulted pages, ~0.11 ms/MiB: ai-dynamo/dynamo#13710's 32-thread case, derived
cuMemHostUnregister per_mib_us=95 driver_lock sync  # as cuMemFreeHost (same sources)
cuMemCreate        fixed_us=10    # create+map+access+unmap+release = 51 us (measured);
cuMemMap           fixed_us=2     # the split between them is assumed
cuMemSetAccess     fixed_us=20
cuMemUnmap         fixed_us=15
cuMemRelease       fixed_us=4
cuMemRetainAllocationHandle fixed_us=1  # not measured: assumed a lookup (gpu-profile times it)
cuMemcpyHtoDAsync  fixed_us=2.5   # issue cost, estimated
cuMemcpyDtoHAsync  fixed_us=2.5
cuMemsetD8Async    fixed_us=2.5
cuMemcpyBatchAsync fixed_us=2.5 per_copy_us=0.5  # assumed: tools/gpu-profile times it
cuEventRecord      fixed_us=1
cuEventQuery       fixed_us=1
cuStreamWaitEvent  fixed_us=1
link h2d_gbps=54.9 d2h_gbps=54.9 gap_us=2.3 duplex_d2h=0.62
)";

constexpr double seconds_per_us = 1e-6;
constexpr double mib            = 1024.0 * 1024.0;
// Costs below this are owed and slept together (timer slack is ~50 us per sleep).
constexpr std::chrono::microseconds owed_threshold{200};

struct charging_state {
  cost_profile profile;
  double scale{1};
  std::array<std::atomic<double>, entry_count> seconds{};  // unscaled (the GPU's time)
  std::array<std::atomic<unsigned long long>, entry_count> calls{};
};

std::atomic<charging_state*> active{nullptr};  // written once at cuInit, never freed
std::mutex driver_lock;                        // the modelled driver-global lock

[[nodiscard]] std::string_view trim(std::string_view text) noexcept
{
  auto const first = text.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) { return {}; }
  return text.substr(first, text.find_last_not_of(" \t\r") - first + 1);
}

[[nodiscard]] bool parse_number(std::string_view text, double& out) noexcept
{
  double value             = 0;
  auto const [end, status] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || status != std::errc{} || end != text.data() + text.size() ||
      !std::isfinite(value) || value < 0) {
    return false;
  }
  out = value;
  return true;
}

/// `key=value` split at the first '='; both empty when the word has none.
[[nodiscard]] std::pair<std::string_view, std::string_view> split_key_value(
  std::string_view word) noexcept
{
  auto const equals = word.find('=');
  if (equals == std::string_view::npos) { return {}; }
  return {word.substr(0, equals), word.substr(equals + 1)};
}

/// Applies one `key=value` or flag word of an entry line (`batch`: cuMemcpyBatchAsync's);
/// false when it is not one. per_copy_us belongs to cuMemcpyBatchAsync alone: no other call
/// makes several copies, so on any other line it is a mistake, refused rather than ignored.
[[nodiscard]] bool apply_entry_word(std::string_view word, bool batch, entry_cost& cost) noexcept
{
  if (word == "driver_lock") { return cost.holds_driver_lock = true; }
  if (word == "sync") { return cost.syncs_device = true; }
  auto const [key, val] = split_key_value(word);
  if (key == "fixed_us") { return parse_number(val, cost.fixed_us); }
  if (key == "per_mib_us") { return parse_number(val, cost.per_mib_us); }
  if (key == "per_copy_us") { return batch && parse_number(val, cost.per_copy_us); }
  return false;
}

/// Applies one word of the link line; false when it is not one.
[[nodiscard]] bool apply_link_word(std::string_view word, link_cost& link) noexcept
{
  auto const [key, val] = split_key_value(word);
  if (key == "h2d_gbps") { return parse_number(val, link.h2d_gbps); }
  if (key == "d2h_gbps") { return parse_number(val, link.d2h_gbps); }
  if (key == "gap_us") { return parse_number(val, link.gap_us); }
  if (key == "duplex_d2h") {
    return parse_number(val, link.duplex_d2h) && link.duplex_d2h > 0 && link.duplex_d2h <= 1;
  }
  return false;
}

/// Parses one non-empty line; the error text without the origin, or empty.
[[nodiscard]] std::string parse_line(std::string_view line, cost_profile& profile)
{
  std::istringstream words{std::string(line)};
  std::string head;
  words >> head;
  bool const is_link = head == "link";
  // The entry's index and whether it is the batch entry, taken out of the optional at once:
  // GCC 12 at -O1 (the TSan build) reports the optional's flag "may be used uninitialized"
  // when it is compared later.
  std::size_t index = entry_count;
  bool batch        = false;
  if (!is_link) {
    std::optional<entry> const e = find_entry(head);
    if (!e) { return "'" + head + "' is neither 'link' nor an entry point the simulator has"; }
    index = static_cast<std::size_t>(*e);
    batch = *e == entry::memcpy_batch_async;
  }
  entry_cost cost;
  for (std::string word; words >> word;) {
    bool const ok =
      is_link ? apply_link_word(word, profile.link) : apply_entry_word(word, batch, cost);
    if (!ok) {
      return "'" + word + "' is not valid: expected " +
             (is_link ? "h2d_gbps=, d2h_gbps=, gap_us= (numbers >= 0) or duplex_d2h= (in (0, 1])"
                      : "fixed_us=, per_mib_us= (numbers >= 0), per_copy_us= (a number >= 0, "
                        "cuMemcpyBatchAsync only), driver_lock or sync");
    }
  }
  if (index != entry_count) { profile.entries[index] = cost; }
  return {};
}

void sleep_owed(std::chrono::duration<double, std::micro> cost) noexcept
{
  thread_local std::chrono::duration<double, std::micro> owed{0};
  owed += cost;
  if (owed < owed_threshold) { return; }
  auto const start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(owed);
  owed -= std::chrono::steady_clock::now() - start;  // an oversleep is credited...
  owed = std::max(owed, std::chrono::duration<double, std::micro>(-owed_threshold));  // ...a little
}

}  // namespace

std::string_view builtin_profile_text(std::string_view name) noexcept
{
  return name == "h100" ? h100_text : std::string_view{};
}

std::variant<cost_profile, std::string> parse_profile(std::string_view text,
                                                      std::string const& origin)
{
  cost_profile profile;
  profile.name    = origin;
  std::size_t row = 0;
  while (!text.empty()) {
    ++row;
    auto const newline    = text.find('\n');
    std::string_view line = text.substr(0, newline);
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
    line = trim(line.substr(0, line.find('#')));
    if (line.empty()) { continue; }
    if (std::string error = parse_line(line, profile); !error.empty()) {
      std::string message = "cudasim: SWAPALLOC_SIM_PROFILE='";
      message += origin;
      message += "' line ";
      message += std::to_string(row);
      message += ": ";
      message += error;
      return message;
    }
  }
  return profile;
}

std::variant<cost_profile, std::string> load_profile(std::string const& name_or_path)
{
  if (std::string_view const text = builtin_profile_text(name_or_path); !text.empty()) {
    return parse_profile(text, name_or_path);
  }
  std::ifstream file(name_or_path);
  if (!file) {
    return "cudasim: SWAPALLOC_SIM_PROFILE='" + name_or_path +
           "' is not valid: expected a built-in profile (h100) or a readable profile file";
  }
  std::ostringstream text;
  text << file.rdbuf();
  return parse_profile(text.str(), name_or_path);
}

void activate_profile(cost_profile const& profile, double scale)
{
  auto* const state  = new charging_state();  // never freed: charged by threads at exit
  state->profile     = profile;
  state->scale       = scale;
  link_cost const& l = profile.link;
  set_link_model({l.h2d_gbps / scale, l.d2h_gbps / scale, l.gap_us * scale, l.duplex_d2h});
  active.store(state, std::memory_order_release);
}

bool profile_active() noexcept { return active.load(std::memory_order_acquire) != nullptr; }

void charge(entry e, std::size_t bytes, std::size_t copies) noexcept
{
  charging_state* const state = active.load(std::memory_order_acquire);
  if (state == nullptr) [[likely]] { return; }
  auto const index       = static_cast<std::size_t>(e);
  entry_cost const& cost = state->profile.entries[index];
  if (cost.syncs_device) {
    simulator& sim = simulator::get();
    for (int ordinal = 0; ordinal < sim.device_count(); ++ordinal) {
      synchronize_context(sim.find_device(ordinal)->context);
    }
  }
  double const us = cost.fixed_us + cost.per_mib_us * static_cast<double>(bytes) / mib +
                    cost.per_copy_us * static_cast<double>(copies);
  if (us <= 0) { return; }
  state->seconds[index].fetch_add(us * seconds_per_us, std::memory_order_relaxed);
  state->calls[index].fetch_add(1, std::memory_order_relaxed);
  std::chrono::duration<double, std::micro> const scaled{us * state->scale};
  if (cost.holds_driver_lock) {
    std::lock_guard const lock(driver_lock);
    std::this_thread::sleep_for(scaled);
    return;
  }
  {
    std::lock_guard const wait_for_holder(driver_lock);
  }
  sleep_owed(scaled);
}

std::string_view active_profile_name() noexcept
{
  charging_state const* const state = active.load(std::memory_order_acquire);
  return state == nullptr ? std::string_view{} : std::string_view{state->profile.name};
}

double active_time_scale() noexcept
{
  charging_state const* const state = active.load(std::memory_order_acquire);
  return state == nullptr ? 0.0 : state->scale;
}

charged_totals charged() noexcept
{
  charged_totals totals;
  charging_state const* const state = active.load(std::memory_order_acquire);
  if (state == nullptr) { return totals; }
  for (std::size_t i = 0; i < entry_count; ++i) {
    totals.seconds[i] = state->seconds[i].load(std::memory_order_relaxed);
    totals.calls[i]   = state->calls[i].load(std::memory_order_relaxed);
  }
  return totals;
}

}  // namespace cudasim

int cudasimGetProfile(cudasim_profile_info* out)
{
  if (out == nullptr) { return 0; }
  std::string_view const name = cudasim::active_profile_name();
  *out = {name.empty() ? nullptr : name.data(), cudasim::active_time_scale()};
  return name.empty() ? 0 : 1;
}
