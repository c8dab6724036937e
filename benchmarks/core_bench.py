"""Core benchmark (issue "core"): srcgrad's compiled gradient against the compiled primal and the
hand-written Numba adjoint, plus compile cost, on Rosenbrock, Lorenz-63 RK4 (1000 steps), loop
GMM, a while loop with a data-dependent trip count, an in-place array update in a loop, and a
helper function called from a loop.

usage: python benchmarks/core_bench.py [--quick] [--threads N]   -> benchmarks/results/core.md

Targets: gradient <= 3x primal, <= 1.3x hand adjoint, second-process cached load <= 0.5 s.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:      # the benchmarks package and this checkout's srcgrad
    sys.path.insert(0, str(HERE.parent))

from benchmarks.lib import _threads  # noqa: E402

TARGET_PRIMAL = 3.0
TARGET_HAND = 1.3
TARGET_LOAD = 0.5

SIZES = {  # full mode; quick uses each program's quick size
    "rosenbrock": "n=1e6",
    "lorenz": "N=1e3",
    "gmm": "d=10,K=25,n=1000",
    "newton_while": "n=1e5",
    "inplace": "n=1e4,sweeps=50",
    "helper": "n=1000",
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--outdir", default=None)
    a = ap.parse_args(argv)
    thread_env = _threads.setup_threads(a.threads)
    if "SRCGRAD_CACHE_DIR" not in os.environ:
        os.environ["SRCGRAD_CACHE_DIR"] = tempfile.mkdtemp(prefix="srcgrad-core-cache-")
    from benchmarks.lib import harness as H
    from benchmarks.lib import programs as P
    runtime = _threads.apply_runtime_threads(a.threads)
    meta = H.machine_info(a.threads, thread_env, runtime)
    meta["mode"] = "core quick" if a.quick else "core"
    cfg = dict(min_time=0.25 if a.quick else 1.0, budget=10.0, cache_probe=True, seed=0)
    recs = []
    t0 = time.perf_counter()
    for name, label in SIZES.items():
        prog = P.CORE_PROGRAMS[name]
        if a.quick:
            label = prog.quick_sizes[0]
        print(f"[{time.perf_counter() - t0:6.1f}s] core {name} {label}", flush=True)
        recs += H.bench_config(prog, label, prog.sizes[label], cfg,
                               tools=["primal", "hand-numba", "srcgrad"])
    meta["wall_s"] = round(time.perf_counter() - t0, 1)

    def get(name, tool):
        return next((r for r in recs if r["program"] == name and r["tool"] == tool), None)

    rows = ["| program | size | primal | hand adjoint | srcgrad | srcgrad/primal (≤3) | "
            "srcgrad/hand (≤1.3) | first call | cached load, 2nd process (≤0.5 s) | targets |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name in SIZES:
        pr, hd, sg = get(name, "primal"), get(name, "hand-numba"), get(name, "srcgrad")
        size = (pr or hd or {}).get("size", "")
        pm = pr.get("median") if pr else None
        hm = hd.get("median") if hd else None
        if sg is None or sg.get("median") is None:
            st = sg["status"] if sg else "not run"
            rows.append(f"| {name} | {size} | {H._fmt_t(pm)} | {H._fmt_t(hm)} | "
                        f"{st.replace('|', '/')} | | | | | not met |")
            continue
        sm = sg["median"]
        rp = sm / pm if pm else None
        rh = sm / hm if hm else None
        cl = (sg.get("cache_load") or {}).get("load_s")
        ok = [rp is not None and rp <= TARGET_PRIMAL, rh is not None and rh <= TARGET_HAND,
              cl is not None and cl <= TARGET_LOAD]
        rows.append(
            f"| {name} | {size} | {H._fmt_t(pm)} | {H._fmt_t(hm)} | {H._fmt_t(sm)} | "
            f"{H._fmt_x(rp)} {'✓' if ok[0] else '✗'} | {H._fmt_x(rh)} {'✓' if ok[1] else '✗'} | "
            f"{H._fmt_t(sg.get('first_call'))} | "
            f"{H._fmt_t(cl) if cl is not None else (sg.get('cache_load') or {}).get('status', '')}"
            f" {'✓' if ok[2] else '✗'} | {'met' if all(ok) else 'not met'} |")
    outdir = Path(a.outdir) if a.outdir else H.RESULTS
    outdir.mkdir(parents=True, exist_ok=True)
    results = {"programs": recs, "notes": [
        "Targets: srcgrad gradient ≤ 3× compiled primal, ≤ 1.3× hand-written Numba adjoint, "
        "second-process cached load (srcgrad.grad + first call in a fresh process sharing "
        "SRCGRAD_CACHE_DIR) ≤ 0.5 s.",
        f"Suite wall time: {meta['wall_s']} s."]}
    md = H.write_report(results, meta, outdir / "core.md", outdir / "core.json",
                        title="srcgrad core benchmark")
    text = md.read_text().split("\n")
    # put the target summary right after the header block
    i = text.index("") + 1
    while text[i].startswith("- "):
        i += 1
    summary = ["", "## Targets", ""] + rows + [""]
    md.write_text("\n".join(text[:i] + summary + text[i:]))
    print("\n".join(rows))
    print(f"wrote {md}")
    return recs


if __name__ == "__main__":
    main()
