/**
 * @file scoped_env.hpp
 * @brief An environment variable set (or unset) for a scope, restored at its end: for tests
 *        of settings read from the environment (SWAPALLOC_HOST_LIMIT, SWAPALLOC_WORKERS).
 *        Not thread-safe: setenv is not; use it before starting threads.
 */
#pragma once

#include <cstdlib>
#include <optional>
#include <string>

namespace swapalloc::testing {

/// Sets an environment variable for the scope, restoring the previous value after.
class scoped_env {
 public:
  scoped_env(char const* name, char const* value) : name_(name)
  {
    if (char const* old = std::getenv(name)) { old_ = old; }
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  scoped_env(scoped_env const&)            = delete;
  scoped_env& operator=(scoped_env const&) = delete;
  ~scoped_env()
  {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  char const* name_;
  std::optional<std::string> old_;
};

}  // namespace swapalloc::testing
