"""Runtime helpers for NumPy and SciPy coverage (see :mod:`srcgrad.runtime`; declared in
:mod:`srcgrad.helpers` with ``library=True``)."""
import numpy as np

from .runtime_arrays import concat_part, expand_reduced, reduced_count


# ---- NumPy and SciPy coverage ------------------------------------------------------------------
# Primal calls that generated code makes through a helper (rules.LIBRARY_CALLS: NumPy calls with
# an ``axis`` Numba does not take, SciPy functions) and the adjoints of the rules in rules.py's
# coverage sections. Plain NumPy here; the cpu backend's versions are in backends/cpu/library*.py
# (a helper it does not define is this one, compiled by Numba as it is).



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


def prod_second(w, x, axis):
    """The adjoint of prod_adjoint w.r.t. x for a gradient of ones (hvp of np.prod): along each
    slice, Q_k = sum_{j != k} w_j prod_{i not j, k} x_i = L_k after_k + before_k R_k, with the
    recurrences L_{k+1} = L_k x_k + w_k before_k and R_{k-1} = R_k x_k + w_k after_k (exclusive
    prefix and suffix products: no division, zeros are no special case)."""
    x = np.asarray(x)
    if x.ndim == 0:
        return np.zeros_like(x * w)          # a product of one element: linear
    along = -1 if axis is None else axis
    v = _last(x, axis)
    u = _last(np.broadcast_to(w, x.shape), axis)
    n = v.shape[-1]
    ones = np.ones(v.shape[:-1] + (1,), v.dtype)
    before = np.concatenate([ones, np.cumprod(v, axis=-1)[..., :-1]], axis=-1)
    after = np.concatenate([np.cumprod(v[..., ::-1], axis=-1)[..., ::-1][..., 1:], ones], axis=-1)
    left = np.zeros(np.broadcast_shapes(v.shape, u.shape), np.result_type(v, u))
    right = np.zeros_like(left)
    running = np.zeros(left.shape[:-1], left.dtype)
    for k in range(n):
        left[..., k] = running
        running = running * v[..., k] + u[..., k] * before[..., k]
    running = np.zeros(left.shape[:-1], left.dtype)
    for k in range(n - 1, -1, -1):
        right[..., k] = running
        running = running * v[..., k] + u[..., k] * after[..., k]
    q = left * after + before * right
    return q.reshape(x.shape) if axis is None else np.moveaxis(q, -1, along)


def cumprod_tangent(tangent, x, axis):
    """Tangent of a cumulative product without dividing by elements (zeros are no special case):
    the forward recurrence y_i = y_{i-1} x_i, dy_i = dy_{i-1} x_i + y_{i-1} dx_i."""
    v, t = _last(x, axis), _last(tangent, axis)
    n = v.shape[-1]
    out = np.empty(v.shape, dtype=np.result_type(v, t))
    if n > 0:
        y, dy = v[..., 0], t[..., 0]
        out[..., 0] = dy
        for i in range(1, n):
            dy = dy * v[..., i] + y * t[..., i]
            y = y * v[..., i]
            out[..., i] = dy
    return out if axis is None else np.moveaxis(out, -1, axis)


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


def np_triu(m, k=0):
    return np.triu(m, k)


def np_tril(m, k=0):
    return np.tril(m, k)


def np_flip(x, axis=None):
    return np.flip(x, axis).copy()


def np_rot90(x, k=1, axes=(0, 1)):
    return np.rot90(x, k, axes).copy()


def np_moveaxis(x, source, destination):
    return np.moveaxis(x, source, destination).copy()


def np_swapaxes(x, axis1, axis2):
    return np.swapaxes(x, axis1, axis2).copy()


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


def special_polygamma2(x):
    """The tetragamma function (derivative of the trigamma)."""
    from scipy.special import polygamma
    return _like(polygamma(2, x), x)


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
