"""CUDA array mode (srcgrad.cuda.array_mode) in Numba's CUDA simulator: whole-array programs and
their gradients as fused kernels, checked against the python target (the same generated adjoint
run by NumPy) and, for the MLP, against central finite differences.

Run with the other CUDA tests: ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import srcgrad
import srcgrad.cuda
from srcgrad.backends import cuda_kernels as ck

pytestmark = pytest.mark.skipif(not (ck.SIMULATOR or os.environ.get("SRCGRAD_CUDA_TESTS") == "gpu"),
                                reason="CUDA tests run in the simulator session (or SRCGRAD_CUDA_TESTS=gpu)")


# ------------------------------------------------------------------------------------------------
# Programs (plain NumPy, as a user writes them)
# ------------------------------------------------------------------------------------------------

from srcgrad.training.mlp import mlp_loss  # noqa: E402  (the one MNIST model)


def logistic(w, b, X, t):
    z = X @ w + b
    return np.mean(np.log(1.0 + np.exp(-t * z))) + 0.01 * np.sum(w * w)


def outer_broadcast(a, c):
    p = np.tanh(a[:, None] * c[None, :])
    return np.sum(p * p) + np.sum(np.mean(p, axis=0) ** 2)


def column_stats(x):
    lo = np.min(x, axis=0)
    centered = x - np.mean(x, axis=0, keepdims=True)
    return np.sum(centered * centered) + np.sum(lo * lo) + np.max(x)


def finite_difference(x):
    d = np.zeros_like(x)
    d[1:-1] = x[2:] - x[:-2]
    return np.sum(d * d) + np.sum(x[::2])


def transposes(A, u, v):
    return v @ (A.T @ u) + np.sum(A.T * A.T)


def selects(x, y):
    a = np.where(x > y, x * y, np.abs(x - y))
    return np.sum(np.clip(a, -0.5, 0.5)) + np.sum(np.sqrt(y * y + 1.0))


def scaled(x, s):
    return np.sum(s * np.exp(-x * x)) * s


def branchy(x):
    if np.sum(x) > 0:
        return np.sum(x)
    return -np.sum(x)


def unsupported(x):
    return np.sum(np.cumsum(x))


# ------------------------------------------------------------------------------------------------

def _reference(func, wrt, args):
    return srcgrad.value_and_grad(func, wrt=wrt, target="python")(*args)


def _check(func, wrt, args, rtol):
    f = srcgrad.value_and_grad(func, wrt=wrt, target="cuda", arrays=True)
    value, grads = f(*args)
    ref_value, ref_grads = _reference(func, wrt, args)
    single = not isinstance(wrt, tuple)
    grads, ref_grads = ((grads,), (ref_grads,)) if single else (grads, ref_grads)
    np.testing.assert_allclose(value, ref_value, rtol=rtol, atol=rtol)
    for g, r in zip(grads, ref_grads):
        assert np.shape(g) == np.shape(r)
        np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol)
    return f


def _mlp_args(dtype, n=6, hidden=8, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.3, (12, hidden)).astype(dtype), rng.normal(0, 0.1, hidden).astype(dtype),
            rng.normal(0, 0.3, (hidden, 5)).astype(dtype), rng.normal(0, 0.1, 5).astype(dtype),
            rng.random((n, 12)).astype(dtype), rng.integers(0, 5, n))


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_mlp_loss_matches_python_target(dtype, rtol):
    _check(mlp_loss, (0, 1, 2, 3), _mlp_args(dtype), rtol)


def test_mlp_loss_against_finite_differences():
    args = list(_mlp_args(np.float64, seed=3))
    f = srcgrad.grad(mlp_loss, wrt=(0, 2), target="cuda", arrays=True)
    dW1, dW2 = f(*args)
    rng = np.random.default_rng(1)
    for k, g in ((0, dW1), (2, dW2)):
        for _ in range(4):
            idx = tuple(rng.integers(0, s) for s in args[k].shape)
            plus, minus = [a.copy() for a in args], [a.copy() for a in args]
            plus[k][idx] += 1e-6
            minus[k][idx] -= 1e-6
            fd = (mlp_loss(*plus) - mlp_loss(*minus)) / 2e-6
            assert abs(g[idx] - fd) < 1e-6 * max(1.0, abs(fd))


@pytest.mark.parametrize("func,wrt,make", [
    (logistic, (0, 1), lambda r: (r.normal(size=7), 0.3, r.normal(size=(9, 7)), np.sign(r.normal(size=9)))),
    (outer_broadcast, (0, 1), lambda r: (r.normal(size=5), r.normal(size=4))),
    (column_stats, 0, lambda r: (r.normal(size=(6, 4)),)),
    (finite_difference, 0, lambda r: (r.normal(size=9),)),
    (transposes, (0, 1, 2), lambda r: (r.normal(size=(4, 3)), r.normal(size=4), r.normal(size=3))),
    (selects, (0, 1), lambda r: (r.normal(size=(3, 5)), r.normal(size=(3, 5)))),
    (scaled, (0, 1), lambda r: (r.normal(size=8), 1.7)),
])
def test_programs_match_python_target(func, wrt, make):
    _check(func, wrt, make(np.random.default_rng(0)), 1e-10)


def test_device_arrays_stay_on_device_and_buffers_are_reused():
    from numba import cuda
    args = _mlp_args(np.float32)
    dev = [cuda.to_device(a) for a in args]
    f = srcgrad.cuda.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3), arrays=True)
    value, grads = f(*dev)
    from srcgrad.cuda.device import is_device_array
    assert is_device_array(value) and all(is_device_array(g) for g in grads)
    first = [g.copy_to_host() for g in grads]
    _, grads2 = f(*dev)
    assert all(a is b for a, b in zip(grads, grads2))          # the plan's own buffers
    for g, r in zip(first, grads2):
        np.testing.assert_allclose(g, r.copy_to_host())
    ref_value, _ = _reference(mlp_loss, (0, 1, 2, 3), args)
    np.testing.assert_allclose(value.copy_to_host()[0], ref_value, rtol=2e-5)


def test_new_shapes_build_a_new_plan():
    f = srcgrad.cuda.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3), arrays=True)
    for n in (3, 7):
        args = _mlp_args(np.float64, n=n)
        value, _ = f(*args)
        assert np.isclose(value, mlp_loss(*args))
    assert len(f._specializations) == 2


def test_generated_kernels_are_fused_and_readable():
    f = srcgrad.cuda.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3), arrays=True)
    source = f.source_for(*_mlp_args(np.float32))
    assert "gemm _t2 = X @ W1 + b1" in source               # bias fused into the GEMM epilogue
    assert "gemm _adj_W1 = X.T @ _adj_t2" in source           # transposes by flag, no copies
    assert "# _t5 = np.exp(_t4)" in source                    # fused lines carry their statement
    launches = source.split("Launch order:")[1].split("Do not edit")[0].strip().splitlines()
    assert len(launches) <= 14, launches


def test_nan_in_nan_out():
    args = list(_mlp_args(np.float64))
    args[4][0, 0] = np.nan
    value, grads = srcgrad.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3), target="cuda", arrays=True)(*args)
    assert np.isnan(value) and np.isnan(grads[0]).any()


def test_label_out_of_range_is_an_index_error():
    args = list(_mlp_args(np.float64))
    args[5] = args[5].copy()
    args[5][2] = 99
    f = srcgrad.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3), target="cuda", arrays=True)
    with pytest.raises(IndexError, match="out of\\s+range"):
        f(*args)


@pytest.mark.parametrize("func,message", [
    (branchy, "np.where"),
    (unsupported, "cumsum"),
])
def test_unsupported_programs_raise_clear_errors(func, message):
    f = srcgrad.value_and_grad(func, wrt=0, target="cuda", arrays=True)
    with pytest.raises(srcgrad.SrcgradError, match=message):
        f(np.ones(4))


def test_wrong_arguments_are_type_errors():
    f = srcgrad.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3), target="cuda", arrays=True)
    with pytest.raises(TypeError):
        f(np.ones(3))
    with pytest.raises(TypeError, match="differentiate"):
        srcgrad.grad(mlp_loss, wrt=5, target="cuda", arrays=True)(*_mlp_args(np.float64))
    with pytest.raises(TypeError, match="expected numbers"):
        f(*_mlp_args(np.float64)[:4], np.array(["a"]), np.zeros(6, np.int64))
