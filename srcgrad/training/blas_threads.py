"""How many threads the BLAS behind srcgrad's matrix products uses.

    from srcgrad.training.blas_threads import blas_threads, current_blas_threads
    with blas_threads(1):          # products run on one BLAS thread, then the setting is restored
        ...

Why: a multi-threaded BLAS call pays for waking its worker threads and for moving the operands
between the cores' caches. For a training step's small products that can cost more than the
second core gains: on this 2-core machine every tool trained the MNIST MLP at batch 64 slower
on both cores than on one (benchmarks/results/mnist.md), and while other processes kept the
cores busy a 256x784x512 float32 product ran ~10x slower on 2 OpenBLAS threads than on 1 (its
threads spin waiting for a preempted partner). :class:`srcgrad.optim.MinibatchLoop` therefore
measures its batches with each thread count and keeps the faster one (``blas_threads="auto"``,
the default; an int: that many threads; None: the BLAS's own setting): :func:`run_with_threads`.

The setting is OpenBLAS's ``openblas_set_num_threads`` (what threadpoolctl calls). It is process
wide (OpenBLAS 0.3.31's ``openblas_set_num_threads_local`` changed it for every thread too):
another thread's BLAS calls during the ``with`` body run with it as well. A product can round
differently with another thread count (OpenBLAS 0.3.31's 64x784 @ 784x128 float32 product:
up to 7e-5 on entries of size ~30), as it can under any change of BLAS threads; the trained
parameters agree to rounding (tests/test_training_blas_threads.py). It is applied to every
OpenBLAS that srcgrad's products may call: NumPy's (the cpu backend's ``gemm``) and SciPy's (Numba's
``np.dot``). Where none is found (another BLAS) :func:`current_blas_threads` is 1 and
:func:`blas_threads` changes nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib.util
import os

__all__ = ["blas_threads", "current_blas_threads", "controllable"]

_LIBRARIES = None       # [(set, get)] once found


def _library_paths():
    """The shared libraries of NumPy's and SciPy's bundled BLAS (without importing SciPy)."""
    paths = []
    for package in ("numpy", "scipy"):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = list(spec.submodule_search_locations)[0]
        paths += glob.glob(os.path.join(os.path.dirname(root), f"{package}.libs", "*blas*"))
        paths += glob.glob(os.path.join(root, ".libs", "*blas*"))
    return paths


def _symbol(library, names, restype, argtypes):
    for name in names:
        fn = getattr(library, name, None)
        if fn is not None:
            fn.restype, fn.argtypes = restype, argtypes
            return fn
    return None


def _libraries():
    global _LIBRARIES
    if _LIBRARIES is None:
        found = []
        for path in _library_paths():
            try:
                library = ctypes.CDLL(path)
            except OSError:
                continue
            set_threads = _symbol(library, ("scipy_openblas_set_num_threads64_",
                                            "scipy_openblas_set_num_threads",
                                            "openblas_set_num_threads64_",
                                            "openblas_set_num_threads"), None, [ctypes.c_int])
            get = _symbol(library, ("scipy_openblas_get_num_threads64_",
                                    "scipy_openblas_get_num_threads", "openblas_get_num_threads64_",
                                    "openblas_get_num_threads"), ctypes.c_int, [])
            if set_threads is not None and get is not None:
                found.append((set_threads, get))
        _LIBRARIES = found
    return _LIBRARIES


def controllable():
    """Whether srcgrad can set the threads of its BLAS."""
    return bool(_libraries())


def current_blas_threads():
    """The threads srcgrad's BLAS products use now (the largest over the libraries); 1 where
    they cannot be controlled."""
    return max((get() for _, get in _libraries()), default=1)


@contextlib.contextmanager
def blas_threads(n):
    """Run the body with ``n`` BLAS threads; restores every library's previous setting after it
    (also on an exception)."""
    n = int(n)
    if n < 1:
        raise ValueError(f"blas_threads needs at least 1 thread, got {n}")
    libraries = _libraries()
    before = [get() for _, get in libraries]
    try:
        for set_threads, _ in libraries:
            set_threads(n)
        yield
    finally:
        for (set_threads, _), k in zip(libraries, before):
            set_threads(k)


# ------------------------------------------------------------------------------------------------
# MinibatchLoop's choice
# ------------------------------------------------------------------------------------------------

def check_setting(setting):
    """A valid ``MinibatchLoop(..., blas_threads=setting)``: "auto", None or an int >= 1."""
    if not (setting is None or setting == "auto"
            or (isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1)):
        raise ValueError(f'blas_threads must be "auto", None or an int >= 1, got {setting!r}')
    return setting


def _shapes_key(params, X, y, order, batch_size):
    """What a thread choice is kept for: the parameters' and the samples' shapes and dtypes and
    the batch size; None for arguments the loop itself will refuse (it says why)."""
    from srcgrad.pytree import leaves
    try:
        if int(batch_size) < 1 or len(order) == 0:
            return None
        return (int(batch_size), tuple((p.shape, p.dtype.str) for p in leaves(params)),
                X.shape[1:], X.dtype.str, y.shape[1:], y.dtype.str)
    except (TypeError, ValueError, AttributeError):
        return None


def candidates(most):
    """The thread counts ``"auto"`` tries: ``most``, its halvings (two at most), and 1."""
    out = []
    while most > 1 and len(out) < 3:
        out.append(most)
        most //= 2
    return out + [1]


ROUNDS = 3          # runs per candidate; the minimum is kept (other processes only add time)
MAX_RUN = 16        # batches per run
SHARE = 8           # the runs cost at most 1/SHARE of a call's batches more


def _choose(loop, train, params, X, y, order, batch_size, first, stop, tries):
    """The candidate of ``tries`` with the least seconds per batch over ``ROUNDS`` runs of the
    batches ``first <= i < first + k`` each, and those times; every run starts from the
    parameters and optimizer state of the call (restored after each run and at the end), so
    the call then trains as if the choice had been made before it. None: too few batches."""
    import time
    from srcgrad.pytree import leaves
    k = min(MAX_RUN, (stop - first) // (SHARE * ROUNDS * len(tries)))
    if k < 2:
        return None, None
    arrays = list(leaves(params))
    saved = [a.copy() for a in arrays]
    state = loop.optimizer.state_dict()
    best = dict.fromkeys(tries, float("inf"))
    try:
        for r in range(ROUNDS):
            for c in tries[r % len(tries):] + tries[:r % len(tries)]:
                with blas_threads(c):
                    t0 = time.perf_counter()
                    train(params, X, y, order, batch_size, first, first + k)
                    best[c] = min(best[c], (time.perf_counter() - t0) / k)
                for a, b in zip(arrays, saved):
                    a[...] = b
                loop.optimizer.load_state_dict(state)
    finally:
        for a, b in zip(arrays, saved):
            a[...] = b
        loop.optimizer.load_state_dict(state)
    return min(tries, key=best.__getitem__), best


def run_with_threads(loop, train, params, X, y, order, batch_size, first, stop):
    """:class:`srcgrad.optim.MinibatchLoop`'s call with its ``blas_threads`` setting;
    ``train(params, X, y, order, batch_size, first, stop)`` trains the batches ``first <= i <
    stop`` and returns their summed loss.

    ``"auto"``: the thread count chosen before for these shapes (``loop.blas_threads_chosen``:
    key -> (threads, {candidate: best seconds per batch})); else, when the BLAS has more than one
    thread and the call has enough batches, ``ROUNDS`` timed runs of its first ``k`` batches
    with each of :func:`candidates` (the order rotated each round; each run from the call's
    starting parameters and optimizer state, restored after it), the one with the least seconds
    per batch kept, and then the call trained with it: exactly what a call with that int would
    train. Too few batches (fewer than 2 per run): the BLAS's own setting, no choice yet. The
    choice is a measurement: another process may choose another count, and a product can round
    differently on it; pass an int for bitwise-repeatable runs across processes.

    Why measure instead of a size rule: on this 2-core machine more threads made the MNIST MLP's
    batch-64 step slower and the batch-256 step faster (benchmarks/results/mnist.md), and while
    other processes kept the cores busy two OpenBLAS threads were 8-30x slower than one
    (benchmarks/results/blas_threads.md)."""
    setting = loop.blas_threads
    if setting == "auto":
        key = _shapes_key(params, X, y, order, batch_size)
        if key in loop.blas_threads_chosen:
            setting = loop.blas_threads_chosen[key][0]
        elif key is None or current_blas_threads() <= 1:
            setting = None
        else:
            n_batches = -(-len(order) // int(batch_size))
            stop = n_batches if stop is None else min(int(stop), n_batches)
            first = int(first)
            setting, best = _choose(loop, train, params, X, y, order, batch_size, first, stop,
                                    candidates(current_blas_threads()))
            if setting is not None:
                loop.blas_threads_chosen[key] = (setting, best)
    if setting is None:
        return train(params, X, y, order, batch_size, first, stop)
    with blas_threads(setting):
        return train(params, X, y, order, batch_size, first, stop)
