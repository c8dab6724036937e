"""srcgrad.vjp: pullbacks of array-valued (and scalar) functions against the full Jacobian, built
column by column with central finite differences, for random seeds; seed validation; grad of an
array-valued function; float32. One GradFunction per (function, wrt, target) for the session.
"""
import numpy as np
import pytest

import srcgrad

_CACHE = {}


def vjpfn(f, wrt, target):
    key = (f.__name__, wrt, target)
    if key not in _CACHE:
        _CACHE[key] = srcgrad.vjp(f, wrt=wrt, target=target)
    return _CACHE[key]


def layer(W, x, b):
    return np.tanh(W @ x + b)


def elementwise(x, y):
    return np.sin(x) * y + np.exp(0.5 * x) - y * y


def reductions_keepdims(X):
    return np.sum(X * X, axis=1, keepdims=True) + np.max(X, axis=0, keepdims=True) * np.mean(X, axis=1,
                                                                                             keepdims=True)


def matrix_out(A, B):
    return np.sin(A @ B) + A[:, :1]


def scalar_out(x, s):
    return np.sum(np.tanh(x) * s) + s * s


def fd_jacobian(f, args, index, h=1e-6):
    """J[out..., in...] of f w.r.t. args[index], float64 central differences."""
    args = [a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args]
    x = args[index]
    out_shape = np.shape(f(*args))
    if not isinstance(x, np.ndarray):
        plus, minus = list(args), list(args)
        plus[index], minus[index] = x + h, x - h
        return (np.asarray(f(*plus)) - np.asarray(f(*minus))) / (2 * h)
    J = np.zeros(out_shape + x.shape)
    for pos in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[pos] += h
        minus[pos] -= h
        a_plus, a_minus = list(args), list(args)
        a_plus[index], a_minus[index] = plus, minus
        J[(Ellipsis,) + pos] = (np.asarray(f(*a_plus)) - np.asarray(f(*a_minus))) / (2 * h)
    return J


def check_vjp(f, args, wrt, target, seeds=3, dtype=np.float64, rtol=1e-6, atol=1e-7):
    args = [a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args]
    value, pullback = vjpfn(f, wrt, target)(*args)
    expected = f(*[a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args])
    np.testing.assert_allclose(np.asarray(value, dtype=np.float64), expected, rtol=max(rtol, 1e-12), atol=atol)
    assert np.shape(value) == np.shape(expected)
    indices = list(wrt) if isinstance(wrt, tuple) else [wrt]
    jacobians = [fd_jacobian(f, args, i) for i in indices]
    rng = np.random.default_rng(0)
    for _ in range(seeds):
        seed = rng.standard_normal(np.shape(value))
        if np.shape(value):
            seed = seed.astype(dtype)
        else:
            seed = float(seed)
        grads = pullback(seed)
        grads = list(grads) if isinstance(wrt, tuple) else [grads]
        assert len(grads) == len(indices)
        for i, g, J in zip(indices, grads, jacobians):
            nout = np.ndim(value)
            want = np.tensordot(np.asarray(seed, dtype=np.float64), J, axes=nout) if nout else seed * J
            if isinstance(args[i], np.ndarray):
                assert isinstance(g, np.ndarray) and g.shape == args[i].shape and g.dtype == dtype
            else:
                assert isinstance(g, float)
            np.testing.assert_allclose(np.asarray(g, dtype=np.float64), want, rtol=rtol, atol=atol,
                                       err_msg=f"pullback w.r.t. argument {i}")
    return value, pullback

# cpu variants whose compiled code path another default cpu test covers (float32 and non-contiguous
# arrays: test_arrays' products; a second shape: the same code) run only with -m slow
SLOW_CPU = ["python", pytest.param("cpu", marks=pytest.mark.slow)]


def _layer_args(rng, m=3, n=4):
    return [rng.standard_normal((m, n)), rng.standard_normal(n), rng.standard_normal(m)]


@pytest.mark.parametrize("m,n", [(3, 4), (1, 2)])
def test_layer(target, m, n):
    check_vjp(layer, _layer_args(np.random.default_rng(m * n), m, n), (0, 1, 2), target)


@pytest.mark.parametrize("target", SLOW_CPU)
def test_layer_non_contiguous(target):
    rng = np.random.default_rng(1)
    check_vjp(layer, [rng.standard_normal((4, 3)).T, rng.standard_normal(8)[::2], rng.standard_normal(3)],
              (0, 1, 2), target)


@pytest.mark.parametrize("target", SLOW_CPU)
def test_layer_float32(target):
    check_vjp(layer, _layer_args(np.random.default_rng(2)), (0, 1, 2), target, dtype=np.float32,
              rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("target, shape", [("python", (5,)), ("python", (2, 3)), ("cpu", (5,)),
                                           pytest.param("cpu", (2, 3), marks=pytest.mark.slow)])
def test_elementwise(target, shape):
    rng = np.random.default_rng(len(shape))
    check_vjp(elementwise, [rng.standard_normal(shape), rng.standard_normal(shape)], (0, 1), target)


def test_reductions_keeping_dims(target):
    check_vjp(reductions_keepdims, [np.random.default_rng(3).standard_normal((3, 4))], 0, target)


@pytest.mark.parametrize("target", SLOW_CPU)      # a 2-d result on cpu: test_layer
def test_matrix_result(target):
    rng = np.random.default_rng(4)
    check_vjp(matrix_out, [rng.standard_normal((3, 2)), rng.standard_normal((2, 4))], (0, 1), target)


def test_scalar_result_matches_grad(target):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(4)
    value, pullback = check_vjp(scalar_out, [x, 0.3], (0, 1), target)
    assert isinstance(value, float)
    gx, gs = srcgrad.grad(scalar_out, wrt=(0, 1), target=target)(x, 0.3)
    px, ps = pullback(1.0)
    np.testing.assert_allclose(px, gx, rtol=1e-12)
    assert ps == pytest.approx(gs, rel=1e-12)
    px2, ps2 = pullback(-2.5)
    np.testing.assert_allclose(px2, -2.5 * gx, rtol=1e-12)
    assert ps2 == pytest.approx(-2.5 * gs, rel=1e-12)


def test_pullback_is_reusable_and_does_not_modify_inputs(target):
    rng = np.random.default_rng(6)
    args = _layer_args(rng)
    copies = [a.copy() for a in args]
    _, pullback = vjpfn(layer, (0, 1, 2), target)(*args)
    seed = rng.standard_normal(3)
    seed_copy = seed.copy()
    first = pullback(seed)
    second = pullback(seed)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(seed, seed_copy)
    for a, c in zip(args, copies):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("bad", [np.ones(4), np.ones((3, 1)), np.ones((1, 3)), 1.0])
def test_wrong_seed_shape(bad):
    args = _layer_args(np.random.default_rng(7))
    _, pullback = vjpfn(layer, (0, 1, 2), "python")(*args)
    with pytest.raises(ValueError, match="shape"):
        pullback(bad)


def test_wrong_seed_shape_scalar_result():
    _, pullback = vjpfn(scalar_out, (0, 1), "python")(np.ones(3), 0.5)
    with pytest.raises(ValueError, match="shape"):
        pullback(np.ones(3))


@pytest.mark.parametrize("mode", [srcgrad.grad, srcgrad.value_and_grad])
def test_grad_of_array_function_points_to_vjp(target, mode):
    args = _layer_args(np.random.default_rng(8))
    with pytest.raises(srcgrad.SrcgradError, match="vjp"):
        mode(layer, wrt=0, target=target)(*args)
