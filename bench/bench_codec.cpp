/**
 * @file bench_codec.cpp
 * @brief What the host tier's chunk codecs (codec.hpp) cost on one core and what they gain,
 *        per data kind, next to a plain memcpy of the same bytes.
 *
 * Each kind is 64 MiB (tests/support/data_kinds.hpp, fixed seeds; the real Silero VAD
 * weights, when present, repeated to 64 MiB: every 1 MiB chunk is still a distinct slice)
 * cut into 1 MiB chunks, encoded and decoded one chunk after another on one thread with one
 * codec_scratch, as one host-tier worker does. No driver is needed.
 *
 * Reading the results:
 *   BM_Codec/<kind>/<codec>    one iteration = encode every chunk, then decode every chunk
 *                              (checksums included, as the store does); the time column is
 *                              both passes.
 *     compress_bytes_per_second    raw bytes / time of the encode pass
 *     decompress_bytes_per_second  raw bytes / time of the decode pass
 *     ratio                        raw bytes / stored bytes (1 = every chunk stored raw;
 *                                  chunks that gain under 5% are stored raw)
 *   BM_Memcpy/<kind>           std::memcpy of the 64 MiB: bytes_per_second, the baseline.
 *   BM_Checksum/<kind>/<hash>  the chunks' checksums only: xxh64 (what the store computes,
 *                              codec.hpp `checksum`) and xxh3 (XXH3_64bits, the candidate of
 *                              ../shared/notes/gpu-speed.md §3.4): bytes_per_second per core.
 *
 * Exit status: 0 done; 1 an unrecognized option or a failure (a round trip that does not
 * restore the data is reported as that benchmark's error).
 */
#include <swapalloc/codec.hpp>

#include "data_kinds.hpp"

#include <benchmark/benchmark.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace {

using swapalloc::codec_id;
using swapalloc::max_chunk_bytes;

constexpr std::size_t data_bytes = std::size_t{64} << 20;
constexpr std::size_t chunks     = data_bytes / max_chunk_bytes;

/// A data kind: its name and how to make its 64 MiB.
struct data_source {
  std::string name;
  std::function<std::vector<std::byte>()> make;
};

/// `data` repeated (and cut) to data_bytes.
std::vector<std::byte> tiled(std::vector<std::byte> const& data)
{
  std::vector<std::byte> out(data_bytes);
  for (std::size_t offset = 0; offset < data_bytes; offset += data.size()) {
    std::memcpy(out.data() + offset, data.data(), std::min(data.size(), data_bytes - offset));
  }
  return out;
}

/**
 * The data of the kind being measured. Benchmarks run kind after kind, so one kind's
 * 64 MiB is kept at a time and made again only when the kind changes.
 */
class data_cache {
 public:
  std::vector<std::byte> const& get(data_source const& source)
  {
    if (name_ != source.name) {
      data_.clear();
      data_.shrink_to_fit();
      data_ = source.make();
      name_ = source.name;
    }
    return data_;
  }

 private:
  std::string name_;
  std::vector<std::byte> data_;
};

double seconds_since(std::chrono::steady_clock::time_point start)
{
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void bm_memcpy(benchmark::State& state, data_cache& cache, data_source const& source)
{
  std::vector<std::byte> const& data = cache.get(source);
  std::vector<std::byte> target(data.size());
  std::memcpy(target.data(), data.data(), data.size());  // first touch outside the timing
  for (auto _ : state) {
    std::memcpy(target.data(), data.data(), data.size());
    benchmark::DoNotOptimize(target.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * data.size()));
}

/// Checksums every 1 MiB chunk of the kind's data, with the store's XXH64 or with XXH3.
void bm_checksum(benchmark::State& state, data_cache& cache, data_source const& source, bool xxh3)
{
  std::vector<std::byte> const& data = cache.get(source);
  std::span<std::byte const> const all(data);
  for (auto _ : state) {
    std::uint64_t sum = 0;
    for (std::size_t at = 0; at < all.size(); at += max_chunk_bytes) {
      std::span<std::byte const> const chunk = all.subspan(at, max_chunk_bytes);
      sum ^= xxh3 ? XXH3_64bits(chunk.data(), chunk.size()) : swapalloc::checksum(chunk);
    }
    benchmark::DoNotOptimize(sum);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * data.size()));
}

void bm_codec(benchmark::State& state, data_cache& cache, data_source const& source, codec_id codec)
{
  std::vector<std::byte> const& data = cache.get(source);
  swapalloc::codec_scratch scratch;
  std::vector<std::byte> stored(chunks * swapalloc::max_stored_bytes(max_chunk_bytes));
  std::vector<swapalloc::chunk_header> headers(chunks);
  std::vector<std::byte> restored(data.size());
  std::span<std::byte const> const raw(data);

  auto const encode_all = [&] {
    for (std::size_t c = 0; c < chunks; ++c) {
      headers[c] = swapalloc::encode_chunk(
        codec, raw.subspan(c * max_chunk_bytes, max_chunk_bytes),
        std::span(stored).subspan(c * max_chunk_bytes, max_chunk_bytes), scratch);
    }
  };
  auto const decode_all = [&] {
    for (std::size_t c = 0; c < chunks; ++c) {
      swapalloc::decode_chunk(
        headers[c], std::span(stored).subspan(c * max_chunk_bytes, headers[c].stored_bytes),
        std::span(restored).subspan(c * max_chunk_bytes, max_chunk_bytes), scratch);
    }
  };
  // One untimed round trip: first touch of every buffer, and a check that it restores.
  try {
    encode_all();
    decode_all();
  } catch (std::exception const& error) {
    state.SkipWithError(error.what());
    return;
  }
  if (restored != data) {
    state.SkipWithError("the round trip did not restore the data");
    return;
  }
  std::size_t stored_total = 0;
  for (swapalloc::chunk_header const& header : headers) {
    stored_total += header.stored_bytes;
  }

  double compress_seconds   = 0;
  double decompress_seconds = 0;
  for (auto _ : state) {
    auto const start = std::chrono::steady_clock::now();
    encode_all();
    double const encoded = seconds_since(start);
    auto const middle    = std::chrono::steady_clock::now();
    decode_all();
    double const decoded = seconds_since(middle);
    benchmark::DoNotOptimize(restored.data());
    compress_seconds += encoded;
    decompress_seconds += decoded;
    state.SetIterationTime(encoded + decoded);
  }
  auto const bytes = static_cast<double>(state.iterations()) * static_cast<double>(data.size());
  state.counters["compress_bytes_per_second"]   = bytes / compress_seconds;
  state.counters["decompress_bytes_per_second"] = bytes / decompress_seconds;
  state.counters["ratio"] =
    stored_total == 0 ? 0.0 : static_cast<double>(data.size()) / static_cast<double>(stored_total);
}

/// The generated kinds, then the real weights when the file is there.
std::vector<data_source> data_sources()
{
  std::vector<data_source> sources;
  sources.reserve(swapalloc::testing::all_data_kinds.size() + 2);
  for (swapalloc::testing::data_kind const kind : swapalloc::testing::all_data_kinds) {
    sources.push_back({std::string(to_string(kind)),
                       [kind] { return swapalloc::testing::make_data(kind, data_bytes, 2024); }});
  }
  if (swapalloc::testing::load_real_weights_fp32()) {
    sources.push_back(
      {"real_fp32", [] { return tiled(*swapalloc::testing::load_real_weights_fp32()); }});
    sources.push_back(
      {"real_bf16", [] { return tiled(*swapalloc::testing::load_real_weights_bf16()); }});
  }
  return sources;
}

}  // namespace

// No driver is involved, so no bench_main.hpp: the same exit statuses without loading one.
int main(int argc, char** argv)
{
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) { return 1; }
  try {
    benchmark::AddCustomContext("chunk_bytes", std::to_string(max_chunk_bytes));
    benchmark::AddCustomContext("data_bytes_per_kind", std::to_string(data_bytes));
    benchmark::AddCustomContext(
      "zstd", swapalloc::codec_available(codec_id::zstd) ? "available" : "not in this build");
    data_cache cache;
    std::vector<data_source> const sources = data_sources();
    for (data_source const& source : sources) {
      benchmark::RegisterBenchmark(
        ("BM_Memcpy/" + source.name).c_str(),
        [&cache, &source](benchmark::State& state) { bm_memcpy(state, cache, source); })
        ->Unit(benchmark::kMillisecond);
      for (bool const xxh3 : {false, true}) {
        benchmark::RegisterBenchmark(
          ("BM_Checksum/" + source.name + (xxh3 ? "/xxh3" : "/xxh64")).c_str(),
          [&cache, &source, xxh3](benchmark::State& state) {
            bm_checksum(state, cache, source, xxh3);
          })
          ->Unit(benchmark::kMillisecond);
      }
      for (codec_id const codec : swapalloc::all_codecs) {
        if (codec == codec_id::zero || !swapalloc::codec_available(codec)) { continue; }
        std::string const name = "BM_Codec/" + source.name + "/" + std::string(to_string(codec));
        benchmark::RegisterBenchmark(name.c_str(),
                                     [&cache, &source, codec](benchmark::State& state) {
                                       bm_codec(state, cache, source, codec);
                                     })
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
      }
    }
    benchmark::RunSpecifiedBenchmarks();
  } catch (std::exception const& error) {
    std::fprintf(stderr, "bench_codec: %s\n", error.what());
    return 1;
  }
  benchmark::Shutdown();
  return 0;
}
