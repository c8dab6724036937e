"""The fused Momentum and SGD steps' updates (:mod:`srcgrad.training.fused_sgd`) written straight
into the step as typing templates and lowerings, for the usual operands (C-contiguous arrays of
one float dtype): no Numba function of their own to type, lower and optimize in a cold training
process. Other operands fall through to the overloads in ``fused_sgd``, registered after these.

Contract: :func:`lower_flat_momentum` registers ``momentum_apply(p, g, v, lr, mu, nesterov,
scale)`` (``v = mu * v + scale * g; p -= lr * v``, Nesterov ``g' = scale * g; v = mu * v + g'; p
-= lr * (g' + mu * v)``, in the parameter's dtype); :func:`lower_momentum_at_end` registers
``momentum_apply_right(None, g, a, p, v, ...)`` / ``momentum_apply_left(None, g, p, b, v, ...)``
(without Nesterov and when ``v`` shares no memory with ``p`` or an operand: the velocity is the
product's GEMM output, ``v = scale * op(x) @ op(y) + mu * v``, then ``p -= lr * v``; else the
product first, then the update). :func:`lower_flat_sgd` and :func:`lower_sgd_at_end` do the same
for plain SGD's ``sgd_apply(p, g, lr)`` (``p -= lr * g``) and ``sgd_apply_right(n, g, a, p,
lr)`` / ``sgd_apply_left(n, g, p, b, lr)`` (one GEMM ``p = -lr * op(x) @ op(y) + p`` for the
empty pending marker ``n``, else ``p -= lr * n``). All compute bit for bit what fused_sgd's
overloads compute: the same operations in the same order (no fast math), the same BLAS call, the
same errors.

The loops are one LLVM function per dtype in a code library of their own, made once per process
(optimized by LLVM once) and linked into each caller, never inlined: the step and its at-the-end
update then hold one copy. Before, ``momentum_apply``'s overload (0.16-0.18 s of CPU in every
cold MNIST training process) and the at-the-end update's (0.19-0.24 s) were Numba functions, and
LLVM optimized the update's loops once more in each module they were linked into.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import lower_builtin, type_callable
from numba.np.arrayobj import make_array

_LOOPS = {}           # (codegen, Numba dtype) -> the code library and its two functions


def _same_flat_arrays(*arrays):
    """Numba types: C-contiguous arrays of one ndim and one float dtype, the first and the last
    writable (the parameter and its velocity)."""
    return (all(isinstance(a, types.Array) and a.layout == "C" for a in arrays)
            and len({a.ndim for a in arrays}) == 1 and len({a.dtype for a in arrays}) == 1
            and isinstance(arrays[0].dtype, types.Float)
            and arrays[0].mutable and arrays[-1].mutable)


def _scalars(*values):
    return all(isinstance(x, (types.Float, types.Integer)) for x in values)


def _loops(context, real_type):
    """``(library, momentum, descend)`` for the dtype: the code library holding
    ``momentum(p, g, v, n, lr, mu, scale, nesterov)`` (the update over ``n`` elements, all in the
    dtype) and ``descend(p, v, n, lr)`` (``p -= lr * v``), and the two functions' names and LLVM
    types; made once per process."""
    key = context.codegen(), real_type
    if key in _LOOPS:
        return _LOOPS[key]
    real = context.get_value_type(real_type)
    ptr, i64 = real.as_pointer(), ir.IntType(64)
    name = f"srcgrad_flat_momentum_{real_type}"
    library = context.codegen().create_library(name)
    module = library.create_ir_module(name)
    momentum = ir.Function(module, ir.FunctionType(
        ir.VoidType(), [ptr, ptr, ptr, i64, real, real, real, ir.IntType(1)]), name)
    p, g, v, n, lr, mu, scale, nesterov = momentum.args
    builder = ir.IRBuilder(momentum.append_basic_block("entry"))
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
    descend = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, ptr, i64, real]),
                          f"srcgrad_flat_descend_{real_type}")
    p, v, n, lr = descend.args
    builder = ir.IRBuilder(descend.append_basic_block("entry"))
    with cgutils.for_range(builder, n) as loop:
        at_p, at_v = builder.gep(p, [loop.index]), builder.gep(v, [loop.index])
        builder.store(builder.fsub(builder.load(at_p), builder.fmul(lr, builder.load(at_v))), at_p)
    builder.ret_void()
    for fn in (momentum, descend):
        fn.attributes.add("noinline")
    library.add_ir_module(module)
    library.finalize()
    _LOOPS[key] = library, (momentum.name, momentum.ftype), (descend.name, descend.ftype)
    return _LOOPS[key]


def _call_loop(context, builder, real_type, which, args):
    """Call the dtype's ``momentum`` (``which`` 1) or ``descend`` (2) loop with ``args``."""
    found = _loops(context, real_type)
    context.add_linking_libs([found[0]])
    name, fnty = found[which]
    builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), args)


def _shape_error_if(context, builder, differ, message):
    with builder.if_then(differ, likely=False):
        context.call_conv.return_user_exc(builder, ValueError, (message,))


def _momentum_loop(context, builder, real_type, p, g, v, scalars, scalar_types):
    """The momentum loop on the arrays' data (``lr, mu, nesterov, scale``: LLVM values of
    ``scalar_types``; the first two and the scale cast to the dtype as the flat kernel does,
    Nesterov on where it is not 0.0)."""
    lr, mu, nesterov, scale = (context.cast(builder, x, t, to) for x, t, to in zip(
        scalars, scalar_types, (real_type, real_type, types.float64, real_type)))
    on = builder.fcmp_unordered("!=", nesterov, ir.Constant(ir.DoubleType(), 0.0))
    _call_loop(context, builder, real_type, 1, [p.data, g.data, v.data, p.nitems, lr, mu, scale,
                                                on])


def lower_flat_momentum(function, shape_message):
    """Register the flat Momentum update for ``function(p, g, v, lr, mu, nesterov, scale)``:
    shapes that differ raise ``ValueError(shape_message)``."""
    @type_callable(function)
    def _typer(context):
        def typer(p, g, v, lr, mu, nesterov, scale):
            if _scalars(lr, mu, nesterov, scale) and _same_flat_arrays(p, g, v):
                return types.none
            return None
        return typer

    @lower_builtin(function, types.Array, types.Array, types.Array, types.Number, types.Number,
                   types.Number, types.Number)
    def _lower(context, builder, signature, args):
        array_type = signature.args[0]
        p, g, v = (make_array(array_type)(context, builder, a) for a in args[:3])
        shapes = [cgutils.unpack_tuple(builder, a.shape, array_type.ndim) for a in (p, g, v)]
        differ = cgutils.false_bit
        for sizes in zip(*shapes):
            for other in sizes[1:]:
                differ = builder.or_(differ, builder.icmp_signed("!=", sizes[0], other))
        _shape_error_if(context, builder, differ, shape_message)
        _momentum_loop(context, builder, array_type.dtype, p, g, v, args[3:], signature.args[3:])
        return context.get_dummy_value()


def _overlap(builder, x, y):
    """Whether the memory of the arrays ``x`` and ``y`` (structs) overlaps (never where one is
    empty): flat_kernels._overlaps' test."""
    i64 = ir.IntType(64)
    zero = ir.Constant(i64, 0)
    x0, y0 = builder.ptrtoint(x.data, i64), builder.ptrtoint(y.data, i64)
    x1 = builder.add(x0, builder.mul(x.nitems, x.itemsize))
    y1 = builder.add(y0, builder.mul(y.nitems, y.itemsize))
    empty = builder.or_(builder.icmp_signed("==", x.nitems, zero),
                        builder.icmp_signed("==", y.nitems, zero))
    cross = builder.and_(builder.icmp_unsigned("<", x0, y1), builder.icmp_unsigned("<", y0, x1))
    return builder.and_(builder.not_(empty), cross)


def lower_momentum_at_end(function, right, shape_message):
    """Register the at-the-end update for ``function`` (``right``: ``momentum_apply_right(None,
    g, a, p, v, lr, mu, nesterov, scale)``, the velocity ``a.T @ g``-shaped; else
    ``momentum_apply_left(None, g, p, b, v, ...)``, ``g @ b.T``), for 2-d C-contiguous operands
    of one float dtype where NumPy's BLAS was found (the cpu backend's ``gemm_into``, and
    its fresh product without Nesterov)."""
    from srcgrad.backends.cpu import blas as cpu

    def applies(n, arrays, scalars):
        return (isinstance(n, types.NoneType) and cpu._NUMPY_GEMM is not None
                and _scalars(*scalars) and _same_flat_arrays(*arrays)
                and arrays[0].ndim == 2 and arrays[0].dtype in (types.float32, types.float64))

    @type_callable(function)
    def _typer(context):
        def typer(n, g, x, y, v, lr, mu, nesterov, scale):
            if not applies(n, (y if right else x, g, x if right else y, v),
                           (lr, mu, nesterov, scale)):
                return None
            cpu.typed_fresh_product(context, g.dtype)      # gemm_into compiled for the calls
            return types.none
        return typer

    @lower_builtin(function, types.NoneType, types.Array, types.Array, types.Array, types.Array,
                   types.Number, types.Number, types.Number, types.Number)
    def _lower(context, builder, signature, args):
        array_type = signature.args[1]
        real_type = array_type.dtype
        g, x, y, v = (make_array(array_type)(context, builder, a) for a in args[1:5])
        p, operand = (y, x) if right else (x, y)        # (g, a, p) / (g, p, b)
        gs, os_, ps, vs = (cgutils.unpack_tuple(builder, a.shape, 2) for a in (g, operand, p, v))
        ne = lambda a, b: builder.icmp_signed("!=", a, b)          # noqa: E731
        if right:       # a.T @ g: a (m, k) g (m, n) p (k, n)
            differ = [ne(os_[0], gs[0]), ne(os_[1], ps[0]), ne(gs[1], ps[1])]
        else:           # g @ b.T: g (k, m) b (n, m) p (k, n)
            differ = [ne(gs[0], ps[0]), ne(os_[1], gs[1]), ne(os_[0], ps[1])]
        differ += [ne(ps[0], vs[0]), ne(ps[1], vs[1])]
        any_differ = differ[0]
        for d in differ[1:]:
            any_differ = builder.or_(any_differ, d)
        _shape_error_if(context, builder, any_differ, shape_message)
        lr, mu, nesterov, scale = args[5:]
        lr_t, mu_t, nesterov_t, scale_t = signature.args[5:]
        plain = builder.fcmp_ordered("==", context.cast(builder, nesterov, nesterov_t,
                                                        types.float64),
                                     ir.Constant(ir.DoubleType(), 0.0))
        for other in (p, operand, g):
            plain = builder.and_(plain, builder.not_(_overlap(builder, v, other)))
        kernels = cpu.gemm_kernels(real_type)
        first, second = (args[2], args[1]) if right else (args[1], args[3])   # (a, g) / (g, b)
        flags = [context.get_constant(types.boolean, t) for t in (right, not right)]
        with builder.if_else(plain) as (fused, gradient_first):
            with fused:                 # v = scale * op(x) @ op(y) + mu * v, then p -= lr * v
                into_types = (array_type,) * 3 + (types.float64, types.float64, types.boolean,
                                                  types.boolean)
                cpu.lower_direct_call(context, builder, kernels.gemm_into, into_types, (
                    first, second, args[4], context.cast(builder, scale, scale_t, types.float64),
                    context.cast(builder, mu, mu_t, types.float64), *flags))
                _call_loop(context, builder, real_type, 2, [
                    p.data, v.data, p.nitems, context.cast(builder, lr, lr_t, real_type)])
            with gradient_first:        # Nesterov needs the gradient itself
                grad_value = cpu.lower_fresh_product(context, builder, array_type, first, second,
                                                     right, not right)
                grad = make_array(array_type)(context, builder, grad_value)
                _momentum_loop(context, builder, real_type, p, grad, v, args[5:],
                               signature.args[5:])
                context.nrt.decref(builder, array_type, grad_value)
        return context.get_dummy_value()


def _shape_differs(builder, x, y, ndim):
    differ = cgutils.false_bit
    for a, b in zip(cgutils.unpack_tuple(builder, x.shape, ndim),
                    cgutils.unpack_tuple(builder, y.shape, ndim)):
        differ = builder.or_(differ, builder.icmp_signed("!=", a, b))
    return differ


def _descend(context, builder, real_type, p, g, lr, lr_type):
    """``p -= lr * g`` by the dtype's descend loop (flat_kernels._sgd_flat's arithmetic)."""
    _call_loop(context, builder, real_type, 2, [p.data, g.data, p.nitems,
                                                context.cast(builder, lr, lr_type, real_type)])


def lower_flat_sgd(function, shape_message):
    """Register plain SGD's flat update for ``function(p, g, lr)`` (``p -= lr * g``, the
    fused SGD step's ``sgd_apply``) on C arrays of one float dtype and ndim: the loops library's
    descend loop, no Numba function."""
    @type_callable(function)
    def _typer(context):
        return lambda p, g, lr: types.none if _scalars(lr) and _same_flat_arrays(p, g) else None

    @lower_builtin(function, types.Array, types.Array, types.Number)
    def _lower(context, builder, signature, args):
        array_type = signature.args[0]
        p, g = (make_array(array_type)(context, builder, a) for a in args[:2])
        _shape_error_if(context, builder, _shape_differs(builder, p, g, array_type.ndim),
                        shape_message)
        _descend(context, builder, array_type.dtype, p, g, args[2], signature.args[2])
        return context.get_dummy_value()


def lower_sgd_at_end(function, right, shape_message):
    """Register the fused SGD step's ``sgd_apply_right(n, g, a, p, lr)`` (``right``) /
    ``sgd_apply_left(n, g, p, b, lr)`` for 2-d C operands of one float dtype: where ``n`` is the
    empty pending marker (and ``p`` not empty) one GEMM, ``p = -lr * op(x) @ op(y) + p``; else
    ``p -= lr * n`` (shapes checked) by the descend loop."""
    from srcgrad.backends.cpu import blas as cpu

    @type_callable(function)
    def _typer(context):
        def typer(n, g, x, y, lr):
            p, operand = (y, x) if right else (x, y)
            fits = (cpu._NUMPY_GEMM is not None and _scalars(lr)
                    and _same_flat_arrays(p, g, operand, n) and p.ndim == 2
                    and p.dtype in (types.float32, types.float64))
            return types.none if fits else None
        return typer

    @lower_builtin(function, types.Array, types.Array, types.Array, types.Array, types.Number)
    def _lower(context, builder, signature, args):
        array_type = signature.args[0]
        n, g, x, y = (make_array(array_type)(context, builder, a) for a in args[:4])
        p = y if right else x
        zero = ir.Constant(ir.IntType(64), 0)
        rows, cols = cgutils.unpack_tuple(builder, n.shape, 2)
        marker = builder.and_(builder.and_(builder.icmp_signed("==", rows, zero),
                                           builder.icmp_signed("==", cols, zero)),
                              builder.icmp_signed(">", p.nitems, zero))
        lr, lr_type = args[4], signature.args[4]
        with builder.if_else(marker) as (fused, plain):
            with fused:             # p = -lr * op(x) @ op(y) + p
                first, second = (args[2], args[1]) if right else (args[1], args[3])
                alpha = builder.fneg(context.cast(builder, lr, lr_type, types.float64))
                into_types = (array_type,) * 3 + (types.float64, types.float64, types.boolean,
                                                  types.boolean)
                cpu.lower_direct_call(context, builder, cpu.gemm_kernels(array_type.dtype)
                                      .gemm_into, into_types, (
                                          first, second, args[3] if right else args[2], alpha,
                                          context.get_constant(types.float64, 1.0),
                                          *[context.get_constant(types.boolean, t)
                                            for t in (right, not right)]))
            with plain:
                _shape_error_if(context, builder, _shape_differs(builder, p, n, 2),
                                shape_message)
                _descend(context, builder, array_type.dtype, p, n, lr, lr_type)
        return context.get_dummy_value()
