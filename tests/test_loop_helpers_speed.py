"""Loop-speed transformations for helpers called in loops (issue #18, the GMM with @njit helpers).

Each optimization has a switch in ``srcgrad.transform``; every test compares the gradient with the
switch on and off (to rounding), checks the comment the optimization leaves in the generated
adjoint, and checks central finite differences, on the python target and a compiled subset.
"""
import math

import numba
import numpy as np
import pytest
from scipy.special import logsumexp as scipy_logsumexp

import srcgrad
from srcgrad import transform
from conftest import check_grad
from srcgrad import inline


@pytest.fixture(autouse=True)
def _helpers_stay_calls(monkeypatch):
    """These tests are about helper adjoints: the helpers stay calls (srcgrad.inline would write
    the small ones into their callers; tests/test_inline_hoist.py covers that)."""
    monkeypatch.setattr(inline, "INLINE_HELPERS", False)


def _both(f, args, wrt, target, monkeypatch, tmp_path, switch):
    """((value, grads), source) with ``switch`` on, then off (each in its own code cache)."""
    results = []
    for on in (True, False):
        monkeypatch.setattr(transform, switch, on)
        monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / f"{switch}-{on}"))
        g = srcgrad.value_and_grad(f, wrt=wrt, target=target)
        results.append((g(*args), g.source_for(*args)))
    return results


def _code(source):
    """``source`` without its comment lines (they quote the user's lines)."""
    return "\n".join(line for line in source.splitlines() if not line.strip().startswith("#"))


def _close(a, b):
    (va, ga), (vb, gb) = a, b
    assert np.isclose(va, vb, rtol=1e-12, atol=0)
    ga = ga if isinstance(ga, tuple) else (ga,)
    gb = gb if isinstance(gb, tuple) else (gb,)
    for x, y in zip(ga, gb):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


# -- programs: helpers called in loops, nested loops, loop-invariant values --------------------

@numba.njit
def quad_row(Q, mu, x, k, i):
    """A GMM-like term: exp of a loop value (its derivative reads it), a nested loop."""
    sq = 0.0
    for j in range(x.shape[1]):
        s = math.exp(Q[k, j]) * (x[i, j] - mu[k, j])
        for l in range(j):
            s += Q[k, l] * (x[i, l] - mu[k, l])
        sq += s * s
    return sq


@numba.njit
def lse(v):
    mx = -1e30
    for k in range(v.shape[0]):
        if v[k] > mx:
            mx = v[k]
    se = 0.0
    for k in range(v.shape[0]):
        se += math.exp(v[k] - mx)
    return mx + math.log(se)


def mixture(a, Q, mu, x, scale):
    n = x.shape[0]
    K = a.shape[0]
    main = np.empty(K)
    total = 0.0
    c = math.log(scale)               # loop-invariant value, read inside the loops
    for i in range(n):
        for k in range(K):
            main[k] = a[k] - 0.5 * quad_row(Q, mu, x, k, i) + c
        total += lse(main)
    return total - n * lse(a)


def tanh_chain(w, x):
    """A recurrence whose step is transcendental (the state is carried), a value derived from the
    taped one (u = t * w[i]: a recomputation that reads it), and np.sin of a scalar."""
    h = 0.5
    acc = 0.0
    for i in range(x.shape[0]):
        t = math.tanh(w[i] * h + x[i])
        u = t * w[i]
        h = t + 0.1 * np.sin(u)
        acc += u * u
    return acc + h


def exp_sum(x):
    """The last loop only sums into the result: the joint sweep fuses it (nothing taped)."""
    s = 0.0
    for i in range(x.shape[0]):
        e = math.exp(x[i])
        s += e * x[i]
    return s


def _mixture_args(seed=0, n=5, K=3, d=3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(K), 0.3 * rng.standard_normal((K, d)), rng.standard_normal((K, d)),
            rng.standard_normal((n, d)), 1.7)


# -- transcendental loop values are taped, not recomputed ----------------------------------------

def test_transcendentals_taped_in_helpers(monkeypatch, tmp_path):
    args = _mixture_args()
    (on, src_on), (off, src_off) = _both(mixture, args, (0, 1, 2), "python", monkeypatch, tmp_path,
                                         "TAPE_TRANSCENDENTALS")
    _close(on, off)
    note = "taped in the forward sweep, not recomputed here"
    helper_on = src_on[src_on.index("def quad_row_adjoint"):]
    helper_off = src_off[src_off.index("def quad_row_adjoint"):]
    assert note in helper_on and note not in src_off
    # the reverse loop no longer calls exp; the unoptimized one recomputes it there
    reverse_on = _code(helper_on[helper_on.index("_value = sq"):helper_on.index("return _value")])
    reverse_off = _code(helper_off[helper_off.index("_value = sq"):helper_off.index("return _value")])
    assert "math.exp(" not in reverse_on and "math.exp(" in reverse_off
    check_grad(mixture, args, wrt=(0, 1, 2), target="python")


def test_transcendental_recurrence(monkeypatch, tmp_path):
    rng = np.random.default_rng(1)
    args = (rng.standard_normal(7), rng.standard_normal(7))
    (on, src_on), (off, _) = _both(tanh_chain, args, (0, 1), "python", monkeypatch, tmp_path,
                                   "TAPE_TRANSCENDENTALS")
    _close(on, off)
    assert "taped in the forward sweep" in src_on
    check_grad(tanh_chain, args, wrt=(0, 1), target="python")


def test_joint_loop_keeps_recomputing(monkeypatch, tmp_path):
    x = np.random.default_rng(2).standard_normal(6)
    (on, src_on), (off, _) = _both(exp_sum, (x,), 0, "python", monkeypatch, tmp_path,
                                   "TAPE_TRANSCENDENTALS")
    _close(on, off)
    assert "joint sweep" in src_on and "taped in the forward sweep" not in src_on
    check_grad(exp_sum, (x,), wrt=0, target="python")


# -- split helper calls: the helper's forward sweep runs once ------------------------------------

@numba.njit
def row_sum(Q, k):                   # its adjoint is a joint sweep (the value is a sum): stays joint
    s = 0.0
    for j in range(Q.shape[1]):
        s += Q[k, j]
    return s


@numba.njit
def clipped(v, c):                   # a branch on a helper-local value (an int/bool on the tape)
    t = v * c
    if t > 0.5:
        t = 0.5 + 0.1 * math.tanh(t - 0.5)
    return t * t


def nested_helper(Q, x, k):          # calls another helper: its own record would need the stacks
    return clipped(x[k], 1.5) + row_sum(Q, k) * x[k]


def mixed_calls(a, Q, mu, x, scale):
    n = x.shape[0]
    K = a.shape[0]
    total = 0.0
    for i in range(n):
        for k in range(K):
            q = quad_row(Q, mu, x, k, i)
            if q > 1.0:                      # a split call inside a branch
                total += clipped(q, 0.3)
            else:
                total += 0.5 * q + row_sum(Q, k)
        total += nested_helper(Q, a, i % K)
    m = 0
    while m < K:                             # and in a while loop
        total += clipped(a[m], scale)
        m += 1
    return total


def summed(a, Q, mu, x):
    """The last loop only sums helper values into the result: a joint sweep around split calls."""
    s = lse(a)
    for i in range(x.shape[0]):
        s += quad_row(Q, mu, x, i % 3, i)
    return s


def test_split_helper_calls(monkeypatch, tmp_path):
    args = _mixture_args(seed=4)
    (on, src_on), (off, src_off) = _both(mixture, args, (0, 1, 2), "python", monkeypatch, tmp_path,
                                         "SPLIT_HELPER_CALLS")
    _close(on, off)
    caller = _code(src_on[src_on.index("def mixture_adjoint"):])
    # the caller's forward sweep records, its reverse sweep pops: no joint helper adjoint is called
    assert "quad_row_record(" in caller and "quad_row_reverse(" in caller and "lse_reverse(" in caller
    assert "quad_row_adjoint(" not in caller and "lse_adjoint(" not in caller
    assert "records quad_row's tape" in src_on and "split call" in src_on
    assert "_record(" not in src_off
    check_grad(mixture, args, wrt=(0, 1, 2), target="python")


def test_split_calls_in_branches_loops_and_nested_helpers(monkeypatch, tmp_path):
    args = _mixture_args(seed=5, n=4)[:-1] + (0.8,)
    (on, src_on), (off, _) = _both(mixed_calls, args, (0, 1, 2, 4), "python", monkeypatch, tmp_path,
                                   "SPLIT_HELPER_CALLS")
    _close(on, off)
    assert "clipped_record(" in src_on
    # a helper whose adjoint computes the value in a joint sweep keeps the joint call
    assert "row_sum_record" not in src_on and "row_sum_adjoint(" in src_on
    # a helper that calls helpers keeps the joint call (its own calls split inside its adjoint)
    assert "nested_helper_record" not in src_on
    check_grad(mixed_calls, args, wrt=(0, 1, 2, 4), target="python")


def test_split_calls_in_a_joint_loop(monkeypatch, tmp_path):
    args = _mixture_args(seed=6, n=5)[:-1]
    (on, src_on), (off, _) = _both(summed, args, (0, 1, 2), "python", monkeypatch, tmp_path,
                                   "SPLIT_HELPER_CALLS")
    _close(on, off)
    assert "joint sweep" in src_on and "quad_row_record(" in src_on
    check_grad(summed, args, wrt=(0, 1, 2), target="python")


def test_split_helper_calls_float32(monkeypatch, tmp_path):
    args = tuple(np.asarray(a, np.float32) if isinstance(a, np.ndarray) else a
                 for a in _mixture_args(seed=7, n=3))
    results = []
    for on in (True, False):
        monkeypatch.setattr(transform, "SPLIT_HELPER_CALLS", on)
        monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / f"f32-{on}"))
        g = srcgrad.value_and_grad(mixture, wrt=(0, 1, 2), target="python")   # float32 arrays: float32
        results.append(g(*args))
    (va, ga), (vb, gb) = results
    assert np.isclose(va, vb, rtol=1e-5)
    for x, y in zip(ga, gb):
        assert x.dtype == np.float32
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


# -- helper adjoints borrow the caller's stacks for their tapes ----------------------------------

def test_helper_adjoints_borrow_tapes(monkeypatch, tmp_path):
    args = _mixture_args(seed=9, n=4)[:-1] + (0.8,)
    (on, src_on), (off, src_off) = _both(mixed_calls, args, (0, 1, 2, 4), "python", monkeypatch, tmp_path,
                                         "HELPERS_BORROW_TAPES")
    _close(on, off)
    helper = src_on[src_on.index("def quad_row_adjoint"):src_on.index("return _value", src_on.index("def quad_row_adjoint"))]
    signature = " ".join(helper[:helper.index(":\n")].split())
    assert signature.endswith("_ftape, _fpos, _itape, _ipos)") and "new_float_tape()" not in helper
    assert "borrows the stacks _ftape_h, _itape_h" in src_on and "borrows" not in src_off
    # a helper without tapes keeps its signature
    assert "def row_sum_adjoint(Q, k, _seed, _adj_Q):" in src_on
    check_grad(mixed_calls, args, wrt=(0, 1, 2, 4), target="python")


# -- the compiled path: every optimization of this file at once, against none of them -----------

SWITCHES = ("TAPE_TRANSCENDENTALS", "SPLIT_HELPER_CALLS", "HELPERS_BORROW_TAPES")


def test_loop_helper_optimizations_compiled(monkeypatch, tmp_path):
    """Three compiles: the default switches (tapes borrowed), split calls on too, everything off
    (the python tests above compare each switch on its own)."""
    args = _mixture_args(seed=8, n=3)[:-1] + (0.8,)
    wrt = (0, 1, 2, 4)
    variants = {"borrow": (True, False, True), "split": (True, True, True), "off": (False, False, False)}
    results = {}
    for label, values in variants.items():
        for switch, on in zip(SWITCHES, values):
            monkeypatch.setattr(transform, switch, on)
        monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / label))
        g = srcgrad.value_and_grad(mixed_calls, wrt=wrt, target="cpu")
        results[label] = (g, g(*args), g.source_for(*args))
    _close(results["borrow"][1], results["off"][1])
    _close(results["split"][1], results["off"][1])
    assert "taped in the forward sweep" in results["borrow"][2]
    assert "borrows the stacks" in results["borrow"][2]
    assert "quad_row_record(" in results["split"][2]
    for label in ("borrow", "split"):
        g = results[label][0]
        check_grad(mixed_calls, args, wrt=wrt, target="cpu", gradfn=lambda *a, g=g: g(*a)[1])


# -- a helper named like a runtime helper's function --------------------------------------------

@numba.njit
def logsumexp(v):                   # its adjoint must not be named `logsumexp_adjoint`: SciPy
    mx = v[0]                       # logsumexp's runtime helper has that name in the module
    for k in range(v.shape[0]):
        if v[k] > mx:
            mx = v[k]
    se = 0.0
    for k in range(v.shape[0]):
        se += math.exp(v[k] - mx)
    return mx + math.log(se)


def two_logsumexps(a, b):
    return logsumexp(a) + 2.0 * scipy_logsumexp(b)


def test_helper_adjoint_name_is_not_a_runtime_helper():
    rng = np.random.default_rng(11)
    args = (rng.standard_normal(4), rng.standard_normal(5))
    source = srcgrad.grad(two_logsumexps, wrt=(0, 1), target="python").source_for(*args)
    assert "def logsumexp_adjoint_2(" in source and "def logsumexp_adjoint(" not in source
    check_grad(two_logsumexps, args, wrt=(0, 1), target="python")
