"""The GPU MLP trainer against the NumPy reference of the same steps (simulator, tiny model)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from numba import config as _numba_config  # tests/cuda/conftest.py has decided on the simulator

SIM_ACTIVE = bool(getattr(_numba_config, "ENABLE_CUDASIM", 0)) or os.environ.get("SRCGRAD_CUDA_TESTS") == "gpu"

if SIM_ACTIVE:
    from srcgrad.training import cuda_mlp as cm

N_IN, HIDDEN, N = 6, 5, 11  # 11 samples, batch 4: two full batches and a partial one


def _data(dt, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((N, N_IN)).astype(dt)
    y = rng.integers(0, 10, N).astype(np.int64)
    return X, y


def test_available_in_simulator():
    ok, why = cm.available()
    on_gpu = os.environ.get("SRCGRAD_CUDA_TESTS") == "gpu"
    assert ok and (("cc " in why) if on_gpu else ("simulator" in why)), why


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_training_matches_numpy_reference(dt):
    X, y = _data(dt)
    params = cm.init_params(HIDDEN, seed=1, dtype=dt, n_in=N_IN)
    state = cm.init_state(params=params, dtype=dt)
    X_dev, y_dev = cm.to_device(X, y, dtype=dt)
    ref_p = {k: v.copy() for k, v in params.items()}
    ref_v = {k: np.zeros_like(v) for k, v in params.items()}
    tol = dict(rtol=1e-4, atol=1e-5) if dt == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for epoch in range(2):
        perm = cm.epoch_permutation(N, seed=3, epoch=epoch)
        got = cm.train_epoch(state, X_dev, y_dev, perm, 4, lr=0.5, momentum=0.9,
                             weight_decay=1e-3)
        ref = cm.numpy_train_epoch(ref_p, ref_v, X, y, perm, 4, lr=0.5, momentum=0.9,
                                   weight_decay=1e-3)
        assert got["steps"] == ref["steps"] == 3
        np.testing.assert_allclose(got["loss"], ref["loss"], **tol)
        assert got["accuracy"] == pytest.approx(ref["accuracy"])
        gp = cm.get_params(state)
        for k in ref_p:
            np.testing.assert_allclose(gp[k], ref_p[k], **tol, err_msg=k)
        gv = cm.get_velocity(state)
        for k in ref_v:
            np.testing.assert_allclose(gv[k], ref_v[k], **tol, err_msg=k)
    loss, acc = cm.evaluate(state, X_dev, y_dev, batch_size=4)
    ref_loss, ref_acc = cm.numpy_evaluate(ref_p, X, y)
    np.testing.assert_allclose(loss, ref_loss, **tol)
    assert acc == pytest.approx(ref_acc)


def test_drop_last_and_max_steps():
    X, y = _data(np.float32)
    params = cm.init_params(HIDDEN, seed=0, n_in=N_IN)
    state = cm.init_state(params=params)
    X_dev, y_dev = cm.to_device(X, y)
    perm = cm.epoch_permutation(N)
    assert cm.train_epoch(state, X_dev, y_dev, perm, 4, 0.1, drop_last=True)["steps"] == 2
    assert cm.train_epoch(state, X_dev, y_dev, perm, 4, 0.1, max_steps=1)["steps"] == 1


def test_init_is_seeded_and_shapes_checked():
    a = cm.init_params(7, seed=5)
    b = cm.init_params(7, seed=5)
    assert a["W1"].shape == (784, 7) and a["b2"].shape == (10,)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    bad = dict(a, b1=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="b1"):
        cm.init_state(params=bad)
    state = cm.init_state(params=cm.init_params(3, n_in=N_IN))
    X_dev, y_dev = cm.to_device(np.zeros((2, N_IN + 1)), np.zeros(2))
    with pytest.raises(ValueError, match="features"):
        cm.train_epoch(state, X_dev, y_dev, np.arange(2), 2, 0.1)


# float32 simulates the same kernels again (about 50 s): slow. float32 training with the hand
# kernels is test_training_matches_numpy_reference[float32]; the generated adjoint in float32 is
# test_array_mode.py::test_mlp_loss_matches_python_target[float32-2e-05].
# One epoch (three steps: two full batches and the partial one, momentum carried between them)
# against the NumPy reference of the same steps, which test_training_matches_numpy_reference shows
# the hand-written kernels match: simulating the hand kernels again, and a second epoch of the
# same steps, took about 60% of this test's time (CI time, issue #14).
@pytest.mark.parametrize("dt", [pytest.param(np.float32, marks=pytest.mark.slow), np.float64])
def test_generated_adjoint_training_matches_hand_kernels(dt):
    """Steps whose gradient comes from srcgrad's generated adjoint (CUDA array mode) give the
    same parameters and velocities as the NumPy reference of the hand-written kernels' steps,
    partial batch included."""
    X, y = _data(dt)
    params = cm.init_params(HIDDEN, seed=1, dtype=dt, n_in=N_IN)
    generated = cm.init_state(params=params, dtype=dt)
    ref_p = {k: v.copy() for k, v in params.items()}
    ref_v = {k: np.zeros_like(v) for k, v in params.items()}
    X_dev, y_dev = cm.to_device(X, y, dtype=dt)
    from test_array_mode import mlp_loss    # tests/cuda is on sys.path under pytest

    program = cm.generated_program(mlp_loss)
    tol = dict(rtol=1e-4, atol=1e-5) if dt == np.float32 else dict(rtol=1e-10, atol=1e-12)
    perm = cm.epoch_permutation(N, seed=3, epoch=0)
    ref = cm.numpy_train_epoch(ref_p, ref_v, X, y, perm, 4, lr=0.5, momentum=0.9, weight_decay=1e-3)
    got = cm.train_epoch(generated, X_dev, y_dev, perm, 4, lr=0.5, momentum=0.9,
                         weight_decay=1e-3, program=program)
    assert got["steps"] == ref["steps"] == 3 and got["accuracy"] is None
    assert np.isfinite(got["loss"]) and got["loss"] == pytest.approx(ref["loss"], rel=0.2)
    gp, gv = cm.get_params(generated), cm.get_velocity(generated)
    for k in ref_p:
        np.testing.assert_allclose(gp[k], ref_p[k], **tol, err_msg=k)
        np.testing.assert_allclose(gv[k], ref_v[k], **tol, err_msg=k)


def test_epoch_graph_matches_train_epoch():
    """EpochGraph (one recorded epoch, replayed per call; in the simulator the same recorded
    launches run eagerly on its stream) gives train_epoch's parameters, velocities, loss and
    accuracy, epoch after epoch, with a new order and learning rate each time; its warm-up step
    leaves no trace."""
    from srcgrad.cuda import graphs

    X, y = _data(np.float64)
    params = cm.init_params(HIDDEN, seed=2, dtype=np.float64, n_in=N_IN)
    eager = cm.init_state(params=params, dtype=np.float64)
    recorded = cm.init_state(params=params, dtype=np.float64)
    X_dev, y_dev = cm.to_device(X, y, dtype=np.float64)
    runner = cm.EpochGraph(recorded, X_dev, y_dev, N, 4, lr=0.3, momentum=0.9, weight_decay=1e-3)
    assert runner.graphed == graphs.available()[0]
    for k, v in cm.get_params(recorded).items():        # the warm-up step was undone
        np.testing.assert_array_equal(v, params[k])
    assert recorded.steps == 0
    for epoch, lr in enumerate((0.3, 0.1)):       # a schedule: the recorded launches read lr
        perm = cm.epoch_permutation(N, seed=4, epoch=epoch)
        want = cm.train_epoch(eager, X_dev, y_dev, perm, 4, lr=lr, momentum=0.9, weight_decay=1e-3)
        got = runner.run(perm, lr=lr)
        assert got == pytest.approx(want, rel=1e-12)
        for k, v in cm.get_params(eager).items():
            np.testing.assert_allclose(cm.get_params(recorded)[k], v, rtol=1e-12, atol=1e-14)
    assert recorded.steps == eager.steps == 6
    with pytest.raises(ValueError, match="recorded for 11"):
        runner.run(np.arange(5))
    runner.close()


def test_epoch_graph_falls_back_to_eager_launches_when_capture_fails(monkeypatch):
    """A capture the driver refuses leaves a warning, ``graphed`` False, the warm-up undone and
    the same epochs as train_epoch (launched one by one)."""
    from srcgrad.cuda import graphs

    def refuse(stream, record):
        raise RuntimeError("cuStreamBeginCapture failed: CUDA_ERROR_NOT_SUPPORTED")
    monkeypatch.setattr(graphs, "available", lambda: (True, ""))
    monkeypatch.setattr(graphs.StreamGraph, "capture", staticmethod(refuse))
    X, y = _data(np.float64)
    params = cm.init_params(HIDDEN, seed=5, dtype=np.float64, n_in=N_IN)
    eager = cm.init_state(params=params, dtype=np.float64)
    fallback = cm.init_state(params=params, dtype=np.float64)
    X_dev, y_dev = cm.to_device(X, y, dtype=np.float64)
    with pytest.warns(RuntimeWarning, match="capture failed"):
        runner = cm.EpochGraph(fallback, X_dev, y_dev, N, 4, lr=0.2, momentum=0.5)
    assert not runner.graphed and "NOT_SUPPORTED" in runner.why_eager and fallback.steps == 0
    for k, v in cm.get_params(fallback).items():
        np.testing.assert_array_equal(v, params[k])
    perm = cm.epoch_permutation(N, seed=6, epoch=0)
    want = cm.train_epoch(eager, X_dev, y_dev, perm, 4, lr=0.2, momentum=0.5)
    assert runner.run(perm) == pytest.approx(want, rel=1e-12)
    for k, v in cm.get_params(eager).items():
        np.testing.assert_allclose(cm.get_params(fallback)[k], v, rtol=1e-12, atol=1e-14)
