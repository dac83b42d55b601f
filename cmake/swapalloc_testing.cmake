# swapalloc_add_gtest(<target> SOURCES <files...> [LIBRARIES <libs...>] [UNITY])
#
# Builds a GoogleTest program into build/bin and registers each of its tests with CTest
# (one process per test, so a leak or a sticky CUDA error stays inside its test). UNITY
# compiles its sources as one translation unit when SWAPALLOC_UNITY_TESTS is on: for
# programs of several heavy sources, whose names must then not collide.
# With SWAPALLOC_TEST_DRIVER=sim (the default) every test runs against
# build/lib/libcudasim.so in strict mode: a test that leaves a driver object behind
# fails at exit. With SWAPALLOC_TEST_DRIVER=system the environment is left alone and
# the tests load libcuda.so.1 (tools/gpu-check).
include(GoogleTest)

function(swapalloc_add_gtest target)
  cmake_parse_arguments(ARG "UNITY" "" "SOURCES;LIBRARIES" ${ARGN})
  add_executable(${target} ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE swapalloc::swapalloc GTest::gtest GTest::gtest_main
                                          ${ARG_LIBRARIES})
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/tests/support
                                               ${PROJECT_SOURCE_DIR}/tools/cudasim)
  swapalloc_strict_warnings(${target})
  if(ARG_UNITY AND SWAPALLOC_UNITY_TESTS)
    # tools/check-tidy checks the generated source, whose includes of .cpp files are the point.
    set_target_properties(${target} PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE 0
      UNITY_BUILD_CODE_BEFORE_INCLUDE "// NOLINTNEXTLINE(bugprone-suspicious-include)")
  endif()
  gtest_discover_tests(${target} DISCOVERY_MODE PRE_TEST TEST_LIST ${target}_TESTS
                       PROPERTIES TIMEOUT 300)

  # The environment is applied from a CTest include file that runs after discovery:
  # gtest_discover_tests() flattens PROPERTIES into one list, so an ENVIRONMENT of more
  # than one variable would reach CTest as separate (bogus) property names.
  set(environment "SWAPALLOC_SIM_QUIET=1")
  if(SWAPALLOC_TEST_DRIVER STREQUAL "sim")
    add_dependencies(${target} cudasim)
    list(APPEND environment "SWAPALLOC_CUDA_DRIVER=$<TARGET_FILE:cudasim>" "SWAPALLOC_SIM_STRICT=1")
  endif()
  set(environment_file "${CMAKE_CURRENT_BINARY_DIR}/${target}_environment.cmake")
  file(GENERATE OUTPUT "${environment_file}" CONTENT
"if(${target}_TESTS)
  set_tests_properties(\${${target}_TESTS} PROPERTIES ENVIRONMENT \"${environment}\")
endif()
")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${environment_file}")
endfunction()

# swapalloc_add_emulated_run(<target> <memory>)
#
# Runs every test of <target> once more, as one CTest entry named <target>.emulated, on a
# simulated device of <memory> bytes (SWAPALLOC_SIM_MEMORY, e.g. 4G). The 64 MiB policy
# programs then emulate their device with a 64 MiB device limit, which is how they run on a
# real GPU (tests/allocator/small_device_fixture.hpp): CI checks that path without one.
# Not in the sanitizer builds: the emulation is accounting logic, which the plain build
# checks, and the same tests run there un-emulated. Under TSan on 2 cores these re-runs
# took 330 s of test time (the 64 MiB policy tests' 241 s of it), beside 851 s of
# wall time for all of the stage's tests.
function(swapalloc_add_emulated_run target memory)
  if(NOT SWAPALLOC_TEST_DRIVER STREQUAL "sim" OR SWAPALLOC_SANITIZE)
    return()
  endif()
  add_test(NAME ${target}.emulated COMMAND ${target})
  set_tests_properties(${target}.emulated PROPERTIES TIMEOUT 600 ENVIRONMENT
    "SWAPALLOC_SIM_QUIET=1;SWAPALLOC_SIM_STRICT=1;SWAPALLOC_SIM_MEMORY=${memory};SWAPALLOC_CUDA_DRIVER=$<TARGET_FILE:cudasim>")
endfunction()
