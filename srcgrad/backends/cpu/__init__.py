"""The ``cpu`` target: generated functions are compiled with Numba's ``njit`` (cached on disk).

Generated modules import their runtime helpers from here. The package's parts:

* :mod:`.memory` — the C allocator's tuning, huge pages, the tapes of overwritten values;
* :mod:`.helpers` — compiled array helpers (``unbroadcast``, reductions and their adjoints, ...);
* :mod:`.blas` — matrix products (``matmul`` and its adjoints) through NumPy's own BLAS;
* :mod:`.library` and the modules it imports — the NumPy/SciPy coverage helpers;
* :mod:`.lowering` and :mod:`.fusion` — the cpu-only rewrites of generated code (matrix products,
  loop fusion), run by the cpu backend object (:mod:`srcgrad.backends`).
"""
import numba

from ... import runtime
from ...errors import FusionGuardFailed  # noqa: F401  (raised by fused loops' guards)
from .counting_loops import loop_range  # noqa: F401  (the loops of fused loop nests)
from .memory import (  # noqa: F401  (re-exported: generated modules import them from here)
    MALLOC_TUNED, huge_pages, grow, runtime_grow, push_float, push_int, new_float_tape, new_int_tape,
    new_float32_tape, count_snapshot, pop_snapshot, snapshot_buffer, reserve_tape, push_snapshot, snapshot_at,
    first_snapshot_row,
    range_length, _range_continues, push_slice, tape_slice)
from .helpers import (  # noqa: F401
    unbroadcast, sum_broadcast_into, reduce_sum, reduce_mean, reduce_max, reduce_min, reduce_prod,
    expand_reduced, reduced_count, max_adjoint, min_adjoint, prod_adjoint, gather2, scatter_add2,
    scatter_add1, clip_scalar, reshape_any, concat_part, stack_part, array_op, update_array)
from .blas import (  # noqa: F401
    NUMPY_BLAS, matmul, matmul_grad_left, matmul_grad_right, batched_matmul_grads)

# Fast math changes results: off. It is part of the generated modules' cache key
# (backends.CpuBackend.options): Numba's own disk cache does not key on compile flags.
FASTMATH = False


def jit(function):
    """Compile a generated function: nopython mode, cached next to the generated file; without
    Numba's search for closures to inline where there are none (:mod:`.pipeline`)."""
    from .pipeline import pipeline_for
    pipeline = pipeline_for(function)
    options = {} if pipeline is None else {"pipeline_class": pipeline}
    return numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy", **options)(function)


def external(qualified_name):
    """A user function with a registered rule, compiled for Numba if it is plain Python."""
    from ...rules import external as lookup
    function = lookup(qualified_name)
    if hasattr(function, "py_func"):
        return function
    return numba.njit(cache=True)(function)


# -- NumPy/SciPy coverage helpers (runtime.LIBRARY_HELPERS) -------------------------------------
# Compiled versions live in .library (reductions, SciPy), .library_shapes and .library_linalg; a
# helper none of them defines is the runtime one, compiled.
from . import library as _cpu_library, library_linalg as _linalg, library_shapes as _shapes  # noqa: E402


def _compiled(name):
    for module in (_cpu_library, _shapes, _linalg):
        if name in vars(module):
            return vars(module)[name]
    return numba.njit(cache=True)(getattr(runtime, name))


for _name in runtime.LIBRARY_HELPERS:
    if _name not in _cpu_library._LAZY:         # those are built on first use (__getattr__ below)
        globals()[_name] = _compiled(_name)


def __getattr__(name):
    """The library ufuncs (and the functions calling them) are compiled on first use: see
    library._LAZY."""
    if name in _cpu_library._LAZY:
        value = globals()[name] = getattr(_cpu_library, name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
