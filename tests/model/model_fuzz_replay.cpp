// model_fuzz_replay: runs the model test's fuzz harness (model_fuzz.cpp) without libFuzzer,
// so that it runs under any compiler and in CTest, and the byte decoding of ops is tested.
//
//   model_fuzz_replay [FILE|DIR...]    feeds each file (each file of each directory), e.g. a
//                                      libFuzzer corpus or a crash reproducer;
//   model_fuzz_replay                  feeds a built-in corpus: 40 random op sequences
//                                      encoded as bytes (random_ops, byte_ops::encode), then
//                                      120 random byte strings of 10 to 64 ops, from fixed
//                                      seeds (the same run every time);
//   model_fuzz_replay --write-seeds DIR  writes the encoded op sequences to DIR, a seed
//                                      corpus for the libFuzzer target (model_fuzz).
// Exit status: 0 when every input passed; the harness aborts on a broken rule. 2 for a
// file that cannot be read, 3 when an encoded sequence does not decode to itself.
#include "model_ops.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv);
extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size);

namespace {

using namespace swapalloc::testing::model;

void feed(std::vector<std::uint8_t> const& input)
{
  LLVMFuzzerTestOneInput(input.data(), input.size());
}

/// True when `decoded` is `o` up to the encoding's resolution (byte_ops::encode).
bool same_up_to_encoding(op const& o, op const& decoded)
{
  bool const size_ok = o.kind == op_kind::evict_partial
                         ? decoded.size == o.size % 8
                         : decoded.size <= o.size && o.size - decoded.size <= (5U << 20) / 16384;
  for (std::size_t f = 0; f < 2; ++f) {
    if (decoded.faults[f].armed() != o.faults[f].armed() ||
        (o.faults[f].armed() && (decoded.faults[f].entry != o.faults[f].entry ||
                                 decoded.faults[f].nth != o.faults[f].nth))) {
      return false;
    }
  }
  return size_ok && decoded.kind == o.kind && decoded.pool == o.pool &&
         decoded.stream == (o.stream & 15) && decoded.other == (o.other & 15) &&
         decoded.data == o.data && decoded.pick == (o.pick & 0xFFFF);
}

/// `count` ops of random_ops(seed) as bytes; false if they do not decode to the same ops.
bool encoded_ops(std::uint64_t seed, std::size_t count, std::vector<std::uint8_t>& bytes)
{
  random_ops source(seed);
  std::vector<op> ops;
  bytes.clear();
  for (std::size_t i = 0; i < count; ++i) {
    ops.push_back(source.next());
    auto const encoded = byte_ops::encode(ops.back());
    bytes.insert(bytes.end(), encoded.begin(), encoded.end());
  }
  byte_ops decoder(bytes);
  for (op const& expected : ops) {
    op decoded;
    if (!decoder.next(decoded) || !same_up_to_encoding(expected, decoded)) {
      std::fprintf(stderr, "model_fuzz_replay: %s decodes to %s\n", to_string(expected).c_str(),
                   to_string(decoded).c_str());
      return false;
    }
  }
  return true;
}

int run_built_in()
{
  std::vector<std::uint8_t> bytes;
  for (std::uint64_t seed = 1; seed <= 40; ++seed) {
    if (!encoded_ops(seed, 48, bytes)) { return 3; }
    feed(bytes);
  }
  std::mt19937_64 random(20261201);
  for (int i = 0; i < 120; ++i) {
    bytes.resize(op_bytes * (1 + random() % 64));
    for (std::uint8_t& b : bytes) {
      b = static_cast<std::uint8_t>(random());
    }
    feed(bytes);
  }
  std::printf("model_fuzz_replay: 160 built-in inputs passed\n");
  return 0;
}

int write_seeds(std::filesystem::path const& directory)
{
  std::filesystem::create_directories(directory);
  std::vector<std::uint8_t> bytes;
  for (std::uint64_t seed = 1; seed <= 40; ++seed) {
    if (!encoded_ops(seed, 48, bytes)) { return 3; }
    std::ofstream out(directory / ("ops_" + std::to_string(seed)), std::ios::binary);
    out.write(reinterpret_cast<char const*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
  }
  return 0;
}

int feed_path(std::filesystem::path const& path)
{
  if (std::filesystem::is_directory(path)) {
    for (auto const& entry : std::filesystem::directory_iterator(path)) {
      if (int const status = feed_path(entry.path()); status != 0) { return status; }
    }
    return 0;
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    std::fprintf(stderr, "model_fuzz_replay: cannot read %s\n", path.c_str());
    return 2;
  }
  feed(std::vector<std::uint8_t>{std::istreambuf_iterator<char>(file), {}});
  return 0;
}

}  // namespace

int main(int argc, char** argv)
{
  LLVMFuzzerInitialize(&argc, &argv);
  if (argc == 1) { return run_built_in(); }
  if (argc == 3 && std::string(argv[1]) == "--write-seeds") { return write_seeds(argv[2]); }
  for (int i = 1; i < argc; ++i) {
    if (int const status = feed_path(argv[i]); status != 0) { return status; }
  }
  std::printf("model_fuzz_replay: %d inputs passed\n", argc - 1);
  return 0;
}
