#!/usr/bin/env bash
# Fuzz the codec's decoder with clang's libFuzzer (ASan + UBSan) for SECONDS (60 by default),
# starting from a seed corpus of valid encodings. Any crash, sanitizer report, failed round trip,
# or single allocation over 1 MiB (messages are at most 16 KiB: the decoder must never allocate
# far beyond what the message can hold) fails the run.
#   bash scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
bash scripts/setup.sh fuzz
build=build/fuzz
cmake -S . -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++-16 -DCMAKE_BUILD_TYPE=Debug \
    -DMPROC_BUILD_FUZZERS=ON -DMPROC_BUILD_TESTS=OFF -DMPROC_BUILD_EXAMPLES=OFF \
    -DMPROC_BUILD_BENCHMARKS=OFF -DMPROC_INSTALL=OFF >/dev/null
cmake --build "$build" --target fuzz_decode
fuzzer=$build/tests/fuzz/fuzz_decode
rm -rf "$build/seeds" "$build/corpus" && mkdir -p "$build/seeds" "$build/corpus"
MPROC_FUZZ_WRITE_SEEDS="$build/seeds" "$fuzzer"
echo "seed corpus: $(ls "$build/seeds" | wc -l) valid encodings"
"$fuzzer" -max_total_time="$seconds" -max_len=16384 -malloc_limit_mb=1 -rss_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 -artifact_prefix="$build/" "$build/corpus" "$build/seeds" \
    >"$build/fuzz.log" 2>&1 || { tail -60 "$build/fuzz.log"; echo "fuzz: FAILED"; exit 1; }
grep -E '^stat::(number_of_executed_units|peak_rss_mb|new_units_added)' "$build/fuzz.log"
echo "fuzz: passed ($seconds s, no crash, no allocation over 1 MiB)"
