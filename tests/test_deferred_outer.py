"""Deferred outer products (srcgrad/deferred_outer.py).

A weight adjoint that a reverse time loop only adds outer products into (the LSTM written with
loops: ``_adj_W[3 * H + j, D + k] += _adj_zg * h[k]``) gets the per-step factors stored and one
matrix product after the loop. The sum runs in another order, so gradients are compared with the
switch off to 1e-12 (float64) and with central finite differences, python and cpu, NaN in, NaN out;
and the rewrite is checked absent where it must not apply: the adjoint read inside the loop, an
accumulation under a condition, a factor that changes along the inner loop, a vector the outer
loop writes. A partial index range is a block of the adjoint: deferred, and checked.
"""
import math
import re

import numpy as np
import pytest

import srcgrad
from srcgrad import deferred_outer
from conftest import check_grad

NOTE = "deferred outer products:"


def lstm(W, b, wout, xs, ys):
    T = xs.shape[0]
    D = xs.shape[1]
    H = wout.shape[0]
    h = np.zeros(H)
    c = np.zeros(H)
    hn = np.zeros(H)
    loss = 0.0
    for t in range(T):
        for j in range(H):
            zi = b[j]
            zf = b[H + j]
            zo = b[2 * H + j]
            zg = b[3 * H + j]
            for k in range(D):
                zi += W[j, k] * xs[t, k]
                zf += W[H + j, k] * xs[t, k]
                zo += W[2 * H + j, k] * xs[t, k]
                zg += W[3 * H + j, k] * xs[t, k]
            for k in range(H):
                zi += W[j, D + k] * h[k]
                zf += W[H + j, D + k] * h[k]
                zo += W[2 * H + j, D + k] * h[k]
                zg += W[3 * H + j, D + k] * h[k]
            ig = 1.0 / (1.0 + math.exp(-zi))
            fg = 1.0 / (1.0 + math.exp(-zf))
            og = 1.0 / (1.0 + math.exp(-zo))
            gg = math.tanh(zg)
            c[j] = fg * c[j] + ig * gg
            hn[j] = og * math.tanh(c[j])
        pred = 0.0
        for j in range(H):
            h[j] = hn[j]
            pred += wout[j] * h[j]
        r = pred - ys[t]
        loss += r * r
    return loss


def _lstm_args(T=5, D=3, H=4, seed=0):
    rng = np.random.default_rng(seed)
    return (0.5 * rng.standard_normal((4 * H, D + H)), 0.1 * rng.standard_normal(4 * H),
            rng.standard_normal(H), rng.standard_normal((T, D)), rng.standard_normal(T))


def rnn(W, x):
    """A plain tanh recurrence, h_t = tanh(W[:, :D] x_t + W[:, D + 1:] h_{t-1}): a partial
    column range (column D is unused) in the second product."""
    T = x.shape[0]
    D = x.shape[1]
    H = W.shape[0]
    h = np.zeros(H)
    hn = np.zeros(H)
    s = 0.0
    for t in range(T):
        for j in range(H):
            z = 0.0
            for k in range(D):
                z += W[j, k] * x[t, k]
            for k in range(H):
                z += W[j, D + 1 + k] * h[k]
            hn[j] = math.tanh(z)
        for j in range(H):
            h[j] = hn[j]
            s += h[j] * h[j]
    return s


def _rnn_args(T=4, D=3, H=3, seed=1):
    rng = np.random.default_rng(seed)
    return (0.6 * rng.standard_normal((H, D + 1 + H)), rng.standard_normal((T, D)))


def weights_updated(W, x):
    """The weights change inside the loop: the adjoint of A is read in the reverse loop."""
    T = x.shape[0]
    D = x.shape[1]
    H = W.shape[0]
    A = W.copy()
    s = 0.0
    for t in range(T):
        for j in range(H):
            z = 0.0
            for k in range(D):
                z += A[j, k] * x[t, k]
            for k in range(D):
                A[j, k] = A[j, k] + 0.1 * z * x[t, k]
            s += math.tanh(z)
    return s


def conditional(W, x):
    """An accumulation under a condition: not one contribution per (j, k)."""
    T = x.shape[0]
    D = x.shape[1]
    H = W.shape[0]
    s = 0.0
    for t in range(T):
        for j in range(H):
            z = 0.0
            for k in range(D):
                if x[t, k] > 0.0:
                    z += W[j, k] * x[t, k]
            s += math.tanh(z)
    return s


def carried(W, x):
    """The inner sum is damped each step: the adjoint factor changes along k."""
    T = x.shape[0]
    D = x.shape[1]
    H = W.shape[0]
    s = 0.0
    for t in range(T):
        for j in range(H):
            z = 0.0
            for k in range(D):
                z = 0.9 * z + W[j, k] * x[t, k]
            s += math.tanh(z)
    return s


def in_place(W, x):
    """The vector is updated row by row inside the j loop (Gauss-Seidel): it differs per j."""
    T = x.shape[0]
    H = W.shape[0]
    h = np.zeros(H)
    s = 0.0
    for t in range(T):
        for j in range(H):
            z = x[t, j]
            for k in range(H):
                z += W[j, k] * h[k]
            h[j] = math.tanh(z)
        for j in range(H):
            s += h[j] * h[j]
    return s


def _small_args(seed=2, T=4, H=3):
    rng = np.random.default_rng(seed)
    return (0.5 * rng.standard_normal((H, H)), rng.standard_normal((T, H)))


def _run(f, args, wrt, target, on, monkeypatch, tmp_path):
    monkeypatch.setattr(deferred_outer, "DEFERRED_OUTER", on)
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / f"{target}{on}"))   # not in the key
    g = srcgrad.value_and_grad(f, wrt=wrt, target=target)
    return g(*args), g.source_for(*args), g


def _close(a, b, rtol=1e-12):
    np.testing.assert_allclose(a[0], b[0], rtol=rtol, atol=0)
    for x, y in zip(a[1], b[1]):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-300 + rtol * np.max(np.abs(y)))


@pytest.mark.parametrize("args", [_lstm_args(), _lstm_args(T=1, D=1, H=1, seed=3),
                                  _lstm_args(T=0)])
def test_lstm_python(args, monkeypatch, tmp_path):
    off, source_off, _ = _run(lstm, args, (0, 1, 2), "python", False, monkeypatch, tmp_path)
    on, source, _ = _run(lstm, args, (0, 1, 2), "python", True, monkeypatch, tmp_path)
    assert NOTE not in source_off and NOTE in source
    added = re.findall(r"_adj_W\[[^\]]*\]\s*\+=\s*(\w+)", source)
    assert added and all(a.startswith("_dfo_p") for a in added)      # none left step by step
    _close(on, off)
    if args[3].shape[0] > 0:
        check_grad(lstm, args, wrt=(0, 1, 2), target="python")


def test_lstm_cpu(monkeypatch, tmp_path):
    args = _lstm_args(T=7, D=3, H=5)
    off, _, _ = _run(lstm, args, (0, 1, 2), "cpu", False, monkeypatch, tmp_path)
    on, source, g = _run(lstm, args, (0, 1, 2), "cpu", True, monkeypatch, tmp_path)
    assert NOTE in source and "matmul(_dfo_s1[:_dfo_r1].T, _dfo_v1[:_dfo_r1])" in source
    _close(on, off)
    check_grad(lstm, args, wrt=(0, 1, 2), target="cpu", gradfn=lambda *a: g(*a)[1])
    xs = args[3].copy()
    xs[2, 1] = np.nan                                 # NaN in, NaN out
    value, (gW, gb, gwout) = g(args[0], args[1], args[2], xs, args[4])
    assert np.isnan(value) and np.isnan(gW).any() and np.isnan(gb).any()
    W = args[0].copy()
    W[0, 0] = np.inf                                  # inf times zero state: NaN, as step by step
    on_inf = g(W, *args[1:])
    monkeypatch.setattr(deferred_outer, "DEFERRED_OUTER", False)
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / "cpuFalse"))
    off_inf = srcgrad.value_and_grad(lstm, wrt=(0, 1, 2), target="cpu")(W, *args[1:])
    for a, b in zip(on_inf[1], off_inf[1]):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))


def test_lstm_float32_python(monkeypatch, tmp_path):
    """float32: the adjoint reset is `np.float32(0.0)` then `+=` (the same value given back)."""
    args = tuple(a.astype(np.float32) for a in _lstm_args(T=6))
    off, _, _ = _run(lstm, args, (0, 1, 2), "python", False, monkeypatch, tmp_path)
    on, source, _ = _run(lstm, args, (0, 1, 2), "python", True, monkeypatch, tmp_path)
    assert NOTE in source and on[1][0].dtype == np.float32
    _close(on, off, rtol=1e-5)


def test_lstm_buffer_refilled_python(monkeypatch, tmp_path):
    """A loop longer than the buffers: their products are added every ROWS steps."""
    monkeypatch.setattr(deferred_outer, "ROWS", 2)
    args = _lstm_args(T=5)
    off, _, _ = _run(lstm, args, (0, 1, 2), "python", False, monkeypatch, tmp_path)
    on, source, _ = _run(lstm, args, (0, 1, 2), "python", True, monkeypatch, tmp_path)
    assert "every 2 steps" in source and "_dfo_left1 = max(T, 0)" in source and "min(_dfo_left1, 2)" in source
    _close(on, off)


def test_partial_range_python(monkeypatch, tmp_path):
    args = _rnn_args()
    off, _, _ = _run(rnn, args, 0, "python", False, monkeypatch, tmp_path)
    on, source, _ = _run(rnn, args, 0, "python", True, monkeypatch, tmp_path)
    assert NOTE in source and "D + 1 + _dfo_" in source
    _close(on, off)
    assert np.all(on[1][:, 3] == 0.0)                # the column no product reaches
    check_grad(rnn, args, wrt=0, target="python")


def rnn_vectors(W, U, xs):
    """The recurrence written with products: ``W @ x`` (matmul_grad_left) and ``h @ U``
    (matmul_grad_right) in each step."""
    T = xs.shape[0]
    h = np.zeros(U.shape[0])
    s = 0.0
    for t in range(T):
        h = np.tanh(W @ xs[t] + h @ U)
        s += np.sum(h * h)
    return s


def _vector_args(T=5, D=3, H=4, seed=4):
    rng = np.random.default_rng(seed)
    return (0.5 * rng.standard_normal((H, D)), 0.5 * rng.standard_normal((H, H)),
            rng.standard_normal((T, D)))


def _adds(source, name, value):
    """Whether ``source`` adds ``value...`` into the array ``name``: ``name += value...`` as written,
    or the cpu lowering's ``update_array(name, '+', value...)``."""
    return f"{name} += {value}" in source or f"update_array({name}, '+', {value}" in source


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_vector_products(target, monkeypatch, tmp_path):
    args = _vector_args()
    off, _, _ = _run(rnn_vectors, args, (0, 1), target, False, monkeypatch, tmp_path)
    on, source, g = _run(rnn_vectors, args, (0, 1), target, True, monkeypatch, tmp_path)
    assert NOTE in source and _adds(source, "_adj_W", "matmul(_dfo_") and _adds(source, "_adj_U", "matmul(_dfo_")
    assert not _adds(source, "_adj_W", "matmul_grad_left") and not _adds(source, "_adj_U", "matmul_grad_right")
    _close(on, off)
    check_grad(rnn_vectors, args, wrt=(0, 1), target=target,
               gradfn=lambda *a: g(*a)[1])
    xs = args[2].copy()
    xs[1, 0] = np.nan                                 # NaN in, NaN out
    assert np.isnan(g(args[0], args[1], xs)[1][0]).any()


def weights_read(W, xs):
    """The weights' adjoint is read in the loop (W is overwritten each step)."""
    T = xs.shape[0]
    A = W.copy()
    h = np.zeros(W.shape[0])
    s = 0.0
    for t in range(T):
        h = np.tanh(A @ xs[t])
        A = A * 0.9
        s += np.sum(h * h)
    return s


@pytest.mark.parametrize("f", [weights_updated, conditional, carried, in_place, weights_read])
def test_not_applied(f, monkeypatch, tmp_path):
    args = _small_args() if f is not weights_read else _vector_args()[::2]
    on, source, _ = _run(f, args, 0, "python", True, monkeypatch, tmp_path)
    assert NOTE not in source
    check_grad(f, args, wrt=0, target="python")
