"""srcgrad.arguments: what the three front doors share (wrt, binding, kinds, precision, call keys,
the specialization cache)."""
import threading
import time

import numpy as np
import pytest

from srcgrad import kinds as K
from srcgrad.arguments import (DifferentiatedFunction, call_key, numba_precision, parse_wrt,
                               precision_of, working_precision)

f32, f64 = np.ones(2, np.float32), np.ones(2)
PRECISION_CASES = [
    ((f32,), "float32"),
    ((f32, 2.0), "float32"),                    # Python floats do not decide
    ((f32, np.float64(2.0)), "float32"),        # nor do float64 NumPy scalars
    ((f32, f64), "float64"),                    # a float64 array does
    ((np.float32(1.0), 2.0), "float32"),        # a float32 scalar decides
    ((np.arange(3), f32, 3), "float32"),        # integers never decide
    ((2.0, 3),  "float64"),
    ((np.ones(2, np.float16),), "float64"),
    ((), "float64"),
]


@pytest.mark.parametrize("values, expected", PRECISION_CASES)
def test_precision_of(values, expected):
    assert precision_of(values) == expected


@pytest.mark.parametrize("values, expected", PRECISION_CASES)
def test_numba_precision_agrees(values, expected):
    from numba import typeof
    assert numba_precision([typeof(v) for v in values]) == expected


def test_working_precision():
    assert working_precision([]) == "float64"
    assert working_precision([np.dtype(np.float32)] * 2) == "float32"
    assert working_precision([np.dtype(np.float32), np.dtype(np.float64)]) == "float64"


def test_parse_wrt():
    params = ["x", "y", "n"]
    assert parse_wrt(1, params, "f") == ([1], True)
    assert parse_wrt(("y", 0), params, "f") == ([1, 0], False)
    with pytest.raises(ValueError, match="no parameter named 'z'"):
        parse_wrt("z", params, "f")
    with pytest.raises(ValueError, match="twice"):
        parse_wrt((0, "x"), params, "f")
    with pytest.raises(TypeError, match="positions"):
        parse_wrt(True, params, "f")


def f(x, y, n=3):
    return x * y * n


def test_binding_and_kinds():
    fn = DifferentiatedFunction(f, ("x", "y"), "grad")
    assert fn.wrt_names == ["x", "y"] and not fn.single
    assert fn._bind((1.0,), {"y": 2.0}) == (1.0, 2.0, 3)
    with pytest.raises(TypeError, match=r"f\(x, y, n=3\)"):
        fn._bind((1.0,), {})
    assert fn.kinds_of((1.0, np.ones((2, 2)), 3)) == (K.FLOAT, K.array(2), K.INT)
    with pytest.raises(TypeError, match="cannot differentiate with respect to argument 'y'"):
        fn.kinds_of((1.0, 2, 3))
    assert call_key((1.0, np.ones((2, 2), np.float32), 3)) == (float, ("f", 2), int)
    assert call_key((np.array(1.0),)) is None


def test_each_specialization_is_built_once():
    fn = DifferentiatedFunction(f, 0, "grad")
    builds = []

    def build():
        builds.append(1)
        time.sleep(0.05)
        return object()

    results = []
    threads = [threading.Thread(target=lambda: results.append(fn._cached("key", build))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len({id(r) for r in results}) == 1
    assert fn._last is results[0]
