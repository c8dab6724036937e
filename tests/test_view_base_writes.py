"""Writes into an array while a name still holds a view of it (the other direction of
tests/test_view_writes.py): NumPy's view sees the write, srcgrad's sweeps treated the view as a
value of its own, so reading the view after the write gave a wrong gradient with no error (each
`# wrong before` program below disagreed with finite differences). Such a read is refused now,
naming the write's line; programs whose views are read only before the write, are numbers, or
are rebound are still accepted and checked against finite differences."""
import numpy as np
import pytest

import srcgrad
from conftest import check_grad


def second_name_then_fill(x):                 # wrong before: 0.0 against 42
    traj = np.zeros(4)
    alias = traj
    for i in range(4):
        traj[i] = x * (i + 1.0)               # refused
    return np.sum(alias * alias)


def slice_then_write(x):                      # wrong before
    a = x * 1.0
    v = a[1:]
    a[1] = 3.0 * a[0]                         # refused
    return np.sum(v * v)


def transpose_then_write(x):                  # wrong before
    a = x * 1.0
    t = a.T
    a[0, 0] = np.sin(a[1, 1])                 # refused
    return np.sum(t * a)


def augmented_base(x):
    a = x * 1.0
    r = a.reshape(2, 2)
    a += 1.0                                  # refused
    return np.sum(r * r)


def list_of_rows_then_write(x):
    a = x * 1.0
    rows = [a[0], a[1]]
    a[0, 1] = 2.0                             # refused
    return np.sum(rows[0] * rows[1])


def view_on_one_branch(x):
    a = x * 1.0
    v = a[1:]
    if x[0] > 0.0:
        v = v * 1.0
    a[1] = 3.0                                # refused
    return np.sum(v)


REFUSED = [(second_name_then_fill, 0.7), (slice_then_write, np.array([0.5, 1.5, 2.0])),
           (transpose_then_write, np.arange(4.0).reshape(2, 2) + 0.3),
           (augmented_base, np.array([0.5, 1.5, 2.0, -1.0])),
           (list_of_rows_then_write, np.arange(4.0).reshape(2, 2) + 0.3),
           (view_on_one_branch, np.array([0.5, 1.5, 2.0]))]


@pytest.mark.parametrize("f, x", REFUSED, ids=[f.__name__ for f, _ in REFUSED])
def test_read_of_a_view_after_a_write_into_its_base_is_refused(f, x):
    with pytest.raises(srcgrad.SrcgradError) as info:
        srcgrad.grad(f, target="python")(x)
    message = str(info.value)
    import inspect
    lines, first = inspect.getsourcelines(f)
    line = first + next(k for k, text in enumerate(lines) if text.rstrip().endswith("# refused"))
    assert f"test_view_base_writes.py:{line}" in message
    assert "is read after the write" in message and ".copy()" in message


def test_refused_on_cpu_before_compiling():
    with pytest.raises(srcgrad.SrcgradError, match="is read after the write"):
        srcgrad.grad(slice_then_write, target="cpu")(np.array([0.5, 1.5, 2.0]))


def rnn_rows(W, h0):
    """A trajectory filled row by row, each step reading the row before: the view `h` is read
    before the write into `H` and rebound before its next read."""
    H = np.zeros((6, h0.shape[0]))
    H[0] = h0
    for t in range(5):
        h = H[t]
        H[t + 1] = np.tanh(W @ h)
    return np.sum(H[-1] ** 2)


def number_taken_out(x):
    a = x * 1.0
    x0 = a[0]                 # a 1-d array's item is a number: a copy
    a[1] = 2.0 * x0
    return np.sum(a) + x0


def view_of_a_rebound_name(x):
    a = x * 1.0
    v = a[1:]
    a = a * 2.0               # `a` names a new array: the write below does not reach `v`
    a[0] = 5.0
    return np.sum(v * v) + np.sum(a)


def copy_before_write(x):
    a = x * 1.0
    v = a[1:].copy()
    a[1] = 3.0 * a[0]
    return np.sum(v * v) + np.sum(a * a)


ACCEPTED = [(rnn_rows, (np.random.default_rng(0).normal(size=(3, 3)) * 0.5,
                        np.array([0.1, -0.2, 0.3]))),
            (number_taken_out, (np.array([0.5, 1.5, 2.0]),)),
            (view_of_a_rebound_name, (np.array([0.5, 1.5, 2.0]),)),
            (copy_before_write, (np.array([0.5, 1.5, 2.0]),))]


@pytest.mark.parametrize("f, args", ACCEPTED, ids=[f.__name__ for f, _ in ACCEPTED])
def test_views_read_before_the_write_or_not_views_are_accepted(f, args):
    check_grad(f, args, wrt=tuple(range(len(args))) if len(args) > 1 else 0, target="python")
