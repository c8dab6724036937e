"""CUDA tests, run in Numba's CUDA simulator in their own pytest process.

Run them with::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda

The simulator must be switched on before numba is imported.  This conftest switches it on itself
when numba has not been imported yet and the command line only names paths inside tests/cuda
(``python -m pytest tests/cuda`` works too).  In any other session (for instance the main
``pytest`` run over tests/, where numba is imported by other tests or where enabling the
simulator would change ``numba.cuda`` for every other test) every test here is skipped with the
reason shown above.  The PTX test compiles each kernel for the real target (sm_90) in a child
process without the simulator.

``SRCGRAD_CUDA_TESTS=gpu python -m pytest tests/cuda`` runs the same tests on a real GPU instead
(no simulator); tests that assert simulator facts then fail by design.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
_ROOT = str(_HERE.parents[1])
if _ROOT not in sys.path:  # srcgrad importable from a checkout under plain ``pytest`` too
    sys.path.insert(0, _ROOT)
RUN_CMD = "NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda"


def _only_cuda_paths(argv):
    paths = [a for a in argv[1:] if not a.startswith("-")]
    if not paths:
        return False
    for a in paths:
        p = Path(a.split("::")[0])
        if not p.exists():
            continue  # an option's value (e.g. after -k / -m); ignore
        try:
            p.resolve().relative_to(_HERE)
        except ValueError:
            return False
    return True


def _decide():
    env = os.environ.get("NUMBA_ENABLE_CUDASIM", "")
    if os.environ.get("SRCGRAD_CUDA_TESTS") == "gpu":     # on a real GPU (benchmarks/gpu_check.py's run)
        return True, ""
    if "numba" in sys.modules:
        from numba import config

        if getattr(config, "ENABLE_CUDASIM", 0):
            return True, ""
        return False, (f"numba was imported without the CUDA simulator in this session; "
                       f"run these tests on their own: {RUN_CMD}")
    if env == "1":
        return True, ""
    if env == "" and _only_cuda_paths(sys.argv):
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        return True, ""
    return False, f"CUDA simulator tests run in their own process: {RUN_CMD}"


SIM_ACTIVE, SKIP_REASON = _decide()


def pytest_collection_modifyitems(config, items):
    if SIM_ACTIVE:
        return
    mark = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        try:
            Path(str(item.fspath)).resolve().relative_to(_HERE)
        except ValueError:
            continue
        item.add_marker(mark)


def pytest_report_header(config):
    if SIM_ACTIVE and os.environ.get("SRCGRAD_CUDA_TESTS") == "gpu":
        return "srcgrad CUDA tests: on the GPU (SRCGRAD_CUDA_TESTS=gpu)"
    if SIM_ACTIVE:
        return "srcgrad CUDA tests: Numba CUDA simulator active"
    return f"srcgrad CUDA tests skipped: {SKIP_REASON}"
