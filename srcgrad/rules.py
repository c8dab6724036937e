"""Stage 5 — derivative rules: one small template per function, written like the math.

A template is an ordinary Python function whose parameters are the call's result and arguments.
Its body says how the result's adjoint flows back into each argument::

    @register_adjoint(math.sin, np.sin)
    def sin(result, x):
        d[x] += d[result] * np.cos(x)

``d[x]`` means "the adjoint of x". When srcgrad meets ``y = np.sin(a)`` in active code it copies
the template's statements into the reverse sweep with ``result`` → ``y`` and ``x`` → ``a``, and drops
statements whose argument does not need a derivative. Elementwise templates may produce a
contribution with the result's (broadcast) shape: srcgrad sums it back to the argument's shape.
Plain ``name = expr`` lines in a template are local temporaries shared by the lines below.

Users register rules for their own functions the same way (``srcgrad.register_adjoint``).
"""
import ast
import inspect
import math
import operator
import textwrap

import numpy as np

from . import kinds as K
from .errors import SrcgradError
# Runtime helpers the array templates call (generated code imports them from its backend).
from .runtime import (expand_reduced, matmul_grad_left, matmul_grad_right, max_adjoint, prod_adjoint,  # noqa: F401
                      min_adjoint, reduced_count, reshape_any)


class _AdjointOf:
    """``d[x]`` in a template: the adjoint of x. Only meaningful inside templates."""

    def __getitem__(self, name):
        raise SrcgradError("`d[...]` only has a meaning inside a derivative template")


d = _AdjointOf()


class Rule:
    """A derivative template plus how to type the call's result."""

    def __init__(self, template, kind=None, elementwise=True, name=None):
        self.template = template
        self.name = name or template.__name__
        self.signature = inspect.signature(template)
        self.params = list(self.signature.parameters)
        self.kind = kind or elementwise_kind
        self.elementwise = elementwise
        self.body = _parse_template(template)
        self.tangent = None        # a TangentRule (forward mode), set by register_tangent

    def bind(self, result, args, keywords):
        """Map template parameter names to the call's atoms (AST nodes)."""
        try:
            bound = self.signature.bind(result, *args, **keywords)
        except TypeError as exc:
            raise SrcgradError(f"call does not match the derivative rule {self.name}{self.signature}: "
                               f"{exc}") from None
        bound.apply_defaults()
        return {name: (value if isinstance(value, ast.AST) else ast.Constant(value))
                for name, value in bound.arguments.items()}


class ZeroDerivative:
    """Functions whose derivative is zero wherever it exists (floor, sign, ...)."""

    def __init__(self, kind=None):
        self.kind = kind or elementwise_kind


def _parse_template(template, tangent=False):
    source = textwrap.dedent(inspect.getsource(template))
    fn = ast.parse(source).body[0]
    body = [s for s in fn.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if tangent:       # `d[result] += expr` (one argument's tangent in each) or `name = expr`
        result = fn.args.args[0].arg
        for stmt in body:
            if not ((isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, (ast.Add, ast.Sub))
                     and ast.unparse(stmt.target) == f"d[{result}]") or
                    (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                     and isinstance(stmt.targets[0], ast.Name))):
                raise SrcgradError(f"tangent template {template.__name__}: each line must be "
                                   f"`d[{result}] += expr`, `d[{result}] -= expr` or `name = expr`, got "
                                   f"`{ast.unparse(stmt)}`")
        return body
    for stmt in body:
        ok = (isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, (ast.Add, ast.Sub))
              and isinstance(stmt.target, ast.Subscript) and isinstance(stmt.target.value, ast.Name)
              and stmt.target.value.id == "d" and isinstance(stmt.target.slice, ast.Name)) or \
             (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name))
        if not ok:
            raise SrcgradError(f"derivative template {template.__name__}: each line must be "
                               f"`d[arg] += expr`, `d[arg] -= expr` or `name = expr`, got "
                               f"`{ast.unparse(stmt)}`")
    return body


# --- result kinds ------------------------------------------------------------------------------

def elementwise_kind(*arg_kinds, **kw_kinds):
    return K.broadcast(*[k for k in arg_kinds if k is not None], dtype="float")


def same_kind(x, *rest, **kw):
    return x


def reduction_kind(x, axis=None, keepdims=None, **kw):
    """np.sum/mean/max/...: ``axis`` and ``keepdims`` arrive as their constant values."""
    if isinstance(axis, K.Kind):            # a positional axis argument: only its kind is known
        axis = None if axis.cls == "none" else 0
    if isinstance(keepdims, K.Kind):
        keepdims = False
    if not x.is_array:
        return K.Kind(x.cls if x.cls != "bool" else "int")
    element = "float" if x.dtype == "float" else "int"
    if axis is None:
        return K.array(x.ndim, element) if keepdims else K.Kind(element)
    naxes = len(axis) if isinstance(axis, tuple) else 1
    return K.array(x.ndim if keepdims else x.ndim - naxes, element)


REGISTRY = {}

# User functions with registered rules, by qualified name: generated modules look them up here
# (``external("pkg.mod.fn")``) because they are defined outside srcgrad.
EXTERNALS = {}


def _is_user_function(function):
    import types
    function = getattr(function, "py_func", function)
    return isinstance(function, types.FunctionType)


def external_name(function):
    function = getattr(function, "py_func", function)
    return f"{function.__module__}.{function.__qualname__}"


def external(qualified_name):
    """The user function registered under ``qualified_name`` (called by generated modules)."""
    try:
        return EXTERNALS[qualified_name]
    except KeyError:
        raise SrcgradError(f"generated code calls {qualified_name}, whose derivative rule is not "
                           "registered in this process: import the module that registers it "
                           "(register_adjoint) before calling the gradient") from None


def register_adjoint(*functions, kind=None, elementwise=True):
    """Register a derivative template for ``functions`` (decorator).

    ``kind`` optionally computes the result's kind from the arguments' kinds; the default treats the
    function as elementwise (result broadcast from the arguments, float).
    ``elementwise=False`` says the template's contributions already have each argument's shape.
    """
    if not functions:
        raise TypeError("register_adjoint needs the function(s) the rule is for")

    def decorate(template):
        rule = Rule(template, kind=kind, elementwise=elementwise)
        for function in functions:
            REGISTRY[_key(function)] = rule
            if _is_user_function(function):
                EXTERNALS[external_name(function)] = function
        return template
    return decorate


def register_zero_derivative(*functions, kind=None):
    """Declare functions whose derivative is zero (piecewise constant: floor, sign, round...)."""
    for function in functions:
        REGISTRY[_key(function)] = ZeroDerivative(kind)


class TangentRule:
    """A forward-mode (tangent) template: how the result's tangent follows from the arguments'.

    ``d[x]`` means "the tangent of x". Each line ``d[result] += expr`` (or ``-=``) is the
    contribution of one argument's tangent; srcgrad drops the lines whose argument does not vary
    with the inputs and writes the rest as one expression (``_dot_r = term + term``). Plain
    ``name = expr`` lines are shared temporaries, as in adjoint templates."""

    def __init__(self, template):
        self.template = template
        self.name = template.__name__
        self.signature = inspect.signature(template)
        self.params = list(self.signature.parameters)
        self.body = _parse_template(template, tangent=True)

    bind = Rule.bind


def register_tangent(*functions):
    """Register the forward-mode (tangent) template of functions that already have an adjoint
    template (decorator; put it next to the ``register_adjoint`` of the same functions)::

        @register_tangent(math.sin, np.sin)
        def sin_tangent(result, x):
            d[result] += d[x] * np.cos(x)
    """
    if not functions:
        raise TypeError("register_tangent needs the function(s) the rule is for")

    def decorate(template):
        tangent = TangentRule(template)
        for function in functions:
            rule = REGISTRY.get(_key(function))
            if not isinstance(rule, Rule):
                raise SrcgradError(f"register_tangent({getattr(function, '__name__', function)}): "
                                   "register its adjoint template (register_adjoint) first")
            rule.tangent = tangent
        return template
    return decorate


def _key(function):
    return getattr(function, "py_func", function)


def lookup(function):
    return REGISTRY.get(_key(function))


# Array creation: the result depends on the argument's shape, never on its values.
CREATION = {np.zeros, np.ones, np.empty, np.zeros_like, np.ones_like, np.empty_like, np.full,
            np.full_like, np.arange}

# Functions that are fine on inactive values but have no derivative on active ones.
NON_DIFFERENTIABLE = {int, len, range, bool, round, np.argmax, np.argmin, np.argsort, np.isnan,
                      np.isinf, np.isfinite, math.isnan, math.isinf, math.isfinite, np.shape,
                      np.ndim, np.size}


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


@register_adjoint(operator.pow, pow, math.pow, np.power)
def power(result, x, p):
    d[x] += d[result] * p * x ** (p - 1)
    d[p] += d[result] * result * np.log(x)


@register_tangent(operator.pow, pow, math.pow, np.power)
def power_tangent(result, x, p):
    d[result] += d[x] * p * x ** (p - 1)
    d[result] += d[p] * result * np.log(x)


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


# ================================================================================================
# Array programs: products, reductions, shape work
# (runtime helpers such as expand_reduced live in srcgrad.runtime)
# ================================================================================================

def _matmul_kind(a, b):
    from .analyse import matmul_kind
    return matmul_kind(a, b)


def _dot_kind(a, b):
    # np.dot of N-d arrays pairs every row of ``a`` with every stack of ``b`` (result ndim
    # a.ndim + b.ndim - 2): a different product, which this rule does not differentiate.
    for operand in (a, b):
        if operand.is_array and operand.ndim > 2:
            raise TypeError(f"np.dot of a {operand.ndim}-d array is not supported (for more than "
                            f"2 dimensions np.dot is not a batched product); use `@` or np.matmul "
                            f"for stacks of matrices")
    return _matmul_kind(a, b)


# a @ b and np.dot of vectors and matrices; `@`/np.matmul also of stacks of matrices (NumPy's
# broadcasting of the leading axes). The helpers pick the transposed products by ndim.
@register_adjoint(operator.matmul, np.matmul, kind=_matmul_kind, elementwise=False)
def matmul(result, a, b):
    d[a] += matmul_grad_left(d[result], a, b)
    d[b] += matmul_grad_right(d[result], a, b)


@register_tangent(operator.matmul, np.matmul)
def matmul_tangent(result, a, b):
    d[result] += d[a] @ b
    d[result] += a @ d[b]


register_adjoint(np.dot, kind=_dot_kind, elementwise=False)(matmul)     # the same template
register_tangent(np.dot)(matmul_tangent)


@register_adjoint(np.outer, kind=lambda a, b: K.array(2), elementwise=False)
def outer(result, a, b):
    d[a] += np.dot(d[result], b)
    d[b] += np.dot(d[result].T, a)


@register_tangent(np.outer)
def outer_tangent(result, a, b):
    d[result] += np.outer(d[a], b)
    d[result] += np.outer(a, d[b])


@register_adjoint(np.sum, kind=reduction_kind, elementwise=False)
def sum_(result, x, axis=None, keepdims=False):
    d[x] += expand_reduced(d[result], x, axis, keepdims)


@register_tangent(np.sum)
def sum_tangent(result, x, axis=None, keepdims=False):
    d[result] += np.sum(d[x], axis=axis, keepdims=keepdims)


@register_adjoint(np.mean, kind=lambda x, axis=None, keepdims=None: K.FLOAT if axis is None and not keepdims
                  else reduction_kind(x, axis, keepdims), elementwise=False)
def mean(result, x, axis=None, keepdims=False):
    d[x] += expand_reduced(d[result], x, axis, keepdims) / reduced_count(x, axis)


@register_tangent(np.mean)
def mean_tangent(result, x, axis=None, keepdims=False):
    d[result] += np.mean(d[x], axis=axis, keepdims=keepdims)


@register_adjoint(np.prod, kind=reduction_kind, elementwise=False)
def prod(result, x, axis=None, keepdims=False):
    d[x] += prod_adjoint(d[result], x, axis, keepdims)


@register_tangent(np.prod)
def prod_tangent(result, x, axis=None, keepdims=False):
    d[result] += np.sum(d[x] * prod_adjoint(np.ones_like(result), x, axis, keepdims), axis=axis,
                        keepdims=keepdims)


@register_adjoint(np.max, np.amax, kind=reduction_kind, elementwise=False)
def max_(result, x, axis=None, keepdims=False):
    d[x] += max_adjoint(d[result], x, axis, keepdims)


# Tangent code (and hvp, reverse mode over it) calls max_adjoint/min_adjoint with a constant first
# argument (ones): the mask of each slice's first extreme element, piecewise constant in x.
register_zero_derivative(max_adjoint, min_adjoint, kind=lambda gradient, x, *rest, **kw: x)


@register_tangent(np.max, np.amax)
def max_tangent(result, x, axis=None, keepdims=False):
    d[result] += np.sum(d[x] * max_adjoint(np.ones_like(result), x, axis, keepdims), axis=axis,
                        keepdims=keepdims)


@register_adjoint(np.min, np.amin, kind=reduction_kind, elementwise=False)
def min_(result, x, axis=None, keepdims=False):
    d[x] += min_adjoint(d[result], x, axis, keepdims)


@register_tangent(np.min, np.amin)
def min_tangent(result, x, axis=None, keepdims=False):
    d[result] += np.sum(d[x] * min_adjoint(np.ones_like(result), x, axis, keepdims), axis=axis,
                        keepdims=keepdims)


@register_adjoint(np.transpose, kind=same_kind, elementwise=False)
def transpose(result, x):
    d[x] += np.transpose(d[result])


@register_tangent(np.transpose)
def transpose_tangent(result, x):
    d[result] += np.transpose(d[x])


def _reshape_kind(x, shape=None, *rest, **kw):
    if isinstance(shape, K.Kind) and shape.cls == "tuple":
        return K.array(len(shape.items))
    if isinstance(shape, tuple):
        return K.array(len(shape))
    return K.array(1)


@register_adjoint(np.reshape, kind=_reshape_kind, elementwise=False)
def reshape(result, x, shape):
    d[x] += reshape_any(d[result], x.shape)


@register_tangent(np.reshape)
def reshape_tangent(result, x, shape):
    d[result] += np.reshape(d[x], result.shape)


@register_adjoint(np.ravel, kind=lambda x: K.array(1), elementwise=False)
def ravel(result, x):
    d[x] += np.reshape(d[result], x.shape)


@register_tangent(np.ravel)
def ravel_tangent(result, x):
    d[result] += np.reshape(d[x], result.shape)


@register_adjoint(np.copy, kind=same_kind, elementwise=False)
def copy_(result, x):
    d[x] += d[result]


@register_tangent(np.copy)
def copy_tangent(result, x):
    d[result] += np.copy(d[x])


@register_adjoint(np.expand_dims, kind=lambda x, axis: K.array(x.ndim + 1), elementwise=False)
def expand_dims(result, x, axis):
    d[x] += np.reshape(d[result], x.shape)


@register_tangent(np.expand_dims)
def expand_dims_tangent(result, x, axis):
    d[result] += np.reshape(d[x], result.shape)


# Functions taking a tuple of arrays: the adjoint of element k of the tuple is a part of the
# result's adjoint, cut out by a runtime helper: ``d[parts[k]] += helper(d[result], k, parts, axis)``.
TUPLE_ARGUMENT_RULES = {
    np.concatenate: "concat_part",     # the k-th block along `axis`
    np.stack: "stack_part",            # the k-th index along the new `axis`
}
