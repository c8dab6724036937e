#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs the suite as three processes
# in parallel on a 2-core machine:
#   1. the main suite, less the files named below (its output is shown live);
#   2. test_distributed.py at Numba's default optimization level;
#   3. beside them, the CUDA kernels in Numba's CUDA simulator (their own pytest: the simulator must
#      be on before numba is imported). The simulator runs each block as Python threads that a
#      polling thread steps through __syncthreads, and it leaves much of a core idle (224 s wall on a
#      quiet machine, 2026-12-03, against 135 s of CPU time measured in a run under load, where CPU
#      times only grow): as a third process its idle time goes to the other two.
# Then processes 1 and 2 (and 3, after the simulator suite) take the next unclaimed group of SHARED
# files, until none is left: whichever is free first runs the next group, so all finish at about
# the same time.
# Every pytest run prints its 25 slowest tests; the exit status is non-zero when any run failed.
# The tests compile at NUMBA_OPT=0 (tests/conftest.py: half the compile time, same semantics),
# except the CUDA suite (conftest.py keeps NVVM's optimizer on there) and test_distributed.py: its
# MPI ranks load from the on-disk cache the gradient its parent process compiled, and at level 0
# Numba cannot cache it (each rank would compile it again).
#
#   bash scripts/test.sh                 # default: everything but the `slow` and `fuzz` marks
#   bash scripts/test.sh -m "not fuzz"   # opt in to the slow tests too (arguments go to the main suite)
#   SRCGRAD_TEST_SLOW=1 bash scripts/test.sh   # the same, for every process
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

DEFAULT_OPT_FILES=(tests/test_distributed.py)
# Groups of main-suite files taken by whichever process is free first, largest first so that the
# last one taken is short (compiled-test heavy; CPU seconds on a quiet 2-core machine, 2026-12-03:
# about 120, 100, 70, 35 and 30). test_fuzz.py is one so that the main suite, the longest run,
# ends with the other process (2026-12-03, load ~3.6: main 713 s, the other 628 s without it).
# The loop-pass group and the api/forward/lower group followed when the main suite again ended
# alone (2026-12-04, quiet: main 637 s, the other process idle from 490 s, the CUDA one from 339 s).
# The constructs/closures and hardening/rebound-arrays groups (the four largest files left in the
# main suite: 63, 27, 52 and 30 s of its 601 s in a junit timing under load, 2026-12-04) followed
# when the main suite still ended last (611 s, the others at 551 and 559 s). Ordered by the seconds
# each took in the fresh-clone CI run of 2026-12-04 04:31 (162, 152, 120, 110, 105, 99, -, 77, 55,
# 42), where the main suite (531 s) then took the 110 s group last and ended at 643 s, the other
# processes at 609 and 590 s; test_optim + test_forward_speed (~60 s) left the main suite then.
SHARED=("tests/test_numpy_rules.py"
        "tests/test_arrays.py"
        "tests/test_helper_registry.py tests/test_cpu_backend.py"
        "tests/test_api_coverage.py tests/test_forward.py tests/test_lower.py"
        "tests/test_hardening.py tests/test_rebound_arrays.py"
        "tests/test_constructs_real.py tests/test_closures.py"
        "tests/test_optim.py tests/test_forward_speed.py"
        "tests/test_deferred_outer.py tests/test_dropped_zeroes.py tests/test_row_forwarding.py tests/test_descending_rows.py tests/test_loop_splits.py tests/test_adjoint_merges.py"
        "tests/test_fuzz.py"
        "tests/test_real_programs.py tests/test_forward_numpy.py tests/test_adjoint_shapes.py")
ignore=()
for f in "${DEFAULT_OPT_FILES[@]}" ${SHARED[@]}; do
    ignore+=(--ignore="$f")
done
pytest_args=(-q -p no:cacheprovider --durations=25)

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
start=$SECONDS

run() {
    # run NAME ARGS...: one pytest run; its exit status goes to $logs/NAME.rc
    local name=$1 rc=0
    shift
    "$@" || rc=$?
    echo "$rc" >"$logs/$name.rc"
    echo "===== $name: exit $rc ($((SECONDS - start)) s since the start) ====="
}

shared() {
    # take the SHARED groups nobody has taken yet (mkdir is atomic: one process gets each)
    local i
    for i in "${!SHARED[@]}"; do
        if mkdir "$logs/claim.$i" 2>/dev/null; then
            echo "===== shared group $i (process $1): ${SHARED[$i]} ====="
            # shellcheck disable=SC2086
            run "shared$i" "$PYTHON" -m pytest "${pytest_args[@]}" ${SHARED[$i]} \
                ${marks[@]+"${marks[@]}"} ${extra[@]+"${extra[@]}"}
        fi
    done
}

first() {
    run main "$PYTHON" -m pytest "${pytest_args[@]}" tests --ignore=tests/cuda "${ignore[@]}" \
        ${marks[@]+"${marks[@]}"} ${extra[@]+"${extra[@]}"}
    shared 1 >"$logs/first_shared.log" 2>&1
}

third() {
    echo "===== CUDA simulator suite (tests/cuda) ====="
    NUMBA_ENABLE_CUDASIM=1 run cuda "$PYTHON" -m pytest "${pytest_args[@]}" tests/cuda \
        ${marks[@]+"${marks[@]}"}
    unset NUMBA_ENABLE_CUDASIM          # (this process's own copy: the groups run on the cpu)
    shared 3
}

second() {
    echo "===== ${DEFAULT_OPT_FILES[*]} (Numba's default optimization level) ====="
    NUMBA_OPT="${NUMBA_OPT:-3}" run default_opt "$PYTHON" -m pytest "${pytest_args[@]}" \
        "${DEFAULT_OPT_FILES[@]}" ${marks[@]+"${marks[@]}"} ${extra[@]+"${extra[@]}"}
    shared 2
}

extra=("$@")
echo "===== process 1: the main suite (live), then shared groups; process 2 beside it: ${DEFAULT_OPT_FILES[*]}, then shared groups; process 3: tests/cuda, then shared groups ====="
first &
first_pid=$!
second >"$logs/second.log" 2>&1 &
second_pid=$!
third >"$logs/cuda.log" 2>&1 &
third_pid=$!
wait "$first_pid" || true
cat "$logs/first_shared.log"
wait "$second_pid" || true
echo "===== process 2 ====="
cat "$logs/second.log"
wait "$third_pid" || true
echo "===== process 3 ====="
cat "$logs/cuda.log"

status=0
summary=""
runs=(main cuda default_opt)
for i in "${!SHARED[@]}"; do
    runs+=("shared$i")
done
for name in "${runs[@]}"; do
    rc=$(cat "$logs/$name.rc" 2>/dev/null || echo "missing")
    if [ "$rc" = 5 ] && [ "$name" != main ] && [ "$name" != cuda ]; then
        rc=0                    # nothing selected there (a -k given for the main suite, say)
    fi
    summary="$summary $name: exit $rc,"
    if [ "$rc" != 0 ]; then
        status=1
    fi
done
echo "=====$summary $((SECONDS - start)) s for all processes ====="
exit "$status"
