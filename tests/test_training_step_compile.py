"""The fused training step's cold-compile cuts (issue 17): ``np.zeros(shape, dtype)`` and
``np.empty(shape, dtype)`` written into the step as ``step_zeros`` / ``step_empty`` (the cpu
backend's allocation intrinsics, no compiled function of their own), ``np.mean(x)`` as
``step_mean`` (a flat sum loop), and the step compiled without a CPython wrapper (only
the compiled batch loops call it)."""
import ast

import numba
import numpy as np
import pytest

import srcgrad
from srcgrad.training import fused_sgd
from srcgrad.training.flat_kernels import step_mean
from srcgrad.training.mlp import init_params, mlp_loss


def test_zeros_and_mean_calls_are_rewritten_by_name_only():
    source = ("def f_adjoint(W, X, _seed):\n"
              "    a = np.zeros(W.shape, W.dtype.type)  # np.zeros(W.shape) in a comment\n"
              "    b = np.zeros((3,), X.dtype.type) + np.zeros((3,), X.dtype.type)\n"
              "    c = np.zeros(3)\n"
              "    d = np.zeros((3,), dtype=np.float64)\n"
              "    e = np.zeros(*W.shape)\n"
              "    h = np.empty((W.shape[0], 2), np.float32) + np.empty(3)\n"
              "    f = np.mean(W) + np.mean(X * 2.0)  # np.mean(W)\n"
              "    g = np.mean(W, axis=0) + np.mean(W, 0)\n"
              "    return a, (b,)\n")
    fn = ast.parse(source).body[0]
    lines = source.splitlines()
    fused_sgd._inline_calls(fn, lines)
    assert lines[1] == ("    a = step_zeros(W.shape, W.dtype.type)  # np.zeros(W.shape) in a "
                        "comment")
    assert lines[2] == "    b = step_zeros((3,), X.dtype.type) + step_zeros((3,), X.dtype.type)"
    assert lines[3:6] == source.splitlines()[3:6]          # other forms stay NumPy's
    assert lines[6] == "    h = step_empty((W.shape[0], 2), np.float32) + np.empty(3)"
    assert lines[7] == "    f = step_mean(W) + step_mean(X * 2.0)  # np.mean(W)"
    assert lines[8] == source.splitlines()[8]


@numba.njit
def _mean_of(a):
    return step_mean(a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (7,), (1000,), (64, 10), (3, 0)])
def test_step_mean_is_numbas_np_mean_bit_for_bit(shape, dtype):
    """The flat loop sums as Numba's np.mean does (in order, in the array's precision): the
    same bits, NaN for no elements and for a NaN among them; other layouts and dtypes are
    Numba's np.mean itself."""
    numba_mean = numba.njit(lambda a: np.mean(a))
    a = np.random.default_rng(3).standard_normal(shape).astype(dtype) * 1e3
    got, want = _mean_of(a), numba_mean(a)
    assert type(got) is type(want) and (got == want or (np.isnan(got) and np.isnan(want)))
    if a.size:
        assert got == pytest.approx(np.mean(a, dtype=np.float64), rel=1e-5)
        assert a.ndim == 1 or _mean_of(a.T) == numba_mean(a.T)       # F: np.mean's
        a.flat[a.size // 2] = np.nan
        assert np.isnan(_mean_of(a))
    assert _mean_of(np.arange(6)) == 2.5                              # ints: np.mean's


@pytest.mark.parametrize("shape, dtype", [((4,), np.float32), ((3, 5), np.float64),
                                          ((2, 0), np.float32), ((2, 3), np.bool_),
                                          ((0,), np.int64)])
def test_step_zeros_is_np_zeros(shape, dtype):
    @numba.njit
    def make(like):
        return fused_sgd.step_zeros(like.shape, like.dtype.type)

    got = make(np.ones(shape, dtype))
    want = np.zeros(shape, dtype)
    assert got.dtype == want.dtype and got.shape == want.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
    assert not np.signbit(got.astype(np.float64)).any()      # +0.0, as np.zeros


def test_step_empty_is_np_empty():
    """The shapes and dtypes np.empty takes: an integer or a tuple, a scalar class, a dtype
    string, the default float64; a fresh C-contiguous array each call."""
    @numba.njit
    def make(like, n):
        return (fused_sgd.step_empty(like.shape, like.dtype.type), fused_sgd.step_empty(n, "f4"),
                fused_sgd.step_empty((n, 0), np.int64), fused_sgd.step_empty((n,), float))

    a, b, c, d = make(np.ones((3, 4), np.float32), 5)
    assert (a.shape, a.dtype, a.flags.c_contiguous) == ((3, 4), np.float32, True)
    assert (b.shape, b.dtype, c.shape, c.dtype) == ((5,), np.float32, (5, 0), np.int64)
    assert (d.shape, d.dtype) == ((5,), np.float64)
    a2 = make(np.ones((3, 4), np.float32), 5)[0]
    a2[...] = 1.0
    a[...] = 2.0
    assert (a2 == 1.0).all() and not np.shares_memory(a, a2)
    with pytest.raises(ValueError):
        make(np.ones((3, 4), np.float32), -1)               # np.empty's negative-size error


def test_generated_step_uses_step_zeros_step_mean_and_no_cpython_wrapper():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 6)).astype(np.float32)
    y = rng.integers(0, 10, 5)
    params = tuple(p.astype(np.float32) for p in init_params(4, seed=1, n_in=6))
    spec = srcgrad.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)).specialize(*params, X, y)
    text, _ = fused_sgd.sgd_step_source(spec.source, "mlp_loss_adjoint", 4, "momentum")
    assert text.startswith("@step_jit\n") and "np.zeros(" not in text
    assert "_adj_b1 = step_zeros(b1.shape, b1.dtype.type)" in text
    assert "np.empty(" not in text and "step_empty(" in text
    calls = {ast.unparse(n.func) for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Call)}
    assert "np.mean" not in calls and "step_mean" in calls
    step = fused_sgd.step_jit(lambda a: a + 1)
    assert step.targetoptions["no_cpython_wrapper"] is True


@numba.njit
def _at_end_right(G, A, P, V, nesterov, scale):
    fused_sgd.momentum_apply_right(None, G, A, P, V, 0.1, 0.9, nesterov, scale)


@numba.njit
def _at_end_left(G, P, B, V, nesterov, scale):
    fused_sgd.momentum_apply_left(None, G, P, B, V, 0.1, 0.9, nesterov, scale)


def _want(P, V, grad, nesterov):
    v = 0.9 * V + grad
    return P - 0.1 * ((grad + 0.9 * v) if nesterov else v), v


@pytest.mark.parametrize("order", ["C", "F"])      # F: not fusable, the cpu product and the update
def test_momentum_update_at_the_end_matches_numpy(order):
    """The generated Momentum step's call (no pending marker): the velocity's GEMM, or with
    Nesterov the gradient first; the seed's scale; layouts the GEMM does not take."""
    rng = np.random.default_rng(5)
    G, A, B = rng.standard_normal((5, 3)), rng.standard_normal((5, 4)), rng.standard_normal((2, 3))
    for nesterov, scale in ((0.0, 1.0), (1.0, 1.0), (0.0, -0.5), (1.0, 2.0)):
        for right in (True, False):
            shape = (4, 3) if right else (5, 2)
            P = np.asarray(rng.standard_normal(shape), order=order)
            V = np.asarray(rng.standard_normal(shape), order=order)
            grad = scale * (A.T @ G if right else G @ B.T)
            want_p, want_v = _want(P, V, grad, nesterov)
            if right:
                _at_end_right(G, A, P, V, nesterov, scale)
            else:
                _at_end_left(G, P, B, V, nesterov, scale)
            np.testing.assert_allclose(V, want_v, rtol=1e-12)
            np.testing.assert_allclose(P, want_p, rtol=1e-12)


def test_momentum_update_at_the_end_shared_memory_nan_and_shapes():
    rng = np.random.default_rng(6)
    # an operand that is the parameter itself: the product reads it before the update writes
    S, V = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    want_p, want_v = _want(S, V, S.T @ S, False)
    _at_end_right(S, S, S, V, 0.0, 1.0)
    np.testing.assert_allclose(V, want_v, rtol=1e-12)
    np.testing.assert_allclose(S, want_p, rtol=1e-12)
    # the velocity sharing an operand's memory: the gradient first, then the plain update
    S, P = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    want_p, want_v = _want(P, S, S.T @ S, False)
    _at_end_right(S, S, P, S, 0.0, 1.0)
    np.testing.assert_allclose(S, want_v, rtol=1e-12)
    np.testing.assert_allclose(P, want_p, rtol=1e-12)
    # NaN in, NaN out (only where the gradient is NaN)
    G, A = np.ones((2, 3)), np.ones((2, 4))
    G[0, 1] = np.nan
    P, V = np.zeros((4, 3)), np.zeros((4, 3))
    _at_end_right(G, A, P, V, 0.0, 1.0)
    assert np.isnan(P[:, 1]).all() and np.isfinite(P[:, [0, 2]]).all()
    with pytest.raises(ValueError, match="shape"):
        _at_end_right(np.ones((2, 3)), np.ones((2, 4)), np.zeros((4, 2)), np.zeros((4, 2)), 0.0,
                      1.0)
    with pytest.raises(ValueError, match="shape"):
        _at_end_right(np.ones((2, 3)), np.ones((2, 4)), np.zeros((4, 3)), np.zeros((3, 4)), 0.0,
                      1.0)


def _compiled_names(fn, *args):
    from srcgrad.compile_report import CompileRecorder
    recorder = CompileRecorder().install()
    try:
        fn(*args)
    finally:
        recorder.uninstall()
    return [r["name"] for r in recorder.records]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_momentum_lowerings_match_the_flat_kernel_bit_for_bit(dtype):
    """momentum_apply on C arrays of one dtype and the at-the-end update (both sides, with and
    without Nesterov, a seed's scale) are the lowerings of momentum_lowering: no Numba function
    of their own, and the flat kernel's and the GEMM's results bit for bit."""
    from srcgrad.backends.cpu.blas import gemm_kernels
    from srcgrad.training.flat_kernels import _momentum_scaled_flat

    @numba.njit
    def update(P, G, V, W, G2, A, B, Q, U, UL, nesterov, scale):
        fused_sgd.momentum_apply(P, G, V, 0.05, 0.9, nesterov, scale)
        fused_sgd.momentum_apply_right(None, G2, A, W, U, 0.05, 0.9, nesterov, scale)
        fused_sgd.momentum_apply_left(None, G2, Q, B, UL, 0.05, 0.9, nesterov, scale)

    @numba.njit
    def flat(p, g, v, nesterov, scale):
        _momentum_scaled_flat(p, g, v, 0.05, 0.9, nesterov, scale)

    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal(s).astype(dtype) for s in
              [(3, 5), (3, 5), (3, 5), (4, 3), (6, 3), (6, 4), (4, 3), (6, 4), (4, 3), (6, 4)]]
    names = _compiled_names(update, *[a.copy() for a in arrays], 0.0, dtype(1.0))
    assert [n for n in names if "fused_sgd" in n] == []       # only the caller (and BLAS)
    product = gemm_kernels(numba.typeof(dtype(0))).gemm_c

    @numba.njit
    def gemm_c(a, b, trans_a, trans_b):       # the BLAS product the step's own products call
        return product(a, b, trans_a, trans_b)

    for nesterov, scale in ((0.0, dtype(1.0)), (1.0, dtype(0.5))):
        P, G, V, W, G2, A, B, Q, U, UL = (a.copy() for a in arrays)
        update(P, G, V, W, G2, A, B, Q, U, UL, nesterov, scale)
        grad_left = float(scale) * (arrays[4].astype(np.float64) @ arrays[6].T)   # g @ b.T
        v_left = 0.9 * arrays[9] + grad_left
        step = (grad_left + 0.9 * v_left) if nesterov else v_left
        np.testing.assert_allclose(UL, v_left, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(Q, arrays[7] - 0.05 * step, rtol=1e-4, atol=1e-5)
        want = [a.copy() for a in arrays]
        flat(want[0].ravel(), want[1].ravel(), want[2].ravel(), nesterov, scale)
        np.testing.assert_array_equal(P, want[0])
        np.testing.assert_array_equal(V, want[2])
        W_want, U_want = want[3], want[8]
        if nesterov:       # the gradient first (the BLAS product), then the flat kernel
            grad = gemm_c(want[5], want[4], True, False)
            flat(W_want.ravel(), grad.ravel(), U_want.ravel(), nesterov, scale)
        else:              # the velocity is the GEMM's output, then p -= lr * v
            U_want[...] = dtype(scale) * gemm_c(want[5], want[4], True, False) + dtype(0.9) * U_want
            W_want -= dtype(0.05) * U_want
            np.testing.assert_allclose(U, U_want, rtol=1e-5)
            np.testing.assert_allclose(W, W_want, rtol=1e-5)
            continue
        np.testing.assert_array_equal(U, U_want)
        np.testing.assert_array_equal(W, W_want)
    with pytest.raises(ValueError, match="shape"):
        update(*[a.copy() for a in arrays[:2]], np.zeros((3, 4), dtype), *arrays[3:], 0.0, 1.0)
    with pytest.raises(ValueError, match="shape"):
        update(*arrays[:3], np.zeros((3, 4), dtype), *arrays[4:], 0.0, 1.0)


def test_sgd_lowerings_match_the_flat_kernel_bit_for_bit():
    """sgd_apply and sgd_apply_right/_left on C float32 arrays are momentum_lowering's lowerings
    (no Numba function of their own): the flat SGD kernel's p -= lr * g bit for bit, the GEMM
    for the empty pending marker, the shape error otherwise."""
    from srcgrad.training.flat_kernels import _sgd_flat

    @numba.njit
    def update(P, G, N, W, G2, A, M, Q, B):
        fused_sgd.sgd_apply(P, G, 0.05)
        fused_sgd.sgd_apply_right(N, G2, A, W, 0.05)        # N: a gradient, p -= lr * N
        fused_sgd.sgd_apply_left(M, G2, Q, B, 0.05)         # M: the marker, one GEMM

    @numba.njit
    def flat(p, g):
        _sgd_flat(p, g, 0.05)

    rng = np.random.default_rng(8)
    P, G, N, W, G2, A, Q, B = (rng.standard_normal(s).astype(np.float32) for s in
                               [(3, 5), (3, 5), (4, 3), (4, 3), (6, 3), (6, 4), (6, 4), (4, 3)])
    M = np.empty((0, 0), np.float32)
    want = [a.copy() for a in (P, G, N, W, Q)]
    names = _compiled_names(update, P, G, N, W, G2, A, M, Q, B)
    assert [n for n in names if "fused_sgd" in n or "_sgd_flat" in n] == []
    flat(want[0].ravel(), want[1].ravel())
    flat(want[3].ravel(), want[2].ravel())
    np.testing.assert_array_equal(P, want[0])
    np.testing.assert_array_equal(W, want[3])
    np.testing.assert_allclose(Q, want[4] - 0.05 * (G2 @ B.T), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        update(P, G, N[:2].copy(), W, G2, A, M, Q, B)
