/**
 * @file allocator_fixture.hpp
 * @brief The fixture of the allocator tests: a fresh `allocator` over the shared driver,
 *        destroyed before DriverTest's leak check, plus helpers that fill and verify device
 *        memory through driver calls only (never a dereference of device memory).
 */
#pragma once

#include <swapalloc/activation.hpp>
#include <swapalloc/allocator.hpp>
#include <swapalloc/pool_scope.hpp>

#include "driver_fixture.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace swapalloc::testing {

inline constexpr std::size_t KiB = 1024;
inline constexpr std::size_t MiB = KiB * KiB;

class AllocatorTest : public DriverTest {
 protected:
  void SetUp() override
  {
    DriverTest::SetUp();
    alloc_ = std::make_unique<allocator>(drv(), options());
  }
  void TearDown() override
  {
    if (alloc_ != nullptr) {
      EXPECT_EQ(alloc_->check(), "") << "allocator structure broken at teardown";
    }
    alloc_.reset();
    DriverTest::TearDown();
  }
  /// Options of the allocator under test; fixtures override.
  [[nodiscard]] virtual allocator_options options() const { return {}; }

  [[nodiscard]] allocator& alloc() noexcept { return *alloc_; }

  /// Writes `words` 32-bit words of `value` at `ptr` on `stream` (cuMemsetD32Async).
  void fill(CUdeviceptr ptr, std::size_t bytes, std::uint32_t value,
            CUstream stream = nullptr) const
  {
    drv().memset_d32_async(ptr, value, bytes / 4, stream);
  }

  /// The word at byte offset `at` of `ptr`, read after `stream`'s work.
  [[nodiscard]] std::uint32_t word_at(CUdeviceptr ptr, std::size_t at,
                                      CUstream stream = nullptr) const
  {
    drv().stream_synchronize(stream);
    std::uint32_t word = 0;
    drv().memcpy_dtoh(&word, ptr + at, sizeof word);
    return word;
  }

  std::unique_ptr<allocator> alloc_;
};

}  // namespace swapalloc::testing
