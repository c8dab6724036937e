"""Small helpers written into their caller (srcgrad.inline) and loop-invariant transcendental
calls hoisted out of loops (srcgrad.hoist), issue #18 (the GMM with @njit helpers).

Every test compares the gradient with the switches on and off and with central finite
differences, checks what the generated code says, and covers the cases where the rewrite must
not apply (side effects, argument writes, recursion, dependence on the loop, branches).
"""
import math

import numba
import numpy as np
import pytest

import srcgrad
from srcgrad import forward_order, hoist, inline
from conftest import check_grad


def _with(switches, f, args, wrt, target, monkeypatch, tmp_path, tag):
    for module, name, on in switches:
        monkeypatch.setattr(module, name, on)
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / tag))
    g = srcgrad.value_and_grad(f, wrt=wrt, target=target)
    return g(*args), g.source_for(*args)


def _both(f, args, wrt, target, monkeypatch, tmp_path):
    """((value, grads), source) with inlining and hoisting on, then both off."""
    on = _with([(inline, "INLINE_HELPERS", True), (hoist, "HOIST_INVARIANTS", True)],
               f, args, wrt, target, monkeypatch, tmp_path, "on")
    off = _with([(inline, "INLINE_HELPERS", False), (hoist, "HOIST_INVARIANTS", False)],
                f, args, wrt, target, monkeypatch, tmp_path, "off")
    monkeypatch.setattr(inline, "INLINE_HELPERS", True)
    monkeypatch.setattr(hoist, "HOIST_INVARIANTS", True)
    return on, off


def _close(a, b):
    np.testing.assert_allclose(a[0], b[0], rtol=1e-13)
    for x, y in zip(a[1], b[1]):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-13)


# -- a GMM-like objective: @njit helpers called from loops ---------------------------------------
@numba.njit
def quad(Q, mu, x, k, i):
    d = x.shape[1]
    sq = 0.0
    for j in range(d):
        s = math.exp(Q[k, j]) * (x[i, j] - mu[k, j])
        for l in range(j):
            s += Q[k, d + l] * (x[i, l] - mu[k, l])
        sq += s * s
    return sq


@numba.njit
def lse(v):
    mx = -1e300
    for k in range(v.shape[0]):
        if v[k] > mx:
            mx = v[k]
    se = 0.0
    for k in range(v.shape[0]):
        se += math.exp(v[k] - mx)
    return mx + math.log(se)


def mixture(a, Q, mu, x):
    n = x.shape[0]
    K = a.shape[0]
    main = np.empty(K)
    total = 0.0
    for i in range(n):
        for k in range(K):
            main[k] = a[k] - 0.5 * quad(Q, mu, x, k, i)
        total += lse(main)
    return total - n * lse(a)


def _mixture_args(seed=0, n=5, K=3, d=3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(K), 0.3 * rng.standard_normal((K, 2 * d)), rng.standard_normal((K, d)),
            rng.standard_normal((n, d)))


def test_inlined_and_hoisted_gradient(monkeypatch, tmp_path):
    args = _mixture_args()
    on, off = _both(mixture, args, (0, 1, 2), "python", monkeypatch, tmp_path)
    _close(on[0], off[0])
    src_on, src_off = on[1], off[1]
    assert "def quad_adjoint" in src_off and "def quad_adjoint" not in src_on
    assert "def lse_adjoint" in src_on      # `lse(a)` outside the loops stays a call (inline.py)
    adjoint = src_on[src_on.index("def mixture_adjoint"):]
    assert "(inlined quad)" in adjoint and "(inlined lse)" in adjoint
    assert "(inlined quad)  (math.exp(Q[k, j_quad]) hoisted out of the loop over i: _hoisted1, " \
        "filled before it)" in adjoint
    assert "_hoisted1 = np.empty((K, " in adjoint and "= _hoisted1[k, j_quad]" in adjoint
    assert "math.exp" not in adjoint[adjoint.index("for i in range"):].split("mx_lse")[0]
    check_grad(mixture, args, wrt=(0, 1, 2), target="python")


def test_inlined_and_hoisted_compiled():
    """The compiled path with all three rewrites (inlined, hoisted, reverse loops forwards): the
    python target's gradient (compared with the switches off above) and finite differences."""
    args = _mixture_args(1, n=4)
    g = srcgrad.grad(mixture, wrt=(0, 1, 2), target="cpu")
    source = g.source_for(*args)
    assert "(inlined quad)" in source and "_hoisted1" in source and forward_order.NOTE in source
    reference = srcgrad.grad(mixture, wrt=(0, 1, 2), target="python")(*args)
    for a, b in zip(g(*args), reference):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    check_grad(mixture, args, wrt=(0, 1, 2), target="cpu", gradfn=g)


def test_empty_outer_loop_fills_no_table(monkeypatch, tmp_path):
    """n = 0: the table is not filled (python's math.log(-1.0) would raise; the user's code never
    evaluates it)."""
    def f(c, x, n):
        s = 0.0
        for i in range(n):
            for k in range(c.shape[0]):
                s += math.log(c[k]) * x[i]
        return s
    c, x = np.array([-1.0, 2.0]), np.array([0.5, 1.5])
    on, off = _both(f, (c, x, 0), (1,), "python", monkeypatch, tmp_path)
    assert "_hoisted1" in on[1]
    assert on[0][0] == 0.0 and np.all(on[0][1][0] == 0.0)
    c = np.array([1.5, 2.0])
    on, off = _both(f, (c, x, 2), (0, 1), "python", monkeypatch, tmp_path)
    _close(on[0], off[0])
    check_grad(f, (c, x, 2), wrt=(0, 1), target="python")


# -- where the rewrites must not apply -----------------------------------------------------------
def noisy(v, k):
    print("k =", k)                   # a side effect: stays a call
    return v[k] * v[k]


def uses_numpy(v, k):
    w = np.sum(v)                      # a NumPy call could make arrays: stays a call
    return w * v[k]


def calls_noisy(v):
    s = 0.0
    for k in range(v.shape[0]):
        s += noisy(v, k) + uses_numpy(v, k)
    return s


def test_side_effects_and_numpy_calls_stay_calls(monkeypatch, tmp_path, capsys):
    v = np.array([0.5, -1.0, 2.0])
    on, off = _both(calls_noisy, (v,), (0,), "python", monkeypatch, tmp_path)
    assert "def noisy_adjoint" in on[1] and "def uses_numpy_adjoint" in on[1]
    _close(on[0], off[0])
    check_grad(calls_noisy, (v,), wrt=0, target="python")


def writes_into(a, k):
    a[k] = 2.0 * a[k]
    return a[k]


def calls_writer(a):
    s = 0.0
    for k in range(a.shape[0]):
        s += writes_into(a, k)
    return s


def test_argument_writes_are_still_refused():
    with pytest.raises(srcgrad.UnsupportedSyntaxError, match="writes into its argument 'a'"):
        srcgrad.grad(calls_writer, target="python")(np.ones(3))


def forever(x, n):
    return forever(x, n) * 0.5


def calls_forever(x):
    return forever(x, 2) + x


def test_recursion_is_still_refused():
    with pytest.raises(srcgrad.SrcgradError, match="recursion"):
        srcgrad.grad(calls_forever, target="python")(1.0)


def scale(a, b):
    c = a * b                         # a float and an array element, or two floats
    c = c + 1.0
    return c * a


def kinds_mixed(v, w):
    s = scale(w, 2.0) + scale(2, w)
    for k in range(v.shape[0]):
        s += scale(v[k], w) + scale(k, v[k])
    return s


def test_helper_called_with_different_kinds(monkeypatch, tmp_path):
    v, w = np.array([0.3, -0.7, 1.1]), 0.9
    on, off = _both(kinds_mixed, (v, w), (0, 1), "python", monkeypatch, tmp_path)
    assert "(inlined scale)" in on[1]     # in the loop; the calls outside keep scale_adjoint
    assert "a_scale = w" not in on[1]     # `c` is rebound, the parameters are not: substituted
    _close(on[0], off[0])
    check_grad(kinds_mixed, (v, w), wrt=(0, 1), target="python")


def rebinds_param(x, k):
    for j in range(k):
        x = x * 0.5 + j               # the helper assigns its parameter in a loop: a local copy
    return x + k


def calls_rebinder(v):
    s = 0.0
    for k in range(v.shape[0]):
        s += rebinds_param(v[k], k) * v[k]
    return s


def test_rebound_parameter_gets_a_copy(monkeypatch, tmp_path):
    v = np.array([0.3, -0.7, 1.1])
    on, off = _both(calls_rebinder, (v,), (0,), "python", monkeypatch, tmp_path)
    assert "x_rebinds_param = " in on[1]
    _close(on[0], off[0])
    check_grad(calls_rebinder, (v,), wrt=0, target="python")


def not_invariant(c, x):
    s = 0.0
    for i in range(x.shape[0]):
        for k in range(c.shape[0]):
            s += math.exp(c[k] * x[i])           # depends on i: not hoisted out of the i loop
            if x[i] > 0:
                s += math.sin(c[k])              # under a branch: stays
    return s


def written_in_loop(c, x):
    y = c.copy()
    s = 0.0
    for i in range(x.shape[0]):
        for k in range(c.shape[0]):
            s += math.exp(y[k]) * x[i]           # y changes in the loop: stays
            y[k] = y[k] + 0.1 * x[i]
    return s


def behind_an_empty_loop(c, x):
    s = 0.0
    for i in range(x.shape[0]):
        for m in range(x.shape[0] - 4):          # runs zero times for 4 points
            for k in range(c.shape[0]):
                s += math.log(c[k]) * x[i]       # never computed (c[0] < 0): not out of the i loop
        s += x[i] * x[i]
    return s


@pytest.mark.parametrize("f", [not_invariant, written_in_loop, behind_an_empty_loop])
def test_hoisting_does_not_apply(f, monkeypatch, tmp_path):
    c, x = np.array([0.2, -0.4, 0.6]), np.array([0.5, -1.5, 1.0, 0.3])
    if f is behind_an_empty_loop:
        c = np.array([-0.2, 0.4, 0.6])
    on, off = _both(f, (c, x), (0, 1), "python", monkeypatch, tmp_path)
    if f is behind_an_empty_loop:       # out of the m loop (filled when it runs), not the i loop
        assert "hoisted out of the loop over i" not in on[1] and "hoisted out of the loop over m" in on[1]
    else:
        assert "_hoisted" not in on[1]
    _close(on[0], off[0])
    check_grad(f, (c, x), wrt=(0, 1), target="python")


# A name L assigns once but reads before that assignment holds its previous iteration's value
# (its value from before L in the first): its later definition must not stand for it. The fuzzer
# found the first two forms (2026-12-04, seed 20261291): the first recursed forever, the second
# hoisted exp(t1 / b) with t1's later value (and read it unbound); the third, found in review,
# reaches t1 through a name that reads this iteration's t1 first.
def carried_in_a_cycle(x, y, a):
    t1 = math.sin(x) * a[0]
    if y > 1.5:
        for i0 in range(3, -1, -1):
            t1 = math.tanh((t1 / (1.5 + math.cos(x))))
            y = 0.5 * y + 0.5 * math.tanh((t1 - x))
    return 0.5 * t1 + y


def carried_from_before(x, t1):
    s = 0.0
    for i in range(3):
        b = 1.5 + x * x
        c = t1 / b                      # t1 from the previous iteration, or the argument
        t1 = b * 2.0
        s += math.exp(c)                # not hoisted: c changes from the first iteration to the next
    return s


def carried_through_a_later_name(x, t1):
    s = 0.0
    for i in range(3):
        b = 1.5 + x * x
        c = t1 / b                      # t1 from the previous iteration ...
        t1 = b * 2.0
        d = t1 + c                      # ... though d reads this iteration's t1 first
        s += math.exp(d)
    return s


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_values_carried_between_iterations_are_not_hoisted(target, monkeypatch, tmp_path):
    args = (0.3, 2.0, np.array([0.4, -0.2, 0.7, 0.1]))
    on, off = _both(carried_in_a_cycle, args, (0, 1, 2), target, monkeypatch, tmp_path)
    _close(on[0], off[0])
    check_grad(carried_in_a_cycle, args, wrt=(0, 1, 2), target=target)
    on, off = _both(carried_from_before, (0.3, 2.0), (0, 1), target, monkeypatch, tmp_path)
    assert "math.exp(" in on[1].split("def carried_from_before_adjoint")[0].split("for i in")[1]
    np.testing.assert_allclose(on[0][0], carried_from_before(0.3, 2.0), rtol=1e-14)
    _close(on[0], off[0])
    check_grad(carried_from_before, (0.3, 2.0), wrt=(0, 1), target=target)
    on, off = _both(carried_through_a_later_name, (0.3, 2.0), (0, 1), target, monkeypatch, tmp_path)
    assert "_hoisted" not in on[1]
    np.testing.assert_allclose(on[0][0], carried_through_a_later_name(0.3, 2.0), rtol=1e-14)
    _close(on[0], off[0])
    check_grad(carried_through_a_later_name, (0.3, 2.0), wrt=(0, 1), target=target)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")   # lse's -1e300 in float32
def test_float32_keeps_calls_in_loops(monkeypatch, tmp_path):
    args = tuple(a.astype(np.float32) for a in _mixture_args(2))
    g = srcgrad.grad(mixture, wrt=(0, 1, 2), target="python")
    src = g.source_for(*args)
    assert "_hoisted" not in src and "(inlined quad)" in src
    check_grad(mixture, args, wrt=(0, 1, 2), target="python", gradfn=g, rtol=2e-2, atol=2e-2)


# -- reverse loops whose iterations commute run in forward order (srcgrad.forward_order) ---------


def _order_both(f, args, wrt, target, monkeypatch, tmp_path):
    on = _with([(forward_order, "FORWARD_ORDER", True)], f, args, wrt, target, monkeypatch, tmp_path, "fo-on")
    off = _with([(forward_order, "FORWARD_ORDER", False)], f, args, wrt, target, monkeypatch, tmp_path,
                "fo-off")
    monkeypatch.setattr(forward_order, "FORWARD_ORDER", True)
    return on, off


def weighted_then_squared(x, w):
    s = 0.0
    for i in range(x.shape[0]):
        s += w[i] * x[i] * x[i]          # reverse: adds into _adj_x[i], _adj_w[i]: commutes
    t = 0.0
    for i in range(x.shape[0]):
        t = t * 0.5 + math.sin(x[i])     # reverse: the carried adjoint changes: stays backwards
    return s * s + t


def uses_loop_variable_after(x):
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i] * x[i]
    return s * i


def test_forward_order_where_iterations_commute(monkeypatch, tmp_path, target="python"):
    x, w = np.array([0.3, -1.2, 0.8, 2.0]), np.array([1.5, 0.5, -0.7, 0.2])
    on, off = _order_both(weighted_then_squared, (x, w), (0, 1), target, monkeypatch, tmp_path)
    _close(on[0], off[0])
    adjoint = on[1][on[1].index("def weighted_then_squared_adjoint"):]
    assert adjoint.count(forward_order.NOTE) == 1
    assert forward_order.NOTE not in off[1]
    check_grad(weighted_then_squared, (x, w), wrt=(0, 1), target=target)


def test_forward_order_in_the_gmm_reverse(monkeypatch, tmp_path):
    args = _mixture_args(3)
    on, off = _order_both(mixture, args, (0, 1, 2), "python", monkeypatch, tmp_path)
    _close(on[0], off[0])
    adjoint = on[1][on[1].index("def mixture_adjoint"):]
    assert "# line 51: " + forward_order.NOTE in adjoint       # the `for l in range(j)` loop
    assert "for l_quad in range(0, j_quad, 1):" in adjoint


def test_forward_order_keeps_a_loop_variable_read_elsewhere(monkeypatch, tmp_path):
    x = np.array([0.3, -1.2, 0.8])
    on, off = _order_both(uses_loop_variable_after, (x,), 0, "python", monkeypatch, tmp_path)
    assert forward_order.NOTE not in on[1]
    _close(on[0], off[0])
    check_grad(uses_loop_variable_after, (x,), wrt=0, target="python")


def test_commute_check_refuses_order_dependent_bodies():
    """The check itself, on reversed loops written out: element assignments, reads of an
    accumulated array, tape pops and a carried adjoint that changes keep the backward order."""
    import ast as _ast

    def loop(body):
        return _ast.parse(f"for l in range(n - 1, -1, -1):\n" +
                          "".join(f"    {line}\n" for line in body.splitlines())).body[0]
    ok = loop("_t1 = x[l]\n_adj_t2 = _adj_s\n_adj_s = 0.0\n_adj_s = _adj_t2\n_adj_x[l] += _adj_t2 * _t1\n"
              "_adj_m -= _adj_t2")
    assert _ast.unparse(forward_order.forward_order([ok])[1].iter) == "range(0, n, 1)"
    for body in ("_adj_x[l] = 0.0",                                   # an element assigned
                 "_adj_x[l] += _adj_x[l - 1]",                        # an accumulated array read
                 "_fpos -= 1\ns = _ftape[_fpos]",                     # a tape pop
                 "_adj_t1 = _adj_s\n_adj_s = _adj_t1 * 0.5\n_adj_x[l] += _adj_t1",   # carried, changed
                 "_adj_m += x[l]\n_adj_x[l] += _adj_m",              # an accumulator read
                 "_t1 = f(x[l])\n_adj_x[l] += _t1"):                  # a call to anything
        stmts = forward_order.forward_order([loop(body)])
        assert len(stmts) == 1 and _ast.unparse(stmts[0].iter) == "range(n - 1, -1, -1)", body


def rhs(x, y):
    return y - x, x * y            # a tuple result: stays a call


def euler(p, s0, n):
    x = s0[0]
    y = s0[1]
    for i in range(n):
        dx, dy = rhs(x, y)
        x = x + p[0] * dx
        y = y + p[1] * dy
    return x + y * y


def test_tuple_returning_helper_stays_a_call(monkeypatch, tmp_path):
    p, s0 = np.array([0.1, 0.05]), np.array([0.5, -0.3])
    on, off = _both(euler, (p, s0, 4), (0, 1), "python", monkeypatch, tmp_path)
    assert "def rhs_adjoint" in on[1]
    _close(on[0], off[0])
    check_grad(euler, (p, s0, 4), wrt=(0, 1), target="python")


def _adds_into(p, q):
    p += q                            # on an array argument: writes the caller's array in place
    return p * 2.0


def augments_in_loop(a, b):
    A = a * 1.0
    s = 0.0
    for k in range(3):
        B = _adds_into(A, b)
        s += np.sum(B)
    return s + np.sum(A * A)


def test_helper_augmenting_its_argument_in_a_loop_is_not_inlined():
    """`p += q` inside a helper called from a loop: not inlined (normalize's `p = p + q` would
    hide the in-place write), so the write into the caller's array is still refused."""
    with pytest.raises(srcgrad.SrcgradError, match="writes into its argument"):
        srcgrad.grad(augments_in_loop, target="python")(np.ones(3), np.ones(3))


def outside_loop(v, w):
    return np.sum(v * w) + scale(w[0], 2.0)


def test_call_outside_loops_keeps_its_helper_adjoint():
    v, w = np.array([0.3, -0.7]), np.array([0.9, 0.2])
    g = srcgrad.grad(outside_loop, wrt=(0, 1), target="python")
    source = g.source_for(v, w)
    assert "def scale_adjoint" in source and "(inlined scale)" not in source
    check_grad(outside_loop, (v, w), wrt=(0, 1), target="python")
