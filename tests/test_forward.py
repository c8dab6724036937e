"""Forward mode and second order: srcgrad.jvp against central finite differences for every tangent
rule and construct (python target for breadth, cpu for a representative subset), hvp against
finite differences of the gradient, hessian and jacobian against finite differences, float32,
argument checks and errors."""
import math

import numpy as np
import pytest

import srcgrad

_CACHE = {}


def cached(kind, f, wrt, target):
    key = (kind, f, wrt, target)       # the function itself: test files reuse names
    if key not in _CACHE:
        _CACHE[key] = getattr(srcgrad, kind)(f, wrt=wrt, target=target)
    return _CACHE[key]


def _copy64(a):
    if isinstance(a, np.ndarray):
        return a.astype(np.float64) if a.dtype.kind == "f" else a.copy()
    return a


def fd_jvp(f, args, wrt, tangents, h=1e-6):
    """Central difference of f along ``tangents`` (one per index in ``wrt``), float64."""
    def shifted(sign):
        moved = [_copy64(a) for a in args]
        for index, t in zip(wrt, tangents):
            moved[index] = moved[index] + sign * h * (np.asarray(t, dtype=np.float64)
                                                      if isinstance(moved[index], np.ndarray) else float(t))
        return np.asarray(f(*moved), dtype=np.float64)
    return (shifted(1) - shifted(-1)) / (2 * h)


def direction_like(x, rng):
    return rng.standard_normal(np.shape(x)) if isinstance(x, np.ndarray) else float(rng.standard_normal())


def check_jvp(f, args, wrt=0, target="python", rtol=1e-5, atol=1e-6, seed=0):
    rng = np.random.default_rng(seed)
    indices = (wrt,) if isinstance(wrt, int) else wrt
    tangents = [direction_like(args[i], rng) for i in indices]
    j = cached("jvp", f, wrt, target)
    value, derivative = j(*[_copy64(a) for a in args], tangents[0] if isinstance(wrt, int) else tuple(tangents))
    np.testing.assert_allclose(value, f(*[_copy64(a) for a in args]), rtol=1e-12, atol=1e-12)
    expected = fd_jvp(f, args, indices, tangents)
    assert np.shape(derivative) == np.shape(expected)
    np.testing.assert_allclose(derivative, expected, rtol=rtol, atol=atol)
    return derivative


# ---- programs: every tangent rule ---------------------------------------------------------------

def arith(x, y):
    return (x + y) * (x - y) / (1.5 + y * y) - x ** 3 + y ** x + (-x) % 0.7 + x % (2.0 + y)


def unary_math(x):
    a = math.sin(x) + math.cos(x) + math.tan(x) + math.asin(x) + math.acos(x) + math.atan(x)
    b = math.sinh(x) + math.cosh(x) + math.tanh(x) + math.exp(x) + math.expm1(x)
    c = math.log(x) + math.log1p(x) + math.log2(x) + math.log10(x) + math.sqrt(x) + abs(x - 0.2)
    c = c + math.erf(x) - 0.5 * math.erfc(2.0 * x)
    return a * b + c + math.atan2(x, 0.3 + x) + math.hypot(x, 2.0 * x) + math.pow(x, 1.7) + float(x)


def ufuncs(x, y):
    a = np.sin(x) * np.cos(y) + np.tan(x) + np.arcsin(x) + np.arccos(y) + np.arctan(x * y)
    b = np.sinh(x) + np.cosh(y) + np.tanh(x) + np.exp(y) + np.expm1(x) + np.log(x) + np.log1p(y)
    c = np.log2(x) + np.log10(y) + np.sqrt(x) + np.square(y) + np.abs(x - y) + np.fabs(y)
    d = np.arctan2(x, y) + np.hypot(x, y) + np.power(x, y) + np.negative(y) + np.mod(x, 0.3)
    return a * b + c + d


def piecewise(x, y):
    a = np.maximum(x, y) + np.minimum(x, 0.5) + np.fmax(y, 0.4) + np.fmin(x, y)
    b = np.where(x > y, x * x, y) + np.clip(x, 0.3, 0.7) + np.floor(x) * y + np.clip(y, 0.5 * x, x + 0.2)
    return a * b + max(x[0], y[1]) + min(x[1], 0.5)


def products(A, B, v):
    C = A @ B
    w = np.dot(A, v) + (A.T).T @ v
    return np.sum(np.sin(C)) + np.sum(w * w) + np.dot(v, v) + np.sum(np.outer(v, w))


def batched(A, B):
    return np.sum(np.tanh(A @ B))


def reductions(X):
    a = np.sum(X * X, axis=1, keepdims=True) + np.mean(X, axis=0, keepdims=True)
    b = np.max(X, axis=1) + np.min(X, axis=1) + np.prod(X, axis=1)
    return np.sum(a) + np.sum(b * b) + np.max(X) * np.min(X) + np.prod(X[0]) + X.mean() + X.sum(axis=0)[1]


def shapes(X):
    a = np.transpose(X)
    b = np.reshape(X, (X.shape[1], X.shape[0]))
    c = np.ravel(X) + X.flatten()
    d = np.expand_dims(X[0], 0) + np.copy(X)
    e = np.concatenate((X, a.T * 2.0), axis=0)
    f = np.stack((X[0], X[1]), axis=0)
    return np.sum(a.T * b.T) + np.sum(c * c) + np.sum(d ** 3) + np.sum(np.sin(e)) + np.sum(f * X[:2, :])


def indexing(X, rows, cols):
    g = X[rows, cols]
    s = X[1:3, :]
    return np.sum(g * g) + np.sum(s * 2.0) + X[0, 1] * X[2, 0] + X[:, 1].astype(np.float64)[0]


def broadcast(x, s):
    return np.sum(x * s + s) + np.sum(x[:, None] * x[None, :] - s)


def broadcast_add(a, b, s):
    c = a[:, None] + b[None, :]          # with only a varying, its tangent broadcasts to c's shape
    return np.sin(c) * 2.0 + s - b[None, :]


def array_result(x, W):
    return np.tanh(W @ x) * x[0] + s_helper(x)


def s_helper(x):
    return np.sum(x * x)


RULES = [
    (arith, lambda r: (0.8, 0.6), 0),
    (arith, lambda r: (0.8, 0.6), (0, 1)),
    (unary_math, lambda r: (0.45,), 0),
    (ufuncs, lambda r: (r.uniform(0.1, 0.9, 5), r.uniform(0.1, 0.9, 5)), (0, 1)),
    (piecewise, lambda r: (r.uniform(0.1, 0.9, 6), r.uniform(0.1, 0.9, 6)), (0, 1)),
    (products, lambda r: (r.standard_normal((3, 4)), r.standard_normal((4, 2)), r.standard_normal(4)),
     (0, 1, 2)),
    (batched, lambda r: (r.standard_normal((2, 3, 4)), r.standard_normal((4, 2))), (0, 1)),
    (reductions, lambda r: (r.uniform(0.5, 1.5, (3, 4)),), 0),
    (shapes, lambda r: (r.standard_normal((3, 4)),), 0),
    (indexing, lambda r: (r.standard_normal((4, 3)), np.array([0, 2, 2]), np.array([1, 0, 1])), 0),
    (broadcast, lambda r: (r.standard_normal(4), 0.7), (0, 1)),
    (array_result, lambda r: (r.standard_normal(3), r.standard_normal((3, 3))), (0, 1)),
    (broadcast_add, lambda r: (r.standard_normal(3), r.standard_normal(4), 0.3), 0),
    (broadcast_add, lambda r: (r.standard_normal(3), r.standard_normal(4), 0.3), 2),
]


@pytest.mark.parametrize("f,make,wrt", RULES, ids=[f"{f.__name__}-{w}" for f, _, w in RULES])
def test_tangent_rules_python(f, make, wrt):
    args = make(np.random.default_rng(1))
    check_jvp(f, args, wrt, "python")


# ---- constructs -----------------------------------------------------------------------------------

def loops(x, n):
    s = 0.0
    for i in range(n):
        for j in range(i, n, 2):
            s += math.sin(x[i] * x[j])
    k = 0
    while s < 10.0 and k < 50:
        s = s * 1.3 + x[k % n]
        k += 1
    return s


def jumps(x, n):
    s = 0.0
    for i in range(n):
        if x[i] < 0.2:
            continue
        if s > 3.0:
            break
        s += x[i] * x[i]
        if i == n - 2:
            return s * 2.0
    return s + x[0]


def inplace(x, n):
    y = np.zeros(n)
    for i in range(n):
        y[i] = x[i] * x[(i + 1) % n]
    for i in range(1, n):
        y[i] += y[i - 1] * 0.5
    x[0] = y[n - 1]          # written argument: copied, the caller's x is unchanged
    return np.sum(y * x)


def aliasing(x, n):
    y = x + 0.0                  # tangent: _dot_x itself, unless copied
    y[0] = 5.0
    z = np.zeros(n)
    w = z * 1.0 + x[1]
    z[1] = x[0] * 3.0
    return np.sum(y * x) + np.sum(w * z) + np.sum(z)


def into_buffer(x, buf):
    for i in range(buf.shape[0]):
        buf[i] = x[i] * x[i]             # buf (not differentiated) receives varying values
    return np.sum(buf * buf)


def helper_tuple(a, b):
    return a * b, np.sin(a) + b


def helper_calls(x, c):
    p, q = helper_tuple(x[0], x[1])
    r = s_helper(x) * c
    u = helper_tuple(c, 2.0)[0]           # a helper call that does not vary with x
    return p * q + r + u + s_helper(x * p)


def branches(x, y):
    if x > y:
        z = x * y
    elif x > 0.0:
        z = x / y
    else:
        z = 3.0
    w = z if z > 0.1 else -z
    return w * math.exp(x)


CONSTRUCTS = [
    (loops, lambda r: (r.uniform(0.1, 0.9, 6), 6), 0),
    (jumps, lambda r: (r.uniform(0.0, 1.0, 8), 8), 0),
    (inplace, lambda r: (r.standard_normal(5), 5), 0),
    (aliasing, lambda r: (r.standard_normal(4), 4), 0),
    (into_buffer, lambda r: (r.standard_normal(4), np.zeros(3)), 0),
    (helper_calls, lambda r: (r.standard_normal(3), 0.4), (0, 1)),
    (branches, lambda r: (0.7, 0.3), (0, 1)),
    (branches, lambda r: (0.2, 0.9), 0),
]


@pytest.mark.parametrize("f,make,wrt", CONSTRUCTS, ids=[f"{f.__name__}-{w}" for f, _, w in CONSTRUCTS])
def test_constructs_python(f, make, wrt):
    args = make(np.random.default_rng(2))
    check_jvp(f, args, wrt, "python")


def test_written_argument_and_tangent_unchanged():
    x = np.random.default_rng(3).standard_normal(5)
    v = np.ones(5)
    x0, v0 = x.copy(), v.copy()
    cached("jvp", inplace, 0, "python")(x, 5, v)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(v, v0)


# compiled (Numba) path: a representative subset (each compile takes seconds); the products
# program (matrix products of every kind, ~50 s to compile here) only with -m slow: array_result
# covers matrix-vector products on the cpu target by default
def _param(program, slow=False):
    f, _, wrt = program
    return pytest.param(*program, id=f"{f.__name__}-{wrt}", marks=[pytest.mark.slow] if slow else [])


def _program(f, table):
    return next(p for p in table if p[0] is f)


CPU_SUBSET = [_param(RULES[1]), _param(_program(products, RULES), slow=True), _param(_program(reductions, RULES)),
              _param(_program(array_result, RULES))] + \
    [_param(_program(f, CONSTRUCTS)) for f in (jumps, inplace, helper_calls, into_buffer)]


@pytest.mark.parametrize("f,make,wrt", CPU_SUBSET)
def test_jvp_cpu(f, make, wrt):
    args = make(np.random.default_rng(4))
    check_jvp(f, args, wrt, "cpu")


# ---- hvp: reverse mode over the generated tangent code -----------------------------------------

def extremes(X):
    a = np.sum(X * X, axis=1, keepdims=True) + np.mean(X, axis=0, keepdims=True)
    b = np.max(X, axis=1) + np.min(X, axis=1)
    return np.sum(a * a) + np.sum(b * b * b) + np.max(X) * np.min(X) + X.mean() + X.sum(axis=0)[1]


def fd_hvp(f, args, wrt, vs, h=1e-6):
    """Central difference of srcgrad's (python target) gradient along ``vs``."""
    g = cached("grad", f, wrt, "python")
    indices = (wrt,) if isinstance(wrt, int) else wrt

    def at(sign):
        moved = [_copy64(a) for a in args]
        for index, v in zip(indices, vs):
            moved[index] = moved[index] + sign * h * (np.asarray(v) if isinstance(moved[index], np.ndarray)
                                                      else float(v))
        out = g(*moved)
        return [np.asarray(o, dtype=np.float64) for o in ((out,) if isinstance(wrt, int) else out)]
    plus, minus = at(1), at(-1)
    return [(p - m) / (2 * h) for p, m in zip(plus, minus)]


def check_hvp(f, args, wrt, target, rtol=1e-5, atol=1e-6, seed=0):
    rng = np.random.default_rng(seed)
    indices = (wrt,) if isinstance(wrt, int) else wrt
    vs = [direction_like(args[i], rng) for i in indices]
    h = cached("hvp", f, wrt, target)
    out = h(*[_copy64(a) for a in args], vs[0] if isinstance(wrt, int) else tuple(vs))
    out = (out,) if isinstance(wrt, int) else out
    assert len(out) == len(indices)
    for got, want, i in zip(out, fd_hvp(f, args, wrt, vs), indices):
        assert np.shape(got) == np.shape(args[i])
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def summed_ufuncs(x, y):
    return np.sum(ufuncs(x, y))


def summed_piecewise(x, y):
    return np.sum(piecewise(x, y) ** 2)


HVP_PROGRAMS = [p for p in RULES + CONSTRUCTS
                if p[0] not in (reductions, array_result, ufuncs, piecewise, broadcast_add)] + [
    (summed_ufuncs, RULES[3][1], (0, 1)), (summed_piecewise, RULES[4][1], (0, 1)),
    (extremes, lambda r: (r.uniform(0.5, 1.5, (3, 4)),), 0)]


@pytest.mark.parametrize("f,make,wrt", HVP_PROGRAMS, ids=[f"{f.__name__}-{w}" for f, _, w in HVP_PROGRAMS])
def test_hvp_python(f, make, wrt):
    check_hvp(f, make(np.random.default_rng(5)), wrt, "python")


# (the reductions program takes ~80 s to compile here: -m slow; loops covers compiled hvp)
HVP_CPU = [_param(_program(loops, CONSTRUCTS)), _param(HVP_PROGRAMS[-1], slow=True)]


@pytest.mark.parametrize("f,make,wrt", HVP_CPU)
def test_hvp_cpu(f, make, wrt):
    check_hvp(f, make(np.random.default_rng(6)), wrt, "cpu")


def test_hvp_of_prod():
    # (np.prod's second derivative: the adjoint of its tangent's runtime helper, zeros included)
    f, make, wrt = _program(reductions, RULES)
    X = make(np.random.default_rng(7))[0]
    check_hvp(f, (X,), wrt, "python")
    X[0, 1] = 0.0
    check_hvp(f, (X,), wrt, "python")


def test_hvp_needs_a_scalar_function():
    with pytest.raises(srcgrad.SrcgradError, match="scalar"):
        srcgrad.hvp(array_result, target="python")(np.ones(3), np.eye(3), np.ones(3))


# ---- hessian and jacobian -------------------------------------------------------------------------

def fd_hessian(f, args, index, h=1e-5):
    """H[i..., j...] by central differences of srcgrad's python-target gradient."""
    g = cached("grad", f, index, "python")
    x = _copy64(args[index])
    if not isinstance(x, np.ndarray):
        plus, minus = list(args), list(args)
        plus[index], minus[index] = x + h, x - h
        return (g(*plus) - g(*minus)) / (2 * h)
    H = np.zeros(x.shape + x.shape)
    for pos in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[pos] += h
        minus[pos] -= h
        a, b = list(args), list(args)
        a[index], b[index] = plus, minus
        H[(Ellipsis,) + pos] = (g(*a) - g(*b)) / (2 * h)
    return H


def fd_jacobian(f, args, index, h=1e-6):
    x = _copy64(args[index])
    if not isinstance(x, np.ndarray):
        plus, minus = list(args), list(args)
        plus[index], minus[index] = x + h, x - h
        return (np.asarray(f(*plus)) - np.asarray(f(*minus))) / (2 * h)
    out_shape = np.shape(f(*args))
    J = np.zeros(out_shape + x.shape)
    for pos in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[pos] += h
        minus[pos] -= h
        a, b = list(args), list(args)
        a[index], b[index] = plus, minus
        J[(Ellipsis,) + pos] = (np.asarray(f(*a)) - np.asarray(f(*b))) / (2 * h)
    return J


def rosen(x):
    s = 0.0
    for i in range(x.shape[0] - 1):
        s += 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


def quad_form(X, s):
    return np.sum((X @ X.T) ** 2) * s + s ** 3


def wide(x, W):                      # 3 outputs of 5 inputs: reverse mode
    return np.tanh(W @ x)


def tall(x, W):                      # 4 outputs of 2 inputs: forward mode
    return np.sin(W @ x) * x[0]


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_hessian_rosenbrock(target):
    x = np.random.default_rng(7).uniform(-1, 1, 5)
    H = cached("hessian", rosen, 0, target)(x)
    assert cached("hessian", rosen, 0, target).last_path == "batched"    # forward over reverse
    assert H.shape == (5, 5)
    np.testing.assert_allclose(H, fd_hessian(rosen, (x,), 0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(H, H.T, rtol=1e-12, atol=1e-9)


def test_hessian_matrix_argument_and_float():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((2, 3))
    H = cached("hessian", quad_form, 0, "python")(X, 0.7)
    assert H.shape == (2, 3, 2, 3)
    np.testing.assert_allclose(H, fd_hessian(quad_form, (X, 0.7), 0), rtol=1e-5, atol=1e-4)
    hs = cached("hessian", quad_form, 1, "python")(X, 0.7)
    assert isinstance(hs, float)
    np.testing.assert_allclose(hs, 6 * 0.7, rtol=1e-10)
    blocks = cached("hessian", quad_form, (0, 1), "python")(X, 0.7)
    np.testing.assert_allclose(blocks[0][0], H, rtol=1e-10)
    np.testing.assert_allclose(blocks[1][1], hs, rtol=1e-10)
    np.testing.assert_allclose(blocks[0][1], fd_jacobian(lambda X, s: srcgrad.grad(quad_form, target="python")(X, s),
                                                         (X, 0.7), 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(blocks[1][0], blocks[0][1], rtol=1e-10)


@pytest.mark.parametrize("f,mode", [(wide, "reverse"), (tall, "forward")])
@pytest.mark.parametrize("target", ["python", "cpu"])
def test_jacobian_modes(f, mode, target):
    rng = np.random.default_rng(9)
    x, W = (rng.standard_normal(5), rng.standard_normal((3, 5))) if f is wide else \
        (rng.standard_normal(2), rng.standard_normal((4, 2)))
    jac = cached("jacobian", f, 0, target)
    J = jac(x, W)
    assert jac.last_mode == mode
    np.testing.assert_allclose(J, fd_jacobian(f, (x, W), 0), rtol=1e-6, atol=1e-7)
    JW = cached("jacobian", f, (0, 1), "python")(x, W)
    assert JW[1].shape == np.shape(f(x, W)) + W.shape
    np.testing.assert_allclose(JW[1], fd_jacobian(f, (x, W), 1), rtol=1e-6, atol=1e-7)


def test_jacobian_of_scalar_function_is_the_gradient():
    x = np.random.default_rng(10).uniform(-1, 1, 4)
    np.testing.assert_allclose(cached("jacobian", rosen, 0, "python")(x),
                               srcgrad.grad(rosen, target="python")(x), rtol=1e-12)


# ---- float32, sources, arguments ------------------------------------------------------------------

@pytest.mark.parametrize("target", ["python", "cpu"])
def test_float32(target):
    rng = np.random.default_rng(11)
    x = rng.uniform(-1, 1, 6).astype(np.float32)
    v = rng.standard_normal(6).astype(np.float32)
    value, t = cached("jvp", rosen, 0, target)(x, v)      # float results are Python floats (as grad's)
    np.testing.assert_allclose(t, fd_jvp(rosen, (x,), (0,), (v,)), rtol=2e-4)
    hv = cached("hvp", rosen, 0, target)(x, v)
    assert hv.dtype == np.float32
    np.testing.assert_allclose(hv, fd_hvp(rosen, (x,), 0, (v,))[0], rtol=2e-4, atol=1e-3)
    H = cached("hessian", rosen, 0, target)(x)
    assert H.dtype == np.float32 and H.shape == (6, 6)
    if target == "python":
        assert "np.float32(" in cached("jvp", rosen, 0, target).source_for(x)


def test_sources_and_arguments():
    j = srcgrad.jvp(rosen, target="python")
    source = j.source_for(np.ones(3))
    assert "def rosen_jvp(x, _dot_x):" in source and "_dot_s" in source
    h = srcgrad.hvp(rosen, target="python")
    assert "rosen_jvp_tangent_adjoint" in h.source_for(np.ones(3))
    with pytest.raises(ValueError, match="shape"):
        j(np.ones(3), np.ones(4))
    with pytest.raises(TypeError, match="tuple"):
        srcgrad.jvp(arith, wrt=(0, 1), target="python")(0.5, 0.5, 1.0)
    with pytest.raises(TypeError):
        srcgrad.jvp(rosen, wrt=0, target="python")(np.ones(3).astype(int), np.ones(3))


def no_tangent_rule(x):
    return np.sum(_plain_twice(x))


def _plain_twice(x):
    return 2.0 * x


def test_rule_without_tangent_is_a_clear_error():
    srcgrad.register_adjoint(_plain_twice)(_twice_adjoint)
    try:
        with pytest.raises(srcgrad.SrcgradError, match="no tangent rule"):
            srcgrad.jvp(no_tangent_rule, target="python")(np.ones(2), np.ones(2))
        srcgrad.register_tangent(_plain_twice)(_twice_tangent)
        _, t = srcgrad.jvp(no_tangent_rule, target="python")(np.ones(2), np.array([1.0, 2.0]))
        assert t == 6.0
    finally:
        from srcgrad import rules
        rules.REGISTRY.pop(_plain_twice, None)


def _twice_adjoint(result, x):
    d[x] += 2.0 * d[result]  # noqa: F821  (template)


def _twice_tangent(result, x):
    d[result] += 2.0 * d[x]  # noqa: F821  (template)


def test_nan_in_nan_out():
    _, t = srcgrad.jvp(rosen, target="python")(np.array([1.0, np.nan, 0.5]), np.ones(3))
    assert np.isnan(t)


def test_njit_entries():
    import numba
    jv = srcgrad.jvp(rosen, target="cpu").njit
    hv = srcgrad.hvp(rosen, target="cpu").njit
    hess = srcgrad.hessian(rosen, target="cpu").njit
    jac = srcgrad.jacobian(tall, target="cpu").njit

    @numba.njit
    def use(x, v, y, W):
        value, t = jv(x, v)
        return value, t, hv(x, v), hess(x), jac(y, W)

    rng = np.random.default_rng(12)
    x, v, y, W = rng.uniform(-1, 1, 4), rng.standard_normal(4), rng.standard_normal(2), rng.standard_normal((4, 2))
    value, t, hvx, H, J = use(x, v, y, W)
    assert value == pytest.approx(rosen(x), rel=1e-12)
    np.testing.assert_allclose(t, fd_jvp(rosen, (x,), (0,), (v,)), rtol=1e-6)
    np.testing.assert_allclose(H, fd_hessian(rosen, (x,), 0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(hvx, H @ v, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(J, fd_jacobian(tall, (y, W), 0), rtol=1e-6, atol=1e-7)


def test_examples_run(capsys):
    import importlib.util
    import pathlib
    root = pathlib.Path(__file__).resolve().parent.parent / "examples"

    def load(name):
        spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    newton_iters, gd_iters = load("newton_rosenbrock").main(["--n", "4", "--target", "python",
                                                             "--gd-max-iter", "3000"])
    assert newton_iters < 40 and gd_iters > 10 * newton_iters
    sensitivity, fd, J, J_fd = load("ode_sensitivity").main(["--steps", "100", "--dt", "0.005",
                                                             "--target", "python"])
    np.testing.assert_allclose(sensitivity, fd, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(J, J_fd, rtol=1e-5, atol=1e-6)
    assert "Newton-CG" in capsys.readouterr().out


# ---- differential fuzzing: random programs, jvp against FD and reverse mode, hvp against FD ------

def _fuzz_test():
    from hypothesis import HealthCheck, Phase, assume, given, note, settings, strategies as st
    import fuzz_programs as fp

    @settings(max_examples=12, derandomize=True, phases=[Phase.explicit, Phase.reuse, Phase.generate],
              deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(source=fp.programs(features=fp.ALL_FEATURES), point_seed=st.integers(0, 2 ** 16))
    def run(source, point_seed):
        note(source)
        f = fp.load_program(source).prog
        rng = np.random.default_rng(point_seed)
        x, y = (float(v) for v in rng.uniform(-1.5, 1.5, 2))
        a = rng.uniform(-1.5, 1.5, fp.N)
        dx, dy = (float(v) for v in rng.standard_normal(2))
        da = rng.standard_normal(fp.N)
        fd1 = fp.directional_fd(f, x, y, a, dx, dy, da, 1e-6)
        fd2 = fp.directional_fd(f, x, y, a, dx, dy, da, 4e-6)
        assume(math.isfinite(fd1) and math.isclose(fd1, fd2, rel_tol=1e-4, abs_tol=1e-5))
        value, t = srcgrad.jvp(f, wrt=(0, 1, 2), target="python")(x, y, a.copy(), (dx, dy, da))
        assert math.isclose(t, fd1, rel_tol=1e-5, abs_tol=1e-6), (t, fd1, source)
        gx, gy, ga = srcgrad.grad(f, wrt=(0, 1, 2), target="python")(x, y, a.copy())
        reverse = gx * dx + gy * dy + float(np.dot(ga, da))
        assert math.isclose(t, reverse, rel_tol=1e-9, abs_tol=1e-12), (t, reverse, source)
        # hvp against central differences of the gradient along the same direction
        g = srcgrad.grad(f, wrt=(0, 1, 2), target="python")

        def fd_grad(h):
            p, m = g(x + h * dx, y + h * dy, a + h * da), g(x - h * dx, y - h * dy, a - h * da)
            return np.r_[p[0], p[1], p[2]] - np.r_[m[0], m[1], m[2]]
        h1, h2 = fd_grad(1e-6) / 2e-6, fd_grad(4e-6) / 8e-6
        if np.allclose(h1, h2, rtol=1e-4, atol=1e-5):      # no branch boundary within the step
            hx, hy, ha = srcgrad.hvp(f, wrt=(0, 1, 2), target="python")(x, y, a.copy(), (dx, dy, da))
            np.testing.assert_allclose(np.r_[hx, hy, ha], h1, rtol=1e-4, atol=1e-5, err_msg=source)
    return run


def test_fuzz_jvp_and_hvp():
    _fuzz_test()()
