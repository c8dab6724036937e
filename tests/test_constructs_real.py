"""Python constructs of real NumPy code (issue 15, section 4), each checked against finite
differences: constants (np.inf, np.pi, math.e, ...), assert, print, keyword and string arguments,
list and tuple literals, list comprehensions, `for x in arr`, enumerate/zip/reversed, lists built
with append and stacked, np.r_/np.c_, .squeeze(), np.dot with a scalar.

Breadth on the python target; a representative subset compiled (target="cpu").
Functions are defined at module level (srcgrad reads their source).
"""
import math

import numpy as np
import pytest

import srcgrad
from conftest import TARGETS, check_grad


def rand(rng, *shape):
    return rng.standard_normal(shape)


# ------------------------------------------------------------------------------------------------
# Constants: np.inf, np.pi, np.e, math.inf, math.pi, math.e
# ------------------------------------------------------------------------------------------------

def running_extremes(x):
    m = -np.inf
    lo = math.inf
    for i in range(x.shape[0]):
        m = max(m, x[i])
        lo = min(lo, x[i])
    return 2.0 * m + lo * np.pi + math.pi * math.e * np.sum(x * np.e)


def test_constants_and_running_maximum(target):
    x = np.array([0.3, -1.2, 2.5, 0.7, -0.4])
    g = check_grad(running_extremes, (x,), target=target)
    # the maximum and minimum each send their adjoint to one element
    expected = np.full(5, math.pi * math.e * np.e)
    expected[2] += 2.0
    expected[1] += np.pi
    np.testing.assert_allclose(g, expected, rtol=1e-12)


def inf_clamp(x):
    y = np.minimum(x, np.inf) + np.maximum(x, -math.inf)
    return np.sum(y * y)


def test_infinite_constants_in_array_code():
    check_grad(inf_clamp, (np.array([0.5, -2.0, 1.5]),), target="python")


def test_infinite_constants_in_float32(target):
    x = np.array([0.3, -1.2, 2.5], dtype=np.float32)
    g = srcgrad.grad(running_extremes, target=target)(x)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, [math.pi * math.e * np.e, math.pi * math.e * np.e + np.pi,
                                   math.pi * math.e * np.e + 2.0], rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# assert (checked in the primal, not differentiated) and print (runs in the primal)
# ------------------------------------------------------------------------------------------------

def with_asserts(x, w):
    assert x.ndim == 2, "x must be a matrix"
    assert x.shape[1] == w.shape[0]
    y = np.tanh(x @ w)
    s = np.sum(y * y)
    assert s >= 0.0
    return s


def test_assert_is_checked_not_differentiated(target):
    rng = np.random.default_rng(1)
    check_grad(with_asserts, (rand(rng, 3, 4), rand(rng, 4)), wrt=(0, 1), target=target)


def test_failing_assert_names_file_and_line(target):
    f = srcgrad.grad(with_asserts, wrt=(0, 1), target=target)     # compiled by the test above
    with pytest.raises(AssertionError, match="x must be a matrix"):
        f(np.ones((2, 3, 4)), np.ones(4))
    with pytest.raises(AssertionError, match=r"test_constructs_real.py:\d+: assert x.shape\[1\] == "
                                             r"w.shape\[0\]"):
        f(np.ones((3, 4)), np.ones(5))


def with_print(x):
    s = np.sum(x * x)
    print("sum of squares", s)
    return s * 3.0


def test_print_runs_in_the_primal(target, capfd):
    x = np.array([1.0, 2.0])
    g = check_grad(with_print, (x,), target=target)
    np.testing.assert_allclose(g, 6.0 * x)
    out = capfd.readouterr().out
    assert "sum of squares 5.0" in out


def print_with_keywords(x):
    print(x, end="")
    return x


def test_print_with_keywords_is_refused():
    with pytest.raises(srcgrad.UnsupportedSyntaxError, match=r"test_constructs_real.py:\d+: .*print"):
        srcgrad.grad(print_with_keywords, target="python")(1.0)


# ------------------------------------------------------------------------------------------------
# Keyword and string arguments, .squeeze(axis), np.dot with a scalar, transpose axes
# ------------------------------------------------------------------------------------------------

def clip_keywords(x, w):
    a = np.clip(x, a_min=-0.5, a_max=0.8)
    b = np.clip(x * w, a_max=1.0, a_min=0.0)          # NumPy's names, in any order
    c = np.transpose(x, axes=(1, 0))
    return np.sum(a * w) + np.sum(b) + np.sum(np.sum(c, axis=0) ** 2)


def test_keyword_arguments_named_as_numpy_names_them(target):
    rng = np.random.default_rng(2)
    check_grad(clip_keywords, (rand(rng, 3, 4), rand(rng, 3, 4)), wrt=(0, 1), target=target)


def transposes(x):
    y = x.reshape(2, 3, 4)
    z = np.transpose(y, (2, 0, 1)) * np.arange(24.0).reshape(4, 2, 3)
    m = x.transpose(1, 0)
    return np.sum(np.sin(z)) + np.sum(m * m.T.T) + np.sum(x.T @ x.transpose().T)


def test_transpose_with_axes(target):
    rng = np.random.default_rng(3)
    check_grad(transposes, (rand(rng, 6, 4),), target=target)


def transpose_variable_axes(x, order):
    return np.sum(np.transpose(x, order))


def test_transpose_with_non_constant_axes_is_refused():
    with pytest.raises(srcgrad.UnsupportedSyntaxError, match=r"test_constructs_real.py:\d+: .*axes"):
        srcgrad.grad(transpose_variable_axes, target="python")(np.ones((2, 3)), (1, 0))


def strings_and_squeeze(x, w):
    col = (x @ w[:, None]).squeeze(axis=1)             # (n, 1) -> (n,)
    row = x[:1].squeeze(0)
    y = x.astype("float64") * 2.0 + np.zeros(x.shape, dtype="float64")
    return np.sum(np.tanh(col)) + np.sum(row ** 3) + np.sum(y * y)


def test_string_arguments_and_squeeze(target):
    rng = np.random.default_rng(4)
    check_grad(strings_and_squeeze, (rand(rng, 3, 4), rand(rng, 4)), wrt=(0, 1), target=target)


def squeeze_wrong_axis(x):
    return np.sum(x.squeeze(axis=0))


def squeeze_no_axis(x):
    return np.sum(x.squeeze())


def test_squeeze_checks_its_axis():
    f = srcgrad.grad(squeeze_wrong_axis, target="python")
    np.testing.assert_allclose(f(np.ones((1, 3))), np.ones((1, 3)))
    with pytest.raises(AssertionError, match=r"test_constructs_real.py:\d+: cannot squeeze axis 0"):
        f(np.ones((2, 3)))
    with pytest.raises(srcgrad.UnsupportedSyntaxError, match=r"squeeze\(\)` without an axis"):
        srcgrad.grad(squeeze_no_axis, target="python")(np.ones((1, 3)))


def string_to_helper_inner(x, mode):
    return x


def string_to_helper(x):
    return string_to_helper_inner(x, "constant") * 2.0


def test_string_argument_to_a_helper_is_refused():
    with pytest.raises(srcgrad.UnsupportedSyntaxError, match=r"string argument"):
        srcgrad.grad(string_to_helper, target="python")(1.0)


def dot_with_scalar(x, s):
    a = np.dot(2.0, x)
    b = np.dot(x, s)
    return np.sum(a * b) + np.dot(s, s) + np.dot(x[:, 0], x)[1]


def test_dot_with_a_scalar(target):
    rng = np.random.default_rng(5)
    check_grad(dot_with_scalar, (rand(rng, 3, 2), 0.7), wrt=(0, 1), target=target)


# ------------------------------------------------------------------------------------------------
# List and tuple literals as values
# ------------------------------------------------------------------------------------------------

def array_of_scalars(x, s):
    a = x[0] * s
    v = np.array([a, 2.0 * a, 3, s * s])               # an int among floats
    m = np.array([[a, s], [s * a, 1.0]])               # nested: rows stacked
    return np.sum(v * np.arange(4.0)) + np.sum(m @ m)


def test_array_of_scalars(target):
    check_grad(array_of_scalars, (np.array([0.4, -1.1]), 0.8), wrt=(0, 1), target=target)


def array_of_arrays(x, w):
    m = np.array([x, 2.0 * w, np.sin(x)])              # (3, n): stacked
    t = np.asarray((w, x * w))
    return np.sum(m ** 2 * np.arange(3.0)[:, None]) + np.sum(t[1] * t[0])


def test_array_of_arrays(target):
    rng = np.random.default_rng(6)
    check_grad(array_of_arrays, (rand(rng, 4), rand(rng, 4)), wrt=(0, 1), target=target)


def sum_of_literals(x, s):
    return np.sum(sum([x, 2.0 * x, x * x])) + sum((s, s * s), 1.0) + sum([s])


def test_sum_of_a_literal():
    rng = np.random.default_rng(7)
    check_grad(sum_of_literals, (rand(rng, 2, 3), 0.6), wrt=(0, 1), target="python")


def fancy_index_literal(x):
    rows = x[[0, 2, 0]]                                # repeated index: adjoints add up
    return np.sum(rows ** 2) + np.sum(x[[1]] * 3.0)


def test_fancy_index_with_a_literal_list(target):
    rng = np.random.default_rng(8)
    check_grad(fancy_index_literal, (rand(rng, 3, 2),), target=target)


def list_variables(x, s):
    pieces = [x, x * 2.0]
    scalars = [s, s * x[0]]
    pair = (np.sin(x), x)
    return np.sum(np.concatenate(pieces) ** 2) + np.sum(np.array(scalars) ** 3) + \
        np.sum(np.stack(pair) * np.arange(2.0)[:, None]) + np.sum(np.array(pieces)[1])


def test_list_and_tuple_variables():
    rng = np.random.default_rng(9)
    check_grad(list_variables, (rand(rng, 3), 0.3), wrt=(0, 1), target="python")


def copies(x):
    y = np.array(x)
    y[0] = 0.0                                         # a copy: x is untouched
    return np.sum(y * x) + np.sum(np.asarray(x) ** 2)


def test_np_array_of_an_array_copies(target):
    check_grad(copies, (np.array([0.5, -0.3, 1.2]),), target=target)


# ------------------------------------------------------------------------------------------------
# for x in arr, enumerate, zip, reversed; loops over literal lists (unrolled)
# ------------------------------------------------------------------------------------------------

def rows_loop(x, w):
    s = 0.0
    for row in x:                                      # the first axis
        s = s + np.sum(np.tanh(row * w))
    for i, row in enumerate(x, 1):
        s = s + i * np.sum(row ** 2)
    return s


def test_for_over_an_array_and_enumerate(target):
    rng = np.random.default_rng(10)
    check_grad(rows_loop, (rand(rng, 4, 3), rand(rng, 3)), wrt=(0, 1), target=target)


def zip_reversed(x, y):
    s = 0.0
    for a, b in zip(x, y[1:]):                          # stops at the shorter
        s = s + a * b
    for i in reversed(range(1, x.shape[0], 2)):
        s = s * 0.5 + x[i]
    for k, v in enumerate(reversed(y)):
        s = s * 0.9 + k * v * v
    for i, (a, b) in enumerate(zip(reversed(x), range(3))):
        s = s + i * a * b
    return s


def test_zip_and_reversed(target):
    rng = np.random.default_rng(11)
    check_grad(zip_reversed, (rand(rng, 5), rand(rng, 4)), wrt=(0, 1), target=target)


def zip_reversed_reference(x, y):
    """zip_reversed with explicit indices (the values the loops must visit)."""
    s = 0.0
    for j in range(min(len(x), len(y) - 1)):
        s = s + x[j] * y[j + 1]
    for i in range(x.shape[0] - 1 - (x.shape[0] - 2) % 2, 0, -2):
        s = s * 0.5 + x[i]
    for k in range(len(y)):
        s = s * 0.9 + k * y[len(y) - 1 - k] ** 2
    for i in range(min(len(x), 3)):
        s = s + i * x[len(x) - 1 - i] * i
    return s


def test_zip_and_reversed_visit_the_items_python_does():
    rng = np.random.default_rng(12)
    x, y = rand(rng, 5), rand(rng, 4)
    assert zip_reversed(x, y) == pytest.approx(zip_reversed_reference(x, y), rel=1e-14)


def layers_loop(x, W1, b1, W2, b2):
    layers = [(W1, b1), (np.tanh(W2), b2 * 2.0)]       # arrays of different shapes: unrolled
    h = x
    for W, b in layers:
        h = np.tanh(W @ h + b)
    total = 0.0
    for i, (W, b) in enumerate(layers):
        total = total + (i + 1.0) * np.sum(b * b)
    for c in [1.0, 2.0]:
        total = total + c * np.sum(h)
    return total


def test_loops_over_literal_lists(target):
    rng = np.random.default_rng(13)
    args = (rand(rng, 3), rand(rng, 4, 3), rand(rng, 4), rand(rng, 2, 4), rand(rng, 2))
    check_grad(layers_loop, args, wrt=(0, 1, 2, 3, 4), target=target)


def loop_with_break_over_literal(x):
    for v in [x, 2.0 * x]:
        if v > 1.0:
            break
    return x


def test_break_in_an_unrolled_loop_is_refused():
    with pytest.raises(srcgrad.UnsupportedSyntaxError, match=r"test_constructs_real.py:\d+: .*unroll"):
        srcgrad.grad(loop_with_break_over_literal, target="python")(0.5)


def loop_with_break_over_array(x):
    s = 0.0
    for v in x:
        if v > 1.0:
            break
        s = s + v * v
    return s


def test_break_in_a_loop_over_an_array():
    check_grad(loop_with_break_over_array, (np.array([0.5, -0.7, 1.5, 0.2]),), target="python")


# ------------------------------------------------------------------------------------------------
# List comprehensions; lists built with append, then stacked
# ------------------------------------------------------------------------------------------------

def comprehensions(x, w):
    feats = [np.tanh(x[i] * w) for i in range(3)]                  # literal length: unrolled
    dyn = [np.sum(row ** 2) for row in x]                          # a loop that appends
    pos = [v * v for v in x[0] if v > 0.0]                         # filtered
    pairs = [a * b for a in w for b in x[1]]                       # nested
    return (np.sum(np.stack(feats) ** 2) + np.sum(np.array(dyn) * np.arange(1.0, 5.0))
            + sum(pos) + sum(np.sum(f) for f in feats) + np.sum(np.array(pairs) ** 2))


def test_list_comprehensions(target):
    rng = np.random.default_rng(14)
    check_grad(comprehensions, (rand(rng, 4, 3), rand(rng, 3)), wrt=(0, 1), target=target)


def append_and_stack(x, w):
    outs = []
    sums = []
    for t in range(x.shape[0]):
        outs.append(np.tanh(x[t] * w) * (t + 1.0))                 # a fresh array per step
        sums.append(np.sum(x[t]) * w[0])                           # a scalar per step
        if t % 2 == 0:
            sums.append(x[t, 1] ** 2)                              # some steps append twice
    hs = np.stack(outs)
    return np.sum(hs ** 2) + np.sum(np.array(sums) ** 3) + sum(sums) + len(outs) * np.sum(outs[-1])


def test_append_then_stack(target):
    rng = np.random.default_rng(15)
    check_grad(append_and_stack, (rand(rng, 5, 3), rand(rng, 3)), wrt=(0, 1), target=target)


def test_lists_and_comprehensions_in_float32():
    rng = np.random.default_rng(20)
    x, w = rand(rng, 5, 3), rand(rng, 3)
    for f in (append_and_stack, comprehensions):
        x32, w32 = x[:4].astype(np.float32), w.astype(np.float32)
        g32 = srcgrad.grad(f, wrt=(0, 1), target="python")(x32, w32)
        g64 = srcgrad.grad(f, wrt=(0, 1), target="python")(x32.astype(np.float64), w32.astype(np.float64))
        for a, b in zip(g32, g64):
            assert a.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.max(np.abs(b)))


def append_nested_loops(x):
    vals = []
    for i in range(x.shape[0]):
        for j in range(1, x.shape[1]):
            vals.append(x[i, j] * x[i, j - 1])
    vals.append(x[0, 0])
    total = 0.0
    for v in vals:
        total = total + v * v
    return total + np.sum(np.array(vals))


def test_append_in_nested_loops():
    rng = np.random.default_rng(16)
    check_grad(append_nested_loops, (rand(rng, 3, 4),), target="python")


def append_triangular(x):
    vals = []
    for i in range(x.shape[0]):
        for j in range(i):
            vals.append(x[i] * x[j])
    return np.sum(np.array(vals))


def append_mutated(x):
    h = np.zeros(2)
    outs = []
    for t in range(x.shape[0]):
        h[0] = x[t]
        outs.append(h)
    return np.sum(np.stack(outs))


def append_in_while(x):
    vals = []
    while x > 0.1:
        vals.append(x)
        x = x * 0.5
    return sum(vals)


def list_returned(x):
    outs = []
    outs.append(x)
    return outs


@pytest.mark.parametrize("func, match", [
    (append_triangular, "number of items appended"),
    # (refused by the view fence: `outs` holds `h`, read after `h[0] = ...` changes it)
    (append_mutated, "is read after the write"),
    (append_in_while, "while loop"),
    (list_returned, "use of the list"),
])
def test_unsupported_list_building_is_refused(func, match):
    arg = np.ones(3) if func is not append_in_while else 1.0
    with pytest.raises(srcgrad.UnsupportedSyntaxError, match=r"test_constructs_real.py:\d+: .*" + match):
        srcgrad.grad(func, target="python")(arg)


def stack_of_empty_list(x, n):
    outs = []
    for t in range(n):
        outs.append(x * t)
    return np.sum(np.stack(outs))


def test_stack_of_an_empty_list_raises():
    f = srcgrad.grad(stack_of_empty_list, target="python")
    np.testing.assert_allclose(f(np.ones(2), 3), np.full(2, 3.0))
    with pytest.raises(AssertionError, match="empty list"):
        f(np.ones(2), 0)


def rnn_state_rows(x, W, U):
    """An RNN that appends its hidden states (kept as rows of an array it writes)."""
    hs = np.zeros((x.shape[0] + 1, W.shape[0]))
    outs = []
    for t in range(x.shape[0]):
        hs[t + 1] = np.tanh(W @ hs[t] + U @ x[t])
        outs.append(hs[t + 1] * 1.0)
    return np.sum(np.stack(outs) ** 2)


def test_rnn_appending_states(target):
    rng = np.random.default_rng(17)
    args = (rand(rng, 4, 2), 0.5 * rand(rng, 3, 3), rand(rng, 3, 2))
    check_grad(rnn_state_rows, args, wrt=(0, 1, 2), target=target)


def rnn_rebinding(x, W, U):
    """The usual form: h rebound in the loop (snapshotted, tests/test_rebound_arrays.py) and
    appended."""
    h = np.zeros(W.shape[0])
    outs = []
    for t in range(x.shape[0]):
        h = np.tanh(W @ h + U @ x[t])
        outs.append(h)
    return np.sum(np.stack(outs) ** 2)


def test_rnn_rebinding_and_appending(target):
    rng = np.random.default_rng(18)
    args = (rand(rng, 4, 2), 0.5 * rand(rng, 3, 3), rand(rng, 3, 2))
    check_grad(rnn_rebinding, args, wrt=(0, 1, 2), target=target)


# ------------------------------------------------------------------------------------------------
# np.r_ / np.c_ of constants
# ------------------------------------------------------------------------------------------------

def index_grids(x):
    idx = np.r_[0:3, 5]                                # [0, 1, 2, 5]
    t = np.r_[0.0:1.0:5j]                              # 5 points from 0 to 1
    col = np.c_[0:4]                                   # (4, 1)
    return np.sum(x[idx] ** 2) + np.sum(x[:5] * t) + np.sum(x[:4, None] * col * x[-1])


def test_r_and_c_of_constants(target):
    rng = np.random.default_rng(19)
    check_grad(index_grids, (rand(rng, 6),), target=target)


def r_of_arrays(x):
    return np.sum(np.r_[x, x])


def test_r_of_arrays_is_refused():
    with pytest.raises(srcgrad.UnsupportedSyntaxError, match=r"test_constructs_real.py:\d+: .*np.r_"):
        srcgrad.grad(r_of_arrays, target="python")(np.ones(2))


def extremes_of_literals(x):
    top = max([x[0] * x[1], np.sum(x ** 2), x[2]])
    low = min(v * v for v in [x[0], x[1] + 1.0])
    return top * 2.0 + low


def test_max_and_min_of_a_literal():
    check_grad(extremes_of_literals, (np.array([0.3, -0.4, 0.9]),), target="python")
    check_grad(extremes_of_literals, (np.array([2.0, 1.5, -0.5]),), target="python")


def comprehension_in_conditional(x, n):
    return sum(x * i for i in range(n)) if n > 0 else 0.0


def test_comprehension_in_a_conditional_expression_is_refused():
    with pytest.raises(srcgrad.UnsupportedSyntaxError, match=r"conditional expression"):
        srcgrad.grad(comprehension_in_conditional, target="python")(1.0, 2)


# ------------------------------------------------------------------------------------------------
# Forward mode (jvp) through the same constructs: the directional derivative equals the
# gradient's dot product with the direction
# ------------------------------------------------------------------------------------------------

FORWARD_CASES = [
    (with_asserts, ((3, 4), (4,))), (with_print, ((2,),)), (append_and_stack, ((5, 3), (3,))),
    (comprehensions, ((4, 3), (3,))), (rows_loop, ((4, 3), (3,))), (array_of_arrays, ((4,), (4,))),
    (array_of_scalars, ((2,), ())), (list_variables, ((3,), ())), (index_grids, ((6,),)),
    (layers_loop, ((3,), (4, 3), (4,), (2, 4), (2,))),
]


def _forward_matches_reverse(func, shapes, target):
    rng = np.random.default_rng(21)
    args = tuple(rand(rng, *s) if s else 0.7 for s in shapes)
    direction = tuple(rand(rng, *s) if s else 0.3 for s in shapes)
    wrt = tuple(range(len(args)))
    value, derivative = srcgrad.jvp(func, wrt=wrt, target=target)(*args, direction)
    grads = srcgrad.grad(func, wrt=wrt, target="python")(*args)
    expected = sum(float(np.sum(g * v)) for g, v in zip(grads, direction))
    assert value == pytest.approx(func(*args), rel=1e-12)
    assert derivative == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("func, shapes", FORWARD_CASES, ids=[f.__name__ for f, _ in FORWARD_CASES])
def test_forward_mode_through_the_constructs(func, shapes):
    _forward_matches_reverse(func, shapes, "python")


def test_forward_mode_through_lists_compiled():
    _forward_matches_reverse(append_and_stack, ((5, 3), (3,)), "cpu")
    _forward_matches_reverse(array_of_arrays, ((4,), (4,)), "cpu")


@pytest.mark.parametrize("func, shapes", [(append_and_stack, ((5, 3), (3,))), (comprehensions, ((4, 3), (3,))),
                                          (array_of_scalars, ((2,), ())), (rows_loop, ((4, 3), (3,)))],
                         ids=lambda v: getattr(v, "__name__", ""))
def test_hessian_vector_products_through_the_constructs(func, shapes):
    rng = np.random.default_rng(22)
    args = tuple(rand(rng, *s) if s else 0.7 for s in shapes)
    args[0].flat[0] = 0.5             # comprehensions' filtered list is not empty
    v = rand(rng, *shapes[0])
    out = srcgrad.hvp(func, wrt=0, target="python")(*args, v)
    hv = out[-1] if isinstance(out, tuple) else out
    g = srcgrad.grad(func, wrt=0, target="python")
    h = 1e-6
    fd = (g(args[0] + h * v, *args[1:]) - g(args[0] - h * v, *args[1:])) / (2 * h)
    np.testing.assert_allclose(hv, fd, rtol=1e-5, atol=1e-6)


def sum_of_filtered(x):
    return sum([v * v for v in x if v > 0.0]) + 1.0


def test_sum_of_an_empty_filtered_list_raises(target):
    # a known difference from Python (whose sum of nothing is 0): a clear error, not a value
    f = srcgrad.grad(sum_of_filtered, target=target)
    np.testing.assert_allclose(f(np.array([-1.0, 2.0])), [0.0, 4.0])
    with pytest.raises(AssertionError, match="sum of the empty list"):
        f(np.array([-1.0, -2.0]))
