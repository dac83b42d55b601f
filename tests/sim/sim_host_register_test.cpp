// Conformance: registered host memory (cuMemHostRegister_v2, cuMemHostUnregister).
// Spec: tools/cudasim/README.md "Device accesses: copies and memsets" (registered ranges
// are pinned; the registration rules) and "Failures, leaks". cuda.h docs checked:
// cuMemHostRegister, cuMemHostUnregister, CU_MEMHOSTREGISTER_*, the CUresult values
// CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED and CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED,
// CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED, and the "API synchronization
// behavior" page (pinned and pageable copies). Where a real driver was observed rather than
// documented the test names the observation; where neither says, the rule is the
// simulator's assumption and the test is SIM_ONLY.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "configured_child.hpp"
#include "driver_fixture.hpp"

namespace swapalloc::testing {
namespace {

constexpr std::size_t kRegisteredWords = 4096;  // 16 KiB

[[nodiscard]] std::size_t host_page() { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }

/// Page-aligned host memory the test owns (an anonymous mapping), unmapped on destruction.
class host_pages {
 public:
  explicit host_pages(std::size_t bytes, int protection = PROT_READ | PROT_WRITE)
    : bytes_(bytes), data_(::mmap(nullptr, bytes, protection, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
  {
    if (data_ == MAP_FAILED) {
      ADD_FAILURE() << "mmap of " << bytes << " bytes failed";
      data_ = nullptr;
    }
  }
  host_pages(host_pages const&)            = delete;
  host_pages& operator=(host_pages const&) = delete;
  ~host_pages()
  {
    if (data_ != nullptr) { ::munmap(data_, bytes_); }
  }
  [[nodiscard]] void* data() const noexcept { return data_; }
  /// The address `offset` bytes in.
  [[nodiscard]] void* at(std::size_t offset) const noexcept
  {
    return static_cast<char*>(data_) + offset;
  }

 private:
  std::size_t bytes_;
  void* data_;
};

/// A cuMemHostRegister of [p, p + bytes), unregistered on destruction if it succeeded and
/// the test did not unregister it already.
class scoped_registration {
 public:
  scoped_registration(driver const& drv, void* p, std::size_t bytes, unsigned int flags = 0)
    : drv_(&drv), p_(p), result_(drv.table().cuMemHostRegister(p, bytes, flags))
  {
  }
  scoped_registration(scoped_registration const&)            = delete;
  scoped_registration& operator=(scoped_registration const&) = delete;
  ~scoped_registration()
  {
    if (registered()) {
      expect_cleanup(drv_->table().cuMemHostUnregister(p_), "cuMemHostUnregister");
    }
  }
  /// What cuMemHostRegister returned.
  [[nodiscard]] CUresult result() const noexcept { return result_; }
  [[nodiscard]] bool registered() const noexcept { return result_ == CUDA_SUCCESS && !gone_; }
  /// Unregisters now; returns the driver's answer.
  CUresult unregister()
  {
    CUresult const answer = drv_->table().cuMemHostUnregister(p_);
    if (answer == CUDA_SUCCESS) { gone_ = true; }
    return answer;
  }
  /// Forgets the registration (the test knows the driver dropped it).
  void forget() noexcept { gone_ = true; }

 private:
  driver const* drv_;
  void* p_;
  CUresult result_;
  bool gone_{false};
};

/// DriverTest that also checks, on the simulator, that the test left no registration.
class SimHostRegister : public DriverTest {
 protected:
  void SetUp() override
  {
    DriverTest::SetUp();
    if (sim().available()) { registrations_before_ = sim().census().host_registrations; }
  }
  void TearDown() override
  {
    if (sim().available()) {
      EXPECT_EQ(sim().census().host_registrations, registrations_before_)
        << "the test left host registrations behind";
    }
    DriverTest::TearDown();
  }
  [[nodiscard]] CUresult register_range(void* p, std::size_t bytes, unsigned int flags = 0) const
  {
    return table().cuMemHostRegister(p, bytes, flags);
  }
  [[nodiscard]] CUresult unregister(void* p) const { return table().cuMemHostUnregister(p); }
  /// Registrations on the simulator now, less those there were when the test started.
  [[nodiscard]] std::size_t registrations() const
  {
    return sim().census().host_registrations - registrations_before_;
  }

 private:
  std::size_t registrations_before_{0};
};

// ---- Registering and unregistering -------------------------------------------------------

TEST_F(SimHostRegister, RegistersAndUnregistersWithEachDocumentedFlag)
{
  if (drv().device_attribute(device(), CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED) != 1) {
    GTEST_SKIP() << "this device does not register host memory";
  }
  host_pages pages(4 * host_page());
  for (unsigned int const flags :
       {0u, unsigned{CU_MEMHOSTREGISTER_PORTABLE}, unsigned{CU_MEMHOSTREGISTER_DEVICEMAP},
        unsigned{CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP}}) {
    ASSERT_CU(CUDA_SUCCESS, register_range(pages.data(), 4 * host_page(), flags))
      << "flags " << flags;
    EXPECT_CU(CUDA_SUCCESS, unregister(pages.data())) << "flags " << flags;
  }
}

TEST_F(SimHostRegister, UnalignedRangeIsRegistered)
{
  // cuda.h sets no alignment; NVIDIA's cuda-python test_cudart_hostRegister registers an
  // unaligned numpy buffer, and the driver pins the pages that cover the range.
  host_pages pages(4 * host_page());
  scoped_registration registration(drv(), pages.at(64), 2 * host_page() + 17);
  EXPECT_CU(CUDA_SUCCESS, registration.result());
}

TEST_F(SimHostRegister, RegisteredMemoryIsUsableForCopies)
{
  // Ordinary heap memory, registered where it lies (not page aligned).
  std::vector<std::uint32_t> source = pattern(kRegisteredWords, 0x7e9);
  std::vector<std::uint32_t> target(kRegisteredWords, 0);
  scoped_registration in(drv(), source.data(), kRegisteredWords * 4);
  scoped_registration out(drv(), target.data(), kRegisteredWords * 4);
  ASSERT_CU(CUDA_SUCCESS, in.result());
  ASSERT_CU(CUDA_SUCCESS, out.result());
  auto range = make_range();
  drv().memcpy_htod(range.ptr(), source.data(), kRegisteredWords * 4);
  drv().memcpy_dtoh(target.data(), range.ptr(), kRegisteredWords * 4);
  EXPECT_EQ(target, source);
}

TEST_F(SimHostRegister, ReadOnlyNeedsTheDeviceAttribute)
{
  // cuda.h: "Using this flag with a current context associated with a device that does not
  // have this attribute set will cause cuMemHostRegister to error with
  // CUDA_ERROR_NOT_SUPPORTED."
  int const supported =
    drv().device_attribute(device(), CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED);
  if (sim().available()) { EXPECT_EQ(supported, 0) << "cudasim does not model read-only pages"; }
  host_pages pages(host_page());
  scoped_registration registration(drv(), pages.data(), host_page(), CU_MEMHOSTREGISTER_READ_ONLY);
  EXPECT_CU(supported == 1 ? CUDA_SUCCESS : CUDA_ERROR_NOT_SUPPORTED, registration.result());
}

TEST_F(SimHostRegister, RegisterNeedsACurrentContext)
{
  host_pages pages(host_page());
  CUresult result = CUDA_SUCCESS;
  std::thread([&] { result = register_range(pages.data(), host_page()); }).join();
  if (result == CUDA_SUCCESS) { EXPECT_CU(CUDA_SUCCESS, unregister(pages.data())); }
  EXPECT_CU(CUDA_ERROR_INVALID_CONTEXT, result) << "from a thread without a current context";
}

TEST_F(SimHostRegister, NullEmptyAndUnknownFlagsAreInvalid)
{
  SIM_ONLY(sim(), "cuda.h does not say which error a null, empty or unknown-flag call gives");
  host_pages pages(host_page());
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, register_range(nullptr, host_page()));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, register_range(pages.data(), 0));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, register_range(pages.data(), host_page(), 0x10));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE,
            register_range(pages.data(), host_page(), CU_MEMHOSTREGISTER_PORTABLE | 0x80));
  EXPECT_EQ(registrations(), 0u);
}

TEST_F(SimHostRegister, IoMemoryFlagOnOrdinaryMemoryIsInvalid)
{
  SIM_ONLY(sim(), "assumed: the simulator's host memory is never I/O memory");
  host_pages pages(host_page());
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE,
            register_range(pages.data(), host_page(), CU_MEMHOSTREGISTER_IOMEMORY));
}

TEST_F(SimHostRegister, MemoryMustBeMappedReadableAndWritable)
{
  SIM_ONLY(sim(), "assumed: which error a range that is not read-write memory gives");
  std::size_t const page = host_page();
  host_pages holed(3 * page);
  ASSERT_EQ(::munmap(holed.at(page), page), 0);
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, register_range(holed.data(), 3 * page))
    << "a range with an unmapped page";
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, register_range(holed.at(page + 8), 16))
    << "inside the unmapped page";
  EXPECT_CU(CUDA_SUCCESS, register_range(holed.data(), page)) << "the mapped page before it";
  EXPECT_CU(CUDA_SUCCESS, unregister(holed.data()));
  // cuda.h: CU_MEMHOSTREGISTER_READ_ONLY "is required in order to register memory mapped to
  // the CPU as read-only".
  host_pages read_only(page, PROT_READ);
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, register_range(read_only.data(), page));
  host_pages no_access(page, PROT_NONE);
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, register_range(no_access.data(), page));
  auto range = make_range();
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE,
            register_range(reinterpret_cast<void*>(range.ptr()), host_page()))
    << "device memory is not host memory";
  EXPECT_EQ(registrations(), 0u);
}

// ---- Overlaps ----------------------------------------------------------------------------

TEST_F(SimHostRegister, OverlappingRangeIsAlreadyRegistered)
{
  // cuda.h: CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED, "the memory range passed to
  // cuMemHostRegister() has already been registered" -- the whole range, a page inside it,
  // or a range across its start or end.
  std::size_t const page = host_page();
  host_pages pages(8 * page);
  scoped_registration held(drv(), pages.at(2 * page), 3 * page);
  ASSERT_CU(CUDA_SUCCESS, held.result());
  {
    scoped_registration again(drv(), pages.at(2 * page), 3 * page);
    EXPECT_CU(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED, again.result()) << "the same range";
    scoped_registration inside(drv(), pages.at(3 * page), page);
    EXPECT_CU(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED, inside.result()) << "a page inside";
    scoped_registration across_start(drv(), pages.data(), 3 * page);
    EXPECT_CU(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED, across_start.result());
    scoped_registration across_end(drv(), pages.at(4 * page), 2 * page);
    EXPECT_CU(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED, across_end.result());
    scoped_registration around(drv(), pages.data(), 8 * page);
    EXPECT_CU(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED, around.result());
  }
  // The pages beside it are free to register.
  scoped_registration before(drv(), pages.data(), 2 * page);
  EXPECT_CU(CUDA_SUCCESS, before.result());
  scoped_registration after(drv(), pages.at(5 * page), 3 * page);
  EXPECT_CU(CUDA_SUCCESS, after.result());
}

TEST_F(SimHostRegister, DisjointRangesSharingAPageRegisterIndependently)
{
  // The driver pins whole pages, but tracks the ranges given: on a real driver (590.48.01)
  // small disjoint buffers on one page register and unregister independently
  // (lupinemachines/lupine pull request 878, cuDSS's hybrid execution does it).
  host_pages pages(2 * host_page());
  scoped_registration first(drv(), pages.data(), 100);
  ASSERT_CU(CUDA_SUCCESS, first.result());
  scoped_registration same_page(drv(), pages.at(100), 100);
  EXPECT_CU(CUDA_SUCCESS, same_page.result()) << "the bytes right after the first range";
  scoped_registration overlapping(drv(), pages.at(150), 100);
  EXPECT_CU(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED, overlapping.result());
  EXPECT_CU(CUDA_SUCCESS, first.unregister());
  EXPECT_CU(CUDA_SUCCESS, same_page.unregister()) << "the other range stayed registered";
}

TEST_F(SimHostRegister, HostAllocMemoryIsAlreadyRegistered)
{
  SIM_ONLY(sim(), "assumed: cuda.h says only that both share one tracking mechanism");
  pinned_buffer block(drv(), 4 * host_page());
  scoped_registration whole(drv(), block.data(), 4 * host_page());
  EXPECT_CU(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED, whole.result());
  scoped_registration inside(drv(), block.as<char>() + 100, 100);
  EXPECT_CU(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED, inside.result());
}

// ---- Unregistering -----------------------------------------------------------------------

TEST_F(SimHostRegister, UnregisterTakesTheBaseAddress)
{
  // cuda.h: "The base address must be the same one specified to cuMemHostRegister()". An
  // address inside the range: CUDA_ERROR_INVALID_VALUE (NVIDIA cuda-python's
  // test_cudart_hostRegister, on a real driver); null: CUDA_ERROR_INVALID_VALUE
  // (lupinemachines/lupine pull request 858, driver 590.48.01).
  host_pages pages(4 * host_page());
  scoped_registration registration(drv(), pages.at(64), 2 * host_page());
  ASSERT_CU(CUDA_SUCCESS, registration.result());
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, unregister(pages.at(64 + host_page())));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, unregister(nullptr));
  EXPECT_CU(CUDA_SUCCESS, registration.unregister()) << "still registered after the failures";
}

TEST_F(SimHostRegister, UnregisterOfMemoryNeverRegisteredIsNotRegistered)
{
  // cuda.h: CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED, "the pointer passed to
  // cuMemHostUnregister() does not correspond to any currently registered memory region".
  std::vector<std::uint32_t> pageable(1024);
  EXPECT_CU(CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED, unregister(pageable.data()));
  host_pages pages(host_page());
  ASSERT_CU(CUDA_SUCCESS, register_range(pages.data(), host_page()));
  EXPECT_CU(CUDA_SUCCESS, unregister(pages.data()));
  EXPECT_CU(CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED, unregister(pages.data())) << "a second time";
}

TEST_F(SimHostRegister, UnregisterOfHostAllocMemoryIsInvalid)
{
  // cuMemHostAlloc memory is not registered memory: "invalid argument" on a real driver
  // (PyTorch pull request 146520; lupinemachines/lupine issue 437, driver 590.48.01). The
  // block stays live.
  pinned_buffer block(drv(), 4 * host_page());
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, unregister(block.data()));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, unregister(block.as<char>() + host_page()));
}

TEST_F(SimHostRegister, FreeHostOfRegisteredMemoryIsInvalid)
{
  SIM_ONLY(sim(), "cuda.h does not say what cuMemFreeHost does with memory it did not give");
  host_pages pages(host_page());
  scoped_registration registration(drv(), pages.data(), host_page());
  ASSERT_CU(CUDA_SUCCESS, registration.result());
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuMemFreeHost(pages.data()));
  EXPECT_CU(CUDA_SUCCESS, registration.unregister()) << "the registration survives the free";
}

TEST_F(SimHostRegister, UnregisterNeedsNoCurrentContext)
{
  SIM_ONLY(sim(), "cuda.h lists CUDA_ERROR_INVALID_CONTEXT; only ucx observed otherwise");
  // openucx/ucx pull request 10643: cuMemHostUnregister "does not produce an error when
  // invoked from a different context ... (or even without an active context)".
  host_pages pages(host_page());
  scoped_registration registration(drv(), pages.data(), host_page());
  ASSERT_CU(CUDA_SUCCESS, registration.result());
  CUresult result = CUDA_ERROR_UNKNOWN;
  std::thread([&] { result = registration.unregister(); }).join();
  EXPECT_CU(CUDA_SUCCESS, result) << "from a thread without a current context";
}

TEST_F(SimHostRegister, UnregisterWaitsForQueuedCopies)
{
  SIM_ONLY(sim(), "cuda.h does not say so; torch/cutorch#618 observed that it synchronizes");
  // A copy into the range is held behind a gate that opens by itself after 300 ms: the
  // unregister returns only once the copy is done, so it never writes pageable memory.
  host_pages target(kRegisteredWords * 4);
  scoped_registration registration(drv(), target.data(), kRegisteredWords * 4);
  ASSERT_CU(CUDA_SUCCESS, registration.result());
  auto range = make_range();
  scoped_stream stream(drv());
  host_gate gate(300ms);
  gate.enqueue(drv(), stream);
  drv().memset_d32_async(range.ptr(), 0x5eed5eed, kRegisteredWords, stream);
  drv().memcpy_dtoh_async(target.data(), range.ptr(), kRegisteredWords * 4, stream);
  ASSERT_FALSE(gate.opened_by_watchdog()) << "the copy into registered memory waited";
  EXPECT_CU(CUDA_SUCCESS, registration.unregister());
  EXPECT_TRUE(gate.opened_by_watchdog()) << "cuMemHostUnregister returned before the copy ran";
  std::vector<std::uint32_t> seen(kRegisteredWords);
  std::memcpy(seen.data(), target.data(), kRegisteredWords * 4);
  EXPECT_EQ(first_not(seen, 0x5eed5eed), kRegisteredWords);
}

// ---- Registered memory is pinned memory ----------------------------------------------------

TEST_F(SimHostRegister, AsyncCopyFromRegisteredMemoryReadsItWhenItRuns)
{
  // cuda.h: the range "is added to the same tracking mechanism as cuMemHostAlloc": a copy
  // from it is fully asynchronous, like one from pinned memory (sim_copy_test's
  // PinnedHtoDAsyncReadsTheSourceWhenItRuns), here from inside the range.
  host_pages pages(kRegisteredWords * 4 + host_page());
  scoped_registration registration(drv(), pages.data(), kRegisteredWords * 4 + host_page());
  ASSERT_CU(CUDA_SUCCESS, registration.result());
  void* const source = pages.at(host_page());
  auto range         = make_range();
  scoped_stream stream(drv());
  host_gate gate(2s);
  auto const first  = pattern(kRegisteredWords, 0xa1);
  auto const second = pattern(kRegisteredWords, 0xb2);
  std::memcpy(source, first.data(), kRegisteredWords * 4);
  gate.enqueue(drv(), stream);
  drv().memcpy_htod_async(range.ptr(), source, kRegisteredWords * 4, stream);
  EXPECT_FALSE(gate.opened_by_watchdog()) << "the copy from registered memory waited";
  std::memcpy(source, second.data(), kRegisteredWords * 4);  // not staged: this lands
  gate.open();
  drv().stream_synchronize(stream);
  EXPECT_EQ(read_words(drv(), range.ptr(), kRegisteredWords), second);
}

TEST_F(SimHostRegister, AsyncCopyIntoRegisteredMemoryReturnsAtOnce)
{
  host_pages target(kRegisteredWords * 4);
  scoped_registration registration(drv(), target.data(), kRegisteredWords * 4);
  ASSERT_CU(CUDA_SUCCESS, registration.result());
  auto range = make_range();
  scoped_stream stream(drv());
  host_gate gate(2s);
  std::memset(target.data(), 0xee, kRegisteredWords * 4);
  gate.enqueue(drv(), stream);
  drv().memset_d32_async(range.ptr(), 0x600df00d, kRegisteredWords, stream);
  drv().memcpy_dtoh_async(target.data(), range.ptr(), kRegisteredWords * 4, stream);
  ASSERT_FALSE(gate.opened_by_watchdog()) << "the copy into registered memory waited";
  std::vector<std::uint32_t> seen(kRegisteredWords);
  std::memcpy(seen.data(), target.data(), kRegisteredWords * 4);
  EXPECT_EQ(first_not(seen, 0xeeeeeeee), kRegisteredWords) << "the copy ran before its turn";
  gate.open();
  drv().stream_synchronize(stream);
  std::memcpy(seen.data(), target.data(), kRegisteredWords * 4);
  EXPECT_EQ(first_not(seen, 0x600df00d), kRegisteredWords);
}

TEST_F(SimHostRegister, UnregisteredMemoryIsPageableAgain)
{
  // cuda.h: cuMemHostUnregister "makes it pageable again"; a copy into pageable memory
  // returns once complete (sim_copy_test's PageableDtoHAsyncReturnsWithTheData). The gate
  // opens by itself after 100 ms.
  host_pages target(kRegisteredWords * 4);
  ASSERT_CU(CUDA_SUCCESS, register_range(target.data(), kRegisteredWords * 4));
  ASSERT_CU(CUDA_SUCCESS, unregister(target.data()));
  auto range = make_range();
  scoped_stream stream(drv());
  host_gate gate(100ms);
  gate.enqueue(drv(), stream);
  drv().memset_d32_async(range.ptr(), 0x12345678, kRegisteredWords, stream);
  drv().memcpy_dtoh_async(target.data(), range.ptr(), kRegisteredWords * 4, stream);
  std::vector<std::uint32_t> seen(kRegisteredWords);
  std::memcpy(seen.data(), target.data(), kRegisteredWords * 4);
  EXPECT_EQ(first_not(seen, 0x12345678), kRegisteredWords) << "returned before the copy ran";
  EXPECT_TRUE(gate.opened_by_watchdog());
}

// ---- Faults and the census (the simulator's) -------------------------------------------------

TEST_F(SimHostRegister, InjectedFaultsUseTheDefaultErrorsAndChangeNothing)
{
  SIM_ONLY(sim(), "fault injection is the simulator's");
  host_pages pages(4 * host_page());
  // cuMemHostRegister acquires a resource: CUDA_ERROR_OUT_OF_MEMORY; nothing registered.
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemHostRegister_v2", 1, CUDA_SUCCESS));
  EXPECT_CU(CUDA_ERROR_OUT_OF_MEMORY, register_range(pages.data(), 4 * host_page()));
  EXPECT_EQ(registrations(), 0u);
  EXPECT_CU(CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED, unregister(pages.data()));
  scoped_registration registration(drv(), pages.data(), 4 * host_page());
  ASSERT_CU(CUDA_SUCCESS, registration.result()) << "the range was left free";
  // cuMemHostUnregister gives memory back: CUDA_ERROR_INVALID_VALUE; still registered.
  ASSERT_CU(CUDA_SUCCESS, sim().fail_call("cuMemHostUnregister", 1, CUDA_SUCCESS));
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, unregister(pages.data()));
  EXPECT_EQ(registrations(), 1u);
  scoped_registration again(drv(), pages.data(), host_page());
  EXPECT_CU(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED, again.result());
  EXPECT_CU(CUDA_SUCCESS, registration.unregister());
}

TEST_F(SimHostRegister, CensusCountsRegistrationsApartFromAllocations)
{
  SIM_ONLY(sim(), "the census is the simulator's");
  auto const before = sim().census();
  host_pages pages(8 * host_page());
  {
    scoped_registration a(drv(), pages.data(), host_page());
    scoped_registration b(drv(), pages.at(2 * host_page()), 3 * host_page() + 5);
    ASSERT_CU(CUDA_SUCCESS, a.result());
    ASSERT_CU(CUDA_SUCCESS, b.result());
    auto const during = sim().census();
    EXPECT_EQ(during.host_registrations, before.host_registrations + 2);
    EXPECT_EQ(during.host_registered_bytes, before.host_registered_bytes + 4 * host_page() + 5);
    EXPECT_EQ(during.host_allocations, before.host_allocations);
  }
  EXPECT_EQ(sim().census().host_registrations, before.host_registrations);
  EXPECT_EQ(sim().census().host_registered_bytes, before.host_registered_bytes);
}

// ---- In a child process: configuration at cuInit, context resets, the exit report ----------

class SimHostRegisterChild : public ::testing::Test {
 protected:
  void SetUp() override
  {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    if (!simulator_library_present()) {
      GTEST_SKIP() << "simulator only: the environment and the exit report are the simulator's";
    }
  }
};

TEST_F(SimHostRegisterChild, EnvironmentFaultFailsTheNthRegistration)
{
  auto const child = [] {
    configured_child(
      {{"SWAPALLOC_SIM_FAIL", "cuMemHostRegister:1"}}, [](driver const& drv, child_checks& check) {
        host_pages pages(host_page());
        auto const& t = drv.table();
        check.result(t.cuMemHostRegister(pages.data(), host_page(), 0), CUDA_ERROR_OUT_OF_MEMORY,
                     "the first cuMemHostRegister");
        check.result(t.cuMemHostRegister(pages.data(), host_page(), 0), CUDA_SUCCESS, "the second");
        check.result(t.cuMemHostUnregister(pages.data()), CUDA_SUCCESS, "cuMemHostUnregister");
      });
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
}

TEST_F(SimHostRegisterChild, ContextResetDropsItsRegistrationsButNotPortableOnes)
{
  // Assumed: a registration belongs to the context current at the call and goes with it
  // unless CU_MEMHOSTREGISTER_PORTABLE (openucx/ucx pull request 10643: unregistering
  // "will fail if the context in which the memory was allocated has been destroyed").
  auto const child = [] {
    configured_child({{"SWAPALLOC_SIM_DEVICES", "2"}}, [](driver const& drv, child_checks& check) {
      auto const& t = drv.table();
      sim_control const sim(drv);
      host_pages own(host_page());
      host_pages portable(host_page());
      check.result(t.cuMemHostRegister(own.data(), host_page(), 0), CUDA_SUCCESS, "register");
      check.result(t.cuMemHostRegister(portable.data(), host_page(), CU_MEMHOSTREGISTER_PORTABLE),
                   CUDA_SUCCESS, "register portable");
      check.result(t.cuDevicePrimaryCtxReset(1), CUDA_SUCCESS, "reset of device 1");
      check(sim.census().host_registrations == 2, "another context's reset drops nothing");
      check.result(t.cuDevicePrimaryCtxReset(0), CUDA_SUCCESS, "reset of device 0");
      check(sim.census().host_registrations == 1, "the reset dropped the non-portable one");
      check.result(t.cuMemHostUnregister(own.data()), CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED,
                   "unregister after the reset");
      check.result(t.cuMemHostUnregister(portable.data()), CUDA_SUCCESS, "unregister portable");
      check.result(t.cuMemHostRegister(own.data(), host_page(), 0), CUDA_SUCCESS,
                   "the dropped range registers again");
      check.result(t.cuMemHostUnregister(own.data()), CUDA_SUCCESS, "and unregisters");
    });
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
}

TEST_F(SimHostRegisterChild, ExitReportNamesRegistrationsNeverUnregistered)
{
  EXPECT_EXIT(strict_child([](driver const& drv, CUdevice) {
                void* const pages = ::mmap(nullptr, 2 * host_page(), PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (drv.table().cuMemHostRegister(pages, 2 * host_page(), 0) != CUDA_SUCCESS) {
                  child_exit(1);
                }
              }),
              ::testing::ExitedWithCode(3),
              "1 host registration not unregistered \\(cuMemHostUnregister\\)");
}

TEST_F(SimHostRegisterChild, RegistrationDroppedByAResetIsNoLeak)
{
  EXPECT_EXIT(strict_child([](driver const& drv, CUdevice device) {
                void* const pages = ::mmap(nullptr, host_page(), PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (drv.table().cuMemHostRegister(pages, host_page(), 0) != CUDA_SUCCESS ||
                    drv.table().cuDevicePrimaryCtxReset(device) != CUDA_SUCCESS) {
                  child_exit(1);
                }
              }),
              ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace swapalloc::testing
