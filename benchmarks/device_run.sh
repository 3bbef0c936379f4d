#!/usr/bin/env bash
# Runs every figure issue 14 asks of a many-core machine from a bundle made by
# scripts/device-bundle.sh, on a machine with no toolchain or packages, in one call:
#   bash benchmarks/device_run.sh BUNDLE OUT [--quick]
# OUT gets machine.txt, scaling/ (scaling.sh's CSV, its table, the SVG when python3 is there)
# and bench_pool.json, bench_queue.json, bench_process.json (Google Benchmark, medians of 3),
# then the 4x4 queue rows (mproc's queue, also with 1 to 8 lanes, every bare ring of bench_queue,
# Boost) again on 4 and 8 cores (bench_queue_4cores.json ...): where each claim protocol stops
# scaling (a table of them: `python3 benchmarks/queue_report.py OUT`, run here too when python3
# is there). Where the bundle has bench_queue_tickets (the ticket rewrite of the Queue, see
# device-bundle.sh), its SPSC and 4x4 rows run beside today's on every core count
# (bench_queue_tickets*.json).
# --quick: small sizes, to try the bundle out in a minute.
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: device_run.sh BUNDLE OUT [--quick]" >&2; exit 2; }
bundle=$(cd "$1" && pwd) out=$2 quick=${3:-}
mkdir -p "$out"
export LD_LIBRARY_PATH=$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
start=$(date +%s)
step() { echo "== [$(( $(date +%s) - start )) s] $*"; }

# Where the machine's glibc is older than the one the bundle was built with, its own loader and
# C library run the programs: a wrapper per program. Under that loader /proc/self/exe is the
# loader, so the spawn and forkserver rows of bench_process (which exec the program again) are
# left out; everything else only forks.
bin=$bundle process_rows='.'
if ! "$bundle/bench_queue" --benchmark_list_tests >/dev/null 2>"$out/loader.txt"; then
    cat "$out/loader.txt"
    bin=$(mktemp -d)
    for p in scaling bench_pool bench_queue bench_process bench_queue_tickets; do
        [ -e "$bundle/$p" ] || continue
        printf '#!/bin/sh\nexec "%s/glibc/ld-linux-x86-64.so.2" --library-path "%s/lib:%s/glibc" "%s/%s" "$@"\n' \
            "$bundle" "$bundle" "$bundle" "$bundle" "$p" >"$bin/$p"
        chmod +x "$bin/$p"
    done
    "$bin/bench_queue" --benchmark_list_tests >/dev/null || { echo "device_run: the bundle does not run here"; exit 1; }
    echo "device_run: running through the bundle's own glibc (bench_process: fork rows only)"
    process_rows='Raw_fork_waitpid|Process_start_join/|Process_start_result_int/|Pool8_start_map_1GiB_caller/0/|Pool16_cold_start/0/'
fi

{
    echo "date: $(date -u)"
    uname -a
    echo "cores: $(nproc)"
    grep -m1 'model name' /proc/cpuinfo
    command -v lscpu >/dev/null && lscpu
    echo "load: $(cat /proc/loadavg)"
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt" | head -4

reps=3 primes=10000000 py_primes=2000000 min_time=0.5
[ "$quick" = --quick ] && reps=1 primes=200000 py_primes=20000 min_time=0.05
step "scaling.sh"
mkdir -p "$out/scaling"
bash benchmarks/scaling.sh --bin "$bin/scaling" --out "$out/scaling" --reps "$reps" --primes "$primes" \
    --python-primes "$py_primes" 2>&1 | tee "$out/scaling/table.txt"

gbench() {  # program, filter[, output name, command before it]: medians of 3 into OUT/name.json
    local program=$1 filter=$2 name=${3:-$1}
    shift $(( $# < 3 ? $# : 3 ))
    step "$name $filter"
    MPROC_BENCH_PRIMES=$primes "$@" "$bin/$program" --benchmark_filter="$filter" --benchmark_repetitions=3 \
        --benchmark_report_aggregates_only=true --benchmark_min_time="$min_time" \
        --benchmark_out="$out/$name.json" --benchmark_out_format=json 2>&1 | grep -E 'median|ERROR|error' || true
}
gbench bench_pool 'SubmitGet|Raw_Futex|Chunksize1|TinyMap|Primes|ColdPool|Factorials'
gbench bench_queue '.'
tickets=
[ -e "$bundle/bench_queue_tickets" ] && tickets=bench_queue_tickets
[ -n "$tickets" ] && gbench "$tickets" 'Mproc_queue_(spsc_8B|mpmc_4x4_8B)'
gbench bench_process "$process_rows"
cores=$(nproc)
for k in 4 8; do
    [ "$k" -lt "$cores" ] || continue
    command -v taskset >/dev/null || { echo "device_run: no taskset, so no per-core-count queue rows"; break; }
    gbench bench_queue 'mpmc_4x4_8B(/|_lanes/)' "bench_queue_${k}cores" taskset -c "0-$((k - 1))"
    [ -n "$tickets" ] && gbench "$tickets" 'Mproc_queue_mpmc_4x4_8B/' "${tickets}_${k}cores" taskset -c "0-$((k - 1))"
done
command -v python3 >/dev/null && python3 benchmarks/queue_report.py "$out" | tee "$out/queue_table.md"
step "done"
