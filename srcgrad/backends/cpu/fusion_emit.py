"""Loop fusion (cpu target), part 4: writing a fused group's loop nest as statements."""
import ast
import copy

from .fusion_facts import _Block, _backend_has, _call_name, _comment


class _Emitter:
    """Writes a group's loop nest as statements."""

    def __init__(self, fusion, group):
        self.f = fusion
        self.g = group
        self.vars = [fusion.loop_var(u) for u in range(len(group.axes))]
        self.dry = False
        self.huge_pages = _backend_has("huge_pages")
        self.accumulators = 0       # the nest's running reductions named so far
        self.loop = "loop_range" if _backend_has("loop_range") else "range"

    # -- which values are arrays ----------------------------------------------------------------
    def _decide(self):
        g = self.g
        for value in g.values.values():
            uses = self.f.uses.get(value.name, [])
            if any(pos not in g.positions for pos in uses):
                value.materialize = True
        for plan in g.plans:
            if plan.form == "later" and plan.value is not None:
                plan.value.materialize = True
        self.dry = True
        for plan in g.plans:
            if plan.form == "alias":
                continue
            for ir in self._plan_irs(plan):
                self._code(ir, plan.block)
            if plan.gradient is not None:
                self._code(plan.gradient, plan.final_block)
        self.dry = False
        changed = True
        while changed:                       # an alias that is stored needs its base stored
            changed = False
            for value in g.values.values():
                if value.form == "alias" and value.materialize:
                    for base in value.bases:
                        if not g.values[base].materialize:
                            g.values[base].materialize = changed = True
        for value in g.values.values():
            if value.form == "row":          # a running reduction: the nest's next accumulator
                value.scalar = self.f.accumulator(self.accumulators)
                self.accumulators += 1
            elif value.form == "map" and not value.materialize:
                value.scalar = self.f.fresh(value.name + "_e")

    @staticmethod
    def _plan_irs(plan):
        out = [plan.expr] if plan.expr is not None else []
        if plan.known is not None:
            out.append(plan.known)
        if plan.target is not None:
            for entry in plan.target[1]:
                if entry[0] == "d" and entry[1] != ("arg",):
                    out.append(entry[1])
        return out

    # -- expressions ----------------------------------------------------------------------------
    def _index(self, entries, block, plan=None):
        parts = []
        for entry in entries:
            if entry[0] == "ax":
                parts.append(self.vars[entry[1]])
            elif entry[0] == "c":
                parts.append(str(entry[1]))
            elif entry[1] == ("arg",):
                parts.append(plan.index_scalar if plan is not None else "0")
            else:
                parts.append(self._code(entry[1], block))
        return ", ".join(parts)

    def _code(self, ir, block):
        tag = ir[0]
        if tag == "code":
            return ir[1]
        if tag == "read":
            return f"{ir[1]}[{self._index(ir[2], block)}]"
        if tag == "fmt":
            return ir[1].format(*[self._code(arg, block) for arg in ir[2]])
        value = self.g.values[ir[1]]
        if value.form == "alias":
            return self._code(value.expr, block)
        scalar_ok = ir[2] == value.entries and value.scope in block.chain()
        if self.dry:
            if not scalar_ok:
                value.materialize = True
            return ""
        if value.materialize:
            return f"{value.name}[{self._index(ir[2], block)}]"
        return value.scalar

    def _witness(self, ir):
        """A scalar expression of the element's type (its value does not matter)."""
        tag = ir[0]
        if tag == "code":
            return ir[1]
        if tag == "read":
            return f"{ir[1]}.dtype.type(0)"
        if tag == "fmt":
            return ir[1].format(*[self._witness(arg) for arg in ir[2]])
        value = self.g.values[ir[1]]
        if value.form == "alias":
            return self._witness(value.expr)
        if value.materialize:
            return f"{value.name}.dtype.type(0)"
        return self._witness(value.expr)

    def _dtype(self, ir):
        """The element type of ``ir``, as code."""
        if ir[0] == "read":
            return f"{ir[1]}.dtype.type"
        if ir[0] == "val":
            value = self.g.values[ir[1]]
            if value.form == "alias":
                return self._dtype(value.expr)
            if value.materialize:
                return f"{value.name}.dtype.type"
            return self._dtype(value.expr)
        return f"type({self._witness(ir)})"

    def _shape(self, entries):
        sizes = [self.g.axes[e[1]][1] if e[0] == "ax" else "1" for e in entries]
        return "(" + ", ".join(sizes) + ("," if len(sizes) == 1 else "") + ")"

    # -- statements -----------------------------------------------------------------------------
    def _stmts(self, code, lineno=None):
        stmts = ast.parse(code).body
        for stmt in stmts:
            for node in ast.walk(stmt):
                if isinstance(node, (ast.stmt, ast.expr)):
                    node.lineno = node.end_lineno = lineno or 0
                    node.col_offset = node.end_col_offset = 0
        return stmts

    def _plan_code(self, plan, block):
        lineno = getattr(plan.stmt, "lineno", None)
        out = [type(c)(c.text, c.lineno_src) for c in plan.comments]
        out.append(_comment(ast.unparse(plan.stmt).replace("\n", " ")))
        expr = self._code(plan.expr, block) if plan.expr is not None else None
        if plan.form == "map":
            value = plan.value
            if value.materialize:
                code = f"{value.name}[{self._index(value.entries, block)}] = {expr}"
            else:
                code = f"{value.scalar} = {expr}"
        elif plan.form == "update":
            name, entries, sign = plan.target
            code = f"{name}[{self._index(entries, block)}] {sign}= {expr}"
        elif plan.form == "row":
            acc = plan.scalar
            if plan.op == "sum":
                code = f"{acc} += {expr}"
            else:
                compare = "<=" if plan.op == "max" else ">="
                probe = self.f.probe()
                code = (f"{probe} = {expr}\n"
                        f"if {acc} == {acc} and not {probe} {compare} {acc}:\n"
                        f"    {acc} = {probe}")
        elif plan.form == "later":
            entries = plan.value.entries if plan.value is not None else plan.part_entries
            name = plan.value.name if plan.value is not None else plan.part
            code = f"{name}[{self._index(entries, block)}] += {expr}"
        elif plan.known is not None:    # argext, the extreme known: the first element equal to it
            probe, at = self.f.probe(), self.vars[plan.level - 1]
            code = (f"{probe} = {expr}\n"
                    f"if {at} < {plan.index_scalar} and ({probe} == {self._code(plan.known, block)} "
                    f"or {probe} != {probe}):\n"
                    f"    {plan.index_scalar} = {at}")
        else:   # argext
            compare = "<=" if plan.op == "argmax" else ">="
            probe = self.f.probe()
            code = (f"{probe} = {expr}\n"
                    f"if {plan.scalar} == {plan.scalar} and not {probe} {compare} {plan.scalar}:\n"
                    f"    {plan.scalar} = {probe}\n"
                    f"    {plan.index_scalar} = {self.vars[plan.level - 1]}")
        return out + self._stmts(code, lineno)

    def _init_code(self, plan):
        if plan.form == "argext" and plan.known is not None:
            # one compare per element, no chain of them: the first element equal to the extreme
            # (np.argmax's first one among ties), or the first NaN where the extreme is NaN; it
            # is there, so the search starts from the last element
            size = self.g.axes[plan.level - 1][1]
            note = ("the row's first element equal to its extreme (the first NaN where that is "
                    "NaN), found without the arg-extreme loop's chain of compares")
            return [_comment(note)] + self._stmts(f"{plan.index_scalar} = {size} - 1")
        start = {"sum": "0", "max": "-np.inf", "min": "np.inf", "argmax": "-np.inf", "argmin": "np.inf"}
        code = f"{plan.scalar} = {self._dtype(plan.expr)}({start[plan.op]})"
        if plan.form == "argext":
            code += f"\n{plan.index_scalar} = 0"
        return self._stmts(code)

    def _final_code(self, plan, block):
        lineno = getattr(plan.stmt, "lineno", None)
        if plan.form == "argext":
            name, entries, sign = plan.target
            code = f"{name}[{self._index(entries, block, plan)}] {sign}= {self._code(plan.gradient, block)}"
        elif plan.value is not None and plan.value.total:
            code = f"{plan.value.name} = {plan.scalar}"
        elif plan.value is not None:
            if not plan.value.materialize:
                return []
            code = f"{plan.value.name}[{self._index(plan.value.entries, block)}] = {plan.scalar}"
        else:
            name, entries, sign = plan.target
            code = f"{name}[{self._index(entries, block)}] {sign}= {plan.scalar}"
        return self._stmts(code, lineno)

    def _block_code(self, block):
        out = []
        for item in block.items:
            if isinstance(item, _Block):
                body = self._block_code(item)
                axis = item.level - 1
                loop = self._stmts(f"for {self.vars[axis]} in {self.loop}({self.g.axes[axis][1]}):\n"
                                   "    pass")[0]
                loop.body = body or loop.body
                out.append(loop)
            elif item[0] == "plan":
                out += self._plan_code(item[1], block)
            elif item[0] == "init":
                out += self._init_code(item[1])
            else:
                out += self._final_code(item[1], block)
        return out

    def emit(self):
        g = self.g
        self._decide()
        before, after = [], []
        for plan in g.plans:
            value = plan.value
            if plan.form in ("row", "argext"):
                if value is not None:
                    plan.scalar = value.scalar
                elif plan.known is not None:
                    pass            # no running extreme: it is known
                else:
                    plan.scalar = self.f.accumulator(self.accumulators)
                    self.accumulators += 1
                if plan.form == "argext":
                    plan.index_scalar = self.f.fresh("_best_index")
            if value is not None and value.materialize and value.form in ("map", "row") and \
                    not value.total:
                fresh = f"np.empty({self._shape(value.entries)}, {self._dtype(value.expr)})"
                if self.huge_pages:      # large arrays on huge pages, as NumPy allocates them
                    fresh = f"huge_pages({fresh})"
                before += self._stmts(f"{value.name} = {fresh}")
            if plan.form == "later":
                if value is not None:
                    before += self._stmts(f"{value.name} = np.zeros({self._shape(value.entries)}, "
                                          f"{self._dtype(plan.expr)})")
                else:
                    plan.part = self.f.fresh(plan.target[0] + "_part")
                    before += self._stmts(f"{plan.part} = np.zeros({self._shape(plan.part_entries)}, "
                                          f"{self._dtype(plan.expr)})")
                    update = ast.AugAssign(target=copy.deepcopy(plan.stmt.target), op=plan.stmt.op,
                                           value=ast.Name(id=plan.part, ctx=ast.Load()))
                    after.append(ast.copy_location(update, plan.stmt))
            if plan.form == "alias" and value.materialize:
                stmt = copy.deepcopy(plan.stmt)
                if _call_name(stmt.value) == "unbroadcast" and isinstance(stmt.value.args[0], ast.Name):
                    # the sizes are equal in this nest: NumPy's result is the gradient itself
                    stmt.value = stmt.value.args[0]
                after.append(stmt)
        fused = before + self._block_code(g.root) + after
        count = len(g.plans)
        if not g.guards:
            return [_comment(f"loop fusion (cpu target): {count} statements in one loop nest")] + fused
        test = " and ".join(code for _, code in g.guards)
        if not self.f.fallback:
            # no else: a failing size test (an operand stretched along a size-1 axis, or sizes
            # that do not match) raises, and the call reruns with the fallback's specialization
            check = self._positionless(ast.parse(f"if not ({test}):\n    raise FusionGuardFailed("
                                                 f"'fused loop sizes: rerun with the fallback')").body[0])
            note = (f"loop fusion (cpu target): {count} statements in one loop nest when the sizes "
                    "allow (otherwise FusionGuardFailed, and the call reruns with a specialization "
                    "that has the statements as written)")
            return [_comment(note), check] + fused
        branch = self._positionless(ast.If(test=ast.parse(test, mode="eval").body, body=fused,
                                           orelse=_shared_array_ops(g.stmts, self.f.kind_is_array)))
        note = (f"loop fusion (cpu target): the {count} statements under else: in one loop nest, "
                "when the sizes allow")
        return [_comment(note), branch]

    @staticmethod
    def _positionless(branch):
        """``branch`` (an ``if``) and its test (and a raise under it) without source positions:
        they are srcgrad's, not a user line's."""
        raises = [n for stmt in branch.body if isinstance(stmt, ast.Raise) for n in ast.walk(stmt)]
        for node in [branch] + list(ast.walk(branch.test)) + raises:
            node.lineno = node.end_lineno = 0
            node.col_offset = node.end_col_offset = 0
        return branch


OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def _shared_array_ops(stmts, is_array):
    """The fallback statements with each ``+ - * /`` on an array as ``array_op("*", a, b)``: the
    same operation, but one compiled function per operator and operand types instead of a
    broadcasting loop nest written into the function at each one (issue 17: most of the code of an
    adjoint whose size tests can fail). Operands of unknown kind stay as written."""
    if not _backend_has("array_op"):
        return list(stmts)

    def array(node):
        if isinstance(node, ast.Name):
            return is_array(node.id)
        return isinstance(node, ast.Call) and _call_name(node) == "array_op"

    class Shared(ast.NodeTransformer):
        def visit_BinOp(self, node):
            self.generic_visit(node)
            op = OPERATORS.get(type(node.op))
            if op is None or not (array(node.left) or array(node.right)):
                return node
            call = ast.Call(func=ast.Name(id="array_op", ctx=ast.Load()),
                            args=[ast.Constant(op), node.left, node.right], keywords=[])
            return ast.copy_location(call, node)
    return [Shared().visit(copy.deepcopy(stmt)) for stmt in stmts]
