"""Merged contributions: two additions into the same adjoint element in a block become one.

A statement that reads one element twice (the heat stencil's ``u[i] + kappa * (u[i - 1] - 2.0 *
u[i] + u[i + 1])``) has a reverse that adds into that element twice:

    _adj_u[i] += _adj_t6
    _adj_u[_t4] += _adj_t5
    _adj_u[i] += _adj_t3

Each ``+=`` on an array element is a load and a store in the loop; adding the two contributions
first (``_adj_u[i] += _adj_t6 + _adj_t3`` in place of the second) keeps one. Exact up to the order
of the additions (``(x + a) + b`` becomes ``x + (a + b)``, as ``x[i] * x[i]``'s doubled
contribution does), so the gradient agrees with the unmerged one to rounding.

When: both are ``X[e] += ...`` on an adjoint array with the same index expression, in one block
(one loop body; no loop between them; an ``if`` between only of the statements allowed here, as
first_contributions' guard on the loop variable is), and the statements between them neither read
``X`` nor assign a name the index or the first contribution reads. Writes into other elements of
``X`` may stand between: ``X[d] += c`` (additions commute) or, where ``d`` is provably not ``e``
(``_t4 = i - 1`` against ``i``, neither rebound in the block), ``X[d] = c``.

A first contribution written ``=`` (first_contributions.py, which runs before: program.py) merges
the same way, ``X[e] = a`` ... ``X[e] += b`` becoming ``X[e] = a + b``; then only writes into
elements provably not ``e`` may stand between (``X[j] += c`` with ``j == e`` would be lost under the
moved assignment).
"""
import ast

from . import naming as N
from .placeholders import Comment

# False: no merging (tests compare both; not in the cache key)
MERGE = True


def merge_contributions(stmts, shared=()):
    """``stmts`` (the reverse sweep) with such pairs of additions merged, recursively.
    ``shared``: adjoint arrays another name may hold (passed in by a caller): never merged."""
    if not MERGE:
        return stmts
    safe = _unaliased(stmts) - set(shared)
    return _merge(stmts, safe)


def _merge(stmts, safe):
    out = []
    for stmt in stmts:
        if isinstance(stmt, (ast.For, ast.While)):
            stmt.body = _merge(stmt.body, safe)
        elif isinstance(stmt, ast.If):
            stmt.body = _merge(stmt.body, safe)
            stmt.orelse = _merge(stmt.orelse, safe)
        out.append(stmt)
    k = 0
    while k < len(out):
        partner = _partner(out, k, safe)
        if partner is None:
            k += 1
            continue
        first, second = out[k], out[partner]
        total = ast.BinOp(left=first.value, op=ast.Add(), right=second.value)
        if isinstance(first, ast.Assign):       # `X[e] = a` ... `X[e] += b`: `X[e] = a + b`
            merged = ast.Assign(targets=[second.target], value=total)
        else:
            merged = ast.AugAssign(target=second.target, op=ast.Add(), value=total)
        merged = ast.copy_location(merged, second)
        merged.merged_contribution = True
        note = Comment(f"the two contributions to `{ast.unparse(second.target)}` added first: one "
                       "load and store of the element", _source_line(out, k))
        moved = []
        if isinstance(first, ast.Assign) and k > 0 and isinstance(out[k - 1], Comment) and \
                out[k - 1].text.startswith("first contribution"):
            moved = [out[k - 1]]        # its note stays right above the `=` it explains
        out[partner:partner + 1] = [note] + moved + [merged]
        del out[k - len(moved):k + 1]
        k -= len(moved)
    return out


def _partner(stmts, k, safe):
    """The position of the later ``X[e] += b`` that ``stmts[k]`` (``X[e] += a``) can merge into."""
    first = stmts[k]
    assigned = _element_assign(first)
    if not (assigned or _element_add(first)):
        return None
    target = first.targets[0] if assigned else first.target
    array = target.value.id
    if array not in safe:
        return None
    index = ast.dump(target.slice)
    keep = _names(target.slice) | _names(first.value)
    offsets = _offsets(stmts, k)
    at = _offset(target.slice, offsets)
    for j in range(k + 1, len(stmts)):
        stmt = stmts[j]
        if isinstance(stmt, Comment):
            continue
        if _element_add(stmt) and stmt.target.value.id == array:
            if ast.dump(stmt.target.slice) == index:
                return j
        if not _between_ok(stmt, array, assigned, keep, at, offsets):
            return None
    return None


def _between_ok(stmt, array, assigned, keep, at, offsets):
    """May ``stmt`` stand between the two contributions to ``array[e]`` (``e`` at ``at``)?"""
    if isinstance(stmt, Comment):
        return True
    if isinstance(stmt, ast.If):            # (first_contributions' guard on the loop variable)
        return array not in _names(stmt.test) and not keep & _assigned_in(stmt) and \
            all(_between_ok(s, array, assigned, keep, at, offsets) for s in stmt.body + stmt.orelse)
    if not isinstance(stmt, (ast.Assign, ast.AugAssign)) or keep & _assigned(stmt) or \
            (keep & _names(stmt) and any(isinstance(n, ast.Call) for n in ast.walk(stmt))):
        return False            # (a call given what `a` reads may change it in place)
    if array not in _names(stmt):
        return True
    # a write into another element of X: `X[d] += c` commutes with `X[e] += a`; `X[d] = c` or
    # anything after `X[e] = a` only where d is provably not e (`_t4 = i - 1` against `i`)
    if (isinstance(stmt, ast.Assign) and len(stmt.targets) != 1) or not _element_write(stmt, array):
        return False
    other = stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target
    if isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, ast.Add) and not assigned:
        return True
    there = _offset(other.slice, offsets)
    return at is not None and there is not None and at[0] == there[0] and at[1] != there[1]


def _element_write(stmt, array):
    """``X[d] = c`` or ``X[d] op= c`` with neither ``d`` nor ``c`` reading ``X``."""
    target = stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target
    return isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and \
        target.value.id == array and array not in _names(stmt.value) | _names(target.slice)


def _offsets(stmts, k):
    """Names bound once in the block ``stmts``, before ``stmts[k]``, to ``v + c`` / ``v - c``
    (integer ``c``, ``v`` never bound in the block): name -> (v, c). From ``stmts[k]`` on, ``_t4``
    is then ``i - 1`` wherever both are read."""
    counts = {}
    for stmt in stmts:
        if isinstance(stmt, (ast.Assign, ast.AugAssign)):
            for name in _assigned_in(stmt):
                counts[name] = counts.get(name, 0) + 1
        else:
            for name in _assigned_in(stmt):
                counts[name] = counts.get(name, 0) + 2
    out = {}
    for stmt in stmts[:k]:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                isinstance(stmt.targets[0], ast.Name) and counts.get(stmt.targets[0].id) == 1:
            form = _offset(stmt.value, {})
            if form is not None and form[0] not in counts:
                out[stmt.targets[0].id] = form
    return out


def _offset(node, offsets):
    """``node`` as (name, integer offset): ``i`` -> (i, 0), ``i - 1`` -> (i, -1); else None."""
    if isinstance(node, ast.Name):
        return offsets.get(node.id, (node.id, 0))
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)) and \
            isinstance(node.left, ast.Name) and isinstance(node.right, ast.Constant) and \
            type(node.right.value) is int:
        name, base = offsets.get(node.left.id, (node.left.id, 0))
        return name, base + (node.right.value if isinstance(node.op, ast.Add) else -node.right.value)
    return None


def _assigned_in(stmt):
    """Names bound anywhere in ``stmt`` (nested blocks included)."""
    return {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _unaliased(stmts):
    """Adjoint arrays no view or other name can reach: used whole only as the target of an
    assignment of a new array, of ``+=``, inside the value of a ``+=`` or in a ``return``; else
    only indexed by element (no slice: ``_view = _adj_x[i, 1:]`` makes a second path to it)."""
    names, allowed = set(), set()
    for node in (n for stmt in stmts for n in ast.walk(stmt)):
        if isinstance(node, ast.Name) and N.is_adjoint(node.id):
            names.add(node.id)
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and \
                not any(isinstance(n, ast.Slice) or (isinstance(n, ast.Constant) and
                                                     (n.value is None or n.value is Ellipsis))
                        for n in ast.walk(node.slice)):
            allowed.add(id(node.value))        # x[i], x[i, j]: an element (or a row: below)
        elif isinstance(node, ast.Attribute) and node.attr in ("shape", "size", "ndim", "dtype"):
            allowed.add(id(node.value))
        elif isinstance(node, ast.AugAssign):
            allowed.update(id(n) for n in ast.walk(node.value) if isinstance(n, ast.Name))
            if isinstance(node.target, ast.Name):
                allowed.add(id(node.target))
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Tuple) and isinstance(node.value, ast.Tuple) and \
                all(isinstance(n, ast.Name) for n in node.targets[0].elts + node.value.elts) and \
                sorted(n.id for n in node.targets[0].elts) == sorted(n.id for n in node.value.elts):
            # `a, b = b, a` (adjoint_swaps.py): the names trade arrays, none is shared
            allowed.update(id(n) for n in node.targets[0].elts + node.value.elts)
        elif isinstance(node, ast.Return) and node.value is not None:
            allowed.update(id(n) for n in ast.walk(node.value) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name) and isinstance(node.value, (ast.Call, ast.Constant)) \
                and not any(isinstance(n, ast.Name) and N.is_adjoint(n.id) for n in ast.walk(node.value)):
            allowed.add(id(node.targets[0]))
    bad = {n.id for stmt in stmts for n in ast.walk(stmt)
           if isinstance(n, ast.Name) and N.is_adjoint(n.id) and id(n) not in allowed}
    # a row `x[i]` of a 2-d adjoint bound to a name is a view too: a name bound to an indexed
    # adjoint and then indexed itself is taken for one
    for node in (n for stmt in stmts for n in ast.walk(stmt)):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Subscript) and \
                isinstance(node.value.value, ast.Name) and N.is_adjoint(node.value.value.id):
            bound = {t.id for t in node.targets if isinstance(t, ast.Name)}
            if any(isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id in bound
                   for stmt in stmts for n in ast.walk(stmt)):
                bad.add(node.value.value.id)
    return names - bad


def _element_add(stmt):
    """``X[e] += v`` on an adjoint array ``X`` (``v`` not reading ``X``)."""
    return isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, ast.Add) and \
        isinstance(stmt.target, ast.Subscript) and isinstance(stmt.target.value, ast.Name) and \
        N.is_adjoint(stmt.target.value.id) and \
        stmt.target.value.id not in _names(stmt.value) | _names(stmt.target.slice)


def _element_assign(stmt):
    """``X[e] = v`` on an adjoint array ``X`` (``v`` and ``e`` not reading ``X``)."""
    return isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
        isinstance(stmt.targets[0], ast.Subscript) and isinstance(stmt.targets[0].value, ast.Name) and \
        N.is_adjoint(stmt.targets[0].value.id) and \
        stmt.targets[0].value.id not in _names(stmt.value) | _names(stmt.targets[0].slice)


def _names(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _assigned(stmt):
    """Names a statement binds, and arrays it writes into (``Y[j] = ...``)."""
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    out = set()
    for target in targets:
        for n in ast.walk(target):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                out.add(n.id)
            elif isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name):
                out.add(n.value.id)
    return out


def _source_line(stmts, k):
    for stmt in reversed(stmts[:k + 1]):
        if isinstance(stmt, Comment):
            return stmt.lineno_src
    return getattr(stmts[k], "lineno", 1)
