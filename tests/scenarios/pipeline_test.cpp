// Tests of tools/scenarios/pipeline.hpp's parts (suite PipelineTest): sizes scale by the
// divisor and keep the seeds' proportions; make_model_spec's split; model_turns lets one
// model's requests in at a time, admits up to its quantum while another model waits, and
// starves no one.
#include "scenario_fixture.hpp"

#include <array>
#include <atomic>
#include <numeric>
#include <thread>
#include <vector>

namespace swapalloc::testing {
namespace {

TEST(PipelineTest, SizesScaleDownToWholeMultiplesOf64KiB)
{
  EXPECT_EQ(scenarios::scaled(8 * GiB, 32), 256 * MiB);
  EXPECT_EQ(scenarios::scaled(17 * GiB / 10, 32), 54 * MiB + 384 * KiB);  // 54.4 MiB, floored
  EXPECT_EQ(scenarios::scaled(1, 1000), 64 * KiB) << "never 0";
  scenarios::seed001_sizes const full  = scenarios::seed001_sizes::full();
  scenarios::seed001_sizes const small = scenarios::seed001_sizes::scaled_by(128);
  EXPECT_EQ(full.device_bytes, 22 * GiB);
  EXPECT_EQ(small.device_bytes, 176 * MiB);
  EXPECT_EQ(small.flux_bytes, 96 * MiB);
  EXPECT_EQ(scenarios::seed002_sizes::scaled_by(128).external_bytes, 4 * MiB);
  scenarios::seed000_sizes const heads = scenarios::seed000_sizes::scaled_by(32);
  EXPECT_EQ(heads.head_bytes[0], MiB + 256 * KiB) << "40 MiB / 32 = 1.25 MiB";
  EXPECT_EQ(scenarios::seed003_sizes::scaled_by(64).too_big_bytes, 160 * MiB);
}

TEST(PipelineTest, AModelSpecSplitsItsWeightsIntoEqualTensorsButTheLast)
{
  scenarios::model_spec const spec =
    scenarios::make_model_spec("m", pool_priority::high, 10 * MiB + 300, 3, MiB);
  ASSERT_EQ(spec.tensors.size(), 3U);
  EXPECT_EQ(spec.tensors[0].name, "m.blocks.0");
  EXPECT_EQ(spec.tensors[0].bytes, spec.tensors[1].bytes);
  EXPECT_EQ(spec.tensors[0].bytes % 256, 0U);
  std::size_t const total =
    std::accumulate(spec.tensors.begin(), spec.tensors.end(), std::size_t{0},
                    [](std::size_t sum, scenarios::tensor_spec const& t) { return sum + t.bytes; });
  EXPECT_EQ(total, (10 * MiB + 300) / 256 * 256);
  EXPECT_EQ(spec.priority, pool_priority::high);
  // Too small for 8 tensors of one sample each: fewer tensors.
  EXPECT_EQ(scenarios::make_model_spec("s", pool_priority::low, 64 * KiB, 8, MiB).tensors.size(),
            4U);
}

TEST(PipelineTest, ModelTurnsLetOneModelInAtATimeAndStarveNoOne)
{
  scenarios::model_turns turns(2, 4);
  std::array<std::atomic<int>, 2> inside{};
  std::atomic<int> both{0};
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  threads.reserve(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < 50; ++k) {
        std::size_t const m = static_cast<std::size_t>(t + k) % 2;
        auto const place    = turns.enter(m);
        inside[m].fetch_add(1);
        if (inside[1 - m].load() != 0) { both.fetch_add(1); }
        std::this_thread::yield();
        inside[m].fetch_sub(1);
      }
      done.fetch_add(1);
    });
  }
  for (std::thread& t : threads) {
    t.join();
  }
  EXPECT_EQ(done.load(), 8);
  EXPECT_EQ(both.load(), 0) << "two models' requests were inside at once";
  // 400 requests alternating per thread, at most 8 threads per turn: at least 50 turns.
  EXPECT_GE(turns.switches(), 50U);
}

TEST(PipelineTest, AModelsTurnStaysOpenWhileNoOtherModelWaits)
{
  scenarios::model_turns turns(2, 1);
  auto const first  = turns.enter(0);
  auto const second = turns.enter(0);  // quantum 1 passed, but nobody waits for model 1
  EXPECT_EQ(turns.switches(), 1U);
}

}  // namespace
}  // namespace swapalloc::testing
