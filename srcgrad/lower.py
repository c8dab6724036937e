"""Lowering (part of code generation): rewrite NumPy calls that Numba's nopython mode cannot
compile as users write them into calls of srcgrad's runtime helpers.

``np.max(z, axis=1, keepdims=True)`` → ``reduce_max(z, 1, True)``; ``z[rows, cols]`` with two
integer arrays → ``gather2(z, rows, cols)``. The python target runs the same lowered code (the
helpers have plain NumPy implementations), so both targets execute identical source.

For the cpu target only, :func:`lower_for_cpu` then rewrites whole functions: chains of
whole-array statements become explicit loop nests (loop fusion, see the section below), and
matrix products go through the cpu backend's ``matmul`` when it has one.
"""
import ast
import copy

import numpy as np

from . import rules

REDUCTIONS = {np.sum: "reduce_sum", np.mean: "reduce_mean", np.max: "reduce_max", np.amax: "reduce_max",
              np.min: "reduce_min", np.amin: "reduce_min", np.prod: "reduce_prod"}


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
        if isinstance(node, ast.Name) and node.id.startswith(("_trips", "_fpos", "_ipos")):
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
            if name in ("range", "range_length", "_range_continues", "float32", "reduce_sum", "reduce_mean",
                        "reduce_max", "reduce_min", "reduce_prod", "expand_reduced", "reduced_count",
                        "max_adjoint", "min_adjoint", "prod_adjoint", "zeros", "ones", "empty", "arange",
                        "reshape", "full"):
                if name in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod",
                            "expand_reduced", "max_adjoint", "min_adjoint", "prod_adjoint"):
                    node.args[0] = self.visit(node.args[0])
                    if name in ("expand_reduced", "max_adjoint", "min_adjoint", "prod_adjoint"):
                        node.args[1] = self.visit(node.args[1])
                return node        # shapes, axes and bounds stay integers
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
            if isinstance(node.target, ast.Name) and node.target.id in ("_fpos", "_ipos"):
                return node
            node.value = self.visit(node.value)
            return node

        def visit_Assign(self, node):
            target = node.targets[0]
            if isinstance(target, ast.Name) and analysis is not None:
                kind = analysis.kinds.get(target.id)
                if kind is not None and kind.cls == "int":
                    return node
            if isinstance(target, ast.Name) and target.id.startswith(("_fpos", "_ipos", "_trips")):
                return node
            node.value = self.visit(node.value)
            return node
    cast = Cast()
    return [cast.visit(stmt) for stmt in stmts]


# ================================================================================================
# Loop fusion (cpu target)
# ================================================================================================
#
# Generated array code is one whole-array operation per line (``_t2 = _t1 + b1``, then
# ``h = np.maximum(_t2, 0.0)``), each a pass over memory with an array of its own. ``fuse_loops``
# turns runs of such statements into one explicit loop nest, which Numba compiles into one pass:
# elementwise operations (NumPy broadcasting of smaller operands included), the sums ``unbroadcast``
# does (bias gradients), reductions over the last axes (``reduce_max``/``reduce_sum``) and their
# adjoints (``expand_reduced``, ``max_adjoint``), and row gathers/scatters ``z[np.arange(n), y]``.
#
# Kinds give each array's number of dimensions, not its sizes. Sizes known to be equal (a matrix
# product and its operands, a reduction and its input, ...) need no test; for the others the loop
# nest is guarded by a size test and the statements run as written (``else:``) when an operand
# would be stretched along a size-1 axis, or sizes do not match: NumPy's results and errors.
# Values used only inside the loop nest become scalars; the others are stored once.
#
# Every element is computed with the operations of the statements it replaces, in the same order
# (sums accumulate in the runtime helpers' order), and element types follow Numba's typing of the
# whole-array statements: where an int or bool operand takes part, the scalar operation is written
# as its NumPy ufunc (``np.add(a, b)``), which Numba types as it types the array operation.

_UNARY_UFUNCS = {"exp", "log", "sqrt", "sin", "cos", "tan", "arcsin", "arccos", "arctan", "sinh",
                 "cosh", "tanh", "expm1", "log1p", "log2", "log10", "abs", "absolute", "square",
                 "negative", "floor", "ceil", "sign"}
_BINARY_UFUNCS = {"maximum", "minimum", "arctan2", "hypot", "add", "subtract", "multiply",
                  "divide", "true_divide"}
_BINOP_UFUNC = {ast.Add: ("+", "add"), ast.Sub: ("-", "subtract"), ast.Mult: ("*", "multiply"),
                ast.Div: ("/", "true_divide")}
_COMPARE_UFUNC = {ast.Gt: (">", "greater"), ast.GtE: (">=", "greater_equal"), ast.Lt: ("<", "less"),
                  ast.LtE: ("<=", "less_equal"), ast.Eq: ("==", "equal"),
                  ast.NotEq: ("!=", "not_equal")}
# calls whose result is a new array (never one of their arguments)
_FRESH_CALLS = {"reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod", "expand_reduced",
                "max_adjoint", "min_adjoint", "prod_adjoint", "matmul_grad_left", "matmul_grad_right", "gather2",
                "reduced_count", "range_length", "clip_scalar", "push_float", "push_int", "matmul"}
_FRESH_NP = _UNARY_UFUNCS | _BINARY_UFUNCS | {
    "zeros", "zeros_like", "ones", "ones_like", "empty", "empty_like", "full", "full_like", "arange",
    "sum", "mean", "max", "min", "amax", "amin", "prod", "dot", "outer", "where", "clip", "float32",
    "float64", "concatenate", "stack", "copy"}
_NEW_ARRAY = {"np.zeros_like", "np.zeros", "np.empty_like", "np.empty", "np.ones_like", "np.ones"}
_IN_PLACE_HELPERS = {"scatter_add1", "scatter_add2"}     # write into their first argument


# Set to False to generate the statements as written (tests and benchmarks compare both; the
# switch is part of the generated modules' cache key, codegen.codegen_options).
FUSE = True


def lower_for_cpu(sections, analysis):
    """Rewrites for the Numba-compiled target that need the whole function (``sections``: its
    consecutive parts, e.g. forward sweep, reverse sweep, return): matrix products through the
    cpu backend's ``matmul`` (NumPy's BLAS) when the backend has one, then loop fusion."""
    sections = [_matrix_products(stmts, analysis) for stmts in sections]
    return fuse_loops(sections, analysis)


def _backend_matmul():
    """Whether generated cpu code can call ``matmul`` (the backend and code generation know it)."""
    return _backend_has("matmul")


def _backend_has(name):
    """Whether generated cpu code can call runtime helper ``name``: the cpu backend defines it
    and code generation imports it."""
    from . import codegen
    if name not in codegen.RUNTIME_NAMES:
        return False
    from .backends import cpu
    return hasattr(cpu, name)


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


def fuse_loops(sections, analysis):
    """Rewrite chains of whole-array statements into loop nests (for the Numba-compiled target).

    ``sections`` are consecutive parts of one function body (forward sweep, reverse sweep,
    return): statements are fused within a section, uses are counted over the whole function.
    Returns the new sections.
    """
    if analysis is None or not FUSE:
        return sections
    return _Fusion(sections, analysis).run()


def _call_name(node):
    """``np.exp(x)`` -> ``"np.exp"``, ``unbroadcast(g, x)`` -> ``"unbroadcast"``, else None."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "np":
        return "np." + func.attr
    return None


def _const_int(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _const_int(node.operand)
        return None if inner is None else -inner
    return None


def _is_float32_literal(node):
    return _call_name(node) == "np.float32" and len(node.args) == 1 and not node.keywords and \
        isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, (int, float)) and \
        not isinstance(node.args[0].value, bool)


def _basic_index(index):
    """``[:, 0]`` -> ``[":", 0]`` (full slices and integer constants only), else None."""
    parts = index.elts if isinstance(index, ast.Tuple) else [index]
    out = []
    for part in parts:
        if isinstance(part, ast.Slice) and part.lower is None and part.upper is None and part.step is None:
            out.append(":")
            continue
        value = _const_int(part)
        if value is None:
            return None
        out.append(value)
    return out


def _is_comment(stmt):
    from .transform import _Comment
    return isinstance(stmt, _Comment)


def _names(node):
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]


def _comment(text):
    """A comment line in generated code."""
    from .codegen import COMMENT_MARK
    return ast.Expr(value=ast.Constant(COMMENT_MARK + text))


class _Unfusable(Exception):
    """The statement cannot join the loop nest."""


class _Facts:
    """Static knowledge of array sizes: each dimension is ``1`` or a symbol; equal symbols are
    equal sizes at run time."""

    def __init__(self, fusion):
        self.f = fusion
        self.dims = {}        # array name -> tuple of dims
        self.sizes = {}       # int name -> symbol (``n = s[0]``)
        self.shapes = {}      # tuple name -> dims (``s = X.shape``)
        self.aranges = {}     # name -> symbol of n, for ``name = np.arange(n)``
        self._count = 0

    def unknown(self):
        self._count += 1
        return ("?", self._count)

    def of(self, name):
        """The dims of array ``name`` (unknown ones where it is rebound), or None."""
        kind = self.f.kind(name)
        if kind is None or not kind.is_array:
            return None
        if name in self.dims:
            return self.dims[name]
        if self.f.stable(name):
            self.dims[name] = tuple(("v", name, k) for k in range(kind.ndim))
            return self.dims[name]
        return tuple(self.unknown() for _ in range(kind.ndim))

    def size_symbol(self, node):
        value = _const_int(node)
        if value is not None:
            return 1 if value == 1 else ("c", value)
        if isinstance(node, ast.Name):
            if node.id in self.sizes:
                return self.sizes[node.id]
            return ("s", node.id) if self.f.stable(node.id) else self.unknown()
        if isinstance(node, ast.Subscript):
            shape = self.shape_of(node.value)
            index = _const_int(node.slice)
            if shape is not None and index is not None and -len(shape) <= index < len(shape):
                return shape[index]
        return self.unknown()

    def shape_of(self, node):
        if isinstance(node, ast.Attribute) and node.attr == "shape" and isinstance(node.value, ast.Name):
            return self.of(node.value.id)
        if isinstance(node, ast.Name):
            return self.shapes.get(node.id)
        return None

    def learn(self, stmt):
        """Record what a top-level statement establishes."""
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and
                isinstance(stmt.targets[0], ast.Name)):
            return
        name = stmt.targets[0].id
        if not self.f.stable(name):
            return
        value = stmt.value
        kind = self.f.kind(name)
        shape = self.shape_of(value)
        if shape is not None and (kind is None or kind.cls == "tuple"):
            self.shapes[name] = shape
            return
        if kind is not None and kind.cls == "int":
            self.sizes[name] = self.size_symbol(value)
            return
        if kind is None or not kind.is_array:
            return
        dims = self.infer(value)
        if dims is None or len(dims) != kind.ndim:
            dims = (None,) * kind.ndim
        self.dims[name] = tuple(("v", name, k) if d is None else d for k, d in enumerate(dims))
        if _call_name(value) == "np.arange" and len(value.args) == 1 and not value.keywords:
            self.aranges[name] = self.dims[name][0]

    @staticmethod
    def broadcast(operands):
        ndim = max((len(d) for d in operands), default=0)
        out = []
        for pos in range(ndim):
            seen = {d[len(d) - ndim + pos] for d in operands if len(d) - ndim + pos >= 0}
            big = seen - {1}
            out.append(1 if not big else next(iter(big)) if len(big) == 1 else None)
        return tuple(out)

    def infer(self, node):
        """The dims of an expression's result (None: unknown), or None."""
        if isinstance(node, ast.Name):
            dims = self.of(node.id)
            return () if dims is None else dims
        if isinstance(node, ast.Constant) or _is_float32_literal(node):
            return ()
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            return self._matmul(self.infer(node.left), self.infer(node.right))
        if isinstance(node, (ast.BinOp, ast.Compare, ast.UnaryOp)):
            parts = [node.left, node.right] if isinstance(node, ast.BinOp) else \
                [node.left] + node.comparators if isinstance(node, ast.Compare) else [node.operand]
            dims = [self.infer(p) for p in parts]
            return None if any(d is None for d in dims) else self.broadcast(dims)
        if isinstance(node, ast.Attribute) and node.attr == "T":
            dims = self.infer(node.value)
            return None if dims is None else tuple(reversed(dims))
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            dims, entries = self.of(node.value.id), _basic_index(node.slice)
            if dims is None or entries is None or len(entries) > len(dims):
                return None
            return tuple(d for d, e in zip(dims, entries) if e == ":") + dims[len(entries):]
        call = _call_name(node)
        if call is None:
            return None
        args = node.args
        if call.startswith("np.") and (call[3:] in _UNARY_UFUNCS | _BINARY_UFUNCS or call == "np.where"):
            dims = [self.infer(a) for a in args]
            return None if any(d is None for d in dims) else self.broadcast(dims)
        first_like = {"np.zeros_like": 0, "np.empty_like": 0, "np.ones_like": 0, "np.full_like": 0,
                      "np.copy": 0, "unbroadcast": 1, "expand_reduced": 1, "max_adjoint": 1,
                      "min_adjoint": 1, "matmul_grad_left": 1, "matmul_grad_right": 2}
        if call in first_like and len(args) > first_like[call]:
            return self.infer(args[first_like[call]])
        if call in ("np.dot", "matmul") and len(args) == 2:
            return self._matmul(self.infer(args[0]), self.infer(args[1]))
        if call == "np.arange" and len(args) == 1:
            return (self.size_symbol(args[0]),)
        if call == "gather2" and len(args) == 3:
            rows, cols = self.infer(args[1]), self.infer(args[2])
            return None if rows is None or cols is None else self.broadcast([rows, cols])
        if call in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min") and len(args) == 3:
            dims, axis, keep = self.infer(args[0]), _const_int(args[1]), args[2]
            if dims is None or axis is None or not isinstance(keep, ast.Constant) or \
                    not -len(dims) <= axis < len(dims):
                return None
            axis %= len(dims)
            return dims[:axis] + ((1,) if keep.value else ()) + dims[axis + 1:]
        return None

    @staticmethod
    def _matmul(a, b):
        if a is None or b is None:
            return None
        if len(a) == 2 and len(b) == 2:
            return (a[0], b[1])
        if len(a) == 2 and len(b) == 1:
            return (a[0],)
        if len(a) == 1 and len(b) == 2:
            return (b[1],)
        return None


class _Value:
    """An array the loop nest computes (or reads under another name)."""

    def __init__(self, name, form, entries, stmt):
        self.name = name
        self.form = form          # "map" | "alias" | "row" (reduced over the innermost axes)
        self.entries = entries    # its element's index: per dim ("ax", group axis) or ("c", 0)
        self.stmt = stmt
        self.expr = None          # map: the element; alias: IR reading its element; row: summand
        self.op = None            # row: "sum" | "max" | "min"
        self.scope = None         # the block whose iterations see its scalar
        self.block = None         # row: the block whose end completes it
        self.done = False         # row: complete (its block has ended)
        self.materialize = False  # stored into an array (used outside, or read from memory)
        self.scalar = None        # name of the scalar holding its element
        self.bases = []           # alias: in-group values it refers to


class _Block:
    """A loop body: the statements at one loop depth (``level``), nested loops in between."""

    def __init__(self, level, parent):
        self.level = level
        self.parent = parent
        self.items = []           # ("plan", plan) | ("init", plan) | ("final", plan) | _Block
        self.closing = []         # items added to the parent when this loop ends

    def chain(self):
        block, out = self, []
        while block is not None:
            out.append(block)
            block = block.parent
        return out


class _Plan:
    """How one statement runs inside the loop nest."""

    def __init__(self, stmt, position):
        self.stmt = stmt
        self.position = position  # (section, index)
        self.form = None          # "map" | "alias" | "update" | "row" | "later" | "argext"
        self.level = 0            # loop depth of its element code
        self.new_axes = []        # [(symbol, size code)] added to the group's axes
        self.guards = []
        self.join_guards = False  # a guard relates it to the group's existing axes
        self.accesses = []        # (array, entries, level) of arrays that exist before the group
        self.writes = set()       # arrays it updates in place
        self.values_read = set()  # in-group values it reads
        self.value = None         # the _Value it defines
        self.expr = None          # its element IR
        self.target = None        # update/row/later/argext: (array, entries, "+" | "-") or None
        self.op = None            # row/later: "sum" | "max" | "min"
        self.scalar = None        # row accumulator / argext best value
        self.index_scalar = None  # argext best index
        self.gradient = None      # argext: IR of the gradient of a row
        self.passes = 1           # a pass over memory of its own when not fused
        self.result_level = 0     # row/argext: loop depth of the reduced result
        self.part = None          # later (an update): the array accumulating the sums
        self.part_entries = ()    # later: the result's entries
        self.comments = []        # comments of the sweep to repeat above its code
        self.block = None         # where it was placed
        self.final_block = None   # row/argext: where the accumulator starts and is used


class _Group:
    def __init__(self):
        self.axes = []            # [(symbol, size code)]
        self.guards = []
        self.stmts = []           # the statements it replaces, comments included (the fallback)
        self.positions = set()    # (section, index) of its statements
        self.plans = []
        self.hoisted = []
        self.values = {}          # name -> _Value
        self.accesses = {}        # array -> [(entries, level)]
        self.written = set()
        self.later = set()        # arrays complete only after the loop nest
        self.root = _Block(0, None)
        self.open = [self.root]
        self.comments = []        # comments waiting for the next statement
        self.sequence = []        # every statement it took, hoisted ones included, in order
        self.pending = {}         # array -> the loop whose end applies a reduction's update to it

    @property
    def passes(self):
        return sum(plan.passes for plan in self.plans)

    def linked(self, plan):
        """Whether ``plan`` shares data with the group (a reason to test sizes for it)."""
        return bool(plan.values_read) or any(name in self.accesses for name, _, _ in plan.accesses) or \
            bool(plan.writes & set(self.accesses))


class _Fusion:
    def __init__(self, sections, analysis):
        self.sections = sections
        self.analysis = analysis
        self.unsure = set()
        self.all_names = set()
        self.defs = {}            # name -> bindings (augmented assignments of arrays excluded)
        self.top_defs = {}
        self.uses = {}            # name -> [(section, index)] of the statements reading it
        self.escapes = {}         # name -> [(section, index)] where another name may alias it
        for s, stmts in enumerate(sections):
            for i, stmt in enumerate(stmts):
                if not isinstance(stmt, ast.stmt) or _is_comment(stmt):
                    continue
                nested = isinstance(stmt, (ast.For, ast.While, ast.If))
                in_place = {id(node.target) for node in ast.walk(stmt)
                            if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name)
                            and self.kind_is_array(node.target.id)}
                for node in ast.walk(stmt):
                    if not isinstance(node, ast.Name):
                        continue
                    self.all_names.add(node.id)
                    if isinstance(node.ctx, ast.Store):
                        if id(node) in in_place:
                            self.uses.setdefault(node.id, []).append((s, i))
                            continue
                        self.defs[node.id] = self.defs.get(node.id, 0) + 1
                        if not nested:
                            self.top_defs[node.id] = self.top_defs.get(node.id, 0) + 1
                    else:
                        self.uses.setdefault(node.id, []).append((s, i))
                for inner in _walk_statements([stmt]):
                    for name in _escaping(inner):
                        self.escapes.setdefault(name, []).append((s, i))
        # a whole-array reduction with keepdims: the cpu runtime returns a scalar where NumPy (and
        # the kinds) have an array of ones
        self.unsure = set()
        for stmts in sections:
            for stmt in _walk_statements(stmts):
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                        isinstance(stmt.targets[0], ast.Name) and \
                        _call_name(stmt.value) in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min") \
                        and len(stmt.value.args) > 1 and isinstance(stmt.value.args[1], ast.Constant) \
                        and stmt.value.args[1].value is None:
                    self.unsure.add(stmt.targets[0].id)
        self.facts = _Facts(self)
        self.loop_vars = []
        self.probe_name = None

    # -- names and kinds ----------------------------------------------------------------------
    def kind(self, name):
        """The kind of a variable (an adjoint has its primal's), None when unknown or when the
        compiled value may not be what the kind says."""
        kinds = self.analysis.kinds
        if name in self.unsure:
            return None
        if name in kinds:
            return kinds[name]
        if name.startswith("_adj_"):
            for primal in (name[4:], name[5:]):
                if primal in kinds and kinds[primal].cls != "tuple":
                    return None if primal in self.unsure else kinds[primal]
        return None

    def kind_is_array(self, name):
        kind = self.kind(name)
        return kind is not None and kind.is_array

    def stable(self, name):
        """Bound once, at the top level (or an argument never rebound)."""
        count = self.defs.get(name, 0)
        if count == 0:
            return self.kind(name) is not None
        return count == 1 and self.top_defs.get(name, 0) == 1

    def loop_var(self, axis):
        """The name of the loop index over axis ``axis`` (the same in every loop nest)."""
        while len(self.loop_vars) <= axis:
            self.loop_vars.append(self.fresh(f"_i{len(self.loop_vars)}"))
        return self.loop_vars[axis]

    def probe(self):
        if self.probe_name is None:
            self.probe_name = self.fresh("_x")
        return self.probe_name

    def fresh(self, base):
        name, count = base, 1
        while name in self.all_names:
            count += 1
            name = f"{base}{count}"
        self.all_names.add(name)
        return name

    # -- driver -------------------------------------------------------------------------------
    def run(self):
        out = []
        for s, stmts in enumerate(self.sections):
            result, group = [], None
            for i, stmt in enumerate(stmts):
                if _is_comment(stmt) or not isinstance(stmt, ast.stmt):
                    if group is not None:
                        group.stmts.append(stmt)
                        group.comments.append(stmt)
                        group.sequence.append(stmt)
                    else:
                        result.append(stmt)
                    continue
                if group is not None:
                    if self._add(group, (s, i), stmt):
                        continue
                    if self._hoistable(group, stmt):
                        group.hoisted.append(stmt)
                        group.sequence.append(stmt)
                        self.facts.learn(stmt)
                        continue
                    result += self._finish(group)
                    group = None
                group = _Group()
                if not self._add(group, (s, i), stmt):
                    group = None
                    result.append(stmt)
                    self.facts.learn(stmt)
            if group is not None:
                result += self._finish(group)
            out.append(result)
        return out

    def _add(self, group, position, stmt):
        try:
            plan = self._plan(group, position, stmt)
            if plan.join_guards and group.plans and not group.linked(plan):
                raise _Unfusable     # unrelated sizes: a test that might fail for the whole nest
            self._check_accesses(group, plan)
        except _Unfusable:
            return False
        self._commit(group, plan)
        self.facts.learn(stmt)
        return True

    def _hoistable(self, group, stmt):
        """A side-effect free assignment that neither reads nor writes what the group computes
        or updates: it can run before the loop nest."""
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and
                isinstance(stmt.targets[0], ast.Name)):
            return False
        target = stmt.targets[0].id
        if not self.stable(target):
            return False
        produced = set(group.values) | group.written
        if target in produced or target in group.accesses or \
                any(name in produced for name in _names(stmt.value)):
            return False
        for node in ast.walk(stmt.value):
            if isinstance(node, ast.Call):
                name = _call_name(node)
                if name is None or not (name.startswith("np.") and name[3:] in _FRESH_NP or
                                        name in ("reduced_count", "range_length")):
                    return False
        return True

    # -- planning -----------------------------------------------------------------------------
    def _plan(self, group, position, stmt):
        plan = _Plan(stmt, position)
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            target = stmt.targets[0].id
            if not self.stable(target) or not self.kind_is_array(target):
                raise _Unfusable
            self._plan_assign(group, plan, target, stmt.value)
        elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, (ast.Add, ast.Sub)):
            sign = "+" if isinstance(stmt.op, ast.Add) else "-"
            if isinstance(stmt.target, ast.Name) and self.kind_is_array(stmt.target.id):
                self._plan_update(group, plan, (stmt.target.id, None, sign), stmt.value)
            elif isinstance(stmt.target, ast.Subscript) and isinstance(stmt.target.value, ast.Name) \
                    and self.kind_is_array(stmt.target.value.id):
                entries = _basic_index(stmt.target.slice)
                if entries is None:
                    raise _Unfusable
                self._plan_update(group, plan, (stmt.target.value.id, entries, sign), stmt.value)
            else:
                raise _Unfusable
        elif isinstance(stmt, ast.Expr) and _call_name(stmt.value) == "scatter_add2":
            self._plan_scatter(group, plan, stmt.value)
        else:
            raise _Unfusable
        return plan

    def _axis(self, group, plan, axis):
        axes = group.axes + plan.new_axes
        if axis >= len(axes):
            raise _Unfusable
        return axes[axis]

    def _make_space(self, group, plan, arrays, ndim):
        """Group axes 0..ndim-1 for a statement; axes the group does not have yet take their size
        from the first of ``arrays`` (arrays that exist before the group, right-aligned) with one."""
        for pos in range(len(group.axes) + len(plan.new_axes), ndim):
            found = None
            for name in arrays:
                dims = self.facts.of(name)
                k = pos - (ndim - len(dims)) if dims is not None else -1
                if k >= 0 and dims[k] != 1:
                    found = (dims[k], f"{name}.shape[{k}]")
                    break
            if found is None:
                raise _Unfusable
            plan.new_axes.append(found)
        return list(range(ndim))

    def _entries(self, group, plan, name, space, stretch=True):
        """Index entries reading array ``name`` (existing before the group) inside a statement
        over ``space``, right-aligned as in NumPy broadcasting; size tests go to ``plan``."""
        dims = self.facts.of(name)
        if dims is None or len(dims) > len(space):
            raise _Unfusable
        offset = len(space) - len(dims)
        entries = []
        for k, d in enumerate(dims):
            axis = space[offset + k]
            symbol = self._axis(group, plan, axis)[0]
            if d == 1 and symbol != 1 and stretch:
                entries.append(("c", 0))
                continue
            self._same(group, plan, name, k, d, axis)
            entries.append(("ax", axis))
        return tuple(entries)

    def _same(self, group, plan, name, k, d, axis):
        """Test (unless known) that dimension ``k`` of array ``name`` (symbol ``d``) has the size
        of group axis ``axis``. Tests of one symbol against one axis are made once."""
        symbol, size = self._axis(group, plan, axis)
        if d == symbol:
            return
        code = f"{name}.shape[{k}] == {size}"
        plan.guards.append((("eq", d, axis) if d != 1 and d[0] != "?" else code, code))
        if axis < len(group.axes):
            plan.join_guards = True

    def _expr_ndim(self, node):
        if isinstance(node, ast.Name):
            kind = self.kind(node.id)
            if kind is None:
                raise _Unfusable
            return kind.ndim if kind.is_array else 0
        if isinstance(node, ast.Constant) or _is_float32_literal(node):
            return 0
        if isinstance(node, ast.BinOp):
            return max(self._expr_ndim(node.left), self._expr_ndim(node.right))
        if isinstance(node, ast.UnaryOp):
            return self._expr_ndim(node.operand)
        if isinstance(node, ast.Compare):
            return max(self._expr_ndim(p) for p in [node.left] + node.comparators)
        call = _call_name(node)
        if call == "expand_reduced" and len(node.args) == 4 and isinstance(node.args[1], ast.Name):
            kind = self.kind(node.args[1].id)
            if kind is None or not kind.is_array:
                raise _Unfusable
            return kind.ndim
        if call == "reduced_count":
            return 0
        if call == "unbroadcast" and len(node.args) == 2:      # inside an expression: no sums
            ndim = self._expr_ndim(node.args[0])
            if not isinstance(node.args[1], ast.Name) or not self.kind_is_array(node.args[1].id) or \
                    self.kind(node.args[1].id).ndim != ndim:
                raise _Unfusable
            return ndim
        if call is not None and call.startswith("np.") and node.args and not node.keywords:
            return max(self._expr_ndim(a) for a in node.args)
        raise _Unfusable

    def _inputs(self, group, node):
        """Arrays an expression reads that exist before the group."""
        return [n for n in _names(node) if self.kind_is_array(n) and n not in group.values]

    def _read(self, group, plan, name, space):
        """IR reading array ``name`` at the current element of a statement over ``space``."""
        if name in group.later:
            raise _Unfusable
        if name in group.values:
            value = group.values[name]
            offset = len(space) - len(value.entries)
            if offset < 0:
                raise _Unfusable
            for k, entry in enumerate(value.entries):
                if entry[0] == "ax" and entry[1] != space[offset + k]:
                    raise _Unfusable
            plan.values_read.add(name)
            if value.form == "alias":
                plan.values_read.update(value.bases)
                for node in _ir_reads(value.expr):
                    if node[1] in group.later:
                        raise _Unfusable
                    plan.accesses.append((node[1], node[2], len(space)))
                return value.expr
            return ("val", name, value.entries)
        entries = self._entries(group, plan, name, space)
        plan.accesses.append((name, entries, len(space)))
        return ("read", name, entries)

    def _element(self, group, plan, node, space):
        """Element IR of an elementwise expression over ``space`` and its element class
        ('float' | 'pyfloat' (a float64 literal) | 'int' | 'bool')."""
        if isinstance(node, ast.Name):
            kind = self.kind(node.id)
            if kind is None:
                raise _Unfusable
            if not kind.is_array:
                if kind.cls not in ("float", "int", "bool"):
                    raise _Unfusable
                return ("code", node.id), kind.cls
            if kind.ndim > len(space):
                raise _Unfusable
            return self._read(group, plan, node.id, space[len(space) - kind.ndim:]), kind.dtype
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool):
                return ("code", repr(node.value)), "bool"
            if isinstance(node.value, int):
                return ("code", repr(node.value)), "int"
            if isinstance(node.value, float):
                return ("code", repr(node.value)), "pyfloat"
            raise _Unfusable
        if _is_float32_literal(node):
            return ("code", ast.unparse(node)), "float"
        floats = ("float", "pyfloat")
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_UFUNC:
            (left, lk), (right, rk) = (self._element(group, plan, node.left, space),
                                       self._element(group, plan, node.right, space))
            symbol, ufunc = _BINOP_UFUNC[type(node.op)]
            if lk in floats and rk in floats:
                return ("fmt", "({0} " + symbol + " {1})", [left, right]), \
                    "float" if "float" in (lk, rk) else "pyfloat"
            out = "float" if lk in floats or rk in floats or ufunc == "true_divide" else "int"
            return ("fmt", f"np.{ufunc}({{0}}, {{1}})", [left, right]), out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            operand, k = self._element(group, plan, node.operand, space)
            if k in floats:
                return ("fmt", "(-{0})", [operand]), k
            return ("fmt", "np.negative({0})", [operand]), k
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
            return self._element(group, plan, node.operand, space)
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE_UFUNC:
            (left, lk), (right, rk) = (self._element(group, plan, node.left, space),
                                       self._element(group, plan, node.comparators[0], space))
            symbol, ufunc = _COMPARE_UFUNC[type(node.ops[0])]
            if lk in floats and rk in floats:
                return ("fmt", "({0} " + symbol + " {1})", [left, right]), "bool"
            return ("fmt", f"np.{ufunc}({{0}}, {{1}})", [left, right]), "bool"
        call = _call_name(node)
        if call == "reduced_count" and len(node.args) == 2 and isinstance(node.args[0], ast.Name) \
                and self.kind_is_array(node.args[0].id):
            x, axis = node.args[0].id, node.args[1]
            if isinstance(axis, ast.Constant) and axis.value is None:
                return ("code", f"{x}.size"), "int"
            if _const_int(axis) is None:
                raise _Unfusable
            return ("code", f"{x}.shape[{_const_int(axis)}]"), "int"
        if call == "expand_reduced" and len(node.args) == 4:
            return self._expanded(group, plan, node, space)
        if call == "unbroadcast" and len(node.args) == 2 and isinstance(node.args[1], ast.Name):
            summed, _ = self._unbroadcast_sums(group, plan, node.args[1].id, space)
            if any(summed):
                raise _Unfusable
            return self._element(group, plan, node.args[0], space)
        if call is not None and call.startswith("np.") and not node.keywords:
            short = call[3:]
            args = [self._element(group, plan, a, space) for a in node.args]
            if short in _UNARY_UFUNCS and len(args) == 1:
                k = args[0][1]
                keeps = short in ("abs", "absolute", "square", "negative", "sign", "floor", "ceil")
                return ("fmt", f"np.{short}({{0}})", [args[0][0]]), k if keeps or k in floats else "float"
            if short in _BINARY_UFUNCS and len(args) == 2:
                kinds = {args[0][1], args[1][1]}
                out = "float" if kinds & {"float"} else "pyfloat" if kinds & {"pyfloat"} else "int"
                return ("fmt", f"np.{short}({{0}}, {{1}})", [args[0][0], args[1][0]]), out
            if short == "where" and len(args) == 3 and args[1][1] in floats and args[2][1] in floats:
                return ("fmt", "({1} if {0} else {2})", [a[0] for a in args]), "float"
        raise _Unfusable

    # Statements ---------------------------------------------------------------------------------
    def _plan_assign(self, group, plan, target, value):
        ndim = self.kind(target).ndim
        call = _call_name(value)
        if isinstance(value, (ast.Name, ast.Subscript)):
            return self._plan_alias(group, plan, target, value)
        if call == "unbroadcast" and len(value.args) == 2:
            return self._plan_unbroadcast(group, plan, target, None, value.args[0], value.args[1])
        if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub) and \
                _call_name(value.operand) == "unbroadcast" and len(value.operand.args) == 2:
            # `-unbroadcast(g, like)` (a subtracted single contribution): the sum of -g
            negated = ast.UnaryOp(op=ast.USub(), operand=value.operand.args[0])
            return self._plan_unbroadcast(group, plan, target, None, negated, value.operand.args[1])
        if call in ("reduce_sum", "reduce_max", "reduce_min") and len(value.args) == 3:
            return self._plan_reduce(group, plan, target, value)
        if call == "expand_reduced" and len(value.args) == 4:
            return self._plan_expand(group, plan, target, value)
        if call == "gather2" and len(value.args) == 3:
            return self._plan_gather(group, plan, target, value)
        if ndim == 0 or self._expr_ndim(value) != ndim:
            raise _Unfusable
        space = self._make_space(group, plan, self._inputs(group, value), ndim)
        before = len(plan.accesses), set(plan.values_read)
        plan.expr, _ = self._element(group, plan, value, space)
        self._check_covered(group, plan, space, before)
        self._define_map(plan, target, space)

    def _check_covered(self, group, plan, space, before):
        """Every axis of the group an elementwise expression runs over must be an axis of one of
        its operands (those it read since ``before``): ``s * s`` with ``s`` of shape (n, 1) has
        shape (n, 1), and must not join a nest over (n, m) (it would be computed, and summed,
        m times)."""
        covered = set()
        for _, entries, _ in plan.accesses[before[0]:]:
            covered.update(e[1] for e in entries if e[0] == "ax")
        for name in plan.values_read - before[1]:
            value = group.values.get(name)
            if value is not None:
                covered.update(e[1] for e in value.entries if e[0] == "ax")
        first_new = len(group.axes)
        if any(u < first_new and u not in covered for u in space):
            raise _Unfusable

    def _define_map(self, plan, target, space):
        value = _Value(target, "map", tuple(("ax", u) for u in space), plan.stmt)
        value.expr = plan.expr
        plan.value, plan.form, plan.level = value, "map", len(space)

    def _plan_alias(self, group, plan, target, node):
        """``x = y`` or a view ``x = y[:, 0]`` of a value the group computes: reads of x read y."""
        if isinstance(node, ast.Name):
            base, index = node.id, []
        elif isinstance(node.value, ast.Name):
            base, index = node.value.id, _basic_index(node.slice)
        else:
            raise _Unfusable
        if index is None or base not in group.values or base in group.later:
            raise _Unfusable
        source = group.values[base]
        if source.form == "row" and not source.done:
            raise _Unfusable
        index = index + [":"] * (len(source.entries) - len(index))
        if len(index) != len(source.entries):
            raise _Unfusable
        own = []
        for entry, source_entry in zip(index, source.entries):
            if entry == ":":
                own.append(source_entry)
            elif source_entry != ("c", 0) or entry not in (0, -1):
                raise _Unfusable          # picks one element along an axis the group iterates
        own = tuple(own)
        if len(own) != self.kind(target).ndim or any(e != ("ax", k) for k, e in enumerate(own)
                                                     if e[0] == "ax"):
            raise _Unfusable
        value = _Value(target, "alias", own, plan.stmt)
        value.expr = ("val", base, source.entries) if source.form != "alias" else source.expr
        value.bases = [base] + list(source.bases)
        plan.values_read.update(value.bases)
        plan.value, plan.form, plan.passes = value, "alias", 0
        plan.level = max([e[1] + 1 for e in own if e[0] == "ax"] or [0])

    def _unbroadcast_sums(self, group, plan, like, space):
        """For ``unbroadcast(g, like)`` over ``space``: which axes are summed, and the result's
        entries (("c", 0) for a summed axis ``like`` keeps with size 1)."""
        if like in group.values:
            value = group.values[like]
            offset = len(space) - len(value.entries)
            if offset < 0:
                raise _Unfusable
            summed = [True] * offset
            for k, entry in enumerate(value.entries):
                if entry[0] == "ax" and entry[1] != space[offset + k]:
                    raise _Unfusable
                summed.append(entry[0] != "ax")
            return summed, value.entries
        dims = self.facts.of(like)
        if dims is None or len(dims) > len(space):
            raise _Unfusable
        offset = len(space) - len(dims)
        summed, entries = [True] * offset, []
        for k, d in enumerate(dims):
            axis = space[offset + k]
            symbol = self._axis(group, plan, axis)[0]
            if d == 1 and symbol != 1:
                summed.append(True)
                entries.append(("c", 0))
                continue
            self._same(group, plan, like, k, d, axis)
            summed.append(False)
            entries.append(("ax", axis))
        return summed, tuple(entries)

    def _plan_unbroadcast(self, group, plan, target, update, gradient, like_node):
        """``x = unbroadcast(E, like)`` or ``T op= unbroadcast(E, like)``."""
        if not isinstance(like_node, ast.Name) or not self.kind_is_array(like_node.id):
            raise _Unfusable
        like = like_node.id
        ndim = self._expr_ndim(gradient)
        if ndim == 0:
            raise _Unfusable
        space = self._make_space(group, plan, self._inputs(group, gradient) +
                                 ([] if like in group.values else [like]), ndim)
        summed, entries = self._unbroadcast_sums(group, plan, like, space)
        before = len(plan.accesses), set(plan.values_read)
        plan.expr = self._element(group, plan, gradient, space)[0]
        self._check_covered(group, plan, space, before)
        if not any(summed):
            if update is not None:
                return self._plan_update_map(group, plan, update, space)
            if isinstance(gradient, ast.Name):
                # NumPy's unbroadcast returns the gradient itself: x is another name for it
                value = _Value(target, "alias", tuple(("ax", u) for u in space), plan.stmt)
                value.expr = plan.expr
                if gradient.id in group.values:
                    value.bases = [gradient.id] + list(group.values[gradient.id].bases)
                plan.value, plan.form, plan.passes, plan.level = value, "alias", 0, ndim
                return None
            return self._define_map(plan, target, space)
        return self._reduction(group, plan, target, update, space, summed, entries, "sum")

    def _reduction(self, group, plan, target, update, space, summed, entries, op):
        """``plan.expr`` reduced over the summed axes of ``space``; ``entries`` index the result
        (("c", 0) where a summed axis is kept with size 1)."""
        kept = [u for u, s in zip(space, summed) if not s]
        row = kept == list(range(len(kept)))       # the innermost axes are summed
        if not row and op != "sum":
            raise _Unfusable
        plan.level, plan.op, plan.result_level = len(space), op, len(kept)
        plan.form = "row" if row else "later"
        plan.part_entries = tuple(entries)
        if update is not None:
            name, index, sign = update
            if index is None:
                target_entries = self._result_entries(group, plan, name, entries)
            elif all(e[0] == "ax" for e in entries):
                target_entries = self._view_entries(group, plan, name, index, [e[1] for e in entries])
            else:
                raise _Unfusable
            plan.target = (name, tuple(target_entries), sign)
            if row:
                self._write(group, plan, name, target_entries, len(kept))
            else:
                plan.writes.add(name)       # updated after the loop nest, as written
        else:
            plan.value = _Value(target, plan.form, tuple(entries), plan.stmt)
            plan.value.expr, plan.value.op = plan.expr, op
        if op in ("max", "min"):
            for u, s in zip(space, summed):
                if s:
                    code = f"{self._axis(group, plan, u)[1]} > 0"
                    plan.guards.append((code, code))

    def _result_entries(self, group, plan, name, entries):
        """Array ``name`` updated with a reduction's result indexed by ``entries``: it must
        have the result's shape."""
        dims = self.facts.of(name)
        if dims is None or len(dims) != len(entries):
            raise _Unfusable
        for k, (d, entry) in enumerate(zip(dims, entries)):
            if entry[0] == "c":
                if d != 1:
                    plan.guards.append((f"{name}.shape[{k}] == 1",) * 2)
                continue
            self._same(group, plan, name, k, d, entry[1])
        return tuple(entries)

    def _view_entries(self, group, plan, name, index, space):
        """Entries of the elements of view ``name[index]`` that lie over ``space``."""
        dims = self.facts.of(name)
        if dims is None or len(index) > len(dims):
            raise _Unfusable
        index = list(index) + [":"] * (len(dims) - len(index))
        if sum(1 for e in index if e == ":") != len(space):
            raise _Unfusable
        out, pos = [], 0
        for k, (d, entry) in enumerate(zip(dims, index)):
            if entry == ":":
                axis = space[pos]
                pos += 1
                symbol = self._axis(group, plan, axis)[0]
                if d == 1 and symbol != 1:
                    raise _Unfusable
                self._same(group, plan, name, k, d, axis)
                out.append(("ax", axis))
            else:
                if d == 1 and entry not in (0, -1):
                    raise _Unfusable
                if d != 1:
                    plan.guards.append((f"{name}.shape[{k}] > {entry if entry >= 0 else -entry - 1}",) * 2)
                out.append(("c", entry))
        return tuple(out)

    def _write(self, group, plan, name, entries, level):
        """``plan`` updates array ``name`` in place (at loop depth ``level``; None: after the nest)."""
        if not self._owned(group, name, plan.position):
            raise _Unfusable
        plan.writes.add(name)
        if level is not None:
            plan.accesses.append((name, tuple(entries), level))

    def _owned(self, group, name, position):
        """An array this function creates (``np.zeros_like`` & co.) that no other name can
        refer to while the group updates it in place."""
        if self.defs.get(name) != 1 or self.top_defs.get(name) != 1:
            return False
        created = False
        for stmts in self.sections:
            for stmt in stmts:
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                        isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == name:
                    created = _call_name(stmt.value) in _NEW_ARRAY
        if not created:
            return False
        aliases = {p.position for p in group.plans if p.form == "alias"}
        return all(p > position or p in aliases for p in self.escapes.get(name, []))

    def _plan_update_map(self, group, plan, update, space):
        """``T op= E`` element by element, T (or a view of it) spanning ``space``."""
        name, index, sign = update
        if index is None:
            dims = self.facts.of(name)
            if dims is None or len(dims) != len(space):
                raise _Unfusable
            entries = self._entries(group, plan, name, space, stretch=False)
        else:
            entries = self._view_entries(group, plan, name, index, space)
        plan.target = (name, entries, sign)
        plan.form, plan.level = "update", len(space)
        self._write(group, plan, name, entries, len(space))

    def _plan_update(self, group, plan, update, value):
        name, index, _ = update
        call = _call_name(value)
        if call == "unbroadcast" and len(value.args) == 2:
            return self._plan_unbroadcast(group, plan, None, update, value.args[0], value.args[1])
        if call in ("max_adjoint", "min_adjoint") and len(value.args) == 4 and index is None:
            return self._plan_extremum_adjoint(group, plan, update, value)
        ndim = self._expr_ndim(value)
        kind = self.kind(name)
        target_ndim = kind.ndim if index is None else \
            sum(1 for e in index if e == ":") + kind.ndim - len(index)
        if ndim != target_ndim or ndim == 0:
            raise _Unfusable
        space = self._make_space(group, plan, self._inputs(group, value) +
                                 ([name] if index is None else []), ndim)
        plan.expr, _ = self._element(group, plan, value, space)
        return self._plan_update_map(group, plan, update, space)

    def _plan_reduce(self, group, plan, target, value):
        x, axis_node, keep = value.args
        axis = _const_int(axis_node)
        if axis is None or not isinstance(keep, ast.Constant) or not isinstance(x, ast.Name):
            raise _Unfusable
        ndim = self._expr_ndim(x)
        if ndim == 0 or not -ndim <= axis < ndim:
            raise _Unfusable
        axis %= ndim
        space = self._make_space(group, plan, self._inputs(group, x), ndim)
        plan.expr, k = self._element(group, plan, x, space)
        op = {"reduce_sum": "sum", "reduce_max": "max", "reduce_min": "min"}[_call_name(value)]
        if k != "float":    # NumPy sums booleans and small integers as int64: not in the element type
            raise _Unfusable
        entries = tuple(("c", 0) if u == axis else ("ax", u) for u in space if u != axis or keep.value)
        self._reduction(group, plan, target, None, space, [u == axis for u in space], entries, op)

    def _plan_expand(self, group, plan, target, value):
        """``x = expand_reduced(g, like, axis, keepdims)``: g spread over ``like``'s shape."""
        like = value.args[1]
        if not isinstance(like, ast.Name) or not self.kind_is_array(like.id):
            raise _Unfusable
        ndim = self.kind(like.id).ndim
        space = self._make_space(group, plan, [] if like.id in group.values else [like.id], ndim)
        plan.expr, _ = self._expanded(group, plan, value, space)
        self._define_map(plan, target, space)

    def _expanded(self, group, plan, node, space):
        """Element IR of ``expand_reduced(g, like, axis, keepdims)`` over ``space`` (like's)."""
        gradient, like, axis_node, keep = node.args
        if not isinstance(like, ast.Name) or not self.kind_is_array(like.id) or \
                not isinstance(keep, ast.Constant) or not isinstance(gradient, ast.Name):
            raise _Unfusable
        ndim = self.kind(like.id).ndim
        if ndim != len(space):
            raise _Unfusable
        if like.id in group.values:
            if group.values[like.id].entries != tuple(("ax", u) for u in space):
                raise _Unfusable
        else:
            self._entries(group, plan, like.id, space, stretch=False)    # its shape: size tests
        g_kind = self.kind(gradient.id)
        if g_kind is None:
            raise _Unfusable
        if isinstance(axis_node, ast.Constant) and axis_node.value is None:
            if g_kind.is_array:
                raise _Unfusable
            return ("code", gradient.id), g_kind.cls
        axis = _const_int(axis_node)
        if axis is None or not -ndim <= axis < ndim or not g_kind.is_array or keep.value:
            raise _Unfusable
        axis %= ndim
        g_space = [u for k, u in enumerate(space) if k != axis]
        if g_kind.ndim != len(g_space):
            raise _Unfusable
        if gradient.id in group.values:
            return self._read(group, plan, gradient.id, g_space), g_kind.dtype
        dims = self.facts.of(gradient.id)
        entries = []
        for k, u in enumerate(g_space):
            self._same(group, plan, gradient.id, k, dims[k], u)
            entries.append(("ax", u))
        plan.accesses.append((gradient.id, tuple(entries), len(space)))
        return ("read", gradient.id, tuple(entries)), g_kind.dtype

    def _rows_space(self, group, plan, rows, cols):
        """The space of a row gather/scatter ``[rows, cols]`` with ``rows = np.arange(n)``."""
        if rows.id not in self.facts.aranges or rows.id in group.values or cols.id in group.values:
            raise _Unfusable
        if self.kind(rows.id).ndim != 1 or self.kind(cols.id).ndim != 1:
            raise _Unfusable
        space = self._make_space(group, plan, [rows.id], 1)
        self._entries(group, plan, rows.id, space, stretch=False)
        col_entries = self._entries(group, plan, cols.id, space, stretch=False)
        plan.accesses.append((cols.id, col_entries, 1))
        return space, ("read", cols.id, col_entries)

    def _row_entries(self, group, plan, name, column):
        """Entries of element ``[i, column]`` of 2-d array ``name`` in a row gather/scatter."""
        self._same(group, plan, name, 0, self.facts.of(name)[0], 0)
        return (("ax", 0), ("d", column))

    def _plan_gather(self, group, plan, target, value):
        """``x = gather2(z, rows, cols)`` with ``rows = np.arange(n)``: x[i] = z[i, cols[i]]."""
        z, rows, cols = value.args
        if not all(isinstance(a, ast.Name) and self.kind_is_array(a.id) for a in (z, rows, cols)) or \
                self.kind(target).ndim != 1 or self.kind(z.id).ndim != 2:
            raise _Unfusable
        space, column = self._rows_space(group, plan, rows, cols)
        if z.id in group.later:
            raise _Unfusable
        if z.id in group.values:
            source = group.values[z.id]
            if source.form != "map" or source.entries != (("ax", 0), ("ax", 1)):
                raise _Unfusable
            plan.values_read.add(z.id)
            plan.expr = ("val", z.id, (("ax", 0), ("d", column)))
        else:
            entries = self._row_entries(group, plan, z.id, column)
            plan.accesses.append((z.id, entries, 1))
            plan.expr = ("read", z.id, entries)
        self._define_map(plan, target, space)

    def _plan_scatter(self, group, plan, call):
        """``scatter_add2(A, rows, cols, g)`` with ``rows = np.arange(n)``: A[i, cols[i]] += g[i]."""
        if len(call.args) != 4 or call.keywords:
            raise _Unfusable
        adjoint, rows, cols, gradient = call.args
        if not all(isinstance(a, ast.Name) and self.kind_is_array(a.id) for a in (adjoint, rows, cols)) \
                or self.kind(adjoint.id).ndim != 2 or not isinstance(gradient, ast.Name):
            raise _Unfusable
        space, column = self._rows_space(group, plan, rows, cols)
        plan.expr, _ = self._element(group, plan, gradient, space)
        entries = self._row_entries(group, plan, adjoint.id, column)
        plan.target = (adjoint.id, entries, "+")
        plan.form, plan.level = "update", 1
        self._write(group, plan, adjoint.id, entries, 1)

    def _plan_extremum_adjoint(self, group, plan, update, value):
        """``T += max_adjoint(g, x, axis, keepdims)`` over the last axis: each row's gradient goes
        to the row's first extreme element."""
        name, _, sign = update
        gradient, x, axis_node, keep = value.args
        if not isinstance(x, ast.Name) or not isinstance(gradient, ast.Name) or \
                not isinstance(keep, ast.Constant) or not self.kind_is_array(x.id):
            raise _Unfusable
        ndim = self.kind(x.id).ndim
        axis = _const_int(axis_node)
        if ndim < 2 or axis is None or not -ndim <= axis < ndim or axis % ndim != ndim - 1:
            raise _Unfusable
        space = self._make_space(group, plan, self._inputs(group, x) + [name], ndim)
        plan.expr, k = self._element(group, plan, x, space)
        if k != "float":
            raise _Unfusable
        g_kind = self.kind(gradient.id)
        if g_kind is None or not g_kind.is_array or g_kind.ndim != (ndim if keep.value else ndim - 1):
            raise _Unfusable
        if keep.value:
            if gradient.id in group.values:
                plan.gradient = self._read(group, plan, gradient.id, space)
                entries = group.values[gradient.id].entries
            else:
                entries = self._entries(group, plan, gradient.id, space)
                plan.gradient = ("read", gradient.id, entries)
                plan.accesses.append((gradient.id, entries, ndim - 1))
            if entries[-1] != ("c", 0):
                raise _Unfusable
        else:
            plan.gradient = self._read(group, plan, gradient.id, space[:-1])
        target_entries = self._entries(group, plan, name, space, stretch=False)
        plan.op = "argmax" if _call_name(value) == "max_adjoint" else "argmin"
        plan.target = (name, target_entries[:-1] + (("d", ("arg",)),), sign)
        plan.form, plan.level, plan.result_level = "argext", ndim, ndim - 1
        self._write(group, plan, name, plan.target[1], ndim - 1)
        code = f"{self._axis(group, plan, ndim - 1)[1]} > 0"
        plan.guards.append((code, code))

    # -- placing a statement in the loop nest -------------------------------------------------
    def _check_accesses(self, group, plan):
        for name in plan.writes:
            if name in group.values or name in group.later:
                raise _Unfusable
        for name in group.written | plan.writes:
            accesses = list(group.accesses.get(name, []))
            accesses += [(e, lv) for n, e, lv in plan.accesses if n == name]
            if not _access_rule(accesses):
                raise _Unfusable

    def _commit(self, group, plan):
        group.axes += plan.new_axes
        keys = {key for key, _ in group.guards}
        for key, code in plan.guards:
            if key not in keys:
                keys.add(key)
                group.guards.append((key, code))
        for name, entries, level in plan.accesses:
            group.accesses.setdefault(name, []).append((entries, level))
        group.written |= plan.writes
        group.stmts.append(plan.stmt)
        group.sequence.append(plan.stmt)
        group.positions.add(plan.position)
        group.plans.append(plan)
        if plan.form == "later":
            if plan.target is not None:
                group.later.add(plan.target[0])
            else:
                group.later.add(plan.value.name)
        if plan.form == "alias":
            group.values[plan.value.name] = plan.value
            return
        # a row reduction being read must be complete, and an array a reduction updates must
        # be updated: end the loops that compute them
        for name in plan.values_read:
            value = group.values.get(name)
            if value is not None and value.form == "row" and not value.done:
                self._close(group, value.block.level - 1)
        touched = {name for name, _, _ in plan.accesses} | plan.writes
        for name in touched:
            pending = group.pending.get(name)
            if pending is not None and pending in group.open:
                self._close(group, pending.level - 1)
        self._close(group, plan.level)
        while len(group.open) - 1 < plan.level:
            block = _Block(len(group.open), group.open[-1])
            group.open[-1].items.append(block)
            group.open.append(block)
        block = group.open[plan.level]
        plan.comments, group.comments = group.comments, []
        if plan.form in ("row", "argext"):
            outer, inner = group.open[plan.result_level], group.open[plan.result_level + 1]
            outer.items.insert(outer.items.index(inner), ("init", plan))
            inner.closing.append(("final", plan))
            plan.final_block = outer
            if plan.target is not None:
                group.pending[plan.target[0]] = inner
            if plan.value is not None:
                plan.value.block, plan.value.scope = inner, outer
        elif plan.value is not None:
            plan.value.scope = block
        block.items.append(("plan", plan))
        plan.block = block
        if plan.value is not None:
            group.values[plan.value.name] = plan.value

    def _close(self, group, level):
        """End the loops deeper than ``level``."""
        while len(group.open) - 1 > level:
            block = group.open.pop()
            group.open[-1].items += block.closing
            for kind, plan in block.closing:
                if plan.value is not None:
                    plan.value.done = True

    # -- code ---------------------------------------------------------------------------------
    def _finish(self, group):
        """The statements replacing the group: hoisted ones, then the loop nest (and the
        statements as written, when the sizes need testing)."""
        self._close(group, 0)
        if group.passes < 2:
            return group.sequence
        trailing = group.comments        # comments about the statements after the group
        # (an alias takes no comments: those before it stay pending, but it is no comment itself
        # and must stay among the statements as written)
        end = len(group.stmts)
        while end and any(group.stmts[end - 1] is c for c in trailing):
            end -= 1
        group.stmts = group.stmts[:end]
        return group.hoisted + _Emitter(self, group).emit() + trailing


def _access_rule(accesses):
    """Loop order equals statement order for an array the group writes when every access
    indexes its first P dimensions with the loop indices 0..P-1 (``P`` the common prefix), the
    accesses at loop depth P index the rest freely (each runs once per iteration of those loops,
    in statement order), and the deeper ones all use one same index."""
    if not accesses:
        return True
    prefix = min(_identity_prefix(entries) for entries, _ in accesses)
    deep = {entries for entries, level in accesses if level > prefix}
    return len(deep) <= 1 and all(level >= prefix for _, level in accesses)


def _identity_prefix(entries):
    count = 0
    for k, entry in enumerate(entries):
        if entry != ("ax", k):
            break
        count += 1
    return count


def _ir_reads(ir):
    """The ("read", name, entries) nodes of an IR tree."""
    if ir[0] == "read":
        yield ir
        for entry in ir[2]:
            if entry[0] == "d":
                yield from _ir_reads(entry[1])
    elif ir[0] == "fmt":
        for arg in ir[2]:
            yield from _ir_reads(arg)
    elif ir[0] == "val":
        for entry in ir[2]:
            if entry[0] == "d":
                yield from _ir_reads(entry[1])


def _walk_statements(stmts):
    for stmt in stmts:
        if not isinstance(stmt, ast.stmt) or _is_comment(stmt):
            continue
        yield stmt
        for field in ("body", "orelse"):
            inner = getattr(stmt, field, None)
            if isinstance(inner, list):
                yield from _walk_statements(inner)


def _escaping(stmt):
    """Names whose array a statement may make another name (or a container) refer to."""
    if isinstance(stmt, ast.Assign):
        value = stmt.value
        if any(not isinstance(t, ast.Name) for t in stmt.targets):
            return set(_names(value))               # stored into an array / tuple unpacking
        if isinstance(value, ast.Name):
            return {value.id}
        if isinstance(value, (ast.Subscript, ast.Attribute, ast.Tuple, ast.List)):
            return set(_names(value))
        if isinstance(value, ast.Call):
            call = _call_name(value)
            if call == "unbroadcast":
                return set(_names(value.args[0])) if value.args else set()
            if call is not None and (call in _FRESH_CALLS or call.startswith("np.") and
                                     call[3:] in _FRESH_NP):
                return set()
            return set(_names(value))
        return set()
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        call = _call_name(stmt.value)
        if call in _IN_PLACE_HELPERS:
            return {n for arg in stmt.value.args[1:] for n in _names(arg)}
        return set(_names(stmt.value))
    if isinstance(stmt, ast.AugAssign):
        return set()
    return set()


class _Emitter:
    """Writes a group's loop nest as statements."""

    def __init__(self, fusion, group):
        self.f = fusion
        self.g = group
        self.vars = [fusion.loop_var(u) for u in range(len(group.axes))]
        self.dry = False
        self.huge_pages = _backend_has("huge_pages")

    # -- which values are arrays ----------------------------------------------------------------
    def _decide(self):
        g = self.g
        for value in g.values.values():
            uses = self.f.uses.get(value.name, [])
            if any(pos not in g.positions for pos in uses):
                value.materialize = True
        for plan in g.plans:
            if plan.form == "later" and plan.value is not None:
                plan.value.materialize = True
        self.dry = True
        for plan in g.plans:
            if plan.form == "alias":
                continue
            for ir in self._plan_irs(plan):
                self._code(ir, plan.block)
            if plan.gradient is not None:
                self._code(plan.gradient, plan.final_block)
        self.dry = False
        changed = True
        while changed:                       # an alias that is stored needs its base stored
            changed = False
            for value in g.values.values():
                if value.form == "alias" and value.materialize:
                    for base in value.bases:
                        if not g.values[base].materialize:
                            g.values[base].materialize = changed = True
        for value in g.values.values():
            if value.form in ("map", "row") and (not value.materialize or value.form == "row"):
                value.scalar = self.f.fresh(value.name + "_e")

    @staticmethod
    def _plan_irs(plan):
        out = [plan.expr] if plan.expr is not None else []
        if plan.target is not None:
            for entry in plan.target[1]:
                if entry[0] == "d" and entry[1] != ("arg",):
                    out.append(entry[1])
        return out

    # -- expressions ----------------------------------------------------------------------------
    def _index(self, entries, block, plan=None):
        parts = []
        for entry in entries:
            if entry[0] == "ax":
                parts.append(self.vars[entry[1]])
            elif entry[0] == "c":
                parts.append(str(entry[1]))
            elif entry[1] == ("arg",):
                parts.append(plan.index_scalar if plan is not None else "0")
            else:
                parts.append(self._code(entry[1], block))
        return ", ".join(parts)

    def _code(self, ir, block):
        tag = ir[0]
        if tag == "code":
            return ir[1]
        if tag == "read":
            return f"{ir[1]}[{self._index(ir[2], block)}]"
        if tag == "fmt":
            return ir[1].format(*[self._code(arg, block) for arg in ir[2]])
        value = self.g.values[ir[1]]
        if value.form == "alias":
            return self._code(value.expr, block)
        scalar_ok = ir[2] == value.entries and value.scope in block.chain()
        if self.dry:
            if not scalar_ok:
                value.materialize = True
            return ""
        if value.materialize:
            return f"{value.name}[{self._index(ir[2], block)}]"
        return value.scalar

    def _witness(self, ir):
        """A scalar expression of the element's type (its value does not matter)."""
        tag = ir[0]
        if tag == "code":
            return ir[1]
        if tag == "read":
            return f"{ir[1]}.dtype.type(0)"
        if tag == "fmt":
            return ir[1].format(*[self._witness(arg) for arg in ir[2]])
        value = self.g.values[ir[1]]
        if value.form == "alias":
            return self._witness(value.expr)
        if value.materialize:
            return f"{value.name}.dtype.type(0)"
        return self._witness(value.expr)

    def _dtype(self, ir):
        """The element type of ``ir``, as code."""
        if ir[0] == "read":
            return f"{ir[1]}.dtype.type"
        if ir[0] == "val":
            value = self.g.values[ir[1]]
            if value.form == "alias":
                return self._dtype(value.expr)
            if value.materialize:
                return f"{value.name}.dtype.type"
            return self._dtype(value.expr)
        return f"type({self._witness(ir)})"

    def _shape(self, entries):
        sizes = [self.g.axes[e[1]][1] if e[0] == "ax" else "1" for e in entries]
        return "(" + ", ".join(sizes) + ("," if len(sizes) == 1 else "") + ")"

    # -- statements -----------------------------------------------------------------------------
    def _stmts(self, code, lineno=None):
        stmts = ast.parse(code).body
        for stmt in stmts:
            for node in ast.walk(stmt):
                if isinstance(node, (ast.stmt, ast.expr)):
                    node.lineno = node.end_lineno = lineno or 0
                    node.col_offset = node.end_col_offset = 0
        return stmts

    def _plan_code(self, plan, block):
        lineno = getattr(plan.stmt, "lineno", None)
        out = [type(c)(c.text, c.lineno_src) for c in plan.comments]
        out.append(_comment(ast.unparse(plan.stmt).replace("\n", " ")))
        expr = self._code(plan.expr, block) if plan.expr is not None else None
        if plan.form == "map":
            value = plan.value
            if value.materialize:
                code = f"{value.name}[{self._index(value.entries, block)}] = {expr}"
            else:
                code = f"{value.scalar} = {expr}"
        elif plan.form == "update":
            name, entries, sign = plan.target
            code = f"{name}[{self._index(entries, block)}] {sign}= {expr}"
        elif plan.form == "row":
            acc = plan.scalar
            if plan.op == "sum":
                code = f"{acc} += {expr}"
            else:
                compare = "<=" if plan.op == "max" else ">="
                probe = self.f.probe()
                code = (f"{probe} = {expr}\n"
                        f"if {acc} == {acc} and not {probe} {compare} {acc}:\n"
                        f"    {acc} = {probe}")
        elif plan.form == "later":
            entries = plan.value.entries if plan.value is not None else plan.part_entries
            name = plan.value.name if plan.value is not None else plan.part
            code = f"{name}[{self._index(entries, block)}] += {expr}"
        else:   # argext
            compare = "<=" if plan.op == "argmax" else ">="
            probe = self.f.probe()
            code = (f"{probe} = {expr}\n"
                    f"if {plan.scalar} == {plan.scalar} and not {probe} {compare} {plan.scalar}:\n"
                    f"    {plan.scalar} = {probe}\n"
                    f"    {plan.index_scalar} = {self.vars[plan.level - 1]}")
        return out + self._stmts(code, lineno)

    def _init_code(self, plan):
        start = {"sum": "0", "max": "-np.inf", "min": "np.inf", "argmax": "-np.inf", "argmin": "np.inf"}
        code = f"{plan.scalar} = {self._dtype(plan.expr)}({start[plan.op]})"
        if plan.form == "argext":
            code += f"\n{plan.index_scalar} = 0"
        return self._stmts(code)

    def _final_code(self, plan, block):
        lineno = getattr(plan.stmt, "lineno", None)
        if plan.form == "argext":
            name, entries, sign = plan.target
            code = f"{name}[{self._index(entries, block, plan)}] {sign}= {self._code(plan.gradient, block)}"
        elif plan.value is not None:
            if not plan.value.materialize:
                return []
            code = f"{plan.value.name}[{self._index(plan.value.entries, block)}] = {plan.scalar}"
        else:
            name, entries, sign = plan.target
            code = f"{name}[{self._index(entries, block)}] {sign}= {plan.scalar}"
        return self._stmts(code, lineno)

    def _block_code(self, block):
        out = []
        for item in block.items:
            if isinstance(item, _Block):
                body = self._block_code(item)
                axis = item.level - 1
                loop = self._stmts(f"for {self.vars[axis]} in range({self.g.axes[axis][1]}):\n    pass")[0]
                loop.body = body or loop.body
                out.append(loop)
            elif item[0] == "plan":
                out += self._plan_code(item[1], block)
            elif item[0] == "init":
                out += self._init_code(item[1])
            else:
                out += self._final_code(item[1], block)
        return out

    def emit(self):
        g = self.g
        self._decide()
        before, after = [], []
        for plan in g.plans:
            value = plan.value
            if plan.form in ("row", "argext"):
                if value is not None:
                    plan.scalar = value.scalar
                else:
                    plan.scalar = self.f.fresh("_best" if plan.form == "argext" else "_sum" if
                                               plan.op == "sum" else "_" + plan.op)
                if plan.form == "argext":
                    plan.index_scalar = self.f.fresh("_best_index")
            if value is not None and value.materialize and value.form in ("map", "row"):
                fresh = f"np.empty({self._shape(value.entries)}, {self._dtype(value.expr)})"
                if self.huge_pages:      # large arrays on huge pages, as NumPy allocates them
                    fresh = f"huge_pages({fresh})"
                before += self._stmts(f"{value.name} = {fresh}")
            if plan.form == "later":
                if value is not None:
                    before += self._stmts(f"{value.name} = np.zeros({self._shape(value.entries)}, "
                                          f"{self._dtype(plan.expr)})")
                else:
                    plan.part = self.f.fresh(plan.target[0] + "_part")
                    before += self._stmts(f"{plan.part} = np.zeros({self._shape(plan.part_entries)}, "
                                          f"{self._dtype(plan.expr)})")
                    update = ast.AugAssign(target=copy.deepcopy(plan.stmt.target), op=plan.stmt.op,
                                           value=ast.Name(id=plan.part, ctx=ast.Load()))
                    after.append(ast.copy_location(update, plan.stmt))
            if plan.form == "alias" and value.materialize:
                after.append(copy.deepcopy(plan.stmt))
        fused = before + self._block_code(g.root) + after
        count = len(g.plans)
        if not g.guards:
            return [_comment(f"loop fusion (cpu target): {count} statements in one loop nest")] + fused
        test = ast.parse(" and ".join(code for _, code in g.guards), mode="eval").body
        branch = ast.If(test=test, body=fused, orelse=list(g.stmts))
        for node in ast.walk(test):
            node.lineno = node.end_lineno = 0
            node.col_offset = node.end_col_offset = 0
        branch.lineno = branch.end_lineno = 0
        branch.col_offset = branch.end_col_offset = 0
        note = (f"loop fusion (cpu target): the {count} statements under else: in one loop nest, "
                "when the sizes allow")
        return [_comment(note), branch]
