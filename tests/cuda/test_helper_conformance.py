"""The CUDA backend in the runtime-helper registry (srcgrad/helpers.py): every helper map mode
claims runs as a device function inside a kernel in Numba's CUDA simulator and agrees with its
NumPy reference (srcgrad/helper_reference.py). Map mode sees one thread's scalars, so the scalar
helpers get scalar arguments, the tape pushes get the thread's status array as a last argument
and the tapes are thread-local arrays. One kernel for all of them: cheap."""

import numpy as np
import pytest

from srcgrad import helpers, helper_reference
from srcgrad.errors import SrcgradError


def test_cuda_registers_its_claims_and_implements_them():
    from srcgrad.cuda import map_runtime

    assert "cuda" in helpers.backends()
    assert set(helpers.claimed("cuda")) == set(map_runtime.CLAIMS)
    assert helpers.missing("cuda") == []
    # every other declared helper is a stub with a clear message, not a missing import
    for name in helpers.names(service=False):
        assert hasattr(map_runtime, name), name
    with pytest.raises(SrcgradError, match="map mode"):
        map_runtime.reduce_sum(1.0, None, False)


def test_array_mode_shims_are_declared_helpers():
    """Array mode replays generated code with graph operations in place of the helpers: each
    one it provides is a declared helper (the same name and arguments)."""
    from srcgrad.cuda.array_trace import _runtime_shims

    assert set(_runtime_shims(None)) <= set(helpers.HELPERS)


# (helper, scalar arguments) checked against the reference
SCALAR_CASES = [("range_length", (7, 1, -2)), ("range_length", (0, 9, 4)), ("_range_continues", (3, 9, 2)),
                ("_range_continues", (3, 1, -1)), ("_range_continues", (9, 9, 1)),
                ("clip_scalar", (2.5, -1.0, 1.0)), ("clip_scalar", (-0.25, -1.0, 1.0)),
                ("unbroadcast", (1.75, 0.0))]


def test_claimed_helpers_match_reference_in_the_simulator():
    from numba import cuda
    from srcgrad.cuda import map_runtime as rt

    checked = {name for name, _ in SCALAR_CASES} | {"push_float", "push_int", "new_float_tape",
                                                     "new_int_tape", "new_float32_tape"}
    assert checked | {"jit", "external"} == set(helpers.claimed("cuda"))   # services: no reference

    fns = [helpers.implementation("cuda", name) for name, _ in SCALAR_CASES]

    @cuda.jit              # launched on one thread
    def kernel(scalars, ftape, itape, tops, status, shapes):
        for k, (fn, (_, args)) in enumerate(zip(fns, SCALAR_CASES)):
            scalars[k] = fn(*args)
        _, tops[0] = rt.push_float(ftape, 2, 1.5, status)
        _, tops[1] = rt.push_int(itape, 1, 7, status)
        _, tops[2] = rt.push_float(ftape, 4, 9.0, status)        # past the end: not written
        f, n, f32 = rt.new_float_tape(), rt.new_int_tape(), rt.new_float32_tape()
        shapes[0], shapes[1], shapes[2] = f.shape[0], n.shape[0], f32.shape[0]

    scalars = np.zeros(len(SCALAR_CASES))
    ftape, itape = np.zeros(4), np.zeros(3, np.int64)
    tops, status, shapes = np.zeros(3, np.int64), np.zeros(1, np.int32), np.zeros(3, np.int64)
    kernel[1, 1](scalars, ftape, itape, tops, status, shapes)

    for k, (name, args) in enumerate(SCALAR_CASES):
        want = getattr(helper_reference, name)(*args)
        assert scalars[k] == pytest.approx(float(want)), (name, args)
    want_f, want_top = helper_reference.push_float(np.zeros(4), 2, 1.5)
    want_i, want_itop = helper_reference.push_int(np.zeros(3, np.int64), 1, 7)
    np.testing.assert_array_equal(ftape, want_f)
    np.testing.assert_array_equal(itape, want_i)
    assert list(tops) == [want_top, want_itop, 5]
    assert status[0] == rt.TAPE_OVERFLOW            # the overflow is reported, not written
    assert list(shapes) == [rt.MAX_TAPE] * 3
