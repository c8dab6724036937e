"""Differential fuzzing: random programs in the supported subset, srcgrad vs central FD.

Quick profile (default, runs in CI): QUICK_EXAMPLES programs on the python target, and every
CPU_EVERY-th of them also on the cpu target (a cpu compile costs about a second).
Long profile: ``pytest -m fuzz --fuzz-examples N [--fuzz-targets python,cpu]`` (random seeds; every
program on each target given; the python target runs the same generated code without compiling).
A failure prints the program's source; shrunk failures are kept in tests/test_core_regressions.py.
"""
import pytest
from hypothesis import HealthCheck, Phase, assume, given, note, settings, strategies as st

import fuzz_programs as fp

QUICK_EXAMPLES = 40
CPU_EVERY = 8

_COUNT = {"n": 0}

COMMON = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None)


@settings(max_examples=QUICK_EXAMPLES, derandomize=True,
          phases=[Phase.explicit, Phase.reuse, Phase.generate], **COMMON)
@given(source=fp.programs(), point_seed=st.integers(0, 2 ** 16))
def test_fuzz_quick(source, point_seed):
    note(source)
    _COUNT["n"] += 1
    targets = ["python", "cpu"] if _COUNT["n"] % CPU_EVERY == 1 else ["python"]
    assume(fp.check_program(source, targets, point_seed=point_seed))


@pytest.mark.fuzz
def test_fuzz_long(request):
    n = request.config.getoption("--fuzz-examples") or 200
    targets = request.config.getoption("--fuzz-targets").split(",")
    seen = {"programs": 0}

    @settings(max_examples=n, **COMMON)
    @given(source=fp.programs(features=fp.ALL_FEATURES), point_seed=st.integers(0, 2 ** 16))
    def run(source, point_seed):
        note(source)
        seen["programs"] += 1
        assume(fp.check_program(source, targets, point_seed=point_seed))

    run()
    print(f"\nfuzz long profile: {seen['programs']} programs tried on {targets}, no failure")
