"""Hand-written Numba adjoints: the target srcgrad is held to.

Each ``*_adj`` function takes the same positional arguments as the user function in
``programs.py`` and returns ``(value, grad_0, grad_1, ...)`` for the ``wrt`` arguments.
Design choices (what a careful person writes by hand):

* rosenbrock, gmm, newton_while, helper: a single fused sweep (forward quantities are recomputed
  or kept in O(1)/O(K*d) scratch, never taped).
* lorenz: only the state at each step start is stored (3 floats/step); the four RK stages are
  recomputed in the reverse sweep.
* lstm: gates and cell states are stored per step (needed by the reverse sweep anyway).
* heat: the stencil is linear in u, so the reverse sweep for u0 needs nothing; the kappa gradient
  needs the Laplacian of every state, so states are stored (nt*nx floats).
* inplace: only the overwritten value of each in-place update is stored (one float/update) and
  restored in the reverse sweep.
* mlp: BLAS matrix products (np.dot inside njit) and fused elementwise loops.

All outputs are allocated inside the call (as srcgrad's gradient also returns fresh arrays).
"""

import math
import types

import numpy as np
import numba
from numba import njit

_OPTS = dict(cache=True, nogil=True)


# ----------------------------------------------------------------------------------------------
@njit(**_OPTS)
def rosenbrock_adj(x):
    n = x.shape[0]
    g = np.zeros(n)
    s = 0.0
    for i in range(n - 1):
        xi = x[i]
        a = x[i + 1] - xi * xi
        b = 1.0 - xi
        s += 100.0 * a * a + b * b
        g[i] += -400.0 * a * xi - 2.0 * b
        g[i + 1] += 200.0 * a
    return s, g


# ----------------------------------------------------------------------------------------------
@njit(inline="always")
def _lorenz_f(x, y, z, sigma, rho, beta):
    return sigma * (y - x), x * (rho - z) - y, x * y - beta * z


@njit(inline="always")
def _lorenz_f_adj(x, y, z, sigma, rho, beta, ax, ay, az):
    # returns (xb, yb, zb, sigmab, rhob, betab)
    return (-sigma * ax + (rho - z) * ay + y * az,
            sigma * ax - ay + x * az,
            -x * ay - beta * az,
            (y - x) * ax, x * ay, -z * az)


@njit(**_OPTS)
def lorenz_adj(p, u0, dt, nsteps):
    sigma, rho, beta = p[0], p[1], p[2]
    S = np.empty((nsteps + 1, 3))
    x, y, z = u0[0], u0[1], u0[2]
    S[0, 0], S[0, 1], S[0, 2] = x, y, z
    J = 0.0
    h = 0.5 * dt
    for t in range(nsteps):
        k1x, k1y, k1z = _lorenz_f(x, y, z, sigma, rho, beta)
        k2x, k2y, k2z = _lorenz_f(x + h * k1x, y + h * k1y, z + h * k1z, sigma, rho, beta)
        k3x, k3y, k3z = _lorenz_f(x + h * k2x, y + h * k2y, z + h * k2z, sigma, rho, beta)
        k4x, k4y, k4z = _lorenz_f(x + dt * k3x, y + dt * k3y, z + dt * k3z, sigma, rho, beta)
        x = x + dt / 6.0 * (k1x + 2.0 * k2x + 2.0 * k3x + k4x)
        y = y + dt / 6.0 * (k1y + 2.0 * k2y + 2.0 * k3y + k4y)
        z = z + dt / 6.0 * (k1z + 2.0 * k2z + 2.0 * k3z + k4z)
        S[t + 1, 0], S[t + 1, 1], S[t + 1, 2] = x, y, z
        J += dt * (x * x + y * y + z * z)
    xb = 0.0
    yb = 0.0
    zb = 0.0
    sb = 0.0
    rb = 0.0
    bb = 0.0
    c6 = dt / 6.0
    c3 = dt / 3.0
    for t in range(nsteps - 1, -1, -1):
        xb += 2.0 * dt * S[t + 1, 0]
        yb += 2.0 * dt * S[t + 1, 1]
        zb += 2.0 * dt * S[t + 1, 2]
        x, y, z = S[t, 0], S[t, 1], S[t, 2]
        # recompute the stages
        k1x, k1y, k1z = _lorenz_f(x, y, z, sigma, rho, beta)
        x2, y2, z2 = x + h * k1x, y + h * k1y, z + h * k1z
        k2x, k2y, k2z = _lorenz_f(x2, y2, z2, sigma, rho, beta)
        x3, y3, z3 = x + h * k2x, y + h * k2y, z + h * k2z
        k3x, k3y, k3z = _lorenz_f(x3, y3, z3, sigma, rho, beta)
        x4, y4, z4 = x + dt * k3x, y + dt * k3y, z + dt * k3z
        # stage 4
        X4b, Y4b, Z4b, s_, r_, b_ = _lorenz_f_adj(x4, y4, z4, sigma, rho, beta,
                                                  c6 * xb, c6 * yb, c6 * zb)
        sb += s_
        rb += r_
        bb += b_
        # stage 3 (k3 adjoint = c3*ub + dt*X4b)
        X3b, Y3b, Z3b, s_, r_, b_ = _lorenz_f_adj(x3, y3, z3, sigma, rho, beta,
                                                  c3 * xb + dt * X4b, c3 * yb + dt * Y4b,
                                                  c3 * zb + dt * Z4b)
        sb += s_
        rb += r_
        bb += b_
        X2b, Y2b, Z2b, s_, r_, b_ = _lorenz_f_adj(x2, y2, z2, sigma, rho, beta,
                                                  c3 * xb + h * X3b, c3 * yb + h * Y3b,
                                                  c3 * zb + h * Z3b)
        sb += s_
        rb += r_
        bb += b_
        X1b, Y1b, Z1b, s_, r_, b_ = _lorenz_f_adj(x, y, z, sigma, rho, beta,
                                                  c6 * xb + h * X2b, c6 * yb + h * Y2b,
                                                  c6 * zb + h * Z2b)
        sb += s_
        rb += r_
        bb += b_
        xb = xb + X4b + X3b + X2b + X1b
        yb = yb + Y4b + Y3b + Y2b + Y1b
        zb = zb + Z4b + Z3b + Z2b + Z1b
    gp = np.empty(3)
    gp[0], gp[1], gp[2] = sb, rb, bb
    gu = np.empty(3)
    gu[0], gu[1], gu[2] = xb, yb, zb
    return J, gp, gu


# ----------------------------------------------------------------------------------------------
@njit(**_OPTS)
def gmm_adj(alphas, means, icf, x, wishart_gamma, wishart_m):
    n, d = x.shape
    K = alphas.shape[0]
    P = icf.shape[1]
    ga = np.zeros(K)
    gm = np.zeros((K, d))
    gi = np.zeros((K, P))
    expq = np.empty((K, d))
    sumq = np.zeros(K)
    for k in range(K):
        for j in range(d):
            expq[k, j] = math.exp(icf[k, j])
            sumq[k] += icf[k, j]
    main = np.empty(K)
    S = np.empty((K, d))
    xc = np.empty((K, d))
    slse = 0.0
    for i in range(n):
        mx = -np.inf
        for k in range(K):
            for j in range(d):
                xc[k, j] = x[i, j] - means[k, j]
            sq = 0.0
            for j in range(d):
                s = expq[k, j] * xc[k, j]
                for l in range(j):
                    s += icf[k, d + l * (2 * d - l - 1) // 2 + (j - l - 1)] * xc[k, l]
                S[k, j] = s
                sq += s * s
            main[k] = alphas[k] + sumq[k] - 0.5 * sq
            if main[k] > mx:
                mx = main[k]
        se = 0.0
        for k in range(K):
            se += math.exp(main[k] - mx)
        lse = mx + math.log(se)
        slse += lse
        for k in range(K):
            wk = math.exp(main[k] - lse)
            ga[k] += wk
            for j in range(d):
                sj = wk * S[k, j]
                gi[k, j] += wk - sj * expq[k, j] * xc[k, j]
                gm[k, j] += sj * expq[k, j]
                for l in range(j):
                    idx = d + l * (2 * d - l - 1) // 2 + (j - l - 1)
                    gi[k, idx] -= sj * xc[k, l]
                    gm[k, l] += sj * icf[k, idx]
    amx = -np.inf
    for k in range(K):
        amx = max(amx, alphas[k])
    ase = 0.0
    for k in range(K):
        ase += math.exp(alphas[k] - amx)
    lsea = amx + math.log(ase)
    for k in range(K):
        ga[k] -= n * math.exp(alphas[k] - lsea)
    g2 = wishart_gamma * wishart_gamma
    prior = 0.0
    for k in range(K):
        fro = 0.0
        for j in range(d):
            e2 = expq[k, j] * expq[k, j]
            fro += e2
            gi[k, j] += g2 * e2 - wishart_m
        for j in range(d, P):
            fro += icf[k, j] * icf[k, j]
            gi[k, j] += g2 * icf[k, j]
        prior += 0.5 * g2 * fro - wishart_m * sumq[k]
    return slse - n * lsea + prior, ga, gm, gi


# ----------------------------------------------------------------------------------------------
@njit(**_OPTS)
def lstm_adj(W, b, wout, xs, ys):
    T, D = xs.shape
    H = wout.shape[0]
    G = np.empty((T, 4, H))       # i, f, o, g activations
    C = np.zeros((T + 1, H))
    Hs = np.zeros((T + 1, H))
    TC = np.empty((T, H))
    R = np.empty(T)
    loss = 0.0
    for t in range(T):
        for j in range(H):
            zi = b[j]
            zf = b[H + j]
            zo = b[2 * H + j]
            zg = b[3 * H + j]
            for k in range(D):
                xv = xs[t, k]
                zi += W[j, k] * xv
                zf += W[H + j, k] * xv
                zo += W[2 * H + j, k] * xv
                zg += W[3 * H + j, k] * xv
            for k in range(H):
                hv = Hs[t, k]
                zi += W[j, D + k] * hv
                zf += W[H + j, D + k] * hv
                zo += W[2 * H + j, D + k] * hv
                zg += W[3 * H + j, D + k] * hv
            ig = 1.0 / (1.0 + math.exp(-zi))
            fg = 1.0 / (1.0 + math.exp(-zf))
            og = 1.0 / (1.0 + math.exp(-zo))
            gg = math.tanh(zg)
            G[t, 0, j] = ig
            G[t, 1, j] = fg
            G[t, 2, j] = og
            G[t, 3, j] = gg
            c = fg * C[t, j] + ig * gg
            C[t + 1, j] = c
            tc = math.tanh(c)
            TC[t, j] = tc
            Hs[t + 1, j] = og * tc
        pred = 0.0
        for j in range(H):
            pred += wout[j] * Hs[t + 1, j]
        r = pred - ys[t]
        R[t] = r
        loss += r * r
    gW = np.zeros((4 * H, D + H))
    gb = np.zeros(4 * H)
    gw = np.zeros(H)
    hb = np.zeros(H)
    cb = np.zeros(H)
    dz = np.empty(4 * H)
    for t in range(T - 1, -1, -1):
        pb = 2.0 * R[t]
        for j in range(H):
            gw[j] += pb * Hs[t + 1, j]
            hb[j] += pb * wout[j]
        for j in range(H):
            ig = G[t, 0, j]
            fg = G[t, 1, j]
            og = G[t, 2, j]
            gg = G[t, 3, j]
            tc = TC[t, j]
            ob = hb[j] * tc
            c_b = cb[j] + hb[j] * og * (1.0 - tc * tc)
            dz[j] = c_b * gg * ig * (1.0 - ig)
            dz[H + j] = c_b * C[t, j] * fg * (1.0 - fg)
            dz[2 * H + j] = ob * og * (1.0 - og)
            dz[3 * H + j] = c_b * ig * (1.0 - gg * gg)
            cb[j] = c_b * fg
        for j in range(H):
            hb[j] = 0.0
        for r_ in range(4 * H):
            dzr = dz[r_]
            gb[r_] += dzr
            for k in range(D):
                gW[r_, k] += dzr * xs[t, k]
            for k in range(H):
                gW[r_, D + k] += dzr * Hs[t, k]
                hb[k] += dzr * W[r_, D + k]
    return loss, gW, gb, gw


# ----------------------------------------------------------------------------------------------
@njit(**_OPTS)
def heat_adj(u0, kappa, nsteps):
    n = u0.shape[0]
    U = np.empty((nsteps + 1, n))
    U[0, :] = u0
    for t in range(nsteps):
        U[t + 1, 0] = U[t, 0]
        U[t + 1, n - 1] = U[t, n - 1]
        for i in range(1, n - 1):
            U[t + 1, i] = U[t, i] + kappa * (U[t, i - 1] - 2.0 * U[t, i] + U[t, i + 1])
    s = 0.0
    lam = np.empty(n)
    for i in range(n):
        s += U[nsteps, i] * U[nsteps, i]
        lam[i] = 2.0 * U[nsteps, i]
    new = np.empty(n)
    kb = 0.0
    for t in range(nsteps - 1, -1, -1):
        new[0] = lam[0]
        new[n - 1] = lam[n - 1]
        for i in range(1, n - 1):
            new[i] = (1.0 - 2.0 * kappa) * lam[i]
        for i in range(1, n - 1):
            li = lam[i]
            kb += li * (U[t, i - 1] - 2.0 * U[t, i] + U[t, i + 1])
            new[i - 1] += kappa * li
            new[i + 1] += kappa * li
        lam, new = new, lam
    return s, lam.copy(), np.asarray(kb)


# ----------------------------------------------------------------------------------------------
@njit(**_OPTS)
def mlp_adj(W1, b1, W2, b2, X, y):
    n = X.shape[0]
    A = np.dot(X, W1)
    Hd = A.shape[1]
    for i in range(n):
        for j in range(Hd):
            v = A[i, j] + b1[j]
            A[i, j] = v if v > 0.0 else 0.0
    Z = np.dot(A, W2)
    C = Z.shape[1]
    loss = 0.0
    inv = 1.0 / n
    for i in range(n):
        m = -np.inf
        for c in range(C):
            Z[i, c] += b2[c]
            if Z[i, c] > m:
                m = Z[i, c]
        se = 0.0
        for c in range(C):
            e = math.exp(Z[i, c] - m)
            Z[i, c] = e
            se += e
        # log-sum-exp minus the picked logit: log(se) - log(e_y) (e_y = exp(z_y - m))
        loss += math.log(se) - math.log(Z[i, y[i]])
        for c in range(C):
            Z[i, c] = Z[i, c] / se * inv
        Z[i, y[i]] -= inv
    loss *= inv
    gW2 = np.dot(A.T, Z)
    gb2 = np.zeros(C)
    for i in range(n):
        for c in range(C):
            gb2[c] += Z[i, c]
    dA = np.dot(Z, W2.T)
    gb1 = np.zeros(Hd)
    for i in range(n):
        for j in range(Hd):
            if A[i, j] <= 0.0:
                dA[i, j] = 0.0
            gb1[j] += dA[i, j]
    gW1 = np.dot(X.T, dA)
    return loss, gW1, gb1, gW2, gb2


@njit(**_OPTS)
def mlp_primal_numba(W1, b1, W2, b2, X, y):
    """The MLP forward written so that Numba compiles it (numba lacks keepdims and 2-array
    fancy indexing, so the user's mlp_loss does not njit as written)."""
    n = X.shape[0]
    A = np.maximum(np.dot(X, W1) + b1, W1.dtype.type(0))   # stays float32 with float32 weights
    Z = np.dot(A, W2) + b2
    loss = 0.0
    for i in range(n):
        m = Z[i].max()
        loss += math.log(np.sum(np.exp(Z[i] - m))) + m - Z[i, y[i]]
    return loss / n


# ----------------------------------------------------------------------------------------------
@njit(**_OPTS)
def newton_while_adj(a):
    n = a.shape[0]
    g = np.zeros(n)
    ys = np.empty(200)
    s = 0.0
    for i in range(n):
        ai = a[i]
        y = ai
        m = 0
        while abs(y * y - ai) > 1e-10 * ai:
            ys[m] = y
            m += 1
            y = 0.5 * (y + ai / y)
        s += y * math.sin(y)
        yb = math.sin(y) + y * math.cos(y)
        ab = 0.0
        for q in range(m - 1, -1, -1):
            yq = ys[q]
            ab += 0.5 * yb / yq
            yb = 0.5 * yb * (1.0 - ai / (yq * yq))
        g[i] = ab + yb
    return s, g


@njit(**_OPTS)
def inplace_adj(x, nsweeps):
    n = x.shape[0]
    u = x.copy()
    old = np.empty((nsweeps, n))
    for s in range(nsweeps):
        for i in range(1, n - 1):
            old[s, i] = u[i]
            u[i] = 0.5 * u[i] + 0.25 * math.tanh(u[i - 1] + u[i + 1])
    tot = 0.0
    ub = np.empty(n)
    for i in range(n):
        tot += u[i] * u[i]
        ub[i] = 2.0 * u[i]
    for s in range(nsweeps - 1, -1, -1):
        for i in range(n - 2, 0, -1):
            u[i] = old[s, i]
            th = math.tanh(u[i - 1] + u[i + 1])
            b = ub[i]
            ub[i] = 0.5 * b
            q = 0.25 * b * (1.0 - th * th)
            ub[i - 1] += q
            ub[i + 1] += q
    return tot, ub


@njit(**_OPTS)
def helper_adj(pos):
    n = pos.shape[0]
    g = np.zeros((n, 2))
    e = 0.0
    for i in range(n):
        xi = pos[i, 0]
        yi = pos[i, 1]
        gx = 0.0
        gy = 0.0
        for j in range(i + 1, n):
            dx = xi - pos[j, 0]
            dy = yi - pos[j, 1]
            r2 = dx * dx + dy * dy + 0.1
            inv = 1.0 / r2
            e += inv * inv - inv
            # d/dr2 (inv^2 - inv) = (-2 inv^3 + inv^2)
            c = 2.0 * (inv * inv - 2.0 * inv * inv * inv)
            gx += c * dx
            gy += c * dy
            g[j, 0] -= c * dx
            g[j, 1] -= c * dy
        g[i, 0] += gx
        g[i, 1] += gy
    return e, g


ADJOINTS = {
    "rosenbrock": rosenbrock_adj,
    "lorenz": lorenz_adj,
    "gmm": gmm_adj,
    "lstm": lstm_adj,
    "heat": heat_adj,
    "mlp": mlp_adj,
    "newton_while": newton_while_adj,
    "inplace": inplace_adj,
    "helper": helper_adj,
}

PRIMAL_FALLBACK = {"mlp": mlp_primal_numba}


def hand_value_and_grad(name, args):
    """Call the hand adjoint; return (value, tuple of float64 arrays)."""
    out = ADJOINTS[name](*args)
    return float(out[0]), tuple(np.asarray(g, dtype=np.float64) for g in out[1:])


def njit_user(fn):
    """numba.njit a user function from programs.py, jitting the plain-Python helpers it calls."""
    g = dict(fn.__globals__)
    for name in fn.__code__.co_names:
        obj = g.get(name)
        if isinstance(obj, types.FunctionType) and obj.__module__ == fn.__module__:
            g[name] = njit_user(obj)
    clone = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
    return numba.njit(clone)
