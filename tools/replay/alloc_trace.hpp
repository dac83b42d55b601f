/**
 * @file alloc_trace.hpp
 * @brief Allocation traces (tests/data/traces/README.md): load (`trace`), replay (`replay`).
 *
 * `trace(path)` reads a file: its events in order, and its peak live bytes (the maximum over
 * the trace of the requested bytes of live allocations). Line 1: `# swapalloc allocation
 * trace v1`; `#` and blank lines are skipped; the others are `a <id> <bytes> <stream>` or
 * `f <id>` (single spaces, decimal numbers), allocation ids 0, 1, 2, ... in order.
 * Errors: std::runtime_error naming the file, the line number and the line, for a file that
 * cannot be read, a missing v1 line, a malformed line, an allocation id out of sequence
 * (reused or skipped), and a free of an unknown id or of one no longer live. Thread safety: a
 * `trace` is immutable once loaded; its queries may run concurrently.
 */
#pragma once

#include <swapalloc/allocator.hpp>

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace swapalloc::replay {

enum class event_kind : std::uint8_t { alloc, free };

/// One line of a trace. A free carries its allocation's `bytes` and `stream`.
struct event {
  event_kind kind;
  std::uint32_t id;      ///< the allocation's id: 0, 1, 2, ... in allocation order
  std::size_t bytes;     ///< as requested
  std::uint32_t stream;  ///< a stream index; `replay` maps it to a CUstream
};

/// A loaded trace. See the file comment.
class trace {
 public:
  /// Reads the trace file at `path`. @throws std::runtime_error (see the file comment).
  explicit trace(std::string const& path)
  {
    std::ifstream in(path);
    if (!in) { throw std::runtime_error(path + ": cannot open the trace file"); }
    std::vector<event> allocated;  // by id; kind free once freed
    std::size_t live_bytes = 0, number = 0;
    std::string line;
    auto const fail = [&](std::string const& why) {
      throw std::runtime_error(path + ":" + std::to_string(number) + ": " + why + ": '" + line +
                               "'");
    };
    auto const field = [&](std::string_view& rest, auto& value) {  // the next number
      std::size_t const length = std::min(rest.find(' '), rest.size());
      auto const [end, error]  = std::from_chars(rest.data(), rest.data() + length, value);
      if (length == 0 || error != std::errc{} || end != rest.data() + length) {
        fail("expected a decimal number, not '" + std::string(rest.substr(0, length)) + "'");
      }
      rest.remove_prefix(std::min(length + 1, rest.size()));
    };
    while (std::getline(in, line)) {
      ++number;
      if (!line.empty() && line.back() == '\r') { line.pop_back(); }
      if (number == 1 && line != "# swapalloc allocation trace v1") { fail("not a v1 trace"); }
      if (line.empty() || line.front() == '#') { continue; }
      if (line.size() < 3 || (line[0] != 'a' && line[0] != 'f') || line[1] != ' ') {
        fail("expected 'a <id> <bytes> <stream>' or 'f <id>'");
      }
      std::string_view rest = std::string_view(line).substr(2);
      event e{event_kind::alloc, 0, 0, 0};
      field(rest, e.id);
      if (line[0] == 'a') {
        field(rest, e.bytes);
        field(rest, e.stream);
        if (e.id != allocated.size()) {
          fail(std::string(e.id < allocated.size() ? "reused" : "skipped") + " id: expected " +
               std::to_string(allocated.size()));
        }
        allocated.push_back(e);
        live_bytes += e.bytes;
        peak_live_bytes_ = std::max(peak_live_bytes_, live_bytes);
      } else {
        if (e.id >= allocated.size()) { fail("free of an unknown id"); }
        if (allocated[e.id].kind == event_kind::free) { fail("free of an id no longer live"); }
        allocated[e.id].kind = event_kind::free;
        e                    = allocated[e.id];
        live_bytes -= e.bytes;
      }
      if (!rest.empty() || line.back() == ' ') { fail("unexpected text after the last field"); }
      events_.push_back(e);
    }
    if (in.bad() || number == 0) { fail(number == 0 ? "empty file" : "read error"); }
    allocations_ = allocated.size();
  }

  [[nodiscard]] std::vector<event> const& events() const noexcept { return events_; }
  [[nodiscard]] std::size_t allocations() const noexcept { return allocations_; }
  [[nodiscard]] std::size_t peak_live_bytes() const noexcept { return peak_live_bytes_; }

 private:
  std::vector<event> events_;
  std::size_t allocations_{0};
  std::size_t peak_live_bytes_{0};
};

/**
 * @brief Performs `recorded`'s events in order on `target` and `device`, in the calling
 *        thread's current pool; stream index i runs on `streams[i % streams.size()]` (on the
 *        legacy stream, nullptr, if `streams` is empty). Frees what the trace leaves live,
 *        also when a call throws (out_of_memory, usage_error, cuda_error: then rethrown).
 * @return the pool's `peak_reserved_bytes` on `device` afterwards: the replay's own peak on
 *         a fresh allocator, else the peak since the pool's creation. Thread safety: the
 *         allocator's; concurrent replays into one pool share its peak.
 */
inline std::size_t replay(allocator& target, trace const& recorded, int device,
                          std::span<CUstream const> streams)
{
  std::vector<CUdeviceptr> live(recorded.allocations(), 0);  // by id; 0: not live
  auto const perform = [&](event const& e) {
    CUstream const stream = streams.empty() ? nullptr : streams[e.stream % streams.size()];
    if (e.kind == event_kind::alloc) {
      live[e.id] = target.allocate(e.bytes, device, stream);
    } else {
      target.deallocate(std::exchange(live[e.id], 0), e.bytes, device, stream);
    }
  };
  auto const free_live = [&] {
    for (event const& e : recorded.events()) {
      if (live[e.id] != 0) { perform({event_kind::free, e.id, e.bytes, e.stream}); }
    }
  };
  try {
    std::ranges::for_each(recorded.events(), perform);
  } catch (...) {
    try {
      free_live();
    } catch (...) {  // NOLINT(bugprone-empty-catch): the first error is the one to report
    }
    throw;
  }
  free_live();
  return target.stats(target.current_pool(), device).peak_reserved_bytes;
}

}  // namespace swapalloc::replay
