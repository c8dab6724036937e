"""Regressions found while differentiating the real-program gallery (tests/real_programs/)."""
import numpy as np
import pytest

from conftest import check_grad


def seeded_list_then_append(x):
    # the LSTM example's shape: the list starts with one item, then grows with append
    out = [np.sin(x)]
    for t in range(3):
        x = x * 1.5
        out.append(np.tanh(x))
    return np.sum(np.stack(out) ** 2)


def two_seeds_then_append(x, n):
    out = [x, 2.0 * x]
    for t in range(n):
        x = x * x
        out.append(x)
    return np.sum(np.array(out)) + float(len(out))


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_list_literal_then_append(target):
    rng = np.random.default_rng(0)
    check_grad(seeded_list_then_append, (rng.standard_normal(3),), target=target)


def test_list_literal_of_scalars_then_append():
    check_grad(two_seeds_then_append, (0.7, 3), target="python")
