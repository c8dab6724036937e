"""Normalize, part 2: one operation per statement (A-normal form)."""
import ast
import builtins
import inspect
import math
import types

import numpy as np

from ..parse import FunctionSource
from .syntax import (ARRAY_METHODS, NameMaker, SCALAR_CONSTANT_TYPES, _copy, assign, assigned_names,
                     is_atom, name_load, name_store)

# `e * e` / `e + e` with the same side-effect-free operand evaluates it once. False: twice (tests
# compare both; not in the cache key).
SHARE_SAME_OPERANDS = True


def _pure(expr):
    """An expression without calls (names, constants, indexing, arithmetic, attributes)."""
    return all(isinstance(node, (ast.Name, ast.Constant, ast.Subscript, ast.Attribute, ast.BinOp,
                                 ast.UnaryOp, ast.Tuple, ast.Slice, ast.Load, ast.operator,
                                 ast.unaryop, ast.expr_context))
               for node in ast.walk(expr))


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
        if isinstance(expr, ast.BinOp) and SHARE_SAME_OPERANDS and isinstance(expr.op, (ast.Mult, ast.Add)) \
                and _pure(expr.left) and ast.dump(expr.left) == ast.dump(expr.right):
            # `x[i] * x[i]`: the operand is read once (one temporary), so the adjoint adds one
            # doubled contribution to x[i] instead of two (transform._merge_same_operand)
            pre, operand = self.atom(expr.left, stmt)
            return pre, ast.BinOp(left=operand, op=expr.op, right=_copy(operand))
        if isinstance(expr, ast.BinOp):
            p1, left = self.atom(expr.left, stmt)
            p2, right = self.atom(expr.right, stmt)
            node = ast.BinOp(left=left, op=expr.op, right=right)
            if hasattr(expr, "lowered_from"):    # np.inner/np.tensordot written as @ (normalize/tensordot.py)
                node.lowered_from = expr.lowered_from
            return p1 + p2, node
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
        if isinstance(func, ast.Attribute) and self._is_local_object(func.value) and \
                func.attr == "flatten":
            # NumPy's flatten copies, ravel may return a view: a write into the result must not
            # change the array (x.flatten() -> x.ravel().copy())
            ravel = ast.copy_location(ast.Call(func=ast.Attribute(
                value=func.value, attr="ravel", ctx=ast.Load()), args=args, keywords=keywords), expr)
            return self.call(ast.copy_location(ast.Call(func=ast.Attribute(
                value=ravel, attr="copy", ctx=ast.Load()), args=[], keywords=[]), expr), stmt)
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
    from .. import rules
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
