"""Runtime helpers called by generated code.

Each helper is plain Python (the ``python`` target runs it as is) that Numba can also compile
(the ``cpu`` backend wraps them with ``njit``; see :mod:`srcgrad.backends.cpu`). Keep them small:
generated code should read as if these were NumPy builtins.
"""
import numpy as np

# The tape refuses to grow beyond this many bytes: a loop whose tape would not fit in memory fails
# early with a clear message instead of swapping the machine to death. Override with
# SRCGRAD_MAX_TAPE_BYTES (read when the backend is imported).
MAX_TAPE_BYTES = 8 * 1024 ** 3


def new_float_tape():
    return np.empty(256, dtype=np.float64)


def new_int_tape():
    return np.empty(256, dtype=np.int64)


def grow(tape):
    """A tape of twice the size holding the same values (geometric growth keeps pushes O(1))."""
    size = tape.shape[0] * 2
    if size * 8 > MAX_TAPE_BYTES:
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


def range_length(start, stop, step):
    """len(range(start, stop, step)) without building the range."""
    if step > 0:
        return max(0, (stop - start + step - 1) // step)
    return max(0, (start - stop - step - 1) // (-step))


def _range_continues(counter, stop, step):
    """The test of a ``for ... in range`` loop that was rewritten as a ``while`` loop."""
    return counter < stop if step > 0 else counter > stop


def unbroadcast(gradient, like):
    """Sum ``gradient`` over the axes that broadcasting added or stretched, to ``like``'s shape."""
    if np.shape(gradient) == np.shape(like):
        return gradient
    g = np.asarray(gradient)
    shape = np.shape(like)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g
