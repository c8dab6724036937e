"""How close one core's BLAS comes to its peak on the MNIST MLP's products (issue 20).

    python benchmarks/blas_peak.py [--out blas_peak]

On one CPU (this process pinned to the first CPU it may use, the BLAS limited to one thread):
a large square float32 product (2048^3 unless ``--square`` says otherwise; the BLAS at its
best) gives the core's attainable
GFLOP/s; then the five products of an MNIST training step (784-128-10 MLP: X @ W1, H @ W2,
dZ @ W2.T, X.T @ dH, H.T @ dZ) at batch 64 and 256, an epoch's worth (60,000 samples) of each,
give the GFLOP/s the step's products reach and the epoch time they take at that rate and at the
attainable peak. Why: mnist_bench's GEMM floor is these products alone; on one CPU it decides
how far below JAX's epoch any trainer can go (every trainer runs the same flops).

Writes ``benchmarks/results/<out>.md`` and ``.json`` (``<out>`` may be an absolute path); the BLAS libraries and the foreign CPU load
during each timing are recorded beside the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib.machine import LoadProbe, blas_info, cpu_model  # noqa: E402

SAMPLES = 60_000
SIZES = (784, 128, 10)


def _times(fn, repeats):
    out = []
    for _ in range(repeats):
        with LoadProbe() as probe:
            t0 = time.perf_counter()
            fn()
            seconds = time.perf_counter() - t0
        out.append((seconds, probe.foreign))
    return out


def _summary(samples, flops):
    seconds = sorted(s for s, _ in samples)
    best, median = seconds[0], seconds[len(seconds) // 2]
    loads = [f for _, f in samples if f is not None]
    return {"best_s": best, "median_s": median, "gflops_best": flops / best / 1e9,
            "gflops_median": flops / median / 1e9, "foreign_load_max": max(loads) if loads else None}


def square(repeats, n=2048):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    c = np.empty_like(a)
    np.matmul(a, b, out=c)
    return _summary(_times(lambda: np.matmul(a, b, out=c), repeats), 2.0 * n ** 3)


def step_products(batch, repeats):
    """An epoch of the step's five products (SAMPLES // batch steps, the same buffers)."""
    d, h, k = SIZES
    rng = np.random.default_rng(1)
    f32 = np.float32
    X, W1 = rng.random((batch, d), dtype=f32), rng.standard_normal((d, h), dtype=f32)
    H, W2 = rng.random((batch, h), dtype=f32), rng.standard_normal((h, k), dtype=f32)
    dZ, dH = rng.standard_normal((batch, k), dtype=f32), rng.standard_normal((batch, h), dtype=f32)
    A, Z, G = np.empty((batch, h), f32), np.empty((batch, k), f32), np.empty((batch, h), f32)
    gW1, gW2 = np.empty((d, h), f32), np.empty((h, k), f32)
    steps = SAMPLES // batch

    def epoch():
        for _ in range(steps):
            np.matmul(X, W1, out=A)
            np.matmul(H, W2, out=Z)
            np.matmul(dZ, W2.T, out=G)
            np.matmul(X.T, dH, out=gW1)
            np.matmul(H.T, dZ, out=gW2)
    epoch()
    flops = steps * 2.0 * batch * (2 * d * h + 3 * h * k)
    return dict(_summary(_times(epoch, repeats), flops), steps=steps, gflop=flops / 1e9)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="blas_peak")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--square", type=int, default=2048, help="size of the square product")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits
    allowed = os.sched_getaffinity(0)
    cpu = min(allowed)
    os.sched_setaffinity(0, {cpu})
    try:
        with threadpool_limits(1):
            peak = square(args.repeats, args.square)
            rows = {b: step_products(b, args.repeats) for b in (64, 256)}
            blas = blas_info()
    finally:
        os.sched_setaffinity(0, allowed)        # (a caller's process, e.g. the smoke test's)
    for r in rows.values():
        r["epoch_at_peak_s"] = r["gflop"] / peak["gflops_best"]
        r["of_peak"] = r["gflops_best"] / peak["gflops_best"]
    meta = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_model(),
            "pinned_to": cpu, "blas": blas, "numpy": np.__version__,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
    results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    with open(os.path.join(results, args.out + ".json"), "w") as f:
        json.dump({"meta": meta, f"square_{args.square}": peak, "mnist_products": rows}, f, indent=1)
    lines = ["# One core's BLAS on the MNIST step's products\n",
             f"`python benchmarks/blas_peak.py --out {args.out}` — {meta['when']}; {meta['cpu']}, "
             f"pinned to CPU {cpu}, the BLAS on 1 thread; numpy {np.__version__}; "
             f"OPENBLAS_CORETYPE={meta['OPENBLAS_CORETYPE']}\n",
             f"* {args.square}^3 float32 product: **{peak['gflops_best']:.1f} GFLOP/s** best, "
             f"{peak['gflops_median']:.1f} median of {args.repeats} (foreign load max "
             f"{peak['foreign_load_max']:.2f} cores): the core's attainable peak here.\n",
             "| batch | steps | GFLOP per epoch | s/epoch best | median | GFLOP/s best | of peak | "
             "s/epoch at peak | foreign load max |",
             "|---|---|---|---|---|---|---|---|---|"]
    for b, r in rows.items():
        lines.append(f"| {b} | {r['steps']} | {r['gflop']:.2f} | {r['best_s']:.3f} | "
                     f"{r['median_s']:.3f} | {r['gflops_best']:.1f} | {r['of_peak']:.2f} | "
                     f"{r['epoch_at_peak_s']:.3f} | {r['foreign_load_max']:.2f} |")
    lines += ["", "The five products of every step of an epoch, the same buffers each step (the "
              "GEMM floor's work, without its slicing of the images). BLAS (threadpoolctl):", ""]
    lines += [f"* {', '.join(f'{k}={v}' for k, v in d.items())}" for d in blas]
    with open(os.path.join(results, args.out + ".md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
