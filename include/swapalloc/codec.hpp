/**
 * @file codec.hpp
 * @brief The host tier's chunk codecs (DESIGN §7): encode one chunk of at most
 *        `max_chunk_bytes` raw bytes, decode it bit-exact, and verify its checksum.
 *
 * A chunk is stored as `zero` (all zero bytes, stored as nothing), `raw` (a copy), `lz4`,
 * `shuffle2+lz4` / `shuffle4+lz4` (byte planes of 2- or 4-byte elements, byte_planes.hpp,
 * then LZ4), or the same three with zstd level 1 instead of LZ4 when the build has libzstd
 * (`SWAPALLOC_HAVE_ZSTD`; `codec_available` says). Every chunk is an independent LZ4 block
 * or zstd frame, so a batched GPU decompressor can read the same store later. The
 * `chunk_header` beside each chunk names the codec, the raw and stored lengths and an XXH64
 * of the raw bytes; `decode_chunk` checks the stored bytes against it and verifies the
 * checksum, so corruption is a `codec_error`, never silent data.
 *
 * A compressed chunk is kept only when it gains at least 5% (stored <= 0.95 * raw);
 * otherwise the chunk is stored raw. The compressors write into at most 0.95 * raw bytes,
 * so the stored size never exceeds the raw size: `max_stored_bytes(n) == n`.
 *
 * Costs (one core; bench_codec has the figures): the checksum and the zero test run at
 * memory speed; LZ4 compresses float data at ~0.5-1 GB/s and decompresses at several
 * GB/s; zstd-1 compresses slower and gains more on weights; the byte-plane shuffle adds a
 * pass over the chunk. No allocation except `codec_scratch`'s buffers on their first use.
 *
 * Thread safety: the free functions are reentrant; each thread needs its own
 * `codec_scratch`. The frame functions (`encode_frame`, `decode_frame`) add a 24-byte
 * little-endian header in front of a chunk, for the fuzzer and diagnostics.
 */
#pragma once

#include <swapalloc/byte_planes.hpp>

#include <lz4.h>
#include <xxhash.h>
#if defined(SWAPALLOC_HAVE_ZSTD)
#include <zstd.h>
#include <zstd_errors.h>
#endif

#include <algorithm>
#include <array>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

namespace swapalloc {

/// How a chunk is stored. The values are the on-frame encoding: never renumber.
enum class codec_id : std::uint8_t {
  zero          = 0,
  raw           = 1,
  lz4           = 2,
  shuffle2_lz4  = 3,
  shuffle4_lz4  = 4,
  zstd          = 5,
  shuffle2_zstd = 6,
  shuffle4_zstd = 7,
};

/// Every codec, in the order of their values (tests and benchmarks iterate over it).
inline constexpr std::array<codec_id, 8> all_codecs{
  codec_id::zero,         codec_id::raw,  codec_id::lz4,           codec_id::shuffle2_lz4,
  codec_id::shuffle4_lz4, codec_id::zstd, codec_id::shuffle2_zstd, codec_id::shuffle4_zstd};

/// Raw bytes per chunk, at most: LZ4 takes `int` sizes, and a chunk is the unit a
/// decompression thread restores.
inline constexpr std::size_t max_chunk_bytes = std::size_t{1} << 20;

/// The codec's name: "zero", "raw", "lz4", "shuffle2+lz4", ..., "shuffle4+zstd"; "unknown"
/// for a value outside the enumeration. Thread safety: pure.
[[nodiscard]] inline std::string_view to_string(codec_id codec) noexcept
{
  constexpr std::array<std::string_view, all_codecs.size()> names{
    "zero", "raw", "lz4", "shuffle2+lz4", "shuffle4+lz4", "zstd", "shuffle2+zstd", "shuffle4+zstd"};
  auto const index = static_cast<std::size_t>(codec);
  return index < names.size() ? names[index] : std::string_view{"unknown"};
}

/// The codec named `name` (exactly as `to_string` writes it), or nullopt. Thread safety: pure.
[[nodiscard]] inline std::optional<codec_id> parse_codec(std::string_view name) noexcept
{
  for (codec_id const codec : all_codecs) {
    if (to_string(codec) == name) { return codec; }
  }
  return std::nullopt;
}

/// Whether this build has libzstd (the zstd codecs).
#if defined(SWAPALLOC_HAVE_ZSTD)
inline constexpr bool have_zstd = true;
#else
inline constexpr bool have_zstd = false;
#endif

/// Whether this build can encode and decode `codec`: the zstd codecs only with
/// SWAPALLOC_HAVE_ZSTD; false for a value outside the enumeration. Thread safety: pure.
[[nodiscard]] constexpr bool codec_available(codec_id codec) noexcept
{
  if (static_cast<std::size_t>(codec) >= all_codecs.size()) { return false; }
  bool const zstd =
    codec == codec_id::zstd || codec == codec_id::shuffle2_zstd || codec == codec_id::shuffle4_zstd;
  return !zstd || have_zstd;
}

/// What a pool says its memory holds, when it knows (the codec follows from it).
enum class dtype_hint : std::uint8_t { none, bf16, fp16, fp32, int8 };

/// The hint's name: "none", "bf16", "fp16", "fp32", "int8" ("unknown" outside the
/// enumeration). Thread safety: pure.
[[nodiscard]] inline std::string_view to_string(dtype_hint hint) noexcept
{
  constexpr std::array<std::string_view, 5> names{"none", "bf16", "fp16", "fp32", "int8"};
  auto const index = static_cast<std::size_t>(hint);
  return index < names.size() ? names[index] : std::string_view{"unknown"};
}

/// What the store keeps per chunk.
struct chunk_header {
  codec_id codec{codec_id::raw};
  std::uint32_t raw_bytes{0};     ///< 1 .. max_chunk_bytes
  std::uint32_t stored_bytes{0};  ///< 0 for zero
  std::uint64_t checksum{0};      ///< XXH64 (seed 0) of the raw bytes

  friend bool operator==(chunk_header const&, chunk_header const&) = default;
};

/// Malformed or truncated input, a checksum mismatch, or bad arguments to a codec
/// function. The message names the function, the codec, the sizes and, for a mismatch,
/// the expected and actual checksums.
class codec_error : public std::runtime_error {
 public:
  explicit codec_error(std::string const& message) : std::runtime_error(message) {}
};

/// XXH64 (seed 0) of `bytes`: the checksum a `chunk_header` carries. Memory speed.
/// Thread safety: pure.
[[nodiscard]] inline std::uint64_t checksum(std::span<std::byte const> bytes) noexcept
{
  return XXH64(bytes.data(), bytes.size(), 0);
}

/// Upper bound of the stored bytes of a chunk of `raw_bytes` under any codec, so that
/// callers size output buffers: `raw_bytes` itself, since a chunk that does not gain 5% is
/// stored raw and the compressors are never given more room than that. Thread safety: pure.
[[nodiscard]] constexpr std::size_t max_stored_bytes(std::size_t raw_bytes) noexcept
{
  return raw_bytes;
}

/// Bytes of a frame's header (`encode_frame`): magic, version, codec, lengths, checksum.
inline constexpr std::size_t frame_header_bytes = 24;

/// Upper bound of a frame's size for a chunk of `raw_bytes`. Thread safety: pure.
[[nodiscard]] constexpr std::size_t max_frame_bytes(std::size_t raw_bytes) noexcept
{
  return frame_header_bytes + max_stored_bytes(raw_bytes);
}

/**
 * @brief Per-thread working memory of the codec functions: a chunk-sized buffer for the
 *        byte planes, one for `choose_codec`'s trial output, and zstd's contexts.
 *
 * Each is allocated on first use and reused by every later call, so a worker that keeps
 * its scratch allocates nothing per chunk. Movable, not copyable. Thread safety: none; one
 * per worker thread. The accessors are for the codec functions; they throw
 * `std::bad_alloc` (or `codec_error` for a zstd context zstd cannot create).
 */
class codec_scratch {
 public:
  codec_scratch() = default;

  /// A buffer of `max_chunk_bytes` for byte planes.
  [[nodiscard]] std::span<std::byte> planes() { return buffer(planes_); }
  /// A second buffer of `max_chunk_bytes`, for trial encodings.
  [[nodiscard]] std::span<std::byte> trial() { return buffer(trial_); }

#if defined(SWAPALLOC_HAVE_ZSTD)
  /// The zstd compression context, reused so that zstd's tables are allocated once.
  [[nodiscard]] ZSTD_CCtx* zstd_compressor()
  {
    if (!cctx_) {
      cctx_.reset(ZSTD_createCCtx());
      if (!cctx_) { throw codec_error("codec_scratch: ZSTD_createCCtx failed (out of memory)"); }
    }
    return cctx_.get();
  }
  /// The zstd decompression context.
  [[nodiscard]] ZSTD_DCtx* zstd_decompressor()
  {
    if (!dctx_) {
      dctx_.reset(ZSTD_createDCtx());
      if (!dctx_) { throw codec_error("codec_scratch: ZSTD_createDCtx failed (out of memory)"); }
    }
    return dctx_.get();
  }
#endif

 private:
  static std::span<std::byte> buffer(std::unique_ptr<std::byte[]>& storage)
  {
    // for_overwrite: the buffer is always written before it is read; zeroing 1 MiB would
    // cost as much as shuffling it.
    if (!storage) { storage = std::make_unique_for_overwrite<std::byte[]>(max_chunk_bytes); }
    return {storage.get(), max_chunk_bytes};
  }

  std::unique_ptr<std::byte[]> planes_;
  std::unique_ptr<std::byte[]> trial_;
#if defined(SWAPALLOC_HAVE_ZSTD)
  struct cctx_deleter {
    void operator()(ZSTD_CCtx* context) const noexcept { ZSTD_freeCCtx(context); }
  };
  struct dctx_deleter {
    void operator()(ZSTD_DCtx* context) const noexcept { ZSTD_freeDCtx(context); }
  };
  std::unique_ptr<ZSTD_CCtx, cctx_deleter> cctx_;
  std::unique_ptr<ZSTD_DCtx, dctx_deleter> dctx_;
#endif
};

namespace detail {

/// "0x" and 16 hex digits: checksums in messages.
[[nodiscard]] inline std::string hex64(std::uint64_t value)
{
  std::string text = "0x0000000000000000";
  for (std::size_t i = 0; i < 16; ++i) {
    text[text.size() - 1 - i] = "0123456789abcdef"[(value >> (4 * i)) & 0xF];
  }
  return text;
}

/// The codec's name for messages, with its numeric value when it is not a codec at all.
[[nodiscard]] inline std::string codec_name(codec_id codec)
{
  std::string name(to_string(codec));
  if (name == "unknown") { name += " (" + std::to_string(static_cast<unsigned>(codec)) + ")"; }
  return name;
}

/// Byte-plane width of a codec: 1 (no shuffle), 2 or 4.
[[nodiscard]] constexpr std::size_t plane_width(codec_id codec) noexcept
{
  switch (codec) {
    case codec_id::shuffle2_lz4:
    case codec_id::shuffle2_zstd:
      return 2;
    case codec_id::shuffle4_lz4:
    case codec_id::shuffle4_zstd:
      return 4;
    default:
      return 1;
  }
}

[[nodiscard]] constexpr bool uses_zstd(codec_id codec) noexcept
{
  return codec == codec_id::zstd || codec == codec_id::shuffle2_zstd ||
         codec == codec_id::shuffle4_zstd;
}

/// Whether every byte is zero. memcmp of the span against itself shifted by one byte runs
/// at memcmp's speed and stops at the first difference.
[[nodiscard]] inline bool all_zero(std::span<std::byte const> bytes) noexcept
{
  return bytes.empty() || (bytes[0] == std::byte{0} &&
                           std::memcmp(bytes.data(), bytes.data() + 1, bytes.size() - 1) == 0);
}

inline void split_planes(std::size_t width, std::span<std::byte const> in, std::span<std::byte> out)
{
  if (width == 2) {
    split_byte_planes<2>(in, out);
  } else {
    split_byte_planes<4>(in, out);
  }
}

inline void join_planes(std::size_t width, std::span<std::byte const> in, std::span<std::byte> out)
{
  if (width == 2) {
    join_byte_planes<2>(in, out);
  } else {
    join_byte_planes<4>(in, out);
  }
}

/// Compresses `in` into at most `out.size()` bytes with the codec's entropy stage; returns
/// the compressed size, or 0 when it does not fit (the caller stores the chunk raw).
[[nodiscard]] inline std::size_t compress(codec_id codec, std::span<std::byte const> in,
                                          std::span<std::byte> out, codec_scratch& scratch)
{
  if (!uses_zstd(codec)) {
    // Sizes fit int: in.size() <= max_chunk_bytes, out.size() <= in.size().
    int const written = LZ4_compress_default(
      reinterpret_cast<char const*>(in.data()), reinterpret_cast<char*>(out.data()),
      static_cast<int>(in.size()), static_cast<int>(out.size()));
    return written > 0 ? static_cast<std::size_t>(written) : 0;
  }
#if defined(SWAPALLOC_HAVE_ZSTD)
  std::size_t const written =
    ZSTD_compressCCtx(scratch.zstd_compressor(), out.data(), out.size(), in.data(), in.size(), 1);
  if (ZSTD_isError(written) == 0U) { return written; }
  if (ZSTD_getErrorCode(written) == ZSTD_error_dstSize_tooSmall) { return 0; }
  throw codec_error("encode_chunk: zstd failed on a chunk of " + std::to_string(in.size()) +
                    " bytes: " + ZSTD_getErrorName(written));
#else
  (void)scratch;
  throw codec_error("encode_chunk: " + codec_name(codec) + " needs libzstd (not in this build)");
#endif
}

/// Throws the codec_error of a chunk that does not decode: the message names the codec,
/// the sizes and the `problem`. Built only on failure, so decoding allocates nothing.
[[noreturn]] inline void decode_failure(codec_id codec, std::size_t raw_bytes,
                                        std::size_t stored_bytes, std::string const& problem)
{
  throw codec_error("decode_chunk: " + codec_name(codec) + " chunk of " +
                    std::to_string(raw_bytes) + " raw bytes, " + std::to_string(stored_bytes) +
                    " stored: " + problem);
}

/// Decompresses `in` into exactly `out.size()` bytes, or throws codec_error.
inline void decompress(codec_id codec, std::span<std::byte const> in, std::span<std::byte> out,
                       codec_scratch& scratch)
{
  auto const fail = [&](std::string const& problem) {
    decode_failure(codec, out.size(), in.size(), problem);
  };
  if (!uses_zstd(codec)) {
    if (in.size() > static_cast<std::size_t>(INT_MAX)) { fail("too long"); }
    // LZ4_decompress_safe never reads past `in` nor writes past `out`; a valid block of
    // another length is as wrong as a malformed one.
    int const written = LZ4_decompress_safe(
      reinterpret_cast<char const*>(in.data()), reinterpret_cast<char*>(out.data()),
      static_cast<int>(in.size()), static_cast<int>(out.size()));
    if (written < 0) { fail("malformed LZ4 block"); }
    if (static_cast<std::size_t>(written) != out.size()) {
      fail("the LZ4 block holds " + std::to_string(written) + " bytes");
    }
    return;
  }
#if defined(SWAPALLOC_HAVE_ZSTD)
  // One frame exactly filling `in`, declaring exactly out.size() bytes: trailing bytes,
  // a second frame or a frame of unknown size are malformed here.
  std::size_t const frame = ZSTD_findFrameCompressedSize(in.data(), in.size());
  if (ZSTD_isError(frame) != 0U) {
    fail(std::string("malformed zstd frame (") + ZSTD_getErrorName(frame) + ")");
  }
  if (frame != in.size()) { fail("the zstd frame is " + std::to_string(frame) + " bytes long"); }
  unsigned long long const content = ZSTD_getFrameContentSize(in.data(), in.size());
  if (content != out.size()) {
    fail("the zstd frame does not declare " + std::to_string(out.size()) + " bytes of content");
  }
  std::size_t const written =
    ZSTD_decompressDCtx(scratch.zstd_decompressor(), out.data(), out.size(), in.data(), in.size());
  if (ZSTD_isError(written) != 0U) {
    fail(std::string("malformed zstd frame (") + ZSTD_getErrorName(written) + ")");
  }
  if (written != out.size()) { fail("the zstd frame holds " + std::to_string(written) + " bytes"); }
#else
  (void)scratch;
  fail("needs libzstd (not in this build)");
#endif
}

inline void store_le(std::span<std::byte> out, std::uint64_t value, std::size_t bytes) noexcept
{
  for (std::size_t i = 0; i < bytes; ++i) {
    out[i] = static_cast<std::byte>((value >> (8 * i)) & 0xFF);
  }
}

[[nodiscard]] inline std::uint64_t load_le(std::span<std::byte const> in,
                                           std::size_t bytes) noexcept
{
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < bytes; ++i) {
    value |= std::uint64_t{std::to_integer<std::uint8_t>(in[i])} << (8 * i);
  }
  return value;
}

/// Frame layout (little-endian): magic "SWCK", version, codec, two zero bytes, raw_bytes
/// (u32), stored_bytes (u32), checksum (u64).
inline constexpr std::array<std::byte, 4> frame_magic{std::byte{'S'}, std::byte{'W'},
                                                      std::byte{'C'}, std::byte{'K'}};
inline constexpr std::byte frame_version{1};

}  // namespace detail

/**
 * @brief Encodes one chunk with the codec `wanted` into `out`.
 *
 * Returns the header actually used: `zero` if every byte of `raw` is zero (nothing
 * stored); `raw` (a copy in `out`) if `wanted` is `raw`, or if it would not gain 5%
 * (stored > 0.95 * raw); otherwise `wanted`, its `stored_bytes` bytes at the front of
 * `out`. `wanted == zero` means "zero or raw". The checksum covers the raw bytes.
 *
 * @pre 1 <= raw.size() <= max_chunk_bytes; out.size() >= max_stored_bytes(raw.size());
 *      `raw` and `out` do not overlap.
 * @throws codec_error for an empty or oversized chunk, a too small `out`, or a codec that
 *         is unknown or not available in this build; `std::bad_alloc` if the scratch's
 *         first allocation fails.
 * Thread safety: reentrant with a scratch per thread.
 */
[[nodiscard]] inline chunk_header encode_chunk(codec_id wanted, std::span<std::byte const> raw,
                                               std::span<std::byte> out, codec_scratch& scratch)
{
  if (raw.empty() || raw.size() > max_chunk_bytes) {
    throw codec_error("encode_chunk: a chunk holds 1 to " + std::to_string(max_chunk_bytes) +
                      " raw bytes, got " + std::to_string(raw.size()));
  }
  if (out.size() < max_stored_bytes(raw.size())) {
    throw codec_error("encode_chunk: the output holds " + std::to_string(out.size()) +
                      " bytes; a chunk of " + std::to_string(raw.size()) + " raw bytes needs " +
                      std::to_string(max_stored_bytes(raw.size())));
  }
  if (!codec_available(wanted)) {
    throw codec_error("encode_chunk: codec " + detail::codec_name(wanted) +
                      " is not available in this build");
  }
  chunk_header header{wanted, static_cast<std::uint32_t>(raw.size()), 0, checksum(raw)};
  if (detail::all_zero(raw)) {
    header.codec = codec_id::zero;
    return header;
  }
  if (wanted != codec_id::raw && wanted != codec_id::zero) {
    std::span<std::byte const> input = raw;
    if (std::size_t const width = detail::plane_width(wanted); width > 1) {
      std::span<std::byte> const planes = scratch.planes().first(raw.size());
      detail::split_planes(width, raw, planes);
      input = planes;
    }
    // Room for 0.95 * raw bytes at most: a compressor that needs more fails, and the chunk
    // is stored raw. stored <= floor(19 * raw / 20) <=> stored <= 0.95 * raw.
    std::size_t const room    = raw.size() * 19 / 20;
    std::size_t const written = detail::compress(wanted, input, out.first(room), scratch);
    if (written > 0) {
      header.stored_bytes = static_cast<std::uint32_t>(written);
      return header;
    }
  }
  header.codec        = codec_id::raw;
  header.stored_bytes = header.raw_bytes;
  std::memcpy(out.data(), raw.data(), raw.size());
  return header;
}

/**
 * @brief Decodes the chunk `stored` described by `header` into `out[0, header.raw_bytes)`,
 *        then verifies the checksum.
 *
 * Reads only `stored` and writes only `out[0, header.raw_bytes)` (and the scratch),
 * whatever the input: a malformed, truncated or extended chunk is a `codec_error`.
 *
 * @pre `stored` and `out` do not overlap.
 * @throws codec_error if `header.raw_bytes` is not in 1..max_chunk_bytes, `stored.size()`
 *         differs from `header.stored_bytes` (or from what the codec stores: 0 for zero,
 *         raw_bytes for raw), `out` holds fewer than `header.raw_bytes`, the codec is
 *         unknown or unavailable, the stored bytes do not decode to exactly `raw_bytes`,
 *         or the checksum of the result differs from `header.checksum` (the message gives
 *         both); `out`'s first raw_bytes are then unspecified.
 * Thread safety: reentrant with a scratch per thread.
 */
inline void decode_chunk(chunk_header const& header, std::span<std::byte const> stored,
                         std::span<std::byte> out, codec_scratch& scratch)
{
  auto const fail = [&](std::string const& problem) {
    detail::decode_failure(header.codec, header.raw_bytes, header.stored_bytes, problem);
  };
  if (header.raw_bytes == 0 || header.raw_bytes > max_chunk_bytes) {
    fail("raw bytes must be 1 to " + std::to_string(max_chunk_bytes));
  }
  if (stored.size() != header.stored_bytes) {
    fail("given " + std::to_string(stored.size()) + " stored bytes");
  }
  if (out.size() < header.raw_bytes) {
    fail("the output holds only " + std::to_string(out.size()) + " bytes");
  }
  if (!codec_available(header.codec)) { fail("codec not available in this build"); }
  std::span<std::byte> const target = out.first(header.raw_bytes);
  switch (header.codec) {
    case codec_id::zero:
      if (!stored.empty()) { fail("a zero chunk stores nothing"); }
      std::memset(target.data(), 0, target.size());
      break;
    case codec_id::raw:
      if (stored.size() != target.size()) { fail("a raw chunk stores its raw bytes"); }
      std::memcpy(target.data(), stored.data(), target.size());
      break;
    default:
      if (std::size_t const width = detail::plane_width(header.codec); width > 1) {
        std::span<std::byte> const planes = scratch.planes().first(target.size());
        detail::decompress(header.codec, stored, planes, scratch);
        detail::join_planes(width, planes, target);
      } else {
        detail::decompress(header.codec, stored, target, scratch);
      }
      break;
  }
  if (std::uint64_t const actual = checksum(target); actual != header.checksum) {
    fail("checksum mismatch, expected " + detail::hex64(header.checksum) + ", actual " +
         detail::hex64(actual));
  }
}

/**
 * @brief Encodes `raw` like `encode_chunk` and writes a self-describing frame to `out`:
 *        the 24-byte header (magic "SWCK", version 1, codec, two zero bytes, raw_bytes,
 *        stored_bytes, checksum; little-endian), then the stored bytes.
 * @return the frame's length, frame_header_bytes + stored_bytes.
 * @pre out.size() >= max_frame_bytes(raw.size()).
 * @throws codec_error as `encode_chunk`, or for a too small `out`.
 * Thread safety: reentrant with a scratch per thread.
 */
[[nodiscard]] inline std::size_t encode_frame(codec_id wanted, std::span<std::byte const> raw,
                                              std::span<std::byte> out, codec_scratch& scratch)
{
  if (out.size() < max_frame_bytes(raw.size())) {
    throw codec_error("encode_frame: the output holds " + std::to_string(out.size()) +
                      " bytes; a frame of " + std::to_string(raw.size()) + " raw bytes needs " +
                      std::to_string(max_frame_bytes(raw.size())));
  }
  chunk_header const header = encode_chunk(wanted, raw, out.subspan(frame_header_bytes), scratch);
  std::span<std::byte> const head = out.first(frame_header_bytes);
  std::copy(detail::frame_magic.begin(), detail::frame_magic.end(), head.begin());
  head[4] = detail::frame_version;
  head[5] = static_cast<std::byte>(header.codec);
  head[6] = std::byte{0};
  head[7] = std::byte{0};
  detail::store_le(head.subspan(8), header.raw_bytes, 4);
  detail::store_le(head.subspan(12), header.stored_bytes, 4);
  detail::store_le(head.subspan(16), header.checksum, 8);
  return frame_header_bytes + header.stored_bytes;
}

/**
 * @brief Reads the frame header of `frame` (as `encode_frame` writes it), without
 *        decoding the payload.
 * @throws codec_error for a frame shorter than the header, a wrong magic, version or
 *         reserved byte, or an unknown codec value.
 * Thread safety: pure.
 */
[[nodiscard]] inline chunk_header read_frame_header(std::span<std::byte const> frame)
{
  if (frame.size() < frame_header_bytes) {
    throw codec_error("decode_frame: a frame starts with a " + std::to_string(frame_header_bytes) +
                      "-byte header, got " + std::to_string(frame.size()) + " bytes");
  }
  if (!std::equal(detail::frame_magic.begin(), detail::frame_magic.end(), frame.begin())) {
    throw codec_error("decode_frame: bad magic (expected \"SWCK\")");
  }
  if (frame[4] != detail::frame_version) {
    throw codec_error("decode_frame: version " +
                      std::to_string(std::to_integer<unsigned>(frame[4])) + ", expected " +
                      std::to_string(std::to_integer<unsigned>(detail::frame_version)));
  }
  auto const codec = static_cast<codec_id>(frame[5]);
  if (to_string(codec) == "unknown") {
    throw codec_error("decode_frame: unknown codec " +
                      std::to_string(std::to_integer<unsigned>(frame[5])));
  }
  if (frame[6] != std::byte{0} || frame[7] != std::byte{0}) {
    throw codec_error("decode_frame: reserved header bytes 6 and 7 must be zero");
  }
  return {codec, static_cast<std::uint32_t>(detail::load_le(frame.subspan(8), 4)),
          static_cast<std::uint32_t>(detail::load_le(frame.subspan(12), 4)),
          detail::load_le(frame.subspan(16), 8)};
}

/**
 * @brief Decodes a frame written by `encode_frame` into `out[0, raw_bytes)`.
 * @return the raw bytes written.
 * @throws codec_error for anything malformed: a short frame, bad magic, version or
 *         reserved bytes, an unknown or unavailable codec, raw_bytes 0 or above
 *         max_chunk_bytes, a stored length other than the bytes after the header, an
 *         `out` smaller than raw_bytes, a payload that does not decode, or a checksum
 *         mismatch. Never reads outside `frame` nor writes outside `out[0, raw_bytes)`.
 * Thread safety: reentrant with a scratch per thread.
 */
[[nodiscard]] inline std::size_t decode_frame(std::span<std::byte const> frame,
                                              std::span<std::byte> out, codec_scratch& scratch)
{
  chunk_header const header                = read_frame_header(frame);
  std::span<std::byte const> const payload = frame.subspan(frame_header_bytes);
  if (payload.size() != header.stored_bytes) {
    throw codec_error("decode_frame: the header says " + std::to_string(header.stored_bytes) +
                      " stored bytes, the frame has " + std::to_string(payload.size()) +
                      " after its header");
  }
  decode_chunk(header, payload, out, scratch);
  return header.raw_bytes;
}

/**
 * @brief Chooses a pool's codec.
 *
 * With a hint: bf16 and fp16 -> shuffle2+lz4, fp32 -> shuffle4+lz4, int8 -> lz4. Without
 * one (`dtype_hint::none`): encodes every sample (cut into chunks of at most
 * max_chunk_bytes; empty samples are skipped) with each LZ4-family codec (lz4,
 * shuffle2+lz4, shuffle4+lz4) and keeps the one with the fewest stored bytes in total,
 * counting chunks as `encode_chunk` stores them (zero and raw fallbacks included); ties go
 * to the simpler codec, in that order. If no candidate stores at most 95% of the sampled
 * bytes (or there are none), the answer is raw.
 *
 * Costs: three LZ4 compressions of the samples (sample a few chunks, not the pool).
 * @throws codec_error for a hint outside the enumeration; std::bad_alloc from the scratch.
 * Thread safety: reentrant with a scratch per thread.
 */
[[nodiscard]] inline codec_id choose_codec(dtype_hint hint,
                                           std::span<std::span<std::byte const> const> samples,
                                           codec_scratch& scratch)
{
  switch (hint) {
    case dtype_hint::bf16:
    case dtype_hint::fp16:
      return codec_id::shuffle2_lz4;
    case dtype_hint::fp32:
      return codec_id::shuffle4_lz4;
    case dtype_hint::int8:
      return codec_id::lz4;
    case dtype_hint::none:
      break;
    default:
      throw codec_error("choose_codec: unknown dtype hint " +
                        std::to_string(static_cast<unsigned>(hint)) +
                        " (accepted: none, bf16, fp16, fp32, int8)");
  }
  constexpr std::array<codec_id, 3> candidates{codec_id::lz4, codec_id::shuffle2_lz4,
                                               codec_id::shuffle4_lz4};
  std::size_t sampled = 0;
  for (std::span<std::byte const> const sample : samples) {
    sampled += sample.size();
  }
  codec_id best                    = codec_id::raw;
  std::size_t best_stored          = sampled;
  std::span<std::byte> const trial = scratch.trial();
  for (codec_id const candidate : candidates) {
    std::size_t stored = 0;
    for (std::span<std::byte const> const sample : samples) {
      for (std::size_t offset = 0; offset < sample.size(); offset += max_chunk_bytes) {
        std::span<std::byte const> const chunk =
          sample.subspan(offset, std::min(max_chunk_bytes, sample.size() - offset));
        stored += encode_chunk(candidate, chunk, trial, scratch).stored_bytes;
      }
    }
    if (stored < best_stored) {
      best        = candidate;
      best_stored = stored;
    }
  }
  // Gains under 5% over all samples: not worth a codec. stored <= 0.95 * sampled.
  if (best_stored * 20 > sampled * 19 || sampled == 0) { return codec_id::raw; }
  return best;
}

}  // namespace swapalloc
