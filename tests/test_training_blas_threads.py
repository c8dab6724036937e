"""BLAS threads of MinibatchLoop (``srcgrad.training.blas_threads``): ``"auto"`` times runs of
batches with each candidate thread count and keeps the fastest; the call must then train exactly
what a loop with that count trains (parameters and optimizer state restored after the timed
runs), agree with the loop without the setting to rounding and with a float64 NumPy reference,
and leave the BLAS's own setting as it was."""
import numpy as np
import pytest

import srcgrad
from srcgrad.training import blas_threads as bt
from srcgrad.training import optim
from srcgrad.training.mlp import init_params, mlp_loss
from conftest import mlp_sgd_reference

pytestmark = pytest.mark.skipif(not bt.controllable(),
                                reason="no OpenBLAS with a thread setter in this environment")


def _problem(n=200, n_in=12, hidden=8):
    """An MLP problem; the default is small. ``_problem(3200, 784, 128)`` with batch 64 (MNIST's
    shapes) has products OpenBLAS 0.3.31 runs on several threads and rounds differently there
    (parameters after an epoch ~1e-8 apart on 2 threads and on 1)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, n_in)).astype(np.float32)
    y = rng.integers(0, 10, n)
    params = tuple(init_params(hidden, seed=1, n_in=n_in))
    return X, y, params, rng.permutation(n).astype(np.int64)


def _loop(setting, calls=None):
    """A MinibatchLoop whose runs of batches are recorded as (first, stop, BLAS threads)."""
    loop = optim.MinibatchLoop(srcgrad.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)),
                               optim.SGD(lr=0.1), blas_threads=setting)
    if calls is not None:
        train = loop._train

        def spy(params, X, y, order, batch_size, first=0, stop=None):
            calls.append((first, stop, bt.current_blas_threads()))
            return train(params, X, y, order, batch_size, first, stop)
        loop._train = spy
    return loop


def test_blas_threads_sets_and_restores():
    before = bt.current_blas_threads()
    with bt.blas_threads(1):
        assert bt.current_blas_threads() == 1
    assert bt.current_blas_threads() == before
    with pytest.raises(KeyError):
        with bt.blas_threads(2):
            assert bt.current_blas_threads() == 2
            raise KeyError("inside")
    assert bt.current_blas_threads() == before
    with pytest.raises(ValueError, match="at least 1"):
        with bt.blas_threads(0):
            pass


def test_candidates_and_settings():
    assert bt.candidates(1) == [1]
    assert bt.candidates(2) == [2, 1]
    assert bt.candidates(16) == [16, 8, 4, 1]
    for bad in (0, -1, True, 1.5, "fast"):
        with pytest.raises(ValueError, match="blas_threads must be"):
            _loop(bad)
    assert _loop(3).blas_threads == 3 and _loop(None).blas_threads is None


def test_auto_chooses_by_timing_and_trains_the_same_parameters():
    X, y, params, order = _problem(6400, 784, 128)
    B, lr = 64, 0.1                                   # 100 batches: runs of 2 batches
    calls = []
    with bt.blas_threads(2):                          # two candidates on any machine: 2 and 1
        loop = _loop("auto", calls)
        tuned = tuple(p.copy() for p in params)
        total = loop(tuned, X, y, order, B)
        after_epoch = tuple(p.copy() for p in tuned)
        assert bt.current_blas_threads() == 2         # restored after the call
        [(key, (chosen, measured))] = loop.blas_threads_chosen.items()
        assert key[0] == B and chosen in (1, 2) and set(measured) == {1, 2}
        assert all(0 < t < np.inf for t in measured.values())
        # three rounds of (2, 1) then (1, 2) on batches 0, 1 (each from the starting
        # parameters), then the call's batches with the choice
        assert calls == [(0, 2, 2), (0, 2, 1), (0, 2, 1), (0, 2, 2), (0, 2, 2), (0, 2, 1),
                         (0, 100, chosen)]
        # a later call uses the choice, measures nothing
        calls.clear()
        loop(tuned, X, y, order, B, first=0, stop=5)
        assert calls == [(0, 5, chosen)] and loop.blas_threads_chosen[key] == (chosen, measured)
        # exactly what a loop with that many threads trains
        fixed = tuple(p.copy() for p in params)
        fixed_total = _loop(chosen)(fixed, X, y, order, B)
    for a, b in zip(after_epoch, fixed):
        np.testing.assert_array_equal(a, b)
    assert total == fixed_total
    # and the loop without a setting (OpenBLAS's 2 threads here) to rounding: a product may
    # round differently on 1 and 2 threads
    plain = tuple(p.copy() for p in params)
    with bt.blas_threads(2):
        plain_total = _loop(None)(plain, X, y, order, B)
    for a, b in zip(after_epoch, plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(total, plain_total, rtol=1e-5)
    for got, want in zip(plain, mlp_sgd_reference(params, X, y, order, B, lr)):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_auto_restores_the_optimizer_state_after_its_runs():
    """Momentum's velocity: the timed runs start from the call's state and leave it as it was,
    so the call trains what a loop with the chosen count trains."""
    X, y, params, order = _problem(6400, 784, 128)
    with bt.blas_threads(2):
        loop = optim.MinibatchLoop(srcgrad.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)),
                                   optim.Momentum(lr=0.05, momentum=0.9))
        tuned = tuple(p.copy() for p in params)
        loop(tuned, X, y, order[:640], 64)            # 10 batches: too few to choose; state set
        loop(tuned, X, y, order, 64)                  # chooses, then trains
        [(chosen, _)] = loop.blas_threads_chosen.values()
        other = optim.MinibatchLoop(srcgrad.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)),
                                    optim.Momentum(lr=0.05, momentum=0.9), blas_threads=chosen)
        fixed = tuple(p.copy() for p in params)
        other.blas_threads = None                     # the first call as the "auto" loop ran it
        other(fixed, X, y, order[:640], 64)
        other.blas_threads = chosen
        other(fixed, X, y, order, 64)
    for a, b in zip(tuned, fixed):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(loop.optimizer.state_tuple()[0], other.optimizer.state_tuple()[0]):
        np.testing.assert_array_equal(a, b)


def test_fixed_threads_and_too_few_batches():
    X, y, params, order = _problem()
    before = bt.current_blas_threads()
    calls = []
    p = tuple(q.copy() for q in params)
    _loop(1, calls)(p, X, y, order, 50)               # an int: that many threads
    assert calls == [(0, None, 1)] and bt.current_blas_threads() == before
    calls.clear()
    with bt.blas_threads(2):
        loop = _loop("auto", calls)
        loop(p, X, y, order, 50)                      # 4 batches: too few to measure
        assert calls == [(0, 4, 2)] and loop.blas_threads_chosen == {}
    for got, want in zip(p, mlp_sgd_reference(params, X, y, np.concatenate([order, order]), 50, 0.1)):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
