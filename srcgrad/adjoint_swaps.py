"""Adjoint swaps: the reverse of a copy loop exchanges two adjoint arrays instead of copying.

A time-stepping loop that copies one array into another each step (the heat stencil's
``for i in range(1, n - 1): u[i] = un[i]``) has, per step, the reverse loop

    for i in range(n - 2, 0, -1):
        _adj_t = _adj_u[i]
        _adj_u[i] = 0.0
        _adj_un[i] += _adj_t

a pass over both adjoint arrays. Where ``_adj_un`` is known to be zero on the copied slots (the
"zero-slot" analysis below), the loop moves ``_adj_u``'s values into ``_adj_un`` and leaves zeros
behind: exchanging the two arrays does the same in constant time, as a hand-written adjoint swaps
its two buffers. The slots outside the copied range are exchanged back one by one (the heat
stencil's two boundary slots), and a run-time guard keeps the loop when the shapes differ or the
range is not a plain run of slots ``lo..hi`` inside the array.

Zero slots: a forward pass over the reverse sweep keeps, for each candidate adjoint array, regions
known to be zero: the whole array after ``np.zeros_like``, and the slots ``lo..hi`` after a loop
over ``range`` whose body sets ``a[i] = 0.0`` unconditionally and writes ``a`` nowhere else (the
reverse of ``un[i] = ...``). Any other write to the array forgets what was known. A loop body
starts with what holds before the loop and again at the end of the body (the largest such set, as
in zero_adjoints.py). Region bounds are compared as linear forms over names whose value is the same
wherever they are defined (``_t2 = n - 1`` in the forward and the reverse sweep).

When the swap is exact (anything else keeps the loop):
* both arrays are adjoints of 1-d arrays the function made itself (not parameters) from the same
  source (``np.copy`` / ``.copy()`` of one array, or ``np.zeros``/``np.empty``/``np.ones`` with
  the default dtype): the same dtype and a C layout, so the names can trade arrays in Numba;
* each is bound once (``np.zeros_like`` at the start of the reverse sweep) and used only as
  ``a[i]`` (one index, no slice: no view of it is kept), ``a.shape``, ``a += ...``, as an operand
  of another name's ``+=`` or in the returned gradients: no other name holds the array;
* the loop body is exactly ``t = a[i]; a[i] = 0; b[i] += t`` (or ``b[i] += a[i]; a[i] = 0``) for
  the loop's variable ``i`` over ``range(.., .., ±1)``, and ``b`` is zero on those slots.
The values are those of the loop bit for bit, except a ``-0.0`` moved across stays ``-0.0``
(``0.0 + -0.0`` is ``0.0``).
"""
import ast

from . import first_contributions
from .naming import SWAP_INDEX
from .placeholders import Comment

ALL = "all"                  # the region "every slot"
_CREATIONS = ("zeros", "empty", "ones")
_SHAPE_ATTRS = ("shape", "size", "ndim", "dtype")


def swap_copied_adjoints(forward, reverse, tail, adjoint_kinds, params):
    """``reverse`` with each qualifying copy loop's reverse replaced by a guarded swap.

    ``forward``, ``reverse``, ``tail``: the finished statements of the adjoint function (forward
    sweep, reverse sweep, the return); ``adjoint_kinds``: adjoint name -> (primal name, kind) of
    the active variables; ``params``: the function's parameters (their adjoints are not swapped)."""
    everything = list(forward) + list(reverse) + list(tail)
    origins = _origins(forward, params)
    candidates = {}
    for adj, (primal, kind) in adjoint_kinds.items():
        if kind.is_array and kind.ndim == 1 and primal not in params and \
                origins.get(primal) is not None and _owned(adj, everything, reverse):
            candidates[adj] = origins[primal]
    if len(candidates) < 2:
        return reverse
    facts = _Facts(everything, params)
    out, _ = _block(reverse, {}, candidates, facts, rewrite=True)
    return out


# -- which arrays may trade places ---------------------------------------------------------------

def _origins(forward, params):
    """Primal array name -> where its array comes from (the same origin: the same dtype and a C
    layout), for names bound only by copies or default-dtype creations; None when unknown."""
    found = {}
    for node in _walk(forward):
        if isinstance(node, (ast.For, ast.comprehension)):
            for name in _target_names(node.target):
                found.setdefault(name, []).append(None)
        elif isinstance(node, ast.Assign) and getattr(node, "snapshot_row", False):
            # a step snapshot written in place binds the array to a row of a buffer made like it
            # (tape.py, step_snapshots.py): the same dtype and a C layout, its origin kept
            found.setdefault(node.targets[0].id, []).append(KEEPS)
        elif isinstance(node, ast.Assign):
            single = len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
            for target in node.targets:
                for name in _target_names(target):
                    found.setdefault(name, []).append(_source(node.value) if single else None)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and isinstance(node.target, ast.Name):
            found.setdefault(node.target.id, []).append(None)
    resolved = {}

    def origin(name, seen=()):
        if name in params:
            return ("copy of", name)
        sources = [src for src in found.get(name, ()) if src is not KEEPS]
        if not sources or None in sources or name in seen:
            return None
        out = set()
        for src in sources:
            out.add(src if src[0] == "created" else origin(src[1], seen + (name,)))
        return out.pop() if len(out) == 1 and None not in out else None

    for name in found:
        if name not in params:
            resolved[name] = origin(name)
    return resolved


KEEPS = ("keeps its origin",)


def _source(value):
    """("copy of", x) for np.copy(x) / x.copy(); ("created", call) for np.zeros(shape) etc."""
    if not isinstance(value, ast.Call) or value.keywords:
        return None
    func = value.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        if func.value.id == "np" and func.attr == "copy" and len(value.args) == 1 and \
                isinstance(value.args[0], ast.Name):
            return ("copy of", value.args[0].id)
        if func.attr == "copy" and not value.args and func.value.id != "np":
            return ("copy of", func.value.id)
        if func.value.id == "np" and func.attr in _CREATIONS and len(value.args) == 1:
            return ("created", "default dtype")
    return None


def _owned(adj, everything, reverse):
    """Whether no name but ``adj`` can hold its array: bound once, by np.zeros_like at the top of
    the reverse sweep, and otherwise used only in ways that keep no reference (module doc)."""
    inits = [stmt for stmt in reverse if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
             and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == adj]
    if len(inits) != 1 or not _is_call(inits[0].value, "zeros_like"):
        return False
    allowed = {id(inits[0].targets[0])}
    for node in _walk(everything):
        if isinstance(node, ast.Subscript) and _is_name(node.value, adj) and _element_index(node.slice):
            allowed.add(id(node.value))
        elif isinstance(node, ast.Attribute) and _is_name(node.value, adj) and node.attr in _SHAPE_ATTRS:
            allowed.add(id(node.value))
        elif isinstance(node, ast.AugAssign):
            if _is_name(node.target, adj):
                allowed.add(id(node.target))
            elif not _is_name(node.target, adj):
                allowed.update(id(n) for n in ast.walk(node.value) if _is_name(n, adj))
        elif isinstance(node, ast.Return) and node.value is not None:
            allowed.update(id(n) for n in ast.walk(node.value) if _is_name(n, adj))
    return all(id(node) in allowed for node in _walk(everything) if _is_name(node, adj))


def _element_index(index):
    """One scalar index expression: no slice, no tuple (the arrays are 1-d), no None or `...`."""
    return not any(isinstance(n, (ast.Slice, ast.Tuple, ast.List)) or
                   (isinstance(n, ast.Constant) and (n.value is None or n.value is Ellipsis))
                   for n in ast.walk(index))


# -- bounds as linear forms over names with one value ---------------------------------------------

class _Facts:
    """Names whose every definition in the function is the same expression of such names (or of
    names never assigned), so that an expression of them means the same value everywhere."""

    def __init__(self, everything, params):
        self.defs = {}
        for node in _walk(everything):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                    isinstance(node.targets[0], ast.Name):
                self.defs.setdefault(node.targets[0].id, []).append(node.value)
            else:
                for target in _assigned_targets(node):
                    self.defs.setdefault(target, []).append(None)
        self.cache = {}

    def linear(self, node, seen=()):
        """{atom: coefficient} with the constant under key 1, or None (not known steady)."""
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return {1: node.value}
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = self.linear(node.operand, seen)
            return None if inner is None else {k: -v for k, v in inner.items()}
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            left, right = self.linear(node.left, seen), self.linear(node.right, seen)
            if left is None or right is None:
                return None
            sign = 1 if isinstance(node.op, ast.Add) else -1
            out = dict(left)
            for k, v in right.items():
                out[k] = out.get(k, 0) + sign * v
            return {k: v for k, v in out.items() if v != 0}
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            left, right = self.linear(node.left, seen), self.linear(node.right, seen)
            for a, b in ((left, right), (right, left)):
                if a is not None and b is not None and set(a) <= {1}:
                    return {k: v * a.get(1, 0) for k, v in b.items() if v * a.get(1, 0) != 0}
        if isinstance(node, ast.Name):
            definitions = self.defs.get(node.id)
            if definitions is None:               # a parameter or a name never assigned here
                return {("name", node.id): 1}
            if node.id in seen or None in definitions or \
                    len({ast.dump(d) for d in definitions}) != 1:
                return None
            return self.linear(definitions[0], seen + (node.id,))
        key = self.atom(node, seen)
        return None if key is None else {key: 1}

    def atom(self, node, seen):
        """A key for a steady non-linear expression (``u0.shape[0]``, ``n // 2``), or None."""
        if isinstance(node, ast.Name):
            form = self.linear(node, seen)
            return None if form is None else ("lin", _frozen(form))
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return ("lin", ((1, node.value),))
        if isinstance(node, ast.Attribute) and node.attr in ("shape", "size", "ndim"):
            inner = self.atom(node.value, seen)
            return None if inner is None else ("attr", node.attr, inner)
        if isinstance(node, ast.Subscript):      # an item of a shape (arrays' items may change)
            value, index = self.atom(node.value, seen), self.atom(node.slice, seen)
            return None if value is None or index is None or not _is_shape(value) else \
                ("item", value, index)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.FloorDiv, ast.Mod)):
            left, right = self.atom(node.left, seen), self.atom(node.right, seen)
            return None if left is None or right is None else \
                ("op", type(node.op).__name__, left, right)
        return None

    # the region algebra, for first_contributions.py (which cannot import this module: circle)
    ALL = ALL

    @staticmethod
    def difference(a, b):
        return _constant_difference(a, b)

    @staticmethod
    def plus(expr, k):
        return _plus(expr, k)

    def region(self, loop):
        """The slots ``(lo, hi)`` a ``for i in range(start, stop, ±1)`` visits (as linear forms),
        with the expressions of ``lo`` and ``hi`` as they can be written before the loop; None."""
        bounds = _range_bounds(loop)
        if bounds is None:
            return None
        lo, hi = bounds
        lo_form, hi_form = self.linear(lo), self.linear(hi)
        if lo_form is None or hi_form is None:
            return None
        return (_frozen(lo_form), _frozen(hi_form)), (lo, hi)


def _range_bounds(loop):
    """``(lo, hi)`` expressions of a ``for`` over ``range(a, b, 1)`` (a, b - 1) or
    ``range(a, b, -1)`` (b + 1, a), the last slot included; None for other loops."""
    it = loop.iter
    if not (isinstance(loop.target, ast.Name) and isinstance(it, ast.Call) and
            isinstance(it.func, ast.Name) and it.func.id == "range" and len(it.args) == 3 and
            not it.keywords):
        return None
    start, stop, step = it.args
    if not all(_simple(e) for e in (start, stop)):
        return None
    step_value = step.value if isinstance(step, ast.Constant) else \
        -step.operand.value if isinstance(step, ast.UnaryOp) and isinstance(step.op, ast.USub) and \
        isinstance(step.operand, ast.Constant) else None
    if step_value == 1:
        return start, _plus(stop, -1)
    if step_value == -1:
        return _plus(stop, 1), start
    return None


def _plus(expr, k):
    """``expr + k`` (folded when ``expr`` is a constant or ends in ``- k``)."""
    if isinstance(expr, ast.Constant) and type(expr.value) is int:
        return ast.Constant(expr.value + k)
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Sub)) and \
            isinstance(expr.right, ast.Constant) and type(expr.right.value) is int:
        c = expr.right.value if isinstance(expr.op, ast.Add) else -expr.right.value
        if c + k == 0:
            return expr.left
    op = ast.Add() if k > 0 else ast.Sub()
    return ast.BinOp(left=expr, op=op, right=ast.Constant(abs(k)))


def _simple(expr):
    """Evaluating it again has no effect and gives the same value (names, constants, + - *)."""
    return all(isinstance(n, (ast.Name, ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator,
                              ast.unaryop, ast.expr_context, ast.Attribute, ast.Subscript))
               for n in ast.walk(expr))


def _is_shape(key):
    """Whether an atom key is an array's shape (``_t1`` after ``_t1 = u0.shape``)."""
    if key[0] == "lin" and len(key[1]) == 1 and key[1][0][1] == 1:
        key = key[1][0][0]
    return isinstance(key, tuple) and key[:2] == ("attr", "shape")


def _frozen(form):
    return tuple(sorted(form.items(), key=repr))


def _covers(outer, inner):
    """Region ``outer`` contains region ``inner`` (both known to be exact)."""
    if outer == ALL:
        return True
    if inner == ALL:
        return False
    below, above = _constant_difference(inner[0], outer[0]), _constant_difference(outer[1], inner[1])
    return below is not None and below >= 0 and above is not None and above >= 0


def _constant_difference(a, b):
    """``a - b`` when it is a constant, else None."""
    diff = dict(a)
    for k, v in b:
        diff[k] = diff.get(k, 0) - v
    if any(v != 0 for k, v in diff.items() if k != 1):
        return None
    return diff.get(1, 0)


def _meet(a, b):
    """What holds in both states (name -> frozenset of zero regions)."""
    out = {}
    for name in set(a) & set(b):
        keep = frozenset(r for r in a[name] if any(_covers(s, r) for s in b[name])) | \
            frozenset(r for r in b[name] if any(_covers(s, r) for s in a[name]))
        if keep:
            out[name] = keep
    return out


# -- the pass ---------------------------------------------------------------------------------------

def _block(stmts, zero, candidates, facts, rewrite):
    zero = dict(zero)
    out = []
    for stmt in stmts:
        if isinstance(stmt, Comment):
            out.append(stmt)
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id in candidates and \
                _is_call(stmt.value, "zeros_like"):
            zero[stmt.targets[0].id] = frozenset([ALL])
            out.append(stmt)
        elif isinstance(stmt, ast.For) and not stmt.orelse and _copy_loop(stmt, candidates):
            source, dest = _copy_loop(stmt, candidates)
            region = facts.region(stmt)
            swap = region is not None and \
                any(_covers(r, region[0]) for r in zero.get(dest, ())) and \
                candidates[source] == candidates[dest]
            if swap and rewrite:
                out.append(_swap(stmt, source, dest, region[1]))
            else:
                out.append(stmt)
            zero.pop(dest, None)
            kept = zero.get(source, frozenset())
            zero[source] = kept | {region[0]} if region is not None else frozenset()
            if not zero[source]:
                del zero[source]
        elif isinstance(stmt, (ast.For, ast.While)):
            entry = {name: regions for name, regions in zero.items()}
            for _ in range(8):          # (the regions shrink: a few rounds; else know nothing)
                _, end = _block(stmt.body, entry, candidates, facts, rewrite=False)
                stable = _meet(entry, end)
                if stable == entry:
                    break
                entry = stable
            else:
                entry = {}
            if rewrite:
                stmt.body, _ = _block(stmt.body, entry, candidates, facts, rewrite=True)
                if isinstance(stmt, ast.For):      # (zero at loop entry: first_contributions.py)
                    stmt = first_contributions.assign_first_contributions(stmt, zero, candidates, facts)
            # after the loop: what holds at the top of every iteration, unless a `break` leaves
            # mid-body or an `else:` runs after it (then only what they do not write)
            leaves = any(isinstance(n, ast.Break) for n in _walk(stmt.body))
            zero = {n: r for n, r in entry.items()
                    if not (leaves and _writes(stmt, n)) and not _writes_any(stmt.orelse, n)}
            for name in _zeroed_by(stmt, candidates):
                region = facts.region(stmt)
                if region is not None:
                    zero[name] = zero.get(name, frozenset()) | {region[0]}
            out.append(stmt)
        elif isinstance(stmt, ast.If):
            body, zb = _block(stmt.body, zero, candidates, facts, rewrite)
            orelse, zo = _block(stmt.orelse, zero, candidates, facts, rewrite)
            if rewrite:
                stmt.body, stmt.orelse = body, orelse
            zero = _meet(zb, zo)
            out.append(stmt)
        else:
            for name in [n for n in zero if _writes(stmt, n)]:
                del zero[name]
            out.append(stmt)
    return out, zero


def _copy_loop(loop, candidates):
    """(source, dest) when the loop body is the reverse of ``dest_primal[i] = source_primal[i]``:
    ``t = a[i]; a[i] = 0; b[i] += t`` or ``b[i] += a[i]; a[i] = 0`` (comments aside)."""
    if not isinstance(loop.target, ast.Name):
        return None
    i = loop.target.id
    body = [s for s in loop.body if not isinstance(s, Comment)]
    if len(body) == 3:
        load, reset, add = body
        if not (isinstance(load, ast.Assign) and len(load.targets) == 1 and
                isinstance(load.targets[0], ast.Name)):
            return None
        temp = load.targets[0].id
        if not (isinstance(add, ast.AugAssign) and isinstance(add.op, ast.Add) and
                _is_name(add.value, temp)):
            return None
        source = _element_of(load.value, i)
    elif len(body) == 2:
        add, reset = body
        if not (isinstance(add, ast.AugAssign) and isinstance(add.op, ast.Add)):
            return None
        source = _element_of(add.value, i)
        temp = None
    else:
        return None
    dest = _element_of(add.target, i)
    if source is None or dest is None or source == dest or source not in candidates or \
            dest not in candidates or temp in (source, dest, i):
        return None
    if not (isinstance(reset, ast.Assign) and len(reset.targets) == 1 and
            _element_of(reset.targets[0], i) == source and _is_zero(reset.value)):
        return None
    return source, dest


def _zeroed_by(loop, candidates):
    """Candidates a ``for`` loop's body sets to zero at the loop's index unconditionally (at its
    top level) and writes nowhere else: after the loop they are zero on its region."""
    if not isinstance(loop, ast.For) or not isinstance(loop.target, ast.Name) or loop.orelse or \
            any(isinstance(n, (ast.Break, ast.Continue, ast.Return)) for n in _walk(loop.body)):
        return []
    i = loop.target.id
    if any(i in _target_names_all(n) for n in _walk(loop.body)):
        return []
    out = []
    for name in candidates:
        resets = [s for s in loop.body if isinstance(s, ast.Assign) and len(s.targets) == 1 and
                  _element_of(s.targets[0], i) == name and _is_zero(s.value)]
        if len(resets) == 1 and not any(_writes(s, name) for s in loop.body if s is not resets[0]):
            out.append(name)
    return out


def _swap(loop, source, dest, bounds):
    """The guarded swap that replaces the copy loop (the loop itself in the else branch)."""
    lo, end = bounds[0], _plus(bounds[1], 1)          # the slots lo .. end - 1
    k = SWAP_INDEX
    checks = [f"{source}.shape == {dest}.shape"]
    if not (isinstance(lo, ast.Constant) and lo.value >= 0):
        checks.append(f"0 <= {ast.unparse(lo)}")
    lo, end = ast.unparse(lo), ast.unparse(end)
    checks += [f"{lo} <= {end}", f"{end} <= {source}.shape[0]"]
    back = f"        {source}[{k}], {dest}[{k}] = {dest}[{k}], {source}[{k}]\n"
    text = (f"if {' and '.join(checks)}:\n"
            f"    {source}, {dest} = {dest}, {source}\n"
            + (f"    for {k} in range(0, {lo}):\n" + back if lo != "0" else "")
            + f"    for {k} in range({end}, {source}.shape[0]):\n" + back
            + "else:\n    pass\n")
    guard = ast.parse(text).body[0]
    guard.orelse = [loop]
    line = getattr(loop, "lineno", 1)
    for node in ast.walk(guard):
        if isinstance(node, (ast.stmt, ast.expr)) and node is not loop and \
                not _inside(node, loop):
            node.lineno = line
            node.end_lineno = line
            node.col_offset = node.end_col_offset = 0
    comments = [s for s in loop.body if isinstance(s, Comment)]
    source_line = comments[0].lineno_src if comments else line
    note = Comment(f"adjoint swap: `{dest}` is zero on the slots this copy moves `{source}` into, "
                   f"so the two arrays trade places (the slots outside {lo}..{end} - 1 traded back) "
                   "instead of a pass over both", source_line)
    guard.body.insert(0, note)
    guard.swap_slots = (source, dest, lo, end)    # (for dropped_zeroes.py: swaps slots lo..end - 1)
    return guard


def _inside(node, loop):
    return any(node is n for n in ast.walk(loop))


# -- small AST facts ---------------------------------------------------------------------------------

def _walk(stmts):
    for stmt in stmts:
        yield from ast.walk(stmt)


def _is_name(node, name):
    return isinstance(node, ast.Name) and node.id == name


def _is_call(node, attr):
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
        isinstance(node.func.value, ast.Name) and node.func.value.id == "np" and node.func.attr == attr


def _is_zero(node):
    if isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords and \
            isinstance(node.func, ast.Attribute) and node.func.attr in ("float32", "float64"):
        node = node.args[0]
    return isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value == 0


def _element_of(node, index):
    """The array name of ``a[index]`` (the index exactly the name ``index``), else None."""
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and \
            _is_name(node.slice, index):
        return node.value.id
    return None


def _writes(stmt, name):
    """Whether ``stmt`` may change (or hand out) the array ``name``: any use but ``name[...]`` read
    and ``name.shape``."""
    reads = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and \
                _is_name(node.value, name):
            reads.add(id(node.value))
        elif isinstance(node, ast.Attribute) and _is_name(node.value, name) and node.attr in _SHAPE_ATTRS:
            reads.add(id(node.value))
    return any(_is_name(node, name) and id(node) not in reads for node in ast.walk(stmt))


def _writes_any(stmts, name):
    return any(_writes(stmt, name) for stmt in stmts)


def _target_names(target):
    """Names a target binds (``a, b = ...``), not those it writes into (``a[i] = ...``)."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for item in target.elts for name in _target_names(item)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return []


def _target_names_all(node):
    """Names a node binds (assignment targets, loop variables)."""
    if isinstance(node, ast.Assign):
        return [name for t in node.targets for name in _target_names(t)]
    if isinstance(node, (ast.AugAssign, ast.AnnAssign)) and isinstance(node.target, ast.Name):
        return [node.target.id]
    if isinstance(node, (ast.For, ast.comprehension)):
        return _target_names(node.target)
    return []


def _assigned_targets(node):
    """Names bound by anything but a plain ``name = value`` (those are definitions)."""
    if isinstance(node, ast.Assign) and (len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name)):
        return _target_names_all(node)
    if isinstance(node, ast.Assign):
        return []
    return _target_names_all(node)

