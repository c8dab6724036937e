"""np.einsum with one or two operands on both targets (srcgrad/normalize/einsum.py lowers it to
``@``, transposes, broadcast products and sums), checked against central finite differences in
float64: every common subscript on the python target, both lowerings compiled (all of the
subscripts under -m slow)."""
import numpy as np
import pytest

import srcgrad
from pytree_check import check_tree_grad

RNG = np.random.default_rng(16)


def matmuls(a, b, v):
    return (np.sum(np.einsum("ij,jk->ik", a, b) ** 2) + np.sum(np.einsum("ij,j->i", a, v[:3]) * v[:4])
            + np.sum(np.sin(np.einsum("i,ij->j", v[:4], a))) + np.einsum("i,i->", v, v)
            + np.sum(np.einsum("ji,jk->ki", b, b) * np.arange(9.0).reshape(3, 3))
            + np.sum(np.einsum("ij,kj->ik", a, a) ** 2) + np.einsum("i,i", v, v * v))


def batched(x, y):
    return np.sum(np.cos(np.einsum("bij,bjk->bik", x, y))) + np.sum(np.einsum("bij,bkj->bki", x, x) ** 2)


def others(a, v):
    outer = np.einsum("i,j->ij", v, v[:3])
    elementwise = np.einsum("ij,ij->ij", a, a)
    dots = np.einsum("ij,ij->", a, a) + np.sum(np.einsum("ij,ij->i", a, np.sin(a)))
    sums = np.sum(np.einsum("ij->i", a) ** 2) + np.einsum("ij->", a) + np.sum(np.einsum("ij->j", a) ** 3)
    moved = np.einsum("ij->ji", a) * np.arange(12.0).reshape(3, 4)
    same = np.einsum("ij", a)                    # implicit output: a itself (NumPy: a view of it)
    implicit = np.einsum("ij,jk", outer, a[:3])  # implicit output "ik"
    return np.sum(outer * np.arange(12.0).reshape(4, 3)) + np.sum(elementwise ** 2) + dots + sums + \
        np.sum(moved ** 2) + np.sum(same * a) + np.sum(implicit ** 2)


def _cases():
    a, b = RNG.standard_normal((4, 3)), RNG.standard_normal((3, 3))
    v = RNG.standard_normal(4)
    x, y = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((2, 4, 2))
    return {"matmuls": (matmuls, (a, b, v), (0, 1, 2)), "batched": (batched, (x, y), (0, 1)),
            "others": (others, (a, v), (0, 1))}


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_einsum_python(name):
    f, args, wrt = CASES[name]
    check_tree_grad(f, args, wrt=wrt, target="python")


def all_einsums(a, b, v, x, y):
    return matmuls(a, b, v) + batched(x, y) + others(a, v)


def two_einsums(a, b, x, y):
    # the two lowerings: a matrix product and a broadcast product summed
    return np.sum(np.einsum("ij,jk->ik", a, b) ** 2) + np.sum(np.sin(np.einsum("bij,bjk->bik", x, y)))


def test_einsum_cpu():
    (_, (a, b, _), _), (_, (x, y), _) = CASES["matmuls"], CASES["batched"]
    check_tree_grad(two_einsums, (a, b, x, y), wrt=(0, 1, 2, 3), target="cpu")


@pytest.mark.slow       # every subscript above compiled (long: test_einsum_cpu covers both paths)
def test_all_einsums_cpu():
    (_, (a, b, v), _), (_, (x, y), _) = CASES["matmuls"], CASES["batched"]
    f = srcgrad.grad(all_einsums, wrt=(0, 1, 2, 3, 4), target="cpu")
    check_tree_grad(all_einsums, (a, b, v, x, y), wrt=(0, 1, 2, 3, 4), target="cpu", gradfn=f)
    value, _ = srcgrad.value_and_grad(all_einsums, wrt=0, target="cpu")(a, b, v, x, y)
    assert np.isclose(value, all_einsums(a, b, v, x, y), rtol=1e-12)


def einsum_diagonal(a):
    return np.sum(np.einsum("ii->i", a))


def test_einsum_with_a_repeated_index_is_refused_with_its_line():
    with pytest.raises(srcgrad.SrcgradError, match=r"test_einsum_lowering\.py:\d+.*diagonal"):
        srcgrad.grad(einsum_diagonal, target="python")(np.ones((3, 3)))
