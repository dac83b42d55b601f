// Tests of libswapalloc.so's C ABI (include/swapalloc/swapalloc.h, plugin/): every function,
// and every misuse -- null pointers, unknown pools, unbalanced pops, foreign and double
// frees, calls before init, bad configuration -- returns its error code with a message
// naming what was wrong, and leaves the allocator usable with its data intact. On a 256 MiB
// simulated device; device memory is only read and written through driver calls.
#include "driver_fixture.hpp"
#include "stats_json.hpp"

#include <swapalloc/swapalloc.h>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace swapalloc::testing {
namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;

/// 0 once the simulator's device is set to 256 MiB (setenv's result), before any cuInit.
int const sim_memory_set = ::setenv("SWAPALLOC_SIM_MEMORY", "256M", 0);

/// The thread's last error as a string.
std::string message() { return swapalloc_last_error(); }

/// Whether `text` contains `part`.
bool has(std::string const& text, std::string const& part)
{
  return text.find(part) != std::string::npos;
}

/// Makes the thread's last error a known sentinel (a refused configure key, which changes
/// nothing), so that a later check can see that no call failed since.
void mark_last_error()
{
  swapalloc_pool_id pool = 0;
  EXPECT_EQ(swapalloc_pool_find("sentinel", &pool), SWAPALLOC_ERROR_UNKNOWN_POOL);
}
/// Whether no call failed since mark_last_error.
bool no_failure_since_mark() { return has(message(), "(\"sentinel\")"); }

/// Device 0's entry of swapalloc_stats_json.
nlohmann::json device_json()
{
  char const* json = nullptr;
  EXPECT_EQ(swapalloc_stats_json(&json), SWAPALLOC_SUCCESS) << message();
  return nlohmann::json::parse(json).at("devices").at(0);
}

/// The device use of pool `name` in swapalloc_stats_json, or an empty object.
nlohmann::json pool_json(std::string const& name)
{
  char const* json = nullptr;
  EXPECT_EQ(swapalloc_stats_json(&json), SWAPALLOC_SUCCESS) << message();
  return swapalloc_test::pool_entry(json, name);
}

/// The plugin initialized on top of the driver fixture; shut down (and the census checked:
/// the plugin gave back every driver object) at teardown.
class PluginTest : public DriverTest {
 protected:
  void SetUp() override
  {
    ASSERT_EQ(sim_memory_set, 0);
    DriverTest::SetUp();
    ASSERT_EQ(swapalloc_configure("workers", "1"), SWAPALLOC_SUCCESS) << message();
    ASSERT_EQ(swapalloc_init(), SWAPALLOC_SUCCESS) << message();
  }
  void TearDown() override
  {
    if (swapalloc_is_initialized() != 0) {
      EXPECT_EQ(swapalloc_shutdown(), SWAPALLOC_SUCCESS) << message();
    }
    DriverTest::TearDown();
  }

  /// `bytes` from swapalloc_malloc on device 0's default stream, filled with a pattern.
  [[nodiscard]] void* filled(std::size_t bytes, std::uint32_t seed) const
  {
    void* const ptr = swapalloc_malloc(static_cast<ssize_t>(bytes), 0, nullptr);
    EXPECT_NE(ptr, nullptr) << message();
    if (ptr != nullptr) {
      std::vector<std::uint32_t> const words = pattern(bytes / 4, seed);
      drv().memcpy_htod(reinterpret_cast<CUdeviceptr>(ptr), words.data(), bytes);
    }
    return ptr;
  }

  /// Whether `ptr` holds filled(bytes, seed)'s pattern.
  [[nodiscard]] bool holds(void* ptr, std::size_t bytes, std::uint32_t seed) const
  {
    return read_words(drv(), reinterpret_cast<CUdeviceptr>(ptr), bytes / 4) ==
           pattern(bytes / 4, seed);
  }
};

TEST(PluginAbi, VersionAndLastErrorNeedNoInit)
{
  EXPECT_EQ(swapalloc_abi_version(), SWAPALLOC_ABI_VERSION);
  EXPECT_STREQ(swapalloc_last_error(), "") << "no call has failed on this thread";
  EXPECT_EQ(swapalloc_last_status(), SWAPALLOC_SUCCESS);
  EXPECT_EQ(swapalloc_is_initialized(), 0);
  swapalloc_pool_options options;
  swapalloc_pool_options_init(&options);
  EXPECT_EQ(options.priority, SWAPALLOC_PRIORITY_NORMAL);
  EXPECT_EQ(options.evictable, 1);
  EXPECT_EQ(options.read_only, 0);
  EXPECT_EQ(options.dtype, SWAPALLOC_DTYPE_NONE);
  EXPECT_EQ(options.capacity, 0U);
  swapalloc_pool_options_init(nullptr);  // does nothing
}

TEST(PluginAbi, EveryCallBeforeInitFailsWithNotInitialized)
{
  swapalloc_pool_id pool = 99;
  char const* text       = nullptr;
  std::size_t bytes      = 0;
  auto const refused     = [](swapalloc_status status, char const* function) {
    EXPECT_EQ(status, SWAPALLOC_ERROR_NOT_INITIALIZED) << function;
    EXPECT_TRUE(has(message(), function)) << message();
    EXPECT_TRUE(has(message(), "swapalloc_init()")) << message();
  };
  refused(swapalloc_shutdown(), "swapalloc_shutdown");
  refused(swapalloc_pool_create("a", nullptr, &pool), "swapalloc_pool_create");
  refused(swapalloc_pool_find("a", &pool), "swapalloc_pool_find");
  refused(swapalloc_pool_name(0, &text), "swapalloc_pool_name");
  refused(swapalloc_pool_destroy(1), "swapalloc_pool_destroy");
  refused(swapalloc_pool_push(0), "swapalloc_pool_push");
  refused(swapalloc_pool_pop(), "swapalloc_pool_pop");
  refused(swapalloc_pool_current(&pool), "swapalloc_pool_current");
  refused(swapalloc_pool_set_read_only(1, 1), "swapalloc_pool_set_read_only");
  refused(swapalloc_activate(1, 0, nullptr), "swapalloc_activate");
  refused(swapalloc_deactivate(1, 0, nullptr), "swapalloc_deactivate");
  refused(swapalloc_evict(1, 0, &bytes), "swapalloc_evict");
  refused(swapalloc_prefetch(1, 0), "swapalloc_prefetch");
  refused(swapalloc_ensure_free(MiB, 0, &bytes), "swapalloc_ensure_free");
  refused(swapalloc_empty_cache(&bytes), "swapalloc_empty_cache");
  refused(swapalloc_stats_json(&text), "swapalloc_stats_json");
  EXPECT_EQ(pool, 99U) << "nothing was written";
  EXPECT_EQ(swapalloc_malloc(64, 0, nullptr), nullptr);
  EXPECT_TRUE(has(message(), "swapalloc_malloc")) << message();
  swapalloc_free(reinterpret_cast<void*>(std::uintptr_t{0x1000}), 64, 0, nullptr);
  EXPECT_TRUE(has(message(), "swapalloc_free")) << message();
  swapalloc_hook_memory_fraction(0.5, 0);
  EXPECT_TRUE(has(message(), "swapalloc_hook_memory_fraction")) << message();
  swapalloc_hook_record_stream(reinterpret_cast<void*>(std::uintptr_t{0x1000}), nullptr);
  EXPECT_TRUE(has(message(), "swapalloc_hook_record_stream")) << message();
  swapalloc_hook_reset();
  EXPECT_TRUE(has(message(), "swapalloc_empty_cache")) << message();
  swapalloc_hook_end_allocate_to_pool(0, {1, 2});
  EXPECT_TRUE(has(message(), "swapalloc_hook_end_allocate_to_pool")) << message();
  EXPECT_EQ(swapalloc_is_initialized(), 0) << "no call initialized it";
}

TEST(PluginAbi, ConfigureChecksKeysAndValuesAndKeepsTheLastGoodValue)
{
  EXPECT_EQ(swapalloc_configure(nullptr, "1"), SWAPALLOC_ERROR_INVALID_VALUE);
  EXPECT_TRUE(has(message(), "key is NULL")) << message();
  EXPECT_EQ(swapalloc_configure("workers", nullptr), SWAPALLOC_ERROR_INVALID_VALUE);
  EXPECT_TRUE(has(message(), "value is NULL")) << message();
  EXPECT_EQ(swapalloc_configure("colour", "blue"), SWAPALLOC_ERROR_INVALID_VALUE);
  EXPECT_TRUE(has(message(), "unknown key \"colour\"")) << message();
  EXPECT_TRUE(has(message(), "high_watermark, low_watermark, device_limit")) << message();
  struct bad_value {
    char const* key;
    char const* value;
    char const* accepted;
  };
  for (bad_value const bad :
       {bad_value{"high_watermark", "1.5", "(0, 1]"}, bad_value{"low_watermark", "x", "(0, 1]"},
        bad_value{"device_limit", "0", "byte count"}, bad_value{"host_limit", "lots", "byte count"},
        bad_value{"workers", "0", "1 to 256"}, bad_value{"log_level", "loud", "off, error, warn"},
        bad_value{"monitor_interval_ms", "0", "1 to 3600000"}}) {
    EXPECT_EQ(swapalloc_configure(bad.key, bad.value), SWAPALLOC_ERROR_INVALID_VALUE) << bad.key;
    EXPECT_TRUE(has(message(), std::string(bad.key) + "=\"" + bad.value + "\"")) << message();
    EXPECT_TRUE(has(message(), bad.accepted)) << message();
  }
  for (char const* key : {"high_watermark", "low_watermark"}) {
    EXPECT_EQ(swapalloc_configure(key, key[0] == 'h' ? "0.9" : "0.6"), SWAPALLOC_SUCCESS);
  }
  for (char const* key : {"device_limit", "host_limit", "workers", "monitor_interval_ms"}) {
    EXPECT_EQ(swapalloc_configure(key, key[0] == 'd'   ? "0.5"
                                       : key[0] == 'h' ? "1G"
                                                       : "2"),
              SWAPALLOC_SUCCESS)
      << key << ": " << message();
  }
  EXPECT_EQ(swapalloc_configure("log_level", "error"), SWAPALLOC_SUCCESS);
  for (char const* key :
       {"high_watermark", "low_watermark", "device_limit", "host_limit", "workers", "log_level",
        "monitor_interval_ms", "stats_interval_ms", "driver"}) {
    EXPECT_EQ(swapalloc_configure(key, ""), SWAPALLOC_SUCCESS) << key << ": back to the default";
  }
}

TEST(PluginAbi, TheStatsFileIsPublishedPrivateAndRemovedAtShutdown)
{
  ASSERT_EQ(sim_memory_set, 0);
  std::filesystem::path const dir =
    std::filesystem::temp_directory_path() / ("swapalloc-stats-test-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  ASSERT_EQ(::setenv("SWAPALLOC_STATS_DIR", dir.c_str(), 1), 0);
  ASSERT_EQ(swapalloc_configure("stats_interval_ms", "1000"), SWAPALLOC_SUCCESS) << message();
  ASSERT_EQ(swapalloc_init(), SWAPALLOC_SUCCESS) << message();
  std::filesystem::path const file = dir / (std::to_string(::getpid()) + ".json");
  for (int waited = 0; waited < 50 && !std::filesystem::exists(file); ++waited) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(std::filesystem::exists(file)) << "published within 5 s";
  auto const perms = std::filesystem::status(file).permissions();
  EXPECT_EQ(perms & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write)
    << "mode 0600";
  EXPECT_EQ(std::filesystem::status(dir).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_all)
    << "mode 0700";
  std::ifstream in(file);
  nlohmann::json const published = nlohmann::json::parse(in);
  EXPECT_EQ(published.at("pid"), ::getpid());
  EXPECT_TRUE(has(published.at("command").get<std::string>(), "plugin_abi_tests"));
  EXPECT_GE(published.at("interval_s").get<double>(), 1.0);
  EXPECT_EQ(published.at("stats").at("devices").size(), 1U);
  ASSERT_EQ(swapalloc_shutdown(), SWAPALLOC_SUCCESS);
  EXPECT_FALSE(std::filesystem::exists(file)) << "removed at shutdown";
  std::filesystem::remove_all(dir);
}

TEST(PluginAbi, ABadDriverFailsInitWithNoDriverAndAGoodOneThenWorks)
{
  ASSERT_EQ(sim_memory_set, 0);
  ASSERT_EQ(swapalloc_configure("driver", "/nonexistent/libcuda.so.1"), SWAPALLOC_SUCCESS);
  EXPECT_EQ(swapalloc_init(), SWAPALLOC_ERROR_NO_DRIVER);
  EXPECT_TRUE(has(message(), "/nonexistent/libcuda.so.1")) << message();
  EXPECT_EQ(swapalloc_is_initialized(), 0);
  char const* const simulator = std::getenv("SWAPALLOC_CUDA_DRIVER");
  ASSERT_EQ(swapalloc_configure("driver", simulator != nullptr ? simulator : "libcuda.so.1"),
            SWAPALLOC_SUCCESS);
  ASSERT_EQ(swapalloc_init(), SWAPALLOC_SUCCESS) << message();
  EXPECT_EQ(swapalloc_shutdown(), SWAPALLOC_SUCCESS) << message();
}

TEST_F(PluginTest, InitTwiceIsOneInitAndShutdownAllowsAnother)
{
  EXPECT_EQ(swapalloc_is_initialized(), 1);
  swapalloc_pool_id a = 0;
  ASSERT_EQ(swapalloc_pool_create("a", nullptr, &a), SWAPALLOC_SUCCESS) << message();
  EXPECT_EQ(swapalloc_init(), SWAPALLOC_SUCCESS) << "again: nothing happens";
  swapalloc_pool_id found = 0;
  EXPECT_EQ(swapalloc_pool_find("a", &found), SWAPALLOC_SUCCESS) << "the same allocator";
  EXPECT_EQ(found, a);
  EXPECT_EQ(swapalloc_configure("workers", "2"), SWAPALLOC_ERROR_MISUSE);
  EXPECT_TRUE(has(message(), "swapalloc_init, which has run")) << message();
  ASSERT_EQ(swapalloc_shutdown(), SWAPALLOC_SUCCESS) << message();
  EXPECT_EQ(swapalloc_is_initialized(), 0);
  EXPECT_EQ(swapalloc_shutdown(), SWAPALLOC_ERROR_NOT_INITIALIZED);
  ASSERT_EQ(swapalloc_init(), SWAPALLOC_SUCCESS) << message();
  EXPECT_EQ(swapalloc_pool_find("a", &found), SWAPALLOC_ERROR_UNKNOWN_POOL) << "a new allocator";
}

TEST_F(PluginTest, MallocAndFreeRoundTripBytesAndZeroBytesGiveNull)
{
  void* const ptr = filled(3 * MiB, 7);
  ASSERT_NE(ptr, nullptr);
  EXPECT_TRUE(holds(ptr, 3 * MiB, 7));
  EXPECT_EQ(pool_json("default").at("allocated_bytes"), 3 * MiB);
  swapalloc_free(ptr, static_cast<ssize_t>(3 * MiB), 0, nullptr);
  EXPECT_EQ(pool_json("default").at("allocated_bytes"), 0U);
  mark_last_error();
  EXPECT_EQ(swapalloc_malloc(0, 0, nullptr), nullptr);
  EXPECT_TRUE(no_failure_since_mark())
    << "size 0 is not an error (PyTorch asks for it): " << message();
  EXPECT_EQ(swapalloc_malloc(-4, 0, nullptr), nullptr);
  EXPECT_TRUE(has(message(), "size -4 is negative")) << message();
  swapalloc_free(nullptr, 16, 0, nullptr);  // nothing
}

TEST_F(PluginTest, ForeignDoubleAndMisSizedFreesChangeNothingAndSayWhy)
{
  void* const ptr = filled(MiB, 3);
  ASSERT_NE(ptr, nullptr);
  swapalloc_free(reinterpret_cast<void*>(std::uintptr_t{0x1000}), 64, 0, nullptr);
  EXPECT_TRUE(has(message(), "1000")) << "names the pointer: " << message();
  std::string const foreign = message();
  swapalloc_free(ptr, static_cast<ssize_t>(2 * MiB), 0, nullptr);
  EXPECT_NE(message(), foreign) << "a wrong size is reported too";
  EXPECT_TRUE(holds(ptr, MiB, 3)) << "the block is still live and intact";
  EXPECT_EQ(pool_json("default").at("allocated_bytes"), MiB);
  swapalloc_free(ptr, static_cast<ssize_t>(MiB), 0, nullptr);
  std::string const before = message();
  swapalloc_free(ptr, static_cast<ssize_t>(MiB), 0, nullptr);
  EXPECT_NE(message(), before) << "a double free is reported";
  void* const again = filled(MiB, 4);  // still usable
  EXPECT_TRUE(holds(again, MiB, 4));
  swapalloc_free(again, static_cast<ssize_t>(MiB), 0, nullptr);
}

TEST_F(PluginTest, PoolsAreCreatedFoundNamedAndDestroyedWithEveryMisuseRefused)
{
  swapalloc_pool_options options;
  swapalloc_pool_options_init(&options);
  options.priority       = SWAPALLOC_PRIORITY_HIGH;
  options.dtype          = SWAPALLOC_DTYPE_BF16;
  swapalloc_pool_id sdxl = 0;
  ASSERT_EQ(swapalloc_pool_create("sdxl", &options, &sdxl), SWAPALLOC_SUCCESS) << message();
  EXPECT_NE(sdxl, SWAPALLOC_DEFAULT_POOL);
  EXPECT_EQ(swapalloc_pool_create("sdxl", nullptr, &sdxl), SWAPALLOC_ERROR_MISUSE);
  EXPECT_TRUE(has(message(), "a pool of that name exists")) << message();
  EXPECT_EQ(swapalloc_pool_create("", nullptr, &sdxl), SWAPALLOC_ERROR_MISUSE);
  EXPECT_EQ(swapalloc_pool_create(nullptr, nullptr, &sdxl), SWAPALLOC_ERROR_INVALID_VALUE);
  EXPECT_TRUE(has(message(), "name is NULL")) << message();
  EXPECT_EQ(swapalloc_pool_create("x", nullptr, nullptr), SWAPALLOC_ERROR_INVALID_VALUE);
  EXPECT_TRUE(has(message(), "pool is NULL")) << message();
  options.priority = 9;
  EXPECT_EQ(swapalloc_pool_create("x", &options, &sdxl), SWAPALLOC_ERROR_INVALID_VALUE);
  EXPECT_TRUE(has(message(), "options->priority = 9")) << message();
  options.priority = SWAPALLOC_PRIORITY_LOW;
  options.dtype    = -1;
  EXPECT_EQ(swapalloc_pool_create("x", &options, &sdxl), SWAPALLOC_ERROR_INVALID_VALUE);
  EXPECT_TRUE(has(message(), "options->dtype = -1")) << message();
  swapalloc_pool_id found = 0;
  EXPECT_EQ(swapalloc_pool_find("x", &found), SWAPALLOC_ERROR_UNKNOWN_POOL) << "none was made";
  EXPECT_EQ(swapalloc_pool_find("sdxl", &found), SWAPALLOC_SUCCESS);
  EXPECT_EQ(found, sdxl);
  EXPECT_EQ(swapalloc_pool_find(nullptr, &found), SWAPALLOC_ERROR_INVALID_VALUE);
  EXPECT_EQ(swapalloc_pool_find("sdxl", nullptr), SWAPALLOC_ERROR_INVALID_VALUE);
  char const* name = nullptr;
  ASSERT_EQ(swapalloc_pool_name(sdxl, &name), SWAPALLOC_SUCCESS);
  EXPECT_STREQ(name, "sdxl");
  EXPECT_EQ(swapalloc_pool_name(sdxl, nullptr), SWAPALLOC_ERROR_INVALID_VALUE);
  EXPECT_EQ(swapalloc_pool_name(4242, &name), SWAPALLOC_ERROR_UNKNOWN_POOL);
  EXPECT_TRUE(has(message(), "pool=4242")) << message();

  ASSERT_EQ(swapalloc_pool_push(sdxl), SWAPALLOC_SUCCESS);
  void* const ptr = filled(MiB, 5);
  ASSERT_EQ(swapalloc_pool_pop(), SWAPALLOC_SUCCESS);
  EXPECT_EQ(swapalloc_pool_destroy(sdxl), SWAPALLOC_ERROR_MISUSE) << "a block is live in it";
  EXPECT_TRUE(holds(ptr, MiB, 5)) << "the refused destroy changed nothing";
  swapalloc_free(ptr, static_cast<ssize_t>(MiB), 0, nullptr);
  EXPECT_EQ(swapalloc_pool_destroy(SWAPALLOC_DEFAULT_POOL), SWAPALLOC_ERROR_MISUSE);
  EXPECT_EQ(swapalloc_pool_destroy(sdxl), SWAPALLOC_SUCCESS) << message();
  EXPECT_EQ(swapalloc_pool_destroy(sdxl), SWAPALLOC_ERROR_UNKNOWN_POOL);
  EXPECT_EQ(swapalloc_pool_find("sdxl", &found), SWAPALLOC_ERROR_UNKNOWN_POOL);
  EXPECT_EQ(swapalloc_pool_create("sdxl", nullptr, &found), SWAPALLOC_SUCCESS) << "name is free";
}

TEST_F(PluginTest, PushAndPopScopeTheThreadsAllocationsAndAnUnbalancedPopIsRefused)
{
  swapalloc_pool_id a = 0;
  ASSERT_EQ(swapalloc_pool_create("a", nullptr, &a), SWAPALLOC_SUCCESS);
  swapalloc_pool_id current = 77;
  ASSERT_EQ(swapalloc_pool_current(&current), SWAPALLOC_SUCCESS);
  EXPECT_EQ(current, SWAPALLOC_DEFAULT_POOL);
  EXPECT_EQ(swapalloc_pool_current(nullptr), SWAPALLOC_ERROR_INVALID_VALUE);
  ASSERT_EQ(swapalloc_pool_push(a), SWAPALLOC_SUCCESS);
  ASSERT_EQ(swapalloc_pool_current(&current), SWAPALLOC_SUCCESS);
  EXPECT_EQ(current, a);
  void* const in_a = filled(2 * MiB, 1);
  std::thread other([&] {  // another thread's scope is its own
    swapalloc_pool_id there = 77;
    EXPECT_EQ(swapalloc_pool_current(&there), SWAPALLOC_SUCCESS);
    EXPECT_EQ(there, SWAPALLOC_DEFAULT_POOL);
  });
  other.join();
  ASSERT_EQ(swapalloc_pool_pop(), SWAPALLOC_SUCCESS);
  void* const in_default = filled(MiB, 2);
  EXPECT_EQ(pool_json("a").at("allocated_bytes"), 2 * MiB);
  EXPECT_EQ(pool_json("default").at("allocated_bytes"), MiB);
  EXPECT_EQ(swapalloc_pool_pop(), SWAPALLOC_ERROR_MISUSE) << "nothing pushed";
  EXPECT_FALSE(message().empty());
  EXPECT_EQ(swapalloc_pool_push(999), SWAPALLOC_ERROR_UNKNOWN_POOL);
  ASSERT_EQ(swapalloc_pool_current(&current), SWAPALLOC_SUCCESS);
  EXPECT_EQ(current, SWAPALLOC_DEFAULT_POOL) << "the refused push pushed nothing";
  swapalloc_free(in_a, static_cast<ssize_t>(2 * MiB), 0, nullptr);
  swapalloc_free(in_default, static_cast<ssize_t>(MiB), 0, nullptr);
}

TEST_F(PluginTest, EvictActivatePrefetchAndEnsureFreeMoveThePoolAndKeepItsBytes)
{
  swapalloc_pool_id a = 0;
  ASSERT_EQ(swapalloc_pool_create("a", nullptr, &a), SWAPALLOC_SUCCESS);
  ASSERT_EQ(swapalloc_pool_push(a), SWAPALLOC_SUCCESS);
  void* const ptr = filled(8 * MiB, 11);
  ASSERT_EQ(swapalloc_pool_pop(), SWAPALLOC_SUCCESS);
  std::size_t evicted = 0;
  ASSERT_EQ(swapalloc_evict(a, 0, &evicted), SWAPALLOC_SUCCESS) << message();
  EXPECT_EQ(evicted, 8 * MiB);
  EXPECT_EQ(pool_json("a").at("evicted_bytes"), 8 * MiB);
  ASSERT_EQ(swapalloc_activate(a, 0, nullptr), SWAPALLOC_SUCCESS) << message();
  EXPECT_EQ(pool_json("a").at("evicted_bytes"), 0U);
  EXPECT_TRUE(holds(ptr, 8 * MiB, 11));
  EXPECT_EQ(swapalloc_evict(a, 0, nullptr), SWAPALLOC_ERROR_MISUSE) << "active";
  ASSERT_EQ(swapalloc_deactivate(a, 0, nullptr), SWAPALLOC_SUCCESS) << message();
  EXPECT_EQ(swapalloc_deactivate(a, 0, nullptr), SWAPALLOC_ERROR_MISUSE);
  EXPECT_TRUE(has(message(), "not active")) << message();
  ASSERT_EQ(swapalloc_evict(a, 0, nullptr), SWAPALLOC_SUCCESS) << message();
  ASSERT_EQ(swapalloc_prefetch(a, 0), SWAPALLOC_SUCCESS) << message();
  ASSERT_EQ(swapalloc_activate(a, 0, nullptr), SWAPALLOC_SUCCESS) << "waits for the prefetch";
  EXPECT_TRUE(holds(ptr, 8 * MiB, 11));
  ASSERT_EQ(swapalloc_deactivate(a, 0, nullptr), SWAPALLOC_SUCCESS);
  std::size_t freed = 0;
  // 8 + 212 MiB would pass 0.85 × 256 = 217.6 MiB: a is evicted to make the room.
  EXPECT_EQ(swapalloc_ensure_free(212 * MiB, 0, &freed), SWAPALLOC_SUCCESS) << message();
  EXPECT_GE(freed, 8 * MiB) << "made room by evicting a";
  EXPECT_EQ(swapalloc_ensure_free(300 * MiB, 0, &freed), SWAPALLOC_ERROR_OUT_OF_MEMORY);
  EXPECT_FALSE(message().empty());
  EXPECT_EQ(swapalloc_evict(SWAPALLOC_DEFAULT_POOL, 0, nullptr), SWAPALLOC_ERROR_MISUSE);
  EXPECT_EQ(swapalloc_evict(a, 5, nullptr), SWAPALLOC_ERROR_MISUSE) << "no device 5";
  EXPECT_EQ(swapalloc_activate(99, 0, nullptr), SWAPALLOC_ERROR_UNKNOWN_POOL);
  EXPECT_EQ(swapalloc_prefetch(99, 0), SWAPALLOC_ERROR_UNKNOWN_POOL);
  ASSERT_EQ(swapalloc_activate(a, 0, nullptr), SWAPALLOC_SUCCESS);
  EXPECT_TRUE(holds(ptr, 8 * MiB, 11)) << "after every refusal";
  ASSERT_EQ(swapalloc_deactivate(a, 0, nullptr), SWAPALLOC_SUCCESS);
  swapalloc_free(ptr, static_cast<ssize_t>(8 * MiB), 0, nullptr);
}

TEST_F(PluginTest, MemoryFractionHookLimitsTheProcessAndResetReleasesTheCache)
{
  swapalloc_hook_memory_fraction(0.25, 0);  // 64 of 256 MiB
  EXPECT_EQ(swapalloc_malloc(static_cast<ssize_t>(80 * MiB), 0, nullptr), nullptr);
  EXPECT_TRUE(has(message(), "set_device_limit")) << message();
  EXPECT_EQ(swapalloc_last_status(), SWAPALLOC_ERROR_OUT_OF_MEMORY) << "malloc's NULL, told apart";
  EXPECT_EQ(device_json().at("counters").at("ooms"), 1U);
  EXPECT_GE(device_json().at("counters").at("alloc_retries").get<std::size_t>(), 1U)
    << "the cache is released and the request retried before out of memory";
  void* const ptr = filled(40 * MiB, 9);
  ASSERT_NE(ptr, nullptr);
  swapalloc_free(ptr, static_cast<ssize_t>(40 * MiB), 0, nullptr);
  EXPECT_GT(pool_json("default").at("reserved_bytes").get<std::size_t>(), 0U) << "cached";
  swapalloc_hook_reset();
  EXPECT_EQ(pool_json("default").at("reserved_bytes"), 0U) << "empty_cache through the hook";
  swapalloc_hook_memory_fraction(0.0, 0);
  EXPECT_TRUE(has(message(), "outside (0, 1]")) << message();
  EXPECT_EQ(swapalloc_last_status(), SWAPALLOC_ERROR_INVALID_VALUE);
  swapalloc_hook_memory_fraction(0.5, 3);
  EXPECT_TRUE(has(message(), "device")) << message();
  swapalloc_hook_memory_fraction(1.0, 0);
  void* const big = filled(80 * MiB, 10);
  EXPECT_NE(big, nullptr) << "the whole device again";
  swapalloc_free(big, static_cast<ssize_t>(80 * MiB), 0, nullptr);
}

TEST_F(PluginTest, RecordStreamHookDelaysReuseAndRefusesAForeignPointer)
{
  scoped_stream const side(drv());
  void* const ptr = filled(MiB, 1);
  mark_last_error();
  swapalloc_hook_record_stream(ptr, side.get());
  EXPECT_TRUE(no_failure_since_mark()) << message();
  swapalloc_free(ptr, static_cast<ssize_t>(MiB), 0, nullptr);
  swapalloc_hook_record_stream(reinterpret_cast<void*>(std::uintptr_t{0x2000}), side.get());
  EXPECT_TRUE(has(message(), "record_stream")) << message();
  drv().stream_synchronize(side.get());
  void* const again = filled(MiB, 2);
  EXPECT_TRUE(holds(again, MiB, 2));
  swapalloc_free(again, static_cast<ssize_t>(MiB), 0, nullptr);
}

TEST_F(PluginTest, InitHookInitializesAndChecksTheDeviceCount)
{
  ASSERT_EQ(swapalloc_shutdown(), SWAPALLOC_SUCCESS);
  swapalloc_hook_init(0);  // torch's call at createCustomAllocator: no count known yet
  EXPECT_EQ(swapalloc_is_initialized(), 1) << message();
  mark_last_error();
  swapalloc_hook_init(1);
  EXPECT_TRUE(no_failure_since_mark()) << message();
  swapalloc_hook_init(3);
  EXPECT_TRUE(has(message(), "device_count=3")) << message();
}

TEST_F(PluginTest, AThreadWithoutAContextAllocatesAndFrees)
{
  void* ptr = nullptr;
  std::thread worker([&] {  // a new thread has no current context
    ptr = swapalloc_malloc(static_cast<ssize_t>(MiB), 0, nullptr);
    EXPECT_NE(ptr, nullptr) << message();
  });
  worker.join();
  ASSERT_NE(ptr, nullptr);
  std::vector<std::uint32_t> const words = pattern(MiB / 4, 6);
  drv().memcpy_htod(reinterpret_cast<CUdeviceptr>(ptr), words.data(), MiB);
  EXPECT_TRUE(holds(ptr, MiB, 6));
  std::thread freer([&] { swapalloc_free(ptr, static_cast<ssize_t>(MiB), 0, nullptr); });
  freer.join();
  EXPECT_EQ(pool_json("default").at("allocated_bytes"), 0U);
}

TEST_F(PluginTest, StatsJsonHasEveryPoolAndReadOnlyIsSet)
{
  swapalloc_pool_id a = 0;
  ASSERT_EQ(swapalloc_pool_create("weights", nullptr, &a), SWAPALLOC_SUCCESS);
  ASSERT_EQ(swapalloc_pool_set_read_only(a, 1), SWAPALLOC_SUCCESS) << message();
  EXPECT_EQ(swapalloc_pool_set_read_only(1234, 1), SWAPALLOC_ERROR_UNKNOWN_POOL);
  ASSERT_EQ(swapalloc_pool_push(a), SWAPALLOC_SUCCESS);
  void* const ptr = filled(2 * MiB, 3);
  ASSERT_EQ(swapalloc_pool_pop(), SWAPALLOC_SUCCESS);
  EXPECT_EQ(pool_json("weights").at("allocated_bytes"), 2 * MiB);
  EXPECT_EQ(swapalloc_stats_json(nullptr), SWAPALLOC_ERROR_INVALID_VALUE);
  ASSERT_EQ(swapalloc_evict(a, 0, nullptr), SWAPALLOC_SUCCESS);
  ASSERT_EQ(swapalloc_activate(a, 0, nullptr), SWAPALLOC_SUCCESS);
  EXPECT_TRUE(holds(ptr, 2 * MiB, 3));
  ASSERT_EQ(swapalloc_deactivate(a, 0, nullptr), SWAPALLOC_SUCCESS);
  EXPECT_GT(pool_json("weights").at("host_bytes").get<std::size_t>(), 0U)
    << "read-only: its host copy is kept while resident";
  ASSERT_EQ(swapalloc_pool_set_read_only(a, 0), SWAPALLOC_SUCCESS) << message();
  EXPECT_EQ(pool_json("weights").at("host_bytes"), 0U) << "writable: the copy is dropped";
  swapalloc_free(ptr, static_cast<ssize_t>(2 * MiB), 0, nullptr);
}

TEST_F(PluginTest, PrivatePoolHooksRouteTheirStreamsAndReleaseOnceEmpty)
{
  scoped_stream const captured(drv());
  CUstream const capture = captured.get();
  mark_last_error();
  swapalloc_hook_begin_allocate_to_pool(0, {1, 2}, [capture](CUstream s) { return s == capture; });
  EXPECT_TRUE(no_failure_since_mark()) << message();
  void* const routed = swapalloc_malloc(static_cast<ssize_t>(MiB), 0, capture);
  void* const plain  = swapalloc_malloc(static_cast<ssize_t>(MiB), 0, nullptr);
  ASSERT_NE(routed, nullptr);
  ASSERT_NE(plain, nullptr);
  EXPECT_EQ(pool_json("torch_pool_1_2").at("allocated_bytes"), MiB);
  EXPECT_EQ(pool_json("default").at("allocated_bytes"), MiB);
  swapalloc_pool_id graph = 0;
  ASSERT_EQ(swapalloc_pool_find("torch_pool_1_2", &graph), SWAPALLOC_SUCCESS);
  EXPECT_EQ(swapalloc_evict(graph, 0, nullptr), SWAPALLOC_ERROR_MISUSE) << "never evicted";
  swapalloc_hook_end_allocate_to_pool(0, {1, 2});
  void* const after = swapalloc_malloc(static_cast<ssize_t>(MiB), 0, capture);
  EXPECT_EQ(pool_json("default").at("allocated_bytes"), 2 * MiB) << "the route is closed";
  swapalloc_hook_end_allocate_to_pool(0, {1, 2});
  EXPECT_TRUE(has(message(), "no allocation to that pool was begun")) << message();
  swapalloc_hook_release_pool(0, {1, 2});
  EXPECT_EQ(swapalloc_pool_find("torch_pool_1_2", &graph), SWAPALLOC_SUCCESS) << "a block lives";
  swapalloc_free(routed, static_cast<ssize_t>(MiB), 0, capture);
  ASSERT_EQ(swapalloc_empty_cache(nullptr), SWAPALLOC_SUCCESS);
  EXPECT_EQ(swapalloc_pool_find("torch_pool_1_2", &graph), SWAPALLOC_ERROR_UNKNOWN_POOL)
    << "destroyed once empty";
  swapalloc_hook_release_pool(0, {3, 4});
  EXPECT_TRUE(has(message(), "no such pool")) << message();
  swapalloc_hook_begin_allocate_to_pool(0, {5, 6}, {});
  EXPECT_TRUE(has(message(), "the stream filter is empty")) << message();
  swapalloc_free(plain, static_cast<ssize_t>(MiB), 0, nullptr);
  swapalloc_free(after, static_cast<ssize_t>(MiB), 0, capture);
}

}  // namespace
}  // namespace swapalloc::testing
