/**
 * @file driver_support.hpp
 * @brief What every driver test helper needs: the process's one driver, CUresult names,
 *        polling with a deadline, and a scope guard.
 */
#pragma once

#include <chrono>
#include <exception>
#include <string>
#include <thread>
#include <utility>

#include <gtest/gtest.h>
#include <swapalloc/driver.hpp>

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

}  // namespace swapalloc::testing
