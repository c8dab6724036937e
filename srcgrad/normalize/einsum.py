"""Normalize, part 0 (continued): ``np.einsum`` becomes the products, transposes and sums it stands
for, which both targets run and differentiate with their own rules (the compiled target has no
einsum).

* an index repeated inside one operand (``ii->``, ``ii->i``, ``bii->bi``): that operand's diagonal
  first, as its product with an identity ``np.eye(n)`` on those two axes summed over the second;
* three or more operands: contracted two at a time, left to right, each intermediate keeping the
  indices the output or a later operand still needs; then, for one or two operands:

* one contracted index between two operands of at most two axes (``ij,jk->ik``, ``ij,j->i``,
  ``i,i->``, ``ji,jk->ki``): a matrix product ``@`` of the operands, transposed as needed;
* anything else (batched ``bij,bjk->bik``, outer ``i,j->ij``, elementwise ``ij,ij->ij``, sums
  ``ij->i``, transposes ``ij->ji``): each operand transposed into the order of the result's
  indices followed by the summed ones, ``None`` axes for the indices it lacks, their broadcast
  product summed over the trailing summed axes. (One operand and no sum: a transpose of it, a view
  of the operand, as NumPy's einsum returns.)

Subscripts with ``...`` (its number of axes is not known here: the body serves every ndim) or
keywords keep the ``np.einsum`` call (its rule, python target; the cpu target refuses it).
"""
import ast
import copy

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
    if node.keywords or len(args) < 2 or any(isinstance(a, ast.Starred) for a in args) or \
            not (isinstance(args[0], ast.Constant) and isinstance(args[0].value, str)):
        return None
    operands = args[1:]
    try:
        inputs, output = _einsum_parts(args[0].value, len(operands))
    except ValueError:
        return None
    letters = "".join(inputs)
    if len(set(output)) != len(output) or not all(c.isalpha() for c in letters + output) or \
            not set(output) <= set(letters):
        return None     # a repeated output index, `...`, a bad subscript: np.einsum decides
    operands, inputs = list(operands), list(inputs)
    for k, spec in enumerate(inputs):
        operands[k], inputs[k] = _diagonals(operands[k], spec, node)
    return _contracted(inputs, output, operands, node)


def _contracted(inputs, output, operands, node):
    """The einsum of operands without repeated indices: two at a time, left to right (each
    intermediate keeps the indices the output or a later operand still needs)."""
    if len(operands) > 2:
        needed = set(output).union(*inputs[2:])
        kept = "".join(c for c in dict.fromkeys(inputs[0] + inputs[1]) if c in needed)
        first = _contracted(inputs[:2], kept, operands[:2], node)
        return _contracted([kept] + inputs[2:], output, [first] + operands[2:], node)
    letters = "".join(inputs)
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


def _diagonals(operand, spec, like):
    """``operand`` (subscripts ``spec``) with each index repeated inside it (``ii``, ``bii``) taken
    once: its diagonal, as the product with an identity ``np.eye(n)`` placed on the two axes,
    summed over the second (every target runs and differentiates those). Returns the new operand
    and its subscripts."""
    while len(set(spec)) != len(spec):
        c = next(c for c in spec if spec.count(c) > 1)
        p = spec.index(c)
        q = spec.index(c, p + 1)
        size = ast.Subscript(value=ast.Attribute(value=copy.deepcopy(operand), attr="shape",
                                                 ctx=ast.Load()),
                             slice=ast.Constant(p), ctx=ast.Load())
        index = ast.Tuple(elts=[ast.Slice() if k in (p, q) else ast.Constant(None)
                                for k in range(len(spec))], ctx=ast.Load())
        mask = ast.Subscript(value=_call(np.eye, "np.eye", [size], like), slice=index, ctx=ast.Load())
        operand = _call(np.sum, "np.sum", [ast.BinOp(left=operand, op=ast.Mult(), right=mask)], like)
        operand.keywords = [ast.keyword(arg="axis", value=ast.Constant(q))]
        for sub in ast.walk(operand):
            if not hasattr(sub, "lineno"):
                ast.copy_location(sub, like)
        spec = spec[:q] + spec[q + 1:]
    return operand, spec


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
