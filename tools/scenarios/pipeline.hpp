/**
 * @file pipeline.hpp
 * @brief The seeds' workloads (../shared/seeds, issue 11) as data and runners: each seed's
 *        device and model sizes at full scale (`*_sizes::full()`, divided by a `scale` for
 *        the simulator), and the steps its users run, each step through a
 *        `scenario_runner` (runner.hpp) so that the device is sampled after it.
 *
 * | seed | what runs |
 * |---|---|
 * | 000 | a critical backbone and five task heads on 8 GiB: heads used in turn, then all at
 *         once; then the seed's "cache layer" of intermediate results fills the device |
 * | 001 | SDXL → BiRefNet → Flux inpaint on 22 GiB, request after request |
 * | 002, 004 | a 3B chat and a 7B code model on 6 GiB (0.5 GiB used by other processes),
 *         client threads alternating between them |
 * | 003 | `memory_guard(name, required)` before each trial of an LLM tuning system |
 *
 * Sizes are binary (GiB, MiB) and in bytes; a seed's "1.7 GB" is 1.7 GiB here.
 * Activations: each model has a request area of 1/32 of its weights per slot, at least
 * what a request's samples need; 1/8 for seed 001's diffusion models (activations at
 * 1024×1024 are large: with them the three models need 22.4 GiB, past the 22 GiB device,
 * which is the seed's out-of-memory at step 3 when every model is kept), 1/128 for the
 * LLM servers of seed 002/004 (the seed's 2.2 and 4.4 GB include their KV caches).
 *
 * Thread safety: as model.hpp; `seed002_service::run_clients` runs its own threads.
 */
#pragma once

#include "model.hpp"
#include "runner.hpp"

#include <swapalloc/activation.hpp>
#include <swapalloc/allocator.hpp>
#include <swapalloc/pool_scope.hpp>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace swapalloc::scenarios {

/// `full` bytes divided by `scale`, rounded down to 64 KiB (at least 64 KiB).
[[nodiscard]] constexpr std::size_t scaled(std::size_t full, std::size_t scale) noexcept
{
  std::size_t const bytes = full / (scale == 0 ? 1 : scale) / (64 * KiB) * (64 * KiB);
  return bytes == 0 ? 64 * KiB : bytes;
}

/// Where the seeds' models live and what fills their weights.
struct scenario_context {
  allocator* owner{nullptr};
  driver const* drv{nullptr};
  int device{0};
  weight_filler filler;
  std::size_t sample_bytes{16 * KiB};  ///< model_spec::sample_bytes of every model
  std::optional<codec_id> codec;       ///< model_spec::codec of every model (none: chosen)

  /**
   * @brief A model of `weight_bytes` in `tensors` tensors, with a request area of
   *        weight_bytes / `activation_divisor` per slot (at least what a request needs).
   * @throws as model's constructor.
   */
  [[nodiscard]] std::unique_ptr<model> make_model(std::string name, pool_priority priority,
                                                  std::size_t weight_bytes, std::size_t tensors,
                                                  std::size_t activation_divisor = 32,
                                                  std::size_t slots              = 1) const
  {
    model_spec spec =
      make_model_spec(std::move(name), priority, weight_bytes, tensors, 0, sample_bytes);
    std::size_t const least = request_header_bytes + spec.samples * spec.sample_bytes;
    spec.activation_bytes   = std::max(least, weight_bytes / activation_divisor / 256 * 256);
    spec.slots              = slots;
    spec.codec              = codec;
    return std::make_unique<model>(*owner, *drv, device, std::move(spec), filler);
  }
};

/// Whether every page of `m`'s pool holding data is on the device (loaded, none evicted).
[[nodiscard]] inline bool fully_resident(allocator const& owner, model const& m)
{
  pool_stats const s = owner.stats(m.pool(), m.device());
  return m.loaded() && s.evicted_bytes == 0 && s.reserved_bytes != 0;
}

// ------------------------------------------------------------------ seed 000

/// Seed 000's device and models (Red Heart AI: a 300M backbone and five task heads).
struct seed000_sizes {
  std::size_t device_bytes{8 * GiB};
  std::size_t backbone_bytes{17 * GiB / 10};  ///< "1.685GB", critical: never unloaded
  std::array<std::size_t, 5> head_bytes{40 * MiB, 80 * MiB, 120 * MiB, 120 * MiB, 140 * MiB};
  /// The seed's "cache layer: frequently used intermediate results on the GPU" (its plan to
  /// use the device up to 85%): enough to pass the high watermark with the heads resident.
  std::size_t cache_bytes{46 * GiB / 10};

  [[nodiscard]] static seed000_sizes full() noexcept { return {}; }
  [[nodiscard]] static seed000_sizes scaled_by(std::size_t scale) noexcept
  {
    seed000_sizes s;
    s.device_bytes   = scaled(s.device_bytes, scale);
    s.backbone_bytes = scaled(s.backbone_bytes, scale);
    for (std::size_t& head : s.head_bytes) {
      head = scaled(head, scale);
    }
    s.cache_bytes = scaled(s.cache_bytes, scale);
    return s;
  }
};

/// The seed's heads, in its initialization order (smallest first).
inline constexpr std::array<char const*, 5> seed000_head_names{
  "meta_integration", "semantic_surd", "bentham_fromm", "regret_learning", "emotion_empathy"};

/**
 * @brief Seed 000. The seed's hand-written version keeps only the backbone on the GPU and
 *        moves every head to the CPU right after initializing it (`seed_heads_resident`
 *        = 0); under the policy the heads stay resident until something needs the room.
 */
class seed000_scenario {
 public:
  /// Heads the seed's hand-written version keeps on the GPU ("백본만 GPU 상주").
  static constexpr std::size_t seed_heads_resident = 0;

  /// Creates the models (nothing loaded). @throws as model's constructor.
  seed000_scenario(scenario_context const& context, seed000_sizes const& sizes)
    : owner_(context.owner),
      backbone_(context.make_model("backbone", pool_priority::critical, sizes.backbone_bytes, 16)),
      cache_(context.make_model("feature_cache", pool_priority::low, sizes.cache_bytes, 8))
  {
    for (std::size_t i = 0; i < heads_.size(); ++i) {
      heads_[i] =
        context.make_model(seed000_head_names[i], pool_priority::normal, sizes.head_bytes[i], 4);
    }
  }

  [[nodiscard]] model& backbone() noexcept { return *backbone_; }
  [[nodiscard]] model& head(std::size_t i) noexcept { return *heads_.at(i); }
  [[nodiscard]] model& cache() noexcept { return *cache_; }
  /// The backbone, the heads and the cache, for a runner to watch.
  [[nodiscard]] std::vector<model const*> models() const
  {
    std::vector<model const*> all{backbone_.get()};
    for (auto const& h : heads_) {
      all.push_back(h.get());
    }
    all.push_back(cache_.get());
    return all;
  }

  /// Steps "load backbone", then "load <head>" for each head in the seed's order.
  void load(scenario_runner& run)
  {
    run.step("load backbone", [&] { backbone_->load(); });
    for (auto& h : heads_) {
      run.step("load " + h->name(), [&] { h->load(); });
    }
  }

  /// One step per head ("head <name>"): the backbone on `request`, then the head on the
  /// backbone's output. @return the heads' outputs, in order.
  std::vector<std::uint64_t> heads_in_turn(scenario_runner& run, std::uint64_t request)
  {
    std::vector<std::uint64_t> outputs;
    for (std::size_t i = 0; i < heads_.size(); ++i) {
      run.step("head " + heads_[i]->name(), [&] {
        std::uint64_t const out = heads_[i]->infer(head_input(backbone_->infer(request), i));
        outputs.push_back(out);
        return std::vector<std::uint64_t>{out};
      });
    }
    return outputs;
  }

  /// One step ("all heads"): the backbone and every head active at once (the seed's "all
  /// heads resident, run together"), the same computation as heads_in_turn.
  /// @return the heads' outputs, in order: equal to heads_in_turn's for the same request.
  std::vector<std::uint64_t> heads_together(scenario_runner& run, std::uint64_t request)
  {
    return run
      .step("all heads",
            [&] {
              std::vector<std::unique_ptr<activation>> active;
              for (model const* m : models()) {
                if (m != cache_.get()) {
                  active.push_back(
                    std::make_unique<activation>(*owner_, m->pool(), m->device(), m->stream()));
                }
              }
              std::uint64_t const features = backbone_->infer(request);
              std::vector<std::uint64_t> outputs;
              for (std::size_t i = 0; i < heads_.size(); ++i) {
                outputs.push_back(heads_[i]->infer(head_input(features, i)));
              }
              return outputs;
            })
      .outputs;
  }

  /// One step ("fill feature cache"): loads the low-priority cache of intermediate results,
  /// which passes the high watermark; the policy evicts heads, never the backbone.
  void fill_cache(scenario_runner& run)
  {
    run.step("fill feature cache", [&] { cache_->load(); });
  }

  /// Heads whose every page is resident now.
  [[nodiscard]] std::size_t heads_resident() const
  {
    std::size_t n = 0;
    for (auto const& h : heads_) {
      n += fully_resident(*owner_, *h) ? 1 : 0;
    }
    return n;
  }

 private:
  [[nodiscard]] static std::uint64_t head_input(std::uint64_t features, std::size_t head) noexcept
  {
    return mix64(features + head);
  }

  allocator* owner_;
  std::unique_ptr<model> backbone_;
  std::array<std::unique_ptr<model>, 5> heads_;
  std::unique_ptr<model> cache_;
};

// ------------------------------------------------------------------ seed 001

/// Seed 001's device and models (text → segmentation → composition).
struct seed001_sizes {
  std::size_t device_bytes{22 * GiB};
  std::size_t sdxl_bytes{7 * GiB};
  std::size_t birefnet_bytes{9 * GiB / 10};
  std::size_t flux_bytes{12 * GiB};

  [[nodiscard]] static seed001_sizes full() noexcept { return {}; }
  [[nodiscard]] static seed001_sizes scaled_by(std::size_t scale) noexcept
  {
    seed001_sizes s;
    s.device_bytes   = scaled(s.device_bytes, scale);
    s.sdxl_bytes     = scaled(s.sdxl_bytes, scale);
    s.birefnet_bytes = scaled(s.birefnet_bytes, scale);
    s.flux_bytes     = scaled(s.flux_bytes, scale);
    return s;
  }
};

/// The three outputs of one seed 001 request, one per step.
using seed001_outputs = std::array<std::uint64_t, 3>;

/**
 * @brief Seed 001's pipeline: step 1 SDXL renders the text, step 2 BiRefNet segments it,
 *        step 3 Flux inpaints it into the background. Each model is loaded at its first
 *        use and (without `auto_unload`) kept, as the seed's `auto_unload=False`; with
 *        `auto_unload` each step loads its model and unloads it after, as the seed does
 *        by hand (on an allocator without eviction, the seed's step 3 runs out of memory).
 */
class seed001_pipeline {
 public:
  /// Creates the models (nothing loaded). @throws as model's constructor.
  seed001_pipeline(scenario_context const& context, seed001_sizes const& sizes,
                   bool auto_unload = false)
    : auto_unload_(auto_unload),
      models_{context.make_model("sdxl", pool_priority::normal, sizes.sdxl_bytes, 16, 8),
              context.make_model("birefnet", pool_priority::normal, sizes.birefnet_bytes, 8, 8),
              context.make_model("flux-inpaint", pool_priority::normal, sizes.flux_bytes, 16, 8)}
  {
  }

  /// The models in step order, for a runner to watch.
  [[nodiscard]] std::vector<model const*> models() const
  {
    return {models_[0].get(), models_[1].get(), models_[2].get()};
  }
  [[nodiscard]] model& step_model(std::size_t step) noexcept { return *models_.at(step); }

  /**
   * @brief Request `request`: steps "request <n>: <model>" for the three models, each
   *        step's input made from the step before (step 3 also from the request, as the
   *        composition uses the background prompt and the text).
   * @return the three outputs: equal for equal requests however the models were moved.
   */
  seed001_outputs run_request(scenario_runner& run, std::uint64_t request)
  {
    seed001_outputs out{};
    std::uint64_t input = request;
    for (std::size_t i = 0; i < models_.size(); ++i) {
      model& m = *models_[i];
      run.step("request " + std::to_string(request) + ": " + m.name(), [&] {
        if (!m.loaded()) { m.load(); }
        out[i] = m.infer(i == 2 ? mix64(input ^ request) : input);
        if (auto_unload_) { m.unload(); }
        return std::vector<std::uint64_t>{out[i]};
      });
      input = out[i];
    }
    return out;
  }

 private:
  bool auto_unload_;
  std::array<std::unique_ptr<model>, 3> models_;
};

// ------------------------------------------------------------------ seed 002 / 004

/// Seeds 002 and 004's device and models (llama.cpp servers: 3B chat and 7B code, Q4_K_M).
struct seed002_sizes {
  std::size_t device_bytes{6 * GiB};
  std::size_t external_bytes{GiB / 2};  ///< "시스템 오버헤드": other processes' use
  std::size_t chat_bytes{22 * GiB / 10};
  std::size_t code_bytes{44 * GiB / 10};

  [[nodiscard]] static seed002_sizes full() noexcept { return {}; }
  [[nodiscard]] static seed002_sizes scaled_by(std::size_t scale) noexcept
  {
    seed002_sizes s;
    s.device_bytes   = scaled(s.device_bytes, scale);
    s.external_bytes = scaled(s.external_bytes, scale);
    s.chat_bytes     = scaled(s.chat_bytes, scale);
    s.code_bytes     = scaled(s.code_bytes, scale);
    return s;
  }
};

/**
 * @brief Lets the requests of one model at a time onto the device: any number of threads
 *        use the model whose turn it is; a turn admits up to `quantum` requests while
 *        another model has requests waiting, then closes, and when its last request leaves
 *        the next model's turn begins. The seed's two models (2.2 + 4.4 GiB with 0.5 GiB
 *        taken, on 6 GiB) cannot be resident together, so a request to one waits while
 *        the other runs, as a server's queue does (llama.cpp's --parallel, vLLM's sleep
 *        mode); the policy then swaps the pools at each turn.
 * Thread safety: any thread.
 */
class model_turns {
 public:
  /// A request's place in its model's turn; leaves the turn at destruction.
  class turn {
   public:
    turn(turn const&)            = delete;
    turn& operator=(turn const&) = delete;
    ~turn() { owner_->leave(); }

   private:
    friend class model_turns;
    explicit turn(model_turns& owner) : owner_(&owner) {}
    model_turns* owner_;
  };

  /// @pre `models` ≥ 1, `quantum` ≥ 1.
  model_turns(std::size_t models, std::size_t quantum) : waiting_(models, 0), quantum_(quantum) {}

  /// Waits for model `m`'s turn and joins it. @pre m < models.
  [[nodiscard]] std::unique_ptr<turn> enter(std::size_t m)
  {
    std::unique_lock lock(mutex_);
    ++waiting_[m];
    changed_.wait(lock, [&] { return may_enter(m); });
    --waiting_[m];
    if (current_ != m) {
      current_  = m;
      admitted_ = 0;
      ++switches_;
    }
    ++admitted_;
    ++users_;
    return std::unique_ptr<turn>(new turn(*this));
  }

  /// Turns begun so far (the first one included).
  [[nodiscard]] std::size_t switches() const
  {
    std::lock_guard const lock(mutex_);
    return switches_;
  }

 private:
  static constexpr std::size_t none = static_cast<std::size_t>(-1);

  [[nodiscard]] bool others_waiting(std::size_t m) const noexcept
  {
    for (std::size_t i = 0; i < waiting_.size(); ++i) {
      if (i != m && waiting_[i] != 0) { return true; }
    }
    return false;
  }

  /// The turn rule of the class comment. @pre locked.
  [[nodiscard]] bool may_enter(std::size_t m) const noexcept
  {
    if (current_ == none) { return true; }
    if (current_ == m) { return admitted_ < quantum_ || !others_waiting(m); }
    bool const turn_over = admitted_ >= quantum_ || waiting_[current_] == 0;
    return users_ == 0 && turn_over;
  }

  void leave()
  {
    {
      std::lock_guard const lock(mutex_);
      --users_;
    }
    changed_.notify_all();
  }

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::size_t> waiting_;  // guarded by mutex_
  std::size_t quantum_;
  std::size_t current_{none};  // guarded by mutex_
  std::size_t users_{0};       // guarded by mutex_
  std::size_t admitted_{0};    // guarded by mutex_
  std::size_t switches_{0};    // guarded by mutex_
};

/// One reply of seed002_service::run_clients.
struct seed002_reply {
  std::size_t client{0};
  std::size_t model{0};     ///< 0 chat, 1 code
  std::uint64_t prompt{0};  ///< the request's prompt number
  std::uint64_t output{0};  ///< the output's hash
};

/**
 * @brief Seeds 002/004: the chat and code servers on one device, each model with `slots`
 *        request slots, requests queued by `model_turns`.
 */
class seed002_service {
 public:
  /// Creates the two models (nothing loaded). @throws as model's constructor.
  seed002_service(scenario_context const& context, seed002_sizes const& sizes,
                  std::size_t slots = 2, std::size_t quantum = 10)
    : models_{context.make_model("qwen2.5-3b-chat", pool_priority::normal, sizes.chat_bytes, 12,
                                 128, slots),
              context.make_model("qwen2.5-coder-7b", pool_priority::normal, sizes.code_bytes, 16,
                                 128, slots)},
      turns_(2, quantum)
  {
  }

  [[nodiscard]] model& chat() noexcept { return *models_[0]; }
  [[nodiscard]] model& code() noexcept { return *models_[1]; }
  [[nodiscard]] std::vector<model const*> models() const
  {
    return {models_[0].get(), models_[1].get()};
  }
  [[nodiscard]] std::size_t turns() const { return turns_.switches(); }

  /// Steps "load <chat>", "load <code>" (the seed's checklist: chat first, then code).
  void load(scenario_runner& run)
  {
    for (auto& m : models_) {
      run.step("load " + m->name(), [&] { m->load(); });
    }
  }

  /// One request to model `which` (0 chat, 1 code) with prompt `prompt`, in its turn:
  /// step "<model> prompt <n>". @return the output's hash.
  std::uint64_t serve(scenario_runner& run, std::size_t which, std::uint64_t prompt)
  {
    model& m = *models_.at(which);
    return run
      .step(m.name() + " prompt " + std::to_string(prompt),
            [&] {
              auto const place = turns_.enter(which);
              return std::vector<std::uint64_t>{m.infer(prompt)};
            })
      .outputs.front();
  }

  /**
   * @brief `clients` threads send `requests` requests in all: client c's k-th request
   *        goes to model (c + k) mod 2 with prompt (c + k) mod `prompts` (the seed's load
   *        test sends the same few prompts over and over). `on_reply` is told of each reply
   *        on the client's thread.
   * @throws the first exception a client met (the others stop at their next request).
   */
  void run_clients(scenario_runner& run, std::size_t clients, std::size_t requests,
                   std::size_t prompts, std::function<void(seed002_reply const&)> const& on_reply)
  {
    std::atomic<std::size_t> next{0};
    std::atomic<bool> failed{false};
    std::exception_ptr first;
    std::mutex first_mutex;
    std::vector<std::thread> threads;
    threads.reserve(clients);
    for (std::size_t c = 0; c < clients; ++c) {
      threads.emplace_back([&, c] {
        try {
          for (std::size_t k = 0; !failed && next.fetch_add(1) < requests; ++k) {
            seed002_reply reply{c, (c + k) % 2, (c + k) % prompts, 0};
            reply.output = serve(run, reply.model, reply.prompt);
            if (on_reply) { on_reply(reply); }
          }
        } catch (...) {
          std::lock_guard const lock(first_mutex);
          if (!first) { first = std::current_exception(); }
          failed = true;
        }
      });
    }
    for (std::thread& t : threads) {
      t.join();
    }
    if (first) { std::rethrow_exception(first); }
  }

 private:
  std::array<std::unique_ptr<model>, 2> models_;
  model_turns turns_;
};

// ------------------------------------------------------------------ seed 003

/**
 * @brief The seed's `manager.memory_guard(name, required_gb)`: at construction makes room
 *        on `device` for `required_bytes` (allocator::ensure_free: cached pages, then the
 *        coldest evictable pools); at destruction releases every pool's cached pages
 *        (the seed's "memory cleaned up automatically", torch.cuda.empty_cache()).
 * @throws out_of_memory at construction when only pinned, active, critical or
 *         non-evictable pools hold the rest: its message has the pool table and the advice.
 */
class memory_guard {
 public:
  memory_guard(allocator& owner, int device, std::string name, std::size_t required_bytes)
    : owner_(&owner), name_(std::move(name)), made_(owner.ensure_free(required_bytes, device))
  {
  }
  memory_guard(memory_guard const&)            = delete;
  memory_guard& operator=(memory_guard const&) = delete;
  ~memory_guard()
  {
    try {
      (void)owner_->empty_cache();
    } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor cannot report it
    }
  }
  /// What ensure_free did (nothing when there was room).
  [[nodiscard]] room_result const& made() const noexcept { return made_; }
  [[nodiscard]] std::string const& name() const noexcept { return name_; }

 private:
  allocator* owner_;
  std::string name_;
  room_result made_;
};

/// Seed 003's device and models (an LLM tuning system comparing and tuning models).
struct seed003_sizes {
  std::size_t device_bytes{16 * GiB};
  std::size_t tuned_bytes{44 * GiB / 10};     ///< qwen2.5-7b (4-bit), critical: being tuned
  std::size_t baseline_bytes{49 * GiB / 10};  ///< llama3-8b (4-bit), the comparison
  std::size_t trial_bytes{6 * GiB};           ///< qwen2.5-14b (4-bit), one guarded trial
  std::size_t too_big_bytes{10 * GiB};        ///< a guard that cannot be granted

  [[nodiscard]] static seed003_sizes full() noexcept { return {}; }
  [[nodiscard]] static seed003_sizes scaled_by(std::size_t scale) noexcept
  {
    seed003_sizes s;
    s.device_bytes   = scaled(s.device_bytes, scale);
    s.tuned_bytes    = scaled(s.tuned_bytes, scale);
    s.baseline_bytes = scaled(s.baseline_bytes, scale);
    s.trial_bytes    = scaled(s.trial_bytes, scale);
    s.too_big_bytes  = scaled(s.too_big_bytes, scale);
    return s;
  }
};

/**
 * @brief Seed 003: the tuned model (critical) and the baseline compared on a prompt, then a
 *        trial model run inside a `memory_guard` of its size (the guard evicts the
 *        baseline), then a guard too large for what only the critical model holds.
 */
class seed003_tuning {
 public:
  /// Creates the tuned and baseline models (nothing loaded). @throws as model's constructor.
  seed003_tuning(scenario_context context, seed003_sizes const& sizes)
    : context_(std::move(context)),
      sizes_(sizes),
      tuned_(context_.make_model("qwen2.5-7b", pool_priority::critical, sizes.tuned_bytes, 16)),
      baseline_(context_.make_model("llama3-8b", pool_priority::normal, sizes.baseline_bytes, 16))
  {
  }

  [[nodiscard]] model& tuned() noexcept { return *tuned_; }
  [[nodiscard]] model& baseline() noexcept { return *baseline_; }
  [[nodiscard]] std::vector<model const*> models() const { return {tuned_.get(), baseline_.get()}; }

  /// Step "compare": loads both models and runs `prompt` on each. @return both outputs.
  std::vector<std::uint64_t> compare(scenario_runner& run, std::uint64_t prompt)
  {
    return run
      .step("compare",
            [&] {
              for (model* m : {tuned_.get(), baseline_.get()}) {
                if (!m->loaded()) { m->load(); }
              }
              return std::vector<std::uint64_t>{tuned_->infer(prompt), baseline_->infer(prompt)};
            })
      .outputs;
  }

  /**
   * @brief Step "guarded trial": `memory_guard("qwen2.5-14b", trial size)`, then inside it
   *        the trial model is made, loaded, run on `prompt`, and destroyed.
   * @return the trial's output and what the guard did.
   * @throws out_of_memory from the guard.
   */
  std::pair<std::uint64_t, room_result> guarded_trial(scenario_runner& run, std::uint64_t prompt)
  {
    std::pair<std::uint64_t, room_result> result;
    run.step("guarded trial", [&] {
      memory_guard const guard(*context_.owner, context_.device, "qwen2.5-14b", sizes_.trial_bytes);
      result.second = guard.made();
      std::unique_ptr<model> trial =
        context_.make_model("qwen2.5-14b", pool_priority::normal, sizes_.trial_bytes, 16);
      trial->load();
      result.first = trial->infer(prompt);
      return std::vector<std::uint64_t>{result.first};
    });
    return result;
  }

  /// Step "guard too big": `memory_guard("qwen2.5-32b", too_big size)`.
  /// @throws out_of_memory when the room cannot be made (the seed's case: only the critical
  ///         model left resident); the step is then not recorded.
  void guard_too_big(scenario_runner& run)
  {
    run.step("guard too big", [&] {
      memory_guard const guard(*context_.owner, context_.device, "qwen2.5-32b",
                               sizes_.too_big_bytes);
    });
  }

 private:
  scenario_context context_;
  seed003_sizes sizes_;
  std::unique_ptr<model> tuned_;
  std::unique_ptr<model> baseline_;
};

}  // namespace swapalloc::scenarios
