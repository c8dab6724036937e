#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs the suite as two processes in
# parallel (one per core of a 2-core machine): the main suite, and the CUDA kernels in Numba's
# CUDA simulator (a separate process: the simulator must be on before numba is imported).
# Both outputs are printed (the main suite live, the simulator's after it), each with its 25
# slowest tests; the exit status is non-zero when either failed.
#
#   bash scripts/test.sh                 # default: everything but the `slow` and `fuzz` marks
#   bash scripts/test.sh -m "not fuzz"   # opt in to the slow tests too (arguments go to the main suite)
#   SRCGRAD_TEST_SLOW=1 bash scripts/test.sh   # the same, for both processes
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[test,cuda,distributed]"
if [ -z "${SRCGRAD_DATA:-}" ] && [ -d ../shared/data/mnist ]; then
    export SRCGRAD_DATA="$(cd ../shared/data/mnist && pwd)"
fi
export SRCGRAD_CACHE_DIR="${SRCGRAD_CACHE_DIR:-$(mktemp -d)}"
marks=()
if [ "${SRCGRAD_TEST_SLOW:-0}" = "1" ]; then
    marks=(-m "not fuzz")
fi

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
start=$SECONDS

echo "===== main suite (tests, without tests/cuda), live; the CUDA simulator suite runs beside it ====="
"$PYTHON" -m pytest -q -p no:cacheprovider --durations=25 tests --ignore=tests/cuda \
    ${marks[@]+"${marks[@]}"} "$@" &
main_pid=$!
cuda_pid=
if [ -d tests/cuda ]; then
    NUMBA_ENABLE_CUDASIM=1 "$PYTHON" -m pytest -q -p no:cacheprovider --durations=25 tests/cuda \
        ${marks[@]+"${marks[@]}"} >"$logs/cuda.log" 2>&1 &
    cuda_pid=$!
fi

main_rc=0
wait "$main_pid" || main_rc=$?
echo "===== main suite: exit $main_rc ($((SECONDS - start)) s) ====="
cuda_rc=0
if [ -n "$cuda_pid" ]; then
    wait "$cuda_pid" || cuda_rc=$?
    echo "===== CUDA simulator suite (tests/cuda): exit $cuda_rc ====="
    cat "$logs/cuda.log"
fi
echo "===== main: exit $main_rc, CUDA simulator: exit $cuda_rc, $((SECONDS - start)) s for both ====="
if [ "$main_rc" -ne 0 ] || [ "$cuda_rc" -ne 0 ]; then
    exit 1
fi
