#!/usr/bin/env python
"""MNIST training throughput: seconds per SGD epoch of the 784-128-10 MLP (float32), srcgrad
against JAX (scan epoch and per-step jit), hand Numba, hand NumPy, PyTorch eager and the GEMM
floor, each written as its best users write it (``benchmarks/lib/mnist_trainers.py``).

    python benchmarks/mnist_bench.py            # ~5 min on a quiet 2-core machine
    python benchmarks/mnist_bench.py --quick    # short epochs, 2 rounds (< 2 min; the tests' mode)

Method:

* Two configurations, each in its own process (thread settings must precede the imports):
  every tool on 1 CPU (single-threaded BLAS/XLA, the process pinned to one CPU), and every tool
  on all CPUs with its natural threading.
* All tools train the model of ``srcgrad.training.mlp`` from ``init_params(128, seed=0)``. Before
  timing, each tool's parameters after 5 SGD steps are compared with a float64 NumPy reference of
  the same steps from the same start (srcgrad's included); a tool that disagrees is not timed.
* Epochs are interleaved: in round r every tool trains one epoch (order
  ``epoch_permutation(n, 0, r)``) before any trains the next; the order of the tools rotates each
  round. Per tool: the median s/epoch; against srcgrad: the median over rounds of the per-round
  ratio tool / srcgrad.
* Foreign load: the CPU time other processes took on this process's CPUs during each epoch
  (``/proc/stat`` minus this process's own time), in cores. A round where it exceeds
  ``--max-foreign`` (default 0.10) on either side of a ratio is discarded; when fewer than 2 rounds
  remain, all rounds are used and the table says DISTURBED.
* Compile: srcgrad's first call (gradient + training loop; "cold" in the first configuration, with
  fresh SRCGRAD_CACHE_DIR and NUMBA_CACHE_DIR, "warm" in the second, which loads them from the
  cache), JAX's lower+compile, the hand Numba epoch's compile. Not included in s/epoch.
* Machine: CPU model, BLAS libraries, versions and core types (threadpoolctl), per configuration.
* Time: the timed rounds of a configuration stop once ``--budget`` seconds (default 120) are spent
  (after at least 2 rounds per batch size), so a disturbed machine cannot stretch the run without
  bound; the report says where that happened.

Report: ``benchmarks/results/<out>.md`` and ``.json`` (default ``out=mnist``). MNIST is read from
``$SRCGRAD_DATA`` or ``../shared/data/mnist``; without it, random data of MNIST's shape is used
and the report says so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:       # the benchmarks package and this checkout's srcgrad
    sys.path.insert(0, str(ROOT))

from benchmarks.lib import _threads  # noqa: E402  (no heavy imports)

TOOLS = ("srcgrad", "jax-scan", "jax-step", "numba", "numpy", "torch", "blas-floor")
CHECK_STEPS = 5
CHECK_TOL = 1e-4


def _parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="epochs of --quick-steps steps (extrapolated), 2 rounds, batch 64 only")
    ap.add_argument("--quick-steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5)")
    ap.add_argument("--batches", default=None, help="comma-separated (default 64,256)")
    ap.add_argument("--threads", default="1,all",
                    help="configurations: comma-separated CPU counts or 'all' (default 1,all)")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds of timed rounds per configuration (default 120; quick 60), "
                         "split over the batch sizes: rounds stop once it is spent (after at "
                         "least 2, or 1 when one round alone took twice the share)")
    ap.add_argument("--max-foreign", type=float, default=0.10,
                    help="discard rounds where other processes took more than this many cores")
    ap.add_argument("--out", default="mnist", help="report name under benchmarks/results/")
    ap.add_argument("--outdir", default=str(HERE / "results"))
    ap.add_argument("--random-data", action="store_true", help="random data of MNIST's shape")
    ap.add_argument("--samples", type=int, default=0,
                    help="use the first N training samples (default: all 60,000)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)   # JSON path to write
    a = ap.parse_args(argv)
    a.rounds = a.rounds or (2 if a.quick else 5)
    a.budget = a.budget or (60.0 if a.quick else 120.0)
    a.batches = [int(b) for b in (a.batches or ("64" if a.quick else "64,256")).split(",")]
    a.tools = [t for t in a.tools.split(",") if t]
    bad = [t for t in a.tools if t not in TOOLS]
    if bad:
        ap.error(f"unknown tools {bad}; choose from {', '.join(TOOLS)}")
    return a


def _cpu_count():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# ------------------------------------------------------------------------------------------------
# One configuration (a child process)
# ------------------------------------------------------------------------------------------------

def _load_data(random_data, samples=0, pixels=False):
    """``(X, y, note)``: X float32 images, or with ``pixels`` MNIST's uint8 pixels (what the
    trainers of this benchmark gather and convert per batch)."""
    import numpy as np
    if not random_data:
        from srcgrad.datasets import DatasetError, load_mnist
        folder = os.environ.get("SRCGRAD_DATA") or str(ROOT.parent / "shared" / "data" / "mnist")
        try:
            X, y, _, _ = load_mnist(folder, download=False, raw=pixels)
            return (np.ascontiguousarray(X).reshape(len(X), -1),
                    np.ascontiguousarray(y, np.int64),
                    f"MNIST training set ({folder})" + (", uint8 pixels" if pixels else ""))
        except (DatasetError, OSError) as exc:
            why = f"MNIST not found ({exc}): random data of MNIST's shape"
    else:
        why = "random data of MNIST's shape (--random-data)"
    rng = np.random.default_rng(0)
    n = samples or 60000
    X = rng.integers(0, 256, (n, 784), dtype=np.uint8) if pixels else \
        rng.random((n, 784), dtype=np.float32)
    return X, rng.integers(0, 10, n), why


def _versions(tools):
    import numba
    import numpy
    out = {"python": platform.python_version(), "numpy": numpy.__version__,
           "numba": numba.__version__}
    for mod in ("jax", "torch", "scipy"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def run_config(args, n_threads, log=print):
    """Every tool on ``n_threads`` CPUs (the caller set the threads up before importing them)."""
    from benchmarks.lib import machine
    from benchmarks.lib import mnist_trainers as M
    from srcgrad.training.mlp import epoch_permutation, init_params

    runtime = _threads.apply_runtime_threads(n_threads)
    X, y, data_note = _load_data(args.random_data, args.samples, pixels=True)
    if args.samples:
        X, y = X[:args.samples], y[:args.samples]
        data_note += f", first {len(X)} samples"
    n = X.shape[0]
    out = {"threads": n_threads, "cpus": sorted(os.sched_getaffinity(0)), "data": data_note,
           "runtime_threads": runtime, "batches": {}}
    available = {}
    for tool in args.tools:
        try:
            __import__(M.TRAINERS[tool].needs)
            available[tool] = True
        except ImportError:
            available[tool] = False
    out["versions"] = _versions(args.tools)
    params0 = init_params(128, seed=0)
    for B in args.batches:
        spe = n // B
        nsteps = min(spe, args.quick_steps) if args.quick else spe
        rec = {}
        out["batches"][str(B)] = rec
        trainers = {}
        check_order = epoch_permutation(n, 0, 0)
        ref = M.reference_steps(params0, X, y, check_order, B, CHECK_STEPS)
        for tool in args.tools:
            r = rec[tool] = {"label": M.LABELS[tool], "times": [], "foreign": []}
            if not available[tool]:
                r["status"] = "missing"
                continue
            try:
                t = M.TRAINERS[tool](X, y, B)
                t.epoch_steps = nsteps
                r["compile_s"] = t.setup(params0)
                if tool != "blas-floor":
                    t.epoch(check_order[:CHECK_STEPS * B])
                    err = M.max_rel_err(t.params(), ref)
                    r["check_rel_err"] = err
                    if not err < CHECK_TOL:
                        r["status"] = f"WRONG (parameters after {CHECK_STEPS} steps: rel err {err:.1e})"
                        continue
                    t.setup(params0)            # back to the start (no recompile)
                trainers[tool] = t
                r["status"] = "ok"
            except Exception as exc:          # a failing tool is reported, the others go on
                r["status"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            log(f"  [{n_threads} cpu] B={B} {tool}: {r['status']} "
                f"(compile {r.get('compile_s', 0):.2f} s)")
        names = list(trainers)
        share, t_start = args.budget / len(args.batches), time.perf_counter()
        for rnd in range(args.rounds):
            order = epoch_permutation(n, 0, rnd + 1)[:nsteps * B]
            k = rnd % max(1, len(names))
            for tool in names[k:] + names[:k]:
                with machine.LoadProbe() as probe:
                    trainers[tool].epoch(order)
                rec[tool]["times"].append(probe.wall * spe / nsteps)
                rec[tool]["foreign"].append(probe.foreign)
                used = trainers[tool].threads_used()
                if used is not None:
                    rec[tool].setdefault("blas_threads_used", []).append(used)
            log(f"  [{n_threads} cpu] B={B} round {rnd + 1}: " + ", ".join(
                f"{t} {rec[t]['times'][-1]:.3f}s" for t in names))
            spent = time.perf_counter() - t_start
            if rnd + 1 < args.rounds and spent > share and (rnd >= 1 or spent > 2 * share):
                out.setdefault("stopped_by_budget", []).append(
                    f"batch {B}: {rnd + 1} of {args.rounds} rounds ({spent:.0f} s > {share:.0f} s)")
                break
        for tool in names:
            rec[tool]["steps_timed"] = nsteps
            rec[tool]["steps_per_epoch"] = spe
            note = trainers[tool].threads_note()
            if note:
                rec[tool]["blas_threads_note"] = note
    out["blas"] = machine.blas_info()
    out["cpu_model"] = machine.cpu_model()
    return out


# ------------------------------------------------------------------------------------------------
# Summary and report (parent process)
# ------------------------------------------------------------------------------------------------

def summarize(rec, max_foreign):
    """Per tool: median s/epoch over clean rounds, median per-round ratio to srcgrad."""
    import statistics

    def clean(i, tool):
        f = rec[tool]["foreign"][i]
        return f is not None and f <= max_foreign

    base = rec.get("srcgrad", {})
    rows = {}
    for tool, r in rec.items():
        times = r.get("times") or []
        row = {"status": r["status"], "compile_s": r.get("compile_s")}
        rows[tool] = row
        if not times:
            continue
        idx = [i for i in range(len(times)) if clean(i, tool)]
        row["disturbed"] = len(idx) < 2
        use = idx if not row["disturbed"] else list(range(len(times)))
        row["rounds_clean"], row["rounds"] = len(idx), len(times)
        row["s_per_epoch"] = statistics.median(times[i] for i in use)
        fs = [f for f in r["foreign"] if f is not None]
        row["foreign_max"] = max(fs) if fs else None
        row["foreign_median"] = statistics.median(fs) if fs else None
        if base.get("times") and len(base["times"]) == len(times):
            pair = [i for i in range(len(times)) if clean(i, tool) and clean(i, "srcgrad")]
            row["ratio_disturbed"] = len(pair) < 2
            pair = pair if len(pair) >= 2 else list(range(len(times)))
            row["x_srcgrad"] = statistics.median(times[i] / base["times"][i] for i in pair)
    return rows


def _fmt(v, spec):
    return "–" if v is None else format(v, spec)


def write_report(args, configs, path_md, path_json, command):
    from benchmarks.lib.mnist_trainers import LABELS, LR
    L = ["# MNIST epoch: srcgrad and peers, interleaved", "",
         f"`{command}` — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
         f"{platform.node() or 'this machine'}", ""]
    first = next(iter(configs.values()), {})
    L += [f"* CPU: {first.get('cpu_model', '?')}; data: {first.get('data', '?')}",
          "* versions: " + ", ".join(f"{k} {v}" for k, v in first.get("versions", {}).items()),
          f"* model: 784-128-10 MLP, `srcgrad.training.mlp` (init seed 0), SGD lr={LR}, float32, "
          "last partial batch dropped; the images are stored as uint8 pixels and every trainer "
          "gathers its shuffled minibatches and converts them to float32 (`float32(pixel) * "
          "float32(1/255)`) except the GEMM floor (the five products of each step on contiguous "
          "slices of the float32 images).",
          f"* {args.rounds} interleaved rounds (one epoch of every tool per round, order rotated); "
          "s/epoch: median over rounds; ×srcgrad: median of the per-round ratios. Rounds where "
          f"other processes took > {args.max_foreign} cores of this process's CPUs are "
          "discarded (DISTURBED: fewer than 2 clean rounds, all used).",
          "* srcgrad runs `MinibatchLoop(..., blas_threads=\"auto\")`: the BLAS thread count it "
          "measured and chose, and the batches each timed epoch ran on each count, are listed "
          "under each table.",
          f"* checked before timing: parameters after {CHECK_STEPS} SGD steps from the same start "
          f"against a float64 NumPy reference (max rel. err < {CHECK_TOL:g}).",
          ]
    if args.quick:
        L.append(f"* --quick: {args.quick_steps} steps per epoch, extrapolated to a full epoch.")
    L.append("")
    for name, cfg in configs.items():
        if "error" in cfg:
            L += [f"## {name}", "", f"failed: {cfg['error']}", ""]
            continue
        L += [f"## {name} (CPUs {cfg['cpus']}, runtime threads {cfg.get('runtime_threads')})", ""]
        for note in cfg.get("stopped_by_budget", []):
            L += [f"* rounds stopped by --budget {args.budget:g} s: {note}"]
        if cfg.get("stopped_by_budget"):
            L.append("")
        for i, (B, rec) in enumerate(cfg["batches"].items()):
            rows = summarize(rec, args.max_foreign)
            # srcgrad's cache state applies to the first batch size; later ones reuse the process
            cache = cfg.get("srcgrad_cache", "?") if i == 0 else "same process"
            L += [f"### batch {B}", "",
                  "| tool | s/epoch | × srcgrad | compile s | clean rounds | foreign load "
                  "(median / max cores) | check rel. err | status |",
                  "|---|---|---|---|---|---|---|---|"]
            for tool, row in rows.items():
                r = rec[tool]
                ratio = _fmt(row.get("x_srcgrad"), ".2f") + \
                    (" (DISTURBED)" if row.get("ratio_disturbed") else "")
                sec = _fmt(row.get("s_per_epoch"), ".3f") + \
                    (" (DISTURBED)" if row.get("disturbed") else "")
                comp = row.get("compile_s")
                if tool == "srcgrad" and comp is not None:
                    comp_s = f"{comp:.1f} ({cache})"
                else:
                    comp_s = "–" if not comp else f"{comp:.2f}"
                L.append(f"| {LABELS[tool]} | {sec} | {ratio} | {comp_s} | "
                         f"{row.get('rounds_clean', 0)}/{row.get('rounds', 0)} | "
                         f"{_fmt(row.get('foreign_median'), '.2f')} / "
                         f"{_fmt(row.get('foreign_max'), '.2f')} | "
                         f"{_fmt(r.get('check_rel_err'), '.1e')} | {row['status']} |")
            L.append("")
            for tool, r in rec.items():
                if r.get("blas_threads_used"):
                    per_round = "; ".join(", ".join(f"{k}: {v}" for k, v in sorted(u.items()))
                                          for u in r["blas_threads_used"])
                    note = r.get("blas_threads_note", "–")
                    L += [f"* {LABELS[tool]} BLAS threads: batches per thread count in each "
                          f"timed round: {per_round}. Choice: {note}", ""]
        L += ["BLAS / thread pools (threadpoolctl):", ""]
        for b in cfg.get("blas", []):
            L.append("* " + ", ".join(f"{k}={v}" for k, v in b.items()))
        L.append("")
    Path(path_md).write_text("\n".join(L))
    Path(path_json).write_text(json.dumps({"command": command, "configs": configs,
                                           "max_foreign": args.max_foreign}, indent=1))
    return "\n".join(L)


def main(argv=None):
    args = _parse(argv)
    if args.child:                      # one configuration: set threads up, then import
        n = int(os.environ["MNIST_BENCH_THREADS"])
        _threads.setup_threads(n)
        out = run_config(args, n, log=lambda s: print(s, flush=True))
        out["srcgrad_cache"] = os.environ.get("MNIST_BENCH_CACHE_STATE", "?")
        Path(args.child).write_text(json.dumps(out))
        return 0
    ncpu = _cpu_count()
    configs = {}
    tmp = tempfile.mkdtemp(prefix="mnist-bench-")
    # fresh caches shared by the configurations: srcgrad compiles cold in the first, loads warm
    env = dict(os.environ, SRCGRAD_CACHE_DIR=os.path.join(tmp, "srcgrad"),
               NUMBA_CACHE_DIR=os.path.join(tmp, "numba"))
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    try:
        for i, spec in enumerate(args.threads.split(",")):
            n = ncpu if spec == "all" else min(int(spec), ncpu)
            name = f"every tool on {n} CPU" + ("s" if n > 1 else "")
            if name in configs:
                continue
            path = os.path.join(tmp, f"config{i}.json")
            env_i = dict(env, MNIST_BENCH_THREADS=str(n),
                         MNIST_BENCH_CACHE_STATE="cold" if i == 0 else "warm")
            print(f"[mnist_bench] {name}", flush=True)
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *passthrough,
                                   "--child", path], env=env_i)
            if proc.returncode != 0 or not os.path.exists(path):
                configs[name] = {"error": f"child exited with {proc.returncode}"}
            else:
                configs[name] = json.loads(Path(path).read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(args.outdir, exist_ok=True)
    command = "python benchmarks/mnist_bench.py " + " ".join(passthrough)
    md = write_report(args, configs, os.path.join(args.outdir, args.out + ".md"),
                      os.path.join(args.outdir, args.out + ".json"), command.strip())
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
