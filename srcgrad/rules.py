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
import types

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
        # what decides the code this rule generates (part of every generated module's cache key)
        self.fingerprint = f"{_source_or_name(template)}\n{_source_or_name(kind)}\n{elementwise}"
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
        self.fingerprint = f"zero derivative\n{_source_or_name(kind)}"


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
    if isinstance(axis, K.Kind) and axis.cls == "tuple":
        axis = tuple(range(len(axis.items)))    # a tuple of axes held in a variable
    if isinstance(axis, K.Kind):            # an axis held in a variable: only its kind is known
        axis = None if axis.cls == "none" else 0
    if isinstance(keepdims, K.Kind):        # its value decides the result's ndim: must be known
        raise TypeError("keepdims must be a constant (True or False), not a variable")
    if not x.is_array:
        return K.Kind(x.cls if x.cls != "bool" else "int")
    element = "float" if x.dtype == "float" else "int"
    if axis is None:
        return K.array(x.ndim, element) if keepdims else K.Kind(element)
    naxes = len(axis) if isinstance(axis, tuple) else 1
    return K.array(x.ndim if keepdims else x.ndim - naxes, element)


REGISTRY = {}
_REGISTRY_VERSION = [0, 0, None]     # (changes, changes when fingerprinted, fingerprint)

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
            _REGISTRY_VERSION[0] += 1
            if _is_user_function(function):
                EXTERNALS[external_name(function)] = function
        return template
    return decorate


def register_zero_derivative(*functions, kind=None):
    """Declare functions whose derivative is zero (piecewise constant: floor, sign, round...)."""
    for function in functions:
        REGISTRY[_key(function)] = ZeroDerivative(kind)
        _REGISTRY_VERSION[0] += 1
        if _is_user_function(function):     # generated code calls it by name, as for register_adjoint
            EXTERNALS[external_name(function)] = function


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
            # the tangent template decides generated forward code too (cache key)
            rule.fingerprint = rule.fingerprint.split("\0tangent\0")[0] + "\0tangent\0" + \
                _source_or_name(template)
            _REGISTRY_VERSION[0] += 1
        return template
    return decorate


def _key(function):
    function = getattr(function, "py_func", function)
    if isinstance(function, types.MethodType):
        # a method of an object such as scipy.stats.norm: by class and function (a deep copy of
        # the code, which copies the object, still finds the rule)
        return (type(function.__self__), function.__func__)
    return function


def _source_or_name(function):
    if function is None:
        return "None"
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"


def _label(function):
    """A name for a registered function that is the same in every process (no addresses)."""
    module = getattr(function, "__module__", None) or type(function).__module__
    name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None) or repr(function)
    return f"{module}.{name}"


def registry_fingerprint():
    """A hash of every registered rule (built-in and user): which functions have one and the
    source of each template and kind function. Part of the generated modules' cache key, so that
    changing a rule (in a later process) never reuses code generated from the old one."""
    changes, seen, fingerprint = _REGISTRY_VERSION
    if fingerprint is None or changes != seen:
        import hashlib
        digest = hashlib.sha256()
        for label, rule in sorted((_label(f), r.fingerprint) for f, r in REGISTRY.items()):
            digest.update(f"{label}\0{rule}\0".encode())
        _REGISTRY_VERSION[1:] = [changes, digest.hexdigest()]
    return _REGISTRY_VERSION[2]


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
    if not (a.is_array and b.is_array):     # np.dot with a scalar: a product (see scalar_dot)
        return elementwise_kind(a, b)
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


from .runtime import prod_second  # noqa: E402


# hvp differentiates the tangent above: prod_adjoint's own adjoint (its gradient argument is the
# ones of the tangent, so the x part scales prod_second by it, broadcast as prod_adjoint does)
@register_adjoint(prod_adjoint, kind=lambda gradient, x, axis, keepdims: x, elementwise=False)
def _prod_adjoint_adjoint(result, gradient, x, axis, keepdims):
    d[x] += prod_second(d[result], x, axis) * prod_adjoint(gradient, np.ones_like(x), axis, keepdims)
    d[gradient] += np.sum(d[result] * prod_adjoint(np.ones_like(gradient), x, axis, keepdims), axis=axis,
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


# The axes are constant (normalize refuses others): np.argsort of them is folded into the inverse
# permutation when the adjoint is generated (transform.simplify): `np.transpose(_adj_y, (1, 2, 0))`.
@register_adjoint(np.transpose, kind=lambda x, axes=None: x, elementwise=False)
def transpose(result, x, axes=None):
    d[x] += np.transpose(d[result], np.argsort(axes))


@register_tangent(np.min, np.amin)
def min_tangent(result, x, axis=None, keepdims=False):
    d[result] += np.sum(d[x] * min_adjoint(np.ones_like(result), x, axis, keepdims), axis=axis,
                        keepdims=keepdims)


@register_tangent(np.transpose)
def transpose_tangent(result, x, axes=None):
    d[result] += np.transpose(d[x], axes)


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


# ================================================================================================
# NumPy and SciPy coverage (autograd's level). Rules below may name a runtime helper that runs the
# primal call in generated code (``LIBRARY_CALLS``): NumPy calls Numba cannot compile as written
# (an ``axis`` it does not take) and SciPy functions (not plain Python for srcgrad to transform).
# Their kind functions get constant arguments as values (``literal_args=True``).
# ================================================================================================

# (runtime helpers named by templates below are imported where their section starts)

# callee -> name of the runtime helper that generated code calls instead (both targets)
LIBRARY_CALLS = {}


def library_helper(callee):
    """The runtime helper generated code calls for ``callee``, or None (a plain NumPy call)."""
    try:
        helper = LIBRARY_CALLS.get(_key(callee))
        if helper is None and _is_scipy(callee) and _register_scipy():
            helper = LIBRARY_CALLS.get(_key(callee))
        return helper
    except TypeError:           # unhashable callee
        return None


def _library(function, helper, template, kind, elementwise=False):
    """Register ``template`` for ``function`` whose primal runs as runtime helper ``helper``."""
    rule = Rule(template, kind=kind, elementwise=elementwise)
    rule.literal_args = True
    REGISTRY[_key(function)] = rule
    if helper is not None:
        LIBRARY_CALLS[_key(function)] = helper


def _register_rule(functions, template, kind=None, elementwise=True):
    rule = Rule(template, kind=kind, elementwise=elementwise)
    rule.literal_args = True
    for function in functions:
        REGISTRY[_key(function)] = rule


def _value(v, default=None):
    """A constant argument's value (kind functions receive a Kind where it was not a constant)."""
    return default if isinstance(v, K.Kind) else v


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


# real and imaginary parts of real inputs (complex arrays are refused as arguments)
register_adjoint(np.real, kind=same_kind)(copy_)
register_tangent(np.real)(copy_tangent)
register_zero_derivative(np.imag, kind=lambda x: K.broadcast(x, dtype="float"))


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


# --- reductions and cumulative operations -------------------------------------------------------

from .runtime import (cumprod_adjoint, cumsum_adjoint, diag_adjoint, diff_adjoint,  # noqa: E402,F401
                      trace_adjoint, var_adjoint)
from .runtime import cumprod_tangent  # noqa: E402,F401


def _axis_value(x, axis, what):
    """A constant int (or None) axis, checked against ``x``'s ndim (a TypeError otherwise)."""
    if isinstance(axis, K.Kind):
        raise TypeError(f"{what}: the axis must be a constant")
    if axis is not None and not isinstance(axis, int):
        raise TypeError(f"{what}: the axis must be one int or None (a tuple of axes is not supported)")
    ndim = x.ndim if x.is_array else 0
    if axis is not None and not -ndim <= axis < max(ndim, 1):
        raise TypeError(f"{what}: axis {axis} is out of range for a {ndim}-d array")
    return axis


def _cumulative_kind(x, axis=None, **kw):
    if _axis_value(x, axis, "cumulative sum/product") is None:
        return K.array(1)
    return K.array(x.ndim)


def _cumsum(result, x, axis=None):
    d[x] += cumsum_adjoint(d[result], x, axis)


def _cumprod(result, x, axis=None):
    d[x] += cumprod_adjoint(d[result], x, axis)


_library(np.cumsum, "np_cumsum", _cumsum, _cumulative_kind)
_library(np.cumprod, "np_cumprod", _cumprod, _cumulative_kind)


# (forward mode: the linear functions in this section have the same call on the tangent as
# tangent; np.cumprod's runs the product's recurrence on the tangent, dividing by nothing)
@register_tangent(np.cumsum)
def _cumsum_tangent(result, x, axis=None):
    d[result] += np.cumsum(d[x], axis=axis)


@register_tangent(np.cumprod)
def _cumprod_tangent(result, x, axis=None):
    d[result] += cumprod_tangent(d[x], x, axis)


def _diff_kind(x, n=1, axis=-1, **kw):
    if not x.is_array:
        raise TypeError("np.diff needs an array")
    if not isinstance(n, int) or n < 0:
        raise TypeError("np.diff: n must be a constant non-negative int")
    _axis_value(x, axis, "np.diff")
    return K.array(x.ndim)


def _diff(result, x, n=1, axis=-1):
    d[x] += diff_adjoint(d[result], n, axis)


_library(np.diff, "np_diff", _diff, _diff_kind)


@register_tangent(np.diff)
def _diff_tangent(result, x, n=1, axis=-1):
    d[result] += np.diff(d[x], n, axis)


def _moment_kind(x, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
    if dtype is not None or out is not None or kw:
        raise TypeError("only the axis, ddof and keepdims arguments are supported")
    _axis_value(x, axis, "np.var/np.std")
    if isinstance(ddof, K.Kind) and ddof.cls not in ("int", "float"):
        raise TypeError("ddof must be a number")
    return reduction_kind(x, axis, keepdims)


def _var(result, x, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    d[x] += var_adjoint(d[result], x, axis, ddof, keepdims)


def _std(result, x, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    d[x] += var_adjoint(d[result] / (2.0 * result), x, axis, ddof, keepdims)


_library(np.var, "np_var", _var, _moment_kind)
_library(np.std, "np_std", _std, _moment_kind)


# reduced_count is an int (the number of elements combined): constant for hvp
register_zero_derivative(reduced_count, kind=lambda x, axis: K.INT)


# d var = 2 mean((x - mean x) dx) n / (n - ddof); d std = d var / (2 std)
@register_tangent(np.var)
def _var_tangent(result, x, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    n = reduced_count(x, axis)
    d[result] += np.mean((x - np.mean(x, axis=axis, keepdims=True)) * d[x], axis=axis,
                         keepdims=keepdims) * (2.0 * n / (n - ddof))


@register_tangent(np.std)
def _std_tangent(result, x, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    n = reduced_count(x, axis)
    d[result] += np.mean((x - np.mean(x, axis=axis, keepdims=True)) * d[x], axis=axis,
                         keepdims=keepdims) * (n / (n - ddof)) / result


def _matrix_kind(what, result_ndim):
    def kind(x, *rest, **kw):
        if not (x.is_array and x.ndim == 2):
            raise TypeError(f"{what} is supported for matrices (2-d arrays)")
        return K.array(result_ndim)
    return kind


def _trace(result, x, offset=0):
    d[x] += trace_adjoint(d[result], x, offset)


_library(np.trace, None, _trace, _matrix_kind("np.trace", 0))


@register_tangent(np.trace)
def _trace_tangent(result, x, offset=0):
    d[result] += np.trace(d[x], offset)


# --- shape work ---------------------------------------------------------------------------------

from .runtime import (append_part, hstack_part, meshgrid_adjoint, pad_adjoint,  # noqa: E402,F401
                      repeat_adjoint, roll_adjoint, sort_adjoint, sort_tangent, split_adjoint, tile_adjoint,
                      vstack_part, np_flip, np_rot90)


def _diag_kind(v, k=0):
    if not (v.is_array and v.ndim in (1, 2)):
        raise TypeError("np.diag needs a 1-d or 2-d array")
    return K.array(3 - v.ndim)


def _diag(result, v, k=0):
    d[v] += diag_adjoint(d[result], v, k)


_library(np.diag, None, _diag, _diag_kind)


@register_tangent(np.diag)
def _diag_tangent(result, v, k=0):
    d[result] += np.diag(d[v], k)


def _diagonal(result, x, offset=0):
    d[x] += diag_adjoint(d[result], x, offset)


_library(np.diagonal, "np_diagonal", _diagonal, _matrix_kind("np.diagonal", 1))


@register_tangent(np.diagonal)
def _diagonal_tangent(result, x, offset=0):
    d[result] += np.diagonal(d[x], offset)


def _triu(result, m, k=0):
    d[m] += np.triu(d[result], k)


def _tril(result, m, k=0):
    d[m] += np.tril(d[result], k)


_library(np.triu, None, _triu, _matrix_kind("np.triu", 2))
_library(np.tril, None, _tril, _matrix_kind("np.tril", 2))


@register_tangent(np.triu)
def _triu_tangent(result, m, k=0):
    d[result] += np.triu(d[m], k)


@register_tangent(np.tril)
def _tril_tangent(result, m, k=0):
    d[result] += np.tril(d[m], k)


def _same_ndim(x, *rest, **kw):
    if not x.is_array:
        raise TypeError("needs an array")
    return K.array(x.ndim)


def _roll_kind(x, shift, axis=None):
    if isinstance(shift, K.Kind) and shift.cls != "int":
        raise TypeError("np.roll: the shift must be an int or a tuple of ints")
    if isinstance(axis, tuple) != isinstance(shift, tuple):
        raise TypeError("np.roll: shift and axis must both be ints or both tuples")
    if not isinstance(axis, tuple):
        _axis_value(x, axis, "np.roll")
    return _same_ndim(x)


def _roll(result, x, shift, axis=None):
    d[x] += roll_adjoint(d[result], shift, axis)


_library(np.roll, "np_roll", _roll, _roll_kind)


@register_tangent(np.roll)
def _roll_tangent(result, x, shift, axis=None):
    d[result] += np.roll(d[x], shift, axis)


def _flip_kind(m, axis=None):
    if not isinstance(axis, tuple):
        _axis_value(m, axis, "np.flip")
    return _same_ndim(m)


def _flip(result, m, axis=None):
    d[m] += np_flip(d[result], axis)


def _flipud(result, m):
    d[m] += np.flipud(d[result])


def _fliplr(result, m):
    d[m] += np.fliplr(d[result])


_library(np.flip, "np_flip", _flip, _flip_kind)
_library(np.flipud, None, _flipud, _same_ndim)
_library(np.fliplr, None, _fliplr, _matrix_kind("np.fliplr", 2))


@register_tangent(np.flip)
def _flip_tangent(result, m, axis=None):
    d[result] += np.flip(d[m], axis)


@register_tangent(np.flipud)
def _flipud_tangent(result, m):
    d[result] += np.flipud(d[m])


@register_tangent(np.fliplr)
def _fliplr_tangent(result, m):
    d[result] += np.fliplr(d[m])


def _rot90_kind(m, k=1, axes=(0, 1)):
    if isinstance(k, K.Kind) or not isinstance(axes, tuple):
        raise TypeError("np.rot90: k and axes must be constants")
    return _same_ndim(m)


def _rot90(result, m, k=1, axes=(0, 1)):
    d[m] += np_rot90(d[result], -k, axes)


_library(np.rot90, "np_rot90", _rot90, _rot90_kind)


@register_tangent(np.rot90)
def _rot90_tangent(result, m, k=1, axes=(0, 1)):
    d[result] += np.rot90(d[m], k, axes)


def _repeat_kind(a, repeats, axis=None):
    if not (isinstance(repeats, int) or (isinstance(repeats, K.Kind) and repeats.cls == "int")):
        raise TypeError("np.repeat: repeats must be one int (per-element counts are not supported)")
    if _axis_value(a, axis, "np.repeat") is None:
        return K.array(1)
    return K.array(a.ndim)


def _repeat(result, a, repeats, axis=None):
    d[a] += repeat_adjoint(d[result], a, repeats, axis)


_library(np.repeat, "np_repeat", _repeat, _repeat_kind)


@register_tangent(np.repeat)
def _repeat_tangent(result, a, repeats, axis=None):
    d[result] += np.repeat(d[a], repeats, axis)


def _tile_kind(a, reps):
    if isinstance(reps, K.Kind):
        if reps.cls == "tuple":
            return K.array(max(a.ndim if a.is_array else 0, len(reps.items)))
        return K.array(max(a.ndim if a.is_array else 0, 1))
    count = len(reps) if isinstance(reps, tuple) else 1
    return K.array(max(a.ndim if a.is_array else 0, count))


def _tile(result, a, reps):
    d[a] += tile_adjoint(d[result], a, reps)


_library(np.tile, "np_tile", _tile, _tile_kind)


@register_tangent(np.tile)
def _tile_tangent(result, a, reps):
    d[result] += np.tile(d[a], reps)


def _squeeze_kind(a, axis=None):
    if axis is None or isinstance(axis, K.Kind):
        raise TypeError("np.squeeze needs a constant axis= (srcgrad specializes on the number of "
                        "dimensions, and without axis it depends on the shape)")
    count = len(axis) if isinstance(axis, tuple) else 1
    return K.array(a.ndim - count)


def _squeeze(result, a, axis=None):
    d[a] += reshape_any(d[result], a.shape)


_library(np.squeeze, "np_squeeze", _squeeze, _squeeze_kind)


@register_tangent(np.squeeze)
def _squeeze_tangent(result, a, axis=None):
    d[result] += np.squeeze(d[a], axis)


def _swapaxes(result, a, axis1, axis2):
    d[a] += np.swapaxes(d[result], axis1, axis2)


def _moveaxis(result, a, source, destination):
    d[a] += np.moveaxis(d[result], destination, source)


_library(np.swapaxes, None, _swapaxes, _same_ndim)
_library(np.moveaxis, None, _moveaxis, _same_ndim)


@register_tangent(np.swapaxes)
def _swapaxes_tangent(result, a, axis1, axis2):
    d[result] += np.swapaxes(d[a], axis1, axis2)


@register_tangent(np.moveaxis)
def _moveaxis_tangent(result, a, source, destination):
    d[result] += np.moveaxis(d[a], source, destination)


def _append_kind(arr, values, axis=None):
    if axis is None:
        return K.array(1)
    return K.array(arr.ndim)


def _append(result, arr, values, axis=None):
    d[arr] += append_part(d[result], arr, values, axis, 0)
    d[values] += append_part(d[result], arr, values, axis, 1)


_library(np.append, None, _append, _append_kind)


@register_tangent(np.append)
def _append_tangent(result, arr, values, axis=None):
    d[result] += np.append(d[arr], np.zeros_like(values), axis)
    d[result] += np.append(np.zeros_like(arr), d[values], axis)


def _pad_kind(array, pad_width, mode="constant", constant_values=0.0, **kw):
    if mode != "constant" or kw:
        raise TypeError("np.pad is supported with mode='constant' (and constant_values)")
    if isinstance(pad_width, K.Kind) and pad_width.cls not in ("int", "tuple"):
        raise TypeError("np.pad: pad_width must be an int or a tuple")
    return _same_ndim(array)


def _pad(result, array, pad_width, mode="constant", constant_values=0.0):
    d[array] += pad_adjoint(d[result], array, pad_width)
    d[constant_values] += np.sum(d[result]) - np.sum(pad_adjoint(d[result], array, pad_width))


_library(np.pad, "np_pad", _pad, _pad_kind)


# the padding's tangent is the constant's: 1 where padded, 0 on the array
@register_tangent(np.pad)
def _pad_tangent(result, array, pad_width, mode="constant", constant_values=0.0):
    d[result] += np.pad(d[array], pad_width)
    d[result] += d[constant_values] * np.pad(np.zeros_like(array), pad_width, constant_values=1.0)


def _sort_kind(a, axis=-1, kind=None, order=None):
    if order is not None or (kind is not None and kind != "stable"):
        raise TypeError("np.sort: only axis (and kind='stable') are supported")
    if _axis_value(a, axis, "np.sort") is None:
        return K.array(1)
    return _same_ndim(a)


def _sort(result, a, axis=-1, kind=None, order=None):
    d[a] += sort_adjoint(d[result], a, axis)


_library(np.sort, "np_sort", _sort, _sort_kind)


# the tangent is gathered in sorted order (runtime.sort_tangent); for hvp, its adjoint in the
# tangent is sort_adjoint, and the order itself is piecewise constant in x (no term)
@register_tangent(np.sort)
def _sort_tangent(result, a, axis=-1, kind=None, order=None):
    d[result] += sort_tangent(d[a], a, axis)


def _sort_tangent_adjoint(result, tangent, x, axis):
    d[tangent] += sort_adjoint(d[result], x, axis)


_register_rule([sort_tangent], _sort_tangent_adjoint, elementwise=False,
               kind=lambda tangent, x, axis: K.array(1) if axis is None else _same_ndim(x))


def _linspace_kind(start, stop, num=50, endpoint=True, **kw):
    if kw or endpoint is not True:
        raise TypeError("np.linspace: only start, stop and num are supported")
    for v in (start, stop):
        if isinstance(v, K.Kind) and v.is_array:
            raise TypeError("np.linspace: start and stop must be scalars")
    return K.array(1)


def _linspace(result, start, stop, num=50, endpoint=True):
    t = np.linspace(0.0, 1.0, num)
    d[start] += np.sum(d[result] * (1.0 - t))
    d[stop] += np.sum(d[result] * t)


_library(np.linspace, None, _linspace, _linspace_kind)


@register_tangent(np.linspace)
def _linspace_tangent(result, start, stop, num=50, endpoint=True):
    t = np.linspace(0.0, 1.0, num)
    d[result] += d[start] * (1.0 - t)
    d[result] += d[stop] * t


def _meshgrid_kind(x, y, indexing="xy", **kw):
    if kw or indexing not in ("xy", "ij"):
        raise TypeError("np.meshgrid is supported for two 1-d arrays (and indexing='xy'/'ij')")
    if not (x.is_array and y.is_array and x.ndim == 1 and y.ndim == 1):
        raise TypeError("np.meshgrid is supported for two 1-d arrays")
    return K.tuple_of([K.array(2), K.array(2)])


def _meshgrid(result, x, y, indexing="xy"):
    d[x] += meshgrid_adjoint(d[result], 0, indexing)
    d[y] += meshgrid_adjoint(d[result], 1, indexing)


_library(np.meshgrid, "np_meshgrid", _meshgrid, _meshgrid_kind)


@register_tangent(np.meshgrid)          # linear: the grids of the tangents
def _meshgrid_tangent(result, x, y, indexing="xy"):
    d[result] += np.meshgrid(d[x], d[y], indexing=indexing)


def _split_kind(what):
    def kind(ary, indices_or_sections, axis=0):
        _axis_value(ary, axis, what)
        if isinstance(indices_or_sections, int):
            count = indices_or_sections
        elif isinstance(indices_or_sections, tuple):
            count = len(indices_or_sections) + 1
        else:
            raise TypeError(f"{what}: the number of sections (or the split indices) must be a "
                            "constant (it decides how many arrays come back)")
        return K.tuple_of([K.array(ary.ndim)] * count)
    return kind


def _split(result, ary, indices_or_sections, axis=0):
    d[ary] += split_adjoint(d[result], ary, axis)


def _vsplit(result, ary, indices_or_sections):
    d[ary] += split_adjoint(d[result], ary, 0)


def _hsplit(result, ary, indices_or_sections):
    d[ary] += split_adjoint(d[result], ary, 1 if ary.ndim > 1 else 0)


_library(np.split, "np_split", _split, _split_kind("np.split"))
_library(np.array_split, "np_array_split", _split, _split_kind("np.array_split"))
_library(np.vsplit, "np_split", _vsplit, _split_kind("np.vsplit"))
_library(np.hsplit, "np_hsplit", _hsplit, _split_kind("np.hsplit"))


@register_tangent(np.split, np.array_split)
def _split_tangent(result, ary, indices_or_sections, axis=0):
    d[result] += np.split(d[ary], indices_or_sections, axis)

TUPLE_ARGUMENT_RULES[np.vstack] = "vstack_part"
LIBRARY_CALLS[np.vstack] = "np_vstack"        # Numba's needs parts of one ndim (1-d parts are rows)
CREATION |= {np.eye, np.identity}
TUPLE_ARGUMENT_RULES[np.hstack] = "hstack_part"


# --- products -----------------------------------------------------------------------------------

from .runtime import (einsum_adjoint, inner_adjoint, kron_adjoint, tensordot_adjoint,  # noqa: E402,F401
                      _einsum_parts, _tensordot_axes)


def _einsum_kind(subscripts, *operands, **kw):
    if kw:
        raise TypeError("np.einsum: keyword arguments are not supported")
    if not isinstance(subscripts, str):
        raise TypeError("np.einsum needs the subscripts as a constant string")
    try:
        inputs, output = _einsum_parts(subscripts, len(operands))
    except ValueError as exc:
        raise TypeError(str(exc)) from None
    for spec, operand in zip(inputs, operands):
        if len(set(spec)) != len(spec):
            raise TypeError(f"np.einsum: a repeated index inside one operand ({spec!r}, a diagonal) "
                            "is not supported")
        if len(spec) != (operand.ndim if operand.is_array else 0):
            raise TypeError(f"np.einsum: subscripts {spec!r} for a {operand.ndim}-d operand")
    return K.array(len(output))


def _einsum2(result, subscripts, a, b):
    d[a] += einsum_adjoint(d[result], subscripts, 0, a, b)
    d[b] += einsum_adjoint(d[result], subscripts, 1, a, b)


def _einsum1(result, subscripts, a):
    d[a] += einsum_adjoint(d[result], subscripts, 0, a)


def _einsum3(result, subscripts, a, b, c):
    d[a] += einsum_adjoint(d[result], subscripts, 0, a, b, c)
    d[b] += einsum_adjoint(d[result], subscripts, 1, a, b, c)
    d[c] += einsum_adjoint(d[result], subscripts, 2, a, b, c)


class _EinsumRule(Rule):
    """np.einsum with one, two or three operands: the template that matches the call."""

    def __init__(self):
        super().__init__(_einsum2, kind=_einsum_kind, elementwise=False, name="einsum")
        self.literal_args = True
        self._by_count = {1: Rule(_einsum1, elementwise=False), 2: Rule(_einsum2, elementwise=False),
                          3: Rule(_einsum3, elementwise=False)}

    def bind(self, result, args, keywords):
        rule = self._by_count.get(len(args) - 1)
        if rule is None:
            raise SrcgradError("np.einsum is supported with one, two or three operands")
        self.body = rule.body
        return rule.bind(result, args, keywords)


REGISTRY[np.einsum] = _EinsumRule()
LIBRARY_CALLS[np.einsum] = "np_einsum"


# einsum is multilinear: one term per varying operand, the same subscripts
def _einsum2_tangent(result, subscripts, a, b):
    d[result] += np.einsum(subscripts, d[a], b)
    d[result] += np.einsum(subscripts, a, d[b])


def _einsum1_tangent(result, subscripts, a):
    d[result] += np.einsum(subscripts, d[a])


def _einsum3_tangent(result, subscripts, a, b, c):
    d[result] += np.einsum(subscripts, d[a], b, c)
    d[result] += np.einsum(subscripts, a, d[b], c)
    d[result] += np.einsum(subscripts, a, b, d[c])


class _EinsumTangent(TangentRule):
    """The tangent template that matches the call's operand count (as _EinsumRule does)."""

    def __init__(self):
        super().__init__(_einsum2_tangent)
        self.name = "einsum_tangent"
        self._by_count = {1: TangentRule(_einsum1_tangent), 2: TangentRule(_einsum2_tangent),
                          3: TangentRule(_einsum3_tangent)}

    def bind(self, result, args, keywords):
        rule = self._by_count.get(len(args) - 1)
        if rule is None:
            raise SrcgradError("np.einsum is supported with one, two or three operands")
        self.body = rule.body
        return rule.bind(result, args, keywords)


REGISTRY[np.einsum].tangent = _EinsumTangent()


def _tensordot_kind(a, b, axes=2):
    if isinstance(axes, K.Kind):         # a pair of tuples of axes (written to temporaries)
        if not (axes.cls == "tuple" and len(axes.items) == 2
                and all(item.cls in ("tuple", "int") for item in axes.items)):
            raise TypeError("np.tensordot: axes must be an int or a pair of (tuples of) ints")
        count = [len(item.items) if item.cls == "tuple" else 1 for item in axes.items]
        if count[0] != count[1]:
            raise TypeError("np.tensordot: the two axis lists differ in length")
        return K.array(a.ndim + b.ndim - 2 * count[0])
    a_axes, b_axes = _tensordot_axes(a.ndim, b.ndim, axes)
    return K.array(a.ndim + b.ndim - len(a_axes) - len(b_axes))


def _tensordot(result, a, b, axes=2):
    d[a] += tensordot_adjoint(d[result], a, b, axes, 0)
    d[b] += tensordot_adjoint(d[result], a, b, axes, 1)


_library(np.tensordot, "np_tensordot", _tensordot, _tensordot_kind)


@register_tangent(np.tensordot)
def _tensordot_tangent(result, a, b, axes=2):
    d[result] += np.tensordot(d[a], b, axes)
    d[result] += np.tensordot(a, d[b], axes)


def _inner_kind(a, b):
    if not a.is_array or not b.is_array:
        return K.array(max(a.ndim, b.ndim))
    return K.array(a.ndim + b.ndim - 2)


def _inner(result, a, b):
    d[a] += inner_adjoint(d[result], a, b, 0)
    d[b] += inner_adjoint(d[result], a, b, 1)


_library(np.inner, "np_inner", _inner, _inner_kind)


@register_tangent(np.inner)
def _inner_tangent(result, a, b):
    d[result] += np.inner(d[a], b)
    d[result] += np.inner(a, d[b])


def _kron_kind(a, b):
    if not (a.is_array and b.is_array and a.ndim == b.ndim and a.ndim in (1, 2)):
        raise TypeError("np.kron is supported for two vectors or two matrices")
    return K.array(a.ndim)


def _kron(result, a, b):
    d[a] += kron_adjoint(d[result], a, b, 0)
    d[b] += kron_adjoint(d[result], a, b, 1)


_library(np.kron, "np_kron", _kron, _kron_kind)


@register_tangent(np.kron)
def _kron_tangent(result, a, b):
    d[result] += np.kron(d[a], b)
    d[result] += np.kron(a, d[b])


def _cross_kind(a, b, **kw):
    if kw:
        raise TypeError("np.cross: the axis arguments are not supported (vectors are the last axis)")
    return K.broadcast(a, b, dtype="float")


# the cross product is bilinear: d a = b x g, d b = g x a (broadcast operands are summed back)
def _cross(result, a, b):
    d[a] += np.cross(b, d[result])
    d[b] += np.cross(d[result], a)


_register_rule([np.cross], _cross, kind=_cross_kind)


@register_tangent(np.cross)
def _cross_tangent(result, a, b):
    d[result] += np.cross(d[a], b)
    d[result] += np.cross(a, d[b])


# --- linear algebra (np.linalg) -----------------------------------------------------------------

from .runtime import cholesky_adjoint, eigh_adjoint, norm_adjoint, slogdet_adjoint  # noqa: E402,F401


def _square_kind(what, make):
    def kind(a, *rest, **kw):
        if kw:
            raise TypeError(f"{what}: keyword arguments are not supported")
        if not (a.is_array and a.ndim == 2):
            raise TypeError(f"{what} is supported for one square matrix (2-d array)")
        return make(a, *rest)
    return kind


def _inv(result, a):
    d[a] -= result.T @ d[result] @ result.T


def _solve(result, a, b):
    gb = np.linalg.solve(a.T, d[result])
    d[b] += gb
    d[a] -= matmul_grad_left(gb, a, result)


def _det(result, a):
    d[a] += d[result] * result * np.linalg.inv(a).T


def _slogdet(result, a):
    d[a] += slogdet_adjoint(d[result], a)


def _cholesky(result, a):
    d[a] += cholesky_adjoint(d[result], result)


def _eigh(result, a):
    d[a] += eigh_adjoint(d[result], result[0], result[1])


def _solve_kind(a, b, **kw):
    if kw or not (a.is_array and a.ndim == 2 and b.is_array and b.ndim in (1, 2)):
        raise TypeError("np.linalg.solve is supported for a matrix and a vector or matrix")
    return K.array(b.ndim)


_library(np.linalg.inv, None, _inv, _square_kind("np.linalg.inv", lambda a: K.array(2)))
_library(np.linalg.solve, None, _solve, _solve_kind)
_library(np.linalg.det, None, _det, _square_kind("np.linalg.det", lambda a: K.FLOAT))
_library(np.linalg.slogdet, None, _slogdet,
         _square_kind("np.linalg.slogdet", lambda a: K.tuple_of([K.FLOAT, K.FLOAT])))
_library(np.linalg.cholesky, None, _cholesky, _square_kind("np.linalg.cholesky", lambda a: K.array(2)))
_library(np.linalg.eigh, None, _eigh,
         _square_kind("np.linalg.eigh", lambda a: K.tuple_of([K.array(1), K.array(2)])))


# Forward mode. The tangents are written with functions that have adjoint templates, so hvp
# (reverse mode over them) works too.
@register_tangent(np.linalg.inv)
def _inv_tangent(result, a):
    d[result] -= result @ d[a] @ result


@register_tangent(np.linalg.solve)
def _solve_tangent(result, a, b):
    d[result] += np.linalg.solve(a, d[b])
    d[result] -= np.linalg.solve(a, d[a] @ result)


# d det A = det A tr(A^-1 dA); d log|det A| = tr(A^-1 dA) (the sign does not vary)
@register_tangent(np.linalg.det)
def _det_tangent(result, a):
    d[result] += result * np.trace(np.linalg.solve(a, d[a]))


@register_tangent(np.linalg.slogdet)
def _slogdet_tangent(result, a):
    d[result] += (0.0, np.trace(np.linalg.solve(a, d[a])))


# L = cholesky(A): dL = L Phi(L^-1 dA L^-T), Phi = the lower triangle with the diagonal halved.
# np.linalg.cholesky reads only A's lower triangle, so dA is the symmetric matrix made from it.
@register_tangent(np.linalg.cholesky)
def _cholesky_tangent(result, a):
    da = np.tril(d[a]) + np.tril(d[a], -1).T
    p = np.linalg.solve(result, np.linalg.solve(result, da).T)
    d[result] += result @ (np.tril(p) - 0.5 * p * np.eye(a.shape[0]))


# (w, V) = eigh(A), distinct eigenvalues: with P = V^T dA V, dw = diag(P) and dV = V (F o P),
# F_ij = 1 / (w_j - w_i) off the diagonal, 0 on it. eigh reads A's lower triangle (as cholesky).
@register_tangent(np.linalg.eigh)
def _eigh_tangent(result, a):
    w = result[0]
    v = result[1]
    da = np.tril(d[a]) + np.tril(d[a], -1).T
    p = v.T @ da @ v
    f = 1.0 / (w - np.reshape(w, (a.shape[0], 1)) + np.eye(a.shape[0])) - np.eye(a.shape[0])
    d[result] += (np.diag(p), v @ (f * p))


def _norm_kind(x, ord=None, axis=None, keepdims=False):
    if not x.is_array:
        raise TypeError("np.linalg.norm needs an array")
    frobenius = ord is None or ord == "fro" or (ord == 2 and (x.ndim == 1 or axis is not None))
    if not frobenius:
        raise TypeError("np.linalg.norm is supported for the 2-norm of vectors and the Frobenius "
                        "norm of arrays (ord=None, 'fro', or 2 for vectors)")
    _axis_value(x, axis, "np.linalg.norm")
    return reduction_kind(x, axis, keepdims)


def _norm(result, x, ord=None, axis=None, keepdims=False):
    d[x] += norm_adjoint(d[result], x, result, axis, keepdims)


_library(np.linalg.norm, "np_norm", _norm, _norm_kind)


@register_tangent(np.linalg.norm)
def _norm_tangent(result, x, ord=None, axis=None, keepdims=False):
    d[result] += np.sum(x * d[x], axis=axis, keepdims=keepdims) / result


# --- scipy.special and scipy.stats --------------------------------------------------------------
# Registered on first use (importing scipy.stats takes about a second): lookup() and
# library_helper() call _register_scipy() when they meet a function they do not know.

from .runtime import (logsumexp_adjoint, stats_mvn_logpdf_adjoint, special_digamma,  # noqa: E402,F401
                      special_polygamma1, stats_t_logpdf_adjoint)
from .runtime import special_polygamma2  # noqa: E402,F401

_SCIPY_REGISTERED = []


def _logsumexp_kind(a, axis=None, b=None, keepdims=False, return_sign=False):
    if b is not None or return_sign is not False:
        raise TypeError("scipy.special.logsumexp: the b and return_sign arguments are not supported")
    _axis_value(a, axis, "logsumexp")
    return reduction_kind(a, axis, keepdims)


def _logsumexp(result, a, axis=None, b=None, keepdims=False, return_sign=False):
    d[a] += logsumexp_adjoint(d[result], a, result, axis, keepdims)


# the softmax-weighted sum of the tangent (weights shifted by the max: it cancels in the ratio)
def _logsumexp_tangent(result, a, axis=None, b=None, keepdims=False, return_sign=False):
    w = np.exp(a - np.max(a, axis=axis, keepdims=True))
    d[result] += np.sum(d[a] * w, axis=axis, keepdims=keepdims) / np.sum(w, axis=axis, keepdims=keepdims)


def _expit(result, x):
    d[x] += d[result] * result * (1.0 - result)


def _expit_tangent(result, x):
    d[result] += d[x] * result * (1.0 - result)


def _logit(result, x):
    d[x] += d[result] / (x * (1.0 - x))


def _logit_tangent(result, x):
    d[result] += d[x] / (x * (1.0 - x))


def _erf(result, x):
    d[x] += d[result] * 1.1283791670955126 * np.exp(-x * x)       # 2 / sqrt(pi)


def _erf_tangent(result, x):
    d[result] += d[x] * 1.1283791670955126 * np.exp(-x * x)


def _erfc(result, x):
    d[x] -= d[result] * 1.1283791670955126 * np.exp(-x * x)


def _erfc_tangent(result, x):
    d[result] -= d[x] * 1.1283791670955126 * np.exp(-x * x)


def _gammaln(result, x):
    d[x] += d[result] * special_digamma(x)


def _gammaln_tangent(result, x):
    d[result] += d[x] * special_digamma(x)


def _digamma(result, x):
    d[x] += d[result] * special_polygamma1(x)


def _digamma_tangent(result, x):
    d[result] += d[x] * special_polygamma1(x)


# hvp differentiates the tangents above again: digamma (runtime helper) has the trigamma as
# derivative, the trigamma the tetragamma (polygamma(2, x)); the tetragamma's own derivative is
# not provided (third derivatives through digamma: a clear error, not a wrong answer)
@register_adjoint(special_digamma)
def _special_digamma(result, x):
    d[x] += d[result] * special_polygamma1(x)


@register_adjoint(special_polygamma1)
def _special_polygamma1(result, x):
    d[x] += d[result] * special_polygamma2(x)


class _NoThirdDerivative(Rule):
    def bind(self, result, args, keywords):
        raise SrcgradError("the derivative of the tetragamma function (polygamma(3, x)) is not "
                           "supported: third derivatives through scipy.special.digamma are not "
                           "available")


def _special_polygamma2(result, x):
    d[x] += d[result]         # (never generated: bind refuses)


REGISTRY[special_polygamma2] = _NoThirdDerivative(_special_polygamma2)


def _betaln(result, a, b):
    ab = special_digamma(a + b)
    d[a] += d[result] * (special_digamma(a) - ab)
    d[b] += d[result] * (special_digamma(b) - ab)


def _betaln_tangent(result, a, b):
    ab = special_digamma(a + b)
    d[result] += d[a] * (special_digamma(a) - ab)
    d[result] += d[b] * (special_digamma(b) - ab)


def _stats_kind(*args, **kw):
    for value in list(args) + list(kw.values()):
        if not isinstance(value, (K.Kind, int, float)):
            raise TypeError(f"unsupported argument {value!r}")
    kinds = [v if isinstance(v, K.Kind) else K.FLOAT for v in list(args) + list(kw.values())]
    return K.broadcast(*kinds, dtype="float")


# log N(x; loc, scale^2) with z = (x - loc) / scale: d/dx = -z / scale, d/dscale = (z^2 - 1) / scale
def _norm_logpdf(result, x, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    d[x] -= d[result] * z / scale
    d[loc] += d[result] * z / scale
    d[scale] += d[result] * (z * z - 1.0) / scale


def _norm_logpdf_tangent(result, x, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    d[result] -= d[x] * z / scale
    d[result] += d[loc] * z / scale
    d[result] += d[scale] * (z * z - 1.0) / scale


def _norm_pdf(result, x, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    d[x] -= d[result] * result * z / scale
    d[loc] += d[result] * result * z / scale
    d[scale] += d[result] * result * (z * z - 1.0) / scale


def _norm_pdf_tangent(result, x, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    d[result] -= d[x] * result * z / scale
    d[result] += d[loc] * result * z / scale
    d[result] += d[scale] * result * (z * z - 1.0) / scale


def _norm_cdf(result, x, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    density = np.exp(-0.5 * z * z) * 0.3989422804014327 / scale      # 1 / sqrt(2 pi)
    d[x] += d[result] * density
    d[loc] -= d[result] * density
    d[scale] -= d[result] * density * z


def _norm_cdf_tangent(result, x, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    density = np.exp(-0.5 * z * z) * 0.3989422804014327 / scale
    d[result] += d[x] * density
    d[result] -= d[loc] * density
    d[result] -= d[scale] * density * z


def _t_logpdf(result, x, df, loc=0.0, scale=1.0):
    d[x] += stats_t_logpdf_adjoint(d[result], x, df, loc, scale, 0)
    d[df] += stats_t_logpdf_adjoint(d[result], x, df, loc, scale, 1)
    d[loc] += stats_t_logpdf_adjoint(d[result], x, df, loc, scale, 2)
    d[scale] += stats_t_logpdf_adjoint(d[result], x, df, loc, scale, 3)


# log t(x; v, loc, s) = gammaln((v+1)/2) - gammaln(v/2) - log(v pi)/2 - log s - (v+1)/2 log(1 + z^2/v)
# with z = (x - loc) / s; written with plain NumPy and special_digamma (both differentiable: hvp)
def _t_logpdf_tangent(result, x, df, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    q = (df + 1.0) * z / (scale * (df + z * z))
    d[result] -= d[x] * q
    d[result] += d[loc] * q
    d[result] += d[scale] * (q * z - 1.0 / scale)
    d[result] += d[df] * (0.5 * (special_digamma(0.5 * df + 0.5) - special_digamma(0.5 * df)) - 0.5 / df
                          - 0.5 * np.log1p(z * z / df) + 0.5 * (df + 1.0) * z * z / (df * (df + z * z)))


def _mvn_kind(x, mean, cov, **kw):
    if kw or not (x.is_array and x.ndim in (1, 2) and mean.is_array and mean.ndim == 1
                  and cov.is_array and cov.ndim == 2):
        raise TypeError("multivariate_normal.logpdf is supported as logpdf(x, mean, cov) with x one "
                        "point (1-d) or one point per row (2-d), mean 1-d and cov 2-d")
    return K.array(x.ndim - 1)


def _mvn_logpdf(result, x, mean, cov):
    d[x] += stats_mvn_logpdf_adjoint(d[result], x, mean, cov, 0)
    d[mean] += stats_mvn_logpdf_adjoint(d[result], x, mean, cov, 1)
    d[cov] += stats_mvn_logpdf_adjoint(d[result], x, mean, cov, 2)


# with alpha = cov^-1 (x - mean) per point: d log N = -alpha.dx + alpha.dmean
# + (alpha^T dcov alpha - tr(cov^-1 dcov)) / 2 (the adjoint's symmetric gradient, paired with dcov)
def _mvn_logpdf_tangent(result, x, mean, cov):
    alpha = np.linalg.solve(cov, (x - mean).T).T
    d[result] -= np.sum(d[x] * alpha, axis=-1)
    d[result] += np.sum(d[mean] * alpha, axis=-1)
    d[result] += 0.5 * (np.sum((alpha @ d[cov]) * alpha, axis=-1) - np.sum(np.linalg.inv(cov) * d[cov]))


def _register_scipy():
    """Register the scipy.special and scipy.stats rules (once); True when something was added."""
    if _SCIPY_REGISTERED:
        return False
    _SCIPY_REGISTERED.append(True)
    import scipy.special as special
    import scipy.stats as stats
    unary = elementwise_kind
    _library(special.logsumexp, "special_logsumexp", _logsumexp, _logsumexp_kind)
    register_tangent(special.logsumexp)(_logsumexp_tangent)
    _library(special.expit, "special_expit", _expit, unary, elementwise=True)
    register_tangent(special.expit)(_expit_tangent)
    _library(special.logit, "special_logit", _logit, unary, elementwise=True)
    register_tangent(special.logit)(_logit_tangent)
    _library(special.erf, "special_erf", _erf, unary, elementwise=True)
    register_tangent(special.erf)(_erf_tangent)
    _library(special.erfc, "special_erfc", _erfc, unary, elementwise=True)
    register_tangent(special.erfc)(_erfc_tangent)
    _library(special.gammaln, "special_gammaln", _gammaln, unary, elementwise=True)
    register_tangent(special.gammaln)(_gammaln_tangent)
    _library(special.digamma, "special_digamma", _digamma, unary, elementwise=True)
    register_tangent(special.digamma)(_digamma_tangent)
    _library(special.psi, "special_digamma", _digamma, unary, elementwise=True)
    register_tangent(special.psi)(_digamma_tangent)
    _library(special.betaln, "special_betaln", _betaln, unary, elementwise=True)
    register_tangent(special.betaln)(_betaln_tangent)
    _library(stats.norm.logpdf, "stats_norm_logpdf", _norm_logpdf, _stats_kind, elementwise=True)
    register_tangent(stats.norm.logpdf)(_norm_logpdf_tangent)
    _library(stats.norm.pdf, "stats_norm_pdf", _norm_pdf, _stats_kind, elementwise=True)
    register_tangent(stats.norm.pdf)(_norm_pdf_tangent)
    _library(stats.norm.cdf, "stats_norm_cdf", _norm_cdf, _stats_kind, elementwise=True)
    register_tangent(stats.norm.cdf)(_norm_cdf_tangent)
    _library(stats.t.logpdf, "stats_t_logpdf", _t_logpdf, _stats_kind, elementwise=True)
    register_tangent(stats.t.logpdf)(_t_logpdf_tangent)
    _library(stats.multivariate_normal.logpdf, "stats_mvn_logpdf", _mvn_logpdf, _mvn_kind)
    register_tangent(stats.multivariate_normal.logpdf)(_mvn_logpdf_tangent)
    return True


def _is_scipy(function):
    module = getattr(function, "__module__", None) or ""
    owner = getattr(function, "__self__", None)
    if isinstance(function, np.ufunc) and not module:       # scipy.special's ufuncs (erf, expit...)
        import sys                                            # have no __module__
        special = sys.modules.get("scipy.special")
        return special is not None and getattr(special, function.__name__, None) is function
    return module.startswith("scipy.") or type(owner).__module__.startswith("scipy.")


_plain_lookup = lookup


def lookup(function):      # noqa: F811  (the registry lookup, registering SciPy's rules on demand)
    rule = _plain_lookup(function)
    if rule is None and not _SCIPY_REGISTERED and _is_scipy(function) and _register_scipy():
        rule = _plain_lookup(function)
    return rule


# --- random sampling: refused with a message that says what to do instead ---------------------

def random_sampling_message(callee):
    """The error text for a call of a NumPy random sampler, or None for other callees."""
    owner = getattr(callee, "__self__", None)
    module = getattr(callee, "__module__", None) or ""
    if isinstance(owner, (np.random.RandomState, np.random.Generator)) or module.startswith("numpy.random"):
        return (f"random sampling (np.random.{getattr(callee, '__name__', '?')}) inside a "
                "differentiated function is not supported: draw the samples outside and pass them "
                "in as an argument (data)")
    return None


# --- functions the cpu target does not compile (yet): refused when the function is specialized ---

CPU_REFUSED = {
    np.einsum: "np.einsum is supported on the python target only (its cpu version would need a "
               "loop nest per subscripts string); use `@`/np.dot/np.sum, or target='python'",
    np.tensordot: "np.tensordot is supported on the python target only; use `@`/np.dot and "
                  "reshapes, or target='python'",
    np.inner: "np.inner is supported on the python target only; use `@`/np.dot, or target='python'",
}


def cpu_refusal(callee):
    """Why the cpu target refuses ``callee``, or None."""
    try:
        return CPU_REFUSED.get(_key(callee))
    except TypeError:
        return None
