"""Normalize, part 0 (continued): lists built with ``append`` become arrays written slot by slot."""
import ast

import numpy as np

from .sequences import _binop, _call
from .syntax import _copy, _walk_all, assign, assigned_names, name_load


def _is_append(stmt, name=None):
    call = stmt.value if isinstance(stmt, ast.Expr) else None
    return isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and \
        call.func.attr == "append" and isinstance(call.func.value, ast.Name) and \
        (name is None or call.func.value.id == name)


class ListBuilder:
    """``L = []`` ... ``L.append(v)`` ... ``np.stack(L)``: the list becomes an array ``L`` of the
    largest length it can reach (known before the first append: the appends' loops are ``range``
    loops), written slot by slot, and a count ``_L_n1`` of the items appended. Its uses read the
    first ``_L_n1`` rows: ``np.stack(L)``/``np.array(L)`` -> ``L[:_L_n1]``, ``sum(L)``,
    ``len(L)``, ``L[i]``. (Python's list would hold the appended objects themselves; srcgrad
    copies each value when it is appended, so appending an array that is later written into is
    refused.)"""

    def __init__(self, fsrc, names):
        self.fsrc = fsrc
        self.names = names

    def run(self, body):
        lists = []
        for node in _walk_all(body):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                    isinstance(node.targets[0], ast.Name) and \
                    isinstance(node.value, (ast.List, ast.Tuple)) and not node.value.elts:
                lists.append(node.targets[0].id)
        for stmt in _walk_all(body):
            if _is_append(stmt) and stmt.value.func.value.id not in lists:
                raise self.fsrc.error(stmt, f"`{ast.unparse(stmt.value)}`: srcgrad supports append to "
                                      "a list created empty in the function (`L = []`)", "append")
        for name in dict.fromkeys(lists):
            body = self.build(body, name)
        return body

    def build(self, body, name):
        block, index = _find_creation(body, name)
        if block is None:
            raise self.fsrc.error(None, f"the list {name!r} must be created once, as `{name} = []`",
                                  "list")
        creation = block[index]
        # every other assignment to the name, and the appends' places
        for node in _walk_all(body):
            if node is not creation and isinstance(node, (ast.Assign, ast.AugAssign, ast.For)) and \
                    name in assigned_names([node]) and not isinstance(node, ast.For):
                raise self.fsrc.error(node, f"the list {name!r} is assigned again: srcgrad builds a "
                                      "list once, with append", "list")
        sites = [k for k in range(index + 1, len(block)) if _appends_in(block[k], name)]
        outside = [s for s in _walk_all(body) if _is_append(s, name) and
                   not any(s is t for k in sites for t in _walk_all([block[k]]))]
        if outside:
            raise self.fsrc.error(outside[0], f"append to {name!r} outside the block that creates it",
                                  "append")
        count = self.names.fresh(f"{name.lstrip('_')}_n")
        capacity = self.names.fresh(f"{name.lstrip('_')}_cap")
        first = sites[0] if sites else index + 1
        total = None
        for k in sites:
            part = self.count(block[k], name)
            total = part if total is None else _binop(total, ast.Add(), part, creation)
        if sites:
            changed = assigned_names(block[first:sites[-1] + 1])
            total = _substitute_invariants(total, block[first:sites[-1] + 1], body, changed)
            used = {n.id for n in ast.walk(total) if isinstance(n, ast.Name)}
            if used & changed:
                raise self.fsrc.error(block[first], f"the number of items appended to {name!r} depends "
                                      f"on {sorted(used & changed)[0]!r}, which changes while they "
                                      "are appended: srcgrad needs it before the first append", "append")
        written = {n.value.id for s in _walk_all(body) for n in ast.walk(s)
                   if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store)
                   and isinstance(n.value, ast.Name)}
        # created at the top of the function, the list's array is made once per call: the
        # reverse sweep never needs a value it replaced (transform.py then saves nothing)
        self.once = block is body
        new_block = []
        for k, stmt in enumerate(block):
            if k == index:
                new_block.append(assign(count, ast.Constant(0), creation))
                continue
            if sites and k == first:
                new_block.append(assign(capacity, total, stmt))
            if k in sites:
                result = self.rewrite_appends(stmt, name, count, capacity, written)
                new_block += result if isinstance(result, list) else [result]
            else:
                new_block.append(stmt)
        block[:] = new_block
        return self.rewrite_uses(body, name, count)

    def count(self, stmt, name):
        """How many times ``stmt`` appends to ``name`` at most (an expression)."""
        if _is_append(stmt, name):
            return ast.Constant(1)
        if isinstance(stmt, ast.If):
            parts = [self.block_count(stmt.body, name), self.block_count(stmt.orelse, name)]
            parts = [p for p in parts if p is not None]
            return parts[0] if len(parts) == 1 else _binop(parts[0], ast.Add(), parts[1], stmt)
        if isinstance(stmt, ast.For):
            it = stmt.iter
            if not (isinstance(it, ast.Call) and getattr(it.func, "id", None) == "range"):
                raise self.fsrc.error(stmt, f"append to {name!r} in a loop srcgrad cannot count",
                                      "append")
            args = list(it.args)
            args = [ast.Constant(0), args[0], ast.Constant(1)] if len(args) == 1 else \
                args + [ast.Constant(1)] * (3 - len(args))
            trips = _call("range_length", "range_length", [_copy(a) for a in args], stmt)
            inner = self.block_count(stmt.body, name)
            return _binop(trips, ast.Mult(), inner, stmt)
        if isinstance(stmt, ast.While):
            raise self.fsrc.error(stmt, f"append to {name!r} inside a while loop: the list's length "
                                  "must be known before its loop (use a for loop over a range)", "append")
        return None

    def block_count(self, stmts, name):
        total = None
        for stmt in stmts:
            if not _appends_in(stmt, name):
                continue
            part = self.count(stmt, name)
            total = part if total is None else _binop(total, ast.Add(), part, stmt)
        return total if total is not None else ast.Constant(0)

    def rewrite_appends(self, stmt, name, count, capacity, written):
        if _is_append(stmt, name):
            call = stmt.value
            if len(call.args) != 1 or call.keywords:
                raise self.fsrc.error(stmt, "append takes one value", "append")
            value = call.args[0]
            if isinstance(value, ast.Name) and value.id in written:
                raise self.fsrc.error(stmt, f"`{value.id}` is written into after being appended to "
                                      f"{name!r}: Python's list would see the change, srcgrad copies "
                                      f"the value; append `{value.id}.copy()`", "append of a mutated array")
            out = []
            if not isinstance(value, ast.Name):
                item = self.names.fresh("item")
                out.append(assign(item, value, stmt))
                value = name_load(item)
            first = ast.Compare(left=name_load(count), ops=[ast.Eq()], comparators=[ast.Constant(0)])
            make = assign(name, _call("stack_buffer", "stack_buffer",
                                      [name_load(capacity), name_load(value.id), ast.Constant(self.once)],
                                      stmt), stmt)
            out.append(ast.copy_location(ast.If(test=first, body=[make], orelse=[]), stmt))
            slot = ast.Subscript(value=name_load(name), slice=name_load(count), ctx=ast.Store())
            out.append(assign(slot, name_load(value.id), stmt))
            out.append(assign(count, _binop(name_load(count), ast.Add(), ast.Constant(1), stmt), stmt))
            return out
        for field in ("body", "orelse"):
            if hasattr(stmt, field):
                new = []
                for child in getattr(stmt, field):
                    result = self.rewrite_appends(child, name, count, capacity, written)
                    new.extend(result if isinstance(result, list) else [result])
                setattr(stmt, field, new)
        return stmt

    def rewrite_uses(self, body, name, count):
        fsrc = self.fsrc

        def rows(like):
            sl = ast.Slice(lower=None, upper=name_load(count), step=None)
            return ast.copy_location(ast.Subscript(value=name_load(name), slice=sl, ctx=ast.Load()), like)

        def nonempty(like, what):
            test = ast.Compare(left=name_load(count), ops=[ast.Gt()], comparators=[ast.Constant(0)])
            message = f"{fsrc.filename}:{like.lineno}: {what} of the empty list {name!r}"
            return ast.copy_location(ast.Assert(test=test, msg=ast.Constant(message)), like)

        def in_range(like, index):
            """``-n <= index < n`` for the ``n`` items appended so far, as an assert."""
            if isinstance(index, ast.Constant) and isinstance(index.value, int):
                bound = index.value if index.value >= 0 else -index.value - 1
                test = ast.Compare(left=name_load(count), ops=[ast.Gt()],
                                   comparators=[ast.Constant(bound)])
            else:
                test = ast.Compare(left=ast.UnaryOp(op=ast.USub(), operand=name_load(count)),
                                   ops=[ast.LtE(), ast.Lt()], comparators=[_copy(index), name_load(count)])
            message = f"{fsrc.filename}:{like.lineno}: list index out of range for the list {name!r}"
            node = ast.Assert(test=test, msg=ast.Constant(message))
            for sub in ast.walk(node):
                ast.copy_location(sub, like)
            return node

        class Uses(ast.NodeTransformer):
            def __init__(self, stmt):
                self.stmt = stmt
                self.checks = []

            def visit_Call(self, node):
                if node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == name:
                    label = ast.unparse(node.func)
                    keywords = {kw.arg: kw.value for kw in node.keywords}
                    axis = node.args[1] if len(node.args) > 1 else keywords.get("axis")
                    if label in ("np.stack", "np.array", "np.asarray", "numpy.stack", "numpy.array"):
                        if label.endswith("stack") and axis is not None and not (
                                isinstance(axis, ast.Constant) and axis.value == 0):
                            raise fsrc.error(node, f"np.stack of the list {name!r} along an axis other "
                                             "than 0 is not supported (stack along 0, then transpose)",
                                             "stack axis")
                        if len(node.args) + len(node.keywords) > (2 if label.endswith("stack") else 1):
                            raise fsrc.error(node, f"`{label}` of the list {name!r} with these "
                                             "arguments is not supported", "list")
                        self.checks.append(nonempty(node, label))
                        return rows(node)
                    if label in ("np.vstack", "numpy.vstack") and \
                            len(node.args) == 1 and not node.keywords:
                        # NumPy reads an array as the sequence of its rows: the same result
                        self.checks.append(nonempty(node, label))
                        node.args = [rows(node)]
                        return node
                    if label == "sum" and len(node.args) == 1 and not node.keywords:
                        self.checks.append(nonempty(node, "sum"))
                        call = _call(np.sum, "np.sum", [rows(node)], node)
                        call.keywords = [ast.keyword(arg="axis", value=ast.Constant(0))]
                        return call
                    if label == "len" and len(node.args) == 1:
                        return ast.copy_location(name_load(count), node)
                self.generic_visit(node)
                return node

            def visit_Subscript(self, node):
                if isinstance(node.value, ast.Name) and node.value.id == name and \
                        isinstance(node.ctx, ast.Load):
                    node.slice = self.visit(node.slice)
                    if isinstance(node.slice, (ast.Slice, ast.Tuple)):
                        node.value = rows(node)
                        return node
                    # one item: its slot of the array, not an item of a view of the rows so far
                    # (that view changes shape while the list grows: `hs[-1]` in the loop that
                    # appends to `hs`), after the range check Python's list makes
                    self.checks.append(in_range(node, node.slice))
                    index = node.slice
                    if isinstance(index, ast.Constant) and isinstance(index.value, int):
                        if index.value < 0:
                            node.slice = _binop(name_load(count), ast.Add(), index, node)
                    else:
                        node.slice = ast.copy_location(
                            ast.BinOp(left=index, op=ast.Mod(), right=name_load(count)), node)
                    return node
                self.generic_visit(node)
                return node

            def visit_Name(self, node):
                if node.id == name:
                    raise fsrc.error(self.stmt, f"this use of the list {name!r} is not supported "
                                     "(srcgrad supports np.stack, np.vstack, np.array, sum, len and "
                                     "indexing of a list built with append)", "list use")
                return node

        def visit(stmts):
            out = []
            for stmt in stmts:
                if isinstance(stmt, (ast.If, ast.For, ast.While)):
                    uses = Uses(stmt)
                    if isinstance(stmt, ast.For):
                        stmt.iter = uses.visit(stmt.iter)
                    else:
                        stmt.test = uses.visit(stmt.test)
                    stmt.body = visit(stmt.body)
                    stmt.orelse = visit(stmt.orelse)
                    out += uses.checks + [stmt]
                    continue
                uses = Uses(stmt)
                for field in ("value", "test", "msg"):
                    value = getattr(stmt, field, None)
                    if isinstance(value, ast.expr):
                        setattr(stmt, field, uses.visit(value))
                for target in getattr(stmt, "targets", []):
                    if isinstance(target, ast.Subscript):
                        target.slice = uses.visit(target.slice)
                        if isinstance(target.value, ast.Name) and target.value.id == name and \
                                not (isinstance(target.slice, ast.Name) and target.slice.id == count):
                            raise fsrc.error(stmt, f"writing into the list {name!r} is not supported",
                                             "list write")
                out += uses.checks + [stmt]
            return out
        return visit(body)


def _split_list_literals(stmts, names):
    """``L = [a, b]`` where ``L`` is later appended to becomes ``L = []; L.append(a);
    L.append(b)`` (the same list), so that ListBuilder sees one kind of list."""
    out = []
    for stmt in stmts:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id in names and \
                isinstance(stmt.value, ast.List) and stmt.value.elts and \
                not any(isinstance(e, ast.Starred) for e in stmt.value.elts):
            name = stmt.targets[0].id
            out.append(assign(name, ast.List(elts=[], ctx=ast.Load()), stmt))
            for elt in stmt.value.elts:
                method = ast.Attribute(value=name_load(name), attr="append", ctx=ast.Load())
                call = ast.Call(func=method, args=[elt], keywords=[])
                out.append(ast.copy_location(ast.Expr(value=ast.copy_location(call, stmt)), stmt))
            continue
        for field in ("body", "orelse", "finalbody"):
            if isinstance(getattr(stmt, field, None), list):
                setattr(stmt, field, _split_list_literals(getattr(stmt, field), names))
        out.append(stmt)
    return out


def _substitute_invariants(expr, region, body, changed):
    """``expr`` with the names ``region`` assigns once, from values it does not change (an inner
    loop's length ``_n4 = len(_seq5)``), replaced by those values: computable before the region."""
    stores = {}
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            stores[node.id] = stores.get(node.id, 0) + 1
    defs = {s.targets[0].id: s.value for s in _walk_all(region)
            if isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
            and stores.get(s.targets[0].id) == 1}

    class Substitute(ast.NodeTransformer):
        def __init__(self, depth):
            self.depth = depth

        def visit_Name(self, node):
            if node.id in changed and node.id in defs and self.depth < 8:
                return Substitute(self.depth + 1).visit(_copy(defs[node.id]))
            return node
    out = Substitute(0).visit(_copy(expr))
    for node in ast.walk(out):         # _copy re-parses: keep the callee annotations
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("range_length",):
                node.callee = "range_length"
            elif node.func.id == "len":
                node.callee = len
    return out


def _appends_in(stmt, name):
    return any(_is_append(s, name) for s in _walk_all([stmt]))


def _find_creation(stmts, name):
    for index, stmt in enumerate(stmts):
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == name and \
                isinstance(stmt.value, (ast.List, ast.Tuple)) and not stmt.value.elts:
            return stmts, index
        for field in ("body", "orelse"):
            found = _find_creation(getattr(stmt, field, []), name)
            if found[0] is not None:
                return found
    return None, None
