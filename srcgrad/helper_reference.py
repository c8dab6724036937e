"""NumPy reference implementations of the runtime helpers (:mod:`srcgrad.helpers`).

One function per declared helper, same name and arguments, written from the helper's definition
rather than from its implementation: a helper that mirrors a NumPy/SciPy call is that call; the
adjoint of a linear operation is the transpose of its Jacobian, built one input element at a time
(:func:`linear_vjp`, exact); the adjoint of a nonlinear one is the vector-Jacobian product by
central differences in float64 (:func:`fd_vjp`, to ~1e-7). Slow and simple on purpose: only
``tests/test_helper_registry.py`` calls them, on small inputs.
"""
import numpy as np


def linear_vjp(f, x, g):
    """``J^T g`` for a linear ``f`` at (any) ``x``: entry i is ``<f(e_i), g>``."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros(x.shape)
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = 1.0
        out.flat[i] = _dot(f(e.reshape(x.shape)), g)
    return out


def fd_vjp(f, x, g, h=1e-6):
    """``J^T g`` of ``f`` at ``x`` by central differences."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros(x.shape)
    for i in range(x.size):
        step = np.zeros(x.size)
        step[i] = h
        step = step.reshape(x.shape)
        out.flat[i] = (_dot(f(x + step), g) - _dot(f(x - step), g)) / (2 * h)
    return out


def symmetric_fd_vjp(f, a, g, h=1e-6):
    """The symmetric gradient ``S`` of ``<f(A), g>`` for symmetric ``A`` (dphi = <S, dA> for
    symmetric dA), by central differences along ``E_ij + E_ji``."""
    n = a.shape[0]
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1):
            step = np.zeros((n, n))
            step[i, j] = step[j, i] = h
            value = (_dot(f(a + step), g) - _dot(f(a - step), g)) / (2 * h)
            out[i, j] = out[j, i] = value if i == j else value / 2
    return out


def _dot(value, g):
    if isinstance(value, (tuple, list)):
        return sum(_dot(v, w) for v, w in zip(value, g))
    return float(np.sum(np.asarray(value, dtype=np.float64) * np.asarray(g, dtype=np.float64)))


# -- tapes, snapshots, loop bounds ---------------------------------------------------------------

def push_float(tape, top, value):
    """The tape with ``value`` at ``top``: the tape itself when it has room (pushes write in place)."""
    if top < np.shape(tape)[0]:
        tape[top] = value
        return tape, top + 1
    return np.append(tape[:top], value), top + 1


push_int = push_float


def new_float_tape():
    return np.empty(256, np.float64)


def new_float32_tape():
    return np.empty(256, np.float32)


def new_int_tape():
    return np.empty(256, np.int64)


def push_slice(tape, top, view):
    return np.concatenate([tape[:top], np.ravel(view)]), top + np.size(view)


def tape_slice(tape, top, like):
    return tape[top:top + like.size].reshape(like.shape).astype(like.dtype)


def count_snapshot(total, snapshots, array, may_be_unset):
    return total + array.nbytes


def pop_snapshot(snapshots, current, may_be_unset):
    return snapshots.pop()


def snapshot_buffer(array, count):
    return np.empty((count,) + array.shape, array.dtype)


def reserve_tape(tape, top, count):
    """``tape`` with its first ``top`` values kept and room for ``count`` more."""
    need = top + max(count, 0)
    if need <= len(tape):
        return tape
    bigger = np.empty(max(need, 2 * len(tape)), tape.dtype)
    bigger[:top] = tape[:top]
    return bigger


def push_snapshot(buffer, top, array):
    buffer[top] = array
    return top + 1


def first_snapshot_row(buffer, array):
    buffer[0] = array
    return buffer[0]


def snapshot_at(buffer, top, current):
    return buffer[top]


def range_length(start, stop, step):
    return len(range(start, stop, step))


def _range_continues(counter, stop, step):
    return counter in range(counter, stop, step)


def huge_pages(array):
    return array


def array_op(op, a, b):
    return {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide}[op](a, b)


def update_array(target, op, value):
    {"+": np.add, "-": np.subtract}[op](target, value, out=target, casting="same_kind")


# -- array helpers ---------------------------------------------------------------------------------

def unbroadcast(gradient, like):
    return linear_vjp(lambda t: np.broadcast_to(t, np.shape(gradient)), like, gradient)


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
    return linear_vjp(lambda t: np.sum(t, axis=axis, keepdims=keepdims), x, gradient)


def reduced_count(x, axis):
    return np.size(x) // np.size(np.sum(x, axis=axis))      # inputs per output


def max_adjoint(gradient, x, axis, keepdims):
    return fd_vjp(lambda t: np.max(t, axis=axis, keepdims=keepdims), x, gradient)


def min_adjoint(gradient, x, axis, keepdims):
    return fd_vjp(lambda t: np.min(t, axis=axis, keepdims=keepdims), x, gradient)


def prod_adjoint(gradient, x, axis, keepdims):
    return fd_vjp(lambda t: np.prod(t, axis=axis, keepdims=keepdims), x, gradient)


def matmul(a, b):
    return np.matmul(a, b)


def matmul_grad_left(g, a, b):
    return linear_vjp(lambda t: np.matmul(t, b), a, g)


def matmul_grad_right(g, a, b):
    return linear_vjp(lambda t: np.matmul(a, t), b, g)


def gather2(x, rows, cols):
    return np.array([x[r, c] for r, c in zip(rows, cols)])


def scatter_add2(adjoint, rows, cols, gradient):
    adjoint += linear_vjp(lambda t: t[rows, cols], adjoint, gradient)


def scatter_add1(adjoint, index, gradient):
    adjoint += linear_vjp(lambda t: t[index], adjoint, gradient)


def clip_scalar(x, lo, hi):
    return float(np.clip(x, lo, hi))


def reshape_any(x, shape):
    return np.reshape(x, shape)


def concat_part(gradient, k, parts, axis):
    def f(t):
        return np.concatenate([t if j == k else np.zeros_like(p) for j, p in enumerate(parts)], axis=axis)
    return linear_vjp(f, parts[k], gradient)


def stack_part(gradient, k, axis):
    # the parts of np.stack(parts, axis) have the gradient's shape without ``axis``
    parts = [np.zeros(np.delete(np.shape(gradient), axis)) for _ in range(np.shape(gradient)[axis])]

    def f(t):
        return np.stack([t if j == k else p for j, p in enumerate(parts)], axis=axis)
    return linear_vjp(f, parts[k], gradient)


# -- NumPy and SciPy coverage ------------------------------------------------------------------------

def np_cumsum(x, axis=None):
    return np.cumsum(x, axis=axis)


def np_cumprod(x, axis=None):
    return np.cumprod(x, axis=axis)


def np_diff(x, n=1, axis=-1):
    return np.diff(x, n=n, axis=axis)


def np_var(x, axis=None, ddof=0, keepdims=False):
    return np.var(x, axis=axis, ddof=ddof, keepdims=keepdims)


def np_std(x, axis=None, ddof=0, keepdims=False):
    return np.std(x, axis=axis, ddof=ddof, keepdims=keepdims)


def cumsum_adjoint(gradient, x, axis):
    return linear_vjp(lambda t: np.cumsum(t, axis=axis), x, gradient)


def cumprod_adjoint(gradient, x, axis):
    return fd_vjp(lambda t: np.cumprod(t, axis=axis), x, gradient)


def prod_second(w, x, axis):
    """Q_k = sum_{j != k} w_j prod_{i not j, k} x_i along ``axis``, by brute force over each slice."""
    x = np.asarray(x, dtype=float)
    v = np.moveaxis(x, axis, -1)
    u = np.moveaxis(np.broadcast_to(w, x.shape), axis, -1)
    out = np.zeros_like(v)
    n = v.shape[-1]
    for index in np.ndindex(v.shape[:-1]):
        for k in range(n):
            out[index + (k,)] = sum(u[index + (j,)] * np.prod(np.delete(v[index], [j, k]))
                                    for j in range(n) if j != k)
    return np.moveaxis(out, -1, axis)


def cumprod_tangent(tangent, x, axis, h=1e-6):
    return (np.cumprod(x + h * tangent, axis=axis) - np.cumprod(x - h * tangent, axis=axis)) / (2 * h)


def diff_adjoint(gradient, n, axis):
    shape = list(np.shape(gradient))
    shape[axis] += n
    return linear_vjp(lambda t: np.diff(t, n=n, axis=axis), np.zeros(shape), gradient)


def var_adjoint(gradient, x, axis, ddof, keepdims):
    return fd_vjp(lambda t: np.var(t, axis=axis, ddof=ddof, keepdims=keepdims), x, gradient)


def trace_adjoint(gradient, x, offset):
    return linear_vjp(lambda t: np.trace(t, offset), x, gradient)


def np_diagonal(x, offset=0):
    return np.diagonal(x, offset)


def diag_adjoint(gradient, x, k):
    return linear_vjp(lambda t: np.diag(t, k), x, gradient)


def np_roll(x, shift, axis=None):
    return np.roll(x, shift, axis)


def roll_adjoint(gradient, shift, axis):
    return linear_vjp(lambda t: np.roll(t, shift, axis), np.zeros(np.shape(gradient)), gradient)


def np_triu(m, k=0):
    return np.triu(m, k)


def np_tril(m, k=0):
    return np.tril(m, k)


def np_flip(x, axis=None):
    return np.flip(x, axis)


def np_rot90(x, k=1, axes=(0, 1)):
    return np.rot90(x, k, axes)


def np_moveaxis(x, source, destination):
    return np.moveaxis(x, source, destination)


def np_swapaxes(x, axis1, axis2):
    return np.swapaxes(x, axis1, axis2)


def np_repeat(x, repeats, axis=None):
    return np.repeat(x, repeats, axis)


def repeat_adjoint(gradient, x, repeats, axis):
    return linear_vjp(lambda t: np.repeat(t, repeats, axis), x, gradient)


def np_tile(x, reps):
    return np.tile(x, reps)


def tile_adjoint(gradient, x, reps):
    return linear_vjp(lambda t: np.tile(t, reps), x, gradient)


def np_squeeze(x, axis):
    return np.squeeze(x, axis)


def np_pad(x, pad_width, mode="constant", constant_values=0.0):
    return np.pad(x, pad_width, mode=mode, constant_values=constant_values)


def pad_adjoint(gradient, x, pad_width):
    return linear_vjp(lambda t: np.pad(t, pad_width), x, gradient)


def append_part(gradient, arr, values, axis, k):
    # the other operand is a constant of the linear map: zero
    if k == 0:
        return linear_vjp(lambda t: np.append(t, np.zeros_like(values), axis), arr, gradient)
    return linear_vjp(lambda t: np.append(np.zeros_like(arr), t, axis), values, gradient)


def np_vstack(parts):
    return np.vstack(parts)


def vstack_part(gradient, k, parts, axis):
    return linear_vjp(lambda t: np.vstack([t if j == k else np.zeros_like(p) for j, p in enumerate(parts)]),
                      parts[k], gradient)


def hstack_part(gradient, k, parts, axis):
    return linear_vjp(lambda t: np.hstack([t if j == k else np.zeros_like(p) for j, p in enumerate(parts)]),
                      parts[k], gradient)


def sort_adjoint(gradient, x, axis):
    return fd_vjp(lambda t: np.sort(t, axis=axis), x, gradient)


def np_meshgrid(x, y, indexing="xy"):
    return tuple(np.meshgrid(x, y, indexing=indexing))


def meshgrid_adjoint(gradients, k, indexing):
    # the grids have shape (len(y), len(x)) for 'xy', (len(x), len(y)) for 'ij'
    rows, cols = np.shape(gradients[0])
    nx, ny = (cols, rows) if indexing == "xy" else (rows, cols)
    x, y = np.zeros(nx), np.zeros(ny)
    if k == 0:
        return linear_vjp(lambda t: np.meshgrid(t, y, indexing=indexing), x, gradients)
    return linear_vjp(lambda t: np.meshgrid(x, t, indexing=indexing), y, gradients)


def np_split(x, indices_or_sections, axis=0):
    return tuple(np.split(x, indices_or_sections, axis))


def np_array_split(x, indices_or_sections, axis=0):
    return tuple(np.array_split(x, indices_or_sections, axis))


def np_hsplit(x, indices_or_sections):
    return tuple(np.hsplit(x, indices_or_sections))


def split_adjoint(gradients, x, axis):
    sizes = np.cumsum([np.shape(g)[axis] for g in gradients])[:-1]
    return linear_vjp(lambda t: np.split(t, sizes, axis), x, gradients)


def np_sort(a, axis=-1, kind=None, order=None):
    return np.sort(a, axis=axis)


def sort_tangent(tangent, x, axis, h=1e-6):
    return (np.sort(x + h * tangent, axis=axis) - np.sort(x - h * tangent, axis=axis)) / (2 * h)


def np_einsum(subscripts, *operands):
    return np.einsum(subscripts, *operands)


def einsum_adjoint(gradient, subscripts, k, *operands):
    def f(t):
        return np.einsum(subscripts, *[t if j == k else o for j, o in enumerate(operands)])
    return linear_vjp(f, operands[k], gradient)


def np_tensordot(a, b, axes=2):
    return np.tensordot(a, b, axes)


def tensordot_adjoint(gradient, a, b, axes, k):
    if k == 0:
        return linear_vjp(lambda t: np.tensordot(t, b, axes), a, gradient)
    return linear_vjp(lambda t: np.tensordot(a, t, axes), b, gradient)


def np_inner(a, b):
    return np.inner(a, b)


def inner_adjoint(gradient, a, b, k):
    if k == 0:
        return linear_vjp(lambda t: np.inner(t, b), a, gradient)
    return linear_vjp(lambda t: np.inner(a, t), b, gradient)


def np_kron(a, b):
    return np.kron(a, b)


def kron_adjoint(gradient, a, b, k):
    if k == 0:
        return linear_vjp(lambda t: np.kron(t, b), a, gradient)
    return linear_vjp(lambda t: np.kron(a, t), b, gradient)


def np_norm(x, ord=None, axis=None, keepdims=False):
    return np.linalg.norm(x, ord, axis, keepdims)


def norm_adjoint(gradient, x, result, axis, keepdims):
    return fd_vjp(lambda t: np.linalg.norm(t, None, axis, keepdims), x, gradient)


def slogdet_adjoint(gradients, a):
    return fd_vjp(lambda t: np.linalg.slogdet(t)[1], a, gradients[1])


def cholesky_adjoint(gradient, factor):
    return symmetric_fd_vjp(np.linalg.cholesky, factor @ factor.T, gradient)


def eigh_adjoint(gradients, w, v):
    def f(a):
        w2, v2 = np.linalg.eigh(a)
        return w2, v2 * np.sign(np.sum(v2 * v, axis=0))      # the eigenvectors' signs of ``v``
    return symmetric_fd_vjp(f, v @ np.diag(w) @ v.T, gradients)


def special_logsumexp(a, axis=None, keepdims=False):
    from scipy.special import logsumexp
    return logsumexp(a, axis=axis, keepdims=keepdims)


def logsumexp_adjoint(gradient, x, result, axis, keepdims):
    return fd_vjp(lambda t: special_logsumexp(t, axis, keepdims), x, gradient)


def _special(name):
    def reference(*args):
        import scipy.special
        return getattr(scipy.special, name)(*args)
    reference.__name__ = "special_" + name
    return reference


special_expit = _special("expit")
special_logit = _special("logit")
special_erf = _special("erf")
special_erfc = _special("erfc")
special_gammaln = _special("gammaln")
special_digamma = _special("digamma")
special_betaln = _special("betaln")


def special_polygamma1(x):
    from scipy.special import polygamma
    return polygamma(1, x)


def special_polygamma2(x):
    from scipy.special import polygamma
    return polygamma(2, x)


def stats_norm_logpdf(x, loc=0.0, scale=1.0):
    from scipy.stats import norm
    return norm.logpdf(x, loc, scale)


def stats_norm_pdf(x, loc=0.0, scale=1.0):
    from scipy.stats import norm
    return norm.pdf(x, loc, scale)


def stats_norm_cdf(x, loc=0.0, scale=1.0):
    from scipy.stats import norm
    return norm.cdf(x, loc, scale)


def stats_t_logpdf(x, df, loc=0.0, scale=1.0):
    from scipy.stats import t
    return t.logpdf(x, df, loc, scale)


def stats_t_logpdf_adjoint(gradient, x, df, loc, scale, k, h=1e-6):
    """Elementwise: the gradient times the partial derivative w.r.t. argument k."""
    args = [np.asarray(x, dtype=np.float64), df, loc, scale]
    up, down = list(args), list(args)
    up[k], down[k] = args[k] + h, args[k] - h
    return gradient * (stats_t_logpdf(*up) - stats_t_logpdf(*down)) / (2 * h)


def stats_mvn_logpdf(x, mean, cov):
    from scipy.stats import multivariate_normal
    return multivariate_normal.logpdf(x, mean, cov)


def stats_mvn_logpdf_adjoint(gradient, x, mean, cov, k):
    if k == 0:
        return fd_vjp(lambda t: stats_mvn_logpdf(t, mean, cov), x, gradient)
    if k == 1:
        return fd_vjp(lambda t: stats_mvn_logpdf(x, t, cov), mean, gradient)
    return symmetric_fd_vjp(lambda t: stats_mvn_logpdf(x, mean, t), cov, gradient)
