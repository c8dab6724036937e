"""Fused temporaries read after their loop nest only for their shape become scalars (cpu target,
srcgrad/backends/cpu/shape_only_arrays.py)."""
import ast
import textwrap

import numpy as np
import pytest

import srcgrad
from srcgrad.backends.cpu import shape_only_arrays as module
from srcgrad.backends.cpu.shape_only_arrays import shape_only_arrays

from conftest import check_grad

NEST = """
_t2 = huge_pages(np.empty((_t1.shape[0], _t1.shape[1]), type(_t1.dtype.type(0) * m.dtype.type(0))))
_t3_e = _t2.dtype.type(0)
for _i0 in range(_t1.shape[0]):
    for _i1 in range(_t1.shape[1]):
        _t2[_i0, _i1] = _t1[_i0, _i1] * m[_i0, _i1]
        _t3_e += _t2[_i0, _i1]
_t3 = _t3_e
"""


def rewrite(*sections):
    out = shape_only_arrays([ast.parse(textwrap.dedent(s)).body for s in sections])
    return ["\n".join(ast.unparse(stmt) for stmt in stmts) for stmts in out]


def test_a_temporary_read_later_only_for_its_shape_becomes_a_scalar():
    forward, reverse = rewrite("_t1 = np.flip(m)" + NEST, """
        _adj_m = np.zeros(_t2.shape, _t2.dtype.type)
        for _i0 in range(_t2.shape[0]):
            for _i1 in range(_t2.shape[-1]):
                _adj_m[_i0, _i1] += _adj_t3 * _t1[_i0, _i1] + _t2.ndim
        """)
    assert "_t2" not in forward.replace("_t2_e", "") and "np.empty" not in forward
    assert "_t2_e = _t1[_i0, _i1] * m[_i0, _i1]" in forward and "_t3_e += _t2_e" in forward
    assert "_t3_e = type(_t1.dtype.type(0) * m.dtype.type(0))(0)" in forward
    assert "np.zeros((_t1.shape[0], _t1.shape[1]), type(_t1.dtype.type(0) * m.dtype.type(0)))" in reverse
    assert "range(_t1.shape[1])" in reverse and "+ 2" in reverse and "_t2" not in reverse


def test_a_size_read_from_an_array_element_keeps_the_array():
    # n[0] may be written in place after the allocation (no name is rebound), so the later
    # `_t2.shape[0]` must not become `n[0]`
    (out,) = rewrite(NEST.replace("_t1.shape[0], _t1.shape[1]", "n[0], _t1.shape[1]")
                     + "n[0] = 7\ny = _t2.shape[0]")
    assert "np.empty" in out and "y = _t2.shape[0]" in out


def test_the_scalar_name_is_fresh():
    (forward,) = rewrite("_t1 = np.flip(m)\n_t2_e = 1.0" + NEST + "y = _t2_e")
    assert "_t2_e2 = _t1[_i0, _i1] * m[_i0, _i1]" in forward and "y = _t2_e" in forward


@pytest.mark.parametrize("later", [
    "y = _t2[0, 0]",                        # an element read after the nest
    "y = _t2.T",                            # a view of it
    "y = _t2.dtype",                        # its dtype as a value
    "_t1 = np.flip(v)\ny = _t2.shape[0]",   # a size's array rebound after the allocation
    "y = np.sum(_t2)",
])
def test_other_uses_after_the_nest_keep_the_array(later):
    (out,) = rewrite("_t1 = np.flip(m)" + NEST + later)
    assert "np.empty" in out and "_t2[_i0, _i1] =" in out


@pytest.mark.parametrize("old,new", [
    ("_t2[_i0, _i1] = _t1", "_t2[_i1, _i0] = _t1"),             # not the loops' own element
    ("_t3_e += _t2[_i0, _i1]", "_t3_e += _t2[_i0, 0]"),
    ("        _t2[_i0, _i1] = _t1[_i0, _i1] * m[_i0, _i1]\n        _t3_e += _t2[_i0, _i1]",
     "        _t3_e += _t2[_i0, _i1]\n        _t2[_i0, _i1] = _t1[_i0, _i1] * m[_i0, _i1]"),  # read first
    ("        _t3_e += _t2[_i0, _i1]", "        if _t3_e > 0:\n            _t3_e += _t2[_i0, _i1]"),
    ("for _i0 in range(_t1.shape[0]):", "for _i0 in range(_t2.shape[0]):"),
])
def test_nests_that_are_not_one_store_then_reads_per_element_keep_the_array(old, new):
    assert old in NEST
    (out,) = rewrite("_t1 = np.flip(m)" + NEST.replace(old, new))
    assert "np.empty" in out


def test_an_allocation_inside_a_loop_is_left():
    body = textwrap.indent("_t1 = np.flip(m)" + NEST, "    ")
    (out,) = rewrite("for r in range(3):\n" + body)
    assert "np.empty" in out


def test_switched_off_nothing_changes(monkeypatch):
    monkeypatch.setattr(module, "SHAPE_ONLY_ARRAYS", False)
    (out,) = rewrite("_t1 = np.flip(m)" + NEST)
    assert "np.empty" in out and "_t2[_i0, _i1] =" in out


def flipped(m, v):
    """Products whose reverse sweep needs only the shape of the fused products (a sum's
    adjoint), one that it needs in full (``p`` in ``p * m``), and a 1-d one."""
    p = np.flip(m) * m
    return np.sum(np.diag(m) ** 2) + np.sum(p) + np.sum(p * m) + np.sum(np.sort(v) * v)


def _value_and_grad(monkeypatch, tmp_path, on):
    monkeypatch.setattr(module, "SHAPE_ONLY_ARRAYS", on)
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / ("on" if on else "off")))
    g = srcgrad.value_and_grad(flipped, wrt=(0, 1), target="cpu")
    rng = np.random.default_rng(5)
    args = (rng.normal(size=(3, 4)), rng.normal(size=4))
    return g(*args), g.source_for(*args), args


def test_cpu_gradient_equals_the_arrays_and_finite_differences(monkeypatch, tmp_path):
    (v_on, g_on), src_on, args = _value_and_grad(monkeypatch, tmp_path, True)
    (v_off, g_off), src_off, _ = _value_and_grad(monkeypatch, tmp_path, False)
    assert src_on.count("np.empty") < src_off.count("np.empty")
    np.testing.assert_allclose(v_on, v_off, rtol=1e-14)
    for a, b in zip(g_on, g_off):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)
    check_grad(flipped, args, wrt=(0, 1), gradfn=lambda *a: g_on)
    nan = (np.full((3, 4), np.nan), args[1])        # NaN in, NaN out
    _, g_nan = srcgrad.value_and_grad(flipped, wrt=(0, 1), target="cpu")(*nan)
    assert np.isnan(g_nan[0]).all()


def test_a_dtype_written_as_a_cast_type_is_pure():
    nest = NEST.replace("type(_t1.dtype.type(0) * m.dtype.type(0))",
                        "type(type(_t1.dtype.type(0) * m.dtype.type(0))(0) * 2.0)")
    (out,) = rewrite("_t1 = np.flip(m)" + nest + "\ny = _t2.shape[0]")
    assert "np.empty" not in out and "y = _t1.shape[0]" in out
    (kept,) = rewrite("_t1 = np.flip(m)" + NEST.replace("type(_t1.dtype.type(0) * m.dtype.type(0))",
                                                         "type(f(_t1))") + "\ny = _t2.shape[0]")
    assert "np.empty" in kept                 # a call that may do anything
