#!/usr/bin/env python
"""Where the MNIST SGD step's non-GEMM time goes, in parts small enough to time on a shared
machine (minimum over interleaved repeats; issue 20's 2-core target):

    python benchmarks/mnist_step_probe.py products|gather|step|fair [--batches 64,256] [--reps N]

* ``products``: each of the step's five products alone, microseconds per call on 1 and on 2
  OpenBLAS threads (wall time): does OpenBLAS already run the small ones on one thread?
* ``gather``: one epoch of batch gathers (the shuffled rows of X into a buffer), wall ms: the
  loop MinibatchLoop runs (``fused_runs._gather_batch``), the same loop with software prefetch
  of the row ``d`` ahead, a contiguous copy of the same bytes, and the rows split over the
  cores with ``numba.prange`` (``NUMBA_THREADING_LAYER`` picks the layer).
* ``step``: srcgrad's fused SGD step on a fixed batch against its five products alone (fused
  alpha/beta updates), on one BLAS thread, CPU time of this thread (preemption by other
  processes is not counted): the step's own non-GEMM cost, gather excluded.
* ``fair [--threads T]``: whole epochs, s/epoch wall and process CPU: the benchmark's GEMM
  floor against the same five products in the step's forms (W updated in place), on a
  gathered uint8 batch, the hand Numba epoch and srcgrad's loop (benchmarks/results/
  mnist_mfloor.md).

Numbers from a machine that others are using move from run to run: read the ratios within one
run, and the load average printed with them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))


def _prefetch_intrinsic():
    """``prefetch(flat_array, index)``: LLVM's prefetch of that element (read, keep in cache)."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def prefetch(typingctx, arr, index):
        def codegen(context, builder, signature, args):
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]],
                                           wraparound=False)
            i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                "llvm.prefetch.p0")
            builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0),
                              ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()
        return types.void(arr, index), codegen
    return prefetch


def products(batches, reps):
    import numba
    import numpy as np

    from srcgrad.training.blas import gemm
    from srcgrad.training.blas_threads import blas_threads, current_blas_threads

    @numba.njit(nogil=True)
    def repeat(A, B, C, ta, tb, beta, n):
        for _ in range(n):
            gemm(A, B, C, 1.0, beta, ta, tb)

    f, rng, most = np.float32, np.random.default_rng(0), current_blas_threads()
    for b in batches:
        X, H = rng.random((b, 784), f), rng.random((b, 128), f)
        W1, W2, P = rng.random((784, 128), f) * f(0.01), rng.random((128, 10), f), \
            rng.random((b, 10), f)
        cases = {"X @ W1": (X, W1, np.empty((b, 128), f), False, False, 0.0),
                 "H @ W2": (H, W2, np.empty((b, 10), f), False, False, 0.0),
                 "P @ W2.T": (P, W2, np.empty((b, 128), f), False, True, 0.0),
                 "W2 += H.T @ P": (H, P, W2.copy(), True, False, 1.0),
                 "W1 += X.T @ dA": (X, H, W1.copy(), True, False, 1.0)}
        n = 2000 if b <= 64 else 500
        for c in cases.values():
            repeat(*c, 10)
        t = {(k, c): [] for k in cases for c in (1, most)}
        for _ in range(reps):
            for k, case in cases.items():
                for c in (1, most):
                    with blas_threads(c):
                        t0 = time.perf_counter()
                        repeat(*case, n)
                        t[(k, c)].append((time.perf_counter() - t0) / n * 1e6)
        print(f"batch {b}: us per call, min over {reps} (1 / {most} BLAS threads); "
              f"load {os.getloadavg()}")
        for k in cases:
            one, many = min(t[(k, 1)]), min(t[(k, most)])
            print(f"  {k:16s} {one:8.2f} {many:8.2f}   ratio {many / one:.2f}   "
                  f"ms/epoch {one * (60000 // b) / 1e3:.1f} / {many * (60000 // b) / 1e3:.1f}")


def gather(batches, reps):
    import numba
    import numpy as np

    from benchmarks.mnist_bench import _load_data
    from srcgrad.training.fused_runs import _gather_batch
    from srcgrad.training.mlp import epoch_permutation

    prefetch = _prefetch_intrinsic()
    X, y, data = _load_data(False)
    flat = X.reshape(-1)

    @numba.njit(nogil=True)
    def serial(X, y, order, B, Xb, yb, flat, d):
        for s in range(order.shape[0] // B):
            _gather_batch(X, y, order, s * B, B, Xb, yb, None)

    @numba.njit(nogil=True)
    def ahead(X, y, order, B, Xb, yb, flat, d):
        cols = X.shape[1]
        for s in range(order.shape[0] // B):
            start = s * B
            for r in range(B):
                if r + d < B:
                    row = order[start + r + d] * cols
                    for k in range(0, cols, 16):        # one prefetch per 64-byte line
                        prefetch(flat, row + k)
                    prefetch(flat, row + cols - 1)
                j = order[start + r]
                for k in range(cols):
                    Xb[r, k] = X[j, k]
                yb[r] = y[j]

    @numba.njit(nogil=True)
    def contiguous(X, y, order, B, Xb, yb, flat, d):
        for s in range(order.shape[0] // B):
            Xb[:, :] = X[s * B:(s + 1) * B, :]

    @numba.njit(parallel=True, nogil=True)
    def rows_parallel(X, y, order, start, B, Xb, yb):
        for r in numba.prange(B):
            j = order[start + r]
            for k in range(X.shape[1]):
                Xb[r, k] = X[j, k]
            yb[r] = y[j]

    @numba.njit(nogil=True)
    def parallel(X, y, order, B, Xb, yb, flat, d):
        for s in range(order.shape[0] // B):
            rows_parallel(X, y, order, s * B, B, Xb, yb)

    variants = {"serial (MinibatchLoop's)": (serial, 0), "prefetch 1 row ahead": (ahead, 1),
                "prefetch 2 rows ahead": (ahead, 2), "prefetch 4 rows ahead": (ahead, 4),
                "contiguous copy": (contiguous, 0), "prange over rows": (parallel, 0)}
    print(f"data: {data}; numba threads {numba.get_num_threads()}")
    order = epoch_permutation(X.shape[0], 0, 1)
    for b in batches:
        Xb, yb = np.empty((b, X.shape[1]), np.float32), np.zeros(b, y.dtype)
        for fn, d in variants.values():
            fn(X, y, order, b, Xb, yb, flat, d)
        t = {k: [] for k in variants}
        # the one-thread variants interleaved, then prange's repeats: its idle threads spin for
        # a while after each parallel region (OpenMP's wait policy), and the variant timed
        # next shared its core with them (a first version read ~1.8x on the serial gather)
        for rep in range(2 * reps):
            for k, (fn, d) in variants.items():
                if (k == "prange over rows") == (rep < reps):
                    continue
                t0 = time.perf_counter()
                fn(X, y, order, b, Xb, yb, flat, d)
                t[k].append(time.perf_counter() - t0)
        print(f"batch {b}: ms per epoch of gathers, min / median over {reps}; "
              f"load {os.getloadavg()}")
        for k, v in t.items():
            print(f"  {k:26s} {min(v) * 1e3:7.1f} {np.median(v) * 1e3:7.1f}")
    print(f"threading layer: {numba.threading_layer()}")


def step(batches, reps):
    import numba
    import numpy as np

    from srcgrad import value_and_grad
    from srcgrad.training.blas import gemm
    from srcgrad.training.blas_threads import blas_threads
    from srcgrad.training.fused_sgd import fused_step
    from srcgrad.training.mlp import init_params, mlp_loss

    vg = value_and_grad(mlp_loss, wrt=(0, 1, 2, 3))

    @numba.njit
    def floor(W1, b1, W2, b2, X, y, n, lr, A, P, dA):
        for _ in range(n):
            gemm(X, W1, A, 1.0, 0.0, False, False)
            gemm(A, W2, P, 1.0, 0.0, False, False)
            gemm(P, W2, dA, 1.0, 0.0, False, True)
            gemm(A, P, W2, -lr, 1.0, True, False)
            gemm(X, dA, W1, -lr, 1.0, True, False)

    rng, f = np.random.default_rng(0), np.float32
    for b in batches:
        X, y = rng.random((b, 784), f), rng.integers(0, 10, b)
        params = [q.copy() for q in init_params(128, 0)]
        fn, one = fused_step(vg, params, X, y, lean=False)[:2]

        @numba.njit
        def steps(W1, b1, W2, b2, X, y, n, lr):
            total = 0.0
            for _ in range(n):
                total += fn(W1, b1, W2, b2, X, y, one, lr)
            return total

        bufs = (np.empty((b, 128), f), np.empty((b, 10), f), np.empty((b, 128), f))
        n, lr = (300 if b <= 64 else 100), 1e-4
        steps(*params, X, y, 3, lr)
        floor(*params, X, y, 3, f(lr), *bufs)
        t = {"step": [], "floor": []}
        with blas_threads(1):
            for _ in range(reps):
                t0 = time.thread_time()
                steps(*params, X, y, n, lr)
                t["step"].append((time.thread_time() - t0) / n * 1e6)
                t0 = time.thread_time()
                floor(*params, X, y, n, f(lr), *bufs)
                t["floor"].append((time.thread_time() - t0) / n * 1e6)
        s, g = min(t["step"]), min(t["floor"])
        print(f"batch {b}, 1 BLAS thread, us of CPU per step (min over {reps}): srcgrad step "
              f"{s:.1f}, its five products alone {g:.1f}, difference {s - g:.1f} "
              f"({s / g:.3f}x); load {os.getloadavg()}")


def fair(batches, reps, threads=2):
    """Whole MNIST epochs on ``threads`` BLAS threads, variants interleaved in this process:
    the benchmark's GEMM floor, the floor with the step's own product forms (the weights
    updated in place), both on a batch gathered from the uint8 pixels, the hand Numba epoch and
    srcgrad's MinibatchLoop (its count fixed: no "auto" measuring). Is the floor a fair one?"""
    import numba
    import numpy as np

    from benchmarks.lib.mnist_trainers import LR, _numba_functions
    from benchmarks.mnist_bench import _load_data
    from srcgrad import value_and_grad
    from srcgrad.training.datasets import MNIST_SCALE
    from srcgrad.optim import SGD, MinibatchLoop
    from srcgrad.training.blas import gemm
    from srcgrad.training.blas_threads import blas_threads
    from srcgrad.training.fused_runs import _gather_batch
    from srcgrad.training.mlp import epoch_permutation, init_params, mlp_loss

    hand, floor = _numba_functions()

    @numba.njit(nogil=True)
    def five(x, W1, W2, lr, update, A, P, dA, gW1, gW2):
        """The step's five products; ``update``: in its own forms, the weights updated in place
        (alpha = -lr, beta = 1), else the floor's (fresh gradient outputs, beta = 0)."""
        if update:
            gemm(x, W1, A, 1.0, 0.0, False, False)
            gemm(A, W2, P, 1.0, 0.0, False, False)
            gemm(P, W2, dA, 1.0, 0.0, False, True)
            gemm(x, dA, W1, -lr, 1.0, True, False)
            gemm(A, P, W2, -lr, 1.0, True, False)
        else:
            gemm(x, W1, A, 1.0, 0.0, False, False)
            gemm(A, W2, P, 1.0, 0.0, False, False)
            gemm(A, P, gW2, 1.0, 0.0, True, False)
            gemm(P, W2, dA, 1.0, 0.0, False, True)
            gemm(x, dA, gW1, 1.0, 0.0, True, False)

    @numba.njit(nogil=True)
    def on_gathered(W1, W2, X, y, order, nsteps, lr, scale, update, xb, yb, A, P, dA, gW1, gW2):
        B = A.shape[0]
        for s in range(nsteps):
            _gather_batch(X, y, order, s * B, B, xb, yb, scale)
            five(xb, W1, W2, lr, update, A, P, dA, gW1, gW2)

    @numba.njit(nogil=True)
    def on_rows(W1, W2, X, nsteps, lr, update, A, P, dA, gW1, gW2):
        B = A.shape[0]
        for s in range(nsteps):
            five(X[s * B:(s + 1) * B], W1, W2, lr, update, A, P, dA, gW1, gW2)

    X8, y, data = _load_data(False, pixels=True)
    Xf = X8.astype(np.float32) * np.float32(MNIST_SCALE)
    p0 = [np.array(a, np.float32) for a in init_params(128, 0)]
    f = np.float32
    loop = MinibatchLoop(value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)), SGD(lr=LR),
                         blas_threads=threads)
    print(f"data: {data}; load {os.getloadavg()}")
    for b in batches:
        order = epoch_permutation(X8.shape[0], 0, 1)
        n = order.shape[0] // b
        order = order[:n * b]
        bufs = dict(A=np.empty((b, 128), f), P=np.empty((b, 10), f), dA=np.empty((b, 128), f))
        xb, yb = np.empty((b, 784), f), np.empty(b, y.dtype)
        gW1, gW2 = np.empty_like(p0[0]), np.empty_like(p0[2])

        def run_products(gathered, update):
            W1, W2, lr = p0[0].copy(), p0[2].copy(), f(1e-6)
            if gathered:
                on_gathered(W1, W2, X8, y, order, n, lr, f(MNIST_SCALE), update, xb, yb,
                            *bufs.values(), gW1, gW2)
            else:
                on_rows(W1, W2, Xf, n, lr, update, *bufs.values(), gW1, gW2)

        variants = {
            "floor (benchmark's)": lambda: floor(p0[0], p0[2], Xf, n, *bufs.values(), gW1, gW2),
            "floor, slices, W updated": lambda: run_products(False, True),
            "floor, gathered u8, gW out": lambda: run_products(True, False),
            "floor, gathered u8, W upd.": lambda: run_products(True, True),
            "hand Numba epoch": lambda: hand(*[a.copy() for a in p0], X8, y, order, n, f(LR),
                                             f(MNIST_SCALE), xb, yb, *bufs.values()),
            "srcgrad MinibatchLoop": lambda: loop(tuple(a.copy() for a in p0), X8, y, order, b,
                                                  x_scale=MNIST_SCALE),
        }
        wall = {k: [] for k in variants}
        cpu = {k: [] for k in variants}
        with blas_threads(threads):
            for fn in variants.values():
                fn()
            for _ in range(reps):
                for k, fn in variants.items():
                    c0, t0 = time.process_time(), time.perf_counter()
                    fn()
                    wall[k].append(time.perf_counter() - t0)
                    cpu[k].append(time.process_time() - c0)
        base = np.median(wall["floor (benchmark's)"])
        print(f"batch {b}, {threads} BLAS thread(s), s/epoch over {reps} interleaved rounds: "
              f"wall min / median (median / floor's), process CPU median; "
              f"load {os.getloadavg()}")
        for k in variants:
            w = np.median(wall[k])
            print(f"  {k:28s} {min(wall[k]):.4f} {w:.4f} ({w / base:.3f})  "
                  f"cpu {np.median(cpu[k]):.4f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", choices=("products", "gather", "step", "fair"))
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--threads", type=int, default=2, help="BLAS threads (fair only)")
    a = ap.parse_args(argv)
    batches = [int(b) for b in a.batches.split(",")]
    if a.part == "fair":
        fair(batches, a.reps, a.threads)
    else:
        {"products": products, "gather": gather, "step": step}[a.part](batches, a.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
