/**
 * @file page_table.hpp
 * @brief The residency of every page of one pool's range, and the one table of the changes
 *        a page may go through. Bookkeeping only: no driver call.
 *
 * A page (DESIGN §4) is the unit of residency:
 *
 * | state       | device memory      | where its live bytes are | users (non-free blocks) |
 * |-------------|--------------------|--------------------------|-------------------------|
 * | `unmapped`  | none               | nowhere: it holds none   | none                    |
 * | `resident`  | mapped, accessible | on the device            | any                     |
 * | `evicted`   | none               | in its host copy         | at least one            |
 * | `restoring` | mapped, accessible | in its host copy         | at least one            |
 *
 * `restoring` is a page mapped again at its address whose bytes are not yet (or, after a
 * restore whose rollback could not unmap it, no longer) the data: the host copy stays the
 * only truth until the restore that fills it completes. It is never counted as resident.
 * Free space on `evicted` and `restoring` pages is *parked* (block_cache.hpp): no request
 * may land where the data lives on the host.
 *
 * The allowed changes, and what makes each (`page_change_allowed`):
 *
 * | from        | to          | made by                                                    |
 * |-------------|-------------|------------------------------------------------------------|
 * | `unmapped`  | `resident`  | mapping a fresh page under a new block                     |
 * | `resident`  | `unmapped`  | releasing a page no block uses (empty_cache, evict)        |
 * | `resident`  | `evicted`   | evict: the live bytes are in a host copy, the page unmapped|
 * | `evicted`   | `restoring` | restore: the page is mapped again at its address           |
 * | `restoring` | `resident`  | restore filled it; or its last block was freed             |
 * | `restoring` | `evicted`   | a failed restore unmapped it again; or evict               |
 * | `evicted`   | `unmapped`  | its last block was freed: the host copy holds nothing      |
 *
 * Everything else is a bug, above all `evicted` to `resident`: a fresh page mapped over
 * an evicted one would hide the data in its host copy (issue 9). A change to `unmapped`
 * needs a page without users; a change to `evicted` or `restoring` one with users.
 *
 * Thread safety: none. The pool's owner serializes calls.
 */
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace swapalloc {

/// Residency of one page. See the file comment.
enum class page_state : std::uint8_t { unmapped, resident, evicted, restoring };

[[nodiscard]] constexpr char const* to_string(page_state state) noexcept
{
  switch (state) {
    case page_state::unmapped:
      return "unmapped";
    case page_state::resident:
      return "resident";
    case page_state::evicted:
      return "evicted";
    case page_state::restoring:
      return "restoring";
  }
  return "?";
}

/// True when a page in `state` has its data in its host copy: its free space is parked.
[[nodiscard]] constexpr bool data_on_host(page_state state) noexcept
{
  return state == page_state::evicted || state == page_state::restoring;
}

/// True when a page may change from `from` to `to` (the table of the file comment).
[[nodiscard]] constexpr bool page_change_allowed(page_state from, page_state to) noexcept
{
  switch (from) {
    case page_state::unmapped:
      return to == page_state::resident;
    case page_state::resident:
      return to == page_state::unmapped || to == page_state::evicted;
    case page_state::evicted:
      return to == page_state::restoring || to == page_state::unmapped;
    case page_state::restoring:
      return to == page_state::resident || to == page_state::evicted;
  }
  return false;
}

/// The pages of one pool's range: state and users of each, with counts. See the file comment.
class page_table {
 public:
  /// `pages` pages, all unmapped and unused.
  explicit page_table(std::size_t pages) : pages_(pages)
  {
    counts_[static_cast<std::size_t>(page_state::unmapped)] = pages;
  }

  [[nodiscard]] std::size_t size() const noexcept { return pages_.size(); }
  [[nodiscard]] page_state state(std::size_t index) const noexcept { return pages_[index].state; }
  /// Non-free blocks touching page `index`.
  [[nodiscard]] std::uint32_t users(std::size_t index) const noexcept
  {
    return pages_[index].users;
  }
  /// Pages in `state`. Cost: a load.
  [[nodiscard]] std::size_t count(page_state state) const noexcept
  {
    return counts_[static_cast<std::size_t>(state)];
  }
  /// Pages whose data is in their host copy (`evicted` and `restoring`). Cost: two loads.
  [[nodiscard]] std::size_t parked_pages() const noexcept
  {
    return count(page_state::evicted) + count(page_state::restoring);
  }

  /**
   * @brief Throws unless every page of [first, first + count) may change to `to`.
   * @throws std::logic_error naming the first page that may not, its state and users:
   *         a bug in the caller, reported before anything (a driver call) is done.
   */
  void require_change(std::size_t first, std::size_t count, page_state to) const
  {
    if (first > pages_.size() || count > pages_.size() - first) {
      throw std::logic_error("swapalloc: page_table: pages [" + std::to_string(first) + ", " +
                             std::to_string(first + count) + ") lie outside the " +
                             std::to_string(pages_.size()) + " pages of the range");
    }
    for (std::size_t index = first; index < first + count; ++index) {
      page_info const& page = pages_[index];
      bool const users_ok   = to == page_state::unmapped ? page.users == 0
                              : data_on_host(to)         ? page.users != 0
                                                         : true;
      if (!page_change_allowed(page.state, to) || !users_ok) {
        throw std::logic_error("swapalloc: page " + std::to_string(index) +
                               " may not change from " + to_string(page.state) + " to " +
                               to_string(to) + " (" + std::to_string(page.users) +
                               " blocks use it)");
      }
    }
  }

  /// Changes pages [first, first + count) to `to`. @pre require_change passed for them.
  void change(std::size_t first, std::size_t count, page_state to) noexcept
  {
    for (std::size_t index = first; index < first + count; ++index) {
      --counts_[static_cast<std::size_t>(pages_[index].state)];
      ++counts_[static_cast<std::size_t>(to)];
      pages_[index].state = to;
    }
  }

  /// Adds `delta` (+1 or -1) to the users of pages [first, last].
  void add_users(std::size_t first, std::size_t last, int delta) noexcept
  {
    for (std::size_t index = first; index <= last; ++index) {
      pages_[index].users =
        static_cast<std::uint32_t>(static_cast<int>(pages_[index].users) + delta);
    }
  }

  /// Calls `visit(first, count)` for each run of pages in [first, stop) whose info
  /// satisfies `wanted(state, users)`.
  template <typename Predicate, typename Visitor>
  void for_each_run(std::size_t first, std::size_t stop, Predicate&& wanted, Visitor&& visit) const
  {
    std::size_t index = first;
    while (index < stop) {
      if (!wanted(pages_[index].state, pages_[index].users)) {
        ++index;
        continue;
      }
      std::size_t const run_start = index;
      while (index < stop && wanted(pages_[index].state, pages_[index].users)) {
        ++index;
      }
      visit(run_start, index - run_start);
    }
  }

  /**
   * @brief Checks the table against `users` (counted from the blocks): the users of every
   *        page, the states that need users or none, and the counts. Returns the first
   *        problem, or an empty string. Cost: a walk over the pages (tests only).
   */
  [[nodiscard]] std::string check(std::vector<std::uint32_t> const& users) const
  {
    std::array<std::size_t, 4> counted{};
    for (std::size_t index = 0; index < pages_.size(); ++index) {
      page_info const& page = pages_[index];
      std::string const where =
        " (page " + std::to_string(index) + ", " + to_string(page.state) + ")";
      if (users[index] != page.users) { return "user count" + where; }
      if (page.state == page_state::unmapped && page.users != 0) {
        return "an unmapped page has blocks" + where;
      }
      if (data_on_host(page.state) && page.users == 0) {
        return "a page whose data is on the host has no block" + where;
      }
      ++counted[static_cast<std::size_t>(page.state)];
    }
    for (std::size_t state = 0; state < 4; ++state) {
      if (counted[state] != counts_[state]) {
        return std::string("count of ") + to_string(static_cast<page_state>(state)) + " pages";
      }
    }
    return {};
  }

 private:
  struct page_info {
    page_state state{page_state::unmapped};
    std::uint32_t users{0};
  };

  std::vector<page_info> pages_;
  std::array<std::size_t, 4> counts_{};  // pages by page_state
};

}  // namespace swapalloc
