"""The loop-speed transformations (issue #18) give the gradient the unoptimized code gives.

Each optimization has a switch; every test compares the gradient with the switch on and off
(to rounding) and with central finite differences, on the python target and a compiled subset.
"""
import math
import re

import numba
import numpy as np
import pytest

import srcgrad
from srcgrad import transform
from conftest import check_grad
from srcgrad import inline


@pytest.fixture(autouse=True)
def _helpers_stay_calls(monkeypatch):
    """These tests are about helper adjoints: the helpers stay calls (srcgrad.inline would write
    the small ones into their callers; tests/test_inline_hoist.py covers that)."""
    monkeypatch.setattr(inline, "INLINE_HELPERS", False)

# -- helpers called in loops: their adjoints add into the caller's adjoint arrays in place --------


@numba.njit
def row_energy(W, x, i, c):
    s = 0.0
    for j in range(x.shape[0]):
        s += math.tanh(W[i, j] * x[j]) * c
    return s


def whole(W):                 # W's adjoint is assigned whole inside (a single use)
    return np.sum(W * W)


def shape_only(W, x):         # W lends its shape only: its adjoint is untouched inside
    return x[0] * W.shape[0]


def rebinds(x):               # assigns its parameter: its adjoint is reset, so never in place
    x = x * 2.0
    return np.sum(np.sin(x))


def pair(a, b):               # called with the same array twice: not in place
    return np.sum(a * b)


def outer(W, x, i):           # passes its own in-place adjoint on to the next helper
    return row_energy(W, x, i, 0.5) + whole(W)


def helper_loop(W, x):
    total = 0.0
    for i in range(W.shape[0]):
        total += outer(W, x, i)
        total += shape_only(W, x)
    total += rebinds(x)
    total += pair(x, x)
    return total


def _args(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((4, 3)), rng.standard_normal(3)


def _both(f, args, wrt, target, monkeypatch, tmp_path, switch):
    results = []
    for on in (True, False):
        monkeypatch.setattr(transform, switch, on)
        monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / str(on)))
        g = srcgrad.value_and_grad(f, wrt=wrt, target=target)
        results.append((g(*args), g.source_for(*args)))
    return results


def test_helper_adjoints_in_place(monkeypatch, tmp_path):
    args = _args()
    (on, source_on), (off, source_off) = _both(helper_loop, args, (0, 1), "python", monkeypatch,
                                               tmp_path, "HELPER_ADJOINTS_IN_PLACE")
    assert "adds into _adj_W, _adj_x in place" in source_on
    assert "in place" not in source_off
    # `pair(x, x)` and `rebinds(x)` keep fresh gradient arrays
    assert "pair_adjoint(x, x, _adj_t" in source_on and "rebinds_adjoint(x, _adj_t" in source_on
    np.testing.assert_allclose(on[0], off[0], rtol=1e-14)
    for a, b in zip(on[1], off[1]):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)
    monkeypatch.setattr(transform, "HELPER_ADJOINTS_IN_PLACE", True)
    check_grad(helper_loop, args, wrt=(0, 1), target="python")


def rows_loop(W, x):
    total = 0.0
    for i in range(W.shape[0]):
        total += row_energy(W, x, i, 0.5)
    return total


def test_helper_adjoints_in_place_cpu():
    g = srcgrad.grad(rows_loop, wrt=(0, 1), target="cpu")
    assert "adds into _adj_W, _adj_x in place" in g.source_for(*_args())
    check_grad(rows_loop, _args(), wrt=(0, 1), target="cpu", gradfn=g)


def test_helper_in_place_inactive_argument():
    """Only the arguments active in the caller are differentiated in the helper: x is data here."""
    W, x = _args(1)

    def f(W, x):
        s = 0.0
        for i in range(W.shape[0]):
            s += outer(W, x, i)
        return s
    source = srcgrad.grad(f, wrt=0, target="python").source_for(W, x)
    assert "def row_energy_adjoint(W, x, i, c, _seed, _adj_W):" in source
    check_grad(f, (W, x), wrt=0, target="python")


# -- exact tapes: a loop whose trip counts are known at its entry pushes into one buffer ----------


def stencil(u0, kappa, nsteps):
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 1):
            u[i] = un[i]
    s = 0.0
    for i in range(n):
        s += math.sin(u[i]) * u[i]
    return s


def branchy(x, m):
    s = 0.0
    y = 0.0
    for k in range(m):
        for i in range(x.shape[0]):
            y = math.tanh(y + x[i])          # pushed every iteration: counted
            if x[i] > 0.0:
                s = s * y + x[i]            # pushed on one path only: the whole loop keeps the tape
            else:
                s = s + y
    return s * s


def triangular(x):
    s = 0.0
    for i in range(x.shape[0]):
        for j in range(i, x.shape[0]):      # the inner trip count changes: not counted
            s = math.sin(s + x[i] * x[j])
    return s


def counted_with_flags(x, m):
    # an int tape (the index j, carried from iteration to iteration) and a float tape, both
    # exact; an outer range with a step other than 1
    s = 0.0
    j = 0
    for k in range(1, 2 * m + 1, 2):
        for i in range(x.shape[0]):
            j = (j * 3 + i + k) % x.shape[0]
            s = math.sin(s + x[i] * x[j])
            if x[j] > 0.1 * k:
                s = s * 0.5
    return s


@pytest.mark.parametrize("f, args, exact", [
    (stencil, (np.linspace(0.0, 1.0, 9) ** 2, 0.2, 4), True),
    (branchy, (np.array([0.3, -0.4, 0.8, -0.1]), 3), False),
    (triangular, (np.array([0.3, -0.4, 0.8, 0.5]),), False),
    (counted_with_flags, (np.array([0.35, -0.4, 0.8, 0.05]), 3), True),
])
def test_loop_tapes(f, args, exact, monkeypatch, tmp_path):
    monkeypatch.setattr(transform, "STEP_SNAPSHOTS", False)     # the stencil's u: element pushes
    wrt = 0
    (on, source_on), (off, source_off) = _both(f, args, wrt, "python", monkeypatch, tmp_path,
                                               "LOOP_TAPES")
    assert ("reserve_tape(" in source_on) == exact
    assert "reserve_tape(" not in source_off
    if exact:
        assert "room made once, no growth checks in the loop" in source_on
        assert "push_float(" not in source_on.split("def " + f.__name__ + "_adjoint")[1].split("\n@jit")[0]
    np.testing.assert_allclose(on[0], off[0], rtol=1e-15)
    np.testing.assert_allclose(on[1], off[1], rtol=1e-14, atol=1e-15)
    monkeypatch.setattr(transform, "LOOP_TAPES", True)
    check_grad(f, args, wrt=wrt, target="python")


def test_loop_tapes_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(transform, "STEP_SNAPSHOTS", False)
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path))     # the switch is not in the cache key
    args = (np.linspace(0.0, 1.0, 9) ** 2, 0.2, 4)
    g = srcgrad.grad(stencil, wrt=(0, 1), target="cpu")
    assert "reserve_tape(" in g.source_for(*args)
    check_grad(stencil, args, wrt=(0, 1), target="cpu", gradfn=g)
    args = (np.array([0.35, -0.4, 0.8, 0.05]), 3)
    g = srcgrad.grad(counted_with_flags, wrt=0, target="cpu")
    assert "_itape = reserve_tape(_itape, _ipos, " in g.source_for(*args)
    check_grad(counted_with_flags, args, wrt=0, target="cpu", gradfn=g)


def test_loop_tape_respects_the_tape_limit(monkeypatch, tmp_path):
    monkeypatch.setattr(transform, "STEP_SNAPSHOTS", False)
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SRCGRAD_MAX_TAPE_BYTES", "1000")
    g = srcgrad.grad(stencil, wrt=0, target="python")
    with pytest.raises(MemoryError, match="SRCGRAD_MAX_TAPE_BYTES"):
        g(np.linspace(0.0, 1.0, 50), 0.2, 10)


# -- joint sweeps: a loop that only adds terms to the result runs once, value and adjoint ---------


def rosen(x):
    s = 0.0
    for i in range(x.shape[0] - 1):
        a = x[i + 1] - x[i] * x[i]
        b = 1.0 - x[i]
        s += 100.0 * a * a + b * b
    return s


def minus_terms(x, c):
    s = c * c
    for i in range(1, x.shape[0], 2):
        s -= math.sin(x[i] * c) * x[i - 1]
    return s


def squared_sum(x):          # the result is not the sum itself
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i] * x[i]
    return s * s


def carried(x):              # y is carried from iteration to iteration
    s = 0.0
    y = 0.0
    for i in range(x.shape[0]):
        y = math.tanh(y + x[i])
        s += y
    return s


def reads_sum(x):            # the sum is read by the term
    s = 1.0
    for i in range(x.shape[0]):
        s = s + x[i] * math.sin(s)
    return s


def branch_in_loop(x):
    s = 0.0
    for i in range(x.shape[0]):
        if x[i] > 0.0:
            s += x[i] * x[i]
    return s


def calls_rosen(x):          # a helper adjoint joins too (and adds into _adj_x in place)
    t = 0.0
    for k in range(2):
        t += rosen(x) * (k + 1.0)
    return t


@pytest.mark.parametrize("f, args, joined", [
    (rosen, (np.array([0.3, -0.4, 0.8, 1.1, 0.2]),), True),
    (minus_terms, (np.array([0.3, -0.4, 0.8, 1.1, 0.2]), 0.7), True),
    (squared_sum, (np.array([0.3, -0.4, 0.8]),), False),
    (carried, (np.array([0.3, -0.4, 0.8]),), False),
    (reads_sum, (np.array([0.3, -0.4, 0.8]),), False),
    (branch_in_loop, (np.array([0.3, -0.4, 0.8]),), False),
    (calls_rosen, (np.array([0.3, -0.4, 0.8, 1.1, 0.2]),), True),
])
def test_joint_sweeps(f, args, joined, monkeypatch, tmp_path):
    (on, source_on), (off, source_off) = _both(f, args, 0, "python", monkeypatch, tmp_path,
                                               "JOINT_SWEEPS")
    assert ("joint sweep: the value is a sum" in source_on) == joined
    assert "joint sweep" not in source_off
    np.testing.assert_allclose(on[0], off[0], rtol=1e-15)
    np.testing.assert_allclose(on[1], off[1], rtol=1e-13, atol=1e-15)
    monkeypatch.setattr(transform, "JOINT_SWEEPS", True)
    check_grad(f, args, wrt=0, target="python")


def test_joint_sweep_cpu():
    args = (np.array([0.3, -0.4, 0.8, 1.1, 0.2]), 0.7)
    g = srcgrad.value_and_grad(minus_terms, wrt=(0, 1), target="cpu")
    assert "joint sweep" in g.source_for(*args)
    value, _ = g(*args)
    assert value == pytest.approx(minus_terms(*args), rel=1e-14)
    check_grad(minus_terms, args, wrt=(0, 1), target="cpu",
               gradfn=srcgrad.grad(minus_terms, wrt=(0, 1), target="cpu"))


def array_terms(x, w):       # the iteration's own values are arrays: their adjoints need them
    total = 0.0
    for i in range(3):
        y = x * w + float(i)
        total = total + np.sum(y * y) * (i + 1.0)
    return total


def test_joint_sweep_needs_scalar_terms():
    rng = np.random.default_rng(3)
    args = (rng.standard_normal((3, 2)), rng.standard_normal(2))
    g = srcgrad.grad(array_terms, wrt=(0, 1), target="python")
    assert "joint sweep" not in g.source_for(*args)
    check_grad(array_terms, args, wrt=(0, 1), target="python", gradfn=g)


# -- step snapshots: an array a loop overwrites each step is saved once per iteration -------------


def stencil_2d(a0, c, nsteps):     # a 2-d stencil: one snapshot of the grid per step
    m = a0.shape[0]
    n = a0.shape[1]
    a = a0.copy()
    b = a0.copy()
    for t in range(nsteps):
        for i in range(1, m - 1):
            for j in range(1, n - 1):
                b[i, j] = a[i, j] + c * (a[i - 1, j] + a[i + 1, j] + a[i, j - 1] + a[i, j + 1]
                                         - 4.0 * a[i, j])
        for i in range(1, m - 1):
            for j in range(1, n - 1):
                a[i, j] = math.tanh(b[i, j])
    return np.sum(a * a)


def gauss_seidel(u0, w, nsteps):   # reads u after writing it in the same step: element saves
    n = u0.shape[0]
    u = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            u[i] = w * (u[i - 1] + u[i + 1]) + math.sin(u[i])
    return np.sum(u * u)


def row_per_step(x, nsteps):       # writes a new row each step (A[t, k]): element saves
    A = np.zeros((nsteps, x.shape[0]))
    for t in range(nsteps):
        for k in range(x.shape[0]):
            A[t, k] = math.sin(x[k] * (t + 1.0))
    return np.sum(A * A)


def carried_slot(x, nsteps):       # the slot index is carried from step to step: element saves
    u = x.copy()
    j = 0
    for t in range(nsteps):
        for i in range(x.shape[0]):
            u[j] = math.sin(u[i]) * x[i]
            j = (j + 1) % x.shape[0]
    return np.sum(u * u)


def written_under_branch(u0, c, nsteps):   # the write is conditional, the slots are steady
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] * c + u[i - 1] * u[i + 1]
        for i in range(1, n - 1):
            if un[i] > 0.0:
                u[i] = un[i]
            else:
                u[i] = 0.5 * un[i]
    return np.sum(u * u)


@pytest.mark.parametrize("f, args, wrt, snapshot", [
    (stencil, (np.linspace(0.0, 1.0, 9) ** 2, 0.2, 4), (0, 1), True),
    (stencil_2d, (np.linspace(-1.0, 1.0, 20).reshape(4, 5), 0.15, 3), (0, 1), True),
    (written_under_branch, (np.linspace(-1.0, 1.0, 7), 0.3, 3), (0, 1), True),
    (gauss_seidel, (np.linspace(-1.0, 1.0, 7), 0.3, 3), (0, 1), False),
    (row_per_step, (np.array([0.3, -0.4, 0.8]), 3), 0, False),
    (carried_slot, (np.array([0.3, -0.4, 0.8]), 4), 0, False),
])
def test_step_snapshots(f, args, wrt, snapshot, monkeypatch, tmp_path):
    (on, source_on), (off, source_off) = _both(f, args, wrt, "python", monkeypatch, tmp_path,
                                               "STEP_SNAPSHOTS")
    assert ("step snapshot: this loop overwrites" in source_on) == snapshot
    assert "step snapshot" not in source_off
    if snapshot:       # the element pushes of the overwritten array are gone
        assert "_ftape[_fpos] = u[i]" not in source_on and "_ftape[_fpos] = a[i, j]" not in source_on
    np.testing.assert_allclose(on[0], off[0], rtol=1e-15)
    for a, b in zip(on[1], off[1]):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    monkeypatch.setattr(transform, "STEP_SNAPSHOTS", True)
    check_grad(f, args, wrt=wrt, target="python")


def test_step_snapshots_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path))
    args = (np.linspace(-1.0, 1.0, 7), 0.3, 3)
    g = srcgrad.grad(written_under_branch, wrt=(0, 1), target="cpu")
    assert "step snapshot: this loop overwrites `u`" in g.source_for(*args)
    check_grad(written_under_branch, args, wrt=(0, 1), target="cpu", gradfn=g)


# -- scalar adjoints known to be zero take their first contribution by assignment -----------------


def while_and_branches(x, m):
    s = 0.0
    y = 0.5
    k = 0
    while k < m:
        for i in range(x.shape[0]):
            a = x[i] * y
            if a > 0.0:
                y = math.sin(a) + y
            else:
                s = s + a * a
        k += 1
    return s + y * y


@pytest.mark.parametrize("f, args, assigned", [
    (rosen, (np.array([0.3, -0.4, 0.8, 1.1, 0.2]),), True),
    (carried, (np.array([0.3, -0.4, 0.8]),), True),
    (while_and_branches, (np.array([0.3, -0.4, 0.8]), 3), True),
    (stencil, (np.linspace(0.0, 1.0, 9) ** 2, 0.2, 4), True),
])
def test_zero_adjoints_assigned(f, args, assigned, monkeypatch, tmp_path):
    (on, source_on), (off, source_off) = _both(f, args, 0, "python", monkeypatch, tmp_path,
                                               "ASSIGN_ZERO_ADJOINTS")
    assert ("known to be zero take their first contribution" in source_on) == assigned
    assert "known to be zero" not in source_off
    np.testing.assert_allclose(on[0], off[0], rtol=1e-15)
    np.testing.assert_allclose(on[1], off[1], rtol=1e-14, atol=1e-15)
    monkeypatch.setattr(transform, "ASSIGN_ZERO_ADJOINTS", True)
    check_grad(f, args, wrt=0, target="python")


def test_zero_adjoints_rosenbrock_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path))
    args = (np.array([0.3, -0.4, 0.8, 1.1, 0.2]),)
    g = srcgrad.grad(rosen, wrt=0, target="cpu")
    source = g.source_for(*args)
    # `_adj_a = 2.0 * _adj_t10 * _t9` (was `_adj_a += ...` right after `_adj_a = 0.0`; one
    # contribution: the scaled square 100.0 * a * a, test_scaled_squares.py)
    assert re.search(r"\n +_adj_a = 2\.0 \* _adj_t\d+ \* _t\d+\n", source)
    check_grad(rosen, args, wrt=0, target="cpu", gradfn=g)


# -- `x[i] * x[i]` reads x[i] once: one doubled contribution to its adjoint ----------------------


def same_operands(x, w):
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i] * x[i] + (w[i % 2] + w[i % 2]) * x[i]     # shared: x[i], w[i % 2]
    return s + np.sum(w) * np.sum(w)                          # calls: evaluated twice, as written


def test_share_same_operands(monkeypatch, tmp_path):
    from srcgrad.normalize import flatten
    args = (np.array([0.3, -0.4, 0.8, 1.1]), np.array([0.5, -1.5]))
    results = []
    for on in (True, False):
        monkeypatch.setattr(flatten, "SHARE_SAME_OPERANDS", on)
        monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / str(on)))
        g = srcgrad.value_and_grad(same_operands, wrt=(0, 1), target="python")
        results.append((g(*args), g.source_for(*args)))
    (on, source_on), (off, source_off) = results
    primal_on = source_on.split("def same_operands_adjoint")[0]
    assert re.search(r"(_t\d+) = x\[i\]\n +_t\d+ = \1 \* \1\n", primal_on)
    assert not re.search(r"(_t\d+) = x\[i\]\n +_t\d+ = \1 \* \1\n", source_off)
    assert primal_on.count("np.sum(w)") == 2
    np.testing.assert_allclose(on[0], off[0], rtol=1e-15)
    for a, b in zip(on[1], off[1]):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)
    monkeypatch.setattr(flatten, "SHARE_SAME_OPERANDS", True)
    check_grad(same_operands, args, wrt=(0, 1), target="python")
