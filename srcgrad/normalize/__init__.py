"""Stage 3 — normalize: rewrite the checked function into a small core language.

After this stage the function body contains only

* ``name = rhs`` where rhs is one operation on atoms (names and constants): a binary or unary
  operator, a comparison, a call, a subscript, an attribute (``x.shape``), a tuple, or an atom;
* ``name[index] = atom`` (array element and slice writes);
* ``if name: ... else: ...``;
* ``for name in range(a, b, c):`` without ``break`` (a loop that can exit early becomes a ``while``);
* ``while name: ...`` whose condition is recomputed at the end of the body;
* one ``return atom`` as the last statement.

``break``, ``continue`` and early ``return`` become flag variables guarding the rest of the block;
augmented assignments, tuple unpacking, ``and``/``or``, chained comparisons and ``x if c else y``
are desugared. Global constants are inlined, module attributes (``np.pi``) folded and every call is
annotated with the Python object it calls (``node.callee``).

The stage is a package, one module per part, applied in this order by :func:`normalize`:

* :mod:`.sequences` — loops over arrays, tuples, lists, ``enumerate``/``zip``/``reversed`` and list
  comprehensions become index loops; :mod:`.lists` — lists built with ``append`` become arrays;
* :mod:`.einsum` — ``np.einsum`` with one or two operands becomes products, transposes and sums;
* :mod:`.tensordot` — ``np.inner`` and ``np.tensordot`` over one axis become ``@``;
* :mod:`.jumps` — ``return``/``break``/``continue`` become flags;
* :mod:`.flatten` — one operation per statement;
* :mod:`.syntax` — the small AST helpers they share (also used by the transform stage).
"""
import ast

from ..parse import FunctionSource
from .einsum import lower_einsums
from .tensordot import lower_tensordots
from .flatten import Flattener, _lists_to_tuples, _literal_lists, func_expression
from .jumps import JumpDesugarer, _rename_straight_line_redefinitions, _stable_if_tests
from .lists import ListBuilder, _is_append, _split_list_literals
from .sequences import SequenceDesugarer
from .syntax import (ARRAY_METHODS, SCALAR_CONSTANT_TYPES, NameMaker, _walk_all, assign,
                     assigned_names, is_atom, name_load, name_store)

__all__ = ["normalize", "ARRAY_METHODS", "SCALAR_CONSTANT_TYPES", "NameMaker", "assign",
           "assigned_names", "is_atom", "name_load", "name_store", "func_expression",
           "SequenceDesugarer", "ListBuilder", "JumpDesugarer", "Flattener"]


def normalize(fsrc: FunctionSource, lower_products=True):
    """Return the normalized body (a list of statements) and the parameter names.

    ``lower_products``: write np.inner/np.tensordot over one axis as ``@`` (the backend decides:
    backends.Backend.lower_products)."""
    fn = fsrc.tree
    params = [a.arg for a in fn.args.args]
    local_names = set(params) | assigned_names(fn.body)
    names = NameMaker(local_names | {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)})
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    if not body:
        raise fsrc.error(fn, "the function body is empty")
    body = lower_einsums(body, fsrc)
    if lower_products:
        body = lower_tensordots(body, fsrc)
    appended = {s.value.func.value.id for s in _walk_all(body) if _is_append(s)}
    if appended:   # before _literal_lists, which reads `L = [a, b]` as a fixed list
        body = _split_list_literals(body, appended)
    body = _literal_lists(body, fsrc)
    body = SequenceDesugarer(fsrc, names, body).block(body)
    body = ListBuilder(fsrc, names).run(body)
    _lists_to_tuples(body)
    desugared = JumpDesugarer(names, ast.FunctionDef(name=fn.name, args=fn.args, body=body,
                                                     decorator_list=[], returns=None)).run(
        ast.FunctionDef(name=fn.name, args=fn.args, body=body, decorator_list=[], returns=None))
    local_names |= assigned_names(desugared)
    flat = Flattener(fsrc, names, local_names, desugared).block(desugared)
    flat = _stable_if_tests(flat, names)
    flat = _rename_straight_line_redefinitions(flat, params, names)
    if not flat or not isinstance(flat[-1], ast.Return):
        raise fsrc.error(fn, "the function must end with a `return` of its result "
                         "(every path must return a value)", "missing return")
    return params, flat, names
