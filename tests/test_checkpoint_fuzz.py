"""Differential fuzzing of checkpointing: random loop programs (tests/fuzz_programs.py: branches,
nested loops, element writes, helper calls, loop-carried floats and arrays), the gradient with
``checkpoint=2`` against the un-checkpointed one on the python target. A program checkpointing
refuses (a while loop, a loop with break, a loop inside an if, state that may be unbound at the
loop's start) must raise a SrcgradError naming checkpointing; every other one must give the same
value and gradient. Quick profile: QUICK programs; marked slow: LONG programs with every feature
(150 without while/break and 100 with them gave no difference when this was written).
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, note, settings, strategies as st

import fuzz_programs as fp
import srcgrad

QUICK, LONG = 5, 150
COMMON = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.reuse, Phase.generate], derandomize=True)


def compare(source, point_seed, seen):
    note(source)
    f = fp.load_program(source).prog
    rng = np.random.default_rng(point_seed)
    x, y, a = float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)), rng.uniform(-1, 1, fp.N)
    value, grads = srcgrad.value_and_grad(f, wrt=(0, 1, 2), target="python")(x, y, a.copy())
    try:
        checked = srcgrad.value_and_grad(f, wrt=(0, 1, 2), target="python", checkpoint=2)
        value_c, grads_c = checked(x, y, a.copy())
    except srcgrad.SrcgradError as exc:
        assert "checkpoint" in str(exc)
        seen["refused"] += 1
        return
    if "checkpointing: the segments" in checked.source_for(x, y, a):
        seen["checkpointed"] += 1
    np.testing.assert_allclose(value_c, value, rtol=1e-12, atol=1e-12)
    for got, expected in zip(grads_c, grads):
        np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-12)


def test_checkpoint_fuzz_quick():
    seen = {"checkpointed": 0, "refused": 0}

    @settings(max_examples=QUICK, **COMMON)
    @given(source=fp.programs(), point_seed=st.integers(0, 2 ** 16))
    def run(source, point_seed):
        compare(source, point_seed, seen)
    run()
    assert seen["checkpointed"] >= QUICK // 2, seen      # not vacuous


@pytest.mark.slow
def test_checkpoint_fuzz_long():
    seen = {"checkpointed": 0, "refused": 0}

    @settings(max_examples=LONG, **COMMON)
    @given(source=fp.programs(features=fp.ALL_FEATURES), point_seed=st.integers(0, 2 ** 16))
    def run(source, point_seed):
        compare(source, point_seed, seen)
    run()
    assert seen["checkpointed"] >= LONG // 2, seen
