"""First contributions assign: a scalar adjoint known to be zero gets ``=`` instead of ``+=``.

The reverse sweep zeroes a scalar's adjoint after reversing its assignment and accumulates into it
with ``+=``. Where the adjoint is certainly zero (right after its initialisation or reset, or at
the top of a loop body that ends by resetting it), ``_adj_a += e`` is ``_adj_a = e``: the same
value, without an addition of ``0.0`` that the compiler may not remove (``0.0 + x`` is not ``x``
for ``x = -0.0``), which sits in the loop's critical path. Scalars only: an array adjoint assigned
from an expression would share that array.

Input: the statements of the reverse sweep (after tape placement and lowering of placeholders)
and the names of the scalar adjoints. A forward pass keeps the set of names known to be zero; a
loop body starts with those that are zero before the loop and again at the end of the body.
"""
import ast

from .placeholders import Comment


def assign_first_contributions(stmts, scalars):
    """``stmts`` with each ``a += e`` / ``a -= e`` of a scalar adjoint ``a`` known to be zero
    written ``a = e`` / ``a = -e`` (a comment at the top says so when any is)."""
    out, _ = _block(stmts, set(), frozenset(scalars), rewrite=True)
    first = next((node for stmt in out for node in ast.walk(stmt)
                  if getattr(node, "zero_adjoint", False)), None)
    if first is not None:       # (the line of the first one)
        line = getattr(first, "lineno", 1)
        out.insert(0, Comment("scalar adjoints known to be zero take their first contribution by "
                              "assignment (`=`, not `+=`: no addition of 0.0 in the loops)", line))
    return out


def _block(stmts, zero, scalars, rewrite):
    zero = set(zero)
    out = []
    for stmt in stmts:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id in scalars:
            name = stmt.targets[0].id
            if isinstance(stmt.value, ast.Constant) and stmt.value.value == 0.0 and \
                    not isinstance(stmt.value.value, bool):
                zero.add(name)
            else:
                zero.discard(name)
            out.append(stmt)
        elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name) and \
                stmt.target.id in zero and isinstance(stmt.op, (ast.Add, ast.Sub)) and \
                stmt.target.id not in _names(stmt.value):
            name = stmt.target.id
            zero.discard(name)
            if rewrite:
                value = stmt.value if isinstance(stmt.op, ast.Add) else \
                    ast.UnaryOp(op=ast.USub(), operand=stmt.value)
                new = ast.copy_location(ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())],
                                                   value=value), stmt)
                new.zero_adjoint = True
                out.append(new)
            else:
                out.append(stmt)
        elif isinstance(stmt, (ast.For, ast.While)):
            touched = _written(stmt)
            # names zero at the top of every iteration: zero before the loop and at the end of
            # the body when it starts with them zero (the largest such set: shrink until stable)
            entry = zero & touched
            while True:
                _, end = _block(stmt.body, entry, scalars, rewrite=False)
                stable = entry & end
                if stable == entry:
                    break
                entry = stable
            if rewrite:
                body, _ = _block(stmt.body, entry, scalars, rewrite=True)
                stmt.body = body
            # after the loop (run or not): zero if zero at every iteration's top and end
            zero = (zero - touched) | entry
            out.append(stmt)
        elif isinstance(stmt, ast.If):
            body, zb = _block(stmt.body, zero, scalars, rewrite)
            orelse, zo = _block(stmt.orelse, zero, scalars, rewrite)
            if rewrite:
                stmt.body, stmt.orelse = body, orelse
            zero = zb & zo
            out.append(stmt)
        elif isinstance(stmt, (Comment, ast.Pass)):
            out.append(stmt)
        else:
            zero -= _written(stmt)
            out.append(stmt)
    return out, zero


def _names(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _written(node):
    """Names a statement (or a loop, a branch, with everything inside) assigns."""
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
            out.add(n.id)
        elif isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name):
            out.add(n.target.id)
    return out
