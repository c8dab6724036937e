"""Drive the pipeline for one differentiated function and the helpers it calls.

``build_module(func, kinds, wrt, target)`` runs parse → check → normalize → analyse → transform →
codegen for ``func`` and, recursively, for every plain Python helper it calls, and returns the
generated module's source. Each stage is a separate module; :func:`srcgrad.debugging.inspect_stage`
shows the code after any of them (``srcgrad.inspect_stage(f, "normalize")``).
"""
import ast
import copy
import inspect
import types

from . import kinds as K
from .analyse import analyse
from .check import check_function
from .view_writes import refuse_array_writes, refuse_parameter_writes
from .errors import SrcgradError
from .normalize import normalize
from .parse import SourceFunction, read_function, unwrap_function
from .placeholders import Comment
from .static import is_library_function
from .transform import ReverseTransformer
from . import transform
from . import zero_adjoints
from . import adjoint_swaps
from . import dropped_zeroes
from . import adjoint_merges
from . import loop_splits
from . import reduction_lanes
from . import deferred_outer
from . import split_calls
from . import inline
from . import hoist
from . import forward_order
from . import unsigned_index
from . import nonneg_index
from . import row_forwarding
from . import codegen
from . import helpers as _helpers
from . import naming as N
from ._version import __version__
from . import rules
from .lower import cast_float_literals, lower
from .backends import backend as target_backend


def is_helper(callee):
    """A user function whose source srcgrad transforms. NumPy/SciPy functions written in Python
    (``np.eye``, ``scipy.special.logsumexp``) are library calls: they need a derivative rule."""
    if isinstance(callee, SourceFunction):
        return True
    if not (isinstance(callee, types.FunctionType) or (hasattr(callee, "py_func") and
                                                       isinstance(callee.py_func, types.FunctionType))):
        return False
    # srcgrad's own runtime helpers in generated code (hvp differentiates the jvp module, which
    # calls _range_continues) are plain Python: transformed like user helpers
    return not is_library_function(callee) or getattr(callee, "__module__", None) == "srcgrad.runtime"


def _differentiable(unit, kinds):
    """The parameters a helper's adjoint differentiates: its float ones, except the hidden
    parameters static.py added for module data and closure variables (constants of the call)."""
    hidden = getattr(unit.func, "hidden", ())
    return [p for p, k in zip(unit.params, kinds) if k.is_float and p not in hidden]


class FunctionUnit:
    """One user function after parse/check/normalize (independent of argument kinds)."""

    def __init__(self, func, lower_products=True):
        self.func = unwrap_function(func)
        self.fsrc = read_function(self.func)
        self.view_writes = check_function(self.fsrc)    # `z = x; z += y`: refused if z is an array
        self.fsrc_params = [a.arg for a in self.fsrc.tree.args.args]   # before normalize renames
        self.params, self.body, self.names = normalize(self.fsrc, lower_products)


_RUNTIME_NAMES = frozenset(_helpers.names())

class ModuleBuilder:
    def __init__(self, target, precision="float64", checkpoint=None):
        self.target = target
        self.checkpoint = checkpoint    # None, K or "auto": the root function's loops (checkpoint.py)
        self.checkpoint_root = None
        self.seed_at_end = False       # build_module's option (transform.SEED_AT_END)
        self.tape_transcendentals = False   # build_module's option (transform.TAPE_TRANSCENDENTALS)
        self.backend = target_backend(target)
        self.precision = precision
        self.units = {}          # func -> FunctionUnit
        self.primals = {}        # func -> generated primal name
        self.adjoints = {}       # (func, kinds) -> (adjoint name, result kind)
        self.splits = {}         # helper adjoint name -> (record, reverse) names (split_calls.py)
        self.borrowing = set()   # helper adjoints that take their tapes from the caller
        self.analyses = {}       # (func, kinds) -> (Analysis, result kind)
        self.in_progress = set()
        self.sources = []        # generated function sources, in definition order
        self.line_tables = []    # per source: (user function, {text line index: (user line, sweep)})
        self.user_sources = {}   # user function -> (file name, {line: source text})
        self.used_names = set()
        self.externals = {}      # local name -> qualified name of a user function with a rule
        self.inline = False      # small helpers written into their callers (inline.py; build_module)
        self.unit_in_progress = set()

    def unit(self, func):
        func = unwrap_function(func)
        if func not in self.units:
            if func in self.unit_in_progress:   # a recursive call stays a call (its error comes later)
                raise SrcgradError(f"{func.__name__} calls itself")
            self.unit_in_progress.add(func)
            try:
                unit = FunctionUnit(func, self.backend.lower_products)
                if self.inline and inline.INLINE_HELPERS:
                    unit.fsrc, unit.body = inline.inline_helpers(unit.fsrc, unit.params, unit.body,
                                                                 unit.names, self.unit)
                # float64 tables only: a float32 program keeps its calls where they are
                if self.inline and hoist.HOIST_INVARIANTS and self.precision == "float64":
                    unit.body, notes = hoist.hoist_invariants(unit.fsrc, unit.params, unit.body, unit.names)
                    if notes:
                        unit.fsrc = inline.with_line_notes(unit.fsrc, notes)
            finally:
                self.unit_in_progress.discard(func)
            self.units[func] = unit
        return self.units[func]

    def unique(self, name):
        base, count = name, 1
        # not a runtime helper's name either: the module imports those (a user helper `logsumexp`
        # must not get an adjoint named like SciPy logsumexp's runtime helper `logsumexp_adjoint`)
        while name in self.used_names or name in _RUNTIME_NAMES:
            count += 1
            name = f"{base}_{count}"
        self.used_names.add(name)
        return name

    # -- primal ----------------------------------------------------------------------------------
    def primal(self, func, analysis=None):
        unit = self.unit(func)
        if unit.func not in self.primals:
            name = unit.func.__name__
            if name in self.used_names:
                raise SrcgradError(f"two different functions named {name!r} are called; rename one")
            self.used_names.add(name)
            self.primals[unit.func] = name
            body = self.finish(copy.deepcopy(unit.body), analysis)
            self.backend.check(unit)
            (body,) = self.backend.lower([body], analysis)
            for node in ast.walk(ast.Module(body=unit.body, type_ignores=[])):
                callee = getattr(node, "callee", None)
                if isinstance(node, ast.Call) and is_helper(callee) and rules.lookup(callee) is not None \
                        and rules.library_helper(callee) is None \
                        and getattr(callee, "__module__", None) != "srcgrad.runtime":   # SciPy's run as runtime helpers; the backend's own
                    self.externals[callee.__name__] = rules.external_name(callee)
            self.add_source(unit, *codegen.function_source_and_lines(
                name, unit.params, body,
                docstring=f"{name} as written in {unit.fsrc.filename}:{unit.fsrc.firstline}, "
                          "one operation per line.", user_lines=user_lines(unit.fsrc)))
        return self.primals[unit.func]

    def add_source(self, unit, text, table):
        """Record a generated function and the user lines its generated lines come from."""
        owner = unit.func.__name__
        self.sources.append(text)
        self.line_tables.append((owner, table))
        _, known = self.user_sources.setdefault(owner, (unit.fsrc.filename, {}))
        for user_line, _sweep in table.values():
            known.setdefault(user_line, unit.fsrc.line_text(user_line))

    def finish(self, stmts, analysis):
        """Code-generation lowering of statements (and float32 literals when working in float32)."""
        stmts = lower(stmts, analysis)
        if self.precision == "float32":
            stmts = cast_float_literals(stmts, analysis)
        return stmts

    # -- kinds of helper calls -------------------------------------------------------------------
    def helper_kind(self, caller_unit):
        def result_kind(callee, arg_kinds, node, stmt):
            sampling = rules.random_sampling_message(callee)
            if sampling is not None:
                raise caller_unit.fsrc.error(stmt, sampling, "random sampling")
            if not is_helper(callee):
                label = ast.unparse(node.func)
                raise caller_unit.fsrc.error(
                    stmt, f"`{label}` is not supported: no derivative rule is registered for it and it "
                    "is not a plain Python function srcgrad could transform "
                    f"(register one with @srcgrad.register_adjoint({label}))", "unknown call")
            analysis, kind = self.analysis_of(callee, tuple(arg_kinds))
            # a helper writing into (a view of) its array parameter changes the caller's array
            callee_unit = self.unit(callee)
            refuse_parameter_writes(callee_unit.view_writes, callee_unit.fsrc_params, tuple(arg_kinds))
            self.primal(callee, analysis)      # the forward sweep calls the helper's primal
            return kind
        return result_kind

    def analysis_of(self, func, kinds):
        unit = self.unit(func)
        key = (unit.func, kinds)
        if key in self.in_progress:
            raise unit.fsrc.error(unit.fsrc.tree, f"recursion: {unit.func.__name__} calls itself "
                                  "(directly or through helpers); srcgrad needs loops instead", "recursion")
        cached = self.analyses.get(key)
        if cached is not None:
            return cached
        self.in_progress.add(key)
        try:
            if len(kinds) != len(unit.params):
                raise SrcgradError(f"{unit.func.__name__} takes {len(unit.params)} arguments, "
                                   f"called with {len(kinds)}")
            wrt = _differentiable(unit, kinds)
            analysis = analyse(unit.fsrc, unit.params, unit.body, kinds, wrt, self.helper_kind(unit))
            refuse_array_writes(unit.view_writes, analysis.kinds, unit.names.generated)
            result_kind = analysis.kind(unit.body[-1].value)
        finally:
            self.in_progress.discard(key)
        self.analyses[key] = (analysis, result_kind)
        return analysis, result_kind

    # -- adjoints --------------------------------------------------------------------------------
    def helper_adjoint(self, caller_unit):
        def adjoint(callee, arg_kinds, stmt, active=None, in_place=()):
            if not is_helper(callee):
                return None
            unit = self.unit(callee)
            for node in ast.walk(ast.Module(body=unit.body, type_ignores=[])):
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript) and \
                        node.targets[0].value.id in unit.params:
                    raise unit.fsrc.error(node, f"helper {unit.func.__name__} writes into its argument "
                                          f"{node.targets[0].value.id!r}; helpers called from "
                                          "differentiated code must not modify their array arguments",
                                          "argument mutation")
            kinds = tuple(arg_kinds)
            wrt = _differentiable(unit, kinds)
            if active is not None:      # only the parameters whose argument is active in the caller
                wrt = [p for p in wrt if active[unit.params.index(p)]]
            analysis, _ = self.analysis_of(callee, kinds)
            # a parameter the helper assigns has its adjoint reset: it cannot accumulate in place
            in_place = tuple(unit.params[k] for k in in_place
                             if unit.params[k] in wrt and not analysis.overwritten(unit.params[k]))
            name = self.adjoint(callee, kinds, wrt, in_place)
            return (name, [unit.params.index(p) for p in wrt],
                    tuple(unit.params.index(p) for p in in_place), self.splits.get(name),
                    name in self.borrowing)
        return adjoint

    def adjoint(self, func, kinds, wrt, in_place=()):
        """The adjoint of ``func`` w.r.t. ``wrt``; ``in_place``: parameters whose adjoint arrays
        the caller passes after ``_seed`` (added into, then returned among the gradients)."""
        unit = self.unit(func)
        key = (unit.func, kinds, tuple(wrt), tuple(in_place))
        if key in self.adjoints:
            return self.adjoints[key]
        analysis, _ = self.analysis_of(func, kinds)
        self.primal(func, analysis)
        if tuple(wrt) != tuple(_differentiable(unit, kinds)):
            analysis = analyse(unit.fsrc, unit.params, unit.body, kinds, wrt, self.helper_kind(unit))
        name = self.unique(f"{unit.func.__name__}_adjoint")
        self.adjoints[key] = name
        transformer = ReverseTransformer(unit.fsrc, unit.params, unit.body, analysis, unit.names,
                                         self.helper_adjoint(unit), in_place)
        transformer.body = copy.deepcopy(unit.body)
        transformer.precision = self.precision
        transformer.loop_tapes = self.target != "cuda"    # device code has fixed-size tapes
        if unit.func is self.checkpoint_root:
            transformer.checkpoint = self.checkpoint
        # seed at the end (transform.SEED_AT_END): the function being differentiated, a float
        # result, and gradients that are floats or arrays it owns (nothing passed in to add into)
        scaled = [p for p in wrt if p in analysis.active]
        transformer.tape_transcendentals = self.tape_transcendentals
        transformer.seed_at_end = (
            self.seed_at_end and unit.func is self.checkpoint_root and not in_place
            and isinstance(unit.body[-1].value, ast.Name)
            and analysis.kinds.get(unit.body[-1].value.id, K.FLOAT).cls == "float"
            and all(analysis.kinds[p].cls == "float" or analysis.kinds[p].is_array for p in scaled))
        forward, reverse, inits, result = transformer.run(wrt)
        stmts = []
        # a helper's adjoint borrows its tapes from the caller (transform.HELPERS_BORROW_TAPES)
        borrow = transform.HELPERS_BORROW_TAPES and bool(transformer.used_tapes) and \
            unit.func is not self.checkpoint_root and self.target != "cuda"
        for tape, pos, _push in sorted(transformer.used_tapes) if not borrow else ():
            maker = "new_int_tape" if tape != N.FLOAT_TAPE_NAME else \
                "new_float32_tape" if self.precision == "float32" else "new_float_tape"
            stmts.append(ast.parse(f"{tape} = {maker}()").body[0])
            stmts.append(ast.parse(f"{pos} = 0").body[0])
        if transformer.split_stacks:        # the stacks its split helper calls record on
            for (tape, pos), maker in ((N.HELPER_FLOAT_STACK, "new_float32_tape" if self.precision == "float32"
                                        else "new_float_tape"), (N.HELPER_INT_STACK, "new_int_tape")):
                stmts.append(ast.parse(f"{tape} = {maker}()").body[0])
                stmts.append(ast.parse(f"{pos} = 0").body[0])
        # adjoints start at zero (temporaries used once, right beside their definition, are
        # assigned directly by their single use instead)
        zero_inits = []
        # a name assigned only inside if-branches (e.g. before a helper's early `return a, b`) may
        # be unbound at the end of the forward sweep: its adjoint starts at zero right after each
        # assignment of it instead, in the forward sweep (its reverse code runs on that path only)
        branch_only = _assigned_only_in_branches(unit.body, unit.params)
        late = {}
        for var in sorted(analysis.active, key=_natural):
            if var in transformer.single_use or var in in_place:
                continue
            kind = analysis.kinds.get(var, K.FLOAT)
            adj_inits = late.setdefault(var, []) if var in branch_only else zero_inits
            if kind.cls == "tuple":      # one adjoint per component: _adj_t_0, _adj_t_1, ...
                for k, item in enumerate(kind.items):
                    value = f"np.zeros_like({var}[{k}])" if item.is_array else "0.0"
                    adj_inits.append(ast.parse(f"{transformer.adj(var)}_{k} = {value}").body[0])
                continue
            value = f"np.zeros_like({var})" if kind.is_array else "0.0"
            adj_inits.append(ast.parse(f"{transformer.adj(var)} = {value}").body[0])
        forward = _init_after_assignments(forward, late, zero_inits)
        stmts += self.finish(inits, analysis)
        stmts += self.finish(forward, analysis)
        stmts.append(ast.parse(f"{N.VALUE} = 0").body[0])
        stmts[-1].value = result
        grads = []
        seeded = []         # the seed at the end: `_seeded1 = _adj_x if _seed == 1.0 else ...`
        for param in wrt:
            kind = analysis.kinds[param]
            if param in analysis.active or param in in_place:   # in place: the caller's array
                grads.append(transformer.adj(param))
                if transformer.seed_at_end and param in scaled:
                    # a new name (the adjoint stays bound once, for the cpu fuser), a new array
                    # (not `*=`: two gradients may be one array)
                    scaled_name = unit.names.fresh("seeded")
                    expr = N.seed_scaled(grads[-1], kind.is_array, self.precision == "float32")
                    seeded.append(ast.parse(f"{scaled_name} = {expr}").body[0])
                    grads[-1] = scaled_name
            else:
                grads.append(f"np.zeros_like({param})" if kind.is_array else "0.0")
        tapes_back = f", {N.FLOAT_TAPE_NAME}, {N.INT_TAPE_NAME}" if borrow else ""
        tail = [ast.parse(f"return {N.VALUE}, ({', '.join(grads)}{',' if len(grads) == 1 else ''}){tapes_back}").body[0]]
        if seeded:
            tail = [Comment("seed at the end: the reverse sweep ran with the result's adjoint 1.0 "
                            f"(constants fold in the loops); the gradients are scaled by {N.SEED} here",
                            unit.body[-1].lineno)] + seeded + tail
        reverse_body = self.finish(zero_inits, analysis) + self.finish(reverse, analysis)
        if transform.ASSIGN_ZERO_ADJOINTS:
            scalars = {transformer.adj(var) for var in analysis.active
                       if analysis.kinds.get(var, K.FLOAT).cls == "float"}
            reverse_body = zero_adjoints.assign_first_contributions(reverse_body, scalars)
        tail_stmts = self.finish(tail, analysis)
        if transform.SWAP_ADJOINTS and self.target != "cuda":    # (adjoint_swaps.py)
            adjoint_kinds = {transformer.adj(var): (var, analysis.kinds[var]) for var in analysis.active
                             if var in analysis.kinds}
            reverse_body = adjoint_swaps.swap_copied_adjoints(
                stmts, reverse_body, tail_stmts, adjoint_kinds,
                set(unit.params) | {N.SEED} | {transformer.adj(p) for p in in_place})
        if self.target != "cuda":    # (adjoint_merges.py: after first contributions, so `=` then `+=` merge)
            reverse_body = adjoint_merges.merge_contributions(
                reverse_body, {transformer.adj(p) for p in in_place})
        if self.target != "cuda":    # (loop_splits.py, reduction_lanes.py: after the merges)
            scalars = {transformer.adj(var) for var in analysis.active
                       if analysis.kinds.get(var, K.FLOAT).cls == "float"}
            reverse_body = loop_splits.split_loops(reverse_body, scalars, tail_stmts)
            if self.precision == "float64":
                reverse_body = reduction_lanes.add_lanes(reverse_body, scalars, tail_stmts,
                                                         {n.id for s in stmts for n in ast.walk(s)
                                                          if isinstance(n, ast.Name)})
            # (deferred_outer.py: a weight adjoint a time loop only adds outer products into)
            dims = {}
            for var, kind in analysis.kinds.items():
                if getattr(kind, "is_array", False):
                    dims[var] = dims[transformer.adj(var)] = kind.ndim
            reverse_body = deferred_outer.defer(reverse_body, tail_stmts, forward=stmts, ndim=dims.get)
            # (dropped_zeroes.py: after the splits, the resets of a swapped adjoint the next step
            # assigns first)
            reverse_body = dropped_zeroes.drop_zeroes(reverse_body, unit.names.fresh)
        if forward_order.FORWARD_ORDER:
            reverse_body = forward_order.forward_order(reverse_body, tail_stmts)
        if unsigned_index.UNSIGNED_INDEX and self.target == "cpu":
            arrays = {n for n, kind in analysis.kinds.items() if getattr(kind, "is_array", False)}
            arrays |= {transformer.adj(n) for n in arrays}
            taken = {node.id for stmt in stmts + reverse_body + tail_stmts for node in ast.walk(stmt)
                     if isinstance(node, ast.Name)} | set(unit.params)
            reverse_body = unsigned_index.unsigned_index(reverse_body, arrays.__contains__, taken)
            if nonneg_index.NONNEG_INDEX:     # (nonneg_index.py: computed indices such as H + j)
                stmts, reverse_body, tail_stmts = nonneg_index.nonneg_index(
                    [stmts, reverse_body, tail_stmts], arrays.__contains__, set(unit.params),
                    unit.body[0].lineno if unit.body else 0)
        if row_forwarding.ROW_FORWARDING and self.target != "cuda":    # (row_forwarding.py)
            stmts = row_forwarding.forward_rows(stmts, stmts + reverse_body + tail_stmts,
                                                analysis.kinds, unit.names, unit.params)
        # the target's own rewrites (cpu: matrix products, chains of array statements as loop nests)
        stmts, reverse_body, tail_stmts = self.backend.lower([stmts, reverse_body, tail_stmts], analysis)
        body = stmts + reverse_body + tail_stmts
        reverse_span = (len(stmts), len(stmts) + len(reverse_body))
        params = unit.params + [N.SEED] + [transformer.adj(p) for p in in_place]
        if borrow:
            params += [N.FLOAT_TAPE_NAME, N.FLOAT_POSITION, N.INT_TAPE_NAME, N.INT_POSITION]
            self.borrowing.add(name)
        wrt_text = ", ".join(wrt)
        doc = (f"Value of {unit.func.__name__} and its adjoint w.r.t. ({wrt_text}), scaled by {N.SEED}.\n\n"
               f"    Forward sweep: the primal code, saving overwritten values the reverse sweep needs.\n"
               f"    Reverse sweep: adjoints ({N.adjoint_name('<name>')}) flow from the result back to the inputs.\n    ")
        if borrow:
            doc += ("\n    Tapes: the caller's, from the positions it passes (this call pops what it pushes; "
                    "a tape it grows is returned after the gradients).\n    ")
        self.add_source(unit, *codegen.function_source_and_lines(
            name, params, body, docstring=doc, user_lines=user_lines(unit.fsrc), reverse=reverse_span))
        if transform.SPLIT_HELPER_CALLS and unit.func is not self.checkpoint_root and self.target != "cuda":
            self.split(unit, name, stmts, reverse_body, grads, analysis,
                       [transformer.adj(p) for p in in_place])
        return name

    def split(self, unit, name, forward, reverse, grads, analysis, in_place_adjoints):
        """The helper's adjoint as a record and a reverse function (split_calls.py), when it splits."""
        zero = ast.parse("np.float32(0.0)" if self.precision == "float32" else "0.0", mode="eval").body
        parts = split_calls.split_functions(unit.params, forward, reverse, grads, analysis.kinds,
                                            in_place_adjoints, zero)
        if parts is None:
            return
        record_params, record_body, reverse_params, reverse_body = parts
        fname = unit.func.__name__
        record, backward = self.unique(f"{fname}_record"), self.unique(f"{fname}_reverse")
        lines = user_lines(unit.fsrc)
        self.add_source(unit, *codegen.function_source_and_lines(
            record, record_params, record_body, user_lines=lines, reverse=(len(record_body), len(record_body)),
            docstring=f"The forward sweep of {name}: the value of {fname}; pushes what {backward} reads."))
        self.add_source(unit, *codegen.function_source_and_lines(
            backward, reverse_params, reverse_body, user_lines=lines, reverse=(0, len(reverse_body)),
            docstring=f"The reverse sweep of {name}: pops what {record} pushed; returns (gradients, "
                      "float stack top, int stack top)."))
        self.splits[name] = (record, backward)


def user_lines(fsrc):
    """The ``(first, last)`` line numbers of the function's body in its file."""
    last = fsrc.firstline + len(fsrc.source.splitlines()) - 1
    first = fsrc.tree.lineno + 1 if last > fsrc.tree.lineno else fsrc.tree.lineno
    return first, last


def _natural(name):
    return (name.startswith("_"), name)


def build_module(func, kinds, wrt_names, target, single=None, precision="float64", array_result=False,
                 checkpoint=None, seed_at_end=False, tape_transcendentals=False):
    """Generate the module source for ``func`` specialized to argument ``kinds`` (``checkpoint``:
    None, K or "auto", see :mod:`srcgrad.checkpoint`; ``seed_at_end``: see transform.SEED_AT_END,
    for callers that run the module as it is, not for sources transformed again;
    ``tape_transcendentals``: see transform.TAPE_TRANSCENDENTALS, likewise: a gradient that
    hessian/hvp differentiate again must keep recomputing, so that it has no tapes and the
    batched forward sweep (forward_batch.py) applies)."""
    if precision not in ("float32", "float64"):
        raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")
    builder = ModuleBuilder(target, precision, checkpoint)
    builder.seed_at_end = seed_at_end and transform.SEED_AT_END
    builder.tape_transcendentals = tape_transcendentals
    builder.inline = True
    unit = builder.unit(func)
    builder.checkpoint_root = unit.func
    _, result_kind = builder.analysis_of(func, tuple(kinds))
    if result_kind.is_array and not array_result:
        raise SrcgradError(f"{unit.func.__name__} returns an array, but grad/value_and_grad need a "
                           "scalar (float) result: reduce it (e.g. np.sum) or use srcgrad.vjp(f, wrt=...) "
                           "for vector-Jacobian products of the array result")
    if result_kind.cls == "tuple":
        raise SrcgradError(f"{unit.func.__name__} returns a tuple; srcgrad differentiates functions "
                           "returning one float or one array")
    adjoint = builder.adjoint(func, tuple(kinds), list(wrt_names))
    primal = builder.primals[unit.func]
    params = ", ".join(unit.params)
    single = len(wrt_names) == 1 if single is None else single
    one = "np.float32(1.0)" if precision == "float32" else "1.0"
    value, grads, seed = N.VALUE, N.GRADS, N.SEED
    returned = f"{grads}[0]" if single else grads
    call = f"{adjoint}({params}{', ' if params else ''}"
    wrappers = f'''@jit
def {primal}_grad({params}):
    """Gradient of {primal} w.r.t. {", ".join(wrt_names)}."""
    {value}, {grads} = {call}{one})
    return {returned}


@jit
def {primal}_value_and_grad({params}):
    """Value of {primal} and its gradient w.r.t. {", ".join(wrt_names)}."""
    {value}, {grads} = {call}{one})
    return {value}, {returned}


@jit
def {primal}_vjp({params}{", " if params else ""}{seed}):
    """Value of {primal} and the vector-Jacobian product of {seed} w.r.t. {", ".join(wrt_names)}."""
    return {call}{seed})


# Calls from Python go straight to the adjoint: compiling a wrapper above makes Numba optimize
# the whole adjoint again inside it.
{N.MODULE_ENTRY} = {adjoint}
'''
    header = (f"Generated by srcgrad {__version__} from "
              f"{unit.fsrc.filename}:{unit.fsrc.firstline} ({unit.func.__name__}); target={target}; "
              f"argument kinds ({', '.join(map(str, kinds))}); wrt ({', '.join(wrt_names)}); "
              f"working precision {precision}.\n"
              "Do not edit: regenerated when the source changes.")
    externals = [f'{name} = external("{qualified}")' for name, qualified in sorted(builder.externals.items())]
    source = codegen.module_source(header, target, builder.sources + [wrappers], externals,
                                   line_tables=builder.line_tables + [None],
                                   user_sources=builder.user_sources)
    return source, primal, adjoint, result_kind


def helper_sources(func, seen=None):
    """Source text of ``func`` and every helper it calls (part of the cache key)."""
    seen = seen if seen is not None else {}
    func = unwrap_function(func)
    if func in seen:
        return seen
    label = f"{func.__module__}.{func.__qualname__}"     # stable across processes (no addresses)
    try:
        seen[func] = label + "\n" + inspect.getsource(func)
    except (OSError, TypeError):
        seen[func] = label
        return seen
    names = set(func.__code__.co_names) | set(func.__code__.co_freevars)
    namespace = dict(func.__globals__)
    if func.__closure__:
        for var, cell in zip(func.__code__.co_freevars, func.__closure__):
            try:
                namespace[var] = cell.cell_contents
            except ValueError:
                pass
    for name in sorted(names):
        value = namespace.get(name)
        if is_helper(value) and rules.library_helper(value) is None:   # not SciPy's functions
            helper_sources(value, seen)
        elif isinstance(value, (int, float, bool)):
            seen[f"const:{func.__name__}:{name}"] = repr(value)
    return seen


def _assigned_names(stmt):
    targets = stmt.targets if isinstance(stmt, ast.Assign) else \
        [stmt.target] if isinstance(stmt, (ast.AugAssign, ast.AnnAssign, ast.For)) else []
    return {node.id for target in targets for node in ast.walk(target)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}


def _assigned_only_in_branches(body, params):
    """Names assigned inside if-branches only: never at the top level of ``body``, never in a loop
    (where the adjoints keep starting at zero at the top of the reverse sweep)."""
    top, in_loop, in_branch = set(params), set(), set()

    def visit(stmts, where):
        for stmt in stmts:
            where.update(_assigned_names(stmt))
            if isinstance(stmt, ast.If):
                visit(stmt.body, in_loop if where is in_loop else in_branch)
                visit(stmt.orelse, in_loop if where is in_loop else in_branch)
            elif isinstance(stmt, (ast.For, ast.While)):
                visit(stmt.body, in_loop)
    visit(body, top)
    return in_branch - top - in_loop


def _init_after_assignments(forward, late, fallback):
    """``forward`` with the adjoint initialisations ``late[name]`` placed after each assignment of
    ``name`` outside loops; a name whose assignment is not found starts at the top of the reverse
    sweep as before (appended to ``fallback``)."""
    placed = set()

    def place(stmts):
        out = []
        for stmt in stmts:
            out.append(stmt)
            if isinstance(stmt, ast.If):
                stmt.body = place(stmt.body)
                stmt.orelse = place(stmt.orelse)
            elif isinstance(stmt, ast.Assign):
                for name in sorted(_assigned_names(stmt) & late.keys()):
                    out.extend(copy.deepcopy(late[name]))
                    placed.add(name)
        return out
    forward = place(forward)
    for name in late:
        if name not in placed:
            fallback.extend(late[name])
    return forward
