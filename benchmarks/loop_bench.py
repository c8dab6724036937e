"""Loop benchmark (issue #18): srcgrad's gradient of loop programs beside the hand-written Numba
adjoint, the compiled primal and JAX, side by side in one process, compile time beside run time.

Programs (float64): Rosenbrock as a scalar loop (n = 1e4), Lorenz-63 RK4 (1000 steps), the
ADBench GMM written Numba-style with ``@njit`` helpers called from the loops (d=10, K=25,
n=1000; ``loop_programs.gmm_njit``), an LSTM written with loops (T=100, D=16, H=32) and the
explicit 1-D heat stencil (nx=128, nt=1000). Hand adjoints: ``adjoints.py``. JAX (if installed):
written as JAX users write it (``peers_jax.py``: vectorized, ``lax.fori_loop`` or ``lax.scan``).

usage: python benchmarks/loop_bench.py [--quick] [--tag NAME] [--programs a,b]
       -> benchmarks/results/loops[_NAME].md and .json

Compile times: srcgrad's first call (transform + Numba compile + one run) with an empty
SRCGRAD_CACHE_DIR; the hand adjoint's and the primal's first call of a fresh, uncached
``numba.njit`` (compile + one run); JAX's first call (trace + XLA compile + one run).
Run times: median per value+gradient call, the tools timed interleaved (harness.InterleavedTiming).
Targets (issue #18): srcgrad <= 1.3x the hand adjoint; grad <= 3x primal (heat <= 4x).
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

from benchmarks.lib import _threads  # noqa: E402

SIZES = {
    "rosenbrock": {"n": 10_000},
    "lorenz": {"nsteps": 1000},
    "gmm_njit": {"d": 10, "K": 25, "n": 1000},
    "lstm": {"T": 100, "D": 16, "H": 32},
    "heat": {"nx": 128, "nt": 1000},
}
QUICK = {
    "rosenbrock": {"n": 10_000},
    "lorenz": {"nsteps": 1000},
    "gmm_njit": {"d": 10, "K": 25, "n": 200},
    "lstm": {"T": 50, "D": 16, "H": 32},
    "heat": {"nx": 128, "nt": 300},
}
TARGET_HAND = 1.3
TARGET_PRIMAL = {"heat": 4.0}      # else 3.0


def program(name):
    from benchmarks.lib import programs as P
    from benchmarks import loop_programs as LP
    if name == "gmm_njit":
        base = P.PROGRAMS["gmm"]
        return P.Program("gmm_njit", LP.gmm_njit, base.wrt, {}, base.make_args,
                         doc="ADBench GMM, Numba style: loops calling @njit helpers"), "gmm", "gmm"
    return P.PROGRAMS[name], name, name


def fresh_njit(dispatcher_or_fn):
    """An uncached numba.njit of the same Python function (its first call compiles)."""
    import numba
    fn = getattr(dispatcher_or_fn, "py_func", dispatcher_or_fn)
    return numba.njit(fn)


def primal_of(prog):
    """numba.njit of the user function (helpers jitted too; @njit helpers stay as they are)."""
    from benchmarks.lib import adjoints
    return adjoints.njit_user(prog.fn)


def rel_err(got, ref):
    import numpy as np
    num = max(float(np.max(np.abs(np.asarray(g, dtype=float) - np.asarray(r, dtype=float))))
              for g, r in zip(got, ref))
    den = max(float(np.max(np.abs(np.asarray(r, dtype=float)))) for r in ref)
    return num / max(den, 1e-300)


def bench_program(name, size, min_time, log=print):
    import numpy as np
    from benchmarks.lib import adjoints, harness as H
    import srcgrad
    prog, hand_name, jax_name = program(name)
    args = prog.make_args(size, np.random.default_rng(0))
    rows = {}
    timing = H.InterleavedTiming(min_time)

    # hand adjoint: fresh compile (timed), then its gradient is the reference
    hand = fresh_njit(adjoints.ADJOINTS[hand_name])
    t0 = time.perf_counter()
    out = hand(*args)
    rows["hand"] = dict(first_call=time.perf_counter() - t0)
    value, ref = float(out[0]), tuple(np.asarray(g, dtype=float) for g in out[1:])
    timing.add(rows["hand"], lambda: hand(*args), lambda o: o)

    primal = primal_of(prog)
    t0 = time.perf_counter()
    pv = primal(*args)
    rows["primal"] = dict(first_call=time.perf_counter() - t0)
    if not np.isclose(pv, value, rtol=1e-9):
        raise AssertionError(f"{name}: primal {pv} != hand value {value}")
    timing.add(rows["primal"], lambda: primal(*args), lambda o: o)

    wrt = prog.wrt[0] if len(prog.wrt) == 1 else tuple(prog.wrt)
    g = srcgrad.value_and_grad(prog.fn, wrt=wrt)
    t0 = time.perf_counter()
    sv, sg = g(*args)
    rows["srcgrad"] = dict(first_call=time.perf_counter() - t0)
    sg = (sg,) if len(prog.wrt) == 1 else sg
    err = rel_err(sg, ref)
    rows["srcgrad"]["grad_rel_err"] = err
    if err > 1e-8 or not np.isclose(sv, value, rtol=1e-9):
        raise AssertionError(f"{name}: srcgrad gradient differs from the hand adjoint (rel {err:.1e})")
    timing.add(rows["srcgrad"], lambda: g(*args), lambda o: o)

    try:
        from benchmarks.lib import peers_jax
        t0 = time.perf_counter()
        jb = peers_jax.build(jax_name, args)
        jout = jb["run"]()
        jb["block"](jout)
        rows["jax"] = dict(first_call=time.perf_counter() - t0, style=jb["style"])
        jerr = rel_err(jb["to_numpy"](jout), ref)
        rows["jax"]["grad_rel_err"] = jerr
        if jerr > 1e-8:
            rows["jax"]["status"] = f"WRONG (rel {jerr:.1e})"
        else:
            timing.add(rows["jax"], jb["run"], jb["block"])
    except ImportError as e:
        rows["jax"] = dict(status=f"missing ({e.name or e})")
    for r in rows.values():
        r.setdefault("status", "queued")
    timing.run()
    for tool, r in rows.items():
        log(f"  {name:10s} {tool:8s} {r['status']:8s} run {H._fmt_t(r.get('median')):>10s}  "
            f"first call {H._fmt_t(r.get('first_call')):>10s}")
    return dict(program=name, size=size, doc=prog.doc, tools=rows)


def report(results, meta, md_path, json_path):
    from benchmarks.lib import harness as H
    lines = ["# srcgrad loop benchmark (issue #18)", "",
             f"- date: {meta['date']}; mode: {meta['mode']}; wall time {meta['wall_s']} s",
             f"- machine: {meta['machine']}; one thread per tool (pinned to one CPU); the machine "
             "was shared with other jobs, so single ratios move by ~10-20 % between runs",
             f"- versions: {meta['versions']}", "",
             "Run time: median per value+gradient call (hand adjoint, srcgrad, JAX) or per primal "
             "call, tools timed interleaved. First call: srcgrad = transform + Numba compile + run "
             "(empty cache); hand/primal = compile of a fresh uncached `numba.njit` + run; JAX = "
             "trace + XLA compile + run.", "",
             "| program | size | primal | hand adjoint | srcgrad | JAX | srcgrad ÷ hand (≤1.3) | "
             "srcgrad ÷ primal (≤3; heat ≤4) | JAX ÷ srcgrad | first call: hand / srcgrad / JAX |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        t = res["tools"]
        med = {k: v.get("median") for k, v in t.items()}
        sh = med["srcgrad"] / med["hand"] if med.get("srcgrad") and med.get("hand") else None
        sp = med["srcgrad"] / med["primal"] if med.get("srcgrad") and med.get("primal") else None
        js = med["jax"] / med["srcgrad"] if med.get("jax") and med.get("srcgrad") else None
        tp = TARGET_PRIMAL.get(res["program"], 3.0)
        size = ",".join(f"{k}={v}" for k, v in res["size"].items())
        jax_cell = H._fmt_t(med.get("jax")) if med.get("jax") else t.get("jax", {}).get("status", "")
        lines.append(
            f"| {res['program']} | {size} | {H._fmt_t(med.get('primal'))} | {H._fmt_t(med.get('hand'))} | "
            f"{H._fmt_t(med.get('srcgrad'))} | {jax_cell} | "
            f"{H._fmt_x(sh)} {'✓' if sh is not None and sh <= TARGET_HAND else '✗'} | "
            f"{H._fmt_x(sp)} {'✓' if sp is not None and sp <= tp else '✗'} | {H._fmt_x(js)} | "
            f"{H._fmt_t(t['hand'].get('first_call'))} / {H._fmt_t(t['srcgrad'].get('first_call'))} / "
            f"{H._fmt_t(t.get('jax', {}).get('first_call'))} |")
    lines += ["", "JAX styles: " + "; ".join(
        f"{r['program']}: {r['tools']['jax'].get('style', r['tools']['jax'].get('status'))}"
        for r in results if "jax" in r["tools"]), ""]
    lines += meta.get("notes", [])
    md_path.write_text("\n".join(lines) + "\n")
    json_path.write_text(json.dumps(dict(meta=meta, results=results), indent=1, default=float))
    print("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller GMM/LSTM/heat, shorter timing")
    ap.add_argument("--tag", default="", help="report name suffix: loops_TAG.md")
    ap.add_argument("--programs", default=",".join(SIZES))
    ap.add_argument("--min-time", type=float, default=None)
    a = ap.parse_args(argv)
    _threads.setup_threads(1)
    os.environ["SRCGRAD_CACHE_DIR"] = tempfile.mkdtemp(prefix="srcgrad-loop-bench-")
    _threads.apply_runtime_threads(1)
    import platform
    import numpy
    import numba
    versions = f"numpy {numpy.__version__}, numba {numba.__version__}"
    try:
        import jax
        versions += f", jax {jax.__version__}"
    except ImportError:
        versions += ", jax not installed (JAX column empty)"
    sizes = QUICK if a.quick else SIZES
    min_time = a.min_time or (0.3 if a.quick else 1.0)
    t0 = time.perf_counter()
    results = []
    for name in a.programs.split(","):
        print(f"[{time.perf_counter() - t0:6.1f}s] {name} {sizes[name]}", flush=True)
        results.append(bench_program(name, sizes[name], min_time))
    import datetime
    meta = dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                mode="quick" if a.quick else "full", wall_s=round(time.perf_counter() - t0, 1),
                machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                versions=versions)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stem = "loops" + (f"_{a.tag}" if a.tag else "")
    report(results, meta, out / f"{stem}.md", out / f"{stem}.json")


if __name__ == "__main__":
    main()
