"""Adjoints whose form depends on how a value is used: a product or sum of a value with itself
(``x * x``, ``x + x``) gives one doubled contribution, a temporary used only there gets its
adjoint by assignment (no zeroed array, no ``+=``), and a subtracted single contribution
(``_adj_c = -unbroadcast(...)``) joins the loop nest on the cpu target. Gradients are checked
against finite differences on both targets, with broadcasting, inside loops, in float32."""
import numpy as np
import pytest

import srcgrad
from conftest import check_grad

TARGETS = ["python", "cpu"]


def squares(x, w, b):
    """Same-operand products of arrays, of a broadcast sum, of a parameter and of a scalar."""
    c = b * 2.0
    y = x - c                  # (5, 4) - (4,): the adjoint of c sums rows, with a minus sign
    z = y * y                  # y's only use: one contribution, assigned
    u = w + w
    s = np.sum(w)
    return np.sum(z * u) + np.sum(x * x) + s * s


def squares_twice(x, w):
    """y in two same-operand products: two contributions, accumulated."""
    y = x * w
    p = y * y
    q = y * y
    return np.sum(p + 3.0 * q)


def squares_in_loop(x, w):
    """A single-use temporary inside a loop: its adjoint is assigned once per iteration, and the
    adjoints it feeds keep accumulating over the iterations."""
    total = 0.0
    for i in range(3):
        y = x * w + float(i)
        z = y * y
        total = total + np.sum(z) * (i + 1.0)
    return total


def args(rng, dtype=np.float64):
    return [rng.standard_normal((5, 4)).astype(dtype), rng.standard_normal(4).astype(dtype),
            rng.standard_normal(4).astype(dtype)]


@pytest.mark.parametrize("target", TARGETS)
def test_same_operand_products(target):
    rng = np.random.default_rng(0)
    check_grad(squares, args(rng), wrt=(0, 1, 2), target=target)
    check_grad(squares_twice, args(rng)[:2], wrt=(0, 1), target=target)
    check_grad(squares_in_loop, args(rng)[:2], wrt=(0, 1), target=target)


@pytest.mark.parametrize("target", TARGETS)
def test_same_operand_float32(target):
    rng = np.random.default_rng(1)
    check_grad(squares, args(rng, np.float32), wrt=(0, 1, 2), target=target, rtol=2e-2, atol=2e-2)


def test_generated_code():
    rng = np.random.default_rng(2)
    source = srcgrad.grad(squares, wrt=(0, 1, 2), target="python").source_for(*args(rng))
    adjoint = source[source.index("def squares_adjoint"):]
    # one doubled contribution per same-operand product, y and c assigned, not accumulated
    assert "2.0 * _adj_z * y" in adjoint
    assert "_adj_y = " in adjoint and "_adj_y +=" not in adjoint
    assert "np.zeros_like(y)" not in adjoint
    assert "_adj_c = " in adjoint and "np.zeros_like(c)" not in adjoint
    source = srcgrad.grad(squares_twice, wrt=(0, 1), target="python").source_for(*args(rng)[:2])
    adjoint = source[source.index("def squares_twice_adjoint"):]
    assert adjoint.count("_adj_y +=") == 2


def test_subtracted_contribution_is_fused():
    rng = np.random.default_rng(3)
    source = srcgrad.grad(squares, wrt=(0, 1, 2), target="cpu").source_for(*args(rng))
    adjoint = source[source.index("def squares_adjoint"):]
    assert "_adj_c[_i1] += -_adj_y_e" in adjoint      # the column sum inside the loop nest
