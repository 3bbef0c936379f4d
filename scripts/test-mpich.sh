#!/usr/bin/env bash
# mproc::mpi's tests built against MPICH and launched by its Hydra mpiexec, beside the default
# Open MPI build (build/release is untouched). Debian installs both side by side: the
# alternatives (mpicc, mpirun) stay on Open MPI, whose priority is higher, so this build names
# MPICH's compiler wrapper and launcher explicitly.
#   bash scripts/test-mpich.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh mpich
for tool in mpicc mpirun; do
    echo "$tool -> $(readlink -f "$(command -v "$tool")")"  # Open MPI's, unless changed by hand
done
cmake --preset release -B build/mpich -DMPI_C_COMPILER=/usr/bin/mpicc.mpich \
    -DMPIEXEC_EXECUTABLE=/usr/bin/mpiexec.mpich -DMPROC_BUILD_EXAMPLES=OFF -DMPROC_BUILD_BENCHMARKS=OFF
grep -q '^MPI_C_HEADER_DIR:PATH=.*mpich' build/mpich/CMakeCache.txt ||
    { echo "test-mpich.sh: the build did not find MPICH" >&2; exit 1; }
cmake --build build/mpich --target test_mpi test_mpi_abort
ctest --test-dir build/mpich -R '^MPI\.' --output-on-failure
