/**
 * @file host_memory.cpp
 * @brief Pinned host blocks (see host_memory.hpp) and their entry points; what counts as
 *        pinned. Registered ranges: host_register.cpp.
 *
 * A block is an anonymous mmap, so it is page aligned as the driver's are. It is not
 * mlock()ed: the simulator has no DMA engine that needs it, and locked-memory limits
 * would make large host stores fail for no reason the real driver has.
 */
#include "host_memory.hpp"

#include "profile.hpp"
#include "state.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <vector>

namespace cudasim {
namespace {

[[nodiscard]] std::size_t page_rounded(std::size_t bytes) noexcept
{
  std::size_t const page = host_page_size();
  return (bytes + page - 1) / page * page;
}

/// True when [ptr, ptr + bytes) lies inside the one range of `ranges` (base -> entry) that
/// starts at or below `ptr`, whose size is `size_of(entry)`.
template <class Ranges, class SizeOf>
[[nodiscard]] bool inside_one(Ranges const& ranges, std::uintptr_t ptr, std::size_t bytes,
                              SizeOf size_of)
{
  auto found = ranges.upper_bound(ptr);
  if (found == ranges.begin()) { return false; }
  --found;
  std::size_t const size = size_of(found->second);
  return ptr - found->first <= size && bytes <= size - (ptr - found->first);
}

}  // namespace

std::size_t host_page_size() noexcept
{
  static std::size_t const page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return page;
}

CUresult host_registry::allocate(void** out, std::size_t bytes)
{
  if (out == nullptr || bytes == 0 || bytes > SIZE_MAX / 2) { return CUDA_ERROR_INVALID_VALUE; }
  void* const block = ::mmap(nullptr, page_rounded(bytes), PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (block == MAP_FAILED) { return CUDA_ERROR_OUT_OF_MEMORY; }
  try {
    std::unique_lock lock(mutex_);
    blocks_.emplace(reinterpret_cast<std::uintptr_t>(block), bytes);
  } catch (...) {
    ::munmap(block, page_rounded(bytes));
    throw;
  }
  *out = block;
  return CUDA_SUCCESS;
}

CUresult host_registry::free(void* pointer)
{
  std::size_t bytes = 0;
  {
    std::unique_lock lock(mutex_);
    auto const found = blocks_.find(reinterpret_cast<std::uintptr_t>(pointer));
    if (found == blocks_.end()) { return CUDA_ERROR_INVALID_VALUE; }
    bytes = found->second;
    blocks_.erase(found);
  }
  ::munmap(pointer, page_rounded(bytes));
  return CUDA_SUCCESS;
}

bool host_registry::pinned(std::uintptr_t ptr, std::size_t bytes) const
{
  std::shared_lock lock(mutex_);
  return tracked(ptr, bytes);
}

bool host_registry::tracked(std::uintptr_t ptr, std::size_t bytes) const
{
  return inside_one(blocks_, ptr, bytes, [](std::size_t size) { return size; }) ||
         inside_one(registrations_, ptr, bytes, [](registration const& r) { return r.bytes; });
}

std::size_t host_registry::block_bytes(void const* pointer) const
{
  std::shared_lock lock(mutex_);
  auto const found = blocks_.find(reinterpret_cast<std::uintptr_t>(pointer));
  return found == blocks_.end() ? 0 : found->second;
}

held host_registry::census() const
{
  std::shared_lock lock(mutex_);
  held blocks;
  for (auto const& [base, bytes] : blocks_) {
    blocks.add(base, bytes);
  }
  return blocks;
}

}  // namespace cudasim

using cudasim::api;
using cudasim::entry;

CUresult CUDAAPI cuMemHostAlloc(void** pp, size_t bytesize, unsigned int Flags)
{
  return api(entry::mem_host_alloc, [&] {
    CUctx_st* context = nullptr;
    if (CUresult const bad = cudasim::use_current_context(context); bad != CUDA_SUCCESS) {
      return bad;
    }
    constexpr unsigned known =
      CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_WRITECOMBINED;
    if ((Flags & ~known) != 0) { return CUDA_ERROR_INVALID_VALUE; }
    cudasim::charge(entry::mem_host_alloc, bytesize);
    return cudasim::simulator::get().host().allocate(pp, bytesize);
  });
}

CUresult CUDAAPI cuMemAllocHost(void** pp, size_t bytesize)
{
  return api(entry::mem_alloc_host, [&] {
    CUctx_st* context = nullptr;
    if (CUresult const bad = cudasim::use_current_context(context); bad != CUDA_SUCCESS) {
      return bad;
    }
    cudasim::charge(entry::mem_alloc_host, bytesize);
    return cudasim::simulator::get().host().allocate(pp, bytesize);
  });
}

CUresult CUDAAPI cuMemFreeHost(void* p)
{
  return api(entry::mem_free_host, [&] {
    CUctx_st* context = nullptr;
    if (CUresult const bad = cudasim::use_current_context(context); bad != CUDA_SUCCESS) {
      return bad;
    }
    // free(NULL) semantics: driver 590.48.01 returns CUDA_SUCCESS (lupinemachines/lupine
    // issue 850, probed on an RTX 4090); cudaFreeHost(nullptr) forwards here.
    if (p == nullptr) { return CUDA_SUCCESS; }
    cudasim::simulator& sim = cudasim::simulator::get();
    // Only the base of a block (not a registered range: cuMemHostUnregister's).
    std::size_t const bytes = sim.host().block_bytes(p);
    if (bytes == 0) { return CUDA_ERROR_INVALID_VALUE; }
    cudasim::charge(entry::mem_free_host, bytes);
    // Freeing pinned memory synchronizes, as cudaFreeHost does: no queued copy may
    // still read or write the block once it is unmapped.
    for (int ordinal = 0; ordinal < sim.device_count(); ++ordinal) {
      cudasim::synchronize_context(sim.find_device(ordinal)->context);
    }
    return sim.host().free(p);
  });
}
