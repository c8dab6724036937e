"""Scaled squares (transform.SCALED_SQUARES, simplify.scaled_squares): a scalar product
``t = u * a`` where ``u = k * a`` is a single-use temporary (k a number or an inactive value) gives
``a`` one contribution ``2.0 * d[t] * u`` and ``u`` no adjoint (Rosenbrock's ``100.0 * a * a``).

Each case: the gradient equals the one with the switch off (to rounding) and central finite
differences, on the python target; Rosenbrock also compiled. Cases where ``a`` changes between the
two products, or ``k`` is active, keep the product rule.
"""
import numpy as np
import pytest

import srcgrad
from srcgrad import transform
from conftest import check_grad


def rosenbrock(x):
    s = 0.0
    for i in range(x.shape[0] - 1):
        a = x[i + 1] - x[i] * x[i]
        b = 1.0 - x[i]
        s += 100.0 * a * a + b * b
    return s


def right_factor(x, k):
    """a * (a * k): the other order, k an inactive argument."""
    s = 0.0
    for i in range(x.shape[0]):
        a = x[i] + 0.5
        s += a * (a * k)
    return s


def carried(x):
    """A loop value carried through a product (no joint sweep): u = 3 a is needed per iteration
    in the reverse loop (taped or recomputed)."""
    s = 1.0
    for i in range(x.shape[0]):
        a = x[i] * s
        s = 0.5 * s + 3.0 * a * a
    return s


def rebound_between(x):
    """u = 3 a, then a changes: u * a is not a square (product rule kept)."""
    a = x[0] * x[1]
    u = 3.0 * a
    a = a + x[2]
    return u * a


def active_factor(x, w):
    """w * a * a with w differentiated: its adjoint is needed (product rule kept)."""
    a = x[0] - x[1]
    return w * a * a


CASES = [
    (rosenbrock, lambda rng: (rng.random(9),), (0,), True),
    (right_factor, lambda rng: (rng.standard_normal(5), 1.7), (0,), True),
    (carried, lambda rng: (rng.standard_normal(4) * 0.5,), (0,), True),
    (rebound_between, lambda rng: (rng.standard_normal(3),), (0,), False),
    (active_factor, lambda rng: (rng.standard_normal(2), 0.8), (0, 1), False),
]


def _build(f, args, wrt, target, on, monkeypatch, tmp_path):
    monkeypatch.setattr(transform, "SCALED_SQUARES", on)
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / f"{target}{on}"))
    g = srcgrad.grad(f, wrt=wrt, target=target)
    return g(*args), g.source_for(*args)


@pytest.mark.parametrize("f, make, wrt, folded", CASES, ids=[c[0].__name__ for c in CASES])
def test_scaled_square_equals_the_product_rule_and_fd(f, make, wrt, folded, monkeypatch, tmp_path):
    args = make(np.random.default_rng(3))
    on, source_on = _build(f, args, wrt, "python", True, monkeypatch, tmp_path)
    off, source_off = _build(f, args, wrt, "python", False, monkeypatch, tmp_path)
    assert ("a scaled square" in source_on) == folded
    assert "a scaled square" not in source_off
    for a, b in zip(on, off):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    check_grad(f, args, wrt=wrt, target="python")


def test_rosenbrock_one_contribution_compiled(monkeypatch, tmp_path):
    x = np.random.default_rng(4).random(30)
    (g_on,), source = _build(rosenbrock, (x,), (0,), "cpu", True, monkeypatch, tmp_path)
    adjoint = source[source.index("def rosenbrock_adjoint"):]
    # a's adjoint: one product (the hand adjoint's 200 * a), no adjoint of 100.0 * a
    assert "_adj_a = 2.0 * _adj_t10 * _t9" in adjoint and "_adj_t9" not in adjoint
    (g_off,), _ = _build(rosenbrock, (x,), (0,), "cpu", False, monkeypatch, tmp_path)
    np.testing.assert_allclose(g_on, g_off, rtol=1e-13, atol=1e-15)
    xb = 1.0 - x[:-1]
    a = x[1:] - x[:-1] ** 2
    want = np.zeros_like(x)
    want[:-1] += -400.0 * a * x[:-1] - 2.0 * xb
    want[1:] += 200.0 * a
    np.testing.assert_allclose(g_on, want, rtol=1e-12, atol=1e-12)
    y = np.random.default_rng(5).standard_normal(6) * 0.5
    (c_on,), source = _build(carried, (y,), (0,), "cpu", True, monkeypatch, tmp_path)
    assert "a scaled square" in source
    (c_off,), _ = _build(carried, (y,), (0,), "cpu", False, monkeypatch, tmp_path)
    np.testing.assert_allclose(c_on, c_off, rtol=1e-13, atol=1e-15)
    nan = x.copy()
    nan[3] = np.nan
    assert np.isnan(srcgrad.grad(rosenbrock)(nan)[2:5]).all()        # NaN in, NaN out
