"""JAX peer: jax.jit(jax.grad(...)), float64 (jax_enable_x64), MLP in float32.

Style per program (what a JAX user writes):
  rosenbrock  vectorized jnp (no loop)
  lorenz      lax.fori_loop over RK4 steps, scalar carry
  gmm         vectorized jnp, batched matmul (ADBench JAX style)
  lstm        lax.scan over time steps, gates as one mat-vec
  heat        lax.fori_loop over time steps, vectorized stencil
  mlp         jnp array program, float32
"""

import numpy as np

STYLE = {
    "rosenbrock": "vectorized jnp",
    "lorenz": "lax.fori_loop over steps",
    "gmm": "vectorized jnp (batched matmul)",
    "lstm": "lax.scan over time, mat-vec gates",
    "heat": "lax.fori_loop over steps, vectorized stencil",
    "mlp": "jnp array program, float32",
}

_jax = None


def _import():
    global _jax
    if _jax is None:
        import jax
        jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_platforms", "cpu")
        _jax = jax
    return _jax


def version():
    jax = _import()
    return jax.__version__


def _gmm_tril_index(d):
    rows, cols = [], []
    for l in range(d):
        for j in range(l + 1, d):
            rows.append(j)
            cols.append(l)
    return np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)


def _fns():
    jax = _import()
    import jax.numpy as jnp
    from jax import lax
    from jax.scipy.special import logsumexp

    def rosen(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    def lorenz(p, u0, dt, nsteps):
        sigma, rho, beta = p[0], p[1], p[2]

        def f(x, y, z):
            return sigma * (y - x), x * (rho - z) - y, x * y - beta * z

        def body(t, c):
            x, y, z, J = c
            k1 = f(x, y, z)
            k2 = f(x + 0.5 * dt * k1[0], y + 0.5 * dt * k1[1], z + 0.5 * dt * k1[2])
            k3 = f(x + 0.5 * dt * k2[0], y + 0.5 * dt * k2[1], z + 0.5 * dt * k2[2])
            k4 = f(x + dt * k3[0], y + dt * k3[1], z + dt * k3[2])
            x = x + dt / 6.0 * (k1[0] + 2.0 * k2[0] + 2.0 * k3[0] + k4[0])
            y = y + dt / 6.0 * (k1[1] + 2.0 * k2[1] + 2.0 * k3[1] + k4[1])
            z = z + dt / 6.0 * (k1[2] + 2.0 * k2[2] + 2.0 * k3[2] + k4[2])
            return x, y, z, J + dt * (x * x + y * y + z * z)

        return lax.fori_loop(0, nsteps, body, (u0[0], u0[1], u0[2], jnp.zeros((), u0.dtype)))[3]

    def gmm(alphas, means, icf, x, gamma, m, rows, cols):
        K, d = means.shape
        n = x.shape[0]
        qs = icf[:, :d]
        Q = jnp.zeros((K, d, d), icf.dtype).at[:, rows, cols].set(icf[:, d:])
        Q = Q + jax.vmap(jnp.diag)(jnp.exp(qs))
        xc = x[None, :, :] - means[:, None, :]                  # (K, n, d)
        S = jnp.matmul(xc, jnp.swapaxes(Q, 1, 2))               # (K, n, d)
        main = alphas[:, None] + jnp.sum(qs, 1)[:, None] - 0.5 * jnp.sum(S * S, 2)
        slse = jnp.sum(logsumexp(main, axis=0))
        prior = jnp.sum(0.5 * gamma * gamma * (jnp.sum(jnp.exp(qs) ** 2, 1)
                                               + jnp.sum(icf[:, d:] ** 2, 1)) - m * jnp.sum(qs, 1))
        return slse - n * logsumexp(alphas) + prior

    def lstm(W, b, wout, xs, ys):
        H = wout.shape[0]

        def step(carry, inp):
            h, c = carry
            xt, yt = inp
            z = W @ jnp.concatenate([xt, h]) + b
            i = jax.nn.sigmoid(z[:H])
            f = jax.nn.sigmoid(z[H:2 * H])
            o = jax.nn.sigmoid(z[2 * H:3 * H])
            g = jnp.tanh(z[3 * H:])
            c = f * c + i * g
            h = o * jnp.tanh(c)
            r = jnp.dot(wout, h) - yt
            return (h, c), r * r

        z0 = jnp.zeros(H, W.dtype)
        _, losses = lax.scan(step, (z0, z0), (xs, ys))
        return jnp.sum(losses)

    def heat(u0, kappa, nsteps):
        def body(t, u):
            return u.at[1:-1].set(u[1:-1] + kappa * (u[:-2] - 2.0 * u[1:-1] + u[2:]))
        u = lax.fori_loop(0, nsteps, body, u0)
        return jnp.sum(u * u)

    def mlp(W1, b1, W2, b2, X, y):
        h = jnp.maximum(X @ W1 + b1, 0.0)
        z = h @ W2 + b2
        z = z - jnp.max(z, axis=1, keepdims=True)
        lse = jnp.log(jnp.sum(jnp.exp(z), axis=1))
        return jnp.mean(lse - z[jnp.arange(X.shape[0]), y])

    return dict(rosenbrock=rosen, lorenz=lorenz, gmm=gmm, lstm=lstm, heat=heat, mlp=mlp)


def build(name, args):
    """Return dict(run, to_numpy, block, style, rtol) or raise KeyError if not implemented."""
    jax = _import()
    import jax.numpy as jnp
    fns = _fns()
    if name not in fns:
        raise KeyError(name)
    f = fns[name]
    rtol = 1e-8
    if name == "rosenbrock":
        g = jax.jit(jax.grad(f, argnums=0))
        xs = (jnp.asarray(args[0]),)
        call = lambda: (g(*xs),)
    elif name == "lorenz":
        p, u0, dt, nsteps = args
        g = jax.jit(jax.grad(f, argnums=(0, 1)), static_argnums=(3,))
        jp, ju = jnp.asarray(p), jnp.asarray(u0)
        call = lambda: g(jp, ju, dt, nsteps)
    elif name == "gmm":
        rows, cols = _gmm_tril_index(args[1].shape[1])
        g = jax.jit(jax.grad(f, argnums=(0, 1, 2)))
        ja = [jnp.asarray(a) for a in args[:4]] + [args[4], args[5], jnp.asarray(rows),
                                                   jnp.asarray(cols)]
        call = lambda: g(*ja)
    elif name == "lstm":
        g = jax.jit(jax.grad(f, argnums=(0, 1, 2)))
        ja = [jnp.asarray(a) for a in args]
        call = lambda: g(*ja)
    elif name == "heat":
        u0, kappa, nsteps = args
        g = jax.jit(jax.grad(f, argnums=(0, 1)), static_argnums=(2,))
        ju = jnp.asarray(u0)
        jk = jnp.asarray(kappa)
        call = lambda: g(ju, jk, nsteps)
    elif name == "mlp":
        g = jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))
        ja = [jnp.asarray(a, dtype=jnp.float32) for a in args[:5]] + [jnp.asarray(args[5])]
        call = lambda: g(*ja)
        rtol = 1e-4
    return dict(run=call, block=jax.block_until_ready,
                to_numpy=lambda out: tuple(np.asarray(o, dtype=np.float64) for o in out),
                style=STYLE[name], rtol=rtol)
