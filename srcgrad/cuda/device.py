"""Device facts shared by every part of :mod:`srcgrad.cuda`, stated once.

* :data:`SIMULATOR`: whether Numba runs CUDA in its simulator (``NUMBA_ENABLE_CUDASIM=1``, read
  when numba is first imported).  The simulator runs kernels as Python threads: device arrays are
  ``FakeCUDAArray`` objects and nothing is compiled for the GPU.
* Which arguments are device arrays (:func:`is_device_array`), how to view one as a Numba device
  array (:func:`as_device_array`), and how host arguments become NumPy arrays of numbers
  (:func:`host_numeric_array`).
* :func:`device_cc`: compile for a named compute capability where no GPU is present (PTX checks).

Importing this module imports ``numba.cuda``.
"""
import contextlib

import numpy as np
from numba import config as _numba_config
from numba import cuda

SIMULATOR = bool(getattr(_numba_config, "ENABLE_CUDASIM", 0))


def _load_numba_cuda_numpy_support():
    """numba-cuda 0.30 registers a CUDA overload for ``np.row_stack`` when its target first loads
    (``numba.cuda.np.arrayobj``), and NumPy 2.5 removed that name, so the load would fail.  Where
    NumPy lacks the name, import that module now with a stand-in lent for the import only: NumPy
    itself is left as it is (no global alias for other code to find)."""
    if hasattr(np, "row_stack"):
        return

    def row_stack(*args, **kwargs):     # what the overload registers on; nothing calls it
        return np.vstack(*args, **kwargs)

    np.row_stack = row_stack
    try:
        import numba.cuda.np.arrayobj  # noqa: F401
    finally:
        del np.row_stack


_load_numba_cuda_numpy_support()


def is_device_array(value):
    """Whether ``value`` lives on the device (a Numba device array, or anything with
    ``__cuda_array_interface__``; in the simulator, a ``FakeCUDAArray``)."""
    if SIMULATOR:
        return type(value).__name__ == "FakeCUDAArray"
    return cuda.is_cuda_array(value)


def as_device_array(value):
    """A device array as a Numba device array (a view, no copy)."""
    if SIMULATOR or cuda.devicearray.is_cuda_ndarray(value):
        return value
    return cuda.as_cuda_array(value)


def host_numeric_array(value, name, fname):
    """``value`` as a NumPy array of numbers, or a TypeError naming the argument."""
    try:
        array = np.asarray(value)
    except Exception:       # noqa: BLE001
        raise TypeError(f"argument {name!r} of {fname}: expected an array or a number, got "
                        f"{type(value).__name__}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"argument {name!r} of {fname}: expected numbers, got an array of dtype "
                        f"{array.dtype}")
    return array


@contextlib.contextmanager
def device_cc(cc):
    """Without a GPU, Numba compiles called device functions for the "current device": name one."""
    from numba.cuda import dispatcher
    if cuda.is_available():
        yield
        return
    original = dispatcher.get_current_device

    class _Device:
        compute_capability = tuple(cc)

    dispatcher.get_current_device = lambda: _Device()
    try:
        yield
    finally:
        dispatcher.get_current_device = original
