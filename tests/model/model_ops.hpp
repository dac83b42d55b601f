/**
 * @file model_ops.hpp
 * @brief The operation alphabet of the model-based test of the swap tier, and its two
 *        sources: a seeded PRNG (the CTest runs) and a byte string (the fuzzer).
 *
 * Contract:
 * - An `op` names *what* to do with abstract arguments (a pool slot, a block pick, a size,
 *   stream slots, the faults to arm); `model_runner` resolves them against its state
 *   (modulo the pools and live blocks it has), so any sequence of ops is valid and a
 *   sequence with ops removed is still valid: that is what lets the shrinker drop ops.
 * - `random_ops(seed)` yields the same ops for the same seed on every platform (it uses
 *   std::mt19937_64 raw outputs only, never a std:: distribution, whose algorithms differ
 *   between standard libraries).
 * - `byte_ops(bytes)` decodes `op_bytes` bytes per op; every byte string decodes to a
 *   sequence (a short tail is ignored).
 * - `to_string(op)` is the printable form, one line, shown for the last ops of a failure.
 *
 * Faults are part of the alphabet: an op may carry one or two `fault_spec`s, each "the
 * nth call from now of entry point E fails" (cudasimFailCall), armed for the op's
 * allocator call only (model_faults.hpp).
 *
 * Thread safety: sources are single-threaded values; everything else is pure.
 */
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>

namespace swapalloc::testing::model {

/// What an op does. The comments give the runner's resolution of the arguments.
enum class op_kind : std::uint8_t {
  allocate,          ///< `size` bytes in pool slot `pool` on stream slot `stream`, written
  free,              ///< a live block (`pick`) of pool slot `pool` (else of any pool)
  write,             ///< new bytes into a touchable block of a writable pool
  verify,            ///< compares every touchable block of pool slot `pool`
  record_stream,     ///< record_stream(block, stream `other`), then a memset on that stream
  stream_reuse,      ///< allocate on A, record_stream B, memsets on B, free, re-allocate on A
  evict_full,        ///< evict(pool) (the next pool with live blocks)
  evict_partial,     ///< evict(pool, 0, `size` % 8 + 1 pages) (idem)
  restore,           ///< restore(pool, 0, stream `stream`) (the next evicted pool), verify it
  empty_cache_all,   ///< empty_cache()
  empty_cache_pool,  ///< empty_cache(pool)
  toggle_read_only,  ///< set_read_only(pool, !read_only)
  destroy_evicted,   ///< evict, free every block while evicted, destroy, create a new pool
  checkpoint,        ///< restore every pool (no faults) and compare every live block
};
inline constexpr std::size_t op_kind_count = 14;

[[nodiscard]] constexpr char const* to_string(op_kind kind) noexcept
{
  constexpr std::array<char const*, op_kind_count> names{"allocate",
                                                         "free",
                                                         "write",
                                                         "verify",
                                                         "record_stream",
                                                         "stream_reuse",
                                                         "evict_full",
                                                         "evict_partial",
                                                         "restore",
                                                         "empty_cache_all",
                                                         "empty_cache_pool",
                                                         "toggle_read_only",
                                                         "destroy_evicted",
                                                         "checkpoint"};
  auto const index = static_cast<std::size_t>(kind);
  return index < names.size() ? names[index] : "unknown";
}

/// The driver entry points a fault may be injected into: those the allocator calls on
/// its allocation, eviction, restore and cache paths. (The test's own calls use
/// cuMemcpyHtoD, cuMemcpyDtoH and cuMemsetD32Async, none of which is here.)
inline constexpr std::array<char const*, 19> fault_entries{
  "cuMemCreate",      "cuMemMap",          "cuMemSetAccess",     "cuMemUnmap",
  "cuMemRelease",     "cuMemcpyDtoHAsync", "cuMemcpyHtoDAsync",  "cuMemsetD8Async",
  "cuEventRecord",    "cuEventQuery",      "cuEventSynchronize", "cuStreamSynchronize",
  "cuCtxSynchronize", "cuStreamWaitEvent", "cuMemHostAlloc",     "cuEventCreate",
  "cuStreamCreate",   "cuMemHostRegister", "cuMemHostUnregister"};

/// The index of entry point `name` in fault_entries (a compile error if absent).
[[nodiscard]] consteval std::uint8_t entry_index(std::string_view name)
{
  for (std::size_t i = 0; i < fault_entries.size(); ++i) {
    if (name == fault_entries[i]) { return static_cast<std::uint8_t>(i); }
  }
  throw "not an entry point of fault_entries";
}

/// The entry points an op of each kind reaches (random_ops aims most faults at them), and
/// those that rollbacks call (half the second faults hit one: a failure while undoing).
namespace entries {
inline constexpr std::array<std::uint8_t, 8> allocate{
  entry_index("cuMemCreate"),      entry_index("cuMemMap"),     entry_index("cuMemSetAccess"),
  entry_index("cuMemRelease"),     entry_index("cuEventQuery"), entry_index("cuEventSynchronize"),
  entry_index("cuCtxSynchronize"), entry_index("cuMemUnmap")};
inline constexpr std::array<std::uint8_t, 3> free{
  entry_index("cuEventCreate"), entry_index("cuEventRecord"), entry_index("cuEventQuery")};
inline constexpr std::array<std::uint8_t, 11> evict{
  entry_index("cuCtxSynchronize"),  entry_index("cuEventSynchronize"),
  entry_index("cuMemcpyDtoHAsync"), entry_index("cuEventRecord"),
  entry_index("cuEventQuery"),      entry_index("cuMemUnmap"),
  entry_index("cuMemHostAlloc"),    entry_index("cuStreamCreate"),
  entry_index("cuEventCreate"),     entry_index("cuStreamSynchronize"),
  entry_index("cuMemHostRegister")};
inline constexpr std::array<std::uint8_t, 12> restore{
  entry_index("cuMemCreate"),       entry_index("cuMemMap"),
  entry_index("cuMemSetAccess"),    entry_index("cuMemcpyHtoDAsync"),
  entry_index("cuMemsetD8Async"),   entry_index("cuEventRecord"),
  entry_index("cuEventQuery"),      entry_index("cuEventSynchronize"),
  entry_index("cuStreamWaitEvent"), entry_index("cuStreamSynchronize"),
  entry_index("cuMemUnmap"),        entry_index("cuMemRelease")};
inline constexpr std::array<std::uint8_t, 4> empty_cache{
  entry_index("cuEventSynchronize"), entry_index("cuCtxSynchronize"), entry_index("cuMemUnmap"),
  entry_index("cuMemHostUnregister")};
inline constexpr std::array<std::uint8_t, 4> rollback{
  entry_index("cuMemUnmap"), entry_index("cuStreamSynchronize"), entry_index("cuEventSynchronize"),
  entry_index("cuMemRelease")};
}  // namespace entries

/// "Call `nth` (1 = the next) of fault_entries[entry] fails"; nth 0: no fault.
struct fault_spec {
  std::uint8_t entry{0};
  std::uint8_t nth{0};
  [[nodiscard]] bool armed() const noexcept { return nth != 0; }
};

/// Ways a content is made (model_shadow.hpp renders them).
inline constexpr std::size_t content_kind_count = 4;

struct op {
  op_kind kind{op_kind::verify};
  std::uint8_t pool{0};    ///< pool slot (modulo the runner's pools)
  std::uint8_t stream{0};  ///< stream slot: 0 the legacy stream, else a runner stream
  std::uint8_t other{0};   ///< second stream slot; for destroy_evicted: the new pool's options
  std::uint8_t data{0};    ///< content kind (modulo content_kind_count)
  std::uint32_t pick{0};   ///< which live block (modulo the candidates)
  std::uint32_t size{0};   ///< bytes to allocate; pages for evict_partial
  std::array<fault_spec, 2> faults{};

  [[nodiscard]] bool faulty() const noexcept { return faults[0].armed() || faults[1].armed(); }
};

/// One line: "allocate pool=1 stream=2 size=12345 data=0 faults=cuMemMap#2".
[[nodiscard]] inline std::string to_string(op const& o)
{
  std::string text = to_string(o.kind);
  text += " pool=" + std::to_string(o.pool) + " stream=" + std::to_string(o.stream) +
          " other=" + std::to_string(o.other) + " data=" + std::to_string(o.data) +
          " pick=" + std::to_string(o.pick) + " size=" + std::to_string(o.size);
  for (fault_spec const& fault : o.faults) {
    if (!fault.armed()) { continue; }
    text += " fault=";
    text += fault_entries[fault.entry % fault_entries.size()];
    // Appended apart: at -O3 GCC 12 takes `"#" + std::string&&` (an insert at 0) for an
    // overlapping memcpy of 2^63 bytes, a false -Wrestrict.
    text += '#';
    text += std::to_string(fault.nth);
  }
  return text;
}

/// Relative weights of the op kinds in random_ops (checkpoints come from the session).
struct op_weights {
  std::array<std::uint32_t, op_kind_count> weight{
    30,  // allocate
    24,  // free
    6,   // write
    3,   // verify
    3,   // record_stream
    3,   // stream_reuse
    4,   // evict_full
    3,   // evict_partial
    6,   // restore
    2,   // empty_cache_all
    2,   // empty_cache_pool
    2,   // toggle_read_only
    1,   // destroy_evicted
    0,   // checkpoint
  };
  std::uint32_t fault_percent{3};          ///< ops of kinds that call the driver, with faults
  std::uint32_t double_fault_percent{25};  ///< of those, with two faults
};

/// Ops from a seed. See the file comment.
class random_ops {
 public:
  explicit random_ops(std::uint64_t seed, op_weights weights = {})
    : engine_(seed), weights_(weights)
  {
    for (std::uint32_t const w : weights_.weight) {
      total_ += w;
    }
  }

  [[nodiscard]] op next()
  {
    op o;
    o.kind   = pick_kind();
    o.pool   = static_cast<std::uint8_t>(below(256));
    o.stream = static_cast<std::uint8_t>(below(256));
    o.other  = static_cast<std::uint8_t>(below(256));
    o.data   = static_cast<std::uint8_t>(below(content_kind_count));
    o.pick   = static_cast<std::uint32_t>(engine_());
    o.size =
      o.kind == op_kind::evict_partial ? static_cast<std::uint32_t>(below(8)) : random_size();
    if (calls_driver(o.kind) && below(100) < weights_.fault_percent) {
      o.faults[0] = random_fault(entries_of(o.kind));
      if (below(100) < weights_.double_fault_percent) {
        // Half the second faults hit what a rollback calls: a failure while undoing one.
        o.faults[1] =
          below(2) == 0 ? random_fault(entries::rollback) : random_fault(entries_of(o.kind));
      }
    }
    return o;
  }

  /// The entry points an op of `kind` reaches (indices into fault_entries).
  [[nodiscard]] static std::span<std::uint8_t const> entries_of(op_kind kind) noexcept
  {
    switch (kind) {
      case op_kind::allocate:
        return entries::allocate;
      case op_kind::free:
      case op_kind::stream_reuse:
        return entries::free;
      case op_kind::evict_full:
      case op_kind::evict_partial:
      case op_kind::destroy_evicted:
        return entries::evict;
      case op_kind::restore:
        return entries::restore;
      case op_kind::empty_cache_all:
      case op_kind::empty_cache_pool:
        return entries::empty_cache;
      default:
        return {};
    }
  }

  /// Whether an op of `kind` makes allocator calls that reach the driver.
  [[nodiscard]] static constexpr bool calls_driver(op_kind kind) noexcept
  {
    return kind != op_kind::write && kind != op_kind::verify && kind != op_kind::record_stream &&
           kind != op_kind::toggle_read_only && kind != op_kind::checkpoint;
  }

 private:
  [[nodiscard]] std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : engine_() % n; }

  [[nodiscard]] op_kind pick_kind()
  {
    std::uint64_t roll = below(total_);
    for (std::size_t k = 0; k < op_kind_count; ++k) {
      if (roll < weights_.weight[k]) { return static_cast<op_kind>(k); }
      roll -= weights_.weight[k];
    }
    return op_kind::verify;
  }

  /// 512 B to 5.5 MiB, most of them small: 46% up to 4 KiB, 30% up to 64 KiB, 15% up to
  /// 1 MiB (PyTorch's small/large boundary), 9% large, a third of those at sizes that end
  /// just past a 2 MiB page. Odd sizes, so that tails shorter than a word are checked too.
  [[nodiscard]] std::uint32_t random_size()
  {
    constexpr std::uint32_t KiB = 1024;
    constexpr std::uint32_t MiB = 1024 * KiB;
    std::uint64_t const roll    = below(100);
    auto const between          = [&](std::uint32_t low, std::uint32_t high) {
      return low + static_cast<std::uint32_t>(below(high - low + 1));
    };
    if (roll < 46) { return between(512, 4 * KiB); }
    if (roll < 76) { return between(4 * KiB, 64 * KiB); }
    if (roll < 91) { return between(64 * KiB, MiB); }
    if (roll < 94) {  // around one and two pages: blocks that end just past a boundary
      std::uint64_t const page_end = (1 + below(2)) * 2 * MiB;
      return static_cast<std::uint32_t>(page_end - std::uint64_t{4} * KiB +
                                        below(std::uint64_t{8} * KiB));
    }
    return between(MiB + 1, 5 * MiB + MiB / 2);
  }

  /// A fault on one of `likely` (four times in five) or on any entry point; the first or
  /// second call half the time, else one of the first eight.
  [[nodiscard]] fault_spec random_fault(std::span<std::uint8_t const> likely)
  {
    std::uint8_t const entry = !likely.empty() && below(5) != 0
                                 ? likely[below(likely.size())]
                                 : static_cast<std::uint8_t>(below(fault_entries.size()));
    std::uint8_t const nth   = static_cast<std::uint8_t>(1 + (below(2) == 0 ? below(2) : below(8)));
    return fault_spec{entry, nth};
  }

  std::mt19937_64 engine_;
  op_weights weights_;
  std::uint64_t total_{0};
};

/// Bytes per op in byte_ops.
inline constexpr std::size_t op_bytes = 10;

/// Ops decoded from a byte string (the fuzzer's input). See the file comment.
///   byte 0 kind, 1 pool, 2 stream (low nibble) and other (high nibble), 3 data,
///   4-5 pick, 6-7 size (top two bits: 512 B-4 KiB, -64 KiB, -1 MiB, -5.5 MiB; for
///   evict_partial the pages, modulo 8),
///   8 and 9 faults (0 or above 136: none; else entry (b-1)/8, nth (b-1)%8+1).
class byte_ops {
 public:
  explicit byte_ops(std::span<std::uint8_t const> bytes) : bytes_(bytes) {}

  /// The next op, or false at the end of the input.
  [[nodiscard]] bool next(op& out)
  {
    if (bytes_.size() - at_ < op_bytes) { return false; }
    std::uint8_t const* b = bytes_.data() + at_;
    at_ += op_bytes;
    out           = op{};
    out.kind      = static_cast<op_kind>(b[0] % op_kind_count);
    out.pool      = b[1];
    out.stream    = static_cast<std::uint8_t>(b[2] & 0x0F);
    out.other     = static_cast<std::uint8_t>(b[2] >> 4);
    out.data      = b[3];
    out.pick      = static_cast<std::uint32_t>(b[4] | (b[5] << 8));
    auto const s  = static_cast<std::uint32_t>(b[6] | (b[7] << 8));
    out.size      = out.kind == op_kind::evict_partial ? s % 8 : decode_size(s);
    out.faults[0] = decode_fault(b[8]);
    out.faults[1] = decode_fault(b[9]);
    return true;
  }

  /// The bytes that decode to `o`, up to the encoding's resolution: stream and other
  /// modulo 16, pick modulo 2^16, a size to within 1/16384 of its range.
  [[nodiscard]] static std::array<std::uint8_t, op_bytes> encode(op const& o)
  {
    std::array<std::uint8_t, op_bytes> b{};
    b[0]                  = static_cast<std::uint8_t>(o.kind);
    b[1]                  = o.pool;
    b[2]                  = static_cast<std::uint8_t>((o.stream & 0x0F) | ((o.other & 0x0F) << 4));
    b[3]                  = o.data;
    b[4]                  = static_cast<std::uint8_t>(o.pick);
    b[5]                  = static_cast<std::uint8_t>(o.pick >> 8);
    std::uint32_t const s = o.kind == op_kind::evict_partial ? o.size % 8 : encode_size(o.size);
    b[6]                  = static_cast<std::uint8_t>(s);
    b[7]                  = static_cast<std::uint8_t>(s >> 8);
    for (std::size_t f = 0; f < 2; ++f) {
      b[8 + f] = o.faults[f].armed()
                   ? static_cast<std::uint8_t>(1 + (o.faults[f].entry % fault_entries.size()) * 8 +
                                               (o.faults[f].nth - 1) % 8)
                   : 0;
    }
    return b;
  }

 private:
  static constexpr std::array<std::uint32_t, 5> size_bounds{512, 4096, 65536, 1U << 20,
                                                            (5U << 20) + (1U << 19)};

  [[nodiscard]] static std::uint32_t decode_size(std::uint32_t s) noexcept
  {
    std::uint32_t const range = s >> 14;
    std::uint32_t const low   = size_bounds[range];
    std::uint32_t const span  = size_bounds[range + 1] - low;
    return low + static_cast<std::uint32_t>((std::uint64_t{s & 0x3FFF} * span) >> 14);
  }

  [[nodiscard]] static std::uint32_t encode_size(std::uint32_t size) noexcept
  {
    std::uint32_t range = 0;
    while (range + 2 < size_bounds.size() && size >= size_bounds[range + 1]) {
      ++range;
    }
    std::uint32_t const low  = size_bounds[range];
    std::uint32_t const span = size_bounds[range + 1] - low;
    std::uint64_t const frac = size > low ? (std::uint64_t{size - low} << 14) / span : 0;
    return (range << 14) | static_cast<std::uint32_t>(frac > 0x3FFF ? 0x3FFF : frac);
  }

  [[nodiscard]] static fault_spec decode_fault(std::uint8_t b) noexcept
  {
    if (b == 0 || b > fault_entries.size() * 8) { return {}; }
    return fault_spec{static_cast<std::uint8_t>((b - 1) / 8),
                      static_cast<std::uint8_t>((b - 1) % 8 + 1)};
  }

  std::span<std::uint8_t const> bytes_;
  std::size_t at_{0};
};

}  // namespace swapalloc::testing::model
