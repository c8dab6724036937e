"""The rewriter of one function: its parameters, statements and control flow.

:class:`FunctionRewriter` walks a function's body once per static signature, keeping an environment
of what each name statically holds (:mod:`.values`); the expressions and calls are rewritten by
its base class (:mod:`.expressions`).
"""
import ast
import copy
import itertools

from ..errors import SrcgradError
from .expressions import ExpressionRewriter
from .syntax import _fold, _op_text, _stored_names
from .values import (LocalDef, NeedStatic, SAmbiguous, SConst, SDict, SExpr, SFunc, SLeaf, SReturned,
                     SSeq, Static, _same, _scalar_like, from_template, template)


class FunctionRewriter(ExpressionRewriter):
    """Rewrite one function for one static signature (see the package docstring)."""

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
        self.vararg = tree.args.vararg.arg if tree.args.vararg is not None else None
        self.locals = set(params) | {self.vararg} - {None} | _stored_names(tree.body)
        self.plain_params = set()
        self.structured = {}          # name -> its pytree with leaves in variables of their own

    def error(self, node, message, construct):
        return self.fsrc.error(node, message, construct)

    # -- the function --------------------------------------------------------------------------
    def run(self):
        tree = self.tree
        args = tree.args
        params = self.params
        if args.vararg and not (args.kwarg or args.kwonlyargs or args.posonlyargs) and \
                len(self.descs) == len(params) + 1:
            params = params + [self.vararg]     # a helper's `*args`: a tuple pytree (bound_call)
        elif args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs:
            return tree                 # check.py names it
        if len(self.descs) != len(params):
            raise SrcgradError(f"{self.fsrc.filename}:{tree.lineno}: {self.fsrc.name} takes "
                               f"{len(params)} arguments, called with {len(self.descs)}")
        new_params = []
        for name, desc in zip(params, self.descs):
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
        if new_params + hidden != self.params or args.vararg:
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
        if tag in ("tuple", "list", "namedtuple"):
            items, names = [], []
            fields = desc[1]._fields if tag == "namedtuple" else None
            for k, child in enumerate(desc[-1]):
                item, more = self.rebuild(child, f"{stem}_{fields[k] if fields else k}")
                items.append(item)
                names += more
            if tag == "namedtuple":
                return SSeq("tuple", items, ntype=desc[1]), names
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
            if stmt.value is None:
                return [stmt]
            value = self.value(stmt.value)
            flat = isinstance(value, SSeq) and value.ntype is None and \
                all(isinstance(i, (SLeaf, SConst)) for i in value.items)    # a runtime tuple
            if isinstance(value, (SSeq, SDict, SReturned)) and not flat and not self.prepared.is_root:
                return self.return_pytree(value, stmt)
            stmt.value = self.as_expr(value, stmt.value, sequence_ok=True)
            self.prepared.plain_return = stmt
            self.one_structure(stmt)
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
            if isinstance(value, SReturned):
                value = self.materialized(value, "out", stmt, out)
            if isinstance(value, SSeq):
                if any(isinstance(e, ast.Starred) for e in target.elts):
                    raise self.error(stmt, "starred unpacking of a pytree is not supported",
                                     "pytree unpacking")
                if len(target.elts) != len(value.items):
                    raise self.error(stmt, f"cannot unpack a pytree of {len(value.items)} items into "
                                     f"{len(target.elts)} names", "pytree unpacking")
                # `x, y, W = x + 1, x * 2, params[0]`: every value first, as Python does
                value = SSeq(value.cls, [
                    self.materialized(item, elt.id if isinstance(elt, ast.Name) else "v", stmt, out)
                    if isinstance(item, SExpr) else item
                    for elt, item in zip(target.elts, value.items)], value.ntype)
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
        if isinstance(value, SExpr):
            value = value.node                  # one runtime value: a plain assignment
        elif isinstance(value, (SSeq, SDict, SReturned)):
            value = self.materialized(value, name, stmt, out)
        if isinstance(value, Static):
            self.env[name] = value
            if name in self.materialize:
                fixed = self.structured.get(name)
                if fixed is not None and not _scalar_like(value):
                    try:
                        shape, leaves = template(value)
                    except TypeError:
                        shape = None
                    if shape == template(fixed)[0]:     # the same structure: new leaf values
                        out.append(self.assign_leaves([leaf.name for leaf in template(fixed)[1]],
                                                      leaves, stmt))
                        self.env[name] = fixed
                        return
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

    def return_pytree(self, value, stmt):
        """A helper returning a pytree (``return {"h": h, "c": c}``): it returns the tuple of the
        runtime leaves; its callers rebuild the structure (:class:`SReturned`)."""
        out = []
        if _holds_returned(value):       # the helper's call once, before the return
            value = self.materialized(value, "out", stmt, out)
        try:
            shape, leaves = template(value)
        except TypeError:
            raise self.error(stmt, f"a helper returning {self.what(value)} is not supported "
                             "(return arrays, numbers, or tuples, lists and dicts of them)",
                             "returned pytree") from None
        if self.prepared.returns not in (None, shape):
            raise self.error(stmt, f"{self.fsrc.name} returns pytrees of different structures",
                             "returned pytree")
        self.prepared.returns = shape
        self.one_structure(stmt)
        result = ast.Tuple(elts=[self.as_expr(leaf, stmt) for leaf in leaves], ctx=ast.Load())
        for node in ast.walk(result):
            ast.copy_location(node, stmt)
        stmt.value = result
        return out + [stmt]

    def one_structure(self, stmt):
        if self.prepared.returns is not None and self.prepared.plain_return is not None:
            raise self.error(stmt, f"{self.fsrc.name} returns pytrees of different structures "
                             f"(a pytree and, at line {self.prepared.plain_return.lineno}, a plain "
                             "value)", "returned pytree")

    def materialized(self, value, stem, stmt, out):
        """``value`` with each runtime item of a pytree built here (:class:`SExpr`) computed once,
        into a variable of its own (``d = {"a": x * 2}`` -> ``d_a = x * 2``)."""
        if isinstance(value, SExpr):
            name = self.prep.placeholder()
            self.prepared.hints[name] = stem
            out.append(ast.copy_location(ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())],
                                                    value=value.node), stmt))
            return SLeaf(name)
        if isinstance(value, SReturned):        # the call once, then its leaves
            result = self.materialized(SExpr(value.call), stem, stmt, out)
            leaves = (SExpr(ast.copy_location(ast.Subscript(
                value=ast.Name(id=result.name, ctx=ast.Load()), slice=ast.Constant(k),
                ctx=ast.Load()), stmt)) for k in itertools.count())
            return self.materialized(from_template(value.shape, leaves), stem, stmt, out)
        if isinstance(value, SSeq):
            return SSeq(value.cls, [self.materialized(v, f"{stem}_{k}", stmt, out)
                                    for k, v in enumerate(value.items)], value.ntype)
        if isinstance(value, SDict):
            return SDict(value.keys, [self.materialized(v, f"{stem}_{k}", stmt, out)
                                      for k, v in zip(value.keys, value.items)])
        return value

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
            elif self.carry_structure(name, value, stmt, pre):
                pass
            else:
                self.env[name] = SAmbiguous(
                    f"`{name}` refers to {self.what(value)} before line {stmt.lineno} and to other "
                    "values inside it; srcgrad resolves pytrees at specialization time", stmt.lineno)
        return pre

    def carry_structure(self, name, value, stmt, pre):
        """A pytree rebound inside a loop or branch (``state = cell(params, x, state)``): its
        runtime leaves become variables of their own (``state_h``, ``state_c``), assigned before
        it and at every rebinding of ``name`` to a pytree of the same structure (bind_name)."""
        try:
            shape, leaves = template(value)
        except TypeError:           # functions, ...: resolved statically only
            return False
        if not leaves:
            return False
        names = []
        for k, leaf in enumerate(leaves):
            fixed = self.prep.placeholder()
            self.prepared.hints[fixed] = f"{name}_{k}"
            names.append(fixed)
        pre.append(self.assign_leaves(names, leaves, stmt))
        fixed = from_template(shape, iter([SLeaf(n) for n in names]))
        self.structured[name] = fixed
        self.env[name] = fixed
        return True

    def assign_leaves(self, names, leaves, stmt):
        """``a, b = x, y``: every value first (a leaf may be another's old value)."""
        targets = [ast.Name(id=n, ctx=ast.Store()) for n in names]
        values = [self.as_expr(leaf, stmt) for leaf in leaves]
        node = ast.Assign(targets=[ast.Tuple(elts=targets, ctx=ast.Store())] if len(names) > 1 else targets,
                          value=ast.Tuple(elts=values, ctx=ast.Load()) if len(names) > 1 else values[0])
        for sub in ast.walk(node):
            ast.copy_location(sub, stmt)
        return node

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
            if value is not None and _same(value, self.structured.get(name)):
                continue                # a pytree carried in variables of its own
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


def _holds_returned(value):
    if isinstance(value, SReturned):
        return True
    return isinstance(value, (SSeq, SDict)) and any(_holds_returned(v) for v in value.items)
