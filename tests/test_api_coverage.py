"""Public features that had no test: ``inspect_stage``, ``register_zero_derivative``, the
``SRCGRAD_NUMPY_BLAS`` / ``SRCGRAD_MALLOC_TUNING`` switches, the refusal that guards against
wrong gradients (and the array rebinding that was refused before), helpers with array arguments, ``.njit`` entries (tuple ``wrt``,
``value_and_grad``) and a real cross-process cache hit (the second process compiles nothing).

Switches read at import and the on-disk cache are tested in fresh child processes.
"""
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest

import srcgrad
from conftest import TARGETS, check_grad, user_numba_env

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# inspect_stage
# ------------------------------------------------------------------------------------------------

def staged(x, y, n):
    z = x * y + math.sin(x)
    for i in range(n):
        z += 0.5 * z
    return z * 2.0


def test_inspect_stage_parse_and_normalize():
    parsed = srcgrad.inspect_stage(staged, "parse")
    assert parsed.startswith("def staged(x, y, n):") and "z = x * y + math.sin(x)" in parsed
    normalized = srcgrad.inspect_stage(staged, "normalize")
    # one operation per line: the product and the sine get temporaries, `+=` is desugared
    assert "z = x * y + math.sin(x)" not in normalized
    assert "= x * y\n" in normalized and "= math.sin(x)\n" in normalized
    assert "z +=" not in normalized


def test_inspect_stage_analyse_lists_kinds_and_activity():
    table = srcgrad.inspect_stage(staged, "analyse", 1.0, 2.0, 3, wrt=1).splitlines()
    assert table[0].split() == ["name", "kind", "active", "overwritten"]
    rows = {line.split()[0]: line.split()[1:] for line in table[1:]}
    assert rows["x"][:2] == ["float", "False"]       # not differentiated, and y does not flow into it
    assert rows["y"][:2] == ["float", "True"]
    assert rows["n"][:2] == ["int", "False"] and rows["i"][0] == "int"
    assert rows["z"][:2] == ["float", "True"]


def test_inspect_stage_codegen_is_the_generated_module():
    source = srcgrad.inspect_stage(staged, "codegen", 1.0, 2.0, 3, wrt=(0, 1))
    assert "def staged_adjoint(x, y, n, _seed):" in source
    assert "_adj_x" in source and "_adj_y" in source
    assert source == srcgrad.grad(staged, wrt=(0, 1), target="python").source_for(1.0, 2.0, 3)


def test_inspect_stage_bad_stage():
    with pytest.raises(ValueError, match="stage must be one of"):
        srcgrad.inspect_stage(staged, "transform")


# ------------------------------------------------------------------------------------------------
# register_zero_derivative on a user function
# ------------------------------------------------------------------------------------------------

def unit_step(x):
    return 1.0 if x > 0.0 else 0.0


srcgrad.register_zero_derivative(unit_step)


def gated_square(x, y):
    return unit_step(x - y) * x * x + unit_step(y) * y


@pytest.mark.parametrize("target", TARGETS)
def test_register_zero_derivative_user_function(target):
    g = srcgrad.grad(gated_square, wrt=(0, 1), target=target)
    # away from the steps the derivative is the FD one; the step contributes nothing
    check_grad(gated_square, (1.5, 0.5), wrt=(0, 1), target=target, gradfn=g)
    check_grad(gated_square, (-1.5, -0.5), wrt=(0, 1), target=target, gradfn=g)
    assert g(1.5, 0.5) == (3.0, 1.0)
    assert g(-1.5, 0.5) == (0.0, 1.0)


# ------------------------------------------------------------------------------------------------
# the refusals that prevent wrong gradients (messages as they are today)
# ------------------------------------------------------------------------------------------------

def rebinds_array_in_loop(a):
    s = 0.0
    for i in range(3):
        a = np.sin(a)
        s += np.sum(a)
    return s


def writes_into_argument(a):
    a[0] = 0.0
    return np.sum(a * a)


def calls_writer(a):
    return writes_into_argument(a * 2.0)


def augments_argument(a):
    a[1] += 1.0
    return np.sum(a * a)


def calls_augmenter(a):
    return augments_argument(a * 2.0)


@pytest.mark.parametrize("target", TARGETS)
def test_array_rebound_in_loop_is_snapshotted(target):
    """Once refused; now the forward sweep keeps a snapshot of `a` (tests/test_rebound_arrays.py)."""
    check_grad(rebinds_array_in_loop, (np.array([0.3, -1.2, 2.0]),), target=target)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("caller, helper", [(calls_writer, writes_into_argument),
                                            (calls_augmenter, augments_argument)],
                         ids=["assign", "augmented"])
def test_helper_writing_into_its_argument_is_refused(caller, helper, target):
    with pytest.raises(srcgrad.UnsupportedSyntaxError) as info:
        srcgrad.grad(caller, target=target)(np.ones(3))
    msg = str(info.value)
    assert f"test_api_coverage.py:{helper.__code__.co_firstlineno + 1}" in msg
    assert f"helper {helper.__name__} writes into its argument 'a'" in msg
    assert "must not modify their array arguments" in msg


# ------------------------------------------------------------------------------------------------
# helpers with array arguments
# ------------------------------------------------------------------------------------------------

def weighted_energy(a, w):
    return np.sum(a * w) + np.sum(np.tanh(a) ** 2)


def dot_loop(a, b):
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return s


def calls_array_helpers(x, w, c):
    y = x * c
    return weighted_energy(y, w) * weighted_energy(w, x) + dot_loop(np.sin(x), w) * c


def test_gradient_through_helpers_with_array_arguments():
    # python target here; the compiled (cpu) specialization is checked against it through the
    # .njit entries below (one compile for both tests)
    rng = np.random.default_rng(3)
    args = (rng.normal(size=5), rng.normal(size=5), 0.7)
    check_grad(calls_array_helpers, args, wrt=(0, 1, 2), target="python")
    check_grad(calls_array_helpers, args, wrt="w", target="python")


# ------------------------------------------------------------------------------------------------
# .njit entries: tuple wrt, value_and_grad (one cpu specialization of calls_array_helpers serves
# both; the compiled representative of helpers with array arguments)
# ------------------------------------------------------------------------------------------------

GRAD_ALL = srcgrad.grad(calls_array_helpers, wrt=(0, 1, 2)).njit
VALUE_AND_GRAD_ALL = srcgrad.value_and_grad(calls_array_helpers, wrt=("x", "w", "c")).njit


@numba.njit
def _use_entries(x, w, c):
    gx, gw, gc = GRAD_ALL(x, w, c)
    value, (vx, vw, vc) = VALUE_AND_GRAD_ALL(x, w, c)
    return gx, gw, gc, value, vx, vw, vc


def test_njit_entries_tuple_wrt_and_value_and_grad():
    rng = np.random.default_rng(4)
    x, w, c = rng.normal(size=5), rng.normal(size=5), -0.4
    gx, gw, gc, value, vx, vw, vc = _use_entries(x, w, c)
    ref_value, ref = srcgrad.value_and_grad(calls_array_helpers, wrt=(0, 1, 2), target="python")(x, w, c)
    check_grad(calls_array_helpers, (x, w, c), wrt=(0, 1, 2), target="python")   # the reference is right
    assert value == pytest.approx(ref_value, rel=1e-12)
    for got in ((gx, gw, gc), (vx, vw, vc)):
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-12, atol=1e-14)
        assert got[2] == pytest.approx(ref[2], rel=1e-12)
    # outside Numba the entries call the GradFunctions
    assert len(GRAD_ALL(x, w, c)) == 3
    assert VALUE_AND_GRAD_ALL(x, w, c)[0] == pytest.approx(ref_value, rel=1e-12)


# ------------------------------------------------------------------------------------------------
# child processes: switches read at import, the on-disk cache
# ------------------------------------------------------------------------------------------------

PROGRAM = '''
import numpy as np


def mlp_like(W, b, X):
    h = np.tanh(X @ W + b)
    return np.sum(h * h)
'''

CHILD = '''
import json, os, sys
import numpy as np
import srcgrad
from srcgrad.backends import cpu
import progmod

def snapshot(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            st = os.stat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out

rng = np.random.default_rng(0)
W, b, X = rng.normal(size=(3, 2)), rng.normal(size=2), rng.normal(size=(4, 3))
cache = os.environ["SRCGRAD_CACHE_DIR"]
before = snapshot(cache)
g = srcgrad.grad(progmod.mlp_like, wrt=(0, 1), target="cpu")
gW, gb = g(W, b, X)
ref = srcgrad.grad(progmod.mlp_like, wrt=(0, 1), target="python")(W, b, X)
adjoint = g._last.adjoint          # what the call ran (cpu: fused loops without fallbacks)
stats = adjoint.stats
print(json.dumps({
    "numpy_blas": cpu.NUMPY_BLAS, "malloc_tuned": cpu.MALLOC_TUNED,
    "hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values()),
    "signatures": len(adjoint.signatures),
    "unchanged": snapshot(cache) == before, "files": len(before),
    "diff": max(float(np.max(np.abs(gW - ref[0]))), float(np.max(np.abs(gb - ref[1])))),
    "grad": [gW.tolist(), gb.tolist()],
}))
'''


def _child(tmp_path, user_level=False, **env_extra):
    """Run CHILD in a fresh interpreter; ``user_level``: at Numba's default optimization level, not
    the suite's NUMBA_OPT=0 (at level 0 Numba cannot cache the BLAS matmul: see conftest.py)."""
    (tmp_path / "progmod.py").write_text(PROGRAM)
    env = user_numba_env(os.environ) if user_level else dict(os.environ)
    for name in ("SRCGRAD_NUMPY_BLAS", "SRCGRAD_MALLOC_TUNING"):
        env.pop(name, None)
    env.update(env_extra)
    env["SRCGRAD_CACHE_DIR"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(tmp_path), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cache_hit_across_processes_compiles_nothing(tmp_path):
    first = _child(tmp_path, user_level=True)
    assert first["misses"] >= 1 and first["hits"] == 0 and first["diff"] < 1e-12
    second = _child(tmp_path, user_level=True)
    # the second process loads the machine code Numba cached: no compile, not a file written
    assert second["hits"] >= 1 and second["misses"] == 0, second
    assert second["unchanged"] and second["files"] > 0, second
    assert second["grad"] == first["grad"]


def test_numpy_blas_off_and_malloc_tuning_off(tmp_path):
    """SRCGRAD_NUMPY_BLAS=0: matrix products through Numba's np.dot; SRCGRAD_MALLOC_TUNING=0:
    glibc's defaults left alone (the tuning is on by default). Gradients stay right (against the
    python target)."""
    out = _child(tmp_path, SRCGRAD_NUMPY_BLAS="0", SRCGRAD_MALLOC_TUNING="0")
    assert out["numpy_blas"] is False
    assert out["malloc_tuned"] is False
    assert out["diff"] < 1e-12


def test_malloc_tuning_on_by_default():
    from srcgrad.backends import cpu
    if os.environ.get("SRCGRAD_MALLOC_TUNING", "1") != "0":
        assert cpu.MALLOC_TUNED is (sys.platform.startswith("linux") and _glibc())


def _glibc():
    import platform
    return platform.libc_ver()[0] == "glibc"
