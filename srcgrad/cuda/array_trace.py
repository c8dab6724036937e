"""CUDA array mode, stage 1: trace the generated adjoint into a graph of whole-array operations.

The adjoint that srcgrad generates for array code (``target="python"``, the same source the cpu
backend compiles) is straight-line NumPy: ``_t1 = X @ W1``, ``_adj_t2 = unbroadcast(...)``,
``scatter_add2(_adj_z, ...)``.  Running it once with :class:`Traced` values in place of arrays
records every operation with its static shape and dtype into a graph of nodes;
:mod:`srcgrad.cuda.array_plan` then fuses the graph into CUDA kernels.

Shapes are static (a plan is built per argument shape signature), so ``X.shape[0]`` and loop
bounds over shapes are plain ints while tracing.  What cannot be traced is refused with a clear
:class:`srcgrad.SrcgradError` that names the generated line: branches on array values (use
``np.where``), tapes (loops whose iterations save values), NumPy functions without a CUDA rule.

The graph, its nodes and the traced values: :mod:`srcgrad.cuda.array_graph`.
"""

from __future__ import annotations

import ast
import builtins
import math

import numpy as np

from .. import helpers
from ..errors import SrcgradError
from .array_graph import (Graph, Traced, _as_node, _const, _refuse, arange, broadcast_to, elementwise,
                          expand_dims, extremum_adjoint, full, gather2, matmul, mean, outer, reduce,
                          reshape, scatter_add1, scatter_add2, transpose)


# ------------------------------------------------------------------------------------------------
# The namespace the generated adjoint runs in while tracing
# ------------------------------------------------------------------------------------------------

class _TracingNumPy:
    """``np`` while tracing: the functions generated adjoints use, as graph operations."""

    newaxis = None
    pi, e, inf, nan = math.pi, math.e, math.inf, math.nan
    float32, float64, int64, int32, bool_ = np.float32, np.float64, np.int64, np.int32, np.bool_

    def __init__(self, graph):
        self._g = graph

    def __getattr__(self, name):
        unary = {"exp", "log", "tanh", "sqrt", "abs", "absolute", "sign", "sin", "cos", "log1p",
                 "expm1", "square", "negative", "logical_not"}
        binary = {"maximum": "maximum", "minimum": "minimum", "add": "add", "subtract": "sub",
                  "multiply": "mul", "divide": "div", "power": "pow", "logical_and": "and",
                  "logical_or": "or", "greater": "gt", "less": "lt", "greater_equal": "ge",
                  "less_equal": "le", "equal": "eq", "not_equal": "ne"}
        g = self._g
        if name in unary:
            fn = {"absolute": "abs", "negative": "neg", "logical_not": "not"}.get(name, name)
            return lambda x: _lift(g, x, lambda: elementwise(g, fn, x), getattr(np, name))
        if name in binary:
            return lambda a, b: elementwise(g, binary[name], a, b)
        _refuse(f"np.{name} has no CUDA array rule (srcgrad.cuda.array_trace._TracingNumPy)")

    # functions with keywords or non-elementwise meaning
    def where(self, cond, a, b):
        return elementwise(self._g, "where", cond, a, b)

    def clip(self, x, lo, hi):
        return elementwise(self._g, "clip", x, lo, hi)

    def sum(self, x, axis=None, keepdims=False):
        return reduce(x, "sum", axis, keepdims)

    def max(self, x, axis=None, keepdims=False):
        return reduce(x, "max", axis, keepdims)

    amax = max

    def min(self, x, axis=None, keepdims=False):
        return reduce(x, "min", axis, keepdims)

    amin = min

    def mean(self, x, axis=None, keepdims=False):
        return mean(x, axis, keepdims)

    def dot(self, a, b):
        return matmul(self._g, a, b)

    matmul = dot

    def outer(self, a, b):
        return outer(self._g, a, b)

    def transpose(self, x, axes=None):
        return transpose(x, axes)

    def reshape(self, x, shape):
        return reshape(x, shape)

    def ravel(self, x):
        return reshape(x, (-1,))

    def expand_dims(self, x, axis):
        return expand_dims(x, axis)

    def arange(self, *args, dtype=None):
        return arange(self._g, *args)

    def zeros(self, shape, dtype=None):
        return full(self._g, shape, 0.0, dtype or self._g.float)

    def ones(self, shape, dtype=None):
        return full(self._g, shape, 1.0, dtype or self._g.float)

    empty = zeros

    def full(self, shape, value, dtype=None):
        return full(self._g, shape, value, dtype)

    def zeros_like(self, x, dtype=None):
        return full(self._g, np.shape(x) if not isinstance(x, Traced) else x.shape, 0, dtype or _dtype_of(x))

    empty_like = zeros_like

    def ones_like(self, x, dtype=None):
        return full(self._g, x.shape if isinstance(x, Traced) else np.shape(x), 1, dtype or _dtype_of(x))

    def full_like(self, x, value, dtype=None):
        return full(self._g, x.shape if isinstance(x, Traced) else np.shape(x), value, dtype or _dtype_of(x))

    def shape(self, x):
        return x.shape if isinstance(x, Traced) else np.shape(x)

    def size(self, x):
        return x.size if isinstance(x, Traced) else np.size(x)

    def asarray(self, x):
        return x

    def copy(self, x):
        return x.copy() if isinstance(x, Traced) else x


def _dtype_of(x):
    return x.dtype if isinstance(x, Traced) else np.asarray(x).dtype


def _lift(graph, x, traced, plain):
    return traced() if isinstance(x, Traced) else plain(x)


def _runtime_shims(graph):
    """The runtime helpers generated array code calls (srcgrad.runtime), as graph operations."""

    def unbroadcast(gradient, like):
        shape = like.shape if isinstance(like, Traced) else np.shape(like)
        if not isinstance(gradient, Traced):
            return gradient if np.shape(gradient) == shape else np.sum(gradient)
        if gradient.shape == tuple(shape):
            return gradient
        extra = gradient.ndim - len(shape)
        lead = tuple(range(extra))
        stretched = tuple(extra + d for d, s in enumerate(shape) if s == 1 and gradient.shape[extra + d] != 1)
        out = reduce(gradient, "sum", lead + stretched, False, keep_axes=stretched)
        return out

    def expand_reduced(gradient, x, axis, keepdims):
        g = gradient if isinstance(gradient, Traced) else Traced(graph, _as_node(graph, gradient))
        if axis is not None and not keepdims:
            g = expand_dims(g, axis)
        return broadcast_to(g, x.shape)

    def reduced_count(x, axis):
        return x.size if axis is None else x.shape[axis]

    def reduce_mean(x, axis, keepdims):
        return mean(x, axis, keepdims)

    def matmul_grad_left(g, a, b):
        if a.ndim == 1 and b.ndim == 1:
            return g * b
        if b.ndim == 1:
            return outer(graph, g, b)
        if a.ndim == 1:
            return matmul(graph, b, g)
        return matmul(graph, g, transpose(b))

    def matmul_grad_right(g, a, b):
        if a.ndim == 1 and b.ndim == 1:
            return g * a
        if b.ndim == 1:
            return matmul(graph, transpose(a), g)
        if a.ndim == 1:
            return outer(graph, a, g)
        return matmul(graph, transpose(a), g)

    def clip_scalar(x, lo, hi):
        return elementwise(graph, "clip", x, lo, hi)

    def push(tape, top, value):
        tape.items[top] = _snapshot(graph, value)
        return tape, top + 1

    def push_slice(tape, top, view):
        tape.items[top] = _snapshot(graph, view)
        return tape, top + (view.size if isinstance(view, Traced) else int(np.size(view)))

    def tape_slice(tape, top, like):
        return tape[top]

    shims = dict(
        unbroadcast=unbroadcast, expand_reduced=expand_reduced, reduced_count=reduced_count,
        reduce_sum=lambda x, axis, keepdims: reduce(x, "sum", axis, keepdims),
        reduce_max=lambda x, axis, keepdims: reduce(x, "max", axis, keepdims),
        reduce_min=lambda x, axis, keepdims: reduce(x, "min", axis, keepdims),
        reduce_mean=reduce_mean,
        reduce_prod=lambda x, axis, keepdims: _refuse("np.prod (array mode reduces with sum, "
                                                      "mean, max and min)"),
        max_adjoint=lambda g, x, axis, keepdims: extremum_adjoint(g, x, axis, keepdims, True),
        min_adjoint=lambda g, x, axis, keepdims: extremum_adjoint(g, x, axis, keepdims, False),
        prod_adjoint=lambda g, x, axis, keepdims: _refuse("np.prod (array mode reduces with sum, "
                                                          "mean, max and min)"),
        matmul_grad_left=matmul_grad_left, matmul_grad_right=matmul_grad_right,
        gather2=gather2, scatter_add2=scatter_add2, scatter_add1=scatter_add1,
        clip_scalar=clip_scalar, reshape_any=reshape,
        jit=lambda f: f,
    )
    shims.update(push_float=push, push_int=push, push_slice=push_slice, tape_slice=tape_slice,
                 new_float_tape=_TraceTape, new_int_tape=_TraceTape, new_float32_tape=_TraceTape)

    # snapshots of arrays rebound in a loop (transform.py): a list, or a buffer by position
    def same_shape(old, new):
        if tuple(np.shape(old)) != tuple(np.shape(new)):
            raise SrcgradError("an array variable rebound in a loop changes shape from one "
                               "assignment to the next; use a new name for the value of the new shape")

    def count_snapshot(total, snapshots, array, may_be_unset):
        if snapshots and not (may_be_unset and len(snapshots) == 1 and np.size(snapshots[-1]) == 0):
            same_shape(snapshots[-1], array)
        return total

    def pop_snapshot(snapshots, current, may_be_unset):
        old = snapshots.pop()
        if not (may_be_unset and not snapshots and np.size(old) == 0):
            same_shape(old, current)
        return old

    def push_snapshot(buffer, top, array):
        if top and top - 1 in buffer.items:
            same_shape(buffer.items[top - 1], array)
        buffer.items[top] = _snapshot(graph, array)
        return top + 1

    def snapshot_at(buffer, top, current):
        same_shape(buffer.items[top], current)
        return buffer.items[top]

    shims.update(count_snapshot=count_snapshot, pop_snapshot=pop_snapshot, push_snapshot=push_snapshot,
                 snapshot_at=snapshot_at, snapshot_buffer=lambda array, count: _TraceTape())
    return shims


class _TraceTape:
    """The tape while tracing: straight-line code pushes and pops in a fixed order, so the tape
    is just the traced values by position (saved values cost nothing on the device: the graph
    keeps the node of the overwritten value)."""

    def __init__(self):
        self.items = {}

    def __getitem__(self, position):
        try:
            return self.items[int(position)]
        except KeyError:
            _refuse(f"internal: nothing was pushed at tape position {position}")


def _snapshot(graph, value):
    """The value now, unaffected by later in-place updates of the array it views."""
    if isinstance(value, Traced):
        return Traced(graph, value.current())
    return value


class _LabelAssignments(ast.NodeTransformer):
    """``x = expr`` becomes ``x = _label(expr, "x")`` so nodes carry the generated names, and each
    statement is preceded by ``_at("statement")`` so nodes carry the statement they come from."""

    def __init__(self, source):
        self.source = source

    def _wrap(self, value, name):
        return ast.Call(ast.Name("_label", ast.Load()), [value, ast.Constant(name)], [])

    def _text(self, stmt):
        """The generated statement (joined if it was wrapped over lines)."""
        text = ast.get_source_segment(self.source, stmt) or ""
        return " ".join(part.strip() for part in text.splitlines()).replace("( ", "(").replace(" ,", ",")

    def _mark(self, body):
        out = []
        for stmt in body:
            text = self._text(stmt)
            out.append(ast.Expr(ast.Call(ast.Name("_at", ast.Load()), [ast.Constant(text)], [])))
            visited = self.visit(stmt)
            out.extend(visited if isinstance(visited, list) else [visited])
        return out

    def visit_FunctionDef(self, node):
        node.body = self._mark(node.body)
        return node

    def visit_For(self, node):
        node.body = self._mark(node.body)
        return node

    visit_While = visit_For

    def visit_If(self, node):
        node.body, node.orelse = self._mark(node.body), self._mark(node.orelse)
        return node

    def visit_Assign(self, node):
        if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            node.value = self._wrap(node.value, node.targets[0].id)
        return node

    def visit_AugAssign(self, node):
        if isinstance(node.target, ast.Name):
            name = node.target.id
            return [node, ast.Expr(self._wrap(ast.Name(name, ast.Load()), name))]
        return node

    def visit_Expr(self, node):  # scatter_add2(_adj_z, ...), a helper writing in place: label the array
        call = node.value
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and \
                call.func.id in helpers.in_place_names() and call.args and isinstance(call.args[0], ast.Name):
            return [node, ast.Expr(self._wrap(ast.Name(call.args[0].id, ast.Load()), call.args[0].id))]
        return node


def trace(module_source, adjoint_name, params, arguments, precision, seed=1.0):
    """Run ``adjoint_name`` from the generated (python-target) ``module_source`` on traced stand-ins.

    ``arguments`` maps each parameter to ``("array", shape, dtype)``, ``("scalar", dtype)`` (a
    float passed at each call) or ``("static", value)`` (ints and other values fixed in the
    plan).  Returns the :class:`Graph` with outputs (value, gradients...)."""
    graph = Graph(precision)
    tree = ast.parse(module_source)
    tree = ast.fix_missing_locations(_LabelAssignments(module_source).visit(tree))
    namespace = {"__name__": "srcgrad_cuda_trace", "__builtins__": builtins,
                 "_label": lambda value, _name: value, "_at": lambda text: None}   # (module level)
    exec(compile(tree, "<srcgrad generated adjoint>", "exec"), namespace)

    def label(value, name):
        if isinstance(value, Traced) and value.node.label is None:
            value.node.label = name
        return value

    def at(text):
        graph.current_line = text

    namespace.update(_runtime_shims(graph))
    namespace["np"] = _TracingNumPy(graph)
    namespace["math"] = _TracingMath(graph)
    namespace["_label"] = label
    namespace["_at"] = at
    values = []
    for name in params:
        spec = arguments[name]
        if spec[0] == "array":
            node = graph.node("input", (), spec[1], spec[2], param=name)
            node.label = name
            values.append(Traced(graph, node))
            graph.inputs.append((name, node))
        elif spec[0] == "scalar":
            node = graph.node("scalar", (), (), spec[1], param=name)
            node.label = name
            values.append(Traced(graph, node))
            graph.inputs.append((name, node))
        else:
            values.append(spec[1])
            graph.inputs.append((name, None))
    seed_value = np.dtype(precision).type(seed)
    try:
        result = namespace[adjoint_name](*values, seed_value)
    except SrcgradError as exc:
        where = f" (at generated line: {graph.current_line})" if graph.current_line else ""
        raise SrcgradError(f"{exc}{where}") from None
    value, grads = result
    for out in (value,) + tuple(grads):
        graph.outputs.append(_output_node(graph, out))
    return graph


def _output_node(graph, out):
    """Each output gets a node of its own (a copy where it is an input, a constant or a view)."""
    if isinstance(out, Traced):
        node = out.current()
    else:
        node = _const(graph, out)
    if node.op in ("input", "scalar", "const", "view", "reshape") or node in graph.outputs:
        node = graph.node("ew", [node], node.shape, node.dtype if node.op != "const" else
                          (graph.float if node.dtype.kind == "f" else node.dtype), fn="copy")
    return node


class _TracingMath:
    """``math`` while tracing (scalar code on 0-d values)."""

    def __init__(self, graph):
        self._g = graph

    def __getattr__(self, name):
        g = self._g
        if name in ("exp", "log", "tanh", "sqrt", "sin", "cos", "log1p", "expm1"):
            return lambda x: _lift(g, x, lambda: elementwise(g, name, x), getattr(math, name))
        if name == "fabs":
            return lambda x: _lift(g, x, lambda: elementwise(g, "abs", x), math.fabs)
        return getattr(math, name)
