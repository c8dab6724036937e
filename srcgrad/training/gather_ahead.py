"""The batch gather on a second thread, a few batches ahead of the fused training step
(``MinibatchLoop(..., gather_ahead=True | "auto")``; off by default).

    total = train(loop, rule, step, rest, hyper_values, seed, progress)   # MinibatchLoop's call

Why: :class:`srcgrad.optim.MinibatchLoop` copies each minibatch's shuffled rows of ``X`` into a
buffer before its step. That copy is memory-bound work of one core (MNIST at batch 64: ~0.027 s
of CPU per epoch, ``time.thread_time``), ~15% of the two-BLAS-thread epoch on this 2-core machine
(benchmarks/mnist_parts_bench.py, ``no-gather``). Here a second thread gathers batches ``k + 1 ..
k + R`` into a ring of ``R`` buffers while the step trains batch ``k``.

Measured (benchmarks/results/gather_ahead.md, a 2-core machine shared with other work, load
2.5-2.9): in the quietest windows (the least s/epoch over 60 segments) it was slower, by 12% /
10% at batch 64 / 256 with 2 BLAS threads (a third busy thread delays a two-thread product) and
by 9% / 5% with 1 (likely: the rows reach the step's core from the other core's cache instead of
from memory); under load it was faster with 1 BLAS thread (batch 256: median 0.39 against 0.66
s/epoch). So it is not a rule:
"auto" makes it two more candidates of the measured BLAS-thread choice
(:mod:`srcgrad.training.blas_threads`), and the default is off.

The result is the same as the serial loop's: the same rows reach the same step in the same
order (bit-identical parameters and loss for a fixed BLAS thread count; tests/test_gather_ahead.py).

The two threads hand slots over with two POSIX semaphores (``filled``, ``free``), called from the
compiled loops through libc's ``sem_wait``/``sem_post``; both compiled functions release the GIL.
Where libc has no unnamed semaphores (not Linux) :func:`available` is False and the loop keeps
the serial gather.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading

import numba
import numpy as np
from numba import types

from .fused_runs import _gather_batch

__all__ = ["available", "cpus", "run_ahead", "train", "RING"]

RING = 4                # slots: the gather may run this many batches ahead
_SEM_BYTES = 64         # >= sizeof(sem_t) (32 on x86-64 glibc), one cache line each

_FUNCTIONS = None       # (sem_init, sem_destroy, sem_post) from ctypes, once registered


def _libc_semaphores():
    """Registers libc's sem_wait/sem_post for compiled code; (sem_init, sem_destroy, sem_post)
    for Python, or None."""
    global _FUNCTIONS
    if _FUNCTIONS is None:
        _FUNCTIONS = False
        if sys.platform.startswith("linux"):
            try:
                import llvmlite.binding as llvm
                libc = ctypes.CDLL(None)
                init, destroy, post = libc.sem_init, libc.sem_destroy, libc.sem_post
                init.argtypes, init.restype = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint], \
                    ctypes.c_int
                for fn in (destroy, post):
                    fn.argtypes, fn.restype = [ctypes.c_void_p], ctypes.c_int
                for name in ("sem_wait", "sem_post"):
                    llvm.add_symbol(f"srcgrad_{name}",
                                    ctypes.cast(getattr(libc, name), ctypes.c_void_p).value)
                _FUNCTIONS = (init, destroy, post)
            except (OSError, AttributeError):
                _FUNCTIONS = False
    return _FUNCTIONS or None


def cpus():
    """The CPUs this process may run on (the gather ahead needs a second one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def available():
    """Whether the gather can run ahead on a second thread here (POSIX unnamed semaphores)."""
    return _libc_semaphores() is not None


_libc_semaphores()
_sem_wait = types.ExternalFunction("srcgrad_sem_wait", types.int32(types.voidptr))
_sem_post = types.ExternalFunction("srcgrad_sem_post", types.int32(types.voidptr))


@numba.njit(cache=True, nogil=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _take(semaphore):
    """Wait for the semaphore (a row of the semaphores' byte array); retried after a signal."""
    while _sem_wait(semaphore.ctypes) != 0:
        pass


@numba.njit(cache=True, nogil=True)
def _gather_loop(X, y, order, batch_size, first, stop, ring_X, ring_y, scale, sems, halt):
    """The gathering thread: batch ``b`` into slot ``b % R`` once the slot is free (semaphore
    1), then announced (semaphore 0). Returns early once ``halt[0]`` is set (the training
    loop stopped: an exception)."""
    slots = ring_X.shape[0]
    for batch in range(first, stop):
        _take(sems[1])
        if halt[0] != 0:
            return
        slot = batch % slots
        _gather_batch(X, y, order, batch * batch_size, batch_size, ring_X[slot], ring_y[slot],
                      scale)
        _sem_post(sems[0].ctypes)


@numba.njit(cache=True, nogil=True)
def _run_sgd_ahead(step, params, order, batch_size, first, stop, lr, ring_X, ring_y, seed,
                   progress, sems, halt):
    """``fused_runs._run_sgd_steps`` with each batch taken from the ring once gathered (it
    stops where ``halt[0]`` was set: the gathering thread failed)."""
    total = 0.0
    slots = ring_X.shape[0]
    for batch in range(first, stop):
        progress[0] = batch
        progress[1] = total
        size = order.shape[0] - batch * batch_size
        if size > batch_size:
            size = batch_size
        slot = batch % slots
        _take(sems[0])
        if halt[0] != 0:
            return total
        loss = step(*params, ring_X[slot][:size], ring_y[slot][:size], seed, lr)
        _sem_post(sems[1].ctypes)
        total += loss * size
    return total


@numba.njit(cache=True, nogil=True)
def _run_momentum_ahead(step, params, order, batch_size, first, stop, lr, mu, nesterov, velocity,
                        ring_X, ring_y, seed, progress, sems, halt):
    """``fused_runs._run_momentum_steps`` with each batch taken from the ring once gathered."""
    total = 0.0
    slots = ring_X.shape[0]
    for batch in range(first, stop):
        progress[0] = batch
        progress[1] = total
        size = order.shape[0] - batch * batch_size
        if size > batch_size:
            size = batch_size
        slot = batch % slots
        _take(sems[0])
        if halt[0] != 0:
            return total
        loss = step(*params, ring_X[slot][:size], ring_y[slot][:size], seed, lr, mu, nesterov,
                    velocity)
        _sem_post(sems[1].ctypes)
        total += loss * size
    return total


class Ring:
    """The ring's buffers and semaphores for one batch shape (kept by the loop between calls)."""

    def __init__(self, Xb, yb, slots=RING):
        self.X = np.empty((slots,) + Xb.shape, Xb.dtype)
        self.y = np.empty((slots,) + yb.shape, yb.dtype)
        self.sems = np.zeros((2, _SEM_BYTES), np.uint8)
        self.halt = np.zeros(1, np.int64)


def _init(ring):
    init, _, _ = _libc_semaphores()
    for k, value in ((0, 0), (1, ring.X.shape[0])):
        if init(ring.sems[k].ctypes.data, 0, value) != 0:
            raise OSError(ctypes.get_errno(), "sem_init failed")


def _destroy(ring):
    _, destroy, _ = _libc_semaphores()
    for k in (0, 1):
        destroy(ring.sems[k].ctypes.data)


def _post(ring, k):
    _, _, post = _libc_semaphores()
    post(ring.sems[k].ctypes.data)


def run_ahead(train, ring, X, y, order, batch_size, first, stop, scale=None):
    """Runs ``train()`` (the compiled ``_run_*_ahead`` loop over batches ``first <= b < stop``
    reading ``ring``) while a second thread gathers those batches into it (integer samples
    multiplied by ``scale`` unless it is None, as MinibatchLoop's ``x_scale``); returns what
    ``train`` returns and re-raises what it raises, after the gathering thread has ended."""
    if first >= stop:
        return train()
    _init(ring)
    ring.halt[0] = 0
    failure = []

    def gather():
        try:
            _gather_loop(X, y, order, batch_size, first, stop, ring.X, ring.y, scale, ring.sems,
                         ring.halt)
        except BaseException as error:      # (raised by the training thread below)
            failure.append(error)
            ring.halt[0] = 1                # the training loop stops at its next batch
            _post(ring, 0)

    worker = threading.Thread(target=gather, name="srcgrad-gather", daemon=True)
    worker.start()
    try:
        total = train()
    finally:
        ring.halt[0] = 1
        _post(ring, 1)          # a gatherer waiting for a free slot wakes and sees the halt
        worker.join()
        _destroy(ring)
    if failure:
        raise failure[0]
    return total


_ENTRIES = {}       # signature -> the compiled entry of _run_sgd_ahead / _run_momentum_ahead


def train(loop, rule, step, rest, hyper_values, seed, progress):
    """:class:`srcgrad.optim.MinibatchLoop`'s fused SGD/Momentum call (``rule``) with the gather
    ahead: ``rest`` is the loop's ``(params, X, y, order, batch_size, first, stop, state, hyper,
    Xb, yb, scale)``, ``hyper_values`` the runner's hyperparameters after the learning rate's
    place."""
    params, X, y, order, batch_size, first, stop = rest[:7]
    Xb, yb, scale = rest[9:]
    shape = (Xb.shape, Xb.dtype.str, yb.shape, yb.dtype.str)
    ring = loop._rings.get(shape)
    if ring is None:
        ring = loop._rings[shape] = Ring(Xb, yb)
    runner = _run_sgd_ahead if rule == "sgd" else _run_momentum_ahead
    [compiled] = step.overloads.values()            # the fused step: compiled for one signature
    args = (params, order, batch_size, first, stop, *hyper_values, ring.X, ring.y, seed,
            progress, ring.sems, ring.halt)
    signature = (types.FunctionType(compiled.signature),) + tuple(numba.typeof(a) for a in args)
    entry = _ENTRIES.get(signature)
    if entry is None:
        runner.compile(signature)
        entry = _ENTRIES[signature] = runner.overloads[signature].entry_point
    return run_ahead(lambda: entry(step, *args), ring, X, y, order, batch_size, first, stop,
                     scale)
