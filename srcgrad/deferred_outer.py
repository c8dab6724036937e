"""Deferred outer products: a weight adjoint a reverse time loop only adds into, summed after it.

The reverse of an LSTM step written with loops adds one outer product into the weight adjoint
every time step (``_adj_W[3 * H + j, D + k] += _adj_zg * h[k]`` for every ``j`` and ``k``): each
step reads and writes all of ``_adj_W`` (48 KiB at H=32, D=16), more than L1 holds, and that
read-modify-write was half the reverse sweep (benchmarks/results/lstm_profile.md). When nothing in
the time loop reads the adjoint, its contributions can wait: the two factors of each step are
stored (a row of ``_dfo_s``: the k-invariant factors, a row of ``_dfo_v``: the k-indexed values)
and one matrix product after the loop, ``_dfo_s.T @ _dfo_v``, adds all steps at once:

    for t in range(T - 1, -1, -1):              # L_t
        ...
        for j in range(H - 1, -1, -1):          # L_j
            ...  _adj_zg = ...
            for k in range(0, D, 1):            # L_k
                _t27 = xs[t, k]
                _adj_t26 = _adj_zg * _t27
                _adj_W[3 * H + j, k] += _adj_t26

becomes ``_dfo_v[t, k] = xs[t, k]`` in a loop before L_j (``xs`` is not written in L_j),
``_dfo_s[t, 3 * nj + j] = _adj_zg`` before L_k, and at the end of the last step
``_dfo_p = matmul(_dfo_s.T, _dfo_v)`` with ``_adj_W[3 * H + j, k] += _dfo_p[3 * nj + j, k]``
for every ``j`` and ``k`` of the two ranges. The buffers hold at most ROWS steps (a row per step,
counted by ``_dfo_r``): a longer loop adds their products in at the end of each step that fills
them, so memory stays bounded.

:func:`defer` applies this to a statement ``A[R, C] += X`` (``A`` an adjoint array) that is a
direct child of a loop L_k, itself a direct child of a loop L_j, itself a direct child of a loop
L_t (every statement between runs once per iteration: no condition, no jump), when
* ``A`` is an adjoint array no other name can hold (loop_splits.owned_arrays), and inside L_t it
  appears only as the target of such ``+=`` statements (never read, never assigned, no exit);
* the three loops are ``range`` loops with step 1 or -1 whose bounds L_t does not change;
* ``R`` is L_j's variable plus an expression of names L_t does not assign, ``C`` is L_k's variable
  plus such an expression (so one step adds to one block of rows by columns);
* ``X`` is ``s * v`` (either order), tracked through L_k's assignments, where ``s`` is a name with
  the same value in every iteration of L_k (not assigned there, or assigned back its own value,
  as ``_adj_zg = 0.0; _adj_zg = _adj_t54`` with ``_adj_t54 = _adj_zg``), and ``v`` is an element
  ``a[...]`` whose subscripts are L_k's variable and names L_j does not assign, of an array L_j
  does not write, rebind or pass to a call (and which no name written there can hold).
Then each step's contributions are exactly ``s_t[j] * v_t[k]`` over the whole block, and their sum
over steps is ``(S.T @ V)[j, k]``. Floating-point additions run in another order: the result
differs from the step-by-step sum by rounding only. NaN and inf reach the product as they reach
the sum. Off with ``DEFERRED_OUTER = False``.

The same holds for a whole-array statement of L_t's own body, ``A += matmul_grad_left(g, W, x)``
with ``W`` a matrix and ``x`` a vector (the adjoint of ``W @ x``: the outer product of ``g`` and
``x``) or ``A += matmul_grad_right(g, v, W)`` with ``v`` a vector (of ``v @ W``: the outer product
of ``v`` and ``g``): the two vectors are copied into the buffers where the statement was, and
``A += matmul(_dfo_s.T, _dfo_v)`` replaces the per-step product and its temporary (an RNN written
with ``W @ x[t]``, ``h @ U``: no matrix allocated per step).
"""
import ast
import copy
import itertools

from . import loop_splits
from .placeholders import Comment

# False: the weight adjoint is updated every step as the reverse sweep writes it (not in the cache key)
DEFERRED_OUTER = True
# time steps per matrix product: the buffers hold at most this many steps (a long loop adds its
# products every ROWS steps), so they stay small beside the tape
ROWS = 256

NOTE = ("deferred outer products: {arrays} only added into in this loop, each step adding outer "
        "products of per-step values; the factors are stored per step ({buffers}) and added with "
        "one matrix product after the loop or every {rows} steps (no pass over the whole adjoint "
        "each step; the sum in another order)")

_PURE_CALLS = {"uint64", "int64", "intp", "float64", "float32", "exp", "log", "sqrt", "tanh",
               "sin", "cos", "abs", "fabs", "isnan", "isinf", "copysign", "floor", "ceil"}
_fresh = itertools.count()


def defer(reverse_body, tail=(), taken=frozenset(), forward=(), ndim=None):
    """``reverse_body`` with qualifying outer-product accumulations deferred past their time loop.
    ``taken``: names in use (the buffers' names avoid them); ``ndim(name)``: an array's number of
    dimensions (None when not known to be an array)."""
    if not DEFERRED_OUTER:
        return reverse_body
    everything = list(forward) + list(reverse_body) + list(tail)
    # (the tail runs after the whole reverse sweep: a name it binds to an adjoint, the seeded
    # gradient, cannot hold the array while a time loop runs)
    owned = loop_splits.owned_arrays(reverse_body, list(forward) + list(reverse_body), any_rank=True)
    if not owned:
        return reverse_body
    used = set(taken) | {n.id for n in ast.walk(ast.Module(body=everything, type_ignores=[]))
                         if isinstance(n, ast.Name)}
    names = _Names(used)
    return _rewrite_list(reverse_body, owned, names, ndim or (lambda name: None))


class _Names:
    def __init__(self, used):
        self.used = set(used)

    def fresh(self, stem):
        for k in itertools.count(1):
            name = f"_dfo_{stem}{k}"
            if name not in self.used:
                self.used.add(name)
                return name


def _rewrite_list(stmts, owned, names, ndim):
    out = []
    for stmt in stmts:
        if isinstance(stmt, ast.For) and not isinstance(stmt, Comment):
            done = _rewrite_time_loop(stmt, owned, names, ndim)
            if done is not None:
                out.extend(done)
                continue
            stmt.body = _rewrite_list(stmt.body, owned, names, ndim)
        elif isinstance(stmt, (ast.If, ast.While)) and not isinstance(stmt, Comment):
            stmt.body = _rewrite_list(stmt.body, owned, names, ndim)
            stmt.orelse = _rewrite_list(stmt.orelse, owned, names, ndim)
        out.append(stmt)
    return out


# -- facts about a block of statements -----------------------------------------------------------
def _walk(stmts):
    for stmt in stmts:
        if not isinstance(stmt, Comment):
            yield from ast.walk(stmt)


def _assigned(stmts):
    """Names bound anywhere in ``stmts`` (assignments, loop targets, ``+=``)."""
    return {n.id for n in _walk(stmts) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}


def _written_arrays(stmts):
    """Names of arrays whose elements ``stmts`` store, and names passed to a call that is not a
    known scalar function (a call may write its arguments); None for a call we cannot name."""
    written = set()
    for node in _walk(stmts):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Subscript):
                        base = sub.value
                        if not isinstance(base, ast.Name):
                            return None
                        written.add(base.id)
        elif isinstance(node, ast.Call):
            func = node.func
            if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    and func.value.id in ("np", "numpy", "math") and func.attr in _PURE_CALLS):
                if not (isinstance(func, ast.Name) and func.id in ("float", "int", "abs", "min", "max",
                                                                   "range", "range_length")):
                    written.update(n.id for a in node.args for n in ast.walk(a) if isinstance(n, ast.Name))
    return written


def _jumps(stmts):
    return any(isinstance(n, (ast.Break, ast.Continue, ast.Return, ast.Raise, ast.Try, ast.With,
                              ast.Yield, ast.YieldFrom, ast.Global, ast.Nonlocal))
               for n in _walk(stmts))


def _range(loop):
    """(start, stop, step) of ``for name in range(start, stop, ±1)``, else None."""
    if not (isinstance(loop, ast.For) and isinstance(loop.target, ast.Name) and not loop.orelse
            and isinstance(loop.iter, ast.Call) and isinstance(loop.iter.func, ast.Name)
            and loop.iter.func.id == "range" and not loop.iter.keywords):
        return None
    args = loop.iter.args
    if len(args) == 1:
        start, stop, step = ast.Constant(0), args[0], 1
    elif len(args) in (2, 3):
        start, stop = args[0], args[1]
        step = 1
        if len(args) == 3:
            s = args[2]
            if isinstance(s, ast.Constant) and s.value in (1, -1) and not isinstance(s.value, bool):
                step = s.value
            elif isinstance(s, ast.UnaryOp) and isinstance(s.op, ast.USub) and \
                    isinstance(s.operand, ast.Constant) and s.operand.value == 1:
                step = -1
            else:
                return None
    else:
        return None
    return start, stop, step


def _simple(expr, frozen):
    """Whether ``expr`` is integer arithmetic on constants and names not in ``frozen`` (the names
    the time loop assigns): the same value at every entry to the loop it bounds."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Name):
            if node.id in frozen:
                return False
        elif not isinstance(node, (ast.Constant, ast.BinOp, ast.UnaryOp, ast.Add, ast.Sub, ast.Mult,
                                   ast.FloorDiv, ast.USub, ast.Load)):
            return False
        if isinstance(node, ast.Constant) and (isinstance(node.value, bool) or not isinstance(node.value, int)):
            return False
    return True


def _low_and_count(start, stop, step):
    """Expressions for the smallest value and the number of values of ``range(start, stop, step)``."""
    if step == 1:
        low = copy.deepcopy(start)
        count = ast.parse(f"max({ast.unparse(stop)} - {_paren(start)}, 0)", mode="eval").body
    else:
        low = _fold(ast.parse(f"{_paren(stop)} + 1", mode="eval").body)
        count = ast.parse(f"max({ast.unparse(start)} - {_paren(stop)}, 0)", mode="eval").body
    return low, _fold(count)


def _paren(expr):
    text = ast.unparse(expr)
    return text if isinstance(expr, (ast.Name, ast.Constant)) else f"({text})"


def _fold(expr):
    """``-1 + 1`` -> ``0``, ``x - 0`` -> ``x`` (readable buffer indices)."""
    if isinstance(expr, ast.BinOp):
        left, right = _fold(expr.left), _fold(expr.right)
        lv = _const(left)
        rv = _const(right)
        if lv is not None and rv is not None and isinstance(expr.op, (ast.Add, ast.Sub)):
            return ast.Constant(lv + rv if isinstance(expr.op, ast.Add) else lv - rv)
        if rv is not None and isinstance(left, ast.BinOp) and isinstance(left.op, (ast.Add, ast.Sub)) \
                and _const(left.right) is not None and isinstance(expr.op, (ast.Add, ast.Sub)):
            inner = _const(left.right) * (1 if isinstance(left.op, ast.Add) else -1)
            total = inner + (rv if isinstance(expr.op, ast.Add) else -rv)      # (x ± c1) ± c2
            return _fold(ast.BinOp(left.left, ast.Add() if total >= 0 else ast.Sub(), ast.Constant(abs(total))))
        if rv is not None and rv < 0 and isinstance(expr.op, ast.Sub):
            return _fold(ast.BinOp(left, ast.Add(), ast.Constant(-rv)))
        if rv == 0 and isinstance(expr.op, (ast.Add, ast.Sub)):
            return left
        if lv == 0 and isinstance(expr.op, ast.Add):
            return right
        return ast.BinOp(left, expr.op, right)
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "max":
        args = [_fold(a) for a in expr.args]
        values = [_const(a) for a in args]
        if all(v is not None for v in values):
            return ast.Constant(max(values))
        return ast.Call(expr.func, args, [])
    return expr


def _const(expr):
    if isinstance(expr, ast.Constant) and isinstance(expr.value, int) and not isinstance(expr.value, bool):
        return expr.value
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub):
        inner = _const(expr.operand)
        return None if inner is None else -inner
    return None


# -- symbolic values of the names in one iteration -----------------------------------------------
class _Values:
    """Values of expressions in one iteration of a loop body, as terms: ('c', v) constants;
    ('var', name) the loop's variable; ('pre', name) a name's value on entry to the loop when the
    loop does not assign it; ('start', name) a name's value at the start of the iteration when the
    loop assigns it; ('bin', op, a, b), ('neg', a); ('load', array, subscripts) an element of an
    array the outer loop L_j does not write; ('opaque', n) anything else (never equal to another)."""

    def __init__(self, var, assigned, unwritten):
        self.var, self.assigned, self.unwritten = var, assigned, unwritten
        self.env = {}

    def name(self, name):
        if name == self.var:
            return ("var", name)
        if name in self.env:
            return self.env[name]
        return ("start", name) if name in self.assigned else ("pre", name)

    def of(self, expr):
        if isinstance(expr, ast.Constant) and isinstance(expr.value, (int, float)) \
                and not isinstance(expr.value, bool):
            return ("c", expr.value)
        if isinstance(expr, ast.Name):
            return self.name(expr.id)
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            return _bin(type(expr.op).__name__, self.of(expr.left), self.of(expr.right))
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and \
                isinstance(expr.func.value, ast.Name) and expr.func.value.id in ("np", "numpy") and \
                expr.func.attr in ("float32", "float64") and len(expr.args) == 1 and \
                isinstance(expr.args[0], ast.Constant) and isinstance(expr.args[0].value, float):
            return ("c", expr.args[0].value)     # (float32 programs: `_adj_zg = np.float32(0.0)`)
        if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub):
            return ("neg", self.of(expr.operand))
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and \
                isinstance(expr.func.value, ast.Name) and expr.func.value.id in ("np", "numpy") and \
                expr.func.attr in ("uint64", "int64", "intp") and len(expr.args) == 1 and not expr.keywords:
            return self.of(expr.args[0])        # (the index casts of unsigned_index / nonneg_index)
        if isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Name) and \
                expr.value.id in self.unwritten and isinstance(expr.ctx, ast.Load):
            items = expr.slice.elts if isinstance(expr.slice, ast.Tuple) else [expr.slice]
            if not any(isinstance(n, ast.Slice) for i in items for n in ast.walk(i)):
                return ("load", expr.value.id, tuple(self.of(i) for i in items))
        return ("opaque", next(_fresh))

    def run(self, stmt):
        """Track one statement (other than a candidate ``A[...] += X``)."""
        if isinstance(stmt, Comment):
            return
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            self.env[stmt.targets[0].id] = self.of(stmt.value)
            return
        if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name) and \
                isinstance(stmt.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            name = stmt.target.id
            self.env[name] = _bin(type(stmt.op).__name__, self.name(name), self.of(stmt.value))
            return
        for name in _assigned([stmt]):
            self.env[name] = ("opaque", next(_fresh))


def _bin(op, a, b):
    """The term of ``a op b``; ``0.0 + x`` is ``x`` (float32 code resets an adjoint to
    ``np.float32(0.0)`` and adds its saved value back). They differ only for ``x = -0.0``, and a
    contribution of -0.0 instead of +0.0 cannot show: an adjoint array starts at +0.0 and is only
    added into, and +0.0 + -0.0 is +0.0."""
    if op == "Add" and a == ("c", 0.0) and isinstance(a[1], float):
        return b
    return ("bin", op, a, b)


def _linear(term, pre):
    """``term`` as {atom: coefficient} (key None: the constant) when it is a sum of multiples of
    atoms; ``pre`` expands ('pre', name) atoms. None otherwise."""
    if term[0] == "pre":
        term = pre(term[1])
    kind = term[0]
    if kind == "c":
        return {None: term[1]} if isinstance(term[1], int) else None
    if kind in ("var", "inv"):
        return {term: 1}
    if kind == "neg":
        inner = _linear(term[1], pre)
        return None if inner is None else {k: -v for k, v in inner.items()}
    if kind == "bin" and term[1] in ("Add", "Sub", "Mult"):
        a, b = _linear(term[2], pre), _linear(term[3], pre)
        if a is None or b is None:
            return None
        if term[1] == "Mult":
            if set(a) == {None}:
                a, b = b, a
            if set(b) != {None}:
                return None
            return {k: v * b[None] for k, v in a.items()}
        sign = 1 if term[1] == "Add" else -1
        out = dict(a)
        for k, v in b.items():
            out[k] = out.get(k, 0) + sign * v
        return out
    return None


def _offset(form, var):
    """``form`` (from _linear) as var + offset, the offset an expression of L_t-invariant names;
    None when it is not."""
    if form is None or form.get(("var", var)) != 1:
        return None
    parts = []
    for atom, coeff in form.items():
        if atom == ("var", var) or coeff == 0:
            continue
        if atom is None:
            parts.append(str(coeff))
        elif atom[0] == "inv":
            parts.append(atom[1] if coeff == 1 else f"{coeff} * {atom[1]}")
        else:
            return None
    return ast.parse(" + ".join(parts) if parts else "0", mode="eval").body


def _expr(term):
    """Python expression of a term made of constants, the loop variable and invariant names."""
    kind = term[0]
    if kind == "c":
        return ast.Constant(term[1])
    if kind in ("var", "inv", "lt"):
        return ast.Name(term[1], ast.Load())
    if kind == "neg":
        return ast.UnaryOp(ast.USub(), _expr(term[1]))
    if kind == "bin":
        op = {"Add": ast.Add, "Sub": ast.Sub, "Mult": ast.Mult, "Div": ast.Div}[term[1]]()
        return ast.BinOp(_expr(term[2]), op, _expr(term[3]))
    if kind == "load":
        items = [_expr(i) for i in term[2]]
        index = items[0] if len(items) == 1 else ast.Tuple(items, ast.Load())
        return ast.Subscript(ast.Name(term[1], ast.Load()), index, ast.Load())
    raise ValueError(term)


# -- the rewrite ----------------------------------------------------------------------------------
def _rewrite_time_loop(loop_t, owned, names, ndim):
    """[allocations, comment, rewritten L_t, products] or None when nothing qualifies."""
    t_range = _range(loop_t)
    if t_range is None or _jumps(loop_t.body):
        return None
    in_t = _assigned([loop_t])
    if not all(_simple(e, in_t) for e in t_range[:2]):
        return None
    # adjoint arrays only added into (by `+=` on an element) anywhere in L_t
    seen = {}
    for node in _walk(loop_t.body):
        if isinstance(node, ast.Name) and node.id in owned:
            seen.setdefault(node.id, []).append(node)
    allowed = {}
    for node in _walk(loop_t.body):
        if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add):
            if isinstance(node.target, ast.Subscript) and isinstance(node.target.value, ast.Name):
                allowed.setdefault(node.target.value.id, set()).add(id(node.target.value))
            elif isinstance(node.target, ast.Name) and not any(
                    isinstance(n, ast.Name) and n.id == node.target.id for n in ast.walk(node.value)):
                allowed.setdefault(node.target.id, set()).add(id(node.target))    # (whole array)
    rebound = {n.id for n in _walk(loop_t.body) if isinstance(n, ast.Name) and
               isinstance(n.ctx, (ast.Store, ast.Del)) and id(n) not in allowed.get(n.id, ())}
    only_added = {a for a, uses in seen.items()
                  if all(id(n) in allowed.get(a, ()) for n in uses) and a not in rebound}
    if not only_added:
        return None
    groups = []         # one per L_j (buffers, stores and products), one per vector statement
    for loop_j in loop_t.body:
        group = _rewrite_inner(loop_t, loop_j, only_added, owned, in_t, names)
        if group is not None:
            groups.append(group)
    for stmt in list(loop_t.body):
        group = _vector_outer(loop_t, stmt, only_added, ndim, names)
        if group is not None:
            groups.append(group)
    if not groups:
        return None
    before, buffers, arrays = [], [], set()
    _, t_count = _low_and_count(*t_range)
    rows, filled, left = names.fresh("nt"), names.fresh("r"), names.fresh("left")
    before.append(ast.parse(f"{left} = {ast.unparse(t_count)}").body[0])
    before.append(ast.parse(f"{rows} = min({left}, {ROWS})").body[0])
    for group in groups:
        before += group["alloc"](rows)
        buffers += group["buffers"]
        arrays |= group["arrays"]
    before.append(ast.parse(f"{filled} = 0").body[0])
    note = Comment(NOTE.format(arrays=", ".join(f"`{a}`" for a in sorted(arrays)) +
                               (" is" if len(arrays) == 1 else " are"),
                               buffers=", ".join(buffers), rows=ROWS),
                   getattr(loop_t, "lineno", 0) or 0)
    # each step takes the next row of the buffers; at the end of a step that filled them, or of the
    # last step, their products are added in (one copy of that code: at the end of the body)
    row = names.fresh("t")
    flush = ast.parse(f"if {filled} == {rows} or {left} == 0:\n    {filled} = 0").body[0]
    flush.body[:0] = [stmt for group in groups for stmt in group["product"](filled)]
    loop_t.body[:0] = [ast.parse(f"{row} = {filled}").body[0], ast.parse(f"{filled} += 1").body[0]]
    for group in groups:
        group["place"](row)
    loop_t.body += [ast.parse(f"{left} -= 1").body[0], flush]
    return [note] + before + [loop_t]


def _rewrite_inner(loop_t, loop_j, only_added, owned, in_t, names):
    """The deferred statements of one L_j (a direct child of L_t): a dict of code builders, or None."""
    j_range = _range(loop_j)
    if j_range is None or isinstance(loop_j, Comment) or not all(_simple(e, in_t) for e in j_range[:2]):
        return None
    in_j = _assigned([loop_j])
    written_j = _written_arrays(loop_j.body)
    if written_j is None:
        return None
    # arrays whose elements may be read before L_j: not written in L_j, not rebound there, and no
    # array written there may be the same array (all those are owned adjoints, held by no other name)
    if not written_j <= owned:
        safe = set()
    else:
        safe = {n.id for n in _walk(loop_j.body) if isinstance(n, ast.Name)} - written_j - in_j - owned
    j_var = loop_j.target.id
    outer = _Values(j_var, in_j, safe)      # L_j's body, up to each L_k

    def pre_j(name):                       # ('pre', name) seen from L_j: its term there
        if name in in_t and name not in in_j:
            return ("lt", name)
        if name not in in_t:
            return ("inv", name)
        return outer.name(name) if name in outer.env or name == j_var else ("opaque", next(_fresh))

    s_keys, v_keys, stmts = {}, {}, []     # s: term -> (slot, name, L_k); v: (term, range) -> slot
    s_store_before = {}                    # id(L_k) -> [(slot, name)]
    v_loops = []                           # (slot, L_k range, v term)
    for stmt in loop_j.body:
        if not (isinstance(stmt, ast.For) and _range(stmt) is not None and not isinstance(stmt, Comment)):
            outer.run(stmt)
            continue
        k_range = _range(stmt)
        if not all(_simple(e, in_t) for e in k_range[:2]):
            outer.run(stmt)
            continue
        k_var = stmt.target.id
        in_k = _assigned([stmt])
        inner = _Values(k_var, in_k - {k_var}, safe)
        candidates = []
        for body_stmt in stmt.body:
            if isinstance(body_stmt, ast.AugAssign) and isinstance(body_stmt.op, ast.Add) and \
                    isinstance(body_stmt.target, ast.Subscript) and \
                    isinstance(body_stmt.target.value, ast.Name) and \
                    body_stmt.target.value.id in only_added:
                candidates.append((body_stmt, dict(inner.env)))
                continue
            inner.run(body_stmt)
        steady = {n for n in in_k if inner.env.get(n) == ("start", n)}

        def settle(term, steady=steady):
            """('start', n) of a name L_k gives back its own value: its value on entry, ('pre', n)."""
            if term[0] == "start" and term[1] in steady:
                return ("pre", term[1])
            if term[0] in ("bin",):
                return (term[0], term[1], settle(term[2]), settle(term[3]))
            if term[0] == "neg":
                return ("neg", settle(term[1]))
            if term[0] == "load":
                return ("load", term[1], tuple(settle(i) for i in term[2]))
            return term

        def expand(term):
            """A term of L_k in terms of L_j's: ('pre', n) replaced by n's term before L_k."""
            if term[0] == "pre":
                return pre_j(term[1])
            if term[0] == "bin":
                return ("bin", term[1], expand(term[2]), expand(term[3]))
            if term[0] == "neg":
                return ("neg", expand(term[1]))
            if term[0] == "load":
                return ("load", term[1], tuple(expand(i) for i in term[2]))
            return term

        for body_stmt, env in candidates:
            found = _outer_term(body_stmt, env, inner, settle, expand, j_var, k_var, pre_j)
            if found is None:
                continue
            s_name, v_term, row_off, col_off = found
            s_term = outer.name(s_name) if s_name != j_var else None
            if s_term is None:
                continue
            key = ("s", s_term)
            if key not in s_keys:
                s_keys[key] = (len(s_keys), s_name)
                s_store_before.setdefault(id(stmt), []).append((len(s_keys) - 1, s_name))
            k_low, k_count = _low_and_count(*k_range)
            vkey = (v_term, ast.unparse(k_low), ast.unparse(k_count))
            if vkey not in v_keys:
                v_keys[vkey] = len(v_keys)
                v_loops.append((v_keys[vkey], k_low, k_count, k_var, v_term))
            stmts.append((body_stmt, stmt, s_keys[key][0], v_keys[vkey], row_off, col_off, k_low, k_count))
        # after L_k: names it gives back their own value keep their term; others are unknown
        for name in in_k:
            if name not in steady:
                outer.env[name] = ("opaque", next(_fresh))
    if not stmts:
        return None
    for body_stmt, loop_k, *_ in stmts:
        loop_k.body.remove(body_stmt)
    target_arrays = {s[0].target.value.id for s in stmts}
    j_low, j_count = _low_and_count(*j_range)
    s_buf, v_buf, nj, p_buf = names.fresh("s"), names.fresh("v"), names.fresh("nj"), names.fresh("p")
    v_width = {slot: names.fresh("nk") for slot, _, _, _, _ in v_loops}     # each slot's columns
    v_offset, total = {}, []
    for slot in sorted(v_width):
        v_offset[slot] = " + ".join(total) if total else "0"
        total.append(v_width[slot])
    dtype_of = sorted(target_arrays)[0]
    s_cols = nj if len(s_keys) == 1 else f"{len(s_keys)} * {nj}"

    def alloc(nt):
        return ([ast.parse(f"{nj} = {ast.unparse(j_count)}").body[0]] +
                [ast.parse(f"{v_width[slot]} = {ast.unparse(count)}").body[0]
                 for slot, _, count, _, _ in v_loops] +
                [ast.parse(f"{s_buf} = np.empty(({nt}, {s_cols}), {dtype_of}.dtype.type)").body[0],
                 ast.parse(f"{v_buf} = np.empty(({nt}, {' + '.join(total)}), "
                           f"{dtype_of}.dtype.type)").body[0]])

    def place(row):
        j_col = _paren(_fold(ast.BinOp(ast.Name(j_var, ast.Load()), ast.Sub(), j_low)))
        for loop_k in [s for s in loop_j.body if id(s) in s_store_before]:
            at = loop_j.body.index(loop_k)
            for slot, name in reversed(s_store_before[id(loop_k)]):
                col = j_col if slot == 0 else f"{_times(slot, nj)} + {j_col}"
                loop_j.body.insert(at, ast.parse(f"{s_buf}[{row}, {col}] = {name}").body[0])
        fills = []
        for slot, k_low, k_count, k_var, v_term in v_loops:
            k_name = names.fresh("k")
            value = _expr(_rename(v_term, k_var, k_name))
            low = ast.unparse(k_low)
            col = f"{k_name} - {_paren(k_low)}" if _const(k_low) != 0 else k_name
            if v_offset[slot] != "0":
                col = f"{v_offset[slot]} + {col}"
            bounds = v_width[slot] if _const(k_low) == 0 else f"{low}, {_paren(k_low)} + {v_width[slot]}"
            fills.append(ast.parse(
                f"for {k_name} in range({bounds}):\n"
                f"    {v_buf}[{row}, {col}] = {ast.unparse(value)}").body[0])
        guard = ast.parse(f"if {nj} > 0:\n    pass").body[0]      # (L_j reads them only if it runs)
        guard.body = fills
        loop_t.body.insert(loop_t.body.index(loop_j), guard)

    def product(nt):
        code = [ast.parse(f"{p_buf} = matmul({s_buf}[:{nt}].T, {v_buf}[:{nt}])").body[0]]
        for v_slot in sorted(v_width):      # one loop nest per column block: its statements' rows
            jj, kk = names.fresh("j"), names.fresh("k")
            nest = ast.parse(f"for {jj} in range({nj}):\n    for {kk} in range({v_width[v_slot]}):\n"
                             f"        pass").body[0]
            nest.body[0].body = []
            for body_stmt, _, s_slot, slot, row_off, col_off, k_low, k_count in stmts:
                if slot != v_slot:
                    continue
                rows = _fold(ast.parse(f"{_paren(row_off)} + {_paren(j_low)} + {jj}", mode="eval").body)
                cols = _fold(ast.parse(f"{_paren(col_off)} + {_paren(k_low)} + {kk}", mode="eval").body)
                p_row = jj if s_slot == 0 else f"{_times(s_slot, nj)} + {jj}"
                p_col = kk if v_offset[v_slot] == "0" else f"{v_offset[v_slot]} + {kk}"
                target = body_stmt.target.value.id
                nest.body[0].body.append(ast.parse(
                    f"{target}[{ast.unparse(rows)}, {ast.unparse(cols)}] += {p_buf}[{p_row}, {p_col}]"
                ).body[0])
            code.append(nest)
        return code

    return {"alloc": alloc, "place": place, "product": product, "buffers": [s_buf, v_buf],
            "arrays": target_arrays}


def _times(k, name):
    return name if k == 1 else f"{k} * {name}"


def _vector_outer(loop_t, stmt, only_added, ndim, names):
    """The buffers of ``A += matmul_grad_left(g, a, b)`` (``a`` a matrix, ``b`` a vector: the
    outer product of ``g`` and ``b``) or ``A += matmul_grad_right(g, a, b)`` (``a`` a vector,
    ``b`` a matrix: the outer product of ``a`` and ``g``), a statement of L_t's own body (run once
    per step): each step's two vectors are copied where the statement was, their products added
    after the loop. None when ``stmt`` is not such a statement."""
    if not (isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, ast.Add) and
            isinstance(stmt.target, ast.Name) and stmt.target.id in only_added and
            ndim(stmt.target.id) == 2 and isinstance(stmt.value, ast.Call) and
            isinstance(stmt.value.func, ast.Name) and not stmt.value.keywords and
            len(stmt.value.args) == 3 and all(isinstance(a, ast.Name) for a in stmt.value.args)):
        return None
    g, a, b = (arg.id for arg in stmt.value.args)
    if stmt.value.func.id == "matmul_grad_left" and ndim(a) == 2 and ndim(b) == 1:
        left, right = g, b
    elif stmt.value.func.id == "matmul_grad_right" and ndim(a) == 1 and ndim(b) == 2:
        left, right = a, g
    else:
        return None
    target = stmt.target.id
    s_buf, v_buf = names.fresh("s"), names.fresh("v")

    def alloc(nt):
        return [ast.parse(f"{s_buf} = np.empty(({nt}, {target}.shape[0]), {target}.dtype.type)").body[0],
                ast.parse(f"{v_buf} = np.empty(({nt}, {target}.shape[1]), {target}.dtype.type)").body[0]]

    def place(row):
        at = loop_t.body.index(stmt)
        loop_t.body[at:at + 1] = [ast.parse(f"{s_buf}[{row}, :] = {left}").body[0],
                                  ast.parse(f"{v_buf}[{row}, :] = {right}").body[0]]

    def product(nt):
        return [ast.parse(f"{target} += matmul({s_buf}[:{nt}].T, {v_buf}[:{nt}])").body[0]]

    return {"alloc": alloc, "place": place, "product": product, "buffers": [s_buf, v_buf],
            "arrays": {target}}


def _rename(term, old, new):
    if term[0] == "var" and term[1] == old:
        return ("var", new)
    if term[0] in ("bin",):
        return (term[0], term[1], _rename(term[2], old, new), _rename(term[3], old, new))
    if term[0] == "neg":
        return ("neg", _rename(term[1], old, new))
    if term[0] == "load":
        return ("load", term[1], tuple(_rename(i, old, new) for i in term[2]))
    return term


def _outer_term(stmt, env, inner, settle, expand, j_var, k_var, pre_j):
    """(s name, v term, row offset, column offset) of ``A[R, C] += s * v``, or None."""
    target = stmt.target
    items = target.slice.elts if isinstance(target.slice, ast.Tuple) else [target.slice]
    if len(items) != 2:
        return None
    saved, inner.env = inner.env, env
    try:
        row, col, value = (inner.of(items[0]), inner.of(items[1]), inner.of(stmt.value))
    finally:
        inner.env = saved
    row, col, value = (expand(settle(row)), expand(settle(col)), settle(value))
    row_off = _offset(_linear(row, pre_j), j_var)
    col_off = _offset(_linear(col, pre_j), k_var)
    if row_off is None or col_off is None:
        return None
    if value[0] != "bin" or value[1] != "Mult":
        return None
    for s, v in ((value[2], value[3]), (value[3], value[2])):
        if s[0] != "pre":
            continue
        v = expand(v)
        if v[0] != "load" or not _only(v, {("var", k_var)}):
            continue
        return s[1], v, row_off, col_off
    return None


def _only(term, allowed_vars):
    """Whether ``term`` is built of constants, the given loop variables, and names L_j does not
    assign (('lt', n): assigned in L_t before L_j; ('inv', n): not assigned in L_t)."""
    kind = term[0]
    if kind == "c":
        return True
    if kind == "var":
        return term in allowed_vars
    if kind in ("lt", "inv"):
        return True
    if kind == "neg":
        return _only(term[1], allowed_vars)
    if kind == "bin":
        return _only(term[2], allowed_vars) and _only(term[3], allowed_vars)
    if kind == "load":
        return all(_only(i, allowed_vars) for i in term[2])
    return False
