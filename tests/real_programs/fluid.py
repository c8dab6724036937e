"""An explicit advection-diffusion step on a periodic grid with np.roll (the stencil at the
heart of simple fluid simulations), iterated a few steps; the objective matches a target field,
so the gradient is with respect to the initial field and the velocity field."""
import numpy as np

dx = 1.0
dt = 0.1
viscosity = 0.2


def laplacian(u):
    return (np.roll(u, 1, axis=0) + np.roll(u, -1, axis=0) +
            np.roll(u, 1, axis=1) + np.roll(u, -1, axis=1) - 4.0 * u) / dx ** 2


def gradient(u):
    dudx = (np.roll(u, -1, axis=1) - np.roll(u, 1, axis=1)) / (2.0 * dx)
    dudy = (np.roll(u, -1, axis=0) - np.roll(u, 1, axis=0)) / (2.0 * dx)
    return dudx, dudy


def step(u, vx, vy):
    dudx, dudy = gradient(u)
    return u + dt * (viscosity * laplacian(u) - vx * dudx - vy * dudy)


def simulate(u, vx, vy, num_steps=4):
    for _ in range(num_steps):
        u = step(u, vx, vy)
    return u


_n = 5
_yy, _xx = np.meshgrid(np.arange(_n), np.arange(_n), indexing="ij")
target = np.exp(-((_xx - 3.0) ** 2 + (_yy - 2.0) ** 2) / 2.0)


def objective(u0, vx, vy):
    final = simulate(u0, vx, vy)
    return np.sum((final - target) ** 2)
