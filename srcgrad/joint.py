"""Joint sweeps: a loop whose value is a sum computes the value and the adjoint in one pass.

When the function's last loop only adds a term per iteration to the result (Rosenbrock:
``s += 100 * a * a + b * b``; every other value is the iteration's own), the reverse iteration needs
nothing from later iterations: the result's adjoint (the seed) reaches every term unchanged, and the
other adjoints are the iteration's own or sums into input arrays. The forward loop and its reverse
(which recomputes the iteration's values) then become one loop in forward order that computes each
term and, right away, its adjoint — what a hand-written adjoint does. It runs in the reverse sweep
(after the adjoints are zeroed) and sets ``_value`` when it ends.

The conditions are checked on the normalized loop (``joinable``) and on the generated sweeps (no
tape traffic in either loop); anything else keeps the two sweeps.
"""
import ast

from .analyse import operand_names
from .liveness import assigned_in, value_reads
from .normalize import assign, name_load
from .naming import HELPER_FLOAT_STACK, HELPER_INT_STACK
from .placeholders import Comment

RECOMPUTE = "recompute this iteration's values"
_HELPER_STACKS = set(HELPER_FLOAT_STACK + HELPER_INT_STACK)


def accumulator(loop, result, analysis):
    """The loop-carried name when ``loop`` only adds terms to ``result`` (``t = s + e; s = t`` or
    ``s = s + e`` with ``e`` not reading ``s``), its other names being the iteration's own; else None."""
    body = loop.body
    if not all(isinstance(s, ast.Assign) and isinstance(s.targets[0], ast.Name) for s in body):
        return None         # branches, inner loops, element writes: order may matter
    if not (isinstance(result, ast.Name) and analysis.kinds.get(result.id) is not None
            and analysis.kinds[result.id].cls == "float"):
        return None
    s = result.id
    targets = [stmt.targets[0].id for stmt in body]
    if targets.count(s) != 1 or loop.target.id == s:
        return None
    for name in set(targets) - {s}:
        if targets.count(name) != 1 or analysis.def_sites.get(name) != 1:
            return None     # assigned again (here or elsewhere): not the iteration's own value
        kind = analysis.kinds.get(name)
        if kind is None or not kind.is_scalar:
            return None     # an array's adjoint is zeroed like it before the reverse sweep starts
    # every name but s is assigned before it is read in the iteration (not carried)
    assigned = set()
    for stmt in body:
        for name in operand_names(stmt.value):
            if name in targets and name not in assigned and name != s:
                return None
        assigned.add(stmt.targets[0].id)
    # s is read once, as an operand of the addition whose result becomes s's next value
    readers = [stmt for stmt in body if s in operand_names(stmt.value)]
    if len(readers) != 1:
        return None
    add = readers[0].value
    if not (isinstance(add, ast.BinOp) and isinstance(add.op, (ast.Add, ast.Sub))
            and isinstance(add.left, ast.Name) and add.left.id == s
            and not (isinstance(add.right, ast.Name) and add.right.id == s)) and \
            not (isinstance(add, ast.BinOp) and isinstance(add.op, ast.Add)
                 and isinstance(add.right, ast.Name) and add.right.id == s
                 and not (isinstance(add.left, ast.Name) and add.left.id == s)):
        return None
    update = next(stmt for stmt in body if stmt.targets[0].id == s)
    if update is not readers[0]:
        carrier = readers[0].targets[0].id
        if not (isinstance(update.value, ast.Name) and update.value.id == carrier):
            return None
        if sum(carrier in operand_names(stmt.value) for stmt in body) != 1:
            return None
    return s


def _tape_traffic(stmts):
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and node.id.startswith(("_ftape", "_itape", "_fpos", "_ipos")) \
                    and node.id not in _HELPER_STACKS:
                return True     # (a split helper call pops in the iteration what it pushed there)
            if isinstance(node, ast.Attribute) and node.attr in ("append", "pop"):
                return True
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    "snapshot" in node.func.id:
                return True
    return False


def join(body, forward, reverse, result, analysis, loops):
    """``(forward, reverse)`` with the last loop joined when legal (see the module docstring),
    else the sweeps unchanged. ``body``: the normalized function body (its last statement is the
    return); ``loops``: the transformer's (normalized body, reverse loop, loop variable, forward
    body) entries."""
    if len(body) < 2 or not isinstance(body[-2], ast.For) or not forward or \
            not isinstance(forward[-1], ast.For):
        return forward, reverse
    loop, forward_loop = body[-2], forward[-1]
    s = accumulator(loop, result, analysis)
    reverse_loop = next((entry[1] for entry in loops if entry[0] is loop.body), None)
    if s is None or reverse_loop is None:       # (forward[-1] is the loop's forward: it is last)
        return forward, reverse
    position = next((k for k, stmt in enumerate(reverse) if stmt is reverse_loop), None)
    if position is None:
        return forward, reverse
    # what runs before it in the reverse sweep is the seed: it reads no primal value
    if any(value_reads(stmt) - {"_seed"} for stmt in reverse[:position]
           if not isinstance(stmt, Comment)):
        return forward, reverse
    if _tape_traffic([forward_loop, reverse_loop]):
        return forward, reverse
    # names of the loop are not used outside it (the accumulator aside)
    local = assigned_in(loop.body) | {loop.target.id}
    outside = [stmt for stmt in forward[:-1] + reverse[:position] + reverse[position + 1:]]
    if any((value_reads(stmt) | assigned_in([stmt])) & (local - {s}) for stmt in outside
           if not isinstance(stmt, Comment)):
        return forward, reverse
    # the reverse body without its recomputation (the forward statements just computed it)
    adjoint_body, skipping = [], False
    for stmt in reverse_loop.body:
        if isinstance(stmt, Comment):
            skipping = stmt.text == RECOMPUTE
            if skipping:
                continue
        if not skipping:
            adjoint_body.append(stmt)
    note = Comment("joint sweep: the value is a sum, so each iteration computes its term and, "
                   "right away, the term's adjoint (one pass instead of a forward and a reverse loop; "
                   "it sets _value when it ends)",
                   loop.lineno)
    joint = ast.copy_location(ast.For(target=forward_loop.target, iter=forward_loop.iter,
                                      body=forward_loop.body + adjoint_body, orelse=[]), loop)
    value = assign("_value", name_load(s), body[-1])
    return forward[:-1], reverse[:position] + [note, joint, value] + reverse[position + 1:]
