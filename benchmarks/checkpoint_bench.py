"""Checkpointing benchmark (issue #18): the gradient of a long Lorenz-63 RK4 run (10^6 steps,
``lib/programs.lorenz_rk4``) on the cpu target, taped in full and with ``checkpoint="auto"``
(periodic, K = ceil(sqrt(n))): run time and the growth of the peak resident memory during the
gradient call.

Each variant runs in a child process of its own (Linux): compiled on a short run first, then the
peak RSS is reset (``/proc/self/clear_refs``) and the median of ``--repeat`` value+gradient calls
of the long run taken; the growth is the peak RSS after them minus the RSS before them. The two
gradients must agree exactly (the same operations run in the same order).

usage: python benchmarks/checkpoint_bench.py [--nsteps N] [--repeat R] [--quick]
       -> benchmarks/results/checkpoint.md and .json
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CHILD = r"""
import statistics, sys, time
import numpy as np
sys.path.insert(0, {lib!r})
sys.path.insert(0, {root!r})
import srcgrad
from programs import lorenz_rk4
option = None if sys.argv[1] == "none" else sys.argv[1]
nsteps, repeat = int(sys.argv[2]), int(sys.argv[3])
g = srcgrad.value_and_grad(lorenz_rk4, wrt=(0, 1), target="cpu", checkpoint=option)
p, u0, dt = np.array([10.0, 28.0, 8.0 / 3.0]), np.array([1.0, 1.0, 1.0]), 1e-5
start = time.perf_counter()
g(p, u0, dt, 10)
first = time.perf_counter() - start
def status(field):
    with open("/proc/self/status") as lines:
        return next(int(l.split()[1]) * 1024 for l in lines if l.startswith(field + ":"))
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")                     # the peak RSS (VmHWM) restarts from the current RSS
before = status("VmRSS")
times = []
for _ in range(repeat):
    start = time.perf_counter()
    value, (gp, gu) = g(p, u0, dt, nsteps)
    times.append(time.perf_counter() - start)
grown = status("VmHWM") - before
print("RESULT", first, statistics.median(times), grown, repr(value),
      " ".join(repr(float(v)) for v in list(gp) + list(gu)))
"""


def run(option, nsteps, repeat, cache):
    env = dict(os.environ, SRCGRAD_CACHE_DIR=cache)
    code = CHILD.format(lib=str(HERE / "lib"), root=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code, option, str(nsteps), str(repeat)], env=env,
                         capture_output=True, text=True, check=True)
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT"))
    parts = line.split()
    return {"first_call_s": float(parts[1]), "median_s": float(parts[2]), "rss_growth_bytes": int(parts[3]),
            "value": parts[4], "gradient": parts[5:]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nsteps", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10^5 steps, 3 repeats, no report written")
    args = parser.parse_args()
    if args.quick:
        args.nsteps, args.repeat = 100_000, 3
    load = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        for option in ("none", "auto"):
            results[option] = run(option, args.nsteps, args.repeat, cache)
    same = results["none"]["value"] == results["auto"]["value"] and \
        results["none"]["gradient"] == results["auto"]["gradient"]
    tape = 4 * 8 * args.nsteps         # x, y, z, J: one float each a step, taped in full
    lines = [
        "# srcgrad checkpointing benchmark (issue #18)", "",
        f"- date: {time.strftime('%Y-%m-%dT%H:%M:%S')}; machine: {os.cpu_count()} CPUs, shared with other "
        f"jobs (load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the start): times move by "
        "10-20 % between runs; the memory figures do not",
        f"- program: Lorenz-63 RK4 (`benchmarks/lib/programs.py: lorenz_rk4`), {args.nsteps:,} steps, "
        f"value and gradient w.r.t. (p, u0), target cpu, median of {args.repeat} calls; each variant in "
        "a child process of its own",
        "- peak RSS growth: the peak resident memory (VmHWM, reset through /proc/self/clear_refs after "
        "a 10-step run has compiled the code) minus the resident memory before the timed calls; the full "
        f"tape holds 4 floats a step = {tape / 2 ** 20:.1f} MiB; checkpointed, "
        f"{2 * math.isqrt(args.nsteps - 1) + 2} iterations' worth of 4 floats (checkpoints and one "
        "segment's tape)",
        f"- gradients identical with and without checkpointing: {'yes' if same else 'NO'}", "",
        "| checkpoint | median value+grad | peak RSS growth | first call (compile) |",
        "|---|---|---|---|",
    ]
    for option, label in (("none", "none (taped in full)"), ("auto", "`\"auto\"` (K = ceil(sqrt(n)))")):
        r = results[option]
        lines.append(f"| {label} | {r['median_s'] * 1e3:.1f} ms | {r['rss_growth_bytes'] / 2 ** 20:.2f} MiB | "
                     f"{r['first_call_s']:.1f} s |")
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.quick:
        out = HERE / "results"
        (out / "checkpoint.md").write_text(report)
        (out / "checkpoint.json").write_text(json.dumps({"nsteps": args.nsteps, "repeat": args.repeat,
                                                         "load": load, "identical": same,
                                                         "results": results}, indent=1) + "\n")
    if not same:
        sys.exit("the checkpointed gradient differs")


if __name__ == "__main__":
    main()
