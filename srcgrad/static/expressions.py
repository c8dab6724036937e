"""The rewriter of one function, continued: expressions, names, and calls of helpers.

:class:`ExpressionRewriter` is the base of :class:`~.function.FunctionRewriter`: it rewrites one
expression to a :class:`~.values.Static` when its value is known at specialization time (a pytree,
a constant, a function), else to an expression; calls of user functions become calls of their
specialized copies with flat arguments.
"""
import ast
import copy
import inspect
import math
import types

import numpy as np

from .. import pytree
from ..errors import UnsupportedSyntaxError
from ..parse import SourceFunction, unwrap_function
from .syntax import _constant_value, _fold, _loaded_names, _stored_names
from .values import (LocalDef, NeedStatic, SAmbiguous, SConst, SDict, SExpr, SFunc, SLeaf, SReturned,
                     SSeq, Static, _capturable, _leaf_kind, _scalar_like, _static_of, describe, flat_atoms,
                     is_library_function, is_user_function)


class ExpressionRewriter:
    """Expressions of the function being rewritten (state set up by FunctionRewriter)."""

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
            base = self.value(node.value)
            if isinstance(base, SSeq) and base.ntype is not None and \
                    node.attr in base.ntype._fields:
                return base.items[base.ntype._fields.index(node.attr)]      # a namedtuple field
            node.value = self.as_expr(base, node.value)
            return node
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
        if isinstance(node, ast.Dict):
            return self.dict_literal(node)
        if isinstance(node, (ast.Tuple, ast.List)) and \
                not any(isinstance(e, ast.Starred) for e in node.elts):
            return self.sequence_literal(node)
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)):
            unrolled = self.comprehension(node)
            if unrolled is not None:
                return unrolled
            return self.masked_generic(node)
        if isinstance(node, (ast.SetComp, ast.DictComp)):
            return self.masked_generic(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.add(node)
        self.generic(node)
        folded = _fold(node)
        if folded is not None and isinstance(node, (ast.BinOp, ast.UnaryOp, ast.BoolOp)):
            return ast.copy_location(ast.Constant(folded[0]), node)
        return node

    def literal_item(self, node):
        """An item of a pytree built here: a Static, or the expression computing it."""
        if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, str)):
            return SConst(node.value)
        value = self.value(node)
        return value if isinstance(value, Static) else SExpr(value)

    def dict_literal(self, node):
        """``{"W": W, "b": b * 2}`` with constant keys: a dict pytree (its values evaluated once,
        where it is bound to a name)."""
        keys = []
        for key in node.keys:
            known = None if key is None else self.value(copy.deepcopy(key))
            known = known.value if isinstance(known, (SConst, ast.Constant)) else None
            if not isinstance(known, (str, int)) or isinstance(known, bool) or known in keys:
                raise self.error(node, "a dict built in the function needs distinct constant string "
                                 f"or int keys (`{ast.unparse(node)}`)", "dict literal")
            keys.append(known)
        return SDict(keys, [self.literal_item(v) for v in node.values])

    def sequence_literal(self, node):
        """``(W, b)``, ``[layer1, layer2]``: a pytree when an item is one (``(params[0], x)``),
        else the literal (a runtime tuple)."""
        values = [self.value(e) for e in node.elts]
        if not any(isinstance(v, (SSeq, SDict, SFunc, SExpr)) for v in values):
            node.elts = [self.as_expr(v, e) for v, e in zip(values, node.elts)]
            return node
        items = [v if isinstance(v, Static) else SExpr(v) for v in values]
        return SSeq("list" if isinstance(node, ast.List) else "tuple", items)

    def add(self, node):
        """``a + b``; a tuple or list pytree joined with another or with a literal (``args +
        (ones,)``) is joined here: a pytree when both are, else a literal of their elements."""
        left, right = self.value(node.left), self.value(node.right)
        cls = {SSeq: lambda v: v.cls, ast.Tuple: lambda v: "tuple", ast.List: lambda v: "list"}
        kinds = [cls[type(v)](v) if type(v) in cls else None for v in (left, right)]
        if None not in kinds and kinds[0] == kinds[1]:
            if isinstance(left, SSeq) and isinstance(right, SSeq):
                return SSeq(left.cls, left.items + right.items)
            elts = []
            for part in (left, right):
                part = self.as_expr(part, node, sequence_ok=True)
                if isinstance(part, ast.List):
                    part = ast.Tuple(elts=part.elts, ctx=ast.Load())
                if not isinstance(part, ast.Tuple) or \
                        any(isinstance(e, ast.Starred) for e in part.elts):
                    return self.as_expr(left, node)     # names what cannot be joined
                elts += part.elts
            joined = ast.Tuple(elts=elts, ctx=ast.Load()) if kinds[0] == "tuple" else \
                ast.List(elts=elts, ctx=ast.Load())
            return ast.copy_location(joined, node)
        node.left, node.right = self.as_expr(left, node.left), self.as_expr(right, node.right)
        folded = _fold(node)
        if folded is not None:
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
        if isinstance(value, SExpr):
            return value.node
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
                from ..normalize import func_expression
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
        if isinstance(value, SReturned):
            return f"the pytree {value.label} returns (assign it to a name first)"
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
            return SSeq(value.cls, [self.bound(v, node) for v in value.items], value.ntype)
        if isinstance(value, SDict):
            return SDict(value.keys, [self.bound(v, node) for v in value.items])
        return value

    def local_function(self, fdef, name):
        params = {a.arg for a in fdef.args.args + fdef.args.kwonlyargs}
        params |= {a.arg for a in (fdef.args.vararg, fdef.args.kwarg) if a is not None}
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
        if isinstance(func, ast.Name) and func.id == "dict" and "dict" not in self.locals and \
                "dict" not in self.fsrc.namespace and not node.args and \
                all(kw.arg is not None for kw in node.keywords):
            # dict(W=W, b=b): a dict pytree, as the literal
            return SDict([kw.arg for kw in node.keywords],
                         [self.literal_item(kw.value) for kw in node.keywords])
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
        ntype = self.namedtuple_class(func)
        if ntype is not None:
            return self.namedtuple_literal(node, ntype)
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

    def spread(self, args):
        """``f(*params)`` with ``params`` a tuple/list pytree (or a literal): its items, as
        ``params[0], params[1], ...``; other starred arguments are left for the caller to refuse."""
        out = []
        for arg in args:
            if isinstance(arg, ast.Starred):
                if isinstance(arg.value, (ast.Tuple, ast.List)) and \
                        not any(isinstance(e, ast.Starred) for e in arg.value.elts):
                    out += arg.value.elts
                    continue
                seq = self.value(copy.deepcopy(arg.value))
                if isinstance(seq, SSeq):
                    out += [ast.copy_location(ast.Subscript(value=copy.deepcopy(arg.value),
                                                            slice=ast.Constant(k), ctx=ast.Load()), arg)
                            for k in range(len(seq.items))]
                    continue
            out.append(arg)
        return out

    def namedtuple_class(self, func):
        """The namedtuple class ``func`` names (``Layer`` in ``Layer(W, b)``), else None."""
        root = func
        while isinstance(root, ast.Attribute):
            root = root.value
        if not isinstance(root, ast.Name) or root.id in self.locals or root.id in self.env:
            return None
        try:
            value = self.fsrc.resolve(func)
        except (KeyError, AttributeError):
            return None
        if isinstance(value, type) and issubclass(value, tuple) and \
                isinstance(getattr(value, "_fields", None), tuple) and hasattr(value, "_make"):
            return value
        return None

    def namedtuple_literal(self, node, ntype):
        """``Layer(W * 2, b)``: a namedtuple pytree built here."""
        fields = ntype._fields
        given = {}
        if any(isinstance(a, ast.Starred) for a in node.args) or len(node.args) > len(fields) or \
                any(kw.arg not in fields for kw in node.keywords):
            raise self.error(node, f"`{ast.unparse(node)}`: build a {ntype.__name__} from its "
                             f"fields {fields} by position or name", "namedtuple")
        for field, arg in zip(fields, node.args):
            given[field] = arg
        for kw in node.keywords:
            given[kw.arg] = kw.value
        items = []
        defaults = getattr(ntype, "_field_defaults", {})
        for field in fields:
            if field in given:
                items.append(self.literal_item(given[field]))
            elif field in defaults and (defaults[field] is None or
                                        isinstance(defaults[field], (bool, int, str))):
                items.append(SConst(defaults[field]))
            else:
                raise self.error(node, f"{ntype.__name__}() missing field {field!r}", "namedtuple")
        return SSeq("tuple", items, ntype)

    def helper_call(self, node, callee):
        target = callee.target
        vararg = None                # the name of a `*args` parameter: a tuple of the extra arguments
        if isinstance(target, LocalDef):
            fdef = target.node
            names = [a.arg for a in fdef.args.args]
            defaults = [d.value for d in fdef.args.defaults]
            label = target.name
            if fdef.args.vararg is not None:
                vararg = fdef.args.vararg.arg
        else:
            func = unwrap_function(target)
            signature = inspect.signature(func)
            names = []
            defaults = []
            for p in signature.parameters.values():
                if p.kind == p.VAR_POSITIONAL:
                    vararg = p.name
                    continue
                if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY):
                    return self.plain_call(node)     # **kwargs/kw-only: check.py names it
                names.append(p.name)
                if p.default is not p.empty:
                    defaults.append(p.default)
            label = func.__name__
        node.args = self.spread(node.args)
        if any(isinstance(a, ast.Starred) for a in node.args) or any(kw.arg is None for kw in node.keywords):
            raise self.error(node, f"*args/**kwargs in the call of {label} are not supported "
                             "(`*xs` is spread when xs is a pytree or a literal)",
                             "*args/**kwargs call")
        if len(node.args) > len(names) and vararg is None:
            raise self.error(node, f"{label} takes {len(names)} arguments, {len(node.args)} given",
                             "call arguments")
        extra = node.args[len(names):]
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
                                       static_names, vararg, extra)
            except UnsupportedSyntaxError as exc:
                # a helper indexing a pytree by a parameter given a constant: specialize on it
                name = getattr(exc, "static_name", None)
                if name is None or name in static_names or name not in names or \
                        getattr(exc, "function", None) is None or \
                        exc.function.target is not target and \
                        getattr(exc.function.target, "key", None) != getattr(target, "key", 0):
                    raise
                static_names.add(name)

    def bound_call(self, node, callee, names, given, defaults, first_default, label, static_names,
                   vararg=None, extra=()):
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
            if isinstance(value, (SLeaf, SExpr)):
                value = self.as_expr(value, node)
            if isinstance(value, SReturned):
                raise self.error(node, f"{self.what(value)} passed to {label}", "returned pytree")
            if isinstance(value, Static):
                value = self.bound(value, node)
                descs.append(describe(value, self.prep.func_targets))
                flat += flat_atoms(value, node)
            else:
                descs.append(None)
                flat.append(value)
        if vararg is not None:
            # `*args`: a tuple pytree of the extra arguments (runtime values are its leaves)
            items = []
            for arg in extra:
                value = self.value(copy.deepcopy(arg))
                if isinstance(value, (SLeaf, SExpr)):
                    value = self.as_expr(value, node)
                if isinstance(value, SReturned):
                    raise self.error(node, f"{self.what(value)} passed to {label}", "returned pytree")
                if isinstance(value, Static):
                    value = self.bound(value, node)
                    items.append(describe(value, self.prep.func_targets))
                    flat += flat_atoms(value, node)
                else:
                    items.append(("leaf", None))
                    flat.append(value)
            descs.append(("tuple", tuple(items)))
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
            star = [lifted.args.vararg] if lifted.args.vararg is not None else []
            lifted.args = ast.arguments(posonlyargs=[], args=list(lifted.args.args) + star +
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
        if prepared.returns is not None:            # a pytree: rebuilt where it is bound
            return SReturned(node, prepared.returns, label)
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
