// Tests of include/swapalloc/address_map.hpp against std::unordered_map as the reference,
// including growth and the backward-shift deletion inside long probe clusters.
#include <swapalloc/address_map.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <unordered_map>
#include <vector>

namespace swapalloc {
namespace {

TEST(AddressMap, InsertFindEraseSingleKeys)
{
  address_map<int> map(4);
  EXPECT_EQ(map.find(0x1000), nullptr);
  map.insert(0x1000, 7);
  ASSERT_NE(map.find(0x1000), nullptr);
  EXPECT_EQ(*map.find(0x1000), 7);
  EXPECT_EQ(map.size(), 1U);
  EXPECT_FALSE(map.erase(0x2000));
  EXPECT_TRUE(map.erase(0x1000));
  EXPECT_EQ(map.find(0x1000), nullptr);
  EXPECT_EQ(map.size(), 0U);
}

TEST(AddressMap, MatchesAReferenceMapUnderRandomTraffic)
{
  address_map<std::uint64_t> map(8);  // small, so it grows many times
  std::unordered_map<std::uint64_t, std::uint64_t> reference;
  std::vector<std::uint64_t> keys;
  std::mt19937_64 random(42);
  for (int step = 0; step < 200000; ++step) {
    if (keys.empty() || random() % 100 < 55) {
      // Device-like addresses: one range, 512-byte aligned, so keys collide in low bits.
      std::uint64_t const key = 0x7f0000000000ULL + (random() % (1U << 22)) * 512;
      if (reference.count(key) != 0) { continue; }
      map.insert(key, key ^ 0xABCDEF);
      reference.emplace(key, key ^ 0xABCDEF);
      keys.push_back(key);
    } else {
      std::size_t const index = random() % keys.size();
      std::uint64_t const key = keys[index];
      keys[index]             = keys.back();
      keys.pop_back();
      ASSERT_TRUE(map.erase(key));
      reference.erase(key);
    }
    if (step % 1000 == 0) {
      ASSERT_EQ(map.size(), reference.size());
      for (auto const& [key, value] : reference) {
        auto const* found = map.find(key);
        ASSERT_NE(found, nullptr) << "lost key " << key << " at step " << step;
        ASSERT_EQ(*found, value);
      }
      ASSERT_EQ(map.find(0x7e0000000000ULL), nullptr);
    }
  }
  std::size_t visited = 0;
  map.for_each([&](std::uint64_t key, std::uint64_t value) {
    EXPECT_EQ(reference.at(key), value);
    ++visited;
  });
  EXPECT_EQ(visited, reference.size());
}

}  // namespace
}  // namespace swapalloc
