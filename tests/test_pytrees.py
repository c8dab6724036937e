"""Parameters as pytrees: tuples, lists and dicts (nested) of arrays and floats as arguments.

Each program is checked against central finite differences (tests/pytree_check.py) on the python
target; a representative subset also compiled (target="cpu").
"""
import numpy as np
import pytest

import srcgrad
from pytree_check import check_tree_grad

RNG = np.random.default_rng(7)


def mlp_params(sizes, dtype=np.float64):
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((m, n)).astype(dtype) * 0.5, rng.standard_normal(n).astype(dtype) * 0.1)
            for m, n in zip(sizes[:-1], sizes[1:])]


# -- programs -----------------------------------------------------------------------------------

def mlp_loop(params, x, y):
    h = x
    for W, b in params[:-1]:
        h = np.tanh(h @ W + b)
    W, b = params[-1]
    out = h @ W + b
    return np.mean((out - y) ** 2)


def mlp_enumerate(params, x):
    h = x
    for i, (W, b) in enumerate(params):
        if i < len(params) - 1:
            h = np.tanh(h @ W + b)
        else:
            h = h @ W + b
    return np.sum(h ** 2)


def mlp_range_len(params, x):
    h = x
    for i in range(len(params)):
        W, b = params[i]
        h = np.tanh(h @ W + b)
    return np.sum(h)


def dict_params(p, x):
    h = np.tanh(x @ p["W1"] + p["b1"])
    return np.sum((h @ p["W2"]) ** 2) + p["scale"] * np.sum(h)


def nested_dict(p, x):
    enc = p["enc"]
    z = np.tanh(x @ enc["W"] + enc["b"])
    dec = p["dec"]
    return np.sum((z @ dec[0]) ** 2) + dec[1] * np.sum(z)


def tuple_and_int_leaf(state, scale):
    a, b, n = state
    return scale * np.sum(a * b) * n


def layer(h, W, b):
    return np.tanh(h @ W + b)


def layer_tuple(h, wb):
    W, b = wb
    return np.tanh(h @ W + b)


def forward(params, x):
    h = x
    for p in params:
        h = layer_tuple(h, p)
    return h


def helper_pytree(params, x):
    return np.sum(forward(params, x) ** 2)


def helper_leaves(params, x):
    h = x
    for W, b in params:
        h = layer(h, W, b)
    return np.sum(h ** 2)


def dict_items_loop(p, x):
    total = 0.0
    for name, w in p.items():
        total = total + np.sum(np.sin(w * x))
    for w in p.values():
        total = total + np.sum(w ** 2)
    for key in p:
        total = total + np.sum(p[key])
    return total


def zip_two_trees(ws, bs, x):
    s = 0.0
    for w, b in zip(ws, bs):
        s = s + np.sum(np.tanh(w * x + b))
    return s


def reversed_loop(ws, x):
    h = x
    for w in reversed(ws):
        h = np.sin(h * w)
    return np.sum(h)


def regularizer(params, lam):
    return lam * sum([np.sum(W ** 2) for W, b in params])


def stacked(ws):
    return np.sum(np.stack(ws) ** 2)


def loop_over_tree_in_range(params, x, steps):
    s = 0.0
    for t in range(steps):
        for W, b in params:
            s = s + (t + 1.0) * np.sum(np.tanh(x @ W + b))
    return s


def scalar_leaves(p):
    a, b = p
    return a * a * b + np.sin(b)


# -- tests ----------------------------------------------------------------------------------------

X = RNG.standard_normal((4, 3))
Y = RNG.standard_normal((4, 2))


@pytest.mark.parametrize("program,args", [
    (mlp_loop, (mlp_params([3, 5, 2]), X, Y)),
    (mlp_enumerate, (mlp_params([3, 4, 4, 2]), X)),
    (mlp_range_len, (mlp_params([3, 4, 2]), X)),
    (helper_pytree, (mlp_params([3, 4, 2]), X)),
    (helper_leaves, (mlp_params([3, 4, 2]), X)),
    (loop_over_tree_in_range, (mlp_params([3, 3]), X, 3)),
])
def test_list_of_tuples(program, args):
    grads = check_tree_grad(program, args, wrt="params")
    assert isinstance(grads, list) and all(isinstance(layer, tuple) for layer in grads)


def test_dict_params_keep_keys_in_order():
    p = {"W2": RNG.standard_normal((4, 2)), "W1": RNG.standard_normal((3, 4)),
         "b1": RNG.standard_normal(4), "scale": 0.7}
    grads = check_tree_grad(dict_params, (p, X), wrt="p")
    assert list(grads) == ["W2", "W1", "b1", "scale"]
    assert isinstance(grads["scale"], float)


def test_nested_dict_and_list():
    p = {"enc": {"W": RNG.standard_normal((3, 4)), "b": RNG.standard_normal(4)},
         "dec": [RNG.standard_normal((4, 2)), 1.3]}
    check_tree_grad(nested_dict, (p, X), wrt="p")


def test_int_leaves_are_carried_not_differentiated():
    state = (RNG.standard_normal(5), RNG.standard_normal(5), 3)
    grads = check_tree_grad(tuple_and_int_leaf, (state, 2.0), wrt=("state", "scale"))
    assert grads[0][2] is None


def test_int_array_leaf_gets_none():
    def f(p):
        return np.sum(p[0][p[1]])
    grads = srcgrad.grad(f, target="python")((np.arange(5.0), np.array([0, 2, 2])))
    np.testing.assert_allclose(grads[0], [1.0, 0.0, 2.0, 0.0, 0.0])
    assert grads[1] is None


def test_dict_iteration_forms():
    p = {"a": RNG.standard_normal(3), "b": RNG.standard_normal(3)}
    check_tree_grad(dict_items_loop, (p, 0.5), wrt="p")


def test_zip_and_reversed():
    ws = [RNG.standard_normal(3) for _ in range(3)]
    bs = (RNG.standard_normal(3), RNG.standard_normal(3), RNG.standard_normal(3))
    check_tree_grad(zip_two_trees, (ws, bs, 0.3), wrt=("ws", "bs"))
    check_tree_grad(reversed_loop, (ws, 0.9), wrt="ws")


def test_comprehension_over_pytree_and_stack():
    check_tree_grad(regularizer, (mlp_params([3, 4, 2]), 0.1), wrt="params")
    check_tree_grad(stacked, ([RNG.standard_normal(3) for _ in range(3)],), wrt="ws")


def test_scalar_leaves_and_value_and_grad():
    p = (1.5, -0.4)
    check_tree_grad(scalar_leaves, (p,), wrt=0)
    value, grads = srcgrad.value_and_grad(scalar_leaves, target="python")(p)
    assert value == pytest.approx(scalar_leaves(p))
    assert isinstance(grads, tuple) and len(grads) == 2


def test_vjp_with_pytree():
    def f(p, x):
        return np.tanh(x @ p["W"]) * p["s"]
    p = {"W": RNG.standard_normal((3, 2)), "s": 2.0}
    value, pullback = srcgrad.vjp(f, wrt="p", target="python")(p, X)
    seed = RNG.standard_normal(value.shape)
    grads = pullback(seed)

    def scalar(p, x):
        return np.sum(seed * f(p, x))
    expected = check_tree_grad(scalar, (p, X), wrt="p")
    np.testing.assert_allclose(grads["W"], expected["W"])
    assert grads["s"] == pytest.approx(expected["s"])


def test_structure_is_part_of_the_key():
    g = srcgrad.grad(mlp_enumerate, wrt="params", target="python")
    two = g(mlp_params([3, 4, 2]), X)
    three = g(mlp_params([3, 4, 4, 2]), X)
    assert len(two) == 2 and len(three) == 3
    again = g(mlp_params([3, 4, 2]), X)
    np.testing.assert_allclose(again[0][0], two[0][0])
    as_tuple = g(tuple(mlp_params([3, 4, 2])), X)
    assert isinstance(as_tuple, tuple)


def test_float32_pytree():
    params = mlp_params([3, 4, 2], np.float32)
    grads = srcgrad.grad(mlp_loop, wrt="params", target="python")(params, X.astype(np.float32),
                                                                  Y.astype(np.float32))
    assert grads[0][0].dtype == np.float32
    check_tree_grad(mlp_loop, (params, X.astype(np.float32), Y.astype(np.float32)), wrt="params",
                    rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("program,args", [
    (mlp_loop, (mlp_params([3, 5, 2]), X, Y)),
    (helper_pytree, (mlp_params([3, 4, 2]), X)),
])
def test_compiled_subset(program, args):
    check_tree_grad(program, args, wrt="params", target="cpu")


def test_compiled_dict_params():
    p = {"W1": RNG.standard_normal((3, 4)), "b1": RNG.standard_normal(4),
         "W2": RNG.standard_normal((4, 2)), "scale": 0.7}
    check_tree_grad(dict_params, (p, X), wrt="p", target="cpu")


# -- errors ---------------------------------------------------------------------------------------

def index_by_argument(params, k):
    return np.sum(params[k])


def index_in_runtime_loop(params, n):
    s = 0.0
    for i in range(n):
        s = s + np.sum(params[i])
    return s


def assign_into_pytree(params):
    params[0] = params[0] * 2.0
    return np.sum(params[0])


def bad_unpack(params):
    a, b, c = params
    return np.sum(a)


def pytree_as_value(p):
    q = p
    return np.sum(np.tanh(q))


def missing_key(p):
    return np.sum(p["nope"])


def break_in_pytree_loop(params):
    s = 0.0
    for w in params:
        if s > 1.0:
            break
        s = s + np.sum(w)
    return s


def in_place_update(params):
    W, b = params
    W += 1.0
    return np.sum(W)


@pytest.mark.parametrize("program,args,match", [
    (index_by_argument, ([np.ones(2), np.ones(2)], 1), "known at specialization"),
    (index_in_runtime_loop, ([np.ones(2), np.ones(2)], 2), "known at specialization"),
    (assign_into_pytree, ([np.ones(2), np.ones(2)],), "cannot assign into the pytree"),
    (bad_unpack, ([np.ones(2), np.ones(2)],), "cannot unpack a pytree of 2 items into 3"),
    (pytree_as_value, ({"a": np.ones(2)},), "used as a value"),
    (missing_key, ({"a": np.ones(2)},), "has no key 'nope'"),
    (break_in_pytree_loop, ([np.ones(2), np.ones(2)],), "loop over a pytree"),
    (in_place_update, ((np.ones(2), np.ones(2)),), "augmented assignment"),
])
def test_errors_name_the_construct(program, args, match):
    with pytest.raises(srcgrad.SrcgradError, match=match) as info:
        srcgrad.grad(program, target="python")(*args)
    assert "test_pytrees.py:" in str(info.value)


def test_bad_wrt_leaves():
    def f(p):
        return float(p[0])
    with pytest.raises(TypeError, match="no float leaves"):
        srcgrad.grad(f, target="python")((1, 2))


def test_unsupported_leaf_type():
    with pytest.raises(TypeError, match="unsupported type str"):
        srcgrad.grad(mlp_loop, wrt="params", target="python")([("a", np.ones(2))], X, Y)
