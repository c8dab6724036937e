"""The README's MNIST accuracy claims, reproduced: full 10-epoch runs of examples/train_mnist.py.

    python benchmarks/mnist_accuracy.py [--data DIR] [--epochs 10] [--out mnist_accuracy]

Runs the script twice in fresh processes, as a user would: the default configuration (SGD with
momentum 0.9, lr 0.1 decayed by 0.8 per epoch, batch 64, float32) and the plain-SGD reference
(``--optimizer sgd --lr 0.01 --lr-decay 1.0``). Writes ``benchmarks/results/<out>.md`` with the
machine, the commit, each command line, its complete output (compile time and every epoch's
loss and accuracy) and a summary table of the final test accuracies; ``<out>.json`` holds the
same numbers. MNIST comes from ``--data``, ``$SRCGRAD_DATA`` or ``../shared/data/mnist``.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_mnist.py"
RUNS = [
    ("default: SGD + momentum 0.9, lr 0.1, decay 0.8", []),
    ("plain SGD reference: lr 0.01, no decay", ["--optimizer", "sgd", "--lr", "0.01",
                                                 "--lr-decay", "1.0"]),
]
EPOCH_LINE = re.compile(r"^epoch\s+\d+/\d+ .*  test acc\s+([0-9.]+)%")   # train_mnist._epoch_line


def data_dir(arg):
    if arg:
        return Path(arg)
    if os.environ.get("SRCGRAD_DATA"):
        return Path(os.environ["SRCGRAD_DATA"])
    return ROOT.parent / "shared" / "data" / "mnist"


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               text=True, capture_output=True).stdout.strip()
        return out + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def test_accuracies(output):
    """Per-epoch test accuracies (fractions) read from the script's epoch lines."""
    accs = []
    for line in output.splitlines():
        m = EPOCH_LINE.search(line)
        if m:
            accs.append(float(m.group(1)) / 100.0)
    return accs


def run_one(extra, data, epochs, cache_dir):
    cmd = [sys.executable, str(SCRIPT), "--data", str(data), "--no-download",
           "--epochs", str(epochs)] + extra
    env = dict(os.environ, SRCGRAD_CACHE_DIR=cache_dir)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    return cmd, proc.stdout, wall          # stderr: only the progress bars


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", default="mnist_accuracy")
    args = p.parse_args(argv)
    data = data_dir(args.data)
    results = []
    # one fresh cache for both runs (the second loads the compiled gradient, as a user's would)
    with tempfile.TemporaryDirectory(prefix="srcgrad-acc-") as cache_dir:
        for label, extra in RUNS:
            cmd, output, wall = run_one(extra, data, args.epochs, cache_dir)
            accs = test_accuracies(output)
            if len(accs) != args.epochs:
                raise SystemExit(f"expected {args.epochs} epoch lines, read {len(accs)}:\n{output}")
            command = " ".join(["python"] + cmd[1:]).replace(str(ROOT) + "/", "")
            results.append(dict(label=label, command=command, output=output, wall_s=round(wall, 1),
                                test_acc=accs))
            print(f"{label}: final test accuracy {accs[-1] * 100:.2f}% ({wall:.0f} s)", flush=True)
    header = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), commit=git_commit(),
                  python=platform.python_version(), machine=f"{platform.machine()}, "
                  f"{os.cpu_count()} CPUs", load_average=[round(x, 2) for x in os.getloadavg()])
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{args.out}.json").write_text(json.dumps(dict(header, runs=[
        {k: v for k, v in r.items() if k != "output"} for r in results]), indent=1) + "\n")
    lines = [f"# MNIST test accuracy: {args.epochs}-epoch runs of examples/train_mnist.py", "",
             f"Produced by `python benchmarks/mnist_accuracy.py` on {header['date']}, commit "
             f"{header['commit']}, Python {header['python']}, {header['machine']} (load average "
             f"at the end {header['load_average']}). Each run is a fresh process; the first "
             "compiles the gradient, the second loads it from the shared cache. This report backs "
             "the accuracies; its times are wall-clock under the load shown (timing: "
             "benchmarks/results/cpu-2core.md).", "",
             "| configuration | final test accuracy | wall time (s) |", "|---|---|---|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['test_acc'][-1] * 100:.2f}% | {r['wall_s']} |")
    for r in results:
        lines += ["", f"## {r['label']}", "", "```", f"$ {r['command']}", r["output"].rstrip(), "```"]
    (out_dir / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out_dir / (args.out + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
