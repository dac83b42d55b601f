/**
 * @file activation.hpp
 * @brief `activation`: the RAII form of allocator::activate / deactivate (DESIGN §6). Wrap
 *        each use of a model's pool by GPU work (a forward pass) in one: the pool is
 *        restored if it was evicted, pinned while the guard lives, and its last use is
 *        recorded on the stream at the end, so that its eviction waits for that work only.
 *
 * Thread safety: as allocator::activate; a guard is used by the thread that made it.
 */
#pragma once

#include <swapalloc/allocator.hpp>

namespace swapalloc {

/// Activates a pool on a device and stream for the guard's lifetime (DESIGN §6):
/// `activate` at construction, `deactivate` at destruction.
class activation {
 public:
  /// @throws as allocator::activate; nothing is active then.
  activation(allocator& owner, pool_id id, int device, CUstream stream)
    : owner_(&owner), id_(id), device_(device), stream_(stream)
  {
    (void)owner.activate(id, device, stream);
  }
  activation(activation const&)            = delete;
  activation& operator=(activation const&) = delete;
  /// Deactivates. A failure to record the last-use event is not reported: the activation
  /// ends anyway and the next eviction of the pool waits for the device (allocator.hpp).
  ~activation()
  {
    try {
      owner_->deactivate(id_, device_, stream_);
    } catch (...) {  // NOLINT(bugprone-empty-catch): see above
    }
  }

 private:
  allocator* owner_;
  pool_id id_;
  int device_;
  CUstream stream_;
};

}  // namespace swapalloc
