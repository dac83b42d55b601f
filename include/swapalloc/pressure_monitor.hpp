/**
 * @file pressure_monitor.hpp
 * @brief The background monitor (DESIGN §8): a thread that watches each device's use at a
 *        bounded rate and, when this process or another one pushes it past the high
 *        watermark, releases cached pages and evicts the coldest eligible pools down to
 *        the low watermark (`allocator::relieve_pressure`, policy.hpp room_reason::monitor).
 *
 * An explicit object, never a static: whoever owns the allocator starts one (the C++
 * library starts none by default; the PyTorch plugin does) and destroys it before the
 * allocator. The allocator's own pre-eviction only runs when this process maps pages; the
 * monitor is what answers pressure that comes from elsewhere while this process is idle.
 *
 * - **Rate.** One pass over every device, then a wait of `monitor_options::interval` (a
 *   condition variable, so that `stop` ends the wait at once). A pass below the high
 *   watermark costs a lock of each device and at most one cuMemGetInfo per device per
 *   10 ms (device_state.hpp `usage`).
 * - **Compression.** Each pass hands the raw host copies of pools idle past
 *   allocator_options::compress_after, or of the coldest pools while the host store is
 *   past its high watermark, to the compression workers (`allocator::compress_host`).
 * - **Host memory.** Each pass also gives back each device's warm pinned host slabs that
 *   have idled past their delay, or all of them when the host runs short of memory
 *   (`allocator::trim_host`), and then pins, ahead of the next eviction, the pinned room
 *   the latest one needed while it is recent (`allocator::prepin_host`): on this thread,
 *   so that no eviction pins on its copy path.
 * - **Errors.** A step that throws does not end the thread: the error is counted and its
 *   message kept (`errors`, `last_error`), and the next pass tries again. What a failing
 *   step had done before it threw is not in the byte totals (relieve_pressure reports it
 *   only by returning).
 * - **Active and critical pools** are never taken: the allocator's policy decides the
 *   victims under each device's lock (pinned, active, critical and non-evictable pools
 *   are refused there).
 *
 * Thread safety: the queries and `stop` may be called from any thread at any time.
 */
#pragma once

#include <swapalloc/allocator.hpp>
#include <swapalloc/errors.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <thread>

namespace swapalloc {

/// Settings of a `pressure_monitor`.
struct monitor_options {
  /// The wait between two passes over the devices. Accepted: 1 ms to 1 hour.
  std::chrono::milliseconds interval{100};
};

/// The background pressure monitor of one allocator. See the file comment.
class pressure_monitor {
 public:
  static constexpr std::chrono::milliseconds min_interval{1};
  static constexpr std::chrono::milliseconds max_interval{std::chrono::hours(1)};

  /**
   * @brief Checks `options`, then starts the monitor's thread, whose first pass begins at
   *        once.
   * @pre `owner` outlives the monitor (destroy or `stop` the monitor first).
   * @throws config_error ("monitor_options::interval") for an interval outside 1 ms to
   *         1 hour, naming the value and what is accepted; std::system_error if the thread
   *         cannot be started. Nothing runs then.
   */
  explicit pressure_monitor(allocator& owner, monitor_options options = {})
    : owner_(&owner), interval_(checked(options).interval)
  {
    thread_ = std::thread([this] { run(); });
  }

  pressure_monitor(pressure_monitor const&)            = delete;
  pressure_monitor& operator=(pressure_monitor const&) = delete;
  pressure_monitor(pressure_monitor&&)                 = delete;
  pressure_monitor& operator=(pressure_monitor&&)      = delete;

  /// Stops the thread (`stop`).
  ~pressure_monitor() { stop(); }

  /**
   * @brief Ends the monitor: interrupts its wait, lets a pass in progress finish (it holds
   *        one device's lock at a time, for as long as an eviction takes), and joins the
   *        thread. Idempotent; the queries keep their last values.
   * @pre not called from the monitor's own thread (it never calls out to user code).
   * Thread safety: any thread; concurrent calls all return after the join.
   */
  void stop() noexcept
  {
    {
      std::lock_guard const lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    std::lock_guard const joining(join_mutex_);
    if (thread_.joinable()) {
      try {
        thread_.join();
      } catch (...) {  // NOLINT(bugprone-empty-catch): joinable and not self: cannot fail
      }
    }
  }

  /// The wait between two passes.
  [[nodiscard]] std::chrono::milliseconds interval() const noexcept { return interval_; }
  /// Passes completed over every device (a pass whose steps failed counts too).
  [[nodiscard]] std::uint64_t passes() const noexcept
  {
    return passes_.load(std::memory_order_acquire);
  }
  /// Bytes of pool pages evicted by the monitor so far (copied to host memory or unmapped).
  [[nodiscard]] std::size_t evicted_bytes() const noexcept
  {
    return evicted_bytes_.load(std::memory_order_relaxed);
  }
  /// Bytes of cached pages the monitor released so far (no copy).
  [[nodiscard]] std::size_t released_bytes() const noexcept
  {
    return released_bytes_.load(std::memory_order_relaxed);
  }
  /// Host bytes of raw copies the monitor handed to compression so far
  /// (allocator::compress_host).
  [[nodiscard]] std::size_t compressed_bytes() const noexcept
  {
    return compressed_bytes_.load(std::memory_order_relaxed);
  }
  /// Bytes of warm pinned host slabs the monitor gave back so far (allocator::trim_host).
  [[nodiscard]] std::size_t host_released_bytes() const noexcept
  {
    return host_released_bytes_.load(std::memory_order_relaxed);
  }
  /// Bytes of pinned host slabs the monitor pinned ahead of evictions so far
  /// (allocator::prepin_host).
  [[nodiscard]] std::size_t host_pinned_bytes() const noexcept
  {
    return host_pinned_bytes_.load(std::memory_order_relaxed);
  }
  /// Steps that threw so far (at most one per device and pass).
  [[nodiscard]] std::uint64_t errors() const noexcept
  {
    return errors_.load(std::memory_order_acquire);
  }
  /// The message of the latest step that threw, "device N: <what()>"; empty if none did.
  [[nodiscard]] std::string last_error() const
  {
    std::lock_guard const lock(mutex_);
    return last_error_;
  }

 private:
  [[nodiscard]] static monitor_options const& checked(monitor_options const& options)
  {
    if (options.interval < min_interval || options.interval > max_interval) {
      throw config_error(
        "monitor_options::interval",
        "swapalloc: monitor_options::interval=" + std::to_string(options.interval.count()) +
          " ms is out of range: accepted 1 ms to 3600000 ms (1 hour)");
    }
    return options;
  }

  /// The thread: a pass, then a wait that `stop` interrupts, until stopped.
  void run() noexcept
  {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      lock.unlock();
      pass();
      lock.lock();
      (void)wake_.wait_for(lock, interval_, [&] { return stopping_; });
    }
  }

  /// One `relieve_pressure` per device; a step that throws is recorded, not rethrown.
  void pass() noexcept
  {
    int const devices = owner_->device_count();
    for (int device = 0; device < devices; ++device) {
      try {
        room_result const done = owner_->relieve_pressure(device);
        evicted_bytes_.fetch_add(done.evicted_bytes, std::memory_order_relaxed);
        released_bytes_.fetch_add(done.released_bytes, std::memory_order_relaxed);
        compressed_bytes_.fetch_add(owner_->compress_host(device), std::memory_order_relaxed);
        host_released_bytes_.fetch_add(owner_->trim_host(device), std::memory_order_relaxed);
        host_pinned_bytes_.fetch_add(owner_->prepin_host(device), std::memory_order_relaxed);
      } catch (std::exception const& error) {
        record_error(device, error.what());
      } catch (...) {
        record_error(device, "an exception that is not a std::exception");
      }
    }
    passes_.fetch_add(1, std::memory_order_release);
  }

  void record_error(int device, char const* what) noexcept
  {
    {
      std::lock_guard const lock(mutex_);
      try {
        last_error_ = "device " + std::to_string(device) + ": " + what;
      } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory: keep the count only
      }
    }
    errors_.fetch_add(1, std::memory_order_release);
  }

  allocator* owner_;
  std::chrono::milliseconds interval_;
  std::atomic<std::uint64_t> passes_{0};
  std::atomic<std::size_t> evicted_bytes_{0};
  std::atomic<std::size_t> released_bytes_{0};
  std::atomic<std::size_t> compressed_bytes_{0};
  std::atomic<std::size_t> host_released_bytes_{0};
  std::atomic<std::size_t> host_pinned_bytes_{0};
  std::atomic<std::uint64_t> errors_{0};
  mutable std::mutex mutex_;  // guards stopping_ and last_error_; wake_ waits on it
  std::condition_variable wake_;
  bool stopping_{false};
  std::string last_error_;
  std::mutex join_mutex_;  // one joiner at a time: stop() may be called concurrently
  std::thread thread_;     // last: started once every member above exists
};

}  // namespace swapalloc
