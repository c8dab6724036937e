"""One test per supported construct, on both targets, checked against finite differences.

Functions are defined at module level (srcgrad reads their source). The larger programs at the end
(Rosenbrock, Lorenz-63 RK4, the ADBench GMM objective, an in-place update loop) are also compared
between the python and cpu targets.
"""
import math

import numpy as np
import pytest

import srcgrad
from conftest import TARGETS, check_grad

# Breadth runs on the python target (the same generated code, without compiling): this `target`
# fixture overrides conftest's. The compiled target runs the tests marked COMPILED, one per
# backend code path: branches, for/while loops with break/continue/early exit (flags and int
# tape), the float tape under overwrites, element writes and arrays created inside, helpers
# (nested, tuple-returning), value_and_grad, dtypes, NaN, and the whole programs (also compared
# between the targets by test_targets_agree). Each cpu test costs a Numba compile.
COMPILED = pytest.mark.parametrize("target", TARGETS)


@pytest.fixture(params=["python"])
def target(request):
    return request.param


# ------------------------------------------------------------------------------------------------
# control flow on data
# ------------------------------------------------------------------------------------------------


def if_elif_else(x, y):
    if x > 1.0:
        z = x * y
    elif x > -1.0:
        z = math.sin(x) + y * y
    else:
        z = x * x * x - y
    return z


@COMPILED
def test_if_elif_else(target):
    for x in (2.0, 0.3, -2.0):
        check_grad(if_elif_else, (x, 0.7), wrt=(0, 1), target=target)


def if_without_else(x):
    z = x * 2.0
    if z > 0.5:
        z = z * z
    return z


def test_if_without_else(target):
    for x in (1.0, -1.0):
        check_grad(if_without_else, (x,), target=target)


def ternary(x, y):
    z = x * y if x > y else x + y * y
    return z * (1.0 if y > 0 else -2.0)


def test_conditional_expression(target):
    for args in ((2.0, 1.0), (0.5, 1.5), (0.5, -1.5)):
        check_grad(ternary, args, wrt=(0, 1), target=target)


def bool_ops(x, y):
    if x > 0.0 and y > 0.0:
        r = x * y
    elif x > 0.0 or not y < -1.0:
        r = x + 2.0 * y
    else:
        r = x * x
    if not (x > 1.0 or y > 1.0) and (x < 0.5 or y < 0.5):
        r = r * 3.0
    if -1.0 < x < 1.0:
        r = r + x
    return r


def test_and_or_not(target):
    for args in ((0.3, 0.4), (-0.3, 0.4), (-0.3, -2.0), (1.5, -0.5), (0.7, 0.2), (-0.7, -0.2)):
        check_grad(bool_ops, args, wrt=(0, 1), target=target)


# ------------------------------------------------------------------------------------------------
# for loops
# ------------------------------------------------------------------------------------------------


def for_start_stop_step(a):
    s = 0.0
    for i in range(1, a.shape[0], 2):
        s = s + a[i] * a[i - 1]
    for i in range(a.shape[0] - 1, -1, -3):
        s = s * 0.5 + math.sin(a[i])
    for i in range(4):
        s = s + a[i] * i
    for i in range(2, 5):
        s = s + a[i] * s
    return s


@COMPILED
def test_for_range_forms(target):
    a = np.linspace(-1.0, 1.3, 9)
    check_grad(for_start_stop_step, (a,), target=target)


def for_bounds_from_args(a, start, stop, step):
    s = 0.0
    for i in range(start, stop, step):
        s = s + a[i] * a[i] * (i + 1)
    return s


def test_for_bounds_from_args(target):
    a = np.linspace(0.5, 2.0, 10)
    g = srcgrad.grad(for_bounds_from_args, target=target)
    for start, stop, step in ((0, 10, 1), (1, 9, 3), (9, -1, -1), (8, 0, -3), (5, 5, 1), (5, 2, 1)):
        check_grad(for_bounds_from_args, (a, start, stop, step), target=target, gradfn=g)


def nested_loops(m, v):
    s = 0.0
    for i in range(m.shape[0]):
        t = 0.0
        for j in range(m.shape[1]):
            t = t + m[i, j] * v[j]
        s = s + t * t
    return s


def test_nested_loops_matvec(target):
    rng = np.random.default_rng(1)
    m = rng.standard_normal((3, 4))
    v = rng.standard_normal(4)
    g = check_grad(nested_loops, (m, v), wrt=(0, 1), target=target)
    mv = m @ v
    np.testing.assert_allclose(g[0], 2 * np.outer(mv, v), rtol=1e-12)
    np.testing.assert_allclose(g[1], 2 * m.T @ mv, rtol=1e-12)


def triangular_loops(a, n):
    s = 0.0
    for i in range(n):
        for j in range(i):
            for k in range(j, i):
                s = s + a[i] * a[j] * math.cos(a[k])
    return s


def test_triangular_nested_loops(target):
    a = np.linspace(-1, 1, 5)
    check_grad(triangular_loops, (a, 5), target=target)


# ------------------------------------------------------------------------------------------------
# while, break, continue, return
# ------------------------------------------------------------------------------------------------


def while_data_dependent(x):
    y = x
    n = 0
    while y < 10.0:
        y = y * 1.5 + 0.1
        n = n + 1
    return y * n


def test_while_data_dependent_trip_count(target):
    for x in (0.5, 1.3, 3.0, 11.0):
        check_grad(while_data_dependent, (x,), target=target)


def newton_sqrt(a):
    x = a
    it = 0
    while abs(x * x - a) > 1e-12 and it < 50:
        x = 0.5 * (x + a / x)
        it += 1
    return x


def test_while_newton(target):
    g = srcgrad.grad(newton_sqrt, target=target)
    for a in (2.0, 9.0, 0.3):
        assert g(a) == pytest.approx(0.5 / math.sqrt(a), rel=1e-6)


def loop_break(a, limit):
    s = 0.0
    for i in range(a.shape[0]):
        if s > limit:
            break
        s = s + a[i] * a[i]
    return s


def test_break(target):
    a = np.array([0.5, 1.0, 1.5, 2.0, 2.5])
    g = srcgrad.grad(loop_break, wrt=0, target=target)
    for limit in (0.1, 1.0, 4.0, 100.0):
        check_grad(loop_break, (a, limit), target=target, gradfn=g)


def loop_continue(a):
    s = 0.0
    for i in range(a.shape[0]):
        if a[i] < 0.0:
            continue
        s = s + a[i] * s + a[i]
    return s


def test_continue(target):
    check_grad(loop_continue, (np.array([0.5, -1.0, 1.5, -2.0, 0.25]),), target=target)


def while_break_continue(x):
    s = 0.0
    i = 0
    while i < 20:
        i += 1
        if i % 3 == 0:
            continue
        s = s + math.sin(x * i)
        if s > 1.5:
            break
    return s * x


@COMPILED
def test_while_break_continue(target):
    for x in (0.1, 0.4, 1.1):
        check_grad(while_break_continue, (x,), target=target)


def early_return(x):
    if x > 2.0:
        return x * x
    y = math.exp(x)
    if y > 2.0:
        return y * 3.0
    return y - x


def test_early_and_multiple_returns(target):
    for x in (3.0, 1.0, -1.0):
        check_grad(early_return, (x,), target=target)


def return_in_loop(a, t):
    s = 0.0
    for i in range(a.shape[0]):
        s = s + a[i]
        if s > t:
            return s * a[i]
        for j in range(i):
            if a[j] * a[i] > 3.0:
                return s - a[j]
    return -s


@COMPILED
def test_return_inside_loops(target):
    g = srcgrad.grad(return_in_loop, wrt=0, target=target)
    # (inputs keep a[j] * a[i] away from the 3.0 threshold, where the function jumps)
    for a, t in ((np.array([0.5, 1.0, 1.5, 2.0]), 2.0), (np.array([0.5, 1.0, 1.5, 1.9]), 100.0),
                 (np.array([0.5, 2.0, 2.5, 2.0]), 100.0)):
        check_grad(return_in_loop, (a, t), target=target, gradfn=g)


# ------------------------------------------------------------------------------------------------
# assignments
# ------------------------------------------------------------------------------------------------


def reassign(x, y):
    t = x * y
    t = t + math.sin(t)
    x = x * 2.0
    y = y + x
    t = t * y
    x = t
    return x + y


def test_reassign_locals_and_arguments(target):
    check_grad(reassign, (0.7, -0.3), wrt=(0, 1), target=target)


def augmented(x, y):
    z = x
    z += y
    z *= x
    z -= y * 0.5
    z /= (1.0 + y * y)
    z **= 2
    x += z
    return x


def test_augmented_assignment(target):
    check_grad(augmented, (0.7, -0.3), wrt=(0, 1), target=target)


def unpack_swap(x, y):
    a, b = x * 2.0, y + 1.0
    for i in range(3):
        a, b = b, a * b
    x, y = y, x
    return a + b * x - y


@COMPILED
def test_tuple_unpacking_and_swap(target):
    check_grad(unpack_swap, (0.7, -0.3), wrt=(0, 1), target=target)


# ------------------------------------------------------------------------------------------------
# array element reads and writes
# ------------------------------------------------------------------------------------------------


def array_reads(a, m):
    return a[0] * m[1, 2] + a[a.shape[0] - 1] * m[0, 0] - m[1, 0] * m[1, 0]


def test_array_element_reads(target):
    check_grad(array_reads, (np.array([1.0, 2.0, 3.0]), np.arange(6.0).reshape(2, 3) + 0.5),
               wrt=(0, 1), target=target)


def write_argument(a, x):
    a[0] = x * a[1]
    a[1] = a[1] + x * x
    a[2] = a[0] * a[1]
    return a[0] + a[1] + a[2]


def test_write_into_argument(target):
    a = np.array([1.0, 2.0, 3.0])
    g = srcgrad.grad(write_argument, wrt=(0, 1), target=target)
    ga, gx = g(a.copy(), 0.5)
    # reference: the function mutates a, so FD on copies
    h = 1e-6
    fd_x = (write_argument(a.copy(), 0.5 + h) - write_argument(a.copy(), 0.5 - h)) / (2 * h)
    assert gx == pytest.approx(fd_x, rel=1e-6)
    fd_a = np.zeros(3)
    for i in range(3):
        p = a.copy()
        p[i] += h
        q = a.copy()
        q[i] -= h
        fd_a[i] = (write_argument(p, 0.5) - write_argument(q, 0.5)) / (2 * h)
    np.testing.assert_allclose(ga, fd_a, rtol=1e-6, atol=1e-8)


def created_arrays(x, n):
    z = np.zeros(n)
    o = np.ones(n)
    e = np.empty(n)
    for i in range(n):
        z[i] = x * (i + 1)
        e[i] = z[i] * o[i] + 1.0
        o[i] = o[i] + z[i] * z[i]
    s = 0.0
    for i in range(n):
        s += e[i] * x * o[i]
    return s


def created_2d(x, n):
    m = np.zeros((n, 2))
    for i in range(n):
        m[i, 0] = x * i
        m[i, 1] = m[i, 0] * x
    s = 0.0
    for i in range(n):
        s += m[i, 0] * m[i, 1]
    return s


def test_created_2d_array(target):
    check_grad(created_2d, (0.7, 3), target=target)


@COMPILED
def test_arrays_created_inside(target):
    check_grad(created_arrays, (0.7, 4), target=target)


def zeros_like_buffer(a):
    b = np.zeros_like(a)
    for i in range(a.shape[0]):
        b[i] = a[i] * a[i]
    s = 0.0
    for i in range(a.shape[0]):
        s += b[i] * a[(i + 1) % a.shape[0]]
    return s


def test_zeros_like(target):
    check_grad(zeros_like_buffer, (np.array([0.5, -1.0, 2.0]),), target=target)


def overwrite_in_loop(a, steps):
    b = np.zeros(a.shape[0])
    for i in range(a.shape[0]):
        b[i] = a[i]
    for t in range(steps):
        for i in range(b.shape[0]):
            b[i] = math.sin(b[i]) * 1.3 + 0.1 * b[(i + 1) % b.shape[0]]
    s = 0.0
    for i in range(b.shape[0]):
        s = b[i] * b[i]
    return s


@COMPILED
def test_overwrites_inside_loops(target):
    check_grad(overwrite_in_loop, (np.array([0.3, -0.8, 1.2, 0.1]), 5), target=target)


def scalar_overwrite_in_loop(x):
    y = x
    for i in range(6):
        y = math.sin(y) * 2.0 + x
    return y


def test_scalar_overwrites_in_loop(target):
    check_grad(scalar_overwrite_in_loop, (0.4,), target=target)


def write_2d_accumulate(m):
    out = np.zeros((m.shape[0], m.shape[1]))
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            out[i, j] = m[i, j] * m[j % m.shape[0], i % m.shape[1]]
            out[i, j] += math.exp(out[i, j] * 0.1)
    s = 0.0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            s += out[i, j]
    return s


def test_2d_writes(target):
    check_grad(write_2d_accumulate, (np.arange(6.0).reshape(2, 3) * 0.3 - 0.5,), target=target)


def aug_subscript(a, x):
    a[1] += x * a[0]
    a[0] *= x
    a[2] -= a[1] / 2.0
    return a[0] + a[1] * a[2]


def test_augmented_assignment_on_elements(target):
    g = srcgrad.grad(aug_subscript, wrt=1, target=target)
    h = 1e-6
    a = np.array([0.5, 1.5, -0.5])
    fd = (aug_subscript(a.copy(), 0.7 + h) - aug_subscript(a.copy(), 0.7 - h)) / (2 * h)
    assert g(a.copy(), 0.7) == pytest.approx(fd, rel=1e-6)


def aug_subscript_in_loop(a):
    b = np.zeros(a.shape[0])
    for t in range(3):
        for i in range(a.shape[0]):
            b[i] += a[i] * b[(i + 1) % a.shape[0]] + a[i]
    return b[0] + b[1]


@COMPILED
def test_augmented_assignment_on_elements_in_loop(target):
    check_grad(aug_subscript_in_loop, (np.array([0.5, 1.5, -0.5]),), target=target)


def created_straight(x):
    z = np.zeros(2)
    z[0] = x
    return z[0] * 2.0


def test_created_array_written_outside_loop(target):
    assert srcgrad.grad(created_straight, target=target)(0.5) == 2.0


# ------------------------------------------------------------------------------------------------
# helper functions
# ------------------------------------------------------------------------------------------------


def helper_sq(u, w):
    v = u * w
    return v * v + math.sin(u)


def helper_loop(a, w):
    s = 0.0
    for i in range(a.shape[0]):
        s += helper_sq(a[i], w)
    return s


def helper_other(x, w):
    return helper_sq(x, x) * helper_sq(w, 2.0)


def test_helper_called_from_loop(target):
    check_grad(helper_loop, (np.array([0.3, -0.8, 1.2]), 0.7), wrt=(0, 1), target=target)


def test_helper_reused_by_two_functions(target):
    check_grad(helper_loop, (np.array([0.3, -0.8]), 0.7), wrt=1, target=target)
    check_grad(helper_other, (0.4, 0.9), wrt=(0, 1), target=target)


def helper_inner(x):
    return x * math.exp(-x)


def helper_outer(x, y):
    return helper_inner(x) + helper_inner(y) * y


def nested_helpers(x, y):
    s = 0.0
    for i in range(3):
        s += helper_outer(x * i, y)
    return s


@COMPILED
def test_nested_helpers(target):
    check_grad(nested_helpers, (0.4, 0.9), wrt=(0, 1), target=target)


# ------------------------------------------------------------------------------------------------
# wrt, value_and_grad, result types
# ------------------------------------------------------------------------------------------------


def three_args(a, b, c):
    return a * b * b + math.sin(c) * a


def test_wrt_by_names_and_positions(target):
    args = (0.5, 1.5, 0.25)
    ga = 1.5 * 1.5 + math.sin(0.25)
    gb = 2 * 0.5 * 1.5
    gc = math.cos(0.25) * 0.5
    assert srcgrad.grad(three_args, target=target)(*args) == pytest.approx(ga)
    assert srcgrad.grad(three_args, wrt="b", target=target)(*args) == pytest.approx(gb)
    assert srcgrad.grad(three_args, wrt=(2, 0), target=target)(*args) == pytest.approx((gc, ga))
    assert srcgrad.grad(three_args, wrt=("c", "b"), target=target)(*args) == pytest.approx((gc, gb))
    assert srcgrad.grad(three_args, wrt="a", target=target)(0.5, c=0.25, b=1.5) == pytest.approx(ga)


def test_wrt_one_element_tuple(target):
    args = (0.5, 1.5, 0.25)
    assert srcgrad.grad(three_args, wrt=(1,), target=target)(*args) == pytest.approx((2 * 0.5 * 1.5,))
    assert srcgrad.grad(three_args, wrt=["b"], target=target)(*args) == pytest.approx((2 * 0.5 * 1.5,))


def test_decorator_forms(target):
    g = srcgrad.grad(wrt="c", target=target)(three_args)
    assert g(0.5, 1.5, 0.25) == pytest.approx(math.cos(0.25) * 0.5)


@COMPILED
def test_value_and_grad(target):
    vg = srcgrad.value_and_grad(three_args, wrt=(0, 1), target=target)
    value, (ga, gb) = vg(0.5, 1.5, 0.25)
    assert isinstance(value, float)
    assert value == pytest.approx(three_args(0.5, 1.5, 0.25))
    assert (ga, gb) == pytest.approx((1.5 * 1.5 + math.sin(0.25), 1.5))
    value, g = srcgrad.value_and_grad(nested_loops, wrt=1, target=target)(np.eye(2), np.array([1.0, 2.0]))
    assert value == pytest.approx(5.0)
    np.testing.assert_allclose(g, [2.0, 4.0])


def sum_sq(a):
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i] * a[i]
    return s


@COMPILED
def test_gradient_dtype_and_shape(target):
    g = srcgrad.grad(sum_sq, target=target)
    a32 = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    r32 = g(a32)
    assert r32.dtype == np.float32 and r32.shape == (3,)
    np.testing.assert_allclose(r32, 2 * a32)
    r64 = g(a32.astype(np.float64))
    assert r64.dtype == np.float64
    gs = srcgrad.grad(three_args, target=target)(0.5, 1.5, 0.25)
    assert type(gs) is float
    gs = srcgrad.grad(three_args, target=target)(np.float64(0.5), 1.5, 0.25)
    assert type(gs) is float
    gm = srcgrad.grad(nested_loops, wrt=(0, 1), target=target)(np.ones((2, 3), dtype=np.float32),
                                                                np.ones(3, dtype=np.float32))
    assert gm[0].shape == (2, 3) and gm[0].dtype == np.float32 and gm[1].dtype == np.float32


def test_int_argument_promoted_gradient_is_none_of_our_business(target):
    # gradient w.r.t. a float argument while another argument is an int
    assert srcgrad.grad(for_bounds_from_args, target=target)(np.ones(3), 0, 3, 1).tolist() == [2.0, 4.0, 6.0]


@COMPILED
def test_nan_input_gives_nan(target):
    g = srcgrad.grad(if_elif_else, wrt=(0, 1), target=target)
    gx, gy = g(float("nan"), 0.5)
    # NaN compares false, so the else branch runs: z = x*x*x - y, dz/dx = 3x^2 = NaN, dz/dy = -1
    assert math.isnan(gx) and gy == -1.0
    r = srcgrad.grad(sum_sq, target=target)(np.array([1.0, np.nan]))
    assert r[0] == 2.0 and math.isnan(r[1])
    assert math.isnan(srcgrad.grad(scalar_overwrite_in_loop, target=target)(float("nan")))


# ------------------------------------------------------------------------------------------------
# programs
# ------------------------------------------------------------------------------------------------


def rosenbrock(x):
    s = 0.0
    for i in range(x.shape[0] - 1):
        s += 100.0 * (x[i + 1] - x[i] * x[i]) ** 2 + (1.0 - x[i]) ** 2
    return s


def rosenbrock_grad_exact(x):
    g = np.zeros_like(x)
    g[:-1] += -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return g


@COMPILED
def test_rosenbrock(target):
    x = np.linspace(-1.2, 1.1, 7)
    g = check_grad(rosenbrock, (x,), target=target, rtol=1e-6)
    np.testing.assert_allclose(g, rosenbrock_grad_exact(x), rtol=1e-12, atol=1e-10)
    big = np.random.default_rng(0).standard_normal(1000)
    np.testing.assert_allclose(srcgrad.grad(rosenbrock, target=target)(big), rosenbrock_grad_exact(big),
                               rtol=1e-12, atol=1e-9)


def lorenz_rk4(p, s0, n, dt):
    sig = p[0]
    rho = p[1]
    beta = p[2]
    x = s0[0]
    y = s0[1]
    z = s0[2]
    for i in range(n):
        k1x = sig * (y - x)
        k1y = x * (rho - z) - y
        k1z = x * y - beta * z
        x2 = x + 0.5 * dt * k1x
        y2 = y + 0.5 * dt * k1y
        z2 = z + 0.5 * dt * k1z
        k2x = sig * (y2 - x2)
        k2y = x2 * (rho - z2) - y2
        k2z = x2 * y2 - beta * z2
        x3 = x + 0.5 * dt * k2x
        y3 = y + 0.5 * dt * k2y
        z3 = z + 0.5 * dt * k2z
        k3x = sig * (y3 - x3)
        k3y = x3 * (rho - z3) - y3
        k3z = x3 * y3 - beta * z3
        x4 = x + dt * k3x
        y4 = y + dt * k3y
        z4 = z + dt * k3z
        k4x = sig * (y4 - x4)
        k4y = x4 * (rho - z4) - y4
        k4z = x4 * y4 - beta * z4
        x = x + dt / 6.0 * (k1x + 2.0 * k2x + 2.0 * k3x + k4x)
        y = y + dt / 6.0 * (k1y + 2.0 * k2y + 2.0 * k3y + k4y)
        z = z + dt / 6.0 * (k1z + 2.0 * k2z + 2.0 * k3z + k4z)
    return x * x + 0.5 * y + z


@COMPILED
def test_lorenz_rk4_1000_steps(target):
    p = np.array([10.0, 28.0, 8.0 / 3.0])
    s0 = np.array([1.0, 1.0, 1.0])
    gp, gs = check_grad(lorenz_rk4, (p, s0, 1000, 0.001), wrt=(0, 1), target=target, rtol=1e-5,
                        atol=1e-6)
    assert gp.shape == (3,) and gs.shape == (3,)


def lorenz_rhs(x, y, z, sig, rho, beta):
    return sig * (y - x), x * (rho - z) - y, x * y - beta * z


def lorenz_euler_helper(p, s0, n, dt):
    x = s0[0]
    y = s0[1]
    z = s0[2]
    for i in range(n):
        dx, dy, dz = lorenz_rhs(x, y, z, p[0], p[1], p[2])
        x = x + dt * dx
        y = y + dt * dy
        z = z + dt * dz
    return x + y * z


@COMPILED
def test_lorenz_with_tuple_returning_helper(target):
    check_grad(lorenz_euler_helper, (np.array([10.0, 28.0, 8.0 / 3.0]), np.array([1.0, 0.5, 2.0]), 200,
                                     0.002), wrt=(0, 1), target=target)


def gmm_objective(alphas, means, icf, x, wishart_gamma, wishart_m):
    n = x.shape[0]
    d = x.shape[1]
    K = alphas.shape[0]
    sum_qs = np.zeros(K)
    for k in range(K):
        for j in range(d):
            sum_qs[k] = sum_qs[k] + icf[k, j]
    xc = np.zeros(d)
    qx = np.zeros(d)
    main_term = np.zeros(K)
    slse = 0.0
    for i in range(n):
        for k in range(K):
            for j in range(d):
                xc[j] = x[i, j] - means[k, j]
            for j in range(d):
                qx[j] = math.exp(icf[k, j]) * xc[j]
            idx = d
            for col in range(d):
                for row in range(col + 1, d):
                    qx[row] = qx[row] + icf[k, idx] * xc[col]
                    idx += 1
            sq = 0.0
            for j in range(d):
                sq += qx[j] * qx[j]
            main_term[k] = alphas[k] + sum_qs[k] - 0.5 * sq
        mx = main_term[0]
        for k in range(1, K):
            if main_term[k] > mx:
                mx = main_term[k]
        se = 0.0
        for k in range(K):
            se += math.exp(main_term[k] - mx)
        slse += mx + math.log(se)
    amx = alphas[0]
    for k in range(1, K):
        amx = max(amx, alphas[k])
    ase = 0.0
    for k in range(K):
        ase += math.exp(alphas[k] - amx)
    lse_alphas = amx + math.log(ase)
    prior = 0.0
    for k in range(K):
        fro = 0.0
        for j in range(d):
            fro += math.exp(2.0 * icf[k, j])
        for j in range(d, icf.shape[1]):
            fro += icf[k, j] * icf[k, j]
        prior += 0.5 * wishart_gamma * wishart_gamma * fro - wishart_m * sum_qs[k]
    const = -n * d * 0.5 * math.log(2.0 * math.pi)
    return const + slse - n * lse_alphas + prior


def gmm_numpy(alphas, means, icf, x, gamma, m):
    n, d = x.shape
    K = alphas.shape[0]
    total = 0.0
    for i in range(n):
        terms = []
        for k in range(K):
            L = np.diag(np.exp(icf[k, :d]))
            idx = d
            for col in range(d):
                for row in range(col + 1, d):
                    L[row, col] = icf[k, idx]
                    idx += 1
            q = L @ (x[i] - means[k])
            terms.append(alphas[k] + icf[k, :d].sum() - 0.5 * q @ q)
        terms = np.array(terms)
        total += terms.max() + np.log(np.exp(terms - terms.max()).sum())
    lse_a = alphas.max() + np.log(np.exp(alphas - alphas.max()).sum())
    prior = sum(0.5 * gamma ** 2 * (np.exp(2 * icf[k, :d]).sum() + (icf[k, d:] ** 2).sum())
                - m * icf[k, :d].sum() for k in range(K))
    return -n * d * 0.5 * math.log(2 * math.pi) + total - n * lse_a + prior


def gmm_inputs():
    rng = np.random.default_rng(42)
    d, K, n = 3, 2, 5
    return (rng.standard_normal(K), rng.standard_normal((K, d)),
            0.3 * rng.standard_normal((K, d * (d + 1) // 2)), rng.standard_normal((n, d)), 1.0, 0.0)


@COMPILED
def test_gmm_objective(target):
    args = gmm_inputs()
    assert gmm_objective(*args) == pytest.approx(gmm_numpy(*args), rel=1e-12)
    value, grads = srcgrad.value_and_grad(gmm_objective, wrt=(0, 1, 2), target=target)(*args)
    assert value == pytest.approx(gmm_numpy(*args), rel=1e-12)
    check_grad(gmm_objective, args, wrt=(0, 1, 2), target=target, rtol=1e-5, atol=1e-6)


def inplace_update(w, x, steps, lr):
    v = np.zeros(w.shape[0])
    for j in range(w.shape[0]):
        v[j] = w[j]
    for t in range(steps):
        for j in range(v.shape[0]):
            g = 2.0 * (v[j] - x[j]) + math.sin(v[j])
            v[j] = v[j] - lr * g
            v[j] = v[j] * (1.0 - 0.01 * v[j] * v[j])
    s = 0.0
    for j in range(v.shape[0]):
        s += v[j] * x[j] + v[j] ** 3
    return s


@COMPILED
def test_inplace_update_loop(target):
    w = np.array([0.5, -0.2, 1.3, 0.1])
    x = np.array([1.0, 0.4, -0.5, 0.9])
    check_grad(inplace_update, (w, x, 20, 0.1), wrt=(0, 1), target=target)


# ------------------------------------------------------------------------------------------------
# targets agree
# ------------------------------------------------------------------------------------------------

PROGRAMS = [
    pytest.param(rosenbrock, lambda: (np.linspace(-1.2, 1.1, 7),), 0),
    (lorenz_rk4, lambda: (np.array([10.0, 28.0, 8.0 / 3.0]), np.array([1.0, 1.0, 1.0]), 1000, 0.001), (0, 1)),
    (gmm_objective, gmm_inputs, (0, 1, 2)),
    (inplace_update, lambda: (np.array([0.5, -0.2, 1.3, 0.1]), np.array([1.0, 0.4, -0.5, 0.9]), 20, 0.1),
     (0, 1)),
    (overwrite_in_loop, lambda: (np.array([0.3, -0.8, 1.2, 0.1]), 5), 0),
    pytest.param(return_in_loop, lambda: (np.array([0.5, 2.0, 2.5, 2.0]), 100.0), 0,
                 marks=()),
]


@pytest.mark.parametrize("func, make_args, wrt", PROGRAMS,
                         ids=["rosenbrock", "lorenz_rk4", "gmm", "inplace_update", "overwrite_in_loop",
                              "return_in_loop"])
def test_targets_agree(func, make_args, wrt):
    py = srcgrad.value_and_grad(func, wrt=wrt, target="python")(*make_args())
    cpu = srcgrad.value_and_grad(func, wrt=wrt, target="cpu")(*make_args())
    assert py[0] == pytest.approx(cpu[0], rel=1e-12, abs=1e-12)
    gp = py[1] if isinstance(wrt, tuple) else (py[1],)
    gc = cpu[1] if isinstance(wrt, tuple) else (cpu[1],)
    for a, b in zip(gp, gc):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# .njit: callable from user @numba.njit code
# ------------------------------------------------------------------------------------------------


def test_njit_entry_callable_from_numba():
    import numba

    g = srcgrad.grad(sum_sq, target="cpu")
    entry = g.njit

    @numba.njit
    def user(a):
        return entry(a) * 2.0

    np.testing.assert_allclose(user(np.array([1.0, 2.0])), [4.0, 8.0])
