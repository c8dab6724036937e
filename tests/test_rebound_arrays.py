"""Arrays rebound inside loops (issue 15, section 3): ``h = np.tanh(h @ W + x[t])``.

The forward sweep keeps a snapshot of the overwritten array (one copy per overwrite) and the
reverse sweep pops it back. Every program is checked against central finite differences in
float64 on both targets (python for breadth, cpu for a representative subset).
"""
import inspect

import numpy as np
import pytest

import srcgrad
from srcgrad import transform
from srcgrad.backends import backend

from conftest import check_grad

CPU = pytest.param("cpu", id="cpu")
# compiled variants another default cpu test already covers (the same snapshot path): slow only
SLOW_CPU = pytest.param("cpu", marks=pytest.mark.slow, id="cpu")


# -- programs as people write them --------------------------------------------------------------

def rnn(W, U, b, x, h0):
    h = h0
    for t in range(x.shape[0]):
        h = np.tanh(h @ W + x[t] @ U + b)
    return np.sum(h * h)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def lstm(W, b, x, h0, c0):
    n = h0.shape[0]
    h = h0
    c = c0
    for t in range(x.shape[0]):
        z = np.concatenate((x[t], h)) @ W + b
        i = sigmoid(z[:n])
        f = sigmoid(z[n:2 * n])
        o = sigmoid(z[2 * n:3 * n])
        g = np.tanh(z[3 * n:])
        c = f * c + i * g
        h = o * np.tanh(c)
    return np.sum(h * h) + np.sum(c)


def lstm_cell(W, b, x, h, c):
    n = h.shape[0]
    z = np.concatenate((x, h)) @ W + b
    c = sigmoid(z[n:2 * n]) * c + sigmoid(z[:n]) * np.tanh(z[3 * n:])
    h = sigmoid(z[2 * n:3 * n]) * np.tanh(c)
    return h, c


def lstm_with_cell_helper(W, b, x, h0, c0):
    h, c = h0, c0
    for t in range(x.shape[0]):
        h, c = lstm_cell(W, b, x[t], h, c)
    return np.sum(h * h) + np.sum(c)


def power_iteration(A, p0, iterations):
    p = p0
    for k in range(iterations):
        p = A @ p
        p = p / np.sqrt(np.sum(p * p))
    return p @ (A @ p)


def lap(u):
    out = np.zeros_like(u)
    out[1:-1] = u[:-2] - 2.0 * u[1:-1] + u[2:]
    return out


def heat(u0, dt, steps):
    u = u0.copy()
    for s in range(steps):
        u = u + dt * lap(u)
    return np.sum(u * u * u)


def lap2(u):
    out = np.zeros_like(u)
    out[1:-1, 1:-1] = u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4.0 * u[1:-1, 1:-1]
    return out


def heat2d(u0, k, steps):
    u = u0
    for s in range(steps):
        u = u + k * lap2(u)
        u = u * (1.0 - 0.01 * u)
    return np.sum(u * u)


def rnn_while(W, h0, n):
    h = h0
    k = 0
    while k < n:
        h = np.sin(h @ W)
        k += 1
    return np.sum(h)


def shrink_until(a, h0, tol):
    """A data-dependent trip count: iterate until the state is small."""
    h = h0
    while np.sum(h * h) > tol:
        h = h * a
    return np.sum(np.exp(h))


def nested(W, u0, outer, inner):
    u = u0
    for i in range(outer):
        u = u * 0.9
        for j in range(inner):
            u = np.tanh(W @ u) + u
    return np.sum(u * u)


def for_then_while(W, h0, n):
    h = h0
    for i in range(n):
        h = np.tanh(W @ h)
        k = 0
        while k < 2:
            h = np.sin(h) + h
            k += 1
    return np.sum(h * h)


def while_then_for(W, h0, n):
    h = h0
    k = 0
    while k < n:
        for i in range(2):
            h = np.tanh(W @ h) * h
        h = h * 0.9
        k += 1
    return np.sum(h * h)


def rebound_in_a_branch(W, h0, x):
    """Two snapshot sites per iteration, one of them conditional: the buffer is an upper bound."""
    h = h0
    for t in range(x.shape[0]):
        if x[t, 0] > 0.0:
            h = np.tanh(W @ h + x[t])
        h = np.sin(h) * h
    return np.sum(h)


def with_break(W, x, h0, limit):
    h = h0
    for t in range(x.shape[0]):
        h = np.tanh(h @ W + x[t])
        if np.sum(h) > limit:
            break
    return np.sum(h * h)


def with_continue(W, x, h0):
    h = h0
    for t in range(x.shape[0]):
        if t % 2 == 1:
            continue
        h = np.tanh(h @ W + x[t])
    return np.sum(h * h)


def first_assigned_in_loop(x, n):
    """`z` has no value before the loop: the first snapshot is a placeholder, never read."""
    s = 0.0
    for i in range(n):
        z = x * (i + 1.0)
        z = np.tanh(z)
        s = s + np.sum(z * x)
    return s


def first_assigned_in_while(x, n):
    s = 0.0
    k = 0
    while k < n:
        z = x * (k + 1.0)
        z = np.tanh(z)
        s = s + np.sum(z * x)
        k += 1
    return s


def advance(u, dt, n):
    for i in range(n):
        u = u + dt * lap(u)
    return u


def stepped(u0, dt):
    """A helper that rebinds its argument in a loop, called twice; a rebinding between the calls."""
    u = advance(u0, dt, 3)
    u = np.tanh(u)
    u = advance(u, dt, 2)
    return np.sum(u * u * u)


def dynamics(W, y):
    return np.tanh(W @ y)


def rk4(y0, W, dt, n):
    y = y0
    for i in range(n):
        k1 = dynamics(W, y)
        k2 = dynamics(W, y + 0.5 * dt * k1)
        k3 = dynamics(W, y + 0.5 * dt * k2)
        k4 = dynamics(W, y + dt * k3)
        y = y + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return np.sum(y * y)


def rebound_twice(x):
    """Outside loops too: an array rebound where the reverse sweep needs both values."""
    y = np.tanh(x)
    y = np.tanh(y * x)
    return np.sum(y)


def growing(u, x):
    for i in range(3):
        u = np.concatenate((u, x * u[0]))
    return np.sum(u * u)


def long_rnn(W, h0, steps):
    h = h0
    for t in range(steps):
        h = np.tanh(h @ W)
    return np.sum(h)


# -- tests --------------------------------------------------------------------------------------

def rand(rng, *shape, scale=1.0):
    return scale * rng.standard_normal(shape)


@pytest.mark.parametrize("target", ["python", SLOW_CPU])
def test_rnn(target):
    rng = np.random.default_rng(0)
    args = (rand(rng, 4, 4, scale=0.5), rand(rng, 3, 4, scale=0.5), rand(rng, 4), rand(rng, 5, 3),
            rand(rng, 4))
    check_grad(rnn, args, wrt=(0, 1, 2, 3, 4), target=target)


@pytest.mark.parametrize("target", ["python", SLOW_CPU])
def test_lstm_cell_states(target):
    rng = np.random.default_rng(1)
    n, m = 3, 2
    args = (rand(rng, m + n, 4 * n, scale=0.5), rand(rng, 4 * n), rand(rng, 5, m), rand(rng, n),
            rand(rng, n))
    check_grad(lstm, args, wrt=(0, 1, 2, 3, 4), target=target)


@pytest.mark.parametrize("target", ["python", CPU])
def test_lstm_cell_as_a_helper_returning_both_states(target):
    rng = np.random.default_rng(15)
    n, m = 3, 2
    args = (rand(rng, m + n, 4 * n, scale=0.5), rand(rng, 4 * n), rand(rng, 4, m), rand(rng, n),
            rand(rng, n))
    check_grad(lstm_with_cell_helper, args, wrt=(0, 1, 2, 3, 4), target=target)


@pytest.mark.parametrize("target", ["python", CPU])
def test_power_iteration(target):
    rng = np.random.default_rng(2)
    B = rand(rng, 4, 4)
    args = (B @ B.T + np.eye(4), rand(rng, 4), 6)
    check_grad(power_iteration, args, wrt=(0, 1), target=target)


@pytest.mark.parametrize("target", ["python", CPU])
def test_explicit_stencil_1d(target):
    rng = np.random.default_rng(3)
    check_grad(heat, (rng.random(8), 0.2, 5), wrt=(0, 1), target=target)


@pytest.mark.parametrize("target", ["python", SLOW_CPU])
def test_explicit_stencil_2d(target):
    """(cpu: slow; the 1-d stencil covers the same compiled path by default)"""
    rng = np.random.default_rng(4)
    check_grad(heat2d, (rng.random((5, 6)), 0.15, 4), wrt=(0, 1), target=target)


@pytest.mark.parametrize("target", ["python", SLOW_CPU])
def test_while_loop(target):
    rng = np.random.default_rng(5)
    check_grad(rnn_while, (rand(rng, 3, 3), rand(rng, 3), 4), wrt=(0, 1), target=target)


def test_while_loop_with_data_dependent_trip_count():
    rng = np.random.default_rng(6)
    a, h0 = 0.3 + 0.4 * rng.random(3), rng.random(3) + 1.0
    grads = check_grad(shrink_until, (a, h0, 1e-3), wrt=(0, 1), target="python")
    trips = 0
    h = h0
    while np.sum(h * h) > 1e-3:
        h, trips = h * a, trips + 1
    assert trips > 3 and np.all(np.isfinite(grads[0]))     # the loop really ran several times


@pytest.mark.parametrize("target", ["python", CPU])
def test_nested_loops(target):
    rng = np.random.default_rng(7)
    check_grad(nested, (rand(rng, 3, 3, scale=0.4), rand(rng, 3), 3, 2), wrt=(0, 1), target=target)


@pytest.mark.parametrize("f", [for_then_while, while_then_for])
def test_while_and_for_loops_inside_each_other(f):
    rng = np.random.default_rng(20)
    check_grad(f, (rand(rng, 3, 3, scale=0.5), rand(rng, 3), 3), wrt=(0, 1), target="python")


@pytest.mark.parametrize("target", ["python", CPU])
def test_rebound_in_a_branch(target):
    rng = np.random.default_rng(21)
    x = rand(rng, 6, 3)
    assert 0 < np.sum(x[:, 0] > 0) < 6
    check_grad(rebound_in_a_branch, (rand(rng, 3, 3, scale=0.5), rand(rng, 3), x), wrt=(0, 1, 2),
               target=target)


@pytest.mark.parametrize("target", ["python", CPU])
def test_break(target):
    rng = np.random.default_rng(8)
    W, x, h0 = rand(rng, 3, 3, scale=0.5), rand(rng, 6, 3), rand(rng, 3)
    # the break happens after a few steps, far from the threshold (a locally constant trip count)
    h, sums = h0, []
    for t in range(6):
        h = np.tanh(h @ W + x[t])
        sums.append(np.sum(h))
    limit = sorted(sums[:4])[-1] - 0.05
    stop = next(t for t, s in enumerate(sums) if s > limit)
    assert stop < 5 and min(abs(s - limit) for s in sums[:stop + 1]) > 1e-3
    check_grad(with_break, (W, x, h0, limit), wrt=(0, 1, 2), target=target)


def test_continue():
    rng = np.random.default_rng(9)
    check_grad(with_continue, (rand(rng, 3, 3, scale=0.5), rand(rng, 5, 3), rand(rng, 3)),
               wrt=(0, 1, 2), target="python")


@pytest.mark.parametrize("target", ["python", SLOW_CPU])
def test_array_first_assigned_inside_the_loop(target):
    rng = np.random.default_rng(10)
    check_grad(first_assigned_in_loop, (rand(rng, 4), 3), wrt=0, target=target)


def test_helper_rebinding_its_argument_in_a_loop():
    rng = np.random.default_rng(18)
    check_grad(stepped, (rng.random(7), 0.2), wrt=(0, 1), target="python")


def test_rk4_on_a_vector_state():
    rng = np.random.default_rng(19)
    check_grad(rk4, (rng.random(3), rand(rng, 3, 3), 0.1, 5), wrt=(0, 1, 2), target="python")


def rnn_state(W, h0):
    h = h0
    for t in range(3):
        h = np.tanh(W @ h)
    return np.sum(h * h)


def test_hvp_through_a_rebound_array():
    """hvp is reverse mode over the tangent code, where `h` and its tangent are both rebound."""
    rng = np.random.default_rng(22)
    W, h0, v = rand(rng, 3, 3, scale=0.5), rand(rng, 3), rand(rng, 3)
    hv = srcgrad.hvp(rnn_state, wrt=1, target="python")(W, h0, v)
    g = srcgrad.grad(rnn_state, wrt=1, target="python")
    eps = 1e-6
    np.testing.assert_allclose(hv, (g(W, h0 + eps * v) - g(W, h0 - eps * v)) / (2 * eps), rtol=1e-6,
                               atol=1e-8)


def test_array_rebound_twice_outside_loops():
    rng = np.random.default_rng(11)
    check_grad(rebound_twice, (rand(rng, 5),), wrt=0, target="python")


@pytest.mark.parametrize("target", ["python", CPU])
def test_float32(target):
    rng = np.random.default_rng(12)
    args64 = (rand(rng, 4, 4, scale=0.5), rand(rng, 3, 4, scale=0.5), rand(rng, 4), rand(rng, 5, 3),
              rand(rng, 4))
    args32 = tuple(a.astype(np.float32) for a in args64)
    g32 = srcgrad.grad(rnn, wrt=(0, 4), target=target)(*args32)
    g64 = srcgrad.grad(rnn, wrt=(0, 4), target="python")(*args64)
    for a, b in zip(g32, g64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("target", ["python", CPU])
def test_float32_list_of_snapshots_with_a_placeholder(target):
    """A while loop (the list) and a variable first assigned inside it (a float32 placeholder)."""
    x = np.random.default_rng(16).standard_normal(4)
    g32 = srcgrad.grad(first_assigned_in_while, target=target)(x.astype(np.float32), 3)
    assert g32.dtype == np.float32
    g64 = check_grad(first_assigned_in_while, (x, 3), target="python")
    np.testing.assert_allclose(g32, g64, rtol=1e-5, atol=1e-6)


def test_the_adjoint_marks_the_snapshot():
    rng = np.random.default_rng(13)
    args = (rand(rng, 4, 4), rand(rng, 3, 4), rand(rng, 4), rand(rng, 5, 3), rand(rng, 4))
    source = srcgrad.grad(rnn, target="python").source_for(*args)
    line = inspect.getsourcelines(rnn)[1] + 3
    assert f"# line {line}: snapshot: keep `h` before it is overwritten" in source
    # a for loop: one buffer allocated at loop entry; a while loop: a list
    assert "_h_snapshots1 = snapshot_buffer(h, range_length(0, _t2, 1))" in source
    assert "h = snapshot_at(_h_snapshots1, _h_top1, h)" in source
    source = srcgrad.grad(rnn_while, target="python").source_for(args[0][:3, :3], args[2][:3], 3)
    assert "_h_snapshots1.append(h.copy())" in source and "pop_snapshot(" in source


@pytest.mark.parametrize("target", ["python", SLOW_CPU])
def test_buffer_equals_list(target, monkeypatch, tmp_path):
    """The preallocated buffer gives the gradient the list of snapshots gives, bit for bit."""
    rng = np.random.default_rng(14)
    B = rand(rng, 4, 4)
    args = (B @ B.T + np.eye(4), rand(rng, 4), 5)
    results = []
    for buffered in (True, False):
        monkeypatch.setattr(transform, "SNAPSHOT_BUFFERS", buffered)
        monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / str(buffered)))
        g = srcgrad.value_and_grad(power_iteration, wrt=(0, 1), target=target)
        assert ("snapshot_buffer(" in g.source_for(*args)) == buffered
        results.append(g(*args))
    (v1, (a1, p1)), (v0, (a0, p0)) = results
    assert v1 == v0 and np.array_equal(a1, a0) and np.array_equal(p1, p0)


@pytest.mark.parametrize("target", ["python", CPU])
def test_changing_shape_is_refused(target):
    line = inspect.getsourcelines(growing)[1] + 2
    with pytest.raises(srcgrad.ShapeError, match=rf"line {line} in growing.*changes shape"):
        srcgrad.grad(growing, wrt=(0, 1), target=target)(np.ones(3), np.ones(2))


def test_fused_equals_unfused(monkeypatch, tmp_path):
    """cpu loop fusion (backends/cpu/fusion.py) around snapshotted loops changes no result: the stencil's
    gradient with fusion on and off."""
    rng = np.random.default_rng(17)
    args = (rng.random(9), 0.2, 4)
    results = []
    for fused in (True, False):
        monkeypatch.setattr(backend("cpu"), "fuse", fused)
        monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / str(fused)))
        g = srcgrad.value_and_grad(heat, wrt=(0, 1), target="cpu")
        assert ("loop fusion (cpu target)" in g.source_for(*args)) == fused
        results.append(g(*args))
    (v1, (u1, d1)), (v0, (u0, d0)) = results
    np.testing.assert_allclose(v1, v0, rtol=1e-13)
    np.testing.assert_allclose(u1, u0, rtol=1e-13)
    np.testing.assert_allclose(d1, d0, rtol=1e-13)


@pytest.mark.parametrize("target", ["python", CPU])
def test_snapshots_count_against_the_tape_limit(target, monkeypatch):
    """SRCGRAD_MAX_TAPE_BYTES, read at run time as for the tape of scalars."""
    monkeypatch.setenv("SRCGRAD_MAX_TAPE_BYTES", str(64 * 1024))
    g = srcgrad.grad(long_rnn, wrt=0, target=target)
    W, h0 = 0.1 * np.eye(16), np.ones(16)
    assert np.isfinite(g(W, h0, 100)).all()           # 100 snapshots of 128 bytes
    with pytest.raises(MemoryError, match="SRCGRAD_MAX_TAPE_BYTES"):
        g(W, h0, 1000)                                # the buffer, refused at loop entry
    g = srcgrad.grad(rnn_while, wrt=0, target=target)
    assert np.isfinite(g(W, h0, 100)).all()
    with pytest.raises(MemoryError, match="SRCGRAD_MAX_TAPE_BYTES"):
        g(W, h0, 1000)                                # the list of a while loop
