"""Newton-CG on the Rosenbrock function with srcgrad.hvp, against gradient descent.

Each Newton step solves H p = -g by conjugate gradients, using only Hessian-vector products
(``srcgrad.hvp``: reverse mode over the generated forward-mode code, so H is never formed), and
stops CG at negative curvature. Both methods use the same backtracking (Armijo) line search and
stop when the gradient norm falls below ``--tol``.

    python examples/newton_rosenbrock.py [--n 20] [--target cpu|python]
"""
import argparse
import time

import numpy as np

import srcgrad


def rosen(x):
    s = 0.0
    for i in range(x.shape[0] - 1):
        s += 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


def line_search(f, x, fx, g, p):
    """Backtracking: the first step 1, 1/2, 1/4, ... with sufficient decrease (Armijo)."""
    step, slope = 1.0, float(g @ p)
    while step > 1e-20:
        x_new = x + step * p
        f_new = f(x_new)
        if f_new <= fx + 1e-4 * step * slope:
            return x_new, f_new
        step *= 0.5
    return x, fx


def newton_cg(x, value_and_grad, hvp, tol, max_iter=500):
    fx, g = value_and_grad(x)
    hvps = 0
    for it in range(max_iter):
        if np.linalg.norm(g) < tol:
            return x, it, hvps
        # truncated CG for H p = -g
        p = np.zeros_like(x)
        r = -g.copy()
        d = r.copy()
        for _ in range(2 * x.size):
            Hd = hvp(x, d)
            hvps += 1
            curvature = d @ Hd
            if curvature <= 0.0:
                if not p.any():
                    p = -g
                break
            alpha = (r @ r) / curvature
            p += alpha * d
            r_new = r - alpha * Hd
            if np.linalg.norm(r_new) < 0.1 * min(1.0, np.linalg.norm(g)) * np.linalg.norm(g):
                break
            d = r_new + (r_new @ r_new) / (r @ r) * d
            r = r_new
        x, fx = line_search(rosen, x, fx, g, p)
        fx, g = value_and_grad(x)
    return x, max_iter, hvps


def gradient_descent(x, value_and_grad, tol, max_iter):
    fx, g = value_and_grad(x)
    for it in range(max_iter):
        if np.linalg.norm(g) < tol:
            return x, it
        x, fx = line_search(rosen, x, fx, g, -g)
        fx, g = value_and_grad(x)
    return x, max_iter


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--gd-max-iter", type=int, default=200000)
    parser.add_argument("--target", default="cpu", choices=("cpu", "python"))
    args = parser.parse_args(argv)
    x0 = np.zeros(args.n)                 # (the chained Rosenbrock has a local minimum near -1, 1, ..., 1)
    value_and_grad = srcgrad.value_and_grad(rosen, target=args.target)
    hvp = srcgrad.hvp(rosen, target=args.target)

    start = time.perf_counter()
    x, newton_iters, hvps = newton_cg(x0.copy(), value_and_grad, hvp, args.tol)
    newton_time = time.perf_counter() - start
    print(f"Newton-CG (hvp):   {newton_iters:6d} iterations ({hvps} Hessian-vector products), "
          f"f = {rosen(x):.3e}, |x - 1| = {np.linalg.norm(x - 1):.1e}  [{newton_time:.1f} s incl. compile]")

    start = time.perf_counter()
    x, gd_iters = gradient_descent(x0.copy(), value_and_grad, args.tol, args.gd_max_iter)
    gd_time = time.perf_counter() - start
    status = "" if gd_iters < args.gd_max_iter else " (not converged: iteration limit)"
    print(f"gradient descent:  {gd_iters:6d} iterations{status}, f = {rosen(x):.3e}, "
          f"|x - 1| = {np.linalg.norm(x - 1):.1e}  [{gd_time:.1f} s]")
    return newton_iters, gd_iters


if __name__ == "__main__":
    main()
