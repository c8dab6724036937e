"""Reduction lanes: a scalar sum in a reverse loop adds into one slot per iteration, summed after.

The reverse of the heat stencil adds ``_adj_kappa += _adj_t13 * _t11`` once per slot and time
step. Floating-point addition is not associative, so the compiler keeps the sum in order: every
iteration waits for the last one's addition (a chain of additions as long as the loop), even when
the rest of the body is independent from one iteration to the next (after loop_splits.py). The
order of an adjoint's contributions is arbitrary already (they arrive in whatever order the reverse
sweep runs), so the sum may be kept per iteration slot instead:

    _adj_kappa_lanes = np.zeros(0)                   # before the outermost loop around the sum
    for t in ...:
        if _adj_kappa_lanes.shape[0] <= _t2 - 1:     # room for every i of the loop below
            _adj_kappa += np.sum(_adj_kappa_lanes)
            _adj_kappa_lanes = np.zeros(_t2 - 1 + 1)
        for i in range(_t2 - 1, 0, -1):
            ...
            _adj_kappa_lanes[i] += _adj_t13 * _t11   # no chain between iterations
    _adj_kappa += np.sum(_adj_kappa_lanes)           # once, after the loops

Measured on the heat gradient with the split loop (nx=128, nt=1000, CPU time, min of 100 batches,
load ~4): 164 µs against 209-212 µs for the split loop alone (and it slows an unsplit loop, whose
store-to-load chain through the adjoint array stays: 235 µs against 217 µs, so it is applied only
to loops whose iterations are otherwise independent). Fixed lanes (``i & 7``) measured 222 µs.

:func:`add_lanes` rewrites ``x += v`` / ``x -= v`` in an innermost loop ``for i in range(a, b, ±1)``
of the reverse sweep (float64 programs) when
* the loop body is straight-line code as loop_splits.py reads it (temporaries, element writes of
  owned adjoint arrays at ``i ± k``, scalar sums) and no two of its accesses to one array slot are
  in different iterations (the iterations are independent but for the sums);
* ``x`` is a scalar adjoint, read nowhere in the top-level statement of the reverse sweep that
  holds the loop (only added into there), so its value is needed only after that statement;
* the loop variable is never negative: running down the stop is a constant >= -1, running up the
  start a constant >= 0 (``i`` indexes the lanes directly).
The result differs from the ordered sum by rounding only.
"""
import ast
import copy

from . import loop_splits
from .naming import unused
from .placeholders import Comment

# False: scalar sums in loops stay in order (tests compare both; not in the cache key)
REDUCTION_LANES = True

NOTE = ("reduction lanes: {x} is only added into here; each iteration adds into its own slot "
        "of {lanes} (no chain of additions from one iteration to the next), summed once after "
        "the loops (the order of an adjoint's contributions is arbitrary anyway)")


def add_lanes(reverse_body, scalars, tail=(), taken=frozenset()):
    """``reverse_body`` with qualifying scalar sums kept per iteration. ``scalars``: the scalar
    adjoint names; ``taken``: names in use (the lanes' names avoid them)."""
    if not REDUCTION_LANES:
        return reverse_body
    everything = list(reverse_body) + list(tail)
    owned = loop_splits.owned_arrays(reverse_body, everything)
    used = set(taken) | {n.id for n in ast.walk(ast.Module(body=everything, type_ignores=[]))
                         if isinstance(n, ast.Name)}
    out = []
    for top in reverse_body:
        if not isinstance(top, (ast.For, ast.While, ast.If)) or isinstance(top, Comment):
            out.append(top)
            continue
        before, after = [], []
        only_added = _only_added(top, scalars)
        for loop, parent in _innermost(top, None):
            body = loop_splits.analyse(loop, owned, everything, scalars)
            if body is None or any(c for _, _, c in loop_splits._edges(body)):
                continue
            bound = _bound(loop)
            if bound is None:
                continue
            sums = [(k, x) for k, (_, kind, x) in enumerate(body.items)
                    if kind == "sum" and x in only_added]
            size = _size_array(body, owned, reverse_body, top)
            if not sums or size is None:
                continue
            original = _without_comments(copy.deepcopy(loop))     # (its comments are above)
            names = []
            for k, x in sums:
                lanes = unused(f"{x}_lanes", used)
                used.add(lanes)
                names.append((x, lanes))
                before.append(ast.parse(f"{lanes} = np.zeros({size}.shape[0])").body[0])
                stmt = body.items[k][0]
                stmt.target = ast.Subscript(value=ast.Name(lanes, ast.Load()),
                                            slice=ast.Name(loop.target.id, ast.Load()), ctx=ast.Store())
                after.append(ast.parse(f"{x} += np.sum({lanes})").body[0])
            if loop_splits.FORWARD_PASSES and body.step == -1 and \
                    loop_splits.forward_range(loop.iter) is not None and \
                    loop_splits.independent([a for found in body.accesses.values() for a in found]) and \
                    loop.target.id not in loop_splits._exposed_reads(
                        everything, {id(n) for n in ast.walk(loop)}):
                # with its sums in lanes the iterations touch disjoint slots (loop_splits.py)
                loop.iter = loop_splits.forward_range(loop.iter)
                loop.body.insert(0, Comment(loop_splits.FORWARD_NOTE, getattr(loop, "lineno", 0) or 0))
            fits = " and ".join(f"{ast.unparse(bound)} <= {lanes}.shape[0]" for _, lanes in names)
            guarded = ast.parse(f"if {fits}:\n    pass\nelse:\n    pass").body[0]
            guarded.body = [loop]
            guarded.orelse = [Comment("(a loop reaching past the lanes runs as it was)",
                                      getattr(loop, "lineno", 0) or 0), original]
            note = Comment(NOTE.format(x=", ".join(f"`{x}`" for x, _ in names),
                                       lanes=", ".join(f"`{lanes}`" for _, lanes in names)),
                           getattr(loop, "lineno", 0) or 0)
            if parent is None:          # the loop is the top-level statement itself
                top = guarded
                before.append(note)
            else:
                k = next(j for j, s in enumerate(parent) if s is loop)
                parent[k:k + 1] = [note, guarded]
        out.extend(before + [top] + after)
    return out


def _only_added(top, scalars):
    """The scalars of ``scalars`` that ``top`` uses only as the target of ``+=`` / ``-=`` (whose
    value does not read them)."""
    bad, seen = set(), set()
    targets = set()
    for node in ast.walk(top):
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and \
                isinstance(node.op, (ast.Add, ast.Sub)):
            targets.add(id(node.target))
    for node in ast.walk(top):
        if isinstance(node, ast.Name) and node.id in scalars:
            seen.add(node.id)
            if id(node) not in targets:
                bad.add(node.id)
    return seen - bad


def _innermost(stmt, parent):
    """(loop, the statement list holding it) for each innermost ``for`` in ``stmt``."""
    if isinstance(stmt, ast.For) and not loop_splits._has_loop(stmt.body):
        yield stmt, parent
        return
    for field in ("body", "orelse"):
        stmts = getattr(stmt, field, None)
        if isinstance(stmts, list) and isinstance(stmt, (ast.For, ast.While, ast.If)):
            for child in list(stmts):
                yield from _innermost(child, stmts)


def _bound(loop):
    """The number of lanes the loop's variable needs (one past its largest value), when it is
    never negative; else None."""
    args = loop.iter.args
    if not all(loop_splits._pure(a) for a in args):
        return None
    step = loop_splits._step(loop.iter)
    if step == -1:
        stop = args[1]
        if _int(stop) is None or _int(stop) < -1:
            return None
        start = args[0]
        if isinstance(start, ast.BinOp) and isinstance(start.op, ast.Sub) and _int(start.right) == 1:
            return copy.deepcopy(start.left)        # range(m - 1, ...): i < m
        return ast.BinOp(left=copy.deepcopy(start), op=ast.Add(), right=ast.Constant(1))
    start = args[0] if len(args) > 1 else ast.Constant(0)
    if _int(start) is None or _int(start) < 0:
        return None
    return copy.deepcopy(args[1] if len(args) > 1 else args[0])


def _int(node):
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        node = ast.Constant(-node.operand.value)
    return node.value if isinstance(node, ast.Constant) and type(node.value) is int else None


def _without_comments(node):
    for stmt in ast.walk(node):
        for field in ("body", "orelse"):
            stmts = getattr(stmt, field, None)
            if isinstance(stmts, list) and stmts and isinstance(stmt, (ast.For, ast.While, ast.If)):
                setattr(stmt, field, [s for s in stmts if not isinstance(s, Comment)] or [ast.Pass()])
    return node


def _size_array(body, owned, reverse_body, top):
    """An owned adjoint array the loop indexes at its variable (``A[i]``), bound before ``top``:
    its length is the lanes' (a loop reaching past them runs as it was, under the guard)."""
    position = next(j for j, s in enumerate(reverse_body) if s is top)
    bound = {s.targets[0].id for s in reverse_body[:position] if isinstance(s, ast.Assign) and
             len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)}
    i = body.loop.target.id
    for node in ast.walk(body.loop):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and \
                node.value.id in owned and node.value.id in bound and \
                loop_splits._offset(node.slice, i, body.offsets) == 0:
            return node.value.id
    return None
