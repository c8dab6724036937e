"""Derivative rules of products (einsum, tensordot, inner, kron, cross) and np.linalg."""
import numpy as np

from .. import kinds as K
from ..errors import SrcgradError
from ..runtime import (einsum_adjoint, inner_adjoint, kron_adjoint, tensordot_adjoint,  # noqa: E402,F401
                      _einsum_parts, _tensordot_axes)
from ..runtime import cholesky_adjoint, eigh_adjoint, norm_adjoint, slogdet_adjoint  # noqa: E402,F401
from ..runtime import matmul_grad_left
from .callees import declare
from .table import (REGISTRY, Rule, TangentRule, _axis_value, _library, _register_rule, d, reduction_kind,
                    register_tangent)


def _einsum_kind(subscripts, *operands, **kw):
    if kw:
        raise TypeError("np.einsum: keyword arguments are not supported")
    if not isinstance(subscripts, str):
        raise TypeError("np.einsum needs the subscripts as a constant string")
    try:
        inputs, output = _einsum_parts(subscripts, len(operands))
    except ValueError as exc:
        raise TypeError(str(exc)) from None
    for spec, operand in zip(inputs, operands):
        if len(set(spec)) != len(spec):
            raise TypeError(f"np.einsum: a repeated index inside one operand ({spec!r}, a diagonal) "
                            "is not supported")
        if len(spec) != (operand.ndim if operand.is_array else 0):
            raise TypeError(f"np.einsum: subscripts {spec!r} for a {operand.ndim}-d operand")
    return K.array(len(output))


def _einsum2(result, subscripts, a, b):
    d[a] += einsum_adjoint(d[result], subscripts, 0, a, b)
    d[b] += einsum_adjoint(d[result], subscripts, 1, a, b)


def _einsum1(result, subscripts, a):
    d[a] += einsum_adjoint(d[result], subscripts, 0, a)


def _einsum3(result, subscripts, a, b, c):
    d[a] += einsum_adjoint(d[result], subscripts, 0, a, b, c)
    d[b] += einsum_adjoint(d[result], subscripts, 1, a, b, c)
    d[c] += einsum_adjoint(d[result], subscripts, 2, a, b, c)


class _EinsumRule(Rule):
    """np.einsum with one, two or three operands: the template that matches the call."""

    def __init__(self):
        super().__init__(_einsum2, kind=_einsum_kind, elementwise=False, name="einsum")
        self.literal_args = True
        self._by_count = {1: Rule(_einsum1, elementwise=False), 2: Rule(_einsum2, elementwise=False),
                          3: Rule(_einsum3, elementwise=False)}

    def bind(self, result, args, keywords):
        rule = self._by_count.get(len(args) - 1)
        if rule is None:
            raise SrcgradError("np.einsum is supported with one, two or three operands")
        self.body = rule.body
        return rule.bind(result, args, keywords)


REGISTRY[np.einsum] = _EinsumRule()
declare(np.einsum, library_helper="np_einsum")


# einsum is multilinear: one term per varying operand, the same subscripts
def _einsum2_tangent(result, subscripts, a, b):
    d[result] += np.einsum(subscripts, d[a], b)
    d[result] += np.einsum(subscripts, a, d[b])


def _einsum1_tangent(result, subscripts, a):
    d[result] += np.einsum(subscripts, d[a])


def _einsum3_tangent(result, subscripts, a, b, c):
    d[result] += np.einsum(subscripts, d[a], b, c)
    d[result] += np.einsum(subscripts, a, d[b], c)
    d[result] += np.einsum(subscripts, a, b, d[c])


class _EinsumTangent(TangentRule):
    """The tangent template that matches the call's operand count (as _EinsumRule does)."""

    def __init__(self):
        super().__init__(_einsum2_tangent)
        self.name = "einsum_tangent"
        self._by_count = {1: TangentRule(_einsum1_tangent), 2: TangentRule(_einsum2_tangent),
                          3: TangentRule(_einsum3_tangent)}

    def bind(self, result, args, keywords):
        rule = self._by_count.get(len(args) - 1)
        if rule is None:
            raise SrcgradError("np.einsum is supported with one, two or three operands")
        self.body = rule.body
        return rule.bind(result, args, keywords)


REGISTRY[np.einsum].tangent = _EinsumTangent()


def _tensordot_kind(a, b, axes=2):
    if isinstance(axes, K.Kind):         # a pair of tuples of axes (written to temporaries)
        if not (axes.cls == "tuple" and len(axes.items) == 2
                and all(item.cls in ("tuple", "int") for item in axes.items)):
            raise TypeError("np.tensordot: axes must be an int or a pair of (tuples of) ints")
        count = [len(item.items) if item.cls == "tuple" else 1 for item in axes.items]
        if count[0] != count[1]:
            raise TypeError("np.tensordot: the two axis lists differ in length")
        return K.array(a.ndim + b.ndim - 2 * count[0])
    a_axes, b_axes = _tensordot_axes(a.ndim, b.ndim, axes)
    return K.array(a.ndim + b.ndim - len(a_axes) - len(b_axes))


def _tensordot(result, a, b, axes=2):
    d[a] += tensordot_adjoint(d[result], a, b, axes, 0)
    d[b] += tensordot_adjoint(d[result], a, b, axes, 1)


_library(np.tensordot, "np_tensordot", _tensordot, _tensordot_kind)


@register_tangent(np.tensordot)
def _tensordot_tangent(result, a, b, axes=2):
    d[result] += np.tensordot(d[a], b, axes)
    d[result] += np.tensordot(a, d[b], axes)


def _inner_kind(a, b):
    if not getattr(a, "is_array", False) or not getattr(b, "is_array", False):
        # a number (a constant arrives as its value): the product with it
        return K.array(max(getattr(a, "ndim", 0), getattr(b, "ndim", 0)))
    return K.array(a.ndim + b.ndim - 2)


def _inner(result, a, b):
    d[a] += inner_adjoint(d[result], a, b, 0)
    d[b] += inner_adjoint(d[result], a, b, 1)


_library(np.inner, "np_inner", _inner, _inner_kind)


@register_tangent(np.inner)
def _inner_tangent(result, a, b):
    d[result] += np.inner(d[a], b)
    d[result] += np.inner(a, d[b])


def _kron_kind(a, b):
    if not (a.is_array and b.is_array and a.ndim == b.ndim and a.ndim in (1, 2)):
        raise TypeError("np.kron is supported for two vectors or two matrices")
    return K.array(a.ndim)


def _kron(result, a, b):
    d[a] += kron_adjoint(d[result], a, b, 0)
    d[b] += kron_adjoint(d[result], a, b, 1)


_library(np.kron, "np_kron", _kron, _kron_kind)


@register_tangent(np.kron)
def _kron_tangent(result, a, b):
    d[result] += np.kron(d[a], b)
    d[result] += np.kron(a, d[b])


def _cross_kind(a, b, **kw):
    if kw:
        raise TypeError("np.cross: the axis arguments are not supported (vectors are the last axis)")
    return K.broadcast(a, b, dtype="float")


# the cross product is bilinear: d a = b x g, d b = g x a (broadcast operands are summed back)
def _cross(result, a, b):
    d[a] += np.cross(b, d[result])
    d[b] += np.cross(d[result], a)


_register_rule([np.cross], _cross, kind=_cross_kind)


@register_tangent(np.cross)
def _cross_tangent(result, a, b):
    d[result] += np.cross(d[a], b)
    d[result] += np.cross(a, d[b])



def _square_kind(what, make):
    def kind(a, *rest, **kw):
        if kw:
            raise TypeError(f"{what}: keyword arguments are not supported")
        if not (a.is_array and a.ndim == 2):
            raise TypeError(f"{what} is supported for one square matrix (2-d array)")
        return make(a, *rest)
    return kind


def _inv(result, a):
    d[a] -= result.T @ d[result] @ result.T


def _solve(result, a, b):
    gb = np.linalg.solve(a.T, d[result])
    d[b] += gb
    d[a] -= matmul_grad_left(gb, a, result)


def _det(result, a):
    d[a] += d[result] * result * np.linalg.inv(a).T


def _slogdet(result, a):
    d[a] += slogdet_adjoint(d[result], a)


def _cholesky(result, a):
    d[a] += cholesky_adjoint(d[result], result)


def _eigh(result, a):
    d[a] += eigh_adjoint(d[result], result[0], result[1])


def _solve_kind(a, b, **kw):
    if kw or not (a.is_array and a.ndim == 2 and b.is_array and b.ndim in (1, 2)):
        raise TypeError("np.linalg.solve is supported for a matrix and a vector or matrix")
    return K.array(b.ndim)


_library(np.linalg.inv, None, _inv, _square_kind("np.linalg.inv", lambda a: K.array(2)))
_library(np.linalg.solve, None, _solve, _solve_kind)
_library(np.linalg.det, None, _det, _square_kind("np.linalg.det", lambda a: K.FLOAT))
_library(np.linalg.slogdet, None, _slogdet,
         _square_kind("np.linalg.slogdet", lambda a: K.tuple_of([K.FLOAT, K.FLOAT])))
_library(np.linalg.cholesky, None, _cholesky, _square_kind("np.linalg.cholesky", lambda a: K.array(2)))
_library(np.linalg.eigh, None, _eigh,
         _square_kind("np.linalg.eigh", lambda a: K.tuple_of([K.array(1), K.array(2)])))


# Forward mode. The tangents are written with functions that have adjoint templates, so hvp
# (reverse mode over them) works too.
@register_tangent(np.linalg.inv)
def _inv_tangent(result, a):
    d[result] -= result @ d[a] @ result


@register_tangent(np.linalg.solve)
def _solve_tangent(result, a, b):
    d[result] += np.linalg.solve(a, d[b])
    d[result] -= np.linalg.solve(a, d[a] @ result)


# d det A = det A tr(A^-1 dA); d log|det A| = tr(A^-1 dA) (the sign does not vary)
@register_tangent(np.linalg.det)
def _det_tangent(result, a):
    d[result] += result * np.trace(np.linalg.solve(a, d[a]))


@register_tangent(np.linalg.slogdet)
def _slogdet_tangent(result, a):
    d[result] += (0.0, np.trace(np.linalg.solve(a, d[a])))


# L = cholesky(A): dL = L Phi(L^-1 dA L^-T), Phi = the lower triangle with the diagonal halved.
# np.linalg.cholesky reads only A's lower triangle, so dA is the symmetric matrix made from it.
@register_tangent(np.linalg.cholesky)
def _cholesky_tangent(result, a):
    da = np.tril(d[a]) + np.tril(d[a], -1).T
    p = np.linalg.solve(result, np.linalg.solve(result, da).T)
    d[result] += result @ (np.tril(p) - 0.5 * p * np.eye(a.shape[0]))


# (w, V) = eigh(A), distinct eigenvalues: with P = V^T dA V, dw = diag(P) and dV = V (F o P),
# F_ij = 1 / (w_j - w_i) off the diagonal, 0 on it. eigh reads A's lower triangle (as cholesky).
@register_tangent(np.linalg.eigh)
def _eigh_tangent(result, a):
    w = result[0]
    v = result[1]
    da = np.tril(d[a]) + np.tril(d[a], -1).T
    p = v.T @ da @ v
    f = 1.0 / (w - np.reshape(w, (a.shape[0], 1)) + np.eye(a.shape[0])) - np.eye(a.shape[0])
    d[result] += (np.diag(p), v @ (f * p))


def _norm_kind(x, ord=None, axis=None, keepdims=False):
    if not x.is_array:
        raise TypeError("np.linalg.norm needs an array")
    frobenius = ord is None or ord == "fro" or (ord == 2 and (x.ndim == 1 or axis is not None))
    if not frobenius:
        raise TypeError("np.linalg.norm is supported for the 2-norm of vectors and the Frobenius "
                        "norm of arrays (ord=None, 'fro', or 2 for vectors)")
    _axis_value(x, axis, "np.linalg.norm")
    return reduction_kind(x, axis, keepdims)


def _norm(result, x, ord=None, axis=None, keepdims=False):
    d[x] += norm_adjoint(d[result], x, result, axis, keepdims)


_library(np.linalg.norm, "np_norm", _norm, _norm_kind)


@register_tangent(np.linalg.norm)
def _norm_tangent(result, x, ord=None, axis=None, keepdims=False):
    d[result] += np.sum(x * d[x], axis=axis, keepdims=keepdims) / result
