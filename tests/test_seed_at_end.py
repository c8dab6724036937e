"""The seed at the end (transform.SEED_AT_END, on by default): the reverse sweep runs from 1.0 and
each gradient is returned times the seed (``naming.seed_scaled``) only when the seed is not 1.0.

The cases that kept it off: a float32 gradient of a float64-precision function (the scaled array
must keep its dtype, Numba cannot unify float32 and float64 arrays), the cpu fuser accumulating
into an adjoint in place (it does only for arrays bound once: the scaling must not rebind them;
test_adjoint_shapes.test_subtracted_contribution_is_fused) and MinibatchLoop's fused SGD step
(test_training_fused: W1 and W2 fused; the rewrite of the scaled return is tested there).
"""
import numpy as np
import pytest

import srcgrad
from srcgrad import transform
from conftest import check_grad


def mixed(x, w, s):
    """x float32, w float64: the function runs in float64, x's gradient is a float32 array."""
    total = 0.0
    for i in range(x.shape[0]):
        total = total + s * (x[i] - w[i]) ** 2
    return total


def _args():
    rng = np.random.default_rng(0)
    return rng.random(6).astype(np.float32), rng.random(6), 0.7


def _pullbacks(target, on, monkeypatch, tmp_path):
    monkeypatch.setattr(transform, "SEED_AT_END", on)
    monkeypatch.setenv("SRCGRAD_CACHE_DIR", str(tmp_path / str(on)))
    vjp = srcgrad.vjp(mixed, wrt=(0, 1, 2), target=target)
    pullback = vjp(*_args())[1]
    source = srcgrad.grad(mixed, wrt=(0, 1, 2), target=target).source_for(*_args())
    return [pullback(seed) for seed in (1.0, 0.5, -2.0, float("nan"))], source


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_float32_gradient_of_a_float64_precision_function(target, monkeypatch, tmp_path):
    on, source_on = _pullbacks(target, True, monkeypatch, tmp_path)
    off, source_off = _pullbacks(target, False, monkeypatch, tmp_path)
    assert "seed at the end" in source_on and "seed at the end" not in source_off
    assert "_adj_x.dtype.type(_seed)" in "".join(source_on.split())    # the cast: float32 kept
    for seed, got, want in zip((1.0, 0.5, -2.0, float("nan")), on, off):
        assert got[0].dtype == want[0].dtype == np.float32
        assert got[1].dtype == np.float64
        for a, b in zip(got, want):
            if np.isnan(seed):
                assert np.all(np.isnan(a))                  # NaN in, NaN out
            else:
                np.testing.assert_allclose(a, b, rtol=1e-6)
    check_grad(mixed, tuple(np.float64(a) if np.ndim(a) == 0 else a.astype(np.float64)
                            for a in _args()), wrt=(0, 1, 2), target="python")
