/**
 * @file stats_publisher.hpp
 * @brief Publishes this process's allocator statistics for `python -m swapalloc ps` and
 *        `top`: a thread writes `<dir>/<pid>.json` every `interval` (at least one second),
 *        and the file is removed when the publisher stops (swapalloc_shutdown, or process
 *        exit).
 *
 * - **Where.** `<dir>` is $SWAPALLOC_STATS_DIR when set, else $XDG_RUNTIME_DIR/swapalloc
 *   (a per-user tmpfs on systemd systems), else /dev/shm/swapalloc-<uid>. It is created
 *   with mode 0700 and each file with mode 0600: only the user reads them (what pools a
 *   process holds is nobody else's business).
 * - **Atomic.** A file is written to `<pid>.json.tmp` and renamed, so that a reader never
 *   sees half of one.
 * - **Contents.** {"pid", "command", "started", "updated" (Unix seconds), "interval_s",
 *   "stats": allocator::stats_json()}.
 * - **Errors.** A failed write does not stop the thread or the allocator: it is counted
 *   (`failures`), and the next period tries again. A
 *   process that dies without removing its file leaves it to the readers, who remove
 *   files of processes that no longer exist.
 *
 * Thread safety: `stop` and the queries may be called from any thread.
 */
#pragma once

#include <swapalloc/allocator.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

namespace swapalloc::plugin {

/// The directory of the published files (see the file comment). Does not create it.
[[nodiscard]] inline std::filesystem::path stats_directory()
{
  if (char const* named = std::getenv("SWAPALLOC_STATS_DIR"); named != nullptr && *named != 0) {
    return named;
  }
  if (char const* runtime = std::getenv("XDG_RUNTIME_DIR"); runtime != nullptr && *runtime != 0) {
    return std::filesystem::path(runtime) / "swapalloc";
  }
  return "/dev/shm/swapalloc-" + std::to_string(::getuid());
}

class stats_publisher {
 public:
  /// The shortest period: the rate is bounded at one write per second.
  static constexpr std::chrono::milliseconds min_interval{1000};

  /// Starts publishing `cache`'s statistics every `interval` (raised to min_interval).
  /// @pre `cache` outlives the publisher (or its `stop`).
  stats_publisher(allocator const& cache, std::chrono::milliseconds interval)
    : cache_(&cache),
      interval_(std::max(interval, min_interval)),
      path_(stats_directory() / (std::to_string(::getpid()) + ".json")),
      started_(unix_seconds()),
      thread_([this] { run(); })
  {
  }
  stats_publisher(stats_publisher const&)            = delete;
  stats_publisher& operator=(stats_publisher const&) = delete;
  ~stats_publisher() { stop(); }

  /// Ends the thread and removes the file. Idempotent.
  void stop() noexcept
  {
    {
      std::lock_guard const lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) { thread_.join(); }
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }

  [[nodiscard]] std::filesystem::path const& path() const noexcept { return path_; }
  [[nodiscard]] std::size_t failures() const noexcept { return failures_.load(); }

 private:
  [[nodiscard]] static double unix_seconds()
  {
    using namespace std::chrono;
    return duration<double>(system_clock::now().time_since_epoch()).count();
  }

  /// This process's command line, arguments separated by spaces (/proc/self/cmdline).
  [[nodiscard]] static std::string command()
  {
    std::ifstream in("/proc/self/cmdline", std::ios::binary);
    std::string line((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (char& c : line) {
      if (c == '\0') { c = ' '; }
    }
    while (!line.empty() && line.back() == ' ') {
      line.pop_back();
    }
    return line.substr(0, 300);
  }

  void run() noexcept
  {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      lock.unlock();
      try {
        publish();
      } catch (std::exception const&) {  // counted; the next period tries again
        failures_.fetch_add(1, std::memory_order_relaxed);
      }
      lock.lock();
      wake_.wait_for(lock, interval_, [&] { return stopping_; });
    }
  }

  /// Writes the file once. @throws std::runtime_error (an I/O error) or what stats_json throws.
  void publish() const
  {
    std::filesystem::path const directory = path_.parent_path();
    if (::mkdir(directory.c_str(), 0700) != 0 && errno != EEXIST) {
      throw std::runtime_error("mkdir " + directory.string() + ": " + std::strerror(errno));
    }
    nlohmann::json const out{{"pid", ::getpid()},
                             {"command", command()},
                             {"started", started_},
                             {"updated", unix_seconds()},
                             {"interval_s", std::chrono::duration<double>(interval_).count()},
                             {"stats", cache_->stats_json()}};
    std::string const text                = out.dump();
    std::filesystem::path const temporary = path_.string() + ".tmp";
    int const fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
      throw std::runtime_error("open " + temporary.string() + ": " + std::strerror(errno));
    }
    bool const written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    bool const closed  = ::close(fd) == 0;
    if (!written || !closed || ::rename(temporary.c_str(), path_.c_str()) != 0) {
      ::unlink(temporary.c_str());
      throw std::runtime_error("write " + path_.string() + ": " + std::strerror(errno));
    }
  }

  allocator const* cache_;
  std::chrono::milliseconds interval_;
  std::filesystem::path path_;
  double started_;
  std::atomic<std::size_t> failures_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_{false};
  std::thread thread_;  // last: starts once the members it uses exist
};

}  // namespace swapalloc::plugin
