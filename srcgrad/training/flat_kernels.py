"""The optimizers' per-array update kernels, compiled once per dtype on flat 1-d contiguous arrays,
and the flat view they are handed (``_flat_view``). Used by the optimizers' tuple updates
(:mod:`srcgrad.training.optim`) and by the fused training steps (:mod:`srcgrad.training.fused_sgd`);
a module of their own so that neither of those imports the other. Also ``step_mean``, the fused
steps' ``np.mean`` (of a C float array: a sum loop written into the step by a lowering), and
``_overlaps``, their test of two arrays' memory."""

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

