// Fault injection into every driver call that evict and restore make (transfer.hpp): the
// calls are counted in a clean run, then each call of each entry point is made to fail in
// turn. Whatever fails, no live byte is lost and the allocator stays usable: a failed
// evict leaves the rest resident, a failed restore leaves the pool evicted, and the next
// evict or restore succeeds. A chunk whose bytes changed in host memory fails its
// checksum with an error naming the pool and the chunk. The sweeps run with both
// compression timings: lazy (the default: copies stay raw) and behind each eviction.
#include "fault_sweep.hpp"
#include "swap_fixture.hpp"

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace swapalloc::testing {
namespace {

/// The swap fixture with the compression timing of the parameter: lazy (the default), or
/// behind every eviction (compress_after 0).
class SwapFaultTest : public SwapTest, public ::testing::WithParamInterface<bool> {
 protected:
  [[nodiscard]] allocator_options options() const override
  {
    allocator_options o = SwapTest::options();
    if (GetParam()) { o.compress_after = std::chrono::milliseconds(0); }
    return o;
  }
};

INSTANTIATE_TEST_SUITE_P(CompressionTiming, SwapFaultTest, ::testing::Values(false, true),
                         [](::testing::TestParamInfo<bool> const& info) {
                           return info.param ? std::string("behind") : std::string("lazy");
                         });

TEST_P(SwapFaultTest, AFaultAtAnyDriverCallOfEvictLosesNothing)
{
  SIM_ONLY(sim(), "injects driver failures");
  pool_id const pool = make_pool("model", codec_id::shuffle2_lz4);
  auto blocks        = populate(pool, data_kind::bf16_weights, 12 * MiB, 41, 0.8);
  auto const made    = calls_made(sim(), [&] { (void)alloc().evict(pool, 0); });
  ASSERT_FALSE(made.empty());
  (void)alloc().restore(pool, 0);
  std::size_t injected = 0;
  for (auto const& [entry, nth] : faults_for(made)) {
    SCOPED_TRACE(std::string(entry) + " call " + std::to_string(nth));
    ASSERT_EQ(sim().fail_call(entry, nth, CUDA_SUCCESS), CUDA_SUCCESS);
    try {
      (void)alloc().evict(pool, 0);
    } catch (std::exception const&) {  // cuda_error, or out_of_memory-like failures
    }
    sim().clear_faults();
    ++injected;
    ASSERT_EQ(alloc().check(), "");
    (void)alloc().restore(pool, 0);  // whatever was evicted comes back
    ASSERT_EQ(alloc().stats(pool, 0).evicted_bytes, 0U);
    expect_intact(blocks, "after the failed evict and a restore");
    ASSERT_FALSE(HasFatalFailure());
  }
  EXPECT_GE(made.size(), 10U) << "entry points the evict calls, each failed at least once";
  EXPECT_EQ(injected, faults_for(made).size());
  evict_result const clean = alloc().evict(pool, 0);  // usable after all of them
  EXPECT_GT(clean.pages_copied, 0U);
  (void)alloc().restore(pool, 0);
  expect_intact(blocks, "after the last clean cycle");
  free_all(blocks);
}

TEST_F(SwapTest, AnEvictWhoseStreamCannotBeWaitedForKeepsItsExtentsUntilTheNextTransfer)
{
  // The evict fails while copies are in flight, and so does its wait for them: those
  // copies may still be writing into their extents, so the extents must not be handed to
  // another page (or a compression job) until a later wait has succeeded.
  SIM_ONLY(sim(), "injects driver failures and reads the census");
  pool_id const pool              = make_pool("model", codec_id::shuffle2_lz4);
  auto blocks                     = populate(pool, data_kind::bf16_weights, 12 * MiB, 47, 1.0);
  std::size_t const host_at_start = sim().pinned_host_bytes();
  ASSERT_EQ(sim().fail_call("cuEventSynchronize", 1, CUDA_SUCCESS), CUDA_SUCCESS);
  ASSERT_EQ(sim().fail_call("cuStreamSynchronize", 1, CUDA_SUCCESS), CUDA_SUCCESS);
  EXPECT_THROW((void)alloc().evict(pool, 0), cuda_error);
  sim().clear_faults();
  EXPECT_EQ(alloc().check(), "");
  alloc().wait_for_compression(pool);
  std::size_t const staging = staging_ring_bytes();
  EXPECT_GT(sim().pinned_host_bytes(), host_at_start + staging)
    << "the unsettled extents are still held";
  (void)alloc().restore(pool, 0);  // whatever was unmapped before the failure
  EXPECT_EQ(alloc().stats(pool, 0).evicted_bytes, 0U);
  expect_intact(blocks, "after the failed evict and a restore");
  evict_result const clean = alloc().evict(pool, 0);
  EXPECT_GT(clean.pages_copied, 0U);
  (void)alloc().restore(pool, 0);
  EXPECT_EQ(alloc().host_stats(0).used_bytes, 0U)
    << "a later transfer waited for the stream and gave the extents back";
  EXPECT_EQ(sim().pinned_host_bytes(), host_at_start + staging + alloc().host_stats(0).held_bytes)
    << "what the store holds is its warm slabs";
  (void)alloc().empty_cache();
  EXPECT_EQ(sim().pinned_host_bytes(), host_at_start + staging);
  expect_intact(blocks, "after a clean cycle");
  free_all(blocks);
}

TEST_P(SwapFaultTest, AFaultAtAnyDriverCallOfRestoreLeavesThePoolEvictedAndRestorable)
{
  SIM_ONLY(sim(), "injects driver failures");
  pool_id const pool = make_pool("model", codec_id::lz4);
  auto blocks        = populate(pool, data_kind::fp32_weights, 12 * MiB, 43, 0.8);
  (void)alloc().evict(pool, 0);
  auto const made = calls_made(sim(), [&] { (void)alloc().restore(pool, 0); });
  ASSERT_FALSE(made.empty());
  std::size_t failed = 0;
  for (auto const& [entry, nth] : faults_for(made)) {
    SCOPED_TRACE(std::string(entry) + " call " + std::to_string(nth));
    (void)alloc().evict(pool, 0);
    std::size_t const evicted = alloc().stats(pool, 0).evicted_bytes;
    ASSERT_GT(evicted, 0U);
    ASSERT_EQ(sim().fail_call(entry, nth, CUDA_SUCCESS), CUDA_SUCCESS);
    bool threw = false;
    try {
      (void)alloc().restore(pool, 0);
    } catch (std::exception const&) {
      threw = true;
    }
    sim().clear_faults();
    ASSERT_EQ(alloc().check(), "");
    if (threw) {
      ++failed;
      EXPECT_EQ(alloc().stats(pool, 0).evicted_bytes, evicted) << "a failed restore stays evicted";
      (void)alloc().restore(pool, 0);
    }
    ASSERT_EQ(alloc().stats(pool, 0).evicted_bytes, 0U);
    expect_intact(blocks, "after the failed restore and a retry");
    ASSERT_FALSE(HasFatalFailure());
  }
  EXPECT_GT(failed, 5U) << "most injected faults must make restore fail";
  free_all(blocks);
}

}  // namespace
}  // namespace swapalloc::testing
