#!/usr/bin/env bash
# Builds the consumer program every way a user can take mproc: find_package from an install
# prefix, add_subdirectory, and pkg-config; and checks that asking for a wrong major version fails.
#   tests/consumer/run.sh <mproc source dir> <scratch dir> [generator] [c++ compiler]
source "$(dirname "$0")/../scratch_build.sh"
here="$src/tests/consumer"

echo "== install mproc into a prefix"
quiet cmake -S "$src" -B "$work/mproc" -DMPROC_BUILD_TESTS=OFF -DMPROC_BUILD_EXAMPLES=OFF \
    -DMPROC_BUILD_BENCHMARKS=OFF -DMPROC_INSTALL=ON -DCMAKE_INSTALL_PREFIX="$work/prefix"
quiet cmake --install "$work/mproc"

echo "== find_package(mproc CONFIG REQUIRED)"
quiet cmake -S "$here" -B "$work/by_package" -DCMAKE_PREFIX_PATH="$work/prefix"
quiet cmake --build "$work/by_package"
"$work/by_package/consumer"

echo "== find_package(mproc 0.1) accepts the same major version"
quiet cmake -S "$here" -B "$work/same_major" -DCMAKE_PREFIX_PATH="$work/prefix" -DMPROC_REQUEST_VERSION=0.1

echo "== find_package(mproc 1.0) refuses another major version"
if cmake -S "$here" -B "$work/wrong_major" -DCMAKE_PREFIX_PATH="$work/prefix" \
        -DMPROC_REQUEST_VERSION=1.0 >"$work/wrong.log" 2>&1; then
    echo "a request for mproc 1.0 was accepted by 0.x"; exit 1
fi

echo "== add_subdirectory"
quiet cmake -S "$here" -B "$work/by_subdirectory" -DMPROC_SOURCE_DIR="$src"
quiet cmake --build "$work/by_subdirectory"
"$work/by_subdirectory/consumer"

if command -v mpicc >/dev/null; then
    echo "== find_package(mproc CONFIG REQUIRED COMPONENTS mpi)"
    quiet cmake -S "$here" -B "$work/by_package_mpi" -DCMAKE_PREFIX_PATH="$work/prefix" -DMPROC_CONSUMER_MPI=ON
    quiet cmake --build "$work/by_package_mpi"
    "$work/by_package_mpi/consumer_mpi"
    echo "== add_subdirectory with mproc::mpi"
    quiet cmake -S "$here" -B "$work/by_subdirectory_mpi" -DMPROC_SOURCE_DIR="$src" -DMPROC_CONSUMER_MPI=ON
    quiet cmake --build "$work/by_subdirectory_mpi"
    "$work/by_subdirectory_mpi/consumer_mpi"
fi

echo "== pkg-config"
export PKG_CONFIG_PATH="$work/prefix/share/pkgconfig"
# shellcheck disable=SC2046
"$CXX" $(pkg-config --cflags mproc) "$here/main.cpp" -o "$work/by_pkgconfig" $(pkg-config --libs mproc)
"$work/by_pkgconfig"
echo "consumer checks passed"
