// Tests of include/swapalloc/bin_table.hpp: bins are found by (stream tag, size) exactly,
// survive the table's growth, and are all visited.
#include <swapalloc/bin_table.hpp>

#include <gtest/gtest.h>

#include <cstddef>
#include <map>
#include <utility>
#include <vector>

namespace swapalloc {
namespace {

TEST(BinTable, FindsOnlyBinsThatExist)
{
  detail::bin_table bins;
  EXPECT_EQ(bins.find(tag_of(nullptr), 512), nullptr);
  block b;
  bins.at(tag_of(nullptr), 512) = &b;
  ASSERT_NE(bins.find(tag_of(nullptr), 512), nullptr);
  EXPECT_EQ(*bins.find(tag_of(nullptr), 512), &b);
  EXPECT_EQ(bins.find(tag_of(nullptr), 1024), nullptr) << "another size";
  EXPECT_EQ(bins.find(any_stream, 512), nullptr) << "another stream";
}

TEST(BinTable, KeepsEveryBinAcrossGrowth)
{
  detail::bin_table bins;
  std::vector<block> heads(3000);
  std::map<std::pair<stream_tag, std::size_t>, block*> expected;
  for (std::size_t i = 0; i < heads.size(); ++i) {
    stream_tag const tag   = 1 + (i % 3) * 16;  // three streams
    std::size_t const size = (1 + i / 3) * block_granule;
    bins.at(tag, size)     = &heads[i];
    expected[{tag, size}]  = &heads[i];
  }
  for (auto const& [key, head] : expected) {
    block** const found = bins.find(key.first, key.second);
    ASSERT_NE(found, nullptr) << "lost bin (" << key.first << ", " << key.second << ")";
    EXPECT_EQ(*found, head);
  }
  std::size_t visited = 0;
  bins.for_each([&](stream_tag tag, std::size_t size, block*& head) {
    EXPECT_EQ(expected.at({tag, size}), head);
    head = nullptr;  // visitors may empty a bin
    ++visited;
  });
  EXPECT_EQ(visited, expected.size());
  ASSERT_NE(bins.find(1, block_granule), nullptr);
  EXPECT_EQ(*bins.find(1, block_granule), nullptr) << "an emptied bin stays, empty";
}

}  // namespace
}  // namespace swapalloc
