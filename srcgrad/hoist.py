"""Hoist loop-invariant transcendental calls out of loops, into a table filled before the loop.

In the GMM objective (``loop_programs.gmm_njit`` once its helpers are inlined, see
:mod:`srcgrad.inline`) ``math.exp(icf[k, j])`` runs in ``for i: for k: for j:``, once per data
point ``i``, though it depends on ``k`` and ``j`` only. A person hoists it: ``expq[k, j]`` computed
once before the loop over ``i``. This pass does the same on the normalized body, so the primal and
the adjoint both compute the call ``K * d`` times instead of ``n * K * d`` (and the adjoint reads
the table instead of taping the call's result per iteration)::

    for i in range(0, n, 1):                     _hoisted1 = np.empty((K, d))
        for k in range(0, K, 1):                 for k_h in range(0, K, 1):   (if the i loop runs)
            for j in range(0, d, 1):      ->         for j_h in range(0, d, 1):
                _t1 = icf[k, j]                          _hoisted1[k_h, j_h] = math.exp(icf[k_h, j_h])
                _t2 = math.exp(_t1)              for i in ...: ... _t2 = _hoisted1[k, j]

A call ``t = math.f(a, ...)`` in a loop nest is hoisted out of the outermost enclosing loop ``L``
it does not depend on when all of these hold (else it stays where it is):

* it is reached through ``for`` loops only from ``L`` (no ``if`` or ``while`` on the way), it
  depends on each of those loops (so the table holds exactly the values the loops compute once
  ``L`` runs: no loop on the way that could run zero times), and its
  arguments are built, by statements each assigned once in ``L`` and seen before it on that path,
  from constants, names ``L`` never assigns, the variables of the loops between ``L`` and it, array
  elements of parameters the function never rebinds, arithmetic and ``math`` calls; each of those
  statements reads only names assigned before it (a name ``L`` assigns later holds its value from
  the previous iteration there, or from before ``L``: not what its assignment computes);
* each loop it depends on is ``range(0, stop, 1)`` with ``stop`` a constant or a name ``L`` never
  assigns (the table's shape), its variable bound by that loop only;
* every array ``L`` writes an element of is a local made by ``np.empty``/``zeros``/``ones``/``full``
  (or their ``_like``) and nothing else, so no write in ``L`` can reach the parameters it reads.

The table is filled only when ``L`` runs at least once (the call is not evaluated more often than
in the user's code would for an empty loop; on the python target ``math.log(-1.0)`` still raises
only if the user's code would). The adjoint's comment on the line says what was hoisted.
"""
import ast
import copy
import math

import numpy as np

from .normalize import assign, name_load, name_store

# False: loop-invariant calls stay in their loops (tests compare both; not in the cache key).
HOIST_INVARIANTS = True

_HOISTABLE = {getattr(math, f) for f in ("exp", "log", "log1p", "expm1", "sqrt", "sin", "cos", "tan",
                                         "tanh", "sinh", "cosh", "atan", "asin", "acos", "erf", "erfc",
                                         "pow", "log10", "log2", "atan2")}
_PURE_MATH = {v for v in vars(math).values() if callable(v)}
_CREATORS = {np.empty, np.zeros, np.ones, np.full, np.empty_like, np.zeros_like, np.ones_like,
             np.full_like}


def _stores(stmts):
    """Plain names stored, and names whose elements are stored, in ``stmts`` (all depths)."""
    names, elements, counts = set(), set(), {}
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
                counts[node.id] = counts.get(node.id, 0) + 1
            elif isinstance(node, (ast.Assign, ast.AugAssign)):
                for target in getattr(node, "targets", None) or [node.target]:
                    if isinstance(target, ast.Subscript):
                        root = target.value
                        while isinstance(root, ast.Subscript):
                            root = root.value
                        elements.add(getattr(root, "id", None))
    return names, elements, counts


def _fresh_arrays(body):
    """Locals assigned only by array-creation calls (no alias of anything else)."""
    made, other = set(), set()
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    if isinstance(node.value, ast.Call) and getattr(node.value, "callee", None) in _CREATORS:
                        made.add(target.id)
                    else:
                        other.add(target.id)
        elif isinstance(node, (ast.For, ast.AugAssign)):
            for n in ast.walk(node.target):
                if isinstance(n, ast.Name):
                    other.add(n.id)
    return made - other


def _simple_range(loop):
    """(start, stop, step) of ``for v in range(a, b, c)`` or None."""
    it = loop.iter
    if not (isinstance(loop.target, ast.Name) and isinstance(it, ast.Call) and
            getattr(it, "callee", None) is range and len(it.args) == 3):
        return None
    return it.args


class _Hoister:
    def __init__(self, fsrc, params, body, names):
        self.fsrc, self.names = fsrc, names
        all_names, _, _ = _stores(body)
        self.stable_params = set(params) - all_names     # parameters never rebound
        self.fresh = _fresh_arrays(body)
        self.notes = {}          # line -> note for the adjoint's comments
        self.order = {}          # id(statement) -> its position in program order
        self.visits = 0          # statements given a position so far
        self.count = 0

    # -- the pass --------------------------------------------------------------------------------
    def block(self, stmts):
        out = []
        for stmt in stmts:
            if isinstance(stmt, ast.For):
                out.extend(self.from_loop(stmt))
                stmt.body = self.block(stmt.body)
            elif isinstance(stmt, (ast.If, ast.While)):
                stmt.body = self.block(stmt.body)
                stmt.orelse = self.block(stmt.orelse)
            out.append(stmt)
        return out

    def from_loop(self, loop):
        """The table-filling statements to put before ``loop`` (its hoistable calls rewritten)."""
        bounds = _simple_range(loop)
        if bounds is None or not isinstance(bounds[2], ast.Constant) or \
                not isinstance(bounds[2].value, int) or bounds[2].value == 0:
            return []
        assigned, elements, counts = _stores([loop])
        if not elements <= self.fresh:
            return []           # a write in the loop might reach an array the calls read
        self.loop, self.assigned, self.counts, self.elements = loop, assigned, counts, elements
        pre = []
        self.walk(loop.body, [], {}, pre)
        if not pre:
            return []
        start, stop, step = bounds
        test = self.names.fresh("t")
        cond = assign(test, ast.Compare(left=copy.deepcopy(start), ops=[ast.Lt() if step.value > 0 else ast.Gt()],
                                        comparators=[copy.deepcopy(stop)]), loop)
        tables = [s for s in pre if not isinstance(s, ast.For)]
        fills = [s for s in pre if isinstance(s, ast.For)]
        return tables + [cond, ast.copy_location(ast.If(test=name_load(test), body=fills, orelse=[]), loop)]

    def walk(self, body, path, visible, pre):
        """Visit ``body`` (inside ``self.loop`` under the ``for`` loops ``path``); ``visible``: the
        single assignments seen before this point -> (statement, depth of the path there)."""
        for index, stmt in enumerate(body):
            if isinstance(stmt, ast.For):
                self.walk(stmt.body, path + [stmt], dict(visible), pre)
            elif isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                value = stmt.value
                if isinstance(value, ast.Call) and getattr(value, "callee", None) in _HOISTABLE:
                    hoisted = self.hoist(stmt, path, visible)
                    if hoisted is not None:
                        pre.extend(hoisted)
                        continue
                if self.counts.get(stmt.targets[0].id) == 1:
                    visible[stmt.targets[0].id] = (stmt, len(path))
                    # program order (a counter: an inner loop's statements are walked again
                    # for that loop, and must get later positions than the statements before)
                    self.visits += 1
                    self.order[id(stmt)] = self.visits

    def hoist(self, stmt, path, visible):
        deps = []           # the loops of path the call depends on
        slice_ = {}         # name -> its defining statement (the argument's computation)
        shapes = set()      # names of `x.shape` tuples among them

        def atom_ok(node, depth, deps, before):
            # ``before``: the program position of the statement whose value reads ``node`` (the
            # call itself: after everything visible). A name whose single assignment in L comes
            # later is read before it: its value from the previous iteration of L (or from
            # before L, in the first one), which that assignment's value is not
            if isinstance(node, ast.Constant):
                return True
            if not isinstance(node, ast.Name):
                return False
            name = node.id
            if name not in self.assigned:
                return True
            for position, loop in enumerate(path[:depth]):
                if loop.target.id == name:
                    bounds = _simple_range(loop)
                    if bounds is None or self.counts.get(name) != 1 or not _is_const(bounds[0], 0) \
                            or not _is_const(bounds[2], 1):
                        return False
                    inner = []      # the table's extent: the same for every iteration of L
                    if not atom_ok(bounds[1], position, inner, before) or inner:
                        return False
                    if loop not in deps:
                        deps.append(loop)
                    return True
            if name in slice_:
                if self.order[id(slice_[name])] >= before:
                    return False
                deps.extend(loop for loop in slice_deps[name] if loop not in deps)
                return True
            if name in visible:
                definition, def_depth = visible[name]
                position = self.order[id(definition)]
                if def_depth > depth or position >= before:
                    return False
                own = []
                if not expr_ok(definition.value, def_depth, own, position):
                    return False
                slice_[name], slice_deps[name] = definition, own
                if isinstance(definition.value, ast.Attribute):
                    shapes.add(name)
                deps.extend(loop for loop in own if loop not in deps)
                return True
            return False

        slice_deps = {}

        def expr_ok(value, depth, deps, before):
            if isinstance(value, (ast.Name, ast.Constant)):
                return atom_ok(value, depth, deps, before)
            if isinstance(value, ast.BinOp):
                return atom_ok(value.left, depth, deps, before) and \
                    atom_ok(value.right, depth, deps, before)
            if isinstance(value, ast.UnaryOp):
                return atom_ok(value.operand, depth, deps, before)
            if isinstance(value, ast.Call):
                return getattr(value, "callee", None) in _PURE_MATH and not value.keywords and \
                    all(atom_ok(a, depth, deps, before) for a in value.args)
            if isinstance(value, ast.Attribute):     # an array's shape never changes
                return value.attr == "shape" and isinstance(value.value, ast.Name) and \
                    value.value.id not in self.assigned
            if isinstance(value, ast.Subscript):
                array = value.value
                index = value.slice.elts if isinstance(value.slice, ast.Tuple) else [value.slice]
                if not isinstance(array, ast.Name):
                    return False
                if array.id in self.stable_params and array.id not in self.elements:
                    pass
                elif not (atom_ok(array, depth, deps, before) and array.id in shapes):
                    return False
                return all(atom_ok(i, depth, deps, before) for i in index)
            return False

        if not expr_ok(stmt.value, len(path), deps, math.inf):
            return None
        if len(deps) != len(path):
            # a loop on the way the call does not depend on may run zero times: the table would
            # hold values the user's code never computes (a log of a negative, its NaN adjoint)
            return None
        deps.sort(key=path.index)
        return self.emit(stmt, deps, slice_)

    def emit(self, stmt, deps, slice_):
        self.count += 1
        table = self.names.fresh("hoisted")
        rename = {loop.target.id: self.names.fresh("k") for loop in deps}
        for name in slice_:
            rename[name] = self.names.fresh("t")
        value_name = self.names.fresh("t")
        # the argument's statements in program order (each is assigned once, its operands before it)
        ordered = sorted(slice_.values(), key=lambda s: self.order[id(s)])

        def renamed(node):
            node = copy.deepcopy(node)
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and sub.id in rename:
                    sub.id = rename[sub.id]
            return node
        # statements that use no loop variable (the extents: `d = x.shape[1]`) go before the table
        varying, prefix, inner = {loop.target.id for loop in deps}, [], []
        for s in ordered:
            reads = {n.id for n in ast.walk(s.value) if isinstance(n, ast.Name)}
            target = s.targets[0].id
            if reads & varying:
                varying.add(target)
                inner.append(assign(rename[target], renamed(s.value), stmt))
            else:
                prefix.append(assign(rename[target], renamed(s.value), stmt))
        inner.append(assign(value_name, renamed(stmt.value), stmt))
        if deps:
            index = [name_load(rename[loop.target.id]) for loop in deps]
            slot = index[0] if len(index) == 1 else ast.Tuple(elts=index, ctx=ast.Load())
            inner.append(assign(ast.Subscript(value=name_load(table), slice=slot, ctx=ast.Store()),
                                name_load(value_name), stmt))
            for loop in reversed(deps):
                inner = [ast.copy_location(ast.For(
                    target=name_store(rename[loop.target.id]), iter=renamed(loop.iter),
                    body=inner, orelse=[]), stmt)]
            stops = [renamed(_simple_range(loop)[1]) for loop in deps]
            shape = stops[0] if len(stops) == 1 else ast.Tuple(elts=stops, ctx=ast.Load())
            make = ast.Call(func=ast.Attribute(value=name_load("np"), attr="empty", ctx=ast.Load()),
                            args=[shape], keywords=[])
            make.callee = np.empty
            tables = prefix + [assign(table, make, stmt)]
            read = ast.Subscript(value=name_load(table), slice=copy.deepcopy(
                ast.Tuple(elts=[name_load(loop.target.id) for loop in deps], ctx=ast.Load())
                if len(deps) > 1 else name_load(deps[0].target.id)), ctx=ast.Load())
        else:       # invariant in every loop around it: one value
            tables = [assign(table, ast.Constant(0.0), stmt)]
            inner = prefix + inner + [assign(table, name_load(value_name), stmt)]
            inner = [ast.copy_location(ast.For(target=name_store(self.names.fresh("k")),
                                               iter=_range1(stmt), body=inner, orelse=[]), stmt)]
            read = name_load(table)
        call = ast.unparse(_expanded(stmt.value, slice_))
        over = self.loop.target.id
        self.notes.setdefault(stmt.lineno, []).append(
            f"{call} hoisted out of the loop over {over}: {table}, filled before it")
        stmt.value = ast.copy_location(read, stmt.value)
        for sub in ast.walk(stmt.value):
            ast.copy_location(sub, stmt)
        # tables first (allocated whether or not the loop runs), the fill loops after
        return tables + inner


def _is_const(node, value):
    return isinstance(node, ast.Constant) and node.value == value and type(node.value) is int


def _range1(like):
    call = ast.Call(func=name_load("range"), args=[ast.Constant(0), ast.Constant(1), ast.Constant(1)],
                    keywords=[])
    call.callee = range
    return ast.copy_location(call, like)


def _expanded(value, slice_):
    """``value`` with the temporaries of its argument written out (for the comment)."""
    value = copy.deepcopy(value)

    class Expand(ast.NodeTransformer):
        def visit_Name(self, node):
            if node.id in slice_:
                return self.visit(copy.deepcopy(slice_[node.id].value))
            return node
    return Expand().visit(value)


def hoist_invariants(fsrc, params, body, names):
    """``(body, notes)``: ``body`` with loop-invariant calls hoisted; ``notes``: line -> text."""
    hoister = _Hoister(fsrc, params, body, names)
    body = hoister.block(body)
    return body, {line: "; ".join(texts) for line, texts in hoister.notes.items()}
