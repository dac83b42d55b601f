/**
 * @file host_gate.hpp
 * @brief Host functions that block or mark a stream, to observe asynchrony and ordering
 *        without kernels.
 */
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <swapalloc/driver.hpp>

#include "driver_support.hpp"

namespace swapalloc::testing {

/**
 * @brief A host function that blocks its stream until the test opens the gate.
 *
 * `enqueue(stream)` puts a cuLaunchHostFunc on the stream that waits for `open()`. While
 * it waits, everything behind it on that stream (and what is ordered after it) waits
 * too, which is how the tests observe asynchrony and ordering without kernels.
 *
 * A closed gate also holds back the host functions of *every* stream of the context:
 * the driver calls a context's host functions one at a time, from one thread (cuda.h:
 * host functions of independent streams "may be serialized"; the real driver does, H100,
 * driver 580.159.04, and so does cudasim). So a test that shows another stream making
 * progress while a gate is closed must use memsets, copies or event records on it and
 * poll cuStreamQuery or cuEventQuery (DriverTest::idle_within), not a host function.
 *
 * A watchdog opens the gate after `auto_open` so that a driver that wrongly blocks the
 * caller cannot hang the suite; `opened_by_watchdog()` tells a test that happened (a
 * short `auto_open` is also the way to open a gate "later", from another thread). The
 * gate's state is shared with the host functions, so it may be destroyed before they run.
 */
class host_gate {
 public:
  explicit host_gate(std::chrono::milliseconds auto_open = 10s) : state_(std::make_shared<state>())
  {
    watchdog_ = std::thread([s = state_, auto_open] {
      std::unique_lock lock(s->mutex);
      if (!s->cv.wait_for(lock, auto_open, [&] { return s->open; })) {
        s->open        = true;
        s->by_watchdog = true;
        s->cv.notify_all();
      }
    });
  }
  host_gate(host_gate const&)            = delete;
  host_gate& operator=(host_gate const&) = delete;
  ~host_gate()
  {
    open();
    watchdog_.join();
  }

  /// Blocks `stream` at this point of its work until the gate opens.
  void enqueue(driver const& drv, CUstream stream) const
  {
    drv.check(enqueue_raw(drv, stream), "cuLaunchHostFunc", [] { return std::string("gate"); });
  }
  /// As `enqueue`, returning the CUresult of cuLaunchHostFunc.
  [[nodiscard]] CUresult enqueue_raw(driver const& drv, CUstream stream) const
  {
    auto* holder          = new std::shared_ptr<state>(state_);
    CUresult const result = drv.table().cuLaunchHostFunc(stream, &host_gate::pass, holder);
    if (result != CUDA_SUCCESS) { delete holder; }
    return result;
  }

  void open() const
  {
    std::lock_guard lock(state_->mutex);
    state_->open = true;
    state_->cv.notify_all();
  }
  [[nodiscard]] bool is_open() const
  {
    std::lock_guard lock(state_->mutex);
    return state_->open;
  }
  [[nodiscard]] bool opened_by_watchdog() const
  {
    std::lock_guard lock(state_->mutex);
    return state_->by_watchdog;
  }
  /// How many of this gate's host functions have started running.
  [[nodiscard]] int entered() const noexcept { return state_->entered.load(); }
  /// How many of this gate's host functions have returned.
  [[nodiscard]] int passed() const noexcept { return state_->passed.load(); }

 private:
  struct state {
    std::mutex mutex;
    std::condition_variable cv;
    bool open{false};
    bool by_watchdog{false};
    std::atomic<int> entered{0};
    std::atomic<int> passed{0};
  };

  static void CUDA_CB pass(void* user_data)
  {
    std::unique_ptr<std::shared_ptr<state>> holder(static_cast<std::shared_ptr<state>*>(user_data));
    state& s = **holder;
    s.entered.fetch_add(1);
    {
      std::unique_lock lock(s.mutex);
      s.cv.wait(lock, [&] { return s.open; });
    }
    s.passed.fetch_add(1);
  }

  std::shared_ptr<state> state_;
  std::thread watchdog_;
};

/// Host function: sets the std::atomic<bool> it is given.
inline void CUDA_CB set_flag(void* flag) { static_cast<std::atomic<bool>*>(flag)->store(true); }

/// Host function: sleeps 20 ms (to put measurable time between two event records).
inline void CUDA_CB sleep_20ms(void*) { std::this_thread::sleep_for(20ms); }

}  // namespace swapalloc::testing
