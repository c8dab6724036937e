"""Fused temporaries that the rest of the function reads only for their shape become scalars.

Loop fusion (:mod:`.fusion`) stores a fused statement's value into an array (``_t2 =
np.empty(...)`` before the loop nest, ``_t2[_i0] = ...`` in it) whenever a statement outside the
nest uses the name. In an adjoint that use is often only the name's shape or dtype: the reverse
sweep's ``expand_reduced(_adj_t3, _t2, ...)`` and ``unbroadcast(..., _t2)``, fused in turn, loop
over ``range(_t2.shape[0])`` and never read an element. Such an array costs an allocation at run
time and, cold, Numba's code for the allocation and the stores (issue 17: ``c_shapes``' adjoint
allocated 28 of them; its own compile 9.2 -> 8.2 s CPU when they were scalars, same process).

:func:`shape_only_arrays` rewrites

    _t2 = huge_pages(np.empty((_t1.shape[0],), T))        # T: a type expression
    for _i0 in range(_t1.shape[0]):
        _t2[_i0] = _t1[_i0] * _t1[_i0]
        _t3_e += _t2[_i0]
    ...
    for _i0 in range(_t2.shape[0]): ...

as ``_t2_e = _t1[_i0] * _t1[_i0]; _t3_e += _t2_e`` in the nest and ``_t1.shape[0]`` for
``_t2.shape[0]`` after it (``T`` for ``_t2.dtype.type``, the tuple of sizes for ``_t2.shape``),
only when all of these hold, so that every rewritten expression has the value it had:

* the allocation is a statement of the function's top level (a section's own list, not inside a
  loop or branch) and the array's only binding; the next loop statement after it (only
  statements that read at most its shape and dtype in between) is the nest;
* inside the nest, every use is a subscript whose index is exactly the variables of the ``for v
  in range(...)`` loops around it, outermost first, one per dimension (each iteration touches its
  own element), all uses are statements of one loop body (none in a nested branch or loop), and
  the first of them stores the element (``_t2[_i0, _i1] = e`` with ``e`` not reading it);
* everywhere else the name appears only as ``name.shape``, ``name.shape[k]``, ``name.ndim`` or
  ``name.dtype.type``;
* the names the sizes and ``T`` read are bound at most once, at the top level (so they still
  hold the values the allocation read), and the sizes and ``T`` are arithmetic on them, their
  shapes and dtypes (calls: ``type``, ``type(e)(...)``, ``np.multiply`` and ``<x>.dtype.type(...)``
  only).

``SHAPE_ONLY_ARRAYS = False`` turns the rewrite off (tests compare both).
"""
import ast
import copy

from ...naming import unused
from .fusion_facts import _call_name, _const_int, _is_comment

# False: fused temporaries read only for their shape stay arrays (tests compare both).
SHAPE_ONLY_ARRAYS = True


def shape_only_arrays(sections):
    """``sections`` (consecutive statement lists of one function body) with the fused arrays
    that nothing outside their loop nest reads but for their shape written as scalars."""
    if not SHAPE_ONLY_ARRAYS:
        return sections
    sections = [list(stmts) for stmts in sections]
    taken, binds = _names(sections)
    names_of = _NameSets()
    bound_before = set()             # names bound by the top-level statements before stmts[k]
    for stmts in sections:
        k = 0
        while k < len(stmts):
            if not _rewrite(stmts, k, sections, taken, bound_before, binds, names_of):
                if isinstance(stmts[k], (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                    bound_before.update(n.id for n in ast.walk(stmts[k])
                                        if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load))
                k += 1
    return sections


def _statements(stmts):
    return [s for s in stmts if isinstance(s, ast.stmt) and not _is_comment(s)]


def _names(sections):
    """(every name the function uses, how many times each is bound)."""
    taken, binds = set(), {}
    for stmts in sections:
        for stmt in _statements(stmts):
            for node in ast.walk(stmt):
                if isinstance(node, ast.Name):
                    taken.add(node.id)
                    if not isinstance(node.ctx, ast.Load):      # (an augmented target too)
                        binds[node.id] = binds.get(node.id, 0) + 1
    return taken, binds


def _allocation(stmt):
    """(name, sizes, dtype expression) of ``name = [huge_pages(]np.empty((sizes), T)[)]``."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)):
        return None
    value = stmt.value
    if _call_name(value) == "huge_pages" and len(value.args) == 1:
        value = value.args[0]
    if _call_name(value) != "np.empty" or len(value.args) != 2 or value.keywords \
            or not isinstance(value.args[0], ast.Tuple) or not value.args[0].elts:
        return None
    return stmt.targets[0].id, value.args[0].elts, value.args[1]


def _pure(expr, binds, bound_before):
    """Whether ``expr`` re-evaluated after the allocation gives the value it gave there: the
    names it reads are never bound (parameters) or bound once, by a top-level statement before,
    and it subscripts only shapes (``x.shape[k]``): an array's element could be written in place
    after the allocation, which rebinds no name."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Subscript):
            if not (isinstance(node.value, ast.Attribute) and node.value.attr == "shape"):
                return False
        elif isinstance(node, ast.Name):
            count = binds.get(node.id, 0)
            if count > 1 or (count == 1 and node.id not in bound_before):
                return False
        elif isinstance(node, ast.Call):
            func = node.func
            dtype_type = isinstance(func, ast.Attribute) and func.attr == "type" and \
                isinstance(func.value, ast.Attribute) and func.value.attr == "dtype"
            cast = isinstance(func, ast.Call) and _call_name(func) == "type"    # type(e)(0)
            if not (dtype_type or cast or _call_name(node) in ("type", "np.multiply")):
                return False
        elif not isinstance(node, (ast.expr_context, ast.Attribute, ast.Subscript, ast.Constant,
                                   ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop, ast.Tuple)):
            return False
    return True


def _mentions(node, name):
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node))


class _NameSets(dict):
    """The names a top-level statement mentions, computed once per statement (the rewrite asks
    about every statement for every allocation)."""

    def __call__(self, stmt):
        entry = self.get(id(stmt))
        if entry is None or entry[0] is not stmt:
            entry = self[id(stmt)] = (stmt, frozenset(n.id for n in ast.walk(stmt)
                                                      if isinstance(n, ast.Name)))
        return entry[1]


def _rewrite(stmts, k, sections, taken, bound_before, binds, names_of):
    """Rewrite the allocation at ``stmts[k]`` and its uses if it qualifies; True if it did."""
    found = _allocation(stmts[k]) if not _is_comment(stmts[k]) else None
    if found is None:
        return False
    name, sizes, dtype = found
    if binds.get(name) != 1 or not all(_pure(e, binds, bound_before) for e in sizes + [dtype]):
        return False
    j = k + 1
    while j < len(stmts) and not isinstance(stmts[j], ast.For):
        j += 1          # (statements in between may read its shape and dtype, like any other)
    if j == len(stmts):
        return False
    uses = [(stmts_, i) for stmts_ in sections for i, stmt in enumerate(stmts_)
            if not (stmts_ is stmts and i in (k, j)) and isinstance(stmt, ast.stmt)
            and not _is_comment(stmt) and name in names_of(stmt)]
    check = _ShapeReads(name, sizes, dtype, dry=True)      # (first without copying anything)
    for stmts_, i in uses:
        check.visit(stmts_[i])
        if check.other_use:
            return False
    scalar = unused(name + "_e", taken)
    nest = copy.deepcopy(stmts[j])
    if not _scalar_nest(nest, name, len(sizes), scalar):
        return False
    taken.add(scalar)
    outside = _ShapeReads(name, sizes, dtype)
    for stmts_, i in uses:
        stmts_[i] = outside.visit(copy.deepcopy(stmts_[i]))
    stmts[j] = nest
    del stmts[k]
    return True


def _scalar_nest(nest, name, ndim, scalar):
    """Rewrite ``nest`` (a copy) in place: ``name[<loop variables>]`` -> ``scalar``; False (the
    copy is then dropped) where a use is not of that form (see the module docstring)."""
    uses = None                      # (loop body, its loop variables) holding the uses
    todo = [(nest, [])]
    while todo:
        loop, outer = todo.pop()
        if not (isinstance(loop.target, ast.Name) and _call_name(loop.iter) in ("range", "loop_range")
                and not loop.orelse and not _mentions(loop.iter, name)):
            return False
        loop_vars = outer + [loop.target.id]
        for stmt in _statements(loop.body):
            if not _mentions(stmt, name):
                continue
            if isinstance(stmt, ast.For):
                todo.append((stmt, loop_vars))
            elif isinstance(stmt, (ast.Assign, ast.AugAssign, ast.Expr)):
                if uses is not None and uses[0] is not loop.body:
                    return False
                uses = (loop.body, loop_vars)
            else:
                return False
    if uses is None:
        return False
    body, loop_vars = uses
    if len(loop_vars) != ndim or len(set(loop_vars)) != ndim:
        return False
    first = next(s for s in _statements(body) if _mentions(s, name))
    if not (isinstance(first, ast.Assign) and len(first.targets) == 1
            and _is_element(first.targets[0], name, loop_vars) and not _mentions(first.value, name)):
        return False
    replace = _Elements(name, loop_vars, scalar)
    for i, stmt in enumerate(body):
        if isinstance(stmt, ast.stmt) and not _is_comment(stmt) and _mentions(stmt, name):
            body[i] = replace.visit(stmt)
    return not replace.other_use


def _is_element(node, name, loop_vars):
    if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
            and node.value.id == name):
        return False
    index = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    return [getattr(e, "id", None) if isinstance(e, ast.Name) else None for e in index] == loop_vars


class _OtherUses(ast.NodeTransformer):
    """Base of the two rewrites below: ``other_use`` is set where ``name`` appears in a form the
    subclass's own visits do not rewrite (a plain ``name`` left over)."""

    name = None
    other_use = False

    def visit_Name(self, node):
        if node.id == self.name:
            self.other_use = True
        return node


class _Elements(_OtherUses):
    """``name[<loop variables>]`` -> the scalar; ``other_use`` where ``name`` appears otherwise."""

    def __init__(self, name, loop_vars, scalar):
        self.name, self.loop_vars, self.scalar = name, loop_vars, scalar
        self.other_use = False

    def visit_Subscript(self, node):
        if _is_element(node, self.name, self.loop_vars):
            return ast.copy_location(ast.Name(self.scalar, node.ctx), node)
        self.generic_visit(node)
        return node


class _ShapeReads(_OtherUses):
    """``name.shape[k]``, ``name.shape``, ``name.ndim``, ``name.dtype.type`` -> the allocation's
    sizes and dtype; ``other_use`` where ``name`` appears otherwise (``dry``: only that, the
    tree is left as it is)."""

    def __init__(self, name, sizes, dtype, dry=False):
        self.name, self.sizes, self.dtype, self.dry = name, sizes, dtype, dry
        self.other_use = False

    def _of_name(self, node, attr):
        return isinstance(node, ast.Attribute) and node.attr == attr and \
            isinstance(node.value, ast.Name) and node.value.id == self.name

    def visit_Subscript(self, node):
        axis = _const_int(node.slice)
        if self._of_name(node.value, "shape") and axis is not None \
                and -len(self.sizes) <= axis < len(self.sizes):
            return node if self.dry else copy.deepcopy(self.sizes[axis])
        self.generic_visit(node)
        return node

    def visit_Attribute(self, node):
        if self.dry and (self._of_name(node, "shape") or self._of_name(node, "ndim") or
                         (node.attr == "type" and self._of_name(node.value, "dtype"))):
            return node
        if self._of_name(node, "shape"):
            return ast.copy_location(ast.Tuple([copy.deepcopy(e) for e in self.sizes], ast.Load()), node)
        if self._of_name(node, "ndim"):
            return ast.copy_location(ast.Constant(len(self.sizes)), node)
        if node.attr == "type" and self._of_name(node.value, "dtype"):
            return copy.deepcopy(self.dtype)
        self.generic_visit(node)
        return node
