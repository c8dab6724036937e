"""Compiled (Numba) versions of the NumPy/SciPy coverage helpers of :mod:`srcgrad.runtime`.

This module holds the shared typing utilities, the rows view and transposes (np.moveaxis and
np.swapaxes on them), the reductions and cumulative operations, and the scipy.special/scipy.stats
helpers; :mod:`.library_shapes` and :mod:`.library_linalg` hold the
rest. The cpu backend takes each name of ``runtime.LIBRARY_HELPERS`` from these modules when one
defines it, else compiles the runtime version as it is. Helpers that work along an axis see it as a
literal (``prefer_literal``): the array is viewed as rows with that axis last (a transpose by a
constant permutation), each row is handled by a loop, and the result is transposed back.
"""
import functools
import math

import numba
import numpy as np
from numba import types
from numba.extending import overload, register_jitable

from ... import runtime
from .memory import runtime_code


def _fail(message):
    raise numba.core.errors.TypingError("srcgrad: " + message)


def _is_none(t):
    return t is None or isinstance(t, (types.NoneType, types.Omitted))


def _literal(t, default=None):
    """The value of a literal argument type, an omitted argument (Numba passes its default value
    itself, or types.Omitted), else ``default``."""
    if isinstance(t, types.Omitted):
        return t.value
    if isinstance(t, (bool, int, str, tuple)):
        return t
    return getattr(t, "literal_value", default)


def _axis_of(x, axis):
    """The literal axis, normalized to 0..ndim-1 (None for None)."""
    if _is_none(axis):
        return None
    ax = _literal(axis)
    if not isinstance(ax, int) or isinstance(ax, bool):
        _fail("the axis must be a constant int")
    if not -x.ndim <= ax < x.ndim:
        _fail(f"axis {ax} is out of bounds for array of dimension {x.ndim}")
    return ax % x.ndim


@functools.lru_cache(maxsize=None)
def _rows(ndim, ax):
    """(to_rows, from_rows): an array as a C-contiguous matrix whose rows run along axis ``ax``
    (None: the flattened array, one row), and back (given the moved shape, whose last entry may
    have changed).

    One pair per (ndim, ax), shared by every helper (issue 17: a new pair per overload was a new
    compiled function each, and every caller's module linked and compiled each copy again). The
    last axis and a matrix's first axis need no ``np.transpose`` by a tuple: Numba compiles that
    through its general permutation code (a set, fancy indexing, error paths: ~2700 IR lines in
    every module that uses it)."""
    if ax is None:
        @register_jitable
        def to_rows_flat(x):
            flat = np.ascontiguousarray(x).ravel()
            return flat.reshape((1, flat.size)), flat.shape

        @register_jitable
        def from_rows_flat(rows, shape):
            return rows.reshape(shape)
        return to_rows_flat, from_rows_flat
    if ax == ndim - 1:
        @register_jitable
        def to_rows_last(x):
            moved = np.ascontiguousarray(x)
            n = moved.shape[-1]
            return moved.reshape((moved.size // n if n else 0, n)), moved.shape

        @register_jitable
        def from_rows_last(rows, shape):
            return rows.reshape(shape)
        return to_rows_last, from_rows_last
    if ndim == 2:       # ax == 0: the transposed matrix
        @register_jitable
        def to_rows_transposed(x):
            moved = np.ascontiguousarray(x.T)
            return moved, moved.shape

        @register_jitable
        def from_rows_transposed(rows, shape):
            return np.ascontiguousarray(rows.reshape(shape).T)
        return to_rows_transposed, from_rows_transposed
    perm = tuple(i for i in range(ndim) if i != ax) + (ax,)
    inverse = tuple(perm.index(i) for i in range(ndim))

    @register_jitable
    def to_rows(x):
        moved = np.ascontiguousarray(np.transpose(x, perm))
        n = moved.shape[-1]
        return moved.reshape((moved.size // n if n else 0, n)), moved.shape

    @register_jitable
    def from_rows(rows, shape):
        return np.ascontiguousarray(np.transpose(rows.reshape(shape), inverse))
    return to_rows, from_rows


@functools.lru_cache(maxsize=None)
def _transposed_copy(perm):
    """A jitable f(x): a C-contiguous copy of x with its axes in the order ``perm``. A matrix's
    transpose is ``x.T``: Numba's np.moveaxis/np.swapaxes (and np.transpose by a tuple) compile a
    general permutation (a sort, a set, error messages; ~18k IR lines in c_shapes' module, issue 17)."""
    if perm == tuple(range(len(perm))):
        return register_jitable(lambda x: x.copy())
    if len(perm) == 2:
        return register_jitable(lambda x: x.T.copy())
    return register_jitable(lambda x: np.transpose(x, perm).copy())


def _constant_axes(x, *axes):
    """The literal int axes normalized to 0..ndim-1, or None when one is not a constant int."""
    values = [_literal(a) for a in axes]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    for v in values:
        if not -x.ndim <= v < x.ndim:
            _fail(f"axis {v} is out of bounds for array of dimension {x.ndim}")
    return [v % x.ndim for v in values]


# np.moveaxis and np.swapaxes (library helpers) on the transposes above
def np_moveaxis(x, source, destination):
    return runtime.np_moveaxis(x, source, destination)


def np_swapaxes(x, axis1, axis2):
    return runtime.np_swapaxes(x, axis1, axis2)


@overload(np_moveaxis, prefer_literal=True)
def _np_moveaxis_ov(x, source, destination):
    axes = _constant_axes(x, source, destination)
    if axes is None:
        return lambda x, source, destination: np.moveaxis(x, source, destination).copy()
    order = [i for i in range(x.ndim) if i != axes[0]]
    order.insert(axes[1], axes[0])
    moved = _transposed_copy(tuple(order))
    return lambda x, source, destination: moved(x)


@overload(np_swapaxes, prefer_literal=True)
def _np_swapaxes_ov(x, axis1, axis2):
    axes = _constant_axes(x, axis1, axis2)
    if axes is None:
        return lambda x, axis1, axis2: np.swapaxes(x, axis1, axis2).copy()
    order = list(range(x.ndim))
    order[axes[0]], order[axes[1]] = order[axes[1]], order[axes[0]]
    swapped = _transposed_copy(tuple(order))
    return lambda x, axis1, axis2: swapped(x)


@register_jitable
def _last_changed(shape, n):
    return shape[:-1] + (n,)


# ---- reductions and cumulative operations ------------------------------------------------------

def np_cumsum(x, axis=None):
    return runtime.np_cumsum(x, axis)


def np_cumprod(x, axis=None):
    return runtime.np_cumprod(x, axis)


def _cumulative(product):
    def ov(x, axis=None):
        to_rows, from_rows = _rows(x.ndim, _axis_of(x, axis))

        def impl(x, axis=None):
            rows, shape = to_rows(x)
            out = np.empty_like(rows)
            for i in range(rows.shape[0]):
                acc = rows.dtype.type(1 if product else 0)
                for j in range(rows.shape[1]):
                    acc = acc * rows[i, j] if product else acc + rows[i, j]
                    out[i, j] = acc
            return from_rows(out, shape)
        return impl
    return ov


overload(np_cumsum, prefer_literal=True)(_cumulative(False))
overload(np_cumprod, prefer_literal=True)(_cumulative(True))


def cumsum_adjoint(gradient, x, axis):
    return runtime.cumsum_adjoint(gradient, x, axis)


@overload(cumsum_adjoint, prefer_literal=True)
def _cumsum_adjoint_ov(gradient, x, axis):
    to_rows, _ = _rows(gradient.ndim, _axis_of(gradient, axis))
    _, from_rows = _rows(x.ndim if isinstance(x, types.Array) else 0, _axis_of(x, axis)) \
        if isinstance(x, types.Array) else (None, None)

    def impl(gradient, x, axis):
        rows, shape = to_rows(gradient)
        out = np.empty(rows.shape, x.dtype)
        for i in range(rows.shape[0]):
            acc = out.dtype.type(0)
            for j in range(rows.shape[1] - 1, -1, -1):
                acc += rows[i, j]
                out[i, j] = acc
        return from_rows(out, shape).reshape(x.shape)
    return impl


def cumprod_adjoint(gradient, x, axis):
    return runtime.cumprod_adjoint(gradient, x, axis)


@overload(cumprod_adjoint, prefer_literal=True)
def _cumprod_adjoint_ov(gradient, x, axis):
    ax = _axis_of(x, axis)
    to_rows, from_rows = _rows(x.ndim, ax)
    g_rows, _ = _rows(gradient.ndim, ax)

    def impl(gradient, x, axis):
        v, shape = to_rows(x)
        g, _ = g_rows(gradient)
        out = np.empty(v.shape, x.dtype)
        n = v.shape[1]
        for i in range(v.shape[0]):
            if n == 0:
                continue
            s = g[i, n - 1]
            out[i, n - 1] = s
            for j in range(n - 2, -1, -1):      # S_j = g_j + x_{j+1} S_{j+1}
                s = g[i, j] + v[i, j + 1] * s
                out[i, j] = s
            before = out.dtype.type(1)
            for j in range(n):
                out[i, j] *= before
                before *= v[i, j]
        return from_rows(out, shape).reshape(x.shape)
    return impl


def cumprod_tangent(tangent, x, axis):
    return runtime.cumprod_tangent(tangent, x, axis)


@overload(cumprod_tangent, prefer_literal=True)
def _cumprod_tangent_ov(tangent, x, axis):
    to_rows, from_rows = _rows(x.ndim, _axis_of(x, axis))

    def impl(tangent, x, axis):
        v, shape = to_rows(x)
        t, _ = to_rows(tangent)
        out = np.empty(v.shape, x.dtype)
        n = v.shape[1]
        for i in range(v.shape[0]):
            if n == 0:
                continue
            y = v[i, 0]
            dy = t[i, 0]
            out[i, 0] = dy
            for j in range(1, n):       # dy_j = dy_{j-1} x_j + y_{j-1} dx_j
                dy = dy * v[i, j] + y * t[i, j]
                y = y * v[i, j]
                out[i, j] = dy
        return from_rows(out, shape)
    return impl


def prod_second(w, x, axis):
    return runtime.prod_second(w, x, axis)


@overload(prod_second, prefer_literal=True)
def _prod_second_ov(w, x, axis):
    to_rows, from_rows = _rows(x.ndim, _axis_of(x, axis))

    def impl(w, x, axis):
        v, shape = to_rows(x)
        u, _ = to_rows(w)
        out = np.empty(v.shape, x.dtype)
        n = v.shape[1]
        for i in range(v.shape[0]):
            before = np.ones(n, x.dtype)            # exclusive prefix and suffix products
            after = np.ones(n, x.dtype)
            for j in range(1, n):
                before[j] = before[j - 1] * v[i, j - 1]
            for j in range(n - 2, -1, -1):
                after[j] = after[j + 1] * v[i, j + 1]
            running = x.dtype.type(0)
            for j in range(n):                      # L_j after_j
                out[i, j] = running * after[j]
                running = running * v[i, j] + u[i, j] * before[j]
            running = x.dtype.type(0)
            for j in range(n - 1, -1, -1):          # + before_j R_j
                out[i, j] += before[j] * running
                running = running * v[i, j] + u[i, j] * after[j]
        return from_rows(out, shape).reshape(x.shape)
    return impl


def np_diff(x, n=1, axis=-1):
    return runtime.np_diff(x, n, axis)


@overload(np_diff, prefer_literal=True)
def _np_diff_ov(x, n=1, axis=-1):
    to_rows, from_rows = _rows(x.ndim, _axis_of(x, axis if not _is_none(axis) else types.literal(-1)))

    def impl(x, n=1, axis=-1):
        rows, shape = to_rows(x)
        out = rows.copy()
        length = rows.shape[1]
        for _ in range(n):
            length = max(length - 1, 0)
            for i in range(rows.shape[0]):
                for j in range(length):
                    out[i, j] = out[i, j + 1] - out[i, j]
        return from_rows(np.ascontiguousarray(out[:, :length]), _last_changed(shape, length))
    return impl


def diff_adjoint(gradient, n, axis):
    return runtime.diff_adjoint(gradient, n, axis)


@overload(diff_adjoint, prefer_literal=True)
def _diff_adjoint_ov(gradient, n, axis):
    to_rows, from_rows = _rows(gradient.ndim, _axis_of(gradient, axis))

    def impl(gradient, n, axis):
        rows, shape = to_rows(gradient)
        current = rows.copy()
        for _ in range(n):          # one difference y_j = x_{j+1} - x_j at a time
            wider = np.zeros((current.shape[0], current.shape[1] + 1), current.dtype)
            for i in range(current.shape[0]):
                for j in range(current.shape[1]):
                    wider[i, j + 1] += current[i, j]
                    wider[i, j] -= current[i, j]
            current = wider
        return from_rows(current, _last_changed(shape, current.shape[1]))
    return impl


def _moment(root):
    def ov(x, axis=None, ddof=0, keepdims=False):
        ax = _axis_of(x, axis)
        keep = bool(_literal(keepdims, False))
        to_rows, from_rows = _rows(x.ndim, ax)
        ones = (1,) * x.ndim

        @register_jitable
        def row_moments(x, ddof):
            rows, shape = to_rows(x)
            out = np.empty((rows.shape[0], 1), x.dtype)
            n = rows.shape[1]
            for i in range(rows.shape[0]):
                mean = rows[i].sum() / n
                total = 0.0
                for j in range(n):
                    total += (rows[i, j] - mean) ** 2
                value = total / (n - ddof)
                out[i, 0] = math.sqrt(value) if root else value
            return out, shape

        if ax is None:
            if keep:
                return lambda x, axis=None, ddof=0, keepdims=False: row_moments(x, ddof)[0].reshape(ones)
            return lambda x, axis=None, ddof=0, keepdims=False: row_moments(x, ddof)[0][0, 0]
        if keep:
            def kept(x, axis=None, ddof=0, keepdims=False):
                out, shape = row_moments(x, ddof)
                return from_rows(out, _last_changed(shape, 1))
            return kept
        if x.ndim == 1:
            return lambda x, axis=None, ddof=0, keepdims=False: row_moments(x, ddof)[0][0, 0]

        def dropped(x, axis=None, ddof=0, keepdims=False):
            out, shape = row_moments(x, ddof)
            return out.reshape(shape[:-1])
        return dropped
    return ov


def np_var(x, axis=None, ddof=0, keepdims=False):
    return runtime.np_var(x, axis, ddof, keepdims)


def np_std(x, axis=None, ddof=0, keepdims=False):
    return runtime.np_std(x, axis, ddof, keepdims)


overload(np_var, prefer_literal=True)(_moment(False))
overload(np_std, prefer_literal=True)(_moment(True))


def var_adjoint(gradient, x, axis, ddof, keepdims):
    return runtime.var_adjoint(gradient, x, axis, ddof, keepdims)


@overload(var_adjoint, prefer_literal=True)
def _var_adjoint_ov(gradient, x, axis, ddof, keepdims):
    """2 (x - mean) / (n - ddof) times the gradient of the row (one value per row)."""
    ax = _axis_of(x, axis)
    to_rows, from_rows = _rows(x.ndim, ax)
    scalar_gradient = not isinstance(gradient, types.Array)

    def impl(gradient, x, axis, ddof, keepdims):
        rows, shape = to_rows(x)
        g = np.full(1, gradient) if scalar_gradient else np.ascontiguousarray(gradient).ravel()
        if g.size != rows.shape[0]:
            raise ValueError("var_adjoint: the gradient does not match the reduced rows")
        out = np.empty(rows.shape, x.dtype)
        n = rows.shape[1]
        for i in range(rows.shape[0]):
            mean = rows[i].sum() / n
            scale = 2.0 * g[i] / (n - ddof)
            for j in range(n):
                out[i, j] = scale * (rows[i, j] - mean)
        return from_rows(out, shape).reshape(x.shape)
    return impl


@numba.njit(cache=True)
def trace_adjoint(gradient, x, offset):
    out = np.zeros(x.shape, x.dtype)
    for i in range(x.shape[0]):
        j = i + offset
        if 0 <= j < x.shape[1]:
            out[i, j] = gradient
    return out


# ---- scipy.special and scipy.stats -------------------------------------------------------------
# Elementwise functions are Numba ufuncs (scalars and arrays, float32 kept float32).

_UNARY = [numba.float32(numba.float32), numba.float64(numba.float64)]

# Compiling (or loading from the cache) a ufunc's loops costs ~0.3-0.5 s each on a 2-core machine,
# and importing this module did it for all of them: 3-6 s at every start, for every program
# (benchmarks/results/compile.md). So a ufunc is built on first use instead: the name is absent
# from the module until the module-level __getattr__ below builds it (``from ... import name`` in a
# generated module, or the backend's lookup). Compiled functions here that call a ufunc list it in
# _USES, and are built after it, so that the name is a global when Numba compiles them.
_LAZY = {}          # name -> function building it
_USES = {}          # name of a lazily built jit function -> the lazy ufuncs it calls


def _lazy_ufunc(signatures):
    def register(function):
        _LAZY[function.__name__] = lambda: numba.vectorize(signatures, cache=True)(function)
    return register     # the decorated name is bound to None, and deleted at the module's end


def _lazy_jit(*ufuncs):
    def register(function):
        _USES[function.__name__] = ufuncs
        _LAZY[function.__name__] = lambda: numba.njit(cache=True)(function)
    return register


def __getattr__(name):
    build = _LAZY.get(name)
    if build is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for used in _USES.get(name, ()):
        if used not in globals():
            __getattr__(used)
    value = globals()[name] = build()
    return value


@_lazy_ufunc(_UNARY)
def special_expit(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@_lazy_ufunc(_UNARY)
def special_logit(x):
    return math.log(x / (1.0 - x))


@_lazy_ufunc(_UNARY)
def special_erf(x):
    return math.erf(x)


@_lazy_ufunc(_UNARY)
def special_erfc(x):
    return math.erfc(x)


@_lazy_ufunc(_UNARY)
def special_gammaln(x):
    return math.lgamma(x)


@register_jitable
def _digamma(x):
    """psi(x): the recurrence psi(x) = psi(x + 1) - 1/x up to x >= 6, then the asymptotic series;
    reflection psi(1 - x) - pi / tan(pi x) for negative x; poles (0, -1, ...) give NaN."""
    if x <= 0.0 and x == math.floor(x):
        return math.nan
    if x < 0.0:
        return _digamma_positive(1.0 - x) - math.pi / math.tan(math.pi * x)
    return _digamma_positive(x)


@register_jitable
def _digamma_positive(x):
    shift = 0.0
    while x < 6.0:
        shift -= 1.0 / x
        x += 1.0
    inv2 = 1.0 / (x * x)
    series = inv2 * (1.0 / 12 - inv2 * (1.0 / 120 - inv2 * (1.0 / 252 - inv2 * (1.0 / 240 - inv2 / 132))))
    return shift + math.log(x) - 0.5 / x - series


@register_jitable
def _trigamma_positive(x):
    shift = 0.0
    while x < 6.0:
        shift += 1.0 / (x * x)
        x += 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    series = inv + 0.5 * inv2 + inv * inv2 * (1.0 / 6 - inv2 * (1.0 / 30 - inv2 * (1.0 / 42 - inv2 / 30)))
    return shift + series


@_lazy_ufunc(_UNARY)
def special_digamma(x):
    return _digamma(x)


@_lazy_ufunc(_UNARY)
def special_polygamma1(x):
    """The trigamma function; reflection psi1(1 - x) + psi1(x) = pi^2 / sin^2(pi x)."""
    if x <= 0.0 and x == math.floor(x):
        return math.nan
    if x < 0.0:
        s = math.sin(math.pi * x)
        return math.pi * math.pi / (s * s) - _trigamma_positive(1.0 - x)
    return _trigamma_positive(x)


@register_jitable
def _tetragamma_positive(x):
    """psi''(x) = psi''(x + 1) - 2 / x^3 up to x >= 6, then the asymptotic series
    -(1/x^2 + 1/x^3 + sum_k B_2k (2k + 1) / x^(2k + 2))."""
    shift = 0.0
    while x < 6.0:
        shift -= 2.0 / (x * x * x)
        x += 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    series = inv2 * (1.0 + inv + inv2 * (0.5 - inv2 * (1.0 / 6 - inv2 * (1.0 / 6 - inv2 * (0.3 - inv2 * 5.0 / 6)))))
    return shift - series


@_lazy_ufunc(_UNARY)
def special_polygamma2(x):
    """The tetragamma function; reflection (the derivative of the trigamma's):
    psi2(x) = psi2(1 - x) - 2 pi^3 cos(pi x) / sin^3(pi x)."""
    if x <= 0.0 and x == math.floor(x):
        return math.nan
    if x < 0.0:
        s = math.sin(math.pi * x)
        return _tetragamma_positive(1.0 - x) - 2.0 * math.pi ** 3 * math.cos(math.pi * x) / (s * s * s)
    return _tetragamma_positive(x)


@_lazy_ufunc([numba.float32(numba.float32, numba.float32),
              numba.float64(numba.float64, numba.float64)])
def special_betaln(a, b):
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def special_logsumexp(a, axis=None, keepdims=False):
    return runtime.special_logsumexp(a, axis, keepdims)


@overload(special_logsumexp, prefer_literal=True)
def _logsumexp_ov(a, axis=None, keepdims=False):
    if not isinstance(a, types.Array):
        return lambda a, axis=None, keepdims=False: a
    ax = _axis_of(a, axis)
    keep = bool(_literal(keepdims, False))
    to_rows, from_rows = _rows(a.ndim, ax)
    ones = (1,) * a.ndim

    @register_jitable
    def row_lse(a):
        rows, shape = to_rows(a)
        out = np.empty((rows.shape[0], 1), a.dtype)
        for i in range(rows.shape[0]):
            top = rows[i].max()
            if not math.isfinite(top):
                top = 0.0 if math.isinf(top) and top < 0 else top
            total = 0.0
            for j in range(rows.shape[1]):
                total += math.exp(rows[i, j] - top)
            out[i, 0] = math.log(total) + top
        return out, shape

    if ax is None:
        if keep:
            return lambda a, axis=None, keepdims=False: row_lse(a)[0].reshape(ones)
        return lambda a, axis=None, keepdims=False: row_lse(a)[0][0, 0]
    if keep:
        def kept(a, axis=None, keepdims=False):
            out, shape = row_lse(a)
            return from_rows(out, _last_changed(shape, 1))
        return kept
    if a.ndim == 1:
        return lambda a, axis=None, keepdims=False: row_lse(a)[0][0, 0]
    return lambda a, axis=None, keepdims=False: row_lse(a)[0].reshape(row_lse(a)[1][:-1])


def logsumexp_adjoint(gradient, x, result, axis, keepdims):
    return runtime.logsumexp_adjoint(gradient, x, result, axis, keepdims)


@overload(logsumexp_adjoint, prefer_literal=True)
def _logsumexp_adjoint_ov(gradient, x, result, axis, keepdims):
    ax = _axis_of(x, axis)
    to_rows, from_rows = _rows(x.ndim, ax)
    scalar = not isinstance(gradient, types.Array)

    def impl(gradient, x, result, axis, keepdims):
        rows, shape = to_rows(x)
        g = np.full(1, gradient) if scalar else np.ascontiguousarray(gradient).ravel()
        r = np.full(1, result) if scalar else np.ascontiguousarray(result).ravel()
        out = np.empty(rows.shape, x.dtype)
        for i in range(rows.shape[0]):
            for j in range(rows.shape[1]):
                out[i, j] = g[i] * math.exp(rows[i, j] - r[i])
        return from_rows(out, shape).reshape(x.shape)
    return impl


@numba.njit(cache=True)
def stats_norm_logpdf(x, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    return -0.5 * z * z - np.log(scale) - 0.9189385332046727        # log sqrt(2 pi)


@numba.njit(cache=True)
def stats_norm_pdf(x, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    return np.exp(-0.5 * z * z) * 0.3989422804014327 / scale


@_lazy_jit("special_erfc")
def stats_norm_cdf(x, loc=0.0, scale=1.0):
    return 0.5 * special_erfc(-(x - loc) / scale * 0.7071067811865476)


@_lazy_jit("special_gammaln")
def stats_t_logpdf(x, df, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    return (special_gammaln(0.5 * (df + 1.0)) - special_gammaln(0.5 * df) - 0.5 * np.log(df * math.pi)
            - np.log(scale) - 0.5 * (df + 1.0) * np.log1p(z * z / df))


# the runtime's own code, its special_digamma the ufunc above
_lazy_jit("special_digamma")(runtime_code(runtime.stats_t_logpdf_adjoint, globals()))


def stats_mvn_logpdf(x, mean, cov):
    return runtime.stats_mvn_logpdf(x, mean, cov)


@overload(stats_mvn_logpdf)
def _mvn_logpdf_ov(x, mean, cov):
    """-(d log 2 pi + log det cov + r^T cov^-1 r) / 2 for each point r = x - mean."""
    def impl(x, mean, cov):
        points = np.ascontiguousarray(x).reshape((-1, mean.shape[0]))
        factor = np.linalg.cholesky(cov)
        logdet = 0.0
        for i in range(factor.shape[0]):
            logdet += 2.0 * math.log(factor[i, i])
        r = points - mean
        alpha = np.linalg.solve(cov, np.ascontiguousarray(r.T))
        out = np.empty(points.shape[0], x.dtype)
        for n in range(points.shape[0]):
            total = 0.0
            for j in range(points.shape[1]):
                total += r[n, j] * alpha[j, n]
            out[n] = -0.5 * (points.shape[1] * 1.8378770664093453 + logdet + total)
        return _mvn_shape(out, x)
    return impl


def _mvn_shape(out, x):
    return out


@overload(_mvn_shape)
def _mvn_shape_ov(out, x):
    if x.ndim == 1:
        return lambda out, x: out[0]
    return lambda out, x: out


def stats_mvn_logpdf_adjoint(gradient, x, mean, cov, k):
    return runtime.stats_mvn_logpdf_adjoint(gradient, x, mean, cov, k)


@register_jitable
def _mvn_alpha(x, mean, cov):
    points = np.ascontiguousarray(x).reshape((-1, mean.shape[0]))
    r = points - mean
    return points, np.ascontiguousarray(np.linalg.solve(cov, np.ascontiguousarray(r.T)).T)


@overload(stats_mvn_logpdf_adjoint, prefer_literal=True)
def _mvn_logpdf_adjoint_ov(gradient, x, mean, cov, k):
    """alpha = cov^-1 (x - mean) per point: d/dx = -g alpha, d/dmean = sum g alpha,
    d/dcov = (sum g alpha alpha^T - sum(g) cov^-1) / 2."""
    which = _literal(k)
    scalar = not isinstance(gradient, types.Array)

    @register_jitable
    def weights(gradient):
        return np.full(1, gradient) if scalar else np.ascontiguousarray(gradient).ravel()

    if which == 0:
        def of_x(gradient, x, mean, cov, k):
            points, alpha = _mvn_alpha(x, mean, cov)
            g = weights(gradient)
            out = np.empty(points.shape, x.dtype)
            for n in range(points.shape[0]):
                out[n] = -g[n] * alpha[n]
            return out.reshape(x.shape)
        return of_x
    if which == 1:
        def of_mean(gradient, x, mean, cov, k):
            points, alpha = _mvn_alpha(x, mean, cov)
            g = weights(gradient)
            out = np.zeros(mean.shape, mean.dtype)
            for n in range(points.shape[0]):
                out += g[n] * alpha[n]
            return out
        return of_mean

    def of_cov(gradient, x, mean, cov, k):
        points, alpha = _mvn_alpha(x, mean, cov)
        g = weights(gradient)
        weighted = np.zeros(cov.shape, cov.dtype)
        for n in range(points.shape[0]):
            weighted += g[n] * np.outer(alpha[n], alpha[n])
        return (0.5 * (weighted - g.sum() * np.linalg.inv(cov))).astype(cov.dtype)
    return of_cov


for _name in _LAZY:         # built on first use (__getattr__ above)
    globals().pop(_name, None)
