"""The optimizers' per-array update kernels, compiled once per dtype on flat 1-d contiguous arrays,
and the flat view they are handed (``_flat_view``). Used by the optimizers' tuple updates
(:mod:`srcgrad.training.optim`) and by the fused training steps (:mod:`srcgrad.training.fused_sgd`);
a module of their own so that neither of those imports the other. Also ``step_mean``, the fused
steps' ``np.mean`` as a flat loop, and ``_overlaps``, their test of two arrays' memory."""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core.imputils import impl_ret_borrowed
from numba.core import cgutils
from numba.extending import intrinsic, lower_builtin, overload, type_callable
from numba.np.arrayobj import make_array, populate_array


# Each update rule is compiled once per dtype on flat 1-d contiguous arrays; the tuple-level update
# below hands it flat views of each parameter, gradient and state array (a reshape, no copy, for
# contiguous arrays). Compiling a kernel per parameter ndim and layout, with a small compiled helper
# per view, cost 11 compiled functions for an MLP's momentum update (~2 s cold, the largest part of
# MinibatchLoop's compile: benchmarks/results/compile.md); this is 3.
# Functions called only from compiled code are compiled without the wrappers that let Python
# (no_cpython_wrapper) or C (no_cfunc_wrapper) call them: less code for LLVM.
@numba.njit(cache=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _sgd_flat(pf, gf, lr):
    lr_ = pf.dtype.type(lr)
    for i in range(pf.size):
        pf[i] -= lr_ * gf[i]


@numba.njit(cache=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _momentum_flat(pf, gf, vf, lr, mu, nesterov):
    lr_ = pf.dtype.type(lr)
    mu_ = pf.dtype.type(mu)
    if nesterov:
        for i in range(pf.size):
            gi = gf[i]
            vi = mu_ * vf[i] + gi
            vf[i] = vi
            pf[i] -= lr_ * (gi + mu_ * vi)
    else:
        for i in range(pf.size):
            vi = mu_ * vf[i] + gf[i]
            vf[i] = vi
            pf[i] -= lr_ * vi


@numba.njit(cache=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _adam_flat(pf, gf, mf, vf, t, lr, b1, b2, eps):
    # bias corrections computed in float64, then the per-element work in the parameter dtype
    bc1 = 1.0 - b1**t
    bc2 = 1.0 - b2**t
    dt = pf.dtype.type
    step = dt(lr / bc1)
    inv_bc2 = dt(1.0 / bc2)
    b1_ = dt(b1)
    b2_ = dt(b2)
    c1 = dt(1.0 - b1)
    c2 = dt(1.0 - b2)
    eps_ = dt(eps)
    for i in range(pf.size):
        gi = gf[i]
        mi = b1_ * mf[i] + c1 * gi
        vi = b2_ * vf[i] + c2 * (gi * gi)
        mf[i] = mi
        vf[i] = vi
        pf[i] -= step * mi / (np.sqrt(vi * inv_bc2) + eps_)


@intrinsic
def _flat_view(typingctx, a):
    """The 1-d C-contiguous view of a C-contiguous array ``a`` (its data, in its element order;
    read-only stays read-only). What ``a.reshape(a.size)`` returns, without the code Numba
    emits for a reshape (a size check through a compiled helper, a no-copy attempt over the
    strides): each costs LLVM time in every cold compile of a caller, and the update rules
    take three flat views per parameter."""
    if not (isinstance(a, types.Array) and a.layout == "C"):
        return None
    flat = a.copy(ndim=1, layout="C")

    def codegen(context, builder, signature, args):
        src = make_array(a)(context, builder, args[0])
        out = make_array(flat)(context, builder)
        populate_array(out, data=src.data, shape=[src.nitems], strides=[src.itemsize],
                       itemsize=src.itemsize, meminfo=src.meminfo, parent=src.parent)
        return impl_ret_borrowed(context, builder, flat, out._getvalue())
    return flat(a), codegen


@intrinsic
def _overlaps(typingctx, a, b):
    """Whether the memory of the contiguous arrays ``a`` and ``b`` overlaps (never where one is
    empty). An intrinsic, a few instructions written into the caller: the fused steps' updates
    test it three times per product, and each inlined ``@njit`` copy was typed and lowered
    again (0.03-0.05 s of CPU in a cold MNIST step)."""
    if not (isinstance(a, types.Array) and isinstance(b, types.Array)):
        return None

    def codegen(context, builder, signature, args):
        x, y = (make_array(t)(context, builder, v) for t, v in zip(signature.args, args))
        i64 = ir.IntType(64)
        zero = ir.Constant(i64, 0)
        x0, y0 = builder.ptrtoint(x.data, i64), builder.ptrtoint(y.data, i64)
        x1 = builder.add(x0, builder.mul(x.nitems, x.itemsize))        # one past the end
        y1 = builder.add(y0, builder.mul(y.nitems, y.itemsize))
        empty = builder.or_(builder.icmp_signed("==", x.nitems, zero),
                            builder.icmp_signed("==", y.nitems, zero))
        cross = builder.and_(builder.icmp_unsigned("<", x0, y1), builder.icmp_unsigned("<", y0, x1))
        return builder.and_(builder.not_(empty), cross)
    return types.boolean(a, b), codegen


@numba.njit(cache=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _momentum_scaled_flat(pf, gf, vf, lr, mu, nesterov, scale):
    """The fused Momentum step's update of one parameter on flat views (fused_sgd._momentum's
    arithmetic: ``scale`` is the seed at the end, 1.0 otherwise, a product that is exact)."""
    lr_, mu_, s_ = pf.dtype.type(lr), pf.dtype.type(mu), pf.dtype.type(scale)
    if nesterov != 0.0:
        for i in range(pf.size):
            gi = s_ * gf[i]
            vi = mu_ * vf[i] + gi
            vf[i] = vi
            pf[i] -= lr_ * (gi + mu_ * vi)
    else:
        for i in range(pf.size):
            vi = mu_ * vf[i] + s_ * gf[i]
            vf[i] = vi
            pf[i] -= lr_ * vi


def step_mean(a):
    """``np.mean(a)``: the fused training steps' ``np.mean(x)`` calls are rewritten into this
    (fused_sgd.sgd_step_source); compiled, see its overload."""
    return np.mean(a)


# np.mean of a C-contiguous float array: the sum in the array's order and precision, then
# divided as Numba divides a float by an integer (in float64, then cast back): bit for bit Numba's
# np.mean, NaN for no elements. Written straight into the caller as a typing template and a
# lowering (no compiled function of its own: Numba's np.mean compiled an nditer loop, 0.10-0.15 s
# of CPU in every cold compile of the MNIST step, and an overload's flat loop 0.04-0.07 s). Not
# reassociated: the step compiles without fast math (srcgrad.backends.cpu.FASTMATH), so LLVM keeps
# the additions in order. Registered before the overload below, which Numba asks for the rest.
def _flat_mean_type(a):
    if isinstance(a, types.Array) and a.layout == "C" and isinstance(a.dtype, types.Float):
        return a.dtype
    return None


@type_callable(step_mean)
def _step_mean_typer(context):
    return lambda a: _flat_mean_type(a)


@lower_builtin(step_mean, types.Array)
def _step_mean_lower(context, builder, signature, args):
    array_type = signature.args[0]
    real = context.get_value_type(array_type.dtype)
    array = make_array(array_type)(context, builder, args[0])
    total = cgutils.alloca_once_value(builder, ir.Constant(real, 0))
    with cgutils.for_range(builder, array.nitems) as loop:
        element = builder.load(builder.gep(array.data, [loop.index]))
        builder.store(builder.fadd(builder.load(total), element), total)
    double = ir.DoubleType()
    mean = builder.fdiv(context.cast(builder, builder.load(total), array_type.dtype, types.float64),
                        builder.sitofp(array.nitems, double))
    empty = builder.icmp_signed("==", array.nitems, ir.Constant(array.nitems.type, 0))
    mean = builder.select(empty, ir.Constant(double, float("nan")), mean)
    return context.cast(builder, mean, types.float64, array_type.dtype)


@overload(step_mean)
def _step_mean_ov(a):
    # the arrays the lowering above does not take: Numba's np.mean
    return lambda a: np.mean(a)


# The fused Momentum step's flat update (:func:`_momentum_scaled_flat`'s arithmetic) for three
# C-contiguous arrays of one float dtype and ndim: a typing template and a lowering that call one
# LLVM function holding the two loops (plain and Nesterov). That function is built once per dtype
# in a code library of its own (optimized by LLVM once, like any compiled function) and linked
# into each caller (the step and its at-the-end update, which then hold one copy: it is never
# inlined). No Numba function: the overload's implementation before cost 0.16-0.18 s of CPU in
# every cold MNIST training process (typing, lowering, the flat kernel inlined into its IR, a C
# wrapper). Bit for bit the flat kernel's results: the same operations in the same order, no
# fast math.
def _same_flat_arrays(p, g, v):
    return (all(isinstance(a, types.Array) and a.layout == "C" for a in (p, g, v))
            and p.ndim == g.ndim == v.ndim and p.dtype == g.dtype == v.dtype
            and isinstance(p.dtype, types.Float) and p.mutable and v.mutable)


_MOMENTUM_LOOPS = {}       # (codegen, Numba dtype) -> (its code library, the function name, type)


def _momentum_loops(context, real_type):
    """The code library of ``srcgrad_flat_momentum_<dtype>(p, g, v, n, lr, mu, scale,
    nesterov)`` (made once per dtype), its name and its LLVM type: ``v = mu * v + scale * g;
    p -= lr * v`` over ``n`` elements, with Nesterov ``g' = scale * g; v = mu * v + g';
    p -= lr * (g' + mu * v)``, all in the dtype."""
    key = context.codegen(), real_type
    if key in _MOMENTUM_LOOPS:
        return _MOMENTUM_LOOPS[key]
    name = f"srcgrad_flat_momentum_{real_type}"
    real = context.get_value_type(real_type)
    ptr, i64 = real.as_pointer(), ir.IntType(64)
    fnty = ir.FunctionType(ir.VoidType(), [ptr, ptr, ptr, i64, real, real, real, ir.IntType(1)])
    library = context.codegen().create_library(name)
    module = library.create_ir_module(name)
    fn = ir.Function(module, fnty, name)
    fn.attributes.add("noinline")
    p, g, v, n, lr, mu, scale, nesterov = fn.args
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    with builder.if_else(nesterov) as (with_nesterov, plain):
        for look_ahead in (True, False):
            with with_nesterov if look_ahead else plain:
                with cgutils.for_range(builder, n) as loop:
                    at = [builder.gep(a, [loop.index]) for a in (p, g, v)]
                    if look_ahead:
                        gi = builder.fmul(scale, builder.load(at[1]))
                        vi = builder.fadd(builder.fmul(mu, builder.load(at[2])), gi)
                        step = builder.fmul(lr, builder.fadd(gi, builder.fmul(mu, vi)))
                    else:
                        vi = builder.fadd(builder.fmul(mu, builder.load(at[2])),
                                          builder.fmul(scale, builder.load(at[1])))
                        step = builder.fmul(lr, vi)
                    builder.store(vi, at[2])
                    builder.store(builder.fsub(builder.load(at[0]), step), at[0])
    builder.ret_void()
    library.add_ir_module(module)
    library.finalize()
    _MOMENTUM_LOOPS[key] = library, name, fnty
    return _MOMENTUM_LOOPS[key]


def lower_flat_momentum(function, shape_message):
    """Register the flat Momentum update above for ``function(p, g, v, lr, mu, nesterov,
    scale)`` (the fused step's ``momentum_apply``): shapes that differ raise
    ``ValueError(shape_message)``; other types are left to the implementations registered
    after this."""
    @type_callable(function)
    def _typer(context):
        def typer(p, g, v, lr, mu, nesterov, scale):
            scalars = all(isinstance(x, (types.Float, types.Integer)) for x in (lr, mu, nesterov,
                                                                              scale))
            return types.none if scalars and _same_flat_arrays(p, g, v) else None
        return typer

    @lower_builtin(function, types.Array, types.Array, types.Array, types.Number, types.Number,
                   types.Number, types.Number)
    def _lower(context, builder, signature, args):
        array_type, real_type = signature.args[0], signature.args[0].dtype
        p, g, v = (make_array(array_type)(context, builder, a) for a in args[:3])
        shapes = [cgutils.unpack_tuple(builder, a.shape, array_type.ndim) for a in (p, g, v)]
        differ = cgutils.false_bit
        for sizes in zip(*shapes):
            for other in sizes[1:]:
                differ = builder.or_(differ, builder.icmp_signed("!=", sizes[0], other))
        with builder.if_then(differ, likely=False):
            context.call_conv.return_user_exc(builder, ValueError, (shape_message,))
        lr, mu, nesterov, scale = args[3:]
        lr_t, mu_t, nesterov_t, scale_t = signature.args[3:]
        nesterov_on = context.cast(builder, nesterov, nesterov_t, types.float64)
        nesterov_on = builder.fcmp_unordered("!=", nesterov_on, ir.Constant(ir.DoubleType(), 0.0))
        library, name, fnty = _momentum_loops(context, real_type)
        context.add_linking_libs([library])
        loops = cgutils.get_or_insert_function(builder.module, fnty, name)
        builder.call(loops, [p.data, g.data, v.data, p.nitems,
                             context.cast(builder, lr, lr_t, real_type),
                             context.cast(builder, mu, mu_t, real_type),
                             context.cast(builder, scale, scale_t, real_type), nesterov_on])
        return context.get_dummy_value()
