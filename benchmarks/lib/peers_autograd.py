"""HIPS autograd peer: autograd.grad over autograd.numpy, float64.

Style per program:
  rosenbrock  vectorized anp
  lorenz      Python loop over RK4 steps, scalar boxes
  gmm         vectorized anp, batched matmul (L built with a constant selection matrix:
              autograd has no index assignment)
  lstm        Python loop over time, mat-vec gates
  heat        Python loop over time, vectorized stencil with anp.concatenate
  mlp         anp array program, float64
"""

import numpy as np

STYLE = {
    "rosenbrock": "vectorized anp",
    "lorenz": "Python loop over steps, scalars",
    "gmm": "vectorized anp (batched matmul)",
    "lstm": "Python loop over time, mat-vec gates",
    "heat": "Python loop over steps, vectorized stencil",
    "mlp": "anp array program, float64",
}


def version():
    import importlib.metadata
    return importlib.metadata.version("autograd")


def _fns():
    import autograd.numpy as anp
    from autograd.scipy.special import logsumexp

    def rosen(x):
        return anp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

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

    def gmm(alphas, means, icf, x, gamma, m, sel, eye):
        K, d = means.shape
        n = x.shape[0]
        qs = icf[:, :d]
        Q = anp.reshape(anp.dot(icf[:, d:], sel), (K, d, d)) + anp.exp(qs)[:, :, None] * eye
        xc = x[None, :, :] - means[:, None, :]
        S = anp.matmul(xc, anp.transpose(Q, (0, 2, 1)))
        main = alphas[:, None] + anp.sum(qs, 1)[:, None] - 0.5 * anp.sum(S * S, 2)
        slse = anp.sum(logsumexp(main, axis=0))
        prior = anp.sum(0.5 * gamma * gamma * (anp.sum(anp.exp(qs) ** 2, 1)
                                               + anp.sum(icf[:, d:] ** 2, 1)) - m * anp.sum(qs, 1))
        return slse - n * logsumexp(alphas) + prior

    def sigmoid(z):
        return 1.0 / (1.0 + anp.exp(-z))

    def lstm(W, b, wout, xs, ys):
        H = wout.shape[0]
        h = anp.zeros(H)
        c = anp.zeros(H)
        loss = 0.0
        for t in range(xs.shape[0]):
            z = anp.dot(W, anp.concatenate([xs[t], h])) + b
            i = sigmoid(z[:H])
            f = sigmoid(z[H:2 * H])
            o = sigmoid(z[2 * H:3 * H])
            g = anp.tanh(z[3 * H:])
            c = f * c + i * g
            h = o * anp.tanh(c)
            r = anp.dot(wout, h) - ys[t]
            loss = loss + r * r
        return loss

    def heat(u0, kappa, nsteps):
        u = u0
        for _ in range(nsteps):
            inner = u[1:-1] + kappa * (u[:-2] - 2.0 * u[1:-1] + u[2:])
            u = anp.concatenate([u[:1], inner, u[-1:]])
        return anp.sum(u * u)

    def mlp(W1, b1, W2, b2, X, y):
        h = anp.maximum(anp.dot(X, W1) + b1, 0.0)
        z = anp.dot(h, W2) + b2
        z = z - anp.max(z, axis=1, keepdims=True)
        lse = anp.log(anp.sum(anp.exp(z), axis=1))
        return anp.mean(lse - z[anp.arange(X.shape[0]), y])

    return dict(rosenbrock=rosen, lorenz=lorenz, gmm=gmm, lstm=lstm, heat=heat, mlp=mlp)


def build(name, args):
    from autograd import grad
    fns = _fns()
    if name not in fns:
        raise KeyError(name)
    wrt = {"rosenbrock": (0,), "lorenz": (0, 1), "gmm": (0, 1, 2), "lstm": (0, 1, 2),
           "heat": (0, 1), "mlp": (0, 1, 2, 3)}[name]
    args = list(args)
    if name == "gmm":
        from .peers_jax import _gmm_tril_index
        d = args[1].shape[1]
        rows, cols = _gmm_tril_index(d)
        sel = np.zeros((len(rows), d * d))
        sel[np.arange(len(rows)), rows * d + cols] = 1.0
        args += [sel, np.eye(d)]
    if name == "heat":
        args[1] = float(args[1])
    g = grad(fns[name], argnum=list(wrt)) if len(wrt) > 1 else grad(fns[name], wrt[0])

    def call():
        out = g(*args)
        return tuple(out) if len(wrt) > 1 else (out,)

    return dict(run=call, block=lambda out: out,
                to_numpy=lambda out: tuple(np.asarray(o, dtype=np.float64) for o in out),
                style=STYLE[name], rtol=1e-8)
