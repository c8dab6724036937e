"""Loop fusion (cpu target), part 3: :func:`fuse_loops` and the fuser, which groups statements and
places them in loop nests (statement plans: :mod:`.fusion_plans`; code: :mod:`.fusion_emit`).
"""
#
# Generated array code is one whole-array operation per line (``_t2 = _t1 + b1``, then
# ``h = np.maximum(_t2, 0.0)``), each a pass over memory with an array of its own. ``fuse_loops``
# turns runs of such statements into one explicit loop nest, which Numba compiles into one pass:
# elementwise operations (NumPy broadcasting of smaller operands included), the sums ``unbroadcast``
# does (bias gradients), reductions over the last axes (``reduce_max``/``reduce_sum``) and their
# adjoints (``expand_reduced``, ``max_adjoint``), and row gathers/scatters ``z[np.arange(n), y]``.
# A max adjoint whose maxima an array of the function keeps (``m = np.max(z, axis=1)``, never
# written) finds each row's element by equality with them instead of a second arg-max
# (``fusion_facts._known_extremes``).
#
# Kinds give each array's number of dimensions, not its sizes. Sizes known to be equal (a matrix
# product and its operands, a reduction and its input, ...) need no test; for the others the loop
# nest is guarded by a size test and the statements run as written (``else:``) when an operand
# would be stretched along a size-1 axis, or sizes do not match: NumPy's results and errors.
# Values used only inside the loop nest become scalars; the others are stored once.
#
# Every element is computed with the operations of the statements it replaces, in the same order
# (sums accumulate in the runtime helpers' order), and element types follow Numba's typing of the
# whole-array statements: where an int or bool operand takes part, the scalar operation is written
# as its NumPy ufunc (``np.add(a, b)``), which Numba types as it types the array operation.
import ast

from .fusion_emit import _Emitter
from .fusion_guards import drop_implied_guards
from .fusion_plans import _StatementPlans
from .fusion_facts import (
    _BINARY_UFUNCS, _BINOP_UFUNC, _COMPARE_UFUNC, _FRESH_NP, _UNARY_UFUNCS, _Block, _Facts, _Group, _Plan,
    _Unfusable, _access_rule, _basic_index, _call_name, _const_int, _escaping, _ir_reads, _is_comment,
    _is_float32_literal, _known_extremes, _names, _walk_statements, scalar_reductions)


def fuse_loops(sections, analysis, fallback=True):
    """Rewrite chains of whole-array statements into loop nests (for the Numba-compiled target).

    ``sections`` are consecutive parts of one function body (forward sweep, reverse sweep,
    return): statements are fused within a section, uses are counted over the whole function.
    ``fallback``: keep the statements as written under a guarded loop nest's ``else:``; False: a
    failing guard raises ``FusionGuardFailed`` (the caller reruns the call with a specialization
    that has the fallback). Returns the new sections, without the size tests that earlier tests
    and allocations imply (:mod:`.fusion_guards`).
    """
    if analysis is None:
        return sections
    fusion = _Fusion(sections, analysis)
    fusion.fallback = fallback
    return drop_implied_guards(_drop_unread_ranges(fusion.run(), analysis.kinds), raising=not fallback)


def _reads_across_axes(group, plan):
    """Whether ``plan`` reads a dimension of an array along another of the nest's axes than the
    group's statements read it along. The nest's axes are its first statement's: after ``-y`` (y
    of shape (n,), the nest's axis 0), ``x + y`` (x of (m, n)) reads y along axis 1, so the nest
    would need m == n, and a lean specialization would fail for every non-square x."""
    for name, entries, _ in plan.accesses:
        for earlier, _ in group.accesses.get(name, []):
            if len(earlier) == len(entries) and any(
                    new[0] == old[0] == "ax" and new[1] != old[1] for new, old in zip(entries, earlier)):
                return True
    return False


def _error_only(guard):
    """Whether a loop nest's size test fails only where the statements raise NumPy's error (a
    maximum, minimum or arg-extreme over no elements: ``<size> > 0``)."""
    return guard.endswith(" > 0") and " and " not in guard


def _drop_unread_ranges(sections, kinds):
    """Drop top-level ``name = np.arange(...)`` whose ``name`` nothing reads any more.

    A row gather ``z[np.arange(n), y]`` fused into a loop reads ``y[i]`` and leaves the index array
    unread; it would still cost a run-time allocation and, cold, three compiled functions (Numba's
    ``np.arange``, the ``np.empty`` and ``int`` it calls). ``np.arange`` of integers has no effect
    but its result for integer arguments (their kinds say so), so only the assignment goes; a name
    also bound elsewhere is kept."""
    reads, binds = {}, {}
    for stmts in sections:
        for stmt in stmts:
            if not isinstance(stmt, ast.AST):
                continue
            for node in ast.walk(stmt):
                if isinstance(node, ast.Name):
                    counts = reads if isinstance(node.ctx, ast.Load) else binds
                    counts[node.id] = counts.get(node.id, 0) + 1

    def int_scalar(name):
        kind = kinds.get(name)
        return kind is not None and not kind.is_array and kind.cls == "int"

    def unread_range(stmt):
        return (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name) and _call_name(stmt.value) == "np.arange"
                and not stmt.value.keywords and 1 <= len(stmt.value.args) <= 3
                and all(_const_int(a) is not None or (isinstance(a, ast.Name) and int_scalar(a.id))
                        for a in stmt.value.args)
                and not reads.get(stmt.targets[0].id) and binds.get(stmt.targets[0].id) == 1)
    return [[stmt for stmt in stmts if not (isinstance(stmt, ast.stmt) and unread_range(stmt))]
            for stmts in sections]


class _Fusion(_StatementPlans):
    def __init__(self, sections, analysis):
        self.sections = sections
        self.analysis = analysis
        self.unsure = set()
        self.all_names = set()
        self.defs = {}            # name -> bindings (augmented assignments of arrays excluded)
        self.top_defs = {}
        self.uses = {}            # name -> [(section, index)] of the statements reading it
        self.escapes = {}         # name -> [(section, index)] where another name may alias it
        for s, stmts in enumerate(sections):
            for i, stmt in enumerate(stmts):
                if not isinstance(stmt, ast.stmt) or _is_comment(stmt):
                    continue
                nested = isinstance(stmt, (ast.For, ast.While, ast.If))
                in_place = {id(node.target) for node in ast.walk(stmt)
                            if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name)
                            and self.kind_is_array(node.target.id)}
                for node in ast.walk(stmt):
                    if not isinstance(node, ast.Name):
                        continue
                    self.all_names.add(node.id)
                    if isinstance(node.ctx, ast.Store):
                        if id(node) in in_place:
                            self.uses.setdefault(node.id, []).append((s, i))
                            continue
                        self.defs[node.id] = self.defs.get(node.id, 0) + 1
                        if not nested:
                            self.top_defs[node.id] = self.top_defs.get(node.id, 0) + 1
                    else:
                        self.uses.setdefault(node.id, []).append((s, i))
                for inner in _walk_statements([stmt]):
                    for name in _escaping(inner):
                        self.escapes.setdefault(name, []).append((s, i))
        self.unsure = scalar_reductions(sections)
        self.facts = _Facts(self)
        # max_adjoint calls whose row maxima an earlier statement keeps: found by equality
        self.known_extremes = {}
        for call, (extreme, position) in _known_extremes(self, sections).items():
            self.known_extremes[call] = extreme
            self.uses.setdefault(extreme, []).append(position)
        self.error_guards = set()  # size tests that fail only where the statements raise anyway
        self.loop_vars = []
        self.accumulators = []
        self.probe_name = None
        self.fallback = True      # fuse_loops' option

    # -- names and kinds ----------------------------------------------------------------------
    def kind(self, name):
        """The kind of a variable (an adjoint has its primal's), None when unknown or when the
        compiled value may not be what the kind says."""
        kinds = self.analysis.kinds
        if name in self.unsure:
            return None
        if name in kinds:
            return kinds[name]
        if name.startswith("_adj_"):
            for primal in (name[4:], name[5:]):
                if primal in kinds and kinds[primal].cls != "tuple":
                    return None if primal in self.unsure else kinds[primal]
        return None

    def kind_is_array(self, name):
        kind = self.kind(name)
        return kind is not None and kind.is_array

    def stable(self, name):
        """Bound once, at the top level (or an argument never rebound)."""
        count = self.defs.get(name, 0)
        if count == 0:
            return self.kind(name) is not None
        return count == 1 and self.top_defs.get(name, 0) == 1

    def loop_var(self, axis):
        """The name of the loop index over axis ``axis`` (the same in every loop nest)."""
        while len(self.loop_vars) <= axis:
            self.loop_vars.append(self.fresh(f"_i{len(self.loop_vars)}"))
        return self.loop_vars[axis]

    def accumulator(self, k):
        """The name of a loop nest's ``k``-th running reduction (the same in every loop nest, as
        the loop indices): Numba's SSA pass walks the whole function once for each name bound more
        than once, and an accumulator is bound twice (its start, its update in the loop). One
        name per reduction cost c_shapes' adjoint 0.35 s of its 5 s compile (issue 17)."""
        while len(self.accumulators) <= k:
            self.accumulators.append(self.fresh(f"_acc{len(self.accumulators)}"))
        return self.accumulators[k]

    def probe(self):
        if self.probe_name is None:
            self.probe_name = self.fresh("_x")
        return self.probe_name

    def fresh(self, base):
        name, count = base, 1
        while name in self.all_names:
            count += 1
            name = f"{base}{count}"
        self.all_names.add(name)
        return name

    # -- driver -------------------------------------------------------------------------------
    def run(self):
        out = []
        for s, stmts in enumerate(self.sections):
            result, group = [], None
            for i, stmt in enumerate(stmts):
                if _is_comment(stmt) or not isinstance(stmt, ast.stmt):
                    if group is not None:
                        group.stmts.append(stmt)
                        group.comments.append(stmt)
                        group.sequence.append(stmt)
                    else:
                        result.append(stmt)
                    continue
                if group is not None:
                    if self._add(group, (s, i), stmt):
                        continue
                    if self._hoistable(group, stmt):
                        group.hoisted.append(stmt)
                        group.hoisted_at.append((s, i))
                        group.sequence.append(stmt)
                        self.facts.learn(stmt)
                        continue
                    result += self._finish(group)
                    group = None
                group = _Group()
                if not self._add(group, (s, i), stmt):
                    group = None
                    result.append(stmt)
                    self.facts.learn(stmt)
            if group is not None:
                result += self._finish(group)
            out.append(result)
        return out

    def _add(self, group, position, stmt):
        try:
            if any(name in group.values and group.values[name].total for name in _names(stmt)):
                raise _Unfusable     # reads a scalar the loop nest is still adding up
            plan = self._plan(group, position, stmt)
            if plan.join_guards and group.plans and not group.linked(plan):
                raise _Unfusable     # unrelated sizes: a test that might fail for the whole nest
            if group.plans and _reads_across_axes(group, plan):
                raise _Unfusable     # it would test two of the nest's sizes equal (m == n)
            self._check_accesses(group, plan)
        except _Unfusable:
            return False
        self._commit(group, plan)
        self.facts.learn(stmt)
        return True

    def _hoistable(self, group, stmt):
        """A side-effect free assignment that neither reads nor writes what the group computes
        or updates: it can run before the loop nest."""
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and
                isinstance(stmt.targets[0], ast.Name)):
            return False
        target = stmt.targets[0].id
        if not self.stable(target):
            return False
        produced = set(group.values) | group.written
        if target in produced or target in group.accesses or \
                any(name in produced for name in _names(stmt.value)):
            return False
        for node in ast.walk(stmt.value):
            if isinstance(node, ast.Call):
                name = _call_name(node)
                if name is None or not (name.startswith("np.") and name[3:] in _FRESH_NP or
                                        name in ("reduced_count", "range_length")):
                    return False
        return True

    # -- planning -----------------------------------------------------------------------------
    def _plan(self, group, position, stmt):
        plan = _Plan(stmt, position)
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            target = stmt.targets[0].id
            if not self.stable(target):
                raise _Unfusable
            kind = self.kind(target)
            op = {"np.sum": "sum", "np.max": "max", "np.amax": "max", "np.min": "min",
                  "np.amin": "min"}.get(_call_name(stmt.value))
            if kind is not None and not kind.is_array and kind.cls == "float" and op and \
                    len(stmt.value.args) == 1 and not stmt.value.keywords:
                return self._plan_total(group, plan, target, stmt.value.args[0], op) or plan
            if not self.kind_is_array(target):
                raise _Unfusable
            self._plan_assign(group, plan, target, stmt.value)
        elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, (ast.Add, ast.Sub)):
            sign = "+" if isinstance(stmt.op, ast.Add) else "-"
            if isinstance(stmt.target, ast.Name) and self.kind_is_array(stmt.target.id):
                self._plan_update(group, plan, (stmt.target.id, None, sign), stmt.value)
            elif isinstance(stmt.target, ast.Subscript) and isinstance(stmt.target.value, ast.Name) \
                    and self.kind_is_array(stmt.target.value.id):
                entries = _basic_index(stmt.target.slice)
                if entries is None:
                    raise _Unfusable
                self._plan_update(group, plan, (stmt.target.value.id, entries, sign), stmt.value)
            else:
                raise _Unfusable
        elif isinstance(stmt, ast.Expr) and _call_name(stmt.value) == "scatter_add2":
            self._plan_scatter(group, plan, stmt.value)
        else:
            raise _Unfusable
        return plan

    def _axis(self, group, plan, axis):
        axes = group.axes + plan.new_axes
        if axis >= len(axes):
            raise _Unfusable
        return axes[axis]

    def _make_space(self, group, plan, arrays, ndim):
        """Group axes 0..ndim-1 for a statement; axes the group does not have yet take their size
        from the first of ``arrays`` (arrays that exist before the group, right-aligned) with one."""
        for pos in range(len(group.axes) + len(plan.new_axes), ndim):
            found = None
            for name in arrays:
                dims = self.facts.of(name)
                k = pos - (ndim - len(dims)) if dims is not None else -1
                if k >= 0 and dims[k] != 1:
                    found = (dims[k], f"{name}.shape[{k}]")
                    break
            if found is None:
                raise _Unfusable
            plan.new_axes.append(found)
        return list(range(ndim))

    def _entries(self, group, plan, name, space, stretch=True):
        """Index entries reading array ``name`` (existing before the group) inside a statement
        over ``space``, right-aligned as in NumPy broadcasting; size tests go to ``plan``."""
        dims = self.facts.of(name)
        if dims is None or len(dims) > len(space):
            raise _Unfusable
        offset = len(space) - len(dims)
        entries = []
        for k, d in enumerate(dims):
            axis = space[offset + k]
            symbol = self._axis(group, plan, axis)[0]
            if d == 1 and symbol != 1 and stretch:
                entries.append(("c", 0))
                continue
            self._same(group, plan, name, k, d, axis)
            entries.append(("ax", axis))
        return tuple(entries)

    def _same(self, group, plan, name, k, d, axis):
        """Test (unless known) that dimension ``k`` of array ``name`` (symbol ``d``) has the size
        of group axis ``axis``. Tests of one symbol against one axis are made once."""
        symbol, size = self._axis(group, plan, axis)
        if d == symbol:
            return
        code = f"{name}.shape[{k}] == {size}"
        plan.guards.append((("eq", d, axis) if d != 1 and d[0] != "?" else code, code))
        if axis < len(group.axes):
            plan.join_guards = True

    def _expr_ndim(self, node):
        if isinstance(node, ast.Name):
            kind = self.kind(node.id)
            if kind is None:
                raise _Unfusable
            return kind.ndim if kind.is_array else 0
        if isinstance(node, ast.Constant) or _is_float32_literal(node):
            return 0
        if isinstance(node, ast.BinOp):
            return max(self._expr_ndim(node.left), self._expr_ndim(node.right))
        if isinstance(node, ast.UnaryOp):
            return self._expr_ndim(node.operand)
        if isinstance(node, ast.Compare):
            return max(self._expr_ndim(p) for p in [node.left] + node.comparators)
        call = _call_name(node)
        if call == "expand_reduced" and len(node.args) == 4 and isinstance(node.args[1], ast.Name):
            kind = self.kind(node.args[1].id)
            if kind is None or not kind.is_array:
                raise _Unfusable
            return kind.ndim
        if call == "reduced_count":
            return 0
        if call == "unbroadcast" and len(node.args) == 2:      # inside an expression: no sums
            ndim = self._expr_ndim(node.args[0])
            if not isinstance(node.args[1], ast.Name) or not self.kind_is_array(node.args[1].id) or \
                    self.kind(node.args[1].id).ndim != ndim:
                raise _Unfusable
            return ndim
        if call is not None and call.startswith("np.") and node.args and not node.keywords:
            return max(self._expr_ndim(a) for a in node.args)
        raise _Unfusable

    def _inputs(self, group, node):
        """Arrays an expression reads that exist before the group, as sources of the loop nest's
        sizes (right-aligned, as NumPy broadcasts). The gradient of an ``expand_reduced`` is not
        aligned so (its axes skip the reduced one): its sizes come from the array it spreads over."""
        spread = {id(call.args[0]) for call in ast.walk(node)
                  if _call_name(call) == "expand_reduced" and call.args}
        skipped = {n.id for n in ast.walk(node) if id(n) in spread and isinstance(n, ast.Name)}
        return [n for n in _names(node)
                if self.kind_is_array(n) and n not in group.values and n not in skipped]

    def _read(self, group, plan, name, space):
        """IR reading array ``name`` at the current element of a statement over ``space``."""
        if name in group.later:
            raise _Unfusable
        if name in group.values:
            value = group.values[name]
            offset = len(space) - len(value.entries)
            if offset < 0:
                raise _Unfusable
            for k, entry in enumerate(value.entries):
                if entry[0] == "ax" and entry[1] != space[offset + k]:
                    raise _Unfusable
            plan.values_read.add(name)
            if value.form == "alias":
                plan.values_read.update(value.bases)
                for node in _ir_reads(value.expr):
                    if node[1] in group.later:
                        raise _Unfusable
                    plan.accesses.append((node[1], node[2], len(space)))
                return value.expr
            return ("val", name, value.entries)
        entries = self._entries(group, plan, name, space)
        plan.accesses.append((name, entries, len(space)))
        return ("read", name, entries)

    def _element(self, group, plan, node, space):
        """Element IR of an elementwise expression over ``space`` and its element class
        ('float' | 'pyfloat' (a float64 literal) | 'int' | 'bool')."""
        if isinstance(node, ast.Name):
            kind = self.kind(node.id)
            if kind is None:
                raise _Unfusable
            if not kind.is_array:
                if kind.cls not in ("float", "int", "bool"):
                    raise _Unfusable
                return ("code", node.id), kind.cls
            if kind.ndim > len(space):
                raise _Unfusable
            return self._read(group, plan, node.id, space[len(space) - kind.ndim:]), kind.dtype
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool):
                return ("code", repr(node.value)), "bool"
            if isinstance(node.value, int):
                return ("code", repr(node.value)), "int"
            if isinstance(node.value, float):
                return ("code", repr(node.value)), "pyfloat"
            raise _Unfusable
        if _is_float32_literal(node):
            return ("code", ast.unparse(node)), "float"
        floats = ("float", "pyfloat")
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_UFUNC:
            (left, lk), (right, rk) = (self._element(group, plan, node.left, space),
                                       self._element(group, plan, node.right, space))
            symbol, ufunc = _BINOP_UFUNC[type(node.op)]
            if lk in floats and rk in floats:
                return ("fmt", "({0} " + symbol + " {1})", [left, right]), \
                    "float" if "float" in (lk, rk) else "pyfloat"
            out = "float" if lk in floats or rk in floats or ufunc == "true_divide" else "int"
            return ("fmt", f"np.{ufunc}({{0}}, {{1}})", [left, right]), out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            operand, k = self._element(group, plan, node.operand, space)
            if k in floats:
                return ("fmt", "(-{0})", [operand]), k
            return ("fmt", "np.negative({0})", [operand]), k
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
            return self._element(group, plan, node.operand, space)
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE_UFUNC:
            (left, lk), (right, rk) = (self._element(group, plan, node.left, space),
                                       self._element(group, plan, node.comparators[0], space))
            symbol, ufunc = _COMPARE_UFUNC[type(node.ops[0])]
            if lk in floats and rk in floats:
                return ("fmt", "({0} " + symbol + " {1})", [left, right]), "bool"
            return ("fmt", f"np.{ufunc}({{0}}, {{1}})", [left, right]), "bool"
        call = _call_name(node)
        if call == "reduced_count" and len(node.args) == 2 and isinstance(node.args[0], ast.Name) \
                and self.kind_is_array(node.args[0].id):
            x, axis = node.args[0].id, node.args[1]
            if isinstance(axis, ast.Constant) and axis.value is None:
                return ("code", f"{x}.size"), "int"
            if _const_int(axis) is None:
                raise _Unfusable
            return ("code", f"{x}.shape[{_const_int(axis)}]"), "int"
        if call == "expand_reduced" and len(node.args) == 4:
            return self._expanded(group, plan, node, space)
        if call == "unbroadcast" and len(node.args) == 2 and isinstance(node.args[1], ast.Name):
            summed, _ = self._unbroadcast_sums(group, plan, node.args[1].id, space)
            if any(summed):
                raise _Unfusable
            return self._element(group, plan, node.args[0], space)
        if call is not None and call.startswith("np.") and not node.keywords:
            short = call[3:]
            args = [self._element(group, plan, a, space) for a in node.args]
            if short in _UNARY_UFUNCS and len(args) == 1:
                k = args[0][1]
                keeps = short in ("abs", "absolute", "square", "negative", "sign", "floor", "ceil")
                return ("fmt", f"np.{short}({{0}})", [args[0][0]]), k if keeps or k in floats else "float"
            if short in _BINARY_UFUNCS and len(args) == 2:
                kinds = {args[0][1], args[1][1]}
                out = "float" if kinds & {"float"} else "pyfloat" if kinds & {"pyfloat"} else "int"
                return ("fmt", f"np.{short}({{0}}, {{1}})", [args[0][0], args[1][0]]), out
            if short == "where" and len(args) == 3 and args[1][1] in floats and args[2][1] in floats:
                return ("fmt", "({1} if {0} else {2})", [a[0] for a in args]), "float"
        raise _Unfusable

    # Statements ---------------------------------------------------------------------------------

    def _check_accesses(self, group, plan):
        for name in plan.writes:
            if name in group.values or name in group.later:
                raise _Unfusable
        for name in group.written | plan.writes:
            accesses = list(group.accesses.get(name, []))
            accesses += [(e, lv) for n, e, lv in plan.accesses if n == name]
            if not _access_rule(accesses):
                raise _Unfusable

    def _commit(self, group, plan):
        group.axes += plan.new_axes
        keys = {key for key, _ in group.guards}
        for key, code in plan.guards:
            if key not in keys:
                keys.add(key)
                group.guards.append((key, code))
        for name, entries, level in plan.accesses:
            group.accesses.setdefault(name, []).append((entries, level))
        group.written |= plan.writes
        group.stmts.append(plan.stmt)
        group.sequence.append(plan.stmt)
        group.positions.add(plan.position)
        group.plans.append(plan)
        if plan.form == "later":
            if plan.target is not None:
                group.later.add(plan.target[0])
            else:
                group.later.add(plan.value.name)
        if plan.form == "alias":
            group.values[plan.value.name] = plan.value
            return
        # a row reduction being read must be complete, and an array a reduction updates must
        # be updated: end the loops that compute them
        for name in plan.values_read:
            value = group.values.get(name)
            if value is not None and value.form == "row" and not value.done:
                self._close(group, value.block.level - 1)
        touched = {name for name, _, _ in plan.accesses} | plan.writes
        for name in touched:
            pending = group.pending.get(name)
            if pending is not None and pending in group.open:
                self._close(group, pending.level - 1)
        self._close(group, plan.level)
        while len(group.open) - 1 < plan.level:
            block = _Block(len(group.open), group.open[-1])
            group.open[-1].items.append(block)
            group.open.append(block)
        block = group.open[plan.level]
        plan.comments, group.comments = group.comments, []
        if plan.form in ("row", "argext"):
            outer, inner = group.open[plan.result_level], group.open[plan.result_level + 1]
            outer.items.insert(outer.items.index(inner), ("init", plan))
            inner.closing.append(("final", plan))
            plan.final_block = outer
            if plan.target is not None:
                group.pending[plan.target[0]] = inner
            if plan.value is not None:
                plan.value.block, plan.value.scope = inner, outer
        elif plan.value is not None:
            plan.value.scope = block
        block.items.append(("plan", plan))
        plan.block = block
        if plan.value is not None:
            group.values[plan.value.name] = plan.value

    def _close(self, group, level):
        """End the loops deeper than ``level``."""
        while len(group.open) - 1 > level:
            block = group.open.pop()
            group.open[-1].items += block.closing
            for kind, plan in block.closing:
                if plan.value is not None:
                    plan.value.done = True

    # -- code ---------------------------------------------------------------------------------
    def _finish(self, group):
        """The statements replacing the group: hoisted ones, then the loop nest (and the
        statements as written, when the sizes need testing)."""
        self._close(group, 0)
        # A group of one statement gains no pass over memory, but its loop nest compiles to less
        # code than the statement as written (Numba's broadcasting ufunc loops, or a helper
        # compiled for each signature): fused when it needs no size test (a failing test would
        # compile the fallback specialization too), or only tests that fail where the statement
        # raises NumPy's error anyway (the maximum of no elements).
        if group.passes < 1 and len(group.plans) == 1 and not group.guards and not group.hoisted:
            plan = group.plans[0]
            if _call_name(plan.stmt.value) == "unbroadcast" and isinstance(plan.stmt.value.args[0], ast.Name):
                # `x = unbroadcast(g, like)` where the sizes are known equal: NumPy's result is g
                # itself (no helper to compile for it)
                return [ast.copy_location(ast.Assign(targets=plan.stmt.targets, value=plan.stmt.value.args[0]),
                                          plan.stmt)]
        if group.passes < 1 or (group.passes < 2 and not all(
                code in self.error_guards or _error_only(code) for _, code in group.guards)):
            return group.sequence
        trailing = group.comments        # comments about the statements after the group
        # (an alias takes no comments: those before it stay pending, but it is no comment itself
        # and must stay among the statements as written)
        end = len(group.stmts)
        while end and any(group.stmts[end - 1] is c for c in trailing):
            end -= 1
        group.stmts = group.stmts[:end]
        return self._fuse_hoisted(group) + _Emitter(self, group).emit() + trailing

    def _fuse_hoisted(self, group):
        """The statements hoisted above a group's loop nest (in their order; they neither read
        nor write what it computes), fused among themselves: a chain such as ``t = a - m``,
        ``e = np.exp(t)``, ``s = np.sum(e)`` is one more loop nest instead of Numba's array
        expressions."""
        result, sub = [], None
        for position, stmt in zip(group.hoisted_at, group.hoisted):
            if sub is not None:
                if self._add(sub, position, stmt):
                    continue
                result += self._finish(sub)
                sub = None
            sub = _Group()
            if not self._add(sub, position, stmt):
                sub = None
                result.append(stmt)
        if sub is not None:
            result += self._finish(sub)
        return result
