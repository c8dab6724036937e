"""Forward mode and second order: srcgrad's ``jvp`` and ``hvp`` against the primal and against
JAX's ``jvp`` and ``hvp`` (``jax.jvp(jax.grad(f), ...)``), on Rosenbrock (loop), Lorenz-63 RK4
(loop) and the MLP loss (array program, float32), in one run.

usage: python benchmarks/forward_bench.py [--quick] [--threads 1] [--out forward]

Every result is checked first: srcgrad's and JAX's jvp against each other and a central finite
difference of the primal, the hvps against each other and a central finite difference of
srcgrad's gradient. Each tool is timed against its own compiled primal (srcgrad: the Numba primal
srcgrad generates; JAX: ``jax.jit(f)``), all rows of one program in interleaved rounds (see
harness.InterleavedTiming). Output: ``results/<out>.md`` and ``.json``.
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the benchmarks package and this checkout's srcgrad

from benchmarks.lib import _threads  # noqa: E402  (no heavy imports)

SIZES = {"rosenbrock": {"n": 1_000_000}, "lorenz": {"nsteps": 10_000}, "mlp": {"batch": 256}}
QUICK = {"rosenbrock": {"n": 10_000}, "lorenz": {"nsteps": 1000}, "mlp": {"batch": 64}}


def _directions(args, wrt, rng):
    import numpy as np
    return tuple(rng.standard_normal(np.shape(args[i])).astype(np.asarray(args[i]).dtype) for i in wrt)


def srcgrad_rows(prog, args, vs):
    import srcgrad
    wrt = prog.wrt if len(prog.wrt) > 1 else prog.wrt[0]
    tangent = vs if len(prog.wrt) > 1 else vs[0]
    jvp = srcgrad.jvp(prog.fn, wrt=wrt, target="cpu")
    hvp = srcgrad.hvp(prog.fn, wrt=wrt, target="cpu")
    grad = srcgrad.grad(prog.fn, wrt=wrt, target="cpu")
    primal = grad.specialize(*args).primal
    return {"primal": lambda: primal(*args), "jvp": lambda: jvp(*args, tangent)[1],
            "grad": lambda: grad(*args), "hvp": lambda: hvp(*args, tangent)}, jvp, hvp


def jax_rows(name, args, wrt, vs):
    import jax
    import jax.numpy as jnp
    from benchmarks.lib import peers_jax
    f = peers_jax._fns()[name]
    static = {"lorenz": (3,)}.get(name, ())
    jargs = [jnp.asarray(a) if hasattr(a, "shape") else a for a in args]
    # Every array reaches the jitted functions as an argument, the tangents included: XLA treats a
    # closed-over array as a constant and computes whatever depends on constants alone once, when
    # it compiles. With X and the tangent closed over, JAX's MLP jvp did X @ dW1 at compile time
    # (0.64 ms a call instead of 1.12 ms, load ~8). Python numbers (dt, nsteps) stay closed over.
    rest_at = [i for i in range(len(jargs)) if i not in wrt and hasattr(args[i], "shape")]
    rest = tuple(jargs[i] for i in rest_at)

    def at(xs, others):
        full = list(jargs)
        for i, x in zip(wrt, xs):
            full[i] = x
        for i, r in zip(rest_at, others):
            full[i] = r
        return full

    def grad_of(xs, others):
        return jax.grad(lambda *p: f(*at(p, others)), argnums=tuple(range(len(wrt))))(*xs)
    primals = tuple(jargs[i] for i in wrt)
    tangents = tuple(jnp.asarray(v) for v in vs)
    primal = jax.jit(f, static_argnums=static)
    jvp = jax.jit(lambda xs, ts, others: jax.jvp(lambda *p: f(*at(p, others)), xs, ts)[1])
    hvp = jax.jit(lambda xs, ts, others: jax.jvp(lambda *p: grad_of(p, others), xs, ts)[1])
    jgrad = jax.jit(grad_of)
    block = jax.block_until_ready
    return {"primal": lambda: block(primal(*jargs)), "jvp": lambda: block(jvp(primals, tangents, rest)),
            "grad": lambda: block(jgrad(primals, rest)), "hvp": lambda: block(hvp(primals, tangents, rest))}


def check(prog, args, vs, rows, jax_fns, log):
    """srcgrad's jvp/hvp against finite differences and JAX; raises on a mismatch."""
    import numpy as np
    import srcgrad
    args64 = tuple(a.astype(np.float64) if hasattr(a, "dtype") and a.dtype.kind == "f" else a for a in args)
    vs64 = tuple(v.astype(np.float64) for v in vs)
    h = 1e-6

    def moved(sign):
        out = list(args64)
        for i, v in zip(prog.wrt, vs64):
            out[i] = out[i] + sign * h * v
        return out
    fd = (prog.fn(*moved(1)) - prog.fn(*moved(-1))) / (2 * h)
    got = rows["jvp"]()
    # (central differences of a sum of 10^6 terms lose about 5 digits to cancellation; JAX's jvp,
    # exact in the same arithmetic, gets the tight check below)
    tol = 2e-3 if prog.float32 else 1e-4
    assert abs(got - fd) <= tol * max(1.0, abs(fd)), (prog.name, "jvp", got, fd)
    tol = 2e-3 if prog.float32 else 1e-9
    wrt = prog.wrt if len(prog.wrt) > 1 else prog.wrt[0]
    grad = srcgrad.grad(prog.fn, wrt=wrt, target="cpu")
    small = prog.float32 or prog.name == "lorenz"
    gp, gm = grad(*moved(1)), grad(*moved(-1))
    gp, gm = (gp,) if len(prog.wrt) == 1 else gp, (gm,) if len(prog.wrt) == 1 else gm
    hv = rows["hvp"]()
    hv = (hv,) if len(prog.wrt) == 1 else hv
    if prog.name != "mlp":      # (a random direction crosses ReLU kinks within +-h at batch 256:
        for a, p, m in zip(hv, gp, gm):     # the MLP's hvp is checked against JAX's only)
            fd_h = (np.asarray(p) - np.asarray(m)) / (2 * h)
            scale = max(1.0, float(np.max(np.abs(fd_h))))
            err = float(np.max(np.abs(np.asarray(a, dtype=np.float64) - fd_h))) / scale
            assert err < (2e-2 if small else 1e-5), (prog.name, "hvp", err)
    message = f"  {prog.name}: jvp {got:.6g} (FD {fd:.6g})"
    if jax_fns is not None:
        jj = float(jax_fns["jvp"]())
        jh = jax_fns["hvp"]()
        jh = (jh,) if not isinstance(jh, tuple) else jh
        rel = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) /
                  max(1.0, float(np.max(np.abs(np.asarray(b, np.float64))))) for a, b in zip(hv, jh))
        message += f", JAX jvp {jj:.6g}, hvp max rel. difference from JAX {rel:.1e}"
        assert abs(jj - got) <= tol * max(1.0, abs(jj)), (prog.name, "jvp vs JAX", got, jj)
        assert rel <= (1e-4 if prog.float32 else 1e-8), (prog.name, "hvp vs JAX", rel)
    log(message)


def _cpu_timed(fn, out):
    def run():
        start = time.process_time()
        result = fn()
        out.append(time.process_time() - start)
        return result
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of timing per row")
    parser.add_argument("--out", default="forward")
    parser.add_argument("--outdir", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    settings = _threads.setup_threads(args.threads)
    import numpy as np
    from benchmarks.lib import programs
    from benchmarks.lib.harness import InterleavedTiming
    try:
        import jax
        jax_version = jax.__version__
    except ImportError:
        jax_version = None
    sizes = QUICK if args.quick else SIZES
    load_start = os.getloadavg()
    results = []
    for name in ("rosenbrock", "lorenz", "mlp"):
        prog = programs.PROGRAMS[name]
        call_args = prog.make_args(sizes[name], np.random.default_rng(0))
        if prog.float32:
            call_args = programs.as_float32(call_args)
        vs = _directions(call_args, prog.wrt, np.random.default_rng(1))
        start = time.perf_counter()
        rows, _, _ = srcgrad_rows(prog, call_args, vs)
        for row in rows.values():       # compile (or load from the cache)
            row()
        compile_s = time.perf_counter() - start
        jax_fns = jax_rows(name, call_args, prog.wrt, vs) if jax_version else None
        check(prog, call_args, vs, rows, jax_fns, print)
        timing = InterleavedTiming(args.min_time)
        records = {}
        cpu = {}
        for tool, fns in (("srcgrad", rows), ("jax", jax_fns)):
            if fns is None:
                continue
            for what, fn in fns.items():
                cpu[(tool, what)] = []
                records[(tool, what)] = timing.add({"program": name, "tool": tool, "what": what,
                                                    "status": "queued"}, _cpu_timed(fn, cpu[(tool, what)]),
                                                   lambda out: out)
        timing.run()
        for (tool, what), record in records.items():
            record["ratio"] = record["median"] / records[(tool, "primal")]["median"]
            # CPU time of the process per call (every tool's threads pinned to one CPU): what the
            # call computed, less sensitive than wall time to the other jobs of a loaded machine
            record["cpu_median"] = float(np.median(cpu[(tool, what)][1:]))
            record["cpu_ratio"] = record["cpu_median"] / float(np.median(cpu[(tool, "primal")][1:]))
        row = {"program": name, "size": sizes[name], "dtype": "float32" if prog.float32 else "float64",
               "wrt": [prog.fn.__code__.co_varnames[i] for i in prog.wrt], "compile_s": compile_s,
               "records": list(records.values())}
        results.append(row)
        print(f"{name}: " + ", ".join(f"{r['tool']} {r['what']} {r['median'] * 1e3:.3f} ms ({r['ratio']:.2f}x)"
                                      for r in records.values()))
    meta = {"threads": settings, "loadavg_end": os.getloadavg(), "loadavg_start": load_start, "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor(), "jax": jax_version, "quick": args.quick,
            "numpy": np.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / f"{args.out}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    (outdir / f"{args.out}.md").write_text(report(results, meta))
    print(f"wrote {outdir / (args.out + '.md')}")


def rewrite(json_path):
    """Regenerate the Markdown report from a run's JSON (no timing)."""
    data = json.loads(Path(json_path).read_text())
    Path(json_path).with_suffix(".md").write_text(report(data["results"], data["meta"]))


def report(results, meta):
    lines = ["# Forward mode and second order: jvp and hvp against the primal and JAX", "",
             f"{meta['date']}; Python {meta['python']}, NumPy {meta['numpy']}, JAX {meta['jax']}; "
             f"threads/affinity {meta['threads'].get('cpu_affinity', '?')} (every tool pinned to one CPU)"
             + ("; --quick sizes" if meta["quick"] else "") + ".", "",
             "Each tool's times are divided by its own compiled primal (srcgrad: the Numba primal it "
             "generates; JAX: `jax.jit(f)`), all rows of one program timed in interleaved rounds. "
             "This is a shared 2-core machine with other jobs running: read the ratios, absolute "
             "times move between runs. Every result was checked before timing (jvp against central "
             "differences and JAX, hvp against central differences of the gradient and JAX). "
             "JAX runs Rosenbrock vectorized (jnp), Lorenz as `lax.fori_loop` (its reverse mode "
             "through the loop is what makes its grad and hvp slow there) and the MLP as jnp; its jitted "
             "functions take every array as an argument, the tangents included (closed over, they "
             "would be constants XLA folds at compile time: the MLP's X @ dW1).", "",
             "| program | dtype | wrt | srcgrad primal | jvp | grad | hvp | JAX primal | JAX jvp | JAX grad | JAX hvp |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results:
        rec = {(r["tool"], r["what"]): r for r in row["records"]}

        def cell(tool, what):
            r = rec.get((tool, what))
            if r is None or "median" not in r:
                return "—"
            t = r["median"]
            text = f"{t * 1e3:.3f} ms" if t < 1 else f"{t:.2f} s"
            if what == "primal":
                return text
            best = r["min"] / rec[(tool, "primal")]["min"]
            return f"{text} ({r['ratio']:.2f}×; fastest {best:.2f}×)"
        size = ", ".join(f"{k}={v}" for k, v in row["size"].items())
        lines.append(f"| {row['program']} ({size}) | {row['dtype']} | {', '.join(row['wrt'])} | "
                     + " | ".join(cell(t, w) for t in ("srcgrad", "jax") for w in ("primal", "jvp", "grad", "hvp")) + " |")
    lines += ["", "Ratios in parentheses: median time ÷ the same tool's median primal time, then fastest "
              "call ÷ fastest primal call (less sensitive to the other jobs on this machine). grad is "
              "the reverse-mode gradient, for scale. Issue 19's targets: jvp ≤ 2×, hvp ≤ 5× the primal.",
              ""]
    if any("cpu_ratio" in r for row in results for r in row["records"]):
        load = meta.get("loadavg_start"), meta.get("loadavg_end")
        lines += ["CPU time per call (the process's, all its threads; every tool pinned to one CPU) ÷ the "
                  "same tool's primal CPU time, medians: the work each call does, less sensitive than the "
                  "wall times above to the other jobs on this machine (load average "
                  + (f"{load[0][0]:.1f} at the start, {load[1][0]:.1f} at the end of the run" if load[0] else "?")
                  + ", 2 cores).", "",
                  "| program | jvp | grad | hvp | JAX jvp | JAX grad | JAX hvp |", "|---|---|---|---|---|---|---|"]
        for row in results:
            rec = {(r["tool"], r["what"]): r for r in row["records"]}
            cells = [f"{rec[(t, w)]['cpu_ratio']:.2f}×" if "cpu_ratio" in rec.get((t, w), {}) else "—"
                     for t in ("srcgrad", "jax") for w in ("jvp", "grad", "hvp")]
            lines.append(f"| {row['program']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
