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

The stage is a package: :mod:`.values` (what is known about a value: :class:`Static` and its
kinds, :class:`Capture`), :mod:`.plan` (:func:`make_plan`, the :class:`Plan` of one call signature
and the :class:`Preparer` that rewrites every function it reaches), :mod:`.function` and
:mod:`.expressions` (the rewriter of one function: statements and control flow; expressions, names
and calls), :mod:`.syntax` (small AST helpers).
"""
from .expressions import ExpressionRewriter
from .function import FunctionRewriter
from .plan import Plan, Prepared, Preparer, make_plan
from .values import (LIBRARY_MODULES, Capture, LocalDef, NeedStatic, SAmbiguous, SConst, SDict,
                     SFunc, SLeaf, SSeq, Static, describe, flat_atoms, is_library_function,
                     is_user_function)

__all__ = ["make_plan", "Plan", "Prepared", "Preparer", "FunctionRewriter", "ExpressionRewriter",
           "LIBRARY_MODULES", "is_library_function", "is_user_function", "Static", "SLeaf",
           "SConst", "SSeq", "SDict", "SFunc", "SAmbiguous", "LocalDef", "NeedStatic", "Capture",
           "describe", "flat_atoms"]
