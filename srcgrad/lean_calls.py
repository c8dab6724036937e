"""When a call from Python may run the lean specialization of an adjoint: the one compiled without
the fused loops' fallback branches (``api.GradFunction`` asks before the first compile, so that one
call compiles one specialization, not the lean one and then the fallback one)."""
import ast
import textwrap
import types

import numpy as np

from .program import helper_sources


def stretchable(values):
    """Whether an array argument has a size-1 axis that NumPy may stretch (a lean specialization's
    size test would fail and the call compile the one with the fallbacks too: two compiles)."""
    return any(isinstance(v, np.ndarray) and v.ndim > 0 and 1 in v.shape for v in values)


# array methods that change the array, and NumPy functions that change an argument
_METHODS_IN_PLACE = ("fill", "sort", "put", "itemset", "resize", "setfield", "copyto")
_MODULE_IN_PLACE = ("put", "copyto", "place", "putmask", "fill_diagonal")


def may_store_into_arrays(func):
    """Whether ``func`` or a helper it calls has an element or slice assignment (``a[i] = v``,
    ``a[i] += v``) or an ``out=`` argument: a call may then change an array it was given, and a
    call stopped half way cannot simply run again. (``a += v`` on a name rebinds it: srcgrad
    writes it as ``a = a + v``.) True when a source cannot be read."""
    # ``np.sort(a)`` (a module's function, a new array) is not ``a.sort()`` (in place): a call on a
    # name bound to a module in the function's globals is checked against NumPy's in-place functions
    inner = getattr(func, "py_func", func)
    glob = getattr(inner, "__globals__", None) or getattr(getattr(inner, "func", None), "__globals__", None) or {}
    modules = {"np", "numpy"} | {k for k, v in glob.items() if isinstance(v, types.ModuleType)}
    for text in helper_sources(func).values():
        _, newline, source = text.partition("\n")
        if not newline:
            return True
        try:
            tree = ast.parse(textwrap.dedent(source))
        except SyntaxError:
            return True
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
                return True
            if isinstance(node, ast.keyword) and node.arg == "out":
                return True
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                on_module = isinstance(node.func.value, ast.Name) and node.func.value.id in modules
                if node.func.attr in (_MODULE_IN_PLACE if on_module else _METHODS_IN_PLACE):
                    return True
    return False
