"""In-place updates of array slices on the cpu target (issue 17): ``a[:, d:] += b`` is written as
an update of a view (``_view1 = a[:, d:]`` then ``_view1 += b``), so that Numba does not compile
its slice assignment's shape-error message (about forty string functions, a third of the
vectorized GMM's compile). Only views are rewritten: never fancy indexing, never an element."""
import ast
from types import SimpleNamespace

import numpy as np

import srcgrad
from srcgrad.backends.cpu.lowering import _slice_updates
from srcgrad.kinds import INT, array

from conftest import check_grad


def split_columns(x, w, i):
    d = w.shape[0]
    head = x[:, :d]
    tail = x[:, d:]
    row = w[1:]
    part = x[i, 1:]                        # an integer index beside a slice
    return np.sum(np.exp(head) * w) + np.sum(tail * tail) + np.sum(row * row) + np.sum(part ** 3)


def test_slice_adjoints_update_views_on_cpu():
    """One compile: the slice adjoints are view updates, the gradient matches finite
    differences, NaN in gives NaN out where it flows."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((4, 5)), rng.standard_normal(3)
    g = srcgrad.grad(split_columns, wrt=(0, 1), target="cpu")
    check_grad(split_columns, (x, w, 2), wrt=(0, 1), gradfn=g)
    source = g.source
    # the cpu backend writes a whole-array `v += u` as the shared helper call update_array(v, '+', u)
    assert "_view1 = _adj_x[i, 1:]\n    update_array(_view1, '+', _adj_part)" in source
    assert "_view2 = _adj_w[1:]\n    update_array(_view2, '+', _adj_row)" in source
    assert "_view3 = _adj_x[:, d:]\n    update_array(_view3, '+', _adj_tail)" in source
    for slice_update in ("_adj_x[:, d:] +=", "_adj_x[:, :d] +=", "_adj_w[1:] +=", "_adj_x[i, 1:] +="):
        assert slice_update not in source
    x[2, 4] = np.nan
    gx, gw = g(x, w, 2)
    assert np.isnan(gx[2, 4]) and np.isnan(gx[:, :3]).sum() == 0


def _rewrite(code, kinds):
    stmts = ast.parse(code).body
    sections = _slice_updates([stmts], SimpleNamespace(kinds=kinds))
    return ast.unparse(ast.Module(body=sections[0], type_ignores=[]))


def test_only_views_of_arrays_are_rewritten():
    kinds = {"a": array(2, "float"), "idx": array(1, "int"), "i": INT, "s": INT}
    # a view: slices, or slices with an integer scalar (an adjoint has its primal's kind)
    assert _rewrite("a[:, 1:] += b", kinds) == "_view1 = a[:, 1:]\n_view1 += b"
    assert _rewrite("_adj_a[i, :] -= b", kinds) == "_view1 = _adj_a[i, :]\n_view1 -= b"
    # not a view, or not known to be one: left as written
    for code in ("a[i, 1] += b",           # an element
                 "a[idx, 1:] += b",        # fancy indexing (a copy in NumPy)
                 "c[:, 1:] += b",          # kind unknown
                 "s[1:] += b",             # not an array
                 "a[:, :, 1:] += b"):      # more indices than axes
        assert _rewrite(code, kinds) == code
    # inside loops and branches too; view names never clash with names the function has
    out = _rewrite("_view1 = 0\nfor i in range(3):\n    if i > 0:\n        a[i, :] += b", kinds)
    assert out == "_view1 = 0\nfor i in range(3):\n    if i > 0:\n        _view2 = a[i, :]\n        _view2 += b"
