"""Differential fuzzing: random programs in the supported subset, srcgrad vs central FD.

Quick profile (default, runs in CI): QUICK_EXAMPLES programs on the python target, and every
CPU_EVERY-th of them also on the cpu target (a cpu compile costs about a second).
Long profile: ``pytest -m fuzz --fuzz-examples N [--fuzz-targets python,cpu]`` (random seeds; every
program on each target given; the python target runs the same generated code without compiling).

Whole-array programs (fuzz_programs.array_programs: broadcasting, reductions with axis/keepdims,
matmul, gathers, slices): the quick profile checks ARRAY_EXAMPLES on the python target and one
bundle of ARRAY_BUNDLE programs compiled as a single function on cpu (one compile), compared with
FD and with the python target. Long profile: ``pytest -m fuzz -k arrays --fuzz-examples N``
(python: every program; cpu: bundles of ``--fuzz-bundle`` programs per compile).
A failure prints the program's source; shrunk failures are kept in tests/test_core_regressions.py.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, note, settings, strategies as st

import fuzz_programs as fp

QUICK_EXAMPLES = 40
CPU_EVERY = 8
ARRAY_EXAMPLES = 30
ARRAY_BUNDLE = 8

_COUNT = {"n": 0}

COMMON = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None)


@settings(max_examples=QUICK_EXAMPLES, derandomize=True,
          phases=[Phase.explicit, Phase.reuse, Phase.generate], **COMMON)
@given(source=fp.programs(), point_seed=st.integers(0, 2 ** 16))
def test_fuzz_quick(source, point_seed):
    note(source)
    _COUNT["n"] += 1
    targets = ["python", "cpu"] if _COUNT["n"] % CPU_EVERY == 1 else ["python"]
    assume(fp.check_program(source, targets, point_seed=point_seed))


@pytest.mark.fuzz
def test_fuzz_long(request):
    n = request.config.getoption("--fuzz-examples") or 200
    targets = request.config.getoption("--fuzz-targets").split(",")
    seen = {"programs": 0}

    @settings(max_examples=n, **COMMON)
    @given(source=fp.programs(features=fp.ALL_FEATURES), point_seed=st.integers(0, 2 ** 16))
    def run(source, point_seed):
        note(source)
        seen["programs"] += 1
        assume(fp.check_program(source, targets, point_seed=point_seed))

    run()
    print(f"\nfuzz long profile: {seen['programs']} programs tried on {targets}, no failure")


def _draw_array_programs(n, derandomize=True, **shape):
    out = []

    @settings(max_examples=n, derandomize=derandomize, **COMMON)
    @given(source=fp.array_programs(**shape))
    def collect(source):
        out.append(source)

    collect()
    return out


def test_fuzz_arrays_python():
    sources = _draw_array_programs(ARRAY_EXAMPLES)
    assert len(sources) == ARRAY_EXAMPLES
    checked = sum(fp.check_array_bundle([src], "python", seed=k)[0] for k, src in enumerate(sources))
    # kinks (abs, maximum, clip, max reductions) may make a point unjudgeable; nearly all are checked
    assert checked >= ARRAY_EXAMPLES - 3, checked


def _check_compiled_bundle(sources, seed):
    checked, grads = fp.check_array_bundle(sources, "cpu", seed=seed)
    assert checked >= len(sources) - 1, checked
    _, reference = fp.check_array_bundle(sources, "python", seed=seed)
    for g, r in zip(grads, reference):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-12)


# Found by this fuzzer (shrunk by hand): cpu loop fusion (srcgrad/lower.py) put a statement whose
# result is (m, 1) -- a scalar minus a keepdims row reduction -- into the (m, n) loop nest of the
# reduction's operand: value and gradient n times too large, silently (python target right).
# Fusion now refuses to run a statement over an axis none of its operands has.
def keepdims_row_minus_scalar(A, s):
    t = s - np.sum(A, axis=1, keepdims=True)
    return np.sum(t * t)


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_keepdims_row_minus_scalar(target):
    import srcgrad

    A = np.arange(12.0).reshape(3, 4)
    value, grad = srcgrad.value_and_grad(keepdims_row_minus_scalar, wrt=0, target=target)(A, 0.5)
    t = 0.5 - A.sum(axis=1, keepdims=True)
    assert value == pytest.approx(float(np.sum(t * t)), rel=1e-12)          # 1898.75
    np.testing.assert_allclose(grad, np.broadcast_to(-2.0 * t, A.shape), rtol=1e-12)


def test_fuzz_arrays_compiled_representative():
    """A few small whole-array programs that together use every kind of operation (matmul,
    axis/keepdims reductions, gathers, slices, outer, broadcasting), compiled as one cpu function
    (whole-array adjoints compile slowly: minutes for a bundle of 8 on a loaded machine)."""
    sources, missing = fp.covering_subset(_draw_array_programs(40, statements=2, depth=2), 4)
    assert not missing, missing
    _check_compiled_bundle(sources, seed=200)


@pytest.mark.slow
def test_fuzz_arrays_compiled_bundle():
    """ARRAY_BUNDLE full-size whole-array programs compiled as one cpu function: each program's
    gradient against FD, and the whole gradient against the python target's."""
    _check_compiled_bundle(_draw_array_programs(ARRAY_BUNDLE), seed=100)


@pytest.mark.fuzz
def test_fuzz_arrays_long(request):
    n = request.config.getoption("--fuzz-examples") or 200
    targets = request.config.getoption("--fuzz-targets").split(",")
    bundle = request.config.getoption("--fuzz-bundle")
    sources = _draw_array_programs(n, derandomize=False)
    counts = {}
    if "python" in targets:
        counts["python"] = sum(fp.check_array_bundle([src], "python", seed=k)[0]
                               for k, src in enumerate(sources))
    if "cpu" in targets:
        counts["cpu"] = sum(fp.check_array_bundle(sources[i:i + bundle], "cpu", seed=i)[0]
                            for i in range(0, len(sources), bundle))
    print(f"\narray fuzz long profile: {len(sources)} programs, checked at smooth points {counts}, "
          "no failure")
