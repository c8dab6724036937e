"""The vectorized GMM objective as every peer runs it: the identical program.

``programs.gmm_vectorized`` is what srcgrad differentiates (index arrays gather the K Cholesky
factors into one (K*d, d) matrix, one 2-d matmul). Each peer below is a line-by-line
transliteration of that function into the peer's array library, with the same four index arrays
as arguments, differentiated by the peer's own AD (JAX ``jit(grad)``, PyTorch eager autograd,
HIPS autograd); the hand NumPy row is a hand-written gradient of the same formulation. So the
table compares tools on one program, not formulations.

``build(tool, vargs)`` returns ``dict(run, block, to_numpy, style, rtol)`` like ``peers_*.build``.
"""

from __future__ import annotations

import numpy as np

STYLE = {
    "jax": "jit(grad) of the same program in jnp",
    "torch": "eager autograd of the same program in torch",
    "autograd": "autograd.grad of the same program in autograd.numpy",
    "numpy-hand": "hand-written NumPy gradient of the same program",
}


def _program(xp, concatenate, zeros, take2, logsumexp_rows, log_sum_exp_all):
    """The objective of ``programs.gmm_vectorized`` written against an array library ``xp``."""
    def f(alphas, means, icf, x, wishart_gamma, wishart_m, q_rows, q_cols, mu_rows, mu_cols):
        n, d = x.shape
        K = alphas.shape[0]
        qs = icf[:, :d]
        ls = icf[:, d:]
        eq = xp.exp(qs)
        V = concatenate((eq, ls, zeros(K)), 1)
        Qall = take2(V, q_rows, q_cols).reshape((K * d, d))
        MU = take2(means, mu_rows, mu_cols).reshape((K * d, d))
        b = xp.sum(Qall * MU, 1)
        S = x @ Qall.T - b
        sq = xp.sum((S * S).reshape((n * K, d)), 1).reshape((n, K))
        main = alphas - 0.5 * sq + xp.sum(qs, 1)
        lse = logsumexp_rows(main)
        prior = 0.5 * wishart_gamma * wishart_gamma * (xp.sum(eq * eq) + xp.sum(ls * ls)) \
            - wishart_m * xp.sum(qs)
        return xp.sum(lse) - n * log_sum_exp_all(alphas) + prior
    return f


def _jax(vargs):
    from benchmarks.lib import peers_jax
    jax = peers_jax._import()         # float64 on the CPU, as the other JAX rows
    import jax.numpy as jnp

    def lse_rows(z):
        m = jnp.max(z, axis=1, keepdims=True)
        return jnp.log(jnp.sum(jnp.exp(z - m), axis=1)) + m[:, 0]

    def lse_all(a):
        m = jnp.max(a)
        return jnp.log(jnp.sum(jnp.exp(a - m))) + m

    f = _program(jnp, jnp.concatenate, lambda K: jnp.zeros((K, 1)), lambda A, r, c: A[r, c],
                 lse_rows, lse_all)
    g = jax.jit(jax.grad(f, argnums=(0, 1, 2)))
    ja = [jnp.asarray(a) if isinstance(a, np.ndarray) else a for a in vargs]
    return dict(run=lambda: g(*ja), block=jax.block_until_ready)


def _torch(vargs):
    import torch

    def lse_rows(z):
        return torch.logsumexp(z, dim=1)

    def lse_all(a):
        return torch.logsumexp(a, dim=0)

    f = _program(torch, torch.cat, lambda K: torch.zeros((K, 1), dtype=torch.float64),
                 lambda A, r, c: A[r, c], lse_rows, lse_all)
    ts = [torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in vargs]

    def run():
        p = [t.detach().requires_grad_(True) for t in ts[:3]]
        return torch.autograd.grad(f(*p, *ts[3:]), p)
    return dict(run=run, block=lambda o: o)


def _autograd(vargs):
    import autograd.numpy as anp
    from autograd import make_vjp
    from autograd.scipy.special import logsumexp

    f = _program(anp, anp.concatenate, lambda K: anp.zeros((K, 1)), lambda A, r, c: A[r, c],
                 lambda z: logsumexp(z, axis=1), lambda a: logsumexp(a))

    def run():          # the gradient in all three arguments at once: the VJP of a tuple input
        vjp, _ = make_vjp(lambda p: f(p[0], p[1], p[2], *vargs[3:]))(tuple(vargs[:3]))
        return tuple(vjp(1.0))
    return dict(run=run, block=lambda o: o)


def numpy_gradient(alphas, means, icf, x, wishart_gamma, wishart_m, q_rows, q_cols, mu_rows,
                   mu_cols):
    """Hand-written gradient of ``programs.gmm_vectorized`` with respect to (alphas, means, icf):
    the forward pass of the same program, then its adjoint step by step."""
    n, d = x.shape
    K = alphas.shape[0]
    qs, ls = icf[:, :d], icf[:, d:]
    eq = np.exp(qs)
    V = np.concatenate((eq, ls, np.zeros((K, 1))), axis=1)
    Qall = V[q_rows, q_cols].reshape((K * d, d))
    MU = means[mu_rows, mu_cols].reshape((K * d, d))
    b = np.sum(Qall * MU, axis=1)
    S = x @ Qall.T
    S -= b
    sq = np.einsum("nkd,nkd->nk", S.reshape(n, K, d), S.reshape(n, K, d))
    main = alphas - 0.5 * sq + np.sum(qs, axis=1)
    main -= np.max(main, axis=1, keepdims=True)
    w = np.exp(main)
    w /= np.sum(w, axis=1, keepdims=True)                       # d f / d main
    pa = np.exp(alphas - np.max(alphas))
    d_alphas = np.sum(w, axis=0) - n * pa / np.sum(pa)
    # sq = sum of squares of S's blocks: dS = 2 S * (d f / d sq) = -S * w (per block)
    dS = S.reshape(n, K, d)
    dS *= -w[:, :, None]
    dS = dS.reshape(n, K * d)
    dQall = dS.T @ x                                            # from S = x @ Qall.T
    db = -np.sum(dS, axis=0)                                    # from S -= b
    dMU = db[:, None] * Qall                                    # from b = sum(Qall * MU)
    dQall += db[:, None] * MU
    ncol = V.shape[1]
    dV = np.bincount((q_rows * ncol + q_cols), weights=dQall.ravel(),
                     minlength=K * ncol).reshape(K, ncol)       # the gather's adjoint
    d_means = np.bincount(mu_rows * d + mu_cols, weights=dMU.ravel(),
                          minlength=K * d).reshape(K, d)
    g2 = wishart_gamma * wishart_gamma
    d_qs = dV[:, :d] * eq + np.sum(w, axis=0)[:, None] + g2 * eq * eq - wishart_m
    d_ls = dV[:, d:ncol - 1] + g2 * ls
    return d_alphas, d_means, np.concatenate((d_qs, d_ls), axis=1)


def build(tool, vargs):
    if tool == "jax":
        out = _jax(vargs)
    elif tool == "torch":
        out = _torch(vargs)
    elif tool == "autograd":
        out = _autograd(vargs)
    elif tool == "numpy-hand":
        out = dict(run=lambda: numpy_gradient(*vargs), block=lambda o: o)
    else:
        raise KeyError(tool)
    out.update(style=STYLE[tool], rtol=1e-8,
               to_numpy=lambda o: tuple(np.asarray(getattr(t, "detach", lambda: t)(), np.float64)
                                        for t in o))
    return out
