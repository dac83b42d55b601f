// Tests of include/swapalloc/scope_stack.hpp: per-thread stacks, nesting, limits, and
// concurrent use by many threads (run under TSan by .ci/run).
#include <swapalloc/scope_stack.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

namespace swapalloc {
namespace {

TEST(ScopeStack, DefaultPoolOutsideAnyScopeAndNestingInside)
{
  scope_stack scopes;
  EXPECT_EQ(scopes.current(), default_pool);
  scopes.push(3);
  scopes.push(5);
  EXPECT_EQ(scopes.current(), 5U);
  EXPECT_EQ(scopes.depth(), 2U);
  scopes.pop();
  EXPECT_EQ(scopes.current(), 3U);
  scopes.pop();
  EXPECT_EQ(scopes.current(), default_pool);
  EXPECT_THROW(scopes.pop(), std::logic_error);
}

TEST(ScopeStack, DepthLimitIsAnErrorThatKeepsTheStack)
{
  scope_stack scopes;
  for (std::size_t level = 0; level < scope_stack::max_depth; ++level) {
    scopes.push(1);
  }
  EXPECT_THROW(scopes.push(2), std::length_error);
  EXPECT_EQ(scopes.depth(), scope_stack::max_depth);
  for (std::size_t level = 0; level < scope_stack::max_depth; ++level) {
    scopes.pop();
  }
  EXPECT_EQ(scopes.current(), default_pool);
}

TEST(ScopeStack, EachThreadSeesItsOwnStack)
{
  scope_stack scopes;
  constexpr int threads = 8;
  std::atomic<int> ready{0};
  std::atomic<int> wrong{0};
  std::vector<std::thread> workers;
  workers.reserve(threads);
  for (int index = 0; index < threads; ++index) {
    workers.emplace_back([&, index] {
      auto const mine = static_cast<pool_id>(index + 1);
      for (int round = 0; round < 2000; ++round) {
        scopes.push(mine);
        scopes.push(mine + 100);
        if (scopes.current() != mine + 100) { ++wrong; }
        scopes.pop();
        if (scopes.current() != mine) { ++wrong; }
        if (round == 0 && ++ready < threads) {
          while (ready.load() < threads) {
            std::this_thread::yield();
          }  // all inside at once
        }
        scopes.pop();
        if (scopes.current() != default_pool) { ++wrong; }
      }
    });
  }
  for (auto& worker : workers) {
    worker.join();
  }
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(scopes.current(), default_pool);
}

TEST(ScopeStack, TooManyThreadsInsideScopesIsAnError)
{
  scope_stack scopes;
  std::atomic<int> inside{0};
  std::atomic<int> refused{0};
  std::atomic<bool> leave{false};
  std::vector<std::thread> workers;
  workers.reserve(scope_stack::max_threads + 1);
  for (std::size_t index = 0; index <= scope_stack::max_threads; ++index) {
    workers.emplace_back([&] {
      try {
        scopes.push(1);
      } catch (std::length_error const&) {
        ++refused;
        return;
      }
      ++inside;
      while (!leave.load()) {
        std::this_thread::yield();
      }
      scopes.pop();
    });
  }
  while (inside.load() + refused.load() < static_cast<int>(scope_stack::max_threads) + 1) {
    std::this_thread::yield();
  }
  EXPECT_EQ(refused.load(), 1);
  EXPECT_EQ(inside.load(), static_cast<int>(scope_stack::max_threads));
  leave = true;
  for (auto& worker : workers) {
    worker.join();
  }
  scopes.push(9);  // every slot is free again
  EXPECT_EQ(scopes.current(), 9U);
  scopes.pop();
}

}  // namespace
}  // namespace swapalloc
