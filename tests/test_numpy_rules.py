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


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ufuncs_cpu(dtype):
    check(c_ufuncs, [positive(3, 4), positive(4, seed=1)], wrt=(0, 1), target="cpu", dtype=dtype)
