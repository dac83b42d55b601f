/**
 * @file configured_child.hpp
 * @brief For simulator tests whose configuration is read from the environment at cuInit:
 *        a child process that sets SWAPALLOC_SIM_* first, then counts failed checks.
 */
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>

#include <unistd.h>

#include <gtest/gtest.h>

#include <swapalloc/driver.hpp>

#include "driver_fixture.hpp"
#include "sim_control.hpp"

namespace swapalloc::testing {

struct env_setting {
  char const* name;
  char const* value;
};

/// Counts failed checks in a child process and says which, on stderr.
struct child_checks {
  int failures = 0;
  void operator()(bool ok, char const* what)
  {
    if (!ok) {
      std::fprintf(stderr, "check failed: %s\n", what);
      ++failures;
    }
  }
  void result(CUresult actual, CUresult expected, char const* what)
  {
    if (actual != expected) {
      std::fprintf(stderr, "%s returned %d, expected %d\n", what, actual, expected);
      ++failures;
    }
  }
};

/// Sets exactly the given SWAPALLOC_SIM_* variables (the other configuration variables unset).
inline void configure(std::initializer_list<env_setting> settings)
{
  for (char const* name :
       {"SWAPALLOC_SIM_MEMORY", "SWAPALLOC_SIM_DEVICES", "SWAPALLOC_SIM_EXTERNAL",
        "SWAPALLOC_SIM_LINK_GBPS", "SWAPALLOC_SIM_FAIL", "SWAPALLOC_SIM_PROFILE",
        "SWAPALLOC_SIM_TIME_SCALE"}) {
    ::unsetenv(name);
  }
  for (auto const& setting : settings) {
    ::setenv(setting.name, setting.value, 1);
  }
}

/// In a child: strict, quiet leak checking, the driver loaded and device 0's primary
/// context current; runs `body(drv, device)`, then exits normally (std::exit), so that the
/// simulator's exit report and strict check run.
template <class Body>
[[noreturn]] void strict_child(Body&& body)
{
  configure({{"SWAPALLOC_SIM_STRICT", "1"}, {"SWAPALLOC_SIM_QUIET", "1"}});
  driver drv(driver_library_path());
  CUdevice const device = drv.device(0);
  drv.set_current_context(drv.retain_primary_context(device));
  body(drv, device);
  std::exit(0);
}

/// In a child: configure, load the driver, make device 0's primary context current,
/// run `body(drv, checks)`, and exit 0 when every check held (1 if not, 2 on exception).
template <class Body>
[[noreturn]] void configured_child(std::initializer_list<env_setting> settings, Body&& body)
{
  configure(settings);
  try {
    driver drv(driver_library_path());
    CUdevice const device = drv.device(0);
    drv.set_current_context(drv.retain_primary_context(device));
    child_checks checks;
    body(drv, checks);
    child_exit(checks.failures == 0 ? 0 : 1);
  } catch (std::exception const& error) {
    std::fprintf(stderr, "exception: %s\n", error.what());
    child_exit(2);
  }
}

/// A cost profile file (SWAPALLOC_SIM_PROFILE's text form) named after the running test
/// and this process, removed at destruction.
class profile_file {
 public:
  explicit profile_file(char const* text)
  {
    auto const* const info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string test       = info != nullptr ? info->name() : "none";
    std::replace(test.begin(), test.end(), '/', '_');  // a parameterized test: "Name/param"
    path_ = std::filesystem::temp_directory_path() /
            ("cudasim-profile-" + test + "-" + std::to_string(::getpid()));
    std::ofstream(path_) << text;
    path_text_ = path_.string();
  }
  profile_file(profile_file const&)            = delete;
  profile_file& operator=(profile_file const&) = delete;
  ~profile_file()
  {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  /// The file's path, for SWAPALLOC_SIM_PROFILE.
  [[nodiscard]] char const* path() const noexcept { return path_text_.c_str(); }

 private:
  std::filesystem::path path_;
  std::string path_text_;
};

}  // namespace swapalloc::testing
