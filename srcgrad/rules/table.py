"""The one table of derivative rules (``REGISTRY``) and how templates are registered in it.

The rule families (elementwise, arrays, numpy_calls, linalg, scipy_rules) register their templates
here when :mod:`srcgrad.rules` is imported; users add theirs with the same functions.
"""
import ast
import inspect
import os
import textwrap

from .. import kinds as K
from ..errors import SrcgradError
from .callees import _is_scipy, _key, _register_scipy, declare


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
        # srcgrad's own templates are parsed on first use (a warm process that loads its gradients
        # from the cache never reads them); a user's template at once, so that its errors show at
        # registration
        self._body = None if _in_srcgrad(template) else _parse_template(template)
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

    @property
    def body(self):
        if self._body is None:
            self._body = _parse_template(self.template, tangent=isinstance(self, TangentRule))
        return self._body

    @body.setter
    def body(self, statements):
        self._body = statements


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
        self._body = None if _in_srcgrad(template) else _parse_template(template, tangent=True)

    bind = Rule.bind
    body = Rule.body


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



_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _in_srcgrad(function):
    """Whether ``function`` is defined in one of srcgrad's own source files."""
    code = getattr(function, "__code__", None)
    return code is not None and os.path.abspath(code.co_filename).startswith(_PACKAGE_DIR)


def _source_or_name(function):
    """What of ``function`` goes into the registry fingerprint: its source, or, for srcgrad's own
    functions, its name and line (their source is already in the cache key, in
    ``codegen.implementation_hash``; reading it costs ~0.15 s of every ``import srcgrad``)."""
    if function is None:
        return "None"
    if _in_srcgrad(function):
        return f"{function.__module__}.{function.__qualname__}:{function.__code__.co_firstlineno}"
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"


def _label(function):
    """A name for a registered function that is the same in every process (no addresses)."""
    if isinstance(function, tuple):     # a method's key (class, function): scipy.stats.norm.logpdf
        owner, function = function
        return f"{_label(owner)}.{_label(function)}"
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


_SCIPY_REGISTERED = []      # SciPy's rules are registered on first use (scipy_rules._register_scipy)


def lookup(function):
    """The rule registered for ``function`` (registering SciPy's rules on demand), or None."""
    rule = REGISTRY.get(_key(function))
    if rule is None and not _SCIPY_REGISTERED and _is_scipy(function) and _register_scipy():
        rule = REGISTRY.get(_key(function))
    return rule


def _library(function, helper, template, kind, elementwise=False):
    """Register ``template`` for ``function`` whose primal runs as runtime helper ``helper``."""
    rule = Rule(template, kind=kind, elementwise=elementwise)
    rule.literal_args = True
    REGISTRY[_key(function)] = rule
    if helper is not None:
        declare(function, library_helper=helper)


def _register_rule(functions, template, kind=None, elementwise=True):
    rule = Rule(template, kind=kind, elementwise=elementwise)
    rule.literal_args = True
    for function in functions:
        REGISTRY[_key(function)] = rule


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


def _same_ndim(x, *rest, **kw):
    if not x.is_array:
        raise TypeError("needs an array")
    return K.array(x.ndim)
