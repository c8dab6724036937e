"""First contributions to adjoint array slots known to be zero are assignments
(srcgrad/first_contributions.py, run inside the zero-slot analysis of adjoint_swaps.py).

Each program is differentiated with the rewrite on and off (first_contributions.ASSIGN_FIRST):
the values and gradients are equal (``0.0 + x`` is ``x``), and they match central finite
differences. The programs after ``heat`` are those where only some contributions may be rewritten
or none: a wider stencil (only the lowest slot is reached first), a reverse loop running up, a
conditional contribution, an adjoint that is not zero at loop entry, a checkpointed loop.
"""

import numpy as np
import pytest

import srcgrad
from srcgrad import first_contributions
from conftest import check_grad
from stencil_programs import heat

MARK = "first contribution: `"


def wide(u0, kappa, nsteps):
    """Five points: running down, slot i - 2 is reached first; i - 1 was written by i + 1."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(2, n - 2):
            un[i] = u[i] + kappa * (u[i - 2] - u[i - 1] + u[i + 1] * u[i + 2])
        for i in range(2, n - 2):
            u[i] = un[i]
    return np.sum(u * u)


def running_up(u0, kappa, nsteps):
    """The stencil written running down: its reverse runs up, slot i + 1 is reached first."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(n - 2, 0, -1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 1):
            u[i] = un[i]
    return np.sum(u * u)


def conditional(u0, kappa, nsteps):
    """The lowest slot's contribution is under a branch: it is not rewritten (and it is a write
    that may reach the other slots first)."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            if u[i] > 0.3:
                un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
            else:
                un[i] = u[i] * u[i + 1]
        for i in range(1, n - 1):
            u[i] = un[i]
    return np.sum(u * u)


def added_before(u0, kappa, nsteps):
    """The copied array also feeds the stencil's value directly: its adjoint is not zero when the
    stencil's reverse starts."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 1):
            u[i] = un[i] + 0.1 * u[i]
    return np.sum(u * u)


def _args(n=8, nsteps=3):
    x = np.linspace(0.0, 1.0, n)
    return (np.sin(np.pi * x) + 0.1 * np.cos(7.0 * x), 0.2, nsteps)


def _both(f, args, monkeypatch, tmp_path, target="python", **options):
    out = []
    for on in (True, False):
        monkeypatch.setattr(first_contributions, "ASSIGN_FIRST", on)
        monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / str(on)))   # not in the cache key
        g = srcgrad.value_and_grad(f, wrt=(0, 1), target=target, **options)
        out.append((g(*args), g.source_for(*args)))
    monkeypatch.setattr(first_contributions, "ASSIGN_FIRST", True)
    return out


def _same(on, off):
    assert on[0] == off[0] or (np.isnan(on[0]) and np.isnan(off[0]))
    for a, b in zip(on[1], off[1]):
        np.testing.assert_array_equal(a, b)


def _rewritten(source):
    """The assignments that replaced a `+=`, as written (after each mark)."""
    lines = source.splitlines()
    out = []
    for k, line in enumerate(lines):
        if MARK in line:
            following = lines[k + 1].strip()
            out.append(lines[k + 2].strip() if following.startswith("if ") else following)
    return out


@pytest.mark.parametrize("f, args, expected", [
    (heat, _args(), 2), (heat, _args(n=3), 2), (heat, _args(nsteps=0), 2),
    (wide, _args(), None),
    (running_up, _args(), None),
    (conditional, _args(), None),
    (added_before, _args(), None),
])
def test_assign_equals_accumulate(f, args, expected, monkeypatch, tmp_path):
    (on, source_on), (off, source_off) = _both(f, args, monkeypatch, tmp_path)
    assert MARK not in source_off
    rewritten = _rewritten(source_on)
    if expected is not None:     # the sum's `_adj_u[i]` (all zero) and the stencil's slot i - 1
        assert len(rewritten) == expected and rewritten[0].startswith("_adj_u[i] = ")
        assert rewritten[1].startswith("_adj_u[_t") and "if i >= 2:" in source_on
    _same(on, off)
    if args[2] > 0:
        check_grad(f, args, wrt=(0, 1), target="python")


def test_which_contributions(monkeypatch, tmp_path):
    """Only the slot a loop reaches first is assigned; the stencil's other slots accumulate."""
    (_, wide_source), _ = _both(wide, _args(), monkeypatch, tmp_path / "wide")
    stencil = [line for line in _rewritten(wide_source) if "_adj_u[" in line and "[i]" not in line]
    assert len(stencil) == 1                     # i - 2 only (not i - 1, i + 1, i + 2)
    (_, cond_source), _ = _both(conditional, _args(), monkeypatch, tmp_path / "cond")
    assert all("[i]" in line for line in _rewritten(cond_source))   # not the stencil's neighbours
    (_, before_source), _ = _both(added_before, _args(), monkeypatch, tmp_path / "before")
    assert "_adj_t5" not in "".join(_rewritten(before_source))


def _rewrite_loop(source, zero):
    """The pass on one loop written out (``A`` a candidate zero on ``zero`` at loop entry)."""
    import ast
    from srcgrad import adjoint_swaps
    stmts = ast.parse(source).body
    facts = adjoint_swaps._Facts(stmts, {"n", "x", "y", "z"})
    if zero != adjoint_swaps.ALL:       # (lo, hi) as the linear forms of the slots' expressions
        zero = (adjoint_swaps._frozen(facts.linear(ast.parse(zero[0]).body[0].value)),
                adjoint_swaps._frozen(facts.linear(ast.parse(zero[1]).body[0].value)))
    loop = first_contributions.assign_first_contributions(
        stmts[-1], {"A": frozenset([zero])}, {"A": "origin"}, facts)
    return [ast.unparse(s) for s in loop.body if not hasattr(s, "text")]


def test_running_up_and_down():
    """Running down the slot reached first is the lowest offset, running up the highest; a
    zero region short of the slots visited puts the iterations outside it under a guard."""
    from srcgrad import adjoint_swaps
    body = "    _t9 = i + 1\n    _t4 = i - 1\n    A[_t9] += x\n    A[i] += y\n    A[_t4] += z\n"
    down = _rewrite_loop("m = n - 1\nfor i in range(m - 1, 0, -1):\n" + body, adjoint_swaps.ALL)
    assert down[2:] == ["A[_t9] += x", "A[i] += y", "A[_t4] = z"]
    up = _rewrite_loop("m = n - 1\nfor i in range(1, m, 1):\n" + body, adjoint_swaps.ALL)
    assert up[2:] == ["A[_t9] = x", "A[i] += y", "A[_t4] += z"]
    guarded = _rewrite_loop("m = n - 1\nfor i in range(1, m, 1):\n" + body, ("1", "n - 2"))
    assert guarded[2].startswith("if i <= m - 1 - 1:") or guarded[2].startswith("if i <= ")
    assert "A[_t9] = x" in guarded[2] and "A[_t9] += x" in guarded[2]
    # a write at a lower offset than the first-reached slot's, running up: nothing rewritten
    late = _rewrite_loop("m = n - 1\nfor i in range(1, m, 1):\n" + body.replace("A[i] += y", "A[_t4] += y"),
                         adjoint_swaps.ALL)
    assert late[2] == "A[_t9] = x" and late[3:] == ["A[_t4] += y", "A[_t4] += z"]
    # running down to i = 0: slot i - 1 would be slot -1, the last one, reached first as slot i
    wraps = _rewrite_loop("m = n - 1\nfor i in range(m, -1, -1):\n    _t4 = i - 1\n    A[i] += y\n"
                          "    A[_t4] += z\n", adjoint_swaps.ALL)
    assert wraps[1:] == ["A[i] += y", "A[_t4] += z"]    # (and slot i is i + 1's slot i + 1 - 1)
    reread = _rewrite_loop("m = n - 1\nfor i in range(1, m, 1):\n    _t9 = i + 1\n    A[i] += y\n"
                           "    A[_t9] += A[i]\n", adjoint_swaps.ALL)
    assert reread[1:] == ["A[i] += y", "A[_t9] += A[i]"]   # slot i was i - 1's slot i - 1 + 1


def test_nan_and_checkpoint(monkeypatch, tmp_path):
    u0 = _args()[0].copy()
    u0[3] = np.nan
    (on, _), (off, _) = _both(heat, (u0, 0.2, 3), monkeypatch, tmp_path / "nan")
    assert np.isnan(on[1][0]).any()
    _same(on, off)
    args = _args(nsteps=7)
    (on, _), (off, _) = _both(heat, args, monkeypatch, tmp_path / "ck", checkpoint=3)
    _same(on, off)
    plain = srcgrad.value_and_grad(heat, wrt=(0, 1), target="python")(*args)
    np.testing.assert_allclose(on[1][0], plain[1][0], rtol=1e-12, atol=1e-14)


def test_assign_first_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path))
    args = _args(n=9, nsteps=4)
    g = srcgrad.value_and_grad(heat, wrt=(0, 1), target="cpu")
    value, grads = g(*args)
    assert MARK in g.source_for(*args)
    reference = srcgrad.value_and_grad(heat, wrt=(0, 1), target="python")(*args)
    assert abs(value - reference[0]) <= 1e-12 * abs(reference[0])
    for a, b in zip(grads, reference[1]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    check_grad(heat, args, wrt=(0, 1), target="cpu",
               gradfn=srcgrad.grad(heat, wrt=(0, 1), target="cpu"))
