"""The ``python`` target: the generated code runs as plain Python (for reading and debugging).

Generated modules import their runtime helpers from here; they are the plain implementations of
:mod:`srcgrad.runtime`, unchanged.
"""
from ..rules import external as _lookup
from ..runtime import (  # noqa: F401  (re-exported for generated modules)
    push_float, push_int, range_length, _range_continues, unbroadcast, new_float_tape, new_int_tape,
    new_float32_tape, reduce_sum, reduce_mean, reduce_max, reduce_min, reduce_prod, expand_reduced,
    reduced_count, max_adjoint, min_adjoint, prod_adjoint, matmul_grad_left, matmul_grad_right, gather2, scatter_add2,
    scatter_add1, clip_scalar, reshape_any, push_slice, tape_slice, concat_part, stack_part, matmul,
    huge_pages, count_snapshot, pop_snapshot, snapshot_buffer, push_snapshot, snapshot_at,
    reserve_tape)
from .. import runtime as _runtime

# the NumPy/SciPy coverage helpers (runtime.LIBRARY_HELPERS), as they are
globals().update({_name: getattr(_runtime, _name) for _name in _runtime.LIBRARY_HELPERS})


def jit(function):
    """No compilation: the function runs as the Python it is."""
    return function


def external(qualified_name):
    """A user function with a registered derivative rule, as plain Python."""
    function = _lookup(qualified_name)
    return getattr(function, "py_func", function)
