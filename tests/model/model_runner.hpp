/**
 * @file model_runner.hpp
 * @brief Executes model ops (model_ops.hpp) against one `swapalloc::allocator` for the
 *        pools one thread owns, keeping a host shadow of every live block, and checks the
 *        allocator's contract after each op. A broken rule throws `model_failure`.
 *
 * The rules the runner itself keeps (they are the allocator's preconditions):
 * - Device memory is read and written only through driver calls, and only while the
 *   block's pages are resident: a block is *touchable* if it was allocated after its
 *   pool's latest evict attempt, or the pool had a successful restore after that attempt
 *   (per-pool epochs). Writing an evicted page would be a sticky error 700.
 * - A read-only pool's live blocks are not rewritten (a new block is written once).
 * - Live data never needs more device pages than its budget (`page_budget`, this runner's
 *   share of the device): an allocation that could exceed it frees a block instead. So a
 *   full restore of every pool always fits, and an allocator that released its cached
 *   pages could always serve it.
 *
 * The rules it checks (the allocator's contract):
 * - After every op, whether it succeeded or failed: `allocator::check()` is "".
 * - An op that no fault could reach (`fault_gate::quiet_since`) succeeds, except an
 *   allocation the pool's address range provably cannot place (`va_room`).
 * - A failed op changed nothing it must not have: a failed allocate allocated nothing;
 *   a deallocate that threw cuda_error has freed the block (a second free is a double free).
 * - After a successful restore: evicted_bytes == 0, host_bytes == 0 unless the pool is
 *   read-only (after wait_for_compression), and every live block of the pool equals its
 *   shadow. Checkpoints restore every pool without faults and compare every block.
 * - A block freed after record_stream is not handed out again before the recorded
 *   stream's work is done (stream_reuse compares the next block of that size).
 *
 * Thread safety: one runner per thread; runners of several threads may share the
 * allocator and the fault gate.
 */
#pragma once

#include "model_faults.hpp"
#include "model_ops.hpp"
#include "model_shadow.hpp"

#include <swapalloc/activation.hpp>
#include <swapalloc/allocator.hpp>
#include <swapalloc/pool_scope.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace swapalloc::testing::model {

/// A broken rule: `signature` names the kind of failure (the shrinker keeps it fixed),
/// what() says everything known about it.
class model_failure : public std::runtime_error {
 public:
  model_failure(std::string signature, std::string const& detail)
    : std::runtime_error(signature + ": " + detail), signature_(std::move(signature))
  {
  }
  [[nodiscard]] std::string const& signature() const noexcept { return signature_; }

 private:
  std::string signature_;
};

/// What a runner did, summed over its ops.
struct runner_counters {
  std::array<std::uint64_t, op_kind_count> ops{};
  std::uint64_t faulty_ops{0};          ///< ops run with faults armed
  std::uint64_t failures_tolerated{0};  ///< ops that failed under a fault, consistently
  std::uint64_t oom_tolerated{0};       ///< fault-free allocations the range could not place
  std::uint64_t restores_verified{0};   ///< successful restores followed by a full compare
  std::uint64_t blocks_compared{0};
  std::uint64_t bytes_compared{0};
  std::uint64_t evict_refusals{0};  ///< evictions that kept pages for the host budget
  std::uint64_t over_budget{0};     ///< allocations turned into frees by the page budget

  runner_counters& operator+=(runner_counters const& o) noexcept
  {
    for (std::size_t k = 0; k < op_kind_count; ++k) {
      ops[k] += o.ops[k];
    }
    faulty_ops += o.faulty_ops;
    failures_tolerated += o.failures_tolerated;
    oom_tolerated += o.oom_tolerated;
    restores_verified += o.restores_verified;
    blocks_compared += o.blocks_compared;
    bytes_compared += o.bytes_compared;
    evict_refusals += o.evict_refusals;
    over_budget += o.over_budget;
    return *this;
  }
};

struct runner_config {
  std::string name{"t0"};       ///< prefix of the pool names (unique per runner)
  std::size_t pools{4};         ///< pools owned at any time
  std::size_t streams{3};       ///< non-blocking streams besides the legacy stream
  std::size_t page_budget{30};  ///< pages of live data this runner may hold
  std::uint64_t seed{0};        ///< block contents and the first pools' options
  /// After every op, the driver's device memory must be the allocator's resident pages: no
  /// mapping or handle the allocator lost track of. Only where this allocator is the
  /// process's only user of the device and one thread calls it (single-threaded modes).
  bool census_check{false};
};

/// The options of a new pool, from one byte: the codec (sampled, lz4, shuffle2_lz4, raw,
/// shuffle4_lz4, zstd), read-only for a fifth, half the device's range for a quarter.
[[nodiscard]] inline pool_options pool_options_from(std::uint8_t b, std::size_t device_bytes)
{
  pool_options o;
  switch (b % 8) {
    case 3:
      o.codec = codec_id::lz4;
      break;
    case 4:
      o.codec = codec_id::shuffle2_lz4;
      break;
    case 5:
      o.codec = codec_id::raw;
      break;
    case 6:
      o.codec = codec_id::shuffle4_lz4;
      break;
    case 7:
      o.codec = codec_available(codec_id::zstd) ? codec_id::zstd : codec_id::lz4;
      break;
    default:
      o.dtype = b % 8 == 2 ? dtype_hint::bf16 : dtype_hint::none;
      break;
  }
  o.read_only = (b / 8) % 5 == 0;
  if (b >= 192) { o.capacity = device_bytes / 2; }
  return o;
}

class model_runner {
 public:
  model_runner(allocator& alloc, driver const& drv, fault_gate& gate, runner_config config)
    : alloc_(&alloc),
      drv_(&drv),
      gate_(&gate),
      config_(std::move(config)),
      page_size_(drv.allocation_granularity(drv.device(0))),
      device_bytes_(drv.device_total_memory(drv.device(0))),
      next_seed_(mix64(config_.seed))
  {
    if (config_.census_check) { census_base_ = gate.sim().census(); }
    for (std::size_t s = 0; s < config_.streams; ++s) {
      streams_.push_back(drv.stream_create());
    }
    for (std::size_t p = 0; p < config_.pools; ++p) {
      pools_.push_back(make_pool(static_cast<std::uint8_t>(mix64(config_.seed + p))));
    }
  }

  model_runner(model_runner const&)            = delete;
  model_runner& operator=(model_runner const&) = delete;

  /// Best effort when finish() did not run (a failure): frees what it can, quietly.
  ~model_runner()
  {
    for (CUstream s : streams_) {
      (void)drv_->table().cuStreamSynchronize(s);
    }
    for (pool_slot& p : pools_) {
      for (shadow_block const& b : p.blocks) {
        try {
          alloc_->deallocate(b.ptr, b.bytes, 0, b.stream);
        } catch (...) {  // NOLINT(bugprone-empty-catch): the failure was reported already
        }
      }
      try {
        alloc_->destroy_pool(p.id);
      } catch (...) {  // NOLINT(bugprone-empty-catch): idem
      }
    }
    for (CUstream s : streams_) {
      (void)drv_->table().cuStreamDestroy(s);
    }
  }

  /// Executes `o`, then checks the allocator's structure. Returns what was done, in words.
  std::string run(op const& o)
  {
    ++counters_.ops[static_cast<std::size_t>(o.kind)];
    counters_.faulty_ops += o.faulty() ? 1 : 0;
    std::string outcome = dispatch(o);
    if (std::string problem = alloc_->check(); !problem.empty()) {
      fail("check:" + normalized(problem), problem + " (after " + to_string(o.kind) + ")");
    }
    if (config_.census_check) { check_census(o); }
    return outcome;
  }

  /// A final checkpoint, then every block freed and every pool destroyed, without faults.
  void finish()
  {
    (void)checkpoint();
    auto const quiet = gate_->quiet();
    for (pool_slot& p : pools_) {
      free_all_quietly(p, "finish");
      try {
        alloc_->destroy_pool(p.id);
      } catch (std::exception const& e) {
        fail("unexpected-failure:destroy_pool", std::string("at finish: ") + e.what());
      }
    }
    pools_.clear();
    if (std::string problem = alloc_->check(); !problem.empty()) {
      fail("check:" + normalized(problem), problem + " (at finish)");
    }
  }

  [[nodiscard]] runner_counters const& counters() const noexcept { return counters_; }
  [[nodiscard]] std::size_t live_pages() const noexcept
  {
    std::size_t total = 0;
    for (pool_slot const& p : pools_) {
      total += p.pages.pages();
    }
    return total;
  }

 private:
  struct pool_slot {
    pool_id id{0};
    std::string name;
    pool_options options;
    bool read_only{false};
    bool ever_read_only{false};
    std::uint64_t evict_epoch{0};     ///< evict attempts so far
    std::uint64_t restored_epoch{0};  ///< evict_epoch at the latest successful restore
    std::vector<shadow_block> blocks;
    page_ledger pages;
  };

  /// How one allocator call went.
  struct attempt_result {
    bool ok{true};
    bool quiet{true};  ///< no fault could have reached it
    bool usage{false};
    bool oom{false};
    std::string error;
  };

  // ------------------------------------------------------------------ dispatch

  std::string dispatch(op const& o)
  {
    switch (o.kind) {
      case op_kind::allocate:
        return do_allocate(o);
      case op_kind::free:
        return do_free(o);
      case op_kind::write:
        return do_write(o);
      case op_kind::verify:
        return do_verify(o);
      case op_kind::record_stream:
        return do_record_stream(o);
      case op_kind::stream_reuse:
        return do_stream_reuse(o);
      case op_kind::evict_full:
        return do_evict(o, SIZE_MAX);
      case op_kind::evict_partial:
        return do_evict(o, (o.size % 8 + 1) * page_size_);
      case op_kind::restore:
        return do_restore(o);
      case op_kind::empty_cache_all:
        return do_empty_cache(o, false);
      case op_kind::empty_cache_pool:
        return do_empty_cache(o, true);
      case op_kind::toggle_read_only:
        return do_toggle_read_only(o);
      case op_kind::destroy_evicted:
        return do_destroy_evicted(o);
      case op_kind::checkpoint:
        return checkpoint();
    }
    return "unknown op";
  }

  // ------------------------------------------------------------------ ops

  std::string do_allocate(op const& o)
  {
    pool_slot& p = slot(o.pool);
    if (live_pages() + p.pages.worst_case_pages(o.size) > config_.page_budget) {
      ++counters_.over_budget;
      return "over the page budget: " + free_one(o);
    }
    CUstream const stream = stream_slot(o.stream);
    CUdeviceptr ptr       = 0;
    if (!allocate_judged(p, o.size, stream, o.faults, ptr)) {
      return "allocate(" + std::to_string(o.size) + ") in " + p.name + " failed (tolerated)";
    }
    content const data = new_content(o.data);
    adopt(p, ptr, o.size, stream, data);
    return "allocate(" + std::to_string(o.size) + ") in " + p.name + " -> " + hex(ptr);
  }

  std::string do_free(op const& o) { return free_one(o); }

  std::string do_write(op const& o)
  {
    auto [p, index] = pick_block(o, [&](pool_slot const& pool, shadow_block const& b) {
      return !pool.read_only && touchable(pool, b);
    });
    if (p == nullptr) { return "no writable block"; }
    sync_streams();  // no memset of a stream may land after this write
    shadow_block& b = p->blocks[index];
    b.data          = new_content(o.data);
    write_block(b, p->name);
    return "write " + hex(b.ptr) + " in " + p->name;
  }

  std::string do_verify(op const& o)
  {
    pool_slot& p = slot(o.pool);
    sync_streams();
    std::size_t compared = 0;
    for (shadow_block const& b : p.blocks) {
      if (touchable(p, b)) {
        compare_block(b, p.name, "verify");
        ++compared;
      }
    }
    return "verified " + std::to_string(compared) + " blocks of " + p.name;
  }

  std::string do_record_stream(op const& o)
  {
    auto [p, index] = pick_block(o, [&](pool_slot const& pool, shadow_block const& b) {
      return !pool.read_only && touchable(pool, b);
    });
    if (p == nullptr) { return "no writable block"; }
    sync_streams();  // earlier memsets on another stream are not ordered before these
    shadow_block& b        = p->blocks[index];
    CUstream const user    = other_stream(o.other, b.stream);
    attempt_result const r = attempt({}, [&] { alloc_->record_stream(b.ptr, 0, user); });
    judge(r, "record_stream");
    b.data.filled    = b.bytes >= 4;
    b.data.fill_word = static_cast<std::uint32_t>(next_seed());
    enqueue_memsets(b.ptr, b.bytes, user, 1 + o.data % 3, b.data.fill_word);
    return "record_stream " + hex(b.ptr) + " in " + p->name + " on a second stream";
  }

  std::string do_stream_reuse(op const& o)
  {
    pool_slot& p = slot(o.pool);
    if (live_pages() + 2 * p.pages.worst_case_pages(o.size) > config_.page_budget) {
      ++counters_.over_budget;
      return "over the page budget: " + free_one(o);
    }
    CUstream const a    = stream_slot(o.stream);
    CUstream const user = other_stream(o.other, a);
    CUdeviceptr first   = 0;
    if (!allocate_judged(p, o.size, a, {}, first)) { return "first allocate failed (tolerated)"; }
    judge(attempt({}, [&] { alloc_->record_stream(first, 0, user); }), "record_stream");
    enqueue_memsets(first, o.size, user, 2 + o.data % 3, 0xDEADBEEF);
    attempt_result const r = attempt(o.faults, [&] { alloc_->deallocate(first, o.size, 0, a); });
    judge_free(r, first, o.size, a);
    CUdeviceptr second = 0;
    if (!allocate_judged(p, o.size, a, {}, second)) { return "second allocate failed (tolerated)"; }
    content const data = new_content(o.data);
    adopt(p, second, o.size, a, data);
    sync_streams();  // the memsets of the freed block are done: they must not show here
    compare_block(p.blocks.back(), p.name, "stream_reuse (a block freed after record_stream)");
    return "stream_reuse " + hex(first) + " -> " + hex(second) + " in " + p.name;
  }

  std::string do_evict(op const& o, std::size_t bytes)
  {
    pool_slot& p = slot_where(o.pool, [](pool_slot const& q) { return !q.blocks.empty(); });
    ++p.evict_epoch;
    evict_result result;
    attempt_result const r = attempt(o.faults, [&] { result = alloc_->evict(p.id, 0, bytes); });
    if (!judge(r, "evict")) { return "evict of " + p.name + " failed (tolerated): " + r.error; }
    if (result.pages_kept != 0) { ++counters_.evict_refusals; }
    if (bytes == SIZE_MAX && result.pages_kept == 0) {
      pool_stats const s = alloc_->stats(p.id, 0);
      if (s.reserved_bytes != 0) {
        fail("evict-left-pages", "a full evict of " + p.name + " refused nothing but left " +
                                   std::to_string(s.reserved_bytes) + " bytes resident");
      }
    }
    return "evict(" + (bytes == SIZE_MAX ? std::string("all") : std::to_string(bytes)) + ") of " +
           p.name + ": " + std::to_string(result.pages_copied) + " copied, " +
           std::to_string(result.pages_unmapped) + " unmapped, " +
           std::to_string(result.pages_kept) + " kept";
  }

  std::string do_restore(op const& o)
  {
    pool_slot& p =
      slot_where(o.pool, [](pool_slot const& q) { return q.restored_epoch != q.evict_epoch; });
    restore_result result;
    attempt_result const r =
      attempt(o.faults, [&] { result = alloc_->restore(p.id, 0, stream_slot(o.stream)); });
    if (!judge(r, "restore")) { return "restore of " + p.name + " failed (tolerated): " + r.error; }
    p.restored_epoch = p.evict_epoch;
    verify_restored(p, "restore");
    return "restore of " + p.name + ": " + std::to_string(result.pages) + " pages";
  }

  std::string do_empty_cache(op const& o, bool one_pool)
  {
    pool_slot& p           = slot(o.pool);
    std::size_t released   = 0;
    attempt_result const r = attempt(
      o.faults, [&] { released = one_pool ? alloc_->empty_cache(p.id) : alloc_->empty_cache(); });
    if (!judge(r, "empty_cache")) { return "empty_cache failed (tolerated): " + r.error; }
    return std::string(one_pool ? "empty_cache(" + p.name + ")" : "empty_cache()") + " released " +
           std::to_string(released);
  }

  std::string do_toggle_read_only(op const& o)
  {
    pool_slot& p = slot(o.pool);
    if (!p.read_only) { sync_streams(); }  // no write may be in flight into a read-only pool
    alloc_->set_read_only(p.id, !p.read_only);
    p.read_only      = !p.read_only;
    p.ever_read_only = p.ever_read_only || p.read_only;
    return "set_read_only(" + p.name + ", " + (p.read_only ? "true" : "false") + ")";
  }

  std::string do_destroy_evicted(op const& o)
  {
    std::size_t const index = o.pool % pools_.size();
    pool_slot& p            = pools_[index];
    std::string const name  = p.name;
    ++p.evict_epoch;
    attempt_result const evicted =
      attempt(std::span(o.faults).first(1), [&] { (void)alloc_->evict(p.id, 0); });
    judge(evicted, "evict");
    free_all_while_evicted(p);
    attempt_result const destroyed =
      attempt(std::span(o.faults).subspan(1), [&] { alloc_->destroy_pool(p.id); });
    if (!judge(destroyed, "destroy_pool")) {  // the failure changed nothing: it can be redone
      auto const quiet = gate_->quiet();
      try {
        alloc_->destroy_pool(p.id);
      } catch (std::exception const& e) {
        fail("destroy-retry-failed", name + ": after a failed destroy_pool (" + destroyed.error +
                                       "), the retry failed too: " + e.what());
      }
    }
    pools_[index] = make_pool(o.other);
    return "destroyed " + name + " while evicted; created " + pools_[index].name;
  }

  /// Restores every pool (no fault can be armed meanwhile) and compares every block.
  std::string checkpoint()
  {
    auto const quiet = gate_->quiet();
    sync_streams();
    std::size_t blocks = 0;
    for (pool_slot& p : pools_) {
      try {
        (void)alloc_->restore(p.id, 0);
      } catch (std::exception const& e) {
        fail(std::string("checkpoint-restore-failed:") + error_kind(e),
             p.name + " (" + std::to_string(p.blocks.size()) + " live blocks, " +
               std::to_string(live_pages()) + " live pages of " +
               std::to_string(device_bytes_ / page_size_) + "): " + e.what());
      }
      p.restored_epoch = p.evict_epoch;
      verify_restored(p, "checkpoint");
      blocks += p.blocks.size();
    }
    return "checkpoint: " + std::to_string(blocks) + " blocks compared";
  }

  /// The driver holds exactly the device memory the allocator counts: its pools' resident
  /// pages, the pages mapped again for a restore that did not complete (restoring), and
  /// what failed rollbacks could not give back yet (stray, retried later): a mapping or a
  /// handle it lost track of would hold more. (Counted from the census when the runner
  /// started: what an earlier allocator in the process left behind is not this one's.)
  void check_census(op const& o)
  {
    cudasim_census const now   = gate_->sim().census();
    std::size_t const physical = now.physical_bytes - census_base_.physical_bytes;
    pool_stats const counted   = alloc_->device_stats(0);
    std::size_t const resident =
      counted.reserved_bytes + counted.restoring_bytes + counted.stray_bytes;
    if (physical != resident) {
      fail("census", std::string("after ") + to_string(o.kind) + ": the driver holds " +
                       std::to_string(physical) + " bytes of device memory (" +
                       std::to_string(now.mappings - census_base_.mappings) + " mappings, " +
                       std::to_string(now.handles - census_base_.handles) +
                       " unreleased handles); the allocator counts " + std::to_string(resident) +
                       " (resident, restoring and stray bytes)");
    }
  }

  // ------------------------------------------------------------------ allocator calls

  /// Runs one allocator call with `faults` armed, classifying how it went.
  template <typename Call>
  attempt_result attempt(std::span<fault_spec const> faults, Call&& call)
  {
    attempt_result r;
    std::uint64_t const ticket = gate_->ticket();
    try {
      gate_->episode(faults, std::forward<Call>(call));
    } catch (usage_error const& e) {
      r = attempt_result{false, true, true, false, e.what()};
    } catch (out_of_memory const& e) {
      r = attempt_result{false, true, false, true, e.what()};
    } catch (std::exception const& e) {
      r = attempt_result{false, true, false, false, error_kind(e) + std::string(": ") + e.what()};
    }
    r.quiet = gate_->quiet_since(ticket);
    return r;
  }

  /// Fails on a misuse or on a failure no fault explains; else counts the tolerated
  /// failure. Returns whether the call succeeded.
  bool judge(attempt_result const& r, char const* call)
  {
    if (r.ok) { return true; }
    if (r.usage) { fail(std::string("usage-error:") + call, r.error); }
    if (r.quiet) { fail(std::string("unexpected-failure:") + call, "no fault armed: " + r.error); }
    ++counters_.failures_tolerated;
    return false;
  }

  /// allocate(bytes) in `p` on `stream` with `faults`; false when it failed as allowed.
  bool allocate_judged(pool_slot& p, std::size_t bytes, CUstream stream,
                       std::span<fault_spec const> faults, CUdeviceptr& ptr)
  {
    bool const faulty =
      std::any_of(faults.begin(), faults.end(), [](fault_spec const& f) { return f.armed(); });
    std::size_t const before = faulty ? alloc_->stats(p.id, 0).live_blocks : 0;
    attempt_result const r   = attempt(faults, [&] {
      pool_scope const scope(*alloc_, p.id);
      ptr = alloc_->allocate(bytes, 0, stream);
    });
    if (r.ok) { return true; }
    // The page budget leaves the device room for every live page and this block, once
    // cached pages are released: only the pool's own range may lack a place for it.
    if (r.quiet && r.oom && !va_room(p, bytes)) {
      ++counters_.oom_tolerated;
      return false;
    }
    if (r.quiet && r.oom) {
      fail("oom-with-room", p.name + ": allocate(" + std::to_string(bytes) + ") with " +
                              std::to_string(p.pages.pages()) + " live pages in a range of " +
                              std::to_string(capacity_pages(p)) + " pages and " +
                              std::to_string(live_pages()) +
                              " live pages on the device: " + r.error);
    }
    judge(r, "allocate");
    if (faulty && alloc_->stats(p.id, 0).live_blocks > before) {
      fail("failed-allocate-allocated",
           p.name + ": live blocks grew from " + std::to_string(before) + " after " + r.error);
    }
    return false;
  }

  /// A deallocate's outcome: a cuda_error comes after the block was freed, so freeing it
  /// again must be a misuse.
  void judge_free(attempt_result const& r, CUdeviceptr ptr, std::size_t bytes, CUstream stream)
  {
    if (judge(r, "deallocate")) { return; }
    try {
      alloc_->deallocate(ptr, bytes, 0, stream);
    } catch (usage_error const&) {
      return;  // a double free: the failed deallocate had freed it, as documented
    }
    fail("failed-free-not-freed",
         hex(ptr) + ": deallocate threw (" + r.error + ") but the block was still live");
  }

  /// True when the pool's range must hold a block of `bytes`: it has a run of whole pages
  /// that no live block touches as long as the block (after out-of-memory recovery nothing
  /// else holds a page: cached and held blocks are released, and only pages with live data
  /// are evicted). The range's base is not known, but its C pages contain every live page:
  /// a gap between live pages lies inside it, and of the C - span pages beside the span of
  /// live pages, one side has at least half.
  [[nodiscard]] bool va_room(pool_slot const& p, std::size_t bytes) const
  {
    std::size_t const c    = capacity_pages(p);
    std::size_t const need = (round_request(bytes) + page_size_ - 1) / page_size_;
    std::vector<std::uint64_t> used;
    for (shadow_block const& b : p.blocks) {
      for (std::uint64_t page = b.ptr / page_size_; page <= (b.ptr + b.bytes - 1) / page_size_;
           ++page) {
        used.push_back(page);
      }
    }
    if (used.empty()) { return c >= need; }
    std::sort(used.begin(), used.end());
    std::uint64_t const span = used.back() - used.front() + 1;
    std::uint64_t run        = span < c ? (c - span + 1) / 2 : 0;
    for (std::size_t i = 1; i < used.size(); ++i) {
      run = std::max<std::uint64_t>(run, used[i] - used[i - 1] - (used[i] != used[i - 1] ? 1 : 0));
    }
    return run >= need;
  }

  [[nodiscard]] std::size_t capacity_pages(pool_slot const& p) const noexcept
  {
    std::size_t const bytes = p.options.capacity != 0 ? p.options.capacity : device_bytes_;
    return bytes / page_size_;
  }

  // ------------------------------------------------------------------ shadow

  [[nodiscard]] static bool touchable(pool_slot const& p, shadow_block const& b) noexcept
  {
    return b.epoch == p.evict_epoch || p.restored_epoch == p.evict_epoch;
  }

  /// Takes a new block into the model: no overlap with a live block, the pool's live
  /// pages within as many pages as its range has, bytes written.
  void adopt(pool_slot& p, CUdeviceptr ptr, std::size_t bytes, CUstream stream, content const& data)
  {
    auto const after = live_.lower_bound(ptr);
    if ((after != live_.end() && after->first < ptr + bytes) ||
        (after != live_.begin() && std::prev(after)->second > ptr)) {
      fail("overlap", p.name + ": allocate(" + std::to_string(bytes) + ") returned " + hex(ptr) +
                        ", which overlaps a live block");
    }
    live_.emplace(ptr, ptr + bytes);
    p.blocks.push_back(shadow_block{ptr, bytes, stream, p.evict_epoch, data});
    p.pages.add(ptr, bytes);
    if (p.pages.span() > capacity_pages(p)) {
      fail("outside-the-pool", p.name + ": allocate(" + std::to_string(bytes) + ") returned " +
                                 hex(ptr) + "; the pool's live blocks now span " +
                                 std::to_string(p.pages.span()) + " pages, its range has " +
                                 std::to_string(capacity_pages(p)));
    }
    write_block(p.blocks.back(), p.name);
  }

  void forget(pool_slot& p, std::size_t index)
  {
    shadow_block const b = p.blocks[index];
    live_.erase(b.ptr);
    p.pages.remove(b.ptr, b.bytes);
    p.blocks[index] = p.blocks.back();
    p.blocks.pop_back();
  }

  /// Frees the block `o` picks in its pool (else in any pool).
  std::string free_one(op const& o)
  {
    auto [p, index] = pick_block(o, [](pool_slot const&, shadow_block const&) { return true; });
    if (p == nullptr) { return "nothing to free"; }
    shadow_block const b = p->blocks[index];
    attempt_result const r =
      attempt(o.faults, [&] { alloc_->deallocate(b.ptr, b.bytes, 0, b.stream); });
    forget(*p, index);
    judge_free(r, b.ptr, b.bytes, b.stream);
    return "free " + hex(b.ptr) + " (" + std::to_string(b.bytes) + ") in " + p->name;
  }

  void free_all_while_evicted(pool_slot& p)
  {
    while (!p.blocks.empty()) {
      shadow_block const b = p.blocks.back();
      attempt_result const r =
        attempt({}, [&] { alloc_->deallocate(b.ptr, b.bytes, 0, b.stream); });
      forget(p, p.blocks.size() - 1);
      judge_free(r, b.ptr, b.bytes, b.stream);
    }
    alloc_->wait_for_compression(p.id);
    pool_stats const s = alloc_->stats(p.id, 0);
    if (s.evicted_bytes != 0 || (!p.ever_read_only && s.host_bytes != 0)) {
      fail("host-copy-after-free-all",
           p.name + ": every block was freed while evicted, yet evicted_bytes=" +
             std::to_string(s.evicted_bytes) + ", host_bytes=" + std::to_string(s.host_bytes));
    }
  }

  void free_all_quietly(pool_slot& p, char const* when)
  {
    while (!p.blocks.empty()) {
      shadow_block const b = p.blocks.back();
      forget(p, p.blocks.size() - 1);
      try {
        alloc_->deallocate(b.ptr, b.bytes, 0, b.stream);
      } catch (std::exception const& e) {
        fail("unexpected-failure:deallocate", std::string(when) + ": " + e.what());
      }
    }
  }

  /// A block of the pool `o` names (else of the next pool with one) that `eligible`
  /// accepts, chosen by o.pick; {nullptr, 0} when there is none.
  template <typename Eligible>
  std::pair<pool_slot*, std::size_t> pick_block(op const& o, Eligible&& eligible)
  {
    for (std::size_t step = 0; step < pools_.size(); ++step) {
      pool_slot& p = pools_[(o.pool + step) % pools_.size()];
      candidates_.clear();
      for (std::size_t i = 0; i < p.blocks.size(); ++i) {
        if (eligible(p, p.blocks[i])) { candidates_.push_back(i); }
      }
      if (!candidates_.empty()) { return {&p, candidates_[o.pick % candidates_.size()]}; }
    }
    return {nullptr, 0};
  }

  /// After a successful restore of `p`: nothing evicted, every live block equal to its
  /// shadow (wrong bytes are named before their causes), no host copy left unless the pool
  /// keeps it (read-only).
  void verify_restored(pool_slot& p, char const* when)
  {
    pool_stats s = alloc_->stats(p.id, 0);
    if (s.evicted_bytes != 0) {
      fail("evicted-after-restore", p.name + " (" + when + "): evicted_bytes=" +
                                      std::to_string(s.evicted_bytes) + " after a restore");
    }
    sync_streams();
    for (shadow_block const& b : p.blocks) {
      compare_block(b, p.name, when);
    }
    if (!p.read_only) {
      alloc_->wait_for_compression(p.id);
      s = alloc_->stats(p.id, 0);
      if (s.host_bytes != 0) {
        fail("host-bytes-after-restore", p.name + " (" + when + ", not read-only): host_bytes=" +
                                           std::to_string(s.host_bytes) + " after a restore");
      }
    }
    ++counters_.restores_verified;
  }

  // ------------------------------------------------------------------ the test's driver calls

  /// Runs one of the test's own driver calls. A failure while a fault episode overlapped
  /// it (another thread's fault) is retried once with the gate held; any other failure is
  /// the allocator's doing (a block on a page that is not mapped, a sticky error).
  template <typename Call>
  void own(char const* what, std::string const& where, Call&& call)
  {
    std::uint64_t const ticket = gate_->ticket();
    try {
      call();
      return;
    } catch (cuda_error const& e) {
      if (gate_->quiet_since(ticket)) {
        fail(std::string("driver-call-failed:") + what, where + ": " + e.what());
      }
    }
    auto const quiet = gate_->quiet();
    try {
      call();
    } catch (cuda_error const& e) {
      fail(std::string("driver-call-failed:") + what, where + " (retried): " + e.what());
    }
  }

  void write_block(shadow_block const& b, std::string const& pool)
  {
    expected_.resize(b.bytes);
    render(b.data, expected_);
    own("write", pool + " block " + hex(b.ptr) + " (" + std::to_string(b.bytes) + " bytes)",
        [&] { drv_->memcpy_htod(b.ptr, expected_.data(), b.bytes); });
  }

  void compare_block(shadow_block const& b, std::string const& pool, char const* when)
  {
    expected_.resize(b.bytes);
    actual_.resize(b.bytes);
    render(b.data, expected_);
    own("read", pool + " block " + hex(b.ptr) + " (" + std::to_string(b.bytes) + " bytes)",
        [&] { drv_->memcpy_dtoh(actual_.data(), b.ptr, b.bytes); });
    ++counters_.blocks_compared;
    counters_.bytes_compared += b.bytes;
    if (std::memcmp(expected_.data(), actual_.data(), b.bytes) == 0) { return; }
    fail("mismatch", mismatch_text(b, pool, when));
  }

  [[nodiscard]] std::string mismatch_text(shadow_block const& b, std::string const& pool,
                                          char const* when) const
  {
    std::size_t first = 0;
    while (expected_[first] == actual_[first]) {
      ++first;
    }
    std::size_t last      = b.bytes - 1;
    std::size_t differing = 0;
    for (std::size_t i = first; i < b.bytes; ++i) {
      if (expected_[i] != actual_[i]) {
        ++differing;
        last = i;
      }
    }
    auto const byte_at = [](std::vector<std::byte> const& v, std::size_t i) {
      return std::to_string(std::to_integer<unsigned>(v[i]));
    };
    return pool + " (" + when + "): block " + hex(b.ptr) + " of " + std::to_string(b.bytes) +
           " bytes (" + to_string(b.data.kind) + (b.data.filled ? ", memset" : "") +
           ") differs in " + std::to_string(differing) + " bytes, from offset " +
           std::to_string(first) + " (address " + hex(b.ptr + first) + ", page offset " +
           std::to_string((b.ptr + first) % page_size_) + ") to " + std::to_string(last) +
           "; first: expected " + byte_at(expected_, first) + ", found " + byte_at(actual_, first);
  }

  /// `count` memsets of the block's words on `stream`, the last one with `last_word`:
  /// queued work that keeps the stream busy after the caller moves on.
  void enqueue_memsets(CUdeviceptr ptr, std::size_t bytes, CUstream stream, std::size_t count,
                       std::uint32_t last_word)
  {
    if (bytes < 4) { return; }
    for (std::size_t i = 0; i < count; ++i) {
      std::uint32_t const word =
        i + 1 == count ? last_word : 0xA5A5A5A5U + static_cast<std::uint32_t>(i);
      own("memset", "block " + hex(ptr),
          [&] { drv_->memset_d32_async(ptr, word, bytes / 4, stream); });
    }
    streams_busy_ = true;
  }

  void sync_streams()
  {
    if (!streams_busy_) { return; }
    for (CUstream s : streams_) {
      own("stream_synchronize", "a runner stream", [&] { drv_->stream_synchronize(s); });
    }
    streams_busy_ = false;
  }

  // ------------------------------------------------------------------ pools, streams

  pool_slot make_pool(std::uint8_t options_byte)
  {
    pool_slot p{0,
                config_.name + "p" + std::to_string(pools_created_++),
                pool_options_from(options_byte, device_bytes_),
                false,
                false,
                0,
                0,
                {},
                page_ledger(page_size_)};
    p.read_only      = p.options.read_only;
    p.ever_read_only = p.read_only;
    p.id             = alloc_->create_pool(p.name, p.options);
    return p;
  }

  [[nodiscard]] pool_slot& slot(std::uint8_t index) { return pools_[index % pools_.size()]; }

  /// Slot `index`, or the next one where `worth` holds (an op there has work to do).
  template <typename Worth>
  [[nodiscard]] pool_slot& slot_where(std::uint8_t index, Worth&& worth)
  {
    for (std::size_t step = 0; step < pools_.size(); ++step) {
      pool_slot& p = pools_[(index + step) % pools_.size()];
      if (worth(p)) { return p; }
    }
    return slot(index);
  }

  /// Stream slot `s`: the legacy stream or one of the runner's streams.
  [[nodiscard]] CUstream stream_slot(std::uint8_t s) const
  {
    std::size_t const index = s % (streams_.size() + 1);
    return index == 0 ? nullptr : streams_[index - 1];
  }

  /// One of the runner's streams, other than `avoid`.
  [[nodiscard]] CUstream other_stream(std::uint8_t s, CUstream avoid) const
  {
    CUstream const chosen = streams_[s % streams_.size()];
    return chosen != avoid ? chosen : streams_[(s + 1) % streams_.size()];
  }

  [[nodiscard]] std::uint64_t next_seed() noexcept { return next_seed_ = mix64(next_seed_); }

  [[nodiscard]] content new_content(std::uint8_t kind)
  {
    return content{next_seed(), static_cast<content_kind>(kind % content_kind_count), false, 0};
  }

  // ------------------------------------------------------------------ failures

  [[noreturn]] static void fail(std::string signature, std::string const& detail)
  {
    throw model_failure(std::move(signature), detail);
  }

  [[nodiscard]] static char const* error_kind(std::exception const& e) noexcept
  {
    if (dynamic_cast<restore_error const*>(&e) != nullptr) { return "restore_error"; }
    if (dynamic_cast<cuda_error const*>(&e) != nullptr) { return "cuda_error"; }
    if (dynamic_cast<out_of_memory const*>(&e) != nullptr) { return "out_of_memory"; }
    if (dynamic_cast<usage_error const*>(&e) != nullptr) { return "usage_error"; }
    return "exception";
  }

  /// A check() text without the pool name and the numbers, to tell kinds of failure apart.
  [[nodiscard]] static std::string normalized(std::string const& problem)
  {
    std::string text =
      problem.substr(problem.find(": ") == std::string::npos ? 0 : problem.find(": ") + 2);
    text.erase(
      std::remove_if(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }),
      text.end());
    return text;
  }

  allocator* alloc_;
  driver const* drv_;
  fault_gate* gate_;
  runner_config config_;
  std::size_t page_size_;
  std::size_t device_bytes_;
  std::uint64_t next_seed_;
  std::vector<CUstream> streams_;
  std::vector<pool_slot> pools_;
  std::size_t pools_created_{0};
  std::map<CUdeviceptr, CUdeviceptr> live_;  // start -> end of every live block
  bool streams_busy_{false};                 // memsets may be queued on the streams
  cudasim_census census_base_{};             // the driver's objects before the first op
  runner_counters counters_;
  std::vector<std::size_t> candidates_;
  std::vector<std::byte> expected_;
  std::vector<std::byte> actual_;
};

}  // namespace swapalloc::testing::model
