#!/usr/bin/env bash
# Builds the benchmarks for a machine with no toolchain and no Debian packages (the 16-core
# machine some sessions are lent): libstdc++ and libgcc linked in (preset `device`), and the
# shared libraries they still need (libbenchmark, libgomp, libgmp, ...) copied beside them, with
# the C library and its loader too in case that machine's glibc is older than Debian 12's.
#   bash scripts/device-bundle.sh                    # writes build/device-bundle
#   bash benchmarks/device_run.sh build/device-bundle OUT   # there: every figure, into OUT
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
targets=(scaling bench_pool bench_queue bench_process)
cmake --preset device >/dev/null
cmake --build --preset device --target "${targets[@]}" >/dev/null
bundle=build/device-bundle
rm -rf "$bundle"
mkdir -p "$bundle/lib" "$bundle/glibc"
for t in "${targets[@]}"; do
    cp "build/device/benchmarks/$t" "$bundle/"
    # Every library the loader resolves to a file: the C library's own go to glibc/ (used only
    # where the machine's are too old), the others to lib/ (always on LD_LIBRARY_PATH).
    ldd "$bundle/$t" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/.*ld-linux/ {print $1}' |
        while read -r lib; do
            case $(basename "$lib") in
                libc.so.*|libm.so.*|libpthread.so.*|librt.so.*|libdl.so.*|ld-linux*) cp -L "$lib" "$bundle/glibc/" ;;
                *) cp -L "$lib" "$bundle/lib/" ;;
            esac
        done
done
# The ticket rewrite of the Queue (fetch_add claims, a turn word per 64-byte slot), kept out of
# main because it was slower on 2 cores, is in main's history at 8e00ca7 (merged by 76323ca
# without its tree): its bench_queue rides along as bench_queue_tickets, so the many-core run
# measures a whole crash-safe ticket queue beside today's, which is what issue 14 must decide.
tickets=8e00ca7
if git rev-parse -q --verify "$tickets^{commit}" >/dev/null; then
    src=build/ticket-queue-src
    rm -rf "$src" && mkdir -p "$src"
    git archive "$tickets" | tar -x -C "$src"
    cmake -S "$src" -B "$src/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMPROC_BUILD_TESTS=OFF \
        -DMPROC_BUILD_EXAMPLES=OFF -DCMAKE_CXX_FLAGS="-Wall -Wextra" \
        -DCMAKE_EXE_LINKER_FLAGS="-static-libstdc++ -static-libgcc" >/dev/null
    cmake --build "$src/build" --target bench_queue >/dev/null
    cp "$src/build/benchmarks/bench_queue" "$bundle/bench_queue_tickets"
else
    echo "device-bundle: commit $tickets is not in this clone: no bench_queue_tickets"
fi
strip --strip-unneeded "$bundle"/scaling "$bundle"/bench_* 2>/dev/null || true
echo "device bundle: $bundle, $(du -sh "$bundle" | cut -f1) ($(ls "$bundle/lib" | tr '\n' ' '))"
