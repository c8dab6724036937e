"""Small AST helpers every part of the normalize stage shares."""
import ast

import numpy as np

from .. import naming as N
from ..rules.callees import ARRAY_METHODS  # noqa: F401 (the one callee table; re-exported)


SCALAR_CONSTANT_TYPES = (bool, int, float, np.integer, np.floating, np.bool_)


def is_atom(node):
    return isinstance(node, (ast.Name, ast.Constant))


def name_load(name, like=None):
    node = ast.Name(id=name, ctx=ast.Load())
    if like is not None:
        ast.copy_location(node, like)
    return node


def name_store(name, like=None):
    node = ast.Name(id=name, ctx=ast.Store())
    if like is not None:
        ast.copy_location(node, like)
    return node


def assign(target, value, like):
    if isinstance(target, str):
        target = name_store(target)
    node = ast.Assign(targets=[target], value=value)
    ast.copy_location(node, like)
    for sub in ast.walk(node):
        if not hasattr(sub, "lineno") and isinstance(sub, (ast.expr, ast.stmt)):
            ast.copy_location(sub, like)
    return node


def assigned_names(stmts):
    """Every plain name assigned (stored) anywhere in ``stmts``."""
    out = set()
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                out.add(node.id)
    return out


class NameMaker:
    """Fresh, readable names for temporaries and flags; never clashes with user names."""

    def __init__(self, taken):
        self.taken = set(taken)
        self.counters = {}
        self.generated = set()     # names srcgrad made up (always locals)

    def fresh(self, stem):
        count = self.counters.get(stem, 0)
        while True:
            count += 1
            name = N.temporary(stem, count)
            # `_t3`'s adjoint is `_adj_t3`: never shadow a user variable `t3` (whose adjoint it is)
            if name not in self.taken and name[1:] not in self.taken:
                self.counters[stem] = count
                self.taken.add(name)
                self.generated.add(name)
                return name


def _copy(node):
    if node is None:
        return None
    if isinstance(node, ast.Slice) or isinstance(node, ast.Tuple) and \
            any(isinstance(e, ast.Slice) for e in node.elts):
        # an index with slices (`::2`, `1:, 0`) is only valid source inside brackets
        text = ast.unparse(node) if isinstance(node, ast.Slice) else \
            "".join(f"{ast.unparse(e)}, " for e in node.elts)
        return ast.parse(f"_[{text}]", mode="eval").body.slice
    return ast.parse(ast.unparse(node), mode="eval").body


def _walk_all(stmts):
    for stmt in stmts:
        yield stmt
        for field in ("body", "orelse"):
            yield from _walk_all(getattr(stmt, field, []) if isinstance(stmt, ast.stmt) else [])


def _contains(stmts, kinds, stop_at_loops):
    for stmt in stmts:
        for node in _walk_statements(stmt, stop_at_loops):
            if isinstance(node, kinds):
                return True
    return False


def _walk_statements(stmt, stop_at_loops):
    yield stmt
    children = []
    if isinstance(stmt, ast.If):
        children = stmt.body + stmt.orelse
    elif isinstance(stmt, (ast.For, ast.While)):
        if stop_at_loops:
            return
        children = stmt.body
    for child in children:
        yield from _walk_statements(child, stop_at_loops)
