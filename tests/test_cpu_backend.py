"""Helpers of the cpu backend (backends/cpu.py) tested directly, in compiled code.

Matrix products call NumPy's own BLAS by symbol name: every memory layout BLAS can read without a copy (C and F order, row-strided and sliced views),
layouts it cannot (reversed, strided columns), empty and degenerate shapes, both float widths,
and the products the matmul adjoints take (g @ b.T, a.T @ g), against float64 NumPy.
Row/column maxima and minima are plain loops: NumPy's results for NaN, infinities and ties, and
its error for an empty reduction.
"""
import numba
import numpy as np
import pytest

from mission import missing
from srcgrad.backends import cpu


@numba.njit
def product(a, b):
    return cpu.matmul(a, b)


@numba.njit
def grad_left(g, a, b):
    return cpu.matmul_grad_left(g, a, b)


@numba.njit
def grad_right(g, a, b):
    return cpu.matmul_grad_right(g, a, b)


SHAPES = [(5, 7, 3), (1, 7, 3), (5, 1, 3), (5, 7, 1), (1, 1, 1), (0, 3, 2), (3, 0, 2), (3, 2, 0),
          (64, 784, 10)]


def layouts(m, k, n, dtype, rng):
    """Pairs (a, b) with a of shape (m, k) and b of shape (k, n) in many memory layouts."""
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    wide = rng.standard_normal((2 * m + 1, k + 3)).astype(dtype)
    tall = rng.standard_normal((n + 2, 2 * k + 1)).astype(dtype)
    return {
        "C,C": (a, b),
        "F,C": (np.asfortranarray(a), b),
        "C,F": (a, np.asfortranarray(b)),
        "rows strided and cut": (wide[::2, 1:k + 1][:m], b),
        "transposed view of a strided block": (a, tall[1:n + 1, ::2][:, :k].T),
        "reversed (copied)": (a[:, ::-1], b[::-1]),
        "x.T of an F array": (np.ascontiguousarray(a.T).T, b),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_matmul_layouts(m, k, n, dtype):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    for name, (a, b) in layouts(m, k, n, dtype, rng).items():
        assert a.shape == (m, k) and b.shape == (k, n), name
        got = product(a, b)
        expected = a.astype(np.float64) @ b.astype(np.float64)
        assert got.dtype == dtype and got.shape == (m, n), name
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * max(1, k), err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_matmul_adjoint_products(m, k, n, dtype):
    rng = np.random.default_rng(7)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    g = rng.standard_normal((m, n)).astype(dtype)
    a64, b64, g64 = (x.astype(np.float64) for x in (a, b, g))
    np.testing.assert_allclose(grad_left(g, a, b), g64 @ b64.T, rtol=tol, atol=tol * max(1, n))
    np.testing.assert_allclose(grad_right(g, a, b), a64.T @ g64, rtol=tol, atol=tol * max(1, m))


def test_matmul_shape_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match="inner dimensions"):
        product(np.ones((3, 4)), np.ones((5, 2)))


def test_matmul_nan_propagates():
    a = np.ones((3, 4))
    a[1, 2] = np.nan
    out = product(a, np.ones((4, 2)))
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()


def test_numpy_blas_found_where_numpy_bundles_openblas():
    """NumPy wheels bundle OpenBLAS: there srcgrad must find its gemm (else it silently falls
    back to Numba's np.dot, which measured 7-16% slower on the MLP's products)."""
    config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    if config.get("name") != "scipy-openblas":
        missing(f"NumPy's BLAS here is {config.get('name')!r}, not a bundled OpenBLAS")
    assert cpu.NUMPY_BLAS


@numba.njit
def row_max(x):
    return cpu.reduce_max(x, 1, False)


@numba.njit
def column_min_kept(x):
    return cpu.reduce_min(x, 0, True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_and_column_extrema_follow_numpy(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 5)).astype(dtype)
    x[0, 3] = np.nan                        # NaN anywhere in a row: the row's result is NaN
    x[1, 0] = np.nan
    x[2] = [np.inf, -np.inf, 1.0, np.inf, 0.0]
    x[3] = 2.0                              # ties
    x[4, 4] = -np.inf
    np.testing.assert_array_equal(row_max(x), np.max(x, axis=1))
    np.testing.assert_array_equal(column_min_kept(x), np.min(x, axis=0, keepdims=True))
    assert row_max(x).dtype == dtype


def test_extremum_of_an_empty_row_is_numpys_error():
    with pytest.raises(ValueError, match="zero-size array"):
        row_max(np.ones((2, 0)))


# ---- stacks of matrices and summing gradients back over broadcast axes -------------------------

# Each new pair of ranks is a fresh compile of product/grad_left/grad_right (5-10 s). A vector with
# a stack on either side, (5,) @ (3, 5, 2) and (3, 4, 5) @ (5,), is slow: the same cpu.matmul,
# matmul_grad_left and matmul_grad_right at those ranks are compiled by the default
# tests/test_arrays.py::test_batched_products[cpu-s_shape0-t_shape0] (v @ T and S @ v, checked
# against finite differences) in the default run.
@pytest.mark.parametrize("a_shape,b_shape", [((3, 4, 5), (3, 5, 2)), ((2, 1, 4, 5), (3, 5, 2)),
                                             ((4, 5), (3, 5, 2)),
                                             pytest.param((5,), (3, 5, 2), marks=pytest.mark.slow),
                                             pytest.param((3, 4, 5), (5,), marks=pytest.mark.slow),
                                             ((3, 0, 5), (3, 5, 2))])
def test_stacked_product_and_adjoints_match_numpy(a_shape, b_shape):
    rng = np.random.default_rng(len(a_shape) + len(b_shape))
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    expected = a @ b
    np.testing.assert_allclose(product(a, b), expected, rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(expected.shape)
    from srcgrad import runtime
    left, right = runtime.batched_matmul_grads(g, a, b)     # NumPy's matmul and sums
    np.testing.assert_allclose(grad_left(g, a, b), left, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_right(g, a, b), right, rtol=1e-12, atol=1e-12)
    # <g, a @ b> is linear in each operand: its directional derivative along da is <left, da>
    da = rng.standard_normal(a_shape)
    assert np.isclose(np.sum(g * (da @ b)), np.sum(left * da))


def test_stacked_product_shape_errors():
    with pytest.raises(ValueError, match="inner dimensions"):
        product(np.ones((3, 4, 5)), np.ones((3, 4, 2)))
    with pytest.raises(ValueError):
        product(np.ones((3, 4, 5)), np.ones((2, 5, 2)))     # batch axes 3 and 2 do not broadcast


@numba.njit
def sum_back(gradient, out):
    cpu.sum_broadcast_into(gradient, out)
    return out


@pytest.mark.parametrize("g_shape,like", [((3, 4, 5), (1, 4, 1)), ((2, 3, 4, 5), (3, 1, 5)),
                                          ((3, 4, 5), (5,)), ((3, 4, 5), (3, 4, 5)),
                                          ((2, 3, 1), (1, 1)), ((0, 3), (1, 3))])
def test_sum_broadcast_into_matches_numpy(g_shape, like):
    rng = np.random.default_rng(sum(g_shape))
    g = rng.standard_normal(g_shape)
    from srcgrad import runtime
    expected = np.asarray(runtime.unbroadcast(g, np.zeros(like))).reshape(like)
    np.testing.assert_allclose(sum_back(g, np.zeros(like)), expected, rtol=1e-12, atol=1e-12)


def test_sum_broadcast_into_rejects_shapes_that_do_not_broadcast():
    with pytest.raises(ValueError, match="does not broadcast"):
        sum_back(np.ones((3, 4)), np.zeros((2, 4)))
