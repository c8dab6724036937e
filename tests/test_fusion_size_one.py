"""Axes the cpu fuser knows have size 1 (issue 17: one compile per gradient, not two).

``np.expand_dims(a, k)``, ``a[None, :]`` / ``a[:, np.newaxis]`` and keepdims reductions written as
calls (``np.var(x, axis=1, keepdims=True)``, ``special.logsumexp(x, axis=0, keepdims=True)``) make
an axis of size 1. The fused loop nest reads such an operand at index 0 along that axis instead of
testing its size; the test would fail whenever the statement broadcasts (its purpose), and the
call would rerun with a second specialization, compiled with the fallback branches (a second
compile of the whole adjoint: measured 8 s CPU for tests/test_arrays.py's ``shapes``).
"""
import numpy as np
import pytest
from scipy import special

import srcgrad

from conftest import check_grad


def size_one_axes(a, x):
    e = np.expand_dims(a, 1) * a + np.expand_dims(a, 0)
    o = a[:, None] * a[None, :] + np.expand_dims(a, -1)
    v = np.var(x, axis=1, ddof=1, keepdims=True) * x
    s = special.logsumexp(x, axis=0, keepdims=True) * x + np.std(x, axis=-1, keepdims=True)
    return np.sum(np.tanh(e)) + np.sum(o * o) + np.sum(v * v) + np.sum(np.sin(s))


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_size_one_axes_match_fd_with_one_specialization(target):
    rng = np.random.default_rng(3)
    a, x = rng.standard_normal(3), rng.standard_normal((3, 4))    # not square: axes not mixed up
    gradfn = srcgrad.grad(size_one_axes, wrt=(0, 1), target=target)
    check_grad(size_one_axes, (a, x), wrt=(0, 1), gradfn=gradfn)
    if target == "cpu":
        spec = gradfn._last
        assert spec.lean and spec.fallback is None      # no size test failed: one compile
        # the size-1 operands are read at index 0 inside the loop nests
        assert "[0, _i1]" in spec.source and "[_i0, 0]" in spec.source



def stretch_column(a, c):
    s = np.cos(a) * c - c
    return np.sum(s * s)


def test_a_size_one_argument_axis_compiles_the_fallback_specialization_only():
    # c (3, 1) is stretched over a's columns: a lean specialization's size test would fail and
    # the call compile a second one; the first call asks for the one with the fallbacks at once
    rng = np.random.default_rng(4)
    a, c = rng.standard_normal((3, 4)), rng.standard_normal((3, 1))
    gradfn = srcgrad.grad(stretch_column, wrt=(0, 1), target="cpu")
    check_grad(stretch_column, (a, c), wrt=(0, 1), gradfn=gradfn)
    spec = gradfn._last
    assert not spec.lean and "else:" in spec.source and "FusionGuardFailed" not in spec.source
    # a next call with the same types (the fast path) runs it too: one specialization, one compile
    check_grad(stretch_column, (a, rng.standard_normal((3, 4))), wrt=(0, 1), gradfn=gradfn)
    assert list(gradfn._specializations.values()) == [spec]
