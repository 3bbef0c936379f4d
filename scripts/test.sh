#!/usr/bin/env bash
# Set up, build and run the whole test suite (unit, fault, compile-failure, example and
# consumer tests) with the given preset (release by default; also debug, asan-ubsan, tsan, and
# clang: clang++-16, installed when asked for).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-release}
if [ "$preset" = clang ]; then bash scripts/setup.sh clang; else bash scripts/setup.sh; fi
cmake --preset "$preset"
cmake --build --preset "$preset"
ctest --preset "$preset" -j "$(nproc)"
