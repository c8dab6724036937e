"""Step snapshots: an array a loop overwrites each step is saved once per iteration.

A time-stepping loop (a stencil ``for t: for i: u[i] = un[i]``) writes the same slots of an array
in every iteration. Saving each overwritten element on the tape costs a push and a pop per element;
a hand-written adjoint keeps one copy of the array per step instead. This pass does that: before
the first statement of the iteration that writes the array, one :class:`~srcgrad.placeholders.Save`
of the whole array (a snapshot; :mod:`srcgrad.tape` copies it into a buffer allocated once at loop
entry); in the reverse sweep, once the statements that write it are reversed, the array is bound
to that row of the buffer (a view, no copy). The element saves of those writes are then dropped.

When that is exact: the reverse of the statements before the first write reads the array as it was
at the start of the iteration (nothing wrote it yet), which is the snapshot; the statements from
the first write on must not read the array at all (a Gauss-Seidel sweep ``u[i] = u[i-1] + ...``
keeps its element saves). The array is only indexed (no whole-array use, no rebinding) in the
loop, has a value at loop entry (the buffer needs its shape), and nothing names it under another
name (a view would not follow the rebinding).

When it pays: every write's index is the same in every iteration (built from inner loop variables
and values the loop does not change), and at least one write sweeps an inner loop's variable, so
each iteration rewrites a whole region rather than a slot or two (``A[t, k] = ...`` writes a new
row each step: element saves stay).

Written in place (``WRITE_INTO``): copying the array into the buffer each step costs a pass over it
(the heat stencil's copy loop already moves every slot). Where the step certainly writes a known
run of slots, the array instead lives in the buffer: at the snapshot point it is row ``t`` (the
snapshot, as it is), the step writes row ``t + 1`` and only the slots outside the run are carried
over (the stencil's two boundary slots), as a hand-written adjoint steps ``U[t + 1] = f(U[t])``.
When that is exact, beyond the above: the array is 1-d, made by the function (not a parameter: the
caller's array would no longer be written) and not returned (the result would be a view of the
buffer); the first statement that writes it is a loop ``for v in range(lo, hi, 1)`` whose body
writes ``name[v]`` unconditionally (a top-level statement of it) and does not rebind ``v``. A
run-time guard carries the whole row when ``lo..hi`` is not a run inside the array. Backends with
fixed-size device tapes (cuda) keep the copy (tape.py applies it where loop tapes are allocated).
Measured (heat, nx=128, nt=1000, CPU time, one process): forward sweep 52 µs against 62 µs with
the copy; the carry written out in the loop, not as a helper call (a call per step cost as much as
the copy saved).
"""
import ast

from .analyse import operand_names
from .liveness import assigned_in, defined_at, walk_body
from .placeholders import Restore, Save
from .view_writes import view_bases

# Step snapshots written in place (module doc). False: one copy into the buffer per step (tests
# compare both; not in the cache key).
WRITE_INTO = True


def snapshot_arrays(loop, pieces, analysis, function_body, params):
    """Insert step snapshots into a ``for`` loop that runs once per call.

    ``loop``: the normalized For (a statement of ``function_body``); ``pieces``: the (forward,
    reverse) statements of each statement of its body, in order. Returns the pieces with a
    whole-array :class:`Save` in front of the forward part of the first statement that writes each
    qualifying array and its :class:`Restore` after that statement's reverse part; the Save lists
    the element saves it replaces (``covers``: :mod:`srcgrad.tape` drops them)."""
    if not (isinstance(loop.iter, ast.Call) and isinstance(loop.iter.func, ast.Name)
            and loop.iter.func.id == "range" and len(loop.iter.args) == 3):
        return pieces
    body = loop.body
    for name in sorted(_written_arrays(body)):
        kind = analysis.kinds.get(name)
        if kind is None or not kind.is_array or not defined_at(name, loop, function_body, params) \
                or not _only_indexed(body, name) or _has_alias(function_body, name, analysis):
            continue
        first = next(k for k, stmt in enumerate(body) if name in _written_arrays([stmt]))
        if any(_reads(stmt, name) for stmt in body[first:]) or not _same_slots_each_step(loop, name):
            continue
        covered = [save for forward, _ in pieces[first:] for save in _saves(forward)
                   if save.name == name and save.index is not None]
        if not covered:
            continue
        snapshot = Save(name, kind, like=loop, loop=id(body), covers=covered)
        if WRITE_INTO and kind.ndim == 1 and name not in params and not _returned(function_body, name):
            snapshot.written = _written_run(body[first], name)
        forward, reverse = pieces[first]
        pieces[first] = ([snapshot] + forward, reverse + [Restore(snapshot)])
    return pieces


def _written_arrays(stmts):
    return {node.targets[0].value.id for node in walk_body(stmts)
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript)
            and isinstance(node.targets[0].value, ast.Name)}


def _only_indexed(body, name):
    """``name`` appears in the loop only as ``name[...]`` or ``name.shape`` (never rebound, never
    used whole: a call could keep it or write it)."""
    if name in assigned_in(body):
        return False
    allowed = set()
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Subscript) or (isinstance(node, ast.Attribute)
                                                   and node.attr in ("shape", "size", "ndim")):
                allowed.add(id(node.value))
    return all(id(node) in allowed for stmt in body for node in ast.walk(stmt)
               if isinstance(node, ast.Name) and node.id == name)


def _reads(stmt, name):
    return any(isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load)
               and isinstance(node.value, ast.Name) and node.value.id == name
               for node in ast.walk(stmt))


def _has_alias(function_body, name, analysis):
    """Whether a statement binds an array name to ``name`` or a view of it (the reverse sweep
    rebinds ``name`` to its snapshot; the other name would keep the old array)."""
    for stmt in function_body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                kind = analysis.kinds.get(node.targets[0].id)
                if name in view_bases(node.value) and (kind is None or not kind.is_scalar):
                    return True
    return False


def _same_slots_each_step(loop, name):
    """Every write of ``name`` in the loop body has an index with the same values in every
    iteration, and one of them runs over an inner loop's variable (a whole region per step)."""
    body = loop.body
    changing = assigned_in(body) | {loop.target.id}
    definitions = {}          # name -> the expressions it is bound to in the body (None: unknown)
    for node in walk_body(body):
        if isinstance(node, ast.For):
            definitions.setdefault(node.target.id, []).append(node.iter)
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            # a value computed afresh from steady names; bound twice (under a branch?) is unknown
            simple = isinstance(node.value, (ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant))
            definitions.setdefault(node.targets[0].id, []).append(node.value if simple else None)
    inner = {node.target.id for node in walk_body(body) if isinstance(node, ast.For)}
    steady = set()
    changed = True
    while changed:
        changed = False
        for target, values in definitions.items():
            if target in steady or target == loop.target.id or None in values:
                continue
            if len(values) > 1 and target not in inner:
                continue
            if all(op in steady or op not in changing for value in values for op in operand_names(value)):
                steady.add(target)
                changed = True
    sweeping = False
    for node in walk_body(body):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript) and \
                isinstance(node.targets[0].value, ast.Name) and node.targets[0].value.id == name:
            index = set(operand_names(node.targets[0].slice))
            if any(op in changing and op not in steady for op in index):
                return False
            sweeping = sweeping or bool(index & inner)
    return sweeping


def _returned(function_body, name):
    return any(isinstance(node, ast.Return) and node.value is not None and
               any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node.value))
               for stmt in function_body for node in ast.walk(stmt))


def _written_run(stmt, name):
    """(lo, hi) when ``stmt`` is ``for v in range(lo, hi, 1)`` writing ``name[v]`` in every
    iteration (a top-level statement of its body; ``v`` not rebound; ``lo``, ``hi`` names or
    constants), else None."""
    if not (isinstance(stmt, ast.For) and isinstance(stmt.target, ast.Name) and not stmt.orelse
            and isinstance(stmt.iter, ast.Call) and isinstance(stmt.iter.func, ast.Name)
            and stmt.iter.func.id == "range" and len(stmt.iter.args) == 3):
        return None
    lo, hi, step = stmt.iter.args
    if not (isinstance(step, ast.Constant) and step.value == 1 and not isinstance(step.value, bool)) or \
            not all(isinstance(bound, (ast.Name, ast.Constant)) for bound in (lo, hi)):
        return None
    var = stmt.target.id
    if var in assigned_in(stmt.body) or any(isinstance(node, (ast.Break, ast.Continue, ast.Return))
                                            for node in walk_body(stmt.body)):
        return None
    for node in stmt.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Subscript) and \
                isinstance(node.targets[0].value, ast.Name) and node.targets[0].value.id == name and \
                isinstance(node.targets[0].slice, ast.Name) and node.targets[0].slice.id == var:
            return (lo, hi)
    return None


def _saves(stmts):
    for stmt in walk_body(stmts):
        if isinstance(stmt, Save):
            yield stmt
