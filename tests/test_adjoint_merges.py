"""Merged contributions (srcgrad/adjoint_merges.py): two additions into the same adjoint element in
one block become one (`_adj_u[i] += a` ... `_adj_u[i] += b` -> `_adj_u[i] += a + b`; after a first
contribution `_adj_u[i] = a` ... `+= b` -> `_adj_u[i] = a + b`).

Programs are differentiated with the pass on and off (adjoint_merges.MERGE): the values are equal,
the gradients equal to rounding (the additions are grouped differently), and both match central
finite differences. The pass on its own: the cases where it must not merge.
"""
import ast

import numpy as np
import pytest

import srcgrad
from srcgrad import adjoint_merges
from srcgrad.adjoint_merges import merge_contributions
from conftest import check_grad
from stencil_programs import heat

MARK = "added first: one load and store"


def three_reads(x, w):
    s = 0.0
    u = x.copy()
    for i in range(1, x.shape[0]):
        s += u[i] * w[0] + np.tanh(u[i]) + u[i - 1] * u[i] * w[1]
    return s


def _both(f, args, monkeypatch, tmp_path, target="python"):
    out = []
    for on in (True, False):
        monkeypatch.setattr(adjoint_merges, "MERGE", on)
        monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / str(on)))   # not in the cache key
        g = srcgrad.value_and_grad(f, wrt=(0, 1), target=target)
        out.append((g(*args), g.source_for(*args)))
    monkeypatch.setattr(adjoint_merges, "MERGE", True)
    return out


def _close(on, off):
    assert on[0] == off[0]
    for a, b in zip(on[1], off[1]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-300)


HEAT_ARGS = (np.sin(np.linspace(0.0, 3.0, 9)) + 0.1, 0.2, 3)


@pytest.mark.parametrize("f, args", [
    (heat, HEAT_ARGS),
    (three_reads, (np.linspace(-1.0, 1.0, 6), np.array([0.7, -1.3]))),
])
def test_merged_equals_unmerged(f, args, monkeypatch, tmp_path):
    (on, source_on), (off, source_off) = _both(f, args, monkeypatch, tmp_path)
    assert MARK in source_on and MARK not in source_off
    _close(on, off)
    check_grad(f, args, wrt=(0, 1), target="python")


def test_heat_merges_across_the_first_contribution_guard(monkeypatch, tmp_path):
    """The stencil's two `_adj_u[i]` contributions merge across first_contributions' guarded
    `_adj_u[_t4] = ...` (`_t4 = i - 1`: another slot); the sum loop's first contribution
    `_adj_u[i] = a` and its `+= b` become one `=`."""
    (_, source), _ = _both(heat, HEAT_ARGS, monkeypatch, tmp_path)
    lines = [line.strip() for line in source.splitlines()]
    merged = [next(m for m in lines[k + 1:] if not m.startswith("#"))
              for k, line in enumerate(lines) if MARK in line]
    assert any(m.startswith("_adj_u[i] += ") and " + " in m for m in merged)     # the stencil
    assert any(m.startswith("_adj_u[i] = ") and " + " in m for m in merged)      # the sum
    assert sum(line.startswith("_adj_u[i] +=") for line in lines) == 1
    assert sum(line.startswith("_adj_u[i] = _adj_") for line in lines) == 1


def test_cpu_merged_equals_unmerged(monkeypatch, tmp_path):
    (on, source_on), (off, _) = _both(heat, HEAT_ARGS, monkeypatch, tmp_path, target="cpu")
    assert MARK in source_on
    _close(on, off)
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / "True"))
    check_grad(heat, HEAT_ARGS, wrt=(0, 1), target="cpu",
               gradfn=srcgrad.grad(heat, wrt=(0, 1), target="cpu"))


def _run(text):
    return ast.unparse(ast.Module(body=merge_contributions(ast.parse(text).body), type_ignores=[]))


def test_merges_and_across_other_elements():
    out = _run("_adj_u[i] += a\n_adj_u[j] += c\nb = a * 2.0\n_adj_u[i] += b\n")
    assert out.count("_adj_u[i] +=") == 1 and "_adj_u[i] += a + b" in out
    assert out.index("_adj_u[j] += c") < out.index("_adj_u[i] += a + b")
    # `=` first, then `+=`: one `=`
    assert "_adj_u[i] = a + b" in _run("_adj_u[i] = a\nb = 2.0 * c\n_adj_u[i] += b\n")
    # a write into a slot provably not i (`_t4 = i - 1`), also inside a guard
    text = ("_t4 = i - 1\n_adj_u[i] = a\nif i >= 2:\n    _adj_u[_t4] = c\nelse:\n"
            "    _adj_u[_t4] += c\n_adj_u[i] += b\n")
    assert "_adj_u[i] = a + b" in _run(text)
    assert "_adj_u[i] += a + b" in _run(text.replace("_adj_u[i] = a", "_adj_u[i] += a"))
    assert "_adj_u[i] += a + b" in _run("for i in range(n):\n    _adj_u[i] += a\n    _adj_u[i] += b\n")


@pytest.mark.parametrize("first", ["_adj_u[i] += a + y[k]", "_adj_u[i] = a + y[k]"])
@pytest.mark.parametrize("between", [
    "t = _adj_u[j]",            # a read of the slot (j may be i)
    "t = _adj_u[i]",            # a read of the slot itself
    "_adj_u[j] = 0.0",          # a write into another index that may be i
    "_adj_u[_t4] = 0.0",        # _t4 unknown here
    "i = i - 1",                # the index changed
    "a = 2.0 * a",              # the first contribution changed
    "y[k] = 0.0",               # an array the first contribution reads, written
    "z = g(y)",                 # ... or handed to a call that may write it
    "_adj_u = _adj_v",          # the array rebound
    "_adj_w[i] += _adj_u[j]",   # read as another's contribution
    "if c:\n    _adj_u[j] += 1.0",   # a guarded write that may be the slot (after `=`; a read: +=)
    "for m in range(3):\n    d = 1.0",
])
def test_not_merged(first, between):
    if between.startswith("if c") and "+=" in first:
        between = "if c:\n    _adj_u[j] = 1.0"
    text = f"{first}\n{between}\n_adj_u[i] += b\n"
    assert _run(text).count("_adj_u[i] ") == 2


def test_not_merged_after_assign_across_a_possibly_equal_addition():
    """`X[i] = a; X[j] += c; X[i] += b` with j == i adds c: it must stay in between."""
    assert _run("_adj_u[i] = a\n_adj_u[j] += c\n_adj_u[i] += b\n").count("_adj_u[i] ") == 2
    # offsets that are not provably different: `_t4 = i - 0`, or `_t4` rebound later in the block
    assert _run("_t4 = i - 0\n_adj_u[i] = a\n_adj_u[_t4] = c\n_adj_u[i] += b\n").count("_adj_u[i] ") == 2
    assert _run("_t4 = i - 1\n_adj_u[i] = a\n_t4 = i\n_adj_u[_t4] = c\n_adj_u[i] += b\n"
                ).count("_adj_u[i] ") == 2
    # different index expressions (equal in value) are left alone
    assert _run("_t4 = i + 0\n_adj_u[i] += a\n_adj_u[_t4] += b\n").count("+ b") == 0


@pytest.mark.parametrize("view", ["_view1 = _adj_u[1:]", "_r = _adj_u[i]\n_r[0] = 0.0",
                                  "_adj_v = _adj_u", "_adj_v = f(_adj_u)",
                                  "_adj_u, _adj_v = _adj_w, _adj_u"])
def test_not_merged_when_a_view_or_alias_exists(view):
    """A second path to the array (a view, an alias) could read or reset the element between."""
    text = f"{view}\n_adj_u[i] += a\n_adj_v[i] = 0.0\n_adj_u[i] += b\n"
    assert _run(text).count("_adj_u[i] +=") == 2
    assert _run("_adj_u[i] += a\n_adj_v[i] = 0.0\n_adj_u[i] += b\n").count("_adj_u[i] +=") == 1
    swap = "_adj_u, _adj_v = _adj_v, _adj_u\n"      # a swap shares nothing
    assert _run(swap + "_adj_u[i] += a\nc = 1.0\n_adj_u[i] += b\n").count("_adj_u[i] +=") == 1
    # an array passed in to add into (`shared`): never merged
    assert merge_contributions(ast.parse("_adj_u[i] += a\n_adj_u[i] += b\n").body,
                               {"_adj_u"}).__len__() == 2


def test_switch_off_and_primal_arrays(monkeypatch):
    assert _run("u[i] += a\nu[i] += b\n").count("u[i] +=") == 2
    monkeypatch.setattr(adjoint_merges, "MERGE", False)
    assert _run("_adj_u[i] += a\n_adj_u[i] += b\n").count("_adj_u[i] +=") == 2
