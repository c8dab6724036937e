"""CUDA array mode: the graph of whole-array operations, and the traced values that record it.

A :class:`Graph` holds :class:`Node` s in execution order, each one operation with its static shape
and dtype.  A :class:`Traced` value stands in for an array while :mod:`srcgrad.cuda.array_trace`
runs the generated adjoint: its operators and the operations below (elementwise math, reductions,
matrix products, views, gathers and scatters; shapes and dtypes follow NumPy) add nodes.
:mod:`srcgrad.cuda.array_plan` then turns the graph into CUDA kernels.

Semantics: every operation produces a new value; in-place updates of the generated code
(``_adj_z += g``, ``_adj_m[:, 0] += g``, ``scatter_add2(_adj_z, ...)``) rebind the traced
object to a new node, which is what NumPy's in-place update means for code that reads the name
afterwards.  Views are values too; a view read after its base was updated in place would see
NumPy's aliasing, which the graph does not model, so that is refused.
"""

from __future__ import annotations

import numbers
import operator

import numpy as np

from ..errors import SrcgradError

MAX_NODES = 20000  # a trace that unrolls a long loop stops here with a clear error

# Elementwise operations: name -> number of operands.  The CUDA expression for each lives in
# array_codegen.EW_EXPRESSIONS (one place to extend both).
EW_ARITY = {
    "add": 2, "sub": 2, "mul": 2, "div": 2, "pow": 2, "maximum": 2, "minimum": 2,
    "lt": 2, "le": 2, "gt": 2, "ge": 2, "eq": 2, "ne": 2, "and": 2, "or": 2,
    "neg": 1, "exp": 1, "log": 1, "tanh": 1, "sqrt": 1, "abs": 1, "sign": 1, "sin": 1,
    "cos": 1, "log1p": 1, "expm1": 1, "square": 1, "not": 1, "cast": 1, "copy": 1,
    "where": 3, "clip": 3,
}
_COMPARISONS = {"lt", "le", "gt", "ge", "eq", "ne", "and", "or", "not"}
_FLOAT_RESULT = {"div", "exp", "log", "tanh", "sqrt", "sin", "cos", "log1p", "expm1"}


class Node:
    """One operation of the traced program: ``op`` over ``args`` giving an array of ``shape``."""

    __slots__ = ("id", "op", "args", "shape", "dtype", "attrs", "label", "line")

    def __init__(self, graph, op, args, shape, dtype, **attrs):
        self.id = len(graph.nodes)
        self.op = op
        self.args = tuple(args)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.attrs = attrs
        self.label = None   # the generated variable it was assigned to, for comments
        self.line = None    # the generated statement, for comments
        graph.nodes.append(self)
        if len(graph.nodes) > MAX_NODES:
            raise SrcgradError(f"CUDA array mode: the traced program has over {MAX_NODES} operations "
                               "(a long loop was unrolled); write the loop as array operations")

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def __repr__(self):
        name = f" {self.label}" if self.label else ""
        return f"<n{self.id}{name} {self.op}{list(a.id for a in self.args)} {self.shape} {self.dtype}>"


class Graph:
    """The traced program: nodes in execution order, inputs and outputs."""

    def __init__(self, precision):
        self.nodes = []
        self.inputs = []          # (parameter name, node or None for static values)
        self.outputs = []         # nodes: the value, then one per gradient
        self.float = np.dtype(precision)
        self.current_line = None

    def node(self, op, args, shape, dtype, **attrs):
        n = Node(self, op, args, shape, dtype, **attrs)
        n.line = self.current_line
        return n


# ------------------------------------------------------------------------------------------------
# Traced values
# ------------------------------------------------------------------------------------------------

def _refuse(what):
    raise SrcgradError(f"CUDA array mode: {what}")


class Traced:
    """Stands in for an array (or a float scalar, shape ``()``) while the adjoint is traced."""

    __array_priority__ = 1000   # NumPy scalars on the left defer to our operators

    def __init__(self, graph, node, view_of=None):
        self.graph = graph
        self.node = node
        self.version = 0
        self.view_of = view_of    # (base Traced, base version) for basic-index views
        self.pending = None       # a value to be written back through a view (see _inplace)

    # -- metadata ---------------------------------------------------------------------------
    shape = property(lambda self: self.node.shape)
    dtype = property(lambda self: self.node.dtype)
    ndim = property(lambda self: self.node.ndim)
    size = property(lambda self: self.node.size)

    def __len__(self):
        if not self.shape:
            _refuse("len() of a scalar")
        return self.shape[0]

    def current(self):
        """The node to read, refusing stale views (see the module docstring)."""
        if self.pending is not None:
            _refuse("an in-place update of a view (`v = a[...]; v += x`) changes the array it "
                    "views; write `a[...] += x` instead")
        if self.view_of is not None:
            base, version = self.view_of
            if base.version != version:
                _refuse(f"a view of {base.node.label or 'an array'} is read after the array was "
                        "updated in place; copy the view first")
        return self.node

    def _rebind(self, node):
        self.node = node
        self.version += 1
        if self.view_of is not None:
            _refuse("an in-place update through a view of another array")

    def __bool__(self):
        _refuse("a branch or `and`/`or` on an array value (data-dependent control flow) cannot run "
                "as CUDA array kernels; use np.where")

    def __float__(self):
        _refuse("float() of an array value")

    __int__ = __index__ = __float__

    def __iter__(self):
        _refuse("iterating over an array")

    # -- arithmetic -------------------------------------------------------------------------
    def _bin(self, op, other, swap=False):
        a, b = (other, self) if swap else (self, other)
        return elementwise(self.graph, op, a, b)

    __add__ = lambda s, o: s._bin("add", o)
    __radd__ = lambda s, o: s._bin("add", o, True)
    __sub__ = lambda s, o: s._bin("sub", o)
    __rsub__ = lambda s, o: s._bin("sub", o, True)
    __mul__ = lambda s, o: s._bin("mul", o)
    __rmul__ = lambda s, o: s._bin("mul", o, True)
    __truediv__ = lambda s, o: s._bin("div", o)
    __rtruediv__ = lambda s, o: s._bin("div", o, True)
    __pow__ = lambda s, o: s._bin("pow", o)
    __rpow__ = lambda s, o: s._bin("pow", o, True)
    __lt__ = lambda s, o: s._bin("lt", o)
    __le__ = lambda s, o: s._bin("le", o)
    __gt__ = lambda s, o: s._bin("gt", o)
    __ge__ = lambda s, o: s._bin("ge", o)
    __eq__ = lambda s, o: s._bin("eq", o)
    __ne__ = lambda s, o: s._bin("ne", o)
    __and__ = lambda s, o: s._bin("and", o)
    __or__ = lambda s, o: s._bin("or", o)
    __neg__ = lambda s: elementwise(s.graph, "neg", s)
    __pos__ = lambda s: s
    __abs__ = lambda s: elementwise(s.graph, "abs", s)
    __invert__ = lambda s: elementwise(s.graph, "not", s)
    __hash__ = object.__hash__

    def __matmul__(self, other):
        return matmul(self.graph, self, other)

    def __rmatmul__(self, other):
        return matmul(self.graph, other, self)

    # In-place updates rebind this object (every name bound to it sees the update, as in NumPy).
    def _inplace(self, op, other):
        result = elementwise(self.graph, op, self, other)
        if self.view_of is not None:
            # ``a[i] += v`` is ``a[i] = a[i].__iadd__(v)``: the base must be written back by that
            # __setitem__ before anything reads it (a bare ``view += v`` is refused there).
            self.view_of[0].pending = result
            return result
        self._rebind(result.node)
        return self

    __iadd__ = lambda s, o: s._inplace("add", o)
    __isub__ = lambda s, o: s._inplace("sub", o)
    __imul__ = lambda s, o: s._inplace("mul", o)
    __itruediv__ = lambda s, o: s._inplace("div", o)

    # -- indexing ---------------------------------------------------------------------------
    def __getitem__(self, index):
        return getitem(self, index)

    def __setitem__(self, index, value):
        setitem(self, index, value)

    # -- methods the generated code may call ------------------------------------------------
    @property
    def T(self):
        return transpose(self)

    def transpose(self, *axes):
        return transpose(self, axes[0] if len(axes) == 1 and isinstance(axes[0], tuple) else (axes or None))

    def reshape(self, *shape):
        return reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)

    def ravel(self):
        return reshape(self, (-1,))

    flatten = ravel

    def copy(self):
        return elementwise(self.graph, "copy", self)

    def astype(self, dtype):
        return cast(self, np.dtype(dtype))

    def sum(self, axis=None, keepdims=False):
        return reduce(self, "sum", axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False):
        return reduce(self, "max", axis, keepdims)

    def min(self, axis=None, keepdims=False):
        return reduce(self, "min", axis, keepdims)

    def __repr__(self):
        return f"Traced({self.node!r})"


# ------------------------------------------------------------------------------------------------
# Operations (each makes nodes; shapes and dtypes follow NumPy)
# ------------------------------------------------------------------------------------------------

def _is_static(value):
    return isinstance(value, (numbers.Number, np.number, np.bool_)) and not isinstance(value, Traced)


def _const(graph, value, dtype=None):
    """A scalar constant; Python floats take the working precision (NumPy's weak scalars)."""
    if dtype is None:
        if isinstance(value, (bool, np.bool_)):
            dtype = np.bool_
        elif isinstance(value, np.generic):
            dtype = value.dtype
            if dtype.kind == "f":
                dtype = graph.float
        elif isinstance(value, numbers.Integral):
            dtype = np.int64
        else:
            dtype = graph.float
    node = graph.node("const", (), (), dtype, value=value)
    node.attrs["weak"] = not isinstance(value, np.ndarray)
    return node


def _as_node(graph, value):
    if isinstance(value, Traced):
        return value.current()
    if _is_static(value):
        return _const(graph, value)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return _const(graph, value[()])
    _refuse(f"an operand of type {type(value).__name__} (only traced arrays and numbers can "
            "be combined on the device)")


def broadcast_shapes(*shapes):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        _refuse("operands could not be broadcast together with shapes "
                + " ".join(str(tuple(s)) for s in shapes))


def _result_dtype(graph, op, nodes):
    if op in _COMPARISONS:
        return np.dtype(np.bool_)
    if op in ("cast", "copy"):
        return nodes[0].dtype
    operands = nodes[1:] if op == "where" else nodes
    floats = [n.dtype for n in operands if n.dtype.kind == "f" and not
              (n.op == "const" and n.attrs.get("weak"))]
    if floats:
        dtype = np.result_type(*floats)
    elif any(n.dtype.kind == "f" for n in operands) or op in _FLOAT_RESULT:
        dtype = graph.float
    elif op == "where":
        dtype = np.result_type(*[n.dtype for n in operands])
    else:
        dtype = np.dtype(np.int64) if any(n.dtype.kind in "iu" for n in operands) else np.dtype(np.bool_)
    return np.dtype(dtype)


_FOLD = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide, "pow": np.power,
    "maximum": np.maximum, "minimum": np.minimum, "lt": np.less, "le": np.less_equal,
    "gt": np.greater, "ge": np.greater_equal, "eq": np.equal, "ne": np.not_equal,
    "neg": np.negative, "exp": np.exp, "log": np.log, "tanh": np.tanh, "sqrt": np.sqrt,
    "abs": np.abs, "sign": np.sign, "sin": np.sin, "cos": np.cos, "log1p": np.log1p,
    "expm1": np.expm1, "square": np.square, "cast": lambda x: x, "copy": lambda x: x,
    "where": np.where, "clip": np.clip,
}


def _const_root(node):
    """The scalar constant ``node`` is a broadcast copy of, or None."""
    while node.op == "ew" and node.attrs["fn"] == "copy":
        node = node.args[0]
    return node if node.op == "const" and not isinstance(node.attrs["value"], np.ndarray) else None


def _is_zero(node):
    """A constant zero, or zeros_like/np.zeros of one (the adjoints' starting value)."""
    root = _const_root(node)
    return root is not None and root.attrs["value"] == 0


def elementwise(graph, op, *operands):
    nodes = [_as_node(graph, v) for v in operands]
    shape = broadcast_shapes(*[n.shape for n in nodes])
    dtype = _result_dtype(graph, op, nodes)
    if all(_const_root(n) is not None for n in nodes) and op not in ("and", "or", "not"):
        # constant folding (``1.0 / 64`` in a mean's adjoint), in the result dtype
        with np.errstate(all="ignore"):
            value = _FOLD[op](*[np.asarray(_const_root(n).attrs["value"]) for n in nodes])
        folded = _const(graph, np.asarray(value).astype(dtype)[()], dtype)
        return Traced(graph, folded if shape == () else graph.node("ew", [folded], shape, dtype, fn="copy"))
    # 0 + x, x + 0 and x - 0 are x (the adjoint accumulators start at zero)
    keep = None
    if op == "add" and _is_zero(nodes[0]):
        keep = nodes[1]
    elif op in ("add", "sub") and _is_zero(nodes[1]):
        keep = nodes[0]
    if keep is not None and keep.shape == shape and keep.dtype == dtype and keep.op != "const":
        return Traced(graph, keep)
    return Traced(graph, graph.node("ew", nodes, shape, dtype, fn=op))


def cast(value, dtype):
    node = _as_node(value.graph, value)
    if node.dtype == dtype:
        return elementwise(value.graph, "copy", value)
    return Traced(value.graph, value.graph.node("ew", [node], node.shape, dtype, fn="cast"))


def broadcast_to(value, shape):
    graph = value.graph
    node = _as_node(graph, value)
    if broadcast_shapes(node.shape, shape) != tuple(shape):
        _refuse(f"cannot broadcast shape {node.shape} to {tuple(shape)}")
    if node.shape == tuple(shape):
        return value
    return Traced(graph, graph.node("ew", [node], shape, node.dtype, fn="copy"))


def _normalize_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim:
            _refuse(f"axis {a} is out of bounds for an array of dimension {ndim}")
        out.append(a % ndim)
    return tuple(sorted(set(out)))


def reduce(value, kind, axis, keepdims, keep_axes=()):
    """sum/max/min over ``axis``; ``keep_axes`` (for unbroadcast) are reduced but kept as size 1."""
    graph = value.graph
    node = _as_node(graph, value)
    axes = _normalize_axes(axis, node.ndim)
    kept = tuple(sorted(set(axes) if keepdims else set(keep_axes)))
    shape = tuple(1 if d in kept else s for d, s in enumerate(node.shape) if d not in axes or d in kept)
    if kind != "sum" and node.size == 0:
        _refuse(f"np.{kind} of an empty array (zero-size reduction has no identity)")
    dtype = node.dtype if kind != "sum" or node.dtype.kind == "f" else np.dtype(np.int64)
    return Traced(graph, graph.node("reduce", [node], shape, dtype, kind=kind, axes=axes, kept=kept))


def mean(value, axis, keepdims):
    node = _as_node(value.graph, value)
    count = node.size // max(1, reduce(value, "sum", axis, keepdims).size) if node.size else 0
    total = reduce(value, "sum", axis, keepdims)
    return total / float(count) if count else total / float("nan")


def matmul(graph, a, b):
    a = a if isinstance(a, Traced) else Traced(graph, _as_node(graph, a))
    b = b if isinstance(b, Traced) else Traced(graph, _as_node(graph, b))
    if a.ndim == 0 or b.ndim == 0:
        _refuse("matmul with a scalar operand (use *)")
    if a.ndim > 2 or b.ndim > 2:
        _refuse(f"matmul of {a.ndim}-d and {b.ndim}-d arrays (CUDA array mode has 1-d and 2-d matmul)")
    ka = a.shape[-1]
    kb = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if ka != kb:
        _refuse(f"matmul: shapes {a.shape} and {b.shape} are not aligned ({ka} != {kb})")
    if a.ndim == 1 and b.ndim == 1:
        return reduce(elementwise(graph, "mul", a, b), "sum", None, False)
    a2 = reshape(a, (1, ka)) if a.ndim == 1 else a
    b2 = reshape(b, (kb, 1)) if b.ndim == 1 else b
    out_shape = (a2.shape[0], b2.shape[1])
    dtype = _result_dtype(graph, "mul", [a2.current(), b2.current()])
    c = Traced(graph, graph.node("matmul", [a2.current(), b2.current()], out_shape, dtype))
    if a.ndim == 1:
        return reshape(c, (b2.shape[1],))
    if b.ndim == 1:
        return reshape(c, (a2.shape[0],))
    return c


def outer(graph, a, b):
    a = reshape(a, (-1, 1)) if isinstance(a, Traced) else a
    b = reshape(b, (1, -1)) if isinstance(b, Traced) else b
    return elementwise(graph, "mul", a, b)


def _view(value, shape, offset, coeff):
    """A basic-index view: element ``j`` reads base element ``offset + coeff @ j``."""
    graph = value.graph
    node = graph.node("view", [value.current()], shape, value.dtype,
                      offset=tuple(offset), coeff=tuple(tuple(r) for r in coeff))
    return Traced(graph, node, view_of=(value, value.version))


def transpose(value, axes=None):
    n = value.ndim
    axes = tuple(reversed(range(n))) if axes is None else tuple(int(a) % n for a in axes)
    if sorted(axes) != list(range(n)):
        _refuse(f"transpose axes {axes} for a {n}-d array")
    coeff = [[1 if axes[k] == d else 0 for k in range(n)] for d in range(n)]
    return _view(value, tuple(value.shape[a] for a in axes), [0] * n, coeff)


def reshape(value, shape):
    shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    size = value.size
    if shape.count(-1) > 1:
        _refuse("reshape with more than one -1")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1], dtype=np.int64))
        shape = tuple(size // known if s == -1 and known else s for s in shape)
    if int(np.prod(shape, dtype=np.int64)) != size:
        _refuse(f"cannot reshape an array of size {size} into shape {shape}")
    if shape == value.shape:
        return value
    if [s for s in shape if s != 1] == [s for s in value.shape if s != 1]:
        # only size-1 axes added or removed (expand_dims, squeeze): a view, no buffer needed
        real = [d for d, s in enumerate(value.shape) if s != 1]
        targets = [k for k, s in enumerate(shape) if s != 1]
        coeff = [[0] * len(shape) for _ in value.shape]
        for d, k in zip(real, targets):
            coeff[d][k] = 1
        return _view(value, shape, [0] * value.ndim, coeff)
    graph = value.graph
    return Traced(graph, graph.node("reshape", [value.current()], shape, value.dtype))


def expand_dims(value, axis):
    shape = list(value.shape)
    axis = int(axis) % (len(shape) + 1)
    shape.insert(axis, 1)
    return reshape(value, tuple(shape))


def _index_parts(value, index):
    """Offsets, coefficients and shape of a basic index (ints, slices, None, Ellipsis)."""
    index = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, (Traced, np.ndarray, list)) for i in index):
        return None
    if Ellipsis in index:
        at = index.index(Ellipsis)
        fill = value.ndim - (len(index) - 1 - index.count(None))
        index = index[:at] + (slice(None),) * fill + index[at + 1:]
    used = len(index) - index.count(None)
    if used > value.ndim:
        _refuse(f"too many indices ({used}) for a {value.ndim}-d array")
    index = index + (slice(None),) * (value.ndim - used)
    offset, columns, shape = [0] * value.ndim, [], []   # columns: the base dim each out dim walks
    dim = 0
    for item in index:
        if item is None:
            columns.append(None)
            shape.append(1)
            continue
        size = value.shape[dim]
        if isinstance(item, slice):
            start, stop, step = item.indices(size)
            shape.append(len(range(start, stop, step)))
            offset[dim] = start
            columns.append((dim, step))
        else:
            i = operator.index(item)
            if not -size <= i < size:
                raise IndexError(f"index {i} is out of bounds for axis {dim} with size {size}")
            offset[dim] = i % size
        dim += 1
    coeff = [[0] * len(shape) for _ in range(value.ndim)]
    for k, col in enumerate(columns):
        if col is not None:
            coeff[col[0]][k] = col[1]
    return tuple(shape), offset, coeff


def getitem(value, index):
    parts = _index_parts(value, index)
    if parts is None:
        items = index if isinstance(index, tuple) else (index,)
        if value.ndim == 2 and len(items) == 2:
            return gather2(value, items[0], items[1])
        if value.ndim >= 1 and len(items) == 1:
            return gather1(value, items[0])
        _refuse("this integer-array index (CUDA array mode has a[idx] and a[rows, cols])")
    shape, offset, coeff = parts
    return _view(value, shape, offset, coeff)


def setitem(target, index, value):
    if target.pending is not None and target.pending is value:
        target.pending = None
    parts = _index_parts(target, index)
    if parts is None:
        _refuse("assignment through an integer-array index (use the add-at form: it is "
                "generated for gathers)")
    shape, offset, coeff = parts
    graph = target.graph
    new = _as_node(graph, broadcast_to(value, shape) if isinstance(value, Traced)
                   else Traced(graph, _as_node(graph, value)))
    if new.shape != shape:
        new = _as_node(graph, broadcast_to(Traced(graph, new), shape))
    if new.dtype != target.dtype:
        new = cast(Traced(graph, new), target.dtype).node
    target._rebind(graph.node("setslice", [target.current(), new], target.shape, target.dtype,
                              offset=tuple(offset), coeff=tuple(tuple(r) for r in coeff)))


def _index_node(graph, index):
    node = _as_node(graph, index if isinstance(index, Traced) else _static_array(graph, index))
    if node.dtype.kind not in "iu":
        raise IndexError("arrays used as indices must be of integer type")
    return node


def _static_array(graph, values):
    arr = np.asarray(values)
    if arr.ndim == 0:
        return Traced(graph, _const(graph, arr[()]))
    if arr.ndim == 1 and len(arr) and np.array_equal(arr, np.arange(len(arr))):
        return arange(graph, len(arr))
    _refuse("an index array that is not computed on the device")


def gather2(x, rows, cols):
    graph = x.graph
    r, c = _index_node(graph, rows), _index_node(graph, cols)
    shape = broadcast_shapes(r.shape, c.shape)
    return Traced(graph, graph.node("gather2", [x.current(), r, c], shape, x.dtype))


def gather1(x, index):
    graph = x.graph
    i = _index_node(graph, index)
    return Traced(graph, graph.node("gather1", [x.current(), i], i.shape + x.shape[1:], x.dtype))


def scatter_add2(target, rows, cols, values):
    graph = target.graph
    r, c = _index_node(graph, rows), _index_node(graph, cols)
    shape = broadcast_shapes(r.shape, c.shape)
    v = _as_node(graph, broadcast_to(values, shape) if isinstance(values, Traced)
                 else Traced(graph, _as_node(graph, values)))
    if (r.op == "iota" and r.attrs["start"] == 0 and r.attrs["step"] == 1 and target.ndim == 2
            and shape == (target.shape[0],)):
        # one element per row (the adjoint of logits[np.arange(n), labels]): no index repeats,
        # so it is elementwise, out[i, j] = t[i, j] + (v[i] if j == cols[i] else 0), and fuses
        c = _as_node(graph, broadcast_to(Traced(graph, c), shape))
        target._rebind(graph.node("scatter_rows", [target.current(), c, v], target.shape, target.dtype))
        return
    target._rebind(graph.node("scatter_add2", [target.current(), r, c, v], target.shape, target.dtype))


def scatter_add1(target, index, values):
    graph = target.graph
    i = _index_node(graph, index)
    shape = i.shape + target.shape[1:]
    v = _as_node(graph, broadcast_to(values, shape) if isinstance(values, Traced)
                 else Traced(graph, _as_node(graph, values)))
    target._rebind(graph.node("scatter_add1", [target.current(), i, v], target.shape, target.dtype))


def arange(graph, *args):
    if any(isinstance(a, Traced) for a in args):
        _refuse("np.arange with a bound computed on the device")
    r = range(*[operator.index(a) for a in args])
    node = graph.node("iota", (), (len(r),), np.int64, start=r.start, step=r.step)
    return Traced(graph, node)


def full(graph, shape, value, dtype=None):
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (int(shape),)
    if isinstance(value, Traced):
        return broadcast_to(cast(value, np.dtype(dtype)) if dtype else value, shape)
    node = _const(graph, value, np.dtype(dtype) if dtype else (graph.float if isinstance(value, float) else None))
    return Traced(graph, graph.node("ew", [node], shape, node.dtype, fn="copy"))


def extremum_adjoint(gradient, x, axis, keepdims, take_max):
    graph = x.graph
    g = _as_node(graph, gradient)
    node = x.current()
    axes = _normalize_axes(axis, node.ndim)
    kept_shape = tuple(1 if d in axes else n for d, n in enumerate(node.shape))
    index = graph.node("argindex", [node], kept_shape, np.int64, axes=axes, take_max=take_max)
    return Traced(graph, graph.node("argext_scatter", [g, index], node.shape,
                                    _result_dtype(graph, "mul", [g, node]), axes=axes))
