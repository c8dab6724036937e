"""Forward mode: the tangents of squares, cheaper than the product rule (used by
:class:`srcgrad.forward.ForwardTransformer` for ``u * v``).

The product rule writes the tangent of ``u * v`` as ``du * v + u * dv``. Two forms of a square are
common in objectives (``a * a``, ``100.0 * a * a``) and have a cheaper tangent of the same value:

* ``x * x`` (one name twice): ``x * dx * 2.0`` (two operations instead of three; in hvp, which
  differentiates the tangent code again in reverse mode, fewer adjoint statements too);
* ``u * v`` (either order) where ``u = c * v`` was computed earlier in the same block, ``c`` a
  number and neither name assigned since: ``(2 c) * v * dv``, the constant folded. Folded, the
  tangent is one multiplication more than the primal's and reads ``v`` rather than ``u``: LLVM
  writes ``2.0 * u`` as ``u + u``, and Rosenbrock's jvp loop is bound by the floating-point adders
  (10 additions to 7 multiplications per iteration with ``2.0 * u * dv``, 9 to 8 folded; the
  loop took about 0.9x the time, n = 10^6, machine under load).

``x * dx * 2.0`` is the product rule's value bit for bit (``p + p`` and ``2 p`` are the same
number); ``(2 c) * v * dv`` is ``2 u dv`` bit for bit (``2 fl(c v)`` is ``fl(2 c v)``: scaling by two
is exact in binary floating point; the constant is left alone when ``2 c`` would overflow, in float32
too) and the product rule's ``c dv v + u dv`` up to rounding. ``SQUARES = False`` turns both off
(the tests compare against the product rule that way).
"""
import ast

import numpy as np

from . import kinds as K
from .normalize import name_load

SQUARES = True

# the largest constant c whose 2 c is a float32 number (float32 working precision casts it)
_LARGEST = float(np.finfo(np.float32).max) / 2


def square_tangent(transformer, value):
    """The tangent expression of ``value`` (a BinOp) when it is one of the squares above, or
    None (the product rule then serves)."""
    if not SQUARES or not isinstance(value.op, ast.Mult):
        return None
    left, right = value.left, value.right
    if not (isinstance(left, ast.Name) and isinstance(right, ast.Name)):
        return None
    if left.id == right.id:
        kind = transformer.a.kinds.get(left.id)
        if left.id not in transformer.a.active or kind is None or not kind.is_float or kind.cls == "tuple":
            return None
        # (x dx) 2, not 2 x dx: hvp's reverse sweep then needs no product 2 x of its own (in a
        # loop that carries x, it would tape one per iteration)
        product = ast.BinOp(left=name_load(left.id), op=ast.Mult(), right=name_load(transformer.tan(left.id)))
        return ast.BinOp(left=product, op=ast.Mult(), right=ast.Constant(2.0))
    found = scaled_square(transformer, left, right)
    if found is None:
        return None
    c, v = found
    scaled = ast.BinOp(left=ast.Constant(2.0 * c), op=ast.Mult(), right=name_load(v))
    return ast.BinOp(left=scaled, op=ast.Mult(), right=name_load(transformer.tan(v)))


def scaled_square(transformer, left, right):
    """``(c, v)`` when ``left * right`` is ``u * v`` (either order) with ``u = c * v`` (either
    order) computed earlier in the block being transformed (``transformer.context``: the block's
    statements and this one's index), a number ``c``, ``v`` a varying float, and neither name
    assigned in between; else None."""
    context = getattr(transformer, "context", None)
    if context is None:
        return None
    stmts, k = context
    a = transformer.a
    for u, v in ((left.id, right.id), (right.id, left.id)):
        if u == v or not (a.kinds.get(v, K.FLOAT).cls == "float" and v in a.active):
            continue
        for i in range(k - 1, -1, -1):
            stmt = stmts[i]
            assigned = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name) and \
                    stmt.targets[0].id == u:
                c = _constant_times(stmt.value, v)
                if c is not None:
                    return c, v
                break
            if assigned & {u, v} or not isinstance(stmt, (ast.Assign, ast.Expr, ast.Pass)):
                break
    return None


def _constant_times(value, v):
    """``c`` when ``value`` is ``c * v`` or ``v * c`` for a number ``c`` (small enough that ``2 c``
    stays finite in float32), else None."""
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Mult)):
        return None
    for c, w in ((value.left, value.right), (value.right, value.left)):
        if isinstance(c, ast.Constant) and type(c.value) in (int, float) and \
                isinstance(w, ast.Name) and w.id == v and abs(c.value) <= _LARGEST:
            return float(c.value)
    return None
