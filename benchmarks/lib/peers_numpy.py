"""Hand-written vectorized NumPy gradients (where natural: MLP and GMM), in the dtype of the
arguments (float32 for the MLP, float64 for GMM)."""

import numpy as np

STYLE = {
    "gmm": "hand-written vectorized NumPy gradient",
    "mlp": "hand-written NumPy backprop",
}


def version():
    return np.__version__


def gmm_grad(alphas, means, icf, x, gamma, m, rows, cols):
    K, d = means.shape
    n = x.shape[0]
    qs = icf[:, :d]
    eq = np.exp(qs)
    Q = np.zeros((K, d, d))
    Q[:, rows, cols] = icf[:, d:]
    di = np.arange(d)
    Q[:, di, di] = eq
    xc = x[None, :, :] - means[:, None, :]                      # (K, n, d)
    S = np.matmul(xc, Q.transpose(0, 2, 1))                     # (K, n, d)
    main = alphas[:, None] + qs.sum(1)[:, None] - 0.5 * np.einsum("knd,knd->kn", S, S)
    mx = main.max(0)
    lse = mx + np.log(np.exp(main - mx).sum(0))                 # (n,)
    W = np.exp(main - lse)                                      # (K, n)
    amx = alphas.max()
    sa = np.exp(alphas - amx)
    ga = W.sum(1) - n * sa / sa.sum()
    WS = W[:, :, None] * S
    dQ = -np.matmul(WS.transpose(0, 2, 1), xc)                  # (K, d, d)
    gm = np.einsum("kj,kjl->kl", WS.sum(1), Q)
    gi = np.empty_like(icf)
    g2 = gamma * gamma
    gi[:, :d] = W.sum(1)[:, None] + dQ[:, di, di] * eq + g2 * eq * eq - m
    gi[:, d:] = dQ[:, rows, cols] + g2 * icf[:, d:]
    return ga, gm, gi


def mlp_grad(W1, b1, W2, b2, X, y):
    n = X.shape[0]
    a = X @ W1 + b1
    h = np.maximum(a, 0.0)
    z = h @ W2 + b2
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=1, keepdims=True)
    p[np.arange(n), y] -= 1.0
    p /= n
    gW2 = h.T @ p
    gb2 = p.sum(0)
    dh = p @ W2.T
    dh[a <= 0.0] = 0.0
    gW1 = X.T @ dh
    gb1 = dh.sum(0)
    return gW1, gb1, gW2, gb2


def build(name, args):
    if name == "gmm":
        from .peers_jax import _gmm_tril_index
        rows, cols = _gmm_tril_index(args[1].shape[1])
        call = lambda: gmm_grad(*args, rows, cols)
    elif name == "mlp":
        call = lambda: mlp_grad(*args)
    else:
        raise KeyError(name)
    return dict(run=call, block=lambda out: out,
                to_numpy=lambda out: tuple(np.asarray(o, dtype=np.float64) for o in out),
                style=STYLE[name], rtol=1e-4 if args[0].dtype == np.float32 else 1e-8)
