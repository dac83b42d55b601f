/**
 * @file pool_scope.hpp
 * @brief `pool_scope`: the RAII form of allocator::push_pool / pop_pool. While it lives,
 *        the calling thread's allocations go to its pool (torch's `with use_mem_pool(...)`).
 *
 * Thread safety: the scope belongs to the thread that made it; scopes nest.
 */
#pragma once

#include <swapalloc/allocator.hpp>

namespace swapalloc {

/// Makes a pool current on the calling thread for the guard's lifetime.
class pool_scope {
 public:
  pool_scope(allocator& owner, pool_id id) : owner_(&owner) { owner.push_pool(id); }
  pool_scope(pool_scope const&)            = delete;
  pool_scope& operator=(pool_scope const&) = delete;
  // pop_pool throws only if this thread has no scope left, i.e. someone popped this
  // guard's scope: a bug that terminating names best.
  ~pool_scope() { owner_->pop_pool(); }  // NOLINT(bugprone-exception-escape)

 private:
  allocator* owner_;
};

}  // namespace swapalloc
