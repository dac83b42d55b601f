// codec_fuzz_replay: runs the codec's fuzz harness (codec_fuzz.cpp) without libFuzzer, so
// that it runs under any compiler and in CTest.
//
//   codec_fuzz_replay [FILE|DIR...]   feeds each file (each file of each directory), e.g. a
//                                     libFuzzer corpus or a crash reproducer;
//   codec_fuzz_replay                 feeds a built-in corpus: valid frames of every
//                                     available codec and data kind, then 20000 mutations
//                                     of them from a fixed seed (the same run every time);
//   codec_fuzz_replay --write-seeds DIR  writes the built-in valid frames to DIR, a seed
//                                     corpus for the libFuzzer target (codec_fuzz).
// Exit status: 0 when every input passed; the harness traps on a failed round trip, and a
// crash is a crash. 2 for a file that cannot be read.
#include <swapalloc/codec.hpp>

#include "data_kinds.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size);

namespace {

using swapalloc::testing::data_kind;

void feed(std::vector<std::byte> const& input)
{
  LLVMFuzzerTestOneInput(reinterpret_cast<std::uint8_t const*>(input.data()), input.size());
}

/// Valid frames: each available codec x each data kind x a few sizes.
std::vector<std::vector<std::byte>> seed_frames()
{
  swapalloc::codec_scratch scratch;
  std::vector<std::vector<std::byte>> seeds;
  std::uint64_t seed = 1;
  for (swapalloc::codec_id const codec : swapalloc::all_codecs) {
    if (!swapalloc::codec_available(codec)) { continue; }
    for (data_kind const kind : swapalloc::testing::all_data_kinds) {
      for (std::size_t const size :
           {std::size_t{1}, std::size_t{37}, std::size_t{1000}, std::size_t{4099}}) {
        std::vector<std::byte> const raw = swapalloc::testing::make_data(kind, size, ++seed);
        std::vector<std::byte> frame(swapalloc::max_frame_bytes(size));
        frame.resize(swapalloc::encode_frame(codec, raw, frame, scratch));
        seeds.push_back(std::move(frame));
      }
    }
  }
  return seeds;
}

/// One to four random edits of `frame`: bit flips, byte sets, cuts, extensions and header
/// fields set to edge values.
std::vector<std::byte> mutate(std::vector<std::byte> frame, std::mt19937_64& random)
{
  auto const below = [&](std::size_t n) {
    return n == 0 ? 0 : static_cast<std::size_t>(random() % n);
  };
  std::size_t const edits = 1 + below(4);
  for (std::size_t e = 0; e < edits; ++e) {
    switch (below(6)) {
      case 0:
        if (!frame.empty()) { frame[below(frame.size())] ^= std::byte{1} << below(8); }
        break;
      case 1:
        if (!frame.empty()) { frame[below(frame.size())] = static_cast<std::byte>(random()); }
        break;
      case 2:
        frame.resize(below(frame.size() + 1));
        break;
      case 3:
        frame.resize(frame.size() + 1 + below(64), static_cast<std::byte>(random()));
        break;
      case 4:  // a header byte, where the checks are
        if (frame.size() > 8) {
          frame[below(swapalloc::frame_header_bytes)] = static_cast<std::byte>(random());
        }
        break;
      default: {  // a length field set to an edge value
        std::uint32_t const edges[] = {
          0, 1, 0xFFFFFFFFU, 1U << 20, (1U << 20) + 1, static_cast<std::uint32_t>(frame.size())};
        std::uint32_t const value = edges[below(std::size(edges))];
        std::size_t const field   = below(2) == 0 ? 8 : 12;
        for (std::size_t i = 0; i < 4 && field + i < frame.size(); ++i) {
          frame[field + i] = static_cast<std::byte>((value >> (8 * i)) & 0xFF);
        }
        break;
      }
    }
  }
  return frame;
}

bool feed_path(std::filesystem::path const& path, std::size_t& fed)
{
  if (std::filesystem::is_directory(path)) {
    for (auto const& entry : std::filesystem::directory_iterator(path)) {
      if (entry.is_regular_file() && !feed_path(entry.path(), fed)) { return false; }
    }
    return true;
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    std::fprintf(stderr, "codec_fuzz_replay: cannot read %s\n", path.c_str());
    return false;
  }
  std::vector<char> const bytes{std::istreambuf_iterator<char>(file), {}};
  LLVMFuzzerTestOneInput(reinterpret_cast<std::uint8_t const*>(bytes.data()), bytes.size());
  ++fed;
  return true;
}

}  // namespace

int main(int argc, char** argv)
{
  std::size_t fed = 0;
  if (argc == 3 && std::string(argv[1]) == "--write-seeds") {
    std::filesystem::create_directories(argv[2]);
    std::vector<std::vector<std::byte>> const seeds = seed_frames();
    for (std::size_t i = 0; i < seeds.size(); ++i) {
      std::ofstream file(std::filesystem::path(argv[2]) / ("seed-" + std::to_string(i)),
                         std::ios::binary);
      file.write(reinterpret_cast<char const*>(seeds[i].data()),
                 static_cast<std::streamsize>(seeds[i].size()));
      if (!file) {
        std::fprintf(stderr, "codec_fuzz_replay: cannot write to %s\n", argv[2]);
        return 2;
      }
    }
    std::printf("codec_fuzz_replay: wrote %zu seed frames to %s\n", seeds.size(), argv[2]);
    return 0;
  }
  if (argc > 1) {
    for (int i = 1; i < argc; ++i) {
      if (!feed_path(argv[i], fed)) { return 2; }
    }
    std::printf("codec_fuzz_replay: %zu inputs passed\n", fed);
    return 0;
  }
  std::vector<std::vector<std::byte>> const seeds = seed_frames();
  for (auto const& seed : seeds) {
    feed(seed);
  }
  constexpr std::size_t mutations = 20000;
  std::mt19937_64 random(20240601);
  for (std::size_t i = 0; i < mutations; ++i) {
    feed(mutate(seeds[random() % seeds.size()], random));
  }
  std::printf("codec_fuzz_replay: %zu seed frames and %zu mutations passed\n", seeds.size(),
              mutations);
  return 0;
}
