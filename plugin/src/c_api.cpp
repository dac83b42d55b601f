// The C ABI of libswapalloc.so (include/swapalloc/swapalloc.h): each function checks its
// arguments, finds the one instance, calls the allocator, and turns what it throws into a
// status and the thread's last error (abi_status.hpp). The facade routes; it does not think.
#include "abi_status.hpp"
#include "plugin_instance.hpp"
#include "plugin_settings.hpp"

#include <swapalloc/swapalloc.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>

namespace swapalloc::plugin {
namespace {

std::atomic<plugin_instance*> instance{nullptr};
plugin_settings pending;  // guarded by lifecycle_mutex()

/// The pool options of `options` (null: the defaults), checked field by field.
pool_options pool_options_of(swapalloc_pool_options const* options)
{
  pool_options out;
  if (options == nullptr) { return out; }
  auto const reject = [](char const* field, long long value, char const* accepted) {
    throw abi_error(SWAPALLOC_ERROR_INVALID_VALUE, std::string("swapalloc_pool_create: options->") +
                                                     field + " = " + std::to_string(value) +
                                                     " (accepted: " + accepted + ")");
  };
  if (options->priority < SWAPALLOC_PRIORITY_LOW ||
      options->priority > SWAPALLOC_PRIORITY_CRITICAL) {
    reject("priority", options->priority, "SWAPALLOC_PRIORITY_LOW (0) to _CRITICAL (3)");
  }
  if (options->dtype < SWAPALLOC_DTYPE_NONE || options->dtype > SWAPALLOC_DTYPE_INT8) {
    reject("dtype", options->dtype, "SWAPALLOC_DTYPE_NONE (0) to _INT8 (4)");
  }
  out.priority  = static_cast<pool_priority>(options->priority);
  out.dtype     = static_cast<dtype_hint>(options->dtype);
  out.evictable = options->evictable != 0;
  out.read_only = options->read_only != 0;
  out.capacity  = options->capacity;
  return out;
}

/// Throws abi_error (UNKNOWN_POOL) naming `function` unless `pool` exists.
void require_pool(allocator const& cache, swapalloc_pool_id pool, char const* function)
{
  if (!cache.has_pool(pool)) {
    throw abi_error(SWAPALLOC_ERROR_UNKNOWN_POOL, std::string("swapalloc: ") + function +
                                                    "(pool=" + std::to_string(pool) +
                                                    "): no such pool (never created, or "
                                                    "destroyed)");
  }
}

/// `bytes` as a size_t. @throws abi_error (INVALID_VALUE) for a negative count.
std::size_t size_of(ssize_t bytes, char const* function)
{
  if (bytes < 0) {
    throw abi_error(SWAPALLOC_ERROR_INVALID_VALUE, std::string("swapalloc: ") + function +
                                                     ": size " + std::to_string(bytes) +
                                                     " is negative (accepted: 0 or more bytes)");
  }
  return static_cast<std::size_t>(bytes);
}

/// The exit handler swapalloc_init registers (see there).
void stop_background_at_exit() noexcept
{
  if (plugin_instance* const self = current_instance()) { self->stop_background(); }
}

/// Stores `value` in `*out` when `out` is not null.
void store(std::size_t* out, std::size_t value) noexcept
{
  if (out != nullptr) { *out = value; }
}

}  // namespace

plugin_instance* current_instance() noexcept { return instance.load(std::memory_order_acquire); }

plugin_instance& require_instance(char const* function)
{
  plugin_instance* const self = current_instance();
  if (self == nullptr) {
    throw abi_error(SWAPALLOC_ERROR_NOT_INITIALIZED,
                    std::string("swapalloc: ") + function +
                      ": the allocator is not initialized: call swapalloc_init() first "
                      "(swapalloc.install() in Python)");
  }
  return *self;
}

std::mutex& lifecycle_mutex() noexcept
{
  static std::mutex mutex;
  return mutex;
}

}  // namespace swapalloc::plugin

using namespace swapalloc::plugin;  // NOLINT(google-build-using-namespace): this file is the ABI

extern "C" {

int swapalloc_abi_version(void) { return SWAPALLOC_ABI_VERSION; }

char const* swapalloc_last_error(void) { return last_error().c_str(); }

swapalloc_status swapalloc_last_status(void) { return last_status(); }

swapalloc_status swapalloc_configure(char const* key, char const* value)
{
  return guarded([&] {
    require_argument(key, "swapalloc_configure", "key");
    require_argument(value, "swapalloc_configure", "value");
    std::lock_guard const lock(lifecycle_mutex());
    if (current_instance() != nullptr) {
      throw abi_error(SWAPALLOC_ERROR_MISUSE,
                      std::string("swapalloc_configure(\"") + key +
                        "\"): the configuration is read at swapalloc_init, which has run: "
                        "configure before it (or after swapalloc_shutdown)");
    }
    plugin_settings changed = pending;  // nothing changes if the value is refused
    apply_setting(changed, key, value);
    pending = std::move(changed);
  });
}

swapalloc_status swapalloc_init(void)
{
  return guarded([] {
    std::lock_guard const lock(lifecycle_mutex());
    if (current_instance() != nullptr) { return; }
    auto made = std::make_unique<plugin_instance>(pending);
    instance.store(made.release(), std::memory_order_release);
    // A process that never shuts down (Python's) still stops our threads and removes its
    // stats file at exit. The allocator itself stays: tensors may outlive every exit handler.
    static bool const registered = std::atexit(stop_background_at_exit) == 0;
    (void)registered;
  });
}

int swapalloc_is_initialized(void) { return current_instance() != nullptr ? 1 : 0; }

swapalloc_status swapalloc_shutdown(void)
{
  return guarded([] {
    std::lock_guard const lock(lifecycle_mutex());
    std::unique_ptr<plugin_instance> const gone(&require_instance("swapalloc_shutdown"));
    instance.store(nullptr, std::memory_order_release);
  });
}

void* swapalloc_malloc(ssize_t size, int device, void* stream)
{
  void* out = nullptr;
  (void)guarded([&] {
    plugin_instance& self   = require_instance("swapalloc_malloc");
    std::size_t const bytes = size_of(size, "swapalloc_malloc");
    if (bytes == 0) { return; }  // PyTorch asks for 0 bytes and accepts NULL
    out = reinterpret_cast<void*>(self.allocate(bytes, device, static_cast<CUstream>(stream)));
  });
  return out;
}

void swapalloc_free(void* ptr, ssize_t size, int device, void* stream)
{
  if (ptr == nullptr) { return; }
  (void)guarded([&] {
    plugin_instance& self = require_instance("swapalloc_free");
    self.cache().deallocate(reinterpret_cast<CUdeviceptr>(ptr), size_of(size, "swapalloc_free"),
                            device, static_cast<CUstream>(stream));
  });
}

void swapalloc_hook_init(int device_count)
{
  if (swapalloc_init() != SWAPALLOC_SUCCESS) { return; }
  (void)guarded([&] {
    int const found = require_instance("swapalloc_hook_init").cache().device_count();
    // createCustomAllocator calls init with the device count torch knew then (0 before
    // its lazy CUDA init, CUDAPluggableAllocator.cpp): only a count it knows is checked.
    if (device_count > 0 && device_count != found) {
      throw abi_error(SWAPALLOC_ERROR_INVALID_VALUE,
                      "swapalloc_hook_init(device_count=" + std::to_string(device_count) +
                        "): the driver swapalloc loaded reports " + std::to_string(found) +
                        " devices (is the same driver in use?)");
    }
  });
}

void swapalloc_hook_reset(void) { (void)swapalloc_empty_cache(nullptr); }

void swapalloc_hook_memory_fraction(double fraction, int device)
{
  (void)guarded([&] {
    require_instance("swapalloc_hook_memory_fraction")
      .cache()
      .set_device_limit(device, swapalloc::device_limit{0, fraction});
  });
}

void swapalloc_hook_record_stream(void* ptr, void* stream)
{
  (void)guarded([&] {
    swapalloc::allocator& cache = require_instance("swapalloc_hook_record_stream").cache();
    // PyTorch passes no device: the block's own (device 0 for a pointer of none, whose
    // error then says what the pointer is).
    auto const address = reinterpret_cast<CUdeviceptr>(ptr);
    cache.record_stream(address, cache.device_of(address).value_or(0),
                        static_cast<CUstream>(stream));
  });
}

void swapalloc_pool_options_init(swapalloc_pool_options* options)
{
  if (options == nullptr) { return; }
  *options = swapalloc_pool_options{SWAPALLOC_PRIORITY_NORMAL, 1, 0, SWAPALLOC_DTYPE_NONE, 0};
}

swapalloc_status swapalloc_pool_create(char const* name, swapalloc_pool_options const* options,
                                       swapalloc_pool_id* pool)
{
  return guarded([&] {
    require_argument(name, "swapalloc_pool_create", "name");
    require_argument(pool, "swapalloc_pool_create", "pool");
    swapalloc::pool_options const made = pool_options_of(options);
    *pool = require_instance("swapalloc_pool_create").cache().create_pool(name, made);
  });
}

swapalloc_status swapalloc_pool_find(char const* name, swapalloc_pool_id* pool)
{
  return guarded([&] {
    require_argument(name, "swapalloc_pool_find", "name");
    require_argument(pool, "swapalloc_pool_find", "pool");
    auto const found = require_instance("swapalloc_pool_find").cache().lookup_pool(name);
    if (!found) {
      throw abi_error(SWAPALLOC_ERROR_UNKNOWN_POOL,
                      std::string("swapalloc_pool_find(\"") + name + "\"): no such pool");
    }
    *pool = *found;
  });
}

swapalloc_status swapalloc_pool_name(swapalloc_pool_id pool, char const** name)
{
  return guarded([&] {
    require_argument(name, "swapalloc_pool_name", "name");
    swapalloc::allocator& cache = require_instance("swapalloc_pool_name").cache();
    require_pool(cache, pool, "swapalloc_pool_name");
    thread_local std::string kept;
    kept  = cache.pool_name(pool);
    *name = kept.c_str();
  });
}

swapalloc_status swapalloc_pool_destroy(swapalloc_pool_id pool)
{
  return guarded([&] {
    swapalloc::allocator& cache = require_instance("swapalloc_pool_destroy").cache();
    require_pool(cache, pool, "swapalloc_pool_destroy");
    cache.destroy_pool(pool);
  });
}

swapalloc_status swapalloc_pool_push(swapalloc_pool_id pool)
{
  return guarded([&] {
    swapalloc::allocator& cache = require_instance("swapalloc_pool_push").cache();
    require_pool(cache, pool, "swapalloc_pool_push");
    cache.push_pool(pool);
  });
}

swapalloc_status swapalloc_pool_pop(void)
{
  return guarded([] { require_instance("swapalloc_pool_pop").cache().pop_pool(); });
}

swapalloc_status swapalloc_pool_current(swapalloc_pool_id* pool)
{
  return guarded([&] {
    require_argument(pool, "swapalloc_pool_current", "pool");
    *pool = require_instance("swapalloc_pool_current").cache().current_pool();
  });
}

swapalloc_status swapalloc_pool_set_read_only(swapalloc_pool_id pool, int read_only)
{
  return guarded([&] {
    swapalloc::allocator& cache = require_instance("swapalloc_pool_set_read_only").cache();
    require_pool(cache, pool, "swapalloc_pool_set_read_only");
    cache.set_read_only(pool, read_only != 0);
  });
}

swapalloc_status swapalloc_activate(swapalloc_pool_id pool, int device, void* stream)
{
  return guarded([&] {
    swapalloc::allocator& cache = require_instance("swapalloc_activate").cache();
    require_pool(cache, pool, "swapalloc_activate");
    (void)cache.activate(pool, device, static_cast<CUstream>(stream));
  });
}

swapalloc_status swapalloc_deactivate(swapalloc_pool_id pool, int device, void* stream)
{
  return guarded([&] {
    swapalloc::allocator& cache = require_instance("swapalloc_deactivate").cache();
    require_pool(cache, pool, "swapalloc_deactivate");
    cache.deactivate(pool, device, static_cast<CUstream>(stream));
  });
}

swapalloc_status swapalloc_evict(swapalloc_pool_id pool, int device, size_t* evicted_bytes)
{
  return guarded([&] {
    swapalloc::allocator& cache = require_instance("swapalloc_evict").cache();
    require_pool(cache, pool, "swapalloc_evict");
    store(evicted_bytes, cache.evict(pool, device).released_bytes);
  });
}

swapalloc_status swapalloc_prefetch(swapalloc_pool_id pool, int device)
{
  return guarded([&] {
    swapalloc::allocator& cache = require_instance("swapalloc_prefetch").cache();
    require_pool(cache, pool, "swapalloc_prefetch");
    (void)cache.prefetch(pool, device);
  });
}

swapalloc_status swapalloc_ensure_free(size_t bytes, int device, size_t* freed_bytes)
{
  return guarded([&] {
    swapalloc::allocator& cache = require_instance("swapalloc_ensure_free").cache();
    store(freed_bytes, cache.ensure_free(bytes, device).freed_bytes());
  });
}

swapalloc_status swapalloc_empty_cache(size_t* released_bytes)
{
  return guarded([&] {
    plugin_instance& self = require_instance("swapalloc_empty_cache");
    self.graphs().destroy_released(self.cache());
    store(released_bytes, self.cache().empty_cache());
  });
}

swapalloc_status swapalloc_stats_json(char const** json)
{
  return guarded([&] {
    require_argument(json, "swapalloc_stats_json", "json");
    thread_local std::string kept;
    kept  = require_instance("swapalloc_stats_json").cache().stats_json().dump();
    *json = kept.c_str();
  });
}

}  // extern "C"
