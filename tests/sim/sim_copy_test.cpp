// Conformance: copies and memsets, their validation and their synchronization.
// Spec: tools/cudasim/README.md "Device accesses: copies and memsets". cuda.h docs
// checked: cuMemcpyHtoD, cuMemcpyDtoH, cuMemcpyDtoD and their Async forms,
// cuMemsetD8/D32 and Async forms, cuStreamWriteValue32 (and CUstreamWriteValue_flags),
// and the "API synchronization behavior" page they reference (\note_sync, \note_async).
// cuMemcpyBatchAsync: sim_batch_test.cpp.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "driver_fixture.hpp"
#include "unwrapped_entry_points.hpp"

namespace swapalloc::testing {
namespace {

class SimCopy : public DriverTest {};

constexpr std::size_t kWords = 4096;  // 16 KiB: small enough for any staging buffer

TEST_F(SimCopy, SynchronousRoundTrip)
{
  auto range      = make_range();
  auto const data = pattern(kWords, 0x1);
  drv().memcpy_htod(range.ptr(), data.data(), kWords * 4);
  EXPECT_EQ(read_words(drv(), range.ptr(), kWords), data);
}

TEST_F(SimCopy, DeviceToDevice)
{
  auto source     = make_range();
  auto target     = make_range();
  auto const data = pattern(kWords, 0x2);
  drv().memcpy_htod(source.ptr(), data.data(), kWords * 4);
  drv().memcpy_dtod(target.ptr(), source.ptr(), kWords * 4);
  EXPECT_EQ(read_words(drv(), target.ptr(), kWords), data);
  scoped_stream stream(drv());
  drv().memcpy_dtod_async(target.ptr() + kWords * 4, source.ptr(), kWords * 4, stream);
  drv().stream_synchronize(stream);
  EXPECT_EQ(read_words(drv(), target.ptr() + kWords * 4, kWords), data);
}

TEST_F(SimCopy, MemsetsWriteExactlyTheirRange)
{
  auto range = make_range();
  drv().memset_d32(range.ptr(), 0x11111111, kWords);
  drv().memset_d8(range.ptr() + 5, 0xab, 3);  // bytes 5, 6, 7
  auto words = read_words(drv(), range.ptr(), 4);
  EXPECT_EQ(words[0], 0x11111111u);
  EXPECT_EQ(words[1], 0xabababu << 8 | 0x11u) << std::hex << words[1];
  EXPECT_EQ(words[2], 0x11111111u);
  scoped_stream stream(drv());
  drv().memset_d32_async(range.ptr() + 64, 0xcafef00d, 16, stream);
  drv().memset_d8_async(range.ptr() + 128, 0x7e, 64, stream);
  drv().stream_synchronize(stream);
  words = read_words(drv(), range.ptr(), 64);
  EXPECT_EQ(words[15], 0x11111111u);
  for (std::size_t i = 16; i < 32; ++i) {
    EXPECT_EQ(words[i], 0xcafef00du) << "word " << i;
  }
  for (std::size_t i = 32; i < 48; ++i) {
    EXPECT_EQ(words[i], 0x7e7e7e7eu) << "word " << i;
  }
  EXPECT_EQ(words[48], 0x11111111u);
}

TEST_F(SimCopy, MemsetD32NeedsFourByteAlignment)
{
  auto range = make_range();
  scoped_stream stream(drv());
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemsetD32(range.ptr() + 1, 0, 4));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemsetD32(range.ptr() + 2, 0, 4));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemsetD32Async(range.ptr() + 2, 0, 4, stream));
}

TEST_F(SimCopy, DeviceRangeMustBeMappedAtTheCall)
{
  // A 2-granule reservation with only the first granule mapped and accessible.
  scoped_reservation reservation(drv(), 2 * gran());
  scoped_handle handle(drv(), gran(), device());
  scoped_mapping mapped(drv(), reservation.ptr(), gran(), handle.get());
  drv().mem_set_access(reservation.ptr(), gran(), device());
  scoped_stream stream(drv());
  std::vector<std::uint32_t> host(kWords, 0);
  CUdeviceptr const unmapped = reservation.ptr() + gran();
  CUdeviceptr const straddle = reservation.ptr() + gran() - 64;
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemcpyHtoD(unmapped, host.data(), 64));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemcpyDtoH(host.data(), unmapped, 64));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemcpyHtoD(straddle, host.data(), 128))
    << "crosses into unmapped";
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemcpyDtoD(unmapped, reservation.ptr(), 64));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemcpyHtoDAsync(unmapped, host.data(), 64, stream));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemsetD8(unmapped, 0, 64));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemsetD32Async(straddle, 0, 32, stream));
  CUdeviceptr freed = 0;
  {
    scoped_reservation gone(drv(), gran());
    freed = gone.ptr();
  }
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemcpyHtoD(freed, host.data(), 64))
    << "no reservation there";
  EXPECT_CU(CUDA_SUCCESS, table().cuStreamSynchronize(stream))
    << "rejected calls leave no sticky error";
}

// The access of a device range is checked at the call, like its mapping: the driver
// refuses the call and queues nothing, so nothing faults and no sticky error follows.
// (Only an access that becomes invalid while the work is pending faults the context:
// SimDeathTest.UnmapWhileWorkIsPendingFaultsTheStream.)

TEST_F(SimCopy, CopyIntoMappingWithoutAccessIsInvalidValue)
{
  // cuda.h (cuMemMap): "calling cuMemMap does not make the address accessible".
  // H100, driver 580.159.04: cuMemcpyHtoD_v2 returns CUDA_ERROR_INVALID_VALUE (no fault).
  std::vector<std::uint32_t> host(64, 7);
  pinned_buffer pinned(drv(), host.size() * 4);
  auto range = make_range(1, /*accessible=*/false);
  scoped_stream stream(drv());
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE,
            table().cuMemcpyHtoD(range.ptr(), host.data(), host.size() * 4));
  // The asynchronous forms are checked the same way (as cuMemsetD32Async is, below).
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE,
            table().cuMemcpyHtoDAsync(range.ptr(), pinned.data(), pinned.bytes(), stream))
    << "from pinned memory";
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE,
            table().cuMemcpyHtoDAsync(range.ptr(), host.data(), host.size() * 4, stream))
    << "from pageable memory";
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemsetD8Async(range.ptr(), 0, 64, stream));
  EXPECT_CU(CUDA_SUCCESS, table().cuStreamSynchronize(stream))
    << "rejected calls leave no sticky error";
  // Once access is granted the same copy works.
  drv().mem_set_access(range.ptr(), range.size(), device());
  drv().memcpy_htod(range.ptr(), host.data(), host.size() * 4);
  EXPECT_EQ(read_words(drv(), range.ptr(), host.size()), host);
}

TEST_F(SimCopy, WriteIntoReadOnlyRangeIsInvalidValueAtTheCall)
{
  // H100, driver 580.159.04: cuMemsetD32Async into a range set PROT_READ returns
  // CUDA_ERROR_INVALID_VALUE when it is queued, not an error at cuStreamSynchronize.
  auto range      = make_range();
  auto source     = make_range();
  auto const data = pattern(64, 0x3);
  drv().memcpy_htod(range.ptr(), data.data(), data.size() * 4);
  drv().mem_set_access(range.ptr(), range.size(), device(), CU_MEM_ACCESS_FLAGS_PROT_READ);
  EXPECT_EQ(read_words(drv(), range.ptr(), data.size()), data) << "reading is allowed";
  scoped_stream stream(drv());
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemsetD32Async(range.ptr(), 0, 64, stream));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE,
            table().cuMemcpyDtoDAsync(range.ptr(), source.ptr(), 64, stream))
    << "a read-only destination of a device-to-device copy";
  EXPECT_CU(CUDA_SUCCESS, table().cuStreamSynchronize(stream))
    << "rejected calls leave no sticky error";
  EXPECT_EQ(read_words(drv(), range.ptr(), data.size()), data) << "nothing was written";
}

TEST_F(SimCopy, ReadAfterAccessIsRevokedIsInvalidValue)
{
  // cuMemSetAccess with CU_MEM_ACCESS_FLAGS_PROT_NONE makes the range inaccessible again.
  // H100, driver 580.159.04: cuMemcpyDtoH_v2 from it returns CUDA_ERROR_INVALID_VALUE.
  auto range = make_range();
  drv().memset_d32(range.ptr(), 0x44, 64);
  drv().synchronize_context();  // the memset is asynchronous: done before access goes
  drv().mem_set_access(range.ptr(), range.size(), device(), CU_MEM_ACCESS_FLAGS_PROT_NONE);
  std::vector<std::uint32_t> host(64, 0);
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE,
            table().cuMemcpyDtoH(host.data(), range.ptr(), host.size() * 4));
  EXPECT_EQ(first_not(host, 0), host.size()) << "the refused copy wrote the target";
  EXPECT_CU(CUDA_SUCCESS, table().cuCtxSynchronize()) << "no sticky error";
  drv().mem_set_access(range.ptr(), range.size(), device());
  EXPECT_EQ(first_not(read_words(drv(), range.ptr(), 64), 0x44), 64u);
}

TEST_F(SimCopy, DeviceRangeMustLieInOneReservation)
{
  SIM_ONLY(sim(), "needs two adjacent reservations, which only a hint the simulator honours gives");
  CUdeviceptr const vacant = vacant_address(2 * gran());
  CUdeviceptr low          = 0;
  CUdeviceptr high         = 0;
  ASSERT_CU(CUDA_SUCCESS, table().cuMemAddressReserve(&low, gran(), 0, vacant, 0));
  scope_exit free_low([&] { table().cuMemAddressFree(low, gran()); });
  ASSERT_CU(CUDA_SUCCESS, table().cuMemAddressReserve(&high, gran(), 0, vacant + gran(), 0));
  scope_exit free_high([&] { table().cuMemAddressFree(high, gran()); });
  ASSERT_EQ(low, vacant) << "the hint was not honoured";
  ASSERT_EQ(high, vacant + gran()) << "the hint was not honoured";
  scoped_handle low_handle(drv(), gran(), device());
  scoped_handle high_handle(drv(), gran(), device());
  scoped_mapping low_mapped(drv(), low, gran(), low_handle.get());
  scoped_mapping high_mapped(drv(), high, gran(), high_handle.get());
  drv().mem_set_access(low, gran(), device());
  drv().mem_set_access(high, gran(), device());
  // Both sides mapped and accessible, but in two reservations.
  std::vector<std::uint32_t> host(64, 3);
  CUdeviceptr const across = high - 128;
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemcpyHtoD(across, host.data(), 256));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemsetD32(across, 0, 64));
}

TEST_F(SimCopy, HostRangeInsideAReservationIsInvalid)
{
  SIM_ONLY(sim(),
           "with unified addressing a real driver may accept a device pointer as the host side");
  auto source = make_range();
  auto target = make_range();
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE,
            table().cuMemcpyHtoD(target.ptr(), reinterpret_cast<void const*>(source.ptr()), 64));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE,
            table().cuMemcpyDtoH(reinterpret_cast<void*>(target.ptr()), source.ptr(), 64));
}

// ---- Synchronization: "API synchronization behavior" ----------------------------------

TEST_F(SimCopy, PinnedHtoDAsyncReadsTheSourceWhenItRuns)
{
  // The copy reads from inside the pinned block (not its base): still pinned memory.
  pinned_buffer block(drv(), kWords * 4 + 4096);
  void* const source = block.as<char>() + 4096;
  auto range         = make_range();
  scoped_stream stream(drv());
  host_gate gate(2s);
  auto const first  = pattern(kWords, 0xa);
  auto const second = pattern(kWords, 0xb);
  std::memcpy(source, first.data(), kWords * 4);
  gate.enqueue(drv(), stream);
  drv().memcpy_htod_async(range.ptr(), source, kWords * 4, stream);
  EXPECT_FALSE(gate.opened_by_watchdog())
    << "the pinned copy did not return while its stream was blocked";
  // The copy has not run yet (its stream is blocked): what is in the buffer when it
  // runs is what lands.
  std::memcpy(source, second.data(), kWords * 4);
  gate.open();
  drv().stream_synchronize(stream);
  EXPECT_EQ(read_words(drv(), range.ptr(), kWords), second);
}

TEST_F(SimCopy, PinnedDtoHAsyncWritesTheTargetWhenItRuns)
{
  pinned_buffer target(drv(), kWords * 4);
  auto range = make_range();
  scoped_stream stream(drv());
  host_gate gate(2s);
  std::memset(target.data(), 0xee, kWords * 4);
  gate.enqueue(drv(), stream);
  drv().memset_d32_async(range.ptr(), 0x600df00d, kWords, stream);
  drv().memcpy_dtoh_async(target.data(), range.ptr(), kWords * 4, stream);
  ASSERT_FALSE(gate.opened_by_watchdog())
    << "the pinned copy did not return while its stream was blocked";
  std::vector<std::uint32_t> seen(kWords);
  std::memcpy(seen.data(), target.data(), kWords * 4);
  EXPECT_EQ(first_not(seen, 0xeeeeeeee), kWords) << "the copy ran before its stream reached it";
  gate.open();
  drv().stream_synchronize(stream);
  std::memcpy(seen.data(), target.data(), kWords * 4);
  EXPECT_EQ(first_not(seen, 0x600df00d), kWords);
}

TEST_F(SimCopy, PageableDtoHAsyncReturnsWithTheData)
{
  // "For transfers from device memory to pageable host memory, the function will
  // return only once the copy has completed." The gate opens by itself after 100 ms.
  auto range = make_range();
  scoped_stream stream(drv());
  host_gate gate(100ms);
  std::vector<std::uint32_t> target(kWords, 0xeeeeeeee);
  gate.enqueue(drv(), stream);
  drv().memset_d32_async(range.ptr(), 0x12345678, kWords, stream);
  drv().memcpy_dtoh_async(target.data(), range.ptr(), kWords * 4, stream);
  EXPECT_EQ(first_not(target, 0x12345678), kWords)
    << "returned before the copy (and the work before it) completed";
  EXPECT_TRUE(gate.opened_by_watchdog());
}

TEST_F(SimCopy, PageableHtoDAsyncStagesTheSource)
{
  // "For transfers from pageable host memory to device memory, host memory is copied
  // to a staging buffer immediately": the caller may reuse the buffer at once, and the
  // device write still happens in stream order (after the memset queued before it).
  auto range = make_range();
  scoped_stream stream(drv());
  host_gate gate(2s);
  auto const staged                 = pattern(kWords, 0x5);
  std::vector<std::uint32_t> source = staged;
  gate.enqueue(drv(), stream);
  drv().memset_d32_async(range.ptr(), 0, kWords, stream);
  drv().memcpy_htod_async(range.ptr(), source.data(), kWords * 4, stream);
  EXPECT_FALSE(gate.opened_by_watchdog()) << "the pageable HtoD copy waited for its stream";
  std::fill(source.begin(), source.end(), 0xdeaddead);
  gate.open();
  drv().stream_synchronize(stream);
  EXPECT_EQ(read_words(drv(), range.ptr(), kWords), staged);
}

TEST_F(SimCopy, SynchronousCopyReturnsWhenComplete)
{
  // cuMemcpyDtoH runs on the legacy stream, behind the host function blocking it.
  auto range = make_range();
  context_drain drain(drv());
  drv().memset_d32(range.ptr(), 0x0badcafe, kWords);
  host_gate gate(100ms);
  gate.enqueue(drv(), nullptr);
  drv().memset_d32(range.ptr(), 0x2badcafe, kWords);
  auto const words = read_words(drv(), range.ptr(), kWords);
  EXPECT_TRUE(gate.opened_by_watchdog())
    << "cuMemcpyDtoH returned before the legacy stream reached it";
  EXPECT_EQ(first_not(words, 0x2badcafe), kWords);
}

TEST_F(SimCopy, SynchronousHtoDFromPinnedMemoryReturnsWhenComplete)
{
  // "For transfers from pinned host memory to device memory, the function is
  // synchronous with respect to the host." The copy runs behind the blocked legacy
  // stream, so once it returns the source may change without changing what landed.
  pinned_buffer source(drv(), kWords * 4);
  auto range = make_range();
  context_drain drain(drv());
  auto const data = pattern(kWords, 0x9);
  std::memcpy(source.data(), data.data(), kWords * 4);
  host_gate gate(100ms);
  gate.enqueue(drv(), nullptr);
  drv().memcpy_htod(range.ptr(), source.data(), kWords * 4);
  EXPECT_TRUE(gate.opened_by_watchdog())
    << "cuMemcpyHtoD returned before the legacy stream reached it";
  std::memset(source.data(), 0, kWords * 4);
  EXPECT_EQ(read_words(drv(), range.ptr(), kWords), data);
}

TEST_F(SimCopy, MemsetAndDtoDAreAsynchronousOnTheLegacyStream)
{
  // "The synchronous memset functions are asynchronous with respect to the host" for
  // device memory; "For transfers from device memory to device memory, no host-side
  // synchronization is performed." Seen through a non-blocking stream, which the
  // blocked legacy stream does not hold back.
  pinned_buffer seen(drv(), 2 * kWords * 4);
  auto source = make_range();
  auto target = make_range();
  drv().memset_d32(source.ptr(), 0x5a5a5a5a, kWords);
  drv().memset_d32(target.ptr(), 0, 2 * kWords);
  drv().synchronize_context();
  context_drain drain(drv());
  scoped_stream observer(drv(), CU_STREAM_NON_BLOCKING);
  host_gate gate(5s);
  gate.enqueue(drv(), nullptr);
  drv().memset_d32(target.ptr(), 0x77777777, kWords);
  drv().memcpy_dtod(target.ptr() + kWords * 4, source.ptr(), kWords * 4);
  ASSERT_FALSE(gate.opened_by_watchdog())
    << "cuMemsetD32 or cuMemcpyDtoD waited for the blocked legacy stream";
  drv().memcpy_dtoh_async(seen.data(), target.ptr(), 2 * kWords * 4, observer);
  drv().stream_synchronize(observer);
  std::vector<std::uint32_t> words(2 * kWords);
  std::memcpy(words.data(), seen.data(), words.size() * 4);
  EXPECT_EQ(first_not(words, 0), words.size())
    << "the memset or copy ran before the legacy stream reached it";
  gate.open();
  drv().synchronize_context();
  words = read_words(drv(), target.ptr(), 2 * kWords);
  EXPECT_EQ(words[0], 0x77777777u);
  EXPECT_EQ(words[kWords - 1], 0x77777777u);
  EXPECT_EQ(words[kWords], 0x5a5a5a5au);
  EXPECT_EQ(words[2 * kWords - 1], 0x5a5a5a5au);
}

// ---- cuStreamWriteValue32: one word written in stream order ----------------------------

class SimWriteValue : public SimCopy {
 protected:
  void SetUp() override
  {
    SimCopy::SetUp();
    write_value_ = unwrapped_entry_points(drv()).stream_write_value32;
    ASSERT_NE(write_value_, nullptr) << "the driver does not export cuStreamWriteValue32_v2";
  }
  /// cuStreamWriteValue32 (cuda.h maps it to cuStreamWriteValue32_v2).
  CUresult write_value(CUstream stream, CUdeviceptr address, std::uint32_t value,
                       unsigned int flags = CU_STREAM_WRITE_VALUE_DEFAULT) const
  {
    return write_value_(stream, address, value, flags);
  }

 private:
  decltype(&::cuStreamWriteValue32) write_value_{};
};

TEST_F(SimWriteValue, WritesAfterTheCopyQueuedBeforeIt)
{
  pinned_buffer source(drv(), kWords * 4);
  auto const data = pattern(kWords, 0xd);
  std::memcpy(source.data(), data.data(), source.bytes());
  auto range = make_range();
  drv().memset_d32(range.ptr(), 0, kWords);
  drv().synchronize_context();
  scoped_stream stream(drv());
  host_gate gate;
  gate.enqueue(drv(), stream);
  drv().memcpy_htod_async(range.ptr(), source.data(), source.bytes(), stream);
  ASSERT_CU(CUDA_SUCCESS,
            write_value(stream, range.ptr() + (2 * sizeof(std::uint32_t)), 0xfeedface));
  // Both wait behind the gate (a non-blocking stream: the legacy stream's read below does
  // not wait for it), so nothing was written at the call.
  EXPECT_EQ(first_not(read_words(drv(), range.ptr(), kWords), 0), kWords)
    << "the write (or the copy) ran before its stream reached it";
  gate.open();
  drv().stream_synchronize(stream);
  auto expected = data;
  expected[2]   = 0xfeedface;
  // Had the write run before the copy, the copy would have overwritten word 2.
  EXPECT_EQ(read_words(drv(), range.ptr(), kWords), expected);
  EXPECT_FALSE(gate.opened_by_watchdog());
}

TEST_F(SimWriteValue, WritesInOrderOnTheLegacyStream)
{
  auto range = make_range();
  drv().memset_d32(range.ptr(), 0x11111111, 16);
  ASSERT_CU(CUDA_SUCCESS,
            write_value(nullptr, range.ptr() + (4 * sizeof(std::uint32_t)), 0xabcdef01));
  // cuMemcpyDtoH_v2 runs on the legacy stream, after the memset and the write.
  auto const words = read_words(drv(), range.ptr(), 16);
  for (std::size_t i = 0; i < words.size(); ++i) {
    EXPECT_EQ(words[i], i == 4 ? 0xabcdef01u : 0x11111111u) << "word " << i;
  }
}

TEST_F(SimWriteValue, RejectsAMisalignedAddressAndUnknownFlags)
{
  auto range = make_range();
  drv().memset_d32(range.ptr(), 0x22222222, 16);
  scoped_stream stream(drv());
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, write_value(stream, range.ptr() + 2, 1))
    << "not 4-byte aligned";
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, write_value(stream, range.ptr(), 1, 0x2))
    << "not a CUstreamWriteValue_flags value";
  if (sim().available()) {
    // cuda.h: CU_STREAM_WRITE_VALUE_NO_MEMORY_BARRIER "is not supported in the v2 API"
    // (cuStreamWriteValue32 is cuStreamWriteValue32_v2). Which of the call's listed errors
    // a real driver gives is not known, so only the simulator's choice is checked.
    EXPECT_CU(CUDA_ERROR_NOT_SUPPORTED,
              write_value(stream, range.ptr(), 1, CU_STREAM_WRITE_VALUE_NO_MEMORY_BARRIER));
  }
  EXPECT_CU(CUDA_SUCCESS, table().cuStreamSynchronize(stream))
    << "rejected calls leave no sticky error";
  EXPECT_EQ(first_not(read_words(drv(), range.ptr(), 16), 0x22222222), 16u)
    << "a rejected write wrote";
}

TEST_F(SimWriteValue, NeedsMappedWritableMemoryAtTheCall)
{
  SIM_ONLY(sim(),
           "not tried on a GPU: a stream memory operation into unmapped or read-only "
           "memory may fault the context (700, sticky) instead of failing the call");
  // As cuMemsetD32Async (H100: CUDA_ERROR_INVALID_VALUE at the call), nothing queued.
  scoped_reservation reservation(drv(), 2 * gran());
  scoped_handle handle(drv(), gran(), device());
  scoped_mapping mapped(drv(), reservation.ptr(), gran(), handle.get());
  scoped_stream stream(drv());
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, write_value(stream, reservation.ptr(), 1))
    << "mapped without access";
  drv().mem_set_access(reservation.ptr(), gran(), device(), CU_MEM_ACCESS_FLAGS_PROT_READ);
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, write_value(stream, reservation.ptr(), 1)) << "read-only";
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, write_value(stream, reservation.ptr() + gran(), 1))
    << "reserved, not mapped";
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, write_value(stream, 0, 1)) << "null";
  EXPECT_CU(CUDA_SUCCESS, table().cuStreamSynchronize(stream))
    << "rejected calls leave no sticky error";
}

}  // namespace
}  // namespace swapalloc::testing
