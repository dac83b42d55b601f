// Conformance: cuMemcpyBatchAsync, one stream operation whose copies run in no order
// among themselves. Spec: tools/cudasim/README.md "Device accesses: copies and memsets".
// cuda.h docs checked: cuMemcpyBatchAsync (CUDA 13.0: cuMemcpyBatchAsync_v2),
// CUmemcpyAttributes, CUmemcpySrcAccessOrder, CUmemcpyFlags, and the "API synchronization
// behavior" page (\note_async).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "batch_copy.hpp"
#include "driver_fixture.hpp"
#include "unwrapped_entry_points.hpp"

namespace swapalloc::testing {
namespace {

constexpr std::size_t kBatchWords = 4096;  // 16 KiB: small enough for any staging buffer

// ---- cuMemcpyBatchAsync: one stream operation, its copies in no order among themselves --
// cuda.h, cuMemcpyBatchAsync (CUDA 13.0: cuMemcpyBatchAsync_v2), CUmemcpyAttributes,
// CUmemcpySrcAccessOrder, CUmemcpyFlags. Rules marked assumed are the simulator's reading
// where cuda.h is silent (tools/cudasim/src/copy.cpp).

class SimBatch : public DriverTest {
 protected:
  static constexpr std::size_t kBytes = kBatchWords * 4;

  void SetUp() override
  {
    DriverTest::SetUp();
    batch_ = find_memcpy_batch(drv());
    if (batch_ == nullptr && !sim().available()) {
      GTEST_SKIP() << "the driver has no cuMemcpyBatchAsync_v2 (CUDA 13.0 and later)";
    }
    ASSERT_NE(batch_, nullptr) << "the simulator does not export cuMemcpyBatchAsync_v2";
  }
  /// cuMemcpyBatchAsync of `copies` on `stream`, every copy with source access order `order`.
  [[nodiscard]] CUresult batch(
    std::vector<batch_entry> const& copies, CUstream stream,
    CUmemcpySrcAccessOrder order = CU_MEMCPY_SRC_ACCESS_ORDER_STREAM) const
  {
    return memcpy_batch(batch_, copies, stream, order);
  }
  [[nodiscard]] memcpy_batch_fn raw() const noexcept { return batch_; }

 private:
  memcpy_batch_fn batch_{};
};

/// The arguments of a valid batch of two copies, for a test to spoil one at a time.
struct batch_arguments {
  std::vector<CUdeviceptr> dsts;
  std::vector<CUdeviceptr> srcs;
  std::vector<std::size_t> sizes;
  std::vector<CUmemcpyAttributes> attrs{batch_attributes()};
  std::vector<std::size_t> idxs{0};
  std::size_t count{2};
  CUstream stream{};
  bool null_dsts{false};
  bool null_srcs{false};
  bool null_sizes{false};
  bool null_attrs{false};
  bool null_idxs{false};

  CUresult call(memcpy_batch_fn batch)
  {
    return batch(null_dsts ? nullptr : dsts.data(), null_srcs ? nullptr : srcs.data(),
                 null_sizes ? nullptr : sizes.data(), count, null_attrs ? nullptr : attrs.data(),
                 null_idxs ? nullptr : idxs.data(), attrs.size(), stream);
  }
};

TEST_F(SimBatch, MovesTheBytesOfEveryKind)
{
  // The kind of each copy follows from its pointers: host to device from pinned and from
  // pageable memory (`b`), device to device, device to host into pinned memory.
  pinned_buffer pinned_source(drv(), kBytes);
  pinned_buffer pinned_target(drv(), kBytes);
  auto const a = pattern(kBatchWords, 0x21);
  auto const b = pattern(kBatchWords, 0x22);
  auto const c = pattern(kBatchWords, 0x23);
  std::memcpy(pinned_source.data(), a.data(), kBytes);
  std::memset(pinned_target.data(), 0, kBytes);
  auto range           = make_range();  // [0] [1]: from the host, [2]: source, [3]: target
  CUdeviceptr const at = range.ptr();
  drv().memcpy_htod(at + 2 * kBytes, c.data(), kBytes);
  scoped_stream stream(drv());
  unsigned long long const in  = sim().available() ? sim().link_bytes(0) : 0;
  unsigned long long const out = sim().available() ? sim().link_bytes(1) : 0;
  ASSERT_CU(CUDA_SUCCESS, batch({{at, address_of(pinned_source.data()), kBytes},
                                 {at + kBytes, address_of(b.data()), kBytes},
                                 {at + 3 * kBytes, at + 2 * kBytes, kBytes},
                                 {address_of(pinned_target.data()), at + 2 * kBytes, kBytes}},
                                stream));
  drv().stream_synchronize(stream);
  if (sim().available()) {  // each copy moved its bytes over the link of its direction
    EXPECT_EQ(sim().link_bytes(0) - in, 2 * kBytes) << "host to device";
    EXPECT_EQ(sim().link_bytes(1) - out, kBytes) << "device to host; device to device is not";
  }
  EXPECT_EQ(read_words(drv(), at, kBatchWords), a) << "host to device, pinned";
  EXPECT_EQ(read_words(drv(), at + kBytes, kBatchWords), b) << "host to device, pageable";
  EXPECT_EQ(read_words(drv(), at + 3 * kBytes, kBatchWords), c) << "device to device";
  std::vector<std::uint32_t> landed(kBatchWords);
  std::memcpy(landed.data(), pinned_target.data(), kBytes);
  EXPECT_EQ(landed, c) << "device to host";
}

TEST_F(SimBatch, RunsInStreamOrderAsAWhole)
{
  // "The batch as a whole executes in stream order": after the memset queued before it,
  // and an event recorded after it completes once every copy has. On the simulator the
  // link is slowed so that the copies take 2 x 21 ms: an event that covered only one would
  // complete while the other still runs.
  std::size_t const half = std::size_t{1} << 20;
  pinned_buffer source(drv(), 2 * half);
  auto const data = pattern(2 * half / 4, 0x24);
  std::memcpy(source.data(), data.data(), 2 * half);
  auto range = make_range();
  drv().memset_d32(range.ptr(), 0, 2 * half / 4);
  drv().synchronize_context();
  scoped_stream stream(drv());
  scoped_event done(drv());
  host_gate gate;
  if (sim().available()) { sim().set_link_bandwidth(0.05); }
  scope_exit unthrottle([&] {
    if (sim().available()) { sim().set_link_bandwidth(0.0); }
  });
  gate.enqueue(drv(), stream);
  drv().memset_d32_async(range.ptr(), 0x5e5e5e5e, 2 * half / 4, stream);
  CUdeviceptr const host = address_of(source.data());
  ASSERT_CU(CUDA_SUCCESS,
            batch({{range.ptr(), host, half}, {range.ptr() + half, host + half, half}}, stream));
  drv().event_record(done, stream);
  EXPECT_CU(CUDA_ERROR_NOT_READY, table().cuEventQuery(done)) << "the stream is held";
  EXPECT_EQ(first_not(read_words(drv(), range.ptr(), 2 * half / 4), 0), 2 * half / 4)
    << "the batch (or the memset before it) ran before its stream reached it";
  gate.open();
  drv().event_synchronize(done);
  EXPECT_EQ(read_words(drv(), range.ptr(), 2 * half / 4), data)
    << "a copy ran before the memset queued ahead of the batch, or after the event";
  EXPECT_FALSE(gate.opened_by_watchdog());
}

TEST_F(SimBatch, InvalidArgumentsQueueNothing)
{
  pinned_buffer source(drv(), 2 * kBytes);
  std::memset(source.data(), 0x5a, 2 * kBytes);
  auto range = make_range();
  drv().memset_d32(range.ptr(), 0x11111111, 2 * kBatchWords);
  drv().synchronize_context();
  scoped_stream stream(drv());
  auto const valid = [&] {
    batch_arguments args;
    args.dsts   = {range.ptr(), range.ptr() + kBytes};
    args.srcs   = {address_of(source.data()), address_of(source.data()) + kBytes};
    args.sizes  = {kBytes, kBytes};
    args.stream = stream;
    return args;
  };
  auto const refused = [&](auto&& spoil, char const* what) {
    batch_arguments args = valid();
    spoil(args);
    EXPECT_CU(CUDA_ERROR_INVALID_VALUE, args.call(raw())) << what;
  };
  using args_t = batch_arguments&;
  refused([](args_t a) { a.null_dsts = true; }, "null dsts");
  refused([](args_t a) { a.null_srcs = true; }, "null srcs");
  refused([](args_t a) { a.null_sizes = true; }, "null sizes");
  refused([](args_t a) { a.null_attrs = true; }, "null attrs");
  refused([](args_t a) { a.null_idxs = true; }, "null attrsIdxs");
  if (sim().available()) {  // assumed where cuda.h is silent: the simulator's reading
    refused([](args_t a) { a.count = 0; }, "count 0 (assumed)");
    refused([](args_t a) { a.attrs.clear(); }, "numAttrs 0 (assumed)");
    refused([](args_t a) { a.attrs[0].flags = 2; }, "flags not CUmemcpyFlags (assumed)");
  }
  refused(
    [](args_t a) {
      a.attrs.assign(3, batch_attributes());
      a.idxs = {0, 1, 2};
    },
    "numAttrs > count");
  refused([](args_t a) { a.idxs = {1}; }, "attrsIdxs[0] != 0");
  refused(
    [](args_t a) {
      a.attrs.assign(2, batch_attributes());
      a.idxs = {0, 0};
    },
    "attrsIdxs not increasing");
  refused(
    [](args_t a) {
      a.attrs.assign(2, batch_attributes());
      a.idxs = {0, 2};
    },
    "last attrsIdxs >= count");
  static_assert(sizeof(CUmemcpySrcAccessOrder) == sizeof(unsigned));
  for (unsigned const order : {0u, 4u, 0x7fffffffu}) {
    refused([&](args_t a) { std::memcpy(&a.attrs[0].srcAccessOrder, &order, sizeof(order)); },
            "srcAccessOrder not STREAM, DURING_API_CALL or ANY");
  }
  refused([](args_t a) { a.stream = nullptr; }, "the legacy NULL stream (0)");
  refused([](args_t a) { a.stream = CU_STREAM_LEGACY; }, "the legacy NULL stream");
  drv().stream_synchronize(stream);
  EXPECT_EQ(first_not(read_words(drv(), range.ptr(), 2 * kBatchWords), 0x11111111), 2 * kBatchWords)
    << "a refused batch copied";
  batch_arguments overlap = valid();  // a hint, valid: CU_MEMCPY_FLAG_PREFER_OVERLAP_WITH_COMPUTE
  overlap.attrs[0].flags  = CU_MEMCPY_FLAG_PREFER_OVERLAP_WITH_COMPUTE;
  ASSERT_CU(CUDA_SUCCESS, overlap.call(raw())) << "the unspoilt batch is valid";
  drv().stream_synchronize(stream);
  EXPECT_EQ(first_not(read_words(drv(), range.ptr(), 2 * kBatchWords), 0x5a5a5a5a),
            2 * kBatchWords);
}

TEST_F(SimBatch, OneInvalidCopyRefusesTheWholeBatch)
{
  // Each copy's ranges get the checks of a single copy at the call (SimCopy above); one
  // failing copy refuses the batch and queues none of its copies.
  pinned_buffer source(drv(), kBytes);
  std::memset(source.data(), 0x5a, kBytes);
  auto range = make_range();
  drv().memset_d32(range.ptr(), 0x11111111, kBatchWords);
  drv().synchronize_context();
  auto no_access = make_range(1, /*accessible=*/false);
  auto read_only = make_range();
  drv().mem_set_access(read_only.ptr(), read_only.size(), device(), CU_MEM_ACCESS_FLAGS_PROT_READ);
  scoped_reservation reservation(drv(), 2 * gran());  // the second granule stays unmapped
  scoped_handle handle(drv(), gran(), device());
  scoped_mapping mapped(drv(), reservation.ptr(), gran(), handle.get());
  drv().mem_set_access(reservation.ptr(), gran(), device());
  scoped_stream stream(drv());
  CUdeviceptr const host = address_of(source.data());
  auto const refused     = [&](batch_entry bad, char const* what) {
    EXPECT_CU(CUDA_ERROR_INVALID_VALUE, batch({{range.ptr(), host, kBytes}, bad}, stream)) << what;
  };
  refused({reservation.ptr() + gran(), host, 64}, "into reserved, unmapped memory");
  refused({reservation.ptr() + gran() - 64, host, 128}, "into a range that runs past its mapping");
  refused({no_access.ptr(), host, 64}, "into a mapping without access");
  refused({read_only.ptr(), host, 64}, "into a read-only range");
  refused({range.ptr() + kBytes, no_access.ptr(), 64}, "from a mapping without access");
  refused({host, reservation.ptr() + gran(), 64}, "from reserved, unmapped memory");
  if (sim().available()) {
    // Assumed (not tried on a GPU, which may take such a pointer for pageable memory).
    refused({range.ptr() + kBytes, 0, 64}, "from a null host pointer");
    refused({range.ptr() + kBytes, ~CUdeviceptr{0} - 16, 64}, "a host range that wraps");
    // Stricter: a host-to-host copy is refused (copy.cpp's file comment).
    pinned_buffer other(drv(), kBytes);
    refused({address_of(other.data()), host, 64}, "host to host");
  }
  drv().stream_synchronize(stream);
  EXPECT_EQ(first_not(read_words(drv(), range.ptr(), kBatchWords), 0x11111111), kBatchWords)
    << "the valid copy of a refused batch ran";
  EXPECT_CU(CUDA_SUCCESS, table().cuStreamSynchronize(stream))
    << "refused batches leave no sticky error";
}

TEST_F(SimBatch, DuringApiCallReadsTheSourceAtTheCall)
{
  // CU_MEMCPY_SRC_ACCESS_ORDER_DURING_API_CALL: "all accesses must be complete before the
  // API call returns". A source changed after the call, while the stream still holds the
  // copy, does not change what lands: a host source, and a device one.
  pinned_buffer source(drv(), kBytes);
  auto const before = pattern(kBatchWords, 0x31);
  auto const after  = pattern(kBatchWords, 0x32);
  std::memcpy(source.data(), before.data(), kBytes);
  auto device_source = make_range();
  auto target        = make_range();
  drv().memcpy_htod(device_source.ptr(), before.data(), kBytes);
  scoped_stream stream(drv());
  host_gate gate;
  gate.enqueue(drv(), stream);
  ASSERT_CU(CUDA_SUCCESS, batch({{target.ptr(), address_of(source.data()), kBytes},
                                 {target.ptr() + kBytes, device_source.ptr(), kBytes}},
                                stream, CU_MEMCPY_SRC_ACCESS_ORDER_DURING_API_CALL));
  ASSERT_FALSE(gate.opened_by_watchdog()) << "the call waited for its stream";
  std::memcpy(source.data(), after.data(), kBytes);
  drv().memcpy_htod(device_source.ptr(), after.data(), kBytes);  // legacy stream: not held
  gate.open();
  drv().stream_synchronize(stream);
  EXPECT_EQ(read_words(drv(), target.ptr(), kBatchWords), before) << "host source read late";
  EXPECT_EQ(read_words(drv(), target.ptr() + kBytes, kBatchWords), before)
    << "device source read late";
}

TEST_F(SimBatch, StreamOrderReadsTheSourceWhenTheCopyRuns)
{
  // CU_MEMCPY_SRC_ACCESS_ORDER_STREAM: "the source will be accessed in stream order", so a
  // source changed while the stream holds the copy is what lands. ANY ("can happen even
  // after the API call returns") is read when the copy runs on the simulator.
  pinned_buffer source(drv(), 2 * kBytes);
  auto const before = pattern(2 * kBatchWords, 0x33);
  auto const after  = pattern(2 * kBatchWords, 0x34);
  std::memcpy(source.data(), before.data(), 2 * kBytes);
  auto target = make_range();
  scoped_stream stream(drv());
  host_gate gate;
  gate.enqueue(drv(), stream);
  CUdeviceptr const host = address_of(source.data());
  ASSERT_CU(CUDA_SUCCESS, batch({{target.ptr(), host, kBytes}}, stream));
  if (sim().available()) {
    ASSERT_CU(CUDA_SUCCESS, batch({{target.ptr() + kBytes, host + kBytes, kBytes}}, stream,
                                  CU_MEMCPY_SRC_ACCESS_ORDER_ANY));
  }
  std::memcpy(source.data(), after.data(), 2 * kBytes);
  gate.open();
  drv().stream_synchronize(stream);
  auto const landed = read_words(drv(), target.ptr(), 2 * kBatchWords);
  EXPECT_TRUE(std::equal(landed.begin(), landed.begin() + kBatchWords, after.begin()))
    << "the source was read before its copy ran";
  if (sim().available()) { EXPECT_EQ(landed, after) << "ANY: read when the copy runs"; }
}

TEST_F(SimBatch, EachAttributeAppliesFromItsIndexOn)
{
  // "attrs[k] will be applied to copies starting from attrsIdxs[k] through
  // attrsIdxs[k+1] - 1": copy 0 reads its source during the call, copies 1 and 2 in
  // stream order.
  pinned_buffer source(drv(), 3 * kBytes);
  auto const before = pattern(3 * kBatchWords, 0x35);
  auto const after  = pattern(3 * kBatchWords, 0x36);
  std::memcpy(source.data(), before.data(), 3 * kBytes);
  auto target = make_range();
  scoped_stream stream(drv());
  host_gate gate;
  gate.enqueue(drv(), stream);
  CUdeviceptr const host = address_of(source.data());
  std::vector<CUdeviceptr> dsts{target.ptr(), target.ptr() + kBytes, target.ptr() + 2 * kBytes};
  std::vector<CUdeviceptr> srcs{host, host + kBytes, host + 2 * kBytes};
  std::vector<std::size_t> sizes(3, kBytes);
  std::vector<CUmemcpyAttributes> attrs{
    batch_attributes(CU_MEMCPY_SRC_ACCESS_ORDER_DURING_API_CALL),
    batch_attributes(CU_MEMCPY_SRC_ACCESS_ORDER_STREAM)};
  std::vector<std::size_t> idxs{0, 1};
  ASSERT_CU(CUDA_SUCCESS,
            raw()(dsts.data(), srcs.data(), sizes.data(), 3, attrs.data(), idxs.data(), 2, stream));
  std::memcpy(source.data(), after.data(), 3 * kBytes);
  gate.open();
  drv().stream_synchronize(stream);
  auto expected = after;
  std::copy(before.begin(), before.begin() + kBatchWords, expected.begin());
  EXPECT_EQ(read_words(drv(), target.ptr(), 3 * kBatchWords), expected);
}

TEST_F(SimBatch, CopiesRunInTheReverseOfTheGivenOrder)
{
  SIM_ONLY(sim(),
           "copies within a batch are \"not guaranteed to execute in any specific order\" "
           "(cuda.h); the reverse order is the simulator's, to catch code relying on one");
  // Two copies into one target (dependent copies: "undefined behavior"): the first given
  // runs last, so its bytes are what remains.
  pinned_buffer first(drv(), kBytes);
  pinned_buffer second(drv(), kBytes);
  auto const a = pattern(kBatchWords, 0x37);
  auto const b = pattern(kBatchWords, 0x38);
  std::memcpy(first.data(), a.data(), kBytes);
  std::memcpy(second.data(), b.data(), kBytes);
  auto target = make_range();
  scoped_stream stream(drv());
  ASSERT_CU(CUDA_SUCCESS, batch({{target.ptr(), address_of(first.data()), kBytes},
                                 {target.ptr(), address_of(second.data()), kBytes}},
                                stream));
  drv().stream_synchronize(stream);
  EXPECT_EQ(read_words(drv(), target.ptr(), kBatchWords), a) << "the copies ran in the given order";
}

TEST_F(SimBatch, PageableTargetReturnsWithTheData)
{
  SIM_ONLY(sim(), "assumed: a real driver may copy a batch into pageable memory asynchronously");
  // Assumed from cuMemcpyDtoHAsync ("For transfers from device memory to pageable host
  // memory, the function will return only once the copy has completed"). The gate opens
  // by itself after 100 ms.
  auto range = make_range();
  scoped_stream stream(drv());
  host_gate gate(100ms);
  std::vector<std::uint32_t> target(kBatchWords, 0xeeeeeeee);
  gate.enqueue(drv(), stream);
  drv().memset_d32_async(range.ptr(), 0x12345678, kBatchWords, stream);
  ASSERT_CU(CUDA_SUCCESS, batch({{address_of(target.data()), range.ptr(), kBytes}}, stream));
  EXPECT_EQ(first_not(target, 0x12345678), kBatchWords)
    << "returned before the batch (and the work before it) completed";
  EXPECT_TRUE(gate.opened_by_watchdog());
}

TEST_F(SimBatch, ZeroByteCopyIsANoOp)
{
  SIM_ONLY(sim(), "assumed: cuda.h does not say whether a copy of 0 bytes checks its pointers");
  pinned_buffer source(drv(), kBytes);
  auto const data = pattern(kBatchWords, 0x39);
  std::memcpy(source.data(), data.data(), kBytes);
  auto target = make_range();
  scoped_stream stream(drv());
  EXPECT_CU(CUDA_SUCCESS, batch({{0, 0, 0}}, stream)) << "a batch of one empty copy";
  ASSERT_CU(CUDA_SUCCESS,
            batch({{0, 0, 0}, {target.ptr(), address_of(source.data()), kBytes}}, stream));
  drv().stream_synchronize(stream);
  EXPECT_EQ(read_words(drv(), target.ptr(), kBatchWords), data);
}

TEST_F(SimBatch, NeedsACurrentContextAndALiveStream)
{
  SIM_ONLY(sim(), "a destroyed stream handle is undefined behaviour on a real driver");
  pinned_buffer source(drv(), kBytes);
  auto target = make_range();
  drv().memset_d32(target.ptr(), 0x11111111, kBatchWords);
  std::vector<batch_entry> const copy{{target.ptr(), address_of(source.data()), kBytes}};
  CUstream gone = nullptr;
  {
    scoped_stream stream(drv());
    gone = stream;
  }
  EXPECT_CU(CUDA_ERROR_INVALID_HANDLE, batch(copy, gone)) << "a destroyed stream";
  scoped_stream stream(drv());
  ASSERT_CU(CUDA_SUCCESS, table().cuCtxSetCurrent(nullptr));
  CUresult const without = batch(copy, stream);
  ASSERT_CU(CUDA_SUCCESS, table().cuCtxSetCurrent(context()));
  EXPECT_CU(CUDA_ERROR_INVALID_CONTEXT, without) << "no current context";
  EXPECT_CU(CUDA_ERROR_NOT_SUPPORTED, batch(copy, CU_STREAM_PER_THREAD))
    << "CU_STREAM_PER_THREAD is not modelled";
  drv().stream_synchronize(stream);
  EXPECT_EQ(first_not(read_words(drv(), target.ptr(), kBatchWords), 0x11111111), kBatchWords);
}

}  // namespace
}  // namespace swapalloc::testing
