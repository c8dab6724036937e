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
import time

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


def candidates(most, ahead=False):
    """The thread counts ``"auto"`` tries: ``most``, its halvings (two at most), and 1; with
    ``ahead`` also ``(most, "ahead")`` after ``most`` and ``(1, "ahead")`` last: that many BLAS
    threads with the batch gather on a second thread (:mod:`srcgrad.training.gather_ahead`).
    Why 1 with the gather ahead: while other processes kept this 2-core machine busy it ran
    the MNIST epoch faster than 1 thread alone (benchmarks/results/gather_ahead.md)."""
    out = []
    while most > 1 and len(out) < 3:
        out.append(most)
        most //= 2
    if ahead and out:
        return [out[0], (out[0], "ahead")] + out[1:] + [1, (1, "ahead")]
    return out + [1]


def label(candidate):
    """A candidate as reports show it: the thread count, or e.g. "2+ahead"."""
    return f"{candidate[0]}+ahead" if isinstance(candidate, tuple) else candidate


def _setting(candidate):
    """(BLAS threads, gather ahead) of a candidate."""
    return (candidate[0], True) if isinstance(candidate, tuple) else (candidate, False)


CHUNK = 8           # batches per timed chunk
MIN_CHUNK = 4       # fewer batches left in a call: not timed (run with the best count so far)
ROUNDS = 6          # rounds (one chunk per candidate, order rotated) before a choice ...
MAX_ROUNDS = 12     # ... or more, up to this many, while the best leads by less than MARGIN
MARGIN = 0.05
EARLY_ROUNDS, EARLY_LEAD = 3, 1.5     # a lead this clear decides after fewer rounds
# (a recheck also decides after EARLY_ROUNDS when the choice it re-measures still leads by more
# than MARGIN, and it times a count that lost by more than MARGIN on chunks of MIN_CHUNK)
RECHECK = 30        # after this many rounds' worth of batches with the choice, measure again;
MAX_BACKOFF = 16    # the interval doubles (up to this factor) while the choice stays the same
PROBE_LEAD = 3.0    # a recheck first times one batch on each count that lost by more than this
PROBE_CHUNK = 1     # (see ThreadChoice.probing)
PROBE_MAX_BACKOFF = 4   # a choice confirmed by probes is measured again at least this often

_clock = time.perf_counter       # the tests replace it to inject timings


class ThreadChoice:
    """``"auto"``'s measurement for one set of shapes, from the loop's own batches.

    The loop trains in chunks of ``CHUNK`` batches; while no count is chosen, each round runs
    one chunk on every candidate (the order rotated from round to round) and records its
    seconds per batch. Those are the call's real batches, trained once: nothing is restored.
    After ``ROUNDS`` rounds the candidate with the least median (over rounds) of its time
    relative to the first candidate's in the same round is chosen, if it leads every other by
    more than ``MARGIN``; otherwise rounds go on, up to ``MAX_ROUNDS``, then the least median
    wins. Per-round ratios of neighbouring chunks cancel slow changes of the machine's load,
    and the median discards a chunk that another process disturbed (the benchmarks' method).
    A lead over ``EARLY_LEAD`` decides after ``EARLY_ROUNDS`` rounds (each chunk on a loser
    costs: under load two OpenBLAS threads were up to 30x slower than one). Once ``RECHECK``
    rounds' worth of batches have run on the choice it is measured again (the load may have
    changed): the decision is re-validated from later batches too; each time it is confirmed
    the interval doubles, up to ``MAX_BACKOFF`` times. A recheck costs less than the first
    choice: a count that lost by more than ``MARGIN`` is re-measured on chunks of ``MIN_CHUNK``
    batches, and the choice is confirmed after ``EARLY_ROUNDS`` rounds when it still leads every
    other by more than ``MARGIN`` (a load change that reverses the order still needs the full
    evidence). Why: every batch timed on a loser is a slower batch; at MNIST batch 64 on 2 cores
    1 thread lost by 1.39x (under ``EARLY_LEAD``), and each recheck ran 6 rounds of 8 batches on
    it: 48 to 96 of an epoch's 937 batches (benchmarks/results/mnist.md), ~2% of the epoch.

    Where every other count lost by more than ``PROBE_LEAD`` (another process kept a core busy:
    two OpenBLAS threads ran MNIST batch 64 10-40x slower than one), a recheck starts with a
    probe round: the choice on ``CHUNK`` batches, each loser on ``PROBE_CHUNK``. If the choice
    still leads every loser by more than ``PROBE_LEAD`` it is confirmed at once; otherwise the
    probe round is dropped and the recheck measures as above; probe confirmations double the
    interval up to ``PROBE_MAX_BACKOFF`` times only. Why: under such load the three rounds of
    ``MIN_CHUNK`` two-thread batches cost as much as the 480 one-thread batches between
    rechecks (benchmarks/results/mnist_mb64.md); the probe costs a twelfth of that, so the
    choice can be rechecked often enough to return to 2 threads soon after the load ends."""

    def __init__(self, tries):
        self.tries = list(tries)
        self.rounds = []            # completed rounds: {candidate: seconds per batch}
        self.current = {}           # the round being measured
        self.threads = None         # the choice (None while measuring)
        self.ratios = {}            # candidate -> median ratio to tries[0], at the last choice
        self.since = 0              # batches trained on the choice since it was made
        self.backoff = 1            # the recheck interval's factor
        self.decisions = []         # (threads, rounds measured) of every choice made
        self.probing = False        # the round being measured is a recheck's probe round

    def next(self):
        """(threads, timed): the count for the next chunk, and whether it is timed."""
        if self.threads is not None:
            return self.threads, False
        r = len(self.rounds) % len(self.tries)
        for c in self.tries[r:] + self.tries[:r]:
            if c not in self.current:
                return c, True
        raise AssertionError("a complete round was not closed")

    def guess(self):
        """The best count known now: the choice, else the best median so far, else the last
        choice (a recheck before its first round: not the first candidate, which under load
        was the 10-40x slower one), else the first candidate (the BLAS's own setting)."""
        if self.threads is not None:
            return self.threads
        if self.rounds:
            ratios = self._medians()
            return min(self.tries, key=ratios.__getitem__)
        return self.decisions[-1][0] if self.decisions else self.tries[0]

    def chunk(self, threads):
        """Batches in a timed chunk on ``threads``: ``MIN_CHUNK`` for a count that lost by more
        than ``MARGIN`` at the last choice (re-measured, but cheaply: under load a loser ran up
        to 30x slower), else ``CHUNK``; in a probe round ``PROBE_CHUNK`` for every loser."""
        if self.probing:
            return CHUNK if threads == self.decisions[-1][0] else PROBE_CHUNK
        if self.ratios and min(self.ratios.values()) * (1 + MARGIN) < self.ratios[threads]:
            return MIN_CHUNK
        return CHUNK

    def interval(self):
        """Batches on the choice before it is measured again."""
        return RECHECK * CHUNK * len(self.tries) * self.backoff

    def until_recheck(self):
        """Batches that may still run on the choice before it is measured again."""
        return max(1, self.interval() - self.since)

    def _medians(self):
        import statistics
        ref = self.tries[0]
        return {c: statistics.median(r[c] / r[ref] for r in self.rounds) for c in self.tries}

    def _unanimous(self, best):
        """Every round so far has ``best`` ahead of every other candidate by more than
        ``MARGIN``. An early reversal of the last choice needs this besides a clear median lead:
        a median of ``EARLY_ROUNDS`` rounds follows two chunks that another process disturbed
        (the MNIST benchmark's batch-64 run of 2026-12-04 16:19 UTC switched to 1 thread that
        way and ran 564 batches on it; benchmarks/results/mnist_s10_1619.md), while a real
        change of load slows every round. (In that run's rounds the 2-thread peers also ran
        1.4-2x slower, so 1 thread was not the wrong count then: results/mnist_mb64.md.)"""
        return all(r[best] * (1 + MARGIN) < r[c] for r in self.rounds
                   for c in self.tries if c != best)

    def record(self, threads, seconds, batches):
        """A timed chunk: ``batches`` batches on ``threads`` took ``seconds``."""
        self.current[threads] = max(seconds, 1e-12) / batches     # (a coarse clock: no 0/0)
        if len(self.current) < len(self.tries):
            return
        if self.probing:
            self._probed(self.current)
            self.current = {}
            return
        self.rounds.append(self.current)
        self.current = {}
        n = len(self.rounds)
        if n < EARLY_ROUNDS:
            return
        ratios = self._medians()
        best = min(self.tries, key=ratios.__getitem__)
        lead = min((ratios[c] / ratios[best] for c in self.tries if c != best),
                   default=float("inf"))
        confirmed = bool(self.decisions) and self.decisions[-1][0] == best and lead > 1 + MARGIN
        clear = lead > EARLY_LEAD and (not self.decisions or self.decisions[-1][0] == best
                                       or self._unanimous(best))
        if (clear or confirmed or (n >= ROUNDS and lead > 1 + MARGIN)
                or n >= MAX_ROUNDS):
            if self.decisions and self.decisions[-1][0] == best:
                self.backoff = min(2 * self.backoff, MAX_BACKOFF)
            else:
                self.backoff = 1
            self.threads, self.ratios, self.since = best, ratios, 0
            self.decisions.append((best, n))

    def trained(self, batches):
        """``batches`` untimed batches ran on the choice; past ``RECHECK``: measure again."""
        if self.threads is None:
            return
        self.since += batches
        if self.since >= self.interval():
            self.probing = self._clear_winner()
            self.threads, self.rounds, self.current = None, [], {}

    def _clear_winner(self):
        """The last choice beat every other count by more than ``PROBE_LEAD``."""
        best = self.ratios[self.threads]
        return all(self.ratios[c] > PROBE_LEAD * best for c in self.tries if c != self.threads)

    def _probed(self, probe):
        """A probe round ended: confirm the last choice if it still leads every other count by
        more than ``PROBE_LEAD``, else measure as a recheck without the probe's round."""
        self.probing = False
        last = self.decisions[-1][0]
        if all(probe[last] * PROBE_LEAD < probe[c] for c in self.tries if c != last):
            # the interval grows to PROBE_MAX_BACKOFF only: a probe costs one slow batch per
            # loser, and once the load is gone every batch until the next recheck runs on the
            # slower count (1 thread: 1.46x at MNIST batch 64; up to 7680 batches at MAX_BACKOFF)
            self.backoff = min(2 * self.backoff, PROBE_MAX_BACKOFF)
            self.threads, self.since = last, 0
            self.decisions.append((last, 1))

    def summary(self):
        """One line: the choice and what it rests on."""
        if not self.decisions:
            return f"measuring ({len(self.rounds)} rounds of {CHUNK} batches so far)"
        threads, rounds = self.decisions[-1]
        ref = self.tries[0]
        rel = ", ".join(f"{label(c)}: {self.ratios[c]:.2f}" for c in self.tries)
        count, ahead = _setting(threads)
        return (f"{count} thread{'s' * (count != 1)}{' + gather ahead' * ahead} (median "
                f"per-batch time relative to {ref} threads: {rel}; {rounds} rounds of {CHUNK} "
                f"batches; {len(self.decisions)} decision{'s' * (len(self.decisions) != 1)}: "
                f"{[label(d[0]) for d in self.decisions]})")


def _run_auto(choice, used, train, params, X, y, order, batch_size, first, stop):
    """The batches ``first <= i < stop`` in chunks, on the counts ``choice`` asks for."""
    batch_size = int(batch_size)
    n_batches = -(-len(order) // batch_size)
    stop = n_batches if stop is None else min(int(stop), n_batches)
    partial = len(order) % batch_size != 0          # the last batch is shorter: not timed
    batch, total = int(first), 0.0
    if batch >= stop:                               # the loop's own checks and empty result
        return train(params, X, y, order, batch_size, batch, stop)
    while batch < stop:
        threads, timed = choice.next()
        k = choice.chunk(threads) if timed else min(stop - batch, choice.until_recheck())
        if timed and (stop - batch < MIN_CHUNK or (partial and batch + k >= n_batches)):
            threads, timed, k = choice.guess(), False, stop - batch
        k = min(k, stop - batch)
        count, ahead = _setting(threads)
        with blas_threads(count):
            t0 = _clock()
            if ahead:
                total += train(params, X, y, order, batch_size, batch, batch + k, ahead=True)
            else:
                total += train(params, X, y, order, batch_size, batch, batch + k)
            seconds = _clock() - t0
        if timed:
            choice.record(threads, seconds, k)
        else:
            choice.trained(k)
        used[label(threads)] = used.get(label(threads), 0) + k
        batch += k
    return total


def run_with_threads(loop, train, params, X, y, order, batch_size, first, stop):
    """:class:`srcgrad.optim.MinibatchLoop`'s call with its ``blas_threads`` setting;
    ``train(params, X, y, order, batch_size, first, stop)`` trains the batches ``first <= i <
    stop`` and returns their summed loss. ``loop.blas_threads_used`` is then {threads: batches}
    of this call (None: the BLAS's own setting).

    ``"auto"``: when the BLAS has more than one thread, the call runs in chunks of batches on
    the counts its :class:`ThreadChoice` (``loop.blas_threads_chosen[shapes]``; kept across
    calls) asks for: first rounds of timed chunks on every candidate of :func:`candidates`,
    then the chosen count, measured again after a while. A shorter last batch and the last
    fewer-than-``MIN_CHUNK`` batches of a call are not timed. The batches while measuring
    run on different counts, on which a product may round differently: the parameters agree
    with a fixed count's to rounding; pass an int for bitwise-repeatable runs.

    Why measure instead of a size rule: on this 2-core machine more threads made the MNIST MLP's
    batch-64 step slower and the batch-256 step faster (benchmarks/results/mnist.md), and while
    other processes kept the cores busy two OpenBLAS threads were 8-30x slower than one
    (benchmarks/results/blas_threads.md). Why many chunks and medians: one short run decided
    the first version of this choice, and a disturbed one kept a slower count for good."""
    setting = loop.blas_threads
    used = loop.blas_threads_used = {}
    if setting == "auto":
        key = _shapes_key(params, X, y, order, batch_size)
        choice = loop.blas_threads_chosen.get(key)
        if choice is None and key is not None and current_blas_threads() > 1:
            choice = ThreadChoice(candidates(current_blas_threads(),
                                             getattr(loop, "ahead_candidate", False)))
            loop.blas_threads_chosen[key] = choice
        if choice is not None:
            return _run_auto(choice, used, train, params, X, y, order, batch_size, first, stop)
        setting = None
    if setting is None:
        total = train(params, X, y, order, batch_size, first, stop)
    else:
        with blas_threads(setting):
            total = train(params, X, y, order, batch_size, first, stop)
    n_batches = -(-len(order) // int(batch_size))      # (valid: train has checked them)
    used[setting] = max(0, (n_batches if stop is None else min(int(stop), n_batches)) - int(first))
    return total
