"""The hand-written CUDA kernels moved to :mod:`srcgrad.cuda.kernels`.

This name stays importable: importing it gives the module ``srcgrad.cuda.kernels`` itself (the same
object, so every name, private ones included, and every monkeypatch behave as before)."""
import sys

from ..cuda import kernels as _moved

sys.modules[__name__] = _moved
