"""Loop fusion (cpu target), part 4: size tests that earlier statements already imply.

A lean specialization (``fuse_loops(..., fallback=False)``) tests sizes before each guarded loop
nest: ``if not (a.shape[0] == b.shape[0]): raise FusionGuardFailed(...)``. Once a top-level test
has passed, what it states holds for the rest of the call for arrays bound only once, at the top
level (a NumPy array never changes its shape). The reverse sweep's nests mostly repeat their
forward nests' tests, sometimes as ``a.shape[0] == a.shape[0]``. :func:`drop_implied_guards`
removes every equality that is trivially true or follows from earlier passed tests and allocations
(``t = np.empty((a.shape[0], n), ...)``), and a test with none left.

Why (issue 17, compile latency): each test's ``raise`` is a block of its own in which Numba
releases every live array: c_shapes' reverse sweep repeated all 8 of its forward sweep's tests.
"""
import ast

_ALLOCATIONS = ("np.empty", "np.zeros", "np.ones", "np.full")


def drop_implied_guards(sections, raising=True):
    """``sections`` (the function body's parts, in order) without the size equalities that are
    trivially true or implied. ``raising``: the guards raise (a lean specialization); else they are
    ``if test: fused else: as written`` and only trivially true equalities go (an ``if`` left with
    no test becomes its fused branch)."""
    bindings, nested = _bindings(sections)
    bound = set()           # names bound once, at the top level, whose binding has run

    def stable(node):
        """Every name in ``node`` keeps its value from here to the end of the call."""
        return all(bindings.get(n.id, 0) == 0 or (n.id in bound and n.id not in nested)
                   for n in ast.walk(node) if isinstance(n, ast.Name))

    facts = _Equalities()
    out = []
    for stmts in sections:
        kept = []
        for stmt in stmts:
            kept += _simplify(stmt, facts, stable, raising, top=True)
            if isinstance(stmt, ast.stmt):
                bound.update(n.id for n in _top_level_targets(stmt) if bindings.get(n.id) == 1)
                _learn_allocation(stmt, facts, stable)
        out.append(kept)
    return out


def _simplify(stmt, facts, stable, raising, top):
    """``stmt`` as a list of statements, its size tests simplified; a top-level test that passes
    is learned."""
    if raising and _is_guard(stmt):
        kept = [c for c in _conjuncts(stmt.test.operand) if not _implied(c, facts, stable)]
        if top:
            for c in kept:
                sides = _equality(c)
                if sides is not None and all(stable(side) for side in sides) and \
                        all(_size_expression(side) for side in sides):
                    facts.join(*(ast.unparse(side) for side in sides))
        if not kept:
            return []
        stmt.test.operand = kept[0] if len(kept) == 1 else ast.BoolOp(op=ast.And(), values=kept)
        return [stmt]
    if not raising and isinstance(stmt, ast.If) and stmt.orelse and _is_size_test(stmt.test):
        kept = [c for c in _conjuncts(stmt.test) if not _implied(c, _Equalities(), stable)]
        if not kept:
            return [s for inner in stmt.body for s in _simplify(inner, facts, stable, raising, False)]
        stmt.test = kept[0] if len(kept) == 1 else ast.BoolOp(op=ast.And(), values=kept)
    for field in ("body", "orelse"):
        inner = getattr(stmt, field, None)
        if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
            kept = [s for child in inner for s in _simplify(child, facts, stable, raising, False)]
            if not kept and field == "body":
                kept = [ast.Pass()]     # a loop or branch whose only statement was an implied test
            setattr(stmt, field, kept)
    return [stmt]


def _is_guard(stmt):
    """``if not (...): raise FusionGuardFailed(...)`` as fusion_emit writes it."""
    return (isinstance(stmt, ast.If) and not stmt.orelse and len(stmt.body) == 1
            and isinstance(stmt.body[0], ast.Raise) and isinstance(stmt.body[0].exc, ast.Call)
            and isinstance(stmt.body[0].exc.func, ast.Name)
            and stmt.body[0].exc.func.id == "FusionGuardFailed"
            and isinstance(stmt.test, ast.UnaryOp) and isinstance(stmt.test.op, ast.Not))


def _is_size_test(test):
    return all(_equality(c) is not None for c in _conjuncts(test))


def _conjuncts(test):
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return list(test.values)
    return [test]


def _equality(node):
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
        return node.left, node.comparators[0]
    return None


def _implied(conjunct, facts, stable):
    sides = _equality(conjunct)
    if sides is None or not all(_size_expression(side) for side in sides):
        return False
    left, right = (ast.unparse(side) for side in sides)
    if left == right:
        return True         # the same expression on both sides, evaluated together
    return all(stable(side) for side in sides) and facts.same(left, right)


def _size_expression(node):
    """Names, attributes, constant subscripts and arithmetic: no call, so evaluating it twice
    gives the same value."""
    return all(isinstance(n, (ast.Name, ast.Attribute, ast.Subscript, ast.Constant, ast.BinOp,
                              ast.UnaryOp, ast.expr_context, ast.operator, ast.unaryop))
               for n in ast.walk(node))


def _learn_allocation(stmt, facts, stable):
    """``t = np.empty((e0, e1), ...)`` (or wrapped in ``huge_pages``), t bound once: t.shape[k] is
    e_k."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name) and stable(stmt.targets[0])):
        return
    value = stmt.value
    if isinstance(value, ast.Call) and ast.unparse(value.func) == "huge_pages" and len(value.args) == 1:
        value = value.args[0]
    if not (isinstance(value, ast.Call) and ast.unparse(value.func) in _ALLOCATIONS and value.args
            and isinstance(value.args[0], ast.Tuple)):
        return
    name = stmt.targets[0].id
    for k, entry in enumerate(value.args[0].elts):
        if stable(entry):
            facts.join(f"{name}.shape[{k}]", ast.unparse(entry))


def _bindings(sections):
    """How many times each name is bound anywhere in ``sections``, and the names bound somewhere
    other than a top-level statement."""
    counts, nested = {}, set()
    for stmts in sections:
        for stmt in stmts:
            if not isinstance(stmt, ast.stmt):
                continue
            top = {id(n) for n in _top_level_targets(stmt)}
            for node in ast.walk(stmt):
                if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                    counts[node.id] = counts.get(node.id, 0) + 1
                    if id(node) not in top:
                        nested.add(node.id)
                elif isinstance(node, (ast.FunctionDef, ast.Lambda, ast.Global, ast.Nonlocal)):
                    for name in _names_in(node):
                        nested.add(name)
    return counts, nested


def _top_level_targets(stmt):
    """The names an assignment statement binds (not those bound inside a compound statement)."""
    if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        return [n for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    return []


def _names_in(node):
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        return list(node.names)
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]


class _Equalities:
    """Sets of size expressions known equal (union-find over their source text)."""

    def __init__(self):
        self.parent = {}

    def find(self, key):
        while self.parent.get(key, key) != key:
            key = self.parent[key]
        return key

    def join(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb

    def same(self, a, b):
        return self.find(a) == self.find(b)
