"""Pytrees: arguments that are (nested) tuples, lists and dicts of arrays and numbers.

A *treedef* describes the structure of a value, everything but its leaves:

* ``LEAF``: an array or a number (``("leaf", "float32")`` for a 0-d array, which runs as a scalar
  and whose gradient is given back as a 0-d array of that dtype);
* ``("none",)``: ``None``;
* ``("tuple", children)``, ``("list", children)``, ``("dict", keys, children)``;
* ``("namedtuple", cls, children)``: a ``collections.namedtuple`` (or ``typing.NamedTuple``)
  instance, rebuilt as ``cls(*children)``; its fields are read by name in the function.

Treedefs are hashable; they are part of the specialization key (static.py rewrites the function
so that compiled code sees one parameter per leaf). Leaves are listed depth first, dict entries in
their insertion order.
"""
import numpy as np

LEAF = ("leaf", None)
NONE = ("none",)

_LEAF_TYPES = (float, int, bool, np.generic, np.ndarray)


def is_container(value):
    return isinstance(value, (tuple, list, dict))


def is_namedtuple(value):
    """A ``collections.namedtuple`` instance (a tuple subclass with ``_fields`` and ``_make``)."""
    cls = type(value)
    return isinstance(value, tuple) and isinstance(getattr(cls, "_fields", None), tuple) and \
        hasattr(cls, "_make")


def treedef_of(value, where="argument"):
    """The treedef of ``value``; a TypeError for values that are neither leaves nor containers."""
    if isinstance(value, np.ndarray):
        return ("leaf", value.dtype.str) if value.ndim == 0 else LEAF
    if isinstance(value, _LEAF_TYPES):
        return LEAF
    if value is None:
        return NONE
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: dict keys must be strings or ints, got {key!r}")
        return ("dict", tuple(value), tuple(treedef_of(v, where) for v in value.values()))
    if isinstance(value, (tuple, list)):
        cls = "list" if isinstance(value, list) else "tuple"
        children = tuple(treedef_of(v, where) for v in value)
        if cls == "tuple" and type(value) is not tuple:
            if not is_namedtuple(value):
                raise TypeError(f"{where}: {type(value).__name__} (a tuple subclass) is not "
                                "supported; pass a plain tuple, a namedtuple, a list or a dict")
            return ("namedtuple", type(value), children)
        return (cls, children)
    raise TypeError(f"{where}: unsupported type {type(value).__name__}: expected a float, an int, a "
                    "bool, a NumPy array, None, or a tuple/list/dict of those")


def leaves(value, out=None):
    """The leaves of ``value`` depth first (0-d arrays as scalars)."""
    out = [] if out is None else out
    if isinstance(value, dict):
        for item in value.values():
            leaves(item, out)
    elif isinstance(value, (tuple, list)):
        for item in value:
            leaves(item, out)
    elif value is not None:
        out.append(value[()] if isinstance(value, np.ndarray) and value.ndim == 0 else value)
    return out


def count_leaves(treedef):
    tag = treedef[0]
    if tag == "leaf":
        return 1
    if tag == "none":
        return 0
    return sum(count_leaves(child) for child in treedef[-1])


def unflatten(treedef, items):
    """Rebuild a value of structure ``treedef`` from ``items`` (an iterator over its leaves)."""
    tag = treedef[0]
    if tag == "leaf":
        item = next(items)
        if treedef[1] is not None and item is not None:       # a 0-d array argument
            return np.asarray(item, dtype=np.dtype(treedef[1]))
        return item
    if tag == "none":
        return None
    children = [unflatten(child, items) for child in treedef[-1]]
    if tag == "dict":
        return dict(zip(treedef[1], children))
    if tag == "namedtuple":
        return treedef[1](*children)
    return children if tag == "list" else tuple(children)


def describe(treedef):
    """A short readable form of a treedef for error messages: ``[(*, *), (*, *)]``."""
    tag = treedef[0]
    if tag == "leaf":
        return "*"
    if tag == "none":
        return "None"
    children = [describe(child) for child in treedef[-1]]
    if tag == "dict":
        return "{" + ", ".join(f"{k!r}: {c}" for k, c in zip(treedef[1], children)) + "}"
    inner = ", ".join(children)
    if tag == "namedtuple":
        return f"{treedef[1].__name__}({inner})"
    return f"[{inner}]" if tag == "list" else f"({inner}{',' if len(children) == 1 else ''})"
