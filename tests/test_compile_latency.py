"""Cuts in compile latency (issue 17): what they change must stay correct.

* the library ufuncs of the cpu backend are built on first use, not when it is imported;
* the cpu tape's ``grow`` copies with a loop (no shape-checked slice assignment).
"""
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LAZY_SCRIPT = """
import numpy as np
import srcgrad.backends.cpu as cpu
import srcgrad.backends.cpu_library as library
names = sorted(library._LAZY)
assert {"special_erfc", "special_digamma", "special_betaln", "stats_norm_cdf"} <= set(names), names
assert not [n for n in names if n in vars(library) or n in vars(cpu)]   # nothing built at import
f = cpu.stats_norm_cdf                       # a jit function calling a lazy ufunc builds that one first
assert "special_erfc" in vars(library) and "stats_norm_cdf" in vars(cpu)
assert "special_gammaln" not in vars(library)                          # the others still not
x32 = np.array([-1.0, 0.0, 2.0], dtype=np.float32)
assert cpu.special_erfc(x32).dtype == np.float32                       # float32 loops kept
assert abs(f(np.array([0.0]))[0] - 0.5) < 1e-15
from srcgrad.backends.cpu import special_betaln                       # how generated code imports
print("ok", abs(special_betaln(1.0, 2.0) + np.log(2.0)) < 1e-15)
"""


def test_library_ufuncs_are_built_on_first_use(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", LAZY_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ok", "True"]


def test_cpu_grow_keeps_values_and_dtype():
    from srcgrad.backends import cpu
    for dtype in (np.float64, np.float32, np.int64):
        tape = np.arange(300).astype(dtype)
        bigger = cpu.grow(tape)
        assert bigger.dtype == dtype and bigger.shape == (600,)
        np.testing.assert_array_equal(bigger[:300], tape)
