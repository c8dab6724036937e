"""Arrays rebound in loops (snapshots, see tests/test_rebound_arrays.py) in CUDA array mode: the
tracer unrolls the loop and keeps each snapshot as the node of the overwritten value. Checked
against the python target (the same generated adjoint run by NumPy).

Run with the other CUDA tests: ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import srcgrad
from srcgrad.backends import cuda_kernels as ck

pytestmark = pytest.mark.skipif(not (ck.SIMULATOR or os.environ.get("SRCGRAD_CUDA_TESTS") == "gpu"),
                                reason="CUDA tests run in the simulator session (or SRCGRAD_CUDA_TESTS=gpu)")


def rnn(W, x, h0):
    h = h0
    for t in range(x.shape[0]):
        h = np.tanh(h @ W + x[t])
    return np.sum(h * h)


def rnn_while(W, h0, n):
    h = h0
    k = 0
    while k < n:
        h = np.tanh(h @ W)
        k += 1
    return np.sum(h)


@pytest.mark.parametrize("f, make", [
    (rnn, lambda rng: (0.5 * rng.standard_normal((3, 3)), rng.standard_normal((4, 3)),
                       rng.standard_normal(3))),
    (rnn_while, lambda rng: (0.5 * rng.standard_normal((3, 3)), rng.standard_normal(3), 3)),
])
def test_rebound_array_in_array_mode(f, make):
    args = make(np.random.default_rng(0))
    got = srcgrad.grad(f, wrt=(0, 1), target="cuda", arrays=True)(*args)
    expected = srcgrad.grad(f, wrt=(0, 1), target="python")(*args)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
