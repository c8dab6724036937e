"""hvp's adjoint of an ODE step's tangent code keeps each overwritten loop state once per
iteration: the iteration-start copy (taped for the recomputation) also serves as the old value at
the state's one assignment, so nothing is taped twice. Checked on the generated source and against
finite differences of the gradient."""
import re

import numpy as np
import pytest

import srcgrad
from test_forward import check_hvp, check_jvp


def euler_lorenz(p, u0, dt, nsteps):
    x = u0[0]
    y = u0[1]
    z = u0[2]
    J = 0.0
    for t in range(nsteps):
        dx = p[0] * (y - x)
        dy = x * (p[1] - z) - y
        dz = x * y - p[2] * z
        x = x + dt * dx
        y = y + dt * dy
        z = z + dt * dz
        J += dt * (x * x + y * y + z * z)      # reads the new state: x, y, z are carried
    return J


def _args():
    return np.array([10.0, 28.0, 8.0 / 3.0]), np.array([1.0, 0.5, 0.2]), 0.01, 7


def _pushes_per_iteration(source, function):
    body = source.split(f"def {function}(")[1].split("\ndef ")[0]
    return [int(n) for n in re.findall(r"reserve_tape\(_ftape, _fpos, (\d+) \* range_length", body)]


def test_hvp_tapes_each_carried_state_once():
    h = srcgrad.hvp(euler_lorenz, wrt=(0, 1), target="python")
    source = h.source_for(*_args())
    # the tangent code carries x, y, z and their tangents: 6 values per iteration (12 before:
    # each also taped at its assignment)
    assert _pushes_per_iteration(source, "euler_lorenz_jvp_tangent_adjoint_gradient_only") == [6]
    # the old value at the assignment is the start copy
    assert re.search(r"^\s+x = _x_start\d+$", source, re.M)
    check_hvp(euler_lorenz, _args(), (0, 1), "python")


def test_grad_tapes_each_carried_state_once():
    g = srcgrad.grad(euler_lorenz, wrt=(0, 1), target="python")
    source = g.source_for(*_args())
    assert _pushes_per_iteration(source, "euler_lorenz_adjoint") == [3]
    check_jvp(euler_lorenz, _args(), (0, 1))
    from conftest import check_grad
    check_grad(euler_lorenz, _args(), wrt=(0, 1), target="python")


@pytest.mark.parametrize("target", ["cpu"])
def test_hvp_carried_state_cpu(target):
    check_hvp(euler_lorenz, _args(), (0, 1), target)


# ---- jvp: the tangent of `c * a * a` ---------------------------------------------------------

def scaled_square(x):
    s = 0.0
    for i in range(x.shape[0]):
        a = x[i] - 0.5
        t = 100.0 * a
        s += t * a + a * (3.0 * a) - (a * 2.0) * a
        a = a * a
        s += t * a                      # a was reassigned after t: the product rule serves
    return s


def test_jvp_of_a_scaled_square():
    j = srcgrad.jvp(scaled_square, target="python")
    source = j.source_for(np.ones(3))
    # u * v with u = c * v computed just before: (2 c) v dv (no product rule)
    assert re.search(r"_dot_\w+ = 200\.0 \* a \* _dot_a$", source, re.M)
    check_jvp(scaled_square, (np.random.default_rng(3).uniform(-1, 1, 6),))
    check_hvp(scaled_square, (np.random.default_rng(4).uniform(-1, 1, 6),), 0, "python")
