"""Cuts in the vectorized GMM gradient's cold compile (issue 17): what they change must stay correct.

* a lone elementwise statement (or reduction, or its adjoint) is a loop nest when it needs no
  size test: less code for Numba than its broadcasting ufunc loops or a helper compiled per
  signature; the nest of an ``expand_reduced`` takes its sizes from the array it spreads over;
* the cpu adjoints start from ``np.zeros(x.shape, x.dtype.type)``, not ``np.zeros_like(x)``;
* the matrix products of C- or F-ordered operands (forward and both adjoints) all go through
  one ``gemm_c`` per dtype (C operands: called straight from the caller, no wrapper compiled);
* whole-array ``np.sum``/``np.max``/``np.min`` into a scalar and the max adjoint of a vector are
  loop nests; statements hoisted above a nest are fused among themselves; ``x = unbroadcast(g,
  like)`` of sizes known equal is ``x = g``; ``np.zeros(shape)`` gets NumPy's default dtype written
  out.
"""
import numba
import numpy as np
import pytest

import srcgrad
from srcgrad.backends import cpu

from conftest import check_grad


def lone_statements(x, w, a):
    e = np.exp(x)                          # a statement alone between two unfusable ones
    s = np.sum(e)
    rows = np.sum(x * w, axis=1)           # a row reduction alone
    m = np.max(a)
    return s + np.sum(rows * rows) + np.sum(np.exp(a - m))


def test_lone_statements_fused_and_gradient_matches_fd():
    rng = np.random.default_rng(5)
    x, w, a = rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng.standard_normal(5)
    g = srcgrad.grad(lone_statements, wrt=(0, 1, 2), target="cpu")
    check_grad(lone_statements, (x, w, a), wrt=(0, 1, 2), gradfn=g)
    source = g.source
    adjoint = source[source.index("_adjoint("):]
    assert "e[_i0, _i1] = np.exp(x[_i0, _i1])" in adjoint       # e = np.exp(x), alone, fused
    assert "np.zeros_like(" not in adjoint
    # np.sum / np.max of a whole array and the max's adjoint are loops too
    # (each nest's running reduction in the accumulator every nest shares: fusion.accumulator)
    assert "s = _acc0" in adjoint and "m = _acc0" in adjoint and "_adj_a[_best_index] += _adj_m" in adjoint
    body = adjoint[:adjoint.index("\n\n\n")]
    for call in ("= np.sum(e)", "= np.max(a)", "max_adjoint("):
        assert all(line.lstrip().startswith("#") for line in body.splitlines() if call in line), call
    x[1, 2] = np.nan                                                # NaN in, NaN out
    gx, gw, ga = g(x, w, a)
    assert np.isnan(gx[1]).any() and np.isnan(gw[1, 2]) and np.isfinite(ga).all()
    # np.max as NumPy: the first of tied maxima takes the gradient, NaN wins; a maximum over no
    # elements fails the nest's size test, and the call reruns with the statements as written
    # (NumPy's error; tests/test_fusion_specialization.py runs that path)
    assert "if not a.shape[0] > 0:\n        raise FusionGuardFailed" in adjoint
    x[1, 2] = 0.0
    a[3] = a[np.argmax(a)]
    reference = srcgrad.grad(lone_statements, wrt=(0, 1, 2), target="python")(x, w, a)
    for got, want in zip(g(x, w, a), reference):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    a[1] = np.nan
    assert np.isnan(g(x, w, a)[2]).all()


def spread_rows(icf, a):
    # as in the vectorized GMM: the row sums of a slice, broadcast over the rows of `a`; in the
    # reverse sweep `_adj_qs += expand_reduced(_adj_t, qs, 1, False)` stands alone
    qs = icf[:, :2]
    t = np.sum(qs, axis=1)
    main = a + t
    return np.sum(np.exp(main)) * np.max(a) + np.sum(qs)


def test_expand_reduced_alone_takes_the_spread_arrays_sizes():
    rng = np.random.default_rng(6)
    icf, a = rng.standard_normal((5, 4)), rng.standard_normal((3, 5))   # K=5 rows, d=2: not square
    gradfn = srcgrad.grad(spread_rows, wrt=(0, 1), target="cpu")
    check_grad(spread_rows, (icf, a), wrt=(0, 1), gradfn=gradfn)
    spec = gradfn._last
    assert spec.lean and spec.fallback is None          # no size test failed: no second compile
    source = spec.source
    loop = source.index("# _adj_qs += expand_reduced(_adj_t, qs, 1, False)")
    # its loop nest is over qs's own axes, with no size test (the gradient's sizes were once
    # taken as if it were broadcast from the right: a test that failed whenever K != d)
    assert "_adj_qs[_i0, _i1] += _adj_t[_i0]" in source[loop:]
    nest = source.rindex("loop fusion", 0, loop)
    assert "FusionGuardFailed" not in source[nest:loop]


@numba.njit
def _left(g, a, b):
    return cpu.matmul_grad_left(g, a, b)


@numba.njit
def _right(g, a, b):
    return cpu.matmul_grad_right(g, a, b)


@numba.njit
def _product(a, b):
    return cpu.matmul(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n", [(4, 3, 5), (1, 3, 2), (3, 1, 2), (0, 2, 3), (2, 0, 3)])
def test_matmul_adjoints_of_f_ordered_operands(m, k, n, dtype):
    rng = np.random.default_rng(m + 10 * k + 100 * n)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    g = rng.standard_normal((m, n)).astype(dtype)
    a64, b64, g64 = (v.astype(np.float64) for v in (a, b, g))
    F = np.asfortranarray
    for gg, aa, bb in [(g, a, F(b)), (F(g), F(a), F(b))]:
        np.testing.assert_allclose(_left(gg, aa, bb), g64 @ b64.T, rtol=tol, atol=tol * max(1, n))
        np.testing.assert_allclose(_right(gg, aa, bb), a64.T @ g64, rtol=tol, atol=tol * max(1, m))
        np.testing.assert_allclose(_product(aa, bb), a64 @ b64, rtol=tol, atol=tol * max(1, k))


def test_products_of_c_and_f_operands_call_gemm_c():
    """x @ Q.T (C times F) and its adjoints are _gemm_c calls on C views: no per-layout BLAS call."""
    from srcgrad.backends.cpu import blas
    if not blas._generic_gemm(numba.typeof(np.ones((2, 2)))):
        pytest.skip("no 64-bit-integer BLAS in NumPy here: the per-layout path is used")
    c, f = numba.typeof(np.ones((2, 3))), numba.typeof(np.asfortranarray(np.ones((2, 3))))
    for impl in (blas._matmul_ov(c, f), blas._mgl(c, c, f), blas._mgr(c, f, c)):
        assert impl.__name__ == "gemm_call"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_c_products_are_direct_gemm_c_calls(dtype):
    """Products of C matrices are direct calls of the dtype's gemm_c: no ``gemm_call`` wrapper is
    compiled, gemm_c compiles once for callers with other compile flags (the training step's and
    the accuracy counter's), and the results are NumPy's, zeros for an inner dimension 0."""
    from srcgrad.backends.cpu import blas
    from srcgrad.compile_report import CompileRecorder
    if not blas._generic_gemm(numba.typeof(np.ones((2, 2), dtype))):
        pytest.skip("no 64-bit-integer BLAS in NumPy here: the per-layout path is used")

    def products(g, a, b, x):
        return cpu.matmul(a, b), cpu.matmul_grad_left(g, a, b), cpu.matmul_grad_right(g, a, b), \
            cpu.matmul(x, b)

    lean = numba.njit(error_model="numpy", no_cpython_wrapper=True)(products)   # the step's flags

    @numba.njit
    def lean_caller(g, a, b, x):            # (a function without a CPython wrapper: called here)
        return lean(g, a, b, x)
    plain = numba.njit(products)
    rng = np.random.default_rng(4)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    recorder = CompileRecorder().install()
    try:
        for m, k, n in ((4, 3, 5), (0, 2, 3), (2, 0, 3), (3, 2, 0)):
            a, b, g, x = (rng.standard_normal(shape).astype(dtype)
                          for shape in ((m, k), (k, n), (m, n), (2, k)))
            want = (a @ b, g @ b.T, a.T @ g, x @ b)
            for fn in (lean_caller, plain):
                got = fn(g, a, b, x)
                for w, r in zip(want, got):
                    assert r.dtype == dtype and r.flags.c_contiguous and r.shape == w.shape
                    np.testing.assert_allclose(r, w, rtol=tol, atol=tol * max(1, k))
    finally:
        recorder.uninstall()
    names = [r["name"].rsplit(".", 1)[-1] for r in recorder.records]
    assert "gemm_call" not in names, names
    # (compiled here, or by a test before: once in a process either way)
    assert names.count("gemm_c") <= 1 and names.count("gemm_into") <= 1, names


def test_matmul_f_operand_shape_error():
    with pytest.raises(ValueError, match="inner dimensions"):
        _product(np.ones((3, 4)), np.asfortranarray(np.ones((5, 2))))


def test_vectorized_gmm_adjoint_calls_few_helpers():
    """The benchmark's vectorized GMM (its gradient vs finite differences on the cpu target:
    tests/test_arrays.py::test_gmm_vectorized_adbench, -m slow): what its cpu adjoint still calls
    outside its loop nests. Generating the module compiles nothing."""
    import ast
    import sys
    from pathlib import Path
    from srcgrad import kinds as K
    from srcgrad.program import build_module
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks.lib import programs as P
    K_, d, n = 4, 3, 7
    args = list(P.make_args(P.PROGRAMS["gmm"], {"d": d, "K": K_, "n": n}, seed=23)) + \
        list(P.gmm_vectorized_index(K_, d))
    source = build_module(P.gmm_vectorized, tuple(K.kind_of_value(a) for a in args),
                          ["alphas", "means", "icf"], "cpu", False, "float64", seed_at_end=True,
                          tape_transcendentals=True)[0]
    module = ast.parse(source)
    adjoint = next(f for f in module.body if isinstance(f, ast.FunctionDef) and f.name.endswith("_adjoint"))

    def calls(stmts):                   # the calls of the code that runs (not the else: fallbacks)
        out = []
        for stmt in stmts:
            if isinstance(stmt, ast.If) and any(isinstance(s, ast.For) for s in stmt.body):
                out += calls(stmt.body)
                continue
            out += [ast.unparse(c.func) for c in ast.walk(stmt) if isinstance(c, ast.Call)]
        return out
    called = {c for c in calls(adjoint.body) if not (c.startswith("type(") or c.endswith(".dtype.type"))}
    # (np.sum: `_adj_amax -= np.sum(_adj_t24)`, a scalar update, is not fused yet; loop_range: the
    # fused loops; update_array: an array's `+=` / `-=`)
    assert called - {"FusionGuardFailed"} == {
        "np.concatenate", "np.zeros", "np.empty", "huge_pages", "gather2", "reshape_any", "matmul",
        "matmul_grad_right", "scatter_add2", "concat_part", "loop_range", "update_array", "type",
        "np.exp", "np.log", "np.sum"}, called
    text = ast.unparse(adjoint)
    assert "_adj_t17 = _adj_main" in text                    # unbroadcast of equal sizes: itself
    assert "np.zeros((K, 1), np.float64)" in text            # NumPy's default dtype written out
