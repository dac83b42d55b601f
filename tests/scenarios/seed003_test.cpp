// Seed 003 (../shared/seeds/003, an LLM tuning system): `with memory_guard(name,
// required_gb)` before each trial, on a 16 GiB device scaled down by `scale`. The guard is
// allocator::ensure_free: it succeeds while other models can be evicted, and fails with
// out_of_memory, whose message shows the pools and what to do, when only the critical
// model being tuned is left. The device is a simulated one of that size and a process limit
// of the same (allocator_options::device_limit), which alone emulates it on a GPU.
#include "scenario_fixture.hpp"

#include <string>
#include <vector>

namespace swapalloc::testing {
namespace {

constexpr std::size_t scale          = 64;  // 16 GiB -> 256 MiB
scenarios::seed003_sizes const sizes = scenarios::seed003_sizes::scaled_by(scale);
int const sim_memory_set             = set_sim_memory(sizes.device_bytes);

class Seed003Test : public ScenarioTest {
 protected:
  void SetUp() override
  {
    ScenarioTest::SetUp();
    expect_scenario_device(sim_memory_set, sizes.device_bytes);
  }
};

TEST_F(Seed003Test, AGuardEvictsTheBaselineForTheTrialAndEverythingComesBackIntact)
{
  auto const s = start(sizes.device_bytes);
  scenarios::seed003_tuning tuning(context(*s), sizes);
  s->watch(tuning.models());
  std::vector<std::uint64_t> const compared = tuning.compare(*s->run, 3);
  // 4.4 + 4.9 GiB resident and 6 GiB asked for pass 85% of 16 GiB: the guard evicts the
  // baseline (normal priority), never the tuned model (critical).
  auto const [trial, made] = tuning.guarded_trial(*s->run, 3);
  ASSERT_EQ(made.evicted.size(), 1U);
  EXPECT_EQ(made.evicted.front(), tuning.baseline().pool());
  EXPECT_GT(made.evicted_bytes, 0U);
  EXPECT_FALSE(scenarios::fully_resident(*s->owner, tuning.baseline()));
  EXPECT_TRUE(scenarios::fully_resident(*s->owner, tuning.tuned()));
  // The same trial again (a new pool, the same weights): room is there now, same output.
  auto const [again, made_again] = tuning.guarded_trial(*s->run, 3);
  EXPECT_EQ(again, trial);
  EXPECT_EQ(made_again.freed_bytes(), 0U) << "the baseline is still evicted: room enough";
  EXPECT_EQ(tuning.compare(*s->run, 3), compared) << "the baseline restored computes the same";
  s->run->step("verify weights", [&] {
    expect_weights_intact({&tuning.tuned(), &tuning.baseline()});
  });
  expect_within_watermark(*s);
  expect_critical_never_evicted(*s, tuning.models());
  EXPECT_GT(expect_accounted(*s, tuning.models()), 0U);
}

TEST_F(Seed003Test, AGuardWithRoomAlreadyMovesNothing)
{
  auto const s = start(sizes.device_bytes);
  scenarios::seed003_tuning tuning(context(*s), sizes);
  s->watch(tuning.models());
  (void)tuning.compare(*s->run, 1);
  scenarios::memory_guard const guard(*s->owner, 0, "small", sizes.device_bytes / 16);
  EXPECT_EQ(guard.made().freed_bytes(), 0U);
  EXPECT_TRUE(guard.made().evicted.empty());
  EXPECT_EQ(s->events.count(event_kind::evict), 0U);
}

TEST_F(Seed003Test, AGuardFailsWithAdviceWhenOnlyTheCriticalModelIsLeft)
{
  auto const s = start(sizes.device_bytes);
  scenarios::seed003_tuning tuning(context(*s), sizes);
  s->watch(tuning.models());
  (void)tuning.compare(*s->run, 5);
  (void)tuning.guarded_trial(*s->run, 5);  // evicts the baseline
  ASSERT_FALSE(scenarios::fully_resident(*s->owner, tuning.baseline()));
  // 10 GiB asked with the 4.4 GiB critical model resident: 85% of 16 GiB cannot be kept.
  try {
    tuning.guard_too_big(*s->run);
    FAIL() << "a guard of " << sizes.too_big_bytes << " bytes was granted";
  } catch (out_of_memory const& error) {
    std::string const message = error.what();
    EXPECT_EQ(error.requested_bytes(), sizes.too_big_bytes);
    EXPECT_NE(message.find("ensure_free("), std::string::npos) << message;
    EXPECT_NE(message.find("critical or not evictable"), std::string::npos) << message;
    EXPECT_NE(message.find("qwen2.5-7b"), std::string::npos) << message;
    EXPECT_NE(message.find("no (critical)"), std::string::npos) << message;
    EXPECT_NE(message.find("to make room:"), std::string::npos) << message;
  }
  EXPECT_EQ(s->events.count(event_kind::out_of_memory), 1U);
  EXPECT_TRUE(scenarios::fully_resident(*s->owner, tuning.tuned()));
  EXPECT_FALSE(scenarios::fully_resident(*s->owner, tuning.baseline())) << "nothing undone";
  expect_critical_never_evicted(*s, tuning.models());
  EXPECT_EQ(s->tally->over().first, 0U) << s->tally->over().second.front();
  expect_weights_intact({&tuning.tuned(), &tuning.baseline()});
}

}  // namespace
}  // namespace swapalloc::testing
