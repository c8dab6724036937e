"""Shape errors in user code name the user's file, line and source (issue #3): srcgrad.ShapeError.

Both targets: the python target maps the failing generated line through the module's line table;
the cpu target re-runs the uncompiled version of the same specialization to find that line (also
when Numba refuses the dimensions at compile time). Non-shape errors keep their own type.
"""
import inspect
import math

import numpy as np
import pytest

import srcgrad
from srcgrad import d, register_adjoint
from conftest import TARGETS

FILE = "test_shape_errors.py"
_CACHE = {}


def gradfn(f, wrt, target, mode="grad"):
    key = (f.__name__, wrt, target, mode)
    if key not in _CACHE:
        _CACHE[key] = getattr(srcgrad, mode)(f, wrt=wrt, target=target)
    return _CACHE[key]


def line_of(f, text):
    """The file line number of the first line of ``f`` containing ``text``."""
    lines, first = inspect.getsourcelines(f)
    for offset, line in enumerate(lines):
        if text in line:
            return first + offset
    raise AssertionError(f"{text!r} not in {f.__name__}")


def assert_names_line(error, f, text, *shapes):
    message = str(error)
    assert isinstance(error, srcgrad.ShapeError), type(error)
    assert isinstance(error, ValueError) and isinstance(error, srcgrad.SrcgradError)
    lineno = line_of(f, text)
    assert f"{FILE}, line {lineno} in {f.__name__}: {text}" in message, message
    assert error.lineno == lineno and error.filename.endswith(FILE) and error.function == f.__name__
    assert error.line_text == text
    for shape in shapes:
        assert str(shape) in message, message
    for word in ("numba", "nopython", "TypingError", "gufunc"):
        assert word not in message, message
    assert error.__cause__ is None and error.__suppress_context__      # raised `from None`
    return message


def raised(call, *args):
    with pytest.raises(srcgrad.ShapeError) as info:
        call(*args)
    return info.value


# ------------------------------------------------------------------------------------------------
# forward sweep: matmul, broadcasting (float64 and float32)
# ------------------------------------------------------------------------------------------------

def matmul_mismatch(a, b):
    c = a * 2.0
    h = c @ b
    return np.sum(np.tanh(h))


def broadcast_mismatch(a, b):
    h = np.sin(a)
    s = h * b + 1.0
    return np.sum(s)


# float32 on cpu is another compile of the same code path: slow
F32_CPU_SLOW = [("python", np.float64), ("python", np.float32), ("cpu", np.float64),
                pytest.param("cpu", np.float32, marks=pytest.mark.slow)]


@pytest.mark.parametrize("target, dtype", F32_CPU_SLOW)
def test_matmul_mismatch(target, dtype):
    error = raised(gradfn(matmul_mismatch, (0, 1), target), np.ones((3, 4), dtype), np.ones((5, 2), dtype))
    message = assert_names_line(error, matmul_mismatch, "h = c @ b", (3, 4), (5, 2))
    assert "not aligned" in message and error.shapes == [(3, 4), (5, 2)] and error.sweep == "forward"


@pytest.mark.parametrize("target, dtype", F32_CPU_SLOW)
def test_broadcast_mismatch(target, dtype):
    error = raised(gradfn(broadcast_mismatch, (0, 1), target), np.ones((3, 4), dtype), np.ones((3, 2), dtype))
    message = assert_names_line(error, broadcast_mismatch, "s = h * b + 1.0", (3, 4), (3, 2))
    assert "cannot be broadcast" in message and error.sweep == "forward"


def test_good_shapes_still_work():
    """The same GradFunctions give gradients once the shapes fit (nothing is cached wrongly)."""
    for target in TARGETS:
        a, b = np.full((3, 4), 0.1), np.full((4, 2), 0.2)
        ga, gb = gradfn(matmul_mismatch, (0, 1), target)(a, b)
        g = 1.0 - np.tanh((2.0 * a) @ b) ** 2
        np.testing.assert_allclose(ga, 2.0 * g @ b.T)
        np.testing.assert_allclose(gb, (2.0 * a).T @ g)


# ------------------------------------------------------------------------------------------------
# helpers, value_and_grad and vjp
# ------------------------------------------------------------------------------------------------

def add_helper(x, y):
    z = x + y
    return z * z


def calls_helper(a, b):
    c = a * 3.0
    return np.sum(add_helper(c, b))


@pytest.mark.parametrize("target", TARGETS)
def test_mismatch_in_a_helper_names_the_helper_line_and_the_call(target):
    error = raised(gradfn(calls_helper, (0, 1), target), np.ones(4), np.ones(3))
    message = assert_names_line(error, add_helper, "z = x + y", (4,), (3,))
    call_line = line_of(calls_helper, "return np.sum(add_helper(c, b))")
    assert f"line {call_line}, in calls_helper: return np.sum(add_helper(c, b))" in message, message
    assert error.callers[0][1:3] == (call_line, "calls_helper")


@pytest.mark.parametrize("target", TARGETS)
def test_value_and_grad_and_vjp_give_shape_errors_too(target):
    a, b = np.ones((3, 4)), np.ones((5, 2))
    assert_names_line(raised(gradfn(matmul_mismatch, (0, 1), target, "value_and_grad"), a, b),
                      matmul_mismatch, "h = c @ b")
    assert_names_line(raised(gradfn(matmul_mismatch, (0, 1), target, "vjp"), a, b),
                      matmul_mismatch, "h = c @ b")


# ------------------------------------------------------------------------------------------------
# reverse sweep only: a user's derivative rule with a wrong shape
# ------------------------------------------------------------------------------------------------

def double_it(x):
    return x * 2.0


@register_adjoint(double_it)
def _double_it_adjoint(result, x):
    d[x] += d[result] @ np.ones((3, 3))        # wrong: d[result] has x's shape, (3, 2) below


def uses_bad_rule(a, b):
    h = a @ b
    return np.sum(double_it(h))


@pytest.mark.parametrize("target", TARGETS)
def test_mismatch_in_the_reverse_sweep(target):
    error = raised(gradfn(uses_bad_rule, (0, 1), target), np.ones((3, 4)), np.ones((4, 2)))
    message = assert_names_line(error, uses_bad_rule, "return np.sum(double_it(h))", (3, 2), (3, 3))
    assert error.sweep == "reverse" and "reverse sweep" in message


# ------------------------------------------------------------------------------------------------
# compile time (Numba typing) and an out-of-range axis on the cpu target
# ------------------------------------------------------------------------------------------------

def concat_ndim(a, b):
    c = np.concatenate((a, b))
    return np.sum(c * c)


def reduce_bad_axis(a):
    r = np.sum(a, axis=2)
    return np.sum(r)


@pytest.mark.parametrize("target", TARGETS)
def test_dimension_mismatch_refused_at_compile_time(target):
    """Numba refuses the dimensions while typing (cpu); NumPy at run time (python)."""
    error = raised(gradfn(concat_ndim, (0, 1), target), np.ones((3, 4)), np.ones(4))
    assert_names_line(error, concat_ndim, "c = np.concatenate((a, b))")


@pytest.mark.parametrize("target", TARGETS)
def test_axis_out_of_range(target):
    """Regression: the cpu target once summed over axis 0 for np.sum(a2d, axis=2)."""
    error = raised(gradfn(reduce_bad_axis, 0, target), np.ones((3, 4)))
    message = assert_names_line(error, reduce_bad_axis, "r = np.sum(a, axis=2)", (3, 4))
    assert "axis 2 is out of bounds" in message


# ------------------------------------------------------------------------------------------------
# other errors keep their behaviour; the line table
# ------------------------------------------------------------------------------------------------

def sqrt_of(x):
    return math.sqrt(x) * x


def three_d_product(a, b):
    return np.sum(a * b)


def test_non_shape_value_error_is_unchanged():
    with pytest.raises(ValueError, match="math domain error") as info:
        gradfn(sqrt_of, 0, "python")(-1.0)
    assert not isinstance(info.value, srcgrad.ShapeError)


def test_three_d_gradient_sums_over_a_size_one_axis_on_both_targets():
    """Once a cpu-target limitation (an error), now summed back like NumPy broadcasting does."""
    a, b = np.ones((2, 3, 4)), np.ones((1, 3, 4))
    for target in ("python", "cpu"):
        ga, gb = gradfn(three_d_product, (0, 1), target)(a, b)
        assert ga.shape == (2, 3, 4) and gb.shape == (1, 3, 4)
        assert np.all(ga == 1.0) and np.all(gb == 2.0)


def test_generated_module_carries_a_line_table():
    spec = gradfn(matmul_mismatch, (0, 1), "python").specialize(np.ones((3, 4)), np.ones((4, 2)))
    user_line = line_of(matmul_mismatch, "h = c @ b")
    generated = spec.source.splitlines()
    hits = [n for n, (owner, line, sweep) in spec.lines.items() if line == user_line and sweep == "forward"]
    assert hits and all("@ b" in generated[n - 1] for n in hits)
    assert any(line == user_line and sweep == "reverse" for _, line, sweep in spec.lines.values())
    assert spec.user_sources["matmul_mismatch"][1][user_line] == "h = c @ b"
