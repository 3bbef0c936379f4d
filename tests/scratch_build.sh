# Sourced by tests/consumer/run.sh and tests/package/run.sh, which are called as
#   run.sh <mproc source dir> <scratch dir> [generator] [c++ compiler]
# Sets src and work (emptied), and makes every nested cmake use the generator and compiler of
# the build that runs the test (Ninja and g++ by default): a fresh machine has what setup.sh
# installs and nothing more (no make, no cc). quiet runs a command and shows its output only
# when it fails.
set -euo pipefail
src=$(cd "$1" && pwd)
work=$2
export CMAKE_GENERATOR=${3:-Ninja}
export CXX=${4:-${CXX:-c++}}
rm -rf "$work" && mkdir -p "$work"
quiet() { "$@" >"$work/last.log" 2>&1 || { cat "$work/last.log"; return 1; }; }
