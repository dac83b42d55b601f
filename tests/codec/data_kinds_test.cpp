// Tests of tests/support/data_kinds.hpp (suite DataKinds): the generators are deterministic
// and produce what their names say, and the fp16 conversion rounds to nearest even (bf16's is
// tested with the scenarios' weights, tests/scenarios/weights_test.cpp).
#include "data_kinds.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

namespace swapalloc::testing {
namespace {

TEST(DataKinds, Fp16RoundsToNearestEven)
{
  EXPECT_EQ(to_fp16(1.0F), 0x3C00);
  EXPECT_EQ(to_fp16(-0.5F), 0xB800);
  EXPECT_EQ(to_fp16(65504.0F), 0x7BFF);
  EXPECT_EQ(to_fp16(65520.0F), 0x7C00) << "rounds up to infinity";
  EXPECT_EQ(to_fp16(1e6F), 0x7C00);
  EXPECT_EQ(to_fp16(std::ldexp(1.0F, -24)), 0x0001) << "smallest subnormal";
  EXPECT_EQ(to_fp16(std::ldexp(1.0F, -25)), 0x0000) << "a tie rounds to even (zero)";
  EXPECT_EQ(to_fp16(std::ldexp(3.0F, -25)), 0x0002) << "a tie rounds to even";
  EXPECT_EQ(to_fp16(std::ldexp(1.0F, -14)), 0x0400) << "smallest normal";
  EXPECT_EQ(to_fp16(1.0F + std::ldexp(1.0F, -11)), 0x3C00) << "a tie rounds to even";
}

TEST(DataKinds, DeterministicPerSeedAndPrefixStable)
{
  for (data_kind const kind : all_data_kinds) {
    SCOPED_TRACE(std::string(to_string(kind)));
    std::vector<std::byte> const a = make_data(kind, 10001, 5);
    EXPECT_EQ(a.size(), 10001U);
    EXPECT_EQ(make_data(kind, 10001, 5), a);
    std::vector<std::byte> const prefix = make_data(kind, 999, 5);
    EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), a.begin()));
    if (kind != data_kind::zeros) { EXPECT_NE(make_data(kind, 10001, 6), a); }
  }
}

TEST(DataKinds, ValuesHaveTheRightDistribution)
{
  constexpr std::size_t count       = 100000;
  std::vector<std::byte> const fp32 = make_data(data_kind::fp32_weights, 4 * count, 1);
  double sum                        = 0;
  double squares                    = 0;
  for (std::size_t i = 0; i < count; ++i) {
    float value = 0;
    std::memcpy(&value, fp32.data() + 4 * i, 4);
    sum += value;
    squares += double{value} * value;
  }
  EXPECT_NEAR(sum / count, 0.0, 0.001);
  EXPECT_NEAR(std::sqrt(squares / count), 0.02, 0.0005);

  std::vector<std::byte> const relu = make_data(data_kind::bf16_activations, 2 * count, 1);
  std::size_t zeros                 = 0;
  for (std::size_t i = 0; i < count; ++i) {
    std::uint16_t value = 0;
    std::memcpy(&value, relu.data() + 2 * i, 2);
    zeros += value == 0 ? 1 : 0;
    EXPECT_EQ(value & 0x8000, 0) << "no negative activation";
  }
  EXPECT_NEAR(static_cast<double>(zeros) / count, 0.5, 0.01);

  std::vector<std::byte> const bf16 = make_data(data_kind::bf16_weights, 2 * count, 1);
  for (std::size_t i = 0; i < 100; ++i) {
    float value = 0;
    std::memcpy(&value, fp32.data() + 4 * i, 4);
    std::uint16_t half = 0;
    std::memcpy(&half, bf16.data() + 2 * i, 2);
    EXPECT_EQ(half, to_bf16(value)) << "bf16 weights are the fp32 ones rounded";
  }
}

TEST(DataKinds, RealWeightsLoadWhenPresent)
{
  auto const fp32 = load_real_weights_fp32();
  if (!fp32) { GTEST_SKIP() << "no real weights at '" << real_weights_path() << "'"; }
  EXPECT_EQ(fp32->size(), 545280U * 4);
  auto const bf16 = load_real_weights_bf16();
  ASSERT_TRUE(bf16.has_value());
  EXPECT_EQ(bf16->size(), 545280U * 2);
}

}  // namespace
}  // namespace swapalloc::testing
