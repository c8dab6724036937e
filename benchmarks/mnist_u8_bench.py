#!/usr/bin/env python
"""MNIST images as uint8 (``load_mnist(raw=True)``, converted in the batch gather with
``x_scale``) against float32 images: CPU time of the parts, interleaved in one process.

    python benchmarks/mnist_u8_bench.py gather [--batches 64,256] [--reps 11]
    python benchmarks/mnist_u8_bench.py epoch  [--batches 64,256] [--reps 5] [--threads 1]

* ``gather``: one epoch of ``fused_runs._gather_batch`` (what ``MinibatchLoop`` runs per batch),
  float32 rows copied vs uint8 rows converted (``float32(pixel) * float32(1/255)``); ms of this
  thread's CPU time (``time.thread_time``) per epoch, the two variants alternating.
* ``epoch``: whole ``MinibatchLoop(value_and_grad(mlp_loss), SGD(lr=0.1))`` epochs on
  ``--threads`` BLAS threads (an int: no "auto" choice), float32 vs uint8 images alternating;
  CPU seconds of the process (``time.process_time``) and wall seconds per epoch. The parameters
  trained by the two are compared bit for bit after every pair.

On a checkout without ``x_scale`` (the code before it) only the float32 variants run: the A/B
of the float32 path against the old code. Read ratios within one run; the load is printed.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))


def _data():
    from srcgrad.datasets import load_mnist
    folder = os.environ.get("SRCGRAD_DATA") or str(HERE.parent.parent / "shared" / "data" / "mnist")
    X, y, _, _ = load_mnist(folder, download=False)
    try:
        from srcgrad.datasets import MNIST_SCALE
    except ImportError:         # the code before raw=True: no uint8 variant
        return X, y, None, None
    Xr = load_mnist(folder, download=False, raw=True)[0]
    return X, y, Xr, MNIST_SCALE


def _stats(values):
    return f"min {min(values):7.3f}  median {statistics.median(values):7.3f}"


def gather(batches, reps, threads):
    import numba
    import numpy as np

    from srcgrad.training.fused_runs import _gather_batch
    from srcgrad.training.mlp import epoch_permutation

    X, y, Xr, scale = _data()
    with_scale = len(inspect.signature(_gather_batch.py_func).parameters) == 8

    @numba.njit(nogil=True)
    def epoch_new(X, y, order, B, Xb, yb, scale):
        for s in range(order.shape[0] // B):
            _gather_batch(X, y, order, s * B, B, Xb, yb, scale)

    @numba.njit(nogil=True)
    def epoch_old(X, y, order, B, Xb, yb, scale):
        for s in range(order.shape[0] // B):
            _gather_batch(X, y, order, s * B, B, Xb, yb)

    run = epoch_new if with_scale else epoch_old
    variants = {"float32 X": (X, None)}
    if Xr is not None:
        variants["uint8 X, x_scale"] = (Xr, np.float32(scale))
    order = epoch_permutation(X.shape[0], 0, 1)
    print(f"gather: ms of thread CPU per epoch, {reps} interleaved reps; load {os.getloadavg()}")
    for b in batches:
        Xb, yb = np.empty((b, X.shape[1]), np.float32), np.empty(b, y.dtype)
        for data, sc in variants.values():
            run(data, y, order, b, Xb, yb, sc)
        t = {k: [] for k in variants}
        for _ in range(reps):
            for k, (data, sc) in variants.items():
                t0 = time.thread_time()
                run(data, y, order, b, Xb, yb, sc)
                t[k].append((time.thread_time() - t0) * 1e3)
        for k, v in t.items():
            print(f"  batch {b:4d}  {k:18s} {_stats(v)}")
        if len(t) == 2:
            ratios = [u / f for f, u in zip(*t.values())]
            print(f"  batch {b:4d}  uint8 / float32 per pair: median "
                  f"{statistics.median(ratios):.3f}")
    print(f"load after: {os.getloadavg()}")


def epoch(batches, reps, threads):
    import numpy as np

    from srcgrad import value_and_grad
    from srcgrad.optim import SGD, MinibatchLoop
    from srcgrad.training.mlp import epoch_permutation, init_params, mlp_loss

    X, y, Xr, scale = _data()
    variants = {"float32 X": (X, None)}
    if Xr is not None:
        variants["uint8 X, x_scale"] = (Xr, scale)
    vg = value_and_grad(mlp_loss, wrt=(0, 1, 2, 3))
    print(f"epoch: MinibatchLoop SGD, {threads} BLAS thread(s), {reps} interleaved reps; "
          f"load {os.getloadavg()}")
    n = X.shape[0]
    for b in batches:
        loops, params = {}, {}
        for k, (data, sc) in variants.items():
            params[k] = [a.copy() for a in init_params(128, seed=0)]
            loops[k] = MinibatchLoop(vg, SGD(lr=0.1), blas_threads=threads)
            kw = {} if sc is None else {"x_scale": sc}
            loops[k](params[k], data, y, np.arange(b), b, **kw)      # compile
            params[k] = [a.copy() for a in init_params(128, seed=0)]
        cpu, wall = {k: [] for k in variants}, {k: [] for k in variants}
        same = []
        for r in range(reps):
            order = epoch_permutation(n, 0, r + 1)[:n // b * b]
            ks = list(variants) if r % 2 == 0 else list(variants)[::-1]
            for k in ks:
                data, sc = variants[k]
                kw = {} if sc is None else {"x_scale": sc}
                c0, w0 = time.process_time(), time.perf_counter()
                loops[k](params[k], data, y, order, b, **kw)
                cpu[k].append(time.process_time() - c0)
                wall[k].append(time.perf_counter() - w0)
            if len(params) == 2:
                a, u = params.values()
                same.append(all(np.array_equal(p, q) for p, q in zip(a, u)))
        for k in variants:
            print(f"  batch {b:4d}  {k:18s} CPU s/epoch {_stats(cpu[k])}   "
                  f"wall {_stats(wall[k])}")
        if len(variants) == 2:
            for name, t in (("CPU", cpu), ("wall", wall)):
                ratios = [u / f for f, u in zip(*t.values())]
                print(f"  batch {b:4d}  uint8 / float32 {name} per pair: median "
                      f"{statistics.median(ratios):.3f}")
            print(f"  batch {b:4d}  parameters bitwise equal after every epoch: {all(same)}")
    print(f"load after: {os.getloadavg()}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", choices=("gather", "epoch"))
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (epoch)")
    a = ap.parse_args(argv)
    reps = a.reps or (11 if a.part == "gather" else 5)
    {"gather": gather, "epoch": epoch}[a.part]([int(x) for x in a.batches.split(",")], reps,
                                               a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
