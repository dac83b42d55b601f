/**
 * @file model_faults.hpp
 * @brief Fault episodes of the model test: arming one or two one-shot driver faults around
 *        one allocator call, and telling afterwards whether any call ran while a fault
 *        might have been armed.
 *
 * Contract:
 * - `episode(faults, call)` holds the gate's mutex, arms the faults (cudasimFailCall: the
 *   nth call from now of the entry point fails with its default error), runs `call`,
 *   then clears every fault (cudasimClearFaults) whether or not `call` threw. At most one
 *   episode is armed at a time, process-wide.
 * - Injected faults are global: in the multi-threaded mode a fault armed for one thread's
 *   call may hit another thread's call. `ticket()` before a call and `quiet_since(ticket)`
 *   after it say whether no episode overlapped it; only then is the call held to the
 *   fault-free rules (it must succeed). `quiet()` holds the mutex: no fault can be armed
 *   while it is held (checkpoints, and a retry of the test's own driver call).
 * - Counters: episodes run, faults armed.
 *
 * Thread safety: every member may be called from any thread.
 */
#pragma once

#include "model_ops.hpp"

#include "sim_control.hpp"

#include <atomic>
#include <cstdint>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>

namespace swapalloc::testing::model {

class fault_gate {
 public:
  explicit fault_gate(sim_control const& sim) : sim_(&sim) {}

  fault_gate(fault_gate const&)            = delete;
  fault_gate& operator=(fault_gate const&) = delete;

  /// Runs `call` with `faults` armed (plainly when none is). See the file comment.
  template <typename Call>
  decltype(auto) episode(std::span<fault_spec const> faults, Call&& call)
  {
    bool any = false;
    for (fault_spec const& f : faults) {
      any = any || f.armed();
    }
    if (!any) { return std::forward<Call>(call)(); }
    std::lock_guard const lock(mutex_);
    sequence_.fetch_add(1, std::memory_order_acq_rel);  // odd: armed
    struct disarm {
      fault_gate* gate;
      ~disarm()
      {
        gate->sim_->clear_faults();
        gate->sequence_.fetch_add(1, std::memory_order_acq_rel);  // even: quiet again
      }
    } const guard{this};
    for (fault_spec const& f : faults) {
      if (!f.armed()) { continue; }
      char const* const entry = fault_entries[f.entry % fault_entries.size()];
      if (sim_->fail_call(entry, f.nth, CUDA_SUCCESS) != CUDA_SUCCESS) {
        throw std::logic_error(std::string("cudasimFailCall refused ") + entry);
      }
      faults_armed_.fetch_add(1, std::memory_order_relaxed);
    }
    episodes_.fetch_add(1, std::memory_order_relaxed);
    return std::forward<Call>(call)();
  }

  /// A mark to pass to quiet_since.
  [[nodiscard]] std::uint64_t ticket() const noexcept
  {
    return sequence_.load(std::memory_order_acquire);
  }
  /// True when no fault was armed at `ticket` or since.
  [[nodiscard]] bool quiet_since(std::uint64_t ticket) const noexcept
  {
    return ticket % 2 == 0 && sequence_.load(std::memory_order_acquire) == ticket;
  }
  /// Holds the gate: no episode can arm a fault until the lock is released.
  [[nodiscard]] std::unique_lock<std::mutex> quiet() { return std::unique_lock(mutex_); }

  [[nodiscard]] sim_control const& sim() const noexcept { return *sim_; }
  [[nodiscard]] std::uint64_t episodes() const noexcept { return episodes_.load(); }
  [[nodiscard]] std::uint64_t faults_armed() const noexcept { return faults_armed_.load(); }

 private:
  sim_control const* sim_;
  std::mutex mutex_;
  std::atomic<std::uint64_t> sequence_{0};
  std::atomic<std::uint64_t> episodes_{0};
  std::atomic<std::uint64_t> faults_armed_{0};
};

}  // namespace swapalloc::testing::model
