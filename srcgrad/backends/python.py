"""The ``python`` target: the generated code runs as plain Python (for reading and debugging).

Generated modules import their runtime helpers from here: every helper declared in
:mod:`srcgrad.helpers` is the plain implementation of :mod:`srcgrad.runtime`, unchanged.
"""
from ..helpers import names as _helper_names
from ..rules import external as _lookup
from .. import runtime as _runtime


def jit(function):
    """No compilation: the function runs as the Python it is."""
    return function


def external(qualified_name):
    """A user function with a registered derivative rule, as plain Python."""
    function = _lookup(qualified_name)
    return getattr(function, "py_func", function)


# the declared runtime helpers (backends are registered in srcgrad.helpers: this module is the
# python backend's)
globals().update({_name: getattr(_runtime, _name) for _name in _helper_names(service=False)})
