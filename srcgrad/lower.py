"""Lowering (part of code generation): rewrite NumPy calls that Numba's nopython mode cannot
compile as users write them into calls of srcgrad's runtime helpers.

``np.max(z, axis=1, keepdims=True)`` → ``reduce_max(z, 1, True)``; ``z[rows, cols]`` with two
integer arrays → ``gather2(z, rows, cols)``. The python target runs the same lowered code (the
helpers have plain NumPy implementations), so both targets execute identical source.

Each backend then runs its own lowering step (``srcgrad.backends``): for the cpu target, chains of
whole-array statements become explicit loop nests (loop fusion) and matrix products go through
the cpu backend's ``matmul`` (``srcgrad/backends/cpu/lowering.py``).
"""
import ast

import numpy as np

from . import helpers, naming, rules

REDUCTIONS = rules.REDUCTIONS        # callee -> its runtime helper (facts in rules/callees.py)


def lower(stmts, analysis):
    class Lower(ast.NodeTransformer):
        def visit_Call(self, node):
            self.generic_visit(node)
            callee = getattr(node, "callee", None)
            try:
                helper = REDUCTIONS.get(callee)
            except TypeError:
                helper = None
            if callee is np.clip and analysis is not None and \
                    all(not analysis.kind(a).is_array for a in node.args):
                new = ast.Call(func=ast.Name(id="clip_scalar", ctx=ast.Load()), args=node.args, keywords=[])
                return ast.copy_location(new, node)
            if callee is np.dot and analysis is not None and \
                    not all(analysis.kind(a).is_array for a in node.args):
                # np.dot with a scalar operand is a product (Numba's np.dot takes arrays only)
                return ast.copy_location(ast.BinOp(left=node.args[0], op=ast.Mult(),
                                                   right=node.args[1]), node)
            if (callee is np.array or callee is np.asarray) and analysis is not None and node.args:
                items = node.args[0]
                item_kinds = analysis.kind(items).items if analysis.kind(items).cls == "tuple" else ()
                if item_kinds and all(k.is_array for k in item_kinds):
                    # a literal of arrays: Numba's np.array takes scalars only, np.stack arrays
                    new = ast.Call(func=ast.Attribute(value=ast.Name(id="np", ctx=ast.Load()),
                                                      attr="stack", ctx=ast.Load()),
                                   args=[items], keywords=[])
                    return ast.copy_location(new, node)
                if isinstance(items, ast.Tuple):
                    # one element type for Numba: ints among floats become floats
                    kinds = [analysis.kind(e) for e in items.elts]
                    if any(k.cls == "float" for k in kinds):
                        items.elts = [e if k.cls == "float" else
                                      (ast.Constant(float(e.value)) if isinstance(e, ast.Constant) else
                                       ast.Call(func=ast.Name(id="float", ctx=ast.Load()), args=[e],
                                                keywords=[]))
                                      for e, k in zip(items.elts, kinds)]
                elif analysis.kind(items).is_array:
                    # np.array(a) copies (Numba's np.array takes sequences of scalars only)
                    new = ast.Call(func=ast.Attribute(value=ast.Name(id="np", ctx=ast.Load()),
                                                      attr="copy" if callee is np.array else "asarray",
                                                      ctx=ast.Load()),
                                   args=[items], keywords=[])
                    return ast.copy_location(new, node)
            if callee == "stack_buffer" and analysis is not None:
                # the rows of a list built with append: np.full for scalars (the item's type),
                # np.empty of the item's shape and dtype for arrays
                size, item = node.args[:2]
                if analysis.kind(item).is_array:
                    shape = ast.BinOp(left=ast.Tuple(elts=[size], ctx=ast.Load()), op=ast.Add(),
                                      right=ast.Attribute(value=item, attr="shape", ctx=ast.Load()))
                    new = ast.Call(func=ast.Attribute(value=ast.Name(id="np", ctx=ast.Load()),
                                                      attr="empty", ctx=ast.Load()),
                                   args=[shape, ast.Attribute(value=item, attr="dtype", ctx=ast.Load())],
                                   keywords=[])
                else:
                    new = ast.Call(func=ast.Attribute(value=ast.Name(id="np", ctx=ast.Load()),
                                                      attr="full", ctx=ast.Load()),
                                   args=[size, item], keywords=[])
                return ast.copy_location(new, node)
            if callee is np.reshape:
                new = ast.Call(func=ast.Name(id="reshape_any", ctx=ast.Load()), args=node.args, keywords=[])
                return ast.copy_location(new, node)
            library = rules.library_helper(callee) if callee is not None else None
            if library is not None:     # a NumPy/SciPy call run by a runtime helper (rules.LIBRARY_CALLS)
                new = ast.Call(func=ast.Name(id=library, ctx=ast.Load()), args=node.args,
                               keywords=node.keywords)
                new.callee = callee
                return ast.copy_location(new, node)
            if helper is None:
                return node
            keywords = {kw.arg: kw.value for kw in node.keywords}
            args = list(node.args)
            axis = args[1] if len(args) > 1 else keywords.get("axis", ast.Constant(None))
            keepdims = args[2] if len(args) > 2 else keywords.get("keepdims", ast.Constant(False))
            if isinstance(axis, ast.Constant) and axis.value is None and \
                    isinstance(keepdims, ast.Constant) and not keepdims.value:
                return node          # Numba compiles the plain whole-array reduction itself
            new = ast.Call(func=ast.Name(id=helper, ctx=ast.Load()), args=[args[0], axis, keepdims],
                           keywords=[])
            new.callee = callee
            return ast.copy_location(new, node)

        def visit_BinOp(self, node):
            self.generic_visit(node)
            # x ** 2 -> x * x: Numba calls pow() for a float power, a multiply is ~10x cheaper
            if isinstance(node.op, ast.Pow) and isinstance(node.right, ast.Constant) and \
                    node.right.value == 2 and isinstance(node.left, (ast.Name, ast.Constant)):
                return ast.copy_location(ast.BinOp(left=node.left, op=ast.Mult(), right=node.left), node)
            return node

        def visit_Subscript(self, node):
            self.generic_visit(node)
            if not isinstance(node.ctx, ast.Load) or analysis is None:
                return node
            parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            arrays = [p for p in parts if isinstance(p, ast.Name) and analysis.kind(p).is_array]
            if len(parts) == 2 and len(arrays) == 2:
                new = ast.Call(func=ast.Name(id="gather2", ctx=ast.Load()),
                               args=[node.value, parts[0], parts[1]], keywords=[])
                return ast.copy_location(new, node)
            return node
    lowered = Lower()
    return [lowered.visit(stmt) for stmt in stmts]


# calls whose arguments are all shapes, sizes or bounds (runtime helpers: their declared int_args)
_INTEGER_CALLS = {"range", "float32", "zeros", "ones", "empty", "arange", "reshape", "full"}


def cast_float_literals(stmts, analysis):
    """Working in float32: write literals as ``np.float32(...)`` so the math stays float32.

    Numba types a bare ``0.5`` as float64, and float32 combined with float64 (or with an int64
    literal) gives float64: one literal would silently turn a float32 program into float64.
    Integer literals stay integers where they meet integers (indices, counters, range bounds).
    """
    def f32(value):
        call = ast.Call(func=ast.Attribute(value=ast.Name(id="np", ctx=ast.Load()), attr="float32",
                                           ctx=ast.Load()), args=[ast.Constant(float(value))], keywords=[])
        return call

    def is_int_operand(node):
        if isinstance(node, ast.Constant):
            return isinstance(node.value, int)
        if isinstance(node, ast.Name) and node.id.startswith(naming.TAPE_COUNTERS):
            return True
        if isinstance(node, ast.Name) and analysis is not None:
            kind = analysis.kinds.get(node.id)
            return kind is not None and kind.cls in ("int", "bool")
        if isinstance(node, ast.BinOp):
            return is_int_operand(node.left) and is_int_operand(node.right)
        return False

    class Cast(ast.NodeTransformer):
        def visit_Subscript(self, node):
            node.value = self.visit(node.value)
            return node            # indices stay integers

        def visit_Call(self, node):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if name in _INTEGER_CALLS:
                return node        # shapes, axes and bounds stay integers
            integers = helpers.int_args(name) if isinstance(node.func, ast.Name) else None
            if integers:           # a runtime helper's axes, flags and bounds stay integers
                node.args = [arg if k in integers else self.visit(arg) for k, arg in enumerate(node.args)]
                return node
            self.generic_visit(node)
            return node

        def visit_Constant(self, node):
            if isinstance(node.value, float):
                return ast.copy_location(f32(node.value), node)
            return node

        def visit_BinOp(self, node):
            left_int, right_int = is_int_operand(node.left), is_int_operand(node.right)
            node.left = self.visit(node.left)
            node.right = self.visit(node.right)
            if left_int and right_int and not isinstance(node.op, ast.Div):
                return node
            # an integer meeting float32 math (or a true division) would promote it to float64
            for side, is_int in (("left", left_int), ("right", right_int)):
                operand = getattr(node, side)
                if isinstance(operand, ast.Constant) and isinstance(operand.value, int) \
                        and not isinstance(operand.value, bool):
                    setattr(node, side, f32(operand.value))
                elif is_int and isinstance(operand, (ast.Name, ast.BinOp)):
                    call = f32(0)
                    call.args = [operand]
                    setattr(node, side, call)
            return node

        def visit_For(self, node):
            node.body = [self.visit(s) for s in node.body]
            return node

        def visit_AugAssign(self, node):
            if isinstance(node.target, ast.Name) and node.target.id in (naming.FLOAT_POSITION, naming.INT_POSITION):
                return node
            node.value = self.visit(node.value)
            return node

        def visit_Assign(self, node):
            target = node.targets[0]
            if isinstance(target, ast.Name) and analysis is not None:
                kind = analysis.kinds.get(target.id)
                if kind is not None and kind.cls == "int":
                    return node
            if isinstance(target, ast.Name) and target.id.startswith(naming.TAPE_COUNTERS):
                return node
            node.value = self.visit(node.value)
            return node
    cast = Cast()
    return [cast.visit(stmt) for stmt in stmts]
