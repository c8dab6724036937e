"""srcgrad.training.blas.gemm: C = alpha * op(A) @ op(B) + beta * C, compiled and uncompiled."""

import numba
import numpy as np
import pytest

from srcgrad.training.blas import gemm


@numba.njit
def _compiled(A, B, C, alpha, beta, ta, tb):
    gemm(A, B, C, alpha, beta, ta, tb)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_all_transposes_alpha_beta(dtype):
    rng = np.random.default_rng(0)
    m, k, n = 5, 7, 3
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for ta in (False, True):
        for tb in (False, True):
            A = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
            B = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
            C0 = rng.standard_normal((m, n)).astype(dtype)
            for alpha, beta in ((1.0, 0.0), (-0.1, 1.0), (2.0, -0.5)):
                want = alpha * ((A.T if ta else A) @ (B.T if tb else B)) + beta * C0
                for fn in (_compiled, gemm):
                    C = C0.copy()
                    fn(A, B, C, alpha, beta, ta, tb)
                    np.testing.assert_allclose(C, want, rtol=tol, atol=tol)


def test_gemm_beta_zero_ignores_nan_in_output():
    # BLAS semantics: with beta == 0, C's old contents (here NaN) are not read
    A, B = np.ones((2, 3)), np.ones((3, 2))
    C = np.full((2, 2), np.nan)
    _compiled(A, B, C, 1.0, 0.0, False, False)
    np.testing.assert_array_equal(C, np.full((2, 2), 3.0))


def test_gemm_nan_propagates_and_shape_mismatch_raises():
    A, B = np.ones((2, 3)), np.ones((3, 2))
    A[0, 0] = np.nan
    C = np.zeros((2, 2))
    _compiled(A, B, C, 1.0, 0.0, False, False)
    assert np.isnan(C[0]).all() and np.isfinite(C[1]).all()
    with pytest.raises(ValueError, match="shapes"):
        _compiled(A, B, np.zeros((3, 3)), 1.0, 0.0, False, False)


def test_gemm_uses_the_cpu_backends_blas():
    from srcgrad.backends.cpu import blas as cpu   # the cpu backend's BLAS choice
    assert (getattr(cpu, "_NUMPY_GEMM", None) is not None) == bool(cpu.NUMPY_BLAS)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_is_a_direct_call_of_the_backends_gemm_into(dtype):
    """For C operands of one float dtype the compiled gemm is the cpu backend's gemm_into, called
    from the caller (no function of its own compiled), whatever the scalar types of alpha and
    beta and whether the transposes are constants; empty products follow BLAS's semantics."""
    from srcgrad.backends.cpu import blas as cpu
    from srcgrad.compile_report import CompileRecorder
    if getattr(cpu, "_NUMPY_GEMM", None) is None:
        pytest.skip("NumPy's BLAS not found: gemm is Numba's np.dot here")

    @numba.njit
    def constants(A, B, C, alpha, beta):
        gemm(A, B, C, alpha, beta, True, False)

    recorder = CompileRecorder().install()
    try:
        rng = np.random.default_rng(1)
        A, B = rng.standard_normal((4, 3)).astype(dtype), rng.standard_normal((4, 2)).astype(dtype)
        C0 = rng.standard_normal((3, 2)).astype(dtype)
        for alpha, beta in ((1, 0), (np.float32(0.5), 2.0), (-0.25, np.float32(1.0))):
            C = C0.copy()
            constants(A, B, C, alpha, beta)
            tol = 1e-5 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(C, alpha * (A.T @ B) + beta * C0, rtol=tol, atol=tol)
        C = C0.copy()
        _compiled(np.ones((3, 0), dtype), np.ones((0, 2), dtype), C, 1.0, 0.5, False, False)
        np.testing.assert_array_equal(C, C0 * dtype(0.5))          # k == 0: C = beta * C
        C = np.full((3, 2), np.nan, dtype)
        _compiled(np.ones((3, 0), dtype), np.ones((0, 2), dtype), C, 1.0, 0.0, False, False)
        np.testing.assert_array_equal(C, np.zeros((3, 2), dtype))  # beta == 0: not read
        _compiled(np.ones((0, 4), dtype), np.ones((4, 2), dtype), np.ones((0, 2), dtype), 1.0,
                  0.0, False, False)                                  # m == 0: nothing to do
    finally:
        recorder.uninstall()
    names = [r["name"] for r in recorder.records]
    assert not any("_gemm_ov" in n for n in names), names       # no overload compiled
    array = numba.typeof(A)
    into = cpu.gemm_kernels(array.dtype).gemm_into               # (maybe compiled by a test before)
    assert (array, array, numba.typeof(C0), numba.float64, numba.float64, numba.boolean,
            numba.boolean) in into.overloads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_with_integer_flags_runs_the_same_kernel(dtype):
    """Transpose flags given as integers (not the direct call's booleans) go through the overload,
    which calls the same gemm_into: the result is the NumPy product either way."""
    @numba.njit
    def int_flags(A, B, C, ta, tb):
        gemm(A, B, C, 2.0, 0.5, ta, tb)

    rng = np.random.default_rng(3)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for ta, tb in ((0, 0), (1, 0), (0, 1), (1, 1)):
        A = rng.standard_normal((3, 4) if ta else (4, 3)).astype(dtype)
        B = rng.standard_normal((2, 3) if tb else (3, 2)).astype(dtype)
        C0 = rng.standard_normal((4, 2)).astype(dtype)
        C = C0.copy()
        int_flags(A, B, C, ta, tb)
        expect = 2.0 * ((A.T if ta else A) @ (B.T if tb else B)) + 0.5 * C0
        np.testing.assert_allclose(C, expect, rtol=tol, atol=tol)
