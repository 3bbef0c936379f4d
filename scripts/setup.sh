#!/usr/bin/env bash
# Installs what mproc's build, tests, examples and benchmarks need, from Debian 12's packages,
# skipping what is already there. The library itself needs only a C++20 compiler.
#   bash scripts/setup.sh [GROUP...]   groups beyond the default: fuzz, clang, fresh, docs, mpich
set -euo pipefail
packages=(g++ cmake ninja-build pkg-config catch2 libbenchmark-dev libfmt-dev libgmp-dev libboost-dev python3
          openmpi-bin libopenmpi-dev python3-mpi4py)
for group in "$@"; do
    case $group in
        fuzz|clang) packages+=(clang-16 libclang-rt-16-dev) ;;  # libFuzzer and the sanitizers' runtimes
        fresh) packages+=(debootstrap git) ;;
        docs) packages+=(doxygen) ;;
        mpich) packages+=(mpich libmpich-dev) ;;  # beside Open MPI: scripts/test-mpich.sh
        *) echo "setup.sh: unknown group '$group'" >&2; exit 2 ;;
    esac
done
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
