"""Vector (batched) forward mode: jacobian's jvp and hessian's forward-over-reverse sweeps take
BATCH directions at once (srcgrad.forward_batch). Each result equals the one-direction-per-sweep
result and central finite differences (python target for breadth, a cheap cpu subset); code
outside the batched subset falls back to the per-direction drivers, with the same answers."""
import math

import numpy as np
import pytest

import srcgrad
from srcgrad.forward_batch import BATCH
from test_forward import _copy64, fd_hessian, fd_jacobian, rosen


def ode_step(u, dt):
    """One explicit Euler step of a 1-d reaction-diffusion system: n states in, n out."""
    n = u.shape[0]
    out = np.empty(n)
    for i in range(n):
        left = u[i - 1] if i > 0 else 0.0
        right = u[i + 1] if i < n - 1 else 0.0
        out[i] = u[i] + dt * (left - 2.0 * u[i] + right) + dt * math.sin(u[i]) * u[i]
    return out


def grid_step(U, c):
    """A 2-d state, a while loop, a local array written by element."""
    V = np.zeros_like(U)
    W = U.copy()
    for i in range(U.shape[0]):
        j = 0
        while j < U.shape[1]:
            a = U[i, j]
            V[i, j] = math.exp(-a * a) * c + math.tanh(a) * W[(i + 1) % U.shape[0], j]
            j += 1
        W[i, 0] = W[i, 0] * 0.5
    return V


def smooth(x):
    s = 0.0
    for i in range(x.shape[0]):
        s += math.log(1.0 + x[i] * x[i]) * x[(i + 3) % x.shape[0]] + math.sin(x[i]) ** 2 / (2.0 + x[i] * x[i])
    return s


def curved(x):                          # a branch in the loop: its gradient code has tapes
    s = 0.0
    for i in range(x.shape[0]):
        if x[i] > 0.0:
            s += math.log(1.0 + x[i] * x[i]) * x[(i + 3) % x.shape[0]]
        else:
            s += math.sin(x[i]) ** 2 - x[i] / (2.0 + math.cos(x[i]))
    return s


def array_code(x, W):                   # array statements: not batched (per-direction fallback)
    return np.sin(W @ x) * x[0]


def _per_direction_jacobian(f, args, index):
    """Columns of the Jacobian by one jvp call per basis vector."""
    j = srcgrad.jvp(f, wrt=index, target="python")
    x = args[index]
    columns = []
    for k in range(x.size):
        e = np.zeros(x.size)
        e[k] = 1.0
        columns.append(np.ravel(j(*[_copy64(a) for a in args], e.reshape(x.shape))[1]))
    out = np.shape(f(*[_copy64(a) for a in args]))
    return np.stack(columns, axis=1).reshape(out + x.shape)


@pytest.mark.parametrize("f,make", [
    (ode_step, lambda r: (r.standard_normal(2 * BATCH + 3), 0.1)),      # two chunks and a partial one
    (ode_step, lambda r: (r.standard_normal(3), 0.1)),                  # fewer directions than BATCH
    (grid_step, lambda r: (r.standard_normal((3, 4)), 0.7)),
])
def test_batched_jacobian_python(f, make):
    args = make(np.random.default_rng(1))
    jac = srcgrad.jacobian(f, target="python")
    J = jac(*args)
    assert jac.last_mode == "forward"
    assert f"{f.__name__}_jvp_batch" in jac.source_for(*args)         # the batched sweeps ran
    np.testing.assert_allclose(J, _per_direction_jacobian(f, args, 0), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(J, fd_jacobian(f, args, 0), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("f,n", [(rosen, 2 * BATCH + 1), (smooth, 6)])
def test_batched_hessian_python(f, n):
    x = np.random.default_rng(2).uniform(-1, 1, n)
    hes = srcgrad.hessian(f, target="python")
    H = hes(x)
    assert hes.last_path == "batched"
    assert f"{f.__name__}_gradient_jvp_batch" in hes.source
    np.testing.assert_allclose(H, hes._by_columns((x,)), rtol=1e-12, atol=1e-12)     # per-column hvps
    np.testing.assert_allclose(H, fd_hessian(f, (x,), 0), rtol=1e-5, atol=1e-5)


def test_batched_hessian_float32_python():
    x = np.random.default_rng(3).uniform(-1, 1, 5).astype(np.float32)
    hes = srcgrad.hessian(smooth, target="python")
    H = hes(x)
    assert hes.last_path == "batched" and H.dtype == np.float32
    np.testing.assert_allclose(H, fd_hessian(smooth, (x.astype(np.float64),), 0), rtol=1e-3, atol=1e-3)


def test_outside_the_batched_subset_falls_back():
    rng = np.random.default_rng(4)
    x, W = rng.standard_normal(2), rng.standard_normal((4, 2))
    jac = srcgrad.jacobian(array_code, target="python")
    J = jac(x, W)
    source = jac.source_for(x, W)
    assert "_jvp_batch" not in source and "# one direction per sweep:" in source
    np.testing.assert_allclose(J, fd_jacobian(array_code, (x, W), 0), rtol=1e-6, atol=1e-7)

    def quad(X):                        # array code: the hessian sweeps one hvp per column
        return np.sum((X @ X.T) ** 2)
    X = rng.standard_normal((2, 3))
    for f, x in ((quad, X), (curved, rng.uniform(-1, 1, 7))):    # (curved: tapes in its gradient)
        hes = srcgrad.hessian(f, target="python")
        H = hes(x)
        assert hes.last_path == "hvp sweeps in one call"
        np.testing.assert_allclose(H, fd_hessian(f, (x,), 0), rtol=1e-5, atol=1e-5)


def test_batched_jacobian_cpu():
    u = np.random.default_rng(5).standard_normal(BATCH + 2)
    jac = srcgrad.jacobian(ode_step, target="cpu")
    np.testing.assert_allclose(jac(u, 0.1), fd_jacobian(ode_step, (u, 0.1), 0), rtol=1e-6, atol=1e-7)
    assert "ode_step_jvp_batch" in jac.source_for(u, 0.1)


# (compiles for ~40 s here: test_forward.py's test_hessian_rosenbrock[cpu] runs the same batched
# path by default)
@pytest.mark.slow
def test_batched_hessian_cpu():
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, BATCH + 3)
    hes = srcgrad.hessian(smooth, target="cpu")
    H = hes(x)
    assert hes.last_path == "batched"
    np.testing.assert_allclose(H, fd_hessian(smooth, (x,), 0), rtol=1e-5, atol=1e-5)


def mixed(x, p, s):
    t = 0.0
    for i in range(x.shape[0]):
        t += math.sin(x[i] * p[i % p.shape[0], i % 2]) * s + x[i] ** 2 * s * s
    return t


@pytest.mark.parametrize("wrt", [(0, 1, 2), (1, 2), 2])
def test_batched_hessian_blocks_python(wrt):
    rng = np.random.default_rng(6)
    args = (rng.standard_normal(BATCH + 3), rng.standard_normal((2, 2)), 0.7)
    hes = srcgrad.hessian(mixed, wrt=wrt, target="python")
    blocks = hes(*args)
    assert hes.last_path == "batched"
    want = hes._by_columns(args)                        # one hvp call per column
    indices = (wrt,) if isinstance(wrt, int) else wrt
    if isinstance(wrt, int):
        blocks, want = ((blocks,),), ((want,),)
    for i, row in enumerate(blocks):
        for j, block in enumerate(row):
            assert np.shape(block) == np.shape(args[indices[i]]) + np.shape(args[indices[j]])
            np.testing.assert_allclose(block, want[i][j], rtol=1e-12, atol=1e-12)
    # the diagonal blocks against central differences of the gradient
    for i, index in enumerate(indices):
        np.testing.assert_allclose(blocks[i][i], fd_hessian(mixed, args, index), rtol=1e-5, atol=1e-5)
