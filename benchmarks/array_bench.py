"""Vectorized GMM benchmark (issue #3): the ADBench GMM objective written as array NumPy code
(``programs.gmm_vectorized``), differentiated by srcgrad and compiled, against the hand-written
vectorized NumPy gradient, JAX ``jit(grad)``, PyTorch autograd (eager) and HIPS autograd, all in one
run. For context the same table has the loop formulation (``programs.gmm_objective``) through
srcgrad and the hand-written Numba loop adjoint, which is also the reference.

usage: python benchmarks/array_bench.py [--quick] [--tiny] [--threads N] [--out NAME]
                                         [--outdir DIR] [--tools a,b,...] [--srcgrad-target T]
       python benchmarks/run.py --only gmm_vectorized [--quick] ...

Before anything is timed: the reference gradient (hand Numba adjoint of the loop form) is checked
against central finite differences of the vectorized NumPy objective, the vectorized and loop
objectives must agree, and every tool's gradient is compared with the reference (relative error
<= 1e-8, float64 everywhere); a mismatch shows as WRONG and is not timed.

Output: ``results/<out>.md`` and ``.json`` (default ``out = gmm_vectorized``).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:      # the benchmarks package and this checkout's srcgrad
    sys.path.insert(0, str(HERE.parent))

from benchmarks.lib import _threads  # noqa: E402  (no heavy imports)

NAME = "gmm_vectorized"
SIZES = {"d=10,K=25,n=1000": {"d": 10, "K": 25, "n": 1000},
         "d=64,K=50,n=10000": {"d": 64, "K": 50, "n": 10_000}}
QUICK = ("d=10,K=25,n=1000",)
TINY = {"tiny:d=3,K=4,n=7": {"d": 3, "K": 4, "n": 7}}
# loop formulations cost ~n*K*d^2 scalar steps: timed only up to this much work
LOOP_WORK_LIMIT = 10 * 25 * 1000 * 10
TOOLS = ["primal", "srcgrad", "numpy-hand", "jax", "torch", "autograd", "srcgrad-loops", "hand-numba"]
# peer -> the package it needs (the programs they run: lib/gmm_identical.py)
PEER_PACKAGES = {"numpy-hand": "numpy", "jax": "jax", "torch": "torch", "autograd": "autograd"}


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the small size only, short timing")
    ap.add_argument("--tiny", action="store_true", help="tiny size, very short timing (tests)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=NAME)
    ap.add_argument("--outdir", default=None)
    ap.add_argument("--tools", default=None, help="comma-separated subset of " + ", ".join(TOOLS))
    ap.add_argument("--srcgrad-target", default="cpu", choices=("cpu", "python"),
                    help="python: the uncompiled generated code (smoke tests)")
    return ap.parse_args(argv)


def gmm_args(size, seed=0):
    """(loop args, vectorized args): the same data; the vectorized form adds its index arrays."""
    from benchmarks.lib import programs as P
    args = P.make_args(P.PROGRAMS["gmm"], size, seed)
    return args, tuple(args) + P.gmm_vectorized_index(size["K"], size["d"])


def bench_size(label, size, cfg, log=print):
    import numpy as np

    from benchmarks.lib import adjoints
    from benchmarks.lib import checks
    from benchmarks.lib import gmm_identical
    from benchmarks.lib import harness as H
    from benchmarks.lib import programs as P
    tools = cfg["tools"]
    args, vargs = gmm_args(size, cfg.get("seed", 0))
    work = size["n"] * size["K"] * size["d"] ** 2
    loops_ok = work <= cfg.get("loop_work_limit", LOOP_WORK_LIMIT)
    recs = []
    base = dict(program=NAME, size=label, work=float(work))

    timing = H.InterleavedTiming(cfg["min_time"])

    def log_row(r):
        t = r.get("median")
        log(f"  {label:20s} {r['tool']:14s} {r['status']:40.40s} "
            + (f"{t * 1e3:10.3f} ms" if t is not None else ""))

    def rec(tool, style, status, **kw):
        r = dict(base, tool=tool, style=style, status=status)
        r.update(kw)
        recs.append(r)
        if status != "queued":
            log_row(r)
        return r

    def queue(tool, style, run, block, **kw):
        return timing.add(rec(tool, style, "queued", **kw), run, block)

    # reference: the hand-written Numba adjoint of the loop form, checked against central
    # differences of the vectorized NumPy objective (which must equal the loop objective)
    t0 = time.perf_counter()
    value, ref = adjoints.hand_value_and_grad("gmm", args)
    hand_first = time.perf_counter() - t0
    vvalue = P.gmm_vectorized(*vargs)
    same_value = bool(np.isclose(vvalue, value, rtol=1e-10, atol=1e-10))
    ok, err, fd, ad = checks.fd_check(P.gmm_vectorized, vargs, (0, 1, 2), ref, rtol=1e-5)
    check = dict(value_loop=float(value), value_vectorized=float(vvalue), same_value=same_value,
                 fd_rel_err=err, fd=fd, ad=ad, fd_ok=bool(ok))
    log(f"  {label:20s} reference: value loop {value:.12g} vectorized {vvalue:.12g}; "
        f"FD rel err {err:.1e}")
    if not (ok and same_value):
        rec("hand-numba", "hand-written Numba adjoint (loops; reference)",
            f"WRONG reference (FD rel err {err:.1e}, same value {same_value})", reference_check=check)
        return recs, check

    builders = {}

    def srcgrad_builder(fn, fargs, target):
        def build():
            import srcgrad
            g = srcgrad.grad(fn, wrt=(0, 1, 2), target=target)
            return dict(run=lambda: g(*fargs), block=lambda o: o,
                        to_numpy=lambda o: tuple(np.asarray(x, dtype=np.float64) for x in o), rtol=1e-8)
        return build

    target = cfg.get("srcgrad_target", "cpu")
    on = " (Numba target)" if target == "cpu" else " (python target)"
    builders["srcgrad"] = ("srcgrad.grad of the vectorized NumPy objective" + on,
                           srcgrad_builder(P.gmm_vectorized, vargs, target))
    builders["srcgrad-loops"] = ("srcgrad.grad of the loop objective" + on,
                                 srcgrad_builder(P.gmm_objective, args, target))

    for tool in tools:
        if tool == "primal":
            queue(tool, "the vectorized objective in NumPy (no gradient)",
                  lambda: P.gmm_vectorized(*vargs), lambda o: o)
            continue
        if tool == "hand-numba":
            if not loops_ok:
                rec(tool, "hand-written Numba adjoint (loops; reference)",
                    "not timed (loop work above the limit; used as reference)", reference_check=check,
                    first_call=hand_first)
                continue
            queue(tool, "hand-written Numba adjoint (loops; reference)",
                  lambda: adjoints.ADJOINTS["gmm"](*args), lambda o: o, first_call=hand_first,
                  reference_check=check)
            continue
        if tool == "srcgrad-loops" and not loops_ok:
            rec(tool, builders[tool][0], "not run (loop work above the limit)")
            continue
        if tool in builders:
            style, build = builders[tool]
        elif tool in PEER_PACKAGES:
            try:
                __import__(PEER_PACKAGES[tool])
            except ImportError:
                rec(tool, "", "missing")
                continue
            # every peer runs the program srcgrad differentiates (lib/gmm_identical.py)
            style = gmm_identical.STYLE[tool]
            build = (lambda t: lambda: gmm_identical.build(t, vargs))(tool)
        else:
            continue
        try:
            t0 = time.perf_counter()
            b = build()
            out = b["run"]()
            b["block"](out)
            first = time.perf_counter() - t0
        except Exception as e:      # noqa: BLE001  (a failing tool is a row, not a crash)
            rec(tool, style, "failed: " + H.short_error(e))
            continue
        try:
            okg, gerr, msg = checks.compare_grads(b["to_numpy"](out), ref, b["rtol"])
        except Exception as e:      # noqa: BLE001
            okg, gerr, msg = False, float("nan"), H.short_error(e)
        if not okg:
            rec(tool, style, f"WRONG ({msg})", first_call=first, grad_rel_err=gerr)
            continue
        queue(tool, style, b["run"], b["block"], first_call=first, grad_rel_err=gerr)

    timing.run(log_row)

    sg = next((r for r in recs if r["tool"] == "srcgrad" and r.get("median") is not None), None)
    primal = next((r for r in recs if r["tool"] == "primal" and r.get("median") is not None), None)
    for r in recs:
        if r.get("median") is None:
            continue
        if sg is not None:
            r["x_srcgrad"] = r["median"] / sg["median"]
        if primal is not None and r["tool"] != "primal":
            r["grad_over_primal"] = r["median"] / primal["median"]
    return recs, check


def write_report(recs, checks_by_size, meta, md_path, json_path):
    from benchmarks.lib import harness as H
    L = ["# srcgrad benchmark: vectorized GMM objective (issue #3)", ""]
    L.append(f"- date: {meta.get('date')}  ")
    L.append(f"- mode: {meta.get('mode')}  ")
    L.append(f"- machine: {meta.get('cpu', '?')}, {meta.get('cpu_count')} logical CPUs, "
             f"{meta.get('platform')}; {meta.get('machine_note', '')}  ")
    L.append(f"- threads: **{meta.get('threads')}** for every tool; env: "
             f"`{json.dumps(meta.get('thread_env', {}))}`; runtime: "
             f"`{json.dumps(meta.get('runtime_threads', {}))}`  ")
    v = meta.get("versions", {})
    L.append("- versions: " + ", ".join(f"{k} {v[k]}" for k in v) + "  ")
    if meta.get("numpy_blas"):
        L.append(f"- numpy BLAS: {meta['numpy_blas']}  ")
    L += ["", "The ADBench GMM objective (log-sum-exp over components, precisions parametrised by "
          "Cholesky factors Q_k = exp(diagonal) + strictly-lower part from `icf`, Wishart prior; "
          "constant terms omitted), gradient w.r.t. alphas, means and icf, float64 for every tool. "
          "srcgrad differentiates `benchmarks/lib/programs.py: gmm_vectorized`, array NumPy code; "
          "every peer runs the identical program, transliterated line by line into its array "
          "library with the same index arrays (`benchmarks/lib/gmm_identical.py`; hand NumPy: a "
          "hand-written gradient of the same program). Times are per gradient call, "
          "median over repeated runs after a warm-up (min/max alongside), the tools timed in "
          "interleaved rounds (a slice of each in turn). `× srcgrad` = tool time / "
          "srcgrad (vectorized) time in the same run (> 1: slower than srcgrad). `grad/primal` = tool "
          "time / the vectorized objective evaluated by NumPy.", ""]
    sizes = []
    for r in recs:
        if r["size"] not in sizes:
            sizes.append(r["size"])
    for s in sizes:
        L += [f"## {s}", "", "| tool | style | status | median | min | max | reps | first call | "
              "× srcgrad | grad/primal |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in recs:
            if r["size"] != s:
                continue
            L.append("| " + " | ".join([
                r["tool"], r.get("style", ""), r["status"].replace("|", "/"),
                H._fmt_t(r.get("median")), H._fmt_t(r.get("min")), H._fmt_t(r.get("max")),
                str(r.get("reps", "")), H._fmt_t(r.get("first_call")),
                H._fmt_x(r.get("x_srcgrad")), H._fmt_x(r.get("grad_over_primal"))]) + " |")
        c = checks_by_size.get(s)
        if c:
            L += ["", f"Checks before timing: loop and vectorized objectives agree "
                  f"({c['value_loop']:.12g} vs {c['value_vectorized']:.12g}); the reference (hand Numba "
                  f"adjoint) vs central differences of the vectorized objective along a random "
                  f"direction: rel. err {c['fd_rel_err']:.1e}; every timed gradient above agrees with "
                  "the reference to the `grad_rel_err` in the JSON (≤ 1e-8)."]
        L.append("")
    L += ["## The program", "",
          "`gmm_vectorized` gathers the K Cholesky factors from one (K, d + d(d-1)/2 + 1) array "
          "(`V[q_rows, q_cols].reshape(K*d, d)`, upper entries read a zero column) and does the K "
          "products as one 2-d matmul `x @ Qall.T` (n, K*d) minus `b = Q_k mu_k`, then sums squares "
          "by reshaping to (n*K, d); the index arrays are arguments. Every tool in the table runs "
          "this program (an ADBench-style scatter into (K, d, d) with a batched matmul is the "
          "same arithmetic work, but it is not what is measured here).", ""]
    notes = meta.get("notes") or []
    if notes:
        L += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    Path(md_path).write_text("\n".join(L))
    Path(json_path).write_text(json.dumps(dict(meta=meta, programs=recs, checks=checks_by_size),
                                          indent=1, default=H._json_default))
    return md_path


def main(argv=None):
    a = parse(argv)
    thread_env = _threads.setup_threads(a.threads)
    if "SRCGRAD_CACHE_DIR" not in os.environ:
        os.environ["SRCGRAD_CACHE_DIR"] = tempfile.mkdtemp(prefix="srcgrad-array-bench-cache-")
    from benchmarks.lib import harness as H
    runtime = _threads.apply_runtime_threads(a.threads)
    meta = H.machine_info(a.threads, thread_env, runtime)
    meta["mode"] = "tiny" if a.tiny else ("quick" if a.quick else "full")
    meta["machine_note"] = os.environ.get(
        "BENCH_MACHINE_NOTE", "a loaded 2-core machine: other jobs ran on the second core, so "
        "absolute times are noisy; ratios within the run are meaningful")
    meta["srcgrad_target"] = a.srcgrad_target
    cfg = dict(min_time=0.05 if a.tiny else (0.25 if a.quick else 1.0), seed=0,
               tools=[t.strip() for t in a.tools.split(",")] if a.tools else list(TOOLS),
               srcgrad_target=a.srcgrad_target)
    sizes = TINY if a.tiny else ({k: SIZES[k] for k in QUICK} if a.quick else SIZES)
    recs, checks_by_size = [], {}
    t0 = time.perf_counter()
    for label, size in sizes.items():
        print(f"[{time.perf_counter() - t0:6.1f}s] {NAME} {label}", flush=True)
        size_recs, check = bench_size(label, size, cfg)
        recs += size_recs
        checks_by_size[label] = check
    meta["wall_s"] = round(time.perf_counter() - t0, 1)
    meta["notes"] = [
        "srcgrad first call = srcgrad.grad(...) + first call (transform + Numba compile + run) in a "
        "fresh cache directory; srcgrad-loops compiles separately.",
        f"Loop formulations (srcgrad-loops, hand-numba) are timed only up to n*K*d^2 = "
        f"{LOOP_WORK_LIMIT:g}; above it the hand adjoint is computed once as the reference.",
        f"Wall time of this run: {meta['wall_s']} s."]
    outdir = Path(a.outdir) if a.outdir else H.RESULTS
    outdir.mkdir(parents=True, exist_ok=True)
    md = write_report(recs, checks_by_size, meta, outdir / f"{a.out}.md", outdir / f"{a.out}.json")
    print(f"wrote {md} ({meta['wall_s']} s)")
    return recs


if __name__ == "__main__":
    main()
