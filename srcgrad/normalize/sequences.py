"""Normalize, part 0: Python sequences.

Loops over arrays, tuples, lists, enumerate/zip/reversed and list comprehensions become loops over indices
(unrolled when the sequence is a literal).
"""
import ast
import copy

from .syntax import _contains, _copy, assign, name_load, name_store


class _Sequence:
    """What a loop or comprehension iterates: its length and its k-th item (expressions)."""

    def __init__(self, length, item, static=None):
        self.length = length        # () -> expression
        self.item = item            # (k expression) -> expression
        self.static = static        # the number of items when it is known here (literals)


def _call(callee, name, args, like):
    func = name_load(name) if "." not in name else \
        ast.Attribute(value=name_load(name.split(".")[0]), attr=name.split(".")[1], ctx=ast.Load())
    node = ast.Call(func=func, args=args, keywords=[])
    node.callee = callee
    for sub in ast.walk(node):
        if not hasattr(sub, "lineno"):
            ast.copy_location(sub, like)
    return node


def _binop(left, op, right, like):
    if isinstance(op, ast.Add) and isinstance(right, ast.Constant) and right.value == 0:
        return left
    if isinstance(op, ast.Mult) and isinstance(right, ast.Constant) and right.value == 1:
        return left
    return ast.copy_location(ast.BinOp(left=left, op=op, right=right), like)


def _has_jump(stmts):
    return _contains(stmts, (ast.Break, ast.Continue), True)


class SequenceDesugarer:
    """``for x in seq`` (seq not a ``range``) and list comprehensions -> index loops (Part 0)."""

    def __init__(self, fsrc, names, body):
        self.fsrc = fsrc
        self.names = names
        # names bound once, at the top level, to a literal list/tuple: their length is known
        self.counts = {}
        for node in ast.walk(ast.Module(body=body, type_ignores=[])):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                self.counts[node.id] = self.counts.get(node.id, 0) + 1
        self.static_names = {}       # name -> the literal (a Tuple)
        self.top = {id(stmt) for stmt in body}
        # uses of each name outside every for loop that binds it: a loop variable with none is
        # private to its loops, and each loop can have its own (one assignment, no tape)
        self.outside = {}

        def count(node, bound):
            if isinstance(node, ast.For):
                inner = bound | {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
                count(node.iter, bound)
                for child in node.body + node.orelse:
                    count(child, inner)
                return
            if isinstance(node, ast.Name) and node.id not in bound:
                self.outside[node.id] = self.outside.get(node.id, 0) + 1
            for child in ast.iter_child_nodes(node):
                count(child, bound)
        for stmt in body:
            count(stmt, frozenset())

    def _note_literal(self, stmt):
        if isinstance(stmt, ast.Assign) and id(stmt) in self.top and len(stmt.targets) == 1 and \
                isinstance(stmt.targets[0], ast.Name) and self.counts.get(stmt.targets[0].id) == 1 and \
                isinstance(stmt.value, (ast.List, ast.Tuple)) and stmt.value.elts and \
                not any(isinstance(e, ast.Starred) for e in stmt.value.elts):
            self.static_names[stmt.targets[0].id] = stmt.value

    def _resolves_to(self, func, obj):
        try:
            return self.fsrc.resolve(func) is obj
        except KeyError:
            return False

    def _bind(self, expr, pre, stem, like):
        """``expr`` evaluated once, before the loop: a name (or a constant)."""
        if isinstance(expr, (ast.Name, ast.Constant)):
            return expr
        temp = self.names.fresh(stem)
        pre.append(assign(temp, expr, like))
        return name_load(temp)

    def sequence(self, expr, pre, like):
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and not expr.keywords:
            func, args = expr.func, expr.args
            if self._resolves_to(func, range) and 1 <= len(args) <= 3:
                args = [ast.Constant(0), args[0], ast.Constant(1)] if len(args) == 1 else \
                    list(args) + [ast.Constant(1)] * (3 - len(args))
                a, b, c = [self._bind(x, pre, "r", like) for x in args]
                static = None
                if all(isinstance(x, ast.Constant) and type(x.value) is int for x in (a, b, c)):
                    static = len(range(a.value, b.value, c.value))
                return _Sequence(lambda: _call("range_length", "range_length", [a, b, c], like),
                                 lambda k: _binop(a, ast.Add(), _binop(k, ast.Mult(), c, like), like),
                                 static)
            if self._resolves_to(func, enumerate) and len(args) in (1, 2):
                inner = self.sequence(args[0], pre, like)
                start = self._bind(args[1], pre, "start", like) if len(args) == 2 else ast.Constant(0)
                return _Sequence(inner.length, lambda k: ast.Tuple(
                    elts=[_binop(k, ast.Add(), start, like), inner.item(k)], ctx=ast.Load()),
                    inner.static)
            if self._resolves_to(func, zip) and args:
                inners = [self.sequence(arg, pre, like) for arg in args]
                item = lambda k: ast.Tuple(elts=[s.item(k) for s in inners], ctx=ast.Load())  # noqa: E731
                if all(s.static is not None for s in inners):
                    static = min(s.static for s in inners)
                    return _Sequence(lambda: ast.Constant(static), item, static)
                # the shortest length, as zip stops there
                n = self.names.fresh("n")
                pre.append(assign(n, inners[0].length(), like))
                for s in inners[1:]:
                    m = self.names.fresh("n")
                    pre.append(assign(m, s.length(), like))
                    shorter = ast.IfExp(test=ast.Compare(left=name_load(m), ops=[ast.Lt()],
                                                         comparators=[name_load(n)]),
                                        body=name_load(m), orelse=name_load(n))
                    pre.append(assign(n, shorter, like))
                return _Sequence(lambda: name_load(n), item)
            if self._resolves_to(func, reversed) and len(args) == 1:
                inner = self.sequence(args[0], pre, like)
                n = self._bind(inner.length(), pre, "n", like)
                last = _binop(n, ast.Sub(), ast.Constant(1), like) if not isinstance(n, ast.Constant) \
                    else ast.Constant(n.value - 1)
                return _Sequence(lambda: n, lambda k: inner.item(_binop(last, ast.Sub(), k, like)),
                                 inner.static)
        if isinstance(expr, (ast.List, ast.Tuple)):
            if any(isinstance(e, ast.Starred) for e in expr.elts):
                raise self.fsrc.error(like, "starred items in a sequence literal are not supported",
                                      "starred expression")
            seq = expr
            if not all(isinstance(e, (ast.Name, ast.Constant)) for e in expr.elts):
                seq = self._bind(ast.Tuple(elts=expr.elts, ctx=ast.Load()), pre, "seq", like)
            if isinstance(seq, ast.Name):
                item = lambda k: ast.Subscript(value=name_load(seq.id), slice=k, ctx=ast.Load())  # noqa: E731
            else:
                item = lambda k: _copy(seq.elts[k.value]) if isinstance(k, ast.Constant) else \
                    ast.Subscript(value=ast.Tuple(elts=[_copy(e) for e in seq.elts], ctx=ast.Load()),
                                  slice=k, ctx=ast.Load())  # noqa: E731
            count = len(expr.elts)
            return _Sequence(lambda: ast.Constant(count), item, count)
        # anything indexable: an array (its first axis), a tuple, a list built with append
        seq = self._bind(expr, pre, "seq", like)
        literal = self.static_names.get(seq.id) if isinstance(seq, ast.Name) else None
        if literal is not None and _plain(literal):
            # a name bound to a literal of names: its items themselves (`for W, b in layers`)
            count = len(literal.elts)
            return _Sequence(lambda: ast.Constant(count), lambda k: _copy(literal.elts[k.value]), count)
        return _Sequence(lambda: _call(len, "len", [name_load(seq.id)], like),
                         lambda k: ast.Subscript(value=name_load(seq.id), slice=k, ctx=ast.Load()),
                         len(literal.elts) if literal is not None else None)

    def bind_target(self, target, value, like):
        """``target = value`` for a name or a (nested) tuple of names."""
        if isinstance(target, ast.Name):
            return [assign(name_store(target.id), value, like)]
        if isinstance(target, ast.Tuple) and all(isinstance(e, ast.Name) for e in target.elts):
            store = ast.Tuple(elts=[name_store(e.id) for e in target.elts], ctx=ast.Store())
            return [assign(store, value, like)]
        targets = {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and \
                len(value.elts) == len(target.elts) and \
                not targets & {n.id for n in ast.walk(value) if isinstance(n, ast.Name)}:
            # (i, (W, b)) = (k, (W1, b1)): item by item, no nested tuple value
            return [s for t, v in zip(target.elts, value.elts) for s in self.bind_target(t, v, like)]
        if isinstance(target, ast.Tuple):
            temp = self.names.fresh("item")
            out = [assign(temp, value, like)]
            for k, elt in enumerate(target.elts):
                part = ast.Subscript(value=name_load(temp), slice=ast.Constant(k), ctx=ast.Load())
                out += self.bind_target(elt, part, like)
            return out
        raise self.fsrc.error(like, f"cannot bind `{ast.unparse(target)}` in a for loop", "for target")

    # -- statements ----------------------------------------------------------------------------
    def block(self, stmts):
        out = []
        for stmt in stmts:
            out.extend(self.statement(stmt))
        return out

    def statement(self, stmt):
        pre = []
        if isinstance(stmt, (ast.If, ast.While)):
            if isinstance(stmt, ast.While) and _has_comprehension(stmt.test):
                raise self.fsrc.error(stmt, "a list comprehension in a while condition is not "
                                      "supported", "comprehension")
            stmt.test = self.expression(stmt.test, pre, stmt)
            stmt.body = self.block(stmt.body)
            stmt.orelse = self.block(stmt.orelse)
            return pre + [stmt]
        if isinstance(stmt, ast.For):
            return self.for_loop(stmt)
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.ListComp) and \
                self._dynamic(stmt.value):
            # ys = [f(w) for w in ws if ...] -> ys = []; for ...: ys.append(f(w)) (see _append_lists)
            return self.comprehension_loops(stmt.value, stmt.targets[0].id, stmt)
        for field in ("value", "test", "msg"):
            value = getattr(stmt, field, None)
            if isinstance(value, ast.expr):
                setattr(stmt, field, self.expression(value, pre, stmt))
        self._note_literal(stmt)
        if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name) and \
                stmt.targets[0].id in self.static_names and not _plain(stmt.value):
            # its items as names first, so loops over it take them without indexing a tuple
            stmt.value = self._plain_literal(stmt.value, pre, stmt)
            self.static_names[stmt.targets[0].id] = stmt.value
        return pre + [stmt]

    def _plain_literal(self, node, pre, like):
        if isinstance(node, (ast.List, ast.Tuple)):
            return ast.Tuple(elts=[self._plain_literal(e, pre, like) for e in node.elts], ctx=ast.Load())
        return self._bind(node, pre, "e", like)

    def for_loop(self, stmt):
        it = stmt.iter
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range" and \
                self._resolves_to(it.func, range) and isinstance(stmt.target, ast.Name):
            stmt.body = self.block(stmt.body)
            return [stmt]
        pre = []
        seq = self.sequence(it, pre, stmt)
        if seq.static is not None:
            # a literal (or a name bound to one): unrolled, each copy with a constant index, so
            # tuples of differently shaped arrays (layers of a network) keep their kinds
            if _has_jump(stmt.body):
                raise self.fsrc.error(stmt, "break/continue in a loop over a literal list or tuple "
                                      "(which srcgrad unrolls) is not supported", "break in unrolled loop")
            out = pre
            for k in range(seq.static):
                out += self.bind_target(stmt.target, seq.item(ast.Constant(k)), stmt)
                out += self.block(copy.deepcopy(stmt.body))
            return out
        n = self.names.fresh("n")
        k = self.names.fresh("k")
        pre.append(assign(n, seq.length(), stmt))
        private = {node.id: self.names.fresh(node.id.lstrip("_")) for node in ast.walk(stmt.target)
                   if isinstance(node, ast.Name) and not self.outside.get(node.id)}

        class Rename(ast.NodeTransformer):
            def visit_Name(self, node):
                if node.id in private:
                    return ast.copy_location(ast.Name(id=private[node.id], ctx=node.ctx), node)
                return node
        target = Rename().visit(copy.deepcopy(stmt.target))
        body = self.bind_target(target, seq.item(name_load(k)), stmt) + \
            [Rename().visit(child) for child in stmt.body]
        loop = ast.For(target=name_store(k), iter=_call(range, "range", [name_load(n)], stmt),
                       body=self.block(body), orelse=[])
        return pre + [ast.copy_location(loop, stmt)]

    # -- comprehensions --------------------------------------------------------------------------
    def _dynamic(self, comp):
        """Whether a comprehension needs a loop (filtered, nested, or of unknown length)."""
        if len(comp.generators) != 1 or comp.generators[0].ifs:
            return True
        scratch = []
        try:
            return self.sequence(copy.deepcopy(comp.generators[0].iter), scratch,
                                 comp).static is None
        finally:
            for stmt in scratch:              # undo the names bound for the probe
                for node in ast.walk(stmt):
                    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                        self.names.taken.discard(node.id)

    def _renamed(self, comp):
        """The comprehension with its variables renamed (they do not leak, as in Python 3)."""
        comp = copy.deepcopy(comp)
        mapping = {}
        for gen in comp.generators:
            for node in ast.walk(gen.target):
                if isinstance(node, ast.Name):
                    mapping[node.id] = self.names.fresh(node.id.lstrip("_"))

        class Rename(ast.NodeTransformer):
            def visit_Name(self, node):
                if node.id in mapping:
                    return ast.copy_location(ast.Name(id=mapping[node.id], ctx=node.ctx), node)
                return node
        for gen in comp.generators:
            gen.target = Rename().visit(gen.target)
            gen.ifs = [Rename().visit(c) for c in gen.ifs]
        # an iterable is evaluated in the enclosing scope, except where an inner generator reads
        # an outer generator's variable
        for gen in comp.generators[1:]:
            gen.iter = Rename().visit(gen.iter)
        comp.elt = Rename().visit(comp.elt)
        return comp

    def comprehension_loops(self, comp, list_name, like):
        comp = self._renamed(comp)
        append = ast.Expr(value=ast.Call(func=ast.Attribute(value=name_load(list_name), attr="append",
                                                            ctx=ast.Load()),
                                         args=[comp.elt], keywords=[]))
        body = [ast.copy_location(append, like)]
        for gen in reversed(comp.generators):
            for cond in reversed(gen.ifs):
                body = [ast.copy_location(ast.If(test=cond, body=body, orelse=[]), like)]
            body = [ast.copy_location(ast.For(target=gen.target, iter=gen.iter, body=body, orelse=[]),
                                      like)]
        out = [assign(list_name, ast.List(elts=[], ctx=ast.Load()), like)]
        return out + self.block(body)

    def expression(self, expr, pre, stmt):
        desugarer = self
        for node in ast.walk(expr):
            if isinstance(node, (ast.IfExp, ast.BoolOp)) and _has_comprehension(node):
                # it would run before the statement, whether or not Python evaluates it
                raise self.fsrc.error(stmt, "a list comprehension inside a conditional expression "
                                      "(`... if ... else ...`, and/or) is not supported: assign it "
                                      "first", "comprehension")

        class Comprehensions(ast.NodeTransformer):
            def visit_ListComp(self, node):
                return desugarer.comprehension(node, pre, stmt)

            def visit_GeneratorExp(self, node):
                return desugarer.comprehension(node, pre, stmt)
        return Comprehensions().visit(expr)

    def comprehension(self, comp, pre, stmt):
        if self._dynamic(comp):
            name = self.names.fresh("list")
            pre.extend(self.comprehension_loops(comp, name, stmt))
            return name_load(name, stmt)
        comp = self._renamed(comp)
        gen = comp.generators[0]
        seq = self.sequence(gen.iter, pre, stmt)
        elts = []
        for k in range(seq.static):
            # this item's variables, then its element with them renamed once more
            mapping = {node.id: self.names.fresh(node.id.lstrip("_"))
                       for node in ast.walk(gen.target) if isinstance(node, ast.Name)}

            class Rename(ast.NodeTransformer):
                def visit_Name(self, node):
                    if node.id in mapping:
                        return ast.copy_location(ast.Name(id=mapping[node.id], ctx=node.ctx), node)
                    return node
            pre.extend(self.bind_target(Rename().visit(copy.deepcopy(gen.target)),
                                        seq.item(ast.Constant(k)), stmt))
            elts.append(Rename().visit(copy.deepcopy(comp.elt)))
        return ast.copy_location(ast.Tuple(elts=elts, ctx=ast.Load()), comp)


def _plain(node):
    """A literal of names and constants (nested): its items can be repeated without cost."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return all(_plain(e) for e in node.elts)
    return isinstance(node, (ast.Name, ast.Constant))


def _has_comprehension(expr):
    return any(isinstance(n, (ast.ListComp, ast.GeneratorExp)) for n in ast.walk(expr))
