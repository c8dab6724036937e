"""Correctness and timings of srcgrad's CUDA paths on a real GPU, in one run (issue #22).

    python benchmarks/gpu_check.py --mnist-dir DIR --out DIR          # on a machine with a GPU
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu_check.py --quick     # dry run of every path

Device time is scarce, so one script does everything and every section reports (a failure is
printed and recorded, and the next section runs):

1. ``kernels``: every hand-written kernel of ``srcgrad.cuda.kernels`` against NumPy (MNIST sizes).
2. ``map``: map-mode gradients (Black-Scholes, a branchy function) against the cpu target.
3. ``array``: array-mode value and gradients against the python target.
4. ``trainers``: each GPU trainer's parameters after an epoch of a data subset against the float64
   NumPy reference of the same SGD steps.
5. ``launch``: the host cost of one Numba kernel launch, and per kernel in a replayed CUDA graph.
6. ``mnist``: epochs at batch 64 and 256, every tool interleaved round by round (epoch r of each
   before r+1 of any), medians and per-round ratios; first-use compile time beside them.
7. ``blackscholes``: map-mode greeks over 10**7 options against the primal (map mode's own value
   kernel and a hand-written one).

The last lines printed are the summary table; ``--out`` gets ``gpu_check.json`` and ``gpu_check.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")   # JAX must leave memory to the others
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402  (kernels below refer to it as a global, as Numba needs)

from benchmarks.lib.gpu_trainers import GPU_LABELS, GPU_TRAINERS  # noqa: E402
from benchmarks.lib.programs import call_price  # noqa: E402

import warnings  # noqa: E402
from numba.core.errors import NumbaPerformanceWarning  # noqa: E402

# Numba warns at every launch of fewer than 128 blocks: small batches are such launches by design
warnings.filterwarnings("ignore", category=NumbaPerformanceWarning)

RECORD = {"sections": {}, "checks": [], "mnist": {}, "blackscholes": {}, "launch": {}}
SUMMARY = []        # (what, value, target/verdict)


def log(*args):
    print(*args, flush=True)


def section(name):
    """Run a section; an exception is printed and recorded, and the run goes on."""
    def wrap(fn):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            log(f"\n== {name} ==")
            try:
                fn(*args, **kwargs)
                status = "ok"
            except Exception as exc:        # noqa: BLE001
                traceback.print_exc()
                status = f"FAILED: {type(exc).__name__}: {exc}"[:300]
                SUMMARY.append((f"section {name}", status, "x"))
            RECORD["sections"][name] = {"status": status, "seconds": round(time.perf_counter() - t0, 2)}
            log(f"-- {name}: {status} ({time.perf_counter() - t0:.1f} s)")
        return run
    return wrap


def check(what, got, want, rtol):
    """Record ``max |got - want| / max |want|`` against ``rtol`` (NaN fails)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-300)) if want.size else 0.0
    ok = bool(np.isfinite(got).all() == np.isfinite(want).all() and err <= rtol)
    RECORD["checks"].append({"what": what, "rel_err": err, "rtol": rtol, "ok": ok})
    log(f"  {'ok  ' if ok else 'FAIL'} {what}: rel err {err:.2e} (tol {rtol:.0e})")
    return ok


# ------------------------------------------------------------------------------------------------
@section("environment")
def environment():
    import numba
    info = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__}
    for name in ("numba_cuda", "torch", "jax", "cupy"):
        try:
            info[name] = __import__(name).__version__
        except Exception as exc:        # noqa: BLE001
            info[name] = f"unavailable ({type(exc).__name__})"
    try:
        dev = cuda.get_current_device()
        info["device"] = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        info["cc"] = ".".join(map(str, dev.compute_capability))
        info["sms"] = int(getattr(dev, "MULTIPROCESSOR_COUNT", 0))
        info["driver"] = ".".join(map(str, cuda.cudadrv.driver.driver.get_version()))
    except Exception as exc:            # noqa: BLE001
        info["device"] = f"? ({type(exc).__name__}: {exc})"
    from srcgrad.cuda import graphs
    info["graphs"] = graphs.available()[1] or "available"
    RECORD["environment"] = info
    for k, v in info.items():
        log(f"  {k}: {v}")


# ------------------------------------------------------------------------------------------------
@section("kernels")
def kernels(quick):
    from srcgrad.cuda import kernels as ck
    rng = np.random.default_rng(0)
    B, K, H = (6, 12, 8) if quick else (64, 784, 128)
    for dt, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        name = np.dtype(dt).name

        def rand(*shape):
            return rng.standard_normal(shape).astype(dt)
        A, W, bias, M = rand(B, K), rand(K, H), rand(H), rand(B, H)
        out = cuda.device_array((B, H), dt)
        ck.gemm(cuda.to_device(A), cuda.to_device(W), out, bias=cuda.to_device(bias), relu=True)
        check(f"gemm NN bias+relu {name}", out.copy_to_host(), np.maximum(A @ W + bias, 0), tol)
        G = rand(B, H)
        out = cuda.device_array((K, H), dt)
        ck.gemm(cuda.to_device(A), cuda.to_device(G), out, trans_a=True)
        check(f"gemm TN {name}", out.copy_to_host(), A.T @ G, tol)
        out = cuda.device_array((B, K), dt)
        Wt = rand(K, H)
        Mk = rand(B, K)
        ck.gemm(cuda.to_device(G), cuda.to_device(Wt), out, trans_b=True, mask=cuda.to_device(Mk))
        check(f"gemm NT mask {name}", out.copy_to_host(), (G @ Wt.T) * (Mk > 0), tol)
        out = cuda.device_array((B, H), dt)
        ck.relu_backward(cuda.to_device(G), cuda.to_device(M), out)
        check(f"relu_backward {name}", out.copy_to_host(), G * (M > 0), tol)
        n = 5 * B
        X, y = rand(n, K), rng.integers(0, 10, n).astype(np.int64)
        perm = rng.permutation(n).astype(np.int64)
        Xb, yb = cuda.device_array((B, K), dt), cuda.device_array(B, np.int64)
        ck.gather_batch(cuda.to_device(X), cuda.to_device(y), cuda.to_device(perm), B, Xb, yb)
        check(f"gather_batch {name}", Xb.copy_to_host(), X[perm[B:2 * B]], 0.0)
        check(f"gather_batch labels {name}", yb.copy_to_host(), y[perm[B:2 * B]], 0.0)
        Z = rand(B, 10) * 5
        r = cuda.device_array(B, dt)
        ck.row_max(cuda.to_device(Z), r)
        check(f"row_max {name}", r.copy_to_host(), Z.max(axis=1), 0.0)
        ck.row_logsumexp(cuda.to_device(Z), r)
        lse = np.log(np.exp(Z - Z.max(1, keepdims=True)).sum(1)) + Z.max(1)
        check(f"row_logsumexp {name}", r.copy_to_host(), lse, tol * 10)
        labels = rng.integers(0, 10, B).astype(np.int64)
        loss, correct = cuda.device_array(B, dt), cuda.device_array(B, np.int32)
        dZ = cuda.device_array((B, 10), dt)
        ck.softmax_xent(cuda.to_device(Z), cuda.to_device(labels), loss, correct, dZ, scale=1.0 / B)
        P = np.exp(Z - lse[:, None])
        check(f"softmax_xent loss {name}", loss.copy_to_host(), lse - Z[np.arange(B), labels], tol * 10)
        check(f"softmax_xent correct {name}", correct.copy_to_host(), Z.argmax(1) == labels, 0.0)
        P[np.arange(B), labels] -= 1
        check(f"softmax_xent grad {name}", dZ.copy_to_host(), P / B, tol * 10)
        cs = cuda.device_array(H, dt)
        ck.col_sum(cuda.to_device(M), cs)
        check(f"col_sum {name}", cs.copy_to_host(), M.sum(0), tol * 10)
        acc = cuda.to_device(np.array([1.5, 2.0], dt))
        v = rand(3 * B)
        ck.vec_sum_into(cuda.to_device(v), acc, 1)
        check(f"vec_sum_into {name}", acc.copy_to_host(), [1.5, 2.0 + v.astype(np.float64).sum()], tol * 10)
        p, g, vel = rand(K * H), rand(K * H), rand(K * H)
        pd, vd = cuda.to_device(p), cuda.to_device(vel)
        ck.sgd_momentum(pd, cuda.to_device(g), vd, 0.1, 0.9, 1e-4)
        v2 = 0.9 * vel.astype(np.float64) + g + 1e-4 * p
        check(f"sgd_momentum {name}", pd.copy_to_host(), p - 0.1 * v2, tol * 10)
    cuda.synchronize()


# ------------------------------------------------------------------------------------------------
def branchy(x, y):
    z = 0.0
    for i in range(4):
        if x > y:
            z += x * y + math.exp(-x)
        else:
            z += math.sin(x) + y * y
        x = x * 0.9
    return math.sqrt(z * z + 1.0)


def _options(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(50, 150, n).astype(dtype), rng.uniform(60, 140, n).astype(dtype),
            rng.uniform(0.1, 2.0, n).astype(dtype), rng.uniform(0.1, 0.6, n).astype(dtype))


@section("map")
def map_mode(quick):
    import srcgrad
    import srcgrad.cuda
    n = 50 if quick else 2000
    S, K, T, sigma = _options(n, np.float64)
    r = 0.03
    gpu = srcgrad.cuda.grad(call_price, wrt=(0, 1, 2, 3, 4))(S, K, T, r, sigma)
    target = "cpu"
    try:
        cpu = srcgrad.grad(call_price, wrt=(0, 1, 2, 3, 4), target=target)
        cpu(100.0, 100.0, 1.0, r, 0.2)
    except Exception as exc:        # noqa: BLE001  (this machine's Numba may differ from ours)
        log(f"  the cpu target failed here ({type(exc).__name__}: {str(exc)[:200]}); python target instead")
        target = "python"
        cpu = srcgrad.grad(call_price, wrt=(0, 1, 2, 3, 4), target=target)
    ref = np.array([cpu(*(float(a[i]) for a in (S, K, T)), r, float(sigma[i])) for i in range(n)])
    for j, name in enumerate("S K T r sigma".split()):
        check(f"map Black-Scholes d/d{name} vs {target} target (float64)", gpu[j], ref[:, j], 1e-11)
    x, y = np.random.default_rng(1).uniform(-2, 2, (2, n))
    gpu = srcgrad.cuda.grad(branchy, wrt=(0, 1))(x, y)
    cpu = srcgrad.grad(branchy, wrt=(0, 1), target=target)
    ref = np.array([cpu(float(a), float(b)) for a, b in zip(x, y)])
    check(f"map branchy loop d/dx vs {target} target", gpu[0], ref[:, 0], 1e-11)
    check(f"map branchy loop d/dy vs {target} target", gpu[1], ref[:, 1], 1e-11)
    S32, K32, T32, s32 = _options(n, np.float32)
    g32 = srcgrad.cuda.grad(call_price, wrt=(0, 4))(S32, K32, T32, r, s32)
    check("map Black-Scholes delta float32 vs cpu float64", g32[0], ref_delta(S32, K32, T32, r, s32), 2e-3)


def ref_delta(S, K, T, r, sigma):
    S, K, T, sigma = (np.asarray(a, np.float64) for a in (S, K, T, sigma))
    d1 = (np.log(S / K) + (r + 0.5 * sigma ** 2) * T) / (sigma * np.sqrt(T))
    return 0.5 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in d1]))


# ------------------------------------------------------------------------------------------------
def logistic(w, b, X, t):
    z = X @ w + b
    return np.mean(np.log(1.0 + np.exp(-t * z))) + 0.01 * np.sum(w * w)


def column_stats(x):
    lo = np.min(x, axis=0)
    centered = x - np.mean(x, axis=0, keepdims=True)
    return np.sum(centered * centered) + np.sum(lo * lo) + np.max(x)


@section("array")
def array_mode(quick):
    import srcgrad
    from srcgrad.training.mlp import init_params, mlp_loss
    rng = np.random.default_rng(2)
    B, n_in, hidden = (8, 12, 8) if quick else (64, 784, 128)
    for dt, tol in ((np.float64, 1e-10), (np.float32, 1e-4)):
        params = init_params(hidden, seed=3, dtype=dt, n_in=n_in)
        X = rng.random((B, n_in)).astype(dt)
        y = rng.integers(0, 10, B).astype(np.int64)
        args = (*params, X, y)
        gv, gg = srcgrad.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3), target="cuda", arrays=True)(*args)
        pv, pg = srcgrad.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3), target="python")(*args)
        name = np.dtype(dt).name
        check(f"array mlp_loss value {name}", gv, pv, tol)
        for k, a, b in zip(("W1", "b1", "W2", "b2"), gg, pg):
            check(f"array mlp_loss d/d{k} {name}", a, b, tol)
    w, b = rng.standard_normal(20), 0.3
    X, t = rng.standard_normal((300, 20)), np.sign(rng.standard_normal(300))
    for func, args, wrt in ((logistic, (w, b, X, t), (0, 1)),
                            (column_stats, (rng.standard_normal((37, 5)),), 0)):
        gv, gg = srcgrad.value_and_grad(func, wrt=wrt, target="cuda", arrays=True)(*args)
        pv, pg = srcgrad.value_and_grad(func, wrt=wrt, target="python")(*args)
        check(f"array {func.__name__} value", gv, pv, 1e-10)
        for i, (a, b_) in enumerate(zip(gg if isinstance(gg, tuple) else (gg,),
                                        pg if isinstance(pg, tuple) else (pg,))):
            check(f"array {func.__name__} grad {i}", a, b_, 1e-10)


# ------------------------------------------------------------------------------------------------
def _load(mnist_dir, quick):
    if quick:
        rng = np.random.default_rng(5)
        X = rng.random((96, 12)).astype(np.float32)
        return X, rng.integers(0, 10, 96).astype(np.int64), "random 96 x 12 (quick)"
    if mnist_dir:
        from srcgrad.training.datasets import load_mnist
        X, y, _, _ = load_mnist(mnist_dir, download=False)
        return np.ascontiguousarray(X, np.float32), np.asarray(y, np.int64), f"MNIST train ({mnist_dir})"
    rng = np.random.default_rng(5)
    X = rng.random((60000, 784)).astype(np.float32)
    return X, rng.integers(0, 10, 60000).astype(np.int64), "random 60000 x 784 (no --mnist-dir)"


def _start_params(X, quick):
    from srcgrad.training.mlp import init_params
    return init_params(8 if quick else 128, seed=0, dtype=np.float32, n_in=X.shape[1])


def _tools(available_only=True):
    tools = list(GPU_TRAINERS)
    have = []
    for t in tools:
        need = {"torch": "torch", "jax-step": "jax", "jax-scan": "jax"}.get(t)
        if need:
            try:
                mod = __import__(need)
                if need == "torch" and not mod.cuda.is_available():
                    log(f"  {t}: skipped (torch sees no GPU)")
                    continue
            except Exception as exc:        # noqa: BLE001
                log(f"  {t}: skipped ({type(exc).__name__})")
                continue
        have.append(t)
    return have


@section("trainers")
def trainers(data, quick):
    from benchmarks.lib.mnist_trainers import max_rel_err, reference_steps
    X, y = data
    for B in ((8,) if quick else (64, 256)):
        n = B * (4 if quick else 20)
        Xs, ys = np.ascontiguousarray(X[:n]), np.ascontiguousarray(y[:n])
        params = _start_params(Xs, quick)
        order = np.random.default_rng(B).permutation(n).astype(np.int64)
        ref = reference_steps(params, Xs, ys, order, B, n // B)
        for tool in _tools():
            t = GPU_TRAINERS[tool](Xs, ys, B)
            t.setup(params)
            t.epoch(order)
            err = max_rel_err(t.params(), ref)
            # float32 arithmetic over 20 steps; JAX's default GPU matmul precision is TF32
            tol = 2e-2 if tool.startswith("jax") else 1e-3
            _trainer_check(tool, B, n // B, err, tol)


def _trainer_check(tool, B, steps, err, tol):
    ok = bool(np.isfinite(err) and err <= tol)
    RECORD["checks"].append({"what": f"trainer {tool} b{B}: {steps} steps vs float64 NumPy",
                             "rel_err": err, "rtol": tol, "ok": ok})
    log(f"  {'ok  ' if ok else 'FAIL'} trainer {tool} b{B}: {steps} SGD steps vs float64 NumPy: "
        f"max rel err {err:.2e} (tol {tol:.0e})")


# ------------------------------------------------------------------------------------------------
@cuda.jit
def touch(a, b, c):
    """A kernel with three array arguments that does almost nothing: its launch cost."""
    i = cuda.grid(1)
    if i < a.shape[0]:
        c[i] = a[i] + b[i]


_PRICE_KERNELS = {}


def price_kernel(dt):
    """Black-Scholes call prices written by hand, the primal map mode is compared with; its
    constants are of ``dt`` so float32 stays float32 throughout."""
    if dt in _PRICE_KERNELS:
        return _PRICE_KERNELS[dt]
    half, one, rsqrt2 = dt(0.5), dt(1.0), dt(1.0 / math.sqrt(2.0))

    @cuda.jit
    def price(S, K, T, r, sigma, out):
        i = cuda.grid(1)
        if i < S.shape[0]:
            sq = sigma[i] * math.sqrt(T[i])
            d1 = (math.log(S[i] / K[i]) + (r + half * sigma[i] * sigma[i]) * T[i]) / sq
            d2 = d1 - sq
            out[i] = (S[i] * half * (one + math.erf(d1 * rsqrt2))
                      - K[i] * math.exp(-r * T[i]) * half * (one + math.erf(d2 * rsqrt2)))
    _PRICE_KERNELS[dt] = price
    return price


# ------------------------------------------------------------------------------------------------
@section("launch")
def launch_overhead(quick):
    from srcgrad.cuda import graphs

    a = cuda.to_device(np.ones(256, np.float32))
    b, c = cuda.to_device(np.ones(256, np.float32)), cuda.device_array(256, np.float32)
    launch = touch[1, 256]
    launch(a, b, c)
    cuda.synchronize()
    n = 50 if quick else 2000
    t0 = time.perf_counter()
    for _ in range(n):
        launch(a, b, c)
    t_host = time.perf_counter() - t0
    cuda.synchronize()
    t_all = time.perf_counter() - t0
    RECORD["launch"]["numba_host_us"] = t_host / n * 1e6
    RECORD["launch"]["numba_sync_us"] = t_all / n * 1e6
    log(f"  Numba launch, 3 arrays: {t_host / n * 1e6:.1f} us host, {t_all / n * 1e6:.1f} us until done")
    ok, why = graphs.available()
    if not ok:
        log(f"  graph replay: not measured ({why})")
        return
    stream = cuda.stream()
    on_stream = touch[1, 256, stream]
    on_stream(a, b, c)
    stream.synchronize()
    g = graphs.StreamGraph.capture(stream, lambda: [on_stream(a, b, c) for _ in range(n)])
    g.launch(stream)
    stream.synchronize()
    t0 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        g.launch(stream)
    stream.synchronize()
    per = (time.perf_counter() - t0) / (reps * n) * 1e6
    RECORD["launch"]["graph_us_per_kernel"] = per
    log(f"  CUDA graph of {g.nodes} launches: {per:.2f} us per kernel replayed")
    g.close()


# ------------------------------------------------------------------------------------------------
@section("mnist")
def mnist(data, quick, rounds):
    X, y = data
    tools = _tools()
    params = _start_params(X, quick)
    for B in ((16, 48) if quick else (64, 256)):
        rec = RECORD["mnist"][B] = {"compile_s": {}, "epochs": {t: [] for t in tools}, "launches": {}}
        made = {}
        for tool in tools:
            t = GPU_TRAINERS[tool](X, y, B)
            try:
                rec["compile_s"][tool] = round(t.setup(params), 3)
                t.epoch(np.arange(len(X), dtype=np.int64))         # warm-up epoch
                made[tool] = t
                if hasattr(t, "launches_per_step"):
                    rec["launches"][tool] = t.launches_per_step()
                log(f"  b{B} {tool}: ready (setup {rec['compile_s'][tool]:.2f} s)")
            except Exception as exc:            # noqa: BLE001
                traceback.print_exc()
                rec["compile_s"][tool] = f"failed: {type(exc).__name__}: {exc}"[:200]
        for r in range(rounds):
            order = np.random.default_rng([7, B, r]).permutation(len(X)).astype(np.int64)
            for tool, t in made.items():
                t0 = time.perf_counter()
                t.epoch(order)
                rec["epochs"][tool].append(time.perf_counter() - t0)
            log(f"  b{B} round {r}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in rec["epochs"].items() if v))
        med = {k: statistics.median(v) for k, v in rec["epochs"].items() if v}
        rec["median_s"] = med
        rec["steps"] = len(X) // B
        for base in ("srcgrad-graph", "srcgrad"):
            if base in made:
                rec[f"ratios_vs_{base}"] = {
                    k: statistics.median(a / b for a, b in zip(rec["epochs"][k], rec["epochs"][base]))
                    for k in made}
        for tool, s in med.items():
            per_step = s / rec["steps"] * 1e6
            log(f"  b{B} {GPU_LABELS[tool]}: {s * 1e3:.1f} ms/epoch, {per_step:.1f} us/step")


# ------------------------------------------------------------------------------------------------
@section("profile")
def profile(data, quick):
    """Device time per kernel in one epoch (PyTorch's profiler reads CUPTI, which sees every
    kernel of the process, Numba's included): where a step's time goes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    X, y = data
    params = _start_params(X, quick)
    RECORD["profile"] = {}
    for tool, B in (("srcgrad-graph", 64), ("hand-graph", 64), ("jax-scan", 64), ("srcgrad-graph", 256)):
        t = GPU_TRAINERS[tool](X, y, B)
        t.setup(params)
        order = np.random.default_rng(11).permutation(len(X)).astype(np.int64)
        t.epoch(order)
        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            t.epoch(order)
        events = prof.key_averages()
        rows = []
        for e in events:
            dev = getattr(e, "self_device_time_total", None)
            if dev is None:
                dev = getattr(e, "self_cuda_time_total", 0.0)
            if dev > 0:
                rows.append((dev, e.count, e.key))
        rows.sort(reverse=True)
        total = sum(r[0] for r in rows)
        steps = len(X) // B
        RECORD["profile"][f"{tool} b{B}"] = [{"us_total": r[0], "count": r[1], "kernel": r[2][:120]}
                                             for r in rows[:20]]
        log(f"  {tool} b{B}: device time {total / 1e3:.1f} ms in kernels ({total / steps:.1f} us/step)")
        for dev, count, key in rows[:14]:
            log(f"    {dev / 1e3:8.2f} ms {count:7d}x {dev / max(count, 1):7.2f} us  {key[:90]}")


# ------------------------------------------------------------------------------------------------
def _device_times(calls):
    """Device microseconds in kernels for one call of each function (PyTorch's profiler, which
    reads CUPTI); {} where PyTorch or its CUDA profiler is missing."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile as torch_profile
        if not torch.cuda.is_available():
            return {}
    except Exception:           # noqa: BLE001
        return {}
    out = {}
    try:
        for name, fn in calls.items():
            with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
            out[name] = sum(getattr(e, "self_device_time_total", 0.0) for e in prof.key_averages()
                            if "memcpy" not in e.key.lower() and "memset" not in e.key.lower())
    except Exception as exc:    # noqa: BLE001  (a missing profiler must not cost the timings)
        log(f"  device times not measured: {type(exc).__name__}: {exc}")
    return out


@section("blackscholes")
def blackscholes(quick, n):
    import srcgrad.cuda
    for dt in (np.float64, np.float32):
        name = np.dtype(dt).name
        S, K, T, sigma = (cuda.to_device(a) for a in _options(n, dt, seed=9))
        r = dt(0.03)
        greeks = srcgrad.cuda.value_and_grad(call_price, wrt=(0, 4))
        out = cuda.device_array(n, dt)
        primal = price_kernel(dt)
        threads = 256
        blocks = (n + threads - 1) // threads

        def hand():
            primal[blocks, threads](S, K, T, r, sigma, out)
            cuda.synchronize()

        def value():
            greeks.value(S, K, T, r, sigma)
            cuda.synchronize()

        def grads():
            greeks(S, K, T, r, sigma)
            cuda.synchronize()

        bufs = [cuda.device_array(n, dt) for _ in range(3)]

        def value_out():        # results into preallocated buffers: no allocation per call
            greeks.value(S, K, T, r, sigma, out=bufs[0])
            cuda.synchronize()

        def grads_out():
            greeks(S, K, T, r, sigma, out=bufs)
            cuda.synchronize()
        t0 = time.perf_counter()
        grads()
        first = time.perf_counter() - t0
        times = {}
        for fn in (hand, value, grads, value_out, grads_out):
            fn()
        for _ in range(3 if quick else 10):       # interleaved
            for fn in (hand, value, grads, value_out, grads_out):
                t0 = time.perf_counter()
                fn()
                times.setdefault(fn.__name__, []).append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        if name == "float64":       # where the host time of a call goes
            import cProfile
            import io
            import pstats
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(20):
                grads_out()
            prof.disable()
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(12)
            log("  host profile of 20 value_and_grad calls with out=:\n" +
                "\n".join(ln for ln in text.getvalue().splitlines()[5:] if ln.strip())[:2500])
        kernel_us = _device_times({"hand": hand, "value_out": value_out, "grads_out": grads_out})
        if kernel_us:
            RECORD.setdefault("blackscholes_kernels_us", {})[name] = kernel_us
            log(f"  {name} device time per call (profiler): " +
                ", ".join(f"{k} {v:.1f} us" for k, v in kernel_us.items()))
        v, (dS, dsig) = greeks(S, K, T, r, sigma)
        hand()
        k = min(n, 2000)
        check(f"blackscholes value {name} vs hand primal", v[:k].copy_to_host(), out[:k].copy_to_host(),
              1e-12 if dt == np.float64 else 1e-5)
        h = [a[:k].copy_to_host() for a in (S, K, T, sigma)]
        check(f"blackscholes delta {name} vs N(d1)", dS[:k].copy_to_host(), ref_delta(h[0], h[1], h[2], 0.03, h[3]),
              1e-10 if dt == np.float64 else 2e-3)
        RECORD["blackscholes"][name] = {"n": n, "first_call_s": first, "median_s": med,
                                        "grads_over_value": med["grads"] / med["value"],
                                        "grads_over_hand": med["grads"] / med["hand"],
                                        "out_grads_over_value": med["grads_out"] / med["value_out"],
                                        "out_grads_over_hand": med["grads_out"] / med["hand"]}
        log(f"  {name} n={n}: hand primal {med['hand'] * 1e3:.2f} ms, map value {med['value'] * 1e3:.2f} ms, "
            f"value_and_grad (delta, vega) {med['grads'] * 1e3:.2f} ms: {med['grads'] / med['value']:.2f}x "
            f"value, {med['grads'] / med['hand']:.2f}x hand primal; first call {first:.2f} s")
        log(f"  {name} with out= buffers: map value {med['value_out'] * 1e3:.2f} ms, value_and_grad "
            f"{med['grads_out'] * 1e3:.2f} ms: {med['grads_out'] / med['value_out']:.2f}x value, "
            f"{med['grads_out'] / med['hand']:.2f}x hand primal")


# ------------------------------------------------------------------------------------------------
def first_use_child(tool, quick):
    """In a new process: import, build and run one training step of ``tool`` on MNIST-shaped
    random data; print the seconds as JSON (what a user waits for before training starts)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    B, n_in, hidden = (8, 12, 8) if quick else (64, 784, 128)
    X = rng.random((B, n_in)).astype(np.float32)       # one batch: the epoch is one step
    y = rng.integers(0, 10, B).astype(np.int64)
    from srcgrad.training.mlp import init_params
    trainer = GPU_TRAINERS[tool](X, y, B)
    trainer.setup(init_params(hidden, seed=0, n_in=n_in))
    trainer.epoch(np.arange(B, dtype=np.int64))
    trainer.params()
    print(json.dumps({"tool": tool, "first_step_s": time.perf_counter() - t0}))


@section("first_use")
def first_use(quick):
    """Seconds from a new process to the first finished training step: srcgrad cold (empty
    srcgrad and Numba caches), then warm (a second process on the same caches), PyTorch, JAX."""
    import subprocess
    import tempfile
    caches = {"NUMBA_CACHE_DIR": tempfile.mkdtemp(), "SRCGRAD_CACHE_DIR": tempfile.mkdtemp()}
    RECORD["first_use_s"] = {}
    for label, tool in (("srcgrad cold", "srcgrad"), ("srcgrad warm", "srcgrad"),
                        ("srcgrad-graph warm", "srcgrad-graph"), ("torch", "torch"),
                        ("jax-step", "jax-step")):
        env = dict(os.environ, **caches)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--first-use", tool] +
                              (["--quick"] if quick else []), env=env,
                              capture_output=True, text=True, timeout=600 if quick else 120)
        wall = time.perf_counter() - t0
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not line:
            RECORD["first_use_s"][label] = f"failed: {proc.stderr[-300:]}"
            log(f"  {label}: failed (rc {proc.returncode}) {proc.stderr[-300:]}")
            continue
        inner = json.loads(line[-1])["first_step_s"]
        RECORD["first_use_s"][label] = {"process_s": round(wall, 2), "in_process_s": round(inner, 2)}
        log(f"  {label}: first step done {inner:.2f} s after the script's imports ({wall:.2f} s for "
            f"the whole process)")


# ------------------------------------------------------------------------------------------------
def summarize():
    rows = []
    failed = [c for c in RECORD["checks"] if not c["ok"]]
    rows.append(("correctness checks", f"{len(RECORD['checks']) - len(failed)}/{len(RECORD['checks'])} passed",
                 "; ".join(c["what"] for c in failed)[:300]))
    for B, rec in RECORD["mnist"].items():
        med = rec.get("median_s", {})
        for tool in med:
            rows.append((f"MNIST b{B} {tool}", f"{med[tool] * 1e3:.1f} ms/epoch",
                         f"setup {rec['compile_s'].get(tool)} s; launches/step {rec['launches'].get(tool, '-')}"))
        for base in ("srcgrad-graph", "srcgrad"):
            ratios = rec.get(f"ratios_vs_{base}")
            if ratios:
                rows.append((f"MNIST b{B} epoch / {base} (per-round median)",
                             ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()), ""))
    for name, rec in RECORD["blackscholes"].items():
        rows.append((f"Black-Scholes {name} n={rec['n']}", f"{rec['grads_over_value']:.2f}x map value kernel",
                     f"{rec['grads_over_hand']:.2f}x hand primal (target <= 2x)"))
        rows.append((f"Black-Scholes {name} n={rec['n']}, out= buffers",
                     f"{rec['out_grads_over_value']:.2f}x map value kernel",
                     f"{rec['out_grads_over_hand']:.2f}x hand primal (target <= 2x)"))
    for label, rec in RECORD.get("first_use_s", {}).items():
        if isinstance(rec, dict):
            rows.append((f"first training step, new process: {label}", f"{rec['in_process_s']:.2f} s",
                         f"{rec['process_s']:.2f} s with interpreter start and imports"))
        else:
            rows.append((f"first training step, new process: {label}", rec, ""))
    for k, v in RECORD["launch"].items():
        rows.append((f"launch {k}", f"{v:.2f}", ""))
    for what, value, note in SUMMARY:
        rows.append((what, value, note))
    return rows


def write(out, rows, args):
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(RECORD, indent=1, default=str))
    lines = ["# GPU check (benchmarks/gpu_check.py)", "",
             f"Command: `python benchmarks/gpu_check.py {' '.join(sys.argv[1:])}`; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    for k, v in RECORD.get("environment", {}).items():
        lines.append(f"- {k}: {v}")
    lines += ["", "| what | result | note |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mnist-dir", default=os.environ.get("SRCGRAD_MNIST_DIR"))
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results/gpu_check"))
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a dry run in the simulator)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--options", type=int, default=10 ** 7)
    ap.add_argument("--skip", default="", help="comma-separated sections to skip")
    ap.add_argument("--first-use", default=None, help=argparse.SUPPRESS)   # the child of first_use
    args = ap.parse_args(argv)
    if args.first_use:
        first_use_child(args.first_use, args.quick)
        return 0
    skip = set(filter(None, args.skip.split(",")))
    t0 = time.perf_counter()
    environment()
    if "kernels" not in skip:
        kernels(args.quick)
    if "map" not in skip:
        map_mode(args.quick)
    if "array" not in skip:
        array_mode(args.quick)
    X, y, what = _load(args.mnist_dir, args.quick)
    log(f"\ndata: {what}")
    RECORD["data"] = what
    if "trainers" not in skip:
        trainers((X, y), args.quick)
    if "launch" not in skip:
        launch_overhead(args.quick)
    if "mnist" not in skip:
        mnist((X, y), args.quick, 1 if args.quick else args.rounds)
    if "first_use" not in skip:
        first_use(args.quick)
    if "profile" not in skip and not args.quick:
        profile((X, y), args.quick)
    if "blackscholes" not in skip:
        blackscholes(args.quick, 1000 if args.quick else args.options)
    RECORD["total_s"] = time.perf_counter() - t0
    rows = summarize()
    write(Path(args.out), rows, args)
    log(f"\n== summary ({RECORD['total_s']:.0f} s) ==")
    for a, b, c in rows:
        log(f"{a:55s} {b:40s} {c}")
    failed = [c for c in RECORD["checks"] if not c["ok"]]
    return 1 if failed or SUMMARY else 0


if __name__ == "__main__":
    sys.exit(main())
