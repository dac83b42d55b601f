// Tests of include/swapalloc/worker_pool.hpp: every task runs, in FIFO order on one
// thread, urgent ones first; wait() rethrows the first exception only after every task
// finished; flow control bounds the pending count; destruction drains the queue; a caller
// runs its group's queued tasks itself (run_queued). CPU only: no driver is
// loaded. (SWAPALLOC_WORKERS is parsed in config.hpp: tests/config.)
#include <swapalloc/config.hpp>
#include <swapalloc/worker_pool.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <semaphore>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace swapalloc::testing {
namespace {

using namespace std::chrono_literals;

TEST(WorkerPool, RunsEveryTask)
{
  worker_pool pool(4);
  EXPECT_EQ(pool.size(), 4U);
  task_group group;
  std::atomic<int> ran{0};
  std::vector<std::atomic<int>> hits(10000);
  for (std::size_t i = 0; i < hits.size(); ++i) {
    pool.submit(group, [&, i] {
      hits[i].fetch_add(1);
      ran.fetch_add(1);
    });
  }
  group.wait();
  EXPECT_EQ(ran.load(), 10000);
  EXPECT_EQ(group.pending(), 0U);
  for (std::size_t i = 0; i < hits.size(); ++i) {
    ASSERT_EQ(hits[i].load(), 1) << "task " << i;
  }
}

TEST(WorkerPool, OneThreadRunsTasksInSubmissionOrder)
{
  worker_pool pool(1);
  task_group group;
  std::vector<int> order;  // one worker: no lock needed, and TSan would say otherwise
  for (int i = 0; i < 200; ++i) {
    pool.submit(group, [&order, i] { order.push_back(i); });
  }
  group.wait();
  ASSERT_EQ(order.size(), 200U);
  for (int i = 0; i < 200; ++i) {
    ASSERT_EQ(order[static_cast<std::size_t>(i)], i);
  }
}

TEST(WorkerPool, WaitRethrowsTheFirstExceptionAfterEveryTaskRan)
{
  worker_pool pool(1);  // FIFO on one thread makes "first" well defined
  task_group group;
  std::atomic<int> ran{0};
  pool.submit(group, [] { throw std::runtime_error("first"); });
  pool.submit(group, [] { throw std::logic_error("second"); });
  for (int i = 0; i < 100; ++i) {
    pool.submit(group, [&] {
      std::this_thread::sleep_for(10us);
      ran.fetch_add(1);
    });
  }
  try {
    group.wait();
    ADD_FAILURE() << "wait() did not rethrow";
  } catch (std::runtime_error const& error) {
    EXPECT_STREQ(error.what(), "first");
  }
  EXPECT_EQ(ran.load(), 100) << "wait() rethrows only after every task finished";
  EXPECT_EQ(group.pending(), 0U);

  // The group is reusable, and the exception was reported once.
  pool.submit(group, [&] { ran.fetch_add(1); });
  EXPECT_NO_THROW(group.wait());
  EXPECT_EQ(ran.load(), 101);
}

TEST(WorkerPool, ExceptionsOfSeveralThreadsReachWait)
{
  worker_pool pool(4);
  task_group group;
  for (int i = 0; i < 64; ++i) {
    pool.submit(group, [i] {
      if (i % 2 == 0) { throw std::runtime_error("task " + std::to_string(i)); }
    });
  }
  EXPECT_THROW(group.wait(), std::runtime_error);
  EXPECT_NO_THROW(group.wait()) << "the exception is reported once";
}

TEST(WorkerPool, WaitUntilAtMostBoundsThePendingCount)
{
  worker_pool pool(2);
  task_group group;
  std::counting_semaphore<64> gate(0);
  for (int i = 0; i < 10; ++i) {
    pool.submit(group, [&] { gate.acquire(); });
  }
  EXPECT_EQ(group.pending(), 10U) << "every task is blocked at the gate";
  gate.release(7);
  group.wait_until_at_most(3);
  EXPECT_LE(group.pending(), 3U);
  EXPECT_GE(group.pending(), 3U) << "three tasks are still at the gate";
  gate.release(3);
  group.wait();
  EXPECT_EQ(group.pending(), 0U);

  // As flow control: never more than 4 queued or running.
  std::atomic<std::size_t> most{0};
  for (int i = 0; i < 500; ++i) {
    group.wait_until_at_most(3);
    ASSERT_LE(group.pending(), 3U);
    pool.submit(group, [&] {
      std::size_t const now = group.pending();
      std::size_t seen      = most.load();
      while (now > seen && !most.compare_exchange_weak(seen, now)) {}
    });
  }
  group.wait();
  EXPECT_LE(most.load(), 4U);
}

TEST(WorkerPool, WaitUntilAtMostDoesNotRethrow)
{
  worker_pool pool(1);
  task_group group;
  pool.submit(group, [] { throw std::runtime_error("kept for wait"); });
  EXPECT_NO_THROW(group.wait_until_at_most(0));
  EXPECT_THROW(group.wait(), std::runtime_error);
}

TEST(WorkerPool, DestructionDrainsTheQueue)
{
  task_group group;  // outlives the pool
  std::atomic<int> ran{0};
  {
    worker_pool pool(1);
    for (int i = 0; i < 100; ++i) {
      pool.submit(group, [&] {
        std::this_thread::sleep_for(100us);
        ran.fetch_add(1);
      });
    }
    EXPECT_GT(group.pending(), 0U) << "work is still queued when the pool goes";
  }
  EXPECT_EQ(ran.load(), 100);
  EXPECT_EQ(group.pending(), 0U);
  group.wait();
}

TEST(WorkerPool, TasksMaySubmitMoreWork)
{
  worker_pool pool(2);
  task_group group;
  std::atomic<int> ran{0};
  for (int i = 0; i < 10; ++i) {
    pool.submit(group, [&] {
      ran.fetch_add(1);
      pool.submit(group, [&] { ran.fetch_add(1); });
    });
  }
  // A child is counted before its parent finishes, so wait() sees it.
  group.wait();
  EXPECT_EQ(ran.load(), 20);
}

TEST(WorkerPool, GroupDestructionWaitsForItsTasks)
{
  worker_pool pool(2);
  std::atomic<int> ran{0};
  {
    task_group group;
    for (int i = 0; i < 20; ++i) {
      pool.submit(group, [&] {
        std::this_thread::sleep_for(200us);
        ran.fetch_add(1);
      });
    }
  }
  EXPECT_EQ(ran.load(), 20);
}

TEST(WorkerPool, RejectsZeroThreadsAndEmptyTasks)
{
  EXPECT_THROW(worker_pool(0), std::invalid_argument);
  worker_pool pool(1);
  task_group group;
  EXPECT_THROW(pool.submit(group, std::function<void()>{}), std::invalid_argument);
  EXPECT_EQ(group.pending(), 0U);
}

TEST(WorkerPool, UrgentTasksRunBeforeQueuedNormalOnes)
{
  worker_pool pool(1);
  task_group group;
  std::binary_semaphore gate(0);
  pool.submit(group, [&] { gate.acquire(); });  // holds the only worker
  std::mutex mutex;
  std::vector<std::string> order;
  auto const record = [&](std::string const& name) {
    return [&, name] {
      std::lock_guard const lock(mutex);
      order.push_back(name);
    };
  };
  pool.submit(group, record("normal 1"));
  pool.submit(group, record("urgent 1"), task_priority::urgent);
  pool.submit(group, record("normal 2"));
  pool.submit(group, record("urgent 2"), task_priority::urgent);
  gate.release();
  group.wait();
  EXPECT_EQ(order, (std::vector<std::string>{"urgent 1", "urgent 2", "normal 1", "normal 2"}));
}

TEST(WorkerPool, RunQueuedRunsAGroupsUnstartedTasksOnTheCallingThreadAndLeavesOthers)
{
  worker_pool pool(1);
  task_group blocker;
  task_group other;
  task_group mine;
  std::binary_semaphore gate(0);
  pool.submit(blocker, [&] { gate.acquire(); });  // the only worker is busy
  std::atomic<int> others_ran{0};
  pool.submit(other, [&] { ++others_ran; });  // queued before mine: not mine to run
  std::thread::id const caller = std::this_thread::get_id();
  std::vector<int> ran;
  std::atomic<int> on_caller{0};
  for (int i = 0; i < 3; ++i) {
    pool.submit(mine, [&, i] {
      ran.push_back(i);
      if (std::this_thread::get_id() == caller) { ++on_caller; }
    });
  }
  pool.submit(mine, [] { throw std::runtime_error("task 3"); });
  EXPECT_EQ(pool.run_queued(mine), 4U);
  EXPECT_EQ(mine.pending(), 0U) << "nothing of mine waits behind the blocked worker";
  EXPECT_EQ(ran, (std::vector<int>{0, 1, 2})) << "in order";
  EXPECT_EQ(on_caller.load(), 3);
  EXPECT_THROW(mine.wait(), std::runtime_error) << "its exception reached the group";
  EXPECT_EQ(other.pending(), 1U) << "another group's task stays queued";
  EXPECT_EQ(others_ran.load(), 0);
  EXPECT_EQ(pool.run_queued(mine), 0U);
  gate.release();
  other.wait();
  EXPECT_EQ(others_ran.load(), 1);
  blocker.wait();
}

TEST(WorkerCount, DefaultsToTheCoresLessOneUpToFortyEight)
{
  struct row {
    std::size_t cores;
    std::size_t workers;
  };
  for (row const r : {row{0, 1}, row{1, 1}, row{2, 1}, row{3, 2}, row{9, 8}, row{16, 15},
                      row{49, 48}, row{50, 48}, row{256, 48}}) {
    EXPECT_EQ(default_worker_count(r.cores), r.workers) << r.cores << " cores";
  }
  EXPECT_EQ(default_worker_count(), default_worker_count(std::thread::hardware_concurrency()));
}

}  // namespace
}  // namespace swapalloc::testing
