"""An array assigned in each loop iteration and then written into (``lap = np.zeros_like(u);
lap[1:-1] = ...``, a heat stencil): the reverse sweep must see the written values.

Two wrong gradients in tape.py, found by the checkpointing tests: the per-iteration copy
(``save_arrays_per_iteration``) was taken at the assignment, before the write (the heat stencil's
gradient w.r.t. ``kappa`` came out 0.0), and the recomputation at the top of the reverse iteration
(``recompute_in_loops``) recomputed such an array without the write (``rows``). Both now leave
an array the iteration writes into to its snapshot and slot pops.
"""
import numpy as np
import pytest

from conftest import check_grad


def heat(u0, kappa, nsteps):
    u = u0.copy()
    for t in range(nsteps):
        lap = np.zeros_like(u)
        lap[1:-1] = u[2:] - 2.0 * u[1:-1] + u[:-2]
        u = u + kappa * lap
    return np.sum(u * u)


def rows(x, w):
    s = 0.0
    for i in range(x.shape[0]):
        r = x * w
        r[i] = np.sin(r[i])
        s = s + np.sum(r * r)
    return s


@pytest.mark.parametrize("target", ["python", pytest.param("cpu", marks=pytest.mark.slow)])
def test_heat_stencil(target):
    rng = np.random.default_rng(3)
    check_grad(heat, (rng.standard_normal(8), 0.2, 6), wrt=(0, 1), target=target)


def test_written_after_assignment():
    rng = np.random.default_rng(4)
    check_grad(rows, (rng.standard_normal(5), 0.7), wrt=(0, 1), target="python")
