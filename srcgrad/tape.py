"""Tape placement: which overwritten values the forward sweep saves, where, and how.

Input: the forward and reverse sweeps of :class:`~srcgrad.transform.ReverseTransformer`, with
:class:`~srcgrad.placeholders.Save` / :class:`~srcgrad.placeholders.Restore` pairs at every
overwrite, and the loops it transformed. Output: the same sweeps with the pairs the reverse sweep
needs turned into pushes and pops (the others dropped), and the initialisations they need.

* Liveness (:mod:`srcgrad.liveness`) keeps a pair only when the reverse sweep reads the value.
* Cheap loop values are recomputed at the top of each reverse iteration instead of taped
  (:meth:`TapePlan.recompute_in_loops`); arrays computed once per iteration go to a list.
* Scalars go to one float and one int tape (NumPy arrays that grow geometrically); a whole array
  that is rebound (``h = np.tanh(h @ W)`` in a loop) is snapshotted: copied whole, into a buffer
  allocated at loop entry when the trip count is known there, else into a list.
"""
import ast
import copy

from . import kinds as K
from . import rules
from .analyse import operand_names
from .liveness import assigned_in, dead_restores, defined_at, has_code, primal_reads, walk_body
from .normalize import assign, name_load, name_store
from .placeholders import Comment, Reset, Restore, Save
from .simplify import simplify

# Snapshot rows fill their buffer from the last row down (plan_snapshot_buffers): the forward
# sweep writes rows in descending memory order, the reverse sweep, which reads them in the reverse
# order of the steps, then walks memory upward, a stream the hardware prefetcher follows (read
# downward, row by row, a pass over the rows ran 2.5x slower: heat, nx=128, nt=1000, its kappa
# adjoint pass). Only the place of each row changes: the values are the same. False: rows from
# row 0 up (tests compare both; not in the cache key). Backends without loop tapes (cuda) keep
# rows from 0 up.
DESCENDING_ROWS = True

FLOAT_TAPE = ("_ftape", "_fpos", "push_float")
INT_TAPE = ("_itape", "_ipos", "push_int")


class TapePlan:
    """The tape decisions for one adjoint function (explicit state; one instance per function).

    ``loops``: (normalized body, reverse loop, loop variable or None, forward body) of each loop
    the reverse sweep replays; ``top_loops``: (forward For, normalized For) of the loops that run
    once per call; ``reset(placeholder)``: the statements that zero an adjoint for a
    :class:`~srcgrad.placeholders.Reset` ([] when the adjoint turned out to be assigned, not added);
    ``snapshot_buffers``: whether snapshots in top-level ``for`` loops go to preallocated buffers.
    """

    def __init__(self, params, body, analysis, names, precision, loops, top_loops, reset,
                 snapshot_buffers=True, loop_tapes=True, tape_transcendentals=False):
        self.params = params
        self.body = body
        self.a = analysis
        self.names = names
        self.precision = precision  # the working float dtype (typed dummies)
        self.loops = loops
        self.top_loops = top_loops
        self.reset = reset
        self.snapshot_buffers = snapshot_buffers
        self.loop_tapes = loop_tapes  # scalar pushes of a loop with known trip counts: one buffer
        self.tape_transcendentals = tape_transcendentals  # exp, log, ... in loops: taped, not recomputed
        self.used_tapes = set()    # FLOAT_TAPE / INT_TAPE, those a push uses
        self.saves = []            # the kept Save placeholders, in forward order
        self.checkpointed = set()  # (name, loop body id): saved once per iteration, not per assignment
        # (name, loop body id) -> the name of its iteration-start copy: a carried value assigned once
        # per iteration whose old value, at that assignment, is the start value already taped
        self.from_start = {}
        self.array_lists = []      # `_r_saved1 = []` initialisations of per-iteration array lists
        self.recomputed = set()    # values recomputed in the reverse sweep instead of taped
        self.snapshots = {}        # array variable -> the list its overwritten values are kept in
        self.buffers = {}          # id(Save) -> (buffer, top): snapshots in a preallocated buffer
        self.descending = set()    # id(Save) of those whose buffer fills from its last row down
        self.allocations = {}      # id(forward loop) -> the buffer allocations before it
        self.unchecked = set()     # id(Save): pushes with room reserved at their loop's entry
        self.covered = set()       # id(Save): element saves a step snapshot replaces
        self.written_in_place = set()  # id(Save): step snapshots the array is written into

    def resolve(self, forward, reverse):
        """Turn Save/Restore placeholders into pushes and pops where the reverse sweep needs them."""
        self.covered = {id(element) for save in walk_body(forward) if isinstance(save, Save)
                        for element in save.covers}
        self.recompute_in_loops(primal_reads(reverse, lambda save: False))
        needed = set()
        for _ in range(10):
            before = set(needed)
            needed = primal_reads(reverse, self._restore_filter(needed)) | {"_seed"}
            if needed == before:
                break
        keep = self._restore_filter(needed)
        dead = dead_restores(reverse, keep)
        if dead:
            base_keep = keep

            def keep(save):
                return base_keep(save) and id(save) not in dead
        inits = []
        initialized = set()
        self.plan_snapshot_buffers(keep)
        self.plan_loop_tapes(keep)
        forward = self._replace(forward, keep, restore=False)
        reverse = self._replace(reverse, keep, restore=True)
        inits += self.array_lists
        if self.snapshots:
            inits.append(assign("_snapshot_bytes", ast.Constant(0), self.body[0]))
            inits += [assign(snapshots, ast.List(elts=[], ctx=ast.Load()), self.body[0])
                      for snapshots in self.snapshots.values()]
        for save in self.saves:
            if save.index is None and save.name not in self.params and save.name not in initialized \
                    and not save.always:
                initialized.add(save.name)
                if not self._is_snapshot(save):
                    inits.append(assign(save.name, ast.Constant(_zero_of(save.kind)), save.like))
                elif not self._defined_before(save):
                    inits.append(assign(save.name, self._empty_array(save.kind), save.like))
        return forward, reverse, inits

    def recompute_in_loops(self, needed):
        """Recompute cheap loop values at the top of each reverse iteration instead of taping them.

        A value qualifies when it is assigned once, at the top level of the loop body, from the loop
        variable, names the loop never assigns, arrays it never writes, and other qualifying values,
        by an operation that costs about as much as a tape access (arithmetic, indexing, math
        functions). This is what a hand-written adjoint does: Rosenbrock's loop needs no tape.
        """
        joined = _joined_body(self.body, self.a) if self.tape_transcendentals else None
        for body, reverse_loop, loop_var, forward_body in self.loops:
            assigned = assigned_in(body)
            written = {n.targets[0].value.id for n in walk_body(body)
                       if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Subscript)}
            carried = self._checkpointable(body)
            candidates = {}
            # values of this iteration taped instead (a transcendental call): they hold this
            # iteration's value from the top of the reverse iteration until their restore, so the
            # recomputations may read them
            taped = set()
            read_so_far = set()
            reassigned = set()
            for stmt in body:
                if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                    name = stmt.targets[0].id
                    value = stmt.value
                    operands = set(operand_names(value))
                    ok = (self.a.def_sites.get(name) == 1 and name not in read_so_far
                          and name not in written     # written into later: the recomputation misses it
                          and _cheap(value, written)
                          and all(op == loop_var or op not in assigned or op in candidates or op in taped
                                  or (op in carried and op not in reassigned) for op in operands))
                    if ok and self.tape_transcendentals and body is not joined and \
                            _transcendental(value, self.a.kinds.get(name, K.FLOAT)):
                        taped.add(name)
                    elif ok:
                        candidates[name] = stmt
                for node in ast.walk(stmt):
                    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                        read_so_far.add(node.id)
                reassigned |= assigned_in([stmt])
            wanted = {n for n in candidates if n in needed}
            changed = True
            while changed:
                changed = False
                for name in list(wanted):
                    for op in operand_names(candidates[name].value):
                        if op in candidates and op not in wanted:
                            wanted.add(op)
                            changed = True
            self.save_arrays_per_iteration(body, reverse_loop, forward_body, candidates, needed)
            if taped & needed:
                reverse_loop.body.insert(0, Comment(
                    f"{', '.join(sorted(taped & needed))}: taped in the forward sweep, not recomputed "
                    "here (a tape slot costs less than the transcendental call)", body[0].lineno))
            if not wanted:
                continue
            recompute = [copy.deepcopy(stmt) for name, stmt in candidates.items() if name in wanted]
            # loop-carried state the recomputation starts from: saved once per iteration
            state = sorted({op for stmt in recompute for op in operand_names(stmt.value) if op in carried})
            # Forward: copy the state at the start of the iteration, push the copy at its end (so
            # the reverse iteration, which begins where the forward one ended, pops it first).
            restores = []
            for name in reversed(state):
                start = self.names.fresh(name.lstrip("_") + "_start")
                forward_body.insert(0, assign(start, name_load(name), body[0]))
                save = Save(start, self.a.kinds.get(name, K.FLOAT), like=body[0], always=True)
                forward_body.append(save)
                restores.append(Restore(save))
                _rename_operands(recompute, name, start)
                if not carried[name]:
                    # never read after its update in the body: the start value is the only one the
                    # reverse iteration reads, so restore it here instead of at each assignment
                    self.checkpointed.add((name, id(body)))
                    restores.append(assign(name, name_load(start), body[0]))
                else:
                    # read again after its update: the reverse sweep restores the old value at the
                    # assignment, and that old value is the start value (assigned once, at the
                    # top level of the body): copy it from the start copy instead of taping it twice
                    self.from_start[(name, id(body))] = start
            restores = _reverse_pairs(restores)     # pop in the opposite order of the pushes
            reverse_loop.body[:0] = restores + \
                [Comment("recompute this iteration's values", recompute[0].lineno)] + recompute
            self.recomputed |= wanted
            # an enclosing loop (later in self.loops) must provide what the recomputation reads
            needed |= {op for stmt in recompute for op in operand_names(stmt.value)}

    def save_arrays_per_iteration(self, body, reverse_loop, forward_body, candidates, needed):
        """Arrays computed once per iteration (``r = a[i] * v``) that the reverse sweep reads: keep a
        copy of each iteration's value in a list and pop it at the top of the reverse iteration.
        (The shared tape holds scalars; a list of arrays keeps each iteration's shape.)
        Not for an array the iteration then writes into (``lap = np.zeros_like(u); lap[1:-1] = ...``):
        the copy taken at its assignment misses the writes; its snapshot and slot pops restore it."""
        written = {n.targets[0].value.id for n in walk_body(body)
                   if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Subscript)
                   and isinstance(n.targets[0].value, ast.Name)}
        for stmt in body:
            if not (isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)):
                continue
            name = stmt.targets[0].id
            kind = self.a.kinds.get(name, K.FLOAT)
            if not kind.is_array or name in candidates or name not in needed or \
                    self.a.def_sites.get(name) != 1 or name in written:
                continue
            saved = self.names.fresh(name.lstrip("_") + "_saved")
            copy_call = ast.Call(func=ast.Attribute(value=name_load(name), attr="copy", ctx=ast.Load()),
                                 args=[], keywords=[])
            append = ast.Expr(value=ast.Call(func=ast.Attribute(value=name_load(saved), attr="append",
                                                                ctx=ast.Load()),
                                             args=[copy_call], keywords=[]))
            index = next(i for i, item in enumerate(forward_body) if item is stmt)
            forward_body.insert(index + 1, ast.copy_location(append, stmt))
            pop = ast.Call(func=ast.Attribute(value=name_load(saved), attr="pop", ctx=ast.Load()),
                           args=[], keywords=[])
            reverse_loop.body.insert(0, assign(name, pop, stmt))
            self.array_lists.append(assign(saved, ast.List(elts=[], ctx=ast.Load()), stmt))
            self.recomputed.add(name)

    def _checkpointable(self, body):
        """Loop-carried scalars: assigned once, at the top level of the loop body. Saving their value
        at the start of each iteration lets the reverse sweep recompute the iteration's values from
        it (the state of an ODE step) instead of taping every intermediate."""
        top_defs, nested = {}, set()
        out = {}           # name -> is it read again, after its update, later in the body?
        for stmt in body:
            if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                top_defs[stmt.targets[0].id] = top_defs.get(stmt.targets[0].id, 0) + 1
            elif isinstance(stmt, (ast.If, ast.For, ast.While)):
                nested |= assigned_in([stmt])
        for name, count in top_defs.items():
            kind = self.a.kinds.get(name, K.FLOAT)
            if count != 1 or name in nested or not kind.is_scalar:
                continue
            index = next(i for i, stmt in enumerate(body) if isinstance(stmt, ast.Assign)
                         and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == name)
            live_in = any(isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id == name
                          for stmt in body[:index + 1] for node in ast.walk(stmt))
            if not live_in:          # a value of this iteration only: nothing to carry
                continue
            later_reads = any(isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id == name
                              for stmt in body[index + 1:] for node in ast.walk(stmt))
            # the new value is also read by the reverse of its own assignment when that is an
            # operation whose rule uses the result (tanh, exp, sqrt, ...): only a plain copy is safe
            copy_only = isinstance(body[index].value, (ast.Name, ast.Constant))
            out[name] = later_reads or not copy_only
        return out

    def _restore_filter(self, needed):
        def keep(save):
            if save.always:
                return True
            if id(save) in self.covered:
                return False           # a step snapshot of the whole array replaces it
            if save.index is None and save.name in self.recomputed:
                return False
            if save.index is None and (save.name, save.loop) in self.checkpointed:
                return False
            if save.name not in needed:
                return False
            if save.index is not None or save.covers:
                return True
            return self.a.overwritten(save.name)
        return keep

    def _replace(self, stmts, keep, restore):
        out = []
        for stmt in stmts:
            if isinstance(stmt, Reset):
                if restore:
                    out.extend(self.reset(stmt))
            elif isinstance(stmt, Save):
                if keep(stmt) and self._start_copy(stmt) is None:
                    if stmt not in self.saves:
                        self.saves.append(stmt)
                    push = self._push(stmt)
                    out.extend(push if isinstance(push, list) else [push])
            elif isinstance(stmt, Restore):
                if keep(stmt.save):
                    start = self._start_copy(stmt.save)
                    out.extend(self._pop(stmt.save) if start is None else
                               [assign(stmt.save.name, name_load(start), stmt.save.like)])
            elif isinstance(stmt, (ast.If, ast.For, ast.While)):
                # (a checkpointed loop's taped forward loop runs in the reverse sweep: its
                # allocations come with it there)
                out.extend(self.allocations.get(id(stmt), []))
                body = self._replace(stmt.body, keep, restore)
                orelse = self._replace(stmt.orelse, keep, restore) if isinstance(stmt, ast.If) else []
                if restore and not has_code(body) and not has_code(orelse):
                    continue        # nothing left to replay in the reverse sweep
                if isinstance(stmt, ast.If) and not has_code(body):
                    stmt.test = ast.UnaryOp(op=ast.Not(), operand=stmt.test)
                    body, orelse = orelse, []
                stmt.body = body or [ast.Pass()]
                if isinstance(stmt, ast.If):
                    stmt.orelse = orelse if has_code(orelse) else []
                out.append(stmt)
            else:
                out.append(stmt)
        return out

    def _start_copy(self, save):
        """The iteration-start copy that holds ``save``'s old value (see recompute_in_loops), or None."""
        if save.index is not None or save.always:
            return None
        return self.from_start.get((save.name, save.loop))

    def _tape_for(self, save):
        tape = self._tape_kind(save)
        self.used_tapes.add(tape)
        return tape

    @staticmethod
    def _tape_kind(save):
        kind = save.kind.element() if save.index is not None else save.kind
        return FLOAT_TAPE if kind.cls == "float" else INT_TAPE

    # -- exact tape sizes for loops whose trip counts are known at loop entry ----------------------
    # A `for` loop that runs once per call, whose pushes to a tape all happen a fixed number of
    # times per iteration (none only on one side of an `if`, none in a `while`, inner `for` ranges
    # computable at the loop's entry), pushes exactly `count` values: the tape is made big enough
    # for them once, at the loop's entry, and the loop writes them without growth checks.

    def plan_loop_tapes(self, keep):
        for forward_loop, loop in self.top_loops if self.loop_tapes else ():
            iterator = forward_loop.iter
            if not (isinstance(iterator, ast.Call) and _is_range(iterator)):
                continue
            entry = _EntryValues(loop, self.a)
            for tape in (FLOAT_TAPE, INT_TAPE):
                saves = []
                per_iteration = self._count_pushes(forward_loop.body, tape, keep, entry, saves)
                if per_iteration is None or not saves:
                    continue
                trips = ast.Call(func=name_load("range_length"), args=copy.deepcopy(iterator.args),
                                 keywords=[])
                count = simplify(ast.BinOp(left=per_iteration, op=ast.Mult(), right=trips))
                reserve = ast.Call(func=name_load("reserve_tape"),
                                   args=[name_load(tape[0]), name_load(tape[1]), count], keywords=[])
                self.allocations.setdefault(id(forward_loop), []).extend([
                    Comment(f"this loop pushes exactly {ast.unparse(count)} values (trip counts known "
                            "at loop entry): room made once, no growth checks in the loop", loop.lineno),
                    assign(tape[0], reserve, loop)])
                self.unchecked |= {id(save) for save in saves}

    def _count_pushes(self, stmts, tape, keep, entry, saves):
        """Pushes to ``tape`` one run of ``stmts`` makes, as an expression computable at the loop's
        entry (``saves`` collects them), or None when that number is not fixed."""
        total = ast.Constant(0)
        for stmt in stmts:
            if isinstance(stmt, Save):
                if not keep(stmt) or self._is_snapshot(stmt) or self._tape_kind(stmt) != tape or \
                        self._start_copy(stmt) is not None:
                    continue
                if stmt.index is not None and self._slot_is_array(stmt):
                    return None              # a row or slice: its size is not counted
                saves.append(stmt)
                total = _plus(total, ast.Constant(1))
            elif isinstance(stmt, (ast.If, ast.While)):
                for branch in (stmt.body, stmt.orelse):
                    inner = self._count_pushes(branch, tape, keep, entry, saves)
                    if inner is None or not _is_zero(inner):
                        return None          # pushes on one path only, or a data-dependent count
            elif isinstance(stmt, ast.For):
                inner = self._count_pushes(stmt.body, tape, keep, entry, saves)
                if inner is None:
                    return None
                if _is_zero(inner):
                    continue
                bounds = [entry.value(arg) for arg in stmt.iter.args] \
                    if isinstance(stmt.iter, ast.Call) and _is_range(stmt.iter) else [None]
                if any(bound is None for bound in bounds):
                    return None
                trips = ast.Call(func=name_load("range_length"), args=bounds, keywords=[])
                total = _plus(total, ast.BinOp(left=inner, op=ast.Mult(), right=trips))
        return simplify(total)

    # -- array snapshots: a whole array rebound where the reverse sweep needs its old value -------
    # (`h = np.tanh(h @ W + x[t])` in a loop). The forward sweep copies the old array into a
    # buffer allocated at the entry of its loop (see plan_snapshot_buffers) or appends a copy to a
    # list of its own, and the reverse sweep reads it back. The array must keep its shape (the
    # adjoint arrays have one shape per variable): the runtime helpers check it at each push and
    # pop. The bytes kept count against SRCGRAD_MAX_TAPE_BYTES.

    @staticmethod
    def _is_snapshot(save):
        return save.index is None and save.kind is not None and save.kind.is_array

    def _snapshot_list(self, name):
        if name not in self.snapshots:
            self.snapshots[name] = self.names.fresh(name.lstrip("_") + "_snapshots")
        return self.snapshots[name]

    def plan_snapshot_buffers(self, keep):
        """Snapshots taken in a ``for`` loop that runs once per call go to one buffer of shape
        ``(snapshots per iteration * trip count, *shape)``, allocated at loop entry (the trip count
        is known there): no allocation and no growth inside the loop. The array must have a value
        at loop entry; the others (and ``while`` loops, loops inside loops) use the list."""
        for forward_loop, loop in self.top_loops if self.snapshot_buffers else ():
            sites = {}
            for save in walk_body(forward_loop.body):
                if isinstance(save, Save) and self._is_snapshot(save) and keep(save) and \
                        save.loop == id(loop.body) and self._defined_at(save.name, loop):
                    sites.setdefault(save.name, []).append(save)
            iterator = forward_loop.iter
            if not sites or not (isinstance(iterator, ast.Call) and isinstance(iterator.func, ast.Name)
                                 and iterator.func.id == "range" and len(iterator.args) == 3):
                continue
            trips = ast.Call(func=name_load("range_length"), args=copy.deepcopy(iterator.args), keywords=[])
            allocations = self.allocations.setdefault(id(forward_loop), [])
            for name, saves in sites.items():
                stem = name.lstrip("_")
                buffer, top = self.names.fresh(stem + "_snapshots"), self.names.fresh(stem + "_top")
                count = copy.deepcopy(trips) if len(saves) == 1 else \
                    ast.BinOp(left=ast.Constant(len(saves)), op=ast.Mult(), right=copy.deepcopy(trips))
                in_place = len(saves) == 1 and saves[0].written is not None and self.loop_tapes
                if in_place:
                    # written in place (step_snapshots.py): one more row, the array after the last step
                    count = ast.BinOp(left=count, op=ast.Add(), right=ast.Constant(1))
                    self.written_in_place.add(id(saves[0]))
                down = DESCENDING_ROWS and self.loop_tapes
                # the last row, count - 1, from the trip count (not `buffer.shape`: cuda's array
                # mode traces this code with a buffer that has none): `top = trips`, then integer
                # AugAssigns, which float32 lowering leaves integers (a BinOp's literals it casts)
                first = copy.deepcopy(trips) if down else ast.Constant(0)
                allocations += [
                    Comment(f"snapshots of `{name}` in this loop: one buffer, allocated once"
                            + ("; filled from its last row down (the reverse sweep then reads the rows "
                               "in ascending memory order, which the prefetcher follows)" if down else ""),
                             loop.lineno),
                    assign(buffer, ast.Call(func=name_load("snapshot_buffer"), args=[name_load(name), count],
                                            keywords=[]), loop),
                    assign(top, first, loop)]
                if down and len(saves) > 1:
                    allocations.append(ast.copy_location(ast.AugAssign(
                        target=name_store(top), op=ast.Mult(), value=ast.Constant(len(saves))), loop))
                if down and not in_place:         # (written in place: one row more, trips + 1)
                    allocations.append(ast.copy_location(ast.AugAssign(
                        target=name_store(top), op=ast.Sub(), value=ast.Constant(1)), loop))
                if in_place and down:
                    # the array starts in the buffer's last row (first_snapshot_row takes row 0),
                    # copied there by push_snapshot, a compiled helper (Numba compiles a row
                    # assignment `buffer[top] = u` written inline anew: seconds per function)
                    row = ast.Subscript(value=name_load(buffer), slice=name_load(top), ctx=ast.Load())
                    push = ast.Call(func=name_load("push_snapshot"), keywords=[],
                                    args=[name_load(buffer), name_load(top), name_load(name)])
                    allocations += [ast.copy_location(ast.Expr(value=push), loop), assign(name, row, loop)]
                    allocations[-1].snapshot_row = True
                elif in_place:
                    allocations.append(assign(name, ast.Call(func=name_load("first_snapshot_row"),
                                                             args=[name_load(buffer), name_load(name)],
                                                             keywords=[]), loop))
                    allocations[-1].snapshot_row = True
                for save in saves:
                    self.buffers[id(save)] = (buffer, top)
                    if down:
                        self.descending.add(id(save))

    def _push_snapshot(self, save):
        if id(save) in self.written_in_place:
            return self._step_into_snapshot(save)
        if id(save) in self.buffers:
            buffer, top = self.buffers[id(save)]
            push = ast.Call(func=name_load("push_snapshot"), args=[name_load(buffer), name_load(top),
                                                                   name_load(save.name)], keywords=[])
            note = Comment(f"snapshot: keep `{save.name}` before it is overwritten (the reverse sweep "
                            "reads it back)", save.like.lineno)
            if save.covers:
                note = Comment(f"step snapshot: this loop overwrites `{save.name}` each step; one copy "
                               "per iteration instead of a push per element (the reverse sweep binds "
                               f"`{save.name}` to the copy)", save.like.lineno)
            if id(save) in self.descending:     # row `top`, then the row below (push_snapshot counts up)
                return [note, ast.copy_location(ast.Expr(value=push), save.like),
                        ast.copy_location(ast.AugAssign(target=name_store(top), op=ast.Sub(),
                                                        value=ast.Constant(1)), save.like)]
            return [note, assign(top, push, save.like)]
        snapshots = self._snapshot_list(save.name)
        unset = ast.Constant(not self._defined_before(self._first_save(save.name)))
        count = ast.Call(func=name_load("count_snapshot"),
                         args=[name_load("_snapshot_bytes"), name_load(snapshots), name_load(save.name),
                               unset], keywords=[])
        copy_call = ast.Call(func=ast.Attribute(value=name_load(save.name), attr="copy", ctx=ast.Load()),
                             args=[], keywords=[])
        append = ast.Expr(value=ast.Call(func=ast.Attribute(value=name_load(snapshots), attr="append",
                                                            ctx=ast.Load()),
                                         args=[copy_call], keywords=[]))
        note = Comment(f"snapshot: keep `{save.name}` before it is overwritten (the reverse sweep "
                        "pops it back)", save.like.lineno)
        return [note, assign("_snapshot_bytes", count, save.like), ast.copy_location(append, save.like)]

    def _step_into_snapshot(self, save):
        """A step snapshot written in place (step_snapshots.py): the array, row ``top`` of the
        buffer, stays there as the snapshot; the step writes row ``top + 1``, which takes row
        ``top``'s slots outside the run ``lo..hi - 1`` the step writes (all of them when that is
        not a run inside the array). Written out here, not as a helper call: the few slot copies
        then compile into the loop (measured: a call per step cost what the copy saved)."""
        buffer, top = self.buffers[id(save)]
        name, k = save.name, self.names.fresh("kcarry")
        lo, hi = (ast.unparse(bound) for bound in save.written)
        step, back = ("-", "+") if id(save) in self.descending else ("+", "-")
        carry = f"{name}[{k}] = {buffer}[{top} {back} 1, {k}]"
        source = (f"{top} {step}= 1\n"
                  f"{name} = {buffer}[{top}]\n"
                  f"if 0 <= {lo} and {lo} <= {hi} and {hi} <= {name}.shape[0]:\n"
                  f"    for {k} in range(0, {lo}):\n        {carry}\n"
                  f"    for {k} in range({hi}, {name}.shape[0]):\n        {carry}\n"
                  f"else:\n"
                  f"    for {k} in range(0, {name}.shape[0]):\n        {carry}\n")
        stmts = ast.parse(source).body
        stmts[1].snapshot_row = True
        stmts[2].carry_run = True        # (row_forwarding.py recognises the carry by this mark)
        for stmt in stmts:
            for node in ast.walk(stmt):
                ast.copy_location(node, save.like)
        note = Comment(f"step snapshot: this loop overwrites `{name}` each step; written in place: "
                       f"`{name}` was row {top} of the buffer and stays there as the snapshot, the "
                       f"step writes row {top} {step} 1, which takes only the slots outside {lo}..{hi} - 1 "
                       "from the row before (the reverse sweep binds "
                       f"`{name}` to the row): no copy per step", save.like.lineno)
        return [note] + stmts

    def _pop_snapshot(self, save):
        if id(save) in self.buffers:
            buffer, top = self.buffers[id(save)]
            op = ast.Add() if id(save) in self.descending else ast.Sub()
            dec = ast.copy_location(ast.AugAssign(target=name_store(top), op=op, value=ast.Constant(1)),
                                    save.like)
            read = ast.Call(func=name_load("snapshot_at"), args=[name_load(buffer), name_load(top),
                                                                 name_load(save.name)], keywords=[])
            return [dec, assign(save.name, read, save.like)]
        unset = ast.Constant(not self._defined_before(self._first_save(save.name)))
        pop = ast.Call(func=name_load("pop_snapshot"), args=[name_load(self._snapshot_list(save.name)),
                                                             name_load(save.name), unset], keywords=[])
        return [assign(save.name, pop, save.like)]

    def _first_save(self, name):
        return next(save for save in self.saves if save.index is None and save.name == name)

    def _defined_before(self, save):
        """Whether ``save.name`` always has a value when ``save`` runs."""
        return self._defined_at(save.name, save.like)

    def _defined_at(self, name, place):
        return defined_at(name, place, self.body, self.params)

    def _empty_array(self, kind):
        """A typed placeholder for an array variable the first snapshot finds still unassigned."""
        dtype = {"int": "int64", "bool": "bool_"}.get(kind.dtype, self.precision)
        shape = ast.Tuple(elts=[ast.Constant(0)] * kind.ndim, ctx=ast.Load())
        return ast.Call(func=ast.Attribute(value=name_load("np"), attr="empty", ctx=ast.Load()),
                        args=[shape, ast.Attribute(value=name_load("np"), attr=dtype, ctx=ast.Load())],
                        keywords=[])

    def _push(self, save):
        if self._is_snapshot(save):
            return self._push_snapshot(save)
        tape, pos, push = self._tape_for(save)
        if save.index is not None:
            value = ast.Subscript(value=name_load(save.name), slice=copy.deepcopy(save.index), ctx=ast.Load())
            if self._slot_is_array(save):      # a row or slice: save all its values
                push = "push_slice"
        else:
            value = name_load(save.name)
        if id(save) in self.unchecked:         # room was made at the loop's entry
            slot = ast.Subscript(value=name_load(tape), slice=name_load(pos), ctx=ast.Store())
            return [assign(slot, value, save.like),
                    ast.copy_location(ast.AugAssign(target=name_store(pos), op=ast.Add(),
                                                    value=ast.Constant(1)), save.like)]
        call = ast.Call(func=name_load(push), args=[name_load(tape), name_load(pos), value], keywords=[])
        target = ast.Tuple(elts=[name_store(tape), name_store(pos)], ctx=ast.Store())
        return assign(target, call, save.like)

    def _slot_is_array(self, save):
        """Whether ``name[index]`` is an array (a row, a slice) rather than one element."""
        parts = save.index.elts if isinstance(save.index, ast.Tuple) else [save.index]
        if _index_is_slice(save.index, self.a) or any(isinstance(p, ast.Constant) and p.value is None
                                                       for p in parts):
            return True
        return save.kind is not None and save.kind.is_array and len(parts) < save.kind.ndim

    def _pop(self, save):
        if self._is_snapshot(save):
            return self._pop_snapshot(save)
        tape, pos, _ = self._tape_for(save)
        dec = ast.copy_location(ast.AugAssign(target=name_store(pos), op=ast.Sub(), value=ast.Constant(1)),
                                save.like)
        value = ast.Subscript(value=name_load(tape), slice=name_load(pos), ctx=ast.Load())
        if save.index is not None:
            target = ast.Subscript(value=name_load(save.name), slice=copy.deepcopy(save.index), ctx=ast.Store())
            if self._slot_is_array(save):
                slot = ast.Subscript(value=name_load(save.name), slice=copy.deepcopy(save.index), ctx=ast.Load())
                dec.value = ast.Attribute(value=slot, attr="size", ctx=ast.Load())
                value = ast.Call(func=name_load("tape_slice"), args=[name_load(tape), name_load(pos),
                                                                      copy.deepcopy(slot)], keywords=[])
        else:
            target = name_store(save.name)
        return [dec, assign(target, value, save.like)]



def _reverse_pairs(restores):
    """Reverse a list of Restore placeholders, keeping each optional follow-up assignment after
    its Restore."""
    groups = []
    for item in restores:
        if isinstance(item, Restore):
            groups.append([item])
        else:
            groups[-1].append(item)
    return [item for group in reversed(groups) for item in group]


def _rename_operands(stmts, old, new):
    for stmt in stmts:
        for node in ast.walk(stmt.value):
            if isinstance(node, ast.Name) and node.id == old:
                node.id = new



# Scalar calls that cost much more than a tape slot (tens of cycles, against a store and a load)
_TRANSCENDENTAL = {"exp", "expm1", "exp2", "log", "log1p", "log2", "log10", "sin", "cos", "tan",
                   "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh",
                   "arcsin", "arccos", "arctan", "arctan2", "arcsinh", "arccosh", "arctanh",
                   "erf", "erfc", "gamma", "lgamma", "power", "pow"}


def _transcendental(value, kind):
    """A scalar result of ``math``/``numpy`` transcendental call (``math.exp(a)``, ``np.tanh(a)``)."""
    if not (isinstance(value, ast.Call) and kind.is_scalar) or isinstance(value.callee, str):
        return False
    callee = value.callee
    module = getattr(callee, "__module__", None) or type(callee).__module__ or ""
    return getattr(callee, "__name__", None) in _TRANSCENDENTAL and \
        (module in ("math", "numpy") or (module or "").startswith("numpy"))


def _joined_body(body, analysis):
    """The body of the loop :func:`srcgrad.joint.join` may fuse (the last loop summing into the
    result): its recomputation is free there (the joint loop has the value at hand)."""
    from .joint import accumulator
    if len(body) >= 2 and isinstance(body[-2], ast.For) and \
            accumulator(body[-2], body[-1].value, analysis) is not None:
        return body[-2].body
    return None


def _cheap(value, written_arrays):
    if isinstance(value, (ast.BinOp, ast.UnaryOp, ast.Compare, ast.Name, ast.Constant)):
        return True
    if isinstance(value, ast.Subscript):
        return isinstance(value.value, ast.Name) and value.value.id not in written_arrays
    if isinstance(value, ast.Attribute):
        return value.attr in ("shape", "size", "ndim")
    if isinstance(value, ast.Call):
        rule = rules.lookup(value.callee) if not isinstance(value.callee, str) else None
        return rule is not None and all(isinstance(a, (ast.Name, ast.Constant)) for a in value.args)
    return False


def _index_is_slice(index, analysis):
    parts = index.elts if isinstance(index, ast.Tuple) else [index]
    return any(isinstance(p, ast.Slice) or (isinstance(p, ast.Name) and analysis.kind(p).is_array)
               for p in parts)


def _zero_of(kind):
    return {"float": 0.0, "int": 0, "bool": False}.get(kind.cls, 0.0)



def _plus(total, term):
    return term if _is_zero(total) else ast.BinOp(left=total, op=ast.Add(), right=term)


def _is_zero(expr):
    return isinstance(expr, ast.Constant) and expr.value == 0


def _is_range(call):
    return isinstance(call.func, ast.Name) and call.func.id == "range" and len(call.args) == 3


class _EntryValues:
    """Expressions a loop's body computes that have the same value in every iteration, rewritten
    in terms of values available at the loop's entry (for trip counts of inner loops)."""

    def __init__(self, loop, analysis):
        self.a = analysis
        body = loop.body
        self.assigned = assigned_in(body) | {loop.target.id}       # the loop variable changes too
        self.written = {node.targets[0].value.id for node in walk_body(body)
                        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript)
                        and isinstance(node.targets[0].value, ast.Name)}
        # single definitions outside branches (they run in every iteration, before their uses)
        self.definitions = {}

        def collect(stmts):
            for stmt in stmts:
                if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                    self.definitions[stmt.targets[0].id] = stmt.value
                elif isinstance(stmt, ast.For):
                    collect(stmt.body)
        collect(body)

    def value(self, node, depth=0):
        if depth > 20:
            return None
        if isinstance(node, ast.Constant):
            return copy.deepcopy(node)
        if isinstance(node, ast.Name):
            if node.id not in self.assigned:
                return name_load(node.id)
            if self.a.def_sites.get(node.id) == 1 and node.id in self.definitions:
                return self.value(self.definitions[node.id], depth + 1)
            return None
        if isinstance(node, ast.BinOp):
            left, right = self.value(node.left, depth + 1), self.value(node.right, depth + 1)
            if left is None or right is None:
                return None
            return ast.BinOp(left=left, op=copy.deepcopy(node.op), right=right)
        if isinstance(node, ast.UnaryOp):
            operand = self.value(node.operand, depth + 1)
            return None if operand is None else ast.UnaryOp(op=copy.deepcopy(node.op), operand=operand)
        if isinstance(node, ast.Attribute) and node.attr == "shape" and isinstance(node.value, ast.Name):
            base = self.value(node.value, depth + 1)
            return None if base is None else ast.Attribute(value=base, attr="shape", ctx=ast.Load())
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and \
                isinstance(node.value, ast.Name) and node.value.id not in self.written:
            base = self.value(node.value, depth + 1)
            return None if base is None else ast.Subscript(value=base, slice=copy.deepcopy(node.slice),
                                                           ctx=ast.Load())
        return None
