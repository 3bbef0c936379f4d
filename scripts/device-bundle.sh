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
strip --strip-unneeded "$bundle"/scaling "$bundle"/bench_* 2>/dev/null || true
echo "device bundle: $bundle, $(du -sh "$bundle" | cut -f1) ($(ls "$bundle/lib" | tr '\n' ' '))"
