// Tests of the warm host store under the swap tier (host_store.hpp through transfer.hpp and
// the allocator): the second eviction pins nothing and a restore frees no pinned memory;
// compressed chunks take no pinned memory; warm slabs go back at empty_cache, at trim_host
// once idle, and from the pressure monitor; from the low watermark the first victim's room
// is pinned ahead (prepin_host) and kept by trim; a failed free while trimming loses nothing;
// evict and restore report where their time went. Lazy compression (compression_policy.hpp
// through the allocator): copies stay raw until their pool idles past compress_after, or
// are compressed behind when the host budget cannot hold them raw; read-only pools stay
// raw; the pressure monitor compresses idle pools.
#include "pin_methods.hpp"
#include "swap_fixture.hpp"

#include <swapalloc/pressure_monitor.hpp>

#include <chrono>
#include <thread>

namespace swapalloc::testing {
namespace {

TEST_F(SwapTest, TheSecondEvictionPinsNothingAndARestoreFreesNoPinnedMemory)
{
  SIM_ONLY(sim(), "counts the pin and unpin calls");
  pool_id const pool      = make_pool("model", codec_id::raw);
  auto blocks             = populate(pool, data_kind::bf16_weights, 12 * MiB, 41, 1.0);
  evict_result const cold = alloc().evict(pool, 0);
  EXPECT_GT(cold.slabs_pinned, 0U) << "a cold store pins";
  EXPECT_GT(cold.times.pin, 0.0);
  alloc().wait_for_compression(pool);
  pin_method const method = alloc().host_stats(0).pinning;
  auto const frees        = sim().call_count(unpin_entry_of(method));
  auto const any_frees    = sim().call_count("cuMemFreeHost");
  (void)alloc().restore(pool, 0);
  EXPECT_EQ(sim().call_count(unpin_entry_of(method)), frees) << "no pinned free inside restore";
  EXPECT_EQ(sim().call_count("cuMemFreeHost"), any_frees) << "the staging ring stays too";
  host_store_stats const after_restore = alloc().host_stats(0);
  EXPECT_EQ(after_restore.used_bytes, 0U);
  EXPECT_GT(after_restore.warm_bytes, 0U);
  expect_intact(blocks, "after the first restore");

  auto const pins         = sim().call_count(pin_entry_of(method));
  evict_result const warm = alloc().evict(pool, 0);
  EXPECT_EQ(warm.slabs_pinned, 0U);
  EXPECT_EQ(warm.times.pin, 0.0);
  EXPECT_EQ(sim().call_count(pin_entry_of(method)), pins) << "the warm slabs were refilled";
  EXPECT_GT(warm.pages_copied, 0U);
  (void)alloc().restore(pool, 0);
  expect_intact(blocks, "after the warm cycle");
  free_all(blocks);
}

TEST_F(SwapBehindTest, CompressedChunksTakeNoPinnedMemory)
{
  pool_id const pool = make_pool("model", codec_id::shuffle4_zstd);
  auto blocks        = populate(pool, data_kind::fp32_weights, 8 * MiB, 43, 1.0);
  (void)alloc().evict(pool, 0);
  alloc().wait_for_compression(pool);
  host_store_stats const stored = alloc().host_stats(0);
  EXPECT_GT(stored.used_bytes, 0U) << "the compressed chunks";
  EXPECT_EQ(stored.pinned_bytes, stored.warm_bytes)
    << "the raw copies went back once compressed: pinned slabs are all empty, kept warm";
  (void)alloc().restore(pool, 0);
  expect_intact(blocks, "after restore");
  free_all(blocks);
}

/// The host store pins by cuMemHostAlloc (the default registers where the device can).
class SwapHostAllocTest : public SwapTest {
 protected:
  [[nodiscard]] allocator_options options() const override
  {
    allocator_options o = SwapTest::options();
    o.host.pin          = pin_method::host_alloc;
    return o;
  }
};

TEST_F(SwapHostAllocTest, SlabsPinnedByHostAllocCycleAndGoBackAtEmptyCache)
{
  SIM_ONLY(sim(), "counts cuMemHostAlloc and cuMemFreeHost");
  pool_id const pool          = make_pool("model", codec_id::raw);
  auto blocks                 = populate(pool, data_kind::bf16_weights, 12 * MiB, 79, 1.0);
  std::size_t const at_start  = sim().pinned_host_bytes();
  auto const registers        = sim().call_count("cuMemHostRegister");
  auto const allocs           = sim().call_count("cuMemHostAlloc");
  evict_result const cold     = alloc().evict(pool, 0);
  host_store_stats const host = alloc().host_stats(0);
  EXPECT_EQ(host.pinning, pin_method::host_alloc);
  EXPECT_GT(cold.slabs_pinned, 0U);
  EXPECT_EQ(sim().call_count("cuMemHostAlloc"), allocs + 1 + cold.slabs_pinned)
    << "the staging ring and each slab";
  EXPECT_EQ(sim().call_count("cuMemHostRegister"), registers) << "nothing registered";
  (void)alloc().restore(pool, 0);
  expect_intact(blocks, "after a cycle through slabs pinned by cuMemHostAlloc");
  auto const frees = sim().call_count("cuMemFreeHost");
  (void)alloc().empty_cache();
  EXPECT_EQ(sim().call_count("cuMemFreeHost"), frees + cold.slabs_pinned);
  EXPECT_EQ(sim().pinned_host_bytes(), at_start + staging_ring_bytes());
  free_all(blocks);
}

TEST_F(SwapTest, HostMemoryIsGivenBackAtEmptyCache)
{
  // torch_memory_saver issue 90: pinned host memory stayed allocated after resume. Here it
  // is kept warm for the next eviction, and empty_cache gives it back.
  SIM_ONLY(sim(), "reads the simulator's census of host allocations");
  pool_id const pool              = make_pool("model", codec_id::lz4);
  auto blocks                     = populate(pool, data_kind::fp32_weights, 16 * MiB, 19, 1.0);
  std::size_t const host_at_start = sim().pinned_host_bytes();
  (void)alloc().evict(pool, 0);
  alloc().wait_for_compression(pool);
  (void)alloc().restore(pool, 0);
  std::size_t const warm = alloc().host_stats(0).warm_bytes;
  EXPECT_GT(warm, 0U);
  EXPECT_EQ(sim().pinned_host_bytes(), host_at_start + staging_ring_bytes() + warm);
  (void)alloc().empty_cache();
  EXPECT_EQ(alloc().host_stats(0).held_bytes, 0U);
  EXPECT_EQ(sim().pinned_host_bytes(), host_at_start + staging_ring_bytes())
    << "only the transfer engine's staging ring stays";
  expect_intact(blocks, "after restore");
  free_all(blocks);
}

class SwapIdleTrimTest : public SwapTest {
 protected:
  [[nodiscard]] allocator_options options() const override
  {
    allocator_options o = SwapTest::options();
    o.host.slab_bytes   = 2 * MiB;  // one pool's extents leave whole slabs empty
    o.host.idle_release = std::chrono::milliseconds(0);
    return o;
  }
};

TEST_F(SwapIdleTrimTest, TrimHostGivesBackIdleSlabsAndAFailedFreeLosesNothing)
{
  SIM_ONLY(sim(), "injects an unpin failure");
  EXPECT_EQ(alloc().trim_host(0), 0U) << "no store before the first eviction";
  pool_id const pool = make_pool("model", codec_id::raw);
  pool_id const next = make_pool("next", codec_id::raw);
  auto blocks        = populate(pool, data_kind::bf16_weights, 8 * MiB, 47, 1.0);
  auto others        = populate(next, data_kind::random_bytes, 6 * MiB, 53, 1.0);
  (void)alloc().evict(next, 0);  // holds extents in a slab of its own
  (void)alloc().evict(pool, 0);
  (void)alloc().restore(pool, 0);
  std::size_t const warm = alloc().host_stats(0).warm_bytes;
  ASSERT_GT(warm, 0U);
  char const* const unpin = unpin_entry_of(alloc().host_stats(0).pinning);
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call(unpin, 1, CUDA_ERROR_INVALID_VALUE));
  std::size_t const first = alloc().trim_host(0);
  EXPECT_LT(first, warm) << "one free failed: its slab is not counted";
  EXPECT_EQ(alloc().host_stats(0).warm_bytes, 0U);
  (void)alloc().restore(next, 0);
  expect_intact(others, "the other pool, after a failed free");
  (void)alloc().evict(pool, 0);  // the store is usable
  (void)alloc().restore(pool, 0);
  expect_intact(blocks, "after a cycle past a failed free");
  (void)alloc().trim_host(0);  // retries the failed free
  (void)alloc().empty_cache();
  EXPECT_EQ(alloc().host_stats(0).held_bytes, 0U) << "everything given back in the end";
  free_all(blocks);
  free_all(others);
}

TEST_F(SwapIdleTrimTest, ThePressureMonitorGivesBackIdleSlabs)
{
  pool_id const pool = make_pool("model", codec_id::raw);
  auto blocks        = populate(pool, data_kind::bf16_weights, 8 * MiB, 59, 1.0);
  (void)alloc().evict(pool, 0);
  (void)alloc().restore(pool, 0);
  ASSERT_GT(alloc().host_stats(0).warm_bytes, 0U);
  pressure_monitor monitor(alloc(), {.interval = std::chrono::milliseconds(1)});
  auto const deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (monitor.host_released_bytes() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  monitor.stop();
  EXPECT_GT(monitor.host_released_bytes(), 0U);
  EXPECT_EQ(alloc().host_stats(0).warm_bytes, 0U);
  expect_intact(blocks, "after the monitor trimmed");
  free_all(blocks);
}

// The same store: room pinned ahead comes in 2 MiB slabs, and trim frees at once what no
// reserve keeps.
class SwapPrepinTest : public SwapIdleTrimTest {};

TEST_F(SwapPrepinTest, FromTheLowWatermarkTheFirstVictimsRoomIsPinnedBeforeItsEviction)
{
  SIM_ONLY(sim(), "counts pin calls");
  EXPECT_EQ(alloc().prepin_host(0), 0U) << "nothing allocated yet";
  pool_id const cold = make_pool("cold", codec_id::raw);
  pool_id const hot  = make_pool("hot", codec_id::raw);
  auto cold_blocks   = populate(cold, data_kind::bf16_weights, 10 * MiB, 61, 1.0);
  EXPECT_EQ(alloc().prepin_host(0), 0U) << "below the low watermark";
  EXPECT_EQ(alloc().host_stats(0).pinned_bytes, 0U);
  auto hot_blocks = populate(hot, data_kind::bf16_weights, 14 * MiB, 67, 1.0);  // used last
  EXPECT_EQ(alloc().prepin_host(0), 0U) << "still below the low watermark";
  // A limit that puts use at 80%: between the watermarks, where nothing is evicted yet.
  std::size_t const victim = alloc().stats(cold, 0).reserved_bytes;
  std::size_t const mapped = victim + alloc().stats(hot, 0).reserved_bytes;
  alloc().set_device_limit(0, device_limit{.bytes = mapped / 4 * 5});
  ASSERT_EQ(alloc().pressure(0), pressure_level::warning);
  std::size_t const pinned = alloc().prepin_host(0);
  EXPECT_EQ(pinned, victim) << "room for the coldest pool's resident pages, in 2 MiB slabs";
  EXPECT_EQ(alloc().prepin_host(0), 0U) << "the room is there";
  EXPECT_EQ(alloc().trim_host(0), 0U) << "trim keeps the reserve while it is asked for";

  unsigned long long const host_allocs = sim().call_count("cuMemHostAlloc");
  unsigned long long const registers   = sim().call_count("cuMemHostRegister");
  unsigned long long const streams     = sim().call_count("cuStreamCreate");
  evict_result const out               = alloc().evict(cold, 0);
  EXPECT_EQ(out.slabs_pinned, 0U) << "the first eviction found its room pinned";
  EXPECT_EQ(sim().call_count("cuMemHostAlloc"), host_allocs) << "and its staging ring";
  EXPECT_EQ(sim().call_count("cuMemHostRegister"), registers);
  EXPECT_EQ(sim().call_count("cuStreamCreate"), streams) << "and its copy streams";
  EXPECT_EQ(out.times.pin, 0.0);
  EXPECT_GT(out.pages_copied, 0U);
  (void)alloc().restore(cold, 0);
  expect_intact(cold_blocks, "after a cycle into room pinned ahead");
  expect_intact(hot_blocks, "the other pool");
  free_all(cold_blocks);
  free_all(hot_blocks);
  EXPECT_EQ(alloc().prepin_host(0), 0U) << "nothing allocated: no reserve";
  (void)alloc().empty_cache();
  EXPECT_EQ(alloc().host_stats(0).held_bytes, 0U) << "empty_cache gives the reserve back";
}

TEST_F(SwapPrepinTest, ThePressureMonitorPinsAheadBetweenTheWatermarks)
{
  pool_id const cold       = make_pool("cold", codec_id::raw);
  pool_id const hot        = make_pool("hot", codec_id::raw);
  auto cold_blocks         = populate(cold, data_kind::bf16_weights, 6 * MiB, 71, 1.0);
  auto hot_blocks          = populate(hot, data_kind::bf16_weights, 6 * MiB, 73, 1.0);
  std::size_t const victim = alloc().stats(cold, 0).reserved_bytes;
  std::size_t const mapped = victim + alloc().stats(hot, 0).reserved_bytes;
  alloc().set_device_limit(0, device_limit{.bytes = mapped / 4 * 5});  // 80%: WARNING
  pressure_monitor monitor(alloc(), {.interval = std::chrono::milliseconds(1)});
  auto const deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (monitor.host_pinned_bytes() < victim && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  monitor.stop();
  EXPECT_EQ(monitor.host_pinned_bytes(), victim) << "pinned once, then kept";
  EXPECT_EQ(monitor.evicted_bytes(), 0U) << "below the high watermark nothing is evicted";
  EXPECT_EQ(monitor.errors(), 0U) << monitor.last_error();
  evict_result const out = alloc().evict(cold, 0);
  EXPECT_EQ(out.slabs_pinned, 0U) << "the eviction found its room pinned";
  (void)alloc().restore(cold, 0);
  expect_intact(cold_blocks, "after a cycle into room the monitor pinned");
  free_all(cold_blocks);
  free_all(hot_blocks);
}

TEST_F(SwapPrepinTest, AnEngineThatCannotBePreparedPinsNothingAndTheEvictPreparesIt)
{
  SIM_ONLY(sim(), "injects a cuMemHostAlloc failure (the staging ring's)");
  pool_id const cold = make_pool("cold", codec_id::raw);
  pool_id const hot  = make_pool("hot", codec_id::raw);
  auto cold_blocks   = populate(cold, data_kind::bf16_weights, 6 * MiB, 75, 1.0);
  auto hot_blocks    = populate(hot, data_kind::bf16_weights, 6 * MiB, 77, 1.0);
  std::size_t const mapped =
    alloc().stats(cold, 0).reserved_bytes + alloc().stats(hot, 0).reserved_bytes;
  alloc().set_device_limit(0, device_limit{.bytes = mapped / 4 * 5});  // 80%: WARNING
  // The engine's staging ring is the first pin (the store's slabs come after it).
  ASSERT_EQ(sim().fail_call("cuMemHostAlloc", 1, CUDA_ERROR_INVALID_VALUE), CUDA_SUCCESS);
  EXPECT_THROW((void)alloc().prepin_host(0), cuda_error);
  sim().clear_faults();
  EXPECT_EQ(alloc().host_stats(0).pinned_bytes, 0U) << "nothing pinned after the failure";
  unsigned long long const streams = sim().call_count("cuStreamCreate");
  evict_result const out           = alloc().evict(cold, 0);  // prepares the engine itself
  EXPECT_GT(out.pages_copied, 0U);
  EXPECT_EQ(sim().call_count("cuStreamCreate"), streams + 2) << "the failed preparation's "
                                                                "streams were destroyed";
  (void)alloc().restore(cold, 0);
  expect_intact(cold_blocks, "after a failed preparation and a cycle");
  expect_intact(hot_blocks, "the other pool");
  free_all(cold_blocks);
  free_all(hot_blocks);
}

TEST_F(SwapTest, EvictAndRestoreReportWhereTheirTimeWent)
{
  pool_id const pool      = make_pool("model", codec_id::lz4);
  auto blocks             = populate(pool, data_kind::bf16_weights, 8 * MiB, 61, 1.0);
  evict_result const out  = alloc().evict(pool, 0);
  transfer_times const& e = out.times;
  EXPECT_GT(e.vmm, 0.0) << "pages were unmapped";
  EXPECT_GT(e.issue, 0.0) << "copies were issued";
  EXPECT_GE(e.wait, 0.0);
  EXPECT_EQ(e.codec, 0.0) << "compression runs behind, on the workers";
  alloc().wait_for_compression(pool);
  restore_result const back = alloc().restore(pool, 0);
  transfer_times const& r   = back.times;
  EXPECT_GT(r.vmm, 0.0) << "pages were mapped";
  EXPECT_GT(r.issue, 0.0);
  EXPECT_EQ(r.pin, 0.0) << "a restore pins nothing";
  for (double const phase : {e.pin, e.vmm, e.issue, e.wait, r.vmm, r.issue, r.wait, r.codec}) {
    EXPECT_GE(phase, 0.0);
    EXPECT_LT(phase, 60.0) << "seconds, not nanoseconds";
  }
  expect_intact(blocks, "after restore");
  free_all(blocks);
}

class SwapOneWorkerTest : public SwapBehindTest {
 protected:
  [[nodiscard]] allocator_options options() const override
  {
    allocator_options o = SwapBehindTest::options();
    o.workers           = 1;  // compression of 48 MiB with zstd lags far behind the evict
    return o;
  }
};

TEST_F(SwapOneWorkerTest, ARestoreCancelsPendingCompressionAndCompressionResumesAfter)
{
  pool_id const pool = make_pool("model", codec_id::shuffle4_zstd);
  auto blocks        = populate(pool, data_kind::fp32_weights, 48 * MiB, 67, 1.0);
  (void)alloc().evict(pool, 0);
  restore_result const back = alloc().restore(pool, 0);  // compression still pending
  EXPECT_GT(back.compressions_cut_short, 0U) << "pages not yet encoded were stored raw";
  expect_intact(blocks, "after a restore that cut compression short");

  evict_result const again = alloc().evict(pool, 0);
  alloc().wait_for_compression(pool);
  EXPECT_LT(alloc().stats(pool, 0).host_bytes, again.live_bytes)
    << "compression resumed after the restore: the copies are encoded";
  restore_result const later = alloc().restore(pool, 0);
  EXPECT_EQ(later.compressions_cut_short, 0U) << "nothing was pending";
  expect_intact(blocks, "after a compressed cycle");
  free_all(blocks);
}

TEST_F(SwapOneWorkerTest, EmptyCacheCancelsTheCompressionItWaitsFor)
{
  pool_id const pool     = make_pool("model", codec_id::shuffle4_zstd);
  auto blocks            = populate(pool, data_kind::fp32_weights, 48 * MiB, 101, 1.0);
  evict_result const out = alloc().evict(pool, 0);
  (void)alloc().empty_cache();  // compression still pending: cancelled, not waited out
  EXPECT_GT(alloc().compress_host(0), 0U) << "pages cut short stay raw, deferred, for a plan";
  alloc().wait_for_compression(pool);
  EXPECT_LT(alloc().stats(pool, 0).host_bytes, out.live_bytes) << "compressed in the end";
  (void)alloc().restore(pool, 0);
  expect_intact(blocks, "after a cancelled and resumed compression");
  free_all(blocks);
}

/// The default, lazy compression, with an idle delay a test can wait for.
class SwapLazyTest : public SwapTest {
 protected:
  static constexpr std::chrono::milliseconds delay{800};

  [[nodiscard]] allocator_options options() const override
  {
    allocator_options o = SwapTest::options();
    o.compress_after    = delay;
    return o;
  }

  /// A pool holding one block of `bytes` of bf16 weights (which shuffle2+lz4 compresses).
  std::pair<pool_id, std::vector<filled_block>> weights(std::string const& name, std::size_t bytes,
                                                        std::uint64_t seed)
  {
    pool_id const pool = make_pool(name, codec_id::shuffle2_lz4);
    return {pool, {fill_new(pool, bytes, seed, data_kind::bf16_weights)}};
  }

  /// Whether less than the delay has passed since `since`: only then may a test expect a
  /// pool used at `since` not to be idle (a slow sanitizer build may take longer).
  [[nodiscard]] static bool within_delay(std::chrono::steady_clock::time_point since)
  {
    return std::chrono::steady_clock::now() - since < delay;
  }
};

TEST_F(SwapLazyTest, CopiesStayRawUntilTheirPoolIdlesPastTheDelayAndThenAreCompressed)
{
  auto [pool, blocks] = weights("model", 8 * MiB, 71);
  // The pool idles from its eviction's start (the copies' age), which lies between these
  // two: the early check may expect it not idle only within the delay of `before`, and
  // the late one waits the delay out from `after` (a sanitizer build's first eviction,
  // which pins the store, may take longer than any margin).
  auto const before        = std::chrono::steady_clock::now();
  evict_result const out   = alloc().evict(pool, 0);
  auto const after         = std::chrono::steady_clock::now();
  bool const early_checked = within_delay(before);
  alloc().wait_for_compression(pool);  // the checksum jobs
  EXPECT_TRUE(out.compression_deferred) << "an empty store holds the copies raw";
  std::size_t const early = alloc().compress_host(0);
  if (early_checked && within_delay(before)) {
    EXPECT_GE(alloc().stats(pool, 0).host_bytes, out.bytes_copied) << "raw: not idle yet";
    EXPECT_EQ(early, 0U) << "the pool is not idle yet";
  }
  std::this_thread::sleep_until(after + delay + std::chrono::milliseconds(20));
  std::size_t const handed = alloc().compress_host(0);
  EXPECT_EQ(early + handed, out.bytes_copied) << "every raw copy, once";
  EXPECT_EQ(alloc().compress_host(0), 0U) << "nothing raw is left to hand over";
  std::vector<swap_event> noted;
  for (swap_event const& event : alloc().events()) {
    if (event.kind == event_kind::compress) { noted.push_back(event); }
  }
  ASSERT_EQ(noted.size(), 1U) << "one compress event for the one pool";
  EXPECT_EQ(noted[0].pool, pool);
  EXPECT_EQ(noted[0].bytes, out.bytes_copied);
  EXPECT_NE(noted[0].detail.find("idle "), std::string::npos) << noted[0].detail;
  alloc().wait_for_compression(pool);
  EXPECT_LT(alloc().stats(pool, 0).host_bytes, out.live_bytes) << "compressed once idle";
  (void)alloc().restore(pool, 0);
  expect_intact(blocks, "after a lazily compressed cycle");
  free_all(blocks);
}

class SwapLazyBudgetTest : public SwapLazyTest {
 protected:
  [[nodiscard]] allocator_options options() const override
  {
    allocator_options o = SwapLazyTest::options();
    o.host.limit_bytes  = 32 * MiB;  // high watermark 0.85: 27.2 MiB
    return o;
  }
};

TEST_F(SwapLazyBudgetTest, AnEvictionTheBudgetCannotHoldRawIsCompressedBehind)
{
  auto [first, first_blocks]   = weights("first", 6 * MiB, 79);
  auto [second, second_blocks] = weights("second", 22 * MiB, 83);
  evict_result const a         = alloc().evict(first, 0);
  EXPECT_TRUE(a.compression_deferred) << "6 MiB fit raw below 27.2 MiB";
  alloc().wait_for_compression(first);
  evict_result const b = alloc().evict(second, 0);
  EXPECT_FALSE(b.compression_deferred) << "6 + 22 MiB raw would pass 27.2 MiB";
  alloc().wait_for_compression(second);
  EXPECT_LT(alloc().stats(second, 0).host_bytes, b.live_bytes) << "compressed behind";
  EXPECT_LE(alloc().host_stats(0).used_bytes, 32 * MiB);
  (void)alloc().restore(first, 0);
  (void)alloc().restore(second, 0);
  expect_intact(first_blocks, "the first pool");
  expect_intact(second_blocks, "the second pool");
  free_all(first_blocks);
  free_all(second_blocks);
}

TEST_F(SwapLazyTest, AReadOnlyPoolStaysRawHoweverLongItIdles)
{
  auto [pool, blocks] = weights("frozen", 4 * MiB, 89);
  alloc().set_read_only(pool, true);
  evict_result const out = alloc().evict(pool, 0);
  auto const used        = std::chrono::steady_clock::now();  // the copies are older
  ASSERT_TRUE(out.compression_deferred);
  alloc().wait_for_compression(pool);
  std::this_thread::sleep_until(used + delay + std::chrono::milliseconds(20));
  EXPECT_EQ(alloc().compress_host(0), 0U) << "clean read-only pools stay raw";
  EXPECT_GE(alloc().stats(pool, 0).host_bytes, out.bytes_copied);
  (void)alloc().restore(pool, 0);
  expect_intact(blocks, "a read-only pool restored raw");
  free_all(blocks);
}

TEST_F(SwapLazyTest, ThePressureMonitorCompressesAPoolThatIdles)
{
  auto [pool, blocks]    = weights("idle", 4 * MiB, 97);
  evict_result const out = alloc().evict(pool, 0);
  ASSERT_TRUE(out.compression_deferred);
  alloc().wait_for_compression(pool);  // every copy published, so one pass takes them all
  pressure_monitor monitor(alloc(), {.interval = std::chrono::milliseconds(5)});
  auto const deadline = std::chrono::steady_clock::now() + delay + std::chrono::seconds(10);
  while (monitor.compressed_bytes() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  monitor.stop();
  EXPECT_EQ(monitor.compressed_bytes(), out.bytes_copied);
  alloc().wait_for_compression(pool);
  EXPECT_LT(alloc().stats(pool, 0).host_bytes, out.live_bytes);
  (void)alloc().restore(pool, 0);
  expect_intact(blocks, "after the monitor compressed it");
  free_all(blocks);
}

}  // namespace
}  // namespace swapalloc::testing
