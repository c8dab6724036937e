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


def scaled_squares(body, single_use, active, kinds):
    """Products ``t = u * a`` (or ``a * u``) of scalars where ``u = k * a`` (or ``a * k``) is a
    temporary used only there and ``k`` a number or an inactive name: ``t`` is ``k * a * a``, so
    ``a``'s adjoint takes one contribution ``2.0 * d[t] * u`` instead of ``d[t] * u`` plus
    ``(d[t] * a) * k`` through ``u`` (Rosenbrock's ``100.0 * a * a``: one product instead of
    three; the same value up to rounding). ``u``'s own adjoint is then never needed.

    ``body``: normalized statements; ``single_use``: temporaries used once, in their defining
    block (transform's); ``active``/``kinds``: the analysis. Returns {id(t's statement): (a, u)}.
    ``a`` must not be assigned between ``u``'s statement and ``t``'s (the same value twice)."""
    found = {}

    def scalar(name):
        kind = kinds.get(name)
        return kind is not None and kind.cls == "float" and not kind.is_array

    def factor(value, a):                   # k of `k * a` / `a * k`, or None
        if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Mult)):
            return None
        for mine, other in ((value.right, value.left), (value.left, value.right)):
            if isinstance(mine, ast.Name) and mine.id == a:
                if isinstance(other, ast.Constant) and _number(other):
                    return other
                if isinstance(other, ast.Name) and other.id != a and other.id not in active:
                    return other
        return None

    def stores(stmt):
        return {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}

    def visit(stmts):
        defined = {}                        # name -> position of its assignment in this block
        for pos, stmt in enumerate(stmts):
            if isinstance(stmt, ast.If):
                visit(stmt.body)
                visit(stmt.orelse)
            elif isinstance(stmt, (ast.For, ast.While)):
                visit(stmt.body)
            if not (isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)):
                continue
            value, t = stmt.value, stmt.targets[0].id
            if isinstance(value, ast.BinOp) and isinstance(value.op, ast.Mult) and \
                    isinstance(value.left, ast.Name) and isinstance(value.right, ast.Name) and \
                    value.left.id != value.right.id and t in active and scalar(t):
                for u, a in ((value.left.id, value.right.id), (value.right.id, value.left.id)):
                    start = defined.get(u)
                    if start is None or u not in single_use or a not in active or \
                            not (scalar(u) and scalar(a)) or factor(stmts[start].value, a) is None:
                        continue
                    if any(a in stores(s) for s in stmts[start + 1:pos]):
                        continue
                    found[id(stmt)] = (a, u)
                    break
            defined[t] = pos
    visit(body)
    return found
