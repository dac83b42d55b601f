/**
 * @file config.hpp
 * @brief The simulator's settings, read from the environment at the first cuInit.
 *
 * The variables are documented in cudasim.h. A malformed value is an error, never a
 * silent default: cuInit fails with CUDA_ERROR_INVALID_VALUE and the message names the
 * variable, the value and what is accepted.
 */
#pragma once

#include <cstddef>
#include <string>
#include <variant>

namespace cudasim {

struct config {
  std::size_t memory   = std::size_t{8} << 30;  ///< SWAPALLOC_SIM_MEMORY (the seeds' RTX 2070)
  int devices          = 1;                     ///< SWAPALLOC_SIM_DEVICES
  std::size_t external = 0;                     ///< SWAPALLOC_SIM_EXTERNAL
  double link_gbps     = 0;                     ///< SWAPALLOC_SIM_LINK_GBPS, 0: unthrottled
  bool strict          = false;                 ///< SWAPALLOC_SIM_STRICT
  bool quiet           = false;                 ///< SWAPALLOC_SIM_QUIET
  std::string profile;                          ///< SWAPALLOC_SIM_PROFILE, empty: none
  double time_scale = 50;                       ///< SWAPALLOC_SIM_TIME_SCALE

  static constexpr int max_devices = 16;
};

/// The configuration from the environment, or the message describing a malformed value.
[[nodiscard]] std::variant<config, std::string> read_config();

}  // namespace cudasim
