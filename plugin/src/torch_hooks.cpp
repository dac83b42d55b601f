// PyTorch's private-pool hooks (include/swapalloc/swapalloc.h, C++ section): their
// parameters are C++ types, so they live in this translation unit, built with the same
// libstdc++ ABI as torch. The state is graph_pools.hpp's.
#include "abi_status.hpp"
#include "plugin_instance.hpp"

#include <swapalloc/swapalloc.h>

#include <stdexcept>
#include <string>
#include <utility>

using namespace swapalloc::plugin;  // NOLINT(google-build-using-namespace): this file is the ABI

namespace {

/// What swapalloc_torch_malloc throws into PyTorch: the C ABI's message (an out-of-memory
/// report with the pool table and advice, or what else failed).
class torch_allocation_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string id_text(mempool_id id)
{
  return "(" + std::to_string(id.first) + ", " + std::to_string(id.second) + ")";
}

}  // namespace

extern "C" {

void* swapalloc_torch_malloc(ssize_t size, int device, CUstream_st* stream)
{
  void* const out = swapalloc_malloc(size, device, stream);
  if (out == nullptr && size > 0) { throw torch_allocation_error(last_error()); }
  return out;
}

void swapalloc_hook_begin_allocate_to_pool(int device, mempool_id id,
                                           std::function<bool(CUstream_st*)> filter)
{
  (void)guarded([&] {
    plugin_instance& self = require_instance("swapalloc_hook_begin_allocate_to_pool");
    if (!filter) {
      throw abi_error(SWAPALLOC_ERROR_INVALID_VALUE, "swapalloc_hook_begin_allocate_to_pool(pool " +
                                                       id_text(id) +
                                                       "): the stream filter is empty");
    }
    self.graphs().begin(self.cache(), device, id, std::move(filter));
  });
}

void swapalloc_hook_end_allocate_to_pool(int device, mempool_id id)
{
  (void)guarded([&] {
    if (!require_instance("swapalloc_hook_end_allocate_to_pool").graphs().end(device, id)) {
      throw abi_error(SWAPALLOC_ERROR_MISUSE,
                      "swapalloc_hook_end_allocate_to_pool(device=" + std::to_string(device) +
                        ", pool " + id_text(id) + "): no allocation to that pool was begun");
    }
  });
}

void swapalloc_hook_release_pool(int device, mempool_id id)
{
  (void)guarded([&] {
    plugin_instance& self = require_instance("swapalloc_hook_release_pool");
    if (!self.graphs().release(self.cache(), device, id)) {
      throw abi_error(SWAPALLOC_ERROR_UNKNOWN_POOL,
                      "swapalloc_hook_release_pool(device=" + std::to_string(device) + ", pool " +
                        id_text(id) + "): no such pool");
    }
  });
}

}  // extern "C"
