"""Tests for srcgrad.optim: compiled update rules vs a plain NumPy reference."""

import numba
import numpy as np
import pytest

from srcgrad import optim
from srcgrad.optim import (
    SGD,
    Adam,
    Momentum,
    adam_update,
    make_optimizer,
    momentum_update,
    sgd_update,
)

SHAPES = [(5, 3), (3,), (3, 4), (4,)]  # (2-d, 1-d, 2-d, 1-d) like an MLP


def make(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(s).astype(dtype) for s in SHAPES)


# ---------------------------------------------------------------- NumPy references ----------


class RefSGD:
    def __init__(self, lr):
        self.lr = lr

    def step(self, ps, gs):
        for p, g in zip(ps, gs):
            p -= self.lr * g


class RefMomentum:
    def __init__(self, ps, lr, mu, nesterov):
        self.lr, self.mu, self.nesterov = lr, mu, nesterov
        self.v = [np.zeros_like(p) for p in ps]

    def step(self, ps, gs):
        for p, g, v in zip(ps, gs, self.v):
            v *= self.mu
            v += g
            if self.nesterov:
                p -= self.lr * (g + self.mu * v)
            else:
                p -= self.lr * v


class RefAdam:
    def __init__(self, ps, lr, b1, b2, eps):
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.m = [np.zeros_like(p) for p in ps]
        self.v = [np.zeros_like(p) for p in ps]
        self.t = 0

    def step(self, ps, gs):
        self.t += 1
        for p, g, m, v in zip(ps, gs, self.m, self.v):
            m[...] = self.b1 * m + (1 - self.b1) * g
            v[...] = self.b2 * v + (1 - self.b2) * g * g
            mhat = m / (1 - self.b1**self.t)
            vhat = v / (1 - self.b2**self.t)
            p -= self.lr * mhat / (np.sqrt(vhat) + self.eps)


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


def _run(opt, ref, dtype, steps=5):
    ps = make(dtype)
    rs = tuple(p.copy() for p in ps)
    for k in range(steps):
        gs = make(dtype, seed=100 + k)
        opt.step(ps, gs)
        ref.step(rs, gs)
        for p, r in zip(ps, rs):
            assert p.dtype == dtype
            np.testing.assert_allclose(p, r, **_tol(dtype))
    return ps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_matches_reference(dtype):
    _run(SGD(lr=0.1), RefSGD(0.1), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_matches_reference(dtype, nesterov):
    ps = make(dtype)
    _run(Momentum(ps, lr=0.05, momentum=0.9, nesterov=nesterov),
         RefMomentum(ps, 0.05, 0.9, nesterov), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_matches_reference(dtype):
    ps = make(dtype)
    opt = Adam(ps, lr=0.01, b1=0.8, b2=0.99, eps=1e-7)
    _run(opt, RefAdam(ps, 0.01, 0.8, 0.99, 1e-7), dtype)
    assert opt.t == 5


def test_functional_forms_match_classes():
    ps = make(np.float64)
    gs = make(np.float64, seed=7)
    a = tuple(p.copy() for p in ps)
    sgd_update(a, gs, 0.3)
    b = tuple(p.copy() for p in ps)
    SGD(lr=0.3).step(b, gs)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)

    a = tuple(p.copy() for p in ps)
    vel = tuple(np.zeros_like(p) for p in ps)
    momentum_update(a, gs, vel, 0.1, 0.9)
    momentum_update(a, gs, vel, 0.1, 0.9, True)
    ref = RefMomentum(ps, 0.1, 0.9, False)
    r = tuple(p.copy() for p in ps)
    ref.step(r, gs)
    ref.nesterov = True
    ref.step(r, gs)
    for x, y in zip(a, r):
        np.testing.assert_allclose(x, y, rtol=1e-12)

    a = tuple(p.copy() for p in ps)
    m = tuple(np.zeros_like(p) for p in ps)
    v = tuple(np.zeros_like(p) for p in ps)
    adam_update(a, gs, m, v, 1, 0.01, 0.9, 0.999, 1e-8)
    adam_update(a, gs, m, v, 2, 0.01, 0.9, 0.999, 1e-8)
    ref = RefAdam(ps, 0.01, 0.9, 0.999, 1e-8)
    r = tuple(p.copy() for p in ps)
    ref.step(r, gs)
    ref.step(r, gs)
    for x, y in zip(a, r):
        np.testing.assert_allclose(x, y, rtol=1e-12)


def test_callable_inside_user_njit_loop():
    """The update rules compile inside user @njit code for a (2-d, 1-d, 2-d, 1-d) tuple."""

    @numba.njit
    def train(W1, b1, W2, b2, steps, kind):
        params = (W1, b1, W2, b2)
        vel = (np.zeros_like(W1), np.zeros_like(b1), np.zeros_like(W2), np.zeros_like(b2))
        m = (np.zeros_like(W1), np.zeros_like(b1), np.zeros_like(W2), np.zeros_like(b2))
        v = (np.zeros_like(W1), np.zeros_like(b1), np.zeros_like(W2), np.zeros_like(b2))
        for t in range(1, steps + 1):
            grads = (2.0 * W1, 2.0 * b1, 2.0 * W2, 2.0 * b2)  # d/dp of sum(p**2)
            if kind == 0:
                sgd_update(params, grads, 0.1)
            elif kind == 1:
                momentum_update(params, grads, vel, 0.05, 0.9, False)
            else:
                adam_update(params, grads, m, v, t, 0.05, 0.9, 0.999, 1e-8)

    for kind in range(3):
        ps = make(np.float64)
        train(*ps, 300, kind)
        for p in ps:
            assert np.abs(p).max() < 1e-3, (kind, np.abs(p).max())


def test_uniform_kernel_inside_njit():
    @numba.njit
    def loop(params, kernel, state, hyper, steps):
        for _ in range(steps):
            grads = (params[0] - 1.0, params[1] - 1.0)
            kernel(params, grads, state, hyper)

    for kind, hyper in [("sgd", dict(lr=0.5)), ("momentum", dict(lr=0.1, momentum=0.8)),
                        ("adam", dict(lr=0.05))]:
        ps = (np.zeros((2, 3), np.float32), np.zeros(3, np.float32))
        opt = make_optimizer(kind, ps, **hyper)
        loop(ps, opt.kernel, opt.state_tuple(), opt.hyper_tuple(), 400)
        for p in ps:
            np.testing.assert_allclose(p, 1.0, atol=1e-2)
        if kind == "adam":
            assert opt.t == 400


@pytest.mark.parametrize("kind", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quadratic_converges(kind, dtype):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((6, 6))
    H = (A @ A.T / 6 + np.eye(6)).astype(dtype)  # SPD, eigenvalues in [1, ~5]
    target = rng.standard_normal(6).astype(dtype)
    x = np.zeros(6, dtype)
    hyper = {"sgd": dict(lr=0.1), "momentum": dict(lr=0.05, momentum=0.9),
             "adam": dict(lr=0.05)}[kind]
    opt = make_optimizer(kind, (x,), **hyper)
    for _ in range(1500):
        g = H @ (x - target)
        opt.step((x,), (g,))
    np.testing.assert_allclose(x, target, atol=1e-3 if dtype == np.float32 else 1e-5)


def test_state_dict_roundtrip_continues_identically():
    for kind, hyper in [("sgd", dict(lr=0.1)), ("momentum", dict(lr=0.05, nesterov=True)),
                        ("adam", dict(lr=0.01))]:
        ps = make(np.float32)
        opt = make_optimizer(kind, ps, **hyper)
        for k in range(3):
            opt.step(ps, make(np.float32, seed=k))
        sd = opt.state_dict()
        # through npz, as a checkpoint would
        import io

        buf = io.BytesIO()
        np.savez(buf, **sd)
        buf.seek(0)
        loaded = dict(np.load(buf))
        ps2 = tuple(p.copy() for p in ps)
        opt2 = make_optimizer(kind, ps2, lr=123.0)
        opt2.load_state_dict(loaded)
        assert opt2.lr == opt.lr
        for k in range(3, 6):
            g = make(np.float32, seed=k)
            opt.step(ps, g)
            opt2.step(ps2, g)
        for a, b in zip(ps, ps2):
            np.testing.assert_array_equal(a, b)
        # state arrays are copies, not shared
        if kind != "sgd":
            assert all(x is not y for x, y in zip(opt.state_tuple()[0], opt2.state_tuple()[0]))


def test_load_state_dict_into_fresh_optimizer_without_params():
    ps = make(np.float64)
    opt = Adam(ps, lr=0.01)
    opt.step(ps, make(np.float64, 1))
    fresh = Adam()
    fresh.load_state_dict(opt.state_dict())
    assert fresh.t == 1
    ps2 = tuple(p.copy() for p in ps)
    g = make(np.float64, 2)
    opt.step(ps, g)
    fresh.step(ps2, g)
    for a, b in zip(ps, ps2):
        np.testing.assert_array_equal(a, b)


def test_errors():
    ps = make(np.float64)
    with pytest.raises(ValueError, match="not 'adam'"):
        Adam().load_state_dict(SGD(lr=1.0).state_dict())
    with pytest.raises(ValueError, match="2 gradients"):
        SGD(lr=0.1).step(ps, ps[:2])
    with pytest.raises(ValueError, match="shape"):
        SGD(lr=0.1).step(ps[:1], (np.zeros((2, 2)),))
    with pytest.raises(TypeError, match="float32 or float64"):
        SGD(lr=0.1).step((np.zeros(3, np.int64),), (np.zeros(3, np.int64),))
    opt = Momentum(ps, lr=0.1)
    with pytest.raises(ValueError, match="do not match"):
        opt.step(ps[:2], ps[:2])
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("rmsprop")
    with pytest.raises(numba.core.errors.TypingError, match="different lengths"):
        sgd_update(ps, ps[:3], 0.1)
    with pytest.raises(ValueError, match="shape"):
        sgd_update((np.zeros(3),), (np.zeros(4),), 0.1)


def test_fortran_and_noncontiguous_grads():
    p = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    g = np.arange(24.0).reshape(3, 8)[:, ::2]  # non-contiguous gradient
    expect = p - 0.5 * g
    sgd_update((p,), (g,), 0.5)
    np.testing.assert_array_equal(p, expect)
    c = np.arange(12.0).reshape(3, 4)
    gf = np.asfortranarray(np.ones((3, 4)) * np.arange(4.0))
    expect = c - gf
    sgd_update((c,), (gf,), 1.0)
    np.testing.assert_array_equal(c, expect)


def test_no_python_loop_per_parameter():
    # the class step is a single compiled call: the kernel is a numba dispatcher
    assert isinstance(optim.momentum_kernel, numba.core.registry.CPUDispatcher)


# ------------------------------------------------------------------------------------------------
# MinibatchLoop: the compiled training loop
# ------------------------------------------------------------------------------------------------


def softmax_regression_loss(W, b, X, y):
    z = X @ W + b
    m = np.max(z, axis=1, keepdims=True)
    lse = np.log(np.sum(np.exp(z - m), axis=1)) + m[:, 0]
    return np.mean(lse - z[np.arange(X.shape[0]), y])


def _regression_problem(dtype, n=23, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, k, n)
    params = (rng.standard_normal((d, k)).astype(dtype) * 0.3, np.zeros(k, dtype))
    return X, y, params, rng.permutation(n)


@pytest.mark.parametrize("optimizer, dtype", [
    ("sgd", np.float64), ("momentum", np.float64), ("adam", np.float64), ("momentum", np.float32),
    # float32 with the other optimizers: the same loop compiled again (each optimizer's float32
    # kernel is checked by test_*_matches_reference); opt in with -m slow
    pytest.param("sgd", np.float32, marks=pytest.mark.slow),
    pytest.param("adam", np.float32, marks=pytest.mark.slow)])
def test_minibatch_loop_matches_a_python_loop(optimizer, dtype):
    """The compiled loop = gather batch, value_and_grad, optimizer step, for every batch (the last
    one shorter: 23 samples in batches of 5), in that order."""
    import srcgrad

    X, y, params, order = _regression_problem(dtype)
    loss_and_grads = srcgrad.value_and_grad(softmax_regression_loss, wrt=(0, 1))
    reference = tuple(p.copy() for p in params)
    ref_opt = optim.make_optimizer(optimizer, reference, lr=0.1)
    ref_total = 0.0
    for start in range(0, len(order), 5):
        idx = order[start:start + 5]
        loss, grads = loss_and_grads(*reference, X[idx], y[idx])
        ref_opt.step(reference, grads)
        ref_total += loss * len(idx)

    trained = tuple(p.copy() for p in params)
    loop = optim.MinibatchLoop(loss_and_grads, optim.make_optimizer(optimizer, trained, lr=0.1))
    total = loop(trained, X, y, order, 5, 0, 2)         # batches 0, 1; then the rest
    total += loop(trained, X, y, order, 5, first=2)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(total, ref_total, rtol=tol)
    for got, want in zip(trained, reference):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_minibatch_loop_rejects_bad_arguments():
    import srcgrad

    X, y, params, order = _regression_problem(np.float64)
    opt = optim.SGD(params, lr=0.1)
    with pytest.raises(TypeError, match="value_and_grad"):
        optim.MinibatchLoop(srcgrad.grad(softmax_regression_loss, wrt=(0, 1)), opt)
    with pytest.raises(TypeError, match="optimizer"):
        optim.MinibatchLoop(srcgrad.value_and_grad(softmax_regression_loss, wrt=(0, 1)), "sgd")
    loop = optim.MinibatchLoop(srcgrad.value_and_grad(softmax_regression_loss, wrt=(0, 1)), opt)
    bad_order = order.copy()
    bad_order[3] = len(X)
    with pytest.raises(ValueError, match="outside"):
        loop(params, X, y, bad_order, 5)
    with pytest.raises(ValueError, match="batch_size"):
        loop(params, X, y, order, 0)
    with pytest.raises(ValueError, match="samples"):
        loop(params, X, y[:-1], order, 5)
    only_W = optim.MinibatchLoop(srcgrad.value_and_grad(softmax_regression_loss, wrt=0), opt)
    with pytest.raises(TypeError):
        only_W(params, X, y, order, 5)


def stretched_rows_loss(W, b, X, y):
    # W has 3 rows: a batch of 3 samples meets it row for row; the last batch of 1 sample is
    # stretched along W's rows by NumPy broadcasting (X: (1, d) against W: (3, d))
    r = X * W + b
    return np.sum(r * r) + np.sum(y * y)


def test_minibatch_loop_lean_adjoint_falls_back_on_a_short_batch():
    """The loop runs the adjoint compiled without the fused loops' fallback branches; when a
    batch's sizes fail a fused loop's guard (here the last batch, of one sample, broadcast against
    W's three rows), that batch and the rest run with the full adjoint: same parameters and total
    as a Python loop over the same batches."""
    import srcgrad

    rng = np.random.default_rng(3)
    X = rng.normal(size=(7, 4))
    y = rng.normal(size=7)
    params = (rng.normal(size=(3, 4)), rng.normal(size=4))
    order = rng.permutation(7).astype(np.int64)
    loss_and_grads = srcgrad.value_and_grad(stretched_rows_loss, wrt=(0, 1))
    reference = tuple(p.copy() for p in params)
    ref_opt = optim.SGD(reference, lr=0.01)
    ref_total = 0.0
    for start in range(0, 7, 3):                 # batches of 3, 3, 1
        idx = order[start:start + 3]
        loss, grads = loss_and_grads(*reference, X[idx], y[idx])
        ref_opt.step(reference, grads)
        ref_total += loss * len(idx)

    trained = tuple(p.copy() for p in params)
    loop = optim.MinibatchLoop(loss_and_grads, optim.SGD(trained, lr=0.01))
    total = loop(trained, X, y, order, 3)
    np.testing.assert_allclose(total, ref_total, rtol=1e-12)
    for got, want in zip(trained, reference):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert loop._not_lean              # the short batch did switch to the full adjoint
