"""The MNIST model every part of the project trains: a 784 -> H (ReLU) -> 10 MLP with softmax
cross-entropy, its initialisation and its per-epoch sample order.

One definition, used by ``examples/train_mnist.py``, the GPU trainer
(:mod:`srcgrad.training.cuda_mlp`), the benchmarks and the tests, so that "the same model from
the same start in the same order" means the same thing everywhere.

``mlp_loss`` is plain NumPy, written as a user writes it; srcgrad differentiates its source.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["N_IN", "N_OUT", "PARAM_NAMES", "mlp_loss", "init_params", "epoch_permutation"]

N_IN, N_OUT = 784, 10
PARAM_NAMES = ("W1", "b1", "W2", "b2")


def mlp_loss(W1, b1, W2, b2, X, y):
    h = np.maximum(X @ W1 + b1, 0.0)
    z = h @ W2 + b2
    m = np.max(z, axis=1, keepdims=True)
    lse = np.log(np.sum(np.exp(z - m), axis=1)) + m[:, 0]
    return np.mean(lse - z[np.arange(X.shape[0]), y])


def init_params(hidden=128, seed=0, dtype=np.float32, n_in=N_IN):
    """PyTorch ``nn.Linear``-style uniform init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights
    and biases, drawn in the order W1, b1, W2, b2 from ``np.random.default_rng(seed)``; returns
    the tuple ``(W1, b1, W2, b2)`` of C-contiguous arrays. Weights are stored (in, out): a layer
    computes ``x @ W + b``. (``n_in`` other than 784 is only for small tests.)"""
    rng = np.random.default_rng(seed)
    b_in, b_h = 1.0 / math.sqrt(n_in), 1.0 / math.sqrt(hidden)
    p = (
        rng.uniform(-b_in, b_in, (n_in, hidden)),
        rng.uniform(-b_in, b_in, (hidden,)),
        rng.uniform(-b_h, b_h, (hidden, N_OUT)),
        rng.uniform(-b_h, b_h, (N_OUT,)),
    )
    return tuple(np.ascontiguousarray(a, dtype=dtype) for a in p)


def epoch_permutation(n, seed=0, epoch=0):
    """The sample order of one epoch (int64): a function of ``(seed, epoch)`` only, so a resumed
    run and every trainer (CPU, GPU, the benchmark peers) walk the same minibatches."""
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64)
