"""``loop_range(n)``: the loops of fused loop nests (cpu target), with less code than ``range(n)``.

Contract: ``for i in loop_range(n)`` runs ``i`` over ``0, 1, ..., n - 1`` exactly as ``for i in
range(n)`` does (no iteration for ``n <= 0``; after the loop ``i`` holds the last value it took),
for an integer ``n``; another argument is a typing error. In Python it is ``range(n)``.

Why (issue 17, compile latency): Numba writes every ``range`` loop with a range object (start,
stop, step), a run-time test of the step for zero that raises (an exception path), and an
iteration count from a signed division and remainder, all of it as unoptimized IR in every loop
at the tests' ``NUMBA_OPT=0`` and lowered statement by statement. Here the iterator is the index
and the stop: a compare and an increment per loop. c_shapes' adjoint has 96 loops: its own LLVM
IR falls by 11% (6.5k lines). At higher optimization levels LLVM reduces both to the same loop.
"""
from numba import types
from numba.core import cgutils
from numba.core.imputils import RefType, impl_ret_untracked, iternext_impl, lower_builtin
from numba.extending import models, register_model, type_callable


def loop_range(n):
    """``range(n)`` (see the module docstring)."""
    return range(n)


class LoopRangeIteratorType(types.SimpleIteratorType):
    def __init__(self):
        super().__init__("loop_range_iter", types.intp)


class LoopRangeType(types.SimpleIterableType):
    def __init__(self):
        super().__init__("loop_range", LoopRangeIteratorType())


loop_range_type = LoopRangeType()


@register_model(LoopRangeType)
class _LoopRangeModel(models.StructModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, [("stop", types.intp)])


@register_model(LoopRangeIteratorType)
class _LoopRangeIteratorModel(models.StructModel):
    def __init__(self, dmm, fe_type):
        # the index lives in the caller's frame (an alloca), as Numba's range iterators keep theirs
        super().__init__(dmm, fe_type, [("index", types.CPointer(types.intp)), ("stop", types.intp)])


@type_callable(loop_range)
def _type_loop_range(context):
    def typer(n):
        if isinstance(n, types.Integer):
            return loop_range_type
    return typer


@lower_builtin(loop_range, types.Integer)
def _lower_loop_range(context, builder, sig, args):
    value = cgutils.create_struct_proxy(loop_range_type)(context, builder)
    value.stop = context.cast(builder, args[0], sig.args[0], types.intp)
    return impl_ret_untracked(context, builder, loop_range_type, value._getvalue())


@lower_builtin("getiter", LoopRangeType)
def _lower_getiter(context, builder, sig, args):
    source = cgutils.create_struct_proxy(loop_range_type)(context, builder, value=args[0])
    iterator = cgutils.create_struct_proxy(sig.return_type)(context, builder)
    iterator.index = cgutils.alloca_once_value(builder, context.get_constant(types.intp, 0))
    iterator.stop = source.stop
    return impl_ret_untracked(context, builder, sig.return_type, iterator._getvalue())


@lower_builtin("iternext", LoopRangeIteratorType)
@iternext_impl(RefType.UNTRACKED)
def _lower_iternext(context, builder, sig, args, result):
    iterator = cgutils.create_struct_proxy(sig.args[0])(context, builder, value=args[0])
    index = builder.load(iterator.index)
    valid = builder.icmp_signed("<", index, iterator.stop)
    result.set_valid(valid)
    with builder.if_then(valid):
        result.yield_(index)
        builder.store(builder.add(index, context.get_constant(types.intp, 1)), iterator.index)
