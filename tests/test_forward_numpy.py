"""Forward mode over the NumPy/SciPy coverage rules: srcgrad.jvp against central finite differences
for every tangent template of rules.py's coverage section (python target for breadth, one grouped
cpu program), and hvp against finite differences of the gradient for a representative subset."""
import math

import numpy as np
import pytest
import scipy.special as special
import scipy.stats as stats

import srcgrad
from srcgrad import d
from test_forward import check_hvp, check_jvp


# ---- programs: each exercises a group of tangent templates --------------------------------------

def ufunc_spellings(x, y):
    a = np.add(x, y) * np.subtract(x, 0.3) + np.multiply(x, y) + np.divide(x, y) + np.true_divide(1.0, y)
    return a + np.float_power(x, y) + np.logaddexp(x, y) + np.logaddexp2(x, 2.0 * y)


def unary_more(x):
    a = np.reciprocal(x) + np.exp2(x) + np.arcsinh(x) + np.arccosh(x + 1.5) + np.arctanh(0.5 * x)
    b = np.deg2rad(x) + np.radians(x) + np.rad2deg(x) * np.degrees(x) + np.sinc(x) + np.real(x)
    return a * b + math.asinh(x[0]) + math.acosh(1.5 + x[1]) + math.atanh(0.5 * x[2]) + \
        math.radians(x[0]) * math.degrees(x[1])


def moments(X):
    a = np.cumsum(X, axis=1) * np.cumsum(X)[3] + np.var(X, axis=0, keepdims=True) + np.std(X)
    b = np.diff(X, 1, 0).sum() + np.diff(X, axis=1)[0, 0] + np.var(X, axis=1, ddof=1)[1]
    return a * b + np.std(X, axis=1, ddof=1)[2] * np.var(X) + np.linalg.norm(X) + \
        np.linalg.norm(X, axis=0)[1]


def shapes(X):
    a = np.trace(X) * np.diag(X) + np.diag(np.diag(X), 1)[1, 2] + np.diagonal(X, 1).sum()
    b = np.triu(X) + np.tril(X, -1) * np.roll(X, 1, 0) + np.flip(X, 1) + np.flipud(X) * np.fliplr(X)
    c = np.rot90(X) @ np.swapaxes(X, 0, 1) + np.moveaxis(X, 0, 1)
    d = np.repeat(X, 2, axis=0)[1:5] + np.tile(X, (2, 1))[3:7] + np.sort(X, axis=1) * np.sort(X, axis=0)
    e = np.vstack((X, X * X))[2:6] + np.hstack((X, np.sin(X)))[:, 1:5]
    return a.sum() * b + c * d + e + np.squeeze(np.expand_dims(X, 0), axis=0)


def stacking(x, y):
    a = np.append(x, y) * np.append(y, 2.0 * x)
    b = np.linspace(x[0], y[1], 6) + np.cross(x[:3], y[:3])[1]
    p, q = np.split(x, 2)
    c = np.pad(x, 1) * np.pad(y, (2, 0), constant_values=x[1])
    return np.sum(a) * b + np.sum(p * q) + np.sum(np.sort(x) * y) + np.sum(c * c)


def products(A, B, v):
    a = np.einsum("ij,jk->ik", A, B) + np.einsum("ij->ji", A) * np.einsum("i,j,k->ij", v, v, v)
    b = np.tensordot(A, B, 1) + np.tensordot(A, B, ((0,), (1,)))
    c = np.inner(A, B) + np.kron(v[:2], v[1:3])[3]
    return a + b * c + np.sum(np.kron(A[:2, :2], B[:2, :2]))


def linalg(A, b):
    S = A @ A.T + 4.0 * np.eye(4)
    L = np.linalg.cholesky(S)
    x = np.linalg.solve(S, b) + np.linalg.solve(A, np.outer(b, b))[1]
    sign, logdet = np.linalg.slogdet(A)
    return np.sum(np.linalg.inv(A) * L) + np.sum(x * x) + np.linalg.det(A) + sign * logdet


def eigh_program(A):
    w, V = np.linalg.eigh(A)      # sign-invariant uses of the eigenvectors (their signs are arbitrary)
    return np.sum(w * w * w) + np.sum((V * V) @ np.arange(4.0)) + np.sum(V[:, 0:1] @ V[:, 0:1].T * A)


def cholesky_lower(A):
    return np.linalg.cholesky(A)        # reads A's lower triangle only (A not symmetric here)


def special_functions(x, y):
    a = special.logsumexp(x) + special.logsumexp(np.outer(x, y), axis=1) + special.expit(x)
    b = special.logit(0.5 * y) + special.erf(x) * special.erfc(y) + special.gammaln(x + 1.0)
    c = special.digamma(x + 1.0) + special.psi(y + 1.0) + special.betaln(x + 0.5, y + 0.5)
    return a * b + c + special.logsumexp(np.outer(x, y), axis=0, keepdims=True)[0]


def distributions(x, loc, scale):
    a = stats.norm.logpdf(x, loc, scale) + stats.norm.pdf(x, loc, scale) * stats.norm.cdf(x, loc, scale)
    b = stats.t.logpdf(x, 2.0 + scale, loc, scale) + stats.t.logpdf(x, 3.0)
    return a + b + stats.norm.logpdf(x) + stats.norm.cdf(x, loc=loc) + stats.norm.pdf(x, scale=scale)


def _spd(r, n=4):
    A = r.standard_normal((n, n))
    return A @ A.T + n * np.eye(n)


PROGRAMS = [
    (ufunc_spellings, lambda r: (r.uniform(0.5, 1.5, 5), r.uniform(0.5, 1.5, 5)), (0, 1)),
    (unary_more, lambda r: (r.uniform(0.1, 0.9, 5),), 0),
    (moments, lambda r: (r.standard_normal((4, 5)),), 0),
    (shapes, lambda r: (r.standard_normal((4, 4)),), 0),
    (stacking, lambda r: (r.standard_normal(4), r.standard_normal(4)), (0, 1)),
    (products, lambda r: (r.standard_normal((3, 3)), r.standard_normal((3, 3)), r.standard_normal(3)),
     (0, 1, 2)),
    (linalg, lambda r: (r.standard_normal((4, 4)) + 3.0 * np.eye(4), r.standard_normal(4)), (0, 1)),
    (cholesky_lower, lambda r: (_spd(r),), 0),
    (eigh_program, lambda r: (_spd(r),), 0),
    (special_functions, lambda r: (r.uniform(0.2, 0.8, 3), r.uniform(0.2, 0.8, 3)), (0, 1)),
    (distributions, lambda r: (r.standard_normal(4), r.standard_normal(4), r.uniform(0.5, 2.0, 4)),
     (0, 1, 2)),
    (distributions, lambda r: (r.standard_normal(4), 0.3, 1.4), (1, 2)),
]


@pytest.mark.parametrize("f,make,wrt", PROGRAMS, ids=[f"{f.__name__}-{w}" for f, _, w in PROGRAMS])
def test_jvp_python(f, make, wrt):
    check_jvp(f, make(np.random.default_rng(11)), wrt, "python", rtol=1e-5, atol=1e-6)


# ---- the compiled path: one program covering many tangents in one compile ------------------------

def grouped(X, v):
    a = np.add(X, 1.0) * np.multiply(X, X) + np.exp2(X) + np.arcsinh(X) + np.logaddexp(X, 0.5)
    b = np.cumsum(X, axis=0) + np.var(X, axis=1, keepdims=True) + np.std(X) + np.trace(X)
    c = np.triu(X) + np.tril(X) + np.roll(X, 1, 1) + np.flip(X, 0) + np.swapaxes(X, 0, 1)
    d = np.diag(np.diag(X)) + np.repeat(X, 2, axis=1)[:, :3] + np.vstack((X, X))[:3] + np.sort(X, axis=1)
    S = X @ X.T + 3.0 * np.eye(3)
    e = np.linalg.solve(S, v) @ np.linalg.inv(S) + np.linalg.det(S) + np.linalg.norm(X)
    f = special.logsumexp(X, axis=1) + special.expit(v) + special.erf(v) + special.gammaln(v + 2.0)
    return np.sum(a * b) + np.sum(c * d) + np.sum(e * f) + np.sum(np.linalg.cholesky(S)) + \
        np.sum(stats.norm.logpdf(v, 0.2, 1.3)) + np.sum(np.diff(v))


# (~150 s to compile on a shared 2-core machine: -m slow; grouped_small runs by default)
@pytest.mark.slow
def test_jvp_cpu_grouped():
    r = np.random.default_rng(12)
    check_jvp(grouped, (r.uniform(0.2, 0.9, (3, 3)), r.uniform(0.2, 0.9, 3)), (0, 1), "cpu")


def grouped_small(X, v):
    a = np.multiply(X, X) + np.logaddexp(X, 0.5) + np.cumsum(X, axis=0) + np.triu(X)
    e = np.linalg.solve(X + 3.0 * np.eye(3), v) * special.expit(v)
    return np.sum(a * a) + np.sum(e) + np.var(v)


def test_jvp_cpu_grouped_small():
    r = np.random.default_rng(12)
    check_jvp(grouped_small, (r.uniform(0.2, 0.9, (3, 3)), r.uniform(0.2, 0.9, 3)), (0, 1), "cpu")


# ---- hvp: reverse mode over the generated tangent code -----------------------------------------

def hvp_logsumexp(x):
    return special.logsumexp(np.outer(x, x), axis=1) @ x + special.logsumexp(x * x)


def hvp_linalg(A, b):
    S = A @ A.T + 4.0 * np.eye(3)
    L = np.linalg.cholesky(S)
    w, V = np.linalg.eigh(S)
    return np.sum(np.linalg.solve(S, b) * b) + np.sum(L * L * L) + np.sum(w * w * w) + \
        np.sum((V * V) @ b)


def hvp_moments(X):
    s = np.sort(X * X, axis=1) * np.cumsum(X, axis=0)
    return np.sum(np.var(X, axis=0) ** 2) + np.std(X) * np.var(X, ddof=1) + np.sum(s * s)


def hvp_einsum(A, B):
    C = np.einsum("ij,jk->ik", A, B)
    return np.sum(np.sin(C)) + np.einsum("ij,ij->", A, A) * np.sum(np.tensordot(A, B, 1))


def hvp_special(x):
    return np.sum(special.gammaln(x) * special.expit(x) + special.erf(x) + stats.norm.logpdf(x, 0.3, 1.2)
                  + stats.t.logpdf(x, x + 1.0, 0.2, x))


HVP_PROGRAMS = [
    (hvp_logsumexp, lambda r: (r.standard_normal(4),), 0),
    (hvp_linalg, lambda r: (r.standard_normal((3, 3)), r.standard_normal(3)), (0, 1)),
    (hvp_moments, lambda r: (r.standard_normal((3, 4)),), 0),
    (hvp_einsum, lambda r: (r.standard_normal((3, 3)), r.standard_normal((3, 3))), (0, 1)),
    (hvp_special, lambda r: (r.uniform(0.5, 2.0, 4),), 0),
]


@pytest.mark.parametrize("f,make,wrt", HVP_PROGRAMS, ids=[f"{f.__name__}-{w}" for f, _, w in HVP_PROGRAMS])
def test_hvp_python(f, make, wrt):
    check_hvp(f, make(np.random.default_rng(13)), wrt, "python", rtol=1e-5, atol=1e-5)


def digamma_program(x):
    return np.sum(special.digamma(x))


def test_hvp_of_digamma():
    # digamma's tangent uses the trigamma, whose derivative is the tetragamma: H = diag(psi''(x))
    x = np.array([1.5, 0.3, -0.5])
    v = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(srcgrad.jvp(digamma_program, target="python")(x, v)[1],
                               np.sum(v * special.polygamma(1, x)))
    np.testing.assert_allclose(srcgrad.hvp(digamma_program, target="python")(x, v),
                               v * special.polygamma(2, x), rtol=1e-12)


def test_hvp_of_cumprod_is_a_clear_error():
    def f(x):
        return np.sum(np.cumprod(x))
    with pytest.raises(srcgrad.SrcgradError, match="np.cumprod"):
        srcgrad.hvp(f, target="python")(np.ones(3), np.ones(3))


# ---- a user's tangent template is part of the generated modules' cache key -----------------------

def _cube(x):
    return x * x * x


def _cube_adjoint(result, x):
    d[x] += d[result] * 3.0 * x * x


def _cube_tangent(result, x):
    d[result] += d[x] * 3.0 * x * x


def _cube_tangent_wrong(result, x):
    d[result] += d[x] * 2.0 * x * x


def test_tangent_template_changes_the_registry_fingerprint():
    from srcgrad import rules
    srcgrad.register_adjoint(_cube)(_cube_adjoint)
    try:
        without = rules.registry_fingerprint()
        srcgrad.register_tangent(_cube)(_cube_tangent)
        right = rules.registry_fingerprint()
        srcgrad.register_tangent(_cube)(_cube_tangent_wrong)
        wrong = rules.registry_fingerprint()
        assert len({without, right, wrong}) == 3
        srcgrad.register_tangent(_cube)(_cube_tangent)
        assert rules.registry_fingerprint() == right
    finally:
        rules.REGISTRY.pop(_cube, None)
        rules._REGISTRY_VERSION[0] += 1


def sinc_sum(x):
    return np.sum(np.sinc(x))


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_sinc_hvp_exact_at_zero(target):
    """sinc''(x) at 0 is -pi^2/3 (a removable point of the derivative's formula), elsewhere
    2 (sin(pi x) / (pi x) - cos(pi x)) / x^2 - pi^2 sinc(x); jvp's value there stays sinc'(0) = 0."""
    x = np.array([0.0, 0.3, -1.7])
    v = np.array([1.0, -2.0, 0.5])
    hv = srcgrad.hvp(sinc_sum, target=target)(x, v)
    px = np.pi * x[1:]
    second = 2.0 * (np.sin(px) / px - np.cos(px)) / x[1:] ** 2 - np.pi ** 2 * np.sinc(x[1:])
    np.testing.assert_allclose(hv, v * np.r_[-np.pi ** 2 / 3.0, second], rtol=1e-10, atol=1e-12)
    value, tangent = srcgrad.jvp(sinc_sum, target=target)(x, np.array([1.0, 0.0, 0.0]))
    assert tangent == pytest.approx(0.0, abs=1e-15)
