"""Compiled versions of the array helpers of :mod:`srcgrad.runtime` (cpu target).

``unbroadcast``, the reductions along an axis and their adjoints, gathers and scatters, and the
adjoints of concatenation and stacking get Numba overloads: their results' dimensionality depends
on their arguments' types (and literal axes).
"""
import numba
import numpy as np
from numba import types
from numba.extending import overload, register_jitable

from ... import runtime
from .memory import _helper, huge_pages


def array_op(op, a, b):
    return runtime.array_op(op, a, b)


_ARRAY_OP_IMPLS = {"+": lambda op, a, b: a + b, "-": lambda op, a, b: a - b,
                   "*": lambda op, a, b: a * b, "/": lambda op, a, b: a / b}


@overload(array_op, prefer_literal=True)
def _array_op_overload(op, a, b):
    """The operation of the literal ``op`` as written (Numba's typing and broadcasting): compiled
    once per operator and operand types, shared by every call with them."""
    return _ARRAY_OP_IMPLS[getattr(op, "literal_value", None)]


def update_array(target, op, value):
    return runtime.update_array(target, op, value)


def _add_into(target, op, value):
    target += value


def _subtract_from(target, op, value):
    target -= value


@overload(update_array, prefer_literal=True)
def _update_array_overload(target, op, value):
    """The update of the literal ``op`` as written (Numba's broadcasting and casting), compiled once
    per operator and operand types and shared by every call with them; an array ``target`` only
    (``+=`` on a scalar would rebind the local name and lose the update)."""
    if not isinstance(target, types.Array):
        raise numba.core.errors.TypingError(f"update_array of a {target}: an array is updated in place")
    return {"+": _add_into, "-": _subtract_from}[getattr(op, "literal_value", None)]


def unbroadcast(gradient, like):
    return runtime.unbroadcast(gradient, like)


@overload(unbroadcast)
def _unbroadcast_overload(gradient, like):
    if not isinstance(like, types.Array):
        if isinstance(gradient, types.Array):
            return lambda gradient, like: gradient.sum()
        return lambda gradient, like: gradient
    if not isinstance(gradient, types.Array):
        return lambda gradient, like: np.full(like.shape, gradient)
    extra = gradient.ndim - like.ndim
    if like.ndim == 1 and extra == 0:
        def impl(gradient, like):
            if gradient.shape[0] == like.shape[0]:
                return gradient
            out = np.empty(like.shape, gradient.dtype)
            out[0] = gradient.sum()
            return out
        return impl
    # Sums below are element loops: an array `+=` makes Numba compile its broadcast-error
    # formatting (about 4 s of every adjoint's compile time).
    if like.ndim == 1 and extra == 1:
        def impl(gradient, like):
            out = np.zeros(gradient.shape[1], gradient.dtype)
            for i in range(gradient.shape[0]):
                for j in range(gradient.shape[1]):
                    out[j] += gradient[i, j]
            if like.shape[0] == 1 and gradient.shape[1] != 1:
                out2 = np.empty(1, gradient.dtype)
                out2[0] = out.sum()
                return out2
            return out
        return impl
    if like.ndim == 2 and extra == 0:
        def impl(gradient, like):
            if gradient.shape[0] == like.shape[0] and gradient.shape[1] == like.shape[1]:
                return gradient
            # sum along each axis the array has as 1 and the gradient does not, in one pass
            # (one allocation, no np.sum: fewer functions for Numba to compile in every adjoint)
            g = gradient
            rows = 1 if like.shape[0] == 1 else g.shape[0]
            cols = 1 if like.shape[1] == 1 else g.shape[1]
            if rows == g.shape[0] and cols == g.shape[1]:
                return g
            out = np.zeros((rows, cols), g.dtype)
            for i in range(g.shape[0]):
                r = 0 if rows == 1 else i
                for j in range(g.shape[1]):
                    out[r, 0 if cols == 1 else j] += g[i, j]
            return out
        return impl
    if extra < 0:
        raise numba.core.errors.TypingError(
            f"srcgrad: cannot sum a {gradient.ndim}-d gradient back to a {like.ndim}-d array")

    def any_ndim(gradient, like):
        if extra == 0 and gradient.shape == like.shape:
            return gradient
        out = np.zeros(like.shape, gradient.dtype)
        sum_broadcast_into(np.ascontiguousarray(gradient), out)
        return out
    return any_ndim


@numba.njit(cache=True)
def sum_broadcast_into(gradient, out):
    """``out += gradient`` summed over the axes broadcasting added or stretched (any ndim).

    ``gradient`` is C-contiguous; ``out`` C-contiguous with ``out.ndim <= gradient.ndim``, each of
    its axes equal to the gradient's trailing one or 1. One pass over the gradient in memory
    order, an odometer of indices carrying the offset into ``out`` (stride 0 on summed axes)."""
    nd, lead = gradient.ndim, gradient.ndim - out.ndim
    size = np.empty(nd, np.int64)
    out_size = np.ones(nd, np.int64)
    for axis in range(nd):
        size[axis] = gradient.shape[axis]
    for axis in range(out.ndim):
        out_size[lead + axis] = out.shape[axis]
        if out.shape[axis] != 1 and out.shape[axis] != gradient.shape[lead + axis]:
            raise ValueError("unbroadcast: the gradient's shape does not broadcast to the array's")
    stride = np.zeros(nd, np.int64)
    step = 1
    for axis in range(nd - 1, -1, -1):
        if out_size[axis] == size[axis]:
            stride[axis] = step
        step *= out_size[axis]
    flat_in, flat_out = gradient.ravel(), out.ravel()
    index = np.zeros(nd, np.int64)
    at = 0
    for k in range(flat_in.size):
        flat_out[at] += flat_in[k]
        axis = nd - 1
        while axis >= 0:
            index[axis] += 1
            at += stride[axis]
            if index[axis] < size[axis]:
                break
            at -= stride[axis] * size[axis]
            index[axis] = 0
            axis -= 1


# ---- array helpers: Numba overloads (1-d and 2-d arrays) ---------------------------------------

def _is_none(t):
    return t is None or isinstance(t, (types.NoneType, types.Omitted))


def _literal(t):
    return getattr(t, "literal_value", None)


def _bad_axis(x, axis):
    """NumPy's AxisError message for an out-of-range literal axis, else None.

    The overloads below then compile to code that raises it (a ValueError, as NumPy's AxisError
    is), so that an out-of-range axis is an error on this target too, not another axis' result."""
    ax = _literal(axis)
    ndim = getattr(x, "ndim", 0)
    if isinstance(ax, int) and not isinstance(ax, bool) and not -ndim <= ax < ndim:
        return f"axis {ax} is out of bounds for array of dimension {ndim}"
    return None


def _axis_type_check(what, axis):
    """A refusal (SrcgradError: Numba passes it through) for an axis srcgrad cannot compile."""
    if _is_none(axis) or isinstance(axis, types.Integer):
        return
    raise numba.core.errors.TypingError(
        f"srcgrad: {what} with an axis of type {axis} (a tuple of axes) is not supported on "
        "target='cpu': reduce one axis at a time")


# -- any axis of any array: the array seen as (outer, n, inner), reduced along its middle axis ----
# These implementations take the axis as a run-time integer, so an axis held in a variable (a
# function argument: not a Numba literal) means what it says, and arrays of any ndim work.

@register_jitable
def _axis_index(axis, ndim):
    """``axis`` as an index in 0..ndim-1 (negative axes count from the end); NumPy's error else."""
    if axis < -ndim or axis >= ndim:
        raise ValueError("axis is out of bounds for the array's dimension")
    return axis + ndim if axis < 0 else axis


@register_jitable
def _around_axis(shape, ax):
    """(outer, n, inner): the sizes of the axes before ``ax``, of ``ax``, and of those after."""
    outer = 1
    inner = 1
    for k in range(len(shape)):
        if k < ax:
            outer *= shape[k]
        elif k > ax:
            inner *= shape[k]
    return outer, shape[ax], inner


_REDUCED_SHAPES = {}


def _reduced_shape(ndim, keep):
    """A jitable ``(shape, ax) ->`` the shape after reducing axis ``ax`` (kept as 1 when ``keep``):
    the result's length is fixed by ``ndim``, its entries are chosen at run time."""
    key = (ndim, keep)
    if key not in _REDUCED_SHAPES:
        if keep:
            items = [f"1 if ax == {k} else shape[{k}]" for k in range(ndim)]
        else:
            items = [f"shape[{k} if {k} < ax else {k + 1}]" for k in range(ndim - 1)]
        namespace = {}
        exec(f"def reduced_shape(shape, ax):\n    return ({', '.join(items)},)\n", namespace)  # noqa: S102
        _REDUCED_SHAPES[key] = register_jitable(namespace["reduced_shape"])
    return _REDUCED_SHAPES[key]


def _reduced_type(name, dtype):
    """NumPy's result type of reduction ``name`` of an array of (Numba) ``dtype``, as a NumPy
    scalar type: np.mean of integers is float64, np.sum/np.prod of booleans and integers int64."""
    if not isinstance(dtype, types.Float):
        if name == "mean":
            return np.float64
        if name in ("sum", "prod"):
            return np.int64
    from numba.np.numpy_support import as_dtype
    return as_dtype(dtype).type


def _reduce_along(combine_1d, ndim, keep, out_type):
    """reduce(x, axis, keepdims) for an integer ``axis`` (literal or not) of an N-d array."""
    shape_of = _reduced_shape(ndim, keep)

    def along(x, axis, keepdims):
        ax = _axis_index(axis, x.ndim)
        outer, n, inner = _around_axis(x.shape, ax)
        v = np.ascontiguousarray(x).reshape((outer, n, inner))
        out = np.empty((outer, inner), out_type)
        column = np.empty(n, x.dtype)
        for o in range(outer):
            for i in range(inner):
                for k in range(n):
                    column[k] = v[o, k, i]
                out[o, i] = combine_1d(column)
        return out.reshape(shape_of(x.shape, ax))
    return along


def _reduction(name, combine_1d):
    """A reduce_<name>(x, axis, keepdims) with a Numba overload: fast paths for a literal axis of
    a 1-d/2-d array, any integer axis of any array otherwise."""
    py = getattr(runtime, f"reduce_{name}")

    def stub(x, axis, keepdims):
        return py(x, axis, keepdims)

    @overload(stub, prefer_literal=True)
    def _ov(x, axis, keepdims):
        keep = bool(_literal(keepdims))
        bad = _bad_axis(x, axis)
        if bad is not None:
            if keep:
                def kept(x, axis, keepdims):
                    if x.size >= 0:
                        raise ValueError(bad)
                    return x
                return kept

            def dropped(x, axis, keepdims):
                if x.size >= 0:
                    raise ValueError(bad)
                return x[0]
            return dropped
        if _is_none(axis):
            if keep:
                ones = (1,) * x.ndim            # a constant: Numba cannot repeat a tuple
                return lambda x, axis, keepdims: np.full(ones, combine_1d(x.ravel()))
            return lambda x, axis, keepdims: combine_1d(x.ravel())
        _axis_type_check(f"np.{name}", axis)
        ax = _literal(axis)
        if x.ndim == 1:
            if keep:
                def kept_1d(x, axis, keepdims):
                    _axis_index(axis, 1)
                    return np.full(1, combine_1d(x))
                return kept_1d

            def whole_1d(x, axis, keepdims):
                _axis_index(axis, 1)
                return combine_1d(x)
            return whole_1d
        out_type = _reduced_type(name, x.dtype)
        if x.ndim != 2 or ax is None:           # arrays of 3+ dimensions, a run-time axis
            return _reduce_along(combine_1d, x.ndim, keep, out_type)
        if ax == 1 or ax == -1:
            def rows(x, axis, keepdims):
                out = np.empty(x.shape[0], out_type)
                for i in range(x.shape[0]):
                    out[i] = combine_1d(x[i])
                return out.reshape((x.shape[0], 1)) if keep else out
            return rows

        def cols(x, axis, keepdims):
            out = np.empty(x.shape[1], out_type)
            column = np.empty(x.shape[0], x.dtype)
            for j in range(x.shape[1]):
                for i in range(x.shape[0]):
                    column[i] = x[i, j]
                out[j] = combine_1d(column)
            return out.reshape((1, x.shape[1])) if keep else out
        return cols
    stub.__name__ = f"reduce_{name}"
    return stub


reduce_sum = _reduction("sum", numba.njit(lambda v: v.sum()))
reduce_mean = _reduction("mean", numba.njit(lambda v: v.sum() / v.size))
@numba.njit(cache=True)
def _max_1d(v):
    """v.max() as a plain loop (NumPy's NaN rule: any NaN gives NaN); Numba's own takes about a
    second to compile into every adjoint that reduces rows."""
    if v.size == 0:
        raise ValueError("zero-size array to reduction operation maximum which has no identity")
    best = v[0]
    for k in range(1, v.size):
        if v[k] > best or v[k] != v[k]:
            best = v[k]
    return best


@numba.njit(cache=True)
def _min_1d(v):
    """v.min() as a plain loop, as _max_1d."""
    if v.size == 0:
        raise ValueError("zero-size array to reduction operation minimum which has no identity")
    best = v[0]
    for k in range(1, v.size):
        if v[k] < best or v[k] != v[k]:
            best = v[k]
    return best


@numba.njit(cache=True)
def _prod_1d(v):
    product = v.dtype.type(1)
    for k in range(v.size):
        product *= v[k]
    return product


reduce_max = _reduction("max", _max_1d)
reduce_min = _reduction("min", _min_1d)
reduce_prod = _reduction("prod", _prod_1d)


def expand_reduced(gradient, x, axis, keepdims):
    return runtime.expand_reduced(gradient, x, axis, keepdims)


def _raising_bad_axis(message):
    """An adjoint helper's implementation for an out-of-range literal axis: NumPy's error."""
    def raising(gradient, x, axis, keepdims):
        if x.size >= 0:
            raise ValueError(message)
        return np.zeros_like(x)
    return raising


@overload(expand_reduced, prefer_literal=True)
def _expand_reduced_ov(gradient, x, axis, keepdims):
    if not isinstance(x, types.Array):          # np.sum of a scalar
        return lambda gradient, x, axis, keepdims: gradient
    bad = _bad_axis(x, axis)
    if bad is not None:
        return _raising_bad_axis(bad)
    if _is_none(axis):
        if isinstance(gradient, types.Array):
            return lambda gradient, x, axis, keepdims: np.full(x.shape, gradient.ravel()[0])
        return lambda gradient, x, axis, keepdims: np.full(x.shape, gradient)
    _axis_type_check("the adjoint of np.sum/np.mean", axis)
    ax = _literal(axis)
    if ax is None or x.ndim > 2:                # a run-time axis, arrays of 3+ dimensions
        return _expand_along
    if x.ndim == 1:
        return lambda gradient, x, axis, keepdims: np.full(x.shape, _first(gradient))
    if ax in (1, -1):
        def rows(gradient, x, axis, keepdims):
            g = gradient.ravel()
            if g.size != x.shape[0]:
                raise ValueError("expand_reduced: the gradient does not match the reduced rows")
            out = huge_pages(np.empty(x.shape, g.dtype))
            for i in range(x.shape[0]):
                for j in range(x.shape[1]):
                    out[i, j] = g[i]
            return out
        return rows

    def cols(gradient, x, axis, keepdims):
        g = gradient.ravel()
        if g.size != x.shape[1]:
            raise ValueError("expand_reduced: the gradient does not match the reduced columns")
        out = huge_pages(np.empty(x.shape, g.dtype))
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                out[i, j] = g[j]
        return out
    return cols


def _as_flat(v):
    return np.ravel(v)


@overload(_as_flat)
def _as_flat_ov(v):
    """The values of an array (C order) or a scalar as a 1-d array."""
    if isinstance(v, types.Array):
        return lambda v: np.ascontiguousarray(v).ravel()
    return lambda v: np.full(1, v)


def _expand_along(gradient, x, axis, keepdims):
    """expand_reduced for an integer axis (literal or not) of an N-d array."""
    ax = _axis_index(axis, x.ndim)
    outer, n, inner = _around_axis(x.shape, ax)
    g = _as_flat(gradient)
    if g.size != outer * inner:
        raise ValueError("expand_reduced: the gradient does not match the reduced array")
    out = huge_pages(np.empty((outer, n, inner), g.dtype))
    for o in range(outer):
        for k in range(n):
            for i in range(inner):
                out[o, k, i] = g[o * inner + i]
    return out.reshape(x.shape)


def _extreme_along(take_max):
    """max_adjoint/min_adjoint for an integer axis (literal or not) of an N-d array."""
    def along(gradient, x, axis, keepdims):
        ax = _axis_index(axis, x.ndim)
        outer, n, inner = _around_axis(x.shape, ax)
        v = np.ascontiguousarray(x).reshape((outer, n, inner))
        g = _as_flat(gradient)
        if g.size != outer * inner:
            raise ValueError("max/min adjoint: the gradient does not match the reduced array")
        out = np.zeros((outer, n, inner), g.dtype)
        column = np.empty(n, x.dtype)
        for o in range(outer):
            for i in range(inner):
                for k in range(n):
                    column[k] = v[o, k, i]
                out[o, _arg_extreme_1d(column, take_max), i] = g[o * inner + i]
        return out.reshape(x.shape)
    return along


def _prod_along(gradient, x, axis, keepdims):
    """prod_adjoint for an integer axis (literal or not) of an N-d array."""
    ax = _axis_index(axis, x.ndim)
    outer, n, inner = _around_axis(x.shape, ax)
    v = np.ascontiguousarray(x).reshape((outer, n, inner))
    g = _as_flat(gradient)
    if g.size != outer * inner:
        raise ValueError("prod_adjoint: the gradient does not match the reduced array")
    out = np.empty((outer, n, inner), x.dtype)
    column = np.empty(n, x.dtype)
    others = np.empty(n, x.dtype)
    for o in range(outer):
        for i in range(inner):
            for k in range(n):
                column[k] = v[o, k, i]
            _others_product_1d(column, g[o * inner + i], others)
            for k in range(n):
                out[o, k, i] = others[k]
    return out.reshape(x.shape)


def reduced_count(x, axis):
    return runtime.reduced_count(x, axis)


@overload(reduced_count, prefer_literal=True)
def _reduced_count_ov(x, axis):
    if not isinstance(x, types.Array):
        return lambda x, axis: 1
    if _is_none(axis):
        return lambda x, axis: x.size
    _axis_type_check("np.mean", axis)
    return lambda x, axis: x.shape[_axis_index(axis, x.ndim)]


@numba.njit(cache=True)
def _arg_extreme_1d(v, take_max):
    """np.argmax(v) (np.argmin if not take_max) as a plain loop: the first extreme element, or
    the first NaN (NumPy's rule)."""
    if v.size == 0:
        raise ValueError("attempt to get argmax/argmin of an empty sequence")
    best, where = v[0], 0
    for k in range(v.size):
        if v[k] != v[k]:
            return k
        if (v[k] > best) if take_max else (v[k] < best):
            best, where = v[k], k
    return where


def _extremum(take_max):
    def stub(gradient, x, axis, keepdims):
        return runtime.extremum_adjoint(gradient, x, axis, keepdims, take_max)

    @overload(stub, prefer_literal=True)
    def _ov(gradient, x, axis, keepdims):
        if not isinstance(x, types.Array):      # np.max of a scalar
            return lambda gradient, x, axis, keepdims: gradient
        bad = _bad_axis(x, axis)
        if bad is not None:
            return _raising_bad_axis(bad)
        _axis_type_check("the adjoint of np.max/np.min", axis)
        if not _is_none(axis) and (_literal(axis) is None or x.ndim > 2):
            return _extreme_along(take_max)     # a run-time axis, arrays of 3+ dimensions
        if _is_none(axis) or x.ndim == 1:
            def whole(gradient, x, axis, keepdims):
                g = _first(gradient)
                out = np.zeros(x.size, type(g))
                out[_arg_extreme_1d(x.ravel(), take_max)] = g
                return out.reshape(x.shape)
            return whole
        ax = _literal(axis)
        if ax in (1, -1):
            def rows(gradient, x, axis, keepdims):
                g = gradient.ravel()
                out = np.zeros(x.shape, g.dtype)
                for i in range(x.shape[0]):
                    out[i, _arg_extreme_1d(x[i], take_max)] = g[i]
                return out
            return rows

        def cols(gradient, x, axis, keepdims):
            g = gradient.ravel()
            out = np.zeros(x.shape, g.dtype)
            for j in range(x.shape[1]):
                out[_arg_extreme_1d(x[:, j], take_max), j] = g[j]
            return out
        return cols
    return stub


def _first(v):
    return v


@overload(_first)
def _first_ov(v):
    if isinstance(v, types.Array):
        return lambda v: v.ravel()[0]
    return lambda v: v


max_adjoint = _extremum(True)
min_adjoint = _extremum(False)


@numba.njit(cache=True)
def _others_product_1d(v, scale, out):
    """out[k] = scale * (the product of v's elements but v[k]): exclusive prefix products on the
    way up, suffix products on the way down (no division, so zeros in v are no special case)."""
    before = v.dtype.type(1)
    for k in range(v.size):
        out[k] = before
        before *= v[k]
    after = v.dtype.type(1)
    for k in range(v.size - 1, -1, -1):
        out[k] *= after * scale
        after *= v[k]


def prod_adjoint(gradient, x, axis, keepdims):
    return runtime.prod_adjoint(gradient, x, axis, keepdims)


@overload(prod_adjoint, prefer_literal=True)
def _prod_adjoint_ov(gradient, x, axis, keepdims):
    """runtime.prod_adjoint for scalars, whole arrays, and rows or columns of matrices."""
    if not isinstance(x, types.Array):
        return lambda gradient, x, axis, keepdims: gradient
    bad = _bad_axis(x, axis)
    if bad is not None:
        return _raising_bad_axis(bad)
    _axis_type_check("the adjoint of np.prod", axis)
    if not _is_none(axis) and (_literal(axis) is None or x.ndim > 2):
        return _prod_along                      # a run-time axis, arrays of 3+ dimensions
    if _is_none(axis) or x.ndim == 1:
        def whole(gradient, x, axis, keepdims):
            out = np.empty(x.size, x.dtype)
            _others_product_1d(np.ascontiguousarray(x).ravel(), _first(gradient), out)
            return out.reshape(x.shape)
        return whole
    ax = _literal(axis)
    if ax in (1, -1):
        def rows(gradient, x, axis, keepdims):
            g = gradient.ravel()
            if g.size != x.shape[0]:
                raise ValueError("prod_adjoint: the gradient does not match the reduced rows")
            out = np.empty(x.shape, x.dtype)
            for i in range(x.shape[0]):
                _others_product_1d(x[i], g[i], out[i])
            return out
        return rows

    def cols(gradient, x, axis, keepdims):
        g = gradient.ravel()
        if g.size != x.shape[1]:
            raise ValueError("prod_adjoint: the gradient does not match the reduced columns")
        out_t = np.empty((x.shape[1], x.shape[0]), x.dtype)
        column = np.empty(x.shape[0], x.dtype)
        for j in range(x.shape[1]):
            for i in range(x.shape[0]):
                column[i] = x[i, j]
            _others_product_1d(column, g[j], out_t[j])
        return out_t.T.copy()
    return cols



@numba.njit(cache=True)
def gather2(x, rows, cols):
    out = np.empty(rows.shape[0], x.dtype)
    for k in range(rows.shape[0]):
        out[k] = x[rows[k], cols[k]]
    return out


@numba.njit(cache=True)
def scatter_add2(adjoint, rows, cols, gradient):
    for k in range(rows.shape[0]):
        adjoint[rows[k], cols[k]] += gradient[k]


@numba.njit(cache=True)
def scatter_add1(adjoint, index, gradient):
    for k in range(index.shape[0]):
        adjoint[index[k]] += gradient[k]


clip_scalar = _helper(runtime.clip_scalar)



@numba.njit(cache=True)
def reshape_any(x, shape):
    """np.reshape that also accepts non-contiguous arrays (it copies them, as NumPy does)."""
    return np.ascontiguousarray(x).reshape(shape)


def concat_part(gradient, k, parts, axis):
    return runtime.concat_part(gradient, k, parts, axis)


@overload(concat_part, prefer_literal=True)
def _concat_part_ov(gradient, k, parts, axis):
    if isinstance(axis, types.Integer) and _literal(axis) is None:
        return _concat_part_along(gradient, parts)
    ax = _literal(axis)
    ax = 0 if ax is None else ax % gradient.ndim
    index = _literal(k)
    if isinstance(parts, types.BaseTuple) and not isinstance(parts, types.UniTuple) and \
            isinstance(index, int) and ax in (0, 1) and ax < gradient.ndim:
        # parts of different types (a slice beside a new array): a heterogeneous tuple can only
        # be indexed by constants, so the offset is written out for this (literal) k
        offset = " + ".join(f"parts[{j}].shape[{ax}]" for j in range(index)) or "0"
        view = "gradient[start:stop]" if ax == 0 else "gradient[:, start:stop]"
        namespace = {}
        exec(f"def constant_k(gradient, k, parts, axis):\n"          # noqa: S102
             f"    start = {offset}\n"
             f"    stop = start + parts[{index}].shape[{ax}]\n"
             f"    return {view}\n", namespace)
        return namespace["constant_k"]
    if ax == 0:
        def first(gradient, k, parts, axis):
            start = 0
            for j in range(k):
                start += parts[j].shape[0]
            return gradient[start:start + parts[k].shape[0]]
        return first
    if ax == 1 and gradient.ndim == 2:
        def second(gradient, k, parts, axis):
            start = 0
            for j in range(k):
                start += parts[j].shape[1]
            return gradient[:, start:start + parts[k].shape[1]]
        return second
    return _concat_part_along(gradient, parts)        # other axes, arrays of 3+ dimensions


def stack_part(gradient, k, axis):
    return runtime.stack_part(gradient, k, axis)


@overload(stack_part, prefer_literal=True)
def _stack_part_ov(gradient, k, axis):
    if isinstance(axis, types.Integer) and _literal(axis) is None:
        return _stack_part_along(gradient.ndim)
    ax = _literal(axis)
    ax = 0 if ax is None else ax % gradient.ndim
    if ax == 0:
        return lambda gradient, k, axis: gradient[k]
    if ax == 1 and gradient.ndim == 2:
        return lambda gradient, k, axis: gradient[:, k]
    if ax == 1 and gradient.ndim == 3:
        return lambda gradient, k, axis: gradient[:, k]
    if ax == 2 and gradient.ndim == 3:
        return lambda gradient, k, axis: gradient[:, :, k]
    return _stack_part_along(gradient.ndim)           # other axes and dimensions


# np.concatenate / np.stack with an axis held in a variable (not a Numba literal): the block of
# the gradient along a run-time axis, as a copy (views along different axes have different types)
_RESIZED_SHAPES = {}


def _resized_shape(ndim):
    """A jitable ``(shape, ax, size) ->`` ``shape`` with entry ``ax`` replaced by ``size``."""
    if ndim not in _RESIZED_SHAPES:
        items = [f"size if ax == {k} else shape[{k}]" for k in range(ndim)]
        namespace = {}
        exec(f"def resized_shape(shape, ax, size):\n    return ({', '.join(items)},)\n", namespace)  # noqa: S102
        _RESIZED_SHAPES[ndim] = register_jitable(namespace["resized_shape"])
    return _RESIZED_SHAPES[ndim]


def _concat_part_along(gradient, parts):
    if not isinstance(parts, types.UniTuple):
        raise numba.core.errors.TypingError(
            "srcgrad: np.concatenate of arrays of different kinds with an axis held in a variable "
            "is not supported on target='cpu': write the axis as a number")
    shape_of = _resized_shape(gradient.ndim)

    def along(gradient, k, parts, axis):
        ax = _axis_index(axis, gradient.ndim)
        start = 0
        for j in range(k):
            start += parts[j].shape[ax]
        size = parts[k].shape[ax]
        outer, n, inner = _around_axis(gradient.shape, ax)
        v = np.ascontiguousarray(gradient).reshape((outer, n, inner))
        out = np.empty((outer, size, inner), gradient.dtype)
        for o in range(outer):
            for c in range(size):
                for i in range(inner):
                    out[o, c, i] = v[o, start + c, i]
        return out.reshape(shape_of(gradient.shape, ax, size))
    return along


def _stack_part_along(ndim):
    shape_of = _reduced_shape(ndim, False)

    def along(gradient, k, axis):
        ax = _axis_index(axis, gradient.ndim)
        outer, n, inner = _around_axis(gradient.shape, ax)
        v = np.ascontiguousarray(gradient).reshape((outer, n, inner))
        out = np.empty((outer, inner), gradient.dtype)
        for o in range(outer):
            for i in range(inner):
                out[o, i] = v[o, k, i]
        return out.reshape(shape_of(gradient.shape, ax))
    return along

