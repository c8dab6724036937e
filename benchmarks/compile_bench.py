"""Compile latency of srcgrad's cpu target (issue 17), beside JAX's ``jit(grad(f)).lower().compile()``.

usage: python benchmarks/compile_bench.py [--quick] [--programs mlp,lorenz,...] [--out compile]

Every measurement runs in a fresh Python process:

* **cold**: new, empty ``SRCGRAD_CACHE_DIR`` and ``NUMBA_CACHE_DIR``; the child times
  ``import srcgrad``, srcgrad's transform (building the generated module's source, writing it and
  importing it: ``api.build_module`` + ``codegen.write_module`` + ``codegen.import_module``) and
  the first gradient call, which is Numba's compile plus one run (the run time, measured by a
  second call, is subtracted to give the compile time). Numba's compile is split by stage from
  Numba's own events (``numba.core.event``): ``typing`` is the time spent in the type-inference
  passes, ``lowering+LLVM`` in the ``NativeLowering`` pass (Numba IR -> LLVM IR, LLVM's
  optimisation and machine code: Numba finalises the code library inside that pass), ``other
  passes`` the remaining compiler passes; each pass's time is *exclusive* (a callee compiled
  while its caller is being typed counts for the callee's passes, not twice). ``compiles`` is the
  number of ``numba:compile`` events (one per function and signature compiled);
* **warm**: a second new process with the same two cache directories: import, then
  ``srcgrad.grad`` + first call, which should load everything from the caches (``compiles`` then
  counts what Numba still compiled);
* **JAX**: a new process times ``jax.jit(jax.grad(f)).lower(*args).compile()`` (tracing,
  lowering to StableHLO and XLA's compile) for the programs with a JAX version
  (``peers_jax.py``); ``import jax`` is timed separately.

Output: ``results/<out>.md`` and ``.json``. The machine is a shared 2-core box: the load average
at the start and end of the run is recorded beside the numbers.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)            # this checkout's srcgrad, not an installed one

# name -> (programs.py function, wrt, args builder name, JAX peer name or None)
PROGRAMS = {
    "mlp": "MNIST MLP loss 784-128-10 (float32, batch 64)",
    "gmm_vectorized": "vectorized GMM (d=10, K=25, n=1000)",
    "gmm_loops": "loop GMM (d=10, K=25, n=1000)",
    "lorenz": "Lorenz-63 RK4 (1000 steps)",
    "lstm": "LSTM with loops (T=100, D=16, H=32)",
    "heat": "1-D heat stencil (nx=128, nt=1000)",
}
JAX_NAME = {"mlp": "mlp", "gmm_vectorized": "gmm", "gmm_loops": "gmm", "lorenz": "lorenz",
            "lstm": "lstm", "heat": "heat"}


# ---------------------------------------------------------------------------------------------
# child processes
# ---------------------------------------------------------------------------------------------

def _program(name):
    """(function, wrt, args) of a benchmark program at its quick size."""
    from benchmarks.lib import programs as P
    if name == "gmm_vectorized":
        size = {"d": 10, "K": 25, "n": 1000}
        args = P.make_args(P.PROGRAMS["gmm"], size) + P.gmm_vectorized_index(size["K"], size["d"])
        return P.gmm_vectorized, (0, 1, 2), args
    prog = P.PROGRAMS["gmm" if name == "gmm_loops" else name]
    size = prog.sizes[prog.quick_sizes[0]]
    args = P.make_args(prog, size)
    if prog.float32:
        args = P.as_float32(args)
    wrt = prog.wrt[0] if len(prog.wrt) == 1 else tuple(prog.wrt)
    return prog.fn, wrt, args


class _StageTimes:
    """A Numba event listener: exclusive time per compiler pass, and compile counts."""

    def __init__(self):
        from numba.core import event
        self.event = event
        self.stack = []             # [pass name, start, time spent in nested passes]
        self.by_pass = {}
        self.compiles = 0
        self.compiled = []

    def on_start(self, ev):
        if ev.kind == "numba:compile":
            self.compiles += 1
            self.compiled.append(str(ev.data.get("dispatcher").py_func.__qualname__)
                                 if ev.data and ev.data.get("dispatcher") is not None else "?")
            return
        self.stack.append([ev.data["name"], time.perf_counter(), 0.0])

    def on_end(self, ev):
        if ev.kind == "numba:compile":
            return
        name, start, nested = self.stack.pop()
        spent = time.perf_counter() - start
        self.by_pass[name] = self.by_pass.get(name, 0.0) + spent - nested
        if self.stack:
            self.stack[-1][2] += spent

    def install(self):
        outer = self

        class L(self.event.Listener):
            def on_start(self, ev):
                outer.on_start(ev)

            def on_end(self, ev):
                outer.on_end(ev)

        self.listener = L()
        self.event.register("numba:run_pass", self.listener)
        self.event.register("numba:compile", self.listener)

    def stages(self):
        # pass events are named "<pass> [<function>]", e.g. "nopython_type_inference [f]"
        typing = sum(t for n, t in self.by_pass.items() if "type_inference" in n.split(" [")[0])
        lowering = sum(t for n, t in self.by_pass.items() if n.split(" [")[0] == "native_lowering")
        other = sum(self.by_pass.values()) - typing - lowering
        return {"typing_s": typing, "lowering_llvm_s": lowering, "other_passes_s": other,
                "compiles": self.compiles}


def child_srcgrad(name, phase):
    t0 = time.perf_counter()
    import numba  # noqa: F401
    t1 = time.perf_counter()
    stages = _StageTimes()         # from here: what the backend's import compiles counts too
    stages.install()
    import srcgrad
    from srcgrad import api, codegen
    assert os.path.dirname(os.path.dirname(srcgrad.__file__)) == ROOT, srcgrad.__file__
    t2 = time.perf_counter()
    import srcgrad.backends.cpu  # noqa: F401  (what every generated cpu module imports first)
    t2b = time.perf_counter()
    startup = 0.0
    if phase == "warm":
        # Numba's one-time start-up, which its first compile or cache load in a process does first
        # (its typing and target registries: ~30 of its modules, scipy.linalg, the NRT); any cached
        # @njit function pays it. Timed apart so that the warm first call shows srcgrad's own part.
        from numba.core.registry import cpu_target
        s = time.perf_counter()
        cpu_target.typing_context.refresh()
        cpu_target.target_context.refresh()
        startup = time.perf_counter() - s
    at_import = stages.stages()
    fn, wrt, args = _program(name)
    transform = [0.0]

    def timed(f):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                transform[0] += time.perf_counter() - start
        return wrapper

    api.build_module = timed(api.build_module)
    codegen.write_module = timed(codegen.write_module)
    codegen.import_module = timed(codegen.import_module)
    g = srcgrad.grad(fn, wrt=wrt)
    t3 = time.perf_counter()
    cpu3 = time.process_time()
    g(*args)
    t4 = time.perf_counter()
    first_cpu = time.process_time() - cpu3
    runs = []
    for _ in range(3):
        s = time.perf_counter()
        g(*args)
        runs.append(time.perf_counter() - s)
    run = min(runs)
    first = t4 - t3
    out = {"phase": phase, "import_numba_s": t1 - t0, "import_srcgrad_s": t2 - t1,
           "import_backend_s": t2b - t2, "numba_startup_s": startup,
           "transform_s": transform[0], "first_call_s": first, "first_call_cpu_s": first_cpu, "run_s": run,
           "compile_s": max(first - transform[0] - run, 0.0),
           **{k: v - at_import[k] for k, v in stages.stages().items()},
           "backend_compiles": at_import["compiles"],
           "compiled": sorted(set(stages.compiled)),
           "passes": {k: round(v, 4) for k, v in sorted(stages.by_pass.items(), key=lambda kv: -kv[1])[:8]}}
    print("RESULT " + json.dumps(out))


def child_jax(names):
    t0 = time.perf_counter()
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    import jax.numpy as jnp
    t1 = time.perf_counter()
    from benchmarks.lib import peers_jax
    fns = peers_jax._fns()
    out = {"import_jax_s": t1 - t0, "version": jax.__version__}
    for name in names:
        _, _, args = _program(name)
        jname = JAX_NAME[name]
        f = fns[jname]
        static = ()
        if jname == "lorenz":
            argnums, static = (0, 1), (3,)
            jargs = (jnp.asarray(args[0]), jnp.asarray(args[1]), args[2], args[3])
        elif jname == "heat":
            argnums, static = (0, 1), (2,)
            jargs = (jnp.asarray(args[0]), jnp.asarray(args[1]), args[2])
        elif jname == "gmm":
            rows, cols = peers_jax._gmm_tril_index(args[1].shape[1])
            argnums = (0, 1, 2)
            jargs = tuple(jnp.asarray(a) for a in args[:4]) + (args[4], args[5], jnp.asarray(rows),
                                                                jnp.asarray(cols))
        elif jname == "mlp":
            argnums = (0, 1, 2, 3)
            jargs = tuple(jnp.asarray(a, dtype=jnp.float32) for a in args[:5]) + (jnp.asarray(args[5]),)
        else:
            argnums = (0, 1, 2)
            jargs = tuple(jnp.asarray(a) for a in args)
        if jname in out:
            out[name] = out[jname]
            continue
        s = time.perf_counter()
        compiled = jax.jit(jax.grad(f, argnums=argnums), static_argnums=static).lower(*jargs).compile()
        t = time.perf_counter() - s
        dyn = tuple(a for i, a in enumerate(jargs) if i not in static)
        jax.block_until_ready(compiled(*dyn))
        out[name] = out[jname] = t
    print("RESULT " + json.dumps(out))


# ---------------------------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------------------------

def _run_child(argv, env, timeout):
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)] + argv, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (proc.stderr or proc.stdout)[-800:]}


def _load():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--programs", default=",".join(PROGRAMS))
    ap.add_argument("--out", default="compile")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--timeout", type=float, default=400.0, help="per child process (s)")
    ap.add_argument("--compare", default=None,
                    help="a JSON report of an earlier run (results/compile_before.json): add a "
                         "before/after table")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        if a.child[0] == "jax":
            return child_jax(a.child[1].split(","))
        return child_srcgrad(a.child[1], a.child[0])
    names = [n for n in a.programs.split(",") if n]
    env_base = dict(os.environ)
    env_base.update({k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                      "NUMBA_NUM_THREADS")})
    env_base.pop("SRCGRAD_QUIET", None)
    # Python's bytecode cache is part of a warm start: a process that may not write it compiles
    # srcgrad's ~60 modules from source at every import (~0.25 s)
    env_base.pop("PYTHONDONTWRITEBYTECODE", None)
    env_base["SRCGRAD_QUIET"] = "1"         # the benchmark's own output only
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    load_start = _load()
    records = {}
    for name in names:
        tmp = tempfile.mkdtemp(prefix=f"srcgrad-compile-{name}-")
        env = dict(env_base, SRCGRAD_CACHE_DIR=os.path.join(tmp, "srcgrad"),
                   NUMBA_CACHE_DIR=os.path.join(tmp, "numba"))
        rec = {}
        for phase in ("cold", "warm"):
            s = time.perf_counter()
            try:
                rec[phase] = _run_child(["--child", phase, name], env, a.timeout)
            except subprocess.TimeoutExpired:
                rec[phase] = {"error": f"timed out after {a.timeout:.0f} s"}
            rec[phase]["process_s"] = time.perf_counter() - s
            print(name, phase, json.dumps({k: v for k, v in rec[phase].items()
                                           if k not in ("passes", "compiled")}), flush=True)
        records[name] = rec
        shutil.rmtree(tmp, ignore_errors=True)
    jax_rec = {}
    if not a.no_jax:
        try:
            jax_rec = _run_child(["--child", "jax", ",".join(names)], env_base, a.timeout)
        except subprocess.TimeoutExpired:
            jax_rec = {"error": "timed out"}
        print("jax", json.dumps(jax_rec), flush=True)
    report = {"date": started, "load_avg_start": load_start, "load_avg_end": _load(),
              "cpus": os.cpu_count(), "machine": platform.platform(), "python": sys.version.split()[0],
              "programs": PROGRAMS, "srcgrad": records, "jax": jax_rec}
    write(report, names, a.out, a.compare)


def write(report, names, out, compare=None):
    outdir = os.path.join(HERE, "results")
    with open(os.path.join(outdir, out + ".json"), "w") as f:
        json.dump(report, f, indent=1)
    text = markdown(report, names)
    if compare:
        with open(compare if os.path.isabs(compare) else os.path.join(outdir, compare)) as f:
            text += comparison(json.load(f), report, names, os.path.basename(compare))
    with open(os.path.join(outdir, out + ".md"), "w") as f:
        f.write(text)
    print(text)


def _cold_total(c):
    """Seconds from a new process with empty caches to the first gradient: backend import and
    first call (the transform, the compile and one run)."""
    return c["import_backend_s"] + c["first_call_s"]


def _warm_total(w):
    return w["import_backend_s"] + w.get("numba_startup_s", 0.0) + w["first_call_s"]


def comparison(before, after, names, label):
    lines = ["", f"## Before / after (before: `{label}`, {before['date']}, load {_s(before['load_avg_start'])}"
             f" / {_s(before['load_avg_end'])})", "",
             "Cold = import backend + first call (transform and compile included); warm = import backend "
             "+ first call, in a new process with the caches. Functions compiled: `numba:compile` events "
             "in the cold process (backend import + first call; each a function and signature), which "
             "do not depend on the load. Both runs on the same shared machine, at different loads: "
             "seconds differ by tens of percent between runs of the same code.", "",
             "| program | cold before | cold after | Numba compile before | after | functions compiled "
             "before | after | warm before | warm after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        b, a = before["srcgrad"].get(name, {}), after["srcgrad"].get(name, {})
        try:
            lines.append(f"| {PROGRAMS[name]} | {_s(_cold_total(b['cold']))} | {_s(_cold_total(a['cold']))} | "
                         f"{_s(b['cold']['compile_s'])} | {_s(a['cold']['compile_s'])} | "
                         f"{b['cold']['compiles'] + b['cold']['backend_compiles']} | "
                         f"{a['cold']['compiles'] + a['cold']['backend_compiles']} | "
                         f"{_s(_warm_total(b['warm']))} | {_s(_warm_total(a['warm']))} |")
        except KeyError:
            lines.append(f"| {PROGRAMS[name]} | (missing or failed run) |")
    return "\n".join(lines) + "\n"


def _s(v):
    return "" if v is None else f"{v:.2f}"


def markdown(report, names):
    lines = [f"# srcgrad compile latency (issue 17)", "",
             f"- date: {report['date']}; {report['cpus']} CPUs, {report['machine']}, Python {report['python']}",
             f"- load average (1 min) at start / end: {_s(report['load_avg_start'])} / "
             f"{_s(report['load_avg_end'])} — a shared machine: times are inflated by other jobs",
             "- every column from fresh processes (`benchmarks/compile_bench.py`); cold = empty srcgrad "
             "and Numba caches, warm = a new process with the same caches. Seconds.", "",
             "| program | import backend (cold / warm) | transform | Numba compile | typing | lowering+LLVM "
             "| other passes | compiles | cold first call | its CPU time | run | warm first call | warm compiles | "
             "JAX lower+compile |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        rec = report["srcgrad"][name]
        c, w = rec.get("cold", {}), rec.get("warm", {})
        if "error" in c:
            lines.append(f"| {name} | error: {c['error'][-200:]!r} |")
            continue
        jx = report["jax"].get(name) if isinstance(report["jax"], dict) else None
        lines.append(
            f"| {PROGRAMS[name]} | {_s(c.get('import_backend_s'))} / {_s(w.get('import_backend_s'))} "
            f"| {_s(c.get('transform_s'))} | {_s(c.get('compile_s'))} | "
            f"{_s(c.get('typing_s'))} | {_s(c.get('lowering_llvm_s'))} | {_s(c.get('other_passes_s'))} | "
            f"{c.get('compiles')} | {_s(c.get('first_call_s'))} | {_s(c.get('first_call_cpu_s'))} | "
            f"{c.get('run_s', 0) * 1e3:.2f} ms | "
            f"{_s(w.get('first_call_s', 0) + w.get('numba_startup_s', 0) if 'first_call_s' in w else None)} | "
            f"{w.get('compiles')} | "
            f"{_s(jx) if isinstance(jx, float) else '—'} |")
    jx = report["jax"]
    if isinstance(jx, dict) and "import_jax_s" in jx:
        lines += ["", f"JAX {jx.get('version')}: `import jax` {jx['import_jax_s']:.2f} s (not in the "
                  "column); the JAX GMM is its vectorized version, for both GMM rows."]
    lines += ["", "Import backend: `import srcgrad.backends.cpu` (which every generated module imports; "
              "before the cuts it compiled, or loaded, the 16 loops of the SciPy library ufuncs, and "
              "with them Numba's one-time start-up, which the warm first call now pays); transform: srcgrad's source "
              "generation, writing and importing the generated module (warm: importing it). "
              "Its CPU time: the cold first call's CPU time in its process (`time.process_time()`; less "
              "disturbed by the load than the wall clock). "
              "Typing / lowering+LLVM / other passes: exclusive time in Numba's compiler passes "
              "(`numba:run_pass` events); Numba compile = first call − transform − run."]
    return "\n".join(lines) + "\n" + warm_split(report, names)


def warm_split(report, names):
    """The warm process by step: srcgrad's part is import srcgrad + import backend + first call."""
    lines = ["", "Warm start by step (a new process with both caches; seconds): Numba start-up = its typing "
             "and target registries, which its first compile or cache load in any process sets up "
             "(a cached `@njit` function pays it too); first call = srcgrad's cache look-up, importing "
             "the generated module, Numba's cache load, one run.", "",
             "| program | import numba | import srcgrad | import backend | Numba start-up | first call "
             "| srcgrad's part | compiles |", "|---|---|---|---|---|---|---|---|"]
    for name in names:
        w = report["srcgrad"][name].get("warm", {})
        if "first_call_s" not in w:
            continue
        own = w["import_srcgrad_s"] + w["import_backend_s"] + w["first_call_s"]
        lines.append(f"| {PROGRAMS[name]} | {_s(w['import_numba_s'])} | {_s(w['import_srcgrad_s'])} | "
                     f"{_s(w['import_backend_s'])} | {_s(w.get('numba_startup_s'))} | "
                     f"{_s(w['first_call_s'])} | {_s(own)} | {w.get('compiles')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
