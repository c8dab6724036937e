"""Derivative rules of the arithmetic operators and the elementwise functions (math.* and the
matching NumPy ufuncs), scalar or array alike."""
import math
import operator

import numpy as np

from .. import kinds as K
from .table import d, register_adjoint, register_tangent, register_zero_derivative


# ================================================================================================
# Arithmetic operators (keys are the `operator` module's functions)
# ================================================================================================

@register_adjoint(operator.add)
def add(result, x, y):
    d[x] += d[result]
    d[y] += d[result]


@register_tangent(operator.add)
def add_tangent(result, x, y):
    d[result] += d[x]
    d[result] += d[y]


@register_adjoint(operator.sub)
def sub(result, x, y):
    d[x] += d[result]
    d[y] -= d[result]


@register_tangent(operator.sub)
def sub_tangent(result, x, y):
    d[result] += d[x]
    d[result] -= d[y]


@register_adjoint(operator.mul)
def mul(result, x, y):
    d[x] += d[result] * y
    d[y] += d[result] * x


@register_tangent(operator.mul)
def mul_tangent(result, x, y):
    d[result] += d[x] * y
    d[result] += x * d[y]


@register_adjoint(operator.truediv)
def truediv(result, x, y):
    d[x] += d[result] / y
    d[y] -= d[result] * result / y


@register_tangent(operator.truediv)
def truediv_tangent(result, x, y):
    d[result] += d[x] / y
    d[result] -= d[y] * result / y


# Exact where x == 0, as mature AD libraries special-case it: for p == 0 the power x ** (p - 1)
# is replaced by x ** 0 (x ** 0 is constant, and 0.0 ** -1 is inf or a ZeroDivisionError), so
# that s += c[k] * x ** k differentiates at x = 0; and the logarithm is taken at 1 where x == 0
# (0 ** p is 0 for all p > 0: its derivative in p is 0, not 0 * log 0 = NaN).
@register_adjoint(operator.pow, pow, math.pow, np.power)
def power(result, x, p):
    d[x] += d[result] * p * x ** (p - (p != 0))
    d[p] += d[result] * result * np.log(x + (x == 0))


@register_tangent(operator.pow, pow, math.pow, np.power)
def power_tangent(result, x, p):
    d[result] += d[x] * p * x ** (p - (p != 0))
    d[result] += d[p] * result * np.log(x + (x == 0))


@register_adjoint(operator.mod, np.mod)
def mod(result, x, y):
    d[x] += d[result]
    d[y] -= d[result] * np.floor(x / y)


@register_tangent(operator.mod, np.mod)
def mod_tangent(result, x, y):
    d[result] += d[x]
    d[result] -= d[y] * np.floor(x / y)


@register_adjoint(operator.neg, np.negative)
def neg(result, x):
    d[x] -= d[result]


@register_tangent(operator.neg, np.negative)
def neg_tangent(result, x):
    d[result] -= d[x]


# ================================================================================================
# Elementwise functions: math.* and the matching np.* ufuncs
# ================================================================================================

@register_adjoint(math.sin, np.sin)
def sin(result, x):
    d[x] += d[result] * np.cos(x)


@register_tangent(math.sin, np.sin)
def sin_tangent(result, x):
    d[result] += d[x] * np.cos(x)


@register_adjoint(math.cos, np.cos)
def cos(result, x):
    d[x] -= d[result] * np.sin(x)


@register_tangent(math.cos, np.cos)
def cos_tangent(result, x):
    d[result] -= d[x] * np.sin(x)


@register_adjoint(math.tan, np.tan)
def tan(result, x):
    d[x] += d[result] * (1.0 + result * result)


@register_tangent(math.tan, np.tan)
def tan_tangent(result, x):
    d[result] += d[x] * (1.0 + result * result)


@register_adjoint(math.asin, np.arcsin)
def arcsin(result, x):
    d[x] += d[result] / np.sqrt(1.0 - x * x)


@register_tangent(math.asin, np.arcsin)
def arcsin_tangent(result, x):
    d[result] += d[x] / np.sqrt(1.0 - x * x)


@register_adjoint(math.acos, np.arccos)
def arccos(result, x):
    d[x] -= d[result] / np.sqrt(1.0 - x * x)


@register_tangent(math.acos, np.arccos)
def arccos_tangent(result, x):
    d[result] -= d[x] / np.sqrt(1.0 - x * x)


@register_adjoint(math.atan, np.arctan)
def arctan(result, x):
    d[x] += d[result] / (1.0 + x * x)


@register_tangent(math.atan, np.arctan)
def arctan_tangent(result, x):
    d[result] += d[x] / (1.0 + x * x)


@register_adjoint(math.atan2, np.arctan2)
def arctan2(result, y, x):
    r2 = x * x + y * y
    d[y] += d[result] * x / r2
    d[x] -= d[result] * y / r2


@register_tangent(math.atan2, np.arctan2)
def arctan2_tangent(result, y, x):
    r2 = x * x + y * y
    d[result] += d[y] * x / r2
    d[result] -= d[x] * y / r2


@register_adjoint(math.sinh, np.sinh)
def sinh(result, x):
    d[x] += d[result] * np.cosh(x)


@register_tangent(math.sinh, np.sinh)
def sinh_tangent(result, x):
    d[result] += d[x] * np.cosh(x)


@register_adjoint(math.cosh, np.cosh)
def cosh(result, x):
    d[x] += d[result] * np.sinh(x)


@register_tangent(math.cosh, np.cosh)
def cosh_tangent(result, x):
    d[result] += d[x] * np.sinh(x)


@register_adjoint(math.tanh, np.tanh)
def tanh(result, x):
    d[x] += d[result] * (1.0 - result * result)


@register_tangent(math.tanh, np.tanh)
def tanh_tangent(result, x):
    d[result] += d[x] * (1.0 - result * result)


@register_adjoint(math.exp, np.exp)
def exp(result, x):
    d[x] += d[result] * result


@register_tangent(math.exp, np.exp)
def exp_tangent(result, x):
    d[result] += d[x] * result


@register_adjoint(math.expm1, np.expm1)
def expm1(result, x):
    d[x] += d[result] * (result + 1.0)


@register_tangent(math.expm1, np.expm1)
def expm1_tangent(result, x):
    d[result] += d[x] * (result + 1.0)


# 2/sqrt(pi): d erf(x)/dx = 2/sqrt(pi) * exp(-x^2) (scipy.special.erf has its rule with SciPy's)
@register_adjoint(math.erf)
def erf(result, x):
    d[x] += d[result] * 1.1283791670955126 * np.exp(-x * x)


@register_tangent(math.erf)
def erf_tangent(result, x):
    d[result] += d[x] * 1.1283791670955126 * np.exp(-x * x)


@register_adjoint(math.erfc)
def erfc(result, x):
    d[x] -= d[result] * 1.1283791670955126 * np.exp(-x * x)


@register_tangent(math.erfc)
def erfc_tangent(result, x):
    d[result] -= d[x] * 1.1283791670955126 * np.exp(-x * x)


@register_adjoint(math.log, np.log)
def log(result, x):
    d[x] += d[result] / x


@register_tangent(math.log, np.log)
def log_tangent(result, x):
    d[result] += d[x] / x


@register_adjoint(math.log1p, np.log1p)
def log1p(result, x):
    d[x] += d[result] / (1.0 + x)


@register_tangent(math.log1p, np.log1p)
def log1p_tangent(result, x):
    d[result] += d[x] / (1.0 + x)


@register_adjoint(math.log2, np.log2)
def log2(result, x):
    d[x] += d[result] / (x * 0.6931471805599453)


@register_tangent(math.log2, np.log2)
def log2_tangent(result, x):
    d[result] += d[x] / (x * 0.6931471805599453)


@register_adjoint(math.log10, np.log10)
def log10(result, x):
    d[x] += d[result] / (x * 2.302585092994046)


@register_tangent(math.log10, np.log10)
def log10_tangent(result, x):
    d[result] += d[x] / (x * 2.302585092994046)


@register_adjoint(math.sqrt, np.sqrt)
def sqrt(result, x):
    d[x] += d[result] * 0.5 / result


@register_tangent(math.sqrt, np.sqrt)
def sqrt_tangent(result, x):
    d[result] += d[x] * 0.5 / result


@register_adjoint(np.square)
def square(result, x):
    d[x] += d[result] * 2.0 * x


@register_tangent(np.square)
def square_tangent(result, x):
    d[result] += d[x] * 2.0 * x


@register_adjoint(math.hypot, np.hypot)
def hypot(result, x, y):
    d[x] += d[result] * x / result
    d[y] += d[result] * y / result


@register_tangent(math.hypot, np.hypot)
def hypot_tangent(result, x, y):
    d[result] += d[x] * x / result
    d[result] += d[y] * y / result


@register_adjoint(abs, math.fabs, np.abs, np.fabs)
def absolute(result, x):
    d[x] += d[result] * np.sign(x)


@register_tangent(abs, math.fabs, np.abs, np.fabs)
def absolute_tangent(result, x):
    d[result] += d[x] * np.sign(x)


@register_adjoint(float, kind=lambda x: K.FLOAT)
def to_float(result, x):
    d[x] += d[result]


@register_tangent(float)
def to_float_tangent(result, x):
    d[result] += d[x]


# min/max and their elementwise forms: ties send the whole adjoint to the first argument.
@register_adjoint(max, np.maximum, np.fmax)
def maximum(result, x, y):
    d[x] += d[result] * (x >= y)
    d[y] += d[result] * (x < y)


@register_tangent(max, np.maximum, np.fmax)
def maximum_tangent(result, x, y):
    d[result] += d[x] * (x >= y)
    d[result] += d[y] * (x < y)


@register_adjoint(min, np.minimum, np.fmin)
def minimum(result, x, y):
    d[x] += d[result] * (x <= y)
    d[y] += d[result] * (x > y)


@register_tangent(min, np.minimum, np.fmin)
def minimum_tangent(result, x, y):
    d[result] += d[x] * (x <= y)
    d[result] += d[y] * (x > y)


@register_adjoint(np.where, kind=lambda c, x, y: K.broadcast(c, x, y, dtype="float"))
def where(result, condition, x, y):
    d[x] += d[result] * condition
    d[y] += d[result] * (1.0 - condition)


@register_tangent(np.where)
def where_tangent(result, condition, x, y):
    d[result] += d[x] * condition
    d[result] += d[y] * (1.0 - condition)


@register_adjoint(np.clip)
def clip(result, x, lo, hi):
    d[x] += d[result] * ((x >= lo) & (x <= hi))
    d[lo] += d[result] * (x < lo)
    d[hi] += d[result] * (x > hi)


@register_tangent(np.clip)
def clip_tangent(result, x, lo, hi):
    d[result] += d[x] * ((x >= lo) & (x <= hi))
    d[result] += d[lo] * (x < lo)
    d[result] += d[hi] * (x > hi)


register_zero_derivative(math.floor, math.ceil, math.trunc, kind=lambda x: K.INT)
register_zero_derivative(np.floor, np.ceil, np.trunc, np.sign, np.round, np.rint)


# --- unary ufuncs -------------------------------------------------------------------------------

@register_adjoint(np.reciprocal)
def reciprocal(result, x):
    d[x] -= d[result] * result * result


@register_tangent(np.reciprocal)
def reciprocal_tangent(result, x):
    d[result] -= d[x] * result * result


@register_adjoint(np.exp2)
def exp2(result, x):
    d[x] += d[result] * result * 0.6931471805599453       # ln 2


@register_tangent(np.exp2)
def exp2_tangent(result, x):
    d[result] += d[x] * result * 0.6931471805599453


@register_adjoint(math.asinh, np.arcsinh)
def arcsinh(result, x):
    d[x] += d[result] / np.sqrt(x * x + 1.0)


@register_tangent(math.asinh, np.arcsinh)
def arcsinh_tangent(result, x):
    d[result] += d[x] / np.sqrt(x * x + 1.0)


@register_adjoint(math.acosh, np.arccosh)
def arccosh(result, x):
    d[x] += d[result] / np.sqrt(x * x - 1.0)


@register_tangent(math.acosh, np.arccosh)
def arccosh_tangent(result, x):
    d[result] += d[x] / np.sqrt(x * x - 1.0)


@register_adjoint(math.atanh, np.arctanh)
def arctanh(result, x):
    d[x] += d[result] / (1.0 - x * x)


@register_tangent(math.atanh, np.arctanh)
def arctanh_tangent(result, x):
    d[result] += d[x] / (1.0 - x * x)


@register_adjoint(math.radians, np.deg2rad, np.radians)
def deg2rad(result, x):
    d[x] += d[result] * 0.017453292519943295              # pi / 180


@register_tangent(math.radians, np.deg2rad, np.radians)
def deg2rad_tangent(result, x):
    d[result] += d[x] * 0.017453292519943295


@register_adjoint(math.degrees, np.rad2deg, np.degrees)
def rad2deg(result, x):
    d[x] += d[result] * 57.29577951308232                 # 180 / pi


@register_tangent(math.degrees, np.rad2deg, np.degrees)
def rad2deg_tangent(result, x):
    d[result] += d[x] * 57.29577951308232


# sinc(x) = sin(pi x) / (pi x): derivative (cos(pi x) - sinc(x)) / x, which is 0 at x = 0
# (the denominator x + (x == 0) is x, or 1 where x is 0 and the numerator is 0 too).
@register_adjoint(np.sinc)
def sinc(result, x):
    d[x] += d[result] * (np.cos(3.141592653589793 * x) - result) / (x + (x == 0.0))


# hvp differentiates this expression again. The masked quotient's derivative is 0 at x == 0, so a
# term that is 0 everywhere, (x == 0) * x * (-pi^2/3), supplies sinc''(0) = -pi^2/3 there.
@register_tangent(np.sinc)
def sinc_tangent(result, x):
    d[result] += d[x] * ((np.cos(3.141592653589793 * x) - result) / (x + (x == 0.0))
                         - (x == 0.0) * x * 3.289868133696453)




# --- binary ufuncs ------------------------------------------------------------------------------
# the ufunc spellings of the operators share the operators' templates

register_adjoint(np.add)(add)
register_adjoint(np.subtract)(sub)
register_adjoint(np.multiply)(mul)
register_adjoint(np.divide, np.true_divide)(truediv)
register_adjoint(np.float_power)(power)
register_tangent(np.add)(add_tangent)
register_tangent(np.subtract)(sub_tangent)
register_tangent(np.multiply)(mul_tangent)
register_tangent(np.divide, np.true_divide)(truediv_tangent)
register_tangent(np.float_power)(power_tangent)


@register_adjoint(np.logaddexp)
def logaddexp(result, x, y):
    d[x] += d[result] * np.exp(x - result)
    d[y] += d[result] * np.exp(y - result)


@register_tangent(np.logaddexp)
def logaddexp_tangent(result, x, y):
    d[result] += d[x] * np.exp(x - result)
    d[result] += d[y] * np.exp(y - result)


@register_adjoint(np.logaddexp2)
def logaddexp2(result, x, y):
    d[x] += d[result] * np.exp2(x - result)
    d[y] += d[result] * np.exp2(y - result)


@register_tangent(np.logaddexp2)
def logaddexp2_tangent(result, x, y):
    d[result] += d[x] * np.exp2(x - result)
    d[result] += d[y] * np.exp2(y - result)
