/**
 * @file host_register.cpp
 * @brief Registered host ranges: cuMemHostRegister and cuMemHostUnregister (the registry:
 *        host_memory.hpp).
 *
 * cuda.h, cuMemHostRegister: "Page-locks the memory range specified by p and bytesize and
 * maps it for the device(s) as specified by Flags. This memory range also is added to the
 * same tracking mechanism as cuMemHostAlloc to automatically accelerate calls to functions
 * such as cuMemcpyHtoD()." So a registered range is pinned for every copy, as a
 * cuMemHostAlloc block is. Like a block it is not mlock()ed (host_memory.cpp says why).
 *
 * The rules, with their sources (tools/cudasim/README.md lists them too; "assumed" where
 * neither cuda.h nor a real driver's observed behaviour says):
 *  - A current context (cuda.h lists CUDA_ERROR_INVALID_CONTEXT); the registration belongs
 *    to it. Null p or bytesize 0, and flags other than PORTABLE, DEVICEMAP, IOMEMORY and
 *    READ_ONLY: CUDA_ERROR_INVALID_VALUE (assumed).
 *  - READ_ONLY where CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED is 0, as here:
 *    CUDA_ERROR_NOT_SUPPORTED (cuda.h). IOMEMORY: the simulator's host memory is never I/O
 *    memory, CUDA_ERROR_INVALID_VALUE (assumed).
 *  - The range need not be page aligned: the driver pins the pages that cover it (NVIDIA's
 *    cuda-python test_cudart_hostRegister registers an unaligned numpy buffer). Those pages
 *    must be mapped readable and writable by the process (cuda.h: READ_ONLY "is required in
 *    order to register memory mapped to the CPU as read-only"), and not be device memory
 *    (a VMM reservation), else CUDA_ERROR_INVALID_VALUE (the code assumed).
 *  - A range with a byte in common with a live registration: CUDA_ERROR_HOST_MEMORY_-
 *    ALREADY_REGISTERED (cuda.h: "has already been registered"). Bytes, not pages: on a
 *    real driver (590.48.01) disjoint buffers that share a page register independently
 *    (lupinemachines/lupine pull request 878). With a cuMemHostAlloc block: the same
 *    (assumed).
 *  - cuMemHostUnregister needs no current context (openucx/ucx pull request 10643: it
 *    "does not produce an error when invoked from a different context ... (or even without
 *    an active context)"). p must be the base given to cuMemHostRegister. Null, a pointer
 *    inside a registered range (cuda-python's test) or inside a cuMemHostAlloc block
 *    (PyTorch pull request 146520, "invalid argument"): CUDA_ERROR_INVALID_VALUE; any
 *    other pointer: CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED (cuda.h). Like cuMemFreeHost it
 *    first waits for the work of every context (assumed from torch/cutorch#618: caching
 *    pinned memory avoids "synchronization due to cudaFreeHost (or cudaHostUnregister)"),
 *    so no queued copy touches the range after it became pageable. The memory stays
 *    mapped: it is the caller's.
 *  - A reset of the registering context drops its registrations that are not PORTABLE
 *    (assumed; ucx pull request 10643: unregistering "will fail if the context in which
 *    the memory was allocated has been destroyed"): cuMemHostUnregister then answers
 *    CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED (assumed).
 */
#include "host_memory.hpp"

#include "profile.hpp"
#include "state.hpp"

#include <sys/mman.h>

#include <cerrno>
#include <charconv>
#include <fstream>
#include <string>
#include <string_view>

namespace cudasim {
namespace {

constexpr unsigned known_flags = CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP |
                                 CU_MEMHOSTREGISTER_IOMEMORY | CU_MEMHOSTREGISTER_READ_ONLY;

/// Parses "low-high perms ..." (a /proc/self/maps line); false when it is not one.
[[nodiscard]] bool parse_maps_line(std::string_view line, std::uintptr_t& low, std::uintptr_t& high,
                                   std::string_view& perms) noexcept
{
  char const* const end = line.data() + line.size();
  auto const first      = std::from_chars(line.data(), end, low, 16);
  if (first.ec != std::errc{} || first.ptr == end || *first.ptr != '-') { return false; }
  auto const second = std::from_chars(first.ptr + 1, end, high, 16);
  if (second.ec != std::errc{} || end - second.ptr < 5 || *second.ptr != ' ') { return false; }
  perms = std::string_view(second.ptr + 1, 4);
  return true;
}

/// True when every byte of [first, end) (page aligned) is mapped in this process, readable,
/// and writable unless `read_only`. From /proc/self/maps, whose entries are sorted by
/// address; where it cannot be read, msync() tells whether the pages are mapped at all.
[[nodiscard]] bool mapped_for_registration(std::uintptr_t first, std::uintptr_t end, bool read_only)
{
  std::ifstream maps("/proc/self/maps");
  if (!maps) {
    return ::msync(reinterpret_cast<void*>(first), end - first, MS_ASYNC) == 0 || errno != ENOMEM;
  }
  std::uintptr_t covered = first;
  for (std::string line; covered < end && std::getline(maps, line);) {
    std::uintptr_t low  = 0;
    std::uintptr_t high = 0;
    std::string_view perms;
    if (!parse_maps_line(line, low, high, perms)) { return false; }
    if (high <= covered) { continue; }
    if (low > covered || perms[0] != 'r' || (!read_only && perms[1] != 'w')) { return false; }
    covered = high;
  }
  return covered >= end;
}

/// cuMemHostRegister's checks of its arguments and of the memory, before the registry's.
[[nodiscard]] CUresult check_registration(void const* p, std::size_t bytes, unsigned flags)
{
  auto const ptr         = reinterpret_cast<std::uintptr_t>(p);
  std::size_t const page = host_page_size();
  if (p == nullptr || bytes == 0 || ptr > UINTPTR_MAX - page || bytes > UINTPTR_MAX - page - ptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if ((flags & ~known_flags) != 0) { return CUDA_ERROR_INVALID_VALUE; }
  bool const read_only = (flags & CU_MEMHOSTREGISTER_READ_ONLY) != 0;
  if (read_only &&
      attribute_value(CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED).value_or(0) != 1) {
    return CUDA_ERROR_NOT_SUPPORTED;
  }
  if ((flags & CU_MEMHOSTREGISTER_IOMEMORY) != 0) { return CUDA_ERROR_INVALID_VALUE; }
  std::uintptr_t const first = ptr / page * page;
  std::uintptr_t const end   = (ptr + bytes + page - 1) / page * page;
  {
    vmm_table const& vmm = simulator::get().vmm();
    auto const hold      = vmm.hold();
    if (vmm.overlaps_reservation(first, end - first)) { return CUDA_ERROR_INVALID_VALUE; }
  }
  return mapped_for_registration(first, end, read_only) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/// With the registry held: a range of `ranges` (base -> entry, disjoint, sized by
/// `size_of`) overlaps [ptr, ptr + bytes). Only the last one that starts before its end
/// can: every earlier one also ends earlier.
template <class Ranges, class SizeOf>
[[nodiscard]] bool overlaps_one(Ranges const& ranges, std::uintptr_t ptr, std::size_t bytes,
                                SizeOf size_of)
{
  auto found = ranges.lower_bound(ptr + bytes);
  if (found == ranges.begin()) { return false; }
  --found;
  return found->first + size_of(found->second) > ptr;
}

}  // namespace

bool host_registry::overlaps(std::uintptr_t ptr, std::size_t bytes) const
{
  return overlaps_one(blocks_, ptr, bytes, [](std::size_t size) { return size; }) ||
         overlaps_one(registrations_, ptr, bytes, [](registration const& r) { return r.bytes; });
}

CUresult host_registry::register_range(std::uintptr_t ptr, std::size_t bytes, unsigned flags,
                                       CUctx_st const& context)
{
  std::unique_lock lock(mutex_);
  if (overlaps(ptr, bytes)) { return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED; }
  registrations_.emplace(ptr, registration{bytes, flags, &context});
  return CUDA_SUCCESS;
}

CUresult host_registry::find_registration(void const* pointer, std::size_t& bytes) const
{
  if (pointer == nullptr) { return CUDA_ERROR_INVALID_VALUE; }
  auto const ptr = reinterpret_cast<std::uintptr_t>(pointer);
  std::shared_lock lock(mutex_);
  if (auto const found = registrations_.find(ptr); found != registrations_.end()) {
    bytes = found->second.bytes;
    return CUDA_SUCCESS;
  }
  // Inside a registered range but not its base, or inside a block: "invalid argument".
  return tracked(ptr, 1) ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
}

CUresult host_registry::unregister(void const* pointer)
{
  std::unique_lock lock(mutex_);
  return registrations_.erase(reinterpret_cast<std::uintptr_t>(pointer)) == 1
           ? CUDA_SUCCESS
           : CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
}

void host_registry::drop_registrations(CUctx_st const& context)
{
  std::unique_lock lock(mutex_);
  std::erase_if(registrations_, [&context](auto const& entry) {
    registration const& r = entry.second;
    return r.context == &context && (r.flags & CU_MEMHOSTREGISTER_PORTABLE) == 0;
  });
}

held host_registry::registrations_census() const
{
  std::shared_lock lock(mutex_);
  held ranges;
  for (auto const& [base, r] : registrations_) {
    ranges.add(base, r.bytes);
  }
  return ranges;
}

}  // namespace cudasim

using cudasim::api;
using cudasim::entry;

CUresult CUDAAPI cuMemHostRegister(void* p, size_t bytesize, unsigned int Flags)
{
  return api(entry::mem_host_register, [&] {
    CUctx_st* context = nullptr;
    if (CUresult const bad = cudasim::use_current_context(context); bad != CUDA_SUCCESS) {
      return bad;
    }
    if (CUresult const bad = cudasim::check_registration(p, bytesize, Flags); bad != CUDA_SUCCESS) {
      return bad;
    }
    cudasim::charge(entry::mem_host_register, bytesize);
    return cudasim::simulator::get().host().register_range(reinterpret_cast<std::uintptr_t>(p),
                                                           bytesize, Flags, *context);
  });
}

CUresult CUDAAPI cuMemHostUnregister(void* p)
{
  return api(entry::mem_host_unregister, [&] {
    cudasim::simulator& sim = cudasim::simulator::get();
    std::size_t bytes       = 0;
    if (CUresult const bad = sim.host().find_registration(p, bytes); bad != CUDA_SUCCESS) {
      return bad;
    }
    cudasim::charge(entry::mem_host_unregister, bytes);
    // As cuMemFreeHost: no queued copy may read or write the range once it is pageable.
    for (int ordinal = 0; ordinal < sim.device_count(); ++ordinal) {
      cudasim::synchronize_context(sim.find_device(ordinal)->context);
    }
    return sim.host().unregister(p);
  });
}
