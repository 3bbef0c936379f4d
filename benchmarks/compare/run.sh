#!/usr/bin/env bash
# Python's multiprocessing beside mproc on this machine: builds the mproc half (release preset),
# then runs both halves with the same sizes and prints the table. Takes about a minute on two
# cores. Options go to compare.py (--help lists them: sizes, --repeat, --only).
#   bash benchmarks/compare/run.sh
#   bash benchmarks/compare/run.sh --primes 10000000 --repeat 5
set -euo pipefail
cd "$(dirname "$0")/../.."
python=/usr/bin/python3  # Debian's python3: the stdlib only
[ -x "$python" ] || python=$(command -v python3) || { echo "python3 is needed (apt-get install python3)" >&2; exit 1; }
cmake --preset release >/dev/null
cmake --build --preset release --target mproc_side >/dev/null
exec "$python" benchmarks/compare/compare.py --mproc build/release/benchmarks/compare/mproc_side "$@"
