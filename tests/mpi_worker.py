"""Run by tests/test_distributed.py under ``mpiexec -n 2``: the data-parallel pieces on real ranks.

``python tests/mpi_worker.py OUT.npz`` trains a small softmax regression with
``srcgrad.distributed.DataParallelLoop`` in several configurations and rank 0 writes the results to
OUT.npz; it also checks broadcast, allreduce_average and the errors every rank must raise
together, exiting non-zero on the first failure."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srcgrad import value_and_grad  # noqa: E402
from srcgrad import distributed as dist  # noqa: E402
from srcgrad.optim import make_optimizer  # noqa: E402

# (optimizer, global batch size): 16 splits evenly over 2 ranks, 15 does not (7 + 8 samples), 1
# leaves rank 0 with an empty shard in every step; 90 samples make a shorter last batch.
CONFIGS = (("momentum", 16), ("adam", 15), ("sgd", 1))
EPOCHS = 2


def softmax_loss(W, b, X, y):
    z = X @ W + b
    m = np.max(z, axis=1, keepdims=True)
    lse = np.log(np.sum(np.exp(z - m), axis=1)) + m[:, 0]
    return np.mean(lse - z[np.arange(X.shape[0]), y])


def problem(n=90, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = rng.integers(0, k, n).astype(np.int64)
    params = (rng.standard_normal((d, k)) * 0.5, rng.standard_normal(k) * 0.1)
    return X, y, params


def orders(n, epochs=EPOCHS, seed=1):
    return [np.random.default_rng([seed, e]).permutation(n).astype(np.int64)
            for e in range(epochs)]


def lr_of(optimizer):
    return 0.05 if optimizer == "adam" else 0.2


def expect_error(fn, what):
    try:
        fn()
    except dist.DistributedError as exc:
        return str(exc)
    raise AssertionError(f"{what}: no DistributedError")


def check_collectives(r, n):
    # broadcast: a nested tree with a dict, a list, numbers; arrays overwritten in place
    a = np.full((2, 3), float(r))
    f = np.asfortranarray(np.full((3, 2), float(r), np.float32))
    tree = {"w": a, "rest": [f, (np.arange(4) * (r + 1),)], "step": r + 5}
    out = dist.broadcast(tree)
    assert out["w"] is a and out["rest"][0] is f and out["step"] == 5, out
    assert np.all(a == 0) and np.all(f == 0) and np.array_equal(out["rest"][1][0], np.arange(4))
    assert isinstance(out["rest"], list) and isinstance(out["rest"][1], tuple)
    # allreduce_average: in place, arrays of several shapes through one buffer
    g = (np.full(3, float(r)), np.full((2, 2), 2.0 * r))
    dist.allreduce_average(g)
    assert np.allclose(g[0], (n - 1) / 2) and np.allclose(g[1], n - 1), g
    # mismatches raise on every rank (none is left waiting)
    msg = expect_error(lambda: dist.broadcast((np.zeros(3 + r),)), "broadcast shapes")
    assert "rank 1" in msg and "(3,)" in msg, msg
    X, y, params = problem()
    opt = make_optimizer("sgd", params, lr=0.1)
    loop = dist.DataParallelLoop(value_and_grad(softmax_loss, wrt=(0, 1)), opt)
    msg = expect_error(lambda: loop(params, X, y, orders(90, 2)[r], 16), "different orders")
    assert "different batches" in msg, msg


def main(out):
    r, n = dist.rank(), dist.size()
    if n > 1:
        check_collectives(r, n)
    X, y, params0 = problem()
    results = {}
    for optimizer, batch_size in CONFIGS:
        params = tuple(p.copy() for p in params0)
        if r != 0:  # only rank 0's initial values count: broadcast must overwrite these
            params = tuple(np.full_like(p, 7.0) for p in params)
        params = dist.broadcast(params)
        opt = make_optimizer(optimizer, params, lr=lr_of(optimizer))
        # adam runs the profiled loop (the same steps, timed)
        loop = dist.DataParallelLoop(value_and_grad(softmax_loss, wrt=(0, 1)), opt,
                                     profile=optimizer == "adam")
        totals = [loop(params, X, y, order, batch_size) for order in orders(X.shape[0])]
        if optimizer == "adam":
            assert all(v > 0 for v in loop.seconds.values()), loop.seconds
        gathered = dist.world().gather(params, root=0)
        key = f"{optimizer}_{batch_size}"
        if r == 0:
            results.update({f"{key}.W": params[0], f"{key}.b": params[1],
                            f"{key}.totals": np.array(totals),
                            f"{key}.bytes": np.array(loop.bytes_per_step),
                            f"{key}.same": np.array(all(
                                all(np.array_equal(a, b) for a, b in zip(params, other))
                                for other in gathered))})
    if r == 0:
        np.savez(out, size=np.array(n), **results)


if __name__ == "__main__":
    main(sys.argv[1])
