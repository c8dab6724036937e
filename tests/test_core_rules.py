"""Every derivative rule of srcgrad.rules, on scalar floats, for both targets.

Hypothesis draws inputs inside each function's domain (and away from kinks and jumps, where a
finite difference is meaningless); the gradient is compared with central finite differences in
float64. The GradFunction objects are built once per (function, target) and reused across examples:
compilation dominates the cost.
"""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import srcgrad
from conftest import TARGETS, check_grad

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


def floats(lo, hi):
    return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)


def away_from(strategy, points, margin=1e-3):
    return strategy.filter(lambda v: all(abs(v - p) > margin for p in points))


# ------------------------------------------------------------------------------------------------
# Functions (module level: srcgrad reads their source)
# ------------------------------------------------------------------------------------------------

def f_add(x, y):
    return x + y


def f_add_const(x, y):
    return 3.0 + x + y + 1


def f_sub(x, y):
    return x - y


def f_rsub_const(x, y):
    return 2.0 - x - y * 0.5


def f_mul(x, y):
    return x * y


def f_square_self(x, y):
    return x * x * y


def f_div(x, y):
    return x / y


def f_rdiv_const(x, y):
    return 1.0 / x + y / 3.0


def f_pow(x, y):
    return x ** y


def f_pow_int_const(x, y):
    return x ** 3 + y ** 2


def f_pow_float_const(x, y):
    return x ** 2.5 + y ** 0.5


def f_const_pow(x, y):
    return 2.0 ** x + y


def f_mod(x, y):
    return x % y


def f_mod_const(x, y):
    return (x * y) % 1.5


def f_neg(x, y):
    return -x * y + -(y)


def f_abs(x, y):
    return abs(x) * y


def f_sin(x):
    return math.sin(x)


def f_cos(x):
    return math.cos(x)


def f_tan(x):
    return math.tan(x)


def f_asin(x):
    return math.asin(x)


def f_acos(x):
    return math.acos(x)


def f_atan(x):
    return math.atan(x)


def f_atan2(y, x):
    return math.atan2(y, x)


def f_sinh(x):
    return math.sinh(x)


def f_cosh(x):
    return math.cosh(x)


def f_tanh(x):
    return math.tanh(x)


def f_exp(x):
    return math.exp(x)


def f_expm1(x):
    return math.expm1(x)


def f_log(x):
    return math.log(x)


def f_log1p(x):
    return math.log1p(x)


def f_log2(x):
    return math.log2(x)


def f_log10(x):
    return math.log10(x)


def f_sqrt(x):
    return math.sqrt(x)


def f_hypot(x, y):
    return math.hypot(x, y)


def f_math_pow(x, y):
    return math.pow(x, y)


def f_builtin_pow(x, y):
    return pow(x, y)


def f_fabs(x):
    return math.fabs(x)


def f_floor(x):
    return math.floor(x) + x * x


def f_ceil(x):
    return math.ceil(x) * 2.0 + x * x


def f_trunc(x):
    return math.trunc(x) + x * x


def f_float(x):
    return float(x) * x


def f_max(x, y):
    return max(x, y) * 2.0


def f_min(x, y):
    return min(x, y) * 2.0


def f_max_const(x, y):
    return max(x, 0.5) + min(y, -0.5)


def f_np_sin(x):
    return np.sin(x)


def f_np_cos(x):
    return np.cos(x)


def f_np_tan(x):
    return np.tan(x)


def f_np_arcsin(x):
    return np.arcsin(x)


def f_np_arccos(x):
    return np.arccos(x)


def f_np_arctan(x):
    return np.arctan(x)


def f_np_arctan2(y, x):
    return np.arctan2(y, x)


def f_np_sinh(x):
    return np.sinh(x)


def f_np_cosh(x):
    return np.cosh(x)


def f_np_tanh(x):
    return np.tanh(x)


def f_np_exp(x):
    return np.exp(x)


def f_np_expm1(x):
    return np.expm1(x)


def f_np_log(x):
    return np.log(x)


def f_np_log1p(x):
    return np.log1p(x)


def f_np_log2(x):
    return np.log2(x)


def f_np_log10(x):
    return np.log10(x)


def f_np_sqrt(x):
    return np.sqrt(x)


def f_np_square(x):
    return np.square(x)


def f_np_abs(x):
    return np.abs(x)


def f_np_fabs(x):
    return np.fabs(x)


def f_np_hypot(x, y):
    return np.hypot(x, y)


def f_np_power(x, y):
    return np.power(x, y)


def f_np_mod(x, y):
    return np.mod(x, y)


def f_np_negative(x):
    return np.negative(x) * x


def f_np_maximum(x, y):
    return np.maximum(x, y) * 3.0


def f_np_minimum(x, y):
    return np.minimum(x, y) * 3.0


def f_np_fmax(x, y):
    return np.fmax(x, y)


def f_np_fmin(x, y):
    return np.fmin(x, y)


def f_np_where(x, y):
    return np.where(x > y, x * x, y * x)


def f_np_clip(x):
    return np.clip(x, -1.0, 1.0) * x


def f_np_clip_bounds(x, lo, hi):
    return np.clip(x, lo, hi)


def f_np_floor(x):
    return np.floor(x) + x * x


def f_np_ceil(x):
    return np.ceil(x) + x * x


def f_np_sign(x):
    return np.sign(x) * x


def f_np_round(x):
    return np.round(x) + np.rint(x) + np.trunc(x) + x * x


# ------------------------------------------------------------------------------------------------
# Domains
# ------------------------------------------------------------------------------------------------

ANY = floats(-3.0, 3.0)
POS = floats(0.1, 3.0)
UNIT = floats(-0.95, 0.95)
NONZERO = away_from(ANY, [0.0], 0.1)


def not_near_integer(v, margin=1e-3):
    return abs(v - round(v)) > margin


NOINT = ANY.filter(not_near_integer)

# (function, strategies for its arguments, rtol)
CASES = [
    (f_add, (ANY, ANY)), (f_add_const, (ANY, ANY)), (f_sub, (ANY, ANY)),
    (f_rsub_const, (ANY, ANY)), (f_mul, (ANY, ANY)), (f_square_self, (ANY, ANY)),
    (f_div, (ANY, NONZERO)), (f_rdiv_const, (NONZERO, ANY)),
    (f_pow, (POS, ANY)), (f_pow_int_const, (ANY, ANY)), (f_pow_float_const, (POS, POS)),
    (f_const_pow, (ANY, ANY)), (f_neg, (ANY, ANY)), (f_abs, (NONZERO, ANY)),
    (f_sin, (ANY,)), (f_cos, (ANY,)), (f_tan, (floats(-1.3, 1.3),)), (f_asin, (UNIT,)),
    (f_acos, (UNIT,)), (f_atan, (ANY,)), (f_atan2, (ANY, POS)), (f_sinh, (ANY,)),
    (f_cosh, (ANY,)), (f_tanh, (ANY,)), (f_exp, (ANY,)), (f_expm1, (ANY,)), (f_log, (POS,)),
    (f_log1p, (floats(-0.9, 3.0),)), (f_log2, (POS,)), (f_log10, (POS,)), (f_sqrt, (POS,)),
    (f_hypot, (NONZERO, NONZERO)), (f_math_pow, (POS, ANY)), (f_builtin_pow, (POS, ANY)),
    (f_fabs, (NONZERO,)), (f_floor, (NOINT,)), (f_ceil, (NOINT,)), (f_trunc, (NOINT,)),
    (f_float, (ANY,)),
    (f_np_sin, (ANY,)), (f_np_cos, (ANY,)), (f_np_tan, (floats(-1.3, 1.3),)),
    (f_np_arcsin, (UNIT,)), (f_np_arccos, (UNIT,)), (f_np_arctan, (ANY,)),
    (f_np_arctan2, (ANY, POS)), (f_np_sinh, (ANY,)), (f_np_cosh, (ANY,)),
    (f_np_tanh, (ANY,)), (f_np_exp, (ANY,)), (f_np_expm1, (ANY,)), (f_np_log, (POS,)),
    (f_np_log1p, (floats(-0.9, 3.0),)), (f_np_log2, (POS,)), (f_np_log10, (POS,)),
    (f_np_sqrt, (POS,)), (f_np_square, (ANY,)), (f_np_abs, (NONZERO,)), (f_np_fabs, (NONZERO,)),
    (f_np_hypot, (NONZERO, NONZERO)), (f_np_power, (POS, ANY)), (f_np_negative, (ANY,)),
    (f_np_floor, (NOINT,)), (f_np_ceil, (NOINT,)), (f_np_sign, (NONZERO,)),
    (f_np_round, (ANY.filter(lambda v: not_near_integer(v) and not_near_integer(v + 0.5)),)),
    (f_np_clip, (away_from(ANY, [-1.0, 1.0], 1e-3),)),
]

# Functions with kinks/jumps that need a relation between the arguments.
PAIR_CASES = [
    (f_mod, lambda x, y: y > 0.1 and not_near_integer(x / y, 1e-3), (ANY, POS)),
    (f_np_mod, lambda x, y: y > 0.1 and not_near_integer(x / y, 1e-3), (ANY, POS)),
    (f_mod_const, lambda x, y: not_near_integer(x * y / 1.5, 1e-3), (ANY, ANY)),
    (f_max, lambda x, y: abs(x - y) > 1e-3, (ANY, ANY)),
    (f_min, lambda x, y: abs(x - y) > 1e-3, (ANY, ANY)),
    (f_max_const, lambda x, y: abs(x - 0.5) > 1e-3 and abs(y + 0.5) > 1e-3, (ANY, ANY)),
    (f_np_maximum, lambda x, y: abs(x - y) > 1e-3, (ANY, ANY)),
    (f_np_minimum, lambda x, y: abs(x - y) > 1e-3, (ANY, ANY)),
    (f_np_fmax, lambda x, y: abs(x - y) > 1e-3, (ANY, ANY)),
    (f_np_fmin, lambda x, y: abs(x - y) > 1e-3, (ANY, ANY)),
    (f_np_where, lambda x, y: abs(x - y) > 1e-3, (ANY, ANY)),
]

_GRADS = {}

def gradfn(func, target, wrt):
    key = (func, target, wrt)
    if key not in _GRADS:
        _GRADS[key] = srcgrad.grad(func, wrt=wrt, target=target)
    return _GRADS[key]


def all_wrt(func):
    n = func.__code__.co_argcount
    return 0 if n == 1 else tuple(range(n))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0].__name__)
def test_rule_float64(case, target):
    func, strategies = case
    wrt = all_wrt(func)
    g = gradfn(func, target, wrt)

    @SETTINGS
    @given(st.tuples(*strategies))
    def run(args):
        check_grad(func, args, wrt=wrt, target=target, rtol=1e-5, atol=1e-6, gradfn=g)

    run()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", PAIR_CASES, ids=lambda c: c[0].__name__)
def test_rule_kinked_float64(case, target):
    func, valid, strategies = case
    wrt = all_wrt(func)
    g = gradfn(func, target, wrt)

    @SETTINGS
    @given(st.tuples(*strategies))
    def run(args):
        assume(valid(*args))
        check_grad(func, args, wrt=wrt, target=target, rtol=1e-5, atol=1e-6, gradfn=g)

    run()


def test_clip_with_active_bounds(target):
    g = gradfn(f_np_clip_bounds, target, (0, 1, 2))
    # inside, below, above
    assert g(0.3, -1.0, 1.0) == (1.0, 0.0, 0.0)
    assert g(-2.0, -1.0, 1.0) == (0.0, 1.0, 0.0)
    assert g(2.0, -1.0, 1.0) == (0.0, 0.0, 1.0)


def test_max_min_ties_go_to_first_argument(target):
    assert gradfn(f_max, target, (0, 1))(1.5, 1.5) == (2.0, 0.0)
    assert gradfn(f_min, target, (0, 1))(1.5, 1.5) == (2.0, 0.0)


def test_floor_ceil_have_zero_derivative(target):
    assert gradfn(f_floor, target, 0)(1.25) == pytest.approx(2.5)
    assert gradfn(f_ceil, target, 0)(-1.25) == pytest.approx(-2.5)


# ------------------------------------------------------------------------------------------------
# float32 inputs: loops over float32 arrays, compared with FD in float64 at a looser tolerance
# ------------------------------------------------------------------------------------------------

def f32_sum_sin_exp(a):
    s = 0.0
    for i in range(a.shape[0]):
        s += np.sin(a[i]) * np.exp(0.1 * a[i]) + math.log(1.0 + a[i] * a[i])
    return s


def f32_mixed(a, b):
    s = 0.0
    for i in range(a.shape[0]):
        s += np.tanh(a[i] * b[i]) + np.sqrt(1.0 + b[i] * b[i]) / (2.0 + np.cos(a[i]))
        s += np.maximum(a[i], b[i]) * np.arctan2(a[i], 2.0 + b[i] * b[i])
    return s


@pytest.mark.parametrize("target", TARGETS)
@SETTINGS
@given(values=st.lists(floats(-2.0, 2.0), min_size=1, max_size=6))
def test_float32_array_elementwise(values, target):
    a = np.array(values, dtype=np.float32)
    g = check_grad(f32_sum_sin_exp, (a,), wrt=0, target=target, rtol=1e-3, atol=1e-3,
                   gradfn=gradfn(f32_sum_sin_exp, target, 0))
    assert g.dtype == np.float32


@pytest.mark.parametrize("target", TARGETS)
@SETTINGS
@given(pairs=st.lists(st.tuples(floats(-2.0, 2.0), floats(-2.0, 2.0)).filter(lambda t: abs(t[0] - t[1]) > 1e-2),
                min_size=1, max_size=5))
def test_float32_two_arrays(pairs, target):
    a = np.array([p[0] for p in pairs], dtype=np.float32)
    b = np.array([p[1] for p in pairs], dtype=np.float32)
    ga, gb = check_grad(f32_mixed, (a, b), wrt=(0, 1), target=target, rtol=1e-3, atol=1e-3,
                        gradfn=gradfn(f32_mixed, target, (0, 1)))
    assert ga.dtype == np.float32 and gb.dtype == np.float32


@pytest.mark.parametrize("target", TARGETS)
def test_float32_scalar_argument(target):
    g = gradfn(f_sin, target, 0)(np.float32(0.5))
    assert isinstance(g, float)
    assert g == pytest.approx(math.cos(0.5), rel=1e-6)
