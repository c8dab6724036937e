"""Fit a neural ODE: dh/dt = MLP(h, t) with a dict of parameters, integrated by a fixed-step RK4
loop in plain NumPy, trained by Adam on the gradient srcgrad derives through the whole solver.

The task: learn dynamics that carry a few initial states to given final states (a rotation of
the plane by 90 degrees). The model and loss are tests/real_programs/neural_ode.py, whose
gradient tests/test_real_programs.py checks against finite differences on both targets.

    python examples/neural_ode_fit.py [--steps 300] [--lr 0.05] [--target cpu|python]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import srcgrad  # noqa: E402
from real_programs import neural_ode  # noqa: E402


def adam(value_and_grad, params, h0, steps, lr, b1=0.9, b2=0.999, eps=1e-8):
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(w) for k, w in params.items()}
    for t in range(1, steps + 1):
        loss, g = value_and_grad(params, h0)
        for k in params:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            mhat = m[k] / (1 - b1 ** t)
            vhat = v[k] / (1 - b2 ** t)
            params[k] = params[k] - lr * mhat / (np.sqrt(vhat) + eps)
        if t == 1 or t % max(1, steps // 10) == 0:
            print(f"  step {t:4d}: loss {loss:.6f}")
    return params


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--target", default="cpu", choices=["cpu", "python"])
    args = parser.parse_args()

    rs = np.random.RandomState(0)
    h0 = rs.randn(8, 2)
    rotation = np.array([[0.0, -1.0], [1.0, 0.0]])
    neural_ode.final_states = h0 @ rotation.T      # the loss reads this module global
    params = neural_ode.init_params(2, args.hidden, scale=0.3, rs=rs)

    value_and_grad = srcgrad.value_and_grad(neural_ode.loss, wrt="params", target=args.target)
    first = neural_ode.loss(params, h0)
    params = adam(value_and_grad, params, h0, args.steps, args.lr)
    last = neural_ode.loss(params, h0)
    print(f"loss {first:.4f} -> {last:.6f} after {args.steps} Adam steps")
    return first, last


if __name__ == "__main__":
    main()
