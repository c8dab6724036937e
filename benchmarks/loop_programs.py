"""Loop programs of the loop benchmark (``loop_bench.py``) that ``programs.py`` does not have.

``gmm_njit``: the ADBench GMM objective written as Numba users write it: loops, and ``@njit``
helpers called from the loops with whole arrays and indices (no slicing). Same value as
``programs.gmm_objective``; the hand adjoint is ``adjoints.gmm_adj``.
"""
import math

import numpy as np
from numba import njit


@njit
def logsumexp(v):
    mx = -1e300
    for k in range(v.shape[0]):
        if v[k] > mx:
            mx = v[k]
    se = 0.0
    for k in range(v.shape[0]):
        se += math.exp(v[k] - mx)
    return mx + math.log(se)


@njit
def sum_logdiag(icf, k, d):
    s = 0.0
    for j in range(d):
        s += icf[k, j]
    return s


@njit
def sqnorm_qx(icf, means, x, k, i, d):
    """|Q_k (x_i - mu_k)|^2, Q_k lower triangular from row k of icf (ADBench layout)."""
    sq = 0.0
    for j in range(d):
        s = math.exp(icf[k, j]) * (x[i, j] - means[k, j])
        for l in range(j):
            s += icf[k, d + l * (2 * d - l - 1) // 2 + (j - l - 1)] * (x[i, l] - means[k, l])
        sq += s * s
    return sq


@njit
def wishart_term(icf, k, d, gamma, m):
    fro = 0.0
    sumq = 0.0
    for j in range(d):
        e = math.exp(icf[k, j])
        fro += e * e
        sumq += icf[k, j]
    for j in range(d, icf.shape[1]):
        fro += icf[k, j] * icf[k, j]
    return 0.5 * gamma * gamma * fro - m * sumq


def gmm_njit(alphas, means, icf, x, wishart_gamma, wishart_m):
    n = x.shape[0]
    d = x.shape[1]
    K = alphas.shape[0]
    main = np.empty(K)
    slse = 0.0
    for i in range(n):
        for k in range(K):
            main[k] = alphas[k] + sum_logdiag(icf, k, d) - 0.5 * sqnorm_qx(icf, means, x, k, i, d)
        slse += logsumexp(main)
    lse_alphas = logsumexp(alphas)
    prior = 0.0
    for k in range(K):
        prior += wishart_term(icf, k, d, wishart_gamma, wishart_m)
    return slse - n * lse_alphas + prior
