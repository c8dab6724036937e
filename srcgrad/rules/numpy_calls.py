"""Derivative rules of NumPy library calls (autograd's level of coverage): cumulative operations,
moments, and shape work. Rules may name a runtime helper that runs the primal call in generated
code (``LIBRARY_CALLS``); their kind functions get constant arguments as values
(``literal_args=True``)."""
import numpy as np

from .. import kinds as K
from ..runtime import (cumprod_adjoint, cumsum_adjoint, diag_adjoint, diff_adjoint,  # noqa: E402,F401
                      trace_adjoint, var_adjoint)
from ..runtime import cumprod_tangent  # noqa: E402,F401
from ..runtime import (append_part, hstack_part, meshgrid_adjoint, pad_adjoint,  # noqa: E402,F401
                      repeat_adjoint, roll_adjoint, sort_adjoint, sort_tangent, split_adjoint, tile_adjoint,
                      vstack_part, np_flip, np_rot90, np_moveaxis, np_swapaxes, np_triu, np_tril)
from ..runtime import reduced_count, reshape_any
from .table import (_axis_value, _library, _register_rule, _same_ndim, d, reduction_kind, register_adjoint,
                    register_tangent, register_zero_derivative)


# --- reductions and cumulative operations -------------------------------------------------------

def _cumulative_kind(x, axis=None, **kw):
    if _axis_value(x, axis, "cumulative sum/product") is None:
        return K.array(1)
    return K.array(x.ndim)


def _cumsum(result, x, axis=None):
    d[x] += cumsum_adjoint(d[result], x, axis)


def _cumprod(result, x, axis=None):
    d[x] += cumprod_adjoint(d[result], x, axis)


_library(np.cumsum, "np_cumsum", _cumsum, _cumulative_kind)
_library(np.cumprod, "np_cumprod", _cumprod, _cumulative_kind)


# (forward mode: the linear functions in this section have the same call on the tangent as
# tangent; np.cumprod's runs the product's recurrence on the tangent, dividing by nothing)
@register_tangent(np.cumsum)
def _cumsum_tangent(result, x, axis=None):
    d[result] += np.cumsum(d[x], axis=axis)


@register_tangent(np.cumprod)
def _cumprod_tangent(result, x, axis=None):
    d[result] += cumprod_tangent(d[x], x, axis)


def _diff_kind(x, n=1, axis=-1, **kw):
    if not x.is_array:
        raise TypeError("np.diff needs an array")
    if not isinstance(n, int) or n < 0:
        raise TypeError("np.diff: n must be a constant non-negative int")
    _axis_value(x, axis, "np.diff")
    return K.array(x.ndim)


def _diff(result, x, n=1, axis=-1):
    d[x] += diff_adjoint(d[result], n, axis)


_library(np.diff, "np_diff", _diff, _diff_kind)


@register_tangent(np.diff)
def _diff_tangent(result, x, n=1, axis=-1):
    d[result] += np.diff(d[x], n, axis)


def _moment_kind(x, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
    if dtype is not None or out is not None or kw:
        raise TypeError("only the axis, ddof and keepdims arguments are supported")
    _axis_value(x, axis, "np.var/np.std")
    if isinstance(ddof, K.Kind) and ddof.cls not in ("int", "float"):
        raise TypeError("ddof must be a number")
    return reduction_kind(x, axis, keepdims)


def _var(result, x, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    d[x] += var_adjoint(d[result], x, axis, ddof, keepdims)


def _std(result, x, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    d[x] += var_adjoint(d[result] / (2.0 * result), x, axis, ddof, keepdims)


_library(np.var, "np_var", _var, _moment_kind)
_library(np.std, "np_std", _std, _moment_kind)


# reduced_count is an int (the number of elements combined): constant for hvp
register_zero_derivative(reduced_count, kind=lambda x, axis: K.INT)


# d var = 2 mean((x - mean x) dx) n / (n - ddof); d std = d var / (2 std)
@register_tangent(np.var)
def _var_tangent(result, x, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    n = reduced_count(x, axis)
    d[result] += np.mean((x - np.mean(x, axis=axis, keepdims=True)) * d[x], axis=axis,
                         keepdims=keepdims) * (2.0 * n / (n - ddof))


@register_tangent(np.std)
def _std_tangent(result, x, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    n = reduced_count(x, axis)
    d[result] += np.mean((x - np.mean(x, axis=axis, keepdims=True)) * d[x], axis=axis,
                         keepdims=keepdims) * (n / (n - ddof)) / result


def _matrix_kind(what, result_ndim):
    def kind(x, *rest, **kw):
        if not (x.is_array and x.ndim == 2):
            raise TypeError(f"{what} is supported for matrices (2-d arrays)")
        return K.array(result_ndim)
    return kind


def _trace(result, x, offset=0):
    d[x] += trace_adjoint(d[result], x, offset)


_library(np.trace, None, _trace, _matrix_kind("np.trace", 0))


@register_tangent(np.trace)
def _trace_tangent(result, x, offset=0):
    d[result] += np.trace(d[x], offset)



# --- shape work ---------------------------------------------------------------------------------

def _diag_kind(v, k=0):
    if not (v.is_array and v.ndim in (1, 2)):
        raise TypeError("np.diag needs a 1-d or 2-d array")
    return K.array(3 - v.ndim)


def _diag(result, v, k=0):
    d[v] += diag_adjoint(d[result], v, k)


_library(np.diag, None, _diag, _diag_kind)


@register_tangent(np.diag)
def _diag_tangent(result, v, k=0):
    d[result] += np.diag(d[v], k)


def _diagonal(result, x, offset=0):
    d[x] += diag_adjoint(d[result], x, offset)


_library(np.diagonal, "np_diagonal", _diagonal, _matrix_kind("np.diagonal", 1))


@register_tangent(np.diagonal)
def _diagonal_tangent(result, x, offset=0):
    d[result] += np.diagonal(d[x], offset)


def _triu(result, m, k=0):
    d[m] += np_triu(d[result], k)


def _tril(result, m, k=0):
    d[m] += np_tril(d[result], k)


_library(np.triu, "np_triu", _triu, _matrix_kind("np.triu", 2))
_library(np.tril, "np_tril", _tril, _matrix_kind("np.tril", 2))


@register_tangent(np.triu)
def _triu_tangent(result, m, k=0):
    d[result] += np_triu(d[m], k)


@register_tangent(np.tril)
def _tril_tangent(result, m, k=0):
    d[result] += np_tril(d[m], k)


def _roll_kind(x, shift, axis=None):
    if isinstance(shift, K.Kind) and shift.cls != "int":
        raise TypeError("np.roll: the shift must be an int or a tuple of ints")
    if isinstance(axis, tuple) != isinstance(shift, tuple):
        raise TypeError("np.roll: shift and axis must both be ints or both tuples")
    if not isinstance(axis, tuple):
        _axis_value(x, axis, "np.roll")
    return _same_ndim(x)


def _roll(result, x, shift, axis=None):
    d[x] += roll_adjoint(d[result], shift, axis)


_library(np.roll, "np_roll", _roll, _roll_kind)


@register_tangent(np.roll)
def _roll_tangent(result, x, shift, axis=None):
    d[result] += np.roll(d[x], shift, axis)


def _flip_kind(m, axis=None):
    if not isinstance(axis, tuple):
        _axis_value(m, axis, "np.flip")
    return _same_ndim(m)


def _flip(result, m, axis=None):
    d[m] += np_flip(d[result], axis)


def _flipud(result, m):
    d[m] += np.flipud(d[result])


def _fliplr(result, m):
    d[m] += np.fliplr(d[result])


_library(np.flip, "np_flip", _flip, _flip_kind)
_library(np.flipud, None, _flipud, _same_ndim)
_library(np.fliplr, None, _fliplr, _matrix_kind("np.fliplr", 2))


@register_tangent(np.flip)
def _flip_tangent(result, m, axis=None):
    d[result] += np.flip(d[m], axis)


@register_tangent(np.flipud)
def _flipud_tangent(result, m):
    d[result] += np.flipud(d[m])


@register_tangent(np.fliplr)
def _fliplr_tangent(result, m):
    d[result] += np.fliplr(d[m])


def _rot90_kind(m, k=1, axes=(0, 1)):
    if isinstance(k, K.Kind) or not isinstance(axes, tuple):
        raise TypeError("np.rot90: k and axes must be constants")
    return _same_ndim(m)


def _rot90(result, m, k=1, axes=(0, 1)):
    d[m] += np_rot90(d[result], -k, axes)


_library(np.rot90, "np_rot90", _rot90, _rot90_kind)


@register_tangent(np.rot90)
def _rot90_tangent(result, m, k=1, axes=(0, 1)):
    d[result] += np.rot90(d[m], k, axes)


def _repeat_kind(a, repeats, axis=None):
    if not (isinstance(repeats, int) or (isinstance(repeats, K.Kind) and repeats.cls == "int")):
        raise TypeError("np.repeat: repeats must be one int (per-element counts are not supported)")
    if _axis_value(a, axis, "np.repeat") is None:
        return K.array(1)
    return K.array(a.ndim)


def _repeat(result, a, repeats, axis=None):
    d[a] += repeat_adjoint(d[result], a, repeats, axis)


_library(np.repeat, "np_repeat", _repeat, _repeat_kind)


@register_tangent(np.repeat)
def _repeat_tangent(result, a, repeats, axis=None):
    d[result] += np.repeat(d[a], repeats, axis)


def _tile_kind(a, reps):
    if isinstance(reps, K.Kind):
        if reps.cls == "tuple":
            return K.array(max(a.ndim if a.is_array else 0, len(reps.items)))
        return K.array(max(a.ndim if a.is_array else 0, 1))
    count = len(reps) if isinstance(reps, tuple) else 1
    return K.array(max(a.ndim if a.is_array else 0, count))


def _tile(result, a, reps):
    d[a] += tile_adjoint(d[result], a, reps)


_library(np.tile, "np_tile", _tile, _tile_kind)


@register_tangent(np.tile)
def _tile_tangent(result, a, reps):
    d[result] += np.tile(d[a], reps)


def _squeeze_kind(a, axis=None):
    if axis is None or isinstance(axis, K.Kind):
        raise TypeError("np.squeeze needs a constant axis= (srcgrad specializes on the number of "
                        "dimensions, and without axis it depends on the shape)")
    count = len(axis) if isinstance(axis, tuple) else 1
    return K.array(a.ndim - count)


def _squeeze(result, a, axis=None):
    d[a] += reshape_any(d[result], a.shape)


_library(np.squeeze, "np_squeeze", _squeeze, _squeeze_kind)


@register_tangent(np.squeeze)
def _squeeze_tangent(result, a, axis=None):
    d[result] += np.squeeze(d[a], axis)


def _swapaxes(result, a, axis1, axis2):
    d[a] += np_swapaxes(d[result], axis1, axis2)


def _moveaxis(result, a, source, destination):
    d[a] += np_moveaxis(d[result], destination, source)


# helpers: on cpu, constant axes make them a transpose known when compiling (Numba's own compile a
# general permutation, with a sort and error messages, into every module that uses them; issue 17)
_library(np.swapaxes, "np_swapaxes", _swapaxes, _same_ndim)
_library(np.moveaxis, "np_moveaxis", _moveaxis, _same_ndim)


@register_tangent(np.swapaxes)
def _swapaxes_tangent(result, a, axis1, axis2):
    d[result] += np.swapaxes(d[a], axis1, axis2)


@register_tangent(np.moveaxis)
def _moveaxis_tangent(result, a, source, destination):
    d[result] += np.moveaxis(d[a], source, destination)


def _append_kind(arr, values, axis=None):
    if axis is None:
        return K.array(1)
    return K.array(arr.ndim)


def _append(result, arr, values, axis=None):
    d[arr] += append_part(d[result], arr, values, axis, 0)
    d[values] += append_part(d[result], arr, values, axis, 1)


_library(np.append, None, _append, _append_kind)


@register_tangent(np.append)
def _append_tangent(result, arr, values, axis=None):
    d[result] += np.append(d[arr], np.zeros_like(values), axis)
    d[result] += np.append(np.zeros_like(arr), d[values], axis)


def _pad_kind(array, pad_width, mode="constant", constant_values=0.0, **kw):
    if mode != "constant" or kw:
        raise TypeError("np.pad is supported with mode='constant' (and constant_values)")
    if isinstance(pad_width, K.Kind) and pad_width.cls not in ("int", "tuple"):
        raise TypeError("np.pad: pad_width must be an int or a tuple")
    return _same_ndim(array)


def _pad(result, array, pad_width, mode="constant", constant_values=0.0):
    d[array] += pad_adjoint(d[result], array, pad_width)
    d[constant_values] += np.sum(d[result]) - np.sum(pad_adjoint(d[result], array, pad_width))


_library(np.pad, "np_pad", _pad, _pad_kind)


# the padding's tangent is the constant's: 1 where padded, 0 on the array
@register_tangent(np.pad)
def _pad_tangent(result, array, pad_width, mode="constant", constant_values=0.0):
    d[result] += np.pad(d[array], pad_width)
    d[result] += d[constant_values] * np.pad(np.zeros_like(array), pad_width, constant_values=1.0)


def _sort_kind(a, axis=-1, kind=None, order=None):
    if order is not None or (kind is not None and kind != "stable"):
        raise TypeError("np.sort: only axis (and kind='stable') are supported")
    if _axis_value(a, axis, "np.sort") is None:
        return K.array(1)
    return _same_ndim(a)


def _sort(result, a, axis=-1, kind=None, order=None):
    d[a] += sort_adjoint(d[result], a, axis)


_library(np.sort, "np_sort", _sort, _sort_kind)


# the tangent is gathered in sorted order (runtime.sort_tangent); for hvp, its adjoint in the
# tangent is sort_adjoint, and the order itself is piecewise constant in x (no term)
@register_tangent(np.sort)
def _sort_tangent(result, a, axis=-1, kind=None, order=None):
    d[result] += sort_tangent(d[a], a, axis)


def _sort_tangent_adjoint(result, tangent, x, axis):
    d[tangent] += sort_adjoint(d[result], x, axis)


_register_rule([sort_tangent], _sort_tangent_adjoint, elementwise=False,
               kind=lambda tangent, x, axis: K.array(1) if axis is None else _same_ndim(x))


def _linspace_kind(start, stop, num=50, endpoint=True, **kw):
    if kw or endpoint is not True:
        raise TypeError("np.linspace: only start, stop and num are supported")
    for v in (start, stop):
        if isinstance(v, K.Kind) and v.is_array:
            raise TypeError("np.linspace: start and stop must be scalars")
    return K.array(1)


def _linspace(result, start, stop, num=50, endpoint=True):
    t = np.linspace(0.0, 1.0, num)
    d[start] += np.sum(d[result] * (1.0 - t))
    d[stop] += np.sum(d[result] * t)


_library(np.linspace, None, _linspace, _linspace_kind)


@register_tangent(np.linspace)
def _linspace_tangent(result, start, stop, num=50, endpoint=True):
    t = np.linspace(0.0, 1.0, num)
    d[result] += d[start] * (1.0 - t)
    d[result] += d[stop] * t


def _meshgrid_kind(x, y, indexing="xy", **kw):
    if kw or indexing not in ("xy", "ij"):
        raise TypeError("np.meshgrid is supported for two 1-d arrays (and indexing='xy'/'ij')")
    if not (x.is_array and y.is_array and x.ndim == 1 and y.ndim == 1):
        raise TypeError("np.meshgrid is supported for two 1-d arrays")
    return K.tuple_of([K.array(2), K.array(2)])


def _meshgrid(result, x, y, indexing="xy"):
    d[x] += meshgrid_adjoint(d[result], 0, indexing)
    d[y] += meshgrid_adjoint(d[result], 1, indexing)


_library(np.meshgrid, "np_meshgrid", _meshgrid, _meshgrid_kind)


@register_tangent(np.meshgrid)          # linear: the grids of the tangents
def _meshgrid_tangent(result, x, y, indexing="xy"):
    d[result] += np.meshgrid(d[x], d[y], indexing=indexing)


def _split_kind(what):
    def kind(ary, indices_or_sections, axis=0):
        _axis_value(ary, axis, what)
        if isinstance(indices_or_sections, int):
            count = indices_or_sections
        elif isinstance(indices_or_sections, tuple):
            count = len(indices_or_sections) + 1
        else:
            raise TypeError(f"{what}: the number of sections (or the split indices) must be a "
                            "constant (it decides how many arrays come back)")
        return K.tuple_of([K.array(ary.ndim)] * count)
    return kind


def _split(result, ary, indices_or_sections, axis=0):
    d[ary] += split_adjoint(d[result], ary, axis)


def _vsplit(result, ary, indices_or_sections):
    d[ary] += split_adjoint(d[result], ary, 0)


def _hsplit(result, ary, indices_or_sections):
    d[ary] += split_adjoint(d[result], ary, 1 if ary.ndim > 1 else 0)


_library(np.split, "np_split", _split, _split_kind("np.split"))
_library(np.array_split, "np_array_split", _split, _split_kind("np.array_split"))
_library(np.vsplit, "np_split", _vsplit, _split_kind("np.vsplit"))
_library(np.hsplit, "np_hsplit", _hsplit, _split_kind("np.hsplit"))


@register_tangent(np.split, np.array_split)
def _split_tangent(result, ary, indices_or_sections, axis=0):
    d[result] += np.split(d[ary], indices_or_sections, axis)


def _vstack_kind(parts, **kw):
    if parts.is_array:          # an array's rows (the rows of a list built with append)
        return K.array(max(2, parts.ndim - 1))
    return K.array(max(2, parts.items[0].ndim))


# np.vstack of an array (its rows, as NumPy reads it) is a reshape of that array; a tuple of
# parts takes the sequence_part path (rules.callees: vstack_part)
@register_adjoint(np.vstack, kind=_vstack_kind, elementwise=False)
def vstack_rows(result, tup):
    d[tup] += np.reshape(d[result], tup.shape)


@register_tangent(np.vstack)
def vstack_rows_tangent(result, tup):
    d[result] += np.reshape(d[tup], result.shape)
