"""srcgrad.training.compile_ahead (opt-in): a helper process compiles a training loop's pieces into
Numba's disk cache while this process compiles the gradient (issue 17).

What must hold: the main process then loads those pieces from the cache (it compiles none of
them) and trains exactly as without the helper; nothing depends on the helper (a failed or killed
one only costs time); no helper starts when there is nothing to gain; no helper outlives its
parent. The end-to-end checks run in fresh processes on fresh cache directories.
"""
import json
import os
import subprocess
import sys
import time

import numba
import numpy as np
import pytest
from conftest import user_numba_env

from srcgrad.training import compile_ahead

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWO_CPUS = len(os.sched_getaffinity(0)) >= 2 if hasattr(os, "sched_getaffinity") else \
    (os.cpu_count() or 1) >= 2

LOSS = '''
import numpy as np

def loss(w, b, X, y):
    r = X @ w + b[0] - y
    return np.mean(r * r)
'''

TRAIN = '''
import json, os
from numba.core import event
compiled = []

class Count(event.Listener):
    def on_start(self, ev):
        dispatcher = ev.data.get("dispatcher") if ev.data else None
        compiled.append(getattr(getattr(dispatcher, "py_func", None), "__qualname__", "?"))

    def on_end(self, ev):
        pass

event.register("numba:compile", Count())
import numpy as np
import srcgrad
from srcgrad.optim import MinibatchLoop, make_optimizer
from srcgrad.training import compile_ahead
import aheadloss
rng = np.random.default_rng(0)
X, y = rng.standard_normal((40, 3)), rng.standard_normal(40)
out = {}
for kind in os.environ["AHEAD_TEST_OPTIMIZERS"].split(","):
    params = (np.array([0.5, -0.25, 1.0]), np.array([0.1]))
    hyper = dict(lr=0.05) if kind != "momentum" else dict(lr=0.05, momentum=0.9)
    loop = MinibatchLoop(srcgrad.value_and_grad(aheadloss.loss, wrt=(0, 1)),
                         make_optimizer(kind, **hyper), blas_threads=None)
    started = []
    real_start = compile_ahead.start
    compile_ahead.start = lambda *a, **k: started.append(real_start(*a, **k)) or started[-1]
    del compiled[:]
    total = loop(params, X, y, np.arange(40), 8)
    compile_ahead.start = real_start
    helper = started[0] if started else None
    out[kind] = {"compiled": list(compiled), "total": total, "params": [list(p) for p in params],
                 "helper": None if helper is None else [n for _, n in helper.names],
                 "helper_done": helper is not None and helper.process.poll() == 0}
print(json.dumps(out))
'''


def _run(tmp_path, script, cache="cache", **extra_env):
    (tmp_path / "aheadloss.py").write_text(LOSS)
    env = dict(os.environ, SRCGRAD_CACHE_DIR=str(tmp_path / cache / "srcgrad"),
               NUMBA_CACHE_DIR=str(tmp_path / cache / "numba"), SRCGRAD_QUIET="1", **extra_env)
    # at Numba's default level, as a user's process: at the suite's NUMBA_OPT=0 Numba does not
    # cache the loop that calls function pointers ("dynamic globals"), so no process could load it
    env = user_numba_env(env)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, str(tmp_path), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _reference(kind, X, y, order, batch_size):
    """NumPy: minibatch SGD / Adam (defaults) on the mean squared error of a linear model."""
    w, b = np.array([0.5, -0.25, 1.0]), np.array([0.1])
    mw, mb, vw, vb = np.zeros(3), np.zeros(1), np.zeros(3), np.zeros(1)
    total = 0.0
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        r = X[idx] @ w + b[0] - y[idx]
        total += np.mean(r * r) * len(idx)
        gw, gb = 2 * X[idx].T @ r / len(idx), np.array([2 * np.sum(r) / len(idx)])
        if kind == "sgd":
            w, b = w - 0.05 * gw, b - 0.05 * gb
        else:                               # Adam, as srcgrad.optim computes it
            t = s // batch_size + 1
            step, inv_bc2 = 0.05 / (1.0 - 0.9**t), 1.0 / (1.0 - 0.999**t)
            mw, mb = 0.9 * mw + 0.1 * gw, 0.9 * mb + 0.1 * gb
            vw, vb = 0.999 * vw + 0.001 * (gw * gw), 0.999 * vb + 0.001 * (gb * gb)
            w = w - step * mw / (np.sqrt(vw * inv_bc2) + 1e-8)
            b = b - step * mb / (np.sqrt(vb * inv_bc2) + 1e-8)
    return total, [w, b]


def _check_helper_run(out, warm, kinds):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 3)), rng.standard_normal(40)
    for kind in kinds:
        loop_name, kernel = {"adam": ("_run_minibatches", "_adam_loop_kernel"),
                             "sgd": ("_run_sgd_steps", None)}[kind]
        got = out[kind]
        assert got["helper"] and loop_name in got["helper"] and got["helper_done"], got
        assert loop_name not in got["compiled"] and "_gather_batch" not in got["compiled"], got
        if kernel is not None:
            assert kernel in got["helper"] and kernel not in got["compiled"], got
        total, params = _reference(kind, X, y, np.arange(40), 8)
        assert got["total"] == pytest.approx(total, rel=1e-12)
        for a, b in zip(got["params"], params):
            np.testing.assert_allclose(a, b, rtol=1e-12)
        assert warm[kind]["helper"] is None and warm[kind]["compiled"] == [], warm
        assert warm[kind]["total"] == got["total"] and warm[kind]["params"] == got["params"]


@pytest.mark.slow
def test_helper_compiles_the_loop_and_this_process_loads_it(tmp_path):
    """Cold caches, 2+ CPUs: the helper compiles the optimizer kernel and the training loop
    (Adam; SGD and Momentum run fused steps); this process compiles neither; the training is right. A second process on the
    same caches starts no helper and compiles nothing. (Slow: two processes compiling at Numba's
    default level; test_guessed_types_are_the_ones_the_loop_compiles checks the guesses cheaply.)"""
    if not TWO_CPUS:
        pytest.skip("one CPU: no helper by design")
    env = dict(AHEAD_TEST_OPTIMIZERS="adam", SRCGRAD_COMPILE_AHEAD="always")
    _check_helper_run(_run(tmp_path, TRAIN, **env), _run(tmp_path, TRAIN, **env), ["adam"])


@pytest.mark.slow
def test_fused_sgd_loop_and_the_same_training_without_the_helper(tmp_path):
    """The same with plain SGD (the loop around the fused step); and SRCGRAD_COMPILE_AHEAD=0 on
    empty caches: no helper, the loop compiles here, the same result to the last bit."""
    if not TWO_CPUS:
        pytest.skip("one CPU: no helper by design")
    env = dict(AHEAD_TEST_OPTIMIZERS="adam,sgd", SRCGRAD_COMPILE_AHEAD="always")
    on = _run(tmp_path, TRAIN, cache="on", **env)
    _check_helper_run(on, _run(tmp_path, TRAIN, cache="on", **env), ["adam", "sgd"])
    off = _run(tmp_path, TRAIN, cache="off", AHEAD_TEST_OPTIMIZERS="adam,sgd",
               SRCGRAD_COMPILE_AHEAD="0")
    for kind in ("adam", "sgd"):
        assert off[kind]["helper"] is None and off[kind]["compiled"], off
        assert off[kind]["total"] == on[kind]["total"] and off[kind]["params"] == on[kind]["params"]


@numba.njit(cache=True)
def _not_srcgrads(x):
    return x + 1


def test_start_refuses_what_it_cannot_hand_over(monkeypatch):
    """No helper for functions outside srcgrad (importing a user's module could do anything),
    for what is compiled already, beside a compile that is not needed, with
    SRCGRAD_COMPILE_AHEAD=0 or at NUMBA_OPT=0."""
    from numba.core import config

    from srcgrad.training.optim import _sgd_flat
    f64 = (numba.float64[::1], numba.float64[::1], numba.float64)
    f32 = (numba.float32[::1], numba.float32[::1], numba.float32)
    monkeypatch.setattr(config, "OPT", 3)             # (read only by enabled() here)
    monkeypatch.setenv("SRCGRAD_COMPILE_AHEAD", "always")     # (whatever the load)
    assert compile_ahead.enabled() == TWO_CPUS
    monkeypatch.setattr(compile_ahead, "enabled", lambda: True)
    assert compile_ahead.start([(_not_srcgrads, (numba.float64,))]) is None
    _sgd_flat.compile(f64)
    assert not compile_ahead.needs_compile(_sgd_flat, f64)
    assert compile_ahead.start([(_sgd_flat, f64)]) is None
    assert compile_ahead.start([(_sgd_flat, f32)], alongside=(_sgd_flat, f64)) is None
    assert compile_ahead.needs_compile(object(), f64) is False      # unknown: no helper
    monkeypatch.undo()
    monkeypatch.setattr(config, "OPT", 3)
    monkeypatch.setenv("SRCGRAD_COMPILE_AHEAD", "0")
    assert not compile_ahead.enabled()
    monkeypatch.setenv("SRCGRAD_COMPILE_AHEAD", "always")
    monkeypatch.setattr(config, "OPT", 0)
    assert not compile_ahead.enabled()


@pytest.mark.skipif(not TWO_CPUS, reason="one CPU: no helper by design")
def test_no_helper_when_no_cpu_is_idle(monkeypatch):
    """Opt-in; and a helper only adds work on a busy machine: none unless the load average
    leaves a CPU idle (SRCGRAD_COMPILE_AHEAD=always: whatever the load). Where it is a fork:
    Linux, unless SRCGRAD_COMPILE_AHEAD_FORK=0 or under MPI."""
    from numba.core import config
    monkeypatch.setattr(config, "OPT", 3)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.setenv("SRCGRAD_COMPILE_AHEAD", "1")
    monkeypatch.setattr(os, "getloadavg", lambda: (cpus - 1.5, 0.0, 0.0))
    assert compile_ahead.enabled()
    monkeypatch.delenv("SRCGRAD_COMPILE_AHEAD")            # opt-in: off by default
    assert not compile_ahead.enabled()
    monkeypatch.setenv("SRCGRAD_COMPILE_AHEAD", "1")
    monkeypatch.setattr(os, "getloadavg", lambda: (cpus + 3.0, 0.0, 0.0))
    assert not compile_ahead.enabled()
    monkeypatch.setenv("SRCGRAD_COMPILE_AHEAD", "always")
    assert compile_ahead.enabled()
    assert compile_ahead._can_fork() == (sys.platform.startswith("linux") and
                                         "mpi4py.MPI" not in sys.modules)
    monkeypatch.setenv("SRCGRAD_COMPILE_AHEAD_FORK", "0")   # the new-process helper
    assert not compile_ahead._can_fork()
    monkeypatch.delenv("SRCGRAD_COMPILE_AHEAD_FORK")
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", object())   # under MPI: no fork
    assert not compile_ahead._can_fork()


PARENT = '''
import sys, time, numba
from srcgrad.training import compile_ahead
from srcgrad.training.optim import _sgd_flat
sig = (numba.float32[::1], numba.float32[::1], numba.float32)
mode = sys.argv[1]
if mode == "bad":          # a job that does not type: the helper fails, this process is unharmed
    sig = (numba.float32[::1], numba.types.unicode_type, numba.float32)
helper = compile_ahead.start([(_sgd_flat, sig)])
print(helper.process.pid, type(helper.process).__name__, flush=True)
if mode == "load":         # the helper's code is in the disk cache: this process loads it
    done = helper.wait()
    waiting = compile_ahead.needs_compile(_sgd_flat, sig)
    _sgd_flat.compile(sig)
    print(helper.process.pid, done, waiting, sum(_sgd_flat.stats.cache_hits.values()),
          sum(_sgd_flat.stats.cache_misses.values()), flush=True)
elif mode == "bad":
    print(helper.process.pid, helper.wait(), flush=True)
elif mode == "close":
    helper.close()
    print(helper.process.poll() is not None, flush=True)
elif mode == "die":        # the parent dies without cleaning up: the helper must stop by itself
    import os
    os._exit(0)
'''


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc to see the helper")
@pytest.mark.parametrize("mode,fork", [("load", "1"), ("bad", "1"), ("close", "1"), ("die", "1"),
                                       ("exit", "1"), ("bad", "0"), ("die", "0")])
def test_helper_never_outlives_or_harms_its_parent(tmp_path, mode, fork):
    """The helper (fork=1: a fork of this process on Linux; 0: a new Python process) compiles into
    the disk cache, which this process then loads from (load); one that fails says so; closed,
    it is gone; its parent dying or leaving leaves no helper running for long."""
    env = user_numba_env(dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"),
                              SRCGRAD_COMPILE_AHEAD="always", SRCGRAD_COMPILE_AHEAD_FORK=fork))
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    if not TWO_CPUS:
        pytest.skip("one CPU: no helper by design")
    proc = subprocess.run([sys.executable, "-c", PARENT, mode], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.split("\n")
    forked = fork == "1" and sys.platform.startswith("linux")
    assert lines[0].split()[1] == ("_ForkedProcess" if forked else "Popen"), lines
    if mode == "load":
        assert lines[1].split()[1:] == ["True", "False", "1", "0"], lines
    if mode == "bad":
        assert lines[1].split()[1] == "False"
    if mode == "close":
        assert lines[1] == "True"
    for line in lines:
        if not line.strip():
            continue
        pid = int(line.split()[0]) if line.split()[0].isdigit() else None
        if pid is None:
            continue
        deadline = time.time() + 20
        while time.time() < deadline and _alive(pid):
            time.sleep(0.2)
        assert not _alive(pid), f"helper {pid} still running after its parent ({mode})"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _tiny_loss(w, b, X, y):
    r = X @ w + b[0] - y
    return np.mean(r * r)


def test_training_loop_compile_says_so_once(caplog, monkeypatch):
    """MinibatchLoop compiles the gradient itself (not through a call from Python): a compile
    that runs long still says so once, and the next call is quiet."""
    import logging

    import srcgrad
    from srcgrad import compile_notice
    from srcgrad.optim import MinibatchLoop, make_optimizer
    monkeypatch.delenv("SRCGRAD_QUIET", raising=False)
    monkeypatch.setattr(compile_notice, "DELAY", 0.05)
    caplog.set_level(logging.WARNING, logger="srcgrad")
    loop = MinibatchLoop(srcgrad.value_and_grad(_tiny_loss, wrt=(0, 1)),
                         make_optimizer("momentum", lr=0.1), blas_threads=None)
    rng = np.random.default_rng(0)
    X, y, w = rng.standard_normal((16, 3)), rng.standard_normal(16), np.zeros(3)
    loop((w, np.zeros(1)), X, y, np.arange(16), 4)
    loop((w, np.zeros(1)), X, y, np.arange(16), 4)
    notices = [r.getMessage() for r in caplog.records if "compiling" in r.getMessage()]
    assert len(notices) == 1 and "the gradient of _tiny_loss and a training loop" in notices[0]


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_guessed_types_are_the_ones_the_loop_compiles(kind):
    """The helper's jobs are only useful if their types are exactly what MinibatchLoop compiles:
    after a real first call (here, without a helper), each guessed signature is a compiled one."""
    import srcgrad
    from srcgrad.optim import MinibatchLoop, make_optimizer
    from srcgrad.training import optim
    loop = MinibatchLoop(srcgrad.value_and_grad(_tiny_loss, wrt=(0, 1)),
                         make_optimizer(kind, lr=0.1), blas_threads=None)
    rng = np.random.default_rng(1)
    X, y, params = rng.standard_normal((16, 3)), rng.standard_normal(16), (np.zeros(3), np.zeros(1))
    loop(params, X, y, np.arange(16), 4)
    (Xb, yb), = loop._buffers.values()
    state, hyper_t = loop.optimizer.state_tuple(), loop.optimizer.hyper_tuple()
    argtypes = tuple(numba.typeof(a) for a in (params, X, y, np.arange(16), 4, 0, 4, state,
                                               hyper_t, Xb, yb, None))   # (None: no x_scale)
    if kind == "sgd":
        (run, signature), = compile_ahead.sgd_jobs(optim._run_sgd_steps, argtypes)
        assert signature in optim._run_sgd_steps.overloads
        return
    seed = numba.typeof(1.0)
    grad_args = tuple(numba.typeof(a) for a in (*params, Xb, yb)) + (seed,)
    (kernel, update), (run, signature) = compile_ahead.minibatch_jobs(
        optim._run_minibatches, optim._adam_loop_kernel, grad_args, argtypes,
        numba.typeof(np.zeros(2)))
    assert update in optim._adam_loop_kernel.overloads
    assert signature in optim._run_minibatches.overloads
