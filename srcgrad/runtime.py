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
    if total > MAX_TAPE_BYTES:
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
    if count * array.nbytes > MAX_TAPE_BYTES:
        raise MemoryError("srcgrad: the snapshots of arrays rebound in a loop would exceed "
                          "SRCGRAD_MAX_TAPE_BYTES (a loop with a huge trip count); reduce the problem "
                          "size or raise the limit")
    return np.empty((max(count, 0),) + array.shape, array.dtype)


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
