"""Fewer full garbage collections while Numba compiles (issue 17).

A Numba compile allocates a great many small container objects (IR nodes, types, typing
templates and their caches, LLVM wrappers), and keeps many of them. With CPython's default
thresholds, (700, 10, 10), the cyclic garbage collector then also runs *full* collections during
the compile, each walking every object of the process (NumPy's, Numba's, llvmlite's, srcgrad's):
in a cold MNIST training process, 4 full collections cost 0.40-0.48 s of CPU, three quarters of
all its collector time (0.53-0.64 s; with this module 0.13-0.14 s, peak memory 218 -> 230 MB),
measured with ``gc.callbacks`` (benchmarks/results/train_compile_mcold3.json). While a compile runs,
:func:`fewer_collections` raises the third threshold (how many middle-generation collections
come before a full one) to :data:`FULL_THRESHOLD`, which leaves the frequent young collections as
they are (they free most garbage, cheaply) and defers the full ones to after the compile.

It is process-wide and may be entered by several threads at once (a compile in a thread while
the main one compiles): the first block to start raises the threshold, the last one to end
restores what it found, unless someone changed it meanwhile. Automatic collection switched off
(a first threshold of 0) or a third threshold already above :data:`FULL_THRESHOLD` is left
alone, and so is everything when ``SRCGRAD_COMPILE_GC=0``.
"""
import gc
import os
import threading
from contextlib import contextmanager

__all__ = ["FULL_THRESHOLD", "fewer_collections"]

FULL_THRESHOLD = 1000

_lock = threading.Lock()
_depth = 0
_saved = None           # the thresholds found by the outermost block, or None: left alone


@contextmanager
def fewer_collections():
    """Run the body (a Numba compile) with full collections deferred (FULL_THRESHOLD)."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            found = gc.get_threshold()
            off = os.environ.get("SRCGRAD_COMPILE_GC", "1").strip() == "0"
            _saved = found if found[0] > 0 and found[2] < FULL_THRESHOLD and not off else None
            if _saved is not None:
                gc.set_threshold(found[0], found[1], FULL_THRESHOLD)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                if gc.get_threshold() == (*_saved[:2], FULL_THRESHOLD):   # not changed meanwhile
                    gc.set_threshold(*_saved)
                _saved = None
