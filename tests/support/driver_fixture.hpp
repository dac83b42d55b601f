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

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <swapalloc/driver.hpp>

#include "driver_support.hpp"
#include "host_gate.hpp"
#include "scoped_objects.hpp"
#include "sim_control.hpp"

namespace swapalloc::testing {

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
                 now.host_registrations == census_before_.host_registrations &&
                 now.streams == census_before_.streams && now.events == census_before_.events;
        },
        2s);
      auto const now = sim_.census();
      EXPECT_TRUE(settled) << "the test left driver objects behind: handles " << now.handles
                           << " (was " << census_before_.handles << "), reservations "
                           << now.reservations << " (was " << census_before_.reservations
                           << "), mappings " << now.mappings << " (was " << census_before_.mappings
                           << "), host allocations " << now.host_allocations << " (was "
                           << census_before_.host_allocations << "), host registrations "
                           << now.host_registrations << " (was "
                           << census_before_.host_registrations << "), streams " << now.streams
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

  /// Polls cuStreamQuery until `stream` has no pending work; false if it still has some
  /// after `timeout`. Shows a stream's progress without a host function, which would
  /// wait for any closed host_gate of the context (see host_gate.hpp).
  [[nodiscard]] bool idle_within(CUstream stream, std::chrono::milliseconds timeout) const
  {
    return wait_until([&] { return drv_->table().cuStreamQuery(stream) == CUDA_SUCCESS; }, timeout);
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
