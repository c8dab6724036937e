"""Runtime helpers called by generated code.

Each helper is plain Python (the ``python`` target runs it as is) that Numba can also compile
(the ``cpu`` backend wraps them with ``njit``; see :mod:`srcgrad.backends.cpu`). Keep them small:
generated code should read as if these were NumPy builtins.
"""
import os

import numpy as np

# The tape refuses to grow beyond this many bytes: a loop whose tape would not fit in memory fails
# early with a clear message instead of swapping the machine to death. Override with the
# environment variable SRCGRAD_MAX_TAPE_BYTES, read each time a tape grows (so setting it at any
# time takes effect, and compiled code never freezes a value into Numba's disk cache: the cpu
# backend reads it with the C library's getenv).
MAX_TAPE_BYTES = 8 * 1024 ** 3      # the limit when SRCGRAD_MAX_TAPE_BYTES is unset or empty


def max_tape_bytes():
    """The tape limit in force now."""
    text = os.environ.get("SRCGRAD_MAX_TAPE_BYTES")
    return int(text) if text else MAX_TAPE_BYTES


def new_float_tape():
    return np.empty(256, dtype=np.float64)


def new_float32_tape():
    return np.empty(256, dtype=np.float32)


def new_int_tape():
    return np.empty(256, dtype=np.int64)


def grow(tape):
    """A tape of twice the size holding the same values (geometric growth keeps pushes O(1))."""
    size = tape.shape[0] * 2
    if size * 8 > max_tape_bytes():
        raise MemoryError("srcgrad: the tape of overwritten values would exceed SRCGRAD_MAX_TAPE_BYTES "
                          "(a loop with a huge trip count); reduce the problem size or raise the limit")
    bigger = np.empty(size, dtype=tape.dtype)
    bigger[:tape.shape[0]] = tape
    return bigger


def push_float(tape, top, value):
    """Push ``value`` on a float tape; returns the (possibly regrown) tape and the new top."""
    if top == tape.shape[0]:
        tape = grow(tape)
    tape[top] = value
    return tape, top + 1


def push_int(tape, top, value):
    if top == tape.shape[0]:
        tape = grow(tape)
    tape[top] = value
    return tape, top + 1


def count_snapshot(total, snapshots, array, may_be_unset):
    """Bytes kept by array snapshots (see transform.py) once ``array`` is copied too; a clear
    MemoryError past SRCGRAD_MAX_TAPE_BYTES, as for the tape of scalars. ``array`` must have the
    shape of the snapshot before it (see :func:`pop_snapshot`)."""
    if len(snapshots) > 0 and snapshots[-1].shape != array.shape and \
            not (may_be_unset and len(snapshots) == 1 and snapshots[-1].size == 0):
        raise ValueError(SHAPE_CHANGE)
    total += array.nbytes
    if total > max_tape_bytes():
        raise MemoryError("srcgrad: the snapshots of arrays rebound in a loop would exceed "
                          "SRCGRAD_MAX_TAPE_BYTES (a loop with a huge trip count); reduce the problem "
                          "size or raise the limit")
    return total


def pop_snapshot(snapshots, current, may_be_unset):
    """The snapshot pushed last, which must have ``current``'s shape: the adjoint arrays have one
    shape per variable, so an array whose shape changes from one iteration to the next is refused
    here rather than differentiated wrongly. ``may_be_unset``: the bottom snapshot may be the empty
    placeholder of a variable first assigned inside the loop."""
    old = snapshots.pop()
    if old.shape != current.shape and not (may_be_unset and len(snapshots) == 0 and old.size == 0):
        raise ValueError(SHAPE_CHANGE)
    return old


def snapshot_buffer(array, count):
    """Room for ``count`` snapshots of ``array``: one allocation at the entry of a loop."""
    if count * array.nbytes > max_tape_bytes():
        raise MemoryError("srcgrad: the snapshots of arrays rebound in a loop would exceed "
                          "SRCGRAD_MAX_TAPE_BYTES (a loop with a huge trip count); reduce the problem "
                          "size or raise the limit")
    return np.empty((max(count, 0),) + array.shape, array.dtype)


def reserve_tape(tape, top, count):
    """``tape`` with room for ``count`` more values above ``top`` (grown once if needed): a loop
    whose trip counts are known at its entry then pushes without growth checks
    (tape.plan_loop_tapes). The copy is a loop (see backends.cpu.grow)."""
    need = top + max(count, 0)
    if need <= tape.shape[0]:
        return tape
    if need * tape.itemsize > max_tape_bytes():
        raise MemoryError("srcgrad: the tape of overwritten values would exceed SRCGRAD_MAX_TAPE_BYTES "
                          "(a loop with a huge trip count); reduce the problem size or raise the limit")
    bigger = np.empty(max(need, 2 * tape.shape[0]), tape.dtype)
    for i in range(top):
        bigger[i] = tape[i]
    return bigger


def push_snapshot(buffer, top, array):
    """Copy ``array`` into row ``top`` of a snapshot buffer; returns the next free row."""
    if array.shape != buffer.shape[1:]:
        raise ValueError(SHAPE_CHANGE)
    buffer[top] = array
    return top + 1


def snapshot_at(buffer, top, current):
    """Row ``top`` of a snapshot buffer; ``current`` (the value it replaces) must have its shape."""
    if current.shape != buffer.shape[1:]:
        raise ValueError(SHAPE_CHANGE)
    return buffer[top]


SHAPE_CHANGE = ("srcgrad: an array variable rebound in a loop changes shape from one assignment to "
                "the next; the reverse sweep supports one shape per variable: use a new name for the "
                "value of the new shape")


def range_length(start, stop, step):
    """len(range(start, stop, step)) without building the range."""
    if step > 0:
        return max(0, (stop - start + step - 1) // step)
    return max(0, (start - stop - step - 1) // (-step))


def _range_continues(counter, stop, step):
    """The test of a ``for ... in range`` loop that was rewritten as a ``while`` loop."""
    return counter < stop if step > 0 else counter > stop


def unbroadcast(gradient, like):
    """Sum ``gradient`` over the axes that broadcasting added or stretched, to ``like``'s shape."""
    if np.shape(gradient) == np.shape(like):
        return gradient
    g = np.asarray(gradient)
    shape = np.shape(like)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


# ---- array programs: NumPy calls Numba cannot compile as written, and adjoint helpers ----------

def reduce_sum(x, axis, keepdims):
    return np.sum(x, axis=axis, keepdims=keepdims)


def reduce_mean(x, axis, keepdims):
    return np.mean(x, axis=axis, keepdims=keepdims)


def reduce_max(x, axis, keepdims):
    return np.max(x, axis=axis, keepdims=keepdims)


def reduce_min(x, axis, keepdims):
    return np.min(x, axis=axis, keepdims=keepdims)


def reduce_prod(x, axis, keepdims):
    return np.prod(x, axis=axis, keepdims=keepdims)


def expand_reduced(gradient, x, axis, keepdims):
    """Spread the adjoint of a reduction back over the reduced axes (a broadcast copy)."""
    g = np.asarray(gradient)
    if axis is not None and not keepdims:
        g = np.expand_dims(g, axis)
    return np.broadcast_to(g, np.shape(x)).copy()


def prod_adjoint(gradient, x, axis, keepdims):
    """Adjoint of np.prod: each element gets the gradient times the product of the OTHER elements
    of its slice, from exclusive prefix and suffix products (no division by the element, so a
    zero in the slice gives the right answer, not 0/0)."""
    x = np.asarray(x)
    if x.ndim == 0:
        return np.asarray(gradient) * np.ones_like(x)
    along = -1 if axis is None else axis
    v = np.moveaxis(x.reshape(-1) if axis is None else x, along, -1)
    ones = np.ones(v.shape[:-1] + (1,), v.dtype)
    before = np.concatenate([ones, np.cumprod(v, axis=-1)[..., :-1]], axis=-1)
    after = np.concatenate([np.cumprod(v[..., ::-1], axis=-1)[..., ::-1][..., 1:], ones], axis=-1)
    others = np.moveaxis(before * after, -1, along).reshape(x.shape)
    return expand_reduced(gradient, x, axis, keepdims) * others


def reduced_count(x, axis):
    """How many elements each output of a reduction over ``axis`` combined."""
    return np.size(x) if axis is None else np.shape(x)[axis]


def extremum_adjoint(gradient, x, axis, keepdims, take_max):
    """Adjoint of max/min: the whole gradient goes to the FIRST extreme element (ties: first wins)."""
    x = np.asarray(x)
    out = np.zeros(x.shape, dtype=np.result_type(x, gradient))
    if axis is None:
        flat = np.argmax(x) if take_max else np.argmin(x)
        out.flat[flat] = np.asarray(gradient).reshape(-1)[0]
        return out
    index = np.argmax(x, axis=axis) if take_max else np.argmin(x, axis=axis)
    g = np.asarray(gradient)
    if keepdims:
        g = np.squeeze(g, axis=axis)
    np.put_along_axis(out, np.expand_dims(index, axis), np.expand_dims(g, axis), axis=axis)
    return out


def max_adjoint(gradient, x, axis, keepdims):
    return extremum_adjoint(gradient, x, axis, keepdims, True)


def min_adjoint(gradient, x, axis, keepdims):
    return extremum_adjoint(gradient, x, axis, keepdims, False)


def matmul(a, b):
    """``a @ b``: the cpu backend's version writes a large result on huge pages."""
    return a @ b


def huge_pages(array):
    """``array`` itself: the cpu backend's version asks the OS for huge pages when it is large."""
    return array


def matmul_grad_left(g, a, b):
    """Adjoint of ``a`` in ``a @ b``.

    Matrices: one BLAS call on a transposed view: NumPy, and Numba on the cpu target, hand ``b.T``
    of a C- or F-ordered matrix to the BLAS with a transpose flag (no copy); only operands that
    are neither C- nor F-contiguous (a strided slice) are copied first. Stacks of matrices
    (``ndim > 2``): see batched_matmul_grads."""
    if a.ndim > 2 or b.ndim > 2:
        return batched_matmul_grads(g, a, b)[0]
    if a.ndim == 1 and b.ndim == 1:
        return g * b
    if b.ndim == 1:
        return np.outer(g, b)
    if a.ndim == 1:
        return b @ g
    return g @ b.T


def matmul_grad_right(g, a, b):
    """Adjoint of ``b`` in ``a @ b`` (one BLAS call on the transposed view ``a.T``)."""
    if a.ndim > 2 or b.ndim > 2:
        return batched_matmul_grads(g, a, b)[1]
    if a.ndim == 1 and b.ndim == 1:
        return g * a
    if b.ndim == 1:
        return a.T @ g
    if a.ndim == 1:
        return np.outer(a, g)
    return a.T @ g


def batched_matmul_grads(g, a, b):
    """Adjoints of ``a`` and ``b`` in ``a @ b`` where one is a stack of matrices (``ndim > 2``).

    NumPy's rule: a 1-d ``a`` is a row (k,) -> (1, k), a 1-d ``b`` a column, and the leading
    (batch) axes broadcast. So the adjoints are the batched products ``G @ B^T`` and ``A^T @ G``
    (transposing the last two axes only), summed back over the batch axes each operand was
    broadcast along, with the promoted axis dropped again."""
    A = a[np.newaxis, :] if a.ndim == 1 else a
    B = b[:, np.newaxis] if b.ndim == 1 else b
    G = g
    if a.ndim == 1:
        G = np.expand_dims(G, -2)
    if b.ndim == 1:
        G = np.expand_dims(G, -1)
    grad_a = unbroadcast(np.matmul(G, np.swapaxes(B, -1, -2)), A)
    grad_b = unbroadcast(np.matmul(np.swapaxes(A, -1, -2), G), B)
    return grad_a.reshape(a.shape), grad_b.reshape(b.shape)


def gather2(x, rows, cols):
    """``x[rows, cols]`` with two integer arrays (Numba supports only one advanced index)."""
    return x[rows, cols]


def scatter_add2(adjoint, rows, cols, gradient):
    """``adjoint[rows, cols] += gradient`` where repeated index pairs add up."""
    np.add.at(adjoint, (rows, cols), gradient)


def scatter_add1(adjoint, index, gradient):
    np.add.at(adjoint, index, gradient)


def clip_scalar(x, lo, hi):
    """np.clip for scalars (Numba's np.clip needs arrays)."""
    return min(max(x, lo), hi)


def reshape_any(x, shape):
    """np.reshape (the cpu backend copies non-contiguous arrays first, as NumPy does)."""
    return np.reshape(x, shape)


def push_slice(tape, top, view):
    """Push every value of ``view`` (a row or slice about to be overwritten) on the tape."""
    count = np.size(view)
    while top + count > tape.shape[0]:
        tape = grow(tape)
    tape[top:top + count] = np.ravel(view)
    return tape, top + count


def tape_slice(tape, top, like):
    """The values ``push_slice`` saved at ``top``, shaped like ``like``."""
    return tape[top:top + np.size(like)].reshape(np.shape(like)).astype(like.dtype)


def concat_part(gradient, k, parts, axis):
    """The block of ``gradient`` that came from ``parts[k]`` in ``np.concatenate(parts, axis)``."""
    axis = axis % np.ndim(gradient)
    start = sum(np.shape(parts[j])[axis] for j in range(k))
    index = [slice(None)] * np.ndim(gradient)
    index[axis] = slice(start, start + np.shape(parts[k])[axis])
    return gradient[tuple(index)]


def stack_part(gradient, k, axis):
    """The slice of ``gradient`` that came from ``parts[k]`` in ``np.stack(parts, axis)``."""
    return np.take(gradient, k, axis=axis)


# ---- NumPy and SciPy coverage ------------------------------------------------------------------
# Primal calls that generated code makes through a helper (rules.LIBRARY_CALLS: NumPy calls with
# an ``axis`` Numba does not take, SciPy functions) and the adjoints of the rules in rules.py's
# coverage sections. Plain NumPy here; the cpu backend's versions are in backends/cpu_library.py
# (a helper it does not define is this one, compiled by Numba as it is).

LIBRARY_HELPERS = (
    # reductions
    "np_cumsum", "np_cumprod", "np_diff", "np_var", "np_std", "cumsum_adjoint", "cumprod_adjoint",
    "diff_adjoint", "var_adjoint", "trace_adjoint",
    # shape work
    "np_diagonal", "diag_adjoint", "np_roll", "roll_adjoint", "np_flip", "np_rot90", "np_repeat",
    "repeat_adjoint", "np_tile", "tile_adjoint", "np_squeeze", "np_pad", "pad_adjoint",
    "append_part", "np_vstack", "vstack_part", "hstack_part", "sort_adjoint", "np_meshgrid", "meshgrid_adjoint",
    "np_split", "np_array_split", "np_hsplit", "split_adjoint", "np_sort", "sort_tangent",
    # products
    "np_einsum", "einsum_adjoint", "np_tensordot", "tensordot_adjoint", "np_inner", "inner_adjoint",
    "np_kron", "kron_adjoint",
    # linear algebra
    "np_norm", "norm_adjoint", "slogdet_adjoint", "cholesky_adjoint", "eigh_adjoint",
    # scipy.special and scipy.stats
    "special_logsumexp", "logsumexp_adjoint", "special_expit", "special_logit", "special_erf",
    "special_erfc", "special_gammaln", "special_digamma", "special_polygamma1", "special_betaln",
    "stats_norm_logpdf", "stats_norm_pdf", "stats_norm_cdf", "stats_t_logpdf", "stats_t_logpdf_adjoint", "stats_mvn_logpdf",
    "stats_mvn_logpdf_adjoint",
)


def _like(value, x):
    """``value`` in ``x``'s float dtype (a float32 program stays float32)."""
    dtype = np.asarray(x).dtype
    if dtype.kind != "f":
        dtype = np.dtype(np.float64)
    if np.ndim(value) == 0 and np.ndim(x) == 0:
        return dtype.type(value)
    return np.asarray(value, dtype=dtype)


def _last(array, axis):
    """``array`` with ``axis`` moved to the end (``axis=None``: flattened)."""
    array = np.asarray(array)
    return array.reshape(-1) if axis is None else np.moveaxis(array, axis, -1)


def _unlast(array, like, axis):
    """Undo :func:`_last` for an array shaped like ``_last(like, axis)``."""
    return array.reshape(np.shape(like)) if axis is None else np.moveaxis(array, -1, axis)


# -- reductions --

def np_cumsum(x, axis=None):
    return np.cumsum(x, axis=axis)


def np_cumprod(x, axis=None):
    return np.cumprod(x, axis=axis)


def cumsum_adjoint(gradient, x, axis):
    """Adjoint of a cumulative sum: the reversed cumulative sum of the gradient."""
    g = _last(gradient, None if axis is None else axis)
    return _like(_unlast(np.cumsum(g[..., ::-1], axis=-1)[..., ::-1], x, axis), x)


def cumprod_adjoint(gradient, x, axis):
    """Adjoint of a cumulative product without dividing by elements (zeros are no special case):
    d x_i = (x_0 ... x_{i-1}) * S_i, where S_i = sum_{j >= i} g_j x_{i+1} ... x_j is the backward
    recurrence S_i = g_i + x_{i+1} S_{i+1}."""
    v, g = _last(x, axis), _last(gradient, axis)
    n = v.shape[-1]
    out = np.empty(np.broadcast_shapes(v.shape, g.shape), dtype=np.result_type(v, g))
    if n == 0:
        return _like(_unlast(out, x, axis), x)
    s = g[..., n - 1]
    out[..., n - 1] = s
    for i in range(n - 2, -1, -1):
        s = g[..., i] + v[..., i + 1] * s
        out[..., i] = s
    before = np.ones(v.shape[:-1], out.dtype)
    for i in range(n):
        out[..., i] *= before
        before = before * v[..., i]
    return _like(_unlast(out, x, axis), x)


def np_diff(x, n=1, axis=-1):
    return np.diff(x, n=n, axis=axis)


def diff_adjoint(gradient, n, axis):
    """Adjoint of np.diff: each difference y_i = x_{i+1} - x_i sends +g_i to x_{i+1}, -g_i to x_i."""
    g = np.moveaxis(np.asarray(gradient), axis, -1)
    for _ in range(n):
        wider = np.zeros(g.shape[:-1] + (g.shape[-1] + 1,), g.dtype)
        wider[..., 1:] += g
        wider[..., :-1] -= g
        g = wider
    return np.moveaxis(g, -1, axis)


def np_var(x, axis=None, ddof=0, keepdims=False):
    return np.var(x, axis=axis, ddof=ddof, keepdims=keepdims)


def np_std(x, axis=None, ddof=0, keepdims=False):
    return np.std(x, axis=axis, ddof=ddof, keepdims=keepdims)


def var_adjoint(gradient, x, axis, ddof, keepdims):
    """Adjoint of np.var: 2 (x - mean) / (n - ddof), times the gradient spread back."""
    count = reduced_count(x, axis)
    centred = x - np.mean(x, axis=axis, keepdims=True)
    return _like(expand_reduced(gradient, x, axis, keepdims) * centred * (2.0 / (count - ddof)), x)


def trace_adjoint(gradient, x, offset):
    """Adjoint of np.trace of a matrix: the gradient on the (offset) diagonal."""
    return _like(gradient * np.eye(x.shape[0], x.shape[1], offset), x)


# -- shape work --

def np_diagonal(x, offset=0):
    return np.diagonal(x, offset).copy()


def diag_adjoint(gradient, x, k):
    """Adjoint of np.diag / np.diagonal: a vector's diagonal matrix back to the vector, a matrix's
    diagonal back onto a zero matrix of the matrix's shape."""
    if np.ndim(x) == 1:
        return _like(np.diag(gradient, k), x)
    out = np.zeros(np.shape(x), np.asarray(x).dtype)
    n = np.shape(gradient)[0]
    rows = np.arange(n) + max(-k, 0)
    out[rows, rows + k] = gradient
    return out


def np_roll(x, shift, axis=None):
    return np.roll(x, shift, axis)


def roll_adjoint(gradient, shift, axis):
    back = tuple(-s for s in shift) if isinstance(shift, tuple) else -shift
    return np.roll(gradient, back, axis)


def np_flip(x, axis=None):
    return np.flip(x, axis).copy()


def np_rot90(x, k=1, axes=(0, 1)):
    return np.rot90(x, k, axes).copy()


def np_repeat(x, repeats, axis=None):
    return np.repeat(x, repeats, axis)


def repeat_adjoint(gradient, x, repeats, axis):
    """Adjoint of np.repeat with an integer count: each element collects its copies' gradients."""
    g = _last(gradient, axis)
    n = np.size(x) if axis is None else np.shape(x)[axis]
    summed = g.reshape(g.shape[:-1] + (n, repeats)).sum(axis=-1)
    return _like(_unlast(summed, x, axis), x)


def np_tile(x, reps):
    return np.tile(x, reps)


def _tile_layout(x_shape, reps):
    reps = tuple(reps) if isinstance(reps, tuple) else (reps,)
    ndim = max(len(x_shape), len(reps))
    return (1,) * (ndim - len(x_shape)) + tuple(x_shape), (1,) * (ndim - len(reps)) + reps


def tile_adjoint(gradient, x, reps):
    """Adjoint of np.tile: the gradient cut into its tiles (axes (reps_i, size_i)), summed."""
    shape, reps = _tile_layout(np.shape(x), reps)
    interleaved = tuple(v for pair in zip(reps, shape) for v in pair)
    g = np.asarray(gradient).reshape(interleaved).sum(axis=tuple(range(0, 2 * len(shape), 2)))
    return _like(g.reshape(np.shape(x)), x)


def np_squeeze(x, axis):
    return np.squeeze(x, axis)


def np_pad(x, pad_width, mode="constant", constant_values=0.0):
    return np.pad(x, pad_width, mode="constant", constant_values=constant_values)


def _pad_widths(pad_width, ndim):
    """np.pad's pad_width as one (before, after) pair per axis."""
    return np.broadcast_to(np.asarray(pad_width, dtype=np.int64).reshape(-1, 2)
                           if np.size(pad_width) > 1 else np.asarray(pad_width).reshape(1, 1),
                           (ndim, 2))


def pad_adjoint(gradient, x, pad_width):
    """Adjoint of a constant np.pad: the gradient of the original block (the padding is constant)."""
    widths = _pad_widths(pad_width, np.ndim(x))
    index = tuple(slice(int(before), int(before) + size) for (before, _), size in zip(widths, np.shape(x)))
    return _like(np.asarray(gradient)[index], x)


def append_part(gradient, arr, values, axis, k):
    """The part of np.append(arr, values, axis)'s gradient that came from ``arr`` (k=0) or
    ``values`` (k=1)."""
    like = arr if k == 0 else values
    if axis is None:
        flat = np.asarray(gradient).reshape(-1)
        part = flat[:np.size(arr)] if k == 0 else flat[np.size(arr):]
        return part.reshape(np.shape(like)).copy()
    return concat_part(gradient, k, (arr, values), axis).copy()


def _as_rows(part, ndim):
    return part if ndim >= 2 else np.reshape(part, (1, -1)) if ndim == 1 else np.reshape(part, (1, 1))


def np_vstack(parts):
    return np.vstack(parts)


def vstack_part(gradient, k, parts, axis):
    """The block of np.vstack(parts)'s gradient from ``parts[k]`` (1-d parts are rows)."""
    start = sum(_as_rows(p, np.ndim(p)).shape[0] for p in parts[:k])
    rows = _as_rows(parts[k], np.ndim(parts[k])).shape[0]
    return np.reshape(gradient[start:start + rows], np.shape(parts[k])).copy()


def hstack_part(gradient, k, parts, axis):
    """The block of np.hstack(parts)'s gradient from ``parts[k]`` (along axis 1, or 0 for 1-d)."""
    along = 0 if np.ndim(gradient) == 1 else 1
    return concat_part(gradient, k, parts, along).copy()


def sort_adjoint(gradient, x, axis):
    """Adjoint of np.sort: each sorted position sends its gradient back to where its element came
    from (np.argsort, stable, so ties keep their order)."""
    if axis is None:
        order = np.argsort(np.ravel(x), kind="stable")
        out = np.zeros(np.size(x), np.asarray(x).dtype)
        out[order] = gradient
        return out.reshape(np.shape(x))
    order = np.argsort(x, axis=axis, kind="stable")
    out = np.zeros(np.shape(x), np.asarray(x).dtype)
    np.put_along_axis(out, order, gradient, axis=axis)
    return out


def np_meshgrid(x, y, indexing="xy"):
    grids = np.meshgrid(x, y, indexing=indexing)
    return grids[0].copy(), grids[1].copy()


def meshgrid_adjoint(gradients, k, indexing):
    """Adjoint of np.meshgrid(x, y) w.r.t. x (k=0) or y (k=1): sums over the other grid axis."""
    g = gradients[k]
    along_rows = (k == 0) == (indexing == "xy")      # 'xy': x varies along axis 1
    return np.asarray(g).sum(axis=0 if along_rows else 1)


def np_split(x, indices_or_sections, axis=0):
    return tuple(np.split(x, indices_or_sections, axis))


def np_hsplit(x, indices_or_sections):
    return tuple(np.hsplit(x, indices_or_sections))


def sort_tangent(tangent, x, axis):
    """Tangent of np.sort: the tangent's elements in the order np.sort puts x's (the same stable
    argsort as sort_adjoint, whose transpose this is)."""
    if axis is None:
        return np.ravel(tangent)[np.argsort(np.ravel(x), kind="stable")]
    return np.take_along_axis(tangent, np.argsort(x, axis=axis, kind="stable"), axis=axis)


def np_sort(a, axis=-1, kind=None, order=None):
    return np.sort(a, axis=axis, kind=kind)


def np_array_split(x, indices_or_sections, axis=0):
    return tuple(np.array_split(x, indices_or_sections, axis))


def split_adjoint(gradients, x, axis):
    """Adjoint of np.split / np.array_split: the parts' gradients side by side (a part whose
    result was not used has a scalar zero adjoint)."""
    parts = []
    start = 0
    sizes = [np.shape(g)[axis] for g in gradients if np.ndim(g)]
    out = np.zeros(np.shape(x), np.asarray(x).dtype)
    moved = np.moveaxis(out, axis, 0)
    for g in gradients:
        if np.ndim(g):
            size = np.shape(g)[axis]
            moved[start:start + size] += np.moveaxis(g, axis, 0)
            start += size
        else:
            parts.append(g)
    if start != np.shape(x)[axis] and sizes:
        raise ValueError("split_adjoint: unused parts of a split need their sizes")
    return out


# -- products --

def np_einsum(subscripts, *operands):
    return np.einsum(subscripts, *operands)


def einsum_adjoint(gradient, subscripts, k, *operands):
    """Adjoint of np.einsum(subscripts, *operands) w.r.t. operand k: another einsum, of the
    gradient with the other operands, whose output is operand k's subscripts; an index only
    operand k has (summed over in the primal) gets the gradient broadcast along it."""
    inputs, output = _einsum_parts(subscripts, len(operands))
    target = inputs[k]
    others = [s for j, s in enumerate(inputs) if j != k]
    known = set(output).union(*[set(s) for s in others])
    kept = "".join(c for c in target if c in known)
    free = "".join(c for c in target if c not in known)
    partial = np.einsum(",".join([output] + others) + "->" + kept, gradient,
                        *[o for j, o in enumerate(operands) if j != k])
    if free:
        sizes = dict(zip(target, np.shape(operands[k])))
        partial = np.broadcast_to(partial.reshape(partial.shape + (1,) * len(free)),
                                  tuple(sizes[c] for c in kept + free))
        partial = np.einsum(kept + free + "->" + target, partial)
    return _like(partial, operands[k])


def _einsum_parts(subscripts, count):
    """Explicit-mode einsum subscripts as (input subscripts, output subscripts)."""
    spec = subscripts.replace(" ", "")
    if "..." in spec:
        raise ValueError("np.einsum with '...' is not supported by srcgrad")
    if "->" in spec:
        left, output = spec.split("->")
    else:
        left = spec
        letters = left.replace(",", "")
        output = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    inputs = left.split(",")
    if len(inputs) != count:
        raise ValueError(f"np.einsum: {len(inputs)} operand subscripts for {count} operands")
    return inputs, output


def _tensordot_axes(a_ndim, b_ndim, axes):
    if isinstance(axes, int):
        return list(range(a_ndim - axes, a_ndim)), list(range(axes))
    a_axes, b_axes = axes
    a_axes = [a_axes] if isinstance(a_axes, int) else list(a_axes)
    b_axes = [b_axes] if isinstance(b_axes, int) else list(b_axes)
    return [a % a_ndim for a in a_axes], [b % b_ndim for b in b_axes]


def np_tensordot(a, b, axes=2):
    return np.tensordot(a, b, axes)


def tensordot_adjoint(gradient, a, b, axes, k):
    """Adjoint of np.tensordot(a, b, axes) w.r.t. a (k=0) or b (k=1), as an einsum."""
    a_axes, b_axes = _tensordot_axes(np.ndim(a), np.ndim(b), axes)
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    a_sub = [next(letters) for _ in range(np.ndim(a))]
    b_sub = [next(letters) for _ in range(np.ndim(b))]
    for i, j in zip(a_axes, b_axes):
        b_sub[j] = a_sub[i]
    out = [c for i, c in enumerate(a_sub) if i not in a_axes] + \
          [c for j, c in enumerate(b_sub) if j not in b_axes]
    subscripts = f"{''.join(a_sub)},{''.join(b_sub)}->{''.join(out)}"
    return einsum_adjoint(gradient, subscripts, k, a, b)


def np_inner(a, b):
    return np.inner(a, b)


def inner_adjoint(gradient, a, b, k):
    """Adjoint of np.inner (a product over the last axes of both)."""
    if np.ndim(a) == 0 or np.ndim(b) == 0:
        other = b if k == 0 else a
        g = np.asarray(gradient) * other
        return _like(np.sum(g) if np.ndim(a if k == 0 else b) == 0 else g, a if k == 0 else b)
    return tensordot_adjoint(gradient, a, b, ([np.ndim(a) - 1], [np.ndim(b) - 1]), k)


def np_kron(a, b):
    return np.kron(a, b)


def kron_adjoint(gradient, a, b, k):
    """Adjoint of np.kron of two vectors or two matrices: the gradient cut into blocks, one per
    element of ``a`` (block (i, j) is g[i*p:(i+1)*p, j*q:(j+1)*q] for b of shape (p, q))."""
    g = np.asarray(gradient)
    if np.ndim(a) == 1:
        blocks = g.reshape(np.shape(a)[0], np.shape(b)[0])
        return _like(blocks @ b if k == 0 else a @ blocks, a if k == 0 else b)
    (m, n), (p, q) = np.shape(a), np.shape(b)
    blocks = g.reshape(m, p, n, q)
    if k == 0:
        return _like(np.einsum("ikjl,kl->ij", blocks, b), a)
    return _like(np.einsum("ikjl,ij->kl", blocks, a), b)


# -- linear algebra --

def np_norm(x, ord=None, axis=None, keepdims=False):
    return np.linalg.norm(x, ord, axis, keepdims)


def norm_adjoint(gradient, x, result, axis, keepdims):
    """Adjoint of the 2-norm (Frobenius for matrices): x / |x| times the gradient."""
    r = result if keepdims or axis is None else np.expand_dims(result, axis)
    return _like(expand_reduced(gradient, x, axis, keepdims) * x / r, x)


def slogdet_adjoint(gradients, a):
    """Adjoint of (sign, log|det a|): d log|det a| / d a = inv(a).T (the sign is piecewise constant)."""
    return _like(gradients[1] * np.linalg.inv(a).T, a)


def _symmetric(m):
    return 0.5 * (m + m.T)


def cholesky_adjoint(gradient, factor):
    """Adjoint of L = cholesky(A) (A symmetric, as np.linalg.cholesky reads only its lower
    triangle): with P = L^T G, keep its lower triangle with the diagonal halved, then
    A_bar = sym(L^-T P L^-1) (the symmetric gradient, as for a symmetric-matrix parameter)."""
    inv = np.linalg.inv(factor)
    p = factor.T @ gradient
    p = np.tril(p) - 0.5 * np.diag(np.diag(p))
    return _like(_symmetric(inv.T @ p @ inv), factor)


def eigh_adjoint(gradients, w, v):
    """Adjoint of (w, v) = eigh(A), A symmetric: A_bar = sym(V (diag(w_bar) + F o (V^T V_bar)) V^T)
    with F_ij = 1 / (w_j - w_i) off the diagonal and 0 on it (distinct eigenvalues)."""
    gw, gv = gradients
    n = np.shape(w)[0]
    inner = np.zeros((n, n), np.asarray(v).dtype)
    if np.ndim(gv):
        gap = w[np.newaxis, :] - w[:, np.newaxis]
        np.fill_diagonal(gap, 1.0)
        f = 1.0 / gap
        np.fill_diagonal(f, 0.0)
        inner = inner + f * (v.T @ gv)
    if np.ndim(gw):
        inner = inner + np.diag(gw)
    return _like(_symmetric(v @ inner @ v.T), v)


# -- scipy.special --

def special_logsumexp(a, axis=None, keepdims=False):
    from scipy.special import logsumexp
    return _like(logsumexp(a, axis=axis, keepdims=keepdims), a)


def logsumexp_adjoint(gradient, x, result, axis, keepdims):
    """Adjoint of logsumexp: the softmax of x along the axis, times the gradient spread back."""
    r = result if keepdims or axis is None else np.expand_dims(result, axis)
    return _like(expand_reduced(gradient, x, axis, keepdims) * np.exp(x - r), x)


def special_expit(x):
    from scipy.special import expit
    return _like(expit(x), x)


def special_logit(x):
    from scipy.special import logit
    return _like(logit(x), x)


def special_erf(x):
    from scipy.special import erf
    return _like(erf(x), x)


def special_erfc(x):
    from scipy.special import erfc
    return _like(erfc(x), x)


def special_gammaln(x):
    from scipy.special import gammaln
    return _like(gammaln(x), x)


def special_digamma(x):
    from scipy.special import digamma
    return _like(digamma(x), x)


def special_polygamma1(x):
    """The trigamma function (derivative of digamma)."""
    from scipy.special import polygamma
    return _like(polygamma(1, x), x)


def special_betaln(a, b):
    from scipy.special import betaln
    return _like(betaln(a, b), np.asarray(a) + np.asarray(b))


# -- scipy.stats --

def stats_norm_logpdf(x, loc=0.0, scale=1.0):
    from scipy.stats import norm
    return _like(norm.logpdf(x, loc, scale), np.asarray(x) + loc + scale)


def stats_norm_pdf(x, loc=0.0, scale=1.0):
    from scipy.stats import norm
    return _like(norm.pdf(x, loc, scale), np.asarray(x) + loc + scale)


def stats_norm_cdf(x, loc=0.0, scale=1.0):
    from scipy.stats import norm
    return _like(norm.cdf(x, loc, scale), np.asarray(x) + loc + scale)


def stats_t_logpdf(x, df, loc=0.0, scale=1.0):
    from scipy.stats import t
    return _like(t.logpdf(x, df, loc, scale), np.asarray(x) + df + loc + scale)


def stats_t_logpdf_adjoint(gradient, x, df, loc, scale, k):
    """Partial derivatives of Student's t log-density w.r.t. x (k=0), df (1), loc (2), scale (3)."""
    z = (x - loc) / scale
    q = df + z * z
    if k == 0:
        return gradient * (-(df + 1.0) * z / q / scale)
    if k == 2:
        return gradient * ((df + 1.0) * z / q / scale)
    if k == 3:
        return gradient * (((df + 1.0) * z * z / q - 1.0) / scale)
    return gradient * 0.5 * (special_digamma((df + 1.0) / 2.0) - special_digamma(df / 2.0) - 1.0 / df
                             - np.log1p(z * z / df) + (df + 1.0) * z * z / (df * q))


def stats_mvn_logpdf(x, mean, cov):
    from scipy.stats import multivariate_normal
    return _like(multivariate_normal.logpdf(x, mean, cov), np.asarray(x) + mean)


def stats_mvn_logpdf_adjoint(gradient, x, mean, cov, k):
    """Adjoint of multivariate_normal.logpdf(x, mean, cov) (rows of x are points) w.r.t. x (k=0),
    mean (1) or cov (2): with alpha = cov^-1 (x - mean), d/dx = -alpha, d/dmean = alpha,
    d/dcov = (alpha alpha^T - cov^-1) / 2 (symmetric), each scaled by its point's gradient."""
    r = np.asarray(x) - mean
    alpha = np.linalg.solve(cov, r.T).T
    g = np.asarray(gradient)
    if k == 0:
        return _like(-(g[..., np.newaxis] * alpha if np.ndim(r) > 1 else g * alpha), x)
    if k == 1:
        return _like(np.sum(g[..., np.newaxis] * alpha, axis=0) if np.ndim(r) > 1 else g * alpha, mean)
    weighted = alpha.T @ (g[:, np.newaxis] * alpha) if np.ndim(r) > 1 else g * np.outer(alpha, alpha)
    total = np.sum(g)
    return _like(0.5 * (weighted - total * np.linalg.inv(cov)), cov)
