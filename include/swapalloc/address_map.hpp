/**
 * @file address_map.hpp
 * @brief An open-addressing hash map from a live block's device address to its value.
 *
 * The allocator looks up every freed pointer here, so this map is on the hot path:
 * insert, find and erase take no allocation (the table grows only when it passes half
 * full, amortized over the inserts that filled it) and touch one or two cache lines.
 * Linear probing with backward-shift deletion: no tombstones, so a long-running process
 * keeps short probe sequences however many pointers come and go.
 *
 * Keys are nonzero (0 marks an empty slot; no device allocation lives at address 0).
 *
 * Thread safety: none; the owner (one device's allocator state) serializes access.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace swapalloc {

/// Map from nonzero 64-bit addresses to `Value` (a small trivially copyable type).
template <typename Value>
class address_map {
 public:
  /// @param expected_entries sizes the first table so that this many fit without growing.
  explicit address_map(std::size_t expected_entries = 1024)
  {
    std::size_t slots = 16;
    bits_             = 4;
    while (slots < expected_entries * 2) {
      slots *= 2;
      ++bits_;
    }
    slots_.resize(slots);
  }

  /// Number of entries.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

  /// Inserts `key` → `value`. Cost: one hash and a short probe; grows (allocates) only
  /// when the table passes half full. @pre `key` is nonzero and not in the map.
  void insert(std::uint64_t key, Value value)
  {
    if ((size_ + 1) * 2 > slots_.size()) { grow(); }
    place(key, value);
    ++size_;
  }

  /// The value for `key`, or nullptr. Cost: one hash and a short probe.
  [[nodiscard]] Value const* find(std::uint64_t key) const noexcept
  {
    std::size_t const mask = slots_.size() - 1;
    for (std::size_t index = home(key);; index = (index + 1) & mask) {
      slot const& candidate = slots_[index];
      if (candidate.key == key) { return &candidate.value; }
      if (candidate.key == 0) { return nullptr; }
    }
  }

  /// Removes `key`; returns whether it was present. Cost: a probe plus the shift of the
  /// entries that follow it in its cluster.
  bool erase(std::uint64_t key) noexcept
  {
    std::size_t const mask = slots_.size() - 1;
    std::size_t hole       = home(key);
    while (slots_[hole].key != key) {
      if (slots_[hole].key == 0) { return false; }
      hole = (hole + 1) & mask;
    }
    // Backward shift: move later entries of the cluster into the hole when their home
    // position does not lie (cyclically) between the hole and their current slot.
    for (std::size_t next = (hole + 1) & mask; slots_[next].key != 0; next = (next + 1) & mask) {
      std::size_t const wanted = home(slots_[next].key);
      bool const stays         = ((next - wanted) & mask) < ((next - hole) & mask);
      if (stays) { continue; }
      slots_[hole] = slots_[next];
      hole         = next;
    }
    slots_[hole] = slot{};
    --size_;
    return true;
  }

  /// Calls `visit(key, value)` for every entry, in no particular order.
  template <typename Visitor>
  void for_each(Visitor&& visit) const
  {
    for (slot const& entry : slots_) {
      if (entry.key != 0) { visit(entry.key, entry.value); }
    }
  }

 private:
  struct slot {
    std::uint64_t key{0};
    Value value{};
  };

  [[nodiscard]] std::size_t home(std::uint64_t key) const noexcept
  {
    // Fibonacci hashing: device addresses share their low bits (512-byte alignment) and
    // their high bits (one reservation), so multiply to spread the middle bits.
    // The top bits of the product are the best mixed, so the index is taken from them.
    return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ULL) >> (64 - bits_));
  }

  void place(std::uint64_t key, Value value) noexcept
  {
    std::size_t const mask = slots_.size() - 1;
    std::size_t index      = home(key);
    while (slots_[index].key != 0) {
      index = (index + 1) & mask;
    }
    slots_[index] = slot{key, value};
  }

  void grow()
  {
    std::vector<slot> old(slots_.size() * 2);
    old.swap(slots_);
    ++bits_;
    for (slot const& entry : old) {
      if (entry.key != 0) { place(entry.key, entry.value); }
    }
  }

  std::vector<slot> slots_;
  std::size_t size_{0};
  unsigned bits_{0};  // slots_.size() == 2^bits_
};

}  // namespace swapalloc
