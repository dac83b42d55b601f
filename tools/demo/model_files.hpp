/**
 * @file model_files.hpp
 * @brief The demo's model files: each model's weights written once to a file in the build
 *        directory, as a checkpoint on disk, and read back by every load of the model (a
 *        weight_filler). With auto_unload that is every step, as the seed's from_pretrained
 *        does; in the other modes it is the first use of each model.
 *
 * A file holds the bytes a `load` of its model copies in, in load order
 * (model::weight_chunks), made from a weight_source in bf16. Its name carries a key (the
 * xxHash64 of the source's description, the model's name and its chunks): a later run with
 * the same sizes and weights reuses the file, a run with others writes its own and removes
 * the stale one. A file is written beside its final name and renamed, and kept open from
 * then on, so that runs at once (the tests) never read one half written or removed.
 *
 * Reads are cold: at the start of each load of a model (its first chunk) the file's pages
 * are dropped from the page cache (fdatasync, then posix_fadvise DONTNEED: Linux drops clean
 * pages), so that the load reads the disk, as bench_policy's BM_RepeatRequest measures what
 * auto_unload costs. The store counts loads, bytes read and seconds spent reading.
 *
 * Errors: std::runtime_error naming the path and errno's message. Thread safety: `prepare`
 * before the loads it serves; the filler and `totals` from any thread.
 */
#pragma once

#include "model.hpp"
#include "weights.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace swapalloc::demo {

/// What the model files gave so far. Bytes, seconds.
struct read_totals {
  std::size_t loads{0};  ///< loads begun (first chunks read)
  std::size_t bytes{0};  ///< bytes read
  double seconds{0.0};   ///< spent in read calls

  /// Bytes per second; 0 before any read.
  [[nodiscard]] double rate() const noexcept
  {
    return seconds > 0.0 ? static_cast<double>(bytes) / seconds : 0.0;
  }
};

/// The model files of one demo run. See the file comment.
class model_file_store {
 public:
  /// Files go in `dir` (created when missing), filled from `source` in bf16.
  model_file_store(std::filesystem::path dir, scenarios::weight_source source)
    : dir_(std::move(dir)), source_(std::move(source)), state_(std::make_shared<shared>())
  {
  }

  [[nodiscard]] std::filesystem::path const& directory() const noexcept { return dir_; }

  /**
   * @brief Makes sure `m`'s file is there and open, and that the filler serves its chunks.
   * @return true when the file was written now; false when it was there (an earlier
   *         run's, or prepared already for a model of the same name and sizes).
   * @throws std::runtime_error naming the path when it cannot be created, written or read.
   */
  bool prepare(scenarios::model const& m)
  {
    std::vector<scenarios::weight_chunk> const chunks = m.weight_chunks();
    std::string const stem           = m.name() + "-" + key_text(key_of(m.name(), chunks));
    std::filesystem::path const path = dir_ / (stem + ".bf16");
    if (prepared(path)) { return false; }
    std::size_t total = 0;
    for (scenarios::weight_chunk const& chunk : chunks) {
      total += chunk.bytes;
    }
    int fd            = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    bool const reused = fd >= 0 && size_of(fd) == total;
    if (!reused) {
      if (fd >= 0) { ::close(fd); }
      fd = write_file(path, chunks);
      remove_stale(m.name(), path);
    }
    std::lock_guard const lock(state_->mutex);
    std::size_t const index = state_->files.size();
    state_->files.push_back({path, fd});
    std::uint64_t offset = 0;
    for (scenarios::weight_chunk const& chunk : chunks) {
      state_->places[chunk.salt] = {index, offset, chunk.bytes};
      offset += chunk.bytes;
    }
    return !reused;
  }

  /**
   * @brief The weight_filler that reads the prepared files: each call reads its chunk at
   *        its place (pread); a model's first chunk drops its file from the page cache first.
   *        It throws std::runtime_error for a chunk no prepared file holds, or a short read.
   *        It stays valid after the store is gone.
   */
  [[nodiscard]] scenarios::weight_filler filler() const
  {
    return
      [state = state_](std::span<std::byte> out, std::uint64_t salt) { state->read(out, salt); };
  }

  /// The totals so far.
  [[nodiscard]] read_totals totals() const
  {
    std::lock_guard const lock(state_->mutex);
    return state_->totals;
  }

 private:
  struct open_file {
    std::filesystem::path path;
    int fd{-1};
  };
  struct place {
    std::size_t file{0};
    std::uint64_t offset{0};
    std::size_t bytes{0};
  };

  /// What the fillers share with the store (and keep alive after it).
  struct shared {
    std::mutex mutex;
    std::vector<open_file> files;           // guarded by mutex
    std::map<std::uint64_t, place> places;  // guarded by mutex
    read_totals totals;                     // guarded by mutex

    shared()                         = default;
    shared(shared const&)            = delete;
    shared& operator=(shared const&) = delete;
    ~shared()
    {
      for (open_file const& file : files) {
        ::close(file.fd);
      }
    }

    void read(std::span<std::byte> out, std::uint64_t salt)
    {
      open_file file;
      place at;
      {
        std::lock_guard const lock(mutex);
        auto const found = places.find(salt);
        if (found == places.end() || found->second.bytes != out.size()) {
          throw std::runtime_error("model files: no prepared file holds a chunk of " +
                                   std::to_string(out.size()) + " bytes with salt " +
                                   std::to_string(salt));
        }
        at   = found->second;
        file = files[at.file];
      }
      if (at.offset == 0) { drop_cache(file); }
      auto const start = std::chrono::steady_clock::now();
      read_at(file, out, at.offset);
      double const seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::lock_guard const lock(mutex);
      totals.loads += at.offset == 0 ? 1 : 0;
      totals.bytes += out.size();
      totals.seconds += seconds;
    }
  };

  /// Whether the file at `path` is open already (another model of the same name and sizes
  /// prepared it: another mode's).
  [[nodiscard]] bool prepared(std::filesystem::path const& path) const
  {
    std::lock_guard const lock(state_->mutex);
    return std::any_of(state_->files.begin(), state_->files.end(),
                       [&](open_file const& file) { return file.path == path; });
  }

  /// A std::runtime_error: "<path>: <what>: <errno's message>".
  [[nodiscard]] static std::runtime_error failure(std::filesystem::path const& path,
                                                  std::string const& what)
  {
    return std::runtime_error(path.string() + ": " + what + ": " + std::strerror(errno));
  }

  [[nodiscard]] static std::size_t size_of(int fd)
  {
    struct stat info {};
    return ::fstat(fd, &info) == 0 ? static_cast<std::size_t>(info.st_size) : 0;
  }

  /// Drops `file`'s pages from the page cache (written back first, so they are clean).
  static void drop_cache(open_file const& file)
  {
    if (::fdatasync(file.fd) != 0) { throw failure(file.path, "fdatasync"); }
    int const error = ::posix_fadvise(file.fd, 0, 0, POSIX_FADV_DONTNEED);
    if (error != 0) {
      throw std::runtime_error(file.path.string() + ": posix_fadvise: " + std::strerror(error));
    }
  }

  /// Reads `out.size()` bytes of `file` at `offset`.
  static void read_at(open_file const& file, std::span<std::byte> out, std::uint64_t offset)
  {
    std::size_t done = 0;
    while (done < out.size()) {
      ssize_t const got =
        ::pread(file.fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
      if (got < 0 && errno == EINTR) { continue; }
      if (got < 0) { throw failure(file.path, "read"); }
      if (got == 0) {
        throw std::runtime_error(file.path.string() + ": ends after " +
                                 std::to_string(offset + done) + " bytes, expected at least " +
                                 std::to_string(offset + out.size()));
      }
      done += static_cast<std::size_t>(got);
    }
  }

  /// The file's key: the weights, the model's name, its chunks' salts and sizes.
  [[nodiscard]] std::uint64_t key_of(std::string const& name,
                                     std::vector<scenarios::weight_chunk> const& chunks) const
  {
    std::string const text = source_.description() + '\n' + name;
    std::uint64_t key      = XXH64(text.data(), text.size(), 0);
    for (scenarios::weight_chunk const& chunk : chunks) {
      key = scenarios::mix64(key ^ scenarios::mix64(chunk.salt + chunk.bytes));
    }
    return key;
  }

  [[nodiscard]] static std::string key_text(std::uint64_t key)
  {
    std::array<char, 17> text{};
    std::snprintf(text.data(), text.size(), "%016llx", static_cast<unsigned long long>(key));
    return text.data();
  }

  /// Writes `chunks` (the source's bytes) to `path`, beside it first, then renamed.
  /// @return the file, open for reading.
  [[nodiscard]] int write_file(std::filesystem::path const& path,
                               std::vector<scenarios::weight_chunk> const& chunks) const
  {
    std::filesystem::create_directories(dir_);
    std::filesystem::path const partial =
      path.string() + ".partial-" + std::to_string(static_cast<long>(::getpid()));
    int const fd = ::open(partial.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) { throw failure(partial, "cannot create"); }
    try {
      std::vector<std::byte> buffer;
      for (scenarios::weight_chunk const& chunk : chunks) {
        buffer.resize(chunk.bytes);
        source_.fill(buffer, scenarios::weight_dtype::bf16, chunk.salt);
        write_all(fd, partial, buffer);
      }
      if (::fdatasync(fd) != 0) { throw failure(partial, "fdatasync"); }
      std::filesystem::rename(partial, path);
    } catch (...) {
      ::close(fd);
      std::error_code ignored;
      std::filesystem::remove(partial, ignored);
      throw;
    }
    return fd;
  }

  static void write_all(int fd, std::filesystem::path const& path, std::span<std::byte const> bytes)
  {
    for (std::size_t done = 0; done < bytes.size();) {
      ssize_t const wrote = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (wrote < 0 && errno == EINTR) { continue; }
      if (wrote <= 0) { throw failure(path, "cannot write"); }
      done += static_cast<std::size_t>(wrote);
    }
  }

  /// Removes `name`'s files with another key (an earlier run's sizes or weights). A run
  /// still reading one keeps its open descriptor.
  void remove_stale(std::string const& name, std::filesystem::path const& current) const
  {
    std::error_code error;
    std::string const prefix = name + "-";
    for (std::filesystem::directory_iterator it(dir_, error), end; !error && it != end;
         it.increment(error)) {
      std::string const file = it->path().filename().string();
      bool const ours =
        file.size() == prefix.size() + 16 + 5 && file.starts_with(prefix) &&
        file.ends_with(".bf16") &&
        file.find_first_not_of("0123456789abcdef", prefix.size()) == prefix.size() + 16;
      if (ours && it->path() != current) {
        std::error_code ignored;
        std::filesystem::remove(it->path(), ignored);
      }
    }
  }

  std::filesystem::path dir_;
  scenarios::weight_source source_;
  std::shared_ptr<shared> state_;
};

}  // namespace swapalloc::demo
