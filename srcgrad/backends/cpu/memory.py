"""Memory of compiled code: the C allocator's tuning, huge pages for large fresh arrays, and the
tapes of overwritten values (growing under SRCGRAD_MAX_TAPE_BYTES)."""
import os
import sys
from types import FunctionType

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic, overload

from ... import runtime


def runtime_code(function, namespace):
    """A python helper of :mod:`srcgrad.runtime` with its global names looked up in ``namespace``
    (a module of this package, holding the compiled helpers it calls): its own code, compiled for
    this target, so that one source serves both."""
    return FunctionType(function.__code__, namespace, function.__name__, function.__defaults__,
                        function.__closure__)


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
def huge_pages(typingctx, a):
    """``a`` (fresh, not yet written) asks for transparent huge pages when it is large (Linux);
    the advice is a hint: a failure changes nothing. Returns ``a``.

    An intrinsic (a size test and a call written straight into the caller's code) rather than an
    inlined ``@njit`` function: an adjoint allocates through it a dozen times, and Numba typed and
    lowered every inlined copy again (a tenth of a small adjoint's compile)."""
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, signature, args):
        if sys.platform.startswith("linux"):
            ary = context.make_array(a)(context, builder, args[0])
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
        return impl_ret_borrowed(context, builder, a, args[0])
    return a(a), codegen


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


# the runtime's pushes, calling the grow above
push_float = numba.njit(cache=True, inline="always")(runtime_code(runtime.push_float, globals()))
push_int = numba.njit(cache=True, inline="always")(runtime_code(runtime.push_int, globals()))


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
