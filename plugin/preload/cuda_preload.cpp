// libswapalloc_preload.so: swapalloc for programs that cannot be changed (DESIGN §9, mode 3).
//
//   LD_PRELOAD=/path/to/libswapalloc_preload.so python script.py
//
// It defines the CUDA runtime's cudaMalloc, cudaFree, cudaMallocAsync and cudaFreeAsync. The
// dynamic loader binds a program's calls to them (an unversioned definition in a preloaded
// library satisfies the versioned imports of libcudart.so.13, ../shared/notes/torch-2.15.md §6),
// and they allocate in a swapalloc pool of libswapalloc.so, the one process-wide allocator.
// Everything else, and every pointer that is not swapalloc's, goes to the real runtime, found
// with dlsym(RTLD_NEXT, ...): this library has no NEEDED libcudart, because with one torch 2.15
// silently switches to another runtime, or the process dies at load where none is on the
// loader's path (sglang issue 36533; torch_memory_saver's fix for CUDA 13 wheels).
//
// The pool: the calling thread's current pool when the program pushed one through the C ABI
// (swapalloc_pool_push), else the pool named by SWAPALLOC_POOL (default "preload"), created at
// the first allocation. That pool is activated on each device at its first allocation and stays
// active, so that the policy never evicts it by itself: the program does not say when its GPU
// work uses its memory (the contract of DESIGN §6). A controller that knows the program is idle
// (a second thread through the C ABI or the Python package) deactivates it, evicts it, and
// activates it again, which restores it at the same addresses, before the program resumes.
//
// What it does not see: allocations that bypass the runtime's cudaMalloc (cuBLAS workspaces,
// cuDNN, NCCL, cudaMallocManaged, cudaMallocHost, driver calls such as cuMemAlloc or
// cuMemCreate); with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True torch maps its memory
// through driver entry points itself, so the interposer refuses to load then (exit status 78,
// EX_CONFIG) rather than see nothing.
//
// Semantics kept from the runtime: cudaFree(NULL) and cudaMalloc(p, 0) go to the runtime (the
// first initializes its context); cudaFree waits for the device first, as the runtime's
// implicit synchronization does; cudaFreeAsync on another stream than the allocation's
// delays the block's reuse until that stream's work before the free is done (record_stream).
// A failure returns the runtime's error code and prints swapalloc's message (with the pool
// table for out-of-memory) on stderr; the runtime's last-error state is not set by it.
// Thread safety: every function may be called from any thread.
#include <swapalloc/swapalloc.h>

#include <cuda_runtime_api.h>  // types and signatures only: nothing of libcudart is linked

#include <dlfcn.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

/// The real runtime's functions, after this library in the loader's lookup order.
struct real_runtime {
  using malloc_fn       = cudaError_t (*)(void**, size_t);
  using free_fn         = cudaError_t (*)(void*);
  using malloc_async_fn = cudaError_t (*)(void**, size_t, cudaStream_t);
  using free_async_fn   = cudaError_t (*)(void*, cudaStream_t);
  using get_device_fn   = cudaError_t (*)(int*);
  using synchronize_fn  = cudaError_t (*)();

  malloc_fn malloc{next<malloc_fn>("cudaMalloc")};
  free_fn free{next<free_fn>("cudaFree")};
  malloc_async_fn malloc_async{next<malloc_async_fn>("cudaMallocAsync")};
  free_async_fn free_async{next<free_async_fn>("cudaFreeAsync")};
  get_device_fn get_device{next<get_device_fn>("cudaGetDevice")};
  synchronize_fn device_synchronize{next<synchronize_fn>("cudaDeviceSynchronize")};

  template <class F>
  static F next(char const* name) noexcept
  {
    return reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
  }
};

real_runtime const& real()
{
  static real_runtime const runtime;  // resolved at the first call, not at load
  return runtime;
}

/// One of swapalloc's blocks as the runtime calls see it: what swapalloc_free needs back.
struct block {
  std::size_t bytes{0};
  int device{0};
  cudaStream_t stream{nullptr};
};

/// The blocks handed out, by address: cudaFree gives no size, swapalloc_free needs it.
/// Cost: one short lock and a hash lookup per cudaMalloc and cudaFree (not a hot path: a
/// caching allocator above, such as torch's, calls them per segment).
class block_table {
 public:
  void insert(void* ptr, block const& b)
  {
    std::lock_guard lock(mutex_);
    blocks_.emplace(ptr, b);
  }
  [[nodiscard]] std::optional<block> take(void* ptr)
  {
    std::lock_guard lock(mutex_);
    auto const found = blocks_.find(ptr);
    if (found == blocks_.end()) { return std::nullopt; }
    block const b = found->second;
    blocks_.erase(found);
    return b;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<void*, block> blocks_;
};

void say(std::string const& what)
{
  std::fprintf(stderr, "swapalloc preload: %s: %s\n", what.c_str(), swapalloc_last_error());
}

/// The interposer's state: the pool, the devices it is active on, the blocks.
class preload_state {
 public:
  /// The one instance, in this library (never in a header). Never destroyed: a program's
  /// static destructors may still call cudaFree after this library's would have run.
  static preload_state& instance()
  {
    static auto* const state = new preload_state;  // NOLINT(cppcoreguidelines-owning-memory)
    return *state;
  }

  cudaError_t allocate(void** ptr, std::size_t bytes, cudaStream_t stream)
  {
    int device = 0;
    if (cudaError_t const e = real().get_device(&device); e != cudaSuccess) { return e; }
    std::optional<swapalloc_pool_id> const pool = pool_for_this_call(device);
    if (!pool) { return cudaErrorInitializationError; }
    if (*pool != SWAPALLOC_DEFAULT_POOL && swapalloc_pool_push(*pool) != SWAPALLOC_SUCCESS) {
      say("cannot scope the allocation to the pool");
      return cudaErrorInitializationError;
    }
    void* const out = swapalloc_malloc(static_cast<ssize_t>(bytes), device, stream);
    if (out == nullptr) { say("cudaMalloc(" + std::to_string(bytes) + " bytes) failed"); }
    if (*pool != SWAPALLOC_DEFAULT_POOL) { (void)swapalloc_pool_pop(); }
    if (out == nullptr) { return cudaErrorMemoryAllocation; }
    blocks_.insert(out, block{bytes, device, stream});
    *ptr = out;
    return cudaSuccess;
  }

  /// Frees `ptr` if it is swapalloc's: std::nullopt when it is not (the runtime's then).
  std::optional<cudaError_t> release(void* ptr, cudaStream_t stream, bool asynchronous)
  {
    std::optional<block> const b = blocks_.take(ptr);
    if (!b) { return std::nullopt; }
    if (!asynchronous && real().device_synchronize != nullptr) {
      if (cudaError_t const e = real().device_synchronize(); e != cudaSuccess) {
        blocks_.insert(ptr, *b);  // still in use as far as anyone knows: nothing freed
        return e;
      }
    }
    if (asynchronous && stream != b->stream) { swapalloc_hook_record_stream(ptr, stream); }
    swapalloc_free(ptr, static_cast<ssize_t>(b->bytes), b->device, b->stream);
    return cudaSuccess;
  }

 private:
  preload_state() = default;

  /// The pool of this allocation: the thread's C ABI scope, else the preload pool (made and
  /// activated on `device` at its first use). std::nullopt after a message when it cannot be.
  std::optional<swapalloc_pool_id> pool_for_this_call(int device)
  {
    std::call_once(init_once_, [this] { initialize(); });
    if (!ready_) { return std::nullopt; }
    swapalloc_pool_id current = SWAPALLOC_DEFAULT_POOL;
    if (swapalloc_pool_current(&current) == SWAPALLOC_SUCCESS &&
        current != SWAPALLOC_DEFAULT_POOL) {
      return current;  // the program's own scope
    }
    std::lock_guard lock(mutex_);
    if (device < 0) { return std::nullopt; }
    auto const index = static_cast<std::size_t>(device);
    if (active_.size() <= index) { active_.resize(index + 1, false); }
    if (!active_[index]) {
      if (swapalloc_activate(pool_, device, nullptr) != SWAPALLOC_SUCCESS) {
        say("cannot activate pool '" + pool_name_ + "' on device " + std::to_string(device));
        return std::nullopt;
      }
      active_[index] = true;
    }
    return pool_;
  }

  void initialize()
  {
    if (swapalloc_is_initialized() == 0 && swapalloc_init() != SWAPALLOC_SUCCESS) {
      say("swapalloc_init failed");
      return;
    }
    char const* name = std::getenv("SWAPALLOC_POOL");
    pool_name_       = name != nullptr && *name != '\0' ? name : "preload";
    if (swapalloc_pool_find(pool_name_.c_str(), &pool_) != SWAPALLOC_SUCCESS &&
        swapalloc_pool_create(pool_name_.c_str(), nullptr, &pool_) != SWAPALLOC_SUCCESS) {
      say("cannot create pool '" + pool_name_ + "' (SWAPALLOC_POOL)");
      return;
    }
    ready_ = true;
  }

  std::once_flag init_once_;
  bool ready_{false};
  std::string pool_name_;
  swapalloc_pool_id pool_{SWAPALLOC_DEFAULT_POOL};
  std::mutex mutex_;
  std::vector<bool> active_;  // by device: the preload pool is activated there
  block_table blocks_;
};

/// "expandable_segments:True" in a PyTorch allocator configuration ("key:value,key:value",
/// case and spaces as torch accepts them).
bool expandable_segments(char const* config)
{
  if (config == nullptr) { return false; }
  std::string text;
  for (char const* c = config; *c != '\0'; ++c) {
    if (std::isspace(static_cast<unsigned char>(*c)) == 0) {
      text += static_cast<char>(std::tolower(static_cast<unsigned char>(*c)));
    }
  }
  return text.find("expandable_segments:true") != std::string::npos;
}

/// At load: refuse a configuration whose memory the interposer would not see.
[[gnu::constructor]] void refuse_expandable_segments()
{
  for (char const* variable : {"PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"}) {
    if (expandable_segments(std::getenv(variable))) {
      std::fprintf(stderr,
                   "swapalloc preload: %s has expandable_segments:True, with which PyTorch maps "
                   "its memory through driver calls that libswapalloc_preload.so does not see. "
                   "Remove it (swapalloc's pools already map pages on demand), or use "
                   "swapalloc.install() instead of LD_PRELOAD.\n",
                   variable);
      ::_exit(78);  // EX_CONFIG
    }
  }
}

}  // namespace

extern "C" {

[[gnu::visibility("default")]] cudaError_t CUDARTAPI cudaMalloc(void** ptr, size_t size)
{
  if (ptr == nullptr) { return cudaErrorInvalidValue; }
  if (size == 0) {
    return real().malloc != nullptr ? real().malloc(ptr, size) : cudaErrorInitializationError;
  }
  return preload_state::instance().allocate(ptr, size, nullptr);
}

[[gnu::visibility("default")]] cudaError_t CUDARTAPI cudaMallocAsync(void** ptr, size_t size,
                                                                     cudaStream_t stream)
{
  if (ptr == nullptr) { return cudaErrorInvalidValue; }
  if (size == 0) {
    return real().malloc_async != nullptr ? real().malloc_async(ptr, size, stream)
                                          : cudaErrorInitializationError;
  }
  return preload_state::instance().allocate(ptr, size, stream);
}

[[gnu::visibility("default")]] cudaError_t CUDARTAPI cudaFree(void* ptr)
{
  if (ptr != nullptr) {
    if (auto const done = preload_state::instance().release(ptr, nullptr, false)) { return *done; }
  }
  return real().free != nullptr ? real().free(ptr) : cudaErrorInitializationError;
}

[[gnu::visibility("default")]] cudaError_t CUDARTAPI cudaFreeAsync(void* ptr, cudaStream_t stream)
{
  if (ptr != nullptr) {
    if (auto const done = preload_state::instance().release(ptr, stream, true)) { return *done; }
  }
  return real().free_async != nullptr ? real().free_async(ptr, stream)
                                      : cudaErrorInitializationError;
}

}  // extern "C"
