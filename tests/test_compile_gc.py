"""srcgrad.compile_gc: full garbage collections deferred while Numba compiles (issue
17), and put back afterwards, whatever the threads, nesting and the user's own settings."""
import gc
import threading

import numpy as np
import pytest

from srcgrad import compile_gc


@pytest.fixture
def thresholds():
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


def test_raised_inside_restored_after_even_on_error(thresholds):
    with compile_gc.fewer_collections():
        assert gc.get_threshold() == (700, 10, compile_gc.FULL_THRESHOLD)
        with compile_gc.fewer_collections():            # nested: still raised
            assert gc.get_threshold()[2] == compile_gc.FULL_THRESHOLD
        assert gc.get_threshold()[2] == compile_gc.FULL_THRESHOLD
    assert gc.get_threshold() == (700, 10, 10)
    with pytest.raises(RuntimeError):
        with compile_gc.fewer_collections():
            raise RuntimeError("a failed compile")
    assert gc.get_threshold() == (700, 10, 10)


def test_overlapping_threads_restore_once_the_last_ends(thresholds):
    entered, release = threading.Event(), threading.Event()

    def other():
        with compile_gc.fewer_collections():
            entered.set()
            release.wait(10)

    t = threading.Thread(target=other)
    with compile_gc.fewer_collections():
        t.start()
        entered.wait(10)
    assert gc.get_threshold()[2] == compile_gc.FULL_THRESHOLD   # the thread's block still runs
    release.set()
    t.join(10)
    assert gc.get_threshold() == (700, 10, 10)


def test_user_settings_are_left_alone(thresholds, monkeypatch):
    gc.set_threshold(0, 10, 10)                     # automatic collection off: stays off
    with compile_gc.fewer_collections():
        assert gc.get_threshold() == (0, 10, 10)
    gc.set_threshold(700, 10, 10)
    with compile_gc.fewer_collections():
        gc.set_threshold(5000, 20, 20)              # changed inside the block: kept
    assert gc.get_threshold() == (5000, 20, 20)
    gc.set_threshold(700, 10, 10)
    monkeypatch.setenv("SRCGRAD_COMPILE_GC", "0")
    with compile_gc.fewer_collections():
        assert gc.get_threshold() == (700, 10, 10)


def _cube_sum(x):
    return np.sum(x * x * x)


def test_a_gradients_first_call_compiles_with_fewer_collections(thresholds):
    """The first call of a compiled gradient (where Numba compiles it) runs in the block; the
    gradient is the same as NumPy's and the thresholds are back afterwards."""
    from numba.core import event

    import srcgrad

    seen = []

    class Listener(event.Listener):
        def on_start(self, ev):
            seen.append(gc.get_threshold()[2])

        def on_end(self, ev):
            pass

    listener = Listener()
    event.register("numba:compile", listener)
    try:
        x = np.linspace(-1.0, 2.0, 5)
        g = srcgrad.grad(_cube_sum)(x)
    finally:
        event.unregister("numba:compile", listener)
    np.testing.assert_allclose(g, 3 * x * x, rtol=1e-12)
    assert seen and all(t == compile_gc.FULL_THRESHOLD for t in seen), seen
    assert gc.get_threshold() == (700, 10, 10)
