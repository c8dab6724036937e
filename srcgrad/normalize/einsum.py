"""Normalize, part 0 (continued): ``np.einsum`` with one or two operands becomes the products,
transposes and sums it stands for, which both targets run and differentiate with their own rules
(the compiled target has no einsum).

* one contracted index between two operands of at most two axes (``ij,jk->ik``, ``ij,j->i``,
  ``i,i->``, ``ji,jk->ki``): a matrix product ``@`` of the operands, transposed as needed;
* anything else (batched ``bij,bjk->bik``, outer ``i,j->ij``, elementwise ``ij,ij->ij``, sums
  ``ij->i``, transposes ``ij->ji``): each operand transposed into the order of the result's
  indices followed by the summed ones, ``None`` axes for the indices it lacks, their broadcast
  product summed over the trailing summed axes. (One operand and no sum: a transpose of it, a view
  of the operand, as NumPy's einsum returns.)

Subscripts with a repeated index inside one operand (``ii->i``, a diagonal), ``...``, three
operands or keywords keep the ``np.einsum`` call (its rule, python target).
"""
import ast

import numpy as np

from ..runtime import _einsum_parts
from .sequences import _call


def lower_einsums(body, fsrc):
    """Rewrite every ``np.einsum`` call in ``body`` that this module handles (in place)."""

    class Lower(ast.NodeTransformer):
        def visit_Call(self, node):
            self.generic_visit(node)
            try:
                callee = fsrc.resolve(node.func)
            except (KeyError, AttributeError):
                return node
            if callee is not np.einsum:
                return node
            return _lowered(node) or node

    module = ast.Module(body=body, type_ignores=[])
    Lower().visit(module)
    return module.body


def _lowered(node):
    args = node.args
    if node.keywords or not 2 <= len(args) <= 3 or any(isinstance(a, ast.Starred) for a in args) or \
            not (isinstance(args[0], ast.Constant) and isinstance(args[0].value, str)):
        return None
    operands = args[1:]
    try:
        inputs, output = _einsum_parts(args[0].value, len(operands))
    except ValueError:
        return None
    letters = "".join(inputs)
    if any(len(set(spec)) != len(spec) for spec in inputs) or len(set(output)) != len(output) or \
            not all(c.isalpha() for c in letters + output) or not set(output) <= set(letters):
        return None     # a diagonal, a repeated output index, a bad subscript: np.einsum decides
    if len(operands) == 2:
        product = _matmul(inputs, output, operands, node)
        if product is not None:
            return product
    summed = [c for c in dict.fromkeys(letters) if c not in output]
    order = list(output) + summed
    terms = [_expanded(operand, spec, order, node) for operand, spec in zip(operands, inputs)]
    result = terms[0]
    for term in terms[1:]:
        result = ast.copy_location(ast.BinOp(left=result, op=ast.Mult(), right=term), node)
    if not output and summed:
        return _call(np.sum, "np.sum", [result], node)
    for axis in reversed(range(len(output), len(order))):
        result = _call(np.sum, "np.sum", [result], node)
        result.keywords = [ast.keyword(arg="axis", value=ast.Constant(axis))]
    return result


def _matmul(inputs, output, operands, like):
    """``a @ b`` (each transposed as needed) when the subscripts are a matrix product."""
    (sa, sb), (a, b) = inputs, operands
    shared = set(sa) & set(sb)
    if len(sa) > 2 or len(sb) > 2 or len(shared) != 1 or shared & set(output):
        return None
    (c,) = shared
    fa, fb = [x for x in sa if x != c], [x for x in sb if x != c]
    if "".join(fa + fb) != output:
        if "".join(fb + fa) != output:
            return None
        (sa, a, fa), (sb, b, fb) = (sb, b, fb), (sa, a, fa)
    left = a if sa[-1] == c else _transposed(a, like)       # (free, c) or (c,)
    right = b if sb[0] == c else _transposed(b, like)       # (c, free) or (c,)
    return ast.copy_location(ast.BinOp(left=left, op=ast.MatMult(), right=right), like)


def _transposed(operand, like):
    return _call(np.transpose, "np.transpose", [operand], like)


def _expanded(operand, spec, order, like):
    """``operand`` (subscripts ``spec``) with its axes in ``order`` and None for those it lacks."""
    mine = sorted(spec, key=order.index)
    term = operand
    if mine != list(spec):
        axes = ast.Tuple(elts=[ast.Constant(spec.index(c)) for c in mine], ctx=ast.Load())
        term = _call(np.transpose, "np.transpose", [term, axes], like)
    if len(mine) < len(order):
        index = ast.Tuple(elts=[ast.Slice() if c in spec else ast.Constant(None) for c in order],
                          ctx=ast.Load())
        term = ast.Subscript(value=term, slice=index, ctx=ast.Load())
    for sub in ast.walk(term):
        if not hasattr(sub, "lineno"):
            ast.copy_location(sub, like)
    return term
