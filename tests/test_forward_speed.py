"""Forward mode's faster paths give the same answers as the plain ones: hvp's gradient-only
adjoint (no value, dead forward sweep removed) against the full adjoint of the same tangent
function and against finite differences of the gradient; the liveness pass on its own."""
import ast
import math

import numpy as np
import pytest

import srcgrad
from srcgrad.api import GradFunction
from srcgrad.forward import remove_dead_code
from test_forward import HVP_PROGRAMS, check_hvp, direction_like, _copy64


def _plain_hvp(h, args, vs):
    """H·v by the unoptimized path: the ordinary (value and gradient) adjoint of hvp's tangent
    function."""
    values = tuple(_copy64(a) for a in args)
    kinds = h.kinds_of(values)
    inner = h.inner(kinds, "float64")
    plain = GradFunction(inner.func, wrt=h.wrt_indices[0] if h.single else tuple(h.wrt_indices),
                         target=h.target)
    return plain(*values, *vs)


def _compare(f, args, wrt, target):
    rng = np.random.default_rng(3)
    indices = (wrt,) if isinstance(wrt, int) else wrt
    vs = [direction_like(args[i], rng) for i in indices]
    h = srcgrad.hvp(f, wrt=wrt, target=target)
    got = h(*[_copy64(a) for a in args], vs[0] if isinstance(wrt, int) else tuple(vs))
    assert h._last.gradient_only is not None          # the fast path ran
    want = _plain_hvp(h, args, vs)
    for g, w in zip((got,) if isinstance(wrt, int) else got, (want,) if isinstance(wrt, int) else want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("f,make,wrt", HVP_PROGRAMS[:12], ids=[f"{f.__name__}-{w}" for f, _, w in HVP_PROGRAMS[:12]])
def test_gradient_only_matches_full_adjoint_python(f, make, wrt):
    _compare(f, make(np.random.default_rng(5)), wrt, "python")


def rosenbrock(x):
    s = 0.0
    for i in range(x.shape[0] - 1):
        a = x[i + 1] - x[i] * x[i]
        b = 1.0 - x[i]
        s += 100.0 * a * a + b * b
    return s


def lorenz(p, u0, dt, nsteps):
    x, y, z = u0[0], u0[1], u0[2]
    J = 0.0
    for t in range(nsteps):
        dx = p[0] * (y - x)
        dy = x * (p[1] - z) - y
        dz = x * y - p[2] * z
        x = x + dt * dx
        y = y + dt * dy
        z = z + dt * dz
        J += dt * (x * x + y * y + z * z)
    return J


def buffers(x, n):
    """A tape-free loop that writes an array (kept by the liveness pass) and a while loop."""
    buf = np.zeros(n)
    for i in range(n):
        buf[i] = math.sin(x[i]) * x[(i + 1) % n]
    s = 0.0
    k = 0
    while k < n:
        s += buf[k] * buf[k] + math.exp(x[k]) * buf[n - 1 - k]
        k += 1
    return s


@pytest.mark.parametrize("f,args,wrt", [
    (rosenbrock, (np.linspace(-0.5, 1.5, 7),), 0),
    (lorenz, (np.array([10.0, 28.0, 8.0 / 3.0]), np.array([1.0, 0.5, 0.2]), 0.01, 20), (0, 1)),
    (buffers, (np.linspace(0.1, 0.9, 5), 5), 0)], ids=["rosenbrock", "lorenz", "buffers"])
def test_gradient_only_cpu(f, args, wrt):
    check_hvp(f, args, wrt, "cpu")
    _compare(f, args, wrt, "cpu")


def test_tangent_function_has_no_dead_primal():
    h = srcgrad.hvp(rosenbrock, target="python")
    source = h.source_for(np.ones(4))
    tangent = source[source.index("def rosenbrock_jvp_tangent("):]
    tangent = tangent[:tangent.index("return")]
    assert "s = " not in tangent.replace("_dot_s = ", "")      # the value s: dead in the tangent
    assert "_dot_s" in tangent


def _dce(text, _unused=""):
    tree = ast.parse(text)
    return ast.unparse(ast.Module(body=remove_dead_code(tree.body), type_ignores=[]))


def test_liveness_pass():
    out = _dce("s = 0.0\nfor i in range(n):\n    s += x[i]\n    a[i] = s\nt = 1.0\nfor i in range(n):\n"
               "    t = t * x[i]\nwhile k < n:\n    u = k\n    k += 1\nreturn a\n", "")
    assert "a[i] = s" in out and "s += x[i]" in out        # feeds an array write: kept
    assert "t" not in out.replace("return", "")            # a dead loop-carried value: gone
    assert "while" not in out                              # its test's variable is dead too
    # a value read in a later iteration stays
    out = _dce("p = 0.0\nq = 0.0\nfor i in range(n):\n    q = p + 1.0\n    p = x[i]\nreturn q\n", "")
    assert "p = x[i]" in out
    # calls that may have effects stay; break is not modelled (nothing removed)
    out = _dce("r = push(tape, 1.0)\nd = 2.0\nreturn 0.0\n", "")
    assert "push" in out and "d = " not in out
    text = "d = 2.0\nfor i in range(n):\n    break\nreturn 0.0"
    assert _dce(text, "") == ast.unparse(ast.parse(text))
