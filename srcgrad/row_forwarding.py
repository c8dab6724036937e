"""Row forwarding: the loop that computes a time step writes the next snapshot row itself.

A stencil steps in two loops: ``for i: un[i] = f(u)`` computes the new values into a second
array, ``for i: u[i] = un[i]`` copies them back. Where the stepped array lives in its snapshot
buffer (step_snapshots.py, written in place: each step binds ``u`` to the next row and carries the
slots the copy does not write), the forward sweep still runs that copy: a pass over both arrays per
step, about half the primal's time. This pass (run by ``program.py`` on the finished forward sweep,
cpu and python) lets the first loop store each value into the next row as well, beside its store
into ``un``, and drops the copy loop, as a hand-written adjoint steps ``U[t + 1, i] = f(U[t])``:

    if lo == lo2 and hi == hi2 and 0 <= lo and lo <= hi and hi <= u.shape[0]:
        _u_next = buffer[top - 1]                 # the row the step binds `u` to
        for i in range(lo, hi, 1):
            ...                                   # reads `u`: still the row before
            un[i] = value
            _u_next[i] = value
        top -= 1
        u = buffer[top]
        <the carry of the slots outside lo..hi - 1>
    else:
        <the code as it was>

When that is exact: the first loop ``for v in range(lo, hi, 1)`` writes ``un`` only as ``un[v] =
value`` (one top-level statement of its body, ``value`` a name or a constant: storing it twice
stores the same number), does not rebind ``v`` and has no jumps; it does not write ``u`` (its reads
of ``u`` see the row before, as before: the new row is another row of the buffer); between it and
the snapshot step only names are bound, from values the loop does not change, and the loop does
not use those names (they move above it); the copy loop is ``for v in range(lo2, hi2, 1): tmp =
un[v]; u[v] = tmp`` (the same loop variable; ``tmp`` used nowhere else) and ``u`` and ``un`` have
the same kind (the store casts alike). The run-time guard checks that both loops run over the same
slots, inside the array; otherwise the code runs as it was. ``un`` keeps every value it had.
"""
import ast
import copy

from .placeholders import Comment

# False: the copy loop stays (tests compare both; not in the cache key).
ROW_FORWARDING = True


def forward_rows(stmts, everything, kinds, names, params):
    """``stmts`` (the forward sweep) with each qualifying step rewritten (module doc).
    ``everything``: all statements of the function (a temporary must be used nowhere else);
    ``kinds``: the analysis kinds; ``names``: the fresh-name source; ``params``: the parameters."""
    uses = {}
    for stmt in everything:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name):
                uses[node.id] = uses.get(node.id, 0) + 1
    context = dict(uses=uses, kinds=kinds, names=names, params=set(params),
                   reads=_value_reads(everything))
    return _rewrite(stmts, context, None, top=True)


def _rewrite(body, context, loop, top=False):
    """``loop``: the top-level For whose body ``body`` is (None elsewhere); ``top``: ``body`` is
    the function's."""
    out = []
    k = 0
    while k < len(body):
        stmt = body[k]
        if isinstance(stmt, (ast.For, ast.While, ast.If)):
            inner = stmt if top and isinstance(stmt, ast.For) else None
            stmt.body = _rewrite(stmt.body, context, inner)
            stmt.orelse = _rewrite(stmt.orelse, context, None)
        found = _match(body, k, context["uses"], context["kinds"])
        if found is None:
            out.append(stmt)
            k += 1
            continue
        end, between, version = found
        version["dead"] = loop is not None and _dead_source(version, loop, context)
        out += between + [_versioned(version, context["names"])]
        k = end
    return out


def _value_reads(stmts):
    """Array name -> how many times its values are read (subscript loads and whole uses; not
    ``.shape``, ``.dtype``, ``.size``, ``.ndim`` or ``np.zeros_like``, which do not depend on the
    values)."""
    meta = set()
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Attribute) and node.attr in ("shape", "dtype", "size", "ndim"):
                meta.add(id(node.value))
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
                meta.add(id(node.value))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("zeros_like", "empty_like") and node.args:
                meta.add(id(node.args[0]))      # (an adjoint's zeros: the shape and dtype only)
            elif isinstance(node, (ast.Assign, ast.For)):
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    if isinstance(target, ast.Name):
                        meta.add(id(target))
    reads = {}
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and id(node) not in meta:
                reads[node.id] = reads.get(node.id, 0) + 1
    return reads


def _dead_source(facts, loop, context):
    """Whether the first loop need not store into ``un`` at all: its values are read only by the
    copy loop (nowhere else in the function, not a parameter: the caller would see it), and the
    guard takes the same branch in every step (its bounds are constants or names the top-level
    loop does not change, or binds once from such values; the row length is the buffer's), so
    the else branch, which reads ``un``, never follows a step that did not write it."""
    source = facts["source"]
    if source in context["params"] or context["reads"].get(source, 0) != 1:
        return False
    bound = {}
    for node in ast.walk(loop):
        if node is loop:
            continue
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        bound.setdefault(sub.id, []).append(node if target is node.targets[0]
                                                            and node in loop.body else None)
        elif isinstance(node, (ast.AugAssign, ast.For)):
            for sub in ast.walk(node.target):
                if isinstance(sub, ast.Name):
                    bound.setdefault(sub.id, []).append(None)

    def steady(expr, depth=0):
        if depth > 8:
            return False
        for node in ast.walk(expr):
            if isinstance(node, ast.Name):
                if node.id == loop.target.id:
                    return False
                binds = bound.get(node.id)
                if binds is None:
                    continue
                if len(binds) != 1 or binds[0] is None or \
                        not isinstance(binds[0].value, (ast.BinOp, ast.Name, ast.Constant, ast.UnaryOp)) \
                        or not steady(binds[0].value, depth + 1):
                    return False
        return True

    return all(steady(b) for b in facts["bounds"] + facts["copy_bounds"])


def _range(loop):
    """(lo, hi) of ``for v in range(lo, hi, 1)`` with name or constant bounds, else None."""
    it = loop.iter
    if not (isinstance(loop, ast.For) and isinstance(loop.target, ast.Name) and not loop.orelse
            and isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"
            and len(it.args) == 3 and not it.keywords):
        return None
    lo, hi, step = it.args
    if not (isinstance(step, ast.Constant) and step.value == 1 and not isinstance(step.value, bool)):
        return None
    if not all(isinstance(b, ast.Name) or (isinstance(b, ast.Constant) and type(b.value) is int)
               for b in (lo, hi)):
        return None
    return lo, hi


def _element(target, var):
    """The array name of ``name[var]``, else None."""
    if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and \
            isinstance(target.slice, ast.Name) and target.slice.id == var:
        return target.value.id
    return None


def _stores(stmts):
    """Names bound and arrays written (by subscript) anywhere in ``stmts``."""
    bound, written = set(), set()
    for stmt in stmts:
        for node in ast.walk(stmt):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.For)) else []
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                        bound.add(sub.id)
                    elif isinstance(sub, ast.Subscript) and isinstance(sub.ctx, ast.Store):
                        base = sub.value
                        while isinstance(base, ast.Subscript):
                            base = base.value
                        if isinstance(base, ast.Name):
                            written.add(base.id)
    return bound, written


def _names(stmts):
    return {node.id for stmt in stmts for node in ast.walk(stmt) if isinstance(node, ast.Name)}


def _match(body, k, uses, kinds):
    """(end, between statements, version facts) when ``body[k:end]`` is a step to rewrite."""
    first = body[k]
    bounds = _range(first) if isinstance(first, ast.For) else None
    if bounds is None:
        return None
    var = first.target.id
    writes = [s for s in first.body if isinstance(s, ast.Assign) and len(s.targets) == 1
              and _element(s.targets[0], var) is not None
              and isinstance(s.value, (ast.Name, ast.Constant))]
    if any(isinstance(node, (ast.Break, ast.Continue, ast.Return, ast.Yield))
           for s in first.body for node in ast.walk(s)):
        return None
    bound, written = _stores(first.body)
    if var in bound:
        return None
    # between: only names bound from values the first loop does not change; then the step
    j = k + 1
    between = []
    while j < len(body) and (isinstance(body[j], Comment) or (
            isinstance(body[j], ast.Assign) and len(body[j].targets) == 1
            and isinstance(body[j].targets[0], ast.Name)
            and isinstance(body[j].value, (ast.BinOp, ast.Name, ast.Constant, ast.UnaryOp)))):
        if not isinstance(body[j], Comment):
            between.append(body[j])
        j += 1
    if j + 3 >= len(body):
        return None
    step, bind, carry, copy_loop = body[j:j + 4]
    if not (isinstance(step, ast.AugAssign) and isinstance(step.target, ast.Name)
            and isinstance(step.op, (ast.Add, ast.Sub)) and isinstance(step.value, ast.Constant)
            and step.value.value == 1 and getattr(bind, "snapshot_row", False)
            and isinstance(bind, ast.Assign) and isinstance(bind.value, ast.Subscript)
            and isinstance(bind.value.value, ast.Name) and isinstance(bind.value.slice, ast.Name)
            and bind.value.slice.id == step.target.id and getattr(carry, "carry_run", False)):
        return None
    array, buffer, top = bind.targets[0].id, bind.value.value.id, step.target.id
    copy_bounds = _range(copy_loop)
    if copy_bounds is None or copy_loop.target.id != var:
        return None
    source = _copy_source(copy_loop, var, array, uses)
    if source is None or source == array or kinds.get(source) is None or \
            kinds.get(source) != kinds.get(array):
        return None
    mine = [s for s in writes if _element(s.targets[0], var) == source]
    if len(mine) != 1 or sum(1 for s in first.body for node in ast.walk(s)
                             if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store)
                             and isinstance(node.value, ast.Name) and node.value.id == source) != 1:
        return None
    if array in written or array in bound or {buffer, top} & _names([first]):
        return None
    between_names = {s.targets[0].id for s in between}
    if between_names & (_names([first]) | {var}) or _names(between) & (bound | written):
        return None
    rest = [first] + [s for s in body[k + 1:j] if isinstance(s, Comment)] + body[j:j + 4]
    return j + 4, between, dict(rest=rest, source=source, bounds=bounds, copy_bounds=copy_bounds, array=array, buffer=buffer,
                                top=top, down=isinstance(step.op, ast.Sub), write=mine[0],
                                carry=carry, var=var)


def _copy_source(loop, var, array, uses):
    """``un`` when ``loop``'s body is ``tmp = un[var]; array[var] = tmp`` (``tmp`` used nowhere
    else) or ``array[var] = un[var]``, else None."""
    body = [s for s in loop.body if not isinstance(s, Comment)]
    if len(body) == 1:
        (store,) = body
        value = store.value if isinstance(store, ast.Assign) else None
    elif len(body) == 2:
        load, store = body
        if not (isinstance(load, ast.Assign) and len(load.targets) == 1
                and isinstance(load.targets[0], ast.Name)
                and isinstance(store, ast.Assign) and isinstance(store.value, ast.Name)
                and store.value.id == load.targets[0].id and uses.get(load.targets[0].id) == 2):
            return None
        value = load.value
    else:
        return None
    if not (isinstance(store, ast.Assign) and len(store.targets) == 1
            and _element(store.targets[0], var) == array and value is not None):
        return None
    return _element(value, var)


def _versioned(facts, names):
    """The run-time versioned step (module doc): ``facts["rest"]`` (the first loop, the snapshot
    step, the copy loop; the bound names moved above) stay as the else branch."""
    first = facts["rest"][0]
    array, buffer, top, var = facts["array"], facts["buffer"], facts["top"], facts["var"]
    lo, hi = (ast.unparse(b) for b in facts["bounds"])
    lo2, hi2 = (ast.unparse(b) for b in facts["copy_bounds"])
    sign = "-" if facts["down"] else "+"
    nxt = names.fresh(array.lstrip("_") + "_next")
    tests = [f"{lo} == {lo2}", f"{hi} == {hi2}", f"0 <= {lo}", f"{lo} <= {hi}",
             f"{hi} <= {array}.shape[0]"]
    tests = [t for t in tests if not _true(t)] or ["True"]
    head = ast.parse(
        f"if {' and '.join(tests)}:\n"
        f"    {nxt} = {buffer}[{top} {sign} 1]\n"
        f"    {top} {sign}= 1\n"
        f"    {array} = {buffer}[{top}]\n").body[0]
    extra = ast.parse(f"{nxt}[{var}] = 0").body[0]
    for node in ast.walk(head):
        ast.copy_location(node, first)
    for node in ast.walk(extra):
        ast.copy_location(node, facts["write"])
    extra.value = copy.deepcopy(facts["write"].value)
    loop = copy.deepcopy(first)
    at = next(n for n, s in enumerate(first.body) if s is facts["write"])
    if facts["dead"]:      # `un` is read by the copy loop only: the row takes the value instead
        loop.body[at] = extra
    else:
        loop.body.insert(at + 1, extra)
    head.body[2].snapshot_row = True
    carry = copy.deepcopy(facts["carry"].body)     # the slots outside lo2..hi2 - 1, from the row before
    note = Comment(f"row forwarding: the loop computing `{ast.unparse(facts['write'].targets[0].value)}` "
                   f"also stores each value into the next snapshot row of `{array}` ({nxt}), and the "
                   "loop copying them into it is dropped (one pass per step instead of two"
                   + (f"; `{facts['source']}` is read by that copy only, so the loop stores into the "
                      "row instead" if facts["dead"] else "") + "); the "
                   "else branch, as written, runs when the two loops do not cover the same slots",
                   first.lineno)
    head.body = [note, head.body[0], loop, head.body[1], head.body[2]] + carry
    head.orelse = list(facts["rest"])
    return head


def _true(test):
    """Whether a guard term is true whatever the names hold (equal sides, constants)."""
    left, op, right = test.split(" ", 2)
    if left == right and op in ("==", "<="):
        return True
    return left.isdigit() and right.isdigit() and op == "<=" and int(left) <= int(right)
