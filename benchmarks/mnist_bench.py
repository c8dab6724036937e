"""MNIST training throughput: seconds per epoch of SGD on the 784-128-10 MLP (float32).

Tools: PyTorch eager (nn.Sequential + optim.SGD), JAX jit per step, JAX whole epoch in
lax.scan, hand-written NumPy backprop, hand-written Numba backprop (whole epoch in one njit),
the BLAS floor (only the five matrix products of each step), and srcgrad via
examples/train_mnist.py when that exists.

Every tool's parameters after a few identical SGD steps are compared with the NumPy reference
before it is timed.
"""

import gzip
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LR = 0.1


# ----------------------------------------------------------------------------------------------
def find_mnist():
    cands = []
    env = os.environ.get("SRCGRAD_DATA")
    if env:
        cands += [Path(env), Path(env) / "mnist"]
    cands.append(REPO.parent / "shared" / "data" / "mnist")
    for c in cands:
        if (c / "train-images-idx3-ubyte.gz").exists():
            return c
    return None


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic >> 8 != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: size mismatch")
    return arr.reshape(dims)


def load_mnist(folder=None):
    folder = Path(folder) if folder else find_mnist()
    if folder is None:
        raise FileNotFoundError("MNIST not found (set SRCGRAD_DATA or ../shared/data/mnist)")
    X = read_idx(folder / "train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255
    y = read_idx(folder / "train-labels-idx1-ubyte.gz").astype(np.int64)
    return np.ascontiguousarray(X), y


def init_params(seed=0):
    rng = np.random.default_rng(seed)
    W1 = (rng.standard_normal((784, 128)) * math.sqrt(2.0 / 784)).astype(np.float32)
    b1 = np.zeros(128, np.float32)
    W2 = (rng.standard_normal((128, 10)) * math.sqrt(1.0 / 128)).astype(np.float32)
    b2 = np.zeros(10, np.float32)
    return [W1, b1, W2, b2]


# ----------------------------------------------------------------------------------------------
# Tools: train(params, X, y, B, nsteps, perm) -> params (numpy, float32); minibatch s is
# samples perm[s*B:(s+1)*B]
# ----------------------------------------------------------------------------------------------

def batch_order(n, seed=0):
    """The shuffled sample order every trainer below walks through (srcgrad's trainer shuffles
    too, so every tool pays for gathering its minibatches)."""
    return np.random.default_rng(seed).permutation(n)


def train_numpy(params, X, y, B, nsteps, perm):
    W1, b1, W2, b2 = [p.copy() for p in params]
    for s in range(nsteps):
        idx = perm[s * B:(s + 1) * B]
        xb = X[idx]
        yb = y[idx]
        a = xb @ W1 + b1
        h = np.maximum(a, 0)
        z = h @ W2 + b2
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        p = e / e.sum(axis=1, keepdims=True)
        p[np.arange(B), yb] -= 1
        p *= np.float32(1.0 / B)
        gW2 = h.T @ p
        gb2 = p.sum(0)
        dh = p @ W2.T
        dh[a <= 0] = 0
        gW1 = xb.T @ dh
        gb1 = dh.sum(0)
        W1 -= LR * gW1
        b1 -= LR * gb1
        W2 -= LR * gW2
        b2 -= LR * gb2
    return [W1, b1, W2, b2]


def train_blas_floor(params, X, y, B, nsteps, perm=None):
    """Only the matrix products of an epoch (forward 2, backward 3) on contiguous slices of X (no
    gather); not a real training run."""
    W1, b1, W2, b2 = [p.copy() for p in params]
    for s in range(nsteps):
        xb = X[s * B:(s + 1) * B]
        h = xb @ W1
        z = h @ W2
        h.T @ z
        dh = z @ W2.T
        xb.T @ dh
    return None


_numba_epoch = None


def _get_numba_epoch():
    global _numba_epoch
    if _numba_epoch is None:
        from numba import njit

        @njit(cache=True, nogil=True)
        def epoch(W1, b1, W2, b2, X, y, perm, B, nsteps, lr):
            Hd = W1.shape[1]
            C = W2.shape[1]
            xb = np.empty((B, X.shape[1]), X.dtype)
            yb = np.empty(B, y.dtype)
            A = np.empty((B, Hd), np.float32)
            P = np.empty((B, C), np.float32)
            inv = np.float32(1.0 / B)
            for s in range(nsteps):
                for i in range(B):
                    j = perm[s * B + i]
                    xb[i, :] = X[j]
                    yb[i] = y[j]
                A[:] = np.dot(xb, W1)
                for i in range(B):
                    for j in range(Hd):
                        v = A[i, j] + b1[j]
                        A[i, j] = v if v > 0 else np.float32(0)
                P[:] = np.dot(A, W2)
                for i in range(B):
                    m = np.float32(-np.inf)
                    for c in range(C):
                        P[i, c] += b2[c]
                        if P[i, c] > m:
                            m = P[i, c]
                    se = np.float32(0)
                    for c in range(C):
                        e = np.exp(P[i, c] - m)
                        P[i, c] = e
                        se += e
                    for c in range(C):
                        P[i, c] = P[i, c] / se * inv
                    P[i, yb[i]] -= inv
                gW2 = np.dot(A.T, P)
                dA = np.dot(P, W2.T)
                for c in range(C):
                    acc = np.float32(0)
                    for i in range(B):
                        acc += P[i, c]
                    b2[c] -= lr * acc
                for j in range(Hd):
                    acc = np.float32(0)
                    for i in range(B):
                        if A[i, j] <= 0:
                            dA[i, j] = 0
                        acc += dA[i, j]
                    b1[j] -= lr * acc
                gW1 = np.dot(xb.T, dA)
                W2 -= lr * gW2
                W1 -= lr * gW1
            return W1, b1, W2, b2
        _numba_epoch = epoch
    return _numba_epoch


def train_numba(params, X, y, B, nsteps, perm):
    W1, b1, W2, b2 = [p.copy() for p in params]
    ep = _get_numba_epoch()
    ep(W1, b1, W2, b2, X, y, perm, B, nsteps, np.float32(LR))
    return [W1, b1, W2, b2]


def train_torch(params, X, y, B, nsteps, perm):
    import torch
    model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(params[0].T.copy()))
        model[0].bias.copy_(torch.from_numpy(params[1]))
        model[2].weight.copy_(torch.from_numpy(params[2].T.copy()))
        model[2].bias.copy_(torch.from_numpy(params[3]))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    lossf = torch.nn.CrossEntropyLoss()
    Xt = torch.from_numpy(X)
    yt = torch.from_numpy(y)
    order = torch.from_numpy(perm)
    for s in range(nsteps):
        idx = order[s * B:(s + 1) * B]
        xb = Xt[idx]
        yb = yt[idx]
        opt.zero_grad()
        loss = lossf(model(xb), yb)
        loss.backward()
        opt.step()
    return [model[0].weight.detach().numpy().T.copy(), model[0].bias.detach().numpy().copy(),
            model[2].weight.detach().numpy().T.copy(), model[2].bias.detach().numpy().copy()]


def _jax_fns():
    import jax
    import jax.numpy as jnp

    def loss(params, xb, yb):
        W1, b1, W2, b2 = params
        h = jnp.maximum(xb @ W1 + b1, 0.0)
        z = h @ W2 + b2
        z = z - jnp.max(z, axis=1, keepdims=True)
        lse = jnp.log(jnp.sum(jnp.exp(z), axis=1))
        return jnp.mean(lse - z[jnp.arange(xb.shape[0]), yb])

    def update(params, xb, yb):
        g = jax.grad(loss)(params, xb, yb)
        return tuple(p - LR * gp for p, gp in zip(params, g))

    def epoch(params, Xb, Yb):
        def body(p, batch):
            return update(p, batch[0], batch[1]), None
        return jax.lax.scan(body, params, (Xb, Yb))[0]

    return jax.jit(update), jax.jit(epoch)


_JAX = {}


def train_jax_step(params, X, y, B, nsteps, perm):
    import jax
    if "step" not in _JAX:
        _JAX["step"], _JAX["epoch"] = _jax_fns()
    upd = _JAX["step"]
    p = tuple(jax.numpy.asarray(a) for a in params)
    for s in range(nsteps):
        idx = perm[s * B:(s + 1) * B]
        p = upd(p, X[idx], y[idx].astype(np.int32))
    return [np.asarray(a) for a in jax.block_until_ready(p)]


def train_jax_scan(params, X, y, B, nsteps, perm):
    import jax
    if "step" not in _JAX:
        _JAX["step"], _JAX["epoch"] = _jax_fns()
    order = perm[:nsteps * B]
    Xb = jax.numpy.asarray(X[order].reshape(nsteps, B, 784))
    Yb = jax.numpy.asarray(y[order].reshape(nsteps, B).astype(np.int32))
    p = _JAX["epoch"](tuple(jax.numpy.asarray(a) for a in params), Xb, Yb)
    return [np.asarray(a) for a in jax.block_until_ready(p)]


def srcgrad_epoch(X, y, B, nsteps, threads, epochs=1):
    """srcgrad's own trainer: examples/train_mnist.py train(arrays=..., epochs=epochs, sgd).

    Returns (median seconds per epoch as the example measures them (compile excluded), train loss
    after the first epoch).
    """
    path = REPO / "examples" / "train_mnist.py"
    if not path.exists():
        raise FileNotFoundError("examples/train_mnist.py not found")
    spec = importlib.util.spec_from_file_location("train_mnist_example", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod     # srcgrad and Numba's on-disk cache look the module up by name
    spec.loader.exec_module(mod)
    n = nsteps * B
    out = mod.train(arrays=(X[:n], y[:n], X[:100], y[:100]), epochs=epochs, batch_size=B, lr=LR,
                    optimizer="sgd", threads=threads, quiet=True, download=False,
                    log=lambda *a, **k: None)
    h = out["history"]
    return float(np.median(h["seconds"])), float(h["train_loss"][0])


# One epoch of examples/train_mnist.py in a fresh process, on random data of MNIST's shape: its
# compile_seconds (the compile before epoch 1, which the epoch clock leaves out).
_COMPILE_RUN = r"""
import importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("train_mnist_example", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod
spec.loader.exec_module(mod)
B, threads = int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
X = rng.random((2 * B, 784), dtype=np.float32)
y = rng.integers(0, 10, 2 * B)
out = mod.train(arrays=(X, y, X[:B], y[:B]), epochs=1, batch_size=B, lr=0.1, optimizer="sgd",
                threads=threads, quiet=True, download=False, log=lambda *a, **k: None)
print(json.dumps(out["compile_seconds"]))
"""


def srcgrad_compile(B, threads, timeout=1200):
    """The first-epoch compile of examples/train_mnist.py, in two fresh processes sharing a new
    SRCGRAD_CACHE_DIR and NUMBA_CACHE_DIR: "cold" (nothing cached: source transformation + Numba compile) then
    "warm" (generated module and machine code loaded from the cache). Each: {"gradient": s,
    "loop": s} as the script measures them (the training loop: srcgrad.optim.MinibatchLoop, loaded
    from Numba's cache when warm, and the accuracy counter, compiled in every process)."""
    path = REPO / "examples" / "train_mnist.py"
    cache = tempfile.mkdtemp(prefix="srcgrad-mnist-compile-")
    # a fresh Numba cache as well: srcgrad's own compiled library functions (MinibatchLoop, the
    # optimizer kernels, runtime helpers) count as compile work in the cold run
    env = dict(os.environ, SRCGRAD_CACHE_DIR=cache, NUMBA_CACHE_DIR=os.path.join(cache, "numba"))
    out = {}
    try:
        for label in ("cold", "warm"):
            proc = subprocess.run([sys.executable, "-c", _COMPILE_RUN, str(path), str(B), str(threads)],
                                  env=env, capture_output=True, text=True, timeout=timeout)
            if proc.returncode != 0:
                raise RuntimeError(f"{label} run failed: {proc.stderr.strip().splitlines()[-1:]}")
            out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return out


TOOLS = [
    ("numpy backprop", "numpy", lambda: train_numpy),
    ("numba backprop (epoch in one njit)", "numba", lambda: train_numba),
    ("torch eager", "torch", lambda: train_torch),
    ("jax jit per step", "jax", lambda: train_jax_step),
    ("jax lax.scan epoch", "jax", lambda: train_jax_scan),
    ("srcgrad (examples/train_mnist.py)", "srcgrad", None),
    ("BLAS floor (matmuls only)", "numpy", lambda: train_blas_floor),
]


def run(batches=(64, 256), quick=False, log=print, quick_steps=300, reps=None, threads=1):
    """Returns (records, note)."""
    try:
        X, y = load_mnist()
    except Exception as e:
        return [dict(tool="all", batch="-", status=f"missing data: {e}")], ""
    n = X.shape[0]
    params = init_params()
    recs = []
    reps = reps or (1 if quick else 3)   # each tool: the median of reps epochs
    for B in batches:
        spe = n // B
        nsteps = min(spe, quick_steps) if quick else spe
        perm = batch_order(n)
        ref = train_numpy(params, X, y, B, 5, perm)
        for label, pkg, getter in TOOLS:
            r = dict(tool=label, batch=B)
            recs.append(r)
            try:
                if pkg not in ("numpy", "numba", "srcgrad"):
                    __import__(pkg)
            except ImportError:
                r["status"] = "missing"
                log(f"  mnist B={B} {label}: missing")
                continue
            if getter is None:       # srcgrad: its own trainer and clock
                try:
                    secs, tl = srcgrad_epoch(X, y, B, nsteps, threads, epochs=reps)
                    if not math.isfinite(tl) or tl > 2.3:
                        r["status"] = f"WRONG (train loss {tl:.3f} after one epoch)"
                    else:
                        r["status"] = f"ok (train loss {tl:.3f})"
                        r["s_per_epoch"] = secs * spe / nsteps
                        r["measured"] = (f"its own epoch clock, {nsteps} steps x{reps}, "
                                         "shuffled, compile excluded")
                except Exception as e:
                    from benchmarks.lib.harness import short_error
                    r["status"] = "failed: " + short_error(e)
                log(f"  mnist B={B} {label}: {r['status']} {r.get('s_per_epoch', '')}")
                continue
            try:
                train = getter()
                out = train(params, X, y, B, 5, perm)
                if out is not None:
                    err = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))
                              for a, b in zip(out, ref))
                    if not err < 1e-3:
                        r["status"] = f"WRONG (params after 5 steps, rel err {err:.1e})"
                        log(f"  mnist B={B} {label}: {r['status']}")
                        continue
                if label.startswith("jax lax.scan"):
                    train(params, X, y, B, nsteps, perm)   # compile for this epoch length
                ts = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    train(params, X, y, B, nsteps, perm)
                    ts.append(time.perf_counter() - t0)
                t = float(np.median(ts))
                r["s_per_epoch"] = t * spe / nsteps
                r["measured"] = (f"{nsteps} steps x{reps}" + (" (extrapolated to "
                                 f"{spe} steps)" if nsteps != spe else " (full epoch)"))
                r["status"] = "ok"
            except Exception as e:
                from benchmarks.lib.harness import short_error
                r["status"] = "failed: " + short_error(e)
            log(f"  mnist B={B} {label}: {r['status']} {r.get('s_per_epoch', '')}")
        sg = next((r for r in recs if r["batch"] == B and r["tool"].startswith("srcgrad (")
                   and r.get("s_per_epoch")), None)
        if sg:
            for r in recs:
                if r["batch"] == B and r.get("s_per_epoch"):
                    r["x_srcgrad"] = r["s_per_epoch"] / sg["s_per_epoch"]
    if not quick:
        B = batches[0]
        try:
            compiled = srcgrad_compile(B, threads)
        except Exception as e:
            from benchmarks.lib.harness import short_error
            compiled = {"error": short_error(e)}
        for label, where in (("cold", "fresh process, empty SRCGRAD_CACHE_DIR: source transformation "
                                      "and Numba compile"),
                             ("warm", "fresh process, same SRCGRAD_CACHE_DIR: generated module and "
                                      "machine code loaded")):
            r = dict(tool=f"srcgrad compile before epoch 1, {label} cache", batch=B, measured=where)
            c = compiled.get(label)
            if c is None:
                r["status"] = "failed: " + compiled.get("error", "?")
            else:
                r["compile_s"] = c
                r["status"] = (f"ok: {c['gradient'] + c['loop']:.1f} s (gradient {c['gradient']:.1f} s, "
                               f"training loop {c['loop']:.1f} s)")
            recs.append(r)
            log(f"  mnist srcgrad compile ({label} cache): {r['status']}")
    note = (f"60,000 training images, SGD lr={LR}, float32, last partial batch dropped; every trainer "
            "gathers shuffled minibatches (one fixed permutation), except the BLAS floor, which "
            "multiplies contiguous slices. "
            f"s/epoch is the median of {reps} epochs per tool (after a warm-up). "
            "Every tool's parameters after 5 SGD steps were compared with the NumPy backprop "
            "(rel. tol 1e-3) before timing. Data loading/decompression is not timed; JAX "
            "per-step feeds NumPy batches (host->device each step), the lax.scan epoch includes "
            "placing the epoch's data once (compile excluded). srcgrad contract: "
            "examples/train_mnist.py train(arrays=..., epochs=reps, optimizer='sgd'): its own per-epoch "
            "clock (shuffled batches, one compiled srcgrad.optim.MinibatchLoop call per epoch, compile "
            "excluded). The compile rows time "
            "what the script compiles before its first epoch (train(...)['compile_seconds']), in "
            "fresh processes: the gradient (srcgrad transform + Numba, or the cache load) and the "
            "training loop (MinibatchLoop from Numba's cache when warm; the accuracy counter is "
            "compiled in every process).")
    return recs, note
