"""srcgrad benchmark suite.

usage: python benchmarks/run.py [--quick] [--only NAME[,NAME...]] [--threads N] [--out NAME]

NAME: a program (rosenbrock, lorenz, gmm, lstm, heat, mlp), "mnist" (runs mnist_bench.py, its
report is results/mnist.md), "core" (runs core_bench.py) or "gmm_vectorized" (runs array_bench.py: the vectorized GMM objective; its report
is results/gmm_vectorized.md unless --out is given with --only gmm_vectorized alone).
Results: benchmarks/results/<out>.md / .json and <out>_plots/*.png (default out = latest).
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

from benchmarks.lib import _threads  # noqa: E402  (no heavy imports)


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, short timing (<3 min)")
    ap.add_argument("--only", default=None,
                    help="comma-separated programs / mnist / core / gmm_vectorized")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="latest", help="report name under results/")
    ap.add_argument("--outdir", default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--tools", default=None, help="comma-separated subset of tools: primal, "
                    "hand-numba, srcgrad, jax, torch, autograd, numpy-hand")
    ap.add_argument("--tiny", action="store_true",
                    help="tiny sizes (tests): programs only, no MNIST, no cache probe")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds per call above which a slow peer is skipped")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--skip", default="", help="';'-separated program:size labels to leave out, "
                    "e.g. 'gmm:d=64,K=50,n=10000'")
    return ap.parse_args(argv)


def main(argv=None):
    a = parse(argv)
    thread_env = _threads.setup_threads(a.threads)
    if "SRCGRAD_CACHE_DIR" not in os.environ:
        os.environ["SRCGRAD_CACHE_DIR"] = tempfile.mkdtemp(prefix="srcgrad-bench-cache-")
    only = [s.strip() for s in a.only.split(",")] if a.only else None
    if only == ["core"]:
        from benchmarks import core_bench
        return core_bench.main(["--threads", str(a.threads)] + (["--quick"] if a.quick else []))
    if only and "gmm_vectorized" in only:
        from benchmarks import array_bench
        sub = ["--threads", str(a.threads)] + (["--quick"] if a.quick else []) + \
            (["--tiny"] if a.tiny else []) + (["--tools", a.tools] if a.tools else []) + \
            (["--outdir", a.outdir] if a.outdir else [])
        if only == ["gmm_vectorized"] and a.out != "latest":
            sub += ["--out", a.out]
        vectorized = array_bench.main(sub)
        only = [name for name in only if name != "gmm_vectorized"]
        if not only:
            return {"programs": vectorized}

    from benchmarks.lib import harness as H
    from benchmarks.lib import programs as P
    runtime = _threads.apply_runtime_threads(a.threads)
    outdir = Path(a.outdir) if a.outdir else H.RESULTS
    outdir.mkdir(parents=True, exist_ok=True)
    mode = "tiny" if a.tiny else ("quick" if a.quick else "full")
    cfg = dict(min_time=0.05 if a.tiny else (0.25 if a.quick else 1.0),
               budget=a.budget or (1.0 if a.quick else 10.0), cache_probe=not a.tiny, seed=0)
    if a.quick:   # keep --quick under 3 minutes: one second-process cache probe only
        cfg["cache_probe_programs"] = ("rosenbrock",)
    if a.tools:
        cfg["tools"] = [t.strip() for t in a.tools.split(",")]
    meta = H.machine_info(a.threads, thread_env, runtime)
    meta["mode"] = mode
    meta["srcgrad_cache_dir"] = os.environ["SRCGRAD_CACHE_DIR"]
    t_start = time.perf_counter()
    results = {"programs": [], "notes": []}
    for name, prog in P.PROGRAMS.items():
        if only and name not in only:
            continue
        if a.tiny:
            sizes = [("tiny:" + ",".join(f"{k}={v}" for k, v in prog.tiny.items()), prog.tiny)]
        else:
            labels = prog.quick_sizes if a.quick else list(prog.sizes)
            skip = {x.strip() for x in a.skip.split(";") if x.strip()}
            sizes = [(lab, prog.sizes[lab]) for lab in labels if f"{name}:{lab}" not in skip]
            if len(sizes) < len(labels):
                results["notes"].append(f"Left out by --skip: {a.skip}")
        for label, size in sizes:
            print(f"[{time.perf_counter() - t_start:6.1f}s] {name} {label}", flush=True)
            results["programs"] += H.bench_config(prog, label, size, cfg)
    if not a.tiny and (only is None or "mnist" in only):
        from benchmarks import mnist_bench
        print(f"[{time.perf_counter() - t_start:6.1f}s] mnist", flush=True)
        # its own processes (thread settings precede imports) and its own report
        mnist_bench.main((["--quick"] if a.quick else []) + ["--threads", str(a.threads)])
        results["notes"].append("MNIST epochs: benchmarks/results/mnist.md, written by "
                                "benchmarks/mnist_bench.py (run here with --threads "
                                f"{a.threads}{' --quick' if a.quick else ''}).")
    meta["wall_s"] = round(time.perf_counter() - t_start, 1)
    results["notes"] += [
        f"Peer styles: JAX = jax.jit(jax.grad(f)) with lax.fori_loop (lorenz, heat) / lax.scan "
        f"(lstm), vectorized jnp elsewhere; PyTorch = eager autograd (torch.autograd.grad), "
        f"Python loops over time steps (lorenz with 0-d tensors, lstm/heat vectorized per "
        f"step), vectorized rosenbrock/gmm; autograd = same styles as PyTorch with "
        f"autograd.numpy; numpy-hand = hand-written vectorized gradients (gmm, mlp).",
        "Slow eager peers (torch, autograd) are first run on a shortened problem "
        f"({', '.join(f'{k}: {v[0]}/{v[1]}' for k, v in H.SHRINK.items())}); if the "
        f"extrapolated time per call exceeds the budget ({cfg['budget']:g} s) they are "
        "reported as skipped.",
        "srcgrad first call = srcgrad.grad(...) + first call (transform + Numba compile + run). "
        "Second-process load = a fresh Python process with the same SRCGRAD_CACHE_DIR running "
        "srcgrad.grad(...) + one call (import time shown separately).",
        f"Suite wall time: {meta['wall_s']} s.",
    ]
    plots = {}
    if not a.no_plots and not a.tiny:
        plots = H.make_plots(results["programs"], outdir / f"{a.out}_plots", outdir)
    md = H.write_report(results, meta, outdir / f"{a.out}.md", outdir / f"{a.out}.json", plots)
    print(f"wrote {md} ({meta['wall_s']} s)")
    return results


if __name__ == "__main__":
    main()
