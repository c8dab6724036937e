"""Stage 4 — analyse the normalized body: kinds, activity and the shape of the code.

* kinds: what each variable holds (see :mod:`srcgrad.kinds`), propagated to a fixpoint;
* activity: a variable is *active* when it depends on a ``wrt`` input (varied) **and** influences
  the result (useful). Only active statements get adjoint code;
* definitions: where each variable is assigned, and whether inside a loop, which decides whether
  the reverse sweep must restore an overwritten value.
"""
import ast
import operator
from dataclasses import dataclass, field

from . import kinds as K
from . import naming as N
from . import rules
from .rules.callees import facts
from .errors import SrcgradError
from .kinds import matmul_kind

BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
          ast.Div: operator.truediv, ast.Pow: operator.pow, ast.Mod: operator.mod,
          ast.MatMult: operator.matmul, ast.FloorDiv: operator.floordiv}

ATTRIBUTE_KINDS = {"shape": None, "T": None, "size": K.INT, "ndim": K.INT, "real": None}


@dataclass
class Analysis:
    kinds: dict = field(default_factory=dict)          # name -> Kind
    active: set = field(default_factory=set)
    varied: set = field(default_factory=set)
    def_sites: dict = field(default_factory=dict)      # name -> number of assignments
    in_loop: set = field(default_factory=set)          # names assigned inside a loop
    operand_uses: dict = field(default_factory=dict)   # name -> number of operand occurrences
    helper_kinds: dict = field(default_factory=dict)   # id(call node) -> callee result kind

    def kind(self, atom):
        if isinstance(atom, ast.Name):
            return self.kinds.get(atom.id, K.FLOAT)
        if isinstance(atom, ast.Tuple):
            return K.tuple_of(self.kind(e) for e in atom.elts)
        if isinstance(atom, ast.Constant):
            return constant_kind(atom.value)
        return K.NONE

    def is_active(self, atom):
        return isinstance(atom, ast.Name) and atom.id in self.active

    def overwritten(self, name):
        return self.def_sites.get(name, 0) > 1 or name in self.in_loop


def constant_kind(value):
    if value is None:
        return K.NONE
    if isinstance(value, str):          # a string argument of a call (mode="constant")
        return K.Kind("str")
    if isinstance(value, bool):
        return K.BOOL
    if isinstance(value, int):
        return K.INT
    return K.FLOAT


def walk_assignments(stmts, loop_depth=0):
    """Yield (statement, loop_depth) for every simple statement, in program order."""
    for stmt in stmts:
        if isinstance(stmt, ast.If):
            yield stmt, loop_depth
            yield from walk_assignments(stmt.body, loop_depth)
            yield from walk_assignments(stmt.orelse, loop_depth)
        elif isinstance(stmt, (ast.For, ast.While)):
            yield stmt, loop_depth
            yield from walk_assignments(stmt.body, loop_depth + 1)
        else:
            yield stmt, loop_depth


def operand_names(node):
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]


class KindInference:
    """Propagate kinds through the normalized body until nothing changes."""

    def __init__(self, fsrc, analysis, helper_kind):
        self.fsrc = fsrc
        self.a = analysis
        self.helper_kind = helper_kind    # callable(callee, arg kinds) -> result kind

    def run(self, body):
        for _ in range(20):
            before = dict(self.a.kinds)
            for stmt, _depth in walk_assignments(body):
                if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                    kind = self.expression(stmt.value, stmt)
                    name = stmt.targets[0].id
                    self.a.kinds[name] = K.join(self.a.kinds.get(name), kind)
                elif isinstance(stmt, ast.Assign):          # a[i] = v can make an int array float
                    target = stmt.targets[0].value.id
                    value = self.a.kind(stmt.value)
                    old = self.a.kinds.get(target)
                    if old is not None and old.is_array and value.is_float and old.dtype != "float":
                        raise self.fsrc.error(stmt, f"writing a float into the {old.dtype} array "
                                              f"{target!r} would truncate it", "dtype")
                elif isinstance(stmt, ast.For):
                    self.a.kinds[stmt.target.id] = K.INT
            if before == self.a.kinds:
                return
        raise SrcgradError("kind inference did not converge")

    def expression(self, node, stmt):
        a = self.a
        if isinstance(node, (ast.Name, ast.Constant)):
            return a.kind(node)
        if isinstance(node, ast.BinOp):
            left, right = a.kind(node.left), a.kind(node.right)
            if left.cls == "tuple" or right.cls == "tuple":
                raise self.fsrc.error(stmt, f"`{ast.unparse(node)}`: arithmetic on a tuple or list "
                                      "(concatenation, repetition) is not supported; use np.array "
                                      "or np.concatenate", "tuple arithmetic")
            if isinstance(node.op, ast.MatMult):
                lowered = getattr(node, "lowered_from", None)
                if lowered is not None and not (left.is_array and left.ndim >= 1 and right.is_array
                                                and 1 <= right.ndim <= 2):
                    raise self.fsrc.error(stmt, f"{lowered} is supported (as `@`) when the first operand "
                                          "is an array and the second has one or two axes; here they "
                                          f"have {left.ndim} and {right.ndim}: use np.einsum or reshapes "
                                          "and `@`", lowered)
                return matmul_kind(left, right)
            if left.is_array or right.is_array:
                dtype = "float" if isinstance(node.op, ast.Div) else None
                return K.broadcast(left, right, dtype=dtype)
            if isinstance(node.op, ast.Div):
                return K.FLOAT
            joined = K.join(left, right)
            return K.INT if joined == K.BOOL else joined
        if isinstance(node, ast.UnaryOp):
            operand = a.kind(node.operand)
            if isinstance(node.op, ast.Not):
                return K.BOOL
            return K.INT if operand == K.BOOL else operand
        if isinstance(node, ast.Compare):
            left, right = a.kind(node.left), a.kind(node.comparators[0])
            return K.broadcast(left, right, dtype="bool")
        if isinstance(node, ast.Tuple):
            return K.tuple_of(a.kind(e) if not isinstance(e, ast.Slice) else K.NONE for e in node.elts)
        if isinstance(node, ast.Attribute):
            base = a.kind(node.value)
            if node.attr == "shape":
                return K.tuple_of([K.INT] * base.ndim)
            if node.attr in ("T", "real"):
                return base
            if node.attr in ("size", "ndim"):
                return K.INT
            raise self.fsrc.error(stmt, f"attribute `.{node.attr}` is not supported", "attribute")
        if isinstance(node, ast.Subscript):
            return self.subscript(node, stmt)
        if isinstance(node, ast.Call):
            return self.call(node, stmt)
        raise self.fsrc.error(stmt, f"cannot type `{ast.unparse(node)}`")

    def subscript(self, node, stmt):
        base = self.a.kind(node.value)
        index = node.slice
        parts = index.elts if isinstance(index, ast.Tuple) else [index]
        if base.cls == "tuple":
            if isinstance(index, ast.Constant) and isinstance(index.value, int):
                return base.items[index.value]
            items = set(base.items)
            return items.pop() if len(items) == 1 else K.FLOAT
        if not base.is_array:
            raise self.fsrc.error(stmt, f"cannot index a {base} value `{ast.unparse(node.value)}`",
                                  "subscript")
        ndim = base.ndim
        consumed = 0
        advanced = []
        for part in parts:
            if isinstance(part, ast.Slice):
                consumed += 1
            elif isinstance(part, ast.Constant) and part.value is None:
                ndim += 1
            else:
                kind = self.a.kind(part)
                consumed += 1
                if kind.is_array:
                    advanced.append(kind.ndim)
                    ndim -= 1
                else:
                    ndim -= 1
        if consumed > base.ndim:
            raise self.fsrc.error(stmt, f"too many indices for a {base.ndim}-d array "
                                  f"`{ast.unparse(node)}`", "subscript")
        if advanced:
            ndim += max(advanced)
        return K.array(ndim, base.dtype)

    def call(self, node, stmt):
        callee = node.callee
        args = [self.a.kind(arg) for arg in node.args]
        if callee == "astype":
            target = node.args[0]
            dtype = "float" if "float" in ast.unparse(target) else "int"
            return K.array(self.a.kind(node.func.value).ndim, dtype)
        if callee == N.RANGE_CONTINUES:
            return K.BOOL
        if callee == "range_length":
            return K.INT
        if callee == "stack_buffer":        # rows for the items of a list (normalize.ListBuilder)
            item = args[1]
            if item.is_array:
                return K.array(item.ndim + 1, item.dtype)
            if not item.is_scalar:
                raise self.fsrc.error(stmt, f"append of a {item} value is not supported (append "
                                      "floats, ints or arrays)", "append")
            return K.array(1, item.cls)
        kw_values = {kw.arg: _constant_or_kind(kw.value, self.a) for kw in node.keywords}
        rule = rules.lookup(callee)
        if getattr(rule, "literal_args", False):      # constant arguments as their values
            args = [_constant_or_kind(arg, self.a) for arg in node.args]
        if rule is not None:
            try:
                return rule.kind(*args, **kw_values)
            except TypeError as exc:
                raise self.fsrc.error(stmt, f"bad arguments to {ast.unparse(node.func)}: {exc}") from None
        known = facts(callee).result_kind
        if known is not None:
            try:
                return known(*args, **kw_values)
            except TypeError as exc:
                raise self.fsrc.error(stmt, f"bad arguments to {ast.unparse(node.func)}: {exc}") from None
        if any(isinstance(arg, ast.Constant) and isinstance(arg.value, str)
               for arg in list(node.args) + [kw.value for kw in node.keywords]):
            raise self.fsrc.error(stmt, f"a string argument to `{ast.unparse(node.func)}` is not "
                                  "supported (strings are accepted by NumPy functions with "
                                  "derivative rules)", "string argument")
        result = self.helper_kind(callee, args, node, stmt)
        self.a.helper_kinds[id(node)] = result
        return result


def _constant_or_kind(node, analysis):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Tuple) and all(isinstance(e, ast.Constant) for e in node.elts):
        return tuple(e.value for e in node.elts)
    return analysis.kind(node)


def analyse(fsrc, params, body, param_kinds, wrt_names, helper_kind):
    """Run kind inference and activity analysis on a normalized body."""
    a = Analysis()
    for name, kind in zip(params, param_kinds):
        a.kinds[name] = kind
    KindInference(fsrc, a, helper_kind).run(body)

    # definition sites and operand counts
    for name in params:
        a.def_sites[name] = 1
    for stmt, depth in walk_assignments(body):
        targets = []
        if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
            targets = [stmt.targets[0].id]
        elif isinstance(stmt, ast.For):
            targets = [stmt.target.id]
        for name in targets:
            a.def_sites[name] = a.def_sites.get(name, 0) + 1
            if depth > 0 or isinstance(stmt, ast.For):
                a.in_loop.add(name)
        if isinstance(stmt, (ast.Assign, ast.Return)):
            for name in operand_names(stmt.value):
                a.operand_uses[name] = a.operand_uses.get(name, 0) + 1

    # varied: depends on a wrt input through float operations
    a.varied = {n for n in wrt_names}
    flows = list(_data_flows(body))
    changed = True
    while changed:
        changed = False
        for target, sources, differentiable in flows:
            if target in a.varied or not differentiable:
                continue
            kind = a.kinds.get(target)
            if kind is not None and not kind.is_float:
                continue
            if any(s in a.varied for s in sources):
                a.varied.add(target)
                changed = True
    # useful: influences the returned value
    ret = body[-1].value
    useful = set(operand_names(ret))
    changed = True
    while changed:
        changed = False
        for target, sources, differentiable in flows:
            if target in useful and differentiable:
                for s in sources:
                    if s not in useful:
                        useful.add(s)
                        changed = True
    a.active = {n for n in a.varied & useful if a.kinds.get(n, K.FLOAT).is_float}
    _refuse_hidden_non_differentiable(fsrc, body, a, useful)
    return a


def _refuse_hidden_non_differentiable(fsrc, body, a, useful):
    """``int(x)`` or ``(x > 0)`` computed from a differentiated input and then used in arithmetic
    that reaches the result: the derivative through it is not defined (or silently zero), so
    refuse rather than return a gradient that ignores it. (Conditions of ``if``/``while``/
    ``np.where`` are fine: they pick a branch, they do not scale a value.)"""
    if fsrc.namespace.get(N.TANGENT_MODULE_FLAG):
        return      # generated tangent code (hvp): its comparisons are masks on purpose
    arithmetic_operands = set()
    for stmt, _depth in walk_assignments(body):
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, (ast.BinOp, ast.UnaryOp)):
            arithmetic_operands |= set(operand_names(stmt.value))
    for stmt, _depth in walk_assignments(body):
        if not (isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)):
            continue
        target, value = stmt.targets[0].id, stmt.value
        varied_inputs = [n for n in operand_names(value) if n in a.varied]
        if not varied_inputs or target not in useful or target not in arithmetic_operands:
            continue
        # a call whose integer/bool result would silently cut the derivative of an input
        if isinstance(value, ast.Call) and facts(value.callee).value_cutting:
            label = ast.unparse(value.func)
        elif isinstance(value, ast.Compare):
            label = "a comparison"
        else:
            continue
        raise fsrc.error(stmt, f"{label} of `{varied_inputs[0]}`, which depends on the differentiated "
                         "inputs, is used in arithmetic: it has no derivative. Use it only as a "
                         "condition (if/while/np.where), or compute it from values that do not "
                         "depend on the inputs", "non-differentiable value")


def _data_flows(body):
    """(target, source names, differentiable?) for every assignment, element writes included."""
    for stmt, _depth in walk_assignments(body):
        if not isinstance(stmt, ast.Assign):
            continue
        target = stmt.targets[0]
        value = stmt.value
        if isinstance(target, ast.Name):
            differentiable = True
            sources = operand_names(value)
            if isinstance(value, ast.Call):
                rule = rules.lookup(value.callee) if not isinstance(value.callee, str) else None
                if isinstance(rule, rules.ZeroDerivative) or _is_nondiff(value.callee):
                    differentiable = False
                if value.callee == "astype":
                    sources = operand_names(value.func)
                if value.callee in ("stack_buffer", "range_length"):    # shapes and counts only
                    differentiable = False
            elif isinstance(value, ast.Subscript):
                sources = [value.value.id] if isinstance(value.value, ast.Name) else []
            elif isinstance(value, (ast.Compare,)) or (isinstance(value, ast.UnaryOp)
                                                      and isinstance(value.op, ast.Not)):
                differentiable = False
            elif isinstance(value, ast.Attribute) and value.attr in ("shape", "size", "ndim"):
                differentiable = False
            yield target.id, sources, differentiable
        else:   # a[i] = v : a now depends on v
            yield target.value.id, operand_names(stmt.value), True


def _is_nondiff(callee):
    known = facts(callee)
    return known.non_differentiable or known.creation
