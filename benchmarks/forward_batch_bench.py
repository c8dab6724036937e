"""Vector forward mode: hessian and forward-mode jacobian with BATCH directions per sweep against
one direction per sweep, in one run.

usage: python benchmarks/forward_batch_bench.py [--min-time 2] [--out forward_batch]

* hessian of Rosenbrock (n=100): the batched forward-over-reverse driver (what
  ``srcgrad.hessian`` runs) against the hvp-per-column driver it ran before (still what it
  runs outside the batched subset), both one compiled call.
* jacobian of an explicit Euler step of a 1-d reaction-diffusion system (n=200 states in and
  out): the batched driver (what ``srcgrad.jacobian`` runs) against one compiled jvp sweep per
  basis vector, in one compiled loop (what it ran before).

Each result is checked against the other first; the compiled drivers are called directly (no
Python argument handling). CPU time per call, medians, interleaved rounds;
the machine is shared: ratios within this run only. Output: ``results/<out>.md``.
"""
import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import srcgrad  # noqa: E402
from benchmarks.lib.programs import rosenbrock  # noqa: E402
from srcgrad.forward_batch import BATCH  # noqa: E402


def ode_step(u, dt):
    """One explicit Euler step of a 1-d reaction-diffusion system: n states in, n out."""
    n = u.shape[0]
    out = np.empty(n)
    for i in range(n):
        left = u[i - 1] if i > 0 else 0.0
        right = u[i + 1] if i < n - 1 else 0.0
        out[i] = u[i] + dt * (left - 2.0 * u[i] + right) + dt * math.sin(u[i]) * u[i]
    return out


def per_direction_jacobian(jvp_compiled):
    import numba

    @numba.njit
    def columns(u, dt):
        n = u.size
        e = np.zeros(n)
        e[0] = 1.0
        value, first = jvp_compiled(u, dt, e)
        J = np.empty((first.size, n))
        J[:, 0] = first
        for k in range(1, n):
            e = np.zeros(n)
            e[k] = 1.0
            value, column = jvp_compiled(u, dt, e)
            J[:, k] = column
        return J
    return columns


def timed(rows, min_time):
    samples = {k: [] for k in rows}
    end = time.time() + min_time * len(rows)
    while time.time() < end:
        for k, fn in rows.items():
            start = time.process_time()
            fn()
            samples[k].append(time.process_time() - start)
    return {k: float(np.median(v)) for k, v in samples.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--out", default="forward_batch")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()[0]
    lines = []
    # hessian of Rosenbrock
    x = np.random.default_rng(0).uniform(-1, 1, 100)
    hes = srcgrad.hessian(rosenbrock, target="cpu")
    H = hes(x)
    assert hes.last_path == "batched"
    spec = hes._hvp._specialization(hes.kinds_of((x,)), "float64")
    H_columns = spec.hessian_columns(x, 1.0)
    assert np.allclose(H, H_columns, rtol=1e-12, atol=1e-10)
    primal = srcgrad.grad(rosenbrock, target="cpu").specialize(x).primal
    (batched, _), = [v for v in hes._batched_drivers.values() if v is not None]
    t = timed({"primal": lambda: primal(x), "batched": lambda: batched(x, 1.0),
               "columns": lambda: spec.hessian_columns(x, 1.0)}, args.min_time)
    lines.append(f"| hessian, Rosenbrock n=100 | {t['primal'] * 1e6:.1f} µs | {t['columns'] * 1e6:.1f} µs "
                 f"(hvp per column) | {t['batched'] * 1e6:.1f} µs | {t['columns'] / t['batched']:.2f}× |")
    # jacobian of an ODE step
    u = np.random.default_rng(1).standard_normal(200)
    jac = srcgrad.jacobian(ode_step, target="cpu")
    J = jac(u, 0.1)
    jvp_spec = srcgrad.jvp(ode_step, target="cpu").specialize(u, 0.1)
    columns = per_direction_jacobian(jvp_spec.jvp)
    assert np.allclose(J, columns(u, 0.1), rtol=1e-12, atol=1e-12)
    step = srcgrad.vjp(ode_step, target="cpu").specialize(u, 0.1).primal
    batched = jac._jvp._specialization(jac.kinds_of((u, 0.1)), "float64").jacobian_columns
    t = timed({"primal": lambda: step(u, 0.1), "batched": lambda: batched(u, 0.1),
               "columns": lambda: columns(u, 0.1)}, args.min_time)
    lines.append(f"| jacobian (forward), Euler step n=200 | {t['primal'] * 1e6:.1f} µs | "
                 f"{t['columns'] * 1e6:.1f} µs (jvp per column) | {t['batched'] * 1e6:.1f} µs | "
                 f"{t['columns'] / t['batched']:.2f}× |")
    load_end = os.getloadavg()[0]
    text = "\n".join([
        "# Vector forward mode: several directions per sweep", "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {BATCH} directions per sweep; CPU time "
        f"per call (medians of interleaved rounds); load average {load_start:.1f} at the start, "
        f"{load_end:.1f} at the end (shared 2-core machine: compare within a row).", "",
        "| what | primal | one direction per sweep | batched | speed-up |", "|---|---|---|---|---|",
        *lines, "",
        "Both drivers of a row run every sweep in one compiled call and agree to 1e-12. hessian: "
        "forward mode over the gradient's code (batched) against reverse mode over the tangent code "
        "(hvp per column). The rest of a batched hessian's time is its n² output.", ""])
    out = HERE / "results" / f"{args.out}.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
