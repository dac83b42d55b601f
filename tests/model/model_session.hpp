/**
 * @file model_session.hpp
 * @brief Drives a `model_runner` through a sequence of ops: a checkpoint every N ops, a
 *        final checkpoint and clean-up, the last ops kept for the failure report, and the
 *        per-run summary.
 *
 * Contract:
 * - `scheduled_ops` inserts a `checkpoint` op after every `every` ops of its source (none
 *   when `every` is 0). The CTest runs and the shrinker use it alike, so op indices and
 *   checkpoints are the same in a run and in its replay.
 * - `run_session(runner, next, count)` runs `count` ops from `next()`, then
 *   `runner.finish()`. It returns nullopt, or the failure: the op index (count for a
 *   failure in finish), the signature, the message and the last `history` ops with what
 *   each did. It never throws a model_failure.
 * - `summary(counters)` is the one-paragraph report printed per test.
 *
 * Thread safety: one session per runner; sessions of several threads may run at once.
 */
#pragma once

#include "model_ops.hpp"
#include "model_runner.hpp"

#include <swapalloc/allocator.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace swapalloc::testing::model {

/// Ops of `Source` (anything with `op next()`), with a checkpoint after every `every`.
template <typename Source>
class scheduled_ops {
 public:
  scheduled_ops(Source source, std::size_t every) : source_(std::move(source)), every_(every) {}

  [[nodiscard]] op next()
  {
    if (every_ != 0 && since_ == every_) {
      since_ = 0;
      return op{op_kind::checkpoint};
    }
    ++since_;
    return source_.next();
  }

 private:
  Source source_;
  std::size_t every_;
  std::size_t since_{0};
};

/// A failed session. See the file comment.
struct session_failure {
  std::size_t index{0};
  std::string signature;
  std::string message;
  std::string history;
};

/// The last ops of a session, each with its index and what it did.
class op_history {
 public:
  explicit op_history(std::size_t keep) : keep_(keep) {}

  void push(std::size_t index, op const& o)
  {
    if (keep_ == 0) { return; }
    if (lines_.size() == keep_) { lines_.pop_front(); }
    lines_.push_back("  #" + std::to_string(index) + " " + to_string(o));
  }
  /// Appends what the latest op did to its line.
  void note(std::string const& outcome)
  {
    if (!lines_.empty()) { lines_.back() += "  -> " + outcome; }
  }
  [[nodiscard]] std::string text() const
  {
    std::string all;
    for (std::string const& line : lines_) {
      all += line + "\n";
    }
    return all;
  }

 private:
  std::size_t keep_;
  std::deque<std::string> lines_;
};

/// Runs `count` ops from `next` through `runner`, then finishes it. See the file comment.
/// `stop`, when given, ends the session early (another thread failed): no finish then.
template <typename Next>
[[nodiscard]] std::optional<session_failure> run_session(model_runner& runner, Next&& next,
                                                         std::size_t count,
                                                         std::atomic<bool> const* stop = nullptr,
                                                         std::size_t history           = 40)
{
  op_history last(history);
  std::size_t index = 0;
  try {
    for (; index < count; ++index) {
      if (stop != nullptr && stop->load(std::memory_order_relaxed)) { return std::nullopt; }
      op const o = next();
      last.push(index, o);
      last.note(runner.run(o));
    }
    runner.finish();
    return std::nullopt;
  } catch (model_failure const& failure) {
    return session_failure{index, failure.signature(), failure.what(), last.text()};
  } catch (std::exception const& error) {  // an exception the runner did not classify
    return session_failure{index, "uncaught", error.what(), last.text()};
  }
}

/// The allocator of one seed: two compression workers; for a quarter of the seeds a host
/// budget of 6 MiB in 1 MiB slabs (evictions kept short of it), for a third a staging
/// ring and eviction window of 2 (more interleavings of copies and decodes); compression
/// lazy with the default delay (copies stay raw), behind every eviction (compress_after
/// 0), or lazy with a 1 ms delay (each eviction's compression step hands the other
/// pools' raw copies to the workers, which restores then cancel), a third each. The model
/// evicts and restores by its own operations only: the policy's automatic eviction is off
/// (it would evict pools the model writes to without activating them; the policy has its
/// own tests, tests/allocator/allocator_policy_test.cpp).
[[nodiscard]] inline allocator_options allocator_options_for(std::uint64_t seed)
{
  allocator_options o;
  o.workers             = 2;
  o.automatic_eviction  = false;
  std::uint64_t const r = mix64(seed ^ 0x5EEDULL);
  if (r % 4 == 3) {
    o.host.limit_bytes = std::size_t{6} << 20;
    o.host.slab_bytes  = std::size_t{1} << 20;
  }
  if ((r >> 8) % 3 == 2) {
    o.transfer.staging_slots = 2;
    o.transfer.window_pages  = 2;
  }
  if (std::uint64_t const timing = (r >> 16) % 3; timing != 0) {
    o.compress_after = std::chrono::milliseconds(timing == 1 ? 0 : 1);
  }
  return o;
}

/// Each of `runners` runners' share of three quarters of the device's pages: live data
/// alone never fills the device (a full restore always fits), live data and the cache do
/// (out-of-memory recovery runs), and evictions stay cheap enough for 10^6 ops per CI run.
[[nodiscard]] inline std::size_t page_budget(driver const& drv, std::size_t runners)
{
  std::size_t const pages =
    drv.device_total_memory(drv.device(0)) / drv.allocation_granularity(drv.device(0));
  return pages * 3 / 4 / runners;
}

/// What `run_single` did.
struct single_run {
  std::optional<session_failure> failure;
  runner_counters counters;
  std::uint64_t faults_armed{0};
};

/// `count` ops from `next`, single-threaded, on a fresh allocator with the options of
/// `seed`: four pools, three streams, the whole device's page budget. The configuration
/// of ModelTest.SingleThreaded, the shrinker and the fuzz target alike.
/// @pre the device's context is current.
template <typename Next>
[[nodiscard]] single_run run_single(driver const& drv, sim_control const& sim, std::uint64_t seed,
                                    Next&& next, std::size_t count, std::size_t history = 40)
{
  single_run out;
  auto const under_test = std::make_unique<allocator>(drv, allocator_options_for(seed));
  fault_gate gate(sim);
  {
    model_runner runner(*under_test, drv, gate,
                        runner_config{"s", 4, 3, page_budget(drv, 1), seed, true});
    out.failure  = run_session(runner, std::forward<Next>(next), count, nullptr, history);
    out.counters = runner.counters();
  }
  out.faults_armed = gate.faults_armed();
  return out;
}

/// The per-run report: ops by kind, faults, tolerated failures, verification volume.
[[nodiscard]] inline std::string summary(runner_counters const& c, std::uint64_t faults_armed)
{
  std::uint64_t total = 0;
  std::string kinds;
  for (std::size_t k = 0; k < op_kind_count; ++k) {
    total += c.ops[k];
    if (c.ops[k] == 0) { continue; }
    kinds += std::string(kinds.empty() ? "" : ", ") + to_string(static_cast<op_kind>(k)) + " " +
             std::to_string(c.ops[k]);
  }
  return std::to_string(total) + " ops (" + kinds + "); " + std::to_string(c.faulty_ops) +
         " ops with " + std::to_string(faults_armed) + " faults armed, " +
         std::to_string(c.failures_tolerated) + " failures tolerated, " +
         std::to_string(c.oom_tolerated) + " range-full allocations, " +
         std::to_string(c.over_budget) + " allocations over the page budget, " +
         std::to_string(c.evict_refusals) + " evictions short of host budget; " +
         std::to_string(c.restores_verified) + " restores verified, " +
         std::to_string(c.blocks_compared) + " blocks (" + std::to_string(c.bytes_compared >> 20) +
         " MiB) compared";
}

}  // namespace swapalloc::testing::model
