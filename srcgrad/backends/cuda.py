"""The ``cuda`` target's runtime for generated modules: :mod:`srcgrad.cuda.map_runtime`.

Generated map-mode modules import their helpers by the target's name, ``srcgrad.backends.cuda``
(as the other targets' modules import ``srcgrad.backends.python`` or ``srcgrad.backends.cpu``);
the code lives in the CUDA package.

This name stays importable: importing it gives the module ``srcgrad.cuda.map_runtime`` itself (the same
object, so every name, private ones included, and every monkeypatch behave as before)."""
import sys

from ..cuda import map_runtime as _moved

sys.modules[__name__] = _moved
