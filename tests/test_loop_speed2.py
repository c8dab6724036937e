"""Loop speed, part 2 (issue #18): large tape and snapshot buffers kept between calls (cpu), and
the further adjoint transformations for the heat stencil and Rosenbrock.

Every transformation is checked against the unoptimized gradient (its switch off) and central
finite differences, on the python target and compiled.
"""
import gc
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


def _empty_pool():
    """Drop the free blocks other tests left (after collecting the arrays they left for the
    cyclic GC, which conftest.py runs rarely), so that this test's requests meet only its own."""
    gc.collect()
    memory.release_retained()


def test_kept_block_reused_only_when_free():
    _empty_pool()
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
    c[:] = 4.0
    address = b.__array_interface__["data"][0]
    del b                                       # now free: the next request of that size reuses it
    d = memory.snapshot_buffer(x, 200)
    assert d.__array_interface__["data"][0] == address
    assert np.all(row == 1.0)                   # untouched by the reuse
    e = memory.snapshot_buffer(x, 2000)         # ten times larger: never a smaller block
    assert e.shape == (2000,) + x.shape
    e[:] = 3.0
    assert np.all(row == 1.0) and np.all(c == 4.0)     # (c's block was never handed out again)
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
    _empty_pool()
    a = memory.snapshot_buffer(_large(), 200)          # not kept: over the cap
    assert a.shape[0] == 200
    assert not any(np.shares_memory(a, block) for block in memory._retained)


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


# -- the seed at the end ------------------------------------------------------------------------

def rosenbrock(x):
    s = 0.0
    for i in range(x.shape[0] - 1):
        a = x[i + 1] - x[i] * x[i]
        b = 1.0 - x[i]
        s += 100.0 * a * a + b * b
    return s


def two_grads(x, w, c):          # array and scalar gradients; a helper (its adjoint keeps the seed)
    y = x * w
    return np.sum(y * y) + c * np.sum(x) + heat(x, c, 3)


def _both(build, monkeypatch, tmp_path, switch):
    from srcgrad import transform
    results = []
    for on in (True, False):
        monkeypatch.setattr(transform, switch, on)
        monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / str(on)))
        results.append(build())
    return results


@pytest.mark.parametrize("target", ["python", pytest.param("cpu", marks=pytest.mark.slow)])
def test_seed_at_end(target, monkeypatch, tmp_path):
    """(compiled by default: test_seed_at_end_rosenbrock_cpu_float32)"""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(7)
    args = (x, rng.standard_normal(7), 0.3)

    def build():
        g = srcgrad.value_and_grad(two_grads, wrt=(0, 1, 2), target=target)
        pullback = srcgrad.vjp(two_grads, wrt=(0, 1, 2), target=target)(*args)[1]
        return g(*args), [pullback(s) for s in (1.0, 0.5, -2.0, 0.0)], g.source_for(*args)
    (on, pulled_on, source_on), (off, pulled_off, source_off) = _both(build, monkeypatch, tmp_path,
                                                                      "SEED_AT_END")
    assert "seed at the end" in source_on and "seed at the end" not in source_off
    assert on[0] == off[0]
    for a, b in zip(on[1], off[1]):
        assert np.array_equal(a, b)             # seed 1.0: the same operations, bit for bit
    for got, want in zip(pulled_on, pulled_off):
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    nan = srcgrad.vjp(two_grads, wrt=(0, 1, 2), target=target)(*args)[1](float("nan"))
    assert all(np.all(np.isnan(g)) for g in nan)       # NaN in, NaN out
    check_grad(two_grads, args, wrt=(0, 1, 2), target="python")


def test_seed_at_end_rosenbrock_cpu_float32(monkeypatch, tmp_path):
    from srcgrad import transform
    monkeypatch.setattr(transform, "SEED_AT_END", True)     # the default (see transform.py)
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path))
    x = np.random.default_rng(6).random(50)
    g = srcgrad.value_and_grad(rosenbrock)
    source = g.source_for(x)
    loop = source[source.index("joint sweep"):source.index("seed at the end")]
    assert "_seed" not in loop                  # the loop multiplies by no run-time seed
    reference = srcgrad.value_and_grad(rosenbrock, target="python")(x)
    np.testing.assert_allclose(g(x)[1], reference[1], rtol=1e-13)
    x32 = x.astype(np.float32)
    value, pullback = srcgrad.vjp(rosenbrock)(x32)
    half = pullback(0.5)
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, 0.5 * srcgrad.grad(rosenbrock)(x32), rtol=1e-6)
    check_grad(rosenbrock, (x[:6],), target="python")
