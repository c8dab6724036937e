"""unsigned_index.py: reversed ``range(stop - 1, -1, -1)`` loops index arrays with np.uint64 copies
of their loop variables (cpu target); the gradient equals the signed one and finite differences."""
import ast
import math

import numpy as np

import srcgrad
from srcgrad import unsigned_index
from srcgrad.unsigned_index import unsigned_index as rewrite
from conftest import check_grad


def _rewritten(src, arrays=("a", "b"), taken=frozenset()):
    body = ast.parse(src).body
    out = rewrite(body, set(arrays).__contains__, taken)
    return "\n".join(ast.unparse(s) if not isinstance(s, unsigned_index.Comment) else "# " + s.text
                     for s in out)


def test_descending_loop_to_zero_indexes_unsigned():
    text = _rewritten("for j in range(n - 1, -1, -1):\n    a[k, j] += b[j] * c\n    t = j - 1\n")
    assert "_u_j = np.uint64(j)" in text
    assert "a[k, _u_j] += b[_u_j] * c" in text
    assert "t = j - 1" in text                   # arithmetic stays signed
    assert "never negative" in text


def test_cases_it_must_not_rewrite():
    # stops above zero (values may still be >= 0, but the rule only trusts range(e, -1, -1))
    assert "_u_" not in _rewritten("for j in range(n - 1, 0, -1):\n    a[j] += 1.0\n")
    # ascending loops: LLVM already proves them non-negative
    assert "_u_" not in _rewritten("for j in range(0, n, 1):\n    a[j] += 1.0\n")
    # the body rebinds the loop variable
    assert "_u_" not in _rewritten("for j in range(n - 1, -1, -1):\n    j = j - 5\n    a[j] += 1.0\n")
    # not an array (a tuple, a list): left signed
    assert "_u_" not in _rewritten("for j in range(n - 1, -1, -1):\n    s += shape[j]\n")
    # an index expression, not the bare variable
    assert "_u_" not in _rewritten("for j in range(n - 1, -1, -1):\n    a[j - 1] += 1.0\n")
    # the unsigned name is taken elsewhere in the function
    assert "_u_" not in _rewritten("for j in range(n - 1, -1, -1):\n    a[j] += 1.0\n",
                                   taken={"_u_j"})


def carried(Q, x):
    """Reverse loops that stay backwards (carried adjoints, tape pops) and index 2-D arrays."""
    n, d = x.shape
    total = 0.0
    for i in range(n):
        s = 0.0
        for j in range(d):
            s = s * 0.5 + math.exp(Q[j, 0]) * x[i, j]
            for l in range(j):
                s += Q[j, l + 1] * x[i, l]
        total += s * s
    t = 0.0
    for j in range(d):
        t = t * 0.9 + math.sin(Q[j, j])
    return total + t


def _value_and_grad(monkeypatch, tmp_path, on):
    monkeypatch.setattr(unsigned_index, "UNSIGNED_INDEX", on)
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / ("on" if on else "off")))
    g = srcgrad.value_and_grad(carried, wrt=(0, 1), target="cpu")
    rng = np.random.default_rng(3)
    args = (rng.normal(size=(4, 5)) * 0.5, rng.normal(size=(3, 4)))
    return g(*args), g.source_for(*args), args


def test_cpu_gradient_equals_signed_and_finite_differences(monkeypatch, tmp_path):
    (v_on, g_on), src_on, args = _value_and_grad(monkeypatch, tmp_path, True)
    (v_off, g_off), src_off, _ = _value_and_grad(monkeypatch, tmp_path, False)
    assert "np.uint64(j)" in src_on and "np.uint64(i)" in src_on
    assert "np.uint64" not in src_off
    np.testing.assert_allclose(v_on, v_off, rtol=1e-13)
    for a, b in zip(g_on, g_off):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    monkeypatch.setattr(unsigned_index, "UNSIGNED_INDEX", True)
    check_grad(carried, args, wrt=(0, 1), gradfn=lambda *a: g_on)


def test_python_target_keeps_signed_indices(monkeypatch, tmp_path):
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / "py"))
    g = srcgrad.value_and_grad(carried, wrt=(0, 1), target="python")
    rng = np.random.default_rng(3)
    args = (rng.normal(size=(4, 5)) * 0.5, rng.normal(size=(3, 4)))
    assert "np.uint64" not in g.source_for(*args)
    check_grad(carried, args, wrt=(0, 1), target="python")
