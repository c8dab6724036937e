"""Numba's nopython pipeline for generated functions, less its search for closures to inline.

Contract: :func:`pipeline_for` returns a Numba compiler class for a generated function: Numba's
default nopython pipeline, with its ``InlineClosureLikes`` pass replaced by the part of it that
is not a search (the IR post-processing and scope fix-up it ends with), when the function's code
holds no nested code object (no closure, lambda or comprehension) and names neither ``reduce``
nor ``stencil``, the only calls that pass inlines besides closures; else None (Numba's default).
The pass then has nothing to inline, so the compiled code is the same; its remaining work, the
array-comprehension search ``_inline_arraycall``, only turns a list built in a loop and passed
to ``np.array`` into a preallocated array (an optimization; generated code builds no such list).

Why (issue 17, compile latency): the search resolves the callee of every call and walks every
loop of the function; in the largest test adjoints (c_shapes: ~1,500 calls, 145 loops) it took
0.4-0.55 s of 6.5-7.5 s CPU, for nothing.
"""
import types

from numba.core import postproc
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.core.compiler_machinery import FunctionPass, register_pass
from numba.core.ir_utils import fixup_var_define_in_scope
from numba.core.untyped_passes import InlineClosureLikes

_INLINED_CALLS = ("reduce", "stencil")       # InlineClosureCallPass' other two candidates


@register_pass(mutates_CFG=True, analysis_only=False)
class PostProcessOnly(FunctionPass):
    """What ``InlineClosureLikes`` does to a function with nothing to inline."""
    _name = "srcgrad_post_process_only"

    def __init__(self):
        FunctionPass.__init__(self)

    def run_pass(self, state):
        postproc.PostProcessor(state.func_ir).run()
        fixup_var_define_in_scope(state.func_ir.blocks)
        return True


class GeneratedCodeCompiler(CompilerBase):
    """Numba's nopython pipeline with ``InlineClosureLikes`` as :class:`PostProcessOnly`."""

    def define_pipelines(self):
        pm = DefaultPassBuilder.define_nopython_pipeline(self.state)
        pm.passes = [(PostProcessOnly, "post-process (no closure to inline)") if cls is InlineClosureLikes
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
    return GeneratedCodeCompiler
