// tests/plugin/stats_json.hpp: reading swapalloc_stats_json's text, for the plugin's tests and
// the programs run under it (c_api_test.cpp, preload/cuda_program.cpp,
// torch/libtorch_program.cpp).
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace swapalloc_test {

/// The entry of pool `name` on device 0 in `stats_text` (swapalloc_stats_json's JSON), or an
/// empty object when there is none. @throws nlohmann::json::exception for malformed text.
inline nlohmann::json pool_entry(char const* stats_text, std::string const& name)
{
  nlohmann::json const stats = nlohmann::json::parse(stats_text);  // outlives the loop below
  for (auto const& pool : stats.at("devices").at(0).at("pools")) {
    if (pool.at("name") == name) { return pool; }
  }
  return nlohmann::json::object();
}

}  // namespace swapalloc_test
