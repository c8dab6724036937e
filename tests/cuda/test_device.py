"""srcgrad.cuda.device: the device facts are stated once, the old import paths still work, and
NumPy is left as it is (no global ``np.row_stack`` alias, NumPy 2.5 included)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP_RC = 3


def test_simulator_is_one_fact():
    from srcgrad.cuda import array_plan, device, kernels, map_runtime

    # this session runs in Numba's simulator (conftest), or on a GPU with SRCGRAD_CUDA_TESTS=gpu
    assert device.SIMULATOR == (os.environ.get("SRCGRAD_CUDA_TESTS") != "gpu")
    assert kernels.SIMULATOR is map_runtime.SIMULATOR is array_plan.SIMULATOR is device.SIMULATOR


def test_old_import_paths_are_the_moved_modules():
    import srcgrad.cuda
    import srcgrad.cuda_arrays
    from srcgrad.backends import cuda, cuda_kernels, cuda_plan, cuda_trace
    from srcgrad.cuda import array_mode, array_plan, array_trace, kernels, map_runtime

    assert srcgrad.cuda_arrays is array_mode
    assert (cuda, cuda_kernels, cuda_plan, cuda_trace) == (map_runtime, kernels, array_plan, array_trace)
    assert srcgrad.cuda.ArrayGradFunction is array_mode.ArrayGradFunction
    assert srcgrad.grad(lambda x: x, target="cuda").__class__ is srcgrad.cuda.MapGradFunction


def test_device_array_facts():
    from numba import cuda
    from srcgrad.cuda.device import as_device_array, host_numeric_array, is_device_array

    on_device = cuda.to_device(np.arange(3.0))
    assert is_device_array(on_device) and not is_device_array(np.arange(3.0))
    assert as_device_array(on_device) is on_device
    assert host_numeric_array([1, 2], "x", "f").dtype.kind == "i"
    with pytest.raises(TypeError, match="argument 'x' of f: expected numbers"):
        host_numeric_array(np.array(["a"]), "x", "f")


# NumPy 2.5 removed np.row_stack, for which numba-cuda 0.30 registers an overload when its CUDA
# target loads. The child removes the name as NumPy 2.5 does, imports srcgrad.cuda and compiles a
# kernel for the real target (which loads the target); the name must still be absent afterwards.
_CHILD = textwrap.dedent('''
    import sys
    import numpy as np

    if hasattr(np, "row_stack"):        # NumPy before 2.5: remove it as 2.5 does
        del np.row_stack
    np.__all__ = [name for name in np.__all__ if name != "row_stack"]
    if sys.argv[1] == "srcgrad":
        import srcgrad.cuda  # noqa: F401
    from numba import cuda

    def kernel(a):
        a[0] = 1.0

    try:
        cuda.compile_ptx(kernel, "void(float32[:])", cc=(9, 0))
    except AttributeError as exc:
        print("AttributeError:", exc)
        sys.exit(1)
    except Exception as exc:        # NVVM / libdevice missing: nothing to learn here
        print(f"cannot compile PTX here: {type(exc).__name__}: {exc}")
        sys.exit(%d)
    print("row_stack" in vars(np))
''' % SKIP_RC)


def _child(mode):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", _CHILD, mode], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_numba_cuda_loads_without_np_row_stack():
    done = _child("srcgrad")
    if done.returncode == SKIP_RC:
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert done.stdout.split()[-1] == "False"      # the stand-in was lent for the import only
