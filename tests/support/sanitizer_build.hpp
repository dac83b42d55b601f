/**
 * @file sanitizer_build.hpp
 * @brief Which sanitizer the test program was built with, for the few tests that must
 *        know: GCC defines __SANITIZE_ADDRESS__ and __SANITIZE_THREAD__, clang answers
 *        __has_feature(address_sanitizer) and __has_feature(thread_sanitizer).
 */
#pragma once

#if defined(__SANITIZE_THREAD__)
#define SWAPALLOC_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SWAPALLOC_TEST_TSAN 1
#endif
#endif

#if defined(__SANITIZE_ADDRESS__)
#define SWAPALLOC_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SWAPALLOC_TEST_ASAN 1
#endif
#endif

namespace swapalloc::testing {

#if defined(SWAPALLOC_TEST_TSAN)
inline constexpr bool thread_sanitizer_build = true;
#else
inline constexpr bool thread_sanitizer_build = false;
#endif

}  // namespace swapalloc::testing
