// Tests of tools/scenarios/weights.hpp (suite Weights): bf16 rounding (known values, ties to
// even, NaN), fill's tiling from the salt's start in both dtypes, salts, the statistics of
// generated values, from_directory on safetensors and raw files (and its errors), find's
// order of sources, and the project's real data (../shared/data; skipped when absent).
#include "weights.hpp"
#include "temp_files.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace swapalloc::scenarios::testing {
namespace {

using ::testing::HasSubstr;

std::uint16_t bf16_bits(std::uint32_t float_bits)
{
  return to_bf16(std::bit_cast<float>(float_bits));
}

/// Sets (or, with nullopt, unsets) SWAPALLOC_WEIGHTS for the scope; restores it afterwards.
class weights_variable {
 public:
  explicit weights_variable(std::optional<std::string> const& value)
  {
    if (char const* const old = std::getenv(name)) { old_ = old; }
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~weights_variable()
  {
    if (old_) {
      ::setenv(name, old_->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  weights_variable(weights_variable const&)            = delete;
  weights_variable& operator=(weights_variable const&) = delete;

 private:
  static constexpr char const* name = "SWAPALLOC_WEIGHTS";
  std::optional<std::string> old_;
};

/// A raw fp32 file holding `values` in `dir`; returns the directory's source.
weight_source raw_source(std::filesystem::path const& dir, std::vector<float> const& values)
{
  write_file(dir / "t.fp32.bin", bytes_of(values));
  return weight_source::from_directory(dir);
}

/// `count` distinct values, with a few special ones (ties, a NaN) for the bf16 fill.
std::vector<float> test_values(std::size_t count)
{
  std::vector<float> values(count);
  for (std::size_t i = 0; i < count; ++i) {
    values[i] = static_cast<float>(i) * 0.001F - 0.5F;
  }
  values[3] = std::bit_cast<float>(0x3F808000U);  // a tie: rounds to even, down
  values[4] = std::bit_cast<float>(0x3F818000U);  // a tie: rounds to even, up
  values[5] = std::numeric_limits<float>::quiet_NaN();
  return values;
}

TEST(Weights, Bf16RoundsToNearestEven)
{
  EXPECT_EQ(to_bf16(1.0F), 0x3F80);
  EXPECT_EQ(to_bf16(-2.0F), 0xC000);
  EXPECT_EQ(to_bf16(0.0F), 0x0000);
  EXPECT_EQ(to_bf16(-0.0F), 0x8000);
  EXPECT_EQ(bf16_bits(0x3F808000U), 0x3F80);  // halfway, even below: down
  EXPECT_EQ(bf16_bits(0x3F818000U), 0x3F82);  // halfway, odd below: up to even
  EXPECT_EQ(bf16_bits(0x3F808001U), 0x3F81);  // just above halfway
  EXPECT_EQ(bf16_bits(0x3F807FFFU), 0x3F80);  // just below halfway
  EXPECT_EQ(bf16_bits(0x7F7FFFFFU), 0x7F80);  // the largest float rounds to infinity
  EXPECT_EQ(to_bf16(std::numeric_limits<float>::infinity()), 0x7F80);
}

TEST(Weights, Bf16KeepsNaN)
{
  EXPECT_EQ(to_bf16(std::numeric_limits<float>::quiet_NaN()), 0x7FC0);
  for (std::uint32_t bits : {0x7F800001U, 0xFF800001U, 0x7FFFFFFFU}) {
    std::uint16_t const half = bf16_bits(bits);
    EXPECT_EQ(half & 0x7F80U, 0x7F80U) << std::hex << bits;
    EXPECT_NE(half & 0x007FU, 0U) << std::hex << bits << ": became an infinity";
    EXPECT_EQ(half & 0x8000U, (bits >> 16) & 0x8000U) << std::hex << bits << ": sign lost";
  }
}

TEST(Weights, FillTilesFp32FromTheSaltsStart)
{
  temp_dir const dir;
  std::vector<float> const values = test_values(1000);
  weight_source const source      = raw_source(dir.path(), values);
  std::size_t const start         = source.start_of(11);
  std::vector<std::byte> out(std::size_t{2503} * 4);
  source.fill(out, weight_dtype::fp32, 11);
  for (std::size_t i = 0; i < 2503; ++i) {
    std::uint32_t got = 0;
    std::memcpy(&got, out.data() + i * 4, 4);
    ASSERT_EQ(got, std::bit_cast<std::uint32_t>(values[(start + i) % 1000])) << "element " << i;
  }
}

TEST(Weights, FillTilesBf16FromTheSaltsStart)
{
  temp_dir const dir;
  std::vector<float> const values = test_values(1000);
  weight_source const source      = raw_source(dir.path(), values);
  std::size_t const start         = source.start_of(5);
  std::vector<std::byte> out(std::size_t{9001} * 2);
  source.fill(out, weight_dtype::bf16, 5);
  for (std::size_t i = 0; i < 9001; ++i) {
    std::uint16_t got = 0;
    std::memcpy(&got, out.data() + i * 2, 2);
    ASSERT_EQ(got, to_bf16(values[(start + i) % 1000])) << "element " << i;
  }
  std::vector<std::byte> shorter(std::size_t{7} * 2);  // less than one period
  source.fill(shorter, weight_dtype::bf16, 5);
  EXPECT_TRUE(std::equal(shorter.begin(), shorter.end(), out.begin()));
}

TEST(Weights, SaltsGiveDifferentBytesAndTheSameSaltTheSame)
{
  weight_source const source = weight_source::generated(3);
  std::vector<std::byte> a(1 << 20), b(1 << 20), again(1 << 20);
  source.fill(a, weight_dtype::bf16, 1);
  source.fill(b, weight_dtype::bf16, 2);
  source.fill(again, weight_dtype::bf16, 1);
  EXPECT_NE(source.start_of(1), source.start_of(2));
  EXPECT_NE(a, b);
  EXPECT_EQ(a, again);
}

TEST(Weights, FillRejectsAPartialElement)
{
  weight_source const source = weight_source::generated(1);
  std::vector<std::byte> odd(3), six(6), empty;
  try {
    source.fill(odd, weight_dtype::bf16, 0);
    ADD_FAILURE() << "3 bytes filled as bf16";
  } catch (std::invalid_argument const& error) {
    EXPECT_THAT(error.what(), HasSubstr("3 bytes is not a whole number of bf16 elements"));
  }
  EXPECT_THROW(source.fill(six, weight_dtype::fp32, 0), std::invalid_argument);
  EXPECT_NO_THROW(source.fill(six, weight_dtype::bf16, 0));
  EXPECT_NO_THROW(source.fill(empty, weight_dtype::fp32, 0));
}

TEST(Weights, GeneratedValuesAreNormalWithStd002)
{
  weight_source const source = weight_source::generated(7);
  EXPECT_FALSE(source.real());
  EXPECT_EQ(source.description(), "generated N(0, 0.02), seed 7");
  ASSERT_EQ(source.values().size(), weight_source::generated_values);
  double sum = 0, squares = 0;
  std::size_t within_one_std = 0;
  for (float value : source.values()) {
    sum += value;
    squares += static_cast<double>(value) * value;
    within_one_std += std::abs(value) <= 0.02F ? 1 : 0;
  }
  auto const count  = static_cast<double>(source.values().size());
  double const mean = sum / count;
  double const std  = std::sqrt(squares / count - mean * mean);
  // Standard errors at 2 M values: 1.4e-5 for the mean, 1e-5 for the std, 3e-4 for the
  // fraction: these bounds are several of them wide.
  EXPECT_LT(std::abs(mean), 1e-4);
  EXPECT_NEAR(std, 0.02, 2e-4);
  EXPECT_NEAR(static_cast<double>(within_one_std) / count, 0.6827, 0.003);
}

TEST(Weights, GeneratedValuesFollowTheSeed)
{
  weight_source const a = weight_source::generated(7);
  weight_source const b = weight_source::generated(7);
  weight_source const c = weight_source::generated(8);
  EXPECT_TRUE(std::equal(a.values().begin(), a.values().end(), b.values().begin()));
  EXPECT_FALSE(std::equal(a.values().begin(), a.values().end(), c.values().begin()));
}

TEST(Weights, FromDirectoryReadsSafetensorsAndRawFiles)
{
  temp_dir const dir;
  std::vector<float> const f32{0.5F, -0.25F, 2.0F};
  std::vector<std::uint16_t> const bf16{0x3F80, 0xC000};  // 1, -2
  std::vector<std::int64_t> const ids{7};
  std::vector<std::byte> payload = bytes_of(f32);
  for (auto const& part : {bytes_of(bf16), bytes_of(ids)}) {
    payload.insert(payload.end(), part.begin(), part.end());
  }
  write_safetensors(dir.path() / "a.safetensors",
                    R"({"f": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
                        "b": {"dtype": "BF16", "shape": [2], "data_offsets": [12, 16]},
                        "i": {"dtype": "I64", "shape": [1], "data_offsets": [16, 24]}})",
                    payload);
  write_file(dir.path() / "b.fp32.bin", bytes_of(std::vector<float>{4.0F, 8.0F}));
  write_file(dir.path() / "notes.txt", bytes_of(std::vector<float>{1.0F}));  // not weights
  write_file(dir.path() / "SOURCE", bytes_of(std::vector<char>{'t', 'e', 's', 't', '\n', 'x'}));
  weight_source const source = weight_source::from_directory(dir.path());
  EXPECT_TRUE(source.real());
  EXPECT_EQ(std::vector<float>(source.values().begin(), source.values().end()),
            (std::vector<float>{0.5F, -0.25F, 2.0F, 1.0F, -2.0F, 4.0F, 8.0F}));
  EXPECT_EQ(source.description(),
            "real: test: a.safetensors, b.fp32.bin (7 fp32 values, 1 non-float tensor "
            "skipped)");
}

TEST(Weights, FromDirectoryErrorsNameThePath)
{
  temp_dir const dir;
  auto const message = [&](std::filesystem::path const& path) -> std::string {
    try {
      (void)weight_source::from_directory(path);
    } catch (std::runtime_error const& error) {
      return error.what();
    }
    return "no error";
  };
  EXPECT_EQ(message(dir.path()),
            dir.path().string() + ": no weights (no *.safetensors or *.fp32.bin file there)");
  EXPECT_THAT(message(dir.path() / "absent"), HasSubstr("absent: no weights"));
  write_file(dir.path() / "odd.fp32.bin", std::vector<std::byte>(6));
  EXPECT_EQ(message(dir.path()), (dir.path() / "odd.fp32.bin").string() +
                                   ": a raw fp32 file of 6 bytes, expected a positive multiple "
                                   "of 4 bytes");
  std::filesystem::remove(dir.path() / "odd.fp32.bin");
  write_safetensors(dir.path() / "bad.safetensors", "{", {});
  EXPECT_THAT(message(dir.path()),
              HasSubstr((dir.path() / "bad.safetensors").string() + ": bad JSON header"));
}

TEST(Weights, FindPrefersExplicitThenEnvironmentThenFetchedThenSharedData)
{
  temp_dir const dir;
  std::filesystem::path const root = dir.path() / "project";
  for (char const* sub : {"explicit", "named", "project/build/weights", "shared/data"}) {
    std::filesystem::create_directories(dir.path() / sub);
  }
  write_file(dir.path() / "explicit/e.fp32.bin", bytes_of(std::vector<float>{1.0F}));
  write_file(dir.path() / "named/n.fp32.bin", bytes_of(std::vector<float>{2.0F, 2.0F}));
  write_file(root / "build/weights/w.fp32.bin", bytes_of(std::vector<float>{3.0F, 3.0F, 3.0F}));
  write_file(dir.path() / "shared/data/s.fp32.bin", bytes_of(std::vector<float>{4.0F}));
  auto const first = [](weight_source const& source) { return source.values()[0]; };
  {
    weights_variable const named(dir.path() / "named");
    EXPECT_EQ(first(weight_source::find(dir.path() / "explicit", root)), 1.0F);
    EXPECT_EQ(first(weight_source::find({}, root)), 2.0F);
  }
  weights_variable const unset(std::nullopt);
  EXPECT_EQ(first(weight_source::find({}, root)), 3.0F);              // <root>/build/weights
  EXPECT_EQ(first(weight_source::find({}, root / "build")), 3.0F);    // <build>/weights
  EXPECT_EQ(first(weight_source::find({}, root / "build/x")), 4.0F);  // an ancestor's shared
  std::filesystem::remove_all(dir.path() / "shared");
  weight_source const generated = weight_source::find({}, root / "build/x", 9);
  EXPECT_FALSE(generated.real());
  EXPECT_EQ(generated.description(), "generated N(0, 0.02), seed 9");
  EXPECT_THROW((void)weight_source::find(dir.path() / "absent", root), std::runtime_error);
}

TEST(Weights, SharedDataIsRealAndFills)
{
  std::filesystem::path const shared = SWAPALLOC_SHARED_DATA;
  if (!std::filesystem::exists(shared / "silero_vad_v5.fp32.bin")) {
    GTEST_SKIP() << shared << " has no silero_vad_v5.fp32.bin";
  }
  weight_source const source = weight_source::from_directory(shared);
  EXPECT_TRUE(source.real());
  EXPECT_EQ(source.values().size(), 545'280U);  // ../shared/data/README.md
  EXPECT_THAT(source.description(), HasSubstr("silero_vad_v5.fp32.bin (0.545 M fp32 values)"));
  std::vector<std::byte> out(3 << 20);  // 1.5 M bf16: the values tiled almost three times
  source.fill(out, weight_dtype::bf16, 1);
  std::size_t const period = source.values().size() * 2;
  EXPECT_TRUE(
    std::equal(out.begin() + static_cast<std::ptrdiff_t>(period), out.end(), out.begin()));
  std::size_t const start = source.start_of(1);
  std::uint16_t first     = 0;
  std::memcpy(&first, out.data(), 2);
  EXPECT_EQ(first, to_bf16(source.values()[start]));
}

// What tools/fetch-weights fetched into this build's weights/ (skipped when absent).
TEST(Weights, FetchedMiniLmIsReal)
{
  std::filesystem::path const fetched = SWAPALLOC_FETCHED_WEIGHTS;
  if (!std::filesystem::exists(fetched / "model.safetensors")) {
    GTEST_SKIP() << fetched << " has no model.safetensors (tools/fetch-weights)";
  }
  weight_source const source = weight_source::from_directory(fetched);
  EXPECT_TRUE(source.real());
  EXPECT_GT(source.values().size(), 20'000'000U);
  EXPECT_THAT(source.description(), HasSubstr("model.safetensors ("));
  EXPECT_THAT(source.description(), HasSubstr("1 non-float tensor skipped"));  // position_ids
  std::vector<std::byte> out(64 << 20);  // more than one period of bf16
  source.fill(out, weight_dtype::bf16, 3);
  std::size_t const period = source.values().size() * 2;
  EXPECT_TRUE(
    std::equal(out.begin() + static_cast<std::ptrdiff_t>(period), out.end(), out.begin()));
}

}  // namespace
}  // namespace swapalloc::scenarios::testing
