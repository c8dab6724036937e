"""Compile library functions in a helper process while this one compiles a gradient (issue 17).

From empty caches, the compile before a training loop's first batch is serial Numba work: the
generated gradient (~4 s of CPU for the MNIST MLP) and then the loop's own pieces (the loop, the
optimizer's kernel, the accuracy counter: ~2.5 s). Numba compiles one function at a time in a
process (a global compiler lock), but the loop's pieces do not need the gradient's machine code,
only its type, which is known (to a good guess) before it is compiled. So::

    ahead = compile_ahead.start(jobs, alongside=(gradient, gradient_argtypes))
    gradient.compile(gradient_argtypes)        # this process
    if ahead is not None:
        ahead.wait()                           # the helper has filled Numba's disk cache
    loop.compile(loop_argtypes)                # a cache load

``jobs`` are ``(dispatcher, argument types)`` pairs of srcgrad's own ``cache=True`` functions.
On Linux the helper is a fork of this process (:func:`_fork`): it has every import and Numba's
set-up already and compiles the jobs at once. Elsewhere (or with ``SRCGRAD_COMPILE_AHEAD_FORK=0``)
it is a new Python process which, on this process's ``sys.path``, imports them by name (nothing
else: a user's module could do anything when imported). Either way it compiles them for those types
and exits; Numba's own on-disk cache carries the code over. Nothing depends on it: this process
compiles every function itself afterwards, so a failed, killed or wrongly guessed helper costs
time, never a result (a guessed type that does not match is a cache miss). No helper starts when
nothing needs compiling (a warm start), when this process would compile nothing meanwhile, on one
CPU or when no CPU is idle (load average), at ``NUMBA_OPT=0``; a helper still running at exit is
killed, and one whose parent died stops by itself (a fork: when its jobs are done).

Opt-in (``SRCGRAD_COMPILE_AHEAD=1``). Measured on this project's 2-CPU machine while other jobs
ran, the MNIST compile before epoch 1 took longer with a helper than without: the new-process
helper at load 3-7 (14-30 s against 8-22 s wall; 4.4-5.3 s of CPU in this process plus 4.7-5.5 s
in the helper, against 7.0-8.1 s), its own start-up (Python, NumPy, Numba, srcgrad, ~1.5 s of
CPU) first; the fork at load 2-3.5 too (median 1.11x the wall clock without a helper over 12
interleaved pairs, though this process spent 0.73 s less CPU on its compile and the fork ~2 s);
no idle machine was available to measure the gain it is for
(benchmarks/results/train_compile_mcold4.md).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import warnings
import weakref

__all__ = ["start", "needs_compile", "Ahead", "extra", "waiting", "minibatch_jobs", "sgd_jobs",
           "momentum_jobs"]

TIMEOUT = 120.0             # seconds to wait for a helper before compiling here instead
_RUNNING = weakref.WeakSet()


def enabled():
    """Whether a helper may start (``SRCGRAD_COMPILE_AHEAD``): ``1`` when a CPU is idle,
    ``always`` whatever the load, anything else (the default) never. Opt-in: on the 2-CPU
    machine this was measured on, always shared with other jobs, neither helper, the new process
    nor the fork, cut the compile's wall clock (benchmarks/results/compile_mnist.md,
    train_compile_mcold4.md)."""
    if os.environ.get("SRCGRAD_COMPILE_AHEAD", "0").strip() not in ("1", "always"):
        return False
    from numba.core import config
    if config.OPT == 0:         # (the test suite's level) Numba then does not cache the training
        return False            # loop, which calls function pointers: no process could load it
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return cpus >= 2 and _idle_cpu(cpus)


def _idle_cpu(cpus):
    """Whether a CPU is free for the helper: the 1-minute load average, this process included,
    leaves one. On a busy machine a helper only adds its start-up (~1.5 s of CPU: Python, NumPy,
    Numba, srcgrad) to the work, and, where the scheduler shares CPU time per session (Linux
    autogroups), takes its CPU time from this process. ``SRCGRAD_COMPILE_AHEAD=always`` skips the
    check."""
    if os.environ.get("SRCGRAD_COMPILE_AHEAD", "").strip() == "always":
        return True
    try:
        return os.getloadavg()[0] <= cpus - 1
    except (AttributeError, OSError):
        return True


def needs_compile(dispatcher, argtypes):
    """Whether ``dispatcher`` would compile for ``argtypes``: not compiled in this process and not
    in Numba's disk cache. When that cannot be told (another Numba's internals): False."""
    try:
        argtypes = tuple(argtypes)
        if argtypes in dispatcher.overloads:
            return False
        cache = dispatcher._cache
        if not getattr(cache, "_enabled", False):
            return False            # no disk cache (NullCache): a helper could not hand it over
        key = cache._index_key(argtypes, dispatcher.targetctx.codegen())
        return key not in cache._cache_file._load_index()
    except Exception:
        return False


def _importable(dispatcher):
    """(module, qualified name) by which a new process finds ``dispatcher``, or None."""
    function = getattr(dispatcher, "py_func", None)
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", "")
    if not (module or "").startswith("srcgrad.") or "<locals>" in qualname:
        return None
    spec = getattr(sys.modules.get(module), "__spec__", None)
    if spec is None or spec.origin is None:
        return None
    found = sys.modules[module]
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return (module, qualname) if found is dispatcher else None


class Ahead:
    """A running helper process (:func:`start`)."""

    def __init__(self, process, names):
        self.process = process
        self.names = names          # [(module, qualified name), ...] it compiles
        _RUNNING.add(self)

    def wait(self, timeout=None):
        """Wait for the helper to finish (at most ``timeout`` seconds, default :data:`TIMEOUT`;
        then it is killed). True when it compiled everything it was given."""
        try:
            code = self.process.wait(TIMEOUT if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.close()
            return False
        finally:
            _RUNNING.discard(self)
        return code == 0

    def close(self):
        """Kill the helper if it is still running (what it had written stays valid: Numba writes
        each cache file whole, by rename)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        _RUNNING.discard(self)


def start(jobs, alongside=None):
    """Start a helper process compiling ``jobs`` (``(dispatcher, argtypes)`` pairs) into Numba's
    disk cache; None when there is nothing to gain (see the module docstring). ``alongside``: the
    ``(dispatcher, argtypes)`` this process compiles meanwhile (no helper when that is cached).
    Where the platform forks (Linux), the helper is a fork of this process (:func:`_fork`): it
    starts compiling at once, with this process's imports and Numba's start-up already done;
    else (and with ``SRCGRAD_COMPILE_AHEAD_FORK=0``) a new Python process importing the jobs."""
    if not enabled():
        return None
    if alongside is not None and not needs_compile(*alongside):
        return None
    if _can_fork():
        wanted = [(dispatcher, tuple(argtypes)) for dispatcher, argtypes in jobs
                  if _importable(dispatcher) is not None and needs_compile(dispatcher, argtypes)]
        return _fork(wanted) if wanted else None
    wanted = []
    for dispatcher, argtypes in jobs:
        name = _importable(dispatcher)
        if name is not None and needs_compile(dispatcher, argtypes):
            wanted.append((name, tuple(argtypes)))
    if not wanted:
        return None
    try:                            # this sys.path first (the same srcgrad), then the jobs
        payload = pickle.dumps(list(sys.path)) + pickle.dumps(wanted)
    except Exception:               # a type that does not pickle: compile here
        return None
    env = dict(os.environ, SRCGRAD_QUIET="1", SRCGRAD_COMPILE_AHEAD="0")  # (no helper of its own)
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer)"
             "\nfrom srcgrad.training.compile_ahead import _child; _child()"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    except Exception:
        return None
    ahead = Ahead(process, [name for name, _ in wanted])
    try:
        process.stdin.write(payload)
        process.stdin.close()
    except Exception:               # (it died at once): compile here
        ahead.close()
        return None
    return ahead


def _can_fork():
    """Whether the helper is a fork of this process: on Linux (elsewhere the platform's default
    start is a new process, or fork is unsafe with the system's libraries), unless
    ``SRCGRAD_COMPILE_AHEAD_FORK=0`` or this process runs under MPI (mpi4py imported: some MPI
    transports break in a forked child)."""
    return (sys.platform.startswith("linux") and hasattr(os, "fork")
            and os.environ.get("SRCGRAD_COMPILE_AHEAD_FORK", "1").strip() != "0"
            and "mpi4py.MPI" not in sys.modules)


def _fork(jobs):
    """An :class:`Ahead` whose process is a fork of this one compiling ``jobs``
    (``(dispatcher, argtypes)``), or None when the fork fails.

    A new Python process first spends ~0.5-0.7 s of CPU on Python, NumPy, Numba, srcgrad and
    Numba's first-compile set-up (its typing registries, and the SciPy import Numba's np
    functions need) before it compiles anything; a fork has all of that already and starts
    compiling at once (issue 17). The fork is taken holding Numba's compiler lock, so no other
    thread of this process is inside a compile (holding the lock, or half way through Numba's
    caches) at that moment: the child, which runs only this thread, finds the lock free and the
    compiler's state whole. The child compiles (each dispatcher saves its code to the disk cache,
    a file written whole by rename) and leaves with ``os._exit``: no atexit handler, no flush of
    this process's buffers, nothing of the parent's shut down twice. Its output goes to
    /dev/null."""
    from numba.core.compiler_lock import global_compiler_lock
    try:
        # (Python 3.12+ warns about forking a process with threads: e.g. a BLAS pool; the child
        # runs no code of theirs, and its compile takes no lock they could hold)
        with global_compiler_lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
            if pid == 0:                # the child: compile, then leave without cleaning up
                _forked_child(jobs)
    except OSError:
        return None
    return Ahead(_ForkedProcess(pid), [_importable(d) for d, _ in jobs])


def _forked_child(jobs):
    code = 1
    try:
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        from srcgrad import compile_gc
        failed = 0
        for dispatcher, argtypes in jobs:
            try:
                with compile_gc.fewer_collections():
                    dispatcher.compile(argtypes)
            except Exception:
                failed += 1             # the parent compiles it itself
        code = 1 if failed else 0
    finally:
        os._exit(code)


class _ForkedProcess:
    """The parts of ``subprocess.Popen`` that :class:`Ahead` uses, for a forked child ``pid``."""

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:       # reaped elsewhere
                self.returncode = -1
                return self.returncode
            if pid != 0:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"forked helper {self.pid}", timeout)
            time.sleep(delay)
            delay = min(2 * delay, 0.01)
        return self.returncode

    def kill(self):
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@atexit.register
def _kill_running():
    for ahead in list(_RUNNING):
        ahead.close()


def _child():
    """The helper process: read the jobs from stdin, compile each (Numba saves it to its cache)."""
    parent = os.getppid()

    def watch():                    # the parent died: stop (its caches are all it wanted)
        while True:
            threading.Event().wait(0.5)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True).start()
    import importlib
    from srcgrad import compile_gc
    jobs = pickle.load(sys.stdin.buffer)
    failed = 0
    for (module, qualname), argtypes in jobs:
        try:
            found = importlib.import_module(module)
            for part in qualname.split("."):
                found = getattr(found, part)
            with compile_gc.fewer_collections():
                found.compile(argtypes)
        except Exception:
            failed += 1             # the parent compiles it itself
    sys.exit(1 if failed else 0)


# ------------------------------------------------------------------------------------------------
# What MinibatchLoop (srcgrad.training.optim) hands to a helper, and how it waits for it
# ------------------------------------------------------------------------------------------------

_EXTRA = threading.local()


@contextlib.contextmanager
def extra(jobs):
    """More ``(dispatcher, argtypes)`` jobs for a helper started inside this block (e.g. a
    training script's accuracy counter, next to its training loop's first call)."""
    before = getattr(_EXTRA, "jobs", ())
    _EXTRA.jobs = tuple(before) + tuple(jobs)
    try:
        yield
    finally:
        _EXTRA.jobs = before


class Timing:
    """Seconds this process spent on its own compile (``here``, ending at ``perf_counter()`` time
    ``done``) and then waiting for the helper (``waited``)."""
    here = waited = done = 0.0
    helper = False              # whether a helper process ran alongside


@contextlib.contextmanager
def waiting(helper, loss=None):
    """Run the body (this process's own compile), then wait for ``helper`` (None: no helper); on
    an exception the helper is killed instead. ``loss``: the ``value_and_grad`` object being
    compiled for a training loop; if the whole runs long, it says so once (compile_notice)."""
    from .. import codegen, compile_gc, compile_notice
    name = getattr(getattr(loss, "func", None), "__name__", None)
    notice = contextlib.nullcontext() if name is None else compile_notice.announce_if_slow(
        f"the gradient of {name} and a training loop", codegen.cache_dir())
    timing = Timing()
    timing.helper = helper is not None
    start = time.perf_counter()
    with notice, compile_gc.fewer_collections():
        try:
            yield timing
        except BaseException:
            if helper is not None:
                helper.close()
            raise
        timing.done = time.perf_counter()
        timing.here = timing.done - start
        if helper is not None:
            helper.wait()
            timing.waited = time.perf_counter() - timing.done


def minibatch_jobs(run, kernel, grad_args, loop_args, progress_type):
    """The jobs of a MinibatchLoop's first compile, ``run(gradient, update, *loop_args, seed,
    progress)`` and ``kernel(params, grads, state, hyper)``, for the types the gradient will most
    likely have: each gradient a C array of its parameter's dtype and ndim, the loss of the
    parameters' precision (a wrong guess is a cache miss: the loop then compiles here). Plus the
    :func:`extra` jobs."""
    from numba import types
    from numba.core.typing import signature
    jobs = list(getattr(_EXTRA, "jobs", ()))
    params, state, hyper = loop_args[0], loop_args[7], loop_args[8]
    if not (isinstance(params, types.BaseTuple) and all(
            isinstance(p, types.Array) and isinstance(p.dtype, types.Float) for p in params)):
        return jobs
    grads = types.BaseTuple.from_types([types.Array(p.dtype, p.ndim, "C") for p in params])
    value = types.float32 if all(p.dtype == types.float32 for p in params) else types.float64
    update = signature(types.none, params, grads, state, hyper)
    gradient = signature(types.Tuple((value, grads)), *grad_args)
    jobs.append((kernel, update.args))
    jobs.append((run, (types.FunctionType(gradient), types.FunctionType(update)) + tuple(loop_args)
                 + (grad_args[-1], progress_type)))
    return jobs


def sgd_jobs(run, loop_args):
    """The jobs of a MinibatchLoop's first compile with plain SGD (srcgrad.training.fused_sgd):
    ``run(step, params, X, y, order, batch_size, first, stop, lr, Xb, yb, scale, seed,
    progress)`` for
    the step's likely type, ``loss = step(*params, Xb, yb, seed, lr)`` (as
    :func:`minibatch_jobs` guesses), plus the :func:`extra` jobs."""
    import numpy as np
    from numba import typeof, types
    from numba.core.typing import signature
    jobs = list(getattr(_EXTRA, "jobs", ()))
    params = loop_args[0]
    if os.environ.get("SRCGRAD_FUSED_SGD", "1") == "0" or not (
            isinstance(params, types.BaseTuple) and all(
                isinstance(p, types.Array) and isinstance(p.dtype, types.Float) for p in params)):
        return jobs
    value = types.float32 if all(p.dtype == types.float32 for p in params) else types.float64
    step = signature(value, *params, loop_args[9], loop_args[10], value, types.float64)
    jobs.append((run, (types.FunctionType(step), params) + tuple(loop_args[1:7]) +
                 (types.float64,) + tuple(loop_args[9:]) + (value, typeof(np.zeros(2)))))
    return jobs


def momentum_jobs(run, loop_args):
    """:func:`sgd_jobs` for Momentum: ``run(step, params, X, y, order, batch_size, first, stop,
    lr, mu, nesterov, velocity, Xb, yb, scale, seed, progress)`` for the step's likely type,
    ``loss =
    step(*params, Xb, yb, seed, lr, mu, nesterov, velocity)`` (``velocity``: the optimizer's
    state tuple's first entry, the tuple of velocity arrays), plus the :func:`extra` jobs."""
    import numpy as np
    from numba import typeof, types
    from numba.core.typing import signature
    jobs = list(getattr(_EXTRA, "jobs", ()))
    params, state = loop_args[0], loop_args[7]
    if os.environ.get("SRCGRAD_FUSED_SGD", "1") == "0" or not (
            isinstance(params, types.BaseTuple) and all(
                isinstance(p, types.Array) and isinstance(p.dtype, types.Float) for p in params)
            and isinstance(state, types.BaseTuple) and len(state) >= 1):
        return jobs
    velocity = state[0]
    value = types.float32 if all(p.dtype == types.float32 for p in params) else types.float64
    hyper = (types.float64,) * 3
    step = signature(value, *params, loop_args[9], loop_args[10], value, *hyper, velocity)
    jobs.append((run, (types.FunctionType(step), params) + tuple(loop_args[1:7]) + hyper +
                 (velocity,) + tuple(loop_args[9:]) + (value, typeof(np.zeros(2)))))
    return jobs
