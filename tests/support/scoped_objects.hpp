/**
 * @file scoped_objects.hpp
 * @brief Driver objects owned by scope: each destructor undoes what its constructor made,
 *        reporting (never throwing) a failing clean-up call. The declaration order that
 *        makes destruction safe is in driver_fixture.hpp's file comment.
 */
#pragma once

#include <cstddef>

#include <gtest/gtest.h>
#include <swapalloc/driver.hpp>

#include "driver_support.hpp"

namespace swapalloc::testing {

/// Reports a failing clean-up call as a test failure (destructors must not throw).
inline void expect_cleanup(CUresult result, char const* what)
{
  if (result != CUDA_SUCCESS) {
    ADD_FAILURE() << "clean-up " << what << " failed: " << cu_name(result);
  }
}

/// A cuMemAddressReserve range, freed on destruction unless `free()`d already.
class scoped_reservation {
 public:
  scoped_reservation(driver const& drv, std::size_t size, std::size_t alignment = 0)
    : drv_(&drv), size_(size), ptr_(drv.address_reserve(size, alignment))
  {
  }
  scoped_reservation(scoped_reservation const&)            = delete;
  scoped_reservation& operator=(scoped_reservation const&) = delete;
  ~scoped_reservation()
  {
    if (ptr_ != 0) {
      expect_cleanup(drv_->table().cuMemAddressFree(ptr_, size_), "cuMemAddressFree");
    }
  }
  [[nodiscard]] CUdeviceptr ptr() const noexcept { return ptr_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// Frees the range now; returns the driver's answer.
  CUresult free()
  {
    CUresult const result = drv_->table().cuMemAddressFree(ptr_, size_);
    if (result == CUDA_SUCCESS) { ptr_ = 0; }
    return result;
  }

 private:
  driver const* drv_;
  std::size_t size_;
  CUdeviceptr ptr_;
};

/// A cuMemCreate handle, released on destruction unless `release()`d already.
class scoped_handle {
 public:
  scoped_handle(driver const& drv, std::size_t size, CUdevice device)
    : drv_(&drv), size_(size), handle_(drv.mem_create(size, device))
  {
  }
  scoped_handle(scoped_handle const&)            = delete;
  scoped_handle& operator=(scoped_handle const&) = delete;
  ~scoped_handle()
  {
    if (live_) { expect_cleanup(drv_->table().cuMemRelease(handle_), "cuMemRelease"); }
  }
  [[nodiscard]] CUmemGenericAllocationHandle get() const noexcept { return handle_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool live() const noexcept { return live_; }
  /// Releases the handle now (mappings may remain); returns the driver's answer.
  CUresult release()
  {
    CUresult const result = drv_->table().cuMemRelease(handle_);
    if (result == CUDA_SUCCESS) { live_ = false; }
    return result;
  }

 private:
  driver const* drv_;
  std::size_t size_;
  CUmemGenericAllocationHandle handle_;
  bool live_{true};
};

/// A cuMemMap of a handle at an address, unmapped on destruction unless `unmap()`ped.
class scoped_mapping {
 public:
  scoped_mapping(driver const& drv, CUdeviceptr ptr, std::size_t size,
                 CUmemGenericAllocationHandle handle)
    : drv_(&drv), ptr_(ptr), size_(size)
  {
    drv.mem_map(ptr, size, handle);
  }
  scoped_mapping(scoped_mapping const&)            = delete;
  scoped_mapping& operator=(scoped_mapping const&) = delete;
  ~scoped_mapping()
  {
    if (mapped_) { expect_cleanup(drv_->table().cuMemUnmap(ptr_, size_), "cuMemUnmap"); }
  }
  [[nodiscard]] CUdeviceptr ptr() const noexcept { return ptr_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool mapped() const noexcept { return mapped_; }
  /// Unmaps now; returns the driver's answer.
  CUresult unmap()
  {
    CUresult const result = drv_->table().cuMemUnmap(ptr_, size_);
    if (result == CUDA_SUCCESS) { mapped_ = false; }
    return result;
  }
  /// Forgets the mapping without unmapping (the test unmapped it by other means).
  void forget() noexcept { mapped_ = false; }

 private:
  driver const* drv_;
  CUdeviceptr ptr_;
  std::size_t size_;
  bool mapped_{true};
};

/**
 * @brief Device memory the way swapalloc makes it: reserve, create, map, set access.
 *
 * Destruction unmaps, releases and frees the reservation, in that order, skipping what
 * the test already undid. `accessible = false` leaves the fresh mapping without access.
 */
class device_range {
 public:
  device_range(driver const& drv, CUdevice device, std::size_t size, bool accessible = true)
    : reservation_(drv, size),
      handle_(drv, size, device),
      mapping_(drv, reservation_.ptr(), size, handle_.get())
  {
    if (accessible) { drv.mem_set_access(reservation_.ptr(), size, device); }
  }
  [[nodiscard]] CUdeviceptr ptr() const noexcept { return reservation_.ptr(); }
  [[nodiscard]] std::size_t size() const noexcept { return reservation_.size(); }
  [[nodiscard]] CUmemGenericAllocationHandle handle() const noexcept { return handle_.get(); }
  scoped_reservation& reservation() noexcept { return reservation_; }
  scoped_handle& physical() noexcept { return handle_; }
  scoped_mapping& mapping() noexcept { return mapping_; }

 private:
  // Declaration order is the teardown order reversed: unmap, release, free.
  scoped_reservation reservation_;
  scoped_handle handle_;
  scoped_mapping mapping_;
};

/// Page-locked host memory from cuMemHostAlloc, freed on destruction.
class pinned_buffer {
 public:
  pinned_buffer(driver const& drv, std::size_t bytes, unsigned int flags = 0)
    : drv_(&drv), bytes_(bytes), data_(drv.host_alloc(bytes, flags))
  {
  }
  pinned_buffer(pinned_buffer const&)            = delete;
  pinned_buffer& operator=(pinned_buffer const&) = delete;
  ~pinned_buffer() { expect_cleanup(drv_->table().cuMemFreeHost(data_), "cuMemFreeHost"); }
  [[nodiscard]] void* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t bytes() const noexcept { return bytes_; }
  template <class T>
  [[nodiscard]] T* as() const noexcept
  {
    return static_cast<T*>(data_);
  }

 private:
  driver const* drv_;
  std::size_t bytes_;
  void* data_;
};

/// A stream; destruction synchronizes it (so no work outlives the test's buffers), then
/// destroys it, unless the test destroyed it already (`destroy()`).
class scoped_stream {
 public:
  explicit scoped_stream(driver const& drv, unsigned int flags = CU_STREAM_NON_BLOCKING)
    : drv_(&drv), stream_(drv.stream_create(flags))
  {
  }
  scoped_stream(scoped_stream const&)            = delete;
  scoped_stream& operator=(scoped_stream const&) = delete;
  ~scoped_stream()
  {
    if (stream_ == nullptr) { return; }
    expect_cleanup(drv_->table().cuStreamSynchronize(stream_), "cuStreamSynchronize");
    expect_cleanup(drv_->table().cuStreamDestroy(stream_), "cuStreamDestroy");
  }
  [[nodiscard]] CUstream get() const noexcept { return stream_; }
  operator CUstream() const noexcept { return stream_; }  // NOLINT(google-explicit-constructor)
  /// Destroys the stream now, pending work or not; returns the driver's answer.
  CUresult destroy()
  {
    CUresult const result = drv_->table().cuStreamDestroy(stream_);
    if (result == CUDA_SUCCESS) { stream_ = nullptr; }
    return result;
  }

 private:
  driver const* drv_;
  CUstream stream_;
};

/// An event, destroyed on destruction unless `destroy()`ed already.
class scoped_event {
 public:
  explicit scoped_event(driver const& drv, unsigned int flags = CU_EVENT_DEFAULT)
    : drv_(&drv), event_(drv.event_create(flags))
  {
  }
  scoped_event(scoped_event const&)            = delete;
  scoped_event& operator=(scoped_event const&) = delete;
  ~scoped_event()
  {
    if (event_ != nullptr) {
      expect_cleanup(drv_->table().cuEventDestroy(event_), "cuEventDestroy");
    }
  }
  [[nodiscard]] CUevent get() const noexcept { return event_; }
  operator CUevent() const noexcept { return event_; }  // NOLINT(google-explicit-constructor)
  CUresult destroy()
  {
    CUresult const result = drv_->table().cuEventDestroy(event_);
    if (result == CUDA_SUCCESS) { event_ = nullptr; }
    return result;
  }

 private:
  driver const* drv_;
  CUevent event_;
};

/// Synchronizes the current context when destroyed. Tests that put work on the legacy
/// stream declare one after their device ranges and before their gates, so that even an
/// early return (a failed ASSERT) drains that work before the ranges are unmapped.
class context_drain {
 public:
  explicit context_drain(driver const& drv) : drv_(&drv) {}
  context_drain(context_drain const&)            = delete;
  context_drain& operator=(context_drain const&) = delete;
  ~context_drain() { expect_cleanup(drv_->table().cuCtxSynchronize(), "cuCtxSynchronize"); }

 private:
  driver const* drv_;
};

}  // namespace swapalloc::testing
