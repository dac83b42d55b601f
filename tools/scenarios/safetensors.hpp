/**
 * @file safetensors.hpp
 * @brief A reader of the safetensors format (https://huggingface.co/docs/safetensors): the
 *        real trained weights the seed scenarios fill their pools with (weights.hpp).
 *
 * The format: 8 bytes, the header's length N (unsigned, little-endian); N bytes of JSON, an
 * object mapping each tensor's name to {"dtype": "F32", "shape": [d0, d1, ...],
 * "data_offsets": [begin, end]} (bytes, relative to the data that follows the header, end
 * exclusive), plus an optional "__metadata__" object of strings; then the raw little-endian
 * tensor bytes. `safetensors_file::open` reads the header only and validates all of it
 * against the file's size, as the reference implementation does: the header's length within
 * the file (and at most 100 MB), the JSON, every dtype (all of the format's names are known;
 * the sub-byte ones F4/F6 are rejected as unsupported), every shape, every tensor's offsets
 * within the data and equal to shape x dtype size, no two tensors overlapping, and no data
 * byte that belongs to no tensor. Tensor bytes are read on demand (`read_bytes`), and float
 * tensors (F64, F32, F16, BF16) converted to fp32 (`read_floats`).
 *
 * Errors: safetensors_error (a std::runtime_error) whose message names the file, the tensor
 * when there is one, and the bad value. Thread safety: a safetensors_file is immutable; its
 * reads open the file anew, so they may run concurrently.
 */
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace swapalloc::scenarios {

static_assert(std::endian::native == std::endian::little,
              "safetensors.hpp reads little-endian bytes in place");

/// A malformed or unreadable safetensors file. See the file comment.
class safetensors_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The format's element types, named as in the header ("F32", "BF16", ...).
enum class tensor_dtype : std::uint8_t {
  boolean,
  u8,
  i8,
  f8_e4m3,
  f8_e5m2,
  u16,
  i16,
  f16,
  bf16,
  u32,
  i32,
  f32,
  u64,
  i64,
  f64,
};

namespace detail {

struct dtype_row {
  std::string_view name;
  tensor_dtype dtype;
  std::size_t bytes;
};
inline constexpr std::array<dtype_row, 15> dtype_table{{
  {"BOOL", tensor_dtype::boolean, 1},
  {"U8", tensor_dtype::u8, 1},
  {"I8", tensor_dtype::i8, 1},
  {"F8_E4M3", tensor_dtype::f8_e4m3, 1},
  {"F8_E5M2", tensor_dtype::f8_e5m2, 1},
  {"U16", tensor_dtype::u16, 2},
  {"I16", tensor_dtype::i16, 2},
  {"F16", tensor_dtype::f16, 2},
  {"BF16", tensor_dtype::bf16, 2},
  {"U32", tensor_dtype::u32, 4},
  {"I32", tensor_dtype::i32, 4},
  {"F32", tensor_dtype::f32, 4},
  {"U64", tensor_dtype::u64, 8},
  {"I64", tensor_dtype::i64, 8},
  {"F64", tensor_dtype::f64, 8},
}};
/// Names of the format that this reader knows but does not support (elements below a byte).
inline constexpr std::array<std::string_view, 4> sub_byte_dtypes{"F4", "F6_E2M3", "F6_E3M2",
                                                                 "F8_E8M0"};

}  // namespace detail

/// The dtype's name in the header: "F32", "BF16", ... Thread safety: pure.
[[nodiscard]] constexpr std::string_view to_string(tensor_dtype dtype) noexcept
{
  for (detail::dtype_row const& row : detail::dtype_table) {
    if (row.dtype == dtype) { return row.name; }
  }
  return "unknown";
}

/// Bytes per element of `dtype`. Thread safety: pure.
[[nodiscard]] constexpr std::size_t size_of(tensor_dtype dtype) noexcept
{
  for (detail::dtype_row const& row : detail::dtype_table) {
    if (row.dtype == dtype) { return row.bytes; }
  }
  return 0;
}

/// Whether `read_floats` converts tensors of `dtype` (F64, F32, F16, BF16).
[[nodiscard]] constexpr bool is_float(tensor_dtype dtype) noexcept
{
  return dtype == tensor_dtype::f64 || dtype == tensor_dtype::f32 || dtype == tensor_dtype::f16 ||
         dtype == tensor_dtype::bf16;
}

/// bf16 bits -> float (exact). Thread safety: pure.
[[nodiscard]] inline float bf16_to_float(std::uint16_t bits) noexcept
{
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

/// IEEE fp16 bits -> float (exact: subnormals, infinities and NaNs kept). Thread safety: pure.
[[nodiscard]] inline float fp16_to_float(std::uint16_t bits) noexcept
{
  std::uint32_t const sign     = static_cast<std::uint32_t>(bits & 0x8000U) << 16;
  std::uint32_t const exponent = (bits >> 10) & 0x1FU;
  std::uint32_t const mantissa = bits & 0x3FFU;
  if (exponent == 0) {  // zero or subnormal: mantissa x 2^-24, exact in a float
    float const magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8F;
    return sign != 0 ? -magnitude : magnitude;
  }
  if (exponent == 0x1F) { return std::bit_cast<float>(sign | 0x7F800000U | (mantissa << 13)); }
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

/// One tensor of a safetensors file, as its header describes it.
struct tensor_info {
  std::string name;
  tensor_dtype dtype{tensor_dtype::f32};
  std::vector<std::uint64_t> shape;  ///< empty: a scalar
  std::uint64_t begin{0};            ///< bytes from the start of the data (after the header)
  std::uint64_t end{0};              ///< exclusive
  [[nodiscard]] std::uint64_t bytes() const noexcept { return end - begin; }
  [[nodiscard]] std::uint64_t elements() const noexcept { return bytes() / size_of(dtype); }
};

/// A safetensors file whose header has been read and validated. See the file comment.
class safetensors_file {
 public:
  /// Maximum header length the reference implementation accepts (bytes).
  static constexpr std::uint64_t max_header_bytes = 100'000'000;

  /**
   * @brief Reads and validates the header of the file at `path` (the tensor bytes stay on
   *        disk). @throws safetensors_error naming the file, the tensor and the bad value.
   */
  [[nodiscard]] static safetensors_file open(std::filesystem::path const& path)
  {
    safetensors_file file;
    file.path_ = path;
    std::error_code error;
    std::uintmax_t const size = std::filesystem::file_size(path, error);
    if (error) { throw file.fail("cannot read the file size: " + error.message()); }
    std::ifstream in(path, std::ios::binary);
    std::array<unsigned char, 8> length_bytes{};
    if (!in || !in.read(reinterpret_cast<char*>(length_bytes.data()), 8)) {
      throw file.fail("cannot read the 8-byte header length (file of " + std::to_string(size) +
                      " bytes)");
    }
    std::uint64_t length = 0;
    for (std::size_t i = 0; i < 8; ++i) {
      length |= static_cast<std::uint64_t>(length_bytes[i]) << (8 * i);
    }
    if (length > size - 8 || length > max_header_bytes) {
      throw file.fail("header length " + std::to_string(length) + " beyond the file of " +
                      std::to_string(size) + " bytes (or above the format's limit of 100 MB)");
    }
    std::string header(static_cast<std::size_t>(length), '\0');
    if (!in.read(header.data(), static_cast<std::streamsize>(length))) {
      throw file.fail("cannot read the " + std::to_string(length) + "-byte header");
    }
    file.data_offset_ = 8 + length;
    file.data_bytes_  = size - file.data_offset_;
    file.parse_header(header);
    return file;
  }

  [[nodiscard]] std::filesystem::path const& path() const noexcept { return path_; }
  /// The tensors, in the order of their bytes in the file.
  [[nodiscard]] std::span<tensor_info const> tensors() const noexcept { return tensors_; }
  /// The "__metadata__" strings (empty when absent).
  [[nodiscard]] std::map<std::string, std::string> const& metadata() const noexcept
  {
    return metadata_;
  }
  /// Bytes of tensor data after the header (the file's size - 8 - header length).
  [[nodiscard]] std::uint64_t data_bytes() const noexcept { return data_bytes_; }

  /// The tensor named `name`, or nullptr.
  [[nodiscard]] tensor_info const* find(std::string_view name) const noexcept
  {
    auto const found = std::find_if(tensors_.begin(), tensors_.end(),
                                    [&](tensor_info const& tensor) { return tensor.name == name; });
    return found == tensors_.end() ? nullptr : &*found;
  }

  /// The raw little-endian bytes of `tensor` (one of `tensors()`).
  /// @throws safetensors_error when the file cannot be read (it changed since `open`).
  [[nodiscard]] std::vector<std::byte> read_bytes(tensor_info const& tensor) const
  {
    std::vector<std::byte> bytes(static_cast<std::size_t>(tensor.bytes()));
    std::ifstream in(path_, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(data_offset_ + tensor.begin));
    if (!in || !in.read(reinterpret_cast<char*>(bytes.data()),
                        static_cast<std::streamsize>(bytes.size()))) {
      throw fail("tensor '" + tensor.name + "': cannot read its " + std::to_string(bytes.size()) +
                 " bytes at offset " + std::to_string(data_offset_ + tensor.begin));
    }
    return bytes;
  }

  /// The values of float tensor `tensor` (F64, F32, F16 or BF16) converted to fp32 (F64
  /// rounded; the others exact). @throws safetensors_error for another dtype, or a read error.
  [[nodiscard]] std::vector<float> read_floats(tensor_info const& tensor) const
  {
    if (!is_float(tensor.dtype)) {
      throw fail("tensor '" + tensor.name + "': dtype " + std::string(to_string(tensor.dtype)) +
                 " is not a float type (F64, F32, F16 or BF16)");
    }
    std::vector<std::byte> const bytes = read_bytes(tensor);
    std::vector<float> values(static_cast<std::size_t>(tensor.elements()));
    for (std::size_t i = 0; i < values.size(); ++i) {
      values[i] = element_to_float(tensor.dtype, bytes.data() + i * size_of(tensor.dtype));
    }
    return values;
  }

 private:
  safetensors_file() = default;

  [[nodiscard]] safetensors_error fail(std::string const& why) const
  {
    return safetensors_error(path_.string() + ": " + why);
  }

  [[nodiscard]] static float element_to_float(tensor_dtype dtype, std::byte const* at) noexcept
  {
    switch (dtype) {
      case tensor_dtype::f64:
        return static_cast<float>(load<double>(at));
      case tensor_dtype::f16:
        return fp16_to_float(load<std::uint16_t>(at));
      case tensor_dtype::bf16:
        return bf16_to_float(load<std::uint16_t>(at));
      default:
        return load<float>(at);
    }
  }

  template <class T>
  [[nodiscard]] static T load(std::byte const* at) noexcept
  {
    T value;
    std::memcpy(&value, at, sizeof(T));
    return value;
  }

  /// Parses and validates the JSON header; fills tensors_ and metadata_.
  void parse_header(std::string const& header)
  {
    nlohmann::json json;
    try {
      json = nlohmann::json::parse(header);
    } catch (nlohmann::json::exception const& error) {
      throw fail(std::string("bad JSON header: ") + error.what());
    }
    if (!json.is_object()) {
      throw fail("bad JSON header: expected an object, got " + std::string(json.type_name()));
    }
    for (auto const& [name, entry] : json.items()) {
      if (name == "__metadata__") {
        parse_metadata(entry);
      } else {
        tensors_.push_back(parse_tensor(name, entry));
      }
    }
    check_layout();
  }

  void parse_metadata(nlohmann::json const& entry)
  {
    if (!entry.is_object()) { throw fail("__metadata__: expected an object of strings"); }
    for (auto const& [key, value] : entry.items()) {
      if (!value.is_string()) {
        throw fail("__metadata__: value of '" + key + "' is " + value.dump() +
                   ", expected a string");
      }
      metadata_[key] = value.get<std::string>();
    }
  }

  /// One tensor's entry: dtype known, shape and offsets non-negative integers, size right.
  [[nodiscard]] tensor_info parse_tensor(std::string const& name, nlohmann::json const& entry) const
  {
    auto const bad = [&](std::string const& why) { return fail("tensor '" + name + "': " + why); };
    if (!entry.is_object()) { throw bad("expected an object, got " + entry.dump()); }
    tensor_info tensor;
    tensor.name  = name;
    tensor.dtype = parse_dtype(name, entry.value("dtype", nlohmann::json()));
    tensor.shape = unsigned_list(name, entry, "shape");
    std::vector<std::uint64_t> const offsets = unsigned_list(name, entry, "data_offsets");
    if (offsets.size() != 2 || offsets[0] > offsets[1]) {
      throw bad("data_offsets " + entry["data_offsets"].dump() +
                ": expected [begin, end], "
                "begin <= end");
    }
    tensor.begin = offsets[0];
    tensor.end   = offsets[1];
    if (tensor.end > data_bytes_) {
      throw bad("data_offsets " + entry["data_offsets"].dump() + " out of range: the data has " +
                std::to_string(data_bytes_) + " bytes");
    }
    std::uint64_t expected = size_of(tensor.dtype);
    for (std::uint64_t extent : tensor.shape) {
      if (extent != 0 && expected > std::numeric_limits<std::uint64_t>::max() / extent) {
        throw bad("shape " + entry["shape"].dump() + " overflows 64 bits of bytes");
      }
      expected *= extent;
    }
    if (tensor.bytes() != expected) {
      throw bad("data_offsets " + entry["data_offsets"].dump() + " hold " +
                std::to_string(tensor.bytes()) + " bytes, but shape " + entry["shape"].dump() +
                " of " + std::string(to_string(tensor.dtype)) + " needs " +
                std::to_string(expected));
    }
    return tensor;
  }

  [[nodiscard]] tensor_dtype parse_dtype(std::string const& name, nlohmann::json const& dtype) const
  {
    if (!dtype.is_string()) {
      throw fail("tensor '" + name + "': dtype " + dtype.dump() + ", expected a string");
    }
    auto const text = dtype.get<std::string>();
    for (detail::dtype_row const& row : detail::dtype_table) {
      if (row.name == text) { return row.dtype; }
    }
    if (std::find(detail::sub_byte_dtypes.begin(), detail::sub_byte_dtypes.end(), text) !=
        detail::sub_byte_dtypes.end()) {
      throw fail("tensor '" + name + "': dtype '" + text + "' (below a byte) is not supported");
    }
    throw fail("tensor '" + name + "': unknown dtype '" + text + "'");
  }

  /// entry[key] as a list of non-negative integers.
  [[nodiscard]] std::vector<std::uint64_t> unsigned_list(std::string const& name,
                                                         nlohmann::json const& entry,
                                                         char const* key) const
  {
    auto const found = entry.find(key);
    if (found == entry.end() || !found->is_array()) {
      throw fail("tensor '" + name + "': " + key + " missing or not a list");
    }
    std::vector<std::uint64_t> values;
    for (nlohmann::json const& value : *found) {
      if (!value.is_number_unsigned()) {
        throw fail("tensor '" + name + "': " + key + " " + found->dump() +
                   ": expected non-negative integers");
      }
      values.push_back(value.get<std::uint64_t>());
    }
    return values;
  }

  /// Sorts the tensors by offset; no overlap, and every data byte in some tensor.
  void check_layout()
  {
    std::sort(tensors_.begin(), tensors_.end(), [](tensor_info const& a, tensor_info const& b) {
      return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
    });
    std::uint64_t covered = 0;  // data bytes [0, covered) belong to the tensors so far
    std::string_view last;      // the tensor that ends at `covered`
    for (tensor_info const& tensor : tensors_) {
      if (tensor.begin < covered) {
        throw fail("tensor '" + tensor.name + "': bytes [" + std::to_string(tensor.begin) + ", " +
                   std::to_string(tensor.end) + ") overlap tensor '" + std::string(last) +
                   "' (which ends at " + std::to_string(covered) + ")");
      }
      if (tensor.begin > covered) {
        throw fail("data bytes [" + std::to_string(covered) + ", " + std::to_string(tensor.begin) +
                   ") belong to no tensor (a hole before tensor '" + tensor.name + "')");
      }
      covered = tensor.end;
      last    = tensor.name;
    }
    if (covered != data_bytes_) {
      throw fail("data bytes [" + std::to_string(covered) + ", " + std::to_string(data_bytes_) +
                 ") after the last tensor belong to no tensor");
    }
  }

  std::filesystem::path path_;
  std::uint64_t data_offset_{0};
  std::uint64_t data_bytes_{0};
  std::vector<tensor_info> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace swapalloc::scenarios
