// Tests of the allocator's usage errors: each misuse throws usage_error naming the
// pointer and what it is, is counted in the statistics, and changes nothing.
#include "allocator_fixture.hpp"

#include <string>

namespace swapalloc::testing {
namespace {

/// A live block and the counters before a misuse; `expect_unchanged` checks after it.
class AllocatorMisuseTest : public AllocatorTest {
 protected:
  void SetUp() override
  {
    AllocatorTest::SetUp();
    live_ = alloc().allocate(bytes_, 0, nullptr);
    fill(live_, bytes_, 0x11223344);
    before_ = alloc().stats(default_pool, 0);
  }
  void TearDown() override
  {
    if (live_ != 0) { alloc().deallocate(live_, bytes_, 0, nullptr); }
    AllocatorTest::TearDown();
  }

  /// Runs `misuse`, expecting a usage_error of `kind` whose message contains `needle`.
  template <typename Misuse>
  void expect_usage_error(usage_error_kind kind, std::string const& needle, Misuse&& misuse)
  {
    std::size_t const count = alloc().usage_errors(kind);
    try {
      misuse();
      ADD_FAILURE() << "no usage_error for " << to_string(kind);
    } catch (usage_error const& error) {
      EXPECT_EQ(error.kind(), kind) << error.what();
      EXPECT_NE(std::string(error.what()).find(needle), std::string::npos) << error.what();
    }
    EXPECT_EQ(alloc().usage_errors(kind), count + 1);
    expect_unchanged();
  }

  void expect_unchanged()
  {
    EXPECT_EQ(alloc().check(), "");
    pool_stats const now = alloc().stats(default_pool, 0);
    EXPECT_EQ(now.live_blocks, before_.live_blocks);
    EXPECT_EQ(now.allocated_bytes, before_.allocated_bytes);
    EXPECT_EQ(now.frees, before_.frees);
    EXPECT_EQ(word_at(live_, bytes_ - 4), 0x11223344U) << "the live block was touched";
  }

  std::size_t const bytes_{3 * MiB};
  CUdeviceptr live_{0};
  pool_stats before_{};
};

TEST_F(AllocatorMisuseTest, UnknownPointer)
{
  expect_usage_error(usage_error_kind::unknown_pointer, "not an address this allocator handed out",
                     [&] { alloc().deallocate(0xdead0000, 64, 0, nullptr); });
}

TEST_F(AllocatorMisuseTest, DoubleFree)
{
  CUdeviceptr const p = alloc().allocate(4096, 0, nullptr);
  alloc().deallocate(p, 4096, 0, nullptr);
  before_ = alloc().stats(default_pool, 0);
  expect_usage_error(usage_error_kind::double_free, "already free",
                     [&] { alloc().deallocate(p, 4096, 0, nullptr); });
  EXPECT_EQ(alloc().allocate(4096, 0, nullptr), p) << "the cached block is still reusable";
  alloc().deallocate(p, 4096, 0, nullptr);
}

TEST_F(AllocatorMisuseTest, InteriorPointer)
{
  expect_usage_error(usage_error_kind::interior_pointer,
                     "4096 bytes inside the block at " + hex(live_),
                     [&] { alloc().deallocate(live_ + 4096, 4096, 0, nullptr); });
}

TEST_F(AllocatorMisuseTest, WrongSize)
{
  expect_usage_error(usage_error_kind::wrong_size, "allocated with bytes=3145728",
                     [&] { alloc().deallocate(live_, bytes_ + 1, 0, nullptr); });
}

TEST_F(AllocatorMisuseTest, WrongStream)
{
  scoped_stream const other(drv());
  expect_usage_error(usage_error_kind::wrong_stream, "allocated on stream=0x0",
                     [&] { alloc().deallocate(live_, bytes_, 0, other); });
}

TEST_F(AllocatorMisuseTest, BadDevice)
{
  expect_usage_error(usage_error_kind::bad_device, "device=-1",
                     [&] { alloc().deallocate(live_, bytes_, -1, nullptr); });
  expect_usage_error(usage_error_kind::bad_device, "device=99",
                     [&] { (void)alloc().allocate(64, 99, nullptr); });
}

TEST_F(AllocatorMisuseTest, RecordStreamOfAFreedBlock)
{
  scoped_stream const other(drv());
  CUdeviceptr const p = alloc().allocate(4096, 0, nullptr);
  alloc().deallocate(p, 4096, 0, nullptr);
  before_ = alloc().stats(default_pool, 0);
  expect_usage_error(usage_error_kind::double_free, "record_stream(ptr=" + hex(p),
                     [&] { alloc().record_stream(p, 0, other); });
}

TEST_F(AllocatorMisuseTest, AllocatingInADestroyedPool)
{
  pool_id const gone = alloc().create_pool("gone");
  alloc().destroy_pool(gone);
  expect_usage_error(usage_error_kind::bad_pool, "pool=" + std::to_string(gone),
                     [&] { alloc().push_pool(gone); });
}

TEST_F(AllocatorMisuseTest, ErrorsAreCountedInTheJsonStatistics)
{
  for (int i = 0; i < 3; ++i) {
    EXPECT_THROW(alloc().deallocate(0xbad000, 1, 0, nullptr), usage_error);
  }
  EXPECT_THROW(alloc().deallocate(live_, 1, 0, nullptr), usage_error);
  nlohmann::json const stats = alloc().stats_json();
  EXPECT_EQ(stats["usage_errors"]["unknown_pointer"], 3);
  EXPECT_EQ(stats["usage_errors"]["wrong_size"], 1);
  EXPECT_EQ(stats["usage_errors"]["total"], 4);
  expect_unchanged();
}

}  // namespace
}  // namespace swapalloc::testing
