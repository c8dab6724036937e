"""Normalize, part 0 (continued): ``np.inner`` and ``np.tensordot`` over one axis become a matrix
product ``@``, for the targets whose backend asks for it (``backends.Backend.lower_products``: the
cuda target). The python target keeps the calls (their rule computes every ndim); the cpu target
keeps them too and writes them once the kinds are known (``backends/cpu/tensordots.py``).

* ``np.inner(a, b)`` (a product over the last axes of both) is ``a @ np.transpose(b)``;
* ``np.tensordot(a, b, 1)`` (``axes=1``: the last axis of ``a`` with the first of ``b``) is ``a @ b``;
* ``np.tensordot(a, b, ([i], [j]))`` (one static axis each, or ``(i, j)``) is
  ``np.moveaxis(a, i, -1) @ np.moveaxis(b, j, 0)``.

This stage runs before the operands' ndims are known (the normalized body serves every argument
kind), and ``@`` equals these products only when the second operand has one or two axes (with more,
``@`` batches over its leading axes). The ``@`` node therefore carries ``lowered_from``, and kind
inference (analyse.py) refuses, naming the line, a lowered product whose operands do not fit,
rather than computing the batched product. Other forms (``axes=0``, ``axes=2``, several axes in a
pair, non-constant axes) keep the call: its rule on the python target, the cpu target's refusal.
"""
import ast

import numpy as np

from .sequences import _call


def lower_tensordots(body, fsrc):
    """Rewrite every ``np.inner``/``np.tensordot`` call in ``body`` that this module handles (in place)."""

    class Lower(ast.NodeTransformer):
        def visit_Call(self, node):
            self.generic_visit(node)
            try:
                callee = fsrc.resolve(node.func)
            except (KeyError, AttributeError):
                return node
            if callee is np.inner:
                return _inner(node) or node
            if callee is np.tensordot:
                return _tensordot(node) or node
            return node

    module = ast.Module(body=body, type_ignores=[])
    Lower().visit(module)
    return module.body


def _matmul(left, right, like, label):
    node = ast.copy_location(ast.BinOp(left=left, op=ast.MatMult(), right=right), like)
    node.lowered_from = label
    return node


def _plain(args):
    return not any(isinstance(a, ast.Starred) for a in args)


def _inner(node):
    if node.keywords or len(node.args) != 2 or not _plain(node.args):
        return None
    a, b = node.args
    return _matmul(a, _call(np.transpose, "np.transpose", [b], node), node, "np.inner")


def _tensordot(node):
    args = list(node.args)
    if not _plain(args) or len(args) < 2:
        return None
    if node.keywords:
        if len(node.keywords) != 1 or node.keywords[0].arg != "axes" or len(args) != 2:
            return None
        args.append(node.keywords[0].value)
    if len(args) != 3:
        return None     # the default axes=2: two axes contracted, kept as np.tensordot
    a, b, axes = args
    if isinstance(axes, ast.Constant) and type(axes.value) is int and axes.value == 1:
        return _matmul(a, b, node, "np.tensordot")
    pair = _axis_pair(axes)
    if pair is None:
        return None
    i, j = pair
    left = a if i == -1 else _moved(a, i, -1, node)
    right = b if j == 0 else _moved(b, j, 0, node)
    return _matmul(left, right, node, "np.tensordot")


def _axis_pair(axes):
    """(i, j) for axes written ``(i, j)``, ``([i], [j])`` or ``((i,), (j,))`` with int constants."""
    if not isinstance(axes, (ast.Tuple, ast.List)) or len(axes.elts) != 2:
        return None
    pair = []
    for side in axes.elts:
        if isinstance(side, (ast.Tuple, ast.List)):
            if len(side.elts) != 1:
                return None
            side = side.elts[0]
        if isinstance(side, ast.UnaryOp) and isinstance(side.op, ast.USub) and isinstance(side.operand, ast.Constant):
            side = ast.Constant(-side.operand.value) if type(side.operand.value) is int else side
        if not (isinstance(side, ast.Constant) and type(side.value) is int):
            return None
        pair.append(side.value)
    return tuple(pair)


def _moved(operand, source, destination, like):
    return _call(np.moveaxis, "np.moveaxis", [operand, ast.Constant(source), ast.Constant(destination)], like)
