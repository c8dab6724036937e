"""Real-code gaps (issue 15): constructs of published NumPy model code that srcgrad refused or got
wrong, each differentiated unchanged and checked against central finite differences in float64
(tests/pytree_check.py) on the python target, a subset compiled (target="cpu").

* helpers with ``*args`` (autograd's ``concat_and_multiply(weights, *args)``) and tuple joins
  ``args + (ones,)``;
* ``np.vstack`` of a list built with ``append`` (the rows of the list, as NumPy reads them);
* reading a list inside the loop that appends to it (``hs[-1]``, ``hs[len(hs) - 1]``);
* namedtuples as parameters (fields read by name, gradient of the same namedtuple type);
* pytrees built in the function: dict literals and ``dict(...)``, tuples holding pytrees, passed
  to helpers, unpacked, indexed, looped over, returned by helpers;
* the names of nested functions in messages.
"""
from collections import namedtuple
from typing import NamedTuple

import numpy as np
import pytest

import srcgrad
from pytree_check import check_tree_grad

RNG = np.random.default_rng(15)


# --- *args helpers ------------------------------------------------------------------------------

def concat_and_multiply(weights, *args):
    cat_state = np.hstack(args + (np.ones((args[0].shape[0], 1)),))
    return np.dot(cat_state, weights)


def star_args_loss(W, x, h):
    a = np.tanh(concat_and_multiply(W, x, h))
    b = concat_and_multiply(W[:4], a)            # one extra argument: a 1-tuple
    return np.sum(a ** 2) + np.sum(np.sin(b))


def total(*parts):
    s = 0.0
    for p in parts:                              # a loop over *args: unrolled
        s = s + np.sum(p ** 2)
    return s + len(parts)


def star_args_loop(x, y):
    return total(x, 2.0 * y, x * y) + total()


def star_args_nested(x, y):
    def weighted(w, *terms):
        return w * (terms[0] + terms[-1])
    return np.sum(weighted(3.0, x, y) * weighted(0.5, y))


def joined_pytree(params, x):
    layers = params[:1] + params[1:]             # pytree + pytree: still a pytree
    extra = (x,) + (2.0 * x,)                   # literal + literal
    s = 0.0
    for W in layers:
        s = s + np.sum(np.tanh(x @ W))
    return s + np.sum(extra[0] * extra[1])


def _star_cases():
    W = RNG.standard_normal((7, 3))
    x, h = RNG.standard_normal((2, 3)), RNG.standard_normal((2, 3))
    return {
        "concat_and_multiply": (star_args_loss, (W, x, h), (0, 1, 2)),
        "loop_over_args": (star_args_loop, (RNG.standard_normal(3), RNG.standard_normal(3)), (0, 1)),
        "nested_def_args": (star_args_nested, (RNG.standard_normal(3), RNG.standard_normal(3)), (0, 1)),
        "joined_pytree": (joined_pytree, ([RNG.standard_normal((3, 3)), RNG.standard_normal((3, 3))],
                                          RNG.standard_normal((2, 3))), (0, 1)),
    }


STAR = _star_cases()


@pytest.mark.parametrize("name", list(STAR))
def test_star_args_python(name):
    f, args, wrt = STAR[name]
    check_tree_grad(f, args, wrt=wrt, target="python")


def test_star_args_cpu():
    f, args, wrt = STAR["concat_and_multiply"]
    check_tree_grad(f, args, wrt=wrt, target="cpu")


def star_call(x):
    parts = (x, x)
    return concat_and_multiply(np.ones((3, 1)), *parts)


def test_star_call_is_refused_with_its_line():
    with pytest.raises(srcgrad.SrcgradError, match=r"test_realcode_gaps\.py:\d+.*\*args/\*\*kwargs"):
        srcgrad.grad(lambda x: np.sum(star_call(x)), target="python")(np.ones((2, 1)))


def spread_call(params, x):
    # `*params` of a pytree (and of a literal) is spread into the helper's parameters
    return np.sum(concat_and_multiply(*params, x)) + np.sum(concat_and_multiply(*(params[0][:3], x)))


def test_spread_of_a_pytree_in_a_call():
    params = [RNG.standard_normal((5, 2)), RNG.standard_normal((2, 2))]
    check_tree_grad(spread_call, (params, RNG.standard_normal((2, 2))), wrt=(0, 1), target="python")


def star_root(*xs):
    return np.sum(xs[0] * np.sin(xs[1]))


def test_star_args_of_the_differentiated_function():
    # `*xs` is one argument, a tuple pytree: its gradient is a tuple (wrt=0 names it)
    a, b = RNG.standard_normal(3), RNG.standard_normal(3)
    ga, gb = srcgrad.grad(star_root, target="python")(a, b)
    h = 1e-6
    for k in range(3):
        e = np.eye(3)[k] * h
        np.testing.assert_allclose(ga[k], (star_root(a + e, b) - star_root(a - e, b)) / (2 * h),
                                   rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(gb[k], (star_root(a, b + e) - star_root(a, b - e)) / (2 * h),
                                   rtol=1e-6, atol=1e-8)


def keyword_helper(x, **options):
    return x * options["scale"]


def kwargs_call(x):
    return np.sum(keyword_helper(x, scale=2.0))


def test_kwargs_helper_is_refused_with_its_line():
    with pytest.raises(srcgrad.SrcgradError, match=r"test_realcode_gaps\.py:\d+.*\*\*kwargs"):
        srcgrad.grad(kwargs_call, target="python")(np.ones(2))


# --- np.vstack of a list built with append ------------------------------------------------------

def vstack_rows(x, w):
    rows = []
    for k in range(w.shape[0]):
        rows.append(np.sin(x * w[k]))            # 1-d items: the rows of the result
    m = np.vstack(rows)
    return np.sum(m * np.arange(m.size).reshape(m.shape))


def vstack_scalars(x):
    vals = []
    for k in range(x.shape[0]):
        vals.append(np.sum(x[k] ** 2) * (k + 1.0))   # 0-d items: a column
    col = np.vstack(vals)
    return np.sum(np.exp(col[:, 0]) * col.shape[1])


def vstack_blocks(x):
    blocks = []
    for k in range(3):
        blocks.append(x * (k + 1.0))              # 2-d items: blocks stacked along axis 0
    m = np.vstack(blocks)
    return np.sum(np.cos(m) * np.arange(m.size).reshape(m.shape))


def logsumexp_of_clusters(means, data):
    # gmm style: per-cluster log-likelihood rows, stacked and reduced over clusters
    lls = []
    for mean in means:
        lls.append(-0.5 * np.sum((data - mean) ** 2, axis=1))
    stacked = np.vstack(lls)
    top = np.max(stacked, axis=0)
    return np.sum(top + np.log(np.sum(np.exp(stacked - top), axis=0)))


VSTACK = {
    "rows": (vstack_rows, (RNG.standard_normal(4), RNG.standard_normal(3)), (0, 1)),
    "scalars": (vstack_scalars, (RNG.standard_normal((3, 2)),), 0),
    "blocks": (vstack_blocks, (RNG.standard_normal((2, 3)),), 0),
    "clusters": (logsumexp_of_clusters, (RNG.standard_normal((3, 2)), RNG.standard_normal((5, 2))),
                 (0, 1)),
}


@pytest.mark.parametrize("name", list(VSTACK))
def test_vstack_of_appended_list_python(name):
    f, args, wrt = VSTACK[name]
    np.testing.assert_array_equal(f(*args), f(*args))     # plain NumPy runs it
    check_tree_grad(f, args, wrt=wrt, target="python")


def vstack_all_ndims(x, w):
    # one compile for the three ways NumPy stacks an array's rows (0-d, 1-d and 2-d items)
    return vstack_rows(x, w) + vstack_scalars(np.reshape(x, (2, 2))) + \
        vstack_blocks(np.reshape(x, (2, 2)) * w[0])


def test_vstack_of_appended_list_cpu():
    check_tree_grad(vstack_all_ndims, (RNG.standard_normal(4), RNG.standard_normal(3)), wrt=(0, 1),
                    target="cpu")


@pytest.mark.slow
def test_vstack_of_appended_list_clusters_cpu():
    f, args, wrt = VSTACK["clusters"]
    check_tree_grad(f, args, wrt=wrt, target="cpu")


@pytest.mark.parametrize("name", ["rows", "scalars", "blocks"])
def test_vstack_of_appended_list_forward_mode(name):
    f, args, _ = VSTACK[name]
    v = RNG.standard_normal(np.shape(args[0]))
    _, tangent = srcgrad.jvp(f, wrt=0, target="python")(*args, v)
    h = 1e-6
    expected = (f(args[0] + h * v, *args[1:]) - f(args[0] - h * v, *args[1:])) / (2 * h)
    np.testing.assert_allclose(tangent, expected, rtol=1e-6, atol=1e-8)


def vstack_empty(x):
    rows = []
    for k in range(0):
        rows.append(x)
    return np.sum(np.vstack(rows))


def test_vstack_of_an_empty_list_raises_like_numpy():
    with pytest.raises(AssertionError, match=r"test_realcode_gaps\.py:\d+: np.vstack of the empty list"):
        srcgrad.grad(vstack_empty, target="python")(np.ones(2))


# --- reading a list inside the loop that appends to it ------------------------------------------

def append_read_last(x):
    hs = [x]
    for t in range(3):
        hs.append(np.tanh(hs[-1] * 2.0 + hs[0]))
    return np.sum(np.stack(hs) ** 2)


def append_read_len(x):
    hs = []
    hs.append(x)
    for t in range(4):
        hs.append(np.sin(hs[len(hs) - 1]) * hs[t])      # a runtime index, a negative-free one
    return np.sum(hs[-2] * hs[len(hs) - 1])


def append_read_scalars(x):
    s = [np.sum(x)]
    for t in range(3):
        s.append(np.cos(s[-1]) * s[t - 1])               # s[-1] at t = 0: Python's last item
    return s[-1] + sum(s)


APPEND_READ = {
    "last": (append_read_last, (RNG.standard_normal((2, 3)),)),
    "len": (append_read_len, (RNG.standard_normal(3),)),
    "scalars": (append_read_scalars, (RNG.standard_normal(3),)),
}


@pytest.mark.parametrize("name", list(APPEND_READ))
def test_append_read_python(name):
    f, args = APPEND_READ[name]
    check_tree_grad(f, args, wrt=0, target="python")


@pytest.mark.slow   # compiled; the python target covers the same rewrite
def test_append_read_cpu():
    f, args = APPEND_READ["last"]
    check_tree_grad(f, args, wrt=0, target="cpu")


def append_read_out_of_range(x):
    hs = [x]
    for t in range(2):
        hs.append(hs[t + 1] * 2.0)                       # hs[1] before it was appended
    return np.sum(np.stack(hs))


def test_append_read_out_of_range_raises():
    with pytest.raises(AssertionError, match=r"test_realcode_gaps\.py:\d+: list index out of range"):
        srcgrad.grad(append_read_out_of_range, target="python")(np.ones(2))


# --- names of nested functions in messages ------------------------------------------------------

def outer_with_bad_inner(x):
    def inner(y):
        return y @ np.ones((5, 2))                # shapes do not align
    return np.sum(inner(x))


def test_nested_def_is_named_in_errors():
    # the nested function is `inner` in messages and generated code, the outer keeps its name
    with pytest.raises(srcgrad.ShapeError) as info:
        srcgrad.grad(outer_with_bad_inner, target="python")(np.ones(3))
    message = str(info.value)
    assert "in inner" in message and "in outer_with_bad_inner: return np.sum(inner(x))" in message
    assert "outer_with_bad_inner_2" not in message


# --- namedtuples as parameters ------------------------------------------------------------------

Layer = namedtuple("Layer", ["W", "b"])


class Model(NamedTuple):
    layers: list
    scale: float


def layer_loss(p, x):
    return np.sum(np.tanh(x @ p.W + p.b) ** 2)


def model_loss(model, x):
    h = x
    for layer in model.layers:
        W, b = layer                               # unpacking works as for a tuple
        h = np.tanh(h @ W + layer.b)
    return model.scale * np.sum(h ** 2) + np.sum(model.layers[0][0])


def field_helper(layer, x):
    return np.sum(np.sin(x @ layer.W) * layer.b)


def helper_loss(params, x):
    return field_helper(params["first"], x) + field_helper(params["second"], x)


COEFS = Layer(RNG.standard_normal(3), 0.5)


def global_namedtuple_loss(x):
    return np.sum(COEFS.W * np.cos(x)) * COEFS.b


def _layer(n_in, n_out):
    return Layer(RNG.standard_normal((n_in, n_out)), RNG.standard_normal(n_out))


NAMEDTUPLES = {
    "fields": (layer_loss, (_layer(4, 3), RNG.standard_normal((2, 4))), (0, 1)),
    "nested": (model_loss, (Model([_layer(3, 4), _layer(4, 2)], 0.7), RNG.standard_normal((2, 3))),
               (0, 1)),
    "helper": (helper_loss, ({"first": _layer(3, 2), "second": _layer(3, 2)},
                             RNG.standard_normal((2, 3))), 0),
    "module_data": (global_namedtuple_loss, (RNG.standard_normal(3),), 0),
}


@pytest.mark.parametrize("name", list(NAMEDTUPLES))
def test_namedtuple_parameters_python(name):
    f, args, wrt = NAMEDTUPLES[name]
    grads = check_tree_grad(f, args, wrt=wrt, target="python")
    if name == "nested":
        assert type(grads[0]) is Model and type(grads[0].layers[1]) is Layer


@pytest.mark.slow   # compiled; the python target covers the same rewrite
def test_namedtuple_parameters_cpu():
    f, args, wrt = NAMEDTUPLES["nested"]
    check_tree_grad(f, args, wrt=wrt, target="cpu")


def test_namedtuple_structure_is_part_of_the_key():
    # the same leaves in a plain tuple are another structure: fields cannot be read by name
    g = srcgrad.grad(layer_loss, target="python")
    p, x = NAMEDTUPLES["fields"][1]
    g(p, x)
    with pytest.raises(srcgrad.SrcgradError, match=r"test_realcode_gaps\.py:\d+"):
        g(tuple(p), x)


# --- pytrees built inside the function ----------------------------------------------------------

def build_dict(x, w):
    d = {"a": x * 2.0, "b": np.sin(x), "n": 3}
    e = dict(scale=w, shift=np.cos(w))
    s = 0.0
    for k in range(d["n"]):                        # an int item is static: a constant bound
        s = s + np.sum(d["a"] * d["b"]) * e["scale"] + e["shift"] * k
    return s


def apply_layer(layer, h):
    return np.tanh(h @ layer["W"] + layer["b"])


def pytree_to_helper(W1, b1, W2, b2, x):
    layers = [{"W": W1, "b": b1}, dict(W=W2, b=b2 * 1.5)]
    h = x
    for layer in layers:
        h = apply_layer(layer, h)
    h2 = apply_layer({"W": W1 * 0.5, "b": b1}, x)  # a literal passed directly
    return np.sum(h ** 2) + np.sum(h2)


def tuple_of_pytrees(params, x):
    pair = (params[0], x * 2.0)                    # a pytree and a runtime value
    (W, b), y = pair
    first, second = params[1], pair[1] + 1.0
    return np.sum(np.tanh(y @ W + b)) + np.sum(first[0]) * np.sum(second)


def swap_with_pytree(params, x, y):
    # every value before any target, as Python evaluates `a, b = ...`
    x, y, layer = y * 2.0, x * 3.0, params[0]
    return np.sum(x * y) + np.sum(layer[0] * x[0])


def _layers():
    return [(RNG.standard_normal((3, 3)), RNG.standard_normal(3)) for _ in range(2)]


BUILT = {
    "dict_literal": (build_dict, (RNG.standard_normal(3), 0.7), (0, 1)),
    "to_helper": (pytree_to_helper, (RNG.standard_normal((3, 3)), RNG.standard_normal(3),
                                     RNG.standard_normal((3, 3)), RNG.standard_normal(3),
                                     RNG.standard_normal((2, 3))), (0, 1, 2, 3, 4)),
    "tuple_of_pytrees": (tuple_of_pytrees, (_layers(), RNG.standard_normal((2, 3))), (0, 1)),
    "swap": (swap_with_pytree, (_layers(), RNG.standard_normal(3), RNG.standard_normal(3)),
             (0, 1, 2)),
}


@pytest.mark.parametrize("name", list(BUILT))
def test_pytrees_built_in_the_function_python(name):
    f, args, wrt = BUILT[name]
    check_tree_grad(f, args, wrt=wrt, target="python")


@pytest.mark.slow   # compiled; the python target covers the same rewrite
def test_pytrees_built_in_the_function_cpu():
    f, args, wrt = BUILT["to_helper"]
    check_tree_grad(f, args, wrt=wrt, target="cpu")


def dict_with_computed_key(x):
    d = {"a" + "b": x}
    return np.sum(d["ab"])


def returns_a_dict(x):
    return {"u": x ** 2, "v": np.cos(x)}


def uses_returned_dict_inline(x):
    return np.sum(returns_a_dict(x)["u"])


def returns_two_structures(x, flag):
    if flag:
        return {"u": x}
    return (x, x)


def uses_two_structures(x):
    out = returns_two_structures(x, True)
    return np.sum(out["u"])


@pytest.mark.parametrize("f, match", [
    (dict_with_computed_key, r"test_realcode_gaps\.py:\d+: a dict built in the function needs "
                             r"distinct constant string or int keys"),
    (uses_returned_dict_inline, r"test_realcode_gaps\.py:\d+: .*the pytree returns_a_dict returns "
                                r"\(assign it to a name first\)"),
])
def test_pytrees_built_in_the_function_refusals(f, match):
    with pytest.raises(srcgrad.SrcgradError, match=match):
        srcgrad.grad(f, target="python")(np.ones(3))


# --- helpers returning pytrees ------------------------------------------------------------------

def lstm_cell(params, x, state):
    gates = np.tanh(x @ params["W"] + state["h"] @ params["U"])
    c = state["c"] * 0.5 + gates
    return {"h": np.tanh(c), "c": c}


def cell_loop(params, xs):
    state = {"h": np.zeros(3), "c": np.zeros(3)}
    for t in range(xs.shape[0]):
        state = lstm_cell(params, xs[t], state)       # a dict carried through the loop
    return np.sum(state["h"] ** 2) + np.sum(state["c"])


def split_layer(layer):
    W, b = layer
    return Layer(W * 2.0, b), {"norm": np.sum(W ** 2), "n": 2}


def through_helpers(layer, x):
    def again(p):
        return split_layer(p)                       # a returned pytree returned again
    scaled, stats = again(layer)
    return np.sum(x @ scaled.W + scaled.b) * stats["norm"] ** 0.5 + stats["n"]


def early_return(params, x, flag):
    # (values computed only after the early `return` are not used here: srcgrad's reverse sweep
    # of a helper returning a tuple early reads them unassigned -- a transform bug, reported)
    a = x * params[0]
    b = np.sin(a) * params[1]
    if flag > 0:
        return {"a": a, "b": x}
    return {"a": x, "b": b}


def uses_early_return(params, x):
    r = early_return(params, x, 1)
    q = early_return(params, x, -1)
    return np.sum(r["a"] * q["b"] + r["b"] * q["a"])


RETURNED = {
    "lstm_cell": (cell_loop, ({"W": RNG.standard_normal((2, 3)), "U": RNG.standard_normal((3, 3))},
                              RNG.standard_normal((4, 2))), (0, 1)),
    "through_helpers": (through_helpers, (_layer(3, 2), RNG.standard_normal((2, 3))), (0, 1)),
    "early_return": (uses_early_return, ([RNG.standard_normal(3), RNG.standard_normal(3)],
                                         RNG.standard_normal(3)), (0, 1)),
}


@pytest.mark.parametrize("name", list(RETURNED))
def test_helpers_returning_pytrees_python(name):
    f, args, wrt = RETURNED[name]
    check_tree_grad(f, args, wrt=wrt, target="python")


def test_helpers_returning_pytrees_cpu():
    f, args, wrt = RETURNED["lstm_cell"]
    check_tree_grad(f, args, wrt=wrt, target="cpu")


def test_helper_returning_two_structures_is_refused():
    with pytest.raises(srcgrad.SrcgradError, match=r"test_realcode_gaps\.py:\d+: returns_two_structures "
                                                   r"returns pytrees of different structures"):
        srcgrad.grad(uses_two_structures, target="python")(np.ones(3))
