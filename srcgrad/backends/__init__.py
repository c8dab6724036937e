"""Backends: how a generated module's functions are compiled (python, cpu via Numba, cuda)."""
