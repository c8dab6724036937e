"""srcgrad — reverse-mode automatic differentiation by source transformation, compiled with Numba.

    from srcgrad import grad

    @grad
    def f(x): ...

The pipeline, one module per stage: parse → check → normalize → analyse → transform (with the
derivative rules of :mod:`srcgrad.rules`) → codegen → backends (python, cpu, cuda); runtime helpers
live in :mod:`srcgrad.runtime`.
"""
from ._version import __version__

from .errors import ShapeError, SrcgradError, UnsupportedSyntaxError  # noqa: E402
from .rules import register_adjoint, register_zero_derivative, d  # noqa: E402
from .api import grad, value_and_grad, vjp, GradFunction  # noqa: E402
from .rules import register_tangent  # noqa: E402
from .forward_api import jvp, hvp, hessian, jacobian  # noqa: E402
from .debugging import inspect_stage, STAGES  # noqa: E402

__all__ = ["grad", "value_and_grad", "vjp", "jvp", "hvp", "hessian", "jacobian", "register_tangent", "register_adjoint", "register_zero_derivative", "d",
           "SrcgradError", "UnsupportedSyntaxError", "ShapeError", "GradFunction", "inspect_stage", "STAGES",
           "__version__"]
