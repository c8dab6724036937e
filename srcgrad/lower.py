"""Lowering (part of code generation): rewrite NumPy calls that Numba's nopython mode cannot
compile as users write them into calls of srcgrad's runtime helpers.

``np.max(z, axis=1, keepdims=True)`` → ``reduce_max(z, 1, True)``; ``z[rows, cols]`` with two
integer arrays → ``gather2(z, rows, cols)``. The python target runs the same lowered code (the
helpers have plain NumPy implementations), so both targets execute identical source.
"""
import ast

import numpy as np

REDUCTIONS = {np.sum: "reduce_sum", np.mean: "reduce_mean", np.max: "reduce_max", np.amax: "reduce_max",
              np.min: "reduce_min", np.amin: "reduce_min"}


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
