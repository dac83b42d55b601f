/**
 * @file state.cpp
 * @brief The simulator's lifecycle (cuInit, shutdown) and the entry-point prologue.
 */
#include "state.hpp"

#include "profile.hpp"

#include <algorithm>
#include <cstdio>
#include <string>
#include <variant>

namespace cudasim {

thread_local bool in_host_function = false;

std::size_t device::free_bytes() const noexcept
{
  std::size_t const taken =
    external.load(std::memory_order_relaxed) + used.load(std::memory_order_relaxed);
  return taken >= capacity ? 0 : capacity - taken;
}

simulator& simulator::get()
{
  // Deliberately never destroyed (see state.hpp).
  static simulator* const instance = new simulator();
  return *instance;
}

CUresult simulator::initialize()
{
  std::lock_guard lock(init_mutex_);
  if (initialized()) { return CUDA_SUCCESS; }
  if (std::string const& error = faults().environment_error(); !error.empty()) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return CUDA_ERROR_INVALID_VALUE;
  }
  auto read = read_config();
  if (auto const* const error = std::get_if<std::string>(&read)) {
    std::fprintf(stderr, "%s\n", error->c_str());
    return CUDA_ERROR_INVALID_VALUE;
  }
  config_ = std::get<config>(read);
  devices_.reserve(static_cast<std::size_t>(config_.devices));
  for (int ordinal = 0; ordinal < config_.devices; ++ordinal) {
    devices_.push_back(std::make_unique<device>(ordinal, config_.memory, config_.external));
  }
  set_link_bandwidth(config_.link_gbps);
  if (!config_.profile.empty()) {
    auto loaded = load_profile(config_.profile);
    if (auto const* const error = std::get_if<std::string>(&loaded)) {
      std::fprintf(stderr, "%s\n", error->c_str());
      return CUDA_ERROR_INVALID_VALUE;
    }
    activate_profile(std::get<cost_profile>(loaded), config_.time_scale);
  }
  install_exit_handler();
  initialized_.store(true, std::memory_order_release);
  return CUDA_SUCCESS;
}

device* simulator::find_device(CUdevice ordinal) noexcept
{
  if (ordinal < 0 || ordinal >= device_count()) { return nullptr; }
  return devices_[static_cast<std::size_t>(ordinal)].get();
}

CUctx_st* simulator::find_context(CUcontext handle) noexcept
{
  auto const found = std::find_if(devices_.begin(), devices_.end(),
                                  [handle](auto const& d) { return &d->context == handle; });
  return found == devices_.end() ? nullptr : &(*found)->context;
}

CUresult enter(entry e, bool requires_init) noexcept
{
  if (CUresult const injected = faults().on_call(e); injected != CUDA_SUCCESS) { return injected; }
  if (in_host_function) { return CUDA_ERROR_NOT_PERMITTED; }
  simulator const& sim = simulator::get();
  if (sim.shut_down()) { return CUDA_ERROR_DEINITIALIZED; }
  if (requires_init && !sim.initialized()) { return CUDA_ERROR_NOT_INITIALIZED; }
  if (!charged_by_size(e)) { charge(e, 0); }  // sized calls charge in their bodies
  return CUDA_SUCCESS;
}

CUctx_st*& current_context() noexcept
{
  thread_local CUctx_st* current = nullptr;
  return current;
}

CUresult use_context(CUctx_st const& context) noexcept
{
  if (!context.active()) { return CUDA_ERROR_INVALID_CONTEXT; }
  return context.sticky_error();
}

CUresult use_current_context(CUctx_st*& out) noexcept
{
  out = current_context();
  if (out == nullptr) { return CUDA_ERROR_INVALID_CONTEXT; }
  return use_context(*out);
}

device& device_of(CUctx_st const& context) noexcept
{
  return *simulator::get().find_device(context.device());
}

}  // namespace cudasim
