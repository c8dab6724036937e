"""Fused loops without their fallback branches (issue 17).

A call from Python runs a cpu specialization whose fused loop nests have no ``else:`` (the
statements as written, for NumPy broadcasting along a size-1 axis and NumPy's errors): a failing
size test raises ``FusionGuardFailed`` and the call runs again with the specialization that keeps
them, compiled only then. Compiled callers (``specialize``, ``.njit``, ``MinibatchLoop``) get the
one with the fallbacks. One GradFunction per function keeps the compiles to two.
"""
import numpy as np
import pytest

import srcgrad
from srcgrad.errors import FusionGuardFailed

from conftest import check_grad

def stretched(a, b):
    h = np.sin(a)
    s = h * b + 1.0
    return np.sum(s * s)


def stores(a, b):
    h = np.sin(a)
    h[0, 0] = 2.0
    s = h * b + 1.0
    return np.sum(s * s)


GRAD = srcgrad.grad(stretched, wrt=(0, 1), target="cpu")


def test_common_case_has_no_fallback_and_matches_fd():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    check_grad(stretched, (a, b), wrt=(0, 1), gradfn=GRAD)
    source = GRAD.source
    assert "FusionGuardFailed" in source and "loop nest" in source
    assert "else:" not in source            # the fallback branches are gone
    assert GRAD._last.lean and GRAD._last.fallback is None


def test_size_one_axis_reruns_with_the_fallback_and_matches_fd():
    rng = np.random.default_rng(1)
    for b_shape in ((3, 1), (1, 4)):         # b stretched along a size-1 axis: valid NumPy
        a, b = rng.standard_normal((3, 4)), rng.standard_normal(b_shape)
        check_grad(stretched, (a, b), wrt=(0, 1), gradfn=GRAD)
    # the first (3, 1) call ran the lean specialization (same types as above: the fast path) and
    # reran with the fallback's, which serves the later calls
    spec = next(s for s in GRAD._specializations.values() if s.lean)
    assert spec.fallback is not None
    assert "else:" in spec.fallback.source and "FusionGuardFailed" not in spec.fallback.source
    # later calls with the common shapes go to the fallback's specialization (same fused loops)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    check_grad(stretched, (a, b), wrt=(0, 1), gradfn=GRAD)


def vector_along_rows(x, y):
    b = np.negative(y) * 2.0            # 1-d, over y's length
    c = np.add(x, y) * np.subtract(x, y)  # (m, n) with y (n,) broadcast along the rows
    return np.sum(c * b) + np.sum(np.sinc(x) * c)


def test_vector_broadcast_along_rows_stays_lean():
    # the 1-d statement and the 2-d ones are separate loop nests: one nest would test the
    # matrix's row count against the vector's length (m == n) and fail for every non-square x
    g = srcgrad.grad(vector_along_rows, wrt=(0, 1), target="cpu")
    rng = np.random.default_rng(2)
    for m, n in ((3, 4), (5, 2)):
        x, y = rng.standard_normal((m, n)), rng.standard_normal(n)
        check_grad(vector_along_rows, (x, y), wrt=(0, 1), gradfn=g)
    assert g._last.lean and g._last.fallback is None
    assert "y.shape[0] == x.shape[0]" not in g.source and "x.shape[0] == y.shape[0]" not in g.source


def test_mismatched_shapes_raise_the_same_shape_error():
    with pytest.raises(srcgrad.ShapeError) as info:
        GRAD(np.ones((3, 4)), np.ones((3, 2)))
    message = str(info.value)
    assert "s = h * b + 1.0" in message and "cannot be broadcast" in message
    assert info.value.shapes == [(3, 4), (3, 2)] and info.value.sweep == "forward"
    assert not isinstance(info.value, FusionGuardFailed)


def test_compiled_callers_and_stores_into_arrays_keep_the_fallback():
    # specialize (MinibatchLoop, .njit): compiled code cannot rerun a call; no compile here
    spec = GRAD.specialize(np.ones((3, 4)), np.ones((3, 4)))
    assert not spec.lean and "else:" in spec.source
    # a function that writes into an array: a stopped call may have changed it, so no rerun
    assert srcgrad.api._may_store_into_arrays(stores)
    assert not srcgrad.api._may_store_into_arrays(stretched)
    g = srcgrad.grad(stores, wrt=0, target="cpu")
    assert not g._lean_allowed()
    assert srcgrad.grad(stretched, wrt=0, target="python")._lean_allowed() is False


def test_source_for_shows_the_specialization_with_the_fallbacks():
    text = GRAD.source_for(np.ones((3, 4)), np.ones((3, 4)))     # generated, not compiled
    assert "FusionGuardFailed" not in text and "else:" in text

