"""Vector (batched) forward mode: several tangent directions in one sweep.

Input: the statements of a generated jvp (:mod:`srcgrad.forward`, after lowering) and the kinds of
its tangents. Output: the same function taking ``BATCH`` directions at once — each float tangent
becomes ``BATCH`` float variables (one per direction: registers, no memory traffic, which the
compiler packs into SIMD operations) and each array tangent gains a trailing direction axis
(``x.shape + (BATCH,)``: one element's directions are contiguous) — and each tangent statement is
written once per direction::

    _dot_t8 = _dot_t6 * _t7 + _t6 * _dot_t7             # one direction
    _dot_t8__d0 = _dot_t6__d0 * _t7 + _t6 * _dot_t7__d0   # eight, sharing the primal statements
    ...
    _dot_t8__d7 = _dot_t6__d7 * _t7 + _t6 * _dot_t7__d7

The primal statements (and the calls of a tangent that read no tangent, ``np.cos(x)`` of sin's)
run once for all the directions. hessian/jacobian drivers sweep the basis vectors in
chunks of ``BATCH`` (zero directions pad the last chunk).

The batched subset: float tangents, element reads and writes of array tangents, arrays created
with zero tangents, the control flow as written. Anything else — an array-valued tangent
statement, a helper's tangent function, tuples — raises :class:`NotBatched`, and the caller keeps
its one-direction-per-sweep driver (correct for the whole forward-mode subset).
"""
import ast
import copy

from .normalize import name_load

BATCH = 8            # directions per sweep (like ForwardDiff's chunks): a few SIMD registers


class NotBatched(Exception):
    """A construct the batched transformation does not vectorize (the caller falls back)."""


def _reads(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _index_elements(index):
    return list(index.elts) if isinstance(index, ast.Tuple) else [index]


class Batcher:
    """Rewrites one jvp function's statements for ``BATCH`` directions.

    ``tangent_kinds``: tangent name -> the kind of its primal value; ``kinds``: the primal kinds
    (for index expressions); ``dtype``: the working float dtype's name (``"float64"``)."""

    def __init__(self, tangent_kinds, kinds, dtype, taken):
        self.kinds = kinds
        self.dtype = dtype
        self.taken = taken           # every name the function uses (the per-direction names avoid them)
        self.scalars = {n for n, k in tangent_kinds.items() if k.is_scalar}
        self.arrays = {n: k for n, k in tangent_kinds.items() if k.is_array}
        if len(self.scalars) + len(self.arrays) != len(tangent_kinds):
            raise NotBatched("a tuple tangent")
        self.hoisted = 0             # direction-invariant calls moved out of the direction statements

    def lane(self, name, k):
        """Direction ``k``'s float variable of the float tangent ``name``."""
        lane = f"{name}__d{k}"
        if lane in self.taken:
            raise NotBatched(f"the name {lane} is taken")
        return lane

    # -- the function ------------------------------------------------------------------------------
    def function(self, stmts, tangent_params):
        """The statements for ``BATCH`` directions (float tangent arguments unpacked first)."""
        *body, tail = stmts
        if not (isinstance(tail, ast.Return) and isinstance(tail.value, ast.Tuple) and len(tail.value.elts) == 2):
            raise NotBatched("the jvp does not return (value, tangent)")
        like = stmts[0]
        head = []
        for name in tangent_params:
            if name in self.scalars:     # the caller's directions, one float each
                head += [_assign(self.lane(name, k), ast.Subscript(value=name_load(name), slice=ast.Constant(k),
                                                                   ctx=ast.Load()), like) for k in range(BATCH)]
        body = self.block(body)
        value, tangent = tail.value.elts
        result, tangent = self.result(tangent, tail)
        tail = ast.copy_location(ast.Return(value=ast.Tuple(elts=[value, tangent], ctx=ast.Load())), tail)
        return head + body + result + [tail]

    def result(self, tangent, like):
        """(statements, expression): the result's tangent for all the directions."""
        if isinstance(tangent, ast.Name) and tangent.id in self.arrays:
            return [], tangent
        if isinstance(tangent, ast.Name) and tangent.id in self.scalars or isinstance(tangent, ast.Constant):
            out = "_dot_result_batch"
            stmts = [_assign(out, ast.parse(f"np.empty({BATCH}, dtype=np.{self.dtype})", mode="eval").body, like)]
            for k in range(BATCH):
                slot = ast.Subscript(value=name_load(out), slice=ast.Constant(k), ctx=ast.Store())
                stmts.append(ast.copy_location(ast.Assign(targets=[slot], value=self.expr(tangent, k)), like))
            return stmts, name_load(out)
        zeros = _zeros_like(tangent)
        if zeros is not None:
            return [], self.zeros(zeros)
        raise NotBatched(f"result tangent `{ast.unparse(tangent)}`")

    def zeros(self, like):
        return ast.parse(f"np.zeros({ast.unparse(like)}.shape + ({BATCH},), dtype={ast.unparse(like)}.dtype)",
                         mode="eval").body

    # -- statements ----------------------------------------------------------------------------------
    def block(self, stmts):
        out = []
        for stmt in stmts:
            out.extend(self.statement(stmt))
        return out

    def statement(self, stmt):
        tangents = self.scalars | set(self.arrays)
        if isinstance(stmt, ast.If):
            self._primal_only(stmt.test)
            return [ast.copy_location(ast.If(test=stmt.test, body=self.block(stmt.body) or [ast.Pass()],
                                             orelse=self.block(stmt.orelse)), stmt)]
        if isinstance(stmt, ast.For):
            self._primal_only(stmt.iter)
            return [ast.copy_location(ast.For(target=stmt.target, iter=stmt.iter,
                                              body=self.block(stmt.body) or [ast.Pass()], orelse=[]), stmt)]
        if isinstance(stmt, ast.While):
            self._primal_only(stmt.test)
            return [ast.copy_location(ast.While(test=stmt.test, body=self.block(stmt.body) or [ast.Pass()],
                                                orelse=[]), stmt)]
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0]
            if isinstance(target, ast.Name):
                name = target.id
                if name in self.arrays:
                    return [self.array_tangent(stmt, name)]
                if name in self.scalars or _reads(stmt.value) & tangents:
                    kind = self.kinds.get(name)
                    if name not in self.scalars and (kind is None or not kind.is_scalar):
                        raise NotBatched(f"`{ast.unparse(stmt)}`: an array computed from tangents")
                    self.scalars.add(name)
                    hoisted, value = self.hoist(stmt.value, stmt)
                    return hoisted + [_assign(self.lane(name, k), self.expr(value, k), stmt) for k in range(BATCH)]
                return [stmt]
            if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and \
                    target.value.id in self.arrays:
                hoisted, value = self.hoist(stmt.value, stmt)
                return hoisted + [ast.copy_location(ast.Assign(targets=[self.element(target, k, ast.Store())],
                                                               value=self.expr(value, k)), stmt)
                                  for k in range(BATCH)]
        self._primal_only(stmt)
        return [stmt]

    def _primal_only(self, node):
        names = (self.scalars | set(self.arrays)) & {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        if names:
            raise NotBatched(f"`{ast.unparse(node).splitlines()[0]}` uses the tangents {sorted(names)}")

    def array_tangent(self, stmt, name):
        """A whole array tangent: zeros for a new array, or another array tangent (copied)."""
        value = stmt.value
        like = _zeros_like(value)
        if like is not None:
            self._primal_only(like)
            return _assign(name, self.zeros(like), stmt)
        # a copy of (or the same array as, where the one-direction code shares it) another array
        # tangent: the same statement on the arrays with the direction axis
        source = value.args[0] if isinstance(value, ast.Call) and ast.unparse(value.func) == "np.copy" and \
            len(value.args) == 1 and not value.keywords else value
        if isinstance(source, ast.Name) and source.id in self.arrays and \
                self.arrays[source.id].ndim == self.arrays[name].ndim:
            return stmt
        raise NotBatched(f"`{ast.unparse(stmt)}`: an array-valued tangent statement")

    def hoist(self, value, stmt):
        """(assignments, value): the calls in ``value`` that read no tangent (``np.cos(x)`` of the
        tangent of sin) computed once, not once per direction."""
        hoisted = []
        outer = self
        tangents = self.scalars | set(self.arrays)

        class Hoist(ast.NodeTransformer):
            def visit_Call(self, call):
                if _reads(call) & tangents:
                    self.generic_visit(call)
                    return call
                outer.hoisted += 1
                name = f"_batch_h{outer.hoisted}"
                if name in outer.taken:
                    raise NotBatched(f"the name {name} is taken")
                hoisted.append(_assign(name, call, stmt))
                return name_load(name)
        value = Hoist().visit(copy.deepcopy(value))
        return hoisted, value

    # -- expressions -----------------------------------------------------------------------------------
    def element(self, node, k, ctx):
        """``_dot_a[i, j]`` -> ``_dot_a[i, j, k]``: one element of an array tangent (never a row or
        a slice: those are array-valued tangents)."""
        name = node.value.id
        index = _index_elements(node.slice)
        if len(index) != self.arrays[name].ndim or not all(self._scalar_index(e) for e in index):
            raise NotBatched(f"`{ast.unparse(node)}`: not one element")
        return ast.Subscript(value=name_load(name),
                             slice=ast.Tuple(elts=[copy.deepcopy(e) for e in index] + [ast.Constant(k)],
                                             ctx=ast.Load()), ctx=ctx)

    def _scalar_index(self, node):
        if isinstance(node, ast.Slice) or _reads(node) & (self.scalars | set(self.arrays)):
            return False
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
                kind = self.kinds.get(n.id)
                if kind is None or not kind.is_scalar:
                    return False
            elif isinstance(n, (ast.Call, ast.Subscript, ast.Attribute, ast.List, ast.Tuple)):
                return False
        return True

    def expr(self, node, k):
        """``node`` for direction ``k``."""
        outer = self

        class Rewrite(ast.NodeTransformer):
            def visit_Subscript(self, sub):
                if isinstance(sub.value, ast.Name) and sub.value.id in outer.arrays:
                    return outer.element(sub, k, ast.Load())
                self.generic_visit(sub)
                return sub

            def visit_Name(self, name):
                if name.id in outer.scalars:
                    return name_load(outer.lane(name.id, k))
                if name.id in outer.arrays:
                    raise NotBatched(f"a whole array tangent `{name.id}` in an expression")
                return name
        return Rewrite().visit(copy.deepcopy(node))


def _zeros_like(node):
    """``x`` of ``np.zeros_like(x)`` (a zero tangent), else None."""
    if isinstance(node, ast.Call) and ast.unparse(node.func) == "np.zeros_like" and len(node.args) == 1 \
            and not node.keywords:
        return node.args[0]
    return None


def _assign(name, value, like):
    return ast.copy_location(ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())], value=value), like)


def batch_statements(stmts, tangent_kinds, kinds, tangent_params, dtype):
    """The jvp's statements for ``BATCH`` directions; raises :class:`NotBatched`."""
    taken = {n.id for n in ast.walk(ast.Module(body=list(stmts), type_ignores=[])) if isinstance(n, ast.Name)}
    return Batcher(tangent_kinds, kinds, dtype, taken).function(copy.deepcopy(stmts), tangent_params)


def add_batched(base, unit, name, params, body, analysis, transformer, wrt):
    """Add ``<name>_batch``, the jvp ``name`` for BATCH directions, to the module ``base`` builds;
    (its name, None), or (None, why not) where the code has a construct this does not vectorize."""
    from . import codegen
    from .program import user_lines
    try:
        stmts = batch_statements(body, transformer.tangent_kinds, analysis.kinds,
                                 [transformer.tan(p) for p in wrt], base.precision)
    except NotBatched as why:
        return None, str(why)
    doc = (f"{name} for {BATCH} directions at once: each float tangent is {BATCH} floats (one per "
           f"direction), each array tangent has a trailing axis of {BATCH};\n    the primal statements "
           "run once.\n    ")
    base.add_source(unit, *codegen.function_source_and_lines(
        f"{name}_batch", params, stmts, docstring=doc, user_lines=user_lines(unit.fsrc)))
    return f"{name}_batch", None


# jacobian(f) by forward mode, one array argument and an array result: BATCH basis vectors per
# sweep of the batched jvp, all the sweeps in one call (zero directions pad the last chunk)
JACOBIAN_CHUNKS = """{decorator}def _srcgrad_jacobian_columns({params}):
    \"\"\"The Jacobian w.r.t. {x} (shape: the result's + {x}'s): {batch} basis vectors of {x} per
    sweep of {batched}, all the sweeps in this call.\"\"\"
    _n = {x}.size
    _E = np.zeros((_n, {batch}), dtype={x}.dtype)
    _w = min(_n, {batch})
    for _k in range(_w):
        _E[_k, _k] = 1.0
    _value, _first = {batched}({params}, _E.reshape({x}.shape + ({batch},)))
    _m = _first.size // {batch}
    _J = np.empty((_m, _n), dtype=_first.dtype)
    _J[:, :_w] = np.ascontiguousarray(_first).reshape((_m, {batch}))[:, :_w]
    for _c in range({batch}, _n, {batch}):
        _E[:, :] = 0.0
        _w = min(_n - _c, {batch})
        for _k in range(_w):
            _E[_c + _k, _k] = 1.0
        _value, _chunk = {batched}({params}, _E.reshape({x}.shape + ({batch},)))
        _J[:, _c:_c + _w] = np.ascontiguousarray(_chunk).reshape((_m, {batch}))[:, :_w]
    return _J.reshape(np.shape(_value) + {x}.shape)
"""


__all__ = ["BATCH", "JACOBIAN_CHUNKS", "NotBatched", "add_batched", "batch_statements"]
