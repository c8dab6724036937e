"""np.tensordot and np.inner on the cpu target (Numba has neither, nor their adjoints).

Here the kinds give every operand's ndim, so each call is written as what it computes: the
operands' axes moved (free axes of ``a`` first, contracted last; contracted axes of ``b`` first),
contiguous copies reshaped to matrices, one matrix product, the result reshaped to the free axes
(``axes=0`` is the product of an ``(m, 1)`` and a ``(1, n)`` matrix; a full contraction the one
element of a ``(1, 1)`` product). The adjoints (``tensordot_adjoint``, ``inner_adjoint``) are the
same product of the gradient with the other operand, transposed back into the operand's axes.
The axes must be constants (an int, or a pair of ints or of tuples of ints): the cpu backend's
check refuses others with the line (:func:`static_axes`).
"""
import ast

from ...errors import SrcgradError
from ...runtime_library import _tensordot_axes
from .fusion_facts import _backend_has

CALLS = ("np_tensordot", "tensordot_adjoint", "np_inner", "inner_adjoint")
LIBRARY_CALLS = {"np.tensordot": "np_tensordot", "np.inner": "np_inner"}


def constants(stmts):
    """name -> value for names assigned a literal int or tuple (``_t1 = 1, 2``) in ``stmts``."""
    out, seen = {}, set()
    for stmt in stmts:
        for node in ast.walk(stmt) if isinstance(stmt, ast.AST) else ():
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                    isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
                value = static_axes(node.value, out)
                if name in seen or value is None:
                    out.pop(name, None)       # assigned twice, or not a constant
                else:
                    out[name] = value
                seen.add(name)
    return out


def static_axes(node, consts):
    """The value of ``node`` when it is an int, or a tuple of those, written as constants or names
    in ``consts``; else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = static_axes(node.operand, consts)
        return -inner if isinstance(inner, int) else None
    if isinstance(node, ast.Name):
        return consts.get(node.id)
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [static_axes(e, consts) for e in node.elts]
        return None if any(i is None for i in items) else tuple(items)
    return None


def lower_tensordots(sections, analysis, product=None):
    """The function body's ``sections`` with every np.tensordot/np.inner call (and adjoint)
    written as a matrix product (``product``: the name of the 2-d product generated code calls;
    by default the backend's ``matmul`` when it has one)."""
    if product is None:
        product = "matmul" if _backend_has("matmul") else "np.dot"
    consts = constants([stmt for stmts in sections for stmt in stmts])

    def ndim(node):
        if isinstance(node, ast.Constant) or isinstance(node, ast.Call) and \
                ast.unparse(node.func) in ("np.float32", "np.float64", "float"):
            return 0                          # a number (cast to the working precision)
        kind = analysis.kinds.get(node.id) if isinstance(node, ast.Name) else None
        if kind is None:
            raise SrcgradError(f"np.tensordot/np.inner on the cpu target: the kind of "
                               f"`{ast.unparse(node)}` is not known here; use target='python'")
        return kind.ndim if kind.is_array else 0

    class Calls(ast.NodeTransformer):
        def visit_Call(self, node):
            self.generic_visit(node)
            name = node.func.id if isinstance(node.func, ast.Name) else \
                LIBRARY_CALLS.get(ast.unparse(node.func))      # tangent rules call NumPy's
            if name not in CALLS:
                return node
            args = list(node.args) + [k.value for k in node.keywords]
            text = _lowered(name, args, ndim, consts, product)
            return ast.copy_location(ast.parse(text, mode="eval").body, node)

    calls = Calls()
    return [[calls.visit(stmt) if isinstance(stmt, ast.stmt) else stmt for stmt in stmts]
            for stmts in sections]


def _lowered(name, args, ndim, consts, product):
    src = [ast.unparse(a) for a in args]
    if name in ("np_inner", "inner_adjoint"):
        offset = 1 if name == "inner_adjoint" else 0
        a, b = args[offset], args[offset + 1]
        an, bn = ndim(a), ndim(b)
        if an == 0 or bn == 0:                 # with a number: the product with it
            if name == "np_inner":
                return f"({src[0]} * {src[1]})"
            k = static_axes(args[3], consts)
            mine, other = (a, b) if k == 0 else (b, a)
            g = f"({src[0]} * {ast.unparse(other)})"
            return g if ndim(mine) else f"np.sum({g})"
        axes = ([an - 1], [bn - 1])
    else:
        offset = 1 if name == "tensordot_adjoint" else 0
        a, b = args[offset], args[offset + 1]
        an, bn = ndim(a), ndim(b)
        raw = args[offset + 2] if len(args) > offset + 2 else ast.Constant(2)
        value = static_axes(raw, consts)
        if value is None:
            raise SrcgradError("np.tensordot on the cpu target needs constant axes (an int or a "
                               "pair of ints or of tuples of ints); use target='python'")
        axes = _tensordot_axes(an, bn, value)
    a_axes, b_axes = axes
    a_src, b_src = ast.unparse(a), ast.unparse(b)
    if name in ("np_tensordot", "np_inner"):
        return _product(a_src, b_src, an, bn, a_axes, b_axes, product)
    k = static_axes(args[-1], consts)
    g = src[0]
    a_free = [i for i in range(an) if i not in a_axes]
    b_free = [j for j in range(bn) if j not in b_axes]
    free = len(a_free) + len(b_free)
    if k == 0:
        # d a = g (a_free..., b_free...) contracted with b over b_free: axes a_free + a's
        # contracted ones in the order of b's axes
        inner = f"({g} * {b_src})" if free == 0 else _product(
            g, b_src, free, bn, list(range(len(a_free), free)), b_free, product)
        order = a_free + [a_axes[b_axes.index(j)] for j in sorted(b_axes)]
    else:
        inner = f"({a_src} * {g})" if free == 0 else _product(
            a_src, g, an, free, a_free, list(range(len(a_free))), product)
        order = [b_axes[a_axes.index(i)] for i in sorted(a_axes)] + b_free
    perm = tuple(order.index(i) for i in range(len(order)))
    if perm == tuple(range(len(order))):
        return inner
    return f"np.transpose({inner}, {perm})"


def _product(a, b, an, bn, a_axes, b_axes, product):
    """Source of np.tensordot(a, b, (a_axes, b_axes)) for operands of ``an`` and ``bn`` axes."""
    a_free = [i for i in range(an) if i not in a_axes]
    b_free = [j for j in range(bn) if j not in b_axes]

    def size(x, axes):
        return " * ".join(f"{x}.shape[{i}]" for i in axes) or "1"

    def matrix(x, first, second):
        moved = x if first + second == list(range(len(first + second))) else \
            f"np.transpose({x}, {tuple(first + second)})"
        return f"np.ascontiguousarray({moved}).reshape(({size(x, first)}, {size(x, second)}))"

    result = f"{product}({matrix(a, a_free, list(a_axes))}, {matrix(b, list(b_axes), b_free)})"
    shape = [f"{a}.shape[{i}]" for i in a_free] + [f"{b}.shape[{j}]" for j in b_free]
    if not shape:
        return f"{result}[0, 0]"
    return f"{result}.reshape(({', '.join(shape)},))"


def lowerable(call, body):
    """Whether the cpu target writes this np.tensordot/np.inner call (of the normalized ``body``)
    as a matrix product: np.inner(a, b), np.tensordot with constant axes."""
    import numpy as np
    callee = getattr(call, "callee", None)
    if any(isinstance(a, ast.Starred) for a in call.args):
        return False
    if callee is np.inner:
        return len(call.args) == 2 and not call.keywords
    if callee is np.tensordot:
        if not 2 <= len(call.args) <= 3 or call.keywords and \
                (len(call.args) != 2 or [k.arg for k in call.keywords] != ["axes"]):
            return False
        axes = call.args[2] if len(call.args) == 3 else \
            (call.keywords[0].value if call.keywords else None)
        return axes is None or static_axes(axes, constants(body)) is not None
    return False
