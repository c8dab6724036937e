"""What kind of value each variable holds: float, int, bool, array(ndim, dtype), tuple or None.

srcgrad specializes the transformation per argument kinds (a float and a 1-d array need different
adjoint code); Numba then specializes the generated code per dtype. Kinds come from the arguments
and flow through the normalized body to a fixpoint (loops can widen ``int`` to ``float``).
"""
from dataclasses import dataclass

import numpy as np

from .errors import SrcgradError


@dataclass(frozen=True)
class Kind:
    cls: str                 # 'float' | 'int' | 'bool' | 'array' | 'tuple' | 'none'
    ndim: int = 0
    dtype: str = "float"     # element kind for arrays: 'float' | 'int' | 'bool'
    items: tuple = ()

    @property
    def is_array(self):
        return self.cls == "array"

    @property
    def is_float(self):
        """Float scalar or float array: the values that can carry a derivative."""
        if self.cls == "tuple":
            return any(item.is_float for item in self.items)
        return self.cls == "float" or (self.cls == "array" and self.dtype == "float")

    @property
    def is_scalar(self):
        return self.cls in ("float", "int", "bool")

    def element(self):
        return Kind(self.dtype) if self.is_array else self

    def __str__(self):
        if self.is_array:
            return f"{self.dtype}{self.ndim}d"
        if self.cls == "tuple":
            return "(" + ",".join(map(str, self.items)) + ")"
        return self.cls


FLOAT = Kind("float")
INT = Kind("int")
BOOL = Kind("bool")
NONE = Kind("none")


def array(ndim, dtype="float"):
    if ndim == 0:
        return Kind(dtype)
    return Kind("array", ndim, dtype)


def tuple_of(items):
    return Kind("tuple", items=tuple(items))


_SCALAR_ORDER = {"bool": 0, "int": 1, "float": 2}


def join(a, b):
    """The kind of a variable that holds ``a`` on one path and ``b`` on another."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    if a.is_scalar and b.is_scalar:
        return a if _SCALAR_ORDER[a.cls] >= _SCALAR_ORDER[b.cls] else b
    if a.is_array or b.is_array:
        ndim = max(a.ndim if a.is_array else 0, b.ndim if b.is_array else 0)
        return array(ndim, join_dtype(a.element().cls, b.element().cls))
    if a.cls == "tuple" and b.cls == "tuple" and len(a.items) == len(b.items):
        return tuple_of(join(x, y) for x, y in zip(a.items, b.items))
    return a if a.cls != "none" else b


def join_dtype(a, b):
    return a if _SCALAR_ORDER.get(a, 2) >= _SCALAR_ORDER.get(b, 2) else b


def broadcast(*kinds, dtype=None):
    """Kind of an elementwise operation's result."""
    ndim = max((k.ndim if k.is_array else 0) for k in kinds)
    element = "bool"
    for k in kinds:
        element = join_dtype(element, k.element().cls if k.cls != "none" else "float")
    if dtype is not None:
        element = dtype
    return array(ndim, element)


def matmul_kind(a, b):
    """Kind of ``a @ b`` (np.matmul, np.dot of vectors and matrices): vector @ vector is a float,
    a vector on either side drops one axis, stacks of matrices broadcast their leading axes."""
    if not (a.is_array and b.is_array):
        raise SrcgradError("`@` needs two arrays")
    if a.ndim == 1 and b.ndim == 1:
        return FLOAT
    if a.ndim == 1 or b.ndim == 1:
        return array(max(a.ndim, b.ndim) - 1)
    return array(max(a.ndim, b.ndim))


def kind_of_value(value):
    """The kind of a runtime argument, or a TypeError naming what was expected."""
    if isinstance(value, (bool, np.bool_)):
        return BOOL
    if isinstance(value, (int, np.integer)):
        return INT
    if isinstance(value, (float, np.floating)):
        return FLOAT
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            return array(value.ndim, "float") if value.ndim else FLOAT
        if value.dtype.kind in "iu":
            return array(value.ndim, "int") if value.ndim else INT
        if value.dtype.kind == "b":
            return array(value.ndim, "bool") if value.ndim else BOOL
        raise TypeError(f"arrays of dtype {value.dtype} are not supported (expected float32/float64, "
                        "integer or bool arrays)")
    if isinstance(value, tuple):
        return tuple_of(kind_of_value(v) for v in value)
    raise TypeError(f"unsupported argument type {type(value).__name__}: expected a float, an int, "
                    "a bool or a NumPy array")


def kind_of_numba_type(nbtype):
    """The kind of a Numba type (for calls made from inside user @njit code)."""
    from numba.core import types
    if isinstance(nbtype, types.Boolean):
        return BOOL
    if isinstance(nbtype, types.Integer):
        return INT
    if isinstance(nbtype, types.Float):
        return FLOAT
    if isinstance(nbtype, types.Array):
        dt = nbtype.dtype
        element = "float" if isinstance(dt, types.Float) else "bool" if isinstance(dt, types.Boolean) else "int"
        return array(nbtype.ndim, element)
    if isinstance(nbtype, types.BaseTuple):
        return tuple_of(kind_of_numba_type(t) for t in nbtype.types)
    raise TypeError(f"unsupported argument type {nbtype}")
