"""Part of the fence (check.py): refuse in-place writes into a view of another array.

NumPy's ``r = np.transpose(a)`` (and ``a.T``, ``a.reshape(...)``, basic slices ``a[0]``, ``a[...]``,
one-operand ``np.einsum`` ...) returns a *view*: ``r[0, 0] = 0.0`` then also changes ``a`` (the
caller's array, when ``a`` is an argument). srcgrad's transform treats ``r = view(a)`` as a new
value, so the write is invisible to ``a`` in the reverse sweep and the gradient came out silently
wrong. Until aliasing is modelled, such a write is refused at the fence, naming the line and the
view, with the way out (write into a copy). ``r = a`` (a second name for the same array) is
refused in the same way.

The scan is flow-ordered but simple: a name is "a view of X" from an assignment that binds it to a
view of X until an assignment binds it to something else; loop bodies are scanned twice so a view
bound late in one iteration is seen by a write early in the next; after an ``if`` a name is what
either branch made it. Python containers hold references, so a tuple or list is tracked item by
item (:class:`_Items`): literals ``(a.T, b)``, lists built with ``append``, comprehensions,
``list(a)``, ``np.split``, and a helper's returned tuple (what each item of it is, read from the
helper's returns: a view of which parameter). A name taken out of a named container (unpacked,
indexed, a loop item) is the container's item, so writing into it is refused even when the item is
a new array (``p, q = t; p[0] = 1.0`` also changes ``t[0]``). A helper that writes into (a view
of) its parameter changes the caller's array: those writes are returned to program.py, which
refuses them for helpers. ``z += y`` on a plain name may be scalar code: decided once the kinds
show ``z`` is an array.
"""
import ast
import types

import numpy as np

from . import naming as N
from .parse import SourceFunction, read_function

# np.<name>(x, ...) and x.<name>(...) that return a view of x (or x itself).
VIEW_FUNCTIONS = {"transpose", "reshape", "ravel", "swapaxes", "moveaxis", "squeeze", "diagonal",
                  "expand_dims", "einsum", "asarray", "asanyarray", "atleast_1d", "atleast_2d",
                  "atleast_3d", "broadcast_to", "flip", "fliplr", "flipud", "rot90", "real", "imag",
                  "rollaxis", "matrix_transpose", "permute_dims"}
# np.<name>(x, ...) that return a list of views of x
SPLIT_FUNCTIONS = {"split", "array_split", "vsplit", "hsplit", "dsplit", "unstack"}
VIEW_METHODS = {"transpose", "reshape", "ravel", "swapaxes", "squeeze", "diagonal", "view"}
VIEW_ATTRIBUTES = {"T", "mT", "real", "imag"}
# builtins whose result holds the items of their argument (the rows of an array: views)
SEQUENCE_BUILTINS = {"list", "tuple", "reversed"}

SECOND_NAME = "a second name for the same array"
SLICE = "a basic slice"
LOOP_ITEM = "an item of a for loop over it"
UNPACKED = "unpacked from it"
ITEM = "an item of it"
PARAMETER = "<parameter>"     # the function's own parameter (the caller's array), not a view

_DEFERRED = "<deferred>"       # not identifiers: the scan's lists of writes decided later
_PARAM_WRITES = "<parameter writes>"
_STALE = "<stale views>"       # name -> the error for reading it: a view whose base was written
_BOUND = "<binding order>"     # name -> when it was last bound (a view older than its base's
                               # latest binding is a view of an array no name holds any more)
_STATE_KEYS = (_DEFERRED, _PARAM_WRITES, _STALE, _BOUND)


class _Items:
    """What the items of a tuple or list are (a literal, a list built with ``append``, a helper's
    returned tuple): each None (a new array), a ``(base, construct)`` view, or an _Items; in order
    when ``known`` (a fixed length). One object per list, shared by every name bound to it, so an
    ``append`` through one name is seen through all."""

    def __init__(self, items, known=True):
        self.items = list(items)
        self.known = known

    def item(self, index=None):
        if self.known and isinstance(index, int) and -len(self.items) <= index < len(self.items):
            return self.items[index]
        return _union(self.items)

    def add(self, info):
        self.known = False
        self.items.append(info)


def _merge(a, b):
    """What a value is when it may be ``a`` or ``b`` (after an ``if``, two returns)."""
    if a is None or a is b:
        return b
    if b is None:
        return a
    if isinstance(a, _Items) and isinstance(b, _Items):
        if a.known and b.known and len(a.items) == len(b.items):
            return _Items([_merge(x, y) for x, y in zip(a.items, b.items)])
        return _Items([u for u in (_union(a.items), _union(b.items)) if u is not None], known=False)
    return b if isinstance(a, _Items) else a     # a view: its items are views of its base too


def _union(infos):
    out = None
    for info in infos:
        out = _merge(out, info)
    return out


def _view_of(info, construct):
    """A view (``construct``) of a value that is ``info``."""
    if info is None or isinstance(info, _Items):   # np.transpose([a, b]) is a new array
        return None
    return info[0], construct


def _alias(expr, views, fsrc=None):
    """What ``expr`` is: None (a new array or not an array), ``(base, construct)`` when it may be
    a view of (or the same array as) the array named ``base``, or an :class:`_Items`."""
    if isinstance(expr, ast.Name):
        known = views.get(expr.id)
        return known if isinstance(known, _Items) else (expr.id, SECOND_NAME)
    if isinstance(expr, (ast.Tuple, ast.List)):
        items, known = [], True
        for elt in expr.elts:
            if isinstance(elt, ast.Starred):
                known = False
                items.append(_item(elt.value, views, fsrc))
            else:
                items.append(_alias(elt, views, fsrc))
        return _Items(items, known)
    if isinstance(expr, (ast.ListComp, ast.GeneratorExp)):
        inner = dict(views)
        for generator in expr.generators:
            _bind_loop(generator.target, generator.iter, inner, fsrc)
        return _Items([_alias(expr.elt, inner, fsrc)], known=False)
    if isinstance(expr, ast.IfExp):
        return _merge(_alias(expr.body, views, fsrc), _alias(expr.orelse, views, fsrc))
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Mult)):
        # `[a[0]] + rows`, `(x,) * 2`: a new list of the same items (arrays: a new array)
        parts = [p for p in (_alias(expr.left, views, fsrc), _alias(expr.right, views, fsrc))
                 if isinstance(p, _Items)]
        return _Items([_union(p.items) for p in parts], known=False) if parts else None
    if isinstance(expr, ast.Attribute) and expr.attr in VIEW_ATTRIBUTES:
        return _view_of(_alias(expr.value, views, fsrc), f".{expr.attr}")
    if isinstance(expr, ast.Subscript):
        # basic indexing (ints, slices, ..., None) is a view; an index that is certainly an
        # array (a list literal or a comparison mask) makes a copy
        if any(isinstance(n, (ast.List, ast.Compare)) for n in ast.walk(expr.slice)):
            return None
        inner = _alias(expr.value, views, fsrc)
        if isinstance(inner, _Items):
            if isinstance(expr.slice, ast.Slice):          # rows[1:]: a new list, the same items
                return _Items([inner.item()], known=False)
            index = expr.slice.value if isinstance(expr.slice, ast.Constant) else None
            return _item(expr.value, views, fsrc, index, ITEM)
        return _view_of(inner, SLICE)
    if isinstance(expr, ast.Call):
        return _call_alias(expr, views, fsrc)
    return None


def view_bases(expr, fsrc=None):
    """The names of the arrays ``expr`` may be (or hold) a view of, read without the bindings of
    the statements before it (for passes that only need "may this alias ``name``?")."""
    info = _alias(expr, {}, fsrc)
    if isinstance(info, _Items):
        return {view[0] for view in _flat_views(info)}
    return set() if info is None else {info[0]}


def _item(expr, views, fsrc=None, index=None, construct=ITEM):
    """What an item of the sequence ``expr`` is (``index``: which one, when it is a constant)."""
    info = _alias(expr, views, fsrc)
    if isinstance(info, _Items):
        item = info.item(index)
        if item is None and isinstance(expr, ast.Name):
            return expr.id, construct      # a new array, but one the named list also holds
        return item
    return _view_of(info, construct)


def _is_numpy(node, fsrc):
    if isinstance(node, ast.Name) and node.id in ("np", "numpy"):
        return True
    try:
        return fsrc is not None and fsrc.resolve(node) is np
    except Exception:
        return False


def _call_alias(expr, views, fsrc):
    func = expr.func
    helper = _helper_alias(expr, views, fsrc)
    if helper is not _NOT_A_HELPER:
        return helper
    if isinstance(func, ast.Name) and func.id in SEQUENCE_BUILTINS and expr.args:
        return _Items([_item(expr.args[0], views, fsrc)], known=False)
    if not isinstance(func, ast.Attribute):
        return None
    is_np = _is_numpy(func.value, fsrc)
    if is_np and func.attr in VIEW_FUNCTIONS:
        operands = expr.args[1:] if func.attr == "einsum" else expr.args[:1]
        if func.attr == "einsum" and len(operands) != 1:
            return None                      # two or more operands: a new array
        if not operands:
            return None
        return _view_of(_alias(operands[0], views, fsrc), f"np.{func.attr}")
    if is_np and func.attr in SPLIT_FUNCTIONS and expr.args:
        view = _view_of(_alias(expr.args[0], views, fsrc), f"np.{func.attr}")
        return None if view is None else _Items([view], known=False)
    if is_np and func.attr == "array" and expr.args and any(
            k.arg == "copy" and isinstance(k.value, ast.Constant) and not k.value.value
            for k in expr.keywords):         # np.array(a, copy=False) is `a` itself
        return _view_of(_alias(expr.args[0], views, fsrc), "np.array(copy=False)")
    if not is_np and func.attr in VIEW_METHODS:
        return _view_of(_alias(func.value, views, fsrc), f".{func.attr}()")
    return None


# -- helpers: which parameters a helper's result is (a view of) ---------------------------------

_NOT_A_HELPER = object()


def _helper_alias(call, views, fsrc):
    """``h(a)`` where the helper ``h`` returns (a view of) its parameter: a view of ``a``; a
    returned tuple item by item. _NOT_A_HELPER when ``h`` is not a user function."""
    if fsrc is None or not isinstance(call.func, (ast.Name, ast.Attribute)):
        return _NOT_A_HELPER
    try:
        callee = fsrc.resolve(call.func)
    except Exception:                      # not a name srcgrad can resolve: not a helper
        return _NOT_A_HELPER
    callee = getattr(callee, "py_func", callee)          # a Numba dispatcher
    if not isinstance(callee, (types.FunctionType, SourceFunction)) or \
            (getattr(callee, "__module__", None) or "").split(".")[0] in ("numpy", "scipy", "srcgrad") \
            and not isinstance(callee, SourceFunction):
        return _NOT_A_HELPER               # library functions: VIEW_FUNCTIONS above
    return _instantiate(_summary(callee), call, views, fsrc, callee.__name__)


def _summary(callee, _seen=set()):
    """What ``callee`` returns, in terms of its parameters: None, ``(frozenset of (position,
    name), construct)`` for (a view of) those parameters, or an _Items of those."""
    if callee in _seen:                    # recursion is refused elsewhere
        return None
    if callee in _SUMMARIES:
        return _SUMMARIES[callee]
    _seen.add(callee)
    try:
        _SUMMARIES[callee] = summary = _summary_of(callee)
        return summary
    finally:
        _seen.discard(callee)


_SUMMARIES = {}     # callee -> summary, during one check_view_writes (helpers called many times)


def _summary_of(callee):
    try:
        helper = read_function(callee)
    except Exception:                  # no source: not a helper srcgrad differentiates
        return None
    params = [a.arg for a in helper.tree.args.args]
    views, returns = _seed(params), []
    try:
        _scan(helper, helper.tree.body, views, returns)
    except Exception:                  # its own fence reports it when it is differentiated
        return None
    result = None
    for value, at in returns:
        result = _merge(result, _summarize(_alias(value, at, helper), at, params))
    return result


def _seed(params):
    """The scan's state at a function's entry: each parameter is the caller's array."""
    return {p: (p, PARAMETER) for p in params}


def _summarize(info, at, params):
    if info is None:
        return None
    if isinstance(info, _Items):
        items = [_summarize(i, at, params) for i in info.items]
        return None if all(i is None for i in items) else _Items(items, info.known)
    found = frozenset((params.index(r), r) for r in _roots(info[0], at) if r in params)
    return (found, info[1]) if found else None


def _roots(name, at):
    """The names whose arrays ``name`` may be (a view of), following views and containers; a
    parameter counts only while it still names the caller's array."""
    out, stack, seen = set(), [name], set()
    while stack:
        n = stack.pop()
        if n in seen or n in _STATE_KEYS:
            continue
        seen.add(n)
        known = at.get(n)
        if isinstance(known, _Items):
            stack.extend(v[0] for v in _flat_views(known))
        elif known is not None:
            if known[1] == PARAMETER or known[0] == n:     # `p = p[0]`: a view of what p was
                out.add(n)
            else:
                stack.append(known[0])
    return out


def _flat_views(items):
    for info in items.items:
        if isinstance(info, _Items):
            yield from _flat_views(info)
        elif info is not None:
            yield info


def _instantiate(summary, call, views, fsrc, name):
    """A helper's summary at a call: its parameters replaced by what the arguments are."""
    if summary is None:
        return None
    if isinstance(summary, _Items):
        return _Items([_instantiate(s, call, views, fsrc, name) for s in summary.items], summary.known)
    found, _construct = summary
    if any(isinstance(a, ast.Starred) for a in call.args):     # positions unknown: any argument
        candidates = [a.value if isinstance(a, ast.Starred) else a for a in call.args]
    else:
        keywords = {k.arg: k.value for k in call.keywords}
        candidates = [call.args[k] if k < len(call.args) else keywords.get(p)
                      for k, p in sorted(found)]
    for arg in candidates:
        info = None if arg is None else _alias(arg, views, fsrc)
        if isinstance(info, _Items):
            return info
        if info is not None:
            return info[0], f"{name}() returns a view of its argument"
    return None


# -- the scan -----------------------------------------------------------------------------------

def check_view_writes(fsrc):
    """Raise UnsupportedSyntaxError at the first write into a (possible) view of another array.

    Returns [(name, error)]: augmented assignments ``name += ...`` of a view or alias, an error
    only when ``name`` is an array (see :func:`refuse_array_writes`), and the writes into (views
    of) the function's parameters, [(parameter, name or None, error)]: refused for helpers (see
    :func:`refuse_parameter_writes`)."""
    for node in ast.walk(fsrc.tree):
        if isinstance(node, ast.Call) and any(k.arg == "out" for k in node.keywords):
            raise fsrc.error(node, f"`{ast.unparse(node)}` writes its result into an existing array "
                             "(`out=`), which srcgrad does not track: assign the result instead "
                             "(`y = f(x)`)", "out= argument")
    views = _seed([a.arg for a in fsrc.tree.args.args])
    _SUMMARIES.clear()
    try:
        _scan(fsrc, fsrc.tree.body, views)
    finally:
        _SUMMARIES.clear()
    return WriteChecks(views.get(_DEFERRED, []), views.get(_PARAM_WRITES, []))


class WriteChecks(list):
    """The deferred augmented assignments (a list, as before), with ``parameter_writes``."""

    def __init__(self, deferred, parameter_writes):
        super().__init__(deferred)
        self.parameter_writes = parameter_writes


def _candidates(name, generated):
    """``name`` and the private copies normalize made of it (a loop variable ``r`` -> ``_r1``)."""
    stem = name.lstrip("_")
    return [name] + [g for g in generated if g.startswith(N.temporary(stem, "")) and
                     g[len(N.temporary(stem, "")):].isdigit()]


def refuse_array_writes(deferred, kinds, generated=()):
    """Raise the first deferred error whose name is an array under ``kinds`` (name -> Kind);
    ``generated``: normalize's names (a loop variable may have been renamed to a private one)."""
    for name, error in deferred:
        for candidate in _candidates(name, generated):
            kind = kinds.get(candidate)
            if kind is not None and kind.is_array:
                raise error


def refuse_parameter_writes(checks, params, arg_kinds):
    """A helper's writes into (views of) its array parameters change the caller's arrays, which
    srcgrad does not track: raise the first (``name``: decided by its kind, a plain ``p += ...``)."""
    for param, by_kind, error in getattr(checks, "parameter_writes", ()):
        if param in params and (not by_kind or arg_kinds[params.index(param)].is_array):
            raise error


def _scan(fsrc, body, views, returns=None):
    for stmt in body:
        _check_stale_reads(stmt, views)
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                _check_write(fsrc, stmt, target, views)
            for target in stmt.targets:
                _bind(target, stmt.value, views, fsrc)
        elif isinstance(stmt, ast.AugAssign):
            # `r += 1` on an array updates it in place: through a view, that is a write into
            # the base too
            if isinstance(stmt.target, ast.Name) and isinstance(views.get(stmt.target.id), _Items):
                views[stmt.target.id].add(_item(stmt.value, views, fsrc))     # rows += [a[0]]
            else:
                _check_write(fsrc, stmt, stmt.target, views, augmented=True)
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            _check_write(fsrc, stmt, stmt.target, views)
            _bind(stmt.target, stmt.value, views, fsrc)
        elif isinstance(stmt, ast.Expr):
            _container_call(stmt.value, views, fsrc)
        elif isinstance(stmt, ast.Return) and returns is not None and stmt.value is not None:
            returns.append((stmt.value, dict(views)))
        elif isinstance(stmt, (ast.For, ast.While)):
            if isinstance(stmt, ast.For):
                _bind_loop(stmt.target, stmt.iter, views, fsrc)
            for _ in range(2):
                _scan(fsrc, stmt.body, views, returns)
        elif isinstance(stmt, ast.If):
            shared = {key: views.setdefault(key, []) for key in (_DEFERRED, _PARAM_WRITES)}
            shared[_BOUND] = views.setdefault(_BOUND, {})
            after_body = dict(views)
            _scan(fsrc, stmt.body, after_body, returns)
            after_else = dict(views)
            _scan(fsrc, stmt.orelse, after_else, returns)
            views.clear()
            for name in (set(after_body) | set(after_else)) - set(_STATE_KEYS):
                # a view on either path may be one
                views[name] = _merge(after_else.get(name), after_body.get(name))
            # stale on either path may be stale
            views[_STALE] = {**after_else.get(_STALE, {}), **after_body.get(_STALE, {})}
            views.update(shared)            # (one list/dict each, shared by both copies)


def _container_call(call, views, fsrc):
    """``rows.append(a[0])``, ``rows.extend(...)``, ``rows.insert(0, x)``: the list holds it now."""
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and
            isinstance(call.func.value, ast.Name) and call.args):
        return
    name, method = call.func.value.id, call.func.attr
    if method == "append":
        info = _alias(call.args[0], views, fsrc)
    elif method == "extend":
        info = _item(call.args[0], views, fsrc)
    elif method == "insert" and len(call.args) == 2:
        info = _alias(call.args[1], views, fsrc)
    else:
        return
    if not isinstance(views.get(name), _Items):
        views[name] = _Items([], known=False)
    views[name].add(info)


def _bind(target, value, views, fsrc=None):
    if isinstance(target, ast.Name):
        _set(views, target.id, None if value is None else _alias(value, views, fsrc))
    elif isinstance(target, (ast.Tuple, ast.List)):
        same = isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts) \
            and not any(isinstance(e, ast.Starred) for e in value.elts + target.elts)
        if not same:
            _unpack(target, None if value is None else _alias(value, views, fsrc), value, views)
            return
        rebound = {elt.id for elt in target.elts if isinstance(elt, ast.Name)}
        infos = []                       # `r, s = a.T, b`: item by item, all read before binding
        for item in value.elts:
            if isinstance(item, ast.Name) and item.id in rebound:
                # `a, b = b, a`: swapped buffers, each still one name (a view stays a view)
                infos.append(views.get(item.id))
            else:
                infos.append(_alias(item, views, fsrc))
        for elt, info in zip(target.elts, infos):
            _bind_info(elt, info, views)


def _bind_info(target, info, views):
    if isinstance(target, ast.Name):
        _set(views, target.id, info)
    elif isinstance(target, ast.Starred):
        _bind_info(target.value, _Items([] if info is None else [info], known=False), views)
    elif isinstance(target, (ast.Tuple, ast.List)):
        _unpack(target, info, None, views)


def _unpack(target, info, value, views):
    """``p, q = value`` (``info``: what value is): each name is one of its items."""
    starred = any(isinstance(e, ast.Starred) for e in target.elts)
    for k, elt in enumerate(target.elts):
        if isinstance(info, _Items):
            item = info.item(None if starred else k)
            if item is None and isinstance(value, ast.Name):
                item = (value.id, UNPACKED)
        else:
            item = _view_of(info, UNPACKED)      # the rows of an array: views of it
        _bind_info(elt, item, views)


def _set(views, name, info):
    bound = views.setdefault(_BOUND, {})
    bound[name] = max(bound.values(), default=0) + 1        # later than every binding so far
    if name in views.get(_STALE, {}):
        views[_STALE] = {k: e for k, e in views[_STALE].items() if k != name}
    if info is not None and not isinstance(info, _Items) and info[0] == name:
        # `r = r[0]`: a view of what `r` was (a view of a view; the parameter itself)
        old = views.get(name)
        if isinstance(old, _Items):
            info = old.item()
        elif old is None:
            info = None                  # a view of an array no name holds any more
        else:
            info = (old[0], info[1])
    if info is None:
        views.pop(name, None)
    else:
        views[name] = info


def _bind_loop(target, iterable, views, fsrc=None):
    """``for row in a`` binds ``row`` to views of ``a``'s rows (also through enumerate, zip and
    reversed, which normalize.py turns into index loops ``row = a[i]``)."""
    if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name) and iterable.args:
        name, args = iterable.func.id, iterable.args
        if name == "enumerate" and isinstance(target, ast.Tuple) and len(target.elts) == 2:
            _bind(target.elts[0], None, views)
            _bind_loop(target.elts[1], args[0], views, fsrc)
            return
        if name == "zip" and isinstance(target, ast.Tuple) and len(target.elts) == len(args):
            for elt, arg in zip(target.elts, args):
                _bind_loop(elt, arg, views, fsrc)
            return
        if name == "reversed":
            _bind_loop(target, args[0], views, fsrc)
            return
    _bind_info(target, _item(iterable, views, fsrc, None, LOOP_ITEM), views)


def _check_write(fsrc, stmt, target, views, augmented=False):
    if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
        name = target.value.id
    elif augmented and isinstance(target, ast.Name):
        name = target.id
    else:
        return
    _mark_views_stale(fsrc, stmt, name, views)
    info = views.get(name)
    if info is None:
        return
    if isinstance(info, _Items):
        # `rows[0] = x` replaces an item of a Python list (srcgrad's lists are fixed once built);
        # `rows[0] += x` would also update the item in place (a view: its base)
        raise fsrc.error(
            stmt, f"`{ast.unparse(stmt).splitlines()[0]}` changes an item of the list or tuple "
            f"`{name}`, which srcgrad does not support (its items may be views of other arrays, "
            f"and lists are fixed once built): build a new list instead", "write into a list")
    base, construct = info
    if construct == PARAMETER:
        # into the caller's array: fine for the differentiated function (its argument), refused
        # for a helper (program.py); a plain `p += ...` only when `p` is an array
        error = fsrc.error(
            stmt, f"`{ast.unparse(stmt).splitlines()[0]}`: helper {fsrc.name} writes into its "
            f"argument '{base}'; helpers called from differentiated code must not modify their "
            f"array arguments (the caller's gradient would be wrong). Write into a copy instead, "
            f"e.g. `{name} = {name}.copy()` first",
            "argument mutation")
        views.setdefault(_PARAM_WRITES, []).append((base, isinstance(target, ast.Name), error))
        return
    error = _error(fsrc, stmt, name, base, construct)
    if isinstance(target, ast.Name):
        # `z = x; z += y` and `r = a[0]; r += 1` are scalar code as often as array code, and
        # the fence does not know the kinds yet: decided once they are known (program.py)
        views.setdefault(_DEFERRED, []).append((name, error))
        return
    raise error


def _views_of(base, views):
    """The names bound, since ``base`` was last bound, to a view of (or a container holding a view
    of) the array ``base`` names."""
    bound = views.get(_BOUND, {})
    since = bound.get(base, 0)
    for name, info in views.items():
        if name in _STATE_KEYS or name == base or bound.get(name, 0) < since:
            continue
        if isinstance(info, _Items):
            if any(view[0] == base for view in _flat_views(info)):
                yield name, ITEM
        elif info[0] == base and info[1] != PARAMETER:
            yield name, info[1]


def _mark_views_stale(fsrc, stmt, base, views):
    """A write into ``base`` changes every view of it that a name still holds: srcgrad's sweeps
    treat ``v = view(a)`` as a value of its own, so a later read of ``v`` would not see the write
    (the value would be NumPy's, its gradient not). Such a read is refused
    (:func:`_check_stale_reads`)."""
    stale = dict(views.get(_STALE, {}))
    for name, construct in _views_of(base, views):
        container = isinstance(views[name], _Items)
        how = f"`{name}` holds `{base}` or a view of it" if container else \
            f"`{name}` is {construct}" if construct.startswith("a second") else \
            f"`{name}` is a view of `{base}` ({construct})"
        stale[name] = (container, fsrc.error(
            stmt, f"`{ast.unparse(stmt).splitlines()[0]}` writes into `{base}` while {how}, and "
            f"`{name}` is read after the write: it sees the change, which srcgrad does not track "
            f"(the gradient would be wrong). Take a copy before the write instead, e.g. "
            f"`{name} = ....copy()`", "write into an array with a live view"))
    if stale:
        views[_STALE] = stale


def _own_expressions(stmt):
    """The expressions ``stmt`` itself evaluates (a compound statement's header only)."""
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        return [stmt.iter]
    if isinstance(stmt, (ast.While, ast.If)):
        return [stmt.test]
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return []
    if isinstance(stmt, (ast.With, ast.Try)):
        return []
    return [stmt]


def _check_stale_reads(stmt, views):
    stale = views.get(_STALE)
    if not stale:
        return
    for expr in _own_expressions(stmt):
        for node in ast.walk(expr):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in stale:
                is_container, error = stale[node.id]
                if is_container:
                    raise error
                # `x0 = a[0]` of a 1-d `a` is a number (a copy): decided by the kinds
                views.setdefault(_DEFERRED, []).append((node.id, error))


def _error(fsrc, stmt, name, base, construct):
    how = f"`{name}` is {construct}" if construct.startswith("a second") else \
        f"`{name}` is a view of `{base}` ({construct})" if base != name else \
        f"`{name}` is a view of the array `{name}` named before ({construct})"
    return fsrc.error(
        stmt, f"`{ast.unparse(stmt).splitlines()[0]}` writes into a view of `{base}`: {how}, so the "
        f"write also changes `{base}`, which srcgrad does not track (the gradient would be wrong). "
        f"Write into a copy instead, e.g. `{name} = ....copy()`", "write into a view")
