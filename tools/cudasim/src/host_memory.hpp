/**
 * @file host_memory.hpp
 * @brief Page-locked ("pinned") host memory: cuMemHostAlloc, cuMemAllocHost, cuMemFreeHost
 *        (host_memory.cpp) and cuMemHostRegister, cuMemHostUnregister (host_register.cpp).
 *
 * Pinned memory matters to copies: cuda.h, cuMemHostAlloc: "The driver tracks the
 * virtual memory ranges allocated with this function and automatically accelerates
 * calls to functions such as cuMemcpyHtoD()"; cuMemHostRegister: "This memory range also
 * is added to the same tracking mechanism as cuMemHostAlloc". Async copies from and to
 * it are fully asynchronous, while pageable memory makes them (partly) synchronous. The
 * registry is that tracking mechanism: it holds both kinds of range, and answers "is this
 * host range pinned?" for every copy.
 */
#pragma once

#include "census.hpp"
#include "cuda_api.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <shared_mutex>

namespace cudasim {

/// The host's page size (sysconf(_SC_PAGESIZE)).
[[nodiscard]] std::size_t host_page_size() noexcept;

class host_registry {
 public:
  // ---- Blocks the driver allocated (host_memory.cpp) ----

  [[nodiscard]] CUresult allocate(void** out, std::size_t bytes);
  /// Frees the block that starts at `pointer`; CUDA_ERROR_INVALID_VALUE for anything else
  /// (a registered range included: cuMemFreeHost frees only what cuMemHostAlloc gave).
  [[nodiscard]] CUresult free(void* pointer);
  /// True when [ptr, ptr + bytes) lies inside one live block or one live registration.
  [[nodiscard]] bool pinned(std::uintptr_t ptr, std::size_t bytes) const;
  /// The size of the live block that starts at `pointer`; 0 when there is none.
  [[nodiscard]] std::size_t block_bytes(void const* pointer) const;

  // ---- Ranges the caller registered (host_register.cpp) ----

  /// Registers [ptr, ptr + bytes) for `context` with cuMemHostRegister's `flags`, whose
  /// arguments were checked; CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED when it overlaps a
  /// live registration or block.
  [[nodiscard]] CUresult register_range(std::uintptr_t ptr, std::size_t bytes, unsigned flags,
                                        CUctx_st const& context);
  /// What cuMemHostUnregister(pointer) finds: CUDA_SUCCESS and the registration's bytes
  /// when a live registration starts at `pointer`, else its error (host_register.cpp).
  [[nodiscard]] CUresult find_registration(void const* pointer, std::size_t& bytes) const;
  /// Forgets the registration that starts at `pointer`; CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED
  /// when there is none (any more). The memory stays mapped: it is the caller's.
  [[nodiscard]] CUresult unregister(void const* pointer);
  /// Forgets the registrations of `context` that are not CU_MEMHOSTREGISTER_PORTABLE (its
  /// reset destroys them).
  void drop_registrations(CUctx_st const& context);

  /// The live blocks, by address.
  [[nodiscard]] held census() const;
  /// The live registrations, by address.
  [[nodiscard]] held registrations_census() const;

 private:
  struct registration {
    std::size_t bytes;        ///< as given to cuMemHostRegister
    unsigned flags;           ///< CU_MEMHOSTREGISTER_*
    CUctx_st const* context;  ///< current at the registration
  };

  /// With mutex_ held: [ptr, ptr + bytes) lies inside one live block or registration.
  [[nodiscard]] bool tracked(std::uintptr_t ptr, std::size_t bytes) const;
  /// With mutex_ held: [ptr, ptr + bytes) overlaps a live block or registration.
  [[nodiscard]] bool overlaps(std::uintptr_t ptr, std::size_t bytes) const;

  mutable std::shared_mutex mutex_;
  std::map<std::uintptr_t, std::size_t> blocks_;          // base -> requested size; mutex_
  std::map<std::uintptr_t, registration> registrations_;  // base -> registration; mutex_
};

}  // namespace cudasim
