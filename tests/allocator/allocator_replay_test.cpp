// Replays the allocation traces recorded from real PyTorch runs (tests/data/traces) on
// the allocator: every block is written through the driver and checked before its free,
// the structure stays consistent, fragmentation stays bounded (peak reserved over peak
// live bytes, the figure BM_Replay reports), and empty_cache gives everything back.
#include "allocator_fixture.hpp"

#include <replay/alloc_trace.hpp>

#include <string>
#include <vector>

namespace swapalloc::testing {
namespace {

class AllocatorReplay : public AllocatorTest, public ::testing::WithParamInterface<char const*> {
 protected:
  [[nodiscard]] static replay::trace load(char const* name)
  {
    return replay::trace(std::string(SWAPALLOC_TRACE_DIR) + "/" + name + ".trace");
  }
};

TEST_P(AllocatorReplay, ReservedStaysWithin115PercentOfLive)
{
  replay::trace const recorded = load(GetParam());
  std::size_t const before     = free_bytes();
  std::size_t const peak       = replay::replay(alloc(), recorded, 0, {});
  double const ratio = static_cast<double>(peak) / static_cast<double>(recorded.peak_live_bytes());
  RecordProperty("reserved_over_live", std::to_string(ratio));
  EXPECT_LE(ratio, 1.15) << GetParam() << ": peak reserved " << peak << " for peak live "
                         << recorded.peak_live_bytes();
  EXPECT_GE(ratio, 1.0);
  pool_stats const s = alloc().stats(default_pool, 0);
  EXPECT_EQ(s.live_blocks, 0U);
  EXPECT_EQ(s.allocations, recorded.allocations());
  EXPECT_EQ(s.frees, recorded.allocations());
  (void)alloc().empty_cache();
  EXPECT_EQ(free_bytes(), before);
}

TEST_P(AllocatorReplay, EveryBlockHoldsItsDataUntilItsFree)
{
  replay::trace const recorded = load(GetParam());
  std::vector<std::pair<CUdeviceptr, std::uint32_t>> live(recorded.allocations(), {0, 0});
  scoped_stream const stream(drv());
  std::size_t checked = 0;
  for (replay::event const& e : recorded.events()) {
    if (e.kind == replay::event_kind::alloc) {
      CUdeviceptr const ptr     = alloc().allocate(e.bytes, 0, stream);
      std::uint32_t const value = 0x7ACE0000U + e.id;
      if (e.bytes >= 4) { fill(ptr, e.bytes / 4 * 4, value, stream); }
      live[e.id] = {ptr, value};
      continue;
    }
    auto const [ptr, value] = live[e.id];
    if (e.bytes >= 4) {
      ASSERT_EQ(word_at(ptr, 0, stream), value) << "allocation " << e.id << " was overwritten";
      ASSERT_EQ(word_at(ptr, e.bytes / 4 * 4 - 4, stream), value) << "allocation " << e.id;
      ++checked;
    }
    alloc().deallocate(ptr, e.bytes, 0, stream);
    live[e.id] = {0, 0};
  }
  for (replay::event const& e : recorded.events()) {
    if (e.kind == replay::event_kind::alloc && live[e.id].first != 0) {
      alloc().deallocate(live[e.id].first, e.bytes, 0, stream);
    }
  }
  EXPECT_GT(checked, recorded.allocations() / 2);
  EXPECT_EQ(alloc().check(), "");
}

INSTANTIATE_TEST_SUITE_P(RecordedTraces, AllocatorReplay,
                         ::testing::Values("gpt_train_step", "gpt_generate", "cnn_infer"),
                         [](auto const& info) { return std::string(info.param); });

}  // namespace
}  // namespace swapalloc::testing
