"""srcgrad.training.compile_ahead for Momentum (issue 17): the helper process compiles the loop
around the fused Momentum step (``_run_momentum_steps`` and its batch gather) while this process
compiles the step; this process then loads the loop from Numba's disk cache and trains exactly as
without the helper."""
import numba
import numpy as np
import pytest
from test_compile_ahead import TRAIN, TWO_CPUS, _run

from srcgrad.training import compile_ahead


def _tiny_loss(w, b, X, y):
    r = X @ w + b[0] - y
    return np.mean(r * r)


def test_guessed_momentum_types_are_the_ones_the_loop_compiles():
    """The helper's job is only useful if its types are exactly what MinibatchLoop compiles:
    after a real first call (here, without a helper), the guessed signature is a compiled one."""
    import srcgrad
    from srcgrad.optim import MinibatchLoop, make_optimizer
    from srcgrad.training import optim
    loop = MinibatchLoop(srcgrad.value_and_grad(_tiny_loss, wrt=(0, 1)),
                         make_optimizer("momentum", lr=0.1, momentum=0.9), blas_threads=None)
    rng = np.random.default_rng(1)
    X, y, params = rng.standard_normal((16, 3)), rng.standard_normal(16), (np.zeros(3), np.zeros(1))
    loop(params, X, y, np.arange(16), 4)
    (Xb, yb), = loop._buffers.values()
    state, hyper_t = loop.optimizer.state_tuple(), loop.optimizer.hyper_tuple()
    argtypes = tuple(numba.typeof(a) for a in (params, X, y, np.arange(16), 4, 0, 4, state,
                                               hyper_t, Xb, yb, None))   # (None: no x_scale)
    with compile_ahead.extra([("counter", ("types",))]):
        jobs = compile_ahead.momentum_jobs(optim._run_momentum_steps, argtypes)
    assert jobs[0] == ("counter", ("types",))           # the extra jobs come first
    (run, signature), = jobs[1:]
    assert run is optim._run_momentum_steps
    assert signature in optim._run_momentum_steps.overloads


@pytest.mark.slow
def test_momentum_helper_compiles_the_loop_and_the_training_is_the_same(tmp_path):
    """Cold caches, 2+ CPUs, SRCGRAD_COMPILE_AHEAD=always: the helper compiles the Momentum loop,
    this process compiles neither it nor the batch gather, and the result is bit for bit that of
    a process without the helper; a warm process starts no helper and compiles nothing."""
    if not TWO_CPUS:
        pytest.skip("one CPU: no helper by design")
    env = dict(AHEAD_TEST_OPTIMIZERS="momentum", SRCGRAD_COMPILE_AHEAD="always")
    on = _run(tmp_path, TRAIN, cache="on", **env)["momentum"]
    assert on["helper"] and "_run_momentum_steps" in on["helper"] and on["helper_done"], on
    assert "_run_momentum_steps" not in on["compiled"] and "_gather_batch" not in on["compiled"]
    warm = _run(tmp_path, TRAIN, cache="on", **env)["momentum"]
    assert warm["helper"] is None and warm["compiled"] == [], warm
    off = _run(tmp_path, TRAIN, cache="off", AHEAD_TEST_OPTIMIZERS="momentum",
               SRCGRAD_COMPILE_AHEAD="0")["momentum"]
    assert off["helper"] is None and "_run_momentum_steps" in off["compiled"], off
    assert on["total"] == off["total"] == warm["total"]
    assert on["params"] == off["params"] == warm["params"]
