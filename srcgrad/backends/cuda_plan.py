"""Array-mode planning moved to :mod:`srcgrad.cuda.array_plan`.

This name stays importable: importing it gives the module ``srcgrad.cuda.array_plan`` itself (the same
object, so every name, private ones included, and every monkeypatch behave as before)."""
import sys

from ..cuda import array_plan as _moved

sys.modules[__name__] = _moved
