"""np.inner and np.tensordot on both targets, checked against central finite differences in float64:
the operand shapes on the python target (which keeps the calls and their rule, for every ndim), a
representative subset compiled in one function. On cpu every form with constant axes (axes=0,
axes=2, several axes in a pair, 3-d second operands) is written as a matrix product of reshapes
once the kinds are known (srcgrad/backends/cpu/tensordots.py); axes known only at run time keep
the python-only rule and the cpu target's refusal naming the line."""
import numpy as np
import pytest

import srcgrad
from conftest import check_grad

RNG = np.random.default_rng(15)


def normal(*shape):
    return RNG.standard_normal(shape)


def td_axes1(v, a, x):
    # tensordot(., ., 1): 1-d.1-d, 2-d.1-d, 1-d.2-d, 2-d.2-d, 3-d.2-d, 3-d.1-d
    return (np.tensordot(v, v, 1) + np.sum(np.tensordot(a, v[:3], axes=1) ** 2)
            + np.sum(np.sin(np.tensordot(v, a, 1))) + np.sum(np.tensordot(a, a.T, 1) ** 2)
            + np.sum(np.cos(np.tensordot(x, a.T, axes=1))) + np.sum(np.tensordot(x, v[:3], 1) ** 3))


def td_pairs(v, a, x):
    # one axis each, as (i, j), ([i], [j]) or ((i,), (j,)), negative axes included
    return (np.sum(np.tensordot(a, a, (0, 0)) ** 2) + np.sum(np.tensordot(x, a, ([1], [0])) ** 2)
            + np.sum(np.sin(np.tensordot(a, x[0], ((1,), (1,))))) + np.sum(np.tensordot(x, v[:3], (-1, -1)) * 2.0)
            + np.sum(np.tensordot(a, a, ([-1], [1])) ** 2) + np.tensordot(v, v, (0, 0)))


def td_kept(a, x):
    # not lowered (the python rule): axes=0 (outer), axes=2, the default axes, two-axis pairs
    return (np.sum(np.tensordot(a[0], a[1], 0) ** 2) + np.sum(np.tensordot(a, a[:3], axes=0) ** 2)
            + np.tensordot(a, a, 2) + np.sum(np.tensordot(x, a, axes=((1, 2), (0, 1))) ** 2)
            + np.sum(np.tensordot(x[:, :, :3], x[0, :, :3]) ** 2))


def inners(v, a, x):
    # inner: 1-d.1-d, 2-d.1-d, 1-d.2-d, 2-d.2-d, 3-d.2-d, 3-d.1-d
    return (np.inner(v, v) + np.sum(np.inner(a, v[:3]) ** 2) + np.sum(np.sin(np.inner(v[:3], a)))
            + np.sum(np.inner(a, a) ** 2) + np.sum(np.cos(np.inner(x, a))) + np.sum(np.inner(x, v[:3]) ** 3))


def _args():
    return normal(4), normal(4, 3), normal(2, 4, 3)


CASES = {"td_axes1": (td_axes1, _args(), (0, 1, 2)), "td_pairs": (td_pairs, _args(), (0, 1, 2)),
         "td_kept": (td_kept, _args()[1:], (0, 1)), "inners": (inners, _args(), (0, 1, 2))}


@pytest.mark.parametrize("name", list(CASES))
def test_tensordot_inner_python(name):
    f, args, wrt = CASES[name]
    check_grad(f, args, wrt=wrt, target="python")


def test_tensordot_inner_python_float32():
    f, args, wrt = CASES["inners"]
    args32 = [a.astype(np.float32) for a in args]
    grads = srcgrad.grad(td_axes1, wrt=wrt, target="python")(*args32)
    assert all(g.dtype == np.float32 for g in grads)
    check_grad(f, args32, wrt=wrt, target="python", rtol=3e-3, atol=3e-3)
    check_grad(td_pairs, args32, wrt=wrt, target="python", rtol=3e-3, atol=3e-3)


def lowered(v, a, x):
    # one compile for the lowered forms: `@`, moved axes, a transpose
    return (np.tensordot(v, v, 1) + np.sum(np.cos(np.tensordot(x, a.T, axes=1)))
            + np.sum(np.tensordot(x, a, ([1], [0])) ** 2) + np.sum(np.sin(np.tensordot(a, x[1], (1, 1))))
            + np.inner(v, v) + np.sum(np.inner(a, a) ** 2) + np.sum(np.inner(x, v[:3]) ** 3))


@pytest.mark.slow       # the same cpu lowering as test_every_form_cpu (one compile by default)
def test_tensordot_inner_cpu():
    v, a, x = _args()
    check_grad(lowered, (v, a, x), wrt=(0, 1, 2), target="cpu")


@pytest.mark.slow       # a second compile (test_tensordot_inner_python_float32 covers float32 by default)
def test_tensordot_inner_cpu_float32():
    v, a, x = (t.astype(np.float32) for t in _args())
    grads = srcgrad.grad(lowered, wrt=(0, 1, 2), target="cpu")(v, a, x)
    assert all(g.dtype == np.float32 for g in grads)
    check_grad(lowered, (v, a, x), wrt=(0, 1, 2), target="cpu", rtol=3e-3, atol=3e-3)


def td_runtime_axes(a, k):
    return np.sum(np.tensordot(a, a, ([k], [k])) ** 2)


def test_tensordot_with_axes_known_at_run_time_only():
    # python: the rule; cpu: refused naming the line (the axes decide the reshapes)
    check_grad(td_runtime_axes, (normal(4, 3), 1), target="python")
    with pytest.raises(srcgrad.SrcgradError, match=r"test_tensordot_lowering\.py:\d+.*python target only"):
        srcgrad.grad(td_runtime_axes, target="cpu")(normal(4, 3), 1)


def inner_of_3d(a, x):
    return np.sum(np.sin(np.inner(a, x)))


def td_into_3d(a, x):
    return np.sum(np.tensordot(a, x, 1) ** 2)


def test_3d_second_operand_python():
    # the python target keeps the calls (no `@` lowering: backends.Backend.lower_products), so
    # their rule computes every ndim, as before the lowering
    a, x = normal(4, 3), normal(2, 4, 3)
    check_grad(inner_of_3d, (a, x), wrt=(0, 1), target="python")
    check_grad(td_into_3d, (a[:, :2], x), wrt=(0, 1), target="python")


def inner_of_a_number(a):
    return np.sum(np.inner(2.0, a) * a)


def test_inner_of_a_number_python():
    check_grad(inner_of_a_number, (normal(2, 3),), target="python")


def every_form(a, x, v):
    # on cpu, once the kinds are known (backends/cpu/tensordots.py): axes=0 (outer), axes=2 (a full
    # contraction), several axes in a pair, 3-d second operands, np.inner of 2-d and 3-d, with a number
    return (np.sum(np.tensordot(a[0], a[1], 0) ** 2) + np.tensordot(a, a, 2)
            + np.sum(np.tensordot(x, a, axes=((1, 2), (0, 1))) ** 2)
            + np.sum(np.sin(np.tensordot(a[:, :2], x, 1))) + np.sum(np.inner(a, x) ** 2)
            + np.sum(np.tensordot(x, x, ([0, 2], [0, 2])) ** 2) + np.inner(v, v)
            + np.sum(np.inner(2.0, v) * v))


def test_every_form_cpu():
    a, x = normal(4, 3), normal(2, 4, 3)
    check_grad(every_form, (a, x, normal(3)), wrt=(0, 1, 2), target="cpu")
    check_grad(every_form, (a, x, normal(3)), wrt=(0, 1, 2), target="python")


def td_tangent(a, x):
    return np.sum(np.tensordot(x, a, axes=((1, 2), (0, 1))) ** 2) + np.sum(np.sin(np.inner(a, x)))


def test_jvp_cpu():
    # forward mode's tangent code calls np.tensordot/np.inner too: written the same way on cpu
    from test_forward import check_jvp
    check_jvp(td_tangent, (normal(4, 3), normal(2, 4, 3)), (0, 1), "cpu")
