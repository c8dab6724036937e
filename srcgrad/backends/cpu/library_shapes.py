"""Compiled NumPy coverage helpers (cpu target): shape work — diagonal, roll, flip, rot90, repeat,
tile, squeeze, pad, append, stacks, sort, meshgrid, split. See :mod:`.library`."""
import functools

import numba
import numpy as np
from numba import types
from numba.extending import overload, register_jitable
from numba.np.unsafe.ndarray import to_fixed_tuple

from ... import runtime
from .library import _axis_of, _fail, _is_none, _last_changed, _literal, _rows


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
    inner = 1
    for k in range(ax + 1, x.ndim):
        inner *= x.shape[k]
    return _rolled_flat(x.ravel(), x.shape[ax], inner, shift).reshape(x.shape)


@register_jitable
def _rolled_flat(flat, n, inner, shift):
    """_roll_axis's loop, on the flat array: one compiled copy per dtype for every ndim."""
    out = np.empty_like(flat)
    if n == 0:
        return out
    for i in range(flat.size):
        c = (i // inner) % n
        out[i + ((c + shift) % n - c) * inner] = flat[i]
    return out


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


@numba.njit(cache=True)
def _rot90_turns(x, turns):
    """x turned ``turns`` (0-3) quarter turns from axis 0 towards axis 1, C-contiguous."""
    if turns == 0:
        return np.ascontiguousarray(x).copy()
    if turns == 1:
        return np.ascontiguousarray(x[:, ::-1].T)
    if turns == 2:
        return np.ascontiguousarray(x[::-1, ::-1])
    return np.ascontiguousarray(x.T[:, ::-1])


# k and axes as run-time integers (not prefer_literal): the turning itself is one compiled
# function per array type, where literal specializations compiled it once per (k, axes) a program
# uses, and each again in every caller's module (c_shapes' adjoint linked six copies; issue 17)
@overload(np_rot90)
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
        return _rot90_turns(x, turns)
    return impl


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
    return _tile_layout_of(ndim), ndim


@functools.lru_cache(maxsize=None)
def _tile_layout_of(ndim):
    """The layout function for a tiled result of ``ndim`` axes: one per ndim, given x's shape (not
    x), so np.tile and its adjoint, and arrays of any dtype or layout, share one compiled copy."""
    @register_jitable
    def layout(x_shape, reps):
        """(x's shape, reps, the tiled shape), each padded to ``ndim`` with leading ones."""
        shape = np.ones(ndim, np.int64)
        times = np.ones(ndim, np.int64)
        for k in range(len(x_shape)):
            shape[ndim - len(x_shape) + k] = x_shape[k]
        given = _as_int_array(reps)
        for k in range(given.size):
            times[ndim - given.size + k] = given[k]
        return shape, times, shape * times
    return layout


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


# np.tile's loop and its adjoint's on flat arrays: one compiled copy per dtype for every ndim
@register_jitable
def _tiled(flat, shape, tiled):
    out = np.empty(tiled.prod(), flat.dtype)
    for i in range(out.size):
        out[i] = flat[_tile_source(i, shape, tiled)]
    return out


@register_jitable
def _untiled(g, out, shape, tiled):
    for i in range(g.size):
        out[_tile_source(i, shape, tiled)] += g[i]
    return out


def np_tile(x, reps):
    return runtime.np_tile(x, reps)


@overload(np_tile)
def _np_tile_ov(x, reps):
    layout, ndim = _tile_layout(x, reps)

    def impl(x, reps):
        shape, times, tiled = layout(x.shape, reps)
        return _tiled(np.ascontiguousarray(x).ravel(), shape, tiled).reshape(to_fixed_tuple(tiled, ndim))
    return impl


def tile_adjoint(gradient, x, reps):
    return runtime.tile_adjoint(gradient, x, reps)


@overload(tile_adjoint)
def _tile_adjoint_ov(gradient, x, reps):
    layout, _ = _tile_layout(x, reps)

    def impl(gradient, x, reps):
        shape, times, tiled = layout(x.shape, reps)
        g = np.ascontiguousarray(gradient).ravel()
        if g.size != tiled.prod():
            raise ValueError("tile_adjoint: the gradient does not match the tiled shape")
        return _untiled(g, np.zeros(x.size, x.dtype), shape, tiled).reshape(x.shape)
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


@register_jitable
def _pad_shapes(x_shape, widths):
    """(x's shape, the padded shape) as arrays."""
    shape = np.empty(len(x_shape), np.int64)
    padded = np.empty(len(x_shape), np.int64)
    for d in range(len(x_shape)):
        shape[d] = x_shape[d]
        padded[d] = x_shape[d] + widths[d, 0] + widths[d, 1]
    return shape, padded


# The padding and its adjoint take the widths as an (ndim, 2) array: one compiled copy for every
# form of pad_width (an int, a pair, pairs), where the overloads' impls were one each (issue 17)
@register_jitable
def _padded(x, widths, constant_values):
    """np.pad's values, flat, and the padded shape."""
    shape, padded = _pad_shapes(x.shape, widths)
    flat = np.ascontiguousarray(x).ravel()
    out = np.empty(padded.prod(), x.dtype)
    for i in range(out.size):
        src = _pad_source(i, shape, widths, padded)
        out[i] = flat[src] if src >= 0 else constant_values
    return out, padded


@register_jitable
def _unpadded(gradient, x, widths):
    shape, padded = _pad_shapes(x.shape, widths)
    g = np.ascontiguousarray(gradient).ravel()
    out = np.empty(x.size, x.dtype)
    for i in range(g.size):
        src = _pad_source(i, shape, widths, padded)
        if src >= 0:
            out[src] = g[i]
    return out.reshape(x.shape)


def np_pad(x, pad_width, mode="constant", constant_values=0.0):
    return runtime.np_pad(x, pad_width, mode, constant_values)


@overload(np_pad)
def _np_pad_ov(x, pad_width, mode="constant", constant_values=0.0):
    ndim = x.ndim

    def impl(x, pad_width, mode="constant", constant_values=0.0):
        out, padded = _padded(x, _pad_widths(pad_width, ndim), constant_values)
        return out.reshape(to_fixed_tuple(padded, ndim))
    return impl


def pad_adjoint(gradient, x, pad_width):
    return runtime.pad_adjoint(gradient, x, pad_width)


@overload(pad_adjoint)
def _pad_adjoint_ov(gradient, x, pad_width):
    ndim = x.ndim
    return lambda gradient, x, pad_width: _unpadded(gradient, x, _pad_widths(pad_width, ndim))


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
    """np.vstack with 1-d parts as rows (Numba's own needs parts of one ndim); of an array, its rows."""
    if isinstance(parts, types.Array):
        if parts.ndim == 1:
            return lambda parts: np.ascontiguousarray(parts).reshape((parts.shape[0], 1))
        if parts.ndim == 2:
            return lambda parts: parts.copy()
        return lambda parts: np.ascontiguousarray(parts).reshape(
            (parts.shape[0] * parts.shape[1],) + parts.shape[2:])
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
        return from_rows(_sorted_rows(rows), shape)
    return impl


# The row loops of np.sort and its adjoint see C-contiguous matrices only: one compiled copy per
# dtype for every axis and ndim a program sorts along (issue 17)
@register_jitable
def _sorted_rows(rows):
    """Each row of ``rows`` sorted. Gathered through the stable argsort the adjoint uses, so a
    program links one sort (Numba's np.sort is a separate quicksort, and ``out[i] = row`` a slice
    assignment whose shape-error message pulls in string formatting: ~8k IR lines in c_shapes'
    module, issue 17). Same values as np.sort; only equal-comparing entries (0.0 and -0.0) may
    come out in another order, in their original one."""
    out = np.empty_like(rows)
    for i in range(rows.shape[0]):
        order = np.argsort(rows[i], kind="mergesort")
        for j in range(rows.shape[1]):
            out[i, j] = rows[i, order[j]]
    return out


@register_jitable
def _unsorted_rows(rows, g):
    """Each row of ``g`` put back where np.sort took the entries of ``rows``'s row from."""
    out = np.empty(rows.shape, rows.dtype)
    for i in range(rows.shape[0]):
        order = np.argsort(rows[i], kind="mergesort")       # stable: ties keep their order
        for j in range(rows.shape[1]):
            out[i, order[j]] = g[i, j]
    return out


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
        return from_rows(_unsorted_rows(rows, g), shape).reshape(x.shape)
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
        # each piece a slice along the literal axis (``x[:, b0:b1]``): no np.swapaxes, whose
        # general permutation code Numba compiles into every caller's module (issue 17)
        parts = ", ".join(f"np.ascontiguousarray(x[{_leading(ax)}b[{j}]:b[{j + 1}]])" for j in range(count))
        namespace = {"bounds": bounds, "np": np}
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


def _leading(ax):
    """Source of the full slices before axis ``ax`` in a subscript (``":, :, "`` for 2)."""
    return ":, " * ax


@register_jitable
def _add_into(view, gradient):
    """One compiled ``view += gradient`` for every part of the same type (written inline, each
    part's addition was its own broadcasting loop nest in the caller)."""
    view += gradient


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
             "    start = 0"]
    for j in range(count):
        lines += [f"    stop = start + gradients[{j}].shape[{ax}]",
                  f"    _add_into(out[{_leading(ax)}start:stop], gradients[{j}])",
                  "    start = stop"]
    lines.append("    return out")
    namespace = {"np": np, "_add_into": _add_into}
    exec("\n".join(lines), namespace)                                  # noqa: S102
    return namespace["join"]


def np_hsplit(x, indices_or_sections):
    return runtime.np_hsplit(x, indices_or_sections)


@overload(np_hsplit, prefer_literal=True)
def _np_hsplit_ov(x, indices_or_sections):
    along = 1 if x.ndim > 1 else 0
    return lambda x, indices_or_sections: np_split(x, indices_or_sections, along)
