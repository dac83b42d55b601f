/**
 * @file scope_stack.hpp
 * @brief Per-thread stacks of pool scopes, owned by one allocator instance.
 *
 * Every allocation goes to the pool on top of the calling thread's scope stack, else to
 * the default pool (DESIGN §6). The stacks belong to the allocator object, not to a
 * `thread_local` in this header: a header-only `thread_local` splits into one copy per
 * shared library (rapidsai/rmm issue 1779), and a scope pushed through one library would
 * be invisible to another.
 *
 * Layout: a fixed table of slots, one per thread that currently has a non-empty stack.
 * A thread claims a free slot with one compare-and-swap at its first push and gives it
 * back when its stack empties; only the owning thread reads or writes a slot's stack, so
 * `current()` takes no lock. Cost of `current()`: one relaxed load when no thread has a
 * scope (the common case); otherwise a scan of the slots in use, which is as many
 * acquire loads as threads have ever been inside scopes at once (normally 1-4).
 *
 * Limits: 128 threads inside scopes at once, 64 nested scopes per thread. A thread that
 * exits without popping its scopes leaks its slot, and a later thread that the system
 * gives the same pthread id inherits that stack: pop what you push (the RAII
 * `pool_scope` in allocator.hpp does).
 *
 * Thread safety: all members may be called concurrently; each thread sees its own stack.
 */
#pragma once

#include <pthread.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace swapalloc {

/// Identifies a pool within one allocator. Ids are not reused after a pool is destroyed.
using pool_id                         = std::uint32_t;
inline constexpr pool_id default_pool = 0;

/// The scope stacks of all threads, for one allocator. See the file comment.
class scope_stack {
 public:
  static constexpr std::size_t max_threads = 128;
  static constexpr std::size_t max_depth   = 64;

  /**
   * @brief Makes `pool` the calling thread's current pool until the matching `pop`.
   * @throws std::length_error past max_depth nested scopes on this thread, or when
   *         max_threads threads are inside scopes already.
   */
  void push(pool_id pool)
  {
    slot* own = find(self());
    if (own == nullptr) { own = claim(); }
    if (own->depth == max_depth) {
      throw std::length_error("swapalloc: push_pool(" + std::to_string(pool) + "): more than " +
                              std::to_string(max_depth) + " nested pool scopes on this thread");
    }
    own->stack[own->depth++] = pool;
  }

  /// Ends the innermost scope of the calling thread.
  /// @throws std::logic_error if the thread has no scope.
  void pop()
  {
    slot* const own = find(self());
    if (own == nullptr) {
      throw std::logic_error("swapalloc: pop_pool(): this thread has no pool scope to end");
    }
    if (--own->depth == 0) {
      own->owner.store(0, std::memory_order_release);
      threads_.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  /// The calling thread's current pool: the innermost scope, else `default_pool`.
  [[nodiscard]] pool_id current() const noexcept
  {
    if (threads_.load(std::memory_order_relaxed) == 0) { return default_pool; }
    slot const* const own = find(self());
    return own == nullptr ? default_pool : own->stack[own->depth - 1];
  }

  /// Nested scopes on the calling thread.
  [[nodiscard]] std::size_t depth() const noexcept
  {
    slot const* const own = threads_.load(std::memory_order_relaxed) == 0 ? nullptr : find(self());
    return own == nullptr ? 0 : own->depth;
  }

 private:
  struct slot {
    std::atomic<std::uint64_t> owner{0};  // pthread id of the thread using it; 0: free
    std::size_t depth{0};                 // written and read by the owner only
    std::array<pool_id, max_depth> stack{};
  };

  [[nodiscard]] static std::uint64_t self() noexcept
  {
    // pthread ids are unique among live threads, and never 0 on Linux.
    return static_cast<std::uint64_t>(pthread_self());
  }

  [[nodiscard]] slot* find(std::uint64_t id) noexcept
  {
    return const_cast<slot*>(static_cast<scope_stack const*>(this)->find(id));
  }

  [[nodiscard]] slot const* find(std::uint64_t id) const noexcept
  {
    std::size_t const used = used_.load(std::memory_order_acquire);
    for (std::size_t index = 0; index < used; ++index) {
      if (slots_[index].owner.load(std::memory_order_acquire) == id) { return &slots_[index]; }
    }
    return nullptr;
  }

  slot* claim()
  {
    for (std::size_t index = 0; index < max_threads; ++index) {
      std::uint64_t expected = 0;
      if (!slots_[index].owner.compare_exchange_strong(expected, self(),
                                                       std::memory_order_acq_rel)) {
        continue;
      }
      slots_[index].depth = 0;
      // Publish the slot count after owning the slot, so a scan that sees it sees the owner.
      std::size_t used = used_.load(std::memory_order_relaxed);
      while (used < index + 1 &&
             !used_.compare_exchange_weak(used, index + 1, std::memory_order_acq_rel)) {}
      threads_.fetch_add(1, std::memory_order_relaxed);
      return &slots_[index];
    }
    throw std::length_error("swapalloc: push_pool(): more than " + std::to_string(max_threads) +
                            " threads are inside pool scopes at once");
  }

  std::array<slot, max_threads> slots_{};
  std::atomic<std::size_t> used_{0};     // slots [0, used_) have ever been claimed
  std::atomic<std::size_t> threads_{0};  // slots owned now
};

}  // namespace swapalloc
