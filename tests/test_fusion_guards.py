"""srcgrad.backends.cpu.fusion_guards: size tests that earlier tests and allocations imply are
dropped (issue 17: each raising test is a block in which Numba releases every live array)."""
import ast
import textwrap

import numpy as np

import srcgrad
from conftest import check_grad
from srcgrad.backends.cpu.fusion_guards import drop_implied_guards

RAISE = "raise FusionGuardFailed('fused loop sizes: rerun with the fallback')"


def simplified(*sections, raising=True):
    parsed = [ast.parse(textwrap.dedent(code)).body for code in sections]
    return [ast.unparse(ast.Module(body=body, type_ignores=[]))
            for body in drop_implied_guards(parsed, raising=raising)]


def test_tests_implied_by_passed_tests_and_allocations_go():
    forward = f"""
        if not (a.shape[0] == b.shape[0] and b.shape[1] == n):
            {RAISE}
        t = huge_pages(np.empty((a.shape[0], n), np.float64))
        """
    reverse = f"""
        if not (b.shape[0] == a.shape[0] and t.shape[0] == b.shape[0] and t.shape[1] == b.shape[1] and c.shape[0] == c.shape[0]):
            {RAISE}
        if not (t.shape[1] == c.shape[1] and a.shape[0] == t.shape[0]):
            {RAISE}
        """
    out_forward, out_reverse = simplified(forward, reverse)
    assert out_forward.count("FusionGuardFailed") == 1
    # b.shape[1] == n and t.shape[1] == n: implied; c's trivially true; only c.shape[1] is new
    assert out_reverse == f"if not t.shape[1] == c.shape[1]:\n    {RAISE}"


def test_names_bound_again_or_in_a_loop_keep_their_tests():
    code = f"""
        if not (a.shape[0] == b.shape[0]):
            {RAISE}
        a = np.sin(a)
        for i in range(3):
            u = np.ones(i)
        if not (u.shape[0] == b.shape[0]):
            {RAISE}
        if not (a.shape[0] == b.shape[0]):
            {RAISE}
        """
    (out,) = simplified(code)
    assert out.count("FusionGuardFailed") == 3


def test_a_test_inside_a_branch_or_loop_teaches_nothing():
    code = f"""
        if flag:
            if not (a.shape[0] == b.shape[0]):
                {RAISE}
        if not (a.shape[0] == b.shape[0]):
            {RAISE}
        for i in range(2):
            if not (a.shape[0] == b.shape[0]):
                {RAISE}
        """
    (out,) = simplified(code)
    # the top-level test stays (the branch may not have run) and implies the loop's
    assert out.count("FusionGuardFailed") == 2
    assert out.endswith("for i in range(2):\n    pass")
    compile(out, "<simplified>", "exec")       # still Python


def test_fallback_branches_lose_only_trivially_true_tests():
    unchanged = """
        if a.shape[0] == b.shape[0]:
            s = 5.0
        else:
            s = 6.0
        if f() == f():
            s = 7.0
        else:
            s = 8.0
        """
    code = """
        if a.shape[0] == a.shape[0] and a.shape[1] == a.shape[1]:
            s = 1.0
        else:
            s = 2.0
        if a.shape[0] == a.shape[0] and a.shape[0] == b.shape[0]:
            s = 3.0
        else:
            s = 4.0
        """
    expected = """
        s = 1.0
        if a.shape[0] == b.shape[0]:
            s = 3.0
        else:
            s = 4.0
        """
    (out,) = simplified(code + unchanged, raising=False)
    assert out == ast.unparse(ast.parse(textwrap.dedent(expected + unchanged)))


def turned(m, v):
    a = np.sum(np.rot90(m, 2) * m) + np.sum(np.flip(m, axis=1) * np.rot90(m, 2) ** 2)
    return a + np.sum(np.sort(m) * v)


def test_reverse_sweep_repeats_no_forward_test_and_matches_fd():
    g = srcgrad.grad(turned, wrt=(0, 1), target="cpu")
    rng = np.random.default_rng(4)
    for shape in ((3, 4), (5, 5)):
        m, v = rng.standard_normal(shape), rng.standard_normal(shape[1])
        check_grad(turned, (m, v), wrt=(0, 1), gradfn=g)
    assert g._last.lean and g._last.fallback is None
    source = g.source
    adjoint = source[source.index("def turned_adjoint"):]
    reverse = adjoint[adjoint.index("_adj_m = "):]
    forward = adjoint[:adjoint.index("_adj_m = ")]
    assert forward.count("raise FusionGuardFailed") >= 1
    assert reverse.count("raise FusionGuardFailed") == 0
