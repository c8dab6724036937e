"""CUDA map mode (``srcgrad.cuda.grad``): one thread per element, in Numba's CUDA simulator.

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda/test_map_mode.py

References: the same function differentiated by the ``python`` target element by element, and
closed forms (Black-Scholes delta and vega).  ``test_map_mode_ptx`` compiles the map-mode kernels
for sm_90 in a child process without the simulator (skipped where NVVM is missing; a failure under CI=true).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mission import missing  # noqa: E402

import srcgrad
import srcgrad.cuda

ROOT = Path(__file__).resolve().parents[2]

from benchmarks.lib.programs import call_price  # noqa: E402  (Black-Scholes, plain scalar code)


def branchy(x, y):
    if x > y:
        z = x * y + math.exp(-x)
    else:
        z = math.sin(x) + y * y
    if z > 1.0:
        return math.sqrt(z)
    return z * z


def rk4(y0, k, t1):
    """dy/dt = -k y^2 from 0 to t1, 12 RK4 steps (the loop tapes its overwritten values)."""
    n = 12
    h = t1 / n
    y = y0
    for i in range(n):
        k1 = -k * y * y
        k2 = -k * (y + 0.5 * h * k1) * (y + 0.5 * h * k1)
        k3 = -k * (y + 0.5 * h * k2) * (y + 0.5 * h * k2)
        k4 = -k * (y + h * k3) * (y + h * k3)
        y = y + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return y


def heron(a, x0):
    """sqrt(a) by a fixed-point (Newton) iteration: a while loop."""
    x = x0
    while abs(x * x - a) > 1e-9 * a:
        x = 0.5 * (x + a / x)
    return x


def _reference(func, wrt, *arrays, value=False):
    """The python target, element by element."""
    g = (srcgrad.value_and_grad if value else srcgrad.grad)(func, wrt=wrt, target="python")
    b = np.broadcast_arrays(*[np.asarray(a, dtype=np.float64) for a in arrays])
    shape = b[0].shape
    outs = [g(*[float(x[idx]) for x in b]) for idx in np.ndindex(shape)]
    if value:
        vals = np.array([o[0] for o in outs]).reshape(shape)
        grads = np.array([o[1] for o in outs]).reshape(shape + (-1,))
        return vals, [grads[..., j] for j in range(grads.shape[-1])]
    grads = np.array(outs).reshape(shape + (-1,))
    return [grads[..., j] for j in range(grads.shape[-1])]


def _options(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    S = rng.uniform(70, 130, n).astype(dtype)
    K = rng.uniform(80, 120, n).astype(dtype)
    T = rng.uniform(0.2, 2.0, n).astype(dtype)
    sigma = rng.uniform(0.1, 0.5, n).astype(dtype)
    return S, K, T, sigma


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_black_scholes_greeks(dtype):
    S, K, T, sigma = _options(9, dtype)
    r = 0.03
    g = srcgrad.cuda.grad(call_price, wrt=(0, 1, 2, 3, 4))
    dS, dK, dT, dr, dsigma = g(S, K, T, r, sigma)
    for out in (dS, dK, dT, dr, dsigma):
        assert isinstance(out, np.ndarray) and out.dtype == dtype and out.shape == S.shape
    ref = _reference(call_price, (0, 1, 2, 3, 4), S, K, T, r, sigma)
    rtol = 1e-10 if dtype == np.float64 else 2e-3
    for got, want in zip((dS, dK, dT, dr, dsigma), ref):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 10)
    # closed forms: delta = N(d1), vega = S phi(d1) sqrt(T)
    S64, K64, T64, s64 = (a.astype(np.float64) for a in (S, K, T, sigma))
    d1 = (np.log(S64 / K64) + (r + 0.5 * s64 ** 2) * T64) / (s64 * np.sqrt(T64))
    delta = 0.5 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in d1]))
    vega = S64 * np.exp(-0.5 * d1 ** 2) / math.sqrt(2 * math.pi) * np.sqrt(T64)
    np.testing.assert_allclose(dS, delta, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(dsigma, vega, rtol=rtol * 10, atol=rtol * 10)


def test_decorator_value_and_grad_and_value_kernel():
    S, K, T, sigma = _options(6, np.float64, seed=1)

    @srcgrad.cuda.value_and_grad(wrt=(0, 4))
    def price(S, K, T, r, sigma):
        return call_price(S, K, T, r, sigma)

    value, (dS, dsigma) = price(S, K, T, 0.01, sigma)
    ref_value, (ref_dS, ref_dsigma) = _reference(call_price, (0, 4), S, K, T, 0.01, sigma, value=True)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(dS, ref_dS, rtol=1e-10)
    np.testing.assert_allclose(dsigma, ref_dsigma, rtol=1e-10)
    np.testing.assert_allclose(price.value(S, K, T, 0.01, sigma), ref_value, rtol=1e-12)
    single = srcgrad.cuda.grad(call_price, wrt="sigma")
    np.testing.assert_allclose(single(S, K, T, 0.01, sigma), ref_dsigma, rtol=1e-10)


def test_out_buffers_are_written_and_returned():
    """``out=`` writes the value and gradients into the caller's device arrays (no allocation),
    returns those arrays, and refuses buffers of the wrong count, shape, dtype or kind."""
    from numba import cuda
    S, K, T, sigma = _options(6, np.float64, seed=2)
    f = srcgrad.cuda.value_and_grad(call_price, wrt=(0, 4))
    want_value, (want_dS, want_dsigma) = f(S, K, T, 0.01, sigma)
    bufs = [cuda.to_device(np.full(6, np.nan)) for _ in range(3)]
    value, (dS, dsigma) = f(S, K, T, 0.01, sigma, out=(bufs[0], (bufs[1], bufs[2])))
    assert value is bufs[0] and dS is bufs[1] and dsigma is bufs[2]
    np.testing.assert_array_equal(bufs[0].copy_to_host(), want_value)
    np.testing.assert_array_equal(bufs[1].copy_to_host(), want_dS)
    np.testing.assert_array_equal(bufs[2].copy_to_host(), want_dsigma)
    primal = cuda.to_device(np.zeros(6))
    assert f.value(S, K, T, 0.01, sigma, out=primal) is primal
    # the primal kernel is other code than value_and_grad's (on a GPU, other rounding)
    np.testing.assert_allclose(primal.copy_to_host(), want_value, rtol=1e-14)
    with pytest.raises(ValueError, match="needs 3 device array"):
        f(S, K, T, 0.01, sigma, out=bufs[:2])
    with pytest.raises(ValueError, match="results are contiguous"):
        f(S, K, T, 0.01, sigma, out=[cuda.to_device(np.zeros(5))] + bufs[1:])
    with pytest.raises(ValueError, match="results are contiguous"):
        f(S, K, T, 0.01, sigma, out=[cuda.to_device(np.zeros(6, np.float32))] + bufs[1:])
    with pytest.raises(TypeError, match="device arrays"):
        f(S, K, T, 0.01, sigma, out=[np.zeros(6)] + bufs[1:])


def test_branches():
    x = np.array([-1.0, 0.3, 0.9, 1.5, 2.0, -0.2, 3.0])
    y = np.array([0.5, 0.1, 1.2, 0.7, -1.0, 0.9, 2.5])
    gx, gy = srcgrad.cuda.grad(branchy, wrt=(0, 1))(x, y)
    rx, ry = _reference(branchy, (0, 1), x, y)
    np.testing.assert_allclose(gx, rx, rtol=1e-12)
    np.testing.assert_allclose(gy, ry, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rk4_loop_with_tape(dtype):
    y0 = np.array([1.0, 0.5, 2.0, 1.5], dtype=dtype)
    k = np.array([0.3, 1.0, 0.1, 0.7], dtype=dtype)
    value, (dy0, dk) = srcgrad.cuda.value_and_grad(rk4, wrt=(0, 1))(y0, k, 2.0)
    assert value.dtype == dtype and dy0.dtype == dtype
    ref_v, (ref_dy0, ref_dk) = _reference(rk4, (0, 1), y0, k, 2.0, value=True)
    rtol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(value, ref_v, rtol=rtol)
    np.testing.assert_allclose(dy0, ref_dy0, rtol=rtol)
    np.testing.assert_allclose(dk, ref_dk, rtol=rtol)
    # the exact solution y = y0 / (1 + k y0 t): dy/dy0 = 1 / (1 + k y0 t)^2
    exact = 1.0 / (1.0 + k.astype(np.float64) * y0 * 2.0) ** 2
    np.testing.assert_allclose(dy0, exact, rtol=1e-3)


def test_rk4_tape_overflow_is_reported():
    g = srcgrad.cuda.grad(rk4, wrt=(0, 1), max_tape=8)   # 12 steps tape y once per step (13 entries)
    with pytest.raises(srcgrad.SrcgradError, match="max_tape=8"):
        g(np.array([1.0, 0.5]), np.array([0.3, 1.0]), 2.0)


def test_while_loop_and_max_iter():
    a = np.array([2.0, 9.0, 0.25, 100.0])
    da = srcgrad.cuda.grad(heron, wrt=0)(a, 1.0)
    np.testing.assert_allclose(da, 0.5 / np.sqrt(a), rtol=1e-7)
    np.testing.assert_allclose(da, _reference(heron, 0, a, 1.0)[0], rtol=1e-12)
    few = srcgrad.cuda.grad(heron, wrt=0, max_iter=3)
    with pytest.raises(srcgrad.SrcgradError, match="max_iter=3"):
        few(a, 1.0)
    short_tape = srcgrad.cuda.grad(heron, wrt=0, max_tape=4)
    with pytest.raises(srcgrad.SrcgradError, match="max_tape=4"):
        short_tape(a, 1.0)


def test_device_arrays_stay_on_device():
    from numba import cuda
    S, K, T, sigma = _options(5, np.float32, seed=2)
    g = srcgrad.cuda.grad(call_price, wrt=(0, 4))
    dS, dsigma = g(cuda.to_device(S), K, T, np.float32(0.02), cuda.to_device(sigma))
    assert not isinstance(dS, np.ndarray) and hasattr(dS, "copy_to_host")
    host_dS, host_dsigma = g(S, K, T, np.float32(0.02), sigma)
    np.testing.assert_array_equal(dS.copy_to_host(), host_dS)
    np.testing.assert_array_equal(dsigma.copy_to_host(), host_dsigma)
    assert host_dS.dtype == np.float32


def test_broadcasting_scalars_and_shapes():
    S = np.linspace(80.0, 120.0, 6).reshape(2, 3)
    g = srcgrad.cuda.grad(call_price, wrt=(0, 4))
    dS, dsigma = g(S, 100.0, np.array(1.0), 0.05, 0.2)        # 0-d array and scalars
    assert dS.shape == (2, 3) and dsigma.shape == (2, 3)
    rS, rsig = _reference(call_price, (0, 4), S, 100.0, 1.0, 0.05, 0.2)
    np.testing.assert_allclose(dS, rS, rtol=1e-10)
    np.testing.assert_allclose(dsigma, rsig, rtol=1e-10)
    # a row broadcast against the (2, 3) grid (host arrays)
    K = np.array([90.0, 100.0, 110.0])
    dS2, _ = g(S, K, 1.0, 0.05, 0.2)
    rS2, _ = _reference(call_price, (0, 4), S, K, 1.0, 0.05, 0.2)
    np.testing.assert_allclose(dS2, rS2, rtol=1e-10)
    # all scalars: scalar results
    d = g(100.0, 100.0, 1.0, 0.05, 0.2)
    assert np.ndim(d[0]) == 0
    np.testing.assert_allclose(d, _reference(call_price, (0, 4), 100.0, 100.0, 1.0, 0.05, 0.2),
                               rtol=1e-10)
    with pytest.raises(ValueError, match="broadcast"):
        g(np.ones(3), np.ones(4), 1.0, 0.05, 0.2)


# ---- PTX for the real target -------------------------------------------------------------------

SKIP_RC = 3


def _ptx_child():
    """Compile the map-mode kernels for sm_90 (no simulator, no GPU); print one JSON line each."""
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    try:
        from numba import cuda

        def _probe(a):
            a[0] = 1.0

        cuda.compile_ptx(_probe, "void(float32[:])", cc=(9, 0))
    except Exception as exc:  # noqa: BLE001  NVVM / libdevice missing
        print(json.dumps({"skip": f"cannot compile PTX here: {type(exc).__name__}: {exc}"}))
        sys.exit(SKIP_RC)
    cases = []
    for dtype in (np.float64, np.float32):
        S, K, T, sigma = _options(4, dtype)
        one = dtype(1.0)
        cases += [(call_price, (0, 4), (S, K, T, dtype(0.02), sigma), dtype, True),
                  (rk4, (0, 1), (S, T, one), dtype, True),
                  (heron, 0, (S, one), dtype, True),
                  (branchy, (0, 1), (S, T), dtype, False)]   # sin's range reduction uses f64
    for func, wrt, args, dtype, check_f64 in cases:
        for which in ("grad", "value_and_grad", "value"):
            rec = {"kernel": f"{func.__name__}/{which}/{dtype.__name__}"}
            try:
                ptx = srcgrad.cuda.grad(func, wrt=wrt).ptx(*args, which=which, cc=(9, 0))
                rec["ok"] = ".target sm_90" in ptx
                if dtype == np.float32 and check_f64:
                    rec["f64_lines"] = sum(".f64" in ln for ln in ptx.splitlines())
            except Exception as exc:  # noqa: BLE001
                rec["ok"] = False
                rec["error"] = f"{type(exc).__name__}: {str(exc)[:3000]}"
            print(json.dumps(rec), flush=True)


def test_map_mode_ptx():
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, __file__, "--ptx-child"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == SKIP_RC:
        missing(lines[0]["skip"] if lines else "PTX compilation unavailable")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(lines) == 24
    failed = [r for r in lines if not r["ok"]]
    assert not failed, "\n\n".join(f"{r['kernel']}: {r.get('error')}" for r in failed)
    promoted = [r["kernel"] for r in lines if r.get("f64_lines")]
    assert not promoted, f"float32 map-mode kernels using double precision: {promoted}"


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--ptx-child":
        sys.path.insert(0, str(ROOT))
        _ptx_child()
