#!/usr/bin/env python
"""One-shot GPU check of srcgrad's CUDA backend (for a lent H100; runs in under 5 minutes).

    python scripts/gpu_check.py             # on the GPU machine, from the repo root
    python scripts/gpu_check.py --simulate  # tiny sizes in Numba's CUDA simulator (no GPU)

Sections, each guarded (try/except + time limit) so one failure does not hide the rest:

1. environment: versions, device, ``cuda_mlp.available()``;
2. every kernel against NumPy (float64 references) and, where PyTorch has CUDA, torch;
3. the GPU trainer against the NumPy reference of the same steps (parameters after N steps),
   both with the kernels generated from ``mlp_loss``'s adjoint (CUDA array mode) and with the
   hand-written reference kernels;
4. MNIST, 2 epochs on the GPU (784-128-10, batch 64, SGD momentum) with the generated kernels:
   loss, accuracies, s/epoch;
5. s/epoch at batch 64 and 256, generated and hand-written kernels, against PyTorch eager CUDA on
   the same model and init, with the data preloaded on the GPU; first-use compile time;
6. map mode: Black-Scholes greeks and an RK4 ODE per element against the CPU path, timed.

The report (markdown table) is printed and written to ``$OUT/gpu_check.md`` when ``$OUT`` is set,
else ``benchmarks/results/gpu_check.md`` (``--simulate`` writes ``gpu_check_simulate.md``), after
every section, so a run cut short still leaves its results.  MNIST is read from ``$SRCGRAD_DATA``,
``./shared/data/mnist`` or ``../shared/data/mnist`` (the four IDX .gz files); without it, random
data of MNIST's shape is used for timing and the accuracy lines say so.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--simulate", action="store_true",
                    help="run in the Numba CUDA simulator with tiny sizes (no GPU needed)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, default=None,
                    help="total seconds (default 270 on a GPU, 1200 with --simulate); later "
                         "sections are skipped once it is spent")
    ap.add_argument("--out", default=None, help="report path (default: see module doc)")
    return ap.parse_args()


ARGS = _parse()
if ARGS.budget is None:
    ARGS.budget = 1200.0 if ARGS.simulate else 270.0
if ARGS.simulate:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # must precede the numba import
os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")  # small grids are expected here
import warnings  # noqa: E402

warnings.filterwarnings("ignore", message=".*under-utilization.*")

import numpy as np  # noqa: E402

if not hasattr(np, "row_stack"):  # numba-cuda 0.30.x calls np.row_stack (removed in NumPy 2.5)
    np.row_stack = np.vstack

sys.path.insert(0, str(ROOT))

T_START = time.perf_counter()
REPORT: list[str] = []
RESULTS: dict = {"sections": {}}


def _out_path():
    if ARGS.out:
        return Path(ARGS.out)
    name = "gpu_check_simulate.md" if ARGS.simulate else "gpu_check.md"
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / name
    return ROOT / "benchmarks" / "results" / name


def _write():
    path = _out_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(REPORT) + "\n")
        path.with_suffix(".json").write_text(json.dumps(RESULTS, indent=1, default=str))
    except OSError as exc:
        print(f"[gpu_check] cannot write {path}: {exc}", file=sys.stderr)


def emit(line=""):
    print(line, flush=True)
    REPORT.append(line)


def table(header, rows):
    emit("| " + " | ".join(header) + " |")
    emit("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        emit("| " + " | ".join(str(c) for c in r) + " |")
    emit()


class SectionTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise SectionTimeout()


def section(title, fn, limit_s):
    """Run one section with a time limit; failures are reported, never fatal."""
    emit(f"## {title}")
    emit()
    left = ARGS.budget - (time.perf_counter() - T_START)
    if left < 5:
        emit(f"SKIPPED: time budget spent ({ARGS.budget:.0f} s)")
        emit()
        RESULTS["sections"][title] = "skipped (budget)"
        _write()
        return None
    limit = int(max(5, min(limit_s, left)))
    t0 = time.perf_counter()
    use_alarm = hasattr(signal, "SIGALRM")
    if use_alarm:
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(limit)
    out = None
    try:
        out = fn()
        status = "ok"
    except SectionTimeout:
        status = f"TIMEOUT after {limit} s"
        emit(f"**{status}**")
    except Exception as exc:  # noqa: BLE001 - report and go on
        status = f"ERROR {type(exc).__name__}: {exc}"
        emit(f"**{status}**")
        emit("```")
        emit(traceback.format_exc()[-3000:])
        emit("```")
    finally:
        if use_alarm:
            signal.alarm(0)
    dt = time.perf_counter() - t0
    emit(f"_section time {dt:.1f} s_")
    emit()
    RESULTS["sections"][title] = {"status": status, "seconds": round(dt, 2)}
    _write()
    return out


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _find_mnist():
    cands = []
    if os.environ.get("SRCGRAD_DATA"):
        cands.append(Path(os.environ["SRCGRAD_DATA"]).expanduser())
    cands += [Path.cwd() / "shared" / "data" / "mnist", Path.cwd().parent / "shared" / "data" / "mnist",
              ROOT / "shared" / "data" / "mnist", ROOT.parent / "shared" / "data" / "mnist"]
    for c in cands:
        if all((c / f).is_file() for f in MNIST_FILES):
            return c
    return None


def _read_idx(path, header):
    raw = gzip.decompress(path.read_bytes())
    return np.frombuffer(raw, dtype=np.uint8, offset=header)


def load_data():
    """(Xtr, ytr, Xte, yte, source): float32 in [0, 1] and int64 labels."""
    if ARGS.simulate:
        rng = np.random.default_rng(ARGS.seed)
        n_in = 8
        W = rng.standard_normal((n_in, 10))
        Xtr = rng.standard_normal((48, n_in)).astype(np.float32)
        Xte = rng.standard_normal((24, n_in)).astype(np.float32)
        return (Xtr, (Xtr @ W).argmax(1).astype(np.int64), Xte,
                (Xte @ W).argmax(1).astype(np.int64), "synthetic (simulate: 48x8 train)")
    d = _find_mnist()
    if d is None:
        rng = np.random.default_rng(ARGS.seed)
        Xtr = rng.random((60000, 784), dtype=np.float32)
        Xte = rng.random((10000, 784), dtype=np.float32)
        return (Xtr, rng.integers(0, 10, 60000), Xte, rng.integers(0, 10, 10000),
                "RANDOM data (MNIST not found: accuracies meaningless)")
    Xtr = _read_idx(d / MNIST_FILES[0], 16).reshape(-1, 784).astype(np.float32) / 255.0
    ytr = _read_idx(d / MNIST_FILES[1], 8).astype(np.int64)
    Xte = _read_idx(d / MNIST_FILES[2], 16).reshape(-1, 784).astype(np.float32) / 255.0
    yte = _read_idx(d / MNIST_FILES[3], 8).astype(np.int64)
    return Xtr, ytr, Xte, yte, f"MNIST from {d}"


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------

CTX: dict = {}


def _torch_cuda():
    try:
        import torch

        if torch.cuda.is_available() and not ARGS.simulate:
            return torch
    except Exception:  # noqa: BLE001
        pass
    return None


def sec_environment():
    rows = [("python", platform.python_version()), ("numpy", np.__version__)]
    for mod in ("numba", "numba_cuda", "llvmlite", "torch", "cupy", "cuda.bindings"):
        try:
            m = __import__(mod, fromlist=["__version__"])
            rows.append((mod, getattr(m, "__version__", "?")))
        except Exception as exc:  # noqa: BLE001
            rows.append((mod, f"not importable ({type(exc).__name__})"))
    from srcgrad.training import cuda_mlp

    ok, why = cuda_mlp.available()
    rows.append(("cuda_mlp.available()", f"{ok}: {why}"))
    torch = _torch_cuda()
    rows.append(("torch CUDA", torch.cuda.get_device_name(0) if torch else "no"))
    rows.append(("mode", "SIMULATOR (tiny sizes)" if ARGS.simulate else "GPU"))
    table(["item", "value"], rows)
    RESULTS["environment"] = dict(rows)
    if not ok:
        raise RuntimeError(f"CUDA backend unavailable: {why}")


def _err(got, ref):
    ref = np.asarray(ref, dtype=np.float64)
    scale = max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
    return float(np.abs(np.asarray(got, dtype=np.float64) - ref).max()) / scale


def sec_kernels():
    from numba import cuda

    from srcgrad.backends import cuda_kernels as ck

    torch = _torch_cuda()
    rng = np.random.default_rng(1)
    rows = []
    n_fail = 0
    if ARGS.simulate:
        gemm_sizes = [(6, 9, 10)]
        R, C, V = 5, 10, 21
    else:
        gemm_sizes = [(300, 200, 150), (64, 128, 784), (784, 128, 64), (1, 1, 1)]
        R, C, V = 1000, 10, 100_003

    def record(name, dt, shape, err, tol, terr=None):
        nonlocal n_fail
        ok = err <= tol and (terr is None or terr <= tol)
        n_fail += not ok
        rows.append((name, np.dtype(dt).name, shape, f"{err:.2e}",
                     "" if terr is None else f"{terr:.2e}", f"{tol:.0e}",
                     "PASS" if ok else "**FAIL**"))

    for dt in (np.float32, np.float64):
        tol = 1e-5 if dt == np.float32 else 1e-12
        for (M, N, K) in gemm_sizes:
            for ta in (False, True):
                for tb in (False, True):
                    A = rng.standard_normal((K, M) if ta else (M, K)).astype(dt)
                    B = rng.standard_normal((N, K) if tb else (K, N)).astype(dt)
                    Cd = cuda.device_array((M, N), dtype=dt)
                    ck.gemm(cuda.to_device(A), cuda.to_device(B), Cd, trans_a=ta, trans_b=tb)
                    ref = (A.T if ta else A).astype(np.float64) @ (B.T if tb else B)
                    terr = None
                    if torch is not None:
                        tA, tB = torch.from_numpy(A).cuda(), torch.from_numpy(B).cuda()
                        tr = (tA.T if ta else tA) @ (tB.T if tb else tB)
                        terr = _err(Cd.copy_to_host(), tr.cpu().numpy())
                    e = _err(Cd.copy_to_host(), ref) / max(1.0, np.sqrt(K) / 8)
                    record(f"gemm {'T' if ta else 'N'}{'T' if tb else 'N'}", dt, f"{M}x{N}x{K}",
                           e, tol, None if terr is None else terr / max(1.0, np.sqrt(K) / 8))
        M, N, K = gemm_sizes[0]
        A = rng.standard_normal((M, K)).astype(dt)
        B = rng.standard_normal((K, N)).astype(dt)
        bias = rng.standard_normal(N).astype(dt)
        mask = rng.standard_normal((M, N)).astype(dt)
        base = A.astype(np.float64) @ B
        dA, dB = cuda.to_device(A), cuda.to_device(B)
        Cd = cuda.device_array((M, N), dtype=dt)
        for epi, kw, ref in (("bias", dict(bias=cuda.to_device(bias)), base + bias),
                             ("bias+relu", dict(bias=cuda.to_device(bias), relu=True),
                              np.maximum(base + bias, 0)),
                             ("relu", dict(relu=True), np.maximum(base, 0)),
                             ("relu-mask", dict(mask=cuda.to_device(mask)), base * (mask > 0))):
            ck.gemm(dA, dB, Cd, **kw)
            record(f"gemm NN +{epi}", dt, f"{M}x{N}x{K}", _err(Cd.copy_to_host(), ref), tol)
        Z = (rng.standard_normal((R, C)) * 4).astype(dt)
        y = rng.integers(0, C, R).astype(np.int64)
        Zd = cuda.to_device(Z)
        out = cuda.device_array(R, dtype=dt)
        Z64 = Z.astype(np.float64)
        m = Z64.max(1, keepdims=True)
        lse = (m + np.log(np.exp(Z64 - m).sum(1, keepdims=True)))[:, 0]
        ck.row_max(Zd, out)
        record("row_max", dt, f"{R}x{C}", _err(out.copy_to_host(), Z64.max(1)), tol)
        ck.row_logsumexp(Zd, out)
        record("row_logsumexp", dt, f"{R}x{C}", _err(out.copy_to_host(), lse), tol)
        loss = cuda.device_array(R, dtype=dt)
        corr = cuda.device_array(R, dtype=np.int32)
        dZ = cuda.device_array((R, C), dtype=dt)
        ck.softmax_xent(Zd, cuda.to_device(y), loss, corr, dZ, scale=1.0 / R)
        P = np.exp(Z64 - lse[:, None])
        P[np.arange(R), y] -= 1
        record("softmax_xent loss", dt, f"{R}x{C}",
               _err(loss.copy_to_host(), lse - Z64[np.arange(R), y]), tol)
        record("softmax_xent grad", dt, f"{R}x{C}", _err(dZ.copy_to_host(), P / R), tol)
        record("softmax_xent correct", dt, f"{R}x{C}",
               float(np.sum(corr.copy_to_host() != (Z.argmax(1) == y))), 0)
        X = rng.standard_normal((R, 130 if not ARGS.simulate else 11)).astype(dt)
        cs = cuda.device_array(X.shape[1], dtype=dt)
        ck.col_sum(cuda.to_device(X), cs)
        record("col_sum", dt, f"{X.shape[0]}x{X.shape[1]}",
               _err(cs.copy_to_host(), X.astype(np.float64).sum(0)) / max(1, np.sqrt(R) / 8), tol)
        dX = cuda.device_array(X.shape, dtype=dt)
        G = rng.standard_normal(X.shape).astype(dt)
        ck.relu_backward(cuda.to_device(G), cuda.to_device(X), dX)
        record("relu_backward", dt, f"{X.shape[0]}x{X.shape[1]}",
               _err(dX.copy_to_host(), G * (X > 0)), 0)
        v = rng.standard_normal(V).astype(dt)
        acc = cuda.to_device(np.zeros(2, dtype=dt))
        ck.vec_sum_into(cuda.to_device(v), acc, 0)
        record("vec_sum_into", dt, f"{V}", _err(acc.copy_to_host()[:1], [v.astype(np.float64).sum()])
               / max(1, np.sqrt(V) / 8), tol)
        p, g, vel = (rng.standard_normal(V).astype(dt) for _ in range(3))
        dp, dg, dv = cuda.to_device(p), cuda.to_device(g), cuda.to_device(vel)
        ck.sgd_momentum(dp, dg, dv, 0.1, 0.9, 1e-3)
        vr = 0.9 * vel.astype(np.float64) + g + 1e-3 * p
        record("sgd_momentum", dt, f"{V}", max(_err(dv.copy_to_host(), vr),
                                             _err(dp.copy_to_host(), p - 0.1 * vr)), tol)
        Xs = rng.standard_normal((50, 7)).astype(dt)
        ys = rng.integers(0, 10, 50).astype(np.int64)
        perm = rng.permutation(50).astype(np.int64)
        Xb = cuda.device_array((16, 7), dtype=dt)
        yb = cuda.device_array(16, dtype=np.int64)
        ck.gather_batch(cuda.to_device(Xs), cuda.to_device(ys), cuda.to_device(perm), 20, Xb, yb)
        e = _err(Xb.copy_to_host(), Xs[perm[20:36]]) + float(
            np.sum(yb.copy_to_host() != ys[perm[20:36]]))
        record("gather_batch", dt, "50x7 -> 16", e, 0)
    cuda.synchronize()
    table(["kernel", "dtype", "shape", "max err vs NumPy", "vs torch", "tol", "status"], rows)
    emit("errors: max |got - ref| / max(1, max |ref|), divided by sqrt(K)/8 for long sums")
    emit()
    RESULTS["kernels"] = rows
    if n_fail:
        raise AssertionError(f"{n_fail} kernel check(s) failed")


def sec_agreement():
    from srcgrad.training import cuda_mlp as cm

    Xtr, ytr = CTX["Xtr"], CTX["ytr"]
    n_in = Xtr.shape[1]
    rows = []
    steps = 2 if ARGS.simulate else 30
    bs = 16 if ARGS.simulate else 64
    hidden = 8 if ARGS.simulate else ARGS.hidden
    for dt, tol in ((np.float64, 1e-9), (np.float32, 2e-3)):
        X = Xtr.astype(dt)
        params = cm.init_params(hidden, seed=ARGS.seed, dtype=dt, n_in=n_in)
        st = cm.init_state(params=params, dtype=dt)
        Xd, yd = cm.to_device(X, ytr, dtype=dt)
        perm = cm.epoch_permutation(len(X), ARGS.seed, 0)
        rp = {k: v.copy() for k, v in params.items()}
        rv = {k: np.zeros_like(v) for k, v in params.items()}
        gen = cm.init_state(params=params, dtype=dt)
        g = cm.train_epoch(st, Xd, yd, perm, bs, ARGS.lr, ARGS.momentum, max_steps=steps)
        cm.train_epoch(gen, Xd, yd, perm, bs, ARGS.lr, ARGS.momentum, max_steps=steps,
                       program=cm.generated_program(_mlp_loss()))
        r = cm.numpy_train_epoch(rp, rv, X, ytr, perm, bs, ARGS.lr, ARGS.momentum,
                                 max_steps=steps)
        for name, state in (("hand kernels", st), ("generated adjoint", gen)):
            gp = cm.get_params(state)
            err = max(_err(gp[k], rp[k]) for k in rp)
            ok = err <= tol and (state is gen or abs(g["loss"] - r["loss"]) <= tol * max(1, abs(r["loss"])))
            rows.append((name, np.dtype(dt).name, steps, bs, f"{err:.2e}", f"{tol:.0e}",
                         "PASS" if ok else "**FAIL**"))
    table(["GPU path", "dtype", "steps", "batch", "max param err vs NumPy", "tol", "status"], rows)
    RESULTS["agreement"] = rows


def sec_train():
    from numba import cuda

    from srcgrad.training import cuda_mlp as cm

    Xtr, ytr, Xte, yte = CTX["Xtr"], CTX["ytr"], CTX["Xte"], CTX["yte"]
    n_in = Xtr.shape[1]
    hidden = 8 if ARGS.simulate else ARGS.hidden
    bs = 16 if ARGS.simulate else 64
    st = cm.init_state(params=cm.init_params(hidden, seed=ARGS.seed, n_in=n_in))
    program = cm.generated_program(_mlp_loss())     # training runs srcgrad's generated adjoint kernels
    t0 = time.perf_counter()
    Xd, yd = cm.to_device(Xtr, ytr)
    Xtd, ytd = cm.to_device(Xte, yte)
    cuda.synchronize()
    copy_s = time.perf_counter() - t0
    rows = []
    for ep in range(ARGS.epochs):
        perm = cm.epoch_permutation(len(Xtr), ARGS.seed, ep)
        t0 = time.perf_counter()
        r = cm.train_epoch(st, Xd, yd, perm, bs, ARGS.lr, ARGS.momentum, program=program)
        cuda.synchronize()
        dt_ep = time.perf_counter() - t0
        te_loss, te_acc = cm.evaluate(st, Xtd, ytd)
        _, tr_acc = cm.evaluate(st, Xd, yd)
        rows.append((ep + 1, bs, f"{r['loss']:.4f}", f"{tr_acc:.4f}", f"{te_loss:.4f}",
                     f"{te_acc:.4f}", f"{dt_ep:.3f}" + (" (incl. JIT)" if ep == 0 else "")))
    emit(f"kernels generated from the adjoint of mlp_loss (CUDA array mode); "
         f"data: {CTX['source']}; model {n_in}-{hidden}-10, lr {ARGS.lr}, momentum "
         f"{ARGS.momentum}; host->device copy {copy_s:.3f} s")
    emit()
    table(["epoch", "batch", "train loss", "train acc", "test loss", "test acc", "s/epoch"], rows)
    RESULTS["train"] = rows


def _mlp_loss():
    """The loss examples/train_mnist.py trains (plain NumPy; its gradient kernels are generated)."""
    from srcgrad.training.mlp import mlp_loss

    return mlp_loss


def _srcgrad_epoch_time(bs, hidden, program=None):
    from numba import cuda

    from srcgrad.training import cuda_mlp as cm

    Xtr, ytr = CTX["Xtr"], CTX["ytr"]
    n_in = Xtr.shape[1]
    st = cm.init_state(params=cm.init_params(hidden, seed=ARGS.seed, n_in=n_in))
    if "dev_train" not in CTX:  # copied once, reused by both batch sizes
        CTX["dev_train"] = cm.to_device(Xtr, ytr)
        CTX["dev_test"] = cm.to_device(CTX["Xte"], CTX["yte"])
    Xd, yd = CTX["dev_train"]
    Xtd, ytd = CTX["dev_test"]
    perm = cm.epoch_permutation(len(Xtr), ARGS.seed, 0)
    warm = cm.init_state(params=cm.init_params(hidden, seed=ARGS.seed, n_in=n_in))
    t0 = time.perf_counter()
    cm.train_epoch(warm, Xd, yd, perm, bs, ARGS.lr, ARGS.momentum, max_steps=3,
                   program=program)      # JIT, buffers, plans (and the partial last batch below)
    n = len(Xtr)
    if n % bs:
        cm.train_epoch(warm, Xd, yd, perm[: n % bs], bs, ARGS.lr, ARGS.momentum, program=program)
    cuda.synchronize()
    CTX.setdefault("compile_s", {})[(bs, program is not None)] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cm.train_epoch(st, Xd, yd, perm, bs, ARGS.lr, ARGS.momentum, program=program)
    cuda.synchronize()
    sec = time.perf_counter() - t0
    return sec, cm.evaluate(st, Xtd, ytd)[1]


def _torch_epoch_time(bs, hidden):
    torch = _torch_cuda()
    if torch is None:
        return None, None
    from srcgrad.training import cuda_mlp as cm

    dev = torch.device("cuda")
    Xtr, ytr = CTX["Xtr"], CTX["ytr"]
    n_in = Xtr.shape[1]
    X = torch.from_numpy(Xtr).to(dev)
    y = torch.from_numpy(np.asarray(ytr, dtype=np.int64)).to(dev)
    Xte = torch.from_numpy(CTX["Xte"]).to(dev)
    yte = torch.from_numpy(np.asarray(CTX["yte"], dtype=np.int64)).to(dev)
    p = cm.init_params(hidden, seed=ARGS.seed, n_in=n_in)

    def make():
        model = torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.ReLU(),
                                    torch.nn.Linear(hidden, 10)).to(dev)
        with torch.no_grad():  # same init as the srcgrad run (weights stored transposed there)
            model[0].weight.copy_(torch.from_numpy(p["W1"].T.copy()))
            model[0].bias.copy_(torch.from_numpy(p["b1"]))
            model[2].weight.copy_(torch.from_numpy(p["W2"].T.copy()))
            model[2].bias.copy_(torch.from_numpy(p["b2"]))
        opt = torch.optim.SGD(model.parameters(), lr=ARGS.lr, momentum=ARGS.momentum)
        return model, opt

    perm = torch.from_numpy(cm.epoch_permutation(len(Xtr), ARGS.seed, 0)).to(dev)
    lossf = torch.nn.functional.cross_entropy

    def run(model, opt, max_steps=None):
        n = X.shape[0]
        for i, s in enumerate(range(0, n, bs)):
            if max_steps is not None and i >= max_steps:
                break
            idx = perm[s:s + bs]
            opt.zero_grad(set_to_none=True)
            loss = lossf(model(X[idx]), y[idx])
            loss.backward()
            opt.step()

    m, o = make()
    run(m, o, max_steps=20)  # warm-up (cuBLAS handles, allocator)
    torch.cuda.synchronize()
    m, o = make()
    t0 = time.perf_counter()
    run(m, o)
    torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    with torch.no_grad():
        acc = (m(Xte).argmax(1) == yte).float().mean().item()
    return sec, acc


def sec_timing():
    hidden = 8 if ARGS.simulate else ARGS.hidden
    batches = (16, 24) if ARGS.simulate else (64, 256)
    rows = []
    from srcgrad.training import cuda_mlp as cm
    program = cm.generated_program(_mlp_loss())
    for bs in batches:
        g_sec, g_acc = _srcgrad_epoch_time(bs, hidden, program)
        s_sec, s_acc = _srcgrad_epoch_time(bs, hidden)
        try:
            t_sec, t_acc = _torch_epoch_time(bs, hidden)
            t_note = ""
        except Exception as exc:  # noqa: BLE001
            t_sec, t_acc, t_note = None, None, f"torch failed: {type(exc).__name__}: {exc}"
        ratio = f"{g_sec / t_sec:.2f}" if t_sec else "n/a"
        rows.append((bs, f"{g_sec:.3f}", f"{g_acc:.4f}",
                     f"{CTX['compile_s'][(bs, True)]:.1f}", f"{s_sec:.3f}", f"{s_acc:.4f}",
                     f"{t_sec:.3f}" if t_sec else (t_note or "no torch CUDA"),
                     f"{t_acc:.4f}" if t_acc is not None else "", ratio))
        RESULTS.setdefault("timing", []).append(rows[-1])
    emit(f"one epoch each over {len(CTX['Xtr'])} samples, model {CTX['Xtr'].shape[1]}-{hidden}-10, "
         f"same init and order; data preloaded on the GPU; JIT/warm-up excluded")
    emit()
    table(["batch", "srcgrad generated s/epoch", "test acc", "first-use compile s",
           "hand kernels s/epoch", "test acc", "torch eager s/epoch", "torch test acc",
           "generated/torch"], rows)


def main():
    emit("# srcgrad GPU check")
    emit()
    emit(f"{time.strftime('%Y-%m-%d %H:%M:%S')} — "
         f"{'SIMULATOR run (tiny sizes, timings meaningless)' if ARGS.simulate else 'GPU run'}")
    emit()
    env_ok = section("Environment", sec_environment, 60) is not None or \
        RESULTS["sections"].get("Environment", {}).get("status") == "ok"
    if not env_ok:
        emit("CUDA backend unavailable: remaining sections skipped.")
        _write()
        return 1

    def _data():
        Xtr, ytr, Xte, yte, src = load_data()
        CTX.update(Xtr=Xtr, ytr=ytr, Xte=Xte, yte=yte, source=src)
        emit(f"{src}: train {Xtr.shape}, test {Xte.shape}")
        emit()

    section("Data", _data, 60)
    section("Kernel checks", sec_kernels, 120 if not ARGS.simulate else 300)
    if "Xtr" in CTX:
        section("GPU trainer vs NumPy reference", sec_agreement, 60 if not ARGS.simulate else 300)
        section(f"MNIST training ({ARGS.epochs} epochs)", sec_train, 90 if not ARGS.simulate else 300)
        section("Epoch time vs PyTorch eager CUDA", sec_timing, 90 if not ARGS.simulate else 600)
    total = time.perf_counter() - T_START
    emit(f"total {total:.1f} s; report: {_out_path()}")
    _write()
    bad = [k for k, v in RESULTS["sections"].items() if not (isinstance(v, dict) and v["status"] == "ok")]
    return 1 if bad else 0


# ----------------------------------------------------------------------------------------------
# CUDA map mode (srcgrad.cuda.grad): one thread per element
# ----------------------------------------------------------------------------------------------

import math  # noqa: E402  (used by the map-mode functions below)


def _map_mode_functions():
    import srcgrad
    from srcgrad import rules

    if rules.lookup(math.erf) is None:
        @srcgrad.register_adjoint(math.erf)
        def _erf_rule(result, x):
            d[x] += d[result] * 1.1283791670955126 * np.exp(-x * x)  # noqa: F821
    return _bs_price, _rk4_decay


def _bs_ncdf(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _bs_price(S, K, T, r, sigma):
    sq = sigma * math.sqrt(T)
    d1 = (math.log(S / K) + (r + 0.5 * sigma * sigma) * T) / sq
    d2 = d1 - sq
    return S * _bs_ncdf(d1) - K * math.exp(-r * T) * _bs_ncdf(d2)


def _rk4_decay(y0, k, t1):
    n = 50
    h = t1 / n
    y = y0
    for i in range(n):
        k1 = -k * y * y
        k2 = -k * (y + 0.5 * h * k1) * (y + 0.5 * h * k1)
        k3 = -k * (y + 0.5 * h * k2) * (y + 0.5 * h * k2)
        k4 = -k * (y + h * k3) * (y + h * k3)
        y = y + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return y


def sec_map_mode():
    from numba import cuda
    import srcgrad
    import srcgrad.cuda

    price, rk4 = _map_mode_functions()
    n = 64 if ARGS.simulate else 10_000_000
    n_ode = 16 if ARGS.simulate else 1_000_000
    check = 16 if ARGS.simulate else 200
    reps = 1 if ARGS.simulate else 5

    def timed(fn):
        fn()                       # warm-up (JIT) excluded
        cuda.synchronize()
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        return best

    rows = []
    worst = 0.0
    ref_grad = srcgrad.value_and_grad(price, wrt=(0, 1, 2, 3, 4), target="python")
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(0)
        host = [rng.uniform(70, 130, n), rng.uniform(80, 120, n), rng.uniform(0.2, 2.0, n),
                rng.uniform(0.0, 0.05, n), rng.uniform(0.1, 0.5, n)]
        host = [a.astype(dtype) for a in host]
        dev = [cuda.to_device(a) for a in host]
        vg = srcgrad.cuda.value_and_grad(price, wrt=(0, 1, 2, 3, 4))
        t_primal = timed(lambda: vg.value(*dev))
        t_grad = timed(lambda: vg(*dev))
        value, grads = vg(*dev)
        got_v = value.copy_to_host()[:check]
        got_g = [g.copy_to_host()[:check] for g in grads]
        err = 0.0
        for i in range(check):
            want_v, want_g = ref_grad(*[float(a[i]) for a in host])
            scale = max(1.0, abs(want_v))
            err = max(err, abs(got_v[i] - want_v) / scale,
                      *[abs(g[i] - w) / max(1.0, abs(w)) for g, w in zip(got_g, want_g)])
        tol = 1e-3 if dtype == np.float32 else 1e-9
        worst = max(worst, err / tol)
        rows.append([f"Black-Scholes price + 5 greeks, {dtype.__name__}", f"{n:,}",
                     f"{t_primal * 1e3:.2f}", f"{t_grad * 1e3:.2f}", f"{t_grad / t_primal:.2f}",
                     f"{n / t_grad / 1e9:.2f}", f"{err:.1e} ({'ok' if err < tol else 'FAIL'})"])
        del dev
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(1)
        y0 = rng.uniform(0.5, 2.0, n_ode).astype(dtype)
        k = rng.uniform(0.1, 1.0, n_ode).astype(dtype)
        dy0_dev, k_dev = cuda.to_device(y0), cuda.to_device(k)
        g = srcgrad.cuda.value_and_grad(rk4, wrt=(0, 1))
        t_primal = timed(lambda: g.value(dy0_dev, k_dev, dtype(2.0)))
        t_grad = timed(lambda: g(dy0_dev, k_dev, dtype(2.0)))
        value, (gy0, gk) = g(y0[:check], k[:check], dtype(2.0))
        ref = srcgrad.value_and_grad(rk4, wrt=(0, 1), target="python")
        err = 0.0
        for i in range(min(check, n_ode)):
            want_v, (w0, wk) = ref(float(y0[i]), float(k[i]), 2.0)
            err = max(err, abs(value[i] - want_v), abs(gy0[i] - w0), abs(gk[i] - wk))
        tol = 1e-3 if dtype == np.float32 else 1e-10
        worst = max(worst, err / tol)
        rows.append([f"RK4 ODE (50 steps, tape), {dtype.__name__}", f"{n_ode:,}",
                     f"{t_primal * 1e3:.2f}", f"{t_grad * 1e3:.2f}", f"{t_grad / t_primal:.2f}",
                     f"{n_ode / t_grad / 1e9:.3f}", f"{err:.1e} ({'ok' if err < tol else 'FAIL'})"])
    RESULTS["map_mode"] = rows
    emit("device arrays in and out; best of several runs after a warm-up; `grad/primal` is the "
         "value+gradient kernel over the primal-only kernel; correctness against the python target "
         f"on the first {check} elements (max abs/rel error)")
    emit()
    table(["case", "elements", "primal ms", "value+grad ms", "grad/primal", "G elem/s (grad)",
           "max err vs CPU"], rows)
    if worst >= 1.0:
        raise AssertionError("map mode disagrees with the python target")


def _main_with_map_mode():
    rc = main()
    if RESULTS["sections"].get("Environment", {}).get("status") == "ok":
        section("CUDA map mode (srcgrad.cuda.grad)", sec_map_mode, 150 if not ARGS.simulate else 300)
        bad = [k for k, v in RESULTS["sections"].items()
               if not (isinstance(v, dict) and v["status"] == "ok")]
        rc = 1 if bad else 0
    return rc


if __name__ == "__main__":
    sys.exit(_main_with_map_mode())
