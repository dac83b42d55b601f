// The codec's fuzz harness (libFuzzer's entry point; codec_fuzz_replay.cpp drives it
// without libFuzzer). Each input is
//   1. decoded as a frame: anything malformed must be a codec_error, never a crash, a read
//      outside the input or a write outside the chunk (the output buffer is exactly the
//      frame's declared raw size, so AddressSanitizer sees a write past it);
//   2. round-tripped as raw data through encode_frame/decode_frame with the codec its
//      first byte picks: the result must equal the input, or the harness traps.
#include <swapalloc/codec.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace {

/// The codecs this build can run, in all_codecs order.
std::vector<swapalloc::codec_id> available_codecs()
{
  std::vector<swapalloc::codec_id> codecs;
  for (swapalloc::codec_id const codec : swapalloc::all_codecs) {
    if (swapalloc::codec_available(codec)) { codecs.push_back(codec); }
  }
  return codecs;
}

void decode_as_frame(std::span<std::byte const> input, swapalloc::codec_scratch& scratch)
{
  // Size the output to what the frame declares (when that is a valid size), so that a
  // write past the chunk lands outside the allocation.
  std::size_t declared = 16;
  if (input.size() >= swapalloc::frame_header_bytes) {
    std::uint32_t raw_bytes = 0;
    std::memcpy(&raw_bytes, input.data() + 8, sizeof raw_bytes);
    if (raw_bytes >= 1 && raw_bytes <= swapalloc::max_chunk_bytes) { declared = raw_bytes; }
  }
  std::vector<std::byte> out(declared);
  try {
    std::size_t const written = swapalloc::decode_frame(input, out, scratch);
    if (written != declared) { __builtin_trap(); }
  } catch (swapalloc::codec_error const&) {
    // Malformed input is expected; the harness checks only that it is reported.
  }
}

void round_trip(std::span<std::byte const> input, swapalloc::codec_scratch& scratch)
{
  if (input.empty()) { return; }
  static std::vector<swapalloc::codec_id> const codecs = available_codecs();
  swapalloc::codec_id const codec = codecs[std::to_integer<std::size_t>(input[0]) % codecs.size()];
  std::span<std::byte const> const raw =
    input.first(std::min(input.size(), swapalloc::max_chunk_bytes));
  std::vector<std::byte> frame(swapalloc::max_frame_bytes(raw.size()));
  std::size_t const length = swapalloc::encode_frame(codec, raw, frame, scratch);
  std::vector<std::byte> restored(raw.size());
  std::size_t const written =
    swapalloc::decode_frame(std::span(frame).first(length), restored, scratch);
  if (written != raw.size() || !std::equal(raw.begin(), raw.end(), restored.begin())) {
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
  // One scratch for the whole run, as a worker thread keeps one: its buffers are then
  // reused across inputs the way they are across chunks (and not reallocated per input).
  static swapalloc::codec_scratch scratch;
  std::span<std::byte const> const input(reinterpret_cast<std::byte const*>(data), size);
  decode_as_frame(input, scratch);
  round_trip(input, scratch);
  return 0;
}
