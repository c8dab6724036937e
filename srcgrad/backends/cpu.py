"""The ``cpu`` target: generated functions are compiled with Numba's ``njit`` (cached on disk).

The runtime helpers of :mod:`srcgrad.runtime` are compiled here too; ``unbroadcast`` gets a
Numba overload because its result's dimensionality depends on its arguments' types.
"""
import os

import numba
import numpy as np
from numba import types
from numba.extending import overload

from .. import runtime

if os.environ.get("SRCGRAD_MAX_TAPE_BYTES"):
    runtime.MAX_TAPE_BYTES = int(os.environ["SRCGRAD_MAX_TAPE_BYTES"])

FASTMATH = False


def jit(function):
    """Compile a generated function: nopython mode, cached next to the generated file."""
    return numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy")(function)


def _helper(function):
    return numba.njit(cache=True, inline="always")(function)


grow = numba.njit(cache=True)(runtime.grow)
runtime_grow = grow


@numba.njit(cache=True, inline="always")
def push_float(tape, top, value):
    if top == tape.shape[0]:
        tape = grow(tape)
    tape[top] = value
    return tape, top + 1


@numba.njit(cache=True, inline="always")
def push_int(tape, top, value):
    if top == tape.shape[0]:
        tape = grow(tape)
    tape[top] = value
    return tape, top + 1


new_float_tape = _helper(runtime.new_float_tape)
new_int_tape = _helper(runtime.new_int_tape)
range_length = _helper(runtime.range_length)
_range_continues = _helper(runtime._range_continues)


def unbroadcast(gradient, like):
    return runtime.unbroadcast(gradient, like)


@overload(unbroadcast, inline="always")
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
    if like.ndim == 1 and extra == 1:
        def impl(gradient, like):
            out = np.zeros(gradient.shape[1], gradient.dtype)
            for i in range(gradient.shape[0]):
                out += gradient[i]
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
            g = gradient
            if like.shape[0] == 1 and g.shape[0] != 1:
                rows = np.zeros((1, g.shape[1]), g.dtype)
                for i in range(g.shape[0]):
                    rows[0] += g[i]
                g = rows
            if like.shape[1] == 1 and g.shape[1] != 1:
                cols = np.empty((g.shape[0], 1), g.dtype)
                for i in range(g.shape[0]):
                    cols[i, 0] = g[i].sum()
                g = cols
            return g
        return impl
    if extra == 0:
        def impl(gradient, like):
            if gradient.shape == like.shape:
                return gradient
            raise ValueError("srcgrad: broadcasting along a size-1 axis of a >2-d array is not "
                             "supported by the cpu target yet")
        return impl
    raise numba.core.errors.TypingError(
        f"srcgrad: cannot sum a {gradient.ndim}-d gradient back to a {like.ndim}-d array")
