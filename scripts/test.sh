#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs the suite as two processes in
# parallel (one per core of a 2-core machine):
#   1. the main suite, less the files in BESIDE;
#   2. the CUDA kernels in Numba's CUDA simulator (a separate pytest: the simulator must be on
#      before numba is imported), then the BESIDE files of the main suite, so that both cores
#      finish at about the same time.
# Every pytest run prints its 25 slowest tests; the exit status is non-zero when any run failed.
# The tests compile at NUMBA_OPT=0 (tests/conftest.py: half the compile time, same semantics),
# except test_distributed.py, run here at Numba's default level: its MPI ranks load the gradient
# its parent process compiled from the on-disk cache, and at level 0 Numba cannot cache it.
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

# Main-suite files run by the second process after the simulator suite (chosen by measured time).
BESIDE_DEFAULT_OPT=(tests/test_distributed.py)
BESIDE=(tests/test_numpy_rules.py)
ignore=()
for f in "${BESIDE_DEFAULT_OPT[@]}" "${BESIDE[@]}"; do
    ignore+=(--ignore="$f")
done
pytest_args=(-q -p no:cacheprovider --durations=25)

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
start=$SECONDS

second() {
    # the second core's share; each run's exit status is written to $logs
    local rc
    echo "===== CUDA simulator suite (tests/cuda) ====="
    rc=0
    NUMBA_ENABLE_CUDASIM=1 "$PYTHON" -m pytest "${pytest_args[@]}" tests/cuda \
        ${marks[@]+"${marks[@]}"} || rc=$?
    echo "$rc" >"$logs/cuda.rc"
    echo "===== ${BESIDE_DEFAULT_OPT[*]} (Numba's default optimization level) ====="
    rc=0
    NUMBA_OPT="${NUMBA_OPT:-3}" "$PYTHON" -m pytest "${pytest_args[@]}" "${BESIDE_DEFAULT_OPT[@]}" \
        ${marks[@]+"${marks[@]}"} "$@" || rc=$?
    echo "$rc" >"$logs/beside_opt.rc"
    echo "===== ${BESIDE[*]} ====="
    rc=0
    "$PYTHON" -m pytest "${pytest_args[@]}" "${BESIDE[@]}" ${marks[@]+"${marks[@]}"} "$@" || rc=$?
    echo "$rc" >"$logs/beside.rc"
}

echo "===== main suite (tests, without tests/cuda and ${BESIDE_DEFAULT_OPT[*]} ${BESIDE[*]}), live; the second process runs beside it ====="
"$PYTHON" -m pytest "${pytest_args[@]}" tests --ignore=tests/cuda "${ignore[@]}" \
    ${marks[@]+"${marks[@]}"} "$@" &
main_pid=$!
second "$@" >"$logs/second.log" 2>&1 &
second_pid=$!

main_rc=0
wait "$main_pid" || main_rc=$?
echo "===== main suite: exit $main_rc ($((SECONDS - start)) s) ====="
wait "$second_pid" || true
echo "===== second process: the CUDA simulator suite, then ${BESIDE_DEFAULT_OPT[*]} ${BESIDE[*]} ($((SECONDS - start)) s) ====="
cat "$logs/second.log"
status=$main_rc
summary="main: exit $main_rc"
for run in cuda beside_opt beside; do
    rc=$(cat "$logs/$run.rc" 2>/dev/null || echo 1)
    if [ "$run" != cuda ] && [ "$rc" -eq 5 ]; then
        rc=0                            # no test selected there (e.g. by a -k given for the main suite)
    fi
    summary="$summary, $run: exit $rc"
    if [ "$rc" -ne 0 ]; then
        status=1
    fi
done
echo "===== $summary, $((SECONDS - start)) s for both processes ====="
if [ "$status" -ne 0 ]; then
    exit 1
fi
