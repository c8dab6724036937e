"""Python constructs of real NumPy code (issue 15, section 4), each checked against finite
differences: constants (np.inf, np.pi, math.e, ...), assert, print, keyword and string arguments,
list and tuple literals, list comprehensions, `for x in arr`, enumerate/zip/reversed, lists built
with append and stacked, np.r_/np.c_, .squeeze(), np.dot with a scalar.

Breadth on the python target; a representative subset compiled (target="cpu").
Functions are defined at module level (srcgrad reads their source).
"""
import math

import numpy as np
import pytest

import srcgrad
from conftest import TARGETS, check_grad


def rand(rng, *shape):
    return rng.standard_normal(shape)


# ------------------------------------------------------------------------------------------------
# Constants: np.inf, np.pi, np.e, math.inf, math.pi, math.e
# ------------------------------------------------------------------------------------------------

def running_extremes(x):
    m = -np.inf
    lo = math.inf
    for i in range(x.shape[0]):
        m = max(m, x[i])
        lo = min(lo, x[i])
    return 2.0 * m + lo * np.pi + math.pi * math.e * np.sum(x * np.e)


def test_constants_and_running_maximum(target):
    x = np.array([0.3, -1.2, 2.5, 0.7, -0.4])
    g = check_grad(running_extremes, (x,), target=target)
    # the maximum and minimum each send their adjoint to one element
    expected = np.full(5, math.pi * math.e * np.e)
    expected[2] += 2.0
    expected[1] += np.pi
    np.testing.assert_allclose(g, expected, rtol=1e-12)


def inf_clamp(x):
    y = np.minimum(x, np.inf) + np.maximum(x, -math.inf)
    return np.sum(y * y)


def test_infinite_constants_in_array_code():
    check_grad(inf_clamp, (np.array([0.5, -2.0, 1.5]),), target="python")


def test_infinite_constants_in_float32(target):
    x = np.array([0.3, -1.2, 2.5], dtype=np.float32)
    g = srcgrad.grad(running_extremes, target=target)(x)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, [math.pi * math.e * np.e, math.pi * math.e * np.e + np.pi,
                                   math.pi * math.e * np.e + 2.0], rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# assert (checked in the primal, not differentiated) and print (runs in the primal)
# ------------------------------------------------------------------------------------------------

def with_asserts(x, w):
    assert x.ndim == 2, "x must be a matrix"
    assert x.shape[1] == w.shape[0]
    y = np.tanh(x @ w)
    s = np.sum(y * y)
    assert s >= 0.0
    return s


def test_assert_is_checked_not_differentiated(target):
    rng = np.random.default_rng(1)
    check_grad(with_asserts, (rand(rng, 3, 4), rand(rng, 4)), wrt=(0, 1), target=target)


def test_failing_assert_names_file_and_line(target):
    f = srcgrad.grad(with_asserts, wrt=1, target=target)
    with pytest.raises(AssertionError, match="x must be a matrix"):
        f(np.ones((2, 3, 4)), np.ones(4))
    with pytest.raises(AssertionError, match=r"test_constructs_real.py:\d+: assert x.shape\[1\] == "
                                             r"w.shape\[0\]"):
        f(np.ones((3, 4)), np.ones(5))


def with_print(x):
    s = np.sum(x * x)
    print("sum of squares", s)
    return s * 3.0


def test_print_runs_in_the_primal(target, capfd):
    x = np.array([1.0, 2.0])
    g = check_grad(with_print, (x,), target=target)
    np.testing.assert_allclose(g, 6.0 * x)
    out = capfd.readouterr().out
    assert "sum of squares 5.0" in out


def print_with_keywords(x):
    print(x, end="")
    return x


def test_print_with_keywords_is_refused():
    with pytest.raises(srcgrad.UnsupportedSyntaxError, match=r"test_constructs_real.py:\d+: .*print"):
        srcgrad.grad(print_with_keywords, target="python")(1.0)
