// Tests of include/swapalloc/vmm.hpp: address_reservation, map_pages, unmap_pages, and
// unmap_page and map_pages with a handle_cache.
// Device memory is read and written only through driver calls. The DriverTest fixture
// fails a test that leaves a handle, mapping or reservation behind (on the simulator).
#include <swapalloc/vmm.hpp>

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "driver_fixture.hpp"
#include "sim_control.hpp"

namespace swapalloc::testing {
namespace {

class VmmReservation : public DriverTest {};
class VmmPages : public DriverTest {
 protected:
  stray_pages stray_;  // what a failed map_pages's rollback could not give back
};

/// Runs `body` and returns the message of the exception of type `Error` it throws.
template <class Error, class Body>
[[nodiscard]] std::string message_of(Body&& body)
{
  try {
    body();
  } catch (Error const& error) {
    return error.what();
  }
  ADD_FAILURE() << "no exception thrown";
  return {};
}

TEST_F(VmmReservation, ReservesAnAlignedRangeAndFreesItOnDestruction)
{
  std::size_t reservations_before = 0;
  if (sim().available()) { reservations_before = sim().census().reservations; }
  {
    address_reservation range(drv(), 8 * gran());
    EXPECT_NE(range.base(), 0U);
    EXPECT_EQ(range.base() % gran(), 0U);
    EXPECT_EQ(range.size(), 8 * gran());
    EXPECT_TRUE(range.contains(range.base(), 8 * gran()));
    EXPECT_TRUE(range.contains(range.base() + 7 * gran(), gran()));
    EXPECT_FALSE(range.contains(range.base() + 7 * gran(), gran() + 1));
    EXPECT_FALSE(range.contains(range.base() - 1, 1));
    if (sim().available()) { EXPECT_EQ(sim().census().reservations, reservations_before + 1); }
  }
  if (sim().available()) { EXPECT_EQ(sim().census().reservations, reservations_before); }
}

TEST_F(VmmReservation, MovedFromReservationFreesNothing)
{
  address_reservation first(drv(), gran());
  CUdeviceptr const base = first.base();
  address_reservation second(std::move(first));
  EXPECT_EQ(second.base(), base);
  EXPECT_EQ(first.base(), 0U);  // NOLINT(bugprone-use-after-move): the moved-from state
  EXPECT_EQ(first.size(), 0U);  // NOLINT(bugprone-use-after-move)
}

TEST_F(VmmReservation, ZeroSizeIsRejectedWithTheArgumentNamed)
{
  auto const what = message_of<std::invalid_argument>([&] { address_reservation(drv(), 0); });
  EXPECT_NE(what.find("size=0"), std::string::npos) << what;
}

TEST_F(VmmPages, MappedPagesHoldDataAcrossPageBoundaries)
{
  address_reservation range(drv(), 4 * gran());
  std::size_t const free_before = free_bytes();
  map_pages(drv(), range.base(), gran(), 4, device(), stray_);
  EXPECT_EQ(free_before - free_bytes(), 4 * gran()) << "four pages of device memory";

  // A pattern written across all four pages through one copy reads back whole.
  std::size_t const words = 4 * gran() / 4;
  auto const data         = pattern(words, 0x5a17);
  drv().memcpy_htod(range.base(), data.data(), words * 4);
  EXPECT_EQ(read_words(drv(), range.base(), words), data);

  unmap_pages(drv(), range.base(), gran(), 4, device());
  EXPECT_EQ(free_bytes(), free_before) << "unmapping frees the pages: their handles are released";
}

TEST_F(VmmPages, PagesCanBeMappedAgainAtTheSameAddress)
{
  // The evict/restore cycle at page level: copy out, unmap, map fresh pages, copy back.
  address_reservation range(drv(), 2 * gran());
  map_pages(drv(), range.base(), gran(), 2, device(), stray_);
  std::size_t const words = 2 * gran() / 4;
  auto const data         = pattern(words, 0xbeef);
  drv().memcpy_htod(range.base(), data.data(), words * 4);
  auto const saved = read_words(drv(), range.base(), words);
  unmap_pages(drv(), range.base(), gran(), 2, device());

  map_pages(drv(), range.base(), gran(), 2, device(), stray_);
  drv().memcpy_htod(range.base(), saved.data(), words * 4);
  EXPECT_EQ(read_words(drv(), range.base(), words), data);
  unmap_pages(drv(), range.base(), gran(), 2, device());
}

TEST_F(VmmPages, MultiGranulePagesAndPartialRunsUnmapIndependently)
{
  // Pages of two granules; unmapping the second page leaves the first one intact.
  std::size_t const page = 2 * gran();
  address_reservation range(drv(), 2 * page);
  map_pages(drv(), range.base(), page, 2, device(), stray_);
  auto const data = pattern(page / 4, 0x1234);
  drv().memcpy_htod(range.base(), data.data(), page);
  unmap_pages(drv(), range.base() + page, page, 1, device());
  EXPECT_EQ(read_words(drv(), range.base(), page / 4), data);
  unmap_pages(drv(), range.base(), page, 1, device());
}

TEST_F(VmmPages, ArgumentsAreCheckedWithTheVariableNamed)
{
  address_reservation range(drv(), 2 * gran());
  auto const misaligned_size = message_of<std::invalid_argument>(
    [&] { map_pages(drv(), range.base(), gran() + 4096, 1, device(), stray_); });
  EXPECT_NE(misaligned_size.find("page_size=" + std::to_string(gran() + 4096)), std::string::npos)
    << misaligned_size;
  auto const misaligned_address = message_of<std::invalid_argument>(
    [&] { map_pages(drv(), range.base() + 4096, gran(), 1, device(), stray_); });
  EXPECT_NE(misaligned_address.find("address="), std::string::npos) << misaligned_address;
  auto const no_pages = message_of<std::invalid_argument>(
    [&] { unmap_pages(drv(), range.base(), gran(), 0, device()); });
  EXPECT_NE(no_pages.find("count=0"), std::string::npos) << no_pages;
}

TEST_F(VmmPages, MappingOverMappedPagesFailsAndLeavesThemIntact)
{
  address_reservation range(drv(), 2 * gran());
  map_pages(drv(), range.base(), gran(), 1, device(), stray_);
  auto const data = pattern(gran() / 4, 0x77);
  drv().memcpy_htod(range.base(), data.data(), gran());
  std::size_t const free_before = free_bytes();
  // The second page of the run overlaps nothing, the first overlaps the mapped page.
  EXPECT_THROW(map_pages(drv(), range.base(), gran(), 2, device(), stray_), cuda_error);
  EXPECT_EQ(free_bytes(), free_before) << "the failed run's pages were freed";
  EXPECT_EQ(read_words(drv(), range.base(), gran() / 4), data);
  unmap_pages(drv(), range.base(), gran(), 1, device());
}

// ---- Every driver call inside map_pages and unmap_pages can fail -------------------------

struct injected_fault {
  char const* entry;
  unsigned long long nth;  // which call of `entry` within one map_pages of 3 pages
  CUresult error;
};

class VmmPagesFault : public VmmPages, public ::testing::WithParamInterface<injected_fault> {};

TEST_P(VmmPagesFault, MapFailureLeavesNothingBehindAndTheRangeUsable)
{
  SIM_ONLY(sim(), "fault injection");
  injected_fault const fault = GetParam();
  address_reservation range(drv(), 3 * gran());
  std::size_t const free_before = free_bytes();
  auto const census_before      = sim().census();

  ASSERT_EQ(sim().fail_call(fault.entry, fault.nth, fault.error), CUDA_SUCCESS);
  try {
    map_pages(drv(), range.base(), gran(), 3, device(), stray_);
    FAIL() << "map_pages succeeded despite the fault in " << fault.entry;
  } catch (cuda_error const& error) {
    EXPECT_EQ(error.code(), fault.error);
    EXPECT_EQ(error.call(), fault.entry);
  }
  EXPECT_EQ(free_bytes(), free_before) << "every page created was freed";
  EXPECT_EQ(sim().census().handles, census_before.handles);
  EXPECT_EQ(sim().census().mappings, census_before.mappings);
  EXPECT_TRUE(stray_.empty()) << "the rollback gave everything back";

  // Nothing is left mapped, so the same run maps now.
  map_pages(drv(), range.base(), gran(), 3, device(), stray_);
  auto const data = pattern(3 * gran() / 4, 0x9);
  drv().memcpy_htod(range.base(), data.data(), 3 * gran());
  EXPECT_EQ(read_words(drv(), range.base(), data.size()), data);
  unmap_pages(drv(), range.base(), gran(), 3, device());
}

INSTANTIATE_TEST_SUITE_P(
  EveryCall, VmmPagesFault,
  ::testing::Values(injected_fault{"cuMemCreate", 1, CUDA_ERROR_OUT_OF_MEMORY},
                    injected_fault{"cuMemCreate", 3, CUDA_ERROR_OUT_OF_MEMORY},
                    injected_fault{"cuMemMap", 1, CUDA_ERROR_INVALID_VALUE},
                    injected_fault{"cuMemMap", 2, CUDA_ERROR_OUT_OF_MEMORY},
                    injected_fault{"cuMemRelease", 2, CUDA_ERROR_INVALID_VALUE},
                    injected_fault{"cuMemSetAccess", 1, CUDA_ERROR_INVALID_DEVICE}),
  [](auto const& info) {
    return std::string(info.param.entry) + "_call" + std::to_string(info.param.nth);
  });

// A rollback can fail too: what it cannot give back is kept in the stray pages, counted,
// and given back by their retry; the range is then usable again.
struct double_fault {
  char const* entry;  // the call that fails the map
  unsigned long long nth;
  char const* rollback;             // the rollback's call that fails too
  unsigned long long rollback_nth;  // which of its calls, counted from the start
};

class VmmPagesDoubleFault : public VmmPages, public ::testing::WithParamInterface<double_fault> {};

TEST_P(VmmPagesDoubleFault, WhatTheRollbackCannotUndoIsKeptAndGivenBackByARetry)
{
  SIM_ONLY(sim(), "fault injection");
  double_fault const fault = GetParam();
  address_reservation range(drv(), 3 * gran());
  std::size_t const free_before = free_bytes();
  auto const census_before      = sim().census();
  ASSERT_EQ(sim().fail_call(fault.entry, fault.nth, CUDA_SUCCESS), CUDA_SUCCESS);
  ASSERT_EQ(sim().fail_call(fault.rollback, fault.rollback_nth, CUDA_SUCCESS), CUDA_SUCCESS);
  EXPECT_THROW(map_pages(drv(), range.base(), gran(), 3, device(), stray_), cuda_error);
  sim().clear_faults();
  EXPECT_EQ(stray_.bytes(), gran()) << "one page is stray";
  EXPECT_EQ(free_bytes(), free_before - gran()) << "one page's memory is held, and counted";
  EXPECT_EQ(stray_.retry(drv()).code, CUDA_SUCCESS);
  EXPECT_TRUE(stray_.empty());
  EXPECT_EQ(free_bytes(), free_before);
  EXPECT_EQ(sim().census().handles, census_before.handles);
  EXPECT_EQ(sim().census().mappings, census_before.mappings);
  map_pages(drv(), range.base(), gran(), 3, device(), stray_);  // the range is usable
  unmap_pages(drv(), range.base(), gran(), 3, device());
}

INSTANTIATE_TEST_SUITE_P(
  RollbackFails, VmmPagesDoubleFault,
  ::testing::Values(
    // The 2nd page's map fails, and so does the release of its handle: a stray handle.
    double_fault{"cuMemMap", 2, "cuMemRelease", 2},
    // The access fails, and so does the unmap of the 1st page: a stray mapping.
    double_fault{"cuMemSetAccess", 1, "cuMemUnmap", 1},
    // The 2nd page's release fails, and so does its second try: the rollback unmaps the
    // page, its handle stays held.
    double_fault{"cuMemRelease", 2, "cuMemRelease", 3}),
  [](auto const& info) {
    return std::string(info.param.entry) + "_then_" + info.param.rollback + "_" +
           std::to_string(info.index);
  });

TEST_F(VmmPages, UnmapFailureUnmapsTheOtherPagesAndNamesTheFirstFailure)
{
  SIM_ONLY(sim(), "fault injection");
  address_reservation range(drv(), 4 * gran());
  map_pages(drv(), range.base(), gran(), 4, device(), stray_);
  std::size_t const mappings_before = sim().census().mappings;

  ASSERT_EQ(sim().fail_call("cuMemUnmap", 2, CUDA_ERROR_INVALID_VALUE), CUDA_SUCCESS);
  try {
    unmap_pages(drv(), range.base(), gran(), 4, device());
    FAIL() << "unmap_pages succeeded despite the fault";
  } catch (cuda_error const& error) {
    EXPECT_EQ(error.code(), CUDA_ERROR_INVALID_VALUE);
    std::string const what = error.what();
    EXPECT_NE(what.find(hex(range.base() + gran())), std::string::npos) << what;
    EXPECT_NE(what.find("1 of 4 pages stay mapped"), std::string::npos) << what;
  }
  EXPECT_EQ(sim().census().mappings, mappings_before - 3);

  // The page whose unmap failed is still mapped and usable, and unmaps on a retry.
  auto const data = pattern(gran() / 4, 0x42);
  drv().memcpy_htod(range.base() + gran(), data.data(), gran());
  EXPECT_EQ(read_words(drv(), range.base() + gran(), gran() / 4), data);
  unmap_pages(drv(), range.base() + gran(), gran(), 1, device());
}

// ------------------------------------------------------------ with a handle cache

TEST_F(VmmPages, AnUnmapIntoACacheKeepsThePageAndAMapElsewhereTakesIt)
{
  address_reservation from(drv(), 2 * gran());
  address_reservation to(drv(), gran());
  handle_cache cache(drv(), 4 * gran());
  handle_cache::armed const scope(cache);
  map_pages(drv(), from.base(), gran(), 2, device(), stray_, &cache);
  auto const data = pattern(gran() / 4, 0x7e57);
  drv().memcpy_htod(from.base() + gran(), data.data(), gran());
  std::size_t const free_mapped = free_bytes();

  EXPECT_EQ(unmap_page(drv(), from.base() + gran(), gran(), &cache, stray_), CUDA_SUCCESS);
  EXPECT_EQ(cache.held_bytes(), gran());
  EXPECT_EQ(free_bytes(), free_mapped) << "the cache holds the page's memory";
  auto const creates = sim().available() ? sim().call_count("cuMemCreate") : 0;
  map_pages(drv(), to.base(), gran(), 1, device(), stray_, &cache);
  if (sim().available()) { EXPECT_EQ(sim().call_count("cuMemCreate"), creates); }
  EXPECT_EQ(cache.held_bytes(), 0U);
  EXPECT_EQ(read_words(drv(), to.base(), gran() / 4), data) << "the same memory, mapped anew";
  EXPECT_EQ(cache.stats().hits, 1U);
  EXPECT_EQ(unmap_page(drv(), from.base(), gran(), nullptr, stray_), CUDA_SUCCESS);
  EXPECT_EQ(unmap_page(drv(), to.base(), gran(), nullptr, stray_), CUDA_SUCCESS);
  EXPECT_EQ(free_bytes(), free_mapped + 2 * gran()) << "without a cache, unmaps free";
  EXPECT_TRUE(stray_.empty());
}

TEST_F(VmmPages, AFullCacheIsNotAskedToRetainAndTheUnmapFreesThePage)
{
  SIM_ONLY(sim(), "counts cuMemRetainAllocationHandle calls");
  address_reservation range(drv(), gran());
  handle_cache cache(drv(), 0);
  handle_cache::armed const scope(cache);
  map_pages(drv(), range.base(), gran(), 1, device(), stray_, &cache);
  std::size_t const free_mapped = free_bytes();
  auto const retains            = sim().call_count("cuMemRetainAllocationHandle");
  EXPECT_EQ(unmap_page(drv(), range.base(), gran(), &cache, stray_), CUDA_SUCCESS);
  EXPECT_EQ(sim().call_count("cuMemRetainAllocationHandle"), retains);
  EXPECT_EQ(free_bytes(), free_mapped + gran());
}

TEST_F(VmmPages, AFailedRetainStillUnmapsAndFreesThePage)
{
  SIM_ONLY(sim(), "fault injection");
  address_reservation range(drv(), gran());
  handle_cache cache(drv(), 4 * gran());
  handle_cache::armed const scope(cache);
  map_pages(drv(), range.base(), gran(), 1, device(), stray_, &cache);
  std::size_t const free_mapped = free_bytes();
  ASSERT_EQ(sim().fail_call("cuMemRetainAllocationHandle", 1, CUDA_SUCCESS), CUDA_SUCCESS);
  EXPECT_EQ(unmap_page(drv(), range.base(), gran(), &cache, stray_), CUDA_SUCCESS);
  EXPECT_EQ(cache.held_bytes(), 0U);
  EXPECT_EQ(free_bytes(), free_mapped + gran());
}

TEST_F(VmmPages, AFailedUnmapIntoACacheLeavesThePageMappedAndTheCacheEmpty)
{
  SIM_ONLY(sim(), "fault injection");
  address_reservation range(drv(), gran());
  handle_cache cache(drv(), 4 * gran());
  handle_cache::armed const scope(cache);
  map_pages(drv(), range.base(), gran(), 1, device(), stray_, &cache);
  std::size_t const handles = sim().census().handles;
  ASSERT_EQ(sim().fail_call("cuMemUnmap", 1, CUDA_SUCCESS), CUDA_SUCCESS);
  EXPECT_NE(unmap_page(drv(), range.base(), gran(), &cache, stray_), CUDA_SUCCESS);
  EXPECT_EQ(cache.held_bytes(), 0U) << "a page still mapped must not be handed out";
  EXPECT_EQ(sim().census().handles, handles) << "the retained reference was released";
  EXPECT_TRUE(stray_.empty());
  auto const data = pattern(gran() / 4, 0x11);
  drv().memcpy_htod(range.base(), data.data(), gran());
  EXPECT_EQ(read_words(drv(), range.base(), gran() / 4), data) << "still mapped and usable";
  EXPECT_EQ(unmap_page(drv(), range.base(), gran(), &cache, stray_), CUDA_SUCCESS);
  (void)cache.release_all();
}

TEST_F(VmmPages, AFailedMapOfACachedHandleReleasesIt)
{
  SIM_ONLY(sim(), "fault injection");
  address_reservation range(drv(), gran());
  handle_cache cache(drv(), 4 * gran());
  handle_cache::armed const scope(cache);
  std::size_t const free_before = free_bytes();
  cache.give(drv().mem_create(gran(), device()), gran());
  ASSERT_EQ(sim().fail_call("cuMemMap", 1, CUDA_SUCCESS), CUDA_SUCCESS);
  EXPECT_THROW(map_pages(drv(), range.base(), gran(), 1, device(), stray_, &cache), cuda_error);
  EXPECT_EQ(cache.held_bytes(), 0U);
  EXPECT_TRUE(stray_.empty());
  EXPECT_EQ(free_bytes(), free_before) << "the handle taken from the cache was released";
}

TEST_F(VmmPages, ARunIsUnmappedWithOneCallAndTheCacheKeepsWhatItHasRoomFor)
{
  address_reservation range(drv(), 3 * gran());
  handle_cache cache(drv(), 2 * gran());
  handle_cache::armed const scope(cache);
  map_pages(drv(), range.base(), gran(), 3, device(), stray_, &cache);
  std::size_t const free_mapped = free_bytes();
  auto const unmaps             = sim().available() ? sim().call_count("cuMemUnmap") : 0;
  stray_.reserve(3);
  EXPECT_EQ(unmap_run(drv(), range.base(), gran(), 3, &cache, stray_), CUDA_SUCCESS);
  if (sim().available()) { EXPECT_EQ(sim().call_count("cuMemUnmap"), unmaps + 1); }
  EXPECT_EQ(cache.held_bytes(), 2 * gran()) << "the first two pages, as far as its room goes";
  EXPECT_EQ(free_bytes(), free_mapped + gran()) << "the third page's memory was freed";
  auto const creates = sim().available() ? sim().call_count("cuMemCreate") : 0;
  map_pages(drv(), range.base(), gran(), 1, device(), stray_, &cache);
  if (sim().available()) { EXPECT_EQ(sim().call_count("cuMemCreate"), creates); }
  EXPECT_EQ(cache.stats().hits, 1U) << "a page of the run, mapped anew";
  EXPECT_EQ(unmap_page(drv(), range.base(), gran(), nullptr, stray_), CUDA_SUCCESS);
  EXPECT_TRUE(stray_.empty());
}

TEST_F(VmmPages, AFailedRunUnmapKeepsNoReferenceAndThePagesUnmapOneByOne)
{
  SIM_ONLY(sim(), "fault injection");
  address_reservation range(drv(), 2 * gran());
  handle_cache cache(drv(), 4 * gran());
  handle_cache::armed const scope(cache);
  map_pages(drv(), range.base(), gran(), 2, device(), stray_, &cache);
  std::size_t const handles     = sim().census().handles;
  std::size_t const free_mapped = free_bytes();
  stray_.reserve(2);
  ASSERT_EQ(sim().fail_call("cuMemUnmap", 1, CUDA_SUCCESS), CUDA_SUCCESS);
  EXPECT_NE(unmap_run(drv(), range.base(), gran(), 2, &cache, stray_), CUDA_SUCCESS);
  EXPECT_EQ(cache.held_bytes(), 0U) << "pages still mapped must not be handed out";
  EXPECT_EQ(sim().census().handles, handles) << "the retained references were released";
  EXPECT_TRUE(stray_.empty());
  EXPECT_EQ(free_bytes(), free_mapped) << "both pages still mapped";
  for (std::size_t page = 0; page < 2; ++page) {
    EXPECT_EQ(unmap_page(drv(), range.base() + page * gran(), gran(), nullptr, stray_),
              CUDA_SUCCESS);
  }
  EXPECT_EQ(free_bytes(), free_mapped + 2 * gran());
}

}  // namespace
}  // namespace swapalloc::testing
