"""Stage 3 — normalize: rewrite the checked function into a small core language.

After this stage the function body contains only

* ``name = rhs`` where rhs is one operation on atoms (names and constants): a binary or unary
  operator, a comparison, a call, a subscript, an attribute (``x.shape``), a tuple, or an atom;
* ``name[index] = atom`` (array element and slice writes);
* ``if name: ... else: ...``;
* ``for name in range(a, b, c):`` without ``break`` (a loop that can exit early becomes a ``while``);
* ``while name: ...`` whose condition is recomputed at the end of the body;
* one ``return atom`` as the last statement.

``break``, ``continue`` and early ``return`` become flag variables guarding the rest of the block;
augmented assignments, tuple unpacking, ``and``/``or``, chained comparisons and ``x if c else y``
are desugared. Global constants are inlined, module attributes (``np.pi``) folded and every call is
annotated with the Python object it calls (``node.callee``).
"""
import ast
import builtins
import copy
import inspect
import math
import types

import numpy as np

from .parse import FunctionSource

# Methods users call on arrays, mapped to the NumPy function that takes the array first.
ARRAY_METHODS = {
    "sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "prod": np.prod,
    "reshape": np.reshape, "copy": np.copy, "transpose": np.transpose, "ravel": np.ravel,
    "flatten": np.ravel, "dot": np.dot, "astype": "astype", "clip": np.clip,
}

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
            name = f"_{stem}{count}"
            # `_t3`'s adjoint is `_adj_t3`: never shadow a user variable `t3` (whose adjoint it is)
            if name not in self.taken and name[1:] not in self.taken:
                self.counters[stem] = count
                self.taken.add(name)
                self.generated.add(name)
                return name


# --------------------------------------------------------------------------------------------
# Part 0: Python sequences. Loops over arrays, tuples, lists, enumerate/zip/reversed and list
# comprehensions become loops over indices (unrolled when the sequence is a literal); lists
# built with append become arrays written slot by slot.
# --------------------------------------------------------------------------------------------

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
                    node.value = rows(node)
                    return node
                self.generic_visit(node)
                return node

            def visit_Name(self, node):
                if node.id == name:
                    raise fsrc.error(self.stmt, f"this use of the list {name!r} is not supported "
                                     "(srcgrad supports np.stack, np.array, sum, len and indexing of "
                                     "a list built with append)", "list use")
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


def _walk_all(stmts):
    for stmt in stmts:
        yield stmt
        for field in ("body", "orelse"):
            yield from _walk_all(getattr(stmt, field, []) if isinstance(stmt, ast.stmt) else [])


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


# --------------------------------------------------------------------------------------------
# Part 1: jumps (return / break / continue) become flags
# --------------------------------------------------------------------------------------------

class _Loop:
    def __init__(self, brk, cont):
        self.brk = brk      # flag name or None
        self.cont = cont


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
        in_range = ast.Call(func=name_load("_range_continues"),
                            args=[name_load(counter), name_load(stop_name), name_load(step_name)],
                            keywords=[])
        in_range.callee = "_range_continues"
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


# --------------------------------------------------------------------------------------------
# Part 2: one operation per statement (A-normal form)
# --------------------------------------------------------------------------------------------

class Flattener:
    """Flatten nested expressions into a sequence of single-operation assignments."""

    def __init__(self, fsrc: FunctionSource, names: NameMaker, local_names, whole_body=()):
        # uses of each name outside every `for` loop that binds it: a loop variable with none is
        # private to its loops, and reversing those loops cannot clobber a value someone reads
        self.occurrences = {}

        def count(node, bound):
            if isinstance(node, ast.For) and isinstance(node.target, ast.Name):
                inner = bound | {node.target.id}
                for child in [node.iter] + node.body + node.orelse:
                    count(child, inner if child is not node.iter else bound)
                return
            if isinstance(node, ast.Name) and node.id not in bound:
                self.occurrences[node.id] = self.occurrences.get(node.id, 0) + 1
            for child in ast.iter_child_nodes(node):
                count(child, bound)
        for stmt in whole_body:
            count(stmt, frozenset())
        self.fsrc = fsrc
        self.names = names
        self.locals = set(local_names)

    # -- statements --------------------------------------------------------------------------
    def block(self, stmts):
        out = []
        for stmt in stmts:
            out.extend(self.statement(stmt))
        return out

    def statement(self, stmt):
        if isinstance(stmt, ast.Pass):
            return []
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):     # print(...)
            return self.print_call(stmt)
        if isinstance(stmt, ast.Expr):       # docstring
            return []
        if isinstance(stmt, ast.Assert):
            return self.assertion(stmt)
        if isinstance(stmt, ast.AnnAssign):
            if stmt.value is None:
                return []
            stmt = ast.copy_location(ast.Assign(targets=[stmt.target], value=stmt.value), stmt)
        if isinstance(stmt, ast.Assign):
            return self.assignment(stmt)
        if isinstance(stmt, ast.AugAssign):
            return self.aug_assignment(stmt)
        if isinstance(stmt, ast.If):
            pre, test = self.atom(stmt.test, stmt, want_name=True)
            body = self.block(stmt.body)
            orelse = self.block(stmt.orelse)
            if not body and not orelse:
                return pre
            new = ast.If(test=test, body=body or [ast.Pass()], orelse=orelse)
            return pre + [ast.copy_location(new, stmt)]
        if isinstance(stmt, ast.For):
            return self.for_loop(stmt)
        if isinstance(stmt, ast.While):
            pre, test = self.atom(stmt.test, stmt, want_name=True)
            cond = test.id
            # recompute the condition at the end of the body, into the same variable
            recompute, again = self.atom(stmt.test, stmt, want_name=True)
            if recompute and isinstance(recompute[-1], ast.Assign) and recompute[-1].targets[0].id == again.id:
                recompute[-1].targets[0].id = cond
            else:
                recompute.append(assign(cond, again, stmt))
            body = self.block(stmt.body) + recompute
            new = ast.While(test=name_load(cond, stmt), body=body, orelse=[])
            return pre + [ast.copy_location(new, stmt)]
        if isinstance(stmt, ast.Return):
            value = stmt.value if stmt.value is not None else ast.Constant(None)
            pre, atom = self.atom(value, stmt)
            return pre + [ast.copy_location(ast.Return(value=atom), stmt)]
        raise self.fsrc.error(stmt, f"unsupported statement {type(stmt).__name__}")

    def print_call(self, stmt):
        """``print(a, "text", b)``: kept as a statement of the primal (the forward sweep runs it)."""
        pre, atoms = [], []
        for arg in stmt.value.args:
            p, atom = self.atom(arg, stmt)
            pre += p
            atoms.append(atom)
        call = ast.Call(func=name_load("print"), args=atoms, keywords=[])
        call.callee = print
        return pre + [ast.copy_location(ast.Expr(value=call), stmt)]

    def assertion(self, stmt):
        """``assert test, "message"``: checked in the primal (and the forward sweep), not
        differentiated. Without a message, the error names the user's file, line and source."""
        pre, test = self.atom(stmt.test, stmt)
        message = stmt.msg.value if stmt.msg is not None else \
            f"{self.fsrc.filename}:{stmt.lineno}: {self.fsrc.line_text(stmt.lineno)}"
        new = ast.Assert(test=test, msg=ast.Constant(message))
        return pre + [ast.copy_location(new, stmt)]

    def assignment(self, stmt):
        value = stmt.value
        targets = stmt.targets
        if len(targets) == 1 and isinstance(targets[0], ast.Name):
            return self.assign_name(targets[0].id, value, stmt)
        if len(targets) == 1 and isinstance(targets[0], ast.Tuple):
            return self.unpack(targets[0], value, stmt)
        if len(targets) == 1 and isinstance(targets[0], ast.Subscript):
            return self.store_subscript(targets[0], value, stmt)
        pre, atom = self.atom(value, stmt)
        out = pre
        for target in targets:
            out += self.assignment(ast.copy_location(ast.Assign(targets=[target], value=atom), stmt))
        return out

    def assign_name(self, name, value, stmt):
        pre, rhs = self.operation(value, stmt)
        if isinstance(rhs, ast.Name) and rhs.id == name:
            return pre                 # `x = x` does nothing
        operands = {n.id for n in ast.walk(rhs) if isinstance(n, ast.Name)}
        if name in operands and not is_atom(rhs):
            temp = self.names.fresh("t")
            return pre + [assign(temp, rhs, stmt), assign(name, name_load(temp), stmt)]
        return pre + [assign(name, rhs, stmt)]

    def unpack(self, target, value, stmt):
        names = [elt.id for elt in target.elts]
        if isinstance(value, ast.Tuple):
            if len(value.elts) != len(names):
                raise self.fsrc.error(stmt, f"cannot unpack {len(value.elts)} values into "
                                      f"{len(names)} names", "tuple unpacking")
            pre, temps = [], []
            for elt in value.elts:
                p, atom = self.atom(elt, stmt)
                pre += p
                if isinstance(atom, ast.Name) and atom.id in names:
                    temp = self.names.fresh("t")
                    pre.append(assign(temp, atom, stmt))
                    atom = name_load(temp)
                temps.append(atom)
            return pre + [assign(n, a, stmt) for n, a in zip(names, temps)]
        pre, atom = self.atom(value, stmt, want_name=True)
        out = pre
        for index, name in enumerate(names):
            item = ast.Subscript(value=name_load(atom.id), slice=ast.Constant(index), ctx=ast.Load())
            out.append(assign(name, item, stmt))
        return out

    def store_subscript(self, target, value, stmt):
        pre, array = self.atom(target.value, stmt, want_name=True)
        p2, index = self.index(target.slice, stmt)
        p3, atom = self.atom(value, stmt)
        sub = ast.Subscript(value=name_load(array.id), slice=index, ctx=ast.Store())
        return pre + p2 + p3 + [assign(sub, atom, stmt)]

    def aug_assignment(self, stmt):
        target = stmt.target
        if isinstance(target, ast.Name):
            value = ast.copy_location(ast.BinOp(left=name_load(target.id), op=stmt.op, right=stmt.value), stmt)
            return self.assign_name(target.id, value, stmt)
        # a[i] += v  ->  t = a[i]; u = t + v; a[i] = u   (the index is evaluated once)
        pre, array = self.atom(target.value, stmt, want_name=True)
        p2, index = self.index(target.slice, stmt)
        old = self.names.fresh("t")
        read = ast.Subscript(value=name_load(array.id), slice=index, ctx=ast.Load())
        pre += p2 + [assign(old, read, stmt)]
        p3, new = self.atom(ast.BinOp(left=name_load(old), op=stmt.op, right=stmt.value), stmt)
        write = ast.Subscript(value=name_load(array.id), slice=_copy(index), ctx=ast.Store())
        return pre + p3 + [assign(write, new, stmt)]

    def for_loop(self, stmt):
        args = list(stmt.iter.args)
        if len(args) == 1:
            args = [ast.Constant(0), args[0], ast.Constant(1)]
        elif len(args) == 2:
            args = args + [ast.Constant(1)]
        pre, atoms = [], []
        modified = assigned_names(stmt.body) | {stmt.target.id}
        for stem, arg in zip(("start", "stop", "step"), args):
            p, atom = self.atom(arg, stmt)
            pre += p
            if isinstance(atom, ast.Name) and atom.id in modified:
                temp = self.names.fresh(stem)
                pre.append(assign(temp, atom, stmt))
                atom = name_load(temp)
            atoms.append(atom)
        call = ast.Call(func=name_load("range"), args=atoms, keywords=[])
        call.callee = range
        body = self.block(stmt.body)
        loop_var = stmt.target.id
        if self.occurrences.get(loop_var, 0) > 0:
            # the loop variable is also used outside this loop: give the loop a private counter,
            # so reversing the loop never clobbers the outside value
            counter = self.names.fresh("i")
            body.insert(0, assign(loop_var, name_load(counter), stmt))
            loop_var = counter
        new = ast.For(target=name_store(loop_var), iter=call, body=body or [ast.Pass()], orelse=[])
        return pre + [ast.copy_location(new, stmt)]

    # -- expressions -------------------------------------------------------------------------
    def atom(self, expr, stmt, want_name=False):
        """Flatten ``expr`` into (statements, atom)."""
        pre, op = self.operation(expr, stmt)
        if is_atom(op) and not (want_name and isinstance(op, ast.Constant)):
            return pre, op
        temp = self.names.fresh("t")
        return pre + [assign(temp, op, stmt)], name_load(temp, stmt)

    def operation(self, expr, stmt):
        """Flatten ``expr`` into (statements, one operation whose operands are atoms)."""
        if isinstance(expr, ast.Constant):
            return [], expr
        if isinstance(expr, ast.Name):
            return [], self.name(expr, stmt)
        if isinstance(expr, ast.Attribute):
            folded = self.module_constant(expr)
            if folded is not None:
                return [], folded
            pre, base = self.atom(expr.value, stmt, want_name=True)
            return pre, ast.Attribute(value=base, attr=expr.attr, ctx=ast.Load())
        if isinstance(expr, ast.BinOp):
            p1, left = self.atom(expr.left, stmt)
            p2, right = self.atom(expr.right, stmt)
            return p1 + p2, ast.BinOp(left=left, op=expr.op, right=right)
        if isinstance(expr, ast.UnaryOp):
            if isinstance(expr.op, ast.UAdd):
                return self.operation(expr.operand, stmt)
            pre, operand = self.atom(expr.operand, stmt)
            if isinstance(operand, ast.Constant) and isinstance(expr.op, ast.USub):
                return pre, ast.Constant(-operand.value)
            return pre, ast.UnaryOp(op=expr.op, operand=operand)
        if isinstance(expr, ast.Compare):
            return self.compare(expr, stmt)
        if isinstance(expr, ast.BoolOp):
            return self.bool_op(expr, stmt)
        if isinstance(expr, ast.IfExp):
            pre, test = self.atom(expr.test, stmt, want_name=True)
            result = self.names.fresh("t")
            body = self.assign_name(result, expr.body, stmt)
            orelse = self.assign_name(result, expr.orelse, stmt)
            pre.append(ast.copy_location(ast.If(test=test, body=body, orelse=orelse), stmt))
            return pre, name_load(result, stmt)
        if isinstance(expr, ast.Call):
            return self.call(expr, stmt)
        if isinstance(expr, ast.Subscript):
            pre, base = self.atom(expr.value, stmt, want_name=True)
            p2, index = self.index(expr.slice, stmt)
            return pre + p2, ast.Subscript(value=base, slice=index, ctx=ast.Load())
        if isinstance(expr, ast.Tuple):
            pre, elts = [], []
            for elt in expr.elts:
                p, atom = self.atom(elt, stmt)
                pre += p
                elts.append(atom)
            return pre, ast.Tuple(elts=elts, ctx=ast.Load())
        raise self.fsrc.error(expr, f"unsupported expression {type(expr).__name__}")

    def index(self, index, stmt):
        """Flatten an index; slices and ``None`` stay structural, their bounds become atoms."""
        if isinstance(index, ast.Tuple):
            pre, parts = [], []
            for elt in index.elts:
                p, part = self.index(elt, stmt)
                pre += p
                parts.append(part)
            return pre, ast.Tuple(elts=parts, ctx=ast.Load())
        if isinstance(index, ast.Slice):
            pre, bounds = [], {}
            for field in ("lower", "upper", "step"):
                value = getattr(index, field)
                if value is None:
                    bounds[field] = None
                else:
                    p, bounds[field] = self.atom(value, stmt)
                    pre += p
            return pre, ast.Slice(**bounds)
        return self.atom(index, stmt)

    def compare(self, expr, stmt):
        pre, left = self.atom(expr.left, stmt)
        pairs = []
        for op, right_expr in zip(expr.ops, expr.comparators):
            if isinstance(op, (ast.Is, ast.IsNot, ast.In, ast.NotIn)):
                raise self.fsrc.error(expr, f"comparison `{type(op).__name__}` is not supported",
                                      "comparison")
            p, right = self.atom(right_expr, stmt)
            pairs.append((p, ast.Compare(left=left, ops=[op], comparators=[right])))
            left = right
        if len(pairs) == 1:
            return pre + pairs[0][0], pairs[0][1]
        # a < b < c  ->  (a < b) and (b < c), evaluated lazily like Python
        result = self.names.fresh("t")
        out = pre + pairs[0][0] + [assign(result, pairs[0][1], stmt)]
        guard = out
        for p, comparison in pairs[1:]:
            inner = p + [assign(result, comparison, stmt)]
            guard.append(ast.copy_location(ast.If(test=name_load(result), body=inner, orelse=[]), stmt))
            guard = inner
        return out, name_load(result, stmt)

    def bool_op(self, expr, stmt):
        result = self.names.fresh("t")
        pre, first = self.atom(expr.values[0], stmt)
        out = pre + [assign(result, first, stmt)]
        block = out
        for value in expr.values[1:]:
            inner = self.assign_name(result, value, stmt)
            if isinstance(expr.op, ast.And):
                test = name_load(result)
                pre_test = []
            else:
                negated = self.names.fresh("t")
                pre_test = [assign(negated, ast.UnaryOp(op=ast.Not(), operand=name_load(result)), stmt)]
                test = name_load(negated)
            block.extend(pre_test)
            block.append(ast.copy_location(ast.If(test=test, body=inner, orelse=[]), stmt))
            block = inner
        return out, name_load(result, stmt)

    def call(self, expr, stmt):
        func = expr.func
        args = list(expr.args)
        keywords = list(expr.keywords)
        callee = None
        if isinstance(func, ast.Attribute) and self._is_local_object(func.value) and \
                func.attr == "squeeze":
            return self.squeeze(expr, stmt)
        if isinstance(func, ast.Attribute) and self._is_local_object(func.value):
            method = ARRAY_METHODS.get(func.attr)
            if method is None:
                raise self.fsrc.error(expr, f"method `.{func.attr}()` is not supported on arrays",
                                      "method call")
            if method == "astype":
                pre, base = self.atom(func.value, stmt, want_name=True)
                p2, dtype = self.dtype_argument(args, keywords, stmt)
                node = ast.Call(func=ast.Attribute(value=base, attr="astype", ctx=ast.Load()),
                                args=[dtype], keywords=[])
                node.callee = "astype"
                return pre + p2, node
            if func.attr in ("reshape", "transpose") and len(args) > 1:
                args = [ast.Tuple(elts=args, ctx=ast.Load())]
            args = [func.value] + args
            callee = method
        elif getattr(expr, "callee", None) is not None:     # a runtime helper srcgrad inserted
            callee = expr.callee
        elif isinstance(func, ast.Name) and func.id == "stack_buffer" and \
                func.id not in self.fsrc.namespace:
            callee = "stack_buffer"       # generated tangent code differentiated again (hvp)
        else:
            try:
                callee = self.fsrc.resolve(func)
            except KeyError as exc:
                raise self.fsrc.error(expr, f"name {exc.args[0]!r} is not defined", "unknown name") from None
        if callee is sum and len(args) in (1, 2) and not keywords and isinstance(args[0], ast.Tuple):
            # sum([a, b, c]) -> a + b + c (plus the start value when given)
            total = args[1] if len(args) == 2 else None
            for elt in args[0].elts:
                total = elt if total is None else ast.copy_location(
                    ast.BinOp(left=total, op=ast.Add(), right=elt), expr)
            return self.operation(total if total is not None else ast.Constant(0), stmt)
        if (callee is max or callee is min) and len(args) == 1 and not keywords and \
                isinstance(args[0], ast.Tuple) and args[0].elts:
            # max([a, b, c]) -> max(max(a, b), c): the two-argument rule, ties to the first
            best = args[0].elts[0]
            for elt in args[0].elts[1:]:
                best = ast.copy_location(ast.Call(func=expr.func, args=[best, elt], keywords=[]), expr)
            return self.operation(best, stmt)
        args, keywords = _keywords_as_positions(callee, args, keywords)
        if callee is np.transpose:
            axes = args[1:] + [kw.value for kw in keywords if kw.arg == "axes"]
            if axes and not (isinstance(axes[0], ast.Tuple) and all(
                    isinstance(e, ast.Constant) and type(e.value) is int for e in axes[0].elts)):
                raise self.fsrc.error(expr, "the axes of a transpose must be a tuple of constants",
                                      "transpose axes")
        pre, atoms = [], []
        for arg in args:
            p, atom = self.call_argument(arg, stmt)
            pre += p
            atoms.append(atom)
        kws = []
        for kw in keywords:
            if kw.arg == "dtype":          # dtype="float32" -> np.float32
                p, atom = self.dtype_argument([kw.value], [], stmt)
            else:
                p, atom = self.call_argument(kw.value, stmt)
            pre += p
            kws.append(ast.keyword(arg=kw.arg, value=atom))
        node = ast.Call(func=func_expression(callee, func), args=atoms, keywords=kws)
        node.callee = callee
        return pre, node

    def call_argument(self, arg, stmt):
        # dtype-like arguments (np.float32) and tuples of atoms stay structural
        if isinstance(arg, (ast.Attribute, ast.Name)) and not self._is_local_object(arg):
            try:
                obj = self.fsrc.resolve(arg)
            except KeyError:
                obj = None
            if isinstance(obj, type) and issubclass(obj, (np.generic, float, int, bool)):
                return [], func_expression(obj, arg)
        if isinstance(arg, ast.Tuple):
            return self.operation(arg, stmt)
        return self.atom(arg, stmt)

    def dtype_argument(self, args, keywords, stmt):
        value = args[0] if args else next((kw.value for kw in keywords if kw.arg == "dtype"), None)
        if value is None:
            raise self.fsrc.error(stmt, "astype() needs a dtype", "astype")
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            # a dtype by name ("float32"): the NumPy scalar type, which Numba also understands
            try:
                dtype = np.dtype(value.value).type
            except TypeError:
                raise self.fsrc.error(stmt, f"unknown dtype {value.value!r}", "dtype") from None
            return [], func_expression(dtype, value)
        return self.call_argument(value, stmt)

    def squeeze(self, expr, stmt):
        """``x.squeeze(axis=k)`` -> ``assert x.shape[k] == 1; x[:, ..., 0]`` (k constant, >= 0).

        Without an axis, the result's number of dimensions depends on the run-time shape, and
        srcgrad's generated code is specialized on it: that is refused."""
        axis = expr.args[0] if expr.args else next(
            (kw.value for kw in expr.keywords if kw.arg == "axis"), None)
        if axis is None:
            raise self.fsrc.error(expr, "`.squeeze()` without an axis: the number of dimensions of "
                                  "its result depends on the run-time shape; write `.squeeze(axis=k)` "
                                  "or index (`x[:, 0]`)", "squeeze without axis")
        axes = axis.elts if isinstance(axis, ast.Tuple) else [axis]
        if not all(isinstance(a, ast.Constant) and type(a.value) is int and a.value >= 0 for a in axes):
            raise self.fsrc.error(expr, "`.squeeze(axis)` needs constant non-negative axes",
                                  "squeeze axis")
        squeezed = sorted({a.value for a in axes})
        pre, base = self.atom(expr.func.value, stmt, want_name=True)
        shape = self.names.fresh("t")
        pre.append(assign(shape, ast.Attribute(value=name_load(base.id), attr="shape", ctx=ast.Load()), stmt))
        for k in squeezed:
            size, ok = self.names.fresh("t"), self.names.fresh("t")
            pre.append(assign(size, ast.Subscript(value=name_load(shape), slice=ast.Constant(k),
                                                  ctx=ast.Load()), stmt))
            pre.append(assign(ok, ast.Compare(left=name_load(size), ops=[ast.Eq()],
                                              comparators=[ast.Constant(1)]), stmt))
            message = f"{self.fsrc.filename}:{stmt.lineno}: cannot squeeze axis {k}: its size is not 1"
            pre.append(ast.copy_location(ast.Assert(test=name_load(ok), msg=ast.Constant(message)), stmt))
        index = [ast.Constant(0) if k in squeezed else ast.Slice(lower=None, upper=None, step=None)
                 for k in range(squeezed[-1] + 1)]
        index = index[0] if len(index) == 1 else ast.Tuple(elts=index, ctx=ast.Load())
        return pre, ast.Subscript(value=name_load(base.id), slice=index, ctx=ast.Load())

    def _is_local_object(self, node):
        root = node
        while isinstance(root, ast.Attribute):
            root = root.value
        return isinstance(root, ast.Name) and root.id in self.locals or not isinstance(root, ast.Name)

    def name(self, node, stmt):
        if node.id in self.locals or node.id in self.names.generated:
            return name_load(node.id, node)
        try:
            value = self.fsrc.resolve(node)
        except KeyError:
            raise self.fsrc.error(node, f"name {node.id!r} is not defined", "unknown name") from None
        constant = _as_constant(value)
        if constant is not None:
            return ast.copy_location(constant, node)
        if isinstance(value, np.ndarray):
            raise self.fsrc.error(node, f"global array {node.id!r} is not supported: pass it as an "
                                  "argument so the compiled code sees its current value", "global array")
        raise self.fsrc.error(node, f"{node.id!r} ({type(value).__name__}) cannot be used as a value "
                              "here", "global object")

    def module_constant(self, node):
        if self._is_local_object(node):
            return None
        try:
            value = self.fsrc.resolve(node)
        except KeyError:
            raise self.fsrc.error(node, f"{ast.unparse(node)!r} is not defined", "unknown name") from None
        constant = _as_constant(value)
        if constant is not None:
            return ast.copy_location(constant, node)
        return None


def _keywords_as_positions(callee, args, keywords):
    """Keyword arguments named as NumPy names them (``np.clip(x, a_min=0, a_max=1)``) become
    positional when the derivative rule's template calls that parameter differently: the
    template's parameters follow the function's positional order."""
    from . import rules
    rule = rules.lookup(callee) if _hashable(callee) else None
    if not isinstance(rule, rules.Rule) or not keywords:
        return args, keywords
    template = rule.params[1:]          # after `result`
    try:
        names = [p.name for p in inspect.signature(callee).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return args, keywords
    args, keywords = list(args), list(keywords)
    moved = True
    while moved:
        moved = False
        for kw in keywords:
            if kw.arg in template or kw.arg not in names:
                continue
            if names.index(kw.arg) == len(args) < len(template):
                args.append(kw.value)
                keywords.remove(kw)
                moved = True
                break
    return args, keywords


def _hashable(obj):
    try:
        hash(obj)
        return True
    except TypeError:
        return False


def _as_constant(value):
    if value is None:
        return ast.Constant(None)       # np.newaxis
    if isinstance(value, SCALAR_CONSTANT_TYPES):
        if isinstance(value, (bool, np.bool_)):
            return ast.Constant(bool(value))
        if isinstance(value, (int, np.integer)):
            return ast.Constant(int(value))
        # np.inf / math.inf / np.nan too: generated code spells them 1e1000 and (1e1000-1e1000)
        return ast.Constant(float(value))
    return None


def func_expression(callee, original):
    """The expression that names ``callee`` in generated code (``np.sin``, ``math.exp``, ``helper``)."""
    if isinstance(callee, str):
        return name_load(callee)
    name = getattr(callee, "__name__", None)
    if callee is range or (name and getattr(builtins, name, None) is callee):
        return name_load(name)
    if name and getattr(math, name, None) is callee:
        return ast.Attribute(value=name_load("math"), attr=name, ctx=ast.Load())
    if name and getattr(np, name, None) is callee:
        return ast.Attribute(value=name_load("np"), attr=name, ctx=ast.Load())
    if isinstance(callee, types.FunctionType) or hasattr(callee, "py_func"):
        return name_load(callee.__name__)
    return _copy(original)


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


def _literal_lists(body, fsrc):
    """np.r_/np.c_ of constants become constant arrays. List literals whose meaning is not a
    tuple's: an index list ``x[[0, 2]]`` (a gather, not ``x[0, 2]``) becomes
    ``x[np.array((0, 2))]``; the rows of a nested literal in ``np.array([[a, b], [c, d]])`` become
    arrays of their own (stacked)."""
    def as_array(node):
        elts = [as_array(e) if isinstance(e, (ast.List, ast.Tuple)) else e for e in node.elts]
        call = ast.Call(func=ast.Attribute(value=name_load("np"), attr="array", ctx=ast.Load()),
                        args=[ast.Tuple(elts=elts, ctx=ast.Load())], keywords=[])
        call.callee = np.array
        for sub in ast.walk(call):
            if not hasattr(sub, "lineno"):
                ast.copy_location(sub, node)
        return call

    def as_literal(values, like):
        if isinstance(values, np.ndarray) and values.ndim:
            return ast.copy_location(ast.Tuple(elts=[as_literal(v, like) for v in values], ctx=ast.Load()),
                                     like)
        return ast.copy_location(ast.Constant(values.item()), like)

    def index_grid(node):
        """np.r_[0:3, 7] / np.c_[0:3, 4:7] of constants: evaluated now, a constant array."""
        parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]

        def constant(e):
            if e is None:
                return None
            value = ast.literal_eval(e)
            if not isinstance(value, (int, float, complex)) or isinstance(value, bool):
                raise ValueError
            return value
        try:
            items = tuple(slice(constant(p.lower), constant(p.upper), constant(p.step))
                          if isinstance(p, ast.Slice) else constant(p) for p in parts)
            grid = (np.r_ if node.value.attr == "r_" else np.c_)[items]
        except (ValueError, TypeError, SyntaxError):
            raise fsrc.error(node, f"`{ast.unparse(node)}`: np.r_/np.c_ are supported with constant "
                             "items and slices (for arrays use np.concatenate/np.stack)", "np.r_/np.c_")
        if grid.dtype.kind not in "iuf" or grid.size == 0:
            raise fsrc.error(node, f"`{ast.unparse(node)}` is not a non-empty int or float array",
                             "np.r_/np.c_")
        return as_array(as_literal(grid, node))

    class Rewrite(ast.NodeTransformer):
        def visit_Subscript(self, node):
            self.generic_visit(node)
            if isinstance(node.value, ast.Attribute) and node.value.attr in ("r_", "c_") and \
                    ast.unparse(node.value.value) in ("np", "numpy"):
                return index_grid(node)
            if isinstance(node.slice, ast.List):
                node.slice = as_array(node.slice)
            elif isinstance(node.slice, ast.Tuple):
                node.slice.elts = [as_array(e) if isinstance(e, ast.List) else e for e in node.slice.elts]
            return node

        def visit_Call(self, node):
            self.generic_visit(node)
            name = ast.unparse(node.func)
            if name in ("np.array", "np.asarray", "numpy.array", "numpy.asarray") and node.args and \
                    isinstance(node.args[0], (ast.List, ast.Tuple)):
                first = node.args[0]
                first.elts = [as_array(e) if isinstance(e, (ast.List, ast.Tuple)) else e
                              for e in first.elts]
            return node
    return [Rewrite().visit(stmt) for stmt in body]


def _lists_to_tuples(body):
    """The only list literals check.py lets through are the array sequences of
    np.concatenate/np.stack: the same call with a tuple."""
    for stmt in body:
        for node in ast.walk(stmt):
            for field, value in ast.iter_fields(node):
                if isinstance(value, ast.List):
                    setattr(node, field, ast.copy_location(ast.Tuple(elts=value.elts, ctx=value.ctx),
                                                           value))
                elif isinstance(value, list):
                    value[:] = [ast.copy_location(ast.Tuple(elts=v.elts, ctx=v.ctx), v)
                                if isinstance(v, ast.List) else v for v in value]


def normalize(fsrc: FunctionSource):
    """Return the normalized body (a list of statements) and the parameter names."""
    fn = fsrc.tree
    params = [a.arg for a in fn.args.args]
    local_names = set(params) | assigned_names(fn.body)
    names = NameMaker(local_names | {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)})
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    if not body:
        raise fsrc.error(fn, "the function body is empty")
    appended = {s.value.func.value.id for s in _walk_all(body) if _is_append(s)}
    if appended:   # before _literal_lists, which reads `L = [a, b]` as a fixed list
        body = _split_list_literals(body, appended)
    body = _literal_lists(body, fsrc)
    body = SequenceDesugarer(fsrc, names, body).block(body)
    body = ListBuilder(fsrc, names).run(body)
    _lists_to_tuples(body)
    desugared = JumpDesugarer(names, ast.FunctionDef(name=fn.name, args=fn.args, body=body,
                                                     decorator_list=[], returns=None)).run(
        ast.FunctionDef(name=fn.name, args=fn.args, body=body, decorator_list=[], returns=None))
    local_names |= assigned_names(desugared)
    flat = Flattener(fsrc, names, local_names, desugared).block(desugared)
    flat = _stable_if_tests(flat, names)
    flat = _rename_straight_line_redefinitions(flat, params, names)
    if not flat or not isinstance(flat[-1], ast.Return):
        raise fsrc.error(fn, "the function must end with a `return` of its result "
                         "(every path must return a value)", "missing return")
    return params, flat, names
