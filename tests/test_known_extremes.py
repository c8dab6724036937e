"""The adjoint of a row maximum (minimum) whose maxima an array of the function keeps
(``m = np.max(z, axis=1, keepdims=True)``, the softmax's stability term): the fused cpu loop looks
for the row's first element equal to ``m`` (or its first NaN where ``m`` is NaN) instead of
running the arg-max again (backends/cpu/fusion_facts._known_extremes). The element must be the
one the arg-max loop and the python target pick: the first of tied maxima, the first NaN, the
first element of a row of -inf; an array written after the maximum keeps the arg-max loop.
"""
import numpy as np

import srcgrad

from conftest import check_grad


def softmax_ce(z, y):
    m = np.max(z, axis=1, keepdims=True)
    lse = np.log(np.sum(np.exp(z - m), axis=1)) + m[:, 0]
    return np.mean(lse - z[np.arange(z.shape[0]), y])


def row_extremes(x, w, v):
    hi = np.max(x, axis=1)
    lo = np.min(x, axis=1, keepdims=True)
    return np.sum(hi * w) + np.sum(lo * v) + np.sum(x * x)


def written_after(x, w):
    z = x * 1.0
    m = np.max(z, axis=1)
    z[:, 0] = 2.0 * z[:, 1]
    return np.sum(m * w) + np.sum(z * z)


def _adjoint(grad_fn, *args):
    grad_fn(*args)                      # the source of the specialization for these arguments
    source = grad_fn.source
    return source[source.index("_adjoint("):]


def test_softmax_cross_entropy_finds_the_maximum_by_equality():
    rng = np.random.default_rng(4)
    z, y = rng.standard_normal((7, 5)) * 3, rng.integers(0, 5, 7)
    g = srcgrad.grad(softmax_ce, wrt=0, target="cpu")
    adjoint = _adjoint(g, z, y)
    assert "== m[_i0, 0] or" in adjoint and "_best = " not in adjoint
    check_grad(softmax_ce, (z, y), wrt=0, gradfn=g)
    check_grad(softmax_ce, (z, y), wrt=0, target="python")
    z[1, 3] = z[1, 1] = z[1].max() + 1.0               # a tie: the first takes the max's part
    z[2, 4] = np.nan                                    # NaN in, NaN out
    reference = srcgrad.grad(softmax_ce, wrt=0, target="python")(z, y)
    got = g(z, y)
    np.testing.assert_allclose(got, reference, rtol=1e-13, atol=1e-15)
    assert np.isnan(got[2]).all() and np.isfinite(np.delete(got, 2, axis=0)).all()


def test_the_element_is_the_arg_extremes_one_float32_and_64():
    for dtype in (np.float32, np.float64):
        x = np.random.default_rng(5).standard_normal((6, 4)).astype(dtype)
        x[0] = [1.0, 3.0, 3.0, -1.0]                    # ties
        x[1] = [2.0, np.nan, 5.0, np.nan]               # the first NaN
        x[2] = -np.inf                                  # a row of -inf: its first element
        x[3] = [np.inf, 0.0, np.inf, np.inf]
        x[4] = [-0.0, 0.0, -1.0, 0.0]                   # signed zeros tie
        w, v = np.arange(1.0, 7.0).astype(dtype), np.arange(2.0, 8.0).astype(dtype)[:, None]
        g = srcgrad.grad(row_extremes, wrt=0, target="cpu")
        adjoint = _adjoint(g, x, w, v)
        assert adjoint.count("_best_index = ") == 2 and "_best = " not in adjoint
        expected = srcgrad.grad(row_extremes, wrt=0, target="python")(x, w, v)
        got = g(x, w, v)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, expected)
        by_numpy = 2 * x                                # np.argmax/np.argmin's elements
        rows = np.arange(6)
        by_numpy[rows, np.argmin(x, axis=1)] += v[:, 0]
        by_numpy[rows, np.argmax(x, axis=1)] += w
        np.testing.assert_array_equal(got, by_numpy)
        assert np.argmax(x[1]) == 1 and np.argmax(x[0]) == 1 and np.argmax(x[2]) == 0


def test_finite_differences_of_row_extremes():
    x = np.random.default_rng(6).standard_normal((5, 3))
    w, v = np.arange(1.0, 6.0), np.arange(2.0, 7.0)[:, None]
    for target in ("python", "cpu"):
        check_grad(row_extremes, (x, w, v), wrt=0, target=target)


def test_an_array_written_after_its_maximum_keeps_the_arg_max_loop():
    x, w = np.random.default_rng(7).standard_normal((4, 3)), np.arange(1.0, 5.0)
    g = srcgrad.grad(written_after, wrt=0, target="cpu")
    assert "== m[" not in _adjoint(g, x, w)
    check_grad(written_after, (x, w), wrt=0, gradfn=g)
    np.testing.assert_allclose(g(x, w), srcgrad.grad(written_after, wrt=0, target="python")(x, w),
                               rtol=1e-13, atol=1e-15)
