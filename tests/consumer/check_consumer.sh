#!/usr/bin/env bash
# tests/consumer/check_consumer.sh: builds and runs the consumer programs of cmake_project/
# against an installed swapalloc, as a project outside this repository would (tests
# Consumer.CMake.<type> and Consumer.PkgConfig; Consumer.Install makes the prefix).
#
# Usage: check_consumer.sh cmake PREFIX WORKDIR BUILD_TYPE   find_package(swapalloc)
#        check_consumer.sh pkg-config PREFIX WORKDIR         pkg-config swapalloc and
#                                                            swapalloc-plugin, plain compilers
# The programs run on the driver SWAPALLOC_CUDA_DRIVER names. Exit status: theirs, or the
# build's; 64 for bad arguments.
set -euo pipefail

source_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/cmake_project" && pwd)
die() { printf 'check_consumer: %s\n' "$*" >&2; exit 64; }
(($# >= 3)) || die "usage: check_consumer.sh cmake|pkg-config PREFIX WORKDIR [BUILD_TYPE]"
mode=$1 prefix=$2 work=$3
[[ -d $prefix/include/swapalloc ]] || die "PREFIX '$prefix' has no include/swapalloc: install first"

case $mode in
  cmake)
    (($# == 4)) || die "cmake mode needs BUILD_TYPE"
    build=$work/$4
    rm -rf "$build"
    cmake -S "$source_dir" -B "$build" -DCMAKE_BUILD_TYPE="$4" -DCMAKE_PREFIX_PATH="$prefix"
    cmake --build "$build"
    "$build/header_only_consumer"
    "$build/plugin_consumer"
    ;;
  pkg-config)
    build=$work/pkg-config
    rm -rf "$build" && mkdir -p "$build"
    libdir=$(find "$prefix" -name libswapalloc.so -printf '%h\n' -quit)
    [[ -n $libdir ]] || die "PREFIX '$prefix' has no libswapalloc.so"
    export PKG_CONFIG_PATH=$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
    # Word splitting of pkg-config's output is how it is used.
    # shellcheck disable=SC2046
    c++ -std=c++20 -O2 -Wall -Wextra -Werror $(pkg-config --cflags swapalloc) \
      "$source_dir/header_only_consumer.cpp" -o "$build/header_only_consumer" \
      $(pkg-config --libs swapalloc)
    # shellcheck disable=SC2046
    cc -std=c11 -O2 -Wall -Wextra -Werror -pedantic $(pkg-config --cflags swapalloc-plugin) \
      "$source_dir/plugin_consumer.c" -o "$build/plugin_consumer" \
      $(pkg-config --libs swapalloc-plugin) "-Wl,-rpath,$(pkg-config --variable=libdir swapalloc-plugin)"
    "$build/header_only_consumer"
    "$build/plugin_consumer"
    ;;
  *) die "mode '$mode': accepted values are 'cmake' and 'pkg-config'" ;;
esac
