"""Compiled (Numba) versions of the NumPy/SciPy coverage helpers of :mod:`srcgrad.runtime`.

The cpu backend takes each name of ``runtime.LIBRARY_HELPERS`` from here when this module defines
it, else compiles the runtime version as it is. Helpers that work along an axis see it as a
literal (``prefer_literal``): the array is viewed as rows with that axis last (a transpose by a
constant permutation), each row is handled by a loop, and the result is transposed back.
"""
import math

import numba
import numpy as np
from numba import types
from numba.extending import overload, register_jitable

from .. import runtime


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


def _rows(ndim, ax):
    """(to_rows, from_rows): an array as a C-contiguous matrix whose rows run along axis ``ax``
    (None: the flattened array, one row), and back (given the moved shape, whose last entry may
    have changed)."""
    if ax is None:
        @register_jitable
        def to_rows_flat(x):
            flat = np.ascontiguousarray(x).ravel()
            return flat.reshape((1, flat.size)), flat.shape

        @register_jitable
        def from_rows_flat(rows, shape):
            return rows.reshape(shape)
        return to_rows_flat, from_rows_flat
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


# ---- shape work --------------------------------------------------------------------------------

@numba.njit(cache=True)
def np_diagonal(x, offset=0):
    start_row, start_col = max(-offset, 0), max(offset, 0)
    n = max(min(x.shape[0] - start_row, x.shape[1] - start_col), 0)
    out = np.empty(n, x.dtype)
    for k in range(n):
        out[k] = x[start_row + k, start_col + k]
    return out


def diag_adjoint(gradient, x, k):
    return runtime.diag_adjoint(gradient, x, k)


@overload(diag_adjoint)
def _diag_adjoint_ov(gradient, x, k):
    if x.ndim == 1:
        def of_vector(gradient, x, k):
            out = np.empty(x.shape, x.dtype)
            start_row, start_col = max(-k, 0), max(k, 0)
            for i in range(x.shape[0]):
                out[i] = gradient[start_row + i, start_col + i]
            return out
        return of_vector

    def of_matrix(gradient, x, k):
        out = np.zeros(x.shape, x.dtype)
        start_row, start_col = max(-k, 0), max(k, 0)
        for i in range(gradient.shape[0]):
            out[start_row + i, start_col + i] = gradient[i]
        return out
    return of_matrix


def np_roll(x, shift, axis=None):
    return runtime.np_roll(x, shift, axis)


@register_jitable
def _roll_axis(x, shift, ax):
    """np.roll(x, shift, ax) for a runtime axis: on the flat C-ordered array, the coordinate
    along ``ax`` of flat index i is (i // inner) % n, and moving it by ``shift`` moves i by a
    multiple of ``inner``."""
    x = np.ascontiguousarray(x)
    ax = ax % x.ndim
    n = x.shape[ax]
    inner = 1
    for k in range(ax + 1, x.ndim):
        inner *= x.shape[k]
    flat = x.ravel()
    out = np.empty_like(flat)
    if n == 0:
        return out.reshape(x.shape)
    for i in range(flat.size):
        c = (i // inner) % n
        out[i + ((c + shift) % n - c) * inner] = flat[i]
    return out.reshape(x.shape)


def _roll(x, shift, axis):
    """A jitable f(x, shift, axis) for np.roll's three forms (no axis, one axis, tuples)."""
    if _is_none(axis):
        @register_jitable
        def flat(x, shift, axis):
            return _roll_axis(np.ascontiguousarray(x).ravel(), shift, 0).reshape(x.shape)
        return flat
    if isinstance(axis, types.BaseTuple):
        if not isinstance(shift, types.BaseTuple) or len(shift) != len(axis):
            _fail("np.roll over several axes needs one shift per axis")

        @register_jitable
        def several(x, shift, axis):
            out = np.ascontiguousarray(x)
            for k in range(len(axis)):
                out = _roll_axis(out, shift[k], axis[k])
            return out
        return several
    return register_jitable(lambda x, shift, axis: _roll_axis(x, shift, axis))


@overload(np_roll)
def _np_roll_ov(x, shift, axis=None):
    roll = _roll(x, shift, axis)
    return lambda x, shift, axis=None: roll(x, shift, axis)


def roll_adjoint(gradient, shift, axis):
    return runtime.roll_adjoint(gradient, shift, axis)


def _negated(shift):
    return -shift


@overload(_negated)
def _negated_ov(shift):
    if isinstance(shift, types.UniTuple):
        count = shift.count

        def negate_all(shift):
            out = np.empty(count, np.int64)
            for k in range(count):
                out[k] = -shift[k]
            return out
        return negate_all
    return lambda shift: -shift


@overload(roll_adjoint)
def _roll_adjoint_ov(gradient, shift, axis):
    if isinstance(shift, types.UniTuple):

        @register_jitable
        def several(gradient, shift, axis):
            back = _negated(shift)
            out = np.ascontiguousarray(gradient)
            for k in range(len(axis)):
                out = _roll_axis(out, back[k], axis[k])
            return out
        return several
    roll = _roll(gradient, shift, axis)
    return lambda gradient, shift, axis: roll(gradient, -shift, axis)


def np_flip(x, axis=None):
    return runtime.np_flip(x, axis)


@overload(np_flip, prefer_literal=True)
def _np_flip_ov(x, axis=None):
    if _is_none(axis):
        def everything(x, axis=None):
            flat = np.ascontiguousarray(x).ravel()
            return flat[::-1].copy().reshape(x.shape)
        return everything
    to_rows, from_rows = _rows(x.ndim, _axis_of(x, axis))

    def impl(x, axis=None):
        rows, shape = to_rows(x)
        return from_rows(np.ascontiguousarray(rows[:, ::-1]), shape)
    return impl


def np_rot90(x, k=1, axes=(0, 1)):
    return runtime.np_rot90(x, k, axes)


@overload(np_rot90, prefer_literal=True)
def _np_rot90_ov(x, k=1, axes=(0, 1)):
    if not (x.ndim == 2 and (isinstance(axes, tuple) or isinstance(axes, types.BaseTuple))):
        _fail("np.rot90 is supported for matrices")
    def impl(x, k=1, axes=(0, 1)):
        if (axes[0] % 2, axes[1] % 2) == (0, 1):
            turns = k % 4
        elif (axes[0] % 2, axes[1] % 2) == (1, 0):      # the other way round
            turns = (-k) % 4
        else:
            raise ValueError("np.rot90: axes must be two different axes of the matrix")
        if turns == 0:
            return np.ascontiguousarray(x).copy()
        if turns == 1:
            return np.ascontiguousarray(x[:, ::-1].T)
        if turns == 2:
            return np.ascontiguousarray(x[::-1, ::-1])
        return np.ascontiguousarray(x.T[:, ::-1])
    return impl


# -- repeat, tile, squeeze, pad: shapes computed at run time, indices on the flat arrays --

from numba.np.unsafe.ndarray import to_fixed_tuple  # noqa: E402


def np_repeat(x, repeats, axis=None):
    return runtime.np_repeat(x, repeats, axis)


@overload(np_repeat, prefer_literal=True)
def _np_repeat_ov(x, repeats, axis=None):
    if _is_none(axis):
        return lambda x, repeats, axis=None: np.repeat(x, repeats)
    to_rows, from_rows = _rows(x.ndim, _axis_of(x, axis))

    def impl(x, repeats, axis=None):
        rows, shape = to_rows(x)
        n = rows.shape[1]
        out = np.empty((rows.shape[0], n * repeats), x.dtype)
        for i in range(rows.shape[0]):
            for j in range(n):
                for t in range(repeats):
                    out[i, j * repeats + t] = rows[i, j]
        return from_rows(out, _last_changed(shape, n * repeats))
    return impl


def repeat_adjoint(gradient, x, repeats, axis):
    return runtime.repeat_adjoint(gradient, x, repeats, axis)


@overload(repeat_adjoint, prefer_literal=True)
def _repeat_adjoint_ov(gradient, x, repeats, axis):
    ax = _axis_of(x, axis)
    g_rows, _ = _rows(gradient.ndim, ax)
    _, from_rows = _rows(x.ndim, ax)

    def impl(gradient, x, repeats, axis):
        rows, shape = g_rows(gradient)
        n = rows.shape[1] // repeats
        out = np.zeros((rows.shape[0], n), x.dtype)
        for i in range(rows.shape[0]):
            for j in range(n):
                for t in range(repeats):
                    out[i, j] += rows[i, j * repeats + t]
        return from_rows(out, _last_changed(shape, n)).reshape(x.shape)
    return impl


def _as_int_array(value):
    return np.asarray(value)


@overload(_as_int_array)
def _as_int_array_ov(value):
    if isinstance(value, types.Integer):
        return lambda value: np.full(1, value, np.int64)
    if isinstance(value, types.UniTuple):
        count = value.count

        def from_tuple(value):
            out = np.empty(count, np.int64)
            for k in range(count):
                out[k] = value[k]
            return out
        return from_tuple
    _fail("expected an int or a tuple of ints")


def _tile_layout(x, reps):
    count = reps.count if isinstance(reps, types.UniTuple) else 1
    ndim = max(x.ndim, count)

    @register_jitable
    def layout(x, reps):
        """(x's shape, reps, the tiled shape), each padded to ``ndim`` with leading ones."""
        shape = np.ones(ndim, np.int64)
        times = np.ones(ndim, np.int64)
        for k in range(x.ndim):
            shape[ndim - x.ndim + k] = x.shape[k]
        given = _as_int_array(reps)
        for k in range(given.size):
            times[ndim - given.size + k] = given[k]
        return shape, times, shape * times
    return layout, ndim


@register_jitable
def _tile_source(i, shape, tiled):
    """The flat index in the tiled array's source of flat index ``i`` of the tiled array."""
    rem, src, step = i, 0, 1
    for d in range(shape.size - 1, -1, -1):
        c = rem % tiled[d]
        rem //= tiled[d]
        src += (c % shape[d]) * step
        step *= shape[d]
    return src


def np_tile(x, reps):
    return runtime.np_tile(x, reps)


@overload(np_tile)
def _np_tile_ov(x, reps):
    layout, ndim = _tile_layout(x, reps)

    def impl(x, reps):
        shape, times, tiled = layout(x, reps)
        flat = np.ascontiguousarray(x).ravel()
        out = np.empty(tiled.prod(), x.dtype)
        for i in range(out.size):
            out[i] = flat[_tile_source(i, shape, tiled)]
        return out.reshape(to_fixed_tuple(tiled, ndim))
    return impl


def tile_adjoint(gradient, x, reps):
    return runtime.tile_adjoint(gradient, x, reps)


@overload(tile_adjoint)
def _tile_adjoint_ov(gradient, x, reps):
    layout, _ = _tile_layout(x, reps)

    def impl(gradient, x, reps):
        shape, times, tiled = layout(x, reps)
        g = np.ascontiguousarray(gradient).ravel()
        if g.size != tiled.prod():
            raise ValueError("tile_adjoint: the gradient does not match the tiled shape")
        out = np.zeros(x.size, x.dtype)
        for i in range(g.size):
            out[_tile_source(i, shape, tiled)] += g[i]
        return out.reshape(x.shape)
    return impl


def np_squeeze(x, axis):
    return runtime.np_squeeze(x, axis)


@overload(np_squeeze)
def _np_squeeze_ov(x, axis):
    count = axis.count if isinstance(axis, types.UniTuple) else 1
    ndim = x.ndim - count

    def impl(x, axis):
        drop = _as_int_array(axis)
        shape = np.empty(max(ndim, 1), np.int64)
        at = 0
        for d in range(x.ndim):
            dropped = False
            for a in drop:
                if a % x.ndim == d:
                    dropped = True
            if dropped:
                if x.shape[d] != 1:
                    raise ValueError("cannot select an axis to squeeze out which has size not equal to one")
            else:
                shape[at] = x.shape[d]
                at += 1
        return np.ascontiguousarray(x).reshape(to_fixed_tuple(shape, ndim))
    return impl


def _pad_widths(pad_width, ndim):
    return runtime._pad_widths(pad_width, ndim)


@overload(_pad_widths)
def _pad_widths_ov(pad_width, ndim):
    """np.pad's pad_width (an int, a (before, after) pair, or one pair per axis) as an
    (ndim, 2) array."""
    if isinstance(pad_width, types.Integer):
        return lambda pad_width, ndim: np.full((ndim, 2), pad_width, np.int64)
    if isinstance(pad_width, types.UniTuple) and isinstance(pad_width.dtype, types.Integer):
        def pair(pad_width, ndim):
            out = np.empty((ndim, 2), np.int64)
            for d in range(ndim):
                out[d, 0] = pad_width[0]
                out[d, 1] = pad_width[len(pad_width) - 1]
            return out
        return pair
    if isinstance(pad_width, types.BaseTuple):
        count = len(pad_width)

        def pairs(pad_width, ndim):
            out = np.empty((ndim, 2), np.int64)
            if count != ndim:
                raise ValueError("np.pad: one (before, after) pair per axis")
            return _pairs_into(pad_width, out)
        return pairs
    _fail("np.pad: pad_width must be an int, a pair, or one pair per axis")


def _pairs_into(pad_width, out):
    return out


@overload(_pairs_into)
def _pairs_into_ov(pad_width, out):
    lines = ["def fill(pad_width, out):"]
    for d in range(len(pad_width)):
        lines.append(f"    out[{d}, 0] = pad_width[{d}][0]")
        lines.append(f"    out[{d}, 1] = pad_width[{d}][len(pad_width[{d}]) - 1]")
    lines.append("    return out")
    namespace = {}
    exec("\n".join(lines), namespace)          # noqa: S102  (one line per axis: a heterogeneous tuple)
    return namespace["fill"]


@register_jitable
def _pad_source(i, shape, widths, padded):
    """The flat index into the unpadded array of flat index ``i`` of the padded one, or -1."""
    rem, src, step = i, 0, 1
    for d in range(shape.size - 1, -1, -1):
        c = rem % padded[d] - widths[d, 0]
        rem //= padded[d]
        if c < 0 or c >= shape[d]:
            return -1
        src += c * step
        step *= shape[d]
    return src


def np_pad(x, pad_width, mode="constant", constant_values=0.0):
    return runtime.np_pad(x, pad_width, mode, constant_values)


@overload(np_pad)
def _np_pad_ov(x, pad_width, mode="constant", constant_values=0.0):
    ndim = x.ndim

    def impl(x, pad_width, mode="constant", constant_values=0.0):
        widths = _pad_widths(pad_width, ndim)
        shape = np.empty(ndim, np.int64)
        for d in range(ndim):
            shape[d] = x.shape[d]
        padded = shape + widths[:, 0] + widths[:, 1]
        flat = np.ascontiguousarray(x).ravel()
        out = np.empty(padded.prod(), x.dtype)
        for i in range(out.size):
            src = _pad_source(i, shape, widths, padded)
            out[i] = flat[src] if src >= 0 else constant_values
        return out.reshape(to_fixed_tuple(padded, ndim))
    return impl


def pad_adjoint(gradient, x, pad_width):
    return runtime.pad_adjoint(gradient, x, pad_width)


@overload(pad_adjoint)
def _pad_adjoint_ov(gradient, x, pad_width):
    ndim = x.ndim

    def impl(gradient, x, pad_width):
        widths = _pad_widths(pad_width, ndim)
        shape = np.empty(ndim, np.int64)
        for d in range(ndim):
            shape[d] = x.shape[d]
        padded = shape + widths[:, 0] + widths[:, 1]
        g = np.ascontiguousarray(gradient).ravel()
        out = np.empty(x.size, x.dtype)
        for i in range(g.size):
            src = _pad_source(i, shape, widths, padded)
            if src >= 0:
                out[src] = g[i]
        return out.reshape(x.shape)
    return impl


# -- append, stacks, sort, meshgrid, split --

def append_part(gradient, arr, values, axis, k):
    return runtime.append_part(gradient, arr, values, axis, k)


@overload(append_part, prefer_literal=True)
def _append_part_ov(gradient, arr, values, axis, k):
    index = _literal(k)
    like = arr if index == 0 else values
    if _is_none(axis):
        if index == 0:
            return lambda gradient, arr, values, axis, k: \
                np.ascontiguousarray(gradient[:arr.size]).reshape(np.shape(arr))
        return lambda gradient, arr, values, axis, k: \
            np.ascontiguousarray(gradient[arr.size:]).reshape(np.shape(values))
    ax = _axis_of(gradient, axis)
    to_rows, _ = _rows(gradient.ndim, ax)
    _, from_rows = _rows(like.ndim, ax)

    def impl(gradient, arr, values, axis, k):
        rows, shape = to_rows(gradient)
        first = arr.shape[ax]
        part = rows[:, :first] if k == 0 else rows[:, first:]
        part = np.ascontiguousarray(part)
        return from_rows(part, _last_changed(shape, part.shape[1]))
    return impl


def _stack_offset(parts, index, along, as_rows):
    """Source of ``start = ...``: the offset of ``parts[index]`` along axis ``along``."""
    terms = []
    for j in range(index):
        if as_rows and parts[j].ndim < 2:
            terms.append("1")
        elif parts[j].ndim == 0:
            terms.append("1")
        else:
            terms.append(f"parts[{j}].shape[{along if parts[j].ndim > along else 0}]")
    return " + ".join(terms) or "0"


def _stack_part(name, vertical):
    def stub(gradient, k, parts, axis):
        return getattr(runtime, name)(gradient, k, parts, axis)

    @overload(stub, prefer_literal=True)
    def _ov(gradient, k, parts, axis):
        index = _literal(k)
        if not isinstance(index, int):
            _fail(f"np.{'v' if vertical else 'h'}stack: the part's index must be a constant")
        part = parts[index]
        along = 0 if vertical or gradient.ndim == 1 else 1
        size = ("1" if vertical and part.ndim < 2 else
                f"parts[{index}].shape[{along if part.ndim > along else 0}]")
        view = "gradient[start:stop]" if along == 0 else "gradient[:, start:stop]"
        namespace = {"np": np}
        exec(f"def part(gradient, k, parts, axis):\n"                 # noqa: S102
             f"    start = {_stack_offset(parts, index, along, vertical)}\n"
             f"    stop = start + {size}\n"
             f"    return np.ascontiguousarray({view}).reshape(np.shape(parts[{index}]))\n", namespace)
        return namespace["part"]
    return stub


vstack_part = _stack_part("vstack_part", True)


def np_vstack(parts):
    return runtime.np_vstack(parts)


@overload(np_vstack)
def _np_vstack_ov(parts):
    """np.vstack with 1-d parts as rows (Numba's own needs parts of one ndim)."""
    items = [f"np.ascontiguousarray(parts[{j}]).reshape((1, parts[{j}].shape[0]))" if part.ndim == 1
             else f"parts[{j}]" for j, part in enumerate(parts)]
    namespace = {"np": np}
    exec(f"def stacked(parts):\n    return np.vstack(({', '.join(items)},))\n", namespace)  # noqa: S102
    return namespace["stacked"]
hstack_part = _stack_part("hstack_part", False)


def np_sort(a, axis=-1, kind=None, order=None):
    return runtime.np_sort(a, axis, kind, order)


@overload(np_sort, prefer_literal=True)
def _np_sort_ov(a, axis=-1, kind=None, order=None):
    ax = _axis_of(a, axis if not isinstance(axis, types.Omitted) else types.literal(-1))
    to_rows, from_rows = _rows(a.ndim, ax)

    def impl(a, axis=-1, kind=None, order=None):
        rows, shape = to_rows(a)
        out = np.empty_like(rows)
        for i in range(rows.shape[0]):
            out[i] = np.sort(rows[i])
        return from_rows(out, shape)
    return impl


def sort_adjoint(gradient, x, axis):
    return runtime.sort_adjoint(gradient, x, axis)


@overload(sort_adjoint, prefer_literal=True)
def _sort_adjoint_ov(gradient, x, axis):
    ax = _axis_of(x, axis)
    to_rows, from_rows = _rows(x.ndim, ax)
    g_rows, _ = _rows(gradient.ndim, ax)

    def impl(gradient, x, axis):
        rows, shape = to_rows(x)
        g, _ = g_rows(gradient)
        out = np.empty(rows.shape, x.dtype)
        for i in range(rows.shape[0]):
            order = np.argsort(rows[i], kind="mergesort")       # stable: ties keep their order
            for j in range(rows.shape[1]):
                out[i, order[j]] = g[i, j]
        return from_rows(out, shape).reshape(x.shape)
    return impl


def sort_tangent(tangent, x, axis):
    return runtime.sort_tangent(tangent, x, axis)


@overload(sort_tangent, prefer_literal=True)
def _sort_tangent_ov(tangent, x, axis):
    ax = _axis_of(x, axis)
    to_rows, from_rows = _rows(x.ndim, ax)
    t_rows, _ = _rows(tangent.ndim, ax)

    def impl(tangent, x, axis):
        rows, shape = to_rows(x)
        t, _ = t_rows(tangent)
        out = np.empty(rows.shape, x.dtype)
        for i in range(rows.shape[0]):
            order = np.argsort(rows[i], kind="mergesort")       # stable, as sort_adjoint
            for j in range(rows.shape[1]):
                out[i, j] = t[i, order[j]]
        return from_rows(out, shape)
    return impl


def np_meshgrid(x, y, indexing="xy"):
    return runtime.np_meshgrid(x, y, indexing)


@overload(np_meshgrid, prefer_literal=True)
def _np_meshgrid_ov(x, y, indexing="xy"):
    ij = _literal(indexing, "xy") == "ij"

    def impl(x, y, indexing="xy"):
        rows, cols = (x.shape[0], y.shape[0]) if ij else (y.shape[0], x.shape[0])
        grid_x = np.empty((rows, cols), x.dtype)
        grid_y = np.empty((rows, cols), y.dtype)
        for i in range(rows):
            for j in range(cols):
                grid_x[i, j] = x[i] if ij else x[j]
                grid_y[i, j] = y[j] if ij else y[i]
        return grid_x, grid_y
    return impl


def meshgrid_adjoint(gradients, k, indexing):
    return runtime.meshgrid_adjoint(gradients, k, indexing)


@overload(meshgrid_adjoint, prefer_literal=True)
def _meshgrid_adjoint_ov(gradients, k, indexing):
    index = _literal(k)
    along_rows = (index == 0) == (_literal(indexing, "xy") != "ij")
    if along_rows:
        return lambda gradients, k, indexing: gradients[index].sum(axis=0)
    return lambda gradients, k, indexing: gradients[index].sum(axis=1)


def _split(name, equal):
    def stub(x, indices_or_sections, axis=0):
        return getattr(runtime, name)(x, indices_or_sections, axis)

    @overload(stub, prefer_literal=True)
    def _ov(x, indices_or_sections, axis=0):
        ax = _axis_of(x, axis if not isinstance(axis, types.Omitted) else types.literal(0))
        sections = _literal(indices_or_sections)
        if isinstance(sections, int):
            count = sections
        elif isinstance(indices_or_sections, types.UniTuple):
            count = indices_or_sections.count + 1
        else:
            _fail("np.split: the sections must be a constant int or a tuple of ints")
        bounds = register_jitable(_split_bounds(count, isinstance(sections, int), equal))
        parts = ", ".join(f"_piece(x, b[{j}], b[{j + 1}], {ax})" for j in range(count))
        namespace = {"bounds": bounds, "_piece": _piece}
        exec(f"def split(x, indices_or_sections, axis=0):\n"            # noqa: S102
             f"    b = bounds(x.shape[{ax}], indices_or_sections)\n"
             f"    return ({parts},)\n", namespace)
        return namespace["split"]
    return stub


def _split_bounds(count, by_sections, equal):
    def bounds(n, indices_or_sections):
        out = np.empty(count + 1, np.int64)
        out[0], out[count] = 0, n
        if by_sections:
            if equal and n % count:
                raise ValueError("array split does not result in an equal division")
            size, extra = n // count, n % count
            for j in range(1, count):
                out[j] = out[j - 1] + size + (1 if j - 1 < extra else 0)
        else:
            for j in range(count - 1):
                out[j + 1] = min(max(indices_or_sections[j], 0), n)
        return out
    return bounds


@register_jitable
def _piece(x, start, stop, ax):
    return np.ascontiguousarray(np.swapaxes(np.swapaxes(x, 0, ax)[start:stop], 0, ax))


np_split = _split("np_split", True)
np_array_split = _split("np_array_split", False)


def split_adjoint(gradients, x, axis):
    return runtime.split_adjoint(gradients, x, axis)


@overload(split_adjoint, prefer_literal=True)
def _split_adjoint_ov(gradients, x, axis):
    ax = _axis_of(x, axis)
    count = len(gradients)
    lines = ["def join(gradients, x, axis):",
             "    out = np.zeros(x.shape, x.dtype)",
             f"    moved = np.swapaxes(out, 0, {ax})",
             "    start = 0"]
    for j in range(count):
        lines += [f"    g = np.swapaxes(gradients[{j}], 0, {ax})",
                  "    moved[start:start + g.shape[0]] += g",
                  "    start += g.shape[0]"]
    lines.append("    return out")
    namespace = {"np": np}
    exec("\n".join(lines), namespace)                                  # noqa: S102
    return namespace["join"]


def np_hsplit(x, indices_or_sections):
    return runtime.np_hsplit(x, indices_or_sections)


@overload(np_hsplit, prefer_literal=True)
def _np_hsplit_ov(x, indices_or_sections):
    along = 1 if x.ndim > 1 else 0
    return lambda x, indices_or_sections: np_split(x, indices_or_sections, along)


# ---- products ------------------------------------------------------------------------------------

@numba.njit(cache=True)
def np_kron(a, b):
    """np.kron of views too (Numba's takes C or F arrays only)."""
    return np.kron(np.ascontiguousarray(a), np.ascontiguousarray(b))


def kron_adjoint(gradient, a, b, k):
    return runtime.kron_adjoint(gradient, a, b, k)


@overload(kron_adjoint, prefer_literal=True)
def _kron_adjoint_ov(gradient, a, b, k):
    """Block (i, j) of the gradient, g[i*p:(i+1)*p, j*q:(j+1)*q], pairs with a[i, j] and b."""
    first = _literal(k) == 0
    if a.ndim == 1:
        def vectors(gradient, a, b, k):
            p = b.shape[0]
            out = np.zeros(a.shape if first else b.shape, a.dtype if first else b.dtype)
            for i in range(a.shape[0]):
                for r in range(p):
                    if first:
                        out[i] += gradient[i * p + r] * b[r]
                    else:
                        out[r] += gradient[i * p + r] * a[i]
            return out
        return vectors

    def matrices(gradient, a, b, k):
        p, q = b.shape
        out = np.zeros(a.shape if first else b.shape, a.dtype if first else b.dtype)
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                for r in range(p):
                    for c in range(q):
                        if first:
                            out[i, j] += gradient[i * p + r, j * q + c] * b[r, c]
                        else:
                            out[r, c] += gradient[i * p + r, j * q + c] * a[i, j]
        return out
    return matrices


# ---- linear algebra ------------------------------------------------------------------------------

def np_norm(x, ord=None, axis=None, keepdims=False):
    return runtime.np_norm(x, ord, axis, keepdims)


@overload(np_norm, prefer_literal=True)
def _np_norm_ov(x, ord=None, axis=None, keepdims=False):
    ax = _axis_of(x, axis)
    keep = bool(_literal(keepdims, False))
    to_rows, from_rows = _rows(x.ndim, ax)
    ones = (1,) * x.ndim

    @register_jitable
    def row_norms(x):
        rows, shape = to_rows(x)
        out = np.empty((rows.shape[0], 1), x.dtype)
        for i in range(rows.shape[0]):
            total = 0.0
            for j in range(rows.shape[1]):
                total += rows[i, j] * rows[i, j]
            out[i, 0] = math.sqrt(total)
        return out, shape

    if ax is None:
        if keep:
            return lambda x, ord=None, axis=None, keepdims=False: row_norms(x)[0].reshape(ones)
        return lambda x, ord=None, axis=None, keepdims=False: row_norms(x)[0][0, 0]
    if keep:
        def kept(x, ord=None, axis=None, keepdims=False):
            out, shape = row_norms(x)
            return from_rows(out, _last_changed(shape, 1))
        return kept
    if x.ndim == 1:
        return lambda x, ord=None, axis=None, keepdims=False: row_norms(x)[0][0, 0]
    return lambda x, ord=None, axis=None, keepdims=False: row_norms(x)[0].reshape(row_norms(x)[1][:-1])


def norm_adjoint(gradient, x, result, axis, keepdims):
    return runtime.norm_adjoint(gradient, x, result, axis, keepdims)


@overload(norm_adjoint, prefer_literal=True)
def _norm_adjoint_ov(gradient, x, result, axis, keepdims):
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
                out[i, j] = g[i] * rows[i, j] / r[i]
        return from_rows(out, shape).reshape(x.shape)
    return impl


@numba.njit(cache=True)
def slogdet_adjoint(gradients, a):
    return np.ascontiguousarray(np.linalg.inv(a).T) * gradients[1]


@register_jitable
def _symmetric(m):
    return 0.5 * (m + m.T)


@numba.njit(cache=True)
def cholesky_adjoint(gradient, factor):
    inv = np.linalg.inv(factor)
    p = np.dot(np.ascontiguousarray(factor.T), np.ascontiguousarray(gradient))
    p = np.tril(p)
    for i in range(p.shape[0]):
        p[i, i] *= 0.5
    s = np.dot(np.dot(np.ascontiguousarray(inv.T), p), inv)
    return _symmetric(s).astype(factor.dtype)


@numba.njit(cache=True)
def eigh_adjoint(gradients, w, v):
    gw, gv = gradients
    n = w.shape[0]
    inner = np.dot(np.ascontiguousarray(v.T), np.ascontiguousarray(gv))
    for i in range(n):
        for j in range(n):
            inner[i, j] = gw[i] if i == j else inner[i, j] / (w[j] - w[i])
    s = np.dot(np.dot(v, inner), np.ascontiguousarray(v.T))
    return _symmetric(s).astype(v.dtype)


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


@_lazy_jit("special_digamma")
def stats_t_logpdf_adjoint(gradient, x, df, loc, scale, k):
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
