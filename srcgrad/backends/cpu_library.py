"""Moved to :mod:`srcgrad.backends.cpu.library`; this name stays importable (the same module)."""
import sys

from .cpu import library as _library

sys.modules[__name__] = _library
