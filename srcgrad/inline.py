"""Inline small ``@njit`` helpers into their caller before it is differentiated.

A helper called from a loop (``main[k] = alphas[k] - 0.5 * sqnorm(icf, x, k, i)``) otherwise gets
an adjoint of its own: the caller's reverse sweep calls it once per iteration, and it reruns the
helper's forward sweep to rebuild what its reverse sweep reads, in loops of its own. Written into
the caller, the helper's statements are caller statements: the caller's loop machinery (what to
tape, what to recompute, exact tape sizes, :mod:`srcgrad.hoist` of loop-invariant values) applies
to them as to code written inline, and the helper's forward runs once.

:func:`inline_helpers` works on normalized bodies (one operation per line, one ``return`` at the
end). A call ``name = helper(a, b, ...)`` is inlined only when all of these hold (else the call
stays a helper call, differentiated as before):

* the helper is a plain Python function or a Numba dispatcher, defined in the caller's file (the
  line numbers of the inlined statements are the helper's own, and the adjoint's comments name
  the helper: ``s = ... (inlined sqnorm)``), with no derivative rule registered for it;
* its body is small (at most :data:`MAX_STATEMENTS` statements), calls only ``math`` functions,
  ``range`` and ``abs``/``min``/``max``/``float``/``int`` (no NumPy call that could make an array,
  no other helper: recursion keeps its error), builds no tuple or other container (a helper
  returning a tuple keeps its adjoint), writes no array element (no argument mutation, no local
  arrays) and makes no temporaries other than ``_t<n>`` (no jump flags);
* the arguments are names or number constants (a string argument keeps its refusal).

Arguments are substituted for parameters the helper never assigns; a parameter it assigns gets
a local copy. The helper's locals are renamed (``s`` -> ``s_sqnorm``, temporaries -> fresh caller
temporaries), so several calls of one helper, and helpers called with different argument kinds,
each get their own names.
"""
import ast
import inspect
import textwrap
import builtins
import copy
import dataclasses
import math
import types

from .normalize import assign, name_load
from .parse import FunctionSource, unwrap_function
from . import rules

# False: every helper call stays a call (tests compare both; not in the cache key).
INLINE_HELPERS = True
MAX_STATEMENTS = 80

_ALLOWED_BUILTINS = (range, abs, min, max, float, int)


class InlinedSource(FunctionSource):
    """The caller's source, whose ``line_text`` also knows the inlined helpers' lines."""

    def line_text(self, lineno):
        text = self.inlined_lines.get(lineno)
        return text if text is not None else FunctionSource.line_text(self, lineno)


def _walk_stmts(stmts):
    for stmt in stmts:
        yield stmt
        for field in ("body", "orelse"):
            yield from _walk_stmts(getattr(stmt, field, []))


def _plain_function(callee):
    if not (isinstance(callee, types.FunctionType) or
            isinstance(getattr(callee, "py_func", None), types.FunctionType)):
        return None
    func = unwrap_function(callee)
    if getattr(func, "hidden", None) or func.__code__.co_freevars:
        return None         # closures and static.py's rewritten functions keep their calls
    return func


def _augments_parameter(func, params):
    """Whether ``func``'s own source has ``p += ...`` (any augmented assignment) on a parameter:
    on an array argument that writes the caller's array in place, which normalize's ``p = p + q``
    no longer shows (the call keeps its helper adjoint, and view_writes its refusal); True when the
    source cannot be read."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return True
    return any(isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name)
               and n.target.id in params for n in ast.walk(tree))


def inlinable(callee, helper_unit):
    """Why the call of ``callee`` (normalized as ``helper_unit``) stays a call, or None."""
    if rules.lookup(callee) is not None:
        return "a derivative rule is registered for it"
    body = helper_unit.body
    stmts = list(_walk_stmts(body))
    if len(stmts) > MAX_STATEMENTS:
        return "too long"
    if any(isinstance(s, ast.Return) for s in stmts[:-1]) or not isinstance(body[-1], ast.Return):
        return "returns before its end"
    generated = helper_unit.names.generated
    for stmt in stmts:
        if not isinstance(stmt, (ast.Assign, ast.For, ast.If, ast.Return)):
            return f"a {type(stmt).__name__} statement"
        if isinstance(stmt, ast.Assign) and not isinstance(stmt.targets[0], ast.Name):
            return "writes an array element"
        if isinstance(stmt, ast.For) and not isinstance(stmt.target, ast.Name):
            return "a loop over a tuple target"
        indices = {id(n.slice) for n in ast.walk(stmt) if isinstance(n, ast.Subscript)}
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call):
                callee_fn = getattr(node, "callee", None)
                if any(callee_fn is b for b in _ALLOWED_BUILTINS):
                    continue
                if isinstance(callee_fn, types.BuiltinFunctionType) and \
                        getattr(callee_fn, "__module__", None) == "math" and \
                        getattr(math, callee_fn.__name__, None) is callee_fn:
                    continue
                return f"calls {ast.unparse(node.func)}"
            if isinstance(node, (ast.Lambda, ast.ListComp, ast.List, ast.Dict, ast.Set)) or \
                    isinstance(node, ast.Tuple) and id(node) not in indices:      # (not `Q[k, j]`)
                return "builds a container (a tuple result keeps its helper adjoint)"
    for name in generated:
        if not (name.startswith("_t") and name[2:].isdigit()):
            return f"makes the temporary {name}"
    return None


def inline_helpers(fsrc, params, body, names, unit_of):
    """``(fsrc, body)`` with the inlinable helper calls of ``body`` written inline.

    ``unit_of(callee)``: the callee's normalized unit (``.fsrc``, ``.params``, ``.body``,
    ``.names``); ``names``: the caller's NameMaker (fresh temporaries, taken names)."""
    inlined_lines = {}
    done = False

    def rewrite(stmts, in_loop=False):
        nonlocal done
        out = []
        for stmt in stmts:
            for field in ("body", "orelse"):
                if isinstance(stmt, (ast.For, ast.While, ast.If)) and getattr(stmt, field, None):
                    setattr(stmt, field, rewrite(getattr(stmt, field),
                                                 in_loop or isinstance(stmt, (ast.For, ast.While))))
            # only calls inside loops (where a helper adjoint's own sweeps cost): a call outside
            # keeps its helper adjoint, and with it errors naming the helper's line and the call
            expanded = _expand(stmt) if in_loop else None
            if expanded is None:
                out.append(stmt)
            else:
                out.extend(expanded)
                done = True
        return out

    def _expand(stmt):
        if not (isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)
                and isinstance(stmt.value, ast.Call) and not stmt.value.keywords):
            return None
        call = stmt.value
        func = _plain_function(getattr(call, "callee", None))
        # numbers and names only: a string or None argument keeps the call (and its refusal)
        if func is None or not all(isinstance(a, ast.Name) or isinstance(a, ast.Constant) and
                                   type(a.value) in (int, float, bool) for a in call.args):
            return None
        try:
            unit = unit_of(func)
        except Exception:       # noqa: BLE001 - the call stays a call: its own errors come later
            return None
        if unit.fsrc.filename != fsrc.filename or len(call.args) != len(unit.params):
            return None
        if inlinable(call.callee, unit) is not None:
            return None
        if _augments_parameter(func, unit.params):
            return None
        return _body_of_call(stmt, func.__name__, unit)

    def _body_of_call(stmt, helper, unit):
        hbody = copy.deepcopy(unit.body)
        assigned = {n.id for s in _walk_stmts(hbody) for n in ast.walk(s)
                    if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        rename, prologue = {}, []
        for param, arg in zip(unit.params, stmt.value.args):
            if param in assigned:       # the helper rebinds it: a local copy of the argument
                rename[param] = _fresh_user(names, f"{param}_{helper}")
                prologue.append(assign(rename[param], copy.deepcopy(arg), stmt))
            else:
                rename[param] = arg
        for local in sorted(assigned - set(unit.params)):
            rename[local] = names.fresh("t") if local in unit.names.generated else \
                _fresh_user(names, f"{local}_{helper}")
        for node in ast.walk(ast.Module(body=hbody, type_ignores=[])):   # each node once
            for field, value in ast.iter_fields(node):
                if isinstance(value, ast.Name) and value.id in rename:
                    setattr(node, field, _substitute(value, rename[value.id]))
                elif isinstance(value, list):
                    value[:] = [_substitute(v, rename[v.id]) if isinstance(v, ast.Name)
                                and v.id in rename else v for v in value]
        ret = hbody.pop()
        result = assign(stmt.targets[0].id, ret.value, ret)
        for s in _walk_stmts(unit.body):
            if hasattr(s, "lineno"):
                inlined_lines.setdefault(s.lineno, f"{unit.fsrc.line_text(s.lineno)}  (inlined {helper})")
        return prologue + hbody + [result]

    body = rewrite(body)
    if not done:
        return fsrc, body
    return _with_lines(fsrc, inlined_lines), body


def _with_lines(fsrc, lines):
    new = InlinedSource(**{f.name: getattr(fsrc, f.name) for f in dataclasses.fields(FunctionSource)})
    new.inlined_lines = dict(getattr(fsrc, "inlined_lines", {}))
    new.inlined_lines.update(lines)
    return new


def with_line_notes(fsrc, notes):
    """``fsrc`` whose ``line_text(line)`` ends with ``(notes[line])`` (the adjoint's comments)."""
    return _with_lines(fsrc, {line: f"{fsrc.line_text(line)}  ({note})" for line, note in notes.items()})


def _substitute(name_node, replacement):
    if isinstance(replacement, str):
        return ast.copy_location(ast.Name(id=replacement, ctx=name_node.ctx), name_node)
    if isinstance(name_node.ctx, ast.Store):
        raise AssertionError("an argument substituted for an assigned parameter")
    return ast.copy_location(copy.deepcopy(replacement), name_node)


def _fresh_user(names, stem):
    name, count = stem, 1
    while name in names.taken or name in dir(builtins):
        count += 1
        name = f"{stem}{count}"
    names.taken.add(name)
    return name
