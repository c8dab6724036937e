"""Liveness over the reverse sweep: which primal values it reads, and which pops are dead.

The reverse transformation (:mod:`srcgrad.transform`) leaves :class:`~srcgrad.placeholders.Save` /
:class:`~srcgrad.placeholders.Restore` pairs wherever a value is overwritten; these functions decide
which of them the reverse sweep needs (:mod:`srcgrad.tape` turns the kept ones into pushes and pops).
``keep(save)`` is the current filter: whether a placeholder pair still becomes code.
"""
import ast

from .analyse import operand_names
from .placeholders import Comment, Reset, Restore, Save


def dead_restores(reverse, keep):
    """ids of Save placeholders whose restored value nothing in the reverse sweep reads.

    A backward liveness pass over the reverse sweep: a pop into ``v`` is dead when ``v`` is
    overwritten (by another pop, a recomputation, a loop header) before anything reads it. Both
    the pop and its matching push then disappear (e.g. a running sum inside an inner loop)."""
    dead = set()
    alive = set()

    def reads_and_defs(stmt):
        reads, defs = set(), set()
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name):
                (reads if isinstance(node.ctx, ast.Load) else defs).add(node.id)
            if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) and \
                    isinstance(node.value, ast.Name):
                reads.add(node.value.id)          # a slot write keeps the rest of the array
        if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
            reads.add(stmt.target.id)
        return reads, defs

    def sequence(stmts, live, record):
        for stmt in reversed(stmts):
            live = statement(stmt, live, record)
        return live

    def statement(stmt, live, record):
        if isinstance(stmt, (Comment, Save)):
            return live
        if isinstance(stmt, Restore):
            save = stmt.save
            if not keep(save):
                return live
            if save.index is not None:
                return live | {save.name} | set(operand_names(save.index))
            target = save.name
            if record and not save.always:
                (alive if target in live else dead).add(id(save))
            return live - {target}
        if isinstance(stmt, (ast.If, ast.For, ast.While)) and \
                not has_kept_code(stmt.body + stmt.orelse, keep):
            return live
        if isinstance(stmt, ast.If):
            body = sequence(stmt.body, live, record)
            orelse = sequence(stmt.orelse, live, record)
            return body | orelse | set(operand_names(stmt.test))
        if isinstance(stmt, (ast.For, ast.While)):
            target = {stmt.target.id} if isinstance(stmt, ast.For) else set()
            header = set(operand_names(stmt.iter)) if isinstance(stmt, ast.For) else \
                set(operand_names(stmt.test))
            body_out = set(live)
            for _ in range(50):
                body_in = sequence(stmt.body, body_out, False)
                new_out = live | (body_in - target) | header
                if new_out == body_out:
                    break
                body_out = new_out
            body_in = sequence(stmt.body, body_out, record)
            return live | (body_in - target) | header
        reads, defs = reads_and_defs(stmt)
        return (live - defs) | reads

    sequence(reverse, set(), True)
    return dead - alive       # a push shared by several paths stays if any path needs it



def has_kept_code(stmts, keep):
    """Whether the reverse-sweep statements do anything once unneeded pops are dropped."""
    for stmt in stmts:
        if isinstance(stmt, (ast.Pass, Comment, Save)):
            continue
        if isinstance(stmt, Reset):
            return True
        if isinstance(stmt, Restore):
            if keep(stmt.save):
                return True
            continue
        if isinstance(stmt, (ast.If, ast.For, ast.While)):
            if has_kept_code(stmt.body + stmt.orelse, keep):
                return True
            continue
        return True
    return False


def has_code(stmts):
    return any(not isinstance(s, (ast.Pass, Comment)) for s in stmts)


def assigned_in(stmts):
    out = set()
    for node in walk_body(stmts):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            out.add(node.targets[0].id)
        elif isinstance(node, ast.For):
            out.add(node.target.id)
    return out


def defined_at(name, place, body, params):
    """Whether ``name`` always has a value when the statement ``place`` runs: a parameter, or
    assigned at the top level of ``body`` (the function's) before the statement that holds
    ``place``."""
    if name in params:
        return True
    for stmt in body:
        if any(node is place for node in ast.walk(stmt)):
            return False
        if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name) and \
                stmt.targets[0].id == name:
            return True
    return False


def walk_body(stmts):
    for stmt in stmts:
        yield stmt
        if isinstance(stmt, (ast.If, ast.For, ast.While)):
            yield from walk_body(stmt.body)
            yield from walk_body(stmt.orelse)



def primal_reads(stmts, keep):
    """Names of primal (non-adjoint) variables the reverse sweep reads."""
    out = set()
    for stmt in stmts:
        if isinstance(stmt, Comment):
            continue
        if isinstance(stmt, Save):
            continue
        if isinstance(stmt, Restore):
            if keep(stmt.save) and stmt.save.index is not None:
                out.add(stmt.save.name)
                out |= set(operand_names(stmt.save.index))
            continue
        if isinstance(stmt, (ast.If, ast.For, ast.While)):
            if not has_kept_code(stmt.body + stmt.orelse, keep):
                continue         # this branch/loop replays nothing: it disappears
            outside = getattr(stmt, "outside_reads", None)
            if outside is not None:
                # a checkpointed segment run again (checkpoint.py): it computes its own values from
                # the restored state; only what it reads from outside the loop is needed
                out |= outside
                continue
            if isinstance(stmt, ast.If):
                out |= set(operand_names(stmt.test))
                out |= primal_reads(stmt.body, keep) | primal_reads(stmt.orelse, keep)
            else:
                if isinstance(stmt, ast.For):
                    out |= set(operand_names(stmt.iter))
                out |= primal_reads(stmt.body, keep)
            continue
        out |= value_reads(stmt)
    return out


# Arguments that only lend their shape: overwriting the array's values does not matter to them.
SHAPE_ONLY_ARGUMENTS = {"unbroadcast": (1,), "expand_reduced": (1,), "reduced_count": (0,),
                        "zeros_like": (0,), "tape_slice": (2,)}


def value_reads(stmt):
    """Primal names whose *values* ``stmt`` reads (shape-only uses, like ``x.shape``, excluded)."""
    out = set()

    def visit(node):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load) and not node.id.startswith("_adj"):
                out.add(node.id)
            return
        if isinstance(node, ast.Attribute) and node.attr in ("shape", "size", "ndim") and \
                isinstance(node.value, ast.Name):
            return
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            skip = SHAPE_ONLY_ARGUMENTS.get(name, ())
            visit(node.func)
            for position, arg in enumerate(node.args):
                if position in skip and isinstance(arg, ast.Name):
                    continue
                visit(arg)
            for kw in node.keywords:
                visit(kw.value)
            return
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
            out.update(operand_names(node.slice))
        for child in ast.iter_child_nodes(node):
            visit(child)
    visit(stmt)
    return out
