/**
 * @file sim_control.hpp
 * @brief Reaches the simulator's control API (tools/cudasim/cudasim.h) through the seam.
 *
 * None of the cudasim* functions exists in the real libcuda.so.1, so tests never link
 * them: they look them up in the loaded driver with `driver::find_symbol` and skip
 * (GTEST_SKIP) what needs them when they are absent. The types come from cudasim.h's
 * own declarations, so a changed prototype is a compile error here.
 *
 * Also here: `simulator_library_present()`, which answers "is SWAPALLOC_CUDA_DRIVER the
 * simulator?" without calling cuInit, for exit tests whose child must configure the
 * simulator (environment variables) before the driver is initialized.
 */
#pragma once

#include <dlfcn.h>

#include <cstdlib>
#include <string>

#include <gtest/gtest.h>
#include <swapalloc/driver.hpp>

#include "cudasim.h"

namespace swapalloc::testing {

/// The simulator's control entry points, or all null on a real driver.
struct sim_control {
  decltype(&::cudasimFailCall) fail_call{};
  decltype(&::cudasimClearFaults) clear_faults{};
  decltype(&::cudasimCallCount) call_count{};
  decltype(&::cudasimSetExternalUsage) set_external_usage{};
  decltype(&::cudasimSetLinkBandwidth) set_link_bandwidth{};
  decltype(&::cudasimGetCensus) get_census{};
  decltype(&::cudasimGetProfile) get_profile{};  ///< absent in simulators before issue 14
  decltype(&::cudasimLinkBytes) link_bytes{};    ///< absent in simulators before issue 14

  sim_control() = default;
  explicit sim_control(driver const& drv)
  {
    lookup(drv, fail_call, "cudasimFailCall");
    lookup(drv, clear_faults, "cudasimClearFaults");
    lookup(drv, call_count, "cudasimCallCount");
    lookup(drv, set_external_usage, "cudasimSetExternalUsage");
    lookup(drv, set_link_bandwidth, "cudasimSetLinkBandwidth");
    lookup(drv, get_census, "cudasimGetCensus");
    lookup(drv, get_profile, "cudasimGetProfile");
    lookup(drv, link_bytes, "cudasimLinkBytes");
  }

  /// True when the loaded driver is the simulator (its whole control API is present).
  [[nodiscard]] bool available() const noexcept
  {
    return fail_call != nullptr && clear_faults != nullptr && call_count != nullptr &&
           set_external_usage != nullptr && set_link_bandwidth != nullptr && get_census != nullptr;
  }

  [[nodiscard]] cudasim_census census() const
  {
    cudasim_census out{};
    get_census(&out);
    return out;
  }

  /// Bytes of host memory pinned now, by cuMemHostAlloc and by cuMemHostRegister.
  [[nodiscard]] std::size_t pinned_host_bytes() const
  {
    cudasim_census const now = census();
    return now.host_bytes + now.host_registered_bytes;
  }

  /// Host ranges pinned now: cuMemHostAlloc blocks and cuMemHostRegister ranges.
  [[nodiscard]] std::size_t pinned_host_ranges() const
  {
    cudasim_census const now = census();
    return now.host_allocations + now.host_registrations;
  }

 private:
  template <class Function>
  static void lookup(driver const& drv, Function& slot, char const* name)
  {
    slot = reinterpret_cast<Function>(drv.find_symbol(name));
  }
};

/// The library SWAPALLOC_CUDA_DRIVER names, else libcuda.so.1 (what `driver()` loads).
[[nodiscard]] inline std::string driver_library_path()
{
  char const* value = std::getenv(driver::path_variable);
  return (value != nullptr && *value != '\0') ? std::string(value)
                                              : std::string(driver::default_library);
}

/// True when the driver library exports the simulator's control API. Opens the library
/// but calls nothing in it (no cuInit), so the simulator's configuration is still unread.
[[nodiscard]] inline bool simulator_library_present()
{
  void* handle = ::dlopen(driver_library_path().c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) { return false; }
  bool const present = ::dlsym(handle, "cudasimFailCall") != nullptr;
  ::dlclose(handle);
  return present;
}

}  // namespace swapalloc::testing

/// Skips the current test unless the loaded driver is the simulator. `reason` says what
/// a real GPU cannot do (or where its behaviour is undocumented).
#define SIM_ONLY(control, reason)                                                             \
  do {                                                                                        \
    if (!(control).available()) {                                                             \
      GTEST_SKIP() << "simulator only (the driver has no cudasim control API): " << (reason); \
    }                                                                                         \
  } while (0)
