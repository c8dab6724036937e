"""Loop fusion (cpu target) must not run a statement over an axis none of its operands has.

Found by tests/test_pytrees.py's training-loop test: ``s * s`` with ``s = np.sum(z, axis=1,
keepdims=True)`` (shape (n, 1)) joined the (n, m) loop nest that computed ``s`` and was computed,
and summed, m times; so was the reverse sweep's ``unbroadcast(_adj_t3 / _t2, _t2)`` of a
log-sum-exp. Both gave silently wrong values and gradients on cpu (python was right).
"""
import numpy as np
import pytest

from conftest import check_grad


def square_of_row_sums(z):
    s = np.sum(z, axis=1, keepdims=True)
    return np.sum(s * s)


def log_softmax_squares(z):
    logp = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    return np.sum(logp * logp)


@pytest.mark.parametrize("program", [square_of_row_sums, log_softmax_squares])
def test_keepdims_row_values_are_not_stretched(program):
    z = np.random.default_rng(0).standard_normal((5, 3))
    import srcgrad
    value, _ = srcgrad.value_and_grad(program, target="cpu")(z)
    assert value == pytest.approx(program(z))
    check_grad(program, (z,), target="cpu")
