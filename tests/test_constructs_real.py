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


# ------------------------------------------------------------------------------------------------
# Keyword and string arguments, .squeeze(axis), np.dot with a scalar, transpose axes
# ------------------------------------------------------------------------------------------------

def clip_keywords(x, w):
    a = np.clip(x, a_min=-0.5, a_max=0.8)
    b = np.clip(x * w, a_max=1.0, a_min=0.0)          # NumPy's names, in any order
    c = np.transpose(x, axes=(1, 0))
    return np.sum(a * w) + np.sum(b) + np.sum(np.sum(c, axis=0) ** 2)


def test_keyword_arguments_named_as_numpy_names_them(target):
    rng = np.random.default_rng(2)
    check_grad(clip_keywords, (rand(rng, 3, 4), rand(rng, 3, 4)), wrt=(0, 1), target=target)


def transposes(x):
    y = x.reshape(2, 3, 4)
    z = np.transpose(y, (2, 0, 1)) * np.arange(24.0).reshape(4, 2, 3)
    m = x.transpose(1, 0)
    return np.sum(np.sin(z)) + np.sum(m * m.T.T) + np.sum(x.T @ x.transpose().T)


def test_transpose_with_axes(target):
    rng = np.random.default_rng(3)
    check_grad(transposes, (rand(rng, 6, 4),), target=target)


def transpose_variable_axes(x, order):
    return np.sum(np.transpose(x, order))


def test_transpose_with_non_constant_axes_is_refused():
    with pytest.raises(srcgrad.UnsupportedSyntaxError, match=r"test_constructs_real.py:\d+: .*axes"):
        srcgrad.grad(transpose_variable_axes, target="python")(np.ones((2, 3)), (1, 0))


def strings_and_squeeze(x, w):
    col = (x @ w[:, None]).squeeze(axis=1)             # (n, 1) -> (n,)
    row = x[:1].squeeze(0)
    y = x.astype("float64") * 2.0 + np.zeros(x.shape, dtype="float64")
    return np.sum(np.tanh(col)) + np.sum(row ** 3) + np.sum(y * y)


def test_string_arguments_and_squeeze(target):
    rng = np.random.default_rng(4)
    check_grad(strings_and_squeeze, (rand(rng, 3, 4), rand(rng, 4)), wrt=(0, 1), target=target)


def squeeze_wrong_axis(x):
    return np.sum(x.squeeze(axis=0))


def squeeze_no_axis(x):
    return np.sum(x.squeeze())


def test_squeeze_checks_its_axis():
    f = srcgrad.grad(squeeze_wrong_axis, target="python")
    np.testing.assert_allclose(f(np.ones((1, 3))), np.ones((1, 3)))
    with pytest.raises(AssertionError, match=r"test_constructs_real.py:\d+: cannot squeeze axis 0"):
        f(np.ones((2, 3)))
    with pytest.raises(srcgrad.UnsupportedSyntaxError, match=r"squeeze\(\)` without an axis"):
        srcgrad.grad(squeeze_no_axis, target="python")(np.ones((1, 3)))


def string_to_helper_inner(x, mode):
    return x


def string_to_helper(x):
    return string_to_helper_inner(x, "constant") * 2.0


def test_string_argument_to_a_helper_is_refused():
    with pytest.raises(srcgrad.UnsupportedSyntaxError, match=r"string argument"):
        srcgrad.grad(string_to_helper, target="python")(1.0)


def dot_with_scalar(x, s):
    a = np.dot(2.0, x)
    b = np.dot(x, s)
    return np.sum(a * b) + np.dot(s, s) + np.dot(x[:, 0], x)[1]


def test_dot_with_a_scalar(target):
    rng = np.random.default_rng(5)
    check_grad(dot_with_scalar, (rand(rng, 3, 2), 0.7), wrt=(0, 1), target=target)


# ------------------------------------------------------------------------------------------------
# List and tuple literals as values
# ------------------------------------------------------------------------------------------------

def array_of_scalars(x, s):
    a = x[0] * s
    v = np.array([a, 2.0 * a, 3, s * s])               # an int among floats
    m = np.array([[a, s], [s * a, 1.0]])               # nested: rows stacked
    return np.sum(v * np.arange(4.0)) + np.sum(m @ m)


def test_array_of_scalars(target):
    check_grad(array_of_scalars, (np.array([0.4, -1.1]), 0.8), wrt=(0, 1), target=target)


def array_of_arrays(x, w):
    m = np.array([x, 2.0 * w, np.sin(x)])              # (3, n): stacked
    t = np.asarray((w, x * w))
    return np.sum(m ** 2 * np.arange(3.0)[:, None]) + np.sum(t[1] * t[0])


def test_array_of_arrays(target):
    rng = np.random.default_rng(6)
    check_grad(array_of_arrays, (rand(rng, 4), rand(rng, 4)), wrt=(0, 1), target=target)


def sum_of_literals(x, s):
    return np.sum(sum([x, 2.0 * x, x * x])) + sum((s, s * s), 1.0) + sum([s])


def test_sum_of_a_literal():
    rng = np.random.default_rng(7)
    check_grad(sum_of_literals, (rand(rng, 2, 3), 0.6), wrt=(0, 1), target="python")


def fancy_index_literal(x):
    rows = x[[0, 2, 0]]                                # repeated index: adjoints add up
    return np.sum(rows ** 2) + np.sum(x[[1]] * 3.0)


def test_fancy_index_with_a_literal_list(target):
    rng = np.random.default_rng(8)
    check_grad(fancy_index_literal, (rand(rng, 3, 2),), target=target)


def list_variables(x, s):
    pieces = [x, x * 2.0]
    scalars = [s, s * x[0]]
    pair = (np.sin(x), x)
    return np.sum(np.concatenate(pieces) ** 2) + np.sum(np.array(scalars) ** 3) + \
        np.sum(np.stack(pair) * np.arange(2.0)[:, None]) + np.sum(np.array(pieces)[1])


def test_list_and_tuple_variables():
    rng = np.random.default_rng(9)
    check_grad(list_variables, (rand(rng, 3), 0.3), wrt=(0, 1), target="python")


def copies(x):
    y = np.array(x)
    y[0] = 0.0                                         # a copy: x is untouched
    return np.sum(y * x) + np.sum(np.asarray(x) ** 2)


def test_np_array_of_an_array_copies(target):
    check_grad(copies, (np.array([0.5, -0.3, 1.2]),), target=target)
