"""Numba's nopython pipeline for generated functions, less its closure-inlining pass.

Contract: :func:`pipeline_for` returns a Numba compiler class for a generated function: Numba's
default nopython pipeline with its ``InlineClosureLikes`` pass replaced by a pass that does
nothing, when the function's code holds no nested code object (no closure, lambda or
comprehension), names neither ``reduce`` nor ``stencil`` (the only calls that pass inlines besides
closures) and has no ``with`` block; else None (Numba's default). Such a function gives that pass
nothing to inline, and its IR comes to it already post-processed (``IRProcessing``; ``WithLifting``
changes nothing without a ``with``), so the compiled code is the same. The pass's one other
rewrite, ``_inline_arraycall``, only turns a list built in a loop and passed to ``np.array`` into
a preallocated array (an optimization; generated code builds no such list).

Why (issue 17, compile latency): the pass post-processes the whole IR twice (variable lifetimes,
live variables), resolves the callee of every call and walks every loop: 0.16 s of shapes'
adjoint compile, 0.3-0.55 s of c_shapes' (~1,500 calls, 145 loops), for nothing.
"""
import dis
import types

from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.core.compiler_machinery import FunctionPass, register_pass
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


class GeneratedCodeCompiler(CompilerBase):
    """Numba's nopython pipeline with ``InlineClosureLikes`` as :class:`NothingToInline`."""

    def define_pipelines(self):
        pm = DefaultPassBuilder.define_nopython_pipeline(self.state)
        pm.passes = [(NothingToInline, "no closure to inline") if cls is InlineClosureLikes
                     else (cls, text) for cls, text in pm.passes]
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
