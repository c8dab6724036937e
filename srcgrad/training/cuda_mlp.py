"""A 784 -> H (ReLU) -> 10 MLP trained with softmax cross-entropy and SGD/momentum on the GPU.

Two ways to compute a step's gradient: ``train_epoch(..., program=generated_program())`` runs
the CUDA kernels srcgrad generates from the adjoint of the plain NumPy loss (array mode,
:mod:`srcgrad.cuda_arrays`) — what ``examples/train_mnist.py --device cuda`` uses; without
``program`` the hand-written kernel sequence below runs (the reference it is compared with).

Everything lives on the device: the data set (copied once by the caller with ``to_device``),
parameters, gradients, optimizer state, per-batch buffers and the running loss/accuracy sums.
A training step is a fixed sequence of kernel launches into preallocated buffers:

    gather_batch                 Xb, yb = X[perm[s:s+B]], y[perm[s:s+B]]
    gemm NN  (bias+ReLU)         H  = relu(Xb @ W1 + b1)
    gemm NN  (bias)              Z  = H @ W2 + b2
    softmax_xent                 loss rows, correct rows, dZ = (softmax(Z) - onehot(y)) / B
    gemm TN                      dW2 = H.T @ dZ
    col_sum                      db2 = sum_rows dZ
    gemm NT  (ReLU mask)         dH = (dZ @ W2.T) * (H > 0)
    gemm TN                      dW1 = Xb.T @ dH
    col_sum                      db1 = sum_rows dH
    sgd_momentum                 one launch over the flat parameter vector
    vec_sum_into x2              epoch loss and correct-count sums, kept on the device

Nothing is copied back to the host inside an epoch; ``train_epoch`` reads the two sums once.

Initialisation (``init_params``) and per-epoch order (``epoch_permutation``) are seeded NumPy
draws, and ``numpy_train_epoch`` / ``numpy_evaluate`` implement exactly the same steps on the CPU,
so GPU and CPU results agree up to floating-point tolerance.  ``init_state(params=...)`` accepts
parameters from any other CPU path.

CUDA graphs: :class:`EpochGraph` records a whole epoch's launches once (stream capture through
the driver bindings, :mod:`srcgrad.cuda.graphs`; numba-cuda has no graph API) and replays them
with one call per epoch; ``train_epoch`` launches kernel by kernel.
"""

from __future__ import annotations

import numpy as np

from srcgrad.training import mlp as _mlp
from srcgrad.training.mlp import N_IN, N_OUT, epoch_permutation

__all__ = [
    "available",
    "init_params",
    "epoch_permutation",
    "MLPState",
    "init_state",
    "to_device",
    "train_epoch",
    "evaluate",
    "get_params",
    "numpy_train_epoch",
    "numpy_evaluate",
    "generated_program",
    "EpochGraph",
    "N_IN",
    "N_OUT",
]

_PARAM_NAMES = _mlp.PARAM_NAMES


def available():
    """``(True, description)`` where kernels can be launched (a GPU, or the CUDA simulator),
    else ``(False, reason)``."""
    try:
        from srcgrad.backends import cuda_kernels  # noqa: F401
        from numba import config, cuda
    except Exception as exc:  # numba-cuda missing or broken
        return False, f"numba CUDA target not importable ({type(exc).__name__}: {exc}); " \
                      f"install numba-cuda"
    if getattr(config, "ENABLE_CUDASIM", 0):
        return True, "Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
    try:
        if not cuda.is_available():
            return False, "no CUDA GPU / driver found (numba.cuda.is_available() is False)"
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        return True, f"{name} (cc {dev.compute_capability[0]}.{dev.compute_capability[1]})"
    except Exception as exc:
        return False, f"CUDA initialisation failed ({type(exc).__name__}: {exc})"


# ----------------------------------------------------------------------------------------------
# Initialisation and batch order: the shared model's (srcgrad.training.mlp)
# ----------------------------------------------------------------------------------------------


def _layout(hidden, n_in=N_IN):
    shapes = {"W1": (n_in, hidden), "b1": (hidden,), "W2": (hidden, N_OUT), "b2": (N_OUT,)}
    offs, o = {}, 0
    for k in _PARAM_NAMES:
        n = int(np.prod(shapes[k]))
        offs[k] = (o, o + n)
        o += n
    return shapes, offs, o


def init_params(hidden=128, seed=0, dtype=np.float32, n_in=N_IN):
    """:func:`srcgrad.training.mlp.init_params` as a dict keyed by parameter name."""
    return dict(zip(_PARAM_NAMES, _mlp.init_params(hidden, seed, dtype, n_in)))


# ----------------------------------------------------------------------------------------------
# Device state
# ----------------------------------------------------------------------------------------------


class MLPState:
    """Parameters, gradients and momentum as flat device vectors (one SGD launch updates all),
    with (in, out)-shaped views per layer; per-batch-size work buffers are allocated once."""

    def __init__(self, hidden, dtype, flat_params, n_in=N_IN):
        from numba import cuda

        self.hidden = int(hidden)
        self.n_in = int(n_in)
        self.dtype = np.dtype(dtype)
        self.shapes, self.offsets, self.size = _layout(self.hidden, self.n_in)
        self.p = cuda.to_device(flat_params)
        self.g = cuda.device_array(self.size, dtype=self.dtype)
        self.v = cuda.to_device(np.zeros(self.size, dtype=self.dtype))
        self.P = self._views(self.p)
        self.G = self._views(self.g)
        self.acc = cuda.to_device(np.zeros(2, dtype=self.dtype))  # loss sum, correct count
        self._buffers = {}
        self._perm_dev = None
        self._perm_host = None
        self.steps = 0

    def _views(self, flat):
        out = {}
        for k in _PARAM_NAMES:
            a, b = self.offsets[k]
            out[k] = flat[a:b].reshape(self.shapes[k])
        return out

    def buffers(self, batch):
        """Work buffers for batches of (up to) ``batch`` rows."""
        bufs = self._buffers.get(batch)
        if bufs is None:
            from numba import cuda

            dt, H = self.dtype, self.hidden
            bufs = {
                "Xb": cuda.device_array((batch, self.n_in), dtype=dt),
                "yb": cuda.device_array(batch, dtype=np.int64),
                "H": cuda.device_array((batch, H), dtype=dt),
                "Z": cuda.device_array((batch, N_OUT), dtype=dt),
                "dZ": cuda.device_array((batch, N_OUT), dtype=dt),
                "dH": cuda.device_array((batch, H), dtype=dt),
                "loss": cuda.device_array(batch, dtype=dt),
                "correct": cuda.device_array(batch, dtype=np.int32),
            }
            self._buffers[batch] = bufs
        return bufs


def init_state(hidden=128, seed=0, dtype=np.float32, params=None):
    """Device state from ``init_params(hidden, seed, dtype)``, or from ``params`` (a dict with
    W1 (784,H), b1 (H,), W2 (H,10), b2 (10,)) when given."""
    if params is None:
        params = init_params(hidden, seed, dtype)
    n_in, hidden = (int(d) for d in np.shape(params["W1"]))
    shapes, _, _ = _layout(hidden, n_in)
    for k in _PARAM_NAMES:
        if tuple(np.shape(params[k])) != shapes[k]:
            raise ValueError(f"{k}: shape {np.shape(params[k])}, expected {shapes[k]}")
    flat = np.concatenate([np.asarray(params[k], dtype=dtype).ravel() for k in _PARAM_NAMES])
    return MLPState(hidden, dtype, np.ascontiguousarray(flat), n_in)


def to_device(X, y, dtype=np.float32):
    """Copy a data set to the device once: ``X`` (n, 784) as ``dtype``, ``y`` as int64."""
    from numba import cuda

    X = np.ascontiguousarray(X, dtype=dtype)
    y = np.ascontiguousarray(y, dtype=np.int64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"expected X (n, {N_IN}) and y (n,), got {X.shape} and {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= N_OUT):
        raise ValueError(f"labels must lie in 0..{N_OUT - 1}")
    return cuda.to_device(X), cuda.to_device(y)


def get_params(state):
    """Host copies of the parameters."""
    flat = state.p.copy_to_host()
    return {k: flat[a:b].reshape(state.shapes[k]).copy()
            for k, (a, b) in state.offsets.items()}


def get_velocity(state):
    flat = state.v.copy_to_host()
    return {k: flat[a:b].reshape(state.shapes[k]).copy()
            for k, (a, b) in state.offsets.items()}


# ----------------------------------------------------------------------------------------------
# GPU training / evaluation
# ----------------------------------------------------------------------------------------------


def _forward(state, Xb, bufs, B, stream=0):
    from srcgrad.backends import cuda_kernels as ck

    P = state.P
    H = bufs["H"][:B]
    Z = bufs["Z"][:B]
    ck.gemm(Xb, P["W1"], H, bias=P["b1"], relu=True, stream=stream)
    ck.gemm(H, P["W2"], Z, bias=P["b2"], stream=stream)
    return H, Z


def _step(state, X_dev, y_dev, perm_dev, start, B, bufs, lr, momentum, weight_decay, stream=0):
    from srcgrad.backends import cuda_kernels as ck

    P, G = state.P, state.G
    Xb = bufs["Xb"][:B]
    yb = bufs["yb"][:B]
    ck.gather_batch(X_dev, y_dev, perm_dev, start, Xb, yb, stream=stream)
    H, Z = _forward(state, Xb, bufs, B, stream)
    dZ = bufs["dZ"][:B]
    dH = bufs["dH"][:B]
    loss = bufs["loss"][:B]
    correct = bufs["correct"][:B]
    ck.softmax_xent(Z, yb, loss, correct, dZ, scale=1.0 / B, stream=stream)
    ck.gemm(H, dZ, G["W2"], trans_a=True, stream=stream)
    ck.col_sum(dZ, G["b2"], stream=stream)
    ck.gemm(dZ, P["W2"], dH, trans_b=True, mask=H, stream=stream)
    ck.gemm(Xb, dH, G["W1"], trans_a=True, stream=stream)
    ck.col_sum(dH, G["b1"], stream=stream)
    ck.sgd_momentum(state.p, state.g, state.v, lr, momentum, weight_decay, stream=stream)
    ck.vec_sum_into(loss, state.acc, 0, stream=stream)
    ck.vec_sum_into(correct, state.acc, 1, stream=stream)
    state.steps += 1


def _generated_step(state, program, X_dev, y_dev, perm_dev, start, B, bufs, lr, momentum,
                    weight_decay, stream=0):
    """One step with the loss gradient from srcgrad's generated adjoint (CUDA array mode):
    gather, the program's fused forward and reverse kernels, one SGD launch per parameter."""
    from srcgrad.backends import cuda_kernels as ck

    P = state.P
    Xb = bufs["Xb"][:B]
    yb = bufs["yb"][:B]
    ck.gather_batch(X_dev, y_dev, perm_dev, start, Xb, yb, stream=stream)
    plans = bufs.setdefault("plans", {})
    plan = plans.get(B)
    if plan is None:    # one plan per batch shape (the last batch may be shorter)
        plan = plans[B] = program.plan_for(P["W1"], P["b1"], P["W2"], P["b2"], Xb, yb)
    value, *grads = plan.run({"W1": P["W1"], "b1": P["b1"], "W2": P["W2"], "b2": P["b2"],
                              "X": Xb, "y": yb}, {}, stream=stream)
    for k, g in zip(_PARAM_NAMES, grads):
        a, b = state.offsets[k]
        ck.sgd_momentum(state.p[a:b], g.reshape(b - a), state.v[a:b], lr, momentum, weight_decay,
                        stream=stream)
    ck.vec_sum_into(value, state.acc, 0, stream=stream)
    state.steps += 1


def _batches(n, batch_size, drop_last, max_steps):
    """``(start, rows)`` of each step of an epoch over ``n`` samples."""
    steps = []
    for start in range(0, n, batch_size):
        B = min(batch_size, n - start)
        if (B < batch_size and drop_last) or (max_steps is not None and len(steps) >= max_steps):
            break
        steps.append((start, B))
    return steps


def _epoch_result(state, program, steps, seen):
    acc = state.acc.copy_to_host()
    if program is not None:
        program.check()             # labels out of range, seen by the gather kernels
        return {"loss": float(acc[0]) / max(steps, 1), "accuracy": None, "steps": steps}
    return {"loss": float(acc[0]) / max(seen, 1), "accuracy": float(acc[1]) / max(seen, 1),
            "steps": steps}


def generated_program(loss):
    """``value_and_grad`` of ``loss(W1, b1, W2, b2, X, y)`` (plain NumPy, e.g. ``mlp_loss`` of
    examples/train_mnist.py) in CUDA array mode: kernels generated from srcgrad's adjoint."""
    import srcgrad

    return srcgrad.value_and_grad(loss, wrt=(0, 1, 2, 3), target="cuda", arrays=True, check=False)


def _perm_to_device(state, perm):
    from numba import cuda

    if not isinstance(perm, np.ndarray):
        if hasattr(perm, "copy_to_host"):  # a Numba device array (real or simulated)
            return perm
        if hasattr(perm, "__cuda_array_interface__"):  # CuPy / PyTorch device tensors
            return cuda.as_cuda_array(perm)
    perm = np.ascontiguousarray(perm, dtype=np.int64)
    # reuse the device copy when the same permutation object is passed again
    if state._perm_host is not None and state._perm_host is perm:
        return state._perm_dev
    state._perm_host = perm
    state._perm_dev = cuda.to_device(perm)
    return state._perm_dev


def train_epoch(state, X_dev, y_dev, perm, batch_size, lr, momentum=0.9, weight_decay=0.0,
                drop_last=False, max_steps=None, sync=True, program=None):
    """One epoch over ``perm`` (host int array or device array), batches ``perm[s:s+batch_size]``
    in order; the last partial batch is used unless ``drop_last``.  Returns
    ``{"loss": mean per-sample loss, "accuracy": training accuracy, "steps": n}`` computed from
    the parameters before each step (read back once at the end), or None if ``sync`` is False.

    ``program`` (from :func:`generated_program`) takes the loss gradient from srcgrad's generated
    adjoint instead of the hand-written kernels above; its loss is the mean of the per-batch
    means, and ``accuracy`` is None (use :func:`evaluate`)."""
    from numba import cuda

    if int(X_dev.shape[1]) != state.n_in:
        raise ValueError(f"X has {X_dev.shape[1]} features, the model expects {state.n_in}")
    n = int(perm.shape[0])
    bs = int(batch_size)
    if bs < 1:
        raise ValueError("batch_size must be positive")
    perm_dev = _perm_to_device(state, perm)
    bufs = state.buffers(bs)
    state.acc.copy_to_device(np.zeros(2, dtype=state.dtype))
    batches = _batches(n, bs, drop_last, max_steps)
    for start, B in batches:
        if program is None:
            _step(state, X_dev, y_dev, perm_dev, start, B, bufs, lr, momentum, weight_decay)
        else:
            _generated_step(state, program, X_dev, y_dev, perm_dev, start, B, bufs, lr, momentum,
                            weight_decay)
    if not sync:
        return None
    cuda.synchronize()
    return _epoch_result(state, program, len(batches), sum(B for _, B in batches))


class EpochGraph:
    """A whole training epoch recorded once as a CUDA graph, replayed by :meth:`run`.

    Why: at batch 64 an epoch is ~940 steps of a dozen small kernels, and launching each from
    Python (tens of microseconds) costs far more than the kernel.  The graph replays the same
    launches, in the same order and with the same arguments, from one driver call.

    The graph reads the sample order and the learning rate from device buffers it owns: :meth:`run`
    copies the new permutation (and a new ``lr``, for schedules) there, zeroes the loss/accuracy
    sums and replays.  Steps, batch size, momentum, weight decay and the step function
    (``program`` or the hand kernels) are fixed when recording.
    Recording needs the kernels compiled and loaded, so the constructor first runs one step of
    each batch size eagerly and then restores the parameters and velocity it changed.

    Where graphs cannot be captured (the simulator, :mod:`srcgrad.cuda.graphs`; or a capture the
    driver refuses, with a warning), :meth:`run` launches the same sequence on the stream instead,
    ``graphed`` is False and ``why_eager`` says why."""

    def __init__(self, state, X_dev, y_dev, n, batch_size, lr, momentum=0.9, weight_decay=0.0,
                 drop_last=False, program=None):
        from numba import cuda

        from srcgrad.cuda import graphs

        self.state, self.program = state, program
        self.batches = _batches(int(n), int(batch_size), drop_last, None)
        self.stream = cuda.stream()
        self.perm = cuda.to_device(np.arange(int(n), dtype=np.int64))
        self.lr = cuda.to_device(np.array([lr], dtype=state.dtype))
        lr = self.lr        # every recorded SGD launch reads the rate from here
        bufs = state.buffers(int(batch_size))

        def record():
            for start, B in self.batches:
                if program is None:
                    _step(state, X_dev, y_dev, self.perm, start, B, bufs, lr, momentum,
                          weight_decay, self.stream)
                else:
                    _generated_step(state, program, X_dev, y_dev, self.perm, start, B, bufs, lr,
                                    momentum, weight_decay, self.stream)
        self._record = record
        self.graph, self.graphed = None, False
        ok, self.why_eager = graphs.available()
        if ok:
            self._warm_up(X_dev, y_dev, bufs, lr, momentum, weight_decay)
            steps = state.steps
            try:
                self.graph = graphs.StreamGraph.capture(self.stream, record)
                self.graphed = True
            except Exception as exc:    # noqa: BLE001  (a driver that refuses: train eagerly)
                import warnings
                self.why_eager = f"CUDA graph capture failed ({type(exc).__name__}: {exc})"
                warnings.warn(f"srcgrad EpochGraph: {self.why_eager}; each epoch launches its "
                              "kernels one by one instead (same results, slower)", RuntimeWarning)
            state.steps = steps     # recording executed nothing; replays count in run()

    def _warm_up(self, X_dev, y_dev, bufs, lr, momentum, weight_decay):
        """One eager step per batch size (compiles and loads every kernel the graph records),
        then the parameters, velocity and step count as they were."""
        state = self.state
        saved = state.p.copy_to_host(), state.v.copy_to_host(), state.steps
        for B in sorted({B for _, B in self.batches}):
            if self.program is None:
                _step(state, X_dev, y_dev, self.perm, 0, B, bufs, lr, momentum, weight_decay,
                      self.stream)
            else:
                _generated_step(state, self.program, X_dev, y_dev, self.perm, 0, B, bufs, lr,
                                momentum, weight_decay, self.stream)
        self.stream.synchronize()
        state.p.copy_to_device(saved[0])
        state.v.copy_to_device(saved[1])
        state.steps = saved[2]

    def run(self, perm, lr=None, sync=True):
        """One epoch in the order ``perm`` (host int array of the recorded length), at learning
        rate ``lr`` (default: the last one); returns :func:`train_epoch`'s result (None if not
        ``sync``)."""
        perm = np.ascontiguousarray(perm, dtype=np.int64)
        if perm.shape != self.perm.shape:
            raise ValueError(f"EpochGraph was recorded for {self.perm.shape[0]} samples, got "
                             f"{perm.shape[0]}")
        state = self.state
        self.perm.copy_to_device(perm, stream=self.stream)
        if lr is not None:
            self.lr.copy_to_device(np.array([lr], dtype=state.dtype), stream=self.stream)
        state.acc.copy_to_device(np.zeros(2, dtype=state.dtype), stream=self.stream)
        if self.graphed:
            self.graph.launch(self.stream)
            state.steps += len(self.batches)
        else:
            self._record()
        if not sync:
            return None
        self.stream.synchronize()
        return _epoch_result(state, self.program, len(self.batches),
                             sum(B for _, B in self.batches))

    def close(self):
        if self.graph is not None:
            self.graph.close()
            self.graph = None


def evaluate(state, X_dev, y_dev, batch_size=1000):
    """``(mean loss, accuracy)`` of the current parameters on a device data set."""
    from srcgrad.backends import cuda_kernels as ck

    n = int(X_dev.shape[0])
    bs = int(min(batch_size, n))
    bufs = state.buffers(bs)
    state.acc.copy_to_device(np.zeros(2, dtype=state.dtype))
    for start in range(0, n, bs):
        B = min(bs, n - start)
        Xb = X_dev[start:start + B]
        yb = y_dev[start:start + B]
        _, Z = _forward(state, Xb, bufs, B)
        loss = bufs["loss"][:B]
        correct = bufs["correct"][:B]
        ck.softmax_xent(Z, yb, loss, correct, None)
        ck.vec_sum_into(loss, state.acc, 0)
        ck.vec_sum_into(correct, state.acc, 1)
    acc = state.acc.copy_to_host()
    return float(acc[0]) / n, float(acc[1]) / n


# ----------------------------------------------------------------------------------------------
# NumPy reference of exactly the same steps
# ----------------------------------------------------------------------------------------------


def _np_xent(Z, y):
    m = Z.max(axis=1, keepdims=True)
    lse = m + np.log(np.exp(Z - m).sum(axis=1, keepdims=True))
    loss = lse[:, 0] - Z[np.arange(len(y)), y]
    correct = Z.argmax(axis=1) == y
    return loss, correct, lse


def numpy_train_epoch(params, velocity, X, y, perm, batch_size, lr, momentum=0.9,
                      weight_decay=0.0, drop_last=False, max_steps=None):
    """CPU reference: updates ``params``/``velocity`` dicts in place, same steps as the GPU."""
    n = len(perm)
    dt = params["W1"].dtype
    tot_loss, tot_correct, seen, steps = 0.0, 0, 0, 0
    for start in range(0, n, batch_size):
        B = min(batch_size, n - start)
        if B < batch_size and drop_last:
            break
        if max_steps is not None and steps >= max_steps:
            break
        idx = perm[start:start + B]
        Xb, yb = X[idx].astype(dt, copy=False), y[idx]
        H = np.maximum(Xb @ params["W1"] + params["b1"], 0)
        Z = H @ params["W2"] + params["b2"]
        loss, correct, lse = _np_xent(Z, yb)
        P = np.exp(Z - lse)
        P[np.arange(B), yb] -= 1
        dZ = (P * dt.type(1.0 / B)).astype(dt)
        grads = {"W2": H.T @ dZ, "b2": dZ.sum(axis=0)}
        dH = (dZ @ params["W2"].T) * (H > 0)
        grads["W1"] = Xb.T @ dH
        grads["b1"] = dH.sum(axis=0)
        for k in _PARAM_NAMES:
            g = grads[k] + weight_decay * params[k]
            velocity[k][...] = momentum * velocity[k] + g
            params[k][...] -= lr * velocity[k]
        tot_loss += float(loss.sum())
        tot_correct += int(correct.sum())
        seen += B
        steps += 1
    return {"loss": tot_loss / max(seen, 1), "accuracy": tot_correct / max(seen, 1),
            "steps": steps}


def numpy_evaluate(params, X, y):
    H = np.maximum(X @ params["W1"] + params["b1"], 0)
    Z = H @ params["W2"] + params["b2"]
    loss, correct, _ = _np_xent(Z, y)
    return float(loss.mean()), float(correct.mean())
