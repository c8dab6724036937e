"""Sensitivity of an ODE solution to its parameters with srcgrad.jvp (forward mode).

The Lorenz-63 system is integrated with classical RK4 (a plain Python loop). ``srcgrad.jvp``
differentiates the final state with respect to the parameters (sigma, rho, beta) along a direction
in one forward sweep, alongside the solution itself, with no tape; ``srcgrad.jacobian`` gives the
full 3×3 sensitivity matrix d x(T) / d p (three forward sweeps, since there are as many outputs as
parameters). Both are compared with central finite differences.

    python examples/ode_sensitivity.py [--steps 2000] [--dt 0.001] [--target cpu|python]
"""
import argparse

import numpy as np

import srcgrad


def lorenz_final_state(p, x0, steps, dt):
    """x(T) of dx/dt = (s (y - x), x (r - z) - y, x y - b z), p = (s, r, b), by RK4."""
    s, r, b = p[0], p[1], p[2]
    x, y, z = x0[0], x0[1], x0[2]
    for _ in range(steps):
        k1x = s * (y - x)
        k1y = x * (r - z) - y
        k1z = x * y - b * z
        x2, y2, z2 = x + 0.5 * dt * k1x, y + 0.5 * dt * k1y, z + 0.5 * dt * k1z
        k2x = s * (y2 - x2)
        k2y = x2 * (r - z2) - y2
        k2z = x2 * y2 - b * z2
        x3, y3, z3 = x + 0.5 * dt * k2x, y + 0.5 * dt * k2y, z + 0.5 * dt * k2z
        k3x = s * (y3 - x3)
        k3y = x3 * (r - z3) - y3
        k3z = x3 * y3 - b * z3
        x4, y4, z4 = x + dt * k3x, y + dt * k3y, z + dt * k3z
        k4x = s * (y4 - x4)
        k4y = x4 * (r - z4) - y4
        k4z = x4 * y4 - b * z4
        x = x + dt / 6.0 * (k1x + 2.0 * k2x + 2.0 * k3x + k4x)
        y = y + dt / 6.0 * (k1y + 2.0 * k2y + 2.0 * k3y + k4y)
        z = z + dt / 6.0 * (k1z + 2.0 * k2z + 2.0 * k3z + k4z)
    out = np.zeros(3)
    out[0] = x
    out[1] = y
    out[2] = z
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--dt", type=float, default=0.001)
    parser.add_argument("--target", default="cpu", choices=("cpu", "python"))
    args = parser.parse_args(argv)
    p = np.array([10.0, 28.0, 8.0 / 3.0])
    x0 = np.array([1.0, 1.0, 1.0])
    direction = np.array([1.0, 0.0, 0.0])          # d/d sigma

    state, sensitivity = srcgrad.jvp(lorenz_final_state, wrt=0, target=args.target)(
        p, x0, args.steps, args.dt, direction)
    h = 1e-6
    fd = (lorenz_final_state(p + h * direction, x0, args.steps, args.dt) -
          lorenz_final_state(p - h * direction, x0, args.steps, args.dt)) / (2 * h)
    print(f"x(T) after {args.steps} RK4 steps of {args.dt}: {state}")
    print(f"d x(T) / d sigma, jvp:                {sensitivity}")
    print(f"d x(T) / d sigma, finite differences: {fd}")

    J = srcgrad.jacobian(lorenz_final_state, wrt=0, target=args.target)(p, x0, args.steps, args.dt)
    J_fd = np.stack([(lorenz_final_state(p + h * e, x0, args.steps, args.dt) -
                      lorenz_final_state(p - h * e, x0, args.steps, args.dt)) / (2 * h) for e in np.eye(3)],
                    axis=1)
    print("d x(T) / d (sigma, rho, beta), jacobian (forward mode):")
    print(J)
    print(f"largest relative difference from finite differences: "
          f"{np.max(np.abs(J - J_fd)) / np.max(np.abs(J_fd)):.1e}")
    return sensitivity, fd, J, J_fd


if __name__ == "__main__":
    main()
