#!/usr/bin/env python
"""srcgrad's MNIST SGD epoch with the batch gather on a second thread (``gather_ahead``) and
without, on 2 and on 1 BLAS threads, and the two ``blas_threads="auto"`` loops (with the ahead
candidates, and without: the default), interleaved in one process.

    python benchmarks/gather_ahead_bench.py [--segments 40] [--steps 64] [--batches 64,256]
        [--out benchmarks/results/gather_ahead.md]

Method: every variant is a ``MinibatchLoop(value_and_grad(mlp_loss), SGD(lr=0.1))`` on MNIST
(or random data of its shape), warmed up (compiled) first. A segment is ``--steps`` consecutive
batches of one epoch order; in each round every variant trains one segment (the variants' order
rotated), so a change of the machine's load falls on all of them alike. Per variant: s/epoch
(segment time scaled to the epoch's batches) as the minimum, the 10th percentile and the median
over segments, and the median over rounds of its ratio to the first variant. The "auto" loops keep
their choice across segments (their measuring chunks included in the times). ``uptime``'s load
average is recorded before and after; numbers from a machine others are using are comparable
only within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

VARIANTS = (("2 threads", 2, False), ("2 threads + ahead", 2, True), ("1 thread", 1, False),
            ("1 thread + ahead", 1, True), ("auto + ahead", "auto", "auto"),
            ("auto (default: no ahead)", "auto", False))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--segments", type=int, default=40)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--random-data", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    from benchmarks.mnist_bench import _load_data
    from srcgrad import value_and_grad
    from srcgrad.optim import SGD, MinibatchLoop
    from srcgrad.training.mlp import epoch_permutation, init_params, mlp_loss

    X, y, data = _load_data(a.random_data, 0)
    n = X.shape[0]
    lines = ["# MNIST epoch with the gather ahead (srcgrad MinibatchLoop, SGD)", "",
             f"`python benchmarks/gather_ahead_bench.py {' '.join(argv or sys.argv[1:])}`; "
             f"data: {data}; CPUs: {os.cpu_count()}; load average before: "
             f"{tuple(round(v, 2) for v in os.getloadavg())}", ""]
    for B in [int(b) for b in a.batches.split(",")]:
        nb = n // B
        loops = {}
        for name, threads, ahead in VARIANTS:
            loop = MinibatchLoop(value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)), SGD(lr=0.1),
                                 blas_threads=threads, gather_ahead=ahead)
            p = tuple(q.copy() for q in init_params(128, 0))
            loop(p, X, y, epoch_permutation(n, 0, 0), B, stop=4)       # compile, warm up
            loops[name] = (loop, p)
        order = epoch_permutation(n, 0, 1)
        times = {k: [] for k in loops}
        keys, pos = list(loops), 0
        for r in range(a.segments):
            if pos + a.steps > nb:
                pos = 0
            k0 = r % len(keys)
            for k in keys[k0:] + keys[:k0]:
                loop, p = loops[k]
                t0 = time.perf_counter()
                loop(p, X, y, order, B, first=pos, stop=pos + a.steps)
                times[k].append((time.perf_counter() - t0) / a.steps * nb)
            pos += a.steps
        base = times[keys[0]]
        lines += [f"## batch {B} ({a.segments} rounds of {a.steps} batches; load average after: "
                  f"{tuple(round(v, 2) for v in os.getloadavg())})", "",
                  "| variant | min s/epoch | p10 | median | median ratio to 2 threads |",
                  "|---|---|---|---|---|"]
        for k, v in times.items():
            s = sorted(v)
            ratio = statistics.median(x / b for x, b in zip(v, base))
            lines.append(f"| {k} | {s[0]:.3f} | {s[len(s) // 10]:.3f} | "
                         f"{statistics.median(v):.3f} | {ratio:.2f} |")
        for k in ("auto + ahead", "auto (default: no ahead)"):
            notes = "; ".join(c.summary() for c in loops[k][0].blas_threads_chosen.values())
            lines.append(f"\n* {k}: {notes or 'no choice (one BLAS thread)'}")
        lines.append("")
        print("\n".join(lines[-(len(VARIANTS) + 6):]), flush=True)
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
