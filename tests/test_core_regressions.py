"""Shrunk failing programs found by tests/test_fuzz.py, kept as regression tests."""
import pytest

import fuzz_programs as fp

WHILE_IF_1 = '''import math
import numpy as np


def helper(u, v):
    w = u * v + math.sin(u)
    if w > 0.5:
        w = 0.5 + math.tanh(w - 0.5)
    return w

def prog(x, y, a):
    t0 = x * 0.5 + y
    t1 = math.sin(x) * a[0]
    t2 = y * y - a[1]
    b = np.zeros(4)
    for j in range(4):
        b[j] = a[j] * 0.5
    k1 = 0
    while k1 < 1 and (-1.2 - t0) < -0.7:
        if np.tanh(t1) > 0.5:
            y = 0.9 * math.tanh(y)
        x = 0.5 * x + 0.5 * math.tanh(x)
        t0 = np.sin((-0.7 * (y + t0)))
        k1 = k1 + 1
    x = x
    return t0 + 0.5 * t1 - t2 + 0.25 * x * y + b[0] + b[1] * b[2] - b[3]
'''


# Found by the fuzzer: a user variable `t2` and srcgrad's temporary `_t2` shared the adjoint name
# `_adj_t2`, and the self-assignment `x = x` doubled x's adjoint. Both fixed.
@pytest.mark.parametrize("target", ["python", "cpu"])
def test_regression_while_if_1(target):
    assert fp.check_program(WHILE_IF_1, [target], point_seed=0)


# Found by the long fuzz profile: a loop-carried value assigned by an operation whose derivative
# rule reads the result (t1 = tanh(x)) was restored to its start-of-iteration value before that
# rule ran. Fixed: only plain copies share the start value.
CARRIED_RESULT = '''import math
import numpy as np


def prog(x, y, a):
    t0 = x * 0.5 + y
    t1 = math.sin(x) * a[0]
    for i0 in range(4):
        t0 = 0.5 * t0 + 0.5 * math.tanh(t1)
        t1 = math.tanh(x)
    return t0 + 0.5 * t1 - y * y + a[1]
'''


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_regression_carried_result(target):
    assert fp.check_program(CARRIED_RESULT, [target], point_seed=0)
