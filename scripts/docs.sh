#!/usr/bin/env bash
# The API reference: Doxygen over the public headers, with the README, the Python guide and the
# changelog as pages. Writes build/release/docs/html/index.html; any warning (an undocumented
# public name included) fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh docs
cmake --preset release >/dev/null
if ! cmake --build --preset release --target docs; then
    cat build/release/docs/warnings.log
    exit 1
fi
echo "API reference: build/release/docs/html/index.html"
