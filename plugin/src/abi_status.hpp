/**
 * @file abi_status.hpp
 * @brief How the C ABI reports failure (include/swapalloc/swapalloc.h): every exception is
 *        caught at the boundary, mapped to a swapalloc_status, and its message kept as the
 *        calling thread's last error.
 *
 * `abi_error` is what the plugin itself throws for what only the ABI knows about (a null
 * argument, a call before init, an unknown pool handle). The library's own exceptions
 * (errors.hpp) map by type; see `status_of`.
 *
 * Thread safety: the last error is thread-local; everything here may run on any thread.
 */
#pragma once

#include <swapalloc/swapalloc.h>
#include <swapalloc/errors.hpp>

#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

namespace swapalloc::plugin {

/// A failure the ABI layer detects, with the status it returns.
class abi_error : public std::runtime_error {
 public:
  abi_error(swapalloc_status status, std::string const& message)
    : std::runtime_error(message), status_(status)
  {
  }
  [[nodiscard]] swapalloc_status status() const noexcept { return status_; }

 private:
  swapalloc_status status_;
};

/// The calling thread's last failure message (swapalloc_last_error).
[[nodiscard]] inline std::string& last_error() noexcept
{
  thread_local std::string message;
  return message;
}

/// The calling thread's last failure status (swapalloc_last_status).
[[nodiscard]] inline swapalloc_status& last_status() noexcept
{
  thread_local swapalloc_status status = SWAPALLOC_SUCCESS;
  return status;
}

/// Keeps `message` as the calling thread's last error and returns `status`. Never throws:
/// a message that cannot be copied (no host memory) is replaced by a fixed one.
inline swapalloc_status fail(swapalloc_status status, char const* message) noexcept
{
  last_status() = status;
  try {
    last_error() = message;
  } catch (...) {
    last_error().clear();  // no allocation: keeps the capacity it has
  }
  return status;
}

/// The status and message of the exception being handled. Call only inside a catch.
inline swapalloc_status fail_with_current_exception() noexcept
{
  try {
    throw;
  } catch (abi_error const& error) {
    return fail(error.status(), error.what());
  } catch (out_of_memory const& error) {
    return fail(SWAPALLOC_ERROR_OUT_OF_MEMORY, error.what());
  } catch (usage_error const& error) {
    return fail(SWAPALLOC_ERROR_MISUSE, error.what());
  } catch (config_error const& error) {
    return fail(SWAPALLOC_ERROR_INVALID_VALUE, error.what());
  } catch (restore_error const& error) {
    return fail(SWAPALLOC_ERROR_CORRUPT_COPY, error.what());
  } catch (cuda_error const& error) {
    return fail(SWAPALLOC_ERROR_CUDA, error.what());
  } catch (driver_unavailable const& error) {
    return fail(SWAPALLOC_ERROR_NO_DRIVER, error.what());
  } catch (std::invalid_argument const& error) {
    return fail(SWAPALLOC_ERROR_INVALID_VALUE, error.what());
  } catch (std::logic_error const& error) {  // pop without push, push past the deepest scope
    return fail(SWAPALLOC_ERROR_MISUSE, error.what());
  } catch (std::bad_alloc const&) {
    return fail(SWAPALLOC_ERROR_OUT_OF_MEMORY, "swapalloc: out of host memory");
  } catch (std::exception const& error) {
    return fail(SWAPALLOC_ERROR_INTERNAL, error.what());
  } catch (...) {
    return fail(SWAPALLOC_ERROR_INTERNAL, "swapalloc: an unknown exception");
  }
}

/// Runs `body` and returns SWAPALLOC_SUCCESS, or the status of what it threw (and keeps
/// its message). The one place where exceptions stop.
template <typename Body>
[[nodiscard]] swapalloc_status guarded(Body&& body) noexcept
{
  try {
    std::forward<Body>(body)();
    return SWAPALLOC_SUCCESS;
  } catch (...) {
    return fail_with_current_exception();
  }
}

/// Throws abi_error(INVALID_VALUE) naming `function` and `argument` when `pointer` is null.
template <typename T>
void require_argument(T const* pointer, char const* function, char const* argument)
{
  if (pointer == nullptr) {
    throw abi_error(SWAPALLOC_ERROR_INVALID_VALUE, std::string("swapalloc: ") + function + ": " +
                                                     argument + " is NULL (a pointer is needed)");
  }
}

}  // namespace swapalloc::plugin
