"""The CUDA backend in the runtime-helper registry (srcgrad/helpers.py): every helper map mode
claims runs as a device function inside a kernel in Numba's CUDA simulator and agrees with its
NumPy reference (srcgrad/helper_reference.py). Map mode sees one thread's scalars, so the scalar
helpers get scalar arguments, the tape pushes get the thread's status array as a last argument
and the tapes are thread-local arrays. One kernel for all of them: cheap.

Array mode replays the generated adjoint with graph operations in place of the array helpers
(cuda/array_trace.py): one traced adjoint calling each of them, run as kernels in the simulator,
is checked against the references too (the tapes and snapshots there are trace bookkeeping)."""

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

    # One call per case, written out: a real GPU (SRCGRAD_CUDA_TESTS=gpu) cannot lower a loop
    # over a list of device functions, which the simulator runs as plain Python.
    space = {f"fn{k}": helpers.implementation("cuda", name) for k, (name, _) in enumerate(SCALAR_CASES)}
    calls = "\n".join(f"    scalars[{k}] = fn{k}{tuple(args)!r}" for k, (_, args) in enumerate(SCALAR_CASES))
    exec(f"def scalar_cases(scalars):\n{calls}\n", space)
    scalar_cases = cuda.jit(device=True)(space["scalar_cases"])

    @cuda.jit              # launched on one thread
    def kernel(scalars, ftape, itape, tops, status, shapes):
        scalar_cases(scalars)
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


def test_array_mode_helpers_match_reference_in_the_simulator():
    """Array mode runs each helper as graph operations (cuda/array_trace.py's shims): one traced
    adjoint calling every array helper on sample arrays, run as kernels in the simulator, each
    result against the reference."""
    from numba import cuda
    from srcgrad.cuda import array_plan, array_trace

    rng = np.random.default_rng(3)
    x = rng.uniform(-1.5, 1.5, (3, 4))
    v = rng.permutation(12).reshape(3, 4) / 4.0 - 1.0        # distinct values: max/min are smooth
    inputs = {"x": x, "v": v, "g3": rng.uniform(-1, 1, 3), "g4": rng.uniform(-1, 1, 4),
              "g32": rng.uniform(-1, 1, (3, 2)), "b42": rng.uniform(-1, 1, (4, 2)),
              "big": rng.uniform(-1, 1, (2, 3, 4)), "small": rng.uniform(-1, 1, (3, 1)),
              "rows": np.array([0, 2, 2]), "cols": np.array([1, 3, 1])}
    calls = ["unbroadcast(big, small)", "reduce_sum(x, 1, True)", "reduce_mean(x, 0, False)",
             "reduce_max(v, 1, False)", "reduce_min(v, 0, True)", "expand_reduced(g3, x, 1, False)",
             "max_adjoint(g3, v, 1, False)", "min_adjoint(g4, v, 0, False)",
             "matmul_grad_left(g32, x, b42)", "matmul_grad_right(g32, x, b42)", "gather2(x, rows, cols)",
             "clip_scalar(s, -0.5, 0.75)", "reshape_any(x, (2, 6))", "reduce_sum(x, None, False)"]
    params = list(inputs) + ["s"]                                   # s: a float passed per call
    # the in-place helpers add into a copy of their first argument (as generated code does into an adjoint)
    source = (f"def _adjoint({', '.join(params)}, _seed):\n"
              "    t2 = x * 1.0\n    scatter_add2(t2, rows, cols, g3)\n"
              "    t1 = g4 * 1.0\n    scatter_add1(t1, rows, g3)\n"
              f"    return 0.0, ({', '.join(calls)}, t2, t1)\n")
    arguments = {name: ("array", value.shape, value.dtype) for name, value in inputs.items()}
    arguments["s"] = ("scalar", np.dtype(np.float64))
    graph = array_trace.trace(source, "_adjoint", params, arguments, "float64")
    plan = array_plan.compile_graph(graph, "conformance")
    outputs = plan.run({n: cuda.to_device(a) for n, a in inputs.items()}, {"s": 2.5})
    assert {c.split("(")[0] for c in calls} | {"scatter_add1", "scatter_add2"} <= \
        set(array_trace._runtime_shims(None))
    t2, t1 = x.copy(), inputs["g4"].copy()
    helper_reference.scatter_add2(t2, inputs["rows"], inputs["cols"], inputs["g3"])
    helper_reference.scatter_add1(t1, inputs["rows"], inputs["g3"])
    assert len(outputs) == 1 + len(calls) + 2
    for call, out in zip(calls + ["scatter_add2", "scatter_add1"], outputs[1:]):
        want = {"scatter_add2": t2, "scatter_add1": t1}.get(call)
        if want is None:
            want = eval(call, vars(helper_reference), dict(inputs, s=2.5))
        got = out.copy_to_host().reshape(np.shape(want))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=call)   # (fd references)
    # np.prod has no array-mode kernel: a clear error, not a wrong answer
    with pytest.raises(SrcgradError, match="np.prod"):
        array_trace.trace("def _adjoint(x, _seed):\n    return 0.0, (reduce_prod(x, 1, False),)\n",
                          "_adjoint", ["x"], {"x": arguments["x"]}, "float64")
