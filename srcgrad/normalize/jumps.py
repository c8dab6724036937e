"""Normalize, part 1: jumps (``return`` / ``break`` / ``continue``) become flags."""
import ast

from .. import naming as N
from .syntax import NameMaker, _contains, assign, assigned_names, name_load


class _Loop:
    def __init__(self, brk, cont):
        self.brk = brk      # flag name or None
        self.cont = cont


class JumpDesugarer:
    """Rewrite early return, break and continue into flag variables and guarded blocks."""

    def __init__(self, names: NameMaker, fn: ast.FunctionDef):
        self.names = names
        body = fn.body
        last_is_return = bool(body) and isinstance(body[-1], ast.Return)
        early = _contains(body[:-1] if last_is_return else body, (ast.Return,), False)
        self.needs_flag = early
        self.done = names.fresh("returned") if early else None
        self.ret = names.fresh("result") if early else None

    def run(self, fn):
        if not self.needs_flag:
            return self.block(fn.body, loop=None)
        first = fn.body[0]
        body = [assign(self.done, ast.Constant(False), first)]
        body += self.block(fn.body, loop=None)
        body.append(ast.copy_location(ast.Return(value=name_load(self.ret)), fn.body[-1]))
        return body

    def block(self, stmts, loop):
        out = []
        for index, stmt in enumerate(stmts):
            new, flags = self.statement(stmt, loop)
            out.extend(new)
            if flags:
                rest = self.block(stmts[index + 1:], loop)
                if rest:
                    test = _not_any(sorted(flags), stmt)
                    out.append(ast.copy_location(ast.If(test=test, body=rest, orelse=[]), stmt))
                break
        return out

    def statement(self, stmt, loop):
        """Return (new statements, set of flags this statement may set)."""
        if isinstance(stmt, ast.Return) and not self.needs_flag:
            return [stmt], set()          # the single, final return stays as it is
        if isinstance(stmt, ast.Return):
            value = stmt.value if stmt.value is not None else ast.Constant(None)
            new = [assign(self.ret, value, stmt), assign(self.done, ast.Constant(True), stmt)]
            return new, {self.done}
        if isinstance(stmt, ast.Break):
            return [assign(loop.brk, ast.Constant(True), stmt)], {loop.brk}
        if isinstance(stmt, ast.Continue):
            return [assign(loop.cont, ast.Constant(True), stmt)], {loop.cont}
        if isinstance(stmt, ast.If):
            body = self.block(stmt.body, loop)
            orelse = self.block(stmt.orelse, loop)
            flags = self._flags_set(stmt.body + stmt.orelse, loop)
            new = ast.copy_location(ast.If(test=stmt.test, body=body or [ast.Pass()], orelse=orelse), stmt)
            return [new], flags
        if isinstance(stmt, (ast.For, ast.While)):
            return self.loop(stmt)
        return [stmt], set()

    def _flags_set(self, stmts, loop):
        flags = set()
        if _contains(stmts, (ast.Return,), False):
            flags.add(self.done)
        if loop is not None:
            if _contains(stmts, (ast.Break,), True):
                flags.add(loop.brk)
            if _contains(stmts, (ast.Continue,), True):
                flags.add(loop.cont)
        return flags

    def loop(self, stmt):
        has_break = _contains(stmt.body, (ast.Break,), True)
        has_continue = _contains(stmt.body, (ast.Continue,), True)
        has_return = self.needs_flag and _contains(stmt.body, (ast.Return,), False)
        inner = _Loop(self.names.fresh("break") if has_break else None,
                      self.names.fresh("continue") if has_continue else None)
        body = self.block(stmt.body, inner)
        if has_continue:
            body.insert(0, assign(inner.cont, ast.Constant(False), stmt))
        stops = [f for f in (inner.brk, self.done if has_return else None) if f]
        pre = [assign(f, ast.Constant(False), stmt) for f in stops if f == inner.brk]
        out_flags = {self.done} if has_return else set()
        if not stops:
            stmt = ast.copy_location(type(stmt)(**{**_fields(stmt), "body": body}), stmt)
            return [stmt], out_flags
        if isinstance(stmt, ast.While):
            test = ast.BoolOp(op=ast.And(), values=[_not_any(stops, stmt), stmt.test])
            new = ast.While(test=ast.copy_location(test, stmt), body=body, orelse=[])
            return pre + [ast.copy_location(new, stmt)], out_flags
        # for i in range(a, b, c) with an early exit -> an explicit counter and a while loop.
        # Known bug: the adjoint of this rewrite is wrong, so refuse it rather than mislead.
        args = list(stmt.iter.args)
        start, stop, step = (ast.Constant(0), args[0], ast.Constant(1)) if len(args) == 1 else \
            (args[0], args[1], args[2] if len(args) == 3 else ast.Constant(1))
        counter = self.names.fresh("i")
        stop_name, step_name = self.names.fresh("stop"), self.names.fresh("step")
        pre += [assign(counter, start, stmt), assign(stop_name, stop, stmt), assign(step_name, step, stmt)]
        in_range = ast.Call(func=name_load(N.RANGE_CONTINUES),
                            args=[name_load(counter), name_load(stop_name), name_load(step_name)],
                            keywords=[])
        in_range.callee = N.RANGE_CONTINUES
        test = ast.BoolOp(op=ast.And(), values=[_not_any(stops, stmt), in_range])
        body = [assign(stmt.target.id, name_load(counter), stmt)] + body + [
            assign(counter, ast.BinOp(left=name_load(counter), op=ast.Add(), right=name_load(step_name)), stmt)]
        new = ast.While(test=ast.copy_location(test, stmt), body=body, orelse=[])
        return pre + [ast.copy_location(new, stmt)], out_flags


def _rename_straight_line_redefinitions(body, params, names):
    """``z = f(x); z = z - m`` at the top level of the function -> ``z = ...; z_2 = z - m``.

    A variable assigned only by top-level statements (never inside a branch or loop) gets a new
    name at each reassignment, so the reverse sweep never has to save and restore its old value
    (arrays included). Uses after each assignment are renamed to match."""
    top_defs = {}
    for stmt in body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
            top_defs[stmt.targets[0].id] = top_defs.get(stmt.targets[0].id, 0) + 1
    nested_defs = set()
    for stmt in body:
        if isinstance(stmt, (ast.If, ast.For, ast.While)):
            nested_defs |= assigned_names([stmt])
    rename = {name for name, count in top_defs.items()
              if name not in nested_defs and count + (name in params) > 1}
    if not rename:
        return body
    current = {}
    seen = set(params)

    class Uses(ast.NodeTransformer):
        def visit_Name(self, node):
            if node.id in current:
                return ast.copy_location(ast.Name(id=current[node.id], ctx=node.ctx), node)
            return node
    out = []
    for stmt in body:
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id in rename:
            stmt.value = Uses().visit(stmt.value)
            name = target.id
            if name in seen:
                version = 2
                while f"{name}_{version}" in names.taken or f"_{name}_{version}" in names.taken:
                    version += 1
                new = f"{name}_{version}"
                names.taken.add(new)
                names.generated.discard(new)
                current[name] = new
                target.id = new
            seen.add(name)
            out.append(stmt)
            continue
        out.append(Uses().visit(stmt))
    return out


def _stable_if_tests(stmts, names):
    """Give an ``if`` a condition variable of its own when its branches reassign the test
    (``t = a; if t: t = b`` from ``a and b``): the reverse sweep replays the branch by that test."""
    out = []
    for stmt in stmts:
        if isinstance(stmt, (ast.For, ast.While)):
            stmt.body = _stable_if_tests(stmt.body, names)
        elif isinstance(stmt, ast.If):
            stmt.body = _stable_if_tests(stmt.body, names)
            stmt.orelse = _stable_if_tests(stmt.orelse, names)
            if stmt.test.id in assigned_names(stmt.body + stmt.orelse):
                cond = names.fresh("cond")
                out.append(assign(cond, name_load(stmt.test.id), stmt))
                stmt.test = name_load(cond, stmt)
        out.append(stmt)
    return out


def _count_name(stmts, name):
    return sum(1 for stmt in stmts for node in ast.walk(stmt) if isinstance(node, ast.Name) and node.id == name)


def _fields(node):
    return {name: getattr(node, name) for name in node._fields}


def _not_any(flags, like):
    tests = [ast.UnaryOp(op=ast.Not(), operand=name_load(f)) for f in flags]
    test = tests[0] if len(tests) == 1 else ast.BoolOp(op=ast.And(), values=tests)
    for node in ast.walk(test):
        ast.copy_location(node, like)
    return test
