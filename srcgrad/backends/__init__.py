"""Backends: where generated code runs, each with the same roles.

A backend object (:func:`backend`) owns the target's own steps of code generation, so that the
pipeline (``srcgrad/program.py``) names no target:

* ``check(unit)`` refuses, with the user's line, calls the target cannot run;
* ``lower(sections, analysis)`` rewrites a generated function body (its consecutive ``sections``:
  forward sweep, reverse sweep, return) for the target — the python target runs the code as
  generated; the cpu target writes matrix products and fused loop nests (``backends/cpu/``);
* ``options()`` are the target's settings that decide generated code, part of every generated
  module's cache key (:func:`srcgrad.codegen.codegen_options`).

The runtime helpers a generated module imports live in the target's module
(``srcgrad.backends.python``, ``srcgrad.backends.cpu``, ...); the helpers each backend has are
declared in :mod:`srcgrad.helpers`. This module imports neither Numba nor CUDA.
"""
import contextlib
import os
import sys


class Backend:
    """A target of generated code whose code is run as generated (no checks, no lowering).

    ``lower_products``: normalize writes ``np.inner``/``np.tensordot`` over one axis as ``@``
    (normalize/tensordot.py), which fits only a second operand of one or two axes (a kind-time
    guard refuses the others). The python target keeps the calls (their rule computes every
    ndim), and so does the cpu target (it writes them once the kinds are known)."""

    def __init__(self, name, lower_products=True):
        self.name = name
        self.lower_products = lower_products

    def check(self, unit):
        """Raise a SrcgradError naming the line of a call this target cannot run (none here)."""

    def lower(self, sections, analysis):
        """The function body's ``sections`` rewritten for this target (here: as they are)."""
        return sections

    def options(self):
        """Settings of this backend that change generated code (strings, for the cache key)."""
        return ()

    def __repr__(self):
        return f"<srcgrad backend {self.name!r}>"


class CpuBackend(Backend):
    """The Numba-compiled target. ``fuse``: write chains of array statements as loop nests (loop
    fusion, ``backends/cpu/fusion.py``); off generates the statements as written (tests and
    benchmarks compare both). ``fallback``: a fused loop nest whose sizes are not known equal is
    guarded by a size test, with the statements as written under ``else:`` (NumPy's broadcasting
    along size-1 axes and NumPy's errors); without it (:meth:`without_fallback`, for calls from
    Python, which rerun with the fallback when a guard fails) a failing guard raises
    ``FusionGuardFailed``, and Numba compiles about half as much for a typical adjoint."""

    def __init__(self):
        # np.inner/np.tensordot: written as matrix products once the kinds are known
        # (backends/cpu/tensordots.py), for every ndim, instead of normalize's `@`
        super().__init__("cpu", lower_products=False)
        self.fuse = True
        self.fallback = True

    @contextlib.contextmanager
    def without_fallback(self):
        """Generate code without the fused loops' ``else:`` branches inside this block (callers
        hold ``arguments.BUILD_LOCK``: the setting is the backend's)."""
        saved, self.fallback = self.fallback, False
        try:
            yield
        finally:
            self.fallback = saved

    def check(self, unit):
        from ..analyse import walk_assignments
        from ..rules import cpu_refusal
        from .cpu.tensordots import lowerable
        import ast
        for stmt, _depth in walk_assignments(unit.body):
            for node in ast.walk(stmt):
                reason = cpu_refusal(getattr(node, "callee", None)) if isinstance(node, ast.Call) else None
                if reason is not None and not lowerable(node, unit.body):
                    raise unit.fsrc.error(stmt, reason, "cpu target")

    def lower(self, sections, analysis):
        from .cpu.lowering import lower_for_cpu
        return lower_for_cpu(sections, analysis, fuse=self.fuse, fallback=self.fallback)

    def options(self):
        # the BLAS choice: compiled code calls NumPy's BLAS by symbol name unless
        # SRCGRAD_NUMPY_BLAS=0 (backends/cpu/blas.py); fast math (backends.cpu.FASTMATH): Numba's
        # own disk cache does not key on compile flags
        cpu = sys.modules.get(__name__ + ".cpu")
        return (f"numpy_blas={os.environ.get('SRCGRAD_NUMPY_BLAS', '1')}", f"fuse={self.fuse}",
                f"fastmath={getattr(cpu, 'FASTMATH', False)}") + (() if self.fallback else ("guards=raise",))


BACKENDS = {"python": Backend("python", lower_products=False), "cpu": CpuBackend(), "cuda": Backend("cuda")}


def backend(target):
    """The backend object of ``target`` ("python", "cpu", "cuda")."""
    try:
        return BACKENDS[target]
    except KeyError:
        raise ValueError(f"unknown target {target!r}; choose one of {sorted(BACKENDS)}") from None


def lower_for_cpu(sections, analysis):
    """The cpu backend's lowering of a function body's ``sections`` (see :class:`CpuBackend`)."""
    return BACKENDS["cpu"].lower(sections, analysis)
