"""Regression tests for issue 14 (hardening), items 1-9: each failed before its fix.

Cross-process tests run small scripts in fresh interpreters that share one SRCGRAD_CACHE_DIR, the
way a user's successive runs share ~/.cache/srcgrad.
"""
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import srcgrad
from conftest import check_grad, user_numba_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(tmp_path, name, text, cache_dir, env=None):
    """Run ``text`` as module ``name`` in a fresh interpreter (srcgrad from this checkout); its stdout.
    The child compiles at Numba's default optimization level, as a user's process does: these tests
    are about the on-disk cache, and at the suite's NUMBA_OPT=0 some code is not cacheable."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    environ = dict(user_numba_env(os.environ), SRCGRAD_CACHE_DIR=str(cache_dir), PYTHONPATH=ROOT)
    environ.pop("SRCGRAD_MAX_TAPE_BYTES", None)
    environ.update(env or {})
    done = subprocess.run([sys.executable, str(path)], cwd=str(tmp_path), env=environ,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


# -- 1. the cache key covers every registered rule and the codegen options -----------------------

RULE_SCRIPT = """
import srcgrad
from srcgrad import d

def scale(x):
    return 2.0 * x

@srcgrad.register_adjoint(scale)
def scale_rule(result, x):
    d[x] += d[result] * {factor}

def loss(x):
    return scale(x) * 1.0

print(srcgrad.grad(loss, target="{target}")(1.5))
"""


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_rule_change_is_not_served_from_cache(tmp_path, target):
    cache = tmp_path / "cache"
    first = run_script(tmp_path, "rule_user", RULE_SCRIPT.format(factor="2.0", target=target), cache)
    assert float(first) == 2.0
    second = run_script(tmp_path, "rule_user", RULE_SCRIPT.format(factor="3.0", target=target), cache)
    assert float(second) == 3.0


def test_cache_key_covers_codegen_options(monkeypatch):
    from srcgrad import codegen
    from srcgrad.backends import backend
    base = codegen.cache_key("cpu", "kinds")
    monkeypatch.setattr(backend("cpu"), "fuse", not backend("cpu").fuse)
    assert codegen.cache_key("cpu", "kinds") != base
    monkeypatch.undo()
    monkeypatch.setenv("SRCGRAD_NUMPY_BLAS", "0")
    assert codegen.cache_key("cpu", "kinds") != base
    monkeypatch.undo()
    assert codegen.cache_key("cpu", "kinds") == base
    assert codegen.cache_key("python", "kinds") != base

    def unrelated(x):
        return x

    @srcgrad.register_adjoint(unrelated)
    def unrelated_rule(result, x):
        d[x] += d[result]      # noqa: F821
    assert codegen.cache_key("cpu", "kinds") != base


# -- 2. an axis held in a variable means what it says on cpu -----------------------------------

def sum_over(X, axis):
    return np.sum(np.sum(X, axis=axis) ** 2)


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_runtime_axis_is_honoured(target):
    X = np.arange(20.).reshape(4, 5)
    fn = srcgrad.value_and_grad(sum_over, target=target)
    for axis in (1, 0, -1):
        value, grad = fn(X, axis)
        assert value == np.sum(np.sum(X, axis=axis) ** 2)
        expected = 2 * np.expand_dims(np.sum(X, axis=axis), axis) * np.ones_like(X)
        np.testing.assert_allclose(grad, expected)
    assert fn(X, 1)[0] == 12150.0
    with pytest.raises(ValueError, match="out of bounds"):
        fn(X, 2)


def reductions_3d(X, a, b):
    """Every reduction with an axis of a 3-d array: literal axes and axes held in variables."""
    s = np.sum(np.sin(np.sum(X, axis=a)))
    s = s + np.sum(np.mean(X, axis=1) ** 2) + np.sum(np.max(X, axis=b) * 1.5)
    s = s + np.sum(np.min(X, axis=-1, keepdims=True)) + np.sum(np.prod(X, axis=a) ** 2)
    return s + np.sum(np.mean(X, axis=b) * np.sum(X, axis=2))


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_reductions_with_axis_of_3d_arrays(target):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(2, 3, 4)) + 0.5
    fn = srcgrad.grad(reductions_3d, target=target)
    for a, b in ((0, 2), (2, 0)):
        if a == 2:
            with pytest.raises((srcgrad.SrcgradError, ValueError)):
                fn(X, a, b)       # np.mean(X, axis=0) * np.sum(X, axis=2): shapes do not match
            continue
        check_grad(reductions_3d, [X, a, b], target=target, gradfn=fn)


def concat_stack_axis(a, b, axis):
    both = np.concatenate((a, b), axis)
    stacked = np.stack((a, b), axis)
    return np.sum(both * both * 0.5) + np.sum(np.sin(stacked))


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_concatenate_and_stack_with_axis_in_variable(target):
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    fn = srcgrad.grad(concat_stack_axis, wrt=(0, 1), target=target)
    for axis in (0, 1, -1):
        check_grad(concat_stack_axis, [a, b * (axis + 2), axis], wrt=(0, 1), target=target, gradfn=fn)


def keepdims_variable(X, keep):
    return np.sum(np.sum(X, axis=0, keepdims=keep) ** 2)


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_keepdims_in_variable_is_refused(target):
    with pytest.raises(srcgrad.SrcgradError, match="keepdims must be a constant"):
        srcgrad.grad(keepdims_variable, target=target)(np.ones((2, 3)), True)


def tuple_axis(X):
    return np.sum(np.sum(X, axis=(0, 1)) ** 2)


def test_tuple_axis_refused_on_cpu_works_on_python():
    X = np.arange(24.).reshape(2, 3, 4)
    check_grad(tuple_axis, [X], target="python")
    with pytest.raises(srcgrad.UnsupportedSyntaxError, match="tuple of axes") as info:
        srcgrad.grad(tuple_axis, target="cpu")(X)
    assert "test_hardening.py" in str(info.value) and "axis=(0, 1)" in str(info.value)
    assert info.value.lineno == tuple_axis.__code__.co_firstlineno + 1


# -- 3. powers are exact at zero -----------------------------------------------------------------

def power_xy(x, y):
    return x ** y


def power_zero(x):
    return x ** 0 + 2.0 * x


def polynomial(x, c):
    s = 0.0
    for k in range(c.shape[0]):
        s += c[k] * x ** k
    return s


def array_power(X, y):
    return np.sum(X ** y) + np.sum(np.power(X, 2.5))


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_powers_at_zero(target):
    both = srcgrad.grad(power_xy, wrt=(0, 1), target=target)
    assert both(0.0, 2.5) == (0.0, 0.0)            # d/dy 0 ** y = 0 for y > 0 (was NaN)
    assert both(0.0, 0.0) == (0.0, 0.0)            # (0, 0): 0 for x (was ZeroDivisionError / NaN)
    assert both(0.0, 1.0) == (1.0, 0.0)
    gx, gy = both(1.7, 0.0)
    assert gx == 0.0 and gy == pytest.approx(np.log(1.7))
    check_grad(power_xy, [1.3, 2.2], wrt=(0, 1), target=target, gradfn=both)
    assert srcgrad.grad(power_zero, target=target)(0.0) == 2.0     # x ** 0 at x = 0
    c = np.array([0.5, -1.25, 3.0, 2.0])
    poly = srcgrad.grad(polynomial, target=target)
    assert poly(0.0, c) == -1.25                    # c[1]
    check_grad(polynomial, [0.0, c], target=target, gradfn=poly)
    check_grad(polynomial, [0.7, c], target=target, gradfn=poly)


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_array_powers_at_zero(target):
    X = np.array([0.0, 0.5, 1.5, 0.0, 2.0])
    fn = srcgrad.grad(array_power, wrt=(0, 1), target=target)
    gX, gy = fn(X, 3.0)
    assert np.all(np.isfinite(gX)) and np.isfinite(gy)
    np.testing.assert_allclose(gX, 3.0 * X ** 2 + 2.5 * X ** 1.5)
    np.testing.assert_allclose(gy, np.sum(X[X > 0] ** 3.0 * np.log(X[X > 0])))
    check_grad(array_power, [X + 0.25, 1.7], wrt=(0, 1), target=target, gradfn=fn)
    # d/dy at y = 0 with zeros in X: x ** 0 is 1 everywhere, its derivative in x is 0
    gX, gy = fn(X, 0.0)
    np.testing.assert_allclose(gX, 2.5 * X ** 1.5)
    assert gy == pytest.approx(np.sum(np.log(X[X > 0])))


# -- 4. each gradient has its argument's dtype ------------------------------------------------------

def mixed_precision(X, Y, w):
    return np.sum(np.tanh(X * w) * Y) + w * w


def float32_with_python_float(X, w):
    return np.sum(np.tanh(X * w)) * 0.5


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_gradient_dtypes_follow_arguments(target):
    X32 = np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)
    Y64 = np.linspace(1, 2, 6).reshape(2, 3)
    gX, gY, gw = srcgrad.grad(mixed_precision, wrt=(0, 1, 2), target=target)(X32, Y64, 0.5)
    assert gX.dtype == np.float32 and gY.dtype == np.float64 and type(gw) is float
    gX64 = srcgrad.grad(mixed_precision, target=target)(X32.astype(np.float64), Y64, 0.5)
    assert gX64.dtype == np.float64
    np.testing.assert_allclose(gX, gX64, rtol=1e-6)
    gX, gw = srcgrad.grad(float32_with_python_float, wrt=(0, 1), target=target)(X32, 0.5)
    assert gX.dtype == np.float32 and type(gw) is float
    value, pullback = srcgrad.vjp(float32_with_python_float, wrt=0, target=target)(X32, 0.5)
    assert pullback(1.0).dtype == np.float32


# -- 9. .source before any call --------------------------------------------------------------------

def matrix_loss(W, b, X, y):
    return np.sum((X @ W + b - y) ** 2)


def scalar_loss(x, y):
    return x * x + math.sin(y)


def test_source_before_any_call():
    gradfn = srcgrad.grad(matrix_loss, wrt=0, target="python")
    with pytest.raises(srcgrad.SrcgradError, match=r"source_for\(\*args\)"):
        gradfn.source
    W, b, X, y = np.ones((3, 2)), np.zeros(2), np.ones((4, 3)), np.ones((4, 2))
    text = gradfn.source_for(W, b, X, y)          # the README's way
    assert "def matrix_loss_adjoint(W, b, X, y, _seed)" in text
    gradfn(W, b, X, y)
    assert gradfn.source == text                  # then: the latest specialization
    assert "def scalar_loss_adjoint" in srcgrad.grad(scalar_loss, target="python").source


# -- 8. refusals name the construct in the user's words ----------------------------------------------

def uses_with(x):
    with open("f") as handle:
        y = x * 2.0
    return y


def uses_yield(x):
    y = x * 2.0
    yield y


def uses_format(x):
    label = "{}".format(x)
    return x * 2.0


def uses_join(x, names):
    label = names.join(names)
    return x * 2.0


@pytest.mark.parametrize("func, words", [
    (uses_with, "with statement / context manager"), (uses_yield, "generator"),
    (uses_format, "string methods"), (uses_join, "string methods")])
def test_refusals_name_the_construct(func, words):
    with pytest.raises(srcgrad.UnsupportedSyntaxError, match=words) as info:
        if func is uses_join:
            srcgrad.grad(func, target="python").source     # a str argument is refused earlier
        else:
            srcgrad.grad(func, target="python")(1.0)
    assert "test_hardening.py" in str(info.value) and info.value.lineno is not None


# -- 6. strided slice writes, np.full, astype: on both targets --------------------------------------

def strided_slices(x, X):
    y = np.zeros_like(x)
    y[::2] += x[::2] * x[::2]
    y[1:3] = x[0:2] * 2.0
    y[1::3] -= np.sin(x[1::3])
    Z = np.full((2, 4), 0.5)
    Z[:, ::2] += X[:, 1::2] * X[:, ::2]
    Z[1, 1:] = Z[1, 1:] * X[0, :3]
    mask = (x > 0.5).astype(np.float64)
    w = X.astype(np.float64) * 1.5
    return np.sum(y * y * mask) + np.sum(y) + np.sum(Z * w)


def strided_small(x):
    """The same constructs, fewer of them: the compiled test's (Numba compiles take seconds)."""
    y = np.full(x.shape[0], 0.5)
    y[::2] += x[::2] * x[::2]
    y[1:3] = x[0:2] * 2.0
    mask = (x > 0.5).astype(np.float64)
    return np.sum(y * y * mask) + np.sum(y)


def test_strided_slice_writes_full_astype_python():
    rng = np.random.default_rng(6)
    x = rng.uniform(0.1, 1.0, size=7)
    X = rng.normal(size=(2, 4))
    check_grad(strided_slices, [x, X], wrt=(0, 1), target="python")


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_strided_slice_writes_full_astype(target):
    x = np.random.default_rng(6).uniform(0.1, 1.0, size=7)
    check_grad(strided_small, [x], target=target)


# -- 7. no raw Numba error: np.matmul of vectors/matrices, mixed float32/float64 products ------------

def matmul_forms(A, v, B):
    return np.sum(np.matmul(A, v) ** 2) + np.sum(np.matmul(A, B)) + np.matmul(v, v) + \
        np.sum(np.matmul(v, B) * 0.5)


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_np_matmul_of_vectors_and_matrices(target):
    rng = np.random.default_rng(7)
    A, v, B = rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=(4, 2))
    check_grad(matmul_forms, [A, v, B], wrt=(0, 1, 2), target=target)


def mixed_products(A, v, B):
    return np.sum((A @ v) ** 2) + np.sum(A @ B) + np.sum(np.dot(A, B) * 0.5)


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_products_of_float32_with_float64(target):
    rng = np.random.default_rng(8)
    A = rng.normal(size=(3, 4)).astype(np.float32)
    v, B = rng.normal(size=4), rng.normal(size=(4, 2))
    gA, gv, gB = srcgrad.grad(mixed_products, wrt=(0, 1, 2), target=target)(A, v, B)
    assert (gA.dtype, gv.dtype, gB.dtype) == (np.float32, np.float64, np.float64)
    g64 = srcgrad.grad(mixed_products, wrt=(0, 1, 2), target="python")(A.astype(np.float64), v, B)
    for got, want in zip((gA, gv, gB), g64):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# -- 5. SRCGRAD_MAX_TAPE_BYTES is read at run time, on both targets ----------------------------------

TAPE_SCRIPT = """
import os
import numpy as np
import srcgrad

def long_loop(a, n):
    s = 0.0
    for i in range(n):
        s = s * 0.5 + a[i % a.shape[0]]
        s = s * s
    return s

def outcome(target):
    try:
        srcgrad.grad(long_loop, target=target)(np.array([0.1, 0.2]), 20000)
        return "ok"
    except MemoryError as exc:
        assert "SRCGRAD_MAX_TAPE_BYTES" in str(exc)
        return "limit"

first = [outcome(t) for t in ("python", "cpu")]
os.environ["SRCGRAD_MAX_TAPE_BYTES"] = "{later}"          # changed inside the process
second = [outcome(t) for t in ("python", "cpu")]
print(" ".join(first + second))
"""


def test_tape_limit_read_at_run_time(tmp_path):
    cache = tmp_path / "cache"
    # 20000 iterations push 40000 floats (320 kB): over a 64 kB limit, under the default
    out = run_script(tmp_path, "tape_a", TAPE_SCRIPT.format(later="65536"), cache)
    assert out == "ok ok limit limit"
    out = run_script(tmp_path, "tape_a", TAPE_SCRIPT.format(later=""), cache,
                     env={"SRCGRAD_MAX_TAPE_BYTES": "65536"})       # a fresh process, same cache
    assert out == "limit limit ok ok"


def concat_stack_3d(a, b):
    return np.sum(np.concatenate((a, b), axis=2) ** 2) + np.sum(np.sin(np.stack((a, b), axis=3)))


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_concatenate_and_stack_of_3d_arrays(target):
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(2, 3, 2)), rng.normal(size=(2, 3, 2))
    check_grad(concat_stack_3d, [a, b], wrt=(0, 1), target=target)


def counts_and_means(X, idx):
    c = np.sum(X > 0.0, axis=1)                 # int64 counts (not booleans)
    m = np.mean(idx, axis=0)                    # float64 means of integers (not truncated)
    total = np.sum(X > 0.0) * 1.0
    return np.sum(X * X, axis=1) @ c * 1.0 + np.sum(X * m) + total * np.sum(X)


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_boolean_and_integer_reductions(target):
    X = np.array([[1.0, 2.0, -1.0], [3.0, 4.0, 5.0]])
    idx = np.array([[1, 2, 3], [2, 2, 2]])
    value, grad = srcgrad.value_and_grad(counts_and_means, target=target)(X, idx)
    assert value == pytest.approx(counts_and_means(X, idx))
    check_grad(counts_and_means, [X, idx], target=target)


def concat_flat(a, b):
    return np.sum(np.concatenate((a, b), axis=None) ** 2)


def test_concatenate_axis_none_is_refused():
    with pytest.raises(srcgrad.UnsupportedSyntaxError, match="axis=None"):
        srcgrad.grad(concat_flat, target="python")(np.ones((2, 2)), np.ones((2, 2)))
