# Compile options shared by every target the project builds.

# Warnings as errors is the project's own policy (CI: tools/build-and-test turns it on), not a
# requirement of its headers: off by default, so that a build with another compiler, build type
# or a project that adds this one as a subdirectory is never failed by a warning.
option(SWAPALLOC_WERROR "Treat warnings as errors in swapalloc's own tests, tools and benchmarks" OFF)
# A test program of several sources compiles as one translation unit (CMake's unity build):
# each source includes the whole header-only library, and compiling its inline code once per
# program rather than once per source cuts the test build (under TSan on 2 cores the six
# sources of allocator_tests took 137 s, 19-26 s each, mostly that same library).
option(SWAPALLOC_UNITY_TESTS "Compile each test program's sources as one translation unit" ON)

# swapalloc_strict_warnings(<target>): our own code builds warning-free. PRIVATE to the
# project's executables and libraries; the INTERFACE target swapalloc::swapalloc carries no
# warning flag to its users.
function(swapalloc_strict_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra $<$<BOOL:${SWAPALLOC_WERROR}>:-Werror>)
endfunction()

# Sanitizers apply to every target, so the simulator and the tests are instrumented alike.
if(SWAPALLOC_SANITIZE)
  if(NOT SWAPALLOC_SANITIZE MATCHES "^(address,undefined|address|undefined|thread)$")
    message(FATAL_ERROR "SWAPALLOC_SANITIZE='${SWAPALLOC_SANITIZE}': accepted values are "
                        "'address,undefined', 'address', 'undefined' or 'thread'")
  endif()
  add_compile_options(-fsanitize=${SWAPALLOC_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${SWAPALLOC_SANITIZE})
  # Clang links its sanitizer runtimes statically into executables, so a shared library
  # (libswapalloc.so, libcudasim.so) relies on the executable for them, and a C program linked
  # by clang lacks the C++ half of UBSan's. The shared runtimes serve every module alike, as
  # GCC's do by default; their directory goes into the run path.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-runtime-dir
                    OUTPUT_VARIABLE swapalloc_sanitizer_runtime_dir OUTPUT_STRIP_TRAILING_WHITESPACE)
    add_link_options(-shared-libsan "LINKER:-rpath,${swapalloc_sanitizer_runtime_dir}")
  endif()
endif()
