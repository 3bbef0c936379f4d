#!/usr/bin/env bash
# The demo: set up, build the release preset, and count the primes below 10,000,000 serially and
# over every core.  Extra arguments go to the example (a limit, or --short).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release --target prime_search
./build/release/examples/prime_search "$@"
