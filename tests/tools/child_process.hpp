/**
 * @file child_process.hpp
 * @brief Runs a program of the project as a child process and captures what it says.
 *
 * The tools tests check programs from the outside: exit status, stdout, stderr. The child
 * is started with posix_spawn and an explicit argument vector (no shell, so no quoting or
 * injection issues), with the test's environment plus the changes a test asks for.
 */
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace swapalloc::testing {

/// How a child ended and what it printed.
struct child_result {
  int exit_status = -1;  ///< the exit status, or -1 when it did not exit normally
  int term_signal = 0;   ///< the signal that ended it, or 0
  bool timed_out  = false;
  std::string out;  ///< everything it wrote to stdout
  std::string err;  ///< everything it wrote to stderr

  /// "exit status 2" / "killed by signal 11 (Segmentation fault)" plus both streams, for
  /// assertion messages.
  [[nodiscard]] std::string describe() const;
};

/// An environment change: set `name` to `value`, or remove it when `value` is empty.
struct env_change {
  std::string name;
  std::optional<std::string> value;
};

/// Runs `program` with `arguments`, waits for it (killing it after `timeout`) and returns
/// how it ended. Throws std::system_error when it cannot be started at all.
[[nodiscard]] child_result run_child(std::string const& program,
                                     std::vector<std::string> const& arguments,
                                     std::vector<env_change> const& environment = {},
                                     std::chrono::seconds timeout = std::chrono::seconds{240});

}  // namespace swapalloc::testing
