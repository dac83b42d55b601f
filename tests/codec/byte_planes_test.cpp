// Tests of include/swapalloc/byte_planes.hpp (suite BytePlanes): the layout is byte j of
// every element in plane j with the tail kept at the end, the blocked loops agree with the
// definition at every length, and join undoes split.
#include <swapalloc/byte_planes.hpp>

#include "data_kinds.hpp"

#include <cstddef>
#include <span>
#include <vector>

#include <gtest/gtest.h>

namespace swapalloc::testing {
namespace {

std::vector<std::byte> iota_bytes(std::size_t size)
{
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) {
    bytes[i] = static_cast<std::byte>(i);
  }
  return bytes;
}

/// The definition, one byte at a time.
std::vector<std::byte> reference_planes(std::span<std::byte const> in, std::size_t width)
{
  std::vector<std::byte> out(in.begin(), in.end());
  std::size_t const elements = in.size() / width;
  for (std::size_t e = 0; e < elements; ++e) {
    for (std::size_t j = 0; j < width; ++j) {
      out[j * elements + e] = in[e * width + j];
    }
  }
  return out;
}

TEST(BytePlanes, LayoutOfASmallExample)
{
  std::vector<std::byte> const in = iota_bytes(10);
  std::vector<std::byte> out(10);
  split_byte_planes<4>(in, out);
  std::vector<int> const four{0, 4, 1, 5, 2, 6, 3, 7, 8, 9};
  for (std::size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(std::to_integer<int>(out[i]), four[i]) << i;
  }
  split_byte_planes<2>(std::span(in).first(9), out);
  std::vector<int> const two{0, 2, 4, 6, 1, 3, 5, 7, 8};
  for (std::size_t i = 0; i < two.size(); ++i) {
    EXPECT_EQ(std::to_integer<int>(out[i]), two[i]) << i;
  }
}

template <std::size_t Width>
void check_every_length_up_to(std::size_t limit)
{
  std::vector<std::byte> const data = make_data(data_kind::random_bytes, limit, Width);
  for (std::size_t size = 0; size <= limit; ++size) {
    std::span<std::byte const> const in = std::span(data).first(size);
    std::vector<std::byte> planes(size + 8, std::byte{0xEE});
    split_byte_planes<Width>(in, planes);
    std::vector<std::byte> const expected = reference_planes(in, Width);
    ASSERT_TRUE(std::equal(expected.begin(), expected.end(), planes.begin())) << "size " << size;
    for (std::size_t i = size; i < planes.size(); ++i) {
      ASSERT_EQ(planes[i], std::byte{0xEE});
    }
    std::vector<std::byte> back(size + 8, std::byte{0xEE});
    join_byte_planes<Width>(std::span(planes).first(size), back);
    ASSERT_TRUE(std::equal(in.begin(), in.end(), back.begin())) << "size " << size;
    for (std::size_t i = size; i < back.size(); ++i) {
      ASSERT_EQ(back[i], std::byte{0xEE});
    }
  }
}

TEST(BytePlanes, TwoByteElementsAtEveryLength) { check_every_length_up_to<2>(700); }
TEST(BytePlanes, FourByteElementsAtEveryLength) { check_every_length_up_to<4>(1100); }

}  // namespace
}  // namespace swapalloc::testing
