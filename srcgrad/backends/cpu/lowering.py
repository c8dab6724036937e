"""The cpu backend's own lowering step: rewrites of generated code for the Numba-compiled target
that need the whole function — matrix products through the backend's ``matmul`` (NumPy's
BLAS), then loop fusion (:mod:`.fusion`), then in-place updates of array slices as updates of
views. Run by ``srcgrad.backends.CpuBackend.lower``."""
import ast
import itertools

from .fusion import fuse_loops
from .fusion_facts import _backend_has, _call_name, _is_comment, scalar_reductions
from .shape_only_arrays import shape_only_arrays
from .tensordots import lower_tensordots
from ...naming import ADJOINT_PREFIX, is_adjoint, temporary


def lower_for_cpu(sections, analysis, fuse=True, fallback=True):
    """Rewrites for the Numba-compiled target that need the whole function (``sections``: its
    consecutive parts, e.g. forward sweep, reverse sweep, return): matrix products through the
    cpu backend's ``matmul`` (NumPy's BLAS) when the backend has one, then loop fusion (when
    ``fuse``: the backend's option, part of the cache key; ``fallback``: see fuse_loops)."""
    if analysis is not None:       # np.tensordot/np.inner: matrix products of reshapes
        sections = lower_tensordots(sections, analysis)
    sections = [_matrix_products(stmts, analysis) for stmts in sections]
    scalars = scalar_reductions(sections)
    if fuse:
        # (fused temporaries read after their nest only for their shape: scalars)
        sections = shape_only_arrays(fuse_loops(sections, analysis, fallback))
    return _zero_arrays(_shared_updates(_slice_updates(sections, analysis), analysis, scalars))


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


VIEW_STEM = temporary("view", "")       # _view<n>: the views _slice_updates writes


def _kind(kinds, name):
    """The kind of ``name`` (an adjoint has its primal's), None when unknown."""
    if name in kinds:
        return kinds[name]
    if is_adjoint(name):
        for primal in (name[len(ADJOINT_PREFIX) + 1:], name[len(ADJOINT_PREFIX):]):
            if primal in kinds:
                return kinds[primal]
    return None


def _slice_updates(sections, analysis):
    """``a[:, d:] += b`` on an array ``a`` -> ``_view1 = a[:, d:]`` then ``_view1 += b``.

    The same in NumPy (a basic slice is a view: the update writes through it into ``a``), but
    Numba compiles ``a[...] += b`` as a read, an update and a slice assignment, and its slice
    assignment carries an error message built from the shapes, which compiles about forty
    string-formatting functions (a third of the vectorized GMM's compile). Only subscripts of
    slices and integer scalars with at least one slice (a view; never fancy indexing) are
    rewritten; the view names are new (``_view<n>``, unused in the function)."""
    if analysis is None:
        return sections

    def kind(name):
        return _kind(analysis.kinds, name)

    def scalar_int(node):
        if isinstance(node, ast.Constant):
            return type(node.value) is int
        if isinstance(node, ast.Name):
            k = kind(node.id)
            return k is not None and not k.is_array and k.cls == "int"
        return False

    def view_of_array(target):
        if not (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)):
            return False
        k = kind(target.value.id)
        index = target.slice.elts if isinstance(target.slice, ast.Tuple) else [target.slice]
        return (k is not None and k.is_array and len(index) <= k.ndim
                and any(isinstance(i, ast.Slice) for i in index)
                and all(isinstance(i, ast.Slice) or scalar_int(i) for i in index))

    used = {node.id for stmts in sections for stmt in stmts if isinstance(stmt, ast.AST)
            for node in ast.walk(stmt) if isinstance(node, ast.Name)}
    fresh = (name for name in (VIEW_STEM + str(n) for n in itertools.count(1)) if name not in used)

    def through_view(stmt):
        if not (isinstance(stmt, ast.AugAssign) and view_of_array(stmt.target)):
            return None
        view = next(fresh)
        read = ast.Subscript(value=stmt.target.value, slice=stmt.target.slice, ctx=ast.Load())
        return [ast.copy_location(ast.Assign(targets=[ast.Name(id=view, ctx=ast.Store())], value=read), stmt),
                ast.copy_location(ast.AugAssign(target=ast.Name(id=view, ctx=ast.Store()), op=stmt.op,
                                                value=stmt.value), stmt)]
    return _rewrite_statements(sections, through_view)


def _rewrite_statements(sections, replace):
    """Every statement of ``sections``, loop and branch bodies included, as ``replace(stmt)`` says:
    a list of statements in its place, or None to keep it (and rewrite the bodies it holds)."""
    def rewrite(stmts):
        out = []
        for stmt in stmts:
            instead = replace(stmt)
            if instead is not None:
                out += instead
                continue
            if isinstance(stmt, (ast.For, ast.While, ast.If)):
                stmt.body = rewrite(stmt.body)
                stmt.orelse = rewrite(stmt.orelse)
            out.append(stmt)
        return out
    return [rewrite(stmts) for stmts in sections]


_UPDATES = {ast.Add: "+", ast.Sub: "-"}


def _shared_updates(sections, analysis, scalars):
    """``a += b`` / ``a -= b`` on an array ``a`` -> ``update_array(a, "+", b)``: the same update,
    compiled once per operator and operand types and shared, where Numba writes each one inline as
    a loop nest with its broadcasting (an adjoint adds into ``_adj_x`` at every use of ``x``:
    c_shapes' adjoint has 29 such updates, 8% of its code, issue 17). Targets are names whose
    kinds say array (an adjoint has its primal's) and the views of :func:`_slice_updates`; not
    ``scalars``, which the cpu runtime computes as scalars where the kinds have arrays."""
    if analysis is None or not _backend_has("update_array"):
        return sections

    def array(name):
        if name in scalars:
            return False
        if name.startswith(VIEW_STEM):
            return True
        kind = _kind(analysis.kinds, name)
        return kind is not None and kind.is_array

    def shared(stmt):
        if not (isinstance(stmt, ast.AugAssign) and type(stmt.op) in _UPDATES and
                isinstance(stmt.target, ast.Name) and array(stmt.target.id)):
            return None
        call = ast.Call(func=ast.Name(id="update_array", ctx=ast.Load()),
                        args=[ast.Name(id=stmt.target.id, ctx=ast.Load()), ast.Constant(_UPDATES[type(stmt.op)]),
                              stmt.value], keywords=[])
        return [ast.copy_location(ast.Expr(value=call), stmt)]
    return _rewrite_statements(sections, shared)


def _zero_arrays(sections):
    """``_adj_x = np.zeros_like(x)`` -> ``_adj_x = np.zeros(x.shape, x.dtype.type)``, ``np.zeros(shape)`` ->
    ``np.zeros(shape, np.float64)`` (after fusion, whose size facts know ``zeros_like``). The same zeros (C order where ``x`` is not C; the adjoints they start are
    only added to), but one allocation function per number of dimensions, shared with the
    ``np.zeros`` and ``np.empty`` of fused loops, where Numba compiles ``zeros_like`` and the
    ``empty_like`` and fill it calls once per array type (layout included) in every adjoint."""
    class Zeros(ast.NodeTransformer):
        adjoint = False

        def visit_Assign(self, node):
            # adjoints only (forward mode's batching reads a zero tangent as np.zeros_like)
            self.adjoint = len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) and \
                is_adjoint(node.targets[0].id)
            self.generic_visit(node)
            self.adjoint = False
            return node

        def visit_Call(self, node):
            self.generic_visit(node)
            if _call_name(node) == "np.zeros_like" and len(node.args) == 1 and not node.keywords \
                    and isinstance(node.args[0], ast.Name) and self.adjoint:
                x = node.args[0].id
                return ast.copy_location(ast.parse(f"np.zeros({x}.shape, {x}.dtype.type)",
                                                   mode="eval").body, node)
            if _call_name(node) == "np.zeros" and len(node.args) == 1 and not node.keywords:
                # NumPy's default dtype, written out: Numba's zeros without one is another
                # signature (and another np.empty) to compile
                node.args.append(ast.parse("np.float64", mode="eval").body)
            return node
    zeros = Zeros()
    return [[zeros.visit(stmt) if isinstance(stmt, ast.stmt) and not _is_comment(stmt) else stmt
             for stmt in stmts] for stmts in sections]
