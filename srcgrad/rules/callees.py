"""One lookup for what srcgrad knows about a callee besides its derivative template:
``facts(callee)`` says whether it creates arrays, has no derivative, cuts derivatives through an
int result, takes a tuple of arrays, runs as a runtime helper, what kind its result has (calls
without a template) and whether a target refuses it.

(The derivative templates themselves are in the one table, :data:`srcgrad.rules.table.REGISTRY`.
The names CREATION, NON_DIFFERENTIABLE, TUPLE_ARGUMENT_RULES, LIBRARY_CALLS and
CPU_REFUSED are views of this table, for code that reads them as dicts and sets.)
"""
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .. import kinds as K
from ..errors import SrcgradError


def _key(function):
    function = getattr(function, "py_func", function)
    if isinstance(function, types.MethodType):
        # a method of an object such as scipy.stats.norm: by class and function (a deep copy of
        # the code, which copies the object, still finds the rule)
        return (type(function.__self__), function.__func__)
    return function


# ================================================================================================
# One table of callee facts. Every stage that asks "what is this call?" (kinds, activity, the
# reverse and forward sweeps, lowering, the cpu target's refusals) reads facts(callee).
# ================================================================================================

@dataclass
class Callee:
    """What srcgrad knows about a callee besides its derivative template (rules.table.REGISTRY)."""
    creation: bool = False            # makes an array from a shape: the values never matter
    non_differentiable: bool = False  # fine on inactive values, no derivative on active ones
    value_cutting: bool = False       # its int/bool result would silently cut a derivative it reads
    result_kind: object = None        # kind function of the result (calls without a template)
    sequence_part: str = None         # takes a tuple of arrays: the runtime helper that cuts part k
    #                                   of the result's adjoint: d[parts[k]] += helper(d[result], k, parts, axis)
    library_helper: str = None        # generated code runs the call as this runtime helper instead
    cpu_refusal: str = None           # why the cpu target refuses the call (None: it compiles it)
    reduction: str = None             # a reduction with ``axis``/``keepdims``: lowering writes it as
    #                                   this runtime helper, ``reduce_sum(x, axis, keepdims)``


CALLEES = {}        # _key(callee) -> Callee
_NOTHING = Callee()


def declare(*callees, **facts):
    """Record facts about callees (``declare(np.zeros, creation=True)``); later calls add to them."""
    for callee in callees:
        entry = CALLEES.setdefault(_key(callee), Callee())
        for name, value in facts.items():
            if not hasattr(entry, name):
                raise TypeError(f"unknown callee fact {name!r}")
            setattr(entry, name, value)


def facts(callee):
    """Everything known about ``callee`` (a Callee with no facts set for a callee srcgrad does not
    know); SciPy's entries are registered on first use."""
    try:
        entry = CALLEES.get(_key(callee))
    except TypeError:           # unhashable callee
        return _NOTHING
    if entry is None and _is_scipy(callee) and _register_scipy():
        entry = CALLEES.get(_key(callee))
    return entry if entry is not None else _NOTHING


class _View(Mapping):
    """The callees that have one fact, read like the dict or set each fact once was
    (``callee in CREATION``, ``TUPLE_ARGUMENT_RULES.get(callee)``); writes declare the fact."""

    def __init__(self, fact):
        self.fact = fact

    def __getitem__(self, callee):
        value = getattr(facts(callee), self.fact)
        if value is None or value is False:
            raise KeyError(callee)
        return value

    def __iter__(self):
        return iter([key for key, entry in CALLEES.items() if getattr(entry, self.fact) not in (None, False)])

    def __len__(self):
        return sum(1 for _ in self)

    def __setitem__(self, callee, value):
        declare(callee, **{self.fact: value})

    def add(self, callee):
        declare(callee, **{self.fact: True})

    def __ior__(self, callees):
        for callee in callees:
            self.add(callee)
        return self


CREATION = _View("creation")
NON_DIFFERENTIABLE = _View("non_differentiable")
TUPLE_ARGUMENT_RULES = _View("sequence_part")
LIBRARY_CALLS = _View("library_helper")
CPU_REFUSED = _View("cpu_refusal")
REDUCTIONS = _View("reduction")         # lower.REDUCTIONS


# --- result kinds of calls without a derivative template ----------------------------------------

def _joined_ndim(parts, axis):
    if axis is None:        # NumPy flattens the parts first: another result, not differentiated
        raise TypeError("np.concatenate with axis=None (flattening) is not supported; "
                        "concatenate np.ravel(part)s instead")
    return parts.items[0].ndim


def _shape_ndim(shape):
    if shape.cls == "tuple":
        return len(shape.items)
    return 1


def _creation(shape, *rest, dtype=None, **kw):
    element = "float"
    if isinstance(dtype, K.Kind) or dtype is None:
        element = "float"
    return K.array(_shape_ndim(shape), element)


def _array_kind(x, *rest, **kw):
    """np.array / np.asarray of an array (a copy / itself), of a literal of scalars (1-d) or of
    a literal of arrays of one ndim (stacked along a new first axis)."""
    if x.cls != "tuple":
        return x
    items = x.items
    if not items:
        raise SrcgradError("np.array of an empty sequence")
    if all(item.is_scalar for item in items):
        element = "bool"
        for item in items:
            element = K.join_dtype(element, item.cls)
        return K.array(1, element)
    if all(item.is_array for item in items) and len({item.ndim for item in items}) == 1:
        element = "bool"
        for item in items:
            element = K.join_dtype(element, item.dtype)
        return K.array(items[0].ndim + 1, element)
    raise SrcgradError(f"np.array of a mix of scalars and arrays of different ndim ({x})")


def _like(x, *a, **k):
    return K.array(x.ndim, "float") if x.is_array else K.FLOAT


# --- the facts ----------------------------------------------------------------------------------

# Array creation: the result depends on the argument's shape, never on its values.
declare(np.zeros, np.ones, np.empty, np.full, creation=True, result_kind=_creation)
declare(np.zeros_like, np.ones_like, np.empty_like, np.full_like, creation=True, result_kind=_like)
declare(np.arange, creation=True,
        result_kind=lambda *a, **k: K.array(1, "int" if all(x.cls == "int" for x in a) else "float"))
declare(np.eye, np.identity, creation=True, result_kind=lambda *a, **k: K.array(2))
declare(np.array, np.asarray, result_kind=_array_kind)

# Functions that are fine on inactive values but have no derivative on active ones; those whose
# int/bool result would silently cut the derivative of an input it depends on are value-cutting
# (analyse refuses them in arithmetic that reaches the result).
declare(int, len, range, bool, round, np.argmax, np.argmin, np.argsort, np.isnan, np.isinf,
        np.isfinite, math.isnan, math.isinf, math.isfinite, np.shape, np.ndim, np.size,
        non_differentiable=True)
declare(int, round, bool, np.argmax, np.argmin, np.argsort, value_cutting=True)
declare(len, int, result_kind=lambda *a, **k: K.INT)
declare(bool, result_kind=lambda *a, **k: K.BOOL)
declare(round, result_kind=lambda *a, **k: K.INT if len(a) == 1 else K.FLOAT)
declare(np.isnan, np.isinf, np.isfinite, result_kind=lambda x, **k: K.broadcast(x, dtype="bool"))
declare(np.argmax, np.argmin, result_kind=lambda *a, **k: K.INT)

# Functions taking a tuple of arrays: the adjoint of element k of the tuple is a part of the
# result's adjoint, cut out by a runtime helper: ``d[parts[k]] += helper(d[result], k, parts, axis)``.
declare(np.concatenate, sequence_part="concat_part",      # the k-th block along `axis`
        result_kind=lambda parts, axis=0, **k: K.array(_joined_ndim(parts, axis)))
declare(np.stack, sequence_part="stack_part",             # the k-th index along the new `axis`
        result_kind=lambda parts, axis=0, **k: K.array(parts.items[0].ndim + 1))
declare(np.vstack, sequence_part="vstack_part",
        result_kind=lambda parts, **k: K.array(max(2, parts.items[0].ndim)))
declare(np.hstack, sequence_part="hstack_part", result_kind=lambda parts, **k: K.array(parts.items[0].ndim))

# NumPy and SciPy calls that generated code makes through a runtime helper (library_helper):
# NumPy calls Numba cannot compile as written (an ``axis`` it does not take) and SciPy functions
# (not plain Python for srcgrad to transform). The rule families declare most of them beside
# their templates (table._library).
declare(np.vstack, library_helper="np_vstack")     # Numba's needs parts of one ndim (1-d parts are rows)

# Reductions: with an ``axis`` or ``keepdims`` (which Numba's versions do not all take) lowering
# writes them as runtime helpers (srcgrad.lower)
declare(np.sum, reduction="reduce_sum")
declare(np.mean, reduction="reduce_mean")
declare(np.max, np.amax, reduction="reduce_max")
declare(np.min, np.amin, reduction="reduce_min")
declare(np.prod, reduction="reduce_prod")

# --- which callees are library functions, and what an array method stands for -----------------

# modules whose functions are library calls (derivative rules or errors), never user code
# (srcgrad.static.is_library_function)
LIBRARY_MODULES = ("numpy", "scipy", "math", "numba", "srcgrad", "builtins", "cmath", "operator")

# modules inside the srcgrad package that hold user programs (plain NumPy models that srcgrad
# differentiates, e.g. the MNIST MLP), not library code
USER_MODULES = ("srcgrad.training.mlp",)

# Methods users call on arrays, mapped to the NumPy function that takes the array first
# (the normalizer rewrites ``x.sum(1)`` as ``np.sum(x, 1)``)
ARRAY_METHODS = {
    "sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "prod": np.prod,
    "reshape": np.reshape, "copy": np.copy, "transpose": np.transpose, "ravel": np.ravel,
    "flatten": np.ravel, "dot": np.dot, "astype": "astype", "clip": np.clip,
}


def sequence_call_names():
    """The names of the calls whose first argument is a sequence of arrays (``concatenate``...):
    check.py accepts a list literal there, before names are resolved."""
    return {getattr(key, "__name__", None) for key in TUPLE_ARGUMENT_RULES} - {None}


def library_helper(callee):
    """The runtime helper generated code calls for ``callee``, or None (a plain NumPy call)."""
    return facts(callee).library_helper


def _is_scipy(function):
    module = getattr(function, "__module__", None) or ""
    owner = getattr(function, "__self__", None)
    if isinstance(function, np.ufunc) and not module:       # scipy.special's ufuncs (erf, expit...)
        import sys                                            # have no __module__
        special = sys.modules.get("scipy.special")
        return special is not None and getattr(special, function.__name__, None) is function
    return module.startswith("scipy.") or type(owner).__module__.startswith("scipy.")


# SciPy's rules are registered on first use: scipy_rules puts its loader here when imported
# (this module is below the rule families and imports none of them)
SCIPY_LOADER = []


def _register_scipy():
    """Register the SciPy rules now (once); True when something was added."""
    return bool(SCIPY_LOADER) and SCIPY_LOADER[0]()


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

# np.einsum with a constant subscripts string and no `...` or keywords is lowered before this
# check (normalize/einsum.py), so only the other forms reach this refusal
declare(np.einsum, cpu_refusal="np.einsum with keywords or a subscripts string that is not a constant "
        "is supported on the python target only (the cpu target compiles a constant subscripts "
        "string, as products and sums); use `@`/np.dot/np.sum, or target='python'")
# np.inner(a, b) and np.tensordot with constant axes are written as matrix products of reshapes
# by the cpu backend (backends/cpu/tensordots.py), so only the other forms reach these refusals
declare(np.tensordot, cpu_refusal="np.tensordot with axes known only at run time is supported on the "
        "python target only (the cpu target compiles constant axes: an int, or a pair of ints or of "
        "tuples of ints); use constant axes, or target='python'")
declare(np.inner, cpu_refusal="np.inner with keywords or unpacked arguments is supported on the python "
        "target only (the cpu target compiles np.inner(a, b)); use `@`/np.dot, or target='python'")


def cpu_refusal(callee):
    """Why the cpu target refuses ``callee``, or None."""
    return facts(callee).cpu_refusal
