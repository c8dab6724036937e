"""Runtime helpers called by generated code: the python implementations of the helpers declared in
:mod:`srcgrad.helpers`.

Each helper is plain Python (the ``python`` target runs it as is) that Numba can also compile
(the ``cpu`` backend wraps them with ``njit``; see :mod:`srcgrad.backends.cpu`). Keep them small:
generated code should read as if these were NumPy builtins.

This module holds the tapes, snapshots and loop bounds; the array helpers are in
:mod:`srcgrad.runtime_arrays` and the NumPy/SciPy coverage in :mod:`srcgrad.runtime_library`,
all importable from here.
"""
import os

import numpy as np

# The tape refuses to grow beyond this many bytes: a loop whose tape would not fit in memory fails
# early with a clear message instead of swapping the machine to death. Override with the
# environment variable SRCGRAD_MAX_TAPE_BYTES, read each time a tape grows (so setting it at any
# time takes effect, and compiled code never freezes a value into Numba's disk cache: the cpu
# backend reads it with the C library's getenv).
MAX_TAPE_BYTES = 8 * 1024 ** 3      # the limit when SRCGRAD_MAX_TAPE_BYTES is unset or empty


def max_tape_bytes():
    """The tape limit in force now."""
    text = os.environ.get("SRCGRAD_MAX_TAPE_BYTES")
    return int(text) if text else MAX_TAPE_BYTES


def new_float_tape():
    return np.empty(256, dtype=np.float64)


def new_float32_tape():
    return np.empty(256, dtype=np.float32)


def new_int_tape():
    return np.empty(256, dtype=np.int64)


def grow(tape):
    """A tape of twice the size holding the same values (geometric growth keeps pushes O(1))."""
    size = tape.shape[0] * 2
    if size * 8 > max_tape_bytes():
        raise MemoryError("srcgrad: the tape of overwritten values would exceed SRCGRAD_MAX_TAPE_BYTES "
                          "(a loop with a huge trip count); reduce the problem size or raise the limit")
    bigger = np.empty(size, dtype=tape.dtype)
    bigger[:tape.shape[0]] = tape
    return bigger


def push_float(tape, top, value):
    """Push ``value`` on a float tape; returns the (possibly regrown) tape and the new top."""
    if top == tape.shape[0]:
        tape = grow(tape)
    tape[top] = value
    return tape, top + 1


def push_int(tape, top, value):
    if top == tape.shape[0]:
        tape = grow(tape)
    tape[top] = value
    return tape, top + 1


def count_snapshot(total, snapshots, array, may_be_unset):
    """Bytes kept by array snapshots (see transform.py) once ``array`` is copied too; a clear
    MemoryError past SRCGRAD_MAX_TAPE_BYTES, as for the tape of scalars. ``array`` must have the
    shape of the snapshot before it (see :func:`pop_snapshot`)."""
    if len(snapshots) > 0 and snapshots[-1].shape != array.shape and \
            not (may_be_unset and len(snapshots) == 1 and snapshots[-1].size == 0):
        raise ValueError(SHAPE_CHANGE)
    total += array.nbytes
    if total > max_tape_bytes():
        raise MemoryError("srcgrad: the snapshots of arrays rebound in a loop would exceed "
                          "SRCGRAD_MAX_TAPE_BYTES (a loop with a huge trip count); reduce the problem "
                          "size or raise the limit")
    return total


def pop_snapshot(snapshots, current, may_be_unset):
    """The snapshot pushed last, which must have ``current``'s shape: the adjoint arrays have one
    shape per variable, so an array whose shape changes from one iteration to the next is refused
    here rather than differentiated wrongly. ``may_be_unset``: the bottom snapshot may be the empty
    placeholder of a variable first assigned inside the loop."""
    old = snapshots.pop()
    if old.shape != current.shape and not (may_be_unset and len(snapshots) == 0 and old.size == 0):
        raise ValueError(SHAPE_CHANGE)
    return old


def snapshot_buffer(array, count):
    """Room for ``count`` snapshots of ``array``: one allocation at the entry of a loop."""
    if count * array.nbytes > max_tape_bytes():
        raise MemoryError("srcgrad: the snapshots of arrays rebound in a loop would exceed "
                          "SRCGRAD_MAX_TAPE_BYTES (a loop with a huge trip count); reduce the problem "
                          "size or raise the limit")
    return np.empty((max(count, 0),) + array.shape, array.dtype)


def reserve_tape(tape, top, count):
    """``tape`` with room for ``count`` more values above ``top`` (grown once if needed): a loop
    whose trip counts are known at its entry then pushes without growth checks
    (tape.plan_loop_tapes). The copy is a loop (see backends.cpu.grow)."""
    need = top + max(count, 0)
    if need <= tape.shape[0]:
        return tape
    if need * tape.itemsize > max_tape_bytes():
        raise MemoryError("srcgrad: the tape of overwritten values would exceed SRCGRAD_MAX_TAPE_BYTES "
                          "(a loop with a huge trip count); reduce the problem size or raise the limit")
    bigger = np.empty(max(need, 2 * tape.shape[0]), tape.dtype)
    for i in range(top):
        bigger[i] = tape[i]
    return bigger


def push_snapshot(buffer, top, array):
    """Copy ``array`` into row ``top`` of a snapshot buffer; returns the next free row."""
    if array.shape != buffer.shape[1:]:
        raise ValueError(SHAPE_CHANGE)
    buffer[top] = array
    return top + 1


def first_snapshot_row(buffer, array):
    """Row 0 of a snapshot buffer, holding ``array``: a step snapshot written in place
    (step_snapshots.py) keeps the stepped array in the buffer from the loop's entry on."""
    if array.shape != buffer.shape[1:]:
        raise ValueError(SHAPE_CHANGE)
    buffer[0] = array
    return buffer[0]


def snapshot_at(buffer, top, current):
    """Row ``top`` of a snapshot buffer; ``current`` (the value it replaces) must have its shape."""
    if current.shape != buffer.shape[1:]:
        raise ValueError(SHAPE_CHANGE)
    return buffer[top]


SHAPE_CHANGE = ("srcgrad: an array variable rebound in a loop changes shape from one assignment to "
                "the next; the reverse sweep supports one shape per variable: use a new name for the "
                "value of the new shape")


def range_length(start, stop, step):
    """len(range(start, stop, step)) without building the range."""
    if step > 0:
        return max(0, (stop - start + step - 1) // step)
    return max(0, (start - stop - step - 1) // (-step))


def _range_continues(counter, stop, step):
    """The test of a ``for ... in range`` loop that was rewritten as a ``while`` loop."""
    return counter < stop if step > 0 else counter > stop


def push_slice(tape, top, view):
    """Push every value of ``view`` (a row or slice about to be overwritten) on the tape."""
    count = np.size(view)
    while top + count > tape.shape[0]:
        tape = grow(tape)
    tape[top:top + count] = np.ravel(view)
    return tape, top + count


def tape_slice(tape, top, like):
    """The values ``push_slice`` saved at ``top``, shaped like ``like``."""
    return tape[top:top + np.size(like)].reshape(np.shape(like)).astype(like.dtype)


# -- the array and library helpers, importable from here ----------------------------------------
from . import helpers as _helpers, runtime_arrays as _arrays, runtime_library as _library  # noqa: E402
from .runtime_arrays import *  # noqa: E402,F401,F403
from .runtime_library import *  # noqa: E402,F401,F403

LIBRARY_HELPERS = _helpers.names(library=True)      # NumPy/SciPy coverage (declared in srcgrad.helpers)

# srcgrad.runtime is these helpers' home: program.is_helper and the forward builder recognize
# srcgrad's own helpers (plain Python, transformed like user helpers when generated code is
# differentiated again) by this module name; the files they are written in do not matter. Their
# private helpers (``_einsum_parts``, used by rules.py) are importable from here too.
for _module in (_arrays, _library):
    for _value in list(vars(_module).values()):
        if callable(_value) and getattr(_value, "__module__", None) == _module.__name__:
            _value.__module__ = __name__
            globals().setdefault(_value.__name__, _value)
del _module, _value
