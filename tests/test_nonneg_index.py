"""nonneg_index.py: array subscripts by names that are never negative (sums and products of shapes,
counters, loop variables) are written with np.uint64 (cpu target); the gradient equals the signed
one and finite differences; names it must not trust stay signed."""
import ast
import math

import numpy as np

import srcgrad
from srcgrad import nonneg_index
from srcgrad.nonneg_index import nonnegative_names, nonneg_index as rewrite
from conftest import check_grad


def _names(src, params=()):
    return nonnegative_names(ast.parse(src).body, set(params))


def _rewritten(src, arrays=("a", "b"), params=()):
    body = ast.parse(src).body
    (out,) = rewrite([body], set(arrays).__contains__, set(params), 7)
    return "\n".join("# " + s.text if isinstance(s, nonneg_index.Comment) else ast.unparse(s)
                     for s in out)


def test_shapes_loop_variables_and_their_sums_are_never_negative():
    src = ("s = x.shape\nH = s[0]\nD = x.shape[1]\nn = len(x)\n"
           "for j in range(0, H, 1):\n    r = 2 * H + j\n    q = r // 2\n"
           "    for k in range(H - 1, -1, -1):\n        c = D + k\n")
    assert _names(src) >= {"H", "D", "n", "j", "r", "q", "k", "c"}
    text = _rewritten(src + "        a[r, c] += b[q] * b[k]\n        a[j, 0] = 1.0\n")
    assert "a[np.uint64(r), np.uint64(c)] += b[np.uint64(q)] * b[np.uint64(k)]" in text
    assert "a[np.uint64(j), 0] = 1.0" in text
    assert text.startswith("# indices c, j, k, q, r are never negative")
    assert "r = 2 * H + j" in text                     # the arithmetic stays signed


def test_a_counter_incremented_from_zero_is_never_negative():
    assert "p" in _names("p = 0\nfor i in range(0, n, 1):\n    p = p + 2\n")
    assert "p" in _names("p = 0\nwhile p < 10:\n    p += 1\n")


def test_names_it_must_not_trust():
    # a parameter (even reassigned from non-negative values), subtraction, a negative literal
    assert "i" not in _names("i = i + 1\n", params=("i",))
    assert "m" not in _names("m = n - 1\n")
    assert "m" not in _names("m = -1\n")
    assert "m" not in _names("m = 0 * -1\n")
    # one negative binding among non-negative ones
    assert "m" not in _names("m = 3\nif c:\n    m = k - 4\n")
    # a float, a bool, tuple unpacking, a loop over anything but such a range
    assert "m" not in _names("m = 2.0\n")
    assert "m" not in _names("m = True\n")
    assert "m" not in _names("m, q = 1, 2\n")
    assert "v" not in _names("for v in range(-3, n, 1):\n    pass\n")
    assert "v" not in _names("for v in range(n, 0, -2):\n    pass\n")
    assert "v" not in _names("for v in items:\n    pass\n")
    assert "v" not in _names("for v in range(0, n, 1):\n    v = v - 5\n")
    # a counter that goes down; an element of an array (values may be negative)
    assert "p" not in _names("p = 5\nfor i in range(0, n, 1):\n    p -= 1\n")
    assert "p" not in _names("p = a[0]\n")
    # not an array (a tuple of shapes): left as it is; subscripts by other names too
    text = _rewritten("s = x.shape\nfor j in range(0, 3, 1):\n    t = s[j]\n    a[j - 1] += 1.0\n")
    assert "np.uint64" not in text and "never negative" not in text


def test_differences_bounded_by_the_enclosing_loops():
    # the ADBench triangular index: d + l * (2 * d - l - 1) // 2 + (j - l - 1) inside
    # for l in range(j), j < d (forward or reversed loop over j)
    for j_loop in ("range(0, d, 1)", "range(d - 1, -1, -1)"):
        src = (f"d = x.shape[1]\nfor j in {j_loop}:\n    for l in range(0, j, 1):\n"
               "        a = 2 * d\n        b = a - l\n        c = b - 1\n        e = l * c\n"
               "        f = e // 2\n        g = d + f\n        h = j - l\n        m = h - 1\n"
               "        idx = g + m\n")
        assert {"b", "c", "e", "f", "g", "h", "m", "idx"} <= _names(src), j_loop
    base = "d = x.shape[1]\nfor j in range(0, d, 1):\n    for l in range(0, j, 1):\n"
    # bounds that do not hold: j - l - 2 (l = j - 1), d - l - j, j - 1 (j = 0)
    assert "q" not in _names(base + "        h = j - l\n        q = h - 2\n")
    assert "q" not in _names(base + "        q = d - l - j\n")
    assert "q" not in _names(base + "        pass\n    q = j - 1\n")
    # the loop body rebinds the bound: j changes inside the loop over l
    assert "q" not in _names(base + "        q = j - l\n        j = 0\n")
    # the stop of the loop over l changes after the loop's start: l < j still, not l < s
    changed = "d = x.shape[1]\nfor j in range(0, d, 1):\n    s = j\n    for l in range(0, s, 1):\n        s = 0\n"
    assert "q" in _names(changed + "        q = j - l\n")
    assert "q" not in _names(changed + "        q = s - l\n")
    # a name assigned before the subtraction is reassigned in between
    assert "q" not in _names(base + "        a = 2 * d\n        a = l - 9\n        q = a - l\n")
    # l < m = n - 9 does bound n - l; an unknown m (an array element) does not
    assert "q" in _names("n = x.shape[0]\nwhile c:\n    m = n - 9\n"
                         "    for l in range(0, m, 1):\n        q = n - l\n")
    assert "q" not in _names("n = x.shape[0]\nwhile c:\n    m = a[0]\n"
                             "    for l in range(0, m, 1):\n        q = n - l\n")


def lstm(W, b, xs):
    """Computed row and column indices (H + j, D + k) in both sweeps, as in the LSTM benchmark."""
    T, D = xs.shape
    H = b.shape[0] // 2
    h = np.zeros(H)
    loss = 0.0
    for t in range(T):
        for j in range(H):
            zi = b[j]
            zg = b[H + j]
            for k in range(D):
                zi += W[j, k] * xs[t, k]
                zg += W[H + j, k] * xs[t, k]
            for k in range(H):
                zi += W[j, D + k] * h[k]
                zg += W[H + j, D + k] * h[k]
            h[j] = math.tanh(zg) / (1.0 + math.exp(-zi))
        loss += h[0] * h[H - 1]
    return loss


def _args():
    rng = np.random.default_rng(5)
    T, D, H = 3, 2, 3
    return (0.5 * rng.standard_normal((2 * H, D + H)), 0.3 * rng.standard_normal(2 * H),
            rng.standard_normal((T, D)))


def _value_and_grad(monkeypatch, tmp_path, on, target):
    monkeypatch.setattr(nonneg_index, "NONNEG_INDEX", on)
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / f"{target}-{on}"))
    g = srcgrad.value_and_grad(lstm, wrt=(0, 1), target=target)
    return g(*_args()), g.source_for(*_args())


def test_cpu_gradient_equals_signed_and_finite_differences(monkeypatch, tmp_path):
    (v_on, g_on), src_on = _value_and_grad(monkeypatch, tmp_path, True, "cpu")
    (v_off, g_off), src_off = _value_and_grad(monkeypatch, tmp_path, False, "cpu")
    assert "np.uint64(_t" in src_on and "are never negative" in src_on
    assert "are never negative" not in src_off
    np.testing.assert_allclose(v_on, v_off, rtol=1e-13)
    for a, b in zip(g_on, g_off):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    check_grad(lstm, _args(), wrt=(0, 1), gradfn=lambda *a: g_on)


def test_python_target_is_left_signed(monkeypatch, tmp_path):
    (v_py, g_py), src_py = _value_and_grad(monkeypatch, tmp_path, True, "python")
    assert "never negative" not in src_py
    check_grad(lstm, _args(), wrt=(0, 1), gradfn=lambda *a: g_py)


def test_nan_in_nan_out(monkeypatch, tmp_path):
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / "nan"))
    W, b, xs = _args()
    xs[1, 0] = np.nan
    v, (gW, gb) = srcgrad.value_and_grad(lstm, wrt=(0, 1), target="cpu")(W, b, xs)
    assert np.isnan(v) and np.isnan(gW).any() and np.isnan(gb).any()


def triangular(icf, x):
    """The ADBench GMM's packed lower triangle: icf[k, d + l * (2 * d - l - 1) // 2 + (j - l - 1)]."""
    K = icf.shape[0]
    d = x.shape[0]
    total = 0.0
    for k in range(K):
        for j in range(d):
            s = math.exp(icf[k, j]) * x[j]
            for l in range(j):
                s += icf[k, d + l * (2 * d - l - 1) // 2 + (j - l - 1)] * x[l]
            total += s * s
    return total


def test_cpu_triangular_index_equals_signed_and_finite_differences(monkeypatch, tmp_path):
    rng = np.random.default_rng(8)
    d = 4
    args = (0.3 * rng.standard_normal((2, d + d * (d - 1) // 2)), rng.standard_normal(d))
    out = {}
    for on in (True, False):
        monkeypatch.setattr(nonneg_index, "NONNEG_INDEX", on)
        monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / f"tri-{on}"))
        g = srcgrad.value_and_grad(triangular, wrt=(0, 1), target="cpu")
        out[on] = (g(*args), g.source_for(*args))
    (v_on, g_on), src_on = out[True]
    (v_off, g_off), _ = out[False]
    assert "are never negative" in src_on
    adjoint = src_on.split("def triangular_adjoint")[1]
    # the packed index (a difference: j - l - 1) is unsigned in both sweeps
    assert adjoint.count("icf[_u_k, np.uint64(_t") + adjoint.count("icf[np.uint64(k), np.uint64(_t") >= 2
    np.testing.assert_allclose(v_on, v_off, rtol=1e-13)
    for a, b in zip(g_on, g_off):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    check_grad(triangular, args, wrt=(0, 1), gradfn=lambda *a: g_on)
