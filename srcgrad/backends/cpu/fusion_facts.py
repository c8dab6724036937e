"""Loop fusion (cpu target), part 1: the vocabulary — which calls make fresh arrays, small AST
helpers, the static size facts (:class:`_Facts`) and the plan records of a fused group.
The fuser itself is :mod:`.fusion`."""
import ast

from ... import helpers


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
# calls whose result is a new array (never one of their arguments): declared in srcgrad.helpers
_FRESH_CALLS = helpers.fresh_names()
_FRESH_NP = _UNARY_UFUNCS | _BINARY_UFUNCS | {
    "zeros", "zeros_like", "ones", "ones_like", "empty", "empty_like", "full", "full_like", "arange",
    "sum", "mean", "max", "min", "amax", "amin", "prod", "dot", "outer", "where", "clip", "float32",
    "float64", "concatenate", "stack", "copy"}
_NEW_ARRAY = {"np.zeros_like", "np.zeros", "np.empty_like", "np.empty", "np.ones_like", "np.ones"}
_IN_PLACE_HELPERS = helpers.in_place_names()     # write into their first argument


def _backend_has(name):
    """Whether generated cpu code can call runtime helper ``name``: the cpu backend defines it
    and code generation imports it (a declared helper, srcgrad.helpers)."""
    return name in helpers.HELPERS and helpers.implementation("cpu", name) is not None


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
    from ...placeholders import _Comment
    return isinstance(stmt, _Comment)


def _names(node):
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]


def _comment(text):
    """A comment line in generated code."""
    from ...naming import COMMENT_MARK
    return ast.Expr(value=ast.Constant(COMMENT_MARK + text))


class _Unfusable(Exception):
    """The statement cannot join the loop nest."""


# reductions written as calls with keywords (lowered library helpers and the NumPy functions Numba
# compiles as they are): with ``axis=<int>, keepdims=True`` their result has the operand's sizes
# but 1 along that axis (``Kinds`` check the number of dimensions).
_KEEPDIMS_REDUCTIONS = frozenset({"np_var", "np_std", "special_logsumexp", "np.var", "np.std",
                                  "np.mean", "np.sum", "np.max", "np.min", "np.prod"})

# calls whose result has their first operand's shape (a size test against it is known to pass):
# np.triu/np.tril of a matrix, np.roll/np.flip/np.flipud/np.fliplr, and along an explicit axis
# (sort's default axis=-1 too) np.sort/np.cumsum/np.cumprod (``_ALONG_AXIS``: without an axis
# cumsum and cumprod flatten; an ``axis=None`` argument flattens all of them)
_ALONG_AXIS = frozenset({"np.cumsum", "np_cumsum", "np.cumprod", "np_cumprod"})
_SAME_SHAPE = frozenset({"np.triu", "np.tril", "np_triu", "np_tril", "np.roll", "np_roll", "np.flip", "np_flip", "np.flipud",
                         "np.fliplr", "np.sort", "np_sort"}) | _ALONG_AXIS


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
            if entries is None and dims is not None:
                return self._new_axes(dims, node.slice)
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
        if call == "np.expand_dims" and len(args) == 2 and not node.keywords:
            # a new axis of size 1, known here: a fused loop nest reads it at index 0 instead of
            # testing its size (a failing test, i.e. broadcasting against it, would otherwise
            # rerun the call with a second, fallback specialization: a second compile)
            dims, axis = self.infer(args[0]), _const_int(args[1])
            if dims is None or axis is None or not -len(dims) - 1 <= axis <= len(dims):
                return None
            axis %= len(dims) + 1
            return dims[:axis] + (1,) + dims[axis:]
        if call in _SAME_SHAPE and args and not any(isinstance(a, ast.Constant) and a.value is None
                                                     for a in args[1:] + [k.value for k in node.keywords]):
            # the operand's shape (np.triu/tril: of a matrix; sort/cumsum/cumprod: along an axis,
            # not axis=None, which flattens)
            dims = self.infer(args[0])
            if dims is None or (call in ("np.triu", "np.tril", "np_triu", "np_tril") and len(dims) != 2) or \
                    (call in _ALONG_AXIS and len(dims) != 1 and
                     _const_int(args[1] if len(args) > 1 else
                                {k.arg: k.value for k in node.keywords}.get("axis")) is None):
                return None
            return dims
        if call in _KEEPDIMS_REDUCTIONS and args:
            # np.var(x, axis=k, keepdims=True) and the like: x's dims with axis k of size 1
            keywords = {k.arg: k.value for k in node.keywords}
            keep, axis = keywords.get("keepdims"), _const_int(keywords.get("axis"))
            dims = self.infer(args[0])
            if not (isinstance(keep, ast.Constant) and keep.value is True) or axis is None or \
                    dims is None or not -len(dims) <= axis < len(dims):
                return None
            axis %= len(dims)
            return dims[:axis] + (1,) + dims[axis + 1:]
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
    def _new_axes(dims, index):
        """The dims of ``x[index]`` where ``index`` holds full slices, integer constants and at
        least one ``None`` (a new axis, of size 1), or None."""
        parts = index.elts if isinstance(index, ast.Tuple) else [index]
        out, k, new = [], 0, False
        for part in parts:
            if isinstance(part, ast.Constant) and part.value is None:
                out.append(1)
                new = True
                continue
            if k >= len(dims):
                return None
            if isinstance(part, ast.Slice) and part.lower is None and part.upper is None and \
                    part.step is None:
                out.append(dims[k])
            elif _const_int(part) is None:
                return None
            k += 1
        return tuple(out) + tuple(dims[k:]) if new else None

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
        self.total = False        # row: a sum over every axis into a scalar (``s = np.sum(E)``)


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
        self.known = None         # argext: IR of the row's extreme where an array holds it
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
        self.hoisted_at = []      # their (section, index)
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


_EXTREMES = {"max_adjoint": "reduce_max", "min_adjoint": "reduce_min"}


# plain-name callees that write into none of their arguments: srcgrad's runtime helpers (except
# the in-place ones) and the builtins generated code calls
_KNOWN_CALLEES = frozenset(helpers.names()) - _IN_PLACE_HELPERS | {
    "range", "len", "min", "max", "abs", "float", "int", "bool", "type", "round", "tuple"}


def scalar_reductions(sections):
    """Names bound to a whole-array reduction with keepdims: the cpu runtime returns a scalar where
    NumPy (and the kinds) have an array of ones."""
    unsure = set()
    for stmts in sections:
        for stmt in _walk_statements(stmts):
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                    isinstance(stmt.targets[0], ast.Name) and \
                    _call_name(stmt.value) in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min") \
                    and len(stmt.value.args) > 1 and isinstance(stmt.value.args[1], ast.Constant) \
                    and stmt.value.args[1].value is None:
                unsure.add(stmt.targets[0].id)
    return unsure


def _written_names(stmts):
    """Base names of the arrays a body may write in place: targets of ``+=`` and of stores into
    an element, slice or attribute, the first argument of in-place helpers, ``out=`` arguments,
    every array given to a function of the user's. (Calls for their side effects, NumPy's
    in-place functions and array methods are refused before the fuser: check.py.)"""
    def base(node):
        while isinstance(node, (ast.Subscript, ast.Attribute)):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None

    written = set()
    for stmt in _walk_statements(stmts):
        for node in ast.walk(stmt):
            targets = []
            if isinstance(node, ast.AugAssign):
                targets = [node.target]
            elif isinstance(node, ast.Assign):
                targets = [t for t in node.targets if not isinstance(t, ast.Name)]
            elif isinstance(node, ast.Call):
                if _call_name(node) in _IN_PLACE_HELPERS and node.args:
                    targets = [node.args[0]]
                elif isinstance(node.func, ast.Name) and node.func.id not in _KNOWN_CALLEES:
                    # a function of the user's (a helper's record or reverse part, a jitted
                    # callee) may write into any array it is given
                    targets = list(node.args) + [k.value for k in node.keywords]
                targets += [k.value for k in node.keywords if k.arg == "out"]
            for target in targets:
                for sub in ast.walk(target) if isinstance(target, ast.Tuple) else [target]:
                    name = base(sub)
                    if name is not None:
                        written.add(name)
    return written


def _known_extremes(fusion, sections):
    """``{id(call): (m, position of the call's statement)}`` for each ``max_adjoint(g, x, axis,
    keepdims)`` (or ``min_adjoint``) of the function whose ``x`` has its extreme along that axis
    in an array ``m`` bound once by ``m = reduce_max(x, axis, keepdims)`` before it, neither of
    them (nor any array that may be a view of them) written anywhere: the adjoint's element is
    then the first one equal to ``m``,
    or the first NaN, where ``m`` is NaN (the cpu ``reduce_max`` gives NaN for a row with a NaN),
    which is the element the arg-extreme loop finds, without that loop's chain of compares.
    The adjoint's statement is counted as a use of ``m``, so a fused loop nest computing ``m``
    stores it."""
    stmts = [s for part in sections for s in part]
    extremes = {}      # (op, x, axis, keepdims) -> (m, position)
    for s, part in enumerate(sections):
        for i, stmt in enumerate(part):
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                    isinstance(stmt.targets[0], ast.Name) and \
                    _call_name(stmt.value) in ("reduce_max", "reduce_min") and \
                    len(stmt.value.args) == 3 and not stmt.value.keywords:
                x, axis, keep = stmt.value.args
                m = stmt.targets[0].id
                if isinstance(x, ast.Name) and _const_int(axis) is not None and \
                        isinstance(keep, ast.Constant) and fusion.stable(m) and \
                        fusion.stable(x.id) and fusion.kind_is_array(m):
                    key = (_call_name(stmt.value), x.id, _const_int(axis), bool(keep.value))
                    extremes[key] = (m, (s, i))
    if not extremes:
        return {}
    written = _written_names(stmts)
    found = {}
    for s, part in enumerate(sections):
        for i, stmt in enumerate(part):
            if not isinstance(stmt, ast.stmt):
                continue
            for node in ast.walk(stmt):
                call = _call_name(node) if isinstance(node, ast.Call) else None
                if call not in _EXTREMES or len(node.args) != 4 or node.keywords:
                    continue
                _, x, axis, keep = node.args
                if not (isinstance(x, ast.Name) and isinstance(keep, ast.Constant)):
                    continue
                known = extremes.get((_EXTREMES[call], x.id, _const_int(axis), bool(keep.value)))
                if known is None or (s, i) <= known[1]:
                    continue
                aliases = _aliases({x.id, known[0]}, stmts)
                if aliases is not None and not aliases & written:
                    found[id(node)] = (known[0], (s, i))
    return found


def _aliases(names, stmts):
    """``names`` and every name a statement may bind to (a view of) one of their arrays, or None
    where a statement may keep one somewhere else (stored into an array or a tuple, passed to a
    call that may keep it)."""
    out = set(names)
    changed = True
    while changed:
        changed = False
        for stmt in _walk_statements(stmts):
            if not _escaping(stmt) & out:
                continue
            if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
                new = {t.id for t in stmt.targets} - out
                out |= new
                changed = changed or bool(new)
            elif not (isinstance(stmt, ast.Expr) and _call_name(stmt.value) in _IN_PLACE_HELPERS):
                return None
    return out
