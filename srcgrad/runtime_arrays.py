"""Runtime helpers for array programs (see :mod:`srcgrad.runtime`): NumPy calls Numba cannot compile
as written, and the adjoint helpers of the core rules. Plain NumPy; the cpu backend compiles
them (``backends/cpu/``)."""
import numpy as np


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


_ARRAY_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
              "/": lambda a, b: a / b}


def array_op(op, a, b):
    """``a <op> b`` (op one of ``+ - * /``): the cpu backend compiles one function per operator and
    operand types, which every such operation of a program shares (the fused loops' fallback
    statements, where each operation written inline is a broadcasting loop nest of its own)."""
    return _ARRAY_OPS[op](a, b)


def update_array(target, op, value):
    """``target += value`` (op ``"+"``) or ``target -= value`` (``"-"``) on an array ``target``, in
    place: the cpu backend compiles one function per operator and operand types, which every such
    update of a program shares, where each update written inline is a broadcasting loop nest of
    its own (an adjoint adds a gradient into the same array at every use of its primal)."""
    if op == "+":
        target += value
    else:
        target -= value


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
