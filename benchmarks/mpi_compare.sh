#!/usr/bin/env bash
# mproc::mpi beside mpi4py.futures on the same launch (3 ranks: rank 0 + 2 workers), then hybrid
# mode (1 worker rank x 2 processes) beside the local Pool. Builds bench_mpi (release preset).
#   bash benchmarks/mpi_compare.sh [tiny] [primes] [repeat]
set -euo pipefail
cd "$(dirname "$0")/.."
tiny=${1:-100000} primes=${2:-10000000} repeat=${3:-5}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cmake --preset release >/dev/null
cmake --build --preset release --target bench_mpi >/dev/null
bench=build/release/benchmarks/bench_mpi
echo "== mpirun -np 3: mproc::mpi"
mpirun --oversubscribe -np 3 "$bench" --tiny "$tiny" --primes "$primes" --repeat "$repeat"
echo "== mpirun -np 3: mpi4py.futures (python3 -m mpi4py.futures)"
# compare_mpi4py.py takes is_prime from benchmarks/compare/compare.py, on every rank.
PYTHONPATH=benchmarks/compare${PYTHONPATH:+:$PYTHONPATH} mpirun --oversubscribe -x PYTHONPATH -np 3 \
    /usr/bin/python3 -m mpi4py.futures benchmarks/compare_mpi4py.py \
    --tiny "$tiny" --primes "$primes" --repeat "$repeat"
echo "== mpirun -np 2 --bind-to none: hybrid (1 worker rank x 2 processes) beside a local Pool(2)"
mpirun --oversubscribe --bind-to none -np 2 "$bench" --hybrid 2 --tiny 0 --primes "$primes" --repeat "$repeat"
