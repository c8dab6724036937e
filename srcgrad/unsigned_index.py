"""Reversed loops index arrays with an unsigned copy of their loop variable (cpu target).

The reverse sweep reverses ``for j in range(n)`` into ``for j in range(n - 1, -1, -1)``. Numba
indexes an array with a signed integer by first wrapping a negative one around (``j < 0: j +=
shape``), and for a descending loop LLVM does not prove ``j >= 0``: every subscript with ``j`` keeps
its own wraparound select (one per array dimension), and in a large adjoint the extra live values
spill registers inside the loop nest. An unsigned index has no wraparound: the loop variable of a
``range(stop - 1, -1, -1)`` loop runs from ``stop - 1`` down to ``0``, never negative, so
``_u_j = np.uint64(j)`` indexes the same element (GMM gradient, d=10 K=25 n=1000: about 7% less
time). Only a subscript whose index (or one of its index tuple's elements) is exactly ``j`` is
rewritten, only on an array (``is_array``), and only when the body never assigns ``j``; arithmetic
on ``j`` stays signed (Numba's uint64 - int64 is a float). A comment in the generated code says so.
"""
import ast

from .placeholders import Comment

# False: reversed loops index with their signed loop variables (tests compare both).
UNSIGNED_INDEX = True

NOTE = ("loop variable {v} is never negative here: arrays are indexed with {u} = np.uint64({v}), "
        "which Numba does not wrap around")


def unsigned_index(stmts, is_array, taken=frozenset()):
    """``stmts`` with the array subscripts of their ``range(stop - 1, -1, -1)`` loops unsigned;
    ``taken``: the function's other names (a loop whose unsigned name is one of them is left)."""
    out = []
    for stmt in stmts:
        for field in ("body", "orelse"):
            body = getattr(stmt, field, None)
            if isinstance(body, list) and isinstance(stmt, ast.stmt):
                setattr(stmt, field, unsigned_index(body, is_array, taken))
        if isinstance(stmt, ast.For):
            note = _rewrite_loop(stmt, is_array, taken)
            if note is not None:
                out.append(Comment(note, getattr(stmt, "lineno", 0)))
        out.append(stmt)
    return out


def _descending_to_zero(loop):
    """The loop variable's name when ``loop`` is ``for v in range(e, -1, -1)`` (v >= 0 throughout)."""
    it = loop.iter
    if not (isinstance(loop.target, ast.Name) and isinstance(it, ast.Call)
            and isinstance(it.func, ast.Name) and it.func.id == "range" and len(it.args) == 3
            and not it.keywords and loop.orelse == []):
        return None
    if all(_is_minus_one(arg) for arg in it.args[1:]):
        return loop.target.id
    return None


def _is_minus_one(node):
    if isinstance(node, ast.Constant) and node.value == -1 and type(node.value) is int:
        return True
    return (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant) and node.operand.value == 1
            and type(node.operand.value) is int)


def _rewrite_loop(loop, is_array, taken):
    var = _descending_to_zero(loop)
    if var is None or f"_u_{var}" in taken:
        return None
    for node in ast.walk(ast.Module(body=loop.body, type_ignores=[])):
        if isinstance(node, ast.Name) and node.id == var and not isinstance(node.ctx, ast.Load):
            return None             # the body rebinds it: its values are not the range's
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and node.target.id == var:
            return None
    unsigned = f"_u_{var}"
    hits = replace_array_indices(
        loop.body, is_array,
        lambda name: ast.Name(id=unsigned, ctx=ast.Load()) if name == var else None)
    if not hits:
        return None
    loop.body.insert(0, ast.parse(f"{unsigned} = np.uint64({var})").body[0])
    return NOTE.format(v=var, u=unsigned)


def replace_array_indices(stmts, is_array, replacement_for):
    """Replace, in the subscripts of arrays (``is_array(name)``) inside ``stmts``, every index
    element that is a bare name for which ``replacement_for(name)`` gives a node; the other
    elements stay. Returns the names replaced, with repeats (shared with ``nonneg_index``)."""
    replaced = []
    for node in ast.walk(ast.Module(body=list(stmts), type_ignores=[])):
        if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
                and is_array(node.value.id)):
            continue
        index = node.slice
        elements = index.elts if isinstance(index, ast.Tuple) else [index]
        for position, element in enumerate(elements):
            replacement = replacement_for(element.id) if isinstance(element, ast.Name) else None
            if replacement is None:
                continue
            replaced.append(element.id)
            if isinstance(index, ast.Tuple):
                index.elts[position] = replacement
            else:
                node.slice = replacement
    return replaced
