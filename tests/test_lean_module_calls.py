"""``np.sort(a)`` is not ``a.sort()`` (issue 17): a NumPy function with an in-place method's name
returns a new array, so it does not stop a call from Python running the specialization without
the fused loops' fallback branches (``lean_calls.may_store_into_arrays``). No compile here."""
import numpy as np
import numpy

import srcgrad


def sorts_a_copy(m, v):
    return np.sum(np.sort(m) * m) + np.sum(numpy.sort(v) ** 2)


def sorts_in_place(m):
    c = m.copy()
    c.sort()
    return np.sum(c * m)


def fills(m):
    c = np.zeros(m.shape)
    c.fill(2.0)
    return np.sum(c * m)


def test_module_sort_returns_a_new_array():
    assert not srcgrad.lean_calls.may_store_into_arrays(sorts_a_copy)
    assert srcgrad.grad(sorts_a_copy, wrt=(0, 1), target="cpu")._lean_allowed()


def test_in_place_methods_still_keep_the_fallback():
    assert srcgrad.lean_calls.may_store_into_arrays(sorts_in_place)
    assert srcgrad.lean_calls.may_store_into_arrays(fills)
    assert not srcgrad.grad(sorts_in_place, wrt=0, target="cpu")._lean_allowed()


def copies_into(m):
    c = np.zeros(m.shape)
    np.copyto(c, m)
    return np.sum(c * m)


def test_numpy_functions_that_write_into_an_argument_keep_the_fallback():
    assert srcgrad.lean_calls.may_store_into_arrays(copies_into)
