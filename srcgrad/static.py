"""Stage 0 — resolve what is known at specialization time, before the normal pipeline.

Real code passes its weights as pytrees (a list of ``(W, b)`` tuples, a dict), reads data from
module globals and closures, defines small functions inside the differentiated one (``def``,
``lambda``) and calls helpers with keyword and default arguments. None of that is left for the
transformer: for one *static signature* (the structure of every pytree argument) this stage
rewrites the function's AST, and every helper it calls, into the plain subset the later stages
know:

* every pytree parameter becomes one parameter per leaf (``params`` -> ``params_0_0, params_0_1,
  ...``); constant indexing (``params[0]``, ``params["W1"]``), unpacking (``W, b = layer``),
  ``len(params)`` and loops over a structure (``for W, b in params``, ``enumerate``, ``zip``,
  ``range(len(params))`` indexing it) are resolved here, the loops unrolled;
* module globals and closure variables holding arrays or floats (or pytrees of them) become hidden
  parameters of the functions that read them, threaded through every call; the caller passes their
  values at each call (:class:`Capture` reads them), so compiled code never bakes data in;
* ``lambda`` expressions and nested ``def`` functions are lifted into functions of their own whose
  free variables (the enclosing function's locals they read) become extra parameters, passed at
  each call (Python's late binding: the value at the time of the call);
* helper calls with keyword or defaulted arguments are bound to positional ones; a ``None``
  argument is static (``x is None`` folds to a constant and the dead branch is dropped);
* helpers get a specialized copy per static signature of their arguments.

Unknown constructs are left alone for check.py to name. A function that needs none of this keeps
its original source (the plan is *trivial*) and goes through the pipeline exactly as before.
"""
import ast
import copy
import inspect
import itertools
import keyword
import math
import re
import types

import numpy as np

from . import kinds as K
from . import pytree
from .errors import SrcgradError, UnsupportedSyntaxError
from .parse import FunctionSource, SourceFunction, read_function, unwrap_function

# modules whose functions are library calls (derivative rules or errors), never user code
LIBRARY_MODULES = ("numpy", "scipy", "math", "numba", "srcgrad", "builtins", "cmath", "operator")


# modules inside the srcgrad package that hold user programs (plain NumPy models that srcgrad
# differentiates, e.g. the MNIST MLP), not library code
USER_MODULES = ("srcgrad.training.mlp",)


def is_library_function(obj):
    module = getattr(obj, "__module__", None) or ""
    if isinstance(obj, np.ufunc):
        return True
    return module.split(".")[0] in LIBRARY_MODULES and module not in USER_MODULES


def is_user_function(obj):
    """A plain Python function srcgrad transforms (not a library function, not a rule)."""
    from . import rules
    if isinstance(obj, SourceFunction):
        return True
    func = getattr(obj, "py_func", obj)
    if not isinstance(func, types.FunctionType) or is_library_function(func):
        return False
    return rules.lookup(obj) is None


# ------------------------------------------------------------------------------------------------
# Values known at specialization time
# ------------------------------------------------------------------------------------------------

class Static:
    """A value the pre-pass knows statically (the leaves stay runtime variables)."""


class SLeaf(Static):
    """A runtime value held in variable ``name`` (a flat parameter or a local)."""

    def __init__(self, name, kind=None):
        self.name = name
        self.kind = kind


class SConst(Static):
    """A constant: None, an int, a bool or a string (an index, a dict key, a None argument)."""

    def __init__(self, value):
        self.value = value


class SSeq(Static):
    def __init__(self, cls, items):
        self.cls = cls            # "tuple" or "list"
        self.items = list(items)


class SDict(Static):
    def __init__(self, keys, items):
        self.keys = list(keys)
        self.items = list(items)


class SFunc(Static):
    """A function value: a user function, a library function, or a lifted lambda/nested def with
    the values of its free variables (None until the call binds them, late, like Python)."""

    def __init__(self, target, free=None, node=None, fsrc=None):
        self.target = target      # python function | LocalDef
        self.free = free          # list of Static (bound) or None
        self.node = node          # how the user named it (np.tanh), and in which function
        self.fsrc = fsrc


class SAmbiguous(Static):
    def __init__(self, message, lineno):
        self.message = message
        self.lineno = lineno


class LocalDef:
    """A ``def`` or ``lambda`` inside a user function, lifted into a function of its own."""

    def __init__(self, node, fsrc, free_names, name):
        self.node = node              # ast.FunctionDef
        self.fsrc = fsrc              # the enclosing function's source (namespace, file)
        self.free_names = free_names
        self.name = name
        self.key = ("local", fsrc.filename, node.lineno, node.col_offset, name)


class NeedStatic(Exception):
    """A pytree was indexed by a value that is not static (raised to unroll an enclosing loop)."""

    def __init__(self, name, node):
        super().__init__(name)
        self.name = name
        self.node = node


def _same(a, b):
    if a is b:
        return True
    if isinstance(a, SConst) and isinstance(b, SConst):
        return type(a.value) is type(b.value) and a.value == b.value
    if isinstance(a, SLeaf) and isinstance(b, SLeaf):
        return a.name == b.name
    return False


def _scalar_like(static):
    """Statics that a plain variable can hold (materialized by an assignment)."""
    return isinstance(static, SLeaf) or (isinstance(static, SConst) and
                                         isinstance(static.value, (int, float, bool)))


def describe(static, registry):
    """The hashable descriptor of a static argument (part of a helper's specialization key);
    function values are entered in ``registry`` under their key."""
    if isinstance(static, SLeaf):
        return ("leaf", static.kind)
    if isinstance(static, SConst):
        return ("const", type(static.value).__name__, static.value)
    if isinstance(static, SSeq):
        return (static.cls, tuple(describe(s, registry) for s in static.items))
    if isinstance(static, SDict):
        return ("dict", tuple(static.keys), tuple(describe(s, registry) for s in static.items))
    if isinstance(static, SFunc):
        target = static.target
        key = target.key if isinstance(target, LocalDef) else ("py", id(target))
        registry.setdefault(key, target)
        return ("func", key, tuple(describe(s, registry) for s in static.free or ()))
    raise TypeError(static)


def flat_atoms(static, like):
    """The runtime values a static argument passes (its leaves), as expressions."""
    out = []
    if isinstance(static, SLeaf):
        out.append(ast.copy_location(ast.Name(id=static.name, ctx=ast.Load()), like))
    elif isinstance(static, (SSeq, SDict)):
        for item in static.items:
            out += flat_atoms(item, like)
    elif isinstance(static, SFunc):
        for item in static.free or ():
            out += flat_atoms(item, like)
    return out


# ------------------------------------------------------------------------------------------------
# Values read at every call
# ------------------------------------------------------------------------------------------------

class Capture:
    """A module global or closure variable holding arrays/floats, read at every call."""

    def __init__(self, key, name, getter, where):
        self.key = key
        self.name = name
        self.getter = getter
        self.where = where
        self.treedef = None

    def read(self):
        return self.getter()


def _capturable(value):
    """Arrays, floats, and containers of arrays/numbers with at least one array or float."""
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "fiub"
    if isinstance(value, (float, np.floating)):
        return True
    if isinstance(value, (tuple, list, dict)) and value:
        try:
            pytree.treedef_of(value)
        except TypeError:
            return False
        return any(isinstance(leaf, (np.ndarray, float, np.floating)) and not isinstance(leaf, bool)
                   for leaf in pytree.leaves(value))
    return False


def _leaf_kind(value):
    try:
        return K.kind_of_value(value)
    except TypeError:
        return None


# ------------------------------------------------------------------------------------------------
# The plan: every function of one specialization, rewritten
# ------------------------------------------------------------------------------------------------

class Prepared:
    """One function of the plan, rewritten for one static signature of its arguments."""

    def __init__(self, target, descs, fsrc):
        self.target = target
        self.descs = descs
        self.fsrc = fsrc
        self.tree = None
        self.trivial = False
        self.captures = []        # capture keys, in parameter order
        self.placeholder = None   # the name calls use until the final names are chosen
        self.name = None
        self.function = None      # the SourceFunction the pipeline sees
        self.hints = {}           # placeholder -> readable name stem


class Plan:
    """The rewritten functions for one call signature, with what each call must pass.

    ``root`` is what the pipeline transforms (the original function when ``trivial``); its
    parameters are the flat leaves of every argument, then the leaves of every capture.
    """

    def __init__(self, root, arg_treedefs, arg_params, captures, guards, trivial, functions):
        self.root = root
        self.arg_treedefs = arg_treedefs      # per argument: a treedef, or None for a plain value
        self.arg_params = arg_params          # per argument: its flat parameter names
        self.captures = captures              # list of Capture (their treedefs at plan time)
        self.guards = guards                  # list of (getter, value, where): baked constants
        self.trivial = trivial
        self.functions = functions            # every Prepared (for the cache key)
        self.dynamic = bool(captures or guards)

    def source_key(self):
        parts = []
        for prepared in self.functions:
            fsrc = prepared.fsrc
            parts.append(f"{prepared.name}@{fsrc.filename}:{prepared.tree.lineno}\n" +
                         ast.unparse(prepared.tree))
        return sorted(parts)

    def guards_hold(self):
        for getter, value, _ in self.guards:
            try:
                current = getter()
            except Exception:       # noqa: BLE001  (a deleted global: rebuild and report there)
                return False
            if type(current) is not type(value) or current != value:
                return False
        return True

    def read_captures(self):
        """(the captured values' leaves, whether their structures are still those planned)."""
        flat = []
        for capture in self.captures:
            value = capture.read()
            try:
                same = pytree.treedef_of(value) == capture.treedef
            except TypeError:
                same = False
            if not same:
                return flat, False
            pytree.leaves(value, flat)
        return flat, True


def make_plan(func, values, params):
    """The plan for calling ``func`` with ``values`` (one per parameter, defaults applied)."""
    preparer = Preparer()
    descs = []
    arg_treedefs = []
    for name, value in zip(params, values):
        if value is None or pytree.is_container(value):
            treedef = pytree.treedef_of(value, f"argument {name!r} of {func.__name__}")
            arg_treedefs.append(treedef)
            descs.append(_desc_from_value(value))
        else:
            arg_treedefs.append(None)
            descs.append(None)
    root = preparer.prepare(func, tuple(descs), root=True)
    preparer.finish()
    arg_params = []
    flat_params = [a.arg for a in root.tree.args.args]
    position = 0
    for treedef in arg_treedefs:
        count = 1 if treedef is None else pytree.count_leaves(treedef)
        arg_params.append(flat_params[position:position + count])
        position += count
    captures = [preparer.captures[key] for key in root.captures]
    guards = list(preparer.guards.values())
    trivial = root.trivial and not captures
    return Plan(root.function if not trivial else unwrap_function(func), tuple(arg_treedefs),
                arg_params, captures, guards, trivial, preparer.functions)


def _desc_from_value(value):
    if isinstance(value, dict):
        return ("dict", tuple(value), tuple(_desc_from_value(v) for v in value.values()))
    if isinstance(value, (tuple, list)):
        return ("list" if isinstance(value, list) else "tuple",
                tuple(_desc_from_value(v) for v in value))
    if value is None:
        return ("const", "NoneType", None)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    return ("leaf", _leaf_kind(value))


class Preparer:
    def __init__(self):
        self.cache = {}           # (target key, descriptors) -> Prepared
        self.in_progress = set()
        self.captures = {}        # key -> Capture
        self.guards = {}          # key -> (getter, value, where)
        self.counter = itertools.count()
        self.functions = []       # Prepared, in creation order
        self.func_targets = {}    # descriptor key of a function value -> the function / LocalDef

    def placeholder(self, stem="v"):
        return f"__sg{next(self.counter)}_{stem}__"

    def prepare(self, target, descs, root=False, call_node=None, caller=None):
        if isinstance(target, LocalDef):
            key = (target.key, descs)
        else:
            key = (("py", unwrap_function(target)), descs)
        done = self.cache.get(key)
        if done is not None:
            return done
        if key in self.in_progress:
            name = target.name if isinstance(target, LocalDef) else target.__name__
            where = caller.fsrc if caller is not None else None
            raise SrcgradError(f"{where.filename + ':' + str(call_node.lineno) + ': ' if where else ''}"
                               f"recursion: {name} calls itself (directly or through helpers); "
                               "srcgrad needs loops instead")
        self.in_progress.add(key)
        try:
            if isinstance(target, LocalDef):
                fsrc = target.fsrc
                tree = target.node
                original = None
            else:
                fsrc = read_function(target)
                tree = fsrc.tree
                tree.decorator_list = []
                original = ast.dump(tree)
            prepared = Prepared(target, descs, fsrc)
            prepared.placeholder = self.placeholder("f")
            rewriter = FunctionRewriter(self, prepared, fsrc, copy.deepcopy(tree), descs)
            prepared.tree = rewriter.run()
            prepared.trivial = (original is not None and not prepared.captures and
                                all(d is None for d in descs) and
                                unwrap_function(target).__name__.isidentifier() and
                                ast.dump(prepared.tree) == original)
        finally:
            self.in_progress.discard(key)
        self.cache[key] = prepared
        self.functions.append(prepared)
        return prepared

    def capture(self, key, name, getter, value, where):
        capture = self.captures.get(key)
        if capture is None:
            capture = Capture(key, name, getter, where)
            capture.treedef = pytree.treedef_of(value, where)
            capture.value = value
            self.captures[key] = capture
        return capture

    def guard(self, key, getter, value, where):
        self.guards.setdefault(key, (getter, value, where))

    # -- final names -------------------------------------------------------------------------
    def finish(self):
        """Choose readable unique names for the rewritten functions and their new parameters."""
        functions = [p for p in self.functions if not p.trivial]
        taken = set()
        for prepared in self.functions:
            for node in ast.walk(prepared.tree):
                if isinstance(node, ast.Name) and not node.id.startswith("__sg"):
                    taken.add(node.id)
            if prepared.trivial:
                taken.add(prepared.fsrc.name)
        names = {p.placeholder: p.fsrc.name for p in self.functions if p.trivial}
        for prepared in functions:
            stem = prepared.fsrc.name if isinstance(prepared.target, LocalDef) or \
                prepared.fsrc.name.isidentifier() else "lambda"
            stem = _identifier(stem)
            name = stem
            count = 1
            while name in taken:
                count += 1
                name = f"{stem}_{count}"
            taken.add(name)
            prepared.name = name
            names[prepared.placeholder] = name
        for prepared in self.functions:
            if prepared.trivial:
                prepared.name = prepared.fsrc.name
                _rename(prepared.tree, names)
                continue
            local = {n.id for n in ast.walk(prepared.tree) if isinstance(n, ast.Name)
                     and not n.id.startswith("__sg")} | \
                    {a.arg for a in prepared.tree.args.args if not a.arg.startswith("__sg")}
            local |= set(names.values())
            mapping = dict(names)
            for placeholder, hint in prepared.hints.items():
                stem = _identifier(hint)
                name = stem
                count = 1
                while name in local or keyword.iskeyword(name) or name in ("np", "math"):
                    count += 1
                    name = f"{stem}_{count}"
                local.add(name)
                mapping[placeholder] = name
            _rename(prepared.tree, mapping)
            prepared.tree.name = prepared.name
            namespace = dict(prepared.fsrc.namespace)
            fsrc = FunctionSource(func=None, name=prepared.name, filename=prepared.fsrc.filename,
                                  firstline=prepared.fsrc.firstline, tree=prepared.tree,
                                  source=prepared.fsrc.source, source_lines=prepared.fsrc.source_lines,
                                  namespace=namespace)
            prepared.function = SourceFunction(fsrc)
            prepared.function.hidden = frozenset(mapping[p] for p in prepared.hidden)
            fsrc.func = prepared.function
        for prepared in self.functions:     # callees are resolved to their SourceFunction
            if prepared.function is not None:
                ns = prepared.function.fsrc.namespace
                for callee in prepared.callees:
                    ns[callee.name] = callee.function if not callee.trivial else \
                        unwrap_function(callee.target)


def _identifier(text):
    text = re.sub(r"\W", "_", str(text)).strip("_") or "v"
    if text[0].isdigit():
        text = "v" + text
    return text


def _rename(tree, mapping):
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in mapping:
            node.id = mapping[node.id]
        elif isinstance(node, ast.arg) and node.arg in mapping:
            node.arg = mapping[node.arg]


def _stored_names(stmts):
    """Names a function body binds (not looking into nested functions and comprehensions)."""
    out = set()

    def visit(node):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
            return
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        for child in ast.iter_child_nodes(node):
            visit(child)
    for stmt in stmts:
        visit(stmt)
    return out


def _loaded_names(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _constant_value(node):
    return node.value if isinstance(node, ast.Constant) else None


# ------------------------------------------------------------------------------------------------
# The rewriter of one function
# ------------------------------------------------------------------------------------------------

_FOLD_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
                ast.Mult: lambda a, b: a * b, ast.FloorDiv: lambda a, b: a // b,
                ast.Mod: lambda a, b: a % b}
_FOLD_COMPARE = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b,
                 ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b,
                 ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
                 ast.Is: lambda a, b: a is b, ast.IsNot: lambda a, b: a is not b}


class FunctionRewriter:
    def __init__(self, preparer, prepared, fsrc, tree, descs):
        self.prep = preparer
        self.prepared = prepared
        self.fsrc = fsrc
        self.tree = tree
        self.descs = descs
        self.env = {}
        self.materialize = set()      # names whose static bindings also assign the variable
        self.load_log = []            # (name, its binding) at every load, for loop analysis
        self.capture_params = {}      # capture key -> placeholder names of its leaves
        prepared.callees = []
        if isinstance(tree, ast.Lambda):
            raise TypeError("lift lambdas before rewriting")
        params = [a.arg for a in tree.args.args]
        self.params = params
        self.locals = set(params) | _stored_names(tree.body)
        self.plain_params = set()

    def error(self, node, message, construct):
        return self.fsrc.error(node, message, construct)

    # -- the function --------------------------------------------------------------------------
    def run(self):
        tree = self.tree
        args = tree.args
        if args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs:
            return tree                 # check.py names it
        if len(self.descs) != len(self.params):
            raise SrcgradError(f"{self.fsrc.filename}:{tree.lineno}: {self.fsrc.name} takes "
                               f"{len(self.params)} arguments, called with {len(self.descs)}")
        new_params = []
        for name, desc in zip(self.params, self.descs):
            if desc is None:
                new_params.append(name)
                self.plain_params.add(name)
                continue
            static, leaves = self.rebuild(desc, name)
            self.env[name] = static
            new_params += leaves
        try:
            body = self.block(tree.body)
        except NeedStatic as need:
            error = self.error(need.node, f"`{ast.unparse(need.node)}`: a pytree index must be "
                               f"known at specialization time (`{need.name}` is not; loops over "
                               "`range(len(...))` with constant bounds are unrolled)",
                               "pytree index")
            error.static_name = need.name if need.name in self.plain_params else None
            error.function = self.prepared
            raise error from None
        if not body:
            body = [ast.copy_location(ast.Pass(), tree)]
        hidden = []
        for key in self.prepared.captures:
            hidden += self.capture_params[key]
        self.prepared.hidden = hidden
        if new_params + hidden != self.params:
            tree.args = ast.arguments(posonlyargs=[], args=[ast.arg(arg=n) for n in new_params + hidden],
                                      vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None,
                                      defaults=[])
        tree.body = body
        tree.decorator_list = []
        ast.fix_missing_locations(tree)
        return tree

    def rebuild(self, desc, stem):
        """The static value of a parameter described by ``desc``, and its new flat parameters."""
        tag = desc[0]
        if tag == "leaf":
            name = self.prep.placeholder()
            self.prepared.hints[name] = stem
            return SLeaf(name, desc[1]), [name]
        if tag == "const":
            return SConst(desc[2]), []
        if tag in ("tuple", "list"):
            items, names = [], []
            for k, child in enumerate(desc[1]):
                item, more = self.rebuild(child, f"{stem}_{k}")
                items.append(item)
                names += more
            return SSeq(tag, items), names
        if tag == "dict":
            items, names = [], []
            for key, child in zip(desc[1], desc[2]):
                item, more = self.rebuild(child, f"{stem}_{key}")
                items.append(item)
                names += more
            return SDict(desc[1], items), names
        if tag == "func":
            target = self.prep.func_targets[desc[1]]
            free, names = [], []
            for k, child in enumerate(desc[2]):
                label = target.free_names[k] if isinstance(target, LocalDef) else f"{stem}_{k}"
                item, more = self.rebuild(child, label)
                free.append(item)
                names += more
            return SFunc(target, free), names
        raise TypeError(desc)

    # -- statements ----------------------------------------------------------------------------
    def block(self, stmts):
        out = []
        for stmt in stmts:
            out += self.statement(stmt)
        return out

    def statement(self, stmt):
        if isinstance(stmt, ast.Assign):
            return self.assign(stmt)
        if isinstance(stmt, ast.AnnAssign):
            if stmt.value is None:
                return []
            return self.assign(ast.copy_location(ast.Assign(targets=[stmt.target], value=stmt.value),
                                                 stmt))
        if isinstance(stmt, ast.AugAssign):
            return self.aug_assign(stmt)
        if isinstance(stmt, ast.For):
            return self.for_loop(stmt)
        if isinstance(stmt, ast.While):
            return self.loop(stmt)
        if isinstance(stmt, ast.If):
            return self.if_statement(stmt)
        if isinstance(stmt, ast.Return):
            if stmt.value is not None:
                stmt.value = self.load(stmt.value, sequence_ok=True)
            return [stmt]
        if isinstance(stmt, ast.FunctionDef):
            for node in ast.walk(stmt):
                if isinstance(node, (ast.Nonlocal, ast.Global)):
                    kind = "nonlocal" if isinstance(node, ast.Nonlocal) else "global"
                    raise self.error(stmt, f"nested function {stmt.name!r} uses a `{kind}` statement "
                                     "(assigning variables outside it is not supported)",
                                     f"{kind} statement")
            if stmt.decorator_list or stmt.args.defaults and not all(
                    isinstance(d, ast.Constant) for d in stmt.args.defaults):
                raise self.error(stmt, f"nested function {stmt.name!r}: decorators and non-constant "
                                 "default values are not supported", "nested function definition")
            self.bind_name(stmt.name, self.local_function(stmt, stmt.name), stmt, [])
            return []
        if isinstance(stmt, ast.Expr):
            if isinstance(stmt.value, ast.Constant):
                return [stmt]
            stmt.value = self.load(stmt.value)
            return [stmt]
        if isinstance(stmt, (ast.Assert, ast.Raise, ast.Delete)):
            self.generic(stmt)
            return [stmt]
        return [stmt]                       # anything else: check.py decides

    def assign(self, stmt):
        value = self.value(stmt.value)
        out = []
        targets = stmt.targets
        if not isinstance(value, Static) and len(targets) == 1 and isinstance(targets[0], ast.Name):
            self.drop(targets[0].id)
            stmt.value = value
            return [stmt]
        for target in targets:
            self.bind(target, value, stmt, out)
        return out

    def bind(self, target, value, stmt, out):
        """Bind ``target`` (a name, a tuple/list pattern, a subscript) to ``value``."""
        if isinstance(target, ast.Name):
            self.bind_name(target.id, value, stmt, out)
            return
        if isinstance(target, (ast.Tuple, ast.List)):
            if isinstance(value, SSeq):
                if any(isinstance(e, ast.Starred) for e in target.elts):
                    raise self.error(stmt, "starred unpacking of a pytree is not supported",
                                     "pytree unpacking")
                if len(target.elts) != len(value.items):
                    raise self.error(stmt, f"cannot unpack a pytree of {len(value.items)} items into "
                                     f"{len(target.elts)} names", "pytree unpacking")
                for elt, item in zip(target.elts, value.items):
                    self.bind(elt, item, stmt, out)
                return
            if isinstance(value, Static):
                raise self.error(stmt, f"cannot unpack {self.what(value)} into "
                                 f"`{ast.unparse(target)}`", "pytree unpacking")
            for name in _stored_names([ast.Expr(value=target)]):
                self.drop(name)
            out.append(ast.copy_location(ast.Assign(targets=[target], value=value), stmt))
            return
        if isinstance(target, ast.Subscript):
            base = self.value(target.value)
            if isinstance(base, Static) and not isinstance(base, SLeaf):
                raise self.error(stmt, f"cannot assign into the pytree `{ast.unparse(target.value)}` "
                                 "(its structure is fixed; build a new value instead)",
                                 "pytree assignment")
            target.value = self.as_expr(base, target.value)
            target.slice = self.load(target.slice)
            out.append(ast.copy_location(ast.Assign(targets=[target], value=self.as_expr(value, stmt)),
                                         stmt))
            return
        out.append(ast.copy_location(ast.Assign(targets=[target], value=self.as_expr(value, stmt)),
                                     stmt))

    def bind_name(self, name, value, stmt, out):
        if isinstance(value, Static):
            self.env[name] = value
            if name in self.materialize:
                if not _scalar_like(value):
                    self.env[name] = SAmbiguous(
                        f"`{name}` is bound to {self.what(value)} inside a loop or branch where it "
                        "also holds other values; srcgrad resolves pytrees at specialization time, "
                        "so each name must refer to one part of a pytree", stmt.lineno)
                    return
                out.append(ast.copy_location(
                    ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())],
                               value=self.as_expr(value, stmt)), stmt))
            return
        self.drop(name)
        out.append(ast.copy_location(ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())],
                                                value=value), stmt))

    def drop(self, name):
        self.env.pop(name, None)

    def aug_assign(self, stmt):
        target = stmt.target
        if isinstance(target, ast.Name) and target.id in self.env:
            static = self.env[target.id]
            if isinstance(static, SLeaf) and static.kind is not None and static.kind.is_scalar:
                value = ast.BinOp(left=ast.Name(id=static.name, ctx=ast.Load()), op=stmt.op,
                                  right=self.load(stmt.value))
                self.drop(target.id)
                return [ast.copy_location(ast.Assign(targets=[ast.Name(id=target.id, ctx=ast.Store())],
                                                     value=ast.copy_location(value, stmt)), stmt)]
            raise self.error(stmt, f"augmented assignment to `{target.id}`, which is "
                             f"{self.what(static)}: it would modify the argument in place; write "
                             f"`{target.id} = {target.id} {_op_text(stmt.op)} ...` instead",
                             "augmented assignment to a pytree element")
        if isinstance(target, ast.Subscript):
            base = self.value(target.value)
            if isinstance(base, Static) and not isinstance(base, SLeaf):
                raise self.error(stmt, f"cannot assign into the pytree `{ast.unparse(target.value)}`",
                                 "pytree assignment")
            target.value = self.as_expr(base, target.value)
            target.slice = self.load(target.slice)
        elif isinstance(target, ast.Name):
            self.drop(target.id)
        stmt.value = self.load(stmt.value)
        return [stmt]

    # -- control flow --------------------------------------------------------------------------
    def if_statement(self, stmt):
        test = self.load(stmt.test)
        folded = _fold(test)
        if folded is not None:           # known at specialization time: keep one branch
            return self.block(stmt.body if folded[0] else stmt.orelse)
        stmt.test = test
        before = dict(self.env)
        saved_materialize = set(self.materialize)
        body = self.block(copy.deepcopy(stmt.body))
        after_body = self.env
        self.env = dict(before)
        orelse = self.block(copy.deepcopy(stmt.orelse))
        after_else = self.env
        changed = {n for n in set(before) | set(after_body) | set(after_else)
                   if not (_same(after_body.get(n), before.get(n)) and
                           _same(after_else.get(n), before.get(n)))}
        changed = {n for n in changed if not _same(after_body.get(n), after_else.get(n))}
        if not changed:
            stmt.body, stmt.orelse = body or [ast.Pass()], orelse
            return [stmt]
        # names bound differently on the two paths: plain variables from here on (assigned on
        # every path), or ambiguous when one path binds a whole pytree
        pre = self.enter_changed(changed, before, stmt)
        self.materialize |= changed
        entry = dict(self.env)
        body = self.block(copy.deepcopy(stmt.body))
        after_body = self.env
        self.env = dict(entry)
        orelse = self.block(copy.deepcopy(stmt.orelse))
        after_else = self.env
        self.materialize = saved_materialize
        self.env = dict(after_body)
        for name in changed:
            a, b = after_body.get(name), after_else.get(name)
            if _same(a, b):
                self.env[name] = a
            elif isinstance(a, SAmbiguous) or isinstance(b, SAmbiguous) or \
                    not all(v is None or _scalar_like(v) for v in (a, b)):
                self.env[name] = SAmbiguous(
                    f"`{name}` refers to different pytree values on the two paths of the `if` at "
                    f"line {stmt.lineno}; srcgrad resolves pytrees at specialization time",
                    stmt.lineno)
            else:
                self.drop(name)
        stmt.body, stmt.orelse = body or [ast.Pass()], orelse
        return pre + [stmt]

    def enter_changed(self, changed, before, stmt):
        """Assign names about to become plain variables the value they statically hold now."""
        pre = []
        for name in sorted(changed):
            value = before.get(name)
            if value is None:
                continue
            if _scalar_like(value):
                pre.append(ast.copy_location(ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())],
                                                        value=self.as_expr(value, stmt)), stmt))
                self.drop(name)
            else:
                self.env[name] = SAmbiguous(
                    f"`{name}` refers to {self.what(value)} before line {stmt.lineno} and to other "
                    "values inside it; srcgrad resolves pytrees at specialization time", stmt.lineno)
        return pre

    def loop(self, stmt, target_names=()):
        """A loop kept as a loop: names whose static binding changes in its body become plain
        variables (the body runs many times; each iteration must see the previous one's value)."""
        before = dict(self.env)
        for name in target_names:
            self.drop(name)
        probe_env = dict(self.env)
        original = copy.deepcopy(stmt)
        start = len(self.load_log)
        self.body_pass(stmt)
        changed = {n for n in set(probe_env) | set(self.env)
                   if not _same(probe_env.get(n), self.env.get(n))}
        if not changed:
            return [stmt]
        # a name whose binding changes in the body is loop-carried when the body reads it before
        # rebinding it (with the value it had on entry), or ends as a plain variable: then it
        # must be a real variable (assigned before the loop, for zero iterations, too)
        carried = {name for name, binding in self.load_log[start:]
                   if name in changed and _same(binding, probe_env.get(name))}
        carried |= {name for name in changed if name not in self.env}
        self.env = dict(probe_env)
        pre = []
        saved_materialize = set(self.materialize)
        if carried:
            pre = self.enter_changed(carried, before, stmt)
            self.materialize |= carried
        self.body_pass(stmt, original)
        self.materialize = saved_materialize
        for name in changed - carried:
            self.env[name] = SAmbiguous(
                f"`{name}` is bound to a pytree element inside the loop at line {stmt.lineno}; after "
                "the loop its value depends on the number of iterations (assign it after the loop)",
                stmt.lineno)
        for name in carried:
            value = self.env.get(name)
            if value is not None and not _scalar_like(value) and not isinstance(value, SAmbiguous):
                self.env[name] = SAmbiguous(
                    f"`{name}` is bound to {self.what(value)} inside the loop at line {stmt.lineno}; "
                    "srcgrad resolves pytrees at specialization time", stmt.lineno)
            elif value is not None and not isinstance(value, SAmbiguous):
                self.drop(name)
        return pre + [stmt]

    def body_pass(self, stmt, original=None):
        source = original if original is not None else copy.deepcopy(stmt)
        if isinstance(stmt, ast.While):
            stmt.test = self.load(copy.deepcopy(source.test))
        stmt.body = self.block(copy.deepcopy(source.body)) or [ast.Pass()]

    def for_loop(self, stmt):
        items = self.static_iteration(stmt.iter)
        if items is not None:
            return self.unroll(stmt, items)
        iter_node = stmt.iter
        is_range = (isinstance(iter_node, ast.Call) and isinstance(iter_node.func, ast.Name) and
                    iter_node.func.id == "range" and iter_node.func.id not in self.locals and
                    not iter_node.keywords)
        if is_range:
            bounds = [self.static_int(arg) for arg in iter_node.args]
            iter_node.args = [self.load(arg) for arg in iter_node.args]
            if isinstance(stmt.target, ast.Name) and None not in bounds:
                saved = dict(self.env), set(self.materialize)
                try:
                    probe = copy.deepcopy(stmt)
                    probe.iter = iter_node
                    return self.loop(probe, [stmt.target.id])
                except NeedStatic as need:
                    if need.name != stmt.target.id:
                        raise
                    self.env, self.materialize = dict(saved[0]), saved[1]
                    return self.unroll(stmt, [SConst(i) for i in range(*bounds)])
        else:
            stmt.iter = self.load(iter_node)
        return self.loop(stmt, sorted(_stored_names([ast.Expr(value=stmt.target)])))

    def unroll(self, stmt, items):
        for node in ast.walk(ast.Module(body=stmt.body, type_ignores=[])):
            if isinstance(node, (ast.Break, ast.Continue)) and self._in_this_loop(stmt, node):
                raise self.error(node, f"`{type(node).__name__.lower()}` in a loop over a pytree "
                                 "(srcgrad unrolls such loops at specialization time)",
                                 "break/continue in a pytree loop")
        if stmt.orelse:
            raise self.error(stmt, "for ... else is not supported", "for-else")
        out = []
        for item in items:
            self.bind(copy.deepcopy(stmt.target), item, stmt, out)
            out += self.block(copy.deepcopy(stmt.body))
        return out

    @staticmethod
    def _in_this_loop(loop, jump):
        def search(stmts):
            for s in stmts:
                if s is jump:
                    return True
                if isinstance(s, (ast.For, ast.While)):
                    continue
                if isinstance(s, ast.If) and search(s.body + s.orelse):
                    return True
            return False
        return search(loop.body)

    def static_iteration(self, node):
        """The items of ``for ... in node`` when it iterates over a pytree, else None."""
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id not in self.locals and not node.keywords:
            name = node.func.id
            if name == "enumerate" and 1 <= len(node.args) <= 2:
                items = self.static_iteration(node.args[0])
                start = self.static_int(node.args[1]) if len(node.args) == 2 else 0
                if items is None or start is None:
                    return None
                return [SSeq("tuple", [SConst(start + k), item]) for k, item in enumerate(items)]
            if name == "zip" and node.args:
                parts = [self.static_iteration(arg) for arg in node.args]
                if any(p is None for p in parts):
                    if any(p is not None for p in parts):
                        raise self.error(node, "zip of a pytree with a runtime sequence is not "
                                         "supported", "zip over a pytree")
                    return None
                return [SSeq("tuple", list(group)) for group in zip(*parts)]
            if name == "reversed" and len(node.args) == 1:
                items = self.static_iteration(node.args[0])
                return None if items is None else list(reversed(items))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and not node.args \
                and node.func.attr in ("items", "keys", "values"):
            base = self.value(node.func.value)
            if isinstance(base, SDict):
                if node.func.attr == "keys":
                    return [SConst(k) for k in base.keys]
                if node.func.attr == "values":
                    return list(base.items)
                return [SSeq("tuple", [SConst(k), v]) for k, v in zip(base.keys, base.items)]
            return None
        if isinstance(node, (ast.Name, ast.Subscript, ast.Attribute)):
            value = self.value(copy.deepcopy(node))
            if isinstance(value, SSeq):
                return list(value.items)
            if isinstance(value, SDict):
                return [SConst(k) for k in value.keys]
            if isinstance(value, Static) and not isinstance(value, SLeaf):
                raise self.error(node, f"cannot iterate over {self.what(value)}", "pytree loop")
        return None

    # -- expressions ---------------------------------------------------------------------------
    def value(self, node):
        """``node`` rewritten: a Static when its value is known here, else an expression."""
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.Subscript):
            base = self.value(node.value)
            if isinstance(base, Static) and not isinstance(base, SLeaf):
                return self.index(base, node)
            node.value = self.as_expr(base, node.value)
            node.slice = self.load(node.slice)
            return node
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Attribute):
            function = self.module_function(node)
            if function is not None:
                return function
        if isinstance(node, ast.Lambda):
            fdef = ast.FunctionDef(name=f"lambda_{node.lineno}", args=node.args,
                                   body=[ast.copy_location(ast.Return(value=node.body), node.body)],
                                   decorator_list=[], returns=None, type_comment=None)
            ast.copy_location(fdef, node)
            if node.args.defaults and not all(isinstance(d, ast.Constant) for d in node.args.defaults):
                raise self.error(node, "lambda with non-constant default values is not supported",
                                 "lambda")
            return self.local_function(fdef, f"lambda_{node.lineno}")
        if isinstance(node, ast.Constant) and node.value is None:
            return SConst(None)
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)):
            unrolled = self.comprehension(node)
            if unrolled is not None:
                return unrolled
            return self.masked_generic(node)
        if isinstance(node, (ast.SetComp, ast.DictComp)):
            return self.masked_generic(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        self.generic(node)
        folded = _fold(node)
        if folded is not None and isinstance(node, (ast.BinOp, ast.UnaryOp, ast.BoolOp)):
            return ast.copy_location(ast.Constant(folded[0]), node)
        return node

    def load(self, node, sequence_ok=False):
        """``node`` as an expression (statics as their variables / constants)."""
        return self.as_expr(self.value(node), node, sequence_ok)

    def as_expr(self, value, like, sequence_ok=False):
        if not isinstance(value, Static):
            return value
        if isinstance(value, SLeaf):
            return ast.copy_location(ast.Name(id=value.name, ctx=ast.Load()), like)
        if isinstance(value, SConst):
            return ast.copy_location(ast.Constant(value.value), like)
        if sequence_ok and isinstance(value, SSeq) and \
                all(isinstance(i, (SLeaf, SConst)) for i in value.items):
            # a flat sequence used as a value (np.stack(params), sum(weights)): a tuple
            node = ast.Tuple(elts=[self.as_expr(i, like) for i in value.items], ctx=ast.Load())
            for sub in ast.walk(node):
                ast.copy_location(sub, like)
            return node
        if isinstance(value, SAmbiguous):
            raise self.error(like, value.message, "pytree")
        if isinstance(value, SFunc):
            target = value.target
            if not isinstance(target, LocalDef) and (is_library_function(target) or
                                                     not is_user_function(target)):
                if value.node is not None and value.fsrc is self.fsrc:
                    return ast.copy_location(copy.deepcopy(value.node), like)
                from .normalize import func_expression
                return ast.copy_location(func_expression(target, like), like)
        raise self.error(like, f"{self.what(value)} used as a value in `{ast.unparse(like)}`: index "
                         "it with constants, unpack it or loop over it (srcgrad resolves pytrees "
                         "and functions at specialization time)", "pytree used as a value")

    def what(self, value):
        if isinstance(value, SSeq):
            return f"a pytree ({value.cls} of {len(value.items)})"
        if isinstance(value, SDict):
            return f"a pytree (dict with keys {', '.join(map(repr, value.keys))})"
        if isinstance(value, SFunc):
            target = value.target
            return f"the function {target.name if isinstance(target, LocalDef) else target.__name__}"
        if isinstance(value, SLeaf):
            return "an element of a pytree"
        if isinstance(value, SConst):
            return repr(value.value)
        return "a pytree"

    def generic(self, node):
        """Rewrite every child expression of ``node`` in place (its statics as expressions)."""
        for field, old in ast.iter_fields(node):
            if isinstance(old, ast.expr) and not isinstance(old, ast.expr_context):
                setattr(node, field, self.load(old))
            elif isinstance(old, list):
                new = []
                for item in old:
                    if isinstance(item, ast.expr):
                        new.append(self.load(item))
                    elif isinstance(item, (ast.keyword, ast.comprehension, ast.slice)) or \
                            isinstance(item, ast.AST) and not isinstance(item, ast.stmt):
                        self.generic(item)
                        new.append(item)
                    else:
                        new.append(item)
                setattr(node, field, new)
            elif isinstance(old, ast.keyword):
                self.generic(old)

    def masked_generic(self, node):
        """A comprehension: its own loop variables shadow statics while its parts are rewritten."""
        bound = set()
        for gen in node.generators:
            bound |= _stored_names([ast.Expr(value=gen.target)])
        saved = dict(self.env), set(self.locals)
        for name in bound:
            self.env.pop(name, None)
        self.locals |= bound
        try:
            self.generic(node)
        finally:
            self.env, self.locals = saved
        return node

    def comprehension(self, node):
        """``[f(W) for W, b in params]`` over a pytree: a list of the unrolled elements."""
        if len(node.generators) != 1:
            return None
        gen = node.generators[0]
        if gen.is_async:
            return None
        items = self.static_iteration(copy.deepcopy(gen.iter))
        if items is None:
            return None
        saved = dict(self.env)
        elts = []
        try:
            for item in items:
                out = []
                self.bind(copy.deepcopy(gen.target), item, node, out)
                if out:
                    return None
                keep = True
                for cond in gen.ifs:
                    folded = _fold(self.load(copy.deepcopy(cond)))
                    if folded is None:
                        raise self.error(node, "a condition in a comprehension over a pytree must "
                                         "be known at specialization time", "comprehension")
                    keep = keep and bool(folded[0])
                if keep:
                    elts.append(self.load(copy.deepcopy(node.elt)))
        finally:
            self.env = saved
        # a tuple: it is what the later stages accept as a sequence value (np.stack, np.array)
        result = ast.Tuple(elts=elts, ctx=ast.Load())
        for sub in ast.walk(result):
            if not hasattr(sub, "lineno"):
                ast.copy_location(sub, node)
        return ast.copy_location(result, node)

    def compare(self, node):
        self.generic(node)
        if len(node.ops) == 1 and isinstance(node.ops[0], (ast.Is, ast.IsNot)):
            left, right = node.left, node.comparators[0]
            other = right if _constant_value(left) is None and isinstance(left, ast.Constant) else left
            none_side = left if other is right else right
            if isinstance(none_side, ast.Constant) and none_side.value is None:
                known = isinstance(other, ast.Constant) or (
                    isinstance(other, ast.Name) and other.id in self.plain_params and
                    other.id not in self.env)
                if known:
                    is_none = isinstance(other, ast.Constant) and other.value is None
                    result = is_none if isinstance(node.ops[0], ast.Is) else not is_none
                    return ast.copy_location(ast.Constant(result), node)
        folded = _fold(node)
        if folded is not None:
            return ast.copy_location(ast.Constant(folded[0]), node)
        return node

    def index(self, base, node):
        index = self.static_index(node.slice, node)
        if isinstance(base, SDict):
            if isinstance(index, slice) or index not in base.keys:
                raise self.error(node, f"the pytree `{ast.unparse(node.value)}` has no key {index!r} "
                                 f"(keys: {', '.join(map(repr, base.keys))})", "pytree index")
            return base.items[base.keys.index(index)]
        if isinstance(base, SSeq):
            if isinstance(index, slice):
                return SSeq(base.cls, base.items[index])
            if not isinstance(index, int) or isinstance(index, bool):
                raise self.error(node, f"a {base.cls} pytree is indexed by {index!r}",
                                 "pytree index")
            if not -len(base.items) <= index < len(base.items):
                raise self.error(node, f"index {index} is out of range for the pytree "
                                 f"`{ast.unparse(node.value)}` of length {len(base.items)}",
                                 "pytree index")
            return base.items[index]
        raise self.error(node, f"cannot index {self.what(base)}", "pytree index")

    def static_index(self, index, node):
        if isinstance(index, ast.Slice):
            parts = []
            for part in (index.lower, index.upper, index.step):
                value = None if part is None else self.static_int(part)
                if part is not None and value is None:
                    raise self.error(node, f"a slice of a pytree needs constant bounds: "
                                     f"`{ast.unparse(node)}`", "pytree index")
                parts.append(value)
            return slice(*parts)
        value = self.value(copy.deepcopy(index))
        if isinstance(value, SConst):
            return value.value
        if isinstance(value, ast.Constant):
            return value.value
        name = index.id if isinstance(index, ast.Name) else None
        if name is not None:
            raise NeedStatic(name, node) if name in self.locals else self.error(
                node, f"`{ast.unparse(node)}`: a pytree index must be known at specialization time",
                "pytree index")
        raise self.error(node, f"`{ast.unparse(node)}`: a pytree can only be indexed by constants "
                         "(or the variable of a loop srcgrad can unroll)", "pytree index")

    def static_int(self, node):
        value = self.value(copy.deepcopy(node))
        if isinstance(value, SConst) and isinstance(value.value, int):
            return value.value
        if isinstance(value, ast.Constant) and isinstance(value.value, int) and \
                not isinstance(value.value, bool):
            return value.value
        return None

    def name(self, node):
        name = node.id
        self.load_log.append((name, self.env.get(name)))
        if name in self.env:
            value = self.env[name]
            if isinstance(value, SAmbiguous):
                raise self.error(node, value.message, "pytree")
            if name in self.materialize and _scalar_like(value):
                return node
            return value
        if name in self.locals:
            return node
        return self.free_name(node)

    def free_name(self, node):
        """A name neither local nor a parameter: a global or a closure variable."""
        name = node.id
        fsrc = self.fsrc
        if name not in fsrc.namespace:
            return node                    # builtins, or undefined (normalize names it)
        value = fsrc.namespace[name]
        getter, key = self.getter_of(name)
        where = f"{fsrc.filename}:{node.lineno}: {name!r}"
        if isinstance(value, types.ModuleType) or isinstance(value, type):
            return node
        if callable(value) and not isinstance(value, np.ndarray):
            func = getattr(value, "py_func", value)
            if isinstance(func, (types.FunctionType, SourceFunction)) or is_library_function(value):
                return SFunc(value, node=copy.deepcopy(node), fsrc=self.fsrc)
            return node
        if isinstance(value, (bool, int, np.integer, np.bool_, str)) or value is None:
            if getter is not None:
                self.prep.guard(key, getter, value, where)
            return SConst(value.item() if isinstance(value, np.generic) else value)
        if _capturable(value):
            if getter is None:
                return node
            return self.capture(key, name, getter, value, where, node)
        return node

    def getter_of(self, name):
        """How to read ``name`` at call time: (getter, identity) from the function's globals or
        closure cell."""
        func = self.fsrc.func
        func = getattr(func, "py_func", func)
        if isinstance(func, types.FunctionType):
            if func.__closure__ and name in func.__code__.co_freevars:
                cell = func.__closure__[func.__code__.co_freevars.index(name)]
                return (lambda cell=cell: cell.cell_contents), ("cell", id(cell))
            globs = func.__globals__
            if name in globs:
                return (lambda g=globs, n=name: g[n]), ("global", id(globs), name)
        return None, None

    def capture(self, key, name, getter, value, where, node):
        capture = self.prep.capture(key, name, getter, value, where)
        if key not in self.capture_params:
            names = []
            kinds = []
            for leaf in pytree.leaves(value):
                placeholder = self.prep.placeholder("c")
                self.prepared.hints[placeholder] = name if not pytree.is_container(value) else \
                    f"{name}_{len(names)}"
                names.append(placeholder)
                kinds.append(_leaf_kind(leaf))
            self.capture_params[key] = names
            self.prepared.captures.append(key)
        names = iter(zip(self.capture_params[key], [_leaf_kind(v) for v in pytree.leaves(value)]))
        return _static_of(capture.treedef, value, names)

    def module_function(self, node):
        """``np.tanh``, ``mymodule.helper``: a function reached through a module, as a value."""
        root = node
        while isinstance(root, ast.Attribute):
            root = root.value
        if not isinstance(root, ast.Name) or root.id in self.locals or root.id in self.env:
            return None
        try:
            value = self.fsrc.resolve(node)
        except KeyError:
            return None
        if isinstance(value, type) or not callable(value) or isinstance(value, np.ndarray):
            return None
        func = getattr(value, "py_func", value)
        if isinstance(func, types.FunctionType) or is_library_function(value):
            return SFunc(value, node=copy.deepcopy(node), fsrc=self.fsrc)
        return None

    def bound(self, value, node):
        """``value`` with the free variables of every lifted function in it bound now (a lambda
        passed to a helper carries the values its free variables have at the call)."""
        if isinstance(value, SFunc) and isinstance(value.target, LocalDef) and value.free is None:
            free = []
            for name in value.target.free_names:
                item = self.value(ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node))
                free.append(self.bound(item, node) if isinstance(item, Static) else SLeaf(name))
            return SFunc(value.target, free)
        if isinstance(value, SSeq):
            return SSeq(value.cls, [self.bound(v, node) for v in value.items])
        if isinstance(value, SDict):
            return SDict(value.keys, [self.bound(v, node) for v in value.items])
        return value

    def local_function(self, fdef, name):
        params = {a.arg for a in fdef.args.args}
        inner_locals = params | _stored_names(fdef.body)
        loaded = set()
        for stmt in fdef.body:
            loaded |= _loaded_names(stmt)
        free = sorted(n for n in loaded - inner_locals if n in self.locals or n in self.env)
        if name in free:
            raise self.error(fdef, f"recursion: the nested function {name!r} calls itself; "
                             "srcgrad needs loops instead", "recursion")
        target = LocalDef(fdef, self.fsrc, free, name)
        self.prep.func_targets[target.key] = target
        return SFunc(target)

    def call(self, node):
        func = node.func
        if isinstance(func, ast.Name) and func.id == "len" and "len" not in self.locals and \
                len(node.args) == 1 and not node.keywords and "len" not in self.fsrc.namespace:
            arg = self.value(node.args[0])
            if isinstance(arg, (SSeq, SDict)):
                return SConst(len(arg.items))
            node.args = [self.as_expr(arg, node.args[0])]
            return node
        if isinstance(func, ast.Name) and func.id == "sum" and "sum" not in self.locals and \
                "sum" not in self.fsrc.namespace and len(node.args) == 1 and not node.keywords:
            # sum over a sequence of known length (a pytree, a comprehension over one): a + b + ...
            items = self.value(node.args[0])
            if isinstance(items, SSeq) and items.items:
                items = self.as_expr(items, node, sequence_ok=True)
            if isinstance(items, (ast.Tuple, ast.List)) and items.elts and \
                    not any(isinstance(e, ast.Starred) for e in items.elts):
                total = items.elts[0]
                for elt in items.elts[1:]:
                    total = ast.copy_location(ast.BinOp(left=total, op=ast.Add(), right=elt), node)
                return total
            node.args = [self.as_expr(items, node.args[0])]
            return node
        callee = self.value(func) if isinstance(func, (ast.Name, ast.Attribute)) else None
        if isinstance(callee, SFunc):
            target = callee.target
            if isinstance(target, LocalDef) or is_user_function(target):
                return self.helper_call(node, callee)
            node.func = self.as_expr(callee, func)
        elif isinstance(func, (ast.Name, ast.Attribute)):
            node.func = self.as_expr(callee, func) if callee is not None else func
        else:
            node.func = self.load(func)
        args = []
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                self.generic(arg)
                args.append(arg)
            else:
                args.append(self.load(arg, sequence_ok=True))
        node.args = args
        for kw in node.keywords:
            kw.value = self.load(kw.value)
        return node

    def helper_call(self, node, callee):
        target = callee.target
        if isinstance(target, LocalDef):
            fdef = target.node
            names = [a.arg for a in fdef.args.args]
            defaults = [d.value for d in fdef.args.defaults]
            label = target.name
        else:
            func = unwrap_function(target)
            signature = inspect.signature(func)
            names = []
            defaults = []
            for p in signature.parameters.values():
                if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY):
                    return self.plain_call(node)     # *args/**kwargs/kw-only: check.py names it
                names.append(p.name)
                if p.default is not p.empty:
                    defaults.append(p.default)
            label = func.__name__
        if any(isinstance(a, ast.Starred) for a in node.args) or any(kw.arg is None for kw in node.keywords):
            raise self.error(node, f"*args/**kwargs in the call of {label} are not supported",
                             "*args/**kwargs call")
        if len(node.args) > len(names):
            raise self.error(node, f"{label} takes {len(names)} arguments, {len(node.args)} given",
                             "call arguments")
        given = {}
        for name, arg in zip(names, node.args):
            given[name] = arg
        for kw in node.keywords:
            if kw.arg not in names:
                raise self.error(node, f"{label} has no parameter {kw.arg!r}", "call arguments")
            if kw.arg in given:
                raise self.error(node, f"{label} got two values for {kw.arg!r}", "call arguments")
            given[kw.arg] = kw.value
        first_default = len(names) - len(defaults)
        static_names = set()
        while True:
            try:
                return self.bound_call(node, callee, names, given, defaults, first_default, label,
                                       static_names)
            except UnsupportedSyntaxError as exc:
                # a helper indexing a pytree by a parameter given a constant: specialize on it
                name = getattr(exc, "static_name", None)
                if name is None or name in static_names or name not in names or \
                        getattr(exc, "function", None) is None or \
                        exc.function.target is not target and \
                        getattr(exc.function.target, "key", None) != getattr(target, "key", 0):
                    raise
                static_names.add(name)

    def bound_call(self, node, callee, names, given, defaults, first_default, label, static_names):
        target = callee.target
        descs, flat = [], []
        for k, name in enumerate(names):
            if name in given:
                value = self.value(copy.deepcopy(given[name]))
                if name in static_names:
                    constant = self.static_int(copy.deepcopy(given[name]))
                    if constant is not None:
                        value = SConst(constant)
            elif k >= first_default:
                value = self.default_value(defaults[k - first_default], node, label, name)
            else:
                raise self.error(node, f"{label}() missing argument {name!r}", "call arguments")
            if isinstance(value, SLeaf):
                value = self.as_expr(value, node)
            if isinstance(value, Static):
                value = self.bound(value, node)
                descs.append(describe(value, self.prep.func_targets))
                flat += flat_atoms(value, node)
            else:
                descs.append(None)
                flat.append(value)
        if isinstance(target, LocalDef):
            free = callee.free
            if free is None:            # late binding: the free variables' values now
                free = []
                for name in target.free_names:
                    value = self.value(ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node))
                    free.append(value if isinstance(value, Static) else SLeaf(name))
            for value in free:
                descs.append(describe(value, self.prep.func_targets) if not isinstance(value, SLeaf) else None)
                flat += flat_atoms(value, node)
            lifted = copy.deepcopy(target.node)
            lifted.args = ast.arguments(posonlyargs=[], args=list(lifted.args.args) +
                                        [ast.arg(arg=n) for n in target.free_names],
                                        vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None,
                                        defaults=[])
            call_target = LocalDef(lifted, target.fsrc, target.free_names, target.name)
            call_target.key = target.key
            self.prep.func_targets[target.key] = target
            prepared = self.prep.prepare(call_target, tuple(descs), call_node=node, caller=self.prepared)
        else:
            prepared = self.prep.prepare(target, tuple(descs), call_node=node, caller=self.prepared)
        self.prepared.callees.append(prepared)
        for key in prepared.captures:
            capture = self.prep.captures[key]
            if key not in self.capture_params:
                self.capture(key, capture.name, capture.getter, capture.value, capture.where, node)
            for placeholder in self.capture_params[key]:
                flat.append(ast.copy_location(ast.Name(id=placeholder, ctx=ast.Load()), node))
        direct = (prepared.trivial and isinstance(node.func, ast.Name) and
                  node.func.id == prepared.fsrc.name and node.func.id not in self.env and
                  self.fsrc.namespace.get(node.func.id) is target)
        if not direct:
            node.func = ast.copy_location(ast.Name(id=prepared.placeholder, ctx=ast.Load()), node.func)
        node.args = flat
        node.keywords = []
        return node

    def plain_call(self, node):
        node.args = [self.load(a) for a in node.args]
        for kw in node.keywords:
            kw.value = self.load(kw.value)
        return node

    def default_value(self, value, node, label, name):
        if value is None:
            return SConst(None)
        if isinstance(value, (bool, int, float, np.integer, np.floating, np.bool_)):
            value = value.item() if isinstance(value, np.generic) else value
            if isinstance(value, float) and not math.isfinite(value):
                raise self.error(node, f"default {name}={value!r} of {label}: pass it explicitly",
                                 "default argument")
            return ast.copy_location(ast.Constant(value), node)
        if isinstance(value, str):
            return SConst(value)
        raise self.error(node, f"the default value of {label}'s parameter {name!r} "
                         f"({type(value).__name__}) is not supported: pass it explicitly",
                         "default argument")


def _static_of(treedef, value, names):
    tag = treedef[0]
    if tag == "leaf":
        name, kind = next(names)
        return SLeaf(name, kind)
    if tag == "none":
        return SConst(None)
    children = list(value.values()) if isinstance(value, dict) else list(value)
    items = [_static_of(child, v, names) for child, v in zip(treedef[-1], children)]
    if tag == "dict":
        return SDict(treedef[1], items)
    return SSeq(tag, items)


def _fold(node):
    """(value,) when ``node`` is an expression of constants srcgrad can evaluate, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, type(None), str)):
        return (node.value,)
    if isinstance(node, ast.UnaryOp):
        inner = _fold(node.operand)
        if inner is None:
            return None
        if isinstance(node.op, ast.Not):
            return (not inner[0],)
        if isinstance(node.op, ast.USub) and isinstance(inner[0], int):
            return (-inner[0],)
        return None
    if isinstance(node, ast.BoolOp):
        values = [_fold(v) for v in node.values]
        if any(v is None for v in values):
            return None
        result = values[0][0]
        for v in values[1:]:
            result = (result and v[0]) if isinstance(node.op, ast.And) else (result or v[0])
        return (result,)
    if isinstance(node, ast.BinOp) and type(node.op) in _FOLD_BINOPS:
        left, right = _fold(node.left), _fold(node.right)
        if left is None or right is None or not all(isinstance(v[0], int) for v in (left, right)):
            return None
        try:
            return (_FOLD_BINOPS[type(node.op)](left[0], right[0]),)
        except ZeroDivisionError:
            return None
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _FOLD_COMPARE:
        left, right = _fold(node.left), _fold(node.comparators[0])
        if left is None or right is None:
            return None
        try:
            return (_FOLD_COMPARE[type(node.ops[0])](left[0], right[0]),)
        except TypeError:
            return None
    return None


def _op_text(op):
    return {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}.get(type(op), "op")
