"""Compile before epoch 1 of ``examples/train_mnist.py`` (issue 17), cold and warm, fresh processes.

usage: python benchmarks/train_compile_bench.py [--rounds 2] [--optimizers momentum,sgd]
                                                [--out train_compile] [--helper both|off]

Each round runs, for each configuration (the compile-ahead helper on whatever the load,
``SRCGRAD_COMPILE_AHEAD=always``, on Linux a fork of the process; and off, ``=0``; order
alternated between rounds), a **cold** process (new, empty ``SRCGRAD_CACHE_DIR`` and
``NUMBA_CACHE_DIR``) and then a **warm** one (the same caches). Each process calls
``train_mnist.train(epochs=1, ...)`` on random data of MNIST's shape (2048 training and 256 test
samples; the compile does not depend on the data) with one thread, and reports the script's own
``compile_seconds`` (wall: gradient + loop; the accuracy counter, compiled in a thread during epoch
1, is ``accuracy_compile``: its compile's wall seconds and how long the first evaluation waited for
it; ``epoch_s``: epoch 1's training time), its CPU time (``compile_cpu_s``: this process's CPU
seconds in that compile, which a helper running alongside does not add to; ``cpu_s``: in the whole
``train()``), its helper processes' CPU time (``RUSAGE_CHILDREN``), and the functions Numba
compiled in it (``numba:compile`` events: they do not depend on the load). The machine's load
average is recorded at the start and end of each process: on a shared machine the wall clock is
inflated by other jobs, the CPU times much less. Each function's own CPU seconds (its compile less
its callees') are listed for the cold processes with the helper off (``functions`` in the JSON).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = r'''
import json, os, resource, sys, time
t0 = time.perf_counter()
import numpy as np
from srcgrad.compile_report import CompileRecorder
# each function's own CPU seconds: its compile event less the nested ones (its callees)
recorder = CompileRecorder().install()
sys.path.insert(0, os.path.join(os.getcwd(), "examples"))
import train_mnist as tm
imported = time.perf_counter() - t0
rng = np.random.default_rng(0)
arrays = (rng.random((2048, 784), dtype=np.float32), rng.integers(0, 10, 2048),
          rng.random((256, 784), dtype=np.float32), rng.integers(0, 10, 256))
compile_cpu = []
_compile_cpu = tm._compile_cpu
def _timed_compile(*a, **k):   # this process's CPU seconds in the compile before epoch 1
    c = time.process_time()
    try:
        return _compile_cpu(*a, **k)
    finally:
        compile_cpu.append(time.process_time() - c)
tm._compile_cpu = _timed_compile
cpu = time.process_time()
r = tm.train(epochs=1, arrays=arrays, quiet=True, threads=1, optimizer=sys.argv[1])
children = resource.getrusage(resource.RUSAGE_CHILDREN)
print("RESULT " + json.dumps({
    "compile": r["compile_seconds"], "compile_s": sum(r["compile_seconds"].values()),
    "cpu_s": time.process_time() - cpu,
    "compile_cpu_s": sum(compile_cpu), "helper_cpu_s": children.ru_utime + children.ru_stime,
    "compiled": [c["name"].rsplit(".", 1)[-1] for c in recorder.records],
    "functions": [[c["name"], c["args"], round(c["own_s"], 3)] for c in recorder.records],
    "import_s": imported, "train_loss": r["history"]["train_loss"][0],
    "test_acc": r["history"]["test_acc"][0], "epoch_s": r["history"]["seconds"][0],
    "accuracy_compile": r.get("accuracy_compile")}))
'''


def _child(optimizer, env):
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, optimizer], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    rec = {"error": proc.stderr[-800:]}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            rec = json.loads(line[7:])
    rec.update(process_s=time.perf_counter() - start, load_start=load, load_end=os.getloadavg()[0])
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--optimizers", default="momentum")
    ap.add_argument("--out", default="train_compile")
    ap.add_argument("--helper", choices=("both", "off"), default="both",
                    help="off: only SRCGRAD_COMPILE_AHEAD=0 (the default configuration)")
    a = ap.parse_args(argv)
    base = dict(os.environ, SRCGRAD_QUIET="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                MKL_NUM_THREADS="1")
    base.pop("PYTHONDONTWRITEBYTECODE", None)   # a user's install has its bytecode cache
    base.pop("NUMBA_OPT", None)
    runs = []
    for r in range(a.rounds):
        for optimizer in a.optimizers.split(","):
            configs = ("always", "0") if r % 2 == 0 else ("0", "always")
            for ahead in configs if a.helper == "both" else ("0",):
                tmp = tempfile.mkdtemp(prefix="srcgrad-train-compile-")
                env = dict(base, SRCGRAD_COMPILE_AHEAD=ahead,
                           SRCGRAD_CACHE_DIR=os.path.join(tmp, "srcgrad"),
                           NUMBA_CACHE_DIR=os.path.join(tmp, "numba"))
                for phase in ("cold", "warm"):
                    rec = dict(_child(optimizer, env), round=r, optimizer=optimizer, ahead=ahead,
                               phase=phase)
                    runs.append(rec)
                    print(_line(rec), flush=True)
                shutil.rmtree(tmp, ignore_errors=True)
    report = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count(), "runs": runs}
    with open(os.path.join(HERE, "results", a.out + ".json"), "w") as f:
        json.dump(report, f, indent=1)
    print(markdown(report))
    print(functions_markdown(report))


def _line(rec):
    if "compile_s" not in rec:
        return f"{rec['optimizer']} ahead={rec['ahead']} {rec['phase']}: error {rec['error']!r}"
    return (f"| {rec['round']} | {rec['optimizer']} | {'off' if rec['ahead'] == '0' else 'on'} | "
            f"{rec['phase']} | {rec['load_start']:.1f} / {rec['load_end']:.1f} | "
            f"{rec['compile_s']:.2f} ({rec['compile']['gradient']:.2f} + "
            f"{rec['compile']['loop']:.2f}) | {rec.get('compile_cpu_s', float('nan')):.2f} | "
            f"{rec['cpu_s']:.2f} | {rec['helper_cpu_s']:.2f} | "
            f"{len(rec['compiled'])} | {rec['train_loss']:.6f} | {_counter(rec)} |")


def _counter(rec):
    c = rec.get("accuracy_compile")
    return "before epoch 1" if not c else \
        f"{c['seconds']:.2f} / {c['waited']:.2f} (epoch {rec.get('epoch_s', float('nan')):.2f})"


def markdown(report):
    lines = [f"`benchmarks/train_compile_bench.py`, {report['date']}, {report['cpus']} CPUs", "",
             "| round | optimizer | helper | phase | load start / end | compile before epoch 1, "
             "wall s (gradient + rest) | its CPU s, this process | CPU s in train(), this "
             "process | CPU s, helper | functions compiled "
             "here | epoch-1 loss | accuracy counter in epoch 1: compile / waited s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_line(r) for r in report["runs"]]
    return "\n".join(lines) + "\n"


def functions_markdown(report):
    """The functions each cold process compiled (helper off), with their own CPU seconds."""
    lines = []
    for rec in report["runs"]:
        if rec.get("phase") != "cold" or rec.get("ahead") != "0" or "functions" not in rec:
            continue
        lines += ["", f"round {rec['round']}, {rec['optimizer']}, cold: {len(rec['functions'])} "
                  f"functions, {sum(f[2] for f in rec['functions']):.2f} s CPU in their compiles",
                  "", "| function | argument types | own CPU s |", "|---|---|---|"]
        lines += [f"| `{n}` | {a[:90]} | {t:.2f} |" for n, a, t in rec["functions"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
