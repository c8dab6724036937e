"""In-place writes through NumPy views, and helpers that return a tuple early.

A write into a view (``r = np.transpose(a); r[0, 0] = 0.0``) also changes the base array, which
srcgrad does not model: the fence (srcgrad/view_writes.py) refuses it with a SrcgradError naming the
line and the view, instead of the silently wrong gradient it gave before. Writes into copies and
into the arrays themselves stay supported and match finite differences.
"""
import inspect

import numpy as np
import pytest

import srcgrad
from conftest import check_grad


def _x():
    return np.random.default_rng(3).standard_normal((2, 3))


def w_transpose(a):
    r = np.transpose(a)
    r[0, 0] = 0.0
    return np.sum(r * r) + np.sum(np.sin(a))


def w_dot_t(a):
    r = a.T
    r[0, 1] = 2.0 * a[1, 1]
    return np.sum(r * r) + np.sum(np.sin(a))


def w_reshape(a):
    r = a.reshape(6)
    r[1] = 0.0
    return np.sum(r * r) + np.sum(np.sin(a))


def w_np_reshape(a):
    r = np.reshape(a, (3, 2))
    r[1, 0] = 0.0
    return np.sum(r * r) + np.sum(np.sin(a))


def w_ravel(a):
    r = np.ravel(a)
    r[1] = 3.0
    return np.sum(a * a) + np.sum(np.sin(r))


def w_row(a):
    r = a[0]
    r[1] = 0.0
    return np.sum(a * a) + np.sum(np.sin(r))


def w_slice(a):
    r = a[:, 1:]
    r[0, 0] = 0.0
    return np.sum(r * r) + np.sum(np.sin(a))


def w_swapaxes(a):
    r = np.swapaxes(a, 0, 1)
    r[0, 1] = 0.0
    return np.sum(r * r) + np.sum(np.sin(a))


def w_moveaxis(a):
    r = np.moveaxis(a, 0, 1)
    r[0, 1] = 0.0
    return np.sum(r * r) + np.sum(np.sin(a))


def w_expand_dims(a):
    r = np.expand_dims(a, 0)
    r[0, 0, 0] = 0.0
    return np.sum(r * r) + np.sum(np.sin(a))


def w_squeeze(a):
    r = np.squeeze(a[None])
    r[0, 0] = 0.0
    return np.sum(r * r) + np.sum(np.sin(a))


def w_diagonal(a):
    r = np.diagonal(a)           # read-only in NumPy: before, a raw ValueError
    r[0] = 0.0
    return np.sum(r * r) + np.sum(np.sin(a))


def w_einsum(a):
    r = np.einsum("ij->ji", a)
    r[0, 0] = 0.0
    return np.sum(r * r) + np.sum(np.sin(a))


def w_ellipsis(a):
    r = a[...]
    r[0, 0] = 0.0
    return np.sum(r * r) + np.sum(np.sin(a))


def w_alias(a):
    r = a
    r[0, 0] = 0.0
    return np.sum(r * r) + np.sum(np.sin(a))


def w_augmented(a):
    r = a.T
    r += 1.0
    return np.sum(a * a) + np.sum(np.sin(r))


def w_view_of_local(a):
    b = a * 2.0
    r = b.T
    r[0, 0] = a[0, 1] * a[0, 1]
    return np.sum(b * b * a)


def w_chain(a):
    r = a.T
    s = r[0]
    s[1] = 0.0
    return np.sum(s * s) + np.sum(np.sin(a))


def w_in_branch(a, c):
    r = a * 1.0
    if c > 0.0:
        r = a[0]
    r[1] = 0.0
    return np.sum(r * r) + np.sum(np.sin(a))


def w_alias_augmented(a):
    z = a                        # augmented assignment of an array: in place, `a` changes too
    z += 1.0
    return np.sum(a * a) + np.sum(np.sin(z))


def w_row_augmented(a):
    r = a[0]
    r += a[1]
    return np.sum(a * a) + np.sum(np.sin(r))


def w_tuple_assign(a):
    r, s = a.T, a * 1.0
    r[0, 0] = 0.0
    return np.sum(r * r) + np.sum(s)


def w_loop_rows(a):
    for row in a:
        row[0] = 0.5 * row[1]
    return np.sum(np.sin(a))


def w_enumerate_rows(a):
    for i, row in enumerate(a):
        row[0] = 0.5 * row[1]
    return np.sum(np.sin(a))


def w_zip_rows(a):
    for row, other in zip(a, a * 2.0):
        row[0] = other[1]
    return np.sum(np.sin(a))


def _transposed(p):
    q = p.T
    return q


def _scaled(p):
    return p * 2.0


def w_helper_view(a):
    r = _transposed(a)
    r[0, 0] = 0.0
    return np.sum(r * r) + np.sum(np.sin(a))


REFUSED = [w_transpose, w_dot_t, w_reshape, w_np_reshape, w_ravel, w_row, w_slice, w_swapaxes,
           w_moveaxis, w_expand_dims, w_squeeze, w_diagonal, w_einsum, w_ellipsis, w_alias,
           w_augmented, w_view_of_local, w_chain, w_alias_augmented, w_row_augmented,
           w_tuple_assign, w_loop_rows, w_enumerate_rows, w_zip_rows, w_helper_view]


def _write_line(f):
    lines, first = inspect.getsourcelines(f)
    return first + next(i for i, text in enumerate(lines) if "] = " in text or "+= " in text)


@pytest.mark.parametrize("f", REFUSED, ids=lambda f: f.__name__)
def test_write_into_a_view_is_refused(f):
    with pytest.raises(srcgrad.SrcgradError) as info:
        srcgrad.grad(f, target="python")(_x())
    message = str(info.value)
    assert f"test_view_writes.py:{_write_line(f)}" in message, message
    assert "writes into a view" in message and ".copy()" in message, message


def test_view_bound_in_one_branch_is_refused():
    with pytest.raises(srcgrad.SrcgradError, match="writes into a view of `a`"):
        srcgrad.grad(w_in_branch, target="python")(_x(), 1.0)


@pytest.mark.parametrize("f", [w_transpose, w_loop_rows, w_alias_augmented], ids=lambda f: f.__name__)
def test_refused_on_cpu_and_in_forward_mode(f):
    # the fence runs before any code generation: the same error on every target and mode
    with pytest.raises(srcgrad.SrcgradError, match=f"test_view_writes.py:{_write_line(f)}"):
        srcgrad.grad(f, target="cpu")(_x())
    with pytest.raises(srcgrad.SrcgradError, match=f"test_view_writes.py:{_write_line(f)}"):
        srcgrad.jvp(f, target="python")(_x(), np.ones((2, 3)))


def test_transpose_message_names_the_view():
    with pytest.raises(srcgrad.SrcgradError, match=r"view of `a` \(np.transpose\)"):
        srcgrad.grad(w_transpose, target="python")(_x())


def c_scalar_alias_augmented(a):
    z = a[0, 1]                  # a float: `z += ...` rebinds z, nothing else changes
    z += a[1, 2]
    w = z
    w *= 3.0
    return w * np.sum(a)


def c_loop_scalars(a):
    total = 0.0
    for v in a[0]:               # floats: `v += ...` rebinds v
        v += 1.0
        total = total + v * v
    return total


@pytest.mark.parametrize("f", [c_scalar_alias_augmented, c_loop_scalars], ids=lambda f: f.__name__)
def test_augmented_assignment_of_a_scalar_alias_matches_fd(f):
    check_grad(f, (_x(),), target="python")


# -- still supported: writes into copies, into the array itself, rebinding a view name ----------

def c_transpose_copy(a):
    r = np.transpose(a).copy()
    r[0, 0] = 0.0
    return np.sum(r * r) + np.sum(np.sin(a))


def c_row_copy(a):
    r = a[0].copy()
    r[1] = a[1, 2] * a[0, 0]
    return np.sum(a * a) + np.sum(np.sin(r))


def c_write_argument(a):
    b = a * 1.0
    b[0, 1] = a[1, 0] * a[1, 2]
    return np.sum(b * b) + np.sum(np.sin(a))


def c_rebound(a):
    r = a.T
    r = r * 2.0                  # a new array: writing into it is fine
    r[0, 0] = a[1, 1]
    return np.sum(r * r)


def c_fancy(a):
    r = a[[1, 0]]                # a list index copies
    r[0, 0] = 0.0
    return np.sum(r * r) + np.sum(np.sin(a))


def c_helper_copy(a):
    r = _scaled(a)               # a new array from the helper: writing into it is fine
    r[0, 0] = a[1, 1] * a[0, 2]
    return np.sum(r * r) + np.sum(np.sin(a))


def c_swapped_buffers(a):
    old = a * 1.0
    new = np.zeros_like(old)
    for step in range(2):
        new[0] = old[1] * old[0]
        new[1] = np.sin(old[0])
        old, new = new, old          # a swap: no array has two names
    return np.sum(old * old)


@pytest.mark.parametrize("f", [c_transpose_copy, c_row_copy, c_write_argument, c_rebound, c_fancy,
                               c_swapped_buffers, c_helper_copy],
                         ids=lambda f: f.__name__)
def test_writes_into_copies_match_fd(f):
    check_grad(f, (_x(),), target="python")


def test_write_into_copy_cpu():
    check_grad(c_transpose_copy, (_x(),), target="cpu")


# -- a helper returning a tuple early: adjoints of names bound on one path only ------------------

def _early_pair(a, b, c):
    if c > 0.0:
        return a * 2.0, b
    a2 = a * b
    b2 = b * 3.0
    return a2, b2


def early_pair(x, y):
    p, q = _early_pair(x, y, np.sum(x))
    return np.sum(p * q)


def early_twice(x):
    if np.sum(x) > 0.0:
        t = x * 2.0
        return np.sum(t * t) + np.sum(t)       # `t` used twice: a zeroed adjoint, not single use
    u = np.sin(x)
    return np.sum(u * u * u) + np.sum(u)


_XS = np.array([0.5, 1.0, 2.0])
_YS = np.array([1.5, -1.0, 0.3])


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_helper_returning_a_tuple_early(sign):
    # before: a raw UnboundLocalError (`_adj_t = np.zeros_like(_t)`, `_t` unbound on the other path)
    check_grad(early_pair, (sign * _XS, _YS), wrt=(0, 1), target="python")


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_early_return_of_a_name_used_twice(sign):
    check_grad(early_twice, (sign * _XS,), target="python")


def test_helper_returning_a_tuple_early_cpu():
    gradfn = srcgrad.grad(early_pair, wrt=(0, 1), target="cpu")
    for sign in (1.0, -1.0):
        check_grad(early_pair, (sign * _XS, _YS), wrt=(0, 1), gradfn=gradfn)
