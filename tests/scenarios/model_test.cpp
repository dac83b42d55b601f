// Tests of tools/scenarios/model.hpp (suite ModelTest): loading records the weights'
// hashes and verify_weights compares with them; inference is deterministic, depends on the
// request and on the weights, survives an eviction, and runs on several threads at once;
// unload gives everything back; bad specs and non-deterministic fillers are refused.
#include "scenario_fixture.hpp"

#include <atomic>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

namespace swapalloc::testing {
namespace {

int const sim_memory_set = set_sim_memory(256 * MiB);

class ModelTest : public StartedScenarioTest {
 protected:
  ModelTest() : StartedScenarioTest(sim_memory_set) {}

  /// A model of 8 MiB in 4 tensors with 1 MiB of activations per slot.
  [[nodiscard]] std::unique_ptr<scenarios::model> make(std::string name, std::size_t slots = 1)
  {
    return context(*s_).make_model(std::move(name), pool_priority::normal, 8 * MiB, 4, 8, slots);
  }
};

TEST_F(ModelTest, LoadRecordsEachTensorsHashAndVerifyFindsThemEqual)
{
  auto const m = make("m");
  EXPECT_FALSE(m->loaded());
  m->load();
  ASSERT_TRUE(m->loaded());
  ASSERT_EQ(m->first_load_hashes().size(), 4U);
  EXPECT_EQ(m->first_load_hashes()[0].name, "m.blocks.0");
  EXPECT_NE(m->first_load_hashes()[0].hash, m->first_load_hashes()[1].hash);
  EXPECT_TRUE(m->verify_weights().empty());
  EXPECT_EQ(m->weight_bytes(), 8 * MiB);
  EXPECT_GE(s_->owner->stats(m->pool(), 0).requested_bytes, m->footprint_bytes());
}

TEST_F(ModelTest, InferenceIsDeterministicAndDependsOnTheRequestAndTheWeights)
{
  auto const a = make("a");
  auto const b = make("b");  // other weights: the salt includes the model's name
  a->load();
  b->load();
  std::uint64_t const first = a->infer(1);
  EXPECT_EQ(a->infer(1), first);
  EXPECT_NE(a->infer(2), first);
  EXPECT_NE(b->infer(1), first);
}

TEST_F(ModelTest, ACorruptedTensorIsNamedByVerifyAndChangesTheOutput)
{
  auto const m = make("m");
  m->load();
  std::vector<std::uint64_t> before;
  for (std::uint64_t request = 0; request < 4; ++request) {
    before.push_back(m->infer(request));
  }
  // Every request samples every stretch of the weights; tensor 2 is all of one stretch.
  // cuMemsetD8 runs on the legacy stream, which the model's non-blocking stream does not
  // wait for: the host waits for it first.
  drv().memset_d8(m->tensor_address(2), 0x5A, m->spec().tensors[2].bytes);
  drv().stream_synchronize(nullptr);
  EXPECT_EQ(m->verify_weights(), std::vector<std::string>{"m.blocks.2"});
  for (std::uint64_t request = 0; request < 4; ++request) {
    EXPECT_NE(m->infer(request), before[request]) << "request " << request;
  }
}

TEST_F(ModelTest, AnEvictedModelIsRestoredByInferenceWithItsBytes)
{
  auto const m = make("m");
  m->load();
  std::uint64_t const out = m->infer(9);
  evict_result const done = s_->owner->evict(m->pool(), 0);
  ASSERT_GT(done.pages_copied, 0U);
  EXPECT_EQ(m->infer(9), out);
  EXPECT_GT(s_->events.totals(m->pool()).restored_bytes, 0U);
  EXPECT_TRUE(m->verify_weights().empty());
}

TEST_F(ModelTest, UnloadGivesBackEveryBlockAndPageAndAReloadHasTheSameBytes)
{
  auto const m = make("m");
  m->load();
  std::uint64_t const out = m->infer(3);
  m->unload();
  EXPECT_FALSE(m->loaded());
  pool_stats const after = s_->owner->stats(m->pool(), 0);
  EXPECT_EQ(after.allocated_bytes, 0U);
  EXPECT_EQ(after.reserved_bytes, 0U);
  EXPECT_THROW((void)m->infer(3), std::logic_error);
  m->load();
  EXPECT_TRUE(m->verify_weights().empty());
  EXPECT_EQ(m->infer(3), out);
}

TEST_F(ModelTest, ThreadsShareTheSlotsAndGetTheOutputsOfSequentialRuns)
{
  auto const m = make("m", 3);
  m->load();
  std::vector<std::uint64_t> expected;
  for (std::uint64_t request = 0; request < 5; ++request) {
    expected.push_back(m->infer(request));
  }
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  threads.reserve(6);
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        std::uint64_t const request = static_cast<std::uint64_t>(t + i) % 5;
        if (m->infer(request) != expected[request]) { wrong.fetch_add(1); }
      }
    });
  }
  for (std::thread& t : threads) {
    t.join();
  }
  EXPECT_EQ(wrong.load(), 0);
}

TEST_F(ModelTest, InconsistentSpecsAreRefusedNamingTheField)
{
  scenarios::model_spec spec =
    scenarios::make_model_spec("bad", pool_priority::normal, MiB, 2, MiB);
  spec.sample_bytes  = 1000 + 2;
  auto const refused = [&](scenarios::model_spec const& bad, char const* word) {
    try {
      scenarios::model m(*s_->owner, drv(), 0, bad, scenario_bf16_weights());
      ADD_FAILURE() << "accepted a spec without " << word;
    } catch (std::invalid_argument const& error) {
      EXPECT_NE(std::string(error.what()).find(word), std::string::npos) << error.what();
    }
  };
  refused(spec, "sample_bytes");
  spec.sample_bytes     = 16 * KiB;
  spec.activation_bytes = 1024;
  refused(spec, "activation_bytes");
  spec.activation_bytes      = MiB;
  spec.tensors.front().bytes = 1024;
  refused(spec, "tensor 'bad.blocks.0'");
  EXPECT_THROW((void)scenarios::make_model_spec("x", pool_priority::normal, 1024, 2, MiB),
               std::invalid_argument);
}

TEST_F(ModelTest, AFillerThatChangesBetweenLoadsIsCaughtAtTheReload)
{
  auto calls    = std::make_shared<std::atomic<int>>(0);
  auto const ok = scenario_bf16_weights();
  scenarios::model m(*s_->owner, drv(), 0,
                     scenarios::make_model_spec("drift", pool_priority::normal, MiB, 1, MiB),
                     [calls, ok](std::span<std::byte> out, std::uint64_t salt) {
                       ok(out, salt + static_cast<std::uint64_t>(calls->fetch_add(1)));
                     });
  m.load();
  m.unload();
  EXPECT_THROW(m.load(), std::runtime_error);
  EXPECT_FALSE(m.loaded()) << "a failed load gives back what it allocated";
}

}  // namespace
}  // namespace swapalloc::testing
