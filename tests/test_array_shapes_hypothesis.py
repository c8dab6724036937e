"""Broadcasting and matrix products over shapes hypothesis draws, against central differences.

The hand-picked shapes of test_arrays.py cover each case once; here hypothesis draws any pair of
shapes NumPy broadcasts together (up to 3 axes; axes of size 1 and 0-length too), and any pair of
operand shapes `@` accepts (vectors, matrices, stacks with broadcast leading axes), using NumPy's
own gufunc signature of matmul. The python target runs every example (the same generated code).
The cpu target compiles once per new pair of ndims (a 3-d pair took minutes on a loaded machine),
so its derandomized run (8 examples) is marked slow; by default the compiled code paths are
covered by test_arrays.py's cpu cases (test_broadcasting, test_broadcasting_3d, test_products_shapes,
test_batched_products).
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import srcgrad
from conftest import check_grad

_GRADS = {}


def gradfn(f, target):
    key = (f.__name__, target)
    if key not in _GRADS:
        _GRADS[key] = srcgrad.grad(f, wrt=(0, 1), target=target)
    return _GRADS[key]


def broadcast_pair(a, b):
    return np.sum(np.sin(a * b + a) - b / (a * a + 2.0))


def product_pair(a, b):
    c = a @ b
    return np.sum(np.sin(c) * c)


def _settings(target):
    return settings(max_examples=40 if target == "python" else 8, deadline=None, derandomize=True,
                    database=None, suppress_health_check=list(HealthCheck))


def _check_pair(f, shapes, seed, target):
    """Random arrays of the two drawn shapes; the gradient against central differences, and
    each gradient has its argument's shape."""
    rng = np.random.default_rng(seed)
    a, b = (rng.uniform(-1.0, 1.0, shape) for shape in shapes.input_shapes)
    grads = check_grad(f, [a, b], wrt=(0, 1), target=target, gradfn=gradfn(f, target),
                       rtol=1e-5, atol=1e-6)
    assert [np.shape(g) for g in grads] == [a.shape, b.shape]


SLOW_CPU = ["python", pytest.param("cpu", marks=pytest.mark.slow)]


@pytest.mark.parametrize("target", SLOW_CPU)
def test_broadcasting_any_shapes(target):
    @_settings(target)
    @given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
           seed=st.integers(0, 2 ** 16))
    def check(shapes, seed):
        _check_pair(broadcast_pair, shapes, seed, target)
    check()


MATMUL_SIGNATURE = "(m?,n),(n,p?)->(m?,p?)"      # np.matmul.signature


@pytest.mark.parametrize("target", SLOW_CPU)
def test_matmul_any_shapes(target):
    @_settings(target)
    @given(shapes=mutually_broadcastable_shapes(signature=MATMUL_SIGNATURE, max_dims=2, max_side=3),
           seed=st.integers(0, 2 ** 16))
    def check(shapes, seed):
        _check_pair(product_pair, shapes, seed, target)
    check()
