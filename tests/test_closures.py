"""Module data, closures, lambdas, nested functions, keyword/default arguments, NumPy functions
passed directly.

Every gradient is checked against central finite differences (tests/pytree_check.py) on the
python target, a subset compiled (target="cpu").
"""
import numpy as np
import pytest
import scipy.special

import srcgrad
from pytree_check import check_tree_grad

RNG = np.random.default_rng(11)

# module data read by the functions below (re-read at every call)
inputs = RNG.standard_normal((6, 3))
targets = RNG.standard_normal(6)
DATA = {"x": RNG.standard_normal(4), "w": RNG.standard_normal(4)}
SCALE = 0.5
STEPS = 3


def predict(w, x):
    return np.tanh(x @ w)


def loss(w, x, y):
    return np.mean((predict(w, x) - y) ** 2)


def objective(w):
    return loss(w, inputs, targets) * SCALE


def objective_pytree_global(w):
    return np.sum(DATA["w"] * np.sin(w * DATA["x"]))


def objective_steps(w):
    s = 0.0
    for k in range(STEPS):
        s = s + np.sum(np.cos(w * (k + 1.0)))
    return s


def make_loss(x, y, reg):
    def loss_closure(w):
        return np.sum((x @ w - y) ** 2) + reg * np.sum(w ** 2)
    return loss_closure


def with_nested_def(w, x):
    scale = 2.0

    def f(t):
        return np.tanh(t * scale) * x
    return np.sum(f(w) + f(2.0 * w))


def with_nested_def_on_params(w, x):
    def layer(h):
        return np.tanh(h @ w)
    return np.sum(layer(layer(x)))


def apply_twice(f, v):
    return f(f(v))


def with_lambda_argument(w):
    c = 0.3
    return np.sum(apply_twice(lambda v: np.sin(v) + c * w, w))


def with_function_argument(w):
    return np.sum(apply_twice(np.tanh, w))


def simulate(v, steps=4, dt=0.1, damping=None):
    s = 0.0
    for k in range(steps):
        if damping is None:
            s = s + dt * np.sum(np.sin(v * (k + 1.0)))
        else:
            s = s + dt * np.sum(np.sin(v) - damping * v * k)
    return s


def with_defaults(v):
    return simulate(v) + simulate(v, steps=2, damping=0.5) + simulate(v, 3, dt=0.05)


def likelihood_with_eye(L, x):
    S = L @ L.T + np.eye(3)
    return np.sum(x @ S * x)


LAMBDA_A = lambda x: np.sum(x ** 2)  # noqa: E731
LAMBDA_B, LAMBDA_C = (lambda x: np.sum(np.sin(x)), lambda y: np.sum(np.cos(y) * 2.0))  # noqa: E731


# The compiled (cpu) cases the default run keeps: the MLP of test_real_mlp_with_globals_and_lambda
# (pytree, module data, lambda, nested def), a factory closure, nested defs, defaults, module data
# through helpers; the others are marked slow.

# -- module data and closures ----------------------------------------------------------------------

@pytest.mark.parametrize("target", ["python", pytest.param("cpu", marks=pytest.mark.slow)])
def test_global_arrays_are_constants_of_the_call(target):
    w = RNG.standard_normal(3)
    check_tree_grad(objective, (w,), target=target)


def test_rebinding_a_global_changes_the_result():
    global inputs, targets, SCALE
    g = srcgrad.value_and_grad(objective, target="python")
    w = RNG.standard_normal(3)
    value1, grad1 = g(w)
    saved = inputs, SCALE, targets
    try:
        inputs = 2.0 * saved[0]
        SCALE = 0.25
        value2, grad2 = g(w)
        assert value2 == pytest.approx(objective(w))
        check_tree_grad(objective, (w,), target="python", gradfn=srcgrad.grad(objective, target="python"))
        assert value2 != pytest.approx(value1)
        inputs, targets = saved[0][:4], targets[:4]     # another shape: same kinds, still re-read
        value3, _ = g(w)
        assert value3 == pytest.approx(objective(w))
    finally:
        inputs, SCALE, targets = saved
    assert g(w)[0] == pytest.approx(value1)


def test_global_data_is_not_baked_into_the_cached_file():
    g = srcgrad.grad(objective, target="python")
    g(RNG.standard_normal(3))
    source = g.source
    assert "inputs" in source.split("def objective(")[1].split(")")[0]
    assert repr(float(inputs[0, 0]))[:8] not in source
    assert "0.5" not in source.split("def objective(")[1].split("return")[0]   # SCALE is passed too


def test_global_int_rebinding_respecializes():
    global STEPS
    g = srcgrad.grad(objective_steps, target="python")
    w = RNG.standard_normal(2)
    first = g(w)
    saved = STEPS
    try:
        STEPS = 5
        np.testing.assert_allclose(g(w), srcgrad.grad(objective_steps, target="python")(w))
        check_tree_grad(objective_steps, (w,))
        assert not np.allclose(g(w), first)
    finally:
        STEPS = saved


def test_global_pytree_data():
    check_tree_grad(objective_pytree_global, (RNG.standard_normal(4),))


def test_factory_closure(target):
    x, y = RNG.standard_normal((5, 3)), RNG.standard_normal(5)
    f = make_loss(x, y, 0.1)
    check_tree_grad(f, (RNG.standard_normal(3),), target=target)
    other = make_loss(2.0 * x, y, 1.0)         # same source, other closure values
    w = RNG.standard_normal(3)
    np.testing.assert_allclose(srcgrad.grad(other, target=target)(w),
                               2 * (2 * x).T @ ((2 * x) @ w - y) + 2.0 * w, rtol=1e-10)


# -- nested functions, lambdas, function arguments ---------------------------------------------------

def test_nested_def_closing_over_locals(target):
    check_tree_grad(with_nested_def, (RNG.standard_normal(3), RNG.standard_normal(3)),
                    wrt=("w", "x"), target=target)


def test_nested_def_closing_over_the_differentiated_argument():
    check_tree_grad(with_nested_def_on_params, (RNG.standard_normal((3, 3)), RNG.standard_normal((2, 3))))


def test_lambda_passed_to_a_helper():
    check_tree_grad(with_lambda_argument, (RNG.standard_normal(3),))


def test_numpy_function_passed_to_a_helper():
    check_tree_grad(with_function_argument, (RNG.standard_normal(3),))


def test_lambdas_at_module_level(target):
    x = RNG.standard_normal(4)
    np.testing.assert_allclose(srcgrad.grad(LAMBDA_A, target=target)(x), 2 * x)
    np.testing.assert_allclose(srcgrad.grad(LAMBDA_B, target="python")(x), np.cos(x))
    np.testing.assert_allclose(srcgrad.grad(LAMBDA_C, target="python")(x), -2.0 * np.sin(x))


def test_inline_lambda():
    g = srcgrad.grad(lambda x: np.sum(np.exp(x) * SCALE), target="python")
    x = RNG.standard_normal(3)
    np.testing.assert_allclose(g(x), np.exp(x) * SCALE)


def test_two_lambdas_with_the_same_parameters_on_one_line():
    f, h = (lambda x: np.sum(x ** 3)), (lambda x: np.sum(x * 2.0))
    x = RNG.standard_normal(3)
    np.testing.assert_allclose(srcgrad.grad(f, target="python")(x), 3 * x ** 2)
    np.testing.assert_allclose(srcgrad.grad(h, target="python")(x), 2.0 * np.ones(3))


# -- keyword and default arguments -----------------------------------------------------------------

def test_helper_keywords_defaults_and_none(target):
    check_tree_grad(with_defaults, (RNG.standard_normal(3),), target=target)


# -- NumPy/SciPy functions ---------------------------------------------------------------------------

@pytest.mark.parametrize("func,args", [
    (np.tanh, (0.3,)),
    (np.sin, (0.7,)),
    (np.hypot, (0.3, 0.4)),
])
def test_numpy_function_passed_directly(func, args):
    g = srcgrad.grad(func, target="python")
    check_tree_grad(func, args, gradfn=g, fd_function=lambda *a: np.sum(func(*a)))


def test_vjp_of_numpy_sum_and_tanh():
    x = RNG.standard_normal(4)
    value, pullback = srcgrad.vjp(np.sum, target="python")(x)
    assert value == pytest.approx(np.sum(x))
    np.testing.assert_allclose(pullback(2.0), 2.0 * np.ones(4))
    value, pullback = srcgrad.vjp(np.tanh, target="python")(x)
    seed = RNG.standard_normal(4)
    np.testing.assert_allclose(pullback(seed), seed * (1 - np.tanh(x) ** 2))


@pytest.mark.parametrize("target", ["python", pytest.param("cpu", marks=pytest.mark.slow)])
def test_numpy_python_functions_are_library_calls_not_helpers(target):
    # np.eye is written in Python: a constant of the likelihood, never transformed as user code
    def uses_eye(L, x):
        return likelihood_with_eye(L, x) + np.sum(np.identity(3) * L)
    L, x = RNG.standard_normal((3, 3)), RNG.standard_normal(3)
    check_tree_grad(uses_eye, (L, x), wrt=(0, 1), target=target)


def test_library_python_function_is_not_a_helper():
    from srcgrad.program import is_helper
    assert not is_helper(np.eye) and not is_helper(scipy.special.logsumexp)
    assert is_helper(likelihood_with_eye)


def test_scipy_logsumexp_is_a_library_call():
    def f(x):
        return scipy.special.logsumexp(x)
    try:
        g = srcgrad.grad(f, target="python")(RNG.standard_normal(3))
    except srcgrad.SrcgradError as exc:
        assert "logsumexp" in str(exc) and "register" in str(exc)
    else:
        x = RNG.standard_normal(3)
        np.testing.assert_allclose(srcgrad.grad(f, target="python")(x), np.exp(x) / np.sum(np.exp(x)))
        assert g.shape == (3,)


# -- errors ------------------------------------------------------------------------------------------

def rebinds_nested(x):
    def inner():
        nonlocal x
        x = x * 2.0
        return x
    return inner()


def unknown_keyword(x):
    return simulate(x, stride=2)


def recursive_lambda(x):
    def fact(n, v):
        return v if n == 0 else fact(n - 1, v * 2.0)
    return fact(2, x)


def array_default(v, w=np.ones(3)):
    return np.sum(v * w)


def calls_array_default(v):
    return array_default(v)


@pytest.mark.parametrize("program,match", [
    (rebinds_nested, "nonlocal"),
    (unknown_keyword, "no parameter 'stride'"),
    (recursive_lambda, "recursion"),
    (calls_array_default, "default value"),
])
def test_errors_name_the_construct(program, match):
    with pytest.raises(srcgrad.SrcgradError, match=match) as info:
        srcgrad.grad(program, target="python")(np.ones(3))
    assert "test_closures.py:" in str(info.value)


def test_float32_with_module_floats(target):
    # a Python float read from the module runs as float32 in float32 working precision
    w = RNG.standard_normal(3).astype(np.float32)
    g = srcgrad.grad(lambda v: np.sum(np.sin(v) * SCALE), target=target)(w)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, np.cos(w) * SCALE, rtol=1e-6)


def test_njit_entry_refuses_module_data():
    import numba

    entry = srcgrad.grad(objective).njit

    @numba.njit
    def call(w):
        return entry(w)
    with pytest.raises(Exception, match="module data or closure"):
        call(np.ones(3))


def reads_globals_itself(w):
    return np.sum((inputs @ w - targets) ** 2) * SCALE


def calls_a_helper_that_reads_globals(w, c):
    return reads_globals_itself(w) + reads_globals_itself(c * w)


def test_module_data_threaded_through_helpers(target):
    check_tree_grad(calls_a_helper_that_reads_globals, (RNG.standard_normal(3), 0.7), wrt=(0, 1),
                    target=target)


def test_pytree_and_closure_in_a_nested_function():
    def model(params, x):
        def block(h, k):
            W, b = params[k]
            return np.tanh(h @ W + b)
        return np.sum(block(block(x, 0), 1) ** 2) * SCALE
    params = [(RNG.standard_normal((3, 3)), RNG.standard_normal(3)) for _ in range(2)]
    check_tree_grad(model, (params, RNG.standard_normal((2, 3))), wrt="params")


def test_cached_module_reads_the_current_global(target):
    # a second GradFunction loads the module generated for the first from the cache directory:
    # the data is an argument of that module, so the current value is used
    global inputs
    w = RNG.standard_normal(3)
    srcgrad.grad(objective, target=target)(w)
    saved = inputs
    try:
        inputs = saved + 1.0
        fresh = srcgrad.value_and_grad(objective, target=target)
        value, _ = fresh(w)
        assert value == pytest.approx(objective(w))
        assert fresh._last.path.startswith(srcgrad.codegen.cache_dir())
    finally:
        inputs = saved


def test_numpy_function_passed_directly_compiled():
    g = srcgrad.grad(np.tanh, target="cpu")
    assert g(0.3) == pytest.approx(1 - np.tanh(0.3) ** 2)


def integrate(v, steps=4, dt=0.1, damping=None):
    for k in range(steps):
        if damping is None:
            v = v + dt * np.sin(v)
        else:
            v = v + dt * (np.sin(v) - damping * v)
    return v


def with_defaults_state(v):
    return np.sum(integrate(v) ** 2) + np.sum(integrate(v, steps=2, damping=0.5)) + \
        np.sum(integrate(v, 3, dt=0.05))


def test_helper_with_defaults_rebinding_its_state():
    check_tree_grad(with_defaults_state, (RNG.standard_normal(3),))


# an MLP as people write it: list-of-tuples parameters, data in module globals, an activation
# passed as a lambda, a nested helper closing over the data
X_TRAIN = RNG.standard_normal((8, 3))
Y_TRAIN = RNG.standard_normal((8, 2))


def mlp_forward(params, x, activation):
    h = x
    for W, b in params[:-1]:
        h = activation(h @ W + b)
    W, b = params[-1]
    return h @ W + b


def mlp_objective(params):
    def residual(out):
        return out - Y_TRAIN
    out = mlp_forward(params, X_TRAIN, lambda z: np.tanh(z) * SCALE + z * 0.1)
    return np.mean(residual(out) ** 2)


def test_real_mlp_with_globals_and_lambda(target):
    rng = np.random.default_rng(5)
    params = [(rng.standard_normal((3, 4)), rng.standard_normal(4)),
              (rng.standard_normal((4, 2)), rng.standard_normal(2))]
    check_tree_grad(mlp_objective, (params,), target=target)
