"""Dropped zeroes: a swapped adjoint array is not reset on the slots the next step assigns first.

In the heat stencil's reverse time loop (after adjoint_swaps.py, first_contributions.py and
loop_splits.py) each step swaps ``_adj_u`` and ``_adj_un``, then runs passes over ``i``; the last
pass reads ``_adj_un[i]`` and resets it, ``_adj_un[i] = 0.0``, because the next step's swap hands
that array to ``_adj_u``, which must start the step at zero. But the next step's first access of
``_adj_u[i - 1]`` for ``i >= 2`` is an assignment (its first contribution): those slots' zeros are
never read. Only the slots whose first access there is an accumulation (heat: slot ``n - 2``, which
the ``_adj_u[i] += ...`` pass reaches first) need them, and the zeros the loop leaves when it ends.

The reset is dropped and its slots become a "debt", ``lo..hi - 1`` in two integers set after the
pass (``_zlo``, ``_zhi``, 0 and 0 before the loop); the debt is paid (the slots zeroed) wherever
the array's value could be read:
* in the swap branch of the next step, before the swap, every debt slot outside the slots the first
  statement touching the swapped-in array assigns (the "cover", computed at run time from that
  statement's range and guard, clipped to the swapped slots);
* in the branch that keeps the copy loop (the swap's run-time guard failed): all of it;
* after the loop: all of it (the array's value is read after the loop).

Legality (anything else keeps the reset), for a loop ``L`` whose body holds at top level:
* the swap guard ``S`` of adjoint_swaps.py (``A, B = B, A`` when it holds, the copy loop else);
  the statements before ``S`` do not mention ``A`` or ``B``; ``L``'s body has no jumps;
* after ``S``, a pass ``for i in range(lo, hi)`` (step 1) whose body resets ``B[i] = 0.0`` once,
  at top level, after every other access of ``B`` in the body, each an element ``B[i]`` (so each
  iteration touches only its own slot, ``i`` not rebound): dropping the store changes no read
  inside the pass; no statement after that pass mentions ``B``;
* the first statement after ``S`` that mentions ``A`` (the cover ``C``) is a loop ``for i in
  range(...)`` (step 1 or -1) whose one statement touching ``A`` is ``A[i + k] = v`` (``v`` without
  ``A``), or ``if i >= c: A[i + k] = v`` ``else: A[i + k] += v`` (so ``if i <= c``), the index
  ``i`` or a name bound once at the top of the body to ``i + k`` / ``i - k``; or an ``if`` (its
  test without ``A``) whose two branches are each such a loop (the cover is the intersection);
  each iteration touches one slot of ``A``, so a covered slot's first access is the assignment;
* the names in the cover's bounds are bound before ``S`` (in the body or outside ``L``) and not
  rebound between ``S`` and ``C``: the cover evaluated before the swap is the cover ``C`` runs.
A slot read before it is assigned in the next step, an assignment under another condition, or a
step whose ranges differ from the last step's: the debt not covered is paid (zeroed) at run time,
so the values are those of the loop with the reset, bit for bit.

Switch: ``DROP_ZEROES`` (off: the reset stays, as before).
"""
import ast
import copy

from .placeholders import Comment

DROP_ZEROES = True


def drop_zeroes(reverse_body, fresh):
    """``reverse_body`` with the resets described above dropped (``fresh(stem)`` gives new names)."""
    if not DROP_ZEROES:
        return reverse_body
    return _block(reverse_body, fresh)


def _block(stmts, fresh):
    out = []
    for stmt in stmts:
        for field in ("body", "orelse"):
            inner = getattr(stmt, field, None)
            if isinstance(inner, list) and inner and isinstance(stmt, (ast.For, ast.While, ast.If)):
                setattr(stmt, field, _block(inner, fresh))
        if isinstance(stmt, ast.For):
            done = _rewrite(stmt, fresh)
            if done is not None:
                out.extend(done)
                continue
        out.append(stmt)
    return out


def _rewrite(loop, fresh):
    body = loop.body
    if loop.orelse or any(isinstance(n, (ast.Break, ast.Continue, ast.Return))
                          for s in body for n in ast.walk(s)):
        return None
    s = next((k for k, st in enumerate(body) if getattr(st, "swap_slots", None)), None)
    if s is None:
        return None
    guard = body[s]
    a, b, slo, send = guard.swap_slots
    if any(_mentions(st, a) or _mentions(st, b) for st in body[:s]):
        return None
    z = _reset_pass(body, s, b)
    if z is None:
        return None
    z_index, reset = z
    if any(_mentions(st, b) for st in body[z_index + 1:]):
        return None
    c = next((k for k in range(s + 1, len(body)) if _mentions(body[k], a)), None)
    if c is None or c > z_index:
        return None
    cover = _cover(body[c], a)
    if cover is None:
        return None
    rebound = set()
    for st in body[s:c]:
        rebound |= _bound(st)
    if any(n in rebound or n in (a, b) for e in cover for n in _names(e)):
        return None         # (the names trade arrays at the swap: the cover must not read them)
    zlo, zhi, k = fresh("zlo"), fresh("zhi"), fresh("kzero")
    c_lo = ast.unparse(_fold(ast.parse(f"max({slo}, {ast.unparse(cover[0])})", mode="eval").body))
    c_hi = ast.unparse(_fold(ast.parse(f"min({send}, {ast.unparse(cover[1])})", mode="eval").body))
    line = getattr(loop, "lineno", 1)
    pay_part = ast.parse(f"for {k} in range({zlo}, min({zhi}, {c_lo})):\n    {b}[{k}] = 0.0\n"
                         f"for {k} in range(max({zlo}, {c_hi}), {zhi}):\n    {b}[{k}] = 0.0\n").body
    pay_all = f"for {k} in range({zlo}, {zhi}):\n    {b}[{k}] = 0.0\n"
    at = next((i for i, st in enumerate(guard.body) if not isinstance(st, Comment)), 0)
    guard.body[at:at] = [Comment(f"dropped zeroes: zero the slots of `{b}` the last step left "
                                 f"unreset ({zlo}..{zhi} - 1) except those the first pass over "
                                 f"`{a}` below assigns before reading", line)] + pay_part
    guard.orelse[0:0] = [Comment(f"dropped zeroes: the copy loop below reads `{b}`: the slots the "
                                 f"last step left unreset ({zlo}..{zhi} - 1) zeroed first", line)] + \
        ast.parse(pay_all).body
    zpass = body[z_index]
    zpass.body = [st for st in zpass.body if st is not reset]
    lo, hi = _forward_bounds(zpass.iter)
    body[z_index + 1:z_index + 1] = ast.parse(f"{zlo} = {ast.unparse(lo)}\n"
                                              f"{zhi} = {ast.unparse(hi)}\n").body
    body.insert(z_index, Comment(
        f"dropped zeroes: this pass leaves `{b}[i]` unreset (the slots {zlo}..{zhi} - 1): after "
        f"the next swap, the first pass over `{a}` assigns them before any read (the rest are "
        "zeroed there, and after the loop)", line))
    for node in ast.walk(loop):
        if not hasattr(node, "lineno") and isinstance(node, (ast.stmt, ast.expr)) and \
                not isinstance(node, Comment):
            node.lineno = node.end_lineno = line
            node.col_offset = node.end_col_offset = 0
    before = [Comment(f"dropped zeroes: {zlo}..{zhi} - 1 are the slots of `{b}` a step of the loop "
                      "below leaves unreset (none yet)", line)] + \
        ast.parse(f"{zlo} = 0\n{zhi} = 0\n").body
    after = ast.parse(pay_all).body
    for node in [n for st in before + after for n in ast.walk(st)]:
        if isinstance(node, (ast.stmt, ast.expr)):
            node.lineno = node.end_lineno = line
            node.col_offset = node.end_col_offset = 0
    return before + [loop, Comment(f"dropped zeroes: the slots of `{b}` the last step left unreset "
                                   f"({zlo}..{zhi} - 1), zeroed (its value is read after the loop)",
                                   line)] + after


def _reset_pass(body, s, b):
    """(index, reset statement) of the pass after ``body[s]`` that resets ``b[i]`` as required."""
    # the last statement mentioning b (none after it may read the slots left unreset)
    for z in range(len(body) - 1, s, -1):
        loop = body[z]
        if not _mentions(loop, b):
            continue
        if not isinstance(loop, ast.For) or loop.orelse or not isinstance(loop.target, ast.Name) or \
                _forward_bounds(loop.iter, step_one=True) is None:
            return None
        i = loop.target.id
        if any(i in _bound(st) for st in loop.body) or any(_mentions(e, b) for e in loop.iter.args):
            return None
        resets = [st for st in loop.body if isinstance(st, ast.Assign) and len(st.targets) == 1
                  and _element(st.targets[0], b, i) and isinstance(st.value, ast.Constant)
                  and st.value.value == 0.0 and type(st.value.value) is float]
        if len(resets) != 1:
            return None
        reset = resets[0]
        where = loop.body.index(reset)
        for k, st in enumerate(loop.body):
            if st is reset:
                continue
            uses = sum(_is_name(n, b) for n in ast.walk(st))
            elements = [n for n in ast.walk(st) if isinstance(n, ast.Subscript) and _is_name(n.value, b)]
            if uses != len(elements) or (uses and k > where) or \
                    not all(_element(n, b, i) and isinstance(n.ctx, ast.Load) for n in elements):
                return None        # (b only as loads b[i], all before the reset)
        return z, reset
    return None


def _mentions(node, name):
    # (an element b[i] holds the Name b inside a Subscript: counted)
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node))


def _is_name(node, name):
    return isinstance(node, ast.Name) and node.id == name


def _element(node, array, i):
    return isinstance(node, ast.Subscript) and _is_name(node.value, array) and _is_name(node.slice, i)


def _names(expr):
    return {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}


def _bound(stmt):
    return {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}


def _int(node):
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = _int(node.operand)
        return None if v is None else -v
    return None


def _forward_bounds(it, step_one=False):
    """(lo, hi) with ``it`` running over lo..hi - 1 (as expressions), for ``range`` with step 1
    (or -1 unless ``step_one``); None otherwise."""
    if not (isinstance(it, ast.Call) and _is_name(it.func, "range") and not it.keywords
            and 1 <= len(it.args) <= 3 and not any(isinstance(a, ast.Starred) for a in it.args)):
        return None
    args = it.args
    step = 1 if len(args) < 3 else _int(args[2])
    if step == 1:
        return (ast.Constant(0), args[0]) if len(args) == 1 else (args[0], args[1])
    if step == -1 and not step_one:
        return (_plus(args[1], 1), _plus(args[0], 1))
    return None


def _plus(expr, k):
    if k == 0:
        return expr
    v = _int(expr)
    if v is not None:
        return ast.Constant(v + k)
    return ast.BinOp(left=copy.deepcopy(expr), op=ast.Add() if k > 0 else ast.Sub(),
                     right=ast.Constant(abs(k)))


def _cover(stmt, a):
    """(lo, hi): the slots of ``a`` that ``stmt`` (the first touching ``a``) assigns before any
    read, as expressions; None when it is not of the forms in the module docstring."""
    if isinstance(stmt, ast.For):
        return _loop_cover(stmt, a)
    if isinstance(stmt, ast.If) and not _mentions(stmt.test, a):
        branches = []
        for block in (stmt.body, stmt.orelse):
            real = [st for st in block if not isinstance(st, Comment)]
            if len(real) != 1 or not isinstance(real[0], ast.For):
                return None
            cov = _loop_cover(real[0], a)
            if cov is None:
                return None
            branches.append(cov)
        (l1, h1), (l2, h2) = branches
        return (ast.parse(f"max({ast.unparse(l1)}, {ast.unparse(l2)})", mode="eval").body,
                ast.parse(f"min({ast.unparse(h1)}, {ast.unparse(h2)})", mode="eval").body)
    return None


def _loop_cover(loop, a):
    if loop.orelse or not isinstance(loop.target, ast.Name):
        return None
    bounds = _forward_bounds(loop.iter)
    if bounds is None or any(_mentions(e, a) for e in loop.iter.args):
        return None
    i = loop.target.id
    offsets = {i: 0}            # names bound once at the top of the body to i + k
    touching = []
    for st in loop.body:
        if isinstance(st, Comment):
            continue
        if i in _bound(st):
            return None
        if _mentions(st, a):
            touching.append(st)
            continue
        if isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name):
            name = st.targets[0].id
            v = st.value
            if not touching and isinstance(v, ast.BinOp) and _is_name(v.left, i) and \
                    isinstance(v.op, (ast.Add, ast.Sub)) and _int(v.right) is not None and \
                    name not in offsets and sum(name in _bound(x) for x in loop.body) == 1:
                offsets[name] = _int(v.right) * (1 if isinstance(v.op, ast.Add) else -1)
                continue
        if any(n in offsets for n in _bound(st)):
            return None
    if len(touching) != 1:
        return None
    st = touching[0]
    lo, hi = bounds

    def assign(node, aug):
        """offset k of ``a[i + k] = v`` (``+=`` when aug) with v free of ``a``; else None."""
        if aug:
            ok = isinstance(node, ast.AugAssign) and isinstance(node.op, (ast.Add, ast.Sub))
            target = getattr(node, "target", None)
        else:
            ok = isinstance(node, ast.Assign) and len(node.targets) == 1
            target = node.targets[0] if ok else None
        if not ok or not (isinstance(target, ast.Subscript) and _is_name(target.value, a)
                          and isinstance(target.slice, ast.Name) and target.slice.id in offsets):
            return None
        if _mentions(node.value, a):
            return None
        return offsets[target.slice.id]

    k = assign(st, False)
    if k is not None:
        return _plus(lo, k), _plus(hi, k)
    if isinstance(st, ast.If) and len(st.body) == 1 and len(st.orelse) == 1:
        test = st.test
        k1, k2 = assign(st.body[0], False), assign(st.orelse[0], True)
        if k1 is None or k1 != k2 or not (isinstance(test, ast.Compare) and _is_name(test.left, i)
                                          and len(test.ops) == 1 and _int(test.comparators[0]) is not None):
            return None
        c = _int(test.comparators[0])
        if isinstance(test.ops[0], ast.GtE):
            return _plus(ast.parse(f"max({ast.unparse(lo)}, {c})", mode="eval").body, k1), _plus(hi, k1)
        if isinstance(test.ops[0], ast.LtE):
            return _plus(lo, k1), _plus(ast.parse(f"min({ast.unparse(hi)}, {c + 1})", mode="eval").body, k1)
    return None


def _fold(expr):
    """``expr`` with the constants folded, for a readable adjoint: ``max(1, 2) - 1`` is ``1``,
    ``max(a, a)`` is ``a``, ``x - 1 + 1`` is ``x``."""
    if isinstance(expr, ast.Call) and _is_name(expr.func, "max") or \
            isinstance(expr, ast.Call) and _is_name(expr.func, "min"):
        args = [_fold(a) for a in expr.args]
        pick = max if expr.func.id == "max" else min
        ints = [_int(a) for a in args]
        if all(v is not None for v in ints):
            return ast.Constant(pick(ints))
        unique = []
        for a in args:
            if ast.dump(a) not in [ast.dump(u) for u in unique]:
                unique.append(a)
        return unique[0] if len(unique) == 1 else ast.Call(func=expr.func, args=unique, keywords=[])
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Sub)):
        left, right = _fold(expr.left), _fold(expr.right)
        sign = 1 if isinstance(expr.op, ast.Add) else -1
        r = _int(right)
        if r is not None:
            if _int(left) is not None:
                return ast.Constant(_int(left) + sign * r)
            if isinstance(left, ast.BinOp) and isinstance(left.op, (ast.Add, ast.Sub)) and \
                    _int(left.right) is not None:       # (x +- a) +- b
                total = _int(left.right) * (1 if isinstance(left.op, ast.Add) else -1) + sign * r
                return _plus(left.left, total)
            return _plus(left, sign * r)
        return ast.BinOp(left=left, op=expr.op, right=right)
    return expr
