"""Numba's nopython pipeline for generated functions, less two passes that have nothing to do there.

Contract: :func:`pipeline_for` returns a Numba compiler class for a generated function: Numba's
default nopython pipeline with its ``InlineClosureLikes`` pass replaced by a pass that does
nothing and its ``NopythonRewrites`` pass run only where a rewrite other than array expressions
could apply (:class:`RewritesWhereNeeded`), when the function's code holds no nested code object (no closure, lambda or
comprehension), names neither ``reduce`` nor ``stencil`` (the only calls that pass inlines besides
closures) and has no ``with`` block; else None (Numba's default). Such a function gives that pass
nothing to inline, and its IR comes to it already post-processed (``IRProcessing``; ``WithLifting``
changes nothing without a ``with``), so the compiled code is the same. The pass's one other
rewrite, ``_inline_arraycall``, only turns a list built in a loop and passed to ``np.array`` into
a preallocated array (an optimization; generated code builds no such list).

Why (issue 17, compile latency): the pass post-processes the whole IR twice (variable lifetimes,
live variables), resolves the callee of every call and walks every loop: 0.16 s of shapes'
adjoint compile, 0.3-0.55 s of c_shapes' (~1,500 calls, 145 loops), for nothing.

``NopythonRewrites`` (after type inference) adds variable deletions to the whole IR, offers every
block to each rewrite registered for after inference, and strips the deletions again. Its
rewrites are Numba's array expressions (``a * b`` of arrays as one inlined loop instead of the
ufunc's), string-literal item access (records) and ``np.array`` of a list of constants (no list
built). Generated code writes one operation per line and fuses elementwise chains into explicit
loops itself, so an array expression there is one ufunc applied once: the ufunc's own lowering
computes the same values with the same loop. The other two rewrites change what code does or costs,
so the pass runs where their candidates appear (or a rewrite srcgrad does not know is registered).
Skipping it cut c_shapes' adjoint compile from 5.27 to 4.73 s (median of 6 alternating compiles).
"""
import dis
import types

import numpy as np
from numba.core import ir, types as nb_types
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.core.compiler_machinery import FunctionPass, register_pass
from numba.core.rewrites import rewrite_registry
from numba.core.typed_passes import NopythonRewrites
from numba.core.untyped_passes import InlineClosureLikes

_INLINED_CALLS = ("reduce", "stencil")       # InlineClosureCallPass' other two candidates


@register_pass(mutates_CFG=True, analysis_only=False)
class NothingToInline(FunctionPass):
    """``InlineClosureLikes`` for a function with nothing to inline (see the module docstring)."""
    _name = "srcgrad_nothing_to_inline"

    def __init__(self):
        FunctionPass.__init__(self)

    def run_pass(self, state):
        # IRProcessing post-processed this IR and WithLifting left it as it was (no ``with``):
        # post-processing it again would recompute the same variable lifetimes
        return False


# after-inference rewrites whose candidates _needs_rewrites looks for
_ARRAY_EXPRESSIONS = "RewriteArrayExprs"
_LOOKED_FOR = {"RewriteStringLiteralGetitems", "RewriteStringLiteralSetitems", "RewriteArrayOfConsts"}


def _needs_rewrites(state):
    """Whether a rewrite may change the typed IR in ``state`` beyond an array expression of one
    operation: two array operations in one expression (``a * b + c``: one loop instead of two),
    an item read or write indexed by a string literal, a list built in the IR (``np.array([...])``),
    or a registered rewrite not named in ``_LOOKED_FOR``."""
    registered = {cls.__name__ for cls in rewrite_registry.rewrites["after-inference"]}
    if registered - _LOOKED_FOR - {_ARRAY_EXPRESSIONS}:
        return True
    typemap = state.typemap
    for block in state.func_ir.blocks.values():
        # Numba's temporaries holding an array operation's result (array expressions, like this
        # set, do not reach across blocks)
        array_results = set()
        for stmt in block.body:
            if isinstance(stmt, (ir.SetItem, ir.StaticSetItem)):
                if _string_literal(typemap, stmt.index):
                    return True
                continue
            if not (isinstance(stmt, ir.Assign) and isinstance(stmt.value, ir.Expr)):
                continue
            expr = stmt.value
            if expr.op == "build_list":
                return True
            if expr.op in ("getitem", "static_getitem") and _string_literal(typemap, expr.index):
                return True
            operands = _array_operation_operands(typemap, expr)
            if operands is None or not isinstance(typemap.get(stmt.target.name), nb_types.Array):
                continue
            if any(var.name in array_results for var in operands):
                return True
            if stmt.target.is_temp:
                array_results.add(stmt.target.name)
    return False


def _string_literal(typemap, index):
    return isinstance(index, ir.Var) and isinstance(typemap.get(index.name), nb_types.StringLiteral)


def _array_operation_operands(typemap, expr):
    """The operands of ``expr`` if Numba's array expressions take it in (an arithmetic operator or
    a NumPy ufunc call), else None."""
    if expr.op == "binop":
        return [expr.lhs, expr.rhs]
    if expr.op == "unary":
        return [expr.value]
    if expr.op == "call":
        callee = typemap.get(expr.func.name)
        if isinstance(callee, nb_types.Function) and isinstance(callee.typing_key, np.ufunc):
            return list(expr.args)
    return None


@register_pass(mutates_CFG=True, analysis_only=False)
class RewritesWhereNeeded(FunctionPass):
    """``NopythonRewrites`` where a rewrite besides array expressions may apply; else nothing (see
    the module docstring)."""
    _name = "srcgrad_rewrites_where_needed"

    def __init__(self):
        FunctionPass.__init__(self)

    def run_pass(self, state):
        if _needs_rewrites(state):
            return NopythonRewrites().run_pass(state)
        return False


_REPLACED = {InlineClosureLikes: (NothingToInline, "no closure to inline"),
             NopythonRewrites: (RewritesWhereNeeded, "rewrites other than array expressions")}


class GeneratedCodeCompiler(CompilerBase):
    """Numba's nopython pipeline with ``InlineClosureLikes`` as :class:`NothingToInline` and
    ``NopythonRewrites`` as :class:`RewritesWhereNeeded`."""

    def define_pipelines(self):
        pm = DefaultPassBuilder.define_nopython_pipeline(self.state)
        pm.passes = [_REPLACED.get(cls, (cls, text)) for cls, text in pm.passes]
        pm.finalize()
        return [pm]


def pipeline_for(function):
    """:class:`GeneratedCodeCompiler` when ``function`` has nothing for ``InlineClosureLikes`` to
    inline (see the module docstring), else None."""
    code = getattr(function, "__code__", None)
    if code is None or any(isinstance(c, types.CodeType) for c in code.co_consts):
        return None
    if any(name in code.co_names for name in _INLINED_CALLS):
        return None
    if any(op.opname in ("BEFORE_WITH", "SETUP_WITH") for op in dis.get_instructions(code)):
        return None
    return GeneratedCodeCompiler
