"""Momentum fused into the generated adjoint (``srcgrad.training.fused_sgd``, ``rule="momentum"``):
MinibatchLoop with the Momentum optimizer runs one compiled step per batch whose weight velocities
are the weight-gradient GEMMs' outputs (``v = A.T @ G + mu * v``, then ``p -= lr * v``). It must
train what the unfused loop (gradient, then the optimizer's kernel) trains, to rounding, and
match a float64 NumPy reference of the same steps; Nesterov keeps the plain update."""
import numpy as np
import pytest

import srcgrad
from srcgrad.training import fused_sgd, optim
from srcgrad.training.mlp import init_params, mlp_loss


def _mlp_problem(dtype, n=45, n_in=12, hidden=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in)).astype(dtype)
    y = rng.integers(0, 10, n)
    params = tuple(p.astype(dtype) for p in init_params(hidden, seed=1, n_in=n_in))
    return X, y, params, rng.permutation(n).astype(np.int64)


def mlp_momentum_reference(params, X, y, order, B, lr, mu, nesterov):
    """float64 NumPy Momentum (PyTorch's convention) on the MLP of srcgrad.training.mlp."""
    W1, b1, W2, b2 = [np.asarray(p, np.float64).copy() for p in params]
    ps = [W1, b1, W2, b2]
    vs = [np.zeros_like(p) for p in ps]
    for s in range(0, len(order), B):
        idx = order[s:s + B]
        xb, yb, n = X[idx].astype(np.float64), y[idx], len(idx)
        a = xb @ W1 + b1
        h = np.maximum(a, 0.0)
        z = h @ W2 + b2
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        p[np.arange(n), yb] -= 1.0
        p /= n
        dh = (p @ W2.T) * (a > 0)
        grads = [xb.T @ dh, dh.sum(0), h.T @ p, p.sum(0)]
        for q, v, g in zip(ps, vs, grads):
            v *= mu
            v += g
            q -= lr * (g + mu * v) if nesterov else lr * v
    return ps, vs


def _train(params, X, y, order, B, fused, nesterov, monkeypatch):
    monkeypatch.setenv("SRCGRAD_FUSED_SGD", "1" if fused else "0")
    trained = tuple(p.copy() for p in params)
    loop = optim.MinibatchLoop(srcgrad.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)),
                               optim.Momentum(lr=0.1, momentum=0.9, nesterov=nesterov),
                               blas_threads=1)
    total = loop(trained, X, y, order, B, 0, 2)         # batches 0, 1; then the rest
    total += loop(trained, X, y, order, B, first=2)
    return trained, loop.optimizer.state_tuple()[0], total, loop.fused


@pytest.mark.parametrize("nesterov", [False, True])
def test_fused_momentum_matches_unfused_and_the_float64_reference(nesterov, monkeypatch):
    tol = 2e-5
    X, y, params, order = _mlp_problem(np.float32)
    fused, fused_v, fused_total, names = _train(params, X, y, order, 10, True, nesterov,
                                                monkeypatch)
    plain, plain_v, plain_total, none = _train(params, X, y, order, 10, False, nesterov,
                                               monkeypatch)
    # the step is the fused one (Nesterov: the same step, its updates computed from the gradient)
    assert names == ("W1", "W2") and none == ()
    np.testing.assert_allclose(fused_total, plain_total, rtol=tol)
    ref_p, ref_v = mlp_momentum_reference(params, X, y, order, 10, 0.1, 0.9, nesterov)
    for f, p, r in zip(fused + fused_v, plain + plain_v, ref_p + ref_v):
        assert f.dtype == np.float32
        scale = np.max(np.abs(r))
        assert np.max(np.abs(f - p)) <= tol * scale
        assert np.max(np.abs(f - r)) <= 2 * tol * scale


def test_momentum_step_source():
    X, y, params, _ = _mlp_problem(np.float32)
    spec = srcgrad.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)).specialize(*params, X[:5], y[:5])
    text, fused = fused_sgd.sgd_step_source(spec.source, "mlp_loss_adjoint", 4, "momentum")
    assert fused == ["W1", "W2"]
    assert ("def mlp_loss_adjoint_momentum_step(W1, b1, W2, b2, X, y, _seed, _lr, _mu, "
            "_nesterov, _velocity):") in text
    # no pending marker: the product is made by the update at the end
    assert "sgd_pending" not in text
    assert not any(line.strip().startswith(("_adj_W1 =", "_adj_W2 =")) for line in text.splitlines())
    tail = text[text.index("# _adj_W1 = matmul_grad_right(_adj_t1, X, W1): made by"):]
    assert "for " not in tail and "if " not in tail                  # every update at the end
    assert ("momentum_apply_right(None, _adj_t1, X, W1, _velocity[0], _lr, _mu, _nesterov, "
            "_seed)" in tail)   # the seed at the end scales the product (GEMM alpha)
    assert "momentum_apply(b1, _adj_b1, _velocity[1], _lr, _mu, _nesterov, _seed)" in tail
    with pytest.raises(ValueError, match="rule must be"):
        fused_sgd.sgd_step_source(spec.source, "mlp_loss_adjoint", 4, "adam")


def test_momentum_helpers_match_numpy():
    import numba
    rng = np.random.default_rng(0)
    G = rng.standard_normal((5, 3))
    A = rng.standard_normal((5, 4))
    B = rng.standard_normal((2, 3))

    @numba.njit
    def right(G, A, P, V, nesterov, scale=1.0):
        n = fused_sgd.sgd_pending_right(G, A, P)
        fused_sgd.momentum_apply_right(n, G, A, P, V, 0.1, 0.9, nesterov, scale)
        return n.size == 0

    @numba.njit
    def left(G, Q, B, V, nesterov, scale=1.0):
        n = fused_sgd.sgd_pending_left(G, Q, B)
        fused_sgd.momentum_apply_left(n, G, Q, B, V, 0.1, 0.9, nesterov, scale)
        return n.size == 0

    # scale: the seed of a gradient returned by the seed at the end (transform.SEED_AT_END)
    for nesterov, scale in ((0.0, 1.0), (1.0, 1.0), (0.0, -0.5), (1.0, 2.0)):
        for fn, grad, shape, ops in ((right, scale * (A.T @ G), (4, 3), (G, A)),
                                     (left, scale * (G @ B.T), (5, 2), (G, B))):
            P, V = rng.standard_normal(shape), rng.standard_normal(shape)
            v = 0.9 * V + grad
            want_p = P - 0.1 * ((grad + 0.9 * v) if nesterov else v)
            if fn is right:
                assert fn(ops[0], ops[1], P, V, nesterov, scale)
            else:
                assert fn(ops[0], P, ops[1], V, nesterov, scale)
            np.testing.assert_allclose(V, v, rtol=1e-13)
            np.testing.assert_allclose(P, want_p, rtol=1e-13)
    # an operand sharing the parameter's memory: not pending, the plain update with the gradient
    S, V = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    v = 0.9 * V + S.T @ S
    want = S - 0.1 * v
    assert not right(S, S, S, V, 0.0)
    np.testing.assert_allclose(V, v, rtol=1e-13)
    np.testing.assert_allclose(S, want, rtol=1e-13)


def test_momentum_update_flat_and_strided_paths_match_numpy():
    """momentum_apply goes through the flat kernel (one compile per dtype) for C-contiguous
    arrays and keeps the per-ndim update for the others (a Fortran-ordered parameter, a strided
    gradient): both give NumPy's momentum step, with the seed's scale; NaN in, NaN out."""
    import numba

    @numba.njit
    def step(p, g, v, scale):
        fused_sgd.momentum_apply(p, g, v, 0.1, 0.9, 0.0, scale)

    rng = np.random.default_rng(3)
    for order, stride in (("C", 1), ("F", 1), ("C", 2)):
        P = np.asarray(rng.standard_normal((4, 3)), order=order)
        G = rng.standard_normal((4, 3 * stride))[:, ::stride]
        V = np.asarray(rng.standard_normal((4, 3)), order=order)
        v = 0.9 * V + (-0.5) * G
        want = P - 0.1 * v
        step(P, G, V, -0.5)
        np.testing.assert_allclose(V, v, rtol=1e-13)
        np.testing.assert_allclose(P, want, rtol=1e-13)
    P, G, V = np.ones(3), np.array([1.0, np.nan, 2.0]), np.zeros(3)
    step(P, G, V, 1.0)
    assert np.isnan(P[1]) and np.isnan(V[1]) and np.isfinite(P[[0, 2]]).all()
    with pytest.raises(ValueError, match="shape"):
        step(np.ones(3), np.ones(4), np.zeros(3), 1.0)
