#!/usr/bin/env python
"""Train a 784 -> H (ReLU) -> 10 MLP on MNIST with gradients from srcgrad.

The loss (``mlp_loss`` from ``srcgrad.training.mlp``, shown below) is an ordinary NumPy
function. srcgrad turns it into a compiled function that
returns the loss and its gradient; ``srcgrad.optim.MinibatchLoop`` calls it inside one compiled
training loop together with a compiled optimizer update from ``srcgrad.optim``::

    python examples/train_mnist.py --data /path/to/mnist --epochs 10
    python examples/train_mnist.py --epochs 2 --save ck.npz && \\
        python examples/train_mnist.py --epochs 4 --resume ck.npz --save ck.npz
    mpiexec -n 2 python examples/train_mnist.py --distributed    # data-parallel over MPI ranks

Exit codes: 0 success, 1 data/checkpoint/srcgrad error, 2 bad usage or unavailable device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script from a source checkout
    _root = str(Path(__file__).resolve().parents[1])
    if _root not in sys.path:
        sys.path.insert(0, _root)


def _preset_blas_threads(argv):
    """``--threads N`` from the command line also caps the BLAS threads (the matrix products);
    the environment variables only work before the BLAS library starts its thread pool."""
    n = None
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            n = argv[i + 1]
        elif a.startswith("--threads="):
            n = a.split("=", 1)[1]
    if n is not None and n.isdigit() and int(n) > 0:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = n


if __name__ == "__main__":
    _preset_blas_threads(sys.argv[1:])

import numba  # noqa: E402

from srcgrad.datasets import MNIST_SCALE, DatasetError, load_mnist  # noqa: E402
from srcgrad.errors import SrcgradError  # noqa: E402
from srcgrad.compile_gc import fewer_collections  # noqa: E402
from srcgrad.fileio import write_atomic  # noqa: E402
from srcgrad.optim import MinibatchLoop, make_optimizer  # noqa: E402
from srcgrad.training.mlp import (  # noqa: E402
    N_IN,
    N_OUT,  # noqa: F401  (part of this script's namespace: tests read tm.N_OUT)
    PARAM_NAMES,
    epoch_permutation,
    init_params,
    mlp_loss,
)
from srcgrad.training import compile_ahead  # noqa: E402
from srcgrad.training.mlp_eval import accuracy, count_correct  # noqa: E402
CHECKPOINT_VERSION = 1

DEFAULTS = dict(
    epochs=10,
    batch_size=64,
    optimizer="momentum",
    momentum=0.9,
    lr_decay=0.8,
    hidden=128,
    seed=0,
    mode="epoch",
    dtype="float32",
)
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.1, "adam": 1e-3}


class UsageError(Exception):
    """Bad options or an unavailable device: exit code 2."""


# ------------------------------------------------------------------------------------------------
# The model: ``mlp_loss``, ``init_params`` and ``epoch_permutation`` live in srcgrad.training.mlp
# (one definition shared with the GPU trainer, the benchmarks and the tests). The loss is plain
# NumPy, written like any NumPy user would:
#
#     def mlp_loss(W1, b1, W2, b2, X, y):
#         h = np.maximum(X @ W1 + b1, 0.0)
#         z = h @ W2 + b2
#         m = np.max(z, axis=1, keepdims=True)
#         lse = np.log(np.sum(np.exp(z - m), axis=1)) + m[:, 0]
#         return np.mean(lse - z[np.arange(X.shape[0]), y])
# ------------------------------------------------------------------------------------------------


def make_loss_and_grads():
    """``value_and_grad`` of the loss with respect to the four parameters, from srcgrad."""
    from srcgrad import value_and_grad

    loss_and_grads = value_and_grad(mlp_loss, wrt=(0, 1, 2, 3))
    return loss_and_grads


def lr_at(config, epoch):
    """Learning rate of an epoch (counted from 0): ``lr * lr_decay**epoch``."""
    return float(config["lr"] * config.get("lr_decay", 1.0) ** epoch)


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------

HISTORY_KEYS = ("train_loss", "train_acc", "test_acc", "seconds", "images_per_s")


def save_checkpoint(path, params, optimizer, epoch, config, history):
    """Write an .npz atomically (temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    arrays = {f"param.{k}": p for k, p in zip(PARAM_NAMES, params)}
    for k, v in optimizer.state_dict().items():
        arrays[f"opt.{k}"] = v
    for k in HISTORY_KEYS:
        arrays[f"history.{k}"] = np.asarray(history[k], dtype=np.float64)
    arrays["epoch"] = np.array(epoch, dtype=np.int64)
    # the batch order of epoch e is default_rng([seed, e]): (seed, epoch) is the whole RNG state
    arrays["rng_seed"] = np.array(config["seed"], dtype=np.int64)
    arrays["config"] = np.array(json.dumps(config, sort_keys=True))
    arrays["version"] = np.array(CHECKPOINT_VERSION, dtype=np.int64)
    write_atomic(path, lambda handle: np.savez(handle, **arrays))


def load_checkpoint(path):
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise UsageError(f"--resume: checkpoint {path} does not exist") from None
    except Exception as exc:
        raise SrcgradError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    try:
        if int(d["version"]) != CHECKPOINT_VERSION:
            raise SrcgradError(f"checkpoint {path}: unsupported version {int(d['version'])}")
        config = json.loads(str(d["config"]))
        params = tuple(np.ascontiguousarray(d[f"param.{k}"]) for k in PARAM_NAMES)
        opt_state = {k[4:]: v for k, v in d.items() if k.startswith("opt.")}
        history = {k: [float(x) for x in d[f"history.{k}"]] for k in HISTORY_KEYS}
        epoch = int(d["epoch"])
    except KeyError as exc:
        raise SrcgradError(f"checkpoint {path} is incomplete: missing {exc}") from None
    return params, opt_state, epoch, config, history


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


def _check_plot_available():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(
            "--plot needs matplotlib, which is not installed "
            "(pip install matplotlib, or pip install 'srcgrad[plot]')"
        ) from None


def save_plot(path, history):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = np.arange(1, len(history["train_loss"]) + 1)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, history["train_loss"], "o-")
    a1.set_xlabel("epoch")
    a1.set_ylabel("train loss")
    a1.set_yscale("log")
    a2.plot(ep, np.asarray(history["train_acc"]) * 100, "o-", label="train")
    a2.plot(ep, np.asarray(history["test_acc"]) * 100, "o-", label="test")
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy (%)")
    a2.legend()
    fig.tight_layout()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".png", dir=path.parent or ".")
    os.close(fd)
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _cuda_backend():
    try:
        from srcgrad.training import cuda_mlp
    except Exception as exc:
        raise UsageError(
            f"--device cuda: the CUDA backend cannot be imported ({type(exc).__name__}: {exc})"
        ) from None
    ok, why = cuda_mlp.available()
    if not ok:
        raise UsageError(f"--device cuda: no usable CUDA device: {why}")
    # Numba warns about every launch of fewer than 128 blocks; a batch of 64 rows is such a
    # launch by design (the step is latency-bound), so the warning says nothing here.
    import warnings
    from numba.core.errors import NumbaPerformanceWarning
    warnings.filterwarnings("ignore", category=NumbaPerformanceWarning)
    return cuda_mlp


def _set_threads(threads):
    if threads is None:
        return
    if threads < 1 or threads > numba.config.NUMBA_NUM_THREADS:
        raise UsageError(
            f"--threads must be between 1 and {numba.config.NUMBA_NUM_THREADS}, got {threads}"
        )
    numba.set_num_threads(threads)
    try:  # BLAS threads of an already started BLAS (optional dependency)
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:
        pass  # the script sets OPENBLAS_NUM_THREADS etc. before importing numba instead


def train(
    data=None,
    epochs=DEFAULTS["epochs"],
    batch_size=DEFAULTS["batch_size"],
    lr=None,
    optimizer=DEFAULTS["optimizer"],
    momentum=DEFAULTS["momentum"],
    lr_decay=DEFAULTS["lr_decay"],
    hidden=DEFAULTS["hidden"],
    seed=DEFAULTS["seed"],
    threads=None,
    save=None,
    resume=None,
    plot=None,
    device="cpu",
    cuda_kernels="generated",
    limit_train=None,
    quiet=False,
    mode=DEFAULTS["mode"],
    dtype=DEFAULTS["dtype"],
    download=True,
    arrays=None,
    loss_and_grads=None,
    log=print,
    distributed=False,
):
    """Train and return ``{"params", "history", "optimizer", "epoch", "config",
    "compile_seconds"}``; on cpu ``compile_seconds`` is ``{"gradient": s, "loop": s}`` spent
    compiling before the first epoch (the epoch times leave it out), None when no epoch ran.
    ``accuracy_compile`` (cpu, one process): the accuracy counter compiled in a thread during
    epoch 1 (``{"seconds": its compile, wall; "waited": s epoch 1's evaluation waited for it}``),
    None when it was compiled before epoch 1 (``distributed``) or no epoch ran.

    ``arrays`` may give ``(X_train, y_train, X_test, y_test)`` directly instead of loading MNIST;
    ``loss_and_grads`` may give another object with srcgrad's ``value_and_grad`` contract.

    ``distributed=True`` (run under ``mpiexec -n N``): data-parallel training over the MPI ranks
    (srcgrad.distributed.DataParallelLoop); each global minibatch of ``batch_size`` samples is
    split between the ranks, so the run follows the 1-process run with the same batch size.
    Rank 0 reads the checkpoint and gives it to the others; only rank 0 logs and writes the
    checkpoints and the plot; every rank returns the same parameters and history.
    """
    dist = _distributed() if distributed else None
    is_root = dist is None or dist.rank() == 0
    if dist is not None and device != "cpu":
        raise UsageError("--distributed trains on the cpu device only")
    if device not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu or cuda, got {device!r}")
    if mode not in ("epoch", "step"):
        raise UsageError(f"--mode must be epoch or step, got {mode!r}")
    if plot is not None and is_root:
        _check_plot_available()
    _set_threads(threads)
    quiet_log = quiet or not is_root

    # --- configuration (a resumed run takes the training configuration of its checkpoint) ---
    if resume is None:
        ckpt = None
    elif dist is None:
        ckpt = load_checkpoint(resume)
    else:  # rank 0 reads it (the other machines need no copy): every rank gets it or its error
        ckpt = dist.on_root(lambda: load_checkpoint(resume))
    if ckpt is not None:
        config = dict(ckpt[3])
    else:
        if optimizer not in DEFAULT_LR:
            raise UsageError(f"--optimizer must be one of {sorted(DEFAULT_LR)}")
        config = dict(
            batch_size=int(batch_size),
            lr=float(DEFAULT_LR[optimizer] if lr is None else lr),
            optimizer=optimizer,
            momentum=float(momentum),
            lr_decay=float(lr_decay),
            hidden=int(hidden),
            seed=int(seed),
            limit_train=None if limit_train is None else int(limit_train),
            dtype=str(np.dtype(dtype)),
        )
    if config.setdefault("dtype", "float32") not in ("float32", "float64"):
        raise UsageError(f"--dtype must be float32 or float64, got {config['dtype']!r}")
    if config["batch_size"] < 1 or config["hidden"] < 1 or epochs < 0:
        raise UsageError("--batch-size, --hidden must be >= 1 and --epochs >= 0")
    cuda_mlp = None
    if device == "cuda":
        cuda_mlp = _cuda_backend()
        if config["optimizer"] == "adam":
            raise UsageError("--device cuda supports --optimizer sgd or momentum")

    # --- data ---
    fdt = np.dtype(config["dtype"])
    x_scale = None
    if arrays is None:
        # the files' uint8 pixels (a quarter of float32's bytes to read each epoch), converted to
        # float32 batch by batch in the training loop's gather (MinibatchLoop's x_scale): the same
        # values as load_mnist()'s float32 images. The cuda trainer, the MPI ranks and float64
        # runs take those float32 images (float64: converted from them, as before).
        arrays = load_mnist(data, download=download, raw=True)
        x_scale = MNIST_SCALE
    X_train, y_train, X_test, y_test = arrays
    if config["limit_train"] is not None:
        X_train = X_train[: config["limit_train"]]
        y_train = y_train[: config["limit_train"]]
    if x_scale is not None and (device != "cpu" or dist is not None or fdt != np.float32):
        X_train, X_test = (X * np.float32(x_scale) for X in (X_train, X_test))
        x_scale = None
    X_train = np.ascontiguousarray(X_train, dtype=fdt if x_scale is None else None)
    X_test = np.ascontiguousarray(X_test, dtype=fdt if x_scale is None else None)
    y_train = np.ascontiguousarray(y_train, dtype=np.int64)
    y_test = np.ascontiguousarray(y_test, dtype=np.int64)
    n = X_train.shape[0]
    if n == 0:
        raise UsageError("no training samples")
    bs = config["batch_size"]

    # --- model and optimizer state ---
    if ckpt is not None:
        params, opt_state, start_epoch, _, history = ckpt
        if params[0].shape != (N_IN, config["hidden"]):
            raise SrcgradError(f"checkpoint {resume}: W1 has shape {params[0].shape}")
    else:
        params = init_params(config["hidden"], config["seed"], dtype=fdt)
        opt_state, start_epoch = None, 0
        history = {k: [] for k in HISTORY_KEYS}
    if dist is not None:  # the same starting point on every rank, whatever each computed
        params = dist.broadcast(params)
    hyper = dict(lr=config["lr"])
    if config["optimizer"] == "momentum":
        hyper["momentum"] = config["momentum"]
    opt = make_optimizer(config["optimizer"], params, **hyper)
    if opt_state is not None:
        opt.load_state_dict(opt_state)

    if start_epoch >= epochs and not quiet_log:
        log(f"checkpoint is already at epoch {start_epoch} >= --epochs {epochs}; nothing to do")

    if device == "cuda":
        params = _train_cuda(cuda_mlp, params, opt, config, X_train, y_train, X_test, y_test,
                             start_epoch, epochs, history, save, quiet, log, cuda_kernels)
    else:
        compile_s, counter = _train_cpu(params, opt, config, X_train, y_train, X_test, y_test,
                                        start_epoch, epochs, history, save if is_root else None,
                                        quiet, mode, loss_and_grads, log, dist, x_scale)
    if plot is not None and is_root:
        save_plot(plot, history)
    return {"params": params, "history": history, "optimizer": opt,
            "epoch": max(start_epoch, epochs), "config": config,
            "compile_seconds": compile_s if device == "cpu" else None,
            "accuracy_compile": counter if device == "cpu" else None}


def _epoch_line(epoch, epochs, rec):
    return (f"epoch {epoch:3d}/{epochs}  train loss {rec[0]:.4f}  train acc {rec[1] * 100:6.2f}%"
            f"  test acc {rec[2] * 100:6.2f}%  {rec[3]:6.2f} s  {rec[4]:8.0f} images/s")


def _record(history, *rec):
    for k, v in zip(HISTORY_KEYS, rec):
        history[k].append(float(v))


def _train_cpu(params, opt, config, X_train, y_train, X_test, y_test, start_epoch, epochs,
               history, save, quiet, mode, loss_and_grads, log, dist=None, x_scale=None):
    """The cpu epochs; ``x_scale``: X holds integer pixels, converted by the loop's gather and
    the accuracy count (one process only)."""
    if loss_and_grads is None:
        loss_and_grads = make_loss_and_grads()
    scaled = {} if x_scale is None else {"x_scale": x_scale}   # (DataParallelLoop: float X)
    if dist is None:
        # gather each shuffled minibatch, loss and gradients from srcgrad, optimizer update: one
        # compiled call for many minibatches (srcgrad.optim.MinibatchLoop)
        train_loop = MinibatchLoop(loss_and_grads, opt)

        def evaluate(params, X, y):
            return accuracy(params, X, y, x_scale=x_scale)
    else:
        # the same on every rank for its shard of each minibatch, one allreduce of the
        # gradients per step; the accuracy counted on a slice of the samples per rank
        train_loop = dist.DataParallelLoop(loss_and_grads, opt)

        def evaluate(params, X, y):
            return _distributed_accuracy(dist, params, X, y)
    # the chunking below must be the same on every rank (it decides the calls' batches)
    show = not quiet and (dist is None or dist.rank() == 0)
    n = X_train.shape[0]
    bs = config["batch_size"]
    n_batches = -(-n // bs)
    opt.lr = lr_at(config, start_epoch)
    if mode == "step" or not quiet:
        # a compiled call per step, or ~50 calls per epoch so the progress bar moves
        per_call = 1 if mode == "step" else max(1, n_batches // 50)
    else:
        per_call = n_batches
    compile_s = counter = None
    if start_epoch < epochs:  # compile before the clock starts; timed and reported on its own
        compile_s, counter = _compile_cpu(loss_and_grads, train_loop, params, X_train, y_train,
                                          X_test, y_test, bs, dist, x_scale)
        if show:
            log(_compile_line(compile_s))
    for epoch in range(start_epoch, epochs):
        opt.lr = lr_at(config, epoch)
        perm = epoch_permutation(n, config["seed"], epoch)
        bar = None
        if show:
            from tqdm import tqdm

            bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                       leave=False, file=sys.stderr)
        t0 = time.perf_counter()
        total = 0.0
        for b0 in range(0, n_batches, per_call):
            b1_ = min(b0 + per_call, n_batches)
            total += train_loop(params, X_train, y_train, perm, bs, b0, b1_, **scaled)
            if bar is not None:
                bar.update(b1_ - b0)
                bar.set_postfix(loss=f"{total / min(b1_ * bs, n):.4f}", refresh=False)
        secs = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        if counter is not None and "thread" in counter:   # the accuracy counter's compile
            thread = counter.pop("thread")
            counter.update(waited=thread.finish(), seconds=thread.seconds)
        rec = (total / n, evaluate(params, X_train, y_train), evaluate(params, X_test, y_test),
               secs, n / secs)
        _record(history, *rec)
        if show:
            log(_epoch_line(epoch + 1, epochs, rec))
        if save is not None:
            save_checkpoint(save, params, opt, epoch + 1, config, history)
    return compile_s, counter


def _distributed():
    try:
        from srcgrad import distributed
        distributed.world()
    except Exception as exc:
        raise UsageError(f"--distributed: {exc}") from None
    return distributed


def _distributed_accuracy(dist, params, X, y):
    """Accuracy counted by the ranks on consecutive slices of the samples, summed over them."""
    if X.shape[0] == 0:
        return float("nan")
    lo, hi = dist.shard_bounds(X.shape[0], dist.rank(), dist.size())
    mine = count_correct(*params, X[lo:hi], y[lo:hi], 2048) if hi > lo else 0
    return dist.world().allreduce(int(mine)) / X.shape[0]


def _compile_cpu(loss_and_grads, train_loop, params, X_train, y_train, X_test, y_test, bs,
                 dist=None, x_scale=None):
    """Compile everything the epochs run, timing the parts: ``{"gradient": s, "loop": s}``.

    ``gradient``: srcgrad's gradient for the batch's types (the source transformation and
    Numba's compile of the generated module, or their loading from ``SRCGRAD_CACHE_DIR`` when an
    earlier run left them there); ``loop``: the rest, the training loop and the accuracy counter
    (compiled once, then loaded from Numba's cache; in one process the accuracy counter is
    compiled in a thread during epoch 1 instead: the second value returned, see
    _BackgroundCompile). The training loop's first call compiles the gradient it runs (with plain SGD, the fused step: the plain gradient is not compiled at all);
    with ``SRCGRAD_COMPILE_AHEAD=1`` (opt-in) and empty caches, the loop's own pieces and the
    accuracy counter compile meanwhile in a helper process (srcgrad.training.compile_ahead; on
    Linux a fork of this one).
    Nothing is trained (the loop runs over no batches)."""
    t0 = time.perf_counter()
    if dist is not None:  # several ranks on a machine: the first compiles, the others load its code
        Xb = np.zeros((bs,) + X_train.shape[1:], X_train.dtype)
        dist.node_leader_first(lambda: loss_and_grads(*params, Xb, np.zeros(bs, y_train.dtype)))
        t1 = time.perf_counter()
        train_loop(params, X_train, y_train, np.arange(X_train.shape[0]), bs, 0, 0)
    else:
        # the accuracy counter counts float images (accuracy() converts pixels chunk by chunk)
        images = np.zeros((1,) + X_test.shape[1:], params[0].dtype)
        counter_types = tuple(numba.typeof(a) for a in (*params, images, y_test[:1], 2048))
        with compile_ahead.extra([(count_correct, counter_types)]):
            train_loop(params, X_train, y_train, np.arange(X_train.shape[0]), bs, 0, 0,
                       x_scale=x_scale)
        timing = getattr(train_loop, "compile_timing", None)
        t1 = timing.done if timing is not None else time.perf_counter()  # the gradient compiled
        # the accuracy counter is first needed after epoch 1: it compiles while epoch 1 trains
        # (the compiled training loop releases the GIL; Numba's compiler lock only excludes
        # other compiles, not running compiled code). Issue 17: ~0.3-0.4 s less before epoch 1.
        counter = {"thread": _BackgroundCompile(count_correct, counter_types)}
        return {"gradient": t1 - t0, "loop": time.perf_counter() - t1}, counter
    accuracy(params, X_test[:1], y_test[:1])
    t2 = time.perf_counter()
    return {"gradient": t1 - t0, "loop": t2 - t1}, None


class _BackgroundCompile:
    """``dispatcher.compile(types)`` in a daemon thread. ``finish()`` waits for it and returns
    how long it waited; ``seconds``: the compile's wall time. A failed compile is left for the
    first call to raise (it compiles again, in this thread, with the same error)."""

    def __init__(self, dispatcher, types):
        import threading

        self.seconds = None
        self._end = None
        t0 = time.perf_counter()    # before the thread starts: finish() cannot wait longer than this

        def run():
            try:
                with fewer_collections():  # (srcgrad/compile_gc.py: less CPU for the compile)
                    dispatcher.compile(types)
            except Exception:  # noqa: BLE001 -- the call raises it where it is visible
                pass
            self._end = time.perf_counter()
            self.seconds = self._end - t0

        self._thread = threading.Thread(target=run, name="srcgrad-compile-accuracy", daemon=True)
        self._thread.start()

    def finish(self):
        """Seconds from this call to the compile's end (0 if it had ended): the thread's own exit,
        after that, is not part of the wait (it made ``waited`` exceed ``seconds`` by microseconds
        when epoch 1 ended as the compile did)."""
        t0 = time.perf_counter()
        self._thread.join()
        return max(0.0, self._end - t0)


def _compile_line(compile_s):
    return (f"compiled in {compile_s['gradient'] + compile_s['loop']:.1f} s before the first epoch "
            f"(gradient {compile_s['gradient']:.1f} s: srcgrad transform + Numba, or loaded from "
            f"the cache; training loop {compile_s['loop']:.1f} s)")


def _train_cuda(cuda_mlp, params, opt, config, X_train, y_train, X_test, y_test, start_epoch,
                epochs, history, save, quiet, log, cuda_kernels="generated"):
    """Training on the GPU. ``cuda_kernels="generated"``: each step runs the CUDA kernels srcgrad
    generates from the adjoint of ``mlp_loss`` (array mode); ``"hand"``: the hand-written kernels
    of srcgrad.backends.cuda_mlp (the reference the generated path is compared with)."""
    if cuda_kernels not in ("generated", "hand"):
        raise UsageError(f"--cuda-kernels must be generated or hand, got {cuda_kernels!r}")
    program = cuda_mlp.generated_program(mlp_loss) if cuda_kernels == "generated" else None
    mu = config["momentum"] if config["optimizer"] == "momentum" else 0.0
    state = cuda_mlp.init_state(params=dict(zip(PARAM_NAMES, params)))
    if config["optimizer"] == "momentum":
        vel = opt.state_tuple()[0]
        state.v.copy_to_device(np.concatenate([v.ravel() for v in vel]).astype(np.float32))
    X_dev, y_dev = cuda_mlp.to_device(X_train, y_train)
    Xt_dev, yt_dev = cuda_mlp.to_device(X_test, y_test)
    n = X_train.shape[0]
    # The epoch's launches are recorded once as a CUDA graph and replayed each epoch with its
    # order and learning rate (a launch from Python costs more than these small kernels run).
    runner = None
    for epoch in range(start_epoch, epochs):
        perm = epoch_permutation(n, config["seed"], epoch)
        opt.lr = lr_at(config, epoch)
        t0 = time.perf_counter()
        if runner is None:
            runner = cuda_mlp.EpochGraph(state, X_dev, y_dev, n, config["batch_size"], opt.lr,
                                         momentum=mu, program=program)
        res = runner.run(perm, lr=opt.lr)
        secs = time.perf_counter() - t0
        _, train_acc = cuda_mlp.evaluate(state, X_dev, y_dev)
        _, test_acc = cuda_mlp.evaluate(state, Xt_dev, yt_dev)
        rec = (res["loss"], train_acc, test_acc, secs, n / secs)
        _record(history, *rec)
        # copy back so checkpoints and the returned params are host arrays
        host = cuda_mlp.get_params(state)
        for p, k in zip(params, PARAM_NAMES):
            p[...] = host[k]
        if config["optimizer"] == "momentum":
            hv = cuda_mlp.get_velocity(state)
            for v, k in zip(opt.state_tuple()[0], PARAM_NAMES):
                v[...] = hv[k]
        if not quiet:
            log(_epoch_line(epoch + 1, epochs, rec))
        if save is not None:
            save_checkpoint(save, params, opt, epoch + 1, config, history)
    return params


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def build_parser():
    p = argparse.ArgumentParser(
        description="Train a 784-H-10 MLP on MNIST with gradients from srcgrad.",
    )
    p.add_argument("--data", default=None,
                   help="MNIST folder (default: $SRCGRAD_DATA, else ~/.cache/srcgrad/mnist)")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"],
                   help="total number of epochs (a resumed run continues up to it)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate of the first epoch (default: sgd 0.1, momentum 0.1, "
                        "adam 0.001)")
    p.add_argument("--optimizer", choices=("sgd", "momentum", "adam"),
                   default=DEFAULTS["optimizer"])
    p.add_argument("--momentum", type=float, default=DEFAULTS["momentum"])
    p.add_argument("--lr-decay", type=float, default=DEFAULTS["lr_decay"], metavar="GAMMA",
                   help="learning rate of epoch e is lr * GAMMA**e (default %(default)s)")
    p.add_argument("--hidden", type=int, default=DEFAULTS["hidden"])
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--threads", type=int, default=None, help="numba/BLAS threads")
    p.add_argument("--save", metavar="CKPT", default=None,
                   help="write a checkpoint (.npz) after every epoch")
    p.add_argument("--resume", metavar="CKPT", default=None,
                   help="continue a run from a checkpoint (its training configuration is used)")
    p.add_argument("--plot", metavar="FILE", default=None,
                   help="save loss/accuracy curves as PNG (needs matplotlib)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--cuda-kernels", choices=("generated", "hand"), default="generated",
                   help="--device cuda: kernels generated from the loss's adjoint (default) or "
                        "the hand-written reference kernels")
    p.add_argument("--mode", choices=("epoch", "step"), default=DEFAULTS["mode"],
                   help="epoch: compiled loop over minibatches; step: a compiled call per step")
    p.add_argument("--limit-train", type=int, default=None, metavar="N",
                   help="train on the first N training images only")
    p.add_argument("--dtype", choices=("float32", "float64"), default=DEFAULTS["dtype"],
                   help="floating-point type of parameters and data (default %(default)s)")
    p.add_argument("--no-download", action="store_true", help="never download MNIST")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI: run as mpiexec -n N python train_mnist.py "
                        "--distributed ... (--batch-size is the global batch; needs the "
                        "[distributed] extra)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        train(
            data=args.data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            optimizer=args.optimizer, momentum=args.momentum, lr_decay=args.lr_decay,
            hidden=args.hidden, seed=args.seed, threads=args.threads, save=args.save,
            resume=args.resume, plot=args.plot, device=args.device, cuda_kernels=args.cuda_kernels,
            limit_train=args.limit_train, quiet=args.quiet, mode=args.mode, dtype=args.dtype,
            download=not args.no_download, distributed=args.distributed,
        )
    except UsageError as exc:
        return _fail(args, f"error: {exc}", 2)
    except (DatasetError, SrcgradError) as exc:
        return _fail(args, f"error: {exc}", 1)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", 130)
    except Exception as exc:
        if not args.distributed:
            raise
        import traceback

        traceback.print_exc()
        return _fail(args, f"error: {type(exc).__name__}: {exc}", 1)
    return 0


def _fail(args, message, code):
    """Print the error and return the exit code; under MPI with several ranks, abort them all
    (an error on one rank alone would leave the others waiting in the next allreduce)."""
    comm = None
    if args.distributed and "mpi4py.MPI" in sys.modules:
        comm = sys.modules["mpi4py.MPI"].COMM_WORLD
    where = "" if comm is None or comm.Get_rank() == 0 else f"rank {comm.Get_rank()}: "
    print(f"train_mnist: {where}{message}", file=sys.stderr, flush=True)
    if comm is not None and comm.Get_size() > 1:
        sys.stdout.flush()
        comm.Abort(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
