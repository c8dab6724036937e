#!/usr/bin/env python
"""Where an MNIST SGD step's time goes, on 1 and on all BLAS threads: the hand-written Numba epoch
of ``benchmarks/lib/mnist_trainers.py`` (same BLAS as srcgrad, fused updates) with parts left
out, beside srcgrad's ``MinibatchLoop`` with a fixed BLAS thread count.

    python benchmarks/mnist_parts_bench.py [--batches 64,256] [--rounds 5] [--steps N]

Why: on 2 CPUs the five GEMMs alone ran 1.4-1.5x faster than on one, but a whole training step
(hand Numba or srcgrad) at batch 256 did not (benchmarks/results/mnist.md, 15:41: hand Numba
0.298 s on 1 CPU, 0.297 s on 2). The variants say which part the second thread does not speed
up or slows down:

* ``full``: the training epoch (gather, bias+ReLU, softmax gradient, ReLU mask, fused updates);
* ``no-gather``: contiguous slices of X instead of the shuffled rows (not training: no order);
* ``no-elementwise``: the five GEMMs and the gather only (not a training step);
* ``unfused``: the weight gradients into buffers (beta 0) instead of the fused alpha/beta update;
* ``floor``: the five GEMMs on contiguous slices, beta 0 (the mnist_bench GEMM floor);
* ``srcgrad``: ``MinibatchLoop(..., blas_threads=n)`` (its generated step).

One process on every CPU it may use; the BLAS thread count is switched per variant
(``srcgrad.training.blas_threads``). Rounds interleave every (threads, variant) pair; the
report gives the median s/epoch over rounds and the foreign CPU load. Numbers from a machine
that others are using are not comparable across runs (the report records the load).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

VARIANTS = {"full": (1, 1, 1), "no-gather": (0, 1, 1), "no-elementwise": (1, 0, 1),
            "unfused": (1, 1, 0), "floor": (0, 0, 0)}


def _epoch_function():
    import numba
    import numpy as np

    from srcgrad.training.blas import gemm

    @numba.njit(nogil=True)
    def epoch(W1, b1, W2, b2, X, y, order, nsteps, lr, xb, yb, A, P, dA, gW1, gW2,
              gather, elementwise, fuse):
        B, D = xb.shape
        Hd, C = W2.shape
        inv = np.float32(1.0) / np.float32(B)
        for s in range(nsteps):
            if gather:
                for i in range(B):
                    j = order[s * B + i]
                    for k in range(D):
                        xb[i, k] = X[j, k]
                    yb[i] = y[j]
                xs = xb
            else:
                xs = X[s * B:(s + 1) * B]
            gemm(xs, W1, A, 1.0, 0.0, False, False)
            if elementwise:
                for i in range(B):
                    for j in range(Hd):
                        v = A[i, j] + b1[j]
                        A[i, j] = v if v > 0 else np.float32(0)
            gemm(A, W2, P, 1.0, 0.0, False, False)
            if elementwise:
                for i in range(B):
                    m = np.float32(-np.inf)
                    for c in range(C):
                        P[i, c] += b2[c]
                        m = max(m, P[i, c])
                    se = np.float32(0)
                    for c in range(C):
                        e = np.exp(P[i, c] - m)
                        P[i, c] = e
                        se += e
                    r = inv / se
                    for c in range(C):
                        P[i, c] *= r
                    P[i, yb[i]] -= inv
            gemm(P, W2, dA, 1.0, 0.0, False, True)
            if fuse:
                gemm(A, P, W2, -lr, 1.0, True, False)
            else:
                gemm(A, P, gW2, 1.0, 0.0, True, False)
            if elementwise:
                for i in range(B):
                    for j in range(Hd):
                        if A[i, j] <= 0:
                            dA[i, j] = 0
            if fuse:
                gemm(xs, dA, W1, -lr, 1.0, True, False)
            else:
                gemm(xs, dA, gW1, 1.0, 0.0, True, False)
    return epoch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=0, help="steps per epoch (default: all)")
    ap.add_argument("--random-data", action="store_true")
    ap.add_argument("--samples", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the report to this .md path")
    a = ap.parse_args(argv)

    import numpy as np

    from benchmarks.lib import machine
    from benchmarks.mnist_bench import _load_data
    from srcgrad import value_and_grad
    from srcgrad.optim import SGD, MinibatchLoop
    from srcgrad.training.blas_threads import blas_threads, current_blas_threads
    from srcgrad.training.mlp import epoch_permutation, init_params, mlp_loss

    X, y, data = _load_data(a.random_data, a.samples)
    if a.samples:
        X, y = X[:a.samples], y[:a.samples]
    n = X.shape[0]
    most = current_blas_threads()
    counts = sorted({1, most})
    epoch = _epoch_function()
    lines = [f"# MNIST step parts on 1 and {most} BLAS threads", "",
             f"`python benchmarks/mnist_parts_bench.py {' '.join(argv or sys.argv[1:])}`; "
             f"data: {data}; load average before: {os.getloadavg()}", ""]
    for B in [int(b) for b in a.batches.split(",")]:
        nsteps = min(a.steps or n // B, n // B)
        p0 = init_params(128, 0)
        f = np.float32
        buf = (np.empty((B, 784), f), np.empty(B, y.dtype), np.empty((B, 128), f),
               np.empty((B, 10), f), np.empty((B, 128), f), np.empty((784, 128), f),
               np.empty((128, 10), f))
        runs = {}
        for c in counts:
            params = [q.copy() for q in p0]
            for name, flags in VARIANTS.items():
                runs[(c, name)] = (lambda order, c=c, flags=flags, params=params: epoch(
                    *params, X, y, order, nsteps, f(0.1), *buf, *flags))
            loop = MinibatchLoop(value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)), SGD(lr=0.1),
                                 blas_threads=c)
            sp = tuple(q.copy() for q in p0)
            runs[(c, "srcgrad")] = (lambda order, loop=loop, sp=sp: loop(
                sp, X, y, order[:nsteps * B], B))
        for run in runs.values():                      # compile and warm up
            run(epoch_permutation(n, 0, 0))
        times = {k: [] for k in runs}
        foreign = {k: [] for k in runs}
        keys = list(runs)
        for r in range(a.rounds):
            order = epoch_permutation(n, 0, r + 1)
            k0 = r % len(keys)
            for key in keys[k0:] + keys[:k0]:
                with blas_threads(key[0]), machine.LoadProbe() as probe:
                    runs[key](order)
                times[key].append(probe.wall * (n // B) / nsteps)
                foreign[key].append(probe.foreign)
            print(f"B={B} round {r + 1}: " + ", ".join(
                f"{k[0]}:{k[1]} {times[k][-1]:.3f}" for k in keys), flush=True)
        lines += [f"## batch {B}", "", "| variant | " + " | ".join(
            f"{c} thread{'s' * (c > 1)} s/epoch" for c in counts) + " | foreign load (max) |",
            "|---|" + "---|" * (len(counts) + 1)]
        for name in list(VARIANTS) + ["srcgrad"]:
            cells = [f"{statistics.median(times[(c, name)]):.3f}" for c in counts]
            fmax = max((x for c in counts for x in foreign[(c, name)] if x is not None),
                       default=None)
            lines.append(f"| {name} | " + " | ".join(cells) +
                         f" | {'–' if fmax is None else f'{fmax:.2f}'} |")
        lines.append("")
    lines.append(f"load average after: {os.getloadavg()}")
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
