"""Split helper calls: a helper's forward sweep runs once, not twice.

A helper called from a differentiated function (``main[k] = sqnorm(icf, x, k, i)`` in a loop) is
otherwise differentiated in *joint* mode: the caller's forward sweep calls the helper's primal for
its value, and the caller's reverse sweep calls the helper's adjoint, which runs the helper's
forward sweep again (to rebuild what its reverse sweep reads) before its reverse sweep. In *split*
mode the caller's forward sweep calls ``<helper>_record`` instead: the helper's forward sweep,
pushing what its reverse sweep reads onto two stacks the caller owns (a float and an int tape,
``naming.HELPER_FLOAT_STACK`` / ``HELPER_INT_STACK``), returning the value; the caller's reverse
sweep calls ``<helper>_reverse``, which pops them and runs the helper's reverse sweep only. Calls
record in forward order and reverse in the opposite order, so one pair of stacks serves every
helper call of the caller (last in, first out).

:func:`split_functions` builds the two functions from the pieces of the helper's adjoint (its
lowered forward sweep and reverse sweep), or returns None when the helper's reverse sweep starts
from a value a stack cannot hold (an array the forward sweep makes, a list of snapshots) or one that
may be unbound when the forward sweep ends: the caller then keeps the joint call.
"""
import ast
import copy

from . import naming as N
from .normalize import assign, name_load
from .placeholders import Comment

NOTE = ("split call: the forward sweep records the helper's tape on the caller's stacks "
        "(_ftape_h, _itape_h); its reverse sweep pops them (the helper's forward runs once)")

_TAPES = (N.FLOAT_TAPE_NAME, N.FLOAT_POSITION, N.INT_TAPE_NAME, N.INT_POSITION)


def _reads(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _targets(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def live_in(stmts):
    """Names ``stmts`` may read before assigning them (conservative: an assignment inside a branch
    or a loop body counts only for the reads after it in that same body)."""
    live = set()

    def visit(body, defined):
        defined = set(defined)
        for stmt in body:
            if isinstance(stmt, ast.Assign):
                live.update(_reads(stmt) - defined)
                defined |= _targets(stmt)
            elif isinstance(stmt, ast.AugAssign):
                live.update((_reads(stmt) | _targets(stmt)) - defined)
            elif isinstance(stmt, ast.If):
                live.update(_reads(stmt.test) - defined)
                visit(stmt.body, defined)
                visit(stmt.orelse, defined)
            elif isinstance(stmt, ast.For):
                live.update(_reads(stmt.iter) - defined)
                visit(stmt.body, defined | _targets(stmt.target))
            elif isinstance(stmt, ast.While):
                live.update(_reads(stmt.test) - defined)
                visit(stmt.body, defined)
            else:       # expression statements (comments, asserts), returns
                live.update(_reads(stmt) - defined)
    visit(stmts, set())
    return live


def _top_level_assigned(stmts):
    return {t for stmt in stmts if isinstance(stmt, (ast.Assign, ast.AugAssign)) for t in _targets(stmt)}


def _is_tape_init(stmt):
    """``_ftape = new_float_tape()`` / ``_fpos = 0`` (and the int tape's): the adjoint's own tapes."""
    if not (isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)):
        return False
    name, value = stmt.targets[0].id, stmt.value
    if name in (N.FLOAT_TAPE_NAME, N.INT_TAPE_NAME):
        return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and \
            value.func.id.startswith("new_") and not value.args
    return name in (N.FLOAT_POSITION, N.INT_POSITION) and isinstance(value, ast.Constant) and value.value == 0


def split_functions(params, forward, reverse, grads, kinds, in_place_params, float_zero=None):
    """``(record_params, record_body, reverse_params, reverse_body)`` or None.

    ``forward``: the adjoint's lowered statements before its reverse sweep (tape allocations first,
    then the forward sweep, ending with ``_value = ...``); ``reverse``: its lowered reverse sweep;
    ``grads``: the names of the gradients it returns; ``kinds``: the analysis kinds; ``float_zero``:
    a float 0 of the working precision."""
    float_zero = float_zero if float_zero is not None else ast.Constant(0.0)
    # the adjoint's own tape allocations become parameters: the caller's stacks
    body = [copy.deepcopy(stmt) for stmt in forward if not _is_tape_init(stmt)]
    if any(N.VALUE in _targets(stmt) for stmt in reverse):
        return None             # a joint sweep computes the value in the reverse sweep
    assigned = set()
    for stmt in body:
        assigned |= _targets(stmt)
    given = set(params) | {N.SEED} | set(in_place_params) | set(_TAPES)
    # the values the reverse sweep starts from: assigned by the forward sweep, read before the
    # reverse sweep assigns them
    state = sorted((live_in(reverse) & assigned) - set(_TAPES))
    definite = _top_level_assigned(body)
    floats, ints, dummies = [], [], []
    for name in state:
        kind = kinds.get(name)
        if kind is None or not kind.is_scalar or kind.cls not in ("float", "int", "bool"):
            return None         # not a number: a stack cannot hold it
        (floats if kind.cls == "float" else ints).append(name)
        if name not in definite:
            # assigned on some paths only (in a branch): the reverse sweep reads it on those paths
            # only, so a typed dummy before the forward sweep keeps it bound for the push
            zero = {"float": float_zero, "int": ast.Constant(0), "bool": ast.Constant(False)}[kind.cls]
            dummies.append(assign(name, copy.deepcopy(zero), body[0]))
    if live_in(reverse) - assigned - given - _globals(reverse):
        return None             # reads something only the joint adjoint has
    like = body[-1] if body else None
    record = dummies + list(body)
    record.append(Comment(NOTE, max(getattr(stmt, 'lineno', 0) for stmt in body)))
    for names, (tape, pos) in ((floats, (N.FLOAT_TAPE_NAME, N.FLOAT_POSITION)),
                               (ints, (N.INT_TAPE_NAME, N.INT_POSITION))):
        if not names:
            continue
        record.append(assign(tape, ast.Call(func=name_load("reserve_tape"),
                                            args=[name_load(tape), name_load(pos), ast.Constant(len(names))],
                                            keywords=[]), like))
        for name in names:
            slot = ast.Subscript(value=name_load(tape), slice=name_load(pos), ctx=ast.Store())
            record.append(assign(slot, name_load(name), like))
            record.append(_bump(pos, ast.Add(), like))
    record.append(ast.Return(value=ast.Tuple(elts=[name_load(n) for n in (N.VALUE,) + _TAPES], ctx=ast.Load())))
    pops = []
    for names, (tape, pos) in ((ints, (N.INT_TAPE_NAME, N.INT_POSITION)),
                               (floats, (N.FLOAT_TAPE_NAME, N.FLOAT_POSITION))):
        for name in reversed(names):
            pops.append(_bump(pos, ast.Sub(), like))
            pops.append(assign(name, ast.Subscript(value=name_load(tape), slice=name_load(pos), ctx=ast.Load()),
                               like))
    result = ast.Tuple(elts=[ast.Tuple(elts=[ast.parse(g, mode="eval").body for g in grads],
                                       ctx=ast.Load()),
                             name_load(N.FLOAT_POSITION), name_load(N.INT_POSITION)], ctx=ast.Load())
    backward = pops + [copy.deepcopy(stmt) for stmt in reverse] + [ast.Return(value=result)]
    record_params = list(params) + list(_TAPES)
    reverse_params = list(params) + [N.SEED] + list(in_place_params) + list(_TAPES)
    return record_params, record, reverse_params, backward


def _bump(pos, op, like):
    return ast.copy_location(ast.AugAssign(target=ast.Name(id=pos, ctx=ast.Store()), op=op,
                                           value=ast.Constant(1)), like) if like is not None else \
        ast.AugAssign(target=ast.Name(id=pos, ctx=ast.Store()), op=op, value=ast.Constant(1))


def _globals(stmts):
    """Names called as functions or used as modules (np, math, helpers): not local values."""
    out = set()
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                out.add(node.func.id)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                out.add(node.value.id)
    return out
