// Tests of tools/demo/model_files.hpp and of model::weight_chunks, which it relies on (suite
// DemoModelFiles), on a 256 MiB simulated device: the chunks are the filler calls a load
// makes; a prepared file holds the source's bytes, which the store's filler reads back (a
// model loaded from it holds the bytes of one loaded from the source); a later store reuses
// the file, one with other weights replaces it; the loads and bytes read are counted.
#include "model_files.hpp"
#include "scenario_fixture.hpp"
#include "temp_files.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace swapalloc::testing {
namespace {

using demo::model_file_store;
using demo::read_totals;
using scenarios::weight_source;

int const model_files_sim_memory_set = set_sim_memory(256 * MiB);

class DemoModelFilesTest : public StartedScenarioTest {
 protected:
  DemoModelFilesTest() : StartedScenarioTest(model_files_sim_memory_set) {}

  /// A model of 3 MiB in 3 tensors (1 MiB chunks: the staging buffer is cut to 1 MiB), its
  /// weights from `filler`.
  [[nodiscard]] std::unique_ptr<scenarios::model> make(std::string name,
                                                       scenarios::weight_filler filler)
  {
    scenarios::model_spec spec =
      scenarios::make_model_spec(std::move(name), pool_priority::normal, 3 * MiB, 3, MiB);
    spec.staging_bytes = 512 * KiB;
    return std::make_unique<scenarios::model>(*s_->owner, drv(), 0, std::move(spec),
                                              std::move(filler));
  }

  /// The files in `dir`.
  [[nodiscard]] static std::vector<std::string> files_in(std::filesystem::path const& dir)
  {
    std::vector<std::string> names;
    for (auto const& entry : std::filesystem::directory_iterator(dir)) {
      names.push_back(entry.path().filename().string());
    }
    return names;
  }

  weight_source const source_ = weight_source::generated(7);
  scenarios::testing::temp_dir const dir_;
};

TEST_F(DemoModelFilesTest, WeightChunksAreTheFillerCallsOfALoad)
{
  std::vector<std::pair<std::uint64_t, std::size_t>> calls;
  auto const m = make("m", [&](std::span<std::byte> out, std::uint64_t salt) {
    calls.emplace_back(salt, out.size());
    std::memset(out.data(), 0, out.size());
  });
  std::vector<scenarios::weight_chunk> const chunks = m->weight_chunks();
  ASSERT_EQ(chunks.size(), 6U) << "three tensors of 1 MiB, two chunks of 512 KiB each";
  m->load();
  ASSERT_EQ(calls.size(), chunks.size());
  std::size_t offset_sum = 0;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    EXPECT_EQ(calls[i].first, chunks[i].salt) << i;
    EXPECT_EQ(calls[i].second, chunks[i].bytes) << i;
    EXPECT_EQ(chunks[i].tensor, i / 2) << i;
    EXPECT_EQ(chunks[i].offset, i % 2 * 512 * KiB) << i;
    offset_sum += chunks[i].bytes;
  }
  EXPECT_EQ(offset_sum, m->weight_bytes());
}

TEST_F(DemoModelFilesTest, AModelLoadedFromItsFileHoldsTheSourcesBytes)
{
  model_file_store files(dir_.path() / "models", source_);
  auto const from_file = make("m", files.filler());
  EXPECT_TRUE(files.prepare(*from_file)) << "written now";
  EXPECT_FALSE(files.prepare(*from_file)) << "prepared already";
  std::vector<std::string> const names = files_in(dir_.path() / "models");
  ASSERT_EQ(names.size(), 1U);
  EXPECT_TRUE(names[0].starts_with("m-") && names[0].ends_with(".bf16")) << names[0];
  EXPECT_EQ(std::filesystem::file_size(dir_.path() / "models" / names[0]), 3 * MiB);
  from_file->load();
  // The file's bytes are the source's, chunk by chunk.
  std::vector<std::byte> expected(512 * KiB);
  std::vector<std::byte> read(512 * KiB);
  for (scenarios::weight_chunk const& chunk : from_file->weight_chunks()) {
    source_.fill(expected, scenarios::weight_dtype::bf16, chunk.salt);
    files.filler()(read, chunk.salt);
    EXPECT_EQ(read, expected) << "tensor " << chunk.tensor << " at " << chunk.offset;
  }
  read_totals const totals = files.totals();
  EXPECT_EQ(totals.loads, 2U) << "the load, and the file's first chunk read above";
  EXPECT_EQ(totals.bytes, 2 * from_file->weight_bytes());
  EXPECT_GT(totals.seconds, 0.0);
  EXPECT_TRUE(from_file->verify_weights().empty());
}

TEST_F(DemoModelFilesTest, EachLoadReadsTheFileAgain)
{
  model_file_store files(dir_.path(), source_);
  auto const m = make("m", files.filler());
  (void)files.prepare(*m);
  m->load();
  m->unload();
  m->load();  // throws if the bytes read differ from the first load's
  EXPECT_EQ(files.totals().loads, 2U);
  EXPECT_EQ(files.totals().bytes, 2 * m->weight_bytes());
}

TEST_F(DemoModelFilesTest, ALaterStoreReusesTheFileAndOtherWeightsReplaceIt)
{
  {
    model_file_store first(dir_.path(), source_);
    auto const m = make("m", first.filler());
    EXPECT_TRUE(first.prepare(*m));
  }
  std::vector<std::string> const before = files_in(dir_.path());
  {
    model_file_store again(dir_.path(), source_);
    auto const m = make("m", again.filler());
    EXPECT_FALSE(again.prepare(*m)) << "an earlier run's file, reused";
  }
  EXPECT_EQ(files_in(dir_.path()), before);
  model_file_store other(dir_.path(), weight_source::generated(8));
  auto const m = make("m", other.filler());
  EXPECT_TRUE(other.prepare(*m)) << "other weights: another key";
  std::vector<std::string> const after = files_in(dir_.path());
  ASSERT_EQ(after.size(), 1U) << "the stale file is removed";
  EXPECT_NE(after, before);
  m->load();
}

TEST_F(DemoModelFilesTest, AChunkNoFileHoldsIsAnError)
{
  model_file_store files(dir_.path(), source_);
  std::vector<std::byte> out(512 * KiB);
  try {
    files.filler()(out, 42);
    FAIL() << "no file prepared";
  } catch (std::runtime_error const& error) {
    EXPECT_NE(std::string(error.what()).find("no prepared file holds"), std::string::npos)
      << error.what();
  }
}

}  // namespace
}  // namespace swapalloc::testing
