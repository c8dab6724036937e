"""Expression simplification for generated code: fold constants and drop ``* 1`` / ``** 1`` so the
adjoint reads like hand-written code (used by the reverse and the forward transformation)."""
import ast
import operator

_FOLD = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def simplify(expr):
    """Fold constants and drop ``* 1``/``** 1`` so generated code reads like hand-written code."""
    class Simplify(ast.NodeTransformer):
        def visit_BinOp(self, node):
            self.generic_visit(node)
            left, right = node.left, node.right
            lc, rc = isinstance(left, ast.Constant), isinstance(right, ast.Constant)
            if lc and rc and type(node.op) in _FOLD and _numeric(left) and _numeric(right) and \
                    (_number(left) or _number(right)):          # 3 - True (a folded test) is 2
                try:
                    return ast.Constant(_FOLD[type(node.op)](left.value, right.value))
                except ZeroDivisionError:
                    return node
            if isinstance(node.op, ast.Pow) and rc and right.value == 1:
                return left
            if isinstance(node.op, ast.Mult) and rc and right.value == 1 and _number(right):
                return left
            if isinstance(node.op, ast.Mult) and lc and left.value == 1 and _number(left):
                return right
            if isinstance(node.op, ast.Div) and rc and right.value == 1 and _number(right):
                return left
            return node

        def visit_Compare(self, node):
            self.generic_visit(node)
            # `p != 0` of a constant exponent (the power rule): folded, so x ** 3 reads 3 * x ** 2
            if len(node.ops) == 1 and type(node.ops[0]) in _FOLD_COMPARE and \
                    isinstance(node.left, ast.Constant) and isinstance(node.comparators[0], ast.Constant) \
                    and _number(node.left) and _number(node.comparators[0]):
                return ast.Constant(_FOLD_COMPARE[type(node.ops[0])](node.left.value,
                                                                     node.comparators[0].value))
            return node

        def visit_Call(self, node):
            self.generic_visit(node)
            name = ast.unparse(node.func)
            if name == "np.argsort" and len(node.args) == 1 and _constant_axes(node.args[0]):
                # the inverse of a constant permutation (np.transpose's adjoint)
                axes = node.args[0]
                if isinstance(axes, ast.Constant):
                    return ast.Constant(None)
                order = sorted(range(len(axes.elts)), key=lambda k: axes.elts[k].value)
                return ast.Tuple(elts=[ast.Constant(k) for k in order], ctx=ast.Load())
            if name == "np.transpose" and len(node.args) == 2 and \
                    isinstance(node.args[1], ast.Constant) and node.args[1].value is None:
                node.args = node.args[:1]
            return node

        def visit_UnaryOp(self, node):
            self.generic_visit(node)
            if isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) and _number(node.operand):
                return ast.Constant(-node.operand.value)
            return node
    return Simplify().visit(expr)


def _constant_axes(node):
    """None or a tuple of int constants."""
    if isinstance(node, ast.Constant):
        return node.value is None
    return isinstance(node, ast.Tuple) and all(isinstance(e, ast.Constant) and type(e.value) is int
                                               for e in node.elts)


def _number(node):
    return isinstance(node.value, (int, float)) and not isinstance(node.value, bool)


def _numeric(node):
    return isinstance(node.value, (int, float))


_FOLD_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne}
