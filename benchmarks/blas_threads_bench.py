#!/usr/bin/env python
"""MinibatchLoop's BLAS threads: seconds per MNIST batch (784-128-10 MLP, SGD, float32) with
``blas_threads="auto"`` (the default: timed choice), 1 thread, and OpenBLAS's own setting (None,
all cores), interleaved, on all of this machine's CPUs, with the other processes' load recorded.

    python benchmarks/blas_threads_bench.py            # ~1 min quiet; longer under load

Each round trains ``--steps`` batches with each setting (order rotated per round, the same
batches for every setting); per setting the median and the minimum over rounds of seconds per
batch, and the per-round foreign load (CPUs' worth of other processes' time, /proc/stat).
Report: ``benchmarks/results/blas_threads.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="blas_threads")
    a = ap.parse_args(argv)
    import numpy as np

    from benchmarks.lib import machine
    from benchmarks.mnist_bench import _load_data
    from srcgrad import value_and_grad
    from srcgrad.optim import SGD, MinibatchLoop
    from srcgrad.training.blas_threads import current_blas_threads
    from srcgrad.training.mlp import epoch_permutation, init_params, mlp_loss

    X, y, data = _load_data(False)
    out = {"data": data, "blas_threads_default": current_blas_threads(), "cpus": os.cpu_count(),
           "load_before": os.getloadavg(), "batches": {}}
    settings = ("auto", 1, None)
    for B in [int(b) for b in a.batches.split(",")]:
        loops = {s: MinibatchLoop(value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)), SGD(lr=0.1),
                                  blas_threads=s) for s in settings}
        params = {s: init_params(128) for s in settings}
        for s in settings:                      # compile; "auto" chooses on a full epoch
            loops[s](params[s], X, y, np.arange(B), B)
        t0 = time.perf_counter()
        loops["auto"](params["auto"], X, y, epoch_permutation(len(X), 0, 0), B)
        first_epoch = time.perf_counter() - t0
        for s in settings[1:]:                  # the same epoch for the others (untimed)
            loops[s](params[s], X, y, epoch_permutation(len(X), 0, 0), B)
        [choice] = loops["auto"].blas_threads_chosen.values()
        chosen, measured = choice.guess(), choice.ratios
        rec = {str(s): {"times": [], "foreign": []} for s in settings}
        for r in range(a.rounds):
            order = epoch_permutation(len(X), 0, r + 1)[:a.steps * B]
            for s in settings[r % 3:] + settings[:r % 3]:
                with machine.LoadProbe() as probe:
                    loops[s](params[s], X, y, order, B)
                rec[str(s)]["times"].append(probe.wall / a.steps)
                rec[str(s)]["foreign"].append(probe.foreign)
            print(f"B={B} round {r + 1}: " + ", ".join(
                f"{s} {rec[str(s)]['times'][-1] * 1e3:.3f} ms" for s in settings), flush=True)
        # same batches in the same order; a product's rounding on another thread count grows
        # over thousands of SGD steps (reported; tests/test_training_blas_threads.py checks 50)
        diff = max(float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) or 1.0))
                   for p in params.values() for got, want in zip(p, params["auto"]))
        out["batches"][str(B)] = {"chosen": chosen, "measured_ratio_to_most_threads": measured,
                                  "choice": choice.summary(),
                                  "max_rel_param_diff": diff,
                                  "first_epoch_s_with_choice": first_epoch, "settings": rec}
    out["load_after"] = os.getloadavg()
    out["blas"] = machine.blas_info()
    L = ["# MinibatchLoop: BLAS threads chosen by timing", "",
         f"`python benchmarks/blas_threads_bench.py` — "
         f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {out['cpus']} CPUs, "
         f"OpenBLAS default {out['blas_threads_default']} threads; data: {data}",
         f"* load average before / after: {out['load_before'][0]:.1f} / {out['load_after'][0]:.1f}"
         " (other processes; a quiet machine is ~0)",
         f"* {a.rounds} interleaved rounds of {a.steps} batches per setting; ms per batch; "
         "foreign load: CPUs' worth of other processes' time during the setting's run.",
         "* the trained parameters of the three settings are compared (same batches in the same "
         "order; a product may round differently on another thread count, and SGD amplifies it "
         "over thousands of steps: ~1e-8 after 50 MNIST steps in the tests).", ""]
    for B, r in out["batches"].items():
        L += [f"## batch {B}", "", f"`auto`: {r['choice']} (the first epoch, measuring, took "
              f"{r['first_epoch_s_with_choice']:.2f} s); "
              f"parameters after all rounds: max rel. difference {r['max_rel_param_diff']:.1e}",
              "", "| blas_threads | median ms/batch | min ms/batch | foreign load median / max |",
              "|---|---|---|---|"]
        for s, v in r["settings"].items():
            f = [x for x in v["foreign"] if x is not None] or [float("nan")]
            L.append(f"| {s} | {statistics.median(v['times']) * 1e3:.3f} | "
                     f"{min(v['times']) * 1e3:.3f} | {statistics.median(f):.2f} / {max(f):.2f} |")
        L.append("")
    res = HERE / "results"
    (res / f"{a.out}.md").write_text("\n".join(L))
    (res / f"{a.out}.json").write_text(json.dumps(out, indent=1, default=str))
    print("\n".join(L))
    return 0


if __name__ == "__main__":
    sys.exit(main())
