/**
 * @file driver.hpp
 * @brief The one seam between swapalloc and the CUDA driver.
 *
 * swapalloc never links libcuda or libcudart. Every driver entry point it uses is
 * resolved at run time into a `driver_table`, from the library named by the
 * environment variable `SWAPALLOC_CUDA_DRIVER` when it is set and not empty, else from
 * `libcuda.so.1`. That is what lets one binary run on a real GPU and on the host-memory
 * simulator `libcudasim.so` (tools/cudasim).
 *
 * Versioned ABIs: `cuda.h` maps several names to versioned symbols (`cuMemGetInfo` is
 * `cuMemGetInfo_v2`, `cuStreamDestroy` is `cuStreamDestroy_v2`, ...). The bare symbols
 * still exported by libcuda are the *old* ABIs, so the table resolves the versioned
 * symbol whenever `cuda.h` defines one; tests/sim/sim_driver_test.cpp checks every name
 * against `cuda.h`'s own mapping.
 *
 * Errors: a library that cannot be opened, a missing symbol, or a failing `cuInit`
 * raise `driver_unavailable`; every failing call made through a checked wrapper raises
 * `cuda_error`, whose message names the call, the CUresult name and description, and
 * the arguments that matter.
 *
 * Thread safety: a `driver` is immutable after construction; all members are safe to
 * call from any thread. The driver's own calls are as thread-safe as CUDA's.
 */
#pragma once

#include <swapalloc/config.hpp>
#include <swapalloc/errors.hpp>

#include <cuda.h>
#include <dlfcn.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace swapalloc {

/// Every driver entry point swapalloc uses, resolved at run time.
///
/// Field names are the `cuda.h` names, so a macro-mapped name (cuMemGetInfo) becomes
/// its versioned field (cuMemGetInfo_v2) consistently at declaration and use; the
/// prototypes are `cuda.h`'s own, so the types are checked by the compiler.
struct driver_table {
  // Initialization, devices, contexts.
  decltype(&::cuInit) cuInit{};
  decltype(&::cuDriverGetVersion) cuDriverGetVersion{};
  decltype(&::cuGetErrorName) cuGetErrorName{};
  decltype(&::cuGetErrorString) cuGetErrorString{};
  decltype(&::cuDeviceGetCount) cuDeviceGetCount{};
  decltype(&::cuDeviceGet) cuDeviceGet{};
  decltype(&::cuDeviceGetName) cuDeviceGetName{};
  decltype(&::cuDeviceGetAttribute) cuDeviceGetAttribute{};
  decltype(&::cuDeviceTotalMem) cuDeviceTotalMem{};
  decltype(&::cuDevicePrimaryCtxRetain) cuDevicePrimaryCtxRetain{};
  decltype(&::cuDevicePrimaryCtxRelease) cuDevicePrimaryCtxRelease{};
  decltype(&::cuDevicePrimaryCtxReset) cuDevicePrimaryCtxReset{};
  decltype(&::cuCtxGetCurrent) cuCtxGetCurrent{};
  decltype(&::cuCtxSetCurrent) cuCtxSetCurrent{};
  decltype(&::cuCtxGetDevice) cuCtxGetDevice{};
  decltype(&::cuCtxSynchronize) cuCtxSynchronize{};
  decltype(&::cuMemGetInfo) cuMemGetInfo{};
  // Virtual memory management.
  decltype(&::cuMemGetAllocationGranularity) cuMemGetAllocationGranularity{};
  decltype(&::cuMemAddressReserve) cuMemAddressReserve{};
  decltype(&::cuMemAddressFree) cuMemAddressFree{};
  decltype(&::cuMemCreate) cuMemCreate{};
  decltype(&::cuMemRelease) cuMemRelease{};
  decltype(&::cuMemMap) cuMemMap{};
  decltype(&::cuMemUnmap) cuMemUnmap{};
  decltype(&::cuMemSetAccess) cuMemSetAccess{};
  decltype(&::cuMemGetAccess) cuMemGetAccess{};
  decltype(&::cuMemRetainAllocationHandle) cuMemRetainAllocationHandle{};
  // Pinned host memory.
  decltype(&::cuMemHostAlloc) cuMemHostAlloc{};
  decltype(&::cuMemAllocHost) cuMemAllocHost{};
  decltype(&::cuMemFreeHost) cuMemFreeHost{};
  decltype(&::cuMemHostRegister) cuMemHostRegister{};
  decltype(&::cuMemHostUnregister) cuMemHostUnregister{};
  // Copies and memsets.
  decltype(&::cuMemcpyHtoD) cuMemcpyHtoD{};
  decltype(&::cuMemcpyDtoH) cuMemcpyDtoH{};
  decltype(&::cuMemcpyDtoD) cuMemcpyDtoD{};
  decltype(&::cuMemcpyHtoDAsync) cuMemcpyHtoDAsync{};
  decltype(&::cuMemcpyDtoHAsync) cuMemcpyDtoHAsync{};
  decltype(&::cuMemcpyDtoDAsync) cuMemcpyDtoDAsync{};
  decltype(&::cuMemsetD8) cuMemsetD8{};
  decltype(&::cuMemsetD32) cuMemsetD32{};
  decltype(&::cuMemsetD8Async) cuMemsetD8Async{};
  decltype(&::cuMemsetD32Async) cuMemsetD32Async{};
  // Streams, events, host functions.
  decltype(&::cuStreamCreate) cuStreamCreate{};
  decltype(&::cuStreamDestroy) cuStreamDestroy{};
  decltype(&::cuStreamSynchronize) cuStreamSynchronize{};
  decltype(&::cuStreamQuery) cuStreamQuery{};
  decltype(&::cuStreamWaitEvent) cuStreamWaitEvent{};
  decltype(&::cuEventCreate) cuEventCreate{};
  decltype(&::cuEventDestroy) cuEventDestroy{};
  decltype(&::cuEventRecord) cuEventRecord{};
  decltype(&::cuEventQuery) cuEventQuery{};
  decltype(&::cuEventSynchronize) cuEventSynchronize{};
  decltype(&::cuEventElapsedTime) cuEventElapsedTime{};
  decltype(&::cuLaunchHostFunc) cuLaunchHostFunc{};
  // Optional: null where the driver lacks it (driver::has_memcpy_batch).
  decltype(&::cuMemcpyBatchAsync) cuMemcpyBatchAsync{};
};

/**
 * @brief A loaded CUDA driver: the resolved table plus checked wrappers.
 *
 * Construction opens the library, resolves every entry point of `driver_table` and
 * calls `cuInit(0)`. The wrappers below throw `cuda_error` on failure; code that must
 * inspect a non-error status (cuStreamQuery's CUDA_ERROR_NOT_READY) calls `table()`.
 *
 * A `driver` is move-only; it owns one reference on the dlopen handle.
 */
class driver {
 public:
  /// The variable that names the driver library to load instead of libcuda.so.1.
  static constexpr char const* path_variable = driver_variable;
  /// The library loaded when `SWAPALLOC_CUDA_DRIVER` is unset or empty.
  static constexpr char const* default_library = default_driver_library;

  /**
   * @brief Loads the driver named by SWAPALLOC_CUDA_DRIVER, else libcuda.so.1.
   * @throws driver_unavailable naming what was tried and how to point at the simulator.
   */
  driver() : driver(driver_library_from_environment()) {}

  /**
   * @brief Loads the driver from `library` (a path or a soname for dlopen).
   * @throws driver_unavailable if it cannot be opened, lacks a symbol, or cuInit fails.
   */
  explicit driver(std::string library) : library_(std::move(library))
  {
    handle_ = ::dlopen(library_.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle_ == nullptr) {
      char const* reason = ::dlerror();
      throw driver_unavailable(
        "swapalloc: no CUDA driver could be loaded: dlopen(\"" + library_ +
        "\") failed: " + (reason != nullptr ? reason : "unknown error") +
        ". Install the NVIDIA driver (it provides libcuda.so.1), or set " + path_variable +
        " to the path of a driver library, such as the simulator build/lib/libcudasim.so.");
    }
    try {
      resolve_all();
      CUresult const result = table_.cuInit(0);
      if (result != CUDA_SUCCESS) {
        throw driver_unavailable(
          "swapalloc: cuInit(0) failed in \"" + library_ + "\": " + describe(result) +
          ". Is an NVIDIA GPU present and its kernel module loaded? Set " + path_variable +
          " to build/lib/libcudasim.so to use the simulator.");
      }
    } catch (...) {
      ::dlclose(handle_);
      throw;
    }
  }

  driver(driver const&)            = delete;
  driver& operator=(driver const&) = delete;
  driver(driver&& other) noexcept
    : library_(std::move(other.library_)),
      handle_(std::exchange(other.handle_, nullptr)),
      table_(other.table_)
  {
  }
  driver& operator=(driver&&) = delete;
  ~driver()
  {
    if (handle_ != nullptr) { ::dlclose(handle_); }
  }

  /// The resolved entry points, for calls whose non-success results are not errors.
  [[nodiscard]] driver_table const& table() const noexcept { return table_; }
  /// The library this driver was loaded from, as given to dlopen.
  [[nodiscard]] std::string const& library() const noexcept { return library_; }

  /// Looks up an extra symbol in the loaded library (e.g. the simulator's control API).
  /// Returns nullptr when absent; never throws.
  [[nodiscard]] void* find_symbol(char const* name) const noexcept
  {
    return ::dlsym(handle_, name);
  }

  /// "CUDA_ERROR_INVALID_VALUE (invalid argument)", or "CUresult 999" when unnamed.
  [[nodiscard]] std::string describe(CUresult result) const
  {
    char const* name        = nullptr;
    char const* description = nullptr;
    if (table_.cuGetErrorName == nullptr || table_.cuGetErrorName(result, &name) != CUDA_SUCCESS ||
        name == nullptr) {
      return "CUresult " + std::to_string(static_cast<int>(result));
    }
    std::string text = name;
    if (table_.cuGetErrorString != nullptr &&
        table_.cuGetErrorString(result, &description) == CUDA_SUCCESS && description != nullptr) {
      text += " (";
      text += description;
      text += ")";
    }
    return text;
  }

  /**
   * @brief Throws `cuda_error` if `result` is not CUDA_SUCCESS.
   *
   * `arguments` is called only on failure, so building the message costs nothing on
   * success: "cuMemMap(ptr=0x7f.., size=2097152, handle=3) failed: CUDA_ERROR_...".
   */
  template <class ArgumentText>
  void check(CUresult result, std::string_view call, ArgumentText&& arguments) const
  {
    if (result == CUDA_SUCCESS) [[likely]] { return; }
    std::string message(call);
    message += "(";
    message += std::forward<ArgumentText>(arguments)();
    message += ") failed: ";
    message += describe(result);
    throw cuda_error(result, std::string(call), message);
  }

  // ---- Checked wrappers. Each throws cuda_error on failure. --------------------------

  /// Number of devices the driver sees.
  [[nodiscard]] int device_count() const
  {
    int count = 0;
    check(table_.cuDeviceGetCount(&count), "cuDeviceGetCount", [] { return std::string(); });
    return count;
  }

  /// The device handle of ordinal `ordinal`.
  [[nodiscard]] CUdevice device(int ordinal) const
  {
    CUdevice device{};
    check(table_.cuDeviceGet(&device, ordinal), "cuDeviceGet",
          [&] { return "ordinal=" + std::to_string(ordinal); });
    return device;
  }

  /// The device's marketing name.
  [[nodiscard]] std::string device_name(CUdevice device) const
  {
    char name[256] = {};
    check(table_.cuDeviceGetName(name, sizeof(name), device), "cuDeviceGetName",
          [&] { return "device=" + std::to_string(device); });
    return name;
  }

  /// A device attribute.
  [[nodiscard]] int device_attribute(CUdevice device, CUdevice_attribute attribute) const
  {
    int value = 0;
    check(table_.cuDeviceGetAttribute(&value, attribute, device), "cuDeviceGetAttribute", [&] {
      return "attribute=" + std::to_string(static_cast<int>(attribute)) +
             ", device=" + std::to_string(device);
    });
    return value;
  }

  /// Bytes of memory on `device`.
  [[nodiscard]] std::size_t device_total_memory(CUdevice device) const
  {
    std::size_t bytes = 0;
    check(table_.cuDeviceTotalMem(&bytes, device), "cuDeviceTotalMem",
          [&] { return "device=" + std::to_string(device); });
    return bytes;
  }

  /// Retains the device's primary context; pair with `release_primary_context`.
  [[nodiscard]] CUcontext retain_primary_context(CUdevice device) const
  {
    CUcontext context{};
    check(table_.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain",
          [&] { return "device=" + std::to_string(device); });
    return context;
  }

  void release_primary_context(CUdevice device) const
  {
    check(table_.cuDevicePrimaryCtxRelease(device), "cuDevicePrimaryCtxRelease",
          [&] { return "device=" + std::to_string(device); });
  }

  /// The calling thread's current context, or nullptr if it has none.
  [[nodiscard]] CUcontext current_context() const
  {
    CUcontext context{};
    check(table_.cuCtxGetCurrent(&context), "cuCtxGetCurrent", [] { return std::string(); });
    return context;
  }

  void set_current_context(CUcontext context) const
  {
    check(table_.cuCtxSetCurrent(context), "cuCtxSetCurrent",
          [&] { return "context=" + hex(reinterpret_cast<std::uintptr_t>(context)); });
  }

  void synchronize_context() const
  {
    check(table_.cuCtxSynchronize(), "cuCtxSynchronize", [] { return std::string(); });
  }

  /// Free and total device memory of the current context's device.
  struct memory_info {
    std::size_t free;
    std::size_t total;
  };
  [[nodiscard]] memory_info mem_get_info() const
  {
    memory_info info{};
    check(table_.cuMemGetInfo(&info.free, &info.total), "cuMemGetInfo",
          [] { return std::string(); });
    return info;
  }

  /// The allocation properties swapalloc uses: pinned device memory on `device`.
  [[nodiscard]] static CUmemAllocationProp device_allocation(CUdevice device) noexcept
  {
    CUmemAllocationProp prop{};
    prop.type          = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id   = device;
    return prop;
  }

  /// The minimum (or recommended) granularity of VMM allocations on `device`.
  [[nodiscard]] std::size_t allocation_granularity(
    CUdevice device,
    CUmemAllocationGranularity_flags option = CU_MEM_ALLOC_GRANULARITY_MINIMUM) const
  {
    std::size_t granularity = 0;
    auto const prop         = device_allocation(device);
    check(table_.cuMemGetAllocationGranularity(&granularity, &prop, option),
          "cuMemGetAllocationGranularity", [&] { return "device=" + std::to_string(device); });
    return granularity;
  }

  /// Reserves `size` bytes of virtual address space aligned to `alignment` (0: default).
  [[nodiscard]] CUdeviceptr address_reserve(std::size_t size, std::size_t alignment = 0) const
  {
    CUdeviceptr address{};
    check(table_.cuMemAddressReserve(&address, size, alignment, 0, 0), "cuMemAddressReserve", [&] {
      return "size=" + std::to_string(size) + ", alignment=" + std::to_string(alignment);
    });
    return address;
  }

  void address_free(CUdeviceptr address, std::size_t size) const
  {
    check(table_.cuMemAddressFree(address, size), "cuMemAddressFree",
          [&] { return "ptr=" + hex(address) + ", size=" + std::to_string(size); });
  }

  /// Creates `size` bytes of physical memory on `device`.
  [[nodiscard]] CUmemGenericAllocationHandle mem_create(std::size_t size, CUdevice device) const
  {
    CUmemGenericAllocationHandle handle{};
    auto const prop = device_allocation(device);
    check(table_.cuMemCreate(&handle, size, &prop, 0), "cuMemCreate",
          [&] { return "size=" + std::to_string(size) + ", device=" + std::to_string(device); });
    return handle;
  }

  /// A new reference to the memory mapped at `address` (cuMemRetainAllocationHandle): the
  /// memory lives until it is released (mem_release), even once unmapped.
  [[nodiscard]] CUmemGenericAllocationHandle mem_retain(CUdeviceptr address) const
  {
    CUmemGenericAllocationHandle handle = 0;
    check(table_.cuMemRetainAllocationHandle(&handle, reinterpret_cast<void*>(address)),
          "cuMemRetainAllocationHandle", [&] { return "addr=" + hex(address); });
    return handle;
  }
  void mem_release(CUmemGenericAllocationHandle handle) const
  {
    check(table_.cuMemRelease(handle), "cuMemRelease", [&] { return "handle=" + hex(handle); });
  }

  void mem_map(CUdeviceptr address, std::size_t size, CUmemGenericAllocationHandle handle) const
  {
    check(table_.cuMemMap(address, size, 0, handle, 0), "cuMemMap", [&] {
      return "ptr=" + hex(address) + ", size=" + std::to_string(size) + ", handle=" + hex(handle);
    });
  }

  void mem_unmap(CUdeviceptr address, std::size_t size) const
  {
    check(table_.cuMemUnmap(address, size), "cuMemUnmap",
          [&] { return "ptr=" + hex(address) + ", size=" + std::to_string(size); });
  }

  /// Sets `device`'s access to the mapped range [address, address + size): read-write by
  /// default, CU_MEM_ACCESS_FLAGS_PROT_READ for read-only, _PROT_NONE to revoke access.
  void mem_set_access(CUdeviceptr address, std::size_t size, CUdevice device,
                      CUmemAccess_flags flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE) const
  {
    CUmemAccessDesc access{};
    access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    access.location.id   = device;
    access.flags         = flags;
    check(table_.cuMemSetAccess(address, size, &access, 1), "cuMemSetAccess", [&] {
      return "ptr=" + hex(address) + ", size=" + std::to_string(size) +
             ", device=" + std::to_string(device) +
             ", flags=" + std::to_string(static_cast<int>(flags));
    });
  }

  /// Allocates `size` bytes of page-locked host memory (cuMemHostAlloc flags).
  [[nodiscard]] void* host_alloc(std::size_t size, unsigned int flags = 0) const
  {
    void* pointer = nullptr;
    check(table_.cuMemHostAlloc(&pointer, size, flags), "cuMemHostAlloc",
          [&] { return "size=" + std::to_string(size) + ", flags=" + std::to_string(flags); });
    return pointer;
  }

  void host_free(void* pointer) const
  {
    check(table_.cuMemFreeHost(pointer), "cuMemFreeHost",
          [&] { return "ptr=" + hex(reinterpret_cast<std::uintptr_t>(pointer)); });
  }

  void memcpy_htod(CUdeviceptr dst, void const* src, std::size_t bytes) const
  {
    check(table_.cuMemcpyHtoD(dst, src, bytes), "cuMemcpyHtoD",
          [&] { return copy_arguments(dst, reinterpret_cast<std::uintptr_t>(src), bytes); });
  }

  void memcpy_dtoh(void* dst, CUdeviceptr src, std::size_t bytes) const
  {
    check(table_.cuMemcpyDtoH(dst, src, bytes), "cuMemcpyDtoH",
          [&] { return copy_arguments(reinterpret_cast<std::uintptr_t>(dst), src, bytes); });
  }

  void memcpy_dtod(CUdeviceptr dst, CUdeviceptr src, std::size_t bytes) const
  {
    check(table_.cuMemcpyDtoD(dst, src, bytes), "cuMemcpyDtoD",
          [&] { return copy_arguments(dst, src, bytes); });
  }

  void memcpy_htod_async(CUdeviceptr dst, void const* src, std::size_t bytes, CUstream stream) const
  {
    check(table_.cuMemcpyHtoDAsync(dst, src, bytes, stream), "cuMemcpyHtoDAsync", [&] {
      return copy_arguments(dst, reinterpret_cast<std::uintptr_t>(src), bytes) +
             stream_argument(stream);
    });
  }

  void memcpy_dtoh_async(void* dst, CUdeviceptr src, std::size_t bytes, CUstream stream) const
  {
    check(table_.cuMemcpyDtoHAsync(dst, src, bytes, stream), "cuMemcpyDtoHAsync", [&] {
      return copy_arguments(reinterpret_cast<std::uintptr_t>(dst), src, bytes) +
             stream_argument(stream);
    });
  }

  /// True when the driver has cuMemcpyBatchAsync (CUDA 13.0's cuMemcpyBatchAsync_v2).
  [[nodiscard]] bool has_memcpy_batch() const noexcept
  {
    return table_.cuMemcpyBatchAsync != nullptr;
  }

  /**
   * @brief Queues `count` copies, `sizes[i]` bytes from `srcs[i]` to `dsts[i]` (device or
   *        pinned host addresses: unified addressing tells them apart), on `stream` with one
   *        cuMemcpyBatchAsync. The batch runs after the stream's earlier work and before its
   *        later work, its copies in no particular order among themselves (the CUDA Driver
   *        API's cuMemcpyBatchAsync): none may read what another writes. Sources are read
   *        in stream order (CU_MEMCPY_SRC_ACCESS_ORDER_STREAM).
   * @pre has_memcpy_batch(), count >= 1, and `stream` is not the legacy NULL stream.
   * @throws cuda_error naming the batch's size and first copy.
   * Thread safety: as the driver call.
   */
  void memcpy_batch_async(CUdeviceptr* dsts, CUdeviceptr* srcs, std::size_t* sizes,
                          std::size_t count, CUstream stream) const
  {
    CUmemcpyAttributes attributes{};
    attributes.srcAccessOrder = CU_MEMCPY_SRC_ACCESS_ORDER_STREAM;
    std::size_t first_copy    = 0;  // the one attribute applies from copy 0 on
    check(table_.cuMemcpyBatchAsync(dsts, srcs, sizes, count, &attributes, &first_copy, 1, stream),
          "cuMemcpyBatchAsync", [&] {
            return "count=" + std::to_string(count) + ", first copy " +
                   copy_arguments(dsts[0], srcs[0], sizes[0]) + stream_argument(stream);
          });
  }

  void memcpy_dtod_async(CUdeviceptr dst, CUdeviceptr src, std::size_t bytes, CUstream stream) const
  {
    check(table_.cuMemcpyDtoDAsync(dst, src, bytes, stream), "cuMemcpyDtoDAsync",
          [&] { return copy_arguments(dst, src, bytes) + stream_argument(stream); });
  }

  void memset_d8(CUdeviceptr dst, unsigned char value, std::size_t count) const
  {
    check(table_.cuMemsetD8(dst, value, count), "cuMemsetD8",
          [&] { return memset_arguments(dst, value, count); });
  }

  void memset_d32(CUdeviceptr dst, unsigned int value, std::size_t count) const
  {
    check(table_.cuMemsetD32(dst, value, count), "cuMemsetD32",
          [&] { return memset_arguments(dst, value, count); });
  }

  void memset_d8_async(CUdeviceptr dst, unsigned char value, std::size_t count,
                       CUstream stream) const
  {
    check(table_.cuMemsetD8Async(dst, value, count, stream), "cuMemsetD8Async",
          [&] { return memset_arguments(dst, value, count) + stream_argument(stream); });
  }

  void memset_d32_async(CUdeviceptr dst, unsigned int value, std::size_t count,
                        CUstream stream) const
  {
    check(table_.cuMemsetD32Async(dst, value, count, stream), "cuMemsetD32Async",
          [&] { return memset_arguments(dst, value, count) + stream_argument(stream); });
  }

  /// Creates a stream (CU_STREAM_DEFAULT or CU_STREAM_NON_BLOCKING).
  [[nodiscard]] CUstream stream_create(unsigned int flags = CU_STREAM_NON_BLOCKING) const
  {
    CUstream stream{};
    check(table_.cuStreamCreate(&stream, flags), "cuStreamCreate",
          [&] { return "flags=" + std::to_string(flags); });
    return stream;
  }

  void stream_destroy(CUstream stream) const
  {
    check(table_.cuStreamDestroy(stream), "cuStreamDestroy",
          [&] { return stream_argument(stream).substr(2); });
  }

  void stream_synchronize(CUstream stream) const
  {
    check(table_.cuStreamSynchronize(stream), "cuStreamSynchronize",
          [&] { return stream_argument(stream).substr(2); });
  }

  /// Makes future work on `stream` wait for the last record of `event`.
  void stream_wait_event(CUstream stream, CUevent event) const
  {
    check(table_.cuStreamWaitEvent(stream, event, 0), "cuStreamWaitEvent", [&] {
      return stream_argument(stream).substr(2) +
             ", event=" + hex(reinterpret_cast<std::uintptr_t>(event));
    });
  }

  /// Creates an event (CU_EVENT_DISABLE_TIMING by default: cheaper, as PyTorch does).
  [[nodiscard]] CUevent event_create(unsigned int flags = CU_EVENT_DISABLE_TIMING) const
  {
    CUevent event{};
    check(table_.cuEventCreate(&event, flags), "cuEventCreate",
          [&] { return "flags=" + std::to_string(flags); });
    return event;
  }

  void event_destroy(CUevent event) const
  {
    check(table_.cuEventDestroy(event), "cuEventDestroy",
          [&] { return "event=" + hex(reinterpret_cast<std::uintptr_t>(event)); });
  }

  void event_record(CUevent event, CUstream stream) const
  {
    check(table_.cuEventRecord(event, stream), "cuEventRecord", [&] {
      return "event=" + hex(reinterpret_cast<std::uintptr_t>(event)) + stream_argument(stream);
    });
  }

  void event_synchronize(CUevent event) const
  {
    check(table_.cuEventSynchronize(event), "cuEventSynchronize",
          [&] { return "event=" + hex(reinterpret_cast<std::uintptr_t>(event)); });
  }

  /// True when all work captured by the event's last record has completed.
  [[nodiscard]] bool event_query(CUevent event) const
  {
    CUresult const result = table_.cuEventQuery(event);
    if (result == CUDA_ERROR_NOT_READY) { return false; }
    check(result, "cuEventQuery",
          [&] { return "event=" + hex(reinterpret_cast<std::uintptr_t>(event)); });
    return true;
  }

  /// True when all work enqueued on `stream` has completed.
  [[nodiscard]] bool stream_query(CUstream stream) const
  {
    CUresult const result = table_.cuStreamQuery(stream);
    if (result == CUDA_ERROR_NOT_READY) { return false; }
    check(result, "cuStreamQuery", [&] { return stream_argument(stream).substr(2); });
    return true;
  }

  /// Enqueues `function(user_data)` on `stream`; it must make no CUDA call.
  void launch_host_func(CUstream stream, CUhostFn function, void* user_data) const
  {
    check(table_.cuLaunchHostFunc(stream, function, user_data), "cuLaunchHostFunc",
          [&] { return stream_argument(stream).substr(2); });
  }

 private:
  [[nodiscard]] static std::string copy_arguments(std::uintptr_t dst, std::uintptr_t src,
                                                  std::size_t bytes)
  {
    return "dst=" + hex(dst) + ", src=" + hex(src) + ", bytes=" + std::to_string(bytes);
  }

  [[nodiscard]] static std::string memset_arguments(CUdeviceptr dst, unsigned int value,
                                                    std::size_t count)
  {
    return "dst=" + hex(dst) + ", value=" + std::to_string(value) +
           ", count=" + std::to_string(count);
  }

  [[nodiscard]] static std::string stream_argument(CUstream stream)
  {
    return ", stream=" + hex(reinterpret_cast<std::uintptr_t>(stream));
  }

  /// Resolves `symbol`; where `fallback` is given and `symbol` is absent, resolves
  /// `fallback` instead (an older ABI of the same prototype, for drivers that predate it).
  template <class Function>
  void resolve(Function& slot, char const* symbol, char const* fallback = nullptr)
  {
    void* address = ::dlsym(handle_, symbol);
    if (address == nullptr && fallback != nullptr) { address = ::dlsym(handle_, fallback); }
    if (address == nullptr) {
      // Versioned symbols appear with the driver release that introduced them, so an old
      // driver lacks some: name the CUDA version whose cuda.h this binary was built with.
      throw driver_unavailable(
        "swapalloc: the CUDA driver \"" + library_ + "\" does not export " + symbol +
        ", which swapalloc needs: it was built against the cuda.h of CUDA " +
        std::to_string(CUDA_VERSION / 1000) + "." + std::to_string(CUDA_VERSION % 1000 / 10) +
        "; update the NVIDIA driver to one that supports that CUDA version.");
    }
    slot = reinterpret_cast<Function>(address);
  }

  void resolve_all()
  {
    auto& t = table_;
    resolve(t.cuInit, "cuInit");
    resolve(t.cuDriverGetVersion, "cuDriverGetVersion");
    resolve(t.cuGetErrorName, "cuGetErrorName");
    resolve(t.cuGetErrorString, "cuGetErrorString");
    resolve(t.cuDeviceGetCount, "cuDeviceGetCount");
    resolve(t.cuDeviceGet, "cuDeviceGet");
    resolve(t.cuDeviceGetName, "cuDeviceGetName");
    resolve(t.cuDeviceGetAttribute, "cuDeviceGetAttribute");
    resolve(t.cuDeviceTotalMem, "cuDeviceTotalMem_v2");
    resolve(t.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
    resolve(t.cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
    resolve(t.cuDevicePrimaryCtxReset, "cuDevicePrimaryCtxReset_v2");
    resolve(t.cuCtxGetCurrent, "cuCtxGetCurrent");
    resolve(t.cuCtxSetCurrent, "cuCtxSetCurrent");
    resolve(t.cuCtxGetDevice, "cuCtxGetDevice");
    resolve(t.cuCtxSynchronize, "cuCtxSynchronize");
    resolve(t.cuMemGetInfo, "cuMemGetInfo_v2");
    resolve(t.cuMemGetAllocationGranularity, "cuMemGetAllocationGranularity");
    resolve(t.cuMemAddressReserve, "cuMemAddressReserve");
    resolve(t.cuMemAddressFree, "cuMemAddressFree");
    resolve(t.cuMemCreate, "cuMemCreate");
    resolve(t.cuMemRelease, "cuMemRelease");
    resolve(t.cuMemMap, "cuMemMap");
    resolve(t.cuMemUnmap, "cuMemUnmap");
    resolve(t.cuMemSetAccess, "cuMemSetAccess");
    resolve(t.cuMemGetAccess, "cuMemGetAccess");
    resolve(t.cuMemRetainAllocationHandle, "cuMemRetainAllocationHandle");
    resolve(t.cuMemHostAlloc, "cuMemHostAlloc");
    resolve(t.cuMemAllocHost, "cuMemAllocHost_v2");
    resolve(t.cuMemFreeHost, "cuMemFreeHost");
    resolve(t.cuMemHostRegister, "cuMemHostRegister_v2");
    resolve(t.cuMemHostUnregister, "cuMemHostUnregister");
    resolve(t.cuMemcpyHtoD, "cuMemcpyHtoD_v2");
    resolve(t.cuMemcpyDtoH, "cuMemcpyDtoH_v2");
    resolve(t.cuMemcpyDtoD, "cuMemcpyDtoD_v2");
    resolve(t.cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2");
    resolve(t.cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2");
    resolve(t.cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2");
    resolve(t.cuMemsetD8, "cuMemsetD8_v2");
    resolve(t.cuMemsetD32, "cuMemsetD32_v2");
    resolve(t.cuMemsetD8Async, "cuMemsetD8Async");
    resolve(t.cuMemsetD32Async, "cuMemsetD32Async");
    resolve(t.cuStreamCreate, "cuStreamCreate");
    resolve(t.cuStreamDestroy, "cuStreamDestroy_v2");
    resolve(t.cuStreamSynchronize, "cuStreamSynchronize");
    resolve(t.cuStreamQuery, "cuStreamQuery");
    resolve(t.cuStreamWaitEvent, "cuStreamWaitEvent");
    resolve(t.cuEventCreate, "cuEventCreate");
    resolve(t.cuEventDestroy, "cuEventDestroy_v2");
    resolve(t.cuEventRecord, "cuEventRecord");
    resolve(t.cuEventQuery, "cuEventQuery");
    resolve(t.cuEventSynchronize, "cuEventSynchronize");
    // cuEventElapsedTime_v2 arrived with CUDA 12.8 (R570 drivers); the bare symbol has the
    // same prototype, so R535/R550 drivers keep working.
    resolve(t.cuEventElapsedTime, "cuEventElapsedTime_v2", "cuEventElapsedTime");
    resolve(t.cuLaunchHostFunc, "cuLaunchHostFunc");
    resolve_optional();
  }

  /// The entry points swapalloc uses where the driver has them; null where it does not.
  void resolve_optional() noexcept
  {
    // cuMemcpyBatchAsync_v2 is CUDA 13.0's ABI (R580 drivers on); the bare
    // cuMemcpyBatchAsync of CUDA 12.8/12.9 takes a failIdx argument this prototype lacks,
    // so those drivers copy range by range instead (detail/copy_batch.hpp).
    table_.cuMemcpyBatchAsync = reinterpret_cast<decltype(table_.cuMemcpyBatchAsync)>(
      ::dlsym(handle_, "cuMemcpyBatchAsync_v2"));
  }

  std::string library_;
  void* handle_{nullptr};
  driver_table table_{};
};

/**
 * @brief Makes `context` current on the calling thread for a scope, and puts the thread's
 *        previous context back at its end. Nothing is switched when `context` is already
 *        current.
 *
 * Two forms. The plain one throws `cuda_error` if the context cannot be read or made
 * current. The `std::nothrow` one is for noexcept paths (a store freeing memory from a
 * worker thread): a null `context` or a failure leaves the thread as it was, and the
 * driver call it guards then reports the problem.
 * Thread safety: a scope belongs to the thread that made it.
 */
class context_scope {
 public:
  context_scope(driver const& drv, CUcontext context) : driver_(&drv)
  {
    previous_ = drv.current_context();
    if (previous_ != context) {
      drv.set_current_context(context);
      switched_ = true;
    }
  }
  context_scope(driver const& drv, CUcontext context, std::nothrow_t) noexcept : driver_(&drv)
  {
    if (context == nullptr) { return; }
    CUcontext current = nullptr;
    if (drv.table().cuCtxGetCurrent(&current) != CUDA_SUCCESS || current == context) { return; }
    if (drv.table().cuCtxSetCurrent(context) == CUDA_SUCCESS) {
      previous_ = current;
      switched_ = true;
    }
  }
  context_scope(context_scope const&)            = delete;
  context_scope& operator=(context_scope const&) = delete;
  ~context_scope()
  {
    if (switched_) { (void)driver_->table().cuCtxSetCurrent(previous_); }
  }

 private:
  driver const* driver_;
  CUcontext previous_{nullptr};
  bool switched_{false};
};

}  // namespace swapalloc
