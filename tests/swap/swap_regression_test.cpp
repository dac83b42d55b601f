// Regression tests of issue 9: ordinary sequences in which the swap tier gave back wrong
// bytes, lost host memory, failed to recover, or broke its own invariants, replayed from
// users' reports (torch_memory_saver, vLLM's sleep mode, PyTorch's caching allocator,
// ComfyUI). Each test is the smallest input found and asserts the right outcome. The
// device is 64 MiB, so that out-of-memory and fragmentation are reached as reported.
#include "swap_fixture.hpp"

#include <cstdlib>
#include <string>
#include <vector>

namespace swapalloc::testing {
namespace {

// Before any test initializes the driver: the simulator reads this at cuInit.
int const small_device = ::setenv("SWAPALLOC_SIM_MEMORY", "64M", 0);

class SwapRegressionTest : public SwapTest {
 protected:
  void SetUp() override
  {
    SwapTest::SetUp();
    if (!sim().available()) { GTEST_SKIP() << "needs the simulator's 64 MiB device"; }
    ASSERT_EQ(small_device, 0);
    ASSERT_EQ(drv().mem_get_info().total, 64 * MiB)
      << "SWAPALLOC_SIM_MEMORY was set by the environment";
  }

  /// Host bytes the simulator holds beyond the transfer engine's staging ring.
  [[nodiscard]] std::size_t host_bytes_beyond_staging(std::size_t at_start) const
  {
    return sim().pinned_host_bytes() - at_start - staging_ring_bytes();
  }

  /// 4 x 8 MiB of weights in `pool` (from `seed`), evicted: half the device on the host.
  std::vector<filled_block> evicted_weights(pool_id pool, std::uint64_t seed)
  {
    std::vector<filled_block> blocks;
    for (std::uint64_t i = 0; i < 4; ++i) {
      blocks.push_back(fill_new(pool, 8 * MiB, seed + i));
    }
    (void)alloc().evict(pool, 0);
    return blocks;
  }

  /// Evicts a pool of one 4 KiB block, so that the device's swap tier (streams, staging
  /// ring) exists before a test measures host memory.
  void warm_up_swap_tier()
  {
    pool_id const warm = make_pool("warm");
    filled_block b     = fill_new(warm, 4096, 1);
    (void)alloc().evict(warm, 0);
    alloc().deallocate(b.ptr, b.bytes, 0, nullptr);
  }
};

// Case 1. A block placed on an evicted page lost the evicted data: freeing S (or running
// empty_cache) while evicted let the high-water mark drop into A's last page, which is
// evicted, and a fresh page was mapped over it; restore skipped it, A's last 1 MiB + 4 KiB
// came back as garbage and 1,052,672 host bytes stayed orphaned.
TEST_F(SwapRegressionTest, ABlockAllocatedAfterAFreeWhileEvictedNeverLandsOnAnEvictedPage)
{
  warm_up_swap_tier();
  std::size_t const host_at_start = sim().pinned_host_bytes() - staging_ring_bytes();
  pool_id const pool              = make_pool("model");
  filled_block s                  = fill_new(pool, 4 * KiB, 11);
  std::vector<filled_block> a{fill_new(pool, 3 * MiB + 4 * KiB, 12)};
  (void)alloc().evict(pool, 0);
  alloc().deallocate(s.ptr, s.bytes, 0, nullptr);  // still evicted
  EXPECT_EQ(alloc().check(), "");
  std::vector<filled_block> fresh{fill_new(pool, 2 * MiB, 13)};
  EXPECT_EQ(alloc().check(), "");
  CUdeviceptr const a_last_page = (a[0].ptr + a[0].bytes - 1) / gran() * gran();
  EXPECT_TRUE(fresh[0].ptr + fresh[0].bytes <= a_last_page || fresh[0].ptr >= a_last_page + gran())
    << "the new block lies on A's last page, which is evicted";
  (void)alloc().restore(pool, 0);
  expect_intact(a, "A after the restore");
  expect_intact(fresh, "the block allocated while evicted");
  alloc().wait_for_compression(pool);
  EXPECT_EQ(alloc().stats(pool, 0).host_bytes, 0U) << "no host copy is orphaned";
  EXPECT_EQ(host_bytes_beyond_staging(host_at_start), 0U) << "the host store is empty";
  free_all(a);
  free_all(fresh);
}

TEST_F(SwapRegressionTest, EmptyCacheWhileEvictedNeverLetsABlockLandOnAnEvictedPage)
{
  warm_up_swap_tier();
  std::size_t const host_at_start = sim().pinned_host_bytes() - staging_ring_bytes();
  pool_id const pool              = make_pool("model");
  std::vector<filled_block> kept{fill_new(pool, 4 * KiB, 21),
                                 fill_new(pool, 3 * MiB + 4 * KiB, 22)};
  (void)alloc().evict(pool, 0);
  (void)alloc().empty_cache();
  EXPECT_EQ(alloc().check(), "");
  std::vector<filled_block> fresh{fill_new(pool, 2 * MiB, 23)};
  (void)alloc().restore(pool, 0);
  expect_intact(kept, "the evicted blocks after the restore");
  expect_intact(fresh, "the block allocated while evicted");
  EXPECT_EQ(host_bytes_beyond_staging(host_at_start), 0U) << "the host store is empty";
  free_all(kept);
  free_all(fresh);
}

// Case 2. An RL weight-update loop: after set_read_only(false) and new weights, the second
// evict copied 0 bytes and restore brought back the old weights.
TEST_F(SwapRegressionTest, APoolMadeWritableAgainIsCopiedAtItsNextEviction)
{
  pool_options o;
  o.read_only        = true;
  pool_id const pool = alloc().create_pool("policy", o);
  std::vector<filled_block> blocks;
  std::uint64_t seed = 31;
  for (std::size_t bytes : {4 * MiB, 3 * MiB + 512, 256 * KiB, 5 * MiB}) {
    blocks.push_back(fill_new(pool, bytes, seed++));
  }
  (void)alloc().evict(pool, 0);
  (void)alloc().restore(pool, 0);  // the copies are kept, the pages clean
  expect_intact(blocks, "the first restore");
  alloc().set_read_only(pool, false);
  alloc().wait_for_compression(pool);
  EXPECT_EQ(alloc().stats(pool, 0).host_bytes, 0U) << "the kept copies are no longer trusted";
  for (filled_block& b : blocks) {  // the weight update
    b.data = make_data(data_kind::random_bytes, b.bytes, seed++);
    drv().memcpy_htod(b.ptr, b.data.data(), b.bytes);
  }
  evict_result const second = alloc().evict(pool, 0);
  EXPECT_EQ(second.live_bytes, live_bytes(blocks)) << "every new byte is copied out";
  (void)alloc().restore(pool, 0);
  expect_intact(blocks, "the new weights after the second restore");
  free_all(blocks);
}

// Found by the model-based test (tests/model): a read-only pool kept the copy of a page
// whose blocks were then all freed; its next eviction took the kept copy for the page's
// data and refused to evict a page without blocks (a logic_error from the page table).
TEST_F(SwapRegressionTest, AKeptCopyOfAPageWhoseBlocksWereAllFreedIsDroppedAtEviction)
{
  pool_options o;
  o.read_only        = true;
  pool_id const pool = alloc().create_pool("weights", o);
  filled_block gone  = fill_new(pool, 2 * MiB, 81);  // page 0 alone
  std::vector<filled_block> kept{fill_new(pool, 2 * MiB, 82)};
  (void)alloc().evict(pool, 0);
  (void)alloc().restore(pool, 0);  // both copies kept
  alloc().deallocate(gone.ptr, gone.bytes, 0, nullptr);
  evict_result const again = alloc().evict(pool, 0);
  EXPECT_EQ(again.pages_unmapped, 2U) << "page 0 released, page 1 unmapped with its copy";
  EXPECT_EQ(again.pages_copied, 0U);
  EXPECT_EQ(alloc().check(), "");
  (void)alloc().restore(pool, 0);
  expect_intact(kept, "the block whose copy was kept");
  alloc().set_read_only(pool, false);
  free_all(kept);
}

// Case 3. A restore failed (a copy), and so did its rollback's first unmap; the retry
// returned normally with the block wrong from byte 1,048,576 and 2 MiB of host copy left in
// the store for good. A page whose rollback unmap failed is not resident: the retry fills it.
// (The case failed the second copy; raw chunks are now copied without waiting for their
// checksums, so the 6.3 MiB gather into one copy, and the fault is on that one.)
TEST_F(SwapRegressionTest, ARestoreWhoseRollbackCouldNotUnmapAPageFillsItAtTheRetry)
{
  warm_up_swap_tier();
  std::size_t const host_at_start = sim().pinned_host_bytes() - staging_ring_bytes();
  pool_id const pool              = make_pool("raw", codec_id::raw);
  std::vector<filled_block> blocks{fill_new(pool, 6 * MiB, 41), fill_new(pool, 300 * KiB, 42)};
  evict_result const out = alloc().evict(pool, 0);
  ASSERT_EQ(out.pages_copied, 4U);
  alloc().wait_for_compression(pool);  // the restore's copies the same at any pace
  ASSERT_EQ(sim().fail_call("cuMemcpyHtoDAsync", 1, CUDA_SUCCESS), CUDA_SUCCESS);
  ASSERT_EQ(sim().fail_call("cuMemUnmap", 1, CUDA_SUCCESS), CUDA_SUCCESS);
  EXPECT_THROW((void)alloc().restore(pool, 0), cuda_error);
  sim().clear_faults();
  EXPECT_EQ(alloc().check(), "");
  pool_stats const failed = alloc().stats(pool, 0);
  EXPECT_EQ(failed.reserved_bytes, 0U) << "the page left mapped is not counted resident";
  EXPECT_EQ(failed.evicted_bytes, 4 * gran()) << "its data is still in its host copy";
  restore_result const back = alloc().restore(pool, 0);
  EXPECT_EQ(back.pages, 4U) << "the page left mapped is filled too";
  expect_intact(blocks, "after the retry");
  EXPECT_EQ(alloc().stats(pool, 0).evicted_bytes, 0U);
  EXPECT_EQ(host_bytes_beyond_staging(host_at_start), 0U) << "no host copy stays behind";
  free_all(blocks);
}

// Case 4. Restore threw a raw cuMemCreate out-of-memory with 48 MiB idle in another pool's
// cache, although allocating 32 MiB in the same state succeeded.
TEST_F(SwapRegressionTest, RestoreReleasesCachedPagesBeforeGivingUp)
{
  pool_id const weights            = make_pool("weights");
  pool_id const scratch            = make_pool("scratch");
  std::vector<filled_block> blocks = evicted_weights(weights, 51);
  {
    pool_scope const scope(alloc(), scratch);
    CUdeviceptr const p = alloc().allocate(48 * MiB, 0, nullptr);
    alloc().deallocate(p, 48 * MiB, 0, nullptr);  // cached
  }
  ASSERT_EQ(alloc().stats(scratch, 0).reserved_bytes, 48 * MiB);
  restore_result const back = alloc().restore(weights, 0);
  EXPECT_EQ(back.pages, 16U);
  // The policy releases what the restore needs (down to the low watermark, 48 MiB of 64):
  // 48 cached + 32 restored - 48 = 32 MiB of scratch's 48 cached.
  EXPECT_LE(alloc().stats(scratch, 0).reserved_bytes, 16 * MiB) << "scratch's cache made room";
  expect_intact(blocks, "after the restore");
  free_all(blocks);
}

TEST_F(SwapRegressionTest, ARestoreThatCannotFitThrowsOutOfMemoryAndStaysRestorable)
{
  pool_id const weights            = make_pool("weights");
  pool_id const scratch            = make_pool("scratch");
  std::vector<filled_block> blocks = evicted_weights(weights, 61);
  CUdeviceptr held                 = 0;
  {
    pool_scope const scope(alloc(), scratch);
    held = alloc().allocate(48 * MiB, 0, nullptr);  // live: nothing to release
  }
  alloc().pin_pool(scratch);  // in use: the policy may not evict it either
  try {
    (void)alloc().restore(weights, 0);
    FAIL() << "32 MiB of pages were restored beside 48 MiB live on a 64 MiB device";
  } catch (out_of_memory const& error) {
    std::string const what = error.what();
    EXPECT_EQ(error.requested_bytes(), 32 * MiB);
    for (std::string const needle :
         {"restoring pool 'weights' (32.00 MiB of evicted pages)", "its pages need 32.00 MiB",
          "scratch", "weights", "evicted", "to make room", "no (pinned or active)"}) {
      EXPECT_NE(what.find(needle), std::string::npos) << "missing '" << needle << "' in:\n" << what;
    }
  }
  EXPECT_EQ(alloc().check(), "");
  EXPECT_EQ(alloc().stats(weights, 0).evicted_bytes, 32 * MiB) << "still evicted, intact";
  EXPECT_EQ(alloc().stats(scratch, 0).evicted_bytes, 0U) << "pinned: never evicted";
  alloc().unpin_pool(scratch);
  alloc().deallocate(held, 48 * MiB, 0, nullptr);
  (void)alloc().restore(weights, 0);
  expect_intact(blocks, "after the room was made");
  free_all(blocks);
}

// Case 5. With a reservation the size of the device, small pages left between freed large
// runs fragmented the range: "no free run that large" with 48 MiB of 64 free.
TEST_F(SwapRegressionTest, FragmentedAddressesDoNotRunOutBeforeTheDevice)
{
  pool_id const pool = alloc().create_pool("model");
  pool_scope const scope(alloc(), pool);
  std::vector<CUdeviceptr> large;
  std::vector<CUdeviceptr> small;
  try {
    for (;;) {
      large.push_back(alloc().allocate(6 * MiB, 0, nullptr));
      for (int i = 0; i < 4; ++i) {
        small.push_back(alloc().allocate(512 * KiB, 0, nullptr));
      }
    }
  } catch (out_of_memory const&) {  // the device is full
  }
  ASSERT_GE(large.size(), 7U);
  for (CUdeviceptr p : large) {
    alloc().deallocate(p, 6 * MiB, 0, nullptr);
  }
  (void)alloc().empty_cache();
  EXPECT_GE(free_bytes(), 40 * MiB);
  CUdeviceptr big = 0;
  EXPECT_NO_THROW(big = alloc().allocate(12 * MiB, 0, nullptr));
  alloc().deallocate(big, 12 * MiB, 0, nullptr);
  for (CUdeviceptr p : small) {
    alloc().deallocate(p, 512 * KiB, 0, nullptr);
  }
}

// Case 7. check() failed while evicted ("uncoalesced free neighbours at offset 4198400"):
// parking left a cut-off piece of Q beside the parked R without merging them.
TEST_F(SwapRegressionTest, TheStructureStaysConsistentWhenBlocksAreFreedWhileEvicted)
{
  pool_id const pool = make_pool("model");
  filled_block q     = fill_new(pool, 4 * MiB + 4 * KiB, 71);
  filled_block r     = fill_new(pool, MiB + 512, 72);
  std::vector<filled_block> s{fill_new(pool, 2 * MiB, 73)};
  ASSERT_EQ(r.ptr, q.ptr + q.bytes);
  ASSERT_EQ(s[0].ptr, r.ptr + round_request(r.bytes)) << "Q, R and S are contiguous";
  (void)alloc().evict(pool, 0);
  alloc().deallocate(r.ptr, r.bytes, 0, nullptr);
  EXPECT_EQ(alloc().check(), "") << "after freeing R";
  alloc().deallocate(q.ptr, q.bytes, 0, nullptr);
  EXPECT_EQ(alloc().check(), "") << "after freeing Q";
  (void)alloc().restore(pool, 0);
  EXPECT_EQ(alloc().check(), "") << "after the restore";
  expect_intact(s, "S after the restore");
  free_all(s);
}

}  // namespace
}  // namespace swapalloc::testing
