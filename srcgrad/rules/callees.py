"""Facts about callees that are not derivative templates: which calls create arrays, which have
no derivative, which take a tuple of arrays, which run as a runtime helper, which a target refuses.

(The derivative templates themselves are in the one table, :data:`srcgrad.rules.table.REGISTRY`.)
"""
import math
import types

import numpy as np


def _key(function):
    function = getattr(function, "py_func", function)
    if isinstance(function, types.MethodType):
        # a method of an object such as scipy.stats.norm: by class and function (a deep copy of
        # the code, which copies the object, still finds the rule)
        return (type(function.__self__), function.__func__)
    return function


# Array creation: the result depends on the argument's shape, never on its values.
CREATION = {np.zeros, np.ones, np.empty, np.zeros_like, np.ones_like, np.empty_like, np.full,
            np.full_like, np.arange}

# Functions that are fine on inactive values but have no derivative on active ones.
NON_DIFFERENTIABLE = {int, len, range, bool, round, np.argmax, np.argmin, np.argsort, np.isnan,
                      np.isinf, np.isfinite, math.isnan, math.isinf, math.isfinite, np.shape,
                      np.ndim, np.size}


# Functions taking a tuple of arrays: the adjoint of element k of the tuple is a part of the
# result's adjoint, cut out by a runtime helper: ``d[parts[k]] += helper(d[result], k, parts, axis)``.
TUPLE_ARGUMENT_RULES = {
    np.concatenate: "concat_part",     # the k-th block along `axis`
    np.stack: "stack_part",            # the k-th index along the new `axis`
}

TUPLE_ARGUMENT_RULES[np.vstack] = "vstack_part"
TUPLE_ARGUMENT_RULES[np.hstack] = "hstack_part"
CREATION |= {np.eye, np.identity}


# NumPy and SciPy calls that generated code makes through a runtime helper (``LIBRARY_CALLS``):
# NumPy calls Numba cannot compile as written (an ``axis`` it does not take) and SciPy functions
# (not plain Python for srcgrad to transform).
# callee -> name of the runtime helper that generated code calls instead (both targets)
LIBRARY_CALLS = {}
LIBRARY_CALLS[np.vstack] = "np_vstack"        # Numba's needs parts of one ndim (1-d parts are rows)


def library_helper(callee):
    """The runtime helper generated code calls for ``callee``, or None (a plain NumPy call)."""
    try:
        helper = LIBRARY_CALLS.get(_key(callee))
        if helper is None and _is_scipy(callee) and _register_scipy():
            helper = LIBRARY_CALLS.get(_key(callee))
        return helper
    except TypeError:           # unhashable callee
        return None


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
