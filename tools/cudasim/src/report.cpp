/**
 * @file report.cpp
 * @brief The census of live objects (cudasimGetCensus) and the exit handler: it stops
 *        and joins every stream worker, then reports what is still held.
 *
 * The report is what makes leaks visible: pinned host memory never given back
 * (torch_memory_saver issue 90, vllm issue 16663), host ranges registered and never
 * unregistered, handles and mappings left behind.
 * With SWAPALLOC_SIM_STRICT=1 a leak makes the process exit with status 3, so a test
 * suite run in strict mode fails on a leak. Retained primary contexts are not leaks:
 * the CUDA runtime and PyTorch keep theirs until exit.
 *
 * The workers are joined before the process goes on to destroy static objects, so no
 * simulator thread ever runs into static destruction (and sanitizers stay quiet).
 */
#include "state.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace cudasim {
namespace {

/// Everything still held, kind by kind.
struct leaks {
  vmm_census vmm;
  held host;
  held registrations;  ///< cuMemHostRegister ranges not unregistered
  held streams;
  held events;
  std::size_t physical_bytes = 0;  ///< device bytes allocated, released handles included

  [[nodiscard]] bool any() const noexcept
  {
    return vmm.handles.count + vmm.reservations.count + vmm.mappings.count + host.count +
             registrations.count + streams.count + events.count >
           0;
  }
};

template <class Object>
[[nodiscard]] held live_handles(handle_registry<Object> const& registry)
{
  held objects;
  for (auto const& object : registry.all()) {
    objects.add(reinterpret_cast<std::uintptr_t>(object.get()), 0);
  }
  return objects;
}

[[nodiscard]] leaks take_census()
{
  simulator& sim = simulator::get();
  leaks l{sim.vmm().census(), sim.host().census(), sim.host().registrations_census(),
          live_handles(sim.streams()), live_handles(sim.events())};
  for (int ordinal = 0; ordinal < sim.device_count(); ++ordinal) {
    l.physical_bytes += sim.find_device(ordinal)->used.load(std::memory_order_relaxed);
  }
  return l;
}

/// Stops every worker (created, legacy, destroyed-but-draining) and joins it. Queued
/// work is skipped: the process is exiting, and nothing may wait on it any more.
void stop_workers()
{
  simulator& sim                                    = simulator::get();
  std::vector<std::shared_ptr<CUstream_st>> streams = sim.streams().all();
  for (int ordinal = 0; ordinal < sim.device_count(); ++ordinal) {
    if (auto legacy = sim.find_device(ordinal)->context.started_legacy_stream()) {
      streams.push_back(std::move(legacy));
    }
  }
  for (auto const& stream : streams) {
    stream->retire(true);
  }
  sim.graveyard().join_all();
  for (auto const& stream : streams) {
    stream->join();
  }
}

/// One report line: "2 mappings not unmapped (cuMemUnmap): 4194304 bytes at 0x7f.., 0x7f..".
void report(held const& kind, char const* one, char const* many, char const* what, bool sized)
{
  if (kind.count == 0) { return; }
  std::fprintf(stderr, "cudasim: at exit: %zu %s %s", kind.count, kind.count == 1 ? one : many,
               what);
  if (sized) { std::fprintf(stderr, ": %zu bytes", kind.bytes); }
  for (std::size_t i = 0; i < kind.examples.size(); ++i) {
    std::fprintf(stderr, "%s0x%llx", i == 0 ? (sized ? " at " : ": ") : ", ",
                 static_cast<unsigned long long>(kind.examples[i]));
  }
  if (kind.count > kind.examples.size()) {
    std::fprintf(stderr, " and %zu more", kind.count - kind.examples.size());
  }
  std::fprintf(stderr, "\n");
}

void exit_handler()
{
  simulator& sim = simulator::get();
  sim.begin_shutdown();
  stop_workers();
  leaks const l = take_census();
  if (!l.any()) {
    if (!sim.settings().quiet) { std::fprintf(stderr, "cudasim: at exit: nothing leaked\n"); }
    return;
  }
  report(l.vmm.handles, "memory handle", "memory handles", "not released (cuMemRelease)", true);
  report(l.vmm.reservations, "address reservation", "address reservations",
         "not freed (cuMemAddressFree)", true);
  report(l.vmm.mappings, "mapping", "mappings", "not unmapped (cuMemUnmap)", true);
  report(l.host, "pinned host allocation", "pinned host allocations", "not freed (cuMemFreeHost)",
         true);
  report(l.registrations, "host registration", "host registrations",
         "not unregistered (cuMemHostUnregister)", true);
  report(l.streams, "stream", "streams", "not destroyed (cuStreamDestroy)", false);
  report(l.events, "event", "events", "not destroyed (cuEventDestroy)", false);
  if (l.physical_bytes > 0) {
    std::fprintf(stderr, "cudasim: at exit: %zu bytes of device memory still allocated\n",
                 l.physical_bytes);
  }
  if (sim.settings().strict) {
    std::fprintf(stderr,
                 "cudasim: SWAPALLOC_SIM_STRICT=1: exiting with status 3 because of the leaks "
                 "above\n");
    std::fflush(stderr);
    ::_exit(3);
  }
}

}  // namespace

void install_exit_handler() noexcept { std::atexit(exit_handler); }

}  // namespace cudasim

void cudasimGetCensus(cudasim_census* out)
{
  if (out == nullptr) { return; }
  *out = cudasim_census{};
  if (!cudasim::simulator::get().initialized()) { return; }
  cudasim::leaks const l     = cudasim::take_census();
  out->handles               = l.vmm.handles.count;
  out->physical_bytes        = l.physical_bytes;
  out->reservations          = l.vmm.reservations.count;
  out->mappings              = l.vmm.mappings.count;
  out->host_allocations      = l.host.count;
  out->host_bytes            = l.host.bytes;
  out->host_registrations    = l.registrations.count;
  out->host_registered_bytes = l.registrations.bytes;
  out->streams               = l.streams.count;
  out->events                = l.events.count;
}
