/**
 * @file copy.cpp
 * @brief Copies (single and batched), memsets and cuStreamWriteValue32: pointer checks at
 *        the call, the device access when the stream runs it, and the synchronization that
 *        host memory implies.
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
 * A copy moves its bytes in slices, each checked and moved under its own shared hold of
 * the mapping table (a memset holds it for its whole length), so a map or unmap waits for
 * at most one slice per copy in flight, and a slice whose range was unmapped meanwhile
 * faults.
 *
 * Synchronization ("API synchronization behavior" in the CUDA docs):
 *  - cuMemcpyHtoDAsync from pageable memory stages the source before returning;
 *  - cuMemcpyDtoHAsync to pageable memory returns once the copy is complete;
 *  - with pinned memory both are fully asynchronous;
 *  - cuMemcpyHtoD/DtoH run on the legacy stream and return once complete;
 *  - cuMemcpyDtoD and the memsets of device memory are asynchronous (legacy stream).
 *
 * cuMemcpyBatchAsync (cuda.h maps it to cuMemcpyBatchAsync_v2, CUDA 13.0's ABI; quoted
 * from its doc comment unless marked assumed):
 *  - "The batch as a whole executes in stream order but copies within a batch are not
 *    guaranteed to execute in any specific order": the batch is one stream operation, and
 *    its copies run in the reverse of the given order, so that code relying on the given
 *    order (a "dependent copy", "undefined behavior") is caught here.
 *  - CUDA_ERROR_INVALID_VALUE, nothing queued: a null array; hStream the legacy stream
 *    ("Must not be legacy NULL stream": 0 or CU_STREAM_LEGACY); numAttrs > count; attrsIdxs
 *    not starting at 0, not strictly increasing, or with its last entry >= count; an
 *    attribute whose srcAccessOrder is not STREAM, DURING_API_CALL or ANY. Assumed: count 0,
 *    numAttrs 0, and flags other than CUmemcpyFlags' two values are invalid too.
 *  - Each copy's kind follows from its pointers (unified addressing: a pointer into a
 *    reservation is device memory), and its ranges get the checks of a single copy at the
 *    call. Stricter (assumed): a host-to-host copy is CUDA_ERROR_INVALID_VALUE (cuda.h only
 *    says "pointer-to-pointer copies"; swapalloc never makes one). Assumed: a copy of 0
 *    bytes is a no-op, its pointers unchecked, as a single copy of 0 bytes. One failing
 *    copy refuses the whole batch: nothing is queued.
 *  - Source access order: DURING_API_CALL ("all accesses must be complete before the API
 *    call returns"): the source is read into a staging buffer at the call, whatever memory
 *    it is; STREAM ("accessed in stream order") and ANY ("can happen even after the API call
 *    returns"): read when the stream runs the copy, pinned or pageable. The destination is
 *    always written in stream order (CUmemcpySrcAccessOrder).
 *  - A copy into pageable host memory makes the call return once the batch is complete,
 *    the rule of a single cuMemcpyDtoHAsync (assumed: cuda.h's \note_memcpy says no more).
 *  - When it runs, each copy is checked and faults (sticky CUDA_ERROR_ILLEGAL_ADDRESS) as a
 *    single copy does, and moves its bytes over the link of its direction.
 */
#include "profile.hpp"
#include "state.hpp"

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <thread>
#include <type_traits>
#include <vector>

namespace cudasim {
namespace {

enum class call_kind : bool { asynchronous, synchronous };

/// The most bytes a copy moves under one hold of the mapping table (see execute): what a
/// map, unmap or access change waits for while copies run. With 1 MiB, bench_sim's
/// BM_VmmCall/<call>/2097152/queued (device-to-host copies queued) waited 164-582 us on
/// the 2-core CI machine, with 64 KiB 33-53 us (README, "Link").
constexpr std::size_t copy_slice_bytes = std::size_t{64} << 10;

[[nodiscard]] bool wraps(std::uintptr_t ptr, std::size_t bytes) noexcept
{
  return ptr + bytes < ptr;
}

/// With the mapping table held: a device range the driver accepts at the call, in one
/// reservation, mapped now, and readable (with `write`, writable) by `device` now.
[[nodiscard]] bool resolvable_held(vmm_table const& vmm, std::uintptr_t ptr, std::size_t bytes,
                                   int device, bool write)
{
  return !wraps(ptr, bytes) && vmm.mapped(ptr, bytes) && vmm.accessible(ptr, bytes, device, write);
}

/// With the mapping table held: a host range, not null, and not device memory.
[[nodiscard]] bool host_range_held(vmm_table const& vmm, std::uintptr_t ptr, std::size_t bytes)
{
  return ptr != 0 && !wraps(ptr, bytes) && !vmm.overlaps_reservation(ptr, bytes);
}

/// resolvable_held, taking the hold.
[[nodiscard]] bool resolvable(std::uintptr_t ptr, std::size_t bytes, int device, bool write)
{
  vmm_table const& vmm = simulator::get().vmm();
  auto const hold      = vmm.hold();
  return resolvable_held(vmm, ptr, bytes, device, write);
}

/// host_range_held, taking the hold.
[[nodiscard]] bool host_range(std::uintptr_t ptr, std::size_t bytes)
{
  vmm_table const& vmm = simulator::get().vmm();
  auto const hold      = vmm.hold();
  return host_range_held(vmm, ptr, bytes);
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

// ---- cuMemcpyBatchAsync (the file comment has its rules) -------------------------------

/// The arguments of one cuMemcpyBatchAsync call.
struct batch_call {
  CUdeviceptr const* dsts;
  CUdeviceptr const* srcs;
  std::size_t const* sizes;
  std::size_t count;
  CUmemcpyAttributes const* attrs;
  std::size_t const* attrs_idxs;
  std::size_t num_attrs;
  CUstream stream;
};

using access_order = std::underlying_type_t<CUmemcpySrcAccessOrder>;

[[nodiscard]] constexpr access_order order_value(CUmemcpySrcAccessOrder order) noexcept
{
  return static_cast<access_order>(order);
}

/// cuda.h: "Each memcpy operation in the batch must have a valid CUmemcpyAttributes
/// corresponding to it including the appropriate srcAccessOrder setting, otherwise the API
/// will return CUDA_ERROR_INVALID_VALUE": STREAM, DURING_API_CALL or ANY (0 is "Default
/// invalid"). Assumed: flags other than CU_MEMCPY_FLAG_DEFAULT and
/// CU_MEMCPY_FLAG_PREFER_OVERLAP_WITH_COMPUTE (a hint, ignored here) are invalid. The
/// location hints are not checked: cuda.h ignores them but for managed memory and
/// system-allocated pageable memory on devices that access it, neither of which is modelled.
[[nodiscard]] bool attribute_valid(CUmemcpyAttributes const& attr) noexcept
{
  access_order const order = enum_value(attr.srcAccessOrder);
  bool const known_order   = order == order_value(CU_MEMCPY_SRC_ACCESS_ORDER_STREAM) ||
                           order == order_value(CU_MEMCPY_SRC_ACCESS_ORDER_DURING_API_CALL) ||
                           order == order_value(CU_MEMCPY_SRC_ACCESS_ORDER_ANY);
  constexpr auto known_flags = static_cast<unsigned>(CU_MEMCPY_FLAG_PREFER_OVERLAP_WITH_COMPUTE);
  return known_order && (attr.flags & ~known_flags) == 0;
}

/// The checks of a batch's arguments that need no state; false: CUDA_ERROR_INVALID_VALUE.
[[nodiscard]] bool batch_arguments_valid(batch_call const& call) noexcept
{
  // hStream: "Must not be legacy NULL stream" -- 0 and CU_STREAM_LEGACY name it alike.
  if (call.stream == nullptr || call.stream == CU_STREAM_LEGACY) { return false; }
  if (call.dsts == nullptr || call.srcs == nullptr || call.sizes == nullptr ||
      call.attrs == nullptr || call.attrs_idxs == nullptr) {
    return false;
  }
  // "numAttrs must be lesser than or equal to count". Assumed: an empty batch and a batch
  // without attributes are invalid ("Every copy in the batch has to be associated with a
  // set of attributes"; "the first entry in attrsIdxs must always be 0" needs one).
  if (call.count == 0 || call.num_attrs == 0 || call.num_attrs > call.count) { return false; }
  // "the first entry in attrsIdxs must always be 0. Also, each entry must be greater than
  // the previous entry and the last entry should be less than count".
  std::span<std::size_t const> const idxs(call.attrs_idxs, call.num_attrs);
  if (idxs.front() != 0 || idxs.back() >= call.count ||
      std::adjacent_find(idxs.begin(), idxs.end(), std::greater_equal<>{}) != idxs.end()) {
    return false;
  }
  std::span<CUmemcpyAttributes const> const attrs(call.attrs, call.num_attrs);
  return std::all_of(attrs.begin(), attrs.end(), attribute_valid);
}

/// With the mapping table held: one copy of a batch, its kind told by its pointers (unified
/// addressing: a pointer into a reservation is device memory), its ranges checked as a
/// single copy's are at the call. nullopt when a range fails, or for a host-to-host copy
/// (stricter, assumed: see the file comment).
[[nodiscard]] std::optional<copy_op> batch_copy(vmm_table const& vmm, std::uintptr_t dst,
                                                std::uintptr_t src, std::size_t bytes, int device)
{
  if (wraps(dst, bytes) || wraps(src, bytes)) { return std::nullopt; }
  bool const to_device   = vmm.overlaps_reservation(dst, bytes);
  bool const from_device = vmm.overlaps_reservation(src, bytes);
  bool const dst_ok =
    to_device ? resolvable_held(vmm, dst, bytes, device, true) : host_range_held(vmm, dst, bytes);
  bool const src_ok = from_device ? resolvable_held(vmm, src, bytes, device, false)
                                  : host_range_held(vmm, src, bytes);
  if ((!to_device && !from_device) || !dst_ok || !src_ok) { return std::nullopt; }
  copy_kind const kind = !to_device    ? copy_kind::device_to_host
                         : from_device ? copy_kind::device_to_device
                                       : copy_kind::host_to_device;
  return copy_op{dst, src, bytes, kind, {}};
}

/// Checks every copy of `call` under one hold of the mapping table and makes its
/// operations (a copy of 0 bytes makes none); `read_now` gets the positions in `out` of
/// the copies whose source is read during the call. False when any copy fails.
[[nodiscard]] bool plan_batch(batch_call const& call, int device, std::vector<copy_op>& out,
                              std::vector<std::size_t>& read_now)
{
  vmm_table const& vmm = simulator::get().vmm();
  auto const hold      = vmm.hold();
  std::size_t attr     = 0;  // "attrs[k] will be applied to copies starting from attrsIdxs[k]"
  for (std::size_t i = 0; i < call.count; ++i) {
    while (attr + 1 < call.num_attrs && call.attrs_idxs[attr + 1] <= i) {
      ++attr;
    }
    if (call.sizes[i] == 0) { continue; }  // assumed: a no-op, as a single copy of 0 bytes
    std::optional<copy_op> op = batch_copy(vmm, call.dsts[i], call.srcs[i], call.sizes[i], device);
    if (!op) { return false; }
    if (enum_value(call.attrs[attr].srcAccessOrder) ==
        order_value(CU_MEMCPY_SRC_ACCESS_ORDER_DURING_API_CALL)) {
      read_now.push_back(out.size());
    }
    out.push_back(std::move(*op));
  }
  return true;
}

/// Reads the source of `op` into its staging buffer now. A device source is read in slices,
/// each under a hold of the mapping table and checked again (it passed the check at the
/// call, but an unmap may have come since): false when it is no longer readable.
[[nodiscard]] bool read_source_now(copy_op& op, int device)
{
  op.staging               = std::make_unique_for_overwrite<std::byte[]>(op.bytes);
  auto const* const source = reinterpret_cast<std::byte const*>(op.src);
  if (op.kind == copy_kind::host_to_device) {
    std::memcpy(op.staging.get(), source, op.bytes);
    return true;
  }
  vmm_table const& vmm = simulator::get().vmm();
  for (std::size_t at = 0; at < op.bytes; at += copy_slice_bytes) {
    std::size_t const bytes = std::min(copy_slice_bytes, op.bytes - at);
    auto const hold         = vmm.hold();
    if (!vmm.accessible(op.src + at, bytes, device, false)) { return false; }
    std::memcpy(op.staging.get() + at, source + at, bytes);
  }
  return true;
}

/// Checks and queues a batch whose arguments passed batch_arguments_valid, as one stream
/// operation; waits for it when a copy writes pageable host memory.
[[nodiscard]] CUresult start_batch(batch_call const& call)
{
  CUctx_st* current = nullptr;
  if (CUresult const bad = use_current_context(current); bad != CUDA_SUCCESS) { return bad; }
  std::shared_ptr<CUstream_st> stream;
  if (CUresult const bad = resolve_stream(call.stream, stream); bad != CUDA_SUCCESS) { return bad; }
  int const ordinal = device_of(stream->context()).ordinal;
  batch_op batch;
  std::vector<std::size_t> read_now;
  if (!plan_batch(call, ordinal, batch.copies, read_now)) { return CUDA_ERROR_INVALID_VALUE; }
  for (std::size_t const at : read_now) {
    if (!read_source_now(batch.copies[at], ordinal)) { return CUDA_ERROR_INVALID_VALUE; }
  }
  if (batch.copies.empty()) { return CUDA_SUCCESS; }  // every copy was of 0 bytes
  host_registry const& host = simulator::get().host();
  bool const wait = std::any_of(batch.copies.begin(), batch.copies.end(), [&](copy_op const& op) {
    return op.kind == copy_kind::device_to_host && !host.pinned(op.dst, op.bytes);
  });
  std::uint64_t const sequence = submit(*stream, std::move(batch));
  if (!wait) { return CUDA_SUCCESS; }  // to pageable memory: returns once complete
  stream->wait(sequence);
  return stream->context().sticky_error();
}

}  // namespace

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
    bool const src_ok = op.kind == copy_kind::host_to_device || op.staging ||
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

CUresult execute(batch_op& op, CUctx_st& context, link_throttle::clock::time_point& ready)
{
  // cuda.h: "copies within a batch are not guaranteed to execute in any specific order".
  // They run in the reverse of the given order, so code that relies on the given order is
  // caught. Each copy is ready when the batch is: copies of the two directions overlap on
  // their links (two copy engines), copies of one direction take consecutive slots.
  link_throttle::clock::time_point const start = ready;
  link_throttle::clock::time_point end         = ready;
  for (auto copy = op.copies.rbegin(); copy != op.copies.rend(); ++copy) {
    link_throttle::clock::time_point copy_ready = start;
    if (CUresult const fault = execute(*copy, context, copy_ready); fault != CUDA_SUCCESS) {
      return fault;
    }
    end = std::max(end, copy_ready);
  }
  ready = end;
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

CUresult CUDAAPI cuMemcpyBatchAsync(CUdeviceptr* dsts, CUdeviceptr* srcs, size_t* sizes,
                                    size_t count, CUmemcpyAttributes* attrs, size_t* attrsIdxs,
                                    size_t numAttrs, CUstream hStream)
{
  return api(entry::memcpy_batch_async, [&] {
    cudasim::batch_call const call{dsts, srcs, sizes, count, attrs, attrsIdxs, numAttrs, hStream};
    bool const valid = cudasim::batch_arguments_valid(call);
    // Its cost grows with its copies (profile.hpp); a refused call costs the fixed part.
    cudasim::charge(entry::memcpy_batch_async, 0, valid ? count : 0);
    if (!valid) { return CUDA_ERROR_INVALID_VALUE; }
    return cudasim::start_batch(call);
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
