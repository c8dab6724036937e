"""The 1-D heat stencil the loop-pass tests share (adjoint merges, first contributions, snapshot
rows): one time step writes `un` from `u`, then copies it back; the value reads every slot."""
import math


def heat(u0, kappa, nsteps):
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 1):
            u[i] = un[i]
    s = 0.0
    for i in range(n):
        s += math.sin(u[i]) * u[i]
    return s
