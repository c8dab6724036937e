#!/usr/bin/env python
"""Data-parallel MNIST training over MPI: epoch time on 1 and N ranks, scaling, communication.

    python benchmarks/distributed_bench.py [--ranks 2] [--epochs 3] [--batch-sizes 64,256]

Runs, each in fresh processes with one BLAS/Numba thread per process:

* ``single``: one process, ``srcgrad.optim.MinibatchLoop`` (the 1-process baseline);
* ``dp1``: ``mpiexec -n 1``, ``srcgrad.distributed.DataParallelLoop`` (its per-step cost from
  Python and the allreduce call, with nothing to exchange);
* ``dpN``: ``mpiexec -n N``, the same loop, each rank on 1/N of every global batch;

all on the 784-128-10 MLP of examples/train_mnist.py in float32 with SGD + momentum, the same
global batch size and sample order. The N-rank run also times ``MPI_Allreduce`` alone on the
buffer one step sends, under MPICH's automatic choice and forced algorithms. Writes
``benchmarks/results/<out>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALGORITHMS = ("auto", "recursive_doubling", "reduce_scatter_allgather", "ring")


def _env():
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        env[var] = "1"
    env.setdefault("SRCGRAD_CACHE_DIR", tempfile.mkdtemp(prefix="srcgrad-dist-bench-"))
    return env


def _mpiexec():
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.is_file() else "mpiexec"


# ------------------------------------------------------------------------------------------------
# worker (one process, or one rank)
# ------------------------------------------------------------------------------------------------


def worker(args):
    import numpy as np

    sys.path.insert(0, str(ROOT))
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_mnist_bench", ROOT / "examples" /
                                                  "train_mnist.py")
    tm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tm)
    from srcgrad.datasets import load_mnist
    from srcgrad.optim import MinibatchLoop, make_optimizer

    X, y, _, _ = load_mnist(os.environ.get("SRCGRAD_DATA") or ROOT.parent / "shared" / "data" /
                            "mnist", download=False)
    X = np.ascontiguousarray(X, np.float32)
    n = X.shape[0]
    vg = tm.make_loss_and_grads()
    out = {"mode": args.mode, "batch_size": args.batch_size, "epochs": []}
    dist = None
    if args.mode == "single":
        params = tm.init_params(128, 0)
        opt = make_optimizer("momentum", params, lr=0.05, momentum=0.9)
        loop = MinibatchLoop(vg, opt)
        rank, size = 0, 1
    else:
        from srcgrad import distributed as dist

        rank, size = dist.rank(), dist.size()
        params = dist.broadcast(tm.init_params(128, 0))
        opt = make_optimizer("momentum", params, lr=0.05, momentum=0.9)
        loop = dist.DataParallelLoop(vg, opt, profile=True)
    t0 = time.perf_counter()
    if dist is None:
        vg(*params, X[:args.batch_size], y[:args.batch_size])
    else:
        dist.node_leader_first(lambda: vg(*params, X[:args.batch_size], y[:args.batch_size]))
    loop(params, X, y, np.arange(n), args.batch_size, 0, 20)     # compile / load, warm up
    out["warmup_s"] = time.perf_counter() - t0
    if dist is not None:
        loop.seconds = dict.fromkeys(loop.seconds, 0.0)
    for e in range(args.epochs):
        order = tm.epoch_permutation(n, 0, e)
        if dist is not None:
            dist.world().Barrier()
        t0 = time.perf_counter()
        total = loop(params, X, y, order, args.batch_size)
        secs = time.perf_counter() - t0
        if dist is not None:     # the epoch ends when the slowest rank is done
            secs = dist.world().allreduce(secs, op=dist.mpi().MAX)
        out["epochs"].append({"seconds": secs, "loss": total / n})
    out["size"] = size
    if dist is not None:
        # per epoch, averaged over the epochs and the ranks
        parts = dist.world().allreduce(np.array(list(loop.seconds.values())))
        out["parts_s"] = dict(zip(loop.seconds, (parts / size / args.epochs).tolist()))
        out["bytes_per_step"] = loop.bytes_per_step
        out["allreduce_us"] = _time_allreduce(dist, loop.bytes_per_step // 4) if size > 1 else None
    if rank == 0:
        Path(args.json).write_text(json.dumps(out))


def _time_allreduce(dist, count, calls=300):
    """Median microseconds of one in-place MPI_Allreduce (sum) of ``count`` float32 over the
    ranks (the algorithm is the one MPIR_CVAR_ALLREDUCE_INTRA_ALGORITHM selects)."""
    import numpy as np

    MPI = dist.mpi()
    comm = dist.world()
    buf = np.ones(count, np.float32)
    samples = []
    for _ in range(calls):
        comm.Barrier()
        t0 = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        samples.append(time.perf_counter() - t0)
        buf[:] = 1.0
    return statistics.median(samples[20:]) * 1e6


def allreduce_only(args):
    """Time the allreduce of a step's buffer alone (run under mpiexec)."""
    from srcgrad import distributed as dist

    us = _time_allreduce(dist, args.count)
    if dist.rank() == 0:
        Path(args.json).write_text(json.dumps({"allreduce_us": us}))


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------


def _run(cmd, env, timeout=900):
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n"
                 f"{proc.stderr}")


def _one(mode, ranks, batch_size, epochs, env):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--batch-size",
               str(batch_size), "--epochs", str(epochs), "--json", str(out)]
        if mode != "single":
            cmd = [_mpiexec(), "-n", str(ranks)] + cmd
        _run(cmd, env)
        return json.loads(out.read_text())


def _allreduce_algorithms(ranks, count, env):
    res = {}
    for alg in ALGORITHMS:
        e = dict(env, MPIR_CVAR_ALLREDUCE_INTRA_ALGORITHM=alg)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "ar.json"
            _run([_mpiexec(), "-n", str(ranks), sys.executable, __file__, "--allreduce-only",
                  "--count", str(count), "--json", str(out)], e)
            res[alg] = json.loads(out.read_text())["allreduce_us"]
    return res


def _median(run):
    return statistics.median(e["seconds"] for e in run["epochs"])


def driver(args):
    env = _env()
    load_before = os.getloadavg()
    results = {"ranks": args.ranks, "epochs": args.epochs, "cpus": os.cpu_count(),
               "platform": platform.platform(), "python": platform.python_version(),
               "load_before": load_before, "runs": []}
    try:
        from mpi4py import MPI
        results["mpi"] = MPI.Get_library_version().splitlines()[0].strip()
    except Exception as exc:  # pragma: no cover - the extra is needed to run this at all
        sys.exit(f"needs the [distributed] extra: {exc}")
    for bs in args.batch_sizes:
        row = {"batch_size": bs}
        for mode, ranks in (("single", 1), ("dp1", 1), (f"dp{args.ranks}", args.ranks)):
            print(f"batch {bs}: {mode} ...", flush=True)
            row[mode] = _one(mode if mode == "single" else "dp", ranks, bs, args.epochs, env)
        results["runs"].append(row)
    count = results["runs"][0][f"dp{args.ranks}"]["bytes_per_step"] // 4
    print("allreduce algorithms ...", flush=True)
    results["allreduce_algorithms_us"] = _allreduce_algorithms(args.ranks, count, env)
    results["load_after"] = os.getloadavg()
    outdir = ROOT / "benchmarks" / "results"
    (outdir / f"{args.out}.json").write_text(json.dumps(results, indent=1))
    (outdir / f"{args.out}.md").write_text(report(results))
    print(report(results))


def report(r):
    N = r["ranks"]
    lines = [
        f"# Data-parallel MNIST over MPI: 1 vs {N} ranks",
        "",
        f"- {r['mpi']}; {r['platform']}; Python {r['python']}; {r['cpus']} CPUs",
        f"- load average (1, 5, 15 min) before: {', '.join(f'{x:.1f}' for x in r['load_before'])}"
        f"; after: {', '.join(f'{x:.1f}' for x in r['load_after'])}",
        "- 784-128-10 MLP, float32, SGD + momentum, full MNIST training set (60,000 images); "
        "each process 1 BLAS and 1 Numba thread; s/epoch is the median of "
        f"{r['epochs']} epochs (the slowest rank's time), after compiling and 20 warm-up steps",
        f"- `single`: 1 process, `MinibatchLoop`; `dp1`: `DataParallelLoop` on 1 rank; `dp{N}`: "
        f"{N} ranks, each on 1/{N} of every global batch (same global batch size and order)",
        "",
        f"| global batch | single s/epoch | dp1 s/epoch | dp{N} s/epoch | speedup {N} ranks vs "
        f"single | scaling efficiency | bytes allreduced per step (per rank) | allreduce µs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in r["runs"]:
        s, d1, dn = _median(row["single"]), _median(row["dp1"]), _median(row[f"dp{N}"])
        sp = s / dn
        lines.append(
            f"| {row['batch_size']} | {s:.3f} | {d1:.3f} | {dn:.3f} | {sp:.2f}× | "
            f"{sp / N * 100:.0f}% | {row[f'dp{N}']['bytes_per_step']:,} | "
            f"{row[f'dp{N}']['allreduce_us']:.0f} |")
    lines += ["", "Where a rank's epoch goes (`DataParallelLoop(profile=True)`, seconds per epoch, "
              "mean over epochs and ranks; `allreduce` includes waiting for the other ranks):", "",
              "| global batch | ranks | shard gradient | allreduce + wait | update | other |",
              "|---|---|---|---|---|---|"]
    for row in r["runs"]:
        for key in ("dp1", f"dp{N}"):
            parts = row[key]["parts_s"]
            rest = statistics.mean(e["seconds"] for e in row[key]["epochs"]) - sum(parts.values())
            lines.append(f"| {row['batch_size']} | {row[key]['size']} | {parts['gradient']:.3f} | "
                         f"{parts['allreduce']:.3f} | {parts['update']:.3f} | {rest:.3f} |")
    lines += ["", f"`MPI_Allreduce` alone of one step's buffer on {N} ranks, median µs, by "
              "algorithm (`MPIR_CVAR_ALLREDUCE_INTRA_ALGORITHM`):", "",
              "| " + " | ".join(r["allreduce_algorithms_us"]) + " |",
              "|" + "---|" * len(r["allreduce_algorithms_us"]),
              "| " + " | ".join(f"{v:.0f}" for v in r["allreduce_algorithms_us"].values()) + " |",
              ""]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")],
                   default=[64, 256])
    p.add_argument("--out", default="distributed")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--allreduce-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="single", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
    elif args.allreduce_only:
        allreduce_only(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
