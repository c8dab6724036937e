"""Compiled NumPy coverage helpers (cpu target): triangular parts, products and linear algebra.
See :mod:`.library`."""
import math

import numba
import numpy as np
from numba import types
from numba.extending import overload, register_jitable

from ... import runtime
from .library import _axis_of, _last_changed, _literal, _rows


# ---- triangular parts ----------------------------------------------------------------------------

# np.triu/np.tril of a matrix (their adjoints are the same calls): one loop for both. Numba's own
# build a np.tri mask and np.where it, broadcasting machinery included (~7k IR lines in c_shapes'
# module, issue 17)
@numba.njit(cache=True)
def _band(m, k, upper):
    """``m`` with the entries below (``upper``) or above its ``k``-th diagonal zeroed."""
    out = np.empty(m.shape, m.dtype)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if (j - i >= k) if upper else (j - i <= k):
                out[i, j] = m[i, j]
            else:
                out[i, j] = 0
    return out


@numba.njit(cache=True)
def np_triu(m, k=0):
    return _band(m, k, True)


@numba.njit(cache=True)
def np_tril(m, k=0):
    return _band(m, k, False)


# ---- products ------------------------------------------------------------------------------------

@numba.njit(cache=True)
def np_kron(a, b):
    """np.kron of views too (Numba's takes C or F arrays only)."""
    return np.kron(np.ascontiguousarray(a), np.ascontiguousarray(b))


def kron_adjoint(gradient, a, b, k):
    return runtime.kron_adjoint(gradient, a, b, k)


@overload(kron_adjoint, prefer_literal=True)
def _kron_adjoint_ov(gradient, a, b, k):
    """Block (i, j) of the gradient, g[i*p:(i+1)*p, j*q:(j+1)*q], pairs with a[i, j] and b."""
    first = _literal(k) == 0
    if a.ndim == 1:
        def vectors(gradient, a, b, k):
            p = b.shape[0]
            out = np.zeros(a.shape if first else b.shape, a.dtype if first else b.dtype)
            for i in range(a.shape[0]):
                for r in range(p):
                    if first:
                        out[i] += gradient[i * p + r] * b[r]
                    else:
                        out[r] += gradient[i * p + r] * a[i]
            return out
        return vectors

    def matrices(gradient, a, b, k):
        p, q = b.shape
        out = np.zeros(a.shape if first else b.shape, a.dtype if first else b.dtype)
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                for r in range(p):
                    for c in range(q):
                        if first:
                            out[i, j] += gradient[i * p + r, j * q + c] * b[r, c]
                        else:
                            out[r, c] += gradient[i * p + r, j * q + c] * a[i, j]
        return out
    return matrices


# ---- linear algebra ------------------------------------------------------------------------------

def np_norm(x, ord=None, axis=None, keepdims=False):
    return runtime.np_norm(x, ord, axis, keepdims)


@overload(np_norm, prefer_literal=True)
def _np_norm_ov(x, ord=None, axis=None, keepdims=False):
    ax = _axis_of(x, axis)
    keep = bool(_literal(keepdims, False))
    to_rows, from_rows = _rows(x.ndim, ax)
    ones = (1,) * x.ndim

    @register_jitable
    def row_norms(x):
        rows, shape = to_rows(x)
        out = np.empty((rows.shape[0], 1), x.dtype)
        for i in range(rows.shape[0]):
            total = 0.0
            for j in range(rows.shape[1]):
                total += rows[i, j] * rows[i, j]
            out[i, 0] = math.sqrt(total)
        return out, shape

    if ax is None:
        if keep:
            return lambda x, ord=None, axis=None, keepdims=False: row_norms(x)[0].reshape(ones)
        return lambda x, ord=None, axis=None, keepdims=False: row_norms(x)[0][0, 0]
    if keep:
        def kept(x, ord=None, axis=None, keepdims=False):
            out, shape = row_norms(x)
            return from_rows(out, _last_changed(shape, 1))
        return kept
    if x.ndim == 1:
        return lambda x, ord=None, axis=None, keepdims=False: row_norms(x)[0][0, 0]
    return lambda x, ord=None, axis=None, keepdims=False: row_norms(x)[0].reshape(row_norms(x)[1][:-1])


def norm_adjoint(gradient, x, result, axis, keepdims):
    return runtime.norm_adjoint(gradient, x, result, axis, keepdims)


@overload(norm_adjoint, prefer_literal=True)
def _norm_adjoint_ov(gradient, x, result, axis, keepdims):
    ax = _axis_of(x, axis)
    to_rows, from_rows = _rows(x.ndim, ax)
    scalar = not isinstance(gradient, types.Array)

    def impl(gradient, x, result, axis, keepdims):
        rows, shape = to_rows(x)
        g = np.full(1, gradient) if scalar else np.ascontiguousarray(gradient).ravel()
        r = np.full(1, result) if scalar else np.ascontiguousarray(result).ravel()
        out = np.empty(rows.shape, x.dtype)
        for i in range(rows.shape[0]):
            for j in range(rows.shape[1]):
                out[i, j] = g[i] * rows[i, j] / r[i]
        return from_rows(out, shape).reshape(x.shape)
    return impl


@numba.njit(cache=True)
def slogdet_adjoint(gradients, a):
    return np.ascontiguousarray(np.linalg.inv(a).T) * gradients[1]


@register_jitable
def _symmetric(m):
    return 0.5 * (m + m.T)


@numba.njit(cache=True)
def cholesky_adjoint(gradient, factor):
    inv = np.linalg.inv(factor)
    p = np.dot(np.ascontiguousarray(factor.T), np.ascontiguousarray(gradient))
    p = np_tril(p)
    for i in range(p.shape[0]):
        p[i, i] *= 0.5
    s = np.dot(np.dot(np.ascontiguousarray(inv.T), p), inv)
    return _symmetric(s).astype(factor.dtype)


@numba.njit(cache=True)
def eigh_adjoint(gradients, w, v):
    gw, gv = gradients
    n = w.shape[0]
    inner = np.dot(np.ascontiguousarray(v.T), np.ascontiguousarray(gv))
    for i in range(n):
        for j in range(n):
            inner[i, j] = gw[i] if i == j else inner[i, j] / (w[j] - w[i])
    s = np.dot(np.dot(v, inner), np.ascontiguousarray(v.T))
    return _symmetric(s).astype(v.dtype)
