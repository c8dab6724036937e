"""Cuts in the MNIST trainer's cold compile (issue 17): what they change must stay correct.

* the optimizers' update rules run on flat 1-d views, one compile per dtype for every parameter
  shape and layout;
* the cpu ``unbroadcast`` of a 2-d gradient to a 2-d array sums in one pass;
* ``huge_pages`` is an intrinsic (large fresh arrays still get the advice; small ones untouched).
"""
import numba
import numpy as np
import pytest

from srcgrad import optim
from srcgrad.backends.cpu import huge_pages, unbroadcast


def test_update_rules_compile_once_per_dtype_for_every_shape_and_layout():
    rng = np.random.default_rng(0)
    shapes = [(4, 3), (5,), (2, 3, 2), ()]
    ps = tuple(rng.standard_normal(s) for s in shapes) + (np.asfortranarray(rng.standard_normal((3, 4))),)
    gs = tuple(rng.standard_normal(p.shape) for p in ps[:-1]) + (rng.standard_normal((3, 8))[:, ::2],)
    vel = tuple(np.zeros_like(p) for p in ps)
    assert vel[-1].flags.f_contiguous
    want_p = [p.copy() for p in ps]
    want_v = [v.copy() for v in vel]
    for _ in range(2):
        for p, g, v in zip(want_p, gs, want_v):
            v *= 0.9
            v += g
            p -= 0.1 * v
        optim.momentum_update(ps, gs, vel, 0.1, 0.9)
    for got, want in zip(ps + vel, want_p + want_v):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    # every compiled kernel takes flat arrays; the five parameters above share one (other tests in
    # the process may have compiled other dtypes or scalar argument types)
    sigs = optim._momentum_flat.signatures
    assert all(a.ndim == 1 and a.layout == "C" for sig in sigs for a in sig[:3]), sigs
    assert len({sig[:3] for sig in sigs if sig[0].dtype == numba.float64}) == 1, sigs


def test_update_rules_refuse_bad_arrays():
    p = np.zeros((3, 4))
    with pytest.raises(ValueError, match="shape"):
        optim.momentum_update((p,), (np.zeros((3, 4)),), (np.zeros((4, 3)),), 0.1, 0.9)
    with pytest.raises(numba.core.errors.TypingError, match="layout"):
        optim.momentum_update((p,), (p,), (np.asfortranarray(np.zeros((3, 4))),), 0.1, 0.9)
    with pytest.raises(numba.core.errors.TypingError, match="contiguous"):
        optim.sgd_update((np.zeros((3, 8))[:, ::2],), (p,), 0.1)
    with pytest.raises(numba.core.errors.TypingError, match="ndim"):
        optim.sgd_update((p,), (np.zeros(12),), 0.1)
    assert np.all(p == 0)


@numba.njit
def _unbroadcast(g, like):
    return unbroadcast(g, like)


@pytest.mark.parametrize("like_shape", [(3, 4), (1, 4), (3, 1), (1, 1)])
def test_unbroadcast_2d_to_2d(like_shape):
    g = np.random.default_rng(1).standard_normal((3, 4))
    want = g.sum(axis=tuple(a for a in (0, 1) if like_shape[a] == 1), keepdims=True)
    got = _unbroadcast(g, np.zeros(like_shape))
    assert got.shape == like_shape
    np.testing.assert_allclose(got, want, rtol=1e-14)
    if like_shape == (3, 4):
        assert got is g or np.shares_memory(got, g)      # nothing to sum: the gradient itself
    nan = g.copy()
    nan[1, 2] = np.nan
    assert np.isnan(_unbroadcast(nan, np.zeros(like_shape))).sum() == 1


@numba.njit
def _fresh(n):
    a = huge_pages(np.empty(n))
    a[:] = 2.0
    return a


def test_huge_pages_returns_the_array():
    for n in (0, 3, 1 << 20):                 # below and above the 4 MiB threshold
        a = _fresh(n)
        assert a.shape == (n,) and np.all(a == 2.0)


def test_unread_ranges_are_dropped_after_fusion_and_read_ones_kept():
    import ast
    from types import SimpleNamespace

    from srcgrad.backends.cpu.fusion import _drop_unread_ranges

    n_int = SimpleNamespace(is_array=False, cls="int")
    x_float = SimpleNamespace(is_array=False, cls="float")
    code = ["a = np.arange(n)", "b = np.arange(n)", "c = np.arange(x)", "d = np.arange(0, n, 2)",
            "e = b[0]"]
    sections = [[ast.parse(line).body[0] for line in code]]
    kept = _drop_unread_ranges(sections, {"n": n_int, "x": x_float})
    # a and d: unread ranges of integers, dropped; b: read; c: of a float (kinds do not say int)
    assert [ast.unparse(s) for s in kept[0]] == ["b = np.arange(n)", "c = np.arange(x)", "e = b[0]"]
