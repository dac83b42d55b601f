// Seeds 002 and 004 (../shared/seeds/002, 004): llama.cpp's 3B chat (2.2 GiB) and 7B code
// (4.4 GiB) servers on a 6 GiB device of which 0.5 GiB is used by other processes, scaled
// down by `scale`, with 10 client threads alternating between the two (the seed's load
// test: 10 concurrent requests, the same prompts over and over). The two do not fit
// together (7.1 GiB), so requests take turns by model (pipeline.hpp model_turns) and the
// policy swaps the pools at every turn. Then a soak (the seed's "30-minute load test
// without OOM"): 1000 requests in CI (250 under TSan), `--soak-minutes N` (or
// SWAPALLOC_SOAK_MINUTES) for as long as asked, with flat host memory.
//
// The external usage is set through the simulator's control API: on a real GPU the tests
// skip.
#include "sanitizer_build.hpp"
#include "scenario_fixture.hpp"

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace swapalloc::testing {
namespace {

// 6 GiB -> 48 MiB. At this scale the code model's pages (36 MiB of weights, a page of
// request slots) and the other processes' 4 MiB are 0.875 of the device, within the checks'
// one-page allowance above 0.85 (at full scale: 4.97 of 6 GiB, 0.83).
constexpr std::size_t scale   = 128;
constexpr std::size_t clients = 10;
constexpr std::size_t prompts = 8;
// Requests of the soak after its warm-up: 1000, and 250 under ThreadSanitizer, whose stage
// hunts races (the plain and ASan+UBSan builds keep the seed's 1000 and the leak bound's
// strength). Measured on 2 cores: 1100 requests took about 10 s in a plain build and 129 s
// under TSan in CI's stage, its longest test.
constexpr std::size_t soak_requests  = thread_sanitizer_build ? 250 : 1000;
scenarios::seed002_sizes const sizes = scenarios::seed002_sizes::scaled_by(scale);
int const sim_memory_set             = set_sim_memory(sizes.device_bytes);

/// Minutes the soak runs after its `soak_requests` (0: none): --soak-minutes or
/// SWAPALLOC_SOAK_MINUTES.
[[nodiscard]] double soak_minutes()
{
  char const* value = std::getenv("SWAPALLOC_SOAK_MINUTES");
  return value != nullptr ? std::strtod(value, nullptr) : 0.0;
}

/// Checks each reply against the output its (model, prompt) gave when run alone.
class reply_check {
 public:
  explicit reply_check(std::map<std::pair<std::size_t, std::uint64_t>, std::uint64_t> expected)
    : expected_(std::move(expected))
  {
  }
  void operator()(scenarios::seed002_reply const& reply)
  {
    replies_.fetch_add(1);
    if (expected_.at({reply.model, reply.prompt}) != reply.output) { wrong_.fetch_add(1); }
  }
  [[nodiscard]] std::size_t replies() const noexcept { return replies_.load(); }
  [[nodiscard]] std::size_t wrong() const noexcept { return wrong_.load(); }

 private:
  std::map<std::pair<std::size_t, std::uint64_t>, std::uint64_t> const expected_;
  std::atomic<std::size_t> replies_{0};
  std::atomic<std::size_t> wrong_{0};
};

class Seed002Test : public ScenarioTest {
 protected:
  void SetUp() override
  {
    ScenarioTest::SetUp();
    SIM_ONLY(sim(), "other processes' device memory is set through the simulator");
    ASSERT_EQ(sim_memory_set, 0);
    ASSERT_EQ(drv().mem_get_info().total, sizes.device_bytes);
    ASSERT_EQ(sim().set_external_usage(0, sizes.external_bytes), CUDA_SUCCESS);
    external_set_ = true;
  }
  void TearDown() override
  {
    if (external_set_) { EXPECT_EQ(sim().set_external_usage(0, 0), CUDA_SUCCESS); }
    ScenarioTest::TearDown();
  }

  /// Loads both models and runs each prompt on each alone: the outputs every later reply
  /// must give.
  static std::map<std::pair<std::size_t, std::uint64_t>, std::uint64_t> load_and_expect(
    scenario_run const& s, scenarios::seed002_service& service)
  {
    service.load(*s.run);
    std::map<std::pair<std::size_t, std::uint64_t>, std::uint64_t> expected;
    for (std::size_t m = 0; m < 2; ++m) {
      for (std::uint64_t prompt = 0; prompt < prompts; ++prompt) {
        expected[{m, prompt}] = service.serve(*s.run, m, prompt);
      }
    }
    return expected;
  }

  /**
   * @brief Brings the service to the same state whatever ran before: chat served, code
   *        wholly evicted with its compression finished; then returns the host memory in
   *        use (scenario_fixture.hpp host_memory_in_use).
   */
  [[nodiscard]] std::size_t settled_host_memory(scenario_run const& s,
                                                scenarios::seed002_service& service) const
  {
    (void)service.serve(*s.run, 0, 0);
    s.run->step("evict code", [&] { (void)s.owner->evict(service.code().pool(), 0); });
    s.owner->wait_for_compression(service.code().pool());
    s.owner->wait_for_compression(service.chat().pool());
    // What is cached goes back first: the host store's empty slabs and the engine's codec
    // scratch (a buffer per job that ran at once, about 1 MiB each: how many depends on
    // the threads' timing, which made the bound fail by one buffer).
    (void)s.owner->empty_cache();
    return host_memory_in_use(sim());
  }

  /// Invariants at the end: weights intact (a step), under the watermark, accounted.
  void expect_scenario_invariants(scenario_run const& s, scenarios::seed002_service& service) const
  {
    s.run->step("verify weights", [&] {
      expect_weights_intact({&service.chat(), &service.code()});
    });
    expect_within_watermark(s);
    EXPECT_GT(expect_accounted(s, service.models()), 0U);
  }

 private:
  bool external_set_{false};
};

TEST_F(Seed002Test, TenClientsAlternatingBetweenChatAndCodeStayUnderTheWatermarkUncorrupted)
{
  auto const s = start(std::nullopt);
  scenarios::seed002_service service(context(*s), sizes);
  s->watch(service.models());
  reply_check check(load_and_expect(*s, service));
  std::size_t const requests = 200;
  service.run_clients(*s->run, clients, requests, prompts, std::ref(check));
  EXPECT_EQ(check.replies(), requests);
  EXPECT_EQ(check.wrong(), 0U) << "replies that differ from their prompt's output alone";
  // 2.2 + 4.4 + 0.5 GiB do not fit under 85% of 6 GiB: every turn swaps the models.
  EXPECT_GE(service.turns(), requests / (2 * clients));
  EXPECT_GT(s->events.totals(service.code().pool()).returned_bytes(), 0U);
  EXPECT_GT(s->events.totals(service.chat().pool()).returned_bytes(), 0U);
  EXPECT_GT(s->run->peak_device_used_bytes(), sizes.code_bytes + sizes.external_bytes)
    << "the code model and the other processes were on the device together";
  expect_scenario_invariants(*s, service);
}

TEST_F(Seed002Test, ASoakOfAThousandRequestsKeepsHostMemoryFlat)
{
  auto const s = start(std::nullopt, false, {}, /*keep_records=*/false);
  scenarios::seed002_service service(context(*s), sizes);
  s->watch(service.models());
  reply_check check(load_and_expect(*s, service));
  // Warm-up: every allocation that lasts (the host store's memory, the staging ring, the
  // simulator's and the threads' arenas) is made.
  service.run_clients(*s->run, clients, 100, prompts, std::ref(check));
  std::size_t const warm = settled_host_memory(*s, service);
  ASSERT_GT(warm, 0U);
  auto const until = std::chrono::steady_clock::now() +
                     std::chrono::duration<double, std::ratio<60>>(soak_minutes());
  std::size_t soaked = 0;
  do {
    service.run_clients(*s->run, clients, soak_requests, prompts, std::ref(check));
    soaked += soak_requests;
  } while (std::chrono::steady_clock::now() < until);
  std::size_t const end = settled_host_memory(*s, service);
  // Measured: 44 KiB apart (live heap bytes, scenario_fixture.hpp). A leak of 1 KiB per
  // request passes the bound of 1 MiB in 1000 requests (4 KiB in TSan's 250); the host copy of the
  // code model is 35 MiB.
  EXPECT_LE(end, warm + MiB) << "host memory after warm-up " << warm << ", after " << soaked
                             << " more requests " << end;
  EXPECT_EQ(check.wrong(), 0U);
  EXPECT_EQ(check.replies(), 100 + soaked);
  expect_scenario_invariants(*s, service);
}

}  // namespace
}  // namespace swapalloc::testing

/// GoogleTest's main, taking `--soak-minutes N` (or `--soak-minutes=N`) first: the soak
/// then runs for at least N minutes (SWAPALLOC_SOAK_MINUTES does the same).
int main(int argc, char** argv)
{
  std::vector<char*> kept;
  for (int i = 0; i < argc; ++i) {
    std::string const arg = argv[i];
    if (arg == "--soak-minutes" && i + 1 < argc) {
      ::setenv("SWAPALLOC_SOAK_MINUTES", argv[++i], 1);
    } else if (arg.rfind("--soak-minutes=", 0) == 0) {
      ::setenv("SWAPALLOC_SOAK_MINUTES", arg.c_str() + std::strlen("--soak-minutes="), 1);
    } else {
      kept.push_back(argv[i]);
    }
  }
  int kept_count = static_cast<int>(kept.size());
  kept.push_back(nullptr);  // argv[argc] is null: GoogleTest moves it when it removes a flag
  ::testing::InitGoogleTest(&kept_count, kept.data());
  return RUN_ALL_TESTS();
}
