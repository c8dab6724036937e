"""Snapshot rows filled from the buffer's last row down (srcgrad/tape.py, DESCENDING_ROWS): the
reverse sweep then reads the rows in ascending memory order. Only where each row lives changes, so
with the switch on and off the values and gradients are the same bit for bit; they also match
central finite differences. Where it must not apply: snapshots kept in a list (a ``while`` loop:
no buffer) and the cuda target, which keeps rows from 0 up (no loop tapes there).
"""
import numpy as np
import pytest

import srcgrad
from srcgrad import tape
from conftest import check_grad
from stencil_programs import heat
from test_snapshot_rows import _args, grid, off_the_front, written_after

MARK = "filled from its last row down"


def rebound(h0, W, nsteps):
    """A whole array rebound each step (`h = np.tanh(W @ h)`): copied into the buffer (no write in
    place), read back in the reverse sweep."""
    h = h0
    for t in range(nsteps):
        h = np.tanh(W @ h + 0.1 * t)
    return np.sum(h * h)


def in_a_while(u0, kappa, nsteps):
    """The same stencil stepped by a while loop: snapshots in a list, not a buffer."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    t = 0
    while t < nsteps:
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 1):
            u[i] = un[i]
        t += 1
    return np.sum(u * u)


def _rebound_args():
    rng = np.random.default_rng(3)
    return (rng.standard_normal(4), 0.5 * rng.standard_normal((4, 4)), 5)


def _both(f, args, target, monkeypatch, tmp_path, **options):
    out = []
    for on in (True, False):
        monkeypatch.setattr(tape, "DESCENDING_ROWS", on)
        monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / str(on)))   # not in the cache key
        g = srcgrad.value_and_grad(f, wrt=(0, 1), target=target, **options)
        out.append((g(*args), g.source_for(*args)))
    monkeypatch.setattr(tape, "DESCENDING_ROWS", True)
    return out


def _same(on, off):
    assert on[0] == off[0] or (np.isnan(on[0]) and np.isnan(off[0]))
    for a, b in zip(on[1], off[1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("f, args, applied", [
    (heat, _args(), True), (heat, _args(nsteps=0), True), (heat, _args(n=2, nsteps=3), True),
    (written_after, _args(), True), (off_the_front, _args(), True),
    (grid, (np.outer(_args(5)[0], _args(4)[0]) + 0.1, 0.2, 3), True),
    (rebound, _rebound_args(), True),
    (in_a_while, _args(), False),
])
def test_descending_equals_ascending(f, args, applied, monkeypatch, tmp_path):
    (on, source_on), (off, source_off) = _both(f, args, "python", monkeypatch, tmp_path)
    assert (MARK in source_on) == applied
    assert MARK not in source_off
    _same(on, off)
    if args[2] > 0:
        check_grad(f, args, wrt=(0, 1), target="python")


def test_descending_with_nan(monkeypatch, tmp_path):
    u0 = _args()[0].copy()
    u0[3] = np.nan
    (on, _), (off, _) = _both(heat, (u0, 0.2, 3), "python", monkeypatch, tmp_path)
    assert np.isnan(on[0]) and np.isnan(on[1][0]).any()
    _same(on, off)


def test_checkpointed_loop(monkeypatch, tmp_path):
    args = _args(nsteps=7)
    (on, _), (off, _) = _both(heat, args, "python", monkeypatch, tmp_path, checkpoint=3)
    _same(on, off)


def test_descending_cpu(monkeypatch, tmp_path):
    args = _args(n=9, nsteps=4)
    (on, source_on), (off, _) = _both(heat, args, "cpu", monkeypatch, tmp_path)
    assert MARK in source_on and "adjoint swap:" in source_on
    _same(on, off)
    check_grad(heat, args, wrt=(0, 1), target="cpu",
               gradfn=srcgrad.grad(heat, wrt=(0, 1), target="cpu"))
