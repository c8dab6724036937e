"""Every derivative rule of srcgrad.rules, on scalar floats, for both targets.

Hypothesis draws inputs inside each function's domain (and away from kinks and jumps, where a
finite difference is meaningless); the gradient is compared with central finite differences in
float64. The python target runs one test per rule (the generated code without compiling). The
compiled target gets every rule at once: one function with one group of arguments per rule (the
rule functions' bodies, summed), compiled once, its gradient compared slice by slice with each
rule function's finite differences; a per-rule cpu compile cost about a second each.
"""
import ast
import inspect
import math
import textwrap

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import srcgrad
from conftest import TARGETS, check_grad, fd_scalar
from fuzz_programs import load_program

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


def f_erf(x):
    return math.erf(x)


def f_erfc(x):
    return math.erfc(x)


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
    (f_cosh, (ANY,)), (f_tanh, (ANY,)), (f_exp, (ANY,)), (f_expm1, (ANY,)), (f_erf, (ANY,)),
    (f_erfc, (ANY,)), (f_log, (POS,)),
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
    (f_np_clip_bounds, lambda x, lo, hi: abs(x - lo) > 1e-3 and abs(x - hi) > 1e-3,
     (ANY, floats(-2.0, -0.1), floats(0.1, 2.0))),
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


@pytest.mark.parametrize("target", ["python"])      # cpu: test_every_rule_compiled_in_one_function
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


@pytest.mark.parametrize("target", ["python"])      # cpu: test_every_rule_compiled_in_one_function
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


# Exact gradients at special points: (function, arguments, gradient). Checked per function on the
# python target and through the one-function bundle on the cpu target.
SPECIAL_POINTS = [
    (f_np_clip_bounds, (0.3, -1.0, 1.0), (1.0, 0.0, 0.0)),       # inside
    (f_np_clip_bounds, (-2.0, -1.0, 1.0), (0.0, 1.0, 0.0)),      # below: the lower bound's
    (f_np_clip_bounds, (2.0, -1.0, 1.0), (0.0, 0.0, 1.0)),       # above
    (f_max, (1.5, 1.5), (2.0, 0.0)),                             # ties go to the first argument
    (f_min, (1.5, 1.5), (2.0, 0.0)),
    (f_floor, (1.25,), (2.5,)),                                  # floor/ceil: zero derivative
    (f_ceil, (-1.25,), (-2.5,)),
]


@pytest.mark.parametrize("case", SPECIAL_POINTS, ids=lambda c: f"{c[0].__name__}{c[1]}")
def test_special_points_python(case):
    func, args, expected = case
    got = gradfn(func, "python", all_wrt(func))(*args)
    assert (got if isinstance(got, tuple) else (got,)) == pytest.approx(expected, abs=1e-15)


# ------------------------------------------------------------------------------------------------
# The compiled target: every rule in one function, one compile
# ------------------------------------------------------------------------------------------------

class _Rename(ast.NodeTransformer):
    def __init__(self, names):
        self.names = names

    def visit_Name(self, node):
        if node.id in self.names:
            return ast.copy_location(ast.Name(id=self.names[node.id], ctx=node.ctx), node)
        return node


def bundle_source(funcs, name):
    """Source of ``name``: the sum of every ``funcs`` body (each a single return expression), each
    function's parameters renamed ``<function>__<parameter>`` and all of them taken in order."""
    params, lines = [], []
    for func in funcs:
        fdef = ast.parse(textwrap.dedent(inspect.getsource(func))).body[0]
        assert len(fdef.body) == 1 and isinstance(fdef.body[0], ast.Return), func.__name__
        names = {a.arg: f"{func.__name__[2:]}__{a.arg}" for a in fdef.args.args}
        params += names.values()
        lines.append(f"    s += {ast.unparse(_Rename(names).visit(fdef.body[0].value))}")
    return ("import math\n\nimport numpy as np\n\n\n"
            f"def {name}({', '.join(params)}):\n    s = 0.0\n" + "\n".join(lines) + "\n    return s\n")


BUNDLE = [(func, st.tuples(*strategies)) for func, strategies in CASES] + \
    [(func, st.tuples(*strategies).filter(lambda args, valid=valid: valid(*args)))
     for func, valid, strategies in PAIR_CASES]


@pytest.fixture(scope="module")
def compiled_bundle():
    func = load_program(bundle_source([f for f, _ in BUNDLE], "all_rules")).all_rules
    n = func.__code__.co_argcount
    return func, srcgrad.value_and_grad(func, wrt=tuple(range(n)), target="cpu")


def _unbundle(grads, groups):
    out, pos = [], 0
    for group in groups:
        out.append(tuple(grads[pos:pos + len(group)]))
        pos += len(group)
    return out


def test_every_rule_compiled_in_one_function(compiled_bundle):
    func, g = compiled_bundle
    checked = []

    @SETTINGS
    @given(st.tuples(*(strategy for _, strategy in BUNDLE)))
    def run(groups):
        args = [v for group in groups for v in group]
        value, grads = g(*args)
        assert math.isclose(value, func(*args), rel_tol=1e-12, abs_tol=1e-12)
        for (rule_func, _), group, got in zip(BUNDLE, groups, _unbundle(grads, groups)):
            for index, gi in enumerate(got):
                assert type(gi) is float
                fd = fd_scalar(rule_func, group, index)
                assert math.isclose(gi, fd, rel_tol=1e-5, abs_tol=1e-6), \
                    f"{rule_func.__name__} d/d arg {index} at {group}: cpu {gi!r} vs FD {fd!r}"
        checked.append(1)

    run()
    assert len(checked) == SETTINGS.max_examples


def test_special_points_compiled(compiled_bundle):
    _, g = compiled_bundle
    funcs = [f for f, _ in BUNDLE]
    base = [(0.5,) * f.__code__.co_argcount for f in funcs]     # any point: only the overridden
    for func, args, expected in SPECIAL_POINTS:                 # function's slice is checked
        groups = list(base)
        groups[funcs.index(func)] = args
        _, grads = g(*[v for group in groups for v in group])
        assert _unbundle(grads, groups)[funcs.index(func)] == pytest.approx(expected, abs=1e-15), \
            (func.__name__, args)


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
