"""The cpu backend's own lowering step: rewrites of generated code for the Numba-compiled target
that need the whole function — matrix products through the backend's ``matmul`` (NumPy's
BLAS), then loop fusion (:mod:`.fusion`). Run by ``srcgrad.backends.CpuBackend.lower``."""
import ast

from .fusion import fuse_loops
from .fusion_facts import _backend_has, _call_name, _is_comment
from .tensordots import lower_tensordots


def lower_for_cpu(sections, analysis, fuse=True, fallback=True):
    """Rewrites for the Numba-compiled target that need the whole function (``sections``: its
    consecutive parts, e.g. forward sweep, reverse sweep, return): matrix products through the
    cpu backend's ``matmul`` (NumPy's BLAS) when the backend has one, then loop fusion (when
    ``fuse``: the backend's option, part of the cache key; ``fallback``: see fuse_loops)."""
    if analysis is not None:       # np.tensordot/np.inner: matrix products of reshapes
        sections = lower_tensordots(sections, analysis)
    sections = [_matrix_products(stmts, analysis) for stmts in sections]
    return fuse_loops(sections, analysis, fallback) if fuse else sections


def _backend_matmul():
    """Whether generated cpu code can call ``matmul`` (the backend and code generation know it)."""
    return _backend_has("matmul")


def _matrix_products(stmts, analysis):
    """``a @ b``, ``np.matmul(a, b)`` and ``np.dot(a, b)`` of two matrices, and ``a @ b`` /
    ``np.matmul`` with a stack of matrices (Numba's own stop at 2-d) -> ``matmul(a, b)``."""
    if analysis is None or not _backend_matmul():
        return stmts

    def ndim(node, floats_only=True):
        if isinstance(node, ast.Name):
            kind = analysis.kinds.get(node.id)
            if kind is not None and kind.is_array and (kind.dtype == "float" or not floats_only):
                return kind.ndim
        return None

    def backend_product(left, right, batched_too=True):
        dims = (ndim(left, False), ndim(right, False))
        if None in dims or ndim(left) is None and ndim(right) is None:
            return False
        # vectors too: the backend's matmul also reconciles float32 with float64 operands
        return max(dims) <= 2 or batched_too

    class Products(ast.NodeTransformer):
        def visit_BinOp(self, node):
            self.generic_visit(node)
            if isinstance(node.op, ast.MatMult) and backend_product(node.left, node.right):
                call = ast.Call(func=ast.Name(id="matmul", ctx=ast.Load()), args=[node.left, node.right],
                                keywords=[])
                return ast.copy_location(call, node)
            return node

        def visit_Call(self, node):
            self.generic_visit(node)
            name = _call_name(node)
            if name in ("np.dot", "np.matmul") and len(node.args) == 2 and not node.keywords and \
                    backend_product(*node.args, batched_too=name == "np.matmul"):
                node.func = ast.Name(id="matmul", ctx=ast.Load())
            elif name == "np.matmul" and len(node.args) == 2 and not node.keywords:
                # Numba has no np.matmul; its `@` does vectors and matrices (as np.dot)
                product = ast.BinOp(left=node.args[0], op=ast.MatMult(), right=node.args[1])
                return ast.copy_location(product, node)
            return node
    products = Products()
    return [products.visit(stmt) if isinstance(stmt, ast.stmt) and not _is_comment(stmt) else stmt
            for stmt in stmts]
