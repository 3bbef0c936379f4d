#!/usr/bin/env bash
# The scaling benchmark: for k = 1, 2, 4, ... up to this machine's cores (and the core count
# itself), run benchmarks/scaling.cpp under `taskset -c 0-(k-1)` (mproc::cpu_count() and OpenMP
# follow the affinity), plus Python's multiprocessing.Pool on the same prime search when python3
# is there. Prints a table, and writes build/scaling/scaling.csv and build/scaling/scaling.svg
# (speedup vs cores, latency vs workers).
#   bash benchmarks/scaling.sh [--reps N] [--primes N] [--python-primes N] [--out DIR] [--bin PATH]
# --bin runs a prebuilt `scaling` binary (a machine without the toolchain); otherwise the release
# preset is built first.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=3 primes=10000000 py_primes=2000000 out=build/scaling bin=""
while [ $# -gt 0 ]; do
    case $1 in
        --reps) reps=$2; shift 2 ;;
        --primes) primes=$2; shift 2 ;;
        --python-primes) py_primes=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        *) echo "usage: scaling.sh [--reps N] [--primes N] [--python-primes N] [--out DIR] [--bin PATH]" >&2; exit 2 ;;
    esac
done
if [ -z "$bin" ]; then
    bash scripts/setup.sh
    cmake --preset release >/dev/null
    cmake --build --preset release --target scaling >/dev/null
    bin=build/release/benchmarks/scaling
fi
command -v taskset >/dev/null || { echo "scaling.sh: needs taskset (util-linux)" >&2; exit 1; }
mkdir -p "$out"
csv=$out/scaling.csv
cores=$(nproc)
ks=()
for ((k = 1; k < cores; k *= 2)); do ks+=("$k"); done
ks+=("$cores")
machine=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo "machine: $machine, $cores cores; primes below $primes; medians of $reps"
echo "cores,metric,workers,median,min,max,unit" >"$csv"
for k in "${ks[@]}"; do
    extra=()
    [ "$k" -eq 1 ] && extra+=(--serial)
    [ "$k" -eq "$cores" ] && extra+=(--sweep)
    echo "== $k core(s)"
    taskset -c "0-$((k - 1))" "$bin" --reps "$reps" --primes "$primes" "${extra[@]}" \
        | tail -n +2 | sed "s/^/$k,/" | tee -a "$csv"
    if command -v python3 >/dev/null; then
        taskset -c "0-$((k - 1))" python3 benchmarks/scaling_python.py --reps "$reps" --primes "$py_primes" \
            $([ "$k" -eq 1 ] && echo --serial) | sed "s/^/$k,/" | tee -a "$csv"
    fi
done
if command -v python3 >/dev/null; then
    python3 benchmarks/scaling_report.py "$csv" --machine "$machine, $cores cores" --svg "$out/scaling.svg"
else  # a machine without python3: the table and plot come from the CSV elsewhere
    echo "no python3: run python3 benchmarks/scaling_report.py $csv --machine '$machine, $cores cores' --svg scaling.svg elsewhere"
fi
