"""The fast path of a repeated call (issue #18, srcgrad/fast_call.py).

After a call with plain arguments has run through the full path, the next call with arguments of
the same exact types (an array's dtype and ndim) goes straight to the adjoint. These tests check
that it gives what the full path gives, switches specialization when the types change, still
raises the full path's errors, and still reruns a failing fusion guard with the fallbacks. No
timing here: benchmarks/results has the numbers.
"""
import numpy as np
import pytest

import srcgrad
from srcgrad import fast_call

from conftest import check_grad


def sumsq(x):
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i] * x[i]
    return s


def scaled(x, k, n):
    return k * np.sum(np.sin(x) ** 2) + n * np.sum(x)


def product(x, y):
    return np.sum(x * y)


def full_path(f, **options):
    """A GradFunction that never builds the fast closure (the behaviour before it)."""
    g = srcgrad.value_and_grad(f, **options)
    g._fast_disabled = True
    return g


@pytest.fixture(autouse=True)
def _full_path_switch(monkeypatch):
    make = fast_call.make
    monkeypatch.setattr(fast_call, "make", lambda function, *rest: None
                        if getattr(function, "_fast_disabled", False) else make(function, *rest))


def equal(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for u, v in zip(a, b):
            equal(u, v)
        return
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b or (np.isnan(a) and np.isnan(b))


def test_a_repeated_call_takes_the_fast_path_and_equals_the_full_path():
    rng = np.random.default_rng(0)
    fast = srcgrad.value_and_grad(scaled, wrt=(0, 1), target="python")
    slow = full_path(scaled, wrt=(0, 1), target="python")
    x0 = rng.standard_normal(5)
    first = fast(x0, 0.5, 3)
    assert fast._fast is not None and slow._fast is None
    assert "type(a0) is not ndarray" in fast._fast.source and "type(a1) is not c1" in fast._fast.source
    calls = []
    real = fast._fast
    fast._fast = lambda args: calls.append(args) or real(args)
    for _ in range(2):
        x = rng.standard_normal(5)
        equal(fast(x, 0.5, 3), slow(x, 0.5, 3))
    assert len(calls) == 2                      # both calls went through the closure
    equal(first, slow(x0, 0.5, 3))
    check_grad(scaled, (x, 0.5, 3), wrt=(0, 1), target="python",
               gradfn=srcgrad.grad(scaled, wrt=(0, 1), target="python"))


@pytest.mark.parametrize("mode", ["grad", "value_and_grad"])
def test_single_wrt_and_modes(mode):
    f = getattr(srcgrad, mode)(sumsq, target="python")
    x = np.array([1.0, -2.0, 3.0])
    for _ in range(3):
        out = f(x)
    grads = out if mode == "grad" else out[1]
    np.testing.assert_allclose(grads, 2 * x)
    if mode == "value_and_grad":
        assert type(out[0]) is float and out[0] == 14.0
    assert f._fast is not None


def test_scalar_gradient_is_a_python_float_and_nan_in_nan_out():
    g = srcgrad.value_and_grad(scaled, wrt=1, target="python")
    x = np.ones(3)
    for _ in range(2):
        value, dk = g(x, 2.0, 1)
        assert type(dk) is float and type(value) is float
    value, dk = g(np.array([np.nan, 1.0, 1.0]), 2.0, 1)        # same types: the fast path
    assert np.isnan(value) and np.isnan(dk)
    h = srcgrad.value_and_grad(sumsq, target="python")
    h(np.array([0.0, 1.0]))
    value, grads = h(np.array([np.nan, 1.0]))
    assert np.isnan(value) and np.isnan(grads[0]) and grads[1] == 2.0


def test_type_changes_switch_specialization():
    g = srcgrad.value_and_grad(product, wrt=(0, 1), target="python")
    slow = full_path(product, wrt=(0, 1), target="python")
    rng = np.random.default_rng(1)
    a64, b64 = rng.standard_normal(4), rng.standard_normal(4)
    a32, b32 = a64.astype(np.float32), b64.astype(np.float32)
    a2, b2 = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    for args in [(a64, b64), (a64, b64), (a32, b32), (a32, b32), (a2, b2), (a2, b2), (a64, b64),
                 (a32, b64), (a32, b64), (a64, 2.0), (a64, 2.0), (a64, 2)]:
        if type(args[1]) is int:                # not a float: no gradient (the full path's error)
            with pytest.raises(TypeError, match="cannot differentiate"):
                g(*args)
            continue
        out = g(*args)
        equal(out, slow(*args))
        assert out[1][0].dtype == args[0].dtype        # each gradient in its argument's dtype
        precision = "float32" if all(getattr(a, "dtype", None) == np.float32 for a in args) \
            else "float64"
        assert g._last.key[1] == precision


def test_errors_after_a_fast_path_hit():
    g = srcgrad.grad(product, wrt=(0, 1), target="python")
    a, b = np.ones(3), np.ones(3)
    g(a, b)
    g(a, b)
    with pytest.raises(srcgrad.ShapeError, match="cannot be broadcast"):
        g(np.ones(3), np.ones(4))               # same types, so the fast path: the located error
    with pytest.raises(TypeError, match="argument 'y'"):
        g(a, "text")
    with pytest.raises(TypeError, match="product"):
        g(a)
    equal(g(a, b), (np.ones(3), np.ones(3)))    # and calls work again afterwards


def test_keywords_zero_d_arrays_and_pytrees_take_the_full_path():
    def tree(p, x):
        return np.sum(p["w"] * x) + p["b"] ** 2

    g = srcgrad.value_and_grad(tree, target="python")
    p, x = {"w": np.ones(3), "b": 2.0}, np.arange(3.0)
    for _ in range(2):
        value, grads = g(p, x)
        assert g._fast is None
        assert value == 7.0 and grads["b"] == 4.0
        np.testing.assert_array_equal(grads["w"], x)
    h = srcgrad.grad(sumsq, target="python")
    h(np.ones(2))
    assert h._fast is not None
    np.testing.assert_array_equal(h(x=np.ones(2)), [2.0, 2.0])
    k = srcgrad.grad(lambda x: x * x, target="python")
    for _ in range(2):
        out = k(np.array(3.0))                  # 0-d: its gradient is a 0-d array
        assert isinstance(out, np.ndarray) and out.shape == () and out == 6.0


def test_vjp_through_the_fast_path():
    def f(x):
        return np.sin(x) * 2.0

    v = srcgrad.vjp(f, target="python")
    x = np.linspace(0.0, 1.0, 4)
    for _ in range(2):
        value, pullback = v(x)
    assert v._fast is not None
    np.testing.assert_allclose(value, 2 * np.sin(x))
    np.testing.assert_allclose(pullback(np.ones(4)), 2 * np.cos(x))


def stretched(a, b):
    h = np.sin(a)
    s = h * b + 1.0
    return np.sum(s * s)


def test_cpu_guard_fallback_from_the_fast_path():
    g = srcgrad.grad(stretched, wrt=(0, 1), target="cpu")
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    check_grad(stretched, (a, b), wrt=(0, 1), gradfn=g)
    check_grad(stretched, (a, b), wrt=(0, 1), gradfn=g)
    assert g._fast is not None and g._last.lean and g._last.fallback is None
    b1 = rng.standard_normal((3, 1))            # same types, a size-1 axis: the guard fails
    check_grad(stretched, (a, b1), wrt=(0, 1), gradfn=g)
    lean = next(spec for spec in g._specializations.values() if spec.lean)
    assert lean.fallback is not None and g._fast is None
    check_grad(stretched, (a, b), wrt=(0, 1), gradfn=g)
    assert g._fast is not None                  # rebuilt, on the fallback's adjoint
    assert g._fast.__globals__["adjoint"] is lean.fallback.adjoint
    check_grad(stretched, (a, b1), wrt=(0, 1), gradfn=g)
    with pytest.raises(srcgrad.ShapeError, match="cannot be broadcast"):
        g(a, np.ones((3, 2)))


def test_alternating_types_reuse_their_closures(monkeypatch):
    made = []
    make = fast_call.make
    monkeypatch.setattr(fast_call, "make", lambda *a: made.append(a[0]) or make(*a))
    g = srcgrad.value_and_grad(product, wrt=(0, 1), target="python")
    slow = full_path(product, wrt=(0, 1), target="python")
    one = (np.arange(3.0), np.ones(3))
    two = (np.ones((2, 2)), np.full((2, 2), 2.0))
    for _ in range(4):
        for args in (one, two):
            equal(g(*args), slow(*args))
    assert made.count(g) == 2                   # one closure per argument types, made once
