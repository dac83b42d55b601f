// Seed 000 (Red Heart AI, ../shared/seeds/000): a critical backbone and five task heads on
// an 8 GiB device, scaled down by `scale`. The seed's hand-written version moves every head
// to the CPU right after initializing it, so only the backbone stays on the GPU (21.5% of
// the device); under the policy the heads stay resident while there is room, and when the
// seed's planned "cache layer" fills the device past 85%, heads are evicted, never the
// backbone. The device is a simulated one of that size and a process limit of the same
// (allocator_options::device_limit), which alone emulates it on a GPU.
#include "scenario_fixture.hpp"

#include "scoped_env.hpp"

namespace swapalloc::testing {
namespace {

constexpr std::size_t scale          = 32;  // 8 GiB -> 256 MiB
scenarios::seed000_sizes const sizes = scenarios::seed000_sizes::scaled_by(scale);
int const sim_memory_set             = set_sim_memory(sizes.device_bytes);

class Seed000Test : public ScenarioTest {
 protected:
  void SetUp() override
  {
    ScenarioTest::SetUp();
    expect_scenario_device(sim_memory_set, sizes.device_bytes);
  }

  /// Every model of the scenario, mutable (for verify_weights).
  static std::vector<scenarios::model*> all_models(scenarios::seed000_scenario& seed)
  {
    std::vector<scenarios::model*> all{&seed.backbone(), &seed.cache()};
    for (std::size_t i = 0; i < scenarios::seed000_head_names.size(); ++i) {
      all.push_back(&seed.head(i));
    }
    return all;
  }
};

TEST_F(Seed000Test, WithHigh085AllFiveHeadsStayResidentWhereTheSeedKeepsNone)
{
  scoped_env const high("SWAPALLOC_HIGH", "0.85");  // read by the allocator at construction
  scoped_env const low("SWAPALLOC_LOW", nullptr);   // the others are set explicitly, or:
  scoped_env const limit("SWAPALLOC_DEVICE_LIMIT", nullptr);
  auto const s = start(sizes.device_bytes, /*read_environment=*/true);
  scenarios::seed000_scenario seed(context(*s), sizes);
  s->watch(seed.models());
  seed.load(*s->run);
  std::vector<std::uint64_t> const in_turn = seed.heads_in_turn(*s->run, 1);
  // The seed keeps the backbone only (its heads go `.to('cpu')` after initialization):
  // 0 heads. The 1.7 GiB backbone and 0.5 GiB of heads are 27% of 8 GiB, below 85%: every
  // head stays.
  EXPECT_EQ(seed.heads_resident(), 5U);
  EXPECT_GT(seed.heads_resident(), scenarios::seed000_scenario::seed_heads_resident);
  std::vector<std::uint64_t> const together = seed.heads_together(*s->run, 1);
  EXPECT_EQ(together, in_turn) << "the heads run together compute what they did in turn";
  EXPECT_EQ(seed.heads_resident(), 5U);
  EXPECT_EQ(s->run->records().back().high_watermark, 0.85) << "SWAPALLOC_HIGH was read";
  EXPECT_EQ(s->run->records().back().limit_bytes, sizes.device_bytes);
  EXPECT_EQ(s->events.count(event_kind::evict), 0U) << "nothing needed the room";
  expect_within_watermark(*s);
  expect_critical_never_evicted(*s, seed.models());
  expect_weights_intact(all_models(seed));
}

TEST_F(Seed000Test, TheFeatureCacheEvictsHeadsNeverTheBackboneAndTheHeadsComeBackIntact)
{
  auto const s = start(sizes.device_bytes);
  scenarios::seed000_scenario seed(context(*s), sizes);
  s->watch(seed.models());
  seed.load(*s->run);
  std::vector<std::uint64_t> const in_turn = seed.heads_in_turn(*s->run, 7);
  ASSERT_EQ(seed.heads_resident(), 5U);
  // 1.7 + 0.5 + 4.6 GiB (and activations) pass 85% of 8 GiB: the policy evicts the heads
  // (normal priority) for the cache; the backbone is critical.
  seed.fill_cache(*s->run);
  EXPECT_LT(seed.heads_resident(), 5U);
  EXPECT_GT(s->events.totals(seed.head(0).pool()).evicted_bytes, 0U)
    << "the least recently used head went first";
  EXPECT_TRUE(scenarios::fully_resident(*s->owner, seed.backbone()));
  // All heads together again: restored (the low-priority cache gives the room), outputs
  // identical to the first run.
  EXPECT_EQ(seed.heads_together(*s->run, 7), in_turn);
  EXPECT_EQ(seed.heads_resident(), 5U);
  EXPECT_GT(s->events.totals(seed.cache().pool()).evicted_bytes, 0U);
  s->run->step("verify weights", [&] { expect_weights_intact(all_models(seed)); });
  expect_within_watermark(*s);
  expect_critical_never_evicted(*s, seed.models());
  EXPECT_GT(expect_accounted(*s, seed.models()), 0U);
}

}  // namespace
}  // namespace swapalloc::testing
