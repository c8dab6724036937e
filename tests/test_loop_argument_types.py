"""fused_runs.loop_argument_types: MinibatchLoop's cached Numba types of a batch loop's
arguments are numba.typeof's, and values that type differently never share a cache entry."""

import numba
import numpy as np
import pytest

from srcgrad.training.fused_runs import loop_argument_types


def _values(X, params=None, scale=np.float32(0.5)):
    params = params if params is not None else (np.zeros((3, 2), np.float32), np.zeros(2, np.float32))
    return (params, X, np.zeros(4, np.int64), np.arange(4), 2, 0, None, (), (0.1,),
            np.empty((2, 3), np.float32), np.empty(2, np.int64), scale)


def test_cached_types_are_typeofs():
    cache = {}
    values = _values(np.zeros((4, 3), np.uint8))
    first = loop_argument_types(cache, values)
    assert first == tuple(numba.typeof(v) for v in values)
    assert len(cache) == 1
    again = loop_argument_types(cache, _values(np.ones((7, 3), np.uint8)))   # same types
    assert again is first and len(cache) == 1


@pytest.mark.parametrize("other", [
    lambda X: X.astype(np.float32),             # another dtype
    lambda X: np.asfortranarray(X),             # another layout
    lambda X: X[:, ::2],                        # not contiguous
    lambda X: X[None],                          # another number of dimensions
])
def test_other_types_get_their_own_entry(other):
    cache = {}
    X = np.zeros((4, 3), np.uint8)
    base = loop_argument_types(cache, _values(X))
    Y = other(X)
    got = loop_argument_types(cache, _values(Y))
    assert got == tuple(numba.typeof(v) for v in _values(Y))
    assert got != base


def test_read_only_and_scale_types_differ():
    cache = {}
    X = np.zeros((4, 3), np.uint8)
    writable = loop_argument_types(cache, _values(X))
    R = X.copy()
    R.flags.writeable = False
    read_only = loop_argument_types(cache, _values(R))
    assert read_only[1] == numba.typeof(R) and read_only[1] != writable[1]
    no_scale = loop_argument_types(cache, _values(X, scale=None))
    assert no_scale[-1] == numba.typeof(None)
    float64_params = (np.zeros((3, 2)), np.zeros(2))
    f64 = loop_argument_types(cache, _values(X, params=float64_params))
    assert f64[0] == numba.typeof(float64_params) and f64[0] != writable[0]


def test_non_native_byte_order_is_not_cached():
    cache = {}
    X = np.zeros((4, 3), np.uint8)
    loop_argument_types(cache, _values(X))
    swapped = (np.zeros((3, 2), ">f4"), np.zeros(2, np.float32))
    # the fingerprint does not tell byte orders apart: typeof runs (and refuses them) instead
    with pytest.raises(Exception, match="Unsupported array dtype"):
        loop_argument_types(cache, _values(X, params=swapped))
    assert len(cache) == 1
