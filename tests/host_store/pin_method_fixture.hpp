/**
 * @file pin_method_fixture.hpp
 * @brief The host store's suites run once per pin method (pin_methods.hpp): a fixture
 *        whose stores pin by the instance's method, and which counts that method's calls.
 */
#pragma once

#include <swapalloc/host_store.hpp>

#include "driver_fixture.hpp"
#include "pin_methods.hpp"

#include <gtest/gtest.h>

#include <cstddef>

namespace swapalloc::testing {

class PinMethodTest : public DriverTest, public ::testing::WithParamInterface<pin_method> {
 protected:
  void SetUp() override
  {
    DriverTest::SetUp();
    if (GetParam() == pin_method::host_register &&
        !detail::registers_host_memory(drv(), device())) {
      GTEST_SKIP() << "this device does not register host memory: its stores allocate";
    }
  }
  /// `options` pinning by this instance's method.
  [[nodiscard]] host_store_options pinned_by(host_store_options options) const
  {
    options.pin = GetParam();
    return options;
  }
  /// The entry point that pins a slab, and the one that gives it back, by this method.
  [[nodiscard]] char const* pin_entry() const { return pin_entry_of(GetParam()); }
  [[nodiscard]] char const* unpin_entry() const { return unpin_entry_of(GetParam()); }
  /// Host ranges the simulator holds pinned, by either method.
  [[nodiscard]] std::size_t host_allocations() const { return sim().pinned_host_ranges(); }
};

}  // namespace swapalloc::testing
