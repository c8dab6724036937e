"""Stage 6 — the reverse-mode transformation.

Input: a normalized body (see :mod:`srcgrad.normalize`) and its :class:`~srcgrad.analyse.Analysis`.
Output: the statements of the forward sweep and of the reverse sweep.

* The forward sweep is the primal code. Before a statement overwrites a value, a
  :class:`~srcgrad.placeholders.Save` placeholder marks it; :mod:`srcgrad.tape` later turns the
  ones whose value the reverse sweep reads into pushes (scalars on a tape, whole arrays as
  snapshots) and drops the rest (liveness: :mod:`srcgrad.liveness`).
* The reverse sweep walks the statements backwards. For each active assignment it inserts the
  derivative rule's template (from :mod:`srcgrad.rules`), then a :class:`Restore` (the pop).
  ``if`` replays the branch taken (the condition variable is kept); ``for`` runs its range
  backwards; ``while`` counts its iterations in the forward sweep and runs that many in reverse.
* Expressions are tidied by :func:`srcgrad.simplify.simplify` so the adjoint reads like
  hand-written code.
"""
import ast
import copy
import operator

import numpy as np

from . import checkpoint as checkpointing
from . import joint
from . import kinds as K
from . import naming as N
from . import step_snapshots
from . import rules
from .analyse import BINOPS, operand_names
from .errors import SrcgradError
from .normalize import assign, name_load, name_store
from .placeholders import Comment, Reset, Restore, Save, _Comment, _Reset  # noqa: F401 (re-exported)
from .simplify import scaled_squares, simplify
from .tape import FLOAT_TAPE, INT_TAPE, TapePlan  # noqa: F401 (re-exported)

# Snapshots of arrays rebound in a loop that runs once per call go to one preallocated buffer (else a
# list). False: always the list (tests compare both; the code cache does not know this switch).
SNAPSHOT_BUFFERS = True
# A helper's adjoint adds into the caller's adjoint arrays in place (else it returns fresh gradient
# arrays the caller adds). False: always fresh arrays (tests compare both; not in the cache key).
HELPER_ADJOINTS_IN_PLACE = True
# The scalar pushes of a loop whose trip counts are known at its entry go to one buffer of that
# exact size (see tape.plan_loop_tapes). False: the growing tape (tests compare both).
LOOP_TAPES = True
# The function's last loop, when it only adds a term per iteration to the result, computes the
# value and the adjoint in one pass (see joint.py). False: a forward and a reverse loop.
JOINT_SWEEPS = True
# A loop that runs once per call and overwrites the same slots of an array each step saves the
# array once per iteration (one copy into a buffer) instead of each element it overwrites (see
# step_snapshots.py). False: element saves (tests compare both; not in the cache key).
STEP_SNAPSHOTS = True
# A scalar adjoint known to be zero takes its first contribution by assignment, not `+= ` (see
# zero_adjoints.py; applied by program.py). False: always `+=` (tests compare both).
ASSIGN_ZERO_ADJOINTS = True
# The reverse of a copy loop (`u[i] = un[i]` each time step) exchanges the two adjoint arrays where
# the destination's adjoint is known to be zero on the copied slots (see adjoint_swaps.py; applied
# by program.py). False: the element loop (tests compare both; not in the cache key).
SWAP_ADJOINTS = True
# The function being differentiated (scalar result, no adjoint arrays passed in to add into) runs
# its reverse sweep with the result's adjoint 1.0 and returns each gradient times _seed, only when
# _seed is not 1.0 (naming.seed_scaled, bound to a new name: no adjoint is rebound, so the cpu
# fuser still accumulates into it in place; an array keeps its own dtype; applied by
# program.py to the modules that grad, value_and_grad and vjp run on the python and cpu targets,
# not to sources differentiated again): adjoints are linear in the seed, and a constant 1.0 folds
# away in the compiled loops where a run-time _seed costs a multiplication per use (Rosenbrock
# 18.0 -> 16.1 µs a call). MinibatchLoop's fused SGD step reads the scaled return as `_lr * _seed`
# (training/fused_sgd.py). False: the sweep starts from _seed (tests compare both).
SEED_AT_END = True
# A scalar product `t = u * a` where `u = k * a` is a single-use temporary (k a number or inactive:
# Rosenbrock's `100.0 * a * a`) gives `a` one contribution `2.0 * d[t] * u` and `u` no adjoint
# (see simplify.scaled_squares). False: the product rule through u (tests compare both).
SCALED_SQUARES = True
# A scalar loop value made by a transcendental call (math.exp, log, tanh, ...) is taped in the
# forward sweep instead of recomputed in each reverse iteration: a tape slot costs less than the
# call (see tape.TapePlan.recompute_in_loops). Not on cuda (fixed-size device tapes), not in a
# loop the joint sweep fuses (it has the value at hand). False: recomputed (tests compare both).
TAPE_TRANSCENDENTALS = True
# A helper call with a float result records the helper's forward sweep once, in the caller's
# forward sweep, on the caller's stacks; the caller's reverse sweep runs only the helper's reverse
# sweep (see split_calls.py). Not on cuda, not under checkpointing. False: joint calls (the
# helper's adjoint reruns its forward sweep; tests compare both; not in the cache key).
# Off by default: the stacks hold every call's record (GMM n=1000: 4.4 MB), and a tape buffer
# allocated fresh on each gradient call page-faults; GMM gradient (CPU time, load ~5-9): 17.97 ms
# split against 10.26 ms joint with borrowed tapes; with tape buffers kept between calls (the
# heat branch's memory.py) 9.96 against 10.10 ms, about equal.
SPLIT_HELPER_CALLS = False
# A helper's adjoint that uses tapes takes them from its caller (the caller's helper stacks, above
# their top; it pops what it pushes) instead of allocating them on each call (program.py). Not on
# cuda. False: each call allocates its tapes (tests compare both; not in the cache key).
HELPERS_BORROW_TAPES = True


def adjoint_name(name, generated=frozenset()):
    """The adjoint's variable name: ``x`` -> ``_adj_x``; srcgrad's temporary ``_t3`` -> ``_adj_t3``.

    Injective: a user name that starts with ``_`` gets ``_adj__`` (the name maker never creates a
    temporary ``_t3`` when the user has a ``t3``)."""
    if name in generated:
        return "_adj" + name
    return "_adj_" + name


class ReverseTransformer:
    def __init__(self, fsrc, params, body, analysis, names, helper_adjoint, in_place=()):
        self.fsrc = fsrc
        self.params = params
        self.body = body
        self.a = analysis
        self.names = names
        # callable(callee, arg kinds, stmt, arg activity, in-place candidates) ->
        # (adjoint function name, positions of the arguments it returns gradients for, in order,
        #  positions whose adjoint arrays it takes and adds into), or None (not a helper)
        self.helper_adjoint = helper_adjoint
        # parameters whose adjoint arrays the caller passes in (this is a helper's adjoint): they
        # are only ever added into, never assigned
        self.in_place = tuple(in_place)
        self.single_use = self._single_use_temps()
        self.used_tapes = set()    # the tapes the pushes use (set by run; program.py allocates them)
        self.loops = []            # (normalized body, reverse loop node, loop variable, forward body)
        self.loop_stack = []       # ids of the loop bodies being transformed (innermost last)
        self.top_loops = []        # (forward For, normalized For) of loops that run once a call
        self.precision = "float64"  # the working float dtype (set by the caller; typed dummies)
        self.loop_tapes = True      # backends that allocate in generated code (set by the caller)
        self.seed_at_end = False    # the sweep starts from 1.0, the caller scales (SEED_AT_END)
        self.tape_transcendentals = False   # TAPE_TRANSCENDENTALS applies (set by the caller)
        self.checkpoint = None      # None, K or "auto": top-level loops checkpointed (checkpoint.py)
        self.split_forward = {}     # id(call statement) -> its forward statements (a split call)
        self.split_stacks = False   # a split call uses the helper stacks (program.py allocates them)
        self.scaled_squares = {}    # id(t = u * a) -> (a, u), and the u folded (set by run)
        self.folded = set()

    def adj(self, name):
        return adjoint_name(name, self.names.generated)

    # -- which temporaries have exactly one use, right beside their definition ------------------
    def _single_use_temps(self):
        def_block, use_block = {}, {}
        doubled = {}        # name -> its operand uses in `x * x` / `x + x` (two per statement, one
                            # adjoint contribution: see _merge_same_operand)

        def visit(stmts):
            for stmt in stmts:
                if isinstance(stmt, ast.Assign):
                    if isinstance(stmt.targets[0], ast.Name):
                        def_block[stmt.targets[0].id] = id(stmts)
                    if _same_operand_binop(stmt.value):
                        doubled[stmt.value.left.id] = doubled.get(stmt.value.left.id, 0) + 2
                    for name in operand_names(stmt.value):
                        use_block[name] = id(stmts)
                elif isinstance(stmt, ast.Return):
                    for name in operand_names(stmt.value):
                        use_block[name] = id(stmts)
                elif isinstance(stmt, ast.If):
                    visit(stmt.body)
                    visit(stmt.orelse)
                elif isinstance(stmt, (ast.For, ast.While)):
                    visit(stmt.body)
        visit(self.body)
        for param in self.params:       # parameters are defined at the top of the body
            def_block.setdefault(param, id(self.body))
        # an array read or written by index accumulates slot by slot: it needs a zeroed adjoint
        indexed = {node.value.id for stmt in self.body for node in ast.walk(stmt)
                   if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)}
        return {name for name in def_block
                if name not in indexed and name not in self.in_place and self.a.kinds.get(name, K.FLOAT).cls != "tuple"
                and self.a.def_sites.get(name) == 1
                and self.a.operand_uses.get(name, 0) - doubled.get(name, 0) // 2 == 1
                and use_block.get(name) == def_block[name]}

    # -- the whole function ---------------------------------------------------------------------
    def run(self, wrt):
        # {id(t = u * a): (a, u)} and the u whose adjoint is folded into a's (SCALED_SQUARES)
        self.scaled_squares = scaled_squares(self.body, self.single_use, self.a.active,
                                             self.a.kinds) if SCALED_SQUARES else {}
        self.folded = {u for _, u in self.scaled_squares.values()}
        forward, reverse = self.block(self.body[:-1], depth=0)
        result = self.body[-1].value
        seed = []
        if self.a.is_active(result) and self.a.kind(result).cls == "tuple":
            for k in range(len(self.a.kind(result).items)):
                part = ast.Subscript(value=name_load("_seed"), slice=ast.Constant(k), ctx=ast.Load())
                target = name_store(f"{self.adj(result.id)}_{k}")
                seed.append(ast.copy_location(ast.AugAssign(target=target, op=ast.Add(), value=part),
                                              self.body[-1]))
        elif self.a.is_active(result):
            start = ast.Constant(1.0) if self.seed_at_end else name_load("_seed")
            seed = self.accumulate(result, start, self.a.kind(result), False, self.body[-1])
        reverse = seed + reverse
        plan = TapePlan(self.params, self.body, self.a, self.names, self.precision, self.loops,
                        self.top_loops, self.resolve_reset, SNAPSHOT_BUFFERS,
                        LOOP_TAPES and self.loop_tapes,
                        tape_transcendentals=TAPE_TRANSCENDENTALS and self.tape_transcendentals
                        and self.loop_tapes)
        forward, reverse, inits = plan.resolve(forward, reverse)
        self.used_tapes = plan.used_tapes
        if JOINT_SWEEPS:
            forward, reverse = joint.join(self.body, forward, reverse, result, self.a, self.loops)
        return forward, reverse, inits, result

    def block(self, stmts, depth):
        forward, reverse = [], []
        for stmt in stmts:
            f, r = self.statement(stmt, depth)
            forward.extend(f)
            reverse[:0] = r
        return forward, reverse

    def statement(self, stmt, depth):
        if isinstance(stmt, ast.Pass):          # an emptied branch (`y = y` was dropped)
            return [], []
        if isinstance(stmt, (ast.Assert, ast.Expr)):    # assert / print: the primal only
            return [stmt], []
        if isinstance(stmt, ast.Assign):
            return self.assignment(stmt, depth)
        if isinstance(stmt, ast.If):
            fb, rb = self.block(stmt.body, depth)
            fo, ro = self.block(stmt.orelse, depth)
            forward = ast.copy_location(ast.If(test=stmt.test, body=fb or [ast.Pass()], orelse=fo), stmt)
            reverse = []
            if rb or ro:
                reverse = [ast.copy_location(ast.If(test=name_load(stmt.test.id), body=rb or [ast.Pass()],
                                                    orelse=ro), stmt)]
            return [forward], reverse
        if isinstance(stmt, ast.For):
            self.loop_stack.append(id(stmt.body))
            pieces = [self.statement(s, depth + 1) for s in stmt.body]
            self.loop_stack.pop()
            if depth == 0 and STEP_SNAPSHOTS:
                pieces = step_snapshots.snapshot_arrays(stmt, pieces, self.a, self.body, self.params)
            fb = [s for f, _ in pieces for s in f]
            rb = [s for _, r in reversed(pieces) for s in r]
            forward = ast.copy_location(ast.For(target=stmt.target, iter=stmt.iter, body=fb or [ast.Pass()],
                                                orelse=[]), stmt)
            if depth == 0:
                self.top_loops.append((forward, stmt))
            reverse = []
            if rb:
                reverse = [ast.copy_location(ast.For(target=name_store(stmt.target.id),
                                                     iter=reversed_range(*stmt.iter.args),
                                                     body=rb, orelse=[]), stmt)]
                self.loops.append((stmt.body, reverse[0], stmt.target.id, forward.body))
            if depth == 0 and self.checkpoint is not None:
                return checkpointing.wrap(self, stmt, forward, reverse)
            return [forward], reverse
        if isinstance(stmt, ast.While):
            self.loop_stack.append(id(stmt.body))
            fb, rb = self.block(stmt.body, depth + 1)
            self.loop_stack.pop()
            if not rb:
                forward = ast.copy_location(ast.While(test=stmt.test, body=fb, orelse=[]), stmt)
                return [forward], []
            if depth == 0 and self.checkpoint is not None:
                checkpointing.refuse_while(self, stmt)
            trips = self.names.fresh("trips")
            count = assign(trips, ast.BinOp(left=name_load(trips), op=ast.Add(), right=ast.Constant(1)), stmt)
            forward = [assign(trips, ast.Constant(0), stmt),
                       ast.copy_location(ast.While(test=stmt.test, body=fb + [count], orelse=[]), stmt)]
            loop = ast.copy_location(ast.For(target=name_store(self.names.fresh("k")),
                                             iter=ast.Call(func=name_load("range"), args=[name_load(trips)],
                                                           keywords=[]),
                                             body=rb, orelse=[]), stmt)
            reverse = [loop]
            self.loops.append((stmt.body, loop, None, forward[1].body))
            if depth > 0:       # an enclosing loop runs this while again: keep each trip count
                save = Save(trips, K.INT, like=stmt, always=True)
                forward.append(save)
                reverse.insert(0, Restore(save))
            return forward, reverse
        raise SrcgradError(f"transform: unexpected statement {type(stmt).__name__}")

    # -- assignments ---------------------------------------------------------------------------
    def assignment(self, stmt, depth):
        target = stmt.targets[0]
        if isinstance(target, ast.Subscript):
            return self.element_write(stmt)
        name = target.id
        kind = self.a.kinds.get(name, K.FLOAT)
        value = stmt.value
        if isinstance(value, ast.Call) and value.callee == "stack_buffer" and \
                isinstance(value.args[2], ast.Constant) and value.args[2].value:
            # the array of a list built with append, made once per call (normalize.ListBuilder):
            # nothing before it to restore, no derivative
            return [stmt], []
        save = Save(name, kind, like=stmt, loop=self.loop_stack[-1] if self.loop_stack else None)
        forward = [save, stmt]
        reverse = []
        if name in self.a.active and name not in self.folded:
            reverse = self.adjoint_of(stmt, name, kind)
            if id(stmt) in self.split_forward:      # a split helper call records instead
                forward = [save] + self.split_forward.pop(id(stmt))
            if self.a.overwritten(name):
                # decided at the end: whether the name stays a single-use temporary is only known
                # once its use (later in program order) has been transformed
                reverse.append(Reset(name, kind, stmt))
        if reverse:
            reverse.insert(0, self.comment(stmt))
        reverse.append(Restore(save))
        return forward, reverse

    def comment(self, stmt):
        return Comment(self.fsrc.line_text(stmt.lineno), stmt.lineno)

    def resolve_reset(self, placeholder):
        """The statements a :class:`Reset` placeholder becomes (called once the sweep is done):
        none when the adjoint stayed a single-use temporary (its one use assigns it)."""
        if placeholder.name in self.single_use:
            return []
        return self.reset(placeholder.name, placeholder.kind, placeholder.like)

    def reset(self, name, kind, stmt):
        adj = self.adj(name)
        if kind.cls == "tuple":        # an array component stays an array (its type, for Numba)
            return [assign(ast.Subscript(value=name_load(f"{adj}_{k}"), slice=ast.Constant(Ellipsis),
                                         ctx=ast.Store()) if item.is_array else f"{adj}_{k}",
                           ast.Constant(0.0), stmt) for k, item in enumerate(kind.items)]
        if kind.is_array:
            sub = ast.Subscript(value=name_load(adj), slice=ast.Constant(Ellipsis), ctx=ast.Store())
            return [assign(sub, ast.Constant(0.0), stmt)]
        return [assign(adj, ast.Constant(0.0), stmt)]

    def element_write(self, stmt):
        target = stmt.targets[0]
        array = target.value.id
        save = Save(array, self.a.kinds.get(array), index=target.slice, like=stmt)
        reverse = []
        if array in self.a.active:
            adj_slot = ast.Subscript(value=name_load(self.adj(array)), slice=copy.deepcopy(target.slice),
                                     ctx=ast.Load())
            if self.a.is_active(stmt.value):
                reverse += self.accumulate(stmt.value, adj_slot, self.a.kind(stmt.value), True, stmt,
                                           fresh=False)
            zero = ast.Subscript(value=name_load(self.adj(array)), slice=copy.deepcopy(target.slice),
                                 ctx=ast.Store())
            reverse.append(assign(zero, ast.Constant(0.0), stmt))
            reverse.insert(0, self.comment(stmt))
        reverse.append(Restore(save))
        return [save, stmt], reverse

    def adjoint_of(self, stmt, name, kind):
        value = stmt.value
        if isinstance(value, (ast.Name, ast.Constant)):
            if self.a.is_active(value):
                return self.accumulate(value, name_load(self.adj(name)), kind, True, stmt, fresh=False)
            return []
        if id(stmt) in self.scaled_squares:         # t = (k * a) * a: d[a] += 2.0 * d[t] * u
            a, u = self.scaled_squares[id(stmt)]
            contribution = ast.BinOp(left=ast.BinOp(left=ast.Constant(2.0), op=ast.Mult(),
                                                    right=name_load(self.adj(name))),
                                     op=ast.Mult(), right=name_load(u))
            return [Comment(f"a scaled square: {u} is a multiple of {a}, so {name} = {u} * {a} gives "
                            f"{a} one contribution, 2 * {u} (and {u} none)", stmt.lineno)] + \
                self.accumulate(name_load(a), contribution, kind, True, stmt)
        if isinstance(value, ast.BinOp):
            op = BINOPS.get(type(value.op))
            return self.apply_rule(rules.lookup(op), name, [value.left, value.right], {}, stmt,
                                   ast.unparse(value))
        if isinstance(value, ast.UnaryOp):
            if isinstance(value.op, ast.USub):
                return self.apply_rule(rules.lookup(operator.neg), name, [value.operand], {}, stmt, "-")
            return []
        if isinstance(value, ast.Call):
            return self.call(stmt, name, value)
        if isinstance(value, ast.Tuple):
            out = []
            for k, element in enumerate(value.elts):
                if self.a.is_active(element):
                    part = name_load(f"{self.adj(name)}_{k}")
                    out += self.accumulate(element, part, self.a.kind(element), False, stmt, fresh=False)
            return out
        if isinstance(value, ast.Subscript) and self.a.kind(value.value).cls == "tuple":
            if not self.a.is_active(value.value):
                return []
            if not isinstance(value.slice, ast.Constant):
                raise self.fsrc.error(stmt, "a tuple can only be indexed by a constant", "tuple index")
            target = name_store(f"{self.adj(value.value.id)}_{value.slice.value}")
            return [ast.copy_location(ast.AugAssign(target=target, op=ast.Add(),
                                                    value=name_load(self.adj(name))), stmt)]
        if isinstance(value, ast.Subscript):
            base = value.value
            if not self.a.is_active(base):
                return []
            parts = value.slice.elts if isinstance(value.slice, ast.Tuple) else [value.slice]
            if any(isinstance(p, ast.Name) and self.a.kind(p).is_array for p in parts):
                # a gather (x[rows, cols] with integer arrays): repeated indices must add up
                if len(parts) > 2 or not all(isinstance(p, ast.Name) for p in parts):
                    raise self.fsrc.error(stmt, "integer-array indexing is supported as x[idx] or "
                                          "x[rows, cols]", "advanced indexing")
                helper = "scatter_add2" if len(parts) == 2 else "scatter_add1"
                call = ast.Call(func=name_load(helper), args=[name_load(self.adj(base.id))] +
                                [name_load(p.id) for p in parts] + [name_load(self.adj(name))], keywords=[])
                return [ast.copy_location(ast.Expr(value=call), stmt)]
            slot = ast.Subscript(value=name_load(self.adj(base.id)), slice=copy.deepcopy(value.slice),
                                 ctx=ast.Store())
            return [ast.copy_location(ast.AugAssign(target=slot, op=ast.Add(),
                                                    value=name_load(self.adj(name))), stmt)]
        if isinstance(value, ast.Attribute) and value.attr in ("T", "real"):
            if not self.a.is_active(value.value):
                return []
            contribution = ast.Attribute(value=name_load(self.adj(name)), attr=value.attr, ctx=ast.Load())
            return self.accumulate(value.value, contribution, self.a.kind(value.value), False, stmt)
        if isinstance(value, (ast.Compare, ast.Attribute)):
            return []
        raise self.fsrc.error(stmt, f"cannot differentiate `{ast.unparse(value)}`")

    def call(self, stmt, name, call):
        callee = call.callee
        if callee == "stack_buffer":     # allocation: the items arrive by element writes
            return []
        if callee == "astype":          # x.astype(dtype): the array is the method's receiver
            base = call.func.value
            if not self.a.is_active(base):
                return []
            return self.accumulate(base, name_load(self.adj(name)), self.a.kind(base), False, stmt,
                                   fresh=False)
        helper = rules.TUPLE_ARGUMENT_RULES.get(callee) if _hashable(callee) else None
        if callee is np.array or callee is np.asarray:
            if call.args and isinstance(call.args[0], ast.Tuple):
                # a literal: its elements stacked along axis 0
                return self.tuple_argument(stmt, name, call, "stack_part", axis=ast.Constant(0))
            elif call.args and self.a.kind(call.args[0]).cls == "tuple":
                return self.tuple_variable_argument(stmt, name, call, "stack_part", axis=ast.Constant(0))
            elif call.args and self.a.is_active(call.args[0]):    # a copy of an array
                return self.accumulate(call.args[0], name_load(self.adj(name)),
                                       self.a.kind(call.args[0]), False, stmt)
        if helper is not None and call.args and isinstance(call.args[0], ast.Tuple):
            return self.tuple_argument(stmt, name, call, helper)
        if helper is not None and call.args and isinstance(call.args[0], ast.Name) and \
                self.a.kind(call.args[0]).cls == "tuple":
            return self.tuple_variable_argument(stmt, name, call, helper)
        elements = [e for arg in call.args if isinstance(arg, ast.Tuple) for e in arg.elts]
        active_args = [arg for arg in list(call.args) + elements if self.a.is_active(arg)] + \
                      [kw.value for kw in call.keywords if self.a.is_active(kw.value)]
        if not active_args:
            return []
        label = ast.unparse(call.func)
        if any(isinstance(arg, ast.Tuple) and any(self.a.is_active(e) for e in arg.elts)
               for arg in call.args):
            raise self.fsrc.error(stmt, f"`{label}` receives a tuple of values that depend on the "
                                  "differentiated inputs, and srcgrad has no derivative rule for that",
                                  "tuple argument")
        rule = rules.lookup(callee) if not isinstance(callee, str) else None
        if callee is np.dot and not all(self.a.kind(arg).is_array for arg in call.args):
            rule = rules.lookup(operator.mul)       # np.dot with a scalar is a product
        if isinstance(rule, rules.ZeroDerivative) or _in(callee, rules.CREATION):
            return []     # the result does not depend on the argument's values
        if rule is not None:
            keywords = {kw.arg: kw.value for kw in call.keywords}
            return self.apply_rule(rule, name, list(call.args), keywords, stmt, label)
        if _in(callee, rules.NON_DIFFERENTIABLE):
            raise self.fsrc.error(stmt, f"`{label}(...)` has no derivative, but its argument "
                                  f"`{ast.unparse(active_args[0])}` depends on the differentiated "
                                  "inputs", "non-differentiable call")
        # Array arguments whose adjoint is an accumulator here (zeroed once, added to) are handed
        # to the helper's adjoint, which adds into them in place: no gradient arrays allocated
        # and added per call (a helper called in a loop with whole arrays and indices).
        names = [arg.id for arg in call.args if isinstance(arg, ast.Name)]
        in_place = tuple(k for k, arg in enumerate(call.args)
                         if HELPER_ADJOINTS_IN_PLACE and isinstance(arg, ast.Name) and self.a.is_active(arg)
                         and self.a.kind(arg).is_array and self.a.kind(arg).is_float
                         and arg.id not in self.single_use and names.count(arg.id) == 1)
        adjoint = self.helper_adjoint(callee, [self.a.kind(arg) for arg in call.args], stmt,
                                      tuple(self.a.is_active(arg) for arg in call.args), in_place)
        if adjoint is None:
            raise SrcgradError(
                f"{self.fsrc.filename}:{stmt.lineno}: no derivative rule for `{label}`. Register one "
                f"with @srcgrad.register_adjoint({label}) on a template such as\n"
                f"    def {label.split('.')[-1]}_adjoint(result, x):\n        d[x] += d[result] * ...")
        adjoint, wrt_positions, in_place, split, borrows = adjoint
        grads = self.names.fresh("grads")
        result_kind = self.a.kinds.get(name, K.FLOAT)
        if split is not None and SPLIT_HELPER_CALLS and self.loop_tapes and self.checkpoint is None \
                and result_kind.cls == "float" and stmt.value is call:
            return self.split_call(stmt, name, call, split, wrt_positions, in_place)
        if result_kind.cls == "tuple":      # the seed of a tuple result: one adjoint per component
            seed = ast.Tuple(elts=[name_load(f"{self.adj(name)}_{k}") for k in range(len(result_kind.items))],
                             ctx=ast.Load())
        else:
            seed = name_load(self.adj(name))
        accumulators = [name_load(self.adj(call.args[k].id)) for k in in_place]
        stacks = [name_load(n) for n in N.HELPER_FLOAT_STACK + N.HELPER_INT_STACK] if borrows else []
        helper_call = ast.Call(func=name_load(adjoint), args=list(call.args) + [seed] + accumulators + stacks,
                               keywords=[])
        out = []
        if in_place:
            out.append(Comment(f"{adjoint} adds into {', '.join(a.id for a in accumulators)} in place "
                               "(no gradient arrays per call)", stmt.lineno))
        if borrows:
            # its tapes: the caller's stacks, above their top (it pops what it pushes): no tape
            # allocated per call; a tape it grows comes back
            self.split_stacks = True
            out.append(Comment(f"{adjoint} borrows the stacks _ftape_h, _itape_h for its tapes "
                               "(no tape allocated per call)", stmt.lineno))
            result = self.names.fresh("adjoint")
            out.append(assign(result, helper_call, stmt))
            helper_call = name_load(result)
            for k, stack in ((2, N.HELPER_FLOAT_STACK[0]), (3, N.HELPER_INT_STACK[0])):
                out.append(assign(stack, ast.Subscript(value=name_load(result), slice=ast.Constant(k),
                                                       ctx=ast.Load()), stmt))
        out.append(assign(grads, ast.Subscript(value=helper_call, slice=ast.Constant(1), ctx=ast.Load()),
                          stmt))
        return out + self.helper_gradients(grads, call, wrt_positions, in_place, stmt)

    def helper_gradients(self, grads, call, wrt_positions, in_place, stmt):
        """The statements that hand a helper adjoint's gradients (the tuple named ``grads``) to the
        caller's arguments: rebound for arrays it added into in place, accumulated otherwise."""
        out = []
        for position, k in enumerate(wrt_positions):
            arg = call.args[k]
            part = ast.Subscript(value=name_load(grads), slice=ast.Constant(position), ctx=ast.Load())
            if k in in_place:
                # the same array comes back (rebinding keeps backends that copy on `+=` right)
                out.append(assign(self.adj(arg.id), part, stmt))
            elif self.a.is_active(arg):
                out += self.accumulate(arg, part, self.a.kind(arg), False, stmt)
        return out

    def split_call(self, stmt, name, call, split, wrt_positions, in_place):
        """A helper call in split mode (split_calls.py): the forward sweep records, the reverse
        sweep pops and runs the helper's reverse sweep only."""
        record, reverse = split
        stacks = [name_load(n) for n in N.HELPER_FLOAT_STACK + N.HELPER_INT_STACK]
        self.split_stacks = True
        recorded = self.names.fresh("recorded")
        forward = [Comment(f"{record} records {ast.unparse(call.func)}'s tape on _ftape_h, _itape_h for "
                           f"{reverse} (the helper's forward sweep runs once)", stmt.lineno),
                   assign(recorded, ast.Call(func=name_load(record), args=list(call.args) + stacks,
                                             keywords=[]), stmt)]
        for k, target in enumerate((name,) + N.HELPER_FLOAT_STACK + N.HELPER_INT_STACK):
            forward.append(assign(target, ast.Subscript(value=name_load(recorded), slice=ast.Constant(k),
                                                        ctx=ast.Load()), stmt))
        self.split_forward[id(stmt)] = forward
        accumulators = [name_load(self.adj(call.args[k].id)) for k in in_place]
        popped = self.names.fresh("popped")
        grads = self.names.fresh("grads")
        out = [Comment(f"{reverse} pops {record}'s tape and runs {ast.unparse(call.func)}'s reverse sweep"
                       + (f"; it adds into {', '.join(a.id for a in accumulators)} in place" if in_place else ""),
                       stmt.lineno),
               assign(popped, ast.Call(func=name_load(reverse),
                                       args=list(call.args) + [name_load(self.adj(name))] + accumulators
                                       + stacks, keywords=[]), stmt),
               assign(grads, ast.Subscript(value=name_load(popped), slice=ast.Constant(0), ctx=ast.Load()), stmt),
               assign(N.HELPER_FLOAT_STACK[1], ast.Subscript(value=name_load(popped), slice=ast.Constant(1),
                                                             ctx=ast.Load()), stmt),
               assign(N.HELPER_INT_STACK[1], ast.Subscript(value=name_load(popped), slice=ast.Constant(2),
                                                           ctx=ast.Load()), stmt)]
        return out + self.helper_gradients(grads, call, wrt_positions, in_place, stmt)

    def tuple_argument(self, stmt, name, call, helper, axis=None):
        """np.concatenate((a, b), axis) / np.stack(...): each active part gets its slice back."""
        parts = call.args[0]
        axis = axis if axis is not None else call.args[1] if len(call.args) > 1 else next(
            (kw.value for kw in call.keywords if kw.arg == "axis"), ast.Constant(0))
        out = []
        for k, element in enumerate(parts.elts):
            if not self.a.is_active(element):
                continue
            args = [name_load(self.adj(name)), ast.Constant(k)]
            if helper != "stack_part":        # the other helpers need the parts' shapes
                args.append(copy.deepcopy(parts))
            args.append(copy.deepcopy(axis))
            part = ast.Call(func=name_load(helper), args=args, keywords=[])
            out += self.accumulate(element, part, self.a.kind(element), False, stmt, fresh=False)
        return out

    def tuple_variable_argument(self, stmt, name, call, helper, axis=None):
        """np.concatenate(parts) / np.stack(parts) of a tuple (or list) variable: component k's
        adjoint (``_adj_parts_k``) gets its slice back."""
        parts = call.args[0]
        if not self.a.is_active(parts):
            return []
        axis = axis if axis is not None else call.args[1] if len(call.args) > 1 else next(
            (kw.value for kw in call.keywords if kw.arg == "axis"), ast.Constant(0))
        out = []
        for k, item in enumerate(self.a.kind(parts).items):
            if not item.is_float:
                continue
            args = [name_load(self.adj(name)), ast.Constant(k)]
            if helper == "concat_part":
                args.append(name_load(parts.id))
            args.append(copy.deepcopy(axis))
            part = ast.Call(func=name_load(helper), args=args, keywords=[])
            target = name_store(f"{self.adj(parts.id)}_{k}")
            out.append(ast.copy_location(ast.AugAssign(target=target, op=ast.Add(), value=part), stmt))
        return out

    def apply_rule(self, rule, name, args, keywords, stmt, label):
        if rule is None:
            raise self.fsrc.error(stmt, f"no derivative rule for `{label}`")
        bound = rule.bind(name_load(name), args, keywords)
        result_kind = self.a.kinds.get(name, K.FLOAT)
        local = {}
        out = []
        parts = []          # (atom, contribution, sign) of each d[param] line, in template order
        for line in rule.body:
            if isinstance(line, ast.Assign):
                fresh = self.names.fresh("r")
                local[line.targets[0].id] = fresh
                out.append(assign(fresh, self.substitute(line.value, bound, local, name), stmt))
                continue
            param = line.target.slice.id
            atom = bound.get(param)
            if atom is None or not self.a.is_active(atom):
                continue
            contribution = self.substitute(line.value, bound, local, name)
            sign = -1 if isinstance(line.op, ast.Sub) else 1
            parts.append((atom, contribution, sign))
        for atom, contribution, sign in _merge_same_operand(parts):
            out += self.accumulate(atom, contribution, result_kind, rule.elementwise, stmt, sign=sign,
                                   final_adjoint=None if self.a.overwritten(name) else self.adj(name))
        # drop template temporaries no surviving line reads
        used = {n for s in out for n in operand_names(s)}
        return [s for s in out if not (isinstance(s, ast.Assign) and isinstance(s.targets[0], ast.Name)
                                       and s.targets[0].id in local.values() and s.targets[0].id not in used)]

    def substitute(self, expr, bound, local, result_name):
        expr = copy.deepcopy(expr)

        class Sub(ast.NodeTransformer):
            def visit_Subscript(inner, node):
                if isinstance(node.value, ast.Name) and node.value.id == "d":
                    atom = bound[node.slice.id]
                    kind = self.a.kind(atom)
                    if kind.cls == "tuple":       # a tuple result: the tuple of its parts' adjoints
                        return ast.Tuple(elts=[name_load(f"{self.adj(atom.id)}_{k}")
                                               for k in range(len(kind.items))], ctx=ast.Load())
                    return name_load(self.adj(atom.id))
                inner.generic_visit(node)
                return node

            def visit_Name(inner, node):
                if node.id in bound:
                    return copy.deepcopy(bound[node.id])
                if node.id in local:
                    return name_load(local[node.id])
                return node
        return simplify(Sub().visit(expr))

    def accumulate(self, atom, contribution, contribution_kind, elementwise, stmt, sign=1, fresh=True,
                   final_adjoint=None):
        """``d[atom] += contribution``, summing broadcast axes back to atom's shape.

        ``final_adjoint`` names the result's adjoint when nothing writes it after this statement
        (its variable is assigned once, outside loops): sharing that array is then safe."""
        name = atom.id
        target_kind = self.a.kind(atom)
        # a bare adjoint (or a view of one) must not become another variable's adjoint by aliasing
        # (never for a parameter: each returned gradient must be an array of its own)
        shared = isinstance(contribution, ast.Name) and contribution.id == final_adjoint \
            and name not in self.params
        fresh = fresh and (shared or not isinstance(contribution, (ast.Name, ast.Attribute, ast.Subscript)))
        if elementwise and contribution_kind.is_array:
            if not target_kind.is_array:
                contribution = ast.Call(func=ast.Attribute(value=name_load("np"), attr="sum", ctx=ast.Load()),
                                        args=[contribution], keywords=[])
            else:
                contribution = ast.Call(func=name_load("unbroadcast"), args=[contribution, name_load(name)],
                                        keywords=[])
        adj = self.adj(name)
        if name in self.single_use and (fresh or not target_kind.is_array):
            if sign < 0:
                contribution = ast.UnaryOp(op=ast.USub(), operand=contribution)
            return [assign(adj, contribution, stmt)]
        op = ast.Add() if sign > 0 else ast.Sub()
        if name in self.single_use:        # an array view: copy it before it is reused
            self.single_use.discard(name)
        return [ast.copy_location(ast.AugAssign(target=name_store(adj), op=op, value=contribution), stmt)]


def _merge_same_operand(parts):
    """``x * x`` and ``x + x``: the two template lines give ``x`` the same contribution twice; add
    it once, doubled, so the adjoint is one pass over the array (and one contribution, which lets
    a single-use ``x`` assign its adjoint instead of zeroing and accumulating it)."""
    merged = []
    for atom, contribution, sign in parts:
        twin = next((k for k, (a, c, s) in enumerate(merged)
                     if isinstance(a, ast.Name) and isinstance(atom, ast.Name) and a.id == atom.id
                     and s == sign and ast.dump(c) == ast.dump(contribution)), None)
        if twin is None:
            merged.append((atom, contribution, sign))
        else:
            if isinstance(contribution, ast.BinOp) and isinstance(contribution.op, ast.Mult):
                # 2.0 * d[r] * x rather than 2.0 * (d[r] * x)
                contribution.left = ast.BinOp(left=ast.Constant(2.0), op=ast.Mult(), right=contribution.left)
                merged[twin] = (atom, contribution, sign)
            else:
                merged[twin] = (atom, ast.BinOp(left=ast.Constant(2.0), op=ast.Mult(), right=contribution),
                                sign)
    return merged


def _same_operand_binop(value):
    """``x * x`` / ``x + x``: one use of x for the adjoint (see :func:`_merge_same_operand`)."""
    return isinstance(value, ast.BinOp) and isinstance(value.op, (ast.Mult, ast.Add)) and \
        isinstance(value.left, ast.Name) and isinstance(value.right, ast.Name) and \
        value.left.id == value.right.id


def _hashable(obj):
    try:
        hash(obj)
        return True
    except TypeError:
        return False


def _in(obj, collection):
    try:
        return obj in collection
    except TypeError:
        return False


def reversed_range(start, stop, step):
    """``range`` visiting the same values as ``range(start, stop, step)``, backwards."""
    def const(node, value):
        return isinstance(node, ast.Constant) and node.value == value
    if const(step, 1):
        last = simplify(ast.BinOp(left=copy.deepcopy(stop), op=ast.Sub(), right=ast.Constant(1)))
        end = simplify(ast.BinOp(left=copy.deepcopy(start), op=ast.Sub(), right=ast.Constant(1)))
        args = [last, end, ast.Constant(-1)]
    else:
        trips = ast.Call(func=name_load("range_length"), args=[copy.deepcopy(start), copy.deepcopy(stop),
                                                               copy.deepcopy(step)], keywords=[])
        last = ast.BinOp(left=copy.deepcopy(start), op=ast.Add(),
                         right=ast.BinOp(left=ast.BinOp(left=trips, op=ast.Sub(), right=ast.Constant(1)),
                                         op=ast.Mult(), right=copy.deepcopy(step)))
        end = ast.BinOp(left=copy.deepcopy(start), op=ast.Sub(), right=copy.deepcopy(step))
        neg = simplify(ast.UnaryOp(op=ast.USub(), operand=copy.deepcopy(step)))
        args = [last, end, neg]
    return ast.Call(func=name_load("range"), args=args, keywords=[])


