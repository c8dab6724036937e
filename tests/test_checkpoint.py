"""Checkpointing long loops (``grad(f, checkpoint=K | "auto")``, srcgrad/checkpoint.py).

Every case compares the checkpointed value and gradient with the un-checkpointed ones (to
rounding: the same operations run, so they agree exactly here) and with central finite
differences; the python target covers the breadth, the cpu target a representative subset. The
memory tests measure the peak allocation (tracemalloc) of a 10^4-step ODE gradient on python and,
marked slow, the peak resident memory of a 10^7-step one on cpu.
"""
import tracemalloc

import numpy as np
import pytest

import srcgrad
from conftest import check_grad


# -- programs: loop-carried floats, arrays rebound, arrays written element-wise --------------------

def lorenz(x, y, z, sigma, n):
    dt = 0.01
    for i in range(n):
        dx = sigma * (y - x)
        dy = x * (28.0 - z) - y
        dz = x * y - 2.6667 * z
        x = x + dt * dx
        y = y + dt * dy
        z = z + dt * dz
    return x + 2.0 * y + 3.0 * z


def euler(u, a, n):
    dt = 0.05
    for i in range(n):
        u = u + dt * (-a * u + np.sin(u))
    return np.sum(u * u)


def rhs(u, a):
    return -a * u + np.tanh(u)


def rk4(u, a, n):
    h = 0.1
    for i in range(n):
        k1 = rhs(u, a)
        k2 = rhs(u + 0.5 * h * k1, a)
        k3 = rhs(u + 0.5 * h * k2, a)
        k4 = rhs(u + h * k3, a)
        u = u + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return np.sum(u * u)


def heat(u0, kappa, nsteps):
    u = u0.copy()
    for t in range(nsteps):
        lap = np.zeros_like(u)
        lap[1:-1] = u[2:] - 2.0 * u[1:-1] + u[:-2]
        u = u + kappa * lap
    return np.sum(u * u)


def trajectory(x, c, n):
    """An array written element-wise across iterations (state checkpointed by copy), an int
    counter and a branch-dependent float carried from one iteration to the next."""
    traj = np.zeros(n)
    count = 0
    last = 0.0
    for i in range(n):
        if x > 0.5:
            last = x
            count = count + 1
        traj[i] = x * last + count
        x = np.sin(c * x) + 0.1 * last
    return np.sum(traj * traj) + x


def strided(x, w, n):
    """A range with a start and a step; a value read in the loop and overwritten after it."""
    for i in range(3, n, 2):
        x = x * np.cos(w * i) + w
    w = w * 3.0
    return x * w


def backwards(v, w, n):
    for i in range(n - 1, -1, -1):
        v = np.tanh(v * w + 0.1 * i)
    return np.sum(v)


def inner_loops(x, w, n):
    """An inner loop inside the checkpointed one, and a second checkpointed top-level loop."""
    for i in range(n):
        s = 0.0
        for j in range(x.shape[0]):
            s = s + np.sin(x[j] * w)
        x = x * 0.9 + 0.01 * s
    y = 1.0
    for k in range(n):
        y = y * np.cos(w) + np.sum(x) * 0.01
    return np.sum(x * x) + y


def written_after(x, n):
    """An array the loop reads and the code after it writes into; an inner while loop."""
    w = np.ones(3)
    for i in range(n):
        y = x
        while y > 0.5:
            y = y * 0.5
        x = x * w[0] * 0.9 + np.sin(y)
    w[0] = 5.0
    return x * w[0]


def through_view(x, n):
    """An array written element-wise in the loop and read through a view taken before it: refused
    with or without checkpointing (tests/test_view_base_writes.py), whatever elements are read."""
    traj = np.zeros(n)
    rest = traj[1:]
    for i in range(n - 1):
        traj[i] = x
        x = np.sin(x) + rest[i]
    return x


def skips(x, w, n):
    """continue in the checkpointed loop (normalized into a branch: still a for loop)."""
    for i in range(n):
        if i % 3 == 1:
            continue
        x = np.cos(x * w) + 0.5 * x
    return x


RNG = np.random.default_rng(7)
U5 = RNG.standard_normal(5)

CASES = {
    "lorenz": (lorenz, (1.0, 1.5, 20.0, 10.0, 23), (0, 1, 2, 3)),
    "euler": (euler, (U5, 0.7, 17), (0, 1)),
    "rk4": (rk4, (U5, 0.3, 11), (0, 1)),
    "heat": (heat, (RNG.standard_normal(8), 0.2, 13), (0, 1)),
    "trajectory": (trajectory, (0.8, 2.0, 14), (0, 1)),
    "strided": (strided, (0.4, 0.3, 20), (0, 1)),
    "backwards": (backwards, (U5, 0.8, 10), (0, 1)),
    "inner_loops": (inner_loops, (U5, 0.5, 9), (0, 1)),
    "written_after": (written_after, (1.7, 8), 0),
    "skips": (skips, (0.3, 1.2, 11), (0, 1)),
}


def _compare(f, args, wrt, target, checkpoint):
    plain = srcgrad.value_and_grad(f, wrt=wrt, target=target)
    checked = srcgrad.value_and_grad(f, wrt=wrt, target=target, checkpoint=checkpoint)
    (v0, g0), (v1, g1) = plain(*args), checked(*args)
    assert "checkpointing" not in plain.source_for(*args)      # a module of its own (cache key)
    np.testing.assert_allclose(v1, v0, rtol=1e-13, atol=1e-13)
    for a, b in zip(g1 if isinstance(wrt, tuple) else [g1], g0 if isinstance(wrt, tuple) else [g0]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    return checked


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("checkpoint", [1, 4, "auto"])
def test_same_gradient_python(name, checkpoint):
    f, args, wrt = CASES[name]
    checked = _compare(f, args, wrt, "python", checkpoint)
    assert "checkpointing: the segments backwards" in checked.source_for(*args)


@pytest.mark.parametrize("name", sorted(CASES))
def test_finite_differences(name):
    f, args, wrt = CASES[name]
    check_grad(f, args, wrt=wrt, target="python",
               gradfn=srcgrad.grad(f, wrt=wrt, target="python", checkpoint=3))


@pytest.mark.parametrize("n", [0, 1, 2, 5, 6, 7, 36, 37])
def test_trip_counts(n):
    """Segments that do not divide the trip count, one segment, none at all."""
    _compare(lorenz, (1.0, 1.5, 20.0, 10.0, n), (0, 1, 2, 3), "python", 3)
    _compare(lorenz, (1.0, 1.5, 20.0, 10.0, n), (0, 1, 2, 3), "python", "auto")
    _compare(strided, (0.4, 0.3, n), (0, 1), "python", 2)


@pytest.mark.parametrize("name", ["lorenz", "euler", "trajectory",
                                  pytest.param("heat", marks=pytest.mark.slow)])
def test_same_gradient_cpu(name):
    f, args, wrt = CASES[name]
    checked = _compare(f, args, wrt, "cpu", "auto")
    check_grad(f, args, wrt=wrt, target="cpu", gradfn=lambda *a: checked(*a)[1])
    assert "checkpointing: the segments backwards" in checked.source_for(*args)


def test_vjp_and_float32():
    f, args, wrt = CASES["euler"]
    value, pullback = srcgrad.vjp(f, wrt=wrt, target="python")(*args)
    value_c, pullback_c = srcgrad.vjp(f, wrt=wrt, target="python", checkpoint=5)(*args)
    assert value_c == value
    for a, b in zip(pullback_c(2.0), pullback(2.0)):
        np.testing.assert_allclose(a, b, rtol=1e-13)
    u32 = args[0].astype(np.float32)
    g32 = srcgrad.grad(f, wrt=0, target="python", checkpoint=5)(u32, 0.7, 17)
    g64 = srcgrad.grad(f, wrt=0, target="python")(u32, 0.7, 17)
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, g64, rtol=1e-6)


def test_generated_code_is_readable():
    source = srcgrad.grad(heat, wrt=0, target="python", checkpoint="auto").source_for(U5, 0.2, 13)
    forward = source[source.index("def heat_adjoint"):]
    assert "checkpointing: this loop runs in segments of _ck_k1 (checkpoint=\"auto\": chosen below) " \
           "iterations; the state (u) is stored" in forward
    assert "_ck_bytes1 = u.nbytes" in forward and "_ck_carried1 = max(u.nbytes, 8)" in forward
    # the rerun needs only what it reads from outside: no per-iteration copies of its temporaries
    assert "_t1_saved" not in forward


def test_sum_loop_left_joint():
    """The last loop that only sums terms into the result needs no tape: not checkpointed."""
    def rosen(x):
        s = 0.0
        for i in range(x.shape[0] - 1):
            a = x[i + 1] - x[i] * x[i]
            b = 1.0 - x[i]
            s += 100.0 * a * a + b * b
        return s
    x = RNG.standard_normal(6)
    checked = _compare(rosen, (x,), 0, "python", 2)
    source = checked.source_for(x)
    assert "joint sweep" in source and "checkpointing" not in source


def test_print_runs_once_per_iteration(capsys):
    def noisy(x, n):
        for i in range(n):
            print("step", i)
            x = np.sin(x) * 1.1
        return x
    g = srcgrad.grad(noisy, target="python", checkpoint=2)
    g(0.3, 5)
    assert capsys.readouterr().out.count("step") == 5


# -- refusals: never a wrong gradient -------------------------------------------------------------

def in_branch(x, n):
    if x > 0.0:
        for i in range(n):
            x = np.sin(x) * 1.1
    return x


def while_loop(x):
    while x < 10.0:
        x = x * 1.5 + 0.1
    return x


def breaks(x, n):
    for i in range(n):
        if x > 5.0:
            break
        x = x * 1.5
    return x


def writes_argument(u, n):
    for i in range(n):
        u[i % 3] = u[i % 3] * 0.5 + np.sin(u[(i + 1) % 3])
    return np.sum(u)


def maybe_unbound(x, n):
    if x > 0.0:
        m = x
    for i in range(n):
        m = m * x
    return m


@pytest.mark.parametrize("f, args, construct", [
    (while_loop, (1.0,), "checkpointed while loop"),
    (breaks, (1.0, 4), "checkpointed while loop"),
    (writes_argument, (np.ones(3), 4), "checkpointed write into an argument"),
    (maybe_unbound, (1.0, 3), "checkpointed unbound state"),
    (in_branch, (1.0, 3), "checkpointed loop in a branch"),
])
def test_refused(f, args, construct):
    with pytest.raises(srcgrad.SrcgradError) as info:
        srcgrad.grad(f, target="python", checkpoint=2)(*args)
    message = str(info.value)
    assert "checkpoint" in message and "test_checkpoint.py" in message
    assert construct in getattr(info.value, "construct", construct)
    srcgrad.grad(f, target="python")(*(a.copy() if isinstance(a, np.ndarray) else a for a in args))


@pytest.mark.parametrize("checkpoint", [None, 4])
def test_view_read_after_a_write_into_its_base_is_refused(checkpoint):
    with pytest.raises(srcgrad.SrcgradError, match="is read after the write"):
        srcgrad.grad(through_view, target="python", checkpoint=checkpoint)(0.3, 9)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "sqrt", True])
def test_bad_option(bad):
    with pytest.raises(ValueError, match="checkpoint must be"):
        srcgrad.grad(lorenz, target="python", checkpoint=bad)


def test_decorator_form():
    @srcgrad.grad(wrt=(0, 1), target="python", checkpoint="auto")
    def damped(x, v, n):
        for i in range(n):
            v = v - 0.1 * x
            x = x + 0.1 * v
        return x * x
    plain = srcgrad.grad(damped.func, wrt=(0, 1), target="python")
    assert damped(1.0, 0.5, 50) == plain(1.0, 0.5, 50)
    assert "checkpointing" in damped.source_for(1.0, 0.5, 50)


def test_cuda_refused():
    with pytest.raises(ValueError, match="checkpoint"):
        srcgrad.grad(lorenz, target="cuda", checkpoint=4)


# -- memory: the tape of a 10^5-step ODE stays under a budget --------------------------------------

def decay(x, a, n):
    dt = 1e-4
    for i in range(n):
        x = x + dt * (np.sin(a * x) - x * x)
    return x


def _peak(g, args):
    tracemalloc.start()
    try:
        out = g(*args)
        return tracemalloc.get_traced_memory()[1], out
    finally:
        tracemalloc.stop()


def test_memory_under_budget():
    """10^4 steps, taped in full: one float a step (80 kB); checkpointed (K = ceil(sqrt(n)) = 100):
    100 checkpoints and one segment's tape, about 2 kB. Budget: 16 kB; the gradient is unchanged.
    (tracemalloc slows the python target down: 10^6 steps are measured on cpu, in the slow test.)"""
    n = 10_000
    args = (0.5, 1.3, n)
    plain = srcgrad.grad(decay, wrt=(0, 1), target="python")
    checked = srcgrad.grad(decay, wrt=(0, 1), target="python", checkpoint="auto")
    plain(0.5, 1.3, 10), checked(0.5, 1.3, 10)           # generated and imported outside the measure
    peak_plain, g_plain = _peak(plain, args)
    peak_checked, g_checked = _peak(checked, args)
    assert peak_plain >= 8 * n, peak_plain
    assert peak_checked < 16 * 1024, peak_checked
    assert g_checked == g_plain          # the same operations in the same order


def stored(x, a, n):
    """An ODE that stores its trajectory: an array only written element-wise, part of the state."""
    dt = 1e-3
    traj = np.zeros(n)
    for i in range(n):
        traj[i] = x
        x = x + dt * (np.sin(a * x) - x * x)
    return np.sum(traj * traj) + x


def test_memory_stored_trajectory():
    """Each checkpoint copies the trajectory whole (n floats): with K = sqrt(n) the checkpoints
    would take n^1.5 floats, far more than the tape. "auto" sizes K by the bytes of a checkpoint
    against those of its rebound part and stays near the un-checkpointed peak."""
    n = 4000
    args = (0.5, 1.3, n)
    plain = srcgrad.grad(stored, wrt=(0, 1), target="python")
    auto = srcgrad.grad(stored, wrt=(0, 1), target="python", checkpoint="auto")
    sqrt_k = srcgrad.grad(stored, wrt=(0, 1), target="python", checkpoint=64)
    for g in (plain, auto, sqrt_k):
        g(0.5, 1.3, 10)
    peak_plain, g_plain = _peak(plain, args)
    peak_auto, g_auto = _peak(auto, args)
    peak_sqrt, g_sqrt = _peak(sqrt_k, args)
    assert peak_sqrt > 63 * 8 * n, peak_sqrt          # 63 checkpoints of the trajectory
    assert peak_auto < 2 * peak_plain, (peak_auto, peak_plain)
    assert g_auto == g_plain and g_sqrt == g_plain
    check_grad(stored, (0.5, 1.3, 30), wrt=(0, 1), target="python",
               gradfn=srcgrad.grad(stored, wrt=(0, 1), target="python", checkpoint="auto"))


RSS_CHILD = """
import sys
import numpy as np
import srcgrad


def decay(x, a, n):
    dt = 1e-4
    for i in range(n):
        x = x + dt * (np.sin(a * x) - x * x)
    return x


def status(field):
    with open("/proc/self/status") as lines:
        return next(int(l.split()[1]) * 1024 for l in lines if l.startswith(field + ":"))


checkpoint = None if sys.argv[1] == "none" else sys.argv[1]
g = srcgrad.grad(decay, wrt=(0, 1), target="cpu", checkpoint=checkpoint)
g(0.5, 1.3, 1000)                        # compiled before the measure
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")                     # the peak RSS (VmHWM) restarts from the current RSS
before = status("VmRSS")
grads = g(0.5, 1.3, 10 ** 7)
print(status("VmHWM") - before, repr(grads[0]), repr(grads[1]))
"""


@pytest.mark.slow
def test_memory_under_budget_cpu(tmp_path):
    """The compiled code, 10^7 steps, growth of the peak resident memory in a child process
    (Linux: the peak is reset after the compile, /proc/self/clear_refs): taped in full the tape
    takes 80 MB; checkpointed (K = 3163) the call stays under an 8 MB budget; same gradient."""
    import os
    import subprocess
    import sys

    from conftest import user_numba_env

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "rss_child.py"          # srcgrad reads the function's source from a file
    script.write_text(RSS_CHILD)
    env = user_numba_env(os.environ)
    env["SRCGRAD_CACHE_DIR"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    results = {}
    for option in ("none", "auto"):
        out = subprocess.run([sys.executable, str(script), option], cwd=root, env=env,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        grown, g0, g1 = out.stdout.split()[-3:]
        results[option] = (int(grown), g0, g1)
    assert results["none"][0] > 60 * 2 ** 20, results
    assert results["auto"][0] < 8 * 2 ** 20, results
    assert results["auto"][1:] == results["none"][1:]


def test_tape_limit(monkeypatch):
    """SRCGRAD_MAX_TAPE_BYTES (srcgrad's tape budget) at 4000 bytes: the heat stencil's 100 steps
    keep 6400 bytes of `lap` snapshots taped in full (a MemoryError), 640 a segment checkpointed."""
    f = heat
    args = (RNG.standard_normal(8), 0.2, 100)
    expected = srcgrad.grad(f, wrt=(0, 1), target="python")(*args)
    monkeypatch.setenv("SRCGRAD_MAX_TAPE_BYTES", "4000")
    with pytest.raises(MemoryError):
        srcgrad.grad(f, wrt=(0, 1), target="python")(*args)
    got = srcgrad.grad(f, wrt=(0, 1), target="python", checkpoint=10)(*args)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-13)
    assert got[1] == pytest.approx(expected[1], rel=1e-13)


def test_memory_trajectory_fd():
    """The same program, small: the checkpointed gradient against finite differences."""
    check_grad(decay, (0.5, 1.3, 50), wrt=(0, 1), target="python",
               gradfn=srcgrad.grad(decay, wrt=(0, 1), target="python", checkpoint="auto"))
