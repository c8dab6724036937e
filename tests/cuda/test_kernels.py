"""Every CUDA kernel against NumPy, in the Numba CUDA simulator (tiny sizes)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from numba import config as _numba_config  # tests/cuda/conftest.py has decided on the simulator

SIM_ACTIVE = bool(getattr(_numba_config, "ENABLE_CUDASIM", 0)) or os.environ.get("SRCGRAD_CUDA_TESTS") == "gpu"

if SIM_ACTIVE:
    from numba import cuda

    from srcgrad.backends import cuda_kernels as ck

DTYPES = [np.float32, np.float64]


def _tol(dt):
    return dict(rtol=2e-5, atol=2e-5) if dt == np.float32 else dict(rtol=1e-12, atol=1e-12)


def _rand(rng, shape, dt):
    return rng.standard_normal(shape).astype(dt)


# M, N, K: one smaller than a (simulator) tile of 4, one straddling tiles in every dimension,
# and one with few output tiles and a long K, computed split along K (on the GPU's tiles too)
GEMM_SIZES = [(3, 2, 3), (6, 9, 10), (5, 6, 300)]


def test_split_k_is_taken_where_meant():
    assert ck.split_k(5, 6, 300)[0] > 1       # the split-K size above, at this session's TILE
    splits, kchunk = ck.split_k(5, 6, 300)
    assert kchunk % ck.TILE == 0 and (splits - 1) * kchunk < 300 <= splits * kchunk
    assert ck.split_k(3, 2, 3) == (1, 3) and ck.split_k(6, 9, 10) == (1, 10)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("size", GEMM_SIZES)
def test_gemm_transposes(dt, trans_a, trans_b, size):
    M, N, K = size
    rng = np.random.default_rng(hash((M, N, K, trans_a, trans_b)) % 2**32)
    A = _rand(rng, (K, M) if trans_a else (M, K), dt)
    B = _rand(rng, (N, K) if trans_b else (K, N), dt)
    C = cuda.device_array((M, N), dtype=dt)
    ck.gemm(cuda.to_device(A), cuda.to_device(B), C, trans_a=trans_a, trans_b=trans_b)
    ref = (A.T if trans_a else A) @ (B.T if trans_b else B)
    np.testing.assert_allclose(C.copy_to_host(), ref, **_tol(dt))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("epi", ["bias", "bias_relu", "relu", "mask"])
@pytest.mark.parametrize("size", [(6, 7, 5), (5, 6, 300)])     # the second is split along K
def test_gemm_epilogues(dt, epi, size):
    M, N, K = size
    rng = np.random.default_rng(3)
    A, B = _rand(rng, (M, K), dt), _rand(rng, (K, N), dt)
    bias = _rand(rng, (N,), dt)
    mask = _rand(rng, (M, N), dt)
    mask[0, :3] = 0  # exactly zero counts as masked
    C = cuda.device_array((M, N), dtype=dt)
    dA, dB = cuda.to_device(A), cuda.to_device(B)
    ref = A @ B
    if epi == "bias":
        ck.gemm(dA, dB, C, bias=cuda.to_device(bias))
        ref = ref + bias
    elif epi == "bias_relu":
        ck.gemm(dA, dB, C, bias=cuda.to_device(bias), relu=True)
        ref = np.maximum(ref + bias, 0)
    elif epi == "relu":
        ck.gemm(dA, dB, C, relu=True)
        ref = np.maximum(ref, 0)
    else:
        ck.gemm(dA, dB, C, mask=cuda.to_device(mask))
        ref = ref * (mask > 0)
    np.testing.assert_allclose(C.copy_to_host(), ref, **_tol(dt))


def test_gemm_mask_with_transposed_b():
    # the dH = (dZ @ W2.T) * (H > 0) product of the MLP backward pass
    rng = np.random.default_rng(4)
    dZ, W2, H = _rand(rng, (6, 10), np.float32), _rand(rng, (5, 10), np.float32), \
        _rand(rng, (6, 5), np.float32)
    out = cuda.device_array((6, 5), dtype=np.float32)
    ck.gemm(cuda.to_device(dZ), cuda.to_device(W2), out, trans_b=True, mask=cuda.to_device(H))
    np.testing.assert_allclose(out.copy_to_host(), (dZ @ W2.T) * (H > 0), rtol=2e-5, atol=2e-5)


def test_gemm_shape_mismatch():
    A = cuda.device_array((3, 4), dtype=np.float32)
    B = cuda.device_array((5, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="shape mismatch"):
        ck.gemm(A, B, cuda.device_array((3, 2), dtype=np.float32))


def test_unsupported_dtype():
    A = cuda.device_array((3, 3), dtype=np.int32)
    with pytest.raises(TypeError):
        ck.col_sum(A, cuda.device_array(3, dtype=np.int32))


@pytest.mark.parametrize("dt", DTYPES)
def test_relu_backward(dt):
    rng = np.random.default_rng(5)
    dY, Y = _rand(rng, (7, 9), dt), _rand(rng, (7, 9), dt)
    Y[1, 1] = 0
    dX = cuda.device_array((7, 9), dtype=dt)
    ck.relu_backward(cuda.to_device(dY), cuda.to_device(Y), dX)
    np.testing.assert_array_equal(dX.copy_to_host(), dY * (Y > 0))


@pytest.mark.parametrize("dt", DTYPES)
def test_gather_batch(dt):
    rng = np.random.default_rng(6)
    X = _rand(rng, (12, 5), dt)
    y = rng.integers(0, 10, 12).astype(np.int64)
    perm = rng.permutation(12).astype(np.int64)
    Xb = cuda.device_array((4, 5), dtype=dt)
    yb = cuda.device_array(4, dtype=np.int64)
    ck.gather_batch(cuda.to_device(X), cuda.to_device(y), cuda.to_device(perm), 6, Xb, yb)
    np.testing.assert_array_equal(Xb.copy_to_host(), X[perm[6:10]])
    np.testing.assert_array_equal(yb.copy_to_host(), y[perm[6:10]])


def _np_lse(Z):
    m = Z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(Z - m).sum(axis=1, keepdims=True)))[:, 0]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("ncols", [3, 10])  # below / above one (simulator) row block
def test_row_max_and_logsumexp(dt, ncols):
    rng = np.random.default_rng(ncols)
    Z = (_rand(rng, (3, ncols), dt) * 10).astype(dt)
    dZ = cuda.to_device(Z)
    out = cuda.device_array(3, dtype=dt)
    ck.row_max(dZ, out)
    np.testing.assert_array_equal(out.copy_to_host(), Z.max(axis=1))
    ck.row_logsumexp(dZ, out)
    np.testing.assert_allclose(out.copy_to_host(), _np_lse(Z.astype(np.float64)), **_tol(dt))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("ncols", [10, 3])
def test_softmax_xent_forward_backward(dt, ncols):
    rng = np.random.default_rng(7 + ncols)
    B = 4
    Z = (_rand(rng, (B, ncols), dt) * 5).astype(dt)
    y = rng.integers(0, ncols, B).astype(np.int64)
    Z[0, :] = 0  # ties: argmax is the first column, correct only for label 0
    y[0] = 0
    Z[1, :] = 1
    y[1] = 2
    Z[2, ncols - 1] = 1000  # large logits must not overflow
    loss = cuda.device_array(B, dtype=dt)
    correct = cuda.device_array(B, dtype=np.int32)
    dZ = cuda.device_array((B, ncols), dtype=dt)
    ck.softmax_xent(cuda.to_device(Z), cuda.to_device(y), loss, correct, dZ, scale=1.0 / B)
    Z64 = Z.astype(np.float64)
    lse = _np_lse(Z64)
    ref_loss = lse - Z64[np.arange(B), y]
    P = np.exp(Z64 - lse[:, None])
    P[np.arange(B), y] -= 1
    np.testing.assert_allclose(loss.copy_to_host(), ref_loss, **_tol(dt))
    np.testing.assert_allclose(dZ.copy_to_host(), P / B, **_tol(dt))
    np.testing.assert_array_equal(correct.copy_to_host(), (Z.argmax(axis=1) == y).astype(np.int32))
    # forward only: dZ untouched
    before = dZ.copy_to_host()
    ck.softmax_xent(cuda.to_device(Z + 1), cuda.to_device(y), loss, correct, None)
    np.testing.assert_array_equal(dZ.copy_to_host(), before)
    np.testing.assert_allclose(loss.copy_to_host(), ref_loss, **_tol(dt))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", [(5, 3), (9, 11)])
def test_col_sum(dt, shape):
    rng = np.random.default_rng(8)
    X = _rand(rng, shape, dt)
    out = cuda.device_array(shape[1], dtype=dt)
    ck.col_sum(cuda.to_device(X), out)
    np.testing.assert_allclose(out.copy_to_host(), X.sum(axis=0), **_tol(dt))


@pytest.mark.parametrize("dt", DTYPES)
def test_vec_sum_into(dt):
    rng = np.random.default_rng(9)
    x = _rand(rng, 21, dt)  # longer than the (simulator) block
    c = rng.integers(0, 2, 7).astype(np.int32)
    acc = cuda.to_device(np.array([1.0, 2.0], dtype=dt))
    ck.vec_sum_into(cuda.to_device(x), acc, 0)
    ck.vec_sum_into(cuda.to_device(c), acc, 1)
    np.testing.assert_allclose(acc.copy_to_host(), [1.0 + x.astype(np.float64).sum(),
                                                    2.0 + c.sum()], **_tol(dt))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("mu,wd", [(0.0, 0.0), (0.9, 1e-2)])
@pytest.mark.parametrize("lr_on_device", [False, True])
def test_sgd_momentum(dt, mu, wd, lr_on_device):
    rng = np.random.default_rng(10)
    p, g, v = _rand(rng, 37, dt), _rand(rng, 37, dt), _rand(rng, 37, dt)
    dp, dg, dv = cuda.to_device(p), cuda.to_device(g), cuda.to_device(v)
    lr = cuda.to_device(np.array([0.1], dtype=dt)) if lr_on_device else 0.1
    ck.sgd_momentum(dp, dg, dv, lr, mu, wd)
    v_ref = mu * v + (g + wd * p)
    p_ref = p - 0.1 * v_ref
    np.testing.assert_allclose(dv.copy_to_host(), v_ref, **_tol(dt))
    np.testing.assert_allclose(dp.copy_to_host(), p_ref, **_tol(dt))


def test_interleaved_launch_configurations():
    # the same kernel launched with different grids in turn (regression: in the simulator a
    # cached kernel[grid, block] object keeps only the last configuration)
    rng = np.random.default_rng(11)
    X1, X2 = _rand(rng, (3, 10), np.float32), _rand(rng, (3, 2), np.float32)
    o1, o2 = cuda.device_array(10, np.float32), cuda.device_array(2, np.float32)
    d1, d2 = cuda.to_device(X1), cuda.to_device(X2)
    for _ in range(2):
        ck.col_sum(d1, o1)
        ck.col_sum(d2, o2)
        np.testing.assert_allclose(o1.copy_to_host(), X1.sum(axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(o2.copy_to_host(), X2.sum(axis=0), rtol=1e-5, atol=1e-6)
