"""Checkpointing long loops: bounded tape memory at the price of one extra forward run of the loop.

``srcgrad.grad(f, checkpoint=K)`` (or ``checkpoint="auto"``: ``K = ceil(sqrt(n))`` for a loop of
``n`` iterations whose state it rebinds, computed when the loop starts; see :func:`_auto_interval`)
changes how a top-level ``for i in range(...)``
loop of the differentiated function is reversed. The schedule is *periodic* (one level of
checkpoints, not a binomial/revolve schedule):

* Forward sweep: the loop runs as written (nothing taped) in segments of ``K`` iterations; at the
  start of each segment its *state* is stored: the loop-carried variables, scalars into a NumPy
  array, arrays copied whole into a buffer (one row per segment).
* Reverse sweep: the segments are visited backwards. Each one restores its stored state, runs its
  ``K`` iterations again with the usual taping (the transformer's own forward loop, pushes
  included), then their reverse sweep (the transformer's own reverse loop).

The tape then holds at most ``K`` iterations' values, and the checkpoints ``ceil(n / K)`` states:
with ``K ~ sqrt(n)`` both are ``O(sqrt(n))`` instead of ``O(n)``. The loop's iterations run twice.

The state is found by liveness on the normalized loop: variables assigned in the loop (arrays
written element-wise included) that are read in an iteration before it assigns them
(upward-exposed), or that have a value before the loop (the reverse of the code before the loop
may read it). Loops this cannot reverse safely are refused with a
:class:`~srcgrad.errors.SrcgradError` (``while`` loops, which ``break``/``return`` inside a ``for``
become; writes into an argument; state that may be unbound at loop entry; tuple state) — never a
wrong gradient. The function's last loop, when it only sums terms into the result, needs no tape
at all (joint sweep, :mod:`srcgrad.joint`): it is left as it is. Only the differentiated
function's own loops are checkpointed (not those of the helpers it calls).
"""
import ast
import copy

from . import kinds as K
from .analyse import operand_names
from .joint import accumulator
from .liveness import assigned_in, walk_body
from .normalize import assign, name_load, name_store
from .placeholders import Comment

AUTO = "auto"


def option(checkpoint):
    """The validated ``checkpoint=`` option: None (off), a positive int, or ``"auto"``."""
    if checkpoint is None or checkpoint is False:
        return None
    if checkpoint == AUTO:
        return AUTO
    if isinstance(checkpoint, bool) or not isinstance(checkpoint, int) or checkpoint < 1:
        raise ValueError(f"checkpoint must be None, a positive int (iterations per segment) or "
                         f"'auto' (about sqrt(n) of n iterations), got {checkpoint!r}")
    return int(checkpoint)


def refuse_while(transformer, stmt):
    """A top-level ``while`` loop (or a ``for`` with ``break``/``return``, which normalization
    turns into one) when checkpointing was asked for."""
    raise transformer.fsrc.error(
        stmt, "checkpointing needs a `for ... in range(...)` loop without break/return (its trip "
        "count known when it starts); this loop (a while loop, or a for loop that breaks or "
        "returns) cannot be checkpointed: remove checkpoint=... or rewrite the loop",
        "checkpointed while loop")


def wrap(transformer, stmt, forward_loop, reverse):
    """(forward, reverse) statements of the top-level loop ``stmt`` (normalized ``For``) with
    checkpointing; ``forward_loop`` / ``reverse`` are what the transformer made of it (the taped
    forward loop, the reverse loop in a list). Returns them unchanged when the loop needs no tape
    (nothing to reverse, or the last loop that only sums into the result)."""
    if not reverse:
        return [forward_loop], reverse
    body = transformer.body
    result = body[-1].value
    if len(body) >= 2 and body[-2] is stmt and accumulator(stmt, result, transformer.a) is not None:
        return [forward_loop], reverse      # a joint sweep: no tape to bound
    state = loop_state(transformer, stmt)
    names = transformer.names
    fresh = {role: names.fresh("ck_" + role) for role in ("start", "step", "n", "k", "segs", "seg",
                                                           "lo", "hi", "bytes", "carried")}
    for name in fresh.values():     # counters and bounds: integers (float32 code keeps them so)
        transformer.a.kinds[name] = K.INT
    start, stop, step = stmt.iter.args
    line = stmt.lineno
    rebound = assigned_in(stmt.body)
    header = [
        assign(fresh["start"], copy.deepcopy(start), stmt),
        assign(fresh["step"], copy.deepcopy(step), stmt),
        assign(fresh["n"], _call("range_length", name_load(fresh["start"]), copy.deepcopy(stop),
                                 name_load(fresh["step"])), stmt),
    ]
    if transformer.checkpoint == AUTO:
        header += _auto_interval(fresh, state, rebound, stmt)
    else:
        header.append(assign(fresh["k"], ast.Constant(int(transformer.checkpoint)), stmt))
    header.append(assign(fresh["segs"], _parse(f"({fresh['n']} + {fresh['k']} - 1) // {fresh['k']}"), stmt))
    stores, restores, buffers = [], [], []
    seg = name_load(fresh["seg"])
    for name, kind in state:
        store = names.fresh("ck_" + name.lstrip("_"))
        if kind.is_array:
            buffers.append(assign(store, _call("snapshot_buffer", name_load(name), name_load(fresh["segs"])), stmt))
            top = names.fresh("ck_top")
            transformer.a.kinds[top] = K.INT
            stores.append(assign(top, _call("push_snapshot", name_load(store), seg,
                                                              name_load(name)), stmt))
            row = _call("snapshot_at", name_load(store), seg, name_load(name))
            if name in rebound:
                # a copy: the segment's iterations may write into the array (it must not alias the
                # checkpoint buffer)
                copied = ast.Call(func=ast.Attribute(value=row, attr="copy", ctx=ast.Load()), args=[],
                                  keywords=[])
                restores.append(assign(name, copied, stmt))
            else:
                # only written into, never rebound: restored in place, so that a view of it taken
                # before the loop (`rest = a[1:]`) sees the restored values too
                whole = ast.Subscript(value=name_load(name), slice=ast.Constant(Ellipsis), ctx=ast.Store())
                restores.append(assign(whole, row, stmt))
        else:
            dtype = {"int": "int64", "bool": "bool_"}.get(kind.cls, transformer.precision)
            buffers.append(assign(store, _parse(f"np.empty({fresh['segs']}, np.{dtype})"), stmt))
            slot = ast.Subscript(value=name_load(store), slice=copy.deepcopy(seg), ctx=ast.Store())
            stores.append(assign(slot, name_load(name), stmt))
            restores.append(assign(name, ast.Subscript(value=name_load(store), slice=copy.deepcopy(seg),
                                                       ctx=ast.Load()), stmt))
    bounds = [
        assign(fresh["lo"], _parse(f"{fresh['start']} + {fresh['seg']} * {fresh['k']} * {fresh['step']}"), stmt),
        assign(fresh["hi"], _parse(f"{fresh['lo']} + min({fresh['k']}, {fresh['n']} - {fresh['seg']} * "
                                   f"{fresh['k']}) * {fresh['step']}"), stmt),
    ]
    segment_range = ast.Call(func=name_load("range"), args=[name_load(fresh["lo"]), name_load(fresh["hi"]),
                                                             name_load(fresh["step"])], keywords=[])
    # the primal loop, nothing taped, over one segment
    primal = ast.copy_location(ast.For(target=name_store(stmt.target.id), iter=copy.deepcopy(segment_range),
                                       body=copy.deepcopy(stmt.body), orelse=[]), stmt)
    state_text = ", ".join(name for name, _ in state) or "nothing"
    size = "(checkpoint=\"auto\": chosen below)" if transformer.checkpoint == AUTO else \
        f"= {transformer.checkpoint}"
    forward = [Comment(f"checkpointing: this loop runs in segments of {fresh['k']} {size} iterations; the state "
                       f"({state_text}) is stored at the start of each segment and nothing is taped here "
                       "(the reverse sweep runs each segment again, taped, just before reversing it)", line)]
    forward += header + buffers
    forward.append(ast.copy_location(ast.For(
        target=name_store(fresh["seg"]),
        iter=_parse(f"range(0, {fresh['segs']}, 1)"),
        body=bounds + stores + [primal], orelse=[]), stmt))
    # the transformer's taped loop and reverse loop, over one segment
    forward_loop.iter = copy.deepcopy(segment_range)
    # what the rerun reads from outside the loop (liveness.primal_reads): not the values it computes
    # itself, nor the state it starts from (restored from the checkpoint)
    assigned = _assigned(stmt)
    forward_loop.outside_reads = (upward_exposed(stmt.body, {stmt.target.id}) - assigned) | \
        set(operand_names(forward_loop.iter))
    forward_loop.body[:] = _without_prints(forward_loop.body)    # (in place: the tape plan holds the list)
    reverse_loop = reverse[-1]
    reverse_loop.iter = _reversed(fresh)
    note = Comment(f"checkpointing: the segments backwards; each restores its stored state ({state_text}), "
                   "runs its iterations again taping them, then reverses them: the tape holds one "
                   "segment", line)
    # the bytes kept in snapshot lists (checked against SRCGRAD_MAX_TAPE_BYTES as they are pushed)
    # count one segment: the previous segment's reverse sweep popped all of its own
    recount = assign("_snapshot_bytes", ast.Constant(0), stmt)
    segment = ast.copy_location(ast.For(
        target=name_store(fresh["seg"]),
        iter=_parse(f"range({fresh['segs']} - 1, -1, -1)"),
        body=copy.deepcopy(bounds) + restores + [recount, forward_loop] + reverse, orelse=[]), stmt)
    return forward, [note, segment]


def loop_state(transformer, stmt):
    """[(name, kind)] of the loop's state, sorted; refuses what checkpointing cannot restore."""
    fsrc, a = transformer.fsrc, transformer.a
    params = set(transformer.params)
    body = stmt.body
    for node in walk_body(body):
        if isinstance(node, (ast.Return, ast.Break, ast.Continue)):
            raise fsrc.error(node, "checkpointing needs a loop without break/continue/return",
                             "checkpointed loop with a jump")
    written = _written(body)
    for name in sorted(written & params):
        raise fsrc.error(stmt, f"checkpointing a loop that writes into the argument `{name}`: the "
                         "recomputed segments would start from the overwritten values; write into a "
                         "copy (`x = x.copy()` before the loop) or remove checkpoint=...",
                         "checkpointed write into an argument")
    assigned = _assigned(stmt)
    position = next((k for k, s in enumerate(transformer.body) if s is stmt), None)
    if position is None:
        raise fsrc.error(stmt, "checkpointing: loops at the top level of the function only (this one is "
                         "inside an if): move it out of the branch or remove checkpoint=...",
                         "checkpointed loop in a branch")
    before = transformer.body[:position]
    surely = set(params) | {s.targets[0].id for s in before
                            if isinstance(s, ast.Assign) and isinstance(s.targets[0], ast.Name)}
    maybe = surely | assigned_in(before)
    state = assigned & (upward_exposed(body, {stmt.target.id}) | maybe)
    out = []
    for name in sorted(state):
        kind = a.kinds.get(name, K.FLOAT)
        if name not in surely:
            raise fsrc.error(stmt, f"checkpointing: the loop-carried `{name}` may have no value when "
                             "the loop starts (assign it before the loop)", "checkpointed unbound state")
        if kind.cls == "tuple":
            raise fsrc.error(stmt, f"checkpointing: the loop-carried `{name}` is a tuple; srcgrad "
                             "checkpoints floats, ints and arrays", "checkpointed tuple state")
        out.append((name, kind))
    return out


def _written(body):
    """Arrays the loop body writes element-wise."""
    return {n.targets[0].value.id for n in walk_body(body)
            if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Subscript)
            and isinstance(n.targets[0].value, ast.Name)}


def _assigned(loop):
    """Names a loop changes: those it assigns, the arrays it writes into, its variable."""
    return assigned_in(loop.body) | _written(loop.body) | {loop.target.id}


def upward_exposed(stmts, defined=()):
    """Names some path through ``stmts`` reads before ``stmts`` assigns them (an element write
    ``a[j] = v`` reads ``a``: the other elements stay). A loop or a branch taken on one path only
    does not define a name for what follows."""
    exposed = set()

    def reads(node):
        return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}

    def visit(stmts, defined):
        for stmt in stmts:
            if isinstance(stmt, ast.If):
                exposed.update(reads(stmt.test) - defined)
                defined = visit(stmt.body, set(defined)) & visit(stmt.orelse, set(defined))
            elif isinstance(stmt, ast.For):
                exposed.update(reads(stmt.iter) - defined)
                visit(stmt.body, defined | {stmt.target.id})
            elif isinstance(stmt, ast.While):
                exposed.update(reads(stmt.test) - defined)
                visit(stmt.body, set(defined))
            elif isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                exposed.update(reads(stmt.value) - defined)
                defined = defined | {stmt.targets[0].id}
            elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
                exposed.update((reads(stmt.value) | {stmt.target.id}) - defined)
                defined = defined | {stmt.target.id}
            else:           # element writes (the array is read), asserts, prints
                exposed.update(reads(stmt) - defined)
        return defined
    visit(stmts, set(defined))
    return exposed


def _without_prints(stmts):
    """The taped rerun of a segment: without the user's print calls (they ran in the forward sweep)."""
    out = []
    for stmt in stmts:
        if isinstance(stmt, ast.Expr) and not isinstance(stmt, Comment):
            continue
        if isinstance(stmt, (ast.If, ast.For, ast.While)):
            stmt.body[:] = _without_prints(stmt.body) or [ast.Pass()]
            stmt.orelse[:] = _without_prints(stmt.orelse)
        out.append(stmt)
    return out


def _auto_interval(fresh, state, rebound, stmt):
    """``checkpoint="auto"``: K = ceil(sqrt(n * S / C)), S the bytes of one checkpoint and C those
    of its rebound part (scalars, arrays the loop rebinds), at most n. Memory is about
    (n / K) * S for the checkpoints plus K * T for one segment's tape; a step tapes about what it
    carries (T ~ C: an ODE's state), and K balances the two: sqrt(n) when all the state is rebound.
    An array only written element-wise (a stored trajectory) is copied whole by each checkpoint but
    grows no tape per step: fewer, longer segments."""
    total, carried = [], []
    for name, kind in state:
        size = f"{name}.nbytes" if kind.is_array else "8"
        total.append(size)
        if not kind.is_array or name in rebound:
            carried.append(size)
    n, k = fresh["n"], fresh["k"]
    return [
        Comment("checkpoint=\"auto\": K = ceil(sqrt(n * bytes of a checkpoint / bytes of its rebound "
                "part)): sqrt(n) for an ODE's state, longer segments when the state holds arrays only "
                "written element-wise (each checkpoint copies them whole, the tape does not grow with them)",
                stmt.lineno),
        assign(fresh["bytes"], _parse(" + ".join(total) if total else "8"), stmt),
        assign(fresh["carried"], _parse(f"max({' + '.join(carried) if carried else '0'}, 8)"), stmt),
        assign(k, _parse(f"min(int(math.sqrt(max({n} * ({fresh['bytes']} // 8) // ({fresh['carried']} // 8), 1) "
                         f"- 1)) + 1, max({n}, 1))"), stmt),
    ]


def _reversed(fresh):
    """range over one segment's iterations, backwards (hi is lo + count * step)."""
    lo, hi, step = fresh["lo"], fresh["hi"], fresh["step"]
    return _parse(f"range({hi} - {step}, {lo} - {step}, -{step})")


def _call(func, *args):
    return ast.Call(func=name_load(func), args=list(args), keywords=[])


def _parse(text):
    return ast.parse(text, mode="eval").body
