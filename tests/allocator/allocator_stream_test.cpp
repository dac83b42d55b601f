// Tests of the allocator's stream semantics (PyTorch's): reuse at once on the allocation
// stream, never on another stream without synchronization, record_stream delaying reuse
// until the recorded streams' work completes, pooled events harvested without waiting.
#include "allocator_fixture.hpp"

#include <chrono>

namespace swapalloc::testing {
namespace {

using namespace std::chrono_literals;

TEST_F(AllocatorTest, FreedBlockIsReusedAtOnceOnItsStream)
{
  scoped_stream const s(drv());
  CUdeviceptr const a = alloc().allocate(MiB, 0, s);
  alloc().deallocate(a, MiB, 0, s);
  CUdeviceptr const b = alloc().allocate(MiB, 0, s);
  EXPECT_EQ(a, b);
  alloc().deallocate(b, MiB, 0, s);
}

TEST_F(AllocatorTest, FreedBlockIsNotReusedOnAnotherStream)
{
  scoped_stream const s1(drv());
  scoped_stream const s2(drv());
  for (std::size_t bytes : {4096UL, 8 * MiB}) {
    CUdeviceptr const a = alloc().allocate(bytes, 0, s1);
    alloc().deallocate(a, bytes, 0, s1);
    CUdeviceptr const b = alloc().allocate(bytes, 0, s2);
    EXPECT_NE(a, b) << bytes
                    << " bytes: stream 2 got stream 1's block while stream 1 may still use it";
    alloc().deallocate(b, bytes, 0, s2);
  }
}

TEST_F(AllocatorTest, LegacyDefaultStreamIsAStreamLikeTheOthers)
{
  scoped_stream const s(drv());
  CUdeviceptr const a = alloc().allocate(4096, 0, nullptr);
  alloc().deallocate(a, 4096, 0, nullptr);
  CUdeviceptr const b = alloc().allocate(4096, 0, s);
  EXPECT_NE(a, b);
  alloc().deallocate(b, 4096, 0, s);
}

TEST_F(AllocatorTest, RecordStreamDelaysReuseUntilThatStreamsWorkCompletes)
{
  scoped_stream const s(drv());
  scoped_stream const user(drv());
  host_gate const gate;
  CUdeviceptr const a = alloc().allocate(2 * MiB, 0, s);
  alloc().record_stream(a, 0, user);
  gate.enqueue(drv(), user);       // the user stream is busy...
  fill(a, 2 * MiB, 0xFEED, user);  // ...and will still write the block
  alloc().deallocate(a, 2 * MiB, 0, s);
  CUdeviceptr const while_busy = alloc().allocate(2 * MiB, 0, s);
  EXPECT_NE(while_busy, a) << "the block was reused while a recorded stream still had work on it";
  alloc().deallocate(while_busy, 2 * MiB, 0, s);
  EXPECT_EQ(alloc().stats(default_pool, 0).live_blocks, 1U)
    << "the held block counts until its events complete";
  gate.open();
  drv().stream_synchronize(user);
  EXPECT_FALSE(gate.opened_by_watchdog());
  // The next allocation harvests the completed event; the block is then cached again.
  CUdeviceptr const other = alloc().allocate(4096, 0, s);
  EXPECT_EQ(alloc().stats(default_pool, 0).live_blocks, 1U);
  CUdeviceptr const after = alloc().allocate(2 * MiB, 0, s);
  EXPECT_TRUE(after == a || after == while_busy);
  EXPECT_EQ(word_at(a, 0, s), 0xFEEDU) << "the user stream's write landed in the held block";
  alloc().deallocate(after, 2 * MiB, 0, s);
  alloc().deallocate(other, 4096, 0, s);
}

TEST_F(AllocatorTest, AllocationNeverWaitsForPendingEvents)
{
  scoped_stream const s(drv());
  scoped_stream const user(drv());
  host_gate const gate;  // closed until opened below; its watchdog opens it after 10 s
  CUdeviceptr const a = alloc().allocate(MiB, 0, s);
  alloc().record_stream(a, 0, user);
  gate.enqueue(drv(), user);
  alloc().deallocate(a, MiB, 0, s);
  for (int i = 0; i < 100; ++i) {
    CUdeviceptr const p = alloc().allocate(64 * KiB, 0, s);
    alloc().deallocate(p, 64 * KiB, 0, s);
  }
  EXPECT_FALSE(gate.opened_by_watchdog()) << "an allocation blocked on a pending event";
  gate.open();
}

TEST_F(AllocatorTest, RecordingTheAllocationStreamAddsNoEvent)
{
  SIM_ONLY(sim(), "counts driver calls");
  scoped_stream const s(drv());
  CUdeviceptr const a = alloc().allocate(MiB, 0, s);
  auto const records  = sim().call_count("cuEventRecord");
  alloc().record_stream(a, 0, s);
  alloc().deallocate(a, MiB, 0, s);
  EXPECT_EQ(sim().call_count("cuEventRecord"), records);
  EXPECT_EQ(alloc().allocate(MiB, 0, s), a);
  alloc().deallocate(a, MiB, 0, s);
}

TEST_F(AllocatorTest, EventsComeFromAReusablePool)
{
  SIM_ONLY(sim(), "counts driver objects");
  scoped_stream const s(drv());
  scoped_stream const u1(drv());
  scoped_stream const u2(drv());
  auto const creates = sim().call_count("cuEventCreate");
  for (int i = 0; i < 200; ++i) {
    CUdeviceptr const p = alloc().allocate(8192, 0, s);
    alloc().record_stream(p, 0, u1);
    alloc().record_stream(p, 0, u2);
    alloc().record_stream(p, 0, u1);  // twice: one event
    alloc().deallocate(p, 8192, 0, s);
    drv().stream_synchronize(u1);
    drv().stream_synchronize(u2);
  }
  EXPECT_LE(sim().call_count("cuEventCreate") - creates, 4U)
    << "events are created per free, not pooled";
  EXPECT_GE(sim().call_count("cuEventRecord"), 400U);
}

TEST_F(AllocatorTest, EmptyCacheWaitsForRecordedStreamsThenReleases)
{
  scoped_stream const s(drv());
  scoped_stream const user(drv());
  host_gate const gate(300ms);  // opens by itself after 0.3 s
  CUdeviceptr const a = alloc().allocate(8 * MiB, 0, s);
  alloc().record_stream(a, 0, user);
  gate.enqueue(drv(), user);
  alloc().deallocate(a, 8 * MiB, 0, s);
  EXPECT_EQ(alloc().empty_cache(), 8 * MiB);
  EXPECT_TRUE(gate.opened_by_watchdog())
    << "empty_cache returned before the recorded stream finished";
  EXPECT_EQ(alloc().stats(default_pool, 0).live_blocks, 0U);
  EXPECT_EQ(alloc().stats(default_pool, 0).reserved_bytes, 0U);
}

TEST_F(AllocatorTest, FailedEventRecordLosesNothing)
{
  SIM_ONLY(sim(), "injects driver failures");
  scoped_stream const s(drv());
  scoped_stream const user(drv());
  CUdeviceptr const a = alloc().allocate(4 * MiB, 0, s);
  alloc().record_stream(a, 0, user);
  ASSERT_EQ(sim().fail_call("cuEventRecord", 1, CUDA_SUCCESS), CUDA_SUCCESS);
  EXPECT_THROW(alloc().deallocate(a, 4 * MiB, 0, s), cuda_error);
  EXPECT_EQ(alloc().check(), "");
  EXPECT_THROW(alloc().deallocate(a, 4 * MiB, 0, s), usage_error) << "the block was freed";
  EXPECT_EQ(alloc().stats(default_pool, 0).live_blocks, 1U) << "held until the device synchronizes";
  (void)alloc().empty_cache();
  EXPECT_EQ(alloc().stats(default_pool, 0).live_blocks, 0U);
  EXPECT_EQ(alloc().stats(default_pool, 0).reserved_bytes, 0U);
  CUdeviceptr const b = alloc().allocate(4 * MiB, 0, s);
  alloc().deallocate(b, 4 * MiB, 0, s);
}

}  // namespace
}  // namespace swapalloc::testing
