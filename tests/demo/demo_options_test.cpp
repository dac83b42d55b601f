// Tests of tools/demo/demo_options.hpp (suite DemoOptions): the defaults, both spellings of
// a value, every option's accepted values, and the messages of every mistake, which name the
// option, the value and what is accepted (the program exits with status 64 on them).
#include "demo_options.hpp"
#include "demo_test_support.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace swapalloc::demo {
namespace {

using test_support::contains;

demo_options parse(std::vector<char const*> const& args)
{
  return parse_demo_options(std::span<char const* const>(args.data(), args.size()));
}

/// The message of the demo_usage_error parsing `args` throws; "" when it throws none.
std::string mistake(std::vector<char const*> const& args)
{
  try {
    (void)parse(args);
  } catch (demo_usage_error const& error) {
    return error.what();
  }
  return "";
}

TEST(DemoOptions, DefaultsAreAllModesTenRequestsAndTheDefaultScale)
{
  demo_options const o = parse({});
  EXPECT_EQ(o.modes, (std::vector<demo_mode>{demo_mode::keep, demo_mode::auto_unload,
                                             demo_mode::swapalloc}));
  EXPECT_EQ(o.requests, 10U);
  EXPECT_EQ(o.scale, default_scale);
  EXPECT_TRUE(o.weights_dir.empty());
  EXPECT_TRUE(o.timeline.empty());
  EXPECT_TRUE(o.model_dir.empty());
  EXPECT_FALSE(o.link_gbps.has_value());
  EXPECT_FALSE(o.codec.has_value());
  EXPECT_FALSE(o.help);
}

TEST(DemoOptions, ValuesAreTakenAfterASpaceOrAnEqualsSign)
{
  demo_options const o =
    parse({"--requests", "3", "--scale=256", "--mode", "swapalloc", "--link-gbps=12.5", "--weights",
           "w", "--timeline=t.json", "--model-dir", "m", "--codec=raw"});
  EXPECT_EQ(o.requests, 3U);
  EXPECT_EQ(o.scale, 256U);
  EXPECT_EQ(o.modes, std::vector<demo_mode>{demo_mode::swapalloc});
  ASSERT_TRUE(o.link_gbps.has_value());
  EXPECT_DOUBLE_EQ(*o.link_gbps, 12.5);
  EXPECT_EQ(o.weights_dir, "w");
  EXPECT_EQ(o.timeline, "t.json");
  EXPECT_EQ(o.model_dir, "m");
  EXPECT_EQ(o.codec, codec_id::raw);
}

TEST(DemoOptions, EveryModeAndAllAreAccepted)
{
  EXPECT_EQ(parse({"--mode=keep"}).modes, std::vector<demo_mode>{demo_mode::keep});
  EXPECT_EQ(parse({"--mode=auto_unload"}).modes, std::vector<demo_mode>{demo_mode::auto_unload});
  EXPECT_EQ(parse({"--mode=all"}).modes.size(), 3U);
  EXPECT_FALSE(parse({"--codec=auto"}).codec.has_value()) << "auto: the library's choice";
  EXPECT_EQ(parse({"--codec=shuffle2+lz4"}).codec, codec_id::shuffle2_lz4);
  EXPECT_DOUBLE_EQ(*parse({"--link-gbps=0"}).link_gbps, 0.0) << "0: unthrottled";
  EXPECT_EQ(parse({"--scale=1"}).scale, 1U);
  EXPECT_EQ(parse({"--scale=1024"}).scale, 1024U);
  EXPECT_EQ(parse({"--requests=1000"}).requests, 1000U);
}

TEST(DemoOptions, HelpIsNoted)
{
  EXPECT_TRUE(parse({"--help"}).help);
  EXPECT_TRUE(parse({"-h", "--requests=2"}).help);
}

TEST(DemoOptions, BadValuesNameTheOptionTheValueAndWhatIsAccepted)
{
  struct bad_case {
    std::vector<char const*> args;
    std::string expected;
  };
  for (auto const& [args, expected] : std::vector<bad_case>{
         {{"--mode=fast"}, "--mode 'fast': expected keep, auto_unload, swapalloc or all"},
         {{"--requests=0"}, "--requests '0': expected a whole number from 1 to 1000"},
         {{"--requests=1001"}, "--requests '1001': expected a whole number from 1 to 1000"},
         {{"--requests=3x"}, "--requests '3x': expected a whole number"},
         {{"--requests=-2"}, "--requests '-2': expected a whole number"},
         {{"--scale=0"}, "--scale '0': expected a whole number from 1 (full size) to 1024"},
         {{"--scale=2048"}, "--scale '2048': expected a whole number from 1"},
         {{"--link-gbps=-1"}, "--link-gbps '-1': expected a number >= 0"},
         {{"--link-gbps=fast"}, "--link-gbps 'fast': expected a number >= 0"},
         {{"--link-gbps=1e3"}, "--link-gbps '1e3': expected a number >= 0"},
         {{"--codec=zero"}, "--codec 'zero': expected auto, raw, lz4"},
         {{"--codec=gzip"}, "--codec 'gzip': expected auto, raw"},
         {{"--weights="}, "--weights '': expected a directory"},
         {{"--timeline="}, "--timeline '': expected a file name"},
         {{"--model-dir="}, "--model-dir '': expected a directory"},
       }) {
    EXPECT_TRUE(contains(mistake(args), expected)) << args.front() << ": " << mistake(args);
  }
}

TEST(DemoOptions, UnknownMissingRepeatedAndRunDemosOptionsAreRefused)
{
  EXPECT_TRUE(
    contains(mistake({"--frobnicate"}), "unknown option '--frobnicate' (accepted: --mode"))
    << mistake({"--frobnicate"});
  EXPECT_TRUE(contains(mistake({"requests"}), "unknown option 'requests'"));
  EXPECT_TRUE(contains(mistake({"--requests"}), "--requests needs a value"));
  EXPECT_TRUE(contains(mistake({"--scale=2", "--scale=4"}), "--scale is given twice"));
  EXPECT_TRUE(contains(mistake({"--sim"}), "--sim is tools/run-demo's option"));
  EXPECT_TRUE(contains(mistake({"--gpu"}), "--gpu is tools/run-demo's option"));
}

}  // namespace
}  // namespace swapalloc::demo
