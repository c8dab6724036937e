"""Derivative rules of array programs: products, reductions, shape work.
(runtime helpers such as expand_reduced live in srcgrad.runtime)"""
import operator

import numpy as np

from .. import kinds as K
# Runtime helpers the array templates call (generated code imports them from its backend).
from ..runtime import (expand_reduced, matmul_grad_left, matmul_grad_right, max_adjoint, prod_adjoint,  # noqa: F401
                      min_adjoint, reduced_count, reshape_any)
from .table import (d, elementwise_kind, reduction_kind, register_adjoint, register_tangent,
                    register_zero_derivative, same_kind)


def _dot_kind(a, b):
    if not (a.is_array and b.is_array):     # np.dot with a scalar: a product (see scalar_dot)
        return elementwise_kind(a, b)
    # np.dot of N-d arrays pairs every row of ``a`` with every stack of ``b`` (result ndim
    # a.ndim + b.ndim - 2): a different product, which this rule does not differentiate.
    for operand in (a, b):
        if operand.is_array and operand.ndim > 2:
            raise TypeError(f"np.dot of a {operand.ndim}-d array is not supported (for more than "
                            f"2 dimensions np.dot is not a batched product); use `@` or np.matmul "
                            f"for stacks of matrices")
    return K.matmul_kind(a, b)


# a @ b and np.dot of vectors and matrices; `@`/np.matmul also of stacks of matrices (NumPy's
# broadcasting of the leading axes). The helpers pick the transposed products by ndim.
@register_adjoint(operator.matmul, np.matmul, kind=K.matmul_kind, elementwise=False)
def matmul(result, a, b):
    d[a] += matmul_grad_left(d[result], a, b)
    d[b] += matmul_grad_right(d[result], a, b)


@register_tangent(operator.matmul, np.matmul)
def matmul_tangent(result, a, b):
    d[result] += d[a] @ b
    d[result] += a @ d[b]


register_adjoint(np.dot, kind=_dot_kind, elementwise=False)(matmul)     # the same template
register_tangent(np.dot)(matmul_tangent)


@register_adjoint(np.outer, kind=lambda a, b: K.array(2), elementwise=False)
def outer(result, a, b):
    d[a] += np.dot(d[result], b)
    d[b] += np.dot(d[result].T, a)


@register_tangent(np.outer)
def outer_tangent(result, a, b):
    d[result] += np.outer(d[a], b)
    d[result] += np.outer(a, d[b])


@register_adjoint(np.sum, kind=reduction_kind, elementwise=False)
def sum_(result, x, axis=None, keepdims=False):
    d[x] += expand_reduced(d[result], x, axis, keepdims)


@register_tangent(np.sum)
def sum_tangent(result, x, axis=None, keepdims=False):
    d[result] += np.sum(d[x], axis=axis, keepdims=keepdims)


@register_adjoint(np.mean, kind=lambda x, axis=None, keepdims=None: K.FLOAT if axis is None and not keepdims
                  else reduction_kind(x, axis, keepdims), elementwise=False)
def mean(result, x, axis=None, keepdims=False):
    d[x] += expand_reduced(d[result], x, axis, keepdims) / reduced_count(x, axis)


@register_tangent(np.mean)
def mean_tangent(result, x, axis=None, keepdims=False):
    d[result] += np.mean(d[x], axis=axis, keepdims=keepdims)


@register_adjoint(np.prod, kind=reduction_kind, elementwise=False)
def prod(result, x, axis=None, keepdims=False):
    d[x] += prod_adjoint(d[result], x, axis, keepdims)


@register_tangent(np.prod)
def prod_tangent(result, x, axis=None, keepdims=False):
    d[result] += np.sum(d[x] * prod_adjoint(np.ones_like(result), x, axis, keepdims), axis=axis,
                        keepdims=keepdims)


from ..runtime import prod_second  # noqa: E402


# hvp differentiates the tangent above: prod_adjoint's own adjoint (its gradient argument is the
# ones of the tangent, so the x part scales prod_second by it, broadcast as prod_adjoint does)
@register_adjoint(prod_adjoint, kind=lambda gradient, x, axis, keepdims: x, elementwise=False)
def _prod_adjoint_adjoint(result, gradient, x, axis, keepdims):
    d[x] += prod_second(d[result], x, axis) * prod_adjoint(gradient, np.ones_like(x), axis, keepdims)
    d[gradient] += np.sum(d[result] * prod_adjoint(np.ones_like(gradient), x, axis, keepdims), axis=axis,
                          keepdims=keepdims)


@register_adjoint(np.max, np.amax, kind=reduction_kind, elementwise=False)
def max_(result, x, axis=None, keepdims=False):
    d[x] += max_adjoint(d[result], x, axis, keepdims)


# Tangent code (and hvp, reverse mode over it) calls max_adjoint/min_adjoint with a constant first
# argument (ones): the mask of each slice's first extreme element, piecewise constant in x.
register_zero_derivative(max_adjoint, min_adjoint, kind=lambda gradient, x, *rest, **kw: x)


@register_tangent(np.max, np.amax)
def max_tangent(result, x, axis=None, keepdims=False):
    d[result] += np.sum(d[x] * max_adjoint(np.ones_like(result), x, axis, keepdims), axis=axis,
                        keepdims=keepdims)


@register_adjoint(np.min, np.amin, kind=reduction_kind, elementwise=False)
def min_(result, x, axis=None, keepdims=False):
    d[x] += min_adjoint(d[result], x, axis, keepdims)


# The axes are constant (normalize refuses others): np.argsort of them is folded into the inverse
# permutation when the adjoint is generated (transform.simplify): `np.transpose(_adj_y, (1, 2, 0))`.
@register_adjoint(np.transpose, kind=lambda x, axes=None: x, elementwise=False)
def transpose(result, x, axes=None):
    d[x] += np.transpose(d[result], np.argsort(axes))


@register_tangent(np.min, np.amin)
def min_tangent(result, x, axis=None, keepdims=False):
    d[result] += np.sum(d[x] * min_adjoint(np.ones_like(result), x, axis, keepdims), axis=axis,
                        keepdims=keepdims)


@register_tangent(np.transpose)
def transpose_tangent(result, x, axes=None):
    d[result] += np.transpose(d[x], axes)


def _reshape_kind(x, shape=None, *rest, **kw):
    if isinstance(shape, K.Kind) and shape.cls == "tuple":
        return K.array(len(shape.items))
    if isinstance(shape, tuple):
        return K.array(len(shape))
    return K.array(1)


@register_adjoint(np.reshape, kind=_reshape_kind, elementwise=False)
def reshape(result, x, shape):
    d[x] += reshape_any(d[result], x.shape)


@register_tangent(np.reshape)
def reshape_tangent(result, x, shape):
    d[result] += np.reshape(d[x], result.shape)


@register_adjoint(np.ravel, kind=lambda x: K.array(1), elementwise=False)
def ravel(result, x):
    d[x] += np.reshape(d[result], x.shape)


@register_tangent(np.ravel)
def ravel_tangent(result, x):
    d[result] += np.reshape(d[x], result.shape)


@register_adjoint(np.copy, kind=same_kind, elementwise=False)
def copy_(result, x):
    d[x] += d[result]


@register_tangent(np.copy)
def copy_tangent(result, x):
    d[result] += np.copy(d[x])


@register_adjoint(np.expand_dims, kind=lambda x, axis: K.array(x.ndim + 1), elementwise=False)
def expand_dims(result, x, axis):
    d[x] += np.reshape(d[result], x.shape)


@register_tangent(np.expand_dims)
def expand_dims_tangent(result, x, axis):
    d[result] += np.reshape(d[x], result.shape)



# real and imaginary parts of real inputs (complex arrays are refused as arguments)
register_adjoint(np.real, kind=same_kind)(copy_)
register_tangent(np.real)(copy_tangent)
register_zero_derivative(np.imag, kind=lambda x: K.broadcast(x, dtype="float"))
