"""First contributions assign: an adjoint array slot known to be zero takes ``=`` instead of ``+=``.

After the heat stencil's copy loop is reversed (swapped, see adjoint_swaps.py), ``_adj_u`` is zero
on the copied slots, and the reverse of the stencil adds into it:

    for i in range(_t2 - 1, 0, -1):
        _t4 = i - 1
        ...
        _adj_u[_t9] += _adj_t10          # slot i + 1
        _adj_u[i] += _adj_t6             # slot i
        _adj_u[_t4] += _adj_t5           # slot i - 1: no earlier iteration wrote it

Running down from the top, iteration ``i`` is the first to write slot ``i - 1``: it still holds the
zero it had at loop entry, so ``_adj_u[_t4] = _adj_t5`` gives the same value without loading the
slot (a hand-written adjoint assigns ``new[i] = ...`` the same way). Measured on the heat gradient
(nx=128, nt=1000, CPU time, min of 80 batches in one process, load average ~4): the generated
code with this one statement guarded as here 225 µs against 241 µs.

This runs inside the zero-slot analysis of adjoint_swaps.py (which knows, at the entry of each
loop of the reverse sweep, the regions of the candidate adjoint arrays that are zero) and rewrites
``A[e] += v`` (or ``-=``) in a loop ``for i in range(a, b, ±1)`` when:
* ``A`` is one of that pass's candidates (no other name holds its array);
* the statement is a top-level statement of the loop body, and every use of ``A`` in the body is
  an element ``A[i + c]`` (the index ``i`` or a name assigned once, at the top of the body before
  any use, as ``i + k`` or ``i - k``; ``i`` not rebound);
* no write of ``A`` in the body reaches the slot in an earlier iteration (running down, every
  write's offset is at least ``e``'s; running up, at most) or earlier in the same iteration;
* the slots ``e`` visits lie in a region known zero at loop entry, up to constant differences at
  the ends: the iterations outside it keep ``+=`` under a guard on ``i``; the lowest slot
  rewritten is a constant >= 0 (a negative index would wrap around to a slot reached earlier).
The value is that of ``+=`` bit for bit except that a ``-0.0`` contribution stays ``-0.0``.
"""
import ast
import copy

from .placeholders import Comment

# False: always `+=` (tests compare both; not in the cache key)
ASSIGN_FIRST = True


def assign_first_contributions(loop, zero, candidates, facts):
    """``loop`` (a For of the reverse sweep) with its qualifying ``+=`` written as ``=``.
    ``zero``: adjoint name -> zero regions at loop entry (adjoint_swaps' forms, or "all");
    ``facts``: adjoint_swaps._Facts of the function (linear forms of bounds, the region algebra)."""
    if not ASSIGN_FIRST or not isinstance(loop.target, ast.Name):
        return loop
    step = _step(loop)
    region = facts.region(loop)
    if step is None or region is None:
        return loop
    i = loop.target.id
    offsets = _offsets(loop.body, i)
    if offsets is None:
        return loop
    body = []
    for k, stmt in enumerate(loop.body):
        target = _added_element(stmt, candidates)
        if target is None or target[0] not in zero or id(stmt.target.slice) not in offsets:
            body.append(stmt)
            continue
        name, index = target
        c = offsets[id(stmt.target.slice)]
        writes = _writes(loop.body, name, offsets)
        if writes is None or any(step * (other - c) > 0 for other, _ in writes) or \
                any(other == c and place < k for other, place in writes if place != k) or \
                sum(1 for other, place in writes if place == k) != 1:
            body.append(stmt)
            continue
        guard = _guard(zero[name], region, c, i, facts)
        if guard is None:
            body.append(stmt)
            continue
        body.append(Comment(f"first contribution: `{name}` is zero on the slots this loop reaches "
                            f"first here (no earlier iteration wrote them): `=`, not `+=`",
                            stmt.lineno))
        body.append(_rewrite(stmt, guard))
    loop.body = body
    return loop


def _step(loop):
    it = loop.iter
    if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"
            and len(it.args) == 3):
        return None
    step = it.args[2]
    if isinstance(step, ast.Constant) and step.value == 1 and type(step.value) is int:
        return 1
    if isinstance(step, ast.UnaryOp) and isinstance(step.op, ast.USub) and \
            isinstance(step.operand, ast.Constant) and step.operand.value == 1:
        return -1
    if isinstance(step, ast.Constant) and step.value == -1 and type(step.value) is int:
        return -1
    return None


def _offsets(body, i):
    """id(index node) -> c for every index of the body that is ``i + c`` (``i`` itself or a name
    bound once, by a top-level statement before any use, to ``i ± k``); None when ``i`` is rebound."""
    bound = {}
    counts = {}
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                counts[node.id] = counts.get(node.id, 0) + 1
    if counts.get(i):
        return None
    first_use = {}
    for k, stmt in enumerate(body):
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                first_use.setdefault(node.id, k)
    for k, stmt in enumerate(body):
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                isinstance(stmt.targets[0], ast.Name) and counts.get(stmt.targets[0].id) == 1 and \
                first_use.get(stmt.targets[0].id, len(body)) > k:
            c = _shift(stmt.value, i)
            if c is not None:
                bound[stmt.targets[0].id] = c
    out = {}
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Name):
                if node.slice.id == i:
                    out[id(node.slice)] = 0
                elif node.slice.id in bound:
                    out[id(node.slice)] = bound[node.slice.id]
    return out


def _shift(value, i):
    """k for ``i + k``, ``k + i``, ``i - k`` (k an int constant), else None."""
    if isinstance(value, ast.BinOp) and isinstance(value.op, (ast.Add, ast.Sub)):
        left, right = value.left, value.right
        if isinstance(left, ast.Name) and left.id == i and isinstance(right, ast.Constant) and \
                type(right.value) is int:
            return right.value if isinstance(value.op, ast.Add) else -right.value
        if isinstance(value.op, ast.Add) and isinstance(right, ast.Name) and right.id == i and \
                isinstance(left, ast.Constant) and type(left.value) is int:
            return left.value
    return None


def _added_element(stmt, candidates):
    """(name, index) for ``name[index] += v`` / ``-= v`` with ``name`` a candidate, else None."""
    if isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, (ast.Add, ast.Sub)) and \
            isinstance(stmt.target, ast.Subscript) and isinstance(stmt.target.value, ast.Name) and \
            stmt.target.value.id in candidates:
        name = stmt.target.value.id
        if not any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(stmt.value)):
            return name, stmt.target.slice
    return None


def _writes(body, name, offsets):
    """[(offset, top-level position)] of every write of ``name`` in the body; None when ``name``
    is used other than as an element ``name[i + c]``."""
    out = []
    for k, stmt in enumerate(body):
        elements = set()
        for node in ast.walk(stmt):
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and \
                    node.value.id == name:
                if id(node.slice) not in offsets:
                    return None
                elements.add(id(node.value))
                if not isinstance(node.ctx, ast.Load):
                    out.append((offsets[id(node.slice)], k))
        if any(isinstance(node, ast.Name) and node.id == name and id(node) not in elements
               for node in ast.walk(stmt)):
            return None
    return out


def _guard(regions, region, c, i, facts):
    """True when every slot ``i + c`` the loop visits is in a zero region; else a test on ``i``
    that holds exactly on the iterations whose slot is (an end off by a constant); None."""
    ALL, _constant_difference, _plus = facts.ALL, facts.difference, facts.plus
    (lo_form, hi_form), (lo, hi) = region
    shifted_lo = tuple(sorted(_add(dict(lo_form), c).items(), key=repr))
    shifted_hi = tuple(sorted(_add(dict(hi_form), c).items(), key=repr))
    # the slots must not wrap around (``A[-1]`` is the last slot, which another offset may reach
    # first): the lowest slot rewritten is a constant >= 0
    if ALL in regions:
        first = _constant_difference(shifted_lo, ())
        return True if first is not None and first >= 0 else None
    for zone in regions:
        below = _constant_difference(zone[0], shifted_lo)     # zone lo - first slot
        above = _constant_difference(shifted_hi, zone[1])     # last slot - zone hi
        first = _constant_difference(zone[0] if below is not None and below > 0 else shifted_lo, ())
        if below is None or above is None or first is None or first < 0:
            continue
        tests = []
        if below > 0:
            tests.append(ast.Compare(left=ast.Name(id=i, ctx=ast.Load()), ops=[ast.GtE()],
                                     comparators=[_plus(copy.deepcopy(lo), below)]))
        if above > 0:
            tests.append(ast.Compare(left=ast.Name(id=i, ctx=ast.Load()), ops=[ast.LtE()],
                                     comparators=[_plus(copy.deepcopy(hi), -above)]))
        if not tests:
            return True
        return tests[0] if len(tests) == 1 else ast.BoolOp(op=ast.And(), values=tests)
    return None


def _add(form, c):
    form[1] = form.get(1, 0) + c
    if form[1] == 0:
        del form[1]
    return form


def _rewrite(stmt, guard):
    value = stmt.value if isinstance(stmt.op, ast.Add) else \
        ast.UnaryOp(op=ast.USub(), operand=stmt.value)
    target = copy.deepcopy(stmt.target)
    target.ctx = ast.Store()
    assign = ast.copy_location(ast.Assign(targets=[target], value=copy.deepcopy(value)), stmt)
    if guard is True:
        return assign
    test = ast.copy_location(guard, stmt)
    for node in ast.walk(test):
        ast.copy_location(node, stmt)
    return ast.copy_location(ast.If(test=test, body=[assign], orelse=[stmt]), stmt)
