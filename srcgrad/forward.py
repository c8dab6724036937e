"""Stage 6, forward mode — the tangent transformation (beside :mod:`srcgrad.transform`).

Input: the same normalized body and :class:`~srcgrad.analyse.Analysis` the reverse mode uses.
Output: one function that runs the primal code with a tangent statement after (or, when the
statement overwrites one of its own operands, before) each active assignment::

    _t1 = math.sin(b)                 # primal
    _dot_t1 = _dot_b * np.cos(b)      # tangent, from the rule's tangent template

Control flow is kept as written (``if``, ``for``, ``while`` and the flags that replaced
``break``/``continue``/``return``): the tangent of a value is computed right where the value is,
so forward mode needs no tape. Each active variable ``v`` has a tangent ``_dot_v`` of its kind; an
active variable assigned something that does not vary gets a zero tangent. Helpers called with
varying arguments get their own tangent functions (``helper_jvp`` returns value and tangent).
"""
import ast
import copy
import operator

import numpy as np

from . import kinds as K
from . import rules
from .analyse import BINOPS, operand_names
from .errors import SrcgradError
from .forward_products import square_tangent
from .normalize import assign, name_load, name_store
from .transform import _Comment, _hashable, _in, simplify


def tangent_name(name, generated=frozenset()):
    """The tangent's variable name: ``x`` -> ``_dot_x``; srcgrad's temporary ``_t3`` -> ``_dot_t3``."""
    if name in generated:
        return "_dot" + name
    return "_dot_" + name


class ForwardTransformer:
    def __init__(self, fsrc, params, body, analysis, names, helper_jvp):
        self.fsrc = fsrc
        self.params = params
        self.body = body
        self.a = analysis
        self.names = names
        self.helper_jvp = helper_jvp     # callable(callee, arg kinds, active positions, stmt) -> name
        self.tangent_kinds = {}          # tangent name -> kind (for lowering)
        # arrays written by index anywhere: their tangents must not share memory with another
        # tangent unless the primal arrays do too
        self.written = {node.targets[0].value.id for node in ast.walk(ast.Module(body=body, type_ignores=[]))
                        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript)
                        and isinstance(node.targets[0].value, ast.Name)}

    def tan(self, name):
        tangent = tangent_name(name, self.names.generated)
        self.tangent_kinds.setdefault(tangent, self.a.kinds.get(name, K.FLOAT))
        return tangent

    # -- the whole function ---------------------------------------------------------------------
    def run(self):
        """(statements, result atom, result tangent expression)."""
        stmts = self.block(self.body[:-1])
        result = self.body[-1].value
        if self.a.is_active(result):
            tangent = name_load(self.tan(result.id))
        else:
            tangent = self.zero(result, self.a.kind(result), self.body[-1])
        return stmts, result, tangent

    def block(self, stmts):
        out = []
        outer = getattr(self, "context", None)
        for k, stmt in enumerate(stmts):
            self.context = (stmts, k)        # (for scaled_square: the statements before this one)
            out.extend(self.statement(stmt))
        self.context = outer
        return out

    def statement(self, stmt):
        if isinstance(stmt, ast.Pass):
            return [stmt]
        if isinstance(stmt, (ast.Assert, ast.Expr)):     # assert / print: the primal only
            return [stmt]
        if isinstance(stmt, ast.Assign):
            return self.assignment(stmt)
        if isinstance(stmt, ast.If):
            return [ast.copy_location(ast.If(test=stmt.test, body=self.block(stmt.body) or [ast.Pass()],
                                             orelse=self.block(stmt.orelse)), stmt)]
        if isinstance(stmt, ast.For):
            return [ast.copy_location(ast.For(target=stmt.target, iter=stmt.iter,
                                              body=self.block(stmt.body) or [ast.Pass()], orelse=[]), stmt)]
        if isinstance(stmt, ast.While):
            return [ast.copy_location(ast.While(test=stmt.test, body=self.block(stmt.body) or [ast.Pass()],
                                                orelse=[]), stmt)]
        raise SrcgradError(f"forward transform: unexpected statement {type(stmt).__name__}")

    def zero(self, like, kind, stmt):
        """A zero tangent for a value of ``kind`` (``like`` names the value, for array shapes)."""
        if kind.cls == "tuple":
            parts = [ast.Subscript(value=copy.deepcopy(like), slice=ast.Constant(k), ctx=ast.Load())
                     for k in range(len(kind.items))]
            return ast.Tuple(elts=[self.zero(p, item, stmt) for p, item in zip(parts, kind.items)],
                             ctx=ast.Load())
        if kind.is_array:
            return ast.Call(func=ast.Attribute(value=name_load("np"), attr="zeros_like", ctx=ast.Load()),
                            args=[copy.deepcopy(like)], keywords=[])
        return ast.Constant(0.0)

    def tangent_of(self, atom, kind, stmt):
        """The tangent of an atom (its ``_dot_`` variable, or a zero)."""
        if self.a.is_active(atom):
            return name_load(self.tan(atom.id))
        return self.zero(atom, kind, stmt)

    # -- assignments ---------------------------------------------------------------------------
    def assignment(self, stmt):
        target = stmt.targets[0]
        if isinstance(target, ast.Subscript):
            array = target.value.id
            if array not in self.a.active:
                return [stmt]
            slot = ast.Subscript(value=name_load(self.tan(array)), slice=copy.deepcopy(target.slice),
                                 ctx=ast.Store())
            value = name_load(self.tan(stmt.value.id)) if self.a.is_active(stmt.value) else ast.Constant(0.0)
            return [stmt, assign(slot, value, stmt)]
        name = target.id
        if name not in self.a.active:
            return [stmt]
        value = stmt.value
        if isinstance(value, ast.Call) and self._is_helper_call(value) and \
                any(self.a.is_active(arg) for arg in value.args):
            return self.helper_call(stmt, name, value)
        pre, tangent = self.tangent_expr(stmt, name, value)
        if self.a.kinds.get(name, K.FLOAT).is_array and not isinstance(value, ast.Name) and \
                isinstance(tangent, (ast.Name, ast.Attribute, ast.Subscript)):
            # `y = x + 0.0` has the tangent `_dot_x` itself: copy it when either array is written
            # by index later (the primal y is a new array, so the tangents must not alias)
            base = tangent
            while isinstance(base, (ast.Attribute, ast.Subscript)):
                base = base.value
            sources = {n for n in operand_names(value)}
            if name in self.written or (sources & self.written) or \
                    (isinstance(base, ast.Name) and base.id in {self.tan(n) for n in self.written}):
                tangent = ast.Call(func=ast.Attribute(value=name_load("np"), attr="copy", ctx=ast.Load()),
                                   args=[tangent], keywords=[])
        tangent_stmt = assign(self.tan(name), tangent, stmt)
        uses_result = any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(tangent))
        overwrites_operand = name in operand_names(value)
        if overwrites_operand and uses_result:
            # `s = f(s)` whose tangent needs both the old s and the new value: compute the new
            # value into a temporary first
            fresh = self.names.fresh("new")
            self.a.kinds.setdefault(fresh, self.a.kinds.get(name, K.FLOAT))
            _rename(tangent_stmt.value, name, fresh)
            for p in pre:
                _rename(p.value, name, fresh)
            return [assign(fresh, value, stmt)] + pre + [tangent_stmt, assign(name, name_load(fresh), stmt)]
        if overwrites_operand:
            return pre + [tangent_stmt, stmt]
        return [stmt] + pre + [tangent_stmt]

    def _is_helper_call(self, call):
        callee = getattr(call, "callee", None)
        if callee is None or isinstance(callee, str):
            return False
        if rules.lookup(callee) is not None or _in(callee, rules.CREATION) or \
                _in(callee, rules.NON_DIFFERENTIABLE) or \
                (_hashable(callee) and callee in rules.TUPLE_ARGUMENT_RULES):
            return False
        from .program import is_helper
        return is_helper(callee)

    def tangent_expr(self, stmt, name, value):
        """(temporaries, tangent expression) of ``name = value``."""
        kind = self.a.kinds.get(name, K.FLOAT)
        if isinstance(value, (ast.Name, ast.Constant)):
            return [], self.tangent_of(value, kind, stmt) if self.a.is_active(value) else \
                self.zero(name_load(name), kind, stmt)
        if isinstance(value, ast.BinOp):
            square = square_tangent(self, value)        # x * x, (c * v) * v: forward_products
            if square is not None:
                return [], square
            op = BINOPS.get(type(value.op))
            return self.apply_rule(rules.lookup(op), name, [value.left, value.right], {}, stmt,
                                   ast.unparse(value))
        if isinstance(value, ast.UnaryOp):
            if isinstance(value.op, ast.USub):
                return self.apply_rule(rules.lookup(operator.neg), name, [value.operand], {}, stmt, "-")
            if isinstance(value.op, ast.UAdd):
                return [], self.tangent_of(value.operand, kind, stmt)
            return [], self.zero(name_load(name), kind, stmt)
        if isinstance(value, ast.Call):
            return self.call(stmt, name, value)
        if isinstance(value, ast.Tuple):
            return [], ast.Tuple(elts=[self.tangent_of(e, self.a.kind(e), stmt) for e in value.elts],
                                 ctx=ast.Load())
        if isinstance(value, ast.Subscript):
            base = value.value
            if not self.a.is_active(base):
                return [], self.zero(name_load(name), kind, stmt)
            # the same element, row, slice or gather of the tangent (of a tuple: its component)
            return [], ast.Subscript(value=name_load(self.tan(base.id)), slice=copy.deepcopy(value.slice),
                                     ctx=ast.Load())
        if isinstance(value, ast.Attribute) and value.attr in ("T", "real"):
            if not self.a.is_active(value.value):
                return [], self.zero(name_load(name), kind, stmt)
            return [], ast.Attribute(value=name_load(self.tan(value.value.id)), attr=value.attr,
                                     ctx=ast.Load())
        if isinstance(value, (ast.Compare, ast.Attribute)):
            return [], self.zero(name_load(name), kind, stmt)
        raise self.fsrc.error(stmt, f"cannot differentiate `{ast.unparse(value)}` in forward mode")

    def call(self, stmt, name, call):
        callee = call.callee
        kind = self.a.kinds.get(name, K.FLOAT)
        if callee == "astype":          # x.astype(dtype): the tangent converted the same way
            base = call.func.value
            if not self.a.is_active(base):
                return [], self.zero(name_load(name), kind, stmt)
            new = copy.deepcopy(call)
            new.func.value = name_load(self.tan(base.id))
            return [], new
        if _hashable(callee) and callee in rules.TUPLE_ARGUMENT_RULES and call.args and \
                isinstance(call.args[0], ast.Tuple):
            # np.concatenate / np.stack are linear: the same call on the parts' tangents
            new = copy.deepcopy(call)
            new.args[0] = ast.Tuple(elts=[self.tangent_of(e, self.a.kind(e), stmt) for e in call.args[0].elts],
                                    ctx=ast.Load())
            return [], new
        if _hashable(callee) and callee in rules.TUPLE_ARGUMENT_RULES and call.args and \
                isinstance(call.args[0], ast.Name) and self.a.kind(call.args[0]).cls == "tuple":
            new = copy.deepcopy(call)        # of a tuple (or list) variable: of its tangent
            new.args[0] = self.tangent_of(call.args[0], self.a.kind(call.args[0]), stmt)
            return [], new
        if callee == "stack_buffer":     # the array of a list built with append: zero rows,
            return [], self.zero(name_load(name), kind, stmt)     # set by the element writes
        if (callee is np.array or callee is np.asarray) and call.args:
            return [], self.array_literal_tangent(call, kind, stmt)
        # (elements of tuple arguments count: a call without a rule for them is refused below,
        # never given a zero tangent)
        active_args = [arg for arg in call.args if self.a.is_active(arg)] + \
                      [kw.value for kw in call.keywords if self.a.is_active(kw.value)] + \
                      [e for arg in call.args if isinstance(arg, ast.Tuple) for e in arg.elts
                       if self.a.is_active(e)]
        label = ast.unparse(call.func)
        rule = rules.lookup(callee) if not isinstance(callee, str) else None
        if not active_args or isinstance(rule, rules.ZeroDerivative) or _in(callee, rules.CREATION):
            return [], self.zero(name_load(name), kind, stmt)
        if any(isinstance(arg, ast.Tuple) and any(self.a.is_active(e) for e in arg.elts) for arg in call.args):
            raise self.fsrc.error(stmt, f"`{label}` receives a tuple of values that depend on the "
                                  "differentiated inputs, and srcgrad has no derivative rule for that",
                                  "tuple argument")
        if rule is not None:
            keywords = {kw.arg: kw.value for kw in call.keywords}
            return self.apply_rule(rule, name, list(call.args), keywords, stmt, label)
        if _in(callee, rules.NON_DIFFERENTIABLE):
            raise self.fsrc.error(stmt, f"`{label}(...)` has no derivative, but its argument "
                                  f"`{ast.unparse(active_args[0])}` depends on the differentiated "
                                  "inputs", "non-differentiable call")
        raise SrcgradError(
            f"{self.fsrc.filename}:{stmt.lineno}: no derivative rule for `{label}`. Register one "
            f"with @srcgrad.register_adjoint({label}) (and @srcgrad.register_tangent for forward mode)")

    def array_literal_tangent(self, call, kind, stmt):
        """np.array / np.asarray is linear: a literal of the items' tangents (stacked when they
        are arrays), the tangent of a tuple variable, or the tangent of an array."""
        items = call.args[0]
        if isinstance(items, ast.Tuple):
            item_kinds = [self.a.kind(e) for e in items.elts]
            parts = ast.Tuple(elts=[self.tangent_of(e, k, stmt) for e, k in zip(items.elts, item_kinds)],
                              ctx=ast.Load())
        elif self.a.kind(items).cls == "tuple":
            item_kinds = list(self.a.kind(items).items)
            parts = self.tangent_of(items, self.a.kind(items), stmt)
        else:
            return self.tangent_of(items, self.a.kind(items), stmt)
        if item_kinds and all(k.is_array for k in item_kinds):
            new = ast.Call(func=ast.Attribute(value=name_load("np"), attr="stack", ctx=ast.Load()),
                           args=[parts], keywords=[])
            new.callee = np.stack
            return new
        new = ast.Call(func=ast.Attribute(value=name_load("np"), attr="array", ctx=ast.Load()),
                       args=[parts], keywords=[])
        new.callee = np.array
        return new

    def helper_call(self, stmt, name, call):
        """``r = helper(a, b)`` → ``r, _dot_r = helper_jvp(a, b, _dot_a)`` (tangents of the varying
        float arguments only)."""
        kinds = [self.a.kind(arg) for arg in call.args]
        active = tuple(k for k, arg in enumerate(call.args) if self.a.is_active(arg))
        jvp = self.helper_jvp(call.callee, kinds, active, stmt)
        args = list(call.args) + [name_load(self.tan(call.args[k].id)) for k in active]
        new = ast.Call(func=name_load(jvp), args=args, keywords=[])
        kind = self.a.kinds.get(name, K.FLOAT)
        if kind.cls == "tuple":         # (values..., tangents...) flat: see ForwardBuilder.jvp
            both = self.names.fresh("jvp")
            count = len(kind.items)

            def parts(start):
                return ast.Tuple(elts=[ast.Subscript(value=name_load(both), slice=ast.Constant(start + k),
                                                     ctx=ast.Load()) for k in range(count)], ctx=ast.Load())
            return [assign(both, new, stmt), assign(name, parts(0), stmt),
                    assign(self.tan(name), parts(count), stmt)]
        target = ast.Tuple(elts=[name_store(name), name_store(self.tan(name))], ctx=ast.Store())
        return [assign(target, new, stmt)]

    # -- templates -----------------------------------------------------------------------------
    def apply_rule(self, rule, name, args, keywords, stmt, label):
        if rule is None:
            raise self.fsrc.error(stmt, f"no derivative rule for `{label}`")
        template = rule.tangent
        if template is None:
            raise SrcgradError(
                f"{self.fsrc.filename}:{stmt.lineno}: `{label}` has a reverse-mode rule "
                f"({rule.name}) but no tangent rule, so forward mode (jvp/hvp/hessian/jacobian) "
                f"cannot differentiate it. Register one with @srcgrad.register_tangent({label}) on "
                "a template such as\n"
                f"    def {label.split('.')[-1]}_tangent(result, x):\n        d[result] += d[x] * ...")
        bound = template.bind(name_load(name), args, keywords)
        local = {}
        pre = []
        terms = []
        for line in template.body:
            if isinstance(line, ast.Assign):
                fresh = self.names.fresh("r")
                local[line.targets[0].id] = fresh
                pre.append(assign(fresh, self.substitute(line.value, bound, local), stmt))
                continue
            uses = [n.slice.id for n in ast.walk(line.value)
                    if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == "d"]
            if uses and not any(self.a.is_active(bound.get(param)) for param in uses):
                continue          # the tangent of an argument that does not vary is zero
            # (a term linear in several tangents, `np.meshgrid(d[x], d[y])`, reads a zero for
            # those that do not vary)
            zeros = {param for param in uses if not self.a.is_active(bound.get(param))}
            terms.append((self.substitute(line.value, bound, local, zeros, stmt), isinstance(line.op, ast.Sub)))
        if not terms:
            return [], self.zero(name_load(name), self.a.kinds.get(name, K.FLOAT), stmt)
        expr, negative = terms[0]
        if negative:
            expr = ast.UnaryOp(op=ast.USub(), operand=expr)
        for term, negative in terms[1:]:
            expr = ast.BinOp(left=expr, op=ast.Sub() if negative else ast.Add(), right=term)
        result_kind = self.a.kinds.get(name, K.FLOAT)
        if rule.elementwise and result_kind.is_array and not self._has_result_shape(expr, name, args):
            # e.g. the tangent of `x + a` (x a varying scalar, a an array): broadcast to the result
            expr = ast.BinOp(left=self.zero(name_load(name), result_kind, stmt), op=ast.Add(), right=expr)
        used = {n for n in operand_names(expr)} | {n for p in pre for n in operand_names(p.value)}
        pre = [p for p in pre if p.targets[0].id in used]
        return pre, expr

    def _has_result_shape(self, expr, name, args):
        """Whether an elementwise tangent expression surely has the result's shape: it reads the
        result, or every array argument of the call (which broadcast to the result's shape)."""
        names = set(operand_names(expr))
        if name in names:
            return True
        arrays = {a.id for a in args if isinstance(a, ast.Name) and self.a.kind(a).is_array}
        tangents = {n for n in names if n.startswith("_dot")}
        primal_arrays = {a for a in arrays if a in names or self.tan(a) in tangents}
        return bool(arrays) and primal_arrays == arrays

    def substitute(self, expr, bound, local, zeros=(), stmt=None):
        expr = copy.deepcopy(expr)
        outer = self

        class Sub(ast.NodeTransformer):
            def visit_Subscript(self, node):
                if isinstance(node.value, ast.Name) and node.value.id == "d":
                    atom = bound[node.slice.id]
                    if node.slice.id in zeros:
                        return outer.zero(atom, outer.a.kind(atom), stmt)
                    return name_load(outer.tan(atom.id))
                self.generic_visit(node)
                return node

            def visit_Name(self, node):
                if node.id in bound:
                    return copy.deepcopy(bound[node.id])
                if node.id in local:
                    return name_load(local[node.id])
                return node

            def visit_Call(self, node):
                self.generic_visit(node)
                # np.ones_like of a scalar (a whole-array reduction's result) is 1.0
                if ast.unparse(node.func) in ("np.ones_like", "np.zeros_like") and len(node.args) == 1 and \
                        isinstance(node.args[0], ast.Name) and not outer.a.kind(node.args[0]).is_array:
                    return ast.Constant(1.0 if node.func.attr == "ones_like" else 0.0)
                # np.sum(t, axis=None, keepdims=False) is np.sum(t), which Numba compiles
                node.keywords = [kw for kw in node.keywords if not (
                    isinstance(kw.value, ast.Constant) and
                    (kw.arg, kw.value.value) in (("axis", None), ("keepdims", False)))]
                _annotate_callee(node)
                return node
        return simplify(Sub().visit(expr))


def _annotate_callee(node):
    """Calls in templates name ``np.f`` / ``math.f``: record the function object as normalize does
    for user code (lowering reads ``node.callee``, e.g. for reductions with an axis)."""
    import math
    import numpy as np
    func = node.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and \
            func.value.id in ("np", "math"):
        node.callee = getattr(np if func.value.id == "np" else math, func.attr, None)


def _rename(expr, old, new):
    for node in ast.walk(expr):
        if isinstance(node, ast.Name) and node.id == old and isinstance(node.ctx, ast.Load):
            node.id = new


# ================================================================================================
# The module: tangent functions of the differentiated function and of the helpers it calls
# ================================================================================================

class ForwardBuilder:
    """Generates ``<f>_jvp(*params, *tangents) -> (value, tangent)`` and the helpers' tangent
    functions, reusing the reverse mode's builder for parsing, kinds and primal helpers."""

    def __init__(self, target, precision="float64", lowered=True):
        from .program import ModuleBuilder
        self.base = ModuleBuilder(target, precision)
        self.target = target
        self.lowered = lowered      # False: plain NumPy source for a second transformation (hvp)
        self.jvps = {}
        self.top = None             # the top-level jvp's parts (see batched)
        self.not_batched = None     # why batched() made none
        if not lowered:             # primal helpers too: no runtime helpers, no np.float32 literals
            self.base.finish = lambda stmts, analysis: self._name_library_calls(stmts)

    def _name_library_calls(self, stmts):
        """SciPy calls in plain (unlowered) tangent code: the generated module does not have the
        user's ``special``/``stats`` names, so each such call names the function through the
        module's externals (``_scipy_special_logsumexp = external(...)``), which the second
        (reverse-mode) transformation resolves to the SciPy function and its rule."""
        import re
        for node in ast.walk(ast.Module(body=stmts, type_ignores=[])):
            callee = getattr(node, "callee", None)
            if not (isinstance(node, ast.Call) and callee is not None and not isinstance(callee, str)
                    and rules.library_helper(callee) is not None and rules._is_scipy(callee)):
                continue
            owner = getattr(callee, "__self__", None)
            label = (f"scipy.{type(owner).__name__}.{callee.__name__}" if owner is not None
                     else f"scipy.{callee.__name__}")
            name = "_" + re.sub(r"\W", "_", label)
            rules.EXTERNALS[label] = callee
            self.base.externals[name] = label
            node.func = name_load(name)
        return stmts

    def helper_jvp(self, caller_unit):
        def jvp(callee, arg_kinds, active, stmt):
            unit = self.base.unit(callee)
            for node in ast.walk(ast.Module(body=unit.body, type_ignores=[])):
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript) and \
                        node.targets[0].value.id in unit.params:
                    raise unit.fsrc.error(node, f"helper {unit.func.__name__} writes into its argument "
                                          f"{node.targets[0].value.id!r}; helpers called from "
                                          "differentiated code must not modify their array arguments",
                                          "argument mutation")
            return self.jvp(callee, tuple(arg_kinds), [unit.params[k] for k in active])
        return jvp

    def jvp(self, func, kinds, wrt, top=False):
        from .analyse import analyse
        from .program import user_lines
        from . import codegen
        from .backends import lower_for_cpu
        base = self.base
        unit = base.unit(func)
        key = (unit.func, kinds, tuple(wrt))
        if key in self.jvps:
            return self.jvps[key]
        analysis, _ = base.analysis_of(func, kinds)
        if tuple(wrt) != tuple(p for p, k in zip(unit.params, kinds) if k.is_float):
            analysis = analyse(unit.fsrc, unit.params, unit.body, kinds, wrt, base.helper_kind(unit))
        analysis = copy.copy(analysis)
        analysis.kinds = dict(analysis.kinds)
        name = base.unique(f"{unit.func.__name__}_jvp")
        self.jvps[key] = name
        from .program import is_helper
        for node in ast.walk(ast.Module(body=unit.body, type_ignores=[])):
            callee = getattr(node, "callee", None)      # user functions with registered rules
            if isinstance(node, ast.Call) and is_helper(callee) and rules.lookup(callee) is not None \
                    and getattr(callee, "__module__", None) != "srcgrad.runtime":
                base.externals[callee.__name__] = rules.external_name(callee)
        transformer = ForwardTransformer(unit.fsrc, unit.params, copy.deepcopy(unit.body), analysis,
                                         unit.names, self.helper_jvp(unit))
        stmts, result, tangent = transformer.run()
        # an argument the function writes into is copied first (with its tangent), so that
        # repeated sweeps (hessian, jacobian) and the caller see the inputs unchanged
        written = sorted({node.targets[0].value.id for node in ast.walk(ast.Module(body=unit.body, type_ignores=[]))
                          if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript)
                          and node.targets[0].value.id in unit.params})
        like = unit.body[0]
        copies = []
        for param in written:
            names = [param] + ([transformer.tan(param)] if param in wrt else [])
            for n in names:
                copies.append(assign(n, ast.Call(func=ast.Attribute(value=name_load("np"), attr="copy",
                                                                    ctx=ast.Load()),
                                                 args=[name_load(n)], keywords=[]), like))
        for param in unit.params:
            # an argument that is not differentiated but receives varying values (`buf[i] = x`)
            # starts with a zero tangent
            if param in analysis.active and param not in wrt:
                copies.append(assign(transformer.tan(param),
                                     transformer.zero(name_load(param), analysis.kinds[param], like), like))
        result_kind = analysis.kind(result)
        if result_kind.cls == "tuple":
            # a helper returning a tuple: (values..., tangents...) as one flat tuple (reverse mode,
            # which differentiates this code again for hvp, handles flat tuples)
            def part(expr, k):
                return expr.elts[k] if isinstance(expr, ast.Tuple) else \
                    ast.Subscript(value=copy.deepcopy(expr), slice=ast.Constant(k), ctx=ast.Load())
            count = len(result_kind.items)
            flat = [part(result, k) for k in range(count)] + [part(tangent, k) for k in range(count)]
            tail = ast.copy_location(ast.Return(value=ast.Tuple(elts=flat, ctx=ast.Load())), unit.body[-1])
        else:
            tail = ast.copy_location(ast.Return(value=ast.Tuple(elts=[result, tangent], ctx=ast.Load())),
                                     unit.body[-1])
        for param in wrt:
            transformer.tan(param)
        analysis.kinds.update(transformer.tangent_kinds)
        body = copies + stmts + [tail]
        if self.lowered:
            body = base.finish(body, analysis)
            # the target's own rewrites, as for the primal and the adjoint (cpu: matrix products
            # through BLAS, chains of array statements as one loop nest)
            (body,) = base.backend.lower([body], analysis)
        else:
            body = self._name_library_calls(body)
            if self.target == "cpu":
                (body,) = lower_for_cpu([body], analysis)
        params = unit.params + [tangent_name(p, unit.names.generated) for p in wrt]
        doc = (f"Value of {unit.func.__name__} and its directional derivative along the tangents of "
               f"({', '.join(wrt)}).\n\n    Each active statement is followed by its tangent "
               "(_dot_<name>), computed from the rule's tangent template.\n    ")
        if not self.lowered and top:
            # the top-level function again, returning the tangent alone: what hvp differentiates
            # in reverse mode (with respect to the inputs only, not their tangents)
            # (without the primal statements the tangent does not read: s in `s += x * x`)
            only = remove_dead_code(copy.deepcopy(body[:-1]) + [
                ast.copy_location(ast.Return(value=copy.deepcopy(tangent)), unit.body[-1])])
            base.add_source(unit, *codegen.function_source_and_lines(
                f"{name}_tangent", params, only, user_lines=user_lines(unit.fsrc),
                docstring=f"The directional derivative of {unit.func.__name__} alone (for hvp)."))
        base.add_source(unit, *codegen.function_source_and_lines(
            name, params, body, docstring=doc, user_lines=user_lines(unit.fsrc)))
        if self.lowered and top:    # what batched() needs, for the drivers that sweep directions
            self.top = (unit, name, params, body, analysis, transformer, wrt)
        return name

    def batched(self):
        """Add ``<jvp>_batch`` (forward_batch: BATCH directions per sweep) for the top-level jvp;
        its name, or None where the code has a construct it does not vectorize
        (``self.not_batched`` says which)."""
        from .forward_batch import add_batched
        name, self.not_batched = add_batched(self.base, *self.top)
        return name


def build_forward_module(func, kinds, wrt_names, target, precision="float64", lowered=True):
    """The module source with ``<f>_jvp``; also returns the jvp's name and the result kind."""
    from . import codegen
    builder = ForwardBuilder(target, precision, lowered)
    base = builder.base
    unit = base.unit(func)
    _, result_kind = base.analysis_of(func, tuple(kinds))
    if result_kind.cls == "tuple":
        raise SrcgradError(f"{unit.func.__name__} returns a tuple; srcgrad differentiates functions "
                           "returning one float or one array")
    name = builder.jvp(func, tuple(kinds), list(wrt_names), top=True)
    drivers = []
    index = unit.params.index(wrt_names[0]) if len(wrt_names) == 1 else None
    if lowered and index is not None and kinds[index].is_array and result_kind.is_array:
        from .forward_batch import BATCH, JACOBIAN_CHUNKS
        decorator = "@jit\n" if target == "cpu" else ""
        batched = builder.batched()
        if batched is not None:
            drivers.append(JACOBIAN_CHUNKS.format(decorator=decorator, batched=batched, batch=BATCH,
                                                  params=", ".join(unit.params), x=wrt_names[0]))
        else:       # (a construct forward_batch does not vectorize: one direction per sweep)
            drivers.append(f"# one direction per sweep: {builder.not_batched}\n" + _JACOBIAN_COLUMNS.format(
                decorator=decorator, jvp=name, params=", ".join(unit.params), x=wrt_names[0]))
    elif lowered and result_kind.is_array:
        builder.batched()           # (for hessian's blocks of a tuple wrt or a float, forward_api)
    header = (f"Generated by srcgrad {__import__('srcgrad').__version__} from "
              f"{unit.fsrc.filename}:{unit.fsrc.firstline} ({unit.func.__name__}); forward mode (jvp); "
              f"target={target}; argument kinds ({', '.join(map(str, kinds))}); wrt "
              f"({', '.join(wrt_names)}); working precision {precision}.\n"
              "Do not edit: regenerated when the source changes.")
    extra = ("# Marks tangent code for a second transformation (hvp = reverse mode over this module):\n"
             "# its comparisons scale tangents as masks, which is differentiable almost everywhere.\n"
             "_srcgrad_tangent_module = True\n")
    externals = [f'{n} = external("{q}")' for n, q in sorted(base.externals.items())]
    source = codegen.module_source(header, target, base.sources + [extra] + drivers, externals,
                                   line_tables=base.line_tables + [None] * (1 + len(drivers)),
                                   user_sources=base.user_sources)
    return source, name, result_kind


# jacobian(f) by forward mode, one array argument and an array result: the jvp sweeps over the
# basis vectors in one call
_JACOBIAN_COLUMNS = """{decorator}def _srcgrad_jacobian_columns({params}):
    \"\"\"The Jacobian w.r.t. {x} (shape: the result's + {x}'s), one jvp sweep per basis vector of
    {x}, all in this call.\"\"\"
    _n = {x}.size
    _e = np.zeros(_n, dtype={x}.dtype)
    _e[0] = 1.0
    _value, _first = {jvp}({params}, _e.reshape({x}.shape))
    _J = np.empty((_first.size, _n), dtype=_first.dtype)
    _J[:, 0] = _first.ravel()
    for _k in range(1, _n):
        _e = np.zeros(_n, dtype={x}.dtype)
        _e[_k] = 1.0
        _value, _column = {jvp}({params}, _e.reshape({x}.shape))
        _J[:, _k] = _column.ravel()
    return _J.reshape(_first.shape + {x}.shape)
"""


__all__ = ["ForwardTransformer", "ForwardBuilder", "build_forward_module", "tangent_name", "_Comment"]


# ================================================================================================
# Dead code: statements whose values nothing reads (hvp's adjoint needs no value; a tangent
# function needs no primal value its tangent does not read)
# ================================================================================================

# calls that only compute a value (no writes, no state): a dead assignment of one can go
_PURE_MODULES = ("math", "np")
_IMPURE_NP = {"copyto", "put", "place", "putmask", "fill_diagonal", "random"}
_PURE_BUILTINS = {"range", "len", "min", "max", "abs", "float", "int", "bool"}


class _NotStraight(Exception):
    """A construct the liveness pass does not model (break, continue, nested functions, ...)."""


def _pure(expr):
    for node in ast.walk(expr):
        if isinstance(node, ast.Call):
            func = node.func
            if not ((isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                     and func.value.id in _PURE_MODULES and func.attr not in _IMPURE_NP)
                    or (isinstance(func, ast.Name) and func.id in _PURE_BUILTINS)):
                return False
        elif isinstance(node, (ast.NamedExpr, ast.Yield, ast.YieldFrom, ast.Await, ast.Lambda)):
            return False
    return True


def _reads(*exprs):
    return {node.id for e in exprs if e is not None for node in ast.walk(e)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def _store_names(target):
    return {node.id for node in ast.walk(target) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}


def _live_block(stmts, live):
    """(kept statements, names live before them) for a block followed by ``live`` names."""
    kept = []
    for stmt in reversed(stmts):
        stmt, live = _live_stmt(stmt, live)
        if stmt is not None:
            kept.append(stmt)
    return kept[::-1], live


def _live_stmt(stmt, live):
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        target = stmt.targets[0]
        if isinstance(target, (ast.Name, ast.Tuple)) and all(
                isinstance(e, ast.Name) for e in ([target] if isinstance(target, ast.Name) else target.elts)):
            names = _store_names(target)
            if not (names & live) and _pure(stmt.value):
                return None, live
            return stmt, (live - names) | _reads(stmt.value)
        # a write into an array (or attribute): always kept; the array stays live
        return stmt, live | _reads(stmt.value, target)
    if isinstance(stmt, ast.AugAssign):
        if isinstance(stmt.target, ast.Name):
            if stmt.target.id not in live and _pure(stmt.value):
                return None, live
            return stmt, live | {stmt.target.id} | _reads(stmt.value)
        return stmt, live | _reads(stmt.value, stmt.target)
    if isinstance(stmt, (ast.Expr, ast.Assert, ast.Pass)):
        if isinstance(stmt, ast.Pass):
            return None, live
        return stmt, live | _reads(stmt)
    if isinstance(stmt, ast.Return):
        return stmt, _reads(stmt.value)
    if isinstance(stmt, ast.If):
        body, live_body = _live_block(stmt.body, live)
        orelse, live_else = _live_block(stmt.orelse, live)
        if not body and not orelse and _pure(stmt.test):
            return None, live
        new = ast.copy_location(ast.If(test=stmt.test, body=body or [ast.Pass()], orelse=orelse), stmt)
        return new, live_body | live_else | _reads(stmt.test)
    if isinstance(stmt, (ast.For, ast.While)):
        if stmt.orelse:
            raise _NotStraight
        effects, assigned = _effects([stmt])
        if not effects and not (assigned & live):
            return None, live       # a loop that only computes values nothing reads (it ends:
            #                         the function it comes from returns)
        defined = _store_names(stmt.target) if isinstance(stmt, ast.For) else set()
        test = stmt.iter if isinstance(stmt, ast.For) else stmt.test
        # the body may run again or not at all: live at its end = live at its start | live after
        end = set(live) | (_reads(test) if isinstance(stmt, ast.While) else set())
        while True:
            body, start = _live_block(stmt.body, end)
            start = start - defined
            new_end = end | start
            if new_end == end:
                break
            end = new_end
        if not body and not (defined & live) and _pure(test):
            return None, live
        if isinstance(stmt, ast.For):
            new = ast.For(target=stmt.target, iter=stmt.iter, body=body or [ast.Pass()], orelse=[])
        else:
            new = ast.While(test=stmt.test, body=body or [ast.Pass()], orelse=[])
        return ast.copy_location(new, stmt), end | _reads(test)
    raise _NotStraight


def _effects(stmts):
    """(whether the statements may do more than assign names, the names they assign)."""
    assigned = set()
    for stmt in stmts:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and all(
                isinstance(e, ast.Name) for e in ([stmt.targets[0]] if isinstance(stmt.targets[0], ast.Name)
                                                  else getattr(stmt.targets[0], "elts", [None]))):
            if not _pure(stmt.value):
                return True, assigned
            assigned |= _store_names(stmt.targets[0])
        elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
            if not _pure(stmt.value):
                return True, assigned
            assigned.add(stmt.target.id)
        elif isinstance(stmt, (ast.If, ast.For, ast.While)):
            test = stmt.iter if isinstance(stmt, ast.For) else stmt.test
            inner, names = _effects(stmt.body + stmt.orelse)
            if inner or not _pure(test):
                return True, assigned
            assigned |= names | (_store_names(stmt.target) if isinstance(stmt, ast.For) else set())
        elif not isinstance(stmt, ast.Pass):
            return True, assigned
    return False, assigned


def remove_dead_code(stmts):
    """The statements without assignments whose values nothing reads (by liveness over the
    structured code: loops run their body any number of times). Writes into arrays, calls other
    than ``math.*``/``np.*`` and anything the pass does not model stay; a construct it does not
    model at all (break, continue, nested definitions) leaves the code unchanged."""
    try:
        kept, _ = _live_block(list(stmts), set())
    except _NotStraight:
        return list(stmts)
    return kept
