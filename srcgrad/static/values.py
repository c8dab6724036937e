"""What the static stage knows about a value: known at specialization time (:class:`Static`
and its kinds) or read at every call (:class:`Capture`)."""
import ast
import types

import numpy as np

from .. import kinds as K
from .. import pytree
from ..parse import SourceFunction


from ..rules.callees import LIBRARY_MODULES, USER_MODULES  # noqa: F401 (the one callee table; re-exported)


def is_library_function(obj):
    module = getattr(obj, "__module__", None) or ""
    if isinstance(obj, np.ufunc):
        return True
    return module.split(".")[0] in LIBRARY_MODULES and module not in USER_MODULES


def is_user_function(obj):
    """A plain Python function srcgrad transforms (not a library function, not a rule)."""
    from .. import rules
    if isinstance(obj, SourceFunction):
        return True
    func = getattr(obj, "py_func", obj)
    if not isinstance(func, types.FunctionType) or is_library_function(func):
        return False
    return rules.lookup(obj) is None


class Static:
    """A value the pre-pass knows statically (the leaves stay runtime variables)."""


class SLeaf(Static):
    """A runtime value held in variable ``name`` (a flat parameter or a local)."""

    def __init__(self, name, kind=None):
        self.name = name
        self.kind = kind


class SConst(Static):
    """A constant: None, an int, a bool or a string (an index, a dict key, a None argument)."""

    def __init__(self, value):
        self.value = value


class SSeq(Static):
    def __init__(self, cls, items, ntype=None):
        self.cls = cls            # "tuple" or "list"
        self.items = list(items)
        self.ntype = ntype        # the class of a namedtuple (its fields are read by name)


class SExpr(Static):
    """A runtime value inside a pytree built in the function (``{"a": x * 2}``, ``(W, b)``
    holding a pytree): the expression computing it, evaluated once where the pytree is bound to a
    name (FunctionRewriter.materialized) or passed to a helper."""

    def __init__(self, node):
        self.node = node


class SReturned(Static):
    """The pytree a helper returns: ``call`` returns the tuple of its runtime leaves, ``shape``
    (a descriptor, see :func:`template`) says where they go. Bound to a name, the call runs once
    (FunctionRewriter.materialized)."""

    def __init__(self, call, shape, label):
        self.call = call
        self.shape = shape
        self.label = label


class SDict(Static):
    def __init__(self, keys, items):
        self.keys = list(keys)
        self.items = list(items)


class SFunc(Static):
    """A function value: a user function, a library function, or a lifted lambda/nested def with
    the values of its free variables (None until the call binds them, late, like Python)."""

    def __init__(self, target, free=None, node=None, fsrc=None):
        self.target = target      # python function | LocalDef
        self.free = free          # list of Static (bound) or None
        self.node = node          # how the user named it (np.tanh), and in which function
        self.fsrc = fsrc


class SAmbiguous(Static):
    def __init__(self, message, lineno):
        self.message = message
        self.lineno = lineno


class LocalDef:
    """A ``def`` or ``lambda`` inside a user function, lifted into a function of its own."""

    def __init__(self, node, fsrc, free_names, name):
        self.node = node              # ast.FunctionDef
        self.fsrc = fsrc              # the enclosing function's source (namespace, file)
        self.free_names = free_names
        self.name = name
        self.key = ("local", fsrc.filename, node.lineno, node.col_offset, name)


class NeedStatic(Exception):
    """A pytree was indexed by a value that is not static (raised to unroll an enclosing loop)."""

    def __init__(self, name, node):
        super().__init__(name)
        self.name = name
        self.node = node


def _same(a, b):
    if a is b:
        return True
    if isinstance(a, SConst) and isinstance(b, SConst):
        return type(a.value) is type(b.value) and a.value == b.value
    if isinstance(a, SLeaf) and isinstance(b, SLeaf):
        return a.name == b.name
    if isinstance(a, SSeq) and isinstance(b, SSeq):         # the same structure of the same values
        return a.cls == b.cls and a.ntype is b.ntype and len(a.items) == len(b.items) and \
            all(_same(x, y) for x, y in zip(a.items, b.items))
    if isinstance(a, SDict) and isinstance(b, SDict):
        return a.keys == b.keys and all(_same(x, y) for x, y in zip(a.items, b.items))
    return False


def _scalar_like(static):
    """Statics that a plain variable can hold (materialized by an assignment)."""
    return isinstance(static, SLeaf) or (isinstance(static, SConst) and
                                         isinstance(static.value, (int, float, bool)))


def describe(static, registry):
    """The hashable descriptor of a static argument (part of a helper's specialization key);
    function values are entered in ``registry`` under their key."""
    if isinstance(static, SLeaf):
        return ("leaf", static.kind)
    if isinstance(static, SExpr):
        return ("leaf", None)
    if isinstance(static, SConst):
        return ("const", type(static.value).__name__, static.value)
    if isinstance(static, SSeq):
        if static.ntype is not None:
            return ("namedtuple", static.ntype, tuple(describe(s, registry) for s in static.items))
        return (static.cls, tuple(describe(s, registry) for s in static.items))
    if isinstance(static, SDict):
        return ("dict", tuple(static.keys), tuple(describe(s, registry) for s in static.items))
    if isinstance(static, SFunc):
        target = static.target
        key = target.key if isinstance(target, LocalDef) else ("py", id(target))
        registry.setdefault(key, target)
        return ("func", key, tuple(describe(s, registry) for s in static.free or ()))
    raise TypeError(static)


def template(static):
    """The shape of a pytree built or returned here, as a hashable descriptor with ``("leaf",)`` for
    each runtime value (in :func:`runtime_leaves` order), and its runtime leaves."""
    if isinstance(static, (SLeaf, SExpr)):
        return ("leaf",), [static]
    if isinstance(static, SConst):
        return ("const", static.value), []
    if isinstance(static, (SSeq, SDict)):
        shapes, leaves = [], []
        for item in static.items:
            shape, more = template(item)
            shapes.append(shape)
            leaves += more
        if isinstance(static, SDict):
            return ("dict", tuple(static.keys), tuple(shapes)), leaves
        return (static.cls, static.ntype, tuple(shapes)), leaves
    raise TypeError(static)


def from_template(shape, leaves):
    """The pytree of ``shape`` whose runtime values are the next items of ``leaves``."""
    tag = shape[0]
    if tag == "leaf":
        return next(leaves)
    if tag == "const":
        return SConst(shape[1])
    items = [from_template(child, leaves) for child in shape[-1]]
    if tag == "dict":
        return SDict(shape[1], items)
    return SSeq(tag, items, shape[1])


def flat_atoms(static, like):
    """The runtime values a static argument passes (its leaves), as expressions."""
    out = []
    if isinstance(static, SLeaf):
        out.append(ast.copy_location(ast.Name(id=static.name, ctx=ast.Load()), like))
    elif isinstance(static, SExpr):
        out.append(static.node)
    elif isinstance(static, (SSeq, SDict)):
        for item in static.items:
            out += flat_atoms(item, like)
    elif isinstance(static, SFunc):
        for item in static.free or ():
            out += flat_atoms(item, like)
    return out


class Capture:
    """A module global or closure variable holding arrays/floats, read at every call."""

    def __init__(self, key, name, getter, where):
        self.key = key
        self.name = name
        self.getter = getter
        self.where = where
        self.treedef = None

    def read(self):
        return self.getter()


def _capturable(value):
    """Arrays, floats, and containers of arrays/numbers with at least one array or float."""
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "fiub"
    if isinstance(value, (float, np.floating)):
        return True
    if isinstance(value, (tuple, list, dict)) and value:
        try:
            pytree.treedef_of(value)
        except TypeError:
            return False
        return any(isinstance(leaf, (np.ndarray, float, np.floating)) and not isinstance(leaf, bool)
                   for leaf in pytree.leaves(value))
    return False


def _leaf_kind(value):
    try:
        return K.kind_of_value(value)
    except TypeError:
        return None


def _static_of(treedef, value, names):
    tag = treedef[0]
    if tag == "leaf":
        name, kind = next(names)
        return SLeaf(name, kind)
    if tag == "none":
        return SConst(None)
    children = list(value.values()) if isinstance(value, dict) else list(value)
    items = [_static_of(child, v, names) for child, v in zip(treedef[-1], children)]
    if tag == "dict":
        return SDict(treedef[1], items)
    if tag == "namedtuple":
        return SSeq("tuple", items, ntype=treedef[1])
    return SSeq(tag, items)
