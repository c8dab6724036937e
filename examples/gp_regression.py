"""Gaussian-process regression: fit the RBF kernel's hyperparameters by maximising the log
marginal likelihood, with its gradient from srcgrad and scipy.optimize's L-BFGS.

The model code is plain NumPy written as for autograd (np.linalg.cholesky / solve / slogdet, the
data in module globals): the same module is in the test gallery, tests/real_programs/gp.py, whose
gradient tests/test_real_programs.py checks against finite differences on both targets. The
example prints the fitted hyperparameters and the posterior mean at a few test inputs.

    python examples/gp_regression.py [--n-data 20] [--target cpu|python]
"""
import argparse
import os
import sys

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import srcgrad  # noqa: E402
from real_programs import gp  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-data", type=int, default=20)
    parser.add_argument("--target", default="cpu", choices=["cpu", "python"])
    args = parser.parse_args()

    # the objective reads gp.X and gp.y at every call: rebinding them is enough
    gp.X, gp.y = gp.build_toy_dataset(n_data=args.n_data, noise_std=0.1)
    value_and_grad = srcgrad.value_and_grad(gp.objective, target=args.target)

    def fun(params):
        value, g = value_and_grad(params)
        return value, g

    # mean, log noise, log output scale, log lengthscale
    init = np.array([0.0, -1.0, 0.0, 0.0])
    print(f"initial negative log marginal likelihood: {gp.objective(init):.4f}")
    result = minimize(fun, init, jac=True, method="L-BFGS-B",
                      callback=lambda p: print(f"  -log p(y) = {gp.objective(p):.4f}"))
    params = result.x
    print(f"final negative log marginal likelihood:   {result.fun:.4f} "
          f"({result.nit} iterations, {result.nfev} gradient evaluations)")
    print(f"mean {params[0]:.3f}, noise {np.exp(params[1]) + 1e-4:.4f}, "
          f"output scale {np.exp(params[2]):.3f}, lengthscale {np.exp(params[3]):.3f}")

    xstar = np.linspace(-2.5, 2.5, 6).reshape(-1, 1)
    mean, cov = gp.predict(params, gp.X, gp.y, xstar)
    std = np.sqrt(np.maximum(np.diag(cov), 0.0))
    for x, m, s in zip(xstar[:, 0], mean, std):
        print(f"  f({x:+.2f}) = {m:+.3f} ± {2 * s:.3f}")
    return result


if __name__ == "__main__":
    main()
