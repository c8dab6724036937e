"""One SGD epoch of the MNIST MLP (784-128-10, ReLU, softmax cross-entropy, float32), written by
each tool as its best users would write it; all train the model of ``srcgrad.training.mlp`` from
the same start in the same sample order.

Every trainer has the same interface::

    t = TRAINERS[name](X, y, batch)     # X (n, 784) uint8 pixels, y (n,) int64: kept for the run
    t.epoch_steps = nsteps               # optional: the epoch length to compile for (JAX scan)
    t.compile_s = t.setup(params)        # load parameters; build/compile; returns seconds
    t.epoch(order)                       # SGD over minibatches order[s*B:(s+1)*B], in place
    t.params()                           # the current parameters as NumPy float32 arrays

The images are stored as MNIST's uint8 pixels (``load_mnist(raw=True)``, 47 MB instead of 188 MB
of float32) and every trainer converts the rows it gathers to float32 as ``float32(pixel) *
float32(SCALE)`` (``load_mnist()``'s float32 images bit for bit), the way PyTorch's data loaders
convert images per batch: the same storage and the same conversion for every tool. The GEMM
floor (no gather) multiplies float32 rows: it converts the whole array once, before timing.

How each is written (what a careful user of that tool does):

* ``srcgrad``: ``MinibatchLoop(value_and_grad(mlp_loss), SGD)``: one compiled call per epoch;
  gathers each minibatch (converting the pixels: ``x_scale=SCALE``) and calls the training step
  srcgrad writes from the generated gradient
  for plain SGD (the weight updates fused into the weight-gradient products, as the hand Numba
  trainer does; ``srcgrad.training.fused_sgd``).
* ``numpy``: hand backprop with preallocated buffers, ``np.take(..., out=)`` into a uint8 buffer
  then ``np.multiply(..., out=)`` into the float32 batch, ``out=`` products and in-place updates
  (no temporaries in the step).
* ``numba``: hand backprop, the whole epoch in one ``@njit`` call, float32 throughout, buffers
  allocated once; its matrix products call the same BLAS as srcgrad
  (``srcgrad.training.blas.gemm``) and the weight updates are fused into the weight-gradient
  products with alpha/beta (``W = -lr * X.T @ dH + W``).
* ``jax-step``: ``jit`` of one SGD step with the parameters donated; X, y and the permutation
  live on the device (X as uint8); the step gathers and converts its batch inside ``jit`` from
  the step number.
* ``jax-scan``: the whole epoch in one ``jit(lax.scan)``, parameters donated, X, y on the device
  once (X as uint8); the permutation is passed and the gather and conversion happen inside the
  scanned step.
* ``torch``: eager ``nn.Sequential`` + ``optim.SGD`` on tensors that share X, y's memory,
  ``index_select`` of the uint8 rows and ``.to(float32).mul_(SCALE)`` per batch.
* ``blas-floor``: not a trainer: only the five matrix products of each step, on contiguous
  slices of the float32 images (no gather, no conversion), in one ``@njit`` call with the same
  BLAS: the work no trainer can skip.
"""

from __future__ import annotations

import time

import numpy as np

from srcgrad.training.datasets import MNIST_SCALE
from srcgrad.training.mlp import mlp_loss  # noqa: F401  (the model every trainer implements)

LR = 0.1
SCALE = np.float32(MNIST_SCALE)     # pixel -> float32 image value, as load_mnist() computes it


def float_images(X):
    """The float32 images of uint8 pixels ``X`` (``load_mnist()``'s values)."""
    return np.multiply(X, SCALE, dtype=np.float32) if X.dtype == np.uint8 else X


def reference_steps(params, X, y, order, B, nsteps):
    """The NumPy reference: ``nsteps`` SGD steps in float64, plain and readable (``X``: uint8
    pixels, converted as the trainers do, or float32 images)."""
    X = float_images(X)
    W1, b1, W2, b2 = [np.asarray(p, np.float64).copy() for p in params]
    for s in range(nsteps):
        idx = order[s * B:(s + 1) * B]
        xb, yb = X[idx].astype(np.float64), y[idx]
        a = xb @ W1 + b1
        h = np.maximum(a, 0.0)
        z = h @ W2 + b2
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        p[np.arange(B), yb] -= 1.0
        p /= B
        dh = (p @ W2.T) * (a > 0)
        W1 -= LR * (xb.T @ dh)
        b1 -= LR * dh.sum(0)
        W2 -= LR * (h.T @ p)
        b2 -= LR * p.sum(0)
    return [W1, b1, W2, b2]


def max_rel_err(got, ref):
    return max(float(np.max(np.abs(np.asarray(g, np.float64) - r)) / (np.max(np.abs(r)) + 1e-30))
               for g, r in zip(got, ref))


class Trainer:
    needs = "numpy"             # the package that must import

    def __init__(self, X, y, B):
        self.X, self.y, self.B = X, y, int(B)

    def nsteps(self, order):
        return order.shape[0] // self.B

    def threads_used(self):
        """What the last epoch ran its BLAS on, where the tool chooses it itself (else None)."""
        return None

    def threads_note(self):
        """How the tool chose its threads (else None)."""
        return None


# ------------------------------------------------------------------------------------------------
class SrcgradTrainer(Trainer):
    needs = "srcgrad"

    def setup(self, params):
        from srcgrad import value_and_grad
        from srcgrad.optim import SGD, MinibatchLoop

        self.p = tuple(np.array(a, np.float32) for a in params)
        if not hasattr(self, "loop"):
            t0 = time.perf_counter()
            self.loop = MinibatchLoop(value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)), SGD(lr=LR))
            # the first call compiles the gradient and the loop: time it on one batch
            scratch = tuple(a.copy() for a in self.p)
            self.loop(scratch, self.X, self.y, np.arange(self.B, dtype=np.int64), self.B,
                      x_scale=MNIST_SCALE)
            return time.perf_counter() - t0
        return 0.0

    def epoch(self, order):
        n = self.nsteps(order) * self.B
        self.loop(self.p, self.X, self.y, order[:n], self.B, x_scale=MNIST_SCALE)

    def threads_used(self):
        """{BLAS threads: batches} of the last epoch (``blas_threads="auto"``'s chunks; "BLAS
        default": the BLAS's own setting, where it has one thread and there is nothing to
        choose)."""
        return {"BLAS default" if k is None else str(k): v
                for k, v in self.loop.blas_threads_used.items()}

    def threads_note(self):
        from srcgrad.training.blas_threads import current_blas_threads
        note = "; ".join(c.summary() for c in self.loop.blas_threads_chosen.values())
        return note or f"none made (the BLAS has {current_blas_threads()} thread(s))"

    def params(self):
        return list(self.p)


# ------------------------------------------------------------------------------------------------
class NumpyTrainer(Trainer):
    def setup(self, params):
        B, H, C = self.B, params[0].shape[1], params[2].shape[1]
        self.p = [np.array(a, np.float32) for a in params]
        f = np.float32
        self.buf = dict(xb=np.empty((B, self.X.shape[1]), f), yb=np.empty(B, self.y.dtype),
                        pixels=np.empty((B, self.X.shape[1]), self.X.dtype),
                        a=np.empty((B, H), f), h=np.empty((B, H), f), mask=np.empty((B, H), bool),
                        z=np.empty((B, C), f), zr=np.empty((B, 1), f), gW2=np.empty((H, C), f),
                        gb2=np.empty(C, f), dh=np.empty((B, H), f),
                        gW1=np.empty((self.X.shape[1], H), f), gb1=np.empty(H, f),
                        rows=np.arange(B))
        return 0.0

    def epoch(self, order):
        W1, b1, W2, b2 = self.p
        d = self.buf
        xb, yb, a, h, mask, z, zr = d["xb"], d["yb"], d["a"], d["h"], d["mask"], d["z"], d["zr"]
        gW2, gb2, dh, gW1, gb1, rows = d["gW2"], d["gb2"], d["dh"], d["gW1"], d["gb1"], d["rows"]
        pixels = d["pixels"]
        B = self.B
        lr, inv = np.float32(LR), np.float32(1.0 / B)
        for s in range(self.nsteps(order)):
            idx = order[s * B:(s + 1) * B]
            np.take(self.X, idx, axis=0, out=pixels)
            np.multiply(pixels, SCALE, out=xb)
            np.take(self.y, idx, out=yb)
            np.matmul(xb, W1, out=a)
            a += b1
            np.maximum(a, 0, out=h)
            np.matmul(h, W2, out=z)
            z += b2
            np.max(z, axis=1, keepdims=True, out=zr)
            z -= zr
            np.exp(z, out=z)
            np.sum(z, axis=1, keepdims=True, out=zr)
            zr *= B                      # softmax / B in one division
            z /= zr
            z[rows, yb] -= inv
            np.matmul(h.T, z, out=gW2)
            np.sum(z, axis=0, out=gb2)
            np.matmul(z, W2.T, out=dh)
            np.greater(a, 0, out=mask)
            dh *= mask
            np.matmul(xb.T, dh, out=gW1)
            np.sum(dh, axis=0, out=gb1)
            gW1 *= lr
            W1 -= gW1
            gb1 *= lr
            b1 -= gb1
            gW2 *= lr
            W2 -= gW2
            gb2 *= lr
            b2 -= gb2

    def params(self):
        return list(self.p)


# ------------------------------------------------------------------------------------------------
_NUMBA = {}


def _numba_functions():
    """(epoch, blas_floor), compiled on first use (not at import)."""
    if _NUMBA:
        return _NUMBA["epoch"], _NUMBA["floor"]
    import numba

    from srcgrad.training.blas import gemm

    @numba.njit(nogil=True)
    def epoch(W1, b1, W2, b2, X, y, order, nsteps, lr, scale, xb, yb, A, P, dA):
        B, D = xb.shape
        Hd, C = W2.shape
        inv = np.float32(1.0) / np.float32(B)
        for s in range(nsteps):
            for i in range(B):                        # gather and convert the minibatch
                j = order[s * B + i]
                for k in range(D):
                    xb[i, k] = np.float32(X[j, k]) * scale
                yb[i] = y[j]
            gemm(xb, W1, A, 1.0, 0.0, False, False)   # A = xb @ W1
            for i in range(B):
                for j in range(Hd):
                    v = A[i, j] + b1[j]
                    A[i, j] = v if v > 0 else np.float32(0)
            gemm(A, W2, P, 1.0, 0.0, False, False)    # P = h @ W2
            for i in range(B):                        # P = (softmax(z) - onehot) / B
                m = np.float32(-np.inf)
                for c in range(C):
                    P[i, c] += b2[c]
                    m = max(m, P[i, c])
                se = np.float32(0)
                for c in range(C):
                    e = np.exp(P[i, c] - m)
                    P[i, c] = e
                    se += e
                r = inv / se
                for c in range(C):
                    P[i, c] *= r
                P[i, yb[i]] -= inv
            gemm(P, W2, dA, 1.0, 0.0, False, True)    # dA = P @ W2.T (before W2 changes)
            for c in range(C):
                acc = np.float32(0)
                for i in range(B):
                    acc += P[i, c]
                b2[c] -= lr * acc
            gemm(A, P, W2, -lr, 1.0, True, False)     # W2 = -lr * h.T @ P + W2
            for i in range(B):
                for j in range(Hd):
                    if A[i, j] <= 0:
                        dA[i, j] = 0
            for j in range(Hd):
                acc = np.float32(0)
                for i in range(B):
                    acc += dA[i, j]
                b1[j] -= lr * acc
            gemm(xb, dA, W1, -lr, 1.0, True, False)   # W1 = -lr * xb.T @ dA + W1

    @numba.njit(nogil=True)
    def floor(W1, W2, X, nsteps, A, P, dA, gW1, gW2):
        B = A.shape[0]
        for s in range(nsteps):
            xb = X[s * B:(s + 1) * B]
            gemm(xb, W1, A, 1.0, 0.0, False, False)
            gemm(A, W2, P, 1.0, 0.0, False, False)
            gemm(A, P, gW2, 1.0, 0.0, True, False)
            gemm(P, W2, dA, 1.0, 0.0, False, True)
            gemm(xb, dA, gW1, 1.0, 0.0, True, False)

    _NUMBA["epoch"], _NUMBA["floor"] = epoch, floor
    return epoch, floor


class NumbaTrainer(Trainer):
    needs = "numba"

    def _buffers(self, params):
        B, H, C = self.B, params[0].shape[1], params[2].shape[1]
        f = np.float32
        return dict(xb=np.empty((B, self.X.shape[1]), f), yb=np.empty(B, self.y.dtype),
                    A=np.empty((B, H), f), P=np.empty((B, C), f), dA=np.empty((B, H), f))

    def setup(self, params):
        self.p = [np.array(a, np.float32) for a in params]
        self.buf = self._buffers(params)
        fn = _numba_functions()[0]
        t0 = time.perf_counter()
        if not fn.signatures:            # compile on a zero-step call
            fn(*[a.copy() for a in self.p], self.X, self.y, np.zeros(0, np.int64), 0,
               np.float32(LR), SCALE, *self.buf.values())
        return time.perf_counter() - t0

    def epoch(self, order):
        _numba_functions()[0](*self.p, self.X, self.y, order, self.nsteps(order), np.float32(LR),
                              SCALE, *self.buf.values())

    def params(self):
        return list(self.p)


class BlasFloor(NumbaTrainer):
    """Only the five matrix products per step (not a training run: ``params`` are unchanged),
    on float32 images converted once here (a floor has no gather and no conversion)."""

    def __init__(self, X, y, B):
        super().__init__(float_images(X), y, B)

    def setup(self, params):
        self.p = [np.array(a, np.float32) for a in params]
        b = self._buffers(params)
        self.buf = (b["A"], b["P"], b["dA"], np.empty_like(self.p[0]), np.empty_like(self.p[2]))
        fn = _numba_functions()[1]
        t0 = time.perf_counter()
        if not fn.signatures:
            fn(self.p[0], self.p[2], self.X, 0, *self.buf)
        return time.perf_counter() - t0

    def epoch(self, order):
        _numba_functions()[1](self.p[0], self.p[2], self.X, self.nsteps(order), *self.buf)


# ------------------------------------------------------------------------------------------------
def _jax_loss():
    import jax.numpy as jnp

    def loss(params, xb, yb):
        W1, b1, W2, b2 = params
        h = jnp.maximum(xb @ W1 + b1, 0.0)
        z = h @ W2 + b2
        m = jnp.max(z, axis=1, keepdims=True)
        lse = jnp.log(jnp.sum(jnp.exp(z - m), axis=1)) + m[:, 0]
        return jnp.mean(lse - jnp.take_along_axis(z, yb[:, None], axis=1)[:, 0])
    return loss


def _images(pixels):
    """A gathered batch of uint8 pixels as float32 images, inside jit (XLA fuses the conversion
    into the gather); float images (the GPU check keeps float32 images on the device) as they are."""
    import jax.numpy as jnp
    if pixels.dtype != jnp.uint8:
        return pixels
    return pixels.astype(jnp.float32) * SCALE


class _JaxBase(Trainer):
    needs = "jax"

    def _device(self, params):
        import jax
        import jax.numpy as jnp
        if not hasattr(self, "Xd"):
            self.Xd = jax.device_put(self.X)
            self.yd = jax.device_put(self.y.astype(np.int32))
        self.p = tuple(jnp.asarray(np.array(a, np.float32)) for a in params)

    def params(self):
        import jax
        return [np.asarray(a) for a in jax.block_until_ready(self.p)]


class JaxStepTrainer(_JaxBase):
    def setup(self, params):
        import jax
        import jax.numpy as jnp
        self._device(params)
        B = self.B
        loss = _jax_loss()

        def step(p, X, y, order, s):
            idx = jax.lax.dynamic_slice(order, (s * B,), (B,))
            g = jax.grad(loss)(p, _images(jnp.take(X, idx, axis=0)), jnp.take(y, idx, axis=0))
            return tuple(a - LR * ga for a, ga in zip(p, g))

        if not hasattr(self, "step"):
            order = jnp.zeros(self.X.shape[0], jnp.int32)
            t0 = time.perf_counter()
            self.step = jax.jit(step, donate_argnums=0).lower(
                self.p, self.Xd, self.yd, order, jnp.int32(0)).compile()
            return time.perf_counter() - t0
        return 0.0

    def epoch(self, order):
        import jax
        import jax.numpy as jnp
        full = np.zeros(self.X.shape[0], np.int32)     # one compiled shape for any epoch length
        full[:order.shape[0]] = order
        od = jax.device_put(full)
        p = self.p
        for s in range(self.nsteps(order)):
            p = self.step(p, self.Xd, self.yd, od, jnp.int32(s))
        self.p = jax.block_until_ready(p)


class JaxScanTrainer(_JaxBase):
    def setup(self, params):
        import jax
        import jax.numpy as jnp
        self._device(params)
        B = self.B
        loss = _jax_loss()

        def epoch(p, X, y, idx):            # idx: (nsteps, B) sample numbers
            def body(p, rows):
                g = jax.grad(loss)(p, _images(jnp.take(X, rows, axis=0)),
                                   jnp.take(y, rows, axis=0))
                return tuple(a - LR * ga for a, ga in zip(p, g)), None
            return jax.lax.scan(body, p, idx)[0]

        if not hasattr(self, "_fn"):
            self._fn = jax.jit(epoch, donate_argnums=0)
            self._compiled = {}
        # the epoch length the timed epochs use (set by the caller; a full epoch by default)
        return self._compile(getattr(self, "epoch_steps", self.X.shape[0] // B))

    def _compile(self, nsteps):
        import jax.numpy as jnp
        if nsteps in self._compiled:
            return 0.0
        t0 = time.perf_counter()
        self._compiled[nsteps] = self._fn.lower(self.p, self.Xd, self.yd,
                                                jnp.zeros((nsteps, self.B), jnp.int32)).compile()
        return time.perf_counter() - t0

    def epoch(self, order):
        import jax
        nsteps = self.nsteps(order)
        self._compile(nsteps)
        idx = np.ascontiguousarray(order[:nsteps * self.B], np.int32).reshape(nsteps, self.B)
        self.p = jax.block_until_ready(self._compiled[nsteps](self.p, self.Xd, self.yd, idx))


# ------------------------------------------------------------------------------------------------
def torch_mlp(params, device="cpu"):
    """``nn.Sequential(Linear, ReLU, Linear)`` holding ``params`` = (W1, b1, W2, b2), weights
    stored (in, out) as srcgrad's model stores them."""
    import torch
    model = torch.nn.Sequential(torch.nn.Linear(params[0].shape[0], params[0].shape[1]),
                                torch.nn.ReLU(),
                                torch.nn.Linear(params[2].shape[0], params[2].shape[1]))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(np.array(params[0].T, np.float32)))
        model[0].bias.copy_(torch.from_numpy(np.array(params[1], np.float32)))
        model[2].weight.copy_(torch.from_numpy(np.array(params[2].T, np.float32)))
        model[2].bias.copy_(torch.from_numpy(np.array(params[3], np.float32)))
    return model.to(device)


class TorchTrainer(Trainer):
    needs = "torch"

    def setup(self, params):
        import torch
        self.model = torch_mlp(params)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.lossf = torch.nn.CrossEntropyLoss()
        self.Xt, self.yt = torch.from_numpy(self.X), torch.from_numpy(self.y)
        return 0.0

    def epoch(self, order):
        import torch
        B, model, opt, lossf = self.B, self.model, self.opt, self.lossf
        o = torch.from_numpy(np.ascontiguousarray(order))
        for s in range(self.nsteps(order)):
            idx = o[s * B:(s + 1) * B]
            opt.zero_grad(set_to_none=True)
            xb = self.Xt.index_select(0, idx).to(torch.float32).mul_(float(SCALE))
            lossf(model(xb), self.yt.index_select(0, idx)).backward()
            opt.step()

    def params(self):
        m = self.model
        return [m[0].weight.detach().numpy().T.copy(), m[0].bias.detach().numpy().copy(),
                m[2].weight.detach().numpy().T.copy(), m[2].bias.detach().numpy().copy()]


TRAINERS = {
    "srcgrad": SrcgradTrainer,
    "jax-scan": JaxScanTrainer,
    "jax-step": JaxStepTrainer,
    "numba": NumbaTrainer,
    "numpy": NumpyTrainer,
    "torch": TorchTrainer,
    "blas-floor": BlasFloor,
}

LABELS = {
    "srcgrad": "srcgrad (MinibatchLoop)",
    "jax-scan": "JAX jit(lax.scan) epoch",
    "jax-step": "JAX jit step",
    "numba": "hand Numba (same BLAS, fused update)",
    "numpy": "hand NumPy (out=, in place)",
    "torch": "PyTorch eager",
    "blas-floor": "GEMM floor (5 products only)",
}
