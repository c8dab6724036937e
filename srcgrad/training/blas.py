"""``gemm``: a matrix product with alpha/beta into a given output, callable from compiled code.

    gemm(A, B, C, alpha, beta, trans_a, trans_b)    # C = alpha * op(A) @ op(B) + beta * C

``op(X)`` is ``X.T`` when its flag is true. A, B and C are C-contiguous 2-d float32 or float64
arrays of one dtype. Inside ``@numba.njit`` code the product calls the BLAS that srcgrad's cpu
backend calls for ``@`` (NumPy's own ``cblas_?gemm``, found by symbol name), so a training loop
written by hand, the benchmarks' hand-written trainers and srcgrad's generated code all multiply
with the same library; where NumPy's BLAS was not found it falls back to ``np.dot``.

Why alpha/beta: an SGD step on a weight is a product accumulated into the weight,
``W = -lr * X.T @ dH + W``, one BLAS call with no gradient buffer and no separate update pass.
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.core.errors import TypingError
from numba.extending import lower_builtin, overload, type_callable

__all__ = ["gemm"]


def gemm(A, B, C, alpha, beta, trans_a, trans_b):
    """Uncompiled reference (the same contract): ``C = alpha * op(A) @ op(B) + beta * C``."""
    a = A.T if trans_a else A
    b = B.T if trans_b else B
    product = a @ b
    if beta == 0:                       # BLAS semantics: C is not read when beta is zero
        C[...] = alpha * product
    else:
        C[...] = alpha * product + beta * C


def _direct_types(A, B, C, alpha, beta, trans_a, trans_b):
    """The cpu backend's ``gemm_into`` of the dtype and the argument types it is called with,
    for C-contiguous 2-d float32/float64 operands of one dtype (C writable) and real scalars,
    where NumPy's BLAS was found; else None (then the overload below: Numba's np.dot, or the
    error that says what is wrong)."""
    from srcgrad.backends.cpu import blas as cpu
    if not (getattr(cpu, "_NUMPY_GEMM", None) is not None and all(
            isinstance(x, types.Array) and x.ndim == 2 and x.layout == "C"
            and x.dtype in (types.float32, types.float64) for x in (A, B, C))
            and A.dtype == B.dtype == C.dtype and C.mutable
            and all(isinstance(t, (types.Float, types.Integer)) for t in (alpha, beta))
            and all(isinstance(t, types.Boolean) for t in (trans_a, trans_b))):
        return None
    return cpu.gemm_kernels(A.dtype).gemm_into, \
        (A, B, C, types.float64, types.float64, types.boolean, types.boolean)


# The usual operands: a direct call of the cpu backend's compiled gemm_into of the dtype (the
# one BLAS wrapper srcgrad's own products call too), typed and lowered here rather than through
# an overload, whose implementation Numba would compile as one more function (0.13-0.15 s of CPU
# in the MNIST training step's cold compile: benchmarks/results/train_compile_mcold5.md).
@type_callable(gemm)
def _gemm_typer(context):
    def typer(A, B, C, alpha, beta, trans_a, trans_b):
        found = _direct_types(A, B, C, alpha, beta, trans_a, trans_b)
        if found is None:
            return None
        from srcgrad.backends.cpu.blas import typed_direct_call
        return typed_direct_call(context, *found).return_type
    return typer


@lower_builtin(gemm, types.Array, types.Array, types.Array, types.Any, types.Any, types.Any,
               types.Any)
def _gemm_lower(context, builder, sig, args):
    from srcgrad.backends.cpu.blas import lower_direct_call
    dispatcher, argtypes = _direct_types(*sig.args)
    cast = [context.cast(builder, v, t, to) for v, t, to in zip(args, sig.args, argtypes)]
    return lower_direct_call(context, builder, dispatcher, argtypes, cast)


@overload(gemm)
def _gemm_ov(A, B, C, alpha, beta, trans_a, trans_b):
    for name, x in (("A", A), ("B", B), ("C", C)):
        if not (isinstance(x, types.Array) and x.ndim == 2 and x.layout == "C"
                and x.dtype in (types.float32, types.float64)):
            raise TypingError(f"srcgrad.training.blas.gemm: {name} must be a C-contiguous 2-d "
                              f"float32/float64 array, got {x}")
    if not A.dtype == B.dtype == C.dtype:
        raise TypingError("srcgrad.training.blas.gemm: A, B and C must have one dtype")
    if not C.mutable:
        raise TypingError("srcgrad.training.blas.gemm: C is read-only")
    real = A.dtype
    from srcgrad.backends.cpu import blas as cpu      # the cpu backend's BLAS choice
    routines = getattr(cpu, "_NUMPY_GEMM", None)
    if routines is None and getattr(cpu, "NUMPY_BLAS", False):
        # never a quiet switch to another BLAS: the point is the same library as srcgrad's `@`
        raise TypingError("srcgrad.training.blas.gemm: the cpu backend uses NumPy's BLAS but no "
                          "longer exposes it as _NUMPY_GEMM")

    if routines is None:                # no NumPy BLAS symbol: Numba's np.dot (SciPy's BLAS)
        def impl_dot(A, B, C, alpha, beta, trans_a, trans_b):
            a = A.T if trans_a else A
            b = B.T if trans_b else B
            product = np.dot(np.ascontiguousarray(a), np.ascontiguousarray(b))
            if beta == 0:
                C[:, :] = real(alpha) * product
            else:
                C[:, :] = real(alpha) * product + real(beta) * C
        return impl_dot

    # any other scalar or flag types (an int flag, say): the same compiled gemm_into of the dtype
    kernel = cpu.gemm_kernels(real).gemm_into

    def impl(A, B, C, alpha, beta, trans_a, trans_b):
        kernel(A, B, C, np.float64(alpha), np.float64(beta), bool(trans_a), bool(trans_b))
    return impl
