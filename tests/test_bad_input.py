"""The bad-input catalogue (issue "fuzzing and hardening"): each case gives a clear error or the
right answer, never a crash or a silently wrong gradient."""
import numpy as np
import pytest

import srcgrad
from srcgrad import runtime
from srcgrad.errors import UnsupportedSyntaxError


def int_in_arithmetic(x):
    k = int(x)
    return k * x


def comparison_as_value(x):
    c = x > 0.0
    return c * x


def argmax_in_arithmetic(a):
    k = np.argmax(a)
    return k * a[0]


def comparison_as_condition(x):
    c = x > 0.0
    if c:
        return x * x
    return -x


def where_condition(a):
    return np.sum(np.where(a > 0.0, a * a, -a))


def long_loop(a, n):
    s = 0.0
    for i in range(n):
        s = s * 0.5 + a[i % a.shape[0]]
        s = s * s
    return s


def total(a):
    return np.sum(a * a)


def first_times_two(a):
    return a[0] * 2.0


@pytest.mark.parametrize("func", [int_in_arithmetic, comparison_as_value])
@pytest.mark.parametrize("target", ["python", "cpu"])
def test_non_differentiable_value_in_arithmetic_is_refused(func, target):
    with pytest.raises(UnsupportedSyntaxError, match="no derivative") as info:
        srcgrad.grad(func, target=target)(1.5)
    assert "test_bad_input.py" in str(info.value)


def test_argmax_in_arithmetic_is_refused():
    with pytest.raises(UnsupportedSyntaxError, match="argmax"):
        srcgrad.grad(argmax_in_arithmetic, target="python")(np.array([1.0, 3.0, 2.0]))


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_conditions_on_active_values_are_fine(target):
    assert srcgrad.grad(comparison_as_condition, target=target)(1.5) == pytest.approx(3.0)
    assert srcgrad.grad(comparison_as_condition, target=target)(-1.5) == pytest.approx(-1.0)
    a = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(srcgrad.grad(where_condition, target=target)(a), [2.0, -1.0, 6.0])


def test_tape_larger_than_the_limit_fails_early_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(runtime, "MAX_TAPE_BYTES", 64 * 1024)
    g = srcgrad.grad(long_loop, target="python")
    assert np.isfinite(g(np.array([0.1, 0.2]), 100)).all()
    with pytest.raises(MemoryError, match="SRCGRAD_MAX_TAPE_BYTES"):
        g(np.array([0.1, 0.2]), 100_000)


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_empty_array(target):
    g = srcgrad.grad(total, target=target)(np.zeros(0))
    assert g.shape == (0,)


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_zero_d_array_is_a_scalar(target):
    assert srcgrad.grad(comparison_as_condition, target=target)(np.array(2.0)) == pytest.approx(4.0)


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_non_contiguous_fortran_and_read_only_arrays(target):
    base = np.arange(12.0).reshape(3, 4)
    g = srcgrad.grad(total, target=target)
    for a in (base[:, ::2], np.asfortranarray(base), base.T):
        np.testing.assert_allclose(g(a), 2.0 * a)
    frozen = base.copy()
    frozen.flags.writeable = False
    np.testing.assert_allclose(g(frozen), 2.0 * frozen)
    np.testing.assert_allclose(srcgrad.grad(first_times_two, target=target)(frozen[0]), [2.0, 0, 0, 0])


@pytest.mark.parametrize("bad", ["text", object(), {1.0, 2.0}, 1 + 2j])
def test_non_numeric_arguments_are_type_errors(bad):
    with pytest.raises(TypeError, match="expected"):
        srcgrad.grad(total, target="python")(bad)


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_nan_in_nan_out(target):
    g = srcgrad.grad(total, target=target)(np.array([1.0, np.nan]))
    assert g[0] == 2.0 and np.isnan(g[1])


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_repeated_calls_follow_the_argument_types(target):
    """__call__'s fast path (a cache keyed by argument dtypes and ndims) must pick a new
    specialization when the types change, and still reject bad arguments after a hit."""
    def weighted_sum(x, w):
        return np.sum(x * w)

    g = srcgrad.grad(weighted_sum, wrt=1, target=target)
    x = np.arange(3.0)
    w = np.ones(3)
    for _ in range(2):                                  # the second call takes the fast path
        np.testing.assert_allclose(g(x, w), x)
    g32 = g(x.astype(np.float32), w.astype(np.float32))
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, x)
    np.testing.assert_allclose(g(np.ones((2, 3)), w), [2.0, 2.0, 2.0])   # 2-d x: a new kind
    np.testing.assert_allclose(g(x, w=w), x)                               # keyword: full path
    with pytest.raises(TypeError, match="argument 'w'"):
        g(x, np.arange(3))                              # an int array cannot be differentiated
    with pytest.raises(TypeError):
        g(x, "not an array")
    np.testing.assert_allclose(g(x, w), x)
