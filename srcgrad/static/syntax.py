"""Small AST helpers of the static stage: names bound and read, renaming, constant folding."""
import ast
import re


def _identifier(text):
    text = re.sub(r"\W", "_", str(text)).strip("_") or "v"
    if text[0].isdigit():
        text = "v" + text
    return text


def _rename(tree, mapping):
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in mapping:
            node.id = mapping[node.id]
        elif isinstance(node, ast.arg) and node.arg in mapping:
            node.arg = mapping[node.arg]


def _stored_names(stmts):
    """Names a function body binds (not looking into nested functions and comprehensions)."""
    out = set()

    def visit(node):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
            return
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        for child in ast.iter_child_nodes(node):
            visit(child)
    for stmt in stmts:
        visit(stmt)
    return out


def _loaded_names(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _constant_value(node):
    return node.value if isinstance(node, ast.Constant) else None


_FOLD_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
                ast.Mult: lambda a, b: a * b, ast.FloorDiv: lambda a, b: a // b,
                ast.Mod: lambda a, b: a % b}


_FOLD_COMPARE = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b,
                 ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b,
                 ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
                 ast.Is: lambda a, b: a is b, ast.IsNot: lambda a, b: a is not b}


def _fold(node):
    """(value,) when ``node`` is an expression of constants srcgrad can evaluate, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, type(None), str)):
        return (node.value,)
    if isinstance(node, ast.UnaryOp):
        inner = _fold(node.operand)
        if inner is None:
            return None
        if isinstance(node.op, ast.Not):
            return (not inner[0],)
        if isinstance(node.op, ast.USub) and isinstance(inner[0], int):
            return (-inner[0],)
        return None
    if isinstance(node, ast.BoolOp):
        values = [_fold(v) for v in node.values]
        if any(v is None for v in values):
            return None
        result = values[0][0]
        for v in values[1:]:
            result = (result and v[0]) if isinstance(node.op, ast.And) else (result or v[0])
        return (result,)
    if isinstance(node, ast.BinOp) and type(node.op) in _FOLD_BINOPS:
        left, right = _fold(node.left), _fold(node.right)
        if left is None or right is None or not all(isinstance(v[0], int) for v in (left, right)):
            return None
        try:
            return (_FOLD_BINOPS[type(node.op)](left[0], right[0]),)
        except ZeroDivisionError:
            return None
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _FOLD_COMPARE:
        left, right = _fold(node.left), _fold(node.comparators[0])
        if left is None or right is None:
            return None
        try:
            return (_FOLD_COMPARE[type(node.ops[0])](left[0], right[0]),)
        except TypeError:
            return None
    return None


def _op_text(op):
    return {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}.get(type(op), "op")
