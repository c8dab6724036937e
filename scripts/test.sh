#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs the whole suite
# (the main suite, then the CUDA kernels in Numba's CUDA simulator in a separate process).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[test,cuda,distributed]"
if [ -z "${SRCGRAD_DATA:-}" ] && [ -d ../shared/data/mnist ]; then
    export SRCGRAD_DATA="$(cd ../shared/data/mnist && pwd)"
fi
export SRCGRAD_CACHE_DIR="${SRCGRAD_CACHE_DIR:-$(mktemp -d)}"
"$PYTHON" -m pytest -q tests --ignore=tests/cuda "$@"
if [ -d tests/cuda ]; then
    NUMBA_ENABLE_CUDASIM=1 "$PYTHON" -m pytest -q tests/cuda
fi
