"""srcgrad on the GPU: the ``cuda`` target, in one package.

    import srcgrad.cuda

    @srcgrad.cuda.grad(wrt=(0, 4))               # map mode: scalar code, one thread per element
    def call_price(S, K, T, r, sigma): ...

    loss_and_grads = srcgrad.cuda.value_and_grad(mlp_loss, wrt=(0, 1), arrays=True)   # array mode

``srcgrad.grad(f, target="cuda", ...)`` is the same as ``srcgrad.cuda.grad(f, ...)``.

The modules, by role:

* :mod:`~srcgrad.cuda.device` — device facts used everywhere below (simulator or GPU, which
  arguments are device arrays, compiling without a GPU).
* Map mode (scalar code mapped over arrays):
  :mod:`~srcgrad.cuda.map_mode` (the callable: arguments, kernels, launches, errors) and
  :mod:`~srcgrad.cuda.map_runtime` (the generated adjoint rewritten as device functions, and the
  runtime helpers those import; generated modules import it as ``srcgrad.backends.cuda``).
* Array mode (whole-array NumPy code as fused kernels):
  :mod:`~srcgrad.cuda.array_mode` (the callable),
  :mod:`~srcgrad.cuda.array_graph` (the graph of array operations and the traced values that
  record it), :mod:`~srcgrad.cuda.array_trace` (running the generated adjoint on traced values),
  :mod:`~srcgrad.cuda.array_codegen` (writing one fused kernel's source) and
  :mod:`~srcgrad.cuda.array_plan` (which nodes get buffers, which kernels, the launches).
* :mod:`~srcgrad.cuda.kernels` — hand-written kernels: the tiled GEMM, row reductions, the
  MLP trainer's fused kernels.
"""
from . import map_runtime as _runtime
from .array_mode import ArrayGradFunction
from .device import host_numeric_array  # noqa: F401  (srcgrad.cuda.host_numeric_array, as before)
from .map_mode import BLOCK, MapGradFunction, kernel_source  # noqa: F401

__all__ = ["grad", "value_and_grad", "MapGradFunction", "ArrayGradFunction"]


def _decorator(mode):
    def api(func=None, *, wrt=0, max_tape=_runtime.MAX_TAPE, max_iter=_runtime.MAX_ITER, block=BLOCK,
            arrays=False, check=True):
        def make(f):
            if arrays:     # whole-array code as fused kernels (srcgrad.cuda.array_mode)
                return ArrayGradFunction(f, wrt=wrt, mode=mode, check=check)
            return MapGradFunction(f, wrt=wrt, mode=mode, max_tape=max_tape, max_iter=max_iter, block=block)
        if func is None:
            return make
        if isinstance(func, (int, str, tuple, list)):
            raise TypeError(f"srcgrad.cuda.{mode}(...) takes the function first; use "
                            f"{mode}(f, wrt=...) or @{mode}(wrt=...)")
        return make(func)
    api.__name__ = mode
    return api


grad = _decorator("grad")
grad.__doc__ = """Map-mode gradient on the GPU: ``grad(f, wrt=0 | (0, 4) | "name", max_tape=1024,
max_iter=100000, block=256)``; usable as ``@grad(wrt=...)``. ``f`` is scalar code; calling the
result maps it over arrays (one thread per element). A single ``wrt`` gives one array, a tuple a
tuple of arrays.

``arrays=True`` selects array mode instead (:mod:`srcgrad.cuda.array_mode`): ``f`` is whole-array
NumPy code (an MLP loss, say) and runs as fused CUDA kernels; ``check=False`` skips the per-call
read of the index-error flag."""

value_and_grad = _decorator("value_and_grad")
value_and_grad.__doc__ = """Like :func:`grad`, but returns ``(value, gradient(s))``."""
