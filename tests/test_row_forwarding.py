"""Row forwarding (srcgrad/row_forwarding.py, ROW_FORWARDING): the loop computing a step's values
stores them into the next snapshot row of the stepped array, and the loop copying them back is
dropped; where the second array is read by that copy only, the first loop stores into the row
instead of into it.

Each program is differentiated with the switch on and off: the values and gradients are the same
bit for bit (the same arithmetic on the same values), and they match central finite differences.
Where it must not apply: a copy that computes (`u[i] = tanh(un[i])`), a 2-d array (no rows written
in place), a partial write; where the second array must keep its values (read after the loop);
where the run-time guard takes the code as written (the two loops cover different slots).
"""
import math

import numpy as np
import pytest

import srcgrad
from srcgrad import row_forwarding
from conftest import check_grad
from stencil_programs import heat
from test_snapshot_rows import _args, every_other, grid, written_after

MARK = "row forwarding:"
DEAD = "so the loop stores into the row instead"


def nonlinear(u0, kappa, nsteps):
    """Any computation in the first loop: it is stored twice (or into the row), never redone."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = math.tanh(u[i] + kappa * u[i - 1] * u[i + 1])
        for i in range(1, n - 1):
            u[i] = un[i]
    return np.sum(u * u)


def read_after(u0, kappa, nsteps):
    """`un` is read after the loop: the first loop stores into it and into the row."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 1):
            u[i] = un[i]
    return np.sum(u * u) + un[1] * un[n - 2]


def shorter_copy(u0, kappa, nsteps):
    """The copy covers fewer slots than the first loop writes: the guard runs the code as written
    in every step (the last interior slot keeps its start value)."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 2):
            u[i] = un[i]
    return np.sum(u * u)


def _both(f, args, target, monkeypatch, tmp_path, **options):
    out = []
    for on in (True, False):
        monkeypatch.setattr(row_forwarding, "ROW_FORWARDING", on)
        monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / str(on)))   # not in the cache key
        g = srcgrad.value_and_grad(f, wrt=(0, 1), target=target, **options)
        out.append((g(*args), g.source_for(*args)))
    monkeypatch.setattr(row_forwarding, "ROW_FORWARDING", True)
    return out


def _same(on, off):
    assert on[0] == off[0] or (np.isnan(on[0]) and np.isnan(off[0]))
    for a, b in zip(on[1], off[1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("f, args, applied, dead", [
    (heat, _args(), True, True), (heat, _args(n=2, nsteps=3), True, True),
    (heat, _args(nsteps=0), True, True), (nonlinear, _args(), True, True),
    (read_after, _args(), True, False), (shorter_copy, _args(), True, True),
    (written_after, _args(), False, False), (every_other, _args(), False, False),
    (grid, (np.outer(_args(5)[0], _args(4)[0]) + 0.1, 0.2, 3), False, False),
])
def test_forwarding_equals_the_copy(f, args, applied, dead, monkeypatch, tmp_path):
    (on, source_on), (off, source_off) = _both(f, args, "python", monkeypatch, tmp_path)
    assert (MARK in source_on) == applied
    assert (DEAD in source_on) == dead
    assert MARK not in source_off
    _same(on, off)
    if args[2] > 0:
        check_grad(f, args, wrt=(0, 1), target="python")


def test_forwarding_with_nan(monkeypatch, tmp_path):
    u0 = _args()[0].copy()
    u0[2] = np.nan
    (on, _), (off, _) = _both(heat, (u0, 0.2, 3), "python", monkeypatch, tmp_path)
    assert np.isnan(on[0]) and np.isnan(on[1][0]).any()
    _same(on, off)


def test_forwarding_cpu(monkeypatch, tmp_path):
    args = _args(n=9, nsteps=4)
    (on, source_on), (off, _) = _both(heat, args, "cpu", monkeypatch, tmp_path)
    assert DEAD in source_on and "adjoint swap:" in source_on     # the swap still applies
    _same(on, off)
    check_grad(heat, args, wrt=(0, 1), target="cpu",
               gradfn=srcgrad.grad(heat, wrt=(0, 1), target="cpu"))


def test_checkpointed_loop(monkeypatch, tmp_path):
    """checkpoint=K reruns the loop by segments: the same gradient with and without forwarding."""
    args = _args(nsteps=7)
    (on, _), (off, _) = _both(heat, args, "python", monkeypatch, tmp_path, checkpoint=3)
    _same(on, off)
    plain = srcgrad.value_and_grad(heat, wrt=(0, 1), target="python")(*args)
    np.testing.assert_allclose(on[1][0], plain[1][0], rtol=1e-12, atol=1e-14)


def test_float32(monkeypatch, tmp_path):
    """float32: the row takes the value the second array would have held (the same kind)."""
    u0 = _args()[0].astype(np.float32)
    (on, source_on), (off, _) = _both(heat, (u0, np.float32(0.2), 3), "python", monkeypatch, tmp_path)
    assert DEAD in source_on
    _same(on, off)
    assert on[1][0].dtype == np.float32
