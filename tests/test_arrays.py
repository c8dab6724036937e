"""Array programs: products, broadcasting, reductions, elementwise functions, shape work, gathers,
creation, numerically stable patterns and small models, against central finite differences.

Compilation dominates the cost on the cpu target (a few seconds per specialization, and Numba
compiles again for each new memory layout), so the operations are grouped into a few functions
per topic, each differentiated w.r.t. all of its float inputs, and the GradFunction objects are
built once per (function, target) and reused across shapes, layouts and precisions.
"""
import numpy as np
import pytest

import srcgrad
from conftest import TARGETS, check_grad

F64 = dict(rtol=1e-5, atol=1e-6)
F32 = dict(rtol=3e-3, atol=3e-4)

_CACHE = {}

# The float32 + non-contiguous variants of the big grouped functions cost a fresh Numba compile each
# (30-70 s on a loaded 2-core machine): on the cpu target they are marked slow (`-m "not slow"`).
SLOW_CPU = ["python", pytest.param("cpu", marks=pytest.mark.slow)]
# float32 on cpu compiles the same code path again (float32 compiled code: test_products_float32_
# non_contiguous, test_mlp_loss_float32): slow
F32_CPU_SLOW = [("python", np.float64), ("python", np.float32), ("cpu", np.float64),
                pytest.param("cpu", np.float32, marks=pytest.mark.slow)]


def gradfn(f, wrt, target):
    """One GradFunction per (function, wrt, target) for the whole session."""
    key = (f.__name__, wrt if not isinstance(wrt, list) else tuple(wrt), target)
    if key not in _CACHE:
        _CACHE[key] = srcgrad.grad(f, wrt=wrt, target=target)
    return _CACHE[key]


def check(f, args, wrt, target, dtype=np.float64, **tol):
    """check_grad with a shared GradFunction, float arrays cast to ``dtype``."""
    args = [a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args]
    tol = tol or (F64 if dtype == np.float64 else F32)
    grads = check_grad(f, args, wrt=wrt, target=target, gradfn=gradfn(f, wrt, target), **tol)
    for g in (grads if isinstance(wrt, tuple) else (grads,)):
        if isinstance(g, np.ndarray):
            assert g.dtype == dtype
    return grads


def rand(rng, *shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, shape)


# ------------------------------------------------------------------------------------------------
# Products: @, np.dot, np.outer
# ------------------------------------------------------------------------------------------------

def products(A, B, u, v):
    """A (m,k), B (k,p), u (m,), v (k,): every product kind."""
    mm = A @ B
    mv = A @ v
    vm = u @ A
    vv = v @ v
    dmm = np.dot(A, B)
    dmv = np.dot(A, v)
    dvm = np.dot(u, A)
    dvv = np.dot(v, v)
    o = np.outer(u, v)
    return (np.sum(np.sin(mm)) + np.sum(mv * mv) + np.sum(np.tanh(vm)) + vv * vv
            + np.sum(dmm * dmm) + np.sum(np.cos(dmv)) + np.sum(dvm * vm) + np.sin(dvv)
            + np.sum(np.sin(o) * A))


PRODUCTS_WRT = (0, 1, 2, 3)


# On cpu, float64 and C order are one more compile (about 5 s) of the same generated code that the
# default test_products_float32_non_contiguous[cpu] below compiles and checks against finite
# differences (every product kind; float32, every operand non-contiguous): slow. The float64 matrix
# products are compiled by default in test_cpu_backend.py (matmul and both adjoints at degenerate
# sizes such as these, every layout), test_mlp_loss[cpu] and test_logistic_regression[cpu] (matrix
# @ vector), test_gmm_objective[cpu] (X @ mu.T).
@pytest.mark.parametrize("m,k,p", [(3, 4, 2), (1, 5, 1), (4, 2, 3)])
@pytest.mark.parametrize("target", SLOW_CPU)
def test_products_shapes(target, m, k, p):
    rng = np.random.default_rng(m * 100 + k * 10 + p)
    check(products, [rand(rng, m, k), rand(rng, k, p), rand(rng, m), rand(rng, k)], PRODUCTS_WRT, target)


def _non_contiguous_products(rng, dtype=np.float64):
    A = rand(rng, 4, 3).astype(dtype).T         # (3,4), Fortran order
    B = rand(rng, 8, 2).astype(dtype)[::2]      # (4,2), strided rows
    u = rand(rng, 6).astype(dtype)[::2]         # (3,)
    v = rand(rng, 4, 2).astype(dtype)[:, 1]     # (4,), a column
    assert not (A.flags.c_contiguous or B.flags.c_contiguous or u.flags.c_contiguous
                or v.flags.c_contiguous)
    return [A, B, u, v]


def test_products_non_contiguous():
    check(products, _non_contiguous_products(np.random.default_rng(1)), PRODUCTS_WRT, "python")


def test_products_float32_non_contiguous(target):
    """float32 and non-contiguous layouts in one specialization (compilation is the cost)."""
    args = _non_contiguous_products(np.random.default_rng(2), np.float32)
    check_grad(products, args, wrt=PRODUCTS_WRT, target=target, gradfn=gradfn(products, PRODUCTS_WRT, target),
               **F32)


def batched_products(S, T, M, v):
    """Stacks of matrices: S (..., n, k), T (..., k, p), M (k, p), v (k,) (NumPy's matmul rule:
    leading axes broadcast, a vector is a row on the left and a column on the right)."""
    st = S @ T
    sm = np.matmul(S, M)
    vt = v @ T
    sv = S @ v
    return np.sum(np.sin(st)) + np.sum(sm * sm) + np.sum(np.tanh(vt)) + np.sum(np.cos(sv) * sv)


# The 4-d case compiles a second cpu specialization (about a minute): slow on cpu. Its generated
# code runs on the python target; the compiled stacked product and both adjoint products at exactly
# these shapes are test_cpu_backend.py::test_stacked_product_and_adjoints_match_numpy[a_shape1-b_shape1].
@pytest.mark.parametrize("target, s_shape, t_shape", [
    pytest.param(target, s, t, id=f"{target}-s_shape{k}-t_shape{k}",
                 marks=[pytest.mark.slow] if len(s) == 4 and target == "cpu" else [])
    for target in TARGETS
    for k, (s, t) in enumerate([((3, 4, 5), (3, 5, 2)),          # same stacks
                                ((1, 4, 5), (3, 5, 2)),          # stretched size-1 axis
                                ((2, 1, 4, 5), (3, 5, 2))])])    # 4-d with 3-d
def test_batched_products(target, s_shape, t_shape):
    rng = np.random.default_rng(len(s_shape) * 10 + s_shape[0])
    args = [rand(rng, *s_shape), rand(rng, *t_shape), rand(rng, 5, 2), rand(rng, 5)]
    grads = check(batched_products, args, PRODUCTS_WRT, target)
    assert [g.shape for g in grads] == [s_shape, t_shape, (5, 2), (5,)]


# On cpu these layouts compile a third specialization: slow. Their generated code runs on the python
# target (both widths); the compiled stacked product is test_batched_products[cpu-...], and BLAS on
# strided, transposed and reversed operands is test_cpu_backend.py::test_matmul_layouts.
@pytest.mark.parametrize("target, dtype", [("python", np.float64), ("python", np.float32),
                                           pytest.param("cpu", np.float64, marks=pytest.mark.slow),
                                           pytest.param("cpu", np.float32, marks=pytest.mark.slow)])
def test_batched_products_non_contiguous(target, dtype):
    rng = np.random.default_rng(7)
    S = rand(rng, 3, 5, 4).transpose(0, 2, 1)          # (3, 4, 5): last two axes swapped
    T = rand(rng, 6, 5, 2)[::2]                        # (3, 5, 2): every other stack
    M = rand(rng, 2, 5).T                              # (5, 2), Fortran order
    v = rand(rng, 10)[::2]
    assert not any(x.flags.c_contiguous for x in (S, T, M, v))
    check(batched_products, [S, T, M, v], PRODUCTS_WRT, target, dtype)


def dot_of_stacks(S, T):
    return np.sum(np.dot(S, T))


def test_dot_of_stacks_is_refused(target):
    """np.dot of N-d arrays is not a batched product (it pairs every row with every stack): it is
    refused with a pointer to `@`, not differentiated as if it were one."""
    rng = np.random.default_rng(0)
    with pytest.raises(srcgrad.UnsupportedSyntaxError, match=r"np.dot of a 3-d array.*np.matmul"):
        srcgrad.grad(dot_of_stacks, wrt=(0, 1), target=target)(rand(rng, 3, 4, 5), rand(rng, 3, 5, 2))


# ------------------------------------------------------------------------------------------------
# Broadcasting: the adjoint sums back over broadcast axes
# ------------------------------------------------------------------------------------------------

def broadcasting(s, a, M, c, r):
    """s float, a (n,), M (m,n), c (m,1), r (1,n)."""
    p1 = s * M + M / s - s + 2.0 * a      # scalar with array, (n,) with (m,n)
    p2 = np.sin(a + M) * (a * M) - a / (M + 3.0)
    p3 = c * r + np.cos(c - r)            # (m,1) with (1,n)
    p4 = c * M + M / (c + 2.0) - c        # (m,1) with (m,n)
    p5 = r * M - r                        # (1,n) with (m,n)
    p6 = a - s * a + 1.0 / (a + 2.0)      # (n,) with scalar
    return np.sum(p1 * p1) + np.sum(p2) + np.sum(np.tanh(p3)) + np.sum(p4 * p4) + np.sum(np.sin(p5)) \
        + np.sum(p6 * p6)


BROADCAST_WRT = (0, 1, 2, 3, 4)


@pytest.mark.parametrize("m,n", [(3, 4), (1, 3), (4, 1)])
def test_broadcasting(target, m, n):
    rng = np.random.default_rng(10 * m + n)
    args = [0.7, rand(rng, n), rand(rng, m, n), rand(rng, m, 1), rand(rng, 1, n)]
    grads = check(broadcasting, args, BROADCAST_WRT, target)
    assert isinstance(grads[0], float)
    assert [g.shape for g in grads[1:]] == [(n,), (m, n), (m, 1), (1, n)]


def broadcasting_3d(X, Y, z):
    """X (m,1,n), Y (1,p,n) or (p,n), z (n,): broadcasting between 3-d shapes."""
    return np.sum(np.sin(X * Y + z) * (X - z))


# A 2-d Y is a second cpu specialization: slow on cpu. Its generated code runs on the python target;
# compiled 3-d broadcasting is the cpu case y_shape0, and summing a gradient back into fewer
# dimensions is test_cpu_backend.py::test_sum_broadcast_into_matches_numpy.
@pytest.mark.parametrize("target, y_shape", [
    pytest.param(target, y, id=f"{target}-y_shape{k}",
                 marks=[pytest.mark.slow] if len(y) == 2 and target == "cpu" else [])
    for target in TARGETS for k, y in enumerate([(1, 5, 4), (5, 4), (3, 5, 1)])])
def test_broadcasting_3d(target, y_shape):
    rng = np.random.default_rng(len(y_shape) + y_shape[0])
    args = [rand(rng, 3, 1, 4), rand(rng, *y_shape), rand(rng, 4)]
    grads = check(broadcasting_3d, args, (0, 1, 2), target)
    assert [g.shape for g in grads] == [(3, 1, 4), y_shape, (4,)]


def _non_contiguous_broadcast(rng, dtype):
    a = rand(rng, 8).astype(dtype)[::2]
    M = rand(rng, 4, 3).astype(dtype).T
    c = rand(rng, 3, 2).astype(dtype)[:, :1]
    r = rand(rng, 2, 4).astype(dtype)[1:, ::-1]
    return [-0.4, a, M, c, r]


def test_broadcasting_non_contiguous():
    check(broadcasting, _non_contiguous_broadcast(np.random.default_rng(3), np.float64), BROADCAST_WRT, "python")


@pytest.mark.parametrize("target", SLOW_CPU)
def test_broadcasting_float32_non_contiguous(target):
    args = _non_contiguous_broadcast(np.random.default_rng(4), np.float32)
    args[0] = np.float32(0.7)
    check_grad(broadcasting, args, wrt=BROADCAST_WRT, target=target,
               gradfn=gradfn(broadcasting, BROADCAST_WRT, target), **F32)


# ------------------------------------------------------------------------------------------------
# Reductions: sum / mean / max / min, axis None / 0 / 1, keepdims, methods
# ------------------------------------------------------------------------------------------------

def sum_mean(x):
    t = np.sin(np.sum(x, axis=0)) + np.cos(np.mean(x, axis=0))
    u = np.sum(x, axis=1, keepdims=True) * np.mean(x, axis=1, keepdims=True)
    v = np.sum(x, axis=0, keepdims=True) * x + np.mean(x, axis=0, keepdims=True)
    w = np.tanh(np.sum(x, axis=1)) + np.mean(x, axis=1)
    k = np.sum(x, keepdims=True) * x + np.mean(x, keepdims=True)
    methods = np.sin(x.sum(axis=1)) + x.mean(axis=1) * x.sum()
    return np.sum(t) + np.sum(u * u) + np.sum(np.sin(v)) + np.sum(w * w) + np.sum(k * k) \
        + np.sin(np.sum(x)) * np.mean(x) + x.mean() + np.sum(methods * methods)


def max_min(x):
    a = np.max(x, axis=0) * np.min(x, axis=0)
    b = np.max(x, axis=1, keepdims=True) * x - np.min(x, axis=1, keepdims=True)
    c = np.sin(np.max(x, axis=1)) + np.min(x, axis=1) * np.min(x, axis=1)
    d = np.max(x, axis=0, keepdims=True) * x + np.min(x, axis=0, keepdims=True)
    e = np.max(x, keepdims=True) * x
    return np.sum(a) + np.sum(b * b) + np.sum(c) + np.sum(np.sin(d)) + np.sum(e) + np.max(x) * np.min(x) \
        + x.max() + x.min() * x.max() + np.sum(x.max(axis=1))


def prod_(x):
    a = np.prod(x, axis=0)
    r = np.sin(np.prod(x, axis=1))
    b = np.prod(x, axis=1, keepdims=True) * x + np.prod(x, axis=0, keepdims=True)
    c = np.prod(x, keepdims=True) * x
    return np.sum(a * a) + np.sum(r) + np.sum(np.sin(b)) + np.sum(c) + np.prod(x) \
        + x.prod() * np.sum(x.prod(axis=1))


@pytest.mark.parametrize("f", [sum_mean, max_min, prod_])
@pytest.mark.parametrize("shape", [(3, 4), (1, 5), (4, 1)])
def test_reductions(target, f, shape):
    rng = np.random.default_rng(shape[0] * 7 + shape[1])
    check(f, [rand(rng, *shape)], 0, target)


@pytest.mark.parametrize("f", [sum_mean, max_min, prod_])
def test_reductions_non_contiguous(f):
    rng = np.random.default_rng(5)
    check(f, [rand(rng, 6, 4)[::2, ::-1]], 0, "python")
    check(f, [rand(rng, 4, 3).T], 0, "python")


@pytest.mark.parametrize("f", [sum_mean, max_min, prod_])
@pytest.mark.parametrize("target", SLOW_CPU)
def test_reductions_float32_non_contiguous(target, f):
    x = rand(np.random.default_rng(6), 6, 4).astype(np.float32)[::2, ::-1]
    check_grad(f, [x], wrt=0, target=target, gradfn=gradfn(f, 0, target), **F32)


def reductions_1d(x):
    return np.sum(x * x) + np.mean(np.sin(x)) + np.max(x) * np.min(x) + np.sum(x, axis=0) \
        + np.max(x, axis=0) + x.sum() * x.min() + np.prod(x + 1.5) + x.prod(axis=0)


def prod_rows(x):
    return np.sum(np.prod(x, axis=1) * np.arange(1.0, x.shape[0] + 1.0)) + np.prod(x[0])


@pytest.mark.parametrize("target, dtype", F32_CPU_SLOW)
def test_prod_with_zeros(target, dtype):
    """No division by the element: a zero gets the product of the others, two zeros in a row give
    that row a zero gradient, checked against products of np.delete (a second method) and FD."""
    x = np.array([[0.5, 0.0, 2.0, -1.5], [0.0, 3.0, 0.0, 1.25], [1.5, -0.5, 2.0, 0.75]], dtype)
    grad = gradfn(prod_rows, 0, target)(x)
    expected = np.zeros((3, 4))
    x64 = x.astype(np.float64)
    for i in range(3):
        for j in range(4):
            expected[i, j] = (i + 1) * np.prod(np.delete(x64[i], j))
    expected[0] += [np.prod(np.delete(x64[0], j)) for j in range(4)]
    assert grad.dtype == dtype
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=0)
    assert np.all(grad[1] == 0.0)
    if dtype == np.float64:
        check(prod_rows, [x], 0, target)


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_reductions_1d(target):
    check(reductions_1d, [np.random.default_rng(7).uniform(-1, 1, 6)], 0, target)


def extremes(x, w0, w1, w2, w3):
    """Each weight switches one reduction on: np.max(x), max over rows, max over columns (keepdims),
    x.min()."""
    return w0 * np.max(x) + np.sum(np.max(x, axis=1) * w1) + np.sum(np.max(x, axis=0, keepdims=True) * w2) \
        + w3 * x.min()


def maximum_tie(x, y):
    return np.sum(np.maximum(x, y))


@pytest.mark.parametrize("target, dtype", F32_CPU_SLOW)
def test_max_ties_first_element_gets_adjoint(target, dtype):
    """Documented: the FIRST extreme element receives the whole adjoint on ties."""
    fn = gradfn(extremes, 0, target)
    z1, z2, z3 = np.zeros(2, dtype), np.zeros((1, 3), dtype), dtype(0.0)
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]], dtype=dtype)
    g = fn(x, dtype(1.0), z1, z2, z3)
    np.testing.assert_array_equal(g, [[0, 1, 0], [0, 0, 0]])
    assert g.dtype == dtype
    g = fn(x, z3, np.array([1.0, 2.0], dtype=dtype), z2, z3)
    np.testing.assert_array_equal(g, [[0, 1, 0], [2, 0, 0]])
    x2 = np.array([[1.0, 5.0, 0.0], [1.0, 5.0, 0.0]], dtype=dtype)
    g = fn(x2, z3, z1, np.array([[1.0, 2.0, 3.0]], dtype=dtype), z3)
    np.testing.assert_array_equal(g, [[1, 2, 3], [0, 0, 0]])
    x3 = np.array([[4.0, -1.0], [2.0, -1.0], [-1.0, 0.0]], dtype=dtype)
    g = fn(x3, z3, np.zeros(3, dtype), np.zeros((1, 2), dtype), dtype(1.0))
    np.testing.assert_array_equal(g, [[0, 1], [0, 0], [0, 0]])


def test_maximum_tie_goes_to_first_argument(target):
    x = np.array([1.0, 2.0, 3.0])
    y = np.array([1.0, 0.0, 4.0])
    gx, gy = srcgrad.grad(maximum_tie, wrt=(0, 1), target=target)(x, y)
    np.testing.assert_array_equal(gx, [1, 1, 0])
    np.testing.assert_array_equal(gy, [0, 0, 1])


# ------------------------------------------------------------------------------------------------
# Elementwise functions on arrays
# ------------------------------------------------------------------------------------------------

def elementwise(x, y):
    """x in (0.1, 1): away from the kinks of maximum/clip/abs (the offsets stay clear of them)."""
    a = np.exp(x) * np.log(x) + np.tanh(y)
    b = np.maximum(y, 0.0) + np.maximum(x - 0.55, y)
    c = np.where(y > 0.0, x * y, np.sin(x)) + np.where(x > 0.5, 1.0, y)
    e = np.clip(y, -0.5, 0.5) + np.abs(y) + np.sqrt(x) + np.square(y) + np.abs(x - 0.5)
    return np.sum(a * b) + np.sum(c * c) + np.sum(e * x)


def _elementwise_args(rng, shape):
    x = rng.uniform(0.1, 1.0, shape)
    y = rng.uniform(-1.0, 1.0, shape)
    for v in (x, y):        # keep clear of every kink (|t - k| > 0.02 for k in kinks)
        for k in (-0.5, 0.0, 0.5):
            close = np.abs(v - k) < 0.03
            v[close] = k + 0.05
    x[np.abs(x - 0.55 - y) < 0.03] += 0.1
    return [x, y]


def test_elementwise(target):
    check(elementwise, _elementwise_args(np.random.default_rng(2), (3, 4)), (0, 1), target)


def test_elementwise_1d():
    check(elementwise, _elementwise_args(np.random.default_rng(1), (7,)), (0, 1), "python")


def test_elementwise_non_contiguous():
    x, y = _elementwise_args(np.random.default_rng(8), (4, 6))
    check(elementwise, [x[:, ::2], y.T[::2].T], (0, 1), "python")


@pytest.mark.parametrize("target", SLOW_CPU)
def test_elementwise_float32_non_contiguous(target):
    x, y = _elementwise_args(np.random.default_rng(9), (4, 6))
    args = [x.astype(np.float32)[:, ::2], y.astype(np.float32)[:, 1::2]]
    check_grad(elementwise, args, wrt=(0, 1), target=target, gradfn=gradfn(elementwise, (0, 1), target), **F32)


# ------------------------------------------------------------------------------------------------
# Shape work: transpose, reshape, ravel, expand_dims, None, slices
# ------------------------------------------------------------------------------------------------

def shapes(X, a):
    """X (m,n), a (k,) with k >= 3."""
    m = X.shape[0]
    n = X.shape[1]
    t = np.sum(np.sin(X.T) * np.transpose(X) ** 2)
    r = X.reshape(n * m) * np.arange(n * m) + np.ravel(X) * np.reshape(X, (m * n,))
    q = np.reshape(X, (n, m))[0] * np.sum(X.reshape(n, m), axis=0)
    e = np.expand_dims(a, 1) * a + np.expand_dims(a, 0)
    o = a[:, None] * a[None, :]
    s = np.sin(a[1:-1]) * a[:-2] + a[2:]
    col = np.sin(X[:, n - 1]) + X[:, 0] * X[:, 0]
    row = X[m - 1, :] * X[0]
    strided = a[::2] * a[::2]
    rev = a[::-1] * np.arange(a.shape[0])
    return t + np.sum(r * r) + np.sum(q) + np.sum(np.tanh(e)) + np.sum(o * o) + np.sum(s) + np.sum(col) \
        + np.sum(row) + np.sum(strided) + np.sum(rev * rev) + np.sum(X[1:, :-1] * X[:-1, 1:])


@pytest.mark.parametrize("m,n,k", [(3, 4, 5), (2, 2, 4)])
def test_shape_work(target, m, n, k):
    rng = np.random.default_rng(m + n + k)
    check(shapes, [rand(rng, m, n), rand(rng, k)], (0, 1), target)


def test_shape_work_non_contiguous():
    rng = np.random.default_rng(9)
    check(shapes, [rand(rng, 4, 3).T, rand(rng, 12)[::2]], (0, 1), "python")


def reshape_transposed(X):
    return np.sum(np.sin(X.reshape(X.shape[0] * X.shape[1])) * np.arange(X.size))


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_reshape_non_contiguous(target):
    check(reshape_transposed, [np.random.default_rng(10).uniform(-1, 1, (4, 3)).T], 0, target)


# -- slice writes ---------------------------------------------------------------------------------

def write_rows_loop(a, v, W):
    """out[i, :] = ... inside a loop; out is only used linearly afterwards."""
    out = np.zeros((a.shape[0], v.shape[0]))
    for i in range(a.shape[0]):
        out[i, :] = a[i] * v
    return np.sum(out * W)


def write_row_outside(a, v, W):
    out = np.zeros((3, v.shape[0]))
    out[1, :] = v * a[0]
    out[:, 0] = a
    return np.sum(np.sin(out) * W)


def fill_inactive(a, v, W):
    e = np.empty(v.shape[0])
    e[:] = 2.0
    return np.sum(e * v) + np.sum(a)


def write_rows_int_index(a, v, W):
    out = np.zeros((a.shape[0], v.shape[0]))
    for i in range(a.shape[0]):
        out[i] = a[i] * v
    return np.sum(out * W)


def write_elements_loop(a):
    out = np.zeros(a.shape[0])
    for i in range(a.shape[0]):
        out[i] = a[i] * a[i]
    return np.sum(np.sin(out))


def write_elements_2d(a, v):
    out = np.zeros((a.shape[0], v.shape[0]))
    for i in range(a.shape[0]):
        for j in range(v.shape[0]):
            out[i, j] = a[i] * v[j]
    out[0, 0] = 2.0 * v[0]
    return np.sum(np.sin(out) * out)


def test_element_writes(target):
    rng = np.random.default_rng(12)
    check(write_elements_loop, [rng.uniform(-1, 1, 5)], 0, target)
    check(write_elements_2d, [rand(rng, 3), rand(rng, 4)], (0, 1), target)


@pytest.mark.parametrize("f", [write_rows_loop, write_row_outside, fill_inactive])
def test_slice_writes(f):
    rng = np.random.default_rng(11)
    check(f, [rand(rng, 3), rand(rng, 4), rand(rng, 3, 4)], (0, 1), "python")


def test_row_write_integer_index():
    rng = np.random.default_rng(11)
    check(write_rows_int_index, [rand(rng, 3), rand(rng, 4), rand(rng, 3, 4)], (0, 1), "python")


# -- concatenate / stack ----------------------------------------------------------------------------

def concat(a, b):
    return np.sum(np.sin(np.concatenate((a, b))) * np.arange(a.shape[0] + b.shape[0]))


def stack(a, b):
    return np.sum(np.sin(np.stack((a, b))) * np.arange(2.0)[:, None])


def concat_stack_lists(A, B, v):
    """List literals, as users write them, for the arrays of np.concatenate and np.stack; 2-d
    arrays along both axes."""
    rows = np.concatenate([A, B * 2.0], axis=0)
    cols = np.concatenate([A, np.sin(A)], axis=1)
    pair = np.stack([v, v * v], axis=1)
    layers = np.stack([A, A * B])
    return np.sum(np.sin(rows)) + np.sum(cols * cols) + np.sum(np.tanh(pair)) + np.sum(layers * A)


def test_concatenate(target):
    rng = np.random.default_rng(14)
    check(concat, [rand(rng, 3), rand(rng, 2)], (0, 1), target)


def test_stack(target):
    rng = np.random.default_rng(15)
    check(stack, [rand(rng, 3), rand(rng, 3)], (0, 1), target)


@pytest.mark.parametrize("target, dtype", F32_CPU_SLOW)
def test_concatenate_and_stack_lists(target, dtype):
    rng = np.random.default_rng(16)
    A, B = rand(rng, 4, 3).T, rand(rng, 6, 4)[::2, 1:]          # (3, 4) F-order, (3, 3) strided
    B = np.concatenate((B, rand(rng, 3, 1)), axis=1)            # (3, 4)
    check(concat_stack_lists, [A, B, rand(rng, 8)[::2]], (0, 1, 2), target, dtype)


def list_variable(a, b):
    pieces = [a, b]
    return np.sum(np.concatenate(pieces))


def test_list_variable_as_a_sequence_argument():
    # a list literal bound to a name is a value like a tuple (tests/test_constructs_real.py)
    ga, gb = srcgrad.grad(list_variable, wrt=(0, 1), target="python")(np.ones(2), np.ones(3))
    np.testing.assert_array_equal(ga, np.ones(2))
    np.testing.assert_array_equal(gb, np.ones(3))


# ------------------------------------------------------------------------------------------------
# Gathers with repeated labels
# ------------------------------------------------------------------------------------------------

def gather_rows_cols(logp, y):
    picked = logp[np.arange(logp.shape[0]), y]
    return np.sum(picked * picked) + np.sum(np.sin(picked))


def gather_1d(v, idx):
    g = v[idx]
    return np.sum(g * g)


def test_gather_repeated_labels_accumulate(target):
    rng = np.random.default_rng(16)
    logp = rand(rng, 5, 3)
    y = np.array([2, 2, 0, 2, 1])
    g = check(gather_rows_cols, [logp, y], 0, target)
    rows = np.arange(5)
    expected = np.zeros_like(logp)
    picked = logp[rows, y]
    np.add.at(expected, (rows, y), 2 * picked + np.cos(picked))
    np.testing.assert_allclose(g, expected, rtol=1e-12)


def test_gather_1d_repeated_index_accumulates(target):
    v = np.array([0.5, -1.0, 2.0])
    idx = np.array([0, 2, 2, 2, 1, 0])
    g = check(gather_1d, [v, idx], 0, target)
    np.testing.assert_allclose(g, [2 * 0.5 * 2, 2 * -1.0, 2 * 2.0 * 3])


# ------------------------------------------------------------------------------------------------
# Creation
# ------------------------------------------------------------------------------------------------

def creation(x):
    z = np.zeros(x.shape) + 1.5
    o = np.ones((x.shape[0], x.shape[1]))
    e = np.empty(x.shape[1])
    for j in range(x.shape[1]):
        e[j] = j * 0.5
    zl = np.zeros_like(x) + x
    ol = np.ones_like(x) * 2.0
    el = np.empty_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            el[i, j] = x[i, j] * x[i, j]
    ar = np.arange(x.shape[1])
    c = x.copy()
    c[0, 0] = 3.0
    return np.sum(z * x) + np.sum(o * np.sin(x)) + np.sum(e * x) + np.sum(zl * ol * x) + np.sum(el) \
        + np.sum(ar * x) + np.sum(c * x) + np.sum(np.copy(x) * x)


def test_creation(target):
    check(creation, [np.random.default_rng(17).uniform(-1, 1, (3, 4))], 0, target)


def creation_full(x):
    return np.sum(np.full(x.shape, 3.0) * x)


def creation_full_like(x):
    return np.sum(np.full_like(x, 2.0) * x)


def test_creation_full():
    check(creation_full, [np.linspace(0.1, 0.9, 4)], 0, "python")


def test_creation_full_like():
    check(creation_full_like, [np.linspace(0.1, 0.9, 4)], 0, "python")


def astype_sum(x):
    y = x.astype(np.float32)
    return np.sum(np.sin(y))


def test_astype_passes_gradient():
    x = np.linspace(0.1, 0.9, 4).astype(np.float32)
    g = srcgrad.grad(astype_sum, target="python")(x)
    np.testing.assert_allclose(g, np.cos(x), rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Numerically stable patterns
# ------------------------------------------------------------------------------------------------

def stable_patterns(z, x, y):
    """z (n,k) logits, x (p,) any sign, y (n,) integer labels."""
    m = np.max(z, axis=1, keepdims=True)
    lse = np.log(np.sum(np.exp(z - m), axis=1)) + m[:, 0]
    ce = np.mean(lse - z[np.arange(z.shape[0]), y])
    mx = np.max(x)
    lse_all = np.log(np.sum(np.exp(x - mx))) + mx
    logsig = -(np.maximum(-x, 0.0) + np.log(1.0 + np.exp(-np.abs(x))))
    sig = np.exp(logsig)
    return ce + lse_all + np.sum(sig * sig) + np.sum(logsig)


def test_stable_patterns(target):
    rng = np.random.default_rng(18)
    z = rand(rng, 5, 3) * 3
    x = rand(rng, 6) * 4
    y = np.array([0, 2, 2, 1, 2])
    check(stable_patterns, [z, x, y], (0, 1), target)


def test_stable_patterns_large_logits(target):
    """Logits of size 1000: the max-subtracted forms stay finite and exact."""
    z = np.array([[1000.0, 998.0, 990.0], [-1000.0, -1001.0, -999.0]])
    x = np.array([800.0, -800.0, 1.0])
    y = np.array([1, 2])
    gz, gx = gradfn(stable_patterns, (0, 1), target)(z, x, y)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(2), y] -= 1.0
    np.testing.assert_allclose(gz, p / 2, rtol=1e-10, atol=1e-300)
    assert np.all(np.isfinite(gx))


# ------------------------------------------------------------------------------------------------
# Models: MLP, GMM, logistic regression
# ------------------------------------------------------------------------------------------------

from srcgrad.training.mlp import mlp_loss  # noqa: E402  (the one MNIST model)


def gmm_objective(alpha, mu, s, X):
    """Negative mean log-likelihood of an isotropic GMM: alpha (K,) log-weights, mu (K,d), s (K,) log-std."""
    d = X.shape[1]
    sq = np.sum(X * X, axis=1, keepdims=True) - 2.0 * (X @ mu.T) + np.sum(mu * mu, axis=1)
    amax = np.max(alpha)
    logw = alpha - (np.log(np.sum(np.exp(alpha - amax))) + amax)
    logp = logw - d * s - 0.5 * sq * np.exp(-2.0 * s)
    m = np.max(logp, axis=1, keepdims=True)
    ll = np.log(np.sum(np.exp(logp - m), axis=1)) + m[:, 0]
    return -np.mean(ll)


def logistic_regression(w, b, X, y):
    z = X @ w + b
    softplus = np.maximum(-z, 0.0) + np.log(1.0 + np.exp(-np.abs(z)))
    return np.mean(softplus + (1.0 - y) * z) + 0.01 * np.sum(w * w)


def _mlp_args(rng):
    X = rng.standard_normal((6, 20))
    return [rng.standard_normal((20, 8)) * 0.3, rng.standard_normal(8) * 0.1,
            rng.standard_normal((8, 3)) * 0.3, rng.standard_normal(3) * 0.1, X, np.array([0, 2, 1, 2, 2, 0])]


def test_mlp_loss(target):
    check(mlp_loss, _mlp_args(np.random.default_rng(19)), (0, 1, 2, 3), target)


def test_mlp_loss_float32(target):  # noqa: D103
    check(mlp_loss, _mlp_args(np.random.default_rng(20)), (0, 1, 2, 3), target, dtype=np.float32)


def test_gmm_objective(target):
    rng = np.random.default_rng(21)
    args = [rng.standard_normal(3) * 0.5, rng.standard_normal((3, 2)), rng.standard_normal(3) * 0.3,
            rng.standard_normal((7, 2))]
    check(gmm_objective, args, (0, 1, 2), target)


def test_logistic_regression(target):
    rng = np.random.default_rng(22)
    X = rng.standard_normal((8, 3))
    y = (rng.uniform(size=8) > 0.5).astype(np.float64)
    check(logistic_regression, [rng.standard_normal(3), 0.3, X, y], (0, 1), target)


# ------------------------------------------------------------------------------------------------
# The benchmark's vectorized ADBench GMM (benchmarks/lib/programs.py: gmm_vectorized)
# ------------------------------------------------------------------------------------------------

def _benchmark_programs():
    import sys
    from pathlib import Path
    root = str(Path(__file__).resolve().parents[1])       # the benchmarks package
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks.lib import programs
    return programs


@pytest.mark.parametrize("target", SLOW_CPU)
def test_gmm_vectorized_adbench(target):
    """The formulation benchmarks/array_bench.py times (Cholesky factors gathered from icf, one 2-d
    matmul, log-sum-exp over components, Wishart prior): equal to the loop objective, and its
    gradient matches finite differences (compiled: the cpu target)."""
    P = _benchmark_programs()
    K, d, n = 4, 3, 7
    loop_args = list(P.make_args(P.PROGRAMS["gmm"], {"d": d, "K": K, "n": n}, seed=23))
    loop_args[4:6] = [1.3, 2]              # a non-trivial Wishart prior
    args = loop_args + list(P.gmm_vectorized_index(K, d))
    assert P.gmm_vectorized(*args) == pytest.approx(P.gmm_objective(*loop_args), rel=1e-12)
    check(P.gmm_vectorized, args, (0, 1, 2), target)


# ------------------------------------------------------------------------------------------------
# Shape errors in user code
# ------------------------------------------------------------------------------------------------

def bad_matmul(a, b):
    h = a @ b
    return np.sum(h)


def bad_broadcast(a, b):
    return np.sum(a + b)


@pytest.mark.parametrize("f", [bad_matmul, bad_broadcast])
def test_shape_error_is_a_clear_error(target, f):
    with pytest.raises((ValueError, srcgrad.SrcgradError)) as info:
        gradfn(f, (0, 1), target)(np.ones((3, 4)), np.ones((5, 2)))
    message = str(info.value)
    assert "TypingError" not in message and "nopython" not in message, message
    assert type(info.value).__module__.split(".")[0] != "numba", type(info.value)


@pytest.mark.parametrize("f,text", [(bad_matmul, "h = a @ b"), (bad_broadcast, "return np.sum(a + b)")])
def test_shape_error_names_user_line(target, f, text):
    """Issue #3 (more cases in test_shape_errors.py): file, line, source text and shapes."""
    with pytest.raises(srcgrad.ShapeError) as info:
        gradfn(f, (0, 1), target)(np.ones((3, 4)), np.ones((5, 2)))
    line = f.__code__.co_firstlineno + 1
    message = str(info.value)
    assert f"test_arrays.py, line {line} in {f.__name__}: {text}: " in message, message
    assert "(3, 4)" in message and "(5, 2)" in message, message


@pytest.mark.parametrize("b_shape,why", [((3, 4, 2), "not aligned"),
                                         ((2, 5, 2), "cannot be broadcast")])
def test_stacked_shape_error_names_user_line(target, b_shape, why):
    with pytest.raises(srcgrad.ShapeError) as info:
        gradfn(bad_matmul, (0, 1), target)(np.ones((3, 4, 5)), np.ones(b_shape))
    message = str(info.value)
    line = bad_matmul.__code__.co_firstlineno + 1
    assert f"test_arrays.py, line {line} in bad_matmul: h = a @ b: " in message, message
    assert why in message and "(3, 4, 5)" in message and str(b_shape) in message, message


# ------------------------------------------------------------------------------------------------
# A user variable named like a generated temporary
# ------------------------------------------------------------------------------------------------

def name_clash(s, M):
    t1 = s * M + M
    return np.sum(t1)


def test_user_name_like_generated_temporary(target):
    """Regression: `t1` and the temporary `_t1` once shared the adjoint `_adj_t1` (doubled gradient)."""
    M = np.arange(1.0, 7.0).reshape(2, 3)
    g = check(name_clash, [0.7, M], 0, target)
    assert g == pytest.approx(M.sum(), rel=1e-12)
