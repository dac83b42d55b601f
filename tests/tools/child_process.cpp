#include "child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <system_error>

extern char** environ;  // NOLINT(readability-redundant-declaration): POSIX leaves it undeclared

namespace swapalloc::testing {
namespace {

[[noreturn]] void throw_errno(int error, char const* what)
{
  throw std::system_error(error, std::generic_category(), what);
}

/// A pipe whose ends close themselves; both ends are close-on-exec, so only the dup2'd
/// copies reach the child.
class pipe_pair {
 public:
  pipe_pair()
  {
    if (::pipe2(fds_.data(), O_CLOEXEC) != 0) { throw_errno(errno, "pipe2"); }
  }
  pipe_pair(pipe_pair const&)            = delete;
  pipe_pair& operator=(pipe_pair const&) = delete;
  ~pipe_pair()
  {
    close_read();
    close_write();
  }
  [[nodiscard]] int read_end() const noexcept { return fds_[0]; }
  [[nodiscard]] int write_end() const noexcept { return fds_[1]; }
  void close_read() noexcept { close_fd(fds_[0]); }
  void close_write() noexcept { close_fd(fds_[1]); }

 private:
  static void close_fd(int& fd) noexcept
  {
    if (fd >= 0) { ::close(fd); }
    fd = -1;
  }
  std::array<int, 2> fds_{-1, -1};
};

/// The test's environment with `changes` applied, as "NAME=value" strings.
std::vector<std::string> child_environment(std::vector<env_change> const& changes)
{
  std::vector<std::string> result;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    std::string const variable = *entry;
    bool overridden            = false;
    for (auto const& change : changes) {
      overridden =
        overridden || variable.compare(0, change.name.size() + 1, change.name + "=") == 0;
    }
    if (!overridden) { result.push_back(variable); }
  }
  for (auto const& change : changes) {
    if (change.value) { result.push_back(change.name + "=" + *change.value); }
  }
  return result;
}

/// execve-style array of pointers into `strings`, null-terminated.
std::vector<char*> pointers(std::vector<std::string>& strings)
{
  std::vector<char*> result;
  result.reserve(strings.size() + 1);
  for (auto& text : strings) {
    result.push_back(text.data());
  }
  result.push_back(nullptr);
  return result;
}

/// Reads both pipes until the child closes them (or the deadline passes), without letting
/// either fill up: a child blocked on a full stderr pipe would never exit.
bool drain(pipe_pair& out, pipe_pair& err, child_result& result,
           std::chrono::steady_clock::time_point deadline)
{
  std::array<pollfd, 2> fds{{{out.read_end(), POLLIN, 0}, {err.read_end(), POLLIN, 0}}};
  std::array<std::string*, 2> sinks{&result.out, &result.err};
  int open = 2;
  while (open > 0) {
    auto const left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) { return false; }
    int const ready = ::poll(fds.data(), fds.size(), static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) { continue; }
    if (ready < 0) { throw_errno(errno, "poll"); }
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) { continue; }
      char buffer[4096];
      ssize_t const got = ::read(fds[i].fd, buffer, sizeof(buffer));
      if (got > 0) {
        sinks[i]->append(buffer, static_cast<std::size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        fds[i].fd = -1;  // EOF (or a broken pipe): poll ignores negative descriptors
        --open;
      }
    }
  }
  return true;
}

}  // namespace

std::string child_result::describe() const
{
  std::string text = timed_out          ? "timed out and was killed"
                     : term_signal != 0 ? "killed by signal " + std::to_string(term_signal) + " (" +
                                            ::strsignal(term_signal) + ")"
                                        : "exit status " + std::to_string(exit_status);
  return text + "\n--- stdout ---\n" + out + "--- stderr ---\n" + err + "--------------";
}

child_result run_child(std::string const& program, std::vector<std::string> const& arguments,
                       std::vector<env_change> const& environment, std::chrono::seconds timeout)
{
  std::vector<std::string> argv_strings{program};
  argv_strings.insert(argv_strings.end(), arguments.begin(), arguments.end());
  std::vector<std::string> env_strings = child_environment(environment);
  auto argv                            = pointers(argv_strings);
  auto envp                            = pointers(env_strings);

  pipe_pair out;
  pipe_pair err;
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_adddup2(&actions, out.write_end(), STDOUT_FILENO);
  ::posix_spawn_file_actions_adddup2(&actions, err.write_end(), STDERR_FILENO);
  pid_t pid = -1;
  int const failed =
    ::posix_spawn(&pid, program.c_str(), &actions, nullptr, argv.data(), envp.data());
  ::posix_spawn_file_actions_destroy(&actions);
  if (failed != 0) { throw_errno(failed, ("posix_spawn " + program).c_str()); }
  // Our copies of the write ends must go, or the reads below would never see EOF.
  out.close_write();
  err.close_write();

  child_result result;
  result.timed_out = !drain(out, err, result, std::chrono::steady_clock::now() + timeout);
  if (result.timed_out) { ::kill(pid, SIGKILL); }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) { throw_errno(errno, "waitpid"); }
  }
  if (WIFEXITED(status)) { result.exit_status = WEXITSTATUS(status); }
  if (WIFSIGNALED(status)) { result.term_signal = WTERMSIG(status); }
  return result;
}

}  // namespace swapalloc::testing
