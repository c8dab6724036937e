"""Loop splits: a reverse loop that adds into neighbouring slots of one adjoint array runs as passes.

The reverse of the heat stencil's ``un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])``
adds into three neighbouring slots of ``_adj_u`` per iteration (after first_contributions.py and
adjoint_merges.py):

    for i in range(_t2 - 1, 0, -1):
        ...                              # the recomputed values, _adj_t13 = _adj_un[i]
        _adj_un[i] = 0.0
        _adj_kappa += _adj_t13 * _t11
        _adj_u[_t9] += _adj_t10          # slot i + 1
        _adj_u[_t4] = _adj_t5            # slot i - 1 (its first contribution)
        _adj_u[i] += _adj_t6 + _adj_t3   # slot i

Slot ``i`` is stored by iteration ``i + 1`` and loaded again by iteration ``i``, then by ``i - 1``:
each iteration waits for the last one's store (a store-to-load chain through memory), and the
scalar ``_adj_kappa`` is a second chain. Running each group of statements as its own pass over
``i`` (``_adj_u[i - 1] = ...`` with the ``kappa`` sum, then every ``_adj_u[i] += ...``, then every
``_adj_u[i + 1] += ...`` and the zeroing) leaves no chain between iterations inside a pass; each
pass recomputes the values it reads. Measured on the heat gradient with reduction_lanes.py (nx=128,
nt=1000, CPU time, min of 100 batches in one process, load ~4): 164 µs against 217 µs; the
hand-written adjoint 163 µs. (Split alone: 209-212 µs; the kappa sum's chain is what is left.)

:func:`split_loops` rewrites an innermost ``for i in range(a, b, ±1)`` loop (no ``else``) of the
finished reverse sweep whose body is straight-line code of
* temporaries: a name assigned once, read in the body only after it (a value of this iteration),
  nowhere outside the loop, from names, constants, arithmetic, comparisons and ``math.``/``np.``
  calls, array elements;
* element writes ``A[e] = v`` / ``A[e] += v`` / ``A[e] -= v`` (alone or under an ``if`` on
  temporaries whose branches are only such writes), ``A`` an adjoint array that no other name can
  hold (the function's own ``np.zeros_like``, used only element by element, whole-array ``+=``
  and swaps with other such arrays), ``e`` the loop variable plus a constant (``i``, ``i ± k`` or a
  temporary assigned so);
* scalar sums ``x += v`` / ``x -= v``, ``x`` a scalar (adjoint) read nowhere else in the body;
and where every read of an array the body writes is an element ``A[i ± k]`` too. The statements
form groups run as consecutive loops over the same range, in the body's order within each loop;
each group's loop recomputes the temporaries its statements read. Every dependence between two
statements through an array slot (one writes it, the other reads or writes it, in the same or
another iteration) is kept: the statement whose access comes first runs in the same loop or an
earlier one. A statement joins the first group allowed by that in which it has no dependence on a
member across iterations; a body that stays one group is left as it is. Every access to every
slot therefore happens in the original order: the values are those of the unsplit loop bit for bit.

A reversed pass (``range(a, b, -1)``) without a sum whose iterations touch disjoint slots (no two
accesses to one array at different offsets, one a write) runs forwards, ``range(b + 1, a + 1)``,
where nothing reads the loop variable after the loop: the same values, and Numba's LLVM vectorizes
the forward loop (the heat gradient's LLVM IR: 59 ``<4 x double>`` operations against 49; the run
time moved within the noise of a shared machine, 160-187 µs against 166-180 µs). reduction_lanes.py
does the same for a loop whose sums it put in lanes.
"""
import ast
import copy

from .naming import is_adjoint
from .placeholders import Comment

# False: reverse loops are never split (tests compare both; not in the cache key)
SPLIT_LOOPS = True
# False: every pass runs in the loop's own (reversed) order
FORWARD_PASSES = True
FORWARD_NOTE = ("this pass's iterations touch disjoint slots: it runs in forward order (the same "
                "values; Numba vectorizes forward loops, not reversed ones)")

_PURE = (ast.Name, ast.Constant, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.IfExp,
         ast.Subscript, ast.Call, ast.Load, ast.operator, ast.unaryop, ast.cmpop, ast.boolop,
         ast.Attribute)


def split_loops(reverse_body, scalars, tail=()):
    """``reverse_body`` with its qualifying innermost loops split into consecutive loops;
    ``scalars``: the names that hold scalars (the only sums a split may move)."""
    if not SPLIT_LOOPS:
        return reverse_body
    everything = list(reverse_body) + list(tail)
    owned = owned_arrays(reverse_body, everything)
    if not owned:
        return reverse_body
    return _block(reverse_body, owned, everything, scalars)


def _block(stmts, owned, everything, scalars):
    out = []
    for stmt in stmts:
        if isinstance(stmt, ast.For) and not _has_loop(stmt.body):
            out.extend(_split(stmt, owned, everything, scalars))
            continue
        for field in ("body", "orelse"):
            if isinstance(getattr(stmt, field, None), list) and isinstance(stmt, (ast.For, ast.While, ast.If)):
                setattr(stmt, field, _block(getattr(stmt, field), owned, everything, scalars))
        out.append(stmt)
    return out


# -- the body as temporaries, element writes and sums ---------------------------------------------

class Body:
    """A loop body read as straight-line statements (None from :func:`analyse` if it is not).

    ``items``: (statement, kind, detail) in order, comments attached to the statement after them;
    kind "temp" (detail: the name), "write" (the arrays written), "sum" (the scalar) or "comment".
    ``offsets``: id of an index node -> its constant offset from the loop variable.
    ``accesses``: item position -> [(array, offset, is_write, position of the access)]."""

    def __init__(self, loop, items, temps, offsets, accesses, step):
        self.loop, self.items, self.temps = loop, items, temps
        self.offsets, self.accesses, self.step = offsets, accesses, step


def analyse(loop, owned, everything, scalars):
    if not isinstance(loop.target, ast.Name) or loop.orelse or not _is_range(loop.iter):
        return None
    step = _step(loop.iter)
    if step is None:
        return None
    i = loop.target.id
    items, temps, offsets = [], {}, {}
    for stmt in loop.body:
        if isinstance(stmt, Comment):
            items.append((stmt, "comment", None))
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                isinstance(stmt.targets[0], ast.Name):
            name = stmt.targets[0].id
            if name in temps or name == i or not _pure(stmt.value):
                return None
            temps[name] = len(items)
            offset = _offset(stmt.value, i, {}, temps_offsets=None)
            if offset is not None:
                offsets[name] = offset
            items.append((stmt, "temp", name))
        elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
            if not isinstance(stmt.op, (ast.Add, ast.Sub)) or not _pure(stmt.value) or \
                    stmt.target.id not in scalars:
                return None
            items.append((stmt, "sum", stmt.target.id))
        elif _element_write(stmt, owned) is not None:
            items.append((stmt, "write", _element_write(stmt, owned)))
        elif isinstance(stmt, ast.If) and _pure(stmt.test) and stmt.body and \
                all(_element_write(s, owned) is not None for s in stmt.body + stmt.orelse):
            items.append((stmt, "write", {a for s in stmt.body + stmt.orelse
                                          for a in _element_write(s, owned)}))
        else:
            return None
    sums = {detail for _, kind, detail in items if kind == "sum"}
    written = {a for _, kind, detail in items if kind == "write" for a in detail}
    # temporaries: read only after their assignment, nowhere outside the loop; sums read nowhere
    loop_nodes = {id(n) for n in ast.walk(loop)}
    for k, (stmt, kind, detail) in enumerate(items):
        if kind == "comment":
            continue
        for node in ast.walk(stmt):
            if not isinstance(node, ast.Name):
                continue
            if node.id in temps and isinstance(node.ctx, ast.Load) and temps[node.id] >= k:
                return None
            if node.id in sums and not (kind == "sum" and node is stmt.target):
                return None
            if node.id == i and isinstance(node.ctx, ast.Store):
                return None
    if set(temps) & _exposed_reads(everything, loop_nodes):
        return None
    iter_names = {n.id for n in ast.walk(loop.iter) if isinstance(n, ast.Name)}
    if iter_names & (set(temps) | sums | written):
        return None
    # every access to a written array: an element at a known offset from the loop variable
    accesses = {}
    for k, (stmt, kind, _) in enumerate(items):
        found = []
        for node in ast.walk(stmt):
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and \
                    node.value.id in written:
                off = _offset(node.slice, i, offsets)
                if off is None:
                    return None
                found.append((node.value.id, off, isinstance(node.ctx, ast.Store) or
                              _aug_target(stmt, node), id(node)))
        names = sum(1 for node in ast.walk(stmt) if isinstance(node, ast.Name) and node.id in written)
        if names != len(found):         # the array itself used whole (not an element)
            return None
        accesses[k] = found
    return Body(loop, items, temps, offsets, accesses, step)


def _exposed_reads(stmts, skip, local=frozenset()):
    """Names read in ``stmts`` (outside the nodes ``skip``) where they may hold a value from
    elsewhere: a read in a loop body after the body's own top-level assignment of the name (a
    temporary of that loop, e.g. one of the loops a split wrote) does not count."""
    out = set()
    for stmt in stmts:
        if id(stmt) in skip:
            continue
        if isinstance(stmt, (ast.For, ast.While, ast.If)):
            header = stmt.iter if isinstance(stmt, ast.For) else stmt.test
            out |= {n.id for n in ast.walk(header) if isinstance(n, ast.Name) and n.id not in local}
            if isinstance(stmt, ast.If):
                out |= _exposed_reads(stmt.body, skip, local) | _exposed_reads(stmt.orelse, skip, local)
                continue
            assigned = set(local)
            if isinstance(stmt, ast.For):
                assigned |= {t.id for t in ast.walk(stmt.target) if isinstance(t, ast.Name)}
            for inner in stmt.body:
                out |= _exposed_reads([inner], skip, frozenset(assigned))
                if isinstance(inner, ast.Assign) and len(inner.targets) == 1 and \
                        isinstance(inner.targets[0], ast.Name) and isinstance(stmt, ast.For):
                    assigned.add(inner.targets[0].id)
            out |= _exposed_reads(stmt.orelse, skip, local)
        elif not isinstance(stmt, Comment):
            out |= {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and
                    isinstance(n.ctx, ast.Load) and n.id not in local}
    return out


def _aug_target(stmt, node):
    """Whether ``node`` is written by ``stmt`` (the target of an augmented assignment in it)."""
    return any(isinstance(s, ast.AugAssign) and s.target is node for s in ast.walk(stmt))


def _element_write(stmt, owned):
    """The array an element write ``A[e] = v`` / ``A[e] += v`` / ``-=`` writes (as a set), if A
    is owned."""
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        target = stmt.targets[0]
    elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, (ast.Add, ast.Sub)):
        target = stmt.target
    else:
        return None
    if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and \
            target.value.id in owned and _pure(stmt.value) and _pure(target.slice):
        return {target.value.id}
    return None


def _pure(expr):
    for node in ast.walk(expr):
        if not isinstance(node, _PURE):
            return False
        if isinstance(node, ast.Subscript) and isinstance(node.slice, (ast.Slice, ast.Tuple)):
            return False
        if isinstance(node, ast.Call):
            func = node.func
            if node.keywords or not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                                     and func.value.id in ("math", "np")):
                return False
        if isinstance(node, ast.Attribute) and not (isinstance(node.value, ast.Name) and
                                                    node.value.id in ("math", "np")):
            return False
    return True


def _offset(expr, i, offsets, temps_offsets=True):
    """k for ``i``, ``i + k``, ``i - k`` or a temporary assigned so; else None."""
    if isinstance(expr, ast.Name):
        if expr.id == i:
            return 0
        return offsets.get(expr.id) if temps_offsets else None
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Sub)) and \
            isinstance(expr.left, ast.Name) and expr.left.id == i and \
            isinstance(expr.right, ast.Constant) and type(expr.right.value) is int:
        return expr.right.value if isinstance(expr.op, ast.Add) else -expr.right.value
    return None


def _is_range(node):
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" \
        and 1 <= len(node.args) <= 3 and not node.keywords


def _step(node):
    if len(node.args) < 3:
        return 1
    s = node.args[2]
    if isinstance(s, ast.UnaryOp) and isinstance(s.op, ast.USub) and isinstance(s.operand, ast.Constant):
        s = ast.Constant(-s.operand.value)
    if isinstance(s, ast.Constant) and s.value in (1, -1) and type(s.value) is int:
        return s.value
    return None


def _has_loop(stmts):
    return any(isinstance(n, (ast.For, ast.While, ast.Break, ast.Continue, ast.Return))
               for s in stmts for n in ast.walk(s))


# -- which statements may run in which loop ------------------------------------------------------

def _edges(body):
    """(a, b, carried): the statement at item a must run no later than b's (carried: the two
    touch one slot in different iterations)."""
    edges = set()
    keys = sorted(body.accesses)
    for x in keys:
        for y in keys:
            if y <= x:
                continue
            for ax, ox, wx, px in body.accesses[x]:
                for ay, oy, wy, py in body.accesses[y]:
                    if ax != ay or not (wx or wy):
                        continue
                    d = ox - oy         # x's iteration p touches the slot y's iteration p + d does
                    if d == 0:
                        edges.add((x, y, False))
                    elif body.step * d > 0:
                        edges.add((x, y, True))     # y's iteration p + d comes after p
                    else:
                        edges.add((y, x, True))
    return edges


def _slices(body):
    """Item position -> the temporaries (item positions) its value needs, transitively."""
    reads = {}
    for k, (stmt, kind, _) in enumerate(body.items):
        names = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        reads[k] = {body.temps[n] for n in names if n in body.temps}
    out = {}
    for k in reads:
        seen, todo = set(), list(reads[k])
        while todo:
            t = todo.pop()
            if t not in seen:
                seen.add(t)
                todo.extend(reads[t])
        out[k] = seen
    return out


def groups(body):
    """The effects (writes and sums, item positions) in groups, one loop each; None if a cycle."""
    slices = _slices(body)
    effects = [k for k, (_, kind, _) in enumerate(body.items) if kind in ("write", "sum")]
    # an access in a temporary belongs to every effect that reads the temporary
    owner = {k: [k] for k in effects}
    for k in effects:
        for t in slices[k]:
            owner.setdefault(t, []).append(k)
    edges = set()
    for a, b, carried in _edges(body):
        for ea in owner.get(a, ()):
            for eb in owner.get(b, ()):
                if ea != eb:
                    edges.add((ea, eb, carried))
    preds = {k: {a for a, b, _ in edges if b == k} for k in effects}
    carried = {(a, b) for a, b, c in edges if c} | {(b, a) for a, b, c in edges if c}
    order, placed, group_of, out = [], set(), {}, []
    while len(order) < len(effects):
        ready = [k for k in effects if k not in placed and preds[k] <= placed]
        if not ready:
            return None
        k = min(ready)
        order.append(k)
        placed.add(k)
        g = max((group_of[p] for p in preds[k]), default=0)
        while g < len(out) and any((k, m) in carried for m in out[g]):
            g += 1
        if g == len(out):
            out.append([])
        out[g].append(k)
        group_of[k] = g
    return [sorted(g) for g in out], slices


def _split(loop, owned, everything, scalars):
    body = analyse(loop, owned, everything, scalars)
    if body is None:
        return [loop]
    found = groups(body)
    if found is None or len(found[0]) < 2:
        return [loop]
    parts, slices = found
    comments = {}
    pending = []
    for k, (stmt, kind, _) in enumerate(body.items):
        if kind == "comment":
            pending.append(stmt)
        else:
            comments[k], pending = pending, []
    arrays = sorted({a for part in parts for k in part for a, _, _, _ in body.accesses[k]})
    out = [Comment(f"loop split: the statements writing neighbouring slots of "
                   f"{', '.join('`' + a + '`' for a in arrays)} run as {len(parts)} passes over "
                   f"`{loop.target.id}` (no store-to-load chain from one iteration to the next; "
                   f"each pass recomputes what it reads, every slot sees its accesses in the "
                   f"original order)", getattr(loop, "lineno", 0) or 0)]
    used_comments = set()
    # a pass whose iterations touch disjoint slots may run forwards (the loop variable's last
    # value is then another: only where nothing reads it after the loop)
    forward_ok = FORWARD_PASSES and body.step == -1 and forward_range(loop.iter) is not None and \
        loop.target.id not in _exposed_reads(everything, {id(n) for n in ast.walk(loop)})
    for part in parts:
        keep = set(part)
        for k in part:
            keep |= slices[k]
        stmts = []
        for k in sorted(keep):
            if k not in used_comments:
                stmts.extend(comments.get(k, ()))
                used_comments.add(k)
            stmts.append(copy.deepcopy(body.items[k][0]) if body.items[k][1] == "temp" else body.items[k][0])
        iterate = copy.deepcopy(loop.iter)
        if forward_ok and not any(body.items[k][1] == "sum" for k in part) and \
                independent([a for k in keep for a in body.accesses[k]]):
            iterate = forward_range(loop.iter)
            stmts.insert(0, Comment(FORWARD_NOTE, getattr(loop, "lineno", 0) or 0))
        twin = ast.For(target=copy.deepcopy(loop.target), iter=iterate, body=stmts,
                       orelse=[], type_comment=None)
        ast.copy_location(twin, loop)
        out.append(twin)
    return out


def independent(accesses):
    """Whether no two of ``accesses`` ((array, offset, writes, _)) reach one slot in different
    iterations with one of them a write: the iterations may run in any order."""
    return not any(a == b and oa != ob and (wa or wb)
                   for a, oa, wa, _ in accesses for b, ob, wb, _ in accesses)


def forward_range(iterate):
    """``range(a, b, -1)`` as the same values running up, ``range(b + 1, a + 1)`` (``m - 1 + 1``
    written ``m``); None for another form."""
    if not _is_range(iterate) or len(iterate.args) != 3 or _step(iterate) != -1:
        return None
    a, b = iterate.args[0], iterate.args[1]
    return ast.Call(func=ast.Name("range", ast.Load()), args=[_plus_one(b), _plus_one(a)], keywords=[])


def _plus_one(expr):
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub) and \
            isinstance(expr.operand, ast.Constant) and type(expr.operand.value) is int:
        return ast.Constant(1 - expr.operand.value)
    if isinstance(expr, ast.Constant) and type(expr.value) is int:
        return ast.Constant(expr.value + 1)
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Sub) and \
            isinstance(expr.right, ast.Constant) and expr.right.value == 1 and type(expr.right.value) is int:
        return copy.deepcopy(expr.left)
    return ast.BinOp(left=copy.deepcopy(expr), op=ast.Add(), right=ast.Constant(1))


# -- adjoint arrays no other name holds -----------------------------------------------------------

_SHAPE_ATTRS = ("shape", "size", "ndim", "dtype")


def owned_arrays(reverse, everything, any_rank=False):
    """Adjoint names bound once, by ``np.zeros_like`` at the top level of the reverse sweep, and
    otherwise used only as an element, ``.shape``-like attributes, a whole-array ``+=`` target or
    operand, in the return, or in an exchange ``a, b = b, a`` with another such name: no other
    name can hold their arrays (two of them are never one array). An element is ``a[i]``; with
    ``any_rank`` also ``a[i, j]`` (deferred_outer.py's weight adjoints), never a slice."""
    inits = {}
    for stmt in reverse:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name = stmt.targets[0].id
            if is_adjoint(name):
                inits.setdefault(name, []).append(stmt)
    candidates = {name for name, found in inits.items() if len(found) == 1 and
                  isinstance(found[0].value, ast.Call) and isinstance(found[0].value.func, ast.Attribute)
                  and found[0].value.func.attr == "zeros_like"}
    tree = ast.Module(body=list(everything), type_ignores=[])
    while True:
        allowed = {id(inits[name][0].targets[0]) for name in candidates}
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and \
                    (any_rank or not isinstance(node.slice, ast.Tuple)) and \
                    not any(isinstance(n, ast.Slice) for n in ast.walk(node.slice)):
                allowed.add(id(node.value))
            elif isinstance(node, ast.Attribute) and node.attr in _SHAPE_ATTRS:
                allowed.add(id(node.value))
            elif isinstance(node, ast.AugAssign):
                if isinstance(node.target, ast.Name):
                    allowed.add(id(node.target))
                allowed.update(id(n) for n in ast.walk(node.value) if isinstance(n, ast.Name))
            elif isinstance(node, ast.Return) and node.value is not None:
                allowed.update(id(n) for n in ast.walk(node.value) if isinstance(n, ast.Name))
            elif _exchange(node, candidates):
                allowed.update(id(n) for n in ast.walk(node) if isinstance(n, ast.Name))
        keep = {name for name in candidates
                if all(id(n) in allowed for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == name)}
        if keep == candidates:
            return candidates
        candidates = keep


def _exchange(node, candidates):
    """``a, b = b, a`` (names of ``candidates``, the same names on both sides)."""
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and
            isinstance(node.targets[0], ast.Tuple) and isinstance(node.value, ast.Tuple)):
        return False
    left = [n.id for n in node.targets[0].elts if isinstance(n, ast.Name)]
    right = [n.id for n in node.value.elts if isinstance(n, ast.Name)]
    return len(left) == len(node.targets[0].elts) and len(right) == len(node.value.elts) and \
        sorted(left) == sorted(right) and len(set(left)) == len(left) and set(left) <= candidates
