/**
 * @file demo_test_support.hpp
 * @brief What the demo's tests share: a substring check. The program compiles its sources
 *        as one unit (UNITY), so it is defined here once.
 */
#pragma once

#include <string>

namespace swapalloc::demo::test_support {

/// True if `part` occurs in `text`.
[[nodiscard]] inline bool contains(std::string const& text, std::string const& part)
{
  return text.find(part) != std::string::npos;
}

}  // namespace swapalloc::demo::test_support
