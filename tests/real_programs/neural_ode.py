"""A neural ODE: dynamics dh/dt = f(h, t; params) given by a small MLP with a dict of params,
integrated with fixed-step RK4 (and Euler); the loss compares the final states with targets."""
import numpy as np


def init_params(dim, hidden, scale=0.3, rs=np.random.RandomState(0)):
    return {"W1": scale * rs.randn(dim, hidden), "b1": scale * rs.randn(hidden),
            "wt": scale * rs.randn(hidden),
            "W2": scale * rs.randn(hidden, dim), "b2": scale * rs.randn(dim)}


def dynamics(params, h, t):
    z = np.tanh(np.dot(h, params["W1"]) + params["b1"] + t * params["wt"])
    return np.dot(z, params["W2"]) + params["b2"]


def rk4_step(params, h, t, dt):
    k1 = dynamics(params, h, t)
    k2 = dynamics(params, h + 0.5 * dt * k1, t + 0.5 * dt)
    k3 = dynamics(params, h + 0.5 * dt * k2, t + 0.5 * dt)
    k4 = dynamics(params, h + dt * k3, t + dt)
    return h + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def odeint_rk4(params, h0, t0=0.0, t1=1.0, num_steps=4):
    dt = (t1 - t0) / num_steps
    h, t = h0, t0
    for i in range(num_steps):
        h = rk4_step(params, h, t, dt)
        t = t + dt
    return h


def odeint_euler(params, h0, t0=0.0, t1=1.0, num_steps=6):
    dt = (t1 - t0) / num_steps
    h = h0
    for i in range(num_steps):
        h = h + dt * dynamics(params, h, t0 + i * dt)
    return h


_rs = np.random.RandomState(7)
initial_states = _rs.randn(3, 2)
final_states = _rs.randn(3, 2)


def loss(params, h0):
    return np.mean((odeint_rk4(params, h0) - final_states) ** 2)


def loss_euler(params):
    return np.mean((odeint_euler(params, initial_states) - final_states) ** 2)
