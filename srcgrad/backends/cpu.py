"""The ``cpu`` target: generated functions are compiled with Numba's ``njit`` (cached on disk).

The runtime helpers of :mod:`srcgrad.runtime` are compiled here too; ``unbroadcast`` gets a
Numba overload because its result's dimensionality depends on its arguments' types.
"""
import os
import sys

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload, register_jitable

from .. import runtime

FASTMATH = False


def jit(function):
    """Compile a generated function: nopython mode, cached next to the generated file."""
    return numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy")(function)


def _helper(function):
    return numba.njit(cache=True, inline="always")(function)


# -- the C allocator (opt-in) ------------------------------------------------------------------
# Compiled code allocates arrays with the C library's malloc. With glibc's defaults a freed array
# of a few megabytes can go back to the OS (heap trimming, or an mmap of its own), so the next call
# page-faults through it again, 4 KB at a time. SRCGRAD_MALLOC_TUNING=1 keeps arrays up to 32 MB in
# the heap and freed memory up to 256 MB. Measured both ways, so it is off by default: the
# vectorized GMM gradient (d=10, K=25, n=1000) loaded from the cache took 8.4 ms a call without it
# and 2.7 ms with it, but the LSTM gradient (T=500) inside the benchmark process took 35 ms with
# it against 20 ms without.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3          # glibc's mallopt parameter numbers


def _tune_malloc():
    if os.environ.get("SRCGRAD_MALLOC_TUNING", "0") != "1" or not sys.platform.startswith("linux"):
        return False
    import ctypes
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt          # glibc only (musl has none)
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 256 << 20))


MALLOC_TUNED = _tune_malloc()


# -- large arrays on transparent huge pages ----------------------------------------------------
# NumPy asks Linux for transparent huge pages on every large allocation (madvise); Numba's
# allocator does not, so the first write of a fresh 256 MB array takes one page fault per 4 KB
# page (~150 ms here, against ~45 ms on huge pages). Helpers that return large fresh arrays ask
# for them the way NumPy does.
_HUGE_PAGE_MIN_BYTES = 1 << 22       # NumPy's threshold (4 MiB)
_MADV_HUGEPAGE = 14


@intrinsic
def _madvise(typingctx, start, length, advice):
    """libc's madvise(start, length, advice), called by symbol name (so the code stays cacheable)."""
    sig = types.int32(types.intp, types.intp, types.int32)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(64), ir.IntType(64), ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "madvise")
        return builder.call(fn, args)
    return sig, codegen


if sys.platform.startswith("linux"):
    @numba.njit(cache=True, inline="always")
    def huge_pages(a):
        """``a`` (fresh, not yet written) asks for transparent huge pages when it is large; the
        advice is a hint: a failure changes nothing."""
        nbytes = a.size * a.itemsize
        if nbytes >= _HUGE_PAGE_MIN_BYTES:
            start = (a.ctypes.data + 4095) & ~4095          # whole pages inside the buffer
            end = (a.ctypes.data + nbytes) & ~4095
            _madvise(start, end - start, np.int32(_MADV_HUGEPAGE))
        return a
else:
    @numba.njit(cache=True, inline="always")
    def huge_pages(a):
        return a


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


def matmul(a, b):
    return a @ b


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


@intrinsic
def _env_tape_limit(typingctx):
    """SRCGRAD_MAX_TAPE_BYTES as an integer, or -1 when it is unset or empty: libc's getenv and
    strtoll called by symbol name at run time (a Python global would be frozen into the cached
    machine code; os.environ assignments reach getenv through putenv)."""
    sig = types.int64()

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        i64 = ir.IntType(64)
        getenv = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i8p, [i8p]), "getenv")
        strtoll = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i64, [i8p, i8p.as_pointer(), ir.IntType(32)]), "strtoll")
        text = builder.call(getenv, [context.insert_const_string(builder.module, "SRCGRAD_MAX_TAPE_BYTES")])
        result = cgutils.alloca_once_value(builder, ir.Constant(i64, -1))
        with builder.if_then(cgutils.is_not_null(builder, text)):
            with builder.if_then(builder.icmp_unsigned("!=", builder.load(text), ir.Constant(ir.IntType(8), 0))):
                builder.store(builder.call(strtoll, [text, ir.Constant(i8p.as_pointer(), None),
                                                     ir.Constant(ir.IntType(32), 10)]), result)
        return builder.load(result)
    return sig, codegen


@overload(runtime.max_tape_bytes)
def _max_tape_bytes_ov():
    default = runtime.MAX_TAPE_BYTES

    def impl():
        limit = _env_tape_limit()
        return default if limit < 0 else limit
    return impl


@numba.njit(cache=True)
def grow(tape):
    """runtime.grow, copying with a loop: Numba's slice assignment ``bigger[:n] = tape`` checks
    shapes and formats an error message, which compiled ~25 string-formatting functions (about
    4 s of a cold compile on a 2-core machine) into every gradient with a tape."""
    n = tape.shape[0]
    if n * 2 * 8 > runtime.max_tape_bytes():
        raise MemoryError("srcgrad: the tape of overwritten values would exceed SRCGRAD_MAX_TAPE_BYTES "
                          "(a loop with a huge trip count); reduce the problem size or raise the limit")
    bigger = np.empty(n * 2, dtype=tape.dtype)
    for i in range(n):
        bigger[i] = tape[i]
    return bigger
runtime_grow = grow


@numba.njit(cache=True, inline="always")
def push_float(tape, top, value):
    if top == tape.shape[0]:
        tape = grow(tape)
    tape[top] = value
    return tape, top + 1


@numba.njit(cache=True, inline="always")
def push_int(tape, top, value):
    if top == tape.shape[0]:
        tape = grow(tape)
    tape[top] = value
    return tape, top + 1


new_float_tape = _helper(runtime.new_float_tape)
count_snapshot = numba.njit(cache=True)(runtime.count_snapshot)
pop_snapshot = numba.njit(cache=True)(runtime.pop_snapshot)
snapshot_buffer = numba.njit(cache=True)(runtime.snapshot_buffer)
reserve_tape = numba.njit(cache=True)(runtime.reserve_tape)
push_snapshot = numba.njit(cache=True)(runtime.push_snapshot)
snapshot_at = numba.njit(cache=True)(runtime.snapshot_at)
new_int_tape = _helper(runtime.new_int_tape)
range_length = _helper(runtime.range_length)
_range_continues = _helper(runtime._range_continues)


def unbroadcast(gradient, like):
    return runtime.unbroadcast(gradient, like)


@overload(unbroadcast)
def _unbroadcast_overload(gradient, like):
    if not isinstance(like, types.Array):
        if isinstance(gradient, types.Array):
            return lambda gradient, like: gradient.sum()
        return lambda gradient, like: gradient
    if not isinstance(gradient, types.Array):
        return lambda gradient, like: np.full(like.shape, gradient)
    extra = gradient.ndim - like.ndim
    if like.ndim == 1 and extra == 0:
        def impl(gradient, like):
            if gradient.shape[0] == like.shape[0]:
                return gradient
            out = np.empty(like.shape, gradient.dtype)
            out[0] = gradient.sum()
            return out
        return impl
    # Sums below are element loops: an array `+=` makes Numba compile its broadcast-error
    # formatting (about 4 s of every adjoint's compile time).
    if like.ndim == 1 and extra == 1:
        def impl(gradient, like):
            out = np.zeros(gradient.shape[1], gradient.dtype)
            for i in range(gradient.shape[0]):
                for j in range(gradient.shape[1]):
                    out[j] += gradient[i, j]
            if like.shape[0] == 1 and gradient.shape[1] != 1:
                out2 = np.empty(1, gradient.dtype)
                out2[0] = out.sum()
                return out2
            return out
        return impl
    if like.ndim == 2 and extra == 0:
        def impl(gradient, like):
            if gradient.shape[0] == like.shape[0] and gradient.shape[1] == like.shape[1]:
                return gradient
            g = gradient
            if like.shape[0] == 1 and g.shape[0] != 1:
                rows = np.zeros((1, g.shape[1]), g.dtype)
                for i in range(g.shape[0]):
                    for j in range(g.shape[1]):
                        rows[0, j] += g[i, j]
                g = rows
            if like.shape[1] == 1 and g.shape[1] != 1:
                cols = np.empty((g.shape[0], 1), g.dtype)
                for i in range(g.shape[0]):
                    cols[i, 0] = g[i].sum()
                g = cols
            return g
        return impl
    if extra < 0:
        raise numba.core.errors.TypingError(
            f"srcgrad: cannot sum a {gradient.ndim}-d gradient back to a {like.ndim}-d array")

    def any_ndim(gradient, like):
        if extra == 0 and gradient.shape == like.shape:
            return gradient
        out = np.zeros(like.shape, gradient.dtype)
        sum_broadcast_into(np.ascontiguousarray(gradient), out)
        return out
    return any_ndim


@numba.njit(cache=True)
def sum_broadcast_into(gradient, out):
    """``out += gradient`` summed over the axes broadcasting added or stretched (any ndim).

    ``gradient`` is C-contiguous; ``out`` C-contiguous with ``out.ndim <= gradient.ndim``, each of
    its axes equal to the gradient's trailing one or 1. One pass over the gradient in memory
    order, an odometer of indices carrying the offset into ``out`` (stride 0 on summed axes)."""
    nd, lead = gradient.ndim, gradient.ndim - out.ndim
    size = np.empty(nd, np.int64)
    out_size = np.ones(nd, np.int64)
    for axis in range(nd):
        size[axis] = gradient.shape[axis]
    for axis in range(out.ndim):
        out_size[lead + axis] = out.shape[axis]
        if out.shape[axis] != 1 and out.shape[axis] != gradient.shape[lead + axis]:
            raise ValueError("unbroadcast: the gradient's shape does not broadcast to the array's")
    stride = np.zeros(nd, np.int64)
    step = 1
    for axis in range(nd - 1, -1, -1):
        if out_size[axis] == size[axis]:
            stride[axis] = step
        step *= out_size[axis]
    flat_in, flat_out = gradient.ravel(), out.ravel()
    index = np.zeros(nd, np.int64)
    at = 0
    for k in range(flat_in.size):
        flat_out[at] += flat_in[k]
        axis = nd - 1
        while axis >= 0:
            index[axis] += 1
            at += stride[axis]
            if index[axis] < size[axis]:
                break
            at -= stride[axis] * size[axis]
            index[axis] = 0
            axis -= 1


# ---- array helpers: Numba overloads (1-d and 2-d arrays) ---------------------------------------

def _is_none(t):
    return t is None or isinstance(t, (types.NoneType, types.Omitted))


def _literal(t):
    return getattr(t, "literal_value", None)


def _bad_axis(x, axis):
    """NumPy's AxisError message for an out-of-range literal axis, else None.

    The overloads below then compile to code that raises it (a ValueError, as NumPy's AxisError
    is), so that an out-of-range axis is an error on this target too, not another axis' result."""
    ax = _literal(axis)
    ndim = getattr(x, "ndim", 0)
    if isinstance(ax, int) and not isinstance(ax, bool) and not -ndim <= ax < ndim:
        return f"axis {ax} is out of bounds for array of dimension {ndim}"
    return None


def _axis_type_check(what, axis):
    """A refusal (SrcgradError: Numba passes it through) for an axis srcgrad cannot compile."""
    if _is_none(axis) or isinstance(axis, types.Integer):
        return
    raise numba.core.errors.TypingError(
        f"srcgrad: {what} with an axis of type {axis} (a tuple of axes) is not supported on "
        "target='cpu': reduce one axis at a time")


# -- any axis of any array: the array seen as (outer, n, inner), reduced along its middle axis ----
# These implementations take the axis as a run-time integer, so an axis held in a variable (a
# function argument: not a Numba literal) means what it says, and arrays of any ndim work.

@register_jitable
def _axis_index(axis, ndim):
    """``axis`` as an index in 0..ndim-1 (negative axes count from the end); NumPy's error else."""
    if axis < -ndim or axis >= ndim:
        raise ValueError("axis is out of bounds for the array's dimension")
    return axis + ndim if axis < 0 else axis


@register_jitable
def _around_axis(shape, ax):
    """(outer, n, inner): the sizes of the axes before ``ax``, of ``ax``, and of those after."""
    outer = 1
    inner = 1
    for k in range(len(shape)):
        if k < ax:
            outer *= shape[k]
        elif k > ax:
            inner *= shape[k]
    return outer, shape[ax], inner


_REDUCED_SHAPES = {}


def _reduced_shape(ndim, keep):
    """A jitable ``(shape, ax) ->`` the shape after reducing axis ``ax`` (kept as 1 when ``keep``):
    the result's length is fixed by ``ndim``, its entries are chosen at run time."""
    key = (ndim, keep)
    if key not in _REDUCED_SHAPES:
        if keep:
            items = [f"1 if ax == {k} else shape[{k}]" for k in range(ndim)]
        else:
            items = [f"shape[{k} if {k} < ax else {k + 1}]" for k in range(ndim - 1)]
        namespace = {}
        exec(f"def reduced_shape(shape, ax):\n    return ({', '.join(items)},)\n", namespace)  # noqa: S102
        _REDUCED_SHAPES[key] = register_jitable(namespace["reduced_shape"])
    return _REDUCED_SHAPES[key]


def _reduced_type(name, dtype):
    """NumPy's result type of reduction ``name`` of an array of (Numba) ``dtype``, as a NumPy
    scalar type: np.mean of integers is float64, np.sum/np.prod of booleans and integers int64."""
    if not isinstance(dtype, types.Float):
        if name == "mean":
            return np.float64
        if name in ("sum", "prod"):
            return np.int64
    from numba.np.numpy_support import as_dtype
    return as_dtype(dtype).type


def _reduce_along(combine_1d, ndim, keep, out_type):
    """reduce(x, axis, keepdims) for an integer ``axis`` (literal or not) of an N-d array."""
    shape_of = _reduced_shape(ndim, keep)

    def along(x, axis, keepdims):
        ax = _axis_index(axis, x.ndim)
        outer, n, inner = _around_axis(x.shape, ax)
        v = np.ascontiguousarray(x).reshape((outer, n, inner))
        out = np.empty((outer, inner), out_type)
        column = np.empty(n, x.dtype)
        for o in range(outer):
            for i in range(inner):
                for k in range(n):
                    column[k] = v[o, k, i]
                out[o, i] = combine_1d(column)
        return out.reshape(shape_of(x.shape, ax))
    return along


def _reduction(name, combine_1d):
    """A reduce_<name>(x, axis, keepdims) with a Numba overload: fast paths for a literal axis of
    a 1-d/2-d array, any integer axis of any array otherwise."""
    py = getattr(runtime, f"reduce_{name}")

    def stub(x, axis, keepdims):
        return py(x, axis, keepdims)

    @overload(stub, prefer_literal=True)
    def _ov(x, axis, keepdims):
        keep = bool(_literal(keepdims))
        bad = _bad_axis(x, axis)
        if bad is not None:
            if keep:
                def kept(x, axis, keepdims):
                    if x.size >= 0:
                        raise ValueError(bad)
                    return x
                return kept

            def dropped(x, axis, keepdims):
                if x.size >= 0:
                    raise ValueError(bad)
                return x[0]
            return dropped
        if _is_none(axis):
            if keep:
                ones = (1,) * x.ndim            # a constant: Numba cannot repeat a tuple
                return lambda x, axis, keepdims: np.full(ones, combine_1d(x.ravel()))
            return lambda x, axis, keepdims: combine_1d(x.ravel())
        _axis_type_check(f"np.{name}", axis)
        ax = _literal(axis)
        if x.ndim == 1:
            if keep:
                def kept_1d(x, axis, keepdims):
                    _axis_index(axis, 1)
                    return np.full(1, combine_1d(x))
                return kept_1d

            def whole_1d(x, axis, keepdims):
                _axis_index(axis, 1)
                return combine_1d(x)
            return whole_1d
        out_type = _reduced_type(name, x.dtype)
        if x.ndim != 2 or ax is None:           # arrays of 3+ dimensions, a run-time axis
            return _reduce_along(combine_1d, x.ndim, keep, out_type)
        if ax == 1 or ax == -1:
            def rows(x, axis, keepdims):
                out = np.empty(x.shape[0], out_type)
                for i in range(x.shape[0]):
                    out[i] = combine_1d(x[i])
                return out.reshape((x.shape[0], 1)) if keep else out
            return rows

        def cols(x, axis, keepdims):
            out = np.empty(x.shape[1], out_type)
            column = np.empty(x.shape[0], x.dtype)
            for j in range(x.shape[1]):
                for i in range(x.shape[0]):
                    column[i] = x[i, j]
                out[j] = combine_1d(column)
            return out.reshape((1, x.shape[1])) if keep else out
        return cols
    stub.__name__ = f"reduce_{name}"
    return stub


reduce_sum = _reduction("sum", numba.njit(lambda v: v.sum()))
reduce_mean = _reduction("mean", numba.njit(lambda v: v.sum() / v.size))
@numba.njit(cache=True)
def _max_1d(v):
    """v.max() as a plain loop (NumPy's NaN rule: any NaN gives NaN); Numba's own takes about a
    second to compile into every adjoint that reduces rows."""
    if v.size == 0:
        raise ValueError("zero-size array to reduction operation maximum which has no identity")
    best = v[0]
    for k in range(1, v.size):
        if v[k] > best or v[k] != v[k]:
            best = v[k]
    return best


@numba.njit(cache=True)
def _min_1d(v):
    """v.min() as a plain loop, as _max_1d."""
    if v.size == 0:
        raise ValueError("zero-size array to reduction operation minimum which has no identity")
    best = v[0]
    for k in range(1, v.size):
        if v[k] < best or v[k] != v[k]:
            best = v[k]
    return best


@numba.njit(cache=True)
def _prod_1d(v):
    product = v.dtype.type(1)
    for k in range(v.size):
        product *= v[k]
    return product


reduce_max = _reduction("max", _max_1d)
reduce_min = _reduction("min", _min_1d)
reduce_prod = _reduction("prod", _prod_1d)


def expand_reduced(gradient, x, axis, keepdims):
    return runtime.expand_reduced(gradient, x, axis, keepdims)


def _raising_bad_axis(message):
    """An adjoint helper's implementation for an out-of-range literal axis: NumPy's error."""
    def raising(gradient, x, axis, keepdims):
        if x.size >= 0:
            raise ValueError(message)
        return np.zeros_like(x)
    return raising


@overload(expand_reduced, prefer_literal=True)
def _expand_reduced_ov(gradient, x, axis, keepdims):
    if not isinstance(x, types.Array):          # np.sum of a scalar
        return lambda gradient, x, axis, keepdims: gradient
    bad = _bad_axis(x, axis)
    if bad is not None:
        return _raising_bad_axis(bad)
    if _is_none(axis):
        if isinstance(gradient, types.Array):
            return lambda gradient, x, axis, keepdims: np.full(x.shape, gradient.ravel()[0])
        return lambda gradient, x, axis, keepdims: np.full(x.shape, gradient)
    _axis_type_check("the adjoint of np.sum/np.mean", axis)
    ax = _literal(axis)
    if ax is None or x.ndim > 2:                # a run-time axis, arrays of 3+ dimensions
        return _expand_along
    if x.ndim == 1:
        return lambda gradient, x, axis, keepdims: np.full(x.shape, _first(gradient))
    if ax in (1, -1):
        def rows(gradient, x, axis, keepdims):
            g = gradient.ravel()
            if g.size != x.shape[0]:
                raise ValueError("expand_reduced: the gradient does not match the reduced rows")
            out = huge_pages(np.empty(x.shape, g.dtype))
            for i in range(x.shape[0]):
                for j in range(x.shape[1]):
                    out[i, j] = g[i]
            return out
        return rows

    def cols(gradient, x, axis, keepdims):
        g = gradient.ravel()
        if g.size != x.shape[1]:
            raise ValueError("expand_reduced: the gradient does not match the reduced columns")
        out = huge_pages(np.empty(x.shape, g.dtype))
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                out[i, j] = g[j]
        return out
    return cols


def _as_flat(v):
    return np.ravel(v)


@overload(_as_flat)
def _as_flat_ov(v):
    """The values of an array (C order) or a scalar as a 1-d array."""
    if isinstance(v, types.Array):
        return lambda v: np.ascontiguousarray(v).ravel()
    return lambda v: np.full(1, v)


def _expand_along(gradient, x, axis, keepdims):
    """expand_reduced for an integer axis (literal or not) of an N-d array."""
    ax = _axis_index(axis, x.ndim)
    outer, n, inner = _around_axis(x.shape, ax)
    g = _as_flat(gradient)
    if g.size != outer * inner:
        raise ValueError("expand_reduced: the gradient does not match the reduced array")
    out = huge_pages(np.empty((outer, n, inner), g.dtype))
    for o in range(outer):
        for k in range(n):
            for i in range(inner):
                out[o, k, i] = g[o * inner + i]
    return out.reshape(x.shape)


def _extreme_along(take_max):
    """max_adjoint/min_adjoint for an integer axis (literal or not) of an N-d array."""
    def along(gradient, x, axis, keepdims):
        ax = _axis_index(axis, x.ndim)
        outer, n, inner = _around_axis(x.shape, ax)
        v = np.ascontiguousarray(x).reshape((outer, n, inner))
        g = _as_flat(gradient)
        if g.size != outer * inner:
            raise ValueError("max/min adjoint: the gradient does not match the reduced array")
        out = np.zeros((outer, n, inner), g.dtype)
        column = np.empty(n, x.dtype)
        for o in range(outer):
            for i in range(inner):
                for k in range(n):
                    column[k] = v[o, k, i]
                out[o, _arg_extreme_1d(column, take_max), i] = g[o * inner + i]
        return out.reshape(x.shape)
    return along


def _prod_along(gradient, x, axis, keepdims):
    """prod_adjoint for an integer axis (literal or not) of an N-d array."""
    ax = _axis_index(axis, x.ndim)
    outer, n, inner = _around_axis(x.shape, ax)
    v = np.ascontiguousarray(x).reshape((outer, n, inner))
    g = _as_flat(gradient)
    if g.size != outer * inner:
        raise ValueError("prod_adjoint: the gradient does not match the reduced array")
    out = np.empty((outer, n, inner), x.dtype)
    column = np.empty(n, x.dtype)
    others = np.empty(n, x.dtype)
    for o in range(outer):
        for i in range(inner):
            for k in range(n):
                column[k] = v[o, k, i]
            _others_product_1d(column, g[o * inner + i], others)
            for k in range(n):
                out[o, k, i] = others[k]
    return out.reshape(x.shape)


def reduced_count(x, axis):
    return runtime.reduced_count(x, axis)


@overload(reduced_count, prefer_literal=True)
def _reduced_count_ov(x, axis):
    if not isinstance(x, types.Array):
        return lambda x, axis: 1
    if _is_none(axis):
        return lambda x, axis: x.size
    _axis_type_check("np.mean", axis)
    return lambda x, axis: x.shape[_axis_index(axis, x.ndim)]


@numba.njit(cache=True)
def _arg_extreme_1d(v, take_max):
    """np.argmax(v) (np.argmin if not take_max) as a plain loop: the first extreme element, or
    the first NaN (NumPy's rule)."""
    if v.size == 0:
        raise ValueError("attempt to get argmax/argmin of an empty sequence")
    best, where = v[0], 0
    for k in range(v.size):
        if v[k] != v[k]:
            return k
        if (v[k] > best) if take_max else (v[k] < best):
            best, where = v[k], k
    return where


def _extremum(take_max):
    def stub(gradient, x, axis, keepdims):
        return runtime.extremum_adjoint(gradient, x, axis, keepdims, take_max)

    @overload(stub, prefer_literal=True)
    def _ov(gradient, x, axis, keepdims):
        if not isinstance(x, types.Array):      # np.max of a scalar
            return lambda gradient, x, axis, keepdims: gradient
        bad = _bad_axis(x, axis)
        if bad is not None:
            return _raising_bad_axis(bad)
        _axis_type_check("the adjoint of np.max/np.min", axis)
        if not _is_none(axis) and (_literal(axis) is None or x.ndim > 2):
            return _extreme_along(take_max)     # a run-time axis, arrays of 3+ dimensions
        if _is_none(axis) or x.ndim == 1:
            def whole(gradient, x, axis, keepdims):
                g = _first(gradient)
                out = np.zeros(x.size, type(g))
                out[_arg_extreme_1d(x.ravel(), take_max)] = g
                return out.reshape(x.shape)
            return whole
        ax = _literal(axis)
        if ax in (1, -1):
            def rows(gradient, x, axis, keepdims):
                g = gradient.ravel()
                out = np.zeros(x.shape, g.dtype)
                for i in range(x.shape[0]):
                    out[i, _arg_extreme_1d(x[i], take_max)] = g[i]
                return out
            return rows

        def cols(gradient, x, axis, keepdims):
            g = gradient.ravel()
            out = np.zeros(x.shape, g.dtype)
            for j in range(x.shape[1]):
                out[_arg_extreme_1d(x[:, j], take_max), j] = g[j]
            return out
        return cols
    return stub


def _first(v):
    return v


@overload(_first)
def _first_ov(v):
    if isinstance(v, types.Array):
        return lambda v: v.ravel()[0]
    return lambda v: v


max_adjoint = _extremum(True)
min_adjoint = _extremum(False)


@numba.njit(cache=True)
def _others_product_1d(v, scale, out):
    """out[k] = scale * (the product of v's elements but v[k]): exclusive prefix products on the
    way up, suffix products on the way down (no division, so zeros in v are no special case)."""
    before = v.dtype.type(1)
    for k in range(v.size):
        out[k] = before
        before *= v[k]
    after = v.dtype.type(1)
    for k in range(v.size - 1, -1, -1):
        out[k] *= after * scale
        after *= v[k]


def prod_adjoint(gradient, x, axis, keepdims):
    return runtime.prod_adjoint(gradient, x, axis, keepdims)


@overload(prod_adjoint, prefer_literal=True)
def _prod_adjoint_ov(gradient, x, axis, keepdims):
    """runtime.prod_adjoint for scalars, whole arrays, and rows or columns of matrices."""
    if not isinstance(x, types.Array):
        return lambda gradient, x, axis, keepdims: gradient
    bad = _bad_axis(x, axis)
    if bad is not None:
        return _raising_bad_axis(bad)
    _axis_type_check("the adjoint of np.prod", axis)
    if not _is_none(axis) and (_literal(axis) is None or x.ndim > 2):
        return _prod_along                      # a run-time axis, arrays of 3+ dimensions
    if _is_none(axis) or x.ndim == 1:
        def whole(gradient, x, axis, keepdims):
            out = np.empty(x.size, x.dtype)
            _others_product_1d(np.ascontiguousarray(x).ravel(), _first(gradient), out)
            return out.reshape(x.shape)
        return whole
    ax = _literal(axis)
    if ax in (1, -1):
        def rows(gradient, x, axis, keepdims):
            g = gradient.ravel()
            if g.size != x.shape[0]:
                raise ValueError("prod_adjoint: the gradient does not match the reduced rows")
            out = np.empty(x.shape, x.dtype)
            for i in range(x.shape[0]):
                _others_product_1d(x[i], g[i], out[i])
            return out
        return rows

    def cols(gradient, x, axis, keepdims):
        g = gradient.ravel()
        if g.size != x.shape[1]:
            raise ValueError("prod_adjoint: the gradient does not match the reduced columns")
        out_t = np.empty((x.shape[1], x.shape[0]), x.dtype)
        column = np.empty(x.shape[0], x.dtype)
        for j in range(x.shape[1]):
            for i in range(x.shape[0]):
                column[i] = x[i, j]
            _others_product_1d(column, g[j], out_t[j])
        return out_t.T.copy()
    return cols


def matmul_grad_left(g, a, b):
    return runtime.matmul_grad_left(g, a, b)


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
    return lambda g, a, b: matmul(g, b.T)        # b.T is a view: BLAS reads it transposed


def matmul_grad_right(g, a, b):
    return runtime.matmul_grad_right(g, a, b)


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
    return lambda g, a, b: matmul(a.T, g)


@numba.njit(cache=True)
def gather2(x, rows, cols):
    out = np.empty(rows.shape[0], x.dtype)
    for k in range(rows.shape[0]):
        out[k] = x[rows[k], cols[k]]
    return out


@numba.njit(cache=True)
def scatter_add2(adjoint, rows, cols, gradient):
    for k in range(rows.shape[0]):
        adjoint[rows[k], cols[k]] += gradient[k]


@numba.njit(cache=True)
def scatter_add1(adjoint, index, gradient):
    for k in range(index.shape[0]):
        adjoint[index[k]] += gradient[k]


clip_scalar = _helper(runtime.clip_scalar)


def external(qualified_name):
    """A user function with a registered rule, compiled for Numba if it is plain Python."""
    from ..rules import external as lookup
    function = lookup(qualified_name)
    if hasattr(function, "py_func"):
        return function
    return numba.njit(cache=True)(function)

new_float32_tape = _helper(runtime.new_float32_tape)


@numba.njit(cache=True)
def reshape_any(x, shape):
    """np.reshape that also accepts non-contiguous arrays (it copies them, as NumPy does)."""
    return np.ascontiguousarray(x).reshape(shape)


@numba.njit(cache=True)
def push_slice(tape, top, view):
    count = view.size
    while top + count > tape.shape[0]:
        tape = grow(tape)
    tape[top:top + count] = np.ascontiguousarray(view).ravel()
    return tape, top + count


@numba.njit(cache=True)
def tape_slice(tape, top, like):
    return tape[top:top + like.size].reshape(like.shape).astype(like.dtype)


def concat_part(gradient, k, parts, axis):
    return runtime.concat_part(gradient, k, parts, axis)


@overload(concat_part, prefer_literal=True)
def _concat_part_ov(gradient, k, parts, axis):
    if isinstance(axis, types.Integer) and _literal(axis) is None:
        return _concat_part_along(gradient, parts)
    ax = _literal(axis)
    ax = 0 if ax is None else ax % gradient.ndim
    index = _literal(k)
    if isinstance(parts, types.BaseTuple) and not isinstance(parts, types.UniTuple) and \
            isinstance(index, int) and ax in (0, 1) and ax < gradient.ndim:
        # parts of different types (a slice beside a new array): a heterogeneous tuple can only
        # be indexed by constants, so the offset is written out for this (literal) k
        offset = " + ".join(f"parts[{j}].shape[{ax}]" for j in range(index)) or "0"
        view = "gradient[start:stop]" if ax == 0 else "gradient[:, start:stop]"
        namespace = {}
        exec(f"def constant_k(gradient, k, parts, axis):\n"          # noqa: S102
             f"    start = {offset}\n"
             f"    stop = start + parts[{index}].shape[{ax}]\n"
             f"    return {view}\n", namespace)
        return namespace["constant_k"]
    if ax == 0:
        def first(gradient, k, parts, axis):
            start = 0
            for j in range(k):
                start += parts[j].shape[0]
            return gradient[start:start + parts[k].shape[0]]
        return first
    if ax == 1 and gradient.ndim == 2:
        def second(gradient, k, parts, axis):
            start = 0
            for j in range(k):
                start += parts[j].shape[1]
            return gradient[:, start:start + parts[k].shape[1]]
        return second
    return _concat_part_along(gradient, parts)        # other axes, arrays of 3+ dimensions


def stack_part(gradient, k, axis):
    return runtime.stack_part(gradient, k, axis)


@overload(stack_part, prefer_literal=True)
def _stack_part_ov(gradient, k, axis):
    if isinstance(axis, types.Integer) and _literal(axis) is None:
        return _stack_part_along(gradient.ndim)
    ax = _literal(axis)
    ax = 0 if ax is None else ax % gradient.ndim
    if ax == 0:
        return lambda gradient, k, axis: gradient[k]
    if ax == 1 and gradient.ndim == 2:
        return lambda gradient, k, axis: gradient[:, k]
    if ax == 1 and gradient.ndim == 3:
        return lambda gradient, k, axis: gradient[:, k]
    if ax == 2 and gradient.ndim == 3:
        return lambda gradient, k, axis: gradient[:, :, k]
    return _stack_part_along(gradient.ndim)           # other axes and dimensions


# np.concatenate / np.stack with an axis held in a variable (not a Numba literal): the block of
# the gradient along a run-time axis, as a copy (views along different axes have different types)
_RESIZED_SHAPES = {}


def _resized_shape(ndim):
    """A jitable ``(shape, ax, size) ->`` ``shape`` with entry ``ax`` replaced by ``size``."""
    if ndim not in _RESIZED_SHAPES:
        items = [f"size if ax == {k} else shape[{k}]" for k in range(ndim)]
        namespace = {}
        exec(f"def resized_shape(shape, ax, size):\n    return ({', '.join(items)},)\n", namespace)  # noqa: S102
        _RESIZED_SHAPES[ndim] = register_jitable(namespace["resized_shape"])
    return _RESIZED_SHAPES[ndim]


def _concat_part_along(gradient, parts):
    if not isinstance(parts, types.UniTuple):
        raise numba.core.errors.TypingError(
            "srcgrad: np.concatenate of arrays of different kinds with an axis held in a variable "
            "is not supported on target='cpu': write the axis as a number")
    shape_of = _resized_shape(gradient.ndim)

    def along(gradient, k, parts, axis):
        ax = _axis_index(axis, gradient.ndim)
        start = 0
        for j in range(k):
            start += parts[j].shape[ax]
        size = parts[k].shape[ax]
        outer, n, inner = _around_axis(gradient.shape, ax)
        v = np.ascontiguousarray(gradient).reshape((outer, n, inner))
        out = np.empty((outer, size, inner), gradient.dtype)
        for o in range(outer):
            for c in range(size):
                for i in range(inner):
                    out[o, c, i] = v[o, start + c, i]
        return out.reshape(shape_of(gradient.shape, ax, size))
    return along


def _stack_part_along(ndim):
    shape_of = _reduced_shape(ndim, False)

    def along(gradient, k, axis):
        ax = _axis_index(axis, gradient.ndim)
        outer, n, inner = _around_axis(gradient.shape, ax)
        v = np.ascontiguousarray(gradient).reshape((outer, n, inner))
        out = np.empty((outer, inner), gradient.dtype)
        for o in range(outer):
            for i in range(inner):
                out[o, i] = v[o, k, i]
        return out.reshape(shape_of(gradient.shape, ax))
    return along


# -- NumPy/SciPy coverage helpers (runtime.LIBRARY_HELPERS) -------------------------------------
# Compiled versions live in cpu_library; a helper it does not define is the runtime one, compiled.
from . import cpu_library as _cpu_library  # noqa: E402

for _name in runtime.LIBRARY_HELPERS:
    if _name not in _cpu_library._LAZY:         # those are built on first use (__getattr__ below)
        globals()[_name] = getattr(_cpu_library, _name, None) or numba.njit(cache=True)(getattr(runtime, _name))


def __getattr__(name):
    """The library ufuncs (and the functions calling them) are compiled on first use: see
    cpu_library._LAZY."""
    if name in _cpu_library._LAZY:
        value = globals()[name] = getattr(_cpu_library, name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
