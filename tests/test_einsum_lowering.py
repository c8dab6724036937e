"""np.einsum on both targets (srcgrad/normalize/einsum.py lowers it to ``@``, transposes, broadcast
products and sums; three or more operands two at a time; an index repeated inside one operand as
its diagonal), checked against central finite differences in float64: every common subscript on
the python target, the lowerings compiled (all of the subscripts under -m slow). ``...`` keeps
the np.einsum call, whose rule refuses it naming the line."""
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


def three_or_more(a, b, c):
    # contracted two at a time, left to right
    return (np.sum(np.einsum("ij,jk,kl->il", a, b, c) ** 2) + np.einsum("i,ij,j->", a[0], b, c[:, 1])
            + np.sum(np.sin(np.einsum("ij,ij,ij->i", a, a, c.T[:, :3])))
            + np.sum(np.einsum("ab,bc,cd,de->ae", a, b, c, c.T) ** 2))


def diagonals(a, b, c):
    # an index repeated inside one operand: its diagonal (a product with np.eye, summed)
    sq = b[:3, :3]
    t = np.stack([sq, sq * sq])
    return (np.einsum("ii->", sq) + np.sum(np.einsum("ii->i", sq) ** 3) + np.sum(np.sin(np.einsum("bii->bi", t)))
            + np.sum(np.einsum("ii,ij->j", sq, a.T[:3]) ** 2) + np.einsum("ii", sq * sq))


def _more_args():
    return RNG.standard_normal((4, 3)), RNG.standard_normal((3, 5)), RNG.standard_normal((5, 4))


MORE_ARGS = _more_args()


@pytest.mark.parametrize("f", [three_or_more, diagonals], ids=lambda f: f.__name__)
def test_einsum_operands_and_diagonals_python(f):
    check_tree_grad(f, MORE_ARGS, wrt=(0, 1, 2), target="python")


def test_einsum_diagonals_python_float32():
    args = [t.astype(np.float32) for t in MORE_ARGS]
    grads = srcgrad.grad(diagonals, wrt=(0, 1, 2), target="python")(*args)
    assert all(g.dtype == np.float32 for g in grads)


def three_and_diagonal(a, b, c):
    # one compile: three operands (a matrix product, then a broadcast product summed), a batched
    # diagonal and a trace
    sq = b[:3, :3]
    return (np.sum(np.einsum("ij,jk,kl->il", a, b, c) ** 2) + np.einsum("i,ij,j->", a[0], b, c[:, 1])
            + np.sum(np.sin(np.einsum("bii->bi", np.stack([sq, sq * sq])))) + np.einsum("ii->", sq))


def test_einsum_operands_and_diagonals_cpu():
    check_tree_grad(three_and_diagonal, MORE_ARGS, wrt=(0, 1, 2), target="cpu")


def einsum_ellipsis(x, b):
    return np.sum(np.einsum("...ij,jk->...ik", x, b) ** 2)


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_einsum_with_an_ellipsis_is_refused_with_its_line(target):
    # `...` stands for axes whose number normalize does not know (it serves every ndim): the
    # np.einsum call is kept, and its rule refuses `...` naming the line, before any compile
    x, b = RNG.standard_normal((2, 4, 3)), RNG.standard_normal((3, 2))
    with pytest.raises(srcgrad.SrcgradError, match=r"test_einsum_lowering\.py:\d+.*'\.\.\.'"):
        srcgrad.grad(einsum_ellipsis, target=target)(x, b)
