/**
 * @file worker_pool.hpp
 * @brief A fixed set of CPU threads for the host tier's compression and decompression
 *        (DESIGN §7), and the task groups that callers wait on.
 *
 * Eviction copies raw pages into pinned host memory at link speed; compressing them is
 * ~70x slower per core, so it runs behind the copies on a `worker_pool`, and restores
 * decompress chunks on several threads at once. A caller submits tasks into a
 * `task_group` and waits for the group, not for the pool: several evictions can share one
 * pool and each waits only for its own chunks. `wait_until_at_most` is the flow control
 * that keeps an eviction from queueing more work than the host budget can hold.
 *
 * Tasks run in FIFO order of submission (started in order; with several threads they
 * finish in any order). They are CPU work only: a task must not call the driver (a worker
 * has no context current), and must not wait for its own group (it could wait forever).
 * A task's exception is captured in its group and rethrown by `task_group::wait`.
 *
 * Costs: one std::function and one queue node per task, one mutex per pool and one per
 * group; a task should be worth microseconds at least (a 1 MiB chunk is ~1 ms of LZ4).
 *
 * Thread safety: submit, the group's members and the queries may be called from any
 * thread concurrently, tasks included (a task may submit more work).
 */
#pragma once

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace swapalloc {

class worker_pool;

/**
 * @brief Counts a set of submitted tasks and keeps the first exception one of them threw.
 *
 * Reusable: after wait() returns (or throws) the group is empty and may take new tasks.
 * Not copyable or movable (queued tasks refer to it). Destroying a group waits for its
 * pending tasks first, without rethrowing, so a group on the stack of a function that
 * unwinds never leaves tasks pointing at freed memory.
 */
class task_group {
 public:
  task_group()                             = default;
  task_group(task_group const&)            = delete;
  task_group& operator=(task_group const&) = delete;
  task_group(task_group&&)                 = delete;
  task_group& operator=(task_group&&)      = delete;
  ~task_group() { wait_until_at_most(0); }

  /**
   * @brief Blocks until every submitted task has run, then rethrows the first exception
   *        any of them threw (once: the group forgets it), else returns.
   * @pre not called from one of this group's own tasks.
   */
  void wait()
  {
    std::exception_ptr error;
    {
      std::unique_lock lock(mutex_);
      done_.wait(lock, [&] { return pending_.load(std::memory_order_relaxed) == 0; });
      error = std::exchange(error_, nullptr);
    }
    if (error) { std::rethrow_exception(error); }
  }

  /// Tasks submitted and not yet finished (a snapshot; it may change at once).
  [[nodiscard]] std::size_t pending() const noexcept
  {
    return pending_.load(std::memory_order_acquire);
  }

  /// Blocks until at most `remaining` tasks of the group are pending (flow control).
  /// Does not rethrow: the exceptions wait for wait().
  void wait_until_at_most(std::size_t remaining)
  {
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return pending_.load(std::memory_order_relaxed) <= remaining; });
  }

 private:
  friend class worker_pool;

  void add() noexcept { pending_.fetch_add(1, std::memory_order_relaxed); }

  // Called by a worker after a task ran (or by submit when queueing failed). Notifies
  // under the lock: once the lock is released the group may be destroyed by its waiter.
  void finish(std::exception_ptr error) noexcept
  {
    std::lock_guard lock(mutex_);
    if (error && !error_) { error_ = std::move(error); }
    pending_.fetch_sub(1, std::memory_order_release);
    done_.notify_all();
  }

  std::atomic<std::size_t> pending_{0};  // atomic so that pending() needs no lock
  mutable std::mutex mutex_;             // guards error_ and orders pending_ with done_
  std::condition_variable done_;
  std::exception_ptr error_;
};

/// Which queue a task joins: urgent tasks run before every normal one (a restore's
/// decoding, which a caller waits for, before background compression).
enum class task_priority : std::uint8_t { normal, urgent };

/**
 * @brief A fixed set of threads running submitted tasks: urgent ones first, each queue in
 *        FIFO order. A caller that would wait for a group's queued tasks can run them
 *        itself (`run_queued`).
 *
 * Destruction lets the workers finish every queued task, then joins them.
 */
class worker_pool {
 public:
  /**
   * @brief Starts `threads` workers.
   * @throws std::invalid_argument for 0 threads; std::system_error if a thread cannot start
   *         (the ones started are stopped and joined first).
   */
  explicit worker_pool(std::size_t threads)
  {
    if (threads == 0) {
      throw std::invalid_argument("swapalloc: worker_pool(0): a pool needs at least one thread");
    }
    workers_.reserve(threads);
    try {
      for (std::size_t i = 0; i < threads; ++i) {
        workers_.emplace_back([this] { run(); });
      }
    } catch (...) {
      stop_and_join();
      throw;
    }
  }

  worker_pool(worker_pool const&)            = delete;
  worker_pool& operator=(worker_pool const&) = delete;
  worker_pool(worker_pool&&)                 = delete;
  worker_pool& operator=(worker_pool&&)      = delete;

  /// Runs every queued task, then joins the workers.
  /// @pre no thread submits once destruction has begun (tasks may, until they finish).
  ~worker_pool() { stop_and_join(); }

  /// Number of worker threads.
  [[nodiscard]] std::size_t size() const noexcept { return workers_.size(); }

  /**
   * @brief Queues `task` for a worker, counted in `group` until it has run; an urgent task
   *        runs before every normal one queued.
   *
   * An exception the task throws is captured in `group` (the first one is kept).
   * @pre `group` outlives the task (its destructor waits, so this holds unless the group
   *      is freed without destruction); the pool is not being destroyed by another thread.
   * @throws std::invalid_argument for an empty `task`; std::bad_alloc (nothing queued,
   *         `group` unchanged).
   */
  void submit(task_group& group, std::function<void()> task,
              task_priority priority = task_priority::normal)
  {
    if (!task) { throw std::invalid_argument("swapalloc: worker_pool::submit: empty task"); }
    group.add();  // before queueing: a fast worker must never see the count below zero
    try {
      std::lock_guard lock(mutex_);
      (priority == task_priority::urgent ? urgent_ : queue_)
        .push_back(queued{&group, std::move(task)});
    } catch (...) {
      group.finish(nullptr);
      throw;
    }
    ready_.notify_one();
  }

  /**
   * @brief Takes `group`'s tasks that no worker has started off the queues and runs them on
   *        the calling thread, in order, as a worker would (exceptions go to `group`): a
   *        caller about to wait for the group does not wait behind other groups' tasks.
   *        Tasks already running are left to their workers. Cost: a scan of the queues
   *        under the pool's mutex, then the tasks.
   * @return how many tasks it ran. @throws std::bad_alloc (nothing taken then).
   * Thread safety: any thread but a worker of this pool running one of `group`'s tasks.
   */
  std::size_t run_queued(task_group& group)
  {
    std::vector<queued> taken;
    {
      std::lock_guard lock(mutex_);
      for (std::deque<queued>* const queue : {&urgent_, &queue_}) {
        auto const mine = [&](queued const& q) { return q.group == &group; };
        taken.reserve(taken.size() +
                      static_cast<std::size_t>(std::count_if(queue->begin(), queue->end(), mine)));
        for (queued& q : *queue) {
          if (!mine(q)) { continue; }
          taken.push_back(queued{q.group, std::move(q.task)});
          q.group = nullptr;  // taken: erased below
        }
        queue->erase(std::remove_if(queue->begin(), queue->end(),
                                    [](queued const& q) { return q.group == nullptr; }),
                     queue->end());
      }
    }
    for (queued& next : taken) {
      execute(next);
    }
    return taken.size();
  }

 private:
  struct queued {
    task_group* group;
    std::function<void()> task;
  };

  void run() noexcept
  {
    for (;;) {
      queued next;
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [&] { return stopping_ || !urgent_.empty() || !queue_.empty(); });
        std::deque<queued>& from = !urgent_.empty() ? urgent_ : queue_;
        if (from.empty()) { return; }  // stopping, and the queues are drained
        next = std::move(from.front());
        from.pop_front();
      }
      execute(next);
    }
  }

  /// Runs `next` and tells its group, with the task's captures gone first.
  static void execute(queued& next) noexcept
  {
    std::exception_ptr error;
    try {
      next.task();
    } catch (...) {
      error = std::current_exception();
    }
    next.task = nullptr;  // the task's captures go before the group learns it is done
    next.group->finish(std::move(error));
  }

  void stop_and_join() noexcept
  {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (std::thread& worker : workers_) {
      if (worker.joinable()) { worker.join(); }
    }
  }

  std::mutex mutex_;  // guards urgent_, queue_ and stopping_
  std::condition_variable ready_;
  std::deque<queued> urgent_;
  std::deque<queued> queue_;
  bool stopping_{false};
  std::vector<std::thread> workers_;
};

}  // namespace swapalloc
