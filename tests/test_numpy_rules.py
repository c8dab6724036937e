"""NumPy and SciPy functions beyond the core (issue 15 §5): every rule against central finite
differences in float64, with broadcasting and axis variants, and in float32 (the gradient keeps
the dtype). Breadth on the python target; the cpu target compiles a few functions that each use
many rules (compiles dominate the cost), covering every compiled helper of backends/cpu_library.
"""
import numpy as np
import pytest
import scipy.special as special
from scipy.stats import multivariate_normal, norm, t

import srcgrad
from conftest import check_grad

F64 = dict(rtol=1e-5, atol=1e-6)
F32 = dict(rtol=3e-3, atol=3e-3)
_CACHE = {}


def rng(seed=0):
    return np.random.default_rng(seed)


def check(f, args, wrt=0, target="python", dtype=np.float64, **tol):
    """check_grad with one GradFunction per (function, wrt, target); float arrays as ``dtype``."""
    key = (f.__name__, wrt, target)
    if key not in _CACHE:
        _CACHE[key] = srcgrad.grad(f, wrt=wrt, target=target)
    args = [a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args]
    grads = check_grad(f, args, wrt=wrt, target=target, gradfn=_CACHE[key],
                       **(tol or (F64 if dtype == np.float64 else F32)))
    for g in (grads if isinstance(wrt, tuple) else (grads,)):
        if isinstance(g, np.ndarray):
            assert g.dtype == dtype, (f.__name__, g.dtype)
    return grads


def positive(*shape, seed=0):
    return rng(seed).random(shape) + 0.5


def normal(*shape, seed=0):
    return rng(seed).standard_normal(shape)


# ------------------------------------------------------------------------------------------------
# Elementwise ufuncs (broadcasting: a matrix against a row)
# ------------------------------------------------------------------------------------------------

def u_reciprocal(x):
    return np.sum(np.reciprocal(x) ** 2)


def u_exp2(x):
    return np.sum(np.exp2(x))


def u_arcsinh(x):
    return np.sum(np.arcsinh(x) * x)


def u_arccosh(x):
    return np.sum(np.arccosh(x + 1.5))


def u_arctanh(x):
    return np.sum(np.arctanh(x * 0.4))


def u_angles(x):
    return np.sum(np.deg2rad(x) * np.rad2deg(x) + np.radians(x) * 2.0 - np.degrees(x) * 0.1)


def u_sinc(x):
    return np.sum(np.sinc(x) * x)


def u_real_imag(x):
    return np.sum(np.real(x) * x + np.imag(x))


def u_negative(x):
    return np.sum(np.negative(x) * x)


def b_arith(x, y):
    return np.sum(np.add(x, y) * np.subtract(x, y) + np.multiply(x, y) + np.divide(x, y)
                  + np.true_divide(y, x))


def b_powers(x, y):
    return np.sum(np.power(x, y) + np.float_power(x, y))


def b_logaddexp(x, y):
    return np.sum(np.logaddexp(x, y) + np.logaddexp2(x, y))


def s_scalars(a, b):
    return np.arcsinh(a) * np.arctanh(b) + np.exp2(a) + np.logaddexp(a, b) + np.sinc(a) + np.reciprocal(b)


UNARY = [u_reciprocal, u_exp2, u_arcsinh, u_arccosh, u_arctanh, u_angles, u_sinc, u_real_imag, u_negative]


@pytest.mark.parametrize("f", UNARY, ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_unary_ufuncs(f, dtype):
    check(f, [positive(3, 4)], dtype=dtype)
    check(f, [positive(5, seed=1)], dtype=dtype)


def test_sinc_at_zero():
    g = srcgrad.grad(u_sinc, target="python")(np.array([0.0, 0.5]))
    assert g[0] == 1.0          # d/dx (x sinc x) at 0 is sinc(0) = 1: no 0/0
    check(u_sinc, [np.array([0.0, 0.5, -1.5])])


@pytest.mark.parametrize("f", [b_arith, b_powers, b_logaddexp], ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_binary_ufuncs_broadcast(f, dtype):
    check(f, [positive(3, 4), positive(4, seed=1)], wrt=(0, 1), dtype=dtype)
    check(f, [positive(4, seed=2), positive(3, 1, seed=3)], wrt=(0, 1), dtype=dtype)


def test_ufuncs_of_scalars():
    check(s_scalars, [0.3, 0.4], wrt=(0, 1))


def c_ufuncs(x, y):
    a = np.reciprocal(x) + np.exp2(x) * np.arcsinh(y) + np.arccosh(x + 1.5) + np.arctanh(y * 0.4)
    b = np.deg2rad(x) * np.rad2deg(y) + np.sinc(x) + np.real(x) * np.imag(y) + np.negative(y)
    c = np.add(x, y) * np.subtract(x, y) + np.multiply(x, y) + np.divide(x, y) + np.true_divide(y, x)
    e = np.power(x, y) + np.float_power(x, 2.0) + np.logaddexp(x, y) + np.logaddexp2(y, x)
    return np.sum(a * b + c * e)


# float32 compiles the whole group again: slow. The float32 rules (dtype kept) run on the python
# target (test_unary_ufuncs, test_binary_ufuncs_broadcast: the same generated code); compiled float32
# gradients keep their dtype in test_arrays.py::test_products_float32_non_contiguous[cpu] and
# test_hardening.py::test_gradient_dtypes_follow_arguments[cpu].
@pytest.mark.parametrize("dtype", [np.float64, pytest.param(np.float32, marks=pytest.mark.slow)])
def test_ufuncs_cpu(dtype):
    check(c_ufuncs, [positive(3, 4), positive(4, seed=1)], wrt=(0, 1), target="cpu", dtype=dtype)


# ------------------------------------------------------------------------------------------------
# Reductions and cumulative operations (axis None / 0 / 1 / -1, keepdims, ddof)
# ------------------------------------------------------------------------------------------------

def r_cumsum(x):
    return np.sum(np.cumsum(x) ** 2) + np.sum(np.cumsum(x, axis=0) ** 2) + np.sum(np.cumsum(x, axis=-1) * x)


def r_cumprod(x):
    return np.sum(np.cumprod(x)) + np.sum(np.cumprod(x, axis=0) ** 2) + np.sum(np.cumprod(x, axis=1) * x)


def r_diff(x):
    return np.sum(np.diff(x) ** 2) + np.sum(np.diff(x, 2, axis=0) ** 2) + np.sum(np.diff(x, n=1, axis=1) * x[:, 1:])


def r_var(x):
    return np.var(x) + np.sum(np.var(x, axis=0) ** 2) + np.sum(np.var(x, axis=1, ddof=1, keepdims=True) * x)


def r_std(x):
    return np.std(x, ddof=1) + np.sum(np.std(x, axis=0, keepdims=True) ** 2) + np.sum(np.std(x, axis=-1) * x[:, 0])


def r_trace(x):
    return np.trace(x) * np.trace(x, 1) + np.trace(x, offset=-1)


def r_1d(v):
    return np.sum(np.cumsum(v) * np.cumprod(v)) + np.var(v) * np.std(v) + np.sum(np.diff(v) ** 2)


@pytest.mark.parametrize("f", [r_cumsum, r_cumprod, r_diff, r_var, r_std, r_trace],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_reductions(f, dtype):
    check(f, [positive(4, 5)], dtype=dtype)


def test_reductions_1d():
    check(r_1d, [positive(6)])
    check(r_1d, [positive(6).astype(np.float32)], dtype=np.float32)


def test_cumprod_with_zeros():
    x = positive(3, 4)
    x[1, 2] = 0.0
    x[0, 0] = 0.0
    g = check(r_cumprod, [x])
    assert np.all(np.isfinite(g))


# ------------------------------------------------------------------------------------------------
# Shape work
# ------------------------------------------------------------------------------------------------

def sh_diag(m, v):
    return np.sum(np.diag(m) ** 2) + np.sum(np.diag(m, 1) * 3.0) + np.sum(np.diag(v) * m[:3, :3]) \
        + np.sum(np.diag(v, -1) ** 2) + np.sum(np.diagonal(m) * v) + np.sum(np.diagonal(m, 1) ** 2)


def sh_tri(m):
    return np.sum(np.triu(m) ** 2) + np.sum(np.tril(m, -1) * m) + np.sum(np.triu(m, 1) * 2.0)


def sh_roll_flip(m):
    a = np.roll(m, 1) * np.arange(1.0, 13.0).reshape(3, 4) + np.roll(m, -1, axis=0) ** 2 + np.roll(m, (1, 2), axis=(0, 1)) * m
    b = np.flip(m) * m + np.flip(m, axis=1) ** 2 + np.flipud(m) * m + np.fliplr(m) * 2.0 * m
    c = np.rot90(m, 2) * m + np.rot90(m).T ** 2 + np.rot90(m, 1, axes=(1, 0)).T * m
    return np.sum(a * np.arange(1.0, 13.0).reshape(3, 4)) + np.sum(b) + np.sum(c)


def sh_repeat_tile(m, v):
    a = np.sum(np.repeat(m, 2) * np.arange(24.0)) + np.sum(np.repeat(m, 3, axis=1) ** 2)
    b = np.sum(np.repeat(v, 2, axis=0) ** 3) + np.sum(np.tile(v, 3) * np.arange(9.0))
    c = np.sum(np.tile(m, (2, 1)) ** 2 * np.arange(24.0).reshape(6, 4)) + np.sum(np.tile(v, (2, 2)) ** 2)
    return a + b + c


def sh_axes(m, c):
    a = np.sum((np.swapaxes(m, 0, 1) @ np.arange(1.0, 4.0)) ** 2)
    a2 = np.sum((np.moveaxis(c, 0, -1)[:, :, 0] @ np.arange(1.0, 3.0)) ** 2)
    b = np.squeeze(c[:, :1, :], axis=1) * 2.0 + np.squeeze(m[:1, :], 0)
    return a + a2 + np.sum(b ** 2) + np.sum(np.moveaxis(c, 2, 0) * np.arange(12.0).reshape(2, 2, 3))


def sh_stack(m, v):
    a = np.vstack((m, v)) * np.arange(12.0).reshape(3, 4)
    b = np.hstack([m, m * 2.0]) ** 2 + np.hstack((m[:, :2], v.reshape(2, 2))).sum()
    c = np.vstack([v, v * 3.0]) ** 2 + np.hstack((v, v))[:4].reshape(2, 2).sum()
    e = np.append(m, v) * np.arange(12.0) + np.append(m, v.reshape(1, 4), axis=0).sum()
    return np.sum(a) + np.sum(b) + np.sum(c) + np.sum(e ** 2)


def sh_split(m):
    a, b = np.split(m, 2, axis=1)
    c, e, f = np.array_split(m, 3, axis=1)
    p, q = np.vsplit(m, 2)
    r, s = np.hsplit(m, (1,))
    return np.sum(a * b) + np.sum(c ** 2) + np.sum(f * 3.0) + np.sum(p * q ** 2) + np.sum(s ** 2) + np.sum(r)


def sh_pad(m, value):
    return np.sum(np.pad(m, 1) ** 2 * 3.0) + np.sum(np.pad(m, ((1, 0), (2, 1)), mode="constant",
                                                           constant_values=value) ** 2)


def sh_sort(m, v):
    return np.sum(np.sort(m) * np.arange(4.0)) + np.sum(np.sort(m, axis=0) ** 2 * np.arange(4.0)) \
        + np.sum(np.sort(v) * np.arange(4.0))


def sh_linspace_meshgrid(a, b, x, y):
    grid_x, grid_y = np.meshgrid(x, y)
    ij_x, ij_y = np.meshgrid(x, y, indexing="ij")
    return np.sum(np.linspace(a, b, 5) ** 2) + np.sum(grid_x * grid_y ** 2) + np.sum(ij_x ** 2 * ij_y)


SHAPE_CASES = [
    (sh_diag, lambda: [normal(3, 4), normal(3, seed=1)], (0, 1)),
    (sh_tri, lambda: [normal(4, 4)], 0),
    (sh_tri, lambda: [normal(3, 5)], 0),
    (sh_roll_flip, lambda: [normal(3, 4)], 0),
    (sh_repeat_tile, lambda: [normal(3, 4), normal(3, seed=1)], (0, 1)),
    (sh_axes, lambda: [normal(3, 2), normal(2, 3, 2, seed=1)], (0, 1)),
    (sh_stack, lambda: [normal(2, 4), normal(4, seed=1)], (0, 1)),
    (sh_split, lambda: [normal(4, 6)], 0),
    (sh_pad, lambda: [normal(3, 4), 0.7], (0, 1)),
    (sh_sort, lambda: [normal(4, 4), normal(4, seed=1)], (0, 1)),
    (sh_linspace_meshgrid, lambda: [0.3, 1.7, normal(3), normal(4, seed=1)], (0, 1, 2, 3)),
]


@pytest.mark.parametrize("f,make,wrt", SHAPE_CASES, ids=lambda c: getattr(c, "__name__", ""))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_shape_ops(f, make, wrt, dtype):
    check(f, make(), wrt=wrt, dtype=dtype)


def test_sort_ties_follow_argsort():
    v = np.array([1.0, 3.0, 1.0, 2.0])
    g = srcgrad.grad(sh_sort, wrt=1, target="python")(np.eye(4), v)
    order = np.argsort(v, kind="stable")
    expected = np.zeros(4)
    expected[order] = np.arange(4.0)
    np.testing.assert_allclose(g, expected)


# ------------------------------------------------------------------------------------------------
# scipy.special and scipy.stats
# ------------------------------------------------------------------------------------------------

def sp_logsumexp(x):
    return special.logsumexp(x) + np.sum(special.logsumexp(x, axis=1) ** 2) \
        + np.sum(special.logsumexp(x, axis=0, keepdims=True) * x)


def sp_unary(x):
    return np.sum(special.expit(x) * x + special.logit(special.expit(x) * 0.5 + 0.25) + special.erf(x)
                  + special.erfc(x) * x)


def sp_gamma(a, b):
    return np.sum(special.gammaln(a) * b + special.digamma(a) + special.psi(b) * a + special.betaln(a, b))


def st_norm(x, mu, s):
    return np.sum(norm.logpdf(x, mu, s) + norm.pdf(x, loc=mu, scale=s) + norm.cdf(x, mu, s)) \
        + np.sum(norm.logpdf(x)) + np.sum(norm.cdf(x, mu))


def st_t(x, df, mu, s):
    return np.sum(t.logpdf(x, df, mu, s)) + np.sum(t.logpdf(x, df))


def st_mvn(x, mean, a):
    cov = a @ a.T + 3.0 * np.eye(3)
    return np.sum(multivariate_normal.logpdf(x, mean, cov) * np.arange(1.0, 6.0)) \
        + multivariate_normal.logpdf(x[0], mean, cov)


SCIPY_CASES = [
    (sp_logsumexp, lambda: [normal(3, 4)], 0),
    (sp_unary, lambda: [normal(3, 4)], 0),
    (sp_gamma, lambda: [positive(3, 4) * 3.0, positive(4, seed=1)], (0, 1)),
    (st_norm, lambda: [normal(3, 4), normal(4, seed=1), positive(4, seed=2)], (0, 1, 2)),
    (st_t, lambda: [normal(3, 4), positive(4, seed=1) * 3.0, normal(3, 1, seed=2), positive(4, seed=3)],
     (0, 1, 2, 3)),
    (st_mvn, lambda: [normal(5, 3), normal(3, seed=1), normal(3, 3, seed=2)], (0, 1, 2)),
]


@pytest.mark.parametrize("f,make,wrt", SCIPY_CASES, ids=lambda c: getattr(c, "__name__", ""))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scipy(f, make, wrt, dtype):
    check(f, make(), wrt=wrt, dtype=dtype)


def test_digamma_small_and_negative_arguments():
    check(sp_gamma, [np.array([0.05, 0.7, 2.5, 30.0, -0.5, -2.3]), np.array([0.3, 1.0, 4.0, 0.1, 2.0, 5.0])],
          wrt=(0, 1), rtol=1e-4)


def nb_mle(log_r, logit_p, counts):
    r = np.exp(log_r)
    p = special.expit(logit_p)
    return np.sum(special.gammaln(counts + r) - special.gammaln(r) - special.gammaln(counts + 1.0)
                  + r * np.log1p(-p) + counts * np.log(p))


def test_negative_binomial_likelihood():
    check(nb_mle, [0.3, -0.2, np.array([0.0, 3.0, 1.0, 7.0])], wrt=(0, 1))


# ------------------------------------------------------------------------------------------------
# Linear algebra (symmetric-input functions are differentiated through a symmetric parameterization,
# as np.linalg.cholesky/eigh read one triangle only)
# ------------------------------------------------------------------------------------------------

def la_inv_solve(a, b, c):
    m = a + 4.0 * np.eye(3)
    return np.sum(np.linalg.inv(m) ** 2 * np.arange(9.0).reshape(3, 3)) + np.sum(np.linalg.solve(m, b) ** 2) \
        + np.sum(np.linalg.solve(m, c) * c)


def la_det(a):
    m = a + 3.0 * np.eye(3)
    sign, logdet = np.linalg.slogdet(m)
    return np.linalg.det(m) + logdet * 2.0 + sign


def la_cholesky(a):
    s = a @ a.T + 3.0 * np.eye(3)
    factor = np.linalg.cholesky(s)
    return np.sum(factor * np.arange(9.0).reshape(3, 3)) + np.sum(np.log(np.diag(factor)))


def la_eigh(a):
    s = a + a.T
    w, v = np.linalg.eigh(s)
    return np.sum(w * np.arange(1.0, 4.0)) + np.sum(v * v * np.arange(9.0).reshape(3, 3))


def la_norm(x, v):
    return np.linalg.norm(x) + np.linalg.norm(v) ** 2 + np.sum(np.linalg.norm(x, axis=1) * v) \
        + np.sum(np.linalg.norm(x, ord=2, axis=0, keepdims=True) ** 2) + np.linalg.norm(x, "fro")


def gp_marginal_likelihood(log_length, log_noise, x, y):
    sq = (x[:, np.newaxis] - x[np.newaxis, :]) ** 2
    k = np.exp(-0.5 * sq / np.exp(2.0 * log_length)) + np.exp(log_noise) * np.eye(x.shape[0])
    factor = np.linalg.cholesky(k)
    alpha = np.linalg.solve(k, y)
    sign, logdet = np.linalg.slogdet(k)
    return -0.5 * np.dot(y, alpha) - np.sum(np.log(np.diag(factor))) - 0.0 * logdet


LINALG_CASES = [
    (la_inv_solve, lambda: [normal(3, 3) * 0.3, normal(3, seed=1), normal(3, 2, seed=2)], (0, 1, 2)),
    (la_det, lambda: [normal(3, 3) * 0.3], 0),
    (la_cholesky, lambda: [normal(3, 3)], 0),
    (la_eigh, lambda: [normal(3, 3)], 0),
    (la_norm, lambda: [normal(4, 3), normal(4, seed=1)], (0, 1)),
    (gp_marginal_likelihood, lambda: [0.2, -1.0, normal(5), normal(5, seed=1)], (0, 1)),
]


@pytest.mark.parametrize("f,make,wrt", LINALG_CASES, ids=lambda c: getattr(c, "__name__", ""))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linalg(f, make, wrt, dtype):
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float64 else dict(rtol=1e-2, atol=1e-2)
    check(f, make(), wrt=wrt, dtype=dtype, **tol)


# ------------------------------------------------------------------------------------------------
# Products: einsum, tensordot, inner, kron, cross
# ------------------------------------------------------------------------------------------------

def pr_einsum(a, b, v):
    return np.sum(np.einsum("ij,jk->ik", a, b) ** 2) + np.sum(np.einsum("ij,j->i", a, v) * v[:3]) \
        + np.sum(np.einsum("ij->ji", a) ** 2) + np.einsum("i,i", v, v) + np.sum(np.einsum("ij", a) * a) \
        + np.sum(np.einsum("ij,jk,k->i", a, b, v[:2]) ** 2) + np.sum(np.einsum("ij,k->ik", a, v) ** 2)


def pr_tensordot(a, b, c):
    return np.sum(np.tensordot(a, b, 1) ** 2) + np.tensordot(a, a, 2) \
        + np.sum(np.tensordot(c, a, axes=((0, 1), (0, 1))) ** 2) + np.sum(np.tensordot(c, b, ((1,), (0,))) ** 2)


def pr_inner_kron_cross(a, v, w):
    return np.sum(np.inner(a, a) ** 2) + np.inner(v, w) + np.sum(np.inner(a, v) ** 2) \
        + np.sum(np.kron(v, w) ** 2 * np.arange(9.0)) + np.sum(np.kron(a, a[:2, :2]) ** 2) \
        + np.sum(np.cross(v, w) * np.arange(3.0)) + np.sum(np.cross(a, w) ** 2)


PRODUCT_CASES = [
    (pr_einsum, lambda: [normal(3, 4), normal(4, 2, seed=1), normal(4, seed=2)], (0, 1, 2)),
    (pr_tensordot, lambda: [normal(3, 4), normal(4, 2, seed=1), normal(3, 4, 2, seed=2)], (0, 1, 2)),
    (pr_inner_kron_cross, lambda: [normal(4, 3), normal(3, seed=1), normal(3, seed=2)], (0, 1, 2)),
]


@pytest.mark.parametrize("f,make,wrt", PRODUCT_CASES, ids=lambda c: getattr(c, "__name__", ""))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_products(f, make, wrt, dtype):
    check(f, make(), wrt=wrt, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# Refusals: clear SrcgradErrors naming the line
# ------------------------------------------------------------------------------------------------

def e_random(x):
    noise = np.random.normal(size=3)
    return np.sum(x * noise)


def e_squeeze(x):
    return np.sum(np.squeeze(x))


def e_einsum_ellipsis(x):
    return np.sum(np.einsum("...i->...", x))


def e_pad_mode(x):
    return np.sum(np.pad(x, 1, mode="edge"))


def e_norm_ord(x):
    return np.linalg.norm(x, 1)


def e_no_rule(x):
    return np.sum(np.i0(x))


def e_logsumexp_b(x):
    return special.logsumexp(x, b=x)


@pytest.mark.parametrize("f,words", [
    (e_random, "pass them in"), (e_squeeze, "axis="), (e_einsum_ellipsis, "'...'"),
    (e_pad_mode, "mode='constant'"), (e_norm_ord, "Frobenius"), (e_no_rule, "register_adjoint"),
    (e_logsumexp_b, "b and return_sign")], ids=lambda v: getattr(v, "__name__", ""))
def test_refused_with_clear_errors(f, words):
    with pytest.raises(srcgrad.SrcgradError) as info:
        srcgrad.grad(f, target="python")(normal(3, 4) if f is not e_random else normal(3))
    message = str(info.value)
    assert words in message, message
    assert "test_numpy_rules.py:" in message, message


# ------------------------------------------------------------------------------------------------
# The cpu target: one compiled function per group, each using many rules (compiles dominate)
# ------------------------------------------------------------------------------------------------

def c_reductions(x, v):
    a = np.sum(np.cumsum(x, axis=0) ** 2) + np.sum(np.cumsum(x) ** 2) + np.sum(np.cumsum(v) * v) + np.sum(np.cumsum(x, axis=-1) * x)
    b = np.sum(np.cumprod(x, axis=1)) + np.sum(np.cumprod(v) ** 2)
    c = np.sum(np.diff(x) ** 2) + np.sum(np.diff(x, 2, axis=0) ** 2) + np.sum(np.diff(v) ** 2)
    e = np.var(x) + np.sum(np.var(x, axis=0) ** 2) + np.sum(np.var(x, axis=1, ddof=1, keepdims=True) * x)
    f = np.std(v, ddof=1) + np.sum(np.std(x, axis=0, keepdims=True) ** 2) + np.sum(np.std(x, axis=-1) * v[:4])
    return a + b + c + e + f + np.trace(x) * np.trace(x, 1)


def c_shapes(m, v):
    a = np.sum(np.diag(m) ** 2) + np.sum(np.diag(v) * m[:3, :3]) + np.sum(np.diagonal(m, 1) ** 2)
    b = np.sum(np.triu(m) ** 2) + np.sum(np.tril(m, -1) * m)
    c = np.sum(np.roll(m, 1) * m) + np.sum(np.roll(m, -1, axis=0) ** 2) + np.sum(np.roll(m, (1, 2), axis=(0, 1)) * m)
    e = np.sum(np.flip(m) * m) + np.sum(np.flip(m, axis=1) ** 2) + np.sum(np.flipud(m) * np.fliplr(m) * m)
    f = np.sum(np.rot90(m, 2) * m) + np.sum(np.rot90(m).T * m) + np.sum(np.rot90(m, 1, axes=(1, 0)).T ** 2 * m)
    g = np.sum(np.repeat(m, 2) * np.arange(24.0)) + np.sum(np.repeat(m, 3, axis=1) ** 2) + np.sum(np.tile(v, (2, 2)) ** 2)
    h = np.sum(np.tile(m, (2, 1)) ** 2 * np.arange(24.0).reshape(6, 4)) + np.sum(np.squeeze(m[:1, :], 0) ** 2)
    i = np.sum(np.swapaxes(m, 0, 1) * m.T) + np.sum(np.moveaxis(m, 0, 1) ** 2)
    j = np.sum(np.pad(m, 1) ** 2 * 3.0) + np.sum(np.pad(m, ((1, 0), (2, 1))) ** 2)
    k = np.sum(np.sort(m) * np.arange(4.0)) + np.sum(np.sort(m, axis=0) ** 2 * np.arange(4.0)) + np.sum(np.sort(v) * v)
    return a + b + c + e + f + g + h + i + j + k


def c_pieces(m, v, s):
    a = np.sum(np.vstack((m, v)) * np.arange(12.0).reshape(3, 4)) + np.sum(np.hstack([m, m * 2.0]) ** 2)
    b = np.sum(np.append(m, v) * np.arange(12.0)) + np.sum(np.append(m, m, axis=1) ** 2)
    p, q = np.split(m, 2, axis=1)
    r, t, u = np.array_split(v, 3)
    w, y = np.vsplit(m, 2)
    c = np.sum(p * q) + np.sum(r ** 2) + np.sum(u * 3.0) + np.sum(w * y ** 2) + np.sum(np.hsplit(m, 2)[1] ** 2)
    grid_x, grid_y = np.meshgrid(v, v[:3])
    e = np.sum(grid_x * grid_y ** 2) + np.sum(np.linspace(s, 2.0 * s, 5) ** 2)
    f = np.sum(np.kron(v[:2], v[1:3]) ** 2 * np.arange(4.0)) + np.sum(np.kron(m[:, :2], m[:, 2:]) ** 2)
    return a + b + c + e + f + np.sum(np.cross(m[:, :3], v[:3]) ** 2)


def c_special(x, mu, s):
    a = special.logsumexp(x) + np.sum(special.logsumexp(x, axis=1) ** 2) + np.sum(special.logsumexp(x, axis=0, keepdims=True) * x)
    b = np.sum(special.expit(x) * x + special.logit(special.expit(x) * 0.5 + 0.25) + special.erf(x) + special.erfc(x) * x)
    c = np.sum(special.gammaln(s) * s + special.digamma(s) + special.betaln(s, s + 1.0))
    e = np.sum(norm.logpdf(x, mu, s) + norm.pdf(x, loc=mu, scale=s) + norm.cdf(x, mu, s)) + np.sum(t.logpdf(x, s + 2.0, mu, s))
    return a + b + c + e


def c_linalg(a, b, x, mean):
    m = a @ a.T + 3.0 * np.eye(3)
    sign, logdet = np.linalg.slogdet(m)
    factor = np.linalg.cholesky(m)
    w, vec = np.linalg.eigh(m)
    p = np.sum(np.linalg.inv(m) ** 2) + np.sum(np.linalg.solve(m, b) ** 2) + np.linalg.det(m) * 0.01 + logdet
    q = np.sum(factor * np.arange(9.0).reshape(3, 3)) + np.sum(w * np.arange(3.0)) + np.sum(vec * vec * np.arange(9.0).reshape(3, 3))
    r = np.linalg.norm(a) + np.sum(np.linalg.norm(a, axis=1) ** 3) + np.sum(multivariate_normal.logpdf(x, mean, m))
    return p + q + r


CPU_CASES = [
    (c_reductions, lambda: [positive(4, 5), positive(4, seed=1)], (0, 1)),
    (c_shapes, lambda: [normal(3, 4), normal(3, seed=1)], (0, 1)),
    (c_pieces, lambda: [normal(2, 4), normal(4, seed=1), 0.7], (0, 1, 2)),
    (c_special, lambda: [normal(3, 4), normal(4, seed=1), positive(4, seed=2)], (0, 1, 2)),
    (c_linalg, lambda: [normal(3, 3), normal(3, seed=1), normal(4, 3, seed=2), normal(3, seed=3)], (0, 1, 2, 3)),
]


@pytest.mark.parametrize("f,make,wrt", CPU_CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_groups_python(f, make, wrt):
    check(f, make(), wrt=wrt, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("f,make,wrt", CPU_CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_groups_cpu(f, make, wrt):
    check(f, make(), wrt=wrt, target="cpu", rtol=1e-4, atol=1e-5)


# np.inner, kron and cross compile, so pr_inner_kron_cross runs on cpu; einsum with three operands
# and tensordot over several axes compile too (tests/test_einsum_lowering.py and
# tests/test_tensordot_lowering.py check them on cpu against finite differences). Axes known only
# at run time are refused, naming the line, on both targets.
def pr_tensordot_runtime_axes(a, b, k):
    return np.sum(np.tensordot(a, b, k) ** 2)


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_tensordot_with_runtime_axes_is_refused(target):
    with pytest.raises(srcgrad.SrcgradError, match="np.tensordot") as info:
        srcgrad.grad(pr_tensordot_runtime_axes, target=target)(normal(3, 4), normal(4, 2), 1)
    assert "test_numpy_rules.py:" in str(info.value)


def gmm_loglik(means, x):
    d2 = np.sum((x[:, np.newaxis, :] - means[np.newaxis]) ** 2, axis=2)
    return np.sum(special.logsumexp(-0.5 * d2, axis=1))


def test_readme_gmm_example():
    check(gmm_loglik, [normal(3, 2), normal(6, 2, seed=1)])
