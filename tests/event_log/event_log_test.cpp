// Tests of include/swapalloc/event_log.hpp (the bounded event ring, its levels and its
// sink) and of report.hpp's event and leak formatting (lines, JSON, stderr). No driver:
// events are built by hand. Every expected figure and line is written out by hand.
#include <swapalloc/event_log.hpp>
#include <swapalloc/report.hpp>

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace swapalloc::testing {
namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;
constexpr std::size_t GiB = std::size_t{1} << 30;

constexpr std::array<log_level, 5> all_levels{log_level::off, log_level::error, log_level::warn,
                                              log_level::info, log_level::debug};

/// Options keeping `capacity` events (GCC's -Wextra wants every field of a designated
/// initializer, so the tests build options here).
event_log_options with(std::size_t capacity, log_level level = log_level::warn,
                       event_sink sink = {})
{
  event_log_options options;
  options.capacity = capacity;
  options.level    = level;
  options.sink     = std::move(sink);
  return options;
}

swap_event sized(event_kind kind, std::size_t bytes, log_level level = log_level::info)
{
  swap_event event;
  event.kind  = kind;
  event.level = level;
  event.bytes = bytes;
  return event;
}

// ---- names, levels -------------------------------------------------------------------

TEST(EventLogNames, EachKindHasItsName)
{
  EXPECT_STREQ(to_string(event_kind::evict), "evict");
  EXPECT_STREQ(to_string(event_kind::restore), "restore");
  EXPECT_STREQ(to_string(event_kind::prefetch), "prefetch");
  EXPECT_STREQ(to_string(event_kind::release_cached), "release_cached");
  EXPECT_STREQ(to_string(event_kind::out_of_memory), "out_of_memory");
  EXPECT_STREQ(to_string(event_kind::level_change), "level_change");
  EXPECT_STREQ(to_string(event_kind::refusal), "refusal");
  EXPECT_STREQ(to_string(event_kind::leak), "leak");
  EXPECT_STREQ(to_string(event_kind::compress), "compress");
}

TEST(EventLogLevels, EachKindHasItsDefaultLevel)
{
  static_assert(default_level(event_kind::out_of_memory) == log_level::error);
  EXPECT_EQ(default_level(event_kind::evict), log_level::info);
  EXPECT_EQ(default_level(event_kind::restore), log_level::info);
  EXPECT_EQ(default_level(event_kind::prefetch), log_level::info);
  EXPECT_EQ(default_level(event_kind::release_cached), log_level::info);
  EXPECT_EQ(default_level(event_kind::compress), log_level::info);
  EXPECT_EQ(default_level(event_kind::refusal), log_level::warn);
  EXPECT_EQ(default_level(event_kind::leak), log_level::warn);
  EXPECT_EQ(default_level(event_kind::out_of_memory), log_level::error);
  // The pressure level only matters to level_change: the level it moves to.
  EXPECT_EQ(default_level(event_kind::evict, pressure_level::emergency), log_level::info);
  EXPECT_EQ(default_level(event_kind::level_change, pressure_level::safe), log_level::info);
  EXPECT_EQ(default_level(event_kind::level_change, pressure_level::warning), log_level::info);
  EXPECT_EQ(default_level(event_kind::level_change, pressure_level::critical), log_level::warn);
  EXPECT_EQ(default_level(event_kind::level_change, pressure_level::emergency), log_level::warn);
}

// What each configured verbosity passes, by event level (off, error, warn, info, debug).
struct passes_row {
  log_level verbosity;
  std::array<bool, 5> passed;
};

constexpr std::array<passes_row, 5> passes_table{{
  {log_level::off, {false, false, false, false, false}},
  {log_level::error, {false, true, false, false, false}},
  {log_level::warn, {false, true, true, false, false}},
  {log_level::info, {false, true, true, true, false}},
  {log_level::debug, {false, true, true, true, true}},
}};

TEST(EventLogLevels, VerbosityPassesItsLevelAndTheMoreSevereOnes)
{
  for (passes_row const& row : passes_table) {
    for (std::size_t i = 0; i < all_levels.size(); ++i) {
      EXPECT_EQ(passes(all_levels[i], row.verbosity), row.passed[i])
        << "event " << to_string(all_levels[i]) << " at verbosity " << to_string(row.verbosity);
    }
  }
}

// ---- options -------------------------------------------------------------------------

TEST(EventLogOptions, DefaultsKeep1024EventsAndPassWarnings)
{
  event_log_options const options;
  EXPECT_EQ(options.capacity, 1024U);
  EXPECT_EQ(options.level, log_level::warn);
  EXPECT_FALSE(options.sink);
  event_log const log;
  EXPECT_EQ(log.capacity(), 1024U);
  EXPECT_EQ(log.level(), log_level::warn);
  EXPECT_EQ(log.recorded(), 0U);
  EXPECT_TRUE(log.events().empty());
}

TEST(EventLogOptions, ZeroCapacityIsRejectedNamingTheOptionAndValue)
{
  event_log_options options;
  options.capacity = 0;
  try {
    event_log const log(options);
    ADD_FAILURE() << "accepted capacity 0";
  } catch (std::invalid_argument const& error) {
    std::string const message = error.what();
    EXPECT_NE(message.find("event_log_options::capacity=0"), std::string::npos) << message;
    EXPECT_NE(message.find(">= 1"), std::string::npos) << message;
  }
  options.capacity = 1;
  event_log log(options);
  log.record(sized(event_kind::evict, 1));
  log.record(sized(event_kind::evict, 2));
  ASSERT_EQ(log.events().size(), 1U);
  EXPECT_EQ(log.events()[0].bytes, 2U);
}

// ---- the ring ------------------------------------------------------------------------

TEST(EventLogRing, KeepsTheLastCapacityEventsOldestFirst)
{
  event_log log(with(4));
  for (std::size_t i = 0; i < 10; ++i) {
    log.record(sized(event_kind::evict, i));
  }
  std::vector<swap_event> const events = log.events();
  ASSERT_EQ(events.size(), 4U);
  EXPECT_EQ(events[0].bytes, 6U);
  EXPECT_EQ(events[1].bytes, 7U);
  EXPECT_EQ(events[2].bytes, 8U);
  EXPECT_EQ(events[3].bytes, 9U);
  EXPECT_EQ(log.recorded(), 10U);
  event_snapshot const snapshot = log.snapshot();
  EXPECT_EQ(snapshot.recorded, 10U);
  EXPECT_EQ(snapshot.events.size(), 4U);
}

TEST(EventLogRing, BelowCapacityKeepsEverythingInOrder)
{
  event_log log(with(4));
  log.record(sized(event_kind::restore, 1));
  log.record(sized(event_kind::prefetch, 2));
  std::vector<swap_event> const events = log.events();
  ASSERT_EQ(events.size(), 2U);
  EXPECT_EQ(events[0].kind, event_kind::restore);
  EXPECT_EQ(events[1].kind, event_kind::prefetch);
  EXPECT_EQ(log.recorded(), 2U);
}

TEST(EventLogRing, StampsNegativeTimesInOrderAndKeepsGivenOnes)
{
  event_log log(with(200));
  for (std::size_t i = 0; i < 100; ++i) {
    log.record(sized(event_kind::evict, i));
  }
  swap_event given = sized(event_kind::restore, 1);
  given.time_s     = 5.0;
  log.record(given);
  double const after                   = log.now();
  std::vector<swap_event> const events = log.events();
  ASSERT_EQ(events.size(), 101U);
  EXPECT_GE(events[0].time_s, 0.0);
  for (std::size_t i = 1; i < 100; ++i) {
    EXPECT_GE(events[i].time_s, events[i - 1].time_s) << "event " << i;
  }
  EXPECT_LE(events[99].time_s, after);
  EXPECT_EQ(events[100].time_s, 5.0);
}

TEST(EventLogRing, ThroughputIsBytesPerSecondAndZeroWhenUntimed)
{
  swap_event event = sized(event_kind::evict, GiB);
  event.duration_s = 0.5;
  EXPECT_EQ(event.throughput(), 2.0 * static_cast<double>(GiB));
  event.duration_s = 0.0;
  EXPECT_EQ(event.throughput(), 0.0);
  event.duration_s = -1.0;
  EXPECT_EQ(event.throughput(), 0.0);
}

// ---- the sink ------------------------------------------------------------------------

TEST(EventLogSink, ReceivesExactlyThePassingEventsAndAllAreStored)
{
  for (passes_row const& row : passes_table) {
    std::vector<log_level> told;
    event_log log(event_log_options{
      .capacity = 8, .level = row.verbosity, .sink = [&told](swap_event const& event) {
        told.push_back(event.level);
      }});
    for (log_level const level : all_levels) {
      log.record(sized(event_kind::evict, 1, level));
    }
    std::vector<log_level> expected;
    for (std::size_t i = 0; i < all_levels.size(); ++i) {
      if (row.passed[i]) { expected.push_back(all_levels[i]); }
    }
    EXPECT_EQ(told, expected) << "verbosity " << to_string(row.verbosity);
    EXPECT_EQ(log.events().size(), all_levels.size()) << "verbosity " << to_string(row.verbosity);
  }
}

TEST(EventLogSink, IsToldTheStoredEventWithItsStampedTime)
{
  std::vector<swap_event> told;
  event_log log(event_log_options{
    .capacity = 4, .level = log_level::info, .sink = [&told](swap_event const& event) {
      told.push_back(event);
    }});
  swap_event event = sized(event_kind::refusal, 3 * MiB, log_level::warn);
  event.pool       = 2;
  event.pool_name  = "vae";
  event.detail     = "host budget reached";
  log.record(event);
  ASSERT_EQ(told.size(), 1U);
  swap_event const stored = log.events().at(0);
  EXPECT_GE(told[0].time_s, 0.0);
  EXPECT_EQ(told[0].time_s, stored.time_s);
  EXPECT_EQ(told[0].pool, std::optional<pool_id>(2));
  EXPECT_EQ(told[0].pool_name, "vae");
  EXPECT_EQ(told[0].detail, "host budget reached");
  EXPECT_EQ(told[0].bytes, 3 * MiB);
}

TEST(EventLogSink, AThrowingSinkDoesNotBreakRecording)
{
  int calls = 0;
  event_log log(event_log_options{
    .capacity = 4, .level = log_level::debug, .sink = [&calls](swap_event const& event) {
      ++calls;
      if (event.bytes % 2 == 0) { throw std::runtime_error("full"); }
      throw 42;  // not a std::exception either
    }});
  for (std::size_t i = 0; i < 6; ++i) {
    EXPECT_NO_THROW(log.record(sized(event_kind::evict, i)));
  }
  EXPECT_EQ(calls, 6);
  EXPECT_EQ(log.sink_failures(), 6U);
  EXPECT_EQ(log.recorded(), 6U);
  std::vector<swap_event> const events = log.events();
  ASSERT_EQ(events.size(), 4U);
  EXPECT_EQ(events[0].bytes, 2U);
  EXPECT_EQ(events[3].bytes, 5U);
}

// ---- threads -------------------------------------------------------------------------

// 4 threads record 1000 events each, tagged with their thread (device) and sequence number
// (bytes, and again in the detail). The ring then holds the last `capacity` events: for
// each thread, a run of its own sequence that ends at its last event, undamaged.
TEST(EventLogThreads, ConcurrentRecordsAreCountedAndTheRingHoldsTheLastIntact)
{
  constexpr int threads          = 4;
  constexpr std::size_t each     = 1000;
  constexpr std::size_t capacity = 64;
  std::atomic<std::size_t> told{0};
  event_log log(event_log_options{
    .capacity = capacity, .level = log_level::info, .sink = [&told](swap_event const&) {
      told.fetch_add(1, std::memory_order_relaxed);
    }});
  std::vector<std::thread> workers;
  workers.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&log, t] {
      for (std::size_t i = 0; i < each; ++i) {
        swap_event event = sized(event_kind::evict, i);
        event.device     = t;
        event.pool       = static_cast<pool_id>(t);
        event.pool_name  = "pool-" + std::to_string(t);
        event.detail     = std::to_string(t) + ":" + std::to_string(i) + std::string(40, 'x');
        log.record(std::move(event));
      }
    });
  }
  for (std::thread& worker : workers) {
    worker.join();
  }

  EXPECT_EQ(log.recorded(), threads * each);
  EXPECT_EQ(told.load(), threads * each);
  std::vector<swap_event> const events = log.events();
  ASSERT_EQ(events.size(), capacity);
  std::map<int, std::vector<std::size_t>> sequences;
  for (std::size_t i = 0; i < events.size(); ++i) {
    swap_event const& event = events[i];
    ASSERT_GE(event.device, 0);
    ASSERT_LT(event.device, threads);
    EXPECT_EQ(event.pool, std::optional<pool_id>(static_cast<pool_id>(event.device)));
    EXPECT_EQ(event.pool_name, "pool-" + std::to_string(event.device));
    EXPECT_EQ(event.detail, std::to_string(event.device) + ":" + std::to_string(event.bytes) +
                              std::string(40, 'x'));
    if (i > 0) { EXPECT_GE(event.time_s, events[i - 1].time_s) << "event " << i; }
    sequences[event.device].push_back(event.bytes);
  }
  EXPECT_FALSE(sequences.empty());
  for (auto const& [thread, sequence] : sequences) {
    EXPECT_EQ(sequence.back(), each - 1) << "thread " << thread;
    for (std::size_t i = 1; i < sequence.size(); ++i) {
      EXPECT_EQ(sequence[i], sequence[i - 1] + 1) << "thread " << thread;
    }
  }
}

// ---- report.hpp: lines ---------------------------------------------------------------

TEST(EventReport, LineOfATimedEventShowsBytesDurationAndThroughput)
{
  swap_event event = sized(event_kind::evict, 512 * MiB);
  event.pool       = 3;
  event.pool_name  = "sdxl";
  event.duration_s = 0.0123;  // 536870912 B / 0.0123 s = 43.65 GB/s
  EXPECT_EQ(event_line(event),
            "swapalloc: [info] evict pool 'sdxl' on device 0: 512.00 MiB in 12.3 ms (43.6 GB/s)");
  event.detail = "page by page";
  EXPECT_EQ(event_line(event),
            "swapalloc: [info] evict pool 'sdxl' on device 0: 512.00 MiB in 12.3 ms (43.6 GB/s); "
            "page by page");
}

TEST(EventReport, LineOfAnUntimedEventLeavesOutDurationAndThroughput)
{
  swap_event event = sized(event_kind::refusal, 2 * MiB, log_level::warn);
  event.pool       = 4;
  event.pool_name  = "vae";
  event.device     = 1;
  event.detail     = "host budget reached";
  EXPECT_EQ(event_line(event),
            "swapalloc: [warn] refusal pool 'vae' on device 1: 2.00 MiB; host budget reached");

  swap_event change = sized(event_kind::level_change, 0, log_level::warn);
  change.detail     = "WARNING -> CRITICAL";
  EXPECT_EQ(event_line(change), "swapalloc: [warn] level_change on device 0: WARNING -> CRITICAL");

  swap_event bare = sized(event_kind::out_of_memory, 0, log_level::error);
  bare.device     = 2;
  EXPECT_EQ(event_line(bare), "swapalloc: [error] out_of_memory on device 2");
}

TEST(EventReport, LineOfAnUnnamedPoolAndATimedEventWithoutBytes)
{
  swap_event event = sized(event_kind::prefetch, 0, log_level::debug);
  event.pool       = 7;
  event.duration_s = 850e-6;
  EXPECT_EQ(event_line(event), "swapalloc: [debug] prefetch pool #7 on device 0: took 850.0 us");
}

TEST(EventReport, DurationAndRateTexts)
{
  EXPECT_EQ(duration_text(0.0), "0.0 us");
  EXPECT_EQ(duration_text(0.0005), "500.0 us");
  EXPECT_EQ(duration_text(0.25), "250.0 ms");
  EXPECT_EQ(duration_text(2.5), "2.50 s");
  EXPECT_EQ(rate_text(999.0), "999 B/s");
  EXPECT_EQ(rate_text(1500.0), "1.5 KB/s");
  EXPECT_EQ(rate_text(2.5e6), "2.5 MB/s");
  EXPECT_EQ(rate_text(55e9), "55.0 GB/s");
  EXPECT_EQ(rate_text(1.5e12), "1.5 TB/s");
  EXPECT_EQ(rate_text(2.5e15), "2500.0 TB/s");
}

TEST(EventReport, LogToStderrWritesTheLineAndANewline)
{
  swap_event event = sized(event_kind::release_cached, 4 * MiB);
  event.pool       = 0;
  event.pool_name  = "default";
  ::testing::internal::CaptureStderr();
  log_to_stderr(event);
  std::string const written = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(written, "swapalloc: [info] release_cached pool 'default' on device 0: 4.00 MiB\n");
}

// ---- report.hpp: JSON ----------------------------------------------------------------

TEST(EventReport, JsonHasEveryKeyWithItsValue)
{
  swap_event event          = sized(event_kind::restore, GiB);
  event.pool                = 5;
  event.pool_name           = "unet";
  event.device              = 1;
  event.time_s              = 1.25;
  event.duration_s          = 0.25;
  event.detail              = "prefetched";
  nlohmann::json const json = to_json(event);
  EXPECT_EQ(json.size(), 10U);
  EXPECT_EQ(json.at("kind"), "restore");
  EXPECT_EQ(json.at("level"), "info");
  EXPECT_EQ(json.at("time_s"), 1.25);
  EXPECT_EQ(json.at("pool"), 5);
  EXPECT_EQ(json.at("pool_name"), "unet");
  EXPECT_EQ(json.at("device"), 1);
  EXPECT_EQ(json.at("bytes"), GiB);
  EXPECT_EQ(json.at("duration_s"), 0.25);
  EXPECT_EQ(json.at("throughput_bytes_per_s"), 4.0 * static_cast<double>(GiB));
  EXPECT_EQ(json.at("detail"), "prefetched");

  swap_event const device_wide = sized(event_kind::out_of_memory, MiB, log_level::error);
  nlohmann::json const oom     = to_json(device_wide);
  EXPECT_TRUE(oom.at("pool").is_null());
  EXPECT_EQ(oom.at("level"), "error");
  EXPECT_EQ(oom.at("throughput_bytes_per_s"), 0.0);
}

TEST(EventReport, EventsJsonCountsTheDroppedAndListsOldestFirst)
{
  event_log log(with(2));
  nlohmann::json const empty = events_json(log);
  EXPECT_EQ(empty.at("capacity"), 2);
  EXPECT_EQ(empty.at("recorded"), 0);
  EXPECT_EQ(empty.at("dropped"), 0);
  EXPECT_TRUE(empty.at("events").is_array());
  EXPECT_TRUE(empty.at("events").empty());

  for (std::size_t i = 1; i <= 3; ++i) {
    log.record(sized(event_kind::evict, i * MiB));
  }
  nlohmann::json const json = events_json(log);
  EXPECT_EQ(json.size(), 4U);
  EXPECT_EQ(json.at("capacity"), 2);
  EXPECT_EQ(json.at("recorded"), 3);
  EXPECT_EQ(json.at("dropped"), 1);
  ASSERT_EQ(json.at("events").size(), 2U);
  EXPECT_EQ(json.at("events")[0].at("bytes"), 2 * MiB);
  EXPECT_EQ(json.at("events")[1].at("bytes"), 3 * MiB);
  EXPECT_EQ(json.at("events")[1].at("kind"), "evict");
}

// ---- report.hpp: leaks ---------------------------------------------------------------

TEST(LeakReport, LineShowsCountBytesAndLargestSizes)
{
  std::vector<std::size_t> const largest{8 * MiB, 2 * MiB, 2 * MiB};
  EXPECT_EQ(leak_text("sdxl", 0, 3, 12 * MiB, largest),
            "pool 'sdxl' on device 0: 3 live blocks, 12.00 MiB (largest 8.00 MiB, 2.00 MiB, "
            "2.00 MiB)");
  EXPECT_EQ(leak_detail(3, largest), "3 live blocks (largest 8.00 MiB, 2.00 MiB, 2.00 MiB)");
}

TEST(LeakReport, OneBlockNoSizesAndAtMostFiveSizes)
{
  EXPECT_EQ(leak_text("vae", 2, 1, 512, {}), "pool 'vae' on device 2: 1 live block, 512 B");
  EXPECT_EQ(leak_detail(1, {}), "1 live block");
  std::vector<std::size_t> const seven{7 * MiB, 6 * MiB, 5 * MiB, 4 * MiB,
                                       3 * MiB, 2 * MiB, 1 * MiB};
  EXPECT_EQ(leak_text("unet", 1, 7, 28 * MiB, seven),
            "pool 'unet' on device 1: 7 live blocks, 28.00 MiB (largest 7.00 MiB, 6.00 MiB, "
            "5.00 MiB, 4.00 MiB, 3.00 MiB)");
}

}  // namespace
}  // namespace swapalloc::testing
