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


def apply_layer(params, k, h):
    W, b = params[k]
    return np.tanh(h @ W + b)


def helper_indexed_by_constant(params, x):
    # the helper indexes the pytree by its argument: specialized on the constant it is given
    return np.sum(apply_layer(params, 1, apply_layer(params, 0, x)) ** 2)


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
    (helper_indexed_by_constant, (mlp_params([3, 4, 2]), X)),
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


@pytest.mark.slow          # the default run compiles a pytree MLP in tests/test_closures.py
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


# -- names bound to different leaves on different paths ----------------------------------------------

def choose_leaf(params, c):
    if c > 0:
        W = params[0]
    else:
        W = params[1]
    return np.sum(W ** 2)


def rebind_leaf_in_loop(params, n):
    W = params[0]
    s = 0.0
    for i in range(n):
        s = s + np.sum(W * (i + 1.0))
        W = params[1]
    return s


def test_leaf_chosen_at_runtime():
    params = [RNG.standard_normal(3), RNG.standard_normal(3)]
    for c in (1.0, -1.0):
        check_tree_grad(choose_leaf, (params, c), wrt="params")
    check_tree_grad(rebind_leaf_in_loop, (params, 3), wrt="params")
    check_tree_grad(rebind_leaf_in_loop, (params, 0), wrt="params")


# -- optimizers and the compiled training loop --------------------------------------------------------

def test_optimizer_steps_on_pytrees():
    from srcgrad import optim
    params = mlp_params([3, 4, 2])
    reference = [(W.copy(), b.copy()) for W, b in params]
    grads = srcgrad.grad(mlp_loop, wrt="params", target="python")(params, X, Y)
    optim.SGD(params, lr=0.1).step(params, grads)
    for (W, b), (W0, b0), (gW, gb) in zip(params, reference, grads):
        np.testing.assert_allclose(W, W0 - 0.1 * gW)
        np.testing.assert_allclose(b, b0 - 0.1 * gb)
    p = {"W": np.ones((2, 2)), "b": np.zeros(2)}
    g = {"W": np.full((2, 2), 0.5), "b": np.ones(2)}
    optim.Momentum(p, lr=0.1, momentum=0.0).step(p, g)
    np.testing.assert_allclose(p["W"], 0.95)
    np.testing.assert_allclose(p["b"], -0.1)
    with pytest.raises(ValueError, match="structure"):
        optim.SGD(params, lr=0.1).step(params, [grads[0]])


def test_minibatch_loop_with_pytree_params():
    from srcgrad import optim
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, 3))
    y = rng.standard_normal((20, 2))
    params = mlp_params([3, 4, 2])
    reference = [(W.copy(), b.copy()) for W, b in params]
    order = rng.permutation(20)
    loop = optim.MinibatchLoop(srcgrad.value_and_grad(mlp_loop, wrt="params"),
                               optim.SGD(params, lr=0.1))
    total = loop(params, x, y, order, 5)
    g = srcgrad.value_and_grad(mlp_loop, wrt="params", target="python")
    ref_total = 0.0
    for start in range(0, 20, 5):
        rows = order[start:start + 5]
        value, grads = g(reference, x[rows], y[rows])
        ref_total += value * 5
        for (W, b), (gW, gb) in zip(reference, grads):
            W -= 0.1 * gW
            b -= 0.1 * gb
    assert total == pytest.approx(ref_total, rel=1e-10)
    for (W, b), (W0, b0) in zip(params, reference):
        np.testing.assert_allclose(W, W0, rtol=1e-10)
        np.testing.assert_allclose(b, b0, rtol=1e-10)


def static_then_plain_in_loop(params, n):
    W = params[0]
    for i in range(n):
        W = params[1] * 2.0
    return np.sum(W ** 2)


def test_leaf_name_reassigned_in_a_loop():
    params = [RNG.standard_normal(3), RNG.standard_normal(3)]
    for n in (0, 2):
        check_tree_grad(static_then_plain_in_loop, (params, n), wrt="params")


def test_inspect_stage_with_pytree_arguments():
    p = [(RNG.standard_normal((3, 2)), RNG.standard_normal(2))]
    table = srcgrad.inspect_stage(mlp_enumerate, "analyse", p, X)
    assert "params_0_0" in table and "float2d" in table
    assert "def mlp_enumerate(params_0_0, params_0_1, x)" in \
        srcgrad.inspect_stage(mlp_enumerate, "codegen", p, X)


def rnn_over_layers(params, x, steps):
    # a pytree loop inside a range loop that rebinds an array (snapshotted by the reverse sweep)
    h = x
    for t in range(steps):
        for W, b in params:
            h = np.tanh(h @ W + b)
    return np.sum(h ** 2)


def test_pytree_loop_inside_a_loop_rebinding_an_array():
    check_tree_grad(rnn_over_layers, (mlp_params([3, 3, 3]), X, 3), wrt="params")
