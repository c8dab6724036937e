"""The plan: every function of one specialization, rewritten (:func:`make_plan`)."""
import ast
import copy
import itertools
import keyword

import numpy as np

from .. import pytree
from ..errors import SrcgradError
from ..parse import FunctionSource, SourceFunction, read_function, unwrap_function
from .function import FunctionRewriter
from .syntax import _identifier, _rename
from .values import Capture, LocalDef, _leaf_kind


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
        self.is_root = False
        self.returns = None       # a helper returning a pytree: its shape (static.values.template)
        self.plain_return = None  # a `return` of a plain value (never mixed with pytree returns)


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
    if pytree.is_namedtuple(value):
        return ("namedtuple", type(value), tuple(_desc_from_value(v) for v in value))
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
        self.root = None          # the Prepared of the differentiated function

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
            prepared.is_root = root
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
        if root:
            self.root = prepared
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
        # the differentiated function chooses first: it keeps its own name in generated code
        functions = sorted((p for p in self.functions if not p.trivial),
                           key=lambda p: p is not self.root)
        taken = set()
        for prepared in self.functions:
            for node in ast.walk(prepared.tree):
                if isinstance(node, ast.Name) and not node.id.startswith("__sg"):
                    taken.add(node.id)
            if prepared.trivial:
                taken.add(prepared.fsrc.name)
        names = {p.placeholder: p.fsrc.name for p in self.functions if p.trivial}
        for prepared in functions:
            if isinstance(prepared.target, LocalDef):      # a nested def or lambda: its own name
                stem = prepared.target.name
            else:
                stem = prepared.fsrc.name if prepared.fsrc.name.isidentifier() else "lambda"
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
