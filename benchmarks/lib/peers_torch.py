"""PyTorch peer: eager autograd on CPU (torch.autograd.grad), float64; MLP in float32.

Style per program (what a PyTorch user writes):
  rosenbrock  vectorized tensor ops
  lorenz      eager Python loop over RK4 steps, 0-d tensors (scalar ops)
  gmm         vectorized, batched matmul
  lstm        eager Python loop over time, gates as one mat-vec
  heat        eager Python loop over time, vectorized (out-of-place) stencil
  mlp         tensor array program, float32
"""

import numpy as np

STYLE = {
    "rosenbrock": "eager, vectorized",
    "lorenz": "eager Python loop over steps, 0-d tensors",
    "gmm": "eager, vectorized (batched matmul)",
    "lstm": "eager Python loop over time, mat-vec gates",
    "heat": "eager Python loop over steps, vectorized stencil",
    "mlp": "eager array program, float32",
}


def version():
    import torch
    return torch.__version__


def _fns():
    import torch

    def rosen(x):
        return torch.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    def lorenz(p, u0, dt, nsteps):
        sigma, rho, beta = p[0], p[1], p[2]
        x, y, z = u0[0], u0[1], u0[2]
        J = 0.0

        def f(x, y, z):
            return sigma * (y - x), x * (rho - z) - y, x * y - beta * z

        for _ in range(nsteps):
            k1 = f(x, y, z)
            k2 = f(x + 0.5 * dt * k1[0], y + 0.5 * dt * k1[1], z + 0.5 * dt * k1[2])
            k3 = f(x + 0.5 * dt * k2[0], y + 0.5 * dt * k2[1], z + 0.5 * dt * k2[2])
            k4 = f(x + dt * k3[0], y + dt * k3[1], z + dt * k3[2])
            x = x + dt / 6.0 * (k1[0] + 2.0 * k2[0] + 2.0 * k3[0] + k4[0])
            y = y + dt / 6.0 * (k1[1] + 2.0 * k2[1] + 2.0 * k3[1] + k4[1])
            z = z + dt / 6.0 * (k1[2] + 2.0 * k2[2] + 2.0 * k3[2] + k4[2])
            J = J + dt * (x * x + y * y + z * z)
        return J

    def gmm(alphas, means, icf, x, gamma, m, rows, cols):
        K, d = means.shape
        n = x.shape[0]
        qs = icf[:, :d]
        Q = torch.zeros((K, d, d), dtype=icf.dtype)
        Q[:, rows, cols] = icf[:, d:]
        Q = Q + torch.diag_embed(torch.exp(qs))
        xc = x[None, :, :] - means[:, None, :]
        S = torch.matmul(xc, Q.transpose(1, 2))
        main = alphas[:, None] + qs.sum(1)[:, None] - 0.5 * (S * S).sum(2)
        slse = torch.logsumexp(main, 0).sum()
        prior = (0.5 * gamma * gamma * ((torch.exp(qs) ** 2).sum(1) + (icf[:, d:] ** 2).sum(1))
                 - m * qs.sum(1)).sum()
        return slse - n * torch.logsumexp(alphas, 0) + prior

    def lstm(W, b, wout, xs, ys):
        H = wout.shape[0]
        h = torch.zeros(H, dtype=W.dtype)
        c = torch.zeros(H, dtype=W.dtype)
        loss = 0.0
        for t in range(xs.shape[0]):
            z = W @ torch.cat([xs[t], h]) + b
            i = torch.sigmoid(z[:H])
            f = torch.sigmoid(z[H:2 * H])
            o = torch.sigmoid(z[2 * H:3 * H])
            g = torch.tanh(z[3 * H:])
            c = f * c + i * g
            h = o * torch.tanh(c)
            r = torch.dot(wout, h) - ys[t]
            loss = loss + r * r
        return loss

    def heat(u0, kappa, nsteps):
        u = u0
        for _ in range(nsteps):
            inner = u[1:-1] + kappa * (u[:-2] - 2.0 * u[1:-1] + u[2:])
            u = torch.cat([u[:1], inner, u[-1:]])
        return torch.sum(u * u)

    def mlp(W1, b1, W2, b2, X, y):
        h = torch.clamp(X @ W1 + b1, min=0.0)
        z = h @ W2 + b2
        z = z - torch.max(z, dim=1, keepdim=True).values
        lse = torch.log(torch.sum(torch.exp(z), dim=1))
        return torch.mean(lse - z[torch.arange(X.shape[0]), y])

    return dict(rosenbrock=rosen, lorenz=lorenz, gmm=gmm, lstm=lstm, heat=heat, mlp=mlp)


def build(name, args):
    import torch
    fns = _fns()
    if name not in fns:
        raise KeyError(name)
    f = fns[name]
    prog_wrt = {"rosenbrock": (0,), "lorenz": (0, 1), "gmm": (0, 1, 2), "lstm": (0, 1, 2),
                "heat": (0, 1), "mlp": (0, 1, 2, 3)}[name]
    dtype = torch.float32 if name == "mlp" else torch.float64
    rtol = 1e-4 if name == "mlp" else 1e-8
    targs = []
    for i, a in enumerate(args):
        if i in prog_wrt:
            targs.append(torch.tensor(np.asarray(a), dtype=dtype, requires_grad=True))
        elif isinstance(a, np.ndarray):
            targs.append(torch.from_numpy(a) if a.dtype.kind in "iu" else
                         torch.tensor(a, dtype=dtype))
        else:
            targs.append(a)
    if name == "gmm":
        from .peers_jax import _gmm_tril_index
        rows, cols = _gmm_tril_index(args[1].shape[1])
        targs += [torch.from_numpy(rows), torch.from_numpy(cols)]
    params = [targs[i] for i in prog_wrt]

    def call():
        loss = f(*targs)
        return torch.autograd.grad(loss, params)

    return dict(run=call, block=lambda out: out,
                to_numpy=lambda out: tuple(o.detach().double().numpy() for o in out),
                style=STYLE[name], rtol=rtol)
