"""Dropped zeroes (srcgrad/dropped_zeroes.py): the reset ``_adj_un[i] = 0.0`` of the heat
stencil's reverse pass is dropped where the next step (after the adjoint swap) assigns the slot
before reading it; the slots left unreset are zeroed at run time wherever they could be read.

Programs are differentiated with the pass on and off (dropped_zeroes.DROP_ZEROES): the values
and gradients agree bit for bit, and match central finite differences. The synthetic reverse
loops at the end run the pass itself on code where it must not apply (a slot read before it is
assigned, an assignment under another condition, a bound rebound, the array read after the
pass) and where the run-time part matters (ranges that differ by step, steps that keep the copy
loop): refused, or the same arrays bit for bit.
"""
import ast

import numpy as np
import pytest

import srcgrad
from srcgrad import dropped_zeroes
from srcgrad.placeholders import Comment
from conftest import check_grad
from stencil_programs import heat

MARK = "dropped zeroes:"


def inner_copy(u0, kappa, nsteps):
    """The copy moves fewer slots than the stencil writes (more slots traded back by the swap)."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(2, n - 2):
            u[i] = un[i]
    s = 0.0
    for i in range(n):
        s += u[i] * u[i] * (1.0 + 0.1 * i)
    return s


def shrinking(u0, kappa, nsteps):
    """The stencil's and the copy's range differ by step (their upper end moves with t): the
    copy's reverse restores `u` from the tape, no swap, nothing dropped (the synthetic loops
    below cover ranges that differ by step under a swap)."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        m = n - 1 - t % 3
        for i in range(1, m):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, m):
            u[i] = un[i]
    s = 0.0
    for i in range(n):
        s += u[i] * u[i] * (1.0 + 0.1 * i)
    return s


def _args(n=7, nsteps=3):
    x = np.linspace(0.0, 1.0, n)
    return (np.sin(np.pi * x) + 0.1 * np.cos(7.0 * x), 0.2, nsteps)


def _both(f, args, target, monkeypatch, tmp_path, wrt=(0, 1)):
    out = []
    for on in (True, False):
        monkeypatch.setattr(dropped_zeroes, "DROP_ZEROES", on)
        monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / str(on)))
        g = srcgrad.value_and_grad(f, wrt=wrt, target=target)
        out.append((g(*args), g.source_for(*args)))
    monkeypatch.setattr(dropped_zeroes, "DROP_ZEROES", True)
    return out


def _same(on, off):
    np.testing.assert_array_equal(on[0], off[0])
    for a, b in zip(on[1], off[1]):
        np.testing.assert_array_equal(a, b)         # the same arithmetic: bit for bit


def shrinking_stencil(u0, kappa, nsteps):
    """Only the stencil's range differs by step: `un`'s adjoint is not known zero on the copied
    slots, no swap, so nothing is dropped."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        m = n - 1 - t % 3
        for i in range(1, m):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 1):
            u[i] = un[i]
    s = 0.0
    for i in range(n):
        s += u[i] * u[i] * (1.0 + 0.1 * i)
    return s


@pytest.mark.parametrize("f, dropped", [(heat, True), (inner_copy, True), (shrinking, False),
                                        (shrinking_stencil, False)])
def test_dropped_zeroes_equal_the_reset(f, dropped, monkeypatch, tmp_path):
    (on, source_on), (off, source_off) = _both(f, _args(), "python", monkeypatch, tmp_path)
    assert (MARK in source_on) == dropped and MARK not in source_off
    if dropped:
        assert source_on.count("_adj_un[i] = 0.0") < source_off.count("_adj_un[i] = 0.0")
    _same(on, off)
    check_grad(f, _args(), wrt=(0, 1), target="python")


@pytest.mark.parametrize("n, nsteps", [(2, 3), (3, 4), (5, 0), (5, 1), (9, 11)])
def test_dropped_zeroes_tiny_and_empty(n, nsteps, monkeypatch, tmp_path):
    (on, _), (off, _) = _both(heat, _args(n, nsteps), "python", monkeypatch, tmp_path)
    _same(on, off)


def test_dropped_zeroes_nan(monkeypatch, tmp_path):
    u0, kappa, nsteps = _args(9, 5)
    u0[4] = np.nan
    (on, _), (off, _) = _both(heat, (u0, kappa, nsteps), "python", monkeypatch, tmp_path)
    assert np.isnan(on[1][0]).any() and np.isnan(on[1][1])
    _same(on, off)                                  # (assert_array_equal: NaN where NaN)
    (on, _), (off, _) = _both(heat, (_args(9, 5)[0], np.nan, 5), "python", monkeypatch, tmp_path)
    assert np.isnan(on[1][0]).all()
    _same(on, off)


def test_dropped_zeroes_cpu(monkeypatch, tmp_path):
    """Compiled: the gradient matches finite differences and the python target with the pass off."""
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / "cpu"))
    g = srcgrad.grad(inner_copy, wrt=(0, 1), target="cpu")
    args = _args(9, 7)
    assert MARK in g.source_for(*args)
    got = check_grad(inner_copy, args, wrt=(0, 1), gradfn=g)
    monkeypatch.setattr(dropped_zeroes, "DROP_ZEROES", False)
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / "python"))
    ref = srcgrad.grad(inner_copy, wrt=(0, 1), target="python")(*args)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-12, atol=1e-14)
    assert abs(got[1] - ref[1]) <= 1e-12 * max(1.0, abs(ref[1]))


# -- the pass on synthetic reverse loops -------------------------------------------------------

LOOP = """
for t in range(T - 1, -1, -1):
    hi = HI
    if GUARD and A.shape == B.shape and 1 <= hi and hi <= A.shape[0]:
        A, B = B, A
        for k in range(0, 1):
            A[k], B[k] = B[k], A[k]
        for k in range(hi, A.shape[0]):
            A[k], B[k] = B[k], A[k]
    else:
        for i in range(hi - 1, 0, -1):
            x = A[i]
            A[i] = 0.0
            B[i] += x
    BETWEEN
    FIRST
    for i in range(1, hi):
        A[i] += B[i] * w[t]
    for i in range(1, hi):
        y = B[i]
        B[i] = 0.0
        A[i + 1] += y * 0.5
    AFTER
"""

HEAT_FIRST = """for i in range(1, hi):
        j = i - 1
        if i >= 2:
            A[j] = B[i] * 0.3
        else:
            A[j] += B[i] * 0.3"""


def _program(first=HEAT_FIRST, hi="n - 1", guard="True", between="pass", after="pass"):
    text = LOOP.replace("FIRST", first).replace("HI", hi).replace("GUARD", guard)
    text = text.replace("BETWEEN", between).replace("AFTER", after)
    tree = ast.parse(text)
    swap = tree.body[0].body[1]
    swap.swap_slots = ("A", "B", "1", "hi")        # (as adjoint_swaps.py marks its guard)
    return tree


def _run(tree, applied):
    names = iter(range(1, 100))
    body = dropped_zeroes.drop_zeroes(tree.body, lambda stem: f"_{stem}{next(names)}")
    body = [s for s in body if not isinstance(s, Comment)]
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        for field in ("body", "orelse"):
            if isinstance(getattr(node, field, None), list):
                setattr(node, field, [s for s in getattr(node, field) if not isinstance(s, Comment)]
                        or [ast.Pass()])
    module = ast.fix_missing_locations(ast.Module(body=body, type_ignores=[]))
    text = ast.unparse(module)
    assert ("_zlo" in text) == applied, text
    rng = np.random.default_rng(3)
    n, T = 9, 13
    env = {"A": rng.standard_normal(n), "B": np.zeros(n), "w": rng.standard_normal(T),
           "n": n, "T": T}
    exec(compile(module, "<synthetic>", "exec"), env)
    return env["A"], env["B"]


def _check(applied=True, **parts):
    on = _run(_program(**parts), applied)
    dropped_zeroes.DROP_ZEROES = False
    try:
        off = _run(_program(**parts), False)
    finally:
        dropped_zeroes.DROP_ZEROES = True
    for a, b in zip(on, off):
        np.testing.assert_array_equal(a, b)


def test_synthetic_heat_shape_applies():
    _check()


def test_synthetic_ranges_differ_by_step():
    _check(hi="n - 1 - t % 4")          # the uncovered debt of a longer last step is zeroed
    _check(hi="n - 4 + t % 4")


def test_synthetic_steps_that_keep_the_copy_loop():
    _check(guard="t % 3 != 1")          # the else branch zeroes all the debt first
    _check(guard="t % 3 != 1", hi="n - 1 - t % 4")


def test_synthetic_read_before_assignment_refused():
    _check(False, first="for i in range(1, hi):\n        A[i - 1] = A[i] + B[i]")
    _check(False, first="for i in range(1, hi):\n        A[i] += B[i]")
    _check(False, between="z = A[1]")   # read between the swap and the assigning pass


def test_synthetic_other_condition_refused():
    _check(False, first="for i in range(1, hi):\n        if B[i] > 0.0:\n            A[i - 1] = B[i]\n"
                        "        else:\n            A[i - 1] += B[i]")
    _check(False, first="for i in range(1, hi):\n        if i >= 2:\n            A[i - 1] = B[i]")


def test_synthetic_rebound_bound_and_later_read_refused():
    _check(False, between="hi = hi - 1")
    _check(False, after="z = B[3]")
