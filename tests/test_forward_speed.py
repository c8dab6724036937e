"""Forward mode's faster paths give the same answers as the plain ones: hvp's gradient-only
adjoint (no value, dead forward sweep removed) against the full adjoint of the same tangent
function and against finite differences of the gradient; the liveness pass on its own."""
import ast
import math

import numpy as np
import pytest

import srcgrad
from srcgrad.api import GradFunction
from srcgrad.forward import remove_dead_code
from test_forward import HVP_PROGRAMS, check_hvp, direction_like, _copy64


def _plain_hvp(h, args, vs):
    """H·v by the unoptimized path: the ordinary (value and gradient) adjoint of hvp's tangent
    function."""
    values = tuple(_copy64(a) for a in args)
    kinds = h.kinds_of(values)
    inner = h.inner(kinds, "float64")
    plain = GradFunction(inner.func, wrt=h.wrt_indices[0] if h.single else tuple(h.wrt_indices),
                         target=h.target)
    return plain(*values, *vs)


def _compare(f, args, wrt, target):
    rng = np.random.default_rng(3)
    indices = (wrt,) if isinstance(wrt, int) else wrt
    vs = [direction_like(args[i], rng) for i in indices]
    h = srcgrad.hvp(f, wrt=wrt, target=target)
    got = h(*[_copy64(a) for a in args], vs[0] if isinstance(wrt, int) else tuple(vs))
    assert h._last.gradient_only is not None          # the fast path ran
    want = _plain_hvp(h, args, vs)
    for g, w in zip((got,) if isinstance(wrt, int) else got, (want,) if isinstance(wrt, int) else want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("f,make,wrt", HVP_PROGRAMS[:12], ids=[f"{f.__name__}-{w}" for f, _, w in HVP_PROGRAMS[:12]])
def test_gradient_only_matches_full_adjoint_python(f, make, wrt):
    _compare(f, make(np.random.default_rng(5)), wrt, "python")


def rosenbrock(x):
    s = 0.0
    for i in range(x.shape[0] - 1):
        a = x[i + 1] - x[i] * x[i]
        b = 1.0 - x[i]
        s += 100.0 * a * a + b * b
    return s


def lorenz(p, u0, dt, nsteps):
    x, y, z = u0[0], u0[1], u0[2]
    J = 0.0
    for t in range(nsteps):
        dx = p[0] * (y - x)
        dy = x * (p[1] - z) - y
        dz = x * y - p[2] * z
        x = x + dt * dx
        y = y + dt * dy
        z = z + dt * dz
        J += dt * (x * x + y * y + z * z)
    return J


def buffers(x, n):
    """A tape-free loop that writes an array (kept by the liveness pass) and a while loop."""
    buf = np.zeros(n)
    for i in range(n):
        buf[i] = math.sin(x[i]) * x[(i + 1) % n]
    s = 0.0
    k = 0
    while k < n:
        s += buf[k] * buf[k] + math.exp(x[k]) * buf[n - 1 - k]
        k += 1
    return s


@pytest.mark.parametrize("f,args,wrt", [
    (rosenbrock, (np.linspace(-0.5, 1.5, 7),), 0),
    (lorenz, (np.array([10.0, 28.0, 8.0 / 3.0]), np.array([1.0, 0.5, 0.2]), 0.01, 20), (0, 1)),
    (buffers, (np.linspace(0.1, 0.9, 5), 5), 0)], ids=["rosenbrock", "lorenz", "buffers"])
def test_gradient_only_cpu(f, args, wrt):
    check_hvp(f, args, wrt, "cpu")
    _compare(f, args, wrt, "cpu")


def test_tangent_function_has_no_dead_primal():
    h = srcgrad.hvp(rosenbrock, target="python")
    source = h.source_for(np.ones(4))
    tangent = source[source.index("def rosenbrock_jvp_tangent("):]
    tangent = tangent[:tangent.index("return")]
    assert "s = " not in tangent.replace("_dot_s = ", "")      # the value s: dead in the tangent
    assert "_dot_s" in tangent


def _dce(text, _unused=""):
    tree = ast.parse(text)
    return ast.unparse(ast.Module(body=remove_dead_code(tree.body), type_ignores=[]))


def test_liveness_pass():
    out = _dce("s = 0.0\nfor i in range(n):\n    s += x[i]\n    a[i] = s\nt = 1.0\nfor i in range(n):\n"
               "    t = t * x[i]\nwhile k < n:\n    u = k\n    k += 1\nreturn a\n", "")
    assert "a[i] = s" in out and "s += x[i]" in out        # feeds an array write: kept
    assert "t" not in out.replace("return", "")            # a dead loop-carried value: gone
    assert "while" not in out                              # its test's variable is dead too
    # a value read in a later iteration stays
    out = _dce("p = 0.0\nq = 0.0\nfor i in range(n):\n    q = p + 1.0\n    p = x[i]\nreturn q\n", "")
    assert "p = x[i]" in out
    # calls that may have effects stay; break is not modelled (nothing removed)
    out = _dce("r = push(tape, 1.0)\nd = 2.0\nreturn 0.0\n", "")
    assert "push" in out and "d = " not in out
    text = "d = 2.0\nfor i in range(n):\n    break\nreturn 0.0"
    assert _dce(text, "") == ast.unparse(ast.parse(text))


# ---- tangent rules added with this work: cumprod, meshgrid, multivariate_normal.logpdf, and the
# second derivative of digamma (hvp) --------------------------------------------------------------

from scipy import special, stats  # noqa: E402

from test_forward import check_jvp  # noqa: E402


def cumprods(x, A):
    return np.cumprod(x) + np.cumprod(A, axis=0)[1] + np.cumprod(A, axis=1)[2] + np.cumprod(A)[:4]


def meshgrids(x, y):
    X, Y = np.meshgrid(x, y)
    P, Q = np.meshgrid(x, y * y, indexing="ij")
    return np.sum(np.sin(X) * Y) + np.sum(P * Q * Q)


def meshgrid_one(x, y):
    X, Y = np.meshgrid(x, y)         # only x varies: Y's tangent is zero
    return np.sum(X * X * Y)


def mvn(x, mean, cov):
    return np.sum(stats.multivariate_normal.logpdf(x, mean, cov)) + \
        stats.multivariate_normal.logpdf(x[0], mean, cov)


def _spd(r, d=3):
    a = r.standard_normal((d, d))
    return a @ a.T + d * np.eye(d)


@pytest.mark.parametrize("wrt", [0, 1])
def test_cumprod_tangent_python(wrt):
    r = np.random.default_rng(0)
    x = r.uniform(0.5, 1.5, 4)
    A = r.uniform(-1.5, 1.5, (3, 4))
    check_jvp(cumprods, (x, A), wrt, "python")
    x[2] = 0.0                       # a zero factor: no division, the exact tangent
    A[1, 1] = 0.0
    check_jvp(cumprods, (x, A), wrt, "python")


def cumprod_rows(A):
    return np.cumprod(A, axis=1)


def test_cumprod_tangent_cpu():
    A = np.random.default_rng(1).uniform(-1.5, 1.5, (3, 4))
    A[1, 2] = 0.0
    check_jvp(cumprod_rows, (A,), 0, "cpu")


def test_meshgrid_tangent():
    r = np.random.default_rng(2)
    args = (r.standard_normal(3), r.standard_normal(4))
    check_jvp(meshgrids, args, (0, 1), "python")
    check_jvp(meshgrids, args, 1, "python")
    check_jvp(meshgrid_one, args, 0, "python")
    check_hvp(meshgrids, args, (0, 1), "python")


def test_mvn_logpdf_tangent_and_hvp():
    r = np.random.default_rng(3)
    args = (r.standard_normal((5, 3)), r.standard_normal(3), _spd(r))
    for wrt in (0, 1, (0, 1)):
        check_jvp(mvn, args, wrt, "python")
        check_hvp(mvn, args, wrt, "python")
    # cov: a symmetric direction (the density reads a symmetric matrix)
    j = srcgrad.jvp(mvn, wrt=2, target="python")
    s = r.standard_normal((3, 3))
    s = s + s.T
    h = 1e-6
    fd = (mvn(args[0], args[1], args[2] + h * s) - mvn(args[0], args[1], args[2] - h * s)) / (2 * h)
    np.testing.assert_allclose(j(*args, s)[1], fd, rtol=1e-6)
    # and it agrees with reverse mode for any direction: <grad, s>
    s = r.standard_normal((3, 3))
    g = srcgrad.grad(mvn, wrt=2, target="python")(*args)
    np.testing.assert_allclose(j(*args, s)[1], np.sum(g * s), rtol=1e-10)


@pytest.mark.slow      # (~90 s to compile here; the python target covers the template)
def test_mvn_logpdf_tangent_cpu():
    r = np.random.default_rng(4)
    check_jvp(mvn, (r.standard_normal((4, 3)), r.standard_normal(3), _spd(r)), (0, 1), "cpu")


def digammas(x):
    return np.sum(special.digamma(x) * x) + special.psi(x[0] + 2.0)


def test_digamma_hvp():
    x = np.array([1.5, 0.3, -0.5, 7.25])
    check_hvp(digammas, (x,), 0, "python")
    check_hvp(digammas, (x,), 0, "cpu")
    H = srcgrad.hessian(digammas, target="python")(x)
    # d2/dx2 (x psi(x)) = 2 psi'(x) + x psi''(x) on the diagonal, plus psi''(x0 + 2) at (0, 0)
    want = np.diag(2 * special.polygamma(1, x) + x * special.polygamma(2, x))
    want[0, 0] += special.polygamma(2, x[0] + 2.0)
    np.testing.assert_allclose(H, want, rtol=1e-9)


# ---- hessian of one array argument: all hvp sweeps in one compiled call -------------------------

def grid(X):
    s = 0.0
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            s += math.sin(X[i, j]) * X[(i + 1) % X.shape[0], j] + X[i, j] ** 3
    return s


def _fd_hessian(f, x, h=1e-5):
    g = srcgrad.grad(f, target="python")
    flat = x.reshape(-1)
    columns = []
    for k in range(flat.size):
        e = np.zeros_like(flat)
        e[k] = h
        columns.append(((g((flat + e).reshape(x.shape)) - g((flat - e).reshape(x.shape))) / (2 * h)).reshape(-1))
    return np.stack(columns, axis=1).reshape(x.shape + x.shape)


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_hessian_in_one_call(target):
    X = np.random.default_rng(7).uniform(-1.0, 1.0, (3, 2))
    H = srcgrad.hessian(grid, target=target)
    got = H(X)
    assert H.last_path in ("batched", "hvp sweeps in one call")     # a one-call path ran
    assert got.shape == (3, 2, 3, 2)
    np.testing.assert_allclose(got, H._by_columns((X,)), rtol=1e-13, atol=1e-13)   # per-column hvps
    np.testing.assert_allclose(got, _fd_hessian(grid, X), rtol=1e-6, atol=1e-6)


def test_hessian_in_one_call_float32():
    X = np.random.default_rng(8).uniform(-1.0, 1.0, (2, 3)).astype(np.float32)
    got = srcgrad.hessian(grid, target="python")(X)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _fd_hessian(grid, X.astype(np.float64)), rtol=1e-3, atol=1e-3)


# ---- jacobian by forward mode, one array argument: all jvp sweeps in one compiled call ----------

def field(x):
    out = np.empty((x.shape[0], 3))
    for i in range(x.shape[0]):
        out[i, 0] = math.sin(x[i]) * x[(i + 1) % x.shape[0]]
        out[i, 1] = x[i] * x[i]
        out[i, 2] = math.exp(-x[i]) + x[0]
    return out


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_jacobian_in_one_call(target):
    x = np.random.default_rng(9).uniform(-1.0, 1.0, 4)
    J = srcgrad.jacobian(field, target=target)
    got = J(x)
    assert J.last_mode == "forward" and J._last.jacobian_columns is not None
    assert got.shape == (4, 3, 4)
    jvp = srcgrad.jvp(field, target=target)
    for k in range(4):                  # column k: the jvp along basis vector k
        np.testing.assert_allclose(got[..., k], jvp(x, np.eye(4)[k])[1], rtol=1e-14, atol=1e-14)
    h = 1e-6
    fd = np.stack([(field(x + h * e) - field(x - h * e)) / (2 * h) for e in np.eye(4)], axis=-1)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-6)


# ---- hvp / hessian of np.prod (the adjoint of its tangent's helper; zeros need no division) -----

def prod_all(x):
    return np.prod(x)


def prod_rows(X):
    return np.sum(np.prod(X, axis=1) ** 2) + np.prod(X, axis=0, keepdims=True)[0, 1]


def test_prod_hessian_exact_with_zeros():
    H = srcgrad.hessian(prod_all, target="python")
    # x0 x1 x2 x3: H_jk = the product of the other two elements
    x = np.array([2.0, 0.0, 3.0, 0.0])
    want = np.zeros((4, 4))
    want[1, 3] = want[3, 1] = 6.0
    np.testing.assert_array_equal(H(x), want)
    x = np.array([2.0, 0.0, 3.0, 5.0])
    want = np.array([[0, 15, 0, 0], [15, 0, 10, 6], [0, 10, 0, 0], [0, 6, 0, 0]], dtype=float)
    np.testing.assert_array_equal(H(x), want)


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_prod_hvp(target):
    X = np.random.default_rng(10).uniform(-1.5, 1.5, (3, 4))
    check_hvp(prod_rows, (X,), 0, target)
    X[1, 2] = 0.0
    X[2, 0] = 0.0
    check_hvp(prod_rows, (X,), 0, target)
