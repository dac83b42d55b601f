/**
 * @file registry.hpp
 * @brief The table of live handles of one kind (streams, events).
 *
 * The driver API hands out raw pointers (CUstream, CUevent). A handle is only ever
 * dereferenced after it has been found here, so a destroyed or made-up handle yields
 * CUDA_ERROR_INVALID_HANDLE instead of a use after free. The registry owns a reference;
 * work still queued holds its own, so destroying a handle with pending work is safe.
 */
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <vector>

namespace cudasim {

template <class Object>
class handle_registry {
 public:
  /// The live object `handle` names, else nullptr.
  [[nodiscard]] std::shared_ptr<Object> find(Object const* handle) const
  {
    std::shared_lock lock(mutex_);
    auto const found = objects_.find(handle);
    return found == objects_.end() ? nullptr : found->second;
  }

  void add(std::shared_ptr<Object> object)
  {
    std::unique_lock lock(mutex_);
    Object const* const key = object.get();
    objects_.emplace(key, std::move(object));
  }

  /// Removes `handle`; returns the object, nullptr when it was not live.
  [[nodiscard]] std::shared_ptr<Object> remove(Object const* handle)
  {
    std::unique_lock lock(mutex_);
    auto const found = objects_.find(handle);
    if (found == objects_.end()) { return nullptr; }
    std::shared_ptr<Object> object = std::move(found->second);
    objects_.erase(found);
    return object;
  }

  /// Removes and returns every object for which `select` is true.
  [[nodiscard]] std::vector<std::shared_ptr<Object>> remove_if(
    std::function<bool(Object const&)> const& select)
  {
    std::vector<std::shared_ptr<Object>> removed;
    std::unique_lock lock(mutex_);
    for (auto it = objects_.begin(); it != objects_.end();) {
      if (select(*it->second)) {
        removed.push_back(std::move(it->second));
        it = objects_.erase(it);
      } else {
        ++it;
      }
    }
    return removed;
  }

  /// Every live object.
  [[nodiscard]] std::vector<std::shared_ptr<Object>> all() const
  {
    std::shared_lock lock(mutex_);
    std::vector<std::shared_ptr<Object>> objects;
    objects.reserve(objects_.size());
    for (auto const& [key, object] : objects_) {
      objects.push_back(object);
    }
    return objects;
  }

  [[nodiscard]] std::size_t size() const
  {
    std::shared_lock lock(mutex_);
    return objects_.size();
  }

 private:
  mutable std::shared_mutex mutex_;
  std::unordered_map<Object const*, std::shared_ptr<Object>> objects_;
};

}  // namespace cudasim
