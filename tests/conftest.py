"""Shared test setup for srcgrad's core tests.

* Every test session uses a private SRCGRAD_CACHE_DIR (set at import time, before srcgrad generates
  or compiles anything) so tests never write to ~/.cache.
* ``check_grad`` compares srcgrad's gradient with central finite differences in float64.
* ``--fuzz-examples N`` sets the number of programs of the long fuzzing profile (``pytest -m fuzz``).
* Numba compiles at LLVM optimization level 0 (``NUMBA_OPT=0``) unless the user set NUMBA_OPT:
  compiles dominate the suite's time and take about half as long. The level changes how fast the
  machine code runs, not what it computes (Numba's default is no fastmath at every level), so the
  compiled tests check the same semantics. Set here, before anything imports numba; child
  processes inherit it. One difference is not semantic: at level 0 LLVM keeps dead loads of
  Numba's "dynamic globals" (e.g. in the BLAS matmul), which makes such functions uncacheable.
  Tests about the on-disk cache therefore run their child processes at the user's level
  (``user_numba_env``). Level-0 code is cached in a directory of its own (NUMBA_CACHE_DIR), never
  where a user's process at the default level would load it. The CUDA simulator session (tests/cuda) keeps the default level: it
  compiles nothing for the cpu, and numba-cuda would turn off NVVM's optimizer at level 0, while
  the PTX tests check the kernels users get.
"""
import gc
import math
import os
import shutil
import sys
import tempfile


def _cuda_session():
    """Whether this pytest session is the CUDA simulator's (see tests/cuda/conftest.py)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return True
    cuda_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda")
    paths = [a.split("::")[0] for a in sys.argv[1:] if not a.startswith("-")]
    paths = [os.path.abspath(p) for p in paths if os.path.exists(p)]
    return bool(paths) and all(p == cuda_dir or p.startswith(cuda_dir + os.sep) for p in paths)


if "NUMBA_OPT" not in os.environ and not _cuda_session():
    os.environ["NUMBA_OPT"] = "0"
    os.environ["SRCGRAD_TEST_SET_NUMBA_OPT"] = "1"
    # Level-0 machine code goes to a cache of its own. Numba's on-disk cache is keyed on the
    # signature and the CPU, not on the optimization level, and srcgrad's own `cache=True`
    # functions cache next to their source: without this, a user's process (or a benchmark) run in
    # the same checkout after the tests loaded the tests' level-0 helpers (measured: the heat
    # stencil's gradient 940 µs a call against 280 µs with helpers compiled at the default level).
    os.environ["SRCGRAD_TEST_SET_NUMBA_CACHE_DIR"] = os.environ["NUMBA_CACHE_DIR"] = os.path.join(
        tempfile.gettempdir(), "srcgrad-tests-numba-opt0")


def user_numba_env(env):
    """``env`` (a dict for a child process) without the NUMBA_OPT this conftest set, so the child
    compiles at Numba's default level, as a user's process does (a NUMBA_OPT the user set stays)."""
    env = dict(env)
    if env.pop("SRCGRAD_TEST_SET_NUMBA_OPT", None) == "1":
        env.pop("NUMBA_OPT", None)
    level0_cache = env.pop("SRCGRAD_TEST_SET_NUMBA_CACHE_DIR", None)
    if level0_cache is not None and env.get("NUMBA_CACHE_DIR") == level0_cache:
        env.pop("NUMBA_CACHE_DIR")          # (a cache dir the caller chose stays)
    # no compile-ahead helper unless the caller asks for one (a SRCGRAD_COMPILE_AHEAD=1 in the
    # user's environment would make what the child compiles itself, which tests count, depend
    # on the machine's load)
    env.setdefault("SRCGRAD_COMPILE_AHEAD", "0")
    return env


import numpy as np  # noqa: E402  (after NUMBA_OPT is set: nothing below may import numba first)
import pytest  # noqa: E402

_CACHE_DIR = tempfile.mkdtemp(prefix="srcgrad-test-cache-")
os.environ["SRCGRAD_CACHE_DIR"] = _CACHE_DIR

TARGETS = ["python", "cpu"]


def pytest_addoption(parser):
    parser.addoption("--fuzz-examples", action="store", type=int, default=None,
                     help="number of random programs for the long fuzzing profile (pytest -m fuzz)")
    parser.addoption("--fuzz-targets", default="python,cpu",
                     help="targets the long fuzz profile checks every program on (comma separated)")
    parser.addoption("--fuzz-bundle", action="store", type=int, default=10,
                     help="whole-array fuzz programs compiled together as one cpu function")


def pytest_configure(config):
    if os.environ.get("SRCGRAD_TEST_SET_NUMBA_OPT") == "1":
        # expected at level 0 (see above), one per such function: not worth a line in the summary
        config.addinivalue_line("filterwarnings", "ignore:.*Cannot cache compiled function")
    global _COMPILE_RECORDER
    if os.environ.get("SRCGRAD_COMPILE_REPORT") and not _cuda_session():
        from srcgrad.compile_report import CompileRecorder

        _COMPILE_RECORDER = CompileRecorder().install()


# -- opt-in compile report (issue 17) ------------------------------------------------------------------
# SRCGRAD_COMPILE_REPORT=path: every function Numba compiles in this session, with its own and total
# CPU seconds, its srcgrad program and the test it was compiled in (srcgrad/compile_report.py),
# written to path (JSON) and path + ".md" at the end, beside each test's CPU seconds.
_COMPILE_RECORDER = None
_TEST_CPU = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if _COMPILE_RECORDER is None:
        yield
        return
    import time

    _COMPILE_RECORDER.context = item.nodeid
    start = time.process_time()
    yield
    _TEST_CPU[item.nodeid] = round(time.process_time() - start, 3)
    _COMPILE_RECORDER.context = None


def _write_compile_report(path):
    import json

    from srcgrad.compile_report import markdown

    rec = _COMPILE_RECORDER
    rec.uninstall()
    report = {"load_average_at_end": os.getloadavg(), "test_cpu_s": _TEST_CPU,
              "programs": rec.programs(), "records": rec.records}
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    tests = sorted(_TEST_CPU.items(), key=lambda kv: -kv[1])
    lines = [f"Load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}", "",
             "| test CPU s | test |", "|---|---|"] + [f"| {s:.2f} | `{t}` |" for t, s in tests[:30]]
    with open(path + ".md", "w") as f:
        f.write("\n".join(lines) + "\n\n" + markdown(rec.records, rec.programs()))


# Python's cyclic garbage collector: with Numba's compiler in the process, the heap holds millions
# of long-lived objects (Numba, NumPy, SciPy, every compiled function) and each full collection
# scans them all. Measured (process CPU time, quiet 2-core machine): tests/test_core_rules.py +
# tests/test_closures.py (mostly python target) 29.5 s with the default thresholds (4.6 s in the
# collector), 25.8 s with these (1.4 s); compile-heavy files (test_tensordot_lowering.py +
# test_einsum_lowering.py) 35.4 s either way. Fewer young collections (10000 allocations instead
# of 700), and the objects alive once every test module is imported are frozen (never scanned
# again; they live until exit anyway). Garbage made by the tests is still collected as before.
gc.set_threshold(10000, 10, 10)


def pytest_collection_finish(session):
    gc.collect()
    gc.freeze()


def pytest_unconfigure(config):
    if _COMPILE_RECORDER is not None:
        _write_compile_report(os.environ["SRCGRAD_COMPILE_REPORT"])
    # pytest's final search for unraisable exceptions runs five full collections over the whole
    # heap (about a second per session here); what is left at exit is freed with the process
    gc.freeze()


def pytest_runtest_setup(item):
    """``mission.needs`` marks: skip locally, fail under CI=true (see tests/mission.py)."""
    for mark in item.iter_markers("needs"):
        available, reason = mark.args
        if not available:
            import mission

            mission.missing(reason)


@pytest.fixture(scope="session", autouse=True)
def srcgrad_cache_dir():
    """The private cache directory of this session (removed at the end)."""
    os.environ["SRCGRAD_CACHE_DIR"] = _CACHE_DIR
    yield _CACHE_DIR
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)


@pytest.fixture(params=TARGETS)
def target(request):
    return request.param


# -- finite differences ------------------------------------------------------------------------------

def _as64(value):
    if isinstance(value, np.ndarray):
        return value.astype(np.float64) if value.dtype.kind == "f" else value
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value


def _call(f, args):
    return float(f(*args))


def _step(x):
    return 1e-6 * max(1.0, abs(x))


def fd_scalar(f, args, index):
    """Central difference of f w.r.t. scalar argument ``index`` (float64)."""
    args = [_as64(a) for a in args]
    x = args[index]
    h = _step(x)
    plus = list(args)
    minus = list(args)
    plus[index] = x + h
    minus[index] = x - h
    return (_call(f, plus) - _call(f, minus)) / (2 * h)


def fd_array(f, args, index):
    """Full elementwise central differences w.r.t. array argument ``index``."""
    args = [_as64(a) for a in args]
    x = args[index]
    out = np.zeros_like(x, dtype=np.float64)
    for pos in np.ndindex(x.shape):
        h = _step(x[pos])
        plus = x.copy()
        minus = x.copy()
        plus[pos] += h
        minus[pos] -= h
        a_plus = list(args)
        a_minus = list(args)
        a_plus[index] = plus
        a_minus[index] = minus
        out[pos] = (_call(f, a_plus) - _call(f, a_minus)) / (2 * h)
    return out


def fd_directional(f, args, index, v):
    args = [_as64(a) for a in args]
    x = args[index]
    h = 1e-6 * max(1.0, float(np.max(np.abs(x))) if x.size else 1.0)
    a_plus = list(args)
    a_minus = list(args)
    a_plus[index] = x + h * v
    a_minus[index] = x - h * v
    return (_call(f, a_plus) - _call(f, a_minus)) / (2 * h)


def check_grad(f, args, wrt=0, target="cpu", rtol=1e-5, atol=1e-6, gradfn=None, seed=0,
               full_limit=64):
    """Assert srcgrad's gradient of ``f`` at ``args`` matches central finite differences.

    ``wrt`` is a position, a name, or a tuple of those (as for ``srcgrad.grad``). ``gradfn`` lets
    a test reuse an already built GradFunction (compilation dominates the cost). Finite differences
    are always taken in float64 on the original Python function. Array arguments are checked along
    a random direction and, when they have at most ``full_limit`` elements, elementwise.
    Returns the gradient(s) srcgrad computed.
    """
    import inspect

    import srcgrad

    if gradfn is None:
        gradfn = srcgrad.grad(f, wrt=wrt, target=target)
    grads = gradfn(*args)
    params = list(inspect.signature(f).parameters)
    single = not isinstance(wrt, (tuple, list))
    items = [wrt] if single else list(wrt)
    indices = [params.index(w) if isinstance(w, str) else int(w) for w in items]
    glist = [grads] if single else list(grads)
    assert len(glist) == len(indices)
    rng = np.random.default_rng(seed)
    for index, g in zip(indices, glist):
        x = args[index]
        if isinstance(x, np.ndarray):
            assert isinstance(g, np.ndarray), f"gradient w.r.t. array argument {index} is {type(g)}"
            assert g.shape == x.shape, (g.shape, x.shape)
            assert g.dtype == x.dtype, (g.dtype, x.dtype)
            g64 = g.astype(np.float64)
            v = rng.standard_normal(x.shape)
            expected = fd_directional(f, args, index, v)
            got = float(np.sum(g64 * v))
            scale = float(np.sum(np.abs(g64 * v)))
            assert math.isclose(got, expected, rel_tol=rtol, abs_tol=atol + rtol * scale), \
                f"directional derivative w.r.t. arg {index}: srcgrad {got!r} vs FD {expected!r}"
            if x.size <= full_limit:
                fd = fd_array(f, args, index)
                np.testing.assert_allclose(g64, fd, rtol=rtol, atol=atol,
                                           err_msg=f"elementwise gradient w.r.t. arg {index}")
        else:
            assert isinstance(g, float), f"gradient w.r.t. scalar arg {index} is {type(g)}"
            fd = fd_scalar(f, args, index)
            assert math.isclose(g, fd, rel_tol=rtol, abs_tol=atol), \
                f"d/d arg {index}: srcgrad {g!r} vs FD {fd!r}"
    return grads


def mlp_sgd_reference(params, X, y, order, B, lr):
    """float64 NumPy SGD on the 2-layer ReLU/softmax MLP (srcgrad.training.mlp), batches of ``B``
    rows of ``order`` (a shorter last batch included): the reference the training tests compare with."""
    W1, b1, W2, b2 = [np.asarray(p, np.float64).copy() for p in params]
    for s in range(0, len(order), B):
        idx = order[s:s + B]
        xb, yb, n = X[idx].astype(np.float64), y[idx], len(idx)
        a = xb @ W1 + b1
        h = np.maximum(a, 0.0)
        z = h @ W2 + b2
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        p[np.arange(n), yb] -= 1.0
        p /= n
        dh = (p @ W2.T) * (a > 0)
        W1 -= lr * (xb.T @ dh)
        b1 -= lr * dh.sum(0)
        W2 -= lr * (h.T @ p)
        b2 -= lr * p.sum(0)
    return W1, b1, W2, b2
