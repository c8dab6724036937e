"""srcgrad.compile_report: the per-function compile times behind SRCGRAD_COMPILE_REPORT (issue 17)."""
import numpy as np

import srcgrad
from srcgrad.compile_report import CompileRecorder, markdown, program_of


def _square_sum(x):
    return np.sum(x * x)


def test_recorder_names_functions_programs_and_nesting():
    import numba

    @numba.njit
    def inner(v):
        return v + 1.0

    @numba.njit
    def outer(v):
        return inner(v) * 2.0

    rec = CompileRecorder().install()
    rec.context = "ctx"
    try:
        assert outer(1.5) == 5.0
        g = srcgrad.grad(_square_sum, target="cpu")(np.arange(3.0))
    finally:
        rec.uninstall()
    np.testing.assert_allclose(g, 2.0 * np.arange(3.0))
    by_name = {r["name"].rsplit(".", 1)[-1]: r for r in rec.records}
    assert by_name["inner"]["context"] == by_name["outer"]["context"] == "ctx"
    # outer's total includes inner's compile, its own does not
    assert by_name["outer"]["total_s"] >= by_name["outer"]["own_s"] + by_name["inner"]["total_s"] - 1e-3
    assert by_name["inner"]["program"] is None          # not compiled for a srcgrad program
    adjoint = [r for r in rec.records if r["name"].endswith("._square_sum_adjoint")]
    assert adjoint and adjoint[0]["program"].startswith("srcgrad__square_sum_")
    programs = rec.programs()
    assert any(p["program"] == adjoint[0]["program"] and p["compiles"] >= 1 for p in programs)
    text = markdown(rec.records, programs)
    assert "_square_sum_adjoint" in text and f"{len(rec.records)} compiles" in text
    # no events are recorded after uninstall
    count = len(rec.records)
    numba.njit(lambda v: v - 1.0)(2.0)
    assert len(rec.records) == count


def test_program_of():
    assert program_of("srcgrad_f_0123abcd") == "srcgrad_f_0123abcd"
    assert program_of("srcgrad.backends.cpu.helpers") is None
    assert program_of(None) is None
