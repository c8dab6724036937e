"""The compiled loops over minibatches that :class:`srcgrad.optim.MinibatchLoop` runs: the batch
gather, and the loops that call a fused training step (:mod:`srcgrad.training.fused_sgd`: SGD,
Momentum) once per batch. The step and the loops are separate compiled functions, the step
passed as a first-class function (see MinibatchLoop's docstring for why). The loops release the
GIL (``nogil``): while one trains, another thread may compile (examples/train_mnist.py compiles
its accuracy counter during the first epoch). Python calls them through their CPython wrappers
(``entry_point``), nothing through a C function pointer: compiled without the cfunc wrapper
(less code for LLVM in every cold training process)."""

from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

try:        # Numba's own key for a value's type (what its dispatchers look types up by)
    from numba._dispatcher import compute_fingerprint
except ImportError:     # pragma: no cover - another Numba: every call runs numba.typeof
    compute_fingerprint = None

# The batch gather copies rows that lie at random places in X (MNIST: 3136-byte rows of a 188 MB
# array). One row at a time it took ~2.5x as long as a contiguous copy of as many bytes (MNIST,
# batch 64: 25 against 10 ms of CPU per epoch): each row starts where the hardware prefetcher has
# not been, so the copy waits on memory at every row start. Copying ROWS_IN_FLIGHT rows side by
# side keeps that many rows' misses in flight at once, and touching the start of the next group's
# rows (prefetch_row_start) begins their fetch one group early: 19-23 against 25-33 ms per epoch,
# the same bytes in the same places (benchmarks/results/mnist_mstep.md; 2 rows side by side or
# prefetch alone gained less, prefetching 8 or 16 rows ahead no more).
ROWS_IN_FLIGHT = 4      # _gather_batch's row copies are written out for 4


def loop_argument_types(cache, values):
    """``tuple(numba.typeof(v) for v in values)``, the Numba types of the arguments
    :class:`srcgrad.optim.MinibatchLoop` passes a batch loop, kept in ``cache`` (a dict the loop
    owns) under the values' Numba fingerprints: ``compute_fingerprint``, the key Numba's
    dispatchers find a value's type by (arrays: dtype, dimensions, layout, writeable and aligned
    flags; tuples element by element). Why: typeof of these dozen values took ~120 us of a
    ~190 us call that trains no batch (MNIST, batch 64; a batch is ~200-300 us), and
    ``blas_threads="auto"`` calls the loop once per timed chunk of 4 or 8 batches, so the
    overhead was 5-10% of a timed chunk's batches and more for a shorter chunk. Values the
    fingerprint cannot key (it raises) or arrays of a non-native byte order (it does not tell
    them from native ones; typeof refuses them) are typed every time."""
    key = None
    if compute_fingerprint is not None:
        try:
            key = tuple(compute_fingerprint(v) for v in values)
        except (TypeError, ValueError, NotImplementedError):
            key = None
        if key is not None and not all(_native(v) for v in values):
            key = None
    found = cache.get(key) if key is not None else None
    if found is None:
        found = tuple(numba.typeof(v) for v in values)
        if key is not None:
            cache[key] = found
    return found


def _native(value):
    """Whether no array in ``value`` (an array, or a tuple of them) stores a non-native byte
    order."""
    if isinstance(value, tuple):
        return all(_native(v) for v in value)
    dtype = getattr(value, "dtype", None)
    return dtype is None or not hasattr(value, "shape") or dtype.isnative


@intrinsic
def prefetch_row_start(typingctx, X, row):
    """Ask the CPU to fetch the 128 bytes where row ``row`` of the 2-d array ``X`` starts into its
    caches, without waiting for them (LLVM's ``llvm.prefetch``: read, keep in cache). A hint: it
    changes no value, and an address outside the array (a negative row) cannot fault."""
    if not (isinstance(X, types.Array) and X.ndim == 2 and isinstance(row, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        i8p, i32, i64 = ir.IntType(8).as_pointer(), ir.IntType(32), ir.IntType(64)
        strides = cgutils.unpack_tuple(builder, array.strides, 2)
        start = builder.gep(builder.bitcast(array.data, i8p),
                            [builder.mul(context.cast(builder, args[1], signature.args[1],
                                                      types.intp), strides[0])])
        # declare_intrinsic mangles the name for the pointer type as this llvmlite's LLVM
        # expects (llvm.prefetch.p0i8 with typed pointers), as Numba's own memcpy/memset calls do
        fetch = builder.module.declare_intrinsic(
            "llvm.prefetch", [i8p], ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]))
        for offset in (0, 64):
            builder.call(fetch, [builder.gep(start, [ir.Constant(i64, offset)]),
                                 ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.void(X, row), codegen


def _batch_value(value, scale):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


@overload(_batch_value, inline="always")
def _ov_batch_value(value, scale):
    """A sample's element as the batch stores it: ``value`` itself when ``scale`` is None, else
    ``value`` converted to ``scale``'s float type and multiplied by it (integer samples, e.g.
    uint8 pixels, scaled in the gather: ``load_mnist``'s float32 images are ``float32(pixel) *
    float32(1 / 255)``, this product). Chosen by type when the batch loop compiles: a None scale
    adds nothing to the copy."""
    if isinstance(scale, types.NoneType):
        return lambda value, scale: value
    to_float = scale
    return lambda value, scale: to_float(value) * scale


@numba.njit(inline="always")
def _copy_rows(X, order, start, size, Xc, scale):
    """``Xc[r] = X[order[start + r]]`` for ``r < size``, 2-d ``X`` and ``Xc``, each element
    through :func:`_batch_value` (``scale`` None: copied as it is): ROWS_IN_FLIGHT
    rows copied side by side, the next group's first lines fetched ahead (see ROWS_IN_FLIGHT).
    Past the batch's end a group's row indices stop at its last row (copied again, the same
    values): one loop, no remainder loop to compile. (Conditional expressions rather than min():
    Numba compiles min() as one more function.)"""
    last = size - 1
    for r in range(0, size, ROWS_IN_FLIGHT):
        for q in range(r + ROWS_IN_FLIGHT, r + 2 * ROWS_IN_FLIGHT):
            prefetch_row_start(X, order[start + (q if q < last else last)])
        r1 = r + 1 if r + 1 < last else last
        r2 = r + 2 if r + 2 < last else last
        r3 = r + 3 if r + 3 < last else last
        s0, s1, s2, s3 = (order[start + r], order[start + r1], order[start + r2],
                          order[start + r3])
        for k in range(Xc.shape[1]):
            Xc[r, k] = _batch_value(X[s0, k], scale)
            Xc[r1, k] = _batch_value(X[s1, k], scale)
            Xc[r2, k] = _batch_value(X[s2, k], scale)
            Xc[r3, k] = _batch_value(X[s3, k], scale)


@numba.njit(inline="always")
def _gather_rows(X, y, order, start, batch_size, Xb, yb, scale):
    """:func:`_gather_batch` for 2-d samples and 1-d labels, the usual case, written into its
    caller's IR (Numba inlines it before typing: no function of its own to compile). The batch
    loops below call it directly, choosing by the types of their own arguments (a branch Numba
    prunes before typing): ``_gather_batch`` is then not compiled at all, nor its code twice
    (once on its own, once more in the loop LLVM inlined it into): 0.25-0.3 s of CPU in every
    cold training process (benchmarks/results/train_compile_mcold5.md)."""
    size = order.shape[0] - start
    if size > batch_size:
        size = batch_size
    Xc = Xb[:size]
    yc = yb[:size]
    _copy_rows(X, order, start, size, Xc, scale)
    for r in range(size):
        yc[r] = y[order[start + r]]
    return Xc, yc, size


@numba.njit(cache=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _gather_batch(X, y, order, start, batch_size, Xb, yb, scale):
    """The rows ``order[start:start + batch_size]`` of ``X`` and ``y`` gathered into the batch
    buffers ``Xb``/``yb`` (their first rows for a shorter last batch): ``(Xc, yc, size)``.
    ``scale``: None, or the float (of ``Xb``'s dtype) integer samples are multiplied by as they
    are copied (:func:`_batch_value`).
    The row copies are written out here rather than calling a row gather for X and for y,
    and a shorter batch is a slice of the buffers rather than a fresh pair: three compiled
    functions fewer in every MinibatchLoop's cold compile.
    The usual 2-d samples and 1-d labels are copied without reshaping: ``X.ndim`` is a constant
    when Numba compiles this, so the other branch is pruned before typing, and the reshapes'
    code (a size check and a no-copy attempt each) was about a third of this function's cold
    compile (0.30-0.42 -> 0.23 s CPU, compiled alone after a reshape elsewhere, load 3.4)."""
    if X.ndim == 2 and y.ndim == 1:
        return _gather_rows(X, y, order, start, batch_size, Xb, yb, scale)
    size = order.shape[0] - start
    if size > batch_size:
        size = batch_size
    Xc = Xb[:size]
    yc = yb[:size]
    if X.ndim == 2:
        _copy_rows(X, order, start, size, Xc, scale)
    else:
        X_rows = X.reshape(X.shape[0], -1)
        Xc_rows = Xc.reshape(size, -1)
        for r in range(size):
            sample = order[start + r]
            for k in range(Xc_rows.shape[1]):
                Xc_rows[r, k] = _batch_value(X_rows[sample, k], scale)
    if y.ndim == 1:
        for r in range(size):
            yc[r] = y[order[start + r]]
    else:
        y_rows = y.reshape(y.shape[0], -1)
        yc_rows = yc.reshape(size, -1)
        for r in range(size):
            sample = order[start + r]
            for k in range(yc_rows.shape[1]):
                yc_rows[r, k] = y_rows[sample, k]
    return Xc, yc, size


@numba.njit(cache=True, nogil=True, no_cfunc_wrapper=True)
def _run_sgd_steps(step, params, X, y, order, batch_size, first, stop, lr, Xb, yb, scale, seed,
                   progress):
    """:func:`_run_minibatches` for plain SGD: ``loss = step(*params, Xb, yb, seed, lr)`` updates
    ``params`` itself (:mod:`srcgrad.training.fused_sgd`)."""
    total = 0.0
    for batch in range(first, stop):
        progress[0] = batch
        progress[1] = total
        if X.ndim == 2 and y.ndim == 1:     # (pruned before typing: see _gather_rows)
            Xc, yc, size = _gather_rows(X, y, order, batch * batch_size, batch_size, Xb, yb,
                                        scale)
        else:
            Xc, yc, size = _gather_batch(X, y, order, batch * batch_size, batch_size, Xb, yb,
                                         scale)
        loss = step(*params, Xc, yc, seed, lr)
        total += loss * size
    return total


@numba.njit(cache=True, nogil=True, no_cfunc_wrapper=True)
def _run_momentum_steps(step, params, X, y, order, batch_size, first, stop, lr, mu, nesterov,
                        velocity, Xb, yb, scale, seed, progress):
    """:func:`_run_sgd_steps` for Momentum: ``loss = step(*params, Xb, yb, seed, lr, mu,
    nesterov, velocity)`` updates ``params`` and ``velocity`` itself."""
    total = 0.0
    for batch in range(first, stop):
        progress[0] = batch
        progress[1] = total
        if X.ndim == 2 and y.ndim == 1:
            Xc, yc, size = _gather_rows(X, y, order, batch * batch_size, batch_size, Xb, yb,
                                        scale)
        else:
            Xc, yc, size = _gather_batch(X, y, order, batch * batch_size, batch_size, Xb, yb,
                                         scale)
        loss = step(*params, Xc, yc, seed, lr, mu, nesterov, velocity)
        total += loss * size
    return total
