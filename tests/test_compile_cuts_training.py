"""Cold-compile cuts in srcgrad.training (issue 17): the fused SGD step's plain updates go through
the optimizer's one flat kernel per dtype (not a broadcasting ``_sgd`` per ndim), and ``gemm``'s
leading dimensions are written without ``max()``. Same results as before; fewer functions compiled
in a cold MNIST training process (counted in benchmarks/results/compile_mnist.md)."""
import numba
import numpy as np
import pytest

from srcgrad.training import fused_sgd
from srcgrad.training.blas import gemm


@numba.njit
def _apply(p, g, lr):
    fused_sgd.sgd_apply(p, g, lr)


@numba.njit
def _apply_right_unfused(n, g, a, p, lr):
    fused_sgd.sgd_apply_right(n, g, a, p, lr)


def test_sgd_apply_flat_and_fallback_match_numpy():
    rng = np.random.default_rng(0)
    for shape in ((7,), (3, 4), (2, 3, 2)):
        for dtype in (np.float32, np.float64):
            p = rng.standard_normal(shape).astype(dtype)
            g = rng.standard_normal(shape).astype(dtype)
            want = p - dtype(0.3) * g
            _apply(p, g, 0.3)                    # C-contiguous: the flat kernel
            np.testing.assert_array_equal(p, want)
    # a Fortran-ordered parameter and a strided gradient: the generic update
    p = np.asfortranarray(rng.standard_normal((3, 4)))
    g = rng.standard_normal((3, 8))[:, ::2]
    want = p - 0.5 * g
    _apply(p, g, 0.5)
    np.testing.assert_allclose(p, want, rtol=1e-15)
    assert p.flags.f_contiguous
    # NaN in, NaN out
    p, g = np.zeros(3), np.array([1.0, np.nan, 2.0])
    _apply(p, g, 1.0)
    assert np.isnan(p[1]) and p[0] == -1.0 and p[2] == -2.0


def test_sgd_apply_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        _apply(np.zeros((2, 3)), np.zeros((3, 2)), 0.1)       # same size, other shape
    with pytest.raises(ValueError, match="shape"):
        _apply(np.zeros(3), np.zeros(4), 0.1)


def test_sgd_apply_right_with_a_gradient_updates_as_the_optimizer():
    # n is the gradient itself (not the empty marker): p -= lr * n, through the flat kernel
    rng = np.random.default_rng(1)
    G, A = rng.standard_normal((5, 3)), rng.standard_normal((5, 4))
    P = rng.standard_normal((4, 3))
    n = A.T @ G
    want = P - 0.2 * n
    _apply_right_unfused(np.ascontiguousarray(n), G, A, P, 0.2)
    np.testing.assert_array_equal(P, want)
    with pytest.raises(ValueError, match="shape"):
        _apply_right_unfused(np.zeros((3, 4)), G, A, P, 0.2)


@numba.njit
def _gemm(A, B, C, alpha, beta, ta, tb):
    gemm(A, B, C, alpha, beta, ta, tb)


def test_gemm_single_row_and_column_operands():
    # leading dimensions of 1-column operands and outputs are 1 (BLAS needs >= 1)
    rng = np.random.default_rng(2)
    for m, k, n in ((1, 1, 1), (4, 1, 1), (1, 3, 1), (3, 2, 1), (1, 2, 3)):
        A, B = rng.standard_normal((m, k)), rng.standard_normal((k, n))
        C = rng.standard_normal((m, n))
        want = -0.5 * A @ B + C
        _gemm(A, B, C, -0.5, 1.0, False, False)
        np.testing.assert_allclose(C, want, rtol=1e-13)
        At, Bt = np.ascontiguousarray(A.T), np.ascontiguousarray(B.T)
        C2 = np.zeros((m, n))
        _gemm(At, Bt, C2, 1.0, 0.0, True, True)
        np.testing.assert_allclose(C2, A @ B, rtol=1e-13)


def test_gather_batch_every_ndim_and_a_short_last_batch():
    from srcgrad.training.optim import _gather_batch

    @numba.njit
    def gather(X, y, order, start, batch_size, Xb, yb):
        Xc, yc, size = _gather_batch(X, y, order, start, batch_size, Xb, yb, None)
        return Xc.copy(), yc.copy(), size

    rng = np.random.default_rng(3)
    n, B = 11, 4
    order = rng.permutation(n).astype(np.int64)
    for X, y in ((rng.standard_normal((n, 5)).astype(np.float32), rng.integers(0, 9, n)),
                 (rng.standard_normal((n, 2, 3)), rng.standard_normal((n, 2))),
                 (rng.standard_normal(n), rng.integers(0, 9, (n, 1, 2)))):
        Xb = np.empty((B,) + X.shape[1:], X.dtype)
        yb = np.empty((B,) + y.shape[1:], y.dtype)
        for start in (0, 4, 8):                          # the last batch has 3 samples
            Xc, yc, size = gather(X, y, order, start, B, Xb, yb)
            rows = order[start:start + B]
            assert size == len(rows)
            np.testing.assert_array_equal(Xc, X[rows])
            np.testing.assert_array_equal(yc, y[rows])


def test_gather_batch_rows_in_flight_every_remainder_and_layout():
    """The 2-d gather copies ROWS_IN_FLIGHT rows side by side and prefetches the next group's:
    batches of every remainder modulo 4 (1-11 rows; short last batches), C-, Fortran-ordered
    and strided X, float32/float64, each row equal to NumPy's fancy indexing."""
    from srcgrad.training import fused_runs
    from srcgrad.training.optim import _gather_batch
    assert fused_runs.ROWS_IN_FLIGHT == 4

    @numba.njit
    def gather(X, y, order, start, batch_size, Xb, yb):
        Xc, yc, size = _gather_batch(X, y, order, start, batch_size, Xb, yb, None)
        return Xc.copy(), yc.copy(), size

    rng = np.random.default_rng(5)
    n = 29
    base = rng.standard_normal((n, 40))
    for X in (base.astype(np.float32), base, np.asfortranarray(base), base[:, ::3]):
        y = rng.integers(0, 9, n)
        for B in range(1, 12):
            order = rng.permutation(n).astype(np.int64)
            Xb, yb = np.full((B, X.shape[1]), np.nan, X.dtype), np.empty(B, y.dtype)
            for start in range(0, n, B):
                Xc, yc, size = gather(X, y, order, start, B, Xb, yb)
                rows = order[start:start + B]
                assert size == len(rows)
                np.testing.assert_array_equal(Xc, X[rows])
                np.testing.assert_array_equal(yc, y[rows])


def test_batch_loops_gather_2d_samples_inline():
    """The fused steps' batch loops gather 2-d samples with 1-d labels through _gather_rows,
    written into the loop: neither _gather_batch nor min() is compiled for them, and the loop
    sees the same batches as _gather_batch gives."""
    from srcgrad.compile_report import CompileRecorder
    from srcgrad.training.fused_runs import _run_sgd_steps

    @numba.njit
    def step(W, X, y, seed, lr):            # a "step": records the batch it was given
        W[0, 0] += X.sum() * 1000.0 + y.sum()
        W[0, 1] += X.shape[0]
        return np.float32(X[0, 0])

    rng = np.random.default_rng(6)
    n, B = 23, 5
    X, y = rng.standard_normal((n, 7)).astype(np.float32), rng.integers(0, 9, n)
    order = rng.permutation(n).astype(np.int64)
    W = np.zeros((1, 2), np.float32)
    Xb, yb = np.empty((B, 7), np.float32), np.empty(B, y.dtype)
    sig = (numba.typeof(W), numba.typeof(Xb), numba.typeof(yb), numba.float32, numba.float64)
    step.compile(sig)
    step_type = numba.types.FunctionType(step.overloads[sig].signature)
    args = (step_type, numba.typeof((W,)), numba.typeof(X), numba.typeof(y), numba.typeof(order),
            numba.int64, numba.int64, numba.int64, numba.float64, numba.typeof(Xb),
            numba.typeof(yb), numba.none, numba.float32, numba.typeof(np.zeros(2)))
    recorder = CompileRecorder().install()
    try:
        _run_sgd_steps.compile(args)
    finally:
        recorder.uninstall()
    names = [r["name"].rsplit(".", 1)[-1] for r in recorder.records]
    assert "_gather_batch" not in names and not any("min" in n for n in names), names
    entry = _run_sgd_steps.overloads[args].entry_point
    total = entry(step, (W,), X, y, order, B, 0, 5, 0.1, Xb, yb, None, np.float32(1),
                  np.zeros(2))
    want = np.zeros(2, np.float32)
    first = 0.0
    for start in range(0, n, B):
        rows = order[start:start + B]
        want[0] += np.float32(X[rows].sum() * 1000.0 + y[rows].sum())
        want[1] += len(rows)
        first += X[rows[0], 0] * len(rows)
    np.testing.assert_allclose(W[0], want, rtol=1e-5)
    np.testing.assert_allclose(total, first, rtol=1e-6)


def test_overlaps_tests_the_arrays_memory():
    """flat_kernels._overlaps (an intrinsic): shared bytes overlap, adjacent or disjoint
    memory and empty arrays do not, whatever the dtypes and ndims."""
    from srcgrad.training.flat_kernels import _overlaps

    @numba.njit
    def overlaps(a, b):
        return _overlaps(a, b), _overlaps(b, a)

    base = np.zeros(20)
    grid = np.zeros((4, 5), np.float32)
    cases = [(base[:10], base[10:], False), (base[:10], base[9:], True), (base, base, True),
             (base[3:4], base[:20], True), (base[:0], base, False), (base, base[5:5], False),
             (grid[:2], grid[2:], False), (grid[1:3], grid[2:], True),
             (grid.reshape(-1)[:10], grid[1:], True), (base, grid, False),
             (base[:10].view(np.float32), base[4:6], True)]
    for a, b, want in cases:
        assert overlaps(a, b) == (want, want), (a.shape, b.shape, want)


def test_flat_view_is_the_arrays_memory_in_c_order():
    from srcgrad.training.optim import _flat_view

    @numba.njit
    def bump(a, k):
        f = _flat_view(a)
        f[k] += 1.0
        return f.size, f.copy()

    for shape in ((3, 4), (2, 3, 2), (5,)):
        a = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
        want = a.ravel().copy()
        want[1] += 1.0
        size, flat = bump(a, 1)
        assert size == a.size
        np.testing.assert_array_equal(flat, want)
        np.testing.assert_array_equal(a.ravel(), want)          # written through: a view

    @numba.njit
    def total(a):
        return _flat_view(a).sum()

    ro = np.arange(6.0).reshape(2, 3)
    ro.flags.writeable = False
    assert total(ro) == 15.0
    assert total(np.zeros((0, 3))) == 0.0
    with pytest.raises(numba.core.errors.TypingError):
        total(np.zeros((4, 3))[:, ::2])                          # not C-contiguous: refused
