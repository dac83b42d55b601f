/**
 * @file swapalloc_torch.hpp
 * @brief swapalloc as libtorch's CUDA allocator, for C++ programs (DESIGN §9, mode 4).
 *
 *   #include <swapalloc_torch.hpp>
 *   swapalloc::libtorch::install();                     // before the first CUDA tensor
 *   {
 *     auto const scope = swapalloc::libtorch::use_pool("unet");   // this thread's scope
 *     auto weights     = torch::empty({n}, torch::kCUDA);           // in pool "unet"
 *   }
 *
 * `install` gives torch::cuda::CUDAPluggableAllocator swapalloc's allocation functions and
 * every hook torch has (init, empty_cache, memory fraction, record_stream, and the private
 * pools of CUDA graphs and MemPools) and makes it torch's current allocator. An allocation
 * that does not fit raises c10::OutOfMemoryError (torch.OutOfMemoryError in Python) with
 * swapalloc's report: its pool table and what to do; other failures raise c10::Error.
 *
 * Requirements: torch 2.15's headers, which need C++20 (-std=c++20); libswapalloc.so
 * (CMake: swapalloc::plugin) and libtorch_cuda; a driver where the program runs (libcuda.so.1,
 * or the simulator through SWAPALLOC_CUDA_DRIVER and its runtime shim). The pool hooks take
 * C++ types, so the program and libswapalloc.so must share libstdc++'s cxx11 ABI, as torch's
 * wheels do. CMake: -DSWAPALLOC_WITH_TORCH=ON builds the test of this header
 * (tests/plugin/torch).
 * No state lives in this header (a static here would be one per shared library): torch
 * holds the installed allocator, libswapalloc.so the one swapalloc instance.
 * Thread safety: `install` from one thread, before CUDA is used; a `pool_scope` belongs to
 * the thread that made it.
 */
#pragma once

#include <swapalloc/swapalloc.h>

#include <c10/util/Exception.h>
#include <torch/csrc/cuda/CUDAPluggableAllocator.h>

#include <memory>
#include <string>

namespace swapalloc::libtorch {

namespace detail {

/// Throws the c10 exception for `status` with swapalloc's message, prefixed by `what`.
[[noreturn]] inline void raise(swapalloc_status status, std::string const& what)
{
  std::string const message = what + ": " + swapalloc_last_error();
  if (status == SWAPALLOC_ERROR_OUT_OF_MEMORY) {
    TORCH_CHECK_WITH(OutOfMemoryError, false, message);
  }
  TORCH_CHECK(false, message);
}

inline void check(swapalloc_status status, std::string const& what)
{
  if (status != SWAPALLOC_SUCCESS) { raise(status, what); }
}

/// torch's allocation function: swapalloc_malloc, raising instead of returning NULL (torch's
/// CUDAPluggableAllocator does not check for NULL).
inline void* allocate(std::size_t size, int device, cudaStream_t stream)
{
  void* const ptr = swapalloc_malloc(static_cast<ssize_t>(size), device, stream);
  if (ptr == nullptr && size != 0) {
    raise(swapalloc_last_status(), "swapalloc: allocating " + std::to_string(size) +
                                     " bytes on device " + std::to_string(device));
  }
  return ptr;
}

inline void deallocate(void* ptr, std::size_t size, int device, cudaStream_t stream)
{
  swapalloc_free(ptr, static_cast<ssize_t>(size), device, stream);
}

}  // namespace detail

/**
 * @brief Makes swapalloc libtorch's CUDA allocator, with every hook, and initializes it.
 * @pre no CUDA tensor was allocated yet in this process (torch changes its allocator only
 *      before its CUDA state is initialized).
 * @return the allocator torch now uses. When a pluggable allocator is already current (an
 *         earlier call, from any library of the process: torch keeps it, not this header),
 *         it is returned and nothing changes.
 * @throws c10::Error when swapalloc cannot initialize (no driver: the message says which
 *         library was tried) or torch refuses the change (its allocator was already used).
 * Thread safety: call it from one thread, before others use CUDA.
 */
inline std::shared_ptr<c10::cuda::CUDACachingAllocator::CUDAAllocator> install()
{
  namespace pluggable = torch::cuda::CUDAPluggableAllocator;
  if (auto current = pluggable::getCurrentAllocator()) { return current; }
  detail::check(swapalloc_init(), "swapalloc::libtorch::install: swapalloc_init");
  auto allocator = pluggable::createCustomAllocator(detail::allocate, detail::deallocate);
  auto& hooks    = dynamic_cast<pluggable::CUDAPluggableAllocator&>(*allocator);
  hooks.set_init_fn(swapalloc_hook_init);
  hooks.set_reset_fn(swapalloc_hook_reset);
  hooks.set_memory_fraction_fn(swapalloc_hook_memory_fraction);
  hooks.set_record_stream_fn(
    [](void* ptr, cudaStream_t stream) { swapalloc_hook_record_stream(ptr, stream); });
  hooks.set_begin_allocate_to_pool(swapalloc_hook_begin_allocate_to_pool);
  hooks.set_end_allocate_to_pool_fn(swapalloc_hook_end_allocate_to_pool);
  hooks.set_release_pool(swapalloc_hook_release_pool);
  pluggable::changeCurrentAllocator(allocator);
  return allocator;
}

/**
 * @brief The calling thread's CUDA allocations go to pool `name` while this object lives
 *        (swapalloc_pool_push / swapalloc_pool_pop). Scopes nest.
 * Thread safety: belongs to the thread that made it; destroy it on that thread.
 */
class pool_scope {
 public:
  /// Scopes the thread to pool `name`, created with `options` (NULL: defaults) if new.
  /// @throws c10::Error when the pool cannot be created or found, or swapalloc is not
  ///         initialized (call install() first).
  explicit pool_scope(std::string const& name, swapalloc_pool_options const* options = nullptr)
  {
    if (swapalloc_pool_find(name.c_str(), &pool_) != SWAPALLOC_SUCCESS) {
      detail::check(swapalloc_pool_create(name.c_str(), options, &pool_),
                    "swapalloc::libtorch::pool_scope('" + name + "')");
    }
    detail::check(swapalloc_pool_push(pool_), "swapalloc::libtorch::pool_scope('" + name + "')");
  }
  pool_scope(pool_scope const&)            = delete;
  pool_scope& operator=(pool_scope const&) = delete;
  pool_scope(pool_scope&&)                 = delete;
  pool_scope& operator=(pool_scope&&)      = delete;
  ~pool_scope() { (void)swapalloc_pool_pop(); }

  /// The pool's handle, for the C ABI's other calls (activate, evict, ...).
  [[nodiscard]] swapalloc_pool_id pool() const noexcept { return pool_; }

 private:
  swapalloc_pool_id pool_{SWAPALLOC_DEFAULT_POOL};
};

/// A scope of pool `name` (see pool_scope): `auto const scope = use_pool("unet");` (the
/// scope is returned in place, never copied or moved).
[[nodiscard]] inline pool_scope use_pool(std::string const& name,
                                         swapalloc_pool_options const* options = nullptr)
{
  return pool_scope(name, options);
}

}  // namespace swapalloc::libtorch
