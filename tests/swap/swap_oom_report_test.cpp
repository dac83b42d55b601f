// Regression test of issue 9, case 6: the out-of-memory report contradicted itself ("the
// device has no memory left" beside "free 24.00 MiB") and listed an evicted pool as
// 16 MiB allocated with 0 reserved. It must say what was asked for and what was free, and
// show each pool's resident, evicted (host) bytes and whether eviction can free them.
// The device is 128 MiB, 80 MiB of it held by "another process".
#include "swap_fixture.hpp"

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

namespace swapalloc::testing {
namespace {

int const device_128m = ::setenv("SWAPALLOC_SIM_MEMORY", "128M", 0);

/// The words of the line of `report` that starts with "  <name> ", or none.
std::vector<std::string> row_of(std::string const& report, std::string const& name)
{
  std::istringstream lines(report);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("  " + name + " ", 0) != 0) { continue; }
    std::istringstream words(line);
    std::vector<std::string> out;
    for (std::string word; words >> word;) {
      out.push_back(word);
    }
    return out;
  }
  return {};
}

class SwapOomReportTest : public SwapTest {};

TEST_F(SwapOomReportTest, TheReportSaysWhatWasAskedWhatWasFreeAndWhereEachPoolIs)
{
  if (!sim().available()) { GTEST_SKIP() << "needs the simulator's external usage"; }
  ASSERT_EQ(device_128m, 0);
  ASSERT_EQ(drv().mem_get_info().total, 128 * MiB);
  ASSERT_EQ(sim().set_external_usage(0, 80 * MiB), CUDA_SUCCESS);
  pool_id const unet = make_pool("unet");
  pool_id const vae  = make_pool("vae");
  // Filled, so that its host copy holds bytes (fresh pages may read as zeros, which are
  // stored as nothing).
  filled_block const vae_block = fill_new(vae, 16 * MiB, 6);
  CUdeviceptr live             = 0;
  (void)alloc().evict(vae, 0);
  {
    pool_scope const scope(alloc(), unet);
    live                = alloc().allocate(24 * MiB, 0, nullptr);
    CUdeviceptr const c = alloc().allocate(8 * MiB, 0, nullptr);
    alloc().deallocate(c, 8 * MiB, 0, nullptr);  // cached
  }
  std::string what;
  {
    pool_scope const scope(alloc(), unet);
    try {
      (void)alloc().allocate(40 * MiB, 0, nullptr);
      ADD_FAILURE() << "40 MiB fit";
    } catch (out_of_memory const& error) {
      what = error.what();
    }
  }
  std::size_t const free_now = free_bytes();
  EXPECT_EQ(what.find("no memory left"), std::string::npos) << what;
  for (std::string const& needle : std::vector<std::string>{
         "allocating 40.00 MiB (41943040 bytes) in pool 'unet'",
         "its block needs 40.00 MiB of new pages, and the device has " +
           swapalloc::bytes_text(free_now) + " free after releasing 8.00 MiB of cached pages",
         "total 128.00 MiB", "free " + swapalloc::bytes_text(free_now)}) {
    EXPECT_NE(what.find(needle), std::string::npos) << "missing '" << needle << "' in:\n" << what;
  }
  EXPECT_EQ(free_now, 24 * MiB) << "128 - 80 held elsewhere - 24 live";
  // Columns: pool, allocated, resident, cached-free, largest-free, evicted, host (values of
  // two words each), eviction.
  std::vector<std::string> const vae_row = row_of(what, "vae");
  ASSERT_GE(vae_row.size(), 14U) << what;
  EXPECT_EQ(vae_row[1] + " " + vae_row[2], "16.00 MiB") << "allocated";
  EXPECT_EQ(vae_row[3] + " " + vae_row[4], "0 B") << "resident";
  EXPECT_EQ(vae_row[9] + " " + vae_row[10], "16.00 MiB") << "evicted";
  EXPECT_NE(vae_row[11] + " " + vae_row[12], "0 B") << "its host copy";
  EXPECT_EQ(vae_row[13], "possible");
  std::vector<std::string> const unet_row = row_of(what, "unet");
  ASSERT_GE(unet_row.size(), 14U) << what;
  EXPECT_EQ(unet_row[3] + " " + unet_row[4], "24.00 MiB") << "resident";
  std::vector<std::string> const default_row = row_of(what, "default");
  EXPECT_TRUE(default_row.empty()) << "the default pool was never used on the device";
  EXPECT_NE(what.find("24.00 MiB resident in evictable pools"), std::string::npos) << what;
  alloc().deallocate(live, 24 * MiB, 0, nullptr);
  alloc().deallocate(vae_block.ptr, vae_block.bytes, 0, nullptr);
  ASSERT_EQ(sim().set_external_usage(0, 0), CUDA_SUCCESS);
}

}  // namespace
}  // namespace swapalloc::testing
