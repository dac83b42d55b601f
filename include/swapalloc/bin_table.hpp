/**
 * @file bin_table.hpp
 * @brief The bins of a block cache: (stream tag, size) → a list of cached blocks.
 *
 * This is the hot path's lookup: freeing a block pushes it on its bin, allocating a size
 * freed before pops it. See `detail::bin_table` for the layout and its cost.
 *
 * Thread safety: none; the owning block cache serializes access.
 */
#pragma once

#include <swapalloc/block.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace swapalloc {

namespace detail {

/**
 * @brief The bins of cached blocks: (stream tag, size) → head of a list of blocks.
 *
 * Open addressing, linear probing, power-of-two table, multiplicative hashing: a lookup
 * is a multiply, a shift and (almost always) one probe, where std::unordered_map's
 * modulo costs a 64-bit division on every call. Keys are never removed (a bin emptied
 * stays for the next block of its size), so the table only grows, at half full.
 */
class bin_table {
 public:
  /// The head of the bin for (tag, size), or nullptr if that bin never existed.
  /// Cost: one hash and a short probe; no allocation.
  [[nodiscard]] block** find(stream_tag tag, std::size_t size) noexcept
  {
    if (slots_.empty()) { return nullptr; }
    std::size_t const mask = slots_.size() - 1;
    for (std::size_t index = home(tag, size);; index = (index + 1) & mask) {
      slot& candidate = slots_[index];
      if (candidate.size == size && candidate.tag == tag) { return &candidate.head; }
      if (candidate.size == 0) { return nullptr; }
    }
  }

  /// The head of the bin for (tag, size), created empty if needed (allocates only when
  /// the table grows). @pre size > 0.
  block*& at(stream_tag tag, std::size_t size)
  {
    if (block** const head = find(tag, size); head != nullptr) { return *head; }
    if ((used_ + 1) * 2 > slots_.size()) { grow(); }
    ++used_;
    return place(tag, size, nullptr);
  }

  /// Calls `visit(tag, size, head)` for every bin; `visit` may change `head`.
  template <typename Visitor>
  void for_each(Visitor&& visit)
  {
    for (slot& entry : slots_) {
      if (entry.size != 0) { visit(entry.tag, entry.size, entry.head); }
    }
  }
  template <typename Visitor>
  void for_each(Visitor&& visit) const
  {
    for (slot const& entry : slots_) {
      if (entry.size != 0) { visit(entry.tag, entry.size, entry.head); }
    }
  }

 private:
  struct slot {
    stream_tag tag{any_stream};
    std::size_t size{0};  // 0: empty slot
    block* head{nullptr};
  };

  [[nodiscard]] std::size_t home(stream_tag tag, std::size_t size) const noexcept
  {
    std::uint64_t const mixed = (static_cast<std::uint64_t>(tag) * 0x9E3779B97F4A7C15ULL) ^ size;
    return static_cast<std::size_t>((mixed * 0xD6E8FEB86659FD93ULL) >> (64 - bits_));
  }

  block*& place(stream_tag tag, std::size_t size, block* head) noexcept
  {
    std::size_t const mask = slots_.size() - 1;
    std::size_t index      = home(tag, size);
    while (slots_[index].size != 0) {
      index = (index + 1) & mask;
    }
    slots_[index] = slot{tag, size, head};
    return slots_[index].head;
  }

  void grow()
  {
    std::vector<slot> old(slots_.empty() ? 64 : slots_.size() * 2);
    old.swap(slots_);
    bits_ = 0;
    while ((std::size_t{1} << bits_) < slots_.size()) {
      ++bits_;
    }
    for (slot const& entry : old) {
      if (entry.size != 0) { (void)place(entry.tag, entry.size, entry.head); }
    }
  }

  std::vector<slot> slots_;
  std::size_t used_{0};
  unsigned bits_{0};  // slots_.size() == 2^bits_
};

}  // namespace detail

}  // namespace swapalloc
