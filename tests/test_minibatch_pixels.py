"""MinibatchLoop(...)(..., x_scale=s): integer samples (MNIST's uint8 pixels) converted to the
parameters' float type in the compiled gather, ``dtype(pixel) * dtype(s)``: the same trained
parameters, bit for bit, as the float images computed that way, for every batch loop (the fused
SGD and Momentum steps, the unfused loop with Adam, the gather on a second thread) and float32 /
float64; the gather itself for every sample ndim; the refusals."""

import numba
import numpy as np
import pytest

import srcgrad
from srcgrad import value_and_grad
from srcgrad.datasets import MNIST_SCALE
from srcgrad.errors import DTypeError, SrcgradError
from srcgrad.optim import SGD, Adam, MinibatchLoop, Momentum
from srcgrad.training.mlp import init_params, mlp_loss

N, B = 150, 32          # a short last batch (150 = 4 * 32 + 22)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (N, 784), dtype=np.uint8)
    return pixels, rng.integers(0, 10, N), rng.permutation(N)


def _train(make_opt, X, y, order, dtype, x_scale=None, **loop_options):
    params = [p.astype(dtype) for p in init_params(16, seed=1)]
    loop = MinibatchLoop(value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)), make_opt(params),
                         blas_threads=1, **loop_options)
    total = 0.0
    for epoch in range(2):
        total += loop(params, X, y, order, B, x_scale=x_scale) if x_scale is not None else \
            loop(params, X, y, order, B)
    return total, params


@pytest.mark.parametrize("make_opt", [
    lambda p: SGD(p, lr=0.1),
    lambda p: Momentum(p, lr=0.05, momentum=0.9),
    lambda p: Adam(p, lr=1e-3),
], ids=["sgd-fused", "momentum-fused", "adam-unfused"])
def test_pixels_train_what_the_float32_images_train(make_opt):
    pixels, y, order = _data()
    images = pixels * np.float32(MNIST_SCALE)          # load_mnist()'s float32 images
    want_total, want = _train(make_opt, images, y, order, np.float32)
    total, got = _train(make_opt, pixels, y, order, np.float32, x_scale=MNIST_SCALE)
    assert total == want_total
    for g, w in zip(got, want):
        assert g.dtype == np.float32 and np.array_equal(g, w)


def test_float64_parameters_convert_in_float64():
    pixels, y, order = _data(1)
    images = pixels.astype(np.float64) * MNIST_SCALE
    assert not np.array_equal(images, (pixels * np.float32(MNIST_SCALE)).astype(np.float64))
    make = lambda p: SGD(p, lr=0.1)                                        # noqa: E731
    want_total, want = _train(make, images, y, order, np.float64)
    total, got = _train(make, pixels, y, order, np.float64, x_scale=MNIST_SCALE)
    assert total == want_total
    assert all(g.dtype == np.float64 and np.array_equal(g, w) for g, w in zip(got, want))


def test_pixels_with_the_gather_ahead():
    from srcgrad.training import gather_ahead
    if not gather_ahead.available():
        pytest.skip("no POSIX semaphores: the gather ahead is not available here")
    pixels, y, order = _data(2)
    make = lambda p: Momentum(p, lr=0.05, momentum=0.9)                     # noqa: E731
    want_total, want = _train(make, pixels, y, order, np.float32, x_scale=MNIST_SCALE)
    total, got = _train(make, pixels, y, order, np.float32, x_scale=MNIST_SCALE,
                        gather_ahead=True)
    assert total == want_total
    assert all(np.array_equal(g, w) for g, w in zip(got, want))


def test_gather_converts_every_ndim_and_integer_dtype():
    from srcgrad.training.fused_runs import _gather_batch

    @numba.njit
    def gather(X, y, order, start, batch_size, Xb, yb, scale):
        Xc, yc, size = _gather_batch(X, y, order, start, batch_size, Xb, yb, scale)
        return Xc.copy(), yc.copy(), size

    rng = np.random.default_rng(3)
    n, b = 11, 4
    order = rng.permutation(n).astype(np.int64)
    y = rng.integers(0, 9, n)
    for X in (rng.integers(0, 256, (n, 9), dtype=np.uint8),          # rows in flight
              rng.integers(0, 256, (n, 3, 3), dtype=np.uint8),       # the reshaping path
              rng.integers(-500, 500, (n, 5)).astype(np.int16)):
        for dtype in (np.float32, np.float64):
            scale = dtype(0.37)
            Xb = np.full((b,) + X.shape[1:], np.nan, dtype)
            for start in (0, 4, 8):                                  # the last batch has 3
                Xc, yc, size = gather(X, y, order, start, b, Xb, np.empty(b, y.dtype), scale)
                rows = order[start:start + b]
                assert size == len(rows) and Xc.dtype == dtype
                assert np.array_equal(Xc, X[rows].astype(dtype) * scale)
                assert np.array_equal(yc, y[rows])


def test_refusals():
    pixels, y, order = _data(4)
    params = list(init_params(16, seed=1))
    loop = MinibatchLoop(value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)), SGD(params, lr=0.1))
    for X, x_scale, error in (
            (pixels * np.float32(MNIST_SCALE), MNIST_SCALE, "X has dtype float32"),
            (pixels > 100, MNIST_SCALE, "X has dtype bool"),
            (pixels, "1/255", "must be a real number"),
            (pixels, 1j, "must be a real number"),
            (pixels, True, "must be a real number")):
        with pytest.raises(DTypeError, match=error) as info:
            loop(params, X, y, order, B, x_scale=x_scale)
        assert isinstance(info.value, SrcgradError) and isinstance(info.value, TypeError)
    with pytest.raises(ValueError, match="finite"):
        loop(params, pixels, y, order, B, x_scale=float("inf"))
    assert srcgrad.SrcgradError is SrcgradError


def test_pixels_through_the_lean_fallback_and_the_auto_thread_choice():
    """x_scale reaches the batches a loop reruns with the full adjoint after a fused loop's size
    guard failed (a last batch of one sample broadcast against W's rows: tests/test_optim.py's
    loss), and the chunks of blas_threads="auto" with the gather ahead as a candidate."""
    from test_optim import stretched_rows_loss
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (7, 4), dtype=np.uint8)
    images = pixels.astype(np.float64) * MNIST_SCALE
    y = rng.normal(size=7)
    start = (rng.normal(size=(3, 4)), rng.normal(size=4))
    order = rng.permutation(7).astype(np.int64)
    vg = value_and_grad(stretched_rows_loss, wrt=(0, 1))
    results = []
    for X, x_scale in ((images, None), (pixels, MNIST_SCALE)):
        params = tuple(p.copy() for p in start)
        loop = MinibatchLoop(vg, SGD(params, lr=0.01))       # batches of 3, 3, 1
        total = loop(params, X, y, order, 3, x_scale=x_scale) if x_scale is not None else \
            loop(params, X, y, order, 3)
        assert loop._not_lean                                 # the fallback ran
        results.append((total, params))
    (want_total, want), (total, got) = results
    assert total == want_total and all(np.array_equal(g, w) for g, w in zip(got, want))

    pixels, labels, order = _data(6)
    images = pixels * np.float32(MNIST_SCALE)
    trained = []
    for X, x_scale in ((images, None), (pixels, MNIST_SCALE)):
        params = [p.copy() for p in init_params(16, seed=1)]
        loop = MinibatchLoop(value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)), SGD(params, lr=0.1),
                             blas_threads="auto", gather_ahead="auto")
        for _ in range(3):
            loop(params, X, labels, order, 8, **({} if x_scale is None else {"x_scale": x_scale}))
        trained.append(params)
    # the thread counts of the two loops' chunks may differ: equal to the products' rounding
    for g, w in zip(*trained):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
