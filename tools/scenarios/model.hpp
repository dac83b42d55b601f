/**
 * @file model.hpp
 * @brief A simulated model for the seeds' workloads (../shared/seeds): weights and a
 *        request area that live in one pool of a swapalloc::allocator on one device, and
 *        "inference" as driver work on the model's own stream. Not part of the library.
 *
 * - **Weights.** A model has named tensors (`model_spec::tensors`), each one block in the
 *   model's pool. `load` fills them from a caller's `weight_filler` through a pinned
 *   staging buffer (cuMemcpyHtoDAsync) and records the xxHash64 of each tensor's bytes:
 *   the "first load" every later check compares with (`verify_weights`).
 * - **Inference.** `infer(request)` runs inside an `activation` (DESIGN §6): on the model's
 *   stream it writes the request's activations (cuMemsetD8Async, cuMemsetD32Async), copies
 *   `samples` slices of the weights into them at places the request chooses (one slice
 *   from each of `samples` equal stretches of the weights, at an offset in the stretch
 *   that the request chooses too), gathers the slices into the output area in reverse
 *   order (cuMemcpyDtoDAsync), copies the output to pinned host memory and returns its
 *   xxHash64. The output depends on the request and on weight bytes all over the model,
 *   so a restore that changed them changes it.
 * - **Requests at once.** The request area has `slots` slots (activations and output);
 *   up to that many `infer` calls run at once, the others wait for a slot.
 *
 * Device memory is never dereferenced: every access is a driver call through
 * swapalloc::driver, whose checked wrappers throw `cuda_error` naming the call. Each
 * public member makes the device's primary context current on the calling thread for its
 * duration (a context_scope), so any thread may call it.
 *
 * Thread safety: `infer` may be called from any number of threads at once. `load`,
 * `verify_weights`, `unload` and destruction must not run concurrently with any other
 * member. Costs: `infer` makes 2 × samples + 5 driver calls, reads `output_bytes()` back.
 */
#pragma once

#include <swapalloc/activation.hpp>
#include <swapalloc/allocator.hpp>
#include <swapalloc/driver.hpp>
#include <swapalloc/errors.hpp>
#include <swapalloc/pool_scope.hpp>

#include <xxhash.h>

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace swapalloc::scenarios {

inline constexpr std::size_t KiB = 1024;
inline constexpr std::size_t MiB = 1024 * KiB;
inline constexpr std::size_t GiB = 1024 * MiB;

/**
 * @brief Writes `out.size()` bytes of weights. Called once per staging chunk of a tensor,
 *        `salt` distinct per (model name, tensor, chunk) and the same at every load, so a
 *        deterministic filler gives bit-identical loads. May throw; the load then fails.
 */
using weight_filler = std::function<void(std::span<std::byte> out, std::uint64_t salt)>;

/// One weight tensor: its name and size in bytes (a multiple of 4, at least the sample).
struct tensor_spec {
  std::string name;
  std::size_t bytes{0};
};

/// What a model is made of. Sizes in bytes.
struct model_spec {
  std::string name;
  pool_priority priority{pool_priority::normal};
  dtype_hint dtype{dtype_hint::bf16};  ///< the pool's codec hint (codec.hpp)
  std::optional<codec_id> codec;       ///< forces the pool's codec (tests, benchmarks)
  std::vector<tensor_spec> tensors;
  std::size_t activation_bytes{1 * MiB};  ///< per slot; at least header + samples × sample
  std::size_t slots{1};                   ///< requests served at once
  std::size_t samples{16};                ///< weight slices per request
  std::size_t sample_bytes{16 * KiB};     ///< bytes per slice, a multiple of 4
  std::size_t staging_bytes{8 * MiB};     ///< pinned staging buffer used by load and verify
};

/// Bytes at the start of a request's activations and output written from the request
/// alone (cuMemsetD32Async), so that requests differ even over constant weights.
inline constexpr std::size_t request_header_bytes = 256;

/**
 * @brief A model of `weight_bytes` split into `tensor_count` tensors named
 *        "<name>.blocks.<i>" (sizes equal but for the last, multiples of 256 bytes, none
 *        below `sample_bytes`: fewer tensors when the weights are too small for that),
 *        with `activation_bytes` per request slot.
 * @throws std::invalid_argument when `weight_bytes` is below one sample or 0 tensors.
 */
[[nodiscard]] inline model_spec make_model_spec(std::string name, pool_priority priority,
                                                std::size_t weight_bytes, std::size_t tensor_count,
                                                std::size_t activation_bytes,
                                                std::size_t sample_bytes = 16 * KiB)
{
  if (tensor_count == 0 || weight_bytes < sample_bytes || sample_bytes == 0) {
    throw std::invalid_argument(
      "swapalloc::scenarios::make_model_spec('" + name + "'): weight_bytes=" +
      std::to_string(weight_bytes) + ", tensor_count=" + std::to_string(tensor_count) +
      ": expected at least one tensor of at least sample_bytes=" + std::to_string(sample_bytes));
  }
  weight_bytes = weight_bytes / 256 * 256;
  tensor_count = std::min(tensor_count, weight_bytes / std::max<std::size_t>(sample_bytes, 256));
  std::size_t const each = weight_bytes / tensor_count / 256 * 256;
  model_spec spec;
  spec.name             = std::move(name);
  spec.priority         = priority;
  spec.activation_bytes = activation_bytes;
  spec.sample_bytes     = sample_bytes;
  for (std::size_t i = 0; i < tensor_count; ++i) {
    std::size_t const bytes = i + 1 < tensor_count ? each : weight_bytes - each * i;
    spec.tensors.push_back({spec.name + ".blocks." + std::to_string(i), bytes});
  }
  return spec;
}

/// splitmix64's finalizer: a well-mixed 64-bit function of `x`. Pure.
[[nodiscard]] constexpr std::uint64_t mix64(std::uint64_t x) noexcept
{
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

/// One call `load` makes to the weight filler: bytes [offset, offset + bytes) of tensor
/// `tensor` (an index into model_spec::tensors), filled with salt `salt`.
struct weight_chunk {
  std::size_t tensor{0};
  std::size_t offset{0};
  std::size_t bytes{0};
  std::uint64_t salt{0};
};

/// A tensor's name and the xxHash64 (seed 0) of its bytes.
struct tensor_hash {
  std::string name;
  std::uint64_t hash{0};
};

/// Pinned host memory (cuMemHostAlloc) of a fixed size; freed at destruction.
class pinned_buffer {
 public:
  pinned_buffer() = default;
  /// @throws cuda_error if it cannot be allocated. @pre a context is current.
  pinned_buffer(driver const& drv, std::size_t bytes)
    : driver_(&drv), data_(static_cast<std::byte*>(drv.host_alloc(bytes))), bytes_(bytes)
  {
  }
  pinned_buffer(pinned_buffer&& other) noexcept
    : driver_(other.driver_),
      data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0))
  {
  }
  pinned_buffer& operator=(pinned_buffer&& other) noexcept
  {
    if (this != &other) {
      reset();
      driver_ = other.driver_;
      data_   = std::exchange(other.data_, nullptr);
      bytes_  = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  pinned_buffer(pinned_buffer const&)            = delete;
  pinned_buffer& operator=(pinned_buffer const&) = delete;
  ~pinned_buffer() { reset(); }

  [[nodiscard]] std::span<std::byte> span() const noexcept { return {data_, bytes_}; }
  [[nodiscard]] std::byte* data() const noexcept { return data_; }

 private:
  void reset() noexcept
  {
    if (data_ != nullptr) { (void)driver_->table().cuMemFreeHost(data_); }
    data_  = nullptr;
    bytes_ = 0;
  }

  driver const* driver_{nullptr};
  std::byte* data_{nullptr};
  std::size_t bytes_{0};
};

/// A simulated model in one pool. See the file comment.
class model {
 public:
  /**
   * @brief Registers the model's pool (named after the model, with its priority and dtype)
   *        and creates its stream on `device`. Allocates no device memory until `load`.
   * @pre `owner` and `drv` outlive the model; `owner` was made over `drv`.
   * @throws std::invalid_argument for an inconsistent spec (naming the field);
   *         usage_error if a pool of that name exists; cuda_error from the driver.
   */
  model(allocator& owner, driver const& drv, int device, model_spec spec, weight_filler filler)
    : owner_(&owner),
      driver_(&drv),
      device_(device),
      spec_(checked(std::move(spec))),
      filler_(std::move(filler)),
      cu_device_(drv.device(device)),
      context_(drv.retain_primary_context(cu_device_))
  {
    try {
      context_scope const current(drv, context_);
      stream_ = drv.stream_create();
      pool_options options;
      options.priority = spec_.priority;
      options.dtype    = spec_.dtype;
      options.codec    = spec_.codec;
      pool_            = owner.create_pool(spec_.name, options);
    } catch (...) {
      release_driver_objects();
      throw;
    }
  }

  model(model const&)            = delete;
  model& operator=(model const&) = delete;

  /// Unloads (when loaded), destroys the pool and the stream, releases the context.
  /// Errors are swallowed: a destructor cannot report them (the allocator's leak report
  /// names blocks left behind).
  ~model()
  {
    try {
      if (loaded()) { unload(); }
      owner_->destroy_pool(pool_);
    } catch (...) {  // NOLINT(bugprone-empty-catch): see above
    }
    release_driver_objects();
  }

  [[nodiscard]] std::string const& name() const noexcept { return spec_.name; }
  [[nodiscard]] pool_priority priority() const noexcept { return spec_.priority; }
  [[nodiscard]] model_spec const& spec() const noexcept { return spec_; }
  [[nodiscard]] pool_id pool() const noexcept { return pool_; }
  [[nodiscard]] int device() const noexcept { return device_; }
  [[nodiscard]] CUstream stream() const noexcept { return stream_; }
  [[nodiscard]] bool loaded() const noexcept { return !tensors_.empty(); }

  /// Bytes of all tensors.
  [[nodiscard]] std::size_t weight_bytes() const noexcept
  {
    std::size_t total = 0;
    for (tensor_spec const& tensor : spec_.tensors) {
      total += tensor.bytes;
    }
    return total;
  }
  /// Bytes of one request's output (what `infer` hashes).
  [[nodiscard]] std::size_t output_bytes() const noexcept
  {
    return request_header_bytes + spec_.samples * spec_.sample_bytes;
  }
  /// Bytes the model allocates in its pool when loaded: weights and request slots.
  [[nodiscard]] std::size_t footprint_bytes() const noexcept
  {
    return weight_bytes() + spec_.slots * (spec_.activation_bytes + output_bytes());
  }

  /// The device address of tensor `i` (loaded only): for tests that corrupt one on purpose.
  /// @throws std::out_of_range for a bad index or an unloaded model.
  [[nodiscard]] CUdeviceptr tensor_address(std::size_t i) const { return tensors_.at(i).ptr; }

  /**
   * @brief The filler calls every `load` makes, in order: each tensor's chunks of the
   *        staging buffer's size, with their salts. For a program that stores the weights
   *        in a file once and reads them back at each load (the demo's auto_unload): the
   *        bytes the filler writes for these chunks, in this order, are the model's weights.
   * Pure; allocates nothing on the device.
   */
  [[nodiscard]] std::vector<weight_chunk> weight_chunks() const
  {
    std::size_t const staging      = staging_size();
    std::uint64_t const model_salt = XXH64(spec_.name.data(), spec_.name.size(), 0);
    std::vector<weight_chunk> chunks;
    for (std::size_t t = 0; t < spec_.tensors.size(); ++t) {
      std::size_t const bytes = spec_.tensors[t].bytes;
      std::size_t chunk       = 0;
      for (std::size_t done = 0; done < bytes; done += staging, ++chunk) {
        chunks.push_back({t, done, std::min(staging, bytes - done),
                          mix64(model_salt ^ mix64((t << 32U) ^ chunk))});
      }
    }
    return chunks;
  }

  /// The tensors' hashes recorded at the first load (empty before it).
  [[nodiscard]] std::vector<tensor_hash> const& first_load_hashes() const noexcept
  {
    return first_hashes_;
  }

  /**
   * @brief Allocates the tensors and request slots in the model's pool (the policy makes
   *        room as for any allocation) and copies the weights in, inside an activation.
   *        Records each tensor's hash at the first load.
   * @throws std::logic_error if already loaded; std::runtime_error if a later load's bytes
   *         differ from the first (a filler that is not deterministic); out_of_memory,
   *         cuda_error: what was allocated is freed again, the model stays unloaded.
   */
  void load()
  {
    if (loaded()) { throw std::logic_error("model '" + spec_.name + "': load: already loaded"); }
    context_scope const current(*driver_, context_);
    try {
      activation const active(*owner_, pool_, device_, stream_);
      allocate_all();
      std::vector<tensor_hash> const hashes = copy_weights_in();
      if (first_hashes_.empty()) {
        first_hashes_ = hashes;
      } else if (!differing(hashes).empty()) {
        throw std::runtime_error("model '" + spec_.name + "': load: tensor '" +
                                 differing(hashes).front() + "' differs from the first load");
      }
    } catch (...) {
      free_all();
      throw;
    }
  }

  /**
   * @brief Runs request `request` (see the file comment) and returns the xxHash64 of its
   *        output. Waits for a free slot first.
   * @throws std::logic_error if not loaded; out_of_memory, cuda_error, restore_error from
   *         the activation (the pool's restore) or the driver.
   */
  [[nodiscard]] std::uint64_t infer(std::uint64_t request)
  {
    if (!loaded()) { throw std::logic_error("model '" + spec_.name + "': infer: not loaded"); }
    context_scope const current(*driver_, context_);
    slot_lease const lease(*this);
    slot const& used = slots_[lease.index()];
    activation const active(*owner_, pool_, device_, stream_);
    write_activations(used, request);
    gather_output(used, request);
    driver_->memcpy_dtoh_async(used.host.data(), used.output, output_bytes(), stream_);
    driver_->stream_synchronize(stream_);
    return XXH64(used.host.data(), output_bytes(), 0);
  }

  /**
   * @brief Reads every tensor back (inside an activation, so an evicted pool is restored
   *        first) and compares its hash with the first load's.
   * @return the names of the tensors that differ, in tensor order; empty when all match.
   * @throws std::logic_error if not loaded; as `infer` for the activation and the driver.
   */
  [[nodiscard]] std::vector<std::string> verify_weights()
  {
    if (!loaded()) { throw std::logic_error("model '" + spec_.name + "': verify: not loaded"); }
    context_scope const current(*driver_, context_);
    activation const active(*owner_, pool_, device_, stream_);
    pinned_buffer const staging(*driver_, staging_size());
    std::vector<tensor_hash> now;
    for (loaded_tensor const& tensor : tensors_) {
      hasher state;
      for (std::size_t done = 0; done < tensor.bytes; done += staging.span().size()) {
        std::size_t const n = std::min(staging.span().size(), tensor.bytes - done);
        driver_->memcpy_dtoh_async(staging.data(), tensor.ptr + done, n, stream_);
        driver_->stream_synchronize(stream_);
        state.update(staging.span().first(n));
      }
      now.push_back({tensor.name, state.digest()});
    }
    return differing(now);
  }

  /**
   * @brief Frees the model's blocks (an evicted block's host copy goes with it, nothing is
   *        restored) and releases its pool's cached pages, as the seeds' unload with
   *        torch.cuda.empty_cache() does. The pool stays registered; `load` may follow.
   * @throws cuda_error, usage_error from the allocator (what is left stays allocated).
   */
  void unload()
  {
    context_scope const current(*driver_, context_);
    driver_->stream_synchronize(stream_);
    free_all();
    (void)owner_->empty_cache(pool_);
  }

 private:
  struct loaded_tensor {
    std::string name;
    CUdeviceptr ptr{0};
    std::size_t bytes{0};
  };
  struct slot {
    CUdeviceptr activations{0};
    CUdeviceptr output{0};
    pinned_buffer host;
  };

  /// Streaming xxHash64 (seed 0).
  class hasher {
   public:
    hasher() : state_(XXH64_createState())
    {
      if (state_ == nullptr || XXH64_reset(state_.get(), 0) != XXH_OK) { throw std::bad_alloc(); }
    }
    void update(std::span<std::byte const> bytes)
    {
      (void)XXH64_update(state_.get(), bytes.data(), bytes.size());
    }
    [[nodiscard]] std::uint64_t digest() const { return XXH64_digest(state_.get()); }

   private:
    struct deleter {
      void operator()(XXH64_state_t* state) const noexcept { (void)XXH64_freeState(state); }
    };
    std::unique_ptr<XXH64_state_t, deleter> state_;
  };

  /// Holds one free slot for an `infer` call; waits for one.
  class slot_lease {
   public:
    explicit slot_lease(model& owner) : owner_(&owner)
    {
      std::unique_lock lock(owner.slots_mutex_);
      owner.slot_freed_.wait(lock, [&] { return !owner.free_slots_.empty(); });
      index_ = owner.free_slots_.back();
      owner.free_slots_.pop_back();
    }
    slot_lease(slot_lease const&)            = delete;
    slot_lease& operator=(slot_lease const&) = delete;
    ~slot_lease()
    {
      {
        std::lock_guard const lock(owner_->slots_mutex_);
        owner_->free_slots_.push_back(index_);
      }
      owner_->slot_freed_.notify_one();
    }
    [[nodiscard]] std::size_t index() const noexcept { return index_; }

   private:
    model* owner_;
    std::size_t index_{0};
  };

  [[nodiscard]] static model_spec checked(model_spec spec)
  {
    auto const fail = [&](std::string const& what) {
      throw std::invalid_argument("swapalloc::scenarios::model('" + spec.name + "'): " + what);
    };
    if (spec.name.empty()) { fail("the name is empty"); }
    if (spec.tensors.empty()) { fail("no tensors"); }
    if (spec.slots == 0 || spec.samples == 0) { fail("slots and samples must be at least 1"); }
    if (spec.sample_bytes == 0 || spec.sample_bytes % 4 != 0) {
      fail("sample_bytes=" + std::to_string(spec.sample_bytes) +
           " is not a positive multiple of 4");
    }
    for (tensor_spec const& tensor : spec.tensors) {
      if (tensor.bytes < spec.sample_bytes || tensor.bytes % 4 != 0) {
        fail("tensor '" + tensor.name + "' of " + std::to_string(tensor.bytes) +
             " bytes: expected a multiple of 4, at least sample_bytes");
      }
    }
    if (spec.activation_bytes < request_header_bytes + spec.samples * spec.sample_bytes) {
      fail("activation_bytes=" + std::to_string(spec.activation_bytes) +
           " is below the header plus samples × sample_bytes");
    }
    if (spec.staging_bytes == 0) { fail("staging_bytes is 0"); }
    return spec;
  }

  [[nodiscard]] std::size_t staging_size() const noexcept
  {
    std::size_t largest = 0;
    for (tensor_spec const& tensor : spec_.tensors) {
      largest = std::max(largest, tensor.bytes);
    }
    return std::min(largest, spec_.staging_bytes);
  }

  /// A block of `bytes` in the model's pool, on its stream.
  [[nodiscard]] CUdeviceptr allocate_block(std::size_t bytes)
  {
    pool_scope const scope(*owner_, pool_);
    return owner_->allocate(bytes, device_, stream_);
  }

  /// The tensors, then the slots (recorded as they are allocated, for free_all).
  void allocate_all()
  {
    for (tensor_spec const& tensor : spec_.tensors) {
      CUdeviceptr const ptr = allocate_block(tensor.bytes);
      tensors_.push_back({tensor.name, ptr, tensor.bytes});
    }
    slots_.reserve(spec_.slots);
    for (std::size_t i = 0; i < spec_.slots; ++i) {
      slot made;
      made.activations = allocate_block(spec_.activation_bytes);
      slots_.push_back(std::move(made));
      slots_.back().output = allocate_block(output_bytes());
      slots_.back().host   = pinned_buffer(*driver_, output_bytes());
      free_slots_.push_back(i);
    }
  }

  /// Fills each tensor chunk by chunk (weight_chunks) through the staging buffer; returns
  /// their hashes.
  [[nodiscard]] std::vector<tensor_hash> copy_weights_in()
  {
    pinned_buffer const staging(*driver_, staging_size());
    std::vector<hasher> states(tensors_.size());
    for (weight_chunk const& chunk : weight_chunks()) {
      std::span<std::byte> const out = staging.span().first(chunk.bytes);
      filler_(out, chunk.salt);
      states[chunk.tensor].update(out);
      driver_->memcpy_htod_async(tensors_[chunk.tensor].ptr + chunk.offset, out.data(), out.size(),
                                 stream_);
      driver_->stream_synchronize(stream_);  // the staging buffer is reused next
    }
    std::vector<tensor_hash> hashes;
    for (std::size_t t = 0; t < tensors_.size(); ++t) {
      hashes.push_back({tensors_[t].name, states[t].digest()});
    }
    return hashes;
  }

  /// The request's activations: a byte of the request everywhere, its words in the header,
  /// then the weight slices at the places the request chooses.
  void write_activations(slot const& used, std::uint64_t request) const
  {
    std::uint64_t const key = mix64(request);
    driver_->memset_d8_async(used.activations, static_cast<unsigned char>(key),
                             spec_.activation_bytes, stream_);
    driver_->memset_d32_async(used.activations, static_cast<unsigned int>(key >> 32U),
                              request_header_bytes / 4, stream_);
    std::size_t const places = (spec_.activation_bytes - request_header_bytes) / spec_.sample_bytes;
    for (std::size_t j = 0; j < spec_.samples; ++j) {
      std::size_t const place = (static_cast<std::size_t>(key % places) + j) % places;
      driver_->memcpy_dtod_async(
        used.activations + request_header_bytes + place * spec_.sample_bytes, weight_slice(key, j),
        spec_.sample_bytes, stream_);
    }
  }

  /// The output: the header, then the slices in reverse order of their sample index.
  void gather_output(slot const& used, std::uint64_t request) const
  {
    std::uint64_t const key = mix64(request);
    driver_->memcpy_dtod_async(used.output, used.activations, request_header_bytes, stream_);
    std::size_t const places = (spec_.activation_bytes - request_header_bytes) / spec_.sample_bytes;
    for (std::size_t j = 0; j < spec_.samples; ++j) {
      std::size_t const place = (static_cast<std::size_t>(key % places) + j) % places;
      std::size_t const to    = request_header_bytes + (spec_.samples - 1 - j) * spec_.sample_bytes;
      driver_->memcpy_dtod_async(
        used.output + to, used.activations + request_header_bytes + place * spec_.sample_bytes,
        spec_.sample_bytes, stream_);
    }
  }

  /// The device address of sample `j` for request key `key`: in the j-th of `samples`
  /// equal stretches of the weights (in tensor order), at an offset the key chooses,
  /// moved back to fit inside its tensor.
  [[nodiscard]] CUdeviceptr weight_slice(std::uint64_t key, std::size_t j) const
  {
    std::size_t const total   = weight_bytes();
    std::size_t const stretch = total / spec_.samples;
    std::size_t at =
      j * stretch + static_cast<std::size_t>(mix64(key + j) % std::max<std::size_t>(stretch, 1));
    at = std::min(at, total - 1) / 4 * 4;
    for (loaded_tensor const& tensor : tensors_) {
      if (at < tensor.bytes) {
        return tensor.ptr + std::min(at, tensor.bytes - spec_.sample_bytes);
      }
      at -= tensor.bytes;
    }
    return tensors_.back().ptr;  // not reached: `at` < total
  }

  /// Names of the tensors whose hash in `now` differs from the first load's.
  [[nodiscard]] std::vector<std::string> differing(std::vector<tensor_hash> const& now) const
  {
    std::vector<std::string> names;
    for (std::size_t i = 0; i < now.size(); ++i) {
      if (i >= first_hashes_.size() || now[i].hash != first_hashes_[i].hash) {
        names.push_back(now[i].name);
      }
    }
    return names;
  }

  /// Frees every block allocated (slots first), keeping the ones whose free throws.
  void free_all()
  {
    std::exception_ptr first;
    auto const release = [&](CUdeviceptr ptr, std::size_t bytes) {
      try {
        owner_->deallocate(ptr, bytes, device_, stream_);
      } catch (...) {
        if (!first) { first = std::current_exception(); }
      }
    };
    for (slot const& used : slots_) {
      release(used.activations, spec_.activation_bytes);
      if (used.output != 0) { release(used.output, output_bytes()); }
    }
    for (loaded_tensor const& tensor : tensors_) {
      release(tensor.ptr, tensor.bytes);
    }
    slots_.clear();
    free_slots_.clear();
    tensors_.clear();
    if (first) { std::rethrow_exception(first); }
  }

  void release_driver_objects() noexcept
  {
    if (stream_ != nullptr) {
      context_scope const current(*driver_, context_, std::nothrow);
      (void)driver_->table().cuStreamSynchronize(stream_);
      (void)driver_->table().cuStreamDestroy(stream_);
      stream_ = nullptr;
    }
    (void)driver_->table().cuDevicePrimaryCtxRelease(cu_device_);
  }

  allocator* owner_;
  driver const* driver_;
  int device_;
  model_spec spec_;
  weight_filler filler_;
  CUdevice cu_device_;
  CUcontext context_;
  CUstream stream_{nullptr};
  pool_id pool_{0};
  std::vector<loaded_tensor> tensors_;
  std::vector<slot> slots_;
  std::vector<tensor_hash> first_hashes_;
  std::mutex slots_mutex_;
  std::condition_variable slot_freed_;
  std::vector<std::size_t> free_slots_;  // guarded by slots_mutex_
};

}  // namespace swapalloc::scenarios
