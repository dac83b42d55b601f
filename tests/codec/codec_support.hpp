/**
 * @file codec_support.hpp
 * @brief Helpers of the codec tests: encode into a vector, decode into a guarded buffer.
 */
#pragma once

#include <swapalloc/codec.hpp>

#include <cstddef>
#include <exception>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace swapalloc::testing {

/// A chunk as the store keeps it: its header and exactly its stored bytes.
struct encoded_chunk {
  chunk_header header;
  std::vector<std::byte> stored;
};

[[nodiscard]] inline encoded_chunk encode(codec_id wanted, std::span<std::byte const> raw,
                                          codec_scratch& scratch)
{
  std::vector<std::byte> out(max_stored_bytes(raw.size()));
  chunk_header const header = encode_chunk(wanted, raw, out, scratch);
  out.resize(header.stored_bytes);
  return {header, std::move(out)};
}

/// Bytes after `raw_bytes` in the decode buffer: a decoder that writes past its chunk
/// changes them.
inline constexpr std::size_t guard_bytes = 64;
inline constexpr std::byte guard_value{0xA5};

/// Decodes into a buffer of raw_bytes + guard_bytes, checks the guard, returns the chunk.
[[nodiscard]] inline std::vector<std::byte> decode(encoded_chunk const& chunk,
                                                   codec_scratch& scratch)
{
  std::vector<std::byte> out(chunk.header.raw_bytes + guard_bytes, guard_value);
  decode_chunk(chunk.header, chunk.stored, out, scratch);
  for (std::size_t i = chunk.header.raw_bytes; i < out.size(); ++i) {
    EXPECT_EQ(out[i], guard_value) << "decode_chunk wrote byte " << i << " past the chunk";
  }
  out.resize(chunk.header.raw_bytes);
  return out;
}

/// The message of the codec_error `action` throws; fails the test (returning "") when it
/// throws nothing or something else.
template <typename Action>
[[nodiscard]] std::string codec_error_message(Action&& action)
{
  try {
    action();
  } catch (codec_error const& error) {
    return error.what();
  } catch (std::exception const& error) {
    ADD_FAILURE() << "expected codec_error, got another exception: " << error.what();
    return "";
  }
  ADD_FAILURE() << "expected codec_error, nothing was thrown";
  return "";
}

/// Stored / raw as a ratio raw / stored over many chunks.
[[nodiscard]] inline double ratio(std::size_t raw, std::size_t stored)
{
  return static_cast<double>(raw) / static_cast<double>(stored);
}

}  // namespace swapalloc::testing
