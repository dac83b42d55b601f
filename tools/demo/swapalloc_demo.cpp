/**
 * @file swapalloc_demo.cpp
 * @brief The README's main job until the allocator exists: one evict/restore cycle by hand.
 *
 * It walks the path an evicted pool will take (DESIGN §4): reserve a virtual range, back it
 * with physical pages, fill it, copy it out to pinned host memory, unmap and release the pages
 * (the device memory goes back), then create and map new pages at the *same* addresses, copy
 * the bytes back and verify them bit for bit. Every step goes through swapalloc::driver, so
 * the one binary runs on a GPU (libcuda.so.1) and on the simulator
 * (SWAPALLOC_CUDA_DRIVER=build/lib/libcudasim.so).
 *
 * Exit status: 0 round trip verified; 1 a CUDA call failed or the data differ; 2 no usable
 * driver; 64 bad command line.
 */
#include <swapalloc/driver.hpp>

#include <cudasim.h>  // only for the census type; the function is looked up with dlsym
#include <dlfcn.h>
#include <xxhash.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

using swapalloc::driver;

constexpr int exit_failure         = 1;
constexpr int exit_no_driver       = 2;
constexpr int exit_usage           = 64;  // EX_USAGE from sysexits.h
constexpr std::size_t default_size = std::size_t{64} << 20;

// ---- Command line -------------------------------------------------------------------------

struct options {
  std::size_t size = default_size;  ///< bytes to round-trip, rounded up to whole pages
  std::size_t page = 0;             ///< bytes per physical page; 0: the allocation granularity
  int device       = 0;
};

constexpr char const* usage_text =
  "usage: swapalloc_demo [--size=BYTES] [--page=BYTES] [--device=N]\n"
  "  --size=BYTES  buffer to evict and restore (default 64M); a positive number with an\n"
  "                optional K, M, G or T suffix (powers of 1024); rounded up to whole pages\n"
  "  --page=BYTES  bytes per physical page (default: the device's allocation granularity,\n"
  "                2 MiB on current GPUs); a multiple of that granularity\n"
  "  --device=N    device ordinal (default 0)\n"
  "The driver is libcuda.so.1, or the library named by SWAPALLOC_CUDA_DRIVER\n"
  "(build/lib/libcudasim.so is the simulator).\n";

/// A command-line mistake: the message names the option, the value and what is accepted.
struct usage_error {
  std::string message;
};

/// Parses "64M"-style byte counts: digits, then optionally one of K, M, G, T (powers of 1024).
std::optional<std::size_t> parse_bytes(std::string_view text)
{
  std::size_t value       = 0;
  auto const* first       = text.data();
  auto const* last        = first + text.size();
  auto const [end, error] = std::from_chars(first, last, value);
  if (error != std::errc{} || end == first) { return std::nullopt; }
  unsigned shift = 0;
  if (end != last) {
    constexpr std::string_view suffixes = "KMGT";  // shifts of 10, 20, 30, 40 bits
    auto const upper    = static_cast<char>(std::toupper(static_cast<unsigned char>(*end)));
    auto const position = suffixes.find(upper);
    if (end + 1 != last || position == std::string_view::npos) { return std::nullopt; }
    shift = 10 * static_cast<unsigned>(position + 1);
  }
  if (value == 0 || value > (SIZE_MAX >> shift)) { return std::nullopt; }
  return value << shift;
}

options parse_options(int argc, char** argv)
{
  options result;
  for (int i = 1; i < argc; ++i) {
    std::string_view const argument = argv[i];
    auto const equals               = argument.find('=');
    std::string_view const name     = argument.substr(0, equals);
    std::string_view const value =
      equals == std::string_view::npos ? std::string_view{} : argument.substr(equals + 1);
    auto const bad = [&](char const* accepted) {
      return usage_error{std::string(name) + "='" + std::string(value) + "': expected " + accepted};
    };
    if (name == "--help" || name == "-h") {
      std::fputs(usage_text, stdout);
      std::exit(0);
    } else if (name == "--size" || name == "--page") {
      auto const bytes = parse_bytes(value);
      if (!bytes) {
        throw bad("a positive byte count with an optional K, M, G or T suffix, e.g. 64M");
      }
      (name == "--size" ? result.size : result.page) = *bytes;
    } else if (name == "--device") {
      auto const* end   = value.data() + value.size();
      auto const parsed = std::from_chars(value.data(), end, result.device);
      if (value.empty() || parsed.ec != std::errc{} || parsed.ptr != end || result.device < 0) {
        throw bad("a device ordinal, 0 or more");
      }
    } else {
      throw usage_error{"unknown option '" + std::string(argument) + "'"};
    }
  }
  return result;
}

// ---- Formatting and timing ----------------------------------------------------------------

/// "64 MiB", "1.50 GiB", "512 KiB", "100 B": binary units, whole numbers when exact.
std::string format_bytes(double bytes)
{
  static constexpr char const* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  std::size_t unit                     = 0;
  while (bytes >= 1024.0 && unit + 1 < std::size(units)) {
    bytes /= 1024.0;
    ++unit;
  }
  char text[32];
  bool const whole = bytes == static_cast<double>(static_cast<std::uint64_t>(bytes));
  std::snprintf(text, sizeof(text), whole ? "%.0f %s" : "%.2f %s", bytes, units[unit]);
  return text;
}

/// "+64 MiB" / "-64 MiB": the change of a free-memory reading.
std::string format_delta(std::size_t before, std::size_t after)
{
  return after >= before ? "+" + format_bytes(static_cast<double>(after - before))
                         : "-" + format_bytes(static_cast<double>(before - after));
}

/// "12.34 ms, 5.06 GiB/s".
std::string format_rate(std::size_t bytes, double milliseconds)
{
  char text[64];
  double const seconds = std::max(milliseconds, 1e-6) / 1e3;
  std::snprintf(text, sizeof(text), "%.2f ms, %.2f GiB/s", milliseconds,
                static_cast<double>(bytes) / seconds / (1u << 30));
  return text;
}

/// Runs `work` and returns how long it took in milliseconds.
template <class Work>
double time_ms(Work&& work)
{
  auto const start = std::chrono::steady_clock::now();
  std::forward<Work>(work)();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
    .count();
}

/// Cleanup in destructors must not throw: a failure there is reported and the rest goes on.
template <class Cleanup>
void best_effort(char const* what, Cleanup&& cleanup) noexcept
{
  try {
    std::forward<Cleanup>(cleanup)();
  } catch (std::exception const& error) {
    std::fprintf(stderr, "swapalloc_demo: cleanup (%s) failed: %s\n", what, error.what());
  }
}

// ---- The data: a recognizable, position-dependent pattern ---------------------------------

/// Word i holds a tag in its high half and its own index below, so a hex dump shows at once
/// which word landed where (a page mapped at the wrong place shows up as a wrong index).
constexpr std::uint64_t pattern_word(std::uint64_t index) noexcept
{
  return (std::uint64_t{0x5A7A110C} << 32) ^ index;
}

void fill_pattern(void* buffer, std::size_t bytes) noexcept
{
  auto* words = static_cast<std::uint64_t*>(buffer);
  for (std::size_t i = 0; i < bytes / sizeof(std::uint64_t); ++i) {
    words[i] = pattern_word(i);
  }
}

struct comparison {
  std::size_t differing_words = 0;
  std::size_t first_offset    = 0;
  std::uint64_t expected      = 0;
  std::uint64_t found         = 0;
};

comparison compare_with_pattern(void const* buffer, std::size_t bytes) noexcept
{
  comparison result;
  auto const* words = static_cast<std::uint64_t const*>(buffer);
  for (std::size_t i = 0; i < bytes / sizeof(std::uint64_t); ++i) {
    if (words[i] == pattern_word(i)) { continue; }
    if (result.differing_words++ == 0) {
      result.first_offset = i * sizeof(std::uint64_t);
      result.expected     = pattern_word(i);
      result.found        = words[i];
    }
  }
  return result;
}

std::string checksum_text(void const* buffer, std::size_t bytes)
{
  return "xxh3 " + swapalloc::hex(XXH3_64bits(buffer, bytes));
}

// ---- Driver objects with owners -----------------------------------------------------------
// Each one releases what it holds even when a step throws, so a failing run leaves nothing
// behind either (the simulator's strict mode checks that at exit).

/// The device's primary context, retained and made current for the whole run.
class primary_context {
 public:
  primary_context(driver const& cuda, CUdevice device) : cuda_(cuda), device_(device)
  {
    cuda_.set_current_context(cuda_.retain_primary_context(device_));
  }
  primary_context(primary_context const&)            = delete;
  primary_context& operator=(primary_context const&) = delete;
  ~primary_context()
  {
    best_effort("cuCtxSetCurrent", [&] { cuda_.set_current_context(nullptr); });
    best_effort("cuDevicePrimaryCtxRelease", [&] { cuda_.release_primary_context(device_); });
  }

 private:
  driver const& cuda_;
  CUdevice device_;
};

/// Page-locked host memory: the only kind a copy engine reads and writes at link speed.
class pinned_buffer {
 public:
  pinned_buffer(driver const& cuda, std::size_t bytes)
    : cuda_(cuda), data_(cuda.host_alloc(bytes)), bytes_(bytes)
  {
  }
  pinned_buffer(pinned_buffer const&)            = delete;
  pinned_buffer& operator=(pinned_buffer const&) = delete;
  ~pinned_buffer()
  {
    best_effort("cuMemFreeHost", [&] { cuda_.host_free(data_); });
  }
  [[nodiscard]] void* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return bytes_; }

 private:
  driver const& cuda_;
  void* data_;
  std::size_t bytes_;
};

class stream {
 public:
  explicit stream(driver const& cuda) : cuda_(cuda), handle_(cuda.stream_create()) {}
  stream(stream const&)            = delete;
  stream& operator=(stream const&) = delete;
  ~stream()
  {
    best_effort("cuStreamDestroy", [&] { cuda_.stream_destroy(handle_); });
  }
  [[nodiscard]] CUstream get() const noexcept { return handle_; }

 private:
  driver const& cuda_;
  CUstream handle_;
};

/// A reserved virtual address range: the addresses that survive eviction.
class address_range {
 public:
  address_range(driver const& cuda, std::size_t bytes, std::size_t alignment)
    : cuda_(cuda), base_(cuda.address_reserve(bytes, alignment)), bytes_(bytes)
  {
  }
  address_range(address_range const&)            = delete;
  address_range& operator=(address_range const&) = delete;
  ~address_range()
  {
    best_effort("cuMemAddressFree", [&] { cuda_.address_free(base_, bytes_); });
  }
  [[nodiscard]] CUdeviceptr base() const noexcept { return base_; }

 private:
  driver const& cuda_;
  CUdeviceptr base_;
  std::size_t bytes_;
};

/// The physical pages behind an address range, one cuMemCreate handle per page, each mapped
/// at its own place. `unmap_all` is the eviction half (the memory goes back to the device),
/// `map_all` the restore half; the addresses never change.
class page_set {
 public:
  struct timings {
    double create_ms = 0, map_ms = 0, access_ms = 0;
  };

  page_set(driver const& cuda, CUdevice device, CUdeviceptr base, std::size_t page_bytes,
           std::size_t count)
    : cuda_(cuda), device_(device), base_(base), page_bytes_(page_bytes), pages_(count)
  {
  }
  page_set(page_set const&)            = delete;
  page_set& operator=(page_set const&) = delete;
  ~page_set()
  {
    best_effort("unmap and release pages", [&] { unmap_all(); });
  }

  /// Creates every page, maps it at its address, then grants the device read-write access
  /// to the whole range in one call (a fresh mapping has no access until cuMemSetAccess).
  timings map_all()
  {
    timings spent;
    for (std::size_t i = 0; i < pages_.size(); ++i) {
      spent.create_ms +=
        time_ms([&] { pages_[i].handle = cuda_.mem_create(page_bytes_, device_); });
      spent.map_ms += time_ms([&] {
        cuda_.mem_map(address(i), page_bytes_, pages_[i].handle);
        pages_[i].mapped = true;
      });
    }
    spent.access_ms = time_ms([&] { cuda_.mem_set_access(base_, bytes(), device_); });
    return spent;
  }

  /// Unmaps and releases every page it holds, whatever state a failed map_all left behind.
  void unmap_all()
  {
    for (std::size_t i = 0; i < pages_.size(); ++i) {
      if (pages_[i].mapped) {
        cuda_.mem_unmap(address(i), page_bytes_);
        pages_[i].mapped = false;
      }
      if (pages_[i].handle != 0) {
        cuda_.mem_release(pages_[i].handle);
        pages_[i].handle = 0;
      }
    }
  }

  [[nodiscard]] std::size_t bytes() const noexcept { return page_bytes_ * pages_.size(); }

 private:
  struct page {
    CUmemGenericAllocationHandle handle = 0;
    bool mapped                         = false;
  };
  [[nodiscard]] CUdeviceptr address(std::size_t index) const noexcept
  {
    return base_ + index * page_bytes_;
  }

  driver const& cuda_;
  CUdevice device_;
  CUdeviceptr base_;
  std::size_t page_bytes_;
  std::vector<page> pages_;
};

// ---- The demo -----------------------------------------------------------------------------

void print_driver(driver const& cuda)
{
  // dladdr turns "libcuda.so.1" into the file the dynamic loader actually picked.
  Dl_info info{};
  auto* const symbol = reinterpret_cast<void*>(cuda.table().cuInit);
  std::string const file =
    ::dladdr(symbol, &info) != 0 && info.dli_fname != nullptr ? info.dli_fname : cuda.library();
  bool const simulated = cuda.find_symbol("cudasimGetCensus") != nullptr;
  int version          = 0;
  cuda.check(cuda.table().cuDriverGetVersion(&version), "cuDriverGetVersion",
             [] { return std::string(); });
  std::printf("driver     %s%s (%s, CUDA %d.%d)\n", cuda.library().c_str(),
              file == cuda.library() ? "" : (" -> " + file).c_str(),
              simulated ? "the cudasim simulator" : "a real CUDA driver", version / 1000,
              version % 1000 / 10);
}

/// The simulator's own count of what is still held: all zeros after a clean run.
void print_census(driver const& cuda)
{
  auto* const census_of =
    reinterpret_cast<decltype(&cudasimGetCensus)>(cuda.find_symbol("cudasimGetCensus"));
  if (census_of == nullptr) { return; }
  cudasim_census census{};
  census_of(&census);
  std::printf(
    "simulator  still held: %zu handles, %zu reservations, %zu mappings, %zu host "
    "allocations, %zu streams, %zu events\n",
    census.handles, census.reservations, census.mappings, census.host_allocations, census.streams,
    census.events);
}

struct outcome {
  std::size_t bytes;  ///< bytes round-tripped (the requested size rounded up to whole pages)
  bool exact;         ///< whether they came back bit for bit
};

/// One evict/restore cycle. Everything it acquires is released by the time it returns.
/// One long function on purpose: it reads as the numbered steps it prints (issue 11
/// replaces this demo with the seeds' pipelines).
// NOLINTNEXTLINE(readability-function-size)
outcome run(driver const& cuda, options const& opts)
{
  int const count = cuda.device_count();
  if (opts.device >= count) {
    throw usage_error{"--device=" + std::to_string(opts.device) + ": expected an ordinal below " +
                      std::to_string(count) + " (the driver sees " + std::to_string(count) +
                      " device" + (count == 1 ? "" : "s") + ")"};
  }
  CUdevice const device = cuda.device(opts.device);
  primary_context const context(cuda, device);

  std::size_t const granularity = cuda.allocation_granularity(device);
  std::size_t const page        = opts.page == 0 ? granularity : opts.page;
  if (page % granularity != 0) {
    throw usage_error{"--page=" + std::to_string(opts.page) +
                      ": expected a multiple of the allocation granularity, " +
                      format_bytes(static_cast<double>(granularity))};
  }
  std::size_t const pages = (opts.size + page - 1) / page;
  std::size_t const bytes = pages * page;

  auto const initial = cuda.mem_get_info();
  std::printf("device %-3d %s, %s total, %s free, allocation granularity %s\n", opts.device,
              cuda.device_name(device).c_str(),
              format_bytes(static_cast<double>(initial.total)).c_str(),
              format_bytes(static_cast<double>(initial.free)).c_str(),
              format_bytes(static_cast<double>(granularity)).c_str());
  if (bytes > initial.free) {
    throw usage_error{"--size=" + std::to_string(opts.size) + ": the device has only " +
                      format_bytes(static_cast<double>(initial.free)) + " free"};
  }
  std::printf("buffer     %s = %zu pages of %s%s\n\n",
              format_bytes(static_cast<double>(bytes)).c_str(), pages,
              format_bytes(static_cast<double>(page)).c_str(),
              bytes == opts.size ? "" : " (rounded up to whole pages)");

  stream const copies(cuda);
  pinned_buffer const staging(cuda, bytes);  // the pattern going in, the read-back coming out
  pinned_buffer const backup(cuda, bytes);   // the evicted copy: what a host store would hold

  address_range const range(cuda, bytes, page);
  std::printf("[1] reserve  %s of address space at %s\n",
              format_bytes(static_cast<double>(bytes)).c_str(),
              swapalloc::hex(range.base()).c_str());

  page_set device_pages(cuda, device, range.base(), page, pages);
  auto const mapped    = device_pages.map_all();
  auto const after_map = cuda.mem_get_info();
  std::printf(
    "[2] map      %zu pages: create %.2f ms, map %.2f ms, set access %.2f ms; free %s (%s)\n",
    pages, mapped.create_ms, mapped.map_ms, mapped.access_ms,
    format_bytes(static_cast<double>(after_map.free)).c_str(),
    format_delta(initial.free, after_map.free).c_str());

  fill_pattern(staging.data(), bytes);
  std::string const original = checksum_text(staging.data(), bytes);
  double const fill_ms       = time_ms([&] {
    cuda.memcpy_htod_async(range.base(), staging.data(), bytes, copies.get());
    cuda.stream_synchronize(copies.get());
  });
  std::printf("[3] fill     pattern host -> device: %s (%s)\n", format_rate(bytes, fill_ms).c_str(),
              original.c_str());

  // Evict: copy out, and only once the copy is complete unmap and release (DESIGN §4).
  double const out_ms     = time_ms([&] {
    cuda.memcpy_dtoh_async(backup.data(), range.base(), bytes, copies.get());
    cuda.stream_synchronize(copies.get());
  });
  double const release_ms = time_ms([&] { device_pages.unmap_all(); });
  auto const evicted      = cuda.mem_get_info();
  std::printf(
    "[4] evict    copy out device -> pinned host: %s\n"
    "             unmap + release %zu pages: %.2f ms; free %s (%s)\n",
    format_rate(bytes, out_ms).c_str(), pages, release_ms,
    format_bytes(static_cast<double>(evicted.free)).c_str(),
    format_delta(after_map.free, evicted.free).c_str());

  // Restore: fresh physical pages at the same virtual addresses, then copy back.
  auto const remapped = device_pages.map_all();
  double const in_ms  = time_ms([&] {
    cuda.memcpy_htod_async(range.base(), backup.data(), bytes, copies.get());
    cuda.stream_synchronize(copies.get());
  });
  auto const restored = cuda.mem_get_info();
  std::printf(
    "[5] restore  create + map + set access %zu pages at %s (same address): %.2f ms\n"
    "             copy in pinned host -> device: %s; free %s (%s)\n",
    pages, swapalloc::hex(range.base()).c_str(),
    remapped.create_ms + remapped.map_ms + remapped.access_ms, format_rate(bytes, in_ms).c_str(),
    format_bytes(static_cast<double>(restored.free)).c_str(),
    format_delta(evicted.free, restored.free).c_str());

  // Verify: poison the host side so a copy that did nothing cannot pass, read back, compare.
  std::memset(staging.data(), 0, bytes);
  double const back_ms = time_ms([&] { cuda.memcpy_dtoh(staging.data(), range.base(), bytes); });
  std::string const final_sum = checksum_text(staging.data(), bytes);
  comparison const diff       = compare_with_pattern(staging.data(), bytes);
  bool const exact            = diff.differing_words == 0 && final_sum == original;
  std::printf("[6] verify   copy back device -> host: %s (%s): %s\n",
              format_rate(bytes, back_ms).c_str(), final_sum.c_str(),
              exact ? "bit-exact" : "MISMATCH");
  if (!exact) {
    std::fprintf(stderr,
                 "swapalloc_demo: verification failed: %zu of %zu words differ; first at offset "
                 "%zu: expected %s, found %s\n",
                 diff.differing_words, bytes / sizeof(std::uint64_t), diff.first_offset,
                 swapalloc::hex(diff.expected).c_str(), swapalloc::hex(diff.found).c_str());
  }

  return {bytes, exact};  // the owners above unmap, release and free everything
}

}  // namespace

int main(int argc, char** argv)
{
  // Line-buffered even into a pipe or a CI log, so each step shows when it happens and in
  // order with the simulator's messages on stderr.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    options const opts = parse_options(argc, argv);
    std::printf(
      "swapalloc_demo: evict a device buffer to pinned host memory and restore it at "
      "the same address\n");
    driver const cuda;
    print_driver(cuda);
    outcome const result = run(cuda, opts);
    std::printf("[7] free     pages, address range, pinned buffers, stream, context\n");
    print_census(cuda);
    if (!result.exact) { return exit_failure; }
    std::printf("round trip verified: %s evicted and restored at the same address, bit-exact\n",
                format_bytes(static_cast<double>(result.bytes)).c_str());
    return 0;
  } catch (usage_error const& error) {
    std::fprintf(stderr, "swapalloc_demo: %s\n%s", error.message.c_str(), usage_text);
    return exit_usage;
  } catch (swapalloc::driver_unavailable const& error) {
    std::fprintf(stderr, "swapalloc_demo: %s\n", error.what());
    return exit_no_driver;
  } catch (swapalloc::cuda_error const& error) {
    std::fprintf(stderr, "swapalloc_demo: %s\n", error.what());
    return exit_failure;
  } catch (std::exception const& error) {
    std::fprintf(stderr, "swapalloc_demo: %s\n", error.what());
    return exit_failure;
  }
}
