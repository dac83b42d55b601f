/**
 * @file copy.cpp
 * @brief Copies, memsets and cuStreamWriteValue32: pointer checks at the call, the device
 *        access when the stream runs it, and the synchronization that host memory implies.
 *
 * At the call, a device range must lie in one reservation, be mapped and be accessible
 * to the stream's device (write for a destination, read for a source), and a host range
 * must not touch a reservation; else the call fails with CUDA_ERROR_INVALID_VALUE and
 * nothing is queued (no fault, no sticky error). The real driver does the same (H100,
 * driver 580.159.04): cuMemcpyHtoD into a mapping with no access, cuMemcpyDtoH from a
 * PROT_NONE range and cuMemsetD32Async into a PROT_READ range all returned
 * CUDA_ERROR_INVALID_VALUE from the call. When the stream runs the operation, the device
 * range must still be mapped and accessible, else it faults like a kernel on a GPU:
 * CUDA_ERROR_ILLEGAL_ADDRESS, sticky (an unmap while the work is pending, as on a GPU).
 * The operation holds the mapping table shared while it moves bytes, so the mapping it
 * checked stays until it is done; an unmap waits for at most the copies in flight.
 *
 * Synchronization ("API synchronization behavior" in the CUDA docs):
 *  - cuMemcpyHtoDAsync from pageable memory stages the source before returning;
 *  - cuMemcpyDtoHAsync to pageable memory returns once the copy is complete;
 *  - with pinned memory both are fully asynchronous;
 *  - cuMemcpyHtoD/DtoH run on the legacy stream and return once complete;
 *  - cuMemcpyDtoD and the memsets of device memory are asynchronous (legacy stream).
 */
#include "state.hpp"

#include <algorithm>
#include <cstring>
#include <optional>
#include <thread>

namespace cudasim {
namespace {

enum class call_kind : bool { asynchronous, synchronous };

[[nodiscard]] bool wraps(std::uintptr_t ptr, std::size_t bytes) noexcept
{
  return ptr + bytes < ptr;
}

/// A device range the driver accepts at the call: in one reservation, mapped now, and
/// readable (with `write`, writable) by `device` now.
[[nodiscard]] bool resolvable(std::uintptr_t ptr, std::size_t bytes, int device, bool write)
{
  vmm_table const& vmm = simulator::get().vmm();
  auto const hold      = vmm.hold();
  return !wraps(ptr, bytes) && vmm.mapped(ptr, bytes) && vmm.accessible(ptr, bytes, device, write);
}

/// A host range: not null, and not device memory.
[[nodiscard]] bool host_range(std::uintptr_t ptr, std::size_t bytes)
{
  vmm_table const& vmm = simulator::get().vmm();
  auto const hold      = vmm.hold();
  return ptr != 0 && !wraps(ptr, bytes) && !vmm.overlaps_reservation(ptr, bytes);
}

/// Checks, queues and (when the rules say so) waits for a copy.
[[nodiscard]] CUresult start_copy(CUstream handle, copy_op&& op, call_kind call)
{
  CUctx_st* current = nullptr;
  if (CUresult const bad = use_current_context(current); bad != CUDA_SUCCESS) { return bad; }
  std::shared_ptr<CUstream_st> stream;
  if (CUresult const bad = resolve_stream(handle, stream); bad != CUDA_SUCCESS) { return bad; }
  if (op.bytes == 0) { return CUDA_SUCCESS; }
  int const ordinal      = device_of(stream->context()).ordinal;
  bool const to_device   = op.kind != copy_kind::device_to_host;
  bool const from_device = op.kind != copy_kind::host_to_device;
  if ((to_device ? !resolvable(op.dst, op.bytes, ordinal, true) : !host_range(op.dst, op.bytes)) ||
      (from_device ? !resolvable(op.src, op.bytes, ordinal, false)
                   : !host_range(op.src, op.bytes))) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  bool wait = call == call_kind::synchronous;
  if (op.kind != copy_kind::device_to_device && !wait) {
    std::uintptr_t const host = op.kind == copy_kind::host_to_device ? op.src : op.dst;
    if (!simulator::get().host().pinned(host, op.bytes)) {
      if (op.kind == copy_kind::device_to_host) {
        wait = true;  // to pageable memory: returns once the copy is complete
      } else {        // from pageable memory: the source is staged before returning
        op.staging = std::make_unique_for_overwrite<std::byte[]>(op.bytes);
        std::memcpy(op.staging.get(), reinterpret_cast<void const*>(op.src), op.bytes);
      }
    }
  }
  std::uint64_t const sequence = submit(*stream, std::move(op));
  if (!wait) { return CUDA_SUCCESS; }
  stream->wait(sequence);
  return stream->context().sticky_error();
}

/// Checks and queues a memset of `count` elements of `width` bytes.
[[nodiscard]] CUresult start_memset(CUstream handle, std::uintptr_t dst, std::uint32_t value,
                                    std::size_t count, std::uint8_t width)
{
  CUctx_st* current = nullptr;
  if (CUresult const bad = use_current_context(current); bad != CUDA_SUCCESS) { return bad; }
  std::shared_ptr<CUstream_st> stream;
  if (CUresult const bad = resolve_stream(handle, stream); bad != CUDA_SUCCESS) { return bad; }
  if (dst % width != 0 || count > SIZE_MAX / width) {
    return CUDA_ERROR_INVALID_VALUE;
  }  // D32: 4-byte aligned
  if (count == 0) { return CUDA_SUCCESS; }
  if (!resolvable(dst, count * width, device_of(stream->context()).ordinal, true)) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  submit(*stream, memset_op{dst, count, value, width});
  return CUDA_SUCCESS;
}

}  // namespace

/// The most bytes a copy moves under one hold of the mapping table (see execute).
constexpr std::size_t copy_slice_bytes = std::size_t{1} << 20;

CUresult execute(copy_op& op, CUctx_st& context, link_throttle::clock::time_point& ready)
{
  device& dev            = device_of(context);
  link_model const model = current_link_model();
  bool const to_device   = op.kind == copy_kind::host_to_device;
  double gbps            = to_device ? model.h2d_gbps : model.d2h_gbps;
  bool const throttled   = gbps > 0 && op.kind != copy_kind::device_to_device;
  std::optional<link_throttle::slot> slot;
  if (throttled) {
    // A copy queued behind another may start when that one ended, however late this
    // thread woke up: a copy engine does not wait for the host to be scheduled.
    auto const earliest = std::max(ready, op.issued);
    if (!to_device && model.duplex_d2h < 1 && dev.links[0].busy_until() > earliest) {
      gbps *= model.duplex_d2h;  // host-to-device copies share the link
    }
    slot = dev.links[to_device ? 0 : 1].reserve(op.bytes, gbps, model.gap_us, earliest);
    std::this_thread::sleep_until(slot->start);
  }
  // The bytes move in slices of at most copy_slice_bytes, each checked and moved under its
  // own hold of the mapping table: a long copy does not keep maps and unmaps of other
  // ranges waiting for its whole length (a copy engine does not lock the page tables), and
  // a slice whose pages were unmapped meanwhile faults, as a DMA would.
  vmm_table const& vmm = simulator::get().vmm();
  auto const* const source =
    op.staging ? op.staging.get() : reinterpret_cast<std::byte const*>(op.src);
  for (std::size_t at = 0; at < op.bytes; at += copy_slice_bytes) {
    std::size_t const bytes = std::min(copy_slice_bytes, op.bytes - at);
    auto const hold         = vmm.hold();
    bool const dst_ok =
      op.kind == copy_kind::device_to_host || vmm.accessible(op.dst + at, bytes, dev.ordinal, true);
    bool const src_ok = op.kind == copy_kind::host_to_device ||
                        vmm.accessible(op.src + at, bytes, dev.ordinal, false);
    if (!dst_ok || !src_ok) { return CUDA_ERROR_ILLEGAL_ADDRESS; }
    std::memmove(reinterpret_cast<void*>(op.dst + at), source + at, bytes);
  }
  if (op.kind != copy_kind::device_to_device) {
    count_link_bytes(op.kind == copy_kind::host_to_device, op.bytes);
  }
  if (slot) { std::this_thread::sleep_until(slot->end); }  // no lock held while the link is busy
  ready = slot ? slot->end : link_throttle::clock::now();
  return CUDA_SUCCESS;
}

CUresult execute(memset_op& op, CUctx_st& context)
{
  vmm_table const& vmm = simulator::get().vmm();
  auto const hold      = vmm.hold();
  if (!vmm.accessible(op.dst, op.count * op.width, device_of(context).ordinal, true)) {
    return CUDA_ERROR_ILLEGAL_ADDRESS;
  }
  if (op.width == 1) {
    std::memset(reinterpret_cast<void*>(op.dst), static_cast<int>(op.value & 0xffU), op.count);
  } else {
    std::fill_n(reinterpret_cast<std::uint32_t*>(op.dst), op.count, op.value);
  }
  return CUDA_SUCCESS;
}

}  // namespace cudasim

using cudasim::api;
using cudasim::call_kind;
using cudasim::copy_kind;
using cudasim::copy_op;
using cudasim::entry;

namespace {

[[nodiscard]] std::uintptr_t host(void const* pointer) noexcept
{
  return reinterpret_cast<std::uintptr_t>(pointer);
}

}  // namespace

CUresult CUDAAPI cuMemcpyHtoD(CUdeviceptr dstDevice, void const* srcHost, size_t ByteCount)
{
  return api(entry::memcpy_htod, [&] {
    return cudasim::start_copy(
      nullptr, copy_op{dstDevice, host(srcHost), ByteCount, copy_kind::host_to_device, {}},
      call_kind::synchronous);
  });
}

CUresult CUDAAPI cuMemcpyDtoH(void* dstHost, CUdeviceptr srcDevice, size_t ByteCount)
{
  return api(entry::memcpy_dtoh, [&] {
    return cudasim::start_copy(
      nullptr, copy_op{host(dstHost), srcDevice, ByteCount, copy_kind::device_to_host, {}},
      call_kind::synchronous);
  });
}

CUresult CUDAAPI cuMemcpyDtoD(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount)
{
  return api(entry::memcpy_dtod, [&] {
    return cudasim::start_copy(
      nullptr, copy_op{dstDevice, srcDevice, ByteCount, copy_kind::device_to_device, {}},
      call_kind::asynchronous);
  });
}

CUresult CUDAAPI cuMemcpyHtoDAsync(CUdeviceptr dstDevice, void const* srcHost, size_t ByteCount,
                                   CUstream hStream)
{
  return api(entry::memcpy_htod_async, [&] {
    return cudasim::start_copy(
      hStream, copy_op{dstDevice, host(srcHost), ByteCount, copy_kind::host_to_device, {}},
      call_kind::asynchronous);
  });
}

CUresult CUDAAPI cuMemcpyDtoHAsync(void* dstHost, CUdeviceptr srcDevice, size_t ByteCount,
                                   CUstream hStream)
{
  return api(entry::memcpy_dtoh_async, [&] {
    return cudasim::start_copy(
      hStream, copy_op{host(dstHost), srcDevice, ByteCount, copy_kind::device_to_host, {}},
      call_kind::asynchronous);
  });
}

CUresult CUDAAPI cuMemcpyDtoDAsync(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount,
                                   CUstream hStream)
{
  return api(entry::memcpy_dtod_async, [&] {
    return cudasim::start_copy(
      hStream, copy_op{dstDevice, srcDevice, ByteCount, copy_kind::device_to_device, {}},
      call_kind::asynchronous);
  });
}

CUresult CUDAAPI cuMemsetD8(CUdeviceptr dstDevice, unsigned char uc, size_t N)
{
  return api(entry::memset_d8, [&] { return cudasim::start_memset(nullptr, dstDevice, uc, N, 1); });
}

CUresult CUDAAPI cuMemsetD32(CUdeviceptr dstDevice, unsigned int ui, size_t N)
{
  return api(entry::memset_d32,
             [&] { return cudasim::start_memset(nullptr, dstDevice, ui, N, 4); });
}

CUresult CUDAAPI cuMemsetD8Async(CUdeviceptr dstDevice, unsigned char uc, size_t N,
                                 CUstream hStream)
{
  return api(entry::memset_d8_async,
             [&] { return cudasim::start_memset(hStream, dstDevice, uc, N, 1); });
}

CUresult CUDAAPI cuMemsetD32Async(CUdeviceptr dstDevice, unsigned int ui, size_t N,
                                  CUstream hStream)
{
  return api(entry::memset_d32_async,
             [&] { return cudasim::start_memset(hStream, dstDevice, ui, N, 4); });
}

CUresult CUDAAPI cuStreamWriteValue32(CUstream stream, CUdeviceptr addr, cuuint32_t value,
                                      unsigned int flags)
{
  return api(entry::stream_write_value32, [&] {
    // flags: CUstreamWriteValue_flags. cuda.h on CU_STREAM_WRITE_VALUE_NO_MEMORY_BARRIER:
    // "This flag is not supported in the v2 API" -- and cuStreamWriteValue32 is
    // cuStreamWriteValue32_v2 -- so only CU_STREAM_WRITE_VALUE_DEFAULT is accepted. Which
    // of its two listed errors the real driver gives for it is not known; the simulator
    // says CUDA_ERROR_NOT_SUPPORTED, and any other value is CUDA_ERROR_INVALID_VALUE.
    if (flags == CU_STREAM_WRITE_VALUE_NO_MEMORY_BARRIER) { return CUDA_ERROR_NOT_SUPPORTED; }
    if (flags != CU_STREAM_WRITE_VALUE_DEFAULT) { return CUDA_ERROR_INVALID_VALUE; }
    // One 32-bit word written in stream order: a cuMemsetD32Async of one element, with
    // its checks (4-byte alignment, mapped and writable by the stream's device at the
    // call, else CUDA_ERROR_INVALID_VALUE) and its fault if the word goes away meanwhile.
    return cudasim::start_memset(stream, addr, value, 1, 4);
  });
}
