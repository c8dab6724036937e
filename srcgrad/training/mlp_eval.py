"""The MLP's accuracy, compiled and cached on disk: ``count_correct`` and ``accuracy``.

``examples/train_mnist.py`` counts the correctly classified samples after every epoch with a
compiled forward pass. It lives here, in a module Numba can import by name, so that its machine
code is cached on disk like the gradient's and the training loop's (issue 17): defined in the
example script itself, its cache entry named the script's module (``__main__``, or whatever name a
test loaded it under), which a later process cannot import, so it was compiled again in every
process (~2 s on a loaded 2-core machine: it and the BLAS product path it calls).
"""

from __future__ import annotations

import numba
import numpy as np

from ..backends.cpu import matmul

__all__ = ["count_correct", "accuracy"]


@numba.njit(cache=True, error_model="numpy")
def count_correct(W1, b1, W2, b2, X, y, chunk):
    """Number of samples whose argmax logit equals the label (compiled forward pass of
    :func:`srcgrad.training.mlp.mlp_loss`'s model). The products go through srcgrad's ``matmul``,
    which the gradient has already compiled for these types and these compile options (Numba
    compiles a library function once per caller's error model; its own ``@`` would compile its
    BLAS wrappers again: about 0.6 s cold)."""
    n = X.shape[0]
    correct = 0
    for s in range(0, n, chunk):
        e = s + chunk if s + chunk < n else n     # (no min() and no ascontiguousarray: X[s:e] of a
        h = matmul(X[s:e], W1)                    # C array is C; each is one more compile cold)
        for i in range(e - s):
            for j in range(h.shape[1]):
                v = h[i, j] + b1[j]
                h[i, j] = v if v > 0 else 0
        z = matmul(h, W2)
        for i in range(e - s):
            best = 0
            bestv = z[i, 0] + b2[0]
            for j in range(1, z.shape[1]):
                v = z[i, j] + b2[j]
                if v > bestv:
                    bestv = v
                    best = j
            if best == y[s + i]:
                correct += 1
    return correct


def accuracy(params, X, y, chunk=2048, x_scale=None):
    """Fraction of the samples ``X`` (C-contiguous, the parameters' dtype) whose predicted class
    is ``y``; NaN for no samples. ``x_scale``: ``X`` holds integer pixels instead (e.g.
    ``load_mnist(raw=True)``), counted on ``dtype(X) * dtype(x_scale)`` as
    ``MinibatchLoop(...)(..., x_scale=...)`` trains on them, converted a chunk at a time into one
    buffer (``count_correct`` keeps the float types it was compiled for)."""
    n = X.shape[0]
    if n == 0:
        return float("nan")
    if x_scale is None:
        return count_correct(*params, X, y, chunk) / n
    dtype = np.result_type(*params)
    images = np.empty((min(chunk, n),) + X.shape[1:], dtype)
    correct = 0
    for start in range(0, n, chunk):
        part = images[:min(chunk, n - start)]
        np.multiply(X[start:start + part.shape[0]], dtype.type(x_scale), out=part,
                    casting="unsafe")
        correct += count_correct(*params, part, y[start:start + part.shape[0]], chunk)
    return correct / n
