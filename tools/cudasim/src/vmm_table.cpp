/**
 * @file vmm_table.cpp
 * @brief The VMM rules of cuda.h on host mappings (see vmm.hpp).
 *
 * Argument checks that need no table (flags, offsets, descriptors) are in vmm.cpp,
 * next to the entry points; the checks here are the ones against the live table.
 */
#include "vmm.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <utility>

namespace cudasim {
namespace {

[[nodiscard]] bool aligned(std::uintptr_t value, std::size_t alignment) noexcept
{
  return value % alignment == 0;
}

[[nodiscard]] void* address(std::uintptr_t value) noexcept
{
  return reinterpret_cast<void*>(value);
}

[[nodiscard]] std::size_t host_page() noexcept
{
  static std::size_t const size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

/// The empty reservation state of a range: inaccessible, no memory committed.
[[nodiscard]] void* reservation_pages(void* at, std::size_t size, int extra_flags) noexcept
{
  return ::mmap(at, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | extra_flags, -1,
                0);
}

}  // namespace

memory_bin::~memory_bin()
{
  for (kept const& k : kept_) {
    ::close(k.fd);
  }
}

int memory_bin::take(std::size_t size) noexcept
{
  std::lock_guard lock(mutex_);
  auto const found =
    std::find_if(kept_.begin(), kept_.end(), [size](kept const& k) { return k.size == size; });
  if (found == kept_.end()) { return -1; }
  int const fd = found->fd;
  bytes_ -= size;
  *found = kept_.back();
  kept_.pop_back();
  return fd;
}

void memory_bin::give(int fd, std::size_t size) noexcept
{
  {
    std::lock_guard lock(mutex_);
    if (size <= max_bytes - bytes_) {
      try {
        kept_.push_back({fd, size});
        bytes_ += size;
        return;
      } catch (...) {  // NOLINT(bugprone-empty-catch): no room to keep it: close it below
      }
    }
  }
  ::close(fd);  // outside the lock: freeing the pages takes a while, and creates wait on it
}

physical_memory::~physical_memory()
{
  bin_.give(fd_, size_);
  used_.fetch_sub(size_, std::memory_order_relaxed);
}

CUresult vmm_table::reserve(CUdeviceptr* out, std::size_t size, std::size_t alignment,
                            CUdeviceptr hint)
{
  // cuda.h: "The size and address parameters must be a multiple of the host page size
  // and the alignment must be a power of two or zero for default alignment."
  if (out == nullptr || size == 0 || !aligned(size, host_page()) || !aligned(hint, host_page()) ||
      (alignment != 0 && !std::has_single_bit(alignment))) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  std::size_t const align = std::max(alignment, granularity);
  if (size > SIZE_MAX - align) { return CUDA_ERROR_OUT_OF_MEMORY; }
  std::uintptr_t base = 0;
  if (hint != 0 && aligned(hint, align)) {  // "treats it as a hint"
    void* const at = reservation_pages(address(hint), size, MAP_FIXED_NOREPLACE);
    if (at == address(hint)) {
      base = hint;
    } else if (at != MAP_FAILED) {  // a kernel that ignores MAP_FIXED_NOREPLACE
      ::munmap(at, size);
    }
  }
  if (base == 0) {
    void* const raw = reservation_pages(nullptr, size + align, 0);
    if (raw == MAP_FAILED) { return CUDA_ERROR_OUT_OF_MEMORY; }
    auto const start = reinterpret_cast<std::uintptr_t>(raw);
    base             = (start + align - 1) / align * align;
    if (base > start) { ::munmap(raw, base - start); }
    if (std::uintptr_t const tail = start + size + align - (base + size); tail > 0) {
      ::munmap(address(base + size), tail);
    }
  }
  try {
    std::unique_lock lock(mutex_);
    reservations_.emplace(base, size);
  } catch (...) {
    ::munmap(address(base), size);
    throw;
  }
  *out = base;
  return CUDA_SUCCESS;
}

CUresult vmm_table::free_reservation(CUdeviceptr ptr, std::size_t size)
{
  std::unique_lock lock(mutex_);
  // cuda.h: "The size must match what was given to memAddressReserve and the ptr given
  // must match what was returned from memAddressReserve."
  auto const found = reservations_.find(ptr);
  if (found == reservations_.end() || found->second != size) { return CUDA_ERROR_INVALID_VALUE; }
  // Stricter than cuda.h says: a reservation that still has mappings is not freed.
  if (auto const inside = mappings_.lower_bound(ptr);
      inside != mappings_.end() && inside->first < ptr + size) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  ::munmap(address(ptr), size);
  reservations_.erase(found);
  return CUDA_SUCCESS;
}

CUresult vmm_table::create(CUmemGenericAllocationHandle* out, std::size_t size,
                           CUmemAllocationProp const& prop, std::atomic<std::size_t>& used,
                           std::size_t limit)
{
  // cuda.h: "The size of this allocation must be a multiple of the the value given via
  // cuMemGetAllocationGranularity with the CU_MEM_ALLOC_GRANULARITY_MINIMUM flag."
  if (out == nullptr || size == 0 || !aligned(size, granularity)) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  // Claim the bytes first, so two concurrent creates cannot both fit in the last gap.
  std::size_t taken = used.load(std::memory_order_relaxed);
  do {
    if (taken > limit || limit - taken < size) { return CUDA_ERROR_OUT_OF_MEMORY; }
  } while (!used.compare_exchange_weak(taken, taken + size, std::memory_order_relaxed));
  int fd = bin_.take(size);
  if (fd < 0) {
    fd = ::memfd_create("cudasim-device-memory", MFD_CLOEXEC);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0) {
      if (fd >= 0) { ::close(fd); }
      used.fetch_sub(size, std::memory_order_relaxed);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
  }
  CUmemGenericAllocationHandle handle = 0;
  {
    std::lock_guard lock(handles_mutex_);
    handle = next_handle_++;  // a create that fails from here on skips a value: never reused
  }
  std::shared_ptr<physical_memory> memory;
  try {
    memory = std::make_shared<physical_memory>(fd, size, used, bin_, handle, prop);
  } catch (...) {
    bin_.give(fd, size);
    used.fetch_sub(size, std::memory_order_relaxed);
    throw;
  }
  std::lock_guard lock(handles_mutex_);
  handles_.emplace(handle, handle_entry{std::move(memory), 1});
  *out = handle;
  return CUDA_SUCCESS;
}

CUresult vmm_table::release(CUmemGenericAllocationHandle handle)
{
  std::shared_ptr<physical_memory> memory;  // freed after the lock, if this was the last owner
  std::lock_guard lock(handles_mutex_);
  auto const found = handles_.find(handle);
  if (found == handles_.end()) { return CUDA_ERROR_INVALID_VALUE; }
  // cuda.h (cuMemRetainAllocationHandle): "The returned handle must be released with
  // corresponding number of calls to cuMemRelease."
  if (--found->second.references > 0) { return CUDA_SUCCESS; }
  memory = std::move(found->second.memory);
  handles_.erase(found);
  return CUDA_SUCCESS;
}

CUresult vmm_table::retain(CUmemGenericAllocationHandle* out, std::uintptr_t address)
{
  if (out == nullptr) { return CUDA_ERROR_INVALID_VALUE; }
  std::shared_lock lock(mutex_);  // no unmap between finding the mapping and retaining
  // cuda.h: "If the address requested is not mapped, the function will fail"; "addr,
  // can be any address in a range previously mapped by cuMemMap, and not necessarily the
  // start address".
  auto const found = mapping_at(address);
  if (found == mappings_.end()) { return CUDA_ERROR_INVALID_VALUE; }
  std::shared_ptr<physical_memory> const& memory = found->second.memory;
  // "The handle is guaranteed to be the same handle value used to map the memory": a
  // handle released while its mapping stayed becomes live again under that value.
  std::lock_guard handles_lock(handles_mutex_);
  auto const entry = handles_.try_emplace(memory->handle(), handle_entry{memory, 0}).first;
  ++entry->second.references;
  *out = memory->handle();
  return CUDA_SUCCESS;
}

CUresult vmm_table::properties(CUmemAllocationProp* out, CUmemGenericAllocationHandle handle) const
{
  if (out == nullptr) { return CUDA_ERROR_INVALID_VALUE; }
  std::lock_guard lock(handles_mutex_);
  auto const found = handles_.find(handle);
  if (found == handles_.end()) { return CUDA_ERROR_INVALID_VALUE; }
  *out = found->second.memory->properties();
  return CUDA_SUCCESS;
}

bool vmm_table::live(CUmemGenericAllocationHandle handle) const
{
  std::lock_guard lock(handles_mutex_);
  return handles_.contains(handle);
}

CUresult vmm_table::address_range(CUdeviceptr* base, std::size_t* size,
                                  std::uintptr_t address) const
{
  std::shared_lock lock(mutex_);
  // The range of one cuMemMap, not of the reservation: for several handles mapped side
  // by side, the real driver returns "the bounds of the cuMem handle containing the base
  // pointer, not the full mapped extent" (openucx/ucx pull request 11461; libfabric pull
  // request 12473 says the same).
  auto const found = mapping_at(address);
  if (found == mappings_.end()) { return CUDA_ERROR_NOT_FOUND; }
  if (base != nullptr) { *base = found->first; }
  if (size != nullptr) { *size = found->second.size; }
  return CUDA_SUCCESS;
}

CUresult vmm_table::map(CUdeviceptr ptr, std::size_t size, std::size_t offset,
                        CUmemGenericAllocationHandle handle)
{
  // cuda.h: "Both ptr, size, and offset must be a multiple of the value given via
  // cuMemGetAllocationGranularity with the CU_MEM_ALLOC_GRANULARITY_MINIMUM flag."
  if (size == 0 || !aligned(ptr, granularity) || ptr + size < ptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  std::shared_ptr<physical_memory> memory;
  {
    std::lock_guard lock(handles_mutex_);
    auto const found = handles_.find(handle);
    if (found == handles_.end()) { return CUDA_ERROR_INVALID_VALUE; }
    memory = found->second.memory;
  }
  // cuda.h: offset "currently must be zero", "offset + size must be less than the size of
  // the memory allocation". The real driver (H100, driver 580.159.04) maps whole handles
  // only: a non-zero offset, a size that is not a multiple of the granularity, a size
  // beyond the handle and a size smaller than the handle are CUDA_ERROR_NOT_SUPPORTED.
  if (offset != 0 || size != memory->size()) { return CUDA_ERROR_NOT_SUPPORTED; }
  mapping entry{size, memory, std::vector<std::uint32_t>(size / granularity),
                std::vector<std::uint32_t>(size / granularity)};
  std::unique_lock lock(mutex_);
  // "This range must be an address reservation previously reserved with
  // cuMemAddressReserve". Stricter: the range lies inside one reservation. (On the real
  // driver a map that ran one granule past the end of a reservation succeeded; what lay
  // there is not known, so the simulator does not allow it.)
  if (reservation_of(ptr, size) == reservations_.end()) { return CUDA_ERROR_INVALID_VALUE; }
  // "cuMemMap can only create mappings on VA range reservations that are not currently
  // mapped": CUDA_ERROR_INVALID_VALUE, as on the real driver.
  auto const next = mappings_.lower_bound(ptr);
  if ((next != mappings_.end() && next->first < ptr + size) ||
      mapping_at(ptr) != mappings_.cend()) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  // "calling cuMemMap does not make the address accessible": PROT_NONE until cuMemSetAccess.
  if (::mmap(address(ptr), size, PROT_NONE, MAP_SHARED | MAP_FIXED, memory->fd(), 0) ==
      MAP_FAILED) {
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  mappings_.emplace(ptr, std::move(entry));
  return CUDA_SUCCESS;
}

CUresult vmm_table::unmap(CUdeviceptr ptr, std::size_t size)
{
  if (size == 0 || ptr + size < ptr) { return CUDA_ERROR_INVALID_VALUE; }
  std::uintptr_t const end = ptr + size;
  std::unique_lock lock(mutex_);
  // Stricter (the real driver was not tried outside a reservation): inside one reservation.
  if (reservation_of(ptr, size) == reservations_.end()) { return CUDA_ERROR_INVALID_VALUE; }
  // cuda.h: "cuMemUnmap cannot unmap a sub-range of an address range mapped": a mapping
  // that begins before the range or ends after it is CUDA_ERROR_INVALID_VALUE. Unmapped
  // granules in the range are no error: the real driver (H100, driver 580.159.04) returned
  // CUDA_SUCCESS for two whole mappings followed by an unmapped granule, and for a range
  // with nothing mapped at all.
  auto const first = mapping_at(ptr);
  auto const last  = mapping_at(end - 1);
  if ((first != mappings_.end() && first->first < ptr) ||
      (last != mappings_.end() && last->first + last->second.size > end)) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  for (auto found = mappings_.lower_bound(ptr); found != mappings_.end() && found->first < end;) {
    // "the address range is converted to an address reservation"
    if (reservation_pages(address(found->first), found->second.size, MAP_FIXED) == MAP_FAILED) {
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    found = mappings_.erase(found);  // frees the memory if its handle is released
  }
  return CUDA_SUCCESS;
}

CUresult vmm_table::set_access(CUdeviceptr ptr, std::size_t size, CUmemAccessDesc const* desc,
                               std::size_t count)
{
  // Stricter: cuda.h does not say; access is tracked per granule.
  if (size == 0 || !aligned(ptr, granularity) || !aligned(size, granularity) || ptr + size < ptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  std::uintptr_t const end = ptr + size;
  std::unique_lock lock(mutex_);
  // cuda.h: "The range must be a fully mapped address range". The real driver (H100,
  // driver 580.159.04) is looser: it returned CUDA_SUCCESS for two mappings with an
  // unmapped granule between them, and CUDA_ERROR_INVALID_VALUE for a range that ends
  // in an unmapped granule and for one with nothing mapped; and in the first case only
  // the first mapping got the access (the second read back PROT_NONE). Modelled: the
  // range lies in one reservation and its first and last granules are mapped; access is
  // set on the mapped run that starts at `ptr`, up to the first unmapped granule.
  if (reservation_of(ptr, size) == reservations_.end() || mapping_at(ptr) == mappings_.end() ||
      mapping_at(end - 1) == mappings_.end()) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  std::uintptr_t next = mapping_at(ptr)->first;  // where the contiguous run continues
  for (auto found = mapping_at(ptr); found != mappings_.end() && found->first < end; ++found) {
    if (found->first != next) { break; }  // a gap: the real driver stops there
    next       = found->first + found->second.size;
    mapping& m = found->second;
    std::size_t const first =
      (std::max<std::uintptr_t>(ptr, found->first) - found->first) / granularity;
    std::size_t const last =
      (std::min<std::uintptr_t>(end, found->first + m.size) - found->first) / granularity;
    for (std::size_t g = first; g < last; ++g) {
      for (std::size_t i = 0; i < count; ++i) {
        std::uint32_t const bit = std::uint32_t{1} << desc[i].location.id;
        bool const read         = (desc[i].flags & CU_MEM_ACCESS_FLAGS_PROT_READ) != 0;
        bool const write        = desc[i].flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        m.readers[g]            = read ? (m.readers[g] | bit) : (m.readers[g] & ~bit);
        m.writers[g]            = write ? (m.writers[g] | bit) : (m.writers[g] & ~bit);
      }
    }
    apply_protection(found->first, m);
  }
  return CUDA_SUCCESS;
}

CUresult vmm_table::get_access(unsigned long long* flags, int device, CUdeviceptr ptr) const
{
  std::shared_lock lock(mutex_);
  auto const found = mapping_at(ptr);
  if (found == mappings_.end()) { return CUDA_ERROR_INVALID_VALUE; }
  std::size_t const g     = (ptr - found->first) / granularity;
  std::uint32_t const bit = std::uint32_t{1} << device;
  *flags = (found->second.writers[g] & bit) != 0   ? CU_MEM_ACCESS_FLAGS_PROT_READWRITE
           : (found->second.readers[g] & bit) != 0 ? CU_MEM_ACCESS_FLAGS_PROT_READ
                                                   : CU_MEM_ACCESS_FLAGS_PROT_NONE;
  return CUDA_SUCCESS;
}

void vmm_table::apply_protection(std::uintptr_t base, mapping const& m)
{
  auto const protection = [&m](std::size_t g) {
    return m.writers[g] != 0 ? PROT_READ | PROT_WRITE : m.readers[g] != 0 ? PROT_READ : PROT_NONE;
  };
  std::size_t const granules = m.size / granularity;
  for (std::size_t run = 0; run < granules;) {
    std::size_t end = run + 1;
    while (end < granules && protection(end) == protection(run)) {
      ++end;
    }
    ::mprotect(address(base + run * granularity), (end - run) * granularity, protection(run));
    run = end;
  }
}

bool vmm_table::mapped(std::uintptr_t ptr, std::size_t bytes) const
{
  if (reservation_of(ptr, bytes) == reservations_.end()) { return false; }
  for (std::uintptr_t cursor = ptr; cursor < ptr + bytes;) {
    auto const found = mapping_at(cursor);
    if (found == mappings_.end()) { return false; }
    cursor = found->first + found->second.size;
  }
  return true;
}

bool vmm_table::accessible(std::uintptr_t ptr, std::size_t bytes, int device, bool write) const
{
  std::uint32_t const bit = std::uint32_t{1} << device;
  for (std::uintptr_t cursor = ptr; cursor < ptr + bytes;) {
    auto const found = mapping_at(cursor);
    if (found == mappings_.end()) { return false; }
    auto const& bits        = write ? found->second.writers : found->second.readers;
    std::size_t const first = (cursor - found->first) / granularity;
    std::size_t const end =
      std::min<std::uintptr_t>(ptr + bytes, found->first + found->second.size);
    std::size_t const last = (end - 1 - found->first) / granularity;
    for (std::size_t g = first; g <= last; ++g) {
      if ((bits[g] & bit) == 0) { return false; }
    }
    cursor = end;
  }
  return true;
}

bool vmm_table::overlaps_reservation(std::uintptr_t ptr, std::size_t bytes) const
{
  auto after = reservations_.upper_bound(ptr + bytes - 1);
  if (after == reservations_.begin()) { return false; }
  --after;
  return after->first + after->second > ptr;
}

vmm_table::mapping_map::const_iterator vmm_table::mapping_at(std::uintptr_t address) const
{
  auto found = mappings_.upper_bound(address);
  if (found == mappings_.begin()) { return mappings_.end(); }
  --found;
  return address < found->first + found->second.size ? found : mappings_.end();
}

vmm_table::mapping_map::iterator vmm_table::mapping_at(std::uintptr_t address)
{
  auto const found = std::as_const(*this).mapping_at(address);
  return found == mappings_.cend() ? mappings_.end() : mappings_.find(found->first);
}

std::map<std::uintptr_t, std::size_t>::const_iterator vmm_table::reservation_of(
  std::uintptr_t ptr, std::size_t bytes) const
{
  auto found = reservations_.upper_bound(ptr);
  if (found == reservations_.begin()) { return reservations_.end(); }
  --found;
  return ptr + bytes <= found->first + found->second ? found : reservations_.end();
}

vmm_census vmm_table::census() const
{
  vmm_census c;
  {
    std::shared_lock lock(mutex_);
    for (auto const& [base, size] : reservations_) {
      c.reservations.add(base, size);
    }
    for (auto const& [base, m] : mappings_) {
      c.mappings.add(base, m.size);
    }
  }
  std::lock_guard lock(handles_mutex_);
  for (auto const& [handle, entry] : handles_) {
    c.handles.add(handle, entry.memory->size());
  }
  return c;
}

}  // namespace cudasim
