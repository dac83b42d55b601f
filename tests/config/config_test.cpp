// Tests of include/swapalloc/config.hpp: each variable's parser accepts the documented
// forms and rejects the rest with a message that names the variable, the value and what
// is accepted; read_environment reads them all and checks the pair of watermarks.
#include <swapalloc/config.hpp>

#include "scoped_env.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>

namespace swapalloc::testing {
namespace {

constexpr std::size_t KiB = std::size_t{1} << 10;
constexpr std::size_t MiB = std::size_t{1} << 20;
constexpr std::size_t GiB = std::size_t{1} << 30;

/// The message of the config_error `parse` throws, or a failure.
template <typename Parse>
std::string rejection(Parse&& parse, std::string const& setting)
{
  try {
    parse();
  } catch (config_error const& error) {
    EXPECT_EQ(error.setting(), setting);
    return error.what();
  }
  ADD_FAILURE() << "accepted a bad " << setting;
  return {};
}

// ---- parse_host_limit ----------------------------------------------------------------

TEST(HostLimitParse, AcceptsBytesSuffixesFractionsAndPercentages)
{
  constexpr std::size_t ram = 64 * GiB;
  EXPECT_EQ(parse_host_limit("", ram), 0U);
  EXPECT_EQ(parse_host_limit("0", ram), 0U);
  EXPECT_EQ(parse_host_limit("1073741824", ram), GiB);
  EXPECT_EQ(parse_host_limit("512M", ram), 512 * MiB);
  EXPECT_EQ(parse_host_limit("8G", ram), 8 * GiB);
  EXPECT_EQ(parse_host_limit("8g", ram), 8 * GiB);
  EXPECT_EQ(parse_host_limit("4K", ram), 4 * KiB);
  EXPECT_EQ(parse_host_limit("2T", ram), 2048 * GiB);
  EXPECT_EQ(parse_host_limit("0.5", ram), 32 * GiB);
  EXPECT_EQ(parse_host_limit("1.0", ram), ram);
  EXPECT_EQ(parse_host_limit("0.25", ram), 16 * GiB);
  EXPECT_EQ(parse_host_limit("50%", ram), 32 * GiB);
  EXPECT_EQ(parse_host_limit("100%", ram), ram);
  EXPECT_EQ(parse_host_limit("12.5%", ram), 8 * GiB);
  EXPECT_GT(physical_memory_bytes(), 0U);
}

TEST(HostLimitParse, RejectsWithAMessageNamingTheVariable)
{
  for (char const* bad :
       {"abc", "8X", "-1", "G", "1.5", "0.0", "150%", "0%", "%", " 8G", "8G ", "8GB", "1e9", "inf",
        "nan%", "99999999999999999999", "20000000T", ".5", "-0.5"}) {
    try {
      (void)parse_host_limit(bad, 64 * GiB, "MY_LIMIT");
      ADD_FAILURE() << "accepted \"" << bad << "\"";
    } catch (std::invalid_argument const& error) {
      std::string const message = error.what();
      EXPECT_NE(message.find("MY_LIMIT=\"" + std::string(bad) + "\""), std::string::npos)
        << message;
      EXPECT_NE(message.find("K, M, G or T"), std::string::npos) << "says what is accepted";
    }
  }
  try {
    (void)parse_host_limit("x", 1);
    ADD_FAILURE() << "accepted \"x\"";
  } catch (std::invalid_argument const& error) {
    EXPECT_NE(std::string(error.what()).find("SWAPALLOC_HOST_LIMIT"), std::string::npos);
  }
}

// ---- SWAPALLOC_WORKERS ---------------------------------------------------------------

TEST(ConfigWorkers, AcceptsOneTo256)
{
  EXPECT_EQ(parse_worker_count("1"), 1U);
  EXPECT_EQ(parse_worker_count("3"), 3U);
  EXPECT_EQ(parse_worker_count("256"), 256U);
  for (char const* bad :
       {"0", "257", "-1", "x", "4x", " 4", "1.5", "", "99999999999999999999999"}) {
    std::string const message = rejection([&] { (void)parse_worker_count(bad); }, workers_variable);
    EXPECT_NE(message.find("SWAPALLOC_WORKERS=\"" + std::string(bad) + "\""), std::string::npos)
      << message;
    EXPECT_NE(message.find("1 to 256"), std::string::npos) << message;
  }
}

TEST(ConfigInterval, AcceptsOneMillisecondToOneHour)
{
  EXPECT_EQ(parse_interval_ms("1", "interval"), std::chrono::milliseconds(1));
  EXPECT_EQ(parse_interval_ms("100", "interval"), std::chrono::milliseconds(100));
  EXPECT_EQ(parse_interval_ms("3600000", "interval"), std::chrono::hours(1));
  for (char const* bad : {"0", "3600001", "-5", "1.5", "10ms", "", " 7"}) {
    std::string const message = rejection(
      [&] { (void)parse_interval_ms(bad, "monitor_interval_ms"); }, "monitor_interval_ms");
    EXPECT_NE(message.find("monitor_interval_ms=\"" + std::string(bad) + "\""), std::string::npos)
      << message;
    EXPECT_NE(message.find("1 to 3600000"), std::string::npos) << message;
  }
}

// ---- SWAPALLOC_HIGH / SWAPALLOC_LOW ---------------------------------------------------

TEST(ConfigWatermark, AcceptsFractionsInZeroToOne)
{
  EXPECT_EQ(parse_watermark("0.85", high_variable), 0.85);
  EXPECT_EQ(parse_watermark("1.0", high_variable), 1.0);
  EXPECT_EQ(parse_watermark("0.01", low_variable), 0.01);
  for (char const* bad : {"0.0", "1.01", "85", "85%", ".85", "-0.5", "nan", "inf", "0.8x", ""}) {
    std::string const message =
      rejection([&] { (void)parse_watermark(bad, low_variable); }, low_variable);
    EXPECT_NE(message.find("SWAPALLOC_LOW=\"" + std::string(bad) + "\""), std::string::npos)
      << message;
    EXPECT_NE(message.find("(0, 1]"), std::string::npos) << message;
  }
}

// ---- SWAPALLOC_DEVICE_LIMIT -----------------------------------------------------------

TEST(ConfigDeviceLimit, AcceptsBytesWithUnitsAndFractions)
{
  EXPECT_EQ(parse_device_limit("6GiB").bytes, 6 * GiB);
  EXPECT_EQ(parse_device_limit("6G").bytes, 6 * GiB);
  EXPECT_EQ(parse_device_limit("512MiB").bytes, 512 * MiB);
  EXPECT_EQ(parse_device_limit("512m").bytes, 512 * MiB);
  EXPECT_EQ(parse_device_limit("64KiB").bytes, 64 * KiB);
  EXPECT_EQ(parse_device_limit("1073741824").bytes, GiB);
  device_limit const half = parse_device_limit("0.5");
  EXPECT_EQ(half.bytes, 0U);
  EXPECT_EQ(half.fraction, 0.5);
  EXPECT_EQ(half.resolve(8 * GiB), 4 * GiB);
  EXPECT_EQ(parse_device_limit("6GiB").resolve(4 * GiB), 4 * GiB) << "never above the total";
  EXPECT_EQ(parse_device_limit("1GiB").resolve(4 * GiB), GiB);
  for (char const* bad : {"0", "0.0", "1.5", "6GB", "6 GiB", "GiB", "-1", "x", "1e9", ".5",
                          "99999999999999999999", "20000000T"}) {
    std::string const message =
      rejection([&] { (void)parse_device_limit(bad); }, device_limit_variable);
    EXPECT_NE(message.find("SWAPALLOC_DEVICE_LIMIT=\"" + std::string(bad) + "\""),
              std::string::npos)
      << message;
    EXPECT_NE(message.find("6GiB"), std::string::npos) << "says what is accepted: " << message;
  }
}

// ---- SWAPALLOC_LOG --------------------------------------------------------------------

TEST(ConfigLog, AcceptsTheFiveLevels)
{
  for (auto level :
       {log_level::off, log_level::error, log_level::warn, log_level::info, log_level::debug}) {
    EXPECT_EQ(parse_log_level(to_string(level)), level);
  }
  for (char const* bad : {"", "WARN", "verbose", "2", "warn "}) {
    std::string const message = rejection([&] { (void)parse_log_level(bad); }, log_variable);
    EXPECT_NE(message.find("off, error, warn, info and debug"), std::string::npos) << message;
  }
}

// ---- SWAPALLOC_COMPRESS_AFTER ---------------------------------------------------------

TEST(ConfigCompressAfter, AcceptsSecondsFromZeroToOneDay)
{
  using std::chrono::milliseconds;
  EXPECT_EQ(parse_compress_after("0"), milliseconds(0));
  EXPECT_EQ(parse_compress_after("30"), milliseconds(30000));
  EXPECT_EQ(parse_compress_after("2.5"), milliseconds(2500));
  EXPECT_EQ(parse_compress_after("0.0004"), milliseconds(0)) << "rounded to milliseconds";
  EXPECT_EQ(parse_compress_after("0.0005"), milliseconds(1));
  EXPECT_EQ(parse_compress_after("86400"), milliseconds(86'400'000));
  for (char const* bad : {"", "-1", "86400.5", "30s", " 30", ".5", "nan", "inf", "1e3"}) {
    std::string const message =
      rejection([&] { (void)parse_compress_after(bad); }, compress_after_variable);
    EXPECT_NE(message.find("SWAPALLOC_COMPRESS_AFTER=\"" + std::string(bad) + "\""),
              std::string::npos)
      << message;
    EXPECT_NE(message.find("0 to 86400"), std::string::npos) << message;
  }
}

// ---- SWAPALLOC_HOST_PIN ---------------------------------------------------------------

TEST(ConfigHostPin, AcceptsRegisterAndAlloc)
{
  EXPECT_EQ(parse_pin_method("register"), pin_method::host_register);
  EXPECT_EQ(parse_pin_method("alloc"), pin_method::host_alloc);
  for (char const* bad : {"", "automatic", "Register", "cuMemHostAlloc", " alloc"}) {
    std::string const message = rejection([&] { (void)parse_pin_method(bad); }, host_pin_variable);
    EXPECT_NE(message.find("SWAPALLOC_HOST_PIN=\"" + std::string(bad) + "\""), std::string::npos)
      << message;
    EXPECT_NE(message.find("register"), std::string::npos) << message;
    EXPECT_NE(message.find("alloc"), std::string::npos) << message;
  }
}

// ---- read_environment -----------------------------------------------------------------

TEST(ConfigEnvironment, ReadsEveryVariableAndLeavesUnsetOnesEmpty)
{
  scoped_env const high(high_variable, "0.9");
  scoped_env const low(low_variable, "0.6");
  scoped_env const device(device_limit_variable, "6GiB");
  scoped_env const host(host_limit_variable, "3G");
  scoped_env const workers(workers_variable, "5");
  scoped_env const log(log_variable, "debug");
  scoped_env const compress(compress_after_variable, "12.5");
  scoped_env const pin(host_pin_variable, "alloc");
  environment_settings const set = read_environment();
  EXPECT_EQ(set.high, 0.9);
  EXPECT_EQ(set.low, 0.6);
  ASSERT_TRUE(set.device.has_value());
  EXPECT_EQ(set.device->bytes, 6 * GiB);
  EXPECT_EQ(set.host_limit_bytes, 3 * GiB);
  EXPECT_EQ(set.workers, 5U);
  EXPECT_EQ(set.log, log_level::debug);
  EXPECT_EQ(set.compress_after, std::chrono::milliseconds(12500));
  EXPECT_EQ(set.host_pin, pin_method::host_alloc);
  {
    scoped_env const unset_high(high_variable, nullptr);
    scoped_env const empty_low(low_variable, "");
    scoped_env const no_host(host_limit_variable, "0");
    scoped_env const no_compress(compress_after_variable, nullptr);
    scoped_env const no_pin(host_pin_variable, "");
    environment_settings const fewer = read_environment();
    EXPECT_FALSE(fewer.high.has_value());
    EXPECT_FALSE(fewer.low.has_value()) << "empty is unset";
    EXPECT_FALSE(fewer.host_limit_bytes.has_value()) << "0 is the default";
    EXPECT_FALSE(fewer.compress_after.has_value());
    EXPECT_FALSE(fewer.host_pin.has_value()) << "empty is unset";
  }
  {
    scoped_env const quarter(host_limit_variable, "25%");
    EXPECT_EQ(read_environment().host_limit_bytes, physical_memory_bytes() / 4);
  }
}

TEST(ConfigEnvironment, RejectsALowWatermarkNotBelowTheHighOne)
{
  scoped_env const high(high_variable, "0.8");
  for (char const* low : {"0.8", "0.9"}) {
    scoped_env const bad(low_variable, low);
    std::string const message = rejection([] { (void)read_environment(); }, low_variable);
    EXPECT_NE(message.find("is not below SWAPALLOC_HIGH"), std::string::npos) << message;
  }
}

TEST(ConfigEnvironment, NamesTheFirstBadVariable)
{
  scoped_env const host(host_limit_variable, "lots");
  std::string const message = rejection([] { (void)read_environment(); }, host_limit_variable);
  EXPECT_NE(message.find("SWAPALLOC_HOST_LIMIT=\"lots\""), std::string::npos) << message;
}

TEST(ConfigDriver, TheLibraryComesFromTheVariableOrIsLibcuda)
{
  {
    scoped_env const path(driver_variable, "/opt/x/libcuda.so");
    EXPECT_EQ(driver_library_from_environment(), "/opt/x/libcuda.so");
  }
  {
    scoped_env const empty(driver_variable, "");
    EXPECT_EQ(driver_library_from_environment(), "libcuda.so.1");
  }
}

}  // namespace
}  // namespace swapalloc::testing
