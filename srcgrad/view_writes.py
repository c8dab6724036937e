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
bound late in one iteration is seen by a write early in the next. It cannot see through helper
calls or containers (a helper's own writes are checked when the helper is). ``z += y`` where
``z = x`` or ``z = a[0]`` may be scalar code: those are refused once the kinds show ``z`` is an array.
"""
import ast
import types

from .parse import read_function

# np.<name>(x, ...) and x.<name>(...) that return a view of x (or x itself).
VIEW_FUNCTIONS = {"transpose", "reshape", "ravel", "swapaxes", "moveaxis", "squeeze", "diagonal",
                  "expand_dims", "einsum", "asarray", "asanyarray", "atleast_1d", "atleast_2d",
                  "atleast_3d", "broadcast_to", "flip", "fliplr", "flipud", "rot90", "real", "imag",
                  "rollaxis", "matrix_transpose", "permute_dims"}
VIEW_METHODS = {"transpose", "reshape", "ravel", "swapaxes", "squeeze", "diagonal", "view"}
VIEW_ATTRIBUTES = {"T", "mT", "real", "imag"}


def _view_base(expr, fsrc=None):
    """(base name, construct) when ``expr`` may be a view of (or the same array as) the array
    named ``base``; else None."""
    if isinstance(expr, ast.Name):
        return expr.id, "a second name for the same array"
    if isinstance(expr, ast.Attribute) and expr.attr in VIEW_ATTRIBUTES:
        inner = _view_base(expr.value, fsrc)
        return None if inner is None else (inner[0], f".{expr.attr}")
    if isinstance(expr, ast.Subscript):
        # basic indexing (ints, slices, ..., None) is a view; an index that is certainly an
        # array (a list literal or a comparison mask) makes a copy
        if any(isinstance(n, (ast.List, ast.Compare)) for n in ast.walk(expr.slice)):
            return None
        inner = _view_base(expr.value, fsrc)
        return None if inner is None else (inner[0], "a basic slice")
    if isinstance(expr, ast.Call):
        func = expr.func
        helper = _helper_view(expr, fsrc)
        if helper is not None:
            return helper
        if not isinstance(func, ast.Attribute):
            return None
        is_np = isinstance(func.value, ast.Name) and func.value.id in ("np", "numpy")
        if is_np and func.attr in VIEW_FUNCTIONS:
            operands = expr.args[1:] if func.attr == "einsum" else expr.args[:1]
            if func.attr == "einsum" and len(operands) != 1:
                return None                      # two or more operands: a new array
            if not operands:
                return None
            inner = _view_base(operands[0], fsrc)
            return None if inner is None else (inner[0], f"np.{func.attr}")
        if not is_np and func.attr in VIEW_METHODS:
            inner = _view_base(func.value, fsrc)
            return None if inner is None else (inner[0], f".{func.attr}()")
    return None


_DEFERRED = "<deferred>"       # not an identifier: the scan's list of writes decided by kind


def _helper_view(call, fsrc):
    """``h(a)`` where the helper ``h`` returns (a view of) its parameter: a view of ``a``."""
    if fsrc is None or not isinstance(call.func, (ast.Name, ast.Attribute)):
        return None
    try:
        callee = fsrc.resolve(call.func)
    except Exception:                      # not a name srcgrad can resolve: not a helper
        return None
    if not isinstance(callee, types.FunctionType) or \
            (getattr(callee, "__module__", None) or "").split(".")[0] in ("numpy", "scipy", "srcgrad"):
        return None                        # library functions: VIEW_FUNCTIONS above
    positions = _returned_parameters(callee)
    for k in positions:
        if k < len(call.args):
            inner = _view_base(call.args[k], fsrc)
            if inner is not None:
                return inner[0], f"{callee.__name__}() returns a view of its argument"
    return None


def _returned_parameters(callee, _seen=set()):
    """Positions of the parameters that ``callee`` may return (a view of)."""
    if callee in _seen:                    # recursion is refused elsewhere
        return ()
    _seen.add(callee)
    try:
        try:
            helper = read_function(callee)
        except Exception:                  # no source: not a helper srcgrad differentiates
            return ()
        params = [a.arg for a in helper.tree.args.args]
        views = {}
        returns = []
        try:
            _scan(helper, helper.tree.body, views, returns)
        except Exception:                  # its own fence reports it when it is differentiated
            return ()
        found = set()
        for value, at in returns:
            base = _view_base(value, helper)
            root = base[0] if base is not None else None
            while root in at and root != _DEFERRED:
                root = at[root][0]
            if root in params:
                found.add(params.index(root))
        return sorted(found)
    finally:
        _seen.discard(callee)


def check_view_writes(fsrc):
    """Raise UnsupportedSyntaxError at the first write into a (possible) view of another array.

    Returns [(name, error)]: augmented assignments ``name += ...`` through a plain alias or a
    basic slice, an error only when ``name`` is an array (see :func:`refuse_array_writes`)."""
    views = {}
    _scan(fsrc, fsrc.tree.body, views)
    return views.get(_DEFERRED, [])


def refuse_array_writes(deferred, kinds):
    """Raise the first deferred error whose name is an array under ``kinds`` (name -> Kind)."""
    for name, error in deferred:
        kind = kinds.get(name)
        if kind is not None and kind.is_array:
            raise error


def _scan(fsrc, body, views, returns=None):
    for stmt in body:
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                _check_write(fsrc, stmt, target, views)
            for target in stmt.targets:
                _bind(target, stmt.value, views, fsrc)
        elif isinstance(stmt, ast.AugAssign):
            # `r += 1` on an array updates it in place: through a view, that is a write into
            # the base too
            _check_write(fsrc, stmt, stmt.target, views, augmented=True)
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            _check_write(fsrc, stmt, stmt.target, views)
            _bind(stmt.target, stmt.value, views, fsrc)
        elif isinstance(stmt, ast.Return) and returns is not None and stmt.value is not None:
            returns.append((stmt.value, dict(views)))
        elif isinstance(stmt, (ast.For, ast.While)):
            if isinstance(stmt, ast.For):
                _bind_loop(stmt.target, stmt.iter, views, fsrc)
            for _ in range(2):
                _scan(fsrc, stmt.body, views, returns)
        elif isinstance(stmt, ast.If):
            deferred = views.setdefault(_DEFERRED, [])
            after_body = dict(views)
            _scan(fsrc, stmt.body, after_body, returns)
            after_else = dict(views)
            _scan(fsrc, stmt.orelse, after_else, returns)
            views.clear()
            views.update(after_else)
            views.update(after_body)        # a view on either path may be one after the if
            views[_DEFERRED] = deferred     # (one list, shared by both copies)


def _bind(target, value, views, fsrc=None):
    if isinstance(target, ast.Name):
        found = None if value is None else _view_base(value, fsrc)
        if found is not None and found[0] != target.id:
            views[target.id] = found
        else:
            views.pop(target.id, None)
    elif isinstance(target, ast.Tuple):
        same = isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts)
        rebound = {elt.id for elt in target.elts if isinstance(elt, ast.Name)}
        for k, elt in enumerate(target.elts):        # `r, s = a.T, b`: item by item
            item = value.elts[k] if same else None
            if isinstance(item, ast.Name) and item.id in rebound:
                item = None          # `a, b = b, a`: swapped buffers, each still one name
            _bind(elt, item, views, fsrc)


LOOP_ITEM = "an item of a for loop over it"


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
    found = _view_base(iterable, fsrc)
    if isinstance(target, ast.Name) and found is not None and found[0] != target.id:
        views[target.id] = (found[0], LOOP_ITEM)
    else:
        _bind(target, None, views, fsrc)


def _check_write(fsrc, stmt, target, views, augmented=False):
    if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
        name = target.value.id
    elif augmented and isinstance(target, ast.Name):
        name = target.id
    else:
        return
    if name not in views:
        return
    base, construct = views[name]
    deferred = views.setdefault(_DEFERRED, [])
    error = _error(fsrc, stmt, name, base, construct)
    if isinstance(target, ast.Name) and construct in ("a second name for the same array",
                                                       "a basic slice", LOOP_ITEM):
        # `z = x; z += y` and `r = a[0]; r += 1` are scalar code as often as array code, and
        # the fence does not know the kinds yet: decided once they are known (program.py)
        deferred.append((name, error))
        return
    raise error


def _error(fsrc, stmt, name, base, construct):
    how = f"`{name}` is {construct}" if construct.startswith("a second") else \
        f"`{name}` is a view of `{base}` ({construct})"
    return fsrc.error(
        stmt, f"`{ast.unparse(stmt).splitlines()[0]}` writes into a view of `{base}`: {how}, so the "
        f"write also changes `{base}`, which srcgrad does not track (the gradient would be wrong). "
        f"Write into a copy instead, e.g. `{name} = ....copy()`", "write into a view")
