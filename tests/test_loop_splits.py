"""Loop splits and reduction lanes (srcgrad/loop_splits.py, srcgrad/reduction_lanes.py).

A reverse loop adding into neighbouring slots of one adjoint array runs as several passes (the
values bit for bit those of the one loop), and a scalar adjoint only added into inside a loop
whose iterations are otherwise independent is kept per iteration slot and summed once (the same
sum in another order: equal to 1e-12). Each is checked on the heat stencil against the gradient
with the switch off and finite differences (python and cpu), on loops written out (run before and
after the rewrite), and where it must not apply: an index that is not the loop variable plus a
constant, a call, a temporary read after the loop, an array another name may hold, a cycle of
dependences, a scalar read in the loop or elsewhere in the statement around it, a loop variable
that may be negative, a data-dependent exit.
"""
import ast

import numpy as np
import pytest

import srcgrad
from srcgrad import codegen, loop_splits, reduction_lanes
from conftest import check_grad
from stencil_programs import heat

SPLIT = "loop split:"
LANES = "reduction lanes:"


def _args(n=9, nsteps=4):
    x = np.linspace(0.0, 1.0, n)
    return (np.sin(np.pi * x) + 0.1 * np.cos(7.0 * x), 0.2, nsteps)


def _gradients(f, args, monkeypatch, tmp_path, target, split, lanes, wrt=(0, 1)):
    monkeypatch.setattr(loop_splits, "SPLIT_LOOPS", split)
    monkeypatch.setattr(reduction_lanes, "REDUCTION_LANES", lanes)
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / f"{target}{split}{lanes}"))  # not in the key
    g = srcgrad.value_and_grad(f, wrt=wrt, target=target)
    return g(*args), g.source_for(*args)


def _close(a, b, rtol):
    np.testing.assert_allclose(a[0], b[0], rtol=rtol, atol=0)
    for x, y in zip(a[1], b[1]):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-300)


@pytest.mark.parametrize("args", [_args(), _args(n=3), _args(n=4, nsteps=1), _args(nsteps=0)])
def test_heat_python(args, monkeypatch, tmp_path):
    off, source_off = _gradients(heat, args, monkeypatch, tmp_path, "python", False, False)
    split, source_split = _gradients(heat, args, monkeypatch, tmp_path, "python", True, False)
    both, source = _gradients(heat, args, monkeypatch, tmp_path, "python", True, True)
    assert SPLIT not in source_off and LANES not in source_off and LANES not in source_split
    assert SPLIT in source_split and SPLIT in source and LANES in source
    assert split[0] == off[0]
    for a, b in zip(split[1], off[1]):             # the split alone: the same values bit for bit
        np.testing.assert_array_equal(a, b)
    _close(both, off, 1e-12)
    if args[2] > 0:
        check_grad(heat, args, wrt=(0, 1), target="python")


def test_heat_cpu(monkeypatch, tmp_path):
    args = _args(n=16, nsteps=5)
    off, _ = _gradients(heat, args, monkeypatch, tmp_path, "cpu", False, False)
    on, source = _gradients(heat, args, monkeypatch, tmp_path, "cpu", True, True)
    assert SPLIT in source and LANES in source
    _close(on, off, 1e-12)
    check_grad(heat, args, wrt=(0, 1), target="cpu")
    u0 = args[0].copy()
    u0[5] = np.nan                                   # NaN in, NaN out
    nan_on, _ = _gradients(heat, (u0, 0.2, 5), monkeypatch, tmp_path, "cpu", True, True)
    assert np.isnan(nan_on[1][1]) and np.isnan(nan_on[1][0]).any()


def recurrence(u0, kappa, nsteps):
    """A scalar carried through the inner loop: its adjoint is read in the reverse loop."""
    n = u0.shape[0]
    u = u0.copy()
    c = 0.0
    for t in range(nsteps):
        for i in range(1, n - 1):
            c = c * kappa + u[i]
            u[i] = u[i] + 0.1 * c * u[i + 1]
    return np.sum(u * u) + c


def early_exit(u0, kappa, nsteps):
    """The stencil's sweep stops at a slot that depends on the data."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            if u[i] > 0.95:
                break
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 1):
            u[i] = un[i]
    return np.sum(u * u)


def taped(u0, kappa, nsteps):
    """Overwritten values on the tape: the reverse loop pops them in order (nothing moves)."""
    n = u0.shape[0]
    u = u0.copy()
    for t in range(nsteps):
        for i in range(n):
            u[i] = u[i] * kappa + 0.1
    return np.sum(u * u)


@pytest.mark.parametrize("f", [recurrence, early_exit, taped])
def test_where_lanes_do_not_apply(f, monkeypatch, tmp_path):
    args = _args(n=8, nsteps=3)
    off, _ = _gradients(f, args, monkeypatch, tmp_path, "python", False, False)
    on, source = _gradients(f, args, monkeypatch, tmp_path, "python", True, True)
    assert LANES not in source and (f is not taped or SPLIT not in source)
    _close(on, off, 1e-12)
    check_grad(f, args, wrt=(0, 1), target="python")


# -- loops written out: the rewrite run on them, the code run before and after --------------------

HEAD = "_adj_A = np.zeros_like(x)\n_adj_B = np.zeros_like(x)\n_adj_s = 0.0\n"
STENCIL = ("for i in range(m - 1, 0, -1):\n"
           "    _t4 = i - 1\n    _t9 = i + 1\n    a = _adj_B[i]\n    _adj_B[i] = 0.0\n"
           "    _adj_s += a * (x[_t4] - x[_t9])\n    _adj_A[_t9] += a * 0.5\n    _adj_A[_t4] += a\n    _adj_A[i] -= 2.0 * a\n")


def _rewrite(source, lanes=False, split=True):
    stmts = ast.parse(source).body
    tail = ast.parse("return _adj_A, _adj_B, _adj_s").body
    out = loop_splits.split_loops(stmts, {"_adj_s"}, tail) if split else stmts
    if lanes:
        out = reduction_lanes.add_lanes(out, {"_adj_s"}, tail)
    return codegen.function_source("f", ["x", "m"], out + tail,
                                   decorator=None)


def _run(source, x, m, before=None):
    namespace = {"np": np}
    code = source if source.startswith("def ") else \
        "def f(x, m):\n" + "".join("    " + line + "\n" for line in source.splitlines()) + \
        "    return _adj_A, _adj_B, _adj_s\n"
    exec(compile(code, "<loop>", "exec"), namespace)
    return namespace["f"](x, m) if before is None else namespace["f"](x, m, *before)


def _loops(source):
    return sum(1 for node in ast.walk(ast.parse(source)) if isinstance(node, ast.For))


def _random_b(source):
    """The code with _adj_B filled with random values first (the stencil reads it)."""
    return source.replace("_adj_B = np.zeros_like(x)\n", "_adj_B = np.zeros_like(x)\nfor k in range(x.shape[0]):\n"
                          "    _adj_B[k] = np.cos(x[k] * 3.0)\n")


def test_split_stencil_runs_the_same():
    x = np.linspace(0.1, 2.0, 11)
    source = _random_b(HEAD + STENCIL)
    split = _rewrite(source)
    assert SPLIT in split and _loops(split) == _loops(source) + 2
    for m in (10, 3, 2, 1):
        got, want = _run(split, x, m), _run(source, x, m)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    lanes = _rewrite(source, lanes=True)
    assert LANES in lanes and "_adj_s_lanes[i] += " in lanes
    for m in (10, 3, 1, 12):       # m = 12: past B.s length: the loop runs as it was (IndexError)
        try:
            want = _run(source, x, m)
        except IndexError:
            with pytest.raises(IndexError):
                _run(lanes, x, m)
            continue
        got = _run(lanes, x, m)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[2], want[2], rtol=1e-12)


def test_split_orders_passes_by_dependence():
    """Running down, slot i - 1 is first reached by ``_adj_A[_t4]``, then ``_adj_A[i]``, then ``_adj_A[_t9]``:
    the passes run in that order whatever the body's order; running up, the other way."""
    split = _rewrite(HEAD + STENCIL)
    loops = [node for node in ast.parse(split).body[0].body if isinstance(node, ast.For)]
    writes = [[ast.unparse(s.target) for s in loop.body if isinstance(s, ast.AugAssign)] for loop in loops]
    assert writes == [["_adj_s", "_adj_A[_t4]"], ["_adj_A[i]"], ["_adj_A[_t9]"]]
    up = _rewrite(HEAD + STENCIL.replace("range(m - 1, 0, -1)", "range(1, m - 1)"))
    loops = [node for node in ast.parse(up).body[0].body if isinstance(node, ast.For)]
    writes = [[ast.unparse(s.target) for s in loop.body if isinstance(s, ast.AugAssign)] for loop in loops]
    assert writes == [["_adj_s", "_adj_A[_t9]"], ["_adj_A[i]"], ["_adj_A[_t4]"]]
    x = np.linspace(0.1, 2.0, 9)
    source = _random_b(HEAD + STENCIL.replace("range(m - 1, 0, -1)", "range(1, m - 1)"))
    for a, b in zip(_run(_rewrite(source), x, 9), _run(source, x, 9)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("change", [
    ("    _adj_A[_t9] += a * 0.5\n", "    j = int(x[i] * 3.0)\n    _adj_A[j] += a * 0.5\n"),      # index unknown
    ("    _adj_A[_t9] += a * 0.5\n", "    _adj_A[_t9] += print(a)\n"),                             # a call
    ("    _adj_A[i] -= 2.0 * a\n", "    _adj_A[i] -= 2.0 * a\n    _adj_A[:] += 0.0\n"),                   # whole array
    ("_adj_A = np.zeros_like(x)\n", "_adj_A = np.zeros_like(x)\nC = _adj_A\n"),                          # another name
    ("    _adj_A[_t4] += a\n", "    _adj_A[_t4] += a\n    x[_t9] += a\n"),                           # not owned
    ("    _adj_A[_t9] += a * 0.5\n", "    _adj_A[_t9] += _adj_B[i]\n    _adj_B[_t9] += _adj_A[i]\n"),              # a cycle
    ("    _adj_s += a * (x[_t4] - x[_t9])\n", "    _adj_C += a * x\n"),                     # not a scalar
])
def test_split_does_not_apply(change):
    source = (HEAD + STENCIL).replace(*change)
    assert source != HEAD + STENCIL
    assert SPLIT not in _rewrite(source)


def test_split_keeps_a_temporary_read_after_the_loop():
    source = HEAD + STENCIL + "_adj_s += a\n"
    assert SPLIT not in _rewrite(source)


def test_lanes_do_not_apply():
    independent = (HEAD + "for i in range(m - 1, -1, -1):\n    a = _adj_B[i]\n    _adj_s += a * x[i]\n"
                   "    _adj_A[i] += a\n")
    assert LANES in _rewrite(independent, lanes=True)
    cases = [
        independent.replace("    _adj_s += a * x[i]\n", "    _adj_s += a * x[i]\n    _adj_A[i] += _adj_s\n"),  # s read
        independent.replace("range(m - 1, -1, -1)", "range(m - 1, -2, -1)"),              # i = -1
        independent.replace("range(m - 1, -1, -1)", "range(-1, m)"),
        independent.replace("    _adj_A[i] += a\n", "    _adj_A[i] += a\n    _adj_A[i - 1] += a\n"),       # chained
        "for t in range(3):\n    _adj_s = _adj_s * 0.5\n" +                                           # s read
        "".join("    " + line + "\n" for line in independent[len(HEAD):].splitlines()),
    ]
    for source in cases[:4]:         # (the chained slots: the lanes alone, without the split)
        assert LANES not in _rewrite(source, lanes=True, split=False), source
    assert LANES in _rewrite(cases[3], lanes=True)      # split first: the `_adj_A[i]` pass has them
    assert LANES not in _rewrite(HEAD + cases[4], lanes=True)
    x = np.linspace(0.1, 2.0, 7)
    lanes = _rewrite(_random_b(independent), lanes=True)
    got, want = _run(lanes, x, 7), _run(_random_b(independent), x, 7)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[2], want[2], rtol=1e-12)


def test_forward_passes():
    """A pass whose iterations touch disjoint slots runs forwards (the same values, tested above
    and here); the pass with the sum keeps its order, and nothing runs forwards where the loop
    variable is read after the loop."""
    source = _random_b(HEAD + STENCIL)
    split = _rewrite(source)
    ranges = [ast.unparse(node.iter) for node in ast.walk(ast.parse(split)) if isinstance(node, ast.For)
              and node.target.id == "i"]
    assert ranges == ["range(m - 1, 0, -1)", "range(1, m)", "range(1, m)"]
    x = np.linspace(0.1, 2.0, 11)
    for m in (10, 2, 1, 0):
        for a, b in zip(_run(split, x, m), _run(source, x, m)):
            np.testing.assert_array_equal(a, b)
    lanes = _rewrite(source, lanes=True)       # the sum in lanes: that pass runs forwards too
    assert "for i in range(1, m):\n            # " in lanes and "_adj_s_lanes[i] += " in lanes
    after = _rewrite(source + "_adj_s += i\n")
    assert SPLIT in after and "range(1, m)" not in after
    assert not loop_splits.independent([("A", 0, True, 0), ("A", 1, False, 1)])
    assert loop_splits.independent([("A", 0, True, 0), ("A", 0, False, 1), ("B", 1, False, 2)])
    assert ast.unparse(loop_splits.forward_range(ast.parse("range(n, -1, -1)").body[0].value)) == \
        "range(0, n + 1)"
