/**
 * @file driver_fixture.hpp
 * @brief The fixture and scoped helpers of the driver conformance tests (tests/sim).
 *
 * Everything here goes through `swapalloc::driver` (the seam) and nothing else: device
 * memory is read and written only with driver calls, never dereferenced, so the same
 * tests run on the simulator and on a real GPU.
 *
 * The suite runs in the simulator's strict leak mode (a leaked handle, reservation,
 * mapping, host allocation, stream or event fails the process with exit status 3), so
 * every driver object a test makes is owned by one of the scoped types below, and their
 * destructors undo it in the right order. Declare them in this order, so that the
 * reverse order of destruction is the safe one:
 *
 *   host buffers and flags -> device ranges -> context_drain -> streams, events -> host gates
 *
 * (a gate opens when destroyed, so the streams it blocks can drain; a stream
 * synchronizes when destroyed, and a context_drain synchronizes the context, so no
 * work is pending when the ranges and buffers it uses go).
 */
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <swapalloc/driver.hpp>

#include "sim_control.hpp"

namespace swapalloc::testing {

using namespace std::chrono_literals;

/// The process's driver: loaded once (SWAPALLOC_CUDA_DRIVER or libcuda.so.1) and never
/// unloaded, so the simulator's state lives as long as the test process.
[[nodiscard]] inline driver& shared_driver()
{
  static driver* const instance = new driver();
  return *instance;
}

/// "CUDA_ERROR_INVALID_VALUE (1)", or "CUresult 1234" when the driver has no name for it.
[[nodiscard]] inline std::string cu_name(CUresult result)
{
  char const* name = nullptr;
  try {
    auto const& table = shared_driver().table();
    if (table.cuGetErrorName(result, &name) == CUDA_SUCCESS && name != nullptr) {
      return std::string(name) + " (" + std::to_string(static_cast<int>(result)) + ")";
    }
  } catch (std::exception const&) {
  }
  return "CUresult " + std::to_string(static_cast<int>(result));
}

/// Polls `predicate` every millisecond until it holds or `timeout` passes.
template <class Predicate>
[[nodiscard]] bool wait_until(Predicate&& predicate, std::chrono::milliseconds timeout = 5s)
{
  auto const deadline = std::chrono::steady_clock::now() + timeout;
  while (!predicate()) {
    if (std::chrono::steady_clock::now() >= deadline) { return predicate(); }
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

/// Runs a function when the scope ends (restoring simulator settings a test changed).
template <class Function>
class scope_exit {
 public:
  explicit scope_exit(Function function) : function_(std::move(function)) {}
  scope_exit(scope_exit const&)            = delete;
  scope_exit& operator=(scope_exit const&) = delete;
  ~scope_exit() { function_(); }

 private:
  Function function_;
};

// ---- Scoped driver objects ------------------------------------------------------------

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

// ---- Host functions -------------------------------------------------------------------

/**
 * @brief A host function that blocks its stream until the test opens the gate.
 *
 * `enqueue(stream)` puts a cuLaunchHostFunc on the stream that waits for `open()`. While
 * it waits, everything behind it on that stream (and what is ordered after it) waits
 * too, which is how the tests observe asynchrony and ordering without kernels.
 *
 * A watchdog opens the gate after `auto_open` so that a driver that wrongly blocks the
 * caller cannot hang the suite; `opened_by_watchdog()` tells a test that happened (a
 * short `auto_open` is also the way to open a gate "later", from another thread). The
 * gate's state is shared with the host functions, so it may be destroyed before they run.
 */
class host_gate {
 public:
  explicit host_gate(std::chrono::milliseconds auto_open = 10s) : state_(std::make_shared<state>())
  {
    watchdog_ = std::thread([s = state_, auto_open] {
      std::unique_lock lock(s->mutex);
      if (!s->cv.wait_for(lock, auto_open, [&] { return s->open; })) {
        s->open        = true;
        s->by_watchdog = true;
        s->cv.notify_all();
      }
    });
  }
  host_gate(host_gate const&)            = delete;
  host_gate& operator=(host_gate const&) = delete;
  ~host_gate()
  {
    open();
    watchdog_.join();
  }

  /// Blocks `stream` at this point of its work until the gate opens.
  void enqueue(driver const& drv, CUstream stream) const
  {
    drv.check(enqueue_raw(drv, stream), "cuLaunchHostFunc", [] { return std::string("gate"); });
  }
  /// As `enqueue`, returning the CUresult of cuLaunchHostFunc.
  [[nodiscard]] CUresult enqueue_raw(driver const& drv, CUstream stream) const
  {
    auto* holder          = new std::shared_ptr<state>(state_);
    CUresult const result = drv.table().cuLaunchHostFunc(stream, &host_gate::pass, holder);
    if (result != CUDA_SUCCESS) { delete holder; }
    return result;
  }

  void open() const
  {
    std::lock_guard lock(state_->mutex);
    state_->open = true;
    state_->cv.notify_all();
  }
  [[nodiscard]] bool is_open() const
  {
    std::lock_guard lock(state_->mutex);
    return state_->open;
  }
  [[nodiscard]] bool opened_by_watchdog() const
  {
    std::lock_guard lock(state_->mutex);
    return state_->by_watchdog;
  }
  /// How many of this gate's host functions have started running.
  [[nodiscard]] int entered() const noexcept { return state_->entered.load(); }
  /// How many of this gate's host functions have returned.
  [[nodiscard]] int passed() const noexcept { return state_->passed.load(); }

 private:
  struct state {
    std::mutex mutex;
    std::condition_variable cv;
    bool open{false};
    bool by_watchdog{false};
    std::atomic<int> entered{0};
    std::atomic<int> passed{0};
  };

  static void CUDA_CB pass(void* user_data)
  {
    std::unique_ptr<std::shared_ptr<state>> holder(static_cast<std::shared_ptr<state>*>(user_data));
    state& s = **holder;
    s.entered.fetch_add(1);
    {
      std::unique_lock lock(s.mutex);
      s.cv.wait(lock, [&] { return s.open; });
    }
    s.passed.fetch_add(1);
  }

  std::shared_ptr<state> state_;
  std::thread watchdog_;
};

/// Host function: sets the std::atomic<bool> it is given.
inline void CUDA_CB set_flag(void* flag) { static_cast<std::atomic<bool>*>(flag)->store(true); }

/// Host function: sleeps 20 ms (to put measurable time between two event records).
inline void CUDA_CB sleep_20ms(void*) { std::this_thread::sleep_for(20ms); }

// ---- Device memory through driver calls -----------------------------------------------

/// `count` 32-bit words of device memory, copied out with cuMemcpyDtoH.
[[nodiscard]] inline std::vector<std::uint32_t> read_words(driver const& drv, CUdeviceptr src,
                                                           std::size_t count)
{
  std::vector<std::uint32_t> words(count);
  drv.memcpy_dtoh(words.data(), src, count * sizeof(std::uint32_t));
  return words;
}

/// A reproducible, position-dependent pattern (no two neighbouring words equal).
[[nodiscard]] inline std::vector<std::uint32_t> pattern(std::size_t count, std::uint32_t seed)
{
  std::vector<std::uint32_t> words(count);
  for (std::size_t i = 0; i < count; ++i) {
    words[i] = (static_cast<std::uint32_t>(i) * 2654435761u) ^ seed;
  }
  return words;
}

/// Index of the first word of `words` different from `value`, or words.size().
[[nodiscard]] inline std::size_t first_not(std::vector<std::uint32_t> const& words,
                                           std::uint32_t value)
{
  for (std::size_t i = 0; i < words.size(); ++i) {
    if (words[i] != value) { return i; }
  }
  return words.size();
}

// ---- The fixture ----------------------------------------------------------------------

/**
 * @brief Retains device 0's primary context, makes it current, releases it at teardown.
 *
 * On the simulator, teardown also checks that the test gave back every object it made
 * (census before == census after), so a leaking test is named at once rather than by
 * the strict check at process exit.
 */
class DriverTest : public ::testing::Test {
 protected:
  void SetUp() override
  {
    drv_      = &shared_driver();
    sim_      = sim_control(*drv_);
    device_   = drv_->device(0);
    context_  = drv_->retain_primary_context(device_);
    retained_ = true;
    drv_->set_current_context(context_);
    granularity_ = drv_->allocation_granularity(device_);
    if (sim_.available()) { census_before_ = sim_.census(); }
  }

  void TearDown() override
  {
    if (!retained_) { return; }
    if (sim_.available()) {
      sim_.clear_faults();
      // Destroyed streams and events may be reclaimed by their worker shortly after.
      bool const settled = wait_until(
        [&] {
          auto const now = sim_.census();
          return now.handles == census_before_.handles &&
                 now.reservations == census_before_.reservations &&
                 now.mappings == census_before_.mappings &&
                 now.host_allocations == census_before_.host_allocations &&
                 now.streams == census_before_.streams && now.events == census_before_.events;
        },
        2s);
      auto const now = sim_.census();
      EXPECT_TRUE(settled) << "the test left driver objects behind: handles " << now.handles
                           << " (was " << census_before_.handles << "), reservations "
                           << now.reservations << " (was " << census_before_.reservations
                           << "), mappings " << now.mappings << " (was " << census_before_.mappings
                           << "), host allocations " << now.host_allocations << " (was "
                           << census_before_.host_allocations << "), streams " << now.streams
                           << " (was " << census_before_.streams << "), events " << now.events
                           << " (was " << census_before_.events << ")";
    }
    expect_cleanup(drv_->table().cuDevicePrimaryCtxRelease(device_), "cuDevicePrimaryCtxRelease");
    retained_ = false;
  }

  [[nodiscard]] driver const& drv() const noexcept { return *drv_; }
  [[nodiscard]] driver_table const& table() const noexcept { return drv_->table(); }
  [[nodiscard]] sim_control const& sim() const noexcept { return sim_; }
  [[nodiscard]] CUdevice device() const noexcept { return device_; }
  [[nodiscard]] CUcontext context() const noexcept { return context_; }
  /// The minimum VMM granularity of device 0 (2 MiB on the simulator).
  [[nodiscard]] std::size_t gran() const noexcept { return granularity_; }
  /// Free device memory now (cuMemGetInfo_v2).
  [[nodiscard]] std::size_t free_bytes() const { return drv_->mem_get_info().free; }

  /// An address at which `size` bytes of address space were free a moment ago (reserved,
  /// then freed): a hint under which adjacent reservations can be placed.
  [[nodiscard]] CUdeviceptr vacant_address(std::size_t size) const
  {
    scoped_reservation probe(*drv_, size);
    return probe.ptr();
  }

  /// A range of `granules` granules, mapped and (unless told otherwise) accessible.
  [[nodiscard]] device_range make_range(std::size_t granules = 1, bool accessible = true) const
  {
    return device_range(*drv_, device_, granules * granularity_, accessible);
  }

 private:
  driver* drv_{nullptr};
  sim_control sim_;
  CUdevice device_{};
  CUcontext context_{};
  bool retained_{false};
  std::size_t granularity_{0};
  cudasim_census census_before_{};
};

/// DriverTest whose death and exit tests re-execute the test binary ("threadsafe"), so
/// the child initializes CUDA itself: forking an initialized driver is not allowed on a
/// real GPU and would share the simulator's worker threads' state.
class DriverDeathTest : public DriverTest {
 protected:
  void SetUp() override
  {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    DriverTest::SetUp();
  }
};

/// Ends a death-test child with `code`, skipping exit handlers (the simulator's leak
/// report, sanitizers' leak checks): the child deliberately leaves objects behind.
[[noreturn]] inline void child_exit(int code)
{
  std::fflush(stderr);
  std::_Exit(code);
}

/// Ends a death-test child with a CUresult as its exit status (modulo 256, as the OS
/// keeps it), naming it on stderr so that a failing parent shows what happened.
[[noreturn]] inline void child_exit_with(CUresult result, char const* what)
{
  std::fprintf(stderr, "%s: %s\n", what, cu_name(result).c_str());
  child_exit(static_cast<int>(result) % 256);
}

}  // namespace swapalloc::testing

/// Lets GoogleTest print a CUresult as its name in assertion failures (found by ADL).
inline void PrintTo(CUresult result, std::ostream* os)
{
  *os << swapalloc::testing::cu_name(result);
}

/// EXPECT that a driver call returns `expected`, naming both results on failure. Like
/// the GoogleTest macros it accepts a streamed message: EXPECT_CU(...) << "context".
#define EXPECT_CU(expected, ...) SIM_CU_CHECK_(EXPECT_EQ, expected, __VA_ARGS__)
/// ASSERT that a driver call returns `expected`, naming both results on failure.
#define ASSERT_CU(expected, ...) SIM_CU_CHECK_(ASSERT_EQ, expected, __VA_ARGS__)

// The switch keeps a caller's `if (...) EXPECT_CU(...); else ...` unambiguous, as
// GoogleTest's own macros do; the if-initializer evaluates the call exactly once.
#define SIM_CU_CHECK_(gtest_macro, expected, ...)                                        \
  switch (0)                                                                             \
  case 0:                                                                                \
  default:                                                                               \
    if (CUresult const sim_actual_ = (__VA_ARGS__), sim_expected_ = (expected); false) { \
    } else                                                                               \
      gtest_macro(sim_actual_, sim_expected_)                                            \
        << #__VA_ARGS__ << " returned " << ::swapalloc::testing::cu_name(sim_actual_)    \
        << ", expected " << ::swapalloc::testing::cu_name(sim_expected_) << ". "
