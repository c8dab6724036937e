"""A first call that compiles for longer than compile_notice.DELAY says so once (issue 17).

The slow compile is faked: the python-target specialization's adjoint is replaced by a callable
that looks like a Numba dispatcher (it has ``signatures``) and sleeps on its calls. One test runs a
real Numba compile with the delay set to zero.
"""
import logging
import os
import time

import numpy as np
import pytest

import srcgrad
from srcgrad import compile_notice


def quadratic(x, a):
    return np.sum(x * x) * a


class FakeDispatcher:
    """Stands for a Numba dispatcher whose calls take ``seconds`` (the first one compiling)."""

    def __init__(self, function, seconds):
        self.function = function
        self.seconds = seconds
        self.signatures = []

    def __call__(self, *args):
        time.sleep(self.seconds)
        return self.function(*args)


def _with_fake_compile(seconds):
    g = srcgrad.grad(quadratic, target="python")
    x = np.arange(3.0)
    g(x, 2.0)                               # builds the specialization (python target: no notice)
    spec = g._last
    spec.adjoint = FakeDispatcher(spec.adjoint, seconds)
    spec._called.clear()
    g._fast, g._fast_calls = None, {}       # (the fast path's closures hold the real adjoint)
    return g, x


def _notices(caplog):
    return [r for r in caplog.records if r.name == "srcgrad" and "compiling" in r.getMessage()]


@pytest.fixture(autouse=True)
def loud(monkeypatch):
    monkeypatch.delenv("SRCGRAD_QUIET", raising=False)
    monkeypatch.setattr(compile_notice, "DELAY", 0.05)


def test_slow_first_call_says_so_once(caplog):
    caplog.set_level(logging.WARNING, logger="srcgrad")
    g, x = _with_fake_compile(0.4)
    grad = g(x, 2.0)
    np.testing.assert_allclose(grad, 4.0 * x)       # the result is unchanged
    notices = _notices(caplog)
    assert len(notices) == 1
    message = notices[0].getMessage()
    assert "the gradient of quadratic" in message
    assert "1-d float array, float" in message and "float64" in message
    assert os.environ["SRCGRAD_CACHE_DIR"] in message and "cached" in message
    g(x, 2.0)                                        # slow again, but compiled already: quiet
    time.sleep(0.1)
    assert len(_notices(caplog)) == 1


def test_short_compile_is_quiet(caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger="srcgrad")
    monkeypatch.setattr(compile_notice, "DELAY", 2.0)
    g, x = _with_fake_compile(0.0)
    g(x, 2.0)
    time.sleep(0.1)
    assert _notices(caplog) == []


def test_quiet_environment_variable(caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger="srcgrad")
    monkeypatch.setenv("SRCGRAD_QUIET", "1")
    g, x = _with_fake_compile(0.3)
    g(x, 2.0)
    time.sleep(0.1)
    assert _notices(caplog) == []


def test_unconfigured_logging_prints_on_stderr(capfd):
    """Without a logging setup, Python's last-resort handler puts the warning on stderr."""
    logger = logging.getLogger("srcgrad")
    saved = logger.handlers[:], logger.propagate
    logger.handlers[:] = []
    logger.propagate = False                        # no root/caplog handlers: the last resort
    try:
        compile_notice._say("the gradient of f", "/some/dir")
    finally:
        logger.handlers[:], logger.propagate = saved
    err = capfd.readouterr().err
    assert err.count("srcgrad: compiling the gradient of f") == 1 and "/some/dir" in err


def test_real_numba_compile_says_so_once(caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger="srcgrad")
    monkeypatch.setattr(compile_notice, "DELAY", 0.0)    # any compile counts as slow
    g = srcgrad.grad(quadratic, target="cpu")
    x = np.arange(3.0)
    np.testing.assert_allclose(g(x, 2.0), 4.0 * x)
    np.testing.assert_allclose(g(x, 3.0), 6.0 * x)
    time.sleep(0.05)
    notices = _notices(caplog)
    assert len(notices) == 1 and "the gradient of quadratic" in notices[0].getMessage()
