# swapalloc::torch: the libtorch adapter (plugin/torch/swapalloc_torch.hpp), a header over
# libswapalloc.so and libtorch, for C++ programs; with -DSWAPALLOC_WITH_TORCH=ON. Included at
# the top level, so that Torch's imported targets are visible in every directory. Torch comes
# from Torch_DIR / CMAKE_PREFIX_PATH, else from the torch package of SWAPALLOC_PYTHON (the
# venv tools/install-deps makes). torch 2.15's headers need C++20.
if(SWAPALLOC_WITH_TORCH)
  if(NOT Torch_DIR AND EXISTS ${SWAPALLOC_PYTHON})
    execute_process(COMMAND ${SWAPALLOC_PYTHON} -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
                    OUTPUT_VARIABLE torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
                    RESULT_VARIABLE torch_found ERROR_QUIET)
    if(torch_found EQUAL 0)
      list(APPEND CMAKE_PREFIX_PATH ${torch_prefix})
    endif()
  endif()
  # No CUDA code is compiled here; without an architecture list Torch's config probes the
  # GPU by compiling with nvcc, which fails under this project's C++20 setting.
  if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    set(TORCH_CUDA_ARCH_LIST "9.0")
  endif()
  find_package(Torch REQUIRED)
  add_library(swapalloc_torch INTERFACE)
  add_library(swapalloc::torch ALIAS swapalloc_torch)
  target_include_directories(swapalloc_torch INTERFACE ${PROJECT_SOURCE_DIR}/plugin/torch)
  # Only the torch package's own libraries, not Torch's targets: those also link the CUDA
  # toolkit found on the system (its libcudart and libnvrtc, and so its older libnccl), which
  # would put a second CUDA runtime next to the package's (../shared/notes/torch-2.15.md §2
  # and §6). The package's libraries find their CUDA libraries through their own run paths;
  # --no-as-needed keeps libtorch_cuda, whose loading registers torch's CUDA backend.
  set(torch_library_dir ${TORCH_INSTALL_PREFIX}/lib)
  target_include_directories(swapalloc_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS}
                                                              ${CUDAToolkit_INCLUDE_DIRS})
  target_link_libraries(swapalloc_torch INTERFACE swapalloc::plugin -Wl,--no-as-needed
    ${torch_library_dir}/libtorch_cuda.so ${torch_library_dir}/libtorch.so
    ${torch_library_dir}/libtorch_cpu.so ${torch_library_dir}/libc10_cuda.so
    ${torch_library_dir}/libc10.so -Wl,--as-needed)
  target_compile_features(swapalloc_torch INTERFACE cxx_std_20)
endif()

