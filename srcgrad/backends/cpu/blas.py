"""Matrix products of compiled code (``matmul`` and its adjoints) through NumPy's own BLAS."""
import os

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import lower_builtin, overload, register_jitable, type_callable

from ... import runtime
from .memory import advise_huge_pages, fresh_empty, huge_pages
from .helpers import unbroadcast


# -- matrix products through NumPy's own BLAS --------------------------------------------------
# Numba's np.dot calls the BLAS that SciPy ships. NumPy wheels ship their own OpenBLAS, which may be
# another release: here SciPy's (0.3.30) ran the MLP's 256x784x128 float32 products 7-16% slower
# than NumPy's (0.3.31), from Python as from Numba (benchmarks/results/blas.md). Products of two
# float matrices therefore call NumPy's cblas_?gemm by symbol name when NumPy's library has one,
# and np.dot otherwise. (codegen.cache_key includes NumPy's version: a generated module compiled
# against one NumPy is never loaded with another.)
_CBLAS_ROW_MAJOR, _CBLAS_NO_TRANS, _CBLAS_TRANS = 101, 111, 112


def _find_numpy_gemm():
    """(sgemm, dgemm) as Numba external functions from the BLAS bundled with NumPy, or None."""
    import ctypes
    import glob
    import llvmlite.binding as llvm
    root = os.path.dirname(np.__file__)
    libraries = (glob.glob(os.path.join(os.path.dirname(root), "numpy.libs", "*blas*"))
                 + glob.glob(os.path.join(root, ".libs", "*blas*")))
    # (symbol prefix, symbol suffix, BLAS integer): scipy-openblas64 wheels, plain ILP64, LP64
    conventions = [("scipy_cblas_", "64_", types.int64), ("cblas_", "64_", types.int64),
                   ("scipy_cblas_", "", types.int32), ("cblas_", "", types.int32)]
    for path in libraries:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, blas_int in conventions:
            names = [f"{prefix}{letter}gemm{suffix}" for letter in "sd"]
            if not all(hasattr(library, name) for name in names):
                continue
            found = []
            for name, real in zip(names, (types.float32, types.float64)):
                llvm.add_symbol(name, ctypes.cast(getattr(library, name), ctypes.c_void_p).value)
                signature = types.void(types.int32, types.int32, types.int32, blas_int, blas_int,
                                       blas_int, real, types.voidptr, blas_int, types.voidptr,
                                       blas_int, real, types.voidptr, blas_int)
                found.append(types.ExternalFunction(name, signature))
            return tuple(found), blas_int
    return None, None


if os.environ.get("SRCGRAD_NUMPY_BLAS", "1") == "1":
    _NUMPY_GEMM, _BLAS_INT = _find_numpy_gemm()
else:                                   # SRCGRAD_NUMPY_BLAS=0: Numba's np.dot (SciPy's BLAS)
    _NUMPY_GEMM, _BLAS_INT = None, None
NUMPY_BLAS = _NUMPY_GEMM is not None


@register_jitable
def _blas_strided_operand(x):
    """An array of any layout as BLAS sees a row-major matrix: (array to pass, transposed?,
    leading dimension). Row and column views (``x[::2]``, ``x[:, :k]``, their ``.T``) pass as they
    are; other layouts are copied."""
    rows, cols = x.shape
    row_step, col_step = x.strides[0] // x.itemsize, x.strides[1] // x.itemsize
    exact = x.strides[0] % x.itemsize == 0 and x.strides[1] % x.itemsize == 0
    if exact and (cols <= 1 or col_step == 1) and (rows <= 1 or row_step >= cols):
        return x, False, row_step if rows > 1 else max(1, cols)
    if exact and (rows <= 1 or row_step == 1) and (cols <= 1 or col_step >= rows):
        return x, True, col_step if cols > 1 else max(1, rows)
    return np.ascontiguousarray(x), False, max(1, cols)


@register_jitable
def _blas_c_operand(x):
    return x, False, max(1, x.shape[1])


@register_jitable
def _blas_f_operand(x):             # x.T is C-contiguous: BLAS reads it transposed
    return x, True, max(1, x.shape[0])


def _blas_operand(array_type):
    """The operand helper for an array type: its layout decides at compile time when it can (a
    runtime stride check compiles to much more code, and most products are of C or F arrays)."""
    return {"C": _blas_c_operand, "F": _blas_f_operand}.get(array_type.layout,
                                                             _blas_strided_operand)


def _generic_gemm(*operands):
    """Whether the dtype's ``gemm_c`` (:func:`gemm_kernels`) takes these operands: C- or
    F-contiguous float32/float64 matrices of one dtype and a BLAS with 64-bit integers (a 32-bit
    one needs the size check of ``matmul``). The forward product and both adjoint products then
    compile one function per dtype (with the transposes as run-time flags; an F matrix passes as
    its transpose, which is C) instead of one per layout pair: the BLAS call's Numba compile was
    ~0.45 s each on this machine (benchmarks/results/compile.md)."""
    return (NUMPY_BLAS and _BLAS_INT != types.int32 and
            all(isinstance(t, types.Array) and t.ndim == 2 and t.layout in "CF" for t in operands)
            and len({t.dtype for t in operands}) == 1
            and operands[0].dtype in (types.float32, types.float64))


class GemmKernels:
    """The two compiled functions through which every product of C-contiguous float matrices of
    one dtype calls NumPy's ``cblas_?gemm`` (``op(x)`` is ``x.T`` where its flag is true):

    * ``gemm_into(a, b, out, alpha, beta, trans_a, trans_b)``: ``out = alpha * op(a) @ op(b) +
      beta * out`` (``alpha``, ``beta``: float64), BLAS's semantics (``out`` is not read where
      ``beta`` is 0);
    * ``gemm_c(a, b, trans_a, trans_b)``: ``op(a) @ op(b)``, a fresh array (zeros for an inner
      dimension 0, written here rather than left to BLAS).

    Plain dispatchers (not overloads): Numba compiles an overload's implementation once per set
    of its callers' compile flags (the training step, the accuracy counter and the generated
    adjoints each have their own), a dispatcher once per argument types. The cpu backend's
    products of C matrices (``matmul`` and its adjoints, below) and the training code's ``gemm``
    (srcgrad.training.blas) are typed and lowered as direct calls of these: no function of their
    own to compile."""

    def __init__(self, real):
        import numba
        gemm = _NUMPY_GEMM[0] if real == types.float32 else _NUMPY_GEMM[1]
        blas_int = _BLAS_INT
        # both called only from compiled code (direct calls): neither a CPython nor a C wrapper
        jit = jit_into = numba.njit(error_model="numpy", no_cpython_wrapper=True,
                                    no_cfunc_wrapper=True)

        def gemm_into(a, b, out, alpha, beta, trans_a, trans_b):
            m, n = out.shape
            k = a.shape[0] if trans_a else a.shape[1]
            if (a.shape[1] if trans_a else a.shape[0]) != m \
                    or (b.shape[1] if trans_b else b.shape[0]) != k \
                    or (b.shape[0] if trans_b else b.shape[1]) != n:
                raise ValueError("gemm: shapes of op(A), op(B) and C do not match")
            if m == 0 or n == 0:
                return
            # leading dimensions at least 1, written out (Numba compiles max() as one more
            # function in every cold compile of a caller)
            lda = a.shape[1] if a.shape[1] > 1 else 1
            ldb = b.shape[1] if b.shape[1] > 1 else 1
            ldc = n if n > 1 else 1
            gemm(np.int32(_CBLAS_ROW_MAJOR),
                 np.int32(_CBLAS_TRANS if trans_a else _CBLAS_NO_TRANS),
                 np.int32(_CBLAS_TRANS if trans_b else _CBLAS_NO_TRANS),
                 blas_int(m), blas_int(n), blas_int(k), real(alpha), a.ctypes, blas_int(lda),
                 b.ctypes, blas_int(ldb), real(beta), out.ctypes, blas_int(ldc))

        self.gemm_into = into = jit_into(gemm_into)

        def gemm_c(a, b, trans_a, trans_b):
            m = a.shape[1] if trans_a else a.shape[0]
            k = a.shape[0] if trans_a else a.shape[1]
            n = b.shape[0] if trans_b else b.shape[1]
            if (b.shape[1] if trans_b else b.shape[0]) != k:
                raise ValueError("matmul: the matrices' inner dimensions differ")
            # (written with loops and the dtype's class, not out.fill / a.dtype, and allocated
            # by fresh_empty, not np.empty: each of those is one more function for Numba to
            # compile in every caller)
            out = huge_pages(fresh_empty((m, n), real))
            if k == 0:
                for i in range(m):
                    for j in range(n):
                        out[i, j] = 0
            else:
                into(a, b, out, 1.0, 0.0, trans_a, trans_b)
            return out

        self.gemm_c = jit(gemm_c)


_KERNELS = {}


def gemm_kernels(dtype):
    """The :class:`GemmKernels` of a Numba float dtype (float32 or float64), made once."""
    if dtype not in _KERNELS:
        _KERNELS[dtype] = GemmKernels(dtype)
    return _KERNELS[dtype]


def _gemm_call(params, x, x_type, trans_x, y, y_type, trans_y):
    """An implementation with parameters ``params`` returning ``op(x) @ op(y)`` through the
    dtype's ``gemm_c`` (``op`` transposes where ``trans_*``); ``x`` and ``y`` are parameter
    names, their types C or F matrices: an F matrix is passed as its transpose (a C view), its
    flag flipped."""
    def operand(name, array_type, trans):
        return (f"{name}.T", not trans) if array_type.layout == "F" else (name, trans)
    (xs, tx), (ys, ty) = operand(x, x_type, trans_x), operand(y, y_type, trans_y)
    namespace = {"gemm_c": gemm_kernels(x_type.dtype).gemm_c}
    exec(f"def gemm_call({', '.join(params)}):\n"           # noqa: S102
         f"    return gemm_c({xs}, {ys}, {tx}, {ty})\n", namespace)
    return namespace["gemm_call"]


def typed_direct_call(context, dispatcher, argtypes):
    """Typing helper: the signature of ``dispatcher`` for ``argtypes`` (compiling it once)."""
    return context.resolve_function_type(context.resolve_value_type(dispatcher), argtypes, {})


def lower_direct_call(context, builder, dispatcher, argtypes, args):
    """Lowering helper: a call of the compiled ``dispatcher`` for ``argtypes`` (compiled when
    the call was typed: :func:`typed_direct_call`) with the LLVM values ``args``; its result is a
    new reference, as a lowering returns one."""
    callee = context.typing_context.resolve_value_type(dispatcher)
    signature = callee.get_call_type(context.typing_context, argtypes, {})
    impl = context.get_function(callee, signature)
    context.add_linking_libs(getattr(impl, "libs", ()))
    return impl(builder, args)


# The products of C-contiguous float matrices (the usual case: every MLP product and its
# adjoints) are the dtype's gemm_c written straight into the caller (lower_fresh_product: the
# allocation and one gemm_into call; gemm_c itself, 0.11-0.16 s of CPU in a cold MNIST training
# process, is then not compiled): a typing template and a lowering, the transposes constants. Through ``@overload`` each (function, types) pair
# was one more compiled function, a one-line ``gemm_call`` (0.05-0.08 s of CPU each in a cold
# compile; the MNIST step had three), and an ``inline="always"`` overload is compiled anyway
# (Numba types an overload's implementation by compiling it). Other layouts (an F operand passes
# as a transposed C view) keep the ``gemm_call`` overloads below. Registered before them, so
# Numba asks these first.
def _c_product(function, x, y, trans_x, trans_y, other=None):
    """Type and lower ``function`` (two or three array parameters) as ``gemm_c(args[x],
    args[y], trans_x, trans_y)`` (:func:`lower_fresh_product`) for C operands; ``other``: the index of a parameter that only
    the product's rule reads, for its shape (a 2-d array of the operands' dtype, any layout)."""
    def gemm_c_types(args):
        if not (_generic_gemm(args[x], args[y]) and args[x].layout == args[y].layout == "C"):
            return None
        if other is not None and not (isinstance(args[other], types.Array)
                                      and args[other].ndim == 2
                                      and args[other].dtype == args[x].dtype):
            return None
        return args[x].dtype

    @type_callable(function)
    def _typer(context):
        def return_type(*args):
            real = gemm_c_types(args)
            return None if real is None else typed_fresh_product(context, real)
        # (named parameters: Numba folds a call's arguments by the typer's signature)
        if other is None:
            return lambda a, b: return_type(a, b)
        return lambda g, a, b: return_type(g, a, b)

    @lower_builtin(function, *([types.Array] * (2 if other is None else 3)))
    def _lower(context, builder, sig, args):
        return lower_fresh_product(context, builder, sig.args[x], args[x], args[y], trans_x,
                                   trans_y)


def typed_fresh_product(context, real):
    """Typing helper of :func:`lower_fresh_product` for C matrices of the Numba float ``real``:
    the result's type (``gemm_into``, which it calls, compiled once here)."""
    matrix = types.Array(real, 2, "C")
    typed_direct_call(context, gemm_kernels(real).gemm_into, (matrix,) * 3 + (
        types.float64, types.float64, types.boolean, types.boolean))
    return matrix


def lower_fresh_product(context, builder, matrix_type, a, b, trans_a, trans_b):
    """Lowering helper: ``op(a) @ op(b)`` of two C matrices of ``matrix_type`` (``op``
    transposes where ``trans_*``, Python bools) as a fresh C matrix, written into the caller:
    the dtype's ``gemm_c`` (the same inner-size error, allocation, huge pages, zeros for an
    inner size of 0, else one ``gemm_into``) without a compiled function of its own; a new
    reference. Type the call with :func:`typed_fresh_product`."""
    from numba.np.arrayobj import _empty_nd_impl, make_array
    x, y = (make_array(matrix_type)(context, builder, v) for v in (a, b))
    xs, ys = (cgutils.unpack_tuple(builder, v.shape, 2) for v in (x, y))
    m, k = (xs[1], xs[0]) if trans_a else (xs[0], xs[1])
    n, k_b = (ys[0], ys[1]) if trans_b else (ys[1], ys[0])
    with builder.if_then(builder.icmp_signed("!=", k_b, k), likely=False):
        context.call_conv.return_user_exc(builder, ValueError,
                                          ("matmul: the matrices' inner dimensions differ",))
    out_type = types.Array(matrix_type.dtype, 2, "C")
    out = _empty_nd_impl(context, builder, out_type, [m, n])
    advise_huge_pages(context, builder, out_type, out._getvalue())
    zero = ir.Constant(k.type, 0)
    with builder.if_else(builder.icmp_signed("==", k, zero)) as (empty_inner, product):
        with empty_inner:
            cgutils.memset(builder, out.data, builder.mul(out.itemsize, out.nitems), 0)
        with product:
            into_types = (matrix_type, matrix_type, out_type, types.float64, types.float64,
                          types.boolean, types.boolean)
            constants = [context.get_constant(types.float64, 1.0),
                         context.get_constant(types.float64, 0.0),
                         context.get_constant(types.boolean, trans_a),
                         context.get_constant(types.boolean, trans_b)]
            lower_direct_call(context, builder, gemm_kernels(matrix_type.dtype).gemm_into,
                              into_types, (a, b, out._getvalue(), *constants))
    return out._getvalue()


def matmul(a, b):
    return a @ b


_c_product(matmul, 0, 1, False, False)


@overload(matmul)
def _matmul_ov(a, b):
    """Product of two matrices: NumPy's BLAS when found (else np.dot), a large result on huge
    pages (see huge_pages)."""
    common = _common_float(a, b)
    if common is not None:          # float32 with float64: Numba's np.dot needs one dtype
        return lambda a, b: matmul(a.astype(common), b.astype(common))
    if isinstance(a, types.Array) and isinstance(b, types.Array) and max(a.ndim, b.ndim) > 2:
        return _batched_matmul(a, b)
    if not (isinstance(a, types.Array) and isinstance(b, types.Array) and a.ndim == 2
            and b.ndim == 2 and a.dtype == b.dtype and isinstance(a.dtype, types.Float)):
        return lambda a, b: np.dot(a, b)
    if _generic_gemm(a, b):
        return _gemm_call(("a", "b"), "a", a, False, "b", b, False)
    if not NUMPY_BLAS or a.dtype not in (types.float32, types.float64):
        def impl_numba_blas(a, b):
            if a.shape[1] != b.shape[0]:
                return np.dot(a, b)         # NumPy's error message
            out = huge_pages(np.empty((a.shape[0], b.shape[1]), a.dtype))
            np.dot(a, b, out)
            return out
        return impl_numba_blas
    gemm = _NUMPY_GEMM[0] if a.dtype == types.float32 else _NUMPY_GEMM[1]
    real, blas_int = a.dtype, _BLAS_INT
    check_size, largest = blas_int == types.int32, np.iinfo(np.int32).max
    a_operand, b_operand = _blas_operand(a), _blas_operand(b)

    def impl_numpy_blas(a, b):
        if a.shape[1] != b.shape[0]:
            raise ValueError("matmul: the matrices' inner dimensions differ")
        m, k, n = a.shape[0], a.shape[1], b.shape[1]
        out = huge_pages(np.empty((m, n), a.dtype))
        if m == 0 or n == 0:
            return out
        if k == 0:
            out.fill(0)
            return out
        a_pass, a_trans, lda = a_operand(a)
        b_pass, b_trans, ldb = b_operand(b)
        if check_size and max(m, n, k, lda, ldb) > largest:   # beyond a 32-bit BLAS: np.dot
            np.dot(np.ascontiguousarray(a), np.ascontiguousarray(b), out)
            return out
        gemm(np.int32(_CBLAS_ROW_MAJOR),
             np.int32(_CBLAS_TRANS if a_trans else _CBLAS_NO_TRANS),
             np.int32(_CBLAS_TRANS if b_trans else _CBLAS_NO_TRANS),
             blas_int(m), blas_int(n), blas_int(k), real(1.0), a_pass.ctypes, blas_int(lda),
             b_pass.ctypes, blas_int(ldb), real(0.0), out.ctypes, blas_int(n))
        return out
    return impl_numpy_blas


def _common_float(*operands):
    """The NumPy scalar type (np.float32, np.float64) that arrays of different dtypes among
    ``operands`` promote to, when one of them is a float array; None when they agree."""
    dtypes = {t.dtype for t in operands if isinstance(t, types.Array)}
    if len(dtypes) < 2 or not any(isinstance(d, types.Float) for d in dtypes):
        return None
    from numba.np.numpy_support import as_dtype
    return getattr(np, str(np.result_type(*[as_dtype(d) for d in dtypes])))


def _batched_matmul(a, b):
    """``a @ b`` where one operand is a stack of matrices: NumPy's rule (a 1-d ``a`` is a row, a
    1-d ``b`` a column, the leading axes broadcast), one matrix product per batch index. Numba's
    own ``@`` and ``np.dot`` stop at 2-d."""
    if a.ndim == 1:
        def row_times_stack(a, b):
            stacked = matmul(a.reshape((1, a.shape[0])), b)          # (..., 1, m)
            return stacked.reshape(stacked.shape[:-2] + stacked.shape[-1:])
        return row_times_stack
    if b.ndim == 1:
        def stack_times_column(a, b):
            stacked = matmul(a, b.reshape((b.shape[0], 1)))          # (..., n, 1)
            return stacked.reshape(stacked.shape[:-1])
        return stack_times_column

    def stacks(a, b):
        if a.shape[-1] != b.shape[-2]:
            raise ValueError("matmul: the matrices' inner dimensions differ")
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        a_stack = np.broadcast_to(a, batch + a.shape[-2:])
        b_stack = np.broadcast_to(b, batch + b.shape[-2:])
        out = huge_pages(np.empty(batch + (a.shape[-2], b.shape[-1]), a.dtype))
        for index in np.ndindex(batch):
            out[index][:, :] = matmul(a_stack[index], b_stack[index])
        return out
    return stacks



def matmul_grad_left(g, a, b):
    return runtime.matmul_grad_left(g, a, b)


_c_product(matmul_grad_left, 0, 2, False, True, other=1)        # g @ b.T


def batched_matmul_grads(g, a, b):
    return runtime.batched_matmul_grads(g, a, b)


@overload(batched_matmul_grads)
def _batched_matmul_grads_ov(g, a, b):
    """runtime.batched_matmul_grads: the batched products of the transposes (swapped last two
    axes: views), summed back over the batch axes each operand was broadcast along."""
    promote_a = (register_jitable(lambda a: a.reshape((1, a.shape[0]))) if a.ndim == 1
                 else register_jitable(lambda a: a))
    promote_b = (register_jitable(lambda b: b.reshape((b.shape[0], 1))) if b.ndim == 1
                 else register_jitable(lambda b: b))
    if a.ndim == 1:
        promote_g = register_jitable(lambda g: g.reshape(g.shape[:-1] + (1, g.shape[-1])))
    elif b.ndim == 1:
        promote_g = register_jitable(lambda g: g.reshape(g.shape + (1,)))
    else:
        promote_g = register_jitable(lambda g: g)

    def impl(g, a, b):
        A, B, G = promote_a(a), promote_b(b), promote_g(np.ascontiguousarray(g))
        grad_a = unbroadcast(matmul(G, np.swapaxes(B, -1, -2)), A)
        grad_b = unbroadcast(matmul(np.swapaxes(A, -1, -2), G), B)
        return np.ascontiguousarray(grad_a).reshape(a.shape), \
            np.ascontiguousarray(grad_b).reshape(b.shape)
    return impl


@overload(matmul_grad_left)
def _mgl(g, a, b):
    common = _common_float(g, a, b)
    if common is not None:
        return lambda g, a, b: matmul_grad_left(_as_type(g, common), a.astype(common), b.astype(common))
    if max(a.ndim, b.ndim) > 2:
        return lambda g, a, b: batched_matmul_grads(g, a, b)[0]
    if a.ndim == 1 and b.ndim == 1:
        return lambda g, a, b: g * b
    if b.ndim == 1:
        return lambda g, a, b: np.outer(g, b)
    if a.ndim == 1:
        return lambda g, a, b: np.dot(b, g)
    if _generic_gemm(g, b):
        return _gemm_call(("g", "a", "b"), "g", g, False, "b", b, True)
    return lambda g, a, b: matmul(g, b.T)        # b.T is a view: BLAS reads it transposed


def matmul_grad_right(g, a, b):
    return runtime.matmul_grad_right(g, a, b)


_c_product(matmul_grad_right, 1, 0, True, False, other=2)       # a.T @ g


def _as_type(v, scalar_type):
    return v


@overload(_as_type)
def _as_type_ov(v, scalar_type):
    """An array or scalar ``v`` converted to ``scalar_type`` (np.float32 / np.float64)."""
    if isinstance(v, types.Array):
        return lambda v, scalar_type: v.astype(scalar_type)
    return lambda v, scalar_type: scalar_type(v)


@overload(matmul_grad_right)
def _mgr(g, a, b):
    common = _common_float(g, a, b)
    if common is not None:
        return lambda g, a, b: matmul_grad_right(_as_type(g, common), a.astype(common), b.astype(common))
    if max(a.ndim, b.ndim) > 2:
        return lambda g, a, b: batched_matmul_grads(g, a, b)[1]
    if a.ndim == 1 and b.ndim == 1:
        return lambda g, a, b: g * a
    if b.ndim == 1:
        return lambda g, a, b: np.dot(a.T, g)
    if a.ndim == 1:
        return lambda g, a, b: np.outer(a, g)
    if _generic_gemm(g, a):
        return _gemm_call(("g", "a", "b"), "a", a, True, "g", g, False)
    return lambda g, a, b: matmul(a.T, g)

