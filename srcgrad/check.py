"""Stage 2 — the fence: accept or reject every AST node of the user's function.

One decision per node type. A rejection raises :class:`UnsupportedSyntaxError` naming the file, the
line and the construct, so unsupported code never reaches the transformer (and never produces a
silently wrong gradient).
"""
import ast
import types

from .parse import FunctionSource
from .rules.callees import sequence_call_names
from .view_writes import check_view_writes

# Statements the transformer understands.
ALLOWED_STATEMENTS = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.If, ast.For, ast.While,
                      ast.Break, ast.Continue, ast.Return, ast.Pass, ast.Expr, ast.Assert)

# Expressions the transformer understands.
ALLOWED_EXPRESSIONS = (ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call,
                       ast.Name, ast.Constant, ast.Attribute, ast.Subscript, ast.Slice, ast.Tuple,
                       ast.List,      # list literals are values like tuples (normalize.py)
                       ast.keyword, ast.Load, ast.Store, ast.operator, ast.unaryop, ast.boolop,
                       ast.cmpop, ast.expr_context)

# Human-readable names for the constructs users most often try.
CONSTRUCT_NAMES = {
    ast.Try: "try/except", ast.With: "with statement / context manager", ast.Lambda: "lambda", ast.ListComp: "list comprehension",
    ast.SetComp: "set comprehension", ast.DictComp: "dict comprehension",
    ast.GeneratorExp: "generator expression", ast.Yield: "generator (yield)",
    ast.YieldFrom: "generator (yield from)",
    ast.Await: "await", ast.Global: "global statement", ast.Nonlocal: "nonlocal statement",
    ast.ClassDef: "class definition", ast.FunctionDef: "nested function definition",
    ast.AsyncFunctionDef: "async function", ast.Delete: "del", ast.Raise: "raise",
    ast.Import: "import", ast.ImportFrom: "import", ast.JoinedStr: "f-string",
    ast.List: "list literal", ast.Dict: "dict literal", ast.Set: "set literal",
    ast.Starred: "starred expression", ast.NamedExpr: "walrus assignment (:=)",
    ast.Match: "match statement", ast.AsyncFor: "async for", ast.AsyncWith: "async with",
}

# Methods of str: a call like "...".format(x) or name.join(...) is string work, not numeric code.
# (Names NumPy also uses, such as split or partition, are left out.)
STRING_METHODS = {"format", "format_map", "join", "splitlines", "strip", "lstrip", "rstrip",
                  "replace", "upper", "lower", "title", "capitalize", "startswith", "endswith",
                  "encode", "decode", "zfill", "ljust", "rjust"}
if hasattr(ast, "TryStar"):
    CONSTRUCT_NAMES[ast.TryStar] = "try/except*"


# Calls whose first argument is a sequence of arrays: a list literal there is accepted (users
# write ``np.concatenate([a, b])``) and normalized to a tuple. (By name: names are not resolved yet.)
SEQUENCE_CALLS = sequence_call_names()      # concatenate, stack, vstack, hstack


def _sequence_lists(expr):
    """The list literals ``expr`` passes as the sequence argument of np.concatenate/np.stack."""
    lists = set()
    for node in ast.walk(expr):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.List):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else \
                getattr(node.func, "id", None)
            if name in SEQUENCE_CALLS:
                lists.add(id(node.args[0]))
    return lists


def _is_print(call):
    return isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "print"


def construct_name(node):
    return CONSTRUCT_NAMES.get(type(node), type(node).__name__)


def check_function(fsrc: FunctionSource):
    """Raise UnsupportedSyntaxError for the first node outside the supported subset.

    Returns the checks that need the argument kinds (view_writes.refuse_array_writes)."""
    fn = fsrc.tree
    args = fn.args
    if args.vararg or args.kwarg:
        raise fsrc.error(fn, "functions with *args or **kwargs are not supported", "*args/**kwargs")
    if args.posonlyargs or args.kwonlyargs:
        raise fsrc.error(fn, "positional-only and keyword-only parameters are not supported",
                         "parameter kind")
    for node in ast.walk(fn):          # before any statement: `yield x` is also an expression
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            raise fsrc.error(node, "generator functions (yield) are not supported: srcgrad "
                             "differentiates functions that return one value", construct_name(node))
    for index, stmt in enumerate(fn.body):
        if index == 0 and _is_docstring(stmt):
            continue
        _check_statement(fsrc, stmt, loop_depth=0)
    # in-place writes through views (aliasing is not modelled); returns those decided by kind
    return check_view_writes(fsrc)


def _is_docstring(stmt):
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str))


def _check_statement(fsrc, stmt, loop_depth):
    if not isinstance(stmt, ALLOWED_STATEMENTS):
        raise fsrc.error(stmt, f"unsupported construct: {construct_name(stmt)}", construct_name(stmt))
    if isinstance(stmt, ast.Expr):
        if _is_docstring(stmt):
            return
        if isinstance(stmt.value, ast.Call) and isinstance(stmt.value.func, ast.Attribute) and \
                stmt.value.func.attr == "append" and isinstance(stmt.value.func.value, ast.Name):
            # L.append(v) on a list created in the function (normalize.ListBuilder)
            for arg in stmt.value.args:
                _check_expression(fsrc, arg)
            return
        if _is_print(stmt.value):
            # print(...) runs in the primal (the forward sweep) only; Numba prints positional
            # values and string literals
            if stmt.value.keywords:
                raise fsrc.error(stmt, "print() with keyword arguments (sep=, end=, file=) is not "
                                 "supported", "print keywords")
            for arg in stmt.value.args:
                if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                    _check_expression(fsrc, arg)
            return
        raise fsrc.error(stmt, "an expression used as a statement has no effect srcgrad can "
                         "differentiate (calls for side effects are not supported)", "expression statement")
    if isinstance(stmt, ast.Assert):
        # checked in the primal (forward sweep), never differentiated
        if stmt.msg is not None and not (isinstance(stmt.msg, ast.Constant) and
                                         isinstance(stmt.msg.value, str)):
            raise fsrc.error(stmt, "an assert message must be a string literal", "assert message")
        _check_expression(fsrc, stmt.test)
        return
    if isinstance(stmt, (ast.Break, ast.Continue)) and loop_depth == 0:
        raise fsrc.error(stmt, f"'{type(stmt).__name__.lower()}' outside a loop", "break/continue")
    if isinstance(stmt, ast.AnnAssign) and stmt.value is None:
        return
    if isinstance(stmt, ast.For):
        if stmt.orelse:
            raise fsrc.error(stmt, "for ... else is not supported", "for-else")
        # range(...), an array (its first axis), a tuple or list, enumerate/zip/reversed of
        # those (normalize.py turns them into index loops)
        if not _names_only(stmt.target):
            raise fsrc.error(stmt, "a for loop must bind names (for x in ..., for i, (a, b) in ...)",
                             "for target")
    if isinstance(stmt, ast.While) and stmt.orelse:
        raise fsrc.error(stmt, "while ... else is not supported", "while-else")
    if isinstance(stmt, (ast.Assign,)):
        for target in stmt.targets:
            _check_target(fsrc, stmt, target)
    if isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
        _check_target(fsrc, stmt, stmt.target)

    for child in ast.iter_child_nodes(stmt):
        if isinstance(child, ast.stmt):
            inner = loop_depth + (1 if isinstance(stmt, (ast.For, ast.While)) else 0)
            _check_statement(fsrc, child, inner)
        elif isinstance(child, ast.expr):
            _check_expression(fsrc, child)


def _names_only(target):
    if isinstance(target, ast.Name):
        return True
    return isinstance(target, ast.Tuple) and all(_names_only(e) for e in target.elts)


def _check_comprehension(fsrc, node):
    for gen in node.generators:
        if gen.is_async:
            raise fsrc.error(node, "async comprehensions are not supported", "comprehension")
        if not _names_only(gen.target):
            raise fsrc.error(node, "a comprehension must bind names", "comprehension")


def _check_target(fsrc, stmt, target):
    if isinstance(target, ast.Name):
        return
    if isinstance(target, ast.Tuple):
        for elt in target.elts:
            if not isinstance(elt, ast.Name):
                raise fsrc.error(stmt, "tuple unpacking must bind plain names", "tuple unpacking")
        return
    if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
        return
    raise fsrc.error(stmt, f"cannot assign to `{ast.unparse(target)}` (only names, tuples of names "
                     "and array elements/slices `a[i] = ...`)", "assignment target")


def _string_arguments(expr):
    """String literals passed straight to a call (``astype("float32")``, ``mode="constant"``):
    non-differentiable constants of the call, for the rule (or NumPy) to read."""
    found = set()
    for node in ast.walk(expr):
        if isinstance(node, ast.Call):
            for arg in list(node.args) + [kw.value for kw in node.keywords]:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(id(arg))
    return found


def _grid_steps(expr):
    """Complex steps in ``np.r_[0:1:5j]`` (a number of points, evaluated by normalize.py)."""
    found = set()
    for node in ast.walk(expr):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and \
                node.value.attr in ("r_", "c_"):
            found |= {id(n) for n in ast.walk(node.slice) if isinstance(n, ast.Constant)}
    return found


def _is_module(fsrc, node):
    """``np`` in ``np.split(...)``: a module's function, not a string method of the same name."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and isinstance(fsrc.namespace.get(node.id), types.ModuleType)


def _check_expression(fsrc, expr):
    sequence_lists = _sequence_lists(expr)
    strings = _string_arguments(expr) | _grid_steps(expr)
    for node in ast.walk(expr):
        if isinstance(node, ast.List) and id(node) in sequence_lists:
            continue
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)):
            _check_comprehension(fsrc, node)      # list comprehensions -> loops (normalize.py)
            continue
        if isinstance(node, ast.comprehension):
            continue
        if isinstance(node, ast.JoinedStr):
            raise fsrc.error(node, "f-strings are not supported: srcgrad differentiates numeric code "
                             "(no string work)", construct_name(node))
        if not isinstance(node, ALLOWED_EXPRESSIONS):
            raise fsrc.error(node, f"unsupported construct: {construct_name(node)}",
                             construct_name(node))
        if isinstance(node, ast.Constant) and id(node) in strings:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes, complex)):
            raise fsrc.error(node, f"{type(node.value).__name__} constants are not supported "
                             "(string/complex work cannot be differentiated)", "string constant")
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and (
                    isinstance(func.value, ast.Constant) and isinstance(func.value.value, str)
                    or func.attr in STRING_METHODS and not _is_module(fsrc, func.value)):
                raise fsrc.error(node, f"string methods (`.{func.attr}(...)`) are not supported: "
                                 "srcgrad differentiates numeric code (no string work)",
                                 "string method")
            if not isinstance(node.func, (ast.Name, ast.Attribute)):
                raise fsrc.error(node, "only calls of named functions or methods are supported",
                                 "computed call")
            for kw in node.keywords:
                if kw.arg is None:
                    raise fsrc.error(node, "**kwargs in calls is not supported", "**kwargs call")
