// Tests of include/swapalloc/codec.hpp's failures (suites CodecErrors*): corrupted,
// truncated or extended chunks and frames, wrong sizes and bad arguments are codec_errors
// whose messages say what is wrong; nothing is written past the chunk.
#include <swapalloc/codec.hpp>

#include "codec_support.hpp"
#include "data_kinds.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace swapalloc::testing {
namespace {

using ::testing::HasSubstr;

constexpr std::size_t chunk_size = 64 * 1024 + 3;

/// The codecs that compress (a chunk of `kind` under them is not stored raw).
std::vector<codec_id> compressing_codecs()
{
  std::vector<codec_id> codecs;
  for (codec_id const codec : all_codecs) {
    if (codec != codec_id::zero && codec != codec_id::raw && codec_available(codec)) {
      codecs.push_back(codec);
    }
  }
  return codecs;
}

/// A chunk of ReLU activations stored with `codec` (checked to be stored that way): half
/// zeros, so every compressing codec keeps it, and half |N(0, 1)|, so a changed literal
/// changes the data.
encoded_chunk stored_with(codec_id codec, codec_scratch& scratch)
{
  std::vector<std::byte> const raw = make_data(data_kind::bf16_activations, chunk_size, 77);
  encoded_chunk chunk              = encode(codec, raw, scratch);
  EXPECT_EQ(chunk.header.codec, codec) << "activations are expected to compress";
  return chunk;
}

/// Decodes `chunk` into a guarded buffer; returns the codec_error's message.
std::string decode_error(encoded_chunk const& chunk, codec_scratch& scratch)
{
  std::vector<std::byte> out(std::size_t{chunk.header.raw_bytes} + guard_bytes, guard_value);
  std::string message =
    codec_error_message([&] { decode_chunk(chunk.header, chunk.stored, out, scratch); });
  for (std::size_t i = chunk.header.raw_bytes; i < out.size(); ++i) {
    EXPECT_EQ(out[i], guard_value) << "byte " << i << " past the chunk was written";
  }
  return message;
}

TEST(CodecErrors, FlippedRawByteIsAChecksumMismatch)
{
  codec_scratch scratch;
  std::vector<std::byte> const raw = make_data(data_kind::random_bytes, chunk_size, 1);
  encoded_chunk const good         = encode(codec_id::raw, raw, scratch);
  ASSERT_EQ(good.header.codec, codec_id::raw);
  for (std::size_t const at : {std::size_t{0}, chunk_size / 2, chunk_size - 1}) {
    encoded_chunk bad = good;
    bad.stored[at] ^= std::byte{0x10};
    std::string const message = decode_error(bad, scratch);
    EXPECT_THAT(message, HasSubstr("checksum mismatch"));
    EXPECT_THAT(message, HasSubstr("expected " + swapalloc::detail::hex64(good.header.checksum)));
    EXPECT_THAT(message, HasSubstr("raw"));
  }
}

// A flipped byte of a compressed chunk either is caught (mostly as a checksum mismatch: a
// changed literal; sometimes as a malformed block) or changes nothing (a match offset
// moved to an identical run of zeros decodes to the same bytes). Never a crash, never
// silently different data.
TEST(CodecErrors, FlippedCompressedByteIsCaughtOrHarmless)
{
  codec_scratch scratch;
  std::vector<std::byte> const raw = make_data(data_kind::bf16_activations, chunk_size, 77);
  for (codec_id const codec : compressing_codecs()) {
    SCOPED_TRACE(std::string(to_string(codec)));
    encoded_chunk const good        = stored_with(codec, scratch);
    std::size_t checksum_mismatches = 0;
    std::size_t harmless            = 0;
    std::size_t const step          = good.stored.size() / 211 + 1;
    for (std::size_t at = 0; at < good.stored.size(); at += step) {
      encoded_chunk bad = good;
      bad.stored[at] ^= std::byte{0x01};
      std::vector<std::byte> out(raw.size() + guard_bytes, guard_value);
      try {
        decode_chunk(bad.header, bad.stored, out, scratch);
        EXPECT_TRUE(std::equal(raw.begin(), raw.end(), out.begin()))
          << "byte " << at << " decoded to different data without an error";
        ++harmless;
      } catch (codec_error const& error) {
        std::string const message = error.what();
        EXPECT_THAT(message, HasSubstr(std::string(to_string(codec)) + " chunk of "));
        if (message.find("checksum mismatch") != std::string::npos) { ++checksum_mismatches; }
      }
      for (std::size_t i = raw.size(); i < out.size(); ++i) {
        ASSERT_EQ(out[i], guard_value) << "byte " << at << ": wrote past the chunk";
      }
    }
    EXPECT_GT(checksum_mismatches, 0U) << "no flip reached the checksum";
    EXPECT_LT(harmless, 20U) << "most flips must change the data";
  }
}

TEST(CodecErrors, WrongChecksumInTheHeaderIsNamed)
{
  codec_scratch scratch;
  std::vector<codec_id> codecs = compressing_codecs();
  codecs.push_back(codec_id::raw);
  for (codec_id const codec : codecs) {
    encoded_chunk bad = codec == codec_id::raw
                          ? encode(codec, make_data(data_kind::random_bytes, 100, 2), scratch)
                          : stored_with(codec, scratch);
    bad.header.checksum ^= 1;
    std::string const message = decode_error(bad, scratch);
    EXPECT_THAT(message, HasSubstr("checksum mismatch, expected " +
                                   swapalloc::detail::hex64(bad.header.checksum) + ", actual " +
                                   swapalloc::detail::hex64(bad.header.checksum ^ 1)))
      << to_string(codec);
  }
  encoded_chunk zero = encode(codec_id::lz4, std::vector<std::byte>(4096), scratch);
  ASSERT_EQ(zero.header.codec, codec_id::zero);
  zero.header.checksum ^= 1;
  EXPECT_THAT(decode_error(zero, scratch), HasSubstr("checksum mismatch"));
}

TEST(CodecErrors, TruncatedOrExtendedStoredBytes)
{
  codec_scratch scratch;
  std::vector<codec_id> codecs = compressing_codecs();
  codecs.push_back(codec_id::raw);
  for (codec_id const codec : codecs) {
    SCOPED_TRACE(std::string(to_string(codec)));
    encoded_chunk const good =
      codec == codec_id::raw ? encode(codec, make_data(data_kind::random_bytes, 4099, 3), scratch)
                             : stored_with(codec, scratch);
    for (std::size_t const cut : {std::size_t{1}, std::size_t{7}, good.stored.size() / 2}) {
      encoded_chunk shorter = good;
      shorter.stored.resize(good.stored.size() - cut);
      // Stored bytes shorter than the header says: caught before decoding.
      EXPECT_THAT(decode_error(shorter, scratch), HasSubstr("given"));
      // Header agrees with the shorter bytes: the decoder itself must notice.
      shorter.header.stored_bytes = static_cast<std::uint32_t>(shorter.stored.size());
      EXPECT_FALSE(decode_error(shorter, scratch).empty()) << "cut " << cut;
    }
    for (std::size_t const extra : {std::size_t{1}, std::size_t{16}}) {
      encoded_chunk longer = good;
      longer.stored.resize(good.stored.size() + extra, std::byte{0x5A});
      EXPECT_THAT(decode_error(longer, scratch), HasSubstr("given"));
      longer.header.stored_bytes = static_cast<std::uint32_t>(longer.stored.size());
      EXPECT_FALSE(decode_error(longer, scratch).empty()) << "extra " << extra;
    }
  }
  encoded_chunk zero = encode(codec_id::lz4, std::vector<std::byte>(64), scratch);
  zero.stored.push_back(std::byte{0});
  zero.header.stored_bytes = 1;
  EXPECT_THAT(decode_error(zero, scratch), HasSubstr("a zero chunk stores nothing"));
}

TEST(CodecErrors, WrongRawLengthInTheHeader)
{
  codec_scratch scratch;
  for (codec_id const codec : compressing_codecs()) {
    encoded_chunk const good = stored_with(codec, scratch);
    for (std::int64_t const delta : {-1, 1}) {
      encoded_chunk bad    = good;
      bad.header.raw_bytes = static_cast<std::uint32_t>(good.header.raw_bytes + delta);
      EXPECT_FALSE(decode_error(bad, scratch).empty()) << to_string(codec) << " " << delta;
    }
  }
  encoded_chunk bad    = encode(codec_id::raw, make_data(data_kind::random_bytes, 10, 1), scratch);
  bad.header.raw_bytes = 0;
  EXPECT_THAT(decode_error(bad, scratch), HasSubstr("raw bytes must be 1 to 1048576"));
  bad.header.raw_bytes = max_chunk_bytes + 1;
  EXPECT_THAT(codec_error_message([&] {
                std::vector<std::byte> out(max_chunk_bytes + 1);
                decode_chunk(bad.header, bad.stored, out, scratch);
              }),
              HasSubstr("raw bytes must be 1 to 1048576"));
}

TEST(CodecErrors, CodecSwappedInTheHeader)
{
  codec_scratch scratch;
  for (codec_id const codec : compressing_codecs()) {
    encoded_chunk const good = stored_with(codec, scratch);
    for (codec_id const other : all_codecs) {
      if (other == codec) { continue; }
      encoded_chunk bad = good;
      bad.header.codec  = other;
      EXPECT_FALSE(decode_error(bad, scratch).empty())
        << to_string(codec) << " as " << to_string(other);
    }
    encoded_chunk unknown = good;
    unknown.header.codec  = static_cast<codec_id>(200);
    EXPECT_THAT(decode_error(unknown, scratch), HasSubstr("unknown (200)"));
  }
}

TEST(CodecErrors, OutputTooSmall)
{
  codec_scratch scratch;
  std::vector<std::byte> const raw = make_data(data_kind::bf16_weights, 4096, 4);
  std::vector<std::byte> small(4095);
  EXPECT_THAT(codec_error_message([&] { (void)encode_chunk(codec_id::lz4, raw, small, scratch); }),
              HasSubstr("needs 4096"));
  encoded_chunk const chunk = encode(codec_id::shuffle2_lz4, raw, scratch);
  EXPECT_THAT(
    codec_error_message([&] { decode_chunk(chunk.header, chunk.stored, small, scratch); }),
    HasSubstr("holds only 4095"));
  std::vector<std::byte> frame(max_frame_bytes(raw.size()) - 1);
  EXPECT_THAT(codec_error_message([&] { (void)encode_frame(codec_id::lz4, raw, frame, scratch); }),
              HasSubstr("needs " + std::to_string(max_frame_bytes(4096))));
}

TEST(CodecErrors, BadEncodeArguments)
{
  codec_scratch scratch;
  std::vector<std::byte> out(max_chunk_bytes + 1);
  std::vector<std::byte> const empty;
  std::vector<std::byte> const oversized(max_chunk_bytes + 1, std::byte{1});
  EXPECT_THAT(codec_error_message([&] { (void)encode_chunk(codec_id::lz4, empty, out, scratch); }),
              HasSubstr("1 to 1048576 raw bytes, got 0"));
  EXPECT_THAT(
    codec_error_message([&] { (void)encode_chunk(codec_id::lz4, oversized, out, scratch); }),
    HasSubstr("got 1048577"));
  std::vector<std::byte> const raw(16, std::byte{3});
  EXPECT_THAT(
    codec_error_message([&] { (void)encode_chunk(static_cast<codec_id>(8), raw, out, scratch); }),
    HasSubstr("codec unknown (8) is not available"));
#if !defined(SWAPALLOC_HAVE_ZSTD)
  EXPECT_THAT(codec_error_message([&] { (void)encode_chunk(codec_id::zstd, raw, out, scratch); }),
              HasSubstr("zstd is not available"));
#endif
}

// --- Frames ---------------------------------------------------------------------------------

std::vector<std::byte> frame_of(codec_id codec, std::vector<std::byte> const& raw,
                                codec_scratch& scratch)
{
  std::vector<std::byte> frame(max_frame_bytes(raw.size()));
  frame.resize(encode_frame(codec, raw, frame, scratch));
  return frame;
}

// Every byte of the 24-byte header, changed in any of three ways, makes the frame invalid:
// nothing in the header is redundant or ignored.
TEST(CodecErrorsFrame, EveryHeaderByteIsChecked)
{
  codec_scratch scratch;
  std::vector<codec_id> codecs = compressing_codecs();
  codecs.push_back(codec_id::raw);
  codecs.push_back(codec_id::zero);
  for (codec_id const codec : codecs) {
    std::vector<std::byte> const raw  = codec == codec_id::zero ? std::vector<std::byte>(chunk_size)
                                        : codec == codec_id::raw
                                          ? make_data(data_kind::random_bytes, chunk_size, 8)
                                          : make_data(data_kind::bf16_activations, chunk_size, 8);
    std::vector<std::byte> const good = frame_of(codec, raw, scratch);
    ASSERT_EQ(static_cast<codec_id>(good[5]), codec);
    std::vector<std::byte> out(max_chunk_bytes);
    ASSERT_EQ(decode_frame(good, out, scratch), chunk_size);
    for (std::size_t at = 0; at < frame_header_bytes; ++at) {
      for (std::byte const flip : {std::byte{0x01}, std::byte{0x80}, std::byte{0xFF}}) {
        std::vector<std::byte> bad = good;
        bad[at] ^= flip;
        EXPECT_FALSE(codec_error_message([&] { (void)decode_frame(bad, out, scratch); }).empty())
          << to_string(codec) << ": header byte " << at << " ^ " << std::to_integer<int>(flip);
      }
    }
  }
}

TEST(CodecErrorsFrame, MessagesNameTheField)
{
  codec_scratch scratch;
  std::vector<std::byte> const raw  = make_data(data_kind::bf16_weights, 4096, 9);
  std::vector<std::byte> const good = frame_of(codec_id::shuffle2_lz4, raw, scratch);
  std::vector<std::byte> out(4096);
  auto const error_after = [&](auto&& change) {
    std::vector<std::byte> bad = good;
    change(bad);
    return codec_error_message([&] { (void)decode_frame(bad, out, scratch); });
  };
  EXPECT_THAT(error_after([](auto& f) { f[0] = std::byte{'X'}; }), HasSubstr("bad magic"));
  EXPECT_THAT(error_after([](auto& f) { f[4] = std::byte{2}; }),
              HasSubstr("version 2, expected 1"));
  EXPECT_THAT(error_after([](auto& f) { f[5] = std::byte{9}; }), HasSubstr("unknown codec 9"));
  EXPECT_THAT(error_after([](auto& f) { f[7] = std::byte{1}; }), HasSubstr("reserved"));
  EXPECT_THAT(error_after([](auto& f) { f[10] = std::byte{0x20}; }),
              HasSubstr("raw bytes must be"));
  EXPECT_THAT(error_after([](auto& f) {
                f[8] = std::byte{0};
                f[9] = std::byte{0};
              }),
              HasSubstr("raw bytes must be"));
  EXPECT_THAT(error_after([](auto& f) { f[12] ^= std::byte{1}; }), HasSubstr("after its header"));
  EXPECT_THAT(error_after([](auto& f) { f[20] ^= std::byte{1}; }), HasSubstr("checksum mismatch"));
  EXPECT_THAT(error_after([](auto& f) { f.pop_back(); }), HasSubstr("after its header"));
  EXPECT_THAT(error_after([](auto& f) { f.push_back(std::byte{0}); }),
              HasSubstr("after its header"));
  EXPECT_THAT(error_after([](auto& f) { f.resize(frame_header_bytes - 1); }),
              HasSubstr("24-byte header, got 23"));
  std::vector<std::byte> small(4095);
  EXPECT_THAT(codec_error_message([&] { (void)decode_frame(good, small, scratch); }),
              HasSubstr("holds only 4095"));
}

}  // namespace
}  // namespace swapalloc::testing
