"""Memory of compiled code: the C allocator's tuning, huge pages for large fresh arrays, fresh
arrays allocated without a compiled function of their own (``fresh_empty``, ``fresh_zeros``), the
large tape and snapshot buffers kept between calls, and the tapes of overwritten values (growing
under SRCGRAD_MAX_TAPE_BYTES)."""
import os
import sys
import threading
from types import FunctionType

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.core.typing.npydecl import parse_dtype, parse_shape
from numba.extending import intrinsic, overload
from numba.np.arrayobj import _empty_nd_impl, _parse_empty_args

from ... import runtime


def runtime_code(function, namespace):
    """A python helper of :mod:`srcgrad.runtime` with its global names looked up in ``namespace``
    (a module of this package, holding the compiled helpers it calls): its own code, compiled for
    this target, so that one source serves both."""
    return FunctionType(function.__code__, namespace, function.__name__, function.__defaults__,
                        function.__closure__)


def _helper(function):
    return numba.njit(cache=True, inline="always")(function)


# -- the C allocator ---------------------------------------------------------------------------
# Compiled code allocates arrays with the C library's malloc. With glibc's defaults whether a
# freed array of a few megabytes goes back to the OS (heap trimming, or an mmap of its own), so
# that the next call page-faults through it again 4 KB at a time, depends on which allocation
# happens to lie at the top of the heap when a large free comes: the thresholds move with the
# sizes freed so far. The vectorized GMM gradient (d=10, K=25, n=1000) ran in 1.0-1.4 ms in some
# processes and 8-14 ms (1,400-1,900 page faults a call) in others with the same code, and a
# change of the generated code as small as updating a slice through a view moved it from one to
# the other. So the thresholds are fixed at import (glibc only): arrays up to 32 MB (the most
# glibc's own moving threshold reaches) come from the heap, and freed memory up to 64 MB (twice
# that, glibc's own ratio) stays there for the next call. SRCGRAD_MALLOC_TUNING=0 leaves glibc's
# defaults. (An earlier note measured the LSTM gradient (T=500) slower with the tuning, 35 against
# 20 ms wall at a varying load; in CPU time, three alternating processes each at load 9, the
# median call is 12.4-13.4 ms with it and 12.3-14.0 ms without, with 0 page faults a call
# against 22.)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3          # glibc's mallopt parameter numbers


def _tune_malloc():
    if os.environ.get("SRCGRAD_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    import ctypes
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt          # glibc only (musl has none)
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 64 << 20))


MALLOC_TUNED = _tune_malloc()


# -- large tape and snapshot buffers, kept between calls ---------------------------------------
# A gradient's tapes and step snapshots are as large as its loop (the heat stencil's snapshots:
# 1 MB for 128 points and 1000 steps) and are freed when the call returns. Whether the next call's
# allocation page-faults through fresh memory again depends on the state of glibc's heap (its
# dynamic mmap and trim thresholds): measured in one benchmark process, the heat gradient took
# 836 µs a call against 305 µs with SRCGRAD_MALLOC_TUNING=1; in a quieter process the same code
# took 360 µs. The allocator thresholds above help only while they are in force (a user may turn
# them off, or another library may change them) and only up to 32 MB, so these buffers also
# come from a small pool of blocks that srcgrad keeps: a buffer of at least
# RETAIN_MIN_BYTES is a view of a kept block that nothing else references, so a block is handed
# out again only once every array made from it is gone (its reference count says so: a returned
# gradient, another thread's call, or a reentrant call still holding a view keep it taken). Blocks
# are reused for requests between half their size and their size; at most RETAIN_MAX_BYTES stay
# kept (free blocks are dropped first, a request that does not fit is a plain fresh array).
# release_retained() drops every free block. The compiled helpers reach the pool through one
# object-mode call per buffer (about 1 µs), which is why small buffers skip it.
RETAIN_MIN_BYTES = 1 << 16
RETAIN_MAX_BYTES = 256 << 20
_retained = []                      # the kept blocks (1-d uint8 arrays)
_retained_lock = threading.Lock()


def _reference_counts(blocks):
    return [sys.getrefcount(block) for block in blocks]


# the count of a block that only the pool references, seen through _reference_counts (measured
# rather than assumed: it depends on the interpreter)
_FREE_COUNT = _reference_counts([np.empty(1, np.uint8)])[0]


def retained_block(nbytes):
    """``nbytes`` bytes (a 1-d uint8 view) of a kept block no other array uses, or a fresh array."""
    with _retained_lock:
        counts = _reference_counts(_retained)
        free = [k for k, count in enumerate(counts) if count <= _FREE_COUNT]
        fits = [k for k in free if nbytes <= _retained[k].shape[0] <= 2 * nbytes]
        if fits:
            return _retained[min(fits, key=lambda k: _retained[k].shape[0])][:nbytes]
        block = np.empty(nbytes, np.uint8)
        kept = sum(b.shape[0] for b in _retained)
        for k in sorted(free, key=lambda k: -_retained[k].shape[0]):
            if kept + nbytes <= RETAIN_MAX_BYTES:
                break
            kept -= _retained[k].shape[0]
            _retained[k] = None
        _retained[:] = [b for b in _retained if b is not None]
        if kept + nbytes <= RETAIN_MAX_BYTES:
            _retained.append(block)
        return block


def release_retained():
    """Drop the kept blocks no array uses (their memory goes back to the allocator); returns the
    number of bytes still kept (blocks in use)."""
    with _retained_lock:
        counts = _reference_counts(_retained)
        _retained[:] = [b for b, count in zip(_retained, counts) if count > _FREE_COUNT]
        return sum(b.shape[0] for b in _retained)


@numba.njit(cache=True)
def _kept_bytes(nbytes):
    with numba.objmode(block="uint8[::1]"):
        block = retained_block(nbytes)
    return block


@numba.njit(cache=True)
def tape_array(size, like):
    """np.empty(size, like.dtype) for a tape; from the kept blocks when it is large."""
    nbytes = size * like.itemsize
    if nbytes < RETAIN_MIN_BYTES:
        return np.empty(size, like.dtype)
    return _kept_bytes(nbytes).view(like.dtype)


# -- large arrays on transparent huge pages ----------------------------------------------------
# NumPy asks Linux for transparent huge pages on every large allocation (madvise); Numba's
# allocator does not, so the first write of a fresh 256 MB array takes one page fault per 4 KB
# page (~150 ms here, against ~45 ms on huge pages). Helpers that return large fresh arrays ask
# for them the way NumPy does.
_HUGE_PAGE_MIN_BYTES = 1 << 22       # NumPy's threshold (4 MiB)
_MADV_HUGEPAGE = 14


def advise_huge_pages(context, builder, array_type, value):
    """:func:`huge_pages`' code, written by a lowering: the fresh array ``value`` (of
    ``array_type``) asks for transparent huge pages when it is large (Linux)."""
    if sys.platform.startswith("linux"):
        ary = context.make_array(array_type)(context, builder, value)
        i64 = ir.IntType(64)
        nbytes = builder.mul(ary.nitems, ary.itemsize)
        large = builder.icmp_signed(">=", nbytes, ir.Constant(i64, _HUGE_PAGE_MIN_BYTES))
        with builder.if_then(large, likely=False):
            data = builder.ptrtoint(ary.data, i64)
            page = ir.Constant(i64, ~4095)
            start = builder.and_(builder.add(data, ir.Constant(i64, 4095)), page)
            end = builder.and_(builder.add(data, nbytes), page)    # whole pages inside it
            fnty = ir.FunctionType(ir.IntType(32), [i64, i64, ir.IntType(32)])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "madvise")
            builder.call(fn, [start, builder.sub(end, start),
                              ir.Constant(ir.IntType(32), _MADV_HUGEPAGE)])


@intrinsic
def huge_pages(typingctx, a):
    """``a`` (fresh, not yet written) asks for transparent huge pages when it is large (Linux);
    the advice is a hint: a failure changes nothing. Returns ``a``.

    An intrinsic (a size test and a call written straight into the caller's code) rather than an
    inlined ``@njit`` function: an adjoint allocates through it a dozen times, and Numba typed and
    lowered every inlined copy again (a tenth of a small adjoint's compile)."""
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, signature, args):
        advise_huge_pages(context, builder, a, args[0])
        return impl_ret_borrowed(context, builder, a, args[0])
    return a(a), codegen


# -- fresh arrays without a compiled function of their own --------------------------------------
# Numba's np.empty is an overload: its implementation is one more compiled function per ndim in
# every cold process (typed, lowered, optimized by LLVM, then linked into and optimized again in
# each caller), and np.zeros adds its body and fill per ndim. These intrinsics write the same
# allocation (Numba's own array allocation code, C order, its alignment) straight into the
# caller, np.zeros's memset after it: the MNIST training step allocates about a dozen arrays.
def _fresh_array(shape, dtype, zero):
    if (isinstance(dtype, types.Function) and dtype.typing_key is float) \
            or isinstance(dtype, (types.NoneType, types.Omitted)):
        real = types.float64                            # np.empty's default dtype
    else:
        real = parse_dtype(dtype)
    ndim = parse_shape(shape)
    if real is None or ndim is None:
        return None

    def codegen(context, builder, signature, args):
        array_type, sizes = _parse_empty_args(context, builder, signature, args)
        array = _empty_nd_impl(context, builder, array_type, sizes)
        if zero:
            cgutils.memset(builder, array.data, builder.mul(array.itemsize, array.nitems), 0)
        return array._getvalue()                        # a new reference, as np.empty's
    return types.Array(real, ndim, "C")(shape, dtype), codegen


@intrinsic
def fresh_empty(typingctx, shape, dtype):
    """``np.empty(shape, dtype)`` (C order) for a shape Numba's np.empty takes (an integer or a
    tuple of integers) and a dtype (a NumPy scalar type or class, a dtype, a dtype string),
    written into the caller: no compiled function of its own."""
    return _fresh_array(shape, dtype, zero=False)


@intrinsic
def fresh_zeros(typingctx, shape, dtype):
    """``np.zeros(shape, dtype)``: :func:`fresh_empty` and a memset (all bits zero: +0.0)."""
    return _fresh_array(shape, dtype, zero=True)


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
    bigger = tape_array(n * 2, tape)
    for i in range(n):
        bigger[i] = tape[i]
    return bigger
runtime_grow = grow


# the runtime's pushes, calling the grow above
push_float = numba.njit(cache=True, inline="always")(runtime_code(runtime.push_float, globals()))
push_int = numba.njit(cache=True, inline="always")(runtime_code(runtime.push_int, globals()))


new_float_tape = _helper(runtime.new_float_tape)
count_snapshot = numba.njit(cache=True)(runtime.count_snapshot)
pop_snapshot = numba.njit(cache=True)(runtime.pop_snapshot)


@numba.njit(cache=True)
def snapshot_buffer(array, count):
    """runtime.snapshot_buffer, from the kept blocks when it is large (see retained_block)."""
    count = max(count, 0)
    if count * array.nbytes > runtime.max_tape_bytes():
        raise MemoryError("srcgrad: the snapshots of arrays rebound in a loop would exceed "
                          "SRCGRAD_MAX_TAPE_BYTES (a loop with a huge trip count); reduce the problem "
                          "size or raise the limit")
    if count * array.nbytes < RETAIN_MIN_BYTES:
        return np.empty((count,) + array.shape, array.dtype)
    return _kept_bytes(count * array.nbytes).view(array.dtype).reshape((count,) + array.shape)


@numba.njit(cache=True)
def reserve_tape(tape, top, count):
    """runtime.reserve_tape, its new tape from the kept blocks when it is large."""
    need = top + max(count, 0)
    if need <= tape.shape[0]:
        return tape
    if need * tape.itemsize > runtime.max_tape_bytes():
        raise MemoryError("srcgrad: the tape of overwritten values would exceed SRCGRAD_MAX_TAPE_BYTES "
                          "(a loop with a huge trip count); reduce the problem size or raise the limit")
    bigger = tape_array(max(need, 2 * tape.shape[0]), tape)
    for i in range(top):
        bigger[i] = tape[i]
    return bigger


push_snapshot = numba.njit(cache=True)(runtime.push_snapshot)
snapshot_at = numba.njit(cache=True)(runtime.snapshot_at)
first_snapshot_row = numba.njit(cache=True)(runtime.first_snapshot_row)
new_int_tape = _helper(runtime.new_int_tape)
range_length = _helper(runtime.range_length)
_range_continues = _helper(runtime._range_continues)
new_float32_tape = _helper(runtime.new_float32_tape)


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
