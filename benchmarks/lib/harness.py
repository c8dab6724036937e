"""Benchmark machinery: building each tool, checking its gradient, timing, reports, plots.

Import only after ``_threads.setup_threads`` has run.
"""

import datetime
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import adjoints
from . import checks
from . import programs as P

HERE = Path(__file__).resolve().parents[1]     # benchmarks/
RESULTS = HERE / "results"

# tool id -> (label, module name or None)
PEERS = [
    ("jax", "benchmarks.lib.peers_jax"),
    ("torch", "benchmarks.lib.peers_torch"),
    ("autograd", "benchmarks.lib.peers_autograd"),
    ("numpy-hand", "benchmarks.lib.peers_numpy"),
]
PEER_PACKAGE = {"jax": "jax", "torch": "torch", "autograd": "autograd", "numpy-hand": "numpy"}
# Peers whose cost per call is interpretive (eager): probe a shortened problem first.
PROBED = {"torch", "autograd"}
SHRINK = {"rosenbrock": ("n", 100), "lorenz": ("nsteps", 20), "heat": ("nt", 20),
          "lstm": ("T", 10), "gmm": ("n", 10), "mlp": ("batch", 1)}


def short_error(e, n=120):
    msg = str(e).strip().splitlines()
    msg = msg[0] if msg else ""
    s = f"{type(e).__name__}: {msg}"
    return s if len(s) <= n else s[:n - 3] + "..."


class InterleavedTiming:
    """Rows of one configuration timed together, in rounds: each round gives every tool a slice
    (up to min_time/rounds seconds, at most max_reps/rounds calls) in turn. Timing the tools one
    after another let a drift of this noisy machine (clock, the other core's jobs) land on one
    tool only; interleaved, it hits all of them alike and the ratios stay fair. Each tool's
    stopping rule: at least min_reps calls and min_time seconds, at most max_reps.
    """

    def __init__(self, min_time, rounds=5, min_reps=3, max_reps=100):
        self.min_time, self.rounds = min_time, rounds
        self.min_reps, self.max_reps = min_reps, max_reps
        self.rows = []      # [record, run, block, warmup, times]

    def add(self, record, run, block, warmup=1):
        """Queue ``record`` (a row dict) to get the timing stats of ``block(run())``."""
        self.rows.append([record, run, block, warmup, []])
        return record

    def _wants_more(self, times):
        total = sum(times)
        return ((len(times) < self.min_reps or total < self.min_time)
                and len(times) < self.max_reps)

    def run(self, log_row=lambda record: None):
        """Time every queued row; fill in its stats (or a 'failed while timing' status)."""
        live = []
        for row in self.rows:
            record, run, block, warmup, _ = row
            try:
                for _ in range(warmup):
                    block(run())
                live.append(row)
            except Exception as e:      # noqa: BLE001  (a failing tool is a row, not a crash)
                record["status"] = "failed while timing: " + short_error(e)
        slice_s = self.min_time / self.rounds
        slice_reps = max(1, math.ceil(self.max_reps / self.rounds))
        while live:
            for row in list(live):
                record, run, block, _, times = row
                spent, reps = 0.0, 0
                try:
                    while self._wants_more(times) and reps < slice_reps and (
                            reps == 0 or spent < slice_s):
                        t0 = time.perf_counter()
                        block(run())
                        dt = time.perf_counter() - t0
                        times.append(dt)
                        spent += dt
                        reps += 1
                except Exception as e:      # noqa: BLE001
                    record["status"] = "failed while timing: " + short_error(e)
                    live.remove(row)
                    continue
                if not self._wants_more(times):
                    live.remove(row)
        for record, _, _, _, times in self.rows:
            if record["status"] == "queued":
                record["status"] = "ok"
                record.update(_stats(times))
            log_row(record)


def _stats(times):
    return dict(median=float(np.median(times)), min=float(np.min(times)),
                max=float(np.max(times)), reps=len(times))


# ----------------------------------------------------------------------------------------------
# srcgrad
# ----------------------------------------------------------------------------------------------

def _wrt_arg(prog):
    return prog.wrt[0] if len(prog.wrt) == 1 else tuple(prog.wrt)


def _norm_grads(out, nwrt):
    if nwrt == 1 and not isinstance(out, (tuple, list)):
        out = (out,)
    return tuple(np.asarray(o, dtype=np.float64) for o in out)


def build_srcgrad(prog, args):
    """Transform + compile + first call (timed). Raises whatever srcgrad raises.
    ``args`` are the timed arguments (float32 copies for ``prog.float32``)."""
    t0 = time.perf_counter()
    import srcgrad
    t_import = time.perf_counter() - t0
    if not hasattr(srcgrad, "grad"):
        raise AttributeError("module 'srcgrad' has no attribute 'grad'")
    t0 = time.perf_counter()
    g = srcgrad.grad(prog.fn, wrt=_wrt_arg(prog))
    out = g(*args)
    first = time.perf_counter() - t0
    nw = len(prog.wrt)
    return dict(run=lambda: g(*args), block=lambda o: o,
                to_numpy=lambda o: _norm_grads(o, nw), style="srcgrad.grad (Numba target)",
                rtol=1e-4 if prog.float32 else 1e-8, first_call=first, import_s=t_import,
                first_out=out)


def srcgrad_cache_load(prog_name, size, seed, timeout=300):
    """Second process: import srcgrad, build the gradient, call it once (cache must be warm)."""
    cmd = [sys.executable, str(HERE / "_cache_probe.py"), prog_name, json.dumps(size), str(seed)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=os.environ)
    except subprocess.TimeoutExpired:
        return {"status": "failed: timeout"}
    for line in reversed(r.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    err = (r.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": f"failed: {err[:120]}"}


# ----------------------------------------------------------------------------------------------
# One program at one size
# ----------------------------------------------------------------------------------------------

def _shrunk_args(prog, size, seed):
    if prog.name not in SHRINK:
        return None, 1.0
    key, fac = SHRINK[prog.name]
    small = dict(size)
    small[key] = max(2, int(size[key] // fac))
    return P.make_args(prog, small, seed), size[key] / small[key]


def bench_config(prog, size_label, size, cfg, tools=None, log=print):
    """Benchmark every tool on one program size.  Returns a list of record dicts."""
    seed = cfg.get("seed", 0)
    args = P.make_args(prog, size, seed)
    timed_args = P.as_float32(args) if prog.float32 else args   # what every tool is timed on
    min_time = cfg["min_time"]
    budget = cfg["budget"]
    tools = tools or cfg.get("tools") or ["primal", "hand-numba", "srcgrad", "jax", "torch",
                                          "autograd", "numpy-hand"]
    recs = []
    base = dict(program=prog.name, size=size_label, work=float(prog.work(size)))
    timing = InterleavedTiming(min_time)

    def log_row(r):
        t = r.get("median")
        log(f"  {prog.name:12s} {size_label:20s} {r['tool']:11s} {r['status']:40.40s} "
            + (f"{t * 1e3:10.3f} ms" if t is not None else ""))

    def rec(tool, style, status, **kw):
        r = dict(base, tool=tool, style=style, status=status)
        r.update(kw)
        recs.append(r)
        if status != "queued":
            log_row(r)
        return r

    def queue(tool, style, run, block, warmup=1, **kw):
        return timing.add(rec(tool, style, "queued", **kw), run, block, warmup)

    # reference: hand-written Numba adjoint, checked against central FD
    t0 = time.perf_counter()
    val, ref = adjoints.hand_value_and_grad(prog.name, args)
    hand_first = time.perf_counter() - t0
    primal_fn = None
    primal_style = "numba.njit(user function)"
    try:
        primal_fn = adjoints.njit_user(prog.fn)
        t0 = time.perf_counter()
        pv = primal_fn(*args)
        primal_first = time.perf_counter() - t0
    except Exception as e:
        if prog.name in adjoints.PRIMAL_FALLBACK:
            primal_style = (f"numba.njit of an adapted copy (user fn does not njit: "
                            f"{short_error(e, 60)})")
            primal_fn = adjoints.PRIMAL_FALLBACK[prog.name]
            t0 = time.perf_counter()
            pv = primal_fn(*args)
            primal_first = time.perf_counter() - t0
        else:
            primal_fn = None
            rec("primal", primal_style, "failed: " + short_error(e))
    fd_f = primal_fn if primal_fn is not None else prog.fn
    ok, err, fd, ad = checks.fd_check(fd_f, args, prog.wrt, ref, rtol=cfg.get("fd_rtol", prog.fd_rtol))
    check_info = dict(fd_rel_err=err, fd=fd, ad=ad, value=val)
    ref_ok = ok
    primal_median = None
    if primal_fn is not None and "primal" in tools:
        if not np.isclose(pv, val, rtol=1e-9, atol=1e-12):
            rec("primal", primal_style, f"WRONG value {pv} vs {val}")
        else:
            queue("primal", primal_style, lambda: primal_fn(*timed_args), lambda o: o,
                  first_call=primal_first)
    if "hand-numba" in tools:
        hand_style = "hand-written Numba adjoint (reference)"
        if ref_ok:
            queue("hand-numba", hand_style, lambda: adjoints.ADJOINTS[prog.name](*timed_args),
                  lambda o: o, first_call=hand_first, fd_check=check_info)
        else:
            rec("hand-numba", hand_style, f"WRONG vs FD (rel err {err:.1e})",
                first_call=hand_first, fd_check=check_info)

    for tool in tools:
        if tool in ("primal", "hand-numba"):
            continue
        if tool == "srcgrad":
            try:
                b = build_srcgrad(prog, timed_args)
            except ImportError as e:
                rec(tool, "srcgrad.grad", "missing: " + short_error(e))
                continue
            except Exception as e:
                rec(tool, "srcgrad.grad", "failed: " + short_error(e))
                continue
        else:
            mod_name = dict(PEERS).get(tool)
            if mod_name is None:
                continue
            try:
                importlib.import_module(PEER_PACKAGE[tool])
            except ImportError:
                rec(tool, "", "missing")
                continue
            mod = importlib.import_module(mod_name)
            if prog.name not in getattr(mod, "STYLE", {}):
                continue
            style = mod.STYLE[prog.name]
            if tool in PROBED and prog.name in SHRINK:
                try:
                    sargs, fac = _shrunk_args(prog, size, seed)
                    sb = mod.build(prog.name, sargs)
                    sb["block"](sb["run"]())
                    t0 = time.perf_counter()
                    sb["block"](sb["run"]())
                    est = (time.perf_counter() - t0) * fac
                    if est > budget:
                        rec(tool, style, f"skipped (>budget {budget:g}s: est {est:.1f} s/call)",
                            est_s=est)
                        continue
                except Exception as e:
                    rec(tool, style, "failed: " + short_error(e))
                    continue
            try:
                t0 = time.perf_counter()
                b = mod.build(prog.name, timed_args if tool == "numpy-hand" else args)
                out = b["run"]()
                b["block"](out)
                b["first_call"] = time.perf_counter() - t0
                b["first_out"] = out
            except Exception as e:
                rec(tool, style, "failed: " + short_error(e))
                continue
        try:
            got = b["to_numpy"](b["first_out"])
            okg, gerr, msg = checks.compare_grads(got, ref, b["rtol"])
        except Exception as e:
            okg, gerr, msg = False, float("nan"), short_error(e)
        extra = {"first_call": b["first_call"], "grad_rel_err": gerr}
        if tool == "srcgrad":
            extra["import_s"] = b.get("import_s")
        if not okg:
            rec(tool, b["style"], f"WRONG ({msg})", **extra)
            continue
        if b["first_call"] > budget * 3 and tool != "srcgrad" and tool != "jax":
            rec(tool, b["style"], f"skipped (>budget: first call {b['first_call']:.1f} s)",
                **extra)
            continue
        queue(tool, b["style"], b["run"], b["block"], warmup=0 if tool in PROBED else 1, **extra)

    timing.run(log_row)
    primal_median = next((r["median"] for r in recs
                          if r["tool"] == "primal" and r["status"] == "ok"), None)
    sg = next((r for r in recs if r["tool"] == "srcgrad" and r["status"] == "ok"), None)
    if (sg is not None and cfg.get("cache_probe", True)
            and prog.name in cfg.get("cache_probe_programs", (prog.name,))):
        cl = srcgrad_cache_load(prog.name, size, seed)
        sg["cache_load"] = cl
        log(f"    srcgrad second-process load: {cl}")

    # ratios
    for r in recs:
        if r.get("median") is None:
            continue
        if sg is not None:
            r["x_srcgrad"] = r["median"] / sg["median"]
        if primal_median and r["tool"] != "primal":
            r["grad_over_primal"] = r["median"] / primal_median
    return recs


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------

def machine_info(threads, thread_env, runtime_threads):
    info = dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                platform=platform.platform(), python=platform.python_version(),
                cpu_count=os.cpu_count(), threads=threads, thread_env=thread_env,
                runtime_threads=runtime_threads)
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    vers = {}
    for mod in ("numpy", "numba", "scipy", "jax", "jaxlib", "torch", "autograd", "matplotlib",
                "srcgrad"):
        try:
            import importlib.metadata as md
            vers[mod] = md.version(mod)
        except Exception:
            vers[mod] = "missing"
    info["versions"] = vers
    try:
        import numpy as _np
        cfg = _np.show_config(mode="dicts")
        info["numpy_blas"] = cfg.get("Build Dependencies", {}).get("blas", {}).get("name")
    except Exception:
        pass
    return info


def _fmt_t(t):
    if t is None:
        return ""
    if t >= 1.0:
        return f"{t:.3f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.3f} ms"
    return f"{t * 1e6:.1f} µs"


def _fmt_x(x):
    return "" if x is None else f"{x:.2f}×"


def write_report(results, meta, md_path, json_path=None, plots=None, title="srcgrad benchmarks"):
    """Write the markdown (and JSON) report.  results: dict with keys 'programs' (list of
    records), optional 'mnist' (list), 'core' (list)."""
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    L = [f"# {title}", ""]
    L.append(f"- date: {meta.get('date')}  ")
    L.append(f"- mode: {meta.get('mode')}  ")
    L.append(f"- machine: {meta.get('cpu', '?')}, {meta.get('cpu_count')} logical CPUs, "
             f"{meta.get('platform')}  ")
    L.append(f"- threads: **{meta.get('threads')}** for every tool; env: "
             f"`{json.dumps(meta.get('thread_env', {}))}`; runtime: "
             f"`{json.dumps(meta.get('runtime_threads', {}))}`  ")
    v = meta.get("versions", {})
    L.append("- versions: " + ", ".join(f"{k} {v[k]}" for k in v) + "  ")
    if meta.get("numpy_blas"):
        L.append(f"- numpy BLAS: {meta['numpy_blas']}  ")
    L.append("")
    L.append("Times are per gradient call (value+gradient), median over repeated runs after a "
             "warm-up (min/max alongside); the tools of one size are timed in interleaved rounds "
             "(a slice of each in turn), so a drift of the machine hits them alike. `× srcgrad` = tool time / srcgrad time in the same "
             "run (>1: slower than srcgrad). `grad/primal` = tool time / compiled primal "
             "(numba.njit of the same user function). Every gradient was checked against the "
             "hand-written Numba adjoint (itself checked against central finite differences "
             "along a random direction) before it was timed; a mismatch shows as WRONG and is "
             "not timed.")
    L.append("")
    recs = results.get("programs", [])
    progs = []
    for r in recs:
        if r["program"] not in progs:
            progs.append(r["program"])
    for pname in progs:
        prog = P.ALL_PROGRAMS.get(pname)
        L.append(f"## {pname}")
        L.append("")
        if prog is not None:
            L.append(prog.doc + f" dtype: {prog.dtype_note}.")
            L.append("")
        sizes = []
        for r in recs:
            if r["program"] == pname and r["size"] not in sizes:
                sizes.append(r["size"])
        for s in sizes:
            L.append(f"### {pname}, {s}")
            L.append("")
            L.append("| tool | style | status | median | min | max | reps | first call | "
                     "× srcgrad | grad/primal |")
            L.append("|---|---|---|---|---|---|---|---|---|---|")
            for r in recs:
                if r["program"] != pname or r["size"] != s:
                    continue
                L.append("| " + " | ".join([
                    r["tool"], r.get("style", ""), r["status"].replace("|", "/"),
                    _fmt_t(r.get("median")), _fmt_t(r.get("min")), _fmt_t(r.get("max")),
                    str(r.get("reps", "")), _fmt_t(r.get("first_call")),
                    _fmt_x(r.get("x_srcgrad")), _fmt_x(r.get("grad_over_primal"))]) + " |")
            ref = next((r for r in recs if r["program"] == pname and r["size"] == s
                        and r["tool"] == "hand-numba"), None)
            if ref and ref.get("fd_check"):
                L.append("")
                L.append(f"Reference check: hand adjoint vs central FD along a random direction: "
                         f"rel. err {ref['fd_check']['fd_rel_err']:.1e}.")
            sg = next((r for r in recs if r["program"] == pname and r["size"] == s
                       and r["tool"] == "srcgrad"), None)
            if sg is not None:
                cl = sg.get("cache_load")
                line = f"srcgrad compile cost: first call (transform + compile + run) " \
                       f"{_fmt_t(sg.get('first_call')) or 'n/a'}"
                if cl:
                    if "load_s" in cl:
                        line += (f"; second process (cache load: build + first call) "
                                 f"{_fmt_t(cl['load_s'])}, incl. `import srcgrad` "
                                 f"{_fmt_t(cl.get('total_s'))}")
                    else:
                        line += f"; second process: {cl.get('status')}"
                L.append("")
                L.append(line + ".")
            L.append("")
        if plots and pname in plots:
            L.append(f"![{pname}]({plots[pname]})")
            L.append("")
    mn = results.get("mnist")
    if mn:
        L.append("## MNIST training (784-128-10 MLP, SGD, float32)")
        L.append("")
        L.append(results.get("mnist_note", ""))
        L.append("")
        L.append("| tool | batch | status | s/epoch | measured on | × srcgrad |")
        L.append("|---|---|---|---|---|---|")
        for r in mn:
            spe = r.get("s_per_epoch")
            spe = "" if spe is None else f"{spe:.3f}"
            L.append(f"| {r['tool']} | {r['batch']} | {r['status'].replace('|', '/')} | {spe} | "
                     f"{r.get('measured', '')} | {_fmt_x(r.get('x_srcgrad'))} |")
        L.append("")
    notes = results.get("notes")
    if notes:
        L.append("## Notes")
        L.append("")
        for n in notes:
            L.append(f"- {n}")
        L.append("")
    md_path.write_text("\n".join(L))
    if json_path:
        Path(json_path).write_text(json.dumps(dict(meta=meta, **results), indent=1,
                                              default=_json_default))
    return md_path


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def make_plots(recs, outdir, rel_to):
    """Time vs problem size (log-log), one line per tool; returns {program: relative path}."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {}
    progs = sorted({r["program"] for r in recs})
    for pname in progs:
        rs = [r for r in recs if r["program"] == pname and r.get("median") is not None]
        if not rs:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for tool in dict.fromkeys(r["tool"] for r in rs):
            pts = sorted((r["work"], r["median"]) for r in rs if r["tool"] == tool)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=tool)
        labels = {}
        for r in rs:
            labels[r["work"]] = r["size"]
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(list(labels))
        ax.set_xticklabels(list(labels.values()), fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("problem size")
        ax.set_ylabel("seconds per gradient (median)")
        ax.set_title(pname)
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = outdir / f"{pname}.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths[pname] = os.path.relpath(p, rel_to)
    return paths
