# `cmake --install`: the headers, libswapalloc.so, the CMake package and pkg-config files.
#
#   <prefix>/include/swapalloc/           the header-only library and swapalloc.h (the C ABI)
#   <prefix>/include/swapalloc_torch.hpp  the libtorch adapter (needs Torch and the plugin)
#   <prefix>/<libdir>/libswapalloc.so     the plugin (one process-wide allocator)
#   <prefix>/<libdir>/libswapalloc_preload.so  the LD_PRELOAD interposer (next to the plugin)
#   <prefix>/<libdir>/cmake/swapalloc/    find_package(swapalloc): swapalloc::swapalloc (the
#                                         header-only target, with LZ4, xxHash, zstd when this
#                                         build found it, nlohmann-json, cuda.h, dl, threads)
#                                         and swapalloc::plugin (the C ABI's library)
#   <prefix>/<libdir>/pkgconfig/          swapalloc.pc (header-only) and swapalloc-plugin.pc
#
# Both are relocatable: the package and the .pc files find the prefix from where they lie, so
# `cmake --install build --prefix DIR` works for any DIR. Neither target carries a warning or
# optimisation flag: those stay the consumer's choice (tests/consumer checks it).
# A pip build (SKBUILD) installs only the library into the Python package (plugin/).
if(SKBUILD)
  return()
endif()

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(swapalloc_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/swapalloc)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/swapalloc
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT development)
# The libtorch adapter's header: used with swapalloc::plugin and the consumer's own Torch.
install(FILES ${PROJECT_SOURCE_DIR}/plugin/torch/swapalloc_torch.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT development)
set_target_properties(swapalloc_plugin PROPERTIES EXPORT_NAME plugin)
install(TARGETS swapalloc EXPORT swapalloc_targets COMPONENT development)
install(TARGETS swapalloc_plugin EXPORT swapalloc_targets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime)
install(TARGETS swapalloc_preload LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime)
install(EXPORT swapalloc_targets NAMESPACE swapalloc:: FILE swapallocTargets.cmake
        DESTINATION ${swapalloc_cmake_dir} COMPONENT development)

# The config file recreates the dependencies the exported targets name (CUDA::toolkit,
# PkgConfig::LZ4, ...); SWAPALLOC_PACKAGE_HAS_ZSTD records whether this build used zstd.
set(SWAPALLOC_PACKAGE_HAS_ZSTD ${ZSTD_FOUND})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/swapallocConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/package/swapallocConfig.cmake
                              INSTALL_DESTINATION ${swapalloc_cmake_dir})
# 0.x: a minor version may change the API (SameMinorVersion), as semantic versioning allows.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/package/swapallocConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/package/swapallocConfig.cmake
              ${PROJECT_BINARY_DIR}/package/swapallocConfigVersion.cmake
        DESTINATION ${swapalloc_cmake_dir} COMPONENT development)

# pkg-config: the prefix relative to the .pc file's own directory (${pcfiledir}), so that the
# files stay right wherever the tree is installed. cuda.h comes from the toolkit found here.
file(RELATIVE_PATH swapalloc_pc_to_prefix ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig
     ${CMAKE_INSTALL_PREFIX})
string(REGEX REPLACE "/$" "" swapalloc_pc_to_prefix "${swapalloc_pc_to_prefix}")
list(GET CUDAToolkit_INCLUDE_DIRS 0 swapalloc_pc_cuda_include)
set(swapalloc_pc_requires "liblz4 libxxhash nlohmann_json")
set(swapalloc_pc_defines "")
if(ZSTD_FOUND)
  string(APPEND swapalloc_pc_requires " libzstd")
  set(swapalloc_pc_defines " -DSWAPALLOC_HAVE_ZSTD=1")
endif()
foreach(pc swapalloc swapalloc-plugin)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/${pc}.pc.in ${PROJECT_BINARY_DIR}/package/${pc}.pc
                 @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/package/${pc}.pc
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT development)
endforeach()
