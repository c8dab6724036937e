"""Step snapshots written in place (srcgrad/step_snapshots.py, WRITE_INTO): the stepped array
lives in the snapshot buffer (step t writes row t + 1, the slots the step does not write carried
over) instead of a copy into the buffer each step.

Each program is differentiated with the switch on and off: the values and gradients are the same
bit for bit (the same arithmetic on the same values), and they match central finite differences.
The programs after ``heat`` are those where it must not apply (partial or conditional writes, a
2-d array, the array returned, a parameter written in place) or where the run-time guard must take
the whole-row copy, plus the array read and written after the loop and a checkpointed loop.
"""
import math

import numpy as np
import pytest

import srcgrad
from srcgrad import step_snapshots
from conftest import check_grad
from stencil_programs import heat

MARK = "written in place"


def written_after(u0, kappa, nsteps):
    """The array is read and written after the loop (it is then the buffer's last row)."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 1):
            u[i] = math.tanh(un[i])
    u[0] = u[1] * u[n - 1]
    return np.sum(u * u)


def off_the_front(u0, kappa, nsteps):
    """The written run starts at -1 (slot n - 1 through negative indexing): the guard copies the
    whole row, then the step writes it."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] * kappa + u[i + 1] * u[i - 1]
        for i in range(-1, n - 2):
            u[i] = 0.5 * un[i + 1]
    return np.sum(u * u)


def whole_then_partial(u0, kappa, nsteps):
    """The first loop writes every slot, a second one some again: applied (nothing carried)."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(n):
            un[i] = u[i] * kappa + math.sin(u[(i + 1) % n])
        for i in range(0, n):
            u[i] = un[i]
        for i in range(1, n - 1):
            u[i] = un[i - 1] * 0.5
    return np.sum(u * u)


def conditional(u0, c, nsteps):
    """The write is under a branch: not every slot of the run is certainly written."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] * c + u[i - 1] * u[i + 1]
        for i in range(1, n - 1):
            if un[i] > 0.0:
                u[i] = un[i]
    return np.sum(u * u)


def every_other(u0, c, nsteps):
    """A stride-2 write loop: not a run of slots."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] * c + u[i - 1] * u[i + 1]
        for i in range(1, n - 1, 2):
            u[i] = un[i]
    return np.sum(u * u)


def shifted(u0, c, nsteps):
    """The first write's slot is not the loop variable."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] * c + u[i - 1] * u[i + 1]
        for i in range(0, n - 2):
            u[i + 1] = un[i + 1]
    return np.sum(u * u)


def grid(a0, c, nsteps):
    """A 2-d array: snapshotted, not written in place."""
    m = a0.shape[0]
    n = a0.shape[1]
    a = a0.copy()
    b = a0.copy()
    for t in range(nsteps):
        for i in range(1, m - 1):
            for j in range(n):
                b[i, j] = a[i, j] + c * (a[i - 1, j] + a[i + 1, j] - 2.0 * a[i, j])
        for i in range(1, m - 1):
            for j in range(n):
                a[i, j] = b[i, j]
    return np.sum(a * a)


def _args(n=7, nsteps=3):
    x = np.linspace(0.0, 1.0, n)
    return (np.sin(np.pi * x) + 0.1 * np.cos(7.0 * x), 0.2, nsteps)


def _both(f, args, target, monkeypatch, tmp_path, wrt=(0, 1), **options):
    out = []
    for on in (True, False):
        monkeypatch.setattr(step_snapshots, "WRITE_INTO", on)
        monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / str(on)))   # not in the cache key
        g = srcgrad.value_and_grad(f, wrt=wrt, target=target, **options)
        out.append((g(*args), g.source_for(*args)))
    monkeypatch.setattr(step_snapshots, "WRITE_INTO", True)
    return out


def _same(on, off):
    assert on[0] == off[0] or (np.isnan(on[0]) and np.isnan(off[0]))
    for a, b in zip(on[1], off[1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("f, args, applied", [
    (heat, _args(), True), (heat, _args(n=2, nsteps=3), True), (heat, _args(nsteps=0), True),
    (written_after, _args(), True), (off_the_front, _args(), True),
    (whole_then_partial, _args(), True),
    (conditional, _args(), False), (every_other, _args(), False), (shifted, _args(), False),
    (grid, (np.outer(_args(5)[0], _args(4)[0]) + 0.1, 0.2, 3), False),
])
def test_write_into_equals_the_copy(f, args, applied, monkeypatch, tmp_path):
    (on, source_on), (off, source_off) = _both(f, args, "python", monkeypatch, tmp_path)
    assert (MARK in source_on) == applied
    assert MARK not in source_off
    if f is not shifted:        # (its index is not steady: element saves, no snapshot at all)
        assert "step snapshot" in source_on
    _same(on, off)
    if args[2] > 0:
        check_grad(f, args, wrt=(0, 1), target="python")


def test_write_into_with_nan(monkeypatch, tmp_path):
    u0 = _args()[0].copy()
    u0[2] = np.nan
    (on, _), (off, _) = _both(heat, (u0, 0.2, 3), "python", monkeypatch, tmp_path)
    assert np.isnan(on[0]) and np.isnan(on[1][0]).any()
    _same(on, off)


def test_not_for_a_returned_array(monkeypatch, tmp_path):
    """The stepped array is the result: it stays the array the function made (a row of the
    buffer would keep the whole buffer alive in the caller's hands)."""
    def evolve(u0, kappa, nsteps):
        n = u0.shape[0]
        u = u0.copy()
        un = u0.copy()
        for t in range(nsteps):
            for i in range(1, n - 1):
                un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
            for i in range(1, n - 1):
                u[i] = un[i]
        return u

    args = _args()
    g = srcgrad.vjp(evolve, wrt=(0, 1), target="python")
    value, pullback = g(*args)
    source = g.source_for(*args)
    assert "step snapshot" in source and MARK not in source
    np.testing.assert_array_equal(value, evolve(*args))


def test_checkpointed_loop(monkeypatch, tmp_path):
    """checkpoint=K reruns the loop by segments: the same gradient with and without it."""
    args = _args(nsteps=7)
    (on, _), (off, _) = _both(heat, args, "python", monkeypatch, tmp_path, checkpoint=3)
    _same(on, off)
    plain = srcgrad.value_and_grad(heat, wrt=(0, 1), target="python")(*args)
    np.testing.assert_allclose(on[1][0], plain[1][0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(on[1][1], plain[1][1], rtol=1e-12)


def test_write_into_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path))
    args = _args(n=9, nsteps=4)
    g = srcgrad.value_and_grad(heat, wrt=(0, 1), target="cpu")
    value, grads = g(*args)
    source = g.source_for(*args)
    assert MARK in source and "adjoint swap:" in source      # the swap still applies
    reference = srcgrad.value_and_grad(heat, wrt=(0, 1), target="python")(*args)
    assert abs(value - reference[0]) <= 1e-12 * abs(reference[0])
    for a, b in zip(grads, reference[1]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    check_grad(heat, args, wrt=(0, 1), target="cpu", gradfn=srcgrad.grad(heat, wrt=(0, 1), target="cpu"))
