/**
 * @file block_cache.hpp
 * @brief Best-fit blocks inside one pool's address range: split, coalesce, stream-ordered
 *        reuse, and the residency of the pages under them. Bookkeeping only: no driver call.
 *
 * The range [0, capacity) is one linear address space (offsets; the pool adds its base).
 * It is covered, from 0 to a high-water mark `end()`, by blocks in address order; above
 * `end()` the range is untouched. Pages of `page_size` bytes are the unit of residency.
 *
 * - **Small and large kept apart.** Requests of at most 1 MiB are *small*; they are carved
 *   only from *small pages*, single pages set aside for them, so small blocks never split
 *   a large one. Large blocks lie anywhere else, contiguous across page boundaries. When a
 *   small page becomes wholly free it returns to the large space as an ordinary free
 *   page, without any driver call: that is what keeps reserved bytes close to live bytes.
 *   On the recorded traces (tests/data/traces) peak reserved / peak live is 1.04, 1.06
 *   and 1.13 (bench_alloc's BM_Replay); a model of PyTorch-style separate small and large
 *   segments per stream gave 1.05, 1.14 and 1.51 on the same traces.
 * - **Streams.** A block freed on its allocation stream is reusable at once on that
 *   stream only: every free block carries its stream's tag. Untagged free blocks (never
 *   used, or untagged after a device synchronization by `forget_streams`) serve any stream.
 * - **Two levels of caching.** A freed block goes first into an exact-size *bin* of its
 *   stream (the hot path, O(1)); bins are flushed into the coalescing best-fit index only
 *   when a request misses both the bin and the index, so the address space is coalesced
 *   before it is ever extended.
 *
 * Block states: `free` (in the best-fit index), `cached` (in a bin), `allocated` (the
 * caller's), `awaiting_events` (freed, waiting for events on other streams; the owner
 * then passes it to `cache`). Page *users* count the non-free blocks touching a page: a
 * resident page with no users holds no data and may be released. Cached blocks count
 * until a flush (the hot path touches no page), so a page whose users are all cached
 * holds no data either: `for_each_releasable_run` names both kinds.
 *
 * - **Parked space** (the swap tier). Pages whose data is in host memory (`evicted`,
 *   `restoring`: page_table.hpp) keep their allocated blocks; every free byte on them is
 *   *parked* (`parked_tag`), so no request lands on a page whose other bytes live in
 *   host memory. Parking is not a step a caller can forget: `change_pages` and `release`
 *   re-park the blocks they touch before returning, and the high-water mark never ends
 *   inside such a page (the rest of that page is parked free space), so the range is
 *   never grown onto one either.
 *
 * Invariants (`check`): blocks tile [0, end()) in address order; free neighbours that can
 * merge are merged; small blocks stay inside one page, apart from large ones; page users
 * count the non-free blocks; a free block is parked exactly when its pages hold their
 * data on the host; cached and waiting blocks lie on resident pages only; allocated ones
 * never on unmapped pages; end() is not inside a page whose data is on the host.
 *
 * Thread safety: none. The pool's owner (one device's allocator state) serializes calls.
 */
#pragma once

#include <swapalloc/bin_table.hpp>
#include <swapalloc/block.hpp>
#include <swapalloc/page_table.hpp>

#include <cuda.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace swapalloc {

/// The blocks and page residency of one pool's range. See the file comment.
class block_cache {
 public:
  /**
   * @param capacity bytes of the range; a positive multiple of `page_size`.
   * @param page_size bytes per page: a multiple of block_granule of at least
   *        small_request_limit, so that every small request fits in one small page.
   * @throws std::invalid_argument naming the bad value.
   */
  block_cache(std::size_t capacity, std::size_t page_size)
    : capacity_(capacity), page_size_(page_size), pages_(checked_pages(capacity, page_size))
  {
  }

  block_cache(block_cache const&)            = delete;
  block_cache& operator=(block_cache const&) = delete;

  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] std::size_t page_size() const noexcept { return page_size_; }
  [[nodiscard]] std::size_t page_count() const noexcept { return pages_.size(); }
  /// High-water mark: blocks cover [0, end()).
  [[nodiscard]] std::size_t end() const noexcept { return end_; }
  [[nodiscard]] page_state page(std::size_t index) const noexcept { return pages_.state(index); }
  /// Non-free blocks touching page `index`.
  [[nodiscard]] std::uint32_t page_users(std::size_t index) const noexcept
  {
    return pages_.users(index);
  }
  /// The states and users of the pages.
  [[nodiscard]] page_table const& pages() const noexcept { return pages_; }
  /// The pages a block touches: [first_page, last_page].
  [[nodiscard]] std::size_t first_page(block const& b) const noexcept
  {
    return b.offset / page_size_;
  }
  [[nodiscard]] std::size_t last_page(block const& b) const noexcept
  {
    return (b.end() - 1) / page_size_;
  }
  /// Pages in state `resident`.
  [[nodiscard]] std::size_t resident_pages() const noexcept
  {
    return pages_.count(page_state::resident);
  }
  /// Pages whose data is in host memory (`evicted` or `restoring`). Cost: two loads.
  [[nodiscard]] std::size_t parked_pages() const noexcept { return pages_.parked_pages(); }
  /// Blocks in bins.
  [[nodiscard]] std::size_t cached_blocks() const noexcept { return cached_blocks_; }

  /**
   * @brief Hot path: pops a cached block of exactly `rounded` bytes for `tag`, or nullptr.
   * Cost: one hash lookup and two pointer writes; no allocation.
   * @pre `rounded` == round_request(n) for some n.
   */
  [[nodiscard]] block* take_cached(std::size_t rounded, stream_tag tag) noexcept
  {
    block** const head = bins_.find(tag, rounded);
    if (head == nullptr || *head == nullptr) { return nullptr; }
    block* const found = *head;
    *head              = found->bin_next;
    found->bin_next    = nullptr;
    found->state       = block_state::allocated;
    --cached_blocks_;
    return found;
  }

  /**
   * @brief Hot path: puts a freed block into its bin, reusable at once on its stream.
   * Cost: one hash lookup and two pointer writes; allocates only the first time a
   * (stream, size) pair is cached.
   * @pre `freed` is allocated or awaiting_events.
   */
  void cache(block* freed)
  {
    block*& head     = bins_.at(freed->tag, freed->size);
    freed->bin_next  = head;
    freed->state     = block_state::cached;
    freed->requested = 0;
    head             = freed;
    ++cached_blocks_;
  }

  /// Marks an allocated block as freed but waiting for `events` events.
  void hold(block* freed, std::uint32_t events) noexcept
  {
    freed->state          = block_state::awaiting_events;
    freed->pending_events = events;
  }

  /**
   * @brief Slow path: a block of exactly `rounded` bytes for `tag` from the best-fit index,
   *        flushing the bins first if needed, else by extending the used range.
   * @return the block (state allocated; its pages may need mapping: see
   *         `for_each_missing_run`), or nullptr if the range has no room for it.
   */
  [[nodiscard]] block* take(std::size_t rounded, stream_tag tag)
  {
    block_kind const kind = rounded <= small_request_limit ? block_kind::small : block_kind::large;
    block* found          = best_fit(kind, tag, rounded);
    if (found == nullptr && cached_blocks_ > 0) {
      flush_bins();
      found = best_fit(kind, tag, rounded);
    }
    if (found == nullptr) {
      found = kind == block_kind::small ? small_page(tag) : grow(rounded, tag);
      if (found == nullptr) { return nullptr; }
    } else {
      index_.erase(found);
    }
    return claim(found, rounded, tag);
  }

  /**
   * @brief Returns a block to the best-fit index, coalescing it with free neighbours.
   * Used to undo a `take` whose pages could not be mapped, and by `flush_bins`.
   * @pre `freed` is not free and not in a bin (a cached block is unlinked from it first).
   */
  /// On pages whose data is in host memory, the freed bytes are parked.
  /// @throws std::bad_alloc (parking may split blocks) before anything changes.
  void release(block* freed)
  {
    bool const on_parked_pages = parked_pages() != 0 && touches_parked(*freed);
    if (on_parked_pages) { reserve_spare(last_page(*freed) - first_page(*freed) + 2); }
    change_users(*freed, -1);  // every state but free counts as a user of its pages
    freed->state     = block_state::free;
    freed->requested = 0;
    freed->used_by.clear();
    std::size_t const start = freed->offset;
    std::size_t const stop  = freed->end();
    insert_coalesced(freed);
    if (on_parked_pages) { repark_span(start, stop); }
  }

  /// True when `b` touches a page whose data is in host memory. Cost: a loop over its pages.
  [[nodiscard]] bool touches_parked(block const& b) const noexcept
  {
    for (std::size_t index = first_page(b); index <= last_page(b); ++index) {
      if (data_on_host(pages_.state(index))) { return true; }
    }
    return false;
  }

  /// Moves every cached block into the best-fit index, coalescing.
  void flush_bins()
  {
    bins_.for_each([&](stream_tag, std::size_t, block*& head) {
      while (head != nullptr) {
        block* const next = head->bin_next;
        head->bin_next    = nullptr;
        release(head);
        head = next;
      }
    });
    cached_blocks_ = 0;
  }

  /**
   * @brief Makes every free block reusable by any stream and coalesces across the former
   *        stream boundaries. @pre all work on the device has completed (the caller has
   *        synchronized it), and the bins are flushed.
   */
  void forget_streams()
  {
    // In address order: each free block, untagged, merges with the untagged free block
    // before it (already processed); the one after it merges in on its own turn.
    for (block* current = first_; current != nullptr; current = current->next) {
      if (current->state != block_state::free || current->tag == parked_tag) { continue; }
      index_.erase(current);
      current->tag = any_stream;
      current      = insert_coalesced(current);
    }
  }

  /// Calls `visit(first_page, count)` for each run of pages of `b` that are not resident.
  template <typename Visitor>
  void for_each_missing_run(block const& b, Visitor&& visit) const
  {
    pages_.for_each_run(
      first_page(b), last_page(b) + 1,
      [](page_state state, std::uint32_t) { return state != page_state::resident; }, visit);
  }

  /// Calls `visit(first_page, count)` for each run of resident pages without users.
  template <typename Visitor>
  void for_each_idle_run(Visitor&& visit) const
  {
    pages_.for_each_run(
      0, pages_.size(),
      [](page_state state, std::uint32_t users) {
        return state == page_state::resident && users == 0;
      },
      visit);
  }

  /**
   * @brief Calls `visit(first_page, count)` for each run of *releasable* pages: resident
   *        pages that no allocated or waiting block touches. Free and cached blocks hold
   *        no data, so they keep no page; but a cached block still counts among its pages'
   *        users until `flush_bins`, so these are the pages `for_each_idle_run` names after
   *        a flush, found without one (a flush turns cached blocks into free ones and
   *        changes no page). This is what a pool's release gives back, and what it reports
   *        before releasing.
   * Changes nothing, allocates nothing. Cost: a walk over the pages; on a page with users,
   * over the blocks touching it, from a cursor that only moves forward (a block is looked
   * at once per page it touches: at most about pages + 2 × blocks steps in all).
   */
  template <typename Visitor>
  void for_each_releasable_run(Visitor&& visit) const
  {
    block const* cursor   = first_;  // the blocks before it end below the current page
    std::size_t run_start = 0;
    std::size_t run_count = 0;
    for (std::size_t index = 0; index < pages_.size(); ++index) {
      bool const releasable = pages_.state(index) == page_state::resident &&
                              (pages_.users(index) == 0 || !holds_data(index, cursor));
      if (releasable) {
        run_start = run_count == 0 ? index : run_start;
        ++run_count;
        continue;
      }
      if (run_count != 0) { visit(run_start, run_count); }
      run_count = 0;
    }
    if (run_count != 0) { visit(run_start, run_count); }
  }

  /**
   * @brief Throws unless pages [first, first + count) may change to `to` (page_table.hpp),
   *        and reserves what `change_pages` needs, so that it cannot fail after it.
   *        Changes nothing. Call it before the driver call that makes a change real, so
   *        that a bug is caught before anything is mapped or unmapped.
   * @throws std::logic_error naming the page; std::bad_alloc.
   */
  void require_change(std::size_t first, std::size_t count, page_state to)
  {
    pages_.require_change(first, count, to);
    reserve_spare(count + 2);  // splits at the run's page boundaries, and a pad at end()
  }

  /**
   * @brief Changes pages [first, first + count) to `to` and re-parks the free space on
   *        them: parked where their data is now in host memory, free for any stream where
   *        it no longer is (@pre the device was synchronized since they were evicted: it
   *        was, for the copies). Cost: a walk over the blocks on those pages.
   * A cached block is never on such a page (eviction flushes the bins first), so the bins
   * need no change.
   * @throws std::logic_error or std::bad_alloc (require_change) before anything changes;
   *         never after a successful require_change for the same pages.
   */
  void change_pages(std::size_t first, std::size_t count, page_state to)
  {
    require_change(first, count, to);
    bool parking_changes = false;
    for (std::size_t index = first; index < first + count; ++index) {
      parking_changes = parking_changes || data_on_host(pages_.state(index)) != data_on_host(to);
    }
    pages_.change(first, count, to);
    if (parking_changes) { repark_span(first * page_size_, (first + count) * page_size_); }
  }

 private:
  /// True when an allocated or waiting block touches page `index`. The walk starts at
  /// `cursor`: every block before it must end at or below the page's start (ask pages in
  /// increasing order, starting from `first_`); it is moved past the blocks that do.
  [[nodiscard]] bool holds_data(std::size_t index, block const*& cursor) const noexcept
  {
    std::size_t const start = index * page_size_;
    std::size_t const stop  = start + page_size_;
    while (cursor != nullptr && cursor->end() <= start) {
      cursor = cursor->next;
    }
    for (block const* current = cursor; current != nullptr && current->offset < stop;
         current              = current->next) {
      if (current->state == block_state::allocated ||
          current->state == block_state::awaiting_events) {
        return true;
      }
    }
    return false;
  }

  /// True when free space on page `index` must be parked.
  [[nodiscard]] bool parks(std::size_t index) const noexcept
  {
    return data_on_host(pages_.state(index));
  }

  /**
   * Re-parks the free blocks overlapping [start, stop) (offsets): each is cut at the page
   * boundaries where parking changes and tagged (parked; or, where it is not, its former
   * stream, any stream if it was parked), then every piece is coalesced with its
   * neighbours. Pieces of one tag lie on pages of one kind, so no merge can undo a cut.
   * Finally the high-water mark is padded out of a parked page. @pre reserve_spare(pages
   * of the span + 2) succeeded: nothing here allocates. Cost: a walk over those blocks.
   */
  void repark_span(std::size_t start, std::size_t stop) noexcept
  {
    if (start < end_) {
      block* const from          = locate(start);
      std::size_t const span_end = cut_for_parking(from, stop);
      for (block* current = from; current != nullptr && current->offset < span_end;
           current        = current->next) {
        if (current->state == block_state::free) { current = insert_coalesced(current); }
      }
    }
    pad_parked_end();
  }

  /// Phase one of repark_span: takes the free blocks from `from` up to `stop` out of the
  /// index, cut and tagged. Returns where the last of them ends.
  std::size_t cut_for_parking(block* from, std::size_t stop) noexcept
  {
    std::size_t span_end = stop;
    for (block* current = from; current != nullptr && current->offset < stop;
         current        = current->next) {
      span_end = current->end() > span_end ? current->end() : span_end;
      if (current->state != block_state::free) { continue; }
      index_.erase(current);
      stream_tag const unparked = current->tag == parked_tag ? any_stream : current->tag;
      for (;;) {  // `current` becomes each piece in turn
        bool const parked = parks(first_page(*current));
        current->tag      = parked ? parked_tag : unparked;
        std::size_t split = first_page(*current) + 1;
        while (split <= last_page(*current) && parks(split) == parked) {
          ++split;
        }
        if (split > last_page(*current)) { break; }
        block* const rest = new_block();
        rest->offset      = split * page_size_;
        rest->size        = current->end() - rest->offset;
        rest->kind        = current->kind;
        link_after(current, rest);
        current->size = rest->offset - current->offset;
        current       = rest;
      }
    }
    return span_end;
  }

  /// New blocks grow from end(): if it lies inside a parked page, the rest of that page
  /// becomes parked free space, so growth starts on a fresh page. (A small page always
  /// ends on a page boundary, so the pad, large, shares its page with large blocks only.)
  void pad_parked_end() noexcept
  {
    if (end_ % page_size_ != 0 && parks(end_ / page_size_)) {
      block* const pad = append((end_ / page_size_ + 1) * page_size_ - end_, parked_tag);
      insert_coalesced(pad);
    }
  }

  /// The block that contains `offset` (< end()), found from the last one found: repeated
  /// lookups in address order (a run of pages) cost O(1) each.
  [[nodiscard]] block* locate(std::size_t offset) const noexcept
  {
    block* current = cursor_ != nullptr ? cursor_ : first_;
    while (current->offset > offset) {
      current = current->prev;
    }
    while (current->end() <= offset) {
      current = current->next;
    }
    cursor_ = current;
    return current;
  }

  /// Makes sure `count` block descriptors can be had, and recycled again, without
  /// allocating (what the noexcept parking needs). @throws std::bad_alloc.
  void reserve_spare(std::size_t count)
  {
    spare_.reserve(storage_.size() + count);  // recycle() then never reallocates
    while (spare_.size() < count) {
      spare_.push_back(&storage_.emplace_back());
    }
  }

 public:
  /// Calls `visit(page, offset, bytes)` for each part of an allocated block's requested
  /// bytes on pages [first, first + count), in address order: the bytes that are data
  /// (the rounding at a block's end is not). Cost: a walk over the blocks on those pages
  /// (the first found from the last lookup, so a page-by-page sweep is linear).
  template <typename Visitor>
  void for_each_live_range(std::size_t first, std::size_t count, Visitor&& visit) const
  {
    std::size_t const start = first * page_size_;
    std::size_t const stop  = (first + count) * page_size_;
    if (start >= end_) { return; }
    for (block const* current = locate(start); current != nullptr && current->offset < stop;
         current              = current->next) {
      std::size_t const data_end = current->offset + current->requested;
      if (data_end <= start || current->state != block_state::allocated) { continue; }
      std::size_t position  = current->offset > start ? current->offset : start;
      std::size_t const end = data_end < stop ? data_end : stop;
      while (position < end) {
        std::size_t const page_end = (position / page_size_ + 1) * page_size_;
        std::size_t const piece    = (page_end < end ? page_end : end) - position;
        visit(position / page_size_, position, piece);
        position += piece;
      }
    }
  }

  /// Gives back the untouched tail: if the last block is free and every page it alone
  /// covers is unmapped, the high-water mark drops to its start; but never into a page
  /// whose data is in host memory, whose rest stays parked up to the page's end.
  void trim_end() noexcept
  {
    while (last_ != nullptr && last_->state == block_state::free &&
           last_->kind == block_kind::large) {
      std::size_t const first_whole = (last_->offset + page_size_ - 1) / page_size_;
      for (std::size_t index = first_whole; index < (end_ + page_size_ - 1) / page_size_; ++index) {
        if (pages_.state(index) != page_state::unmapped) { return; }
      }
      if (last_->offset % page_size_ != 0 && parks(last_->offset / page_size_)) {
        std::size_t const boundary = first_whole * page_size_;
        if (boundary >= end_) { return; }
        index_.erase(last_);  // keep the parked part, drop the unmapped pages above it
        last_->size = boundary - last_->offset;
        end_        = boundary;
        index_.insert(last_);
        return;
      }
      block* const tail = last_;
      index_.erase(tail);
      end_  = tail->offset;
      last_ = tail->prev;
      if (last_ != nullptr) {
        last_->next = nullptr;
      } else {
        first_ = nullptr;
      }
      recycle(tail);
    }
  }

  /// Largest run of free bytes on resident pages that one request could get after a
  /// flush: adjacent free and cached blocks count together when they would coalesce.
  [[nodiscard]] std::size_t largest_free_resident() const noexcept
  {
    std::size_t largest        = 0;
    std::size_t run            = 0;  // free resident bytes ending where `previous` ends
    block const* previous_free = nullptr;
    for (block const* current = first_; current != nullptr; current = current->next) {
      bool const is_free =
        current->state == block_state::free || current->state == block_state::cached;
      if (!is_free) {
        previous_free = nullptr;
        run           = 0;
        continue;
      }
      if (previous_free == nullptr || !compatible(*previous_free, *current)) { run = 0; }
      // Walk the block page by page: a page that is not resident breaks the run.
      std::size_t position = current->offset;
      while (position < current->end()) {
        std::size_t const page_end = (position / page_size_ + 1) * page_size_;
        std::size_t const stop     = page_end < current->end() ? page_end : current->end();
        if (pages_.state(position / page_size_) == page_state::resident) {
          run += stop - position;
          largest = run > largest ? run : largest;
        } else {
          run = 0;
        }
        position = stop;
      }
      previous_free = current;
    }
    return largest;
  }

  /// Calls `visit(block const&)` for every block in address order.
  template <typename Visitor>
  void for_each_block(Visitor&& visit) const
  {
    for (block const* current = first_; current != nullptr; current = current->next) {
      visit(*current);
    }
  }

  /// The block that starts at `offset`, or nullptr. Cost: a walk over the blocks (used on
  /// error paths only, to name what a bad pointer is).
  [[nodiscard]] block const* block_at(std::size_t offset) const noexcept
  {
    for (block const* current = first_; current != nullptr; current = current->next) {
      if (current->offset <= offset && offset < current->end()) { return current; }
    }
    return nullptr;
  }

  /**
   * @brief Checks every invariant of the file comment; returns a description of the first
   *        broken one, or an empty string. Cost: a walk over blocks, bins and pages (tests).
   */
  [[nodiscard]] std::string check() const
  {
    std::vector<std::uint32_t> users(pages_.size(), 0);
    std::vector<std::uint8_t> kinds(pages_.size(), 0);  // bit 0: small blocks, bit 1: large
    std::size_t expected_offset = 0;
    std::size_t indexed         = 0;
    block const* previous       = nullptr;
    for (block const* current = first_; current != nullptr; current = current->next) {
      if (current->prev != previous) { return "broken prev link"; }
      if (current->offset != expected_offset) { return "gap or overlap"; }
      std::string problem = check_block(*current, previous, users, kinds);
      if (!problem.empty()) { return problem + " at offset " + std::to_string(current->offset); }
      indexed += current->state == block_state::free ? 1 : 0;
      expected_offset = current->end();
      previous        = current;
    }
    if (previous != last_) { return "last block pointer"; }
    if (expected_offset != end_) { return "blocks do not end at end()"; }
    if (end_ % page_size_ != 0 && parks(end_ / page_size_)) {
      return "end() lies inside page " + std::to_string(end_ / page_size_) +
             ", whose data is in host memory";
    }
    if (indexed != index_.size()) { return "index holds blocks that are not in the list"; }
    if (std::string problem = check_bins(); !problem.empty()) { return problem; }
    return pages_.check(users);
  }

 private:
  /// check() for one block; counts its users and kinds per page.
  [[nodiscard]] std::string check_block(block const& current, block const* previous,
                                        std::vector<std::uint32_t>& users,
                                        std::vector<std::uint8_t>& kinds) const
  {
    if (current.size == 0 || current.size % block_granule != 0) { return "bad size"; }
    if (current.kind == block_kind::small && first_page(current) != last_page(current)) {
      return "small block crosses a page";
    }
    bool const free     = current.state == block_state::free;
    bool const in_index = index_.count(const_cast<block*>(&current)) != 0;
    if (in_index != free) { return "index membership"; }
    if (free && previous != nullptr && mergeable(*previous, current)) {
      return "uncoalesced free neighbours";
    }
    for (std::size_t p = first_page(current); p <= last_page(current); ++p) {
      kinds[p] |= current.kind == block_kind::small ? 1U : 2U;
      if (kinds[p] == 3U) { return "small and large blocks share page " + std::to_string(p); }
      page_state const state = pages_.state(p);
      if (free) {
        if (data_on_host(state) != (current.tag == parked_tag)) {
          return "free block parked on a page whose data is not in host memory, or not "
                 "parked on one (page " +
                 std::to_string(p) + ", " + to_string(state) + ")";
        }
        continue;
      }
      ++users[p];
      if (current.state == block_state::allocated && state == page_state::unmapped) {
        return "allocated block on unmapped page " + std::to_string(p);
      }
      if (current.state != block_state::allocated && state != page_state::resident) {
        return "cached or waiting block on " + std::string(to_string(state)) + " page " +
               std::to_string(p);
      }
    }
    return {};
  }

  /// check() for the bins: each holds cached blocks of its tag and size, and the count.
  [[nodiscard]] std::string check_bins() const
  {
    std::size_t binned = 0;
    std::string wrong;
    bins_.for_each([&](stream_tag tag, std::size_t size, block* const& head) {
      for (block const* entry = head; entry != nullptr; entry = entry->bin_next) {
        if (entry->state != block_state::cached || entry->size != size || entry->tag != tag) {
          wrong = "bin holds a wrong block at offset " + std::to_string(entry->offset);
        }
        ++binned;
      }
    });
    if (!wrong.empty()) { return wrong; }
    if (binned != cached_blocks_) { return "cached block count"; }
    return {};
  }

  /// Best-fit order: kind, then stream, then size, then address (lowest first).
  struct fit_key {
    block_kind kind;
    stream_tag tag;
    std::size_t size;
    std::size_t offset;
  };
  struct by_fit {
    using is_transparent = void;
    static fit_key key(block const* b) noexcept { return {b->kind, b->tag, b->size, b->offset}; }
    static fit_key key(fit_key const& k) noexcept { return k; }
    template <typename A, typename B>
    bool operator()(A const& a, B const& b) const noexcept
    {
      fit_key const x = key(a);
      fit_key const y = key(b);
      if (x.kind != y.kind) { return x.kind < y.kind; }
      if (x.tag != y.tag) { return x.tag < y.tag; }
      if (x.size != y.size) { return x.size < y.size; }
      return x.offset < y.offset;
    }
  };

  /// The number of pages of a range, after checking the constructor's arguments.
  [[nodiscard]] static std::size_t checked_pages(std::size_t capacity, std::size_t page_size)
  {
    if (page_size < small_request_limit || page_size % block_granule != 0) {
      throw std::invalid_argument("swapalloc: block_cache page_size=" + std::to_string(page_size) +
                                  ": expected a multiple of 512 of at least 1 MiB");
    }
    if (capacity == 0 || capacity % page_size != 0) {
      throw std::invalid_argument(
        "swapalloc: block_cache capacity=" + std::to_string(capacity) +
        ": expected a positive multiple of page_size=" + std::to_string(page_size));
    }
    return capacity / page_size;
  }

  /// The smallest indexed block of `kind` with at least `size` bytes, for `tag` or any.
  [[nodiscard]] block* best_fit(block_kind kind, stream_tag tag, std::size_t size) const
  {
    block* best = lowest_fit(kind, tag, size);
    if (tag != any_stream) {
      block* const shared = lowest_fit(kind, any_stream, size);
      if (shared != nullptr && (best == nullptr || shared->size < best->size)) { best = shared; }
    }
    return best;
  }

  [[nodiscard]] block* lowest_fit(block_kind kind, stream_tag tag, std::size_t size) const
  {
    auto const found = index_.lower_bound(fit_key{kind, tag, size, 0});
    if (found == index_.end() || (*found)->kind != kind || (*found)->tag != tag) { return nullptr; }
    return *found;
  }

  /// Turns an unindexed free block of at least `rounded` bytes into an allocated block of
  /// exactly `rounded` bytes at its start; the rest goes back to the index.
  block* claim(block* found, std::size_t rounded, stream_tag tag)
  {
    if (found->size > rounded) {
      block* const rest = new_block();
      rest->offset      = found->offset + rounded;
      rest->size        = found->size - rounded;
      rest->kind        = found->kind;
      rest->tag         = found->tag;
      link_after(found, rest);
      found->size = rounded;
      index_.insert(rest);
    }
    found->tag   = tag;
    found->state = block_state::allocated;
    change_users(*found, +1);
    return found;
  }

  /// A free small block of one whole page for `tag`: a page inside a free large block
  /// (resident pages first), else a new page above the high-water mark. Unindexed.
  block* small_page(stream_tag tag)
  {
    block* host             = nullptr;
    std::size_t host_page   = 0;
    bool host_resident      = false;
    auto const consider_tag = [&](stream_tag candidate_tag) {
      for (auto it = index_.lower_bound(fit_key{block_kind::large, candidate_tag, page_size_, 0});
           it != index_.end() && (*it)->kind == block_kind::large && (*it)->tag == candidate_tag;
           ++it) {
        block* const candidate = *it;
        for (std::size_t p = (candidate->offset + page_size_ - 1) / page_size_;
             (p + 1) * page_size_ <= candidate->end(); ++p) {
          bool const resident = pages_.state(p) == page_state::resident;
          if (host == nullptr || (resident && !host_resident)) {
            host          = candidate;
            host_page     = p;
            host_resident = resident;
          }
          if (host_resident) { return; }
        }
      }
    };
    consider_tag(tag);
    if (!host_resident && tag != any_stream) { consider_tag(any_stream); }
    if (host != nullptr) {
      index_.erase(host);
      std::size_t const start = host_page * page_size_;
      if (host->end() > start + page_size_) {  // the part above the page stays free
        block* const above = new_block();
        above->offset      = start + page_size_;
        above->size        = host->end() - above->offset;
        above->kind        = block_kind::large;
        above->tag         = host->tag;
        link_after(host, above);
        host->size = above->offset - host->offset;
        index_.insert(above);
      }
      if (host->offset < start) {  // so does the part below
        block* const page = new_block();
        page->offset      = start;
        page->size        = page_size_;
        link_after(host, page);
        host->size = start - host->offset;
        index_.insert(host);
        host = page;
      }
      host->kind = block_kind::small;
      host->tag  = tag;
      return host;
    }
    // Above the high-water mark, page-aligned.
    std::size_t const start = (end_ + page_size_ - 1) / page_size_ * page_size_;
    if (start + page_size_ > capacity_) { return nullptr; }
    if (start > end_) { pad_end_to(start, tag); }
    block* const page = append(page_size_, tag);
    page->kind        = block_kind::small;
    return page;
  }

  /// A free large block of exactly `rounded` bytes at the high-water mark, extending the
  /// last block if it is free and usable by `tag`. Unindexed. nullptr if out of range.
  block* grow(std::size_t rounded, stream_tag tag)
  {
    if (last_ != nullptr && extendable_by(*last_, tag)) {
      if (rounded - last_->size > capacity_ - end_) { return nullptr; }
      index_.erase(last_);
      end_ += rounded - last_->size;
      last_->size = rounded;
      last_->tag  = tag;
      return last_;
    }
    if (rounded > capacity_ - end_) { return nullptr; }
    return append(rounded, tag);
  }

  [[nodiscard]] static bool extendable_by(block const& b, stream_tag tag) noexcept
  {
    return b.state == block_state::free && b.kind == block_kind::large &&
           (b.tag == tag || b.tag == any_stream);
  }

  /// Covers [end_, start) with free large space for `tag`.
  void pad_end_to(std::size_t start, stream_tag tag)
  {
    if (last_ != nullptr && extendable_by(*last_, tag)) {
      index_.erase(last_);
      last_->size += start - end_;
      end_ = start;
      index_.insert(last_);
      return;
    }
    block* const pad = append(start - end_, tag);
    index_.insert(pad);
  }

  /// A new free, unindexed large block of `size` bytes at end_.
  block* append(std::size_t size, stream_tag tag)
  {
    block* const added = new_block();
    added->offset      = end_;
    added->size        = size;
    added->tag         = tag;
    added->prev        = last_;
    if (last_ != nullptr) {
      last_->next = added;
    } else {
      first_ = added;
    }
    last_ = added;
    end_ += size;
    return added;
  }

  [[nodiscard]] bool mergeable(block const& a, block const& b) const noexcept
  {
    if (a.state != block_state::free || b.state != block_state::free) { return false; }
    return compatible(a, b);
  }

  /// True when free neighbours `a` and `b` coalesce (once both are in the index).
  [[nodiscard]] bool compatible(block const& a, block const& b) const noexcept
  {
    if (a.kind != b.kind || a.tag != b.tag) { return false; }
    return a.kind == block_kind::large || a.offset / page_size_ == b.offset / page_size_;
  }

  /// Inserts an unindexed free block into the index after merging it with its free
  /// neighbours; a small block that grows to its whole page becomes large space again.
  block* insert_coalesced(block* freed)
  {
    for (;;) {
      if (freed->prev != nullptr && mergeable(*freed->prev, *freed)) {
        block* const lower = freed->prev;
        index_.erase(lower);
        lower->size += freed->size;
        unlink(freed);
        freed = lower;
      }
      if (freed->next != nullptr && mergeable(*freed, *freed->next)) {
        block* const upper = freed->next;
        index_.erase(upper);
        freed->size += upper->size;
        unlink(upper);
      }
      if (freed->kind == block_kind::small && freed->size == page_size_) {
        freed->kind = block_kind::large;  // merge again, now with large neighbours
        continue;
      }
      break;
    }
    index_.insert(freed);
    return freed;
  }

  void change_users(block const& b, int delta) noexcept
  {
    pages_.add_users(first_page(b), last_page(b), delta);
  }

  void link_after(block* anchor, block* added) noexcept
  {
    added->prev = anchor;
    added->next = anchor->next;
    if (anchor->next != nullptr) {
      anchor->next->prev = added;
    } else {
      last_ = added;
    }
    anchor->next = added;
  }

  void unlink(block* removed) noexcept
  {
    if (removed->prev != nullptr) {
      removed->prev->next = removed->next;
    } else {
      first_ = removed->next;
    }
    if (removed->next != nullptr) {
      removed->next->prev = removed->prev;
    } else {
      last_ = removed->prev;
    }
    recycle(removed);
  }

  block* new_block()
  {
    if (spare_.empty()) { return &storage_.emplace_back(); }
    block* const reused = spare_.back();
    spare_.pop_back();
    return reused;
  }

  void recycle(block* unused)
  {
    if (cursor_ == unused) { cursor_ = nullptr; }
    unused->used_by.clear();
    std::vector<CUstream> keep = std::move(unused->used_by);
    *unused                    = block{};
    unused->used_by            = std::move(keep);
    spare_.push_back(unused);
  }

  std::size_t capacity_;
  std::size_t page_size_;
  page_table pages_;
  std::size_t end_{0};
  block* first_{nullptr};
  block* last_{nullptr};
  mutable block* cursor_{nullptr};  // the block `locate` found last; reset when recycled
  std::set<block*, by_fit> index_;
  detail::bin_table bins_;
  std::size_t cached_blocks_{0};
  std::deque<block> storage_;  // stable addresses; descriptors are recycled, never freed
  std::vector<block*> spare_;
};

}  // namespace swapalloc
