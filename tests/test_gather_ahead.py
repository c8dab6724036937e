"""The batch gather on a second thread (``srcgrad.training.gather_ahead``): MinibatchLoop's fused
SGD and Momentum steps train on exactly the batches the serial gather gives (bit-identical
parameters and loss for a fixed BLAS thread count), a shorter last batch and ``first``/``stop``
included; ``blas_threads="auto"`` measures it as one more candidate and keeps it only when it
timed faster (injected timings); a failing gather thread raises instead of training on stale
buffers."""
import numpy as np
import pytest

import srcgrad
from srcgrad.training import blas_threads as bt
from srcgrad.training import gather_ahead, optim
from srcgrad.training.mlp import init_params, mlp_loss
from conftest import mlp_sgd_reference

pytestmark = pytest.mark.skipif(not gather_ahead.available(),
                                reason="no POSIX unnamed semaphores here")


def _problem(n=203, n_in=12, hidden=8):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((n, n_in)).astype(np.float32)
    y = rng.integers(0, 10, n)
    return X, y, tuple(init_params(hidden, seed=2, n_in=n_in)), rng.permutation(n)


def _loop(optimizer, ahead, threads=1):
    return optim.MinibatchLoop(srcgrad.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)), optimizer,
                               blas_threads=threads, gather_ahead=ahead)


@pytest.mark.parametrize("make", [lambda: optim.SGD(lr=0.1),
                                  lambda: optim.Momentum(lr=0.05, momentum=0.9)],
                         ids=["sgd", "momentum"])
def test_ahead_trains_bit_identically(make):
    X, y, params, order = _problem()
    results = []
    for ahead in (False, True):
        loop, p = _loop(make(), ahead), tuple(q.copy() for q in params)
        # batch 10: 21 batches, the last of 3 samples; in two calls, across the ring's wrap
        total = loop(p, X, y, order, 10, stop=7) + loop(p, X, y, order, 10, first=7)
        results.append((p, total))
    (p0, t0), (p1, t1) = results
    assert t0 == t1 and np.isfinite(t0)
    for a, b in zip(p0, p1):
        np.testing.assert_array_equal(a, b)
    if isinstance(loop.optimizer, optim.SGD):
        for got, want in zip(p1, mlp_sgd_reference(params, X, y, order, 10, 0.1)):
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_settings_and_candidates():
    with pytest.raises(ValueError, match="gather_ahead"):
        _loop(optim.SGD(lr=0.1), "yes")
    assert bt.candidates(2, ahead=True) == [2, (2, "ahead"), 1, (1, "ahead")]
    assert bt.candidates(1, ahead=True) == [1]          # no choice with a 1-thread BLAS
    assert bt.candidates(8, ahead=True) == [8, (8, "ahead"), 4, 2, 1, (1, "ahead")]
    assert bt.label((2, "ahead")) == "2+ahead" and bt.label(2) == 2
    assert _loop(optim.SGD(lr=0.1), "auto").ahead_candidate == (gather_ahead.cpus() > 1)
    assert not _loop(optim.SGD(lr=0.1), False).ahead_candidate
    assert optim.MinibatchLoop(srcgrad.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)),
                               optim.SGD(lr=0.1)).gather_ahead is False     # the default: off
    assert not _loop(optim.Adam(lr=0.1), "auto").ahead_candidate    # no fused step: serial


@pytest.mark.parametrize("cost, chosen", [
    ({(2, 0): 1.0, (2, 1): 0.8, (1, 0): 1.6, (1, 1): 1.5}, (2, "ahead")),
    ({(2, 0): 1.0, (2, 1): 1.3, (1, 0): 1.6, (1, 1): 1.5}, 2),
    ({(2, 0): 5.0, (2, 1): 6.0, (1, 0): 2.0, (1, 1): 0.8}, (1, "ahead"))])   # "under load"
def test_auto_keeps_an_ahead_candidate_only_when_faster(monkeypatch, cost, chosen):
    """Injected timings per batch for (BLAS threads, gather ahead); every batch trained once,
    in order, whatever ran it (the reference)."""
    if gather_ahead.cpus() < 2:
        pytest.skip("one CPU: the gather ahead is no candidate")
    X, y, params, order = _problem(1200)
    now, calls = [0.0], []
    monkeypatch.setattr(bt, "_clock", lambda: now[0])
    with bt.blas_threads(2):
        loop = _loop(optim.SGD(lr=0.1), "auto", threads="auto")
        train = loop._train

        def timed(params, X, y, order, batch_size, first=0, stop=None, ahead=None):
            total = train(params, X, y, order, batch_size, first, stop, ahead=ahead)
            setting = (bt.current_blas_threads(), int(bool(ahead)))
            now[0] += (stop - first) * cost[setting]
            calls.append((first, stop) + setting)
            return total
        loop._train = timed
        p = tuple(q.copy() for q in params)
        loop(p, X, y, order, 5)
    [choice] = loop.blas_threads_chosen.values()
    assert choice.threads == chosen
    assert {c[2:] for c in calls} == set(cost)           # every candidate measured
    assert calls[-1][2:] == bt._setting(chosen)[:1] + (int(chosen != 2),)
    assert sum(loop.blas_threads_used.values()) == 240 and "2+ahead" in loop.blas_threads_used
    assert ("gather ahead" in choice.summary()) == (chosen != 2)
    for got, want in zip(p, mlp_sgd_reference(params, X, y, order, 5, 0.1)):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_a_failing_gather_raises(monkeypatch):
    X, y, params, order = _problem()
    loop, p = _loop(optim.SGD(lr=0.1), True), tuple(q.copy() for q in params)
    loop(p, X, y, order, 10, stop=1)                     # compiled

    def broken(*args):
        raise RuntimeError("gather failed")
    monkeypatch.setattr(gather_ahead, "_gather_loop", broken)
    before = tuple(q.copy() for q in p)
    with pytest.raises(RuntimeError, match="gather failed"):
        loop(p, X, y, order, 10)
    for a, b in zip(p, before):                          # no step ran on the unfilled ring
        np.testing.assert_array_equal(a, b)
