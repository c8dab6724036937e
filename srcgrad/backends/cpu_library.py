"""Compiled (Numba) versions of the NumPy/SciPy coverage helpers of :mod:`srcgrad.runtime`.

The cpu backend takes each name of ``runtime.LIBRARY_HELPERS`` from here when this module defines
it, else compiles the runtime version as it is.
"""
