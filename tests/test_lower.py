"""Loop fusion (``srcgrad/backends/cpu/fusion.py``, cpu target): the loop nests must give the results of
the whole-array statements they replace.

Each program is differentiated on the cpu target (fused) and on the python target (the same
statements run by NumPy, unfused), and values and gradients are compared: shapes and dtypes equal,
values equal to rounding (NumPy sums pairwise, the compiled code in order). The MLP is also
compared with the cpu target with fusion switched off (its own code cache: the cache does not know
the switch). The cases cover bias rows and keepdims columns, size-1 stretching the generated code
cannot see (the loop nest's size test fails and the statements run as written), non-contiguous
inputs, float32, float64 and a mix of both, int operands and Python floats, 1- and 2-d arrays,
ties and NaN in row maxima, empty arrays and shape errors.

Numba compiles each (function, argument types) once, so the cases share compiled functions:
several shapes per compile. The fused code exists once the code generator calls
the cpu backend's lowering step (srcgrad/backends, run by srcgrad/program.py); without it these tests skip (fail under
CI=true, tests/mission.py).
"""
import contextlib
import os
import tempfile

import numpy as np
import pytest

import srcgrad
from srcgrad.backends import backend
from mission import needs

# ------------------------------------------------------------------------------------------------
# Programs
# ------------------------------------------------------------------------------------------------

def mlp(W1, b1, W2, b2, X, y):
    h = np.maximum(X @ W1 + b1, 0.0)
    z = h @ W2 + b2
    m = np.max(z, axis=1, keepdims=True)
    lse = np.log(np.sum(np.exp(z - m), axis=1)) + m[:, 0]
    return np.mean(lse - z[np.arange(X.shape[0]), y])


def elementwise(x, w, b, k, s):
    """A chain with a bias broadcast along rows (column sums in reverse), int operands and a
    scalar argument."""
    h = np.tanh(x * w + b)
    u = np.maximum(h, 0.0) / (1.0 + x * x) + k * s
    return np.sum(h * h) + np.sum(u * x) - np.sum(k / (x * x + 1.0))


def rows(z, c, y):
    """Row max with keepdims, row sum, a view, a row gather (a cross-entropy), np.where,
    np.minimum and a row min broadcast back."""
    m = np.max(z, axis=1, keepdims=True)
    lse = np.log(np.sum(np.exp(z - m), axis=1)) + m[:, 0]
    a = np.where(z > c, z * 2.0, c - 1.0)
    return np.mean(lse - z[np.arange(z.shape[0]), y]) + \
        np.sum(np.minimum(a, 0.5) * np.min(z, axis=1, keepdims=True))


def column_sums(x, b):
    """The adjoint of ``b`` sums over rows; with b of shape (1, n) (a size-1 dimension the
    code cannot see) the statements run as written."""
    return np.sum(np.sin(x + b) * x)


# ------------------------------------------------------------------------------------------------
# Harness
# ------------------------------------------------------------------------------------------------

_DIRS = {}
_FUNCS = {}


@contextlib.contextmanager
def fusion(enabled):
    """Generate with loop fusion on or off, each setting in a code cache of its own."""
    old_flag, old_dir = backend("cpu").fuse, os.environ.get("SRCGRAD_CACHE_DIR")
    if enabled not in _DIRS:
        _DIRS[enabled] = tempfile.mkdtemp(prefix=f"srcgrad-fuse-{int(enabled)}-")
    backend("cpu").fuse = enabled
    os.environ["SRCGRAD_CACHE_DIR"] = _DIRS[enabled]
    try:
        yield
    finally:
        backend("cpu").fuse = old_flag
        if old_dir is None:
            os.environ.pop("SRCGRAD_CACHE_DIR", None)
        else:
            os.environ["SRCGRAD_CACHE_DIR"] = old_dir


def run(f, wrt, args, target="cpu", fused=True):
    """(value, gradients tuple), source of the specialization."""
    with fusion(fused):
        key = (f.__name__, wrt, target, fused)
        if key not in _FUNCS:
            _FUNCS[key] = srcgrad.value_and_grad(f, wrt=wrt, target=target)
        fn = _FUNCS[key]
        value, grads = fn(*args)
        return (value, grads if isinstance(grads, tuple) else (grads,)), fn.source_for(*args)


def assert_same(a, b, exact):
    """Equal values and gradients: bit for bit, or to rounding (relative to the largest)."""
    (v1, g1), (v0, g0) = a, b
    low = any(isinstance(g, np.ndarray) and g.dtype == np.float32 for g in g0)
    eps = 0 if exact else 2e-6 if low else 1e-12
    np.testing.assert_allclose(v1, v0, rtol=eps, atol=eps)
    for x, y in zip(g1, g0):
        assert type(x) is type(y)
        if isinstance(x, np.ndarray):
            assert x.shape == y.shape and x.dtype == y.dtype, (x.shape, y.shape, x.dtype, y.dtype)
        scale = float(np.max(np.abs(y))) if np.size(y) else 0.0
        np.testing.assert_allclose(x, y, rtol=eps, atol=eps * max(scale, 1.0))


def compare(f, wrt, args, fused=True):
    """The fused cpu code agrees with the python target; returns the cpu source. ``fused``:
    whether the arguments' sizes let the loop nests run (else the statements run as written,
    which must agree too)."""
    cpu, src = run(f, wrt, args)
    ref, _ = run(f, wrt, args, target="python")
    assert_same(cpu, ref, exact=False)
    assert "loop fusion" in src, src
    if not fused:
        assert "when the sizes allow" in src
    return src


def _generator_fuses():
    with fusion(True):
        src = srcgrad.grad(column_sums, wrt=0).source_for(np.ones((2, 3)), np.ones(3))
    return "loop fusion" in src


pytestmark = needs(_generator_fuses(), "loop fusion is not wired in: the code generator does not "
                   "run the cpu backend's lowering (backends.CpuBackend.lower, program.py)")


def rand(rng, *shape, dtype=np.float64):
    return rng.uniform(-1.5, 1.5, shape).astype(dtype)


def mlp_args(rng, batch, dtype):
    return [rand(rng, 12, 9, dtype=dtype), rand(rng, 9, dtype=dtype), rand(rng, 9, 5, dtype=dtype),
            rand(rng, 5, dtype=dtype), rand(rng, batch, 12, dtype=dtype), rng.integers(0, 5, batch)]


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------

def test_mlp_float32_equals_unfused_compiled_code():
    """The same operations in the same order: bit for bit the unfused compiled results."""
    rng = np.random.default_rng(0)
    for batch in (7, 1):
        args = mlp_args(rng, batch, np.float32)
        fused, src = run(mlp, (0, 1, 2, 3), args)
        unfused, src0 = run(mlp, (0, 1, 2, 3), args, fused=False)
        assert "loop fusion" not in src0
        assert_same(fused, unfused, exact=True)
        assert_same(fused, run(mlp, (0, 1, 2, 3), args, target="python")[0], exact=False)
    adjoint = src[src.index("def mlp_adjoint"):]
    # bias + ReLU, the cross-entropy's rows, and the two sweeps' adjoints: one loop nest each
    assert adjoint.count("loop fusion") == 4


def test_mlp_float64_against_finite_differences():
    from conftest import check_grad
    rng = np.random.default_rng(3)
    with fusion(True):
        check_grad(mlp, mlp_args(rng, 5, np.float64), wrt=(0, 1, 2, 3), target="cpu")


def test_elementwise_shapes():
    rng = np.random.default_rng(1)
    k = rng.integers(-3, 4, (5, 4))
    compare(elementwise, (0, 1, 2, 4), [rand(rng, 5, 4), rand(rng, 4), rand(rng, 4), k, 0.7])
    compare(elementwise, (0, 1, 2, 4), [rand(rng, 1, 4), rand(rng, 4), rand(rng, 4), k[:1], 0.7])
    compare(elementwise, (0, 1, 2, 4), [rand(rng, 0, 4), rand(rng, 4), rand(rng, 4), k[:0], 0.7])
    # a size-1 vector stretched over the columns: the statements run as written
    compare(elementwise, (0, 1, 2, 4), [rand(rng, 5, 4), rand(rng, 1), rand(rng, 4), k, 0.7],
            fused=False)


def test_elementwise_float32_and_mixed():
    rng = np.random.default_rng(2)
    k = rng.integers(-3, 4, (5, 4))
    f32 = {"dtype": np.float32}
    # float32 arrays with a Python float (float64 for Numba: the element types must follow)
    compare(elementwise, (0, 1, 2, 4), [rand(rng, 5, 4, **f32), rand(rng, 4, **f32),
                                        rand(rng, 4, **f32), k, 0.7])
    # float64 working precision with one float32 array
    compare(elementwise, (0, 1, 2, 4), [rand(rng, 5, 4, **f32), rand(rng, 4), rand(rng, 4), k, 0.7])


def test_elementwise_non_contiguous():
    rng = np.random.default_rng(3)
    k = rng.integers(-3, 4, (8, 12))[::2, ::-3]
    compare(elementwise, (0, 1, 2, 4), [rand(rng, 8, 12)[::2, ::-3], rand(rng, 8)[::2],
                                        rand(rng, 4, 4).T[1], k, 0.7])


def test_rows():
    rng = np.random.default_rng(4)
    z = rand(rng, 6, 5)
    z[2, 1] = z[2, 3] = 3.0                # a tie: the first maximum takes the gradient
    y = rng.integers(0, 5, 6)
    compare(rows, (0, 1), [z, rand(rng, 6, 5), y])
    compare(rows, (0, 1), [z[:1], rand(rng, 1, 5), y[:1]])
    z[1, 2] = np.nan                       # NaN wins the row maximum
    (v1, g1), _ = run(rows, (0, 1), [z, z, y])
    (v0, g0), _ = run(rows, (0, 1), [z, z, y], target="python")
    assert np.isnan(v1) and np.isnan(v0)
    for a, b in zip(g1, g0):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=1e-11)


def test_keepdims_column_sums():
    rng = np.random.default_rng(5)
    compare(column_sums, (0, 1), [rand(rng, 5, 4), rand(rng, 5, 4)])
    compare(column_sums, (0, 1), [rand(rng, 5, 4), rand(rng, 1, 4)], fused=False)


def test_errors_are_the_python_targets():
    rng = np.random.default_rng(7)
    k = rng.integers(-3, 4, (5, 4))
    bad = [rand(rng, 5, 4), rand(rng, 3), rand(rng, 4), k, 0.7]       # 3 columns against 4
    empty_rows = [np.zeros((3, 0)), np.zeros((3, 0)), np.zeros(3, dtype=np.int64)]  # max of nothing
    for f, wrt, args in ((elementwise, (0, 1, 2, 4), bad), (rows, (0, 1), empty_rows)):
        errors = []
        for target in ("cpu", "python"):
            with pytest.raises(Exception) as info:
                run(f, wrt, args, target=target)
            errors.append(type(info.value))
        assert errors[0] is errors[1]


def test_python_target_is_not_fused():
    _, src = run(column_sums, (0, 1), [np.ones((2, 3)), np.ones((2, 3))], target="python")
    assert "loop fusion" not in src


def test_fused_code_names_the_statements():
    rng = np.random.default_rng(8)
    k = rng.integers(-3, 4, (5, 4))
    src = compare(elementwise, (0, 1, 2, 4), [rand(rng, 5, 4), rand(rng, 4), rand(rng, 4), k, 0.7])
    assert "# h = np.tanh(" in src                       # each statement above its element code
    assert "for _i0 in loop_range(" in src and "for _i1 in loop_range(" in src


# ------------------------------------------------------------------------------------------------
# Large arrays on huge pages, matrix products through the backend (inert until code generation
# imports ``huge_pages`` and ``matmul``: codegen.RUNTIME_NAMES)
# ------------------------------------------------------------------------------------------------

def test_backend_matmul_and_huge_pages():
    import numba

    from srcgrad.backends import cpu

    @numba.njit
    def both(a, b):
        return cpu.matmul(a, b), a @ b

    @numba.njit
    def fresh(n):
        a = cpu.huge_pages(np.empty(n))
        a[:] = 1.5
        return a

    rng = np.random.default_rng(7)
    for dtype in (np.float64, np.float32):
        a, b = rand(rng, 300, 7, dtype=dtype), rand(rng, 9, 300, dtype=dtype)
        for x, y in ((b, a), (a.T, b.T), (b[:, ::2], a[::2])):     # C, F and strided
            got, want = both(x, y)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
    x, y = rand(rng, 2, 3), rand(rng, 3, 4)
    with pytest.raises(ValueError):
        both(x, x)
    for n in (0, 5, 1 << 20):            # under and over the 4 MiB threshold
        out = fresh(n)
        assert out.shape == (n,) and np.all(out == 1.5)


@contextlib.contextmanager
def backend_helpers():
    """Code generation that imports ``huge_pages`` and ``matmul`` (a code cache of its own)."""
    from srcgrad import codegen
    old_names, old_dir = list(codegen.RUNTIME_NAMES), os.environ.get("SRCGRAD_CACHE_DIR")
    codegen.RUNTIME_NAMES[:] = old_names + [n for n in ("huge_pages", "matmul") if n not in old_names]
    os.environ["SRCGRAD_CACHE_DIR"] = tempfile.mkdtemp(prefix="srcgrad-helpers-")
    try:
        yield
    finally:
        codegen.RUNTIME_NAMES[:] = old_names
        if old_dir is None:
            os.environ.pop("SRCGRAD_CACHE_DIR", None)
        else:
            os.environ["SRCGRAD_CACHE_DIR"] = old_dir


def test_fused_code_with_backend_helpers():
    rng = np.random.default_rng(8)
    args = mlp_args(rng, 600, np.float64)      # h is 600 x 9: over no threshold, code path only
    ref = srcgrad.value_and_grad(mlp, wrt=(0, 1, 2, 3), target="python")(*args)
    with backend_helpers():
        fn = srcgrad.value_and_grad(mlp, wrt=(0, 1, 2, 3), target="cpu")
        got = fn(*args)
        src = fn.source_for(*args)
    assert "huge_pages(np.empty(" in src and "matmul(" in src
    assert_same(got, ref, exact=False)


def product_plus(x, w, c):
    """The reverse group of ``y = t + c`` ends with an alias (``_adj_t = unbroadcast(_adj_y, t)``)
    right after a source-line comment."""
    t = x @ w
    y = t + c
    return np.sum(np.sin(y))


def test_group_ending_with_an_alias_runs_as_written():
    rng = np.random.default_rng(9)
    compare(product_plus, (0, 1), [rand(rng, 5, 4), rand(rng, 4, 3), rand(rng, 5, 3)])
    # t (1, 3) stretched over c's rows: the size test fails, the statements run as written
    src = compare(product_plus, (0, 1), [rand(rng, 1, 4), rand(rng, 4, 3), rand(rng, 5, 3)],
                  fused=False)
    adjoint = src[src.index("def product_plus_adjoint"):]
    # loop nest (sizes equal there: the gradient itself) and fallback (as written)
    assert "_adj_t = _adj_y\n" in adjoint and adjoint.count("_adj_t = unbroadcast(_adj_y, t)") == 1
