"""Writes through views that reach the write by another path than a plain name (issue 15).

tests/test_view_writes.py covers ``r = a.T; r[0, 0] = ...``. Here the view travels through a
helper's returned tuple, a list, tuple, dict, namedtuple or pytree, unpacking, a loop over a
literal, ``np.split``, a swap, ``r = r[0]``, a helper's parameter, and the other in-place paths
(augmented assignment, ``out=``, ``np.copyto``, ``.flat``, ``np.array(copy=False)``). Every
program marked ``# wrong before`` gave a gradient that disagreed with central finite differences,
with no error; each is now refused at the fence (srcgrad/view_writes.py) with a SrcgradError
naming the file, the line, the base and the view. The programs after them (new arrays, copies,
read-only views) are still accepted and match finite differences, on python and cpu.

Every program works on a local copy ``A = a * 1.0``, so finite differences of the NumPy function
are not disturbed by the writes into the caller's arrays.
"""
import inspect
from collections import namedtuple

import numpy as np
import pytest

import srcgrad
from conftest import check_grad

NT = namedtuple("NT", ["w", "b"])


def _args():
    rng = np.random.default_rng(15)
    return rng.standard_normal((2, 3)), rng.standard_normal(3)


# -- helpers returning a tuple of views -----------------------------------------------------------

def _pair_t(p, q):
    return p.T, q


def _pair_row(p, q):
    return (p[0], q)


def _pair_second(p, q):
    return q * 1.0, p[1]


def _pair_via(p, q):
    return _pair_t(p, q)


def _branchy(p, q, c):
    if c > 0.0:
        t = (q * 1.0, q * 2.0)
    else:
        t = (p.T, q)
    return t


def _append_rows(p):
    out = []
    for i in range(2):
        out.append(p[i])
    return out


def _tree(p):
    return {"w": p.T, "b": p[0] * 1.0}


def tuple_helper_t(a, b):                     # wrong before
    A = a * 1.0
    r, s = _pair_t(A, b)
    r[0, 0] = s[1] * 2.0                      # refused
    return np.sum(A * A) + np.sum(np.sin(r))


def tuple_helper_row(a, b):                   # wrong before
    A = a * 1.0
    r, s = _pair_row(A, b)
    r[1] = s[0] * 3.0                         # refused
    return np.sum(A * A) + np.sum(np.sin(r))


def tuple_helper_second(a, b):                # wrong before
    A = a * 1.0
    r, s = _pair_second(A, b)
    s[1] = r[0] * 3.0                         # refused
    return np.sum(A * A) + np.sum(np.sin(s))


def tuple_helper_argument(a, b):              # wrong before: the base is the argument itself
    r, s = _pair_t(a, b)
    r[0, 0] = s[1] * 2.0                      # refused
    return np.sum(a * a) + np.sum(np.sin(r))


def tuple_helper_nested(a, b):
    A = a * 1.0
    r, s = _pair_via(A, b)
    r[0, 1] = s[1]                            # refused
    return np.sum(A * A) + np.sum(np.sin(r))


def tuple_helper_held(a, b):
    A = a * 1.0
    t = _pair_t(A, b)
    r = t[0]
    r[0, 0] = b[2]                            # refused
    return np.sum(A * A) + np.sum(np.sin(r))


def tuple_helper_branch(a, b):                # wrong before: the view on one path of the helper
    A = a * 1.0
    r, s = _branchy(A, b, -1.0)
    r[0, 0] = b[0]                            # refused
    return np.sum(A * A) + np.sum(np.sin(r))


def helper_appended_rows(a, b):
    A = a * 1.0
    p, q = _append_rows(A)
    p[0] = b[0]                               # refused
    return np.sum(A * A) + np.sum(np.sin(p))


def helper_pytree(a, b):
    A = a * 1.0
    d = _tree(A)
    d["w"][0, 1] = b[1] * 2.0                 # refused
    return np.sum(A * A) + np.sum(np.sin(d["w"])) + np.sum(d["b"])


def helper_view_in_loop(a, b):
    A = a * 1.0
    for i in range(2):
        r, s = _pair_row(A[i:], b)
        r[0] = s[i] * 2.0                     # refused
    return np.sum(A * A)


# -- views held in lists, tuples, dicts, namedtuples; unpacking ----------------------------------

def list_item(a, b):
    A = a * 1.0
    rows = [A[0], A[1]]
    r = rows[0]
    r[1] = 5.0 * b[0]                         # refused
    return np.sum(A * A) + np.sum(np.sin(r))


def dict_item(a, b):
    W = a * 1.0
    d = {"w": W.T}
    d["w"][0, 0] = b[0] * 1.5                 # refused
    return np.sum(W * W) + np.sum(np.sin(d["w"]))


def namedtuple_item(a, b):
    A = a * 1.0
    n = NT(A.T, b)
    w = n.w
    w[0, 0] = b[0] * 2.0                      # refused
    return np.sum(A * A) + np.sum(np.sin(w))


def loop_over_list(a, b):                     # wrong before
    A = a * 1.0
    for r in [A[0], A[1]]:
        r[0] = r[1] * b[0]                    # refused
    return np.sum(A * A) + np.sum(np.sin(A))


def loop_over_tuple(a, b):                    # wrong before
    A = a * 1.0
    for r in (A.T, b * 1.0):
        r[0] = b[1] * 2.0                     # refused
    return np.sum(A * A)


def loop_zip_lists(a, b):                     # wrong before
    A = a * 1.0
    for r, s in zip([A[0], A[1]], [b, b]):
        r[0] = s[1]                           # refused
    return np.sum(A * A)


def loop_enumerate_list(a, b):                # wrong before
    A = a * 1.0
    for i, r in enumerate([A[0], A[1]]):
        r[0] = b[i]                           # refused
    return np.sum(A * A)


def loop_comprehension(a, b):
    A = a * 1.0
    rows = [A[i] for i in range(2)]
    for r in rows:
        r[1] = b[0]                           # refused
    return np.sum(A * A)


def loop_list_of_array(a, b):
    A = a * 1.0
    rows = list(A)
    for r in rows:
        r[0] = b[0]                           # refused
    return np.sum(A * A)


def unpack_literal(a, b):
    A = a * 1.0
    p, q = (A.T, b)
    p[0, 0] = q[0] * 2.0                      # refused
    return np.sum(A * A) + np.sum(np.sin(p))


def unpack_tuple_name(a, b):                  # wrong before
    A = a * 1.0
    t = (A.T, b)
    p, q = t
    p[0, 0] = q[0] * 2.0                      # refused
    return np.sum(A * A) + np.sum(np.sin(p))


def unpack_new_arrays_then_read(a, b):        # wrong before: p is still t[0]
    t = (a * 1.0, b * 1.0)
    p, q = t
    p[0, 0] = b[1]                            # refused
    return np.sum(t[0] ** 2) + np.sum(q)


def unpack_rows(a, b):                        # wrong before
    A = a * 1.0
    p, q = A
    p[0] = b[0]                               # refused
    return np.sum(A * A) + np.sum(np.sin(p))


def unpack_split(a, b):                       # wrong before
    A = a * 1.0
    p, q = np.split(A, 2)
    p[0, 0] = b[0]                            # refused
    return np.sum(A * A) + np.sum(np.sin(p))


def swapped_view(a, b):                       # wrong before: after the swap `s` is the view
    A = a * 1.0
    r = A.T
    s = b * 1.0
    r, s = s, r
    s[0, 0] = b[1]                            # refused
    return np.sum(A * A) + np.sum(r)


def view_of_itself(a, b):                     # wrong before: `r = r[0]` is still a view of A
    A = a * 1.0
    r = A.T
    r = r[0]
    r[1] = b[0]                               # refused
    return np.sum(A * A)


# -- other in-place paths ---------------------------------------------------------------------------

def augmented_loop_rows(a, b):                # wrong before (the loop variable was renamed)
    A = a * 1.0
    for r in A:
        r += b                                # refused
    return np.sum(A * A)


def augmented_transpose(a, b):
    A = a * 1.0
    r = A.T
    r *= 2.0                                  # refused
    return np.sum(A * A) + np.sum(np.sin(r))


def ellipsis_into_view(a, b):
    A = a * 1.0
    r = A[0]
    r[...] = b * 2.0                          # refused
    return np.sum(A * A) + np.sum(r)


def array_copy_false(a, b):                   # wrong before
    A = a * 1.0
    r = np.array(A, copy=False)
    r[0, 0] = b[0]                            # refused
    return np.sum(A * A)


def asarray_view(a, b):
    A = a * 1.0
    r = np.asarray(A)
    r[0, 0] = b[0]                            # refused
    return np.sum(A * A)


def view_of_view_of_view(a, b):
    A = a * 1.0
    r = A.T
    s = r[1:]
    t = s.reshape(-1)
    t[0] = b[0]                               # refused
    return np.sum(A * A)


def _aug_param(p, q):
    p += q                                    # refused
    return p * 2.0


def _rebind_param_write(p, q):
    p = p[0]
    p[1] = q[0]                               # refused
    return p * 2.0


def _write_param(p, q):
    p[0, 0] = q[0]                            # refused
    return q * 1.0


def helper_augments_argument(a, b):           # wrong before: `p += q` changes the caller's A
    A = a * 1.0
    B = _aug_param(A, b)
    return np.sum(A * A) + np.sum(B)


def helper_writes_view_of_argument(a, b):     # wrong before (the helper's `p` was renamed)
    A = a * 1.0
    B = _rebind_param_write(A, b)
    return np.sum(A * A) + np.sum(B)


def helper_writes_argument_view(a, b):
    A = a * 1.0
    B = _write_param(A.T, b)
    return np.sum(A * A) + np.sum(B)


def out_argument(a, b):
    A = a * 1.0
    r = np.multiply(b, 2.0, out=A[0])         # refused
    return np.sum(A * A) + np.sum(r)


def out_argument_self(a, b):
    A = a * 1.0
    r = np.sin(A, out=A)                      # refused
    return np.sum(A * A) + np.sum(r)


def copyto_view(a, b):
    A = a * 1.0
    np.copyto(A[0], b * 2.0)                  # refused
    return np.sum(A * A)


def flat_write(a, b):
    A = a * 1.0
    A.flat[1] = b[0]                          # refused
    return np.sum(A * A)


def flat_view(a, b):
    A = a * 1.0
    r = A.flat                                # refused
    r[1] = b[0]
    return np.sum(A * A)


def item_of_item(a, b):
    A = a * 1.0
    rows = [A[0], A[1]]
    rows[0][1] = 5.0 * b[0]                   # refused
    return np.sum(A * A) + np.sum(np.sin(rows[0]))


def list_item_augmented(a, b):
    A = a * 1.0
    rows = [A[0], A[1]]
    rows[0] += b                              # refused
    return np.sum(A * A)


def list_item_replaced(a, b):                 # a raw TypeError before
    hs = [a[0] * 1.0, a[1] * 1.0]
    hs[0] = b * 2.0                           # refused
    return np.sum(np.stack(hs) ** 2)


REFUSED = [tuple_helper_t, tuple_helper_row, tuple_helper_second, tuple_helper_argument,
           tuple_helper_nested, tuple_helper_held, tuple_helper_branch, helper_appended_rows,
           helper_pytree, helper_view_in_loop, list_item, dict_item, namedtuple_item,
           loop_over_list, loop_over_tuple, loop_zip_lists, loop_enumerate_list, loop_comprehension,
           loop_list_of_array, unpack_literal, unpack_tuple_name, unpack_new_arrays_then_read,
           unpack_rows, unpack_split, swapped_view, view_of_itself, augmented_loop_rows,
           augmented_transpose, ellipsis_into_view, array_copy_false, asarray_view,
           view_of_view_of_view, helper_augments_argument, helper_writes_view_of_argument,
           helper_writes_argument_view, out_argument, out_argument_self, copyto_view, flat_write,
           flat_view, item_of_item, list_item_augmented, list_item_replaced]

# what the message says, beyond the line: the base and the view where the fence names them
MESSAGES = {
    tuple_helper_t: "view of `A`: `r` is a view of `A` (_pair_t() returns a view of its argument)",
    tuple_helper_row: "view of `A`", tuple_helper_second: "view of `A`",
    tuple_helper_argument: "view of `a`", tuple_helper_nested: "view of `A`",
    tuple_helper_held: "view of `A`", tuple_helper_branch: "view of `A`",
    helper_appended_rows: "view of `A`", helper_pytree: "view of `A`",
    helper_view_in_loop: "view of `A`", list_item: "view of `A`", dict_item: "view of `W`",
    namedtuple_item: "view of `A`", loop_over_list: "view of `A`", loop_over_tuple: "view of `A`",
    loop_zip_lists: "view of `A`", loop_enumerate_list: "view of `A`",
    loop_comprehension: "view of `A`", loop_list_of_array: "view of `A`",
    unpack_literal: "view of `A`", unpack_tuple_name: "view of `A`",
    unpack_new_arrays_then_read: "view of `t`: `p` is a view of `t` (unpacked from it)",
    unpack_rows: "view of `A`: `p` is a view of `A` (unpacked from it)",
    unpack_split: "view of `A`: `p` is a view of `A` (np.split)", swapped_view: "view of `A`",
    view_of_itself: "view of `A`", augmented_loop_rows: "view of `A`",
    augmented_transpose: "view of `A`", ellipsis_into_view: "view of `A`",
    array_copy_false: "view of `A`", asarray_view: "view of `A`",
    view_of_view_of_view: "view of `s`",
    helper_augments_argument: "helper _aug_param writes into its argument 'p'",
    helper_writes_view_of_argument: "writes into a view of `p`",
    helper_writes_argument_view: "writes into its argument 'p'",
    out_argument: "(`out=`)", out_argument_self: "(`out=`)",
    copyto_view: "calls for side effects are not supported", flat_write: "cannot assign",
    flat_view: "`.flat` is not supported", item_of_item: "cannot assign",
    list_item_augmented: "changes an item of the list or tuple `rows`",
    list_item_replaced: "changes an item of the list or tuple `hs`",
}


def _refused_line(f):
    """The file line marked `# refused` in ``f`` or in the helper it calls."""
    for g in [f] + [v for v in f.__globals__.values() if inspect.isfunction(v) and
                    v.__name__ in f.__code__.co_names]:
        lines, first = inspect.getsourcelines(g)
        for k, text in enumerate(lines):
            if text.rstrip().endswith("# refused"):
                return first + k
    raise AssertionError(f"no `# refused` line in {f.__name__}")


@pytest.mark.parametrize("f", REFUSED, ids=lambda f: f.__name__)
def test_write_through_an_alias_is_refused(f):
    a, b = _args()
    with pytest.raises(srcgrad.SrcgradError) as info:
        srcgrad.grad(f, wrt=(0, 1), target="python")(a, b)
    message = str(info.value)
    assert f"test_view_aliases.py:{_refused_line(f)}" in message, message
    assert MESSAGES[f] in message, message


def test_every_refused_program_really_aliases():
    # the refusals are not about programs NumPy runs without aliasing: in each one the write
    # reaches another array (the base, a list item or the caller's array), so the NumPy value
    # differs from the program with the write's target copied first; checked on one of each kind
    a, b = _args()
    A = a * 1.0
    r, s = _pair_t(A, b)
    r[0, 0] = 7.0
    assert A[0, 0] == 7.0
    A = a * 1.0
    p, q = A
    p[0] = 7.0
    assert A[0, 0] == 7.0
    A = a * 1.0
    _aug_param(A, b)
    assert np.array_equal(A, a + b)


@pytest.mark.parametrize("f", [tuple_helper_t, loop_over_list, unpack_split, augmented_loop_rows,
                               helper_augments_argument], ids=lambda f: f.__name__)
def test_refused_on_cpu_and_in_forward_mode(f):
    # the fence runs before code generation: the same error, nothing compiled
    a, b = _args()
    with pytest.raises(srcgrad.SrcgradError, match=f"test_view_aliases.py:{_refused_line(f)}"):
        srcgrad.grad(f, wrt=(0, 1), target="cpu")(a, b)
    with pytest.raises(srcgrad.SrcgradError, match=f"test_view_aliases.py:{_refused_line(f)}"):
        srcgrad.jvp(f, wrt=0, target="python")(a, b, np.ones((2, 3)))


# -- still accepted and checked against finite differences ----------------------------------------

def _fresh_pair(p, q):
    return p * 2.0, q * 3.0


def _copied(p, q):
    p = p.copy()                  # a copy first: writing into it leaves the caller's array alone
    p[0, 0] = q[0] * p[1, 1]
    return p


def _scaled_sum(p, s):
    s += 1.0                      # a float parameter: rebinding, not a write
    return p * s


def fresh_pair(a, b):
    r, s = _fresh_pair(a, b)       # new arrays from the helper: writing into them is fine
    r[0, 0] = s[1] * 2.0
    return np.sum(r * r) + np.sum(np.sin(s))


def flatten_copy(a, b):           # flatten copies (it was rewritten to a ravel view: wrong before)
    A = a * 1.0
    r = A.flatten()
    r[0] = b[0]
    return np.sum(A * A) + np.sum(np.sin(r))


def read_only_views(a, b):
    A = a * 1.0
    r, s = _pair_t(A, b)                       # views, only read
    rows = [A[0], A[1]]
    p, q = np.split(A, 2)
    total = np.sum(r * r) + np.sum(s * rows[1])
    for row in [A[0], A[1]]:
        total = total + np.sum(np.sin(row) * b)
    u, v = A
    d = {"w": A.T}
    return total + np.sum(p * q) + np.sum(u * v) + np.sum(d["w"] ** 3)


def helpers_and_scalars(a, b):
    x, y, z = b                                # floats unpacked from an array
    x += 1.0
    B = _copied(a, b)
    C = _scaled_sum(a, y)
    return np.sum(B * C) + x * z + np.sum(a * a)


def copies_written(a, b):
    A = a * 1.0
    rows = [A[0].copy(), A[1].copy()]
    p, q = _pair_t(A.copy(), b)
    p[0, 0] = b[0] * b[1]
    total = np.sum(p * p)
    for i, row in enumerate(rows):
        h, c = _fresh_pair(row, b)            # new arrays each iteration
        h[0] = c[i] * 2.0
        total = total + np.sum(h * row)
    return total + np.sum(A * A)


ACCEPTED = [fresh_pair, flatten_copy, read_only_views, helpers_and_scalars, copies_written]


@pytest.mark.parametrize("f", ACCEPTED, ids=lambda f: f.__name__)
def test_accepted_programs_match_fd(f):
    check_grad(f, _args(), wrt=(0, 1), target="python")


def test_flatten_copy_cpu():
    # flatten's copy is the one construct here whose generated code changed (a helper returning a
    # tuple of new arrays is compiled in test_view_writes.py); the rest only pass the fence,
    # which has no target
    check_grad(flatten_copy, _args(), wrt=(0, 1), target="cpu")
