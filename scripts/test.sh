#!/usr/bin/env bash
# Set up, build and run the whole test suite (unit, fault, compile-failure, example and
# consumer tests) with the given preset (release by default; also debug, asan-ubsan, tsan).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-release}
bash scripts/setup.sh
cmake --preset "$preset"
cmake --build --preset "$preset"
ctest --preset "$preset" -j "$(nproc)"
