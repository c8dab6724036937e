"""Adjoint swaps (srcgrad/adjoint_swaps.py): the reverse of a copy loop ``u[i] = un[i]`` trades
the two adjoint arrays instead of a pass over both, where the zero-slot analysis shows the
destination's adjoint is zero on the copied slots.

Each program is differentiated with the swap on and off (transform.SWAP_ADJOINTS): the gradients
agree, and they match central finite differences. The programs after ``heat`` are those where the
swap must not apply (or must trade back more slots): the copied array's adjoint receives other
contributions, aliases, views, the array returned, partial or wider copies, other origins.
"""
import numpy as np
import pytest

import srcgrad
from srcgrad import transform
from conftest import check_grad

MARK = "adjoint swap:"


def heat(u0, kappa, nsteps):
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
        s += np.sin(u[i]) * u[i]
    return s


def inner_copy(u0, kappa, nsteps):
    """The copy moves fewer slots than the stencil writes: swapped, more slots traded back."""
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


def created_buffers(u0, kappa, nsteps):
    """Both arrays made by np.zeros (same dtype): swapped."""
    n = u0.shape[0]
    u = np.zeros(n)
    un = np.zeros(n)
    for i in range(n):
        u[i] = u0[i]
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 1):
            u[i] = un[i]
    s = 0.0
    for i in range(n):
        s += u[i] * u[i]
    return s


def copy_first(u0, kappa, nsteps):
    """The copy opens the step: its reverse runs right after the stencil's, which zeroed `un`'s
    adjoint on those slots. W.r.t. u0 alone: swapped; w.r.t. kappa too the stencil's reverse
    reads `u`, whose overwritten values the copy's reverse loop also restores from the tape: that
    loop is not a plain copy, no swap."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            u[i] = un[i]
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
    s = 0.0
    for i in range(n):
        s += un[i] * un[i] * un[i]
    return s


def old_array_read_later(u0, kappa, nsteps):
    """`un` is read after the loop: its adjoint is not zero when the last copy is reversed."""
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
        s += u[i] * u[i] + np.cos(un[i])
    return s


def wider_copy(u0, kappa, nsteps):
    """The copy moves every slot, the stencil writes only the inner ones: after a step the
    boundary slots of `un`'s adjoint hold contributions, so no swap."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(n):
            u[i] = un[i]
    s = 0.0
    for i in range(n):
        s += u[i] * u[i]
    return s


def aliased(u0, kappa, nsteps):
    """`w` names the same array as `un`: refused at the fence (view_writes.py), so no swap ever
    sees an alias of a copied array."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    w = un
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 1):
            u[i] = un[i]
    s = 0.0
    for i in range(n):
        s += u[i] * u[i] + w[i]
    return s


def through_view(u0, kappa, nsteps):
    """A view of `un` read after the loop (writes through views are refused at the fence): its
    adjoint reaches `un`'s as a slice, so no swap."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 1):
            u[i] = un[i]
    v = un[1:n - 1]
    return np.sum(u * u) + np.sum(v * v * v)


def other_origins(u0, kappa, nsteps):
    """`un` from np.zeros, `u` a copy of the argument: the dtypes may differ (a float32
    argument), so the names cannot trade arrays."""
    n = u0.shape[0]
    u = u0.copy()
    un = np.zeros(n)
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 1):
            u[i] = un[i]
    s = 0.0
    for i in range(n):
        s += u[i] * u[i]
    return s


def scaled_copy(u0, kappa, nsteps):
    """`u[i] = 0.5 * un[i]` is not a copy."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 1):
            u[i] = 2.0 * un[i]
    s = 0.0
    for i in range(n):
        s += u[i] * u[i]
    return s


def copy_then_add(u0, kappa, nsteps):
    """`un` gets a second contribution after the copy in the same step (its adjoint is not
    zero where the copy is reversed)."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 1):
            u[i] = un[i]
        for i in range(1, n - 1):
            u[i] = u[i] + 0.1 * un[i]
    s = 0.0
    for i in range(n):
        s += u[i] * u[i]
    return s


def _args(n=7, nsteps=3):
    x = np.linspace(0.0, 1.0, n)
    return (np.sin(np.pi * x) + 0.1 * np.cos(7.0 * x), 0.2, nsteps)


def _both(f, args, target, monkeypatch, tmp_path, wrt=(0, 1)):
    out = []
    for on in (True, False):
        monkeypatch.setattr(transform, "SWAP_ADJOINTS", on)
        monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / str(on)))
        g = srcgrad.value_and_grad(f, wrt=wrt, target=target)
        out.append((g(*args), g.source_for(*args)))
    monkeypatch.setattr(transform, "SWAP_ADJOINTS", True)
    return out


@pytest.mark.parametrize("f, wrt, swapped", [
    (heat, (0, 1), True), (inner_copy, (0, 1), True), (created_buffers, (0, 1), True),
    (copy_first, (0,), True), (copy_first, (0, 1), False),
    (old_array_read_later, (0, 1), False), (wider_copy, (0, 1), False),
    (through_view, (0, 1), False), (other_origins, (0, 1), False), (scaled_copy, (0, 1), False),
    (copy_then_add, (0, 1), False),
])
def test_swap_equals_the_loop(f, wrt, swapped, monkeypatch, tmp_path):
    (on, source_on), (off, source_off) = _both(f, _args(), "python", monkeypatch, tmp_path, wrt)
    assert (MARK in source_on) == swapped
    assert MARK not in source_off
    assert on[0] == off[0]
    for a, b in zip(on[1], off[1]):
        np.testing.assert_array_equal(a, b)         # the same additions: bit for bit
    check_grad(f, _args(), wrt=wrt, target="python")


def test_alias_of_copied_array_refused():
    with pytest.raises(srcgrad.SrcgradError, match="second name for the same array"):
        srcgrad.grad(aliased, wrt=0, target="python")(*_args())


@pytest.mark.parametrize("n", [2, 3, 4])
def test_swap_tiny_and_empty_copies(n, monkeypatch, tmp_path):
    """n = 2: the copy moves nothing (every slot traded back); n = 3: one slot."""
    args = _args(n=n, nsteps=4)
    (on, source_on), (off, _) = _both(heat, args, "python", monkeypatch, tmp_path)
    assert MARK in source_on
    assert on[0] == off[0]
    for a, b in zip(on[1], off[1]):
        np.testing.assert_array_equal(a, b)
    check_grad(heat, args, wrt=(0, 1), target="python")


def test_swap_keeps_zero_steps_and_nan(monkeypatch, tmp_path):
    (on, _), (off, _) = _both(heat, _args(nsteps=0), "python", monkeypatch, tmp_path)
    np.testing.assert_array_equal(on[1][0], off[1][0])
    u0 = _args()[0].copy()
    u0[3] = np.nan
    g = srcgrad.grad(heat, wrt=0, target="python")
    assert np.isnan(g(u0, 0.2, 3)).any()


def test_swap_returned_array_vjp(monkeypatch, tmp_path):
    """The stepped array is the result (vjp seeds its adjoint): the swap may still apply to
    the copy, and the pullback matches the swap-free one."""
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
    seed = np.cos(np.arange(7.0))
    results = []
    for on in (True, False):
        monkeypatch.setattr(transform, "SWAP_ADJOINTS", on)
        monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / str(on)))
        value, pullback = srcgrad.vjp(evolve, wrt=0, target="python")(*args)
        results.append(pullback(seed))
    monkeypatch.setattr(transform, "SWAP_ADJOINTS", True)
    np.testing.assert_array_equal(results[0], results[1])
    h = 1e-6
    for k in range(7):
        e = np.zeros(7)
        e[k] = h
        fd = (evolve(args[0] + e, *args[1:]) - evolve(args[0] - e, *args[1:])) @ seed / (2 * h)
        assert abs(results[0][k] - fd) < 1e-6


def test_swap_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path))
    args = _args(n=9, nsteps=4)
    g = srcgrad.value_and_grad(heat, wrt=(0, 1), target="cpu")
    assert MARK in g.source_for(*args)
    value, grads = g(*args)
    ref_value, ref_grads = srcgrad.value_and_grad(heat, wrt=(0, 1), target="python")(*args)
    assert value == ref_value
    np.testing.assert_allclose(grads[0], ref_grads[0], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(grads[1], ref_grads[1], rtol=1e-14)
    check_grad(heat, args, wrt=(0, 1), target="cpu", gradfn=lambda *a: g(*a)[1])   # one compile


def test_swap_float32(monkeypatch, tmp_path):
    """float32 working precision (the reset is `np.float32(0.0)`): swapped, gradients equal."""
    u0, kappa, nsteps = _args()
    args = (u0.astype(np.float32), np.float32(kappa), nsteps)
    (on, source_on), (off, _) = _both(heat, args, "python", monkeypatch, tmp_path)
    assert MARK in source_on
    assert on[1][0].dtype == np.float32
    np.testing.assert_array_equal(on[1][0], off[1][0])
    assert on[1][1] == off[1][1]
