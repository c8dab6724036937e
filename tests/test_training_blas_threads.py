"""BLAS threads of MinibatchLoop (``srcgrad.training.blas_threads``): ``"auto"`` trains in
chunks of batches, times rounds of chunks on each candidate thread count, keeps the one with the
least median per-round ratio and measures again later. The choice's logic is tested on injected
timings (no timed tests); the trained parameters must match a float64 NumPy reference whatever
counts the batches ran on, and the BLAS's own setting is left as it was."""
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


# --- the choice's logic, on injected timings --------------------------------------------------

def _measure(choice, cost, rounds):
    """``rounds`` rounds of chunks on ``choice``: ``cost(threads, round)`` seconds per batch.
    Returns the counts in the order the chunks ran."""
    ran = []
    for r in range(rounds):
        for _ in choice.tries:
            threads, timed = choice.next()
            assert timed
            ran.append(threads)
            choice.record(threads, cost(threads, r) * bt.CHUNK, bt.CHUNK)
    return ran


def test_choice_takes_the_median_of_per_round_ratios():
    choice = bt.ThreadChoice([2, 1])
    assert choice.next() == (2, True) and choice.guess() == 2
    # 2 threads at 0.7 of 1 thread's time, but one round disturbed (2 threads 10x slower) and
    # the machine's load drifting (every time grows round by round): the ratios decide
    ran = _measure(choice, lambda c, r: (1 + r) * (0.7 if c == 2 else 1.0)
                   * (10 if (c, r) == (2, 1) else 1), bt.ROUNDS - 1)
    assert ran == [2, 1, 1, 2, 2, 1, 1, 2, 2, 1][:2 * (bt.ROUNDS - 1)]   # order rotated each round
    assert choice.threads is None and choice.guess() == 2                # not yet: too few rounds
    _measure(choice, lambda c, r: 0.7 if c == 2 else 1.0, 1)
    assert choice.threads == 2 and choice.next() == (2, False)
    assert choice.ratios[2] == 1.0 and choice.ratios[1] == pytest.approx(1 / 0.7)
    assert choice.decisions == [(2, bt.ROUNDS)]
    assert choice.summary().startswith("2 threads (median per-batch time relative to 2 threads:")


def test_choice_goes_on_while_the_candidates_are_close():
    choice = bt.ThreadChoice([2, 1])
    _measure(choice, lambda c, r: 1.0 if c == 2 else 0.98, bt.ROUNDS)    # 2% apart: measure on
    assert choice.threads is None and choice.guess() == 1
    _measure(choice, lambda c, r: 1.0 if c == 2 else 0.98, bt.MAX_ROUNDS - bt.ROUNDS - 1)
    assert choice.threads is None
    _measure(choice, lambda c, r: 1.0 if c == 2 else 0.98, 1)            # the limit: the better
    assert choice.threads == 1 and choice.decisions == [(1, bt.MAX_ROUNDS)]


def test_choice_is_measured_again_after_recheck_batches():
    choice = bt.ThreadChoice([4, 2, 1])
    _measure(choice, lambda c, r: {4: 2.0, 2: 1.0, 1: 1.5}[c], bt.ROUNDS)
    assert choice.threads == 2
    limit = bt.RECHECK * bt.CHUNK * 3
    assert choice.until_recheck() == limit
    choice.trained(limit - 1)
    assert choice.next() == (2, False) and choice.until_recheck() == 1
    choice.trained(1)                                 # the load changed meanwhile: 1 is best now
    assert choice.threads is None and choice.next()[1]
    _measure(choice, lambda c, r: {4: 9.0, 2: 5.0, 1: 1.0}[c], bt.EARLY_ROUNDS)  # a clear lead
    assert choice.threads == 1 and choice.decisions[1:] == [(1, bt.EARLY_ROUNDS)]
    # re-measured later, the clear losers (5x and 9x) on short chunks, the others on full ones
    assert [choice.chunk(c) for c in (4, 2, 1)] == [bt.MIN_CHUNK, bt.MIN_CHUNK, bt.CHUNK]
    assert "2 decisions: [2, 1]" in choice.summary() and choice.until_recheck() == limit
    # confirmed at the next recheck (by its probe round: the losers lost by more than
    # PROBE_LEAD): the interval doubles; a changed choice resets it
    choice.trained(limit)
    _measure(choice, lambda c, r: {4: 9.0, 2: 5.0, 1: 1.0}[c], 1)
    assert choice.threads == 1 and choice.until_recheck() == 2 * limit
    assert choice.decisions[-1] == (1, 1)
    choice.trained(2 * limit)
    # the probe round finds 2 threads ahead: dropped, then the recheck's own rounds
    _measure(choice, lambda c, r: {4: 9.0, 2: 1.0, 1: 5.0}[c], 1 + bt.EARLY_ROUNDS)
    assert choice.threads == 2 and choice.until_recheck() == limit
    assert [choice.chunk(c) for c in (4, 2, 1)] == [bt.MIN_CHUNK, bt.CHUNK, bt.MIN_CHUNK]


# --- the loop with the choice (timings injected through the clock) ---------------------------

def _timed_loop(monkeypatch, cost):
    """An "auto" loop whose batches "take" ``cost[threads]`` seconds each on the clock the
    choice reads; its runs recorded as (first, stop, threads)."""
    now, calls = [0.0], []
    monkeypatch.setattr(bt, "_clock", lambda: now[0])
    loop = _loop("auto", calls)
    train = loop._train

    def timed(params, X, y, order, batch_size, first=0, stop=None):
        total = train(params, X, y, order, batch_size, first, stop)
        now[0] += (stop - first) * cost[bt.current_blas_threads()]
        return total
    loop._train = timed
    return loop, calls


@pytest.mark.parametrize("cost, best, R", [({2: 1.0, 1: 1.2}, 2, bt.ROUNDS),
                                          ({2: 3.0, 1: 1.0}, 1, bt.EARLY_ROUNDS)])
def test_auto_trains_in_timed_chunks_then_on_the_choice(monkeypatch, cost, best, R):
    X, y, params, order = _problem(1200)
    B, C = 5, bt.CHUNK                                # 240 batches
    with bt.blas_threads(2):                          # two candidates on any machine: 2 and 1
        loop, calls = _timed_loop(monkeypatch, cost)
        p = tuple(q.copy() for q in params)
        total = loop(p, X, y, order, B)
        assert bt.current_blas_threads() == 2         # restored after the call
    chunks = [(i * C, (i + 1) * C, t) for i, t in enumerate(
        [c for r in range(R) for c in ((2, 1) if r % 2 == 0 else (1, 2))])]
    assert calls == chunks + [(2 * R * C, 240, best)]
    [(key, choice)] = loop.blas_threads_chosen.items()
    assert key[0] == B and choice.threads == best and choice.decisions == [(best, R)]
    assert loop.blas_threads_used == {best: 240 - R * C, 3 - best: R * C}
    # every batch trained once, in order, whatever count it ran on: the reference to rounding
    for got, want in zip(p, mlp_sgd_reference(params, X, y, order, B, 0.1)):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    assert np.isfinite(total)


def test_auto_measures_across_calls_and_rechecks(monkeypatch):
    X, y, params, order = _problem(1200)
    B, C = 5, bt.CHUNK
    cost = {2: 1.0, 1: 1.2}
    with bt.blas_threads(2):
        loop, calls = _timed_loop(monkeypatch, cost)
        p = tuple(q.copy() for q in params)
        loop(p, X, y, order, B, first=0, stop=2 * C + 3)     # two chunks, then 3 batches untimed
        assert calls == [(0, C, 2), (C, 2 * C, 1), (2 * C, 2 * C + 3, 2)]
        [choice] = loop.blas_threads_chosen.values()
        assert len(choice.rounds) == 1 and choice.threads is None
        calls.clear()
        loop(p, X, y, order, B, first=2 * C + 3, stop=240)   # the rounds go on, then the choice
        assert [c[2] for c in calls[:2 * bt.ROUNDS - 2]] == [1, 2, 2, 1, 1, 2, 2, 1, 1, 2][
            :2 * bt.ROUNDS - 2]
        assert choice.threads == 2
        # 4 batches before the recheck; the load "changed" meanwhile: 1 thread is faster now
        choice.since = bt.RECHECK * 2 * C - 4
        cost.update({2: 5.0, 1: 1.0})
        calls.clear()
        loop(p, X, y, order, B)
        M = bt.MIN_CHUNK                    # 1 thread lost by 1.2x: re-measured on short chunks
        assert calls[:3] == [(0, 4, 2), (4, 4 + C, 2), (4 + C, 4 + C + M, 1)]
        assert choice.threads == 1 and choice.decisions == [(2, bt.ROUNDS), (1, bt.EARLY_ROUNDS)]
        E = bt.EARLY_ROUNDS
        assert loop.blas_threads_used == {2: 4 + E * C, 1: 236 - E * C}
        # the next recheck probes the clear loser (2 threads, 5x > PROBE_LEAD) on one batch,
        # and the choice, still that far ahead, is confirmed without more rounds
        choice.since = choice.interval() - 1
        calls.clear()
        loop(p, X, y, order, B, first=0, stop=2 * C)
        P = bt.PROBE_CHUNK
        assert calls == [(0, 1, 1), (1, 1 + P, 2), (1 + P, 1 + P + C, 1), (1 + P + C, 2 * C, 1)]
        assert choice.threads == 1 and choice.decisions[-1] == (1, 1)
    twice = np.concatenate([order, order, order[:2 * C * B]])
    for got, want in zip(p, mlp_sgd_reference(params, X, y, twice, B, 0.1)):
        np.testing.assert_allclose(got, want, rtol=5e-5, atol=5e-6)


def test_auto_on_mnist_shapes_trains_the_reference():
    """Real timings on MNIST's shapes (64x784 @ 784x128: products OpenBLAS runs on several
    threads): whatever the choice, the parameters match the reference and the setting is
    restored."""
    X, y, params, order = _problem(3200, 784, 128)
    with bt.blas_threads(2):
        loop = _loop("auto")
        p = tuple(q.copy() for q in params)
        loop(p, X, y, order, 64)
        assert bt.current_blas_threads() == 2
        assert sum(loop.blas_threads_used.values()) == 50
        assert set(loop.blas_threads_used) <= {1, 2}
    for got, want in zip(p, mlp_sgd_reference(params, X, y, order, 64, 0.1)):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_fixed_threads_and_one_thread_blas():
    X, y, params, order = _problem()
    before = bt.current_blas_threads()
    calls = []
    p = tuple(q.copy() for q in params)
    loop = _loop(1, calls)
    loop(p, X, y, order, 50)                          # an int: that many threads
    assert calls == [(0, None, 1)] and bt.current_blas_threads() == before
    assert loop.blas_threads_used == {1: 4}
    calls.clear()
    with bt.blas_threads(1):
        loop = _loop("auto", calls)
        loop(p, X, y, order, 50, first=1)             # a one-thread BLAS: nothing to choose
        assert calls == [(1, None, 1)] and loop.blas_threads_chosen == {}
        assert loop.blas_threads_used == {None: 3}
    ref = mlp_sgd_reference(params, X, y, np.concatenate([order, order[50:]]), 50, 0.1)
    for got, want in zip(p, ref):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
