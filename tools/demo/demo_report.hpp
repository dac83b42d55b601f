/**
 * @file demo_report.hpp
 * @brief What the demo prints, as pure functions of its results: one short line per step
 *        (device use and pressure level, each pool's resident, evicted and compressed bytes,
 *        what moved and how fast), the out-of-memory report of a mode that ran out, whether
 *        the modes' outputs are identical, and the summary table comparing the modes.
 *
 * Sizes are shown in MiB with one decimal in the step lines (short), with bytes_text
 * elsewhere; rates in 10^9 bytes per second ("GB/s"), times in seconds.
 *
 * Thread safety: pure functions.
 */
#pragma once

#include <swapalloc/report.hpp>

#include "demo_options.hpp"
#include "demo_run.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <span>
#include <string>
#include <vector>

namespace swapalloc::demo {

/// printf into a std::string.
template <class... Args>
[[nodiscard]] std::string format(char const* pattern, Args... args)
{
  int const length = std::snprintf(nullptr, 0, pattern, args...);
  if (length <= 0) { return {}; }
  std::string text(static_cast<std::size_t>(length) + 1, '\0');
  std::snprintf(text.data(), text.size(), pattern, args...);
  text.pop_back();
  return text;
}

/// "112.0" (MiB, one decimal).
[[nodiscard]] inline std::string mib(std::size_t bytes)
{
  return format("%.1f", static_cast<double>(bytes) / (1024.0 * 1024.0));
}

/// "2.81 GB/s" for `bytes` in `seconds`; "-" when not timed.
[[nodiscard]] inline std::string rate(std::size_t bytes, double seconds)
{
  if (seconds <= 0.0) { return "-"; }
  return format("%.2f GB/s", static_cast<double>(bytes) / seconds / 1e9);
}

/// "1.234 s".
[[nodiscard]] inline std::string seconds_text(double seconds) { return format("%.3f s", seconds); }

/// The legend printed above a mode's step lines.
inline constexpr char const* step_legend =
  "  mode request step model  time  device use/limit, level  per pool: resident|evicted|"
  "compressed MiB\n  then what the step evicted and restored (host store) and read (model "
  "files), and how fast";

/// "evicted 96.0 MiB 3.20 GB/s" for the events of `kinds` in `record`; empty when none.
[[nodiscard]] inline std::string moved_text(scenarios::step_record const& record, char const* verb,
                                            std::initializer_list<event_kind> kinds)
{
  std::size_t bytes = 0;
  double seconds    = 0.0;
  for (swap_event const& event : record.events) {
    if (std::find(kinds.begin(), kinds.end(), event.kind) != kinds.end()) {
      bytes += event.bytes;
      seconds += event.duration_s;
    }
  }
  if (bytes == 0) { return ""; }
  return std::string("  ") + verb + " " + mib(bytes) + " MiB " + rate(bytes, seconds);
}

/**
 * @brief The line of one step, e.g. "swapalloc    2/10 1 sdxl           0.213 s  298.0/352.0
 *        MiB  85% CRITICAL  sdxl 112.0|0.0|0.0 birefnet ...  restored 112.0 MiB 2.80 GB/s".
 */
[[nodiscard]] inline std::string step_line(step_view const& view)
{
  scenarios::step_record const& r = *view.record;
  std::string const where         = view.request == 0
                                      ? std::string("final")
                                      : format("%zu/%zu %zu", view.request, view.requests, view.step);
  std::string const step =
    r.name.substr(r.name.rfind(": ") == std::string::npos ? 0 : r.name.rfind(": ") + 2);
  double const used = r.limit_bytes == 0 ? 0.0
                                         : 100.0 * static_cast<double>(r.own_bytes) /
                                             static_cast<double>(r.limit_bytes);
  std::string line =
    format("%-11s %-9s %-14s %8s  %s/%s MiB %3.0f%% %-9s", to_string(view.mode), where.c_str(),
           step.c_str(), seconds_text(r.duration_s()).c_str(), mib(r.own_bytes).c_str(),
           mib(r.limit_bytes).c_str(), used, to_string(r.pressure));
  for (scenarios::pool_sample const& p : r.pools) {
    line += " " + p.name + " " + mib(p.resident_bytes) + "|" + mib(p.evicted_bytes) + "|" +
            mib(p.compressed_bytes);
  }
  line += moved_text(r, "evicted", {event_kind::evict});
  line += moved_text(r, "restored", {event_kind::restore, event_kind::prefetch});
  if (view.disk.bytes != 0) {
    line += "  read " + mib(view.disk.bytes) + " MiB " + rate(view.disk.bytes, view.disk.seconds);
  }
  return line;
}

/// Whether the modes' outputs agree: each pair compared over the steps both ran.
struct outputs_verdict {
  bool compared{false};  ///< at least two modes produced outputs
  bool identical{true};  ///< no pair differs
  std::size_t steps{0};  ///< the most steps compared in one pair
  std::string text;      ///< "yes (...)", "NO (...)" or "n/a (...)"
};

/**
 * @brief Compares every pair of modes' step outputs over the steps both ran (keep's steps
 *        before its out-of-memory included). The seed's test 4: the same requests give the
 *        same results whatever auto_unload is.
 */
[[nodiscard]] inline outputs_verdict compare_outputs(std::span<mode_result const> results)
{
  outputs_verdict verdict;
  std::string first_difference;
  for (std::size_t a = 0; a < results.size(); ++a) {
    for (std::size_t b = a + 1; b < results.size(); ++b) {
      std::size_t const n = std::min(results[a].outputs.size(), results[b].outputs.size());
      if (n == 0) { continue; }
      verdict.compared  = true;
      verdict.steps     = std::max(verdict.steps, n);
      auto const differ = std::mismatch(results[a].outputs.begin(),
                                        results[a].outputs.begin() + static_cast<std::ptrdiff_t>(n),
                                        results[b].outputs.begin());
      if (differ.first != results[a].outputs.begin() + static_cast<std::ptrdiff_t>(n) &&
          first_difference.empty()) {
        auto const step  = static_cast<std::size_t>(differ.first - results[a].outputs.begin());
        first_difference = std::string(to_string(results[a].mode)) + " and " +
                           to_string(results[b].mode) + " differ at request " +
                           std::to_string(step / steps_per_request + 1) + ", step " +
                           std::to_string(step % steps_per_request + 1);
        verdict.identical = false;
      }
    }
  }
  if (!verdict.compared) {
    verdict.text = "n/a (fewer than two modes produced outputs)";
  } else if (verdict.identical) {
    verdict.text = "yes (every step's output hash equal in every mode that ran it, up to " +
                   std::to_string(verdict.steps) + " steps)";
  } else {
    verdict.text = "NO (" + first_difference + ")";
  }
  return verdict;
}

/// "out of memory at request 1, step 3 (flux-inpaint)", "10 of 10 requests", "failed at
/// request 2, step 1 (sdxl)".
[[nodiscard]] inline std::string result_text(mode_result const& r, std::size_t requests)
{
  if (r.completed) {
    return std::to_string(r.requests_done) + " of " + std::to_string(requests) + " requests";
  }
  return std::string(r.out_of_memory ? "out of memory" : "failed") + " at request " +
         std::to_string(r.failed_request) + ", step " + std::to_string(r.failed_step) + " (" +
         r.failed_model + ")";
}

/// result_text for the summary's narrow column: "OOM at request 1, step 3".
[[nodiscard]] inline std::string result_cell(mode_result const& r, std::size_t requests)
{
  if (r.completed) { return result_text(r, requests); }
  return std::string(r.out_of_memory ? "OOM" : "failed") + " at request " +
         std::to_string(r.failed_request) + ", step " + std::to_string(r.failed_step);
}

namespace detail {

/// "1.234 s", or "-" for a negative time (none).
[[nodiscard]] inline std::string time_cell(double seconds)
{
  return seconds < 0.0 ? std::string("-") : seconds_text(seconds);
}

/// The mean of the request times after the first; -1 when there are none.
[[nodiscard]] inline double repeated_mean(mode_result const& r)
{
  if (r.request_seconds.size() < 2) { return -1.0; }
  double const sum = std::accumulate(r.request_seconds.begin() + 1, r.request_seconds.end(), 0.0);
  return sum / static_cast<double>(r.request_seconds.size() - 1);
}

/// "174.00 MiB, 0.41 GB/s", or "-" for no bytes.
[[nodiscard]] inline std::string moved_cell(std::size_t bytes, double seconds)
{
  return bytes == 0 ? std::string("-") : bytes_text(bytes) + ", " + rate(bytes, seconds);
}

/// "290.00 MiB (82%)", or "limit reached (OOM)" for a mode that ran out of memory (its peak
/// lasted too short a time for the sampler).
[[nodiscard]] inline std::string peak_cell(mode_result const& r)
{
  if (r.out_of_memory) { return "limit reached (OOM)"; }
  double const share = r.limit_bytes == 0 ? 0.0
                                          : 100.0 * static_cast<double>(r.peak_bytes) /
                                              static_cast<double>(r.limit_bytes);
  return format("%s (%.0f%%)", bytes_text(r.peak_bytes).c_str(), share);
}

/// "1.19x (102.00 MiB in 86.04 MiB)", or "-" when nothing is stored.
[[nodiscard]] inline std::string ratio_cell(mode_result const& r)
{
  if (r.host_bytes == 0) { return "-"; }
  return format("%.2fx (%s in %s)", r.compression_ratio(), bytes_text(r.stored_bytes).c_str(),
                bytes_text(r.host_bytes).c_str());
}

/// The cells of one mode's column, in the order of `summary_rows`.
[[nodiscard]] inline std::vector<std::string> summary_column(mode_result const& r,
                                                             std::size_t requests)
{
  std::string intact = "-";
  if (r.weights_intact) {
    intact = *r.weights_intact ? "yes, after " + std::to_string(r.evictions) + " evictions" : "NO";
  }
  return {result_cell(r, requests),
          time_cell(r.request_seconds.empty() ? -1.0 : r.request_seconds.front()),
          time_cell(repeated_mean(r)),
          peak_cell(r),
          bytes_text(r.disk.bytes) + ", " + std::to_string(r.disk.loads) + " loads, " +
            rate(r.disk.bytes, r.disk.seconds),
          moved_cell(r.evicted_bytes, r.evict_seconds),
          moved_cell(r.restored_bytes, r.restore_seconds),
          ratio_cell(r),
          intact};
}

}  // namespace detail

/// The summary's row labels.
inline constexpr std::array<char const*, 9> summary_rows{"requests run",
                                                         "first request",
                                                         "repeated request (mean)",
                                                         "peak device use (sampled)",
                                                         "read from model files",
                                                         "evicted to the host store",
                                                         "restored from the host store",
                                                         "compression ratio",
                                                         "weights bit-identical"};

/**
 * @brief The summary table: one column per mode, the rows of `summary_rows`, then the
 *        outputs' verdict. Peak device use is this process's, sampled, with its share of the
 *        limit.
 */
[[nodiscard]] inline std::string summary_table(std::span<mode_result const> results,
                                               std::size_t requests)
{
  std::vector<std::vector<std::string>> columns;
  std::vector<std::size_t> widths;
  std::size_t label_width = 0;
  for (char const* label : summary_rows) {
    label_width = std::max(label_width, std::string(label).size());
  }
  for (mode_result const& r : results) {
    columns.push_back(detail::summary_column(r, requests));
    std::size_t width = std::string(to_string(r.mode)).size();
    for (std::string const& cell : columns.back()) {
      width = std::max(width, cell.size());
    }
    widths.push_back(width);
  }
  auto const row = [&](std::string const& label, auto const& cell) {
    std::string line = format("  %-*s", static_cast<int>(label_width), label.c_str());
    for (std::size_t c = 0; c < columns.size(); ++c) {
      line += format("  %-*s", static_cast<int>(widths[c]), cell(c).c_str());
    }
    while (!line.empty() && line.back() == ' ') {
      line.pop_back();
    }
    return line + "\n";
  };
  std::string table =
    row("", [&](std::size_t c) { return std::string(to_string(results[c].mode)); });
  for (std::size_t i = 0; i < summary_rows.size(); ++i) {
    table += row(summary_rows[i], [&](std::size_t c) { return columns[c][i]; });
  }
  return table + "outputs identical across modes: " + compare_outputs(results).text + "\n";
}

}  // namespace swapalloc::demo
