"""The compiled loops over minibatches that :class:`srcgrad.optim.MinibatchLoop` runs: the batch
gather, and the loops that call a fused training step (:mod:`srcgrad.training.fused_sgd`: SGD,
Momentum) once per batch. The step and the loops are separate compiled functions, the step
passed as a first-class function (see MinibatchLoop's docstring for why). The loops release the
GIL (``nogil``): while one trains, another thread may compile (examples/train_mnist.py compiles
its accuracy counter during the first epoch)."""

from __future__ import annotations

import numba


@numba.njit(cache=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _gather_batch(X, y, order, start, batch_size, Xb, yb):
    """The rows ``order[start:start + batch_size]`` of ``X`` and ``y`` gathered into the batch
    buffers ``Xb``/``yb`` (their first rows for a shorter last batch): ``(Xc, yc, size)``.
    The row copies are written out here rather than calling ``_gather_rows`` for X and for y,
    and a shorter batch is a slice of the buffers rather than a fresh pair: three compiled
    functions fewer in every MinibatchLoop's cold compile.
    The usual 2-d samples and 1-d labels are copied without reshaping: ``X.ndim`` is a constant
    when Numba compiles this, so the other branch is pruned before typing, and the reshapes'
    code (a size check and a no-copy attempt each) was about a third of this function's cold
    compile (0.30-0.42 -> 0.23 s CPU, compiled alone after a reshape elsewhere, load 3.4)."""
    size = order.shape[0] - start
    if size > batch_size:
        size = batch_size
    Xc = Xb[:size]
    yc = yb[:size]
    if X.ndim == 2:
        for r in range(size):
            sample = order[start + r]
            for k in range(Xc.shape[1]):
                Xc[r, k] = X[sample, k]
    else:
        X_rows = X.reshape(X.shape[0], -1)
        Xc_rows = Xc.reshape(size, -1)
        for r in range(size):
            sample = order[start + r]
            for k in range(Xc_rows.shape[1]):
                Xc_rows[r, k] = X_rows[sample, k]
    if y.ndim == 1:
        for r in range(size):
            yc[r] = y[order[start + r]]
    else:
        y_rows = y.reshape(y.shape[0], -1)
        yc_rows = yc.reshape(size, -1)
        for r in range(size):
            sample = order[start + r]
            for k in range(yc_rows.shape[1]):
                yc_rows[r, k] = y_rows[sample, k]
    return Xc, yc, size


@numba.njit(cache=True, nogil=True)
def _run_sgd_steps(step, params, X, y, order, batch_size, first, stop, lr, Xb, yb, seed, progress):
    """:func:`_run_minibatches` for plain SGD: ``loss = step(*params, Xb, yb, seed, lr)`` updates
    ``params`` itself (:mod:`srcgrad.training.fused_sgd`)."""
    total = 0.0
    for batch in range(first, stop):
        progress[0] = batch
        progress[1] = total
        Xc, yc, size = _gather_batch(X, y, order, batch * batch_size, batch_size, Xb, yb)
        loss = step(*params, Xc, yc, seed, lr)
        total += loss * size
    return total


@numba.njit(cache=True, nogil=True)
def _run_momentum_steps(step, params, X, y, order, batch_size, first, stop, lr, mu, nesterov,
                        velocity, Xb, yb, seed, progress):
    """:func:`_run_sgd_steps` for Momentum: ``loss = step(*params, Xb, yb, seed, lr, mu,
    nesterov, velocity)`` updates ``params`` and ``velocity`` itself."""
    total = 0.0
    for batch in range(first, stop):
        progress[0] = batch
        progress[1] = total
        Xc, yc, size = _gather_batch(X, y, order, batch * batch_size, batch_size, Xb, yb)
        loss = step(*params, Xc, yc, seed, lr, mu, nesterov, velocity)
        total += loss * size
    return total
