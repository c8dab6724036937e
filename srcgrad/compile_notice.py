"""One message when a compile runs long (issue 17).

Numba compiles a generated adjoint on its first call, which can take seconds on a small machine.
A user who sees nothing happen for that long cannot tell a compile from a hang, so a first call
that is still running after :data:`DELAY` seconds logs, once, what is being compiled and where
the result is cached (JAX users get the same from their logs). Short compiles and cache loads
stay quiet. The message goes to the ``"srcgrad"`` logger at WARNING level: without any logging
configuration Python prints it on stderr; ``SRCGRAD_QUIET=1`` (or the logger's level) silences it.
"""
import logging
import os
import threading
from contextlib import contextmanager

DELAY = 2.0                     # seconds a compile may run before it is announced
logger = logging.getLogger("srcgrad")


def quiet():
    return os.environ.get("SRCGRAD_QUIET", "").strip() not in ("", "0")


@contextmanager
def announce_if_slow(what, cached_in, delay=None):
    """Run the body; if it is still running after ``delay`` seconds, log one message saying that
    ``what`` is compiling and that the result is cached in ``cached_in``."""
    if quiet():
        yield
        return
    timer = threading.Timer(DELAY if delay is None else delay, _say, (what, cached_in))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _say(what, cached_in):
    logger.warning("srcgrad: compiling %s with Numba; this takes a while the first time, and the "
                   "result is cached in %s for next time", what, cached_in)
