"""Loop fusion (cpu target), part 2: how each kind of statement joins a fused group (assignments,
aliases, unbroadcast sums, reductions and their adjoints, gathers and scatters). A mixin of
:class:`.fusion._Fusion`."""
import ast

from .fusion_facts import _NEW_ARRAY, _Unfusable, _Value, _basic_index, _call_name, _const_int


class _StatementPlans:
    """The ``_plan_*`` methods of :class:`.fusion._Fusion`."""

    def _plan_assign(self, group, plan, target, value):
        ndim = self.kind(target).ndim
        call = _call_name(value)
        if isinstance(value, (ast.Name, ast.Subscript)):
            return self._plan_alias(group, plan, target, value)
        if call == "unbroadcast" and len(value.args) == 2:
            return self._plan_unbroadcast(group, plan, target, None, value.args[0], value.args[1])
        if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub) and \
                _call_name(value.operand) == "unbroadcast" and len(value.operand.args) == 2:
            # `-unbroadcast(g, like)` (a subtracted single contribution): the sum of -g
            negated = ast.UnaryOp(op=ast.USub(), operand=value.operand.args[0])
            return self._plan_unbroadcast(group, plan, target, None, negated, value.operand.args[1])
        if call in ("reduce_sum", "reduce_max", "reduce_min") and len(value.args) == 3:
            return self._plan_reduce(group, plan, target, value)
        if call == "expand_reduced" and len(value.args) == 4:
            return self._plan_expand(group, plan, target, value)
        if call == "gather2" and len(value.args) == 3:
            return self._plan_gather(group, plan, target, value)
        if ndim == 0 or self._expr_ndim(value) != ndim:
            raise _Unfusable
        space = self._make_space(group, plan, self._inputs(group, value), ndim)
        before = len(plan.accesses), set(plan.values_read)
        plan.expr, _ = self._element(group, plan, value, space)
        self._check_covered(group, plan, space, before)
        self._define_map(plan, target, space)

    def _check_covered(self, group, plan, space, before):
        """Every axis of the group an elementwise expression runs over must be an axis of one of
        its operands (those it read since ``before``): ``s * s`` with ``s`` of shape (n, 1) has
        shape (n, 1), and must not join a nest over (n, m) (it would be computed, and summed,
        m times)."""
        covered = set()
        for _, entries, _ in plan.accesses[before[0]:]:
            covered.update(e[1] for e in entries if e[0] == "ax")
        for name in plan.values_read - before[1]:
            value = group.values.get(name)
            if value is not None:
                covered.update(e[1] for e in value.entries if e[0] == "ax")
        first_new = len(group.axes)
        if any(u < first_new and u not in covered for u in space):
            raise _Unfusable

    def _define_map(self, plan, target, space):
        value = _Value(target, "map", tuple(("ax", u) for u in space), plan.stmt)
        value.expr = plan.expr
        plan.value, plan.form, plan.level = value, "map", len(space)

    def _plan_alias(self, group, plan, target, node):
        """``x = y`` or a view ``x = y[:, 0]`` of a value the group computes: reads of x read y."""
        if isinstance(node, ast.Name):
            base, index = node.id, []
        elif isinstance(node.value, ast.Name):
            base, index = node.value.id, _basic_index(node.slice)
        else:
            raise _Unfusable
        if index is None or base not in group.values or base in group.later:
            raise _Unfusable
        source = group.values[base]
        if source.form == "row" and not source.done:
            raise _Unfusable
        index = index + [":"] * (len(source.entries) - len(index))
        if len(index) != len(source.entries):
            raise _Unfusable
        own = []
        for entry, source_entry in zip(index, source.entries):
            if entry == ":":
                own.append(source_entry)
            elif source_entry != ("c", 0) or entry not in (0, -1):
                raise _Unfusable          # picks one element along an axis the group iterates
        own = tuple(own)
        if len(own) != self.kind(target).ndim or any(e != ("ax", k) for k, e in enumerate(own)
                                                     if e[0] == "ax"):
            raise _Unfusable
        value = _Value(target, "alias", own, plan.stmt)
        value.expr = ("val", base, source.entries) if source.form != "alias" else source.expr
        value.bases = [base] + list(source.bases)
        plan.values_read.update(value.bases)
        plan.value, plan.form, plan.passes = value, "alias", 0
        plan.level = max([e[1] + 1 for e in own if e[0] == "ax"] or [0])

    def _unbroadcast_sums(self, group, plan, like, space):
        """For ``unbroadcast(g, like)`` over ``space``: which axes are summed, and the result's
        entries (("c", 0) for a summed axis ``like`` keeps with size 1)."""
        if like in group.values:
            value = group.values[like]
            offset = len(space) - len(value.entries)
            if offset < 0:
                raise _Unfusable
            summed = [True] * offset
            for k, entry in enumerate(value.entries):
                if entry[0] == "ax" and entry[1] != space[offset + k]:
                    raise _Unfusable
                summed.append(entry[0] != "ax")
            return summed, value.entries
        dims = self.facts.of(like)
        if dims is None or len(dims) > len(space):
            raise _Unfusable
        offset = len(space) - len(dims)
        summed, entries = [True] * offset, []
        for k, d in enumerate(dims):
            axis = space[offset + k]
            symbol = self._axis(group, plan, axis)[0]
            if d == 1 and symbol != 1:
                summed.append(True)
                entries.append(("c", 0))
                continue
            self._same(group, plan, like, k, d, axis)
            summed.append(False)
            entries.append(("ax", axis))
        return summed, tuple(entries)

    def _plan_unbroadcast(self, group, plan, target, update, gradient, like_node):
        """``x = unbroadcast(E, like)`` or ``T op= unbroadcast(E, like)``."""
        if not isinstance(like_node, ast.Name) or not self.kind_is_array(like_node.id):
            raise _Unfusable
        like = like_node.id
        ndim = self._expr_ndim(gradient)
        if ndim == 0:
            raise _Unfusable
        space = self._make_space(group, plan, self._inputs(group, gradient) +
                                 ([] if like in group.values else [like]), ndim)
        summed, entries = self._unbroadcast_sums(group, plan, like, space)
        before = len(plan.accesses), set(plan.values_read)
        plan.expr = self._element(group, plan, gradient, space)[0]
        self._check_covered(group, plan, space, before)
        if not any(summed):
            if update is not None:
                return self._plan_update_map(group, plan, update, space)
            if isinstance(gradient, ast.Name):
                # NumPy's unbroadcast returns the gradient itself: x is another name for it
                value = _Value(target, "alias", tuple(("ax", u) for u in space), plan.stmt)
                value.expr = plan.expr
                if gradient.id in group.values:
                    value.bases = [gradient.id] + list(group.values[gradient.id].bases)
                plan.value, plan.form, plan.passes, plan.level = value, "alias", 0, ndim
                return None
            return self._define_map(plan, target, space)
        return self._reduction(group, plan, target, update, space, summed, entries, "sum")

    def _reduction(self, group, plan, target, update, space, summed, entries, op):
        """``plan.expr`` reduced over the summed axes of ``space``; ``entries`` index the result
        (("c", 0) where a summed axis is kept with size 1)."""
        kept = [u for u, s in zip(space, summed) if not s]
        row = kept == list(range(len(kept)))       # the innermost axes are summed
        if not row and op != "sum":
            raise _Unfusable
        plan.level, plan.op, plan.result_level = len(space), op, len(kept)
        plan.form = "row" if row else "later"
        plan.part_entries = tuple(entries)
        if update is not None:
            name, index, sign = update
            if index is None:
                target_entries = self._result_entries(group, plan, name, entries)
            elif all(e[0] == "ax" for e in entries):
                target_entries = self._view_entries(group, plan, name, index, [e[1] for e in entries])
            else:
                raise _Unfusable
            plan.target = (name, tuple(target_entries), sign)
            if row:
                self._write(group, plan, name, target_entries, len(kept))
            else:
                plan.writes.add(name)       # updated after the loop nest, as written
        else:
            plan.value = _Value(target, plan.form, tuple(entries), plan.stmt)
            plan.value.expr, plan.value.op = plan.expr, op
        if op in ("max", "min"):
            for u, s in zip(space, summed):
                if s:
                    code = f"{self._axis(group, plan, u)[1]} > 0"
                    plan.guards.append((code, code))

    def _result_entries(self, group, plan, name, entries):
        """Array ``name`` updated with a reduction's result indexed by ``entries``: it must
        have the result's shape."""
        dims = self.facts.of(name)
        if dims is None or len(dims) != len(entries):
            raise _Unfusable
        for k, (d, entry) in enumerate(zip(dims, entries)):
            if entry[0] == "c":
                if d != 1:
                    plan.guards.append((f"{name}.shape[{k}] == 1",) * 2)
                continue
            self._same(group, plan, name, k, d, entry[1])
        return tuple(entries)

    def _view_entries(self, group, plan, name, index, space):
        """Entries of the elements of view ``name[index]`` that lie over ``space``."""
        dims = self.facts.of(name)
        if dims is None or len(index) > len(dims):
            raise _Unfusable
        index = list(index) + [":"] * (len(dims) - len(index))
        if sum(1 for e in index if e == ":") != len(space):
            raise _Unfusable
        out, pos = [], 0
        for k, (d, entry) in enumerate(zip(dims, index)):
            if entry == ":":
                axis = space[pos]
                pos += 1
                symbol = self._axis(group, plan, axis)[0]
                if d == 1 and symbol != 1:
                    raise _Unfusable
                self._same(group, plan, name, k, d, axis)
                out.append(("ax", axis))
            else:
                if d == 1 and entry not in (0, -1):
                    raise _Unfusable
                if d != 1:
                    plan.guards.append((f"{name}.shape[{k}] > {entry if entry >= 0 else -entry - 1}",) * 2)
                out.append(("c", entry))
        return tuple(out)

    def _write(self, group, plan, name, entries, level):
        """``plan`` updates array ``name`` in place (at loop depth ``level``; None: after the nest)."""
        if not self._owned(group, name, plan.position):
            raise _Unfusable
        plan.writes.add(name)
        if level is not None:
            plan.accesses.append((name, tuple(entries), level))

    def _owned(self, group, name, position):
        """An array this function creates (``np.zeros_like`` & co.) that no other name can
        refer to while the group updates it in place."""
        if self.defs.get(name) != 1 or self.top_defs.get(name) != 1:
            return False
        created = False
        for stmts in self.sections:
            for stmt in stmts:
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                        isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == name:
                    created = _call_name(stmt.value) in _NEW_ARRAY
        if not created:
            return False
        aliases = {p.position for p in group.plans if p.form == "alias"}
        return all(p > position or p in aliases for p in self.escapes.get(name, []))

    def _plan_update_map(self, group, plan, update, space):
        """``T op= E`` element by element, T (or a view of it) spanning ``space``."""
        name, index, sign = update
        if index is None:
            dims = self.facts.of(name)
            if dims is None or len(dims) != len(space):
                raise _Unfusable
            entries = self._entries(group, plan, name, space, stretch=False)
        else:
            entries = self._view_entries(group, plan, name, index, space)
        plan.target = (name, entries, sign)
        plan.form, plan.level = "update", len(space)
        self._write(group, plan, name, entries, len(space))

    def _plan_update(self, group, plan, update, value):
        name, index, _ = update
        call = _call_name(value)
        if call == "unbroadcast" and len(value.args) == 2:
            return self._plan_unbroadcast(group, plan, None, update, value.args[0], value.args[1])
        if call in ("max_adjoint", "min_adjoint") and len(value.args) == 4 and index is None:
            return self._plan_extremum_adjoint(group, plan, update, value)
        ndim = self._expr_ndim(value)
        kind = self.kind(name)
        target_ndim = kind.ndim if index is None else \
            sum(1 for e in index if e == ":") + kind.ndim - len(index)
        if ndim != target_ndim or ndim == 0:
            raise _Unfusable
        space = self._make_space(group, plan, self._inputs(group, value) +
                                 ([name] if index is None else []), ndim)
        plan.expr, _ = self._element(group, plan, value, space)
        return self._plan_update_map(group, plan, update, space)

    def _plan_reduce(self, group, plan, target, value):
        x, axis_node, keep = value.args
        axis = _const_int(axis_node)
        if axis is None or not isinstance(keep, ast.Constant) or not isinstance(x, ast.Name):
            raise _Unfusable
        ndim = self._expr_ndim(x)
        if ndim == 0 or not -ndim <= axis < ndim:
            raise _Unfusable
        axis %= ndim
        space = self._make_space(group, plan, self._inputs(group, x), ndim)
        plan.expr, k = self._element(group, plan, x, space)
        op = {"reduce_sum": "sum", "reduce_max": "max", "reduce_min": "min"}[_call_name(value)]
        if k != "float":    # NumPy sums booleans and small integers as int64: not in the element type
            raise _Unfusable
        entries = tuple(("c", 0) if u == axis else ("ax", u) for u in space if u != axis or keep.value)
        self._reduction(group, plan, target, None, space, [u == axis for u in space], entries, op)

    def _plan_total(self, group, plan, target, x, op):
        """``s = np.sum(E)`` (``np.max``, ``np.min``) of an elementwise expression ``E`` into a
        float scalar: reduced over all of E's axes in the loop nest, in C order, one element after
        the other (as Numba's np.sum adds them up)."""
        ndim = self._expr_ndim(x)
        if ndim == 0:
            raise _Unfusable
        space = self._make_space(group, plan, self._inputs(group, x), ndim)
        before = len(plan.accesses), set(plan.values_read)
        plan.expr, k = self._element(group, plan, x, space)
        if k != "float":    # NumPy sums booleans and small integers as int64: not in the element type
            raise _Unfusable
        self._check_covered(group, plan, space, before)
        self._reduction(group, plan, target, None, space, [True] * ndim, (), op)
        plan.value.total = True

    def _plan_expand(self, group, plan, target, value):
        """``x = expand_reduced(g, like, axis, keepdims)``: g spread over ``like``'s shape."""
        like = value.args[1]
        if not isinstance(like, ast.Name) or not self.kind_is_array(like.id):
            raise _Unfusable
        ndim = self.kind(like.id).ndim
        space = self._make_space(group, plan, [] if like.id in group.values else [like.id], ndim)
        plan.expr, _ = self._expanded(group, plan, value, space)
        self._define_map(plan, target, space)

    def _expanded(self, group, plan, node, space):
        """Element IR of ``expand_reduced(g, like, axis, keepdims)`` over ``space`` (like's)."""
        gradient, like, axis_node, keep = node.args
        if not isinstance(like, ast.Name) or not self.kind_is_array(like.id) or \
                not isinstance(keep, ast.Constant) or not isinstance(gradient, ast.Name):
            raise _Unfusable
        ndim = self.kind(like.id).ndim
        if ndim != len(space):
            raise _Unfusable
        if like.id in group.values:
            if group.values[like.id].entries != tuple(("ax", u) for u in space):
                raise _Unfusable
        else:
            self._entries(group, plan, like.id, space, stretch=False)    # its shape: size tests
        g_kind = self.kind(gradient.id)
        if g_kind is None:
            raise _Unfusable
        if isinstance(axis_node, ast.Constant) and axis_node.value is None:
            if g_kind.is_array:
                raise _Unfusable
            return ("code", gradient.id), g_kind.cls
        axis = _const_int(axis_node)
        if axis is None or not -ndim <= axis < ndim or not g_kind.is_array or keep.value:
            raise _Unfusable
        axis %= ndim
        g_space = [u for k, u in enumerate(space) if k != axis]
        if g_kind.ndim != len(g_space):
            raise _Unfusable
        if gradient.id in group.values:
            return self._read(group, plan, gradient.id, g_space), g_kind.dtype
        dims = self.facts.of(gradient.id)
        entries = []
        for k, u in enumerate(g_space):
            tests = len(plan.guards)
            self._same(group, plan, gradient.id, k, dims[k], u)
            # the gradient of a reduction has the reduced shape: a test of it fails only where
            # the helper raises its error too
            self.error_guards.update(code for _, code in plan.guards[tests:])
            entries.append(("ax", u))
        plan.accesses.append((gradient.id, tuple(entries), len(space)))
        return ("read", gradient.id, tuple(entries)), g_kind.dtype

    def _rows_space(self, group, plan, rows, cols):
        """The space of a row gather/scatter ``[rows, cols]`` with ``rows = np.arange(n)``."""
        if rows.id not in self.facts.aranges or rows.id in group.values or cols.id in group.values:
            raise _Unfusable
        if self.kind(rows.id).ndim != 1 or self.kind(cols.id).ndim != 1:
            raise _Unfusable
        space = self._make_space(group, plan, [rows.id], 1)
        self._entries(group, plan, rows.id, space, stretch=False)
        col_entries = self._entries(group, plan, cols.id, space, stretch=False)
        plan.accesses.append((cols.id, col_entries, 1))
        return space, ("read", cols.id, col_entries)

    def _row_entries(self, group, plan, name, column):
        """Entries of element ``[i, column]`` of 2-d array ``name`` in a row gather/scatter."""
        self._same(group, plan, name, 0, self.facts.of(name)[0], 0)
        return (("ax", 0), ("d", column))

    def _plan_gather(self, group, plan, target, value):
        """``x = gather2(z, rows, cols)`` with ``rows = np.arange(n)``: x[i] = z[i, cols[i]]."""
        z, rows, cols = value.args
        if not all(isinstance(a, ast.Name) and self.kind_is_array(a.id) for a in (z, rows, cols)) or \
                self.kind(target).ndim != 1 or self.kind(z.id).ndim != 2:
            raise _Unfusable
        space, column = self._rows_space(group, plan, rows, cols)
        if z.id in group.later:
            raise _Unfusable
        if z.id in group.values:
            source = group.values[z.id]
            if source.form != "map" or source.entries != (("ax", 0), ("ax", 1)):
                raise _Unfusable
            plan.values_read.add(z.id)
            plan.expr = ("val", z.id, (("ax", 0), ("d", column)))
        else:
            entries = self._row_entries(group, plan, z.id, column)
            plan.accesses.append((z.id, entries, 1))
            plan.expr = ("read", z.id, entries)
        self._define_map(plan, target, space)

    def _plan_scatter(self, group, plan, call):
        """``scatter_add2(A, rows, cols, g)`` with ``rows = np.arange(n)``: A[i, cols[i]] += g[i]."""
        if len(call.args) != 4 or call.keywords:
            raise _Unfusable
        adjoint, rows, cols, gradient = call.args
        if not all(isinstance(a, ast.Name) and self.kind_is_array(a.id) for a in (adjoint, rows, cols)) \
                or self.kind(adjoint.id).ndim != 2 or not isinstance(gradient, ast.Name):
            raise _Unfusable
        space, column = self._rows_space(group, plan, rows, cols)
        plan.expr, _ = self._element(group, plan, gradient, space)
        entries = self._row_entries(group, plan, adjoint.id, column)
        plan.target = (adjoint.id, entries, "+")
        plan.form, plan.level = "update", 1
        self._write(group, plan, adjoint.id, entries, 1)

    def _plan_extremum_adjoint(self, group, plan, update, value):
        """``T += max_adjoint(g, x, axis, keepdims)`` over the last axis: each row's gradient goes
        to the row's first extreme element."""
        name, _, sign = update
        gradient, x, axis_node, keep = value.args
        if not isinstance(x, ast.Name) or not isinstance(gradient, ast.Name) or \
                not isinstance(keep, ast.Constant) or not self.kind_is_array(x.id):
            raise _Unfusable
        ndim = self.kind(x.id).ndim
        axis = _const_int(axis_node)
        whole = ndim == 1 and isinstance(axis_node, ast.Constant) and axis_node.value is None and \
            not keep.value          # np.max of a vector: a scalar gradient to its first maximum
        if whole:
            axis = 0
        elif ndim < 2 or axis is None or not -ndim <= axis < ndim or axis % ndim != ndim - 1:
            raise _Unfusable
        space = self._make_space(group, plan, self._inputs(group, x) + [name], ndim)
        plan.expr, k = self._element(group, plan, x, space)
        if k != "float":
            raise _Unfusable
        g_kind = self.kind(gradient.id)
        if whole:
            if g_kind is None or g_kind.is_array or g_kind.cls != "float" or gradient.id in group.values:
                raise _Unfusable
            plan.gradient = ("code", gradient.id)
        elif g_kind is None or not g_kind.is_array or g_kind.ndim != (ndim if keep.value else ndim - 1):
            raise _Unfusable
        elif keep.value:
            if gradient.id in group.values:
                plan.gradient = self._read(group, plan, gradient.id, space)
                entries = group.values[gradient.id].entries
            else:
                entries = self._entries(group, plan, gradient.id, space)
                plan.gradient = ("read", gradient.id, entries)
                plan.accesses.append((gradient.id, entries, ndim - 1))
            if entries[-1] != ("c", 0):
                raise _Unfusable
        else:
            plan.gradient = self._read(group, plan, gradient.id, space[:-1])
        if not whole and id(value) in self.known_extremes:
            self._plan_known_extreme(group, plan, self.known_extremes[id(value)], space, keep.value)
        target_entries = self._entries(group, plan, name, space, stretch=False)
        plan.op = "argmax" if _call_name(value) == "max_adjoint" else "argmin"
        plan.target = (name, target_entries[:-1] + (("d", ("arg",)),), sign)
        plan.form, plan.level, plan.result_level = "argext", ndim, ndim - 1
        self._write(group, plan, name, plan.target[1], ndim - 1)
        code = f"{self._axis(group, plan, ndim - 1)[1]} > 0"
        plan.guards.append((code, code))

    def _plan_known_extreme(self, group, plan, extreme, space, keep):
        """Read the row's extreme from array ``extreme`` (fusion_facts._known_extremes) where its
        sizes allow: the adjoint then looks for the first element equal to it (or NaN)."""
        dims = self.facts.of(extreme)
        if dims is None or len(dims) != (len(space) if keep else len(space) - 1):
            return
        saved = (list(plan.guards), plan.join_guards, list(plan.accesses), set(plan.values_read))
        try:
            plan.known = self._read(group, plan, extreme, space if keep else space[:-1])
        except _Unfusable:
            plan.guards, plan.join_guards, plan.accesses, plan.values_read = saved
            plan.known = None

    # -- placing a statement in the loop nest -------------------------------------------------
