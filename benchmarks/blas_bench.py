"""Which BLAS runs a matrix product: NumPy's ``@`` (the OpenBLAS bundled with NumPy), Numba's
``np.dot`` (it calls the BLAS bundled with SciPy) and srcgrad's cpu ``matmul`` (NumPy's BLAS called
by symbol name from compiled code, ``srcgrad/backends/cpu.py``), on the five products of the MLP
gradient (784-128-10) at batch 64 and 256.

usage: python benchmarks/blas_bench.py [--quick | --tiny] [--threads N] [--out NAME] [--outdir DIR]

The tools are timed in alternating blocks (A, B, C, A, B, C, ...) so that a machine that speeds up
or slows down during the run affects all of them alike; each row gives the median block time and
the median over rounds of each tool's time divided by NumPy's in the same round.
Output: ``results/<out>.md`` and ``.json`` (default ``out = blas``).
"""
import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the benchmarks package and this checkout's srcgrad

from benchmarks.lib import _threads  # noqa: E402  (no heavy imports)


def products(batch, dtype, rng):
    """The MLP gradient's products as (label, left, right): forward, then the adjoints."""
    import numpy as np
    X = rng.random((batch, 784)).astype(dtype)
    W1 = rng.random((784, 128)).astype(dtype)
    W2 = rng.random((128, 10)).astype(dtype)
    h = rng.random((batch, 128)).astype(dtype)
    dz = rng.random((batch, 10)).astype(dtype)
    dh = rng.random((batch, 128)).astype(dtype)
    return [("X @ W1", X, W1), ("h @ W2", h, W2), ("dz @ W2.T", dz, W2.T),
            ("h.T @ dz", h.T, dz), ("X.T @ dh", X.T, dh)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="2 rounds of 1 call (smoke test)")
    parser.add_argument("--outdir", default=str(HERE / "results"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="blas")
    opts = parser.parse_args(argv)
    settings = _threads.setup_threads(opts.threads)

    import numba
    import numpy as np
    from srcgrad.backends import cpu

    @numba.njit
    def numba_dot(a, b):
        return np.dot(a, b)

    @numba.njit
    def srcgrad_matmul(a, b):
        return cpu.matmul(a, b)

    tools = {"numpy @": lambda a, b: a @ b, "numba np.dot": numba_dot,
             "srcgrad matmul": srcgrad_matmul}
    rounds, block = (2, 1) if opts.tiny else (15, 10) if opts.quick else (60, 30)
    rng = np.random.default_rng(0)
    rows = []
    for dtype in (np.float32, np.float64):
        for batch in (64, 256):
            for label, a, b in products(batch, dtype, rng):
                reference = a.astype(np.float64) @ b.astype(np.float64)
                for name, tool in tools.items():       # compile, and check, before timing
                    got = tool(a, b)
                    if not np.allclose(got, reference, rtol=1e-4, atol=1e-3):
                        raise SystemExit(f"{name} gives a wrong product for {label}")
                times = {name: [] for name in tools}
                for _ in range(rounds):
                    for name, tool in tools.items():
                        start = time.perf_counter()
                        for _ in range(block):
                            tool(a, b)
                        times[name].append((time.perf_counter() - start) / block)
                numpy_times = np.array(times["numpy @"])
                row = dict(dtype=np.dtype(dtype).name, batch=batch, product=label,
                           shape=f"{a.shape} @ {b.shape}")
                for name in tools:
                    row[name + " us"] = float(np.median(times[name]) * 1e6)
                    row[name + " / numpy"] = float(np.median(np.array(times[name]) / numpy_times))
                rows.append(row)
                print(f"{row['dtype']:8s} {batch:4d} {label:10s} " + "  ".join(
                    f"{name} {row[name + ' us']:8.1f} us ({row[name + ' / numpy']:.2f}x)"
                    for name in tools), flush=True)

    lines = ["# Matrix products: which BLAS", "",
             f"- threads: {opts.threads}; settings: `{json.dumps(settings)}`",
             f"- numpy {np.__version__}, numba {numba.__version__}; srcgrad finds NumPy's BLAS: "
             f"{cpu.NUMPY_BLAS}",
             f"- NumPy's BLAS: `{np.show_config(mode='dicts')['Build Dependencies']['blas'].get('openblas configuration', '?')}`",
             f"- {rounds} rounds of {block} calls per tool, the tools alternating; `x numpy` is "
             "the median over rounds of the tool's time / NumPy's time in the same round.", "",
             "| dtype | batch | product | shapes | " + " | ".join(
                 f"{name} | × numpy" for name in tools) + " |",
             "|---|---|---|---|" + "---|---|" * len(tools)]
    for row in rows:
        lines.append(f"| {row['dtype']} | {row['batch']} | `{row['product']}` | {row['shape']} | "
                     + " | ".join(f"{row[name + ' us']:.1f} µs | {row[name + ' / numpy']:.2f}×"
                                  for name in tools) + " |")
    out = Path(opts.outdir) / opts.out
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(dict(settings=settings, rows=rows), indent=1))
    print("wrote", out.with_suffix(".md"))


if __name__ == "__main__":
    main()
