/**
 * @file temp_files.hpp
 * @brief Files the weights and safetensors tests write: a temporary directory removed at the
 *        end of the test, and safetensors files built byte by byte from a header and a
 *        payload (so a test can make any malformed file it needs).
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

namespace swapalloc::scenarios::testing {

/// A fresh directory under the system's temporary directory, named after the running test
/// and the process, removed (with what it holds) at destruction.
class temp_dir {
 public:
  temp_dir()
  {
    ::testing::TestInfo const* const test = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string const name = std::string("swapalloc_") + test->test_suite_name() + "_" +
                             test->name() + "_" + std::to_string(::getpid());
    path_ = std::filesystem::temp_directory_path() / name;
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~temp_dir()
  {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  temp_dir(temp_dir const&)            = delete;
  temp_dir& operator=(temp_dir const&) = delete;

  [[nodiscard]] std::filesystem::path const& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

/// Writes `bytes` to `path` (replacing it).
inline void write_file(std::filesystem::path const& path, std::span<std::byte const> bytes)
{
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<char const*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) { throw std::runtime_error(path.string() + ": cannot write the test file"); }
}

/// The bytes of `values` (little-endian on the platforms the project builds on).
template <class T>
std::vector<std::byte> bytes_of(std::vector<T> const& values)
{
  std::vector<std::byte> bytes(values.size() * sizeof(T));
  if (!bytes.empty()) { std::memcpy(bytes.data(), values.data(), bytes.size()); }
  return bytes;
}

/// A safetensors file at `path`: the 8-byte little-endian length (`length` when given, else
/// the header's), the JSON `header`, then `payload`.
inline void write_safetensors(std::filesystem::path const& path, std::string const& header,
                              std::span<std::byte const> payload,
                              std::optional<std::uint64_t> length = std::nullopt)
{
  std::uint64_t const stated = length.value_or(header.size());
  std::vector<std::byte> bytes;
  bytes.reserve(8 + header.size() + payload.size());
  for (int i = 0; i < 8; ++i) {
    bytes.push_back(static_cast<std::byte>((stated >> (8 * i)) & 0xFFU));
  }
  for (char c : header) {
    bytes.push_back(static_cast<std::byte>(c));
  }
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  write_file(path, bytes);
}

}  // namespace swapalloc::scenarios::testing
