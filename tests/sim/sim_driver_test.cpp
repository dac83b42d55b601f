// Conformance: the driver seam and initialization.
// Spec: tools/cudasim/README.md "Devices, contexts, initialization" (initialization,
// cuGetErrorName/String, cuDriverGetVersion); DESIGN §3 driver.hpp and §4 "Load versioned
// symbols". cuda.h docs checked: the versioned-name macros at the top of cuda.h,
// cuInit, cuDriverGetVersion, cuGetErrorName, cuGetErrorString, cuMemcpyBatchAsync,
// cuMemHostRegister.
#include <dlfcn.h>

#include <cstring>
#include <string>
#include <type_traits>

#include <gtest/gtest.h>
#include <swapalloc/driver.hpp>

#include "driver_fixture.hpp"
#include "sim_control.hpp"
#include "unwrapped_entry_points.hpp"

namespace swapalloc::testing {
namespace {

// Two-level stringize: the argument is macro-expanded first, so SIM_NAME(cuMemGetInfo)
// is "cuMemGetInfo_v2" exactly when cuda.h maps the name to that ABI.
#define SIM_STRINGIZE(x) #x
#define SIM_NAME(x)      SIM_STRINGIZE(x)

TEST(SimDriver, StringizeFollowsCudaHeaderMapping)
{
  // The check below relies on the macro; pin a few mappings cuda.h is known to make.
  EXPECT_STREQ(SIM_NAME(cuMemGetInfo), "cuMemGetInfo_v2");
  EXPECT_STREQ(SIM_NAME(cuMemcpyHtoD), "cuMemcpyHtoD_v2");
  EXPECT_STREQ(SIM_NAME(cuMemcpyDtoHAsync), "cuMemcpyDtoHAsync_v2");
  EXPECT_STREQ(SIM_NAME(cuStreamDestroy), "cuStreamDestroy_v2");
  EXPECT_STREQ(SIM_NAME(cuEventElapsedTime), "cuEventElapsedTime_v2");
  EXPECT_STREQ(SIM_NAME(cuMemcpyBatchAsync), "cuMemcpyBatchAsync_v2");
  EXPECT_STREQ(SIM_NAME(cuMemHostRegister), "cuMemHostRegister_v2");
  EXPECT_STREQ(SIM_NAME(cuMemHostUnregister), "cuMemHostUnregister");
  EXPECT_STREQ(SIM_NAME(cuMemsetD8Async), "cuMemsetD8Async");
  EXPECT_STREQ(SIM_NAME(cuMemCreate), "cuMemCreate");
}

// Every entry point of driver_table must be the symbol cuda.h maps its name to: the
// bare name of a versioned API is the old ABI (cuMemGetInfo takes unsigned int*).
TEST(SimDriver, VersionedSymbols)
{
  driver const& drv = shared_driver();
  auto const& t     = drv.table();
#define SIM_CHECK_SYMBOL(name)                                                       \
  do {                                                                               \
    void* const expected = drv.find_symbol(SIM_NAME(name));                          \
    EXPECT_NE(expected, nullptr) << "the driver does not export " << SIM_NAME(name); \
    EXPECT_EQ(reinterpret_cast<void*>(t.name), expected)                             \
      << "driver_table::" #name " is not the symbol " << SIM_NAME(name)              \
      << " that cuda.h maps " #name " to";                                           \
  } while (0)
  SIM_CHECK_SYMBOL(cuInit);
  SIM_CHECK_SYMBOL(cuDriverGetVersion);
  SIM_CHECK_SYMBOL(cuGetErrorName);
  SIM_CHECK_SYMBOL(cuGetErrorString);
  SIM_CHECK_SYMBOL(cuDeviceGetCount);
  SIM_CHECK_SYMBOL(cuDeviceGet);
  SIM_CHECK_SYMBOL(cuDeviceGetName);
  SIM_CHECK_SYMBOL(cuDeviceGetAttribute);
  SIM_CHECK_SYMBOL(cuDeviceTotalMem);
  SIM_CHECK_SYMBOL(cuDevicePrimaryCtxRetain);
  SIM_CHECK_SYMBOL(cuDevicePrimaryCtxRelease);
  SIM_CHECK_SYMBOL(cuDevicePrimaryCtxReset);
  SIM_CHECK_SYMBOL(cuCtxGetCurrent);
  SIM_CHECK_SYMBOL(cuCtxSetCurrent);
  SIM_CHECK_SYMBOL(cuCtxGetDevice);
  SIM_CHECK_SYMBOL(cuCtxSynchronize);
  SIM_CHECK_SYMBOL(cuMemGetInfo);
  SIM_CHECK_SYMBOL(cuMemGetAllocationGranularity);
  SIM_CHECK_SYMBOL(cuMemAddressReserve);
  SIM_CHECK_SYMBOL(cuMemAddressFree);
  SIM_CHECK_SYMBOL(cuMemCreate);
  SIM_CHECK_SYMBOL(cuMemRelease);
  SIM_CHECK_SYMBOL(cuMemMap);
  SIM_CHECK_SYMBOL(cuMemUnmap);
  SIM_CHECK_SYMBOL(cuMemSetAccess);
  SIM_CHECK_SYMBOL(cuMemGetAccess);
  SIM_CHECK_SYMBOL(cuMemRetainAllocationHandle);
  SIM_CHECK_SYMBOL(cuMemHostAlloc);
  SIM_CHECK_SYMBOL(cuMemAllocHost);
  SIM_CHECK_SYMBOL(cuMemFreeHost);
  SIM_CHECK_SYMBOL(cuMemHostRegister);
  SIM_CHECK_SYMBOL(cuMemHostUnregister);
  SIM_CHECK_SYMBOL(cuMemcpyHtoD);
  SIM_CHECK_SYMBOL(cuMemcpyDtoH);
  SIM_CHECK_SYMBOL(cuMemcpyDtoD);
  SIM_CHECK_SYMBOL(cuMemcpyHtoDAsync);
  SIM_CHECK_SYMBOL(cuMemcpyDtoHAsync);
  SIM_CHECK_SYMBOL(cuMemcpyDtoDAsync);
  SIM_CHECK_SYMBOL(cuMemsetD8);
  SIM_CHECK_SYMBOL(cuMemsetD32);
  SIM_CHECK_SYMBOL(cuMemsetD8Async);
  SIM_CHECK_SYMBOL(cuMemsetD32Async);
  SIM_CHECK_SYMBOL(cuStreamCreate);
  SIM_CHECK_SYMBOL(cuStreamDestroy);
  SIM_CHECK_SYMBOL(cuStreamSynchronize);
  SIM_CHECK_SYMBOL(cuStreamQuery);
  SIM_CHECK_SYMBOL(cuStreamWaitEvent);
  SIM_CHECK_SYMBOL(cuEventCreate);
  SIM_CHECK_SYMBOL(cuEventDestroy);
  SIM_CHECK_SYMBOL(cuEventRecord);
  SIM_CHECK_SYMBOL(cuEventQuery);
  SIM_CHECK_SYMBOL(cuEventSynchronize);
  SIM_CHECK_SYMBOL(cuEventElapsedTime);
  SIM_CHECK_SYMBOL(cuLaunchHostFunc);
#undef SIM_CHECK_SYMBOL
  // Optional (driver::has_memcpy_batch): null in the table where the driver lacks it.
  EXPECT_EQ(reinterpret_cast<void*>(t.cuMemcpyBatchAsync),
            drv.find_symbol(SIM_NAME(cuMemcpyBatchAsync)))
    << "driver_table::cuMemcpyBatchAsync is not the symbol cuda.h maps its name to";
}

// The entry points PyTorch's ATen resolves besides those of driver_table
// (c10/cuda/driver_api.h's required list, and the cuDevicePrimaryCtxGetState of its CUDA
// generator): exported under the symbol cuda.h maps each name to.
TEST(SimDriver, EntryPointsPyTorchResolvesAreExported)
{
  driver const& drv = shared_driver();
  EXPECT_STREQ(SIM_NAME(cuMemGetAddressRange), "cuMemGetAddressRange_v2");
  EXPECT_STREQ(SIM_NAME(cuStreamWriteValue32), "cuStreamWriteValue32_v2");
  for (char const* const name :
       {SIM_NAME(cuDevicePrimaryCtxGetState), SIM_NAME(cuMemGetAddressRange),
        SIM_NAME(cuMemRetainAllocationHandle), SIM_NAME(cuMemGetAllocationPropertiesFromHandle),
        SIM_NAME(cuMemExportToShareableHandle), SIM_NAME(cuMemImportFromShareableHandle),
        SIM_NAME(cuStreamWriteValue32)}) {
    EXPECT_NE(drv.find_symbol(name), nullptr) << "the driver does not export " << name;
  }
  EXPECT_TRUE(unwrapped_entry_points(drv).complete());
  if (sim_control(drv).available()) {
    // The bare names are older ABIs (cuMemGetAddressRange: unsigned int sizes; the v1
    // stream memory operations), which the simulator leaves out, so that a lookup of
    // the wrong one fails against it (see legacy_exports.cpp).
    EXPECT_EQ(drv.find_symbol("cuMemGetAddressRange"), nullptr);
    EXPECT_EQ(drv.find_symbol("cuStreamWriteValue32"), nullptr);
  }
}

TEST(SimDriver, MissingLibraryThrowsDriverUnavailable)
{
  std::string const path = "/nonexistent/libcuda.so";
  try {
    driver missing(path);
    FAIL() << "driver(\"" << path << "\") did not throw";
  } catch (driver_unavailable const& error) {
    std::string const what = error.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find("SWAPALLOC_CUDA_DRIVER"), std::string::npos) << what;
  }
}

TEST(SimDriver, ElapsedTimeFallsBackToTheBareSymbolOfOlderDrivers)
{
  // Drivers before CUDA 12.8 (R535, R550) lack cuEventElapsedTime_v2 and export the bare
  // cuEventElapsedTime, of the same prototype; libcudasim_r550.so is such a driver.
  if (!simulator_library_present()) {
    GTEST_SKIP() << "simulator only: libcudasim_r550.so stands in for an older driver";
  }
  driver older(SWAPALLOC_CUDASIM_R550_PATH);
  EXPECT_EQ(older.find_symbol("cuEventElapsedTime_v2"), nullptr);
  void* const bare = older.find_symbol("cuEventElapsedTime");
  ASSERT_NE(bare, nullptr);
  EXPECT_EQ(reinterpret_cast<void*>(older.table().cuEventElapsedTime), bare);

  // ... and the entry point it fell back to measures time.
  CUdevice const device = older.device(0);
  older.set_current_context(older.retain_primary_context(device));
  CUevent const start = older.event_create(CU_EVENT_DEFAULT);
  CUevent const stop  = older.event_create(CU_EVENT_DEFAULT);
  older.event_record(start, nullptr);
  older.event_record(stop, nullptr);
  older.event_synchronize(stop);
  float milliseconds = -1.0F;
  EXPECT_EQ(older.table().cuEventElapsedTime(&milliseconds, start, stop), CUDA_SUCCESS);
  EXPECT_GE(milliseconds, 0.0F);
  older.event_destroy(start);
  older.event_destroy(stop);
  older.release_primary_context(device);
}

TEST(SimDriver, BatchedCopyIsExportedUnderItsCuda13SymbolOnly)
{
  // cuda.h (CUDA 13.0) maps cuMemcpyBatchAsync to cuMemcpyBatchAsync_v2. The bare symbol
  // of CUDA 12.8/12.9 drivers takes an extra failIdx (another ABI): the simulator leaves it
  // out, so that a lookup of the wrong one fails against it. A driver before CUDA 12.8
  // (libcudasim_r550.so) has neither.
  if (!simulator_library_present()) {
    GTEST_SKIP() << "simulator only: which symbols a real driver exports depends on its version";
  }
  driver const& drv = shared_driver();
  EXPECT_NE(drv.find_symbol("cuMemcpyBatchAsync_v2"), nullptr);
  EXPECT_EQ(drv.find_symbol("cuMemcpyBatchAsync"), nullptr);
  void* const older = ::dlopen(SWAPALLOC_CUDASIM_R550_PATH, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(older, nullptr) << ::dlerror();
  EXPECT_EQ(::dlsym(older, "cuMemcpyBatchAsync_v2"), nullptr);
  EXPECT_EQ(::dlsym(older, "cuMemcpyBatchAsync"), nullptr);
  EXPECT_NE(::dlsym(older, "cuMemcpyHtoDAsync_v2"), nullptr) << "the library exports copies";
  ::dlclose(older);
}

TEST(SimDriver, HostRegistrationIsExportedByCurrentAndOlderDrivers)
{
  // cuda.h maps cuMemHostRegister to cuMemHostRegister_v2 (CUDA 6.5); R550 drivers have it
  // and cuMemHostUnregister, so both simulator libraries export both. The bare
  // cuMemHostRegister is CUDA 4.0's, which the simulator leaves out (as every bare name
  // that cuda.h maps), so that a seam resolving it fails against it.
  if (!simulator_library_present()) {
    GTEST_SKIP() << "simulator only: which symbols a real driver exports depends on its version";
  }
  driver const& drv = shared_driver();
  EXPECT_EQ(drv.find_symbol("cuMemHostRegister"), nullptr);
  driver const older(SWAPALLOC_CUDASIM_R550_PATH);
  EXPECT_NE(older.find_symbol("cuMemHostRegister_v2"), nullptr);
  EXPECT_NE(older.find_symbol("cuMemHostUnregister"), nullptr);
  EXPECT_EQ(reinterpret_cast<void*>(older.table().cuMemHostRegister),
            older.find_symbol("cuMemHostRegister_v2"));
  EXPECT_EQ(reinterpret_cast<void*>(older.table().cuMemHostUnregister),
            older.find_symbol("cuMemHostUnregister"));
}

TEST(SimDriver, AnOlderDriverWithoutBatchedCopiesLoadsWithoutThem)
{
  // cuMemcpyBatchAsync is optional in the seam (driver.hpp resolve_optional): a driver
  // without cuMemcpyBatchAsync_v2 loads, and the transfer engine copies range by range.
  if (!simulator_library_present()) {
    GTEST_SKIP() << "simulator only: libcudasim_r550.so stands in for an older driver";
  }
  EXPECT_TRUE(shared_driver().has_memcpy_batch());
  driver const older(SWAPALLOC_CUDASIM_R550_PATH);
  EXPECT_FALSE(older.has_memcpy_batch());
  EXPECT_EQ(older.table().cuMemcpyBatchAsync, nullptr);
  EXPECT_NE(older.table().cuMemcpyHtoDAsync, nullptr);
}

TEST(SimDriver, LibraryWithoutDriverSymbolsThrowsDriverUnavailable)
{
  // libc opens fine but exports no CUDA entry point: the error names the symbol.
  try {
    driver not_a_driver("libc.so.6");
    FAIL() << "driver(\"libc.so.6\") did not throw";
  } catch (driver_unavailable const& error) {
    std::string const what = error.what();
    EXPECT_NE(what.find("libc.so.6"), std::string::npos) << what;
    EXPECT_NE(what.find("cuInit"), std::string::npos) << what;
    // ... and the CUDA version a driver must support: the one of the cuda.h built with.
    std::string const built_with = "CUDA " + std::to_string(CUDA_VERSION / 1000) + "." +
                                   std::to_string(CUDA_VERSION % 1000 / 10);
    EXPECT_NE(what.find(built_with), std::string::npos) << what;
  }
}

class SimDriverSeam : public DriverTest {};

TEST_F(SimDriverSeam, FailingCheckedWrapperThrowsCudaErrorWithContext)
{
  scoped_reservation reservation(drv(), 2 * gran());
  scoped_handle handle(drv(), gran(), device());
  CUdeviceptr const misaligned = reservation.ptr() + gran() / 2;
  try {
    drv().mem_map(misaligned, gran(), handle.get());
    table().cuMemUnmap(misaligned, gran());  // not reached on a conforming driver
    FAIL() << "cuMemMap at a misaligned address did not throw";
  } catch (cuda_error const& error) {
    std::string const what = error.what();
    EXPECT_EQ(error.code(), CUDA_ERROR_INVALID_VALUE);
    EXPECT_EQ(error.call(), "cuMemMap");
    EXPECT_NE(what.find("cuMemMap"), std::string::npos) << what;
    EXPECT_NE(what.find("CUDA_ERROR_INVALID_VALUE"), std::string::npos) << what;
    EXPECT_NE(what.find("ptr=" + hex(misaligned)), std::string::npos) << what;
    EXPECT_NE(what.find("size=" + std::to_string(gran())), std::string::npos) << what;
    EXPECT_NE(what.find("handle=" + hex(handle.get())), std::string::npos) << what;
  }
}

TEST_F(SimDriverSeam, ErrorNamesAndStrings)
{
  struct known {
    CUresult code;
    char const* name;
  };
  known const codes[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE"},
    {CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY"},
    {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS"},
    {CUDA_ERROR_NOT_PERMITTED, "CUDA_ERROR_NOT_PERMITTED"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED"},
  };
  for (auto const& entry : codes) {
    char const* name        = nullptr;
    char const* description = nullptr;
    EXPECT_CU(CUDA_SUCCESS, table().cuGetErrorName(entry.code, &name));
    ASSERT_NE(name, nullptr) << entry.name;
    EXPECT_STREQ(name, entry.name);
    EXPECT_CU(CUDA_SUCCESS, table().cuGetErrorString(entry.code, &description));
    ASSERT_NE(description, nullptr) << entry.name;
    EXPECT_GT(std::strlen(description), 0u) << entry.name;
  }
  // cuda.h: an unrecognized code is CUDA_ERROR_INVALID_VALUE and *pStr is set to NULL.
  auto const unknown      = static_cast<CUresult>(123456);
  char const* name        = "sentinel";
  char const* description = "sentinel";
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuGetErrorName(unknown, &name));
  EXPECT_EQ(name, nullptr);
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuGetErrorString(unknown, &description));
  EXPECT_EQ(description, nullptr);
}

TEST_F(SimDriverSeam, DriverVersion)
{
  int version = 0;
  ASSERT_CU(CUDA_SUCCESS, table().cuDriverGetVersion(&version));
  EXPECT_GE(version, 12000) << "swapalloc needs a CUDA 12 or newer driver";
  if (sim().available()) { EXPECT_EQ(version, 13000) << "cudasim reports CUDA 13.0"; }
}

TEST_F(SimDriverSeam, InitRejectsNonZeroFlags)
{
  // cuda.h: "Currently, the Flags parameter must be 0".
  EXPECT_CU(CUDA_ERROR_INVALID_VALUE, table().cuInit(1));
  EXPECT_CU(CUDA_SUCCESS, table().cuInit(0));
}

// Before cuInit every entry point but cuGetErrorName/String and cuDriverGetVersion is
// CUDA_ERROR_NOT_INITIALIZED (cuda.h, cuInit). The test process has initialized its
// driver already, so a child process opens the library raw and checks it before cuInit.
TEST(SimDriverDeathTest, NotInitializedBeforeCuInit)
{
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto const child = [] {
    void* lib = ::dlopen(driver_library_path().c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      std::fprintf(stderr, "dlopen failed: %s\n", ::dlerror());
      child_exit(1);
    }
    bool missing = false;
    auto symbol  = [&](auto& slot, char const* name) {
      slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(::dlsym(lib, name));
      if (slot == nullptr) {
        std::fprintf(stderr, "the driver does not export %s\n", name);
        missing = true;
      }
    };
    decltype(&::cuInit) init{};
    decltype(&::cuDriverGetVersion) version{};
    decltype(&::cuGetErrorName) error_name{};
    decltype(&::cuGetErrorString) error_string{};
    decltype(&::cuDeviceGetCount) count{};
    decltype(&::cuDeviceGet) get_device{};
    decltype(&::cuDevicePrimaryCtxRetain) retain{};
    decltype(&::cuCtxGetCurrent) get_current{};
    decltype(&::cuMemGetInfo) mem_info{};
    decltype(&::cuMemAddressReserve) reserve{};
    decltype(&::cuMemHostAlloc) host_alloc{};
    decltype(&::cuStreamCreate) stream_create{};
    symbol(init, "cuInit");
    symbol(version, "cuDriverGetVersion");
    symbol(error_name, "cuGetErrorName");
    symbol(error_string, "cuGetErrorString");
    symbol(count, "cuDeviceGetCount");
    symbol(get_device, "cuDeviceGet");
    symbol(retain, "cuDevicePrimaryCtxRetain");
    symbol(get_current, "cuCtxGetCurrent");
    symbol(mem_info, SIM_NAME(cuMemGetInfo));
    symbol(reserve, "cuMemAddressReserve");
    symbol(host_alloc, "cuMemHostAlloc");
    symbol(stream_create, "cuStreamCreate");
    if (missing) { child_exit(1); }
    // Optional: drivers before CUDA 13.0 lack cuMemcpyBatchAsync_v2.
    auto const batch =
      reinterpret_cast<decltype(&::cuMemcpyBatchAsync)>(::dlsym(lib, SIM_NAME(cuMemcpyBatchAsync)));
    // The simulator's control API (absent from a real driver) has the same rule.
    auto const set_external = reinterpret_cast<decltype(&::cudasimSetExternalUsage)>(
      ::dlsym(lib, "cudasimSetExternalUsage"));
    int failures = 0;
    auto expect  = [&](CUresult actual, CUresult expected, char const* what) {
      if (actual != expected) {
        std::fprintf(stderr, "%s returned %d, expected %d\n", what, actual, expected);
        ++failures;
      }
    };
    int n                   = 0;
    CUdevice device         = 0;
    CUcontext context       = nullptr;
    std::size_t free_bytes  = 0;
    std::size_t total_bytes = 0;
    CUdeviceptr address     = 0;
    void* pinned            = nullptr;
    CUstream stream         = nullptr;
    char const* text        = nullptr;
    expect(count(&n), CUDA_ERROR_NOT_INITIALIZED, "cuDeviceGetCount before cuInit");
    expect(get_device(&device, 0), CUDA_ERROR_NOT_INITIALIZED, "cuDeviceGet before cuInit");
    expect(retain(&context, 0), CUDA_ERROR_NOT_INITIALIZED,
           "cuDevicePrimaryCtxRetain before cuInit");
    expect(get_current(&context), CUDA_ERROR_NOT_INITIALIZED, "cuCtxGetCurrent before cuInit");
    expect(mem_info(&free_bytes, &total_bytes), CUDA_ERROR_NOT_INITIALIZED,
           "cuMemGetInfo_v2 before cuInit");
    expect(reserve(&address, std::size_t{2} << 20, 0, 0, 0), CUDA_ERROR_NOT_INITIALIZED,
           "cuMemAddressReserve before cuInit");
    expect(host_alloc(&pinned, 4096, 0), CUDA_ERROR_NOT_INITIALIZED,
           "cuMemHostAlloc before cuInit");
    expect(stream_create(&stream, CU_STREAM_NON_BLOCKING), CUDA_ERROR_NOT_INITIALIZED,
           "cuStreamCreate before cuInit");
    if (batch != nullptr) {
      expect(batch(nullptr, nullptr, nullptr, 0, nullptr, nullptr, 0, nullptr),
             CUDA_ERROR_NOT_INITIALIZED, "cuMemcpyBatchAsync_v2 before cuInit");
    }
    if (set_external != nullptr) {
      expect(set_external(0, 0), CUDA_ERROR_NOT_INITIALIZED,
             "cudasimSetExternalUsage before cuInit");
    }
    expect(version(&n), CUDA_SUCCESS, "cuDriverGetVersion before cuInit");
    expect(error_name(CUDA_ERROR_INVALID_VALUE, &text), CUDA_SUCCESS,
           "cuGetErrorName before cuInit");
    expect(error_string(CUDA_ERROR_INVALID_VALUE, &text), CUDA_SUCCESS,
           "cuGetErrorString before cuInit");
    expect(init(0), CUDA_SUCCESS, "cuInit(0)");
    expect(count(&n), CUDA_SUCCESS, "cuDeviceGetCount after cuInit");
    child_exit(failures == 0 ? 0 : 1);
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace swapalloc::testing
