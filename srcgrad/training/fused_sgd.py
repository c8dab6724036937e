"""Plain SGD fused into a generated adjoint: one compiled *training step* per loss.

:class:`srcgrad.optim.MinibatchLoop` with the :class:`~srcgrad.optim.SGD` optimizer calls, per
minibatch, ``loss, grads = adjoint(*params, X, y, seed)`` and then ``p -= lr * g`` for every
parameter. For a weight whose gradient is a matrix product, e.g. ``_adj_W1 =
matmul_grad_right(_adj_t1, X, W1)`` (``X.T @ _adj_t1``), that allocates a weight-sized array,
writes it and reads it back in the update. BLAS does both in one call:
``W1 = -lr * X.T @ _adj_t1 + W1`` (``gemm`` with alpha = -lr, beta = 1).

:func:`sgd_step_function` rewrites the adjoint of a generated module into

    loss = <name>_sgd_step(*params, X, y, _seed, _lr)        # params updated in place

with the same body, except that

* a returned gradient ``N = matmul_grad_right(G, A, P)`` (or ``matmul_grad_left(G, P, B)``) of a
  parameter ``P`` that nothing else reads becomes ``N = sgd_pending_right(G, A, P)``: an empty
  array when the product can be fused at the end (2-d C-contiguous operands of one float dtype,
  not overlapping ``P``), otherwise the gradient itself;
* the ``return`` becomes the updates, all at the end (after every fused loop's size guard, so a
  step stopped by ``FusionGuardFailed`` has changed nothing), then ``return _value``:
  ``sgd_apply_right(N, G, A, P, _lr)`` (the fused GEMM, or ``P -= lr * N``) for those, and
  ``sgd_apply(P, g, _lr)`` (``P -= lr * g``, as the optimizer computes it) for every other one;
  a gradient returned scaled by the seed at the end (``s = g if _seed == 1.0 else g * ...``,
  transform.SEED_AT_END) is updated with ``_lr * _seed`` and ``g`` itself (``s`` is not made).

Momentum (``rule="momentum"``) is written the same way: ``<name>_momentum_step(*params, X, y,
_seed, _lr, _mu, _nesterov, _velocity)``, where a fused weight's velocity is the product's
output, ``v = A.T @ G + mu * v`` (``gemm`` with alpha = 1, beta = mu), then ``p -= lr * v``:
no gradient array, one pass fewer (:func:`momentum_apply_right`). With Nesterov the update also
needs the gradient itself: it is computed at the end, then the plain update. The Momentum step
has no ``sgd_pending_*`` call: its product statement becomes a comment and the update,
``momentum_apply_right(None, G, A, P, ...)``, decides at the end (three compiled functions fewer
in a cold compile: the pending helper, its marker's ``np.empty`` and its product variant).

Moving a product to the end is only done when it reads the same values there: its operands are
not rebound or written (``x[...] =``, ``x +=``, in-place helpers, ``out=``) after it, nor is any
array they may be views of, and none of them may be a view of a parameter (a parameter updated
before it would change its value). Otherwise that parameter keeps the plain update. The result
matches the unfused step to rounding (the fused product rounds ``W - lr*(X.T @ G)`` in BLAS).
"""

from __future__ import annotations

import ast
import os

import numba
import numpy as np
from numba import types
from numba.extending import overload

from srcgrad.backends.cpu.memory import fresh_empty, fresh_zeros

from .blas import gemm
from .flat_kernels import _flat_view, _momentum_scaled_flat, _overlaps, _sgd_flat
from .momentum_lowering import (lower_flat_momentum, lower_flat_sgd, lower_momentum_at_end,
                                lower_sgd_at_end)

__all__ = ["sgd_step_function", "sgd_pending_right", "sgd_pending_left", "sgd_apply_right",
           "sgd_apply_left", "sgd_apply", "momentum_apply_right", "momentum_apply_left",
           "momentum_apply"]

STEP_SUFFIX = "_sgd_step"
RULES = ("sgd", "momentum")     # the optimizers whose update can be written into the step


# ------------------------------------------------------------------------------------------------
# Runtime helpers (called by the generated step)
# ------------------------------------------------------------------------------------------------


def _fusable(*arrays):
    """Numba types: 2-d C-contiguous arrays of one float32/float64 dtype (what gemm takes)."""
    return all(isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C"
               and a.dtype in (types.float32, types.float64) for a in arrays) \
        and len({a.dtype for a in arrays}) == 1 and arrays[-1].mutable


def sgd_pending_right(g, a, p):
    """``matmul_grad_right(g, a, p)`` (``a.T @ g``), or an empty array: fused later."""
    from srcgrad.runtime import matmul_grad_right
    return matmul_grad_right(g, a, p)


def sgd_pending_left(g, p, b):
    """``matmul_grad_left(g, p, b)`` (``g @ b.T``), or an empty array: fused later."""
    from srcgrad.runtime import matmul_grad_left
    return matmul_grad_left(g, p, b)


def sgd_apply_right(n, g, a, p, lr):
    """``p -= lr * a.T @ g`` (as one GEMM when ``n`` is the empty pending marker), else
    ``p -= lr * n``."""
    raise NotImplementedError       # compiled only (the overload below)


def sgd_apply_left(n, g, p, b, lr):
    """``p -= lr * g @ b.T`` (one GEMM when ``n`` is the empty marker), else ``p -= lr * n``."""
    raise NotImplementedError


def sgd_apply(p, g, lr):
    """``p -= lr * g`` (what the SGD optimizer does)."""
    raise NotImplementedError


@overload(sgd_pending_right)
def _pending_right_ov(g, a, p):
    from srcgrad.backends.cpu.blas import matmul_grad_right
    if not _fusable(g, a, p):
        return lambda g, a, p: matmul_grad_right(g, a, p)

    def impl(g, a, p):
        if (a.shape[0] == g.shape[0] and a.shape[1] == p.shape[0] and g.shape[1] == p.shape[1]
                and not _overlaps(a, p) and not _overlaps(g, p)):
            return fresh_empty((0, 0), p.dtype)     # the marker (no np.empty to compile)
        return matmul_grad_right(g, a, p)
    return impl


@overload(sgd_pending_left)
def _pending_left_ov(g, p, b):
    from srcgrad.backends.cpu.blas import matmul_grad_left
    if not _fusable(g, b, p):
        return lambda g, p, b: matmul_grad_left(g, p, b)

    def impl(g, p, b):
        if (g.shape[0] == p.shape[0] and b.shape[1] == g.shape[1] and b.shape[0] == p.shape[1]
                and not _overlaps(b, p) and not _overlaps(g, p)):
            return fresh_empty((0, 0), p.dtype)     # the marker (no np.empty to compile)
        return matmul_grad_left(g, p, b)
    return impl


@numba.njit(cache=True)
def _sgd(p, g, lr):
    """``p -= lr * g`` in the parameter's dtype, as the SGD optimizer's kernel computes it; for
    the operands the optimizer's flat kernel does not take (see :func:`_flat_ok`)."""
    if p.shape != g.shape:
        raise ValueError("srcgrad.optim: gradient/state shape does not match parameter shape")
    p -= p.dtype.type(lr) * g


_SHAPE_MESSAGE = "srcgrad.optim: gradient/state shape does not match parameter shape"


def _flat_ok(p, g):
    """Numba types: ``p -= lr * g`` can go through flat views (both C-contiguous float arrays of
    one ndim, ``p`` writable): then every parameter, whatever its ndim, is updated by the one
    compiled flat SGD kernel of its dtype (the optimizer's), not by an ``_sgd`` per ndim (each a
    broadcasting array expression, ~0.2-0.4 s of a cold compile)."""
    return (isinstance(p, types.Array) and isinstance(g, types.Array) and p.layout == "C"
            and g.layout == "C" and p.ndim == g.ndim and p.mutable
            and isinstance(p.dtype, types.Float) and isinstance(g.dtype, types.Float))


def _update_impl(p, g):
    """A function ``(p, g, lr)`` doing ``p -= lr * g`` for these Numba types, or None where the
    flat kernel does not apply."""
    if not _flat_ok(p, g):
        return None

    def update(p, g, lr):
        if p.shape != g.shape:
            raise ValueError(_SHAPE_MESSAGE)
        _sgd_flat(_flat_view(p), _flat_view(g), lr)
    return update


lower_flat_sgd(sgd_apply, _SHAPE_MESSAGE)      # same-dtype C arrays: no function of their own
lower_sgd_at_end(sgd_apply_right, True, _SHAPE_MESSAGE)
lower_sgd_at_end(sgd_apply_left, False, _SHAPE_MESSAGE)


@overload(sgd_apply)
def _apply_ov(p, g, lr):
    update = _update_impl(p, g)
    if update is not None:
        return update
    return lambda p, g, lr: _sgd(p, g, lr)


@overload(sgd_apply_right)
def _apply_right_ov(n, g, a, p, lr):
    if not _fusable(g, a, p):
        return lambda n, g, a, p, lr: _sgd(p, n, lr)

    if not _flat_ok(p, n):
        def impl(n, g, a, p, lr):
            if n.ndim == 2 and n.shape[0] == 0 and n.shape[1] == 0 and p.size > 0:
                gemm(a, g, p, -lr, 1.0, True, False)            # p = -lr * a.T @ g + p
            else:
                _sgd(p, n, lr)
        return impl

    def impl_flat(n, g, a, p, lr):
        if n.ndim == 2 and n.shape[0] == 0 and n.shape[1] == 0 and p.size > 0:
            gemm(a, g, p, -lr, 1.0, True, False)            # p = -lr * a.T @ g + p
        else:
            if p.shape != n.shape:
                raise ValueError(_SHAPE_MESSAGE)
            _sgd_flat(_flat_view(p), _flat_view(n), lr)
    return impl_flat


@overload(sgd_apply_left)
def _apply_left_ov(n, g, p, b, lr):
    if not _fusable(g, b, p):
        return lambda n, g, p, b, lr: _sgd(p, n, lr)

    if not _flat_ok(p, n):
        def impl(n, g, p, b, lr):
            if n.ndim == 2 and n.shape[0] == 0 and n.shape[1] == 0 and p.size > 0:
                gemm(g, b, p, -lr, 1.0, False, True)            # p = -lr * g @ b.T + p
            else:
                _sgd(p, n, lr)
        return impl

    def impl_flat(n, g, p, b, lr):
        if n.ndim == 2 and n.shape[0] == 0 and n.shape[1] == 0 and p.size > 0:
            gemm(g, b, p, -lr, 1.0, False, True)            # p = -lr * g @ b.T + p
        else:
            if p.shape != n.shape:
                raise ValueError(_SHAPE_MESSAGE)
            _sgd_flat(_flat_view(p), _flat_view(n), lr)
    return impl_flat


def momentum_apply_right(n, g, a, p, v, lr, mu, nesterov, scale):
    """Momentum (PyTorch's convention): ``v = mu * v + scale * a.T @ g`` as one GEMM (alpha
    scale, beta mu) when ``n`` is the empty pending marker, then ``p -= lr * v``; else the update
    with ``n``. ``scale``: the seed a gradient returned by the seed at the end is multiplied by
    (1.0 otherwise; a product by 1.0 is exact)."""
    raise NotImplementedError       # compiled only (the overload below)


def momentum_apply_left(n, g, p, b, v, lr, mu, nesterov, scale):
    """:func:`momentum_apply_right` for ``g @ b.T``."""
    raise NotImplementedError


def momentum_apply(p, g, v, lr, mu, nesterov, scale):
    """``v = mu * v + scale * g``, then ``p -= lr * v`` (Nesterov: ``p -= lr * (g + mu * v)``),
    as the Momentum optimizer's kernel computes it."""
    raise NotImplementedError


@numba.njit(cache=True)
def _momentum(p, g, v, lr, mu, nesterov, scale=1.0):
    """The Momentum optimizer's update of one parameter (the same arithmetic as its kernel)."""
    if p.shape != g.shape or p.shape != v.shape:
        raise ValueError("srcgrad.optim: gradient/state shape does not match parameter shape")
    lr_, mu_, s_ = p.dtype.type(lr), p.dtype.type(mu), p.dtype.type(scale)
    # by index, any layout (the C-contiguous case goes through the flat kernel instead:
    # momentum_apply; a reshape(-1) here failed on a Fortran-ordered or strided array)
    if nesterov != 0.0:
        for i in np.ndindex(p.shape):
            gi = s_ * g[i]
            vi = mu_ * v[i] + gi
            v[i] = vi
            p[i] -= lr_ * (gi + mu_ * vi)
    else:
        for i in np.ndindex(p.shape):
            vi = mu_ * v[i] + s_ * g[i]
            v[i] = vi
            p[i] -= lr_ * vi


# The Momentum step's updates are written as few compiled functions as possible: every function
# Numba compiles costs a fixed ~30-60 ms of typing and LLVM in each cold training process, even a
# one-line one. For the usual operands (C-contiguous float arrays) each overload below is one
# function calling the flat kernel; the velocity GEMM's descent is a loop written inline, and a
# gradient the GEMM cannot take is the cpu backend's product the step already compiles
# (matmul_grad_right / _left of the same types), not a fresh array and a second GEMM variant.
# (Before: _momentum_update and _descend_update overloads, two gemm variants and an np.empty: 7
# functions more, ~1 s of the MNIST step's cold compile.)


def _momentum_flat_ok(p, g, v):
    """Numba types: the flat kernel takes ``p``, ``g``, ``v`` (C-contiguous, one ndim, ``p`` and
    ``v`` of one dtype and writable)."""
    return _flat_ok(p, g) and _flat_ok(v, g) and v.dtype == p.dtype


lower_flat_momentum(momentum_apply, _SHAPE_MESSAGE)     # same-dtype C arrays: no function


@overload(momentum_apply)
def _momentum_apply_ov(p, g, v, lr, mu, nesterov, scale):
    if not _momentum_flat_ok(p, g, v):       # by index, any layout
        return lambda p, g, v, lr, mu, nesterov, scale: _momentum(p, g, v, lr, mu, nesterov, scale)

    def impl(p, g, v, lr, mu, nesterov, scale):
        if p.shape != g.shape or p.shape != v.shape:
            raise ValueError(_SHAPE_MESSAGE)
        _momentum_flat_inline(_flat_view(p), _flat_view(g), _flat_view(v), lr, mu, nesterov,
                              scale)
    return impl


# the flat kernel's own code written into momentum_apply's (one function fewer to compile: the
# generated step's bias updates and a Nesterov weight update all call momentum_apply on 1-d
# C-contiguous views of one type, so one compiled function serves them all)
_momentum_flat_inline = numba.njit(inline="always")(_momentum_scaled_flat.py_func)


def _momentum_fusable(g, x, p, v):
    return _fusable(g, x, p) and _fusable(g, x, v) and v.dtype == p.dtype


@numba.njit(inline="always")
def _descend_inline(pf, vf, lr):
    # inlined into its caller's IR (no function of its own to compile): p -= lr * v, flat
    lr_ = pf.dtype.type(lr)
    for i in range(pf.size):
        pf[i] -= lr_ * vf[i]


lower_momentum_at_end(momentum_apply_right, True, _SHAPE_MESSAGE)   # usual operands: no
lower_momentum_at_end(momentum_apply_left, False, _SHAPE_MESSAGE)   # function of their own


@overload(momentum_apply_right)
def _momentum_right_ov(n, g, a, p, v, lr, mu, nesterov, scale):
    if n is None or isinstance(n, types.NoneType):      # the generated step: all at the end
        return _momentum_at_end(g, a, p, v, right=True)
    # n: what sgd_pending_right returned for these types (the empty marker, or the gradient)
    if not (_momentum_fusable(g, a, p, v) and _momentum_flat_ok(p, n, v) and n.ndim == 2):
        return lambda n, g, a, p, v, lr, mu, nesterov, scale: \
            momentum_apply(p, n, v, lr, mu, nesterov, scale)
    from srcgrad.backends.cpu.blas import matmul_grad_right

    def impl(n, g, a, p, v, lr, mu, nesterov, scale):
        pending = n.shape[0] == 0 and n.shape[1] == 0 and p.size > 0
        if pending and nesterov == 0.0 and v.shape == p.shape and not _overlaps(v, p) \
                and not _overlaps(v, a) and not _overlaps(v, g):
            gemm(a, g, v, scale, mu, True, False)       # v = scale * a.T @ g + mu * v
            _descend_inline(_flat_view(p), _flat_view(v), lr)
            return
        if pending:                                     # Nesterov needs the gradient itself
            n = matmul_grad_right(g, a, p)
        if p.shape != n.shape or p.shape != v.shape:
            raise ValueError(_SHAPE_MESSAGE)
        _momentum_scaled_flat(_flat_view(p), _flat_view(n), _flat_view(v), lr, mu, nesterov, scale)
    return impl


@overload(momentum_apply_left)
def _momentum_left_ov(n, g, p, b, v, lr, mu, nesterov, scale):
    if n is None or isinstance(n, types.NoneType):
        return _momentum_at_end(g, b, p, v, right=False)
    if not (_momentum_fusable(g, b, p, v) and _momentum_flat_ok(p, n, v) and n.ndim == 2):
        return lambda n, g, p, b, v, lr, mu, nesterov, scale: \
            momentum_apply(p, n, v, lr, mu, nesterov, scale)
    from srcgrad.backends.cpu.blas import matmul_grad_left

    def impl(n, g, p, b, v, lr, mu, nesterov, scale):
        pending = n.shape[0] == 0 and n.shape[1] == 0 and p.size > 0
        if pending and nesterov == 0.0 and v.shape == p.shape and not _overlaps(v, p) \
                and not _overlaps(v, b) and not _overlaps(v, g):
            gemm(g, b, v, scale, mu, False, True)       # v = scale * g @ b.T + mu * v
            _descend_inline(_flat_view(p), _flat_view(v), lr)
            return
        if pending:
            n = matmul_grad_left(g, p, b)
        if p.shape != n.shape or p.shape != v.shape:
            raise ValueError(_SHAPE_MESSAGE)
        _momentum_scaled_flat(_flat_view(p), _flat_view(n), _flat_view(v), lr, mu, nesterov, scale)
    return impl


def _momentum_at_end(g, x, p, v, right):
    """``momentum_apply_right(None, g, a, p, ...)`` / ``momentum_apply_left(None, g, p, b, ...)``:
    what the generated Momentum step calls (no ``sgd_pending_*`` before: the step's rewrite has
    checked that the product's operands hold the same values at the end, and an operand sharing
    ``p``'s memory is read by the product before ``p`` is written). For fusable types the
    velocity is the product's GEMM output; else (Nesterov, ``v`` sharing memory with an operand)
    the gradient is computed first, by the cpu backend's product (for these types written into
    the caller around the ``gemm_into`` call the step's own products make: nothing more to
    compile, and less code here than an ``np.empty`` and a second GEMM call), then the plain
    update. (The usual operands do not reach this overload: momentum_lowering's lowering.) Other types: the
    cpu backend's product and :func:`momentum_apply`."""
    from srcgrad.backends.cpu.blas import matmul_grad_left, matmul_grad_right
    if not _momentum_fusable(g, x, p, v):
        if right:
            return lambda n, g, a, p, v, lr, mu, nesterov, scale: \
                momentum_apply(p, matmul_grad_right(g, a, p), v, lr, mu, nesterov, scale)
        return lambda n, g, p, b, v, lr, mu, nesterov, scale: \
            momentum_apply(p, matmul_grad_left(g, p, b), v, lr, mu, nesterov, scale)

    if right:
        def impl_right(n, g, a, p, v, lr, mu, nesterov, scale):
            if not (a.shape[0] == g.shape[0] and a.shape[1] == p.shape[0]
                    and g.shape[1] == p.shape[1] and v.shape == p.shape):
                raise ValueError(_SHAPE_MESSAGE)
            if nesterov == 0.0 and not _overlaps(v, p) and not _overlaps(v, a) \
                    and not _overlaps(v, g):
                gemm(a, g, v, scale, mu, True, False)       # v = scale * a.T @ g + mu * v
                _descend_inline(_flat_view(p), _flat_view(v), lr)
                return
            grad = matmul_grad_right(g, a, p)               # Nesterov needs the gradient itself
            momentum_apply(_flat_view(p), _flat_view(grad), _flat_view(v), lr, mu, nesterov,
                           scale)
        return impl_right

    def impl_left(n, g, p, b, v, lr, mu, nesterov, scale):
        if not (g.shape[0] == p.shape[0] and b.shape[1] == g.shape[1]
                and b.shape[0] == p.shape[1] and v.shape == p.shape):
            raise ValueError(_SHAPE_MESSAGE)
        if nesterov == 0.0 and not _overlaps(v, p) and not _overlaps(v, b) \
                and not _overlaps(v, g):
            gemm(g, b, v, scale, mu, False, True)           # v = scale * g @ b.T + mu * v
            _descend_inline(_flat_view(p), _flat_view(v), lr)
            return
        grad = matmul_grad_left(g, p, b)
        momentum_apply(_flat_view(p), _flat_view(grad), _flat_view(v), lr, mu, nesterov,
                       scale)
    return impl_left


# ------------------------------------------------------------------------------------------------
# The rewrite
# ------------------------------------------------------------------------------------------------

_ALLOCATORS = {"np.empty", "np.zeros", "np.ones", "np.full", "np.empty_like", "np.zeros_like",
               "np.ones_like", "np.full_like", "np.arange", "matmul", "matmul_grad_left",
               "matmul_grad_right"}
_MUTATING_METHODS = {"fill", "sort", "put", "itemset", "resize", "partition"}


def _call_name(call):
    return ast.unparse(call.func) if isinstance(call, ast.Call) else None


def _sources(expr, fresh):
    """Names whose arrays ``expr``'s value may share memory with (conservative)."""
    if isinstance(expr, ast.Name):
        return {expr.id}
    if isinstance(expr, ast.Constant):
        return set()
    if isinstance(expr, ast.Call):
        if _call_name(expr) in fresh:
            return set()
        out = set()
        for arg in list(expr.args) + [k.value for k in expr.keywords]:
            out |= _sources(arg, fresh)
        if isinstance(expr.func, ast.Attribute):         # x.reshape(...), x.T.copy(): x's memory
            out |= _sources(expr.func.value, fresh)
        return out
    if isinstance(expr, (ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp)):
        return set()                                     # a new value (array or scalar)
    if isinstance(expr, (ast.Subscript, ast.Attribute, ast.Starred)):
        return _sources(expr.value, fresh)
    return {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}


def _alias_closure(names, definitions, fresh):
    """``names`` and every name whose array they may be a view of, through all assignments."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for value in definitions.get(name, ()):
            todo.extend(_sources(value, fresh))
    return seen


def _definitions(fn):
    """name -> the expressions assigned to it (anywhere in the function; for loops' targets too)."""
    out = {}
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for n in ast.walk(target):
                    if isinstance(n, ast.Name):
                        out.setdefault(n.id, []).append(node.value)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and isinstance(node.target, ast.Name) \
                and node.value is not None:
            out.setdefault(node.target.id, []).append(node.value)
        elif isinstance(node, ast.For):
            for n in ast.walk(node.target):
                if isinstance(n, ast.Name):
                    out.setdefault(n.id, []).append(node.iter)
    return out


def _written(stmts, fresh, in_place):
    """(names rebound, names whose arrays may be written) by ``stmts``."""
    rebound, written = set(), set()
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                rebound.add(node.id)
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
                written |= _sources(node.value, fresh)
            elif isinstance(node, ast.AugAssign):
                written |= _sources(node.target, fresh)
            elif isinstance(node, ast.Call):
                name = _call_name(node)
                if name in in_place and node.args:
                    written |= _sources(node.args[0], fresh)
                if isinstance(node.func, ast.Attribute) and node.func.attr in _MUTATING_METHODS:
                    written |= _sources(node.func.value, fresh)
                for k in node.keywords:
                    if k.arg == "out":
                        written |= _sources(k.value, fresh)
    return rebound, written


def _name_uses(fn, name):
    return [n for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id == name]


def _seed_scaled(expr):
    """The gradient ``g`` (a Name) of a returned ``g if _seed == 1.0 else g * <_seed cast>``, the
    form ``naming.seed_scaled`` writes (after lowering: ``np.float32(1.0)``, ``np.float32(_seed)``,
    ``g.dtype.type(_seed)``), else None."""
    from srcgrad import naming

    def seed(node):                         # _seed, or a cast of it: f(_seed) for f = a.b.c
        if isinstance(node, ast.Name):
            return node.id == naming.SEED
        return (isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords
                and isinstance(node.args[0], ast.Name) and node.args[0].id == naming.SEED
                and all(isinstance(n, (ast.Attribute, ast.Name, ast.Load))
                        for n in ast.walk(node.func)))

    def one(node):                          # 1.0, or a cast of it
        if isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords:
            node = node.args[0]
        return isinstance(node, ast.Constant) and node.value == 1.0

    if not (isinstance(expr, ast.IfExp) and isinstance(expr.body, ast.Name)):
        return None
    g, test, other = expr.body.id, expr.test, expr.orelse
    if (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
            and seed(test.left) and one(test.comparators[0])
            and isinstance(other, ast.BinOp) and isinstance(other.op, ast.Mult)
            and isinstance(other.left, ast.Name) and other.left.id == g and seed(other.right)):
        return expr.body
    return None


def sgd_step_source(module_source, adjoint_name, n_params, rule="sgd"):
    """The source of ``<adjoint_name>_sgd_step`` (see the module docstring) and the names of the
    parameters whose update is a fused GEMM; None when the adjoint does not have the expected
    form (one ``return _value, (g_0, ..., g_n-1)`` at its end, parameters first).

    ``rule="momentum"``: ``<adjoint_name>_momentum_step(*params, X, y, _seed, _lr, _mu,
    _nesterov, _velocity)`` (``_velocity``: the tuple of the velocity arrays, updated in place
    too); a fused weight's velocity is the GEMM's output, ``v = A.T @ G + mu * v`` (alpha 1,
    beta mu), then ``p -= lr * v`` (Nesterov: the gradient is computed first, no fusion)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    from srcgrad import helpers, naming
    tree = ast.parse(module_source)
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == adjoint_name),
              None)
    if fn is None or len(fn.args.args) < n_params + 1 or fn.args.vararg or fn.args.kwarg:
        return None
    ret = fn.body[-1]
    if not (isinstance(ret, ast.Return) and isinstance(ret.value, ast.Tuple)
            and len(ret.value.elts) == 2 and isinstance(ret.value.elts[1], ast.Tuple)
            and len(ret.value.elts[1].elts) == n_params):
        return None
    if sum(isinstance(n, ast.Return) for n in ast.walk(fn)) != 1:
        return None
    params = [a.arg for a in fn.args.args[:n_params]]
    grads = list(ret.value.elts[1].elts)
    body = list(fn.body[:-1])
    # the seed at the end (transform.SEED_AT_END): a gradient returned as `s`, bound once by
    # `s = g if _seed == 1.0 else g * ...`, is g scaled by the seed: the step drops that statement
    # and subtracts (_lr * _seed) * g (Momentum: adds _seed * g to the velocity, the GEMM's alpha)
    seeded = {}                                 # parameter index -> the statement binding s
    for i, g in enumerate(grads):
        binds = [s for s in body if isinstance(g, ast.Name) and isinstance(s, ast.Assign)
                 and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
                 and s.targets[0].id == g.id]
        inner = _seed_scaled(binds[0].value) if len(binds) == 1 else None
        if inner is not None and len(_name_uses(fn, g.id)) == 2:
            seeded[i] = binds[0]
            grads[i] = inner
    fresh = _ALLOCATORS | helpers.fresh_names()
    in_place = helpers.in_place_names()
    definitions = _definitions(fn)
    fused = {}                                  # parameter index -> (kind, operand names)
    for i, (p, g) in enumerate(zip(params, grads)):
        if not isinstance(g, ast.Name) or g.id in params:
            continue
        stores = [k for k, s in enumerate(body) if any(
            isinstance(n, ast.Name) and n.id == g.id and isinstance(n.ctx, ast.Store)
            for n in ast.walk(s))]
        # defined once, read by the return only (through the seed's scaling: three reads)
        if len(stores) != 1 or len(_name_uses(fn, g.id)) != (4 if i in seeded else 2):
            continue
        k = stores[0]
        stmt = body[k]
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.Call)
                and not stmt.value.keywords and len(stmt.value.args) == 3
                and all(isinstance(a, ast.Name) for a in stmt.value.args)):
            continue
        kind = _call_name(stmt.value)
        args = [a.id for a in stmt.value.args]
        if kind == "matmul_grad_right" and args[2] == p:
            operands = (args[0], args[1])
        elif kind == "matmul_grad_left" and args[1] == p:
            operands = (args[0], args[2])
        else:
            continue
        closure = _alias_closure(operands, definitions, fresh)
        if closure & set(params):               # a view of a parameter: updated before it is read
            continue
        rebound, written = _written(body[k + 1:], fresh, in_place)
        if rebound & set(operands) or written & closure:
            continue
        pending = "sgd_pending_right" if kind == "matmul_grad_right" else "sgd_pending_left"
        fused[i] = (kind, args, pending, stmt)
    # the adjoint's own text (its comments kept, np.zeros written inline: _zeros_inline) with
    # four edits: the header, the docstring, the fused products and the return
    updates = []
    side = {"matmul_grad_right": "right", "matmul_grad_left": "left"}
    for i, (p, g) in enumerate(zip(params, grads)):
        scale = naming.SEED if i in seeded else "1.0"    # the seed at the end, applied here
        extra = (f", _lr * {naming.SEED}" if i in seeded else ", _lr") if rule == "sgd" else \
            f", _velocity[{i}], _lr, _mu, _nesterov, {scale}"
        if i in fused:
            kind, args = fused[i][:2]       # (n, g, a, p, ...) / (n, g, p, b, ...)
            # Momentum: no pending marker (None), the product is made at the end
            # (_momentum_at_end); SGD: the marker or the gradient sgd_pending_* made
            marker = g.id if rule == "sgd" else "None"
            updates.append(f"{rule}_apply_{side[kind]}({marker}, {', '.join(args)}{extra})")
        else:
            updates.append(f"{rule}_apply({p}, {ast.unparse(g)}{extra})")
    names = ', '.join(params[i] for i in fused) or 'none'
    if rule == "sgd":
        doc = (f"One SGD step: {adjoint_name} (the value and the gradients), then p -= _lr * "
               f"grad for every parameter, in place; returns the value. Fused into the "
               f"weight-gradient product (one GEMM, alpha=-_lr, beta=1): {names}.")
        tail = "_lr"
    else:
        doc = (f"One Momentum step: {adjoint_name} (the value and the gradients), then v = _mu "
               f"* v + grad, p -= _lr * v for every parameter and its velocity, in place; "
               f"returns the value. The velocity is the weight-gradient product's output (one "
               f"GEMM, alpha=1, beta=_mu; not with Nesterov): {names}.")
        tail = "_lr, _mu, _nesterov, _velocity"
    arguments = ", ".join(a.arg for a in fn.args.args)
    first = body[0] if body else ret
    has_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
        and isinstance(first.value.value, str)
    edits = [(fn.lineno, first.lineno - 1,
              [f"def {adjoint_name}_{rule}_step({arguments}, {tail}):", f'    """{doc}"""'])]
    if has_doc:
        edits.append((first.lineno, first.end_lineno, []))
    for stmt in seeded.values():
        edits.append((stmt.lineno, stmt.end_lineno, []))
    for kind, args, pending, stmt in fused.values():
        edits.append((stmt.lineno, stmt.end_lineno,
                      [f"    {stmt.targets[0].id} = {pending}({', '.join(args)})"] if rule == "sgd"
                      else [f"    # {stmt.targets[0].id} = {kind}({', '.join(args)}): made by "
                            "the Momentum update at the end (the velocity's GEMM)"]))
    edits.append((ret.lineno, ret.end_lineno,
                  [f"    # {'SGD' if rule == 'sgd' else 'Momentum'} update, after every guard (a "
                   "stopped step has changed nothing)"]
                  + [f"    {u}" for u in updates] + [f"    return {ast.unparse(ret.value.elts[0])}"]))
    lines = module_source.splitlines()
    _inline_calls(fn, lines)
    out, line = ["@step_jit"], fn.lineno
    for begin, stop, replacement in sorted(edits, key=lambda e: e[0]):
        out += lines[line - 1:begin - 1] + replacement
        line = stop + 1
    out += lines[line - 1:fn.end_lineno]
    text = "\n".join(out)
    return text, [params[i] for i in fused]


# The step's np.zeros(shape, dtype) and np.empty(shape, dtype) calls: the cpu backend's
# intrinsics, the allocation (and np.zeros's memset) written straight into the step. (Before:
# step_zeros, an inlined @njit of np.empty and a fill loop; Numba compiled np.empty per ndim and
# ran its untyped passes again at each of the step's six inlined calls.)
step_zeros = fresh_zeros
step_empty = fresh_empty
_INLINED = {("zeros", 2): b"step_zeros", ("empty", 2): b"step_empty", ("mean", 1): b"step_mean"}


def _inline_calls(fn, lines):
    """Rewrite, in ``lines`` (the module's source), every ``np.zeros(shape, dtype)`` and
    ``np.empty(shape, dtype)`` call of the adjoint ``fn`` (two positional arguments, the form the
    generated code writes) into ``step_zeros`` / ``step_empty`` (written into the step's code:
    no compiled function of their own), and every ``np.mean(x)`` (one)
    into ``step_mean(x)`` (a flat loop, cheaper to compile than Numba's np.mean); each call's
    name only, so line numbers and comments stay."""
    calls = sorted(((n.func.lineno, n.func.col_offset, n.func.end_col_offset,
                     _INLINED[n.func.attr, len(n.args)])
                    for n in ast.walk(fn)
                    if isinstance(n, ast.Call) and not n.keywords
                    and not any(isinstance(a, ast.Starred) for a in n.args)
                    and isinstance(n.func, ast.Attribute)
                    and (n.func.attr, len(n.args)) in _INLINED
                    and isinstance(n.func.value, ast.Name) and n.func.value.id == "np"
                    and n.func.lineno == n.func.end_lineno), reverse=True)
    for lineno, begin, end, name in calls:    # right to left: offsets stay valid on a line
        text = lines[lineno - 1].encode()     # (ast offsets count UTF-8 bytes)
        lines[lineno - 1] = (text[:begin] + name + text[end:]).decode()


def step_jit(function):
    """The step's decorator: the cpu backend's ``jit`` without the CPython wrapper. Only the
    compiled batch loops call the step (as a first-class function: its C wrapper), never Python,
    and the wrapper (unboxing eleven arguments) is LLVM work in every cold training process;
    also, the NumPy functions the step calls then compile with the flags of those the BLAS
    helpers call (one ``np.empty`` fewer)."""
    from srcgrad.backends import cpu
    return numba.njit(cache=True, fastmath=cpu.FASTMATH, error_model="numpy",
                      no_cpython_wrapper=True)(function)


def sgd_step_function(spec, n_params, rule="sgd"):
    """The compiled ``<name>_sgd_step`` (``rule="momentum"``: ``<name>_momentum_step``) for a cpu
    specialization ``spec`` of value_and_grad, and the parameters whose update is fused; None
    when the adjoint does not have the expected form. The step is written beside the generated
    module (``<module>_sgd.py`` / ``_momentum.py``, same cache key: the key already covers
    srcgrad's own source) and imported from there (Numba caches it on disk)."""
    from srcgrad import codegen, naming
    entry = getattr(spec.module, naming.MODULE_ENTRY, None)
    name = getattr(getattr(entry, "py_func", None), "__name__", None)
    if name is None or not spec.path.endswith(".py"):
        return None
    path = spec.path[:-3] + f"_{rule}.py"
    if not os.path.exists(path):
        built = sgd_step_source(spec.source, name, n_params, rule)
        if built is None:
            return None
        text, fused = built
        imported = ("sgd_apply_right, sgd_apply_left, sgd_apply" if rule == "sgd" else
                    "momentum_apply_right, momentum_apply_left, momentum_apply")
        source = (spec.source.rstrip("\n") + "\n\n\n"
                  "from srcgrad.training.flat_kernels import step_mean  # noqa: E402\n"
                  "from srcgrad.training.fused_sgd import (step_jit, step_zeros, step_empty, "
                  f"sgd_pending_right, sgd_pending_left, {imported})  # noqa: E402\n\n\n" + text +
                  f"\n\n\n_srcgrad_sgd_fused = {tuple(fused)!r}\n")
        codegen.write_module(path, source)
    module = codegen.import_module(path)
    return getattr(module, f"{name}_{rule}_step"), module._srcgrad_sgd_fused


def fused_step(loss_and_grads, params, Xb, yb, lean, rule="sgd", state=None):
    """For :class:`~srcgrad.optim.MinibatchLoop` with plain SGD (or Momentum: ``rule="momentum"``
    and ``state`` its velocity tuple): the compiled step of ``loss_and_grads`` for these
    arguments, its seed, its Numba function type, whether it is the lean specialization, and the
    parameters whose update is fused; None where the step does not apply (the python target, a
    loss reading module data, an adjoint of another form, ``SRCGRAD_FUSED_SGD=0``): the loop
    then calls the gradient and the optimizer's kernel."""
    if os.environ.get("SRCGRAD_FUSED_SGD", "1") == "0":
        return None
    if not all(isinstance(p, np.ndarray) and p.flags.writeable
               and (p.flags.c_contiguous or p.flags.f_contiguous) for p in params):
        return None                     # the optimizer's kernel says what it needs
    specialize = loss_and_grads.specialize_lean if lean else loss_and_grads.specialize
    spec = specialize(*params, Xb, yb)
    if getattr(spec, "plan", None) is not None and spec.plan.captures:
        return None                     # the unfused path says why this loss cannot be trained
    if not hasattr(spec.adjoint, "signatures"):
        return None                     # the python target
    if rule == "momentum" and not all(
            isinstance(v, np.ndarray) and v.shape == p.shape and v.dtype == p.dtype
            and v.flags.c_contiguous == p.flags.c_contiguous for p, v in zip(params, state)):
        return None                     # the optimizer's kernel says what it needs
    built = sgd_step_function(spec, len(params), rule)
    if built is None:
        return None
    step, fused = built
    argtypes = tuple(numba.typeof(a) for a in (*params, Xb, yb, spec.one)) + (types.float64,)
    if rule == "momentum":
        argtypes += (types.float64, types.float64, numba.typeof(tuple(state)))
    step.compile(argtypes)
    signature = step.overloads[argtypes].signature
    return step, spec.one, types.FunctionType(signature), getattr(spec, "lean", False), fused
