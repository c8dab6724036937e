"""jvp's tangents of squares (srcgrad/forward_products.py): ``x * x`` gets ``x * dx * 2.0`` and
``u * v`` with ``u = c * v`` computed before gets ``(2 c) * v * dv``, instead of the product rule.
Checked: the generated source, the values against the product rule's (``SQUARES`` off, generated
into a cache directory of its own) and against central differences, on the python and cpu targets,
in float64 and float32, hvp included; and the products the rewrite must leave alone."""
import re

import numpy as np
import pytest

import srcgrad
import srcgrad.forward_products as fp
from test_forward import check_hvp, check_jvp, fd_jvp

SQUARE = re.compile(r"^\s+_dot\w* = (\w+) \* _dot_?\1 \* (?:np\.float32\()?2\.0\)?$", re.M)   # x * x
SCALED = re.compile(r"^\s+_dot\w* = (-?[\d.]+(?:e[+-]?\d+)?) \* (\w+) \* _dot_?\2$", re.M)   # c v v


def rosenbrock(x):
    s = 0.0
    for i in range(x.shape[0] - 1):
        a = x[i + 1] - x[i] * x[i]
        b = 1.0 - x[i]
        s += 100.0 * a * a + b * b
    return s


def array_squares(x, w):
    y = x * x                           # elementwise square of an array
    return np.sum(y * w) + np.sum(w * w) * x[0]


def not_squares(x, y):
    s = 0.0
    for i in range(x.shape[0]):
        a = x[i]
        b = y[i]
        p = a * b                       # two operands
        u = 3.0 * a
        a = a + b                       # v written between u = c * v and u * v
        q = u * a
        w = 2.0 * b
        r = w * a                       # u = c * w for another name than the other factor
        big = 1e300 * b
        t = big * b                     # 2 c does not fit a float32
        k = i * i                       # integers: no tangent
        s += p + q + r + 1e-300 * t + k
    return s


def _args(f, dtype=np.float64, n=7):
    rng = np.random.default_rng(3)
    if f is array_squares:
        return (rng.uniform(-1, 1, n).astype(dtype), rng.uniform(-1, 1, n).astype(dtype))
    if f is not_squares:
        return (rng.uniform(-1, 1, n).astype(dtype), rng.uniform(-1, 1, n).astype(dtype))
    return (rng.uniform(-1, 1, n).astype(dtype),)


def _directions(args, wrt):
    rng = np.random.default_rng(4)
    return tuple(rng.standard_normal(args[i].shape).astype(args[i].dtype) for i in wrt)


def _tangent(vs, wrt):
    return vs[0] if isinstance(wrt, int) else vs


def _plain(monkeypatch, tmp_path, make, *args):
    """``make()``'s result called on ``args`` with the product rule everywhere (SQUARES off), in a
    cache directory of its own (the module cache's key does not include the switch)."""
    with monkeypatch.context() as m:
        m.setattr(fp, "SQUARES", False)
        m.setenv("SRCGRAD_CACHE_DIR", str(tmp_path))
        return make()(*args)


def _jvp_source(f, args, wrt, target="python"):
    source = srcgrad.jvp(f, wrt=wrt, target=target).source_for(*args)
    return source.split("_jvp(")[1].split("\nreturn ")[0].split("\n# ")[0]


def test_sources():
    body = _jvp_source(rosenbrock, _args(rosenbrock), 0)
    assert {m.group(1) for m in SQUARE.finditer(body)} >= {"b"}      # b * b (and x[i] * x[i])
    assert len(SQUARE.findall(body)) == 2
    assert SCALED.findall(body) == [("200.0", "a")]                   # (100 a) * a
    body = _jvp_source(array_squares, _args(array_squares), (0, 1))
    assert len(SQUARE.findall(body)) == 2                             # x * x and w * w
    body = _jvp_source(not_squares, _args(not_squares), (0, 1))
    assert SQUARE.findall(body) == [] and SCALED.findall(body) == []
    assert "_dot_i" not in body and "_dot_k" not in body


# (not_squares in float64 only: its 1e300 is no float32 number)
@pytest.mark.parametrize("f,wrt,dtype", [(rosenbrock, 0, np.float64), (rosenbrock, 0, np.float32),
                                         (array_squares, (0, 1), np.float64),
                                         (array_squares, (0, 1), np.float32),
                                         (not_squares, (0, 1), np.float64)])
def test_jvp_matches_product_rule_python(f, wrt, dtype, monkeypatch, tmp_path):
    indices = (wrt,) if isinstance(wrt, int) else wrt
    args = _args(f, dtype)
    vs = _directions(args, indices)
    value, got = srcgrad.jvp(f, wrt=wrt, target="python")(*args, _tangent(vs, wrt))
    plain_value, want = _plain(monkeypatch, tmp_path, lambda: srcgrad.jvp(f, wrt=wrt, target="python"),
                               *args, _tangent(vs, wrt))
    assert value == plain_value
    if f is rosenbrock:
        # (2 c) v dv and the product rule's c dv v + (c v) dv round differently
        np.testing.assert_allclose(got, want, rtol=1e-12 if dtype == np.float64 else 1e-5)
    else:
        # x dx 2 is exactly dx x + x dx (and not_squares has no square)
        assert got == want
    expected = fd_jvp(f, args, indices, vs)
    np.testing.assert_allclose(got, expected, rtol=1e-6 if dtype == np.float64 else 2e-3)


def test_fd_and_hvp_python():
    for f, wrt in ((rosenbrock, 0), (array_squares, (0, 1)), (not_squares, (0, 1))):
        check_jvp(f, _args(f), wrt)
    check_hvp(rosenbrock, _args(rosenbrock), 0, "python")
    check_hvp(array_squares, _args(array_squares), (0, 1), "python")


def test_hvp_matches_product_rule_python(monkeypatch, tmp_path):
    for f, wrt in ((rosenbrock, 0), (array_squares, (0, 1))):
        indices = (wrt,) if isinstance(wrt, int) else wrt
        args = _args(f)
        vs = _directions(args, indices)
        got = srcgrad.hvp(f, wrt=wrt, target="python")(*args, _tangent(vs, wrt))
        want = _plain(monkeypatch, tmp_path, lambda: srcgrad.hvp(f, wrt=wrt, target="python"),
                      *args, _tangent(vs, wrt))
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cpu(dtype, monkeypatch, tmp_path):
    args = _args(rosenbrock, dtype, n=50)
    vs = _directions(args, (0,))
    jvp = srcgrad.jvp(rosenbrock, target="cpu")
    assert len(SQUARE.findall(jvp.source_for(*args))) == 2
    value, got = jvp(*args, vs[0])
    _, want = _plain(monkeypatch, tmp_path, lambda: srcgrad.jvp(rosenbrock, target="cpu"), *args, vs[0])
    np.testing.assert_allclose(got, want, rtol=1e-12 if dtype == np.float64 else 1e-5)
    np.testing.assert_allclose(got, fd_jvp(rosenbrock, args, (0,), vs),
                               rtol=1e-6 if dtype == np.float64 else 2e-3)
    np.testing.assert_allclose(value, rosenbrock(*args), rtol=1e-12 if dtype == np.float64 else 1e-6)
    if dtype == np.float64:
        check_hvp(rosenbrock, args, 0, "cpu")
